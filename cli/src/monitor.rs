//! `reprolog monitor`: follow the whole log through its tiles and check everything: the
//! checkpoint against the policy, consistency with the last checkpoint seen, every entry's
//! builder signature, the tree hash, and the key registry: every key event must apply by the
//! rules of `spec/entry.md`, and every signing event must be by a key that could sign at its
//! index. It reports new entries, the registry, and conflicting NAR hashes between builder
//! identities.
//!
//! Its state is what it needs to detect a fork: the origin, the size and the tree's right
//! edge (at most 64 hashes), whatever the log's size; and the key events read so far (few),
//! to recompute the registry. Conflicts of a new entry with earlier
//! ones are found by looking its path up in the log, once per path per check, and an earlier
//! entry is reported only once proven in the checkpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use reprolog_verifier::merkle::{self, CompactRange, Hash};
use serde::{Deserialize, Serialize};

use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::entry::{Entry, EntryKind, LogEntry};
use reprolog_verifier::nix::StorePath;
use reprolog_verifier::policy::Policy;
use reprolog_verifier::registry::KeyRegistry;

use crate::client::LogClient;
use crate::common::{
    cosigners, load_policy, log_client, policy_log_key, read_entries, state_file,
    trusted_checkpoint,
};

pub struct MonitorArgs {
    pub log: Option<String>,
    pub policy: PathBuf,
    pub state: Option<PathBuf>,
    pub once: bool,
    pub interval: Duration,
    pub fail_on_conflict: bool,
    pub json: bool,
}

/// Who claimed, and how: `builder (built)` for a build attestation, `builder (signed)` for
/// a cache signature; `None` for a signature that does not count (its key could not sign at
/// `index`, by the registry as of it).
fn claimant(registry: &KeyRegistry, entry: &Entry, index: u64) -> Option<String> {
    let identity = registry
        .status(&entry.builder, index)
        .identity()?
        .to_owned();
    let how = match entry.kind {
        EntryKind::Build => "built",
        EntryKind::CacheSignature => "signed",
    };
    Some(format!("{identity} ({how})"))
}

/// One key of the registry as the monitor recomputed it.
#[derive(Serialize)]
struct KeyReport {
    key: String,
    identity: String,
    status: String,
}

/// A new entry whose NAR hash differs from another entry's for the same store path.
#[derive(Serialize)]
struct Conflict {
    store_path: String,
    index: u64,
    nar_hash: String,
    builder: String,
    other_index: u64,
    other_nar_hash: String,
    other_builder: String,
}

/// One check, as `--json` prints it (one line per check).
#[derive(Serialize)]
struct CheckReport {
    origin: String,
    size: u64,
    new_entries: u64,
    cosigned_by: Vec<String>,
    conflicts: Vec<Conflict>,
    /// Every key the log has registered, recomputed from its key events.
    keys: Vec<KeyReport>,
}

/// What the monitor remembers between runs.
#[derive(Default, Serialize, Deserialize)]
struct State {
    origin: String,
    size: u64,
    /// The right edge of the tree (`CompactRange`), base64.
    edge: Vec<String>,
    /// The key events read so far, by index, as entry text: the registry is replayed from
    /// them.
    #[serde(default)]
    key_events: Vec<(u64, String)>,
}

fn decode_edge(state: &State) -> Result<CompactRange> {
    let hashes = state
        .edge
        .iter()
        .map(|h| -> Result<Hash> {
            B64.decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .context("state: bad hash")
        })
        .collect::<Result<Vec<_>>>()?;
    CompactRange::from_parts(state.size, hashes).context("state: edge does not match size")
}

/// The default state file: one per log URL, so that two logs never share one.
fn default_state_name(url: &str) -> String {
    let name: String = url
        .split("://")
        .last()
        .unwrap_or(url)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("monitor-{name}.state")
}

pub fn run(args: MonitorArgs) -> Result<i32> {
    let policy = load_policy(&args.policy)?;
    let client = log_client(args.log.as_deref(), Some(&policy))?;
    let state_path = match args.state {
        Some(p) => state_file(Some(p), "")?,
        None => state_file(None, &default_state_name(client.base_url()))?,
    };
    let mut state: State = match std::fs::read(&state_path) {
        // Old state files also held every path; those fields are ignored.
        Ok(b) => serde_json::from_slice(&b).context("the state file is corrupt")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(e).with_context(|| format!("{}", state_path.display())),
    };
    loop {
        let report = step(&client, &policy, &mut state)?;
        let tmp = state_path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&state)?)?;
        std::fs::rename(&tmp, &state_path)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "{} at size {}: {} new entries checked, cosigned by {}",
                report.origin,
                report.size,
                report.new_entries,
                cosigners(&report.cosigned_by)
            );
            let signing = report.keys.iter().filter(|k| k.status.starts_with("valid"));
            println!(
                "  registry: {} keys, {} may sign",
                report.keys.len(),
                signing.count()
            );
            for c in &report.conflicts {
                println!(
                    "  conflict at entry {}: {} is {} by {} but {} by {} (entry {})",
                    c.index,
                    c.store_path,
                    c.nar_hash,
                    c.builder,
                    c.other_nar_hash,
                    c.other_builder,
                    c.other_index
                );
            }
        }
        if args.fail_on_conflict && !report.conflicts.is_empty() {
            return Ok(2);
        }
        if args.once {
            return Ok(0);
        }
        std::thread::sleep(args.interval);
    }
}

/// Conflicts of the new entries (`new`, by path) with each other and with earlier entries of
/// their paths, which the log's path lookup finds and an inclusion proof confirms.
fn conflicts(
    client: &LogClient,
    checkpoint: &Checkpoint,
    registry: &KeyRegistry,
    from: u64,
    new: BTreeMap<String, Vec<(u64, String, String)>>,
) -> Result<Vec<Conflict>> {
    let mut found = Vec::new();
    for (store_path, events) in new {
        let first_new = events[0].0;
        let mut earlier: Vec<(u64, String, String)> = Vec::new();
        let hash_part = StorePath::parse(&store_path)?.hash_part().to_owned();
        // A check that starts from the empty tree has no earlier entries to look up. Proven
        // below, only if it conflicts.
        if from > 0 {
            client.for_each_path_event(&hash_part, |e| -> Result<()> {
                if e.index >= first_new {
                    return Ok(());
                }
                let entry = Entry::decode(e.entry.as_bytes())
                    .with_context(|| format!("INVALID ENTRY {}", e.index))?;
                if entry.store_path.to_string() != store_path {
                    bail!(
                        "the log answered a lookup of {hash_part} with entry {} of another path",
                        e.index
                    );
                }
                if let Some(who) = claimant(registry, &entry, e.index) {
                    earlier.push((e.index, entry.nar_hash.to_nix32(), who));
                }
                Ok(())
            })?;
        }
        let mut seen = earlier;
        for (index, nar, builder) in events {
            if let Some((oi, on, ob)) = seen.iter().find(|(_, h, _)| *h != nar) {
                let proof = client.inclusion_proof(*oi, checkpoint.size)?;
                let other = client.entry(*oi)?;
                merkle::verify_inclusion(
                    &proof,
                    *oi,
                    checkpoint.size,
                    &merkle::leaf_hash(other.entry.as_bytes()),
                    &checkpoint.root,
                )
                .with_context(|| {
                    format!("entry {oi} is not proven in checkpoint {}", checkpoint.size)
                })?;
                found.push(Conflict {
                    store_path: store_path.clone(),
                    index,
                    nar_hash: nar.clone(),
                    builder: builder.clone(),
                    other_index: *oi,
                    other_nar_hash: on.clone(),
                    other_builder: ob.clone(),
                });
            }
            seen.push((index, nar, builder));
        }
    }
    Ok(found)
}

fn step(client: &LogClient, policy: &Policy, state: &mut State) -> Result<CheckReport> {
    let trusted = trusted_checkpoint(client, policy)?;
    let cp = &trusted.checkpoint;
    if !state.origin.is_empty() && state.origin != cp.origin {
        bail!(
            "the log's origin changed from {} to {}",
            state.origin,
            cp.origin
        );
    }
    let mut range = decode_edge(state)?;
    let old_root = range.root();
    if cp.size < state.size {
        bail!(
            "ROLLBACK: the checkpoint is at size {} but size {} was seen before",
            cp.size,
            state.size
        );
    }
    if cp.size == state.size && cp.root != old_root {
        bail!("FORK: two different roots for size {}", cp.size);
    }
    if state.size > 0 && cp.size > state.size {
        let proof = client.consistency_proof(state.size, cp.size)?;
        merkle::verify_consistency(&proof, state.size, cp.size, &old_root, &cp.root).map_err(
            |e| {
                anyhow::anyhow!(
                    "FORK: checkpoint {} is not consistent with checkpoint {}: {e}",
                    cp.size,
                    state.size
                )
            },
        )?;
    }
    let log_key = policy_log_key(Some(policy), &cp.origin)
        .with_context(|| format!("the policy names no key for the log {}", cp.origin))?;
    // The registry as of the last check, from the key events read then.
    let mut registry = KeyRegistry::new(log_key.clone());
    for (index, text) in &state.key_events {
        let LogEntry::Key(event) = LogEntry::decode(text.as_bytes())
            .with_context(|| format!("state: key event {index}"))?
        else {
            bail!("state: entry {index} is not a key event");
        };
        registry
            .apply(*index, &event)
            .with_context(|| format!("state: key event {index}"))?;
    }
    let mut new_entries = 0u64;
    let mut key_events = Vec::new();
    let mut by_path: BTreeMap<String, Vec<(u64, String, String)>> = BTreeMap::new();
    read_entries(client, &mut range, cp.size, |index, entry, bytes| {
        new_entries += 1;
        match entry {
            LogEntry::Key(event) => {
                registry
                    .apply(index, event)
                    .with_context(|| format!("INVALID KEY EVENT at index {index}"))?;
                key_events.push((index, String::from_utf8_lossy(bytes).into_owned()));
            }
            LogEntry::Signing(entry) => {
                // At its index, before any later revocation, the key must have been able to
                // sign: the log takes nothing else.
                let Some(who) = claimant(&registry, entry, index) else {
                    bail!(
                        "UNREGISTERED KEY: entry {index} is signed by {}, which is {}",
                        entry.builder.name,
                        registry.status(&entry.builder, index)
                    );
                };
                by_path
                    .entry(entry.store_path.to_string())
                    .or_default()
                    .push((index, entry.nar_hash.to_nix32(), who));
            }
        }
        Ok(())
    })
    .context("INVALID ENTRY")?;
    if range.root() != cp.root {
        bail!(
            "TREE MISMATCH: the entries hash to another root than checkpoint {}",
            cp.size
        );
    }
    let conflicts = conflicts(client, cp, &registry, state.size, by_path)?;
    state.key_events.extend(key_events);
    state.origin = cp.origin.clone();
    state.size = cp.size;
    state.edge = range.hashes().iter().map(|h| B64.encode(h)).collect();
    Ok(CheckReport {
        origin: cp.origin.clone(),
        size: cp.size,
        new_entries,
        cosigned_by: trusted.cosigned_by.clone(),
        conflicts,
        keys: registry
            .records()
            .map(|r| KeyReport {
                key: r.key.to_string(),
                identity: r.identity.clone(),
                status: r.current_status().to_string(),
            })
            .collect(),
    })
}
