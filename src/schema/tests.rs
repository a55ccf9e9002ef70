use super::*;

/// A schema of `vendor`/`name` at `version` with these properties (name → property schema)
/// and required names.
fn doc(name: &str, version: &str, props: &[(&str, Value)], required: &[&str]) -> String {
    let mut properties = Map::new();
    for (n, p) in props {
        properties.insert(n.to_string(), p.clone());
    }
    serde_json::json!({
        "$schema": IGLU_META_SCHEMA,
        "self": {"vendor": "com.example.game", "name": name, "format": "jsonschema", "version": version},
        "type": "object",
        "properties": properties,
        "required": required,
    })
    .to_string()
}

fn parse(s: &str) -> Schema {
    Schema::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn err(s: &str) -> String {
    Schema::parse(s.as_bytes()).expect_err(s).to_string()
}

fn level_up(version: &str, extra: &[(&str, Value)]) -> Schema {
    let mut props = vec![
        ("level", serde_json::json!({"type": "integer", "minimum": 1, "maximum": 100})),
        ("class", serde_json::json!({"type": "string", "enum": ["warrior", "mage"]})),
        ("xp", serde_json::json!({"type": "integer", "minimum": 0})),
    ];
    props.extend(extra.iter().cloned());
    parse(&doc("level_up", version, &props, &["level", "class"]))
}

#[test]
fn properties_map_to_column_types_by_type_range_and_format() {
    let s = parse(&doc(
        "match_end",
        "1-0-0",
        &[
            ("small", serde_json::json!({"type": "integer", "minimum": -32768, "maximum": 32767})),
            ("int", serde_json::json!({"type": "integer", "minimum": 0, "maximum": 32768})),
            ("big", serde_json::json!({"type": "integer", "minimum": 0})),
            ("unbounded", serde_json::json!({"type": "integer"})),
            ("ratio", serde_json::json!({"type": "number"})),
            ("cost", serde_json::json!({"type": "number", "format": "float", "minimum": 0})),
            ("map", serde_json::json!({"type": "string", "maxLength": 32})),
            ("ended_at", serde_json::json!({"type": "string", "format": "date-time"})),
            ("won", serde_json::json!({"type": ["boolean", "null"]})),
            ("loadout", serde_json::json!({"type": "object", "description": "kept as JSON text"})),
            ("kills", serde_json::json!({"type": "array"})),
        ],
        &["small", "won"],
    ));
    let cols: Vec<(&str, ColumnType, bool)> = s.properties.iter().map(|p| (p.name.as_str(), p.column, p.nullable())).collect();
    use ColumnType::*;
    assert_eq!(
        cols,
        [
            ("small", SmallInt, false),
            ("int", Int, true),
            ("big", BigInt, true),
            ("unbounded", BigInt, true),
            ("ratio", Double, true),
            ("cost", Float, true),
            ("map", String, true),
            ("ended_at", Timestamp, true),
            ("won", Boolean, true),
            ("loadout", Json, true),
            ("kills", Json, true),
        ]
    );
    assert_eq!(s.property("big").unwrap().int_range, Some((0, i64::MAX)));
    assert_eq!(s.table_name(), "match_end");
    assert_eq!(s.uri(), "iglu:com.example.game/match_end/jsonschema/1-0-0");
}

#[test]
fn the_canonical_form_sorts_keys_and_ignores_whitespace() {
    let a = parse(&doc("level_up", "1-0-0", &[("level", serde_json::json!({"type": "integer", "minimum": 1}))], &[]));
    let reordered = format!(
        r#"{{ "type": "object", "required": [],
             "properties": {{"level": {{"minimum": 1, "type": "integer"}}}},
             "self": {{"version": "1-0-0", "format": "jsonschema", "name": "level_up", "vendor": "com.example.game"}},
             "$schema": "{IGLU_META_SCHEMA}" }}"#
    );
    let b = parse(&reordered);
    assert_eq!(a.canonical(), b.canonical());
    assert_eq!(a.hash(), b.hash());
    assert!(a.hash().starts_with("sha256:") && a.hash().len() == 71);
    assert!(!a.canonical().contains(' '));
    let c = parse(&doc("level_up", "1-0-0", &[("level", serde_json::json!({"type": "integer", "minimum": 2}))], &[]));
    assert_ne!(a.hash(), c.hash());
    // The properties keep their order (the columns'), through the canonical form too.
    let ab = parse(&doc(
        "level_up",
        "1-0-0",
        &[("zeta", serde_json::json!({"type": "integer"})), ("alpha", serde_json::json!({"type": "string"}))],
        &[],
    ));
    let ba = parse(&doc(
        "level_up",
        "1-0-0",
        &[("alpha", serde_json::json!({"type": "string"})), ("zeta", serde_json::json!({"type": "integer"}))],
        &[],
    ));
    assert_ne!(ab.hash(), ba.hash(), "another column order is another schema");
    let again = parse(ab.canonical());
    let names: Vec<&str> = again.properties.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha"]);
    assert_eq!(again.canonical(), ab.canonical());
    // A record is read back only under the hash it was recorded with.
    assert_eq!(Schema::from_record(ab.canonical().as_bytes(), &ab.hash()).unwrap().canonical(), ab.canonical());
    assert!(matches!(Schema::from_record(ab.canonical().as_bytes(), &ba.hash()), Err(SchemaError::Record { .. })));
    assert!(ab.canonical().find("\"type\":\"integer\"").unwrap() < ab.canonical().find("\"type\":\"string\"").unwrap());
}

#[test]
fn bad_documents_are_refused_with_where_and_why() {
    let base = |props: &[(&str, Value)]| doc("level_up", "1-0-0", props, &[]);
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "not JSON"),
        ("[]".into(), "a schema is a JSON object"),
        (base(&[("level", serde_json::json!({"type": "integer", "exclusiveMinimum": 0}))]), "unsupported keyword `exclusiveMinimum`"),
        (base(&[("level", serde_json::json!({"type": "integer", "maxLength": 3}))]), "applies to string only, not integer"),
        (base(&[("level", serde_json::json!({"type": "decimal"}))]), "`decimal` is not a supported type"),
        (base(&[("level", serde_json::json!({"type": ["integer", "string"]}))]), "one type, or one type and \"null\""),
        (base(&[("level", serde_json::json!({"type": "integer", "minimum": 5, "maximum": 1}))]), "minimum 5 is above maximum 1"),
        (base(&[("level", serde_json::json!({"type": "integer", "maximum": 1e300}))]), "an integer within 64 bits"),
        (base(&[("when", serde_json::json!({"type": "string", "format": "email"}))]), "a string takes `date-time` only"),
        (base(&[("name", serde_json::json!({"type": "string", "maxLength": 5000}))]), "5000 characters"),
        (base(&[("class", serde_json::json!({"type": "string", "enum": ["a", "a"]}))]), "`a` twice"),
        (base(&[("class", serde_json::json!({"type": "string", "enum": []}))]), "values (at least 1)"),
        (base(&[("Level", serde_json::json!({"type": "integer"}))]), "a column name"),
        (base(&[("player_id", serde_json::json!({"type": "string"}))]), "`player_id` is reserved"),
        (base(&[("raw_event", serde_json::json!({"type": "string"}))]), "`raw_event` is reserved"),
        (doc("level_up", "1-0-0", &[], &["level"]), "`level` is not among the properties"),
        (doc("Level-Up", "1-0-0", &[], &[]), "the event_type and table name"),
        (doc("healthz", "1-0-0", &[], &[]), "`healthz` is reserved"),
        (doc("level_up", "0-1-0", &[], &[]), "MODEL-REVISION-ADDITION"),
        (doc("level_up", "1-0", &[], &[]), "MODEL-REVISION-ADDITION"),
        (doc("level_up", "1-01-0", &[], &[]), "MODEL-REVISION-ADDITION"),
        (doc("level_up", "1-0-0", &[], &[]).replace(IGLU_META_SCHEMA, "http://json-schema.org/draft-07/schema#"), "use Iglu's"),
        (doc("level_up", "1-0-0", &[], &[]).replace("\"type\":\"object\"", "\"type\":\"array\""), "an event is an object"),
        (
            doc("level_up", "1-0-0", &[], &[]).replace("\"type\":\"object\"", "\"type\":\"object\",\"additionalProperties\":false"),
            "kept in raw_event",
        ),
        (doc("level_up", "1-0-0", &[], &[]).replace("\"format\":\"jsonschema\"", "\"format\":\"avro\""), "must be `jsonschema`"),
        (format!("{{\"x\": \"{}\"}}", "a".repeat(MAX_SCHEMA_BYTES)), "over the 65536-byte limit"),
    ];
    for (text, want) in cases {
        let got = err(&text);
        assert!(got.contains(want), "{text}\n  refused with: {got}\n  expected it to say: {want}");
    }
    let many: Vec<(String, Value)> = (0..=MAX_PROPERTIES).map(|i| (format!("p{i}"), serde_json::json!({"type": "integer"}))).collect();
    let many: Vec<(&str, Value)> = many.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    assert!(err(&base(&many)).contains("49 properties, over the limit of 48"));
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    assert!(err(&base(&[("level", serde_json::json!({"type": "integer", "examples": serde_json::from_str::<Value>(&deep).unwrap()}))]))
        .contains("levels of nesting"));
}

#[test]
fn an_addition_evolves_the_same_table() {
    let v1 = level_up("1-0-0", &[]);
    assert_eq!(check_against(&[], &v1), Ok(Evolution::NewTable));
    let v2 = level_up("1-0-1", &[("zone", serde_json::json!({"type": "string"}))]);
    assert_eq!(check_against(std::slice::from_ref(&v1), &v2), Ok(Evolution::Addition { added: vec!["zone".into()] }));
    // Wider bounds, a longer enum and annotations keep the table as it is.
    let wider = parse(&doc(
        "level_up",
        "1-1-0",
        &[
            ("level", serde_json::json!({"type": "integer", "minimum": 0, "maximum": 200, "description": "now up to 200"})),
            ("class", serde_json::json!({"type": "string", "enum": ["warrior", "mage", "rogue"]})),
            ("xp", serde_json::json!({"type": "integer", "minimum": 0})),
            ("zone", serde_json::json!({"type": "string"})),
        ],
        &["level", "class"],
    ));
    assert_eq!(check_against(&[v1.clone(), v2.clone()], &wider), Ok(Evolution::Addition { added: vec![] }));
    // The same version again: nothing to record; with another content: refused.
    assert_eq!(check_against(std::slice::from_ref(&v1), &v1), Ok(Evolution::Unchanged));
    let other = level_up("1-0-0", &[("zone", serde_json::json!({"type": "string"}))]);
    assert!(matches!(check_against(std::slice::from_ref(&v1), &other), Err(EvolutionError::VersionTaken { .. })));
    let older = level_up("1-0-0", &[]);
    assert!(matches!(check_against(std::slice::from_ref(&v2), &older), Err(EvolutionError::VersionNotNewer { .. })));
    let v0 = parse(&doc("level_up", "1-0-1", &[("level", serde_json::json!({"type": "integer", "minimum": 1, "maximum": 100}))], &[]));
    assert!(matches!(check_against(std::slice::from_ref(&wider), &v0), Err(EvolutionError::VersionNotNewer { .. })));
}

#[test]
fn each_incompatible_change_is_refused_by_name() {
    let v1 = level_up("1-0-0", &[]);
    fn props(level: Value, class: Value, xp: Option<Value>, extra: &[(&'static str, Value)]) -> Vec<(&'static str, Value)> {
        let mut p = vec![("level", level), ("class", class)];
        if let Some(xp) = xp {
            p.push(("xp", xp));
        }
        p.extend(extra.iter().cloned());
        p
    }
    let level = serde_json::json!({"type": "integer", "minimum": 1, "maximum": 100});
    let class = serde_json::json!({"type": "string", "enum": ["warrior", "mage"]});
    let xp = serde_json::json!({"type": "integer", "minimum": 0});
    let cases: Vec<(Vec<(&str, Value)>, Vec<&str>, &str)> = vec![
        (props(level.clone(), class.clone(), None, &[]), vec!["level", "class"], "PROPERTY_REMOVED xp"),
        (props(level.clone(), class.clone(), None, &[("experience", xp.clone())]), vec!["level", "class"], "PROPERTY_REMOVED xp"),
        (
            props(serde_json::json!({"type": "string"}), class.clone(), Some(xp.clone()), &[]),
            vec!["level", "class"],
            "TYPE_CHANGED level: integer (SMALLINT) → string (STRING)",
        ),
        (
            props(serde_json::json!({"type": "integer", "minimum": 1, "maximum": 100000}), class.clone(), Some(xp.clone()), &[]),
            vec!["level", "class"],
            "TYPE_CHANGED level: integer (SMALLINT) → integer (INT)",
        ),
        (
            props(serde_json::json!({"type": "integer", "minimum": 1, "maximum": 50}), class.clone(), Some(xp.clone()), &[]),
            vec!["level", "class"],
            "RANGE_NARROWED level: 1..100 → 1..50",
        ),
        (
            props(level.clone(), serde_json::json!({"type": "string", "enum": ["warrior"]}), Some(xp.clone()), &[]),
            vec!["level", "class"],
            "ENUM_NARROWED class: mage removed",
        ),
        (props(level.clone(), class.clone(), Some(xp.clone()), &[]), vec!["level", "class", "xp"], "REQUIRED_ADDED xp"),
        (
            props(level.clone(), class.clone(), Some(xp.clone()), &[("zone", serde_json::json!({"type": "string"}))]),
            vec!["level", "class", "zone"],
            "REQUIRED_ADDED zone",
        ),
        (props(level.clone(), class.clone(), Some(xp.clone()), &[]), vec!["level"], "REQUIRED_DROPPED class"),
        (
            props(serde_json::json!({"type": ["integer", "null"], "minimum": 1, "maximum": 100}), class.clone(), Some(xp.clone()), &[]),
            vec!["level", "class"],
            "NULL_ADDED level",
        ),
    ];
    for (p, required, want) in cases {
        let new = parse(&doc("level_up", "1-0-1", &p, &required));
        let got = check_against(std::slice::from_ref(&v1), &new).expect_err(want).to_string();
        assert!(got.contains(want), "refused with: {got}\n  expected: {want}");
        assert!(got.contains("needs a new MODEL version"), "{got}");
        // As a new MODEL it is a table of its own.
        let model2 = parse(&doc("level_up", "2-0-0", &p, &required));
        assert_eq!(check_against(std::slice::from_ref(&v1), &model2), Ok(Evolution::NewTable));
        assert_eq!(model2.table_name(), "level_up_2");
    }
    // Every earlier version of the model is checked, not only the newest.
    let v2 = level_up("1-0-1", &[("zone", serde_json::json!({"type": "string", "maxLength": 40}))]);
    let narrower = level_up("1-0-2", &[("zone", serde_json::json!({"type": "string", "maxLength": 20}))]);
    let got = check_against(&[v1, v2], &narrower).unwrap_err().to_string();
    assert!(got.contains("MAX_LENGTH_NARROWED zone: 40 → 20"), "{got}");
}

#[test]
fn names_taken_by_the_builtins_or_another_type_are_refused() {
    let own = |text: String| check_against(&[], &parse(&text)).unwrap_err().to_string();
    assert!(own(doc("join_guild", "1-0-0", &[], &[])).contains("one of the seed's built-in types"));
    assert!(own(doc("transactions", "1-0-0", &[], &[])).contains("a built-in table's name or directory"));
    assert!(own(doc("enemies_killed", "1-0-0", &[], &[])).contains("a built-in table's name or directory"));
    assert!(own(doc("level_up", "1-0-0", &[], &[]).replace("com.example.game", "io.questlog")).contains("questlog's own"));
    let a = parse(&doc("level_up", "1-0-0", &[], &[]));
    let b = parse(&doc("level_up", "1-0-0", &[], &[]).replace("com.example.game", "com.other"));
    assert!(check_against(std::slice::from_ref(&a), &b).unwrap_err().to_string().contains("already `com.example.game`'s"));
    let model2 = parse(&doc("level_up", "2-0-0", &[], &[]));
    let squatter = parse(&doc("level_up_2", "1-0-0", &[], &[]));
    assert!(check_against(&[a, model2], &squatter).unwrap_err().to_string().contains("already the table of"));
    // `i` (Snowplow's GET /i) is refused for a new type, while a log that registered it
    // before reads its record and may evolve it.
    let i = parse(&doc("i", "1-0-0", &[], &[]));
    assert!(check_against(&[], &i).unwrap_err().to_string().contains("Snowplow's GET /i"));
    assert_eq!(Schema::from_record(i.canonical().as_bytes(), &i.hash()).as_ref(), Ok(&i));
    let i_next = parse(&doc("i", "1-0-1", &[("x", serde_json::json!({"type": "integer"}))], &[]));
    assert_eq!(check_against(std::slice::from_ref(&i), &i_next), Ok(Evolution::Addition { added: vec!["x".into()] }));
}

#[test]
fn the_builtin_schemas_parse_and_describe_the_seed_fields() {
    let all = builtin::schemas();
    assert_eq!(all.len(), 5);
    for (s, (name, _)) in all.iter().zip(builtin::DOCUMENTS) {
        assert_eq!(s.name, name);
        assert_eq!(s.vendor, builtin::VENDOR);
        assert_eq!(s.version, Version { model: 1, revision: 0, addition: 0 });
        assert!(s.properties.iter().all(|p| p.required && !p.nullable()), "{name}: every seed field is required, NOT NULL");
    }
    let buy = builtin::schema("buy_asset").unwrap();
    let cols: Vec<(&str, ColumnType)> = buy.properties.iter().map(|p| (p.name.as_str(), p.column)).collect();
    use ColumnType::*;
    assert_eq!(
        cols,
        [
            ("store_id", BigInt),
            ("item_name", String),
            ("inventory_id", BigInt),
            ("total_cost", Float),
            ("category", String),
            ("on_hand_qty", SmallInt)
        ]
    );
    assert!(builtin::schema("level_up").is_none());
}

#[test]
fn a_log_takes_at_most_max_registered_tables() {
    let full: Vec<Schema> = (0..MAX_REGISTERED_TABLES)
        .map(|i| parse(&doc(&format!("t{i}"), "1-0-0", &[("level", serde_json::json!({"type": "integer"}))], &[])))
        .collect();
    let one_more = parse(&doc("late", "1-0-0", &[("level", serde_json::json!({"type": "integer"}))], &[]));
    assert!(matches!(check_against(&full, &one_more), Err(EvolutionError::TooManyTables { max: MAX_REGISTERED_TABLES, .. })));
    // A new version of a table already there needs no new table.
    let addition = parse(&doc(
        "t0",
        "1-0-1",
        &[("level", serde_json::json!({"type": "integer"})), ("zone", serde_json::json!({"type": "string"}))],
        &[],
    ));
    assert!(matches!(check_against(&full, &addition), Ok(Evolution::Addition { .. })));
    // A new model does.
    let model2 = parse(&doc("t0", "2-0-0", &[("level", serde_json::json!({"type": "string"}))], &[]));
    assert!(matches!(check_against(&full, &model2), Err(EvolutionError::TooManyTables { .. })));
    assert!(check_against(&full[1..], &one_more).is_ok());
}
