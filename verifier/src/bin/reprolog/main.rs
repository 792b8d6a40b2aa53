//! `reprolog`: the command-line client of the reprolog transparency log.

mod bench;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use reprolog_verifier::client::LogClient;
use reprolog_verifier::nix::{NarInfo, NixPublicKey, SignatureStatus};
use reprolog_verifier::note;
use reprolog_verifier::policy::Policy;

/// narinfo files are small; anything larger is not one.
const MAX_NARINFO_BYTES: u64 = 1 << 20;

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
    /// Checkpoints and trust policies.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Load generators for benchmarks (docs/benchmarks.md).
    #[command(subcommand)]
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
        #[arg(long, default_value_t = 64)]
        batch: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
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

fn read_narinfo(path: &Path) -> Result<NarInfo> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    if len > MAX_NARINFO_BYTES {
        anyhow::bail!("{}: {len} bytes is too large for a narinfo", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    NarInfo::parse(&text).with_context(|| format!("{}", path.display()))
}

/// Prints each signature's verdict; returns whether one was valid.
fn verify_file(path: &Path, trusted: &[NixPublicKey]) -> Result<bool> {
    let info = read_narinfo(path)?;
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
    let text = std::fs::read_to_string(policy).with_context(|| format!("{}", policy.display()))?;
    let policy = Policy::parse(&text).with_context(|| format!("{}", policy.display()))?;
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

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
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
            let info = read_narinfo(&file)?;
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
                        eprintln!("error: {e:#}");
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
