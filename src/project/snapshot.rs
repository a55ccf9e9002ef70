//! Reading the tables back: a [`Snapshot`] of each table at the version where all five
//! reach the same offset (so a reader never mixes two steps), and reading a file's batches.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::rows::BATCH_ROWS;
use super::{io_err, DeltaTables, FileEntry, Layout, ProjectError, TablesRoot, TABLES};

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
