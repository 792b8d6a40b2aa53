//! The HTTP API (`spec/api.md`): submission, C2SP tlog-tiles, proofs, lookups and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use reprolog_verifier::api::{
    AttestationsAnswer, BuilderInfo, BuildersAnswer, CheckpointPage, ConsistencyProof, ErrorAnswer,
    InclusionProof, KeyEventAnswer, KeyEventPage, LoggedEntry, NarinfoResult, PathPage,
    SignatureStatus, SubmitAnswer, PATH_PAGE_BYTES, PATH_PAGE_DEFAULT, PATH_PAGE_MAX,
};
use reprolog_verifier::merkle;
use reprolog_verifier::nix::nix32;
use reprolog_verifier::nix::store_path::HASH_PART_LEN;
use reprolog_verifier::proof::TlogProof;
use reprolog_verifier::tiles::{encode_bundle, TileKind, TilePath, TILE_HEIGHT};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::metrics::{Metrics, Rejection};
use crate::publisher::{Published, SharedCheckpoint};
use crate::registry::SharedRegistry;
use crate::sequencer::{Sequenced, Submission};
use crate::storage::{LogStore, NewEntry, StoreError};
use crate::submission::{self, Checked, Refusal};
use reprolog_verifier::entry::LogEntry;
use reprolog_verifier::key_event::KeyAction;
use reprolog_verifier::registry::KeyRegistry;

/// The media type of narinfo submissions.
pub const NARINFO_TYPE: &str = "text/x-nix-narinfo";
/// The media types of attestation submissions: DSSE's own, and plain JSON.
pub const ATTESTATION_TYPES: [&str; 2] =
    ["application/vnd.dsse.envelope.v1+json", "application/json"];
/// How many tile reads (entry bundles of up to about 16 MiB) run at once; the rest wait, so
/// that concurrent readers cannot multiply the server's memory.
pub const CONCURRENT_LARGE_READS: usize = 8;
/// How many path lookups run at once. Apart from tiles: a lookup of a long history reads many
/// index pages, and anonymous lookups must not starve the tile reads that monitors and
/// witnesses' clients depend on.
pub const CONCURRENT_PATH_READS: usize = 4;

pub struct AppState<S> {
    pub store: Arc<S>,
    pub registry: Arc<SharedRegistry>,
    pub published: SharedCheckpoint,
    pub sequencer: tokio::sync::mpsc::Sender<Submission>,
    pub metrics: Arc<Metrics>,
    /// One permit per core: submissions beyond that wait their turn to be verified rather
    /// than crowd the cores with threads.
    pub verifiers: Arc<tokio::sync::Semaphore>,
    /// [`CONCURRENT_LARGE_READS`] permits, for tiles.
    pub large_reads: Arc<tokio::sync::Semaphore>,
    /// [`CONCURRENT_PATH_READS`] permits, for path lookups.
    pub path_reads: Arc<tokio::sync::Semaphore>,
}

type Shared<S> = Arc<AppState<S>>;

pub fn router<S: LogStore>(state: Shared<S>, body_limit: usize) -> Router {
    Router::new()
        .route("/api/v1/narinfo", post(submit::<S>))
        .route("/api/v1/attestations", post(submit_attestations::<S>))
        .route("/checkpoint", get(checkpoint::<S>))
        .route("/tile/{*path}", get(tile::<S>))
        .route("/api/v1/proof/inclusion", get(inclusion::<S>))
        .route("/api/v1/proof/consistency", get(consistency::<S>))
        .route("/api/v1/entries/{index}", get(entry::<S>))
        .route("/api/v1/entries/{index}/tlog-proof", get(tlog_proof::<S>))
        .route("/api/v1/paths/{hash_part}", get(path_events::<S>))
        .route("/api/v1/builders", get(builders::<S>))
        .route(
            "/api/v1/keys",
            get(key_events::<S>).post(submit_key_event::<S>),
        )
        .route("/api/v1/checkpoints", get(checkpoints::<S>))
        .route("/metrics", get(metrics::<S>))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// An error answer: a status and an [`ErrorAnswer`] body.
pub struct ApiError(StatusCode, ErrorAnswer);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(
            status,
            ErrorAnswer {
                error: msg.into(),
                signatures: None,
                first_reasons: Vec::new(),
            },
        )
    }
    fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("storage: {e}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
    }
}

impl From<Arc<StoreError>> for ApiError {
    fn from(e: Arc<StoreError>) -> Self {
        tracing::error!("storage: {e}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Malformed(msg) => Self::bad_request(msg),
            Refusal::TooMany(msg) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, msg),
            Refusal::EntryTooLarge(msg) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, msg),
            Refusal::Signatures(_, answer) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, answer),
            Refusal::Storage(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

/// Runs blocking storage work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// Waits for a permit of `kind` (one of the read semaphores of the state).
async fn permit(
    kind: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    Arc::clone(kind)
        .acquire_owned()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

fn current<S>(state: &AppState<S>) -> Arc<Published> {
    Arc::clone(&reprolog_verifier::locks::read(&state.published))
}

// ---- submission ----------------------------------------------------------------------------

/// Counts a submission request while it is handled, for `/metrics` and for the drain at
/// shutdown, whichever way the handler returns.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics
            .submissions_in_flight
            .fetch_add(1, Ordering::Relaxed);
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.submissions_in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.submissions.fetch_add(1, Ordering::Relaxed);
    }
}

/// The media type of a submission; 415 for any other.
fn require_type(headers: &HeaderMap, accepted: &[&str], what: &str) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match content_type {
        Some(t) if accepted.contains(&t) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("submit {what} as {}", accepted.join(" or ")),
        )),
    }
}

async fn submit<S: LogStore>(
    State(state): State<Shared<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let _in_flight = InFlight::new(&state.metrics);
    require_type(&headers, &[NARINFO_TYPE], "narinfos").inspect_err(|_| {
        state.metrics.reject(Rejection::ContentType);
    })?;
    let narinfos = check_and_sequence(&state, body, submission::check).await?;
    Ok(Json(SubmitAnswer { narinfos }).into_response())
}

async fn submit_attestations<S: LogStore>(
    State(state): State<Shared<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let _in_flight = InFlight::new(&state.metrics);
    require_type(&headers, &ATTESTATION_TYPES, "DSSE envelopes").inspect_err(|_| {
        state.metrics.reject(Rejection::ContentType);
    })?;
    let attestations = check_and_sequence(&state, body, submission::check_attestations).await?;
    Ok(Json(AttestationsAnswer { attestations }).into_response())
}

/// Checks a submission off the async threads (one verifier permit per core), then sequences
/// what is new and returns every item's results.
async fn check_and_sequence<S: LogStore>(
    state: &AppState<S>,
    body: Bytes,
    check: fn(&[u8], &KeyRegistry, &S, &Metrics) -> Result<Checked, Refusal>,
) -> Result<Vec<NarinfoResult>, ApiError> {
    let metrics = Arc::clone(&state.metrics);
    let registry = state.registry.current();
    let store = Arc::clone(&state.store);
    let permit = Arc::clone(&state.verifiers)
        .acquire_owned()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let checking = Arc::clone(&metrics);
    let checked = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        check(&body, &registry, &*store, &checking)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let Checked {
        mut results,
        pending,
        known,
    } = checked.map_err(|refusal| {
        metrics.reject(refusal.rejection());
        ApiError::from(refusal)
    })?;
    metrics
        .entries_duplicate
        .fetch_add(known, Ordering::Relaxed);
    let ignored = results
        .iter()
        .flat_map(|r| &r.signatures)
        .filter(|s| s.status == SignatureStatus::Ignored)
        .count();
    metrics
        .signatures_ignored
        .fetch_add(ignored as u64, Ordering::Relaxed);
    if pending.is_empty() {
        return Ok(results); // all already logged
    }
    let (positions, new): (Vec<(usize, usize)>, Vec<NewEntry>) = pending
        .into_iter()
        .map(|p| ((p.narinfo, p.signature), p.entry))
        .unzip();
    let outcomes = sequence(state, new).await?;
    for ((n, s), outcome) in positions.into_iter().zip(outcomes) {
        let r = &mut results[n].signatures[s];
        match outcome {
            Sequenced::Logged(i) => (r.status, r.index) = (SignatureStatus::Logged, Some(i)),
            Sequenced::Duplicate(i) => (r.status, r.index) = (SignatureStatus::Duplicate, Some(i)),
            // The key stopped signing between the check and the sequencer.
            Sequenced::Refused(why) => (r.status, r.reason) = (SignatureStatus::Ignored, Some(why)),
        }
    }
    Ok(results)
}

/// Hands entries to the sequencer and waits until they are durable (or refused).
async fn sequence<S>(
    state: &AppState<S>,
    entries: Vec<NewEntry>,
) -> Result<Vec<Sequenced>, ApiError> {
    let stopped = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "sequencer stopped");
    let (reply, answer) = oneshot::channel();
    state
        .sequencer
        .send(Submission {
            entries,
            reply,
            arrived: Instant::now(),
        })
        .await
        .map_err(|_| stopped())?;
    Ok(answer.await.map_err(|_| stopped())??)
}

// ---- key events ----------------------------------------------------------------------------

/// The media type of key event submissions: the entry's own text.
pub const KEY_EVENT_TYPE: &str = "text/plain";

/// `POST /api/v1/keys`: a builder's rotation or revocation, or the operator's revocation, as
/// the entry text it signed. Registrations come only from the builders file.
async fn submit_key_event<S: LogStore>(
    State(state): State<Shared<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let _in_flight = InFlight::new(&state.metrics);
    let metrics = &state.metrics;
    require_type(&headers, &[KEY_EVENT_TYPE], "a key event")
        .inspect_err(|_| metrics.reject(Rejection::ContentType))?;
    let unprocessable = |why: String| {
        metrics.reject(Rejection::KeyEventRefused);
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why)
    };
    let malformed = |why: String| {
        metrics.reject(Rejection::Malformed);
        ApiError::bad_request(why)
    };
    let event = match LogEntry::decode(&body) {
        Ok(LogEntry::Key(event)) => event,
        Ok(LogEntry::Signing(_)) => {
            return Err(malformed(
                "a signing event; submit narinfos to /api/v1/narinfo".into(),
            ))
        }
        Err(e) => return Err(malformed(format!("not a key event: {e}"))),
    };
    if let KeyAction::Register(_) | KeyAction::Unregister(_) = event.action {
        return Err(unprocessable(
            "keys are registered and unregistered by the operator's builders file only".into(),
        ));
    }
    // Checked here too so that a forged or misdirected event costs no sequencer time; the
    // sequencer applies it again at its index.
    event
        .verify(state.registry.current().log_key())
        .map_err(|e| unprocessable(e.to_string()))?;
    match sequence(&state, vec![NewEntry::key_event(event)])
        .await?
        .pop()
    {
        Some(Sequenced::Logged(index)) => Ok(Json(KeyEventAnswer {
            status: SignatureStatus::Logged,
            index,
        })
        .into_response()),
        Some(Sequenced::Duplicate(index)) => Ok(Json(KeyEventAnswer {
            status: SignatureStatus::Duplicate,
            index,
        })
        .into_response()),
        Some(Sequenced::Refused(why)) => Err(unprocessable(why)),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the sequencer gave no answer",
        )),
    }
}

#[derive(Deserialize)]
struct CheckpointQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/checkpoints?after=SIZE&limit=`: the published checkpoints of sizes above
/// `after`, as they were served.
async fn checkpoints<S: LogStore>(
    State(state): State<Shared<S>>,
    Query(q): Query<CheckpointQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(PATH_PAGE_DEFAULT);
    if !(1..=PATH_PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {PATH_PAGE_MAX}"
        )));
    }
    let store = Arc::clone(&state.store);
    let (notes, more) =
        blocking(move || Ok(store.checkpoints(q.after.unwrap_or(0), limit)?)).await?;
    let checkpoints: Vec<String> = notes
        .into_iter()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect();
    // The cursor is the last note's size, read from its own text.
    let next = match (more, checkpoints.last()) {
        (true, Some(last)) => Some(checkpoint_size(last).ok_or_else(|| {
            ApiError::from(StoreError::Corrupt(
                "a stored checkpoint does not parse".into(),
            ))
        })?),
        _ => None,
    };
    Ok(Json(CheckpointPage { checkpoints, next }).into_response())
}

/// The size a signed checkpoint note names.
fn checkpoint_size(note: &str) -> Option<u64> {
    let note = reprolog_verifier::note::Note::parse(note.as_bytes()).ok()?;
    Some(
        reprolog_verifier::checkpoint::Checkpoint::parse(note.text())
            .ok()?
            .size,
    )
}

/// `GET /api/v1/keys?after=&limit=`: the log's key events, in index order.
async fn key_events<S: LogStore>(
    State(state): State<Shared<S>>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(PATH_PAGE_DEFAULT);
    if !(1..=PATH_PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {PATH_PAGE_MAX}"
        )));
    }
    let size = current(&state).checkpoint.size;
    let log_key = Some(state.registry.current().log_key().to_string());
    let store = Arc::clone(&state.store);
    let page = blocking(move || {
        let (indexes, more) = store.key_events(q.after, limit)?;
        let mut events = Vec::with_capacity(indexes.len());
        // Only what the published checkpoint covers, so that every event can be proven.
        for &i in indexes.iter().filter(|i| **i < size) {
            if let Some(bytes) = store.entries(i..i + 1)?.pop() {
                events.push(logged_entry(i, &bytes)?);
            }
        }
        let all_published = indexes.last().is_none_or(|l| *l < size);
        let next = (more && all_published)
            .then(|| events.last().map(|e| e.index))
            .flatten();
        Ok(KeyEventPage {
            log_key,
            events,
            next,
        })
    })
    .await?;
    Ok(Json(page).into_response())
}

// ---- tlog-tiles ----------------------------------------------------------------------------

async fn checkpoint<S: LogStore>(State(state): State<Shared<S>>) -> Response {
    let p = current(&state);
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        p.note.clone(),
    )
        .into_response()
}

/// How many hashes of tile level `level` a tree of `size` leaves has complete.
fn hashes_at_tile_level(size: u64, level: u8) -> u64 {
    let shift = u32::from(level) * u32::from(TILE_HEIGHT);
    size.checked_shr(shift).unwrap_or(0)
}

async fn tile<S: LogStore>(
    State(state): State<Shared<S>>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let tile =
        TilePath::parse(&format!("tile/{path}")).map_err(|e| ApiError::not_found(e.to_string()))?;
    let size = current(&state).checkpoint.size;
    let available = match tile.kind {
        TileKind::Hashes { level } => hashes_at_tile_level(size, level),
        TileKind::Entries => size,
    };
    let range = tile
        .index_range()
        .filter(|r| r.end <= available)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "tile {tile} is beyond the latest checkpoint (size {size})"
            ))
        })?;
    let _permit = permit(&state.large_reads).await?;
    let store = Arc::clone(&state.store);
    let body = blocking(move || match tile.nodes() {
        Some(nodes) => Ok(store.read_hashes(&nodes)?.concat()),
        None => {
            let entries = store.entries(range)?;
            encode_bundle(&entries).map_err(|e| ApiError::from(StoreError::Corrupt(e.to_string())))
        }
    })
    .await?;
    let cache = if tile.is_full() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response())
}

// ---- proofs --------------------------------------------------------------------------------

fn b64_hashes(hashes: &[merkle::Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

fn proof_error(e: merkle::ProofError) -> ApiError {
    match e {
        merkle::ProofError::Storage(e) => {
            tracing::error!("reading proof hashes: {e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
        }
        other => ApiError::bad_request(other.to_string()),
    }
}

/// Refuses sizes beyond the latest checkpoint: proofs are only for published trees.
fn check_published<S>(state: &AppState<S>, size: u64) -> Result<(), ApiError> {
    let published = current(state).checkpoint.size;
    if size > published {
        return Err(ApiError::bad_request(format!(
            "size {size} is beyond the latest checkpoint (size {published})"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: u64,
    size: u64,
}

async fn inclusion<S: LogStore>(
    State(state): State<Shared<S>>,
    Query(q): Query<InclusionQuery>,
) -> Result<Response, ApiError> {
    check_published(&state, q.size)?;
    // Inline on the async workers: a proof is about 2·log2(size) reads of 32 bytes from the
    // node file, which the page cache holds (64 bytes per entry).
    let proof = merkle::prove_inclusion(q.index, q.size, &*state.store).map_err(proof_error)?;
    Ok(Json(InclusionProof {
        index: q.index,
        size: q.size,
        proof: b64_hashes(&proof),
    })
    .into_response())
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    old: u64,
    new: u64,
}

async fn consistency<S: LogStore>(
    State(state): State<Shared<S>>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    check_published(&state, q.new)?;
    let proof = merkle::prove_consistency(q.old, q.new, &*state.store).map_err(proof_error)?;
    Ok(Json(ConsistencyProof {
        old: q.old,
        new: q.new,
        proof: b64_hashes(&proof),
    })
    .into_response())
}

// ---- entries and lookups -------------------------------------------------------------------

fn logged_entry(index: u64, bytes: &[u8]) -> Result<LoggedEntry, ApiError> {
    LoggedEntry::new(index, bytes)
        .map_err(|err| ApiError::from(StoreError::Corrupt(format!("entry {index}: {err}"))))
}

async fn read_entry<S: LogStore>(state: &AppState<S>, index: u64) -> Result<Vec<u8>, ApiError> {
    let store = Arc::clone(&state.store);
    blocking(move || Ok(store.entries(index..index.saturating_add(1))?))
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("no entry {index}")))
}

async fn entry<S: LogStore>(
    State(state): State<Shared<S>>,
    Path(index): Path<u64>,
) -> Result<Response, ApiError> {
    let bytes = read_entry(&state, index).await?;
    Ok(Json(logged_entry(index, &bytes)?).into_response())
}

async fn tlog_proof<S: LogStore>(
    State(state): State<Shared<S>>,
    Path(index): Path<u64>,
) -> Result<Response, ApiError> {
    let entry = read_entry(&state, index).await?;
    let published = current(&state);
    let size = published.checkpoint.size;
    if index >= size {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("entry {index} is not in a checkpoint yet (size {size}); retry shortly"),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(r);
    }
    let store = Arc::clone(&state.store);
    let proof =
        blocking(move || merkle::prove_inclusion(index, size, &*store).map_err(proof_error))
            .await?;
    // The entry rides in the extra data, so a holder of the receipt and the narinfo can check
    // everything offline; verifiers check it against both, never trust it as it comes.
    let receipt = TlogProof {
        extra: Some(entry),
        index,
        proof,
        checkpoint: published.note.clone(),
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        receipt.encode(),
    )
        .into_response())
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// One page of a path's events: at most `limit` (and [`PATH_PAGE_MAX`]) events after index
/// `after`, stopping early past [`PATH_PAGE_BYTES`] of entries, with a cursor when more follow.
async fn path_events<S: LogStore>(
    State(state): State<Shared<S>>,
    Path(hash_part): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    if hash_part.len() != HASH_PART_LEN || !hash_part.bytes().all(|b| nix32::ALPHABET.contains(&b))
    {
        return Err(ApiError::bad_request(
            "a store path hash part is 32 nix32 characters",
        ));
    }
    let limit = q.limit.unwrap_or(PATH_PAGE_DEFAULT);
    if !(1..=PATH_PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {PATH_PAGE_MAX}"
        )));
    }
    let _permit = permit(&state.path_reads).await?;
    let store = Arc::clone(&state.store);
    let page = blocking(move || {
        let (indexes, mut more) = store.path_indexes(&hash_part, q.after, limit)?;
        let (mut events, mut bytes_read, mut last_read) = (Vec::new(), 0, None);
        for &i in &indexes {
            if bytes_read >= PATH_PAGE_BYTES {
                more = true;
                break;
            }
            last_read = Some(i);
            let Some(bytes) = store.entries(i..i + 1)?.pop() else {
                continue;
            };
            bytes_read += bytes.len();
            let event = logged_entry(i, &bytes)?;
            // The path index is derived data; trust only entries that name the path.
            let base = event.store_path.rsplit('/').next().unwrap_or_default();
            if base.starts_with(&hash_part) {
                events.push(event);
            }
        }
        Ok((events, if more { last_read } else { None }))
    })
    .await?;
    let (events, next) = page;
    let Some(first) = events.first() else {
        return Err(ApiError::not_found("no logged event for that store path"));
    };
    Ok(Json(PathPage {
        store_path: first.store_path.clone(),
        events,
        next,
    })
    .into_response())
}

async fn builders<S: LogStore>(State(state): State<Shared<S>>) -> Result<Response, ApiError> {
    let store = Arc::clone(&state.store);
    let counts: BTreeMap<String, u64> = blocking(move || Ok(store.builder_counts()?))
        .await?
        .into_iter()
        .collect();
    let registry = state.registry.current();
    let mut builders: Vec<BuilderInfo> = registry
        .records()
        .map(|r| {
            let key = r.key.to_string();
            let status = r.current_status();
            BuilderInfo {
                name: r.key.name.clone(),
                entries: counts.get(&key).copied().unwrap_or(0),
                identity: r.identity.clone(),
                active: status.identity().is_some(),
                status: status.to_string(),
                key,
            }
        })
        .collect();
    builders.sort_by(|a, b| (&a.identity, &a.name, &a.key).cmp(&(&b.identity, &b.name, &b.key)));
    Ok(Json(BuildersAnswer { builders }).into_response())
}

async fn metrics<S: LogStore>(State(state): State<Shared<S>>) -> Result<Response, ApiError> {
    let store = Arc::clone(&state.store);
    let disk = blocking(move || Ok(store.disk_bytes()?)).await?;
    let identities: Vec<String> = state
        .registry
        .current()
        .records()
        .map(|r| r.identity.clone())
        .collect();
    let mut text = state.metrics.render(&identities);
    text.push_str(&format!(
        "# HELP reprolog_store_bytes Bytes the store occupies on disk.\n\
         # TYPE reprolog_store_bytes gauge\nreprolog_store_bytes {disk}\n"
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
