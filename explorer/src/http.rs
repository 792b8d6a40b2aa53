//! The research API (`spec/explorer-api.md`): JSON over the index, read-only. Nothing a
//! client sends changes the index.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reprolog_verifier::api::ErrorAnswer;
use reprolog_verifier::compare::{Claim, Summary, Verdict};
use reprolog_verifier::dating::rfc3339;
use reprolog_verifier::explorer_api::{
    AgreementAnswer, Bucket, Disagreement, DisagreementsAnswer, FollowState, FoundPath,
    IndexedBuilders, IndexedClaim, LogStatus, PathAnswer, ReportAnswer, SearchAnswer, StatusAnswer,
    TimeseriesAnswer,
};
use reprolog_verifier::nix::nix32;
use reprolog_verifier::nix::store_path::HASH_PART_LEN;
use reprolog_verifier::prometheus::{escape_label, header as metric_header};
use serde::Deserialize;

use crate::aggregates;
use crate::backend::Backend;
use crate::db::{self, ClaimRow, Db, DbError};

/// The most store paths one report takes.
pub const MAX_REPORT_PATHS: usize = 100_000;
/// The largest report body: a `nix path-info -r` of that many paths.
pub const MAX_REPORT_BYTES: usize = 16 << 20;
/// Search results per page, at most.
pub const SEARCH_PAGE_MAX: usize = 100;

pub fn router(db: Arc<Db>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/paths/{hash}", get(path))
        .route("/api/v1/search", get(search))
        .route("/api/v1/builders", get(builders))
        .route("/api/v1/report", post(report))
        .route("/api/v1/agreement", get(agreement))
        .route("/api/v1/disagreements", get(disagreements))
        .route("/api/v1/timeseries", get(timeseries))
        .route("/api/v1/export", get(export))
        .route("/metrics", get(metrics))
        .merge(crate::pages::router())
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .with_state(db)
}

/// An error answer, as JSON.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorAnswer {
            error: self.1,
            signatures: None,
            first_reasons: Vec::new(),
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!("{e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "index error".into())
    }
}

fn bad_request(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, why.into())
}

/// Runs a blocking read of the index off the async workers.
async fn read<T: Send + 'static>(
    db: &Arc<Db>,
    f: impl FnOnce(&mut dyn Backend) -> Result<T, DbError> + Send + 'static,
) -> Result<T, ApiError> {
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || db.read(f))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

fn is_hash_part(s: &str) -> bool {
    s.len() == HASH_PART_LEN && s.bytes().all(|b| nix32::ALPHABET.contains(&b))
}

/// The verdict over the claims that count.
fn verdict(claims: &[ClaimRow]) -> Verdict {
    let counted: Vec<Claim> = claims
        .iter()
        .filter(|c| c.void.is_none())
        .map(|c| Claim {
            builder: c.builder.clone(),
            key: None,
            nar_hash: c.nar_hash.clone(),
            index: c.index,
            kind: c.kind.clone(),
        })
        .collect();
    Verdict::of(&counted)
}

fn indexed(c: ClaimRow) -> IndexedClaim {
    IndexedClaim {
        store_path: c.store_path,
        log: c.log,
        index: c.index,
        kind: c.kind,
        builder: c.builder,
        key: c.key_name,
        nar_hash: c.nar_hash,
        nar_size: c.nar_size,
        references: c.references,
        deriver: c.deriver,
        logged_at: c.logged_at.map(rfc3339),
        void: c.void,
    }
}

async fn status(State(db): State<Arc<Db>>) -> Result<Response, ApiError> {
    Ok(Json(status_answer(&db).await?).into_response())
}

/// The answers of the API, which the JSON endpoints and the dashboard's pages both serve.
pub async fn status_answer(db: &Arc<Db>) -> Result<StatusAnswer, ApiError> {
    let rows = logs(db).await?;
    let logs = rows
        .into_iter()
        .map(|r| LogStatus {
            origin: r.origin,
            url: r.url,
            verified_size: r.size,
            checkpoint: r.checkpoint,
            cosigned_by: r
                .cosigned_by
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            state: if r.stopped.is_some() {
                FollowState::Stopped
            } else {
                FollowState::Following
            },
            reason: r.stopped.or(r.last_error),
        })
        .collect();
    let totals = read(db, db::totals).await?;
    Ok(StatusAnswer { logs, totals })
}

async fn path(State(db): State<Arc<Db>>, Path(hash): Path<String>) -> Result<Response, ApiError> {
    let hash = hash.strip_suffix(".json").unwrap_or(&hash).to_owned();
    Ok(Json(path_answer(&db, hash).await?).into_response())
}

pub async fn path_answer(db: &Arc<Db>, hash: String) -> Result<PathAnswer, ApiError> {
    if !is_hash_part(&hash) {
        return Err(bad_request("a store path hash part is 32 nix32 characters"));
    }
    let claims = read(db, move |conn| db::claims_of(conn, &hash)).await?;
    let Some(store_path) = claims.first().map(|c| c.store_path.clone()) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "no claim about that store path in the followed logs".into(),
        ));
    };
    Ok(PathAnswer {
        store_path,
        verdict: verdict(&claims),
        claims: claims.into_iter().map(indexed).collect(),
    })
}

#[derive(Default, Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

async fn search(
    State(db): State<Arc<Db>>,
    Query(query): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(search_answer(&db, query).await?).into_response())
}

pub async fn search_answer(db: &Arc<Db>, query: SearchQuery) -> Result<SearchAnswer, ApiError> {
    let q = query.q.unwrap_or_default();
    if q.is_empty() || q.len() > 200 || q.chars().any(char::is_control) {
        return Err(bad_request(
            "q: a store path name or hash prefix, 1 to 200 characters",
        ));
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=SEARCH_PAGE_MAX).contains(&limit) {
        return Err(bad_request(format!(
            "limit must be from 1 to {SEARCH_PAGE_MAX}"
        )));
    }
    let after = query.after.unwrap_or_default();
    read(db, move |conn| {
        let (found, more) = db::search(conn, &q, &after, limit)?;
        let hashes: Vec<&str> = found.iter().map(|(_, h)| h.as_str()).collect();
        let verdicts = aggregates::verdicts(conn, &hashes)?;
        let paths: Vec<FoundPath> = found
            .iter()
            .map(|(store_path, hash)| FoundPath {
                store_path: store_path.clone(),
                verdict: verdicts.get(hash).map_or(Verdict::NotLogged, |(_, v)| *v),
            })
            .collect();
        let next = more
            .then(|| paths.last().map(|p| p.store_path.clone()))
            .flatten();
        Ok(SearchAnswer { paths, next })
    })
    .await
}

async fn builders(State(db): State<Arc<Db>>) -> Result<Response, ApiError> {
    Ok(Json(builders_answer(&db).await?).into_response())
}

pub async fn builders_answer(db: &Arc<Db>) -> Result<IndexedBuilders, ApiError> {
    let builders = read(db, db::builders).await?;
    Ok(IndexedBuilders { builders })
}

/// The store paths a report body names: one per line, the first word of each (as `nix
/// path-info -r` prints them, sizes after the path with `-s`).
fn report_paths(body: &str) -> Result<Vec<String>, ApiError> {
    let paths: Vec<String> = body
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    if paths.is_empty() {
        return Err(bad_request("the body names no store path"));
    }
    if paths.len() > MAX_REPORT_PATHS {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} store paths in one report; at most {MAX_REPORT_PATHS}",
                paths.len()
            ),
        ));
    }
    for p in &paths {
        let base = p.rsplit('/').next().unwrap_or(p);
        if !base.get(..HASH_PART_LEN).is_some_and(is_hash_part) {
            return Err(bad_request(format!(
                "{} is not a store path",
                reprolog_verifier::text::printable(p)
            )));
        }
    }
    Ok(paths)
}

async fn report(State(db): State<Arc<Db>>, body: Bytes) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| bad_request("the body is not UTF-8"))?;
    Ok(Json(report_answer(&db, text).await?).into_response())
}

/// The verdicts of the store paths `text` names (see [`report_paths`]).
pub async fn report_answer(db: &Arc<Db>, text: &str) -> Result<ReportAnswer, ApiError> {
    let paths = report_paths(text)?;
    read(db, move |conn| {
        let hash_of = |p: &str| -> String {
            let base = p.rsplit('/').next().unwrap_or(p);
            base[..HASH_PART_LEN].to_owned()
        };
        let hashes: Vec<String> = paths.iter().map(|p| hash_of(p)).collect();
        let verdicts =
            aggregates::verdicts(conn, &hashes.iter().map(String::as_str).collect::<Vec<_>>())?;
        let found: Vec<FoundPath> = paths
            .iter()
            .zip(&hashes)
            .map(|(p, h)| match verdicts.get(h) {
                Some((store_path, v)) => FoundPath {
                    store_path: store_path.clone(),
                    verdict: *v,
                },
                None => FoundPath {
                    store_path: p.clone(),
                    verdict: Verdict::NotLogged,
                },
            })
            .collect();
        let summary = Summary::of(
            &found
                .iter()
                .map(|f| reprolog_verifier::compare::PathVerdict {
                    store_path: f.store_path.clone(),
                    verdict: f.verdict,
                    claims: Vec::new(),
                    inconsistent_builders: Vec::new(),
                    void: Vec::new(),
                })
                .collect::<Vec<_>>(),
        );
        Ok(ReportAnswer {
            paths: found,
            summary,
        })
    })
    .await
}

async fn agreement(State(db): State<Arc<Db>>) -> Result<Response, ApiError> {
    Ok(Json(agreement_answer(&db).await?).into_response())
}

pub async fn agreement_answer(db: &Arc<Db>) -> Result<AgreementAnswer, ApiError> {
    let pairs = read(db, db::agreement).await?;
    Ok(AgreementAnswer { pairs })
}

/// A time as a query gives it: RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`) or seconds since the epoch.
fn time_param(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .map(|v| {
            reprolog_verifier::dating::parse_rfc3339(v)
                .or_else(|| v.parse().ok())
                .ok_or_else(|| {
                    bad_request(format!(
                        "{name}: a time, YYYY-MM-DDTHH:MM:SSZ or seconds since the epoch"
                    ))
                })
        })
        .transpose()
}

#[derive(Default, Deserialize)]
pub struct DisagreementsQuery {
    pub builder: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

async fn disagreements(
    State(db): State<Arc<Db>>,
    Query(q): Query<DisagreementsQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(disagreements_answer(&db, q).await?).into_response())
}

pub async fn disagreements_answer(
    db: &Arc<Db>,
    q: DisagreementsQuery,
) -> Result<DisagreementsAnswer, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=SEARCH_PAGE_MAX).contains(&limit) {
        return Err(bad_request(format!(
            "limit must be from 1 to {SEARCH_PAGE_MAX}"
        )));
    }
    let after = q
        .after
        .as_deref()
        .map(|a| {
            a.split_once(':')
                .and_then(|(t, h)| Some((t.parse::<i64>().ok()?, h.to_owned())))
                .filter(|(_, h)| is_hash_part(h))
                .ok_or_else(|| bad_request("after: the `next` of the page before"))
        })
        .transpose()?;
    let filter = db::DisagreementFilter {
        builder: q.builder,
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
        after,
        limit,
    };
    read(db, move |conn| {
        let (found, next) = db::disagreements(conn, &filter)?;
        let mut paths = Vec::with_capacity(found.len());
        for (hash, latest) in found {
            let claims: Vec<ClaimRow> = db::claims_of(conn, &hash)?
                .into_iter()
                .filter(|c| c.void.is_none())
                .collect();
            let distinct = |f: fn(&ClaimRow) -> &String| {
                let set: std::collections::BTreeSet<String> =
                    claims.iter().map(|c| f(c).clone()).collect();
                set.into_iter().collect::<Vec<_>>()
            };
            paths.push(Disagreement {
                store_path: claims
                    .first()
                    .map(|c| c.store_path.clone())
                    .unwrap_or_default(),
                last_logged: u64::try_from(latest).ok().map(rfc3339),
                builders: distinct(|c| &c.builder),
                nar_hashes: distinct(|c| &c.nar_hash),
            });
        }
        Ok(DisagreementsAnswer { paths, next })
    })
    .await
}

#[derive(Default, Deserialize)]
pub struct TimeseriesQuery {
    pub bucket: Option<String>,
    pub builder: Option<String>,
}

async fn timeseries(
    State(db): State<Arc<Db>>,
    Query(q): Query<TimeseriesQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(timeseries_answer(&db, q).await?).into_response())
}

/// A time series' bucket by name, in seconds: `hour` or `day`.
pub fn bucket_seconds(name: &str) -> Option<u64> {
    match name {
        "hour" => Some(3600),
        "day" => Some(86_400),
        _ => None,
    }
}

pub async fn timeseries_answer(
    db: &Arc<Db>,
    q: TimeseriesQuery,
) -> Result<TimeseriesAnswer, ApiError> {
    let bucket = q.bucket.unwrap_or_else(|| "day".into());
    let seconds = bucket_seconds(&bucket).ok_or_else(|| bad_request("bucket: hour or day"))?;
    let rows = read(db, move |conn| {
        db::timeseries(conn, seconds, q.builder.as_deref())
    })
    .await?;
    let buckets = rows
        .into_iter()
        .map(
            |(start, [entries, compared, reproduced, unreproduced])| Bucket {
                start: rfc3339(start),
                entries,
                compared,
                reproduced,
                unreproduced,
            },
        )
        .collect();
    Ok(TimeseriesAnswer { bucket, buckets })
}

#[derive(Deserialize)]
struct ExportQuery {
    builder: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// Every claim matching the filter, one JSON object a line, streamed as the index is read.
async fn export(
    State(db): State<Arc<Db>>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let since = time_param("since", q.since.as_deref())?;
    let until = time_param("until", q.until.as_deref())?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::task::spawn_blocking(move || {
        let result = db.read(|conn| {
            let mut chunk = Vec::with_capacity(64 << 10);
            db::export(conn, q.builder.as_deref(), since, until, |claim| {
                if serde_json::to_writer(&mut chunk, &indexed(claim)).is_err() {
                    return false;
                }
                chunk.push(b'\n');
                if chunk.len() >= 64 << 10 {
                    // The client went away: stop reading.
                    return tx.blocking_send(std::mem::take(&mut chunk)).is_ok();
                }
                true
            })?;
            let _ = tx.blocking_send(chunk);
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!("export: {e}");
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(Bytes::from(chunk)), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/jsonl")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// The followed logs' rows, off the async workers.
async fn logs(db: &Arc<Db>) -> Result<Vec<db::LogRow>, ApiError> {
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || db.logs())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

async fn metrics(State(db): State<Arc<Db>>) -> Result<Response, ApiError> {
    let rows = logs(&db).await?;
    let mut out = String::new();
    metric_header(
        &mut out,
        "reprolog_explorer_verified_entries",
        "gauge",
        "Entries of each followed log verified and indexed.",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "reprolog_explorer_verified_entries{{log=\"{}\"}} {}",
            escape_label(&r.origin),
            r.size
        );
    }
    metric_header(
        &mut out,
        "reprolog_explorer_log_stopped",
        "gauge",
        "1 when following a log stopped (a fork, a rollback, an entry that does not verify).",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "reprolog_explorer_log_stopped{{log=\"{}\"}} {}",
            escape_label(&r.origin),
            u8::from(r.stopped.is_some())
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
