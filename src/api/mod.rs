//! The HTTP API (axum): takes events from games and load generators, validates them,
//! appends them to the log and answers only once they are durable.
//!
//! Routes (see docs/CONTRACT.md): `POST /v1/events` (JSON object, JSON array, NDJSON, gzip),
//! `GET|POST /{event_type}?field=value&…` (the seed's Flask style), `GET /healthz`,
//! `GET /metrics`, `GET /v1/rejected`, `GET /v1/replay`.
//!
//! Invariants:
//! - An event is acknowledged (counted in `accepted`) only after the log's flush covering
//!   it returned `Ok`.
//! - Every refused event is answered with its index and reason, counted in metrics, and
//!   kept in the rejected store; nothing is dropped silently.
//! - Every limit is a named constant below; going over one is a 413 with a JSON error.
//! - Errors map to HTTP statuses in one place: [`ApiError::status`].

use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use tokio::net::TcpListener;

use crate::auth::TokenBucket;
use crate::catalog::{Catalog, StockBook};
use crate::event::{self, EventType, Record, RejectReason, RejectedEvent, Rejection, RequestMeta, MAX_REJECTED_RAW_BYTES};
use crate::log::{AppendBatch, EventLog, LogError};
use crate::metrics::{Metrics, ProjectionSource};
use crate::replay;

pub mod live;

pub use crate::wire::{MAX_BODY_BYTES, MAX_DECOMPRESSED_BYTES, MAX_EVENTS_PER_REQUEST, MAX_EVENT_BYTES};
/// Response header of the seed-style routes naming the accepted event's log offset.
pub const OFFSET_HEADER: &str = "x-questlog-offset";
/// Most rejected events one `/v1/rejected` request lists.
pub const MAX_REJECTED_LIST: usize = 10_000;
/// Rejected events read from the store at a time while a `/v1/rejected` chunk is built
/// (each read decodes the block that holds the first: up to 1,000 events).
const REJECTED_READ_BATCH: usize = 256;

const ROUTE_EVENTS: usize = 0;
const ROUTE_SEED: usize = 1;
const ROUTE_HEALTHZ: usize = 2;
const ROUTE_METRICS: usize = 3;
const ROUTE_REJECTED: usize = 4;
const ROUTE_REPLAY: usize = 5;
const ROUTE_LIVE: usize = 6;

/// Most open connections. Each costs a task, buffers (tens of KiB) and a file descriptor;
/// 1,024 is well under the default descriptor limit and far above what the 64-connection
/// load tests use. Past it a connection is answered 429 and closed at once.
pub const MAX_CONNECTIONS: usize = 1_024;
/// Time a client has to send a request's headers (and an idle keep-alive connection to
/// start its next request): slow or stalled clients (slowloris) are cut off after it.
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Time a client has to send a request's body once its headers are in.
pub const BODY_READ_TIMEOUT_MS: u64 = 30_000;
/// Longest wait for the log to confirm an append. Past it the client gets 503 and
/// retries; the retry is safe (the log drops a repeated `event_id`). A healthy group
/// commit takes milliseconds; this only bounds a storage that stopped answering.
pub const APPEND_CONFIRM_TIMEOUT_MS: u64 = 15_000;
/// Most bytes the bodies of all requests in flight may hold at once: the bytes read off the
/// wire (until inflated or joined), the bytes gzip inflates them to, and the copy of each
/// event's text its record keeps. Past it a request gets 503 (`Retry-After: 1`) and gives
/// back what it held. A body at the decompression limit holds 128 MiB at its peak (inflated
/// and copied), so two fit; an ordinary 10,000-event batch (~3 MiB) holds ~6 MiB, so ~40
/// fit at once, more than the 64-connection load tests keep in the handler at a time.
/// Without it 1,024 connections could each hold 128 MiB (128 GiB).
pub const MAX_BODY_MEMORY_BYTES: usize = 256 * 1024 * 1024;

/// Most bytes of streamed response bodies (`/v1/replay`, `/v1/rejected`) the server holds
/// at once, across all connections: chunks being built, waiting for their connection, or
/// in hyper's write buffer. A chunk takes its bytes before it is built and gives them back
/// once written to the socket, so a slow reader holds at most a few chunks and readers past
/// the budget wait for it rather than grow the server's memory. 64 MiB: 50 readers of a
/// large log hold ~40 MiB at most (two 128 KiB chunks and hyper's 400 KB buffer each),
/// and a fast reader streams hundreds of MB/s through it.
pub const MAX_RESPONSE_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// A streamed response is built in chunks of about this many bytes (a chunk ends after the
/// line that reaches it): small enough that a slow reader holds little, large enough that
/// reading the log again for each chunk (one block, 1,000 records) is amortised.
pub const RESPONSE_CHUNK_BYTES: usize = 128 * 1024;
/// The longest line a response can have: a replay line of an event at [`MAX_EVENT_BYTES`]
/// with every byte of its `raw_event` escaped (6 bytes each) plus its fields and headers,
/// each escaped likewise, is under 450 KiB.
const MAX_RESPONSE_LINE_BYTES: usize = 512 * 1024;
/// Bytes a chunk takes from [`MAX_RESPONSE_MEMORY_BYTES`] while it is built; what it does
/// not use goes back before it is queued.
const RESPONSE_CHUNK_RESERVE_BYTES: usize = RESPONSE_CHUNK_BYTES + MAX_RESPONSE_LINE_BYTES;
/// Chunks of one streamed response built ahead of its connection: one, so a slow reader
/// holds one waiting chunk besides what hyper is writing.
const RESPONSE_QUEUE_CHUNKS: usize = 1;
/// Chunks built at once, for all streamed responses together. Each reads a log block of
/// up to 1,000 records into memory (a few MB decoded) on a thread of the blocking pool:
/// four keep both cores busy while a chunk waits on the disk, and bound what 50 readers'
/// chunks hold at once (and the threads whose allocator heaps they touch) to four.
const RESPONSE_BUILDERS: usize = 4;

/// Most bytes of rejected events one request keeps in the rejected store (each event's
/// raw text, message and field, plus [`REJECTED_FIXED_BYTES`]; the request's headers once).
/// 1 MiB keeps every event of a 10,000-event batch of short bad lines, or 128 events with
/// raw texts at the 8 KiB cap: enough to debug any client, while a request cannot make
/// the store grow by more than a small multiple of its own size. Past it, events are still
/// answered and counted (`questlog_rejected_events_not_stored_total{cause="request_budget"}`).
pub const MAX_REJECTED_STORED_BYTES_PER_REQUEST: usize = 1024 * 1024;
/// Bytes of rejected events each app (all keyless requests are one app) may add to the
/// store per second, refilled continuously up to [`REJECTED_STORED_BURST_BYTES`]: a client
/// sending nothing but bad events at full speed grows the store by at most this, about
/// 14 GiB a day before compression, instead of by its whole traffic. Past it events are
/// answered and counted (`cause="app_rate"`), not stored.
pub const REJECTED_STORED_BYTES_PER_SECOND: f64 = 4.0 * 1024.0 * 1024.0;
/// The bucket of [`REJECTED_STORED_BYTES_PER_SECOND`]: four seconds' worth, so a burst of
/// bad batches from an otherwise sane client is kept whole.
pub const REJECTED_STORED_BURST_BYTES: f64 = 16.0 * 1024.0 * 1024.0;
/// What a stored rejected event costs besides its texts: time, index, reason, framing.
const REJECTED_FIXED_BYTES: usize = 64;
/// An append answer's bytes besides its listed rejections: `accepted`, `duplicates` and
/// the offsets, at most 20 digits each, and the member names.
const ANSWER_NUMBERS_BYTES: usize = 160;

/// Connection limits of a server; the defaults are the constants above.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    /// See [`WRITE_STALL_TIMEOUT_MS`].
    pub write_stall_timeout_ms: u64,
    /// See [`MAX_BODY_MEMORY_BYTES`].
    pub max_body_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout_ms: HEADER_READ_TIMEOUT_MS,
            body_read_timeout_ms: BODY_READ_TIMEOUT_MS,
            write_stall_timeout_ms: WRITE_STALL_TIMEOUT_MS,
            max_body_memory_bytes: MAX_BODY_MEMORY_BYTES,
        }
    }
}

/// Time a connection may take nothing of what the server writes to it: past it the
/// connection is closed. A reader that reads slowly makes progress and is never cut off;
/// one that reads nothing would otherwise hold its answer's memory (and a share of the
/// response budget others wait for) for as long as it stays connected.
pub const WRITE_STALL_TIMEOUT_MS: u64 = 60_000;

/// Longest a streamed answer waits for room in the response budget before it is answered
/// 503 (`Retry-After: 1`): the budget is held by readers that read slowly.
pub const RESPONSE_MEMORY_WAIT_MS: u64 = 10_000;

/// A connection's socket, closed with `TimedOut` once a write has been pending (the
/// client taking nothing) for longer than its limit. Reads pass through.
struct StallGuard<T> {
    inner: T,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallGuard<T> {
    fn new(inner: T, limit: Duration) -> StallGuard<T> {
        StallGuard { inner, limit, stalled: None }
    }

    /// After a write or flush returned `poll`: pending starts the timer (once), and a
    /// timer that ran out turns pending into an error; only bytes taken (`progress`) clear
    /// it. (A socket's flush is always ready at once, so it must not count as progress,
    /// or a connection woken by its own timer would start it again for ever.)
    fn watch<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<R>>,
        progress: impl Fn(&R) -> bool,
    ) -> std::task::Poll<std::io::Result<R>> {
        use std::task::Poll;
        match poll {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client took nothing of the answer for too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(Ok(r)) => {
                if progress(&r) {
                    self.stalled = None;
                }
                Poll::Ready(Ok(r))
            }
            other => other,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll, |_| false)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What every handler shares.
pub struct AppState {
    pub log: Arc<dyn EventLog>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// API keys; `None` serves everyone (the default).
    pub keys: Option<Arc<crate::auth::ApiKeys>>,
    /// Bytes of request bodies in flight: one permit per byte, [`Limits::max_body_memory_bytes`] in all.
    body_memory: Arc<tokio::sync::Semaphore>,
    /// The projector's figures, for `/healthz` and `/metrics`.
    pub projection: Arc<dyn ProjectionSource>,
    /// The store catalogue purchases are checked against (`serve --catalog`); `None`
    /// takes purchases as they come.
    pub catalog: Option<Arc<ApiCatalog>>,
    /// What the live page shows that the API keeps itself (rates, rejections by field).
    pub live: live::Live,
    /// The report's findings as the tables move, for the live page; `None`: not computed.
    pub findings: Option<Arc<dyn live::FindingsSource>>,
    /// Bytes of streamed responses held: one permit per byte, [`MAX_RESPONSE_MEMORY_BYTES`] in all.
    response_memory: Arc<tokio::sync::Semaphore>,
    /// Chunks of streamed responses being built: [`RESPONSE_BUILDERS`] at once.
    response_builders: Arc<tokio::sync::Semaphore>,
    /// Set when the server stops: streamed answers (a `follow` replay never ends by itself)
    /// break off so that the connections can finish.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Bytes each app may still add to the rejected store (key: app name, `None` keyless).
    rejected_budget: std::sync::Mutex<std::collections::HashMap<Option<String>, Arc<TokenBucket>>>,
    /// Without API keys: the host names requests may name besides IP addresses and
    /// `localhost` (`serve --allowed-host`), against DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

/// The store catalogue `serve --catalog` checks purchases against (it is recorded in the
/// log before the server takes events), with this node's [`StockBook`]: the seed-style
/// route fills a purchase's `on_hand_qty` from it, as the seed's Flask app read stock from
/// its SQLite. The `stock` table, computed from the log, is the authoritative figure;
/// this one can differ from it only in the order of purchases that raced.
pub struct ApiCatalog {
    catalog: Catalog,
    book: std::sync::Mutex<StockBook>,
}

impl ApiCatalog {
    /// `book` holds the stock of the log's purchases so far.
    pub fn new(catalog: Catalog, book: StockBook) -> ApiCatalog {
        ApiCatalog { catalog, book: std::sync::Mutex::new(book) }
    }

    /// Fills in a seed-style purchase from the catalogue ([`Catalog::fill_purchase`]),
    /// and `on_hand_qty`, when the query has none, with what this purchase leaves.
    fn fill(&self, members: &mut Vec<(String, serde_json::Value)>, now_us: i64) -> Result<(), Rejection> {
        let (item, quantity) = self.catalog.fill_purchase(members)?;
        if !members.iter().any(|(k, _)| k == "on_hand_qty") {
            let time_us = members
                .iter()
                .find(|(k, _)| k == "event_time")
                .and_then(|(_, v)| v.as_str())
                .and_then(|t| event::parse_time_us(t).ok())
                .unwrap_or(now_us);
            let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
            let left = book.on_hand_after(time_us, item.store_id, item.inventory_id, quantity).unwrap_or(item.starting_stock);
            members.push(("on_hand_qty".into(), serde_json::Value::from(left.clamp(0, i16::MAX as i64))));
        }
        Ok(())
    }

    /// Moves stock by the purchases among `records` that the log stored.
    fn stored(&self, purchases: &[(i64, i64, i64, f32)]) {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        for &(time_us, store_id, inventory_id, total_cost) in purchases {
            book.purchase(time_us, store_id, inventory_id, total_cost);
        }
    }
}

/// Bytes of [`AppState::body_memory`] one request holds; given back when dropped.
struct BodyMemory {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    budget: Arc<tokio::sync::Semaphore>,
}

/// A request whose body held at least this much memory asks the allocator to give freed
/// memory back to the OS when it ends. mimalloc (the binary's allocator) otherwise keeps
/// freed memory until later allocations trigger a purge, so after a burst of large bodies
/// an idle server kept ~40 MB more for as long as it stayed idle. 8 MiB: well above
/// ordinary batches (~3 MiB for 10,000 events), so they never pay for the collection.
const RETURN_MEMORY_AFTER_BYTES: usize = 8 * 1024 * 1024;

impl Drop for BodyMemory {
    fn drop(&mut self) {
        let held = self.permit.as_ref().map_or(0, |p| p.num_permits());
        // The body's buffers are dropped before this (declared after it in the handler).
        drop(self.permit.take());
        if held >= RETURN_MEMORY_AFTER_BYTES {
            // SAFETY: mi_collect takes a flag and touches only mimalloc's own state; it is
            // callable from any thread at any time (a no-op for memory it does not manage).
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    }
}

impl BodyMemory {
    fn new(budget: &Arc<tokio::sync::Semaphore>) -> BodyMemory {
        BodyMemory { permit: None, budget: budget.clone() }
    }

    /// Takes `bytes` more from the budget, or [`ApiError::OverMemoryBudget`] at once.
    fn take(&mut self, bytes: usize) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let n = u32::try_from(bytes).map_err(|_| ApiError::OverMemoryBudget)?;
        let more = self.budget.clone().try_acquire_many_owned(n).map_err(|_| ApiError::OverMemoryBudget)?;
        match &mut self.permit {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
        Ok(())
    }

    /// Gives `bytes` back to the budget (memory this request has freed).
    fn give_back(&mut self, bytes: usize) {
        if let Some(p) = &mut self.permit {
            drop(p.split(bytes.min(p.num_permits())));
        }
    }

    /// Keeps `bytes` of what this request holds (its answer, until written) and gives the
    /// rest back.
    fn keep_only(&mut self, bytes: usize) {
        let held = self.permit.as_ref().map_or(0, |p| p.num_permits());
        self.give_back(held.saturating_sub(bytes));
    }
}

/// An answer's text with the memory it holds: given back when hyper has written it and
/// drops the body, so answers waiting for slow readers stay in the budget too.
struct ChargedAnswer {
    text: Vec<u8>,
    _memory: BodyMemory,
}

impl AsRef<[u8]> for ChargedAnswer {
    fn as_ref(&self) -> &[u8] {
        &self.text
    }
}

/// The body of an answer of `text`, charged to `memory` (which keeps only its bytes) until
/// written.
fn charged_body(text: String, mut memory: BodyMemory) -> Body {
    memory.keep_only(text.len());
    Body::from(Bytes::from_owner(ChargedAnswer { text: text.into_bytes(), _memory: memory }))
}

impl AppState {
    pub fn new(
        log: Arc<dyn EventLog>,
        metrics: Arc<Metrics>,
        projection: Arc<dyn ProjectionSource>,
        limits: Limits,
        keys: Option<Arc<crate::auth::ApiKeys>>,
    ) -> AppState {
        let body_memory = Arc::new(tokio::sync::Semaphore::new(limits.max_body_memory_bytes.min(tokio::sync::Semaphore::MAX_PERMITS)));
        let response_memory = Arc::new(tokio::sync::Semaphore::new(MAX_RESPONSE_MEMORY_BYTES));
        AppState {
            log,
            metrics,
            limits,
            keys,
            body_memory,
            projection,
            catalog: None,
            live: live::Live::default(),
            findings: None,
            response_memory,
            response_builders: Arc::new(tokio::sync::Semaphore::new(RESPONSE_BUILDERS)),
            stopping: tokio::sync::watch::channel(false).0,
            rejected_budget: Default::default(),
            allowed_hosts: Vec::new(),
        }
    }

    /// Host names (besides IP addresses and `localhost`) a keyless server answers to.
    pub fn with_allowed_hosts(mut self, hosts: Vec<String>) -> AppState {
        self.allowed_hosts = hosts.into_iter().map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).collect();
        self
    }

    /// The bucket of rejected-store bytes of `app`.
    fn rejected_bucket(&self, app: Option<&str>) -> Arc<TokenBucket> {
        let mut map = self.rejected_budget.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(app.map(str::to_string))
            .or_insert_with(|| Arc::new(TokenBucket::new(REJECTED_STORED_BYTES_PER_SECOND, REJECTED_STORED_BURST_BYTES)))
            .clone()
    }

    /// Without API keys, refuses a request that names another host than this server
    /// (DNS rebinding: a web page whose name was made to resolve to 127.0.0.1) or that a
    /// page of another site sent (its `Origin`): either could read or append through a
    /// developer's browser. IP addresses and `localhost` are always this server's names;
    /// a request without `Host` (HTTP/1.0) or `Origin` (not from a browser) passes.
    fn check_keyless_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.keys.is_some() {
            return Ok(());
        }
        let host = headers.get(header::HOST).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_ascii_lowercase());
        if let Some(host) = &host {
            if !self.host_allowed(host) {
                self.metrics.forbidden(1);
                return Err(ApiError::Forbidden(format!(
                    "Host `{}` is not this server: without API keys it answers only to IP addresses, localhost and --allowed-host names (a guard against DNS rebinding)",
                    host.chars().take(64).collect::<String>()
                )));
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = String::from_utf8_lossy(origin.as_bytes()).trim().to_ascii_lowercase();
            let authority = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
            let same = matches!((authority, &host), (Some(a), Some(h)) if a == h);
            if !same {
                self.metrics.forbidden(2);
                return Err(ApiError::Forbidden(format!(
                    "a page of another site (Origin `{}`) may not use this server: without API keys it takes requests from its own pages and from non-browser clients only",
                    origin.chars().take(64).collect::<String>()
                )));
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        // `host[:port]`, `[v6]:port`, `[v6]`.
        let name = if let Some(rest) = host.strip_prefix('[') {
            match rest.split_once(']') {
                Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => return false,
            }
        } else {
            host.rsplit_once(':').map_or(host, |(n, port)| if port.bytes().all(|b| b.is_ascii_digit()) { n } else { host })
        };
        let name = name.trim_end_matches('.');
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.allowed_hosts.iter().any(|h| h == name)
    }

    /// Serves the findings on the live page (see [`live::FindingsSource`]).
    pub fn with_findings(mut self, findings: Option<Arc<dyn live::FindingsSource>>) -> AppState {
        self.findings = findings;
        self
    }

    /// Checks that the request may read (the log, rejected events, the live page, the
    /// report), when keys are configured: 401 without a known key, 403 for a key without
    /// the `read` grant. `query_key` is the `key` parameter of a page opened in a browser.
    fn reader(&self, headers: &HeaderMap, query_key: Option<&str>) -> Result<(), ApiError> {
        let Some(keys) = &self.keys else { return Ok(()) };
        keys.reader(headers, query_key).map(|_| ()).map_err(|d| self.denied(d))
    }

    /// Checks purchases against `catalog` (see [`ApiCatalog`]).
    pub fn with_catalog(mut self, catalog: Option<Arc<ApiCatalog>>) -> AppState {
        self.catalog = catalog;
        self
    }

    /// The app of the request's key, when keys are configured, which must hold the
    /// `write` grant: 401 without a known key, 403 without the grant.
    fn writer(&self, headers: &HeaderMap) -> Result<Option<&crate::auth::App>, ApiError> {
        let Some(keys) = &self.keys else { return Ok(None) };
        keys.writer(headers).map(Some).map_err(|d| self.denied(d))
    }

    /// Takes `events` from the app's rate budget; 429 when over it.
    fn charge(&self, app: Option<&crate::auth::App>, events: u64) -> Result<(), ApiError> {
        match app {
            Some(app) => app.take(events).map_err(|d| self.denied(d)),
            None => Ok(()),
        }
    }

    fn denied(&self, d: crate::auth::Denied) -> ApiError {
        use crate::auth::Denied;
        use std::sync::atomic::Ordering;
        match d {
            Denied::Missing | Denied::Unknown => {
                self.metrics.unauthorized_total.fetch_add(1, Ordering::Relaxed);
                ApiError::Unauthorized(match d {
                    Denied::Missing => {
                        "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>` (in a browser, open /?key=<key>)"
                    }
                    _ => "unknown API key",
                })
            }
            Denied::Forbidden(scope) => {
                self.metrics.forbidden(0);
                ApiError::Forbidden(match scope {
                    crate::auth::Scope::Read => "this API key may not read: reading the log, rejected events, the live page and the report needs a key with `scopes = [\"read\"]` (or [\"write\", \"read\"]) in the keys file".into(),
                    crate::auth::Scope::Write => "this API key may not send events: appending needs a key with `scopes = [\"write\"]` in the keys file".into(),
                })
            }
            Denied::RateLimited { retry_after_s } => {
                self.metrics.rate_limited_total.fetch_add(1, Ordering::Relaxed);
                ApiError::RateLimited(retry_after_s)
            }
        }
    }
}

/// Why a request failed as a whole. Mapped to a status in [`ApiError::status`] only.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is over the limit of {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("decompressed body is over the limit of {MAX_DECOMPRESSED_BYTES} bytes")]
    DecompressedTooLarge,
    #[error("request has more than {MAX_EVENTS_PER_REQUEST} events")]
    TooManyEvents,
    #[error("event {index} is {size} bytes, over the limit of {MAX_EVENT_BYTES} bytes")]
    EventTooLarge { index: usize, size: usize },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("over this API key's event rate; retry after {0} s")]
    RateLimited(u64),
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    #[error("unsupported Content-Type `{0}`: send application/json (one event or an array) or application/x-ndjson (e.g. curl -H 'Content-Type: application/json')")]
    UnsupportedMediaType(String),
    #[error("unsupported Content-Encoding `{0}`: send identity or gzip")]
    UnsupportedEncoding(String),
    #[error("unreadable body: {0}")]
    Unreadable(String),
    #[error("no route {0}; events go to POST /v1/events or /{{event_type}} with event_type one of join_guild, kill_enemy, accept_quest, take_damage, buy_asset")]
    NoRoute(String),
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("the log is busy; retry shortly")]
    Busy,
    #[error("the server holds too many request bodies in memory right now (limit {} MiB in all); retry shortly", MAX_BODY_MEMORY_BYTES / (1024 * 1024))]
    OverMemoryBudget,
    #[error("the server holds as many streamed answers for their readers as it may (limit {} MiB in all); retry shortly", MAX_RESPONSE_MEMORY_BYTES / (1024 * 1024))]
    OverResponseBudget,
    #[error("the log did not confirm the events within {0} ms; they may or may not be stored: retry with the same event_ids (repeats are dropped)")]
    Unconfirmed(u64),
    #[error("the log could not make the events durable: {0}")]
    Unavailable(String),
    #[error("the disk is full: nothing was acknowledged; retry once space is freed ({0})")]
    NoSpace(String),
}

impl ApiError {
    /// The one place where errors become HTTP statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BodyTooLarge | ApiError::DecompressedTooLarge | ApiError::TooManyEvents | ApiError::EventTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedEncoding(_) | ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unreadable(_) | ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy
            | ApiError::OverMemoryBudget
            | ApiError::OverResponseBudget
            | ApiError::Unavailable(_)
            | ApiError::Unconfirmed(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    fn limit_index(&self) -> Option<usize> {
        match self {
            ApiError::BodyTooLarge => Some(0),
            ApiError::DecompressedTooLarge => Some(1),
            ApiError::TooManyEvents => Some(2),
            ApiError::EventTooLarge { .. } => Some(3),
            _ => None,
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        match e {
            LogError::Busy => ApiError::Busy,
            LogError::NoSpace(m) => ApiError::NoSpace(m),
            LogError::Flush(m) => ApiError::Unavailable(m),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_string(), "accepted": 0 });
        let mut resp = (status, json_headers(), body.to_string()).into_response();
        match &self {
            ApiError::Busy
            | ApiError::OverMemoryBudget
            | ApiError::OverResponseBudget
            | ApiError::Unavailable(_)
            | ApiError::Unconfirmed(_) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::NoSpace(_) => {
                // Space comes back by an operator's hand, not within a second.
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            }
            ApiError::RateLimited(s) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*s));
            }
            ApiError::Unauthorized(_) => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

fn json_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))]
}

/// The router with every route. Tests and `serve` both use it.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/events", axum::routing::post(ingest))
        .route("/v1/rejected", get(list_rejected))
        .route("/v1/replay", get(replay_stream))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/", get(live::page))
        .route("/v1/live", get(live::data))
        .route("/report.html", get(live::report_html))
        .route("/{event_type}", get(seed_style).post(seed_style))
        .layer(axum::middleware::from_fn_with_state(state.clone(), keyless_guard))
        .with_state(state)
}

/// Without API keys, every route first checks `Host` and `Origin`
/// ([`AppState::check_keyless_origin`]); with keys, the routes check the key.
async fn keyless_guard(State(state): State<Arc<AppState>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = Instant::now();
    match state.check_keyless_origin(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => match route_of(req.uri().path()) {
            Some(route) => finish(&state, route, started, e.into_response()),
            None => e.into_response(),
        },
    }
}

/// The measured route a path goes to (`None`: `/openapi.json`, not measured).
fn route_of(path: &str) -> Option<usize> {
    Some(match path {
        "/v1/events" => ROUTE_EVENTS,
        "/v1/rejected" => ROUTE_REJECTED,
        "/v1/replay" => ROUTE_REPLAY,
        "/healthz" => ROUTE_HEALTHZ,
        "/metrics" => ROUTE_METRICS,
        "/" | "/v1/live" | "/report.html" => ROUTE_LIVE,
        "/openapi.json" => return None,
        _ => ROUTE_SEED,
    })
}

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (their appends complete and are answered) before returning.
///
/// Each connection has [`Limits::header_read_timeout_ms`] to send its headers; past
/// [`Limits::max_connections`] open connections a new one gets a 429 and is closed.
pub async fn run(listener: TcpListener, state: Arc<AppState>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use std::sync::atomic::Ordering;

    let limits = state.limits;
    let metrics = state.metrics.clone();
    let stopping = state.stopping.clone();
    let sampler = tokio::spawn(live::sample_every_second(state.clone()));
    let app = router(state);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.connections_refused_total.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut close = close_rx.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _permit = permit;
            metrics.connections_open.fetch_add(1, Ordering::Relaxed);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_millis(limits.header_read_timeout_ms))
                .serve_connection(TokioIo::new(StallGuard::new(stream, Duration::from_millis(limits.write_stall_timeout_ms))), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async {
                    loop {
                        if *close.borrow_and_update() {
                            break;
                        }
                        if close.changed().await.is_err() {
                            break;
                        }
                    }
                } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    sampler.abort();
    stopping.send_replace(true);
    let _ = close_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Answers a connection over the limit with a 429 (with `Retry-After`) and closes it,
/// without waiting long. 429 rather than 503: whoever opens the connection past the limit
/// is, at that moment, the client asking for too much, and clients back off on either.
async fn refuse(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::AsyncWriteExt;
    let body = format!("{{\"error\":\"too many connections (limit {limit}); retry shortly\"}}");
    let resp = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(resp.as_bytes())).await;
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The request's headers as its events keep them, cut to [`event::MAX_HEADER_BYTES`]
/// each and shared by all of its records.
fn request_meta(headers: &HeaderMap, app: Option<&crate::auth::App>) -> RequestMeta {
    let get = |name: header::HeaderName| headers.get(name).map(|v| v.as_bytes());
    let mut meta = RequestMeta::from_headers(get(header::ACCEPT), get(header::HOST), get(header::USER_AGENT));
    meta.app = app.map(|a| a.name.as_str().into());
    meta
}

fn finish(state: &AppState, route: usize, started: Instant, resp: Response) -> Response {
    state.metrics.request(route, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

/// What a request's events came to while it is processed: the records to append, the
/// rejected events to keep, and the `rejected` member of its answer as JSON text. Every
/// byte it holds beyond the body's charge is charged to the request's [`BodyMemory`].
struct Outcome<'a> {
    state: &'a AppState,
    meta: RequestMeta,
    now: i64,
    records: Vec<Record>,
    /// Rejected events to keep (within the request's and the app's share of the store).
    rejected: Vec<RejectedEvent>,
    /// `{"index":…,"reason":…,"field":…,"error":…}` of every rejected event, comma-separated.
    answer: String,
    rejected_count: usize,
    /// Bytes of rejected events this request keeps ([`MAX_REJECTED_STORED_BYTES_PER_REQUEST`]).
    stored_bytes: usize,
    /// The app's rejected-store bucket, once the request has a rejection.
    bucket: Option<Arc<TokenBucket>>,
}

impl<'a> Outcome<'a> {
    fn new(state: &'a AppState, meta: RequestMeta, now: i64, capacity: usize) -> Outcome<'a> {
        Outcome {
            state,
            meta,
            now,
            records: Vec::with_capacity(capacity),
            rejected: Vec::new(),
            answer: String::new(),
            rejected_count: 0,
            stored_bytes: 0,
            bucket: None,
        }
    }

    /// Memory a request's records take besides their text (charged with the body).
    fn record_bytes(events: usize) -> usize {
        events.saturating_mul(std::mem::size_of::<Record>())
    }

    fn take(
        &mut self,
        memory: &mut BodyMemory,
        index: usize,
        raw: &str,
        parsed: Result<event::ClientEvent, Rejection>,
    ) -> Result<(), ApiError> {
        let state = self.state;
        let parsed = match (&state.catalog, parsed) {
            (Some(c), Ok(e)) => c.catalog.check_purchase(&e.payload).map(|()| e),
            (_, parsed) => parsed,
        };
        let rejection = match parsed {
            Ok(e) => {
                self.records.push(Record { received_at_us: self.now, meta: self.meta.clone(), raw_event: raw.to_string(), event: e });
                return Ok(());
            }
            Err(rejection) => rejection,
        };
        // The answer lists every rejected event.
        let line = serde_json::json!({
            "index": index,
            "reason": rejection.reason.as_str(),
            "field": rejection.field,
            "error": rejection.message,
        })
        .to_string();
        memory.take(line.len() + 1)?;
        if self.rejected_count > 0 {
            self.answer.push(',');
        }
        self.answer.push_str(&line);
        self.rejected_count += 1;
        state.metrics.rejected(guess_type(raw), rejection.reason);
        state.live.rejected(rejection.reason, rejection.field.as_deref());
        // The store keeps it within the request's share and the app's rate.
        let raw = event::truncate_utf8(raw, MAX_REJECTED_RAW_BYTES);
        let mut cost = REJECTED_FIXED_BYTES + raw.len() + rejection.message.len() + rejection.field.as_ref().map_or(0, |f| f.len());
        if self.stored_bytes == 0 {
            cost += self.meta.text_bytes();
        }
        if self.stored_bytes + cost > MAX_REJECTED_STORED_BYTES_PER_REQUEST {
            state.metrics.rejected_not_stored(0);
            return Ok(());
        }
        let app = self.meta.app.as_ref().map(|a| a.as_str());
        let bucket = self.bucket.get_or_insert_with(|| state.rejected_bucket(app));
        if bucket.take(cost as f64).is_err() {
            state.metrics.rejected_not_stored(1);
            return Ok(());
        }
        memory.take(cost + std::mem::size_of::<RejectedEvent>())?;
        self.stored_bytes += cost;
        self.rejected.push(RejectedEvent {
            received_at_us: self.now,
            meta: self.meta.clone(),
            index: index as u32,
            raw: raw.to_string(),
            rejection,
        });
        Ok(())
    }

    /// Appends everything; the numbers and rejections of the 200 answer (or the error).
    async fn commit(self, memory: &mut BodyMemory) -> Result<Committed, ApiError> {
        let state = self.state;
        let mut types: Vec<Option<EventType>> = self.records.iter().map(|r| Some(r.event.event_type())).collect();
        let purchases: Vec<Option<(i64, i64, i64, f32)>> = match &state.catalog {
            Some(_) => self.records.iter().map(crate::catalog::purchase_of).collect(),
            None => Vec::new(),
        };
        // The answer's few numbers besides the rejections (charged as they were listed),
        // before the append: once it is durable, the request may no longer fail.
        memory.take(ANSWER_NUMBERS_BYTES)?;
        let pending = state.log.append(AppendBatch { records: self.records, rejected: self.rejected })?;
        let appended = tokio::time::timeout(Duration::from_millis(APPEND_CONFIRM_TIMEOUT_MS), pending.wait_async())
            .await
            .map_err(|_| ApiError::Unconfirmed(APPEND_CONFIRM_TIMEOUT_MS))??;
        for &i in &appended.duplicates {
            if let Some(t) = types.get_mut(i as usize).and_then(Option::take) {
                state.metrics.duplicate(t);
            }
        }
        for t in types.iter().flatten() {
            state.metrics.accepted(*t);
        }
        if let Some(c) = &state.catalog {
            // Stored purchases only: a duplicate's type was taken out of `types` above.
            let stored: Vec<_> = purchases.into_iter().zip(&types).filter_map(|(p, t)| t.and(p)).collect();
            c.stored(&stored);
        }
        // A partitioned (Kafka) log gives each record a (partition, offset) instead of
        // one contiguous range: `first_offset`/`last_offset` are then null.
        let accepted = (appended.offsets.end - appended.offsets.start) as usize + appended.positions.len();
        let (first, last) = if appended.offsets.end > appended.offsets.start {
            (Some(appended.offsets.start), Some(appended.offsets.end - 1))
        } else {
            (None, None)
        };
        Ok(Committed {
            accepted,
            duplicates: appended.duplicates.len(),
            first,
            last,
            rejected: self.answer,
            rejected_count: self.rejected_count,
        })
    }
}

/// What an append came to, for its answer (contract 3.2).
struct Committed {
    accepted: usize,
    duplicates: usize,
    first: Option<u64>,
    last: Option<u64>,
    /// The `rejected` array's members, as JSON text.
    rejected: String,
    rejected_count: usize,
}

impl Committed {
    /// `{"accepted":N,"rejected":[…],"duplicates":D[,"first_offset":A,"last_offset":B]}`.
    fn json(&self, with_offsets: bool) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |n| n.to_string());
        let mut out = format!("{{\"accepted\":{},\"rejected\":[{}],\"duplicates\":{}", self.accepted, self.rejected, self.duplicates);
        if with_offsets {
            out.push_str(&format!(",\"first_offset\":{},\"last_offset\":{}", opt(self.first), opt(self.last)));
        }
        out.push('}');
        out
    }
}

/// The `event_type` of a raw event when it can be told, for the metrics label.
fn guess_type(raw: &str) -> Option<EventType> {
    #[derive(serde::Deserialize)]
    struct T<'a> {
        #[serde(borrow)]
        event_type: Option<&'a str>,
    }
    serde_json::from_str::<T>(raw).ok().and_then(|t| t.event_type).and_then(EventType::parse)
}

/// Keeps a body nobody could read as a rejected event, so it can be inspected. It counts as
/// one event against the key's rate first (a 429 instead, not stored, when over it), and
/// is kept within the app's share of the rejected store.
async fn keep_unreadable(state: &AppState, app: Option<&crate::auth::App>, body: &[u8], meta: &RequestMeta, err: ApiError) -> ApiError {
    if let Err(limited) = state.charge(app, 1) {
        return limited;
    }
    let reason = RejectReason::MalformedJson;
    state.metrics.rejected(None, reason);
    state.live.rejected(reason, None);
    let raw = String::from_utf8_lossy(&body[..body.len().min(MAX_REJECTED_RAW_BYTES)]).into_owned();
    let raw = event::truncate_utf8(&raw, MAX_REJECTED_RAW_BYTES).to_string();
    let rejection = Rejection::new(reason, None, err.to_string());
    let cost = REJECTED_FIXED_BYTES + raw.len() + rejection.message.len() + meta.text_bytes();
    if state.rejected_bucket(meta.app.as_ref().map(|a| a.as_str())).take(cost as f64).is_err() {
        state.metrics.rejected_not_stored(1);
        return err;
    }
    let rejected = RejectedEvent { received_at_us: now_us(), meta: meta.clone(), index: 0, raw, rejection };
    if let Ok(p) = state.log.append(AppendBatch { records: vec![], rejected: vec![rejected] }) {
        let _ = tokio::time::timeout(Duration::from_millis(APPEND_CONFIRM_TIMEOUT_MS), p.wait_async()).await;
    }
    err
}

async fn ingest(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let resp = match ingest_inner(&state, &headers, body).await {
        Ok((text, memory)) => (StatusCode::OK, json_headers(), charged_body(text, memory)).into_response(),
        Err(e) => {
            if let Some(i) = e.limit_index() {
                state.metrics.over_limit(i);
            }
            if matches!(e, ApiError::OverMemoryBudget) {
                state.metrics.over_body_memory_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            e.into_response()
        }
    };
    finish(&state, ROUTE_EVENTS, started, resp)
}

/// Reads the whole body (inflating gzip), charging every byte it keeps to `memory`.
async fn read_body(headers: &HeaderMap, body: Body, body_timeout_ms: u64, memory: &mut BodyMemory) -> Result<Bytes, ApiError> {
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if len > MAX_BODY_BYTES as u64 {
            return Err(ApiError::BodyTooLarge);
        }
    }
    let wire = tokio::time::timeout(std::time::Duration::from_millis(body_timeout_ms), collect_body(body, memory))
        .await
        .map_err(|_| ApiError::BodyTimeout(body_timeout_ms))??;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(wire),
        "gzip" | "x-gzip" => {
            // Inflating 64 MiB takes a core for ~0.1 s: on the blocking pool, so the async
            // workers keep serving other connections meanwhile. The request's memory
            // charge travels with it and comes back.
            let mut charge = BodyMemory { permit: memory.permit.take(), budget: memory.budget.clone() };
            let (result, mut charge) = tokio::task::spawn_blocking(move || {
                let result = inflate(wire, &mut charge);
                (result, charge)
            })
            .await
            .map_err(|e| ApiError::Unreadable(format!("inflating the body failed: {e}")))?;
            memory.permit = charge.permit.take();
            result
        }
        other => Err(ApiError::UnsupportedEncoding(other.chars().take(64).collect())),
    }
}

/// Inflates a gzip body, charging what it keeps to `memory`.
///
/// The output is sized once from the gzip trailer's ISIZE (the inflated length of the last
/// member, mod 2^32) when that is plausible, so an honest body never reallocates — each
/// reallocation holds the old and the new buffer at once, memory the budget cannot see.
/// A body whose trailer lies grows by doubling, bounded by the limit (not the next power of
/// two past it, as `read_to_end` would: 128 MiB to find the 64 MiB + 1st byte).
fn inflate(wire: Bytes, memory: &mut BodyMemory) -> Result<Bytes, ApiError> {
    let trailer_len = (wire.len() >= 18)
        .then(|| u32::from_le_bytes([wire[wire.len() - 4], wire[wire.len() - 3], wire[wire.len() - 2], wire[wire.len() - 1]]) as usize)
        .unwrap_or(0);
    // The trailer is a hint from the client: it cannot make us take more than the limit.
    let first = trailer_len.max(wire.len() * 4).min(MAX_DECOMPRESSED_BYTES);
    memory.take(first)?;
    let mut out: Vec<u8> = Vec::with_capacity(first);
    let mut dec = flate2::read::MultiGzDecoder::new(&wire[..]);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = dec.read(&mut chunk).map_err(|e| ApiError::Unreadable(format!("bad gzip body: {e}")))?;
        if n == 0 {
            break;
        }
        if out.len() + n > MAX_DECOMPRESSED_BYTES {
            return Err(ApiError::DecompressedTooLarge);
        }
        if out.capacity() - out.len() < n {
            let grow = out.capacity().max(n).min(MAX_DECOMPRESSED_BYTES - out.len());
            memory.take(grow)?;
            out.reserve_exact(grow);
        }
        out.extend_from_slice(&chunk[..n]);
    }
    let wire_len = wire.len();
    drop(dec);
    drop(wire);
    memory.give_back(wire_len);
    Ok(Bytes::from(out))
}

/// Collects a body's frames up to [`MAX_BODY_BYTES`], charging each to `memory` as it
/// arrives (so a request over the budget stops reading at once).
async fn collect_body(body: Body, memory: &mut BodyMemory) -> Result<Bytes, ApiError> {
    let mut body = body;
    let mut parts: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::Unreadable(format!("reading the body failed: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > MAX_BODY_BYTES {
            return Err(ApiError::BodyTooLarge);
        }
        memory.take(data.len())?;
        parts.push(data);
    }
    Ok(match parts.len() {
        0 => Bytes::new(),
        1 => parts.pop().unwrap_or_default(),
        _ => {
            // Joining needs the parts and the whole at once for a moment.
            memory.take(total)?;
            let mut all = Vec::with_capacity(total);
            for p in parts {
                all.extend_from_slice(&p);
            }
            memory.give_back(total);
            Bytes::from(all)
        }
    })
}

/// The body formats `/v1/events` reads, by `Content-Type` (none means JSON).
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    Json,
    Ndjson,
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else { return Ok(BodyFormat::Json) };
    let ct = String::from_utf8_lossy(ct.as_bytes()).to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    match mime {
        "application/x-ndjson" | "application/ndjson" | "application/jsonlines" | "application/x-jsonlines" => Ok(BodyFormat::Ndjson),
        "" | "application/json" | "text/json" | "text/plain" => Ok(BodyFormat::Json),
        m if m.starts_with("application/") && m.ends_with("+json") => Ok(BodyFormat::Json),
        other => Err(ApiError::UnsupportedMediaType(other.chars().take(64).collect())),
    }
}

/// The answer of an append and the request's memory charge, which its body keeps until
/// written (see [`charged_body`]).
async fn ingest_inner(state: &AppState, headers: &HeaderMap, body: Body) -> Result<(String, BodyMemory), ApiError> {
    let app = state.writer(headers)?;
    let format = body_format(headers)?;
    let meta = request_meta(headers, app);
    let mut memory = BodyMemory::new(&state.body_memory);
    memory.take(meta.text_bytes())?;
    let body = read_body(headers, body, state.limits.body_read_timeout_ms, &mut memory).await?;
    let now = now_us();
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(e) => {
            let err = ApiError::Unreadable(format!("body is not UTF-8: {e}"));
            return Err(keep_unreadable(state, app, &body, &meta, err).await);
        }
    };
    let mut out;
    if format == BodyFormat::Ndjson {
        // Counted as they are split, stopping past the limit: a body of millions of
        // tiny lines must not become a vector of millions of slices first.
        let mut lines: Vec<&str> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if lines.len() == MAX_EVENTS_PER_REQUEST {
                return Err(ApiError::TooManyEvents);
            }
            lines.push(line);
        }
        check_sizes(lines.iter().copied())?;
        // The records keep a copy of each event's text, and their parsed fields another.
        memory.take(2 * body.len() + Outcome::record_bytes(lines.len()))?;
        state.charge(app, lines.len() as u64)?;
        out = Outcome::new(state, meta, now, lines.len());
        for (i, line) in lines.iter().enumerate() {
            out.take(&mut memory, i, line, event::validate_json(line))?;
        }
    } else {
        let trimmed = text.trim();
        if trimmed.starts_with('[') {
            let items = match serde_json::from_str::<BoundedArray>(trimmed) {
                Ok(a) => a.0,
                Err(e) if e.to_string().starts_with(TOO_MANY) => return Err(ApiError::TooManyEvents),
                Err(e) => {
                    let err = ApiError::Unreadable(format!("malformed JSON array: {e}"));
                    return Err(keep_unreadable(state, app, &body, &meta, err).await);
                }
            };
            check_sizes(items.iter().map(|r| r.get()))?;
            memory.take(2 * body.len() + Outcome::record_bytes(items.len()))?;
            state.charge(app, items.len() as u64)?;
            out = Outcome::new(state, meta, now, items.len());
            for (i, raw) in items.iter().enumerate() {
                out.take(&mut memory, i, raw.get(), event::validate_json(raw.get()))?;
            }
        } else {
            check_sizes(std::iter::once(trimmed))?;
            if let Err(e) = serde_json::from_str::<&RawValue>(trimmed) {
                let err = ApiError::Unreadable(format!("malformed JSON: {e}"));
                return Err(keep_unreadable(state, app, &body, &meta, err).await);
            }
            state.charge(app, 1)?;
            out = Outcome::new(state, meta, now, 1);
            out.take(&mut memory, 0, trimmed, event::validate_json(trimmed))?;
        }
    }
    let answer = out.commit(&mut memory).await?.json(true);
    drop(body);
    Ok((answer, memory))
}

fn check_sizes<'a>(events: impl Iterator<Item = &'a str>) -> Result<(), ApiError> {
    for (index, e) in events.enumerate() {
        if e.len() > MAX_EVENT_BYTES {
            return Err(ApiError::EventTooLarge { index, size: e.len() });
        }
    }
    Ok(())
}

const TOO_MANY: &str = "too many events";

/// A JSON array of raw events that stops reading past [`MAX_EVENTS_PER_REQUEST`].
struct BoundedArray<'a>(Vec<&'a RawValue>);

impl<'de> serde::Deserialize<'de> for BoundedArray<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BoundedArray<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON array of events")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BoundedArray<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    if items.len() == MAX_EVENTS_PER_REQUEST {
                        return Err(de::Error::custom(TOO_MANY));
                    }
                    items.push(item);
                }
                Ok(BoundedArray(items))
            }
        }
        d.deserialize_seq(V)
    }
}

async fn seed_style(
    State(state): State<Arc<AppState>>,
    Path(event_type): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let resp = match seed_style_inner(&state, &event_type, query.as_deref().unwrap_or(""), &headers).await {
        Ok(c) => {
            // The body keeps one length for every accepted event (Apache Bench counts a
            // response of another length as failed); the offset travels in a header.
            let status = if c.rejected_count > 0 { StatusCode::BAD_REQUEST } else { StatusCode::OK };
            let mut resp = (status, json_headers(), c.json(false)).into_response();
            if let Some(o) = c.first {
                resp.headers_mut().insert(OFFSET_HEADER, HeaderValue::from(o));
            }
            resp
        }
        Err(e) => e.into_response(),
    };
    finish(&state, ROUTE_SEED, started, resp)
}

async fn seed_style_inner(state: &AppState, event_type: &str, query: &str, headers: &HeaderMap) -> Result<Committed, ApiError> {
    if EventType::parse(event_type).is_none() {
        return Err(ApiError::NoRoute(format!("/{}", event_type.chars().take(64).collect::<String>())));
    }
    let app = state.writer(headers)?;
    state.charge(app, 1)?;
    if query.len() > MAX_EVENT_BYTES {
        state.metrics.over_limit(3);
        return Err(ApiError::EventTooLarge { index: 0, size: query.len() });
    }
    let meta = request_meta(headers, app);
    let mut memory = BodyMemory::new(&state.body_memory);
    // The query, its parsed parameters and the record's copy.
    memory.take(meta.text_bytes() + 3 * query.len() + Outcome::record_bytes(1))?;
    let now = now_us();
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let mut out = Outcome::new(state, meta, now, 1);
    match event::members_from_query(event_type, &params) {
        Ok(mut members) => {
            let filled = match &state.catalog {
                Some(c) if event_type == EventType::BuyAsset.as_str() => c.fill(&mut members, now),
                _ => Ok(()),
            };
            let raw = event::members_to_json(&members);
            let parsed = filled.and_then(|()| event::validate_object(&members));
            out.take(&mut memory, 0, &raw, parsed)?;
        }
        Err(rejection) => {
            let raw = format!("{{\"event_type\":\"{event_type}\",\"query\":{}}}", serde_json::Value::String(query.to_string()));
            out.take(&mut memory, 0, &raw, Err(rejection))?;
        }
    }
    out.commit(&mut memory).await
}

/// The OpenAPI description of this API (checked by schemathesis in CI).
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    (StatusCode::OK, json_headers(), OPENAPI_JSON).into_response()
}

/// `200 {"status":"ok"}` while the log takes appends; `503 {"status":"degraded","reason":…}`
/// while it cannot (disk full, storage reopening), so a load balancer steers games away.
///
/// Projection failing (a step's error, a panic) makes the status `degraded` with
/// `projection_error` saying why, but stays 200: appends still succeed, and the log keeps
/// every event for the tables to catch up once the cause is fixed.
async fn healthz(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let mut unwritable = state.log.unwritable();
    let mut projection = state.projection.figures();
    // With keys on, /healthz answers anyone (load balancers carry no key), but its reasons
    // name paths and storage errors: those only for a key that may read.
    if state.keys.as_ref().is_some_and(|k| !k.is_reader(&headers)) {
        const HIDDEN: &str = "details for a key with the read grant";
        unwritable = unwritable.map(|_| format!("the log cannot take appends ({HIDDEN})"));
        projection.error = projection.error.map(|_| format!("projection is failing ({HIDDEN})"));
    }
    let mut body = serde_json::json!({
        "status": if unwritable.is_some() || projection.error.is_some() { "degraded" } else { "ok" },
        "log_end_offset": state.log.durable_end(),
        "projected_offset": projection.projected_offset,
    });
    if let Some(why) = projection.error {
        body["projection_error"] = serde_json::Value::String(why);
    }
    let status = match unwritable {
        Some(reason) => {
            body["reason"] = serde_json::Value::String(reason);
            StatusCode::SERVICE_UNAVAILABLE
        }
        None => StatusCode::OK,
    };
    let resp = (status, json_headers(), body.to_string()).into_response();
    finish(&state, ROUTE_HEALTHZ, started, resp)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    let text = state.metrics.render(&state.log.stats(), &state.projection.figures());
    let resp = (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], text).into_response();
    finish(&state, ROUTE_METRICS, started, resp)
}

#[derive(serde::Deserialize)]
struct RejectedQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

/// One chunk of a streamed response, holding its bytes of [`AppState::response_memory`]
/// until hyper has written it and drops it.
struct BudgetedChunk {
    bytes: Vec<u8>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for BudgetedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Builds one chunk of a streamed response with `render` on the blocking pool (reading
/// the log is synchronous and can take milliseconds), within the response memory budget:
/// it waits for [`RESPONSE_CHUNK_RESERVE_BYTES`] of it first, keeps what the chunk holds
/// and gives the rest back. `render` appends at most about [`RESPONSE_CHUNK_BYTES`] (it
/// stops after the line that reaches it) and says what comes next.
async fn budgeted_chunk<T: Send + 'static>(
    state: Arc<AppState>,
    render: impl FnOnce(&mut String) -> Result<T, ApiError> + Send + 'static,
) -> Result<(Bytes, T), ApiError> {
    let budget = state.response_memory.clone();
    let mut stopping = state.stopping.subscribe();
    let stopped = || ApiError::Unavailable("the server is stopping".into());
    let mut permit = match budget.clone().try_acquire_many_owned(RESPONSE_CHUNK_RESERVE_BYTES as u32) {
        Ok(p) => p,
        Err(_) => {
            state.metrics.response_memory_waits_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let wait = tokio::time::timeout(
                Duration::from_millis(RESPONSE_MEMORY_WAIT_MS),
                budget.clone().acquire_many_owned(RESPONSE_CHUNK_RESERVE_BYTES as u32),
            );
            tokio::select! {
                got = wait => match got {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(stopped()),
                    Err(_) => return Err(ApiError::OverResponseBudget),
                },
                _ = stopping.wait_for(|s| *s) => return Err(stopped()),
            }
        }
    };
    let builder = state.response_builders.clone().acquire_owned().await.map_err(|_| stopped())?;
    let (text, next) = tokio::task::spawn_blocking(move || {
        let _builder = builder;
        let mut text = String::with_capacity(RESPONSE_CHUNK_BYTES + 4096);
        render(&mut text).map(|next| (text, next))
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("building the response failed: {e}")))??;
    // The chunk holds its buffer's capacity. It cannot pass its reserve (it stops after the
    // line that reaches RESPONSE_CHUNK_BYTES, and no line is longer than
    // MAX_RESPONSE_LINE_BYTES); were it to, the excess is taken too, as it exists already.
    let held = text.capacity().max(1);
    if held < RESPONSE_CHUNK_RESERVE_BYTES {
        drop(permit.split(RESPONSE_CHUNK_RESERVE_BYTES - held));
    } else if held > RESPONSE_CHUNK_RESERVE_BYTES {
        tracing::warn!(bytes = held, reserve = RESPONSE_CHUNK_RESERVE_BYTES, "a streamed chunk outgrew its reserve");
        let extra = u32::try_from(held - RESPONSE_CHUNK_RESERVE_BYTES).unwrap_or(u32::MAX);
        if let Ok(more) = budget.acquire_many_owned(extra).await {
            permit.merge(more);
        }
    }
    Ok((Bytes::from_owner(BudgetedChunk { bytes: text.into_bytes(), _permit: permit }), next))
}

/// A streamed `application/x-ndjson` response whose first chunk is `first` and whose
/// later chunks come through `rx` (one waits at a time: [`RESPONSE_QUEUE_CHUNKS`]). When
/// the server stops, it breaks off with an error (the client sees an incomplete answer,
/// never a clean end that is not the end).
fn ndjson_stream(state: &AppState, first: Bytes, rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    let stopping = state.stopping.subscribe();
    let rest = futures_util::stream::unfold((rx, stopping, false), |(mut rx, mut stopping, done)| async move {
        if done {
            return None;
        }
        let (item, broken_off) = tokio::select! {
            item = rx.recv() => (item, false),
            _ = stopping.wait_for(|s| *s) => (Some(Err(std::io::Error::other("the server is stopping"))), true),
        };
        item.map(|item| (item, (rx, stopping, broken_off)))
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter([Ok::<_, std::io::Error>(first)]), rest);
    (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"))], Body::from_stream(stream)).into_response()
}

async fn list_rejected(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    if let Err(e) = state.reader(&headers, None) {
        return finish(&state, ROUTE_REJECTED, started, e.into_response());
    }
    let q = match serde_urlencoded_query::<RejectedQuery>(q.as_deref()) {
        Ok(q) => q,
        Err(e) => return finish(&state, ROUTE_REJECTED, started, e.into_response()),
    };
    let limit = q.limit.unwrap_or(100).min(MAX_REJECTED_LIST);
    let from = q.from.unwrap_or(0);
    // Each chunk reads the store from where the last stopped: (next seq, events left);
    // `None` once the listing is complete.
    let chunk = |state: &Arc<AppState>, at: (u64, usize)| {
        let log = state.log.clone();
        budgeted_chunk(state.clone(), move |s| -> Result<Option<(u64, usize)>, ApiError> {
            let (mut next, mut left) = at;
            while left > 0 && s.len() < RESPONSE_CHUNK_BYTES {
                let items = log.rejected(next, left.min(REJECTED_READ_BATCH))?;
                if items.is_empty() {
                    return Ok(None);
                }
                for (seq, r) in &items {
                    replay::write_rejected_line(s, *seq, r);
                    next = seq + 1;
                    left -= 1;
                    // Stop after the line that reaches the chunk's size: the chunk's reserve
                    // covers one line past it, not a batch.
                    if s.len() >= RESPONSE_CHUNK_BYTES {
                        break;
                    }
                }
            }
            Ok((left > 0).then_some((next, left)))
        })
    };
    let (first, mut at) = match chunk(&state, (from, limit)).await {
        Ok(x) => x,
        Err(e) => return finish(&state, ROUTE_REJECTED, started, e.into_response()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(RESPONSE_QUEUE_CHUNKS);
    let task_state = state.clone();
    tokio::spawn(async move {
        while let Some(pos) = at {
            let sent = tokio::select! {
                c = chunk(&task_state, pos) => c,
                _ = tx.closed() => return,
            };
            let (bytes, next) = match sent {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
            at = next;
        }
    });
    finish(&state, ROUTE_REJECTED, started, ndjson_stream(&state, first, rx))
}

fn serde_urlencoded_query<T: serde::de::DeserializeOwned>(q: Option<&str>) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(q.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        let value = match v.parse::<u64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => match v.as_str() {
                "true" | "1" => serde_json::Value::Bool(true),
                "false" | "0" => serde_json::Value::Bool(false),
                _ => serde_json::Value::String(v),
            },
        };
        map.insert(k, value);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| ApiError::BadQuery(e.to_string()))
}

#[derive(serde::Deserialize)]
struct ReplayQuery {
    from: Option<u64>,
    to: Option<u64>,
    #[serde(default, deserialize_with = "flag")]
    follow: Option<bool>,
}

/// A yes/no query parameter: `true`/`false`, `1`/`0`, `yes`/`no`.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
        serde_json::Value::Bool(b) => Ok(Some(b)),
        serde_json::Value::Number(n) if n.as_u64() == Some(1) => Ok(Some(true)),
        serde_json::Value::Number(n) if n.as_u64() == Some(0) => Ok(Some(false)),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("yes") => Ok(Some(true)),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("no") => Ok(Some(false)),
        other => Err(de::Error::custom(format!("expected true/false, 1/0 or yes/no, got {other}"))),
    }
}

/// NDJSON replay of the log, for `questlog replay` while this server holds the log.
///
/// Streamed in chunks of about [`RESPONSE_CHUNK_BYTES`], each read from the log on the
/// blocking pool within the response memory budget, one chunk ahead of the connection: a
/// reader that reads slowly is sent slowly, and holds little of the server's memory.
async fn replay_stream(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    if let Err(e) = state.reader(&headers, None) {
        return finish(&state, ROUTE_REPLAY, started, e.into_response());
    }
    let q = match serde_urlencoded_query::<ReplayQuery>(q.as_deref()) {
        Ok(q) => q,
        Err(e) => return finish(&state, ROUTE_REPLAY, started, e.into_response()),
    };
    if !state.log.is_local() {
        let e = ApiError::BadQuery(
            "this node's log is a Kafka topic shared with other nodes: read it with `questlog --log kafka://… replay` or any Kafka consumer".into(),
        );
        return finish(&state, ROUTE_REPLAY, started, e.into_response());
    }
    let from = q.from.unwrap_or(0);
    let to = q.to.unwrap_or(u64::MAX);
    let follow = q.follow.unwrap_or(false);
    if from > state.log.durable_end() && !follow {
        let e = ApiError::BadQuery(format!("from={from} is past the end of the log ({})", state.log.durable_end()));
        return finish(&state, ROUTE_REPLAY, started, e.into_response());
    }
    // Records `next..end` (at most a chunk's bytes of them); the offset reached.
    let chunk = |state: &Arc<AppState>, next: u64, end: u64| {
        let log = state.log.clone();
        budgeted_chunk(state.clone(), move |s| {
            replay::render_until(&*log, next, end, RESPONSE_CHUNK_BYTES, s).map_err(|e| ApiError::Unavailable(e.to_string()))
        })
    };
    let end = state.log.durable_end().min(to);
    let (first, mut next) = if from < end {
        match chunk(&state, from, end).await {
            Ok(x) => x,
            Err(e) => return finish(&state, ROUTE_REPLAY, started, e.into_response()),
        }
    } else {
        (Bytes::new(), from)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(RESPONSE_QUEUE_CHUNKS);
    let task_state = state.clone();
    tokio::spawn(async move {
        let state = task_state;
        let mut watch = state.log.subscribe();
        while next < to {
            let end = state.log.durable_end().min(to);
            if next < end {
                let made = tokio::select! {
                    c = chunk(&state, next, end) => c,
                    _ = tx.closed() => return,
                };
                let (bytes, reached) = match made {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                };
                if reached <= next {
                    // The log ends before its durable end says: never loop on it.
                    let _ = tx.send(Err(std::io::Error::other(format!("the log returned no record at offset {next}")))).await;
                    return;
                }
                if tx.send(Ok(bytes)).await.is_err() {
                    return;
                }
                next = reached;
            } else if follow {
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            } else {
                return;
            }
        }
    });
    finish(&state, ROUTE_REPLAY, started, ndjson_stream(&state, first, rx))
}
