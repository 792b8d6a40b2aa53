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
mod sequencer;
mod storage;
mod witnessing;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

use reprolog_verifier::policy::Policy;

use crate::builders::Builders;
use crate::storage::{EmbeddedStore, LogStore};
use crate::witnessing::Witnesses;

#[derive(Parser)]
#[command(
    name = "reprolog-server",
    version,
    about = "The reprolog transparency log server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
    /// counts; entries, tree nodes and the path index are files served by the page cache.
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
    reprolog_verifier::keyfile::prepare_data_dir(&args.data)?;
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
    let (size_tx, size_rx) = tokio::sync::watch::channel(size);
    let sequencer = sequencer::start(Arc::clone(&store), Arc::clone(&metrics), size_tx);
    tokio::spawn(publisher::run(
        Arc::clone(&store),
        key.clone(),
        size_rx,
        Arc::clone(&published),
        Arc::clone(&metrics),
        Duration::from_millis(args.checkpoint_interval_ms),
        witnesses.clone(),
    ));
    tokio::spawn(watch_builders(Arc::clone(&builders)));

    let state = Arc::new(api::AppState {
        store,
        builders: Arc::clone(&builders),
        published,
        sequencer,
        metrics,
        verifiers: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
        large_reads: Arc::new(tokio::sync::Semaphore::new(api::CONCURRENT_LARGE_READS)),
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
        "builders:     {} ({} registered)",
        builders_path.display(),
        builders.current().keys.len()
    );
    println!("entries:      {size}");
    if let Some(w) = &witnesses {
        println!("witnesses:    {}", w.len());
    }
    axum::serve(listener, api::router(state, args.max_body_bytes))
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

/// Reloads the builders file when it changes, and on SIGHUP.
async fn watch_builders(builders: Arc<Builders>) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGHUP: {e}");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let result = tokio::select! {
            _ = hup.recv() => Some(builders.reload()),
            _ = tick.tick() => builders.reload_if_changed(),
        };
        match result {
            Some(Ok(n)) => tracing::info!("builders reloaded: {n} registered"),
            Some(Err(e)) => tracing::error!("builders not reloaded, keeping the old list: {e:#}"),
            None => {}
        }
    }
}

async fn shutdown() {
    let term = async {
        if let Ok(mut s) = signal(SignalKind::terminate()) {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
