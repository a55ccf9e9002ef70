//! Analytics SDKs' collector protocols (docs/CONTRACT.md 3.9: Segment's, PostHog's,
//! Snowplow's): a studio points an SDK it
//! already uses at questlog and its events land as questlog events, unchanged on the SDK's
//! side. Each protocol's file turns its messages into questlog's event JSON (the text
//! `POST /v1/events` would take) and hands them to the same validation, dedup and append as
//! every other route (`ingest::Outcome`); this file holds what the protocols share: how an
//! SDK's event name becomes a type name, and how an event is written.
//!
//! Invariants: a message becomes at most one event, whose `event_id` is the SDK's message
//! id (so the SDK's retries of a batch land once); a message that is not stored as an
//! event is either counted (`questlog_sdk_messages_total`) or answered and kept as a
//! rejected event with its message id; nothing is dropped silently.

use super::*;

pub(super) mod posthog;
pub(super) mod segment;
pub(super) mod snowplow;

/// The fields questlog sets from an SDK message's envelope. A property of the same name
/// would be ambiguous; such a message is rejected (`server_owned_field`) rather than one
/// of the two values silently winning.
pub(super) const ENVELOPE_FIELDS: [&str; 5] = ["event_type", "event_id", "player_id", "session_id", "event_time"];

/// The questlog type an SDK's event name maps to: ASCII letters lower-cased, digits kept,
/// every run of other characters one `_`, trimmed of `_` at both ends (`Level Up` →
/// `level_up`, `Order Completed!` → `order_completed`, `join_guild` → `join_guild`).
/// `None` when nothing is left or it does not start with a letter (`404 Page`): a type name
/// starts with a lowercase letter (docs/CONTRACT.md 13.1).
pub fn type_name_of(event_name: &str) -> Option<String> {
    let mut out = String::with_capacity(event_name.len());
    let mut gap = false;
    for c in event_name.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    out.as_bytes().first().is_some_and(u8::is_ascii_lowercase).then_some(out)
}

/// A message's JSON object, or why it is not one.
pub(super) fn object_of(raw: &str, what: &str) -> Result<serde_json::Map<String, serde_json::Value>, Rejection> {
    match serde_json::from_str(raw) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(Rejection::new(RejectReason::NotAnObject, None, format!("a {what} is a JSON object"))),
        Err(e) => Err(Rejection::new(RejectReason::MalformedJson, None, format!("malformed JSON: {e}"))),
    }
}

/// The message's event name (member `event`), or why it has none.
pub(super) fn event_name(m: &serde_json::Map<String, serde_json::Value>) -> Result<&str, Rejection> {
    match m.get("event") {
        Some(serde_json::Value::String(s)) => Ok(s),
        None => Err(Rejection::new(RejectReason::MissingEventType, Some("event"), "the message names no `event`".into())),
        Some(_) => Err(Rejection::new(RejectReason::WrongType, Some("event"), "`event` must be a string".into())),
    }
}

/// [`type_name_of`], or the rejection of a name that gives none.
pub(super) fn type_of(name: &str) -> Result<String, Rejection> {
    type_name_of(name).ok_or_else(|| {
        Rejection::new(
            RejectReason::UnknownEventType,
            Some("event"),
            format!(
                "event name `{}` gives no type name (letters, digits and separators, starting with a letter)",
                name.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// The message's `properties` object (none when absent or null), or why it is not one.
pub(super) fn properties_of(
    m: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<&serde_json::Map<String, serde_json::Value>>, Rejection> {
    match m.get("properties") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(p)) => Ok(Some(p)),
        Some(_) => Err(Rejection::new(RejectReason::WrongType, Some("properties"), "`properties` must be an object".into())),
    }
}

/// The message's `timestamp` as RFC 3339 text (validation checks it), none when absent.
pub(super) fn time_of(m: &serde_json::Map<String, serde_json::Value>) -> Result<Option<String>, Rejection> {
    match m.get("timestamp") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(t)) => Ok(Some(t.clone())),
        Some(_) => Err(Rejection::new(RejectReason::BadTime, Some("timestamp"), "`timestamp` must be an ISO 8601 string".into())),
    }
}

/// [`id_text`] of member `field`, a wrong kind rejected naming `field`.
pub(super) fn id_of(v: Option<&serde_json::Value>, field: &str) -> Result<Option<String>, Rejection> {
    id_text(v).map_err(|kind| Rejection::new(RejectReason::WrongType, Some(field), format!("`{field}` is {kind}")))
}

/// A string id from an SDK: a JSON string as it is, a number as its decimal text (SDKs
/// send user ids of either kind), nothing for null or absent. Other kinds: `Err` with the
/// kind's name.
pub(super) fn id_text(v: Option<&serde_json::Value>) -> Result<Option<String>, &'static str> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(serde_json::Value::Bool(_)) => Err("a boolean"),
        Some(serde_json::Value::Array(_)) => Err("an array"),
        Some(serde_json::Value::Object(_)) => Err("an object"),
    }
}

/// What an SDK message's envelope gives the event besides its type and properties.
#[derive(Debug, Default)]
pub(super) struct Envelope {
    pub event_id: Option<String>,
    pub player_id: Option<String>,
    pub session_id: Option<String>,
    /// RFC 3339 text, as the SDK sent it (validation checks it).
    pub event_time: Option<String>,
}

/// The questlog event JSON of an SDK event: `event_type`, the properties in their order,
/// then the envelope's fields that are present. Refuses properties named like an envelope
/// field ([`ENVELOPE_FIELDS`]).
pub(super) fn event_json(
    type_name: &str,
    properties: Option<&serde_json::Map<String, serde_json::Value>>,
    envelope: Envelope,
) -> Result<String, Rejection> {
    let mut object = serde_json::Map::new();
    object.insert("event_type".into(), type_name.into());
    if let Some(props) = properties {
        for (k, v) in props {
            if ENVELOPE_FIELDS.contains(&k.as_str()) {
                return Err(Rejection::new(
                    RejectReason::ServerOwnedField,
                    Some(k.as_str()),
                    format!("property `{k}` is set from the message itself (its id, user, session or time); rename the property"),
                ));
            }
            object.insert(k.clone(), v.clone());
        }
    }
    let Envelope { event_id, player_id, session_id, event_time } = envelope;
    for (name, value) in [("event_id", event_id), ("player_id", player_id), ("session_id", session_id), ("event_time", event_time)] {
        if let Some(v) = value {
            object.insert(name.into(), v.into());
        }
    }
    Ok(serde_json::Value::Object(object).to_string())
}

/// What one message comes to.
#[derive(Debug, PartialEq)]
pub(super) enum Message {
    /// An event: questlog's event JSON text.
    Event(String),
    /// A message the protocol has that questlog counts and does not store, by its type.
    Counted(&'static str),
}

/// One protocol's rules for [`take_batch`].
pub(super) struct Protocol {
    /// Its name in `questlog_sdk_messages_total` and in messages.
    pub name: &'static str,
    /// Most bytes of a body, inflated (413 past it).
    pub max_batch_bytes: usize,
    /// Most bytes of one message (rejected `too_large` past it, its batch taken).
    pub max_message_bytes: usize,
    /// A body's messages (their JSON texts) and the key it carries, or why it is not a batch.
    pub split: fn(&str) -> Result<(Vec<&str>, Option<String>), String>,
    /// One message as an event or a counted message, or why neither (given the types in
    /// force: Snowplow's events name their schema).
    pub message: fn(&str, &Registry) -> Result<Message, Rejection>,
    /// A message's id, for protocols that answer per message (PostHog's v1).
    pub message_id: Option<fn(&str) -> Option<String>>,
}

/// What [`take_batch`] appended.
pub(super) struct Taken {
    pub committed: Committed,
    pub memory: BodyMemory,
    /// Per message, its id ([`Protocol::message_id`]; empty without one).
    pub ids: Vec<Option<String>>,
}

/// Reads a protocol's batch within the request memory budget and the protocol's limits,
/// checks the key (from the headers, else the body's), turns each message into an event
/// (or counts it, or rejects it) and appends the events as `POST /v1/events` does.
pub(super) async fn take_batch(state: &Arc<AppState>, headers: &HeaderMap, body: Body, p: &Protocol) -> Result<Taken, ApiError> {
    let mut memory = BodyMemory::new(&state.body_memory);
    // A key in the headers is checked before the body is read; one in the body (Segment's
    // `writeKey`, PostHog v0's `api_key`) after it is read, within the budget and the
    // batch limit. Nothing is kept or appended without a key.
    if headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key") {
        state.writer_with(headers, None)?;
    }
    // Read no further than the protocol's batch limit, sent or inflated: a body's key is
    // checked only once it is read.
    let body = match read_body_within(headers, body, state.limits.body_read_timeout_ms, &mut memory, p.max_batch_bytes).await {
        Err(ApiError::BodyTooLarge | ApiError::DecompressedTooLarge) if p.max_batch_bytes < MAX_DECOMPRESSED_BYTES => {
            return Err(ApiError::SdkBatchTooLarge { size: p.max_batch_bytes + 1, limit: p.max_batch_bytes });
        }
        other => other?,
    };
    if body.len() > p.max_batch_bytes {
        return Err(ApiError::SdkBatchTooLarge { size: body.len(), limit: p.max_batch_bytes });
    }
    let parsed = match std::str::from_utf8(&body) {
        Err(e) => Err(ApiError::Unreadable(format!("body is not UTF-8: {e}"))),
        // More than MAX_EVENTS_PER_REQUEST messages stop the split at the next one.
        Ok(t) => match (p.split)(t) {
            Err(e) if e.contains(TOO_MANY) => return Err(ApiError::TooManyEvents),
            other => other.map_err(ApiError::Unreadable),
        },
    };
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
    let ids: Vec<Option<String>> = match p.message_id {
        Some(id) => messages.iter().map(|m| id(m)).collect(),
        None => Vec::new(),
    };
    memory.take(ids.iter().flatten().map(|i| i.len() + 24).sum())?;
    // Each message as an event, a counted message or a rejection.
    let translate = |raw: &str, types: &Registry| -> Result<Message, Rejection> {
        if raw.len() > p.max_message_bytes {
            return Err(Rejection::new(
                RejectReason::TooLarge,
                None,
                format!("message of {} bytes, over the limit of {} ({})", raw.len(), p.max_message_bytes, p.name),
            ));
        }
        match (p.message)(raw, types)? {
            // Written again, an event can be longer than its message (`1e15` becomes
            // `1000000000000000.0`): the event limit holds for what is stored.
            Message::Event(json) if json.len() > MAX_EVENT_BYTES => Err(Rejection::new(
                RejectReason::TooLarge,
                None,
                format!("the event is {} bytes, over the limit of {MAX_EVENT_BYTES}", json.len()),
            )),
            m => Ok(m),
        }
    };
    // With `--infer-schemas`, every message is translated first (and held, charged) so
    // that the types its events ask for are recorded before any is checked.
    let mut translated: Vec<Option<Result<Message, Rejection>>> = Vec::new();
    if state.infer_schemas {
        let types = state.types();
        let mut wanted = crate::schema::infer::Wanted::default();
        memory.take(messages.len() * std::mem::size_of::<Option<Result<Message, Rejection>>>())?;
        translated.reserve_exact(messages.len());
        for raw in &messages {
            let m = translate(raw, &types);
            if let Ok(Message::Event(json)) = &m {
                memory.take(json.len())?;
                super::schemas::observe(&mut wanted, &types, json);
            }
            translated.push(Some(m));
        }
        super::schemas::record_inferred(state, wanted).await?;
    }
    let mut out = Outcome::new(state, meta, now_us(), messages.len());
    for (i, raw) in messages.iter().enumerate() {
        let m = match translated.get_mut(i).and_then(Option::take) {
            Some(m) => m,
            None => translate(raw, &out.types),
        };
        match m {
            Ok(Message::Event(json)) => {
                // The event's text beyond its message's (charged with the body).
                if translated.is_empty() {
                    memory.take(json.len().saturating_sub(raw.len()))?;
                }
                let parsed = event::validate_json_in(&json, &out.types);
                out.take(&mut memory, i, &json, parsed)?;
            }
            Ok(Message::Counted(kind)) => state.metrics.sdk_message(p.name, kind),
            Err(why) => out.take(&mut memory, i, raw, Err(why))?,
        }
    }
    let committed = out.commit(&mut memory).await?;
    drop(body);
    Ok(Taken { committed, memory, ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_map_to_type_names() {
        for (name, ty) in [
            ("Level Up", Some("level_up")),
            ("join_guild", Some("join_guild")),
            ("  Order   Completed! ", Some("order_completed")),
            ("Kill-Enemy v2", Some("kill_enemy_v2")),
            ("Ürün Satın Alındı", Some("r_n_sat_n_al_nd")),
            ("404 Page", None),
            ("!!!", None),
            ("", None),
        ] {
            assert_eq!(type_name_of(name).as_deref(), ty, "{name:?}");
        }
    }

    #[test]
    fn an_event_is_written_with_its_envelope_and_refuses_ambiguous_properties() {
        let props: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r#"{"guild_id": 7, "name": "Knights"}"#).unwrap();
        let env = Envelope {
            event_id: Some("m-1".into()),
            player_id: Some("p1".into()),
            session_id: None,
            event_time: Some("2026-12-05T01:02:03Z".into()),
        };
        assert_eq!(
            event_json("join_guild", Some(&props), env).unwrap(),
            r#"{"event_type":"join_guild","guild_id":7,"name":"Knights","event_id":"m-1","player_id":"p1","event_time":"2026-12-05T01:02:03Z"}"#
        );
        let props: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r#"{"player_id": "x"}"#).unwrap();
        let e = event_json("join_guild", Some(&props), Envelope::default()).unwrap_err();
        assert_eq!((e.reason, e.field.as_deref()), (RejectReason::ServerOwnedField, Some("player_id")));
        assert_eq!(id_text(Some(&serde_json::json!(42))), Ok(Some("42".into())));
        assert!(id_text(Some(&serde_json::json!({}))).is_err());
    }
}
