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
//! moved in between). When it was superseded is its directory's modification time, set
//! just before the symlink moves off it; a generation the symlink never pointed at (above
//! the live one: a crash's leftover) is deleted at once. The view is derived (the Delta log
//! is the record); it is rebuilt on open and never synced.

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
    /// The files of the live generation, per table, by name and inode, to skip publishing
    /// no change. The inode counts: a rebuild that writes a file of the same name (same
    /// content) over a damaged one must not leave the view linked to the damaged one.
    live: Vec<Vec<(String, u64, u64)>>,
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
        use std::os::unix::fs::MetadataExt as _;
        let names: Vec<Vec<(String, u64, u64)>> = tables
            .iter()
            .map(|(_, fs)| {
                fs.iter()
                    .map(|(path, n)| {
                        let id = fs::metadata(path).map(|m| (m.dev(), m.ino())).unwrap_or((0, 0));
                        (n.clone(), id.0, id.1)
                    })
                    .collect()
            })
            .collect();
        if names == self.live && fs::read_link(self.data_dir.join(LINK)).is_ok() {
            return Ok(());
        }
        self.last_publish = Some(std::time::Instant::now());
        let previous = self.live_generation();
        let generations = self.generations();
        let next = generations.iter().map(|(n, _)| *n).max().unwrap_or(0) + 1;
        let dir = self.data_dir.join(gen_name(next));
        let _ = fs::remove_dir_all(&dir);
        for (def, files) in tables {
            let table_dir = dir.join(&def.location);
            fs::create_dir_all(&table_dir).map_err(io_err(format!("creating {}", table_dir.display())))?;
            for (path, name) in files {
                let link = table_dir.join(name);
                fs::hard_link(path, &link).map_err(io_err(format!("linking {} to {}", link.display(), path.display())))?;
            }
        }
        let tmp = self.data_dir.join(".tables.link.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(gen_name(next), &tmp).map_err(io_err(format!("creating link {}", tmp.display())))?;
        // The generation being left is superseded from now: its directory says so, and its
        // grace starts here (before the swap, so a crash in between leaves only a live
        // generation with a fresh time, which is harmless). If its time cannot be set,
        // nothing is deleted this time rather than judge it by its creation.
        let marked = match previous {
            Some(p) => fs::File::open(self.data_dir.join(gen_name(p))).and_then(|d| d.set_modified(SystemTime::now())),
            None => Ok(()),
        };
        fs::rename(&tmp, self.data_dir.join(LINK)).map_err(io_err("swapping the tables link"))?;
        self.live = names;
        match marked {
            Ok(()) => self.remove_old(next, previous),
            Err(e) => {
                tracing::warn!(error = %e, "cannot mark the superseded plain-view generation; old generations stay until the next publish")
            }
        }
        Ok(())
    }

    /// The generation `DATA_DIR/tables` points at.
    fn live_generation(&self) -> Option<u64> {
        gen_number(&fs::read_link(self.data_dir.join(LINK)).ok()?.to_string_lossy())
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

    /// Deletes generations superseded more than [`GRACE_MS`] ago (by their directory's
    /// modification time, set when the link left them), and at once those the link never
    /// pointed at: above `previous` (the generation it left for `live`), a crash's leftovers.
    fn remove_old(&self, live: u64, previous: Option<u64>) {
        let grace = Duration::from_millis(GRACE_MS);
        for (n, dir) in self.generations() {
            let never_live = previous.is_some_and(|p| n > p) && n != live;
            let remove = if never_live {
                true
            } else if n < live {
                let superseded_at = fs::metadata(&dir).and_then(|m| m.modified()).unwrap_or(SystemTime::now());
                superseded_at.elapsed().is_ok_and(|age| age > grace)
            } else {
                false
            };
            if remove {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use crate::project::TableDef;

    fn age(dir: &Path, secs: u64) {
        fs::File::open(dir).unwrap().set_modified(SystemTime::now() - Duration::from_secs(secs)).unwrap();
    }

    #[test]
    fn a_stale_leftover_never_takes_the_live_generation_with_it() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("part-a.parquet");
        fs::write(&file, b"x").unwrap();
        let other = d.path().join("part-b.parquet");
        fs::write(&other, b"y").unwrap();
        let def = &TableDef::seed(EventType::JoinGuild);
        let mut view = PlainView::new(d.path());
        view.publish(&[(def, vec![(file.clone(), "part-a.parquet".into())])]).unwrap();
        // The first generation is superseded now: it stays for its grace.
        view.publish(&[(def, vec![(other.clone(), "part-b.parquet".into())])]).unwrap();
        assert_eq!(view.live_generation(), Some(2));
        assert!(d.path().join(gen_name(1)).is_dir(), "superseded a moment ago: kept");
        // A crash left an empty generation 3 (a moment ago: it goes at once all the same,
        // the link never pointed at it); generation 2 has been live for an hour.
        let leftover = d.path().join(gen_name(3));
        fs::create_dir(&leftover).unwrap();
        age(&d.path().join(gen_name(2)), 3600);
        // A new projector (a new view) publishes another state.
        let mut view = PlainView::new(d.path());
        view.publish(&[(def, vec![(file.clone(), "part-a.parquet".into())])]).unwrap();
        let live = view.live_generation().unwrap();
        assert!(live >= 4, "{live}");
        assert!(d.path().join(gen_name(2)).is_dir(), "the generation live until a moment ago is kept for its grace");
        assert!(d.path().join(gen_name(1)).is_dir(), "superseded under a minute ago: kept");
        assert!(!leftover.exists(), "the leftover the link never pointed at is gone");
        assert!(d.path().join(LINK).join(&def.location).join("part-a.parquet").is_file());
        // Once a generation's grace is over, it goes.
        age(&d.path().join(gen_name(1)), 120);
        let mut view = PlainView::new(d.path());
        view.publish(&[(def, vec![(other, "part-b.parquet".into())])]).unwrap();
        assert!(!d.path().join(gen_name(1)).exists(), "superseded over a minute ago: deleted");
        assert!(d.path().join(gen_name(live)).is_dir(), "superseded just now: kept");
    }
}
