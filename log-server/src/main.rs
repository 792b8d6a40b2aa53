//! `reprolog-server`: the reprolog log server.
//!
//! It takes signed narinfos from registered builders, appends each signing event to a Merkle
//! log in its embedded store, and publishes C2SP checkpoints, tiles, proofs and lookups over HTTP.

#![forbid(unsafe_code)]

mod api;
mod builders;
mod keys;
mod metrics;
mod publisher;
mod registry;
mod sequencer;
mod storage;
mod submission;
mod witnessing;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use reprolog_verifier::note::SignerKey;
use reprolog_verifier::policy::Policy;

use crate::builders::Builders;
use crate::storage::embedded::EmbeddedStore;
use crate::storage::LogStore;
use crate::witnessing::Witnesses;

#[derive(Parser)]
#[command(
    name = "reprolog-server",
    version,
    about = "The reprolog transparency log server"
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

/// How long shutdown waits for requests in flight before it stops anyway. Acknowledged
/// entries are durable whenever it stops; waiting only lets answers reach their clients.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Subcommand)]
enum Command {
    /// Run the log server. With no options it keeps its data in ./reprolog-data and listens
    /// on 127.0.0.1:8400.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory: the log key, the builders file and the store.
    #[arg(long, default_value = "reprolog-data")]
    data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8400")]
    listen: SocketAddr,
    /// The log's origin, fixed on first start (the log key's name). Default:
    /// localhost/reprolog-<random>.
    #[arg(long)]
    origin: Option<String>,
    /// Registered builder keys. Default: DATA/builders.
    #[arg(long)]
    builders: Option<PathBuf>,
    /// The largest submission body, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// How long the tree may grow before a new checkpoint is signed, in milliseconds.
    #[arg(long, default_value_t = 250)]
    checkpoint_interval_ms: u64,
    /// sled's page cache, in MiB. sled holds only the size, the checkpoint and builder
    /// counts; entries, tree nodes and the hash indexes are files served by the page cache.
    #[arg(long, default_value_t = 16)]
    cache_mb: u64,
    /// Witnesses to ask for cosignatures: `witness <name> <verifier key> <url>` lines, and
    /// optionally `group` and `quorum` lines, in C2SP tlog-policy syntax.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// How long one witness call may take, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    witness_timeout_ms: u64,
    /// Publish a checkpoint only once the policy's quorum of witnesses cosigned it. Without
    /// this a checkpoint is published with whatever cosignatures arrived in time.
    #[arg(long)]
    wait_for_quorum: bool,
    /// While no entry arrives, how often witnesses that have not cosigned the latest
    /// checkpoint are asked again, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    witness_retry_ms: u64,
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
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let result = runtime.block_on(serve(args));
            // A witness call or a page read still running must not hold the exit.
            runtime.shutdown_timeout(Duration::from_secs(1));
            result
        }
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    reprolog_verifier::keyfile::prepare_data_dir(&args.data)?;
    // Before anything in the directory is read or written, the store above all.
    let _lock = reprolog_verifier::keyfile::lock_data_dir(&args.data, "reprolog-server")?;
    // Listening now, before the address is printed: a signal sent as soon as the server is
    // up must stop it cleanly, not kill it.
    let stop_signals = (
        signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        signal(SignalKind::interrupt()).context("listening for SIGINT")?,
    );
    let hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let (key, created) = keys::load_or_create(&args.data, args.origin.as_deref())?;
    let builders_path = args.builders.unwrap_or_else(|| args.data.join("builders"));
    let builders = Arc::new(Builders::load(&builders_path)?);
    let store = Arc::new(EmbeddedStore::open(
        &args.data.join("store"),
        args.cache_mb << 20,
    )?);
    let metrics = Arc::new(metrics::Metrics::default());
    let witnesses = match &args.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let policy = Policy::parse(&text).with_context(|| format!("{}", path.display()))?;
            Some(Arc::new(Witnesses::new(
                policy,
                &key.verifier_key(),
                Duration::from_millis(args.witness_timeout_ms),
                args.wait_for_quorum,
                Arc::clone(&metrics),
            )))
        }
        None => None,
    };

    let published = {
        let (store, key) = (Arc::clone(&store), key.clone());
        tokio::task::spawn_blocking(move || publisher::resume(&*store, &key)).await??
    };
    let size = store.size()?;
    metrics
        .tree_size
        .store(size, std::sync::atomic::Ordering::Relaxed);
    metrics.checkpoint_size.store(
        published.checkpoint.size,
        std::sync::atomic::Ordering::Relaxed,
    );
    let published = Arc::new(RwLock::new(Arc::new(published)));
    let (size_tx, size_rx) = watch::channel(size);
    let registry = {
        let (store, key) = (Arc::clone(&store), key.clone());
        tokio::task::spawn_blocking(move || registry::replay(&*store, &key))
            .await?
            .context("replaying the log's key events")?
    };
    let registry = Arc::new(registry::SharedRegistry::new(registry));
    let sequencer = sequencer::start(
        Arc::clone(&store),
        Arc::clone(&metrics),
        size_tx,
        Arc::clone(&registry),
    );
    // The builders file is in the log before the first submission is taken.
    let changed = registry::sync_builders_file(
        &builders.current(),
        &registry,
        &key,
        store.size()?,
        &sequencer,
    )
    .await?;
    if changed > 0 {
        tracing::info!("logged {changed} key events from the builders file");
    }
    let (finish_tx, finish_rx) = watch::channel(false);
    let publisher = tokio::spawn(publisher::run(
        Arc::clone(&store),
        size_rx,
        Arc::clone(&published),
        Arc::clone(&metrics),
        publisher::Settings {
            key: key.clone(),
            witnesses: witnesses.clone(),
            interval: Duration::from_millis(args.checkpoint_interval_ms),
            retry: Duration::from_millis(args.witness_retry_ms),
        },
        finish_rx,
    ));
    tokio::spawn(watch_builders(
        BuildersSync {
            builders: Arc::clone(&builders),
            registry: Arc::clone(&registry),
            key: key.clone(),
            store: Arc::clone(&store),
            sequencer: sequencer.clone(),
        },
        hangup,
    ));

    let state = Arc::new(api::AppState {
        store: Arc::clone(&store),
        registry: Arc::clone(&registry),
        published,
        sequencer,
        metrics: Arc::clone(&metrics),
        verifiers: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
        large_reads: Arc::new(tokio::sync::Semaphore::new(api::CONCURRENT_LARGE_READS)),
        path_reads: Arc::new(tokio::sync::Semaphore::new(api::CONCURRENT_PATH_READS)),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("reprolog-server {}", env!("CARGO_PKG_VERSION"));
    println!("origin:       {}", key.name());
    println!("url:          http://{addr}/");
    println!("verifier key: {}", key.verifier_key());
    println!(
        "data:         {}{}",
        args.data.display(),
        if created { " (new log)" } else { "" }
    );
    println!(
        "builders:     {} ({} keys may sign)",
        builders_path.display(),
        registry.current().active_keys().len()
    );
    println!("entries:      {size}");
    if let Some(w) = &witnesses {
        println!("witnesses:    {}", w.len());
    }

    // On SIGTERM or Ctrl-C: stop accepting connections, let the requests in flight finish
    // (a submission is answered only once durable), then publish a last checkpoint.
    // The stop carries how many submissions were answered before it, so that the drain
    // counts only those answered after, whichever future notices the stop first.
    let (stop_tx, stop_rx) = watch::channel(None::<u64>);
    let counts = Arc::clone(&metrics);
    tokio::spawn(async move {
        stopped(stop_signals).await;
        let answered = counts.submissions.load(Relaxed);
        tracing::info!(
            "stopping: no new connections; waiting for {} submissions in flight",
            counts.submissions_in_flight.load(Relaxed)
        );
        let _ = stop_tx.send(Some(answered));
    });
    let stopping = |mut rx: watch::Receiver<Option<u64>>| async move {
        let _ = rx.wait_for(Option::is_some).await;
    };
    let serving = axum::serve(listener, api::router(state, args.max_body_bytes))
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
    let answered_before = stop_rx.borrow().unwrap_or(0);
    let drained = metrics
        .submissions
        .load(Relaxed)
        .saturating_sub(answered_before);
    let _ = finish_tx.send(true);
    let checkpoint = match tokio::time::timeout(DRAIN_LIMIT, publisher).await {
        Ok(Ok(size)) => size,
        Ok(Err(e)) => bail!("the checkpoint task failed: {e}"),
        Err(_) => bail!("no last checkpoint within {} s", DRAIN_LIMIT.as_secs()),
    };
    let durable = store.size()?;
    tracing::info!(
        "drained {drained} submissions; the log is durable at size {durable}, and its latest \
         checkpoint is at size {checkpoint}"
    );
    Ok(())
}

/// Resolves at the first SIGTERM or SIGINT.
async fn stopped((mut term, mut int): (Signal, Signal)) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// What bringing the log's registry in line with the builders file needs.
struct BuildersSync {
    builders: Arc<Builders>,
    registry: Arc<registry::SharedRegistry>,
    key: SignerKey,
    store: Arc<EmbeddedStore>,
    sequencer: tokio::sync::mpsc::Sender<sequencer::Submission>,
}

/// Reloads the builders file when it changes, and on SIGHUP, and logs the key events that
/// its changes make.
async fn watch_builders(sync: BuildersSync, mut hup: Signal) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let result = tokio::select! {
            _ = hup.recv() => Some(sync.builders.reload()),
            _ = tick.tick() => sync.builders.reload_if_changed(),
        };
        match result {
            Some(Ok(n)) => {
                tracing::info!("builders reloaded: {n} keys listed");
                let logged = match sync.store.size() {
                    Ok(size) => {
                        registry::sync_builders_file(
                            &sync.builders.current(),
                            &sync.registry,
                            &sync.key,
                            size,
                            &sync.sequencer,
                        )
                        .await
                    }
                    Err(e) => Err(e.into()),
                };
                match logged {
                    Ok(n) => tracing::info!("logged {n} key events from the builders file"),
                    Err(e) => tracing::error!("logging the builders file's changes: {e:#}"),
                }
            }
            Some(Err(e)) => tracing::error!("builders not reloaded, keeping the old list: {e:#}"),
            None => {}
        }
    }
}
