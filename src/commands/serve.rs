//! `serve` and `quickstart`: the HTTP API with continuous projection and the live page's
//! findings, on a listener bound here; `quickstart` adds seeded traffic over HTTP and the
//! report. A running server's parts ([`Server`]) are started and stopped in one place.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::report::build_report;
use super::{
    absolute, kafka, log_format, log_name, log_options, open_catalog, open_event_log, open_projector, record_catalog, runtime,
    shutdown_signal, tables_root, vacuum_retention_ms, SERVER_FILE,
};
use crate::api::{self, AppState};
use crate::event;
use crate::generate::{self, World, WorldConfig};
use crate::log::EventLog;
use crate::metrics::Metrics;
use crate::project::{self, Codec, Continuous, ProjectionStats, TablesRoot};
use crate::report;

/// The arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Milliseconds between projection steps.
    #[arg(long, default_value_t = project::DEFAULT_PROJECT_INTERVAL_MS)]
    pub project_interval_ms: u64,
    /// Parquet compression: snappy, zstd or none.
    #[arg(long, default_value = "snappy")]
    pub compression: String,
    /// Most open HTTP connections; more are answered 429 (with Retry-After) and closed.
    #[arg(long, default_value_t = api::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's headers.
    #[arg(long, default_value_t = api::HEADER_READ_TIMEOUT_MS)]
    pub header_read_timeout_ms: u64,
    /// Milliseconds a client has to send a request's body.
    #[arg(long, default_value_t = api::BODY_READ_TIMEOUT_MS)]
    pub body_read_timeout_ms: u64,
    /// Milliseconds a client may take nothing of an answer before its connection is
    /// closed (a slow reader that makes progress is never cut off).
    #[arg(long, default_value_t = api::WRITE_STALL_TIMEOUT_MS)]
    pub write_stall_timeout_ms: u64,
    /// Require API keys: a TOML file of [[key]] tables (app, key, and optionally
    /// scopes, events_per_second, burst). Without it, anyone who can reach the server
    /// may send and read events, so it listens on loopback only unless --allow-keyless.
    #[arg(long)]
    pub api_keys: Option<PathBuf>,
    /// Serve without API keys on an address other than loopback: anyone who can reach
    /// it may append and read every event.
    #[arg(long)]
    pub allow_keyless: bool,
    /// Without API keys, a host name requests may name in `Host` besides IP addresses
    /// and localhost (a guard against DNS rebinding); repeat for several.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// Check purchases against this store catalogue (SQLite; `questlog catalog
    /// schema`), and fill in seed-style `GET /buy_asset?store_id=…&inventory_id=…`
    /// from it. Recorded in the log before the server takes events.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Register the event type schemas of this directory's `*.json` files (in name order)
    /// before the server takes events, as `questlog schema add` does: all or none, and a
    /// schema the log holds already is left as it is.
    #[arg(long, value_name = "DIR")]
    pub schemas: Option<PathBuf>,
    /// Make event types from events: an event of an unknown name registers a schema typed
    /// from its values, a new property of such a type is an ADDITION, and a value of
    /// another type than the first is rejected (`wrong_type`). Off: unknown names are
    /// rejected (`unknown_event_type`). The sled log only, for now.
    #[arg(long)]
    pub infer_schemas: bool,
    /// On a Kafka log: the consumer group this node's projector is a member of (default:
    /// one named after the tables, so nodes that share tables share the partitions).
    #[arg(long, env = "QUESTLOG_GROUP")]
    pub group: Option<String>,
    /// On a Kafka log: take events only, without projecting (an API-only node).
    #[arg(long)]
    pub api_only: bool,
}

/// The arguments of `quickstart`.
#[derive(Args, Debug)]
pub struct QuickstartArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Stop after the report instead of serving.
    #[arg(long)]
    pub exit: bool,
}

/// `serve`: checks the options (a catalogue or keys file is checked before anything opens),
/// then serves until SIGINT or SIGTERM.
pub fn run(args: ServeArgs, data_dir: &Path) -> Result<()> {
    let ServeArgs {
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
        schemas,
        infer_schemas,
        group,
        api_only,
    } = args;
    if kafka().is_none() && (group.is_some() || api_only) {
        bail!("--group and --api-only are for a Kafka log (--log kafka://…); on the sled log `serve` is the one projector");
    }
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
    let limits =
        api::Limits { max_connections, header_read_timeout_ms, body_read_timeout_ms, write_stall_timeout_ms, ..api::Limits::default() };
    let access = Access { keys, allow_keyless, allowed_hosts };
    let projection = if api_only { Projection::None } else { Projection::Group(group) };
    runtime()?.block_on(serve(
        data_dir,
        &listen,
        project_interval_ms,
        codec,
        limits,
        access,
        catalog,
        Types { dir: schemas, infer: infer_schemas },
        projection,
        shutdown_signal(),
    ))
}

/// Whether a server on a Kafka log projects, and in which consumer group (`None`: the
/// default, [`default_group`]).
enum Projection {
    None,
    Group(Option<String>),
}

/// The consumer group of `serve`'s projectors on a topic when none is given: named after
/// the tables, so that nodes writing the same tables share the partitions and nodes with
/// tables of their own each project the whole topic. A local directory is this machine's
/// (its host name is part of the name); an `s3://` place is everyone's. Nodes on several
/// machines that share a directory (a network filesystem) give `--group`.
fn default_group(root: &TablesRoot) -> String {
    use sha2::Digest as _;
    let place = match root {
        TablesRoot::Local(dir) => {
            let mut name = [0u8; 256];
            // SAFETY: the buffer is as long as said; gethostname NUL-terminates what fits.
            let host = if unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0 {
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                String::from_utf8_lossy(&name[..end]).into_owned()
            } else {
                String::new()
            };
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            format!("{host}:{}", dir.display())
        }
        TablesRoot::S3 { .. } => root.to_string(),
    };
    let hash = sha2::Sha256::digest(place.as_bytes());
    format!("questlog-{}", hash.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>())
}

/// `quickstart`: the whole pipeline on the embedded defaults.
pub fn run_quickstart(args: QuickstartArgs, data_dir: &Path) -> Result<()> {
    let QuickstartArgs { listen, seed, events, exit } = args;
    if kafka().is_some() {
        bail!("quickstart runs the embedded default (the sled log); use `serve --log kafka://…` with a broker");
    }
    runtime()?.block_on(quickstart(data_dir, &listen, seed, events, exit))
}

/// How long `quickstart` waits for the tables to catch up with the log.
const CATCH_UP_TIMEOUT_MS: u64 = 120_000;

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
            partitions: self
                .partitions()
                .into_iter()
                .map(|p| crate::metrics::PartitionFreshness {
                    partition: p.partition,
                    tables_offset: p.tables_offset,
                    topic_end: p.topic_end,
                    held_here: p.held_here,
                })
                .collect(),
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
    /// The registered event types of the log's schemas at start.
    types: crate::event::Registry,
    /// The report's findings for the live page, and the thread that makes them.
    findings: Option<(Arc<LiveFindings>, std::thread::JoinHandle<()>)>,
    /// On a Kafka log: what this node projects, and as a member of which group.
    projecting: Option<String>,
    /// `serve --infer-schemas`.
    infer_schemas: bool,
}

/// `serve`'s event type options: schemas to register at start, and whether to infer types
/// from events.
struct Types {
    dir: Option<PathBuf>,
    infer: bool,
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

/// The findings thread's nice value: the lowest priority. A report is a burst of work on
/// every core (Polars' pool, which this thread starts and so passes its priority to); at
/// the API's priority it showed as 100 ms+ answers to appends while a page was open.
const FINDINGS_NICE: libc::c_int = 19;

/// Makes the findings again whenever the published tables moved, until told to stop.
fn findings_loop(f: Arc<LiveFindings>, projection: Arc<ProjectionStats>, root: TablesRoot, data_dir: PathBuf) {
    use std::sync::atomic::Ordering::Relaxed;
    project::set_thread_nice(FINDINGS_NICE);
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

/// Events of one step of `serve`'s projector, at most (`project`'s own default is
/// [`project::MAX_STEP_EVENTS`], 500,000). A step holds its events' rows in memory, and
/// after a merge held the projector up under heavy load, catch-up steps of 500,000 events
/// raised the server's memory by ~100 MiB for as long as the lag lasted (soak at 0.7 of
/// the maximum load: median RSS 390 → 500 MiB while the lag was ~900,000 events). A step's
/// fixed cost (five commits, ~50 ms) is small beside 100,000 events' rows.
const SERVE_STEP_EVENTS: u64 = 100_000;

async fn start_server(
    data_dir: &Path,
    listen: &str,
    interval_ms: u64,
    codec: Codec,
    fallback_port: bool,
    projection: Projection,
) -> Result<(Server, tokio::net::TcpListener)> {
    let log = open_event_log(data_dir, "serve")?;
    let types = super::schema::registry_of(log.as_ref())?;
    // The dedup window is refilled now, in the background, not on the first append (which
    // would wait for it); /healthz says `starting` until it is done.
    log.prepare_for_appends();
    let mut projecting = None;
    let projector = match kafka() {
        Some((target, _)) => match projection {
            Projection::None => None,
            Projection::Group(group) => {
                let root = tables_root(data_dir)?;
                let group = group.unwrap_or_else(|| default_group(&root));
                let layout = project::Layout::Topic { topic: target.topic.clone(), partitions: log.partitions() };
                project::run_delta_in_background();
                let p = project::Projector::open_source(&root, data_dir, codec, vacuum_retention_ms(), true, layout, log_format())?
                    .with_step_events(SERVE_STEP_EVENTS)
                    .with_min_free_bytes(log_options().min_free_bytes)
                    .with_group(Some(group.clone()));
                projecting = Some(format!("projecting {target} into {root} as a member of consumer group {group}"));
                Some(p)
            }
        },
        None => Some({
            project::run_delta_in_background();
            open_projector(data_dir, codec, true)?.with_step_events(SERVE_STEP_EVENTS).with_min_free_bytes(log_options().min_free_bytes)
        }),
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
            types,
            findings,
            projecting,
            infer_schemas: false,
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
                .with_types(self.types.clone())
                .with_findings(findings)
                .with_allowed_hosts(self.allowed_hosts.clone())
                .with_infer_schemas(self.infer_schemas),
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
    types: Types,
    projection: Projection,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let Types { dir: schemas, infer: infer_schemas } = types;
    if access.keys.is_none() && !access.allow_keyless {
        keyless_on_loopback(listen, "give --api-keys FILE (see `questlog serve --help`), or add --allow-keyless to serve it open").await?;
    }
    let (mut server, listener) = start_server(data_dir, listen, interval_ms, codec, false, projection).await?;
    server.limits = limits;
    server.infer_schemas = infer_schemas;
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
    let mut schema_lines = Vec::new();
    if let Some(dir) = schemas {
        let log = server.log.clone();
        let (types, lines) = tokio::task::spawn_blocking(move || -> Result<(crate::event::Registry, Vec<String>)> {
            let lines = super::schema::record_dir(log.as_ref(), &dir)?;
            Ok((super::schema::registry_of(log.as_ref())?, lines))
        })
        .await??;
        server.types = types;
        schema_lines = lines;
    }
    println!("questlog serving on http://{} (data in {}; log {})", server.addr, data_dir.display(), log_name(data_dir));
    println!("live page: http://{}/{}", server.addr, if server.keys.is_some() { "?key=<a key with the read scope>" } else { "" });
    if let Some((target, _)) = kafka() {
        println!("events go to {target}; rejected ones stay in {}", data_dir.join(crate::log::kafka::REJECTED_DIR).display());
    }
    if let Some(note) = &server.projecting {
        println!("{note}");
    }
    if let Some(note) = catalog_note {
        println!("{note}");
    }
    for line in schema_lines {
        println!("{line}");
    }
    if server.infer_schemas {
        println!("--infer-schemas: an event of an unknown name registers its type (vendor {})", crate::schema::infer::INFERRED_VENDOR);
    }
    std::io::stdout().flush().ok();
    tracing::info!(addr = %server.addr, log_end_offset = server.log.durable_end(), "serving");
    let state = server.state();
    if kafka().is_some() {
        // Other nodes register schemas too: this node takes their events once it has read
        // their records.
        tokio::spawn(api::follow_schemas(state.clone()));
    }
    api::run(listener, state, shutdown).await.context("serving HTTP")?;
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
    let (server, listener) = start_server(data_dir, listen, 500, Codec::Snappy, true, Projection::None).await?;
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
    let settings = generate::LoadSettings { url: format!("http://{addr}"), rate: None, concurrency: 4, batch: 500, api_key: None };
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

/// `serve --catalog`: records the catalogue, then builds the stock of the log's purchases
/// so far (read once, from the first catalogue's offset; on a topic, from its offset in
/// each partition, the purchases then put in [`crate::catalog::kafka_order`]).
fn serve_catalog(log: &dyn EventLog, data_dir: &Path, c: crate::catalog::Catalog) -> Result<(Arc<api::ApiCatalog>, String)> {
    use crate::catalog::LoggedPurchase;
    let started = Instant::now();
    let versions = record_catalog(log, data_dir, &c)?;
    let logged = |partition: u32, offset: u64, r: &crate::event::Record| {
        crate::catalog::purchase_of(r).map(|(time_us, store_id, inventory_id, total_cost)| LoggedPurchase {
            partition,
            offset,
            time_us,
            store_id,
            inventory_id,
            total_cost,
        })
    };
    let (book, events) = if log.is_local() {
        let from = versions.first().map(|v| v.from_offset).unwrap_or(0);
        let end = log.durable_end();
        let mut failed = None;
        let purchases =
            log.read(from, end)?.map_while(|r| r.map_err(|e| failed = Some(e)).ok()).filter_map(|(offset, r)| logged(0, offset, &r));
        let book = crate::catalog::stock_from(&versions, purchases);
        if let Some(e) = failed {
            return Err(anyhow!(e).context("reading the log's purchases for the stock book"));
        }
        (book, end - from)
    } else {
        // Every partition whole: in the one order of a topic's purchases (by time), one
        // before a version's `from` may come after one past it, and the `stock` table
        // counts it; and the records a projection takes (a re-sent copy once), as the
        // tables do. Up to each partition's high watermark (a broker whose watermark lags
        // its records, as Tansu's can, leaves the last few to the purchases stored next).
        let mut purchases = Vec::new();
        let mut events = 0;
        for p in 0..log.partitions() {
            events += crate::project::for_each_taken(log, p, super::log_format(), |offset, r| purchases.extend(logged(p, offset, r)))
                .with_context(|| format!("reading partition {p}'s purchases for the stock book"))?;
        }
        crate::catalog::kafka_order(&mut purchases);
        (crate::catalog::stock_from(&versions, purchases), events)
    };
    let from = match versions.last() {
        Some(v) if !v.from_partitions.is_empty() => format!("the partitions' offsets {:?}", v.from_partitions),
        Some(v) => format!("log offset {}", v.from_offset),
        None => "log offset 0".into(),
    };
    let note = format!(
        "store catalogue {} ({} stores, {} items) in force from {from}; stock from {events} logged events read in {:.1} s",
        c.hash(),
        c.stores.len(),
        c.items.len(),
        started.elapsed().as_secs_f64()
    );
    Ok((Arc::new(api::ApiCatalog::new(c, book)), note))
}
