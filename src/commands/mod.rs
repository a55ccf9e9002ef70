//! What the commands share: the global options (`--log`, `--tables`, `--min-free-mb`, …,
//! set once by [`set_globals`] before a command runs), opening the log (or saying who holds
//! it), the tables' root, the running-server check, reading a consistent snapshot of the
//! tables, the async runtime, the shutdown signal and the store catalogue's records. One
//! file per command (or family) beside it; `cli` only parses and dispatches.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::log::{EventLog, KafkaLog, KafkaTarget, LogError, LogOptions, SledLog, ValueFormat};
use crate::project::{Codec, Projector, TablesRoot};

pub mod catalog;
pub mod check;
pub mod generate;
pub mod project;
pub mod replay;
pub mod report;
pub mod schema;
pub mod serve;
pub mod verify;

/// The global options every command reads, as [`set_globals`] takes them.
pub struct Globals {
    pub log_options: LogOptions,
    pub kafka: Option<(KafkaTarget, Vec<(String, String)>)>,
    pub log_format: ValueFormat,
    pub tables: Option<TablesRoot>,
    pub vacuum_retention_ms: u64,
    /// Whether the command is a server (`serve`, `quickstart`): see [`SERVER_PURGE_DELAY_MS`].
    pub serves: bool,
    /// `--api-key` / `QUESTLOG_API_KEY`: what the commands that talk to a server send.
    pub api_key: Option<String>,
}

/// Sets the global options once, before a command runs.
pub fn set_globals(g: Globals) {
    let _ = LOG_OPTIONS.set(g.log_options);
    let _ = LOG_FORMAT.set(g.log_format);
    let _ = KAFKA.set(g.kafka);
    let _ = TABLES_OPTIONS.set((g.tables, g.vacuum_retention_ms));
    let _ = API_KEY.set(g.api_key);
    if g.serves {
        set_purge_delay(SERVER_PURGE_DELAY_MS);
    }
}

/// File in the data dir that names the running server, so other commands can reach it.
pub(crate) const SERVER_FILE: &str = "serve.json";

/// How often `replay --follow` looks for a server to follow.
pub(crate) const FOLLOW_POLL_MS: u64 = 250;
/// Attempts to read a consistent set of table files while a projector replaces them.
pub(crate) const SNAPSHOT_ATTEMPTS: u32 = 5;

/// `--log kafka://…` and its `--kafka-option`s, set once by [`run`]; `None` for the sled log.
pub(crate) static KAFKA: std::sync::OnceLock<Option<(KafkaTarget, Vec<(String, String)>)>> = std::sync::OnceLock::new();

/// `--api-key` / `QUESTLOG_API_KEY`, set once by [`set_globals`].
static API_KEY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// The API key the commands that talk to a running server send with each request
/// (`generate --url`, `replay --url`, and `replay`/`rejected` through the server that
/// holds the log); `None`: none given.
pub(crate) fn api_key() -> Option<&'static str> {
    API_KEY.get().and_then(Option::as_deref)
}

pub(crate) fn kafka() -> Option<&'static (KafkaTarget, Vec<(String, String)>)> {
    KAFKA.get().and_then(Option::as_ref)
}

/// Fails for commands that need the sled log when the log is a Kafka topic.
pub(crate) fn sled_only(what: &str) -> Result<()> {
    match kafka() {
        Some((target, _)) => bail!(
            "cannot {what} with --log {target}: this needs the sled log's single offset order; with a topic, use `project`, `verify`, `replay --partition`"
        ),
        None => Ok(()),
    }
}

/// `--log-format`, set once by [`run`].
pub(crate) static LOG_FORMAT: std::sync::OnceLock<ValueFormat> = std::sync::OnceLock::new();

pub(crate) fn log_format() -> ValueFormat {
    LOG_FORMAT.get().copied().unwrap_or(ValueFormat::Questlog)
}

/// `--tables` and `--vacuum-retention-ms`, set once by [`run`].
pub(crate) static TABLES_OPTIONS: std::sync::OnceLock<(Option<TablesRoot>, u64)> = std::sync::OnceLock::new();

/// Where the tables of `data_dir` are (`--tables`, else `DATA_DIR/delta`).
pub(crate) fn tables_root(data_dir: &Path) -> Result<TablesRoot> {
    match TABLES_OPTIONS.get().and_then(|(root, _)| root.clone()) {
        Some(root) => Ok(root),
        None => Ok(TablesRoot::Local(absolute(data_dir)?.join(crate::project::DELTA_DIR))),
    }
}

pub(crate) fn vacuum_retention_ms() -> u64 {
    TABLES_OPTIONS.get().map(|(_, ms)| *ms).unwrap_or(crate::project::DEFAULT_VACUUM_RETENTION_MS)
}

/// The projector of `data_dir`'s tables; `check` as in [`Projector::open_with_retention`].
pub(crate) fn open_projector(data_dir: &Path, codec: Codec, check: bool) -> Result<Projector> {
    Ok(Projector::open_with_retention(&tables_root(data_dir)?, data_dir, codec, vacuum_retention_ms(), check)?)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, the same in mimalloc
/// v2 and v3; libmimalloc-sys has no constant for it).
pub(crate) const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long (ms) a server's allocator keeps freed memory before giving it back to the OS.
/// mimalloc's own default, 1,000 ms, kept what each projector step and group commit freed
/// for a second while the next ones took more: under batched HTTP ingest of 10^7 events
/// `serve` peaked at 606–658 MiB with it, and at 389–399 MiB with 1–3 ms, ingesting as
/// fast (the projector, catching up meanwhile, ~25% slower: memory given back is zeroed by
/// the kernel when taken again; benches/HISTORY.md, item 32). Commands that run to an end
/// keep mimalloc's default: `project --rebuild` of 10^7 events peaked at 466–475 MiB with
/// it against 530–540 never giving memory back, in 15.5–16.0 s against 13.6–14.7.
pub(crate) const SERVER_PURGE_DELAY_MS: std::os::raw::c_long = 2;

/// Sets mimalloc's purge delay (see [`SERVER_PURGE_DELAY_MS`]).
fn set_purge_delay(ms: std::os::raw::c_long) {
    // SAFETY: `mi_option_set` stores a number in mimalloc's option table; mimalloc
    // documents it as callable at any time from any thread. With another global allocator
    // (the library's tests) it has no effect.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
}

/// Log options from the command line, set once in [`run`].
pub(crate) static LOG_OPTIONS: std::sync::OnceLock<LogOptions> = std::sync::OnceLock::new();

pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

pub(crate) fn log_options() -> LogOptions {
    LOG_OPTIONS.get().cloned().unwrap_or_default()
}

/// Opens the log, or explains who holds it.
pub(crate) fn open_log_for(data_dir: &Path, what: &str) -> Result<Arc<SledLog>> {
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
pub(crate) fn open_event_log(data_dir: &Path, what: &str) -> Result<Arc<dyn EventLog>> {
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
pub(crate) fn log_name(data_dir: &Path) -> String {
    match kafka() {
        Some((target, _)) => target.to_string(),
        None => data_dir.join("log").display().to_string(),
    }
}

/// The address of the server holding `data_dir`, if one says it runs.
pub(crate) fn running_server(data_dir: &Path) -> Option<SocketAddr> {
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

/// Runs `load` (which opens, and may read, the tables) on one consistent snapshot,
/// retrying if a projector's vacuum deleted a file between taking the snapshot and opening it.
/// `schemas_from` is the data dir whose log the tables are of.
pub(crate) fn read_snapshot<T>(
    root: &TablesRoot,
    data_dir: &Path,
    schemas_from: &Path,
    load: impl Fn(&crate::report::TableFiles) -> Result<T, crate::report::ReportError>,
) -> Result<(T, TablesAt)> {
    // The log may be held by a `serve`: its schema records are read from the projector's copy.
    let schemas = crate::log::read_schema_copies(schemas_from)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let snap = crate::project::snapshot(root, data_dir, &schemas)?;
        let files = crate::report::TableFiles::of(&snap);
        match load(&files) {
            Ok(frames) => return Ok((frames, TablesAt { offset: snap.offset, partitions: snap.partition_offsets })),
            Err(crate::report::ReportError::FileVanished(p)) if attempt < SNAPSHOT_ATTEMPTS => {
                tracing::debug!(path = %p.display(), "table file replaced while reading; taking a new snapshot");
            }
            Err(e) => return Err(e.into()),
        }
    }
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

/// Reads a catalogue file (the error names the file and what is wrong with it).
pub(crate) fn open_catalog(path: &Path) -> Result<crate::catalog::Catalog> {
    Ok(crate::catalog::Catalog::open(path)?)
}

/// The catalogue versions the log holds.
pub(crate) fn log_catalogs(log: &dyn EventLog) -> Result<Vec<crate::catalog::Version>> {
    Ok(crate::catalog::versions(log.catalogs()?)?)
}

/// Records `c` in the log (a no-op when it is the one in force) and refreshes the copies
/// under `DATA_DIR/catalog`. Returns the versions.
pub(crate) fn record_catalog(log: &dyn EventLog, data_dir: &Path, c: &crate::catalog::Catalog) -> Result<Vec<crate::catalog::Version>> {
    let hash = c.hash();
    log.record_catalog(hash.clone(), c.canonical())?.wait()?;
    let versions = log_catalogs(log)?;
    crate::catalog::write_copies(data_dir, &versions)?;
    let from = versions.last().map(|v| v.from_offset).unwrap_or(0);
    tracing::info!(catalog_hash = %hash, from_offset = from, stores = c.stores.len(), items = c.items.len(), "store catalogue in force");
    Ok(versions)
}

/// The catalogue versions in force for tables at `at`, from the copies under `DATA_DIR`.
pub(crate) fn catalogs_up_to(data_dir: &Path, at: &TablesAt) -> Result<Vec<crate::catalog::Version>> {
    let mut v = crate::catalog::read_copies(data_dir)?;
    v.retain(|v| v.in_force_at(at.offset, &at.partitions));
    Ok(v)
}

/// Where a snapshot of the tables reaches: the log offset (a topic's: the sum of its
/// partitions'), and for tables from a topic, the next offset of each partition.
#[derive(Clone, Debug, Default)]
pub(crate) struct TablesAt {
    pub offset: u64,
    pub partitions: Vec<u64>,
}
