//! Writing Parquet files: one table's rows into files rolled at [`ROWS_PER_FILE`], each
//! written under a temporary name, hashed as it is written (the name is the content's
//! hash), synced and renamed; the settings that make the bytes a function of the rows.
//!
//! Invariant: the same batches with the same [`Codec`] give the same bytes, hence names.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::{delta, failpoint, io_err, ProjectError, TableDef};

/// Rows per Parquet row group (~8 MB of a table's columns): large enough for good
/// compression and fast scans, small enough that five tables' open row groups stay well
/// under 100 MiB. Halving it from 128K rows cut a rebuild's peak memory by ~55 MiB and,
/// since fresh memory is zeroed by the kernel, its system time, for files within 0.01% of
/// the size (10^6 events, side by side).
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// A file is closed and a new one started after this many rows, so files stay in the
/// tens of MiB that Spark, Trino and DuckDB split and read well.
pub const ROWS_PER_FILE: usize = 1_000_000;

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

/// Bytes of a Parquet file handed to the disk at a time as it is written
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, as RocksDB's `bytes_per_sync`): each piece's
/// writeback is started when it is full, and not waited for. Without it a compaction's file
/// of tens of MB went to the disk all at once at its final fsync, and the log's group
/// commits queued behind it: 100–220 ms answers to appends under 5,000 events/s while a
/// merge ran. In 1 MiB pieces the log's syncs slip in between, and the final fsync finds
/// most of the file written. (Waiting for the piece before each new one, as a first
/// version did, made the projector fall ~10 s behind under a soak at 0.7 of the maximum
/// load, and its catch-up steps of 500,000 events then raised the server's memory by
/// ~100 MiB; appends' p99 was the same either way.)
const SYNC_PIECE_BYTES: u64 = 1024 * 1024;

/// A `Write` that hashes what passes through it (SHA-256), for content-named files, and
/// writes it to the disk in [`SYNC_PIECE_BYTES`] pieces as it goes.
struct Hashing {
    inner: BufWriter<File>,
    hash: sha2::Sha256,
    /// Bytes written; where the piece being written starts.
    written: u64,
    piece: u64,
}

impl Hashing {
    fn new(file: File) -> Hashing {
        use sha2::Digest as _;
        Hashing { inner: BufWriter::with_capacity(1 << 20, file), hash: sha2::Sha256::new(), written: 0, piece: 0 }
    }

    /// Starts writing the full piece to the disk. Best effort (an error is left to the
    /// final fsync, which makes the file durable).
    fn next_piece(&mut self) -> std::io::Result<()> {
        self.inner.flush()?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            let fd = self.inner.get_ref().as_raw_fd();
            // SAFETY: sync_file_range takes a descriptor this writer owns and plain
            // integers; it reads no memory of ours.
            unsafe {
                libc::sync_file_range(
                    fd,
                    self.piece as libc::off64_t,
                    (self.written - self.piece) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.piece = self.written;
        Ok(())
    }
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        if self.written - self.piece >= SYNC_PIECE_BYTES {
            self.next_piece()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one Parquet file a batch at a time.
struct FileWriter {
    path: PathBuf,
    writer: ArrowWriter<Hashing>,
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
        let out = Hashing::new(file);
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

/// Numbers the unfinished files of this process (see [`TableOutput::write_batch`]).
static NEXT_UNFINISHED_FILE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Writes one table's batches into a rolling sequence of files.
pub(super) struct TableOutput {
    dir: PathBuf,
    codec: Codec,
    level: u8,
    schema: SchemaRef,
    current: Option<FileWriter>,
    done: Vec<FileEntry>,
    /// Whether a file is cut as soon as it reaches [`ROWS_PER_FILE`] rows, even within a
    /// batch sequence (else only where [`TableOutput::roll_if_full`] is called).
    pub(super) roll_within: bool,
}

impl TableOutput {
    pub(super) fn new(def: &TableDef, dir: PathBuf, codec: Codec, level: u8, partitioned: bool) -> TableOutput {
        TableOutput { dir, codec, level, schema: def.arrow_schema(partitioned), current: None, done: Vec::new(), roll_within: true }
    }

    /// Writes a batch of rows with log offsets `first..=last`, after those written so far.
    pub(super) fn write_batch(&mut self, batch: &RecordBatch, first: u64, last: u64) -> Result<(), ProjectError> {
        if self.current.is_none() {
            // The process id keeps two projectors' unfinished files apart, and tells a
            // later open whether the writer of one is gone; the process-wide sequence
            // number keeps apart a step's and a background merge's in one table.
            let seq = NEXT_UNFINISHED_FILE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = self.dir.join(format!(".writing-{}-{seq}.tmp", std::process::id()));
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
    pub(super) fn roll_if_full(&mut self) -> Result<(), ProjectError> {
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

    pub(super) fn finish(mut self) -> Result<Vec<FileEntry>, ProjectError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's output and a background merge's write into one table directory at once:
    /// their unfinished files must not share a name. (Numbered per output, both took
    /// `.writing-<pid>-1.tmp`: the second truncated the first's file, and the second
    /// finish found its file renamed away.)
    #[test]
    fn two_outputs_in_one_directory_at_once_both_finish() {
        let dir = tempfile::tempdir().unwrap();
        let def = &super::super::TableDef::seed(crate::event::EventType::JoinGuild);
        let batch = RecordBatch::new_empty(def.arrow_schema(false));
        let mut a = TableOutput::new(def, dir.path().to_path_buf(), Codec::Snappy, 0, false);
        let mut b = TableOutput::new(def, dir.path().to_path_buf(), Codec::Snappy, 1, false);
        a.write_batch(&batch, 0, 0).unwrap();
        b.write_batch(&batch, 1, 1).unwrap();
        let (fa, fb) = (a.finish().unwrap(), b.finish().unwrap());
        assert_eq!((fa.len(), fb.len()), (1, 1));
        assert_ne!(fa[0].name, fb[0].name);
        for f in fa.iter().chain(&fb) {
            crate::project::batch_reader(&dir.path().join(&f.name)).unwrap();
        }
    }
}
