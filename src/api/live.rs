//! The live page (`GET /`) and its data (`GET /v1/live`, `GET /report.html`): what is
//! arriving by type, what is rejected and why, how fresh the tables are, the findings.
//!
//! The page is one self-contained HTML file embedded in the binary (`live.html`: inline
//! CSS and JavaScript, no CDN); it polls `/v1/live` every second. The API keeps the last
//! [`HISTORY_SECONDS`] of per-second samples itself ([`sample_every_second`]), so a page
//! opened late still draws the last minutes. The findings (the report's summary and
//! charts) come from a [`FindingsSource`] that `commands::serve` runs beside the projector, so `api`
//! does not import `report`.
//!
//! With API keys, the page's data and the report need a key with the `read` grant, in a
//! header or as `?key=…`; a person opens `/?key=…` in a browser: the page (which holds no
//! data itself) keeps the key for the tab (`sessionStorage`), takes it out of the address
//! bar, and passes it on in `X-API-Key`.
//!
//! The page runs under a Content-Security-Policy that allows its one inline script by
//! hash ([`script_hash`]) and nothing else: no other script, no framing, no requests but
//! to this server; charts are shown as images. Every keyed answer says `no-store` and
//! `no-referrer`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{finish, json_headers, ApiError, AppState, ROUTE_LIVE};
use crate::event::{EventType, RejectReason};

/// Seconds of per-second samples kept: the page's charts span the last five minutes.
pub const HISTORY_SECONDS: usize = 300;
/// Rejected events the page lists, newest first.
pub const LATEST_REJECTED: usize = 10;
/// Distinct (reason, field) pairs counted for the page (a client can name any key, so the
/// map needs a bound). Past it the least counted pair makes room (Space-Saving), so the
/// most frequent pairs are kept whoever came first; what the evicted pairs counted goes
/// to field `(other)`.
pub const MAX_REJECTED_FIELDS: usize = 256;
/// Longest raw text of a rejected event sent to the page.
const RAW_SHOWN_BYTES: usize = 512;
/// Most (reason, field) pairs `/v1/live` lists.
const BY_FIELD_SHOWN: usize = 50;
/// Most charts of the report the page shows.
const CHARTS_SHOWN: usize = 3;

/// The page, embedded at build time.
const PAGE_HTML: &str = include_str!("live.html");

/// `'sha256-…'` of the page's one inline script, for its Content-Security-Policy: the
/// browser runs that script and no other, so an escaping slip in what the page shows
/// cannot run code with the reader's key in scope.
pub fn script_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        use sha2::Digest;
        let start = PAGE_HTML.find("<script>").map(|i| i + "<script>".len()).unwrap_or(0);
        let end = PAGE_HTML[start..].find("</script>").map_or(PAGE_HTML.len(), |i| start + i);
        format!("'sha256-{}'", base64(&sha2::Sha256::digest(&PAGE_HTML.as_bytes()[start..end])))
    })
}

/// Standard base64 with padding (RFC 4648), for the CSP hash.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The page's policy: its inline script by hash, inline styles, images from `data:` URLs
/// (the charts), requests to this server only, no framing, no forms, no `<base>`.
fn page_csp() -> String {
    format!(
        "default-src 'none'; script-src {}; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        script_hash()
    )
}

/// The report's policy: a document without scripts.
const REPORT_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers of every answer the page's routes give: not cached (they are behind a key, and
/// the figures are live), no referrer (a key in the address bar must not travel on), not
/// framed, not sniffed as another type.
fn reader_headers(resp: &mut Response, csp: Option<&str>) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Some(csp) = csp.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
}

/// The report's findings at some offset of the tables, for the live page.
pub struct Findings {
    /// The tables' offset they were computed at.
    pub offset: u64,
    /// The report's headline lines.
    pub summary: Vec<String>,
    /// (title, SVG) of the report's charts, in report order.
    pub charts: Vec<(String, String)>,
    /// The whole `report.html`.
    pub html: String,
}

/// Where the API reads the latest findings (implemented in `commands::serve`).
pub trait FindingsSource: Send + Sync {
    fn findings(&self) -> Option<Arc<Findings>>;
}

/// One second's counters, cumulative.
#[derive(Clone)]
struct Sample {
    unix_ms: u64,
    accepted: [u64; EventType::ALL.len()],
    /// Registered types' accepted events, by name (those that have had one).
    registered: Arc<Vec<(String, u64)>>,
    rejected: u64,
    log_end: u64,
    projected: u64,
}

/// What the API keeps for the page.
#[derive(Default)]
pub struct Live {
    history: Mutex<VecDeque<Sample>>,
    fields: Mutex<FieldCounts>,
}

/// Rejections by (reason, field), at most [`MAX_REJECTED_FIELDS`] pairs (Space-Saving: a
/// new pair takes the place of the least counted one). Each pair's `count` is exact since
/// it was last let in; what evicted pairs had counted is in `other`.
#[derive(Default)]
struct FieldCounts {
    pairs: HashMap<(RejectReason, String), FieldCount>,
    /// What evicted pairs had counted, by reason.
    other: HashMap<RejectReason, u64>,
}

#[derive(Clone, Copy)]
struct FieldCount {
    /// Occurrences since the pair was let in.
    count: u64,
    /// The count of the pair it replaced: the pair's rank is `count + inherited`, which
    /// lets a pair that keeps coming overtake ones that came once.
    inherited: u64,
}

impl FieldCounts {
    fn add(&mut self, reason: RejectReason, field: &str) {
        let field = crate::event::truncate_utf8(field, crate::event::MAX_FIELD_NAME_BYTES);
        if let Some(c) = self.pairs.get_mut(&(reason, field.to_string())) {
            c.count += 1;
            return;
        }
        let mut inherited = 0;
        if self.pairs.len() >= MAX_REJECTED_FIELDS {
            let Some(min) = self.pairs.iter().min_by_key(|(_, c)| c.count + c.inherited).map(|(k, _)| k.clone()) else { return };
            if let Some(evicted) = self.pairs.remove(&min) {
                *self.other.entry(min.0).or_insert(0) += evicted.count;
                inherited = evicted.count + evicted.inherited;
            }
        }
        self.pairs.insert((reason, field.to_string()), FieldCount { count: 1, inherited });
    }

    /// The `limit` most counted pairs, most first, then per reason what evicted pairs
    /// counted, as field `(other)`.
    fn top(&self, limit: usize) -> Vec<(&'static str, String, u64)> {
        let mut all: Vec<(&'static str, String, u64)> = self.pairs.iter().map(|((r, f), c)| (r.as_str(), f.clone(), c.count)).collect();
        all.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)).then(a.1.cmp(&b.1)));
        all.truncate(limit);
        let mut other: Vec<(&'static str, String, u64)> = self.other.iter().map(|(r, n)| (r.as_str(), "(other)".to_string(), *n)).collect();
        other.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
        all.extend(other);
        all
    }
}

impl Live {
    /// Counts a rejection by reason and field.
    pub fn rejected(&self, reason: RejectReason, field: Option<&str>) {
        self.fields.lock().unwrap_or_else(|p| p.into_inner()).add(reason, field.unwrap_or(""));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn take_sample(state: &AppState) -> Sample {
    Sample {
        unix_ms: unix_ms(),
        accepted: state.metrics.accepted_by_type(),
        registered: Arc::new(state.metrics.accepted_registered()),
        rejected: state.metrics.rejected_total(),
        log_end: state.log.durable_end(),
        projected: state.projection.figures().projected_offset,
    }
}

/// Records a sample every second, keeping [`HISTORY_SECONDS`] of them. Runs for as long as
/// the server does (`api::run` aborts it).
pub async fn sample_every_second(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = take_sample(&state);
        let mut h = state.live.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY_SECONDS {
            h.pop_front();
        }
        h.push_back(s);
    }
}

/// The `key` query parameter, for a person opening the page in a browser.
fn query_key(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned())
}

/// `GET /`: the page. It holds no data (everything it shows comes from `/v1/live`, which
/// needs a `read` key when keys are on), so it is served to anyone: a person can reload
/// it once its key is out of the address bar, and one without a key is told what to open.
pub async fn page(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    let mut r = (StatusCode::OK, PAGE_HTML).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    reader_headers(&mut r, Some(&page_csp()));
    finish(&state, ROUTE_LIVE, started, r)
}

/// `GET /report.html`: the report as of the latest findings.
pub async fn report_html(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let mut resp = match state.reader(&headers, query_key(q.as_deref()).as_deref()) {
        Err(e) => e.into_response(),
        Ok(()) => match state.findings.as_ref().and_then(|f| f.findings()) {
            Some(f) => {
                let mut r = (StatusCode::OK, f.html.clone()).into_response();
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                reader_headers(&mut r, Some(REPORT_CSP));
                r
            }
            None => (
                StatusCode::NOT_FOUND,
                json_headers(),
                json!({"error": "no report yet: the tables have no events, or the first report is still being made"}).to_string(),
            )
                .into_response(),
        },
    };
    if !resp.headers().contains_key(header::CACHE_CONTROL) {
        reader_headers(&mut resp, None);
    }
    finish(&state, ROUTE_LIVE, started, resp)
}

/// `GET /v1/live`: everything the page shows, as JSON (documented in the OpenAPI).
pub async fn data(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let mut resp = match state.reader(&headers, query_key(q.as_deref()).as_deref()) {
        Err(e) => e.into_response(),
        Ok(()) => match build(&state).await {
            Ok(v) => (StatusCode::OK, json_headers(), v.to_string()).into_response(),
            Err(e) => e.into_response(),
        },
    };
    reader_headers(&mut resp, None);
    finish(&state, ROUTE_LIVE, started, resp)
}

async fn build(state: &Arc<AppState>) -> Result<Value, ApiError> {
    let now = take_sample(state);
    let history: Vec<Sample> = state.live.history.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
    // The seed's five, then the registered types that have had events.
    let mut types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    types.extend(now.registered.iter().map(|(name, _)| name.as_str()));
    let count = |s: &Sample, i: usize| match s.accepted.get(i) {
        Some(n) => *n,
        None => s.registered.iter().find(|(name, _)| name == types[i]).map_or(0, |(_, n)| *n),
    };

    // Per-second rates from consecutive samples.
    let mut series = Vec::with_capacity(history.len());
    for w in history.windows(2) {
        let secs = (w[1].unix_ms.saturating_sub(w[0].unix_ms)).max(1) as f64 / 1000.0;
        let accepted: Vec<f64> = (0..types.len()).map(|i| count(&w[1], i).saturating_sub(count(&w[0], i)) as f64 / secs).collect();
        series.push(json!({
            "unix_ms": w[1].unix_ms,
            "accepted_per_s": accepted,
            "rejected_per_s": (w[1].rejected - w[0].rejected) as f64 / secs,
        }));
    }

    // Freshness: how far the tables are behind, in events and in seconds (since the log
    // first held an event the tables still lack).
    let lag_events = now.log_end.saturating_sub(now.projected);
    let behind_since = history.iter().find(|s| s.log_end > now.projected).map(|s| s.unix_ms);
    let lag_seconds = match (lag_events, behind_since) {
        (0, _) => 0.0,
        (_, Some(t)) => now.unix_ms.saturating_sub(t) as f64 / 1000.0,
        (_, None) => 0.0,
    };
    let projection = state.projection.figures();
    // From a topic, the tables trail the whole topic (every node's events), not this
    // node's own appends: the lag is the partitions' (in records; the time is not known).
    let (lag_events, lag_seconds) = if projection.partitions.is_empty() {
        (lag_events, Some(lag_seconds))
    } else {
        (projection.partitions.iter().map(|p| p.topic_end.saturating_sub(p.tables_offset)).sum(), None)
    };
    let unwritable = state.log.unwritable();
    let stats = state.log.stats();

    // Rejections: by reason (metrics), by reason and field (ours), the latest few (the log's).
    let by_reason: Vec<Value> =
        state.metrics.rejected_by_reason().into_iter().map(|(r, n)| json!({"reason": r.as_str(), "count": n})).collect();
    let by_field = state.live.fields.lock().unwrap_or_else(|p| p.into_inner()).top(BY_FIELD_SHOWN);
    let total_rejected = stats.rejected_total;
    let log = state.log.clone();
    let latest = tokio::task::spawn_blocking(move || log.rejected(total_rejected.saturating_sub(LATEST_REJECTED as u64), LATEST_REJECTED))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(ApiError::from)?;
    let latest: Vec<Value> = latest
        .into_iter()
        .rev()
        .map(|(seq, r)| {
            json!({
                "seq": seq,
                "received_at": crate::event::format_time_us(r.received_at_us),
                "reason": r.rejection.reason.as_str(),
                "field": r.rejection.field,
                "error": r.rejection.message,
                "raw": crate::event::truncate_utf8(&r.raw, RAW_SHOWN_BYTES),
            })
        })
        .collect();

    let findings = state.findings.as_ref().and_then(|f| f.findings()).map(|f| {
        json!({
            "offset": f.offset,
            "summary": f.summary,
            "charts": f.charts.iter().take(CHARTS_SHOWN).map(|(t, svg)| json!({"title": t, "svg": svg})).collect::<Vec<_>>(),
        })
    });

    Ok(json!({
        "unix_ms": now.unix_ms,
        "event_types": types,
        "accepted_total": (0..types.len()).map(|i| count(&now, i)).collect::<Vec<u64>>(),
        "rejected_total": now.rejected,
        "series": series,
        "rejected": {"by_reason": by_reason, "by_field": by_field.iter().map(|(r, f, n)| json!({"reason": r, "field": f, "count": n})).collect::<Vec<_>>(), "latest": latest},
        "freshness": {
            "log_end_offset": now.log_end,
            "projected_offset": now.projected,
            "lag_events": lag_events,
            "lag_seconds": lag_seconds,
            "projection_steps_total": projection.steps_total,
            "projection_errors_total": projection.errors_total,
            "projection_error": projection.error,
            // Tables from a topic: per partition, where the tables are, where the topic
            // ends (as the brokers last said) and whether this node's projector holds it.
            "partitions": projection.partitions.iter().map(|p| json!({
                "partition": p.partition,
                "tables_offset": p.tables_offset,
                "topic_end": p.topic_end,
                "lag_records": p.topic_end.saturating_sub(p.tables_offset),
                "held_here": p.held_here,
            })).collect::<Vec<_>>(),
        },
        "health": {
            "status": if unwritable.is_some() || projection.error.is_some() {
                "degraded"
            } else if state.log.starting().is_some() {
                "starting"
            } else {
                "ok"
            },
            "reason": unwritable,
            "disk_free_bytes": stats.free_bytes,
            "disk_reserve_bytes": stats.reserve_bytes,
        },
        "findings": findings,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert!(script_hash().starts_with("'sha256-") && script_hash().len() == 8 + 44 + 1, "{}", script_hash());
    }

    #[test]
    fn the_most_frequent_fields_are_kept_whoever_came_first() {
        let mut counts = FieldCounts::default();
        // A hostile client fills the map with names of its own first, then keeps sending
        // new ones; a real rejection comes every tenth event.
        for i in 0..10_000u32 {
            counts.add(RejectReason::UnknownEventType, &format!("junk-{i}"));
            if i >= 1_000 && i % 10 == 0 {
                counts.add(RejectReason::WrongType, "level");
            }
        }
        assert!(counts.pairs.len() <= MAX_REJECTED_FIELDS);
        let top = counts.top(5);
        assert_eq!((top[0].0, top[0].1.as_str()), ("wrong_type", "level"), "{top:?}");
        assert!(top[0].2 >= 850 && top[0].2 <= 900, "{top:?}");
        assert!(counts.other[&RejectReason::UnknownEventType] > 0 && top.last().unwrap().1 == "(other)");
        // Names are cut, so a key of 64 KiB cannot be a 64 KiB map key.
        counts.add(RejectReason::NonFinite, &"k".repeat(64 * 1024));
        assert!(counts.pairs.keys().all(|(_, f)| f.len() <= crate::event::MAX_FIELD_NAME_BYTES));
    }
}
