//! Projection by members of a consumer group (`project --follow --group`): several
//! projector processes — on one machine or many, each with its own data dir — share a
//! topic's partitions and commit to the same tables, each for the partitions it holds.
//!
//! Invariants:
//! - A member reads a partition from the offset the tables hold for it when it is
//!   assigned (the smallest of the tables'), never from committed Kafka offsets.
//! - Its commits name only the partitions it holds, and land only while each table still
//!   holds them where the member read them ([`super::delta::Claim`]): a partition's offset
//!   moves once per offset, by whoever holds it, however rebalances, kills and lost
//!   sessions interleave. A member whose claim fails drops the step's rows of every
//!   partition and reads its partitions again from the tables.
//! - Whether a row is a re-sent copy is decided as without a group (`topic.rs`): the
//!   window of a partition is refilled from the topic by whoever takes the partition, so
//!   it travels with the partition.
//! - Only the member holding partition 0 compacts and vacuums; a compaction commit lands
//!   only while every file it removes is still in the table (two members that both
//!   believed they held partition 0 during a rebalance cannot both merge the same files).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::delta::Claim;
use super::topic::key_of;
use super::{
    write_rows, CommitKind, DeltaTables, Layout, ProjectError, ProjectSummary, Projector, RowSink, TableDef, TableSet, TablesRoot,
    PARQUET_WRITERS,
};
use crate::log::kafka::group::StartsFn;
use crate::log::{EventLog, Scanned};

/// How long a step waits for the first record of the partitions it holds: an idle
/// member's step returns after this (and polls its consumer, which keeps its place in
/// the group).
pub const GROUP_WAIT_MS: u64 = 500;
/// How long a step reads on after its first record (unless its partitions reach their
/// ends first): what a record may wait in a member before its step is written, so that
/// under load a step holds more than a handful of records. At 20,000 events/s on these 2
/// cores a follower's tables trail the topic by p99 0.57-0.63 s with 100 ms, 0.53-1.02 s
/// with 200 ms (benches/freshness.py; BENCHMARKS.md).
pub const GROUP_LINGER_MS: u64 = 100;
/// A one-shot `project` from a topic (`Settings::to_the_end`): how long a batch reads on
/// after its first record. Its batches end at the step's events, at the consumer's 64 MiB
/// ([`crate::log::kafka::group::MAX_GROUP_BATCH_BYTES`]) or at the partitions' ends; this
/// bounds one only when the brokers deliver slowly, and a step goes on with the next.
pub const CATCH_UP_LINGER_MS: u64 = 5_000;

/// The starts of newly assigned partitions, read from the tables at `root` (the smallest
/// offset any table holds for each: a table ahead takes only what it lacks).
pub(super) fn starts_from_tables(root: TablesRoot, work_dir: PathBuf, layout: Layout) -> StartsFn {
    Box::new(move |partitions: &[u32]| {
        // Every table this member knows of (the seed's and those of the schema records it
        // read), made ones only: a partition starts at the smallest, so a step that
        // committed some tables and not others is read again.
        let records = crate::log::read_schema_copies(&work_dir).map_err(|e| format!("reading the schema records' copy: {e}"))?;
        let set = TableSet::from_records(&records, u64::MAX).map_err(|e| format!("the schema records' copy: {e}"))?;
        let tables = DeltaTables::open_read_only(&root, &work_dir, Some(&layout), &set).map_err(|e| format!("reading the tables: {e}"))?;
        Ok(partitions
            .iter()
            .map(|&p| {
                (0..set.len())
                    .filter(|&i| i < TableSet::seed().len() || tables.version(i).is_some())
                    .map(|i| tables.partition_offsets(i).get(p as usize).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(0)
            })
            .collect())
    })
}

/// Decodes `values` on up to `threads` threads, in order.
fn decode_all(values: &[&crate::log::kafka::RawValue], format: crate::log::ValueFormat, threads: usize) -> Vec<Scanned> {
    let threads = threads.max(1).min(values.len().div_ceil(1_024).max(1));
    if threads == 1 {
        return values.iter().map(|v| v.decode(format)).collect();
    }
    let chunk = values.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            values.chunks(chunk).map(|c| scope.spawn(move || c.iter().map(|v| v.decode(format)).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

impl Projector {
    /// A step as a member of the consumer group `group` (see the module docs): reads what
    /// the member's partitions hold past the tables (up to `step_events`, waiting up to
    /// [`GROUP_WAIT_MS`] for the first), and commits it for those partitions.
    ///
    /// With no group, the same steps from every partition with one consumer kept (`project`,
    /// `project --follow`): commits name every partition and land only at the version
    /// after the one read.
    pub(super) fn step_group(
        &mut self,
        log: &dyn EventLog,
        group: Option<&str>,
        progress: &ProgressBar,
    ) -> Result<ProjectSummary, ProjectError> {
        let started = Instant::now();
        super::failpoint("project.step")?;
        let defs: Vec<Arc<TableDef>> = self.tables.defs();
        let mut summary = ProjectSummary { partitioned: true, ..ProjectSummary::over(&defs) };
        let state = self.topic.as_mut().expect("a projector from a topic has its state");
        if state.member.is_none() {
            let starts = starts_from_tables(self.settings.root.clone(), self.settings.data_dir.clone(), self.settings.layout.clone());
            state.member = Some(log.join_group(group, starts, self.settings.to_the_end)?);
        }
        let member = state.member.as_mut().expect("joined above");
        let linger = Duration::from_millis(if self.settings.to_the_end { CATCH_UP_LINGER_MS } else { GROUP_LINGER_MS });
        let batch = member.poll_batch(
            usize::try_from(self.settings.step_events).unwrap_or(usize::MAX),
            Duration::from_millis(GROUP_WAIT_MS),
            linger,
            self.settings.to_the_end,
        )?;
        let held: Vec<u32> = batch.from.keys().copied().collect();
        summary.partitions_held = Some(held.clone());
        let result = self.project_batch(log, group, batch, &held, summary, started, progress);
        if result.is_err() {
            // The consumer read past what was committed: it reads again from the tables, or
            // the next batch would begin past them.
            if let Err(e) = self.resync(&held) {
                tracing::warn!(error = %e, "cannot read the partitions again; the projector is opened again");
            }
        }
        result
    }

    /// The rest of [`Projector::step_group`]: projects and commits `batch`.
    #[allow(clippy::too_many_arguments)]
    fn project_batch(
        &mut self,
        log: &dyn EventLog,
        group: Option<&str>,
        batch: crate::log::kafka::group::GroupBatch,
        held: &[u32],
        mut summary: ProjectSummary,
        started: Instant,
        progress: &ProgressBar,
    ) -> Result<ProjectSummary, ProjectError> {
        let n = log.partitions() as usize;
        let held = held.to_vec();
        let state = self.topic.as_mut().expect("a projector from a topic has its state");
        if batch.generation != state.generation {
            // New partitions (or new starts): the tables as they are now, and windows only
            // for the partitions held.
            state.generation = batch.generation;
            for (p, w) in state.windows.iter_mut().enumerate() {
                if !batch.from.contains_key(&(p as u32)) {
                    *w = Default::default();
                }
            }
            self.tables.reload()?;
        }
        // The partitions' ends as librdkafka reported them (an empty batch is not the end:
        // one that begins a new assignment comes back before any record is read).
        summary.at_end = batch.at_end;
        if batch.is_empty() {
            // Nothing new, but another node may have recorded a store catalogue, in force
            // for these tables at once: its copies are written now, not at the next event.
            self.follow_catalogs_of(log);
            summary.seconds = started.elapsed().as_secs_f64();
            return Ok(summary);
        }
        // The schema records after the poll (and after a reload, which takes the tables'
        // columns as committed): every record of a registered type in the batch was written
        // after its schema's record was acknowledged, so the side topic read now holds them
        // all (and the decoders learn their versions). Tables are made, and widened by the
        // ADDITIONs read, before rows are written into them.
        self.follow(log)?;
        if let Some((_, known)) = self.followed.clone() {
            self.tables.ensure(&known, true)?;
        }
        let defs: Vec<Arc<TableDef>> = self.tables.defs();
        // What the tables hold (the claims' expectation), and where each takes rows from:
        // a registered type's table that never took partition `p` (made after the partition
        // was read past its type's first record... which cannot have been there: a record
        // of it is read only after its schema, and the table is made before such a record
        // is written) takes it from where this member reads it.
        let held_by_tables: Vec<Vec<u64>> = (0..defs.len()).map(|i| self.tables.partition_offsets(i).to_vec()).collect();
        let mut starts = held_by_tables.clone();
        for (&p, &from) in &batch.from {
            for (i, s) in starts.iter_mut().enumerate() {
                if s.len() != n || s[p as usize] < from {
                    return Err(ProjectError::Inconsistent {
                        table: defs[i].name.clone(),
                        reason: format!("it holds partition {p} up to {:?}, but this member reads it from {from}", s.get(p as usize)),
                    });
                }
            }
        }
        // Positions (what file names are cut at) grow with every commit of every member: the
        // largest offsets any table holds, with this member's partitions from where it reads.
        let mut view: Vec<u64> = (0..n).map(|p| starts.iter().map(|s| s[p]).max().unwrap_or(0)).collect();
        for (&p, &from) in &batch.from {
            view[p as usize] = from;
        }
        let mut reached: BTreeMap<u32, u64> = batch.from.clone();
        let generation = batch.generation;
        let mut at_end = batch.at_end;
        // A one-shot `project` (no group) goes on with the next batch until the step's
        // events or the partitions' ends: a step's batch holds at most 64 MiB of values.
        // Not past a batch when the log has schemas: a later batch could hold a type
        // whose record this step has not read.
        let more = group.is_none() && self.settings.to_the_end && defs.iter().all(|d| d.registered().is_none());
        let step_events = usize::try_from(self.settings.step_events).unwrap_or(usize::MAX);
        let dirs: Vec<PathBuf> = defs.iter().map(|d| self.tables.staging_dir(d)).collect();
        let registered = super::tables::TableSet::of(&defs);
        self.check_space("a projection step", (batch.len() as u64).saturating_mul(super::EST_PARQUET_BYTES_PER_EVENT))?;
        let format = self.settings.format;
        let threads = if self.settings.background { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
        let codec = self.settings.codec;
        let writers = if self.settings.background { 1 } else { PARQUET_WRITERS };
        let state = self.topic.as_mut().expect("a projector from a topic has its state");
        let (mut events, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
        let files = write_rows(&defs, &dirs, codec, true, writers, |sink: &mut RowSink| {
            // A row's position: the step's starting position plus the records read before
            // it in the step (docs/CONTRACT.md 11.2).
            let mut position: u64 = view.iter().sum();
            let mut chunk = Some(batch);
            while let Some(batch) = chunk.take() {
                for (&p, values) in &batch.values {
                    let from = batch.from[&p];
                    state.windows[p as usize].fill_to(log, p, format, from)?;
                    let refs: Vec<&crate::log::kafka::RawValue> = values.iter().collect();
                    let decoded = decode_all(&refs, format, threads);
                    for (v, scanned) in values.iter().zip(decoded) {
                        let offset = v.offset;
                        events += 1;
                        position += 1;
                        reached.insert(p, offset + 1);
                        let record = match scanned {
                            Ok(r) => r,
                            Err(rejection) if crate::log::kafka::side::unknown_schema(&rejection.rejection.message) => {
                                // Its schema was recorded after this step read the side topic:
                                // the step fails and the next reads the side topic again.
                                return Err(ProjectError::Schema {
                                    table: format!("partition {p}"),
                                    reason: format!("the record at offset {offset}: {}", rejection.rejection.message),
                                });
                            }
                            Err(rejection) => {
                                state.rejects.record(p, offset, &rejection)?;
                                rejected += 1;
                                continue;
                            }
                        };
                        if !state.windows[p as usize].admit(offset, key_of(&record)) {
                            duplicates += 1;
                            continue;
                        }
                        let Some(i) =
                            registered.table_of(&record.event.payload, || format!("the record at partition {p} offset {offset}"))?
                        else {
                            continue;
                        };
                        if offset < starts[i][p as usize] {
                            continue; // this table has it already
                        }
                        sink.push(i, position - 1, offset, p, &record)?;
                    }
                    state.windows[p as usize].next = Some(reached[&p]);
                }
                progress.inc(batch.len() as u64);
                let read = usize::try_from(events).unwrap_or(usize::MAX);
                if more && !at_end && read < step_events {
                    let member = state.member.as_mut().expect("a batch came from the member");
                    let next = member.poll_batch(
                        step_events - read,
                        Duration::from_millis(GROUP_WAIT_MS),
                        Duration::from_millis(CATCH_UP_LINGER_MS),
                        true,
                    )?;
                    if next.generation != generation {
                        return Err(ProjectError::Inconsistent {
                            table: defs[0].name.clone(),
                            reason: "the consumer's partitions changed within a step".into(),
                        });
                    }
                    at_end = next.at_end;
                    if !next.is_empty() {
                        chunk = Some(next);
                    }
                }
            }
            Ok(())
        })?;
        summary.at_end = at_end;
        summary.events = events;
        summary.duplicates = duplicates;
        summary.rejected = rejected;
        summary.from_offset = view.iter().sum();
        // Rejected values are kept before a commit moves past them.
        state.rejects.sync()?;
        // Per table: its offsets of the held partitions after the step (a table ahead of
        // the read stays where it is).
        let next: Vec<Vec<u64>> = starts
            .iter()
            .map(|s| {
                let mut v = s.clone();
                for (&p, &r) in &reached {
                    v[p as usize] = v[p as usize].max(r);
                }
                v
            })
            .collect();
        let expected: Vec<Vec<u64>> = held_by_tables.iter().map(|s| held.iter().map(|&p| s[p as usize]).collect()).collect();
        let mut commits = Vec::new();
        for (i, files) in files.iter().enumerate() {
            if next[i] == starts[i] {
                continue;
            }
            summary.written(i, files);
            commits.push(super::sink::TableCommit {
                table: i,
                kind: CommitKind::Append,
                added: files,
                removed: &[],
                offset: next[i].iter().sum(),
                partition_offsets: &next[i],
                claim: group.map(|_| Claim { partitions: &held, expected: &expected[i] }),
            });
        }
        match self.tables.commit_all(&commits) {
            Ok(()) => {}
            Err(e @ ProjectError::Conflict { .. }) if group.is_some() => {
                // Another member holds (or held) one of these partitions past where this
                // one read it: read them all again from the tables.
                tracing::warn!(error = %e, partitions = ?held, "a commit's claim failed; reading the partitions again from the tables");
                self.resync(&held)?;
                summary.seconds = started.elapsed().as_secs_f64();
                return Ok(summary);
            }
            Err(e) => return Err(e),
        }
        summary.to_offset = self.tables.offsets().into_iter().min().unwrap_or(0);
        self.tables.published(false)?;
        if held.contains(&0) {
            summary.files_compacted = self.compact()?;
            summary.files_vacuumed = self.tables.vacuum(false)?;
        }
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// After a failed claim: the tables read again, and the member's partitions read again
    /// from where the tables hold them (the windows are filled again from there).
    fn resync(&mut self, held: &[u32]) -> Result<(), ProjectError> {
        self.tables.reload()?;
        let n = self.tables.defs().len();
        let starts: BTreeMap<u32, u64> = held
            .iter()
            .map(|&p| (p, (0..n).map(|i| self.tables.partition_offsets(i).get(p as usize).copied().unwrap_or(0)).min().unwrap_or(0)))
            .collect();
        let state = self.topic.as_mut().expect("a projector from a topic has its state");
        for &p in held {
            state.windows[p as usize] = Default::default();
        }
        if let Some(member) = state.member.as_mut() {
            member.seek(&starts)?;
        }
        Ok(())
    }
}
