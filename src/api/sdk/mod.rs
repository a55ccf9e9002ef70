//! Analytics SDKs' collector protocols (docs/CONTRACT.md 3.9): a studio points an SDK it
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

pub(super) mod segment;

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
