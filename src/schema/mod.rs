//! Event types as data: the JSON Schema subset one version of an event type is written in
//! (self-describing in Iglu's way), its limits, its canonical form and hash, the column
//! each property becomes, and the evolution rules a new version is checked against. The
//! seed's five types are written in the same form and built in ([`builtin`]). No I/O:
//! callers hand in the bytes of a file.
//!
//! The language (docs/CONTRACT.md, section 13, says the same for users):
//! - top level: `$schema` (Iglu's self-describing meta-schema or draft 2020-12), `self`
//!   (`vendor`, `name`, `format: "jsonschema"`, `version: "MODEL-REVISION-ADDITION"`),
//!   `type: "object"`, `properties`, `required`; `title`, `description`, `$comment`
//!   as annotations; `additionalProperties` only as `true` (unknown properties are kept
//!   in `raw_event` and never refused, as for the seed's types);
//! - a property: `type` one of `integer`, `number`, `string`, `boolean`, `object`,
//!   `array`, or one of those with `"null"` (`["integer", "null"]`: null accepted);
//!   `minimum`/`maximum` (integer, number), `maxLength`, `enum`, `format: "date-time"`
//!   (string), `format: "float"` (number, OpenAPI's name for 32 bits); annotations.
//!
//! Invariant: a [`Schema`] exists only for a document within every limit and rule here;
//! its columns are a function of its canonical form.

use std::fmt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `sha256:<lowercase hex>` of some bytes: how a schema's and a store catalogue's canonical
/// forms are named, in the log and in the side topic of a Kafka log.
pub fn content_hash(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub mod builtin;
pub mod infer;

/// The largest schema file: a schema of [`MAX_PROPERTIES`] properties, each with an enum
/// of a few dozen values and a description, fits in a quarter of it. Bounds what a
/// registration reads, and every copy of it the log and the server keep.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Most properties one event type may declare. An event object holds at most 64 keys
/// (`event::MAX_EVENT_KEYS`); five of them are the envelope (`event_type`, `event_id`,
/// `player_id`, `session_id`, `event_time`), and this leaves room for properties the
/// schema does not declare, kept in `raw_event`.
pub const MAX_PROPERTIES: usize = 48;

/// Longest name of a type or property, in bytes: a column or table name every engine of
/// the contract takes (Hive's limit is 128; `<name>_<model>` must fit too).
pub const MAX_NAME_BYTES: usize = 64;

/// Longest vendor (`com.example.game`), in bytes.
pub const MAX_VENDOR_BYTES: usize = 128;

/// Most values of one `enum`: a value list, not a lookup table.
pub const MAX_ENUM_VALUES: usize = 256;

/// Every string value questlog takes is at most this many bytes (the same as
/// `event::MAX_STRING_BYTES`; a test there checks): a `maxLength` above it cannot be met.
pub const STRING_LIMIT_BYTES: usize = 1024;

/// Deepest nesting of the schema document itself: the subset has two levels of objects
/// (the document and a property) plus `self`, `properties` and value lists.
const MAX_DOCUMENT_DEPTH: usize = 8;

/// The `$schema` of an Iglu self-describing schema.
pub const IGLU_META_SCHEMA: &str = "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#";

/// The `$schema` of JSON Schema draft 2020-12, also accepted (with `self`).
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Names a property may not have: the columns and envelope fields questlog fills or
/// checks itself, in every table.
pub const RESERVED_PROPERTY_NAMES: [&str; 13] = [
    "log_offset",
    "timestamp",
    "accept",
    "host",
    "user_agent",
    "raw_event",
    "event_type",
    "event_id",
    "player_id",
    "session_id",
    "event_time",
    "log_partition",
    "app",
];

/// Names an event type may not have: the single-segment routes of the API (the seed-style
/// route `/{event_type}` would never be reached) and the tables `sql` adds with a
/// catalogue.
pub const RESERVED_TYPE_NAMES: [&str; 5] = ["healthz", "metrics", "v1", "catalog_items", "stock"];

/// Names a new registration may not take, reserved after logs may have registered them (a
/// log that did keeps reading its records): `i`, Snowplow's `GET /i`, which shadows the
/// type's seed-style route.
pub const RESERVED_FOR_NEW_TYPES: [&str; 1] = ["i"];

/// Most tables (types and their models) a log may register besides the seed's five: each
/// is a Delta table, a section of the report and rows of the metrics, and a game's
/// catalogue of events has dozens, not thousands (Snowplow's largest public Iglu vendors
/// list a few hundred schemas over all their versions).
pub const MAX_REGISTERED_TABLES: usize = 256;

/// Annotations: allowed anywhere, with no effect on validation or columns.
const ANNOTATIONS: [&str; 4] = ["title", "description", "$comment", "examples"];

/// `MODEL-REVISION-ADDITION` (SchemaVer). MODEL starts at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub model: u32,
    pub revision: u32,
    pub addition: u32,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('-');
        let mut next = || -> Option<u32> {
            let p = parts.next()?;
            // Digits only, no sign, no leading zeros but "0".
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            p.parse().ok()
        };
        let v = Version { model: next()?, revision: next()?, addition: next()? };
        (parts.next().is_none() && v.model >= 1).then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.model, self.revision, self.addition)
    }
}

/// The column type a property becomes (docs/CONTRACT.md 13.2 maps each to Arrow, Parquet
/// and the engines' DDL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `integer` whose `minimum`..`maximum` fits -32768..32767.
    SmallInt,
    /// `integer` whose range fits 32 bits.
    Int,
    /// Any other `integer` (no bounds: all of `i64`).
    BigInt,
    /// `number` with `format: "float"`: finite values that stay finite as `f32`.
    Float,
    /// Any other `number`.
    Double,
    /// `string` (with `maxLength`, `enum` or neither).
    String,
    /// `string` with `format: "date-time"` (RFC 3339), kept in microseconds, UTC.
    Timestamp,
    Boolean,
    /// `object` or `array`: the value's JSON text, keys in the order sent.
    Json,
}

impl ColumnType {
    /// The name used in messages and `schema check` (Hive's, which the contract's DDL uses).
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::SmallInt => "SMALLINT",
            ColumnType::Int => "INT",
            ColumnType::BigInt => "BIGINT",
            ColumnType::Float => "FLOAT",
            ColumnType::Double => "DOUBLE",
            ColumnType::String => "STRING",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Json => "STRING (JSON text)",
        }
    }
}

/// A property's JSON type, as the schema says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JsonType {
    Integer,
    Number,
    String,
    Boolean,
    Object,
    Array,
}

impl JsonType {
    fn parse(s: &str) -> Option<JsonType> {
        Some(match s {
            "integer" => JsonType::Integer,
            "number" => JsonType::Number,
            "string" => JsonType::String,
            "boolean" => JsonType::Boolean,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::String => "string",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
        }
    }
}

/// One declared property: what values it takes and the column it becomes.
#[derive(Clone, Debug, PartialEq)]
pub struct Property {
    pub name: String,
    pub json_type: JsonType,
    /// `"null"` is among its types: an explicit null is a value (stored as null).
    pub null_allowed: bool,
    pub required: bool,
    pub column: ColumnType,
    /// Integer bounds (for `integer`; the column type's own when the schema gives none).
    pub int_range: Option<(i64, i64)>,
    /// Number bounds as written (for `number`).
    pub number_range: (Option<f64>, Option<f64>),
    /// In characters, as JSON Schema counts.
    pub max_length: Option<u64>,
    pub enum_values: Option<Vec<String>>,
}

impl Property {
    /// A column is non-null when the property must be present and may not be null.
    pub fn nullable(&self) -> bool {
        !self.required || self.null_allowed
    }
}

/// One version of an event type, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    pub vendor: String,
    pub name: String,
    pub version: Version,
    /// In the document's order: the table's column order for the first version of a model.
    pub properties: Vec<Property>,
    /// The document in canonical form ([`canonical_json`]): what the log records and hashes.
    canonical: String,
}

impl Schema {
    /// Parses and checks one schema document (the bytes of a file).
    pub fn parse(bytes: &[u8]) -> Result<Schema, SchemaError> {
        if bytes.len() > MAX_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge { bytes: bytes.len() });
        }
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| SchemaError::NotJson(e.to_string()))?;
        check_depth(&doc, 0)?;
        let top = doc.as_object().ok_or_else(|| invalid("", "a schema is a JSON object"))?;
        for key in top.keys() {
            if !matches!(key.as_str(), "$schema" | "self" | "type" | "properties" | "required" | "additionalProperties")
                && !ANNOTATIONS.contains(&key.as_str())
            {
                return Err(SchemaError::Unsupported { at: String::new(), keyword: key.clone() });
            }
        }
        match top.get("$schema").and_then(Value::as_str) {
            Some(IGLU_META_SCHEMA) | Some(DRAFT_2020_12) => {}
            Some(other) => return Err(invalid("/$schema", &format!("`{other}`: use Iglu's `{IGLU_META_SCHEMA}` (or `{DRAFT_2020_12}`)"))),
            None => return Err(invalid("/$schema", &format!("missing: a self-describing schema names `{IGLU_META_SCHEMA}`"))),
        }
        let (vendor, name, version) = parse_self(top.get("self"))?;
        if top.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid("/type", "an event is an object: `\"type\": \"object\"`"));
        }
        match top.get("additionalProperties") {
            None | Some(Value::Bool(true)) => {}
            Some(_) => {
                return Err(invalid(
                    "/additionalProperties",
                    "only `true` (the default): properties the schema does not declare are kept in raw_event, never refused",
                ))
            }
        }
        let required = parse_required(top.get("required"))?;
        let props = match top.get("properties") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(invalid("/properties", "an object of property schemas")),
        };
        if props.len() > MAX_PROPERTIES {
            return Err(SchemaError::Limit { at: "/properties".into(), what: "properties", value: props.len(), max: MAX_PROPERTIES });
        }
        for r in &required {
            if !props.contains_key(r) {
                return Err(invalid("/required", &format!("`{r}` is not among the properties")));
            }
        }
        let mut properties = Vec::with_capacity(props.len());
        for (pname, p) in &props {
            properties.push(parse_property(pname, p, required.contains(pname))?);
        }
        let canonical = canonical_json(&doc);
        Ok(Schema { vendor, name, version, properties, canonical })
    }

    /// A schema the log recorded (its canonical form and the hash it was recorded under),
    /// parsed again and checked against that hash: what every reader of the log's records
    /// (the CLI, the API) goes through.
    pub fn from_record(content: &[u8], hash: &str) -> Result<Schema, SchemaError> {
        let s = Schema::parse(content).map_err(|e| SchemaError::Record { hash: hash.to_string(), reason: e.to_string() })?;
        if s.hash() != hash {
            return Err(SchemaError::Record { hash: hash.to_string(), reason: format!("its content hashes to {}", s.hash()) });
        }
        Ok(s)
    }

    /// The document in canonical form ([`canonical_json`]): keys sorted (but the
    /// properties, in column order), no whitespace, numbers as serde_json writes them.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// `sha256:<hex>` of the canonical form ([`content_hash`]).
    pub fn hash(&self) -> String {
        content_hash(self.canonical.as_bytes())
    }

    /// `iglu:<vendor>/<name>/jsonschema/<version>`, the name Snowplow's tools use.
    pub fn uri(&self) -> String {
        format!("iglu:{}/{}/jsonschema/{}", self.vendor, self.name, self.version)
    }

    /// The table of this type's model: `<name>` for model 1, `<name>_<model>` above
    /// (Snowplow's way for Redshift). The seed's types keep their own names ([`builtin`]).
    pub fn table_name(&self) -> String {
        if self.version.model == 1 {
            self.name.clone()
        } else {
            format!("{}_{}", self.name, self.version.model)
        }
    }

    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }
}

fn invalid(at: &str, reason: &str) -> SchemaError {
    SchemaError::Invalid { at: at.to_string(), reason: reason.to_string() }
}

fn check_depth(v: &Value, depth: usize) -> Result<(), SchemaError> {
    if depth > MAX_DOCUMENT_DEPTH {
        return Err(SchemaError::Limit { at: String::new(), what: "levels of nesting", value: depth, max: MAX_DOCUMENT_DEPTH });
    }
    match v {
        Value::Object(m) => m.values().try_for_each(|x| check_depth(x, depth + 1)),
        Value::Array(a) => a.iter().try_for_each(|x| check_depth(x, depth + 1)),
        _ => Ok(()),
    }
}

/// A name that is a column or table name everywhere: lower case ASCII letters, digits and
/// `_`, starting with a letter.
fn is_snake_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b[0].is_ascii_lowercase() && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn parse_self(v: Option<&Value>) -> Result<(String, String, Version), SchemaError> {
    let s = v.and_then(Value::as_object).ok_or_else(|| invalid("/self", "missing: `{\"vendor\", \"name\", \"format\", \"version\"}`"))?;
    for key in s.keys() {
        if !matches!(key.as_str(), "vendor" | "name" | "format" | "version") {
            return Err(SchemaError::Unsupported { at: "/self".into(), keyword: key.clone() });
        }
    }
    let text = |k: &str| s.get(k).and_then(Value::as_str).ok_or_else(|| invalid(&format!("/self/{k}"), "missing, or not a string"));
    let vendor = text("vendor")?;
    if vendor.is_empty()
        || vendor.len() > MAX_VENDOR_BYTES
        || !vendor.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(invalid(
            "/self/vendor",
            &format!("`{vendor}`: 1 to {MAX_VENDOR_BYTES} of a-z, A-Z, 0-9, `.`, `-`, `_` (Iglu's), like `com.example.game`"),
        ));
    }
    let name = text("name")?;
    if !is_snake_name(name) || name.len() > MAX_NAME_BYTES {
        return Err(invalid(
            "/self/name",
            &format!("`{name}`: the event_type and table name: 1 to {MAX_NAME_BYTES} of a-z, 0-9 and `_`, starting with a letter"),
        ));
    }
    if RESERVED_TYPE_NAMES.contains(&name) {
        return Err(SchemaError::Reserved { name: name.to_string(), why: "a route of the API or a table `sql` adds" });
    }
    if text("format")? != "jsonschema" {
        return Err(invalid("/self/format", "must be `jsonschema`"));
    }
    let version = text("version")?;
    let version = Version::parse(version)
        .ok_or_else(|| invalid("/self/version", &format!("`{version}`: MODEL-REVISION-ADDITION, three numbers, MODEL from 1 (`1-0-0`)")))?;
    Ok((vendor.to_string(), name.to_string(), version))
}

fn parse_required(v: Option<&Value>) -> Result<Vec<String>, SchemaError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let a = v.as_array().ok_or_else(|| invalid("/required", "an array of property names"))?;
    let mut out: Vec<String> = Vec::with_capacity(a.len());
    for x in a {
        let s = x.as_str().ok_or_else(|| invalid("/required", "an array of property names"))?;
        if out.iter().any(|o| o == s) {
            return Err(invalid("/required", &format!("`{s}` twice")));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

fn parse_property(name: &str, v: &Value, required: bool) -> Result<Property, SchemaError> {
    let at = format!("/properties/{name}");
    if !is_snake_name(name) || name.len() > MAX_NAME_BYTES {
        return Err(invalid(&at, &format!("`{name}`: a column name: 1 to {MAX_NAME_BYTES} of a-z, 0-9 and `_`, starting with a letter")));
    }
    if RESERVED_PROPERTY_NAMES.contains(&name) {
        return Err(SchemaError::Reserved { name: name.to_string(), why: "a column or envelope field of every table" });
    }
    let p = v.as_object().ok_or_else(|| invalid(&at, "a property schema is an object"))?;
    for key in p.keys() {
        if !matches!(key.as_str(), "type" | "minimum" | "maximum" | "maxLength" | "enum" | "format") && !ANNOTATIONS.contains(&key.as_str())
        {
            return Err(SchemaError::Unsupported { at: at.clone(), keyword: key.clone() });
        }
    }
    let (json_type, null_allowed) = match p.get("type") {
        Some(Value::String(t)) => {
            (JsonType::parse(t).ok_or_else(|| invalid(&format!("{at}/type"), &format!("`{t}` is not a supported type")))?, false)
        }
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            let non_null: Vec<&str> = names.iter().copied().filter(|t| *t != "null").collect();
            if names.len() != ts.len() || non_null.len() != 1 || names.len() != 2 {
                return Err(invalid(&format!("{at}/type"), "one type, or one type and \"null\" (`[\"integer\", \"null\"]`)"));
            }
            (
                JsonType::parse(non_null[0])
                    .ok_or_else(|| invalid(&format!("{at}/type"), &format!("`{}` is not a supported type", non_null[0])))?,
                true,
            )
        }
        _ => return Err(invalid(&format!("{at}/type"), "missing: integer, number, string, boolean, object or array")),
    };
    let only_for = |key: &str, types: &[JsonType]| -> Result<(), SchemaError> {
        if p.contains_key(key) && !types.contains(&json_type) {
            let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
            return Err(invalid(&format!("{at}/{key}"), &format!("applies to {} only, not {}", names.join(" and "), json_type.as_str())));
        }
        Ok(())
    };
    only_for("minimum", &[JsonType::Integer, JsonType::Number])?;
    only_for("maximum", &[JsonType::Integer, JsonType::Number])?;
    only_for("maxLength", &[JsonType::String])?;
    only_for("enum", &[JsonType::String])?;
    only_for("format", &[JsonType::String, JsonType::Number])?;
    let mut prop = Property {
        name: name.to_string(),
        json_type,
        null_allowed,
        required,
        column: ColumnType::String,
        int_range: None,
        number_range: (None, None),
        max_length: None,
        enum_values: None,
    };
    let format = match p.get("format") {
        None => None,
        Some(Value::String(f)) => Some(f.as_str()),
        Some(_) => return Err(invalid(&format!("{at}/format"), "a string")),
    };
    match json_type {
        JsonType::Integer => {
            let bound = |key: &str, default: i64| -> Result<i64, SchemaError> {
                match p.get(key) {
                    None => Ok(default),
                    Some(v) => v.as_i64().ok_or_else(|| invalid(&format!("{at}/{key}"), "an integer within 64 bits")),
                }
            };
            let (lo, hi) = (bound("minimum", i64::MIN)?, bound("maximum", i64::MAX)?);
            if lo > hi {
                return Err(invalid(&at, &format!("minimum {lo} is above maximum {hi}")));
            }
            prop.int_range = Some((lo, hi));
            prop.column = if lo >= i16::MIN as i64 && hi <= i16::MAX as i64 {
                ColumnType::SmallInt
            } else if lo >= i32::MIN as i64 && hi <= i32::MAX as i64 {
                ColumnType::Int
            } else {
                ColumnType::BigInt
            };
        }
        JsonType::Number => {
            let bound = |key: &str| -> Result<Option<f64>, SchemaError> {
                match p.get(key) {
                    None => Ok(None),
                    Some(v) => {
                        v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| invalid(&format!("{at}/{key}"), "a finite number"))
                    }
                }
            };
            prop.number_range = (bound("minimum")?, bound("maximum")?);
            if let (Some(lo), Some(hi)) = prop.number_range {
                if lo > hi {
                    return Err(invalid(&at, &format!("minimum {lo} is above maximum {hi}")));
                }
            }
            prop.column = match format {
                None | Some("double") => ColumnType::Double,
                Some("float") => ColumnType::Float,
                Some(f) => {
                    return Err(invalid(
                        &format!("{at}/format"),
                        &format!("`{f}`: a number takes `float` (32 bits) or `double` (the default)"),
                    ))
                }
            };
        }
        JsonType::String => {
            if let Some(m) = p.get("maxLength") {
                let m = m.as_u64().ok_or_else(|| invalid(&format!("{at}/maxLength"), "a non-negative integer"))?;
                if m as usize > STRING_LIMIT_BYTES {
                    return Err(SchemaError::Limit {
                        at: format!("{at}/maxLength"),
                        what: "characters (questlog's limit on every string, in bytes)",
                        value: m as usize,
                        max: STRING_LIMIT_BYTES,
                    });
                }
                prop.max_length = Some(m);
            }
            if let Some(e) = p.get("enum") {
                let a = e.as_array().ok_or_else(|| invalid(&format!("{at}/enum"), "an array of strings"))?;
                if a.is_empty() || a.len() > MAX_ENUM_VALUES {
                    return Err(SchemaError::Limit {
                        at: format!("{at}/enum"),
                        what: "values (at least 1)",
                        value: a.len(),
                        max: MAX_ENUM_VALUES,
                    });
                }
                let mut values: Vec<String> = Vec::with_capacity(a.len());
                for x in a {
                    let s = x.as_str().ok_or_else(|| invalid(&format!("{at}/enum"), "an array of strings"))?;
                    if s.len() > STRING_LIMIT_BYTES {
                        return Err(SchemaError::Limit {
                            at: format!("{at}/enum"),
                            what: "bytes in a value",
                            value: s.len(),
                            max: STRING_LIMIT_BYTES,
                        });
                    }
                    if values.iter().any(|v| v == s) {
                        return Err(invalid(&format!("{at}/enum"), &format!("`{s}` twice")));
                    }
                    values.push(s.to_string());
                }
                prop.enum_values = Some(values);
            }
            prop.column = match format {
                None => ColumnType::String,
                Some("date-time") => ColumnType::Timestamp,
                Some(f) => return Err(invalid(&format!("{at}/format"), &format!("`{f}`: a string takes `date-time` only"))),
            };
            if prop.column == ColumnType::Timestamp && (prop.enum_values.is_some() || prop.max_length.is_some()) {
                return Err(invalid(&at, "a date-time takes neither `enum` nor `maxLength`"));
            }
        }
        JsonType::Boolean => prop.column = ColumnType::Boolean,
        JsonType::Object | JsonType::Array => prop.column = ColumnType::Json,
    }
    Ok(prop)
}

/// `v` with object keys sorted at every level but one, written without whitespace: the
/// members of the top level's `properties` keep their order, which is the order of the
/// table's columns (two documents that differ in it are different schemas).
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value, keep_order: bool) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                if !keep_order {
                    keys.sort();
                }
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k], false))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| sorted(x, false)).collect()),
            other => other.clone(),
        }
    }
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k], k == "properties"))).collect()).to_string()
        }
        other => sorted(other, false).to_string(),
    }
}

/// Why a schema document is refused. Each names where in the document (a JSON pointer).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SchemaError {
    #[error("{bytes} bytes, over the {MAX_SCHEMA_BYTES}-byte limit of a schema")]
    TooLarge { bytes: usize },
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("at `{at}`: unsupported keyword `{keyword}` (questlog takes the subset in docs/CONTRACT.md 13.1)")]
    Unsupported { at: String, keyword: String },
    #[error("at `{at}`: {reason}")]
    Invalid { at: String, reason: String },
    #[error("at `{at}`: {value} {what}, over the limit of {max}")]
    Limit { at: String, what: &'static str, value: usize, max: usize },
    #[error("`{name}` is reserved: {why}")]
    Reserved { name: String, why: &'static str },
    #[error("the log's schema record {hash} is not one: {reason}")]
    Record { hash: String, reason: String },
}

/// One change between two versions of a model that readers of its table cannot take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    PropertyRemoved { name: String },
    TypeChanged { name: String, from: String, to: String },
    RequiredAdded { name: String },
    RequiredDropped { name: String },
    NullDropped { name: String },
    NullAdded { name: String },
    RangeNarrowed { name: String, from: String, to: String },
    MaxLengthNarrowed { name: String, from: String, to: String },
    EnumNarrowed { name: String, removed: Vec<String> },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::PropertyRemoved { name } => write!(f, "PROPERTY_REMOVED {name}"),
            Change::TypeChanged { name, from, to } => write!(f, "TYPE_CHANGED {name}: {from} → {to}"),
            Change::RequiredAdded { name } => write!(f, "REQUIRED_ADDED {name}"),
            Change::RequiredDropped { name } => write!(f, "REQUIRED_DROPPED {name}"),
            Change::NullDropped { name } => write!(f, "NULL_DROPPED {name}"),
            Change::NullAdded { name } => write!(f, "NULL_ADDED {name}"),
            Change::RangeNarrowed { name, from, to } => write!(f, "RANGE_NARROWED {name}: {from} → {to}"),
            Change::MaxLengthNarrowed { name, from, to } => write!(f, "MAX_LENGTH_NARROWED {name}: {from} → {to}"),
            Change::EnumNarrowed { name, removed } => write!(f, "ENUM_NARROWED {name}: {} removed", removed.join(", ")),
        }
    }
}

/// What registering `new` after the versions of its type already known does.
#[derive(Clone, Debug, PartialEq)]
pub enum Evolution {
    /// The first version of this model: a table of its own ([`Schema::table_name`]).
    NewTable,
    /// A later version of a model: the same table, these properties added as nullable
    /// columns after the existing ones (none when only annotations or bounds widened).
    Addition { added: Vec<String> },
    /// The same version with the same canonical form: nothing to record.
    Unchanged,
}

/// Why a version is refused against the versions before it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvolutionError {
    #[error("{uri}: version {version} is already registered with another content ({hash}); a change needs a new version")]
    VersionTaken { uri: String, version: Version, hash: String },
    #[error("{uri}: version {version} is not after {latest}, the newest of model {model}")]
    VersionNotNewer { uri: String, version: Version, latest: Version, model: u32 },
    #[error("{uri}: {reason}")]
    Clash { uri: String, reason: String },
    #[error(
        "{uri}: the log has {max} tables of registered types, the limit ({MAX_REGISTERED_TABLES}); a new model or type needs one more"
    )]
    TooManyTables { uri: String, max: usize },
    #[error("{uri} is not backward compatible with {against}: {}; a change like this needs a new MODEL version (a table of its own)", changes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; "))]
    Incompatible { uri: String, against: String, changes: Vec<Change> },
}

/// Checks `new` against every schema `known` before it (registered, in any order; the
/// built-ins are not among them): the names it takes, then its evolution ([`evolve`]).
pub fn check_against(known: &[Schema], new: &Schema) -> Result<Evolution, EvolutionError> {
    let clash = |reason: String| Err(EvolutionError::Clash { uri: new.uri(), reason });
    if new.vendor == builtin::VENDOR {
        return clash(format!("the vendor `{}` is questlog's own (its built-in types)", builtin::VENDOR));
    }
    if builtin::DOCUMENTS.iter().any(|(n, _)| *n == new.name) {
        return clash(format!("`{}` is one of the seed's built-in types", new.name));
    }
    if RESERVED_FOR_NEW_TYPES.contains(&new.name.as_str()) && !known.iter().any(|k| k.name == new.name) {
        return clash(format!("`{}` is reserved: a route of the API (Snowplow's GET /i)", new.name));
    }
    let table = new.table_name();
    if builtin::TABLE_NAMES.contains(&table.as_str()) {
        return clash(format!("its table `{table}` is a built-in table's name or directory"));
    }
    let tables: std::collections::BTreeSet<String> = known.iter().map(Schema::table_name).collect();
    if !tables.contains(&table) && tables.len() >= MAX_REGISTERED_TABLES {
        return Err(EvolutionError::TooManyTables { uri: new.uri(), max: tables.len() });
    }
    for k in known {
        if k.name == new.name && k.vendor != new.vendor {
            return clash(format!("the event_type `{}` is already `{}`'s ({})", new.name, k.vendor, k.uri()));
        }
        if k.name != new.name && k.table_name() == table {
            return clash(format!("its table `{table}` is already the table of {}", k.uri()));
        }
    }
    evolve(known, new)
}

/// Checks `new` against `known`, the versions of the same vendor and name registered before
/// (any order). Within a model, every earlier version must read the new one's events
/// into the same table (BACKWARD_TRANSITIVE): only new optional properties and wider
/// bounds, enums and lengths that keep each column's type.
pub fn evolve(known: &[Schema], new: &Schema) -> Result<Evolution, EvolutionError> {
    let same_model: Vec<&Schema> =
        known.iter().filter(|k| k.vendor == new.vendor && k.name == new.name && k.version.model == new.version.model).collect();
    if let Some(same) = same_model.iter().find(|k| k.version == new.version) {
        return if same.canonical == new.canonical {
            Ok(Evolution::Unchanged)
        } else {
            Err(EvolutionError::VersionTaken { uri: new.uri(), version: new.version, hash: same.hash() })
        };
    }
    let Some(latest) = same_model.iter().map(|k| k.version).max() else { return Ok(Evolution::NewTable) };
    if new.version < latest {
        return Err(EvolutionError::VersionNotNewer { uri: new.uri(), version: new.version, latest, model: new.version.model });
    }
    let mut sorted = same_model.clone();
    sorted.sort_by_key(|k| k.version);
    for old in &sorted {
        let changes = changes(old, new);
        if !changes.is_empty() {
            return Err(EvolutionError::Incompatible { uri: new.uri(), against: old.uri(), changes });
        }
    }
    let newest = sorted.last().expect("a model with versions");
    let added = new.properties.iter().filter(|p| newest.property(&p.name).is_none()).map(|p| p.name.clone()).collect();
    Ok(Evolution::Addition { added })
}

fn type_label(p: &Property) -> String {
    format!("{} ({})", p.json_type.as_str(), p.column.sql_name())
}

/// What readers of `old`'s table cannot take in `new` (empty: compatible).
pub fn changes(old: &Schema, new: &Schema) -> Vec<Change> {
    let mut out = Vec::new();
    for o in &old.properties {
        let name = o.name.clone();
        let Some(n) = new.property(&o.name) else {
            out.push(Change::PropertyRemoved { name });
            continue;
        };
        if o.json_type != n.json_type || o.column != n.column {
            out.push(Change::TypeChanged { name, from: type_label(o), to: type_label(n) });
            continue;
        }
        if !o.required && n.required {
            out.push(Change::RequiredAdded { name: name.clone() });
        }
        if o.required && !n.required {
            out.push(Change::RequiredDropped { name: name.clone() });
        }
        if o.null_allowed && !n.null_allowed {
            out.push(Change::NullDropped { name: name.clone() });
        }
        if o.required && !o.null_allowed && n.required && n.null_allowed {
            // A NOT NULL column would get nulls.
            out.push(Change::NullAdded { name: name.clone() });
        }
        if let (Some((olo, ohi)), Some((nlo, nhi))) = (o.int_range, n.int_range) {
            if nlo > olo || nhi < ohi {
                out.push(Change::RangeNarrowed { name: name.clone(), from: format!("{olo}..{ohi}"), to: format!("{nlo}..{nhi}") });
            }
        }
        let (olo, ohi) = o.number_range;
        let (nlo, nhi) = n.number_range;
        let narrower = |old: Option<f64>, new: Option<f64>, lower: bool| match (old, new) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(a), Some(b)) => {
                if lower {
                    b > a
                } else {
                    b < a
                }
            }
        };
        if narrower(olo, nlo, true) || narrower(ohi, nhi, false) {
            let show = |lo: Option<f64>, hi: Option<f64>| {
                format!("{}..{}", lo.map_or("".into(), |x| x.to_string()), hi.map_or("".into(), |x| x.to_string()))
            };
            out.push(Change::RangeNarrowed { name: name.clone(), from: show(olo, ohi), to: show(nlo, nhi) });
        }
        match (o.max_length, n.max_length) {
            (old_max, Some(new_max)) if old_max.is_none_or(|m| new_max < m) => out.push(Change::MaxLengthNarrowed {
                name: name.clone(),
                from: old_max.map_or("none".into(), |m| m.to_string()),
                to: new_max.to_string(),
            }),
            _ => {}
        }
        match (&o.enum_values, &n.enum_values) {
            (None, Some(_)) => out.push(Change::EnumNarrowed { name: name.clone(), removed: vec!["(any string)".into()] }),
            (Some(ov), Some(nv)) => {
                let removed: Vec<String> = ov.iter().filter(|v| !nv.contains(v)).cloned().collect();
                if !removed.is_empty() {
                    out.push(Change::EnumNarrowed { name: name.clone(), removed });
                }
            }
            _ => {}
        }
    }
    for n in &new.properties {
        if old.property(&n.name).is_none() && n.required {
            out.push(Change::RequiredAdded { name: n.name.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests;
