//! `reprolog`: the command-line client of the reprolog transparency log.

#![forbid(unsafe_code)]

mod bench;
mod client;
mod common;
mod compare;
mod decide;
mod hook;
mod ingest;
mod keys;
mod lookup;
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

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 a check failed or an error; 2 unreproduced (compare), conflicts \
(monitor --fail-on-conflict) or denied (decide); 3 not in the log (verify, compare, path); 64 bad arguments.
Every log-facing command takes --json for scripts. The policy file (C2SP tlog-policy) is \
described in spec/policy.md; without --policy, $XDG_CONFIG_HOME/reprolog/policy is used.";

#[derive(Parser)]
#[command(
    name = "reprolog",
    version,
    about = "Client for the reprolog log of Nix signing events",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the log is and whom to trust, for commands that read the log.
#[derive(clap::Args)]
struct Trust {
    /// The trust policy (C2SP tlog-policy, spec/policy.md): the log's key and URL, witnesses
    /// and quorum. Default: $XDG_CONFIG_HOME/reprolog/policy.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The log's base URL, e.g. http://127.0.0.1:8400. Default: the policy's log URL.
    #[arg(long, value_name = "URL")]
    log: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Offline work on narinfo files.
    #[command(subcommand)]
    Narinfo(NarinfoCommand),
    /// Put binary caches into a log: every narinfo signature by a registered builder.
    #[command(
        after_help = "Example:\n  reprolog ingest --log http://127.0.0.1:8400 \
        file:///srv/cache\n\nExit codes: 0 every narinfo submitted (ignored signatures are \
        listed, not failures); 1 some narinfo failed, or the log is unreachable (after 3 \
        tries; run again to resume)."
    )]
    Ingest {
        /// The log's base URL.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8400")]
        log: String,
        /// `file:///path/to/cache`, or an `http(s)://` cache with --paths.
        #[arg(required = true, value_name = "CACHE")]
        sources: Vec<String>,
        /// Store paths (or hash parts) to fetch from HTTP caches, one a line.
        #[arg(long, value_name = "FILE")]
        paths: Option<PathBuf>,
        /// Where progress is kept, so that an interrupted run resumes.
        /// Default: $XDG_STATE_HOME/reprolog/ingest.state.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Print the outcome as JSON, with every ignored signature and its reason.
        #[arg(long)]
        json: bool,
    },
    /// Prove narinfos are in the log: each needs a logged signature, proven by inclusion in a
    /// checkpoint that satisfies the policy.
    #[command(after_help = "Example:\n  reprolog verify --policy policy \
        cache/0018nm26ljlp20g9m22bj55ql9kz3klz.narinfo\n\nExit codes: 0 every narinfo \
        proven; 1 a proof failed or an error; 3 a narinfo has no signature in the log.")]
    Verify {
        #[command(flatten)]
        trust: Trust,
        /// Write a C2SP tlog-proof per proven signature into this directory.
        #[arg(long, value_name = "DIR")]
        receipt: Option<PathBuf>,
        /// Print the verdicts as JSON.
        #[arg(long)]
        json: bool,
        /// narinfo files.
        #[arg(required = true, value_name = "NARINFO")]
        narinfos: Vec<PathBuf>,
    },
    /// Check a tlog-proof receipt for a narinfo offline.
    #[command(after_help = "Example:\n  reprolog verify-receipt --policy policy \
        receipts/0018…-41.tlog-proof 0018….narinfo\n\nExit codes: 0 proven; 1 not.")]
    VerifyReceipt {
        /// The trust policy (spec/policy.md). Default: $XDG_CONFIG_HOME/reprolog/policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The receipt, as `verify --receipt` writes it.
        receipt: PathBuf,
        /// The narinfo it is for.
        narinfo: PathBuf,
    },
    /// Compare builders: per store path, each builder's proven NAR hash and a verdict
    /// (reproduced, unreproduced, one-builder, not-logged).
    #[command(after_help = "Examples:\n  reprolog compare --policy policy \
        /nix/store/…-hello\n  reprolog compare --policy policy --all --json\n\nExit codes: \
        0 everything compared agrees; 2 some path is unreproduced; 3 some named path is not \
        in the log; 1 an error (an unknown builder name is one).")]
    Compare {
        #[command(flatten)]
        trust: Trust,
        /// Only these builders (key names), comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        builders: Option<Vec<String>>,
        /// Every path in the log (reads all entries through tiles).
        #[arg(long)]
        all: bool,
        /// Count only builders that attested building the output (`reprolog hook`), not
        /// cache signatures, which may be copies.
        #[arg(long)]
        require_built: bool,
        /// Print the verdicts and summary as JSON.
        #[arg(long)]
        json: bool,
        /// Store paths or their hash parts.
        #[arg(value_name = "STORE_PATH")]
        paths: Vec<String>,
    },
    /// Follow the log and check all of it: the policy, consistency with the last checkpoint
    /// seen, every entry's signature, the tree; reports conflicting NAR hashes.
    #[command(
        after_help = "Example:\n  reprolog monitor --policy policy --once\n\nExit \
        codes: 0 consistent; 1 a fork, rollback, bad entry or error (said in capitals); 2 \
        conflicts found with --fail-on-conflict."
    )]
    Monitor {
        #[command(flatten)]
        trust: Trust,
        /// What the monitor remembers (the tree's edge: a few hundred bytes, whatever the
        /// log's size). Default: $XDG_STATE_HOME/reprolog/monitor-<log>.state.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Check once and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between checks.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        interval: u64,
        /// Exit 2 when a new entry's NAR hash conflicts with another for its path.
        #[arg(long)]
        fail_on_conflict: bool,
        /// Print each check as a JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Checkpoints and trust policies.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Would the gate let Nix substitute these paths? K of N trusted builders must have
    /// logged the same claim (spec/gate.md).
    #[command(
        after_help = "Example:\n  reprolog decide --log-policy policy --trust trust \
        /nix/store/…-hello\n\nExit codes: 0 every path allowed; 2 some path denied; 1 an \
        error."
    )]
    Decide {
        /// The log's base URL, e.g. http://127.0.0.1:8400. Default: the policy's log URL.
        #[arg(long, value_name = "URL")]
        log: Option<String>,
        /// The trust policy the log's checkpoint must satisfy (spec/policy.md).
        /// Default: $XDG_CONFIG_HOME/reprolog/policy.
        #[arg(long, value_name = "FILE")]
        log_policy: Option<PathBuf>,
        /// The trust file: builders, quorum, on-conflict (spec/gate.md).
        #[arg(long, value_name = "FILE")]
        trust: PathBuf,
        /// Print the decisions as JSON.
        #[arg(long)]
        json: bool,
        /// Full store paths.
        #[arg(required = true, value_name = "STORE_PATH")]
        paths: Vec<String>,
    },
    /// Nix's post-build hook: attest each output built on this machine, signed with the
    /// builder's Nix key, and send it to the log (configured in /etc/reprolog/hook.conf or
    /// $REPROLOG_HOOK_CONFIG: `log URL`, `key-file PATH`, `spool DIR`).
    #[command(
        after_help = "Example (nix.conf):\n  post-build-hook = /etc/reprolog/post-build-hook\n\
        where that script runs `exec reprolog hook`.\n\nExit codes: always 0 (a hook must never \
        fail a build); `hook flush` exits 0 when the spool is empty afterwards, 1 otherwise."
    )]
    Hook {
        #[command(subcommand)]
        action: Option<HookAction>,
    },
    /// Look-ups in the log, each proven against a checkpoint the policy trusts.
    #[command(subcommand)]
    Log(LogCommand),
    /// Rotate or revoke a builder key, and show the log's key history (spec/entry.md, "Key
    /// events"). Every result is proven from the log.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show one entry of the log, proven.
    #[command(
        after_help = "Example:\n  reprolog entry --policy policy 41\n\nExit codes: 0 \
        shown and proven; 1 not proven, not in the checkpoint, or an error."
    )]
    Entry {
        #[command(flatten)]
        trust: Trust,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
        /// The entry's index.
        index: u64,
    },
    /// Show a store path's history in the log, every event proven, with its verdict.
    #[command(
        after_help = "Example:\n  reprolog path --policy policy /nix/store/…-hello\n\n\
        Exit codes: 0 shown and proven; 3 nothing logged for it; 1 an error."
    )]
    Path {
        #[command(flatten)]
        trust: Trust,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
        /// A store path or its hash part.
        store_path: String,
    },
    /// Load generators for benchmarks (docs/benchmarks.md); not a user's command, so hidden
    /// from --help.
    #[command(subcommand, hide = true)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Replace a builder's key: the new key continues the old key's builder identity, and
    /// the old key signs no more. Signed by both keys.
    #[command(
        after_help = "Example:\n  reprolog keys rotate --policy policy --old cache-1.sec \
        --new cache-2.sec\n\nThen re-sign what the old key signed with the new one \
        (nix store sign -k cache-2.sec) and ingest it: the log counts it as the same builder.\n\n\
        Exit codes: 0 rotated and proven; 1 refused by the log, not proven, or an error."
    )]
    Rotate {
        #[command(flatten)]
        trust: Trust,
        /// The key being retired (a Nix secret key file, mode 0600).
        #[arg(long, value_name = "FILE")]
        old: PathBuf,
        /// Its successor (a Nix secret key file, mode 0600), new to the log.
        #[arg(long, value_name = "FILE")]
        new: PathBuf,
    },
    /// Revoke a key as of an index: its signatures logged there or later are void, those
    /// before keep their value.
    #[command(
        after_help = "Examples:\n  reprolog keys revoke --policy policy --key-file stolen.sec \
        --as-of 1234\n  reprolog keys revoke --policy policy --key-file DATA/log.key \
        --key 'cache-3:BASE64' --as-of 1234   (the operator, for a key whose holder lost it)\n\n\
        Exit codes: 0 revoked and proven; 1 refused by the log, not proven, or an error."
    )]
    Revoke {
        #[command(flatten)]
        trust: Trust,
        /// The key to revoke (a Nix secret key file), or the log's own key file for the
        /// operator's revocation of the key named by --key. Mode 0600.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// With the log's key file: the key to revoke, `name:base64`.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// The first index whose signatures by the key are void.
        #[arg(long, value_name = "INDEX")]
        as_of: Option<u64>,
        /// A time, YYYY-MM-DDTHH:MM:SSZ: voids what may have been logged at or after it, that
        /// is, from the size of the largest checkpoint a witness of the policy cosigned before
        /// it (from the log's published checkpoints, `GET /api/v1/checkpoints`).
        #[arg(long, value_name = "TIME")]
        as_of_time: Option<String>,
    },
    /// Every key event of the log, proven, and each key's status now.
    #[command(
        after_help = "Example:\n  reprolog keys history --policy policy cache.example.org-1\n\n\
        Exit codes: 0 shown and proven; 1 a key event does not apply, is not proven, or an error."
    )]
    History {
        #[command(flatten)]
        trust: Trust,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
        /// Only events about keys of this name, or of this builder.
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum HookAction {
    /// Send the spooled attestations (from a timer, or by hand).
    #[command(
        after_help = "Example:\n  reprolog hook flush\n\nExit codes: 0 nothing left in \
        the spool; 1 some attestations could not be sent, or an error."
    )]
    Flush,
}

#[derive(Subcommand)]
enum LogCommand {
    /// The log's latest checkpoint: origin, size, root and cosigners, verified against the
    /// policy.
    #[command(
        after_help = "Example:\n  reprolog log info --policy policy\n\nExit codes: 0 \
        the checkpoint satisfies the policy; 1 it does not, or an error."
    )]
    Info {
        #[command(flatten)]
        trust: Trust,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Check a checkpoint against a C2SP tlog-policy: a policy log's signature and a quorum of
    /// valid witness cosignatures.
    #[command(after_help = "Example:\n  reprolog checkpoint verify --policy policy \
        http://127.0.0.1:8400\n\nExit codes: 0 it satisfies the policy; 1 it does not, \
        saying why.")]
    Verify {
        /// The trust policy (spec/policy.md). Default: $XDG_CONFIG_HOME/reprolog/policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
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
        /// Submit DSSE build attestations instead of narinfos.
        #[arg(long)]
        attestations: bool,
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
    #[command(after_help = "Example:\n  reprolog narinfo fingerprint \
        0018nm26ljlp20g9m22bj55ql9kz3klz.narinfo")]
    Fingerprint {
        /// A narinfo file.
        file: PathBuf,
    },
    /// Check each narinfo's signatures against trusted keys, as `nix store verify --sigs-needed
    /// 1` would. A CA field never stands in for a signature.
    #[command(
        after_help = "Example:\n  reprolog narinfo verify --trusted-public-keys \
        \"cache.lix.systems:aBnZUw8zA7H35Cz2RyKFVs3H4PlGTLawyY5KRbvJR8o=\" *.narinfo\n\n\
        Exit codes: 0 every file has a valid signature by a trusted key; 1 otherwise."
    )]
    Verify {
        /// Space-separated Nix public keys, `name:base64`, as in nix.conf.
        #[arg(long, value_name = "KEYS")]
        trusted_public_keys: String,
        /// narinfo files.
        #[arg(required = true, value_name = "NARINFO")]
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
        return Ok(LogClient::new(base)?.checkpoint()?);
    }
    let len = std::fs::metadata(source)
        .with_context(|| source.to_owned())?
        .len();
    if len > note::MAX_NOTE_BYTES as u64 {
        anyhow::bail!("{source}: {len} bytes is too large for a checkpoint");
    }
    std::fs::read(source).with_context(|| source.to_owned())
}

/// What `checkpoint verify --json` and `log info --json` print.
#[derive(serde::Serialize)]
struct CheckpointReport {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    root: Option<String>,
    cosigned_by: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn verify_checkpoint(policy: &Path, bytes: &[u8], json: bool) -> Result<ExitCode> {
    let policy = common::load_policy(policy)?;
    let report = match policy.verify_checkpoint(bytes) {
        Ok(t) => CheckpointReport {
            ok: true,
            origin: Some(t.checkpoint.origin.clone()),
            size: Some(t.checkpoint.size),
            root: Some(base64_hash(&t.checkpoint.root)),
            cosigned_by: t.cosigned_by.clone(),
            error: None,
        },
        Err(e) => CheckpointReport {
            ok: false,
            origin: None,
            size: None,
            root: None,
            cosigned_by: Vec::new(),
            error: Some(printable(&e.to_string()).into_owned()),
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if let (Some(origin), Some(size), Some(root)) =
        (&report.origin, report.size, &report.root)
    {
        println!("ok: {origin} at size {size}");
        println!("  root         {root}");
        println!(
            "  cosigned by  {}",
            if report.cosigned_by.is_empty() {
                "nobody".into()
            } else {
                report.cosigned_by.join(", ")
            }
        );
    } else {
        println!("FAILED: {}", report.error.as_deref().unwrap_or_default());
    }
    Ok(exit(report.ok))
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

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Ingest {
            log,
            sources,
            paths,
            state,
            json,
        } => Ok(exit(ingest::run(ingest::IngestArgs {
            log,
            sources,
            paths,
            state,
            json,
        })?)),
        Command::Verify {
            trust,
            receipt,
            json,
            narinfos,
        } => Ok(code(verify::verify(
            &common::policy_file(trust.policy)?,
            trust.log.as_deref(),
            &narinfos,
            receipt.as_deref(),
            json,
        )?)),
        Command::VerifyReceipt {
            policy,
            receipt,
            narinfo,
        } => Ok(exit(verify::verify_receipt(
            &common::policy_file(policy)?,
            &receipt,
            &narinfo,
        )?)),
        Command::Compare {
            trust,
            builders,
            all,
            require_built,
            json,
            paths,
        } => Ok(code(compare::run(compare::CompareArgs {
            require_built,
            log: trust.log,
            // Without a policy, compare still works, warning that it trusts the log's word.
            policy: trust.policy.or_else(|| common::policy_file(None).ok()),
            builders,
            paths,
            all,
            json,
        })?)),
        Command::Monitor {
            trust,
            state,
            once,
            interval,
            fail_on_conflict,
            json,
        } => Ok(code(monitor::run(monitor::MonitorArgs {
            log: trust.log,
            policy: common::policy_file(trust.policy)?,
            state,
            once,
            interval: std::time::Duration::from_secs(interval),
            fail_on_conflict,
            json,
        })?)),
        Command::Checkpoint(CheckpointCommand::Verify {
            policy,
            json,
            source,
        }) => verify_checkpoint(
            &common::policy_file(policy)?,
            &read_checkpoint(&source)?,
            json,
        ),
        Command::Decide {
            log,
            log_policy,
            trust,
            json,
            paths,
        } => Ok(code(decide::run(
            log.as_deref(),
            &common::policy_file(log_policy)?,
            &trust,
            &paths,
            json,
        )?)),
        Command::Hook { action: None } => {
            hook::run();
            Ok(ExitCode::SUCCESS)
        }
        Command::Hook {
            action: Some(HookAction::Flush),
        } => Ok(exit(hook::flush()? == 0)),
        Command::Log(LogCommand::Info { trust, json }) => {
            let policy = common::policy_file(trust.policy)?;
            let client =
                common::log_client(trust.log.as_deref(), Some(&common::load_policy(&policy)?))?;
            verify_checkpoint(&policy, &client.checkpoint()?, json)
        }
        Command::Keys(KeysCommand::Rotate { trust, old, new }) => Ok(code(keys::rotate(
            &common::policy_file(trust.policy)?,
            trust.log.as_deref(),
            &old,
            &new,
        )?)),
        Command::Keys(KeysCommand::Revoke {
            trust,
            key_file,
            key,
            as_of,
            as_of_time,
        }) => Ok(code(keys::revoke(
            &common::policy_file(trust.policy)?,
            trust.log.as_deref(),
            keys::Revoking::from_files(&key_file, key.as_deref())?,
            as_of,
            as_of_time.as_deref(),
        )?)),
        Command::Keys(KeysCommand::History { trust, json, name }) => Ok(code(keys::history(
            &common::policy_file(trust.policy)?,
            trust.log.as_deref(),
            name.as_deref(),
            json,
        )?)),
        Command::Entry { trust, json, index } => Ok(code(lookup::entry(
            &common::policy_file(trust.policy)?,
            trust.log.as_deref(),
            index,
            json,
        )?)),
        Command::Path {
            trust,
            json,
            store_path,
        } => Ok(code(lookup::path(
            &common::policy_file(trust.policy)?,
            trust.log.as_deref(),
            &store_path,
            json,
        )?)),
        Command::Bench(BenchCommand::Ingest {
            log,
            key_file,
            count,
            batch,
            concurrency,
            attestations,
        }) => {
            bench::ingest(bench::IngestArgs {
                log,
                key_file,
                count,
                batch,
                concurrency,
                attestations,
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; bad arguments get their own code, apart from
            // the verdicts (compare's 2 is "unreproduced").
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(64),
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command a user sees, with its path of names.
    fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        if cmd.is_hide_set() {
            return;
        }
        let subs: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        if subs.is_empty() {
            out.push((path.clone(), cmd.clone()));
        }
        for sub in subs {
            leaves(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_has_help_and_every_command_an_example_and_exit_codes() {
        let mut cli = Cli::command();
        cli.build();
        let mut commands = Vec::new();
        leaves(&cli, "reprolog".into(), &mut commands);
        assert_eq!(
            commands.len(),
            16,
            "the commands changed: check this test still sees them all"
        );
        for (path, cmd) in &commands {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{path}: argument {id} has no help text"
                );
            }
            let after = cmd
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(after.contains("Example"), "{path}: no example in its help");
            if *path != "reprolog narinfo fingerprint" {
                assert!(
                    after.contains("Exit codes"),
                    "{path}: no exit codes in its help"
                );
            }
        }
    }
}
