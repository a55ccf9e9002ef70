//! The command line: parses arguments and wires the modules into the commands of
//! docs/CONTRACT.md. The only place that uses `anyhow`, prints for people, and exits.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::api::{self, AppState};
use crate::event;
use crate::generate::{self, World, WorldConfig};
use crate::log::{EventLog, KafkaLog, KafkaTarget, LogError, LogOptions, SledLog, ValueFormat};
use crate::metrics::Metrics;
use crate::project::{self, Codec, Continuous, ProjectionStats, Projector, TablesRoot, TABLES};
use crate::replay;
use crate::report;
use crate::sql;

/// File in the data dir that names the running server, so other commands can reach it.
const SERVER_FILE: &str = "serve.json";
/// How long `quickstart` waits for the tables to catch up with the log.
const CATCH_UP_TIMEOUT_MS: u64 = 120_000;
/// How often `replay --follow` looks for a server to follow.
const FOLLOW_POLL_MS: u64 = 250;
/// Attempts to read a consistent set of table files while a projector replaces them.
const SNAPSHOT_ATTEMPTS: u32 = 5;

#[derive(Parser, Debug)]
#[command(name = "questlog", version, about = "A deterministic, replayable event store for game telemetry")]
pub struct Cli {
    /// Where the log, tables and reports live.
    #[arg(long, global = true, default_value = "./questlog-data", env = "QUESTLOG_DATA_DIR")]
    pub data_dir: PathBuf,
    /// MiB the log's filesystem must keep free: appends below it answer 507 (disk full)
    /// and resume by themselves once there is room. 0 turns the check off.
    #[arg(long, global = true, default_value_t = crate::log::DEFAULT_MIN_FREE_BYTES / (1024 * 1024), env = "QUESTLOG_MIN_FREE_MB")]
    pub min_free_mb: u64,
    /// Where the Delta tables are: a directory, file:///dir, or s3://bucket/prefix, with
    /// the S3 settings in AWS_* variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP). Default: DATA_DIR/delta.
    #[arg(long, global = true, env = "QUESTLOG_TABLES")]
    pub tables: Option<String>,
    /// How long a file removed from a table (merged by compaction, replaced by a rebuild)
    /// stays for readers of older snapshots before it is deleted.
    #[arg(long, global = true, default_value_t = project::DEFAULT_VACUUM_RETENTION_MS, env = "QUESTLOG_VACUUM_RETENTION_MS",
          value_parser = clap::value_parser!(u64).range(0..=project::delta::MAX_VACUUM_RETENTION_MS))]
    pub vacuum_retention_ms: u64,
    /// Where the event log is: `sled` (DATA_DIR/log, the embedded default) or a Kafka
    /// topic, kafka://HOST:PORT[,HOST:PORT]/TOPIC (which must exist).
    #[arg(long = "log", global = true, default_value = "sled", env = "QUESTLOG_LOG_URL")]
    pub log_url: String,
    /// A librdkafka setting for the Kafka log, KEY=VALUE (repeatable; in the environment,
    /// comma-separated), e.g. security.protocol=SASL_SSL.
    #[arg(long = "kafka-option", global = true)]
    pub kafka_options: Vec<String>,
    /// The form of the Kafka log's values: `questlog` (what questlog writes) or `seed`
    /// (the seed's Flask API's messages, the request's headers merged into the event).
    /// Read by `project`, `verify` and `replay`.
    #[arg(long = "log-format", global = true, default_value = "questlog", env = "QUESTLOG_LOG_FORMAT",
          value_parser = ["questlog", "seed"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

/// `--log kafka://…` and its `--kafka-option`s, set once by [`run`]; `None` for the sled log.
static KAFKA: std::sync::OnceLock<Option<(KafkaTarget, Vec<(String, String)>)>> = std::sync::OnceLock::new();

fn kafka() -> Option<&'static (KafkaTarget, Vec<(String, String)>)> {
    KAFKA.get().and_then(Option::as_ref)
}

/// Fails for commands that need the sled log when the log is a Kafka topic.
fn sled_only(what: &str) -> Result<()> {
    match kafka() {
        Some((target, _)) => bail!(
            "cannot {what} with --log {target}: this needs the sled log's single offset order; with a topic, use `project`, `verify`, `replay --partition`"
        ),
        None => Ok(()),
    }
}

/// `--log-format`, set once by [`run`].
static LOG_FORMAT: std::sync::OnceLock<ValueFormat> = std::sync::OnceLock::new();

fn log_format() -> ValueFormat {
    LOG_FORMAT.get().copied().unwrap_or(ValueFormat::Questlog)
}

/// `--tables` and `--vacuum-retention-ms`, set once by [`run`].
static TABLES_OPTIONS: std::sync::OnceLock<(Option<TablesRoot>, u64)> = std::sync::OnceLock::new();

/// Where the tables of `data_dir` are (`--tables`, else `DATA_DIR/delta`).
fn tables_root(data_dir: &Path) -> Result<TablesRoot> {
    match TABLES_OPTIONS.get().and_then(|(root, _)| root.clone()) {
        Some(root) => Ok(root),
        None => Ok(TablesRoot::Local(absolute(data_dir)?.join(project::DELTA_DIR))),
    }
}

fn vacuum_retention_ms() -> u64 {
    TABLES_OPTIONS.get().map(|(_, ms)| *ms).unwrap_or(project::DEFAULT_VACUUM_RETENTION_MS)
}

/// The projector of `data_dir`'s tables; `check` as in [`Projector::open_with_retention`].
fn open_projector(data_dir: &Path, codec: Codec, check: bool) -> Result<Projector> {
    Ok(Projector::open_with_retention(&tables_root(data_dir)?, data_dir, codec, vacuum_retention_ms(), check)?)
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole pipeline on embedded defaults: serve, send seeded traffic over HTTP,
    /// project, report; then keep serving until Ctrl-C (or stop with --exit).
    Quickstart {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Stop after the report instead of serving.
        #[arg(long)]
        exit: bool,
    },
    /// Serve the HTTP API, appending to the log and projecting into the tables.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Milliseconds between projection steps.
        #[arg(long, default_value_t = project::DEFAULT_PROJECT_INTERVAL_MS)]
        project_interval_ms: u64,
        /// Parquet compression: snappy, zstd or none.
        #[arg(long, default_value = "snappy")]
        compression: String,
        /// Most open HTTP connections; more are answered 429 (with Retry-After) and closed.
        #[arg(long, default_value_t = api::MAX_CONNECTIONS)]
        max_connections: usize,
        /// Milliseconds a client has to send a request's headers.
        #[arg(long, default_value_t = api::HEADER_READ_TIMEOUT_MS)]
        header_read_timeout_ms: u64,
        /// Milliseconds a client has to send a request's body.
        #[arg(long, default_value_t = api::BODY_READ_TIMEOUT_MS)]
        body_read_timeout_ms: u64,
        /// Milliseconds a client may take nothing of an answer before its connection is
        /// closed (a slow reader that makes progress is never cut off).
        #[arg(long, default_value_t = api::WRITE_STALL_TIMEOUT_MS)]
        write_stall_timeout_ms: u64,
        /// Require API keys: a TOML file of [[key]] tables (app, key, and optionally
        /// scopes, events_per_second, burst). Without it, anyone who can reach the server
        /// may send and read events, so it listens on loopback only unless --allow-keyless.
        #[arg(long)]
        api_keys: Option<PathBuf>,
        /// Serve without API keys on an address other than loopback: anyone who can reach
        /// it may append and read every event.
        #[arg(long)]
        allow_keyless: bool,
        /// Without API keys, a host name requests may name in `Host` besides IP addresses
        /// and localhost (a guard against DNS rebinding); repeat for several.
        #[arg(long = "allowed-host", value_name = "NAME")]
        allowed_hosts: Vec<String>,
        /// Check purchases against this store catalogue (SQLite; `questlog catalog
        /// schema`), and fill in seed-style `GET /buy_asset?store_id=…&inventory_id=…`
        /// from it. Recorded in the log before the server takes events.
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
    /// Make seeded, reproducible game traffic: into the log, or over HTTP with --url.
    Generate {
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        events: u64,
        #[arg(long, default_value_t = generate::world::DEFAULT_PLAYERS)]
        players: u32,
        /// Start of the simulated clock (RFC 3339).
        #[arg(long, default_value = generate::world::DEFAULT_START_TIME)]
        start_time: String,
        /// Send to this questlog server instead of writing the log (a load test).
        #[arg(long)]
        url: Option<String>,
        /// Target events per second (with --url); unlimited when absent.
        #[arg(long)]
        rate: Option<f64>,
        /// Concurrent requests (with --url).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Events per request (with --url).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Sell what this store catalogue (SQLite) lists instead of the built-in stores;
        /// without --url it is recorded in the log before the events.
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
    /// Print log records as JSON lines, oldest first.
    Replay {
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop before this offset.
        #[arg(long)]
        to: Option<u64>,
        /// With a Kafka log: only this partition (--from and --to are offsets in it).
        /// Without it, every partition in turn, each from --from to --to.
        #[arg(long)]
        partition: Option<u32>,
        /// Keep printing new events as they arrive.
        #[arg(long)]
        follow: bool,
        /// Re-send the events to another questlog server instead of printing them
        /// (in order, batched, keeping event ids so a second replay adds nothing).
        #[arg(long, conflicts_with = "follow")]
        url: Option<String>,
        /// Events per second when sending with --url.
        #[arg(long, requires = "url")]
        rate: Option<f64>,
    },
    /// List rejected events (reason, field, raw text, headers) as JSON lines.
    Rejected {
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Bring the five Parquet tables up to the end of the log.
    Project {
        /// Rebuild them from offset 0 and swap them in atomically.
        #[arg(long)]
        rebuild: bool,
        #[arg(long, default_value = "snappy")]
        compression: String,
        /// Most events per published step (default and maximum 500000).
        #[arg(long, default_value_t = project::MAX_STEP_EVENTS)]
        step_events: u64,
        /// With --rebuild: build the tables as they were at this log offset.
        #[arg(long, requires = "rebuild")]
        to: Option<u64>,
        /// With --rebuild: write the tables into this new place (a directory or
        /// s3://bucket/prefix) instead of the live ones (time travel without touching them).
        #[arg(long, requires = "rebuild")]
        out: Option<String>,
        /// Keep projecting as the log grows (a step every --interval-ms once caught up)
        /// until SIGINT or SIGTERM: the projector process of a Kafka deployment.
        #[arg(long, conflicts_with = "rebuild")]
        follow: bool,
        /// With --follow: milliseconds between steps once the tables reached the end.
        #[arg(long, default_value_t = project::DEFAULT_PROJECT_INTERVAL_MS, requires = "follow",
              value_parser = clap::value_parser!(u64).range(1..=project::MAX_PROJECT_INTERVAL_MS))]
        interval_ms: u64,
    },
    /// Compute the findings report from the tables with Polars.
    Report {
        /// Where to write report.md and report.html (default DATA_DIR/report).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Report on the tables as they were at this log offset (rebuilt in a temp dir).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Run SQL over the five tables.
    Sql {
        query: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print the Hive CREATE EXTERNAL TABLE statements for the tables.
    Ddl,
    /// Check the log (dense, decodable) and that the tables equal its projection.
    Verify,
    /// Store catalogues (the seed's SQLite): make one, check one, list the log's.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Run a golden scenario (replay/*.toml) and compare its digests.
    Check {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Rewrite the expected digests after an intended change.
        #[arg(long)]
        bless: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Write a realistic catalogue: the generator's stores and items, list prices
    /// jittered by the seed.
    Init {
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The new SQLite file (must not exist).
        #[arg(long, default_value = "catalog.sqlite")]
        out: PathBuf,
    },
    /// Check a catalogue file and print its hash and size.
    Show { file: PathBuf },
    /// Print the SQL schema a catalogue file must have.
    Schema,
    /// List the catalogues the log recorded, with the offset each took effect at.
    History,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve { .. } | Command::Quickstart { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUESTLOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("questlog={default_level},warn")));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    if let Err(e) = setup_failpoints() {
        eprintln!("questlog: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once: many of our errors already say their source in their text.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, the same in mimalloc
/// v2 and v3; libmimalloc-sys has no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc (the binary's allocator) never to give freed memory back to the OS, for
/// commands that run to an end (everything but `serve` and `quickstart`). Projection and
/// replay free and allocate at a high rate, and memory given back is zeroed by the kernel
/// when taken again: a `project --rebuild` of 10^6 events gave back and took again 291 MiB
/// in 1,000 purges (`MIMALLOC_SHOW_STATS=1`), and ran in 1.55–1.81 s with purging off
/// against 1.96–2.51 s with it on, side by side. Peak memory stays that of the busiest
/// moment. A server keeps mimalloc's default, so that memory a burst took goes back.
fn keep_freed_memory() {
    // SAFETY: `mi_option_set` stores a number in mimalloc's option table; mimalloc
    // documents it as callable at any time from any thread. With another global allocator
    // (the library's tests) it has no effect.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Crash testing: configures failpoints from `QUESTLOG_FAILPOINTS`, in the fail crate's
/// syntax (`name=actions;name=actions`, e.g. `publish.after_commit=2*off->return` fires on
/// the third pass), and `QUESTLOG_FAILPOINT=name` as a shorthand for `name=return`. A
/// point fires as its module says: projection points abort the process, `log.after_sync`
/// fails the group commit whose data just reached the disk.
fn setup_failpoints() -> Result<()> {
    let mut specs: Vec<String> = Vec::new();
    if let Some(name) = std::env::var_os("QUESTLOG_FAILPOINT") {
        specs.push(format!("{}=return", name.to_string_lossy()));
    }
    if let Some(list) = std::env::var_os("QUESTLOG_FAILPOINTS") {
        specs.extend(list.to_string_lossy().split(';').filter(|s| !s.trim().is_empty()).map(str::to_string));
    }
    for spec in specs {
        let (name, actions) = spec.split_once('=').ok_or_else(|| anyhow!("QUESTLOG_FAILPOINTS: `{spec}` is not name=actions"))?;
        fail::cfg(name.trim(), actions.trim()).map_err(|e| anyhow!("QUESTLOG_FAILPOINTS: `{spec}`: {e}"))?;
    }
    Ok(())
}

/// Log options from the command line, set once in [`run`].
static LOG_OPTIONS: std::sync::OnceLock<LogOptions> = std::sync::OnceLock::new();

pub fn run(cli: Cli) -> Result<()> {
    let data_dir = cli.data_dir;
    let min_free_bytes =
        cli.min_free_mb.checked_mul(1024 * 1024).ok_or_else(|| anyhow!("--min-free-mb {} is too large", cli.min_free_mb))?;
    let _ = LOG_OPTIONS.set(LogOptions { min_free_bytes });
    let root = cli.tables.as_deref().map(TablesRoot::parse).transpose()?;
    let kafka_log = match cli.log_url.as_str() {
        "sled" => {
            if !cli.kafka_options.is_empty() {
                bail!("--kafka-option needs --log kafka://…");
            }
            None
        }
        url => {
            let target = KafkaTarget::parse(url)?;
            // The environment's list is comma-separated; a flag's value is taken whole.
            let from_env: Vec<String> = match (cli.kafka_options.is_empty(), std::env::var("QUESTLOG_KAFKA_OPTIONS")) {
                (true, Ok(list)) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
                _ => Vec::new(),
            };
            let options = cli
                .kafka_options
                .iter()
                .chain(&from_env)
                .map(|o| {
                    o.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .ok_or_else(|| anyhow!("--kafka-option `{o}` is not KEY=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?;
            Some((target, options))
        }
    };
    let format = ValueFormat::parse(&cli.log_format).ok_or_else(|| anyhow!("--log-format {}: use questlog or seed", cli.log_format))?;
    if format != ValueFormat::Questlog && kafka_log.is_none() {
        bail!("--log-format {}: only a Kafka log (--log kafka://…) holds values of another form", cli.log_format);
    }
    let _ = LOG_FORMAT.set(format);
    let _ = KAFKA.set(kafka_log);
    let _ = TABLES_OPTIONS.set((root, cli.vacuum_retention_ms));
    if !matches!(cli.command, Command::Serve { .. } | Command::Quickstart { .. }) {
        keep_freed_memory();
    }
    match cli.command {
        Command::Serve {
            listen,
            project_interval_ms,
            compression,
            max_connections,
            header_read_timeout_ms,
            body_read_timeout_ms,
            write_stall_timeout_ms,
            api_keys,
            allow_keyless,
            allowed_hosts,
            catalog,
        } => {
            let codec = Codec::parse(&compression)?;
            // Checked before anything opens: a refused file appends nothing.
            let catalog = catalog.as_deref().map(open_catalog).transpose()?;
            let keys = api_keys.as_deref().map(crate::auth::ApiKeys::load).transpose()?.map(Arc::new);
            if max_connections == 0 || header_read_timeout_ms == 0 || body_read_timeout_ms == 0 || write_stall_timeout_ms == 0 {
                bail!("--max-connections and the timeouts must be at least 1");
            }
            if !(1..=project::MAX_PROJECT_INTERVAL_MS).contains(&project_interval_ms) {
                bail!("--project-interval-ms must be between 1 and {} (a day)", project::MAX_PROJECT_INTERVAL_MS);
            }
            let limits = api::Limits {
                max_connections,
                header_read_timeout_ms,
                body_read_timeout_ms,
                write_stall_timeout_ms,
                ..api::Limits::default()
            };
            let access = Access { keys, allow_keyless, allowed_hosts };
            runtime()?.block_on(serve(&data_dir, &listen, project_interval_ms, codec, limits, access, catalog, shutdown_signal()))
        }
        Command::Quickstart { listen, seed, events, exit } => {
            if kafka().is_some() {
                bail!("quickstart runs the embedded default (the sled log); use `serve --log kafka://…` with a broker");
            }
            runtime()?.block_on(quickstart(&data_dir, &listen, seed, events, exit))
        }
        Command::Generate { seed, events, players, start_time, url, rate, concurrency, batch, catalog } => {
            if players == 0 {
                bail!("--players must be at least 1");
            }
            let start_time_us = event::parse_time_us(&start_time).map_err(|e| anyhow!("--start-time `{start_time}`: {e}"))?;
            let cfg = WorldConfig { seed, players, start_time_us };
            let catalog = catalog.as_deref().map(open_catalog).transpose()?;
            let world = match &catalog {
                Some(c) => World::with_catalog(cfg, c).map_err(|e| anyhow!("--catalog: {e}"))?,
                None => World::new(cfg),
            };
            match url {
                Some(url) => {
                    if batch == 0 || batch > generate::MAX_BATCH {
                        bail!("--batch must be between 1 and {}", generate::MAX_BATCH);
                    }
                    if concurrency == 0 || concurrency > generate::MAX_CONCURRENCY {
                        bail!("--concurrency must be between 1 and {}", generate::MAX_CONCURRENCY);
                    }
                    let settings = generate::LoadSettings { url, rate, concurrency, batch };
                    let pb = generate::progress_bar(events, "sending");
                    let report = runtime()?.block_on(generate::load_test(world, events, settings, pb.clone()))?;
                    pb.finish_and_clear();
                    print!("{}", report.render());
                    if report.failed_requests > 0 {
                        bail!("{} requests failed", report.failed_requests);
                    }
                    Ok(())
                }
                None => {
                    let log = open_event_log(&data_dir, "generate into the log")?;
                    if let Some(c) = &catalog {
                        record_catalog(log.as_ref(), &data_dir, c)?;
                    }
                    let mut world = world;
                    let pb = generate::progress_bar(events, "generating");
                    let s = generate::generate_into_log(log.as_ref(), &mut world, events, &pb)?;
                    pb.finish_and_clear();
                    log.close()?;
                    if s.duplicates > 0 {
                        println!(
                            "{} of the events were already in the log (same event ids: this seed was generated here before) and were not appended again",
                            s.duplicates
                        );
                    }
                    let place = match kafka() {
                        Some((target, _)) => format!("{target} ({} partitions; acknowledged by the brokers)", log.partitions()),
                        None => format!("{} at offsets {}..{}", log_name(&data_dir), s.first_offset, s.end_offset),
                    };
                    println!(
                        "generated {} events (seed {seed}; {} bytes of event JSON) into {place} in {:.2} s ({:.0} events/s), durable",
                        s.events,
                        s.json_bytes,
                        s.seconds,
                        s.events as f64 / s.seconds.max(1e-9)
                    );
                    Ok(())
                }
            }
        }
        Command::Replay { from, to, follow: _, url: Some(url), rate, .. } => {
            sled_only("replay to another server")?;
            let log = open_log_for(&data_dir, "replay to another server")?;
            let pb = generate::progress_bar(0, "replaying");
            let dyn_log: Arc<dyn EventLog> = log.clone();
            let report = runtime()?.block_on(replay::replay_to_url(dyn_log, from, to.unwrap_or(u64::MAX), &url, rate, &pb))?;
            pb.finish_and_clear();
            println!("{}", report.render());
            log.close()?;
            Ok(())
        }
        Command::Replay { from, to, follow, url: None, partition, .. } => match kafka() {
            Some(_) => kafka_replay(from, to.unwrap_or(u64::MAX), partition, follow),
            None => {
                if partition.is_some_and(|p| p != 0) {
                    bail!("--partition {}: the sled log has one partition, 0", partition.unwrap_or(0));
                }
                replay_cmd(&data_dir, from, to, follow)
            }
        },
        Command::Verify if kafka().is_some() => {
            let (target, options) = kafka().ok_or_else(|| anyhow!("no Kafka log"))?;
            let log = KafkaLog::open_reader(target, options)?;
            let pb = generate::progress_bar(0, "verifying");
            let result = crate::verify::verify_topic(log.as_ref(), log_format(), &target.topic, &tables_root(&data_dir)?, &data_dir, &pb);
            pb.finish_and_clear();
            println!("{}", result?.render());
            Ok(())
        }
        Command::Verify => {
            let log = open_log_for(&data_dir, "verify")?;
            let pb = generate::progress_bar(0, "verifying");
            let result = crate::verify::verify(log.as_ref(), &tables_root(&data_dir)?, &data_dir, &pb);
            pb.finish_and_clear();
            log.close()?;
            println!("{}", result?.render());
            Ok(())
        }
        Command::Check { scenarios, bless } => {
            sled_only("run scenarios")?;
            let exe = std::env::current_exe().context("locating the questlog binary")?;
            let mut failed = Vec::new();
            for path in &scenarios {
                let scenario = crate::check::load(path)?;
                println!(
                    "scenario {}: {} events (seed {}), project every {}{}",
                    path.display(),
                    scenario.events,
                    scenario.seed,
                    scenario.schedule.project_every,
                    scenario.schedule.crash_at_step.map(|s| format!(", crash in step {s}")).unwrap_or_default()
                );
                let pb = generate::progress_bar(0, "running");
                let tables = TABLES_OPTIONS.get().and_then(|(root, _)| root.as_ref());
                let outcome = crate::check::run(path, &exe, tables, &pb)?;
                pb.finish_and_clear();
                println!("{}", outcome.render());
                if bless {
                    if !outcome.incremental_equals_rebuild {
                        bail!("not blessing {}: incremental tables differ from a rebuild", path.display());
                    }
                    crate::check::bless(path, &outcome)?;
                    println!("blessed: wrote the expected digests to {}", path.display());
                } else if !outcome.ok() {
                    failed.push(path.display().to_string());
                }
            }
            if !failed.is_empty() {
                bail!("{} scenario(s) failed: {}", failed.len(), failed.join(", "));
            }
            Ok(())
        }
        Command::Rejected { from, limit } => rejected_cmd(&data_dir, from, limit),
        Command::Project { rebuild, compression, step_events, to, out, follow, interval_ms } if kafka().is_some() => {
            if to.is_some() || out.is_some() {
                bail!(
                    "--to and --out take one log offset; a topic has an offset per partition: rebuild the whole topic (project --rebuild)"
                );
            }
            let codec = Codec::parse(&compression)?;
            let (target, options) = kafka().ok_or_else(|| anyhow!("no Kafka log"))?;
            let log = KafkaLog::open_reader(target, options)?;
            let layout = project::Layout::Topic { topic: target.topic.clone(), partitions: log.partitions() };
            let root = tables_root(&data_dir)?;
            let open = || -> Result<Projector> {
                Ok(Projector::open_source(&root, &data_dir, codec, vacuum_retention_ms(), !rebuild, layout.clone(), log_format())?
                    .with_step_events(step_events)
                    .with_min_free_bytes(log_options().min_free_bytes))
            };
            let mut projector = open()?;
            if follow {
                return follow_log(projector, open, log.as_ref(), &target.to_string(), interval_ms, &root);
            }
            let pb = generate::progress_bar(0, if rebuild { "rebuilding" } else { "projecting" });
            let summary = if rebuild { projector.rebuild(log.as_ref(), u64::MAX, &pb)? } else { projector.catch_up(log.as_ref(), &pb)? };
            pb.finish_and_clear();
            println!("{}", summary.render());
            println!("tables at the partitions' offsets {:?} of {target} in {root}", projector.partition_offsets());
            Ok(())
        }
        Command::Project { rebuild, compression, step_events, to, out, follow, interval_ms } => {
            let codec = Codec::parse(&compression)?;
            let log = open_log_for(&data_dir, "project")?;
            let end = log.durable_end();
            // The catalogue copies `sql` and `report` read, from the log (a data dir copied
            // without them, or an older questlog's, gets them here).
            crate::catalog::write_copies(&data_dir, &log_catalogs(log.as_ref())?)?;
            if let Some(to) = to.filter(|&t| t > end) {
                bail!("--to {to} is past the end of the log ({end} events)");
            }
            let pb = generate::progress_bar(0, if rebuild { "rebuilding" } else { "projecting" });
            if let Some(out) = out {
                // Time travel into another place; the live tables are not touched.
                let out_root = TablesRoot::parse(&out)?;
                let taken = match &out_root {
                    TablesRoot::Local(dir) => dir.read_dir().is_ok_and(|mut d| d.next().is_some()),
                    TablesRoot::S3 { .. } => project::snapshot(&out_root, &data_dir)?.versions.iter().any(Option::is_some),
                };
                if taken {
                    bail!("--out {out} already holds files or tables; choose a new place");
                }
                let summary = project::rebuild_into(log.as_ref(), to.unwrap_or(end), &out_root, &data_dir, codec, &pb)?;
                pb.finish_and_clear();
                println!("{}", summary.render());
                println!("tables as of offset {} in {out_root}", summary.to_offset);
                log.close()?;
                return Ok(());
            }
            let mut projector =
                open_projector(&data_dir, codec, !rebuild)?.with_step_events(step_events).with_min_free_bytes(log_options().min_free_bytes);
            if follow {
                if running_server(&data_dir).is_some() {
                    bail!("a server runs on {}; its own projector keeps the tables", data_dir.display());
                }
                let root = tables_root(&data_dir)?;
                let reopen = || -> Result<Projector> {
                    Ok(open_projector(&data_dir, codec, true)?
                        .with_step_events(step_events)
                        .with_min_free_bytes(log_options().min_free_bytes))
                };
                let result = follow_log(projector, reopen, log.as_ref(), &log_name(&data_dir), interval_ms, &root);
                log.close()?;
                return result;
            }
            let summary = if rebuild {
                projector.rebuild(log.as_ref(), to.unwrap_or(u64::MAX), &pb)?
            } else {
                projector.catch_up(log.as_ref(), &pb)?
            };
            pb.finish_and_clear();
            println!("{}", summary.render());
            println!("tables at offset {} in {}", projector.offset(), tables_root(&data_dir)?);
            log.close()?;
            Ok(())
        }
        Command::Report { out, to } => {
            let out = out.unwrap_or_else(|| data_dir.join("report"));
            let (report, offset) = match to {
                None => build_report(&tables_root(&data_dir)?, &data_dir, &data_dir)?,
                Some(to) => {
                    // As of offset `to`: rebuild the tables that far in a temp dir.
                    sled_only("report as of an offset")?;
                    let log = open_log_for(&data_dir, "report as of an offset")?;
                    let end = log.durable_end();
                    if to > end {
                        bail!("--to {to} is past the end of the log ({end} events)");
                    }
                    let tmp = tempfile::tempdir().context("creating a temp dir")?;
                    let root = TablesRoot::Local(tmp.path().join("tables"));
                    project::rebuild_into(log.as_ref(), to, &root, tmp.path(), Codec::Snappy, &indicatif::ProgressBar::hidden())?;
                    log.close()?;
                    build_report(&root, tmp.path(), &data_dir)?
                }
            };
            let (md, html) = report::write_report(&report, &out)?;
            for line in &report.summary {
                println!("{line}");
            }
            println!("\nreport (tables at log offset {offset}): {}\n                                   {}", md.display(), html.display());
            Ok(())
        }
        Command::Sql { query, format } => {
            // Load only the tables the query names, without heavy columns it never uses.
            let skip = sql::skippable_columns(&query);
            let named = sql::named_tables(&query);
            // With a store catalogue: `catalog_items` and `stock` beside the five.
            let catalogs = crate::catalog::read_copies(&data_dir)?;
            let wants_catalog = !catalogs.is_empty() && sql::names_catalog_tables(&query);
            let ((frames, extra), offset) = read_snapshot(&tables_root(&data_dir)?, &data_dir, |files| {
                let named_files =
                    report::TableFiles::new(files.tables.iter().filter(|(t, _)| named.contains(t)).map(|(t, f)| (*t, f.clone())).collect())
                        .partitioned(files.partitioned);
                let frames = report::load_frames_without(&named_files, &skip)?;
                let extra = if wants_catalog { Some(report::open_snapshot(files)?) } else { None };
                Ok((frames, extra))
            })?;
            let extra = match extra {
                Some(snapshot) => {
                    let in_force: Vec<_> = catalogs.into_iter().filter(|v| v.from_offset <= offset).collect();
                    report::catalog::frames(&snapshot, &in_force)?
                }
                None => Vec::new(),
            };
            let mut df = sql::run_sql_with(&frames, &extra, &query)?;
            let fmt = match format {
                Format::Table => sql::OutputFormat::Table,
                Format::Csv => sql::OutputFormat::Csv,
                Format::Json => sql::OutputFormat::Json,
            };
            let text = sql::format_output(&mut df, fmt)?;
            let mut out = std::io::stdout().lock();
            replay::write_all(&mut out, text.as_bytes())?;
            if !text.ends_with('\n') {
                replay::write_all(&mut out, b"\n")?;
            }
            Ok(())
        }
        Command::Catalog(cmd) => catalog_command(cmd, &data_dir),
        Command::Ddl => {
            let root = tables_root(&data_dir)?;
            let mut text = String::new();
            // The plain view exists once a projector has opened local tables (and is gone if
            // it could not be kept up to date, e.g. tables on another filesystem).
            let view = absolute(&data_dir)?.join(project::plain::LINK);
            if root.is_local() && std::fs::read_link(&view).is_ok() {
                text.push_str("-- Hive, or Spark without Delta Lake: the plain-directory view DATA_DIR/tables\n");
                text.push_str(&project::hive_ddl(&view));
            }
            text.push_str(&project::delta_ddl(&root)?);
            text.push_str(&catalog_ddl(&data_dir)?);
            // Through write_all: a closed pipe (`questlog ddl | head`) ends quietly.
            replay::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
            Ok(())
        }
    }
}

/// Reads a catalogue file (the error names the file and what is wrong with it).
fn open_catalog(path: &Path) -> Result<crate::catalog::Catalog> {
    Ok(crate::catalog::Catalog::open(path)?)
}

/// The catalogue versions the log holds.
fn log_catalogs(log: &dyn EventLog) -> Result<Vec<crate::catalog::Version>> {
    Ok(crate::catalog::versions(log.catalogs()?.into_iter().map(|r| (r.from_offset, r.hash, r.content)))?)
}

/// Records `c` in the log (a no-op when it is the one in force) and refreshes the copies
/// under `DATA_DIR/catalog`. Returns the versions.
fn record_catalog(log: &dyn EventLog, data_dir: &Path, c: &crate::catalog::Catalog) -> Result<Vec<crate::catalog::Version>> {
    let hash = c.hash();
    log.record_catalog(hash.clone(), c.canonical())?.wait()?;
    let versions = log_catalogs(log)?;
    crate::catalog::write_copies(data_dir, &versions)?;
    let from = versions.last().map(|v| v.from_offset).unwrap_or(0);
    tracing::info!(catalog_hash = %hash, from_offset = from, stores = c.stores.len(), items = c.items.len(), "store catalogue in force");
    Ok(versions)
}

/// `serve --catalog`: records the catalogue, then builds the stock of the log's purchases
/// so far (read once, from the first catalogue's offset).
fn serve_catalog(log: &dyn EventLog, data_dir: &Path, c: crate::catalog::Catalog) -> Result<(Arc<api::ApiCatalog>, String)> {
    let started = Instant::now();
    let versions = record_catalog(log, data_dir, &c)?;
    let from = versions.first().map(|v| v.from_offset).unwrap_or(0);
    let end = log.durable_end();
    let mut failed = None;
    let purchases = log
        .read(from, end)?
        .map_while(|r| r.map_err(|e| failed = Some(e)).ok())
        .filter_map(|(offset, r)| crate::catalog::purchase_of(&r).map(|(t, s, i, c)| (offset, t, s, i, c)));
    let book = crate::catalog::stock_from(&versions, purchases);
    if let Some(e) = failed {
        return Err(anyhow!(e).context("reading the log's purchases for the stock book"));
    }
    let note = format!(
        "store catalogue {} ({} stores, {} items) in force from log offset {}; stock from {} logged events read in {:.1} s",
        c.hash(),
        c.stores.len(),
        c.items.len(),
        versions.last().map(|v| v.from_offset).unwrap_or(0),
        end - from,
        started.elapsed().as_secs_f64()
    );
    Ok((Arc::new(api::ApiCatalog::new(c, book)), note))
}

/// The catalogue versions in force up to `offset`, from the copies under `DATA_DIR`.
fn catalogs_up_to(data_dir: &Path, offset: u64) -> Result<Vec<crate::catalog::Version>> {
    let mut v = crate::catalog::read_copies(data_dir)?;
    v.retain(|v| v.from_offset <= offset);
    Ok(v)
}

fn catalog_command(cmd: CatalogCommand, data_dir: &Path) -> Result<()> {
    use crate::catalog::Catalog;
    match cmd {
        CatalogCommand::Init { seed, out } => {
            let c = generate::world::builtin_catalog(seed);
            c.write(&out)?;
            let c = Catalog::open(&out)?;
            println!("wrote {} ({} stores, {} items; {})", out.display(), c.stores.len(), c.items.len(), c.hash());
            Ok(())
        }
        CatalogCommand::Show { file } => {
            let c = Catalog::open(&file)?;
            println!("{}: a valid catalogue, {} stores, {} items, {}", file.display(), c.stores.len(), c.items.len(), c.hash());
            for s in &c.stores {
                let n = c.items.iter().filter(|i| i.store_id == s.store_id).count();
                let restock = if s.restock_interval_hours == 0 {
                    "never restocked".to_string()
                } else {
                    format!("restocked every {} h", s.restock_interval_hours)
                };
                println!("  store {:>4}  {}  ({n} items, {restock})", s.store_id, s.name);
            }
            Ok(())
        }
        CatalogCommand::Schema => {
            print!("{}", crate::catalog::SCHEMA_SQL);
            Ok(())
        }
        CatalogCommand::History => {
            sled_only("list the log's catalogues")?;
            let log = open_log_for(data_dir, "list the log's catalogues")?;
            let versions = log_catalogs(log.as_ref())?;
            if versions.is_empty() {
                println!("the log has no store catalogue (serve --catalog FILE or generate --catalog FILE records one)");
            }
            for v in &versions {
                println!(
                    "from offset {:>10}  {}  ({} stores, {} items)",
                    v.from_offset,
                    v.hash,
                    v.catalog.stores.len(),
                    v.catalog.items.len()
                );
            }
            crate::catalog::write_copies(data_dir, &versions)?;
            log.close()?;
            Ok(())
        }
    }
}

/// `ddl`'s statements for the catalogue copy, when the log has a catalogue.
fn catalog_ddl(data_dir: &Path) -> Result<String> {
    let versions = crate::catalog::read_copies(data_dir)?;
    let Some(latest) = versions.last() else { return Ok(String::new()) };
    let copy = absolute(data_dir)?.join(crate::catalog::COPIES_DIR).join(crate::catalog::SQLITE_COPY);
    let path = copy.display().to_string().replace('\'', "''");
    Ok(format!(
        "\n-- The store catalogue in force ({}, from log offset {}), a copy of the log's at\n\
         -- {path}. DuckDB (its sqlite extension):\n\
         attach '{path}' as questlog_catalog (type sqlite, read_only);\n\
         create or replace view catalog_items as select s.name as store_name, i.* from questlog_catalog.items i join questlog_catalog.stores s using (store_id);\n\
         -- Spark (the org.xerial sqlite-jdbc driver on its classpath):\n\
         create table if not exists default.catalog_items using jdbc options (url 'jdbc:sqlite:{path}', dbtable 'items');\n\
         -- Stock is computed from the log by questlog: `questlog sql \"select * from stock\" --format csv`.\n",
        latest.hash, latest.from_offset
    ))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

fn log_options() -> LogOptions {
    LOG_OPTIONS.get().cloned().unwrap_or_default()
}

/// Opens the log, or explains who holds it.
fn open_log_for(data_dir: &Path, what: &str) -> Result<Arc<SledLog>> {
    match SledLog::open_with(&data_dir.join("log"), log_options()) {
        Ok(log) => Ok(log),
        Err(LogError::Locked { .. }) => {
            let who = running_server(data_dir).map(|a| format!(" (`questlog serve` at http://{a})")).unwrap_or_default();
            bail!(
                "cannot {what}: the log in {} is held by another process{who}. A running server projects continuously and takes events at /v1/events; stop it first, or use --url",
                data_dir.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the event log `--log` names: the sled log of `data_dir`, or the Kafka topic (with
/// this node's rejected-event store in `data_dir`).
fn open_event_log(data_dir: &Path, what: &str) -> Result<Arc<dyn EventLog>> {
    match kafka() {
        Some((target, options)) => match KafkaLog::open(target, options, data_dir, log_options()) {
            Ok(log) => Ok(log),
            Err(LogError::Locked { .. }) => bail!(
                "cannot {what}: the rejected-event store in {} is held by another process; give each questlog process on a Kafka log its own --data-dir",
                data_dir.display()
            ),
            Err(e) => Err(e.into()),
        },
        None => Ok(open_log_for(data_dir, what)?),
    }
}

/// How `--log` reads for people: the sled log's directory or the topic's URL.
fn log_name(data_dir: &Path) -> String {
    match kafka() {
        Some((target, _)) => target.to_string(),
        None => data_dir.join("log").display().to_string(),
    }
}

/// `project --follow`: steps until the tables reach the log's end, then one step every
/// `interval_ms`, until SIGINT or SIGTERM (the step under way finishes first). A step
/// that fails for a reason that may pass (a broker or the object store unreachable, a full
/// disk) is retried after a backoff that doubles up to [`project::MAX_PROJECT_BACKOFF_MS`],
/// from tables opened again; another writer's commit, or tables that are not this log's,
/// end the run with that error.
fn follow_log(
    mut projector: Projector,
    reopen: impl Fn() -> Result<Projector>,
    log: &dyn EventLog,
    source: &str,
    interval_ms: u64,
    root: &TablesRoot,
) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime()?;
    let stop2 = stop.clone();
    rt.spawn(async move {
        shutdown_signal().await;
        stop2.store(true, Ordering::SeqCst);
    });
    println!("following {source} into {root} (every {interval_ms} ms once caught up; Ctrl-C stops)");
    let hidden = indicatif::ProgressBar::hidden();
    let mut failures: u32 = 0;
    let mut reopen_next = false;
    while !stop.load(Ordering::SeqCst) {
        if reopen_next {
            match reopen() {
                Ok(p) => {
                    projector = p;
                    reopen_next = false;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    eprintln!("questlog: cannot open the tables again: {e:#}");
                }
            }
        }
        let mut wait_ms = interval_ms;
        if !reopen_next {
            match projector.step(log, &hidden) {
                Ok(s) => {
                    failures = 0;
                    if s.events > 0 || s.rows.iter().any(|&r| r > 0) {
                        println!(
                            "step: {} records read, {} rows, {} re-sent copies dropped, {} rejected; position {} ({:.2} s)",
                            s.events,
                            s.rows.iter().sum::<u64>(),
                            s.duplicates,
                            s.rejected,
                            s.to_offset,
                            s.seconds
                        );
                    }
                    if !s.at_end {
                        continue; // more to read: no wait
                    }
                }
                Err(
                    e @ (project::ProjectError::Conflict { .. }
                    | project::ProjectError::Schema { .. }
                    | project::ProjectError::Inconsistent { .. }),
                ) => {
                    return Err(e.into());
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    eprintln!("questlog: projection step failed (attempt {failures}; retrying): {e}");
                    reopen_next = true;
                }
            }
        }
        if failures > 0 {
            wait_ms = (interval_ms << failures.min(16)).min(project::MAX_PROJECT_BACKOFF_MS);
        }
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(FOLLOW_POLL_MS.min(wait_ms)));
        }
    }
    println!("stopped; tables at position {} in {root}", projector.offset());
    Ok(())
}

/// `replay` of a Kafka log: JSON lines with `log_partition` and `log_offset`, partition by
/// partition (each in offset order), from `from` to `to` in each; with `follow`, then the
/// records that arrive in any of them, as they come, until each reached `to`.
fn kafka_replay(from: u64, to: u64, partition: Option<u32>, follow: bool) -> Result<()> {
    let (target, options) = kafka().ok_or_else(|| anyhow!("replay of a Kafka log without --log kafka://…"))?;
    if log_format() != ValueFormat::Questlog {
        bail!("replay prints questlog's records; read a topic in the seed's format with a Kafka consumer, or project it (project --log-format seed)");
    }
    let log = KafkaLog::open_reader(target, options)?;
    let partitions: Vec<u32> = match partition {
        Some(p) if p >= log.partitions() => bail!("--partition {p}: the topic has {} partitions", log.partitions()),
        Some(p) => vec![p],
        None => (0..log.partitions()).collect(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut buf = String::with_capacity(64 * 1024);
    let mut reached: Vec<(u32, u64)> = Vec::with_capacity(partitions.len());
    let mut open = true;
    'partitions: for p in partitions {
        let mut next = from;
        for item in log.read_partition(p, from, to)? {
            let (offset, record) = item?;
            next = offset + 1;
            replay::write_partitioned_line(&mut buf, p, offset, &record);
            if buf.len() >= 60 * 1024 {
                if !replay::write_all(&mut out, buf.as_bytes())? {
                    open = false;
                    break 'partitions;
                }
                buf.clear();
            }
        }
        reached.push((p, next));
    }
    if open && replay::write_all(&mut out, buf.as_bytes())? {
        out.flush().ok();
    } else {
        open = false;
    }
    buf.clear();
    let mut following: Vec<(u32, u64)> = reached.into_iter().filter(|&(_, next)| next < to).collect();
    if follow && open && !following.is_empty() {
        // Line by line from here: whoever reads the output sees each record as it comes.
        log.follow(&following.clone(), |p, offset, record| {
            if offset >= to {
                following.retain(|&(q, _)| q != p);
                return Ok(!following.is_empty());
            }
            buf.clear();
            replay::write_partitioned_line(&mut buf, p, offset, record);
            let written = replay::write_all(&mut out, buf.as_bytes()).map_err(|e| LogError::Flush(e.to_string()))?;
            Ok(written && out.flush().is_ok())
        })?;
    }
    log.close()?;
    Ok(())
}

/// The address of the server holding `data_dir`, if one says it runs.
fn running_server(data_dir: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(data_dir.join(SERVER_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    // A server killed without cleanup leaves the file behind; check its process lives.
    if let Some(pid) = v["pid"].as_u64() {
        if cfg!(target_os = "linux") && !Path::new(&format!("/proc/{pid}")).exists() {
            return None;
        }
    }
    v["addr"].as_str()?.parse().ok()
}

fn replay_cmd(data_dir: &Path, from: u64, to: Option<u64>, follow: bool) -> Result<()> {
    let to_offset = to.unwrap_or(u64::MAX);
    match SledLog::open(&data_dir.join("log")) {
        Ok(log) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
            let end = log.durable_end();
            if from > end {
                bail!("--from {from} is past the end of the log ({end} events)");
            }
            let end = log.durable_end().min(to_offset);
            replay::replay_to(log.as_ref(), from, end, &mut out)?;
            out.flush().ok();
            log.close()?;
            drop(log);
            if !follow || end >= to_offset {
                return Ok(());
            }
            // Nothing appends to a log that no server holds: release it and follow the
            // next server that opens this data dir.
            eprintln!("replay: end of log at offset {end}; waiting for `questlog serve` on {} to follow it", data_dir.display());
            loop {
                if let Some(addr) = running_server(data_dir) {
                    let mut url = format!("http://{addr}/v1/replay?from={end}&follow=true");
                    if let Some(to) = to {
                        url.push_str(&format!("&to={to}"));
                    }
                    return runtime()?.block_on(stream_http(&url));
                }
                std::thread::sleep(Duration::from_millis(FOLLOW_POLL_MS));
            }
        }
        Err(LogError::Locked { .. }) => {
            let addr = running_server(data_dir).ok_or_else(|| anyhow!("the log in {} is held by another process", data_dir.display()))?;
            let mut url = format!("http://{addr}/v1/replay?from={from}&follow={follow}");
            if let Some(to) = to {
                url.push_str(&format!("&to={to}"));
            }
            runtime()?.block_on(stream_http(&url))
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies an HTTP response body to stdout as it arrives.
async fn stream_http(url: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let mut resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!("GET {url}: {status}: {}", resp.text().await.unwrap_or_default());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some(chunk) = resp.chunk().await.context("reading the replay stream")? {
        // The chunk's bytes as they came: a chunk may end inside a character.
        if !replay::write_all(&mut out, &chunk)? {
            return Ok(());
        }
        out.flush().ok();
    }
    Ok(())
}

fn rejected_cmd(data_dir: &Path, from: u64, limit: usize) -> Result<()> {
    // With a Kafka log, the events this node rejected are in its local store (which a
    // node that never rejected anything has not made), and the values a projector could
    // not project in its own.
    let dir = if kafka().is_some() { data_dir.join(crate::log::kafka::REJECTED_DIR) } else { data_dir.join("log") };
    if kafka().is_none() || dir.is_dir() {
        match SledLog::open(&dir) {
            Ok(log) => {
                let mut s = String::new();
                for (seq, r) in log.rejected(from, limit)? {
                    replay::write_rejected_line(&mut s, seq, &r);
                }
                let mut out = std::io::stdout().lock();
                let open = replay::write_all(&mut out, s.as_bytes())?;
                log.close()?;
                if !open {
                    return Ok(());
                }
            }
            Err(LogError::Locked { .. }) => {
                let addr = running_server(data_dir).ok_or_else(|| anyhow!("the log in {} is held by another process", dir.display()))?;
                runtime()?.block_on(stream_http(&format!("http://{addr}/v1/rejected?from={from}&limit={limit}")))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if kafka().is_some() {
        let mut s = String::new();
        for line in project::SourceRejects::list(data_dir)? {
            s.push_str(&line);
            s.push('\n');
        }
        replay::write_all(&mut std::io::stdout().lock(), s.as_bytes())?;
    }
    Ok(())
}

/// Runs `load` (which opens, and may read, the five tables) on one consistent snapshot,
/// retrying if a projector's vacuum deleted a file between taking the snapshot and opening it.
fn read_snapshot<T>(
    root: &TablesRoot,
    data_dir: &Path,
    load: impl Fn(&report::TableFiles) -> Result<T, report::ReportError>,
) -> Result<(T, u64)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let snap = project::snapshot(root, data_dir)?;
        let files =
            report::TableFiles::new(TABLES.iter().zip(snap.files).map(|(t, f)| (t.name, f)).collect()).partitioned(snap.partitioned);
        match load(&files) {
            Ok(frames) => return Ok((frames, snap.offset)),
            Err(report::ReportError::FileVanished(p)) if attempt < SNAPSHOT_ATTEMPTS => {
                tracing::debug!(path = %p.display(), "table file replaced while reading; taking a new snapshot");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The report of the tables at `root`; `catalogs_from` is the data dir whose catalogue
/// copies apply (those in force up to the tables' offset).
fn build_report(root: &TablesRoot, data_dir: &Path, catalogs_from: &Path) -> Result<(report::Report, u64)> {
    // Opened, not loaded: each section reads only the columns it uses.
    let (snapshot, offset) = read_snapshot(root, data_dir, report::open_snapshot)?;
    let catalogs = catalogs_up_to(catalogs_from, offset)?;
    let report = report::build_report_with(&snapshot, &format!("log offsets 0..{offset}"), &catalogs)?;
    Ok((report, offset))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// The projector's figures as the API reads them: this impl is the only place that knows
/// both sides, so `project` and `api` need not import each other.
impl crate::metrics::ProjectionSource for ProjectionStats {
    fn figures(&self) -> crate::metrics::ProjectionFigures {
        use std::sync::atomic::Ordering::Relaxed;
        crate::metrics::ProjectionFigures {
            projected_offset: self.projected_offset.load(Relaxed),
            steps_total: self.steps_total.load(Relaxed),
            errors_total: self.errors_total.load(Relaxed),
            panics_total: self.panics_total.load(Relaxed),
            error: self.error(),
        }
    }
}

/// Who may use a server: its API keys, or without them whether it may listen beyond
/// loopback and which host names it answers to.
#[derive(Default)]
struct Access {
    keys: Option<Arc<crate::auth::ApiKeys>>,
    allow_keyless: bool,
    allowed_hosts: Vec<String>,
}

/// A running server's parts, for `serve` and `quickstart`.
struct Server {
    limits: api::Limits,
    keys: Option<Arc<crate::auth::ApiKeys>>,
    allowed_hosts: Vec<String>,
    log: Arc<dyn EventLog>,
    metrics: Arc<Metrics>,
    projection: Arc<ProjectionStats>,
    addr: SocketAddr,
    /// The continuous projector; none on a Kafka log (not supported there yet).
    projector: Option<Continuous>,
    data_dir: PathBuf,
    /// `serve --catalog`: the catalogue purchases are checked against.
    catalog: Option<Arc<api::ApiCatalog>>,
    /// The report's findings for the live page, and the thread that makes them.
    findings: Option<(Arc<LiveFindings>, std::thread::JoinHandle<()>)>,
}

/// The shortest wait between two findings for the live page; a report that took longer to
/// make waits [`FINDINGS_COST_FACTOR`] times its own time, so the findings take at most a
/// sixth of a core from ingest and projection, whatever the tables' size.
const FINDINGS_INTERVAL_MS: u64 = 5_000;
const FINDINGS_COST_FACTOR: u32 = 5;
/// Findings are made only while someone asked for them this recently (a page polls every
/// second): a server nobody watches spends no time or memory on reports.
const FINDINGS_WANTED_MS: u64 = 30_000;

/// The report's findings as the tables move, made on a thread of their own while the live
/// page is open.
struct LiveFindings {
    latest: std::sync::Mutex<Option<Arc<api::live::Findings>>>,
    stop: std::sync::atomic::AtomicBool,
    /// When the findings were last asked for (milliseconds since `epoch`, plus one; 0: never).
    wanted_ms: std::sync::atomic::AtomicU64,
    epoch: Instant,
    /// The findings thread, woken by the first ask after a quiet spell.
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl api::live::FindingsSource for LiveFindings {
    fn findings(&self) -> Option<Arc<api::live::Findings>> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let before = self.wanted_ms.swap(now, Relaxed);
        if before == 0 || now.saturating_sub(before) > FINDINGS_WANTED_MS {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Makes the findings again whenever the published tables moved, until told to stop.
fn findings_loop(f: Arc<LiveFindings>, projection: Arc<ProjectionStats>, root: TablesRoot, data_dir: PathBuf) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut last = 0;
    while !f.stop.load(Relaxed) {
        let mut wait = Duration::from_millis(FINDINGS_INTERVAL_MS);
        let offset = projection.projected_offset.load(Relaxed);
        let wanted = f.wanted_ms.load(Relaxed);
        let watched = wanted > 0 && (f.epoch.elapsed().as_millis() as u64 + 1).saturating_sub(wanted) <= FINDINGS_WANTED_MS;
        if offset != last && watched {
            let started = Instant::now();
            match build_report(&root, &data_dir, &data_dir) {
                Ok((report, at)) => {
                    let findings = api::live::Findings { offset: at, summary: report.summary, charts: report.charts, html: report.html };
                    *f.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(findings));
                    last = offset;
                }
                Err(e) => tracing::warn!(error = %e, "cannot make the findings for the live page; trying again"),
            }
            wait = wait.max(started.elapsed() * FINDINGS_COST_FACTOR);
        }
        std::thread::park_timeout(wait);
    }
}

async fn start_server(
    data_dir: &Path,
    listen: &str,
    interval_ms: u64,
    codec: Codec,
    fallback_port: bool,
) -> Result<(Server, tokio::net::TcpListener)> {
    let log = open_event_log(data_dir, "serve")?;
    let projector = match kafka() {
        Some(_) => None,
        None => Some(open_projector(data_dir, codec, true)?.with_min_free_bytes(log_options().min_free_bytes)),
    };
    let metrics = Arc::new(Metrics::default());
    let projection = Arc::new(ProjectionStats::default());
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) if fallback_port && e.kind() == std::io::ErrorKind::AddrInUse => {
            let host = listen.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1");
            eprintln!("{listen} is in use; using a free port instead");
            tokio::net::TcpListener::bind(format!("{host}:0")).await.with_context(|| format!("binding {host}:0"))?
        }
        Err(e) => return Err(anyhow!(e).context(format!("binding {listen}"))),
    };
    let addr = listener.local_addr()?;
    let projector = projector.map(|p| Continuous::start(p, log.clone(), projection.clone(), interval_ms));
    let info = serde_json::json!({ "addr": addr.to_string(), "pid": std::process::id() });
    std::fs::write(data_dir.join(SERVER_FILE), info.to_string()).context("writing serve.json")?;
    // The live page's findings, while this server projects the tables.
    let findings = match &projector {
        Some(_) => {
            let f = Arc::new(LiveFindings {
                latest: Default::default(),
                stop: Default::default(),
                wanted_ms: Default::default(),
                epoch: Instant::now(),
                thread: Default::default(),
            });
            let (f2, p2, root, dd) = (f.clone(), projection.clone(), tables_root(data_dir)?, data_dir.to_path_buf());
            let handle = std::thread::Builder::new()
                .name("questlog-findings".into())
                .spawn(move || findings_loop(f2, p2, root, dd))
                .context("starting the findings thread")?;
            let _ = f.thread.set(handle.thread().clone());
            Some((f, handle))
        }
        None => None,
    };
    Ok((
        Server {
            limits: api::Limits::default(),
            keys: None,
            allowed_hosts: Vec::new(),
            log,
            metrics,
            projection,
            addr,
            projector,
            data_dir: data_dir.to_path_buf(),
            catalog: None,
            findings,
        },
        listener,
    ))
}

impl Server {
    fn state(&self) -> Arc<AppState> {
        let findings = self.findings.as_ref().map(|(f, _)| f.clone() as Arc<dyn api::live::FindingsSource>);
        Arc::new(
            AppState::new(self.log.clone(), self.metrics.clone(), self.projection.clone(), self.limits, self.keys.clone())
                .with_catalog(self.catalog.clone())
                .with_findings(findings)
                .with_allowed_hosts(self.allowed_hosts.clone()),
        )
    }

    /// Stops projection (after a last step) and closes the log.
    fn stop(self) -> Result<()> {
        if let Some((f, handle)) = self.findings {
            f.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            handle.thread().unpark();
            let _ = handle.join();
        }
        if let Some(p) = self.projector {
            p.stop();
        }
        self.log.close()?;
        let _ = std::fs::remove_file(self.data_dir.join(SERVER_FILE));
        tracing::info!(log_end_offset = self.log.durable_end(), "stopped");
        Ok(())
    }
}

async fn serve(
    data_dir: &Path,
    listen: &str,
    interval_ms: u64,
    codec: Codec,
    limits: api::Limits,
    access: Access,
    catalog: Option<crate::catalog::Catalog>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if catalog.is_some() && kafka().is_some() {
        bail!("--catalog: store catalogues are kept in the sled log only; a Kafka log takes purchases without one");
    }
    if access.keys.is_none() && !access.allow_keyless {
        keyless_on_loopback(listen, "give --api-keys FILE (see `questlog serve --help`), or add --allow-keyless to serve it open").await?;
    }
    let (mut server, listener) = start_server(data_dir, listen, interval_ms, codec, false).await?;
    server.limits = limits;
    server.keys = access.keys;
    server.allowed_hosts = access.allowed_hosts;
    let mut catalog_note = None;
    if let Some(c) = catalog {
        let log = server.log.clone();
        let dd = data_dir.to_path_buf();
        let (api_catalog, note) = tokio::task::spawn_blocking(move || serve_catalog(log.as_ref(), &dd, c)).await??;
        server.catalog = Some(api_catalog);
        catalog_note = Some(note);
    }
    println!("questlog serving on http://{} (data in {}; log {})", server.addr, data_dir.display(), log_name(data_dir));
    println!("live page: http://{}/{}", server.addr, if server.keys.is_some() { "?key=<a key with the read scope>" } else { "" });
    if let Some((target, _)) = kafka() {
        println!("events go to {target}; rejected ones stay in {}", data_dir.join(crate::log::kafka::REJECTED_DIR).display());
    }
    if let Some(note) = catalog_note {
        println!("{note}");
    }
    std::io::stdout().flush().ok();
    tracing::info!(addr = %server.addr, log_end_offset = server.log.durable_end(), "serving");
    api::run(listener, server.state(), shutdown).await.context("serving HTTP")?;
    tokio::task::spawn_blocking(move || server.stop()).await??;
    Ok(())
}

/// Refuses a keyless server on an address that is not loopback (checked before anything
/// opens, on the address as given: a name that resolves to loopback only is loopback).
async fn keyless_on_loopback(listen: &str, remedy: &str) -> Result<()> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen).await.with_context(|| format!("resolving --listen {listen}"))?.collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("--listen {listen} is not a loopback address, and without --api-keys anyone who can reach it could append and read every event: {remedy}");
    }
    Ok(())
}

async fn quickstart(data_dir: &Path, listen: &str, seed: u64, events: u64, exit: bool) -> Result<()> {
    keyless_on_loopback(listen, "quickstart serves without keys; use `serve --api-keys FILE` to serve others").await?;
    let started = Instant::now();
    let (server, listener) = start_server(data_dir, listen, 500, Codec::Snappy, true).await?;
    let addr = server.addr;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = server.state();
    let http = tokio::spawn(api::run(listener, state, async move {
        let _ = stop_rx.await;
    }));
    println!("questlog quickstart: serving on http://{addr}, data in {}", data_dir.display());
    println!("sending {events} seeded events (seed {seed}) over HTTP, 500 per request, 4 connections…");
    let start_time_us = event::parse_time_us(generate::world::DEFAULT_START_TIME).map_err(|e| anyhow!(e))?;
    let world = World::new(WorldConfig { seed, players: generate::world::DEFAULT_PLAYERS, start_time_us });
    let settings = generate::LoadSettings { url: format!("http://{addr}"), rate: None, concurrency: 4, batch: 500 };
    let pb = generate::progress_bar(events, "sending");
    let load = generate::load_test(world, events, settings, pb.clone()).await?;
    pb.finish_and_clear();
    print!("{}", load.render());

    // Wait for the continuous projection to reach the end of the log.
    let target = server.log.durable_end();
    if let Some(p) = &server.projector {
        p.nudge();
    }
    let deadline = Instant::now() + Duration::from_millis(CATCH_UP_TIMEOUT_MS);
    while server.projection.projected_offset.load(std::sync::atomic::Ordering::Relaxed) < target {
        if Instant::now() > deadline {
            bail!("tables did not catch up with the log within {} s", CATCH_UP_TIMEOUT_MS / 1000);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dd = data_dir.to_path_buf();
    let root = tables_root(data_dir)?;
    let (report, offset) = tokio::task::spawn_blocking(move || build_report(&root, &dd, &dd)).await??;
    let out = data_dir.join("report");
    let (md, html) = report::write_report(&report, &out)?;

    println!("\n== Findings ({offset} events) ==");
    for line in &report.summary {
        println!("  {line}");
    }
    let abs = absolute(data_dir)?;
    println!("\n== Where everything is ==");
    println!("  live page  http://{addr}/");
    println!("  API        http://{addr}  (POST /v1/events, GET /{{event_type}}?…, /healthz, /metrics)");
    println!("  log        {}", abs.join("log").display());
    println!("  tables     {}/{{guild_joins,enemies_killed,quest_accept,damage_taken,transactions}}  (Delta Lake)", tables_root(data_dir)?);
    if tables_root(data_dir)?.is_local() {
        println!("             {}/…  (the same as plain Parquet directories)", abs.join(project::plain::LINK).display());
    }
    println!("  report     {}", absolute(&md)?.display());
    println!("             {}", absolute(&html)?.display());
    println!("\n== Try next ==");
    println!("  curl -s 'http://{addr}/join_guild?guild_id=7&name=Knights'");
    println!("  questlog sql \"SELECT category, round(sum(total_cost), 2) AS revenue FROM transactions GROUP BY category ORDER BY revenue DESC\"");
    println!("  questlog replay --from 0 --to 5");
    println!("  questlog ddl");
    println!("(finished in {:.1} s)", started.elapsed().as_secs_f64());
    std::io::stdout().flush().ok();

    if !exit {
        println!("\nserving until Ctrl-C…");
        shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    http.await.context("HTTP server task")?.context("serving HTTP")?;
    tokio::task::spawn_blocking(move || server.stop()).await??;
    Ok(())
}
