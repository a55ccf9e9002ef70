//! The sled-backed log under `DATA_DIR/log`, the embedded default: one partition, offsets
//! dense from 0, records grouped in blocks keyed by their first offset, group commit.
//! This file: the store (`Store`: opening, replaying the journal, syncing), `SledLog`
//! (the `EventLog` API, opening and closing) and the readers; `writer.rs` the writer
//! thread; `journal.rs` the journal it appends to.
//!
//! Invariants:
//! - Only its single writer thread writes the store (`writer.rs`).
//! - Offsets are dense: block `k` holds offsets `k..k+count`, and the next block's key is
//!   `k+count`.
//! - `durable_end` moves only after the `fdatasync` of the group's journal record (see
//!   [`journal`]); sled itself is flushed and synced in the background at a checkpoint,
//!   and on open after replaying the journal (sled 0.34's own flush ends in
//!   `sync_file_range`, which does not survive power loss, so an `fdatasync` follows it).
//!
//! One file for the store and its readers: they share the block layout and sled's
//! cache rules (`SLED_LRU_TOUCHES`); about a quarter of it is tests. The fuzz crate
//! compiles `src/log/` by path: nothing here may depend on the rest of questlog but
//! `event`.

mod journal;
mod writer;

use super::*;
use journal::Journal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use writer::{Dedup, Encoders, Writer};

/// Free bytes the log's filesystem must keep after an append, by default. Below it, appends
/// fail with [`LogError::NoSpace`] before sled writes a byte: sled 0.34 latches an I/O
/// error for the life of the database, so running it into ENOSPC costs a reopen (see
/// [`Writer::recover`]). 64 MiB holds a full group commit of ~300-byte events ten times
/// over and leaves the projector room to publish a step.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// Free bytes the log's filesystem needs before the log is opened, and before the writer
/// drops and reopens a failed store, whatever the reserve: sled writes a snapshot and new
/// segments (512 KiB each) when it closes and opens, and doing so on a full disk once left
/// a corrupt snapshot that made a later open read the log as empty (tests/disk_full.rs,
/// with the reserve off).
pub(crate) const REOPEN_MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;

/// A group flush that has not returned after this long is "kicked": the watchdog calls
/// flush on the same store from its own thread. sled 0.34 can leave a flush waiting for
/// good after a write error (it re-checks its error only when woken); a second flush
/// wakes it, and both return the error. A healthy fsync takes milliseconds, so 2 s never
/// kicks a working disk.
const FLUSH_KICK_MS: u64 = 2_000;

/// A group flush that has not returned after this long makes the log report itself
/// unwritable (`/healthz` 503) until it returns.
const FLUSH_STUCK_MS: u64 = 10_000;

const BLOCKS_TREE: &str = "blocks";
const REJECTED_TREE: &str = "rejected";
/// Catalogue records ([`CatalogRecord`]), keyed by sequence number like rejected events.
const CATALOGS_TREE: &str = "catalogs";

/// Event type schema records ([`SchemaRecord`]), keyed by sequence number.
const SCHEMAS_TREE: &str = "schemas";

/// A record kept beside the events, in force from the offset the next record takes:
/// (hash, canonical content).
enum Meta {
    Catalog(String, Vec<u8>),
    Schema(String, Vec<u8>),
}

struct Request {
    batch: AppendBatch,
    /// A record to keep before the batch's records.
    meta: Option<Meta>,
    reply: oneshot::Sender<Result<Appended, LogError>>,
}

#[derive(Default)]
struct Counters {
    flushes_total: AtomicU64,
    flush_errors_total: AtomicU64,
    flushed_records_total: AtomicU64,
    flush_batch_buckets: [AtomicU64; FLUSH_BATCH_BUCKETS.len()],
    flush_nanos_total: AtomicU64,
    /// Time in the `fdatasync`/`fsync` calls after sled's flush (part of `flush_nanos_total`).
    fsync_nanos_total: AtomicU64,
    rejected_total: AtomicU64,
    /// Catalogue records acknowledged (readers list no more than this many).
    catalogs_total: AtomicU64,
    /// Schema records acknowledged (readers list no more than this many).
    schemas_total: AtomicU64,
    reopens_total: AtomicU64,
    /// Why the log cannot take appends now; `None` when it can.
    unwritable: Mutex<Option<String>>,
    /// Whether the writer has refilled the dedup window (appends before it wait for it).
    refilled: std::sync::atomic::AtomicBool,
}

impl Counters {
    /// Records whether appends can succeed, logging each change (not each refusal).
    fn set_unwritable(&self, why: Option<String>) {
        let mut current = self.unwritable.lock().unwrap_or_else(|p| p.into_inner());
        match (&*current, &why) {
            (None, Some(reason)) => tracing::warn!(%reason, "the log cannot take appends"),
            (Some(_), None) => tracing::info!("the log takes appends again"),
            _ => {}
        }
        *current = why;
    }

    fn is_unwritable(&self) -> bool {
        self.unwritable.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// The open sled database and its two trees. Readers clone it (cheap: handles) for the
/// length of one read; the writer swaps it when it reopens after a storage failure.
#[derive(Clone)]
struct Store {
    db: ::sled::Db,
    blocks: ::sled::Tree,
    rejected: ::sled::Tree,
    catalogs: ::sled::Tree,
    schemas: ::sled::Tree,
    /// sled's segment file (`db`), for the `fdatasync` after each flush (see [`Store::sync`]).
    segments: Arc<std::fs::File>,
    dir: PathBuf,
}

/// The records of a tree whose entries hold one record each (catalogues, schemas), in key
/// order.
fn one_record_entries<T: Stored>(tree: &::sled::Tree, what: &str) -> Result<Vec<T>, LogError> {
    let mut out = Vec::new();
    for kv in tree.iter() {
        let (k, v) = kv?;
        let seq = key_offset(&k)?;
        let mut items: Vec<T> = decode_block(seq, &v)?;
        out.push(items.pop().ok_or_else(|| LogError::Corrupt { offset: seq, reason: format!("empty {what} entry") })?);
    }
    Ok(out)
}

/// Blob files already synced, with the length they had then.
type BlobsSeen = std::collections::BTreeMap<std::ffi::OsString, u64>;

/// sled's segment file in the log directory: every page sled writes goes there, except
/// pages over a quarter segment, which go to files under [`SLED_BLOBS_DIR`].
const SLED_SEGMENT_FILE: &str = "db";
const SLED_BLOBS_DIR: &str = "blobs";

/// Deletes snapshot files sled was still writing when its process died
/// (`snap.<lsn>.generating`). sled 0.34 takes them for finished snapshots (it skips only
/// `.in___motion` names), and one cut short fails its checksum and stops the log from
/// opening. The snapshot before it is removed only after the rename, so nothing is lost.
///
/// Only while no process holds the log (sled's lock on `db`, taken here for the moment of
/// looking): a process that holds it may be writing its snapshot right now.
fn remove_partial_snapshots(dir: &Path) {
    use fs2::FileExt;
    let Ok(db) = std::fs::File::open(dir.join(SLED_SEGMENT_FILE)) else { return };
    if db.try_lock_exclusive().is_err() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::warn!(file = %entry.path().display(), "removed a snapshot sled did not finish writing"),
                Err(e) => tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an unfinished sled snapshot"),
            }
        }
    }
}

/// `fsync` of a directory, so that the entries created or renamed in it survive power loss.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn io_error(e: std::io::Error) -> LogError {
    LogError::Storage(::sled::Error::Io(e))
}

/// sled segment size for new logs: 16× sled's default, so that a page (a tree leaf of up to
/// ~17 blocks of ~90 KB) stays under a quarter segment and is kept inline, where sled's
/// cache counts and evicts it, instead of in a blob file it never evicts (see
/// [`SLED_LRU_TOUCHES`]). Costs ~30% more disk (old page versions wait in segments for
/// sled's cleaner; 113 instead of 87 bytes per event at 10^7, still under half the
/// events' JSON).
const SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// The segment size to open the log in `dir` with: the one it was created with, from the
/// `conf` file sled writes (it refuses to open with another), or [`SEGMENT_BYTES`] for a
/// new log. Logs made before this setting keep sled's default of 512 KiB.
fn segment_size_for(dir: &Path) -> usize {
    std::fs::read(dir.join("conf"))
        .ok()
        .and_then(|conf| {
            String::from_utf8_lossy(&conf).lines().find_map(|l| l.strip_prefix("segment_size: ").and_then(|n| n.trim().parse().ok()))
        })
        .unwrap_or(SEGMENT_BYTES)
}

impl Store {
    fn open(dir: &Path) -> Result<Store, LogError> {
        remove_partial_snapshots(dir);
        let db = ::sled::Config::new()
            .path(dir)
            .segment_size(segment_size_for(dir))
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(None)
            .mode(::sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match &e {
                ::sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") => {
                    LogError::Locked { path: dir.to_path_buf() }
                }
                _ => LogError::Open { path: dir.to_path_buf(), source: e },
            })?;
        let blocks = db.open_tree(BLOCKS_TREE)?;
        let rejected = db.open_tree(REJECTED_TREE)?;
        let catalogs = db.open_tree(CATALOGS_TREE)?;
        let schemas = db.open_tree(SCHEMAS_TREE)?;
        // sled (0.34) creates its files and renames its snapshot without syncing their
        // directories, and writes `conf` without an fsync: make all of that durable once,
        // here, before anything is acknowledged.
        let open_err = |e: std::io::Error| LogError::Open { path: dir.to_path_buf(), source: ::sled::Error::Io(e) };
        let segments = std::fs::File::open(dir.join(SLED_SEGMENT_FILE)).map_err(open_err)?;
        let store = Store { db, blocks, rejected, catalogs, schemas, segments: Arc::new(segments), dir: dir.to_path_buf() };
        // The segment file and every blob (none seen yet), as after each group commit.
        store.sync(&mut BlobsSeen::new(), &AtomicU64::new(0))?;
        if let Ok(conf) = std::fs::File::open(dir.join("conf")) {
            conf.sync_all().map_err(open_err)?;
        }
        sync_dir(dir).map_err(open_err)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(open_err)?;
        }
        Ok(store)
    }

    /// Opens the store in `dir` and replays its journal into it: every record the journal
    /// holds is put into sled again (the same keys and values), sled is synced, and only
    /// then are the journal files removed. Returns the store and the number for the next
    /// journal file.
    fn open_and_replay(dir: &Path) -> Result<(Store, u64), LogError> {
        let store = Store::open(dir)?;
        let journal_dir = dir.join(journal::JOURNAL_DIR);
        let replayed = journal::replay(&journal_dir, |tree, key, value| {
            let tree = match tree {
                journal::Tree::Blocks => &store.blocks,
                journal::Tree::Rejected => &store.rejected,
                journal::Tree::Catalogs => &store.catalogs,
                journal::Tree::Schemas => &store.schemas,
            };
            tree.insert(key, value)?;
            Ok(())
        })
        .map_err(|e| match e {
            journal::ReplayError::Apply(e) => e,
            other => LogError::Journal(other.to_string()),
        })?;
        if replayed.files > 0 {
            store.sync(&mut BlobsSeen::new(), &AtomicU64::new(0))?;
            journal::remove_through(&journal_dir, replayed.last_sequence)
                .map_err(|e| LogError::Journal(format!("removing replayed files from {}: {e}", journal_dir.display())))?;
            if replayed.records > 0 {
                tracing::info!(
                    files = replayed.files,
                    records = replayed.records,
                    writes = replayed.entries,
                    "replayed the log's journal (groups acknowledged since the last checkpoint)"
                );
            }
            if replayed.torn_bytes > 0 {
                tracing::warn!(
                    torn_bytes = replayed.torn_bytes,
                    "the journal ended in a group cut short (the process stopped while writing it; never acknowledged); skipped"
                );
            }
        }
        Ok((store, replayed.last_sequence + 1))
    }

    /// Flushes what sled holds and makes it durable: on return `Ok`, every write sled made
    /// so far is on stable storage, as far as the disk honours `fdatasync`.
    ///
    /// sled 0.34's own `flush` on Linux ends in `sync_file_range`, which neither flushes
    /// the disk's write cache nor the file's size (segments are appended at its end), nor
    /// syncs the blob files it writes for pages over a quarter segment (spacejam/sled#1452).
    /// So after it: `fdatasync` of the segment file, then `fsync` of every blob file not
    /// seen before and of the blobs directory. Called at open (after replaying the
    /// journal), at each checkpoint and at close, not per group (the journal is synced
    /// per group).
    ///
    /// A blob is synced again whenever its length changed since it was last synced (sled
    /// may be writing one from another thread while this runs); sled writes a blob whole
    /// before the log entry that points to it, so the flush that makes it live finds it
    /// complete. A blob sled deleted meanwhile is skipped.
    fn sync(&self, blobs_seen: &mut BlobsSeen, fsync_nanos: &AtomicU64) -> Result<(), LogError> {
        self.db.flush()?;
        let started = Instant::now();
        self.segments.sync_data().map_err(io_error)?;
        let blobs = self.dir.join(SLED_BLOBS_DIR);
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        match std::fs::read_dir(&blobs) {
            Ok(entries) => {
                let mut present = BlobsSeen::new();
                let mut new = false;
                for entry in entries {
                    let entry = entry.map_err(io_error)?;
                    let name = entry.file_name();
                    let synced = std::fs::File::open(entry.path()).and_then(|f| {
                        let len = f.metadata()?.len();
                        if blobs_seen.get(&name) != Some(&len) {
                            f.sync_all()?;
                            new = true;
                        }
                        Ok(len)
                    });
                    match synced {
                        Ok(len) => {
                            present.insert(name, len);
                        }
                        Err(e) if gone(&e) => {}
                        Err(e) => return Err(io_error(e)),
                    }
                }
                if new {
                    sync_dir(&blobs).map_err(io_error)?;
                }
                *blobs_seen = present;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        fsync_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The catalogue records stored, oldest first.
    fn catalog_records(&self) -> Result<Vec<CatalogRecord>, LogError> {
        one_record_entries(&self.catalogs, "catalogue")
    }

    /// The schema records stored, oldest first.
    fn schema_records(&self) -> Result<Vec<SchemaRecord>, LogError> {
        one_record_entries(&self.schemas, "schema")
    }

    /// One past the last stored offset, and the next rejected-event sequence number.
    fn ends(&self) -> Result<(u64, u64), LogError> {
        let end = match self.blocks.last()? {
            None => 0,
            Some((k, v)) => {
                let first = key_offset(&k)?;
                first + u64::from(block_count(first, &v)?)
            }
        };
        // Rejected events are kept in blocks keyed by their first sequence number (one
        // event per entry before blocks; a block of one reads the same).
        let next_rejected = match self.rejected.last()? {
            None => 0,
            Some((k, v)) => {
                let first = key_offset(&k)?;
                first + u64::from(block_count(first, &v)?)
            }
        };
        Ok((end, next_rejected))
    }
}

/// The store readers use; `None` while the writer reopens it.
type SharedStore = Arc<RwLock<Option<Store>>>;

/// What the flush watchdog watches: when the writer's current flush began, and when the
/// running checkpoint's sync of sled began.
#[derive(Default)]
struct FlushWatch {
    /// Milliseconds since `epoch` when the running flush began, plus one; 0 when idle.
    started_ms: AtomicU64,
    /// The same for a checkpoint's (or the closing) sync of sled: kicked like a flush, but
    /// appends do not wait for it, so it never makes the log report itself unwritable.
    checkpoint_started_ms: AtomicU64,
    stop: AtomicBool,
}

impl FlushWatch {
    /// Runs `sync` with `checkpoint_started_ms` set, so the watchdog can kick it.
    fn watch_checkpoint<T>(&self, epoch: Instant, sync: impl FnOnce() -> T) -> T {
        self.checkpoint_started_ms.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let out = sync();
        self.checkpoint_started_ms.store(0, Ordering::SeqCst);
        out
    }
}

/// Runs until `watch.stop`: kicks a flush that has run longer than [`FLUSH_KICK_MS`] (once
/// per flush, from a thread of its own, since the kick can block too), and reports the
/// log unwritable once one has run longer than [`FLUSH_STUCK_MS`].
fn flush_watchdog(watch: Arc<FlushWatch>, shared: SharedStore, counters: Arc<Counters>, epoch: Instant) {
    let mut kicked_flush = 0;
    let mut kicked_checkpoint = 0;
    let kick = |shared: &SharedStore, waited_ms: u64, what: &'static str| {
        let store = shared.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(store) = store {
            tracing::warn!(waited_ms, "{what} is stuck; kicking it");
            let _ = std::thread::Builder::new().name("questlog-log-kick".into()).spawn(move || {
                let _ = store.db.flush();
            });
        }
    };
    while !watch.stop.load(Ordering::SeqCst) {
        std::thread::park_timeout(Duration::from_millis(FLUSH_KICK_MS / 4));
        let now = epoch.elapsed().as_millis() as u64 + 1;
        let checkpoint = watch.checkpoint_started_ms.load(Ordering::SeqCst);
        if checkpoint != 0 && now.saturating_sub(checkpoint) > FLUSH_KICK_MS && kicked_checkpoint != checkpoint {
            kicked_checkpoint = checkpoint;
            kick(&shared, now - checkpoint, "a checkpoint's sync of the log");
        }
        let started = watch.started_ms.load(Ordering::SeqCst);
        if started == 0 {
            continue;
        }
        let waited_ms = now.saturating_sub(started);
        if waited_ms > FLUSH_STUCK_MS {
            counters.set_unwritable(Some(format!(
                "a log flush has not returned for {} s; if it stays so, restart `questlog serve` (acknowledged events are safe on disk)",
                waited_ms / 1000
            )));
        }
        if waited_ms > FLUSH_KICK_MS && kicked_flush != started {
            kicked_flush = started;
            kick(&shared, waited_ms, "a log flush");
        }
    }
}

/// Options of [`SledLog::open_with`].
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Appends fail with [`LogError::NoSpace`] when the log's filesystem has fewer free
    /// bytes than this (0 turns the check off).
    pub min_free_bytes: u64,
    /// Journal bytes after which sled is synced in the background and the journal files
    /// it covers removed (see [`journal::CHECKPOINT_BYTES`], the default).
    pub checkpoint_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { min_free_bytes: DEFAULT_MIN_FREE_BYTES, checkpoint_bytes: journal::CHECKPOINT_BYTES }
    }
}

/// The sled-backed log under `DATA_DIR/log`.
pub struct SledLog {
    store: SharedStore,
    /// The log's directory and the free space its writer keeps (for `stats`).
    dir: PathBuf,
    min_free_bytes: u64,
    tx: Mutex<Option<mpsc::SyncSender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
    flush_watch: Arc<FlushWatch>,
    end_rx: watch::Receiver<u64>,
    counters: Arc<Counters>,
    closed: AtomicBool,
}

fn block_key(offset: u64) -> [u8; 8] {
    offset.to_be_bytes()
}

fn key_offset(key: &[u8]) -> Result<u64, LogError> {
    let bytes: [u8; 8] =
        key.try_into().map_err(|_| LogError::Corrupt { offset: 0, reason: format!("block key of {} bytes, expected 8", key.len()) })?;
    Ok(u64::from_be_bytes(bytes))
}

impl SledLog {
    /// Queues a catalogue or schema record, to be kept in the next group commit.
    fn record_meta(&self, meta: Meta) -> Result<Pending, LogError> {
        let (reply, rx) = oneshot::channel();
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard.as_ref().ok_or(LogError::Closed)?;
        let batch = AppendBatch { records: Vec::new(), rejected: Vec::new() };
        match tx.try_send(Request { batch, meta: Some(meta), reply }) {
            Ok(()) => Ok(Pending::new(rx)),
            Err(mpsc::TrySendError::Full(_)) => Err(LogError::Busy),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(LogError::Closed),
        }
    }

    /// Opens (or creates) the log in `dir` with default options and starts its writer.
    pub fn open(dir: &Path) -> Result<Arc<SledLog>, LogError> {
        SledLog::open_with(dir, LogOptions::default())
    }

    /// Opens (or creates) the log in `dir` and starts its writer thread.
    pub fn open_with(dir: &Path, options: LogOptions) -> Result<Arc<SledLog>, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::Open { path: dir.to_path_buf(), source: ::sled::Error::Io(e) })?;
        // sled writes while it opens; opened on a full disk it can leave a corrupt snapshot
        // and then read the log as empty. Refuse instead.
        if let Ok(free) = fs2::available_space(dir) {
            if free < REOPEN_MIN_FREE_BYTES {
                return Err(LogError::NoSpaceToOpen { path: dir.to_path_buf(), free_bytes: free });
            }
        }
        let (store, journal_sequence) = Store::open_and_replay(dir)?;
        let (end, next_rejected) = store.ends()?;
        let journal = Journal::create(&dir.join(journal::JOURNAL_DIR), journal_sequence).map_err(io_error)?;

        // The dedup window is refilled from the log's tail by the writer before its first
        // append, so commands that only read never pay for it.
        let dedup = Dedup::new();
        let (end_tx, end_rx) = watch::channel(end);
        let (tx, rx) = mpsc::sync_channel::<Request>(MAX_QUEUED_APPENDS);
        let counters = Arc::new(Counters::default());
        counters.rejected_total.store(next_rejected, Ordering::Relaxed);
        let catalogs = store.catalog_records()?;
        counters.catalogs_total.store(catalogs.len() as u64, Ordering::Relaxed);
        let schemas = store.schema_records()?;
        counters.schemas_total.store(schemas.len() as u64, Ordering::Relaxed);
        let shared: SharedStore = Arc::new(RwLock::new(Some(store.clone())));
        let flush_watch = Arc::new(FlushWatch::default());
        let epoch = Instant::now();
        let writer = Writer {
            flush_watch: flush_watch.clone(),
            epoch,
            dir: dir.to_path_buf(),
            min_free_bytes: options.min_free_bytes,
            store: Some(store),
            shared: shared.clone(),
            failed: None,
            next_offset: end,
            next_rejected,
            next_catalog: catalogs.len() as u64,
            latest_catalog: catalogs.last().map(|c| c.hash.clone()),
            next_schema: schemas.len() as u64,
            schema_hashes: schemas.into_iter().map(|s| s.hash).collect(),
            end_tx,
            counters: counters.clone(),
            dedup,
            refilled: false,
            stuck: false,
            blobs_seen: Default::default(),
            encoders: Encoders::start(),
            journal: Some(journal),
            checkpoint: None,
            checkpoint_bytes: options.checkpoint_bytes.max(1),
            last_checkpoint: Instant::now(),
            checkpoint_failures: 0,
            checkpoint_not_before: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("questlog-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::Open { path: dir.to_path_buf(), source: ::sled::Error::Io(e) })?;
        let (watch2, shared2, counters2) = (flush_watch.clone(), shared.clone(), counters.clone());
        let watchdog = std::thread::Builder::new()
            .name("questlog-log-watchdog".into())
            .spawn(move || flush_watchdog(watch2, shared2, counters2, epoch))
            .map_err(|e| LogError::Open { path: dir.to_path_buf(), source: ::sled::Error::Io(e) })?;
        tracing::info!(path = %dir.display(), durable_end = end, "log opened");
        Ok(Arc::new(SledLog {
            store: shared,
            dir: dir.to_path_buf(),
            min_free_bytes: options.min_free_bytes,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            watchdog: Mutex::new(Some(watchdog)),
            flush_watch,
            end_rx,
            counters,
            closed: AtomicBool::new(false),
        }))
    }

    /// The current store, for one read.
    fn store(&self) -> Result<Store, LogError> {
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        guard.clone().ok_or_else(|| {
            LogError::Recovering(self.counters.unwritable.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default())
        })
    }
}

impl EventLog for SledLog {
    fn append(&self, batch: AppendBatch) -> Result<Pending, LogError> {
        if batch.records.len() > MAX_APPEND_RECORDS {
            return Err(LogError::TooLarge(batch.records.len()));
        }
        let (reply, rx) = oneshot::channel();
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard.as_ref().ok_or(LogError::Closed)?;
        match tx.try_send(Request { batch, meta: None, reply }) {
            Ok(()) => Ok(Pending::new(rx)),
            Err(mpsc::TrySendError::Full(_)) => Err(LogError::Busy),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(LogError::Closed),
        }
    }

    fn durable_end(&self) -> u64 {
        *self.end_rx.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.end_rx.clone()
    }

    fn read(&self, from: u64, to: u64) -> Result<RecordIter<'_>, LogError> {
        TreeReader { blocks: self.store()?.blocks, end: self.durable_end() }.read(from, to)
    }

    fn read_blocks(&self, from: u64, to: u64) -> Result<Option<BlockIter<'_>>, LogError> {
        Ok(Some(Box::new(TreeReader { blocks: self.store()?.blocks, end: self.durable_end() }.blocks(from, to)?)))
    }

    fn record_catalog(&self, hash: String, content: Vec<u8>) -> Result<Pending, LogError> {
        self.record_meta(Meta::Catalog(hash, content))
    }

    fn catalogs(&self) -> Result<Vec<CatalogRecord>, LogError> {
        let acknowledged = self.counters.catalogs_total.load(Ordering::Acquire) as usize;
        let mut all = self.store()?.catalog_records()?;
        all.truncate(acknowledged);
        Ok(all)
    }

    fn record_schema(&self, hash: String, content: Vec<u8>) -> Result<Pending, LogError> {
        self.record_meta(Meta::Schema(hash, content))
    }

    fn schemas(&self) -> Result<Vec<SchemaRecord>, LogError> {
        let acknowledged = self.counters.schemas_total.load(Ordering::Acquire) as usize;
        let mut all = self.store()?.schema_records()?;
        all.truncate(acknowledged);
        Ok(all)
    }

    fn rejected(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, RejectedEvent)>, LogError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let store = self.store()?;
        let acknowledged = self.counters.rejected_total.load(Ordering::Relaxed);
        // The block holding `from_seq` starts at or before it.
        let start = match store.rejected.range(..=block_key(from_seq)).next_back() {
            Some(kv) => key_offset(&kv?.0)?,
            None => from_seq,
        };
        for kv in store.rejected.range(block_key(start)..) {
            let (k, v) = kv?;
            let first = key_offset(&k)?;
            if first >= acknowledged {
                break;
            }
            let items: Vec<RejectedEvent> = decode_block(first, &v)?;
            if items.is_empty() {
                return Err(LogError::Corrupt { offset: first, reason: "empty rejected-event entry".into() });
            }
            for (seq, item) in (first..).zip(items) {
                if seq >= from_seq {
                    out.push((seq, item));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            durable_end: self.durable_end(),
            rejected_total: c.rejected_total.load(Ordering::Relaxed),
            size_on_disk_bytes: self.store().ok().and_then(|s| s.db.size_on_disk().ok()).unwrap_or(0),
            flushes_total: c.flushes_total.load(Ordering::Relaxed),
            flush_errors_total: c.flush_errors_total.load(Ordering::Relaxed),
            flushed_records_total: c.flushed_records_total.load(Ordering::Relaxed),
            flush_batch_buckets: c.flush_batch_buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            flush_seconds_total: c.flush_nanos_total.load(Ordering::Relaxed) as f64 / 1e9,
            fsync_seconds_total: c.fsync_nanos_total.load(Ordering::Relaxed) as f64 / 1e9,
            unwritable: c.unwritable.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            reopens_total: c.reopens_total.load(Ordering::Relaxed),
            free_bytes: fs2::available_space(&self.dir).ok(),
            reserve_bytes: self.min_free_bytes,
        }
    }

    fn unwritable(&self) -> Option<String> {
        self.counters.unwritable.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn prepare_for_appends(&self) {
        // An empty batch: the writer takes it as its first group, refilling the window
        // before anything else (see `Writer::ready`); nobody waits for its answer.
        let _ = self.append(AppendBatch::default());
    }

    fn starting(&self) -> Option<String> {
        (!self.counters.refilled.load(Ordering::Acquire))
            .then(|| format!("refilling the dedup window from the log's last {DEDUP_WINDOW_EVENTS} events; appends wait for it"))
    }

    fn close(&self) -> Result<(), LogError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Dropping the sender lets the writer drain what is queued, then exit.
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
        self.flush_watch.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.watchdog.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.thread().unpark();
            let _ = h.join();
        }
        // Every acknowledged group is in the journal; the writer synced sled and removed
        // the journal as it stopped (`Writer::finish`), unless the store had failed.
        Ok(())
    }
}

impl Drop for SledLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// How often a block just read is looked up again, so that sled's cache can evict.
///
/// sled 0.34's cache (`cache_capacity`) did not bound a scan of the log: replaying 10^7
/// events grew to ~700 MB, ~70 bytes per event read, without end (spacejam/sled#1036).
/// Two causes, one fix each:
///
/// * sled counts page accesses in 256 queues (by page id) and only looks at a queue, and
///   evicts, once it holds 64 accesses. A scan reads each of the log's few large pages a
///   handful of times, so most queues never filled. Looking each block up again fills
///   them as the scan goes; a lookup is a cached descent of a shallow tree, far cheaper
///   than decoding the block's ~1,000 records.
/// * Pages over a quarter of a segment are stored as separate blob files, and the cache
///   counts a blob page as the few bytes of its pointer, so it never evicted them. New
///   logs use [`SEGMENT_BYTES`] segments, which keep the log's pages inline.
///
/// With both, replaying 10^7 events peaks at ~250–310 MB (BENCHMARKS.md; benches/HISTORY.md,
/// item 13).
const SLED_LRU_TOUCHES: usize = 16;

/// How often a block just written is looked up, for the same reason as
/// [`SLED_LRU_TOUCHES`]: without, sled's cache kept what `generate` wrote and its memory
/// grew with the log (10^7 events: 580–626 MiB peak); with 4 lookups, 404–408 MiB, at
/// ~10% of its speed (the lookups let sled evict, and it splits nodes on them); with 1 or
/// 2, 531–608 MiB (benches/HISTORY.md, item 32).
const SLED_WRITE_TOUCHES: usize = 4;

/// Looks `key` up `times` times, so that sled counts the accesses and its cache can evict
/// (see [`SLED_LRU_TOUCHES`]).
fn touch(tree: &::sled::Tree, key: &[u8], times: usize) -> ::sled::Result<()> {
    for _ in 0..times {
        tree.get(key)?;
    }
    Ok(())
}

/// Reads a sled block tree up to a durable end.
struct TreeReader {
    blocks: ::sled::Tree,
    end: u64,
}

impl TreeReader {
    fn read(&self, from: u64, to: u64) -> Result<RecordIter<'static>, LogError> {
        let to = to.min(self.end);
        Ok(Box::new(BlockReader { blocks: self.blocks(from, to)?, current: (0..).zip(Vec::new()), to, zstd: None }))
    }

    /// The blocks holding `from..to`, clamped to the durable end.
    fn blocks(&self, from: u64, to: u64) -> Result<RawBlocks, LogError> {
        let end = self.end;
        let to = to.min(end);
        if from > end {
            return Err(LogError::OutOfRange { requested: from, end });
        }
        // The block holding `from` is the last one keyed at or before it.
        let start = match self.blocks.range(..=block_key(from)).next_back() {
            Some(kv) if from < to => key_offset(&kv?.0)?,
            _ => from,
        };
        let inner = self.blocks.range(block_key(start)..block_key(to.max(start)));
        Ok(RawBlocks { inner, tree: self.blocks.clone(), from, to, expected: start, failed: false })
    }
}

/// Lists stored blocks in order, checking that their offsets are dense and reach `to`.
struct RawBlocks {
    inner: ::sled::Iter,
    /// The tree `inner` reads, to touch each block read (see [`SLED_LRU_TOUCHES`]).
    tree: ::sled::Tree,
    from: u64,
    to: u64,
    /// Key the next block must have (dense offsets).
    expected: u64,
    failed: bool,
}

impl RawBlocks {
    fn next_block(&mut self) -> Result<Option<RawBlock>, LogError> {
        if self.expected >= self.to {
            return Ok(None);
        }
        let Some(kv) = self.inner.next() else {
            return Err(LogError::Corrupt {
                offset: self.expected,
                reason: format!("log ends at offset {} before {}", self.expected, self.to),
            });
        };
        let (k, v) = kv?;
        touch(&self.tree, &k, SLED_LRU_TOUCHES)?;
        let first = key_offset(&k)?;
        if first != self.expected {
            return Err(LogError::Corrupt {
                offset: self.expected,
                reason: format!("gap in the log: next block starts at offset {first}"),
            });
        }
        let count = block_count(first, &v)?;
        if count == 0 {
            return Err(LogError::Corrupt { offset: first, reason: "empty block".into() });
        }
        self.expected = first + u64::from(count);
        Ok(Some(RawBlock { first, wanted: first.max(self.from)..self.expected.min(self.to), bytes: v }))
    }
}

impl Iterator for RawBlocks {
    type Item = Result<RawBlock, LogError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.next_block().transpose();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// Streams records block by block, each block decoded into owned records.
struct BlockReader {
    blocks: RawBlocks,
    current: std::iter::Zip<std::ops::RangeFrom<u64>, std::vec::IntoIter<Record>>,
    to: u64,
    /// One zstd context for all the blocks read: `serve`'s projector reads a group
    /// commit's small block at a time, and a context made per block (~100 KB, zeroed)
    /// showed in its profile.
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl Iterator for BlockReader {
    type Item = Result<(u64, Record), LogError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            for (offset, record) in self.current.by_ref() {
                if offset >= self.to {
                    return None;
                }
                if offset >= self.blocks.from {
                    return Some(Ok((offset, record)));
                }
            }
            let block = match self.blocks.next()? {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            match decode_block_in::<Record>(&mut self.zstd, block.first, &block.bytes) {
                Ok(records) => self.current = (block.first..).zip(records),
                Err(e) => {
                    self.blocks.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ClientEvent, Payload, RequestMeta};

    pub(crate) fn record(i: i64) -> Record {
        Record {
            received_at_us: i,
            meta: RequestMeta::default(),
            raw_event: format!("{{\"i\":{i}}}"),
            event: ClientEvent {
                event_id: Some(format!("e{i}")),
                player_id: None,
                session_id: None,
                event_time_us: None,
                payload: Payload::JoinGuild { guild_id: i, name: "g".into() },
            },
        }
    }

    fn rejected_event(i: u32) -> RejectedEvent {
        RejectedEvent {
            received_at_us: i64::from(i),
            meta: RequestMeta::default(),
            index: i,
            raw: format!("bad {i}"),
            rejection: crate::event::Rejection::new(crate::event::RejectReason::NotAnObject, None, format!("not an object {i}")),
        }
    }

    /// A schema record takes effect at the offset the next record takes, a schema the log
    /// holds already is no change, and both survive a clean reopen and a crash (the
    /// journal's record of the group, replayed).
    #[test]
    fn schema_records_take_effect_at_the_next_offset_once_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |from: u64, h: &str| SchemaRecord {
            from_offset: from,
            hash: format!("sha256:{h}"),
            content: format!("{{\"{h}\":1}}").into_bytes(),
            from_partitions: Vec::new(),
        };
        let put = |log: &SledLog, r: &SchemaRecord| log.record_schema(r.hash.clone(), r.content.clone()).unwrap().wait().unwrap();
        let want = vec![rec(3, "a"), rec(5, "b")];
        {
            let log = SledLog::open(dir.path()).unwrap();
            log.append(AppendBatch { records: (0..3).map(record).collect(), rejected: vec![] }).unwrap().wait().unwrap();
            put(&log, &rec(3, "a"));
            put(&log, &rec(3, "a"));
            log.append(AppendBatch { records: (3..5).map(record).collect(), rejected: vec![] }).unwrap().wait().unwrap();
            put(&log, &rec(5, "b"));
            // A catalogue is kept apart, with the same hash even.
            log.record_catalog("sha256:a".into(), b"catalogue".to_vec()).unwrap().wait().unwrap();
            put(&log, &rec(5, "a"));
            assert_eq!(log.schemas().unwrap(), want);
            assert_eq!(log.catalogs().unwrap().len(), 1);
            assert_eq!(log.durable_end(), 5, "schema records take no offset");
            log.close().unwrap();
        }
        {
            let log = SledLog::open(dir.path()).unwrap();
            assert_eq!(log.schemas().unwrap(), want);
            put(&log, &rec(5, "b"));
            assert_eq!(log.schemas().unwrap(), want, "after a reopen the log still knows what it holds");
            log.close().unwrap();
        }
        // A group that only reached the journal before the process died.
        {
            let mut j = Journal::create(&dir.path().join(journal::JOURNAL_DIR), 100).unwrap();
            j.begin();
            j.add(journal::Tree::Schemas, &block_key(2), &encode_block(&[rec(5, "c")]));
            j.commit().unwrap();
        }
        let log = SledLog::open(dir.path()).unwrap();
        let mut with_c = want.clone();
        with_c.push(rec(5, "c"));
        assert_eq!(log.schemas().unwrap(), with_c);
    }

    /// Rejected events are kept a request's worth to a block (of up to MAX_BLOCK_RECORDS),
    /// among entries of one event each that older stores hold: every listing, from any
    /// sequence number, with any limit, gives each event once, in order, after a reopen too.
    #[test]
    fn rejected_events_in_blocks_read_from_any_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SledLog::open(dir.path()).unwrap();
            // An older store's entries: one event each, keyed 0, 1, 2.
            let store = log.store().unwrap();
            for i in 0..3u32 {
                store.rejected.insert(block_key(u64::from(i)), encode_block(std::slice::from_ref(&rejected_event(i)))).unwrap();
            }
            store.db.flush().unwrap();
            drop(store);
            log.close().unwrap();
        }
        let log = SledLog::open(dir.path()).unwrap();
        assert_eq!(log.stats().rejected_total, 3, "the next sequence number follows the old entries");
        // A request of 2,500 rejected events (three blocks), then one of 4.
        for (n, base) in [(2_500u32, 3u32), (4, 2_503)] {
            let rejected = (0..n).map(|i| rejected_event(base + i)).collect();
            log.append(AppendBatch { records: vec![], rejected }).unwrap().wait().unwrap();
        }
        let total = 2_507u64;
        assert_eq!(log.stats().rejected_total, total);
        for (from, limit) in [(0, 10), (2, 5), (999, 3), (1_002, 1_200), (2_502, 100), (2_506, 10), (2_507, 10), (0, 5_000)] {
            let got = log.rejected(from, limit).unwrap();
            let want: Vec<u64> = (from..total).take(limit).collect();
            assert_eq!(got.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), want, "from {from}, limit {limit}");
            assert!(got.iter().all(|(seq, r)| r.raw == format!("bad {seq}")), "from {from}");
        }
        log.close().unwrap();
        drop(log);
        let log = SledLog::open(dir.path()).unwrap();
        assert_eq!(log.stats().rejected_total, total, "the next sequence number after a reopen counts the blocks' events");
        assert_eq!(log.rejected(2_500, 3).unwrap().len(), 3);
    }

    #[test]
    fn append_read_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SledLog::open(dir.path()).unwrap();
            let mut pend = Vec::new();
            for chunk in 0..5 {
                let records = (0..700).map(|i| record(chunk * 700 + i)).collect();
                pend.push(log.append(AppendBatch { records, rejected: vec![] }).unwrap());
            }
            let ranges: Vec<_> = pend.into_iter().map(|p| p.wait().unwrap().offsets).collect();
            assert_eq!(ranges[0], 0..700);
            assert_eq!(ranges[4], 2800..3500);
            assert_eq!(log.durable_end(), 3500);
            log.close().unwrap();
        }
        let log = SledLog::open(dir.path()).unwrap();
        assert_eq!(log.durable_end(), 3500);
        for from in [0u64, 1, 999, 1000, 1001, 3499] {
            let got: Vec<_> = log.read(from, u64::MAX).unwrap().map(|r| r.unwrap()).collect();
            assert_eq!(got.len() as u64, 3500 - from);
            for (o, r) in got {
                assert_eq!(r, record(o as i64));
            }
        }
        let some: Vec<_> = log.read(10, 20).unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(some, (10..20).collect::<Vec<_>>());
        assert!(matches!(log.read(3501, 4000), Err(LogError::OutOfRange { .. })));
    }

    /// What a crash leaves: groups acknowledged (their journal record synced) that sled
    /// never flushed, and a group cut short while being written. Opening replays the one
    /// and skips the other, and removes the replayed file.
    #[test]
    fn a_journal_left_by_a_crash_is_replayed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let log = SledLog::open(dir).unwrap();
            log.append(AppendBatch { records: (0..10).map(record).collect(), rejected: vec![] }).unwrap().wait().unwrap();
            log.close().unwrap();
        }
        let journal_dir = dir.join(journal::JOURNAL_DIR);
        assert!(journal::files(&journal_dir).unwrap().is_empty(), "a clean close leaves no journal");
        {
            let mut j = Journal::create(&journal_dir, 7).unwrap();
            j.begin();
            j.add(journal::Tree::Blocks, &block_key(10), &encode_block(&(10..15).map(record).collect::<Vec<_>>()));
            j.add(journal::Tree::Rejected, &block_key(0), &encode_block(&[rejected_event(0)]));
            j.commit().unwrap();
            j.begin();
            j.add(journal::Tree::Blocks, &block_key(15), &encode_block(&(15..20).map(record).collect::<Vec<_>>()));
            j.commit().unwrap();
            let file = journal_dir.join(format!("{:020}", 7));
            let whole = std::fs::read(&file).unwrap();
            // The second group cut short: the process died while writing it.
            std::fs::write(&file, &whole[..j.len() as usize - 3]).unwrap();
        }
        let log = SledLog::open(dir).unwrap();
        assert_eq!(log.durable_end(), 15);
        let got: Vec<_> = log.read(0, u64::MAX).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(got, (0..15).map(|o| (o, record(o as i64))).collect::<Vec<_>>());
        assert_eq!(log.rejected(0, 10).unwrap().len(), 1);
        // The replayed file is gone; appends go to a newer one.
        let files: Vec<u64> = journal::files(&journal_dir).unwrap().into_iter().map(|f| f.0).collect();
        assert_eq!(files, [8]);
        let next = log.append(AppendBatch { records: (15..20).map(record).collect(), rejected: vec![] }).unwrap().wait().unwrap();
        assert_eq!(next.offsets, 15..20);
    }

    /// The checkpoint tests, one at a time: one of them sets a failpoint every checkpoint
    /// of the process passes.
    static CHECKPOINT_TESTS: Mutex<()> = Mutex::new(());

    /// A checkpoint whose sync fails removes nothing, and the store is reopened (the
    /// journal replayed into sled, sled synced again) before the next group: a second
    /// sync could report success for writes the first one lost.
    #[test]
    fn a_failed_checkpoint_reopens_the_store_and_keeps_every_group() {
        let _alone = CHECKPOINT_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let options = LogOptions { checkpoint_bytes: 2 * 1024, ..LogOptions::default() };
        let log = SledLog::open_with(dir, options).unwrap();
        fail::cfg("log.checkpoint", &format!("return({})", dir.display())).unwrap();
        let appended = (0..100).map(|i| {
            let records = (i * 50..(i + 1) * 50).map(record).collect();
            log.append(AppendBatch { records, rejected: vec![] }).and_then(|p| p.wait())
        });
        let refused = appended.filter(|a| a.is_err()).count();
        fail::remove("log.checkpoint");
        assert!(log.stats().reopens_total >= 1, "no reopen after failed checkpoints ({refused} appends refused)");
        // Every group was acknowledged or refused; the acknowledged ones are all there,
        // densely, after the reopens and after a clean close.
        let end = log.durable_end();
        assert_eq!(end, (100 - refused as u64) * 50);
        log.close().unwrap();
        drop(log);
        let log = SledLog::open(dir).unwrap();
        assert_eq!(log.durable_end(), end);
        assert_eq!(log.read(0, u64::MAX).unwrap().count() as u64, end);
    }

    /// Checkpoints sync sled and remove the journal files behind them while appends go
    /// on, so the journal stays near its threshold; everything stays readable after a
    /// reopen.
    #[test]
    fn checkpoints_keep_the_journal_short() {
        let _alone = CHECKPOINT_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let journal_dir = dir.join(journal::JOURNAL_DIR);
        let options = LogOptions { checkpoint_bytes: 2 * 1024, ..LogOptions::default() };
        let mut most_files = 0;
        {
            let log = SledLog::open_with(dir, options).unwrap();
            for i in 0..200 {
                let records = (i * 50..(i + 1) * 50).map(record).collect();
                log.append(AppendBatch { records, rejected: vec![] }).unwrap().wait().unwrap();
                most_files = most_files.max(journal::files(&journal_dir).unwrap().len());
            }
            let newest = journal::files(&journal_dir).unwrap().last().map(|f| f.0).unwrap();
            assert!(newest > 10, "only {newest} journal files were started: no checkpoints?");
            log.close().unwrap();
        }
        // One file being written and one a checkpoint is removing, at most one more
        // between a checkpoint's end and the next group.
        assert!(most_files <= 3, "{most_files} journal files at once");
        assert!(journal::files(&journal_dir).unwrap().is_empty());
        let log = SledLog::open(dir).unwrap();
        assert_eq!(log.durable_end(), 10_000);
        let got: Vec<_> = log.read(9_990, u64::MAX).unwrap().map(|r| r.unwrap().1).collect();
        assert_eq!(got, (9_990..10_000).map(record).collect::<Vec<_>>());
    }

    #[test]
    fn logs_keep_the_segment_size_they_were_made_with() {
        let conf = |dir: &Path| String::from_utf8_lossy(&std::fs::read(dir.join("conf")).unwrap()).into_owned();
        let new = tempfile::tempdir().unwrap();
        SledLog::open(new.path()).unwrap().close().unwrap();
        assert!(conf(new.path()).contains(&format!("segment_size: {SEGMENT_BYTES}")), "{}", conf(new.path()));

        // A log made with sled's default segments (before SEGMENT_BYTES) still opens.
        let old = tempfile::tempdir().unwrap();
        {
            let db = ::sled::Config::new().path(old.path()).open().unwrap();
            db.open_tree(BLOCKS_TREE).unwrap();
            db.flush().unwrap();
        }
        assert!(conf(old.path()).contains("segment_size: 524288"), "{}", conf(old.path()));
        for round in 0..2 {
            let log = SledLog::open(old.path()).unwrap();
            let records = (0..3).map(|i| record(round * 3 + i)).collect();
            log.append(AppendBatch { records, rejected: vec![] }).unwrap().wait().unwrap();
            let got: Vec<_> = log.read(0, u64::MAX).unwrap().map(|r| r.unwrap().1).collect();
            assert_eq!(got, (0..round * 3 + 3).map(record).collect::<Vec<_>>());
            log.close().unwrap();
        }
        assert!(conf(old.path()).contains("segment_size: 524288"));
    }

    #[test]
    fn duplicate_event_ids_are_dropped_across_batches_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SledLog::open(dir.path()).unwrap();
            let a = log.append(AppendBatch { records: vec![record(1), record(2), record(1)], rejected: vec![] }).unwrap().wait().unwrap();
            assert_eq!(a.offsets, 0..2);
            assert_eq!(a.duplicates, vec![2]);
            log.close().unwrap();
        }
        let log = SledLog::open(dir.path()).unwrap();
        let b = log.append(AppendBatch { records: vec![record(2), record(3)], rejected: vec![] }).unwrap().wait().unwrap();
        assert_eq!(b.offsets, 2..3);
        assert_eq!(b.duplicates, vec![0]);
        let mut no_id = record(2);
        no_id.event.event_id = None;
        let c = log.append(AppendBatch { records: vec![no_id.clone(), no_id], rejected: vec![] }).unwrap().wait().unwrap();
        assert_eq!(c.offsets, 3..5, "events without an id are never deduplicated");
    }

    #[test]
    fn duplicate_event_ids_are_scoped_by_app() {
        let dir = tempfile::tempdir().unwrap();
        let of_app = |app: Option<&str>, i| {
            let mut r = record(i);
            r.meta.app = app.map(Into::into);
            r
        };
        {
            let log = SledLog::open(dir.path()).unwrap();
            let records = vec![of_app(Some("a"), 1), of_app(Some("b"), 1), of_app(None, 1), of_app(Some("a"), 1)];
            let got = log.append(AppendBatch { records, rejected: vec![] }).unwrap().wait().unwrap();
            assert_eq!(got.offsets, 0..3, "the same id from apps a, b and no app: three events");
            assert_eq!(got.duplicates, vec![3]);
            log.close().unwrap();
        }
        // The window refilled from the log keeps the apps apart too.
        let log = SledLog::open(dir.path()).unwrap();
        let records = vec![of_app(Some("b"), 1), of_app(Some("c"), 1)];
        let got = log.append(AppendBatch { records, rejected: vec![] }).unwrap().wait().unwrap();
        assert_eq!(got.offsets, 3..4);
        assert_eq!(got.duplicates, vec![0]);
    }

    #[test]
    fn format_1_blocks_are_still_read() {
        // A block as questlog wrote it before `RequestMeta::app`.
        #[derive(serde::Serialize)]
        struct MetaV1 {
            accept: Option<String>,
            host: Option<String>,
            user_agent: Option<String>,
        }
        #[derive(serde::Serialize)]
        struct RecordV1 {
            received_at_us: i64,
            meta: MetaV1,
            raw_event: String,
            event: ClientEvent,
        }
        let r = record(7);
        let old = vec![RecordV1 {
            received_at_us: r.received_at_us,
            meta: MetaV1 { accept: Some("*/*".into()), host: None, user_agent: None },
            raw_event: r.raw_event.clone(),
            event: r.event.clone(),
        }];
        let mut bytes = encode_block(&old);
        bytes[0] = 1;
        let got: Vec<Record> = decode_block(3, &bytes).unwrap();
        assert_eq!(got[0].event, r.event);
        assert_eq!(got[0].meta.accept.as_deref(), Some("*/*"));
        assert_eq!(got[0].meta.app, None);
    }

    #[test]
    fn corrupt_block_is_detected() {
        let mut bytes = encode_block(&[record(1), record(2)]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        assert!(matches!(decode_block::<Record>(5, &bytes), Err(LogError::Corrupt { offset: 5, .. })));
        let mut v = encode_block(&[record(1)]);
        v[0] = 99;
        let err = decode_block::<Record>(0, &v).unwrap_err().to_string();
        assert!(err.contains("version 99"), "{err}");
    }
}
