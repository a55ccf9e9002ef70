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
    batch: BoundedArray<'a>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
}

/// One Segment message as a questlog event (see the module docs and CONTRACT 3.9.1).
/// `default_type`: the type of a message without one (`/v1/track` takes bare `track`s).
pub(super) fn message(raw: &str, default_type: Option<&str>) -> Result<Message, Rejection> {
    let m = object_of(raw, "Segment message")?;
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
    let type_name = type_of(event_name(&m)?)?;
    let properties = properties_of(&m)?;
    let player_id = match id_of(m.get("userId"), "userId")? {
        Some(u) => Some(u),
        None => id_of(m.get("anonymousId"), "anonymousId")?,
    };
    // RudderStack's SDKs send a session as `context.sessionId`; Segment's have none.
    let context = m.get("context").and_then(serde_json::Value::as_object);
    let session_id = id_of(context.and_then(|c| c.get("sessionId")), "context.sessionId")?;
    let envelope = Envelope { event_id: id_of(m.get("messageId"), "messageId")?, player_id, session_id, event_time: time_of(&m)? };
    event_json(&type_name, properties, envelope).map(Message::Event)
}

/// Segment's batches (`/v1/batch`).
const SEGMENT_BATCH: Protocol = Protocol {
    name: "segment",
    max_batch_bytes: SEGMENT_MAX_BATCH_BYTES,
    max_message_bytes: SEGMENT_MAX_MESSAGE_BYTES,
    split: split_batch,
    message: |raw, _| message(raw, None),
    message_id: None,
};

/// One message (`/v1/track`, `type` implied).
const SEGMENT_TRACK: Protocol = Protocol {
    name: "segment",
    max_batch_bytes: SEGMENT_MAX_BATCH_BYTES,
    max_message_bytes: SEGMENT_MAX_MESSAGE_BYTES,
    split: |t| Ok((vec![t.trim()], write_key_of(t))),
    message: |raw, _| message(raw, Some("track")),
    message_id: None,
};

/// A single message's `writeKey` (`/v1/track`), when it has one.
fn write_key_of(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct K {
        #[serde(rename = "writeKey")]
        write_key: Option<String>,
    }
    serde_json::from_str::<K>(text).ok().and_then(|k| k.write_key)
}

/// A batch body's messages and its `writeKey` (the key, when the headers carry none).
fn split_batch(text: &str) -> Result<(Vec<&str>, Option<String>), String> {
    serde_json::from_str::<Batch>(text)
        .map(|b| (b.batch.0.iter().map(|r| r.get()).collect(), b.write_key))
        .map_err(|e| format!("not a Segment batch (`{{\"batch\": [...]}}`): {e}"))
}

/// `POST /v1/batch`: `{"batch": [message, …], "writeKey"?: …}`.
pub(in crate::api) async fn batch(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let resp = append_response(&state, answer(take_batch(&state, &headers, body, &SEGMENT_BATCH).await));
    finish(&state, ROUTE_SDK, started, resp)
}

/// `POST /v1/track`: one message, `type` implied.
pub(in crate::api) async fn track(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let resp = append_response(&state, answer(take_batch(&state, &headers, body, &SEGMENT_TRACK).await));
    finish(&state, ROUTE_SDK, started, resp)
}

/// Segment's API answers `{"success": true}`; questlog's counts follow.
fn answer(taken: Result<Taken, ApiError>) -> Result<(String, BodyMemory), ApiError> {
    let taken = taken?;
    let counts = taken.committed.json(false);
    Ok((format!("{{\"success\":true,{}", &counts[1..]), taken.memory))
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
    fn a_batch_of_more_messages_than_a_request_may_hold_stops_at_the_limit() {
        let body = format!(r#"{{"batch":[{}]}}"#, vec!["0"; MAX_EVENTS_PER_REQUEST + 1].join(","));
        assert!(split_batch(&body).unwrap_err().contains(TOO_MANY));
        let body = format!(r#"{{"batch":[{}],"writeKey":"k"}}"#, vec!["0"; MAX_EVENTS_PER_REQUEST].join(","));
        let (messages, key) = split_batch(&body).unwrap();
        assert_eq!((messages.len(), key.as_deref()), (MAX_EVENTS_PER_REQUEST, Some("k")));
        assert_eq!(write_key_of(r#"{"event":"x","writeKey":"k2"}"#).as_deref(), Some("k2"));
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
