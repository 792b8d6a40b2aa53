//! Deciding a path (blocking): its events looked up in the log page by page, each entry of a
//! trusted builder decoded from its own bytes, its signature checked and its inclusion proven
//! in the accepted checkpoint, then `verifier::decision::decide`. A decision made at an older
//! checkpoint is brought forward by looking only at the events after it: the older checkpoint
//! was accepted only with a proof that the newer tree extends it, so what was proven in it
//! stays proven.

use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::decision::{by_identity, decide, listed_builder, Claim, Decision, Trust};
use reprolog_verifier::entry::Entry;
use reprolog_verifier::merkle;
use reprolog_verifier::nix::StorePath;
use reprolog_verifier::registry::KeyRegistry;

use crate::failure::Failure;
use crate::log::LogClient;

/// The store directory the gate serves (`/nix-cache-info`); entries of other stores do not
/// count.
pub const STORE_DIR: &str = "/nix/store";

/// The proven entries of trusted builders for one hash part, up to a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct Proven {
    /// In index order, one per (builder, store path, claim): a repeated claim proves
    /// nothing new.
    pub entries: Vec<(u64, Entry)>,
    /// Every event below this index was considered.
    pub scanned_to: u64,
}

/// Brings `prev` (or nothing) forward to checkpoint `cp`: looks up the path's events from
/// `prev.scanned_to` on and proves each new entry that counts for a listed builder under
/// `registry` (the log's, as of `cp`). Other entries cost no signature check and no proof. Returns the proven entries and how many proofs it
/// fetched.
pub fn prove_path(
    log: &LogClient,
    trust: &Trust,
    registry: &KeyRegistry,
    hash_part: &str,
    cp: &Checkpoint,
    prev: Option<&Proven>,
) -> Result<(Proven, u64), Failure> {
    let mut proven = prev.cloned().unwrap_or_default();
    let mut proofs = 0;
    if proven.scanned_to >= cp.size {
        return Ok((proven, proofs));
    }
    let mut after = proven.scanned_to.checked_sub(1);
    'pages: while let Some(page) = log.path_page(hash_part, after)? {
        for event in &page.events {
            let index = event.index;
            if index >= cp.size {
                break 'pages; // not in the checkpoint yet, nor anything after it
            }
            // The entry's own bytes, never the JSON's other fields.
            let bytes = event.entry.as_bytes();
            let entry = Entry::decode(bytes).map_err(|e| {
                Failure::Proof(format!("entry {index} of the log is malformed: {e}"))
            })?;
            if entry.store_path.hash_part() != hash_part {
                return Err(Failure::Proof(format!(
                    "the log answered a lookup of {hash_part} with entry {index}, of another path"
                )));
            }
            if entry.store_path.store_dir() != STORE_DIR
                || listed_builder(trust, registry, &entry.builder, index).is_none()
            {
                continue;
            }
            let claim = Claim::of(&entry);
            if proven.entries.iter().any(|(_, e)| {
                e.builder == entry.builder
                    && e.store_path == entry.store_path
                    && Claim::of(e) == claim
            }) {
                continue;
            }
            entry.verify_signature().map_err(|e| {
                Failure::Proof(format!(
                    "entry {index}: the builder signature of {} does not verify: {e}",
                    entry.builder.name
                ))
            })?;
            let proof = log.inclusion_proof(index, cp.size)?;
            proofs += 1;
            merkle::verify_inclusion(&proof, index, cp.size, &merkle::leaf_hash(bytes), &cp.root)
                .map_err(|e| {
                Failure::Proof(format!(
                    "entry {index} is not proven in the checkpoint of size {}: {e}",
                    cp.size
                ))
            })?;
            proven.entries.push((index, entry));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    proven.scanned_to = cp.size;
    Ok((proven, proofs))
}

/// The trust file's decision over proven entries, each counted for the listed builder its key
/// serves under `registry` (entries proven at an older checkpoint may have been voided since,
/// by a revocation as of their index). The store path is the one trusted builders logged;
/// when none did, only the hash part is known and the decision names `/nix/store/<hash part>`.
pub fn decision_of(
    trust: &Trust,
    registry: &KeyRegistry,
    hash_part: &str,
    proven: &Proven,
) -> Result<Decision, Failure> {
    let mut paths: Vec<&StorePath> = proven.entries.iter().map(|(_, e)| &e.store_path).collect();
    paths.sort();
    paths.dedup();
    match paths.as_slice() {
        [] => {
            let placeholder = StorePath::parse(&format!("{STORE_DIR}/{hash_part}-unknown"))
                .map_err(|e| Failure::BadRequest(format!("{hash_part}: {e}")))?;
            let mut d = decide(trust, &placeholder, &[]);
            d.store_path = format!("{STORE_DIR}/{hash_part}");
            Ok(d)
        }
        [path] => Ok(decide(
            trust,
            path,
            &by_identity(trust, registry, &proven.entries),
        )),
        more => Err(Failure::Ambiguous(format!(
            "trusted builders logged {} different store paths with the hash part {hash_part}",
            more.len()
        ))),
    }
}
