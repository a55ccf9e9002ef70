//! The seam between projection and storage: what a table holds and the offset it
//! reaches, where new files are finished, one durable commit per table ([`TableSink`]), and
//! its implementation over Delta tables with the plain-directory view ([`Tables`]).

use std::fs;
use std::path::{Path, PathBuf};

use super::plain::{self, PlainView};
use super::{
    failpoint, fsync_dir, io_err, CommitKind, DeltaTables, FileEntry, Layout, ProjectError, TableDef, TableSet, TablesRoot,
    DEFAULT_VACUUM_RETENTION_MS,
};
use std::sync::Arc;

/// One table's change in a [`TableSink::commit_all`].
pub struct TableCommit<'a> {
    pub table: usize,
    pub kind: CommitKind,
    pub added: &'a [FileEntry],
    pub removed: &'a [FileEntry],
    pub offset: u64,
    pub partition_offsets: &'a [u64],
    /// A consumer-group member's commit: the partitions it holds and where it read them
    /// (see [`super::delta::Claim`]); `None` for the one projector of the tables.
    pub claim: Option<super::delta::Claim<'a>>,
}

/// The seam between projection and storage: what the tables hold, where new files are
/// written, and how a change is committed. [`Tables`] implements it with Delta Lake tables
/// on a local disk or S3-protocol object storage.
pub trait TableSink: Send {
    /// The log offset each table reaches, in [`TableSet`] order (tables from a topic: their
    /// position, the sum of their partitions' next offsets; a table not written yet: the
    /// offset it begins at).
    fn offsets(&self) -> Vec<u64>;
    /// The tables, in [`TableSet`] order, each with the columns it has.
    fn defs(&self) -> Vec<Arc<TableDef>>;
    /// Opens the tables of `set` (which extends those open) not open yet; with `create`
    /// (`set` is in force at the offset a step reaches), also makes those missing, and
    /// tables an ADDITION widened take their new columns with their next commit.
    fn ensure(&mut self, set: &TableSet, create: bool) -> Result<(), ProjectError>;
    /// Tables from a topic: the next offset of each partition table `i` reaches.
    fn partition_offsets(&self, i: usize) -> &[u64];
    /// Reads every table's newest version again (what other writers committed since).
    fn reload(&mut self) -> Result<(), ProjectError>;
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
    /// Several tables' changes (a step's), each as [`commit`](TableSink::commit), at once
    /// where the storage allows: each is its own commit, and any of them may land while
    /// another fails. `Ok` means every one is durable and visible.
    fn commit_all(&mut self, commits: &[TableCommit<'_>]) -> Result<(), ProjectError> {
        for c in commits {
            assert!(c.claim.is_none(), "a sink without claimed commits was given one");
            self.commit(c.table, c.kind, c.added, c.removed, c.offset, c.partition_offsets)?;
        }
        Ok(())
    }
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
        set: &TableSet,
    ) -> Result<Tables, ProjectError> {
        fs::create_dir_all(data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
        let delta = DeltaTables::open(root, data_dir, vacuum_retention_ms, check, layout, set)?;
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
    pub(super) fn scratch(root: &TablesRoot, work_dir: &Path, layout: &Layout, set: &TableSet) -> Result<Tables, ProjectError> {
        let delta = DeltaTables::open(root, work_dir, DEFAULT_VACUUM_RETENTION_MS, false, layout, set)?;
        Ok(Tables { delta, plain: None, view_pending: false, data_dir: work_dir.to_path_buf() })
    }
}

impl TableSink for Tables {
    fn offsets(&self) -> Vec<u64> {
        self.delta.offsets()
    }

    fn defs(&self) -> Vec<Arc<TableDef>> {
        self.delta.defs()
    }

    fn ensure(&mut self, set: &TableSet, create: bool) -> Result<(), ProjectError> {
        self.delta.ensure(set, create)
    }

    fn partition_offsets(&self, i: usize) -> &[u64] {
        self.delta.partition_offsets(i)
    }

    fn reload(&mut self) -> Result<(), ProjectError> {
        self.delta.reload()
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
            fsync_dir(&self.delta.staging_dir(self.delta.def(i)))?;
        }
        self.delta.commit(i, kind, added, removed, offset, partition_offsets)
    }

    fn commit_all(&mut self, commits: &[TableCommit<'_>]) -> Result<(), ProjectError> {
        for c in commits.iter().filter(|c| !c.added.is_empty()) {
            fsync_dir(&self.delta.staging_dir(self.delta.def(c.table)))?;
        }
        self.delta.commit_all(commits)
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
        let defs = self.delta.defs();
        let mut view = Vec::with_capacity(defs.len());
        for (i, def) in defs.iter().enumerate() {
            let files = self
                .delta
                .files(i)
                .iter()
                .map(|f| Ok((self.delta.local_file(i, &f.name)?, f.name.clone())))
                .collect::<Result<Vec<_>, ProjectError>>()?;
            view.push((def.as_ref(), files));
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
        fs2::available_space(&self.delta.staging_dir(self.delta.def(0))).ok()
    }
}
