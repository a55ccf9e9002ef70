//! Events of registered types (docs/CONTRACT.md 13.5) through the real binary: refused
//! before their schema is registered, accepted after it without a restart, checked with
//! the seed's rejection reasons, kept in the log and replayed with their values, still
//! known after a restart, and registered at start with `serve --schemas DIR`.

mod common;

use common::*;

const META: &str = "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#";

fn level_up(version: &str, extra: &str) -> String {
    format!(
        r#"{{"$schema": "{META}",
  "self": {{"vendor": "com.example.game", "name": "level_up", "format": "jsonschema", "version": "{version}"}},
  "type": "object",
  "properties": {{"level": {{"type": "integer", "minimum": 1, "maximum": 100}},
                 "class": {{"type": "string", "enum": ["warrior", "mage"]}},
                 "reached_at": {{"type": "string", "format": "date-time"}},
                 "won": {{"type": "boolean"}},
                 "loadout": {{"type": "object"}}{extra}}},
  "required": ["level", "class"]}}"#
    )
}

fn post_events(server: &Server, body: &str) -> serde_json::Value {
    let r = server.post("/v1/events", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn metric(server: &Server, line_start: &str) -> Option<u64> {
    server.get("/metrics").text().lines().find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn a_type_registered_while_serve_runs_takes_events_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    let event = r#"{"event_type":"level_up","level":5,"class":"mage","player_id":"p-1","loadout":{"sword":2},"extra":"kept in raw_event"}"#;

    // Before: unknown, and the answer lists the types there are; the seed-style route
    // does not exist for it.
    let before = post_events(&server, event);
    assert_eq!(before["accepted"], 0, "{before}");
    assert_eq!(before["rejected"][0]["reason"], "unknown_event_type", "{before}");
    assert!(
        before["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .ends_with("expected one of join_guild, kill_enemy, accept_quest, take_damage, buy_asset"),
        "{before}"
    );
    assert_eq!(server.get("/level_up?level=5&class=mage").status, 404);
    let spec = server.get("/openapi.json").json();
    assert!(spec["components"]["schemas"].get("Event_level_up").is_none() && spec["paths"].get("/level_up").is_none());

    // Registered through the running server: in force from the next offset.
    let r = server.post("/v1/schemas", &[("Content-Type", "application/json")], level_up("1-0-0", "").as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let from_offset = r.json()["from_offset"].as_u64().unwrap();
    // The OpenAPI document follows: the type's own schema, among Event's oneOf, and its route.
    let spec = server.get("/openapi.json").json();
    let described = &spec["components"]["schemas"]["Event_level_up"];
    assert_eq!(described["required"], serde_json::json!(["event_type", "level", "class"]), "{described}");
    assert_eq!(described["properties"]["level"], serde_json::json!({"type": "integer", "minimum": 1, "maximum": 100}));
    assert_eq!(spec["components"]["schemas"]["Event"]["discriminator"]["mapping"]["level_up"], "#/components/schemas/Event_level_up");
    assert_eq!(spec["paths"]["/level_up"]["parameters"][0]["name"], "level");

    // After: accepted at or past that offset, with no restart.
    let after = post_events(&server, event);
    assert_eq!(after["accepted"], 1, "{after}");
    assert!(after["first_offset"].as_u64().unwrap() >= from_offset, "{after}");
    // The seed's reasons and field names.
    let bad = post_events(
        &server,
        r#"[{"event_type":"level_up","level":101,"class":"mage"},
            {"event_type":"level_up","level":3},
            {"event_type":"level_up","level":3,"class":"rogue"},
            {"event_type":"level_up","level":3,"class":"mage","reached_at":"yesterday"},
            {"event_type":"level_up","level":3,"class":"mage","won":"yes"},
            {"event_type":"level_up","level":-1,"class":"mage"},
            {"event_type":"level_up","level":3,"class":"mage","log_offset":1}]"#,
    );
    let reasons: Vec<(&str, &str)> =
        bad["rejected"].as_array().unwrap().iter().map(|r| (r["reason"].as_str().unwrap(), r["field"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        reasons,
        [
            ("out_of_range", "level"),
            ("missing_field", "class"),
            ("out_of_range", "class"),
            ("bad_time", "reached_at"),
            ("wrong_type", "won"),
            ("negative", "level"),
            ("server_owned_field", "log_offset"),
        ],
        "{bad}"
    );
    // The unknown type's message now lists it.
    let other = post_events(&server, r#"{"event_type":"match_end"}"#);
    assert!(other["rejected"][0]["error"].as_str().unwrap().ends_with("buy_asset, level_up"), "{other}");

    // The seed-style route takes it, parameters read by their columns.
    let r = server.get("/level_up?level=9&class=warrior&won=true&loadout=%7B%22bow%22%3A1%7D&reached_at=2026-01-01T00:00:00Z");
    assert_eq!(r.status, 200, "{}", r.text());

    // An ADDITION: the new property is taken from its record on.
    let r = server.post("/v1/schemas", &[], level_up("1-0-1", r#", "zone": {"type": "string", "maxLength": 16}"#).as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["evolution"], "addition");
    assert_eq!(post_events(&server, r#"{"event_type":"level_up","level":12,"class":"mage","zone":"north"}"#)["accepted"], 1);
    let too_long = post_events(&server, r#"{"event_type":"level_up","level":12,"class":"mage","zone":"a zone far too long"}"#);
    assert_eq!(too_long["rejected"][0]["reason"], "string_too_long", "{too_long}");
    // Absent is not null: `zone` may be left out, but null is not among its types.
    let null = post_events(&server, r#"{"event_type":"level_up","level":12,"class":"mage","zone":null}"#);
    assert_eq!((&null["rejected"][0]["reason"], &null["rejected"][0]["field"]), (&"wrong_type".into(), &"zone".into()), "{null}");
    // Seed traffic is untouched.
    assert_eq!(post_events(&server, r#"{"event_type":"join_guild","guild_id":1,"name":"K"}"#)["accepted"], 1);

    assert_eq!(metric(&server, "questlog_events_accepted_total{event_type=\"level_up\"}"), Some(3));
    assert_eq!(metric(&server, "questlog_events_rejected_total{event_type=\"level_up\",reason=\"out_of_range\"}"), Some(2));
    assert_eq!(metric(&server, "questlog_events_rejected_total{event_type=\"unknown\",reason=\"unknown_event_type\"}"), Some(2));

    // Replay through the server: each event's declared properties in column order, null
    // when absent, values as their columns hold them.
    let lines: Vec<serde_json::Value> = server.get("/v1/replay?from=0").text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let custom: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event_type"] == "level_up").collect();
    assert_eq!(custom.len(), 3);
    let first = custom[0];
    let keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).take(7).collect();
    assert_eq!(keys, ["log_offset", "event_type", "level", "class", "reached_at", "won", "loadout"], "{first}");
    assert_eq!((first["level"].as_i64(), first["class"].as_str(), first["won"].is_null()), (Some(5), Some("mage"), true), "{first}");
    assert_eq!(first["loadout"], serde_json::json!({"sword": 2}));
    assert_eq!(first["raw_event"], event, "raw_event keeps what was sent, undeclared members too");
    assert_eq!(first["player_id"], "p-1");
    assert!(first.get("zone").is_none(), "an event checked against 1-0-0 has no zone: {first}");
    let seed_style = custom[1];
    assert_eq!(
        (&seed_style["won"], &seed_style["loadout"], &seed_style["reached_at"]),
        (&serde_json::json!(true), &serde_json::json!({"bow": 1}), &serde_json::json!("2026-01-01T00:00:00.000000Z")),
        "{seed_style}"
    );
    assert_eq!(custom[2]["zone"], "north");
    // The live page counts the type beside the seed's.
    let live = server.get("/v1/live").json();
    let types: Vec<&str> = live["event_types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(types, ["join_guild", "kill_enemy", "accept_quest", "take_damage", "buy_asset", "level_up"], "{live}");
    assert_eq!(live["accepted_total"][5], 3);
    assert_eq!(live["accepted_total"][0], 1);
    assert_eq!(live["rejected_total"], 11, "one unknown before, seven in the batch, one unknown after, one too long, one null");
    server.stop();

    // Offline, the log replays the same lines; a new server knows the type from the log.
    let offline = replay_lines(&data);
    assert_eq!(offline, lines);
    let server = Server::start(&data);
    assert_eq!(post_events(&server, r#"{"event_type":"level_up","level":1,"class":"warrior","zone":"x"}"#)["accepted"], 1);
    server.stop();
    // The log is whole and its seed tables a projection of it.
    questlog_ok(&data, &["project"]);
    let verified = questlog_ok(&data, &["verify"]);
    assert!(verified.starts_with("ok: log holds 5 records"), "{verified}");
}

#[test]
fn serve_registers_a_directory_of_schemas_at_start_all_or_none() {
    let tmp = tempfile::tempdir().unwrap();
    let schemas = tmp.path().join("schemas");
    std::fs::create_dir(&schemas).unwrap();
    std::fs::write(schemas.join("a-level_up-1-0-0.json"), level_up("1-0-0", "")).unwrap();
    std::fs::write(schemas.join("b-level_up-1-0-1.json"), level_up("1-0-1", r#", "zone": {"type": "string"}"#)).unwrap();
    std::fs::write(schemas.join("README.md"), "not a schema").unwrap();

    // A refused file among them: serve does not start and records nothing.
    let bad_dir = tmp.path().join("bad");
    std::fs::create_dir(&bad_dir).unwrap();
    std::fs::write(bad_dir.join("a.json"), level_up("1-0-0", "")).unwrap();
    std::fs::write(bad_dir.join("b.json"), level_up("1-0-1", "").replace(r#""minimum": 1"#, r#""minimum": 5"#)).unwrap();
    let data = tmp.path().join("data");
    let out = questlog(&data, &["serve", "--listen", "127.0.0.1:0", "--schemas", bad_dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("RANGE_NARROWED level"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was recorded"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        questlog_ok(&data, &["schema", "history"]).starts_with("the log has no schema of its own"),
        "a refused directory records nothing"
    );

    let server = Server::start_with(&data, &["--schemas", schemas.to_str().unwrap()]);
    let r = post_events(&server, r#"{"event_type":"level_up","level":2,"class":"mage","zone":"z"}"#);
    assert_eq!(r["accepted"], 1, "{r}");
    server.stop();
    // Again with the same directory: the log has them, nothing is recorded twice.
    let server = Server::start_with(&data, &["--schemas", schemas.to_str().unwrap()]);
    server.stop();
    assert_eq!(questlog_ok(&data, &["schema", "history"]).lines().count(), 2);
    assert!(replay_lines(&data).iter().any(|l| l["zone"] == "z"));
}

/// `generate --schema`: the schemas recorded before the events, a documented share of
/// events of those types, each valid, and the same bytes for the same seed and schemas.
#[test]
fn generate_mixes_registered_types_into_the_seeded_traffic_reproducibly() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("level_up.json");
    std::fs::write(&schema, level_up("1-0-1", r#", "zone": {"type": ["string", "null"], "maxLength": 8}"#)).unwrap();
    let run = |dir: &str| {
        let data = tmp.path().join(dir);
        let out = questlog_ok(
            &data,
            &["generate", "--seed", "5", "--events", "4000", "--schema", schema.to_str().unwrap(), "--custom-share", "25"],
        );
        assert!(out.contains("recorded") && out.contains("generated 4000 events"), "{out}");
        data
    };
    let (a, b) = (run("a"), run("b"));
    let lines = replay_lines(&a);
    assert_eq!(lines, replay_lines(&b), "the same seed and schema give the same log");
    let custom: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event_type"] == "level_up").collect();
    assert!((800..1200).contains(&custom.len()), "{} of 4000 at 25%", custom.len());
    for l in &custom {
        let level = l["level"].as_i64().unwrap();
        assert!((1..=100).contains(&level), "{l}");
        assert!(["warrior", "mage"].contains(&l["class"].as_str().unwrap()), "{l}");
        assert!(l["zone"].is_null() || l["zone"].as_str().unwrap().chars().count() <= 8, "{l}");
        assert!(l["player_id"].as_str().unwrap().starts_with("p-"), "{l}");
        // raw_event is the event as a client sends it: it checks again to the same values.
        let raw: serde_json::Value = serde_json::from_str(l["raw_event"].as_str().unwrap()).unwrap();
        assert_eq!(raw["level"], l["level"]);
    }
    assert!(custom.iter().any(|l| l["zone"].is_string()) && custom.iter().any(|l| l["zone"].is_null()));
    assert!(questlog_ok(&a, &["schema", "history"]).contains("level_up/jsonschema/1-0-1"));
    // Without --schema the seed's traffic is what it always was.
    let plain = tmp.path().join("plain");
    questlog_ok(&plain, &["generate", "--seed", "5", "--events", "50"]);
    assert!(replay_lines(&plain).iter().all(|l| l["event_type"] != "level_up"));
    let bad = questlog(
        &tmp.path().join("c"),
        &["generate", "--seed", "5", "--events", "5", "--schema", schema.to_str().unwrap(), "--custom-share", "0"],
    );
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("give 1 to 100"));
}

#[test]
fn serve_infer_schemas_makes_types_from_events_adds_properties_and_rejects_a_changed_type() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start_with(&data, &["--infer-schemas"]);
    let first = r#"{"event_type":"boss_defeated","event_id":"b-1","player_id":"p-1","boss":"dragon","damage":1200,"dps":35.5,"crit":true,"note":null,"$lib":"web"}"#;
    let answer = post_events(&server, first);
    assert_eq!(answer["accepted"], 1, "{answer}");
    let schemas = server.get("/v1/schemas").json();
    let inferred: Vec<&serde_json::Value> =
        schemas["registered"].as_array().unwrap().iter().filter(|s| s["name"] == "boss_defeated").collect();
    assert_eq!(inferred.len(), 1, "{schemas}");
    assert_eq!(inferred[0]["uri"], "iglu:questlog.inferred/boss_defeated/jsonschema/1-0-0");
    let props = inferred[0]["schema"]["properties"].as_object().unwrap();
    assert_eq!(props.keys().map(String::as_str).collect::<Vec<_>>(), ["boss", "damage", "dps", "crit"], "null and `$lib` are not declared");
    assert_eq!(props["damage"]["type"], serde_json::json!(["integer", "null"]));

    // A new property: an ADDITION, in force for the event that brought it; a value of
    // another type than the first: wrong_type, kept with its id; the types stay as they were.
    let batch = r#"[{"event_type":"boss_defeated","event_id":"b-2","player_id":"p-2","boss":"lich","damage":80,"phase":2},
                    {"event_type":"boss_defeated","event_id":"b-3","player_id":"p-3","boss":"lich","damage":"lots"},
                    {"event_type":"boss_defeated","event_id":"b-4","player_id":"p-4","boss":"imp","damage":3,"dps":4}]"#;
    let answer = post_events(&server, batch);
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!((&answer["rejected"][0]["index"], &answer["rejected"][0]["reason"]), (&1.into(), &"wrong_type".into()), "{answer}");
    let rejected = server.get("/v1/rejected").text();
    assert!(rejected.lines().any(|l| l.contains(r#"\"b-3\""#) && l.contains("wrong_type")), "{rejected}");
    let history: Vec<String> =
        server.get("/v1/schemas").json()["registered"].as_array().unwrap().iter().map(|s| s["uri"].as_str().unwrap().to_string()).collect();
    assert_eq!(history, ["iglu:questlog.inferred/boss_defeated/jsonschema/1-0-0", "iglu:questlog.inferred/boss_defeated/jsonschema/1-0-1"]);

    // Through an SDK route: a Segment event name becomes a type; a seed type and a type
    // registered by hand never change.
    let segment = r#"{"batch":[{"type":"track","event":"Quest Failed","userId":"p-5","messageId":"s-1","properties":{"quest":"q9","tries":3}},
                               {"type":"track","event":"Join Guild","userId":"p-5","messageId":"s-2","properties":{"guild_id":4,"name":"K","motto":"new"}}]}"#;
    let r = server.post("/v1/batch", &[("Content-Type", "application/json")], segment.as_bytes());
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (200, Some(2)), "{}", r.text());
    let r = server.post("/v1/schemas", &[("Content-Type", "application/json")], level_up("1-0-0", "").as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = post_events(&server, r#"{"event_type":"level_up","level":5,"class":"mage","zone":"north"}"#);
    assert_eq!(answer["accepted"], 1, "{answer}");
    let names: Vec<String> =
        server.get("/v1/schemas").json()["registered"].as_array().unwrap().iter().map(|s| s["uri"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 4, "boss_defeated twice, quest_failed, level_up as registered: {names:?}");
    assert!(names.contains(&"iglu:questlog.inferred/quest_failed/jsonschema/1-0-0".to_string()), "{names:?}");
    assert_eq!(metric(&server, "questlog_schemas_inferred_total"), Some(3));
    server.stop();

    // The tables: the inferred types' rows, the ADDITION's column null before it.
    questlog_ok(&data, &["project"]);
    let rows = questlog_ok(
        &data,
        &["sql", "select event_id, boss, damage, dps, crit, phase from boss_defeated order by event_id", "--format", "csv"],
    );
    assert_eq!(rows.trim(), "event_id,boss,damage,dps,crit,phase\nb-1,dragon,1200,35.5,true,\nb-2,lich,80,,,2\nb-4,imp,3,4.0,,", "{rows}");
    let rows = questlog_ok(&data, &["sql", "select player_id, quest, tries from quest_failed", "--format", "csv"]);
    assert_eq!(rows.trim(), "player_id,quest,tries\np-5,q9,3");
    assert!(questlog_ok(&data, &["verify"]).starts_with("ok"));

    // Off by default.
    let server = Server::start(&data);
    let answer = post_events(&server, r#"{"event_type":"dragon_tamed","dragon":"x"}"#);
    assert_eq!(answer["rejected"][0]["reason"], "unknown_event_type", "{answer}");
    server.stop();
}

#[test]
fn infer_schemas_is_bounded_per_request_and_by_the_logs_table_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--infer-schemas"]);
    // 20 new names in one request: 16 become types, the rest wait for a later request.
    let batch: Vec<String> = (0..20).map(|i| format!(r#"{{"event_type":"t{i:03}","x":{i}}}"#)).collect();
    let answer = post_events(&server, &format!("[{}]", batch.join(",")));
    assert_eq!(answer["accepted"], 16, "{answer}");
    assert!(answer["rejected"].as_array().unwrap().iter().all(|r| r["reason"] == "unknown_event_type"), "{answer}");
    assert_eq!(post_events(&server, &format!("[{}]", batch.join(",")))["accepted"], 20);
    // Up to the log's 256 tables; past them a new name is refused, counted, and its events
    // rejected; known types still take events.
    let mut next = 20;
    while next < 256 {
        let batch: Vec<String> = (next..(next + 16).min(256)).map(|i| format!(r#"{{"event_type":"t{i:03}","x":{i}}}"#)).collect();
        let answer = post_events(&server, &format!("[{}]", batch.join(",")));
        assert_eq!(answer["accepted"], batch.len(), "{answer}");
        next += batch.len();
    }
    let answer = post_events(&server, r#"[{"event_type":"one_too_many","x":1},{"event_type":"t000","x":2}]"#);
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"][0]["reason"], "unknown_event_type", "{answer}");
    assert_eq!(metric(&server, "questlog_schemas_inferred_total"), Some(256));
    assert_eq!(metric(&server, "questlog_schema_inferences_refused_total"), Some(1));
    // A refused name is not tried again; `i` (a route) never becomes a type.
    let answer = post_events(&server, r#"[{"event_type":"one_too_many","x":1},{"event_type":"i","x":1}]"#);
    assert_eq!(answer["accepted"], 0, "{answer}");
    assert_eq!(metric(&server, "questlog_schema_inferences_refused_total"), Some(1));
    server.stop();
}
