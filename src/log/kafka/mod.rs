//! The log on a Kafka-protocol topic (`--log kafka://HOST:PORT[,HOST:PORT]/TOPIC`): the
//! second implementation of [`EventLog`], for several stateless `serve` nodes in front of
//! one topic, and for reading the topic back (`replay`).
//!
//! - Each accepted event is one Kafka record. Its value is the event as JSON, the line
//!   `questlog replay` prints without `log_offset` ([`crate::wire::write_value`]), so any
//!   Kafka client reads the topic without questlog; the header `questlog-format` says
//!   which form it is ([`VALUE_FORMAT`]). Its key is the `player_id` (else the `event_id`,
//!   else none), and the partitioner is Java's (`murmur2_random`), which other clients
//!   share: a player's events stay in order, and a re-sent event lands in the partition
//!   of its first copy.
//! - The producer is idempotent (`enable.idempotence=true`, `acks=all`). An append is
//!   `Ok` only once the brokers acknowledged every record of it (written to every in-sync
//!   replica); an error or a timeout ([`DELIVERY_TIMEOUT_MS`]) acknowledges nothing,
//!   although some of the batch's records may have been stored (a retry may then store
//!   them twice: the projector drops re-sent events by `event_id`).
//! - Rejected events stay on the node that refused them, in a sled store under
//!   `DATA_DIR/rejected-log` ([`REJECTED_DIR`]): they are that node's dead letters, not
//!   part of the topic.
//! - Reads assign partitions directly (no consumer group, no committed offsets) and stop
//!   at the end of the partition as the broker reports it in its fetch answers.
//!
//! Invariant: nothing here commits consumer offsets; where a reader is in the topic is
//! the reader's own business (the projector keeps it in its Delta commits).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{oneshot, watch};

use super::{
    AppendBatch, Appended, EventLog, LogError, LogOptions, LogStats, Pending, RecordIter, ScanIter, Scanned, SledLog, ValueFormat,
    MAX_APPEND_RECORDS,
};
use crate::event::{Record, RejectReason, RejectedEvent, Rejection, RequestMeta};
use crate::wire::MAX_EVENT_BYTES;

/// The header naming the form of a record's value, and the form this questlog writes:
/// `json-1`, the JSON object of [`crate::wire::write_value`].
pub const VALUE_FORMAT_HEADER: &str = "questlog-format";
pub const VALUE_FORMAT: &str = "json-1";

/// Where a Kafka-mode node keeps the events it rejected, under its data dir.
pub const REJECTED_DIR: &str = "rejected-log";

/// How long the brokers have to acknowledge a record (librdkafka's
/// `delivery.timeout.ms`) before its append fails with a 503. Long enough for a broker
/// to fail over (a leader election takes seconds), and under the API's own wait
/// (`api::APPEND_CONFIRM_TIMEOUT_MS`, 15 s), so a client hears the broker's reason.
pub const DELIVERY_TIMEOUT_MS: u64 = 10_000;

/// How long a metadata request (partitions of the topic) may take.
pub const METADATA_TIMEOUT_MS: u64 = 10_000;

/// How long a read waits for the broker to answer a fetch before it fails: a partition
/// that has nothing new still answers (with its end) within a fetch wait (500 ms).
pub const READ_TIMEOUT_MS: u64 = 30_000;

/// How long a read that has had neither a record nor the partition's end waits before it
/// asks the broker where the end is (to tell an offset past the end from a slow broker).
const PAST_END_CHECK_MS: u64 = 2_000;

/// Most records waiting in the producer for the brokers' acknowledgement. Past it,
/// appends fail at once with [`LogError::Busy`] (a 503) instead of queueing without
/// bound: about 100k events of ~300 bytes, 30 MB.
pub const MAX_QUEUED_RECORDS: usize = 100_000;

/// A topic on some brokers, parsed from `kafka://HOST:PORT[,HOST:PORT]/TOPIC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaTarget {
    /// `HOST:PORT[,HOST:PORT]`, as librdkafka's `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
}

impl KafkaTarget {
    pub fn parse(url: &str) -> Result<KafkaTarget, LogError> {
        let bad = |why: &str| LogError::BadLogUrl(format!("--log `{url}`: {why} (expected kafka://HOST:PORT[,HOST:PORT]/TOPIC)"));
        let rest = url.strip_prefix("kafka://").ok_or_else(|| bad("not a kafka:// URL"))?;
        let (brokers, topic) = rest.split_once('/').ok_or_else(|| bad("no topic"))?;
        if brokers.is_empty()
            || brokers.split(',').any(|b| b.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()))
        {
            return Err(bad("each broker must be HOST:PORT"));
        }
        // Kafka's own rule for topic names.
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(bad("a topic name is 1 to 249 of a-z, A-Z, 0-9, '.', '_' and '-'"));
        }
        Ok(KafkaTarget { brokers: brokers.to_string(), topic: topic.to_string() })
    }
}

impl std::fmt::Display for KafkaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kafka://{}/{}", self.brokers, self.topic)
    }
}

/// One append in flight: the records still waiting for the brokers, and what each got.
struct InFlight {
    waiting: AtomicUsize,
    positions: Mutex<Vec<(u32, u64)>>,
    error: Mutex<Option<String>>,
    reply: Mutex<Option<oneshot::Sender<Result<Appended, LogError>>>>,
    counters: Arc<Counters>,
}

impl InFlight {
    /// One record is settled (acknowledged, or failed with `error`).
    fn settle(&self, index: usize, position: Result<(u32, u64), String>) {
        match position {
            Ok(pos) => {
                self.counters.note_end(pos);
                if let Some(slot) = self.positions.lock().unwrap_or_else(|p| p.into_inner()).get_mut(index) {
                    *slot = pos;
                }
            }
            Err(e) => {
                self.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
            }
        }
        if self.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let error = self.error.lock().unwrap_or_else(|p| p.into_inner()).take();
        let positions = std::mem::take(&mut *self.positions.lock().unwrap_or_else(|p| p.into_inner()));
        let result = match error {
            Some(e) => {
                self.counters.delivery_errors_total.fetch_add(1, Ordering::Relaxed);
                Err(LogError::NotAcknowledged(e))
            }
            None => {
                self.counters.acknowledged_total.fetch_add(positions.len() as u64, Ordering::Relaxed);
                self.counters.batches_total.fetch_add(1, Ordering::Relaxed);
                Ok(Appended { offsets: 0..0, positions, duplicates: Vec::new() })
            }
        };
        if let Some(tx) = self.reply.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(result);
        }
    }
}

struct Counters {
    acknowledged_total: AtomicU64,
    batches_total: AtomicU64,
    delivery_errors_total: AtomicU64,
    /// Per partition, one past the highest offset this process has seen acknowledged or read.
    ends: Mutex<Vec<u64>>,
    /// Their sum, for `subscribe`.
    end_tx: watch::Sender<u64>,
}

impl Counters {
    fn new(partitions: u32) -> Counters {
        Counters {
            acknowledged_total: AtomicU64::new(0),
            batches_total: AtomicU64::new(0),
            delivery_errors_total: AtomicU64::new(0),
            ends: Mutex::new(vec![0; partitions as usize]),
            end_tx: watch::channel(0).0,
        }
    }

    fn note_end(&self, (partition, offset): (u32, u64)) {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let p = partition as usize;
        if ends.len() <= p {
            ends.resize(p + 1, 0);
        }
        if ends[p] <= offset {
            ends[p] = offset + 1;
            self.end_tx.send_replace(ends.iter().sum());
        }
    }

    fn total_end(&self) -> u64 {
        self.ends.lock().unwrap_or_else(|p| p.into_inner()).iter().sum()
    }
}

/// The producer's context: delivery reports settle their append.
struct Delivery;

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<(Arc<InFlight>, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (inflight, index) = *opaque;
        let position = match result {
            Ok(m) => match (u32::try_from(m.partition()), u64::try_from(m.offset())) {
                (Ok(p), Ok(o)) => Ok((p, o)),
                _ => Err(format!("the broker acknowledged a record without a position ({} {})", m.partition(), m.offset())),
            },
            Err((e, _)) => Err(e.to_string()),
        };
        inflight.settle(index, position);
    }
}

/// The Kafka log of one process. See the module docs for what it promises.
pub struct KafkaLog {
    target: KafkaTarget,
    options: Vec<(String, String)>,
    producer: ThreadedProducer<Delivery>,
    partitions: u32,
    /// The node's rejected-event store; `None` for a reader ([`KafkaLog::open_reader`]).
    rejected: Option<Arc<SledLog>>,
    counters: Arc<Counters>,
    /// What this process read of the side topic of schema records ([`side`]).
    side: Mutex<side::SideCache>,
    /// Schema hashes by type and version, for the header of each record of a registered type.
    schema_hashes: side::SchemaHashes,
}

/// librdkafka settings questlog sets; `--kafka-option` may not change them, because the
/// promises of this module rest on them.
const FIXED_PRODUCER_OPTIONS: [(&str, &str); 3] = [("enable.idempotence", "true"), ("acks", "all"), ("partitioner", "murmur2_random")];

/// Settings `--kafka-option` may not name: the fixed ones, their librdkafka aliases, and
/// the delivery timeout the API's answers rest on.
const FORBIDDEN_OPTIONS: [&str; 7] = [
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "partitioner",
    "delivery.timeout.ms",
    "message.timeout.ms",
    "queue.buffering.max.messages",
];

impl KafkaLog {
    /// Connects to the topic (which must exist) and opens the local rejected-event store
    /// under `data_dir`. `options` are librdkafka settings (`--kafka-option KEY=VALUE`).
    pub fn open(
        target: &KafkaTarget,
        options: &[(String, String)],
        data_dir: &Path,
        log_options: LogOptions,
    ) -> Result<Arc<KafkaLog>, LogError> {
        KafkaLog::open_with(target, options, Some((data_dir, log_options)))
    }

    /// Connects to the topic to read it (`replay`): no rejected-event store, so it needs
    /// no data dir and runs beside a `serve` node on the same one. Appends of rejected
    /// events fail.
    pub fn open_reader(target: &KafkaTarget, options: &[(String, String)]) -> Result<Arc<KafkaLog>, LogError> {
        KafkaLog::open_with(target, options, None)
    }

    fn open_with(
        target: &KafkaTarget,
        options: &[(String, String)],
        local: Option<(&Path, LogOptions)>,
    ) -> Result<Arc<KafkaLog>, LogError> {
        let err = |message: String| LogError::Kafka { brokers: target.brokers.clone(), topic: target.topic.clone(), message };
        for (k, _) in options {
            if FORBIDDEN_OPTIONS.contains(&k.as_str()) {
                return Err(err(format!("--kafka-option {k} cannot be changed: questlog's delivery promise rests on it")));
            }
        }
        let mut config = client_config(target, options);
        config
            .set("delivery.timeout.ms", DELIVERY_TIMEOUT_MS.to_string())
            .set("queue.buffering.max.messages", MAX_QUEUED_RECORDS.to_string())
            .set("linger.ms", "2")
            // A mistyped topic is an error, not a new topic with the broker's defaults.
            .set("allow.auto.create.topics", "false");
        for (k, v) in FIXED_PRODUCER_OPTIONS {
            config.set(k, v);
        }
        let producer: ThreadedProducer<Delivery> =
            config.create_with_context(Delivery).map_err(|e| err(format!("cannot create a producer: {e}")))?;
        let partitions = topic_partitions(producer.client(), target)?;
        let rejected = local.map(|(data_dir, log_options)| SledLog::open_with(&data_dir.join(REJECTED_DIR), log_options)).transpose()?;
        let counters = Arc::new(Counters::new(partitions));
        Ok(Arc::new(KafkaLog {
            target: target.clone(),
            options: options.to_vec(),
            producer,
            partitions,
            rejected,
            counters,
            side: Mutex::new(side::SideCache::default()),
            schema_hashes: Default::default(),
        }))
    }

    pub fn target(&self) -> &KafkaTarget {
        &self.target
    }

    fn err(&self, message: String) -> LogError {
        LogError::Kafka { brokers: self.target.brokers.clone(), topic: self.target.topic.clone(), message }
    }
}

/// The settings every client of `target` shares: brokers, then the user's options.
fn client_config(target: &KafkaTarget, options: &[(String, String)]) -> ClientConfig {
    client_config_with(target, &[], options)
}

/// How long a consumer's fetcher waits before it fetches again once its queue for a
/// partition was full (librdkafka's `fetch.queue.backoff.ms`; its default is 1,000 ms). A
/// projector takes a batch of up to 64 MiB at once — librdkafka's whole queue
/// (`queued.max.messages.kbytes`, 64 MiB) — and then waited for the rest of that second
/// before the next fetch: a projection of 10^6 records from a topic spent every other
/// batch's poll (~0.65 s of ~0.9 s) waiting. With 10 ms, 7.8 s became 4.9 s (BENCHMARKS.md).
pub const FETCH_QUEUE_BACKOFF_MS: u64 = 10;

/// How long the brokers may hold a fetch of a reader that stops at the partitions' ends
/// (replay, a one-shot `project`, a rebuild, `verify`, a dedup window's refill) while
/// nothing new is there (librdkafka's `fetch.wait.max.ms`; its default is 500 ms). Such a
/// reader learns it is at an end from the empty answer, so each end cost up to 500 ms: a
/// one-shot `project` with nothing new took 0.65 s, now 0.20 s; `replay` of 10^5 records
/// 1.42 s, now 0.50 s (Tansu, 3 partitions; BENCHMARKS.md). Followers keep the default: their
/// fetches wait for new records, and an idle one would otherwise ask 100 times a second.
pub const END_FETCH_WAIT_MS: u64 = 10;

/// A consumer's configuration: [`client_config`] with questlog's consumer defaults, which
/// `--kafka-option` overrides. `to_end`: a reader that stops at the partitions' ends
/// ([`END_FETCH_WAIT_MS`]).
fn consumer_config(target: &KafkaTarget, options: &[(String, String)], to_end: bool) -> ClientConfig {
    let backoff = FETCH_QUEUE_BACKOFF_MS.to_string();
    let wait = END_FETCH_WAIT_MS.to_string();
    let mut defaults = vec![("fetch.queue.backoff.ms", backoff.as_str())];
    if to_end {
        defaults.push(("fetch.wait.max.ms", wait.as_str()));
    }
    client_config_with(target, &defaults, options)
}

fn client_config_with(target: &KafkaTarget, defaults: &[(&str, &str)], options: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &target.brokers).set("socket.timeout.ms", METADATA_TIMEOUT_MS.to_string());
    // librdkafka's informational messages (a closed idle connection, events purged at
    // shutdown) would reach stderr as `%6|…` lines; warnings and errors still do.
    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in options {
        config.set(k, v);
    }
    config
}

/// The number of partitions of `target`'s topic, or an error that says how to create it.
fn topic_partitions<C: ClientContext>(client: &rdkafka::client::Client<C>, target: &KafkaTarget) -> Result<u32, LogError> {
    let err = |message: String| LogError::Kafka { brokers: target.brokers.clone(), topic: target.topic.clone(), message };
    let metadata = client
        .fetch_metadata(Some(&target.topic), Duration::from_millis(METADATA_TIMEOUT_MS))
        .map_err(|e| err(format!("cannot reach the brokers within {METADATA_TIMEOUT_MS} ms: {e}")))?;
    let topic =
        metadata.topics().iter().find(|t| t.name() == target.topic).ok_or_else(|| err("the brokers do not know the topic".into()))?;
    if let Some(e) = topic.error() {
        return Err(err(format!(
            "the topic is not available ({:?}); create it first, e.g. kafka-topics.sh --create --topic {} --partitions 3",
            RDKafkaErrorCode::from(e),
            target.topic
        )));
    }
    match topic.partitions().len() {
        0 => Err(err(format!(
            "the topic has no partitions; create it first, e.g. kafka-topics.sh --create --topic {} --partitions 3",
            target.topic
        ))),
        n => Ok(n as u32),
    }
}

/// The key of a record: its player, else its event id, else none.
fn record_key(r: &Record) -> Option<&str> {
    r.event.player_id.as_deref().or(r.event.event_id.as_deref())
}

impl EventLog for KafkaLog {
    fn append(&self, batch: AppendBatch) -> Result<Pending, LogError> {
        if batch.records.len() > MAX_APPEND_RECORDS {
            return Err(LogError::TooLarge(batch.records.len()));
        }
        if let Some(why) = self.unwritable() {
            return Err(LogError::NotAcknowledged(why));
        }
        // Refuse a batch that would not fit in the producer's queue before sending any of
        // it, so that a "busy" answer has stored nothing.
        if usize::try_from(self.producer.in_flight_count()).unwrap_or(0) + batch.records.len() > MAX_QUEUED_RECORDS {
            return Err(LogError::Busy);
        }
        let rejected_store = match (&self.rejected, batch.rejected.is_empty()) {
            (_, true) => None,
            (Some(store), false) => Some(store),
            (None, false) => return Err(self.err("this reader keeps no rejected events (open the log with a data dir)".into())),
        };
        let (tx, rx) = oneshot::channel();
        let n = batch.records.len();
        let inflight = Arc::new(InFlight {
            waiting: AtomicUsize::new(n),
            positions: Mutex::new(vec![(0, 0); n]),
            error: Mutex::new(None),
            reply: Mutex::new(Some(tx)),
            counters: self.counters.clone(),
        });
        if n == 0 {
            inflight.finish();
        }
        let mut value = String::with_capacity(512);
        let headers = OwnedHeaders::new().insert(Header { key: VALUE_FORMAT_HEADER, value: Some(VALUE_FORMAT) });
        // The schema version of each registered type's record ([`side::SCHEMA_HEADER`]),
        // before anything is sent.
        let mut schema_hashes: Vec<Option<String>> = Vec::with_capacity(n);
        for r in &batch.records {
            schema_hashes.push(match &r.event.payload {
                crate::event::Payload::Custom(c) => Some(self.schema_hash(&c.event_type, c.version())?),
                _ => None,
            });
        }
        for (i, r) in batch.records.iter().enumerate() {
            value.clear();
            crate::wire::write_value(&mut value, r);
            let record_headers = match &schema_hashes[i] {
                Some(h) => headers.clone().insert(Header { key: side::SCHEMA_HEADER, value: Some(h.as_str()) }),
                None => headers.clone(),
            };
            let mut record = BaseRecord::with_opaque_to(&self.target.topic, Box::new((inflight.clone(), i)))
                .payload(value.as_str())
                .headers(record_headers);
            if let Some(key) = record_key(r) {
                record = record.key(key);
            }
            if let Err((e, record)) = self.producer.send(record) {
                // Not queued: settle it here, and every record after it too, so that the
                // append ends once the queued ones are settled.
                let busy = matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
                let why = if busy { format!("the producer queue is full ({MAX_QUEUED_RECORDS} records)") } else { e.to_string() };
                drop(record);
                for j in i..n {
                    inflight.settle(j, Err(why.clone()));
                }
                if busy {
                    // Nothing of this batch is acknowledged either way; say "busy" so the
                    // client is told to retry (503 with Retry-After).
                    return Err(LogError::Busy);
                }
                break;
            }
        }
        let mut pending = Pending::new(rx);
        if let Some(store) = rejected_store {
            pending.rejected = Some(store.append(AppendBatch { records: Vec::new(), rejected: batch.rejected })?.records);
        }
        Ok(pending)
    }

    /// Kafka has no single end: the sum over partitions of one past the highest offset
    /// this process has seen acknowledged or read (a node sees its own appends, not other
    /// nodes'). For `/healthz` and metrics; readers use [`EventLog::read_partition`].
    fn durable_end(&self) -> u64 {
        self.counters.total_end()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.counters.end_tx.subscribe()
    }

    fn read(&self, from: u64, to: u64) -> Result<RecordIter<'_>, LogError> {
        if self.partitions != 1 {
            return Err(LogError::Partitioned(self.partitions));
        }
        self.read_partition(0, from, to)
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn is_local(&self) -> bool {
        false
    }

    fn partition_bounds(&self, p: u32) -> Result<(u64, u64), LogError> {
        if p >= self.partitions {
            return Err(self.err(format!("partition {p} does not exist (the topic has {})", self.partitions)));
        }
        let (low, high) = self
            .producer
            .client()
            .fetch_watermarks(&self.target.topic, p as i32, Duration::from_millis(METADATA_TIMEOUT_MS))
            .map_err(|e| self.err(format!("partition {p}: cannot read its watermarks within {METADATA_TIMEOUT_MS} ms: {e}")))?;
        Ok((u64::try_from(low).unwrap_or(0), u64::try_from(high).unwrap_or(0)))
    }

    fn read_partition(&self, p: u32, from: u64, to: u64) -> Result<RecordIter<'_>, LogError> {
        if p >= self.partitions {
            return Err(self.err(format!("partition {p} does not exist (the topic has {})", self.partitions)));
        }
        // The schema versions its records of registered types name, read before them.
        self.side_records()?;
        let reader = PartitionReader::open(&self.target, &self.options, p, from, to, ValueFormat::Questlog, self.counters.clone())?;
        Ok(Box::new(reader))
    }

    fn scan_partition(&self, p: u32, from: u64, to: u64, format: ValueFormat) -> Result<ScanIter<'_>, LogError> {
        if p >= self.partitions {
            return Err(self.err(format!("partition {p} does not exist (the topic has {})", self.partitions)));
        }
        if format == ValueFormat::Questlog {
            self.side_records()?;
        }
        let reader = PartitionReader::open(&self.target, &self.options, p, from, to, format, self.counters.clone())?;
        Ok(Box::new(Scan(reader)))
    }

    fn rejected(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, RejectedEvent)>, LogError> {
        match &self.rejected {
            Some(store) => store.rejected(from_seq, limit),
            None => Ok(Vec::new()),
        }
    }

    fn stats(&self) -> LogStats {
        let local = self.rejected.as_ref().map(|s| s.stats()).unwrap_or_default();
        LogStats {
            durable_end: self.durable_end(),
            rejected_total: local.rejected_total,
            size_on_disk_bytes: local.size_on_disk_bytes,
            flushes_total: self.counters.batches_total.load(Ordering::Relaxed),
            flush_errors_total: self.counters.delivery_errors_total.load(Ordering::Relaxed),
            flushed_records_total: self.counters.acknowledged_total.load(Ordering::Relaxed),
            unwritable: self.unwritable(),
            ..LogStats::default()
        }
    }

    /// The producer's fatal error (an idempotent producer that lost its sequence cannot
    /// send again; restart the node), else the rejected store's trouble.
    fn unwritable(&self) -> Option<String> {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            return Some(format!("the Kafka producer failed for good ({code:?}: {reason}); restart this node"));
        }
        self.rejected.as_ref().and_then(|s| s.unwritable())
    }

    /// Writes the schema to the side topic ([`side`]): blocking until the brokers
    /// acknowledged it and readers take it (callers in async code use `spawn_blocking`).
    fn record_schema(&self, hash: String, content: Vec<u8>) -> Result<Pending, LogError> {
        self.record_side(side::SideKind::Schema, &hash, content)
    }

    /// The schemas the side topic puts in force ([`side::accept_schemas`]), read to its end.
    fn schemas(&self) -> Result<Vec<super::SchemaRecord>, LogError> {
        Ok(side::accept_schemas(&self.side_records()?))
    }

    /// Records the catalogue in the side topic (docs/CONTRACT.md 12.2): `Ok` once the
    /// brokers acknowledged it (`acks=all`) and readers take it, or when it is the one in
    /// force already (nothing written).
    fn record_catalog(&self, hash: String, content: Vec<u8>) -> Result<Pending, LogError> {
        self.record_side(side::SideKind::Catalog, &hash, content)
    }

    /// The catalogues the side topic puts in force ([`side::accept_catalogs`]).
    fn catalogs(&self) -> Result<Vec<super::CatalogRecord>, LogError> {
        Ok(side::accept_catalogs(&self.side_records()?))
    }

    fn schemas_and_catalogs(&self) -> Result<(Vec<super::SchemaRecord>, Vec<super::CatalogRecord>), LogError> {
        let records = self.side_records()?;
        Ok((side::accept_schemas(&records), side::accept_catalogs(&records)))
    }

    fn join_group(&self, group: Option<&str>, starts: group::StartsFn, to_end: bool) -> Result<group::GroupMember, LogError> {
        match group {
            Some(group) => group::GroupMember::join(&self.target, &self.options, group, starts),
            None => group::GroupMember::assign_all(&self.target, &self.options, self.partitions(), starts, to_end),
        }
    }

    fn close(&self) -> Result<(), LogError> {
        let flushed = self.producer.flush(Duration::from_millis(DELIVERY_TIMEOUT_MS));
        if let Some(store) = &self.rejected {
            store.close()?;
        }
        flushed.map_err(|e| self.err(format!("records still unacknowledged at shutdown: {e}")))
    }
}

/// The readers' context: the end of a partition is how a read ends, not an error to log
/// (librdkafka reports it as one); an offset out of range ends the read with an error;
/// other client errors are logged as warnings (librdkafka retries them).
#[derive(Default)]
struct Reading {
    out_of_range: Mutex<Option<String>>,
}

impl ClientContext for Reading {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
            KafkaError::Global(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange) => {
                *self.out_of_range.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
            }
            _ => tracing::warn!(error = %error, reason, "Kafka client error"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Reading {}

/// Reads one partition from an offset to its end (or `to`), decoding each value in
/// `format`.
struct PartitionReader {
    consumer: BaseConsumer<Reading>,
    format: ValueFormat,
    partition: u32,
    from: u64,
    to: u64,
    done: bool,
    /// Whether any record or the partition's end has come yet.
    started: bool,
    counters: Arc<Counters>,
    target: KafkaTarget,
    /// The last offset read and not yet noted in `counters`.
    unnoted: Option<u64>,
}

impl PartitionReader {
    /// Notes the last offset read as seen (the node's `durable_end`).
    fn note(&mut self) {
        if let Some(offset) = self.unnoted.take() {
            self.counters.note_end((self.partition, offset));
        }
    }
}

impl Drop for PartitionReader {
    fn drop(&mut self) {
        self.note();
    }
}

/// A consumer of `target` assigned `starts` (partition, offset) without a consumer group:
/// no offsets are committed, and an offset out of range is an error, never a silent
/// restart from the beginning. With `eof`, reaching a partition's end is reported.
fn assigned_consumer(
    target: &KafkaTarget,
    options: &[(String, String)],
    starts: &[(u32, u64)],
    eof: bool,
) -> Result<BaseConsumer<Reading>, LogError> {
    let err = |message: String| LogError::Kafka { brokers: target.brokers.clone(), topic: target.topic.clone(), message };
    let consumer: BaseConsumer<Reading> = consumer_config(target, options, eof)
        // librdkafka wants a group id even for assigned partitions; nothing joins or
        // commits with it.
        .set("group.id", "questlog-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        .set("auto.offset.reset", "error")
        .create_with_context(Reading::default())
        .map_err(|e| err(format!("cannot create a consumer: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    for &(p, from) in starts {
        let start = i64::try_from(from).map_err(|_| err(format!("offset {from} is out of Kafka's range")))?;
        tpl.add_partition_offset(&target.topic, p as i32, Offset::Offset(start))
            .map_err(|e| err(format!("partition {p} at {from}: {e}")))?;
    }
    consumer.assign(&tpl).map_err(|e| err(format!("cannot read partitions {starts:?}: {e}")))?;
    Ok(consumer)
}

/// A questlog value as a record, checking the format header (`None`: written before it).
fn decode_questlog(header: Option<&[u8]>, schema: Option<&[u8]>, payload: &[u8]) -> Result<Record, Rejection> {
    match header {
        None | Some(b"json-1") => decode_value_of(payload, schema).map_err(|why| Rejection::new(RejectReason::MalformedJson, None, why)),
        Some(other) => Err(Rejection::new(
            RejectReason::MalformedJson,
            None,
            format!("unknown value format {:?} in header {VALUE_FORMAT_HEADER}", String::from_utf8_lossy(other)),
        )),
    }
}

fn format_header<M: Message>(m: &M) -> Option<&[u8]> {
    header_of(m, VALUE_FORMAT_HEADER)
}

fn header_of<'m, M: Message>(m: &'m M, key: &str) -> Option<&'m [u8]> {
    m.headers().and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value))
}

impl KafkaLog {
    /// `replay --follow`: reads the partitions from the offsets in `starts` as records
    /// arrive (each partition in offset order; across partitions in the order they
    /// come), calling `f` for each, until `f` returns `Ok(false)` or fails. A value that
    /// is not questlog's ends it with [`LogError::Corrupt`].
    pub fn follow(&self, starts: &[(u32, u64)], mut f: impl FnMut(u32, u64, &Record) -> Result<bool, LogError>) -> Result<(), LogError> {
        let consumer = assigned_consumer(&self.target, &self.options, starts, false)?;
        loop {
            let polled = consumer.poll(Duration::from_millis(500));
            if let Some(reason) = consumer.context().out_of_range.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(self.err(format!("an offset of {starts:?} is out of range ({reason})")));
            }
            match polled {
                None => continue,
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange))) => {
                    return Err(self.err(format!("an offset of {starts:?} is out of range")));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error while following"),
                Some(Ok(m)) => {
                    let (Ok(p), Ok(offset)) = (u32::try_from(m.partition()), u64::try_from(m.offset())) else { continue };
                    self.counters.note_end((p, offset));
                    let decode = || decode_questlog(format_header(&m), header_of(&m, side::SCHEMA_HEADER), m.payload().unwrap_or_default());
                    let record = match decode() {
                        // A type registered since: read the side topic, then decode again.
                        Err(r) if side::unknown_schema(&r.message) => {
                            self.side_records()?;
                            decode()
                        }
                        other => other,
                    }
                    .map_err(|r| LogError::Corrupt { offset, reason: format!("partition {p}: {}", r.message) })?;
                    if !f(p, offset, &record)? {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl PartitionReader {
    fn open(
        target: &KafkaTarget,
        options: &[(String, String)],
        p: u32,
        from: u64,
        to: u64,
        format: ValueFormat,
        counters: Arc<Counters>,
    ) -> Result<PartitionReader, LogError> {
        let consumer = assigned_consumer(target, options, &[(p, from)], true)?;
        Ok(PartitionReader {
            consumer,
            format,
            partition: p,
            from,
            to,
            done: from >= to,
            started: false,
            counters,
            target: target.clone(),
            unnoted: None,
        })
    }

    fn err(&self, message: String) -> LogError {
        LogError::Kafka { brokers: self.target.brokers.clone(), topic: self.target.topic.clone(), message }
    }
}

/// A questlog read: a value that does not decode ends it with [`LogError::Corrupt`].
impl Iterator for PartitionReader {
    type Item = Result<(u64, Record), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.next_value()? {
            Ok((offset, Ok(record))) => Ok((offset, record)),
            Ok((offset, Err(rejected))) => {
                self.done = true;
                Err(LogError::Corrupt { offset, reason: format!("partition {}: {}", self.partition, rejected.rejection.message) })
            }
            Err(e) => Err(e),
        })
    }
}

/// A scan for projection: a value that does not decode is an item, not the end.
struct Scan(PartitionReader);

impl Iterator for Scan {
    type Item = Result<(u64, Scanned), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_value()
    }
}

impl PartitionReader {
    fn next_value(&mut self) -> Option<Result<(u64, Scanned), LogError>> {
        if self.done {
            return None;
        }
        // The clock is read once the brokers are quiet, not for every record (it was a
        // twentieth of a topic's replay).
        let mut deadline: Option<Instant> = None;
        loop {
            let left = deadline.map_or(Duration::from_millis(READ_TIMEOUT_MS), |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                self.done = true;
                return Some(
                    Err(self.err(format!("partition {}: no answer from the brokers within {READ_TIMEOUT_MS} ms", self.partition))),
                );
            }
            let polled = self.consumer.poll(left.min(Duration::from_millis(500)));
            if let Some(reason) = self.consumer.context().out_of_range.lock().unwrap_or_else(|p| p.into_inner()).take() {
                self.done = true;
                return Some(Err(self.err(format!("partition {}: offset {} is out of range ({reason})", self.partition, self.from))));
            }
            if polled.is_none() && deadline.is_none() {
                deadline = Some(Instant::now() + Duration::from_millis(READ_TIMEOUT_MS) - left.min(Duration::from_millis(500)));
            }
            match polled {
                // Some brokers (Tansu) answer a fetch past the end with nothing at all,
                // neither records nor an error: after a quiet while, ask where the end is.
                None if !self.started
                    && deadline.is_some_and(|d| {
                        d.saturating_duration_since(Instant::now()) < Duration::from_millis(READ_TIMEOUT_MS - PAST_END_CHECK_MS)
                    }) =>
                {
                    self.started = true;
                    let timeout = Duration::from_millis(METADATA_TIMEOUT_MS);
                    if let Ok((_, high)) = self.consumer.fetch_watermarks(&self.target.topic, self.partition as i32, timeout) {
                        if u64::try_from(high).is_ok_and(|h| self.from > h) {
                            self.done = true;
                            return Some(Err(
                                self.err(format!("partition {}: offset {} is past its end ({high})", self.partition, self.from))
                            ));
                        }
                    }
                }
                None => continue,
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange))) => {
                    self.done = true;
                    return Some(Err(self.err(format!("partition {}: offset {} is out of range", self.partition, self.from))));
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    self.started = true;
                    self.done = true;
                    self.note();
                    return None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(self.err(format!("partition {}: {e}", self.partition))));
                }
                Some(Ok(m)) => {
                    self.started = true;
                    let Ok(offset) = u64::try_from(m.offset()) else { continue };
                    if offset < self.from {
                        continue;
                    }
                    if offset >= self.to {
                        self.done = true;
                        return None;
                    }
                    // The last offset asked for: done without polling for the next.
                    self.done = offset.saturating_add(1) >= self.to;
                    // The node's view of the partition's end moves once per 1,024 records
                    // (and at the end of the read): a watch channel's send per record was a
                    // twentieth of a topic's replay.
                    if offset % 1_024 == 0 || self.done {
                        self.unnoted = None;
                        self.counters.note_end((self.partition, offset));
                    } else {
                        self.unnoted = Some(offset);
                    }
                    let payload = m.payload().unwrap_or_default();
                    let decoded = match self.format {
                        ValueFormat::Questlog => decode_questlog(format_header(&m), header_of(&m, side::SCHEMA_HEADER), payload),
                        ValueFormat::Seed => decode_seed(payload, m.timestamp().to_millis()),
                    };
                    return Some(Ok((offset, decoded.map_err(|rejection| rejected_value(payload, m.timestamp().to_millis(), rejection)))));
                }
            }
        }
    }
}

/// A value of partition `p` read by a [`group::GroupMember`], not decoded yet (decoding
/// runs beside the poll, on other threads).
#[derive(Debug)]
pub struct RawValue {
    pub offset: u64,
    pub timestamp_ms: Option<i64>,
    /// The [`VALUE_FORMAT_HEADER`] header's value, if the record has one.
    pub format_header: Option<Box<[u8]>>,
    /// The [`side::SCHEMA_HEADER`] header's value (a registered type's record).
    pub schema_header: Option<Box<[u8]>>,
    pub payload: Box<[u8]>,
}

impl RawValue {
    fn of<M: Message>(m: &M, offset: u64) -> RawValue {
        RawValue {
            offset,
            timestamp_ms: m.timestamp().to_millis(),
            format_header: format_header(m).map(Into::into),
            schema_header: header_of(m, side::SCHEMA_HEADER).map(Into::into),
            payload: m.payload().unwrap_or_default().into(),
        }
    }

    /// The value as a projection scan gives it (see [`EventLog::scan_partition`]).
    #[allow(clippy::result_large_err)] // `Scanned`, as every scan gives it
    pub fn decode(&self, format: ValueFormat) -> Scanned {
        let decoded = match format {
            ValueFormat::Questlog => decode_questlog(self.format_header.as_deref(), self.schema_header.as_deref(), &self.payload),
            ValueFormat::Seed => decode_seed(&self.payload, self.timestamp_ms),
        };
        decoded.map_err(|rejection| rejected_value(&self.payload, self.timestamp_ms, rejection))
    }
}

/// A message of the seed's own topic as a record ([`ValueFormat::Seed`]): validated as
/// [`crate::event::validate_seed_message`] says; `raw_event` is the message as it is
/// (headers included, as the seed's Spark job kept it) and `timestamp` the record's Kafka
/// timestamp (as the seed's Spark job took it).
fn decode_seed(payload: &[u8], timestamp_ms: Option<i64>) -> Result<Record, Rejection> {
    if payload.len() > MAX_EVENT_BYTES {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            None,
            format!("the message is {} bytes, over the limit of {MAX_EVENT_BYTES} bytes for an event", payload.len()),
        ));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|e| Rejection::new(RejectReason::MalformedJson, None, format!("the message is not UTF-8: {e}")))?;
    let Some(received_at_us) = timestamp_ms.and_then(|ms| ms.checked_mul(1000)) else {
        return Err(Rejection::new(RejectReason::BadTime, Some("timestamp"), "the Kafka record has no timestamp".into()));
    };
    let (event, headers) = crate::event::validate_seed_message(text)?;
    Ok(Record {
        received_at_us,
        meta: RequestMeta {
            accept: headers.accept.map(Into::into),
            host: headers.host.map(Into::into),
            user_agent: headers.user_agent.map(Into::into),
            app: None,
        },
        raw_event: text.to_string(),
        event,
    })
}

/// A value that did not decode, kept as a rejected event (its text cut to
/// [`crate::event::MAX_REJECTED_RAW_BYTES`]).
fn rejected_value(payload: &[u8], timestamp_ms: Option<i64>, rejection: Rejection) -> RejectedEvent {
    let raw = String::from_utf8_lossy(payload);
    RejectedEvent {
        received_at_us: timestamp_ms.unwrap_or(0).saturating_mul(1000),
        meta: RequestMeta::default(),
        index: 0,
        raw: crate::event::truncate_utf8(&raw, crate::event::MAX_REJECTED_RAW_BYTES).to_string(),
        rejection,
    }
}

/// The members of a stored value that [`decode_value`] needs; the event itself is
/// validated again from `raw_event`, exactly as the API validated it.
#[derive(serde::Deserialize)]
struct StoredValue {
    timestamp: String,
    accept: Option<String>,
    host: Option<String>,
    user_agent: Option<String>,
    app: Option<String>,
    raw_event: String,
}

/// A record from the value [`crate::wire::write_value`] wrote.
pub fn decode_value(payload: &[u8]) -> Result<Record, String> {
    decode_value_of(payload, None)
}

/// [`decode_value`] of a record with the [`side::SCHEMA_HEADER`] `schema` (a registered
/// type's: its `raw_event` is validated against exactly that schema version).
fn decode_value_of(payload: &[u8], schema: Option<&[u8]>) -> Result<Record, String> {
    let v: StoredValue = serde_json::from_slice(payload).map_err(|e| format!("value is not a questlog record: {e}"))?;
    let received_at_us = crate::event::parse_time_us(&v.timestamp).map_err(|e| format!("timestamp: {e}"))?;
    let event = match schema {
        None => crate::event::validate_json(&v.raw_event),
        Some(hash) => {
            let hash = String::from_utf8_lossy(hash);
            let types = side::known_type(&hash).ok_or_else(|| format!("{} ({hash})", side::UNKNOWN_SCHEMA))?;
            crate::event::validate_json_in(&v.raw_event, &types)
        }
    }
    .map_err(|r| format!("raw_event does not validate: {}", r.message))?;
    Ok(Record {
        received_at_us,
        meta: RequestMeta { accept: v.accept, host: v.host, user_agent: v.user_agent, app: v.app }.map(Into::into),
        raw_event: v.raw_event,
        event,
    })
}

pub mod group;
pub mod side;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = KafkaTarget::parse("kafka://127.0.0.1:9092,h2:9093/events").unwrap();
        assert_eq!(t.brokers, "127.0.0.1:9092,h2:9093");
        assert_eq!(t.topic, "events");
        assert_eq!(t.to_string(), "kafka://127.0.0.1:9092,h2:9093/events");
        for bad in ["kafka://h:1", "kafka://h/events", "kafka://h:x/events", "http://h:1/e", "kafka://h:1/a b", "kafka:///e"] {
            assert!(KafkaTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_round_trip() {
        let raw = r#"{"event_type":"join_guild","guild_id":7,"name":"Knights","player_id":"p1","event_id":"e1"}"#;
        let record = Record {
            received_at_us: 1_700_000_000_123_456,
            meta: RequestMeta { accept: Some("*/*".into()), host: Some("h".into()), user_agent: None, app: Some("studio".into()) },
            raw_event: raw.into(),
            event: crate::event::validate_json(raw).unwrap(),
        };
        let mut value = String::new();
        crate::wire::write_value(&mut value, &record);
        assert!(!value.contains("log_offset") && !value.ends_with('\n'));
        assert_eq!(decode_value(value.as_bytes()).unwrap(), record);
        assert_eq!(record_key(&record), Some("p1"));
        assert!(decode_value(b"{}").is_err());
    }
}
