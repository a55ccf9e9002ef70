//! Counters and histograms of the running server, rendered in the Prometheus text format
//! for `GET /metrics`. Lock-free atomics on the hot path; names end in `_total` for
//! counters and carry their unit (`_seconds`, `_bytes`).
//!
//! Invariant: every event the API refuses is counted here with its type and reason.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::{EventType, RejectReason};
use crate::log::{LogStats, FLUSH_BATCH_BUCKETS};

/// Routes the API measures, in the order of [`Metrics::requests`].
pub const ROUTES: [&str; 9] = ["events", "seed_style", "healthz", "metrics", "rejected", "replay", "live", "schemas", "sdk"];

/// HTTP status classes counted per route.
const STATUSES: [u16; 16] = [200, 201, 400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 501, 503, 507, 500];

/// Upper bounds (seconds) of the request latency histogram.
pub const LATENCY_BUCKETS_SECONDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// `event_type` label for events whose type was unknown or missing.
const UNKNOWN_TYPE: usize = EventType::ALL.len();

/// The `event_type` an event is counted under.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TypeLabel<'a> {
    Seed(EventType),
    /// A registered type (its name comes from the log's schemas, never from a client, so
    /// there are at most [`crate::schema::MAX_REGISTERED_TABLES`] of them).
    Registered(&'a str),
    /// Unknown or missing.
    Unknown,
}

/// Counts of one registered type.
struct RegisteredCounts {
    accepted: u64,
    duplicates: u64,
    rejected: [u64; RejectReason::ALL.len()],
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Everything `/metrics` shows, apart from what the log and projector report themselves.
#[derive(Default)]
pub struct Metrics {
    accepted: [AtomicU64; EventType::ALL.len()],
    duplicates: [AtomicU64; EventType::ALL.len()],
    rejected: [[AtomicU64; RejectReason::ALL.len()]; EventType::ALL.len() + 1],
    requests: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    latency: [Histogram; ROUTES.len()],
    /// Requests refused before reading them, by limit name.
    refused_over_limit: [AtomicU64; 4],
    /// Connections turned away at the connection limit.
    pub connections_refused_total: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Requests refused for a missing or unknown API key.
    pub unauthorized_total: AtomicU64,
    /// Requests refused over an API key's rate.
    pub rate_limited_total: AtomicU64,
    /// Requests answered 503 because the bodies in flight held the whole memory budget.
    pub over_body_memory_total: AtomicU64,
    /// Requests answered 403, by cause ([`FORBIDDEN_CAUSES`]).
    forbidden: [AtomicU64; FORBIDDEN_CAUSES.len()],
    /// Rejected events answered and counted but not kept in the rejected store, by cause
    /// ([`NOT_STORED_CAUSES`]).
    rejected_not_stored: [AtomicU64; NOT_STORED_CAUSES.len()],
    /// Times a streamed response waited for the response memory budget.
    pub response_memory_waits_total: AtomicU64,
    /// SDK messages answered and counted but not stored as events (a Segment `identify`,
    /// …), by protocol and message type ([`SDK_COUNTED`]).
    sdk_counted: [AtomicU64; SDK_COUNTED.len()],
    /// Schemas `serve --infer-schemas` made from events: recorded, or refused by the log's
    /// rules (its table limit, a name taken) — their events are then rejected.
    pub schemas_inferred_total: AtomicU64,
    pub schemas_inference_refused_total: AtomicU64,
    /// Events of registered types, by name.
    registered: std::sync::Mutex<std::collections::BTreeMap<String, RegisteredCounts>>,
}

/// Why a request was answered 403: a key without the grant the route needs, a `Host`
/// that is not this server (keyless mode), an `Origin` of another site (keyless mode).
pub const FORBIDDEN_CAUSES: [&str; 3] = ["scope", "host", "origin"];

/// Why a rejected event was not kept in the rejected store: its request's share was used
/// up (`api::MAX_REJECTED_STORED_BYTES_PER_REQUEST`), or its app's bytes per second
/// (`api::REJECTED_STORED_BYTES_PER_SECOND`).
pub const NOT_STORED_CAUSES: [&str; 2] = ["request_budget", "app_rate"];

/// What the projector reports, read when `/metrics` or `/healthz` is asked. The projector
/// keeps its own counters (`project::ProjectionStats`); `commands` hands them to the API through
/// [`ProjectionSource`], so neither module imports the other.
#[derive(Clone, Debug, Default)]
pub struct ProjectionFigures {
    /// Log offset the published tables reach.
    pub projected_offset: u64,
    pub steps_total: u64,
    /// Steps (or compactions) that failed or panicked.
    pub errors_total: u64,
    /// Panics caught; each restarts the projector from the published tables.
    pub panics_total: u64,
    /// Why projection fails now; `None` while it works.
    pub error: Option<String>,
    /// Tables from a topic: each partition's place (empty for the sled log).
    pub partitions: Vec<PartitionFreshness>,
}

/// Where the tables are in one partition of a topic (the live page's freshness).
#[derive(Clone, Debug, Default)]
pub struct PartitionFreshness {
    pub partition: u32,
    /// The next offset every table holds.
    pub tables_offset: u64,
    /// One past the partition's last record, as the brokers last said.
    pub topic_end: u64,
    /// Whether this node's projector holds the partition.
    pub held_here: bool,
}

/// Where the API reads the projector's figures.
pub trait ProjectionSource: Send + Sync {
    fn figures(&self) -> ProjectionFigures;
}

/// The SDK messages counted, not stored: (protocol, message type).
pub const SDK_COUNTED: [(&str, &str); 14] = [
    ("segment", "identify"),
    ("segment", "page"),
    ("segment", "screen"),
    ("segment", "group"),
    ("segment", "alias"),
    ("posthog", "identify"),
    ("posthog", "alias"),
    ("posthog", "group"),
    ("posthog", "page"),
    ("posthog", "other"),
    ("snowplow", "page"),
    ("snowplow", "structured"),
    ("snowplow", "ecommerce"),
    ("snowplow", "other"),
];

/// Names of the request limits counted in `questlog_requests_over_limit_total`.
pub const LIMITS: [&str; 4] = ["body_bytes", "decompressed_bytes", "events_per_request", "event_bytes"];

impl Metrics {
    fn registered(&self, name: &str, f: impl FnOnce(&mut RegisteredCounts)) {
        let mut map = self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !map.contains_key(name) {
            map.insert(name.to_string(), RegisteredCounts { accepted: 0, duplicates: 0, rejected: [0; RejectReason::ALL.len()] });
        }
        if let Some(c) = map.get_mut(name) {
            f(c);
        }
    }

    pub fn accepted(&self, t: TypeLabel<'_>) {
        match t {
            TypeLabel::Seed(t) => {
                self.accepted[t.index()].fetch_add(1, Ordering::Relaxed);
            }
            TypeLabel::Registered(name) => self.registered(name, |c| c.accepted += 1),
            TypeLabel::Unknown => {}
        }
    }

    /// An event dropped because its `event_id` was already in the log.
    pub fn duplicate(&self, t: TypeLabel<'_>) {
        match t {
            TypeLabel::Seed(t) => {
                self.duplicates[t.index()].fetch_add(1, Ordering::Relaxed);
            }
            TypeLabel::Registered(name) => self.registered(name, |c| c.duplicates += 1),
            TypeLabel::Unknown => {}
        }
    }

    pub fn rejected(&self, t: TypeLabel<'_>, reason: RejectReason) {
        let ti = match t {
            TypeLabel::Seed(t) => t.index(),
            TypeLabel::Registered(name) => return self.registered(name, |c| c.rejected[reason.index()] += 1),
            TypeLabel::Unknown => UNKNOWN_TYPE,
        };
        self.rejected[ti][reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Events of registered types accepted so far, by name.
    pub fn accepted_registered(&self) -> Vec<(String, u64)> {
        let map = self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(n, c)| (n.clone(), c.accepted)).collect()
    }

    /// A 403, by index into [`FORBIDDEN_CAUSES`].
    pub fn forbidden(&self, cause: usize) {
        self.forbidden[cause].fetch_add(1, Ordering::Relaxed);
    }

    /// A rejected event not kept in the store, by index into [`NOT_STORED_CAUSES`].
    pub fn rejected_not_stored(&self, cause: usize) {
        self.rejected_not_stored[cause].fetch_add(1, Ordering::Relaxed);
    }

    /// An SDK message answered and counted, not stored (see [`SDK_COUNTED`]).
    pub fn sdk_message(&self, protocol: &str, kind: &str) {
        if let Some(i) = SDK_COUNTED.iter().position(|&(p, k)| p == protocol && k == kind) {
            self.sdk_counted[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn over_limit(&self, limit: usize) {
        self.refused_over_limit[limit].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one finished request on route `route` (index in [`ROUTES`]).
    pub fn request(&self, route: usize, status: u16, seconds: f64) {
        let si = STATUSES.iter().position(|&s| s == status).unwrap_or(STATUSES.len() - 1);
        self.requests[route][si].fetch_add(1, Ordering::Relaxed);
        let h = &self.latency[route];
        if let Some(b) = LATENCY_BUCKETS_SECONDS.iter().position(|&b| seconds <= b) {
            h.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Events accepted so far, per type in [`EventType::ALL`] order.
    pub fn accepted_by_type(&self) -> [u64; EventType::ALL.len()] {
        std::array::from_fn(|i| self.accepted[i].load(Ordering::Relaxed))
    }

    /// Events rejected so far, per type in [`EventType::ALL`] order, then those of no type.
    pub fn rejected_by_type(&self) -> [u64; EventType::ALL.len() + 1] {
        std::array::from_fn(|i| self.rejected[i].iter().map(|c| c.load(Ordering::Relaxed)).sum())
    }

    /// Events rejected so far by reason (every type), reasons that occurred only.
    pub fn rejected_by_reason(&self) -> Vec<(RejectReason, u64)> {
        let map = self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        RejectReason::ALL
            .iter()
            .map(|r| {
                let seed: u64 = self.rejected.iter().map(|per| per[r.index()].load(Ordering::Relaxed)).sum();
                (*r, seed + map.values().map(|c| c.rejected[r.index()]).sum::<u64>())
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Events rejected so far, of every type.
    pub fn rejected_total(&self) -> u64 {
        let seed: u64 = self.rejected.iter().flatten().map(|c| c.load(Ordering::Relaxed)).sum();
        let map = self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seed + map.values().map(|c| c.rejected.iter().sum::<u64>()).sum::<u64>()
    }

    pub fn accepted_total(&self) -> u64 {
        let map = self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.accepted.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>() + map.values().map(|c| c.accepted).sum::<u64>()
    }

    /// The Prometheus text exposition of these metrics and the log's.
    pub fn render(&self, log: &LogStats, projection: &ProjectionFigures) -> String {
        let mut o = String::with_capacity(16 * 1024);
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(&mut o, "questlog_events_accepted_total", "counter", "Events appended to the log, by type.");
        let registered = self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in EventType::ALL {
            let _ = writeln!(o, "questlog_events_accepted_total{{event_type=\"{t}\"}} {}", ld(&self.accepted[t.index()]));
        }
        for (name, c) in registered.iter() {
            let _ = writeln!(o, "questlog_events_accepted_total{{event_type=\"{name}\"}} {}", c.accepted);
        }
        header(
            &mut o,
            "questlog_events_duplicate_total",
            "counter",
            "Events dropped because their event_id was already in the log (within the dedup window).",
        );
        for t in EventType::ALL {
            let _ = writeln!(o, "questlog_events_duplicate_total{{event_type=\"{t}\"}} {}", ld(&self.duplicates[t.index()]));
        }
        for (name, c) in registered.iter() {
            let _ = writeln!(o, "questlog_events_duplicate_total{{event_type=\"{name}\"}} {}", c.duplicates);
        }
        header(
            &mut o,
            "questlog_events_rejected_total",
            "counter",
            "Events refused, by type and reason; each is kept in the rejected store.",
        );
        for ti in 0..=UNKNOWN_TYPE {
            let tname = EventType::ALL.get(ti).map(|t| t.as_str()).unwrap_or("unknown");
            for r in RejectReason::ALL {
                let v = ld(&self.rejected[ti][r.index()]);
                if v > 0 {
                    let _ = writeln!(o, "questlog_events_rejected_total{{event_type=\"{tname}\",reason=\"{}\"}} {v}", r.as_str());
                }
            }
        }
        for (name, c) in registered.iter() {
            for r in RejectReason::ALL {
                let v = c.rejected[r.index()];
                if v > 0 {
                    let _ = writeln!(o, "questlog_events_rejected_total{{event_type=\"{name}\",reason=\"{}\"}} {v}", r.as_str());
                }
            }
        }
        drop(registered);
        header(&mut o, "questlog_requests_over_limit_total", "counter", "Requests answered 413, by the limit they broke.");
        for (i, name) in LIMITS.iter().enumerate() {
            let _ = writeln!(o, "questlog_requests_over_limit_total{{limit=\"{name}\"}} {}", ld(&self.refused_over_limit[i]));
        }
        header(&mut o, "questlog_http_requests_total", "counter", "HTTP requests by route and status.");
        for (ri, route) in ROUTES.iter().enumerate() {
            for (si, status) in STATUSES.iter().enumerate() {
                let v = ld(&self.requests[ri][si]);
                if v > 0 {
                    let _ = writeln!(o, "questlog_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {v}");
                }
            }
        }
        header(
            &mut o,
            "questlog_http_request_duration_seconds",
            "histogram",
            "Request latency by route, from first byte read to response.",
        );
        for (ri, route) in ROUTES.iter().enumerate() {
            let h = &self.latency[ri];
            let mut cumulative = 0;
            for (bi, b) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
                cumulative += ld(&h.buckets[bi]);
                let _ = writeln!(o, "questlog_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {cumulative}");
            }
            let count = ld(&h.count);
            let _ = writeln!(o, "questlog_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(o, "questlog_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", ld(&h.sum_micros) as f64 / 1e6);
            let _ = writeln!(o, "questlog_http_request_duration_seconds_count{{route=\"{route}\"}} {count}");
        }

        header(&mut o, "questlog_log_end_offset", "gauge", "One past the last durable log offset (the number of records).");
        let _ = writeln!(o, "questlog_log_end_offset {}", log.durable_end);
        header(&mut o, "questlog_log_size_bytes", "gauge", "Bytes the log takes on disk.");
        let _ = writeln!(o, "questlog_log_size_bytes {}", log.size_on_disk_bytes);
        header(&mut o, "questlog_rejected_events_stored_total", "counter", "Rejected events kept in the log's rejected store.");
        let _ = writeln!(o, "questlog_rejected_events_stored_total {}", log.rejected_total);
        header(&mut o, "questlog_log_flushes_total", "counter", "Group commits (one fdatasync of the log each).");
        let _ = writeln!(o, "questlog_log_flushes_total {}", log.flushes_total);
        header(&mut o, "questlog_log_flush_errors_total", "counter", "Group commits that failed; none of their events were acknowledged.");
        let _ = writeln!(o, "questlog_log_flush_errors_total {}", log.flush_errors_total);
        header(
            &mut o,
            "questlog_log_writable",
            "gauge",
            "1 while the log takes appends; 0 while the disk is full or its storage is reopening.",
        );
        let _ = writeln!(o, "questlog_log_writable {}", u8::from(log.unwritable.is_none()));
        header(
            &mut o,
            "questlog_log_reopens_total",
            "counter",
            "Times the log reopened its storage after a failure (disk full, I/O error).",
        );
        let _ = writeln!(o, "questlog_log_reopens_total {}", log.reopens_total);
        header(&mut o, "questlog_log_flush_seconds_total", "counter", "Time spent writing and syncing groups.");
        let _ = writeln!(o, "questlog_log_flush_seconds_total {}", log.flush_seconds_total);
        header(
            &mut o,
            "questlog_log_fsync_seconds_total",
            "counter",
            "Of the flush time, the time in fdatasync/fsync after sled's own flush (which stops at sync_file_range).",
        );
        let _ = writeln!(o, "questlog_log_fsync_seconds_total {}", log.fsync_seconds_total);
        header(&mut o, "questlog_log_flush_batch_records", "histogram", "Records per group commit.");
        let mut cumulative = 0;
        for (i, b) in FLUSH_BATCH_BUCKETS.iter().enumerate() {
            cumulative += log.flush_batch_buckets.get(i).copied().unwrap_or(0);
            if *b == u64::MAX {
                let _ = writeln!(o, "questlog_log_flush_batch_records_bucket{{le=\"+Inf\"}} {cumulative}");
            } else {
                let _ = writeln!(o, "questlog_log_flush_batch_records_bucket{{le=\"{b}\"}} {cumulative}");
            }
        }
        let _ = writeln!(o, "questlog_log_flush_batch_records_sum {}", log.flushed_records_total);
        let _ = writeln!(o, "questlog_log_flush_batch_records_count {}", log.flushes_total);

        header(&mut o, "questlog_projected_offset", "gauge", "Log offset the published tables reach.");
        let _ = writeln!(o, "questlog_projected_offset {}", projection.projected_offset);
        header(&mut o, "questlog_projection_steps_total", "counter", "Projection steps published.");
        let _ = writeln!(o, "questlog_projection_steps_total {}", projection.steps_total);
        header(
            &mut o,
            "questlog_projection_errors_total",
            "counter",
            "Projection steps or compactions that failed or panicked (retried with backoff).",
        );
        let _ = writeln!(o, "questlog_projection_errors_total {}", projection.errors_total);
        header(
            &mut o,
            "questlog_projection_panics_total",
            "counter",
            "Projector panics caught; each restarts the projector from the published tables.",
        );
        let _ = writeln!(o, "questlog_projection_panics_total {}", projection.panics_total);
        header(&mut o, "questlog_projection_failing", "gauge", "1 while projection fails (see /healthz for why), else 0.");
        let _ = writeln!(o, "questlog_projection_failing {}", u8::from(projection.error.is_some()));
        header(
            &mut o,
            "questlog_requests_unauthorized_total",
            "counter",
            "Requests answered 401: missing or unknown API key (nothing appended).",
        );
        let _ = writeln!(o, "questlog_requests_unauthorized_total {}", ld(&self.unauthorized_total));
        header(
            &mut o,
            "questlog_requests_rate_limited_total",
            "counter",
            "Requests answered 429: over an API key's event rate (nothing appended).",
        );
        let _ = writeln!(o, "questlog_requests_rate_limited_total {}", ld(&self.rate_limited_total));
        header(
            &mut o,
            "questlog_requests_over_body_memory_total",
            "counter",
            "Requests answered 503 because the request bodies in flight held the server's body memory budget (nothing appended).",
        );
        let _ = writeln!(o, "questlog_requests_over_body_memory_total {}", ld(&self.over_body_memory_total));
        header(&mut o, "questlog_requests_forbidden_total", "counter", "Requests answered 403: an API key without the grant the route needs, or (without keys) a Host or Origin that is not this server's.");
        for (i, cause) in FORBIDDEN_CAUSES.iter().enumerate() {
            let _ = writeln!(o, "questlog_requests_forbidden_total{{cause=\"{cause}\"}} {}", ld(&self.forbidden[i]));
        }
        header(&mut o, "questlog_rejected_events_not_stored_total", "counter", "Rejected events answered and counted but not kept in the rejected store: past their request's share or their app's bytes per second.");
        for (i, cause) in NOT_STORED_CAUSES.iter().enumerate() {
            let _ = writeln!(o, "questlog_rejected_events_not_stored_total{{cause=\"{cause}\"}} {}", ld(&self.rejected_not_stored[i]));
        }
        header(
            &mut o,
            "questlog_response_memory_waits_total",
            "counter",
            "Times a streamed response (replay, rejected) waited for the response memory budget.",
        );
        let _ = writeln!(o, "questlog_response_memory_waits_total {}", ld(&self.response_memory_waits_total));
        header(
            &mut o,
            "questlog_sdk_messages_total",
            "counter",
            "SDK messages answered and counted but not stored as events (Segment identify, page, screen, group, alias; PostHog $ events; Snowplow page views, structured, ecommerce and other events).",
        );
        for (i, (protocol, kind)) in SDK_COUNTED.iter().enumerate() {
            let _ = writeln!(o, "questlog_sdk_messages_total{{protocol=\"{protocol}\",type=\"{kind}\"}} {}", ld(&self.sdk_counted[i]));
        }
        header(
            &mut o,
            "questlog_schemas_inferred_total",
            "counter",
            "Event type schemas serve --infer-schemas recorded from events (a new type or an ADDITION).",
        );
        let _ = writeln!(o, "questlog_schemas_inferred_total {}", ld(&self.schemas_inferred_total));
        header(
            &mut o,
            "questlog_schema_inferences_refused_total",
            "counter",
            "Schemas serve --infer-schemas made from events and the log refused (its table limit, a name taken); their events are rejected unknown_event_type.",
        );
        let _ = writeln!(o, "questlog_schema_inferences_refused_total {}", ld(&self.schemas_inference_refused_total));
        header(&mut o, "questlog_connections_open", "gauge", "HTTP connections open now.");
        let _ = writeln!(o, "questlog_connections_open {}", ld(&self.connections_open));
        header(&mut o, "questlog_connections_refused_total", "counter", "Connections answered 429 and closed at the connection limit.");
        let _ = writeln!(o, "questlog_connections_refused_total {}", ld(&self.connections_refused_total));
        o
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}
