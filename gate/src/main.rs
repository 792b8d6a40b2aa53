//! `reprolog-gate`: a Nix binary cache that serves a store path only when enough builders the
//! user trusts logged the same claim about it in a reprolog log, each claim proven in a
//! checkpoint the log policy trusts, re-signed with the gate's own key so that Nix needs to
//! trust only the gate. Everything that fails denies (404, so Nix builds the path itself).
//!
//! SIGHUP re-reads the trust file (it is also re-read within a second of a change) and clears
//! a fork latch whose `DATA/fork` the operator removed; SIGTERM and Ctrl-C stop it after the
//! requests in flight.

#![forbid(unsafe_code)]

mod checkpoints;
mod decide;
mod failure;
mod gate;
mod http;
mod key;
mod log;
mod metrics;
mod registry;
#[cfg(test)]
mod tests;
mod trust;
mod upstream;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use reprolog_verifier::keyfile;
use reprolog_verifier::policy::Policy;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::checkpoints::Checkpoints;
use crate::gate::Gate;
use crate::log::LogClient;
use crate::metrics::Metrics;
use crate::trust::{Reloaded, TrustFile};
use crate::upstream::Upstream;

#[derive(Parser)]
#[command(
    name = "reprolog-gate",
    version,
    about = "A Nix binary cache that serves only what K of N trusted builders agree on in a reprolog log"
)]
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

/// Logs to stderr at `RUST_LOG` (default `info`). Colour codes only on a terminal.
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

/// How long shutdown waits for requests in flight (NAR streams above all) before it stops
/// anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Subcommand)]
enum Command {
    /// Run the gate. Nix then uses it as a substituter: `substituters = http://127.0.0.1:8402`
    /// and `trusted-public-keys = <DATA/gate.pub>` in nix.conf.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory: the gate's key (gate.sec, gate.pub), the last checkpoint it accepted
    /// (checkpoint) and, after a fork of the log, its evidence (fork).
    #[arg(long, default_value = "reprolog-gate-data")]
    data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8402")]
    listen: SocketAddr,
    /// The log's base URL. Default: the first log URL in the log policy.
    #[arg(long)]
    log: Option<String>,
    /// The C2SP tlog-policy a log checkpoint must satisfy: the log's key, its witnesses and
    /// the quorum (as `reprolog verify --policy` reads it).
    #[arg(long)]
    log_policy: PathBuf,
    /// Whose agreement counts: `builder <label> <nix public key>`, `quorum <K>`,
    /// `on-conflict deny|majority` (spec/gate.md). Re-read when it changes and on SIGHUP.
    #[arg(long)]
    trust: PathBuf,
    /// A binary cache to serve from, `file:///dir` or `http(s)://host`; repeat it for
    /// several, tried in order.
    #[arg(long = "upstream", required = true)]
    upstreams: Vec<String>,
    /// The name of the gate's Nix key, fixed when the key is created.
    #[arg(long)]
    key_name: Option<String>,
    /// `Priority:` in /nix-cache-info (lower is preferred; cache.nixos.org says 40).
    #[arg(long, default_value_t = 40)]
    priority: u32,
    /// How long one request to the log may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    log_timeout_ms: u64,
    /// How long connecting to an upstream, and each read from it, may take, in milliseconds.
    #[arg(long, default_value_t = 30000)]
    upstream_timeout_ms: u64,
    /// How long the log's checkpoint stands before it is asked again, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// How many decisions are cached (a full cache starts again).
    #[arg(long, default_value_t = 100_000)]
    cache_entries: usize,
    /// How many NARs are streamed at once; more wait their turn.
    #[arg(long, default_value_t = 64)]
    max_nar_streams: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
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
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let result = runtime.block_on(serve(args));
            // A NAR stream or a log request still running must not hold the exit.
            runtime.shutdown_timeout(Duration::from_secs(1));
            result
        }
    }
}

fn read_policy(path: &Path) -> Result<Policy> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    anyhow::ensure!(len <= 1 << 20, "{}: over 1 MiB", path.display());
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let policy = Policy::parse(&text).with_context(|| format!("{}", path.display()))?;
    anyhow::ensure!(
        policy.quorum.is_some(),
        "{}: the policy has no quorum line, so no checkpoint could satisfy it (write `quorum \
         none` to trust the log's signature alone)",
        path.display()
    );
    Ok(policy)
}

async fn serve(args: ServeArgs) -> Result<()> {
    keyfile::prepare_data_dir(&args.data)?;
    let _lock = keyfile::lock_data_dir(&args.data, "reprolog-gate")?;
    // Listening before the address is printed: a signal sent as soon as the gate is up must
    // reload or stop it, not kill it.
    let hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let stop_signals = (
        signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        signal(SignalKind::interrupt()).context("listening for SIGINT")?,
    );
    let trust = TrustFile::load(&args.trust)?;
    let policy = read_policy(&args.log_policy)?;
    let log_url = match &args.log {
        Some(u) => u.clone(),
        None => policy
            .logs
            .iter()
            .find_map(|l| l.url.clone())
            .context("no --log given and no log URL in the log policy")?,
    };
    let log = Arc::new(LogClient::new(
        &log_url,
        Duration::from_millis(args.log_timeout_ms),
    )?);
    let upstream_timeout = Duration::from_millis(args.upstream_timeout_ms);
    let upstreams = args
        .upstreams
        .iter()
        .map(|u| Upstream::parse(u, upstream_timeout))
        .collect::<Result<Vec<_>>>()?;
    let (key, created) = key::load_or_create(&args.data, args.key_name.as_deref())?;
    let metrics = Arc::new(Metrics::new(upstreams.iter().map(|u| u.url().to_owned())));
    let checkpoints = Arc::new(Checkpoints::open(
        &args.data,
        policy,
        Arc::clone(&log),
        Arc::clone(&metrics),
        Duration::from_millis(args.checkpoint_interval_ms),
    )?);
    let trust_summary = trust.current().summary();
    let gate = Arc::new(Gate::new(
        key,
        trust,
        Arc::clone(&log),
        Arc::clone(&checkpoints),
        upstreams,
        Arc::clone(&metrics),
        args.priority,
        args.cache_entries,
        args.max_nar_streams,
    ));

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("reprolog-gate {}", env!("CARGO_PKG_VERSION"));
    println!("url:          http://{addr}/");
    println!("public key:   {}", gate.key.public_key());
    println!(
        "data:         {}{}",
        args.data.display(),
        if created { " (new key)" } else { "" }
    );
    println!("log:          {}", log.base_url());
    println!("trust:        {} ({trust_summary})", args.trust.display());
    for u in &gate.upstreams {
        println!("upstream:     {}", u.url());
    }
    if let Some(fork) = checkpoints.forked() {
        tracing::error!(
            "FORK latched before this start: {fork}. Every request is denied until an operator \
             investigates and removes {}",
            checkpoints.fork_path().display()
        );
    }
    match checkpoints.accepted_size() {
        Some(size) => tracing::info!("the last checkpoint accepted has size {size}"),
        None => tracing::info!("no checkpoint accepted yet: the log's next one is taken as it is"),
    }
    tokio::spawn(watch(Arc::clone(&gate), hangup));
    // Ask the log at once, so that its state is in the log before the first request.
    let first = Arc::clone(&checkpoints);
    tokio::spawn(async move {
        if let Ok(a) = first.current().await {
            tracing::info!("checkpoint of size {} accepted", a.checkpoint.size);
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stopped(stop_signals).await;
        let _ = stop_tx.send(true);
    });
    let stopping = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serving = axum::serve(listener, http::router(Arc::clone(&gate)))
        .with_graceful_shutdown(stopping(stop_rx.clone()));
    let drain_limit = async {
        stopping(stop_rx.clone()).await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        served = std::future::IntoFuture::into_future(serving) => served?,
        () = drain_limit => tracing::warn!(
            "requests still open after {} s; stopping without them",
            DRAIN_LIMIT.as_secs()
        ),
    }
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

/// Every second and at SIGHUP: re-reads the trust file if it changed (at SIGHUP, always),
/// and clears a fork latch whose `DATA/fork` the operator removed.
async fn watch(gate: Arc<Gate>, mut hup: Signal) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let hangup = tokio::select! {
            _ = hup.recv() => true,
            _ = tick.tick() => false,
        };
        let g = Arc::clone(&gate);
        let reloaded = tokio::task::spawn_blocking(move || {
            let trust = if hangup {
                Some(g.trust.reload())
            } else {
                g.trust.reload_if_changed()
            };
            (trust, g.checkpoints.unlatch_if_cleared())
        })
        .await;
        let Ok((trust, unlatched)) = reloaded else {
            continue;
        };
        let path = gate.trust.path().display();
        match trust {
            Some(Ok(Reloaded::Changed)) => {
                gate.metrics.trust_reloads.fetch_add(1, Relaxed);
                tracing::info!(
                    "trust reloaded from {path}: {}; decisions are made again under it",
                    gate.trust.current().summary()
                );
            }
            Some(Ok(Reloaded::Same)) if hangup => {
                tracing::info!("trust file {path} re-read: unchanged")
            }
            Some(Err(e)) => {
                gate.metrics.trust_reload_failures.fetch_add(1, Relaxed);
                tracing::error!(
                    "trust file not reloaded; the last good trust stays in force ({}): {e:#}",
                    gate.trust.current().summary()
                );
            }
            _ => {}
        }
        match unlatched {
            Some(Ok(message)) => tracing::warn!("{message}"),
            Some(Err(e)) => tracing::error!("the fork latch stays: {e:#}"),
            None => {}
        }
    }
}
