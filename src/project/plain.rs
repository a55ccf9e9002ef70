//! The plain-directory view of local Delta tables, for readers that list a directory
//! instead of reading the Delta log: the seed's Hive DDL in Spark or Hive, DuckDB's and
//! pyarrow's `*.parquet` globs, Spark's `read.parquet`.
//!
//! `DATA_DIR/tables` is a symlink to a generation directory `tables.gen-NNNNNN/`, which
//! holds one directory per table (`guild_joins/`, …) of hard links to exactly the files
//! of one committed state of the Delta tables. Each publish that changes the files builds
//! a new generation (at most every [`MIN_INTERVAL_MS`]) and swaps the symlink in one
//! rename, so a reader that lists a table's directory sees one state: never a compaction's
//! inputs beside its output. A superseded generation is deleted [`GRACE_MS`] after it was
//! superseded, so a reader that resolved the symlink once still finds the files it listed
//! for that long (one that goes through the symlink for each file may not, if the view
//! moved in between). The view is derived (the Delta log is the record); it is rebuilt on
//! open and never synced.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{io_err, ProjectError, TableDef};

pub const LINK: &str = "tables";
const GEN_PREFIX: &str = "tables.gen-";

/// How long a superseded generation stays: a reader that listed it has this long to open
/// the files it listed (a Spark or DuckDB query plans and opens its files in well under a
/// minute).
pub const GRACE_MS: u64 = 60 * 1000;

/// At most one new generation this often (a later publish is held back, then made by
/// [`PlainView::flush`]): with `serve` stepping every 20 ms under load, a generation per
/// step would keep thousands of directories within [`GRACE_MS`]. Directory readers see
/// the tables at most this much later than Delta readers.
pub const MIN_INTERVAL_MS: u64 = 1_000;

pub struct PlainView {
    data_dir: PathBuf,
    /// The file names of the live generation, per table, to skip publishing no change.
    live: Vec<Vec<String>>,
    last_publish: Option<std::time::Instant>,
}

fn gen_name(generation: u64) -> String {
    format!("{GEN_PREFIX}{generation:06}")
}

fn gen_number(name: &str) -> Option<u64> {
    name.strip_prefix(GEN_PREFIX)?.parse().ok()
}

impl PlainView {
    pub fn new(data_dir: &Path) -> PlainView {
        PlainView { data_dir: data_dir.to_path_buf(), live: Vec::new(), last_publish: None }
    }

    /// Whether a publish now would be held back by [`MIN_INTERVAL_MS`].
    pub fn too_soon(&self) -> bool {
        self.last_publish.is_some_and(|at| at.elapsed() < Duration::from_millis(MIN_INTERVAL_MS))
    }

    /// Points `DATA_DIR/tables` at a new generation holding `files` (per table: the
    /// Delta file's path and name), unless that is what it shows already.
    pub fn publish(&mut self, tables: &[(&TableDef, Vec<(PathBuf, String)>)]) -> Result<(), ProjectError> {
        let names: Vec<Vec<String>> = tables.iter().map(|(_, fs)| fs.iter().map(|(_, n)| n.clone()).collect()).collect();
        if names == self.live && fs::read_link(self.data_dir.join(LINK)).is_ok() {
            return Ok(());
        }
        self.last_publish = Some(std::time::Instant::now());
        let generations = self.generations();
        let next = generations.iter().map(|(n, _)| *n).max().unwrap_or(0) + 1;
        let dir = self.data_dir.join(gen_name(next));
        let _ = fs::remove_dir_all(&dir);
        for (def, files) in tables {
            let table_dir = dir.join(def.location);
            fs::create_dir_all(&table_dir).map_err(io_err(format!("creating {}", table_dir.display())))?;
            for (path, name) in files {
                let link = table_dir.join(name);
                fs::hard_link(path, &link).map_err(io_err(format!("linking {} to {}", link.display(), path.display())))?;
            }
        }
        let tmp = self.data_dir.join(".tables.link.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(gen_name(next), &tmp).map_err(io_err(format!("creating link {}", tmp.display())))?;
        fs::rename(&tmp, self.data_dir.join(LINK)).map_err(io_err("swapping the tables link"))?;
        self.live = names;
        self.remove_old(next);
        Ok(())
    }

    /// Generation directories, with their numbers.
    fn generations(&self) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<(u64, PathBuf)> = fs::read_dir(&self.data_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| gen_number(&e.file_name().to_string_lossy()).map(|n| (n, e.path())))
            .collect();
        out.sort();
        out
    }

    /// Deletes generations superseded more than [`GRACE_MS`] ago. A generation was
    /// superseded when the next one was made (its directory's modification time).
    fn remove_old(&self, live: u64) {
        let generations = self.generations();
        let grace = Duration::from_millis(GRACE_MS);
        for pair in generations.windows(2) {
            let (old, _) = &pair[0];
            let (_, successor) = &pair[1];
            if *old == live {
                continue;
            }
            let superseded_at = fs::metadata(successor).and_then(|m| m.modified()).unwrap_or(SystemTime::now());
            if superseded_at.elapsed().is_ok_and(|age| age > grace) {
                let _ = fs::remove_dir_all(&pair[0].1);
            }
        }
    }
}
