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
