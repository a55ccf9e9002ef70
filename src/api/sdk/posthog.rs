//! PostHog's capture API as its server SDKs send it (docs/CONTRACT.md 3.9.2): `POST
//! /batch/` (capture v0, the SDKs' default) and `POST /i/v1/analytics/events` (v1, with an
//! answer per event). An event becomes an event of the type its name maps to; PostHog's own
//! `$` events (`$identify`, `$set`, `$create_alias`, `$pageview`, …) are counted, not stored.

use super::*;

/// Most bytes of one event: questlog's own event limit (PostHog takes up to 900 KiB; a
/// larger event here is rejected `too_large`, its batch taken).
pub const POSTHOG_MAX_MESSAGE_BYTES: usize = MAX_EVENT_BYTES;

/// Most bytes of one batch body, inflated: questlog's body limit (PostHog's SDKs send at
/// most 5 MiB; its server takes 20 MiB).
pub const POSTHOG_MAX_BATCH_BYTES: usize = MAX_DECOMPRESSED_BYTES;

/// A batch body: v0 carries the project key as `api_key`; v1 in `Authorization: Bearer`.
#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    batch: BoundedArray<'a>,
    #[serde(default)]
    api_key: Option<String>,
}

fn split_batch(text: &str) -> Result<(Vec<&str>, Option<String>), String> {
    serde_json::from_str::<Batch>(text)
        .map(|b| (b.batch.0.iter().map(|r| r.get()).collect(), b.api_key))
        .map_err(|e| format!("not a PostHog batch (`{{\"batch\": [...]}}`): {e}"))
}

/// The counted kind of a PostHog `$` event.
fn counted(event: &str) -> &'static str {
    match event {
        "$identify" | "$set" | "$set_once" => "identify",
        "$create_alias" => "alias",
        "$groupidentify" => "group",
        "$pageview" | "$pageleave" | "$screen" => "page",
        _ => "other",
    }
}

/// One PostHog event (v0 or v1) as a questlog event (see the module docs and CONTRACT
/// 3.9.2).
pub(super) fn message(raw: &str) -> Result<Message, Rejection> {
    let m = object_of(raw, "PostHog event")?;
    let name = event_name(&m)?;
    if name.starts_with('$') {
        return Ok(Message::Counted(counted(name)));
    }
    let type_name = type_of(name)?;
    let all = properties_of(&m)?;
    // PostHog's own properties (`$lib`, `$os`, `$session_id`, …) are the SDK's, not the
    // event's: left out, `$session_id` taken as the session.
    let properties: Option<serde_json::Map<String, serde_json::Value>> =
        all.map(|p| p.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), v.clone())).collect());
    let session_id = match id_of(m.get("session_id"), "session_id")? {
        Some(s) => Some(s),
        None => id_of(all.and_then(|p| p.get("$session_id")), "properties.$session_id")?,
    };
    let envelope = Envelope {
        event_id: id_of(m.get("uuid"), "uuid")?,
        player_id: id_of(m.get("distinct_id"), "distinct_id")?,
        session_id,
        event_time: time_of(&m)?,
    };
    event_json(&type_name, properties.as_ref(), envelope).map(Message::Event)
}

/// An event's `uuid`, for v1's answer per event.
fn uuid_of(raw: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct U {
        uuid: Option<serde_json::Value>,
    }
    // As `message` reads it (a number as its digits), so a refused event is named as stored.
    serde_json::from_str::<U>(raw).ok().and_then(|u| id_text(u.uuid.as_ref()).ok().flatten())
}

const POSTHOG_V0: Protocol = Protocol {
    name: "posthog",
    max_batch_bytes: POSTHOG_MAX_BATCH_BYTES,
    max_message_bytes: POSTHOG_MAX_MESSAGE_BYTES,
    split: split_batch,
    message: |raw, _| message(raw),
    message_id: None,
};

const POSTHOG_V1: Protocol = Protocol { message_id: Some(uuid_of), ..POSTHOG_V0 };

/// `POST /batch/` (capture v0): the SDK takes exactly 200 as success.
pub(in crate::api) async fn batch_v0(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let answer = take_batch(&state, &headers, body, &POSTHOG_V0).await.map(|t| {
        let counts = t.committed.json(false);
        (format!("{{\"status\":1,{}", &counts[1..]), t.memory)
    });
    let resp = append_response(&state, answer);
    finish(&state, ROUTE_SDK, started, resp)
}

/// `POST /i/v1/analytics/events` (capture v1): `{"results": {uuid: {"result": "drop",
/// "details"}}}` names each refused event (the SDK reports it and does not send it
/// again); accepted and duplicate events are left out (accepted).
pub(in crate::api) async fn events_v1(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let answer = take_batch(&state, &headers, body, &POSTHOG_V1).await.map(|t| {
        let members: Vec<serde_json::Value> = serde_json::from_str(&format!("[{}]", t.committed.rejected_members())).unwrap_or_default();
        let mut results = serde_json::Map::new();
        for r in members {
            let index = r["index"].as_u64().and_then(|i| usize::try_from(i).ok());
            if let Some(uuid) = index.and_then(|i| t.ids.get(i).cloned().flatten()) {
                let details = format!("{}: {}", r["reason"].as_str().unwrap_or(""), r["error"].as_str().unwrap_or(""));
                results.insert(uuid, serde_json::json!({"result": "drop", "details": details}));
            }
        }
        let counts = t.committed.json(false);
        (format!("{{\"results\":{},{}", serde_json::Value::Object(results), &counts[1..]), t.memory)
    });
    let resp = append_response(&state, answer);
    finish(&state, ROUTE_SDK, started, resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_becomes_an_event_of_its_named_type_without_posthogs_own_properties() {
        let raw = r#"{"event":"Level Up","distinct_id":"p1","uuid":"0b86da38-9298-4733-b88d-3f5dc8a57bf1",
            "timestamp":"2026-12-05T01:58:52.970619+00:00",
            "properties":{"level":5,"class":"mage","$session_id":"s-1","$lib":"posthog-python","$geoip_disable":true}}"#;
        assert_eq!(
            message(raw).unwrap(),
            Message::Event(
                r#"{"event_type":"level_up","level":5,"class":"mage","event_id":"0b86da38-9298-4733-b88d-3f5dc8a57bf1","player_id":"p1","session_id":"s-1","event_time":"2026-12-05T01:58:52.970619+00:00"}"#
                    .into()
            )
        );
        // v1 lifts the session to the top.
        let raw =
            r#"{"event":"level_up","distinct_id":"p1","uuid":"u","options":{},"properties":{"level":5,"class":"mage"},"session_id":"s-2"}"#;
        assert!(matches!(message(raw).unwrap(), Message::Event(e) if e.contains(r#""session_id":"s-2""#)));
        assert_eq!(uuid_of(raw).as_deref(), Some("u"));
        assert_eq!(uuid_of(r#"{"event":"x","uuid":123}"#).as_deref(), Some("123"), "as `message` stores it");
    }

    #[test]
    fn posthogs_own_events_are_counted_and_bad_ones_say_why() {
        assert_eq!(message(r#"{"event":"$identify","distinct_id":"p1"}"#).unwrap(), Message::Counted("identify"));
        assert_eq!(message(r#"{"event":"$create_alias","distinct_id":"p1"}"#).unwrap(), Message::Counted("alias"));
        assert_eq!(message(r#"{"event":"$exception","distinct_id":"p1"}"#).unwrap(), Message::Counted("other"));
        let reason = |raw: &str| message(raw).unwrap_err().reason;
        assert_eq!(reason(r#"{"distinct_id":"p1"}"#), RejectReason::MissingEventType);
        assert_eq!(reason(r#"{"event":"2fa"}"#), RejectReason::UnknownEventType);
        assert_eq!(reason(r#"{"event":"x","properties":{"player_id":"y"}}"#), RejectReason::ServerOwnedField);
        assert_eq!(reason(r#"{"event":"x","distinct_id":[1]}"#), RejectReason::WrongType);
    }
}
