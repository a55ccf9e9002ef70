//! `questlog verify`: checks that the log is whole (dense offsets, every block decodes with
//! a known format version and a matching checksum) and that the published tables are
//! exactly a projection of the log up to their offset — by rebuilding them in a scratch
//! directory and comparing row by row — and that the plain-directory view shows exactly
//! the files of a committed state.
//!
//! Invariant: verify only reads the data dir (its scratch rebuild lives in a temp dir).

use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use indicatif::ProgressBar;

use crate::log::{EventLog, LogError, ValueFormat};
use arrow::datatypes::SchemaRef;

use crate::project::{self, Codec, Layout, ProjectError, Snapshot, TableSet, TablesRoot};

/// A divergence, said precisely.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("tables: {0}")]
    Project(#[from] ProjectError),
    #[error("tables are published at log offset {tables} but the log ends at {log}: the log lost records (truncated?)")]
    TablesAheadOfLog { tables: u64, log: u64 },
    #[error("table {table}: file {path} is in the Delta log but missing")]
    MissingFile { table: String, path: PathBuf },
    #[error("table {table}: cannot read {path}: {reason}")]
    Unreadable { table: String, path: PathBuf, reason: String },
    #[error("table {table}: row {row} (log offset {offset}) differs from the log's projection{detail}")]
    RowDiffers { table: String, row: u64, offset: String, detail: String },
    #[error("table {table} has {actual} rows; the log up to offset {offset} projects to {expected}")]
    RowCount { table: String, actual: u64, expected: u64, offset: u64 },
    #[error("table {table}: the plain-directory view {dir}: {reason}")]
    PlainView { table: String, dir: PathBuf, reason: String },
    #[error("{0}")]
    Io(String),
}

/// What a successful verify checked.
#[derive(Debug)]
pub struct VerifyReport {
    pub log_records: u64,
    pub tables_offset: u64,
    pub rows: Vec<u64>,
    pub files: usize,
    /// Tables from a topic: the partitions' offsets the tables (and the rebuild) reach.
    pub partition_offsets: Option<Vec<u64>>,
}

impl VerifyReport {
    pub fn render(&self) -> String {
        if let Some(offsets) = &self.partition_offsets {
            return format!(
                "ok: tables at the partitions' offsets {offsets:?} ({} files, {} rows) equal a rebuild from the {} records of the topic up to there, partition by partition",
                self.files,
                self.rows.iter().sum::<u64>(),
                self.log_records
            );
        }
        format!(
            "ok: log holds {} records, dense and decodable; tables at offset {} ({} files, {} rows) equal the log's projection",
            self.log_records,
            self.tables_offset,
            self.files,
            self.rows.iter().sum::<u64>()
        )
    }
}

/// Verifies the log and the tables of `data_dir`.
pub fn verify(log: &dyn EventLog, root: &TablesRoot, data_dir: &Path, progress: &ProgressBar) -> Result<VerifyReport, VerifyError> {
    let end = log.durable_end();
    progress.set_length(end);
    let mut n = 0u64;
    for item in log.read(0, end)? {
        let (offset, _) = item?;
        if offset != n {
            return Err(LogError::Corrupt { offset: n, reason: format!("expected offset {n}, read {offset}") }.into());
        }
        n += 1;
        if n % 65_536 == 0 {
            progress.inc(65_536);
        }
    }
    if n != end {
        return Err(LogError::Corrupt { offset: n, reason: format!("log ends at {n}, expected {end}") }.into());
    }

    let schemas = log.schemas()?;
    let snap = project::snapshot(root, data_dir, &schemas)?;
    if snap.offset > end {
        return Err(VerifyError::TablesAheadOfLog { tables: snap.offset, log: end });
    }
    check_files(&snap)?;
    check_plain_view(root, data_dir, &snap, &TableSet::from_records(&schemas, u64::MAX)?)?;
    let scratch = tempfile::tempdir().map_err(|e| VerifyError::Io(format!("creating a scratch dir: {e}")))?;
    let rebuilt_root = TablesRoot::Local(scratch.path().join("tables"));
    project::rebuild_into(log, snap.offset, &rebuilt_root, scratch.path(), Codec::Snappy, &ProgressBar::hidden())?;
    let rebuilt = project::snapshot(&rebuilt_root, scratch.path(), &schemas)?;
    let mut rows = Vec::new();
    for (i, def) in snap.defs.iter().enumerate() {
        let schema = def.arrow_schema(snap.partitioned);
        rows.push(compare_table(&def.name, &schema, &snap.files[i], &rebuilt.files[i], snap.offset, None)?);
    }
    Ok(VerifyReport {
        log_records: n,
        tables_offset: snap.offset,
        rows,
        files: snap.files.iter().map(Vec::len).sum(),
        partition_offsets: None,
    })
}

/// Verifies tables projected from the Kafka topic `topic` (whose values are in `format`):
/// every file the Delta log names is there, and each table's rows of each partition are
/// exactly those a rebuild from the topic up to the tables' offsets gives, in order.
/// (Across partitions, a table's rows follow its steps, a rebuild's follow the
/// partitions: only the order within a partition is promised.)
pub fn verify_topic(
    log: &dyn EventLog,
    format: ValueFormat,
    topic: &str,
    root: &TablesRoot,
    data_dir: &Path,
    progress: &ProgressBar,
) -> Result<VerifyReport, VerifyError> {
    let layout = Layout::Topic { topic: topic.to_string(), partitions: log.partitions() };
    let schemas = log.schemas()?;
    let snap = project::snapshot_with(root, data_dir, Some(&layout), &schemas)?;
    check_files(&snap)?;
    let scratch = tempfile::tempdir().map_err(|e| VerifyError::Io(format!("creating a scratch dir: {e}")))?;
    let rebuilt_root = TablesRoot::Local(scratch.path().join("tables"));
    let to = if snap.partition_offsets.is_empty() { vec![0; log.partitions() as usize] } else { snap.partition_offsets.clone() };
    let summary = project::rebuild_topic_into(log, format, topic, &to, &rebuilt_root, scratch.path(), progress)?;
    let rebuilt = project::snapshot(&rebuilt_root, scratch.path(), &schemas)?;
    let mut rows = vec![0u64; snap.defs.len()];
    for (i, def) in snap.defs.iter().enumerate() {
        let schema = def.arrow_schema(true);
        for p in 0..log.partitions() {
            let limit = snap.limits().map_or(u64::MAX, |l| l[p as usize]);
            rows[i] += compare_table(&def.name, &schema, &snap.files[i], &rebuilt.files[i], snap.offset, Some((p as i32, limit)))?;
        }
    }
    Ok(VerifyReport {
        log_records: summary.events,
        tables_offset: snap.offset,
        rows,
        files: snap.files.iter().map(Vec::len).sum(),
        partition_offsets: Some(to),
    })
}

/// Every file the Delta log lists exists with the size it recorded.
fn check_files(snap: &Snapshot) -> Result<(), VerifyError> {
    for ((def, files), entries) in snap.defs.iter().zip(&snap.files).zip(&snap.entries) {
        for (f, entry) in files.iter().zip(entries) {
            match std::fs::metadata(f) {
                Err(_) => return Err(VerifyError::MissingFile { table: def.name.clone(), path: f.clone() }),
                Ok(m) if m.len() != entry.bytes => {
                    return Err(VerifyError::Unreadable {
                        table: def.name.clone(),
                        path: f.clone(),
                        reason: format!("it is {} bytes; the Delta log recorded {}", m.len(), entry.bytes),
                    })
                }
                Ok(_) => {}
            }
        }
    }
    Ok(())
}

/// The plain-directory view (`DATA_DIR/tables`, local tables), which Hive, Spark and
/// directory globs read instead of the Delta log: each table's directory of the generation
/// the link points at holds exactly the files of one committed state of that table (the
/// snapshot's, or the table's newest, which the view shows once a step is published), and
/// each is that file (a hard link to it, or the same bytes). Absent when no projector made
/// it (or it could not be kept): nothing to check.
fn check_plain_view(root: &TablesRoot, data_dir: &Path, snap: &Snapshot, known: &TableSet) -> Result<(), VerifyError> {
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;
    if !root.is_local() || std::fs::read_link(data_dir.join(project::plain::LINK)).is_err() {
        return Ok(());
    }
    let generation = std::fs::canonicalize(data_dir.join(project::plain::LINK))
        .map_err(|e| VerifyError::Io(format!("resolving {}: {e}", data_dir.join(project::plain::LINK).display())))?;
    let newest = project::DeltaTables::open_read_only(root, data_dir, None, known)?;
    for (i, def) in snap.defs.iter().enumerate() {
        let dir = generation.join(&def.location);
        let bad = |reason: String| VerifyError::PlainView { table: def.name.clone(), dir: dir.clone(), reason };
        let listed: BTreeSet<String> = std::fs::read_dir(&dir)
            .map_err(|e| bad(format!("cannot list it: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| !n.starts_with('.'))
            .collect();
        let at_snapshot: BTreeSet<String> = snap.entries[i].iter().map(|f| f.name.clone()).collect();
        let at_newest: BTreeSet<String> = newest.files(i).iter().map(|f| f.name.clone()).collect();
        let newest_paths: Vec<PathBuf>;
        let committed: &[PathBuf] = if listed == at_snapshot {
            &snap.files[i]
        } else if listed == at_newest {
            newest_paths = newest.files(i).iter().map(|f| newest.local_file(i, &f.name)).collect::<Result<_, _>>()?;
            &newest_paths
        } else {
            let missing: Vec<&String> = at_snapshot.difference(&listed).take(3).collect();
            let extra: Vec<&String> = listed.difference(&at_snapshot).take(3).collect();
            return Err(bad(format!(
                "it holds {} files, not those of a committed state ({} at the checked version; missing {missing:?}, not committed {extra:?})",
                listed.len(),
                at_snapshot.len()
            )));
        };
        for table_file in committed.iter() {
            let name = table_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let shown = dir.join(&name);
            let (a, b) = match (std::fs::metadata(&shown), std::fs::metadata(table_file)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => return Err(bad(format!("{name}: {e}"))),
            };
            let same = (a.dev(), a.ino()) == (b.dev(), b.ino())
                || (a.len() == b.len() && std::fs::read(&shown).ok() == std::fs::read(table_file).ok());
            if !same {
                return Err(bad(format!("{name} is not the table's file of that name (other bytes)")));
            }
        }
    }
    Ok(())
}

/// Streams the batches of `files` in order, each with the table's columns (`schema`).
struct Rows<'a> {
    table: &'a str,
    schema: &'a SchemaRef,
    files: std::slice::Iter<'a, PathBuf>,
    reader: Option<(PathBuf, parquet::arrow::arrow_reader::ParquetRecordBatchReader)>,
    /// Only the rows of this `log_partition` (tables from a topic) below this offset (a
    /// snapshot's limit; `u64::MAX` for none).
    partition: Option<(i32, u64)>,
}

impl Rows<'_> {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, VerifyError> {
        loop {
            if let Some((path, reader)) = &mut self.reader {
                match reader.next() {
                    Some(Ok(b)) => match self.partition {
                        _ if b.num_rows() == 0 => continue,
                        None => return Ok(Some(project::conform(self.table, b, self.schema)?)),
                        Some((p, limit)) => {
                            let unreadable =
                                |reason: String| VerifyError::Unreadable { table: self.table.to_string(), path: path.clone(), reason };
                            let mut limits = vec![0u64; usize::try_from(p).unwrap_or(0) + 1];
                            if let Some(l) = limits.last_mut() {
                                *l = limit;
                            }
                            let mask = project::keep_mask(&b, &limits).map_err(|e| unreadable(e.to_string()))?;
                            let kept = arrow::compute::filter_record_batch(&b, &mask).map_err(|e| unreadable(e.to_string()))?;
                            if kept.num_rows() > 0 {
                                return Ok(Some(project::conform(self.table, kept, self.schema)?));
                            }
                            continue; // no row of this partition in the batch: read on
                        }
                    },
                    Some(Err(e)) => {
                        return Err(VerifyError::Unreadable { table: self.table.to_string(), path: path.clone(), reason: e.to_string() })
                    }
                    None => self.reader = None,
                }
            }
            let Some(path) = self.files.next() else { return Ok(None) };
            let reader = project::batch_reader(path).map_err(|e| VerifyError::Unreadable {
                table: self.table.to_string(),
                path: path.clone(),
                reason: e.to_string(),
            })?;
            self.reader = Some((path.clone(), reader));
        }
    }
}

/// Compares a table's published rows with the rebuilt ones, slice by slice.
fn compare_table(
    table: &str,
    schema: &SchemaRef,
    actual: &[PathBuf],
    expected: &[PathBuf],
    offset: u64,
    partition: Option<(i32, u64)>,
) -> Result<u64, VerifyError> {
    let mut a = Rows { table, schema, files: actual.iter(), reader: None, partition };
    let mut e = Rows { table, schema, files: expected.iter(), reader: None, partition };
    let (mut ab, mut eb): (Option<RecordBatch>, Option<RecordBatch>) = (None, None);
    let (mut ai, mut ei) = (0usize, 0usize);
    let (mut a_rows, mut e_rows) = (0u64, 0u64);
    loop {
        if ab.as_ref().is_none_or(|b| ai >= b.num_rows()) {
            ab = a.next_batch()?;
            ai = 0;
        }
        if eb.as_ref().is_none_or(|b| ei >= b.num_rows()) {
            eb = e.next_batch()?;
            ei = 0;
        }
        match (&ab, &eb) {
            (None, None) => return Ok(a_rows),
            (Some(x), None) => {
                a_rows += (x.num_rows() - ai) as u64;
                while let Some(b) = a.next_batch()? {
                    a_rows += b.num_rows() as u64;
                }
                return Err(VerifyError::RowCount { table: table.to_string(), actual: a_rows, expected: e_rows, offset });
            }
            (None, Some(y)) => {
                e_rows += (y.num_rows() - ei) as u64;
                while let Some(b) = e.next_batch()? {
                    e_rows += b.num_rows() as u64;
                }
                return Err(VerifyError::RowCount { table: table.to_string(), actual: a_rows, expected: e_rows, offset });
            }
            (Some(x), Some(y)) => {
                let n = (x.num_rows() - ai).min(y.num_rows() - ei);
                let xs = x.slice(ai, n);
                let ys = y.slice(ei, n);
                if xs.schema() != ys.schema() {
                    return Err(VerifyError::RowDiffers {
                        table: table.to_string(),
                        row: a_rows,
                        offset: "?".into(),
                        detail: format!(": schema {:?} differs from {:?}", xs.schema(), ys.schema()),
                    });
                }
                if xs != ys {
                    // Find the first row and column that differ.
                    for r in 0..n {
                        for (c, field) in xs.schema().fields().iter().enumerate() {
                            if xs.column(c).slice(r, 1) != ys.column(c).slice(r, 1) {
                                let fmt = |b: &RecordBatch, col: usize| {
                                    let printable = crate::check::printable(b.column(col));
                                    arrow::util::display::ArrayFormatter::try_new(printable.as_ref(), &Default::default())
                                        .map(|f| f.value(r).to_string())
                                        .unwrap_or_default()
                                };
                                let off_col = ys.schema().index_of("log_offset").unwrap_or(0);
                                return Err(VerifyError::RowDiffers {
                                    table: table.to_string(),
                                    row: a_rows + r as u64,
                                    offset: fmt(&ys, off_col),
                                    detail: format!(": column {} is {:?}, the log says {:?}", field.name(), fmt(&xs, c), fmt(&ys, c)),
                                });
                            }
                        }
                    }
                }
                ai += n;
                ei += n;
                a_rows += n as u64;
                e_rows += n as u64;
            }
        }
    }
}
