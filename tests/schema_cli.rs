//! `questlog schema check|list|show` as a user runs them: schema files on disk, the real
//! binary, its output and exit status (docs/CONTRACT.md section 13).

mod common;

use std::path::Path;

use common::*;

const META: &str = "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#";

fn write_schema(dir: &Path, file: &str, version: &str, properties: &str, required: &str) -> String {
    let text = format!(
        r#"{{"$schema": "{META}",
  "self": {{"vendor": "com.example.game", "name": "level_up", "format": "jsonschema", "version": "{version}"}},
  "type": "object", "properties": {{{properties}}}, "required": [{required}]}}"#
    );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn schema_check_gives_the_verdict_on_each_file_and_its_evolution() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = tmp.path();
    let level = r#""level": {"type": "integer", "minimum": 1, "maximum": 100}, "class": {"type": "string", "enum": ["warrior", "mage"]}"#;
    let v1 = write_schema(d, "v1.json", "1-0-0", level, r#""level", "class""#);
    let v2 = write_schema(d, "v2.json", "1-0-1", &format!(r#"{level}, "zone": {{"type": "string"}}"#), r#""level", "class""#);
    let out = questlog_ok(&data, &["schema", "check", &v1, &v2]);
    assert!(out.contains("iglu:com.example.game/level_up/jsonschema/1-0-0: a new table `level_up`; sha256:"), "{out}");
    let columns: Vec<Vec<&str>> = out.lines().filter(|l| l.starts_with("      ")).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        columns[..2],
        [vec!["level", "integer", "SMALLINT", "NOT", "NULL"], vec!["class", "string", "STRING", "NOT", "NULL"]],
        "{out}"
    );
    assert!(out.contains("ADDITION to `level_up`: zone added, nullable"), "{out}");
    assert!(!data.exists(), "schema check needs no data dir and makes none");

    // A changed type within model 1: refused by name, exit 1, nothing else refused.
    let changed = write_schema(
        d,
        "bad.json",
        "1-0-1",
        r#""level": {"type": "string"}, "class": {"type": "string", "enum": ["warrior", "mage"]}"#,
        r#""level", "class""#,
    );
    let out = questlog(&data, &["schema", "check", &v1, &changed]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok  ") && stdout.contains("refused  "), "{stdout}");
    assert!(stdout.contains("TYPE_CHANGED level: integer (SMALLINT) → string (STRING)"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 schema files refused; nothing was recorded"));
    // As MODEL 2 the same document is a table of its own.
    let model2 = write_schema(d, "m2.json", "2-0-0", r#""level": {"type": "string"}, "class": {"type": "string"}"#, r#""level""#);
    let out = questlog_ok(&data, &["schema", "check", &v1, &model2]);
    assert!(out.contains("a new table `level_up_2`"), "{out}");

    // Files that are not schemas: named, with the reason.
    std::fs::write(d.join("notjson.json"), "{").unwrap();
    std::fs::write(d.join("big.json"), vec![b' '; 70 * 1024]).unwrap();
    let unsupported = write_schema(d, "pattern.json", "1-0-0", r#""name": {"type": "string", "pattern": "^[a-z]+$"}"#, "");
    let out = questlog(
        &data,
        &[
            "schema",
            "check",
            &d.join("notjson.json").to_string_lossy(),
            &d.join("big.json").to_string_lossy(),
            &unsupported,
            &d.join("missing.json").to_string_lossy(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("notjson.json: not JSON"), "{stdout}");
    assert!(stdout.contains("big.json: 65537 bytes, over the 65536-byte limit"), "{stdout}");
    assert!(stdout.contains("pattern.json: at `/properties/name`: unsupported keyword `pattern`"), "{stdout}");
    assert!(stdout.contains("missing.json: opening"), "{stdout}");
}

#[test]
fn the_builtin_types_are_listed_shown_and_not_registrable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let list = questlog_ok(&data, &["schema", "list"]);
    let names: Vec<&str> = list.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(names, ["join_guild", "kill_enemy", "accept_quest", "take_damage", "buy_asset"]);
    assert!(list.contains("iglu:io.questlog/buy_asset/jsonschema/1-0-0"), "{list}");
    let shown = questlog_ok(&data, &["schema", "show", "kill_enemy"]);
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(doc["properties"]["level"]["maximum"], 32767);
    // The shown document checks (its columns are the seed's), but cannot be registered as
    // a type of one's own: the name and vendor are the built-in's.
    let path = tmp.path().join("kill_enemy.json");
    std::fs::write(&path, &shown).unwrap();
    let out = questlog(&data, &["schema", "check", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("questlog's own"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = questlog(&data, &["schema", "show", "level_up"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no event type `level_up`; the types are join_guild, kill_enemy"));
}

#[test]
fn schemas_recorded_in_the_log_evolve_and_a_refusal_records_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = tmp.path();
    questlog_ok(&data, &["generate", "--seed", "1", "--events", "100"]);
    let level = r#""level": {"type": "integer", "minimum": 1, "maximum": 100}, "class": {"type": "string", "enum": ["warrior", "mage"]}"#;
    let v1 = write_schema(d, "v1.json", "1-0-0", level, r#""level", "class""#);
    let v2 = write_schema(d, "v2.json", "1-0-1", &format!(r#"{level}, "zone": {{"type": "string"}}"#), r#""level", "class""#);
    let bad = write_schema(
        d,
        "bad.json",
        "1-0-2",
        r#""level": {"type": "string"}, "class": {"type": "string", "enum": ["warrior", "mage"]}"#,
        r#""level", "class""#,
    );

    let out = questlog_ok(&data, &["schema", "add", &v1]);
    assert!(out.contains("iglu:com.example.game/level_up/jsonschema/1-0-0") && out.contains("in force from log offset 100"), "{out}");
    let out = questlog_ok(&data, &["schema", "add", &v1]);
    assert!(out.starts_with("unchanged"), "{out}");
    // One refused file: nothing of the others is recorded either.
    let out = questlog(&data, &["schema", "add", &v2, &bad]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("bad.json: iglu:com.example.game/level_up/jsonschema/1-0-2 is not backward compatible")
            && stdout.contains("TYPE_CHANGED level"),
        "{stdout}"
    );
    assert_eq!(questlog_ok(&data, &["schema", "history"]).lines().count(), 1);

    questlog_ok(&data, &["generate", "--seed", "2", "--events", "50"]);
    let out = questlog_ok(&data, &["schema", "add", &v2]);
    assert!(out.contains("in force from log offset 150"), "{out}");
    let history = questlog_ok(&data, &["schema", "history"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].contains("from offset        100  iglu:com.example.game/level_up/jsonschema/1-0-0")
            && lines[0].contains("a new table `level_up`"),
        "{history}"
    );
    assert!(lines[1].contains("offset        150") && lines[1].contains("ADDITION to `level_up`: zone added, nullable"), "{history}");

    let list = questlog_ok(&data, &["schema", "list"]);
    assert!(
        list.contains("level_up  iglu:com.example.game/level_up/jsonschema/1-0-1  from offset 150, table level_up (3 properties)"),
        "{list}"
    );
    let shown: serde_json::Value = serde_json::from_str(&questlog_ok(&data, &["schema", "show", "level_up"])).unwrap();
    assert_eq!(shown["self"]["version"], "1-0-1");
    assert_eq!(shown["properties"]["zone"]["type"], "string");
    // `check` weighs files against the log's schemas too.
    let out = questlog(&data, &["schema", "check", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("TYPE_CHANGED level"));
    assert!(questlog_ok(&data, &["schema", "check", &v1]).contains("registered already"));
    // The events are the log's as before: a schema takes no offset.
    assert_eq!(questlog_ok(&data, &["replay"]).lines().count(), 150);
}

/// While `serve` holds the log, `schema add|list|show|check` go through it
/// (`GET|POST /v1/schemas`), no restart; with API keys, registering needs the `admin`
/// scope and listing `read` or `admin`.
#[test]
fn schemas_are_registered_through_a_running_server_with_the_admin_scope() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let keys = d.join("keys.toml");
    std::fs::write(
        &keys,
        "[[key]]\napp = \"game\"\nkey = \"qk_game_0123456789abcdef\"\n\n\
         [[key]]\napp = \"ops\"\nkey = \"qk_ops_0123456789abcdef\"\nscopes = [\"admin\"]\n",
    )
    .unwrap();
    let data = d.join("data");
    let server = Server::start_with(&data, &["--api-keys", keys.to_str().unwrap()]);
    let level = r#""level": {"type": "integer", "minimum": 1, "maximum": 100}, "class": {"type": "string", "enum": ["warrior", "mage"]}"#;
    let v1 = write_schema(d, "v1.json", "1-0-0", level, r#""level", "class""#);
    let bad = write_schema(
        d,
        "bad.json",
        "1-0-1",
        r#""level": {"type": "string"}, "class": {"type": "string", "enum": ["warrior", "mage"]}"#,
        r#""level", "class""#,
    );
    let doc = std::fs::read(&v1).unwrap();

    // The game's key (write only) may not register; no key at all is 401.
    let r = server.post("/v1/schemas", &[("Authorization", "Bearer qk_game_0123456789abcdef")], &doc);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("scopes = [\\\"admin\\\"]"), "{}", r.text());
    assert_eq!(server.post("/v1/schemas", &[], &doc).status, 401);
    let out = questlog(&data, &["--api-key", "qk_game_0123456789abcdef", "schema", "add", &v1]);
    assert!(!out.status.success());

    // The CLI with the ops key: through the server.
    let ops = ["--api-key", "qk_ops_0123456789abcdef"];
    let out = questlog_ok(&data, &[&ops[..], &["schema", "add", &v1]].concat());
    assert!(out.contains("recorded") && out.contains("in force from log offset 0 (through the server at http://"), "{out}");
    let out = questlog_ok(&data, &[&ops[..], &["schema", "add", &v1]].concat());
    assert!(out.starts_with("unchanged"), "{out}");
    let out = questlog(&data, &[&ops[..], &["schema", "add", &bad]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("TYPE_CHANGED level"), "{}", String::from_utf8_lossy(&out.stdout));
    // The server refuses it by itself too: 409, nothing recorded.
    let r = server.post("/v1/schemas", &[("X-API-Key", "qk_ops_0123456789abcdef")], &std::fs::read(&bad).unwrap());
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("TYPE_CHANGED level") && r.text().contains("nothing was recorded"), "{}", r.text());
    let r = server.post("/v1/schemas", &[("X-API-Key", "qk_ops_0123456789abcdef")], b"{\"type\": \"object\"}");
    assert_eq!(r.status, 422, "{}", r.text());
    let r = server.post("/v1/schemas", &[("X-API-Key", "qk_ops_0123456789abcdef")], &vec![b' '; 70 * 1024]);
    assert_eq!(r.status, 413, "{}", r.text());

    let list = questlog_ok(&data, &[&ops[..], &["schema", "list"]].concat());
    assert!(list.contains("level_up  iglu:com.example.game/level_up/jsonschema/1-0-0  from offset 0, table level_up"), "{list}");
    let shown: serde_json::Value =
        serde_json::from_str(&questlog_ok(&data, &[&ops[..], &["schema", "show", "level_up"]].concat())).unwrap();
    assert_eq!(shown["properties"]["level"]["maximum"], 100);
    let r = server.get("/v1/schemas");
    assert_eq!(r.status, 401, "listing needs a key when keys are on");
    let r = http(server.addr, "GET", "/v1/schemas", &[("X-API-Key", "qk_game_0123456789abcdef")], b"").unwrap();
    assert_eq!(r.status, 403, "a write key does not list them: {}", r.text());
    let r = http(server.addr, "GET", "/v1/schemas", &[("X-API-Key", "qk_ops_0123456789abcdef")], b"").unwrap();
    assert_eq!(r.status, 200, "an admin key lists what it registers against: {}", r.text());
    assert_eq!(r.json()["registered"][0]["schema"]["properties"]["level"]["maximum"], 100);
    let metrics = server.get("/metrics").text();
    for status in ["201", "409", "422", "413", "403", "401"] {
        assert!(metrics.contains(&format!("questlog_http_requests_total{{route=\"schemas\",status=\"{status}\"}}")), "{status}: {metrics}");
    }
    server.stop();
    // After the server: the same record, read from the log itself.
    assert_eq!(questlog_ok(&data, &["schema", "history"]).lines().count(), 1);
}

/// Registrations run one at a time, each checked against those before it: eight clients
/// registering eight different contents of one version at once get one 201 and seven 409,
/// and the log holds one schema (without the registration lock, several pass the check
/// before the first is recorded).
#[test]
fn concurrent_registrations_of_one_version_record_exactly_one() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let addr = server.addr;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let doc = format!(
                    r#"{{"$schema": "{META}", "description": "variant {i}",
  "self": {{"vendor": "com.example.game", "name": "level_up", "format": "jsonschema", "version": "1-0-0"}},
  "type": "object", "properties": {{"level": {{"type": "integer"}}}}}}"#
                );
                http(addr, "POST", "/v1/schemas", &[("Content-Type", "application/json")], doc.as_bytes()).unwrap().status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let listed = server.get("/v1/schemas").json();
    assert_eq!(listed["registered"].as_array().unwrap().len(), 1, "{listed}");
    server.stop();
}
