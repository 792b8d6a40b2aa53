//! `reprolog`: the command-line client of the reprolog transparency log.

#![forbid(unsafe_code)]

mod bench;
mod client;
mod common;
mod compare;
mod ingest;
mod monitor;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::client::LogClient;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use reprolog_verifier::nix::{NixPublicKey, SignatureStatus};
use reprolog_verifier::note;
use reprolog_verifier::text::printable;

#[derive(Parser)]
#[command(
    name = "reprolog",
    version,
    about = "Client for the reprolog log of Nix signing events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Offline work on narinfo files.
    #[command(subcommand)]
    Narinfo(NarinfoCommand),
    /// Put binary caches into a log: every narinfo signature by a registered builder.
    Ingest {
        #[arg(long, default_value = "http://127.0.0.1:8400")]
        log: String,
        /// `file:///path/to/cache`, or an `http(s)://` cache with --paths.
        #[arg(required = true)]
        sources: Vec<String>,
        /// Store paths (or hash parts) to fetch from HTTP caches, one a line.
        #[arg(long)]
        paths: Option<PathBuf>,
        /// Where progress is kept, so an interrupted run resumes.
        #[arg(long, default_value = "reprolog-ingest.state")]
        state: PathBuf,
    },
    /// Prove narinfos are in the log: each needs a logged signature, proven by inclusion in a
    /// checkpoint that satisfies the policy. Exits 0 only if every narinfo has one.
    Verify {
        #[arg(long)]
        policy: PathBuf,
        /// The log's base URL; default: the policy's log URL.
        #[arg(long)]
        log: Option<String>,
        /// Write a C2SP tlog-proof per proven signature into this directory.
        #[arg(long)]
        receipt: Option<PathBuf>,
        #[arg(required = true)]
        narinfos: Vec<PathBuf>,
    },
    /// Check a tlog-proof receipt for a narinfo offline.
    VerifyReceipt {
        #[arg(long)]
        policy: PathBuf,
        receipt: PathBuf,
        narinfo: PathBuf,
    },
    /// Compare builders: per store path, each builder's proven NAR hash and a verdict. Exits
    /// 0 when everything compared agrees, 2 on any disagreement, 1 on error.
    Compare {
        #[arg(long)]
        log: Option<String>,
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Only these builders (key names), comma-separated.
        #[arg(long, value_delimiter = ',')]
        builders: Option<Vec<String>>,
        /// Every path in the log.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        paths: Vec<String>,
    },
    /// Follow the log and check all of it; exits non-zero, saying what broke, on any
    /// inconsistency.
    Monitor {
        #[arg(long)]
        log: Option<String>,
        #[arg(long)]
        policy: PathBuf,
        #[arg(long, default_value = "reprolog-monitor.state")]
        state: PathBuf,
        /// Check once and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between checks.
        #[arg(long, default_value_t = 10)]
        interval: u64,
    },
    /// Checkpoints and trust policies.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Load generators for benchmarks (docs/benchmarks.md); not a user's command, so hidden
    /// from --help.
    #[command(subcommand, hide = true)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Check a checkpoint against a C2SP tlog-policy: a policy log's signature and a quorum of
    /// valid witness cosignatures. Exits 0 when it holds, 1 otherwise, saying why.
    Verify {
        #[arg(long)]
        policy: PathBuf,
        /// A log's base URL (its /checkpoint is fetched) or a checkpoint file.
        source: String,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Submit unique pre-signed narinfos over HTTP and report entries/s and time to index,
    /// beside this machine's raw Ed25519 verification rate.
    Ingest {
        /// The log server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8400")]
        log: String,
        /// A Nix secret key registered with the log, to sign the narinfos.
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Narinfos per request.
        #[arg(long, default_value_t = 256)]
        batch: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Submit narinfos one at a time and report the time until each is in a checkpoint that
    /// satisfies a client's policy (the log's signature and a quorum of cosignatures).
    Cosigned {
        /// The log server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8400")]
        log: String,
        /// A Nix secret key registered with the log, to sign the narinfos.
        #[arg(long)]
        key_file: PathBuf,
        /// A C2SP tlog-policy naming the log and the witnesses a client requires.
        #[arg(long)]
        policy: PathBuf,
        #[arg(long, default_value_t = 200)]
        count: u64,
        /// Milliseconds between one answer and the next submission.
        #[arg(long, default_value_t = 50)]
        gap_ms: u64,
    },
    /// Print the policy a witness needs for `bench witness`.
    WitnessPolicy {
        #[arg(long, default_value_t = 8)]
        logs: usize,
    },
    /// Drive a fresh witness with several logs at once and report add-checkpoint/s.
    Witness {
        /// The witness's submission prefix.
        #[arg(long, default_value = "http://127.0.0.1:8401")]
        witness: String,
        #[arg(long, default_value_t = 8)]
        logs: usize,
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
    },
    /// Fetch random inclusion proofs against the latest checkpoint and report proofs/s.
    Proofs {
        #[arg(long, default_value = "http://127.0.0.1:8400")]
        log: String,
        /// The log's verifier key (DATA/log.vkey).
        #[arg(long)]
        log_key: String,
        #[arg(long, default_value_t = 200_000)]
        requests: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

#[derive(Subcommand)]
enum NarinfoCommand {
    /// Print the exact bytes Nix signs for a narinfo, with no newline.
    Fingerprint { file: PathBuf },
    /// Check each narinfo's signatures. Exits 0 when every file has at least one valid
    /// signature by a trusted key, 1 otherwise. A CA field never stands in for a signature.
    Verify {
        /// Space-separated Nix public keys, `name:base64`, as in nix.conf.
        #[arg(long, value_name = "KEYS")]
        trusted_public_keys: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Prints each signature's verdict; returns whether one was valid.
fn verify_file(path: &Path, trusted: &[NixPublicKey]) -> Result<bool> {
    let info = common::read_narinfo(path)?;
    let statuses = info.check_signatures(trusted);
    let ok = statuses
        .iter()
        .any(|(_, s)| matches!(s, SignatureStatus::Valid(_)));
    println!("{}: {}", path.display(), if ok { "ok" } else { "FAILED" });
    if statuses.is_empty() {
        println!("  no signatures");
    }
    for (sig, status) in statuses {
        let key = sig.split_once(':').map_or(sig.as_str(), |(k, _)| k);
        match status {
            SignatureStatus::Valid(_) => println!("  valid      {key}"),
            SignatureStatus::Invalid => println!("  invalid    {key}"),
            SignatureStatus::Untrusted => println!("  untrusted  {key}"),
            SignatureStatus::Malformed(e) => println!("  malformed  {key}: {e}"),
        }
    }
    Ok(ok)
}

/// Reads a checkpoint from a log's base URL (or its /checkpoint URL) or a file.
fn read_checkpoint(source: &str) -> Result<Vec<u8>> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let base = source.trim_end_matches('/').trim_end_matches("/checkpoint");
        return Ok(LogClient::new(base).checkpoint()?);
    }
    let len = std::fs::metadata(source)
        .with_context(|| source.to_owned())?
        .len();
    if len > note::MAX_NOTE_BYTES as u64 {
        anyhow::bail!("{source}: {len} bytes is too large for a checkpoint");
    }
    std::fs::read(source).with_context(|| source.to_owned())
}

fn verify_checkpoint(policy: &Path, source: &str) -> Result<ExitCode> {
    let policy = common::load_policy(policy)?;
    let bytes = read_checkpoint(source)?;
    match policy.verify_checkpoint(&bytes) {
        Ok(t) => {
            let cp = &t.checkpoint;
            println!("ok: {} at size {}", cp.origin, cp.size);
            println!("  root         {}", base64_hash(&cp.root));
            println!(
                "  cosigned by  {}",
                if t.cosigned_by.is_empty() {
                    "nobody".into()
                } else {
                    t.cosigned_by.join(", ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn base64_hash(h: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Ingest {
            log,
            sources,
            paths,
            state,
        } => Ok(exit(ingest::run(ingest::IngestArgs {
            log,
            sources,
            paths,
            state,
        })?)),
        Command::Verify {
            policy,
            log,
            receipt,
            narinfos,
        } => Ok(exit(verify::verify(
            &policy,
            log.as_deref(),
            &narinfos,
            receipt.as_deref(),
        )?)),
        Command::VerifyReceipt {
            policy,
            receipt,
            narinfo,
        } => Ok(exit(verify::verify_receipt(&policy, &receipt, &narinfo)?)),
        Command::Compare {
            log,
            policy,
            builders,
            all,
            json,
            paths,
        } => {
            let code = compare::run(compare::CompareArgs {
                log,
                policy,
                builders,
                paths,
                all,
                json,
            })?;
            Ok(ExitCode::from(code as u8))
        }
        Command::Monitor {
            log,
            policy,
            state,
            once,
            interval,
        } => {
            monitor::run(monitor::MonitorArgs {
                log,
                policy,
                state,
                once,
                interval: std::time::Duration::from_secs(interval),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoint(CheckpointCommand::Verify { policy, source }) => {
            verify_checkpoint(&policy, &source)
        }
        Command::Bench(BenchCommand::Ingest {
            log,
            key_file,
            count,
            batch,
            concurrency,
        }) => {
            bench::ingest(bench::IngestArgs {
                log,
                key_file,
                count,
                batch,
                concurrency,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Cosigned {
            log,
            key_file,
            policy,
            count,
            gap_ms,
        }) => {
            bench::cosigned(
                &log,
                &key_file,
                &policy,
                count,
                std::time::Duration::from_millis(gap_ms),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::WitnessPolicy { logs }) => {
            bench::witness_policy(logs);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Witness {
            witness,
            logs,
            requests,
        }) => {
            bench::witness(&witness, logs, requests)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Proofs {
            log,
            log_key,
            requests,
            concurrency,
        }) => {
            bench::proofs(&log, &log_key, requests, concurrency)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Narinfo(NarinfoCommand::Fingerprint { file }) => {
            let info = common::read_narinfo(&file)?;
            std::io::stdout().write_all(info.fingerprint().as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Narinfo(NarinfoCommand::Verify {
            trusted_public_keys,
            files,
        }) => {
            let trusted =
                NixPublicKey::parse_list(&trusted_public_keys).context("--trusted-public-keys")?;
            let mut all_ok = true;
            for file in &files {
                match verify_file(file, &trusted) {
                    Ok(ok) => all_ok &= ok,
                    Err(e) => {
                        println!("{}: FAILED", file.display());
                        eprintln!("error: {}", printable(&format!("{e:#}")));
                        all_ok = false;
                    }
                }
            }
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
