//! `reprolog compare`: what did different builders produce for the same store path? Like
//! `guix challenge`, but from logged claims, each proven in the log before it is shown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::client::LogClient;
use anyhow::{bail, Context, Result};
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::entry::Entry;
use reprolog_verifier::merkle::{self, CompactRange};
use reprolog_verifier::note::Note;
use serde_json::json;

use crate::common::{load_policy, read_entries, trusted_checkpoint};

pub struct CompareArgs {
    pub log: Option<String>,
    pub policy: Option<PathBuf>,
    pub builders: Option<Vec<String>>,
    pub paths: Vec<String>,
    pub all: bool,
    pub json: bool,
}

/// One builder's proven claim about a path.
struct Claim {
    builder: String,
    nar_hash: String,
    index: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Reproduced,
    Unreproduced,
    OneBuilder,
}

impl Verdict {
    fn of(claims: &[Claim]) -> Self {
        let hashes: BTreeSet<&str> = claims.iter().map(|c| c.nar_hash.as_str()).collect();
        let builders: BTreeSet<&str> = claims.iter().map(|c| c.builder.as_str()).collect();
        if hashes.len() > 1 {
            Verdict::Unreproduced
        } else if builders.len() > 1 {
            Verdict::Reproduced
        } else {
            Verdict::OneBuilder
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::Unreproduced => "unreproduced",
            Verdict::OneBuilder => "built by one builder only",
        }
    }
}

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
    let mut by_path: BTreeMap<String, Vec<Claim>> = BTreeMap::new();
    let mut add = |entry: &Entry, index: u64| {
        if wanted(&entry.builder.name) {
            by_path
                .entry(entry.store_path.to_string())
                .or_default()
                .push(Claim {
                    builder: entry.builder.name.clone(),
                    nar_hash: entry.nar_hash.to_nix32(),
                    index,
                });
        }
    };
    if args.all {
        // Reading every entry and rebuilding the root proves each of them at once.
        let mut range = CompactRange::new();
        read_entries(&client, &mut range, cp.size, |index, entry, _| {
            add(entry, index)
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
            let base = path.rsplit('/').next().unwrap_or(path);
            let hash_part = base
                .get(..32)
                .with_context(|| format!("{path} is not a store path"))?;
            for event in client.path_events(hash_part)? {
                let index = event.index;
                if index >= cp.size {
                    continue; // not in the checkpoint yet: nothing to prove it with
                }
                let text = event.entry.as_bytes();
                let entry = Entry::decode(text).with_context(|| format!("entry {index}"))?;
                if entry.store_path.hash_part() != hash_part {
                    bail!("the log answered a lookup of {hash_part} with entry {index} of another path");
                }
                entry
                    .verify_signature()
                    .with_context(|| format!("entry {index}"))?;
                let proof = client.inclusion_proof(index, cp.size)?;
                merkle::verify_inclusion(
                    &proof,
                    index,
                    cp.size,
                    &merkle::leaf_hash(text),
                    &cp.root,
                )
                .with_context(|| {
                    format!("entry {index} is not proven in checkpoint {}", cp.size)
                })?;
                add(&entry, index);
            }
        }
    }
    report(&by_path, cp.size, args.json)
}

fn report(by_path: &BTreeMap<String, Vec<Claim>>, size: u64, json_out: bool) -> Result<i32> {
    let verdicts: Vec<(&String, Verdict)> =
        by_path.iter().map(|(p, c)| (p, Verdict::of(c))).collect();
    let count = |v: Verdict| verdicts.iter().filter(|(_, x)| *x == v).count();
    let (reproduced, unreproduced, single) = (
        count(Verdict::Reproduced),
        count(Verdict::Unreproduced),
        count(Verdict::OneBuilder),
    );
    let compared = reproduced + unreproduced;
    let rate = if compared == 0 {
        None
    } else {
        Some(reproduced as f64 / compared as f64)
    };
    if json_out {
        let paths: Vec<_> = verdicts
            .iter()
            .map(|(p, v)| {
                let claims: Vec<_> = by_path[*p]
                    .iter()
                    .map(
                        |c| json!({"builder": c.builder, "nar_hash": c.nar_hash, "index": c.index}),
                    )
                    .collect();
                json!({"store_path": p, "verdict": v.as_str(), "claims": claims})
            })
            .collect();
        let summary = json!({"checkpoint_size": size, "paths": verdicts.len(), "reproduced": reproduced,
            "unreproduced": unreproduced, "one_builder": single, "reproducibility": rate});
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"paths": paths, "summary": summary}))?
        );
    } else {
        for (path, verdict) in &verdicts {
            println!("{path}: {}", verdict.as_str());
            for c in &by_path[*path] {
                println!("  {:<24} {}  (entry {})", c.builder, c.nar_hash, c.index);
            }
        }
        let rate = rate.map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0));
        println!(
            "{} paths in checkpoint {size}: {reproduced} reproduced, {unreproduced} unreproduced, \
             {single} built by one builder only; reproducibility {rate} of {compared} compared",
            verdicts.len()
        );
    }
    Ok(if unreproduced > 0 { 2 } else { 0 })
}
