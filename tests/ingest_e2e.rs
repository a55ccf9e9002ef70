//! End-to-end: the real binary on port 0, every way of sending events, SIGKILL, restart,
//! replay; validation; limits; concurrency.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{json, Value};

fn event(kind: &str, i: i64) -> Value {
    let id = format!("e2e-{kind}-{i}");
    match kind {
        "join_guild" => json!({"event_type": kind, "guild_id": i, "name": "Knights", "event_id": id}),
        "kill_enemy" => json!({"event_type": kind, "enemy_id": i, "name": "Cave Troll", "level": 12, "event_id": id}),
        "accept_quest" => json!({"event_type": kind, "quest_id": i, "name": "Lost Ring", "contact": "Ævar", "event_id": id}),
        "take_damage" => json!({"event_type": kind, "enemy_id": i, "name": "Orc", "damage": 32767, "event_id": id}),
        "buy_asset" => json!({"event_type": kind, "store_id": 1, "item_name": "Sword", "inventory_id": i, "total_cost": 12.5,
                             "category": "weapon", "on_hand_qty": 3, "event_id": id, "player_id": "p-1",
                             "event_time": "2026-01-01T00:00:00Z"}),
        _ => unreachable!(),
    }
}

const KINDS: [&str; 5] = ["join_guild", "kill_enemy", "accept_quest", "take_damage", "buy_asset"];

/// What the test expects in the log at one offset.
struct Acked {
    offset: u64,
    event_type: String,
    raw_event: String,
    user_agent: String,
}

fn ack_range(r: &Response) -> (u64, u64) {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["rejected"].as_array().unwrap().len(), 0, "{v}");
    (v["first_offset"].as_u64().unwrap(), v["last_offset"].as_u64().unwrap())
}

#[test]
fn every_way_in_survives_sigkill_and_replays_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut acked: Vec<Acked> = Vec::new();
    let mut i = 0;

    for kind in KINDS {
        // One object.
        i += 1;
        let raw = event(kind, i).to_string();
        let r = server.post("/v1/events", &[("Content-Type", "application/json"), ("User-Agent", "obj")], raw.as_bytes());
        let (a, b) = ack_range(&r);
        assert_eq!(a, b);
        acked.push(Acked { offset: a, event_type: kind.into(), raw_event: raw, user_agent: "obj".into() });

        // An array of three.
        let raws: Vec<String> = (0..3)
            .map(|_| {
                i += 1;
                event(kind, i).to_string()
            })
            .collect();
        let body = format!("[{}]", raws.join(", "));
        let r = server.post("/v1/events", &[("Content-Type", "application/json"), ("User-Agent", "arr")], body.as_bytes());
        let (a, b) = ack_range(&r);
        assert_eq!(b - a + 1, 3);
        for (k, raw) in raws.into_iter().enumerate() {
            acked.push(Acked { offset: a + k as u64, event_type: kind.into(), raw_event: raw, user_agent: "arr".into() });
        }

        // NDJSON of two, gzip-compressed.
        let raws: Vec<String> = (0..2)
            .map(|_| {
                i += 1;
                event(kind, i).to_string()
            })
            .collect();
        let body = gzip(format!("{}\n{}\n", raws[0], raws[1]).as_bytes());
        let r = server.post(
            "/v1/events",
            &[("Content-Type", "application/x-ndjson"), ("Content-Encoding", "gzip"), ("User-Agent", "ndjson-gz")],
            &body,
        );
        let (a, _) = ack_range(&r);
        for (k, raw) in raws.into_iter().enumerate() {
            acked.push(Acked { offset: a + k as u64, event_type: kind.into(), raw_event: raw, user_agent: "ndjson-gz".into() });
        }
    }

    // Seed-style routes, GET and POST with query parameters.
    let seed_routes = [
        ("GET", "/join_guild?guild_id=7&name=Knights", r#"{"event_type":"join_guild","guild_id":7,"name":"Knights"}"#),
        ("POST", "/kill_enemy?enemy_id=3&name=Orc&level=5", r#"{"event_type":"kill_enemy","enemy_id":3,"name":"Orc","level":5}"#),
        (
            "GET",
            "/accept_quest?quest_id=1&name=Lost%20Ring&contact=Mara",
            r#"{"event_type":"accept_quest","quest_id":1,"name":"Lost Ring","contact":"Mara"}"#,
        ),
        ("POST", "/take_damage?enemy_id=3&name=Orc&damage=40", r#"{"event_type":"take_damage","enemy_id":3,"name":"Orc","damage":40}"#),
        (
            "GET",
            "/buy_asset?store_id=2&item_name=Shield&inventory_id=5&total_cost=9.99&category=armor&on_hand_qty=4",
            r#"{"event_type":"buy_asset","store_id":2,"item_name":"Shield","inventory_id":5,"total_cost":9.99,"category":"armor","on_hand_qty":4}"#,
        ),
    ];
    for (method, path, raw) in seed_routes {
        let r = http(server.addr, method, path, &[("User-Agent", "ApacheBench/2.3"), ("Accept", "*/*")], b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), r#"{"accepted":1,"rejected":[],"duplicates":0}"#, "one body length for ab");
        let a: u64 = r.headers.iter().find(|(k, _)| k == "x-questlog-offset").unwrap().1.parse().unwrap();
        let kind = path[1..].split('?').next().unwrap();
        acked.push(Acked { offset: a, event_type: kind.into(), raw_event: raw.into(), user_agent: "ApacheBench/2.3".into() });
    }

    server.kill();
    // The log must hold exactly what was acknowledged, after a SIGKILL.
    let server = Server::start(dir.path());
    server.kill();

    let lines = replay_lines(dir.path());
    acked.sort_by_key(|a| a.offset);
    assert_eq!(lines.len(), acked.len(), "replay returns exactly the acknowledged events");
    for (line, a) in lines.iter().zip(&acked) {
        assert_eq!(line["log_offset"].as_u64(), Some(a.offset));
        assert_eq!(line["event_type"], a.event_type.as_str());
        assert_eq!(line["raw_event"], a.raw_event.as_str());
        assert_eq!(line["user_agent"], a.user_agent.as_str());
        assert!(line["host"].as_str().unwrap().starts_with("127.0.0.1:"), "{line}");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    for (k, a) in acked.iter().enumerate() {
        assert_eq!(a.offset, k as u64, "offsets are dense from 0");
    }
    // Typed fields come through as typed JSON.
    let buy = lines.iter().find(|l| l["event_type"] == "buy_asset" && l["user_agent"] == "obj").unwrap();
    assert_eq!(buy["total_cost"], 12.5);
    assert_eq!(buy["on_hand_qty"], 3);
    assert_eq!(buy["event_time"], "2026-01-01T00:00:00.000000Z");
    let dmg = lines.iter().find(|l| l["event_type"] == "take_damage").unwrap();
    assert_eq!(dmg["damage"], 32767);

    // Replay is byte-identical run to run, and --from k gives the suffix.
    let all = questlog_ok(dir.path(), &["replay", "--from", "0"]);
    assert_eq!(all, questlog_ok(dir.path(), &["replay", "--from", "0"]));
    let suffix = questlog_ok(dir.path(), &["replay", "--from", "7"]);
    assert!(all.ends_with(&suffix));
    assert_eq!(suffix.lines().count(), acked.len() - 7);
    let window = questlog_ok(dir.path(), &["replay", "--from", "3", "--to", "5"]);
    assert_eq!(window.lines().count(), 2);
}

#[test]
fn mixed_batch_reports_each_invalid_event_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let long = "x".repeat(2000);
    // (event, expected reason, expected field)
    let cases: Vec<(String, Option<(&str, Option<&str>)>)> = vec![
        (r#"{"event_type":"join_guild","guild_id":1,"name":"ok"}"#.into(), None),
        (r#"{"event_type":"dance","x":1}"#.into(), Some(("unknown_event_type", Some("event_type")))),
        (r#"{"guild_id":1,"name":"x"}"#.into(), Some(("missing_event_type", Some("event_type")))),
        (r#"{"event_type":"join_guild","name":"x"}"#.into(), Some(("missing_field", Some("guild_id")))),
        (r#"{"event_type":"join_guild","guild_id":"7","name":"x"}"#.into(), Some(("wrong_type", Some("guild_id")))),
        (r#"{"event_type":"kill_enemy","enemy_id":1,"name":"x","level":40000}"#.into(), Some(("out_of_range", Some("level")))),
        (r#"{"event_type":"take_damage","enemy_id":-5,"name":"x","damage":1}"#.into(), Some(("negative", Some("enemy_id")))),
        (
            r#"{"event_type":"buy_asset","store_id":1,"item_name":"a","inventory_id":1,"total_cost":-1.5,"category":"c","on_hand_qty":1}"#
                .into(),
            Some(("negative", Some("total_cost"))),
        ),
        (
            r#"{"event_type":"buy_asset","store_id":1,"item_name":"a","inventory_id":1,"total_cost":1e39,"category":"c","on_hand_qty":1}"#
                .into(),
            Some(("out_of_range", Some("total_cost"))),
        ),
        (
            r#"{"event_type":"buy_asset","store_id":1,"item_name":"a","inventory_id":1,"total_cost":1e400,"category":"c","on_hand_qty":1}"#
                .into(),
            Some(("non_finite", Some("total_cost"))),
        ),
        (format!(r#"{{"event_type":"join_guild","guild_id":1,"name":"{long}"}}"#), Some(("string_too_long", Some("name")))),
        (r#"{"event_type":"join_guild","guild_id":1,"name":"x","event_time":"not a time"}"#.into(), Some(("bad_time", Some("event_time")))),
        (r#"{"event_type":"join_guild","guild_id":1,"name":"x","log_offset":5}"#.into(), Some(("server_owned_field", Some("log_offset")))),
        (r#"{"event_type":"join_guild","guild_id":1,"guild_id":2,"name":"x"}"#.into(), Some(("duplicate_key", Some("guild_id")))),
        (r#"[1,2]"#.into(), Some(("not_an_object", None))),
        (r#"{"event_type":"accept_quest","quest_id":2,"name":"Q","contact":"Mara"}"#.into(), None),
    ];
    let body = format!("[{}]", cases.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>().join(","));
    let r = server.post("/v1/events", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["accepted"], 2);
    let rejected = v["rejected"].as_array().unwrap();
    let expected: Vec<(usize, &str, Option<&str>)> =
        cases.iter().enumerate().filter_map(|(i, (_, e))| e.map(|(reason, field)| (i, reason, field))).collect();
    assert_eq!(rejected.len(), expected.len(), "{v}");
    for (got, (index, reason, field)) in rejected.iter().zip(&expected) {
        assert_eq!(got["index"], *index as u64, "{got}");
        assert_eq!(got["reason"], *reason, "{got}");
        if let Some(field) = field {
            assert_eq!(got["field"], *field, "{got}");
            assert!(got["error"].as_str().unwrap().contains(&format!("`{field}`")), "reason names the field: {got}");
        }
    }
    // NDJSON with a malformed line: the line is rejected, the rest accepted.
    let r = server.post(
        "/v1/events",
        &[("Content-Type", "application/x-ndjson")],
        b"{\"event_type\":\"join_guild\",\"guild_id\":3,\"name\":\"n\"}\n{not json\n",
    );
    let v = r.json();
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["rejected"][0]["reason"], "malformed_json");
    // A seed-style request with a bad value is a 400 and is kept too.
    let r = server.get("/kill_enemy?enemy_id=1&name=Orc&level=abc");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["rejected"][0]["field"], "level");

    // Still healthy, and metrics count rejections by reason.
    assert_eq!(server.get("/healthz").status, 200);
    let m = server.get("/metrics").text();
    assert!(m.contains(r#"questlog_events_rejected_total{event_type="kill_enemy",reason="out_of_range"} 1"#), "{m}");
    assert!(m.contains(r#"questlog_events_accepted_total{event_type="join_guild"} 2"#), "{m}");

    // Every rejected event is listed, with its reason and raw text, by the server…
    let listed = server.get("/v1/rejected?limit=1000").text();
    let listed: Vec<Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), expected.len() + 2);
    assert_eq!(listed[0]["raw"], cases[1].0.as_str());
    server.stop();
    // …and by the CLI once it is stopped.
    let cli: Vec<Value> =
        questlog_ok(dir.path(), &["rejected", "--limit", "1000"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(cli, listed);
    let reasons: BTreeMap<String, usize> = cli.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l["reason"].as_str().unwrap().to_string()).or_default() += 1;
        m
    });
    assert_eq!(reasons["negative"], 2);
    assert_eq!(replay_lines(dir.path()).len(), 3, "only valid events reach the log");
}

#[test]
fn limits_and_unreadable_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // Too many events in one request.
    let one = r#"{"event_type":"join_guild","guild_id":1,"name":"x"}"#;
    let body = format!("[{}]", vec![one; 10_001].join(","));
    let r = server.post("/v1/events", &[], body.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("10000"));
    // One event over the event size limit.
    let big = format!(r#"{{"event_type":"join_guild","guild_id":1,"name":"x","pad":"{}"}}"#, "y".repeat(70_000));
    assert_eq!(server.post("/v1/events", &[], big.as_bytes()).status, 413);
    // A gzip bomb: 80 MiB of zeros compresses to ~80 KiB.
    let bomb = gzip(&vec![b' '; 80 * 1024 * 1024]);
    let r = server.post("/v1/events", &[("Content-Encoding", "gzip")], &bomb);
    assert_eq!(r.status, 413, "{}", r.text());
    // Unreadable bodies: 400, nothing accepted.
    for body in [&b"{\"event_type\": "[..], &b"[1, 2"[..], &[0xff, 0xfe, 0x00][..]] {
        let r = server.post("/v1/events", &[], body);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["accepted"], 0);
    }
    assert_eq!(server.post("/v1/events", &[("Content-Encoding", "br")], b"{}").status, 415);
    assert_eq!(server.get("/no_such_type?x=1").status, 404);
    let spec = server.get("/openapi.json");
    assert_eq!(spec.status, 200);
    assert!(spec.json()["paths"]["/v1/events"]["post"].is_object(), "the OpenAPI description lists the routes");
    for (path, method) in [
        ("/v1/batch", "post"),
        ("/v1/track", "post"),
        ("/batch/", "post"),
        ("/i/v1/analytics/events", "post"),
        ("/com.snowplowanalytics.snowplow/tp2", "post"),
        ("/i", "get"),
    ] {
        assert!(spec.json()["paths"][path][method].is_object(), "the SDK route {method} {path} is described");
    }
    let m = server.get("/metrics").text();
    assert!(m.contains(r#"questlog_requests_over_limit_total{limit="events_per_request"} 1"#), "{m}");
    server.stop();
    assert_eq!(replay_lines(dir.path()).len(), 0);
}

#[test]
fn concurrent_clients_get_dense_offsets_exactly_once() {
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 25;
    const PER_REQUEST: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let addr = server.addr;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for r in 0..REQUESTS {
                    let ids: Vec<String> = (0..PER_REQUEST).map(|k| format!("c{c}-r{r}-k{k}")).collect();
                    let body = format!(
                        "[{}]",
                        ids.iter()
                            .map(|id| format!(r#"{{"event_type":"kill_enemy","enemy_id":{c},"name":"Orc","level":3,"event_id":"{id}"}}"#))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    let resp = http(addr, "POST", "/v1/events", &[], body.as_bytes()).unwrap();
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    let first = resp.json()["first_offset"].as_u64().unwrap();
                    for (k, id) in ids.into_iter().enumerate() {
                        acked.push((first + k as u64, id));
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<(u64, String)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    acked.sort();
    server.stop();
    let lines = replay_lines(dir.path());
    assert_eq!(lines.len(), CLIENTS * REQUESTS * PER_REQUEST);
    for (k, (line, (offset, id))) in lines.iter().zip(&acked).enumerate() {
        assert_eq!(*offset, k as u64, "dense offsets");
        assert_eq!(line["log_offset"], *offset);
        assert_eq!(line["event_id"], id.as_str(), "each acknowledged event exactly once, where it was acknowledged");
    }
}

#[test]
fn replay_follow_streams_new_events_from_a_running_server() {
    use std::io::BufRead;
    use std::sync::mpsc;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let r = server.post("/v1/events", &[], event("join_guild", 1).to_string().as_bytes());
    assert_eq!(r.status, 200);
    let mut follower = std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["replay", "--from", "0", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let wait = std::time::Duration::from_secs(20);
    let first: Value = serde_json::from_str(&rx.recv_timeout(wait).expect("the existing event")).unwrap();
    assert_eq!(first["log_offset"], 0);
    // Events appended after the follower started arrive too, in order.
    for i in 2..=4 {
        let r = server.post("/v1/events", &[], event("kill_enemy", i).to_string().as_bytes());
        assert_eq!(r.status, 200);
    }
    for offset in 1..=3 {
        let line: Value = serde_json::from_str(&rx.recv_timeout(wait).expect("a followed event")).unwrap();
        assert_eq!(line["log_offset"], offset);
        assert_eq!(line["event_type"], "kill_enemy");
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    // `follow` takes 1/0 and yes/no as well as true/false (1 was once a 400).
    for flag in ["1", "true", "yes"] {
        let r = server.get(&format!("/v1/replay?from=0&to=2&follow={flag}"));
        assert_eq!(r.status, 200, "follow={flag}: {}", r.text());
        assert_eq!(r.text().lines().count(), 2, "follow={flag}");
    }
    assert_eq!(server.get("/v1/replay?from=0&follow=maybe").status, 400);
    server.stop();
}

/// `replay` and `rejected` through a running server write the same bytes as from the data
/// dir once it is free, with text whose characters are mostly 4 bytes long: over ~1.5 MB
/// of it, the chunks a client reads end inside characters many times over (a chunk cut
/// in a character was once dropped whole, silently).
#[test]
fn replay_and_rejected_through_a_server_are_byte_identical_with_multibyte_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let names = ["🐉龍ドラゴン🔥", "Ωmega 🛡️ Σ", "ñandú 🦤 ŁÓDŹ", "𝔊𝔲𝔦𝔩𝔡 𝔬𝔣 𝔐𝔦𝔫𝔡𝔰"];
    for batch in 0..10 {
        let events: Vec<Value> = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                let name = names[n % names.len()].repeat(1 + n % 7);
                json!({"event_type": "join_guild", "event_id": format!("mb-{n}"), "guild_id": n, "name": name})
            })
            .collect();
        let r = server.post("/v1/events", &[], Value::Array(events).to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        // Refused events keep their raw text, multi-byte included.
        let bad: Vec<Value> = (0..50)
            .map(|i| json!({"event_type": "join_guild", "guild_id": -1 - i, "name": names[i as usize % names.len()].repeat(20)}))
            .collect();
        assert_eq!(server.post("/v1/events", &[], Value::Array(bad).to_string().as_bytes()).status, 200);
    }
    let through_server = questlog_ok(dir.path(), &["replay", "--from", "0"]);
    let rejected_through_server = questlog_ok(dir.path(), &["rejected", "--limit", "10000"]);
    server.stop();
    let from_dir = questlog_ok(dir.path(), &["replay", "--from", "0"]);
    let rejected_from_dir = questlog_ok(dir.path(), &["rejected", "--limit", "10000"]);
    assert_eq!(from_dir.lines().count(), 5_000);
    assert_eq!(rejected_from_dir.lines().count(), 500);
    assert!(from_dir.len() > 1_000_000, "{} bytes is too little to cut chunks in characters", from_dir.len());
    assert!(through_server == from_dir, "replay through the server differs ({} vs {} bytes)", through_server.len(), from_dir.len());
    assert!(rejected_through_server == rejected_from_dir, "rejected through the server differs");
}

/// A group commit whose data reached the disk but whose appends were answered with an
/// error (here: a failpoint right after the fsync) is taken back when the log reopens its
/// storage: the log, its readers and the tables hold exactly what was acknowledged, and
/// the client's retry of the refused event is accepted (not dropped as a duplicate).
#[test]
fn a_failed_group_that_reached_the_disk_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    // The fourth group commit fails after its fsync.
    let server = Server::start_with_failpoints(dir.path(), &["--project-interval-ms", "20"], "log.after_sync=3*off->1*return");
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for i in 0..8 {
        let e = event("join_guild", i);
        let r = server.post("/v1/events", &[], e.to_string().as_bytes());
        match r.status {
            200 => acknowledged.push(e["event_id"].as_str().unwrap().to_string()),
            503 => refused.push(e),
            other => panic!("event {i}: {other} {}", r.text()),
        }
    }
    assert_eq!(refused.len(), 1, "exactly the fourth append failed");
    assert_eq!(acknowledged.len(), 7);
    let h = server.get("/healthz").json();
    assert_eq!(h["log_end_offset"], 7, "the failed group is not in the log: {h}");
    // The retry of the refused event is new to the log.
    let r = server.post("/v1/events", &[], refused[0].to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 1, "the retry was taken for a duplicate of an event the log took back: {}", r.text());
    acknowledged.push(refused[0]["event_id"].as_str().unwrap().to_string());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.get("/healthz").json()["projected_offset"] != 8 {
        assert!(std::time::Instant::now() < deadline, "projection did not catch up");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("questlog_log_reopens_total 1"), "{metrics}");
    server.stop();
    let ids: Vec<String> = replay_lines(dir.path()).iter().map(|l| l["event_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, acknowledged, "the log holds exactly the acknowledged events, in order");
    let verified = questlog_ok(dir.path(), &["verify"]);
    assert!(verified.contains("tables at offset 8"), "{verified}");
}
