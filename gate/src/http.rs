//! The gate's HTTP side: the Nix binary cache protocol (`/nix-cache-info`,
//! `/<hash>.narinfo`, `/nar/…`), the decisions API and `/metrics`.

use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

use crate::decide::STORE_DIR;
use crate::gate::{DecisionAnswer, Gate, NoDecision};
use crate::upstream::{safe_relative, Fetched};

/// The header that says why a narinfo was denied.
pub const REASON_HEADER: &str = "x-reprolog-reason";
/// NAR bytes are read from an upstream and handed to the connection in chunks of this size,
/// at most [`NAR_CHUNKS_QUEUED`] ahead of the client: a stream holds at most about 4 MiB,
/// whatever the NAR's size. (1 MiB chunks stream about 10% faster than 256 KiB ones: fewer
/// system calls and wake-ups; docs/benchmarks.md.)
const NAR_CHUNK: usize = 1 << 20;
const NAR_CHUNKS_QUEUED: usize = 2;

pub fn router(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/nix-cache-info", get(cache_info))
        .route("/{file}", get(narinfo))
        .route("/nar/{upstream}/{*rest}", get(nar))
        .route("/api/v1/decisions/{hash}", get(decision))
        .route("/metrics", get(metrics))
        .with_state(gate)
}

async fn cache_info(State(gate): State<Arc<Gate>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/x-nix-cache-info")],
        format!(
            "StoreDir: {STORE_DIR}\nWantMassQuery: 1\nPriority: {}\n",
            gate.priority
        ),
    )
        .into_response()
}

/// A header value from any text: visible ASCII only, at most 1,000 bytes.
fn header_value(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(1000)
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("denied"))
}

fn not_found(reason: &str) -> Response {
    let mut r = (StatusCode::NOT_FOUND, format!("{reason}\n")).into_response();
    r.headers_mut().insert(REASON_HEADER, header_value(reason));
    r
}

async fn narinfo(State(gate): State<Arc<Gate>>, Path(file): Path<String>) -> Response {
    let Some(hash) = file.strip_suffix(".narinfo") else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let start = Instant::now();
    let (answer, hit) = gate.narinfo(hash).await;
    let response = match answer {
        Ok(text) => {
            gate.metrics.narinfo_answered("agreed");
            (
                [(header::CONTENT_TYPE, "text/x-nix-narinfo")],
                text.as_str().to_owned(),
            )
                .into_response()
        }
        Err(denied) => {
            gate.metrics.narinfo_answered(denied.label());
            // Logged at INFO or above where it arose: a decision when it is made, a failure
            // of a path when it happens, the log's state (unreachable, forked) when it
            // changes; each 404 only at DEBUG, so that a closure copy cannot flood the log.
            let reason = denied.reason();
            tracing::debug!("{hash}.narinfo: 404: {reason}");
            not_found(&reason)
        }
    };
    let histogram = if hit {
        &gate.metrics.narinfo_seconds_hit
    } else {
        &gate.metrics.narinfo_seconds_miss
    };
    histogram.observe_duration(start.elapsed());
    response
}

async fn decision(State(gate): State<Arc<Gate>>, Path(hash): Path<String>) -> Response {
    // A base name (`<hash>-<name>`) names its hash part too.
    let hash_part = hash
        .get(..32)
        .filter(|_| hash.len() == 32 || hash.as_bytes()[32] == b'-');
    let hash_part = hash_part.unwrap_or(&hash);
    match gate.decided(hash_part).await {
        Ok((d, _)) => Json(DecisionAnswer {
            decision: d.decision.clone(),
            checkpoint_size: d.checkpoint_size,
        })
        .into_response(),
        Err(f) => {
            let status = match f {
                crate::failure::Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let body = NoDecision {
                store_path: format!(
                    "{STORE_DIR}/{}",
                    reprolog_verifier::text::printable(hash_part)
                ),
                allowed: false,
                reason: f.label().replace('_', "-"),
                error: f.to_string(),
            };
            (status, Json(body)).into_response()
        }
    }
}

async fn metrics(State(gate): State<Arc<Gate>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gate.metrics.render(),
    )
        .into_response()
}

/// A NAR (or any plain file) of upstream number `upstream`, streamed as the upstream serves
/// it: the compression passes through unchanged, and Nix checks the bytes against the
/// narinfo the gate signed.
async fn nar(
    State(gate): State<Arc<Gate>>,
    Path((upstream, rest)): Path<(String, String)>,
) -> Response {
    let Some(index) = upstream
        .parse::<usize>()
        .ok()
        .filter(|i| *i < gate.upstreams.len())
    else {
        return (StatusCode::NOT_FOUND, "no such upstream\n").into_response();
    };
    if !safe_relative(&rest) {
        return (StatusCode::NOT_FOUND, "not a file of the cache\n").into_response();
    }
    let Ok(permit) = Arc::clone(&gate.nar_streams).acquire_owned().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    };
    let opener = Arc::clone(&gate);
    let opened = tokio::task::spawn_blocking(move || opener.upstreams[index].open(&rest)).await;
    let (reader, len) = match opened {
        Ok(Ok(Fetched::Found(found))) => found,
        Ok(Ok(Fetched::NotFound)) => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Ok(Err(e)) => {
            gate.metrics.upstreams[index].1.errors.fetch_add(1, Relaxed);
            tracing::warn!("NAR from {}: {e}", gate.upstreams[index].url());
            return (StatusCode::BAD_GATEWAY, "the upstream failed\n").into_response();
        }
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
        }
    };
    gate.metrics.nar_requests.fetch_add(1, Relaxed);
    let (tx, rx) = mpsc::channel(NAR_CHUNKS_QUEUED);
    let streamer = Arc::clone(&gate);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let m = &streamer.metrics;
        m.nar_in_flight.fetch_add(1, Relaxed);
        pump(reader, &tx, &m.nar_bytes);
        m.nar_in_flight.fetch_sub(1, Relaxed);
    });
    let mut response = Response::new(Body::new(ChannelBody { rx, len }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-nix-nar"),
    );
    response
}

/// Copies `reader` into the channel chunk by chunk until it ends, fails or the client goes.
fn pump(
    mut reader: Box<dyn Read + Send>,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    bytes: &std::sync::atomic::AtomicU64,
) {
    loop {
        let mut chunk = Vec::with_capacity(NAR_CHUNK);
        match (&mut reader).take(NAR_CHUNK as u64).read_to_end(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                    return; // the client went away
                }
                bytes.fetch_add(n as u64, Relaxed);
            }
            Err(e) => {
                tracing::warn!("a NAR stream broke off: {e}");
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// A response body fed by a bounded channel.
struct ChannelBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    len: Option<u64>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
