//! Seeded game traffic: the [`world`] model makes the events; this module sends them
//! either straight into the log (fast and deterministic) or over HTTP as a load test (the
//! seed's `api_call_script.py` plus Apache Bench), reporting rate, latency and errors.
//!
//! Invariant: in direct mode every byte written is a pure function of the seed, the
//! player count, the start time and the number of events — no wall clock, no
//! randomness but `ChaCha` seeded by `--seed`.

pub mod custom;
pub mod world;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::event::{ClientEvent, Record, RequestMeta};
use crate::log::{AppendBatch, EventLog, LogError, Pending};
pub use world::{World, WorldConfig};

/// Records per append in direct mode: one log block each.
const DIRECT_CHUNK_EVENTS: usize = crate::log::MAX_BLOCK_RECORDS;
/// Appends in flight in direct mode: enough to fill a group commit, far below the log's
/// queue limit. Each holds its 1,000 records' text: at 64, `generate` of 10^7 events peaked
/// at 463–516 MiB; at 16, ~400 MiB at the same speed (benches/HISTORY.md, item 41).
const DIRECT_WINDOW: usize = 16;
/// Most events in one HTTP request from the load generator (the API's own limit).
pub const MAX_BATCH: usize = crate::wire::MAX_EVENTS_PER_REQUEST;
/// Most concurrent HTTP requests the load generator keeps open.
pub const MAX_CONCURRENCY: usize = 1_024;
/// Attempts per request when the server answers 503 or the connection fails.
const MAX_ATTEMPTS: u32 = 5;
/// Per-request timeout of the load generator.
const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Headers recorded on directly generated events, standing in for an HTTP request's.
pub fn direct_meta() -> RequestMeta {
    RequestMeta {
        accept: Some("application/json".into()),
        host: Some("questlog-generate".into()),
        user_agent: Some("questlog-generate".into()),
        app: None,
    }
}

/// The log record for a directly generated event: received when it happened.
pub fn direct_record(event: ClientEvent, meta: &RequestMeta) -> Record {
    let received_at_us = event.event_time_us.unwrap_or(0);
    Record { received_at_us, meta: meta.clone(), raw_event: event.to_json_string(), event }
}

/// What a direct generation did.
#[derive(Debug)]
pub struct DirectSummary {
    /// Events generated.
    pub events: u64,
    /// Of those, events already in the log (same seed generated before), not appended.
    pub duplicates: u64,
    pub first_offset: u64,
    pub end_offset: u64,
    pub seconds: f64,
    /// Bytes of the events' JSON (their `raw_event`s), to compare the log's size with.
    pub json_bytes: u64,
}

/// Appends `events` events of `world` to `log`, pipelined, and returns once all are durable.
pub fn generate_into_log(log: &dyn EventLog, world: &mut World, events: u64, progress: &ProgressBar) -> Result<DirectSummary, LogError> {
    let started = Instant::now();
    let meta = direct_meta();
    let mut window: VecDeque<Pending> = VecDeque::with_capacity(DIRECT_WINDOW);
    let mut first_offset = None;
    let mut end_offset = log.durable_end();
    let mut left = events;
    let mut json_bytes = 0u64;
    let mut duplicates = 0u64;
    let mut settle = |p: Pending, first_offset: &mut Option<u64>, end_offset: &mut u64| -> Result<(), LogError> {
        let a = p.wait()?;
        first_offset.get_or_insert(a.offsets.start);
        *end_offset = a.offsets.end;
        duplicates += a.duplicates.len() as u64;
        progress.inc(a.offsets.end - a.offsets.start + a.positions.len() as u64 + a.duplicates.len() as u64);
        Ok(())
    };
    while left > 0 {
        let n = left.min(DIRECT_CHUNK_EVENTS as u64) as usize;
        let records: Vec<Record> = (0..n).map(|_| direct_record(world.next_event(), &meta)).collect();
        json_bytes += records.iter().map(|r| r.raw_event.len() as u64).sum::<u64>();
        left -= n as u64;
        if window.len() == DIRECT_WINDOW {
            let p = window.pop_front().expect("window is full");
            settle(p, &mut first_offset, &mut end_offset)?;
        }
        window.push_back(log.append(AppendBatch { records, rejected: vec![] })?);
    }
    while let Some(p) = window.pop_front() {
        settle(p, &mut first_offset, &mut end_offset)?;
    }
    Ok(DirectSummary {
        events,
        duplicates,
        first_offset: first_offset.unwrap_or(end_offset),
        end_offset,
        seconds: started.elapsed().as_secs_f64(),
        json_bytes,
    })
}

/// Settings of an HTTP load test.
#[derive(Clone, Debug)]
pub struct LoadSettings {
    /// Base URL of a questlog server (`http://127.0.0.1:8080`) or its `/v1/events` URL.
    pub url: String,
    /// Target events per second over all connections; `None` for as fast as possible.
    pub rate: Option<f64>,
    pub concurrency: usize,
    /// Events per request (1 sends a single JSON object).
    pub batch: usize,
    /// Sent as `Authorization: Bearer …` when the server has API keys (a `write` key).
    pub api_key: Option<String>,
}

/// What a load test measured.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Events the server already had (same `event_id`), not appended again.
    pub duplicates: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub retries: u64,
    pub seconds: f64,
    /// Request latencies in seconds, sorted.
    pub latencies: Vec<f64>,
    /// Failures by kind (status code or error), sorted by kind.
    pub errors: Vec<(String, u64)>,
}

impl LoadReport {
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }

    pub fn events_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.accepted as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// A few lines for a person.
    pub fn render(&self) -> String {
        let ms = |s: f64| s * 1e3;
        let mut out = format!(
            "sent {} events in {} requests over {:.2} s: {} accepted, {} rejected, {} duplicates, {} failed requests, {} retries\n\
             throughput {:.0} events/s, {:.0} requests/s\n\
             latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n",
            self.sent,
            self.requests,
            self.seconds,
            self.accepted,
            self.rejected,
            self.duplicates,
            self.failed_requests,
            self.retries,
            self.events_per_second(),
            if self.seconds > 0.0 { self.requests as f64 / self.seconds } else { 0.0 },
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(99.0)),
            ms(self.latencies.last().copied().unwrap_or(0.0)),
        );
        for (kind, n) in &self.errors {
            out.push_str(&format!("errors: {kind}: {n}\n"));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("bad --url `{0}`: expected e.g. http://127.0.0.1:8080")]
    BadUrl(String),
    #[error("HTTP client: {0}")]
    Client(String),
    #[error(transparent)]
    BadApiKey(#[from] crate::wire::BadApiKey),
}

/// Sends `events` events of `world` to a questlog server over HTTP.
pub async fn load_test(world: World, events: u64, settings: LoadSettings, progress: ProgressBar) -> Result<LoadReport, LoadError> {
    let url = crate::wire::events_url(&settings.url).map_err(|e| LoadError::BadUrl(e.0))?;
    let concurrency = settings.concurrency.clamp(1, MAX_CONCURRENCY);
    let batch = settings.batch.clamp(1, MAX_BATCH);
    let client = reqwest::Client::builder()
        .default_headers(crate::wire::client_headers(settings.api_key.as_deref())?)
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .build()
        .map_err(|e| LoadError::Client(e.to_string()))?;

    // Bodies are made on a blocking thread, in order, and handed to the senders.
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, String)>(concurrency * 2);
    let producer = tokio::task::spawn_blocking(move || {
        let mut world = world;
        let mut left = events;
        while left > 0 {
            let n = left.min(batch as u64) as usize;
            left -= n as u64;
            let body = if batch == 1 {
                world.next_event().to_json_string()
            } else {
                let mut s = String::with_capacity(n * 256);
                s.push('[');
                for i in 0..n {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(&world.next_event().to_json_string());
                }
                s.push(']');
                s
            };
            if tx.blocking_send((n, body)).is_err() {
                return;
            }
        }
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let started = Instant::now();
    let sent_events = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let rx = rx.clone();
        let client = client.clone();
        let url = url.clone();
        let progress = progress.clone();
        let sent_events = sent_events.clone();
        let rate = settings.rate;
        workers.push(tokio::spawn(async move {
            let mut r = LoadReport::default();
            let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((n, body)) = next else { break };
                // Pacing: event k of the run is due at k / rate seconds.
                let k = sent_events.fetch_add(n as u64, Ordering::Relaxed);
                if let Some(rate) = rate.filter(|r| *r > 0.0) {
                    let due = started + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                r.sent += n as u64;
                r.requests += 1;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let t0 = Instant::now();
                    let res = client
                        .post(&url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .header(reqwest::header::USER_AGENT, "questlog-generate")
                        .body(body.clone())
                        .send()
                        .await;
                    let outcome = match res {
                        Ok(resp) => {
                            let status = resp.status();
                            let text = resp.text().await.unwrap_or_default();
                            if status.is_success() {
                                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                                r.accepted += v["accepted"].as_u64().unwrap_or(0);
                                r.rejected += v["rejected"].as_array().map(|a| a.len() as u64).unwrap_or(0);
                                r.duplicates += v["duplicates"].as_u64().unwrap_or(0);
                                Ok(())
                            } else {
                                Err((format!("HTTP {}", status.as_u16()), status.as_u16() == 503))
                            }
                        }
                        Err(e) => Err((format!("connection: {}", error_kind(&e)), true)),
                    };
                    r.latencies.push(t0.elapsed().as_secs_f64());
                    match outcome {
                        Ok(()) => break,
                        Err((kind, retryable)) => {
                            if retryable && attempt < MAX_ATTEMPTS {
                                r.retries += 1;
                                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                                continue;
                            }
                            r.failed_requests += 1;
                            *errors.entry(kind).or_default() += 1;
                            break;
                        }
                    }
                }
                progress.inc(n as u64);
            }
            r.errors = errors.into_iter().collect();
            r
        }));
    }
    let mut total = LoadReport::default();
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    for w in workers {
        let r = w.await.map_err(|e| LoadError::Client(e.to_string()))?;
        total.sent += r.sent;
        total.accepted += r.accepted;
        total.rejected += r.rejected;
        total.duplicates += r.duplicates;
        total.requests += r.requests;
        total.failed_requests += r.failed_requests;
        total.retries += r.retries;
        total.latencies.extend(r.latencies);
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let _ = producer.await;
    total.seconds = started.elapsed().as_secs_f64();
    total.latencies.sort_by(f64::total_cmp);
    total.errors = errors.into_iter().collect();
    Ok(total)
}

fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

/// A progress bar on stderr that draws only when stderr is a terminal.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}
