//! Hostile clients: headers or bodies trickled slowly, more connections than the limit.
//! Each is cut off or refused with the right status while other clients are served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Reads until `needle` arrives, the peer closes, or 10 s pass.
fn read_until(mut s: TcpStream, needle: &str) -> String {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&buf).contains(needle) {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn read_all(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn slow_headers_are_cut_off_without_hurting_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--header-read-timeout-ms", "500"]);
    let started = Instant::now();
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    // Meanwhile another client is served normally.
    assert_eq!(server.get("/healthz").status, 200);
    let answer = read_all(slow);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "the slow client was held for {waited:?}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    server.stop();
}

#[test]
fn slow_bodies_get_408_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--body-read-timeout-ms", "300"]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    let event = br#"{"event_type":"join_guild","guild_id":1,"name":"x"}"#;
    write!(slow, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", event.len() + 10).unwrap();
    slow.write_all(event).unwrap();
    let answer = read_until(slow, "ms\"}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("did not arrive within 300 ms"), "{answer:?}");
    let r = server.post("/v1/events", &[], event);
    assert_eq!(r.status, 200);
    server.stop();
    assert_eq!(replay_lines(dir.path()).len(), 1, "only the whole event was appended");
}

#[test]
fn connections_over_the_limit_get_429_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--max-connections", "4", "--header-read-timeout-ms", "60000"]);
    // Four idle connections hold every slot…
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    // …so the next is refused at once (poll: the server sees the four before the fifth).
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = read_all(TcpStream::connect(server.addr).unwrap());
        if answer.starts_with("HTTP/1.1 429") {
            break answer;
        }
        assert!(Instant::now() < deadline, "no 429 at the limit: {answer:?}");
    };
    assert!(refused.contains("retry-after: 1") && refused.contains("too many connections (limit 4)"), "{refused}");
    drop(held);
    // With the slots free again, requests are served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = http(server.addr, "GET", "/healthz", &[], b"") {
            if r.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the server did not recover after the connections closed");
    }
    let metrics = server.get("/metrics").text();
    assert!(!metrics.contains("questlog_connections_refused_total 0\n"), "refusals are counted");
    server.stop();
    // The help says what happens past the limit (it once said 503).
    let help = String::from_utf8(std::process::Command::new(bin()).args(["serve", "--help"]).output().unwrap().stdout).unwrap();
    assert!(help.contains("more are answered 429"), "{help}");
}

#[test]
fn wrong_content_types_deep_nesting_and_bad_bytes_get_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let event = br#"{"event_type":"join_guild","guild_id":1,"name":"x"}"#;
    for ct in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"] {
        let r = server.post("/v1/events", &[("Content-Type", ct)], event);
        assert_eq!(r.status, 415, "{ct}: {}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains("application/json"));
    }
    for ct in ["application/json; charset=utf-8", "text/plain", "application/vnd.game+json"] {
        assert_eq!(server.post("/v1/events", &[("Content-Type", ct)], event).status, 200, "{ct}");
    }
    // Deep nesting, up to the body limit: refused (unreadable, or an array that is not an
    // event), nothing accepted, no crash.
    for depth in [10_000, 7_000_000] {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let r = server.post("/v1/events", &[], deep.as_bytes());
        assert!(matches!(r.status, 400 | 413) || (r.status == 200 && r.json()["accepted"] == 0), "depth {depth}: {} {}", r.status, r.text());
    }
    let deep_field = format!(r#"{{"event_type":"join_guild","guild_id":1,"name":"x","extra":{}1{}}}"#, "[".repeat(5_000), "]".repeat(5_000));
    let r = server.post("/v1/events", &[], format!("[{deep_field}]").as_bytes());
    assert!(r.status == 400 || r.json()["rejected"][0]["reason"] == "malformed_json", "{}", r.text());
    // Huge numbers and invalid UTF-8 inside an otherwise fine array.
    let r = server.post("/v1/events", &[], br#"[{"event_type":"join_guild","guild_id":123456789012345678901234567890,"name":"x"}]"#);
    assert_eq!(r.json()["rejected"][0]["reason"], "out_of_range", "{}", r.text());
    let mut bad = b"[{\"event_type\":\"join_guild\",\"guild_id\":1,\"name\":\"".to_vec();
    bad.extend_from_slice(&[0xc3, 0x28]);
    bad.extend_from_slice(b"\"}]");
    assert_eq!(server.post("/v1/events", &[], &bad).status, 400);
    assert_eq!(server.get("/healthz").status, 200, "still serving");
    server.stop();
    assert_eq!(replay_lines(dir.path()).len(), 3);
}

#[test]
fn api_keys_gate_appends_name_the_app_and_limit_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "[[key]]\napp = \"mobile-game\"\nkey = \"qk_mobile_0123456789abcdef\"\n\n\
         [[key]]\napp = \"tiny-game\"\nkey = \"qk_tiny_0123456789abcdef\"\nevents_per_second = 5\nburst = 10\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["--api-keys", keys.to_str().unwrap()]);
    let event = br#"{"event_type":"join_guild","guild_id":1,"name":"x"}"#;
    // No key, a wrong key: 401, nothing appended.
    let r = server.post("/v1/events", &[], event);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.headers.iter().any(|(k, v)| k == "www-authenticate" && v == "Bearer"));
    assert_eq!(server.post("/v1/events", &[("Authorization", "Bearer qk_wrong_0123456789abcdef")], event).status, 401);
    assert_eq!(server.get("/join_guild?guild_id=1&name=x").status, 401);
    assert_eq!(server.get("/v1/replay?from=0").status, 401, "reading the log needs a key too");
    // A good key: accepted, recorded under its app.
    let r = server.post("/v1/events", &[("Authorization", "Bearer qk_mobile_0123456789abcdef")], event);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(server.addr, "GET", "/kill_enemy?enemy_id=1&name=Orc&level=2", &[("X-API-Key", "qk_mobile_0123456789abcdef")], b"").unwrap();
    assert_eq!(r.status, 200);
    // Over the tiny app's rate (burst 10): 429 with Retry-After, nothing appended.
    let batch = format!("[{}]", vec![std::str::from_utf8(event).unwrap(); 8].join(","));
    let tiny = [("Authorization", "Bearer qk_tiny_0123456789abcdef")];
    assert_eq!(server.post("/v1/events", &tiny, batch.as_bytes()).status, 200);
    let r = server.post("/v1/events", &tiny, batch.as_bytes());
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.headers.iter().find(|(k, _)| k == "retry-after").unwrap().1.parse().unwrap();
    assert!((1..=2).contains(&retry), "retry after {retry}");
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("questlog_requests_unauthorized_total 4"), "{metrics}");
    assert!(metrics.contains("questlog_requests_rate_limited_total 1"), "{metrics}");
    assert!(!metrics.contains("qk_"), "keys never appear in metrics");
    server.stop();
    let lines = replay_lines(&data);
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[0]["app"], "mobile-game");
    assert_eq!(lines[1]["app"], "mobile-game");
    assert!(lines[2..].iter().all(|l| l["app"] == "tiny-game"));
}

/// The server's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The ordinary traffic the memory measurements are taken after: 20 batches of 500
/// events (`ORDINARY_EVENTS` in all), then the tables caught up.
fn ordinary_traffic(server: &Server) {
    let ok_event = r#"{"event_type":"join_guild","guild_id":1,"name":"Knights"}"#;
    let batch = format!("[{}]", vec![ok_event; 500].join(","));
    for _ in 0..20 {
        assert_eq!(server.post("/v1/events", &[], batch.as_bytes()).status, 200);
    }
    wait_projected(server);
}

const ORDINARY_EVENTS: usize = 20 * 500;

/// Waits (bounded) until the tables have caught up with the log, so that projection
/// work does not move the memory figures.
fn wait_projected(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = server.get("/healthz").json();
        if h["projected_offset"] == h["log_end_offset"] {
            return;
        }
        assert!(Instant::now() < deadline, "projection did not catch up: {h}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every hostile input of the issue, several rounds against one server: each gets its
/// 4xx (a connection over the limit gets 429, a slow one is cut off), the server
/// keeps serving, and its memory after the suite is within 20% of before.
#[test]
fn hostile_suite_answers_4xx_and_memory_returns() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &["--max-connections", "32", "--header-read-timeout-ms", "300", "--body-read-timeout-ms", "300"],
    );
    let pid = server.child.id();
    // Ordinary traffic first: the baseline is a server that has done its normal work.
    let ok_event = r#"{"event_type":"join_guild","guild_id":1,"name":"Knights"}"#;
    ordinary_traffic(&server);
    let before = rss_kib(pid);

    // Announced, never sent: one byte over the 16 MiB body limit.
    let over_body_len = 16 * 1024 * 1024 + 1;
    let bomb = gzip(&vec![b' '; 80 * 1024 * 1024]);
    let too_many = format!("[{}]", vec![ok_event; 10_001].join(","));
    let too_big = format!(r#"{{"event_type":"join_guild","guild_id":1,"name":"{}"}}"#, "x".repeat(70 * 1024));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut bad_utf8 = br#"{"event_type":"join_guild","guild_id":1,"name":""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    bad_utf8.extend_from_slice(b"\"}");
    let dup_key = r#"{"event_type":"join_guild","guild_id":1,"guild_id":2,"name":"x"}"#;
    let huge_number = r#"{"event_type":"join_guild","guild_id":123456789012345678901234567890,"name":"x"}"#;
    let non_finite = r#"{"event_type":"buy_asset","store_id":1,"item_name":"a","inventory_id":1,"total_cost":1e400,"category":"c","on_hand_qty":1}"#;

    for round in 0..5 {
        let expect = |what: &str, r: Response, status: u16| {
            assert_eq!(r.status, status, "round {round}, {what}: {}", r.text());
        };
        // A body over the limit, announced by Content-Length: refused before it is sent.
        let mut big = TcpStream::connect(server.addr).unwrap();
        write!(big, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: {over_body_len}\r\nExpect: 100-continue\r\n\r\n").unwrap();
        let answer = read_until(big, "}");
        assert!(answer.starts_with("HTTP/1.1 413"), "round {round}, body over the limit: {answer:?}");
        expect("gzip bomb", server.post("/v1/events", &[("Content-Encoding", "gzip")], &bomb), 413);
        expect("too many events", server.post("/v1/events", &[], too_many.as_bytes()), 413);
        expect("event too large", server.post("/v1/events", &[], too_big.as_bytes()), 413);
        expect("invalid UTF-8", server.post("/v1/events", &[], &bad_utf8), 400);
        expect("malformed JSON", server.post("/v1/events", &[], br#"{"event_type":"#), 400);
        expect("wrong content type", server.post("/v1/events", &[("Content-Type", "application/xml")], ok_event.as_bytes()), 415);
        expect("unknown encoding", server.post("/v1/events", &[("Content-Encoding", "br")], ok_event.as_bytes()), 415);
        expect("unknown route", server.post("/v1/nothing", &[], ok_event.as_bytes()), 404);
        // Seed-style routes carry one event: a refused one is a 400.
        expect("duplicate parameter", server.get("/join_guild?guild_id=1&guild_id=2&name=x"), 400);
        expect("huge number", server.get("/join_guild?guild_id=123456789012345678901234567890&name=x"), 400);
        expect("non-finite number", server.get("/buy_asset?store_id=1&item_name=a&inventory_id=1&total_cost=inf&category=c&on_hand_qty=1"), 400);
        // In a readable JSON body, the contract answers 200 and refuses each bad event
        // in `rejected` with its reason; nothing of it is accepted.
        for (what, body, reason) in [
            ("duplicate key", dup_key, "duplicate_key"),
            ("huge number", huge_number, "out_of_range"),
            ("non-finite number", non_finite, "non_finite"),
        ] {
            let r = server.post("/v1/events", &[], body.as_bytes());
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            let j = r.json();
            assert_eq!(j["accepted"], 0, "{what}: {j}");
            assert_eq!(j["rejected"][0]["reason"], reason, "{what}: {j}");
        }
        let r = server.post("/v1/events", &[], deep.as_bytes());
        assert!(matches!(r.status, 400 | 413) || (r.status == 200 && r.json()["accepted"] == 0), "deep nesting: {} {}", r.status, r.text());

        // Slow clients: headers or a body trickled past the timeouts are cut off.
        let mut slow_head = TcpStream::connect(server.addr).unwrap();
        slow_head.write_all(b"POST /v1/events HTTP/1.1\r\nHo").unwrap();
        let mut slow_body = TcpStream::connect(server.addr).unwrap();
        slow_body.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"event").unwrap();
        let head_answer = read_all(slow_head);
        assert!(head_answer.is_empty() || head_answer.starts_with("HTTP/1.1 408"), "slow headers: {head_answer:?}");
        assert!(read_all(slow_body).starts_with("HTTP/1.1 408"), "slow body");

        // More connections than the limit: the extra ones are refused with 429 at once.
        let held: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
        let mut refused = 0;
        for s in held {
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let mut buf = [0u8; 12];
            if matches!((&s).read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 429")) {
                refused += 1;
            }
        }
        assert!(refused >= 1, "round {round}: no connection over the limit was refused");
        assert_eq!(server.get("/healthz").status, 200, "round {round}: still serving");
    }

    // Other clients were served all along, and still are: the same ordinary traffic as
    // before the suite, then the same measurement.
    ordinary_traffic(&server);
    let after = rss_kib(pid);
    eprintln!("hostile suite: RSS {before} KiB before, {after} KiB after ({:+.1}%)", (after as f64 / before as f64 - 1.0) * 100.0);
    assert!(after as f64 <= before as f64 * 1.2, "RSS grew from {before} KiB to {after} KiB over the hostile suite");
    server.stop();
    assert_eq!(replay_lines(dir.path()).len(), 2 * ORDINARY_EVENTS, "only the ordinary events were appended");
}

/// The server's peak resident memory so far (VmHWM), from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Bound on what the line bombs may add to the server's peak memory: the body memory
/// budget (256 MiB, `api::MAX_BODY_MEMORY_BYTES`) plus 128 MiB for what the budget does
/// not count (a growing buffer's old copy while it moves, allocator slack).
const LINE_BOMB_PEAK_GROWTH_KIB: u64 = (256 + 128) * 1024;

/// NDJSON line bombs, concurrently: each a 64 KB gzip of 32M lines `a\n` (64 MiB inflated,
/// under the decompression limit). Each is refused — 413 past 10,000 events, or 503 when
/// the bodies in flight hold the whole memory budget — the peak stays within the budget,
/// and the memory is given back. (Before the budget and the bounded line count, four of
/// these took a server from 57 MB to 1.98 GB and it stayed there.)
#[test]
fn ndjson_line_bombs_in_parallel_stay_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let pid = server.child.id();
    ordinary_traffic(&server);
    let before = rss_kib(pid);
    let peak_before = peak_rss_kib(pid);

    let bomb = std::sync::Arc::new(gzip(&b"a\n".repeat(32 * 1024 * 1024)));
    assert!(bomb.len() < 1024 * 1024, "the bomb is small on the wire: {} bytes", bomb.len());
    let addr = server.addr;
    for round in 0..3 {
        let senders: Vec<_> = (0..8)
            .map(|_| {
                let bomb = bomb.clone();
                std::thread::spawn(move || {
                    http(addr, "POST", "/v1/events", &[("Content-Type", "application/x-ndjson"), ("Content-Encoding", "gzip")], &bomb).unwrap()
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for s in senders {
            let r = s.join().unwrap();
            assert!(matches!(r.status, 413 | 503), "round {round}: a line bomb got {}: {}", r.status, r.text());
            if r.status == 503 {
                assert!(r.text().contains("too many request bodies in memory"), "{}", r.text());
                assert!(r.headers.iter().any(|(k, v)| k == "retry-after" && v == "1"));
            } else {
                assert!(r.text().contains("more than 10000 events"), "{}", r.text());
            }
            statuses.push(r.status);
        }
        assert!(statuses.contains(&413), "round {round}: at least one bomb is read and refused for its size: {statuses:?}");
        assert_eq!(server.get("/healthz").status, 200, "still serving");
    }
    let peak = peak_rss_kib(pid);
    let metrics = server.get("/metrics").text();
    let refused = metrics.lines().find(|l| l.starts_with("questlog_requests_over_body_memory_total ")).unwrap().to_string();

    // Ordinary traffic again, then the same measurement as before.
    ordinary_traffic(&server);
    // Each large body gives its memory back to the OS as its request ends
    // (api::RETURN_MEMORY_AFTER_BYTES); allow the last ones a moment, bounded.
    let bound = (before as f64 * 1.2) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = rss_kib(pid);
    while after > bound && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = rss_kib(pid);
    }
    eprintln!(
        "line bombs: RSS {before} KiB before, peak {peak} KiB (was {peak_before}), {after} KiB after ({:+.1}%); {refused}",
        (after as f64 / before as f64 - 1.0) * 100.0
    );
    assert!(peak <= peak_before.max(before) + LINE_BOMB_PEAK_GROWTH_KIB, "peak RSS {peak} KiB, from {before} KiB: over the budget");
    assert!(after <= bound, "RSS grew from {before} KiB to {after} KiB and stayed for 10 s");
    server.stop();
    assert_eq!(replay_lines(dir.path()).len(), 2 * ORDINARY_EVENTS, "only the ordinary events were appended");
}
