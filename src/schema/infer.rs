//! Event types inferred from events (`serve --infer-schemas`, docs/CONTRACT.md 13.8): the
//! schema of an unknown event name made from its first events' values, and the ADDITION
//! of a property an inferred type has not seen before, as Segment's and PostHog's
//! warehouses type their columns from the values they receive. No I/O: the server hands in
//! the events and the schemas in force, records what this returns and checks the events
//! against it like any registered type.
//!
//! Rules: a property's type is the JSON type of its first non-null value (`integer` for a
//! whole number within 64 bits, `number` for any other, `string`, `boolean`, `object`,
//! `array`), always with `"null"` and never required, without bounds; a property whose
//! values so far are all null, whose name is not a column name (`$lib`, `Level Name`) or is
//! reserved, is not declared (its values stay in `raw_event`). Only types this module made
//! grow: a type registered by hand (or built in) is never changed by events.
//!
//! Invariant: every schema [`Wanted::schemas`] returns parses and passes
//! [`super::check_against`] the schemas it was made from, unless the log's limits
//! ([`super::MAX_REGISTERED_TABLES`]) are reached.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{
    builtin, is_snake_name, JsonType, Schema, SchemaError, Version, IGLU_META_SCHEMA, MAX_NAME_BYTES, MAX_PROPERTIES,
    RESERVED_FOR_NEW_TYPES, RESERVED_PROPERTY_NAMES, RESERVED_TYPE_NAMES,
};

/// The vendor of inferred schemas: what marks a type as one events may extend, and keeps
/// it apart from a studio's own vendors.
pub const INFERRED_VENDOR: &str = "questlog.inferred";

/// Most event types one request may infer: a request of 10,000 events with as many new
/// names would otherwise record 256 schemas (the log's limit) at once. Events of names past
/// it are checked against the types in force (`unknown_event_type`) and inferred by a later
/// request.
pub const MAX_INFERRED_TYPES_PER_REQUEST: usize = 16;

/// Most members of an event this looks at: an event has at most 64
/// (`event::MAX_EVENT_KEYS`, a test there checks), and one with more is refused whatever
/// its type, so it asks for nothing.
pub const MAX_OBSERVED_MEMBERS: usize = 64;

/// The envelope members every event has: never a property.
const ENVELOPE: [&str; 5] = ["event_type", "event_id", "player_id", "session_id", "event_time"];

/// The JSON type a value gives a property; `None` for null (it says nothing of the type).
pub fn json_type_of(v: &Value) -> Option<JsonType> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => JsonType::Boolean,
        Value::Number(n) if n.is_i64() => JsonType::Integer,
        Value::Number(_) => JsonType::Number,
        Value::String(_) => JsonType::String,
        Value::Array(_) => JsonType::Array,
        Value::Object(_) => JsonType::Object,
    })
}

/// Whether a member of an event may become an inferred property: a column name that is
/// neither reserved nor part of the envelope.
pub fn declarable(name: &str) -> bool {
    is_snake_name(name) && name.len() <= MAX_NAME_BYTES && !RESERVED_PROPERTY_NAMES.contains(&name) && !ENVELOPE.contains(&name)
}

/// Whether events of `name` may record a schema: not one of the seed's types, and either
/// unknown (`in_force` is `None`) or inferred.
pub fn may_grow(name: &str, in_force: Option<&Schema>) -> bool {
    !builtin::DOCUMENTS.iter().any(|(n, _)| *n == name) && in_force.is_none_or(|s| s.vendor == INFERRED_VENDOR)
}

/// What a request's events ask to be inferred: per type name, the properties (in the
/// order first seen, each with the type of its first non-null value) that the types in
/// force do not declare.
#[derive(Debug, Default)]
pub struct Wanted {
    types: BTreeMap<String, Vec<(String, JsonType)>>,
}

impl Wanted {
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Keeps the wanted types whose name `keep` takes.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.types.retain(|name, _| keep(name));
    }

    /// Looks at one event (its JSON text; nothing when it is not an object). `in_force` is
    /// the newest schema of its name the server checks events against (`None`: unknown
    /// name). Events of the seed's types, of a type registered by hand, of a name that is
    /// not a type name, and past [`MAX_INFERRED_TYPES_PER_REQUEST`] new names, ask for
    /// nothing. Only the values of members the type lacks are parsed.
    pub fn observe<'s>(&mut self, text: &str, in_force: impl Fn(&str) -> Option<&'s Schema>) {
        let Ok(TypeOnly { event_type: name }) = serde_json::from_str::<TypeOnly>(text) else { return };
        let current = in_force(&name);
        let declared = current.map_or(0, |s| s.properties.len());
        if !may_grow(&name, current) || declared >= MAX_PROPERTIES {
            return;
        }
        let Ok(Members(members)) = serde_json::from_str::<Members>(text) else { return };
        if members.len() > MAX_OBSERVED_MEMBERS {
            return;
        }
        let new_value = |k: &str, v: &RawValue| -> Option<JsonType> {
            let fresh = declarable(k) && current.is_none_or(|s| s.property(k).is_none());
            fresh.then(|| serde_json::from_str::<Value>(v.get()).ok().as_ref().and_then(json_type_of)).flatten()
        };
        if !self.types.contains_key(name.as_ref()) {
            if !is_snake_name(&name)
                || name.len() > MAX_NAME_BYTES
                || RESERVED_TYPE_NAMES.contains(&name.as_ref())
                || RESERVED_FOR_NEW_TYPES.contains(&name.as_ref())
                || self.types.len() >= MAX_INFERRED_TYPES_PER_REQUEST
            {
                return;
            }
            if current.is_some() && !members.iter().any(|(k, v)| new_value(&k.0, v).is_some()) {
                return;
            }
            self.types.insert(name.to_string(), Vec::new());
        }
        let props = self.types.get_mut(name.as_ref()).expect("inserted above");
        for (k, v) in &members {
            if declared + props.len() >= MAX_PROPERTIES {
                break;
            }
            if !props.iter().any(|(p, _)| *p == k.0) {
                if let Some(t) = new_value(&k.0, v) {
                    props.push((k.0.to_string(), t));
                }
            }
        }
    }

    /// The schemas to record: per wanted name, against `known` (the log's schemas, newer
    /// than what [`Wanted::observe`] saw when another request recorded one meanwhile), the
    /// first version (`1-0-0`) of a new name, or the next ADDITION of an inferred type
    /// with the properties it lacks appended. Nothing for a name the log has from another
    /// vendor or with every property already. A type holds at most [`MAX_PROPERTIES`]:
    /// properties past it are not declared.
    /// (An `Err`, with the type's name, breaks this module's invariant: it is logged and its
    /// events refused.)
    pub fn schemas(&self, known: &[Schema]) -> Vec<Result<Schema, (String, SchemaError)>> {
        let mut out = Vec::new();
        for (name, props) in &self.types {
            let newest = known.iter().filter(|s| &s.name == name).max_by_key(|s| (s.version.model, s.version));
            let (version, mut properties) = match newest {
                Some(s) if s.vendor != INFERRED_VENDOR => continue,
                Some(s) => (
                    Version { addition: s.version.addition + 1, ..s.version },
                    s.properties.iter().map(|p| (p.name.clone(), p.json_type)).collect::<Vec<_>>(),
                ),
                None => (Version { model: 1, revision: 0, addition: 0 }, Vec::new()),
            };
            let before = properties.len();
            for (p, t) in props {
                if properties.len() < MAX_PROPERTIES && !properties.iter().any(|(q, _)| q == p) {
                    properties.push((p.clone(), *t));
                }
            }
            if newest.is_some() && properties.len() == before {
                continue;
            }
            out.push(Schema::parse(document(name, version, &properties).to_string().as_bytes()).map_err(|e| (name.clone(), e)));
        }
        out
    }
}

/// An event's `event_type`, read without allocating (but for an escaped name).
#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(borrow)]
    event_type: Cow<'a, str>,
}

/// A member name, borrowed from the text unless escaped.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// An object's members in order, their values unparsed.
struct Members<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<Key<'a>, &'a RawValue>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// The schema document of an inferred type.
fn document(name: &str, version: Version, properties: &[(String, JsonType)]) -> Value {
    let props: Map<String, Value> =
        properties.iter().map(|(p, t)| (p.clone(), serde_json::json!({"type": [t.as_str(), "null"]}))).collect();
    serde_json::json!({
        "$schema": IGLU_META_SCHEMA,
        "self": {"vendor": INFERRED_VENDOR, "name": name, "format": "jsonschema", "version": version.to_string()},
        "description": "inferred by `questlog serve --infer-schemas` from the first values of each property",
        "type": "object",
        "properties": props,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{check_against, ColumnType, Evolution};

    fn wanted(known: &[Schema], events: &[&str]) -> Vec<Schema> {
        let mut w = Wanted::default();
        for e in events {
            w.observe(e, |n| known.iter().filter(|s| s.name == n).max_by_key(|s| s.version));
        }
        w.schemas(known).into_iter().map(|s| s.map_err(|(_, e)| e).expect("an inferred schema parses")).collect()
    }

    #[test]
    fn the_first_values_give_the_types_and_later_properties_an_addition() {
        let first = wanted(
            &[],
            &[
                r#"{"event_type":"boss_defeated","boss":"dragon","damage":1200,"dps":35.5,"crit":true,"loot":["a"],"gear":{},"note":null,"$lib":"x","Level Name":"y","player_id":"p","app":"z"}"#,
                r#"{"event_type":"boss_defeated","boss":7,"note":"now a string"}"#,
            ],
        );
        assert_eq!(first.len(), 1);
        let s = &first[0];
        assert_eq!((s.vendor.as_str(), s.name.as_str(), s.version.to_string()), (INFERRED_VENDOR, "boss_defeated", "1-0-0".into()));
        let cols: Vec<(&str, ColumnType, bool)> = s.properties.iter().map(|p| (p.name.as_str(), p.column, p.nullable())).collect();
        assert_eq!(
            cols,
            [
                ("boss", ColumnType::String, true),
                ("damage", ColumnType::BigInt, true),
                ("dps", ColumnType::Double, true),
                ("crit", ColumnType::Boolean, true),
                ("loot", ColumnType::Json, true),
                ("gear", ColumnType::Json, true),
                ("note", ColumnType::String, true),
            ]
        );
        assert_eq!(check_against(&[], s), Ok(Evolution::NewTable));

        // Known properties (whatever their values' types) ask for nothing; a new one is
        // the next ADDITION, appended after the others.
        let known = first.clone();
        assert!(wanted(&known, &[r#"{"event_type":"boss_defeated","boss":3,"damage":"x"}"#]).is_empty());
        let next = wanted(&known, &[r#"{"event_type":"boss_defeated","boss":"x","phase":2}"#]);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].version.to_string(), "1-0-1");
        assert_eq!(next[0].properties.last().map(|p| p.name.as_str()), Some("phase"));
        assert_eq!(check_against(&known, &next[0]), Ok(Evolution::Addition { added: vec!["phase".into()] }));
    }

    #[test]
    fn seed_types_types_registered_by_hand_and_bad_names_are_never_inferred() {
        let by_hand = Schema::parse(
            br#"{"$schema":"http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#",
                 "self":{"vendor":"com.example.game","name":"level_up","format":"jsonschema","version":"1-0-0"},
                 "type":"object","properties":{"level":{"type":"integer"}}}"#,
        )
        .unwrap();
        let known = vec![by_hand];
        let events = [
            r#"{"event_type":"join_guild","extra":1}"#,
            r#"{"event_type":"level_up","level":2,"new_prop":1}"#,
            r#"{"event_type":"Level Up","x":1}"#,
            r#"{"event_type":"stock","x":1}"#,
            r#"{"event_type":7}"#,
        ];
        assert!(wanted(&known, &events).is_empty());
    }

    #[test]
    fn a_request_infers_a_bounded_number_of_types_and_properties() {
        let events: Vec<String> = (0..40).map(|i| format!(r#"{{"event_type":"t{i}","x":1}}"#)).collect();
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        assert_eq!(wanted(&[], &refs).len(), MAX_INFERRED_TYPES_PER_REQUEST);
        let wide: String = (0..60).map(|i| format!(r#","p{i}":{i}"#)).collect();
        let s = wanted(&[], &[&format!(r#"{{"event_type":"wide"{wide}}}"#)]);
        assert_eq!(s[0].properties.len(), MAX_PROPERTIES);
    }
}
