//! `reprolog monitor`: follow the whole log through its tiles and check everything: the
//! checkpoint against the policy, consistency with the last checkpoint seen, every entry's
//! builder signature, and the tree hash. It reports new entries and conflicting NAR hashes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use reprolog_verifier::merkle::{self, CompactRange, Hash};
use serde::{Deserialize, Serialize};

use crate::common::{load_policy, log_client, read_entries, trusted_checkpoint};

pub struct MonitorArgs {
    pub log: Option<String>,
    pub policy: PathBuf,
    pub state: PathBuf,
    pub once: bool,
    pub interval: Duration,
}

/// What the monitor remembers between runs.
#[derive(Default, Serialize, Deserialize)]
struct State {
    origin: String,
    size: u64,
    /// The right edge of the tree (`CompactRange`), base64.
    edge: Vec<String>,
    /// For each store path: NAR hash → builders that signed it.
    paths: BTreeMap<String, BTreeMap<String, Vec<String>>>,
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

pub fn run(args: MonitorArgs) -> Result<()> {
    let policy = load_policy(&args.policy)?;
    let client = log_client(args.log.as_deref(), Some(&policy))?;
    let mut state: State = match std::fs::read(&args.state) {
        Ok(b) => serde_json::from_slice(&b).context("the state file is corrupt")?,
        Err(_) => State::default(),
    };
    loop {
        step(&client, &policy, &mut state)?;
        let tmp = args.state.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&state)?)?;
        std::fs::rename(&tmp, &args.state)?;
        if args.once {
            return Ok(());
        }
        std::thread::sleep(args.interval);
    }
}

fn step(
    client: &crate::client::LogClient,
    policy: &reprolog_verifier::policy::Policy,
    state: &mut State,
) -> Result<()> {
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
    let mut new = 0u64;
    let mut conflicts = Vec::new();
    read_entries(client, &mut range, cp.size, |index, entry, _| {
        new += 1;
        let hashes = state.paths.entry(entry.store_path.to_string()).or_default();
        let nar = entry.nar_hash.to_nix32();
        let builder = entry.builder.name.clone();
        for (other, builders) in hashes.iter() {
            if *other != nar {
                conflicts.push(format!(
                    "conflict at entry {index}: {} is {nar} by {builder} but {other} by {}",
                    entry.store_path,
                    builders.join(", ")
                ));
            }
        }
        let list = hashes.entry(nar).or_default();
        if !list.contains(&builder) {
            list.push(builder);
        }
    })
    .context("INVALID ENTRY")?;
    if range.root() != cp.root {
        bail!(
            "TREE MISMATCH: the entries hash to another root than checkpoint {}",
            cp.size
        );
    }
    state.origin = cp.origin.clone();
    state.size = cp.size;
    state.edge = range.hashes().iter().map(|h| B64.encode(h)).collect();
    let by = if trusted.cosigned_by.is_empty() {
        "no witness".into()
    } else {
        trusted.cosigned_by.join(", ")
    };
    println!(
        "{} at size {}: {new} new entries checked, cosigned by {by}",
        cp.origin, cp.size
    );
    for c in &conflicts {
        println!("  {c}");
    }
    Ok(())
}
