//! Replay: log records out as JSON lines, one per event, oldest first (the seed's
//! `kafkacat -C -o beginning`), from a local log or from a running server's log.
//!
//! Invariants: the line for a record is a pure function of its offset and contents, with
//! members in a fixed order, so the same log always replays to the same bytes.

use std::io::Write;

use crate::event::Record;
use crate::log::{EventLog, LogError};
pub use crate::wire::{write_line, write_partitioned_line, write_rejected_line};

/// Writes records `from..to` of `log` to `out` as JSON lines; returns how many.
/// A closed pipe (`questlog replay | head`) ends the replay quietly.
///
/// A sled log's blocks are decoded and formatted on one thread per core
/// ([`crate::log::map_blocks`]) and written here in order; other logs' records are
/// decoded on a helper thread and formatted here.
pub fn replay_to(log: &dyn EventLog, from: u64, to: u64, out: &mut dyn Write) -> Result<u64, ReplayError> {
    let mut n = 0u64;
    let mut reader_gone = false;
    let mut write = |text: &str, records: u64| -> Result<(), ReplayError> {
        if !write_all(out, text.as_bytes())? {
            reader_gone = true;
            return Err(ReplayError::ReaderGone);
        }
        n += records;
        Ok(())
    };
    // Texts written go back to the formatting threads: a buffer freed on another thread
    // than the one that made it is memory the allocator takes fresh from the kernel.
    let spare = std::sync::Mutex::new(Vec::<String>::new());
    let result = crate::log::map_blocks(
        log,
        from,
        to,
        || Ok(crate::log::BlockDecoder::new()?),
        |decoder, raw| -> Result<(String, u64), ReplayError> {
            let mut text = spare.lock().ok().and_then(|mut s| s.pop()).unwrap_or_default();
            let mut records = 0;
            for (offset, record) in decoder.views(raw)? {
                write_line(&mut text, offset, &record);
                records += 1;
            }
            Ok((text, records))
        },
        |(mut text, records)| {
            write(&text, records)?;
            text.clear();
            if let Ok(mut s) = spare.lock() {
                s.push(text);
            }
            Ok(())
        },
    );
    let result = match result {
        Ok(false) => {
            let mut buf = String::with_capacity(64 * 1024);
            let mut pending = 0;
            crate::log::for_each_prefetched(log.read(from, to)?, |offset, record| -> Result<(), ReplayError> {
                write_line(&mut buf, offset, &record);
                pending += 1;
                if buf.len() >= 60 * 1024 {
                    write(&buf, std::mem::take(&mut pending))?;
                    buf.clear();
                }
                Ok(())
            })
            .and_then(|()| write(&buf, pending))
        }
        other => other.map(|_| ()),
    };
    match result {
        Err(ReplayError::ReaderGone) if reader_gone => return Ok(n),
        other => other?,
    }
    out.flush().or_else(ignore_broken_pipe)?;
    Ok(n)
}

/// Writes `bytes` as they are; `Ok(false)` when the reader went away.
///
/// Bytes, not `&str`: a replay streamed from a server arrives in chunks that can end
/// inside a multi-byte character, and every byte must reach the reader unchanged.
pub fn write_all(out: &mut dyn Write, bytes: &[u8]) -> Result<bool, ReplayError> {
    match out.write_all(bytes) {
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

/// Appends the lines of records `from..to` of `log` to `out` until it holds at least
/// `max_bytes` (it stops after the line that reaches them) or `to` is reached; returns
/// the offset to go on from. Synchronous: for a blocking thread.
pub fn render_until(log: &dyn EventLog, from: u64, to: u64, max_bytes: usize, out: &mut String) -> Result<u64, ReplayError> {
    let mut next = from;
    for item in log.read(from, to)? {
        let (offset, record) = item?;
        write_line(out, offset, &record);
        next = offset + 1;
        if out.len() >= max_bytes {
            break;
        }
    }
    Ok(next)
}

/// Renders records `from..to` of `log` into one string with `render`, on a blocking
/// thread (reading the log is synchronous); for the async paths that read the log.
pub async fn render_chunk(
    log: std::sync::Arc<dyn EventLog>,
    from: u64,
    to: u64,
    render: fn(&mut String, u64, &Record),
) -> Result<String, ReplayError> {
    tokio::task::spawn_blocking(move || -> Result<String, ReplayError> {
        let mut s = String::new();
        for item in log.read(from, to)? {
            let (offset, record) = item?;
            render(&mut s, offset, &record);
        }
        Ok(s)
    })
    .await
    .map_err(|e| ReplayError::Io(std::io::Error::other(e.to_string())))?
}

/// Events per request when replaying to another server: one log block's worth.
pub const SEND_BATCH_EVENTS: u64 = 1_000;
/// Attempts per request; retrying is safe because the receiver drops repeated `event_id`s.
const SEND_ATTEMPTS: u32 = 6;
/// Per-request timeout when replaying to another server.
const SEND_TIMEOUT_MS: u64 = 30_000;

/// What a replay to another server did.
#[derive(Debug, Default)]
pub struct SendReport {
    pub sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub retries: u64,
    pub seconds: f64,
}

impl SendReport {
    pub fn render(&self) -> String {
        format!(
            "replayed {} events in {:.2} s ({:.0} events/s): {} accepted, {} already there (same event_id), {} rejected, {} retries",
            self.sent,
            self.seconds,
            self.sent as f64 / self.seconds.max(1e-9),
            self.accepted,
            self.duplicates,
            self.rejected,
            self.retries
        )
    }
}

/// Re-sends records `from..to` of `log` to the questlog at `url` in order, as NDJSON
/// batches of their `raw_event` (so `event_id`s are kept and a second replay adds
/// nothing there), at most `rate` events per second when given, with `api_key` as
/// `Authorization: Bearer` when given.
pub async fn replay_to_url(
    log: std::sync::Arc<dyn EventLog>,
    from: u64,
    to: u64,
    url: &str,
    rate: Option<f64>,
    api_key: Option<&str>,
    progress: &indicatif::ProgressBar,
) -> Result<SendReport, ReplayError> {
    let url = crate::wire::events_url(url).map_err(|e| ReplayError::Send(e.to_string()))?;
    let client = reqwest::Client::builder()
        .default_headers(crate::wire::client_headers(api_key).map_err(|e| ReplayError::Send(e.to_string()))?)
        .timeout(std::time::Duration::from_millis(SEND_TIMEOUT_MS))
        .build()
        .map_err(|e| ReplayError::Send(e.to_string()))?;
    let started = std::time::Instant::now();
    let to = to.min(log.durable_end());
    progress.set_length(to.saturating_sub(from));
    let mut report = SendReport::default();
    let mut next = from;
    while next < to {
        let upto = to.min(next + SEND_BATCH_EVENTS);
        let body = render_chunk(log.clone(), next, upto, |s, _, r| {
            s.push_str(&r.raw_event);
            s.push('\n');
        })
        .await?;
        if let Some(rate) = rate.filter(|r| *r > 0.0) {
            let due = started + std::time::Duration::from_secs_f64((next - from) as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut attempt = 0;
        let v: serde_json::Value = loop {
            attempt += 1;
            let res = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .header(reqwest::header::USER_AGENT, "questlog-replay")
                .body(body.clone())
                .send()
                .await;
            let retry_reason = match res {
                Ok(resp) if resp.status().is_success() => {
                    break resp.json().await.map_err(|e| ReplayError::Send(format!("bad answer from {url}: {e}")))?;
                }
                Ok(resp) if resp.status().as_u16() == 503 => format!("{url} answered 503"),
                Ok(resp) => {
                    let status = resp.status();
                    let hint = crate::wire::key_hint(status.as_u16(), "write");
                    return Err(ReplayError::Send(format!(
                        "{url} answered {status} for offsets {next}..{upto}: {}{hint}",
                        resp.text().await.unwrap_or_default().trim_end()
                    )));
                }
                Err(e) => format!("sending to {url}: {e}"),
            };
            if attempt >= SEND_ATTEMPTS {
                return Err(ReplayError::Send(format!(
                    "{retry_reason} ({attempt} attempts; offsets {next}..{upto} may be partly sent, replaying again is safe)"
                )));
            }
            report.retries += 1;
            tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
        };
        report.sent += upto - next;
        report.accepted += v["accepted"].as_u64().unwrap_or(0);
        report.duplicates += v["duplicates"].as_u64().unwrap_or(0);
        report.rejected += v["rejected"].as_array().map(|a| a.len() as u64).unwrap_or(0);
        progress.inc(upto - next);
        next = upto;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("writing replay output: {0}")]
    Io(#[from] std::io::Error),
    #[error("replay to another server: {0}")]
    Send(String),
    #[error("the reader of the replay went away")]
    ReaderGone,
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
            meta: RequestMeta::<&str> { accept: Some("*/*"), host: None, user_agent: Some("ab"), app: None }
                .map(crate::event::Shared::from),
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
