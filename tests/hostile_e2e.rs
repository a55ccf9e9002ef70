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
fn connections_over_the_limit_get_503_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--max-connections", "4", "--header-read-timeout-ms", "60000"]);
    // Four idle connections hold every slot…
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    // …so the next is refused at once (poll: the server sees the four before the fifth).
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = read_all(TcpStream::connect(server.addr).unwrap());
        if answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(Instant::now() < deadline, "no 503 at the limit: {answer:?}");
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
