//! Merging a run of small table files into files of the next level: the work of
//! compaction, done in place by `project` and on a thread of its own beside `serve`'s steps.
//!
//! Invariants: a merge only reads committed files and writes new ones (content-named, in
//! no commit yet); it never commits. The projector commits a finished merge between
//! steps, so the tables have one writer. At most one background merge runs per projector,
//! and dropping it unjoined waits for its thread and deletes what it wrote. (Files of a
//! merge whose commit failed stay, since the commit may have landed: the next open
//! removes them if no commit names them.)

use std::path::PathBuf;
use std::thread::JoinHandle;

use super::writer::TableOutput;
use std::sync::Arc;

use super::{batch_reader, conform, Codec, FileEntry, ProjectError, TableDef};

/// Merges `inputs` (local paths of committed files, in log order, with their entries) into
/// files of `level` in `dir`.
pub(super) fn merge_files(
    def: &TableDef,
    dir: PathBuf,
    codec: Codec,
    partitioned: bool,
    inputs: &[(PathBuf, FileEntry)],
    level: u8,
) -> Result<Vec<FileEntry>, ProjectError> {
    let schema = def.arrow_schema(partitioned);
    let offset_col = schema.index_of("log_offset")?;
    let mut out = TableOutput::new(def, dir, codec, level, partitioned);
    // Rows from a topic do not carry their position (a file's name does): a merged
    // file takes its inputs' ranges, and is cut only between inputs.
    out.roll_within = !partitioned;
    for (path, f) in inputs {
        for batch in batch_reader(path)? {
            // Files from before an ADDITION lack its columns: nulls in the merged file.
            let batch = conform(&def.name, batch?, &schema)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let (first, last) = if partitioned {
                (f.first_offset, f.last_offset)
            } else {
                let offsets = batch.column(offset_col).as_any().downcast_ref::<arrow::array::Int64Array>().ok_or_else(|| {
                    ProjectError::Schema { table: def.name.clone(), reason: format!("log_offset is not INT64 in {}", path.display()) }
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

/// A merge running on a thread of its own (see the module's invariants).
pub(super) struct BackgroundMerge {
    /// The table (its index in the projector's tables) and the files the merge replaces.
    pub(super) table: usize,
    pub(super) inputs: Vec<FileEntry>,
    dir: PathBuf,
    thread: Option<JoinHandle<Result<Vec<FileEntry>, ProjectError>>>,
}

impl BackgroundMerge {
    /// Starts merging `inputs` of table `table` (index `table`) into files of `level` in
    /// `dir`. The thread inherits the caller's (lowered) priority.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        table: usize,
        def: Arc<TableDef>,
        dir: PathBuf,
        codec: Codec,
        partitioned: bool,
        inputs: Vec<(PathBuf, FileEntry)>,
        level: u8,
    ) -> Result<BackgroundMerge, ProjectError> {
        let entries = inputs.iter().map(|(_, f)| f.clone()).collect();
        let out_dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name("questlog-merge".into())
            .spawn(move || merge_files(&def, out_dir, codec, partitioned, &inputs, level))
            .map_err(|e| ProjectError::Io { context: "starting a merge thread".into(), source: e })?;
        Ok(BackgroundMerge { table, inputs: entries, dir, thread: Some(thread) })
    }

    pub(super) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the merge; its files are then the caller's to commit. A panic of the
    /// merge thread is raised again here, on the projector's thread, which reports and
    /// counts it as its own (`serve`'s projector reopens the tables after one).
    pub(super) fn join(mut self) -> Result<Vec<FileEntry>, ProjectError> {
        let thread = self.thread.take().expect("a merge is joined once");
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for BackgroundMerge {
    /// A merge dropped unjoined (the projector is reopened or stops) is waited for, so no
    /// thread writes into the tables after their projector is gone, and its files go: a
    /// merged file's name is its content, which no committed file has while the files it
    /// replaces are live.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Ok(Ok(files)) = thread.join() {
                for f in &files {
                    let _ = std::fs::remove_file(self.dir.join(&f.name));
                }
            }
        }
    }
}
