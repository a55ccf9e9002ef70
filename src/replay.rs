//! Replay: log records out as JSON lines, one per event, oldest first (the seed's
//! `kafkacat -C -o beginning`), from a local log or from a running server's log.
//!
//! Invariants: the line for a record is a pure function of its offset and contents, with
//! members in a fixed order, so the same log always replays to the same bytes.

use std::io::Write;

use crate::event::{format_time_us, push_json_str, Record, RejectedEvent};
use crate::log::{EventLog, LogError};

/// Appends the JSON line (with its `\n`) for the record at `offset`.
///
/// Members: `log_offset`, `event_type`, the type fields, `event_id`, `player_id`,
/// `session_id`, `event_time` (null when unset), `timestamp`, `accept`, `host`,
/// `user_agent` (null when the header was absent), `raw_event`.
pub fn write_line(out: &mut String, offset: u64, r: &Record) {
    use std::fmt::Write as _;
    let e = &r.event;
    let _ = write!(out, "{{\"log_offset\":{offset},\"event_type\":\"{}\"", e.event_type().as_str());
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
    opt(out, "event_id", e.event_id.as_deref());
    opt(out, "player_id", e.player_id.as_deref());
    opt(out, "session_id", e.session_id.as_deref());
    let event_time = e.event_time_us.map(format_time_us);
    opt(out, "event_time", event_time.as_deref());
    opt(out, "timestamp", Some(&format_time_us(r.received_at_us)));
    opt(out, "accept", r.meta.accept.as_deref());
    opt(out, "host", r.meta.host.as_deref());
    opt(out, "user_agent", r.meta.user_agent.as_deref());
    opt(out, "raw_event", Some(&r.raw_event));
    out.push_str("}\n");
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

/// Writes records `from..to` of `log` to `out` as JSON lines; returns how many.
/// A closed pipe (`questlog replay | head`) ends the replay quietly.
pub fn replay_to(log: &dyn EventLog, from: u64, to: u64, out: &mut dyn Write) -> Result<u64, ReplayError> {
    let mut buf = String::with_capacity(64 * 1024);
    let mut n = 0u64;
    for item in log.read(from, to)? {
        let (offset, record) = item?;
        write_line(&mut buf, offset, &record);
        n += 1;
        if buf.len() >= 60 * 1024 {
            if !write_all(out, &buf)? {
                return Ok(n);
            }
            buf.clear();
        }
    }
    write_all(out, &buf)?;
    out.flush().or_else(ignore_broken_pipe)?;
    Ok(n)
}

/// Writes `s`; `Ok(false)` when the reader went away.
pub fn write_all(out: &mut dyn Write, s: &str) -> Result<bool, ReplayError> {
    match out.write_all(s.as_bytes()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ReplayError::Io(e)),
    }
}

fn ignore_broken_pipe(e: std::io::Error) -> Result<(), std::io::Error> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("writing replay output: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{validate_json, RequestMeta};

    #[test]
    fn line_is_stable_json() {
        let raw = r#"{"event_type":"kill_enemy","enemy_id":3,"name":"Orc \"Big\"","level":7}"#;
        let r = Record {
            received_at_us: 0,
            meta: RequestMeta { accept: Some("*/*".into()), host: None, user_agent: Some("ab".into()) },
            raw_event: raw.into(),
            event: validate_json(raw).unwrap(),
        };
        let mut s = String::new();
        write_line(&mut s, 42, &r);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["log_offset"], 42);
        assert_eq!(v["name"], "Orc \"Big\"");
        assert_eq!(v["raw_event"], raw);
        assert_eq!(v["host"], serde_json::Value::Null);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert!(s.starts_with(r#"{"log_offset":42,"event_type":"kill_enemy","enemy_id":3,"#));
    }
}
