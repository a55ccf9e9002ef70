//! Projections: the log turned into tables (the seed's five, and one per registered
//! type's model), incrementally (a step from the
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
//!
//! Where things are: [`tables`] (the tables in force at an offset, their Arrow schemas), [`rows`]
//! (records into Arrow batches, and the build/write stages of a step), [`writer`] (Parquet
//! files, content-hashed names), [`sink`] (the seam to storage: [`TableSink`], [`Tables`]),
//! [`projector`] (steps, catch-up, compaction, rebuilds), [`continuous`] (`serve`'s
//! background projector), [`snapshot`] (reading the tables back), [`ddl`] (statements for
//! other engines), [`delta`] (Delta Lake through delta-rs, local or S3), [`plain`] (the
//! plain-directory view), `topic` (projection from a Kafka topic). This file holds what
//! they share: the error type, failpoints and directory syncing.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::log::LogError;

pub mod continuous;
pub mod ddl;
pub mod delta;
mod group;
mod merge;
pub mod plain;
pub mod projector;
pub mod rows;
pub mod sink;
pub mod snapshot;
pub mod tables;
mod topic;
pub mod writer;

/// The default place of the Delta tables: `DATA_DIR/delta`.
pub const DELTA_DIR: &str = "delta";

pub use continuous::{
    run_delta_in_background, set_thread_nice, Continuous, ProjectionStats, DEFAULT_PROJECT_INTERVAL_MS, MAX_PROJECT_BACKOFF_MS,
    MAX_PROJECT_INTERVAL_MS,
};
pub use ddl::{delta_ddl, hive_ddl};
pub use delta::{CommitKind, DeltaTables, Layout, TablesRoot, DEFAULT_VACUUM_RETENTION_MS};
pub use projector::{rebuild_into, ProjectSummary, Projector, COMPACT_FANIN, MAX_STEP_EVENTS};
pub use sink::{TableSink, Tables};
pub use snapshot::{batch_reader, conform, keep_mask, snapshot, snapshot_with, Snapshot};
pub use tables::{
    arrow_type, schema, schema_for, table_for, PropertyColumn, RegisteredTable, SeedTable, TableDef, TableKind, TableSet, SEED_TABLES,
};
pub use topic::{for_each_taken, rebuild_topic_into, SourceRejects, SOURCE_REJECTED_DIR, TOPIC_DEDUP_WINDOW_OFFSETS};
pub use writer::{Codec, FileEntry, ROWS_PER_FILE, ROW_GROUP_ROWS};
// For topic.rs, which names these through `super::`.
use projector::EST_PARQUET_BYTES_PER_EVENT;
use rows::{write_rows, RowSink, PARQUET_WRITERS};

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

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

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// The store catalogue copies (`DATA_DIR/catalog`) could not be written or read.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("writing Parquet {path}: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
    #[error("building Arrow batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("table {table} at {url}: {source}")]
    Delta { table: String, url: String, source: Box<deltalake_core::DeltaTableError> },
    #[error("tables at {location}: {reason}")]
    Location { location: String, reason: String },
    #[error("table {table}: {reason}")]
    Schema { table: String, reason: String },
    #[error("table file {path} is damaged: {reason}; run `questlog project --rebuild` to rebuild the tables from the log")]
    Damaged { path: PathBuf, reason: String },
    #[error("table {table} is not consistent with the others: {reason}")]
    Inconsistent { table: String, reason: String },
    #[error(
        "table {table} was changed by another writer: this projector read version {read_version} and meant to commit \
         log offsets up to {wanted_offset}, but the table is now at version {version} with log offsets up to {offset}; \
         nothing was committed twice. Run one projector per set of tables (stop the other `serve` or `project`)"
    )]
    Conflict { table: String, read_version: u64, version: u64, offset: u64, wanted_offset: u64 },
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

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProjectError {
    let context = context.into();
    move |source| ProjectError::Io { context, source }
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
