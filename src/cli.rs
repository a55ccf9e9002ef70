//! The command line: parses the arguments (the global options here, each command's own in
//! its file under `src/commands/`) and dispatches to the command. The only place that
//! sets up logging and exits; `anyhow` and printing for people stay in `cli` and
//! `commands`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};

use crate::commands;
use crate::log::{KafkaTarget, LogOptions, ValueFormat};
use crate::project::{self, TablesRoot};

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
    /// The API key sent by the commands that talk to a running server: `generate --url`
    /// and `replay --url` (a key with the `write` scope), `replay` and `rejected` while a
    /// server holds the log (`read`). Prefer the environment variable: a flag's value shows
    /// in the process list.
    #[arg(long, global = true, env = "QUESTLOG_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole pipeline on embedded defaults: serve, send seeded traffic over HTTP,
    /// project, report; then keep serving until Ctrl-C (or stop with --exit).
    Quickstart(commands::serve::QuickstartArgs),
    /// Serve the HTTP API, appending to the log and projecting into the tables.
    Serve(commands::serve::ServeArgs),
    /// Make seeded, reproducible game traffic: into the log, or over HTTP with --url.
    Generate(commands::generate::GenerateArgs),
    /// Print log records as JSON lines, oldest first.
    Replay(commands::replay::ReplayArgs),
    /// List rejected events (reason, field, raw text, headers) as JSON lines.
    Rejected(commands::replay::RejectedArgs),
    /// Bring the five Parquet tables up to the end of the log.
    Project(commands::project::ProjectArgs),
    /// Compute the findings report from the tables with Polars.
    Report(commands::report::ReportArgs),
    /// Run SQL over the five tables.
    Sql(commands::report::SqlArgs),
    /// Print the Hive CREATE EXTERNAL TABLE statements for the tables.
    Ddl,
    /// Check the log (dense, decodable) and that the tables equal its projection.
    Verify,
    /// Store catalogues (the seed's SQLite): make one, check one, list the log's.
    #[command(subcommand)]
    Catalog(commands::catalog::CatalogCommand),
    /// Run a golden scenario (replay/*.toml) and compare its digests.
    Check(commands::check::CheckArgs),
    /// Event type schemas (JSON Schema, Iglu's self-describing form): check and record
    /// files, list and show the types.
    #[command(subcommand)]
    Schema(commands::schema::SchemaCommand),
}

/// Directives added to the default log filter: delta-rs warns (and errs) of every commit that found
/// its table moved, which consumer-group members meet in normal work (they read the table
/// again and commit on it; questlog logs what matters of it itself).
const QUIET_DIRECTIVES: &str = "deltalake_core::kernel::transaction=off";

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) | Command::Quickstart(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUESTLOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("questlog={default_level},warn,{QUIET_DIRECTIVES}")));
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

/// Sets the global options, then runs the command.
pub fn run(cli: Cli) -> Result<()> {
    let data_dir = cli.data_dir;
    let min_free_bytes =
        cli.min_free_mb.checked_mul(1024 * 1024).ok_or_else(|| anyhow!("--min-free-mb {} is too large", cli.min_free_mb))?;
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
    commands::set_globals(commands::Globals {
        log_options: LogOptions { min_free_bytes, ..LogOptions::default() },
        kafka: kafka_log,
        log_format: format,
        tables: root,
        vacuum_retention_ms: cli.vacuum_retention_ms,
        serves: matches!(cli.command, Command::Serve(_) | Command::Quickstart(_)),
        api_key: cli.api_key.filter(|k| !k.is_empty()),
    });
    let dd = data_dir.as_path();
    match cli.command {
        Command::Quickstart(args) => commands::serve::run_quickstart(args, dd),
        Command::Serve(args) => commands::serve::run(args, dd),
        Command::Generate(args) => commands::generate::run(args, dd),
        Command::Replay(args) => commands::replay::run(args, dd),
        Command::Rejected(args) => commands::replay::run_rejected(args, dd),
        Command::Project(args) => commands::project::run(args, dd),
        Command::Report(args) => commands::report::run(args, dd),
        Command::Sql(args) => commands::report::run_sql(args, dd),
        Command::Ddl => commands::report::run_ddl(dd),
        Command::Verify => commands::verify::run(dd),
        Command::Catalog(cmd) => commands::catalog::run(cmd, dd),
        Command::Check(args) => commands::check::run(args),
        Command::Schema(cmd) => commands::schema::run(cmd, dd),
    }
}
