//! Schema and store catalogue records of a Kafka log (docs/CONTRACT.md 13.4, 12.2): a topic of
//! one partition beside the events' topic, `<topic>.schemas`, so that every node, projector
//! and rebuild reads the records in one order. Each record carries, for every partition of
//! the events' topic, the offset it is in force from (`from`: the partitions' high
//! watermarks when it was written — every event checked against it is appended after it
//! was acknowledged, so lands at or past them).
//!
//! Records are never refused when written (Kafka has no compare-and-set): two nodes may
//! write versions that clash. Readers settle it the same way everywhere ([`accept_schemas`]):
//! in the side topic's order, a record is taken only if it passes
//! [`crate::schema::check_against`] the records taken before it, and its `from` is raised to
//! at least its predecessor's (so records are in force in the order taken, as on sled). A
//! writer reads the topic again after its record is acknowledged to learn whether it was
//! taken.
//!
//! Invariant: the records taken are a function of the side topic's records in order; the
//! same topic gives every reader the same schemas with the same `from`s.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::super::{CatalogRecord, EventLog, LogError, SchemaRecord};
use super::{assigned_consumer, Counters, InFlight, KafkaLog, KafkaTarget, METADATA_TIMEOUT_MS, READ_TIMEOUT_MS, VALUE_FORMAT_HEADER};
use crate::schema::{self, Schema};

/// The side topic's name: the events' topic with this appended.
pub const SIDE_TOPIC_SUFFIX: &str = ".schemas";

/// The `questlog-format` header of a side record's value.
pub const SIDE_FORMAT: &str = "side-1";

/// Most records a side topic may hold: 256 tables of a few versions each, and catalogues.
/// Past it a reader refuses the topic rather than holding it all.
pub const MAX_SIDE_RECORDS: usize = 16_384;

/// What a side record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SideKind {
    Schema,
    Catalog,
}

/// One record of the side topic (its value, JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SideRecord {
    pub kind: SideKind,
    pub hash: String,
    /// The schema's canonical form (text); a catalogue's canonical form (text).
    pub content: String,
    /// Per partition of the events' topic, the offset the record is in force from. A
    /// partition added to the topic after the record was written is missing: from 0.
    pub from: Vec<u64>,
}

/// How long a read of the side topic past its high watermark waits for more records or
/// the broker's end-of-partition before it takes the quiet as the end.
const QUIET_END_MS: u64 = 300;

/// Longest a writer reads the events' partitions past their watermarks for their ends
/// ([`KafkaLog::partition_ends_now`]): on a busy topic records keep coming and the end
/// keeps moving; any end read is a correct `from`.
const END_READ_MAX_MS: u64 = 2_000;

/// What a process has read of its side topic: the records up to `next`.
#[derive(Debug, Default)]
pub struct SideCache {
    next: u64,
    records: Vec<SideRecord>,
}

/// The hash of each schema version taken, by type name and version: the header a record of
/// a registered type is written with ([`SCHEMA_HEADER`]). Apart from [`SideCache`] (whose
/// lock is held across reads of the side topic) so that appends never wait on the brokers.
pub type SchemaHashes = std::sync::RwLock<std::collections::HashMap<(String, schema::Version), String>>;

/// The header of a record of a registered type: the hash of the schema version that checked
/// it, so any reader validates its `raw_event` against exactly that version.
pub const SCHEMA_HEADER: &str = "questlog-schema";

/// The registered types readers of Kafka logs in this process know, by schema hash (a hash
/// names one content, so the map holds for every topic): filled whenever a Kafka log's
/// schemas are read ([`KafkaLog::side_records`]), read by the decoders of its values.
static KNOWN_TYPES: std::sync::RwLock<Option<std::collections::HashMap<String, Arc<crate::event::Registry>>>> =
    std::sync::RwLock::new(None);

/// How a value of a registered type whose schema this reader has not read fails to decode
/// (the start of its message): never a rejected value — its reader reads the side topic
/// again and tries the step again ([`unknown_schema`]).
pub const UNKNOWN_SCHEMA: &str = "a schema this reader has not read";

/// Whether a value failed to decode only because its schema was not read yet.
pub fn unknown_schema(why: &str) -> bool {
    why.starts_with(UNKNOWN_SCHEMA)
}

/// The registry of exactly the schema `hash` (one type at that version), if known.
pub fn known_type(hash: &str) -> Option<Arc<crate::event::Registry>> {
    KNOWN_TYPES.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|m| m.get(hash).cloned())
}

fn learn_types(records: &[SchemaRecord]) {
    let mut known = KNOWN_TYPES.write().unwrap_or_else(|p| p.into_inner());
    let map = known.get_or_insert_with(Default::default);
    for r in records {
        if !map.contains_key(&r.hash) {
            if let Ok(s) = Schema::from_record(&r.content, &r.hash) {
                map.insert(r.hash.clone(), Arc::new(crate::event::Registry::from_schemas([&s])));
            }
        }
    }
}

impl KafkaLog {
    fn side_target(&self) -> KafkaTarget {
        KafkaTarget { brokers: self.target.brokers.clone(), topic: format!("{}{SIDE_TOPIC_SUFFIX}", self.target.topic) }
    }

    /// Whether the side topic exists (`None`: it does not; a log without records), and
    /// its one partition's end.
    fn side_end(&self) -> Result<Option<u64>, LogError> {
        let side = self.side_target();
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(&side.topic), Duration::from_millis(METADATA_TIMEOUT_MS))
            .map_err(|e| self.err(format!("cannot read the side topic {}'s metadata: {e}", side.topic)))?;
        match metadata.topics().iter().find(|t| t.name() == side.topic) {
            Some(t) if t.error().is_none() && t.partitions().len() == 1 => {}
            Some(t) if t.error().is_none() && t.partitions().len() > 1 => {
                return Err(self.err(format!("the side topic {} has {} partitions; it must have one", side.topic, t.partitions().len())))
            }
            None => return Ok(None),
            Some(t) => match t.error() {
                // The one answer that means "no side topic": a log without records.
                Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) | None => return Ok(None),
                // Anything else (no leader now, not authorised) is not "no records": a
                // reader that took it so would decode no record of a registered type.
                Some(e) => return Err(self.err(format!("the side topic {} is not available now ({e:?})", side.topic))),
            },
        }
        let (_, high) = self
            .producer
            .client()
            .fetch_watermarks(&side.topic, 0, Duration::from_millis(METADATA_TIMEOUT_MS))
            .map_err(|e| self.err(format!("cannot read the side topic {}'s end: {e}", side.topic)))?;
        Ok(Some(u64::try_from(high).unwrap_or(0)))
    }

    /// Every record of the side topic, read to its end now (what this process read before
    /// is kept: only new records are fetched). The end is where the broker reports the
    /// partition's end in a fetch answer, and at least its high watermark (Tansu's
    /// watermark counts batches, not records).
    pub(super) fn side_records(&self) -> Result<Vec<SideRecord>, LogError> {
        let mut cache = self.side.lock().unwrap_or_else(|p| p.into_inner());
        let Some(end) = self.side_end()? else { return Ok(cache.records.clone()) };
        // Nothing new (each side record is a batch of its own, so even a broker whose
        // watermark counts batches says so).
        if end == 0 || (cache.next > 0 && end <= cache.next) {
            return Ok(cache.records.clone());
        }
        let side = self.side_target();
        let consumer = assigned_consumer(&side, &self.options, &[(0, cache.next)], true)?;
        let deadline = Instant::now() + Duration::from_millis(READ_TIMEOUT_MS);
        let mut quiet_since = Instant::now();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.err(format!("the side topic {} did not answer up to its end within {READ_TIMEOUT_MS} ms", side.topic)));
            }
            let Some(m) = consumer.poll(left.min(Duration::from_millis(100))) else {
                // A broker that answers a fetch at the end with nothing at all (Tansu): past
                // the watermark, a quiet spell is the end.
                if cache.next >= end && quiet_since.elapsed() >= Duration::from_millis(QUIET_END_MS) {
                    break;
                }
                continue;
            };
            quiet_since = Instant::now();
            let m = match m {
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) if cache.next >= end => break,
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => continue,
                Err(e) => return Err(self.err(format!("reading the side topic {}: {e}", side.topic))),
                Ok(m) => m,
            };
            let offset = u64::try_from(m.offset()).unwrap_or(0);
            if offset < cache.next {
                continue;
            }
            if cache.records.len() >= MAX_SIDE_RECORDS {
                return Err(self.err(format!("the side topic {} holds over {MAX_SIDE_RECORDS} records", side.topic)));
            }
            match m.payload().map(serde_json::from_slice::<SideRecord>) {
                Some(Ok(r)) if admissible(&r) => cache.records.push(r),
                Some(Ok(r)) => {
                    tracing::warn!(topic = %side.topic, offset, hash = %r.hash, "a side record whose content does not hash to its hash, or with no offsets; passed over")
                }
                other => {
                    tracing::warn!(topic = %side.topic, offset, error = ?other.map(|r| r.err()), "a side record questlog cannot read; passed over")
                }
            }
            cache.next = offset + 1;
        }
        let taken = accept_schemas(&cache.records);
        learn_types(&taken);
        let mut hashes = self.schema_hashes.write().unwrap_or_else(|p| p.into_inner());
        for r in &taken {
            if let Ok(s) = Schema::from_record(&r.content, &r.hash) {
                hashes.insert((s.name.clone(), s.version), r.hash.clone());
            }
        }
        drop(hashes);
        Ok(cache.records.clone())
    }

    /// The hash of the schema `name` at `version` ([`SCHEMA_HEADER`]), reading the side
    /// topic again when this process has not seen it.
    pub(super) fn schema_hash(&self, name: &str, version: schema::Version) -> Result<String, LogError> {
        let key = (name.to_string(), version);
        if let Some(h) = self.schema_hashes.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(h.clone());
        }
        self.side_records()?;
        self.schema_hashes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
            .ok_or_else(|| self.err(format!("no schema {name} {version} in the side topic: an event of it cannot be written")))
    }

    /// Creates the side topic (one partition, kept for ever, the events' topic's replicas)
    /// unless it exists.
    fn ensure_side_topic(&self) -> Result<(), LogError> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        if self.side_end()?.is_some() {
            return Ok(());
        }
        let side = self.side_target();
        let replicas = {
            let metadata = self
                .producer
                .client()
                .fetch_metadata(Some(&self.target.topic), Duration::from_millis(METADATA_TIMEOUT_MS))
                .map_err(|e| self.err(format!("cannot read the topic's metadata: {e}")))?;
            metadata.topics().first().and_then(|t| t.partitions().first()).map_or(1, |p| p.replicas().len().max(1) as i32)
        };
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = super::client_config(&self.target, &self.options)
            .create()
            .map_err(|e| self.err(format!("cannot create an admin client: {e}")))?;
        let topic = NewTopic::new(&side.topic, 1, TopicReplication::Fixed(replicas)).set("retention.ms", "-1");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_millis(METADATA_TIMEOUT_MS)));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| self.err(e.to_string()))?;
        let results = rt
            .block_on(admin.create_topics([&topic], &opts))
            .map_err(|e| self.err(format!("cannot create the side topic {}: {e}", side.topic)))?;
        for r in results {
            match r {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(self.err(format!("cannot create the side topic {t}: {code:?}"))),
            }
        }
        // The new topic is known to the brokers once its metadata says so.
        let deadline = Instant::now() + Duration::from_millis(METADATA_TIMEOUT_MS);
        while self.side_end()?.is_none() {
            if Instant::now() > deadline {
                return Err(self.err(format!("the side topic {} was created but is not available", side.topic)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Each partition's end now, for a side record's `from`: its high watermark, or the
    /// next offset after the records a broker holds past it (Tansu's watermark was seen
    /// lagging records it held by hundreds, which put a version in force early). Read
    /// from the watermarks to each partition's end (end-of-partition, a quiet spell, or
    /// [`END_READ_MAX_MS`]): any end reached after the read began is as good — records
    /// checked against the new record come after it is written, after this read.
    fn partition_ends_now(&self) -> Result<Vec<u64>, LogError> {
        let mut ends = (0..self.partitions).map(|p| self.partition_bounds(p).map(|(_, high)| high)).collect::<Result<Vec<u64>, _>>()?;
        let starts: Vec<(u32, u64)> = ends.iter().enumerate().map(|(p, &high)| (p as u32, high)).collect();
        let consumer = assigned_consumer(&self.target, &self.options, &starts, true)?;
        let mut at_end = vec![false; ends.len()];
        let deadline = Instant::now() + Duration::from_millis(END_READ_MAX_MS);
        let mut quiet_since = Instant::now();
        while at_end.iter().any(|e| !e) && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(50)) {
                None if quiet_since.elapsed() >= Duration::from_millis(QUIET_END_MS) => break,
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    if let Some(e) = usize::try_from(p).ok().and_then(|p| at_end.get_mut(p)) {
                        *e = true;
                    }
                }
                Some(Err(e)) => return Err(self.err(format!("reading the partitions' ends: {e}"))),
                Some(Ok(m)) => {
                    quiet_since = Instant::now();
                    if let (Ok(p), Ok(offset)) = (usize::try_from(m.partition()), u64::try_from(m.offset())) {
                        if let Some(end) = ends.get_mut(p) {
                            *end = (*end).max(offset.saturating_add(1));
                        }
                    }
                }
            }
        }
        Ok(ends)
    }

    /// [`KafkaLog::write_side`] of a canonical form given as bytes (`record_schema`,
    /// `record_catalog`): acknowledged when it returns, so its `Pending` is done.
    pub(super) fn record_side(&self, kind: SideKind, hash: &str, content: Vec<u8>) -> Result<crate::log::Pending, LogError> {
        let content = String::from_utf8(content).map_err(|e| self.err(format!("a {kind:?} record that is not text: {e}")))?;
        self.write_side(kind, hash, &content)?;
        Ok(crate::log::Pending::done())
    }

    /// Writes one side record, in force from the events' partitions' ends now, and reads
    /// the side topic again to learn whether readers take it: `Ok` once it is acknowledged
    /// by the brokers (`acks=all`) and taken (or already taken before); `Conflict`
    /// (answered 409 by the API) when another node's record came first and this one clashes
    /// with it. Blocking (network round trips): callers in async code use `spawn_blocking`.
    pub(super) fn write_side(&self, kind: SideKind, hash: &str, content: &str) -> Result<(), LogError> {
        let taken = |records: &[SideRecord]| match kind {
            SideKind::Schema => accept_schemas(records).iter().any(|r| r.hash == hash),
            // A catalogue is written unless it is the one in force; once written it is
            // taken (a catalogue clashes with none), even if another node's came after it.
            SideKind::Catalog => accept_catalogs(records).iter().any(|r| r.hash == hash),
        };
        self.ensure_side_topic()?;
        let before = self.side_records()?;
        let written_already = match kind {
            SideKind::Schema => taken(&before),
            SideKind::Catalog => accept_catalogs(&before).last().is_some_and(|r| r.hash == hash),
        };
        if written_already {
            return Ok(());
        }
        let from = self.partition_ends_now()?;
        let value = serde_json::to_string(&SideRecord { kind, hash: hash.to_string(), content: content.to_string(), from })
            .map_err(|e| self.err(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        let inflight = Arc::new(InFlight {
            waiting: AtomicUsize::new(1),
            positions: Mutex::new(vec![(0, 0)]),
            error: Mutex::new(None),
            reply: Mutex::new(Some(tx)),
            // Its own counters: a side record moves no end of the events' topic.
            counters: Arc::new(Counters::new(1)),
        });
        let side = self.side_target();
        let record: BaseRecord<'_, (), str, _> = BaseRecord::with_opaque_to(&side.topic, Box::new((inflight.clone(), 0)))
            .payload(value.as_str())
            .partition(0)
            .headers(OwnedHeaders::new().insert(Header { key: VALUE_FORMAT_HEADER, value: Some(SIDE_FORMAT) }));
        if let Err((e, _)) = self.producer.send(record) {
            inflight.settle(0, Err(e.to_string()));
        }
        rx.blocking_recv().unwrap_or(Err(LogError::Closed))?;
        if taken(&self.side_records()?) {
            Ok(())
        } else {
            Err(LogError::Conflict(format!(
                "another node recorded a schema this one clashes with first (side topic {}); list the schemas and register again",
                side.topic
            )))
        }
    }
}

/// The offsets' sum, for display (`from_offset`): saturating, whatever a record holds.
fn sum_of(from: &[u64]) -> u64 {
    from.iter().fold(0u64, |a, b| a.saturating_add(*b))
}

/// A record taken after those whose `from` reached `floor`: (`from_offset`, hash, content,
/// its `from` raised to `floor`, which it becomes) — records are in force in the order
/// taken, as on sled.
fn take(r: &SideRecord, floor: &mut Vec<u64>) -> (u64, String, Vec<u8>, Vec<u64>) {
    let from = raised(&r.from, floor);
    floor.clone_from(&from);
    (sum_of(&from), r.hash.clone(), r.content.clone().into_bytes(), from)
}

/// `from` raised to at least `floor` partition by partition (missing partitions are 0).
fn raised(from: &[u64], floor: &[u64]) -> Vec<u64> {
    let n = from.len().max(floor.len());
    (0..n).map(|p| from.get(p).copied().unwrap_or(0).max(floor.get(p).copied().unwrap_or(0))).collect()
}

/// The schema records the side topic's `records` (in their order) put in force: each
/// record whose content is a schema with its hash, not taken before, that passes
/// [`schema::check_against`] the ones taken before it; its `from` raised to its
/// predecessor's. `from_offset` is the sum of `from` (for display; comparisons use
/// `from_partitions`).
pub fn accept_schemas(records: &[SideRecord]) -> Vec<SchemaRecord> {
    let mut taken: Vec<SchemaRecord> = Vec::new();
    let mut known: Vec<Schema> = Vec::new();
    let mut floor: Vec<u64> = Vec::new();
    for r in records.iter().filter(|r| r.kind == SideKind::Schema) {
        if taken.iter().any(|t| t.hash == r.hash) {
            continue;
        }
        let Ok(s) = Schema::from_record(r.content.as_bytes(), &r.hash) else { continue };
        match schema::check_against(&known, &s) {
            Ok(schema::Evolution::NewTable | schema::Evolution::Addition { .. }) => {}
            Ok(schema::Evolution::Unchanged) | Err(_) => continue,
        }
        let (from_offset, hash, content, from_partitions) = take(r, &mut floor);
        taken.push(SchemaRecord { from_offset, hash, content, from_partitions });
        known.push(s);
    }
    taken
}

/// Whether readers keep a record they read ([`KafkaLog::side_records`] checks each once):
/// a catalogue's content hashes to its hash (a schema's is checked when it is parsed), and
/// every record names the offsets it is in force from (questlog writes one per partition;
/// readers tell a topic's records from a sled log's by them).
pub fn admissible(r: &SideRecord) -> bool {
    !r.from.is_empty() && (r.kind != SideKind::Catalog || schema::content_hash(r.content.as_bytes()) == r.hash)
}

/// The catalogue records in force, of the [`admissible`] records read: each that is not
/// the latest taken already, its `from` raised to its predecessor's. (Whether the content
/// is a catalogue is for `crate::catalog` to say: it passes over a record that is not.)
pub fn accept_catalogs(records: &[SideRecord]) -> Vec<CatalogRecord> {
    let mut taken: Vec<CatalogRecord> = Vec::new();
    let mut floor: Vec<u64> = Vec::new();
    // `admissible` (its hash) was checked when the record was read; its offsets are again
    // here, cheaply, for callers that give records of their own.
    for r in records.iter().filter(|r| r.kind == SideKind::Catalog && !r.from.is_empty()) {
        if taken.last().is_some_and(|t| t.hash == r.hash) {
            continue;
        }
        let (from_offset, hash, content, from_partitions) = take(r, &mut floor);
        taken.push(CatalogRecord { from_offset, hash, content, from_partitions });
    }
    taken
}

/// Whether a record in force from `from` (per partition) is in force for a reader whose
/// position is `at` (per partition: the next offset it reads, or has read to): once any
/// partition has reached its `from`. Events of a type checked against the record are only
/// ever at or past `from` in their partition, so whichever partition brings the first of
/// them, the record is in force by then; and the rule only grows with `at`.
pub fn in_force(from: &[u64], at: &[u64]) -> bool {
    from.is_empty() || from.iter().enumerate().any(|(p, f)| at.get(p).is_some_and(|a| a >= f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(version: &str, extra: &str) -> (String, String) {
        let text = format!(
            r#"{{"$schema":"{}","self":{{"vendor":"com.example.game","name":"level_up","format":"jsonschema","version":"{version}"}},"type":"object","properties":{{"level":{{"type":"integer"}}{extra}}}}}"#,
            schema::IGLU_META_SCHEMA
        );
        let s = Schema::parse(text.as_bytes()).unwrap();
        (s.canonical().to_string(), s.hash())
    }

    fn record(version: &str, extra: &str, from: &[u64]) -> SideRecord {
        let (content, hash) = doc(version, extra);
        SideRecord { kind: SideKind::Schema, hash, content, from: from.to_vec() }
    }

    #[test]
    fn readers_take_the_same_records_whoever_wrote_them() {
        let first = record("1-0-0", "", &[5, 3]);
        // Another node's 1-0-0 with other content, written after: a clash, not taken.
        let rival = record("1-0-0", r#","zone":{"type":"string"}"#, &[6, 3]);
        let again = first.clone();
        // An ADDITION written with a lower watermark in partition 1 (another node saw less):
        // raised to its predecessor's.
        let addition = record("1-0-1", r#","zone":{"type":"string"}"#, &[9, 1]);
        let taken = accept_schemas(&[first.clone(), rival, again, addition.clone()]);
        assert_eq!(taken.iter().map(|t| t.hash.as_str()).collect::<Vec<_>>(), [first.hash.as_str(), addition.hash.as_str()]);
        assert_eq!(taken[0].from_partitions, [5, 3]);
        assert_eq!(taken[1].from_partitions, [9, 3]);
        assert_eq!(taken[1].from_offset, 12);
        // Not a schema, or another hash than its content's: not taken.
        let mut forged = record("1-0-2", r#","x":{"type":"string"}"#, &[10, 3]);
        forged.hash = "sha256:00".into();
        assert_eq!(accept_schemas(&[forged]).len(), 0);
    }

    #[test]
    fn a_record_is_in_force_once_any_partition_reaches_its_from() {
        assert!(!in_force(&[5, 3], &[4, 2]));
        assert!(in_force(&[5, 3], &[4, 3]));
        assert!(in_force(&[5, 3], &[5, 0]));
        // A partition added after the record: from 0 there.
        assert!(in_force(&[5, 3, 0], &[0, 0, 0]));
        assert!(in_force(&[], &[0]));
    }

    #[test]
    fn catalogues_are_taken_unless_the_latest_already_or_not_their_hash() {
        let hash = |content: &str| schema::content_hash(content.as_bytes());
        let c = |content: &str, from: &[u64]| SideRecord {
            kind: SideKind::Catalog,
            hash: hash(content),
            content: content.into(),
            from: from.to_vec(),
        };
        let (a, b) = (hash("a"), hash("b"));
        let mut forged = c("b", &[3]);
        forged.content = "x".into();
        let huge = c("b", &[u64::MAX, u64::MAX]);
        let read: Vec<SideRecord> =
            [c("a", &[1]), c("a", &[2]), forged, c("b", &[0]), c("a", &[4]), huge].into_iter().filter(admissible).collect();
        let taken = accept_catalogs(&read);
        assert_eq!(
            taken.iter().map(|t| (t.hash.as_str(), t.from_offset)).collect::<Vec<_>>(),
            [(a.as_str(), 1), (b.as_str(), 1), (a.as_str(), 4), (b.as_str(), u64::MAX)]
        );
        assert_ne!(a, b);
        // No offsets: not a topic's record (readers would take it for a sled log's).
        assert!(!admissible(&c("a", &[])) && admissible(&c("a", &[0])));
    }
}
