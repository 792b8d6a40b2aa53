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

use crate::common::{load_policy, log_client, read_limited, read_narinfo};

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
    let by = if t.cosigned_by.is_empty() {
        "no witness".to_owned()
    } else {
        t.cosigned_by.join(", ")
    };
    format!("checkpoint {} cosigned by {by}", t.checkpoint.size)
}

pub fn verify(
    policy: &Path,
    log: Option<&str>,
    narinfos: &[PathBuf],
    receipts: Option<&Path>,
) -> Result<bool> {
    let policy = load_policy(policy)?;
    let client = log_client(log, Some(&policy))?;
    if let Some(dir) = receipts {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let mut all_ok = true;
    for path in narinfos {
        let info = match read_narinfo(path) {
            Ok(i) => i,
            Err(e) => {
                println!(
                    "{}: FAILED: {}",
                    path.display(),
                    printable(&format!("{e:#}"))
                );
                all_ok = false;
                continue;
            }
        };
        let hash_part = info.store_path.hash_part().to_owned();
        let mut proven = Vec::new();
        let mut problems = Vec::new();
        for event in client.path_events(&hash_part)? {
            let (index, text) = (event.index, event.entry.as_str());
            // Only events that log one of this narinfo's signatures count, and each is proven.
            match Entry::decode(text.as_bytes()) {
                Ok(e) if e.logs_signature_of(&info) => {}
                _ => continue,
            }
            let receipt = client.tlog_proof(index)?;
            match check_receipt(&policy, &receipt, &info) {
                Ok((entry, trusted)) => {
                    proven.push(format!(
                        "  logged     {} at index {index}, {}",
                        entry.builder.name,
                        describe(&trusted)
                    ));
                    if let Some(dir) = receipts {
                        let file = dir.join(format!("{hash_part}-{index}.tlog-proof"));
                        std::fs::write(&file, &receipt)
                            .with_context(|| format!("{}", file.display()))?;
                    }
                }
                Err(e) => problems.push(format!(
                    "  UNPROVEN   index {index}: {}",
                    printable(&format!("{e:#}"))
                )),
            }
        }
        let ok = !proven.is_empty() && problems.is_empty();
        all_ok &= ok;
        println!("{}: {}", path.display(), if ok { "ok" } else { "FAILED" });
        if proven.is_empty() && problems.is_empty() {
            println!("  no signature of this narinfo is in the log");
        }
        for line in proven.iter().chain(&problems) {
            println!("{line}");
        }
    }
    Ok(all_ok)
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
