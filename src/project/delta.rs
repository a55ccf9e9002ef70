//! The five tables as Delta Lake tables under one root — a local directory or
//! `s3://bucket/prefix` — committed through delta-rs (`deltalake-core`, no DataFusion).
//!
//! The Delta log of each table is the one record of what it holds. questlog writes the
//! Parquet files itself (byte-identical on every rebuild) and commits them with `add`,
//! `remove` and `txn` actions:
//! - every projection step is one commit per table carrying `txn(app = APP_ID, version =
//!   the log offset the table now reaches)`; a projector that opens the tables reads those
//!   versions and resumes there;
//! - a commit must land at exactly the version after the one the projector read
//!   (no retries): if another writer moved the table, the commit is refused and the
//!   projector reloads and says so, so no event lands twice;
//! - compaction is one commit of `remove`s and `add`s (`dataChange = false`) with the same
//!   `txn`; removed files are deleted by [`DeltaTables::vacuum`] once they have been
//!   removed for the retention period;
//! - on S3 a commit is a conditional put (`If-None-Match: *`) of the next log entry, so two
//!   writers cannot both win a version, with no lock service.
//!
//! File names are `part-<first>-<last>-<level>-<hash>.parquet`: the first and last log
//! offset of the rows, the compaction level, and 16 hex digits of the SHA-256 of the
//! bytes, so a name never stands for two different files (a rebuild that writes the same
//! rows in another layout gets another name).
//!
//! One file: everything here is one job, the five tables as Delta tables through delta-rs
//! (opening and creating them, the commit protocol and its conflict checks, vacuum, the S3
//! staging and cache, leftovers); its halves lean on each other's invariants, which a
//! split would scatter. About a fifth of it is tests.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TableReference, TransactionError};
use deltalake_core::kernel::{Action, Add, Remove, StructType, Transaction};
use deltalake_core::logstore::{default_logstore, LogStoreRef, ObjectStoreRef, StorageConfig};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableError, TableProperty};
use futures_util::TryStreamExt as _;
use object_store::path::Path as StorePath;
use object_store::ObjectStoreExt as _;
use url::Url;

use super::{failpoint, io_err, FileEntry, ProjectError, TableDef, TableSet};

/// The Delta application-transaction id under which the projector records the log offset
/// each table reaches (`questlog/<log>/<partition>`; the sled log is one partition).
pub const APP_ID: &str = "questlog/log/0";

/// A checkpoint every this many commits keeps the Delta log short to read: at one step a
/// second, a reader replays at most 20 JSON commits after the last checkpoint.
pub const CHECKPOINT_INTERVAL_COMMITS: u64 = 20;

/// Log entries older than this (and before a checkpoint) are deleted, every
/// [`LOG_CLEANUP_EVERY_COMMITS`] commits. One hour of history for time travel by version;
/// at a step a second that is at most ~3,600 small files per table.
pub const LOG_RETENTION: &str = "interval 1 hours";
pub const LOG_CLEANUP_EVERY_COMMITS: u64 = 100;

/// Default time a file removed by compaction or a rebuild stays before it is deleted, so
/// readers still holding an older snapshot can read it: 1 hour (Delta's own default is a
/// week, which on a busy embedded store keeps every compaction's inputs for days).
pub const DEFAULT_VACUUM_RETENTION_MS: u64 = 60 * 60 * 1000;

/// Files in a table directory that no commit names are deleted only when at least this
/// old (and older than the vacuum retention), so a concurrent projector's finished,
/// not yet committed files survive even a long rebuild.
const LEFTOVER_MIN_AGE_MS: u64 = 60 * 60 * 1000;

/// The longest `--vacuum-retention-ms` (ten years): beyond, the cutoff arithmetic in
/// milliseconds since 1970 would overflow.
pub const MAX_VACUUM_RETENTION_MS: u64 = 10 * 365 * 24 * 60 * 60 * 1000;

/// At most one vacuum pass per table in this long: it lists the tombstones, which costs
/// one read of the log.
pub const VACUUM_INTERVAL_MS: u64 = 60 * 1000;

/// A reader's snapshot walks back at most this many versions of a table to find the one
/// at the offset all five tables share (the tables are committed one after another, so
/// normally it is 0 or 1 versions).
pub const MAX_SNAPSHOT_WALKBACK_VERSIONS: u64 = 64;

/// Where the tables are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TablesRoot {
    /// A local directory (absolute); each table is `<dir>/<location>`.
    Local(PathBuf),
    /// `s3://bucket/prefix`; each table is `s3://bucket/prefix/<location>`.
    S3 { bucket: String, prefix: String },
}

impl TablesRoot {
    /// Parses `--tables`: `s3://bucket/prefix`, `file:///abs/dir`, or a path.
    pub fn parse(s: &str) -> Result<TablesRoot, ProjectError> {
        let bad = |reason: &str| ProjectError::Location { location: s.to_string(), reason: reason.to_string() };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket: write s3://BUCKET/PREFIX"));
            }
            return Ok(TablesRoot::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() });
        }
        if s.contains("://") {
            let url = Url::parse(s).map_err(|e| bad(&e.to_string()))?;
            if url.scheme() != "file" {
                return Err(bad("the tables can be a local path, file:///path or s3://bucket/prefix"));
            }
            let path = url.to_file_path().map_err(|()| bad("not a local file URL"))?;
            return Ok(TablesRoot::Local(path));
        }
        let path = std::path::absolute(s).map_err(|e| bad(&e.to_string()))?;
        Ok(TablesRoot::Local(path))
    }

    pub fn is_local(&self) -> bool {
        matches!(self, TablesRoot::Local(_))
    }

    /// The URL of one table.
    pub fn table_url(&self, def: &TableDef) -> Result<Url, ProjectError> {
        let url = match self {
            TablesRoot::Local(dir) => Url::from_directory_path(dir.join(&def.location)).ok(),
            TablesRoot::S3 { bucket, prefix } => {
                let key = if prefix.is_empty() { def.location.to_string() } else { format!("{prefix}/{}", def.location) };
                Url::parse(&format!("s3://{bucket}/{key}/")).ok()
            }
        };
        url.ok_or_else(|| ProjectError::Location { location: self.to_string(), reason: "cannot make a URL of it".into() })
    }

    /// The store at the root of the URLs (a bucket, or the local file system).
    fn root_store(&self) -> Result<ObjectStoreRef, ProjectError> {
        match self {
            TablesRoot::Local(_) => Ok(Arc::new(object_store::local::LocalFileSystem::new())),
            TablesRoot::S3 { bucket, .. } => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(object_store::RetryConfig {
                        max_retries: S3_MAX_RETRIES,
                        retry_timeout: Duration::from_millis(S3_RETRY_TIMEOUT_MS),
                        ..Default::default()
                    })
                    .build()
                    .map_err(|e| ProjectError::Location { location: self.to_string(), reason: e.to_string() })?;
                Ok(Arc::new(store))
            }
        }
    }
}

/// Retries of one S3 request (5xx, 429, time-outs), and the time they may take in all:
/// a store that is down fails a step within a minute, which `serve` reports in `/healthz`
/// and retries with backoff.
const S3_MAX_RETRIES: usize = 4;
const S3_RETRY_TIMEOUT_MS: u64 = 60_000;

impl std::fmt::Display for TablesRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TablesRoot::Local(dir) => write!(f, "{}", dir.display()),
            TablesRoot::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            TablesRoot::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Where the rows of a set of tables come from, which decides their columns and the
/// `txn` actions of their commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The sled log: one partition with dense offsets; `log_offset` locates a row, and
    /// the `txn` of [`APP_ID`] is the offset the table reaches.
    Local,
    /// A Kafka topic of `partitions` partitions: `log_partition` and `log_offset` locate
    /// a row. Each commit carries one `txn` per partition ([`partition_app_id`]) whose
    /// version is the partition's next offset, and the `txn` of [`APP_ID`] carries their
    /// sum: the table's position in the topic, which orders its versions.
    Topic { topic: String, partitions: u32 },
}

impl Layout {
    pub fn partitioned(&self) -> bool {
        matches!(self, Layout::Topic { .. })
    }
}

/// The application id of partition `p` of `topic` in the `txn` actions of tables
/// projected from a Kafka topic.
pub fn partition_app_id(topic: &str, p: u32) -> String {
    format!("questlog/kafka/{topic}/{p}")
}

/// The Delta metadata configuration keys naming the topic (and its partition count) a
/// table is projected from: written with a commit of a table from a topic.
pub const TOPIC_CONFIG_KEY: &str = "questlog.topic";
pub const PARTITIONS_CONFIG_KEY: &str = "questlog.partitions";

/// A consumer-group member's part in a commit to a table from a topic (`project --follow
/// --group`): several members commit to the same tables, each for the partitions it holds.
/// Such a commit names only those partitions in its `txn` actions, and lands only while
/// the table still holds them where the member read them: a commit that finds the table
/// moved (another member committed) reads it again and tries again while that holds —
/// a compare-and-set per partition, so an offset of a partition is committed once, by
/// whoever holds it. A compaction's claim names no partition: it lands only while every
/// file it removes is still in the table (two members compacting the same files: the
/// second finds them gone and drops its merge; delta-rs itself would let both land and
/// every row of those files would count twice).
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// The partitions the member holds (the commit's `txn`s name these only).
    pub partitions: &'a [u32],
    /// Per partition of `partitions`: its offset in the table when the member read it.
    pub expected: &'a [u64],
}

/// How many times a claimed commit reads a moved table again and retries: each retry
/// means another member's commit landed in between, so with a few members a commit
/// lands within a few; past this the step fails and the member reads its partitions'
/// offsets again.
pub const MAX_CLAIM_ATTEMPTS: u32 = 16;

/// The name of a table file (see the module docs).
pub fn file_name(first: u64, last: u64, level: u8, hash_hex16: &str) -> String {
    format!("part-{first:012}-{last:012}-{level}-{hash_hex16}.parquet")
}

/// Reads first offset, last offset and level back from a name of [`file_name`]'s form.
fn parse_file_name(name: &str) -> Option<(u64, u64, u8)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut parts = stem.split('-');
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    let level = parts.next()?.parse().ok()?;
    let hash = parts.next()?;
    (hash.len() == 16 && parts.next().is_none()).then_some((first, last, level))
}

/// What one commit does to a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitKind {
    /// A projection step: new files (`dataChange = true`).
    Append,
    /// A compaction: the same rows in fewer files (`dataChange = false`).
    Compact,
    /// A rebuild: the table's files replaced (`dataChange = true`).
    Replace,
}

/// Runs async delta-rs calls from synchronous code, on a runtime of its own. From inside
/// another runtime (the server's), the call runs on a fresh thread, since a runtime
/// cannot block inside another.
pub(crate) struct Blocking {
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Blocking {
    /// A runtime dropped inside another (an error while the server starts) must not block.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Blocking {
    /// A multi-thread runtime of one worker: on a current-thread runtime delta-rs gives each
    /// Delta kernel engine a background executor of its own (`get_engine`), whose runtime
    /// dies with the engine, and the S3 client's pooled keep-alive connections opened there
    /// died with it: a later commit then failed with "dispatch task is gone: runtime dropped
    /// the dispatch task" (seen behind a keep-alive proxy, tests/delta `retry`; real S3
    /// keeps connections alive too). On this runtime every request runs on it, and it lives
    /// as long as the tables.
    pub(crate) fn new() -> Result<Blocking, ProjectError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("questlog-delta-io")
            .on_thread_start(super::continuous::delta_thread_start)
            .enable_all()
            .build()
            .map_err(io_err("starting the runtime for Delta commits"))?;
        Ok(Blocking { rt: Some(rt) })
    }

    pub(crate) fn run<F: std::future::Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        let rt = self.rt.as_ref().expect("runtime present until drop");
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| s.spawn(|| rt.block_on(fut)).join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        } else {
            rt.block_on(fut)
        }
    }
}

fn delta_err(table: &TableDef, url: &Url) -> impl FnOnce(DeltaTableError) -> ProjectError {
    let (table, url) = (table.name.clone(), url.to_string());
    move |source| ProjectError::Delta { table, url, source: Box::new(source) }
}

/// One Delta table as the projector sees it.
struct Table {
    /// The table as its Delta schema has it at the version read (a registered type's may
    /// lack columns of a later ADDITION until [`DeltaTables::ensure`] widens it: its next
    /// commit then carries the wider schema).
    def: Arc<TableDef>,
    url: Url,
    log_store: LogStoreRef,
    table: DeltaTable,
    /// The log offset the table reaches (its `txn` version for [`APP_ID`]; 0 if none).
    offset: u64,
    /// Tables from a topic: each partition's next offset ([`partition_app_id`]).
    partition_offsets: Vec<u64>,
    /// Whether the table has the `log_partition` column (it was projected from a topic).
    partitioned: bool,
    files: Vec<FileEntry>,
    last_vacuum: Option<std::time::Instant>,
}

/// The Delta tables under one [`TablesRoot`], in [`TableSet`] order.
pub struct DeltaTables {
    root: TablesRoot,
    blocking: Blocking,
    tables: Vec<Table>,
    /// Local directory for files before they are committed (S3), or `None` to write them
    /// into the table directories themselves (local tables).
    staging: Option<PathBuf>,
    /// Local copies of S3 table files, by name (names are content hashes: never stale).
    cache: Option<PathBuf>,
    vacuum_retention_ms: u64,
    /// What the tables are projected from; `None` for a reader, which takes either.
    layout: Option<Layout>,
}

fn log_store_for(root: &ObjectStoreRef, url: &Url) -> Result<LogStoreRef, DeltaTableError> {
    let cfg = StorageConfig::default();
    let prefixed: ObjectStoreRef = cfg.decorate_store(root.clone(), url)?.into();
    Ok(default_logstore(prefixed, root.clone(), url, &cfg))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The Delta schema of a table, from its Arrow schema.
fn delta_schema(def: &TableDef, partitioned: bool) -> Result<StructType, ProjectError> {
    let arrow = def.arrow_schema(partitioned);
    arrow.as_ref().try_into_kernel().map_err(|e| ProjectError::Schema { table: def.name.clone(), reason: e.to_string() })
}

/// The table of `def` whose columns are `got` (a registered type's table as it was before
/// some of its ADDITIONs), if any; `None` when `got` is not one of its forms.
fn as_stored(def: &Arc<TableDef>, got: &[String], partitioned: bool) -> Option<Arc<TableDef>> {
    let names = |d: &TableDef| -> Vec<String> { d.arrow_schema(partitioned).fields().iter().map(|f| f.name().to_string()).collect() };
    if names(def) == got {
        return Some(def.clone());
    }
    let r = def.registered()?;
    (0..r.columns.len()).rev().map(|k| def.with_properties(k)).find(|d| names(d) == got).map(Arc::new)
}

impl DeltaTables {
    /// Opens the tables of `set` under `root`, creating the seed's five if missing (a
    /// registered type's is created by [`DeltaTables::ensure`], at the step that reaches
    /// it). `work_dir` holds local staging and cache directories when the tables are on S3.
    /// With `check`, each file of local tables must have the size the Delta log recorded
    /// and Parquet's magic bytes at both ends (a cheap start-up check; `verify` compares
    /// every row with the log).
    pub fn open(
        root: &TablesRoot,
        work_dir: &Path,
        vacuum_retention_ms: u64,
        check: bool,
        layout: &Layout,
        set: &TableSet,
    ) -> Result<DeltaTables, ProjectError> {
        let me = Self::open_with(root, work_dir, vacuum_retention_ms, Some(layout.clone()), set)?;
        if check {
            if let TablesRoot::Local(dir) = root {
                for t in &me.tables {
                    for f in &t.files {
                        check_file(&dir.join(&t.def.location).join(&f.name), f)?;
                    }
                }
            }
        }
        Ok(me)
    }

    /// Opens the tables of `set` for reading only: missing tables are empty, nothing is
    /// created. Tables of either layout are read; `layout` (when given) also reads their
    /// partitions' offsets.
    pub fn open_read_only(
        root: &TablesRoot,
        work_dir: &Path,
        layout: Option<&Layout>,
        set: &TableSet,
    ) -> Result<DeltaTables, ProjectError> {
        let mut me = Self::open_with(root, work_dir, DEFAULT_VACUUM_RETENTION_MS, None, set)?;
        if let Some(layout) = layout {
            me.layout = Some(layout.clone());
            me.reload()?;
        }
        Ok(me)
    }

    fn open_with(
        root: &TablesRoot,
        work_dir: &Path,
        vacuum_retention_ms: u64,
        layout: Option<Layout>,
        set: &TableSet,
    ) -> Result<DeltaTables, ProjectError> {
        let create = layout.is_some();
        let store = root.root_store()?;
        let blocking = Blocking::new()?;
        let (staging, cache) = match root {
            TablesRoot::Local(dir) => {
                if create {
                    super::create_dir_synced(dir)?;
                }
                (None, None)
            }
            TablesRoot::S3 { .. } => {
                let staging = work_dir.join(".tables-staging");
                let cache = work_dir.join(".tables-cache");
                if create {
                    let _ = fs::remove_dir_all(&staging);
                }
                (Some(staging), Some(cache))
            }
        };
        let mut me = DeltaTables { root: root.clone(), blocking, tables: Vec::new(), staging, cache, vacuum_retention_ms, layout };
        for def in set.iter() {
            // The seed's tables are made at once; a registered type's once a step reaches it.
            me.add_table(def.clone(), &store, create && def.builtin().is_some())?;
        }
        if create {
            me.remove_leftovers();
        }
        Ok(me)
    }

    /// Opens table `def` after those open (creating it with `create`).
    fn add_table(&mut self, def: Arc<TableDef>, store: &ObjectStoreRef, create: bool) -> Result<(), ProjectError> {
        if let (Some(staging), Some(cache)) = (&self.staging, &self.cache) {
            for d in [staging.join(&def.location), cache.join(&def.location)] {
                fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
            }
        }
        let url = self.root.table_url(&def)?;
        let log_store = log_store_for(store, &url).map_err(delta_err(&def, &url))?;
        let mut table = Table {
            offset: def.from_offset,
            def,
            url: url.clone(),
            log_store: log_store.clone(),
            table: DeltaTable::new(log_store),
            partition_offsets: Vec::new(),
            partitioned: false,
            files: Vec::new(),
            last_vacuum: None,
        };
        self.blocking.run(load_or_create(&mut table, self.layout.as_ref(), create, None))?;
        self.tables.push(table);
        Ok(())
    }

    /// Opens the tables of `set` not open yet (`set` extends those open: see `tables`'
    /// invariants). With `create` (`set` is a projection step's, in force at the offset it
    /// reaches), also creates those of its tables that are missing and widens those an
    /// ADDITION gave columns: the next commit of each carries its wider schema, a Delta
    /// metadata change.
    pub fn ensure(&mut self, set: &TableSet, create: bool) -> Result<(), ProjectError> {
        if !create && set.len() <= self.tables.len() {
            return Ok(());
        }
        let store = self.root.root_store()?;
        // On a topic, a registered type's table is made holding every partition up to where
        // the tables made before it are (the smallest of them): none of its events can be
        // below — they are read only after its schema record, and the step that first reads
        // one makes the table before it writes — and a member that takes a partition starts
        // at the smallest of all tables, so a crash between two tables' commits is read again.
        let initial: Option<Vec<u64>> = match &self.layout {
            Some(Layout::Topic { partitions, .. }) if self.tables.iter().any(|t| t.table.version().is_some()) => Some(
                (0..*partitions as usize)
                    .map(|p| {
                        self.tables
                            .iter()
                            .filter(|t| t.table.version().is_some())
                            .filter_map(|t| t.partition_offsets.get(p).copied())
                            .min()
                            .unwrap_or(0)
                    })
                    .collect(),
            ),
            _ => None,
        };
        for (i, def) in set.iter().enumerate() {
            if i >= self.tables.len() {
                self.add_table(def.clone(), &store, false)?;
            }
            if !create {
                continue;
            }
            let t = &mut self.tables[i];
            if t.def != *def {
                let (old, new) = (t.def.property_columns(), def.property_columns());
                let common = old.len().min(new.len());
                if t.def.name != def.name || new[..common] != old[..common] {
                    return Err(ProjectError::Schema {
                        table: t.def.name.clone(),
                        reason: format!(
                            "the log's schemas give it other columns ({}) than the table has ({}): the log is not the one these tables were projected from; rebuild them (project --rebuild)",
                            new.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                            old.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
                // Wider: its next commit carries the columns. Narrower: the table is ahead
                // of this step (its columns came with a commit past the ADDITION), which
                // commits nothing to it.
                if new.len() > old.len() {
                    t.def = def.clone();
                }
            }
            if t.table.version().is_none() {
                // Made as its model's first version has it; the commit of the step's rows
                // adds what ADDITIONs up to the step's end add, so a table never shows a
                // column at an offset before its ADDITION, even after a crash in between.
                let layout = self.layout.clone();
                // The step's def: the one open may be wider (the log's newest, from
                // `Projector::follow`), with ADDITIONs past the step's end.
                let wanted = def.clone();
                t.def = Arc::new(wanted.with_properties(wanted.registered().map_or(usize::MAX, |r| r.first_columns)));
                self.blocking.run(load_or_create(t, layout.as_ref(), true, initial.clone()))?;
                if t.table.version().is_some() && wanted.property_columns().len() > t.def.property_columns().len() {
                    t.def = wanted;
                }
            }
        }
        Ok(())
    }

    /// Table `i` as its Delta schema has it (or will, once its next commit lands).
    pub fn def(&self, i: usize) -> &Arc<TableDef> {
        &self.tables[i].def
    }

    /// The tables open, in [`TableSet`] order, each as its Delta schema has it.
    pub fn defs(&self) -> Vec<Arc<TableDef>> {
        self.tables.iter().map(|t| t.def.clone()).collect()
    }

    pub fn root(&self) -> &TablesRoot {
        &self.root
    }

    /// The log offset each table reaches, in [`TableSet`] order (a table not written yet:
    /// the offset it begins at).
    pub fn offsets(&self) -> Vec<u64> {
        self.tables.iter().map(|t| t.offset).collect()
    }

    /// The committed files of table `i`, in offset order.
    pub fn files(&self, i: usize) -> &[FileEntry] {
        &self.tables[i].files
    }

    /// Tables from a topic: the next offset of each partition table `i` reaches (empty
    /// for tables from the sled log, or when opened without the topic's layout).
    pub fn partition_offsets(&self, i: usize) -> &[u64] {
        &self.tables[i].partition_offsets
    }

    /// Whether table `i` has the `log_partition` column (projected from a topic).
    pub fn partitioned(&self, i: usize) -> bool {
        self.tables[i].partitioned
    }

    /// The Delta version of table `i` as last read or committed.
    pub fn version(&self, i: usize) -> Option<u64> {
        self.tables[i].table.version()
    }

    /// Where new files of `def` are written before they are committed.
    pub fn staging_dir(&self, def: &TableDef) -> PathBuf {
        match (&self.staging, &self.root) {
            (Some(s), _) => s.join(&def.location),
            (None, TablesRoot::Local(dir)) => dir.join(&def.location),
            (None, TablesRoot::S3 { .. }) => unreachable!("S3 tables always stage locally"),
        }
    }

    /// A local path to read a committed file of table `i` (for S3, a cached copy,
    /// downloaded if needed).
    pub fn local_file(&self, i: usize, name: &str) -> Result<PathBuf, ProjectError> {
        let t = &self.tables[i];
        match (&self.root, &self.cache) {
            (TablesRoot::Local(dir), _) => Ok(dir.join(&t.def.location).join(name)),
            (TablesRoot::S3 { .. }, Some(cache)) => {
                let path = cache.join(&t.def.location).join(name);
                // A cached copy is used only if it is the file the Delta log recorded (its
                // size and Parquet's magic bytes): one torn by a crash or power loss is
                // fetched again, instead of failing every read of it for good.
                let entry = t.files.iter().find(|f| f.name == name);
                let good = match entry {
                    Some(e) => check_file(&path, e).is_ok(),
                    None => path.exists(),
                };
                if !good {
                    // Fetched to a temporary name and renamed over the bad copy: a reader in
                    // another process that just put a good copy there never finds it gone.
                    self.blocking.run(download(&t.log_store.object_store(None), &t.url, name, &path))?;
                    if let Some(e) = entry {
                        check_file(&path, e)?;
                    }
                }
                Ok(path)
            }
            (TablesRoot::S3 { .. }, None) => unreachable!("S3 tables always have a cache"),
        }
    }

    /// Commits one change to table `i`: `added` files (finished in [`Self::staging_dir`]),
    /// `removed` files, and the log offset the table now reaches. `Ok` means the commit is
    /// durable and visible to every reader; an error means nothing was committed — or, if
    /// the error is [`ProjectError::Conflict`], that another writer moved the table.
    /// For tables from a topic, `partition_offsets` are the partitions' next offsets after
    /// the change (their sum is `offset`).
    pub fn commit(
        &mut self,
        i: usize,
        kind: CommitKind,
        added: &[FileEntry],
        removed: &[FileEntry],
        offset: u64,
        partition_offsets: &[u64],
    ) -> Result<(), ProjectError> {
        let layout = self.layout.clone();
        let staging = self.staging.clone();
        let t = &mut self.tables[i];
        if let Some(staging) = &staging {
            let store = t.log_store.object_store(None);
            for f in added {
                let local = staging.join(&t.def.location).join(&f.name);
                self.blocking.run(upload(&store, &t.url, &local, &f.name))?;
            }
        }
        failpoint("publish.before_commit")?;
        self.blocking.run(commit_table(t, layout.as_ref(), kind, added, removed, offset, partition_offsets, None))?;
        if let (Some(staging), Some(cache)) = (&staging, &self.cache) {
            // The uploaded files become the cache's copies.
            let dir = cache.join(&t.def.location);
            let _ = fs::create_dir_all(&dir);
            for f in added {
                let _ = fs::rename(staging.join(&t.def.location).join(&f.name), dir.join(&f.name));
            }
        }
        failpoint("publish.after_commit")?;
        Ok(())
    }

    /// Several tables' commits (a step's), made concurrently: a commit's time is mostly
    /// waiting (its fsyncs, an S3 round trip), and five of them one after another were most
    /// of a small step's time. Each table's commit is still exactly one commit at the next
    /// version; `publish.before_commit` passes for each before any starts and
    /// `publish.after_commit` as each lands, so a crash can leave any subset committed,
    /// which a step's protocol already takes (a table ahead takes only what it lacks).
    pub fn commit_all(&mut self, commits: &[super::sink::TableCommit<'_>]) -> Result<(), ProjectError> {
        let layout = self.layout.clone();
        let staging = self.staging.clone();
        if let Some(staging) = &staging {
            for c in commits {
                let t = &self.tables[c.table];
                let store = t.log_store.object_store(None);
                for f in c.added {
                    let local = staging.join(&t.def.location).join(&f.name);
                    self.blocking.run(upload(&store, &t.url, &local, &f.name))?;
                }
            }
        }
        for _ in commits {
            failpoint("publish.before_commit")?;
        }
        let mut slots: Vec<Option<&mut Table>> = self.tables.iter_mut().map(Some).collect();
        let mut pending = Vec::with_capacity(commits.len());
        for c in commits {
            let t = slots.get_mut(c.table).and_then(Option::take);
            let layout = layout.as_ref();
            pending.push(async move {
                let t = t.ok_or_else(|| ProjectError::Io {
                    context: format!("committing table {}", c.table),
                    source: std::io::Error::other("the same table twice in one set of commits"),
                })?;
                commit_table(t, layout, c.kind, c.added, c.removed, c.offset, c.partition_offsets, c.claim.as_ref()).await?;
                failpoint("publish.after_commit")
            });
        }
        let results = self.blocking.run(futures_util::future::join_all(pending));
        if let (Some(staging), Some(cache)) = (&staging, &self.cache) {
            // The uploaded files of the commits that landed become the cache's copies.
            for (c, result) in commits.iter().zip(&results) {
                if result.is_ok() {
                    let location = &self.tables[c.table].def.location;
                    let dir = cache.join(location);
                    let _ = fs::create_dir_all(&dir);
                    for f in c.added {
                        let _ = fs::rename(staging.join(location).join(&f.name), dir.join(&f.name));
                    }
                }
            }
        }
        results.into_iter().collect()
    }

    /// Deletes files removed more than the retention period ago (from every table whose
    /// last pass is over [`VACUUM_INTERVAL_MS`] old, or all with `force`); returns how many.
    pub fn vacuum(&mut self, force: bool) -> Result<u64, ProjectError> {
        let retention_ms = self.vacuum_retention_ms as i64;
        let mut deleted = 0;
        for i in 0..self.tables.len() {
            let t = &mut self.tables[i];
            if !force && t.last_vacuum.is_some_and(|at| at.elapsed() < Duration::from_millis(VACUUM_INTERVAL_MS)) {
                continue;
            }
            t.last_vacuum = Some(std::time::Instant::now());
            let tombstones = self.blocking.run(vacuum_table(t, retention_ms))?;
            deleted += tombstones.deleted;
            if let Some(cache) = &self.cache {
                evict_cached(
                    &cache.join(&self.tables[i].def.location),
                    &self.tables[i],
                    &tombstones,
                    Duration::from_millis(self.vacuum_retention_ms),
                );
            }
        }
        Ok(deleted)
    }

    /// Removes what a crashed writer of this process's kind left in local table
    /// directories: unfinished files (`.writing-<pid>-…` of a process that is gone) and
    /// finished files that no commit names, once older than the vacuum retention (a
    /// concurrent projector may be about to commit a younger one).
    fn remove_leftovers(&self) {
        // Never younger than an hour: a concurrent projector's finished files wait for its
        // commit, which a long rebuild can take that long to reach.
        let retention = Duration::from_millis(self.vacuum_retention_ms.max(LEFTOVER_MIN_AGE_MS));
        let root = match &self.root {
            TablesRoot::Local(root) => root,
            TablesRoot::S3 { .. } => {
                // Uploads whose commit never came (a crash between upload and commit, a
                // lost race): in the store, named like table files, in no commit.
                for t in &self.tables {
                    let store = t.log_store.object_store(None);
                    match self.blocking.run(remove_orphans(&store, t, retention)) {
                        Ok(n) if n > 0 => tracing::info!(table = %t.def.name, files = n, "deleted files no commit names"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(table = %t.def.name, error = %e, "could not look for files no commit names"),
                    }
                }
                return;
            }
        };
        for t in &self.tables {
            let dir = root.join(&t.def.location);
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            let mut removed: Option<BTreeSet<String>> = None;
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age > retention);
                let remove = if let Some(rest) = name.strip_prefix(".writing-") {
                    let pid: Option<i32> = rest.split('-').next().and_then(|p| p.parse().ok());
                    // A live writer's file stays; a dead one's goes (or, with no readable
                    // pid, an old one's).
                    match pid {
                        Some(pid) => pid != std::process::id() as i32 && !process_alive(pid),
                        None => old,
                    }
                } else {
                    parse_file_name(&name).is_some()
                        && old
                        && !t.files.iter().any(|f| f.name == name)
                        && !removed.get_or_insert_with(|| self.tombstoned(t)).contains(&name)
                };
                if remove {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// The files removed from `t` that its log remembers: the vacuum's to delete, after
    /// the retention period. A table whose removals cannot be read counts every file as
    /// removed (so nothing is deleted as a leftover).
    fn tombstoned(&self, t: &Table) -> BTreeSet<String> {
        self.blocking.run(async {
            let all = match t.table.snapshot() {
                Ok(state) => state
                    .all_tombstones(t.log_store.as_ref())
                    .map_ok(|ts| ts.path().into_owned())
                    .try_collect::<BTreeSet<String>>()
                    .await
                    .ok(),
                Err(_) => None,
            };
            all.unwrap_or_else(|| {
                fs::read_dir(t.url.to_file_path().unwrap_or_default())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
        })
    }

    /// Re-reads every table (after a conflict, or for a reader that wants the newest).
    pub fn reload(&mut self) -> Result<(), ProjectError> {
        for t in &mut self.tables {
            self.blocking.run(load_or_create(t, self.layout.as_ref(), false, None))?;
        }
        Ok(())
    }

    /// A consistent view for readers: each table at the version whose offset is the
    /// smallest of the five (a step commits the tables one after another; a reader in
    /// between takes the earlier versions of those already committed).
    pub fn consistent_offset(&mut self) -> Result<u64, ProjectError> {
        // The target only goes down: a table with no version at exactly the target (a step
        // that stopped half-way, then shorter steps) lowers it to the offset it has, and
        // the others walk back to that.
        let mut target = self.tables.iter().map(|t| t.offset).min().unwrap_or(0);
        let mut steps = vec![0u64; self.tables.len()];
        'again: loop {
            for (i, t) in self.tables.iter_mut().enumerate() {
                // A registered type's table that begins past the target is not in the
                // tables at the target: no version of it need hold it.
                if t.def.from_offset > target {
                    continue;
                }
                while t.offset > target {
                    let Some(v) = t.table.version().filter(|&v| v > 0) else { break };
                    steps[i] += 1;
                    if steps[i] > MAX_SNAPSHOT_WALKBACK_VERSIONS {
                        return Err(ProjectError::Inconsistent {
                            table: t.def.name.clone(),
                            reason: format!(
                                "no version of it in the last {MAX_SNAPSHOT_WALKBACK_VERSIONS} holds the log offsets 0..{target} the other tables share (a rebuild or a projector stopped half-way?); run `questlog project`"
                            ),
                        });
                    }
                    self.blocking.run(load_version(t, v - 1, self.layout.as_ref()))?;
                }
                if t.offset < target {
                    target = t.offset;
                    continue 'again;
                }
            }
            return Ok(target);
        }
    }
}

/// The size the Delta log recorded and Parquet's magic bytes at both ends: catches
/// truncated, extended, replaced and missing files.
fn check_file(path: &Path, entry: &FileEntry) -> Result<(), ProjectError> {
    use std::io::{Read, Seek, SeekFrom};
    let damaged = |reason: String| ProjectError::Damaged { path: path.to_path_buf(), reason };
    let mut f = File::open(path).map_err(|e| damaged(format!("cannot open it: {e}")))?;
    let len = f.metadata().map_err(io_err(format!("stat {}", path.display())))?.len();
    if len != entry.bytes {
        return Err(damaged(format!("it is {len} bytes, the Delta log recorded {}", entry.bytes)));
    }
    let mut head = [0u8; 4];
    let mut tail = [0u8; 4];
    let read = f.read_exact(&mut head).and_then(|_| f.seek(SeekFrom::End(-4))).and_then(|_| f.read_exact(&mut tail));
    if read.is_err() || &head != b"PAR1" || &tail != b"PAR1" {
        return Err(damaged("it does not start and end with Parquet's magic bytes".into()));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn process_alive(pid: i32) -> bool {
    // Signal 0 checks the process exists; EPERM means it does, owned by someone else.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: i32) -> bool {
    true
}

/// Loads the newest version of `t` (creating the table when `create` and there is none),
/// and reads its offset and files.
/// `initial`: on a topic, the partitions' offsets a table made now holds (its first commit
/// names them); none: zeros.
async fn load_or_create(t: &mut Table, layout: Option<&Layout>, create: bool, initial: Option<Vec<u64>>) -> Result<(), ProjectError> {
    if create && t.url.scheme() == "file" {
        if let Ok(dir) = t.url.to_file_path() {
            super::create_dir_synced(&dir)?;
        }
    }
    let exists = match t.url.to_file_path() {
        // A local table that is not there is not an error for a reader.
        Ok(dir) if !dir.join("_delta_log").is_dir() => false,
        _ => t.table.verify_deltatable_existence().await.map_err(delta_err(&t.def, &t.url))?,
    };
    let loaded = if exists { t.table.load().await } else { Err(DeltaTableError::NotATable(t.url.to_string())) };
    match loaded {
        Ok(()) => {}
        Err(DeltaTableError::NotATable(_)) if create => {
            let created = CreateBuilder::new()
                .with_log_store(t.log_store.clone())
                .with_table_name(t.def.name.as_str())
                .with_columns(delta_schema(&t.def, layout.is_some_and(Layout::partitioned))?.fields().cloned())
                .with_configuration_property(TableProperty::CheckpointInterval, Some(CHECKPOINT_INTERVAL_COMMITS.to_string()))
                .with_configuration_property(TableProperty::LogRetentionDuration, Some(LOG_RETENTION))
                // questlog's own keys are not Delta table properties: kept, not refused.
                .with_raise_if_key_not_exists(false)
                .with_configuration(match layout {
                    Some(Layout::Topic { topic, partitions }) => {
                        vec![(TOPIC_CONFIG_KEY, Some(topic.clone())), (PARTITIONS_CONFIG_KEY, Some(partitions.to_string()))]
                    }
                    _ => Vec::new(),
                })
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_commit_properties({
                    let props = CommitProperties::default().with_max_retries(0);
                    match (layout, &initial) {
                        (Some(Layout::Topic { topic, partitions }), Some(offsets))
                            if t.def.registered().is_some() && offsets.len() == *partitions as usize =>
                        {
                            let mut txns = vec![Transaction::new(APP_ID, offsets.iter().sum::<u64>() as i64)];
                            for (p, o) in offsets.iter().enumerate() {
                                txns.push(Transaction::new(partition_app_id(topic, p as u32), *o as i64));
                            }
                            props.with_application_transactions(txns)
                        }
                        _ => props,
                    }
                })
                .await;
            match created {
                Ok(table) => {
                    t.table = table;
                    if let Ok(dir) = t.url.to_file_path() {
                        // The entry, `_delta_log/`, and the table directory that names
                        // `_delta_log` (object_store created it with the first entry).
                        sync_log_entry(&dir, 0)?;
                        super::fsync_dir(&dir)?;
                    }
                }
                // Another process created it first (the error that reports it depends on
                // where delta-rs noticed): use theirs. Otherwise the creation failed.
                Err(e) => {
                    if t.table.verify_deltatable_existence().await.unwrap_or(false) {
                        t.table.load().await.map_err(delta_err(&t.def, &t.url))?;
                    } else {
                        return Err(delta_err(&t.def, &t.url)(e));
                    }
                }
            }
        }
        Err(DeltaTableError::NotATable(_)) => {
            t.offset = t.def.from_offset;
            t.partition_offsets = match layout {
                Some(Layout::Topic { partitions, .. }) => vec![0; *partitions as usize],
                _ => Vec::new(),
            };
            t.partitioned = layout.is_some_and(Layout::partitioned);
            t.files.clear();
            return Ok(());
        }
        Err(e) => return Err(delta_err(&t.def, &t.url)(e)),
    }
    read_state(t, layout).await
}

async fn load_version(t: &mut Table, version: u64, layout: Option<&Layout>) -> Result<(), ProjectError> {
    t.table.load_version(version).await.map_err(delta_err(&t.def, &t.url))?;
    read_state(t, layout).await
}

/// Reads offset and files from `t`'s loaded snapshot, checking its columns are ours (those
/// of `layout`, or of either layout for a reader).
async fn read_state(t: &mut Table, layout: Option<&Layout>) -> Result<(), ProjectError> {
    let err = delta_err(&t.def, &t.url);
    let state = t.table.snapshot().map_err(delta_err(&t.def, &t.url))?;
    let got: Vec<String> = state.schema().fields().map(|f| f.name().to_string()).collect();
    let names = |partitioned| -> Result<Vec<String>, ProjectError> {
        Ok(delta_schema(&t.def, partitioned)?.fields().map(|f| f.name().to_string()).collect())
    };
    let partitioned = match layout {
        Some(l) => l.partitioned(),
        None => got.last().is_some_and(|c| c == "log_partition"),
    };
    let want = names(partitioned)?;
    if let Some(stored) = as_stored(&t.def, &got, partitioned) {
        t.def = stored;
    } else {
        let hint = if as_stored(&t.def, &got, !partitioned).is_some() {
            if partitioned {
                "; it was projected from the sled log, not a topic: project into other tables (--tables), or rebuild these (project --rebuild)"
            } else {
                "; it was projected from a Kafka topic (--log kafka://…): use that log, or rebuild the tables from this one (project --rebuild)"
            }
        } else {
            ""
        };
        return Err(ProjectError::Schema {
            table: t.def.name.clone(),
            reason: format!("the Delta table at {} has columns [{}]; questlog's are [{}]{hint}", t.url, got.join(", "), want.join(", ")),
        });
    }
    t.partitioned = partitioned;
    let offset = state.transaction_version(t.log_store.as_ref(), APP_ID).await.map_err(err)?;
    let mut partition_offsets = Vec::new();
    // A reader not told the topic takes the one the table names (tables projected before
    // it was named there are read by position alone).
    let named = match layout {
        None if partitioned => {
            let config = state.metadata().configuration();
            match (config.get(TOPIC_CONFIG_KEY), config.get(PARTITIONS_CONFIG_KEY).and_then(|n| n.parse::<u32>().ok())) {
                (Some(topic), Some(partitions)) => Some(Layout::Topic { topic: topic.clone(), partitions }),
                _ => None,
            }
        }
        _ => None,
    };
    if let Some(Layout::Topic { topic, partitions }) = layout.or(named.as_ref()) {
        for p in 0..*partitions {
            let v =
                state.transaction_version(t.log_store.as_ref(), &partition_app_id(topic, p)).await.map_err(delta_err(&t.def, &t.url))?;
            partition_offsets.push(v.unwrap_or(0).max(0) as u64);
        }
        let sum: u64 = partition_offsets.iter().sum();
        let offset = offset.unwrap_or(0).max(0) as u64;
        if sum != offset {
            return Err(ProjectError::Inconsistent {
                table: t.def.name.clone(),
                reason: format!(
                    "its commits reach position {offset} but the partitions of topic {topic} sum to {sum}: the tables were projected from another topic (or one with other partitions); project into other tables (--tables), or rebuild these (project --rebuild)"
                ),
            });
        }
    }
    t.partition_offsets = partition_offsets;
    let mut files = Vec::new();
    for f in state.log_data() {
        let name = f.path().into_owned();
        let Some((first, last, level)) = parse_file_name(&name) else {
            return Err(ProjectError::Schema {
                table: t.def.name.clone(),
                reason: format!(
                    "the Delta table at {} holds {name}, a file questlog did not write; questlog must be the only writer of its tables",
                    t.url
                ),
            });
        };
        let rows = f.num_records().unwrap_or(0) as u64;
        files.push(FileEntry { name, level, rows, bytes: f.size() as u64, first_offset: first, last_offset: last });
    }
    files.sort_by_key(|f| (f.first_offset, f.last_offset));
    // A table with no commit of a step yet holds nothing before it begins.
    t.offset = offset.map_or(t.def.from_offset, |o| o.max(0) as u64);
    t.files = files;
    Ok(())
}

/// The `stats` of an `add` action. Files from a topic are named by position, not by
/// `log_offset`, and hold several partitions' offsets: their stats give the row count only,
/// so no reader skips a file on a wrong `log_offset` range.
fn stats_json(f: &FileEntry, partitioned: bool) -> String {
    if partitioned {
        return serde_json::json!({ "numRecords": f.rows }).to_string();
    }
    serde_json::json!({
        "numRecords": f.rows,
        "minValues": { "log_offset": f.first_offset },
        "maxValues": { "log_offset": f.last_offset },
        "nullCount": { "log_offset": 0 },
    })
    .to_string()
}

/// What one attempt at a commit came to.
#[allow(clippy::large_enum_variant)] // one per commit attempt, never stored
enum Attempt<'a> {
    /// It landed at `version` (`post`: the post-commit work still to do; `None` when it
    /// was found landed after a refused retry), with `offset` and `partition_offsets`.
    Landed {
        post: Option<deltalake_core::kernel::transaction::PostCommit>,
        version: u64,
        offset: u64,
        partition_offsets: Vec<u64>,
        keep: BTreeSet<&'a str>,
    },
    /// Another writer committed the version after `read_version` first.
    Moved { read_version: Option<u64>, wanted_offset: u64 },
}

/// Whether a claimed commit may try again on the table as now read: every partition it
/// claims is still where the member read it (a compaction: every file it removes is
/// still there).
fn claim_holds(t: &Table, kind: CommitKind, c: &Claim<'_>, removed: &[FileEntry]) -> bool {
    if kind == CommitKind::Compact {
        return removed.iter().all(|r| t.files.iter().any(|f| f.name == r.name));
    }
    c.partitions.iter().zip(c.expected).all(|(&p, &e)| t.partition_offsets.get(p as usize) == Some(&e))
}

/// One attempt at a commit on the version of `t` last read (see [`commit_table`]).
#[allow(clippy::too_many_arguments)]
async fn try_commit<'a>(
    t: &mut Table,
    layout: Option<&Layout>,
    kind: CommitKind,
    added: &'a [FileEntry],
    removed: &'a [FileEntry],
    offset: u64,
    partition_offsets: &[u64],
    claim: Option<&Claim<'_>>,
) -> Result<Attempt<'a>, ProjectError> {
    let now = now_ms();
    let data_change = kind != CommitKind::Compact;
    // A file both removed and added (a rebuild writing an unchanged file: same name,
    // same bytes) stays; the Delta protocol allows a path once per commit.
    let keep: BTreeSet<&str> = added.iter().map(|f| f.name.as_str()).filter(|n| removed.iter().any(|r| r.name == *n)).collect();
    let mut actions: Vec<Action> = Vec::with_capacity(added.len() + removed.len());
    for f in removed.iter().filter(|f| !keep.contains(f.name.as_str())) {
        actions.push(Action::Remove(Remove {
            path: f.name.clone(),
            data_change,
            deletion_timestamp: Some(now),
            extended_file_metadata: Some(true),
            partition_values: Some(HashMap::new()),
            size: Some(f.bytes as i64),
            ..Default::default()
        }));
    }
    for f in added.iter().filter(|f| !keep.contains(f.name.as_str()) && !t.files.iter().any(|have| have.name == f.name)) {
        actions.push(Action::Add(Add {
            path: f.name.clone(),
            partition_values: HashMap::new(),
            size: f.bytes as i64,
            modification_time: now,
            data_change,
            stats: Some(stats_json(f, t.partitioned)),
            ..Default::default()
        }));
    }
    let op = match kind {
        CommitKind::Append => DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None },
        CommitKind::Compact => DeltaOperation::Optimize { predicate: None, target_size: 0 },
        CommitKind::Replace => DeltaOperation::Write { mode: SaveMode::Overwrite, partition_by: None, predicate: None },
    };
    let read_version = t.table.version();
    let next_version = read_version.map(|v| v + 1).unwrap_or(0);
    let mut partition_offsets = partition_offsets.to_vec();
    let mut offset = offset;
    let mut txns = Vec::new();
    match (layout, claim) {
        (Some(Layout::Topic { topic, partitions }), Some(c)) => {
            // The other partitions stay where this version of the table has them.
            assert_eq!(partition_offsets.len(), *partitions as usize, "a commit from a topic names every partition's offset");
            let mut next = t.partition_offsets.clone();
            if kind != CommitKind::Compact {
                for &p in c.partitions {
                    next[p as usize] = partition_offsets[p as usize];
                    txns.push(Transaction::new(partition_app_id(topic, p), partition_offsets[p as usize] as i64));
                }
                offset = next.iter().sum();
                txns.push(Transaction::new(APP_ID, offset as i64));
            } else {
                offset = t.offset;
            }
            partition_offsets = next;
        }
        (Some(Layout::Topic { topic, partitions }), None) => {
            assert_eq!(partition_offsets.len(), *partitions as usize, "a commit from a topic names every partition's offset");
            assert_eq!(partition_offsets.iter().sum::<u64>(), offset, "a table's position is the sum of its partitions' offsets");
            txns.push(Transaction::new(APP_ID, offset as i64));
            for (p, o) in partition_offsets.iter().enumerate() {
                txns.push(Transaction::new(partition_app_id(topic, p as u32), *o as i64));
            }
        }
        _ => txns.push(Transaction::new(APP_ID, offset as i64)),
    }
    // Names this commit in its `commitInfo`, so that a commit reported as refused can be
    // told from one that landed (see `landed_anyway`).
    let nonce = commit_nonce();
    let props = CommitProperties::default()
        .with_application_transactions(txns)
        .with_metadata([(COMMIT_NONCE_KEY.to_string(), serde_json::Value::String(nonce.clone()))])
        // Exactly the version after the one read, or refused: a projector never commits
        // over a change it did not see (the conflict check for a `txn` compares ids, not
        // versions, and data-change-free removes are not checked at all).
        .with_max_retries(0)
        .with_create_checkpoint(true)
        // Log clean-up runs below, after the checkpoint it relies on is synced.
        .with_cleanup_expired_logs(Some(false));
    let state = t.table.snapshot().map_err(delta_err(&t.def, &t.url))?;
    // A table an ADDITION widened (see `DeltaTables::ensure`) takes its wider schema in
    // the commit that first holds rows with the new columns: one version, so a reader
    // never sees those rows without their columns. Older files lack them: readers
    // (Delta's, DuckDB's, Spark's over the Hive DDL, questlog's) read them as nulls.
    let want = delta_schema(&t.def, t.partitioned)?;
    let table = t.def.name.clone();
    let schema_err =
        |e: deltalake_core::kernel::Error| ProjectError::Schema { table: table.clone(), reason: format!("its Delta metadata: {e}") };
    let mut metadata = None;
    // Never narrower: a member of a group whose schema records lag another's commits rows
    // without the newer columns (null there), and leaves the table as wide as it is.
    let current_schema = state.schema();
    let have: Vec<String> = current_schema.fields().map(|f| f.name().to_string()).collect();
    let wanted: Vec<String> = want.fields().map(|f| f.name().to_string()).collect();
    let narrower = wanted.len() < have.len() && wanted.iter().all(|w| have.contains(w));
    if have != wanted && !narrower {
        use deltalake_core::kernel::MetadataExt as _;
        metadata = Some(state.metadata().clone().with_schema(&want).map_err(schema_err)?);
    }
    // A table from a topic names it in its metadata, so that a reader that is not told
    // the topic finds its partitions' offsets (see `read_state`).
    if let Some(Layout::Topic { topic, partitions }) = layout {
        let config = state.metadata().configuration();
        if config.get(TOPIC_CONFIG_KEY) != Some(topic) || config.get(PARTITIONS_CONFIG_KEY) != Some(&partitions.to_string()) {
            use deltalake_core::kernel::MetadataExt as _;
            let m = metadata.take().unwrap_or_else(|| state.metadata().clone());
            let m = m.add_config_key(TOPIC_CONFIG_KEY.to_string(), topic.clone()).map_err(schema_err)?;
            metadata = Some(m.add_config_key(PARTITIONS_CONFIG_KEY.to_string(), partitions.to_string()).map_err(schema_err)?);
        }
    }
    if let Some(metadata) = metadata {
        actions.insert(0, Action::Metadata(metadata));
    }
    let prepared = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(state as &dyn TableReference), t.log_store.clone(), op)
        .into_prepared_commit_future()
        .await;
    let post = match prepared {
        Ok(prepared) => prepared.await,
        Err(e) => Err(e),
    };
    let post = match post {
        Ok(post) => Some(post),
        Err(e) => {
            let moved = matches!(
                &e,
                DeltaTableError::VersionAlreadyExists(_)
                    | DeltaTableError::Transaction {
                        source: TransactionError::MaxCommitAttempts(_)
                            | TransactionError::VersionAlreadyExists(_)
                            | TransactionError::CommitConflict(_)
                    }
            );
            if !moved {
                return Err(delta_err(&t.def, &t.url)(e));
            }
            if landed_anyway(t, next_version, &nonce).await? {
                // The store kept our entry and then refused a retry of the same request
                // (object_store retries a conditional put after a 5xx): it is our commit.
                tracing::warn!(
                    table = %t.def.name,
                    version = next_version,
                    "a commit reported as refused had landed (a retried request); taking it as done"
                );
                None
            } else {
                return Ok(Attempt::Moved { read_version, wanted_offset: offset });
            }
        }
    };
    let version = post.as_ref().map_or(next_version, |p| p.version);
    Ok(Attempt::Landed { post, version, offset, partition_offsets, keep })
}

#[allow(clippy::too_many_arguments)]
async fn commit_table(
    t: &mut Table,
    layout: Option<&Layout>,
    kind: CommitKind,
    added: &[FileEntry],
    removed: &[FileEntry],
    offset: u64,
    partition_offsets: &[u64],
    claim: Option<&Claim<'_>>,
) -> Result<u64, ProjectError> {
    if let Some(c) = claim {
        assert_eq!(c.partitions.len(), c.expected.len(), "a claim names where each of its partitions is");
        assert!(layout.is_some_and(Layout::partitioned), "claims are made on tables from a topic");
    }
    let mut attempt = 0u32;
    let (post, version, offset, partition_offsets, keep) = loop {
        attempt += 1;
        // Before every attempt, the first too: the table this process holds may have been
        // read again since the claim was made (a merge chosen before another member's
        // merge of the same files, and committed after the table was refreshed, would
        // otherwise land on a version that no longer has its inputs).
        if let Some(c) = claim {
            if !claim_holds(t, kind, c, removed) {
                return Err(ProjectError::Conflict {
                    table: t.def.name.clone(),
                    read_version: t.table.version().unwrap_or(0),
                    version: t.table.version().unwrap_or(0),
                    offset: t.offset,
                    wanted_offset: offset,
                });
            }
        }
        match try_commit(t, layout, kind, added, removed, offset, partition_offsets, claim).await? {
            Attempt::Landed { post, version, offset, partition_offsets, keep } => break (post, version, offset, partition_offsets, keep),
            Attempt::Moved { read_version, wanted_offset } => {
                // Say who moved it (or, for a claim, whether it may go on): read the table again.
                load_or_create(t, layout, false, None).await?;
                if claim.is_some() && attempt < MAX_CLAIM_ATTEMPTS {
                    // Committed again on the version read, if the claim still holds there.
                    tracing::debug!(table = %t.def.name, attempt, "another member committed first; trying on its version");
                    continue;
                }
                return Err(ProjectError::Conflict {
                    table: t.def.name.clone(),
                    read_version: read_version.unwrap_or(0),
                    version: t.table.version().unwrap_or(0),
                    offset: t.offset,
                    wanted_offset,
                });
            }
        }
    };
    // The commit has landed. From here on nothing may make the projector forget it: the
    // offset and files are what it committed, whatever reading the table back does.
    t.offset = offset;
    if layout.is_some_and(Layout::partitioned) {
        t.partition_offsets = partition_offsets;
    }
    t.files.retain(|f| !removed.iter().any(|r| r.name == f.name) || keep.contains(f.name.as_str()));
    for f in added {
        if !t.files.iter().any(|have| have.name == f.name) {
            t.files.push(f.clone());
        }
    }
    t.files.sort_by_key(|f| (f.first_offset, f.last_offset));
    // Power loss must not take a commit that is reported done: the log entry and its
    // directory entry are synced (the data files and theirs were, before the commit).
    if let Ok(dir) = t.url.to_file_path() {
        sync_log_entry(&dir, version)?;
    }
    // A checkpoint or log clean-up that fails after the commit is reported, not taken for
    // a failed commit; if the table cannot be read back, the next commit (built on the
    // version before) is refused and the projector reopens the tables.
    let mut checkpointed = false;
    match post {
        Some(post) => match post.await {
            Ok(finalized) => {
                checkpointed = finalized.metrics.new_checkpoint_created;
                t.table.state = Some(finalized.snapshot);
            }
            Err(e) => tracing::warn!(table = %t.def.name, version, error = %e, "Delta post-commit work (checkpoint) failed"),
        },
        None => {
            // Our commit, found after a refused retry: read the table at it, and make the
            // checkpoint the post-commit work would have made.
            if let Err(e) = t.table.update_incremental(Some(version)).await {
                tracing::warn!(table = %t.def.name, version, error = %e, "cannot read a table back after its commit");
            } else if (version + 1) % CHECKPOINT_INTERVAL_COMMITS == 0 {
                match deltalake_core::protocol::checkpoints::create_checkpoint(&t.table, None).await {
                    Ok(()) => checkpointed = true,
                    Err(e) => tracing::warn!(table = %t.def.name, version, error = %e, "Delta checkpoint failed"),
                }
            }
        }
    }
    if let Ok(dir) = t.url.to_file_path() {
        // A checkpoint is what a reader starts from once clean-up has removed the entries
        // before it: synced (with `_last_checkpoint` and their directory) before any
        // clean-up may count on it.
        if checkpointed {
            sync_checkpoint(&dir, version)?;
        }
    }
    if version % LOG_CLEANUP_EVERY_COMMITS == 0 {
        if let Err(e) = deltalake_core::protocol::checkpoints::cleanup_metadata(&t.table, None).await {
            tracing::warn!(table = %t.def.name, version, error = %e, "Delta log clean-up failed");
        }
    }
    if t.table.version() == Some(version) {
        if let Err(e) = read_state(t, layout).await {
            tracing::warn!(table = %t.def.name, version, error = %e, "cannot read a table back after its commit");
        }
    }
    Ok(version)
}

/// The `commitInfo` member naming the commit that wrote an entry (see [`commit_nonce`]).
const COMMIT_NONCE_KEY: &str = "questlog.commit";

/// A name for one commit attempt, unique across processes and machines: pid, time and 64
/// random bits (std's `RandomState` keys come from the OS's random source).
fn commit_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{}-{}-{random:016x}", std::process::id(), now_ms())
}

/// Whether version `version` of `t` is the commit named `nonce`: a commit the store
/// reported as refused because a retried request found the entry its first attempt had
/// written.
async fn landed_anyway(t: &Table, version: u64, nonce: &str) -> Result<bool, ProjectError> {
    let entry = t.log_store.read_commit_entry(version).await.map_err(delta_err(&t.def, &t.url))?;
    let Some(bytes) = entry else { return Ok(false) };
    Ok(bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .any(|action| action["commitInfo"][COMMIT_NONCE_KEY].as_str() == Some(nonce)))
}

/// Syncs the checkpoint of `version` (its file or parts), `_last_checkpoint` and
/// `_delta_log/`, of a local table.
fn sync_checkpoint(table_dir: &Path, version: u64) -> Result<(), ProjectError> {
    let log_dir = table_dir.join("_delta_log");
    let prefix = format!("{version:020}.checkpoint");
    let entries = fs::read_dir(&log_dir).map_err(io_err(format!("listing {}", log_dir.display())))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) || name == "_last_checkpoint" {
            File::open(e.path()).and_then(|f| f.sync_all()).map_err(io_err(format!("syncing {}", e.path().display())))?;
        }
    }
    super::fsync_dir(&log_dir)
}

/// Syncs `<table dir>/_delta_log/<version>.json` and `_delta_log/`.
fn sync_log_entry(table_dir: &Path, version: u64) -> Result<(), ProjectError> {
    let log_dir = table_dir.join("_delta_log");
    let entry = log_dir.join(format!("{version:020}.json"));
    File::open(&entry).and_then(|f| f.sync_all()).map_err(io_err(format!("syncing {}", entry.display())))?;
    super::fsync_dir(&log_dir)
}

/// What a vacuum pass saw of a table's removed files.
#[derive(Default)]
struct Tombstones {
    /// Files deleted from the store.
    deleted: u64,
    /// Every removed file the log still remembers, and whether it was removed more than
    /// the retention period ago.
    removed: HashMap<String, bool>,
}

async fn vacuum_table(t: &mut Table, retention_ms: i64) -> Result<Tombstones, ProjectError> {
    let Ok(state) = t.table.snapshot() else { return Ok(Tombstones::default()) };
    let cutoff = now_ms() - retention_ms;
    let live: BTreeSet<String> = t.files.iter().map(|f| f.name.clone()).collect();
    let removed: HashMap<String, bool> = state
        .all_tombstones(t.log_store.as_ref())
        .map_ok(|ts| (ts.path().into_owned(), ts.deletion_timestamp().unwrap_or(0) < cutoff))
        .try_collect()
        .await
        .map_err(delta_err(&t.def, &t.url))?;
    let store = t.log_store.object_store(None);
    let mut deleted = 0;
    for (name, _) in removed.iter().filter(|(n, expired)| **expired && !live.contains(*n)) {
        match store.delete(&StorePath::from(name.as_str())).await {
            Ok(()) => deleted += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(table = %t.def.name, file = %name, error = %e, "vacuum could not delete a removed file"),
        }
    }
    Ok(Tombstones { deleted, removed })
}

/// Evicts cached copies (S3 tables) a reader can no longer need: of files removed from the
/// table more than `retention` ago (by when they were removed, not when they were cached:
/// a reader of a snapshot from before the removal may still read them until then), and of
/// files no commit names (an upload whose commit failed) once older than `retention`; and
/// temporary downloads of processes that are gone.
fn evict_cached(dir: &Path, t: &Table, tombstones: &Tombstones, retention: Duration) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let evict = if let Some(pid) = name.rsplit_once(".download-").and_then(|(_, pid)| pid.parse::<i32>().ok()) {
            pid != std::process::id() as i32 && !process_alive(pid)
        } else if parse_file_name(&name).is_none() || t.files.iter().any(|f| f.name == name) {
            false
        } else {
            match tombstones.removed.get(&name) {
                Some(expired) => *expired,
                None => e.metadata().and_then(|m| m.modified()).ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age > retention),
            }
        };
        if evict {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Deletes objects of `store` (a table's own, prefixed store) named like table files that
/// no commit names, neither live nor removed, once older than `min_age`; returns how many.
async fn remove_orphans(store: &ObjectStoreRef, t: &Table, min_age: Duration) -> Result<u64, ProjectError> {
    let removed: BTreeSet<String> = match t.table.snapshot() {
        Ok(state) => state
            .all_tombstones(t.log_store.as_ref())
            .map_ok(|ts| ts.path().into_owned())
            .try_collect()
            .await
            .map_err(delta_err(&t.def, &t.url))?,
        // No table yet: nothing of it is anyone's commit, but nothing is known either.
        Err(_) => return Ok(0),
    };
    let cutoff = chrono::Utc::now() - chrono::Duration::milliseconds(min_age.as_millis() as i64);
    let listing = store
        .list_with_delimiter(None)
        .await
        .map_err(|e| ProjectError::Io { context: format!("listing {}", t.url), source: std::io::Error::other(e) })?;
    let mut deleted = 0;
    for object in listing.objects {
        let name = object.location.filename().unwrap_or("").to_string();
        let orphan = parse_file_name(&name).is_some()
            && object.last_modified < cutoff
            && !t.files.iter().any(|f| f.name == name)
            && !removed.contains(&name);
        if orphan {
            match store.delete(&object.location).await {
                Ok(()) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(table = %t.def.name, file = %name, error = %e, "could not delete a file no commit names"),
            }
        }
    }
    Ok(deleted)
}

/// Uploads a finished local file as `<name>` in `store`, the table's own (prefixed) store
/// (multipart when large); `table` is for messages.
async fn upload(store: &ObjectStoreRef, table: &Url, local: &Path, name: &str) -> Result<(), ProjectError> {
    use tokio::io::AsyncWriteExt as _;
    let key = StorePath::from(name);
    let err = |e: std::io::Error| ProjectError::Io { context: format!("uploading {} to {table}{name}", local.display()), source: e };
    let mut file = tokio::fs::File::open(local).await.map_err(err)?;
    let mut out = object_store::buffered::BufWriter::new(store.clone(), key);
    tokio::io::copy(&mut file, &mut out).await.map_err(err)?;
    out.shutdown().await.map_err(err)?;
    Ok(())
}

/// Downloads `<name>` of the table's own store to `path` (via a temporary name, so a
/// half-written copy is never taken for the file).
async fn download(store: &ObjectStoreRef, table: &Url, name: &str, path: &Path) -> Result<(), ProjectError> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let key = StorePath::from(name);
    let io = |e: std::io::Error| ProjectError::Io { context: format!("downloading {table}{name} to {}", path.display()), source: e };
    let got = match store.get(&key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ProjectError::Io {
                context: format!("reading {table}{name}"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "the file is gone (removed and vacuumed); take a new snapshot"),
            })
        }
        Err(e) => return Err(io(std::io::Error::other(e))),
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let tmp = path.with_extension(format!("download-{}", std::process::id()));
    let expected = got.meta.size;
    let mut out = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let mut stream = got.into_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| io(std::io::Error::other(e)))?;
        out.write_all(&chunk).await.map_err(io)?;
        written += chunk.len() as u64;
    }
    out.flush().await.map_err(io)?;
    if written != expected {
        drop(out);
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io(std::io::Error::other(format!("the download ended after {written} of {expected} bytes"))));
    }
    // Synced before it takes the file's name, and the name synced after: a copy that is
    // there is whole, after a crash or power loss too.
    out.sync_all().await.map_err(io)?;
    drop(out);
    tokio::fs::rename(&tmp, path).await.map_err(io)?;
    if let Some(dir) = path.parent() {
        super::fsync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backdate(path: &Path, secs: u64) {
        File::options().write(true).open(path).unwrap().set_modified(SystemTime::now() - Duration::from_secs(secs)).unwrap();
    }

    /// Files no commit names are deleted once older than the leftover age, by a listing of
    /// the table's store (what S3 tables go through): younger ones, live ones and other
    /// names stay.
    #[test]
    fn orphans_are_deleted_from_the_store_once_old_and_only_they() {
        let d = tempfile::tempdir().unwrap();
        let root = TablesRoot::Local(d.path().join("delta"));
        let tables = DeltaTables::open(&root, d.path(), DEFAULT_VACUUM_RETENTION_MS, false, &Layout::Local, &TableSet::seed()).unwrap();
        let t = &tables.tables[0];
        let dir = d.path().join("delta").join(&t.def.location);
        let old = file_name(0, 9, 0, "00000000000000aa");
        let young = file_name(10, 19, 0, "00000000000000bb");
        for (name, age) in [(old.as_str(), 7200), (young.as_str(), 0), ("notes.txt", 7200)] {
            fs::write(dir.join(name), b"PAR1 x PAR1").unwrap();
            backdate(&dir.join(name), age);
        }
        let store = t.log_store.object_store(None);
        let deleted = tables.blocking.run(remove_orphans(&store, t, Duration::from_millis(LEFTOVER_MIN_AGE_MS))).unwrap();
        assert_eq!(deleted, 1);
        assert!(!dir.join(&old).exists(), "an hour-old file no commit names is deleted");
        assert!(dir.join(&young).exists() && dir.join("notes.txt").exists());
        assert!(dir.join("_delta_log").is_dir());
    }

    /// Cached copies go by when their file was removed from the table, not by their own
    /// age: an old copy of a file removed a moment ago stays (a reader of the snapshot
    /// before may read it), one removed long ago goes, and so does a dead process's
    /// temporary download.
    #[test]
    fn cached_copies_are_evicted_by_removal_time() {
        let d = tempfile::tempdir().unwrap();
        let root = TablesRoot::Local(d.path().join("delta"));
        let tables = DeltaTables::open(&root, d.path(), DEFAULT_VACUUM_RETENTION_MS, false, &Layout::Local, &TableSet::seed()).unwrap();
        let t = &tables.tables[0];
        let cache = d.path().join("cache");
        fs::create_dir_all(&cache).unwrap();
        let just_removed = file_name(0, 9, 0, "00000000000000aa");
        let long_removed = file_name(10, 19, 0, "00000000000000bb");
        let never_committed = file_name(20, 29, 0, "00000000000000cc");
        let dead_download = format!("{}.download-{}", file_name(30, 39, 0, "00000000000000dd").trim_end_matches(".parquet"), i32::MAX - 1);
        for name in [&just_removed, &long_removed, &never_committed, &dead_download] {
            fs::write(cache.join(name), b"x").unwrap();
            backdate(&cache.join(name), 7200);
        }
        let tombstones = Tombstones { deleted: 0, removed: HashMap::from([(just_removed.clone(), false), (long_removed.clone(), true)]) };
        evict_cached(&cache, t, &tombstones, Duration::from_secs(3600));
        assert!(cache.join(&just_removed).exists(), "removed within the retention: kept, however old the copy");
        assert!(!cache.join(&long_removed).exists());
        assert!(!cache.join(&never_committed).exists(), "no commit names it and it is older than the retention");
        assert!(!cache.join(&dead_download).exists(), "a dead process's download");
    }

    fn entry(first: u64, last: u64, level: u8, tag: &str) -> FileEntry {
        FileEntry {
            name: file_name(first, last, level, &format!("{tag:0>16}")),
            level,
            rows: last - first + 1,
            bytes: 100,
            first_offset: first,
            last_offset: last,
        }
    }

    fn claimed<'a>(
        kind: CommitKind,
        added: &'a [FileEntry],
        removed: &'a [FileEntry],
        offsets: &'a [u64],
        claim: Claim<'a>,
    ) -> Vec<super::super::sink::TableCommit<'a>> {
        vec![super::super::sink::TableCommit {
            table: 0,
            kind,
            added,
            removed,
            offset: offsets.iter().sum(),
            partition_offsets: offsets,
            claim: Some(claim),
        }]
    }

    /// Two group members commit to one table, each for its own partition, from the same
    /// version: both land (the second reads the table again and commits on it), each
    /// `txn` names its own partition, and a member whose partition moved under it (it lost
    /// the partition to another) is refused.
    #[test]
    fn members_commit_their_own_partitions_once() {
        let d = tempfile::tempdir().unwrap();
        let root = TablesRoot::Local(d.path().join("delta"));
        let layout = Layout::Topic { topic: "t".into(), partitions: 2 };
        let open = |dir: &str| {
            DeltaTables::open(&root, &d.path().join(dir), DEFAULT_VACUUM_RETENTION_MS, false, &layout, &TableSet::seed()).unwrap()
        };
        let (mut a, mut b) = (open("a"), open("b"));
        let fa = [entry(0, 9, 0, "a1")];
        a.commit_all(&claimed(CommitKind::Append, &fa, &[], &[10, 0], Claim { partitions: &[0], expected: &[0] })).unwrap();
        let fb = [entry(0, 6, 0, "b1")];
        b.commit_all(&claimed(CommitKind::Append, &fb, &[], &[0, 7], Claim { partitions: &[1], expected: &[0] })).unwrap();
        assert_eq!(b.partition_offsets(0), [10, 7], "the second commit keeps the first's partition");
        let fa2 = [entry(10, 19, 0, "a2")];
        a.commit_all(&claimed(CommitKind::Append, &fa2, &[], &[20, 0], Claim { partitions: &[0], expected: &[10] })).unwrap();
        assert_eq!(a.partition_offsets(0), [20, 7]);
        assert_eq!(a.offsets()[0], 27);
        // b believes partition 0 is at 10 (it never held it): refused, nothing lands.
        let stale = [entry(10, 14, 0, "b2")];
        let refused = b.commit_all(&claimed(CommitKind::Append, &stale, &[], &[15, 7], Claim { partitions: &[0], expected: &[10] }));
        assert!(matches!(refused, Err(ProjectError::Conflict { .. })), "{refused:?}");
        // A reader not told the topic finds it in the table's metadata.
        let reader = DeltaTables::open_read_only(&root, d.path(), None, &TableSet::seed()).unwrap();
        assert_eq!(reader.partition_offsets(0), [20, 7]);
        assert_eq!(reader.files(0).iter().map(|f| f.rows).sum::<u64>(), 27, "every row once");
    }

    /// Two members that both believe they compact (a rebalance moved partition 0 between
    /// them) merge the same files: the second merge finds its inputs gone and is refused.
    /// Without that check, delta-rs would let it land and its rows would count twice.
    #[test]
    fn two_members_cannot_both_merge_the_same_files() {
        let d = tempfile::tempdir().unwrap();
        let root = TablesRoot::Local(d.path().join("delta"));
        let layout = Layout::Topic { topic: "t".into(), partitions: 1 };
        let open = |dir: &str| {
            DeltaTables::open(&root, &d.path().join(dir), DEFAULT_VACUUM_RETENTION_MS, false, &layout, &TableSet::seed()).unwrap()
        };
        let mut a = open("a");
        let inputs = [entry(0, 9, 0, "i1"), entry(10, 19, 0, "i2")];
        a.commit_all(&claimed(CommitKind::Append, &inputs, &[], &[20], Claim { partitions: &[0], expected: &[0] })).unwrap();
        let mut b = open("b");
        let none = Claim { partitions: &[], expected: &[] };
        let merged_a = [entry(0, 19, 1, "ma")];
        a.commit_all(&claimed(CommitKind::Compact, &merged_a, &inputs, &[20], none)).unwrap();
        let merged_b = [entry(0, 19, 1, "mb")];
        let second = b.commit_all(&claimed(CommitKind::Compact, &merged_b, &inputs, &[20], none));
        assert!(matches!(second, Err(ProjectError::Conflict { .. })), "{second:?}");
        // The same after b read the table again (a refresh between choosing its merge and
        // committing it): its first attempt lands on a version without its inputs, unless
        // the claim is checked before it too.
        b.reload().unwrap();
        let again = b.commit_all(&claimed(CommitKind::Compact, &merged_b, &inputs, &[20], none));
        assert!(matches!(again, Err(ProjectError::Conflict { .. })), "{again:?}");
        let reader = DeltaTables::open_read_only(&root, d.path(), Some(&layout), &TableSet::seed()).unwrap();
        let names: Vec<&str> = reader.files(0).iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, [merged_a[0].name.as_str()]);
        assert_eq!(reader.files(0).iter().map(|f| f.rows).sum::<u64>(), 20, "each row once");
        assert_eq!(reader.partition_offsets(0), [20], "a merge moves no partition");
    }

    #[test]
    fn file_names_round_trip() {
        let n = file_name(12, 3456, 2, "0123456789abcdef");
        assert_eq!(n, "part-000000000012-000000003456-2-0123456789abcdef.parquet");
        assert_eq!(parse_file_name(&n), Some((12, 3456, 2)));
        assert_eq!(parse_file_name("part-000000000012-000000003456.parquet"), None);
    }

    #[test]
    fn tables_roots_parse() {
        assert_eq!(TablesRoot::parse("s3://b/p/q/").unwrap(), TablesRoot::S3 { bucket: "b".into(), prefix: "p/q".into() });
        assert_eq!(TablesRoot::parse("s3://b").unwrap(), TablesRoot::S3 { bucket: "b".into(), prefix: "".into() });
        assert_eq!(TablesRoot::parse("file:///x/y").unwrap(), TablesRoot::Local("/x/y".into()));
        assert!(TablesRoot::parse("gs://b/p").is_err());
        assert!(TablesRoot::parse("s3:///p").is_err());
    }
}
