//! The live page's server side with the real binary: `GET /` is the embedded page,
//! `GET /v1/live` carries what it shows (rates, rejections by reason and field, the latest
//! rejected, freshness, health, findings once the tables move), and with API keys both
//! need a key with the `read` scope (in a header or `?key=`), and a write key gets 403. tests/live/run.sh drives the
//! page itself in Chromium.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn live(server: &Server, headers: &[(&str, &str)]) -> serde_json::Value {
    let r = http(server.addr, "GET", "/v1/live", headers, b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn the_live_data_follows_ingest_rejections_and_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--project-interval-ms", "100"]);
    let page = server.get("/");
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("<title>questlog live</title>"));
    // Self-contained: nothing loaded from elsewhere (the one URL is SVG's namespace name).
    for outside in ["src=\"http", "href=\"http", "<link", "@import", "<script src"] {
        assert!(!html.contains(outside), "the page loads {outside}…");
    }
    assert!(page.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("content-security-policy") && v.contains("default-src 'none'")));
    let body = r#"[{"event_type":"join_guild","guild_id":1,"name":"a"},{"event_type":"kill_enemy","enemy_id":1,"name":"Orc","level":3},{"event_type":"join_guild","name":"no id"},{"event_type":"nope"}]"#;
    let r = server.post("/v1/events", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(r.json()["accepted"], 2, "{}", r.text());

    // Bounded wait for the tables and the findings to catch up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let v = loop {
        let v = live(&server, &[]);
        if v["freshness"]["projected_offset"] == 2 && !v["findings"].is_null() {
            break v;
        }
        assert!(Instant::now() < deadline, "the live data never showed the tables and findings: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v["accepted_total"], serde_json::json!([1, 1, 0, 0, 0]), "{v}");
    assert_eq!(v["rejected_total"], 2);
    let fields: Vec<(String, String)> = v["rejected"]["by_field"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["reason"].as_str().unwrap().to_string(), f["field"].as_str().unwrap().to_string()))
        .collect();
    assert!(
        fields.contains(&("missing_field".into(), "guild_id".into()))
            && fields.contains(&("unknown_event_type".into(), "event_type".into())),
        "{fields:?}"
    );
    let latest = v["rejected"]["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[0]["raw"], r#"{"event_type":"nope"}"#, "newest first");
    assert_eq!(v["freshness"]["log_end_offset"], 2);
    assert_eq!(v["freshness"]["lag_events"], 0);
    assert_eq!(v["health"]["status"], "ok");
    assert!(v["health"]["disk_free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["findings"]["offset"], 2);
    assert!(v["findings"]["summary"][0].as_str().unwrap().starts_with("2 events"), "{v}");
    assert!(v["findings"]["charts"][0]["svg"].as_str().unwrap().starts_with("<svg"), "{v}");
    let report = server.get("/report.html");
    assert_eq!(report.status, 200);
    assert!(report.text().starts_with("<!DOCTYPE html>"));
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("route=\"live\""), "the live routes are measured");
}

#[test]
fn with_api_keys_the_page_needs_a_key_that_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, "[[key]]\napp = \"game\"\nkey = \"write-only-key-0001\"\n\n[[key]]\napp = \"dash\"\nkey = \"read-key-000000001\"\nscopes = [\"read\"]\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["--api-keys", keys.to_str().unwrap()]);
    for path in ["/v1/live", "/report.html", "/v1/live?key=wrong-key-0000000000"] {
        let r = server.get(path);
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }
    // A write key (the kind shipped in a game client) reads nothing: 403.
    for path in ["/v1/live?key=write-only-key-0001", "/report.html?key=write-only-key-0001"] {
        assert_eq!(server.get(path).status, 403, "{path}");
    }
    let r = http(server.addr, "GET", "/v1/live", &[("X-API-Key", "write-only-key-0001")], b"").unwrap();
    assert_eq!(r.status, 403);
    assert!(r.text().contains("scopes"), "{}", r.text());
    // The page itself holds no data: it is served to anyone (so it can be reloaded once it
    // has taken its key out of the address bar), and asks /v1/live with the key.
    assert_eq!(server.get("/").status, 200);
    let page = server.get("/?key=read-key-000000001");
    assert_eq!(page.status, 200);
    // The page runs its own script by hash and nothing else; keyed answers are not kept.
    let header = |r: &Response, name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let csp = header(&page, "content-security-policy");
    let script_src = csp.split(';').find(|d| d.trim().starts_with("script-src")).unwrap_or_else(|| panic!("no script-src: {csp}"));
    assert!(script_src.contains("'sha256-") && !script_src.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&page, "cache-control"), "no-store");
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    let v = live(&server, &[("Authorization", "Bearer read-key-000000001")]);
    assert_eq!(v["rejected_total"], 0);
    let data = http(server.addr, "GET", "/v1/live", &[("X-API-Key", "read-key-000000001")], b"").unwrap();
    assert_eq!(header(&data, "cache-control"), "no-store");
    assert_eq!(server.get("/v1/live?key=read-key-000000001").status, 200);
    // The read key (the kind pasted into a browser) appends nothing.
    let event = br#"{"event_type":"join_guild","guild_id":1,"name":"x"}"#;
    let r = server.post("/v1/events", &[("X-API-Key", "read-key-000000001")], event);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(server.post("/v1/events", &[("X-API-Key", "write-only-key-0001")], event).status, 200);
}

#[test]
fn rejections_are_counted_by_field_within_a_bound() {
    // Every event names a key twice, a different key each time: the (reason, field) map
    // keeps MAX_REJECTED_FIELDS pairs and counts the rest as `(other)`.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let n = 300;
    let body: String =
        (0..n).map(|i| format!("{{\"event_type\":\"join_guild\",\"guild_id\":1,\"name\":\"x\",\"k{i}\":1,\"k{i}\":2}}\n")).collect();
    let r = server.post("/v1/events", &[("Content-Type", "application/x-ndjson")], body.as_bytes());
    assert_eq!(r.json()["rejected"].as_array().unwrap().len(), n, "{}", r.text());
    let v = live(&server, &[]);
    let other = v["rejected"]["by_field"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "(other)")
        .unwrap_or_else(|| panic!("no (other): {v}"))
        .clone();
    assert_eq!(other["reason"], "duplicate_key");
    assert_eq!(other["count"], (n - 256) as u64, "256 distinct pairs kept, the rest counted together");
}
