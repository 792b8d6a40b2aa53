//! Checkpoints: signs the durable tree size and publishes it, within about a second of the
//! tree growing. A checkpoint is only ever made for a size the store has committed, is saved
//! durably before anyone can fetch it, and never goes backwards.

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

/// The checkpoint clients see.
#[derive(Clone, Debug)]
pub struct Published {
    pub checkpoint: Checkpoint,
    /// The signed note, as served at `/checkpoint`.
    pub note: String,
}

pub type SharedCheckpoint = Arc<RwLock<Arc<Published>>>;

/// Signs and durably saves a checkpoint for `size`.
pub fn sign<S: LogStore>(store: &S, key: &SignerKey, size: u64) -> Result<Published> {
    let root = merkle::tree_hash(size, store).context("computing the tree root")?;
    let checkpoint = Checkpoint::new(key.name(), size, root);
    let mut note = Note::new(&checkpoint.to_text())?;
    note.sign(key);
    let note = note.encode();
    store.save_checkpoint(note.as_bytes())?;
    Ok(Published { checkpoint, note })
}

/// Resumes from storage: checks the stored tree against the last checkpoint, then publishes
/// a checkpoint for the current size if the tree grew past it.
pub fn resume<S: LogStore>(store: &S, key: &SignerKey) -> Result<Published> {
    let size = store.size()?;
    let Some(stored) = store.checkpoint()? else {
        return sign(store, key, size);
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
    if size > cp.size {
        return sign(store, key, size);
    }
    let note = String::from_utf8(stored).context("stored checkpoint is not UTF-8")?;
    Ok(Published {
        checkpoint: cp,
        note,
    })
}

/// Publishes a new checkpoint whenever the durable size grows, at most once per `interval`.
pub async fn run<S: LogStore>(
    store: Arc<S>,
    key: SignerKey,
    mut size: watch::Receiver<u64>,
    published: SharedCheckpoint,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    loop {
        if size.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(interval).await;
        let target = *size.borrow_and_update();
        let current = published.read().map(|p| p.checkpoint.size).unwrap_or(0);
        if target <= current {
            continue;
        }
        let (store, key) = (Arc::clone(&store), key.clone());
        match tokio::task::spawn_blocking(move || sign(&*store, &key, target)).await {
            Ok(Ok(p)) => {
                metrics.checkpoint_size.store(target, Relaxed);
                metrics.checkpoints_published.fetch_add(1, Relaxed);
                if let Ok(mut cur) = published.write() {
                    *cur = Arc::new(p);
                }
            }
            Ok(Err(e)) => tracing::error!("publishing a checkpoint for size {target}: {e:#}"),
            Err(e) => tracing::error!("checkpoint task failed: {e}"),
        }
    }
}
