//! The event log: what every log implementation promises ([`EventLog`]), its errors and
//! batch types, and the block format records are stored in.
//!
//! Implementations: [`sled`] (the embedded default under `DATA_DIR/log`: one partition,
//! offsets dense from 0, blocks keyed by their first offset as Kafka groups records in
//! batches, group commit with a real fsync) and [`kafka`] (a Kafka-protocol topic of
//! one or more partitions).
//!
//! Invariants:
//! - Only this module writes the log.
//! - Within a partition, offsets only grow and nothing is ever rewritten in place.
//! - Readers never see a record that is not yet durable (sled: reads stop at
//!   [`EventLog::durable_end`], which moves only after the flush that covers it; Kafka:
//!   the broker's high watermark, which covers only records every in-sync replica has).
//! - Every sled block carries a format version, a codec and a CRC32; a block that fails
//!   either check is reported as [`LogError::Corrupt`] with its offset, never returned as data.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{oneshot, watch};

use crate::event::{Record, RecordView, RejectedEvent};

// The fuzz crate (`fuzz/`, built with `--cfg fuzzing`) compiles this folder by path for
// the block format, without librdkafka.
#[cfg(not(fuzzing))]
mod copies;
pub mod kafka;
pub mod sled;

#[cfg(not(fuzzing))]
pub use self::copies::{read_schema_copies, write_schema_copies, SCHEMA_COPIES_FILE};
pub use self::kafka::{KafkaLog, KafkaTarget};
use self::sled::REOPEN_MIN_FREE_BYTES;
pub use self::sled::{LogOptions, SledLog, DEFAULT_MIN_FREE_BYTES};

/// Format of a stored block. Bumped when [`Record`]'s encoding changes; readers refuse
/// versions they do not know instead of misreading them. Version 1 (before the API key's
/// app name) is still read; version 2 is written.
pub const BLOCK_FORMAT_VERSION: u8 = 2;
const OLDEST_READ_VERSION: u8 = 1;

/// What blocks hold: the current form, and how to read the form of version 1.
pub trait Stored: Serialize + DeserializeOwned {
    type V1: DeserializeOwned + Into<Self>;
}

impl Stored for Record {
    type V1 = crate::event::v1::Record;
}

impl Stored for RejectedEvent {
    type V1 = crate::event::v1::RejectedEvent;
}

/// A store catalogue the log was given (`serve --catalog`, `generate --catalog`): the
/// purchases from `from_offset` on were checked against it, until the next one. `content`
/// is its canonical form and `hash` names it (`crate::catalog` makes both; the log keeps
/// them as given). Swapping the catalogue is a record in the log, so replay, rebuild and
/// `check` see which one was in force at every offset, never the file as it is now.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct CatalogRecord {
    pub from_offset: u64,
    pub hash: String,
    pub content: Vec<u8>,
    /// On a Kafka log, the offset of each partition of the events' topic it is in force
    /// from ([`kafka::side::in_force`]; `from_offset` is their sum); empty on sled, whose
    /// one order `from_offset` is. Not stored by the sled log.
    #[serde(skip)]
    pub from_partitions: Vec<u64>,
}

impl Stored for CatalogRecord {
    type V1 = CatalogRecord;
}

/// Whether a catalogue or schema record in force from `from_offset` — on a Kafka log, from
/// `from_partitions` — is in force for a reader at `offset` (sled), or at `partitions` (a
/// topic's, the next offset of each: [`kafka::side::in_force`]).
pub fn record_in_force(from_offset: u64, from_partitions: &[u64], offset: u64, partitions: &[u64]) -> bool {
    if from_partitions.is_empty() {
        from_offset <= offset
    } else {
        kafka::side::in_force(from_partitions, partitions)
    }
}

/// An event type schema the log was given (`schema add`): events of its type are checked
/// against it, and its table has its columns, from `from_offset` on. `content` is its
/// canonical form and `hash` names it (`crate::schema` makes both; the log keeps them as
/// given). Recorded in the log like a catalogue, so replay, rebuild, time travel and
/// `check` never read the file again and the same log always projects the same tables.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SchemaRecord {
    pub from_offset: u64,
    pub hash: String,
    pub content: Vec<u8>,
    /// As [`CatalogRecord::from_partitions`].
    #[serde(skip)]
    pub from_partitions: Vec<u64>,
}

impl Stored for SchemaRecord {
    type V1 = SchemaRecord;
}

/// Most records in one block. Measured on sled 0.34: blocks of ~100–1,000 events reach
/// 0.3–0.7M durable events/s and scan at GB/s, one key per event only 55–80k/s.
pub const MAX_BLOCK_RECORDS: usize = 1_000;

/// Most records one group commit (one flush) covers. Bounds the writer's memory and the
/// latency the first waiter of a group can see.
pub const MAX_GROUP_RECORDS: usize = 64 * 1024;

/// Most appends waiting for the writer. Past this, [`EventLog::append`] answers
/// [`LogError::Busy`] at once (the API turns it into 503) instead of queueing without bound.
pub const MAX_QUEUED_APPENDS: usize = 4_096;

/// Most records one append may carry (the API's per-request limit is below this).
pub const MAX_APPEND_RECORDS: usize = 1_000_000;

/// How many of the most recent `event_id`s the log remembers to drop re-sent events
/// (a client retry, a second `replay --url`). The sled log keeps them in two generations
/// of 2^21-bucket tables (~34 MiB each), so it remembers at least this many and at most
/// twice; they cover minutes of peak ingest or days of a game's traffic.
pub const DEDUP_WINDOW_EVENTS: usize = 1_000_000;
/// zstd level for block payloads: level 1 compresses JSON-heavy blocks 4–6× at several
/// hundred MB/s per core, far faster than the disk syncs it saves.
const ZSTD_LEVEL: i32 = 1;

/// Largest decoded block accepted from disk; guards the decoder against a corrupt length.
const MAX_DECODED_BLOCK_BYTES: usize = 256 * 1024 * 1024;

const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// version (1) + codec (1) + record count (4) + CRC32 of the stored payload (4).
const BLOCK_HEADER_BYTES: usize = 10;
/// Errors of the log, with the context a user needs to act.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open the log at {path}: {source}")]
    Open { path: PathBuf, source: ::sled::Error },
    #[error("the log at {path} is in use by another process (is `questlog serve` running on this data dir?)")]
    Locked { path: PathBuf },
    #[error("log storage error: {0}")]
    Storage(#[from] ::sled::Error),
    #[error("the log could not make the batch durable: {0}")]
    Flush(String),
    #[error("the disk is full; nothing of the batch was acknowledged ({0})")]
    NoSpace(String),
    #[error("cannot open the log at {path}: {free_bytes} bytes free on its filesystem, {REOPEN_MIN_FREE_BYTES} needed to open it safely (sled writes while it opens); free space first")]
    NoSpaceToOpen { path: PathBuf, free_bytes: u64 },
    #[error("the log's append queue is full; retry shortly")]
    Busy,
    #[error("the log is shut down")]
    Closed,
    #[error("corrupt log block at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("an append of {0} records is over the limit of {MAX_APPEND_RECORDS}")]
    TooLarge(usize),
    #[error("offset {requested} is past the end of the log ({end})")]
    OutOfRange { requested: u64, end: u64 },
    #[error("the log is reopening its storage after a failure ({0}); retry shortly")]
    Recovering(String),
    #[error("{0}")]
    BadLogUrl(String),
    #[error("Kafka log {topic} at {brokers}: {message}")]
    Kafka { brokers: String, topic: String, message: String },
    #[error("the Kafka brokers did not acknowledge the batch ({0}); nothing of it was acknowledged, retry shortly")]
    NotAcknowledged(String),
    #[error("the log has {0} partitions: read them one at a time (replay --partition)")]
    Partitioned(u32),
    #[error("{0}")]
    Unsupported(String),
    /// A record another writer's came before and this one clashes with (a Kafka log's
    /// schema records: [`kafka::side`]).
    #[error("{0}")]
    Conflict(String),
    #[error("cannot replay the log's journal: {0}")]
    Journal(String),
    #[error("the copy of the log's schema records at {path}: {reason}")]
    SchemaCopies { path: PathBuf, reason: String },
}

impl LogError {
    /// True when the storage failed for lack of space (ENOSPC).
    pub fn is_no_space(&self) -> bool {
        match self {
            LogError::NoSpace(_) | LogError::NoSpaceToOpen { .. } => true,
            LogError::Storage(::sled::Error::Io(e)) | LogError::Open { source: ::sled::Error::Io(e), .. } => {
                e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
            }
            _ => false,
        }
    }
}

/// What one append carries: accepted records (to get offsets) and rejected events (kept
/// as dead letters). Both are made durable by the same flush.
#[derive(Debug, Default)]
pub struct AppendBatch {
    pub records: Vec<Record>,
    pub rejected: Vec<RejectedEvent>,
}

/// The result of a successful append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offsets given to the batch's new records, contiguous, in the order given (a
    /// single-partition log); empty for a partitioned log, which fills `positions`.
    pub offsets: Range<u64>,
    /// For a partitioned log (Kafka): each accepted record's (partition, offset), in the
    /// order given. Empty for a single-partition log.
    pub positions: Vec<(u32, u64)>,
    /// Indices (in the batch) of records skipped because their `event_id` was already
    /// in the log within the last [`DEDUP_WINDOW_EVENTS`] events.
    pub duplicates: Vec<u32>,
}

/// A pending append; resolves when the flush covering it has finished.
pub struct Pending {
    records: oneshot::Receiver<Result<Appended, LogError>>,
    /// A second store that must also confirm (the Kafka log's local rejected-event store).
    rejected: Option<oneshot::Receiver<Result<Appended, LogError>>>,
}

impl Pending {
    pub(crate) fn new(records: oneshot::Receiver<Result<Appended, LogError>>) -> Pending {
        Pending { records, rejected: None }
    }

    /// A write that was acknowledged before its call returned (nothing appended to the
    /// events: a Kafka log's side record).
    pub(crate) fn done() -> Pending {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(Appended { offsets: 0..0, positions: Vec::new(), duplicates: Vec::new() }));
        Pending::new(rx)
    }

    /// Waits on this thread (not for use inside an async task).
    pub fn wait(self) -> Result<Appended, LogError> {
        let appended = self.records.blocking_recv().unwrap_or(Err(LogError::Closed))?;
        if let Some(rx) = self.rejected {
            rx.blocking_recv().unwrap_or(Err(LogError::Closed))?;
        }
        Ok(appended)
    }

    /// Waits asynchronously.
    pub async fn wait_async(self) -> Result<Appended, LogError> {
        let appended = self.records.await.unwrap_or(Err(LogError::Closed))?;
        if let Some(rx) = self.rejected {
            rx.await.unwrap_or(Err(LogError::Closed))?;
        }
        Ok(appended)
    }
}

/// Counters and figures of the log, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct LogStats {
    pub durable_end: u64,
    pub rejected_total: u64,
    pub size_on_disk_bytes: u64,
    pub flushes_total: u64,
    pub flush_errors_total: u64,
    /// Sum of records per flush (with `flushes_total`, the mean group size).
    pub flushed_records_total: u64,
    /// Histogram of records per flush: counts for `<= FLUSH_BATCH_BUCKETS[i]`.
    pub flush_batch_buckets: Vec<u64>,
    pub flush_seconds_total: f64,
    /// Of `flush_seconds_total`, the time in `fdatasync`/`fsync` after sled's own flush.
    pub fsync_seconds_total: f64,
    /// Why appends fail right now (disk full, storage failed and not yet reopened), or
    /// `None` when the log takes appends.
    pub unwritable: Option<String>,
    /// Times the writer reopened the store after a storage failure.
    pub reopens_total: u64,
    /// Free bytes on the log's filesystem (`None`: not a local log, or it cannot say), and
    /// the reserve appends keep there.
    pub free_bytes: Option<u64>,
    pub reserve_bytes: u64,
}

/// The key of `event_id` as sent by `app` (the API key's app; `None` without keys) for
/// dropping re-sent events: ids are scoped by app, so two games that both number their
/// events from "evt-1" never drop each other's events. A 128-bit hash (SipHash with fixed
/// keys, twice): the same id hashes the same in every process.
pub fn event_id_key(app: Option<&str>, event_id: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut a = std::hash::DefaultHasher::new();
    (0u8, app, event_id).hash(&mut a);
    let mut b = std::hash::DefaultHasher::new();
    (1u8, app, event_id).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Upper bounds of the flush batch size histogram.
pub const FLUSH_BATCH_BUCKETS: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, u64::MAX];

/// An iterator over `(offset, record)` in offset order.
pub type RecordIter<'a> = Box<dyn Iterator<Item = Result<(u64, Record), LogError>> + Send + 'a>;

/// A stored value as a scan finds it: a record, or (a value that does not decode in the
/// scan's [`ValueFormat`]) why not, as a rejected event.
pub type Scanned = Result<Record, RejectedEvent>;

/// An iterator over `(offset, value)` of one partition, in offset order.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<(u64, Scanned), LogError>> + Send + 'a>;

/// The form of the values in a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// What questlog writes: blocks (sled), or the JSON of [`crate::wire::write_value`]
    /// with the header `questlog-format: json-1` (Kafka).
    Questlog,
    /// The seed's Flask API's messages on a Kafka topic: the event's members with the
    /// request's headers merged in ([`crate::event::validate_seed_message`]).
    Seed,
}

impl ValueFormat {
    pub fn parse(s: &str) -> Option<ValueFormat> {
        match s {
            "questlog" => Some(ValueFormat::Questlog),
            "seed" => Some(ValueFormat::Seed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ValueFormat::Questlog => "questlog",
            ValueFormat::Seed => "seed",
        }
    }
}

/// A durable, ordered log of [`Record`]s. The seam where another log (Kafka, say) plugs in.
///
/// Durability: when the [`Pending`] of [`append`](EventLog::append) resolves to `Ok`,
/// every record of that batch (and every rejected event in it) has been written and the
/// storage has confirmed a flush to stable storage (`fsync`) that covers it; the records
/// hold exactly the offsets in `Appended::offsets`, are visible to readers, and survive a
/// crash or power loss of a disk that honours `fsync`. An `Err` acknowledges nothing:
/// none of the records may be assumed stored (after a crash some may be found, never
/// at other offsets than those the log would give them).
pub trait EventLog: Send + Sync + 'static {
    /// Queues `batch` for the next group commit. Fails at once with [`LogError::Busy`]
    /// when [`MAX_QUEUED_APPENDS`] appends are already waiting.
    fn append(&self, batch: AppendBatch) -> Result<Pending, LogError>;
    /// One past the last durable offset: the number of durable records.
    fn durable_end(&self) -> u64;
    /// Watches `durable_end`, for followers.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// Records from `from` up to `to` (exclusive; clamped to `durable_end`), streamed a
    /// block at a time.
    fn read(&self, from: u64, to: u64) -> Result<RecordIter<'_>, LogError>;
    /// The stored blocks that hold `from..to` (clamped to `durable_end`), undecoded, for
    /// readers that decode on several threads ([`map_blocks`]); `None` when the log has no
    /// such blocks (a Kafka topic holds one JSON value per record). The blocks' offsets are
    /// checked to be dense as they are listed; their CRCs when each is opened.
    fn read_blocks(&self, from: u64, to: u64) -> Result<Option<BlockIter<'_>>, LogError> {
        let _ = (from, to);
        Ok(None)
    }
    /// How many partitions the log has (a sled log has one).
    fn partitions(&self) -> u32 {
        1
    }
    /// The first offset partition `p` still holds and one past its last durable record,
    /// as the brokers say now (Kafka: the low and high watermarks; retention and
    /// DeleteRecords move the first). A sled log's one partition: 0 and `durable_end`.
    fn partition_bounds(&self, p: u32) -> Result<(u64, u64), LogError> {
        match p {
            0 => Ok((0, self.durable_end())),
            _ => Err(LogError::OutOfRange { requested: u64::from(p), end: 1 }),
        }
    }
    /// Whether the log is this process's own (sled) rather than shared with other nodes
    /// (Kafka): only then do `durable_end` and `read` describe the whole log.
    fn is_local(&self) -> bool {
        true
    }
    /// Records of partition `p` from offset `from` up to `to` (exclusive), as far as the
    /// partition's durable end the reader reaches. A partition's offsets grow but may skip
    /// numbers (a Kafka topic's, not a sled log's).
    fn read_partition(&self, p: u32, from: u64, to: u64) -> Result<RecordIter<'_>, LogError> {
        match p {
            0 => self.read(from, to),
            _ => Err(LogError::OutOfRange { requested: u64::from(p), end: 1 }),
        }
    }
    /// Values of partition `p` from offset `from` up to `to` (exclusive), as
    /// [`read_partition`](EventLog::read_partition) reads them, except that a value that
    /// does not decode in `format` is an item of the scan (a projection keeps it as a
    /// rejected event and goes on) rather than the end of it. A sled log holds only
    /// questlog's own format.
    fn scan_partition(&self, p: u32, from: u64, to: u64, format: ValueFormat) -> Result<ScanIter<'_>, LogError> {
        if format != ValueFormat::Questlog {
            return Err(LogError::BadLogUrl(format!("a sled log holds questlog's records, not values in the {} format", format.as_str())));
        }
        Ok(Box::new(self.read_partition(p, from, to)?.map(|item| item.map(|(offset, record)| (offset, Ok(record))))))
    }
    /// Records that the purchases appended after it are checked against the catalogue
    /// `hash` (canonical form `content`), in effect from the offset the next record takes,
    /// unless it is the latest recorded already. Ordered with appends: it takes effect
    /// between the groups queued before and after it. `Ok` means the same as for
    /// [`append`](EventLog::append): durable (sled: covered by the group commit's fsync).
    /// A Kafka log records it in its side topic, in force from every partition's end
    /// when written (`from_partitions`), and `Ok` once the brokers acknowledged it.
    fn record_catalog(&self, hash: String, content: Vec<u8>) -> Result<Pending, LogError> {
        let _ = (hash, content);
        Err(LogError::Unsupported("this log keeps no store catalogues".into()))
    }
    /// Every catalogue in force, in the order recorded (so by `from_offset`; on a Kafka
    /// log, by `from_partitions`, each at least its predecessor's in every partition).
    fn catalogs(&self) -> Result<Vec<CatalogRecord>, LogError> {
        Ok(Vec::new())
    }
    /// Records the event type schema `hash` (canonical form `content`), in force from the
    /// offset the next record takes, unless the log holds that schema already (then `Ok`
    /// and nothing recorded). Ordered with appends like
    /// [`record_catalog`](EventLog::record_catalog), and durable on `Ok` the same way.
    /// The caller checks the schema against those recorded before (`schema::check_against`)
    /// and keeps registrations one at a time. Only the sled log keeps schemas.
    fn record_schema(&self, hash: String, content: Vec<u8>) -> Result<Pending, LogError> {
        let _ = (hash, content);
        Err(LogError::Unsupported(
            "event type schemas are kept by the sled log only for now; a Kafka log takes the seed's five types".into(),
        ))
    }
    /// Every schema recorded, in the order recorded (so by `from_offset`).
    fn schemas(&self) -> Result<Vec<SchemaRecord>, LogError> {
        Ok(Vec::new())
    }
    /// [`schemas`](EventLog::schemas) and [`catalogs`](EventLog::catalogs) as of one read
    /// (a Kafka log reads its side topic once for both).
    fn schemas_and_catalogs(&self) -> Result<(Vec<SchemaRecord>, Vec<CatalogRecord>), LogError> {
        Ok((self.schemas()?, self.catalogs()?))
    }
    /// Rejected events with sequence numbers `>= from_seq`, at most `limit` of them.
    fn rejected(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, RejectedEvent)>, LogError>;
    fn stats(&self) -> LogStats;
    /// Why appends fail right now (disk under the reserve, storage failed and reopening),
    /// or `None` when they can succeed. Cheap: for health checks.
    fn unwritable(&self) -> Option<String>;
    /// Starts now, in the background, the work the first append would otherwise wait for
    /// (the sled log: refilling its dedup window from the log's tail), for a server that
    /// is about to take appends. Commands that only read never call it, and never pay.
    fn prepare_for_appends(&self) {}
    /// `None` once appends are answered at their normal speed; else what the log is still
    /// doing (for `/healthz`'s `starting`). Cheap.
    fn starting(&self) -> Option<String> {
        None
    }
    /// Joins the consumer group `group` to read the partitions it gives this member, from
    /// the offsets `starts` names for each — or, with no group, reads every partition from
    /// there (Kafka only). `to_end`: the reader stops at the partitions' ends (a one-shot
    /// `project`), so the brokers answer a fetch at the end at once rather than holding it.
    fn join_group(&self, group: Option<&str>, starts: kafka::group::StartsFn, to_end: bool) -> Result<kafka::group::GroupMember, LogError> {
        let _ = (group, starts, to_end);
        Err(LogError::Unsupported("consumer groups are a Kafka log's: a sled log has one projector".into()))
    }
    /// Finishes queued appends, flushes, and stops the writer. Later appends fail.
    fn close(&self) -> Result<(), LogError>;
}

/// Records per chunk handed from the prefetching thread to the consumer.
const PREFETCH_CHUNK_RECORDS: usize = 1_024;
/// Chunks in flight between the two threads: bounds the memory of a prefetch.
const PREFETCH_CHUNKS: usize = 8;

/// Runs `records` (decoding blocks) on a helper thread and gives each record to `f` on this
/// thread, in order, so decoding and consuming use a core each. Stops at the first error
/// from either side.
pub fn for_each_prefetched<T: Send, E: From<LogError>>(
    records: Box<dyn Iterator<Item = Result<(u64, T), LogError>> + Send + '_>,
    mut f: impl FnMut(u64, T) -> Result<(), E>,
) -> Result<(), E> {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<(u64, T)>, LogError>>(PREFETCH_CHUNKS);
        scope.spawn(move || send_chunks(records, &tx));
        for chunk in rx {
            for (offset, record) in chunk? {
                f(offset, record)?;
            }
        }
        Ok(())
    })
}

/// Sends `records` to `tx` in chunks of [`PREFETCH_CHUNK_RECORDS`], the first error as the
/// last item; stops when the receiver is gone (the consumer stopped).
fn send_chunks<T>(records: impl Iterator<Item = Result<(u64, T), LogError>>, tx: &mpsc::SyncSender<Result<Vec<(u64, T)>, LogError>>) {
    let mut chunk = Vec::with_capacity(PREFETCH_CHUNK_RECORDS);
    for item in records {
        match item {
            Ok(x) => {
                chunk.push(x);
                if chunk.len() == PREFETCH_CHUNK_RECORDS {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(PREFETCH_CHUNK_RECORDS));
                    if tx.send(Ok(full)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk));
    }
}

/// Partitions read at once by [`for_each_partition_prefetched`]: the one being consumed
/// and the next, each on a thread of its own, so that the next one's round trips (its
/// consumer's start, the wait for its end) and decoding overlap the current one's (read
/// one after another, a topic's projection waited for each in turn: 1.2× faster at 5·10^5
/// records of 3 partitions, BENCHMARKS.md). Four were no faster on two cores.
pub const PARALLEL_PARTITION_READS: usize = 2;

/// Chunks of [`PREFETCH_CHUNK_RECORDS`] a partition's reader runs ahead of the consumer
/// (as [`for_each_prefetched`]'s).
const PARTITION_PREFETCH_CHUNKS: usize = PREFETCH_CHUNKS;

/// What [`for_each_partition_prefetched`] hands its consumer, in order: for each source,
/// `Begin`, its items, `End`.
pub enum PartitionItem<T> {
    Begin(usize),
    Item(usize, u64, T),
    End(usize),
}

/// Reads sources `0..n` (a topic's partitions: `open(p)` opens the reader of source `p`)
/// and hands their items to `f` in order — all of source 0, then 1, … — while up to
/// [`PARALLEL_PARTITION_READS`] of them are read at once, each on a thread of its own, at
/// most [`PARTITION_PREFETCH_CHUNKS`] chunks ahead. The first error ends it.
pub fn for_each_partition_prefetched<'a, T: Send, E: From<LogError>>(
    n: usize,
    open: impl Fn(usize) -> Result<Box<dyn Iterator<Item = Result<(u64, T), LogError>> + Send + 'a>, LogError> + Sync,
    mut f: impl FnMut(PartitionItem<T>) -> Result<(), E>,
) -> Result<(), E> {
    type Chunks<T> = mpsc::Receiver<Result<Vec<(u64, T)>, LogError>>;
    std::thread::scope(|scope| {
        let open = &open;
        let mut readers: Vec<Option<Chunks<T>>> = (0..n).map(|_| None).collect();
        let start = |p: usize, readers: &mut Vec<Option<Chunks<T>>>| {
            let (tx, rx) = mpsc::sync_channel::<Result<Vec<(u64, T)>, LogError>>(PARTITION_PREFETCH_CHUNKS);
            readers[p] = Some(rx);
            scope.spawn(move || match open(p) {
                Ok(records) => send_chunks(records, &tx),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            });
        };
        for p in 0..n {
            for ahead in p..n.min(p + PARALLEL_PARTITION_READS) {
                if readers[ahead].is_none() {
                    start(ahead, &mut readers);
                }
            }
            f(PartitionItem::Begin(p))?;
            let rx = readers[p].take().expect("started above");
            for chunk in rx {
                for (offset, item) in chunk? {
                    f(PartitionItem::Item(p, offset, item))?;
                }
            }
            f(PartitionItem::End(p))?;
        }
        Ok(())
    })
}

/// Stored blocks as [`EventLog::read_blocks`] lists them.
pub type BlockIter<'a> = Box<dyn Iterator<Item = Result<RawBlock, LogError>> + Send + 'a>;

/// One stored block as read from the log, not yet checked or decoded, and which of its
/// records a reader asked for.
pub struct RawBlock {
    /// Offset of the block's first record.
    pub first: u64,
    /// The records wanted: offsets `wanted`, within the block's.
    pub wanted: Range<u64>,
    pub bytes: ::sled::IVec,
}

/// Decodes stored blocks into records whose text borrows from the block, reusing its
/// zstd context and buffer from one block to the next: reading a record allocates
/// nothing but the block's list of views. One per thread.
pub struct BlockDecoder {
    zstd: zstd::bulk::Decompressor<'static>,
    plain: Vec<u8>,
}

impl BlockDecoder {
    pub fn new() -> Result<BlockDecoder, LogError> {
        let zstd = zstd::bulk::Decompressor::new()
            .map_err(|e| LogError::Corrupt { offset: 0, reason: format!("cannot start a zstd decoder: {e}") })?;
        Ok(BlockDecoder { zstd, plain: Vec::new() })
    }

    /// The wanted records of `raw`, each with its offset, after checking the block's
    /// version, CRC and record count.
    pub fn views<'a>(&'a mut self, raw: &'a RawBlock) -> Result<impl Iterator<Item = (u64, RecordView<'a>)> + 'a, LogError> {
        let (version, count) = decompress(&mut self.zstd, raw, &mut self.plain)?;
        let plain: &[u8] = if raw.bytes[1] == CODEC_NONE { &raw.bytes[BLOCK_HEADER_BYTES..] } else { &self.plain };
        decode_views(raw.first, version, count, plain, raw.wanted.clone())
    }

    /// `raw` checked and decompressed into `buffer` (its old contents dropped), to decode
    /// on another thread with [`PlainBlock::views`].
    pub fn decompress(&mut self, raw: &RawBlock, mut buffer: Vec<u8>) -> Result<PlainBlock, LogError> {
        let (version, count) = decompress(&mut self.zstd, raw, &mut buffer)?;
        if raw.bytes[1] == CODEC_NONE {
            buffer.clear();
            buffer.extend_from_slice(&raw.bytes[BLOCK_HEADER_BYTES..]);
        }
        Ok(PlainBlock { first: raw.first, wanted: raw.wanted.clone(), version, count, bytes: buffer })
    }
}

/// A block checked and decompressed ([`BlockDecoder::decompress`]).
pub struct PlainBlock {
    pub first: u64,
    pub wanted: Range<u64>,
    version: u8,
    count: usize,
    /// The bincode payload; give it back to [`BlockDecoder::decompress`] to reuse it.
    pub bytes: Vec<u8>,
}

impl PlainBlock {
    /// The wanted records, each with its offset, their text borrowed from the block.
    pub fn views(&self) -> Result<impl Iterator<Item = (u64, RecordView<'_>)> + '_, LogError> {
        decode_views(self.first, self.version, self.count, &self.bytes, self.wanted.clone())
    }
}

/// Checks `raw`'s header and CRC and, for a zstd block, decompresses its payload into
/// `plain`: (version, record count).
fn decompress(zstd: &mut zstd::bulk::Decompressor<'static>, raw: &RawBlock, plain: &mut Vec<u8>) -> Result<(u8, usize), LogError> {
    let offset = raw.first;
    let corrupt = |reason: String| LogError::Corrupt { offset, reason };
    let (version, count, payload) = block_header(offset, &raw.bytes)?;
    match raw.bytes[1] {
        CODEC_NONE => {}
        CODEC_ZSTD => {
            let size = zstd_content_size(offset, payload)?;
            plain.clear();
            plain.reserve(size);
            zstd.decompress_to_buffer(payload, plain).map_err(|e| corrupt(format!("zstd: {e}")))?;
            // A reused buffer has room past `size`; a payload that decodes to more than
            // its frame states (several frames) is refused here as `decode_block` does.
            if plain.len() != size {
                return Err(corrupt(format!("block decodes to {} bytes, its frame says {size}", plain.len())));
            }
        }
        c => return Err(corrupt(format!("unknown codec {c}"))),
    }
    Ok((version, count))
}

/// Decodes a block's bincode payload into views borrowing from it; keeps the `wanted`.
fn decode_views(
    offset: u64,
    version: u8,
    count: usize,
    plain: &[u8],
    wanted: Range<u64>,
) -> Result<impl Iterator<Item = (u64, RecordView<'_>)> + '_, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { offset, reason };
    let (records, used): (Vec<RecordView<'_>>, usize) = if version == 1 {
        let (old, used): (Vec<crate::event::v1::Record<&str>>, usize) =
            bincode::serde::borrow_decode_from_slice(plain, bincode_config()).map_err(|e| corrupt(format!("decode (format 1): {e}")))?;
        (old.into_iter().map(Into::into).collect(), used)
    } else {
        bincode::serde::borrow_decode_from_slice(plain, bincode_config()).map_err(|e| corrupt(format!("decode: {e}")))?
    };
    check_decoded(offset, plain.len(), used, count, records.len())?;
    Ok((offset..).zip(records).filter(move |(offset, _)| wanted.contains(offset)))
}

/// Threads that decode blocks for [`map_blocks`]: one per core, at most this many (past
/// it the single consumer is the bound).
const MAX_DECODE_THREADS: usize = 8;
/// Blocks queued for, and results waiting from, each decoding thread: bounds a map's
/// memory to a few blocks (~1,000 records each) per thread.
const DECODE_QUEUE_BLOCKS: usize = 4;

/// Reads the blocks holding `from..to`, runs `work` on each, on one thread per core, and
/// gives the results to `consume` on this thread in log order. Blocks are dealt to the
/// threads in turn and their results taken back in the same turn, so order needs no
/// sorting. Stops at the first error from any side; `Ok(false)` when the log has no
/// blocks to read this way ([`EventLog::read_blocks`]).
///
/// Each thread starts with `init()` (say, a [`BlockDecoder`] and reusable buffers) and
/// hands that state to `work` for every block it gets.
pub fn map_blocks<S, R: Send, E: From<LogError> + Send>(
    log: &dyn EventLog,
    from: u64,
    to: u64,
    init: impl Fn() -> Result<S, E> + Sync,
    work: impl Fn(&mut S, &RawBlock) -> Result<R, E> + Sync,
    mut consume: impl FnMut(R) -> Result<(), E>,
) -> Result<bool, E> {
    let Some(blocks) = log.read_blocks(from, to)? else { return Ok(false) };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, MAX_DECODE_THREADS);
    std::thread::scope(|scope| -> Result<bool, E> {
        let mut inputs = Vec::with_capacity(threads);
        let mut outputs = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (in_tx, in_rx) = mpsc::sync_channel::<Result<RawBlock, LogError>>(DECODE_QUEUE_BLOCKS);
            let (out_tx, out_rx) = mpsc::sync_channel::<Result<R, E>>(DECODE_QUEUE_BLOCKS);
            let (init, work) = (&init, &work);
            scope.spawn(move || {
                let mut state = match init() {
                    Ok(state) => state,
                    Err(e) => {
                        let _ = out_tx.send(Err(e));
                        return;
                    }
                };
                for item in in_rx {
                    let result = item.map_err(E::from).and_then(|block| work(&mut state, &block));
                    let failed = result.is_err();
                    if out_tx.send(result).is_err() || failed {
                        return;
                    }
                }
            });
            inputs.push(in_tx);
            outputs.push(out_rx);
        }
        // The listing thread: deals blocks (or the listing's error, in its place) in turn.
        scope.spawn(move || {
            for (i, item) in blocks.enumerate() {
                let failed = item.is_err();
                if inputs[i % threads].send(item).is_err() || failed {
                    return;
                }
            }
        });
        // A thread's channel closes after its last block; in turn, that is the end.
        for i in 0.. {
            match outputs[i % threads].recv() {
                Ok(result) => consume(result?)?,
                Err(_) => break,
            }
        }
        Ok(true)
    })
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODED_BLOCK_BYTES>()
}

/// Encodes records as a block: header, then the (compressed) bincode payload.
pub fn encode_block<T: Serialize>(items: &[T]) -> Vec<u8> {
    BlockEncoder::new().encode(items)
}

/// Encodes blocks ([`encode_block`]'s bytes exactly), keeping its zstd context and
/// bincode buffer from one block to the next. One per thread.
pub struct BlockEncoder {
    plain: Vec<u8>,
    compressed: Vec<u8>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Default for BlockEncoder {
    fn default() -> Self {
        BlockEncoder::new()
    }
}

impl BlockEncoder {
    pub fn new() -> BlockEncoder {
        // Without a context (out of memory), blocks are stored uncompressed: readers
        // take both codecs.
        BlockEncoder { plain: Vec::new(), compressed: Vec::new(), zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL).ok() }
    }

    pub fn encode<T: Serialize>(&mut self, items: &[T]) -> Vec<u8> {
        self.plain.clear();
        bincode::serde::encode_into_std_write(items, &mut self.plain, bincode_config())
            .expect("bincode encoding of in-memory records cannot fail");
        let compressed = match &mut self.zstd {
            Some(z) => {
                self.compressed.clear();
                self.compressed.reserve(zstd::zstd_safe::compress_bound(self.plain.len()));
                z.compress_to_buffer(&self.plain, &mut self.compressed).is_ok() && self.compressed.len() < self.plain.len()
            }
            None => false,
        };
        let (codec, payload) = if compressed { (CODEC_ZSTD, &self.compressed) } else { (CODEC_NONE, &self.plain) };
        let count = u32::try_from(items.len()).expect("a block holds at most MAX_BLOCK_RECORDS");
        let mut out = Vec::with_capacity(BLOCK_HEADER_BYTES + payload.len());
        out.push(BLOCK_FORMAT_VERSION);
        out.push(codec);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }
}

/// The body of the `log_block` fuzz target (`fuzz/`) and of the test that replays its
/// corpus: whatever bytes a block holds, decoding gives records or
/// [`LogError::Corrupt`], never a panic or an allocation past
/// [`MAX_DECODED_BLOCK_BYTES`]; a block that decodes re-encodes to bytes that decode and
/// re-encode to the same bytes. When the first byte is odd, the CRC is fixed up first, so
/// the fuzzer reaches the zstd and bincode decoders behind it.
pub fn fuzz_block(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut block = rest.to_vec();
    if mode % 2 == 1 && block.len() >= BLOCK_HEADER_BYTES {
        let crc = crc32fast::hash(&block[BLOCK_HEADER_BYTES..]);
        block[6..10].copy_from_slice(&crc.to_le_bytes());
    }
    let _ = block_count(0, &block);
    let raw = RawBlock { first: 0, wanted: 0..u64::MAX, bytes: block.clone().into() };
    let mut decoder = BlockDecoder::new().expect("a zstd context");
    match decode_block::<Record>(0, &block) {
        // Borrowed decoding (replay, projection) refuses what owned decoding refuses...
        Err(_) => assert!(decoder.views(&raw).is_err(), "a block owned decoding refuses decodes borrowed"),
        Ok(records) => {
            // ...and reads the same records, compared as encoded bytes (a NaN cost is not
            // equal to itself), both in one go and decompressed on one thread, decoded on another.
            let views: Vec<RecordView<'_>> =
                decoder.views(&raw).expect("a block that decodes owned decodes borrowed").map(|(_, v)| v).collect();
            assert_eq!(encode_block(&views), encode_block(&records), "borrowed and owned decoding differ");
            let plain = BlockDecoder::new().expect("a zstd context").decompress(&raw, Vec::new()).expect("it decompresses");
            assert_eq!(plain.views().expect("it decodes").count(), records.len());
            let first = encode_block(&records);
            let again: Vec<Record> = decode_block(0, &first).expect("a re-encoded block decodes");
            assert_eq!(encode_block(&again), first, "block encoding is not a fixed point");
        }
    }
    if let Ok(rejected) = decode_block::<RejectedEvent>(0, &block) {
        let first = encode_block(&rejected);
        let again: Vec<RejectedEvent> = decode_block(0, &first).expect("a re-encoded block decodes");
        assert_eq!(encode_block(&again), first, "block encoding is not a fixed point");
    }
}

/// The record count in a block's header, checked.
pub fn block_count(offset: u64, bytes: &[u8]) -> Result<u32, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { offset, reason };
    if bytes.len() < BLOCK_HEADER_BYTES {
        return Err(corrupt(format!("block of {} bytes is shorter than its header", bytes.len())));
    }
    if !(OLDEST_READ_VERSION..=BLOCK_FORMAT_VERSION).contains(&bytes[0]) {
        return Err(corrupt(format!(
            "unknown block format version {} (this questlog reads versions {OLDEST_READ_VERSION} to {BLOCK_FORMAT_VERSION})",
            bytes[0]
        )));
    }
    Ok(u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]))
}

/// Checks a block's header and CRC and decompresses its payload: (version, record count,
/// the bincode payload). `zstd` is the context to decompress with, made here the first
/// time one is needed.
fn block_payload<'a>(
    zstd: &mut Option<zstd::bulk::Decompressor<'static>>,
    offset: u64,
    bytes: &'a [u8],
) -> Result<(u8, usize, std::borrow::Cow<'a, [u8]>), LogError> {
    let corrupt = |reason: String| LogError::Corrupt { offset, reason };
    let (version, count, payload) = block_header(offset, bytes)?;
    let plain = match bytes[1] {
        CODEC_NONE => std::borrow::Cow::Borrowed(payload),
        CODEC_ZSTD => {
            let size = zstd_content_size(offset, payload)?;
            let zstd = match zstd {
                Some(z) => z,
                None => zstd.insert(zstd::bulk::Decompressor::new().map_err(|e| corrupt(format!("cannot start a zstd decoder: {e}")))?),
            };
            std::borrow::Cow::Owned(zstd.decompress(payload, size).map_err(|e| corrupt(format!("zstd: {e}")))?)
        }
        c => return Err(corrupt(format!("unknown codec {c}"))),
    };
    Ok((version, count, plain))
}

/// A block's version and record count, and its payload once the CRC matches.
fn block_header(offset: u64, bytes: &[u8]) -> Result<(u8, usize, &[u8]), LogError> {
    let count = block_count(offset, bytes)? as usize;
    let crc = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let payload = &bytes[BLOCK_HEADER_BYTES..];
    if crc32fast::hash(payload) != crc {
        return Err(LogError::Corrupt { offset, reason: "checksum mismatch".into() });
    }
    Ok((bytes[0], count, payload))
}

/// The decoded size a zstd payload's frame states, within the limit. Decoding allocates
/// exactly that, not the maximum, which would cost a huge zeroed allocation per block.
fn zstd_content_size(offset: u64, payload: &[u8]) -> Result<usize, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { offset, reason };
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n <= MAX_DECODED_BLOCK_BYTES as u64 => Ok(n as usize),
        Ok(Some(n)) => Err(corrupt(format!("block decodes to {n} bytes, over the limit"))),
        _ => Err(corrupt("zstd frame without a content size".into())),
    }
}

/// The checks after decoding a payload: all of it used, as many records as the header says.
fn check_decoded(offset: u64, plain_bytes: usize, used: usize, count: usize, decoded: usize) -> Result<(), LogError> {
    let corrupt = |reason: String| LogError::Corrupt { offset, reason };
    if used != plain_bytes {
        return Err(corrupt(format!("{} trailing bytes", plain_bytes - used)));
    }
    if decoded != count {
        return Err(corrupt(format!("header says {count} records, payload has {decoded}")));
    }
    Ok(())
}

/// Decodes a block, checking version, CRC and count.
pub fn decode_block<T: Stored>(offset: u64, bytes: &[u8]) -> Result<Vec<T>, LogError> {
    decode_block_in(&mut None, offset, bytes)
}

/// [`decode_block`] with a zstd context kept from one block to the next.
pub(crate) fn decode_block_in<T: Stored>(
    zstd: &mut Option<zstd::bulk::Decompressor<'static>>,
    offset: u64,
    bytes: &[u8],
) -> Result<Vec<T>, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { offset, reason };
    let (version, count, plain) = block_payload(zstd, offset, bytes)?;
    let (items, used): (Vec<T>, usize) = if version == 1 {
        let (old, used): (Vec<T::V1>, usize) =
            bincode::serde::decode_from_slice(&plain, bincode_config()).map_err(|e| corrupt(format!("decode (format 1): {e}")))?;
        (old.into_iter().map(Into::into).collect(), used)
    } else {
        bincode::serde::decode_from_slice(&plain, bincode_config()).map_err(|e| corrupt(format!("decode: {e}")))?
    };
    check_decoded(offset, plain.len(), used, count, items.len())?;
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ClientEvent, CustomPayload, CustomValue, Payload, RequestMeta};

    /// A record of a registered type, holding every kind of value, decodes owned and
    /// borrowed to the same record, and re-encodes to the same bytes (the checks of the
    /// `log_block` fuzz target, on a block the fuzzer's seed corpus does not hold).
    #[test]
    fn a_registered_types_record_round_trips_owned_and_borrowed() {
        let values = vec![
            ("level".to_string(), CustomValue::Int(7)),
            ("share".to_string(), CustomValue::Float(0.5)),
            ("ratio".to_string(), CustomValue::Double(-1e300)),
            ("class".to_string(), CustomValue::Text("mage".to_string())),
            ("ended_at".to_string(), CustomValue::Timestamp(1_767_225_601_000_000)),
            ("won".to_string(), CustomValue::Bool(true)),
            ("loadout".to_string(), CustomValue::Json(r#"{"b":1}"#.to_string())),
            ("zone".to_string(), CustomValue::Null),
        ];
        let record = Record {
            received_at_us: 1,
            meta: RequestMeta::default(),
            raw_event: r#"{"event_type":"match_end","level":7}"#.to_string(),
            event: ClientEvent {
                event_id: Some("e".to_string()),
                player_id: None,
                session_id: None,
                event_time_us: None,
                payload: Payload::Custom(CustomPayload { event_type: "match_end".to_string(), version: [1, 0, 2], fields: values }),
            },
        };
        let block = encode_block(std::slice::from_ref(&record));
        let back: Vec<Record> = decode_block(0, &block).unwrap();
        assert_eq!(back, [record.clone()]);
        let raw = RawBlock { first: 0, wanted: 0..1, bytes: block.clone().into() };
        let mut decoder = BlockDecoder::new().unwrap();
        let views: Vec<RecordView<'_>> = decoder.views(&raw).unwrap().map(|(_, v)| v).collect();
        assert_eq!(views, [record.view()]);
        let mut data = vec![0u8];
        data.extend_from_slice(&block);
        fuzz_block(&data);
    }
}
