//! The sequencer: one thread that takes queued submissions, drops duplicates, assigns
//! indexes, computes the new tree nodes and commits the batch durably in one step. Only then
//! does anyone learn an index. Batching is natural: whatever queued while the last commit ran
//! becomes the next batch, up to [`MAX_BATCH_ENTRIES`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use reprolog_verifier::merkle::{self, Hash};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::storage::{AppendBatch, LogStore, NewEntry, StoreError};

/// The most entries one durable commit takes.
pub const MAX_BATCH_ENTRIES: usize = 4096;

/// What became of one submitted entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sequenced {
    Logged(u64),
    Duplicate(u64),
}

/// Entries from one request, and where to send their fate.
pub struct Submission {
    pub entries: Vec<NewEntry>,
    pub reply: oneshot::Sender<Result<Vec<Sequenced>, Arc<StoreError>>>,
    pub arrived: Instant,
}

/// Starts the sequencer thread. `size` carries the durable tree size to the publisher.
pub fn start<S: LogStore>(
    store: Arc<S>,
    metrics: Arc<Metrics>,
    size: watch::Sender<u64>,
) -> mpsc::Sender<Submission> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::Builder::new()
        .name("sequencer".into())
        .spawn(move || run(store, metrics, size, rx))
        .expect("spawning the sequencer thread");
    tx
}

fn run<S: LogStore>(
    store: Arc<S>,
    metrics: Arc<Metrics>,
    size: watch::Sender<u64>,
    mut rx: mpsc::Receiver<Submission>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let mut n = batch[0].entries.len();
        while n < MAX_BATCH_ENTRIES {
            match rx.try_recv() {
                Ok(s) => {
                    n += s.entries.len();
                    batch.push(s);
                }
                Err(_) => break,
            }
        }
        match integrate(&*store, &metrics, &mut batch) {
            Ok((outcomes, new_size)) => {
                size.send_replace(new_size);
                for (s, o) in batch.into_iter().zip(outcomes) {
                    metrics
                        .sequencing_seconds
                        .observe_duration(s.arrived.elapsed());
                    let _ = s.reply.send(Ok(o));
                }
            }
            Err(e) => {
                tracing::error!("sequencing a batch failed: {e}");
                let e = Arc::new(e);
                for s in batch {
                    let _ = s.reply.send(Err(Arc::clone(&e)));
                }
            }
        }
    }
}

/// Sequences and commits one batch; returns each submission's outcomes and the new size.
fn integrate<S: LogStore>(
    store: &S,
    metrics: &Metrics,
    batch: &mut [Submission],
) -> Result<(Vec<Vec<Sequenced>>, u64), StoreError> {
    let start_size = store.size()?;
    let mut fresh: Vec<NewEntry> = Vec::new();
    let mut in_batch: HashMap<Hash, u64> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for s in batch.iter_mut() {
        let mut these = Vec::with_capacity(s.entries.len());
        for e in s.entries.drain(..) {
            let known = match in_batch.get(&e.leaf) {
                Some(i) => Some(*i),
                None => store.find_entry(&e.leaf)?,
            };
            these.push(match known {
                Some(i) => Sequenced::Duplicate(i),
                None => {
                    let i = start_size + fresh.len() as u64;
                    in_batch.insert(e.leaf, i);
                    fresh.push(e);
                    Sequenced::Logged(i)
                }
            });
        }
        outcomes.push(these);
    }
    let duplicates = outcomes.iter().flatten().count() - fresh.len();
    metrics
        .entries_duplicate
        .fetch_add(duplicates as u64, Ordering::Relaxed);
    if fresh.is_empty() {
        return Ok((outcomes, start_size));
    }
    let leaves: Vec<Hash> = fresh.iter().map(|e| e.leaf).collect();
    let nodes = merkle::append_leaves(start_size, &leaves, store).map_err(|e| match e {
        merkle::ProofError::Storage(inner) => StoreError::Corrupt(inner.to_string()),
        other => StoreError::Corrupt(other.to_string()),
    })?;
    let count = fresh.len() as u64;
    let commit = Instant::now();
    let batch = AppendBatch {
        start_size,
        entries: fresh,
        nodes,
    };
    let appended = store.append(&batch)?;
    metrics.commit_seconds.observe_duration(commit.elapsed());
    metrics
        .disagreements
        .fetch_add(appended.disagreements, Ordering::Relaxed);
    // An entry exists only for a signature that verified under a registered key, so its key's
    // name is one of the builders file.
    metrics.builders_logged(batch.entries.iter().map(|e| {
        e.builder
            .split_once(':')
            .map_or(e.builder.as_str(), |(n, _)| n)
    }));
    metrics.batch_entries.observe(count as f64);
    metrics.entries_logged.fetch_add(count, Ordering::Relaxed);
    metrics
        .tree_size
        .store(start_size + count, Ordering::Relaxed);
    Ok((outcomes, start_size + count))
}
