//! `reprolog verify` and `reprolog verify-receipt`: is this narinfo's signature in the log,
//! under a checkpoint the policy trusts?

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use reprolog_verifier::entry::Entry;
use reprolog_verifier::merkle;
use reprolog_verifier::nix::NarInfo;
use reprolog_verifier::policy::{Policy, TrustedCheckpoint};
use reprolog_verifier::proof::TlogProof;
use reprolog_verifier::text::printable;

use serde::Serialize;

use crate::client::LogClient;
use crate::common::{
    cosigners, load_policy, log_client, policy_log_key, proven_registry, read_limited,
    read_narinfo, trusted_checkpoint,
};
use reprolog_verifier::registry::KeyRegistry;

/// Checks a receipt offline against a policy and a narinfo; returns the entry and checkpoint.
pub fn check_receipt(
    policy: &Policy,
    receipt: &[u8],
    info: &NarInfo,
) -> Result<(Entry, TrustedCheckpoint)> {
    let receipt = TlogProof::parse(receipt).context("not a C2SP tlog-proof")?;
    let entry_bytes = receipt
        .extra
        .as_deref()
        .context("the receipt carries no entry")?;
    let entry = Entry::decode(entry_bytes).context("the receipt's entry is malformed")?;
    if !entry.logs_signature_of(info) {
        bail!("the receipt's entry is not a signature of this narinfo");
    }
    entry
        .verify_signature()
        .context("the entry's builder signature")?;
    let trusted = policy
        .verify_checkpoint(receipt.checkpoint.as_bytes())
        .context("the receipt's checkpoint does not satisfy the policy")?;
    merkle::verify_inclusion(
        &receipt.proof,
        receipt.index,
        trusted.checkpoint.size,
        &merkle::leaf_hash(entry_bytes),
        &trusted.checkpoint.root,
    )
    .with_context(|| format!("entry {} is not in the checkpoint", receipt.index))?;
    Ok((entry, trusted))
}

fn describe(t: &TrustedCheckpoint) -> String {
    format!(
        "checkpoint {} cosigned by {}",
        t.checkpoint.size,
        cosigners(&t.cosigned_by)
    )
}

/// One narinfo's verdict, as `verify --json` prints it.
#[derive(Serialize)]
struct NarinfoVerdict {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_path: Option<String>,
    /// Every logged signature of it is proven, and there is at least one.
    ok: bool,
    /// `logged` (proven), `not-logged`, `unproven` or `unreadable`.
    verdict: &'static str,
    logged: Vec<ProvenSignature>,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct ProvenSignature {
    builder: String,
    index: u64,
    checkpoint_size: u64,
    cosigned_by: Vec<String>,
}

/// Exit code when some narinfo has no signature in the log and nothing else failed.
const EXIT_NOT_LOGGED: i32 = 3;

fn check_narinfo(
    client: &LogClient,
    policy: &Policy,
    registry: &KeyRegistry,
    path: &Path,
    receipts: Option<&Path>,
) -> Result<NarinfoVerdict> {
    let mut verdict = NarinfoVerdict {
        file: path.display().to_string(),
        store_path: None,
        ok: false,
        verdict: "unreadable",
        logged: Vec::new(),
        problems: Vec::new(),
    };
    let info = match read_narinfo(path) {
        Ok(i) => i,
        Err(e) => {
            verdict
                .problems
                .push(printable(&format!("{e:#}")).into_owned());
            return Ok(verdict);
        }
    };
    verdict.store_path = Some(info.store_path.to_string());
    let hash_part = info.store_path.hash_part().to_owned();
    client.for_each_path_event(&hash_part, |event| -> Result<()> {
        let (index, text) = (event.index, event.entry.as_str());
        // Only events that log one of this narinfo's signatures count, and each is proven.
        match Entry::decode(text.as_bytes()) {
            Ok(e) if e.logs_signature_of(&info) => {}
            _ => return Ok(()),
        }
        let receipt = client.tlog_proof(index)?;
        match check_receipt(policy, &receipt, &info) {
            // Logged, but by a key that could not sign at that index (revoked as of it, or
            // retired before it): it does not count.
            Ok((entry, _)) if registry.status(&entry.builder, index).identity().is_none() => {
                verdict.problems.push(format!(
                    "index {index}: the signature by {} does not count: the key is {}",
                    entry.builder.name,
                    registry.status(&entry.builder, index)
                ))
            }
            Ok((entry, trusted)) => {
                verdict.logged.push(ProvenSignature {
                    builder: entry.builder.name.clone(),
                    index,
                    checkpoint_size: trusted.checkpoint.size,
                    cosigned_by: trusted.cosigned_by.clone(),
                });
                if let Some(dir) = receipts {
                    let file = dir.join(format!("{hash_part}-{index}.tlog-proof"));
                    std::fs::write(&file, &receipt)
                        .with_context(|| format!("{}", file.display()))?;
                }
            }
            Err(e) => verdict
                .problems
                .push(format!("index {index}: {}", printable(&format!("{e:#}")))),
        }
        Ok(())
    })?;
    verdict.ok = !verdict.logged.is_empty() && verdict.problems.is_empty();
    verdict.verdict = match (verdict.logged.is_empty(), verdict.problems.is_empty()) {
        (_, false) => "unproven",
        (true, true) => "not-logged",
        (false, true) => "logged",
    };
    Ok(verdict)
}

pub fn verify(
    policy: &Path,
    log: Option<&str>,
    narinfos: &[PathBuf],
    receipts: Option<&Path>,
    json: bool,
) -> Result<i32> {
    let policy = load_policy(policy)?;
    let client = log_client(log, Some(&policy))?;
    let trusted = trusted_checkpoint(&client, &policy)?;
    let registry = proven_registry(
        &client,
        &trusted.checkpoint,
        policy_log_key(Some(&policy), &trusted.checkpoint.origin),
    )?;
    if let Some(dir) = receipts {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let mut verdicts = Vec::new();
    for path in narinfos {
        let v = check_narinfo(&client, &policy, &registry, path, receipts)?;
        if !json {
            println!("{}: {}", v.file, if v.ok { "ok" } else { "FAILED" });
            if v.verdict == "not-logged" {
                println!("  not-logged: no signature of this narinfo is in the log");
            }
            for s in &v.logged {
                println!(
                    "  logged     {} at index {}, checkpoint {} cosigned by {}",
                    s.builder,
                    s.index,
                    s.checkpoint_size,
                    cosigners(&s.cosigned_by)
                );
            }
            for p in &v.problems {
                println!("  UNPROVEN   {p}");
            }
        }
        verdicts.push(v);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&verdicts)?);
    }
    Ok(if verdicts.iter().all(|v| v.ok) {
        0
    } else if verdicts.iter().all(|v| v.ok || v.verdict == "not-logged") {
        EXIT_NOT_LOGGED
    } else {
        1
    })
}

pub fn verify_receipt(policy: &Path, receipt: &Path, narinfo: &Path) -> Result<bool> {
    let policy = load_policy(policy)?;
    let info = read_narinfo(narinfo)?;
    let bytes = read_limited(receipt, 1 << 20)?;
    match check_receipt(&policy, &bytes, &info) {
        Ok((entry, trusted)) => {
            println!(
                "ok: {} signed by {}, {}",
                info.store_path,
                entry.builder.name,
                describe(&trusted)
            );
            Ok(true)
        }
        Err(e) => {
            println!("FAILED: {}", printable(&format!("{e:#}")));
            Ok(false)
        }
    }
}
