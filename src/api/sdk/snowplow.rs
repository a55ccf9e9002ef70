//! Snowplow's tracker protocol (docs/CONTRACT.md 3.9.3): `POST
//! /com.snowplowanalytics.snowplow/tp2` (a `payload_data` batch) and `GET /i` (one event in
//! the query string). A self-describing event (`e=ue`) whose Iglu URI names a registered
//! schema (or a built-in one) becomes an event of that type; Snowplow's other events (page
//! views, structured events, …) are counted, not stored.

use super::*;

/// The Iglu URI of a self-describing event's envelope (`ue_pr`/`ue_px`).
const UNSTRUCT_EVENT: &str = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/";

/// The Iglu URI prefix of a POST body (`payload_data`).
const PAYLOAD_DATA: &str = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/";

/// Most bytes of one event: questlog's own event limit.
pub const SNOWPLOW_MAX_MESSAGE_BYTES: usize = MAX_EVENT_BYTES;

/// The 1×1 transparent GIF the Snowplow collector answers `GET /i` with (pixel tracking).
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

#[derive(serde::Deserialize)]
struct PayloadData<'a> {
    schema: String,
    #[serde(borrow)]
    data: BoundedArray<'a>,
}

fn split_payload(text: &str) -> Result<(Vec<&str>, Option<String>), String> {
    let p: PayloadData = serde_json::from_str(text).map_err(|e| format!("not a Snowplow payload_data body: {e}"))?;
    if !p.schema.starts_with(PAYLOAD_DATA) {
        return Err(format!("the body's schema `{}` is not {PAYLOAD_DATA}…", p.schema.chars().take(128).collect::<String>()));
    }
    Ok((p.data.0.iter().map(|r| r.get()).collect(), None))
}

/// The counted kind of a Snowplow event other than a self-describing one (`e`).
fn counted(e: &str) -> &'static str {
    match e {
        "pv" | "pp" => "page",
        "se" => "structured",
        "tr" | "ti" => "ecommerce",
        _ => "other",
    }
}

/// Base64 as trackers send it: URL-safe or standard alphabet, padded or not.
fn base64_any(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let t = s.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t)).ok()
}

/// The type an Iglu URI names: a registered schema's (same vendor and name, the model of the
/// newest registered version) or a built-in one's (vendor `io.questlog`).
fn type_of_uri(uri: &str, types: &Registry) -> Result<String, Rejection> {
    let unknown = |why: String| Rejection::new(RejectReason::UnknownEventType, Some("schema"), why);
    let rest = uri.strip_prefix("iglu:").ok_or_else(|| unknown(format!("`{}` is not an Iglu URI", clip(uri))))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [vendor, name, "jsonschema", version] = parts.as_slice() else {
        return Err(unknown(format!("`{}` is not iglu:vendor/name/jsonschema/M-R-A", clip(uri))));
    };
    let version = crate::schema::Version::parse(version).ok_or_else(|| unknown(format!("`{}`: bad version", clip(uri))))?;
    if *vendor == crate::schema::builtin::VENDOR && EventType::parse(name).is_some() {
        // The built-in schemas are 1-0-0 (`GET /v1/schemas`).
        return if version.model == 1 {
            Ok(name.to_string())
        } else {
            Err(unknown(format!("`{}`: the built-in schema is model 1", clip(uri))))
        };
    }
    match types.schemas().find(|s| s.vendor == *vendor && s.name == *name) {
        Some(s) if s.version.model == version.model => Ok(s.name.clone()),
        Some(s) => Err(unknown(format!("`{}`: model {} is not the registered one ({})", clip(uri), version.model, s.uri()))),
        None => Err(unknown(format!("`{}` names no registered schema (GET /v1/schemas lists them)", clip(uri)))),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

/// Epoch milliseconds (Snowplow's `dtm`/`ttm`, strings) as RFC 3339 text.
fn time_of_ms(v: Option<&serde_json::Value>, field: &str) -> Result<Option<String>, Rejection> {
    let bad = || Rejection::new(RejectReason::BadTime, Some(field), format!("`{field}` is not epoch milliseconds"));
    let ms: i64 = match v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s.trim().parse().map_err(|_| bad())?,
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(bad)?,
        Some(_) => return Err(bad()),
    };
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).ok_or_else(bad)?;
    Ok(Some(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
}

/// One Snowplow event (a `payload_data` member, or `GET /i`'s parameters as an object) as a
/// questlog event (see the module docs and CONTRACT 3.9.3).
pub(super) fn message(raw: &str, types: &Registry) -> Result<Message, Rejection> {
    let m = object_of(raw, "Snowplow event")?;
    let e = match m.get("e") {
        Some(serde_json::Value::String(e)) => e.as_str(),
        None => return Err(Rejection::new(RejectReason::MissingEventType, Some("e"), "the event has no `e`".into())),
        Some(_) => return Err(Rejection::new(RejectReason::WrongType, Some("e"), "`e` must be a string".into())),
    };
    if e != "ue" {
        return Ok(Message::Counted(counted(e)));
    }
    let text = match (m.get("ue_pr"), m.get("ue_px")) {
        (Some(serde_json::Value::String(pr)), _) => pr.clone(),
        (_, Some(serde_json::Value::String(px))) => base64_any(px)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Rejection::new(RejectReason::MalformedJson, Some("ue_px"), "`ue_px` is not base64 of UTF-8".into()))?,
        _ => {
            return Err(Rejection::new(RejectReason::MissingField, Some("ue_pr"), "a self-describing event has `ue_pr` or `ue_px`".into()))
        }
    };
    let envelope: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Rejection::new(RejectReason::MalformedJson, Some("ue_pr"), format!("the self-describing event is not JSON: {e}")))?;
    if !envelope["schema"].as_str().is_some_and(|s| s.starts_with(UNSTRUCT_EVENT)) {
        return Err(Rejection::new(RejectReason::WrongType, Some("ue_pr"), format!("the event's envelope is not {UNSTRUCT_EVENT}…")));
    }
    let inner = &envelope["data"];
    let uri = inner["schema"]
        .as_str()
        .ok_or_else(|| Rejection::new(RejectReason::MissingField, Some("schema"), "the event names no `schema`".into()))?;
    let type_name = type_of_uri(uri, types)?;
    let properties = match &inner["data"] {
        serde_json::Value::Object(p) => Some(p),
        serde_json::Value::Null => None,
        _ => return Err(Rejection::new(RejectReason::NotAnObject, Some("data"), "the event's `data` must be an object".into())),
    };
    let player_id = match id_of(m.get("uid"), "uid")? {
        Some(u) => Some(u),
        None => id_of(m.get("duid"), "duid")?,
    };
    let event_time = match time_of_ms(m.get("ttm"), "ttm")? {
        Some(t) => Some(t),
        None => time_of_ms(m.get("dtm"), "dtm")?,
    };
    let envelope = Envelope { event_id: id_of(m.get("eid"), "eid")?, player_id, session_id: id_of(m.get("sid"), "sid")?, event_time };
    event_json(&type_name, properties, envelope).map(Message::Event)
}

const SNOWPLOW_TP2: Protocol = Protocol {
    name: "snowplow",
    // A batch over questlog's body limit is refused by the body reader (413) first; the
    // trackers send 10 events a batch, each at most the event limit.
    max_batch_bytes: MAX_DECOMPRESSED_BYTES,
    max_message_bytes: SNOWPLOW_MAX_MESSAGE_BYTES,
    split: split_payload,
    message,
    message_id: None,
};

const SNOWPLOW_GET: Protocol = Protocol { split: |t| Ok((vec![t], None)), ..SNOWPLOW_TP2 };

/// `POST /com.snowplowanalytics.snowplow/tp2`.
pub(in crate::api) async fn tp2(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let answer = take_batch(&state, &headers, body, &SNOWPLOW_TP2).await.map(|t| (t.committed.json(false), t.memory));
    finish(&state, ROUTE_SDK, started, append_response(&state, answer))
}

/// `GET /i?e=ue&ue_px=…`: the parameters as one event; answered with a 1×1 GIF.
pub(in crate::api) async fn pixel(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let started = Instant::now();
    let query = query.unwrap_or_default();
    if query.len() > MAX_EVENT_BYTES {
        // Not 413: the trackers send a 413'd event again for ever. A 400 makes them drop
        // it; it is kept as rejected (after the key check) like an unreadable body.
        let resp = match state.writer_with(&headers, None) {
            Ok(app) => {
                let meta = request_meta(&headers, app);
                let err = ApiError::Unreadable(format!("a query of {} bytes, over the event limit of {MAX_EVENT_BYTES}", query.len()));
                keep_unreadable(&state, app, query.as_bytes(), &meta, err).await.into_response()
            }
            Err(e) => e.into_response(),
        };
        return finish(&state, ROUTE_SDK, started, resp);
    }
    let object: serde_json::Map<String, serde_json::Value> =
        form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned()))).collect();
    let body = Body::from(serde_json::Value::Object(object).to_string());
    let resp = match take_batch(&state, &headers, body, &SNOWPLOW_GET).await {
        Ok(_) => (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"))], PIXEL_GIF).into_response(),
        Err(e) => append_response(&state, Err(e)),
    };
    finish(&state, ROUTE_SDK, started, resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let doc = br#"{"$schema": "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#",
            "self": {"vendor": "com.example.game", "name": "level_up", "format": "jsonschema", "version": "1-0-0"},
            "type": "object", "properties": {"level": {"type": "integer", "minimum": 1, "maximum": 100}}, "required": ["level"]}"#;
        Registry::from_schemas([&crate::schema::Schema::parse(doc).unwrap()])
    }

    #[test]
    fn a_self_describing_event_of_a_registered_schema_becomes_its_event() {
        let ue = r#"{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{"schema":"iglu:com.example.game/level_up/jsonschema/1-0-0","data":{"level":5}}}"#;
        let ue_px = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE.encode(ue)
        };
        let raw = serde_json::json!({"e":"ue","ue_px":ue_px,"eid":"e-1","uid":"p1","sid":"s-1","dtm":"1796436646760","tv":"py-1.1.0"})
            .to_string();
        assert_eq!(
            message(&raw, &registry()).unwrap(),
            Message::Event(
                r#"{"event_type":"level_up","level":5,"event_id":"e-1","player_id":"p1","session_id":"s-1","event_time":"2026-12-05T02:10:46.760Z"}"#.into()
            )
        );
        // ue_pr (plain JSON) the same; a built-in type by questlog's vendor.
        let raw = serde_json::json!({"e":"ue","ue_pr":ue.replace("com.example.game/level_up","io.questlog/join_guild").replace(r#"{"level":5}"#, r#"{"guild_id":1,"name":"x"}"#)}).to_string();
        assert!(
            matches!(message(&raw, &registry()).unwrap(), Message::Event(e) if e.starts_with(r#"{"event_type":"join_guild","guild_id":1"#))
        );
    }

    #[test]
    fn other_events_are_counted_and_unknown_schemas_refused() {
        assert_eq!(message(r#"{"e":"pv","url":"x"}"#, &registry()).unwrap(), Message::Counted("page"));
        assert_eq!(message(r#"{"e":"se","se_ca":"c"}"#, &registry()).unwrap(), Message::Counted("structured"));
        let reason = |inner: &str| {
            let ue = format!(r#"{{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{inner}}}"#);
            message(&serde_json::json!({"e":"ue","ue_pr":ue}).to_string(), &registry()).unwrap_err().reason
        };
        assert_eq!(reason(r#"{"schema":"iglu:com.other/level_up/jsonschema/1-0-0","data":{}}"#), RejectReason::UnknownEventType);
        assert_eq!(reason(r#"{"schema":"iglu:com.example.game/level_up/jsonschema/2-0-0","data":{}}"#), RejectReason::UnknownEventType);
        assert_eq!(reason(r#"{"schema":"iglu:com.example.game/level_up/jsonschema/1-0-0","data":[1]}"#), RejectReason::NotAnObject);
        assert_eq!(message(r#"{"e":"ue","ue_px":"%%%"}"#, &registry()).unwrap_err().reason, RejectReason::MalformedJson);
        assert_eq!(base64_any("eyJhIjoxfQ").as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(base64_any("eyJhIjoxfQ==").as_deref(), Some(&b"{\"a\":1}"[..]));
    }
}
