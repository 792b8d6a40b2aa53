//! `reprolog entry` and `reprolog path`: look-ups in the log, like rekor-cli's, where every
//! entry shown is first proven in a checkpoint the policy trusts.

use std::path::Path;

use anyhow::{bail, Context, Result};
use reprolog_verifier::api::LoggedEntry;
use reprolog_verifier::compare::{Claim, PathVerdict, Verdict};
use reprolog_verifier::nix::NixPublicKey;
use reprolog_verifier::policy::TrustedCheckpoint;
use reprolog_verifier::text::printable;
use serde::Serialize;

use crate::client::LogClient;
use crate::common::{
    cosigners, load_policy, log_client, policy_log_key, prove_entry, proven_registry,
    trusted_checkpoint,
};
use crate::compare::{hash_part_of, EXIT_NOT_LOGGED};

/// The checkpoint every proof of a look-up is against.
#[derive(Serialize)]
struct ProvenIn {
    checkpoint_size: u64,
    cosigned_by: Vec<String>,
}

#[derive(Serialize)]
struct EntryReport {
    #[serde(flatten)]
    entry: LoggedEntry,
    proven_in: ProvenIn,
}

/// A path's history: the verdict and each proven claim (index, builder, NAR hash); the
/// entries themselves are one `reprolog entry` away.
#[derive(Serialize)]
struct PathReport {
    #[serde(flatten)]
    verdict: PathVerdict,
    proven_in: ProvenIn,
}

/// The entry the log showed, proven in the trusted checkpoint and rebuilt from its own bytes,
/// so that nothing shown comes from the log's word alone.
fn prove(
    client: &LogClient,
    trusted: &TrustedCheckpoint,
    shown: LoggedEntry,
) -> Result<LoggedEntry> {
    prove_entry(
        client,
        &trusted.checkpoint,
        shown.index,
        shown.entry.as_bytes(),
    )?;
    Ok(LoggedEntry::new(shown.index, shown.entry.as_bytes())?)
}

/// The name part of a `name:base64` key.
fn builder_name(key: &str) -> &str {
    key.split(':').next().unwrap_or_default()
}

fn proven_in(t: &TrustedCheckpoint) -> ProvenIn {
    ProvenIn {
        checkpoint_size: t.checkpoint.size,
        cosigned_by: t.cosigned_by.clone(),
    }
}

fn print_entry(e: &LoggedEntry) {
    println!("entry {}: {}", e.index, e.store_path);
    println!("  kind        {}", e.kind);
    println!("  builder     {}", e.builder);
    println!("  nar hash    {}", e.nar_hash);
    println!("  nar size    {}", e.nar_size);
    println!("  references  {}", e.references.len());
    println!("  leaf hash   {}", e.leaf_hash);
}

pub fn entry(policy: &Path, log: Option<&str>, index: u64, json: bool) -> Result<i32> {
    let policy = load_policy(policy)?;
    let client = log_client(log, Some(&policy))?;
    let trusted = trusted_checkpoint(&client, &policy)?;
    let shown = prove(&client, &trusted, client.entry(index)?)?;
    if json {
        let report = EntryReport {
            entry: shown,
            proven_in: proven_in(&trusted),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_entry(&shown);
        println!(
            "  proven in checkpoint {} cosigned by {}",
            trusted.checkpoint.size,
            cosigners(&trusted.cosigned_by)
        );
    }
    Ok(0)
}

pub fn path(policy: &Path, log: Option<&str>, store_path: &str, json: bool) -> Result<i32> {
    let policy = load_policy(policy)?;
    let client = log_client(log, Some(&policy))?;
    let trusted = trusted_checkpoint(&client, &policy)?;
    let hash_part = hash_part_of(store_path)?;
    let registry = proven_registry(
        &client,
        &trusted.checkpoint,
        policy_log_key(Some(&policy), &trusted.checkpoint.origin),
    )?;
    let (mut claims, mut void, mut name) = (Vec::new(), Vec::new(), None);
    client.for_each_path_event(hash_part, |shown| -> Result<()> {
        if shown.index >= trusted.checkpoint.size {
            return Ok(()); // not in the checkpoint yet: nothing to prove it with
        }
        let event = prove(&client, &trusted, shown)?;
        let base = event.store_path.rsplit('/').next().unwrap_or_default();
        if !base.starts_with(hash_part) {
            bail!(
                "the log answered a lookup of {hash_part} with entry {} of another path",
                event.index
            );
        }
        if !json {
            let how = if event.kind == "build" {
                "built"
            } else {
                "signed"
            };
            println!(
                "  entry {:<8} {:<24} {how:<6} {}  {} bytes",
                event.index,
                builder_name(&event.builder),
                event.nar_hash,
                event.nar_size
            );
        }
        name.get_or_insert_with(|| event.store_path.clone());
        let key = NixPublicKey::parse(&event.builder)
            .with_context(|| format!("entry {}: its builder key", event.index))?;
        match Claim::judge(&registry, &key, event.nar_hash, &event.kind, event.index) {
            Ok(claim) => claims.push(claim),
            Err(v) => void.push(v),
        }
        Ok(())
    })?;
    let name = name.unwrap_or_else(|| printable(store_path).into_owned());
    let verdict = PathVerdict::with_void(name, claims, void);
    let not_logged = verdict.verdict == Verdict::NotLogged;
    let events = verdict.claims.len();
    if json {
        let report = PathReport {
            verdict,
            proven_in: proven_in(&trusted),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}: {}", verdict.store_path, verdict.verdict);
        println!(
            "  {events} events, proven in checkpoint {} cosigned by {}",
            trusted.checkpoint.size,
            cosigners(&trusted.cosigned_by)
        );
    }
    Ok(if not_logged { EXIT_NOT_LOGGED } else { 0 })
}
