//! Projection from a Kafka topic: the tables follow each partition's offset, drop re-sent
//! events per partition, and keep the values that do not decode as rejected events with
//! their partition and offset.
//!
//! Invariants:
//! - A table's commit carries the next offset of every partition (`txn` actions, see
//!   [`super::Layout::Topic`]); a projector resumes from those offsets and nowhere else.
//!   Steps (`project`, `project --follow`, group members) are `group.rs`'s; this file
//!   holds the rebuild, the windows and the rejected values.
//! - A rebuild reads the partitions one after another, each in offset order, in one step,
//!   so two rebuilds of the same topic write the same bytes.
//! - Whether a row is a re-sent copy depends only on its partition's earlier records
//!   within [`TOPIC_DEDUP_WINDOW_OFFSETS`] offsets (every occurrence, dropped copies too,
//!   of those the partition still holds): the same in every run, however the steps are
//!   cut and wherever a projector started.
//! - A value is kept as rejected before any table commit moves past its offset, and by one
//!   projector per topic and data dir (it holds a lock while it runs).

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;

use super::{
    failpoint, fsync_dir, io_err, write_rows, CommitKind, FileEntry, ProjectError, ProjectSummary, Projector, RowSink, TableDef, TableSet,
    TableSink, PARQUET_WRITERS,
};
use crate::event::RejectedEvent;
use crate::log::{event_id_key, EventLog, PartitionItem, Scanned, ValueFormat};
use std::sync::Arc;

/// Where a projector from a topic keeps the values it could not project, under its data
/// dir: one JSON line per value, a file per partition (`<topic>/p<P>.jsonl`).
pub const SOURCE_REJECTED_DIR: &str = "source-rejected";

/// Bytes of rejected values' lines held before they are written: a step of 500,000
/// values that all fail to decode held them all (up to ~4 GiB at 8 KiB a value); past
/// this they are written and synced at once, which the recording's idempotence allows.
pub const MAX_PENDING_REJECTED_BYTES: usize = 1 << 20;

/// The lock file in a topic's rejected-values directory: held by the one projector of
/// that topic on this data dir for as long as it runs.
const PROJECTOR_LOCK: &str = ".projector.lock";

/// How far back, in offsets of its partition, an `event_id` is remembered to drop a
/// re-sent copy. A re-send comes from a client retrying after a 503 or a timeout, seconds
/// after its first copy; 250k offsets is minutes of a busy partition. It costs ~10 MiB per
/// partition, and a projector that starts reads that many records back to fill it.
pub const TOPIC_DEDUP_WINDOW_OFFSETS: u64 = 250_000;

/// The `event_id`s of one partition's last [`TOPIC_DEDUP_WINDOW_OFFSETS`] offsets: every
/// occurrence, the copies dropped too (contract 11.2: a record is dropped when its id
/// appeared within the window before it), so whether a record is dropped depends only on
/// the offsets before it, not on where a projector started reading.
#[derive(Default)]
pub(super) struct Window {
    /// Each id in the window, with its latest occurrence.
    latest: HashMap<u128, u64>,
    /// (offset, key) of every occurrence, oldest first.
    order: VecDeque<(u64, u128)>,
    /// The offset the window is filled up to (exclusive); `None` when not filled yet.
    pub(super) next: Option<u64>,
}

impl Window {
    /// Whether the record at `offset` with `key` is the first copy of its event within
    /// the window (a record without an `event_id` always is), remembering it.
    pub(super) fn admit(&mut self, offset: u64, key: Option<u128>) -> bool {
        while let Some(&(o, k)) = self.order.front() {
            if o.saturating_add(TOPIC_DEDUP_WINDOW_OFFSETS) > offset {
                break;
            }
            self.order.pop_front();
            // Gone with its latest occurrence only.
            if self.latest.get(&k) == Some(&o) {
                self.latest.remove(&k);
            }
        }
        let Some(k) = key else { return true };
        self.order.push_back((offset, k));
        self.latest.insert(k, offset).is_none()
    }

    /// Fills the window for a read of partition `p` from `from`, unless it already is:
    /// from [`TOPIC_DEDUP_WINDOW_OFFSETS`] back, or from where the partition now begins
    /// when retention or DeleteRecords moved its start past that (a rebuild, which reads
    /// from there, sees no more).
    pub(super) fn fill_to(&mut self, log: &dyn EventLog, p: u32, format: ValueFormat, from: u64) -> Result<(), ProjectError> {
        if self.next == Some(from) {
            return Ok(());
        }
        *self = Window::default();
        let (first, _) = log.partition_bounds(p)?;
        let start = from.saturating_sub(TOPIC_DEDUP_WINDOW_OFFSETS).max(first.min(from));
        if from > start {
            crate::log::for_each_prefetched(
                log.scan_partition(p, start, from, format)?,
                |offset, value: Scanned| -> Result<(), ProjectError> {
                    match value {
                        Ok(r) => {
                            self.admit(offset, key_of(&r));
                        }
                        // Its key is not known: the window cannot be trusted without it.
                        Err(r) if crate::log::kafka::side::unknown_schema(&r.rejection.message) => {
                            return Err(ProjectError::Schema {
                                table: format!("partition {p}"),
                                reason: format!("refilling the dedup window at offset {offset}: {}", r.rejection.message),
                            })
                        }
                        Err(_) => {}
                    }
                    Ok(())
                },
            )?;
        }
        self.next = Some(from);
        Ok(())
    }
}

/// The records of partition `p`, from where it now begins to its end now, that a projection
/// of the whole topic takes (contract 11.2: values that decode, each event's first copy
/// within [`TOPIC_DEDUP_WINDOW_OFFSETS`]), in offset order, for readers besides the
/// projector that must count what the tables count (`serve --catalog`'s stock book).
/// Returns how many values were read.
pub fn for_each_taken(
    log: &dyn EventLog,
    p: u32,
    format: ValueFormat,
    mut f: impl FnMut(u64, &crate::event::Record),
) -> Result<u64, ProjectError> {
    let (first, to) = log.partition_bounds(p)?;
    let mut window = Window::default();
    let mut values = 0;
    for item in log.scan_partition(p, first, to, format)? {
        let (offset, value) = item?;
        values += 1;
        if let Ok(r) = value {
            if window.admit(offset, key_of(&r)) {
                f(offset, &r);
            }
        }
    }
    Ok(values)
}

pub(super) fn key_of(r: &crate::event::Record) -> Option<u128> {
    r.event.event_id.as_deref().map(|id| event_id_key(r.meta.app.as_deref(), id))
}

/// The values of a topic that did not decode or validate, kept by the projector with
/// their partition and offset (see [`SOURCE_REJECTED_DIR`]). Recording is idempotent: a
/// step that runs again after a crash records nothing twice.
pub struct SourceRejects {
    dir: PathBuf,
    topic: String,
    /// Per partition: the highest offset recorded so far.
    last: Vec<Option<u64>>,
    /// Lines not yet written, per partition.
    pending: Vec<String>,
    /// Held (an exclusive lock) while this store is open: two projectors of one topic on
    /// one data dir would append the same values twice.
    _lock: File,
}

impl SourceRejects {
    /// Opens (creating) the store of `topic` under `data_dir`, finishing a line a crash cut.
    pub fn open(data_dir: &Path, topic: &str, partitions: u32) -> Result<SourceRejects, ProjectError> {
        let dir = data_dir.join(SOURCE_REJECTED_DIR).join(topic);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let lock_path = dir.join(PROJECTOR_LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("opening {}", lock_path.display())))?;
        if fs2::FileExt::try_lock_exclusive(&lock).is_err() {
            return Err(ProjectError::Io {
                context: format!("projecting topic {topic} into the data dir {}", data_dir.display()),
                source: std::io::Error::other(format!(
                    "another projector of this topic holds {} (a running `project --follow`?): run one per data dir",
                    lock_path.display()
                )),
            });
        }
        let mut last = vec![None; partitions as usize];
        for (p, slot) in last.iter_mut().enumerate() {
            let path = dir.join(format!("p{p}.jsonl"));
            let Ok(file) = File::open(&path) else { continue };
            let mut good_len = 0u64;
            let mut len = 0u64;
            for line in BufReader::new(file).split(b'\n') {
                let line = line.map_err(io_err(format!("reading {}", path.display())))?;
                len += line.len() as u64 + 1;
                if let Some(offset) = serde_json::from_slice::<serde_json::Value>(&line).ok().and_then(|v| v["offset"].as_u64()) {
                    *slot = Some(offset);
                    good_len = len;
                }
            }
            // A line cut by a crash (no newline, or not JSON) goes; its value is recorded
            // again when its step runs again.
            let f = OpenOptions::new().write(true).open(&path).map_err(io_err(format!("opening {}", path.display())))?;
            if f.metadata().map(|m| m.len()).unwrap_or(0) > good_len {
                f.set_len(good_len).map_err(io_err(format!("truncating {}", path.display())))?;
                f.sync_all().map_err(io_err(format!("syncing {}", path.display())))?;
            }
        }
        Ok(SourceRejects { dir, topic: topic.to_string(), last, pending: vec![String::new(); partitions as usize], _lock: lock })
    }

    /// Queues the value at `offset` of partition `p` (unless already recorded); writes
    /// the queue once it holds [`MAX_PENDING_REJECTED_BYTES`].
    pub(super) fn record(&mut self, p: u32, offset: u64, rejected: &RejectedEvent) -> Result<(), ProjectError> {
        let p = p as usize;
        if self.last[p].is_some_and(|last| offset <= last) {
            return Ok(());
        }
        self.last[p] = Some(offset);
        let line = serde_json::json!({
            "topic": self.topic,
            "partition": p,
            "offset": offset,
            "kafka_timestamp": crate::event::format_time_us(rejected.received_at_us),
            "reason": rejected.rejection.reason.as_str(),
            "field": rejected.rejection.field,
            "message": rejected.rejection.message,
            "raw": rejected.raw,
        });
        self.pending[p].push_str(&line.to_string());
        self.pending[p].push('\n');
        if self.pending.iter().map(String::len).sum::<usize>() >= MAX_PENDING_REJECTED_BYTES {
            self.sync()?;
        }
        Ok(())
    }

    /// Bytes of lines queued, not yet written.
    #[cfg(test)]
    fn pending_bytes(&self) -> usize {
        self.pending.iter().map(String::len).sum()
    }

    /// Writes and syncs the queued lines.
    pub(super) fn sync(&mut self) -> Result<(), ProjectError> {
        for (p, lines) in self.pending.iter_mut().enumerate() {
            if lines.is_empty() {
                continue;
            }
            let path = self.dir.join(format!("p{p}.jsonl"));
            let created = !path.exists();
            let mut f = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(format!("opening {}", path.display())))?;
            f.write_all(lines.as_bytes()).and_then(|()| f.sync_all()).map_err(io_err(format!("writing {}", path.display())))?;
            if created {
                fsync_dir(&self.dir)?;
            }
            lines.clear();
        }
        Ok(())
    }

    /// Every recorded line of every topic under `data_dir`, partition by partition.
    pub fn list(data_dir: &Path) -> Result<Vec<String>, ProjectError> {
        let root = data_dir.join(SOURCE_REJECTED_DIR);
        let mut out = Vec::new();
        let Ok(topics) = fs::read_dir(&root) else { return Ok(out) };
        let mut topics: Vec<PathBuf> = topics.flatten().map(|e| e.path()).collect();
        topics.sort();
        for t in topics {
            let mut files: Vec<(u32, PathBuf)> = fs::read_dir(&t)
                .map_err(io_err(format!("reading {}", t.display())))?
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let p = name.strip_prefix('p')?.strip_suffix(".jsonl")?.parse().ok()?;
                    Some((p, e.path()))
                })
                .collect();
            files.sort();
            for (_, path) in files {
                let text = fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
                out.extend(text.lines().map(str::to_string));
            }
        }
        Ok(out)
    }
}

/// A projector's state for a topic: dedup windows and the rejected values' store.
pub(super) struct TopicState {
    pub(super) windows: Vec<Window>,
    pub(super) rejects: SourceRejects,
    /// A consumer-group member's consumer (`group.rs`), once joined.
    pub(super) member: Option<crate::log::kafka::group::GroupMember>,
    /// The assignment the member's last step belonged to.
    pub(super) generation: u64,
}

impl TopicState {
    pub(super) fn open(data_dir: &Path, topic: &str, partitions: u32) -> Result<TopicState, ProjectError> {
        Ok(TopicState {
            windows: (0..partitions).map(|_| Window::default()).collect(),
            rejects: SourceRejects::open(data_dir, topic, partitions)?,
            member: None,
            generation: 0,
        })
    }
}

/// What [`read_topic`] wrote and reached.
struct TopicRead {
    files: Vec<Vec<FileEntry>>,
    /// Per partition: one past the last offset read (the `from` given when none was).
    reached: Vec<u64>,
    events: u64,
    duplicates: u64,
    rejected: u64,
}

/// Where partition `p`'s read of `from..limit` leaves it, given `reached` (one past the
/// last record read) and the partition's end as the brokers gave it before the read
/// (`end`). A read that stopped short of its limit while the partition went on past it
/// passed offsets the topic skips (transaction markers, compacted records): every offset
/// below the limit was passed (`verify`'s rebuild up to the tables' offsets must reach
/// them exactly). (`end` can lag the records a broker serves — Tansu's does — so it only
/// ever tells a gap, never an end.)
fn settle(reached: u64, limit: u64, end: u64) -> u64 {
    if reached < limit && limit < end {
        limit
    } else {
        reached
    }
}

/// Reads each partition `p` from `from[p]` up to `limit[p]` (or its end) and writes the
/// rows of table `i` at offsets from `starts[i][p]` into files in `dirs`. Rows are
/// ordered by partition, then offset; the row at offset `o` of partition `p` has the
/// position (what file names are cut at) `sum(from) + sum(reached[q] - from[q] for q < p)
/// + (o - from[p])`.
#[allow(clippy::too_many_arguments)]
fn read_topic(
    log: &dyn EventLog,
    format: ValueFormat,
    state: &mut TopicState,
    from: &[u64],
    limit: &[u64],
    ends: &[u64],
    starts: &[Vec<u64>],
    dirs: &[PathBuf],
    codec: super::Codec,
    set: &TableSet,
    progress: &ProgressBar,
) -> Result<TopicRead, ProjectError> {
    let n = from.len();
    let mut reached = from.to_vec();
    let (mut events, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
    let defs: Vec<Arc<TableDef>> = set.defs().to_vec();
    let files = write_rows(&defs, dirs, codec, true, PARQUET_WRITERS, |sink: &mut RowSink| {
        let mut base: u64 = from.iter().sum();
        // The partitions are read side by side (their round trips and decoding overlap),
        // and their rows built in partition order.
        let windows = &mut state.windows;
        let rejects = &mut state.rejects;
        crate::log::for_each_partition_prefetched(
            n,
            |p| log.scan_partition(p as u32, from[p], limit[p], format),
            |item: PartitionItem<Scanned>| -> Result<(), ProjectError> {
                let (p, offset, value) = match item {
                    PartitionItem::Begin(p) => {
                        windows[p].fill_to(log, p as u32, format, from[p])?;
                        // Filled up to nowhere until the read ends: a read that fails
                        // half-way leaves the window to be filled again.
                        windows[p].next = None;
                        return Ok(());
                    }
                    PartitionItem::End(p) => {
                        reached[p] = settle(reached[p], limit[p], ends[p]);
                        windows[p].next = Some(reached[p]);
                        base += reached[p] - from[p];
                        return Ok(());
                    }
                    PartitionItem::Item(p, offset, value) => (p, offset, value),
                };
                debug_assert!(offset >= reached[p], "a partition's offsets grow");
                reached[p] = offset + 1;
                events += 1;
                if events % 16_384 == 0 {
                    progress.inc(16_384);
                }
                let record = match value {
                    Ok(r) => r,
                    Err(rejection) if crate::log::kafka::side::unknown_schema(&rejection.rejection.message) => {
                        return Err(ProjectError::Schema {
                            table: format!("partition {p}"),
                            reason: format!("the record at offset {offset}: {}; run it again", rejection.rejection.message),
                        });
                    }
                    Err(rejection) => {
                        rejects.record(p as u32, offset, &rejection)?;
                        rejected += 1;
                        return Ok(());
                    }
                };
                if !windows[p].admit(offset, key_of(&record)) {
                    duplicates += 1;
                    return Ok(());
                }
                let Some(i) = set.table_of(&record.event.payload, || format!("the record at partition {p} offset {offset}"))? else {
                    return Ok(());
                };
                if offset < starts[i][p] {
                    return Ok(()); // this table has it already (a step that stopped half-way)
                }
                sink.push(i, base + (offset - from[p]), offset, p as u32, &record)
            },
        )?;
        progress.inc(events % 16_384);
        Ok(())
    })?;
    Ok(TopicRead { files, reached, events, duplicates, rejected })
}

impl Projector {
    /// Rebuilds the tables from the whole topic (every partition from offset 0 to its
    /// end): one commit per table replaces its files.
    pub(super) fn rebuild_topic(&mut self, log: &dyn EventLog, progress: &ProgressBar) -> Result<ProjectSummary, ProjectError> {
        let started = Instant::now();
        let n = log.partitions() as usize;
        // Every registered type's table, as the side topic has them now, made.
        self.follow(log)?;
        if let Some((_, known)) = self.followed.clone() {
            self.tables.ensure(&known, true)?;
        }
        let dirs: Vec<PathBuf> = self.tables.defs().iter().map(|d| self.tables.staging_dir(d)).collect();
        let state = self.topic.as_mut().expect("a projector from a topic has its state");
        for w in &mut state.windows {
            *w = Window::default();
        }
        // From where each partition begins now (retention and DeleteRecords move it).
        let bounds: Vec<(u64, u64)> = (0..n as u32).map(|p| log.partition_bounds(p)).collect::<Result<_, _>>()?;
        let firsts: Vec<u64> = bounds.iter().map(|b| b.0).collect();
        let ends: Vec<u64> = bounds.iter().map(|b| b.1).collect();
        let defs = self.tables.defs();
        let set = TableSet::of(&defs);
        let state = self.topic.as_mut().expect("a projector from a topic has its state");
        let read = read_topic(
            log,
            self.settings.format,
            state,
            &firsts,
            &vec![u64::MAX; n],
            &ends,
            &vec![vec![0u64; n]; defs.len()],
            &dirs,
            self.settings.codec,
            &set,
            progress,
        )?;
        failpoint("rebuild.before_commit")?;
        state.rejects.sync()?;
        let position: u64 = read.reached.iter().sum();
        let mut summary = ProjectSummary {
            to_offset: position,
            events: read.events,
            duplicates: read.duplicates,
            rejected: read.rejected,
            at_end: true,
            partitioned: true,
            ..ProjectSummary::over(&self.tables.defs())
        };
        for (i, files) in read.files.into_iter().enumerate() {
            summary.written(i, &files);
            let old = self.tables.files(i).to_vec();
            self.tables.commit(i, CommitKind::Replace, &files, &old, position, &read.reached)?;
        }
        self.tables.published(true)?;
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// The next offset of each partition the tables reach (all tables share them once a
    /// step has finished; the smallest per partition otherwise).
    pub fn partition_offsets(&self) -> Vec<u64> {
        let n = self.tables.partition_offsets(0).len();
        (0..n).map(|p| (0..self.tables.defs().len()).map(|i| self.tables.partition_offsets(i)[p]).min().unwrap_or(0)).collect()
    }
}

/// Writes the tables of a topic's partitions up to the offsets `to` (exclusive) as Delta
/// tables under `root` (for `verify`): each partition must reach exactly its offset.
pub fn rebuild_topic_into(
    log: &dyn EventLog,
    format: ValueFormat,
    topic: &str,
    to: &[u64],
    root: &super::TablesRoot,
    work_dir: &Path,
    progress: &ProgressBar,
) -> Result<ProjectSummary, ProjectError> {
    let n = to.len();
    let layout = super::Layout::Topic { topic: topic.to_string(), partitions: n as u32 };
    let set = TableSet::from_log(log, u64::MAX)?;
    let mut tables = super::Tables::scratch(root, work_dir, &layout, &set)?;
    tables.ensure(&set, true)?;
    let dirs: Vec<PathBuf> = tables.defs().iter().map(|d| tables.staging_dir(d)).collect();
    let mut state = TopicState::open(work_dir, topic, n as u32)?;
    let zeros = vec![0u64; n];
    // From where each partition begins now, as a rebuild in place reads it.
    let bounds: Vec<(u64, u64)> = (0..n as u32).map(|p| log.partition_bounds(p)).collect::<Result<_, _>>()?;
    let firsts: Vec<u64> = bounds.iter().zip(to).map(|(b, t)| b.0.min(*t)).collect();
    let ends: Vec<u64> = bounds.iter().map(|b| b.1).collect();
    let read = read_topic(
        log,
        format,
        &mut state,
        &firsts,
        to,
        &ends,
        &vec![zeros.clone(); set.len()],
        &dirs,
        super::Codec::Snappy,
        &set,
        progress,
    )?;
    let position: u64 = to.iter().sum();
    for (i, files) in read.files.into_iter().enumerate() {
        tables.commit(i, CommitKind::Replace, &files, &[], position, to)?;
    }
    Ok(ProjectSummary {
        to_offset: position,
        events: read.events,
        duplicates: read.duplicates,
        rejected: read.rejected,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{RejectReason, Rejection, RequestMeta};

    #[test]
    fn the_window_is_cut_by_offsets_not_by_steps() {
        let k = |n: u128| Some(n);
        let mut w = Window::default();
        assert!(w.admit(0, k(1)));
        assert!(!w.admit(5, k(1)), "a copy within the window is dropped");
        assert!(w.admit(6, None) && w.admit(7, None), "records without an id always pass");
        assert!(!w.admit(TOPIC_DEDUP_WINDOW_OFFSETS - 1, k(1)));
        // The copy at WINDOW - 1 was an occurrence too: one at WINDOW is within its window.
        assert!(!w.admit(TOPIC_DEDUP_WINDOW_OFFSETS, k(1)), "a copy within the window of the latest occurrence is dropped");
        assert!(w.admit(2 * TOPIC_DEDUP_WINDOW_OFFSETS, k(1)), "a copy past the window of the latest occurrence lands again");
        // Two windows fed the same offsets decide the same, whatever was asked in between.
        let mut a = Window::default();
        let mut b = Window::default();
        let ids = [3u128, 4, 3, 5, 4, 3];
        let got_a: Vec<bool> = ids.iter().enumerate().map(|(o, id)| a.admit(o as u64 * 100_000, Some(*id))).collect();
        let got_b: Vec<bool> = ids.iter().enumerate().map(|(o, id)| b.admit(o as u64 * 100_000, Some(*id))).collect();
        assert_eq!(got_a, got_b);
        // The window counts from the latest occurrence: 4 at 400k is 300k past the 4 at
        // 100k; 3 at 500k is 300k past the copy at 200k.
        assert_eq!(got_a, [true, true, false, true, true, true]);
    }

    /// Contract 11.2: a record is dropped when its id appeared in the previous 250,000
    /// offsets — a dropped copy too. A chain of copies at 0, 200k and 300k drops both
    /// later ones, in one pass (a rebuild) and in a projector restarted at 260k, whose
    /// window is filled from 10k (it sees only the copy at 200k). Before, the window
    /// forgot the copy it dropped: the rebuild kept the one at 300k, the restarted
    /// projector dropped it, and `verify` failed.
    #[test]
    fn a_dropped_copy_is_remembered_as_an_occurrence() {
        let id = Some(7u128);
        let mut rebuild = Window::default();
        let judged: Vec<bool> = [0, 200_000, 300_000].iter().map(|&o| rebuild.admit(o, id)).collect();
        assert_eq!(judged, [true, false, false]);
        let mut restarted = Window::default();
        // fill_to(260k) admits what it reads from 260k - 250k = 10k on.
        restarted.admit(200_000, id);
        assert!(!restarted.admit(300_000, id), "the restarted projector judges it as the rebuild does");
        // Past the window of the latest occurrence, the id lands again.
        assert!(rebuild.admit(550_000, id));
    }

    fn rejected(raw: &str) -> RejectedEvent {
        RejectedEvent {
            received_at_us: 1_700_000_000_000_000,
            meta: RequestMeta::default(),
            index: 0,
            raw: raw.into(),
            rejection: Rejection::new(RejectReason::MalformedJson, None, "malformed JSON".into()),
        }
    }

    #[test]
    fn rejected_values_are_recorded_once_and_a_cut_line_goes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SourceRejects::open(dir.path(), "events", 2).unwrap();
        store.record(1, 7, &rejected("x")).unwrap();
        store.record(1, 9, &rejected("y")).unwrap();
        store.sync().unwrap();
        drop(store);
        // A step run again after a crash records the same offsets again: nothing is added.
        let mut again = SourceRejects::open(dir.path(), "events", 2).unwrap();
        again.record(1, 7, &rejected("x")).unwrap();
        again.record(1, 9, &rejected("y")).unwrap();
        again.record(0, 3, &rejected("z")).unwrap();
        again.sync().unwrap();
        drop(again);
        let lines = SourceRejects::list(dir.path()).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!((first["partition"].as_u64(), first["offset"].as_u64(), first["raw"].as_str()), (Some(0), Some(3), Some("z")));
        assert_eq!(first["reason"], "malformed_json");
        // A line cut by a crash is removed when the store opens, then written again.
        let path = dir.path().join(SOURCE_REJECTED_DIR).join("events").join("p1.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"topic\":\"events\",\"partition\":1,\"off").unwrap();
        let mut reopened = SourceRejects::open(dir.path(), "events", 2).unwrap();
        reopened.record(1, 12, &rejected("w")).unwrap();
        reopened.sync().unwrap();
        let lines = SourceRejects::list(dir.path()).unwrap();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines.iter().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }

    /// Two projectors of one topic on one data dir appended each rejected value twice
    /// (nothing locked it): the second is refused while the first runs, and may start
    /// once it is gone.
    #[test]
    fn a_second_projector_of_a_topic_on_one_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = TopicState::open(dir.path(), "events", 3).unwrap();
        let second = TopicState::open(dir.path(), "events", 3);
        let Err(e) = second else { panic!("a second projector of the topic opened the same data dir") };
        assert!(e.to_string().contains("another projector of this topic"), "{e}");
        assert!(TopicState::open(dir.path(), "other-topic", 3).is_ok(), "another topic's projector has its own store");
        drop(first);
        assert!(TopicState::open(dir.path(), "events", 3).is_ok());
    }

    /// Rejected values waited in memory for the whole step (up to 500,000 lines): past
    /// MAX_PENDING_REJECTED_BYTES they are written at once.
    #[test]
    fn rejected_values_are_written_before_they_hold_more_than_their_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SourceRejects::open(dir.path(), "events", 1).unwrap();
        let raw = "x".repeat(8 * 1024);
        let per_line = 8 * 1024 + 200;
        let n = MAX_PENDING_REJECTED_BYTES / per_line * 3;
        for offset in 0..n as u64 {
            store.record(0, offset, &rejected(&raw)).unwrap();
            assert!(store.pending_bytes() < MAX_PENDING_REJECTED_BYTES, "{} bytes held at offset {offset}", store.pending_bytes());
        }
        let written = SourceRejects::list(dir.path()).unwrap().len();
        assert!(written >= n - MAX_PENDING_REJECTED_BYTES / per_line, "{written} of {n} written before the step's end");
        store.sync().unwrap();
        assert_eq!(SourceRejects::list(dir.path()).unwrap().len(), n);
    }

    /// A read that ends on offsets the topic skips (transaction markers, compacted
    /// records) just below its limit, with records past the limit, has passed the limit:
    /// before, a one-shot `project` (which read up to limits then; it reads to librdkafka's
    /// partition ends now) took it for the end and stopped short. `verify`'s rebuild up to
    /// the tables' offsets reads so.
    #[test]
    fn a_gap_below_a_steps_limit_is_passed_not_taken_for_the_end() {
        // Records up to offset 97; 98 and 99 are markers; the partition ends at 150.
        assert_eq!(settle(98, 100, 150), 100);
        // A step that found no record at all below its limit still moves on (else a gap
        // wider than a step would stop the projector there for ever).
        assert_eq!(settle(40, 100, 150), 100);
        // The limit at or past the end: the read ended at the end.
        assert_eq!(settle(98, 100, 99), 98);
        // A read that stopped at its limit may have more to read (the next step finds out).
        assert_eq!(settle(100, 100, 100), 100);
        assert_eq!(settle(100, 100, 90), 100, "an end that lags the records read");
        assert_eq!(settle(7, u64::MAX, 7), 7);
    }
}
