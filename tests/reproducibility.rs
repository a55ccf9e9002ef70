//! Reproducibility as a product: golden scenarios, digests that catch a changed byte,
//! replay to another server (twice, exactly once there), verify, time travel.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn shipped_scenarios_match_their_digests() {
    let dir = tempfile::tempdir().unwrap();
    let smoke = repo("replay/smoke.toml");
    let edge = repo("replay/edge.toml");
    let out = questlog_ok(dir.path(), &["check", smoke.to_str().unwrap(), edge.to_str().unwrap()]);
    assert_eq!(out.matches("8 of 8 digests match").count(), 2, "{out}");
    assert_eq!(out.matches("incremental = rebuild  match").count(), 2, "{out}");
}

/// Registered types (replay/custom.toml): two types beside the seed's, an ADDITION
/// mid-log, a new MODEL, a crash after a commit. A `rows.<table>` digest per registered
/// table; the projection in steps across the ADDITION equals a rebuild.
#[test]
fn the_registered_types_scenario_matches_its_digests() {
    let dir = tempfile::tempdir().unwrap();
    let out = questlog_ok(dir.path(), &["check", repo("replay/custom.toml").to_str().unwrap()]);
    assert!(out.contains("11 of 11 digests match") && out.contains("incremental = rebuild  match"), "{out}");
    for table in ["rows.level_up", "rows.match_end ", "rows.match_end_2"] {
        assert!(out.contains(table), "{table}: {out}");
    }
}

#[test]
fn the_catalogue_scenario_matches_and_another_catalogue_changes_every_digest_it_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = questlog_ok(d, &["check", repo("replay/catalog.toml").to_str().unwrap()]);
    assert!(out.contains("8 of 8 digests match") && out.contains("incremental = rebuild  match"), "{out}");

    // The same scenario with one list price changed by the sqlite3-free way a studio
    // would: an UPDATE on a copy of the file.
    let scenarios = d.join("replay");
    let fixtures = d.join("fixtures");
    std::fs::create_dir_all(&scenarios).unwrap();
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::copy(repo("replay/catalog.toml"), scenarios.join("catalog.toml")).unwrap();
    std::fs::copy(repo("replay/catalog.segments"), scenarios.join("catalog.segments")).unwrap();
    std::fs::copy(repo("fixtures/catalog-extra.ndjson"), fixtures.join("catalog-extra.ndjson")).unwrap();
    let copy = fixtures.join("catalog-example.sqlite");
    std::fs::copy(repo("fixtures/catalog-example.sqlite"), &copy).unwrap();
    rusqlite::Connection::open(&copy).unwrap().execute("update items set unit_price_cents = 2600 where inventory_id = 1001", []).unwrap();
    let out = questlog(d, &["check", scenarios.join("catalog.toml").to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for digest in ["log", "rows.transactions", "parquet", "report"] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(&format!("{digest} "))).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains("MISMATCH"), "{digest} did not change: {stdout}");
    }
    // The log's first difference is the catalogue line, before any event.
    assert!(stdout.contains("first difference at line 1,"), "{stdout}");
}

#[test]
fn one_changed_byte_of_a_digest_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("replay/smoke.toml")).unwrap();
    let line = text.lines().find(|l| l.starts_with("\"rows.quests\"")).unwrap();
    let hex_start = line.find("sha256:").unwrap() + 7;
    let mut changed = line.to_string();
    let c = changed.as_bytes()[hex_start];
    changed.replace_range(hex_start..hex_start + 1, if c == b'0' { "1" } else { "0" });
    let scenario = dir.path().join("smoke.toml");
    std::fs::write(&scenario, text.replace(line, &changed)).unwrap();
    std::fs::copy(repo("replay/smoke.segments"), dir.path().join("smoke.segments")).unwrap();
    let out = questlog(dir.path(), &["check", scenario.to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mismatches: Vec<&str> = stdout.lines().filter(|l| l.contains("MISMATCH")).collect();
    assert_eq!(mismatches.len(), 1, "{stdout}");
    assert!(mismatches[0].trim_start().starts_with("rows.quests"), "{stdout}");
    assert!(stdout.contains("7 of 8 digests match"), "{stdout}");
    assert!(stderr.contains("1 scenario(s) failed"), "{stderr}");
}

#[test]
fn a_changed_event_is_located_by_line() {
    // The edge scenario with one of its literal events changed: the log digest fails and
    // the sidecar points at the lines where the log first differs.
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("replay");
    std::fs::create_dir_all(&scenarios).unwrap();
    std::fs::create_dir_all(dir.path().join("fixtures")).unwrap();
    std::fs::copy(repo("replay/edge.toml"), scenarios.join("edge.toml")).unwrap();
    std::fs::copy(repo("replay/edge.segments"), scenarios.join("edge.segments")).unwrap();
    let events = std::fs::read_to_string(repo("fixtures/edge-events.ndjson")).unwrap();
    std::fs::write(dir.path().join("fixtures/edge-events.ndjson"), events.replace("\"Penny\"", "\"Nickel\"")).unwrap();
    let out = questlog(dir.path(), &["check", scenarios.join("edge.toml").to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log_line = stdout.lines().position(|l| l.trim_start().starts_with("log ")).unwrap();
    assert!(stdout.lines().nth(log_line).unwrap().contains("MISMATCH"), "{stdout}");
    let located = stdout.lines().find(|l| l.contains("first difference at line")).expect("a located difference");
    // The changed event is the last line of the log (3,000 generated + 11 literal).
    assert!(located.contains("at line 3011,") && located.contains("Nickel"), "{located}");
}

#[test]
fn replaying_to_a_second_server_twice_lands_each_event_once() {
    let a = tempfile::tempdir().unwrap();
    questlog_ok(a.path(), &["generate", "--seed", "21", "--events", "3500"]);
    let b = tempfile::tempdir().unwrap();
    let server = Server::start(b.path());
    let url = format!("http://{}", server.addr);
    let first = questlog_ok(a.path(), &["replay", "--from", "0", "--url", &url]);
    assert!(first.contains("3500 accepted, 0 already there"), "{first}");
    let second = questlog_ok(a.path(), &["replay", "--from", "0", "--url", &url, "--rate", "100000"]);
    assert!(second.contains("0 accepted, 3500 already there"), "{second}");
    // A partial replay from the middle adds nothing either.
    let third = questlog_ok(a.path(), &["replay", "--from", "1700", "--to", "2100", "--url", &url]);
    assert!(third.contains("replayed 400 events") && third.contains("0 accepted"), "{third}");
    server.stop();
    let ids = |d: &Path| -> Vec<String> { replay_lines(d).iter().map(|l| l["event_id"].as_str().unwrap().to_string()).collect() };
    let source = ids(a.path());
    let target = ids(b.path());
    assert_eq!(target.len(), 3500, "exactly one copy of each event");
    assert_eq!(source, target, "same events, same order");
    // The dedup window survives a restart of the receiver.
    let server = Server::start(b.path());
    let again = questlog_ok(a.path(), &["replay", "--url", &format!("http://{}", server.addr)]);
    assert!(again.contains("0 accepted, 3500 already there"), "{again}");
    server.stop();
}

#[test]
fn verify_passes_when_healthy_and_names_each_kind_of_damage() {
    let healthy = tempfile::tempdir().unwrap();
    let h = healthy.path();
    questlog_ok(h, &["generate", "--seed", "4", "--events", "20000"]);
    questlog_ok(h, &["project", "--step-events", "6000"]);
    let ok = questlog_ok(h, &["verify"]);
    assert!(ok.starts_with("ok: log holds 20000 records"), "{ok}");

    let damaged = |name: &str, damage: &dyn Fn(&Path), expect: &str| {
        let d = tempfile::tempdir().unwrap();
        let copy = d.path().join("data");
        copy_dir(h, &copy);
        damage(&copy);
        let out = questlog(&copy, &["verify"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "verify passed after {name}");
        assert!(stderr.contains(expect), "after {name}: {stderr}");
    };
    damaged(
        "deleting a table file",
        &|d| std::fs::remove_file(table_file(d, "enemies_killed")).unwrap(),
        "is in the Delta log but missing",
    );
    damaged(
        "editing a Parquet file",
        &|d| {
            let f = table_file(d, "transactions");
            let mut bytes = std::fs::read(&f).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&f, bytes).unwrap();
        },
        "table transactions",
    );
    damaged(
        "truncating the log",
        &|d| {
            // Half of what was written: sled may have grown the file to a whole segment
            // of zeros, and cutting those off damages nothing.
            let db = d.join("log/db");
            let bytes = std::fs::read(&db).unwrap();
            let written = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
            f.set_len(written as u64 / 2).unwrap();
        },
        // sled's recovery finds its snapshot ahead of the cut file and refuses to open.
        "cannot open the log at",
    );
    damaged(
        "truncating a table file",
        &|d| {
            let f = table_file(d, "guild_joins");
            let len = std::fs::metadata(&f).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len - 10).unwrap();
        },
        "the Delta log recorded",
    );
}

#[test]
fn time_travel_builds_tables_and_reports_as_of_an_offset() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    questlog_ok(d, &["generate", "--seed", "9", "--events", "5000"]);
    questlog_ok(d, &["project"]);
    let out = d.join("as-of-1234");
    let printed = questlog_ok(d, &["project", "--rebuild", "--to", "1234", "--out", out.to_str().unwrap()]);
    assert!(printed.contains("tables as of offset 1234"), "{printed}");
    // Delta tables as of 1234, read through `--tables`.
    for dir in TABLE_DIRS {
        assert_eq!(delta_table_offset(&out.join(dir)), 1234, "{dir}");
    }
    let counted: u64 = ["guild_joins", "enemy_kills", "quests", "take_damage", "transactions"]
        .iter()
        .map(|t| {
            let csv =
                questlog_ok(d, &["--tables", out.to_str().unwrap(), "sql", &format!("select count(*) as n from {t}"), "--format", "csv"]);
            csv.lines().last().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(counted, 1234);
    // The live tables are untouched.
    assert_eq!(tables_offset(d), 5000);
    // The report as of 1234 equals the report of a log that stopped there.
    let r = d.join("r");
    questlog_ok(d, &["report", "--to", "1234", "--out", r.to_str().unwrap()]);
    let other = tempfile::tempdir().unwrap();
    questlog_ok(other.path(), &["generate", "--seed", "9", "--events", "1234"]);
    questlog_ok(other.path(), &["project"]);
    let r2 = other.path().join("r");
    questlog_ok(other.path(), &["report", "--out", r2.to_str().unwrap()]);
    assert!(std::fs::read(r.join("report.md")).unwrap() == std::fs::read(r2.join("report.md")).unwrap());
    assert!(!questlog(d, &["project", "--rebuild", "--to", "99999", "--out", d.join("x").to_str().unwrap()]).status.success());
}

#[test]
fn a_damaged_table_file_is_named_at_start_up_and_a_rebuild_repairs_it() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    questlog_ok(d, &["generate", "--seed", "12", "--events", "4000"]);
    questlog_ok(d, &["project"]);
    let file = table_file(d, "quest_accept");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 100).unwrap();
    for args in [&["project"][..], &["serve", "--listen", "127.0.0.1:0"][..]] {
        let out = questlog(d, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started on a damaged table");
        assert!(stderr.contains("is damaged") && stderr.contains(file.file_name().unwrap().to_str().unwrap()), "{args:?}: {stderr}");
    }
    // The log is the truth: a rebuild replaces the damaged generation.
    assert!(questlog_ok(d, &["project", "--rebuild"]).contains("projected 4000 events"));
    assert!(questlog_ok(d, &["verify"]).starts_with("ok:"));
}

/// A block whose bytes changed on disk (sled's own checks pass; questlog's CRC does not)
/// is reported with its offset by `replay`, by `verify` and through a running server —
/// never served as data, and never a silent exit 0.
#[test]
fn a_corrupt_log_block_is_reported_never_served() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    questlog_ok(d, &["generate", "--seed", "31", "--events", "5000"]);
    let clean = questlog_ok(d, &["replay"]);
    // Flip one payload byte of the block that starts at offset 2000 (blocks hold 1,000
    // records), through sled, as a bad sector or a stray write would.
    {
        let db = sled::Config::new().path(d.join("log")).segment_size(8 * 1024 * 1024).open().unwrap();
        let blocks = db.open_tree("blocks").unwrap();
        let key = 2000u64.to_be_bytes();
        let mut block = blocks.get(key).unwrap().expect("a block at offset 2000").to_vec();
        let last = block.len() - 1;
        block[last] ^= 0x5a;
        blocks.insert(key, block).unwrap();
        db.flush().unwrap();
    }
    let out = questlog(d, &["replay"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "replay exited 0 over a corrupt block");
    assert!(stderr.contains("corrupt log block at offset 2000: checksum mismatch"), "{stderr}");
    let served = String::from_utf8_lossy(&out.stdout);
    assert!(clean.starts_with(served.as_ref()), "what replay wrote before the error is the log's prefix");
    assert!(served.lines().count() <= 2000, "no record of the corrupt block was served");

    let out = questlog(d, &["verify"]);
    assert!(!out.status.success(), "verify passed over a corrupt block");
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt log block at offset 2000"), "{}", String::from_utf8_lossy(&out.stderr));

    // Through a running server: it says it cannot take appends (the block is in the tail
    // its dedup window is read from), the stream breaks off and the client says so.
    let server = Server::start_with_status(d, "degraded");
    let health = server.get("/healthz");
    assert_eq!(health.status, 503);
    assert!(health.text().contains("corrupt log block at offset 2000"), "{}", health.text());
    let out = questlog(d, &["replay"]);
    assert!(!out.status.success(), "replay through the server exited 0 over a corrupt block");
    assert!(clean.starts_with(String::from_utf8_lossy(&out.stdout).as_ref()));
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() <= 2000);
    server.stop();
}
