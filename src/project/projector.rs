//! The projector: steps from the tables' offset to the log's end, catch-up, compaction of
//! small files by level, and rebuilds from offset 0 (in place or into another place).
//!
//! Invariants: a step commits each table once, with the offset it reaches; a table already
//! ahead takes only the events past its own offset; compaction rewrites rows without
//! changing them (`dataChange = false`), and a row is rewritten once per level.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::merge::{merge_files, BackgroundMerge};
use super::rows::{write_rows, PARQUET_WRITERS};
use super::sink::{TableCommit, TableSink, Tables};
use super::topic::TopicState;
use super::{
    failpoint, Codec, CommitKind, FileEntry, Layout, ProjectError, TableDef, TableSet, TablesRoot, DEFAULT_VACUUM_RETENTION_MS,
    ROWS_PER_FILE,
};
use crate::event::RecordView;
use crate::log::{BlockDecoder, EventLog, LogError, PlainBlock, ValueFormat};
use std::sync::Arc;

/// How often a projector whose steps find nothing new reads a Kafka log's side topic for
/// store catalogues other nodes recorded: as often as serving nodes read it
/// (`api::SCHEMA_FOLLOW_INTERVAL_MS`), so an idle topic's readers learn of a version within
/// about a second; each read is two metadata requests to the brokers.
pub const IDLE_CATALOG_FOLLOW_INTERVAL_MS: u64 = 1_000;

/// Events one incremental step reads at most. Bounds a step's memory and time; catching
/// up runs as many steps as it takes.
pub const MAX_STEP_EVENTS: u64 = 500_000;

/// Compaction fan-in. Every step's file starts at level 0; when the last
/// `COMPACT_FANIN` files of a table share a level, they are merged into files of the next
/// level (rolled at [`ROWS_PER_FILE`]; full files are never merged again). Like a counter
/// in base `COMPACT_FANIN`: merged as each step lands, a table holds at most
/// `COMPACT_FANIN - 1` files per level (beside `serve`'s steps, see [`compaction_run`]), and
/// each row is rewritten once per level — log10 of the number of steps in all.
pub const COMPACT_FANIN: usize = 10;

/// What a projection run did, for the user.
#[derive(Clone, Debug, Default)]
pub struct ProjectSummary {
    pub from_offset: u64,
    pub to_offset: u64,
    pub events: u64,
    /// The tables, and the rows added to each (the seed's five, then registered types').
    pub tables: Vec<String>,
    pub rows: Vec<u64>,
    pub files_written: u64,
    pub bytes_written: u64,
    pub files_compacted: u64,
    pub files_vacuumed: u64,
    /// From a topic: events dropped as re-sent copies (same `event_id` in the partition's
    /// dedup window) and values kept as rejected (they did not decode or validate).
    pub duplicates: u64,
    pub rejected: u64,
    pub seconds: f64,
    /// Whether the step reached the end of the log (of every partition) as it was then.
    pub at_end: bool,
    /// Whether the log is a topic (`from_offset`/`to_offset` are positions: sums of the
    /// partitions' offsets).
    pub partitioned: bool,
    /// A consumer-group member's step: the partitions it held.
    pub partitions_held: Option<Vec<u32>>,
}

impl ProjectSummary {
    /// A summary of nothing yet, over `tables`.
    pub(super) fn over(tables: &[Arc<TableDef>]) -> ProjectSummary {
        ProjectSummary { tables: tables.iter().map(|d| d.name.clone()).collect(), rows: vec![0; tables.len()], ..Default::default() }
    }

    pub fn render(&self) -> String {
        let what = if self.partitioned { "records of the topic (positions" } else { "events (offsets" };
        let mut s = format!(
            "projected {} {what} {}..{}) in {:.2} s: {} files, {} bytes written",
            self.events, self.from_offset, self.to_offset, self.seconds, self.files_written, self.bytes_written
        );
        if self.files_compacted > 0 {
            s.push_str(&format!(", {} small files merged", self.files_compacted));
        }
        if self.files_vacuumed > 0 {
            s.push_str(&format!(", {} removed files deleted", self.files_vacuumed));
        }
        if self.duplicates > 0 {
            s.push_str(&format!(", {} re-sent copies dropped", self.duplicates));
        }
        if self.rejected > 0 {
            s.push_str(&format!(", {} values rejected (questlog rejected --source)", self.rejected));
        }
        for (t, rows) in self.tables.iter().zip(&self.rows) {
            s.push_str(&format!("\n  {t:<13} +{rows} rows"));
        }
        s
    }

    /// Counts `files`, written for table `i`.
    pub(super) fn written(&mut self, i: usize, files: &[FileEntry]) {
        if self.rows.len() <= i {
            self.rows.resize(i + 1, 0);
        }
        for f in files {
            self.rows[i] += f.rows;
            self.files_written += 1;
            self.bytes_written += f.bytes;
        }
    }

    fn add(&mut self, other: &ProjectSummary) {
        if self.events == 0 && self.files_written == 0 {
            self.from_offset = other.from_offset;
        }
        self.to_offset = other.to_offset;
        self.events += other.events;
        if other.tables.len() > self.tables.len() {
            self.tables = other.tables.clone();
        }
        if other.rows.len() > self.rows.len() {
            self.rows.resize(other.rows.len(), 0);
        }
        for (i, rows) in other.rows.iter().enumerate() {
            self.rows[i] += rows;
        }
        self.files_written += other.files_written;
        self.bytes_written += other.bytes_written;
        self.files_compacted += other.files_compacted;
        self.files_vacuumed += other.files_vacuumed;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.at_end = other.at_end;
        self.partitioned |= other.partitioned;
    }
}

/// A projector's settings: with them it can open its tables again (recovering whatever a
/// failed step left), which is how the continuous projector restarts after a panic or a
/// failed step.
#[derive(Clone)]
pub(super) struct Settings {
    pub(super) root: TablesRoot,
    pub(super) data_dir: PathBuf,
    pub(super) codec: Codec,
    pub(super) step_events: u64,
    /// Free bytes to leave on the tables' filesystem before writing; see
    /// [`Projector::with_min_free_bytes`].
    min_free_bytes: u64,
    vacuum_retention_ms: u64,
    /// What the tables are projected from.
    pub(super) layout: Layout,
    /// Tables from a topic: the consumer group this projector is a member of (`project
    /// --follow --group`), sharing the partitions with the group's other members.
    pub(super) group: Option<String>,
    /// Tables from a topic, one-shot (`project`): each step reads up to `step_events` over
    /// as many 64-MiB batches as it takes, until the partitions' ends (see
    /// [`Projector::reading_to_the_end`]); a follower's step takes what arrived.
    pub(super) to_the_end: bool,
    /// Tables from a topic: the form of its values.
    pub(super) format: ValueFormat,
    /// Projecting beside ingest (`serve`): a step uses one decoding thread and one Parquet
    /// writer, not one per core, so that ingest keeps the machine and the server's memory
    /// stays flat (threads started per step each took memory of their own).
    pub(super) background: bool,
}

impl Settings {
    pub(super) fn reopen(&self) -> Result<Projector, ProjectError> {
        self.open(true)
    }

    fn open(&self, check: bool) -> Result<Projector, ProjectError> {
        // A topic's projector takes its lock before it touches the tables (their staging
        // and leftovers), so a second one is refused having changed nothing.
        let topic = match &self.layout {
            Layout::Local => None,
            Layout::Topic { topic, partitions } => Some(TopicState::open(&self.data_dir, topic, *partitions)?),
        };
        // The registered types' tables the copy of the log's schema records names (every
        // table made so far: the copy is written first) open with the seed's, so that
        // start-up checks, leftovers and the plain view cover them; a step opens the rest
        // (`Projector::follow`).
        let set = match self.layout {
            Layout::Local => TableSet::from_records(&crate::log::read_schema_copies(&self.data_dir)?, u64::MAX)?,
            Layout::Topic { .. } => TableSet::seed(),
        };
        let tables = Tables::open(&self.root, &self.data_dir, self.vacuum_retention_ms, check, &self.layout, &set)?;
        Ok(Projector {
            tables: Box::new(tables),
            settings: self.clone(),
            topic,
            merging: None,
            followed: None,
            followed_catalogs: Vec::new(),
            catalogs_followed_at: None,
        })
    }
}

/// Reads the log and keeps the tables up to date.
pub struct Projector {
    pub(super) tables: Box<dyn TableSink>,
    pub(super) settings: Settings,
    /// Tables from a topic: the dedup windows and the store of values that did not decode.
    pub(super) topic: Option<TopicState>,
    /// The merge running beside the steps, in the background only (see [`Projector::compact`]).
    merging: Option<BackgroundMerge>,
    /// The log's schema records [`Projector::follow`] has seen, and their tables.
    pub(super) followed: Option<(Vec<crate::log::SchemaRecord>, TableSet)>,
    /// The catalogue versions whose copies [`Projector::follow`] wrote (hash, offset).
    pub(super) followed_catalogs: Vec<(String, u64)>,
    /// When a step that found nothing new last read the catalogues.
    pub(super) catalogs_followed_at: Option<Instant>,
}

/// Estimated Parquet bytes per projected event, for the free-space check of a step
/// (measured: 90–200 bytes with SNAPPY; the estimate leaves some slack).
pub(super) const EST_PARQUET_BYTES_PER_EVENT: u64 = 256;

impl Projector {
    /// Opens the tables at `root` (recovering from a crash); `data_dir` holds the
    /// plain-directory view or the S3 staging area. `codec` applies to files written from
    /// now on.
    pub fn open(root: &TablesRoot, data_dir: &Path, codec: Codec) -> Result<Projector, ProjectError> {
        Projector::open_with_retention(root, data_dir, codec, DEFAULT_VACUUM_RETENTION_MS, true)
    }

    /// With `check` false, damaged or missing files are not errors (for a rebuild, which
    /// replaces them all).
    pub fn open_with_retention(
        root: &TablesRoot,
        data_dir: &Path,
        codec: Codec,
        vacuum_retention_ms: u64,
        check: bool,
    ) -> Result<Projector, ProjectError> {
        Projector::open_source(root, data_dir, codec, vacuum_retention_ms, check, Layout::Local, ValueFormat::Questlog)
    }

    /// Opens tables projected from the source `layout` describes (a Kafka topic's
    /// partitions, whose values are in `format`); see [`Projector::open_with_retention`].
    pub fn open_source(
        root: &TablesRoot,
        data_dir: &Path,
        codec: Codec,
        vacuum_retention_ms: u64,
        check: bool,
        layout: Layout,
        format: ValueFormat,
    ) -> Result<Projector, ProjectError> {
        let settings = Settings {
            root: root.clone(),
            data_dir: data_dir.to_path_buf(),
            codec,
            step_events: MAX_STEP_EVENTS,
            min_free_bytes: 0,
            vacuum_retention_ms,
            layout,
            format,
            background: false,
            group: None,
            to_the_end: false,
        };
        settings.open(check)
    }

    /// What it takes to open this projector again (see [`Settings`]).
    pub(super) fn restart(&self) -> Settings {
        self.settings.clone()
    }

    /// Projects beside ingest: see `Settings::background`.
    pub(super) fn in_background(mut self) -> Projector {
        self.settings.background = true;
        self
    }

    /// Makes this projector (of tables from a topic) a member of the consumer group
    /// `group`: it projects the partitions the group gives it (see `group.rs`).
    pub fn with_group(mut self, group: Option<String>) -> Projector {
        self.settings.group = group;
        self
    }

    /// Reads the tables' newest versions again (what other group members committed).
    pub fn refresh(&mut self) -> Result<(), ProjectError> {
        self.tables.reload()
    }

    /// A one-shot projection from a topic: each step reads up to `step_events` records (in
    /// batches of at most 64 MiB, decoded on every core) through the consumer the run
    /// keeps, and the run ends when every partition is at its end. (Before, each step made
    /// a reader per partition and read up to a limit per partition: BENCHMARKS.md.)
    pub fn reading_to_the_end(mut self) -> Projector {
        self.settings.to_the_end = true;
        self
    }

    /// Caps the events of one step (at most [`MAX_STEP_EVENTS`]); smaller steps publish
    /// more often and make more small files for compaction to merge.
    pub fn with_step_events(mut self, n: u64) -> Projector {
        self.settings.step_events = n.clamp(1, MAX_STEP_EVENTS);
        self
    }

    /// Leaves room for the log: a step or merge starts only when the filesystem has twice
    /// `log_reserve_bytes` free besides what it expects to write, so when a disk fills,
    /// the tables stop growing before the log (whose appends are acknowledged) runs out.
    pub fn with_min_free_bytes(mut self, log_reserve_bytes: u64) -> Projector {
        self.settings.min_free_bytes = log_reserve_bytes.saturating_mul(2);
        self
    }

    /// Brings views held back by their pace up to date (the continuous projector calls
    /// it when idle).
    pub fn publish_views(&mut self) -> Result<(), ProjectError> {
        self.tables.published(true)
    }

    /// Free bytes where new table files are written, if known.
    pub fn free_bytes(&self) -> Option<u64> {
        self.tables.free_bytes()
    }

    pub(super) fn check_space(&self, what: &'static str, estimate_bytes: u64) -> Result<(), ProjectError> {
        if self.settings.min_free_bytes == 0 {
            return Ok(());
        }
        let needed_bytes = self.settings.min_free_bytes.saturating_add(estimate_bytes);
        match self.tables.free_bytes() {
            Some(free_bytes) if free_bytes < needed_bytes => Err(ProjectError::NoSpace { what, free_bytes, needed_bytes }),
            // A filesystem that cannot say leaves the decision to the write itself.
            _ => Ok(()),
        }
    }

    /// The log offset all the tables reach (the smallest of theirs). Registered types'
    /// tables count once opened: [`Projector::follow`], which every step calls first.
    pub fn offset(&self) -> u64 {
        self.tables.offsets().into_iter().min().unwrap_or(0)
    }

    /// Opens the tables of every type `log` has a schema record of (a registered type's
    /// table may be behind the others: a step then starts at its offset).
    pub fn follow(&mut self, log: &dyn EventLog) -> Result<(), ProjectError> {
        // A shared (Kafka) log gains store catalogues from other nodes: their copies, which
        // `sql` and `report` read, are rewritten when it does. A sled log's only come
        // through this process's own commands, which write the copies themselves.
        let records = if log.is_local() {
            log.schemas()?
        } else {
            let (records, catalogs) = log.schemas_and_catalogs()?;
            self.follow_catalogs(catalogs)?;
            records
        };
        // Records are only ever appended, and a hash names a record's content.
        let same = |seen: &[crate::log::SchemaRecord]| {
            seen.len() == records.len() && seen.iter().zip(&records).all(|(a, b)| a.hash == b.hash && a.from_offset == b.from_offset)
        };
        if self.followed.as_ref().is_none_or(|(seen, _)| !same(seen)) {
            // Readers that cannot open the log learn the tables from this copy: written
            // before any table of these records is made.
            crate::log::write_schema_copies(&self.settings.data_dir, &records)?;
            let known = TableSet::from_records(&records, u64::MAX)?;
            self.followed = Some((records, known));
        }
        let (_, known) = self.followed.as_ref().expect("just set");
        self.tables.ensure(known, false)
    }

    /// Rewrites the store catalogue's copies (`DATA_DIR/catalog`, which `sql` and `report`
    /// read) when a Kafka log's side topic gained a version: [`Projector::follow`] on every
    /// step, and [`Projector::follow_catalogs_of`] on steps that found nothing new (a
    /// version recorded on an idle topic is in force for tables at its end at once).
    pub fn follow_catalogs(&mut self, catalogs: Vec<crate::log::CatalogRecord>) -> Result<(), ProjectError> {
        let seen: Vec<(String, u64)> = catalogs.iter().map(|c| (c.hash.clone(), c.from_offset)).collect();
        if self.followed_catalogs != seen {
            let versions = crate::catalog::versions(catalogs)?;
            crate::catalog::write_copies(&self.settings.data_dir, &versions)?;
            self.followed_catalogs = seen;
        }
        Ok(())
    }

    /// [`Projector::follow_catalogs`] of a shared (Kafka) log's catalogues, on a step that
    /// found nothing new: at most every [`IDLE_CATALOG_FOLLOW_INTERVAL_MS`], and a failure
    /// (the side topic unreachable a moment, a full disk) is logged, not the step's — the
    /// next idle step tries again, and a failed step would rejoin the consumer group.
    /// Nothing for a sled log, whose catalogues come only through this process's commands.
    pub fn follow_catalogs_of(&mut self, log: &dyn EventLog) {
        if log.is_local() || self.catalogs_followed_at.is_some_and(|t| t.elapsed() < Duration::from_millis(IDLE_CATALOG_FOLLOW_INTERVAL_MS))
        {
            return;
        }
        self.catalogs_followed_at = Some(Instant::now());
        if let Err(e) = log.catalogs().map_err(ProjectError::from).and_then(|c| self.follow_catalogs(c)) {
            tracing::warn!(error = %e, "cannot follow the store catalogues of the side topic; trying again at the next step");
        }
    }

    /// The tables in force at offset `to` of the log [`Projector::follow`] follows.
    fn tables_at(&self, log: &dyn EventLog, to: u64) -> Result<TableSet, ProjectError> {
        match &self.followed {
            // Usually every record is in force already: the tables are those known.
            Some((records, known)) if records.iter().all(|r| r.from_offset <= to) => Ok(known.clone()),
            Some((records, _)) => TableSet::from_records(records, to),
            None => TableSet::from_log(log, to),
        }
    }

    /// The tables, in order (the seed's five, then registered types'), with their columns.
    pub fn defs(&self) -> Vec<Arc<TableDef>> {
        self.tables.defs()
    }

    /// Rows per table, in [`Projector::defs`] order.
    pub fn rows(&self) -> Vec<u64> {
        (0..self.tables.defs().len()).map(|i| self.tables.files(i).iter().map(|f| f.rows).sum()).collect()
    }

    /// Projects at most `step_events` events past the published offset and
    /// publishes them, then merges small files when a level is full.
    pub fn step(&mut self, log: &dyn EventLog, progress: &ProgressBar) -> Result<ProjectSummary, ProjectError> {
        if self.settings.layout.partitioned() {
            let group = self.settings.group.clone();
            return self.step_group(log, group.as_deref(), progress);
        }
        let started = Instant::now();
        failpoint("project.step")?;
        self.follow(log)?;
        let offsets = self.tables.offsets();
        let from = self.offset();
        let mut to = log.durable_end().min(from + self.settings.step_events);
        if to > from && self.settings.min_free_bytes > 0 {
            // On a filling disk, a shorter step that fits beats none.
            let estimate = (to - from).saturating_mul(EST_PARQUET_BYTES_PER_EVENT);
            if let Err(ProjectError::NoSpace { free_bytes, .. }) = self.check_space("a projection step", estimate) {
                let room = free_bytes.saturating_sub(self.settings.min_free_bytes) / EST_PARQUET_BYTES_PER_EVENT;
                if room == 0 {
                    return Err(ProjectError::NoSpace {
                        what: "a projection step",
                        free_bytes,
                        needed_bytes: self.settings.min_free_bytes + EST_PARQUET_BYTES_PER_EVENT,
                    });
                }
                to = from + room.min(to - from);
            }
        }
        let mut summary = ProjectSummary { from_offset: from, to_offset: to, ..ProjectSummary::over(&self.tables.defs()) };
        if to <= from {
            return Ok(summary);
        }
        // The tables in force at `to`: those of types registered by then made, those an
        // ADDITION widened by then with its columns.
        let set = self.tables_at(log, to)?;
        self.tables.ensure(&set, true)?;
        let defs = self.tables.defs();
        summary.tables = defs.iter().map(|d| d.name.clone()).collect();
        summary.rows = vec![0; defs.len()];
        let dirs: Vec<PathBuf> = defs.iter().map(|d| self.tables.staging_dir(d)).collect();
        // A table that is ahead of the others (a step that stopped between the tables'
        // commits, a registered type's table not begun) takes only the events past its own
        // offset.
        let outputs = write_range(log, from, to, &offsets, &defs, &dirs, self.settings.codec, self.settings.background, progress)?;
        let mut commits = Vec::with_capacity(defs.len());
        for (i, files) in outputs.iter().enumerate() {
            if offsets[i] >= to {
                continue;
            }
            summary.written(i, files);
            commits.push(TableCommit {
                table: i,
                kind: CommitKind::Append,
                added: files,
                removed: &[],
                offset: to,
                partition_offsets: &[],
                claim: None,
            });
        }
        self.tables.commit_all(&commits)?;
        summary.events = to - from;
        summary.at_end = to >= log.durable_end();
        self.tables.published(false)?;
        summary.files_compacted = self.compact()?;
        summary.files_vacuumed = self.tables.vacuum(false)?;
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Steps until the tables reach the end of the log as it was when called.
    pub fn catch_up(&mut self, log: &dyn EventLog, progress: &ProgressBar) -> Result<ProjectSummary, ProjectError> {
        let started = Instant::now();
        self.follow(log)?;
        let mut total =
            ProjectSummary { from_offset: self.offset(), to_offset: self.offset(), ..ProjectSummary::over(&self.tables.defs()) };
        if self.settings.layout.partitioned() {
            // A topic has no end known in advance: step until every partition's read
            // reached its end.
            loop {
                let s = self.step(log, progress)?;
                total.add(&s);
                if s.at_end {
                    break;
                }
            }
        }
        let target = log.durable_end();
        progress.set_length(target.saturating_sub(self.offset()));
        while !self.settings.layout.partitioned() && self.offset() < target {
            let s = self.step(log, progress)?;
            total.add(&s);
        }
        self.tables.published(true)?;
        // A run that ends deletes what has expired since its last pass, not a minute later.
        total.files_vacuumed += self.tables.vacuum(true)?;
        total.seconds = started.elapsed().as_secs_f64();
        Ok(total)
    }

    /// Merges runs of [`COMPACT_FANIN`] files of one level; returns how many files were
    /// merged away. In the background (`serve`), the merge itself runs on a thread of its
    /// own ([`BackgroundMerge`]): this call commits a merge that has finished and starts
    /// the next, so a step never waits for a merge (one of a million rows took 3-4 s, and
    /// the tables fell that far behind the log: benches/HISTORY.md, item 35).
    pub(super) fn compact(&mut self) -> Result<u64, ProjectError> {
        if self.settings.background {
            return self.compact_in_background();
        }
        let mut merged_files = 0;
        while let Some((i, inputs)) = self.next_merge()? {
            let def = self.tables.defs()[i].clone();
            let paths = self.input_paths(i, &inputs)?;
            let merged = merge_files(
                &def,
                self.tables.staging_dir(&def),
                self.settings.codec,
                self.settings.layout.partitioned(),
                &paths,
                inputs[0].level.saturating_add(1),
            )?;
            self.commit_merge(i, &merged, &inputs)?;
            merged_files += inputs.len() as u64;
        }
        Ok(merged_files)
    }

    fn compact_in_background(&mut self) -> Result<u64, ProjectError> {
        let mut merged_files = 0;
        if let Some(job) = self.merging.take_if(|m| m.is_finished()) {
            merged_files = self.commit_background(job)?;
        }
        if self.merging.is_none() {
            if let Some((i, inputs)) = self.next_merge()? {
                let paths = self.input_paths(i, &inputs)?;
                let level = inputs[0].level.saturating_add(1);
                let def = self.tables.defs()[i].clone();
                let (dir, partitioned) = (self.tables.staging_dir(&def), self.settings.layout.partitioned());
                self.merging = Some(BackgroundMerge::start(i, def, dir, self.settings.codec, partitioned, paths, level)?);
            }
        }
        Ok(merged_files)
    }

    /// Whether a background merge is running or waits to be committed.
    #[cfg(test)]
    fn merge_pending(&self) -> bool {
        self.merging.is_some()
    }

    /// Whether a background merge has finished and waits to be committed.
    pub(super) fn merge_finished(&self) -> bool {
        self.merging.as_ref().is_some_and(|m| m.is_finished())
    }

    /// Waits for a background merge and commits it; returns how many files it merged away.
    pub(super) fn finish_merge(&mut self) -> Result<u64, ProjectError> {
        match self.merging.take() {
            Some(job) => self.commit_background(job),
            None => Ok(0),
        }
    }

    /// Waits for `job` and commits its files in place of its inputs.
    fn commit_background(&mut self, job: BackgroundMerge) -> Result<u64, ProjectError> {
        let (i, inputs) = (job.table, job.inputs.clone());
        let merged = job.join()?;
        self.commit_merge(i, &merged, &inputs)?;
        Ok(inputs.len() as u64)
    }

    /// The next run to merge, by table: the first table with a full level (where the disk
    /// has room for the merge).
    fn next_merge(&self) -> Result<Option<(usize, Vec<FileEntry>)>, ProjectError> {
        for (i, def) in self.tables.defs().iter().enumerate() {
            let files = self.tables.files(i);
            let Some(run) = compaction_run(files) else { continue };
            let inputs: Vec<FileEntry> = files[run].to_vec();
            let input_bytes = inputs.iter().map(|f| f.bytes).sum();
            if let Err(e) = self.check_space("merging table files", input_bytes) {
                // The step itself is published; merging waits for room.
                tracing::warn!(error = %e, table = %def.name, "compaction postponed");
                continue;
            }
            return Ok(Some((i, inputs)));
        }
        Ok(None)
    }

    fn input_paths(&self, i: usize, inputs: &[FileEntry]) -> Result<Vec<(PathBuf, FileEntry)>, ProjectError> {
        inputs.iter().map(|f| Ok((self.tables.local_file(i, &f.name)?, f.clone()))).collect()
    }

    /// Commits `merged` in place of `inputs` in table `i`, at the table's own offset.
    fn commit_merge(&mut self, i: usize, merged: &[FileEntry], inputs: &[FileEntry]) -> Result<(), ProjectError> {
        failpoint("compact.publish")?;
        let offset = self.tables.offsets()[i];
        let partition_offsets = self.tables.partition_offsets(i).to_vec();
        if self.settings.group.is_some() {
            // A member's merge lands only while its inputs are all still in the table.
            let commit = TableCommit {
                table: i,
                kind: CommitKind::Compact,
                added: merged,
                removed: inputs,
                offset,
                partition_offsets: &partition_offsets,
                claim: Some(super::delta::Claim { partitions: &[], expected: &[] }),
            };
            match self.tables.commit_all(std::slice::from_ref(&commit)) {
                Err(e @ ProjectError::Conflict { .. }) => {
                    tracing::warn!(error = %e, "a merge's inputs were merged or removed by another member; dropping this merge");
                    return Ok(());
                }
                other => other?,
            }
        } else {
            self.tables.commit(i, CommitKind::Compact, merged, inputs, offset, &partition_offsets)?;
        }
        self.tables.published(false)
    }

    /// Rebuilds every table from offset 0 up to `to` (clamped to the log's end): one
    /// commit per table replaces its files with the rebuilt ones.
    pub fn rebuild(&mut self, log: &dyn EventLog, to: u64, progress: &ProgressBar) -> Result<ProjectSummary, ProjectError> {
        if self.settings.layout.partitioned() {
            return self.rebuild_topic(log, progress);
        }
        // Every table the log has, as stored: those not in force at `to` are emptied.
        self.follow(log)?;
        rebuild_tables(self.tables.as_mut(), log, to, self.settings.codec, progress)
    }
}

/// Writes the tables for log offsets `0..to` and commits each table's files in place of
/// what it held.
fn rebuild_tables(
    tables: &mut dyn TableSink,
    log: &dyn EventLog,
    to: u64,
    codec: Codec,
    progress: &ProgressBar,
) -> Result<ProjectSummary, ProjectError> {
    let started = Instant::now();
    let to = to.min(log.durable_end());
    progress.set_length(to);
    let set = TableSet::from_log(log, to)?;
    tables.ensure(&set, true)?;
    let defs = tables.defs();
    let dirs: Vec<PathBuf> = defs.iter().map(|d| tables.staging_dir(d)).collect();
    let outputs = write_range(log, 0, to, &vec![0; defs.len()], &defs, &dirs, codec, false, progress)?;
    failpoint("rebuild.before_commit")?;
    let mut summary = ProjectSummary { from_offset: 0, to_offset: to, events: to, ..ProjectSummary::over(&defs) };
    for (i, files) in outputs.into_iter().enumerate() {
        summary.written(i, &files);
        let old = tables.files(i).to_vec();
        tables.commit(i, CommitKind::Replace, &files, &old, to, &[])?;
    }
    tables.published(true)?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Writes the tables for log offsets `0..to` as Delta tables under `root` (time travel
/// into another place: `project --out`, `report --to`, `verify`). `work_dir` holds
/// staging files for S3.
pub fn rebuild_into(
    log: &dyn EventLog,
    to: u64,
    root: &TablesRoot,
    work_dir: &Path,
    codec: Codec,
    progress: &ProgressBar,
) -> Result<ProjectSummary, ProjectError> {
    let mut tables = Tables::scratch(root, work_dir, &Layout::Local, &TableSet::seed())?;
    rebuild_tables(&mut tables, log, to, codec, progress)
}

/// Reads `from..to` from the log and writes each table's rows into files in `dirs`;
/// table `i` (`defs[i]`) takes only the events at or past `starts[i]`.
#[allow(clippy::too_many_arguments)]
fn write_range(
    log: &dyn EventLog,
    from: u64,
    to: u64,
    starts: &[u64],
    defs: &[Arc<TableDef>],
    dirs: &[PathBuf],
    codec: Codec,
    background: bool,
    progress: &ProgressBar,
) -> Result<Vec<Vec<FileEntry>>, ProjectError> {
    let writers = if background { 1 } else { PARQUET_WRITERS };
    let set = TableSet::of(defs);
    write_rows(defs, dirs, codec, false, writers, |sink| {
        let mut n = 0u64;
        let mut push = |offset: u64, record: &RecordView<'_>| -> Result<(), ProjectError> {
            n += 1;
            let i = set.table_of(&record.event.payload, || format!("the event at log offset {offset}"))?.unwrap_or(0);
            if n % 16_384 == 0 {
                progress.inc(16_384);
            }
            if offset < starts[i] {
                return Ok(());
            }
            sink.push(i, offset, offset, 0, record)
        };
        // A sled log's blocks are checked and decompressed on one thread per core, and
        // decoded here without copying their text (the Arrow builders copy it once);
        // their buffers go back to be reused, not freed on another thread than made them.
        let spare = std::sync::Mutex::new(Vec::<Vec<u8>>::new());
        let mapped = !background
            && crate::log::map_blocks(
                log,
                from,
                to,
                || Ok(BlockDecoder::new()?),
                |decoder, raw| -> Result<PlainBlock, ProjectError> {
                    let buffer = spare.lock().ok().and_then(|mut s| s.pop()).unwrap_or_default();
                    Ok(decoder.decompress(raw, buffer)?)
                },
                |block| {
                    for (offset, record) in block.views()? {
                        push(offset, &record)?;
                    }
                    if let Ok(mut s) = spare.lock() {
                        s.push(block.bytes);
                    }
                    Ok(())
                },
            )?;
        if !mapped {
            // Owned records decoded on one helper thread.
            crate::log::for_each_prefetched(log.read(from, to)?, |offset, record| push(offset, &record.view()))?;
        }
        if n != to - from {
            return Err(ProjectError::Log(LogError::Corrupt {
                offset: from + n,
                reason: format!("expected {} records from offset {from}, read {n}", to - from),
            }));
        }
        progress.inc(n % 16_384);
        Ok(())
    })
}

/// The run of files to merge: [`COMPACT_FANIN`] or more consecutive files of one level,
/// none full; the latest such run if there are several. Merging as each step lands, the
/// only run is the trailing one (a table is a counter in base [`COMPACT_FANIN`]) unless a
/// merge was postponed (no room) or failed, or `serve` merged in the background: there
/// steps add level-0 files after a run while it is merged, so the run a merge makes can
/// end up before them, and a level may hold more than `COMPACT_FANIN - 1` files until
/// its run is merged.
fn compaction_run(files: &[FileEntry]) -> Option<std::ops::Range<usize>> {
    let mergeable = |f: &FileEntry| (f.rows as usize) < ROWS_PER_FILE;
    let mut end = files.len();
    while end > 0 {
        let last = &files[end - 1];
        if !mergeable(last) {
            end -= 1;
            continue;
        }
        let start = end - files[..end].iter().rev().take_while(|f| mergeable(f) && f.level == last.level).count();
        if end - start >= COMPACT_FANIN {
            return Some(start..end);
        }
        end = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Beside `serve`'s steps, a merge runs on a thread of its own: the step that fills a
    /// level starts it and returns, steps go on while it runs, and once committed the
    /// tables hold the same rows as tables merged in place. (Merged in place, the tenth
    /// step returns having merged ten files, and nothing is pending.)
    #[test]
    fn in_the_background_a_step_never_waits_for_a_merge() {
        use crate::event::{ClientEvent, Payload, Record, RequestMeta};
        let dir = tempfile::tempdir().unwrap();
        let log = crate::log::SledLog::open(&dir.path().join("log")).unwrap();
        let log: &dyn EventLog = log.as_ref();
        let records = (0..1_500i64)
            .map(|i| Record {
                received_at_us: 1_780_000_000_000_000 + i,
                meta: RequestMeta::default(),
                raw_event: format!("{{\"i\":{i}}}"),
                event: ClientEvent {
                    event_id: Some(format!("e{i}")),
                    player_id: Some(format!("p{}", i % 7)),
                    session_id: None,
                    event_time_us: None,
                    payload: Payload::JoinGuild { guild_id: i, name: "Knights".into() },
                },
            })
            .collect();
        log.append(crate::log::AppendBatch { records, rejected: Vec::new() }).unwrap().wait().unwrap();
        let hidden = ProgressBar::hidden();
        let open = |name: &str| {
            let root = TablesRoot::Local(dir.path().join(name).join("delta"));
            Projector::open(&root, &dir.path().join(name), Codec::Snappy).unwrap().with_step_events(100)
        };
        let mut p = open("background").in_background();
        for k in 1..=10 {
            let s = p.step(log, &hidden).unwrap();
            assert_eq!(s.files_compacted, 0, "step {k} merged files itself");
        }
        assert!(p.merge_pending(), "the tenth step filled level 0 and started a merge");
        assert_eq!(p.tables.files(0).len(), COMPACT_FANIN, "guild_joins: one file a step");
        // Steps go on; each commits a merge that has finished and starts the next.
        let mut merged = 0;
        for _ in 0..5 {
            merged += p.step(log, &hidden).unwrap().files_compacted;
        }
        assert_eq!(p.offset(), 1_500);
        while p.merge_pending() {
            merged += p.finish_merge().unwrap();
            merged += p.compact().unwrap();
        }
        assert!(merged >= 10, "level 0 merged: {merged} files");
        assert_eq!(p.offset(), 1_500, "a merge's commit keeps each table's offset");
        let mut in_place = open("in-place");
        for _ in 0..15 {
            in_place.step(log, &hidden).unwrap();
        }
        assert_eq!(p.rows(), in_place.rows());
        for i in 0..p.defs().len() {
            let (bg, ip) = (p.tables.files(i), in_place.tables.files(i));
            assert!(bg.len() <= COMPACT_FANIN, "table {i}: {} files after merging", bg.len());
            // The same rows in offset order, file after file, with no gap or overlap.
            let span = |files: &[FileEntry]| (files.first().map(|f| f.first_offset), files.last().map(|f| f.last_offset));
            assert_eq!(span(bg), span(ip), "table {i}");
            assert!(bg.windows(2).all(|w| w[0].last_offset < w[1].first_offset), "table {i}: {bg:?}");
        }
        log.close().unwrap();
    }

    #[test]
    fn compaction_runs_by_level() {
        let f = |level, rows| FileEntry { name: String::new(), level, rows, bytes: 0, first_offset: 0, last_offset: 0 };
        let mut files: Vec<FileEntry> = (0..9).map(|_| f(0, 50)).collect();
        assert_eq!(compaction_run(&files), None);
        files.push(f(0, 5_000));
        assert_eq!(compaction_run(&files), Some(0..10));
        files.insert(0, f(1, 5_000));
        assert_eq!(compaction_run(&files), Some(1..11));
        files.push(f(0, ROWS_PER_FILE as u64));
        assert_eq!(compaction_run(&files), Some(1..11), "a full file is never merged; the run before it is");
        // Merged in the background: steps added level-0 files after the run a merge made.
        let mut files: Vec<FileEntry> = (0..10).map(|_| f(1, 5_000)).collect();
        files.extend((0..3).map(|_| f(0, 50)));
        assert_eq!(compaction_run(&files), Some(0..10));
        files.extend((0..7).map(|_| f(0, 50)));
        assert_eq!(compaction_run(&files), Some(10..20), "the latest run first");
        files.push(f(1, ROWS_PER_FILE as u64));
        files.insert(5, f(1, ROWS_PER_FILE as u64));
        assert_eq!(compaction_run(&files), Some(11..21));
        files.truncate(11);
        assert_eq!(compaction_run(&files), None, "a full file splits a run");
    }
}
