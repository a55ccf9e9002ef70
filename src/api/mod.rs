//! The HTTP API (axum): takes events from games and load generators, validates them,
//! appends them to the log and answers only once they are durable.
//!
//! Routes (see docs/CONTRACT.md): `POST /v1/events` (JSON object, JSON array, NDJSON, gzip),
//! `GET|POST /{event_type}?field=value&…` (the seed's Flask style), `GET /healthz`,
//! `GET /metrics`, `GET /v1/rejected`, `GET /v1/replay`, `GET|POST /v1/schemas`, the live
//! page.
//!
//! Where things are: this file — the shared state ([`AppState`]), limits, errors and their
//! one status map, access (keys, the keyless guard), the router, health and metrics;
//! `ingest.rs` — taking events in, within the request memory budget; `read.rs` — replay
//! and rejected events streamed within the response budget; `schemas.rs` — listing and
//! registering event type schemas; `server.rs` — the accept
//! loop and connection limits ([`run`]); `live.rs` — the live page and its data.
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

use crate::event::{self, EventType, Record, Registry, RejectReason, RejectedEvent, Rejection, RequestMeta, MAX_REJECTED_RAW_BYTES};

use crate::log::{AppendBatch, EventLog, LogError};

use crate::metrics::{Metrics, ProjectionSource, TypeLabel};

use crate::replay;

mod ingest;
pub mod live;
mod openapi;
mod read;
mod schemas;
mod sdk;
mod server;

use ingest::*;
pub use ingest::{MAX_REJECTED_STORED_BYTES_PER_REQUEST, REJECTED_STORED_BURST_BYTES, REJECTED_STORED_BYTES_PER_SECOND};
use read::*;
pub use read::{MAX_REJECTED_LIST, MAX_RESPONSE_MEMORY_BYTES, RESPONSE_CHUNK_BYTES, RESPONSE_MEMORY_WAIT_MS};
pub use schemas::{follow_schemas, SCHEMA_FOLLOW_INTERVAL_MS};
pub use server::{run, WRITE_STALL_TIMEOUT_MS};

pub use crate::wire::{MAX_BODY_BYTES, MAX_DECOMPRESSED_BYTES, MAX_EVENTS_PER_REQUEST, MAX_EVENT_BYTES};

/// Response header of the seed-style routes naming the accepted event's log offset.
pub const OFFSET_HEADER: &str = "x-questlog-offset";

const ROUTE_EVENTS: usize = 0;

const ROUTE_SEED: usize = 1;

const ROUTE_HEALTHZ: usize = 2;

const ROUTE_METRICS: usize = 3;

const ROUTE_REJECTED: usize = 4;

const ROUTE_REPLAY: usize = 5;

const ROUTE_LIVE: usize = 6;

const ROUTE_SCHEMAS: usize = 7;

const ROUTE_SDK: usize = 8;

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
    /// Held while a schema is checked against the log's and recorded: registrations one
    /// at a time, so two cannot both pass against the schemas before either.
    schema_registration: Arc<tokio::sync::Mutex<()>>,
    /// The registered event types events are checked against, swapped whole by a
    /// registration once the log has its record (so an event checked against a new type
    /// is appended after the type is in force).
    types: std::sync::RwLock<Arc<crate::event::Registry>>,
    /// `/openapi.json` for those types, made when they change (not per request).
    openapi: std::sync::RwLock<Bytes>,
    /// `serve --infer-schemas`: events of unknown names (and new properties of inferred
    /// types) record a schema made from their values before they are checked.
    infer_schemas: bool,
    /// Names whose inferred schema the log refused: not inferred again by this server.
    inference_refused: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The store catalogue `serve --catalog` checks purchases against (it is recorded in the
/// log before the server takes events), with this node's [`StockBook`]: the seed-style
/// route fills a purchase's `on_hand_qty` from it, as the seed's Flask app read stock from
/// its SQLite. The `stock` table, computed from the log, is the authoritative figure;
/// this one can differ from it only in the order of purchases that raced (and, on a Kafka
/// log, by the purchases other nodes stored since this one started). On a Kafka log the
/// catalogue is the latest another node recorded, once this node read it
/// ([`ApiCatalog::follow`]).
pub struct ApiCatalog {
    /// The catalogue in force on this node, and its hash (computing one costs a canonical
    /// form and a SHA-256 of it).
    catalog: std::sync::RwLock<(Arc<Catalog>, String)>,
    book: std::sync::Mutex<StockBook>,
}

impl ApiCatalog {
    /// `book` holds the stock of the log's purchases so far.
    pub fn new(catalog: Catalog, book: StockBook) -> ApiCatalog {
        let hash = catalog.hash();
        ApiCatalog { catalog: std::sync::RwLock::new((Arc::new(catalog), hash)), book: std::sync::Mutex::new(book) }
    }

    /// The catalogue in force on this node.
    pub fn current(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone()
    }

    /// The hash of the catalogue in force on this node.
    pub fn current_hash(&self) -> String {
        self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }

    /// Puts `latest`, whose hash is `hash`, in force (another node recorded it): purchases
    /// are checked against it from now on, and the book moves to it as
    /// [`StockBook::set_catalog`] says.
    pub fn follow(&self, latest: Catalog, hash: String) {
        let mut book = self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        book.set_catalog(&latest);
        *self.catalog.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (Arc::new(latest), hash);
    }

    /// Fills in a seed-style purchase from the catalogue ([`Catalog::fill_purchase`]),
    /// and `on_hand_qty`, when the query has none, with what this purchase leaves.
    fn fill(&self, members: &mut Vec<(String, serde_json::Value)>, now_us: i64) -> Result<(), Rejection> {
        let catalog = self.current();
        let (item, quantity) = catalog.fill_purchase(members)?;
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
            schema_registration: Arc::new(tokio::sync::Mutex::new(())),
            infer_schemas: false,
            inference_refused: Default::default(),
            types: Default::default(),
            openapi: std::sync::RwLock::new(Bytes::from(openapi::document(&crate::event::Registry::empty()).to_string())),
        }
    }

    /// The registered types of the log's schemas (`serve` reads them from the log at start).
    pub fn with_types(self, types: crate::event::Registry) -> AppState {
        self.set_types(types);
        self
    }

    /// `serve --infer-schemas` (docs/CONTRACT.md 13.8): types made from events' values.
    pub fn with_infer_schemas(mut self, on: bool) -> AppState {
        self.infer_schemas = on;
        self
    }

    /// The registered event types in force now.
    pub fn types(&self) -> Arc<crate::event::Registry> {
        self.types.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_types(&self, types: crate::event::Registry) {
        let doc = Bytes::from(openapi::document(&types).to_string());
        *self.types.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(types);
        *self.openapi.write().unwrap_or_else(std::sync::PoisonError::into_inner) = doc;
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

    /// Checks that the request may register event type schemas, when keys are configured:
    /// 401 without a known key, 403 for a key without the `admin` grant.
    fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(keys) = &self.keys else { return Ok(()) };
        keys.admin(headers).map(|_| ()).map_err(|d| self.denied(d))
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

    /// As [`AppState::writer`], with a key some SDKs send in the body (Segment's
    /// `writeKey`) when the headers carry none.
    fn writer_with(&self, headers: &HeaderMap, body_key: Option<&str>) -> Result<Option<&crate::auth::App>, ApiError> {
        let Some(keys) = &self.keys else { return Ok(None) };
        keys.writer_with(headers, body_key).map(Some).map_err(|d| self.denied(d))
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
                    crate::auth::Scope::Admin => "this API key may not register event type schemas: that needs a key with `scopes = [\"admin\"]` in the keys file (not one shipped in a game client)".into(),
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
    #[error("no route {0}; events go to POST /v1/events or /{{event_type}} for a known event_type (the seed's join_guild, kill_enemy, accept_quest, take_damage, buy_asset, and those GET /v1/schemas lists)")]
    NoRoute(String),
    #[error("{0}")]
    PastTheEnd(String),
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
    #[error("a schema is at most {} bytes", crate::schema::MAX_SCHEMA_BYTES)]
    SchemaTooLarge,
    #[error("not a schema questlog takes: {0}")]
    SchemaInvalid(String),
    #[error("{0}; nothing was recorded")]
    SchemaRefused(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("batch over the protocol's limit of {limit} bytes ({size} bytes or more): send smaller batches")]
    SdkBatchTooLarge { size: usize, limit: usize },
}

impl ApiError {
    /// The one place where errors become HTTP statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BodyTooLarge
            | ApiError::DecompressedTooLarge
            | ApiError::TooManyEvents
            | ApiError::EventTooLarge { .. }
            | ApiError::SchemaTooLarge
            | ApiError::SdkBatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::SchemaInvalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::SchemaRefused(_) => StatusCode::CONFLICT,
            ApiError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::UnsupportedEncoding(_) | ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unreadable(_) | ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::NoRoute(_) | ApiError::PastTheEnd(_) => StatusCode::NOT_FOUND,
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
            ApiError::BodyTooLarge | ApiError::SdkBatchTooLarge { .. } => Some(0),
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
        .route("/v1/schemas", get(schemas::list).post(schemas::register))
        .route("/v1/batch", axum::routing::post(sdk::segment::batch))
        .route("/v1/track", axum::routing::post(sdk::segment::track))
        .route("/batch/", axum::routing::post(sdk::posthog::batch_v0))
        .route("/i/v1/analytics/events", axum::routing::post(sdk::posthog::events_v1))
        .route("/com.snowplowanalytics.snowplow/tp2", axum::routing::post(sdk::snowplow::tp2))
        .route("/i", get(sdk::snowplow::pixel))
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
        "/v1/schemas" => ROUTE_SCHEMAS,
        "/v1/batch" | "/v1/track" | "/batch/" | "/i/v1/analytics/events" | "/com.snowplowanalytics.snowplow/tp2" | "/i" => ROUTE_SDK,
        "/healthz" => ROUTE_HEALTHZ,
        "/metrics" => ROUTE_METRICS,
        "/" | "/v1/live" | "/report.html" => ROUTE_LIVE,
        "/openapi.json" => return None,
        _ => ROUTE_SEED,
    })
}

fn finish(state: &AppState, route: usize, started: Instant, resp: Response) -> Response {
    state.metrics.request(route, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

/// The OpenAPI description of this API for the types in force (checked by schemathesis in CI).
async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    let doc = state.openapi.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    (StatusCode::OK, json_headers(), doc).into_response()
}

/// `200 {"status":"ok"}` while the log takes appends; `503 {"status":"degraded","reason":…}`
/// while it cannot (disk full, storage reopening), so a load balancer steers games away;
/// `503 {"status":"starting","reason":…}` while appends would wait for what the log does
/// at start (its dedup window, refilled from the log's tail).
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
    // Starting: appends would wait for what the log does first (its dedup window), so a
    // load balancer should not send any yet.
    let starting = if unwritable.is_none() { state.log.starting() } else { None };
    let status_word = if unwritable.is_some() || projection.error.is_some() {
        "degraded"
    } else if starting.is_some() {
        "starting"
    } else {
        "ok"
    };
    let mut body = serde_json::json!({
        "status": status_word,
        "log_end_offset": state.log.durable_end(),
        "projected_offset": projection.projected_offset,
    });
    if let Some(why) = projection.error {
        body["projection_error"] = serde_json::Value::String(why);
    }
    let status = match unwritable.or(starting) {
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
