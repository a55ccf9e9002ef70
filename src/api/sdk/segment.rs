//! The Segment spec's tracking API (`POST /v1/batch`, `POST /v1/track`), as Segment's and
//! RudderStack's SDKs send it (docs/CONTRACT.md 3.9.1): `track` messages become events of
//! the type their `event` name maps to; `identify`, `page`, `screen`, `group` and `alias`
//! are answered and counted, not stored.

use super::*;

/// Most bytes of one message, as Segment's tracking API and SDKs count it (32 KB; the
/// Python and Node SDKs drop larger messages before sending). A larger one is rejected
/// (`too_large`) and kept, the rest of its batch is taken.
pub const SEGMENT_MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// Most bytes of one batch body, inflated (Segment's tracking API: 500 KB; its SDKs cut
/// batches below that, ~475 KB). A larger body is answered 413 whole: an SDK does not
/// retry a 4xx, and one that sends more is not following the protocol.
pub const SEGMENT_MAX_BATCH_BYTES: usize = 500 * 1024;

/// The message types that are answered and counted but not stored: questlog's tables
/// hold events; a user's traits or a page view have no table (yet).
pub const SEGMENT_COUNTED_TYPES: [&str; 5] = ["identify", "page", "screen", "group", "alias"];

/// A batch body: the messages, and the write key some SDKs put in the body instead of
/// the `Authorization` header.
#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
}

/// What one message comes to.
#[derive(Debug, PartialEq)]
pub(super) enum Message {
    /// A `track`: the questlog event's JSON text.
    Event(String),
    /// Another type of message, counted by its type.
    Counted(&'static str),
}

/// One Segment message as a questlog event (see the module docs and CONTRACT 3.9.1).
/// `default_type`: the type of a message without one (`/v1/track` takes bare `track`s).
pub(super) fn message(raw: &str, default_type: Option<&str>) -> Result<Message, Rejection> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| Rejection::new(RejectReason::MalformedJson, None, format!("malformed JSON: {e}")))?;
    let serde_json::Value::Object(m) = value else {
        return Err(Rejection::new(RejectReason::NotAnObject, None, "a Segment message is a JSON object".into()));
    };
    let kind = match m.get("type") {
        Some(serde_json::Value::String(t)) => t.as_str(),
        None => default_type.ok_or_else(|| Rejection::new(RejectReason::MissingField, Some("type"), "missing `type`".into()))?,
        Some(_) => return Err(Rejection::new(RejectReason::WrongType, Some("type"), "`type` must be a string".into())),
    };
    if let Some(&counted) = SEGMENT_COUNTED_TYPES.iter().find(|&&t| t == kind) {
        return Ok(Message::Counted(counted));
    }
    if kind != "track" {
        return Err(Rejection::new(
            RejectReason::UnknownEventType,
            Some("type"),
            format!("unknown Segment message type `{}`", kind.chars().take(64).collect::<String>()),
        ));
    }
    let name = match m.get("event") {
        Some(serde_json::Value::String(s)) => s,
        None => return Err(Rejection::new(RejectReason::MissingEventType, Some("event"), "a track message names its `event`".into())),
        Some(_) => return Err(Rejection::new(RejectReason::WrongType, Some("event"), "`event` must be a string".into())),
    };
    let type_name = type_name_of(name).ok_or_else(|| {
        Rejection::new(
            RejectReason::UnknownEventType,
            Some("event"),
            format!(
                "event name `{}` gives no type name (letters, digits and separators, starting with a letter)",
                name.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let properties = match m.get("properties") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(p)) => Some(p),
        Some(_) => return Err(Rejection::new(RejectReason::WrongType, Some("properties"), "`properties` must be an object".into())),
    };
    let id = |field: &str| {
        id_text(m.get(field)).map_err(|kind| Rejection::new(RejectReason::WrongType, Some(field), format!("`{field}` is {kind}")))
    };
    let player_id = match id("userId")? {
        Some(u) => Some(u),
        None => id("anonymousId")?,
    };
    let context = m.get("context").and_then(serde_json::Value::as_object);
    // RudderStack's SDKs send a session as `context.sessionId`; Segment's have none.
    let session_id = id_text(context.and_then(|c| c.get("sessionId")))
        .map_err(|kind| Rejection::new(RejectReason::WrongType, Some("context.sessionId"), format!("`context.sessionId` is {kind}")))?;
    let event_time = match m.get("timestamp") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(Rejection::new(RejectReason::BadTime, Some("timestamp"), "`timestamp` must be an ISO 8601 string".into())),
    };
    let envelope = Envelope { event_id: id("messageId")?, player_id, session_id, event_time };
    event_json(&type_name, properties, envelope).map(Message::Event)
}

/// `POST /v1/batch`: `{"batch": [message, …], "writeKey"?: …}`.
pub(in crate::api) async fn batch(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let resp = append_response(&state, take(&state, &headers, body, false).await);
    finish(&state, ROUTE_SDK, started, resp)
}

/// `POST /v1/track`: one message, `type` implied.
pub(in crate::api) async fn track(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let resp = append_response(&state, take(&state, &headers, body, true).await);
    finish(&state, ROUTE_SDK, started, resp)
}

/// Reads, checks and appends a batch (or, with `single`, one message).
async fn take(state: &AppState, headers: &HeaderMap, body: Body, single: bool) -> Result<(String, BodyMemory), ApiError> {
    let mut memory = BodyMemory::new(&state.body_memory);
    // The key may be in the body: the body is read (within the budget and the batch
    // limit) before the key is checked; nothing is kept or appended without a key.
    let body = read_body(headers, body, state.limits.body_read_timeout_ms, &mut memory).await?;
    if body.len() > SEGMENT_MAX_BATCH_BYTES {
        return Err(ApiError::SdkBatchTooLarge { size: body.len(), limit: SEGMENT_MAX_BATCH_BYTES });
    }
    let text = std::str::from_utf8(&body);
    let parsed: Result<(Vec<&str>, Option<String>), ApiError> = match text {
        Err(e) => Err(ApiError::Unreadable(format!("body is not UTF-8: {e}"))),
        Ok(t) if single => Ok((vec![t.trim()], None)),
        Ok(t) => serde_json::from_str::<Batch>(t)
            .map(|b| (b.batch.iter().map(|r| r.get()).collect(), b.write_key))
            .map_err(|e| ApiError::Unreadable(format!("not a Segment batch (`{{\"batch\": [...]}}`): {e}"))),
    };
    // A key from `Authorization` (Basic with the write key as user name, or Bearer) or
    // `X-API-Key`, else the body's `writeKey`.
    let body_key = parsed.as_ref().ok().and_then(|(_, k)| k.as_deref());
    let app = state.writer_with(headers, body_key)?;
    let meta = request_meta(headers, app);
    memory.take(meta.text_bytes())?;
    let messages = match parsed {
        Ok((messages, _)) => messages,
        Err(err) => return Err(keep_unreadable(state, app, &body, &meta, err).await),
    };
    if messages.len() > MAX_EVENTS_PER_REQUEST {
        return Err(ApiError::TooManyEvents);
    }
    memory.take(2 * body.len() + Outcome::record_bytes(messages.len()))?;
    state.charge(app, messages.len() as u64)?;
    let now = now_us();
    let mut out = Outcome::new(state, meta, now, messages.len());
    for (i, raw) in messages.iter().enumerate() {
        if raw.len() > SEGMENT_MAX_MESSAGE_BYTES {
            let why = Rejection::new(
                RejectReason::TooLarge,
                None,
                format!("message of {} bytes, over Segment's limit of {SEGMENT_MAX_MESSAGE_BYTES}", raw.len()),
            );
            out.take(&mut memory, i, raw, Err(why))?;
            continue;
        }
        match message(raw, single.then_some("track")) {
            Ok(Message::Event(json)) => {
                let parsed = event::validate_json_in(&json, &out.types);
                out.take(&mut memory, i, &json, parsed)?;
            }
            Ok(Message::Counted(kind)) => state.metrics.sdk_message("segment", kind),
            Err(why) => out.take(&mut memory, i, raw, Err(why))?,
        }
    }
    let answer = out.commit(&mut memory).await?.json(false);
    // Segment's API answers `{"success": true}`; the counts follow.
    let answer = format!("{{\"success\":true,{}", &answer[1..]);
    drop(body);
    Ok((answer, memory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_track_message_becomes_an_event_of_its_named_type() {
        let raw = r#"{"type":"track","event":"Join Guild","properties":{"guild_id":7,"name":"Knights"},"userId":"p1",
            "anonymousId":"a1","messageId":"m-1","timestamp":"2026-12-05T01:02:03.456+00:00",
            "context":{"library":{"name":"analytics-python"},"sessionId":1733360000}}"#;
        assert_eq!(
            message(raw, None).unwrap(),
            Message::Event(
                r#"{"event_type":"join_guild","guild_id":7,"name":"Knights","event_id":"m-1","player_id":"p1","session_id":"1733360000","event_time":"2026-12-05T01:02:03.456+00:00"}"#
                    .into()
            )
        );
        // The anonymous id when there is no user id; no properties at all.
        let raw = r#"{"type":"track","event":"level_up","anonymousId":"a1","messageId":"m-2"}"#;
        assert_eq!(message(raw, None).unwrap(), Message::Event(r#"{"event_type":"level_up","event_id":"m-2","player_id":"a1"}"#.into()));
        assert_eq!(
            message(r#"{"event":"x","messageId":"m"}"#, Some("track")).unwrap(),
            Message::Event(r#"{"event_type":"x","event_id":"m"}"#.into())
        );
    }

    #[test]
    fn other_messages_are_counted_and_bad_ones_say_why() {
        assert_eq!(message(r#"{"type":"identify","userId":"p1","traits":{}}"#, None).unwrap(), Message::Counted("identify"));
        let reason = |raw: &str| message(raw, None).unwrap_err().reason;
        assert_eq!(reason(r#"{"type":"track","properties":{}}"#), RejectReason::MissingEventType);
        assert_eq!(reason(r#"{"type":"track","event":"404"}"#), RejectReason::UnknownEventType);
        assert_eq!(reason(r#"{"type":"purchase","event":"x"}"#), RejectReason::UnknownEventType);
        assert_eq!(reason(r#"{"type":"track","event":"x","properties":[1]}"#), RejectReason::WrongType);
        assert_eq!(reason(r#"{"type":"track","event":"x","userId":{"a":1}}"#), RejectReason::WrongType);
        assert_eq!(reason(r#"{"type":"track","event":"x","timestamp":12}"#), RejectReason::BadTime);
        assert_eq!(reason(r#"[1]"#), RejectReason::NotAnObject);
        assert_eq!(reason(r#"{"type":"track","event":"x","properties":{"event_id":"y"}}"#), RejectReason::ServerOwnedField);
    }
}
