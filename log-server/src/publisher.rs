//! Checkpoints: signs the durable tree size and publishes it, within about a second of the
//! tree growing. A checkpoint is only ever made for a size the store has committed, is saved
//! durably before anyone can fetch it, and never goes backwards. One task does all of it, so
//! two checkpoints are never saved at once, including the last one at shutdown.
//!
//! While the tree does not grow, witnesses that have not cosigned the published checkpoint
//! are asked again every `retry`, and their cosignatures are added to it: a witness that was
//! down cosigns soon after it comes back, not at the next entry, which on a quiet log may be
//! hours away.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reprolog_verifier::checkpoint::{Checkpoint, SignedCheckpoint};
use reprolog_verifier::merkle;
use reprolog_verifier::note::{Note, SignerKey};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::storage::LogStore;
use crate::witnessing::Witnesses;
use reprolog_verifier::locks;

/// The checkpoint clients see.
#[derive(Clone, Debug)]
pub struct Published {
    pub checkpoint: Checkpoint,
    /// The signed note, as served at `/checkpoint`.
    pub note: String,
}

pub type SharedCheckpoint = Arc<RwLock<Arc<Published>>>;

/// A checkpoint for `size`, signed by the log.
fn sign<S: LogStore>(store: &S, key: &SignerKey, size: u64) -> Result<(Checkpoint, Note)> {
    let root = merkle::tree_hash(size, store).context("computing the tree root")?;
    let checkpoint = Checkpoint::new(key.name(), size, root);
    let mut note = Note::new(&checkpoint.to_text())?;
    note.sign(key);
    Ok((checkpoint, note))
}

/// Durably saves a signed checkpoint; only then may it be published.
fn save<S: LogStore>(store: &S, checkpoint: Checkpoint, note: &Note) -> Result<Published> {
    let note = note.encode();
    store.save_checkpoint(checkpoint.size, note.as_bytes())?;
    Ok(Published { checkpoint, note })
}

/// Signs a checkpoint for `size`, gathers cosignatures when there are witnesses, and saves
/// it. `None` when the log waits for a quorum of witnesses and did not get one.
fn make<S: LogStore>(
    store: &S,
    key: &SignerKey,
    size: u64,
    witnesses: Option<&Witnesses>,
) -> Result<Option<Published>> {
    let (checkpoint, mut note) = sign(store, key, size)?;
    if let Some(w) = witnesses {
        for sig in w.gather(store, &note, &checkpoint) {
            note.add_signature(sig);
        }
        if w.wait_for_quorum && !w.quorum_met(&note.encode()) {
            tracing::warn!("no witness quorum for size {size}; not publishing it yet");
            return Ok(None);
        }
    }
    save(store, checkpoint, &note).map(Some)
}

/// Resumes from storage: checks the stored tree against the last checkpoint and serves that
/// checkpoint until the publisher signs a newer one. With none stored, the first checkpoint is
/// the empty tree's, which every later tree extends.
pub fn resume<S: LogStore>(store: &S, key: &SignerKey) -> Result<Published> {
    let size = store.size()?;
    let Some(stored) = store.checkpoint()? else {
        let (checkpoint, note) = sign(store, key, 0)?;
        return save(store, checkpoint, &note);
    };
    let opened = SignedCheckpoint::open(&stored, &key.verifier_key(), &[])
        .context("the stored checkpoint does not verify under the log key")?;
    let cp = opened.checkpoint;
    if cp.size > size {
        bail!(
            "the last checkpoint is for size {} but only {size} entries are stored",
            cp.size
        );
    }
    let root = merkle::tree_hash(cp.size, store)?;
    if root != cp.root {
        bail!(
            "the stored tree does not match the last checkpoint at size {}",
            cp.size
        );
    }
    let note = String::from_utf8(stored).context("stored checkpoint is not UTF-8")?;
    Ok(Published {
        checkpoint: cp,
        note,
    })
}

/// Adds the cosignatures of witnesses missing from the published checkpoint, if any of them
/// answer now, and saves the result. `None` when nothing was added.
fn recosign<S: LogStore>(
    store: &S,
    current: &Published,
    witnesses: &Witnesses,
) -> Result<Option<Published>> {
    let mut note = Note::parse(current.note.as_bytes()).context("the published checkpoint")?;
    let missing = witnesses.missing(&note);
    if missing.is_empty() {
        return Ok(None);
    }
    let added = witnesses.gather_from(store, &note, &current.checkpoint, &missing);
    if added.is_empty() {
        return Ok(None);
    }
    for sig in added {
        note.add_signature(sig);
    }
    save(store, current.checkpoint.clone(), &note).map(Some)
}

fn latest(published: &SharedCheckpoint) -> Arc<Published> {
    Arc::clone(&locks::read(published))
}

/// What the publisher signs with, whom it asks, and how often.
pub struct Settings {
    pub key: SignerKey,
    pub witnesses: Option<Arc<Witnesses>>,
    /// The least time between checkpoints.
    pub interval: Duration,
    /// While idle, how often witnesses missing from the published checkpoint are asked again.
    pub retry: Duration,
}

/// Publishes a new checkpoint whenever the durable size grows, at most once per `interval`,
/// and once at start. With witnesses it first asks them to cosign, and retries every
/// `interval` while it waits for a quorum; while idle it asks missing witnesses again every
/// `retry`. When `finish` turns true it publishes a checkpoint of the durable size if it can,
/// once, and returns the size of the checkpoint it leaves published.
pub async fn run<S: LogStore>(
    store: Arc<S>,
    mut size: watch::Receiver<u64>,
    published: SharedCheckpoint,
    metrics: Arc<Metrics>,
    settings: Settings,
    mut finish: watch::Receiver<bool>,
) -> u64 {
    let Settings {
        key,
        witnesses,
        interval,
        retry,
    } = settings;
    let published_size = |p: &SharedCheckpoint| latest(p).checkpoint.size;
    // At start the stored checkpoint is signed again for the current size, and cosigned.
    let mut pending = true;
    let mut finishing = false;
    loop {
        finishing |= *finish.borrow();
        if !pending && !finishing {
            let missing = match &witnesses {
                Some(w) => Note::parse(latest(&published).note.as_bytes())
                    .map(|n| !w.missing(&n).is_empty())
                    .unwrap_or(false),
                None => false,
            };
            tokio::select! {
                changed = size.changed() => {
                    if changed.is_err() {
                        return published_size(&published);
                    }
                }
                () = tokio::time::sleep(retry), if missing => {
                    let (store, p, w) = (Arc::clone(&store), latest(&published), witnesses.clone());
                    let again = tokio::task::spawn_blocking(move || match w {
                        Some(w) => recosign(&*store, &p, &w),
                        None => Ok(None),
                    });
                    match again.await {
                        Ok(Ok(Some(p))) => *locks::write(&published) = Arc::new(p),
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => tracing::error!("adding cosignatures: {e:#}"),
                        Err(e) => tracing::error!("cosigning task failed: {e}"),
                    }
                    continue;
                }
                changed = finish.changed() => finishing = changed.is_err() || *finish.borrow(),
            }
        }
        if !finishing {
            tokio::time::sleep(interval).await;
        }
        let target = *size.borrow_and_update();
        let current = published_size(&published);
        if target < current || (target == current && !pending) {
            if finishing {
                return current;
            }
            continue;
        }
        let (store, key, w) = (Arc::clone(&store), key.clone(), witnesses.clone());
        match tokio::task::spawn_blocking(move || make(&*store, &key, target, w.as_deref())).await {
            Ok(Ok(Some(p))) => {
                pending = false;
                metrics.checkpoint_size.store(target, Relaxed);
                metrics.checkpoints_published.fetch_add(1, Relaxed);
                *locks::write(&published) = Arc::new(p);
            }
            Ok(Ok(None)) => pending = true,
            Ok(Err(e)) => tracing::error!("publishing a checkpoint for size {target}: {e:#}"),
            Err(e) => tracing::error!("checkpoint task failed: {e}"),
        }
        if finishing {
            return published_size(&published);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::EmbeddedStore;
    use crate::storage::{AppendBatch, NewEntry};

    fn store_with(n: u64) -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        let entries: Vec<NewEntry> = (0..n)
            .map(|i| NewEntry {
                bytes: format!("entry {i}").into_bytes(),
                leaf: merkle::leaf_hash(format!("entry {i}").as_bytes()),
                role: crate::storage::EntryRole::Signing {
                    hash_part: "0".repeat(32),
                    builder: reprolog_verifier::nix::NixSecretKey::from_seed("b", [1; 32])
                        .public_key(),
                    nar_hash: [0; 32],
                },
            })
            .collect();
        let leaves: Vec<_> = entries.iter().map(|e| e.leaf).collect();
        let nodes = merkle::append_leaves(0, &leaves, &store).unwrap();
        store
            .append(&AppendBatch {
                start_size: 0,
                entries,
                nodes,
            })
            .unwrap();
        (dir, store)
    }

    #[test]
    fn resume_refuses_a_tree_that_does_not_match_its_checkpoint() {
        let key = SignerKey::from_seed("example.com/log", [1; 32]).unwrap();
        let (_dir, store) = store_with(10);
        // A fresh store starts from the empty tree's checkpoint.
        assert_eq!(resume(&store, &key).unwrap().checkpoint.size, 0);
        let (checkpoint, note) = sign(&store, &key, 10).unwrap();
        save(&store, checkpoint.clone(), &note).unwrap();
        assert_eq!(resume(&store, &key).unwrap().checkpoint, checkpoint);

        // The last checkpoint names another root: the stored tree is not what was published.
        let forged = Checkpoint::new(key.name(), 10, [9; 32]);
        let mut bad = Note::new(&forged.to_text()).unwrap();
        bad.sign(&key);
        store.save_checkpoint(10, bad.encode().as_bytes()).unwrap();
        let err = resume(&store, &key).unwrap_err().to_string();
        assert!(err.contains("does not match the last checkpoint"), "{err}");

        // A checkpoint beyond the stored entries, or signed by another key, is refused too.
        let (mut ahead, _) = sign(&store, &key, 10).unwrap();
        ahead.size = 11;
        let mut note = Note::new(&ahead.to_text()).unwrap();
        note.sign(&key);
        store.save_checkpoint(11, note.encode().as_bytes()).unwrap();
        assert!(resume(&store, &key)
            .unwrap_err()
            .to_string()
            .contains("only 10 entries"));
        let other = SignerKey::from_seed("example.com/log", [2; 32]).unwrap();
        let (_, foreign) = sign(&store, &other, 10).unwrap();
        store
            .save_checkpoint(10, foreign.encode().as_bytes())
            .unwrap();
        assert!(resume(&store, &key).is_err());
    }
}
