//! `reprolog-witness`: a C2SP tlog-witness (<https://c2sp.org/tlog-witness>).
//!
//! It cosigns a log's checkpoint only when the log's signature verifies and the checkpoint is
//! consistent with the last one it cosigned for that origin, and it remembers that checkpoint
//! across restarts. It witnesses any C2SP log listed in its policy file, not only reprolog.
//! SIGHUP reads the policy file again; SIGTERM and Ctrl-C stop it after the requests in
//! flight.

#![forbid(unsafe_code)]

mod metrics;
mod state;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::{Parser, Subcommand};
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::keyfile;
use reprolog_verifier::locks;
use reprolog_verifier::merkle;
use reprolog_verifier::note::{Note, NoteError, SignerKey, VerifierKey};
use reprolog_verifier::policy::Policy;
use reprolog_verifier::witness_request::AddCheckpoint;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::metrics::{Metrics, Refusal};
use crate::state::{Latest, State};

/// An add-checkpoint body is a checkpoint with its signatures and at most 63 proof lines.
const MAX_BODY_BYTES: usize = 64 << 10;
/// The spec's limit on consistency proof lines.
const MAX_PROOF_LINES: usize = 63;

#[derive(Parser)]
#[command(name = "reprolog-witness", version, about = "A C2SP tlog-witness")]
struct Cli {
    /// How the log on stderr is written: `text` (colours only on a terminal) or `json`, one
    /// object a line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr at `RUST_LOG` (default `info`). Colour codes only on a terminal: in a file
/// or a journal they are noise that breaks grep.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => log.json().flatten_event(true).with_ansi(false).init(),
    }
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
    /// Default: DATA/policy. Read again on SIGHUP.
    #[arg(long)]
    policy: Option<PathBuf>,
}

struct Witness {
    key: SignerKey,
    /// The logs of the policy in force, replaced as a whole on SIGHUP.
    logs: RwLock<Arc<Vec<VerifierKey>>>,
    state: State,
    metrics: Metrics,
}

impl Witness {
    /// The logs of the policy in force. A poisoned lock stops the witness (see
    /// [`reprolog_verifier::locks`]) rather than answer "unknown log" to every request.
    fn logs(&self) -> Arc<Vec<VerifierKey>> {
        Arc::clone(&locks::read(&self.logs))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with its causes, as the CLI says it, never a backtrace; and in JSON
            // when the log is JSON, so that every line of it parses.
            match cli.log_format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                LogFormat::Json => tracing::error!("{e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(args)),
    }
}

/// The logs a policy file lists.
fn read_policy(path: &FsPath) -> Result<Vec<VerifierKey>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let policy = Policy::parse(&text).with_context(|| format!("{}", path.display()))?;
    Ok(policy.logs.into_iter().map(|l| l.key).collect())
}

async fn serve(args: ServeArgs) -> Result<()> {
    keyfile::prepare_data_dir(&args.data)?;
    // Before the key or sled's state is touched.
    let _lock = keyfile::lock_data_dir(&args.data, "reprolog-witness")?;
    // Listening now, before the address is printed: a SIGHUP sent as soon as the witness is
    // up must reload the policy, not kill the process.
    let hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let stop_signals = (
        signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        signal(SignalKind::interrupt()).context("listening for SIGINT")?,
    );
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
    let logs = read_policy(&policy_path)?;
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
    let witness = Arc::new(Witness {
        key,
        logs: RwLock::new(Arc::new(logs)),
        state,
        metrics: Metrics::default(),
    });
    tokio::spawn(reload_policy_on_hangup(
        Arc::clone(&witness),
        policy_path,
        hangup,
    ));
    let app = Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/metrics", get(metrics))
        .route("/{origin_hash}/checkpoint", get(latest_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(witness);
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped(stop_signals))
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves at the first SIGTERM or SIGINT.
async fn stopped((mut term, mut int): (Signal, Signal)) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; stopping after the requests in flight"),
        _ = int.recv() => tracing::info!("SIGINT received; stopping after the requests in flight"),
    }
}

/// Reads the policy again at each SIGHUP. A file that does not parse is reported, once per
/// signal, and the policy in force stays: a typo must not stop the witness cosigning.
async fn reload_policy_on_hangup(w: Arc<Witness>, path: PathBuf, mut hangup: Signal) {
    while hangup.recv().await.is_some() {
        match read_policy(&path) {
            Ok(logs) => {
                let n = logs.len();
                *locks::write(&w.logs) = Arc::new(logs);
                w.metrics.reloads.fetch_add(1, Relaxed);
                tracing::info!("policy reloaded from {}: {n} logs", path.display());
            }
            Err(e) => {
                w.metrics.reloads_failed.fetch_add(1, Relaxed);
                tracing::error!(
                    "policy not reloaded, the {} logs before stay in force: {e:#}",
                    w.logs().len()
                );
            }
        }
    }
}

async fn metrics(AxumState(w): AxumState<Arc<Witness>>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        let logs: Vec<(String, Option<u64>)> = w
            .logs()
            .iter()
            .map(|k| {
                let held = w.state.latest(k.name()).ok().flatten().map(|l| l.size);
                (k.name().to_owned(), held)
            })
            .collect();
        w.metrics.render(&logs)
    })
    .await;
    match text {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
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

/// Marks a 409 answer that is a fork, for the metrics.
#[derive(Clone, Copy)]
struct Forked;

async fn add_checkpoint(
    AxumState(w): AxumState<Arc<Witness>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    w.metrics.requests.fetch_add(1, Relaxed);
    let response = match body {
        Ok(body) => {
            let checking = Arc::clone(&w);
            match tokio::task::spawn_blocking(move || check_and_cosign(&checking, &body)).await {
                Ok(r) => r,
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Err(rejection) => rejection.into_response(),
    };
    match Refusal::of(response.status()) {
        None => w.metrics.accepted.fetch_add(1, Relaxed),
        Some(_) if response.extensions().get::<Forked>().is_some() => {
            w.metrics.refused(Refusal::Fork);
            0
        }
        Some(why) => {
            w.metrics.refused(why);
            0
        }
    };
    response
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
        .logs()
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
            // The checkpoint it already holds, sent again: its cosignature, with no write. Only
            // for the very same text: the same tree with other extension lines is another
            // checkpoint, which the stored cosignature does not sign; it is cosigned below.
            if req.old_size == checkpoint.size && latest.root == checkpoint.root {
                if let Some(line) = own_cosignature(w, latest, note.text()) {
                    return plain(StatusCode::OK, line);
                }
            }
            if req.old_size == checkpoint.size && latest.root != checkpoint.root {
                tracing::warn!(
                    "fork: {} at size {} has two roots",
                    checkpoint.origin,
                    checkpoint.size
                );
                let mut answer = conflict(held);
                answer.extensions_mut().insert(Forked);
                return answer;
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
        let cosignature = w.key.cosign(note.text(), now);
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
            Ok(Ok(())) => {
                w.metrics.cosigned(&checkpoint.origin);
                return plain(StatusCode::OK, cosignature.to_line());
            }
            // Another request moved the state first: judge this one against the new state.
            Ok(Err(current)) => expected = current,
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// This witness's cosignature line in the checkpoint it holds, if that checkpoint's text is
/// `text`.
fn own_cosignature(w: &Witness, latest: &Latest, text: &str) -> Option<String> {
    let vkey = w.key.cosignature_verifier_key();
    let held = Note::parse(latest.note.as_bytes()).ok()?;
    if held.text() != text {
        return None;
    }
    held.signatures()
        .iter()
        .find(|s| s.name == vkey.name() && s.key_id == vkey.key_id())
        .map(|s| s.to_line())
}

async fn latest_checkpoint(
    AxumState(w): AxumState<Arc<Witness>>,
    Path(origin_hash): Path<String>,
) -> Response {
    for key in w.logs().iter() {
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
