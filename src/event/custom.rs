//! The properties of a registered event type checked by a validator compiled once from its
//! schema (`crate::schema::Schema`), not the document interpreted per event: the same
//! rejection reasons and field names as the seed's types (`out_of_range` for a value
//! outside an `enum`, `string_too_long` past a `maxLength`, `bad_time` for a `date-time`
//! that is not RFC 3339), and the checked values as their columns hold them. The seed's
//! five schemas compiled this way accept and refuse exactly what [`super::validate_object`]
//! does (tested below).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{clip, json_kind, parse_time_us, FieldValue, RejectReason, Rejection, MAX_STRING_BYTES};
use crate::schema::{ColumnType, JsonType, Property, Schema, Version};

/// Longest JSON text of an `object` or `array` property: a row's nested value, not a
/// document store (the whole event is bounded by the request limits too).
pub const MAX_JSON_BYTES: usize = 4096;

/// A checked value of a registered type's property, as its column holds it. `S` is how
/// text is held, as in [`super::Payload`]. Stored in the log by bincode variant index:
/// variants are only ever appended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CustomValue<S = String> {
    Null,
    Int(i64),
    Float(f32),
    Double(f64),
    Text(S),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    Bool(bool),
    /// The value's JSON text, keys in the order sent.
    Json(S),
    /// An optional property the event did not carry (null in its column and replay line,
    /// left out of its JSON, where an explicit `null` is kept).
    Absent,
}

impl<S: AsRef<str>> CustomValue<S> {
    pub fn view(&self) -> CustomValue<&str> {
        match self {
            CustomValue::Null => CustomValue::Null,
            CustomValue::Int(v) => CustomValue::Int(*v),
            CustomValue::Float(v) => CustomValue::Float(*v),
            CustomValue::Double(v) => CustomValue::Double(*v),
            CustomValue::Text(v) => CustomValue::Text(v.as_ref()),
            CustomValue::Timestamp(v) => CustomValue::Timestamp(*v),
            CustomValue::Bool(v) => CustomValue::Bool(*v),
            CustomValue::Json(v) => CustomValue::Json(v.as_ref()),
            CustomValue::Absent => CustomValue::Absent,
        }
    }

    /// The value as replay lines and rows take it.
    pub fn field_value(&self) -> FieldValue<'_> {
        match self {
            CustomValue::Null => FieldValue::Null,
            CustomValue::Int(v) => FieldValue::Int(*v),
            CustomValue::Float(v) => FieldValue::Float(*v),
            CustomValue::Double(v) => FieldValue::Double(*v),
            CustomValue::Text(v) => FieldValue::Text(v.as_ref()),
            CustomValue::Timestamp(v) => FieldValue::Time(*v),
            CustomValue::Bool(v) => FieldValue::Bool(*v),
            CustomValue::Json(v) => FieldValue::Json(v.as_ref()),
            CustomValue::Absent => FieldValue::Absent,
        }
    }
}

/// The checked properties of an event of a registered type, as the log keeps them: the
/// type's name, the version of the schema that checked it and each declared property's
/// value (null when absent) in that version's column order, with its name, so that a
/// record reads back, and replays, without its schema (docs/CONTRACT.md 13.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomPayload<S = String> {
    pub event_type: S,
    /// MODEL, REVISION, ADDITION of the schema the event was checked against.
    pub version: [u32; 3],
    pub fields: Vec<(S, CustomValue<S>)>,
}

impl<S: AsRef<str>> CustomPayload<S> {
    pub fn view(&self) -> CustomPayload<&str> {
        CustomPayload {
            event_type: self.event_type.as_ref(),
            version: self.version,
            fields: self.fields.iter().map(|(n, v)| (n.as_ref(), v.view())).collect(),
        }
    }

    /// Bytes this payload holds on the heap: what a request is charged for it.
    pub fn held_bytes(&self) -> usize {
        let text = |v: &CustomValue<S>| match v {
            CustomValue::Text(t) | CustomValue::Json(t) => t.as_ref().len(),
            _ => 0,
        };
        self.event_type.as_ref().len()
            + self.fields.iter().map(|(n, v)| std::mem::size_of::<(S, CustomValue<S>)>() + n.as_ref().len() + text(v)).sum::<usize>()
    }

    pub fn version(&self) -> Version {
        let [model, revision, addition] = self.version;
        Version { model, revision, addition }
    }
}

/// The registered event types events are checked against: for each name, the newest
/// version of its newest model (an event names its type, not a version; an ADDITION's
/// events hold the new property, older ones null). Built from the log's schema records
/// in force at a point; the seed's five are not in it (they are checked by their own code).
/// At most [`crate::schema::MAX_REGISTERED_TABLES`] names: registration refuses more.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: BTreeMap<String, (Arc<CompiledType>, Arc<Schema>)>,
}

impl Registry {
    pub const fn empty() -> Registry {
        Registry { types: BTreeMap::new() }
    }

    /// The types of `schemas` (recorded ones; any order).
    pub fn from_schemas<'a>(schemas: impl IntoIterator<Item = &'a Schema>) -> Registry {
        let mut newest: BTreeMap<&str, &Schema> = BTreeMap::new();
        for s in schemas {
            match newest.get(s.name.as_str()) {
                Some(have) if have.version >= s.version => {}
                _ => {
                    newest.insert(&s.name, s);
                }
            }
        }
        Registry {
            types: newest
                .into_iter()
                .map(|(name, s)| (name.to_string(), (Arc::new(CompiledType::compile(s)), Arc::new(s.clone()))))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&CompiledType> {
        self.types.get(name).map(|(c, _)| c.as_ref())
    }

    /// The schema `name`'s events are checked against.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.types.get(name).map(|(_, s)| s.as_ref())
    }

    /// The schema each name's events are checked against, by name.
    pub fn schemas(&self) -> impl Iterator<Item = &Schema> {
        self.types.values().map(|(_, s)| s.as_ref())
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

#[derive(Clone, Debug)]
enum Check {
    Int { lo: i64, hi: i64 },
    Number { lo: Option<f64>, hi: Option<f64>, single: bool },
    Text { max_chars: Option<u64>, one_of: Option<Vec<String>> },
    Time,
    Bool,
    Json { object: bool },
}

#[derive(Clone, Debug)]
struct CompiledProperty {
    name: String,
    check: Check,
    required: bool,
    null_allowed: bool,
    column: ColumnType,
    /// "an integer from 1 to 100 (SMALLINT)": what a rejection says was expected.
    expected: String,
}

/// A registered type's validator: its properties' checks, in column order.
#[derive(Clone, Debug)]
pub struct CompiledType {
    pub name: String,
    pub version: Version,
    properties: Vec<CompiledProperty>,
}

fn expected(p: &Property) -> String {
    let column = p.column.sql_name();
    match (&p.column, p.int_range, &p.enum_values, p.max_length) {
        (_, Some((lo, hi)), _, _) => format!("an integer from {lo} to {hi} ({column})"),
        (ColumnType::Float | ColumnType::Double, ..) => {
            let (lo, hi) = p.number_range;
            match (lo, hi) {
                (Some(lo), Some(hi)) => format!("a finite number from {lo} to {hi} ({column})"),
                (Some(lo), None) => format!("a finite number of at least {lo} ({column})"),
                (None, Some(hi)) => format!("a finite number of at most {hi} ({column})"),
                (None, None) => format!("a finite number ({column})"),
            }
        }
        (ColumnType::Timestamp, ..) => "an RFC 3339 time such as 2026-01-01T12:00:00Z (TIMESTAMP)".to_string(),
        (_, _, Some(values), _) => {
            let shown: Vec<&str> = values.iter().take(8).map(String::as_str).collect();
            format!("one of {}{}", shown.join(", "), if values.len() > 8 { ", …" } else { "" })
        }
        (_, _, _, Some(max)) => format!("a string of at most {max} characters"),
        (ColumnType::Boolean, ..) => "true or false (BOOLEAN)".to_string(),
        (ColumnType::Json, ..) => format!("{} (kept as JSON text)", if p.json_type == JsonType::Object { "an object" } else { "an array" }),
        _ => "a string".to_string(),
    }
}

impl CompiledType {
    /// Compiles `schema`'s properties into checks.
    pub fn compile(schema: &Schema) -> CompiledType {
        let properties = schema
            .properties
            .iter()
            .map(|p| {
                let check = match p.column {
                    ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => {
                        let (lo, hi) = p.int_range.expect("an integer property has its range");
                        Check::Int { lo, hi }
                    }
                    ColumnType::Float | ColumnType::Double => {
                        Check::Number { lo: p.number_range.0, hi: p.number_range.1, single: p.column == ColumnType::Float }
                    }
                    ColumnType::String => Check::Text { max_chars: p.max_length, one_of: p.enum_values.clone() },
                    ColumnType::Timestamp => Check::Time,
                    ColumnType::Boolean => Check::Bool,
                    ColumnType::Json => Check::Json { object: p.json_type == JsonType::Object },
                };
                CompiledProperty {
                    name: p.name.clone(),
                    check,
                    required: p.required,
                    null_allowed: p.null_allowed,
                    column: p.column,
                    expected: expected(p),
                }
            })
            .collect();
        CompiledType { name: schema.name.clone(), version: schema.version, properties }
    }

    /// The column type of a declared property.
    pub fn column(&self, name: &str) -> Option<ColumnType> {
        self.properties.iter().find(|p| p.name == name).map(|p| p.column)
    }

    /// Checks an event's members into the payload the log keeps.
    pub fn payload(&self, members: &[(String, Value)]) -> Result<CustomPayload, Rejection> {
        let values = self.check(members)?;
        let v = self.version;
        Ok(CustomPayload {
            event_type: self.name.clone(),
            version: [v.model, v.revision, v.addition],
            fields: self.properties.iter().map(|p| p.name.clone()).zip(values).collect(),
        })
    }

    /// Checks an event's members (the envelope is checked by the caller), returning the
    /// properties' values in column order, or the first property that fails.
    pub fn check(&self, members: &[(String, Value)]) -> Result<Vec<CustomValue>, Rejection> {
        let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        self.properties.iter().map(|p| p.check(get(&p.name), &self.name)).collect()
    }
}

impl CompiledProperty {
    fn reject(&self, reason: RejectReason, message: String) -> Rejection {
        Rejection::new(reason, Some(&self.name), message)
    }

    fn wrong_type(&self, v: &Value) -> Rejection {
        self.reject(RejectReason::WrongType, format!("field `{}` must be {}, got {}", self.name, self.expected, json_kind(v)))
    }

    fn check(&self, v: Option<&Value>, event_type: &str) -> Result<CustomValue, Rejection> {
        let name = &self.name;
        let v = match v {
            None | Some(Value::Null) if self.required && !(self.null_allowed && v.is_some()) => {
                return Err(self.reject(
                    RejectReason::MissingField,
                    format!("missing field `{name}` for event_type `{event_type}`: expected {}", self.expected),
                ))
            }
            None => return Ok(CustomValue::Absent),
            Some(Value::Null) if self.null_allowed => return Ok(CustomValue::Null),
            Some(v) => v,
        };
        match &self.check {
            Check::Int { lo, hi } => self.integer(v, *lo, *hi).map(CustomValue::Int),
            Check::Number { lo, hi, single } => self.number(v, *lo, *hi, *single),
            Check::Text { max_chars, one_of } => {
                let Value::String(s) = v else { return Err(self.wrong_type(v)) };
                if s.len() > MAX_STRING_BYTES {
                    return Err(self.reject(
                        RejectReason::StringTooLong,
                        format!("field `{name}` is {} bytes long; the limit is {MAX_STRING_BYTES} bytes", s.len()),
                    ));
                }
                if let Some(max) = max_chars {
                    let chars = s.chars().count() as u64;
                    if chars > *max {
                        return Err(self.reject(
                            RejectReason::StringTooLong,
                            format!("field `{name}` is {chars} characters long; its schema allows {max}"),
                        ));
                    }
                }
                if let Some(values) = one_of {
                    if !values.iter().any(|x| x == s) {
                        return Err(
                            self.reject(RejectReason::OutOfRange, format!("field `{name}` is `{}`; expected {}", clip(s), self.expected))
                        );
                    }
                }
                Ok(CustomValue::Text(s.clone()))
            }
            Check::Time => {
                let Value::String(s) = v else { return Err(self.wrong_type(v)) };
                parse_time_us(s)
                    .map(CustomValue::Timestamp)
                    .map_err(|e| self.reject(RejectReason::BadTime, format!("field `{name}`: `{}` is not an RFC 3339 time ({e})", clip(s))))
            }
            Check::Bool => v.as_bool().map(CustomValue::Bool).ok_or_else(|| self.wrong_type(v)),
            Check::Json { object } => {
                if (*object && !v.is_object()) || (!*object && !v.is_array()) {
                    return Err(self.wrong_type(v));
                }
                let text = v.to_string();
                if text.len() > MAX_JSON_BYTES {
                    return Err(self.reject(
                        RejectReason::StringTooLong,
                        format!("field `{name}` is {} bytes of JSON; the limit is {MAX_JSON_BYTES} bytes", text.len()),
                    ));
                }
                Ok(CustomValue::Json(text))
            }
        }
    }

    /// Below the range: `negative` when the range starts at 0 or above and the value is
    /// below 0 (as the seed's ids and counts say), else `out_of_range`.
    fn below(&self, lo_non_negative: bool, negative: bool, shown: &str) -> Rejection {
        let reason = if lo_non_negative && negative { RejectReason::Negative } else { RejectReason::OutOfRange };
        self.reject(reason, format!("field `{}` is {shown}; expected {}", self.name, self.expected))
    }

    /// A JSON integer (not `7.0`, not `"7"`) within `lo..=hi`.
    fn integer(&self, v: &Value, lo: i64, hi: i64) -> Result<i64, Rejection> {
        let Value::Number(n) = v else { return Err(self.wrong_type(v)) };
        let beyond = |negative: bool| {
            if negative {
                self.below(lo >= 0, true, &format!("{n}, beyond the INT64 range"))
            } else {
                self.reject(
                    RejectReason::OutOfRange,
                    format!("field `{}` is {n}, beyond the INT64 range; expected {}", self.name, self.expected),
                )
            }
        };
        if let Some(i) = n.as_i64() {
            if i < lo {
                return Err(self.below(lo >= 0, i < 0, &i.to_string()));
            }
            if i > hi {
                return Err(self.reject(RejectReason::OutOfRange, format!("field `{}` is {i}; expected {}", self.name, self.expected)));
            }
            return Ok(i);
        }
        if n.as_u64().is_some() {
            return Err(beyond(false));
        }
        match n.as_f64() {
            Some(f) if !f.is_finite() => {
                Err(self
                    .reject(RejectReason::NonFinite, format!("field `{}` is not a finite number; expected {}", self.name, self.expected)))
            }
            Some(f) if f.fract() == 0.0 && f.abs() >= 9.2e18 => Err(beyond(f < 0.0)),
            _ => {
                Err(self
                    .reject(RejectReason::WrongType, format!("field `{}` is {n}, not an integer; expected {}", self.name, self.expected)))
            }
        }
    }

    fn number(&self, v: &Value, lo: Option<f64>, hi: Option<f64>, single: bool) -> Result<CustomValue, Rejection> {
        let Value::Number(n) = v else { return Err(self.wrong_type(v)) };
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() {
            return Err(
                self.reject(RejectReason::NonFinite, format!("field `{}` is not a finite number; expected {}", self.name, self.expected))
            );
        }
        if let Some(lo) = lo.filter(|lo| f < *lo) {
            return Err(self.below(lo >= 0.0, f < 0.0, &f.to_string()));
        }
        if hi.is_some_and(|hi| f > hi) {
            return Err(self.reject(RejectReason::OutOfRange, format!("field `{}` is {f}; expected {}", self.name, self.expected)));
        }
        if !single {
            return Ok(CustomValue::Double(f));
        }
        let s = f as f32;
        if !s.is_finite() {
            return Err(
                self.reject(RejectReason::OutOfRange, format!("field `{}` is {f}, beyond the FLOAT range (about 3.4e38)", self.name))
            );
        }
        // The column holds the value rounded to 32 bits: the bounds hold for that too
        // (0.1 under `maximum: 0.1` is stored as 0.10000000149), and for the shortest text
        // of it that replay lines and raw JSON show (0.30000001 is stored as 0.3000000119
        // and shown as 0.3, under `minimum: 0.30000001`), so what is shown checks again.
        let stored = f64::from(s);
        let shown: f64 = s.to_string().parse().unwrap_or(stored);
        let outside = |x: f64| lo.is_some_and(|lo| x < lo) || hi.is_some_and(|hi| x > hi);
        if outside(stored) || outside(shown) {
            return Err(self.reject(
                RejectReason::OutOfRange,
                format!("field `{}` is {f}, which a FLOAT column holds as {s}, outside {}", self.name, self.expected),
            ));
        }
        Ok(CustomValue::Float(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{validate_object, EventType, FieldValue};
    use serde_json::json;

    /// Values every field of every seed type is tried with: each kind's edges, the other
    /// kinds, null and absence.
    fn corpus() -> Vec<Option<Value>> {
        let mut v: Vec<Option<Value>> = [
            json!(0),
            json!(1),
            json!(-1),
            json!(32767),
            json!(32768),
            json!(-32769),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1.5),
            json!(7.0),
            json!(-0.0),
            json!(-1.5),
            json!(3.4e38),
            json!(3.5e38),
            json!(1e300),
            json!(-1e300),
            json!(9.3e18),
            json!("7"),
            json!(""),
            json!("x".repeat(1024)),
            json!("x".repeat(1025)),
            json!("é".repeat(512)),
            json!("é".repeat(513)),
            json!(true),
            json!(null),
            json!([]),
            json!({"a": 1}),
        ]
        .into_iter()
        .map(Some)
        .collect();
        v.push(None);
        v
    }

    fn base(t: EventType) -> Vec<(String, Value)> {
        let mut m = vec![("event_type".to_string(), json!(t.as_str()))];
        for (name, kind) in t.fields() {
            let v = match kind {
                crate::event::FieldKind::Text => json!("a name"),
                crate::event::FieldKind::Cost => json!(9.99),
                _ => json!(3),
            };
            m.push((name.to_string(), v));
        }
        m
    }

    fn as_custom(v: FieldValue<'_>) -> CustomValue {
        match v {
            FieldValue::Int(i) => CustomValue::Int(i),
            FieldValue::Small(i) => CustomValue::Int(i64::from(i)),
            FieldValue::Float(f) => CustomValue::Float(f),
            FieldValue::Text(s) => CustomValue::Text(s.to_string()),
            other => panic!("a seed type's field is never {other:?}"),
        }
    }

    /// The seed's five schemas, compiled, accept and refuse exactly what the seed's own
    /// checks do, with the same reason and field, for every field and every value of the
    /// corpus; and what they accept, they hold as the same values.
    #[test]
    fn compiled_builtin_schemas_check_exactly_as_the_seed_types_do() {
        let mut compared = 0;
        for t in EventType::ALL {
            let compiled = CompiledType::compile(&crate::schema::builtin::schema(t.as_str()).expect("a built-in"));
            for (field, _) in t.fields() {
                for value in corpus() {
                    let mut members = base(t);
                    members.retain(|(k, _)| k != field);
                    if let Some(v) = &value {
                        members.push((field.to_string(), v.clone()));
                    }
                    let seed = validate_object(&members);
                    let ours = compiled.check(&members);
                    match (&seed, &ours) {
                        (Ok(e), Ok(values)) => {
                            let mut want = Vec::new();
                            e.payload.visit_fields(|_, v| want.push(as_custom(v)));
                            assert_eq!(values, &want, "{t}.{field} = {value:?}");
                        }
                        (Err(a), Err(b)) => {
                            assert_eq!((a.reason, &a.field), (b.reason, &b.field), "{t}.{field} = {value:?}: {} / {}", a.message, b.message)
                        }
                        _ => panic!("{t}.{field} = {value:?}: the seed's checks say {seed:?}, the compiled schema {ours:?}"),
                    }
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 17 * corpus().len());
    }

    fn compiled(props: serde_json::Value, required: &[&str]) -> CompiledType {
        let doc = json!({
            "$schema": crate::schema::IGLU_META_SCHEMA,
            "self": {"vendor": "com.example", "name": "match_end", "format": "jsonschema", "version": "1-0-0"},
            "type": "object", "properties": props, "required": required,
        });
        CompiledType::compile(&Schema::parse(doc.to_string().as_bytes()).unwrap())
    }

    fn check_one(c: &CompiledType, name: &str, v: Option<Value>) -> Result<CustomValue, (RejectReason, String)> {
        // The required `level` is there unless it is the one tried.
        let mut members: Vec<(String, Value)> = v.into_iter().map(|v| (name.to_string(), v)).collect();
        if name != "level" {
            members.push(("level".to_string(), json!(7)));
        }
        c.check(&members)
            .map(|mut vs| vs.remove(c.properties.iter().position(|p| p.name == name).unwrap()))
            .map_err(|r| (r.reason, r.message))
    }

    fn check_one_free(c: &CompiledType, name: &str, v: Value) -> Result<CustomValue, RejectReason> {
        c.check(&[(name.to_string(), v)]).map(|mut vs| vs.remove(0)).map_err(|r| r.reason)
    }

    #[test]
    fn each_kind_of_property_takes_its_values_and_refuses_others_by_reason() {
        use RejectReason::*;
        let c = compiled(
            json!({
                "level": {"type": "integer", "minimum": 1, "maximum": 100},
                "delta": {"type": "integer", "minimum": -5, "maximum": 5},
                "ratio": {"type": "number", "minimum": -1, "maximum": 1},
                "class": {"type": "string", "enum": ["warrior", "mage"]},
                "map": {"type": ["string", "null"], "maxLength": 3},
                "ended_at": {"type": "string", "format": "date-time"},
                "won": {"type": "boolean"},
                "loadout": {"type": "object"},
                "kills": {"type": "array"},
            }),
            &["level"],
        );
        let reason = |name: &str, v: Value| check_one(&c, name, Some(v)).map_err(|e| e.0);
        assert_eq!(reason("level", json!(100)), Ok(CustomValue::Int(100)));
        assert_eq!(reason("level", json!(0)), Err(OutOfRange), "0 is below 1 but not negative");
        assert_eq!(reason("level", json!(-3)), Err(Negative));
        assert_eq!(reason("level", json!(101)), Err(OutOfRange));
        assert_eq!(reason("delta", json!(-6)), Err(OutOfRange), "a range below zero: out of range, not negative");
        assert_eq!(reason("ratio", json!(0.5)), Ok(CustomValue::Double(0.5)));
        assert_eq!(reason("ratio", json!(1.5)), Err(OutOfRange));
        assert_eq!(reason("ratio", json!("0.5")), Err(WrongType));
        let f = compiled(json!({"share": {"type": "number", "format": "float", "maximum": 0.1}}), &[]);
        assert_eq!(check_one_free(&f, "share", json!(0.1)), Err(OutOfRange), "0.1 as FLOAT is above 0.1");
        assert_eq!(check_one_free(&f, "share", json!(0.09)), Ok(CustomValue::Float(0.09)));
        assert_eq!(reason("class", json!("mage")), Ok(CustomValue::Text("mage".into())));
        assert_eq!(reason("class", json!("rogue")), Err(OutOfRange));
        assert_eq!(reason("map", json!("ééé")), Ok(CustomValue::Text("ééé".into())), "maxLength counts characters");
        assert_eq!(reason("map", json!("abcd")), Err(StringTooLong));
        assert_eq!(reason("map", json!(null)), Ok(CustomValue::Null), "an explicit null is kept as one");
        assert_eq!(reason("ended_at", json!("2026-01-01T00:00:01Z")), Ok(CustomValue::Timestamp(1_767_225_601_000_000)));
        assert_eq!(reason("ended_at", json!("yesterday")), Err(BadTime));
        assert_eq!(reason("ended_at", json!(null)), Err(WrongType), "null is not a value unless the schema allows it");
        assert_eq!(reason("won", json!(false)), Ok(CustomValue::Bool(false)));
        assert_eq!(reason("won", json!(0)), Err(WrongType));
        assert_eq!(reason("loadout", json!({"b": 1, "a": [2]})), Ok(CustomValue::Json(r#"{"b":1,"a":[2]}"#.into())));
        assert_eq!(reason("loadout", json!([1])), Err(WrongType));
        assert_eq!(reason("kills", json!([{"enemy": 1}])), Ok(CustomValue::Json(r#"[{"enemy":1}]"#.into())));
        assert_eq!(reason("kills", json!(["x".repeat(MAX_JSON_BYTES)])), Err(StringTooLong));
        // Absent: absent for an optional property, missing_field for a required one.
        assert_eq!(check_one(&c, "won", None), Ok(CustomValue::Absent));
        let f = compiled(json!({"x": {"type": "number", "format": "float", "minimum": 0.30000001}}), &[]);
        assert_eq!(check_one_free(&f, "x", json!(0.30000001)), Err(OutOfRange), "stored 0.3000000119, shown 0.3: below");
        assert_eq!(check_one_free(&f, "x", json!(0.3000001)), Ok(CustomValue::Float(0.3000001)));
        assert_eq!(
            check_one(&c, "level", None),
            Err((MissingField, "missing field `level` for event_type `match_end`: expected an integer from 1 to 100 (SMALLINT)".into()))
        );
        assert_eq!(check_one(&c, "level", Some(json!(null))).map_err(|e| e.0), Err(MissingField));
        let all = c.check(&[("level".to_string(), json!(7))]).unwrap();
        assert_eq!(all[0], CustomValue::Int(7));
        assert!(all[1..].iter().all(|v| *v == CustomValue::Absent));
    }
}
