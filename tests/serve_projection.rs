//! `serve` projects continuously: while events pour in, `sql` always reads a consistent
//! set of files, and once the load settles the tables hold exactly the log's events.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

const COUNTS_SQL: &str = "SELECT 'join_guild' AS t, count(*) AS n FROM guild_joins \
    UNION ALL SELECT 'kill_enemy' AS t, count(*) AS n FROM enemy_kills \
    UNION ALL SELECT 'accept_quest' AS t, count(*) AS n FROM quests \
    UNION ALL SELECT 'take_damage' AS t, count(*) AS n FROM take_damage \
    UNION ALL SELECT 'buy_asset' AS t, count(*) AS n FROM transactions";

fn counts(data_dir: &std::path::Path) -> BTreeMap<String, u64> {
    let csv = questlog_ok(data_dir, &["sql", COUNTS_SQL, "--format", "csv"]);
    csv.lines().skip(1).map(|l| {
        let (t, n) = l.split_once(',').unwrap();
        (t.to_string(), n.parse().unwrap())
    }).collect()
}

fn event(i: usize) -> String {
    match i % 5 {
        0 => format!(r#"{{"event_type":"join_guild","guild_id":{i},"name":"G"}}"#),
        1 => format!(r#"{{"event_type":"kill_enemy","enemy_id":{i},"name":"Orc","level":3}}"#),
        2 => format!(r#"{{"event_type":"accept_quest","quest_id":{i},"name":"Q","contact":"Mara"}}"#),
        3 => format!(r#"{{"event_type":"take_damage","enemy_id":{i},"name":"Orc","damage":9}}"#),
        _ => format!(r#"{{"event_type":"buy_asset","store_id":1,"item_name":"Sword","inventory_id":{i},"total_cost":3.5,"category":"weapon","on_hand_qty":2}}"#),
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

    // Read while the server writes: every read succeeds, and totals never go back.
    let mut reads = 0;
    let mut last_total = 0;
    while !loader.is_finished() && reads < 40 {
        let c = counts(dir.path());
        let total: u64 = c.values().sum();
        assert!(total >= last_total, "tables went back from {last_total} to {total} events");
        assert!(total <= (REQUESTS * PER_REQUEST) as u64);
        // One snapshot is one projection step's state: the types stay in step with each
        // other (events were sent round-robin over the five types).
        let (min, max) = (c.values().min().unwrap(), c.values().max().unwrap());
        assert!(max - min <= 1, "a snapshot mixes steps: {c:?}");
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
    let c = counts(dir.path());
    for t in ["join_guild", "kill_enemy", "accept_quest", "take_damage", "buy_asset"] {
        assert_eq!(c[t], (sent / 5) as u64, "{t}");
    }
    server.stop();
}
