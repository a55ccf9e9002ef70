//! `GET /v1/schemas` (the event types: the seed's five, built in, and the log's schema
//! records) and `POST /v1/schemas` (register one schema document, checked against the
//! log's as `questlog schema add` checks it, recorded in the log in force from the next
//! offset). docs/CONTRACT.md 3.8.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{finish, json_headers, ApiError, AppState, APPEND_CONFIRM_TIMEOUT_MS, ROUTE_SCHEMAS};
use crate::log::{EventLog, LogError};
use crate::schema::infer::Wanted;
use crate::schema::{self, builtin, Evolution, Schema};

/// The log's schemas, parsed again and checked against their hashes.
fn registered(log: &dyn EventLog) -> Result<Vec<(u64, Schema)>, ApiError> {
    let mut out = Vec::new();
    for r in log.schemas()? {
        let s = Schema::from_record(&r.content, &r.hash).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        out.push((r.from_offset, s));
    }
    Ok(out)
}

/// [`registered`] off the async workers: a Kafka log reads its side topic (network round
/// trips) to list them.
async fn registered_async(state: &AppState) -> Result<Vec<(u64, Schema)>, ApiError> {
    let log = state.log.clone();
    tokio::task::spawn_blocking(move || registered(log.as_ref()))
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading the log's schemas failed: {e}")))?
}

fn describe(s: &Schema) -> serde_json::Value {
    serde_json::json!({"name": s.name, "uri": s.uri(), "hash": s.hash(), "table": s.table_name()})
}

pub(super) async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    // A key that registers schemas may see them too (`schema add` checks against them).
    let listed = match state.reader(&headers, None).or_else(|e| state.admin(&headers).map_err(|_| e)) {
        // Off the async workers: a Kafka log reads its side topic to list the schemas.
        Ok(_) => {
            let listing = state.clone();
            tokio::task::spawn_blocking(move || list_inner(&listing))
                .await
                .unwrap_or_else(|e| Err(ApiError::Unavailable(format!("listing the schemas failed: {e}"))))
        }
        Err(e) => Err(e),
    };
    let resp = match listed {
        Ok(body) => (StatusCode::OK, json_headers(), body.to_string()).into_response(),
        Err(e) => e.into_response(),
    };
    finish(&state, ROUTE_SCHEMAS, started, resp)
}

fn list_inner(state: &AppState) -> Result<serde_json::Value, ApiError> {
    let builtins: Vec<serde_json::Value> = builtin::schemas().iter().map(describe).collect();
    let mut recorded = Vec::new();
    for r in state.log.schemas()? {
        let s = Schema::from_record(&r.content, &r.hash).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let mut d = describe(&s);
        d["from_offset"] = r.from_offset.into();
        if !r.from_partitions.is_empty() {
            // A Kafka log's: the offset of each partition it is in force from (13.4).
            d["from_offsets"] = r.from_partitions.clone().into();
        }
        d["schema"] = serde_json::from_str(s.canonical()).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        recorded.push(d);
    }
    Ok(serde_json::json!({"builtin": builtins, "registered": recorded}))
}

pub(super) async fn register(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let resp = match register_inner(&state, &headers, body).await {
        Ok((status, body)) => (status, json_headers(), body.to_string()).into_response(),
        Err(e) => e.into_response(),
    };
    finish(&state, ROUTE_SCHEMAS, started, resp)
}

async fn register_inner(state: &Arc<AppState>, headers: &HeaderMap, body: Body) -> Result<(StatusCode, serde_json::Value), ApiError> {
    state.admin(headers)?;
    let timeout_ms = state.limits.body_read_timeout_ms;
    let bytes = match tokio::time::timeout(Duration::from_millis(timeout_ms), axum::body::to_bytes(body, schema::MAX_SCHEMA_BYTES)).await {
        Err(_) => return Err(ApiError::BodyTimeout(timeout_ms)),
        Ok(Err(e)) if is_length_limit(&e) => return Err(ApiError::SchemaTooLarge),
        Ok(Err(e)) => return Err(ApiError::Unreadable(e.to_string())),
        Ok(Ok(b)) => b,
    };
    let s = Schema::parse(&bytes).map_err(|e| ApiError::SchemaInvalid(e.to_string()))?;
    registering(state, move |state| async move { check_and_record(&state, s).await }).await
}

/// Runs `work` (a check and record against the log's schemas) on a task of its own that
/// holds the registration lock until the log answers, even if the request is dropped
/// meanwhile: the next registration is checked against this one whatever became of its
/// client. The request waits at most [`APPEND_CONFIRM_TIMEOUT_MS`].
async fn registering<T, F, Fut>(state: &Arc<AppState>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(Arc<AppState>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, ApiError>> + Send,
{
    let guard = state.schema_registration.clone().lock_owned().await;
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let _one_at_a_time = guard;
        work(task_state).await
    });
    match tokio::time::timeout(Duration::from_millis(APPEND_CONFIRM_TIMEOUT_MS), task).await {
        Err(_) => Err(ApiError::Unconfirmed(APPEND_CONFIRM_TIMEOUT_MS)),
        Ok(Err(join)) => Err(ApiError::Unavailable(format!("the registration failed: {join}"))),
        Ok(Ok(result)) => result,
    }
}

/// `serve --infer-schemas` (docs/CONTRACT.md 13.8): records the schemas `events` ask for
/// (an unknown name, a new property of an inferred type), one registration at a time as
/// `POST /v1/schemas` does, before they are checked: the types in force then hold them
/// and the events land after their records. Nothing to do (the usual case) costs a look
/// at each event's `event_type`. A schema the log refuses (its table limit, a name taken)
/// is logged and counted once, its name not inferred again by this server, and its events
/// are checked as before (`unknown_event_type`).
pub(super) async fn infer<'a>(state: &Arc<AppState>, events: impl Iterator<Item = &'a str>) -> Result<(), ApiError> {
    let types = state.types();
    let mut wanted = Wanted::default();
    for text in events {
        observe(&mut wanted, &types, text);
    }
    record_inferred(state, wanted).await
}

/// What one event's text asks [`infer`] for ([`Wanted::observe`]).
pub(super) fn observe(wanted: &mut Wanted, types: &crate::event::Registry, text: &str) {
    wanted.observe(text, |name| types.schema(name));
}

/// Most names whose inferred schema was refused that a server remembers (so as not to take
/// the registration lock for them on every request); past it, it infers no new names.
const MAX_REFUSED_INFERENCES: usize = 1024;

/// Records what [`observe`] found wanted ([`infer`]): on a task of its own that holds the
/// registration lock until the log answers, even if the request is dropped meanwhile (as
/// [`register`]), so the next inference is made against this one's record.
pub(super) async fn record_inferred(state: &Arc<AppState>, mut wanted: Wanted) -> Result<(), ApiError> {
    {
        let refused = state.inference_refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let types = state.types();
        let full = refused.len() >= MAX_REFUSED_INFERENCES;
        wanted.retain(|name| !refused.contains(name) && (!full || types.schema(name).is_some()));
    }
    if wanted.is_empty() {
        return Ok(());
    }
    registering(state, move |state| async move { record_locked(&state, wanted).await }).await
}

async fn record_locked(state: &AppState, wanted: Wanted) -> Result<(), ApiError> {
    let known: Vec<Schema> = registered_async(state).await?.into_iter().map(|(_, s)| s).collect();
    let mut refused = Vec::new();
    for s in wanted.schemas(&known) {
        let s = match s {
            Ok(s) => s,
            Err((name, e)) => {
                tracing::warn!(event_type = %name, error = %e, "an inferred schema does not parse; its events are rejected");
                refused.push(name);
                continue;
            }
        };
        let uri = s.uri();
        let name = s.name.clone();
        match check_and_record(state, s).await {
            Ok(_) => {
                state.metrics.schemas_inferred_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(ApiError::SchemaRefused(why)) => {
                tracing::warn!(schema = %uri, reason = %why, "an inferred schema was refused; its events are rejected");
                refused.push(name);
            }
            Err(e) => return Err(e),
        }
    }
    // The server's types as the log has them: another request's record this server did not
    // swap in yet (one dropped before its answer), or another node's that came first on a
    // Kafka log (this one's then lost: not a refusal, the name is inferred again later).
    let all: Vec<Schema> = registered_async(state).await?.into_iter().map(|(_, s)| s).collect();
    refused.retain(|name| !all.iter().any(|s| &s.name == name));
    state.metrics.schemas_inference_refused_total.fetch_add(refused.len() as u64, std::sync::atomic::Ordering::Relaxed);
    state.inference_refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(refused);
    let fresh = crate::event::Registry::from_schemas(&all);
    if fresh.schemas().map(Schema::hash).ne(state.types().schemas().map(Schema::hash)) {
        state.set_types(fresh);
    }
    Ok(())
}

/// How often a node of a Kafka log reads the side topic for schemas (and store catalogues)
/// other nodes recorded.
pub const SCHEMA_FOLLOW_INTERVAL_MS: u64 = 1_000;

/// On a Kafka log: keeps the server's types those of the side topic's schema records
/// (docs/CONTRACT.md 13.4), and the store catalogue of a server started with `--catalog`
/// the latest the side topic holds (12.2), read every [`SCHEMA_FOLLOW_INTERVAL_MS`]; ends
/// with the server.
pub async fn follow_schemas(state: Arc<AppState>) {
    let mut stopping = state.stopping.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(SCHEMA_FOLLOW_INTERVAL_MS)) => {}
            _ = stopping.changed() => return,
        }
        if *stopping.borrow() {
            return;
        }
        let log = state.log.clone();
        let read = tokio::task::spawn_blocking(move || log.schemas_and_catalogs()).await;
        let (records, catalogs) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the schema and catalogue records; the types and catalogue stay as they are");
                continue;
            }
            Err(_) => continue,
        };
        if let Some(c) = &state.catalog {
            // The latest version every reader takes (`catalog::versions` passes over one
            // that is not a catalogue), read only when it is not the one in force.
            let current = c.current_hash();
            let latest = catalogs.iter().rev().find_map(|r| {
                if r.hash == current {
                    return Some(None);
                }
                crate::catalog::Catalog::from_canonical(&r.content, &r.hash).ok().map(|cat| Some((cat, r.hash.clone())))
            });
            if let Some(Some((latest, hash))) = latest {
                tracing::info!(catalog_hash = %hash, stores = latest.stores.len(), items = latest.items.len(),
                    "a store catalogue another node recorded is in force");
                c.follow(latest, hash);
            }
        }
        let schemas: Vec<Schema> = records.iter().filter_map(|r| Schema::from_record(&r.content, &r.hash).ok()).collect();
        let fresh = crate::event::Registry::from_schemas(&schemas);
        if fresh.schemas().map(Schema::hash).ne(state.types().schemas().map(Schema::hash)) {
            // Under the registration lock, and read again there: a registration that
            // finished meanwhile is in the records read now.
            let _one_at_a_time = state.schema_registration.lock().await;
            let log = state.log.clone();
            let Ok(Ok(records)) = tokio::task::spawn_blocking(move || log.schemas()).await else { continue };
            let schemas: Vec<Schema> = records.iter().filter_map(|r| Schema::from_record(&r.content, &r.hash).ok()).collect();
            let fresh = crate::event::Registry::from_schemas(&schemas);
            tracing::info!(types = fresh.len(), "event types recorded by another node are in force");
            state.set_types(fresh);
        }
    }
}

/// Whether reading a body failed on its length limit (axum wraps the limit's error).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

async fn check_and_record(state: &AppState, s: Schema) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let known: Vec<Schema> = registered_async(state).await?.into_iter().map(|(_, s)| s).collect();
    let evolution = schema::check_against(&known, &s).map_err(|e| ApiError::SchemaRefused(e.to_string()))?;
    let mut answer = describe(&s);
    match &evolution {
        Evolution::Unchanged => {
            // A retry after an answer that failed once the record was durable (a 503): the
            // type is in force from the log's point of view, so from the server's too.
            state.set_types(crate::event::Registry::from_schemas(&known));
            answer["recorded"] = false.into();
            answer["evolution"] = "unchanged".into();
            return Ok((StatusCode::OK, answer));
        }
        Evolution::NewTable => answer["evolution"] = "new_table".into(),
        Evolution::Addition { added } => {
            answer["evolution"] = "addition".into();
            answer["added"] = added.clone().into();
        }
    }
    // A Kafka log writes its side topic and reads it back before it returns: off the
    // async workers.
    let log = state.log.clone();
    let (hash, content) = (s.hash(), s.canonical().as_bytes().to_vec());
    let pending = tokio::task::spawn_blocking(move || log.record_schema(hash, content))
        .await
        .map_err(|e| ApiError::Unavailable(format!("recording the schema failed: {e}")))?
        .map_err(|e| match e {
            LogError::Unsupported(m) => ApiError::Unsupported(m),
            LogError::Conflict(m) => ApiError::SchemaRefused(m),
            other => other.into(),
        })?;
    pending.wait_async().await?;
    let listed = registered_async(state).await?;
    let Some(from_offset) = listed.iter().find(|(_, r)| r.hash() == s.hash()).map(|(from_offset, _)| *from_offset) else {
        return Err(ApiError::Unavailable(format!("the log acknowledged {} but does not list it", s.uri())));
    };
    // Events are checked against the new type from now on: after its record, so each lands
    // past its `from_offset`.
    let mut all = known;
    all.push(s.clone());
    state.set_types(crate::event::Registry::from_schemas(&all));
    answer["recorded"] = true.into();
    answer["from_offset"] = from_offset.into();
    tracing::info!(schema = %s.uri(), hash = %s.hash(), from_offset, "event type schema recorded");
    Ok((StatusCode::CREATED, answer))
}
