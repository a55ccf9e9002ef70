//! `serve` projects continuously: while events pour in, `sql` always reads a consistent
//! set of files — exactly a prefix of the log — and once the load settles the tables hold
//! exactly the log's events.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// Per table: its event type, rows, lowest and highest `log_offset`, and rows whose id is
/// not their log offset (every event carries its index as its id, and one sequential
/// loader makes the index its offset).
const PREFIX_SQL: &str = "\
    SELECT 'join_guild' AS t, count(*) AS n, min(log_offset) AS lo, max(log_offset) AS hi, sum(CASE WHEN guild_id = log_offset THEN 0 ELSE 1 END) AS bad FROM guild_joins \
    UNION ALL SELECT 'kill_enemy' AS t, count(*) AS n, min(log_offset) AS lo, max(log_offset) AS hi, sum(CASE WHEN enemy_id = log_offset THEN 0 ELSE 1 END) AS bad FROM enemy_kills \
    UNION ALL SELECT 'accept_quest' AS t, count(*) AS n, min(log_offset) AS lo, max(log_offset) AS hi, sum(CASE WHEN quest_id = log_offset THEN 0 ELSE 1 END) AS bad FROM quests \
    UNION ALL SELECT 'take_damage' AS t, count(*) AS n, min(log_offset) AS lo, max(log_offset) AS hi, sum(CASE WHEN enemy_id = log_offset THEN 0 ELSE 1 END) AS bad FROM take_damage \
    UNION ALL SELECT 'buy_asset' AS t, count(*) AS n, min(log_offset) AS lo, max(log_offset) AS hi, sum(CASE WHEN inventory_id = log_offset THEN 0 ELSE 1 END) AS bad FROM transactions";

/// The event types in the order `event(i)` cycles through them.
const TYPES: [&str; 5] = ["join_guild", "kill_enemy", "accept_quest", "take_damage", "buy_asset"];

/// Reads the tables once (one snapshot) and checks they hold exactly the log's first N
/// events, N = their total: table k holds the events k, k+5, k+10, … below N, each once,
/// at its own offset. Returns N.
fn prefix(data_dir: &std::path::Path) -> u64 {
    let csv = questlog_ok(data_dir, &["sql", PREFIX_SQL, "--format", "csv"]);
    let rows: BTreeMap<String, Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<String> = l.split(',').map(str::to_string).collect();
            (cols[0].clone(), cols[1..].to_vec())
        })
        .collect();
    let num = |s: &str| -> u64 {
        if s.is_empty() {
            0
        } else {
            s.parse().unwrap()
        }
    };
    let total: u64 = rows.values().map(|r| num(&r[0])).sum();
    for (k, t) in TYPES.iter().enumerate() {
        let r = &rows[*t];
        let (n, lo, hi, bad) = (num(&r[0]), num(&r[1]), num(&r[2]), num(&r[3]));
        let k = k as u64;
        let expected = if total > k { (total - 1 - k) / 5 + 1 } else { 0 };
        assert_eq!(n, expected, "{t}: {n} rows in a snapshot of {total} events, expected {expected} (tables: {csv})");
        assert_eq!(bad, 0, "{t}: rows at another offset than their event's ({csv})");
        if n > 0 {
            // n distinct offsets ≡ k (mod 5) from k to hi, and hi the last below the total:
            // every one of them, no gap.
            assert_eq!((lo, hi), (k, k + 5 * (n - 1)), "{t}: offsets {lo}..={hi} for {n} rows ({csv})");
        }
    }
    total
}

fn event(i: usize) -> String {
    match i % 5 {
        0 => format!(r#"{{"event_type":"join_guild","guild_id":{i},"name":"G"}}"#),
        1 => format!(r#"{{"event_type":"kill_enemy","enemy_id":{i},"name":"Orc","level":3}}"#),
        2 => format!(r#"{{"event_type":"accept_quest","quest_id":{i},"name":"Q","contact":"Mara"}}"#),
        3 => format!(r#"{{"event_type":"take_damage","enemy_id":{i},"name":"Orc","damage":9}}"#),
        _ => format!(
            r#"{{"event_type":"buy_asset","store_id":1,"item_name":"Sword","inventory_id":{i},"total_cost":3.5,"category":"weapon","on_hand_qty":2}}"#
        ),
    }
}

#[test]
fn sql_during_load_is_consistent_and_settles_to_the_log() {
    const REQUESTS: usize = 200;
    const PER_REQUEST: usize = 137;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--project-interval-ms", "20"]);
    let addr = server.addr;
    let loader = std::thread::spawn(move || {
        let mut sent = 0;
        for r in 0..REQUESTS {
            let body = format!("[{}]", (0..PER_REQUEST).map(|k| event(r * PER_REQUEST + k)).collect::<Vec<_>>().join(","));
            let resp = http(addr, "POST", "/v1/events", &[], body.as_bytes()).unwrap();
            assert_eq!(resp.status, 200, "{}", resp.text());
            assert_eq!(resp.json()["accepted"], PER_REQUEST as u64);
            sent += PER_REQUEST;
        }
        sent
    });

    // Read while the server writes: every read succeeds, each sees exactly a prefix of
    // the log (one projection step's state), and the prefix never shrinks.
    let mut reads = 0;
    let mut last_total = 0;
    while !loader.is_finished() && reads < 40 {
        let total = prefix(dir.path());
        assert!(total >= last_total, "tables went back from {last_total} to {total} events");
        assert!(total <= (REQUESTS * PER_REQUEST) as u64);
        last_total = total;
        reads += 1;
    }
    let sent = loader.join().unwrap();
    assert!(reads > 0);

    // Settle: the projection catches up within a bounded time.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = server.get("/healthz").json();
        if h["projected_offset"] == h["log_end_offset"] && h["log_end_offset"] == sent as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "projection did not catch up: {h}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(prefix(dir.path()), sent as u64, "the settled tables hold the whole log");
    server.stop();
}

fn wait_for(server: &Server, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = server.get("/healthz").json();
        if ok(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "{what}: {h}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn batch(from: usize, n: usize) -> Vec<u8> {
    format!("[{}]", (from..from + n).map(event).collect::<Vec<_>>().join(",")).into_bytes()
}

/// A projector that panics is caught, counted, reported on /healthz and /metrics, and
/// restarted from the published tables; the server keeps taking events and stops cleanly,
/// and a healthy projector later catches up with everything.
#[test]
fn a_projector_panic_is_reported_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_failpoints(dir.path(), &["--project-interval-ms", "20"], "project.step=panic");
    assert_eq!(server.post("/v1/events", &[], &batch(0, 50)).status, 200);
    let h = wait_for(&server, "the panic is reported", |h| h["projection_error"].as_str().is_some_and(|e| e.contains("panicked")));
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["projected_offset"], 0);
    // Appends still work, and the panics go on being caught (the projector restarts).
    assert_eq!(server.post("/v1/events", &[], &batch(50, 50)).status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = server.get("/metrics").text();
        let panics: u64 = m.lines().find_map(|l| l.strip_prefix("questlog_projection_panics_total ")).unwrap().parse().unwrap();
        if panics >= 2 {
            assert!(m.contains("questlog_projection_failing 1"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "the projector was not restarted: {panics} panics");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.stop();
    // Without the fault, the tables catch up with every event.
    let server = Server::start_with(dir.path(), &["--project-interval-ms", "20"]);
    let h = wait_for(&server, "projection catches up", |h| h["projected_offset"] == 100);
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h.get("projection_error").is_none(), "{h}");
    server.stop();
    assert_eq!(prefix(dir.path()), 100);
}

/// A compaction that fails after its step was published: `projected_offset` still moves
/// to what the published tables hold, and the failure is reported.
#[test]
fn a_failed_compaction_after_a_published_step_is_reported_and_the_offset_is_current() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::start_with_failpoints(dir.path(), &["--project-interval-ms", "10"], "compact.publish=return(injected compaction failure)");
    // Ten steps of ten events (two of each type): the tenth makes ten files per table,
    // so compaction runs, and fails.
    for b in 0..10 {
        assert_eq!(server.post("/v1/events", &[], &batch(b * 10, 10)).status, 200);
        let end = (b * 10 + 10) as u64;
        wait_for(&server, "the step is published", |h| h["projected_offset"] == end);
    }
    let h = wait_for(&server, "the compaction failure is reported", |h| h["projection_error"].is_string());
    assert!(h["projection_error"].as_str().unwrap().contains("injected compaction failure"), "{h}");
    assert_eq!(h["projected_offset"], 100, "{h}");
    assert_eq!(h["status"], "degraded");
    server.stop();
    assert_eq!(prefix(dir.path()), 100);
}

#[test]
fn an_interval_too_long_to_keep_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = questlog(dir.path(), &["serve", "--listen", "127.0.0.1:0", "--project-interval-ms", "18446744073709551615"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--project-interval-ms must be between 1 and 86400000"), "{stderr}");
}

/// Every thread of the server that projects (the projector, its decoders and writers, the
/// Delta runtime's workers and blocking pool) runs below the API's priority, and the API's
/// own threads do not: under one-event requests the Delta runtime's blocking pool, started
/// at the API's priority, took a quarter of the server's CPU (benches/HISTORY.md, item 32).
#[test]
#[cfg(target_os = "linux")]
fn background_threads_run_below_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--project-interval-ms", "20"]);
    for round in 0..5 {
        assert_eq!(server.post("/v1/events", &[], &batch(round * 200, 200)).status, 200);
    }
    wait_for(&server, "projection catches up", |h| h["projected_offset"] == 1000);
    let mut by_name: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", server.child.id())).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Ok(stat)) = (std::fs::read_to_string(task.join("comm")), std::fs::read_to_string(task.join("stat"))) else {
            continue; // a thread that ended meanwhile
        };
        // Fields after the command's closing parenthesis: state is the 3rd field, nice the 19th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i64 = rest.split(' ').nth(16).unwrap().parse().unwrap();
        by_name.entry(name.trim().to_string()).or_default().push(nice);
    }
    server.stop();
    // Thread names are cut to 15 bytes in /proc.
    let nices = |prefix: &str| -> Vec<i64> { by_name.iter().filter(|(n, _)| n.starts_with(prefix)).flat_map(|(_, v)| v.clone()).collect() };
    for (background, prefix) in
        [(true, "questlog-delta"), (true, "questlog-projec"), (false, "tokio-rt-worker"), (false, "questlog-log-wr")]
    {
        let found = nices(prefix);
        assert!(!found.is_empty(), "no {prefix} threads: {by_name:?}");
        if background {
            assert!(found.iter().all(|&n| n >= 10), "{prefix} threads at the API's priority: {by_name:?}");
        } else {
            assert!(found.iter().all(|&n| n == 0), "{prefix} threads below the API's priority: {by_name:?}");
        }
    }
}
