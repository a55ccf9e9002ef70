//! Registered types' tables (docs/CONTRACT.md 13.4) through the real binary: a table per
//! type's model, widened in place by an ADDITION (a Delta metadata change in the commit
//! that first holds the new column; older rows null), a new MODEL's table beside the old
//! one, time travel to before the ADDITION without the column, `verify` (incremental =
//! rebuild), `sql` and `ddl` over them, and `serve` projecting a type registered while it
//! runs, read by `sql` beside it.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn schema_file(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("replay/schemas").join(name).display().to_string()
}

/// The log offset `schema add` (or `generate --schema`) says a schema is in force from.
fn in_force_from(output: &str, version: &str) -> u64 {
    output
        .lines()
        .find(|l| l.starts_with("recorded") && l.contains(version))
        .and_then(|l| l.rsplit("in force from log offset ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `recorded … {version}` line in:\n{output}"))
}

/// Each commit of a Delta table: (version, its columns when it changes them).
fn schema_changes(table_dir: &Path) -> Vec<(u64, Vec<String>)> {
    let mut out = Vec::new();
    let mut entries: Vec<(u64, PathBuf)> = std::fs::read_dir(table_dir.join("_delta_log"))
        .unwrap()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_string_lossy().strip_suffix(".json")?.parse().ok()?, e.path())))
        .collect();
    entries.sort();
    for (version, path) in entries {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(s) = v["metaData"]["schemaString"].as_str() {
                let schema: serde_json::Value = serde_json::from_str(s).unwrap();
                let names = schema["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect();
                out.push((version, names));
            }
        }
    }
    out
}

fn sql_value(data: &Path, query: &str) -> String {
    let out = questlog_ok(data, &["sql", query, "--format", "csv"]);
    out.lines().nth(1).unwrap_or_else(|| panic!("no row for {query}: {out}")).to_string()
}

#[test]
fn a_registered_types_table_evolves_with_its_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (level_1, level_1_0_1) = (schema_file("level_up-1-0-0.json"), schema_file("level_up-1-0-1.json"));
    let (match_1, match_2) = (schema_file("match_end-1-0-0.json"), schema_file("match_end-2-0-0.json"));

    // Two types from offset 0, projected in a first step.
    questlog_ok(&data, &["schema", "add", &level_1, &match_1]);
    questlog_ok(&data, &["generate", "--seed", "3", "--events", "6000", "--schema", &level_1, "--schema", &match_1]);
    questlog_ok(&data, &["project"]);
    // An ADDITION (level_up gains `zone`), then a new MODEL of match_end.
    let added = questlog_ok(&data, &["schema", "add", &level_1_0_1]);
    let addition_at = in_force_from(&added, "1-0-1");
    assert_eq!(addition_at, 6000);
    questlog_ok(&data, &["generate", "--seed", "4", "--events", "4000", "--schema", &level_1_0_1, "--schema", &match_1]);
    let model_2 = questlog_ok(&data, &["schema", "add", &match_2]);
    let model_2_at = in_force_from(&model_2, "2-0-0");
    questlog_ok(&data, &["generate", "--seed", "5", "--events", "3000", "--schema", &level_1_0_1, "--schema", &match_2]);
    let projected = questlog_ok(&data, &["project"]);
    assert!(projected.contains("level_up") && projected.contains("match_end_2"), "{projected}");
    let verified = questlog_ok(&data, &["verify"]);
    assert!(verified.starts_with("ok:"), "{verified}");

    // Every event of a registered type is a row of its model's table, once.
    let lines = replay_lines(&data);
    let count = |t: &str, range: std::ops::Range<u64>| {
        lines.iter().filter(|l| l["event_type"] == t && range.contains(&l["log_offset"].as_u64().unwrap())).count().to_string()
    };
    assert_eq!(sql_value(&data, "select count(*) from level_up"), count("level_up", 0..u64::MAX));
    assert_eq!(sql_value(&data, "select count(distinct log_offset) from level_up"), count("level_up", 0..u64::MAX));
    assert_eq!(sql_value(&data, "select count(*) from match_end"), count("match_end", 0..model_2_at));
    assert_eq!(sql_value(&data, "select count(*) from match_end_2"), count("match_end", model_2_at..u64::MAX));
    assert_ne!(sql_value(&data, "select count(*) from match_end_2"), "0");
    // The ADDITION's column: null before it, values after.
    assert_eq!(sql_value(&data, &format!("select count(zone) from level_up where log_offset < {addition_at}")), "0");
    assert_ne!(sql_value(&data, &format!("select count(zone) from level_up where log_offset >= {addition_at}")), "0");

    // The Delta table was made with the first version's columns and widened once, by the
    // step that projected past the ADDITION, with `zone` after the earlier properties.
    let changes = schema_changes(&data.join("delta/level_up"));
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(!changes[0].1.contains(&"zone".to_string()), "{changes:?}");
    let widened = &changes[1].1;
    assert_eq!(widened.iter().position(|c| c == "zone"), widened.iter().position(|c| c == "loadout").map(|i| i + 1), "{widened:?}");
    assert_eq!(schema_changes(&data.join("delta/match_end_2")).len(), 1);

    // Time travel to before the ADDITION: the table without the column, no model-2 table.
    let before = tmp.path().join("before");
    let out = questlog_ok(&data, &["project", "--rebuild", "--out", before.to_str().unwrap(), "--to", &(addition_at - 1).to_string()]);
    assert!(out.contains("level_up"), "{out}");
    let then = schema_changes(&before.join("level_up"));
    assert!(then.iter().all(|(_, cols)| cols.contains(&"level".to_string()) && !cols.contains(&"zone".to_string())), "{then:?}");
    assert!(!before.join("match_end_2").exists());
    let report = questlog_ok(&data, &["report", "--to", &(addition_at - 1).to_string(), "--out", tmp.path().join("r").to_str().unwrap()]);
    assert!(report.contains("level_up:"), "{report}");
    let md = std::fs::read_to_string(tmp.path().join("r/report.md")).unwrap();
    assert!(md.contains("Registered type: level_up (table level_up)") && !md.contains("| zone |"), "{md}");

    // The engines' statements name every table and column.
    let ddl = questlog_ok(&data, &["ddl"]);
    for want in
        ["default.level_up (", "`zone` string", "`won_boss` boolean", "`reached_at` timestamp", "default.match_end_2 (", "`duration_s` int"]
    {
        assert!(ddl.contains(want), "ddl lacks {want}:\n{ddl}");
    }
    // The report of the tables now has a section per table, with the new column.
    questlog_ok(&data, &["report"]);
    let md = std::fs::read_to_string(data.join("report/report.md")).unwrap();
    for want in ["(table level_up)", "(table match_end)", "(table match_end_2)", "| zone | STRING |"] {
        assert!(md.contains(want), "report lacks {want}");
    }
}

/// A table is made as its model's first version has it even when the log already holds
/// a later ADDITION (the projector knows the log's newest schemas): a step that ends
/// before the ADDITION commits no column of it; the step that reaches it adds it.
#[test]
fn a_table_is_made_without_columns_of_additions_past_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (v1, v2) = (schema_file("level_up-1-0-0.json"), schema_file("level_up-1-0-1.json"));
    questlog_ok(&data, &["generate", "--seed", "6", "--events", "2000", "--schema", &v1]);
    let added = questlog_ok(&data, &["schema", "add", &v2]);
    let addition_at = in_force_from(&added, "1-0-1");
    questlog_ok(&data, &["generate", "--seed", "7", "--events", "1000", "--schema", &v2]);
    // Steps of 500: four before the ADDITION's offset (2000), two after.
    questlog_ok(&data, &["project", "--step-events", "500"]);
    let changes = schema_changes(&data.join("delta/level_up"));
    assert!(!changes[0].1.contains(&"zone".to_string()), "made with the ADDITION's column: {changes:?}");
    assert_eq!(changes.len(), 2, "{changes:?}");
    // The version that added `zone` is the commit of the step reaching past the ADDITION.
    let widened_at = changes[1].0;
    let offset_there = {
        let path = data.join("delta/level_up/_delta_log").join(format!("{widened_at:020}.json"));
        let text = std::fs::read_to_string(path).unwrap();
        text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|v| v["txn"]["version"].as_u64()).unwrap()
    };
    // (Tables reaching an offset have the columns of the schemas in force there: an
    // ADDITION in force from 2000 is a column of the tables at 2000, empty until then.)
    assert!(offset_there >= addition_at, "zone added by the commit reaching {offset_there}, the ADDITION is at {addition_at}");
    assert!(questlog_ok(&data, &["verify"]).starts_with("ok:"));
}

#[test]
fn serve_projects_a_type_registered_while_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    let schema = std::fs::read(schema_file("level_up-1-0-0.json")).unwrap();
    let r = server.post("/v1/schemas", &[("Content-Type", "application/json")], &schema);
    assert_eq!(r.status, 201, "{}", r.text());
    let events: String = (0..50)
        .map(|i| format!(r#"{{"event_type":"level_up","level":{},"class":"mage","player_id":"p{i}"}}"#, i % 100 + 1))
        .chain((0..30).map(|i| format!(r#"{{"event_type":"join_guild","guild_id":{i},"name":"Knights"}}"#)))
        .collect::<Vec<_>>()
        .join("\n");
    let r = server.post("/v1/events", &[("Content-Type", "application/x-ndjson")], events.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 80, "{}", r.text());
    // The server's projector makes the table; `sql` beside the running server reads it
    // (the log is the server's: the tables' registered types come from the projector's copy).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = questlog(&data, &["sql", "select count(*) as n from level_up", "--format", "csv"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.lines().nth(1) == Some("50") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "level_up never reached 50 rows: {text} {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server.stop();
    let verified = questlog_ok(&data, &["verify"]);
    assert!(verified.starts_with("ok:"), "{verified}");
}
