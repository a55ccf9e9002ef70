//! What crosses the wire between questlog and its clients (games, load generators, other
//! questlog processes): the per-request limits, the events URL, and the JSON line of a
//! record or of a rejected event (replay output, `/v1/replay`, `/v1/rejected`).
//!
//! Below `api`, `generate` and `replay`, which all use it; it uses only `event`.
//!
//! Invariant: the line for a record is a pure function of its offset and contents, with
//! members in a fixed order, so the same log always replays to the same bytes.

use crate::event::{format_time_us, push_json_str, push_time_us, Record, RejectedEvent};

/// Largest request body on the wire. 16 MiB holds a batch of 10,000 typical events
/// (~300 bytes each) many times over, yet bounds what one request can make us buffer.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Largest body after gzip decompression: 4× the wire limit, so ordinary JSON (which
/// compresses 5–10×) fits while a gzip bomb stops at 64 MiB.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;
/// Most events in one request; matches the log's block size scale so one request is at
/// most a handful of blocks and its latency stays bounded.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// Largest single event (its JSON text). Seed events are ~200 bytes; 64 KiB is generous.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// A server address that is not an `http://` or `https://` URL.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an http:// URL (e.g. http://127.0.0.1:8080)")]
pub struct BadUrl(pub String);

/// `http://host:port` → `http://host:port/v1/events`; a URL already naming a path is kept.
pub fn events_url(base: &str) -> Result<String, BadUrl> {
    let trimmed = base.trim_end_matches('/');
    let rest = trimmed.strip_prefix("http://").or_else(|| trimmed.strip_prefix("https://")).ok_or_else(|| BadUrl(base.to_string()))?;
    if rest.is_empty() {
        return Err(BadUrl(base.to_string()));
    }
    if rest.contains('/') {
        Ok(trimmed.to_string())
    } else {
        Ok(format!("{trimmed}/v1/events"))
    }
}

/// An API key that cannot be sent in a header (a control character or a non-ASCII byte).
#[derive(Debug, thiserror::Error)]
#[error("the API key (--api-key or QUESTLOG_API_KEY) cannot be sent in an HTTP header: it holds a control or non-ASCII character")]
pub struct BadApiKey;

/// The headers questlog's own clients send with every request: `Authorization: Bearer KEY`
/// when a key is given (`--api-key`, `QUESTLOG_API_KEY`), marked sensitive so no debug
/// output shows it. Empty without a key.
pub fn client_headers(api_key: Option<&str>) -> Result<reqwest::header::HeaderMap, BadApiKey> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| BadApiKey)?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(headers)
}

/// What to tell a person whose request a server refused with `status`: for 401 and 403,
/// which key to give; empty otherwise.
pub fn key_hint(status: u16, scope: &str) -> String {
    match status {
        401 => format!(" (the server has API keys: give one with the `{scope}` scope in QUESTLOG_API_KEY or --api-key)"),
        403 => format!(" (the key given has no `{scope}` scope: give one that has it in QUESTLOG_API_KEY or --api-key)"),
        _ => String::new(),
    }
}

/// Appends the JSON line (with its `\n`) for the record at `offset`.
///
/// Members: `log_offset`, `event_type`, the type fields, `event_id`, `player_id`,
/// `session_id`, `event_time` (null when unset), `timestamp`, `accept`, `host`,
/// `user_agent` (null when the header was absent), `app` (only when the event came with
/// an API key), `raw_event`.
pub fn write_line<S: AsRef<str>, M: AsRef<str>>(out: &mut String, offset: u64, r: &Record<S, M>) {
    out.push_str("{\"log_offset\":");
    out.push_str(itoa::Buffer::new().format(offset));
    out.push(',');
    write_members(out, r);
    out.push_str("}\n");
}

/// Appends the JSON line (with its `\n`) for the record at `offset` of partition
/// `partition` of a partitioned (Kafka) log: `log_partition`, then as [`write_line`].
pub fn write_partitioned_line<S: AsRef<str>, M: AsRef<str>>(out: &mut String, partition: u32, offset: u64, r: &Record<S, M>) {
    use std::fmt::Write as _;
    let _ = write!(out, "{{\"log_partition\":{partition},\"log_offset\":{offset},");
    write_members(out, r);
    out.push_str("}\n");
}

/// Appends a record as it is stored in a Kafka topic: the members of [`write_line`]
/// without `log_offset` (the record's position is its place in the topic), no newline.
pub fn write_value<S: AsRef<str>, M: AsRef<str>>(out: &mut String, r: &Record<S, M>) {
    out.push('{');
    write_members(out, r);
    out.push('}');
}

/// The members of a record's line from `event_type` on, without the braces.
fn write_members<S: AsRef<str>, M: AsRef<str>>(out: &mut String, r: &Record<S, M>) {
    let e = &r.event;
    out.push_str("\"event_type\":\"");
    out.push_str(e.type_name());
    out.push('"');
    e.payload.visit_fields(|name, value| {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":");
        value.write_json(out);
    });
    let opt = |out: &mut String, name: &str, v: Option<&str>| {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":");
        match v {
            Some(s) => push_json_str(out, s),
            None => out.push_str("null"),
        }
    };
    let s = crate::event::opt_str;
    opt(out, "event_id", s(&e.event_id));
    opt(out, "player_id", s(&e.player_id));
    opt(out, "session_id", s(&e.session_id));
    match e.event_time_us {
        Some(us) => {
            out.push_str(",\"event_time\":\"");
            push_time_us(out, us);
            out.push('"');
        }
        None => out.push_str(",\"event_time\":null"),
    }
    out.push_str(",\"timestamp\":\"");
    push_time_us(out, r.received_at_us);
    out.push('"');
    let m = crate::event::opt_str;
    opt(out, "accept", m(&r.meta.accept));
    opt(out, "host", m(&r.meta.host));
    opt(out, "user_agent", m(&r.meta.user_agent));
    if let Some(app) = &r.meta.app {
        opt(out, "app", Some(app.as_ref()));
    }
    opt(out, "raw_event", Some(r.raw_event.as_ref()));
}

/// Appends the JSON line (with its `\n`) for rejected event number `seq`: `seq`,
/// `received_at`, `index`, `reason`, `field`, `error`, `accept`, `host`, `user_agent`, `raw`.
pub fn write_rejected_line(out: &mut String, seq: u64, r: &RejectedEvent) {
    use std::fmt::Write as _;
    let _ = write!(out, "{{\"seq\":{seq},\"received_at\":");
    push_json_str(out, &format_time_us(r.received_at_us));
    let _ = write!(out, ",\"index\":{},\"reason\":\"{}\",\"field\":", r.index, r.rejection.reason.as_str());
    match &r.rejection.field {
        Some(f) => push_json_str(out, f),
        None => out.push_str("null"),
    }
    out.push_str(",\"error\":");
    push_json_str(out, &r.rejection.message);
    for (name, v) in [("accept", &r.meta.accept), ("host", &r.meta.host), ("user_agent", &r.meta.user_agent)] {
        let _ = write!(out, ",\"{name}\":");
        match v {
            Some(s) => push_json_str(out, s),
            None => out.push_str("null"),
        }
    }
    out.push_str(",\"raw\":");
    push_json_str(out, &r.raw);
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(events_url("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080/v1/events");
        assert_eq!(events_url("http://h:1/v1/events").unwrap(), "http://h:1/v1/events");
        assert!(events_url("127.0.0.1:8080").is_err());
    }
}
