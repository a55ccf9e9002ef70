//! `GET /openapi.json`: the OpenAPI 3 description of the API, made from its fixed part
//! (`src/openapi.json`) and the event types in force — the seed's five and the registered
//! ones — so that it changes when a schema is registered. Each type's event is a schema of
//! its own (`Event_<event_type>`), `Event` is their `oneOf` with `event_type` as the
//! discriminator, and each type has its seed-style path (`/<event_type>`) with its
//! properties as query parameters.

use serde_json::{json, Map, Value};

use crate::event::{Registry, MAX_STRING_BYTES};
use crate::schema::{builtin, ColumnType, JsonType, Property, Schema};

/// The fixed part: every route but the seed-style ones, and the components but `Event`.
const BASE: &str = include_str!("../openapi.json");

/// The largest finite FLOAT: a `format: float` number without a maximum is still bounded
/// by its column.
const FLOAT_MAX: f64 = f32::MAX as f64;

/// The document for these registered types (and the seed's five).
pub fn document(types: &Registry) -> Value {
    let mut doc: Value = serde_json::from_str(BASE).expect("src/openapi.json is JSON (a test reads it)");
    let builtins = builtin::schemas();
    let all: Vec<&Schema> = builtins.iter().chain(types.schemas()).collect();
    let mut one_of = Vec::new();
    let mut mapping = Map::new();
    let schemas = doc["components"]["schemas"].as_object_mut().expect("components.schemas");
    for s in &all {
        let name = format!("Event_{}", s.name);
        let reference = format!("#/components/schemas/{name}");
        schemas.insert(name, event_schema(s));
        one_of.push(json!({"$ref": reference}));
        mapping.insert(s.name.clone(), Value::String(reference));
    }
    schemas.insert("Event".to_string(), json!({"oneOf": one_of, "discriminator": {"propertyName": "event_type", "mapping": mapping}}));
    let paths = doc["paths"].as_object_mut().expect("paths");
    for s in &all {
        paths.insert(format!("/{}", s.name), seed_style_path(s));
    }
    doc
}

/// A property's values as OpenAPI 3.0 states them (`nullable`, not a `"null"` type).
fn property_schema(p: &Property) -> Value {
    let mut out = Map::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.to_string(), v);
    };
    match p.json_type {
        JsonType::Integer => {
            put("type", json!("integer"));
            if let Some((lo, hi)) = p.int_range {
                put("minimum", json!(lo));
                put("maximum", json!(hi));
            }
        }
        JsonType::Number => {
            put("type", json!("number"));
            let (lo, hi) = p.number_range;
            let float = p.column == ColumnType::Float;
            if float {
                put("format", json!("float"));
            }
            let lo = lo.or(float.then_some(-FLOAT_MAX));
            let hi = hi.or(float.then_some(FLOAT_MAX));
            if let Some(lo) = lo {
                put("minimum", json!(lo));
            }
            if let Some(hi) = hi {
                put("maximum", json!(hi));
            }
        }
        JsonType::String => {
            put("type", json!("string"));
            if p.column == ColumnType::Timestamp {
                put("format", json!("date-time"));
            } else {
                put("maxLength", json!(p.max_length.unwrap_or(MAX_STRING_BYTES as u64).min(MAX_STRING_BYTES as u64)));
            }
            if let Some(values) = &p.enum_values {
                put("enum", json!(values));
            }
        }
        JsonType::Boolean => put("type", json!("boolean")),
        JsonType::Object => put("type", json!("object")),
        JsonType::Array => put("type", json!("array")),
    }
    if p.null_allowed {
        out.insert("nullable".to_string(), json!(true));
    }
    Value::Object(out)
}

/// The envelope's members every event may carry (docs/CONTRACT.md 2).
fn envelope() -> [(&'static str, Value); 4] {
    let text = json!({"type": "string", "maxLength": MAX_STRING_BYTES});
    [
        ("event_id", text.clone()),
        ("player_id", text.clone()),
        ("session_id", text),
        ("event_time", json!({"type": "string", "format": "date-time"})),
    ]
}

fn event_schema(s: &Schema) -> Value {
    let mut properties = Map::new();
    properties.insert("event_type".to_string(), json!({"type": "string", "enum": [s.name]}));
    for (name, v) in envelope() {
        properties.insert(name.to_string(), v);
    }
    let mut required = vec![json!("event_type")];
    for p in &s.properties {
        properties.insert(p.name.clone(), property_schema(p));
        if p.required {
            required.push(json!(p.name));
        }
    }
    json!({"type": "object", "description": s.uri(), "required": required, "properties": properties})
}

/// `GET|POST /<event_type>?…`: the properties as query parameters. Object and array
/// properties are JSON text (`content: application/json`); a parameter cannot be null.
fn seed_style_path(s: &Schema) -> Value {
    let mut parameters = Vec::new();
    for p in &s.properties {
        let mut schema = property_schema(p);
        if let Some(o) = schema.as_object_mut() {
            o.remove("nullable");
        }
        parameters.push(if matches!(p.json_type, JsonType::Object | JsonType::Array) {
            // The value is JSON text in the parameter.
            json!({"name": p.name, "in": "query", "required": p.required, "content": {"application/json": {"schema": schema}}})
        } else {
            json!({"name": p.name, "in": "query", "required": p.required, "schema": schema})
        });
    }
    for (name, v) in envelope() {
        parameters.push(json!({"name": name, "in": "query", "required": false, "schema": v}));
    }
    let responses = json!({
        "200": {"$ref": "#/components/responses/Ingest"},
        "400": {"$ref": "#/components/responses/Ingest"},
        "401": {"$ref": "#/components/responses/Error"},
        "403": {"$ref": "#/components/responses/Error"},
        "414": {"description": "The request line is over 64 KiB (refused by the HTTP layer, empty body)."},
        "429": {"$ref": "#/components/responses/Error"},
        "503": {"$ref": "#/components/responses/Error"},
        "507": {"$ref": "#/components/responses/Error"}
    });
    let summary = format!("Append one `{}` event from query parameters (the seed's Flask style; a POST body is ignored).", s.name);
    json!({
        "parameters": parameters,
        "get": {"summary": summary, "responses": responses},
        "post": {"summary": summary, "responses": responses},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_is_a_schema_of_its_own_and_a_path() {
        let doc = document(&Registry::empty());
        let one_of = doc["components"]["schemas"]["Event"]["oneOf"].as_array().unwrap();
        assert_eq!(one_of.len(), 5);
        let join = &doc["components"]["schemas"]["Event_join_guild"];
        assert_eq!(join["required"], json!(["event_type", "guild_id", "name"]));
        assert!(join["properties"].get("total_cost").is_none(), "a type declares only its own fields");
        assert_eq!(doc["components"]["schemas"]["Event_buy_asset"]["properties"]["on_hand_qty"]["maximum"], 32767);
        let params = doc["paths"]["/kill_enemy"]["parameters"].as_array().unwrap();
        assert_eq!(
            params[0],
            json!({"name": "enemy_id", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": i64::MAX}})
        );
        assert!(doc["paths"].get("/{event_type}").is_none());
    }
}
