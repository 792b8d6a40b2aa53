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

/// The store's own error when reading the tree's nodes failed, so that a failing disk is
/// told as I/O and not as corruption. Any other error means the store answered with the wrong
/// number of nodes, a fault of its engine.
fn node_error(e: merkle::ProofError) -> StoreError {
    match e {
        merkle::ProofError::Storage(inner) => match inner.downcast::<StoreError>() {
            Ok(e) => *e,
            Err(other) => StoreError::Engine(other.to_string()),
        },
        other => StoreError::Engine(format!("computing the new tree nodes: {other}")),
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
    let nodes = merkle::append_leaves(start_size, &leaves, store).map_err(node_error)?;
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::ops::Range;
    use std::sync::atomic::AtomicBool;

    use reprolog_verifier::merkle::{HashReader, NodeId};

    use super::*;
    use crate::storage::embedded::{tests::new_entry, EmbeddedStore};
    use crate::storage::{Appended, PathIndex};

    /// The embedded store, failing as a full or a failing disk does when told to: appends
    /// with ENOSPC, reads of tree nodes with EIO.
    struct Failing {
        store: EmbeddedStore,
        full: AtomicBool,
        unreadable: AtomicBool,
    }

    fn os_error(what: &str, code: i32) -> StoreError {
        StoreError::io(what, io::Error::from_raw_os_error(code))
    }

    impl HashReader for Failing {
        type Error = StoreError;
        fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
            if self.unreadable.load(Ordering::Relaxed) {
                return Err(os_error("nodes", libc::EIO));
            }
            self.store.read_hashes(nodes)
        }
    }

    impl PathIndex for Failing {
        fn path_indexes(
            &self,
            hash_part: &str,
            after: Option<u64>,
            limit: usize,
        ) -> Result<(Vec<u64>, bool), StoreError> {
            self.store.path_indexes(hash_part, after, limit)
        }
    }

    impl LogStore for Failing {
        fn size(&self) -> Result<u64, StoreError> {
            self.store.size()
        }
        fn find_entry(&self, leaf: &Hash) -> Result<Option<u64>, StoreError> {
            self.store.find_entry(leaf)
        }
        fn append(&self, batch: &AppendBatch) -> Result<Appended, StoreError> {
            if self.full.load(Ordering::Relaxed) {
                return Err(os_error("entries.data", libc::ENOSPC));
            }
            self.store.append(batch)
        }
        fn entries(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, StoreError> {
            self.store.entries(range)
        }
        fn builder_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
            self.store.builder_counts()
        }
        fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
            self.store.checkpoint()
        }
        fn save_checkpoint(&self, note: &[u8]) -> Result<(), StoreError> {
            self.store.save_checkpoint(note)
        }
        fn disk_bytes(&self) -> Result<u64, StoreError> {
            self.store.disk_bytes()
        }
    }

    fn entry(i: u64) -> NewEntry {
        new_entry(i, "out", &i.to_be_bytes(), 100, "builder-1")
    }

    /// Submits entries as one request and waits for the answer.
    fn submit(
        sequencer: &mpsc::Sender<Submission>,
        entries: Range<u64>,
    ) -> Result<Vec<Sequenced>, Arc<StoreError>> {
        let (reply, answer) = oneshot::channel();
        sequencer
            .blocking_send(Submission {
                entries: entries.map(entry).collect(),
                reply,
                arrived: Instant::now(),
            })
            .unwrap();
        answer.blocking_recv().unwrap()
    }

    /// The error is the operating system's, with its own words, and never called corruption.
    fn assert_io(e: &StoreError, code: i32) {
        let said = e.to_string();
        assert!(
            matches!(e, StoreError::Io { error, .. } if error.raw_os_error() == Some(code)),
            "{e:?}"
        );
        let words = io::Error::from_raw_os_error(code).to_string();
        assert!(said.contains(&words) && !said.contains("corrupt"), "{said}");
    }

    #[test]
    fn a_full_or_failing_disk_is_an_io_error_and_loses_nothing_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Failing {
            store: EmbeddedStore::open(dir.path(), 1 << 20).unwrap(),
            full: AtomicBool::new(false),
            unreadable: AtomicBool::new(false),
        });
        let (size_tx, size) = watch::channel(0);
        let sequencer = start(Arc::clone(&store), Arc::new(Metrics::default()), size_tx);
        let logged: Vec<Sequenced> = (0..3).map(Sequenced::Logged).collect();
        assert_eq!(submit(&sequencer, 0..3).unwrap(), logged);

        store.full.store(true, Ordering::Relaxed);
        let full = submit(&sequencer, 3..5).unwrap_err();
        assert_io(&full, libc::ENOSPC);
        assert!(
            full.to_string().contains("No space left on device"),
            "{full}"
        );

        // Appending leaf 3 reads leaf 2, its sibling: a read failing there is the disk's
        // fault too, not the data's.
        store.full.store(false, Ordering::Relaxed);
        store.unreadable.store(true, Ordering::Relaxed);
        assert_io(&submit(&sequencer, 3..5).unwrap_err(), libc::EIO);
        assert_eq!(
            *size.borrow(),
            3,
            "no size was published for a failed batch"
        );

        // Once the sequencer thread has seen its channel close, the test holds the only
        // reference and can close the store (sled allows one opener).
        drop(sequencer);
        let stopping = Instant::now();
        while Arc::strong_count(&store) > 1 {
            assert!(
                stopping.elapsed().as_secs() < 10,
                "the sequencer did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(store);
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        let acknowledged: Vec<Vec<u8>> = (0..3).map(|i| entry(i).bytes).collect();
        assert_eq!(store.entries(0..10).unwrap(), acknowledged);
    }
}
