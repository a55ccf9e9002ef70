//! Reading through the server: `GET /v1/replay` and `GET /v1/rejected`, streamed as NDJSON
//! in chunks built on the blocking pool within the response memory budget
//! ([`MAX_RESPONSE_MEMORY_BYTES`]), so slow readers wait instead of growing the server.

// The API's files share its imports, state and errors.
use super::*;

/// Most rejected events one `/v1/rejected` request lists.
pub const MAX_REJECTED_LIST: usize = 10_000;

/// Rejected events read from the store at a time while a `/v1/rejected` chunk is built
/// (each read decodes the block that holds the first: up to 1,000 events).
pub(super) const REJECTED_READ_BATCH: usize = 256;

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
pub(super) const MAX_RESPONSE_LINE_BYTES: usize = 512 * 1024;

/// Bytes a chunk takes from [`MAX_RESPONSE_MEMORY_BYTES`] while it is built; what it does
/// not use goes back before it is queued.
pub(super) const RESPONSE_CHUNK_RESERVE_BYTES: usize = RESPONSE_CHUNK_BYTES + MAX_RESPONSE_LINE_BYTES;

/// Chunks of one streamed response built ahead of its connection: one, so a slow reader
/// holds one waiting chunk besides what hyper is writing.
pub(super) const RESPONSE_QUEUE_CHUNKS: usize = 1;

/// Chunks built at once, for all streamed responses together. Each reads a log block of
/// up to 1,000 records into memory (a few MB decoded) on a thread of the blocking pool:
/// four keep both cores busy while a chunk waits on the disk, and bound what 50 readers'
/// chunks hold at once (and the threads whose allocator heaps they touch) to four.
pub(super) const RESPONSE_BUILDERS: usize = 4;

/// Longest a streamed answer waits for room in the response budget before it is answered
/// 503 (`Retry-After: 1`): the budget is held by readers that read slowly.
pub const RESPONSE_MEMORY_WAIT_MS: u64 = 10_000;

#[derive(serde::Deserialize)]
pub(super) struct RejectedQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

/// One chunk of a streamed response, holding its bytes of [`AppState::response_memory`]
/// until hyper has written it and drops it.
pub(super) struct BudgetedChunk {
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
pub(super) async fn budgeted_chunk<T: Send + 'static>(
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
pub(super) fn ndjson_stream(state: &AppState, first: Bytes, rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
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

pub(super) async fn list_rejected(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
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

pub(super) fn serde_urlencoded_query<T: serde::de::DeserializeOwned>(q: Option<&str>) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(q.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        let value = match v.parse::<u64>() {
            Ok(n) => serde_json::Value::from(n),
            // Past 2^64 - 1 (an offset or count no log reaches): the largest there is.
            Err(_) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => serde_json::Value::from(u64::MAX),
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
pub(super) struct ReplayQuery {
    from: Option<u64>,
    to: Option<u64>,
    #[serde(default, deserialize_with = "flag")]
    follow: Option<bool>,
}

/// A yes/no query parameter: `true`/`false`, `1`/`0`, `yes`/`no`.
pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
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
pub(super) async fn replay_stream(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
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
        let e = ApiError::PastTheEnd(format!("from={from} is past the end of the log ({})", state.log.durable_end()));
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
