//! Taking events in: `POST /v1/events` (JSON, arrays, NDJSON, gzip) and the seed-style
//! `GET|POST /{event_type}?…`. Reads a body within the request memory budget
//! ([`BodyMemory`]), splits and validates it, keeps rejected events within the rejected
//! store's bounds, appends, and answers once the log says the events are durable.
//!
//! Invariants: every byte a request holds is charged to the budget as it grows, and its
//! answer keeps its charge until written; nothing is charged after the append is durable;
//! every refused event is answered and counted, and kept within the store's bounds.

// The API's files share its imports, state and errors.
use super::*;

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
pub(super) const REJECTED_FIXED_BYTES: usize = 64;

/// An append answer's bytes besides its listed rejections: `accepted`, `duplicates` and
/// the offsets, at most 20 digits each, and the member names.
pub(super) const ANSWER_NUMBERS_BYTES: usize = 160;

/// Bytes of [`AppState::body_memory`] one request holds; given back when dropped.
pub(super) struct BodyMemory {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    budget: Arc<tokio::sync::Semaphore>,
    /// The most it held at once.
    peak: usize,
}

/// A request that held at least this much memory at its peak asks the allocator to give
/// freed memory back to the OS when it ends. mimalloc (the binary's allocator) otherwise
/// keeps freed memory in the thread's heap until later allocations reuse it, so after a
/// burst of large bodies an idle server kept ~40 MB more for as long as it stayed idle
/// (and ~23 MB after 40 header-heavy NDJSON requests of 10,000 bad lines, whose answers
/// and rejected events held ~2 MiB each). 2 MiB: above ordinary batches of a few hundred
/// events (~150 KiB), which never pay for the collection; a batch that large takes tens of
/// milliseconds, against well under one for the collection.
/// (Measured with transparent huge pages on; with them off, as `main.rs` now runs,
/// mimalloc's own delayed purge returned most of it too: the hostile suites stay within
/// their bounds without the collection, which stays for allocators' settings that purge
/// late.)
pub(super) const RETURN_MEMORY_AFTER_BYTES: usize = 2 * 1024 * 1024;

impl Drop for BodyMemory {
    fn drop(&mut self) {
        // The body's buffers are dropped before this (declared after it in the handler).
        drop(self.permit.take());
        if self.peak >= RETURN_MEMORY_AFTER_BYTES {
            // SAFETY: mi_collect takes a flag and touches only mimalloc's own state; it is
            // callable from any thread at any time (a no-op for memory it does not manage).
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    }
}

impl BodyMemory {
    pub(super) fn new(budget: &Arc<tokio::sync::Semaphore>) -> BodyMemory {
        BodyMemory { permit: None, budget: budget.clone(), peak: 0 }
    }

    /// Takes `bytes` more from the budget, or [`ApiError::OverMemoryBudget`] at once.
    pub(super) fn take(&mut self, bytes: usize) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let n = u32::try_from(bytes).map_err(|_| ApiError::OverMemoryBudget)?;
        let more = self.budget.clone().try_acquire_many_owned(n).map_err(|_| ApiError::OverMemoryBudget)?;
        match &mut self.permit {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
        self.peak = self.peak.max(self.permit.as_ref().map_or(0, |p| p.num_permits()));
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
pub(super) struct ChargedAnswer {
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
pub(super) fn charged_body(text: String, mut memory: BodyMemory) -> Body {
    memory.keep_only(text.len());
    Body::from(Bytes::from_owner(ChargedAnswer { text: text.into_bytes(), _memory: memory }))
}

pub(super) fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The request's headers as its events keep them, cut to [`event::MAX_HEADER_BYTES`]
/// each and shared by all of its records.
pub(super) fn request_meta(headers: &HeaderMap, app: Option<&crate::auth::App>) -> RequestMeta {
    let get = |name: header::HeaderName| headers.get(name).map(|v| v.as_bytes());
    let mut meta = RequestMeta::from_headers(get(header::ACCEPT), get(header::HOST), get(header::USER_AGENT));
    meta.app = app.map(|a| a.name.as_str().into());
    meta
}

/// What a request's events came to while it is processed: the records to append, the
/// rejected events to keep, and the `rejected` member of its answer as JSON text. Every
/// byte it holds beyond the body's charge is charged to the request's [`BodyMemory`].
pub(super) struct Outcome<'a> {
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
    /// The registered types this request's events are checked against.
    pub(super) types: Arc<Registry>,
}

impl<'a> Outcome<'a> {
    pub(super) fn new(state: &'a AppState, meta: RequestMeta, now: i64, capacity: usize) -> Outcome<'a> {
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
            types: state.types(),
        }
    }

    /// Memory a request's records take besides their text (charged with the body).
    pub(super) fn record_bytes(events: usize) -> usize {
        events.saturating_mul(std::mem::size_of::<Record>())
    }

    pub(super) fn take(
        &mut self,
        memory: &mut BodyMemory,
        index: usize,
        raw: &str,
        parsed: Result<event::ClientEvent, Rejection>,
    ) -> Result<(), ApiError> {
        let state = self.state;
        let parsed = match (&state.catalog, parsed) {
            (Some(c), Ok(e)) => c.current().check_purchase(&e.payload).map(|()| e),
            (_, parsed) => parsed,
        };
        let rejection = match parsed {
            Ok(e) => {
                if let event::Payload::Custom(c) = &e.payload {
                    // A registered type's values are held apart from the body's text (and its
                    // name once more, for the metrics once appended).
                    memory.take(c.held_bytes() + c.event_type.len())?;
                }
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
        state.metrics.rejected(guess_type(raw, &self.types), rejection.reason);
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
    pub(super) async fn commit(self, memory: &mut BodyMemory) -> Result<Committed, ApiError> {
        let state = self.state;
        // The types' names, counted once the append is known (not when they are duplicates).
        let mut types: Vec<Option<(Option<EventType>, String)>> = self
            .records
            .iter()
            .map(|r| Some((r.event.builtin(), if r.event.builtin().is_some() { String::new() } else { r.event.type_name().to_string() })))
            .collect();
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
                state.metrics.duplicate(label(&t));
            }
        }
        for t in types.iter().flatten() {
            state.metrics.accepted(label(t));
        }
        if let Some(c) = &state.catalog {
            // Stored purchases only: a duplicate's type was taken out of `types` above.
            let stored: Vec<_> = purchases.into_iter().zip(&types).filter_map(|(p, t)| t.as_ref().and(p)).collect();
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
pub(super) struct Committed {
    accepted: usize,
    duplicates: usize,
    first: Option<u64>,
    last: Option<u64>,
    /// The `rejected` array's members, as JSON text.
    rejected: String,
    rejected_count: usize,
}

impl Committed {
    /// The `rejected` array's members (`{"index","reason","field","error"}`), as JSON text.
    pub(super) fn rejected_members(&self) -> &str {
        &self.rejected
    }

    /// `{"accepted":N,"rejected":[…],"duplicates":D[,"first_offset":A,"last_offset":B]}`.
    pub(super) fn json(&self, with_offsets: bool) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |n| n.to_string());
        let mut out = format!("{{\"accepted\":{},\"rejected\":[{}],\"duplicates\":{}", self.accepted, self.rejected, self.duplicates);
        if with_offsets {
            out.push_str(&format!(",\"first_offset\":{},\"last_offset\":{}", opt(self.first), opt(self.last)));
        }
        out.push('}');
        out
    }
}

fn label(t: &(Option<EventType>, String)) -> TypeLabel<'_> {
    match t {
        (Some(seed), _) => TypeLabel::Seed(*seed),
        (None, name) => TypeLabel::Registered(name),
    }
}

/// The `event_type` of a raw event when it can be told, for the metrics label.
pub(super) fn guess_type<'a>(raw: &str, types: &'a Registry) -> TypeLabel<'a> {
    #[derive(serde::Deserialize)]
    struct T<'a> {
        #[serde(borrow)]
        event_type: Option<std::borrow::Cow<'a, str>>,
    }
    let Some(name) = serde_json::from_str::<T>(raw).ok().and_then(|t| t.event_type) else { return TypeLabel::Unknown };
    match (EventType::parse(&name), types.get(&name)) {
        (Some(t), _) => TypeLabel::Seed(t),
        (None, Some(c)) => TypeLabel::Registered(&c.name),
        (None, None) => TypeLabel::Unknown,
    }
}

/// Keeps a body nobody could read as a rejected event, so it can be inspected. It counts as
/// one event against the key's rate first (a 429 instead, not stored, when over it), and
/// is kept within the app's share of the rejected store.
pub(super) async fn keep_unreadable(
    state: &AppState,
    app: Option<&crate::auth::App>,
    body: &[u8],
    meta: &RequestMeta,
    err: ApiError,
) -> ApiError {
    if let Err(limited) = state.charge(app, 1) {
        return limited;
    }
    let reason = RejectReason::MalformedJson;
    state.metrics.rejected(TypeLabel::Unknown, reason);
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

pub(super) async fn ingest(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let resp = append_response(&state, ingest_inner(&state, &headers, body).await);
    finish(&state, ROUTE_EVENTS, started, resp)
}

/// An append route's response: the answer with its memory charge, or the error, counted
/// by the limit it broke or the memory budget.
pub(super) fn append_response(state: &AppState, result: Result<(String, BodyMemory), ApiError>) -> Response {
    match result {
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
    }
}

/// Reads the whole body (inflating gzip), charging every byte it keeps to `memory`.
pub(super) async fn read_body(headers: &HeaderMap, body: Body, body_timeout_ms: u64, memory: &mut BodyMemory) -> Result<Bytes, ApiError> {
    read_body_within(headers, body, body_timeout_ms, memory, MAX_DECOMPRESSED_BYTES).await
}

/// [`read_body`] that stops at `limit` bytes (at most [`MAX_DECOMPRESSED_BYTES`]), sent or
/// inflated: a protocol with a smaller batch limit (Segment's 500 KiB) reads no more than
/// that before its key is known.
pub(super) async fn read_body_within(
    headers: &HeaderMap,
    body: Body,
    body_timeout_ms: u64,
    memory: &mut BodyMemory,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let wire_limit = MAX_BODY_BYTES.min(limit);
    let limit = limit.min(MAX_DECOMPRESSED_BYTES);
    // Past the server's own limit the connection is closed unread; past a protocol's
    // smaller one the body is read and dropped (`collect_body`), so that its client reads
    // the 413 instead of a broken pipe.
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if len > MAX_BODY_BYTES as u64 {
            return Err(ApiError::BodyTooLarge);
        }
    }
    let wire = tokio::time::timeout(std::time::Duration::from_millis(body_timeout_ms), collect_body(body, memory, wire_limit))
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
            let mut charge = BodyMemory { permit: memory.permit.take(), budget: memory.budget.clone(), peak: memory.peak };
            let (result, mut charge) = tokio::task::spawn_blocking(move || {
                let result = inflate(wire, &mut charge, limit);
                (result, charge)
            })
            .await
            .map_err(|e| ApiError::Unreadable(format!("inflating the body failed: {e}")))?;
            memory.permit = charge.permit.take();
            memory.peak = std::mem::take(&mut charge.peak);
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
/// `limit` is at most [`MAX_DECOMPRESSED_BYTES`].
pub(super) fn inflate(wire: Bytes, memory: &mut BodyMemory, limit: usize) -> Result<Bytes, ApiError> {
    let trailer_len = (wire.len() >= 18)
        .then(|| u32::from_le_bytes([wire[wire.len() - 4], wire[wire.len() - 3], wire[wire.len() - 2], wire[wire.len() - 1]]) as usize)
        .unwrap_or(0);
    // The trailer is a hint from the client: it cannot make us take more than the limit.
    let first = trailer_len.max(wire.len() * 4).min(limit);
    memory.take(first)?;
    let mut out: Vec<u8> = Vec::with_capacity(first);
    let mut dec = flate2::read::MultiGzDecoder::new(&wire[..]);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = dec.read(&mut chunk).map_err(|e| ApiError::Unreadable(format!("bad gzip body: {e}")))?;
        if n == 0 {
            break;
        }
        if out.len() + n > limit {
            return Err(ApiError::DecompressedTooLarge);
        }
        if out.capacity() - out.len() < n {
            let grow = out.capacity().max(n).min(limit - out.len());
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

/// Collects a body's frames up to `limit` bytes (at most [`MAX_BODY_BYTES`]), charging each
/// to `memory` as it arrives (so a request over the budget stops reading at once).
pub(super) async fn collect_body(body: Body, memory: &mut BodyMemory, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = body;
    let mut parts: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::Unreadable(format!("reading the body failed: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > limit {
            // Under the server's limit, the rest is read and dropped (uncharged, within the
            // body timeout) so that the client is answered 413, not cut off mid-send.
            drop(parts);
            while total <= MAX_BODY_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => total += frame.into_data().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
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
pub(super) enum BodyFormat {
    Json,
    Ndjson,
}

pub(super) fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
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
pub(super) async fn ingest_inner(state: &Arc<AppState>, headers: &HeaderMap, body: Body) -> Result<(String, BodyMemory), ApiError> {
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
        if state.infer_schemas {
            super::schemas::infer(state, lines.iter().copied()).await?;
        }
        out = Outcome::new(state, meta, now, lines.len());
        for (i, line) in lines.iter().enumerate() {
            let parsed = event::validate_json_in(line, &out.types);
            out.take(&mut memory, i, line, parsed)?;
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
            if state.infer_schemas {
                super::schemas::infer(state, items.iter().map(|r| r.get())).await?;
            }
            out = Outcome::new(state, meta, now, items.len());
            for (i, raw) in items.iter().enumerate() {
                let parsed = event::validate_json_in(raw.get(), &out.types);
                out.take(&mut memory, i, raw.get(), parsed)?;
            }
        } else {
            check_sizes(std::iter::once(trimmed))?;
            if let Err(e) = serde_json::from_str::<&RawValue>(trimmed) {
                let err = ApiError::Unreadable(format!("malformed JSON: {e}"));
                return Err(keep_unreadable(state, app, &body, &meta, err).await);
            }
            state.charge(app, 1)?;
            if state.infer_schemas {
                super::schemas::infer(state, std::iter::once(trimmed)).await?;
            }
            out = Outcome::new(state, meta, now, 1);
            let parsed = event::validate_json_in(trimmed, &out.types);
            out.take(&mut memory, 0, trimmed, parsed)?;
        }
    }
    let answer = out.commit(&mut memory).await?.json(true);
    drop(body);
    Ok((answer, memory))
}

pub(super) fn check_sizes<'a>(events: impl Iterator<Item = &'a str>) -> Result<(), ApiError> {
    for (index, e) in events.enumerate() {
        if e.len() > MAX_EVENT_BYTES {
            return Err(ApiError::EventTooLarge { index, size: e.len() });
        }
    }
    Ok(())
}

pub(super) const TOO_MANY: &str = "too many events";

/// A JSON array of raw events that stops reading past [`MAX_EVENTS_PER_REQUEST`].
pub(super) struct BoundedArray<'a>(pub(super) Vec<&'a RawValue>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for BoundedArray<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = BoundedArray<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON array of events")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BoundedArray<'a>, A::Error> {
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
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

pub(super) async fn seed_style(
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

pub(super) async fn seed_style_inner(state: &AppState, event_type: &str, query: &str, headers: &HeaderMap) -> Result<Committed, ApiError> {
    let types = state.types();
    if EventType::parse(event_type).is_none() && types.get(event_type).is_none() {
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
    match event::members_from_query(event_type, &params, &types) {
        Ok(mut members) => {
            let filled = match &state.catalog {
                Some(c) if event_type == EventType::BuyAsset.as_str() => c.fill(&mut members, now),
                _ => Ok(()),
            };
            let raw = event::members_to_json(&members);
            let parsed = filled.and_then(|()| event::validate_object_in(&members, &types));
            out.take(&mut memory, 0, &raw, parsed)?;
        }
        Err(rejection) => {
            let raw = format!("{{\"event_type\":\"{event_type}\",\"query\":{}}}", serde_json::Value::String(query.to_string()));
            out.take(&mut memory, 0, &raw, Err(rejection))?;
        }
    }
    out.commit(&mut memory).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: usize) -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(bytes))
    }

    /// A body past a protocol's limit is answered 413 having charged at most the limit:
    /// within a 1 MiB budget, a 4 MiB body (sent, or inflated from gzip) to a 500 KiB limit
    /// is too large, not over the budget; the whole budget is back afterwards.
    #[tokio::test]
    async fn a_protocol_limit_bounds_what_a_body_charges() {
        let memory_budget = budget(1 << 20);
        let big = vec![b'x'; 4 << 20];
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&big).unwrap();
            e.finish().unwrap()
        };
        for (body, encoding) in [(big.clone(), None), (gz, Some("gzip"))] {
            let mut headers = HeaderMap::new();
            if let Some(e) = encoding {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
            }
            let mut memory = BodyMemory::new(&memory_budget);
            let got = read_body_within(&headers, Body::from(body), 10_000, &mut memory, 500 * 1024).await;
            assert!(matches!(got, Err(ApiError::BodyTooLarge | ApiError::DecompressedTooLarge)), "{encoding:?}: {got:?}");
            assert!(memory.peak <= 500 * 1024 + 64 * 1024, "{encoding:?}: charged {} bytes", memory.peak);
            drop(memory);
            assert_eq!(memory_budget.available_permits(), 1 << 20);
        }
        // Without the protocol's limit, the same body is over the budget.
        let mut memory = BodyMemory::new(&memory_budget);
        let got = read_body(&HeaderMap::new(), Body::from(big), 10_000, &mut memory).await;
        assert!(matches!(got, Err(ApiError::OverMemoryBudget)), "{got:?}");
    }
}
