//! The live page (`GET /`) and its data (`GET /v1/live`, `GET /report.html`): what is
//! arriving by type, what is rejected and why, how fresh the tables are, the findings.
//!
//! The page is one self-contained HTML file embedded in the binary (`live.html`: inline
//! CSS and JavaScript, no CDN); it polls `/v1/live` every second. The API keeps the last
//! [`HISTORY_SECONDS`] of per-second samples itself ([`sample_every_second`]), so a page
//! opened late still draws the last minutes. The findings (the report's summary and
//! charts) come from a [`FindingsSource`] that `cli` runs beside the projector, so `api`
//! does not import `report`.
//!
//! With API keys, the page and its data need a key with `read = true`, in a header or, for
//! a person with a browser, as `/?key=…` (the page passes it on to `/v1/live`).

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
/// Distinct (reason, field) pairs counted for the page; further fields count as `(other)`
/// (a client can name any key, so the map needs a bound).
pub const MAX_REJECTED_FIELDS: usize = 256;
/// Longest raw text of a rejected event sent to the page.
const RAW_SHOWN_BYTES: usize = 512;
/// Most charts of the report the page shows.
const CHARTS_SHOWN: usize = 3;

/// The page, embedded at build time.
const PAGE_HTML: &str = include_str!("live.html");

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

/// Where the API reads the latest findings (implemented in `cli`).
pub trait FindingsSource: Send + Sync {
    fn findings(&self) -> Option<Arc<Findings>>;
}

/// One second's counters, cumulative.
#[derive(Clone, Copy)]
struct Sample {
    unix_ms: u64,
    accepted: [u64; EventType::ALL.len()],
    rejected: u64,
    log_end: u64,
    projected: u64,
}

/// What the API keeps for the page.
#[derive(Default)]
pub struct Live {
    history: Mutex<VecDeque<Sample>>,
    fields: Mutex<HashMap<(RejectReason, String), u64>>,
}

impl Live {
    /// Counts a rejection by reason and field.
    pub fn rejected(&self, reason: RejectReason, field: Option<&str>) {
        let mut fields = self.fields.lock().unwrap_or_else(|p| p.into_inner());
        let field = field.unwrap_or("").to_string();
        let key = if fields.len() < MAX_REJECTED_FIELDS || fields.contains_key(&(reason, field.clone())) {
            (reason, field)
        } else {
            (reason, "(other)".to_string())
        };
        *fields.entry(key).or_insert(0) += 1;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn take_sample(state: &AppState) -> Sample {
    Sample {
        unix_ms: unix_ms(),
        accepted: state.metrics.accepted_by_type(),
        rejected: state.metrics.rejected_by_type().iter().sum(),
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

/// `GET /`: the page.
pub async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let resp = match state.reader(&headers, query_key(q.as_deref()).as_deref()) {
        Ok(()) => {
            let mut r = (StatusCode::OK, PAGE_HTML).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            // The page loads nothing from elsewhere; say so to the browser.
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'"),
            );
            r
        }
        Err(e) => e.into_response(),
    };
    finish(&state, ROUTE_LIVE, started, resp)
}

/// `GET /report.html`: the report as of the latest findings.
pub async fn report_html(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let resp = match state.reader(&headers, query_key(q.as_deref()).as_deref()) {
        Err(e) => e.into_response(),
        Ok(()) => match state.findings.as_ref().and_then(|f| f.findings()) {
            Some(f) => {
                let mut r = (StatusCode::OK, f.html.clone()).into_response();
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                r
            }
            None => (StatusCode::NOT_FOUND, json_headers(), json!({"error": "no report yet: the tables have no events, or the first report is still being made"}).to_string())
                .into_response(),
        },
    };
    finish(&state, ROUTE_LIVE, started, resp)
}

/// `GET /v1/live`: everything the page shows, as JSON (documented in the OpenAPI).
pub async fn data(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let resp = match state.reader(&headers, query_key(q.as_deref()).as_deref()) {
        Err(e) => e.into_response(),
        Ok(()) => match build(&state).await {
            Ok(v) => (StatusCode::OK, json_headers(), v.to_string()).into_response(),
            Err(e) => e.into_response(),
        },
    };
    finish(&state, ROUTE_LIVE, started, resp)
}

async fn build(state: &Arc<AppState>) -> Result<Value, ApiError> {
    let now = take_sample(state);
    let history: Vec<Sample> = state.live.history.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
    let types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();

    // Per-second rates from consecutive samples.
    let mut series = Vec::with_capacity(history.len());
    for w in history.windows(2) {
        let secs = (w[1].unix_ms.saturating_sub(w[0].unix_ms)).max(1) as f64 / 1000.0;
        let accepted: Vec<f64> = (0..types.len()).map(|i| (w[1].accepted[i] - w[0].accepted[i]) as f64 / secs).collect();
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
    let unwritable = state.log.unwritable();
    let stats = state.log.stats();

    // Rejections: by reason (metrics), by reason and field (ours), the latest few (the log's).
    let by_reason: Vec<Value> =
        state.metrics.rejected_by_reason().into_iter().map(|(r, n)| json!({"reason": r.as_str(), "count": n})).collect();
    let mut by_field: Vec<(RejectReason, String, u64)> =
        state.live.fields.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|((r, f), n)| (*r, f.clone(), *n)).collect();
    by_field.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.as_str().cmp(b.0.as_str())).then(a.1.cmp(&b.1)));
    by_field.truncate(50);
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
        "accepted_total": now.accepted.to_vec(),
        "rejected_total": now.rejected,
        "series": series,
        "rejected": {"by_reason": by_reason, "by_field": by_field.iter().map(|(r, f, n)| json!({"reason": r.as_str(), "field": f, "count": n})).collect::<Vec<_>>(), "latest": latest},
        "freshness": {
            "log_end_offset": now.log_end,
            "projected_offset": now.projected,
            "lag_events": lag_events,
            "lag_seconds": lag_seconds,
            "projection_steps_total": projection.steps_total,
            "projection_errors_total": projection.errors_total,
            "projection_error": projection.error,
        },
        "health": {
            "status": if unwritable.is_some() || projection.error.is_some() { "degraded" } else { "ok" },
            "reason": unwritable,
            "disk_free_bytes": stats.free_bytes,
            "disk_reserve_bytes": stats.reserve_bytes,
        },
        "findings": findings,
    }))
}
