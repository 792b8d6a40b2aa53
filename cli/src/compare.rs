//! `reprolog compare`: what did different builders produce for the same store path? Like
//! `guix challenge`, but from logged claims, each proven in the log before it is shown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::client::LogClient;
use anyhow::{bail, Context, Result};
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::compare::{Claim, PathVerdict, Summary, VoidClaim};
use reprolog_verifier::entry::{Entry, LogEntry};
use reprolog_verifier::merkle::CompactRange;
use reprolog_verifier::nix::nix32;
use reprolog_verifier::note::Note;
use reprolog_verifier::text::printable;
use serde::Serialize;

use crate::common::{
    load_policy, policy_log_key, prove_entry, proven_registry, read_entries, trusted_checkpoint,
};

pub struct CompareArgs {
    pub log: Option<String>,
    pub policy: Option<PathBuf>,
    pub builders: Option<Vec<String>>,
    pub paths: Vec<String>,
    pub all: bool,
    pub json: bool,
    /// Count only builders that attested building the output.
    pub require_built: bool,
}

/// What `compare --json` prints.
#[derive(Serialize)]
struct CompareReport<'a> {
    /// The checkpoint every claim is proven in.
    checkpoint_size: u64,
    paths: &'a [PathVerdict],
    summary: Summary,
}

/// Exit codes (also in `--help`).
pub const EXIT_AGREE: i32 = 0;
pub const EXIT_UNREPRODUCED: i32 = 2;
pub const EXIT_NOT_LOGGED: i32 = 3;

/// The checkpoint to prove claims against: trusted through the policy, or as the log serves it.
fn checkpoint(client: &LogClient, args: &CompareArgs) -> Result<Checkpoint> {
    match &args.policy {
        Some(p) => Ok(trusted_checkpoint(client, &load_policy(p)?)?.checkpoint),
        None => {
            eprintln!("warning: no --policy, so the log's checkpoint is taken as it is served");
            let note = Note::parse(&client.checkpoint()?).context("the log's checkpoint")?;
            Ok(Checkpoint::parse(note.text())?)
        }
    }
}

pub fn run(args: CompareArgs) -> Result<i32> {
    let policy = args.policy.as_deref().map(load_policy).transpose()?;
    let client = crate::common::log_client(args.log.as_deref(), policy.as_ref())?;
    let cp = checkpoint(&client, &args)?;
    let wanted = |builder: &str| {
        args.builders
            .as_ref()
            .is_none_or(|b| b.iter().any(|n| n == builder))
    };
    // Builders are identities, and each signature is judged by the registry as of its index.
    let registry = proven_registry(&client, &cp, policy_log_key(policy.as_ref(), &cp.origin))?;
    let mut by_path: BTreeMap<String, (Vec<Claim>, Vec<VoidClaim>)> = BTreeMap::new();
    let mut seen_builders: BTreeSet<String> = BTreeSet::new();
    let mut add = |entry: &Entry, index: u64| {
        let (claims, void) = by_path.entry(entry.store_path.to_string()).or_default();
        let kind = entry.kind.as_str();
        match Claim::judge(
            &registry,
            &entry.builder,
            entry.nar_hash.to_nix32(),
            kind,
            index,
        ) {
            Ok(claim) => {
                seen_builders.insert(claim.builder.clone());
                if wanted(&claim.builder) && (!args.require_built || claim.built()) {
                    claims.push(claim);
                }
            }
            Err(v) => void.push(v),
        }
    };
    if args.all {
        // Reading every entry and rebuilding the root proves each of them at once.
        let mut range = CompactRange::new();
        read_entries(&client, &mut range, cp.size, |index, entry, _| {
            if let LogEntry::Signing(entry) = entry {
                add(entry, index);
            }
            Ok(())
        })?;
        if range.root() != cp.root {
            bail!(
                "the log's entries do not hash to its checkpoint root at size {}",
                cp.size
            );
        }
    } else {
        if args.paths.is_empty() {
            bail!("name store paths, or --all");
        }
        for path in &args.paths {
            let hash_part = hash_part_of(path)?;
            client.for_each_path_event(hash_part, |event| -> Result<()> {
                let index = event.index;
                if index >= cp.size {
                    return Ok(()); // not in the checkpoint yet: nothing to prove it with
                }
                let entry = prove_entry(&client, &cp, index, event.entry.as_bytes())?;
                if entry.store_path.hash_part() != hash_part {
                    bail!("the log answered a lookup of {hash_part} with entry {index} of another path");
                }
                add(&entry, index);
                Ok(())
            })?;
        }
    }
    if let Some(names) = &args.builders {
        let registered = client.builders()?;
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| {
                !seen_builders.contains(*n)
                    && !registered.builders.iter().any(|b| &b.identity == *n)
            })
            .collect();
        if !unknown.is_empty() {
            let known: BTreeSet<&str> = registered
                .builders
                .iter()
                .map(|b| b.identity.as_str())
                .collect();
            bail!(
                "no builder named {} is registered with the log or signed what was read \
                 (registered: {})",
                unknown
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.into_iter().collect::<Vec<_>>().join(", ")
                }
            );
        }
    }
    let mut verdicts: Vec<PathVerdict> = by_path
        .into_iter()
        .map(|(path, (claims, void))| PathVerdict::with_void(path, claims, void))
        .collect();
    // A named path with no claim (by the builders asked for) is said, never left out.
    for path in &args.paths {
        let hash_part = hash_part_of(path)?;
        if !verdicts
            .iter()
            .any(|v| hash_part_of(&v.store_path).ok() == Some(hash_part))
        {
            verdicts.push(PathVerdict::new(path.clone(), Vec::new()));
        }
    }
    report(&verdicts, cp.size, args.json)
}

/// The hash part of a store path, or of a hash part given alone.
pub fn hash_part_of(path: &str) -> Result<&str> {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.get(..32)
        .filter(|h| h.bytes().all(|b| nix32::ALPHABET.contains(&b)))
        .filter(|_| base.len() == 32 || base.as_bytes().get(32) == Some(&b'-'))
        .with_context(|| format!("{} is not a store path", printable(path)))
}

fn report(verdicts: &[PathVerdict], size: u64, json: bool) -> Result<i32> {
    let summary = Summary::of(verdicts);
    if json {
        let out = CompareReport {
            checkpoint_size: size,
            paths: verdicts,
            summary: summary.clone(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for v in verdicts {
            println!("{}: {}", v.store_path, v.verdict);
            for c in &v.claims {
                let how = if c.built() { "built" } else { "signed" };
                let key = c
                    .key
                    .as_ref()
                    .map_or(String::new(), |k| format!(", key {k}"));
                println!(
                    "  {:<24} {how:<6} {}  (entry {}{key})",
                    c.builder, c.nar_hash, c.index
                );
            }
            for c in &v.void {
                println!(
                    "  VOID {:<19} {}  (entry {}): {}",
                    c.key, c.nar_hash, c.index, c.reason
                );
            }
            for b in &v.inconsistent_builders {
                println!("  {b}: its own claims disagree (a build attestation and a cache signature, or two builds)");
            }
        }
        let rate = summary
            .reproducibility
            .map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0));
        println!(
            "{} paths in checkpoint {size}: {} reproduced, {} unreproduced, {} one-builder, \
             {} not-logged; reproducibility {rate} of {} compared",
            summary.paths,
            summary.reproduced,
            summary.unreproduced,
            summary.one_builder,
            summary.not_logged,
            summary.reproduced + summary.unreproduced,
        );
    }
    Ok(if summary.unreproduced > 0 {
        EXIT_UNREPRODUCED
    } else if summary.not_logged > 0 {
        EXIT_NOT_LOGGED
    } else {
        EXIT_AGREE
    })
}
