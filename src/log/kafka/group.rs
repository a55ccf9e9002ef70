//! A member of a Kafka consumer group (`project --follow --group`, `serve`): the group's
//! coordinator gives each member some of the topic's partitions, and the member reads
//! them from the offsets its caller's tables hold, with one consumer kept from read to
//! read (no consumer made per step).
//!
//! Invariants:
//! - Offsets are never committed to Kafka: where a partition starts is asked of the
//!   caller ([`StartsFn`], the tables' `txn`s) each time it is assigned, inside the
//!   rebalance callback, before any record of it is fetched.
//! - A batch holds records of one assignment ([`GroupBatch::generation`]): a rebalance
//!   in the middle of a read drops what was read, and the next batch starts where the
//!   new assignment says.
//! - Every partition's records come in offset order, from the start its assignment gave.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{consumer_config, KafkaTarget, RawValue};
use crate::log::LogError;

/// Where each newly assigned partition starts: given the partitions, their next offsets
/// (what the member's tables hold). An error leaves the member without partitions; its
/// next read fails, and the caller joins again.
pub type StartsFn = Box<dyn Fn(&[u32]) -> Result<Vec<u64>, String> + Send + Sync>;

/// How long the coordinator waits for a member that stopped heartbeating (killed, cut
/// off) before giving its partitions to the others. librdkafka's default is 45 s; 6 s
/// moves a killed member's partitions within ~10 s (measured on Tansu and Nisshi), with
/// heartbeats every [`GROUP_HEARTBEAT_INTERVAL_MS`].
pub const GROUP_SESSION_TIMEOUT_MS: u64 = 6_000;
/// A third of the session timeout, as Kafka advises.
pub const GROUP_HEARTBEAT_INTERVAL_MS: u64 = 2_000;
/// How long a member may go without polling before it is taken out of the group — and
/// what librdkafka sends as the rebalance timeout, the longest a coordinator waits for
/// every member to rejoin. librdkafka's default is 300 s; a rebalance after kills was seen
/// to wait for members that never heard of it (CONTRACT 11.4's known problem), so the
/// wait is bounded to a minute. A member's longest stretch without a poll is one step
/// (a catch-up step of 500,000 records, or refilling a dedup window: seconds).
pub const GROUP_MAX_POLL_INTERVAL_MS: u64 = 60_000;
/// Bytes of values one batch holds at most (besides [`GroupMember::poll_batch`]'s count):
/// a step of 500,000 values of 8 KiB would otherwise hold 4 GiB.
pub const MAX_GROUP_BATCH_BYTES: usize = 64 << 20;

/// What a rebalance left: the partitions held and where each starts.
#[derive(Default)]
struct Assignment {
    /// Bumped by every assignment and revocation.
    generation: u64,
    starts: BTreeMap<u32, u64>,
    /// Why the last assignment could not be taken (its starts were not known).
    error: Option<String>,
    /// An offset out of range (a start the topic no longer holds).
    out_of_range: Option<String>,
}

struct GroupContext {
    topic: String,
    starts: StartsFn,
    state: Mutex<Assignment>,
}

impl GroupContext {
    fn state(&self) -> std::sync::MutexGuard<'_, Assignment> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for GroupContext {
    /// librdkafka's own log (`--kafka-option debug=cgrp` asks for the group's), through
    /// `tracing` (`QUESTLOG_LOG=questlog=debug` shows its debug lines).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(fac, "librdkafka: {message}"),
            L::Warning => tracing::warn!(fac, "librdkafka: {message}"),
            L::Notice | L::Info => tracing::info!(fac, "librdkafka: {message}"),
            L::Debug => tracing::debug!(fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
            KafkaError::Global(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange) => {
                self.state().out_of_range = Some(reason.to_string());
            }
            _ => tracing::warn!(error = %error, reason, "Kafka client error"),
        }
    }
}

impl ConsumerContext for GroupContext {
    /// Takes an assignment at the offsets the tables hold (not committed offsets: there
    /// are none), or gives the partitions up. The eager protocol: every rebalance revokes
    /// all, then assigns anew.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<u32> =
                    tpl.elements_for_topic(&self.topic).iter().filter_map(|e| u32::try_from(e.partition()).ok()).collect();
                let starts = (self.starts)(&partitions).and_then(|starts| {
                    if starts.len() != partitions.len() {
                        return Err(format!("{} starts for {} partitions", starts.len(), partitions.len()));
                    }
                    for (&p, &o) in partitions.iter().zip(&starts) {
                        let o = i64::try_from(o).map_err(|_| format!("offset {o} is out of Kafka's range"))?;
                        tpl.set_partition_offset(&self.topic, p as i32, Offset::Offset(o)).map_err(|e| e.to_string())?;
                    }
                    Ok(starts)
                });
                let mut state = self.state();
                state.generation += 1;
                match starts {
                    Ok(starts) => match consumer.assign(tpl) {
                        Ok(()) => {
                            tracing::info!(partitions = ?partitions, starts = ?starts, "this member now holds partitions");
                            state.starts = partitions.into_iter().zip(starts).collect();
                        }
                        Err(e) => state.error = Some(format!("cannot take partitions {partitions:?}: {e}")),
                    },
                    Err(e) => {
                        let _ = consumer.assign(&TopicPartitionList::new());
                        state.error = Some(format!("cannot tell where partitions {partitions:?} start: {e}"));
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut state = self.state();
                tracing::info!(partitions = ?state.starts.keys().collect::<Vec<_>>(), "this member gives up its partitions");
                state.generation += 1;
                state.starts.clear();
                let _ = consumer.unassign();
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "consumer group rebalance failed");
                let mut state = self.state();
                state.generation += 1;
                state.starts.clear();
                let _ = consumer.unassign();
            }
        }
    }
}

/// What one [`GroupMember::poll_batch`] read.
#[derive(Debug, Default)]
pub struct GroupBatch {
    /// The assignment the batch belongs to: a new one means the member's partitions (or
    /// their starts) changed, and this batch begins at the starts the tables gave.
    pub generation: u64,
    /// The partitions held, each with the offset this batch starts at.
    pub from: BTreeMap<u32, u64>,
    /// Values read, per partition held, in offset order.
    pub values: BTreeMap<u32, Vec<RawValue>>,
    /// Whether every partition held was at its end when the read stopped.
    pub at_end: bool,
}

impl GroupBatch {
    pub fn len(&self) -> usize {
        self.values.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One member of a consumer group reading one topic (see the module docs).
pub struct GroupMember {
    consumer: BaseConsumer<GroupContext>,
    target: KafkaTarget,
    group: String,
    /// The generation the last batch belonged to.
    generation: u64,
    /// Per partition held: the next offset to hand out.
    next: BTreeMap<u32, u64>,
    /// Partitions whose end was reached after their last record.
    eof: BTreeSet<u32>,
}

impl GroupMember {
    /// Joins `group` on `target`'s topic (with the log's client `options`); partitions
    /// come with the first reads.
    pub fn join(target: &KafkaTarget, options: &[(String, String)], group: &str, starts: StartsFn) -> Result<GroupMember, LogError> {
        let err = |message: String| LogError::Kafka { brokers: target.brokers.clone(), topic: target.topic.clone(), message };
        let context = GroupContext { topic: target.topic.clone(), starts, state: Mutex::new(Assignment::default()) };
        let mut config = consumer_config(target, options, false);
        if options.iter().any(|(k, _)| k == "debug") {
            // librdkafka's debug lines reach `tracing` only at this level.
            config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        let consumer: BaseConsumer<GroupContext> = config
            .set("group.id", group)
            // Where a member is lives in its tables' commits, not in Kafka.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            // Eager: a rebalance revokes every partition before any is assigned again, so a
            // member that still polls has stopped reading a partition before another takes it.
            .set("partition.assignment.strategy", "roundrobin")
            .set("session.timeout.ms", GROUP_SESSION_TIMEOUT_MS.to_string())
            .set("heartbeat.interval.ms", GROUP_HEARTBEAT_INTERVAL_MS.to_string())
            .set("max.poll.interval.ms", GROUP_MAX_POLL_INTERVAL_MS.to_string())
            .create_with_context(context)
            .map_err(|e| err(format!("cannot create a consumer for group {group}: {e}")))?;
        consumer.subscribe(&[&target.topic]).map_err(|e| err(format!("cannot join group {group}: {e}")))?;
        Ok(GroupMember {
            consumer,
            target: target.clone(),
            group: group.to_string(),
            generation: 0,
            next: BTreeMap::new(),
            eof: BTreeSet::new(),
        })
    }

    /// The one reader of every partition of `target`'s topic (`partitions` of them), in no
    /// group: assigned them all at the offsets `starts` gives, with the same batches as a
    /// member's (a projector alone on the topic keeps this consumer). `to_end`: it stops at
    /// the partitions' ends (a one-shot `project`; see `END_FETCH_WAIT_MS`).
    pub fn assign_all(
        target: &KafkaTarget,
        options: &[(String, String)],
        partitions: u32,
        starts: StartsFn,
        to_end: bool,
    ) -> Result<GroupMember, LogError> {
        let err = |message: String| LogError::Kafka { brokers: target.brokers.clone(), topic: target.topic.clone(), message };
        let all: Vec<u32> = (0..partitions).collect();
        let offsets = starts(&all).map_err(|e| err(format!("cannot tell where the partitions start: {e}")))?;
        if offsets.len() != all.len() {
            return Err(err(format!("{} starts for {} partitions", offsets.len(), all.len())));
        }
        let context = GroupContext { topic: target.topic.clone(), starts, state: Mutex::new(Assignment::default()) };
        let consumer: BaseConsumer<GroupContext> = consumer_config(target, options, to_end)
            // librdkafka wants a group id even for assigned partitions; nothing joins or
            // commits with it.
            .set("group.id", "questlog-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            .create_with_context(context)
            .map_err(|e| err(format!("cannot create a consumer: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in all.iter().zip(&offsets) {
            let o = i64::try_from(o).map_err(|_| err(format!("offset {o} is out of Kafka's range")))?;
            tpl.add_partition_offset(&target.topic, p as i32, Offset::Offset(o)).map_err(|e| err(format!("partition {p} at {o}: {e}")))?;
        }
        consumer.assign(&tpl).map_err(|e| err(format!("cannot read partitions {all:?}: {e}")))?;
        {
            let mut state = consumer.context().state();
            state.generation = 1;
            state.starts = all.into_iter().zip(offsets).collect();
        }
        Ok(GroupMember {
            consumer,
            target: target.clone(),
            group: "(none)".to_string(),
            generation: 0,
            next: BTreeMap::new(),
            eof: BTreeSet::new(),
        })
    }

    fn err(&self, message: String) -> LogError {
        LogError::Kafka { brokers: self.target.brokers.clone(), topic: self.target.topic.clone(), message }
    }

    /// Reads at most `max_values` values of the partitions held: waits up to `wait` for
    /// the first, then reads on until every partition held is at its end, `linger` has
    /// passed since the first, or the batch holds [`MAX_GROUP_BATCH_BYTES`]. A rebalance
    /// ends the read at once with an empty batch of the new generation. With `until_end`
    /// (a one-shot projection), partitions that are all at their end end the read at once,
    /// even before a first value (a follower waits out `wait` then, so that an idle one
    /// does not spin).
    pub fn poll_batch(&mut self, max_values: usize, wait: Duration, linger: Duration, until_end: bool) -> Result<GroupBatch, LogError> {
        let started = Instant::now();
        let mut batch = GroupBatch { generation: self.generation, from: self.next.clone(), ..GroupBatch::default() };
        let mut bytes = 0usize;
        let mut first: Option<Instant> = None;
        loop {
            if take_assignment(&self.consumer, &mut self.generation, &mut self.next, &mut self.eof, &mut batch)
                .map_err(|e| self.err(format!("group {}: {e}", self.group)))?
            {
                return Ok(batch);
            }
            let deadline = match first {
                Some(at) => at + linger,
                None => started + wait,
            };
            let now = Instant::now();
            let all_at_end = !self.next.is_empty() && self.next.keys().all(|p| self.eof.contains(p));
            if now >= deadline
                || batch.len() >= max_values
                || bytes >= MAX_GROUP_BATCH_BYTES
                || (all_at_end && (first.is_some() || until_end))
            {
                batch.at_end = all_at_end;
                return Ok(batch);
            }
            let polled = self.consumer.poll((deadline - now).min(Duration::from_millis(100)));
            // The poll may have run a rebalance callback before it returned a record: that
            // record belongs to the new assignment, and what was read before does not.
            if take_assignment(&self.consumer, &mut self.generation, &mut self.next, &mut self.eof, &mut batch).map_err(|e| {
                LogError::Kafka {
                    brokers: self.target.brokers.clone(),
                    topic: self.target.topic.clone(),
                    message: format!("group {}: {e}", self.group),
                }
            })? {
                bytes = 0;
                first = None;
            }
            match polled {
                None => {
                    if all_at_end && started.elapsed() >= wait {
                        batch.at_end = true;
                        return Ok(batch);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Ok(p) = u32::try_from(p) {
                        self.eof.insert(p);
                    }
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange))) => {
                    return Err(self.err(format!("an offset of partitions {:?} is out of range", self.next)));
                }
                // A record the client could not read (a bad checksum, a compression or
                // format it cannot decode): librdkafka moves past it, and a batch that went
                // on would move the tables past records never projected nor kept as
                // rejected. The step fails; the member reads again from the tables.
                Some(Err(
                    e @ KafkaError::MessageConsumption(
                        RDKafkaErrorCode::BadMessage
                        | RDKafkaErrorCode::BadCompression
                        | RDKafkaErrorCode::InvalidMessage
                        | RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::UnsupportedForMessageFormat
                        | RDKafkaErrorCode::InvalidRecord,
                    ),
                )) => return Err(self.err(format!("group {}: reading partitions {:?}: {e}", self.group, self.next))),
                // Brokers down or unreachable: librdkafka retries.
                Some(Err(e)) => tracing::warn!(error = %e, group = %self.group, "Kafka consumer error"),
                Some(Ok(m)) => {
                    let (Ok(p), Ok(offset)) = (u32::try_from(m.partition()), u64::try_from(m.offset())) else { continue };
                    // A record of a partition no longer held, or before where it starts
                    // (fetched before a seek): not this batch's.
                    let Some(next) = self.next.get_mut(&p) else { continue };
                    if offset < *next {
                        continue;
                    }
                    *next = offset + 1;
                    self.eof.remove(&p);
                    let value = RawValue::of(&m, offset);
                    bytes += value.payload.len() + 64;
                    batch.values.entry(p).or_default().push(value);
                    first.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    /// Reads the partitions held from `starts` on (after a step that did not land): the
    /// next batch begins there.
    pub fn seek(&mut self, starts: &BTreeMap<u32, u64>) -> Result<(), LogError> {
        for (&p, &o) in starts {
            if !self.next.contains_key(&p) {
                continue;
            }
            let offset = i64::try_from(o).map_err(|_| self.err(format!("offset {o} is out of Kafka's range")))?;
            self.consumer
                .seek(&self.target.topic, p as i32, Offset::Offset(offset), Duration::from_secs(10))
                .map_err(|e| self.err(format!("cannot read partition {p} again from {o}: {e}")))?;
            self.next.insert(p, o);
            self.eof.remove(&p);
        }
        Ok(())
    }
}

/// Takes a new assignment made since `generation` (or fails with the error the rebalance
/// callback met): `batch` becomes an empty batch of the new generation, from its starts,
/// and `next`/`eof` follow. Whether there was one. (A function of the member's fields, not
/// a method: a record polled from `consumer` is borrowed from it meanwhile.)
fn take_assignment(
    consumer: &BaseConsumer<GroupContext>,
    generation: &mut u64,
    next: &mut BTreeMap<u32, u64>,
    eof: &mut BTreeSet<u32>,
    batch: &mut GroupBatch,
) -> Result<bool, String> {
    let mut state = consumer.context().state();
    if let Some(e) = state.error.take() {
        return Err(e);
    }
    if let Some(reason) = state.out_of_range.take() {
        return Err(format!("an offset of partitions {:?} is out of range ({reason})", state.starts));
    }
    if state.generation == *generation {
        return Ok(false);
    }
    *generation = state.generation;
    *next = state.starts.clone();
    drop(state);
    eof.clear();
    *batch = GroupBatch { generation: *generation, from: next.clone(), ..GroupBatch::default() };
    Ok(true)
}
