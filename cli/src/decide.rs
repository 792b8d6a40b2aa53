//! `reprolog decide`: would the gate let Nix substitute these paths? The same decision as
//! `reprolog-gate` (`verifier::decision`), from claims proven in a checkpoint the log policy
//! trusts.

use std::path::Path;

use anyhow::{bail, Context, Result};
use reprolog_verifier::decision::{by_identity, decide, listed_builder, Decision, Trust};
use reprolog_verifier::entry::Entry;
use reprolog_verifier::nix::StorePath;
use reprolog_verifier::registry::KeyRegistry;
use reprolog_verifier::text::printable;
use serde::Serialize;

use crate::client::LogClient;
use crate::common::{
    load_policy, log_client, policy_log_key, prove_entry, proven_registry, read_limited,
    trusted_checkpoint,
};

/// Exit code when some path is denied.
pub const EXIT_DENIED: i32 = 2;

/// One path's decision, as `--json` prints it.
#[derive(Serialize)]
struct Decided {
    #[serde(flatten)]
    decision: Decision,
    /// The checkpoint every claim was proven in.
    checkpoint_size: u64,
}

pub fn run(
    log: Option<&str>,
    log_policy: &Path,
    trust: &Path,
    paths: &[String],
    json: bool,
) -> Result<i32> {
    let policy = load_policy(log_policy)?;
    let client = log_client(log, Some(&policy))?;
    let text = String::from_utf8(read_limited(trust, 1 << 20)?)
        .with_context(|| format!("{} is not UTF-8", trust.display()))?;
    let trust = Trust::parse(&text).with_context(|| format!("{}", trust.display()))?;
    let checkpoint = trusted_checkpoint(&client, &policy)?.checkpoint;
    // Listed builders are identities: a key one rotated to counts as it, and a signature its
    // key could not make at its index counts for no one.
    let registry = proven_registry(
        &client,
        &checkpoint,
        policy_log_key(Some(&policy), &checkpoint.origin),
    )?;
    let mut decided = Vec::new();
    for path in paths {
        let store_path = StorePath::parse(path)
            .with_context(|| format!("{} is not a store path", printable(path)))?;
        let entries = proven_entries(&client, &trust, &registry, &store_path, &checkpoint)?;
        decided.push(Decided {
            decision: decide(
                &trust,
                &store_path,
                &by_identity(&trust, &registry, &entries),
            ),
            checkpoint_size: checkpoint.size,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&decided)?);
    } else {
        for d in &decided {
            let verdict = if d.decision.allowed {
                "allowed"
            } else {
                "denied"
            };
            println!(
                "{}: {verdict}: {}",
                d.decision.store_path,
                d.decision.outcome.describe()
            );
            for b in &d.decision.builders {
                match (&b.claim, b.index) {
                    (Some(c), Some(i)) => println!(
                        "  {:<24} {}  (entry {i}{})",
                        b.builder,
                        c.nar_hash,
                        if b.also_claimed_other {
                            ", and other claims"
                        } else {
                            ""
                        }
                    ),
                    _ => println!("  {:<24} nothing logged", b.builder),
                }
            }
        }
    }
    Ok(if decided.iter().all(|d| d.decision.allowed) {
        0
    } else {
        EXIT_DENIED
    })
}

/// The path's entries by trusted builders, each decoded from its own bytes, its signature
/// checked and its inclusion in `checkpoint` proven. Entries of other keys cost no proof.
fn proven_entries(
    client: &LogClient,
    trust: &Trust,
    registry: &KeyRegistry,
    store_path: &StorePath,
    checkpoint: &reprolog_verifier::checkpoint::Checkpoint,
) -> Result<Vec<(u64, Entry)>> {
    let mut entries = Vec::new();
    client.for_each_path_event(store_path.hash_part(), |event| -> Result<()> {
        let index = event.index;
        if index >= checkpoint.size {
            return Ok(()); // not in the checkpoint yet: nothing to prove it with
        }
        let bytes = event.entry.as_bytes();
        // Only entries of trusted keys count, so only they are worth a proof.
        let unproven = Entry::decode(bytes).with_context(|| format!("entry {index}"))?;
        if listed_builder(trust, registry, &unproven.builder, index).is_none() {
            return Ok(());
        }
        let entry = prove_entry(client, checkpoint, index, bytes)?;
        if entry.store_path.hash_part() != store_path.hash_part() {
            bail!(
                "the log answered a lookup of {} with entry {index} of another path",
                store_path.hash_part()
            );
        }
        entries.push((index, entry));
        Ok(())
    })?;
    Ok(entries)
}
