//! Reading the tables back: a [`Snapshot`] of each table at the version where all of them
//! reach the same offset (so a reader never mixes two steps), reading a file's batches,
//! and [`conform`]ing a batch to its table's columns (files written before an ADDITION
//! lack its columns).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::rows::BATCH_ROWS;
use super::{io_err, DeltaTables, FileEntry, Layout, ProjectError, TableDef, TableSet, TablesRoot};
use crate::log::SchemaRecord;

/// Reads a table file a batch of `BATCH_ROWS` rows at a time; the one way projection,
/// `verify` and `check` read Parquet back.
pub fn batch_reader(path: &Path) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, ProjectError> {
    let file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
        .map_err(|source| ProjectError::Parquet { path: path.to_path_buf(), source })
}

/// `batch` (read from a file of table `table`) with the columns of `schema`, taken by
/// name: a column the file lacks (added by a later ADDITION) is all nulls, one `schema`
/// lacks is left out. The batch returned has exactly `schema`.
pub fn conform(table: &str, batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ProjectError> {
    let have = batch.schema();
    if have == *schema {
        return Ok(batch);
    }
    if have.fields().len() == schema.fields().len() && have.fields().iter().zip(schema.fields()).all(|(a, b)| a.name() == b.name()) {
        // The same columns (a file's schema may differ in metadata only).
        return Ok(RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?);
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match have.index_of(field.name()) {
            Ok(i) => columns.push(batch.column(i).clone()),
            Err(_) if field.is_nullable() => columns.push(new_null_array(field.data_type(), batch.num_rows())),
            Err(_) => {
                return Err(ProjectError::Schema {
                    table: table.to_string(),
                    reason: format!("a file of it lacks the column {}, which is not nullable", field.name()),
                })
            }
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A consistent view of the tables for readers in any process: each table at the Delta
/// version where it reaches the offset all of them share, with a local path for every file
/// (for S3 tables, a cached copy).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub offset: u64,
    /// Where the tables are, for messages.
    pub root: String,
    /// The tables in force at `offset`, with their columns there: the seed's five, then
    /// registered types' tables. The vectors below are in this order.
    pub defs: Vec<Arc<TableDef>>,
    /// Files per table.
    pub files: Vec<Vec<PathBuf>>,
    pub entries: Vec<Vec<FileEntry>>,
    /// The Delta version of each table the snapshot reads (`None`: no table yet).
    pub versions: Vec<Option<u64>>,
    /// Tables from a topic, taken with its layout: the next offset of each partition the
    /// snapshot reaches (empty otherwise).
    pub partition_offsets: Vec<u64>,
    /// Whether the tables have the `log_partition` column (projected from a topic).
    pub partitioned: bool,
    /// Tables from a topic that members of a consumer group project: whether some table
    /// holds rows past `partition_offsets` (its newest commit reaches further than
    /// another's). Readers leave those rows out: a row of partition `p` at an offset of
    /// `partition_offsets[p]` or more is not in the snapshot ([`Snapshot::keeps`]).
    pub cut: bool,
}

impl Snapshot {
    /// Rows per table, in [`Snapshot::defs`] order, as the files hold them (with
    /// [`Snapshot::cut`], rows past the snapshot too).
    pub fn rows(&self) -> Vec<u64> {
        self.entries.iter().map(|files| files.iter().map(|f| f.rows).sum()).collect()
    }

    /// The limit per partition readers apply (see [`Snapshot::cut`]), if any.
    pub fn limits(&self) -> Option<&[u64]> {
        self.cut.then_some(self.partition_offsets.as_slice())
    }
}

/// Which rows of `batch` (a batch of a table from a topic, with `log_partition` and
/// `log_offset`) are below `limits` (per partition, the first offset not in a snapshot).
pub fn keep_mask(batch: &RecordBatch, limits: &[u64]) -> Result<arrow::array::BooleanArray, String> {
    use arrow::array::{Array, Int32Array, Int64Array};
    let partitions = batch
        .column_by_name("log_partition")
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
        .ok_or("no INT32 column log_partition")?;
    let offsets =
        batch.column_by_name("log_offset").and_then(|c| c.as_any().downcast_ref::<Int64Array>()).ok_or("no INT64 column log_offset")?;
    Ok((0..batch.num_rows())
        .map(|r| {
            let limit = usize::try_from(partitions.value(r)).ok().and_then(|p| limits.get(p)).copied().unwrap_or(0);
            Some(!offsets.is_null(r) && u64::try_from(offsets.value(r)).is_ok_and(|o| o < limit))
        })
        .collect())
}

/// Takes a [`Snapshot`] of the tables at `root` of a log whose schema records are
/// `schemas`. No tables yet is an empty snapshot; nothing is created. `work_dir` holds
/// the cache of S3 files.
pub fn snapshot(root: &TablesRoot, work_dir: &Path, schemas: &[SchemaRecord]) -> Result<Snapshot, ProjectError> {
    snapshot_with(root, work_dir, None, schemas)
}

/// A [`Snapshot`] of tables from the topic `layout` names, with its partitions' offsets.
pub fn snapshot_with(
    root: &TablesRoot,
    work_dir: &Path,
    layout: Option<&Layout>,
    schemas: &[SchemaRecord],
) -> Result<Snapshot, ProjectError> {
    let known = TableSet::from_records(schemas, u64::MAX)?;
    let mut tables = DeltaTables::open_read_only(root, work_dir, layout, &known)?;
    let n = (0..known.len()).map(|i| tables.partition_offsets(i).len()).max().unwrap_or(0);
    let by_partition = n > 0
        && (0..known.len()).all(|i| {
            let v = tables.partition_offsets(i);
            v.len() == n || (v.is_empty() && tables.version(i).is_none())
        });
    let (offset, set, partition_offsets, cut) = if by_partition {
        // Tables from a topic whose partitions' offsets each table names: each at its
        // newest version, read up to the offsets all of them reach, partition by partition
        // (members of a consumer group commit each table for their own partitions, so two
        // tables need not share any version's offsets; a projector stopped half-way leaves
        // some a step ahead).
        let mut limits = vec![u64::MAX; n];
        // A table not made yet holds nothing to cut at.
        for i in (0..known.len()).filter(|&i| tables.version(i).is_some() || known.get(i).builtin().is_some()) {
            let v = tables.partition_offsets(i);
            for (p, limit) in limits.iter_mut().enumerate() {
                *limit = (*limit).min(v.get(p).copied().unwrap_or(0));
            }
        }
        let ahead = (0..known.len()).any(|i| tables.version(i).is_some() && tables.partition_offsets(i) != limits.as_slice());
        let offset = limits.iter().sum();
        // A Kafka log's records are in force by partition (docs/CONTRACT.md 13.4).
        let in_force: Vec<crate::log::SchemaRecord> =
            schemas.iter().filter(|r| crate::log::record_in_force(r.from_offset, &r.from_partitions, offset, &limits)).cloned().collect();
        (offset, TableSet::from_records(&in_force, u64::MAX)?, limits, ahead)
    } else {
        let offset = tables.consistent_offset()?;
        // The tables in force at that offset, with their columns there (a table made or
        // widened by a step past it is read as it was).
        let set = TableSet::from_records(schemas, offset)?;
        let partition_offsets = tables.partition_offsets(0).to_vec();
        for i in 1..set.len() {
            if tables.partition_offsets(i) != partition_offsets && set.get(i).builtin().is_some() {
                return Err(ProjectError::Inconsistent {
                    table: set.get(i).name.clone(),
                    reason: format!(
                        "at position {offset} it reaches the partitions' offsets {:?}, table {} {partition_offsets:?}",
                        tables.partition_offsets(i),
                        set.get(0).name
                    ),
                });
            }
        }
        (offset, set, partition_offsets, false)
    };
    let partitioned = (0..set.len()).any(|i| tables.partitioned(i));
    let mut files = Vec::with_capacity(set.len());
    let mut entries = Vec::with_capacity(set.len());
    let mut versions = Vec::with_capacity(set.len());
    for i in 0..set.len() {
        let es = tables.files(i).to_vec();
        files.push(es.iter().map(|f| tables.local_file(i, &f.name)).collect::<Result<Vec<_>, _>>()?);
        entries.push(es);
        versions.push(tables.version(i));
    }
    Ok(Snapshot {
        offset,
        root: root.to_string(),
        defs: set.defs().to_vec(),
        files,
        entries,
        versions,
        partition_offsets,
        partitioned,
        cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::delta::Claim;
    use crate::project::sink::TableCommit;
    use crate::project::{CommitKind, DEFAULT_VACUUM_RETENTION_MS};
    use arrow::array::{Int32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    /// Rows at or past a partition's limit are left out, per partition.
    #[test]
    fn keep_mask_cuts_each_partition_at_its_limit() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("log_offset", DataType::Int64, false),
            Field::new("log_partition", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![0, 5, 9, 10, 3, 4])), Arc::new(Int32Array::from(vec![0, 0, 0, 0, 1, 2]))],
        )
        .unwrap();
        let mask = keep_mask(&batch, &[10, 4]).unwrap();
        let kept: Vec<bool> = mask.iter().map(|v| v.unwrap()).collect();
        // partition 0 below 10; partition 1 below 4; partition 2 has no limit: none of it.
        assert_eq!(kept, [true, true, true, false, true, false]);
    }

    /// Two tables that group members committed in different orders share no version's
    /// offsets: the snapshot reads both at their newest, up to the smallest offset per
    /// partition, and says readers must cut; a reader not told the topic finds it in the
    /// tables' metadata.
    #[test]
    fn a_snapshot_of_tables_ahead_of_each_other_cuts_per_partition() {
        let d = tempfile::tempdir().unwrap();
        let root = TablesRoot::Local(d.path().join("delta"));
        let layout = Layout::Topic { topic: "t".into(), partitions: 2 };
        let mut tables = DeltaTables::open(&root, d.path(), DEFAULT_VACUUM_RETENTION_MS, false, &layout, &TableSet::seed()).unwrap();
        let file = |i: usize, first: u64, rows: u64| FileEntry {
            name: crate::project::delta::file_name(first, first + rows - 1, 0, &format!("{i:016x}")),
            level: 0,
            rows,
            bytes: 100,
            first_offset: first,
            last_offset: first + rows - 1,
        };
        for i in 0..TableSet::seed().len() {
            // Every table: partition 0 to 10 and partition 1 to 4 — table 0 further: 0 to 12.
            let (p0, p1) = if i == 0 { (12, 4) } else { (10, 4) };
            let added = [file(i, 0, p0 + p1)];
            let offsets = [p0, p1];
            tables
                .commit_all(&[TableCommit {
                    table: i,
                    kind: CommitKind::Append,
                    added: &added,
                    removed: &[],
                    offset: p0 + p1,
                    partition_offsets: &offsets,
                    claim: Some(Claim { partitions: &[0, 1], expected: &[0, 0] }),
                }])
                .unwrap();
        }
        let snap = snapshot(&root, d.path(), &[]).unwrap();
        assert!(snap.cut, "table 0 holds partition 0 past the others");
        assert_eq!(snap.partition_offsets, [10, 4]);
        assert_eq!(snap.limits(), Some(&[10, 4][..]));
        assert_eq!(snap.offset, 14);
        let even = snapshot_with(&root, d.path(), Some(&layout), &[]).unwrap();
        assert_eq!(even.partition_offsets, [10, 4]);
    }
}
