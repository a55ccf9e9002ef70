//! Projections: the log turned into the five seed tables, incrementally (a step from the
//! tables' offset to the end of the log) or rebuilt from offset 0.
//!
//! The tables are Delta Lake tables ([`delta`]) under a root given by `--tables`: a local
//! directory (by default `DATA_DIR/delta`) or `s3://bucket/prefix`, one table per seed
//! location (`guild_joins/`, `enemies_killed/`, …). Local tables also get a plain-directory
//! view at `DATA_DIR/tables` ([`plain`]) for readers that list directories.
//!
//! Invariants:
//! - The Delta log is the truth. A step finishes its Parquet files (synced, under names
//!   no commit uses yet), then commits each table once with the log offset it reaches as
//!   its `txn` version. A crash before a table's commit leaves that table where it was,
//!   and the next step writes its events again; after it, they are never written again.
//!   Files no commit names are removed on a later open.
//! - A commit lands at exactly the next Delta version or not at all: two projectors on one
//!   set of tables cannot both commit a step.
//! - Output is a pure function of the log range and the options: no wall-clock times,
//!   random names or hash-map order in the data files, so two rebuilds write the same
//!   files byte for byte.
//! - Only the projector writes the tables; it only deletes files it named.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float32Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use indicatif::ProgressBar;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::event::{EventType, FieldKind, FieldValue, Record, RecordView};
use crate::log::{BlockDecoder, EventLog, LogError, PlainBlock, ValueFormat};

pub mod delta;
pub mod plain;
mod topic;

/// The default place of the Delta tables: `DATA_DIR/delta`.
pub const DELTA_DIR: &str = "delta";

pub use delta::{CommitKind, DeltaTables, Layout, TablesRoot, DEFAULT_VACUUM_RETENTION_MS};
use plain::PlainView;
pub use topic::{rebuild_topic_into, SourceRejects, SOURCE_REJECTED_DIR, TOPIC_DEDUP_WINDOW_OFFSETS};

/// Events one incremental step reads at most. Bounds a step's memory and time; catching
/// up runs as many steps as it takes.
pub const MAX_STEP_EVENTS: u64 = 500_000;
/// Rows buffered per table before they are handed to the Parquet writer as one batch.
const BATCH_ROWS: usize = 8_192;
/// Threads encoding Parquet in a projection step, each with its own tables: encoding
/// (dictionaries, snappy, hashing the file) is the largest part of a rebuild, more than
/// one core's worth when decoding and building run beside it.
const PARQUET_WRITERS: usize = 2;
/// Arrow batches queued for each Parquet writer thread (~3 MB each at [`BATCH_ROWS`]): enough
/// to even out the two threads' pace, little memory.
const WRITER_QUEUE_BATCHES: usize = 4;
/// Rows per Parquet row group (~8 MB of a table's columns): large enough for good
/// compression and fast scans, small enough that five tables' open row groups stay well
/// under 100 MiB. Halving it from 128K rows cut a rebuild's peak memory by ~55 MiB and,
/// since fresh memory is zeroed by the kernel, its system time, for files within 0.01% of
/// the size (10^6 events, side by side).
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// A file is closed and a new one started after this many rows, so files stay in the
/// tens of MiB that Spark, Trino and DuckDB split and read well.
pub const ROWS_PER_FILE: usize = 1_000_000;
/// Compaction fan-in. Every step's file starts at level 0; when the last
/// `COMPACT_FANIN` files of a table share a level, they are merged into files of the next
/// level (rolled at [`ROWS_PER_FILE`]; full files are never merged again). Like a counter
/// in base `COMPACT_FANIN`: a table holds at most `COMPACT_FANIN - 1` files per level, and
/// each row is rewritten once per level — log10 of the number of steps in all.
pub const COMPACT_FANIN: usize = 10;

/// Crash testing: when `QUESTLOG_FAILPOINTS` makes this point fire (`name=return`, or
/// `name=3*off->return` for its fourth hit; see `cli::setup_failpoints`), the process
/// aborts here, as abruptly as a SIGKILL, so tests can crash a projection at each step of
/// its protocol, every time it passes there.
///
/// `name=return(message)` instead fails the operation there with an I/O error carrying
/// `message` (the process goes on), and `name=panic` panics there.
fn failpoint(name: &str) -> Result<(), ProjectError> {
    match fail::eval(name, |arg| arg) {
        None => Ok(()),
        Some(None) => {
            eprintln!("questlog: failpoint {name} reached; aborting");
            std::process::abort();
        }
        Some(Some(message)) => Err(ProjectError::Io { context: format!("failpoint {name}"), source: std::io::Error::other(message) }),
    }
}

/// A table of the contract: its name for SQL and Hive, its directory, its event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableDef {
    pub name: &'static str,
    pub location: &'static str,
    pub event_type: EventType,
}

/// The five tables, in contract order.
pub const TABLES: [TableDef; 5] = [
    TableDef { name: "guild_joins", location: "guild_joins", event_type: EventType::JoinGuild },
    TableDef { name: "enemy_kills", location: "enemies_killed", event_type: EventType::KillEnemy },
    TableDef { name: "quests", location: "quest_accept", event_type: EventType::AcceptQuest },
    TableDef { name: "take_damage", location: "damage_taken", event_type: EventType::TakeDamage },
    TableDef { name: "transactions", location: "transactions", event_type: EventType::BuyAsset },
];

pub fn table_for(t: EventType) -> &'static TableDef {
    &TABLES[t.index()]
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("writing Parquet {path}: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
    #[error("building Arrow batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("table {table} at {url}: {source}")]
    Delta { table: &'static str, url: String, source: Box<deltalake_core::DeltaTableError> },
    #[error("tables at {location}: {reason}")]
    Location { location: String, reason: String },
    #[error("table {table}: {reason}")]
    Schema { table: &'static str, reason: String },
    #[error("table file {path} is damaged: {reason}; run `questlog project --rebuild` to rebuild the tables from the log")]
    Damaged { path: PathBuf, reason: String },
    #[error("table {table} is not consistent with the others: {reason}")]
    Inconsistent { table: &'static str, reason: String },
    #[error(
        "table {table} was changed by another writer: this projector read version {read_version} and meant to commit \
         log offsets up to {wanted_offset}, but the table is now at version {version} with log offsets up to {offset}; \
         nothing was committed twice. Run one projector per set of tables (stop the other `serve` or `project`)"
    )]
    Conflict { table: &'static str, read_version: u64, version: u64, offset: u64, wanted_offset: u64 },
    #[error("unknown compression `{0}`: use snappy, zstd or none")]
    BadCompression(String),
    /// The Parquet writer thread of a step stopped; its own error is the one reported.
    #[error("the Parquet writer stopped before the step was written")]
    WriterStopped,
    #[error("not enough free disk for {what}: {free_bytes} bytes free, {needed_bytes} needed (twice the log's reserve plus the step's estimate); projection resumes once there is room")]
    NoSpace { what: &'static str, free_bytes: u64, needed_bytes: u64 },
}

impl ProjectError {
    /// True when the step failed for lack of disk space (its own check, or ENOSPC from a
    /// write, however deep in the Parquet writer it surfaced).
    pub fn is_no_space(&self) -> bool {
        match self {
            ProjectError::NoSpace { .. } => true,
            ProjectError::Io { source, .. } => source.raw_os_error() == Some(28),
            ProjectError::Log(e) => e.is_no_space(),
            other => other.to_string().contains("os error 28"),
        }
    }
}

/// After a step failed for lack of space, the projector retries as soon as the free space
/// has grown by this much, instead of sitting out its backoff.
const SPACE_REGAINED_BYTES: u64 = 4 * 1024 * 1024;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProjectError {
    let context = context.into();
    move |source| ProjectError::Io { context, source }
}

/// Parquet compression of table files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    Snappy,
    Zstd,
    None,
}

impl Codec {
    pub fn parse(s: &str) -> Result<Codec, ProjectError> {
        match s.to_ascii_lowercase().as_str() {
            "snappy" => Ok(Codec::Snappy),
            "zstd" => Ok(Codec::Zstd),
            "none" | "uncompressed" => Ok(Codec::None),
            _ => Err(ProjectError::BadCompression(s.to_string())),
        }
    }

    fn parquet(self) -> Compression {
        match self {
            Codec::Snappy => Compression::SNAPPY,
            Codec::Zstd => Compression::ZSTD(parquet::basic::ZstdLevel::default()),
            Codec::None => Compression::UNCOMPRESSED,
        }
    }
}

/// The Arrow schema of a table projected from the sled log, in contract column order.
pub fn schema(t: EventType) -> SchemaRef {
    schema_for(t, false)
}

/// The Arrow schema of a table; `partitioned` (projected from a Kafka topic) adds
/// `log_partition` after the contract's columns.
pub fn schema_for(t: EventType, partitioned: bool) -> SchemaRef {
    let utf8 = |n: &str, nullable: bool| Field::new(n, DataType::Utf8, nullable);
    let mut fields = vec![
        utf8("raw_event", false),
        utf8("timestamp", false),
        utf8("accept", true),
        utf8("host", true),
        utf8("user_agent", true),
        utf8("event_type", false),
    ];
    for (name, kind) in t.fields() {
        let dt = match kind {
            FieldKind::Id => DataType::Int64,
            FieldKind::Text => DataType::Utf8,
            FieldKind::SmallInt => DataType::Int16,
            FieldKind::Cost => DataType::Float32,
        };
        fields.push(Field::new(*name, dt, false));
    }
    fields.push(Field::new("log_offset", DataType::Int64, false));
    fields.push(utf8("event_id", true));
    fields.push(utf8("player_id", true));
    fields.push(utf8("session_id", true));
    fields.push(Field::new("event_time", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true));
    if partitioned {
        fields.push(Field::new("log_partition", DataType::Int32, false));
    }
    Arc::new(Schema::new(fields))
}

enum Col {
    Str(StringBuilder),
    I64(Int64Builder),
    I16(Int16Builder),
    F32(Float32Builder),
}

/// Arrow builders for one table's rows.
struct RowBuilder {
    event_type: EventType,
    schema: SchemaRef,
    raw_event: StringBuilder,
    timestamp: StringBuilder,
    accept: StringBuilder,
    host: StringBuilder,
    user_agent: StringBuilder,
    event_type_col: StringBuilder,
    fields: Vec<Col>,
    log_offset: Int64Builder,
    event_id: StringBuilder,
    player_id: StringBuilder,
    session_id: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    /// Tables from a topic: each row's partition.
    log_partition: Option<Int32Builder>,
    rows: usize,
    /// Reused buffer for formatting times.
    scratch: String,
    /// String builders made again from batches the writer is done with, by column: the
    /// next batch fills the same memory instead of fresh pages (see [`RowBuilder::recycle`]).
    spare: Vec<Option<StringBuilder>>,
}

impl RowBuilder {
    fn new(t: EventType, partitioned: bool) -> RowBuilder {
        RowBuilder::new_reusing(t, partitioned, Vec::new())
    }

    fn new_reusing(t: EventType, partitioned: bool, mut spare: Vec<Option<StringBuilder>>) -> RowBuilder {
        let fields_count = t.fields().len();
        let mut string = |column: usize, bytes_per_row: usize| {
            spare
                .get_mut(column)
                .and_then(Option::take)
                .unwrap_or_else(|| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * bytes_per_row))
        };
        // Columns in schema order: raw_event, timestamp, accept, host, user_agent,
        // event_type, the type fields, log_offset, event_id, player_id, session_id, ...
        let (raw_event, timestamp, accept, host, user_agent, event_type_col) =
            (string(0, 256), string(1, 24), string(2, 24), string(3, 24), string(4, 24), string(5, 24));
        let (event_id, player_id, session_id) = (string(7 + fields_count, 24), string(8 + fields_count, 24), string(9 + fields_count, 24));
        let fields = t
            .fields()
            .iter()
            .enumerate()
            .map(|(i, (_, k))| match k {
                FieldKind::Id => Col::I64(Int64Builder::with_capacity(BATCH_ROWS)),
                FieldKind::Text => Col::Str(string(6 + i, 16)),
                FieldKind::SmallInt => Col::I16(Int16Builder::with_capacity(BATCH_ROWS)),
                FieldKind::Cost => Col::F32(Float32Builder::with_capacity(BATCH_ROWS)),
            })
            .collect();

        RowBuilder {
            event_type: t,
            schema: schema_for(t, partitioned),
            raw_event,
            timestamp,
            accept,
            host,
            user_agent,
            event_type_col,
            fields,
            log_offset: Int64Builder::with_capacity(BATCH_ROWS),
            event_id,
            player_id,
            session_id,
            event_time: TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC"),
            log_partition: partitioned.then(|| Int32Builder::with_capacity(BATCH_ROWS)),
            rows: 0,
            scratch: String::with_capacity(32),
            spare,
        }
    }

    /// Keeps the memory of a batch of this table that the writer is done with, for the
    /// next batch's string columns (most of a batch's bytes). A batch freed on the writer
    /// thread went back to the allocator of the thread that made it only lazily, so every
    /// batch was built in fresh pages the kernel had to zero: a fifth of a rebuild's time.
    fn recycle(&mut self, batch: RecordBatch) {
        let (_, columns, _) = batch.into_parts();
        self.spare.resize_with(columns.len(), || None);
        for (column, array) in columns.into_iter().enumerate() {
            if self.spare[column].is_some() || array.data_type() != &DataType::Utf8 {
                continue;
            }
            let data = array.to_data();
            drop(array);
            let (offsets, values, _) = arrow::array::StringArray::from(data).into_parts();
            if let (Ok(mut offsets), Ok(values)) = (offsets.into_inner().into_inner().into_mutable(), values.into_mutable()) {
                offsets.clear();
                offsets.push(0i32);
                // SAFETY: one offset, 0, and no values (new_from_buffer drops the bytes past
                // the last offset): the empty array, a valid one, whatever the buffers held.
                self.spare[column] = Some(unsafe { StringBuilder::new_from_buffer(offsets, values, None) });
            }
        }
    }

    fn push<S: AsRef<str>, M: AsRef<str>>(&mut self, offset: u64, partition: u32, r: &Record<S, M>) {
        use crate::event::opt_str;
        debug_assert_eq!(r.event.event_type(), self.event_type);
        self.raw_event.append_value(r.raw_event.as_ref());
        self.scratch.clear();
        crate::event::push_time_us(&mut self.scratch, r.received_at_us);
        self.timestamp.append_value(&self.scratch);
        self.accept.append_option(opt_str(&r.meta.accept));
        self.host.append_option(opt_str(&r.meta.host));
        self.user_agent.append_option(opt_str(&r.meta.user_agent));
        self.event_type_col.append_value(self.event_type.as_str());
        let mut cols = self.fields.iter_mut();
        r.event.payload.visit_fields(|_, v| match (cols.next(), v) {
            (Some(Col::I64(b)), FieldValue::Int(x)) => b.append_value(x),
            (Some(Col::I16(b)), FieldValue::Small(x)) => b.append_value(x),
            (Some(Col::F32(b)), FieldValue::Float(x)) => b.append_value(x),
            (Some(Col::Str(b)), FieldValue::Text(x)) => b.append_value(x),
            _ => unreachable!("payload fields follow EventType::fields order"),
        });
        self.log_offset.append_value(offset as i64);
        self.event_id.append_option(opt_str(&r.event.event_id));
        self.player_id.append_option(opt_str(&r.event.player_id));
        self.session_id.append_option(opt_str(&r.event.session_id));
        self.event_time.append_option(r.event.event_time_us);
        if let Some(b) = &mut self.log_partition {
            b.append_value(partition as i32);
        }
        self.rows += 1;
    }

    /// The rows pushed so far as one batch; the builders start again with their full
    /// capacity. (An Arrow builder's `finish` leaves it with none, so every batch after the
    /// first grew its buffers by doubling: reallocation copies and fresh pages were a third
    /// of this thread's time.)
    fn finish(&mut self) -> Result<RecordBatch, ProjectError> {
        let partitioned = self.log_partition.is_some();
        let spare = std::mem::take(&mut self.spare);
        std::mem::replace(self, RowBuilder::new_reusing(self.event_type, partitioned, spare)).into_batch()
    }

    fn into_batch(mut self) -> Result<RecordBatch, ProjectError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.raw_event.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.accept.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.event_type_col.finish()),
        ];
        for c in &mut self.fields {
            cols.push(match c {
                Col::Str(b) => Arc::new(b.finish()),
                Col::I64(b) => Arc::new(b.finish()),
                Col::I16(b) => Arc::new(b.finish()),
                Col::F32(b) => Arc::new(b.finish()),
            });
        }
        cols.push(Arc::new(self.log_offset.finish()));
        cols.push(Arc::new(self.event_id.finish()));
        cols.push(Arc::new(self.player_id.finish()));
        cols.push(Arc::new(self.session_id.finish()));
        cols.push(Arc::new(self.event_time.finish()));
        if let Some(b) = &mut self.log_partition {
            cols.push(Arc::new(b.finish()));
        }
        Ok(RecordBatch::try_new(self.schema, cols)?)
    }
}

/// One committed table file (a Delta `add` action).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Compaction level: 0 for a step's file, k+1 for a merge of level-k files.
    pub level: u8,
    pub rows: u64,
    pub bytes: u64,
    pub first_offset: u64,
    pub last_offset: u64,
}

/// A `Write` that hashes what passes through it (SHA-256), for content-named files.
struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one Parquet file a batch at a time.
struct FileWriter {
    path: PathBuf,
    writer: ArrowWriter<Hashing<BufWriter<File>>>,
    rows: u64,
    first_offset: u64,
    last_offset: u64,
}

/// Columns whose values are (nearly) all distinct: a dictionary never pays off for them,
/// and building one costs a hash per value before the writer falls back to plain encoding.
const NO_DICTIONARY: [&str; 4] = ["raw_event", "event_id", "timestamp", "log_offset"];

fn writer_props(codec: Codec) -> WriterProperties {
    let mut b = WriterProperties::builder().set_compression(codec.parquet()).set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for col in NO_DICTIONARY {
        b = b.set_column_dictionary_enabled(parquet::schema::types::ColumnPath::from(col), false);
    }
    b.build()
}

impl FileWriter {
    fn create(path: PathBuf, schema: SchemaRef, codec: Codec) -> Result<FileWriter, ProjectError> {
        let file = File::create(&path).map_err(io_err(format!("creating {}", path.display())))?;
        let out = Hashing { inner: BufWriter::with_capacity(1 << 20, file), hash: Default::default() };
        let writer = ArrowWriter::try_new(out, schema, Some(writer_props(codec)))
            .map_err(|source| ProjectError::Parquet { path: path.clone(), source })?;
        Ok(FileWriter { path, writer, rows: 0, first_offset: u64::MAX, last_offset: 0 })
    }

    fn write(&mut self, batch: &RecordBatch, first: u64, last: u64) -> Result<(), ProjectError> {
        failpoint("stage.write")?;
        self.writer.write(batch).map_err(|source| ProjectError::Parquet { path: self.path.clone(), source })?;
        self.rows += batch.num_rows() as u64;
        self.first_offset = self.first_offset.min(first);
        self.last_offset = self.last_offset.max(last);
        Ok(())
    }

    /// Finishes the file, syncs it, and renames it to its final name in `dir` (see
    /// [`delta::file_name`]). The file is not part of any table until a commit adds it.
    fn finish(self, dir: &Path, level: u8) -> Result<FileEntry, ProjectError> {
        use sha2::Digest as _;
        let path = self.path.clone();
        let perr = |source| ProjectError::Parquet { path: path.clone(), source };
        // `into_inner` writes the footer and hands back the writer.
        let hashing = self.writer.into_inner().map_err(perr)?;
        let digest = hashing.hash.finalize();
        let file = hashing
            .inner
            .into_inner()
            .map_err(|e| ProjectError::Io { context: format!("writing {}", path.display()), source: e.into_error() })?;
        file.sync_all().map_err(io_err(format!("syncing {}", path.display())))?;
        let bytes = file.metadata().map_err(io_err(format!("stat {}", path.display())))?.len();
        let hash_hex16: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let name = delta::file_name(self.first_offset, self.last_offset, level, &hash_hex16);
        let target = dir.join(&name);
        fs::rename(&path, &target).map_err(io_err(format!("renaming {} to {}", path.display(), target.display())))?;
        failpoint("stage.finished")?;
        Ok(FileEntry { name, level, rows: self.rows, bytes, first_offset: self.first_offset, last_offset: self.last_offset })
    }
}

/// Writes one table's batches into a rolling sequence of files.
struct TableOutput {
    dir: PathBuf,
    codec: Codec,
    level: u8,
    schema: SchemaRef,
    current: Option<FileWriter>,
    done: Vec<FileEntry>,
    seq: u32,
    /// Whether a file is cut as soon as it reaches [`ROWS_PER_FILE`] rows, even within a
    /// batch sequence (else only where [`TableOutput::roll_if_full`] is called).
    roll_within: bool,
}

impl TableOutput {
    fn new(def: &TableDef, dir: PathBuf, codec: Codec, level: u8, partitioned: bool) -> TableOutput {
        TableOutput {
            dir,
            codec,
            level,
            schema: schema_for(def.event_type, partitioned),
            current: None,
            done: Vec::new(),
            seq: 0,
            roll_within: true,
        }
    }

    /// Writes a batch of rows with log offsets `first..=last`, after those written so far.
    fn write_batch(&mut self, batch: &RecordBatch, first: u64, last: u64) -> Result<(), ProjectError> {
        if self.current.is_none() {
            self.seq += 1;
            // The process id keeps two projectors' unfinished files apart, and tells a
            // later open whether the writer of one is gone.
            let path = self.dir.join(format!(".writing-{}-{}.tmp", std::process::id(), self.seq));
            self.current = Some(FileWriter::create(path, self.schema.clone(), self.codec)?);
        }
        let w = self.current.as_mut().expect("just created");
        w.write(batch, first, last)?;
        if self.roll_within {
            self.roll_if_full()?;
        }
        Ok(())
    }

    /// Closes the current file if it has [`ROWS_PER_FILE`] rows or more.
    fn roll_if_full(&mut self) -> Result<(), ProjectError> {
        if self.current.as_ref().is_some_and(|w| w.rows as usize >= ROWS_PER_FILE) {
            self.close_file()?;
        }
        Ok(())
    }

    fn close_file(&mut self) -> Result<(), ProjectError> {
        if let Some(w) = self.current.take() {
            self.done.push(w.finish(&self.dir, self.level)?);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<FileEntry>, ProjectError> {
        self.close_file()?;
        Ok(std::mem::take(&mut self.done))
    }
}

impl Drop for TableOutput {
    /// On an error path (a full disk, say), removes the unfinished file, so a failing step
    /// does not keep the space it took. Finished files may already be named by a commit
    /// (a name is its content), so they stay: the next open removes them if none does.
    fn drop(&mut self) {
        if let Some(w) = self.current.take() {
            let _ = fs::remove_file(&w.path);
        }
    }
}

fn fsync_dir(dir: &Path) -> Result<(), ProjectError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io_err(format!("syncing directory {}", dir.display())))
}

/// `create_dir_all` whose new directories survive power loss: each directory it creates is
/// synced into its parent (a new directory's entry is data of its parent, which no later
/// fsync of the directory itself covers).
fn create_dir_synced(dir: &Path) -> Result<(), ProjectError> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.is_dir() {
            break;
        }
        missing.push(d);
        at = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

/// What a projection run did, for the user.
#[derive(Clone, Debug, Default)]
pub struct ProjectSummary {
    pub from_offset: u64,
    pub to_offset: u64,
    pub events: u64,
    /// Rows added per table, in [`TABLES`] order.
    pub rows: [u64; 5],
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
}

impl ProjectSummary {
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
        for (t, rows) in TABLES.iter().zip(self.rows) {
            s.push_str(&format!("\n  {:<13} +{rows} rows", t.name));
        }
        s
    }

    /// Counts `files`, written for table `i`.
    fn written(&mut self, i: usize, files: &[FileEntry]) {
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
        for i in 0..5 {
            self.rows[i] += other.rows[i];
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

/// The seam between projection and storage: what the tables hold, where new files are
/// written, and how a change is committed. [`Tables`] implements it with Delta Lake tables
/// on a local disk or S3-protocol object storage.
pub trait TableSink: Send {
    /// The log offset each table reaches, in [`TABLES`] order (tables from a topic: their
    /// position, the sum of their partitions' next offsets).
    fn offsets(&self) -> Vec<u64>;
    /// Tables from a topic: the next offset of each partition table `i` reaches.
    fn partition_offsets(&self, i: usize) -> &[u64];
    /// The committed files of table `i`, in offset order.
    fn files(&self, i: usize) -> &[FileEntry];
    /// A local directory where new files of `table` are finished before a commit.
    fn staging_dir(&self, table: &TableDef) -> PathBuf;
    /// Commits `added` (finished in the staging directory) and `removed` files of table
    /// `i`, which then reaches log offset `offset` (from a topic: each partition's offset
    /// in `partition_offsets`, `offset` their sum). `Ok` means the change is durable and
    /// visible to readers; an error, that it was not made (or, for
    /// [`ProjectError::Conflict`], that another writer's change was).
    fn commit(
        &mut self,
        i: usize,
        kind: CommitKind,
        added: &[FileEntry],
        removed: &[FileEntry],
        offset: u64,
        partition_offsets: &[u64],
    ) -> Result<(), ProjectError>;
    /// A local path to read a committed file of table `i`.
    fn local_file(&self, i: usize, name: &str) -> Result<PathBuf, ProjectError>;
    /// Called after a step's (or a merge's) commits: derived views catch up, at once with
    /// `force`, else at their own pace (see [`plain::MIN_INTERVAL_MS`]).
    fn published(&mut self, force: bool) -> Result<(), ProjectError>;
    /// Deletes files removed longer ago than the retention period; returns how many.
    fn vacuum(&mut self, force: bool) -> Result<u64, ProjectError>;
    /// Free bytes where new files are written, if known.
    fn free_bytes(&self) -> Option<u64>;
}

/// The projector's tables: Delta tables under a [`TablesRoot`], with the plain-directory
/// view `DATA_DIR/tables` when they are local.
pub struct Tables {
    delta: DeltaTables,
    plain: Option<PlainView>,
    /// A publish of the plain view was held back (see [`TableSink::published`]).
    view_pending: bool,
    data_dir: PathBuf,
}

impl Tables {
    /// Opens (creating what is missing) the tables at `root`; `data_dir` is where the
    /// plain view (local tables) or the staging and cache directories (S3) go.
    /// With `check`, local files are checked against the Delta log (see [`DeltaTables::open`]).
    pub fn open(
        root: &TablesRoot,
        data_dir: &Path,
        vacuum_retention_ms: u64,
        check: bool,
        layout: &Layout,
    ) -> Result<Tables, ProjectError> {
        fs::create_dir_all(data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
        let delta = DeltaTables::open(root, data_dir, vacuum_retention_ms, check, layout)?;
        let plain = root.is_local().then(|| PlainView::new(data_dir));
        let mut tables = Tables { delta, plain, view_pending: false, data_dir: data_dir.to_path_buf() };
        tables.published(true)?;
        Ok(tables)
    }

    pub fn root(&self) -> &TablesRoot {
        self.delta.root()
    }

    /// Tables written once into a new place (a rebuild elsewhere, `verify`'s scratch
    /// copy): no plain-directory view, no check of files left by a crash.
    fn scratch(root: &TablesRoot, work_dir: &Path, layout: &Layout) -> Result<Tables, ProjectError> {
        let delta = DeltaTables::open(root, work_dir, DEFAULT_VACUUM_RETENTION_MS, false, layout)?;
        Ok(Tables { delta, plain: None, view_pending: false, data_dir: work_dir.to_path_buf() })
    }
}

impl TableSink for Tables {
    fn offsets(&self) -> Vec<u64> {
        self.delta.offsets()
    }

    fn partition_offsets(&self, i: usize) -> &[u64] {
        self.delta.partition_offsets(i)
    }

    fn files(&self, i: usize) -> &[FileEntry] {
        self.delta.files(i)
    }

    fn staging_dir(&self, table: &TableDef) -> PathBuf {
        self.delta.staging_dir(table)
    }

    fn commit(
        &mut self,
        i: usize,
        kind: CommitKind,
        added: &[FileEntry],
        removed: &[FileEntry],
        offset: u64,
        partition_offsets: &[u64],
    ) -> Result<(), ProjectError> {
        // The new files' directory entries must be durable before a commit names them.
        if !added.is_empty() {
            fsync_dir(&self.delta.staging_dir(&TABLES[i]))?;
        }
        self.delta.commit(i, kind, added, removed, offset, partition_offsets)
    }

    fn local_file(&self, i: usize, name: &str) -> Result<PathBuf, ProjectError> {
        self.delta.local_file(i, name)
    }

    fn published(&mut self, force: bool) -> Result<(), ProjectError> {
        let Some(plain) = &mut self.plain else { return Ok(()) };
        if !force && plain.too_soon() {
            self.view_pending = true;
            return Ok(());
        }
        self.view_pending = false;
        failpoint("publish.before_view")?;
        let mut view = Vec::with_capacity(TABLES.len());
        for (i, def) in TABLES.iter().enumerate() {
            let files = self
                .delta
                .files(i)
                .iter()
                .map(|f| Ok((self.delta.local_file(i, &f.name)?, f.name.clone())))
                .collect::<Result<Vec<_>, ProjectError>>()?;
            view.push((def, files));
        }
        if let Err(e) = plain.publish(&view) {
            // The view is derived; the Delta tables are correct without it. A view that no
            // longer follows them must not stay behind looking current.
            tracing::warn!(error = %e, data_dir = %self.data_dir.display(), "cannot update the plain-directory view of the tables; removing it");
            let _ = fs::remove_file(self.data_dir.join(plain::LINK));
            self.plain = None;
        }
        Ok(())
    }

    fn vacuum(&mut self, force: bool) -> Result<u64, ProjectError> {
        self.delta.vacuum(force)
    }

    fn free_bytes(&self) -> Option<u64> {
        fs2::available_space(&self.delta.staging_dir(&TABLES[0])).ok()
    }
}

/// A projector's settings: with them it can open its tables again (recovering whatever a
/// failed step left), which is how the continuous projector restarts after a panic or a
/// failed step.
#[derive(Clone)]
struct Settings {
    root: TablesRoot,
    data_dir: PathBuf,
    codec: Codec,
    step_events: u64,
    /// Free bytes to leave on the tables' filesystem before writing; see
    /// [`Projector::with_min_free_bytes`].
    min_free_bytes: u64,
    vacuum_retention_ms: u64,
    /// What the tables are projected from.
    layout: Layout,
    /// Tables from a topic: the form of its values.
    format: ValueFormat,
    /// Projecting beside ingest (`serve`): a step uses one decoding thread and one Parquet
    /// writer, not one per core, so that ingest keeps the machine and the server's memory
    /// stays flat (threads started per step each took memory of their own).
    background: bool,
}

impl Settings {
    fn reopen(&self) -> Result<Projector, ProjectError> {
        self.open(true)
    }

    fn open(&self, check: bool) -> Result<Projector, ProjectError> {
        let tables = Tables::open(&self.root, &self.data_dir, self.vacuum_retention_ms, check, &self.layout)?;
        let topic = match &self.layout {
            Layout::Local => None,
            Layout::Topic { topic, partitions } => Some(topic::TopicState::open(&self.data_dir, topic, *partitions)?),
        };
        Ok(Projector { tables: Box::new(tables), settings: self.clone(), topic })
    }
}

/// Reads the log and keeps the tables up to date.
pub struct Projector {
    tables: Box<dyn TableSink>,
    settings: Settings,
    /// Tables from a topic: the dedup windows and the store of values that did not decode.
    topic: Option<topic::TopicState>,
}

/// Estimated Parquet bytes per projected event, for the free-space check of a step
/// (measured: 90–200 bytes with SNAPPY; the estimate leaves some slack).
const EST_PARQUET_BYTES_PER_EVENT: u64 = 256;

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
        };
        settings.open(check)
    }

    /// What it takes to open this projector again (see [`Settings`]).
    fn restart(&self) -> Settings {
        self.settings.clone()
    }

    /// Projects beside ingest: see `Settings::background`.
    fn in_background(mut self) -> Projector {
        self.settings.background = true;
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

    fn check_space(&self, what: &'static str, estimate_bytes: u64) -> Result<(), ProjectError> {
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

    /// The log offset all five tables reach (the smallest of theirs).
    pub fn offset(&self) -> u64 {
        self.tables.offsets().into_iter().min().unwrap_or(0)
    }

    /// Rows per table, in [`TABLES`] order.
    pub fn rows(&self) -> Vec<u64> {
        (0..TABLES.len()).map(|i| self.tables.files(i).iter().map(|f| f.rows).sum()).collect()
    }

    /// Projects at most `step_events` events past the published offset and
    /// publishes them, then merges small files when a level is full.
    pub fn step(&mut self, log: &dyn EventLog, progress: &ProgressBar) -> Result<ProjectSummary, ProjectError> {
        if self.settings.layout.partitioned() {
            return self.step_topic(log, progress);
        }
        let started = Instant::now();
        failpoint("project.step")?;
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
        let mut summary = ProjectSummary { from_offset: from, to_offset: to, ..Default::default() };
        if to <= from {
            return Ok(summary);
        }
        let dirs: Vec<PathBuf> = TABLES.iter().map(|d| self.tables.staging_dir(d)).collect();
        // A table that is ahead of the others (a step that stopped between the tables'
        // commits) takes only the events past its own offset.
        let outputs = write_range(log, from, to, &offsets, &dirs, self.settings.codec, self.settings.background, progress)?;
        for (i, files) in outputs.into_iter().enumerate() {
            if offsets[i] >= to {
                continue;
            }
            summary.written(i, &files);
            self.tables.commit(i, CommitKind::Append, &files, &[], to, &[])?;
        }
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
        let mut total = ProjectSummary { from_offset: self.offset(), to_offset: self.offset(), ..Default::default() };
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

    /// Merges runs of [`COMPACT_FANIN`] files of one level; returns how many
    /// files were merged away.
    fn compact(&mut self) -> Result<u64, ProjectError> {
        let mut merged_files = 0;
        loop {
            let mut did = false;
            for (i, def) in TABLES.iter().enumerate() {
                let files = self.tables.files(i);
                let Some(run) = compaction_run(files) else { continue };
                let inputs: Vec<FileEntry> = files[run].to_vec();
                let input_bytes = inputs.iter().map(|f| f.bytes).sum();
                if let Err(e) = self.check_space("merging table files", input_bytes) {
                    // The step itself is published; merging waits for room.
                    tracing::warn!(error = %e, table = def.name, "compaction postponed");
                    continue;
                }
                let merged = self.merge(i, def, &inputs, inputs[0].level.saturating_add(1))?;
                failpoint("compact.publish")?;
                let offset = self.tables.offsets()[i];
                let partition_offsets = self.tables.partition_offsets(i).to_vec();
                self.tables.commit(i, CommitKind::Compact, &merged, &inputs, offset, &partition_offsets)?;
                self.tables.published(false)?;
                merged_files += inputs.len() as u64;
                did = true;
            }
            if !did {
                return Ok(merged_files);
            }
        }
    }

    fn merge(&self, i: usize, def: &TableDef, inputs: &[FileEntry], level: u8) -> Result<Vec<FileEntry>, ProjectError> {
        let dir = self.tables.staging_dir(def);
        let partitioned = self.settings.layout.partitioned();
        let offset_col = schema(def.event_type).index_of("log_offset")?;
        let mut out = TableOutput::new(def, dir, self.settings.codec, level, partitioned);
        // Rows from a topic do not carry their position (a file's name does): a merged
        // file takes its inputs' ranges, and is cut only between inputs.
        out.roll_within = !partitioned;
        for f in inputs {
            let path = self.tables.local_file(i, &f.name)?;
            for batch in batch_reader(&path)? {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                let (first, last) = if partitioned {
                    (f.first_offset, f.last_offset)
                } else {
                    let offsets = batch.column(offset_col).as_any().downcast_ref::<arrow::array::Int64Array>().ok_or_else(|| {
                        ProjectError::Schema { table: def.name, reason: format!("log_offset is not INT64 in {}", path.display()) }
                    })?;
                    // Rows are in log order within and across the files of a table.
                    (offsets.value(0) as u64, offsets.value(offsets.len() - 1) as u64)
                };
                out.write_batch(&batch, first, last)?;
            }
            out.roll_if_full()?;
        }
        out.finish()
    }

    /// Rebuilds all five tables from offset 0 up to `to` (clamped to the log's end): one
    /// commit per table replaces its files with the rebuilt ones.
    pub fn rebuild(&mut self, log: &dyn EventLog, to: u64, progress: &ProgressBar) -> Result<ProjectSummary, ProjectError> {
        if self.settings.layout.partitioned() {
            return self.rebuild_topic(log, progress);
        }
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
    let dirs: Vec<PathBuf> = TABLES.iter().map(|d| tables.staging_dir(d)).collect();
    let outputs = write_range(log, 0, to, &[0; 5], &dirs, codec, false, progress)?;
    failpoint("rebuild.before_commit")?;
    let mut summary = ProjectSummary { from_offset: 0, to_offset: to, events: to, ..Default::default() };
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
    let mut tables = Tables::scratch(root, work_dir, &Layout::Local)?;
    rebuild_tables(&mut tables, log, to, codec, progress)
}

/// Nice value of the continuous projector's thread, and of the decode and Parquet writer
/// threads it starts (Linux threads inherit it). Ingest answers clients that wait and
/// projection can lag a little, so under load the scheduler runs the API first: on 2 cores
/// with `wrk` at 64 connections, p99 latency was 4.8–5.7 ms at nice 10 against 5.5–54 ms
/// at equal priority, and ~3 ms without projection (benches/HISTORY.md, item 15).
const PROJECTOR_NICE: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority to [`PROJECTOR_NICE`]. Best effort: a
/// failure leaves the priority as it was.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers and touch no
        // memory of ours; on Linux, setpriority on a thread id changes that thread only.
        let result = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, PROJECTOR_NICE)
        };
        if result != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the projector's priority");
        }
    }
}

/// The continuous projector's own figures: what it has published and whether it fails.
/// `cli` hands them to the API for `/healthz` and `/metrics`.
#[derive(Default)]
pub struct ProjectionStats {
    /// Log offset the published tables reach.
    pub projected_offset: std::sync::atomic::AtomicU64,
    pub steps_total: std::sync::atomic::AtomicU64,
    /// Steps or compactions that failed or panicked.
    pub errors_total: std::sync::atomic::AtomicU64,
    /// Panics caught (each restarts the projector from the published tables).
    pub panics_total: std::sync::atomic::AtomicU64,
    /// Why projection fails now; `None` while it works.
    error: std::sync::Mutex<Option<String>>,
}

impl ProjectionStats {
    /// Records why projection fails now, or `None` once it works again.
    pub fn set_error(&self, why: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Continuous projection for `serve`: a thread that steps the projector every interval
/// (like the seed's Spark streaming job) and once more when stopped.
pub struct Continuous {
    stop: Arc<std::sync::atomic::AtomicBool>,
    wake: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Named so the interval's unit is in the name: the default keeps tables within about a
/// second of the log without a Delta commit per table more often than that.
pub const DEFAULT_PROJECT_INTERVAL_MS: u64 = 1_000;
/// Longest wait between projection attempts after repeated failures: a minute keeps a
/// failing disk from costing CPU while noticing a fix quickly enough.
pub const MAX_PROJECT_BACKOFF_MS: u64 = 60_000;
/// Longest interval `serve --project-interval-ms` takes: a day. Longer would mean tables
/// that never follow the log; the bound also keeps deadline arithmetic far from overflow.
pub const MAX_PROJECT_INTERVAL_MS: u64 = 24 * 60 * 60 * 1000;

/// How a step or compaction of the continuous projector failed (already counted and
/// reported by [`guarded`]).
enum Failure {
    Error(ProjectError),
    /// The projector is in an unknown state: it is reopened from the published tables.
    Panic,
}

/// Runs one step or compaction of the continuous projector, catching a panic, and records
/// the outcome in `stats`: success clears the reported error; an error or a panic is
/// counted and becomes the reported error.
fn guarded<T>(stats: &ProjectionStats, what: &str, work: impl FnOnce() -> Result<T, ProjectError>) -> Result<T, Failure> {
    use std::sync::atomic::Ordering;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(Ok(v)) => {
            stats.set_error(None);
            Ok(v)
        }
        Ok(Err(e)) => {
            stats.errors_total.fetch_add(1, Ordering::Relaxed);
            stats.set_error(Some(e.to_string()));
            tracing::error!(error = %e, "{what} failed; retrying with backoff");
            Err(Failure::Error(e))
        }
        Err(panic) => {
            let why = format!("the projector panicked: {}; it restarts from the published tables", panic_message(panic.as_ref()));
            stats.panics_total.fetch_add(1, Ordering::Relaxed);
            stats.errors_total.fetch_add(1, Ordering::Relaxed);
            stats.set_error(Some(why.clone()));
            tracing::error!("{why}");
            Err(Failure::Panic)
        }
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl Continuous {
    pub fn start(projector: Projector, log: Arc<dyn EventLog>, stats: Arc<ProjectionStats>, interval_ms: u64) -> Continuous {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let wake = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let wake2 = wake.clone();
        stats.projected_offset.store(projector.offset(), Ordering::Relaxed);
        let projector = projector.in_background();
        let restart = projector.restart();
        let thread = std::thread::Builder::new()
            .name("questlog-projector".into())
            .spawn(move || {
                lower_thread_priority();
                let hidden = ProgressBar::hidden();
                let mut failures: u32 = 0;
                // Free bytes when the last step failed for lack of space.
                let mut free_at_failure: Option<u64> = None;
                // `None` after a panic, until the projector is reopened from disk.
                let mut projector = Some(projector);
                let mut compaction_failed = false;
                loop {
                    let stopping = stop2.load(Ordering::SeqCst);
                    if projector.is_none() {
                        match restart.reopen() {
                            Ok(p) => {
                                tracing::warn!(
                                    projected_offset = p.offset(),
                                    "projector reopened the tables after a panic or a conflicting commit"
                                );
                                stats.projected_offset.store(p.offset(), Ordering::Relaxed);
                                stats.set_error(None);
                                projector = Some(p);
                            }
                            Err(e) => {
                                failures = failures.saturating_add(1);
                                stats.set_error(Some(format!("reopening the tables: {e}")));
                                tracing::error!(error = %e, failures, "cannot reopen the tables; retrying with backoff");
                            }
                        }
                    }
                    // A compaction that failed after its step was published is retried when
                    // there is no new step to run it after.
                    if let Some(p) = projector.as_mut().filter(|p| compaction_failed && p.offset() >= log.durable_end()) {
                        match guarded(&stats, "compaction", || p.compact()) {
                            Ok(_) => {
                                compaction_failed = false;
                                failures = 0;
                            }
                            Err(failure) => {
                                failures = failures.saturating_add(1);
                                if matches!(failure, Failure::Panic) || matches!(&failure, Failure::Error(e) if !e.is_no_space()) {
                                    projector = None;
                                }
                            }
                        }
                    }
                    while let Some(p) = projector.as_mut().filter(|p| p.offset() < log.durable_end()) {
                        let before = p.offset();
                        let result = guarded(&stats, "projection step", || p.step(log.as_ref(), &hidden));
                        // Whatever happened after it, a published step moved the tables.
                        stats.projected_offset.store(p.offset(), Ordering::Relaxed);
                        match result {
                            Ok(s) => {
                                failures = 0;
                                free_at_failure = None;
                                compaction_failed = false;
                                stats.steps_total.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(from = s.from_offset, to = s.to_offset, files = s.files_written, "projection step");
                            }
                            Err(Failure::Error(e)) => {
                                failures = failures.saturating_add(1);
                                free_at_failure = if e.is_no_space() { p.free_bytes() } else { None };
                                // The step was published; what failed came after it.
                                compaction_failed = p.offset() > before;
                                if !e.is_no_space() {
                                    // Another writer may have moved the tables, or a commit
                                    // landed that could not be read back: read them again.
                                    projector = None;
                                }
                                break;
                            }
                            Err(Failure::Panic) => {
                                failures = failures.saturating_add(1);
                                free_at_failure = None;
                                projector = None;
                                break;
                            }
                        }
                    }
                    // Caught up (or failing): the plain view shows the last commit.
                    if let Some(p) = projector.as_mut() {
                        if let Err(e) = p.publish_views() {
                            tracing::warn!(error = %e, "cannot update the plain-directory view");
                        }
                    }
                    if stopping {
                        return;
                    }
                    // After failures (a full disk, say), wait longer each time instead of
                    // re-reading and re-encoding the same range every interval.
                    let wait_ms = if failures == 0 {
                        interval_ms.max(1)
                    } else {
                        (interval_ms.max(1) << failures.min(16)).min(MAX_PROJECT_BACKOFF_MS)
                    };
                    let deadline = std::time::Instant::now().checked_add(std::time::Duration::from_millis(wait_ms));
                    while !stop2.load(Ordering::SeqCst) && !wake2.swap(false, Ordering::SeqCst) {
                        let now = std::time::Instant::now();
                        // No deadline (past what the clock can add) means: until woken.
                        let left = deadline.map_or(std::time::Duration::MAX, |d| d.saturating_duration_since(now));
                        if left.is_zero() {
                            break;
                        }
                        if let (Some(before), Some(free)) = (free_at_failure, projector.as_ref().and_then(|p| p.free_bytes())) {
                            if free >= before.saturating_add(SPACE_REGAINED_BYTES) {
                                break; // space came back: no need to sit out the backoff
                            }
                        }
                        std::thread::park_timeout(
                            left.min(std::time::Duration::from_millis(interval_ms.clamp(1, MAX_PROJECT_INTERVAL_MS))),
                        );
                    }
                }
            })
            .expect("spawning the projector thread");
        Continuous { stop, wake, thread: Some(thread) }
    }

    /// Asks for one more step now (e.g. after a batch was appended).
    pub fn nudge(&self) {
        self.wake.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Projects what is left and stops.
    pub fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Reads `from..to` from the log and writes each table's rows into files in `dirs`;
/// table `i` takes only the events at or past `starts[i]`.
#[allow(clippy::too_many_arguments)]
fn write_range(
    log: &dyn EventLog,
    from: u64,
    to: u64,
    starts: &[u64],
    dirs: &[PathBuf],
    codec: Codec,
    background: bool,
    progress: &ProgressBar,
) -> Result<Vec<Vec<FileEntry>>, ProjectError> {
    let writers = if background { 1 } else { PARQUET_WRITERS };
    write_rows(dirs, codec, false, writers, |sink| {
        let mut n = 0u64;
        let mut push = |offset: u64, record: &RecordView<'_>| -> Result<(), ProjectError> {
            let i = record.event.event_type().index();
            n += 1;
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

/// Where a step's rows go: each table's rows are built into Arrow batches here and handed
/// to the Parquet writer thread of [`write_rows`].
struct RowSink {
    builders: Vec<Building>,
    /// One queue per Parquet writer thread.
    txs: Vec<std::sync::mpsc::SyncSender<ToWriter>>,
    /// Batches the writers are done with, by table.
    recycled: std::sync::mpsc::Receiver<(usize, RecordBatch)>,
}

impl RowSink {
    /// Adds a row to table `i`: the record at `position` in the step's order (what file
    /// names are cut at), stored with `offset` and `partition` (tables from a topic).
    fn push<S: AsRef<str>, M: AsRef<str>>(
        &mut self,
        i: usize,
        position: u64,
        offset: u64,
        partition: u32,
        record: &Record<S, M>,
    ) -> Result<(), ProjectError> {
        let b = &mut self.builders[i];
        b.rows.push(offset, partition, record);
        b.first = b.first.min(position);
        b.last = position;
        if b.rows.rows >= BATCH_ROWS {
            self.send(i)?;
        }
        Ok(())
    }

    // A send fails only when the writer stopped on an error, which joining returns.
    fn send(&mut self, table: usize) -> Result<(), ProjectError> {
        while let Ok((i, batch)) = self.recycled.try_recv() {
            self.builders[i].rows.recycle(batch);
        }
        let b = &mut self.builders[table];
        let batch = b.rows.finish()?;
        let (first, last) = (b.first, b.last);
        b.first = u64::MAX;
        let writer = table % self.txs.len();
        self.txs[writer].send(ToWriter::Batch { table, batch, first, last }).map_err(|_| ProjectError::WriterStopped)
    }

    fn finish(&mut self) -> Result<(), ProjectError> {
        for i in 0..self.builders.len() {
            if self.builders[i].rows.rows > 0 {
                self.send(i)?;
            }
        }
        for tx in &self.txs {
            tx.send(ToWriter::Finish).map_err(|_| ProjectError::WriterStopped)?;
        }
        Ok(())
    }
}

/// Runs `feed`, which pushes rows into a [`RowSink`], and writes them into files in
/// `dirs`: a table's rows in the order pushed.
fn write_rows(
    dirs: &[PathBuf],
    codec: Codec,
    partitioned: bool,
    writers: usize,
    feed: impl FnOnce(&mut RowSink) -> Result<(), ProjectError>,
) -> Result<Vec<Vec<FileEntry>>, ProjectError> {
    // Three stages on their own threads, so that the two cores share the work: decoding
    // the log (for_each_prefetched's helper, or the Kafka client's), building Arrow
    // batches (this thread), and encoding and compressing them into Parquet (the writer
    // below), which alone took about half of this thread's time. Each table's batches
    // reach the writer in order, so the files are the same bytes as when written on one
    // thread.
    std::thread::scope(|scope| -> Result<Vec<Vec<FileEntry>>, ProjectError> {
        // Batches the writers are done with come back here, to be built into again.
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<(usize, RecordBatch)>();
        let count = writers.clamp(1, PARQUET_WRITERS);
        let mut txs = Vec::with_capacity(count);
        let mut writers = Vec::with_capacity(count);
        for w in 0..count {
            let (tx, rx) = std::sync::mpsc::sync_channel::<ToWriter>(WRITER_QUEUE_BATCHES);
            let recycle_tx = recycle_tx.clone();
            txs.push(tx);
            writers.push(scope.spawn(move || -> Result<Vec<(usize, Vec<FileEntry>)>, ProjectError> {
                // Each writer has its own tables: table `i` goes to writer `i % count`.
                let mut outs: Vec<(usize, TableOutput)> = TABLES
                    .iter()
                    .zip(dirs)
                    .enumerate()
                    .filter(|(i, _)| i % count == w)
                    .map(|(i, (def, dir))| (i, TableOutput::new(def, dir.clone(), codec, 0, partitioned)))
                    .collect();
                for message in rx {
                    match message {
                        ToWriter::Batch { table, batch, first, last } => {
                            let out = outs.iter_mut().find(|(i, _)| *i == table).map(|(_, o)| o).ok_or(ProjectError::WriterStopped)?;
                            out.write_batch(&batch, first, last)?;
                            let _ = recycle_tx.send((table, batch));
                        }
                        ToWriter::Finish => return outs.into_iter().map(|(i, o)| Ok((i, o.finish()?))).collect(),
                    }
                }
                // The builder stopped on an error: dropping the outputs deletes their files.
                Err(ProjectError::WriterStopped)
            }));
        }
        drop(recycle_tx);
        let builders =
            TABLES.iter().map(|def| Building { rows: RowBuilder::new(def.event_type, partitioned), first: u64::MAX, last: 0 }).collect();
        let mut sink = RowSink { builders, txs, recycled: recycle_rx };
        let built = feed(&mut sink).and_then(|()| sink.finish());
        drop(sink);
        let mut written: Result<Vec<Vec<FileEntry>>, ProjectError> = Ok(vec![Vec::new(); TABLES.len()]);
        for writer in writers {
            match (writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), &mut written) {
                (Ok(files), Ok(all)) => {
                    for (i, f) in files {
                        all[i] = f;
                    }
                }
                (Err(e), Ok(_)) => written = Err(e),
                // A writer that failed on its own (a full disk, say) stopped the step;
                // the others then only saw the builder stop. Report the cause.
                (Err(e), Err(ProjectError::WriterStopped)) if !matches!(e, ProjectError::WriterStopped) => written = Err(e),
                (_, Err(_)) => {}
            }
        }
        match (built, written) {
            // The writer's own error says why it stopped taking batches.
            (Err(ProjectError::WriterStopped), Err(e)) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(()), written) => written,
        }
    })
}

/// One table's rows being built into the next batch, with their log offsets.
struct Building {
    rows: RowBuilder,
    first: u64,
    last: u64,
}

/// What the row builder hands the Parquet writer thread.
enum ToWriter {
    Batch {
        table: usize,
        batch: RecordBatch,
        first: u64,
        last: u64,
    },
    /// Every row was sent: close the files and return them.
    Finish,
}

/// The trailing run of files to merge: the last [`COMPACT_FANIN`] or more files, if they
/// share a level and none is full.
fn compaction_run(files: &[FileEntry]) -> Option<std::ops::Range<usize>> {
    let last = files.last()?;
    let mergeable = |f: &FileEntry| f.level == last.level && (f.rows as usize) < ROWS_PER_FILE;
    if !mergeable(last) {
        return None;
    }
    let start = files.len() - files.iter().rev().take_while(|f| mergeable(f)).count();
    (files.len() - start >= COMPACT_FANIN).then_some(start..files.len())
}

/// Reads a table file a batch of `BATCH_ROWS` rows at a time; the one way projection,
/// `verify` and `check` read Parquet back.
pub fn batch_reader(path: &Path) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, ProjectError> {
    let file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
        .map_err(|source| ProjectError::Parquet { path: path.to_path_buf(), source })
}

/// A consistent view of the tables for readers in any process: each table at the Delta
/// version where it reaches the offset all five share, with a local path for every file
/// (for S3 tables, a cached copy).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub offset: u64,
    /// Where the tables are, for messages.
    pub root: String,
    /// Files per table, in [`TABLES`] order.
    pub files: Vec<Vec<PathBuf>>,
    pub entries: Vec<Vec<FileEntry>>,
    /// The Delta version of each table the snapshot reads (`None`: no table yet).
    pub versions: Vec<Option<u64>>,
    /// Tables from a topic, taken with its layout: the next offset of each partition the
    /// snapshot reaches (empty otherwise).
    pub partition_offsets: Vec<u64>,
    /// Whether the tables have the `log_partition` column (projected from a topic).
    pub partitioned: bool,
}

impl Snapshot {
    /// Rows per table, in [`TABLES`] order.
    pub fn rows(&self) -> Vec<u64> {
        self.entries.iter().map(|files| files.iter().map(|f| f.rows).sum()).collect()
    }
}

/// Takes a [`Snapshot`] of the tables at `root`. No tables yet is an empty snapshot;
/// nothing is created. `work_dir` holds the cache of S3 files.
pub fn snapshot(root: &TablesRoot, work_dir: &Path) -> Result<Snapshot, ProjectError> {
    snapshot_with(root, work_dir, None)
}

/// A [`Snapshot`] of tables from the topic `layout` names, with its partitions' offsets.
pub fn snapshot_with(root: &TablesRoot, work_dir: &Path, layout: Option<&Layout>) -> Result<Snapshot, ProjectError> {
    let mut tables = DeltaTables::open_read_only(root, work_dir, layout)?;
    let offset = tables.consistent_offset()?;
    let partition_offsets = tables.partition_offsets(0).to_vec();
    for (i, def) in TABLES.iter().enumerate().skip(1) {
        if tables.partition_offsets(i) != partition_offsets {
            return Err(ProjectError::Inconsistent {
                table: def.name,
                reason: format!(
                    "at position {offset} it reaches the partitions' offsets {:?}, table {} {partition_offsets:?}",
                    tables.partition_offsets(i),
                    TABLES[0].name
                ),
            });
        }
    }
    let partitioned = (0..TABLES.len()).any(|i| tables.partitioned(i));
    let mut files = Vec::with_capacity(TABLES.len());
    let mut entries = Vec::with_capacity(TABLES.len());
    let mut versions = Vec::with_capacity(TABLES.len());
    for i in 0..TABLES.len() {
        let es = tables.files(i).to_vec();
        files.push(es.iter().map(|f| tables.local_file(i, &f.name)).collect::<Result<Vec<_>, _>>()?);
        entries.push(es);
        versions.push(tables.version(i));
    }
    Ok(Snapshot { offset, root: root.to_string(), files, entries, versions, partition_offsets, partitioned })
}

/// The Hive `CREATE EXTERNAL TABLE` statements for the five tables at `tables_dir`
/// (normally the absolute `DATA_DIR/tables`): the seed's DDL with questlog's columns.
pub fn hive_ddl(tables_dir: &Path) -> String {
    let mut out = String::new();
    for def in &TABLES {
        let s = schema(def.event_type);
        let cols: Vec<String> = s
            .fields()
            .iter()
            .map(|f| {
                let ty = match f.data_type() {
                    DataType::Utf8 => "string",
                    DataType::Int64 => "bigint",
                    DataType::Int16 => "smallint",
                    DataType::Float32 => "float",
                    DataType::Timestamp(..) => "timestamp",
                    _ => "string",
                };
                format!("  {} {}", quote_hive(f.name()), ty)
            })
            .collect();
        out.push_str(&format!(
            "create external table if not exists default.{} (\n{}\n) stored as parquet location '{}'\ntblproperties (\"parquet.compress\"=\"SNAPPY\");\n\n",
            def.name,
            cols.join(",\n"),
            tables_dir.join(def.location).display()
        ));
    }
    out
}

/// The statements that register the five Delta tables at `root` in Spark (Delta Lake's
/// `USING DELTA`), Trino's Delta Lake connector, and DuckDB (`delta_scan`).
pub fn delta_ddl(root: &TablesRoot) -> Result<String, ProjectError> {
    let mut spark = String::from("-- Spark with Delta Lake (spark-sql --packages io.delta:delta-spark_2.13:<version>)\n");
    let mut trino = String::from("-- Trino, Delta Lake connector (catalog `delta`)\n");
    let mut duck = String::from("-- DuckDB (INSTALL delta; LOAD delta; for s3:// also httpfs and a CREATE SECRET)\n");
    for def in &TABLES {
        let url = root.table_url(def)?;
        let location = match root {
            TablesRoot::Local(dir) => dir.join(def.location).display().to_string(),
            TablesRoot::S3 { .. } => url.as_str().trim_end_matches('/').to_string(),
        };
        let quoted = location.replace('\'', "''");
        spark.push_str(&format!("create table if not exists default.{} using delta location '{quoted}';\n", def.name));
        trino.push_str(&format!(
            "call delta.system.register_table(schema_name => 'default', table_name => '{}', table_location => '{quoted}');\n",
            def.name
        ));
        duck.push_str(&format!("create or replace view {} as select * from delta_scan('{quoted}');\n", def.name));
    }
    Ok(format!("{spark}\n{trino}\n{duck}"))
}

fn quote_hive(name: &str) -> String {
    // `timestamp` is a reserved word in Hive 3; back-quote every name for safety.
    format!("`{name}`")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(compaction_run(&files), None, "a full file is never merged");
    }

    #[test]
    fn schemas_follow_the_contract() {
        let s = schema(EventType::BuyAsset);
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "raw_event",
                "timestamp",
                "accept",
                "host",
                "user_agent",
                "event_type",
                "store_id",
                "item_name",
                "inventory_id",
                "total_cost",
                "category",
                "on_hand_qty",
                "log_offset",
                "event_id",
                "player_id",
                "session_id",
                "event_time"
            ]
        );
    }
}
