//! `reprolog-explorer`: a verified research index over one or more reprolog logs. It follows
//! each log of its tlog-policy through the log's tiles, verifies everything as `reprolog
//! monitor` does (checkpoints against the policy and each other, every entry's signature and
//! key, the tree), indexes the claims into SQLite, and answers researchers' questions over
//! HTTP (`spec/explorer-api.md`). The index is derived data: it can always be rebuilt from the
//! logs.

#![forbid(unsafe_code)]

mod aggregates;
mod backend;
mod bench;
mod charts;
mod db;
mod fetch;
mod follow;
mod http;
mod pages;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use reprolog_verifier::policy::Policy;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "reprolog-explorer",
    version,
    about = "A verified research index over reprolog logs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the policy's logs and serve the research API.
    Serve {
        /// A C2SP tlog-policy: every log it names with a URL is followed, and a checkpoint is
        /// accepted only if it satisfies the policy's quorum.
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// The index: sqlite://PATH, or postgres://USER@HOST:PORT/DATABASE (several explorers
        /// may share one; exactly one follows each log at a time).
        #[arg(
            long,
            value_name = "URL",
            default_value = "sqlite://./reprolog-explorer-data/explorer.db"
        )]
        db: String,
        /// Where to serve the API.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8403")]
        listen: SocketAddr,
        /// How often an idle log is asked for a new checkpoint.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Fill an index with synthetic claims and time each query (docs/benchmarks.md); not a
    /// user's command, so hidden from --help.
    #[command(hide = true)]
    Bench {
        #[arg(long, value_name = "URL")]
        db: String,
        #[arg(long, default_value_t = 1_000_000)]
        claims: u64,
        #[arg(long, default_value_t = 10)]
        builders: u64,
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            policy,
            db,
            listen,
            interval_ms,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(serve(
                    policy,
                    db,
                    listen,
                    Duration::from_millis(interval_ms),
                ))
            }),
        Command::Bench {
            db,
            claims,
            builders,
            queries,
        } => db::Location::parse(&db)
            .and_then(db::Db::open)
            .and_then(|db| bench::run(&db, claims, builders, queries))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                reprolog_verifier::text::printable(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

async fn serve(policy: PathBuf, db: String, listen: SocketAddr, interval: Duration) -> Result<()> {
    let text = std::fs::read_to_string(&policy)
        .with_context(|| format!("reading {}", policy.display()))?;
    let policy = Arc::new(Policy::parse(&text).with_context(|| format!("{}", policy.display()))?);
    let location = db::Location::parse(&db)?;
    // PostgreSQL's client blocks on a runtime of its own: never on the async workers.
    let db = Arc::new(tokio::task::spawn_blocking(move || db::Db::open(location)).await??);
    let mut followed = 0;
    for log in &policy.logs {
        let Some(url) = &log.url else {
            tracing::warn!("{}: no URL in the policy; not followed", log.key.name());
            continue;
        };
        let fetch = fetch::Fetcher::new(url, Duration::from_secs(30))?;
        let follower = follow::Follower::new(
            Arc::clone(&db),
            Arc::clone(&policy),
            log.key.clone(),
            fetch,
            interval,
        );
        std::thread::Builder::new()
            .name(format!("follow {}", log.key.name()))
            .spawn(move || follower.run())
            .context("starting a follower")?;
        followed += 1;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    println!("reprolog-explorer {}", env!("CARGO_PKG_VERSION"));
    println!("url:      http://{}/", listener.local_addr()?);
    println!("index:    {}", db.location().describe());
    println!("logs:     {followed} followed");
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    axum::serve(listener, http::router(db))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await?;
    Ok(())
}
