//! Seeded events of registered types (`generate --schema FILE…`), mixed into the world's
//! traffic: each event the world makes is, with probability [`CustomTraffic::share_pct`] in
//! a hundred, an event of one of these types instead (the type picked uniformly), from the
//! same session, player and clock. Every value is drawn within its property's schema — an
//! integer within [`MAX_INT_SPAN`] of 0 (or of its bound nearer 0), a number within its
//! bounds (or [`NUMBER_SPAN`] from the one it has), a value of its `enum`, a word within its
//! `maxLength`, the world's clock for a `date-time` — and the event is checked by the
//! type's validator, and its JSON text checked again to the same values, before it is
//! made. The draws come from a ChaCha8 stream of their own, so the same seed and schemas
//! give the same bytes, and a world without schemas makes exactly the events it made before.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::event::custom::CompiledType;
use crate::event::{format_time_us, ClientEvent, Payload};
use crate::schema::{ColumnType, JsonType, Property, Schema};

/// Percent of events of registered types unless `--custom-share` says otherwise: enough to
/// fill their tables beside the seed's, few enough that the seed's findings stay readable.
pub const DEFAULT_SHARE_PCT: u32 = 20;

/// Integers are drawn at most this far above their minimum: an id column's range is
/// 0..2^63, and values spread over all of it look like no game's ids.
pub const MAX_INT_SPAN: i64 = 10_000;

/// A number with one bound (or none) is drawn within this distance of it (of 0).
pub const NUMBER_SPAN: f64 = 1_000.0;

/// Words are 1 to this many characters (fewer when `maxLength` says so).
const MAX_WORD_CHARS: u64 = 12;

/// Draws of one event before it is given up (a FLOAT range narrower than a float's step
/// can refuse every draw); the world then makes a seed event in its place.
const DRAWS_PER_EVENT: usize = 64;

/// Derives the stream of these draws from the world's seed.
const CUSTOM_STREAM: u64 = 0x6375_7374_6f6d_2d31;

/// Percent of an optional property's draws that leave it out.
const ABSENT_PCT: u32 = 20;

/// Percent of a nullable property's draws that make it null.
const NULL_PCT: u32 = 10;

/// The registered types a world mixes into its traffic.
pub struct CustomTraffic {
    rng: ChaCha8Rng,
    share_pct: u32,
    types: Vec<(CompiledType, Schema)>,
}

impl CustomTraffic {
    /// `schemas` (at least one), `share_pct` (1 to 100) percent of the events. Refuses a
    /// type none of whose draws its validator takes.
    pub fn new(seed: u64, schemas: &[Schema], share_pct: u32) -> Result<CustomTraffic, String> {
        if schemas.is_empty() {
            return Err("no event types to draw".to_string());
        }
        if !(1..=100).contains(&share_pct) {
            return Err(format!("the share of events of registered types is {share_pct}%: give 1 to 100"));
        }
        let types: Vec<(CompiledType, Schema)> = schemas.iter().map(|s| (CompiledType::compile(s), s.clone())).collect();
        let mut probe = ChaCha8Rng::seed_from_u64(seed ^ CUSTOM_STREAM ^ 1);
        for (compiled, schema) in &types {
            if (0..DRAWS_PER_EVENT).all(|_| draw(compiled, schema, &mut probe, 0).is_none()) {
                return Err(format!("{}: no value drawn within its schema passes its checks (a FLOAT range too narrow?)", schema.uri()));
            }
        }
        Ok(CustomTraffic { rng: ChaCha8Rng::seed_from_u64(seed ^ CUSTOM_STREAM), share_pct, types })
    }

    pub fn share_pct(&self) -> u32 {
        self.share_pct
    }

    /// Draws events of `schemas` from now on, in the same stream (a type evolved while
    /// the world runs: its newest version's properties, or another model's).
    pub fn replace_types(&mut self, schemas: &[Schema]) -> Result<(), String> {
        if schemas.is_empty() {
            return Err("no event types to draw".to_string());
        }
        self.types = schemas.iter().map(|s| (CompiledType::compile(s), s.clone())).collect();
        Ok(())
    }

    /// The next event's payload if it is to be one of these types' (`now_us`: the clock,
    /// for `date-time` properties), else `None`.
    pub(super) fn next(&mut self, now_us: i64) -> Option<Payload> {
        if self.rng.random_range(0..100u32) >= self.share_pct {
            return None;
        }
        let t = self.rng.random_range(0..self.types.len());
        let (compiled, schema) = &self.types[t];
        (0..DRAWS_PER_EVENT).find_map(|_| draw(compiled, schema, &mut self.rng, now_us)).map(Payload::Custom)
    }
}

/// One event's properties drawn and checked; `None` if the validator refuses them.
fn draw(compiled: &CompiledType, schema: &Schema, rng: &mut ChaCha8Rng, now_us: i64) -> Option<crate::event::CustomPayload> {
    let mut members: Vec<(String, Value)> = Vec::with_capacity(schema.properties.len());
    for p in &schema.properties {
        if !p.required && rng.random_range(0..100u32) < ABSENT_PCT {
            continue;
        }
        let v = if p.null_allowed && rng.random_range(0..100u32) < NULL_PCT { Value::Null } else { value(p, rng, now_us) };
        members.push((p.name.clone(), v));
    }
    let payload = compiled.payload(&members).ok()?;
    // The event as it is sent and kept (its JSON text) must check to the same values.
    let event = ClientEvent { event_id: None, player_id: None, session_id: None, event_time_us: None, payload: Payload::Custom(payload) };
    let text = event.to_json_string();
    let sent: serde_json::Map<String, Value> = serde_json::from_str(&text).ok()?;
    let again = compiled.payload(&sent.into_iter().collect::<Vec<_>>()).ok()?;
    match event.payload {
        Payload::Custom(p) if p == again => Some(p),
        _ => None,
    }
}

fn value(p: &Property, rng: &mut ChaCha8Rng, now_us: i64) -> Value {
    match p.json_type {
        JsonType::Integer => {
            let (lo, hi) = p.int_range.unwrap_or((0, MAX_INT_SPAN));
            // From 0 when the range holds it, else from the bound nearer to 0.
            let start = if lo <= 0 && 0 <= hi {
                0
            } else if lo > 0 {
                lo
            } else {
                hi.saturating_sub(MAX_INT_SPAN).max(lo)
            };
            let end = start.saturating_add(MAX_INT_SPAN).min(hi);
            json!(rng.random_range(start..=end))
        }
        JsonType::Number => {
            let (lo, hi) = match p.number_range {
                (Some(lo), Some(hi)) => (lo, hi),
                (Some(lo), None) => (lo, lo + NUMBER_SPAN),
                (None, Some(hi)) => (hi - NUMBER_SPAN, hi),
                (None, None) => (0.0, NUMBER_SPAN),
            };
            let x = lo + (hi - lo) * rng.random::<f64>();
            // Two decimals, as a game's figures are; a FLOAT is checked as it is stored.
            let x = ((x * 100.0).round() / 100.0).clamp(lo, hi);
            let x = if p.column == ColumnType::Float { f64::from(x as f32) } else { x };
            serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
        JsonType::String if p.column == ColumnType::Timestamp => Value::String(format_time_us(now_us)),
        JsonType::String => match &p.enum_values {
            Some(values) if !values.is_empty() => Value::String(values[rng.random_range(0..values.len())].clone()),
            _ => {
                let max = p.max_length.unwrap_or(MAX_WORD_CHARS).clamp(1, MAX_WORD_CHARS);
                let len = rng.random_range(1..=max);
                Value::String((0..len).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect())
            }
        },
        JsonType::Boolean => Value::Bool(rng.random_bool(0.5)),
        JsonType::Object => json!({"n": rng.random_range(0..100u32)}),
        JsonType::Array => Value::Array((0..rng.random_range(0..4u32)).map(|_| json!(rng.random_range(0..100u32))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(props: Value, required: &[&str]) -> Schema {
        let doc = json!({
            "$schema": crate::schema::IGLU_META_SCHEMA,
            "self": {"vendor": "com.example", "name": "match_end", "format": "jsonschema", "version": "1-0-0"},
            "type": "object", "properties": props, "required": required,
        });
        Schema::parse(doc.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn draws_are_valid_seeded_and_shared_as_asked() {
        let s = schema(
            json!({
                "level": {"type": "integer", "minimum": 1, "maximum": 100},
                "id": {"type": "integer", "minimum": 0},
                "share": {"type": "number", "format": "float", "minimum": 0, "maximum": 0.1},
                "ratio": {"type": "number"},
                "class": {"type": "string", "enum": ["warrior", "mage"]},
                "map": {"type": ["string", "null"], "maxLength": 3},
                "at": {"type": "string", "format": "date-time"},
                "won": {"type": "boolean"},
                "kills": {"type": "array"},
            }),
            &["level", "class"],
        );
        let mut a = CustomTraffic::new(7, std::slice::from_ref(&s), 30).unwrap();
        let mut b = CustomTraffic::new(7, std::slice::from_ref(&s), 30).unwrap();
        let (mut made, mut nulls) = (0, 0);
        for _ in 0..2_000 {
            let (x, y) = (a.next(1_000_000), b.next(1_000_000));
            assert_eq!(x, y, "the same seed draws the same");
            if let Some(Payload::Custom(c)) = x {
                made += 1;
                let level = &c.fields[0].1;
                assert!(matches!(level, crate::event::CustomValue::Int(1..=100)), "{level:?}");
                nulls += c
                    .fields
                    .iter()
                    .filter(|(_, v)| matches!(v, crate::event::CustomValue::Null | crate::event::CustomValue::Absent))
                    .count();
            }
        }
        assert!((450..750).contains(&made), "{made} of 2000 at 30%");
        assert!(nulls > 0, "optional properties are sometimes absent");
        assert!(CustomTraffic::new(7, &[s.clone()], 0).is_err());
        assert!(CustomTraffic::new(7, &[], 20).is_err());
        let impossible = schema(json!({"x": {"type": "number", "format": "float", "minimum": 0.1, "maximum": 0.1}}), &["x"]);
        // A required property that may be null: drawn null at times, and the event's JSON
        // keeps that null (leaving it out would be `missing_field`).
        let nullable = schema(json!({"team": {"type": ["integer", "null"], "minimum": 1, "maximum": 8}}), &["team"]);
        let mut t = CustomTraffic::new(3, std::slice::from_ref(&nullable), 100).unwrap();
        let drawn: Vec<Payload> = (0..500).filter_map(|_| t.next(0)).collect();
        assert_eq!(drawn.len(), 500);
        let nulls = drawn.iter().filter(|p| matches!(p, Payload::Custom(c) if c.fields[0].1 == crate::event::CustomValue::Null)).count();
        assert!(nulls > 10, "{nulls}");
        for p in drawn {
            let e = ClientEvent { event_id: None, player_id: None, session_id: None, event_time_us: None, payload: p };
            let types = crate::event::Registry::from_schemas([&nullable]);
            assert_eq!(crate::event::validate_json_in(&e.to_json_string(), &types).map(|back| back.payload), Ok(e.payload.clone()));
        }
        let refused = CustomTraffic::new(7, &[impossible], 20).err().expect("refused");
        assert!(refused.contains("no value drawn"), "{refused}");
    }
}
