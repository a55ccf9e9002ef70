//! Projection end to end: many small steps with crashes at every point of the publish
//! protocol and a real SIGKILL, against a rebuild of the same log elsewhere.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TABLES: [&str; 5] = ["guild_joins", "enemy_kills", "quests", "take_damage", "transactions"];

/// Every table's rows in log order, as CSV.
fn rows(data_dir: &Path) -> BTreeMap<&'static str, String> {
    TABLES
        .iter()
        .map(|t| (*t, questlog_ok(data_dir, &["sql", &format!("SELECT * FROM {t} ORDER BY log_offset"), "--format", "csv"])))
        .collect()
}

/// Name → bytes of every Parquet file of the live tables.
fn files(data_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for d in TABLE_DIRS {
        for e in std::fs::read_dir(data_dir.join("tables").join(d)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            out.insert(format!("{d}/{name}"), std::fs::read(e.path()).unwrap());
        }
    }
    out
}

fn copy_log(from: &Path, to: &Path) {
    copy_dir(&from.join("log"), &to.join("log"));
}

fn project_crashing_at(data_dir: &Path, failpoint: &str, step_events: &str) {
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["project", "--step-events", step_events])
        .env("QUESTLOG_FAILPOINT", failpoint)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "project should have crashed at {failpoint}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(failpoint));
}

#[test]
fn steps_with_crashes_equal_a_rebuild_and_rebuilds_are_byte_identical() {
    let a = tempfile::tempdir().unwrap();
    let a = a.path();
    questlog_ok(a, &["generate", "--seed", "5", "--events", "12000"]);
    questlog_ok(a, &["project", "--step-events", "1000"]);
    assert_eq!(tables_offset(a), 12_000);

    // Crash at every point of the publish protocol; each restart resumes cleanly.
    questlog_ok(a, &["generate", "--seed", "6", "--events", "9000"]);
    let mut end = 21_000;
    for (seed, fp) in [(70, "publish.before_commit"), (71, "publish.after_commit"), (72, "publish.before_view")] {
        let before = tables_offset(a);
        project_crashing_at(a, fp, "700");
        let after = tables_offset(a);
        assert!(after >= before && after <= end);
        // The next run resumes from the offsets the Delta commits recorded.
        questlog_ok(a, &["project", "--step-events", "700"]);
        assert_eq!(tables_offset(a), end);
        questlog_ok(a, &["generate", "--seed", &seed.to_string(), "--events", "1500"]);
        end += 1500;
    }

    // A real SIGKILL in the middle of many small steps.
    questlog_ok(a, &["generate", "--seed", "8", "--events", "40000"]);
    let start = tables_offset(a);
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(a)
        .args(["project", "--step-events", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tables_offset(a) == start && Instant::now() < deadline {
        std::thread::yield_now();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = tables_offset(a);
    assert!(killed_at > start, "the projection had published steps before the kill");
    questlog_ok(a, &["project", "--step-events", "2500"]);
    let end = end + 40_000;
    assert_eq!(tables_offset(a), end);

    // Small steps leave few files: compaction merges each full size tier.
    let a_files = files(a);
    for d in TABLE_DIRS {
        let n = a_files.keys().filter(|k| k.starts_with(d)).count();
        assert!(n <= 30, "{d} has {n} files after ~200 small steps");
        assert!(a_files.keys().all(|k| k.ends_with(".parquet")), "no staged or stray files: {:?}", a_files.keys());
    }

    // The same log rebuilt elsewhere: the same rows, table by table.
    let b = tempfile::tempdir().unwrap();
    let b = b.path();
    copy_log(a, b);
    let out = questlog_ok(b, &["project", "--rebuild"]);
    assert!(out.contains(&format!("projected {end} events")), "{out}");
    let a_rows = rows(a);
    let b_rows = rows(b);
    for t in TABLES {
        assert_eq!(a_rows[t].lines().count(), b_rows[t].lines().count(), "{t} row count");
        assert!(a_rows[t] == b_rows[t], "{t}: incremental rows differ from the rebuild");
    }
    let total: usize = a_rows.values().map(|csv| csv.lines().count() - 1).sum();
    assert_eq!(total as u64, end);

    // Two rebuilds (here and in a third dir) are byte-identical, file names included.
    let first = files(b);
    questlog_ok(b, &["project", "--rebuild"]);
    assert!(first == files(b), "rebuilding again changed the files");
    let c = tempfile::tempdir().unwrap();
    copy_log(a, c.path());
    questlog_ok(c.path(), &["project", "--rebuild"]);
    assert!(first == files(c.path()), "a rebuild in another data dir differs");
}

#[test]
fn a_crash_before_a_rebuild_commits_keeps_the_old_tables() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    questlog_ok(d, &["generate", "--seed", "3", "--events", "3000"]);
    questlog_ok(d, &["project"]);
    let before = files(d);
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(d)
        .args(["project", "--rebuild"])
        .env("QUESTLOG_FAILPOINT", "rebuild.before_commit")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(before == files(d), "the live tables are untouched by an unfinished rebuild");
    questlog_ok(d, &["project"]);
    assert!(before == files(d), "the tables are the same after the next project");
}

/// `sql` naming a column no table has says which, suggests the closest, and lists the real
/// columns of the tables the query reads (not only the columns it loaded for the query).
#[test]
fn sql_names_the_real_columns_of_the_tables_a_query_reads() {
    let d = tempfile::tempdir().unwrap();
    questlog_ok(d.path(), &["generate", "--seed", "5", "--events", "500"]);
    questlog_ok(d.path(), &["project"]);
    let out = questlog(d.path(), &["sql", "SELECT categry, count(*) FROM transactions GROUP BY categry"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown column \"categry\"; did you mean \"category\"?"), "{stderr}");
    assert!(
        stderr.contains("columns of transactions: raw_event, timestamp,") && stderr.contains("total_cost, category, on_hand_qty"),
        "{stderr}"
    );
    assert!(!stderr.contains("valid columns"), "Polars' list of the loaded columns misleads: {stderr}");
    assert!(!stderr.contains("columns of quests"), "only the tables the query reads: {stderr}");
}

/// Files removed by compaction stay for readers of older snapshots until the retention
/// period has passed, then the projector deletes them; the plain view always shows only
/// the committed files.
#[test]
fn removed_files_are_vacuumed_after_the_retention_period() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    questlog_ok(d, &["generate", "--seed", "13", "--events", "12000"]);
    let parquet_in = |dir: &Path| -> usize {
        std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".parquet")).count()
    };
    // Twelve steps: ten level-0 files of each table merged into one.
    questlog_ok(d, &["project", "--step-events", "1000"]);
    for t in TABLE_DIRS {
        let (stored, committed) = (parquet_in(&d.join("delta").join(t)), parquet_in(&d.join("tables").join(t)));
        assert!(stored >= committed + 10, "{t}: the merged files are kept for an hour: {stored} stored, {committed} committed");
    }
    // With no retention, the next run deletes them.
    questlog_ok(d, &["generate", "--seed", "14", "--events", "10"]);
    let out = questlog_ok(d, &["--vacuum-retention-ms", "0", "project"]);
    assert!(out.contains("removed files deleted"), "{out}");
    for t in TABLE_DIRS {
        assert_eq!(parquet_in(&d.join("delta").join(t)), parquet_in(&d.join("tables").join(t)), "{t}: only committed files remain");
    }
    assert!(questlog_ok(d, &["verify"]).starts_with("ok:"));
}

/// `verify` checks the plain-directory view too (what Hive, Spark and directory globs read):
/// a file deleted from it, or replaced by other bytes, fails verify, naming the view; a
/// projector's next open makes the view again.
#[test]
fn verify_checks_the_plain_directory_view() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    questlog_ok(d, &["generate", "--seed", "8", "--events", "3000"]);
    questlog_ok(d, &["project", "--step-events", "500"]);
    assert!(questlog_ok(d, &["verify"]).starts_with("ok:"));
    let view = d.join("tables").join("enemies_killed");
    let mut names: Vec<_> = std::fs::read_dir(&view).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    // One file gone from the view.
    std::fs::remove_file(&names[0]).unwrap();
    let out = questlog(d, &["verify"]);
    assert!(!out.status.success(), "verify passed with a file missing from the plain view");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain-directory view") && err.contains("enemy_kills"), "{err}");
    // A projector's open makes the view again.
    questlog_ok(d, &["project"]);
    assert!(questlog_ok(d, &["verify"]).starts_with("ok:"));
    // One file replaced by other bytes (another file's, under its name).
    let names: Vec<_> = {
        let mut n: Vec<_> = std::fs::read_dir(&view).unwrap().map(|e| e.unwrap().path()).collect();
        n.sort();
        n
    };
    let other = std::fs::read(&names[1]).unwrap();
    std::fs::remove_file(&names[0]).unwrap();
    std::fs::write(&names[0], &other).unwrap();
    let out = questlog(d, &["verify"]);
    assert!(!out.status.success(), "verify passed with a file of the plain view replaced");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain-directory view") && err.contains("other bytes"), "{err}");
}
