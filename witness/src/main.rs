//! `reprolog-witness`: a C2SP tlog-witness (<https://c2sp.org/tlog-witness>).
//!
//! It cosigns a log's checkpoint only when the log's signature verifies and the checkpoint is
//! consistent with the last one it cosigned for that origin, and it remembers that checkpoint
//! across restarts. It witnesses any C2SP log listed in its policy file, not only reprolog.

#![forbid(unsafe_code)]

mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::{Parser, Subcommand};
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::cosignature::cosign;
use reprolog_verifier::keyfile;
use reprolog_verifier::merkle;
use reprolog_verifier::note::{Note, NoteError, SignerKey, VerifierKey};
use reprolog_verifier::policy::Policy;
use reprolog_verifier::witness_request::AddCheckpoint;
use sha2::{Digest, Sha256};

use crate::state::{Latest, State};

/// An add-checkpoint body is a checkpoint with its signatures and at most 63 proof lines.
const MAX_BODY_BYTES: usize = 64 << 10;
/// The spec's limit on consistency proof lines.
const MAX_PROOF_LINES: usize = 63;

#[derive(Parser)]
#[command(name = "reprolog-witness", version, about = "A C2SP tlog-witness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the witness.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory: the witness key and its state.
    #[arg(long, default_value = "reprolog-witness-data")]
    data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8401")]
    listen: SocketAddr,
    /// The witness's name, fixed at first start (its key's name).
    #[arg(long)]
    name: Option<String>,
    /// The logs to witness: `log <verifier key> [url]` lines in C2SP tlog-policy syntax.
    /// Default: DATA/policy.
    #[arg(long)]
    policy: Option<PathBuf>,
}

struct Witness {
    key: SignerKey,
    logs: Vec<VerifierKey>,
    state: State,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(args)),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    keyfile::prepare_data_dir(&args.data)?;
    let (key, created) =
        keyfile::load_or_create(&args.data.join("witness.key"), args.name.as_deref(), || {
            keyfile::random_name("localhost/reprolog-witness-")
        })?;
    let vkey = key.cosignature_verifier_key();
    keyfile::replace_public(&args.data.join("witness.vkey"), &format!("{vkey}\n"))?;
    let policy_path = args.policy.unwrap_or_else(|| args.data.join("policy"));
    if !policy_path.exists() {
        keyfile::write_new(
            &policy_path,
            "# Logs this witness cosigns: `log <verifier key> [url]` (C2SP tlog-policy).\n",
            0o644,
        )?;
    }
    let policy_text = std::fs::read_to_string(&policy_path)
        .with_context(|| format!("reading {}", policy_path.display()))?;
    let policy =
        Policy::parse(&policy_text).with_context(|| format!("{}", policy_path.display()))?;
    let logs: Vec<VerifierKey> = policy.logs.into_iter().map(|l| l.key).collect();
    let state = State::open(&args.data.join("state"))?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!("reprolog-witness {}", env!("CARGO_PKG_VERSION"));
    println!("name:         {}", key.name());
    println!("url:          http://{}/", listener.local_addr()?);
    println!("verifier key: {vkey}");
    println!(
        "data:         {}{}",
        args.data.display(),
        if created { " (new witness)" } else { "" }
    );
    println!(
        "logs:         {} from {}",
        logs.len(),
        policy_path.display()
    );
    let witness = Arc::new(Witness { key, logs, state });
    let app = Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/{origin_hash}/checkpoint", get(latest_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(witness);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// 409 with the size the witness holds, as `text/x.tlog.size`.
fn conflict(size: u64) -> Response {
    (
        StatusCode::CONFLICT,
        [(header::CONTENT_TYPE, "text/x.tlog.size")],
        format!("{size}\n"),
    )
        .into_response()
}

async fn add_checkpoint(AxumState(w): AxumState<Arc<Witness>>, body: Bytes) -> Response {
    match tokio::task::spawn_blocking(move || check_and_cosign(&w, &body)).await {
        Ok(r) => r,
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Every check of tlog-witness's add-checkpoint, in the order the spec gives them.
fn check_and_cosign(w: &Witness, body: &[u8]) -> Response {
    let req = match AddCheckpoint::parse(body) {
        Ok(r) if r.proof.len() <= MAX_PROOF_LINES => r,
        Ok(_) => return plain(StatusCode::BAD_REQUEST, "more than 63 proof lines"),
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let note = match Note::parse(req.checkpoint.as_bytes()) {
        Ok(n) => n,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("checkpoint note: {e}")),
    };
    let checkpoint = match Checkpoint::parse(note.text()) {
        Ok(c) => c,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("checkpoint: {e}")),
    };
    let log_keys: Vec<VerifierKey> = w
        .logs
        .iter()
        .filter(|k| k.name() == checkpoint.origin)
        .cloned()
        .collect();
    if log_keys.is_empty() {
        return plain(
            StatusCode::NOT_FOUND,
            format!("unknown log {}", checkpoint.origin),
        );
    }
    let log_signed = match note.verify(&log_keys) {
        Ok(verified) => verified,
        Err(e) => {
            let why = match e {
                NoteError::NoKnownSignature => "no signature by the log's key".to_owned(),
                other => other.to_string(),
            };
            return plain(StatusCode::FORBIDDEN, why);
        }
    };
    if req.old_size > checkpoint.size {
        return plain(
            StatusCode::BAD_REQUEST,
            "old size is larger than the checkpoint size",
        );
    }
    let mut expected = match w.state.latest(&checkpoint.origin) {
        Ok(l) => l,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    loop {
        let held = expected.as_ref().map_or(0, |l| l.size);
        if req.old_size != held {
            return conflict(held);
        }
        if let Some(latest) = &expected {
            // The checkpoint it already holds, sent again: its cosignature, with no write.
            if req.old_size == checkpoint.size && latest.root == checkpoint.root {
                if let Some(line) = own_cosignature(w, latest) {
                    return plain(StatusCode::OK, line);
                }
            }
            if req.old_size == checkpoint.size && latest.root != checkpoint.root {
                tracing::warn!(
                    "fork: {} at size {} has two roots",
                    checkpoint.origin,
                    checkpoint.size
                );
                return conflict(held);
            }
        }
        if req.old_size == 0 && !req.proof.is_empty() {
            return plain(
                StatusCode::BAD_REQUEST,
                "the proof must be empty from size 0",
            );
        }
        if let Some(latest) = &expected {
            if let Err(e) = merkle::verify_consistency(
                &req.proof,
                latest.size,
                checkpoint.size,
                &latest.root,
                &checkpoint.root,
            ) {
                tracing::warn!(
                    "{}: no consistency from {} to {}: {e}",
                    checkpoint.origin,
                    latest.size,
                    checkpoint.size
                );
                return plain(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("consistency proof: {e}"),
                );
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cosignature = cosign(&w.key, note.text(), now);
        // Kept and served: the log's signature that verified and this cosignature, nothing
        // else the request carried.
        let Ok(mut cosigned) = Note::new(note.text()) else {
            return plain(StatusCode::BAD_REQUEST, "checkpoint text is not a note");
        };
        for v in &log_signed {
            if let Some(sig) = note
                .signatures()
                .iter()
                .find(|s| s.name == v.key.name() && s.key_id == v.key.key_id())
            {
                cosigned.add_signature(sig.clone());
            }
        }
        cosigned.add_signature(cosignature.clone());
        let new = Latest {
            size: checkpoint.size,
            root: checkpoint.root,
            note: cosigned.encode(),
        };
        match w.state.advance(&checkpoint.origin, expected.as_ref(), &new) {
            Ok(Ok(())) => return plain(StatusCode::OK, cosignature.to_line()),
            // Another request moved the state first: judge this one against the new state.
            Ok(Err(current)) => expected = current,
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// This witness's cosignature line in the checkpoint it holds.
fn own_cosignature(w: &Witness, latest: &Latest) -> Option<String> {
    let vkey = w.key.cosignature_verifier_key();
    Note::parse(latest.note.as_bytes())
        .ok()?
        .signatures()
        .iter()
        .find(|s| s.name == vkey.name() && s.key_id == vkey.key_id())
        .map(|s| s.to_line())
}

async fn latest_checkpoint(
    AxumState(w): AxumState<Arc<Witness>>,
    Path(origin_hash): Path<String>,
) -> Response {
    for key in &w.logs {
        let hash = Sha256::digest(key.name().as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        if hex == origin_hash {
            return match w.state.latest(key.name()) {
                Ok(Some(l)) => plain(StatusCode::OK, l.note),
                Ok(None) => plain(StatusCode::NOT_FOUND, "no checkpoint cosigned yet"),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            };
        }
    }
    plain(StatusCode::NOT_FOUND, "unknown log")
}
