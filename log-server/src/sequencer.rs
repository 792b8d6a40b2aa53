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

use reprolog_verifier::registry::{KeyRegistry, KeyStatus};

use crate::metrics::Metrics;
use crate::registry::SharedRegistry;
use crate::storage::{AppendBatch, EntryRole, LogStore, NewEntry, StoreError};

/// The most entries one durable commit takes.
pub const MAX_BATCH_ENTRIES: usize = 4096;

/// What became of one submitted entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sequenced {
    Logged(u64),
    Duplicate(u64),
    /// The registry, as of the index the entry would have had, does not allow it: a signature
    /// by a key that may no longer sign, or a key event that breaks a rule. The reason.
    Refused(String),
}

/// Entries from one request, and where to send their fate.
pub struct Submission {
    pub entries: Vec<NewEntry>,
    pub reply: oneshot::Sender<Result<Vec<Sequenced>, Arc<StoreError>>>,
    pub arrived: Instant,
}

/// Starts the sequencer thread. `size` carries the durable tree size to the publisher;
/// `registry` is read for every entry and replaced after each batch that changed it.
pub fn start<S: LogStore>(
    store: Arc<S>,
    metrics: Arc<Metrics>,
    size: watch::Sender<u64>,
    registry: Arc<SharedRegistry>,
) -> mpsc::Sender<Submission> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::Builder::new()
        .name("sequencer".into())
        .spawn(move || run(store, metrics, size, registry, rx))
        .expect("spawning the sequencer thread");
    tx
}

fn run<S: LogStore>(
    store: Arc<S>,
    metrics: Arc<Metrics>,
    size: watch::Sender<u64>,
    registry: Arc<SharedRegistry>,
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
        match integrate(&*store, &metrics, &registry, &mut batch) {
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

/// Whether the registry allows entry `e` at index `index`: a signing event's key must be
/// able to sign there, a key event must apply. Key events change `changed`, the batch's copy
/// of the registry (made at its first key event). Returns the builder identity of a signing
/// event.
fn admit(
    e: &NewEntry,
    index: u64,
    current: &KeyRegistry,
    changed: &mut Option<KeyRegistry>,
) -> Result<Option<String>, String> {
    match &e.role {
        EntryRole::Signing { builder, .. } => {
            match changed.as_ref().unwrap_or(current).status(builder, index) {
                KeyStatus::Valid { identity } => Ok(Some(identity)),
                status => Err(format!("key {} is {status}", builder.name)),
            }
        }
        EntryRole::Key(event) => {
            let registry = changed.get_or_insert_with(|| current.clone());
            registry
                .apply(index, event)
                .map(|()| None)
                .map_err(|e| e.to_string())
        }
    }
}

/// Sequences and commits one batch; returns each submission's outcomes and the new size.
fn integrate<S: LogStore>(
    store: &S,
    metrics: &Metrics,
    registry: &SharedRegistry,
    batch: &mut [Submission],
) -> Result<(Vec<Vec<Sequenced>>, u64), StoreError> {
    let start_size = store.size()?;
    let current = registry.current();
    let mut changed: Option<KeyRegistry> = None;
    let mut identities: Vec<String> = Vec::new();
    let mut fresh: Vec<NewEntry> = Vec::new();
    let mut in_batch: HashMap<Hash, u64> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut refused = 0;
    for s in batch.iter_mut() {
        let mut these = Vec::with_capacity(s.entries.len());
        for e in s.entries.drain(..) {
            let known = match in_batch.get(&e.leaf) {
                Some(i) => Some(*i),
                None => store.find_entry(&e.leaf)?,
            };
            if let Some(i) = known {
                these.push(Sequenced::Duplicate(i));
                continue;
            }
            let i = start_size + fresh.len() as u64;
            these.push(match admit(&e, i, &current, &mut changed) {
                Ok(identity) => {
                    identities.extend(identity);
                    in_batch.insert(e.leaf, i);
                    fresh.push(e);
                    Sequenced::Logged(i)
                }
                Err(why) => {
                    refused += 1;
                    Sequenced::Refused(why)
                }
            });
        }
        outcomes.push(these);
    }
    let duplicates = outcomes.iter().flatten().count() - fresh.len() - refused;
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
    if let Some(registry_now) = changed {
        registry.replace(registry_now);
    }
    metrics.commit_seconds.observe_duration(commit.elapsed());
    metrics
        .disagreements
        .fetch_add(appended.disagreements, Ordering::Relaxed);
    // An entry exists only for a signature by a key the registry allows, and its identity
    // is the name of a key the operator registered.
    metrics.builders_logged(identities.iter().map(String::as_str));
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
    use crate::storage::embedded::tests::{builder_key, log_key, new_entry, registry_allowing};
    use crate::storage::embedded::EmbeddedStore;
    use crate::storage::{Appended, PathIndex};
    use reprolog_verifier::key_event::KeyEvent;

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
        fn key_events(
            &self,
            after: Option<u64>,
            limit: usize,
        ) -> Result<(Vec<u64>, bool), StoreError> {
            self.store.key_events(after, limit)
        }
        fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
            self.store.checkpoint()
        }
        fn save_checkpoint(&self, size: u64, note: &[u8]) -> Result<(), StoreError> {
            self.store.save_checkpoint(size, note)
        }
        fn checkpoints(
            &self,
            after: u64,
            limit: usize,
        ) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
            self.store.checkpoints(after, limit)
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

    /// Submits entries as one request and waits for the answer.
    fn submit_entries(
        sequencer: &mpsc::Sender<Submission>,
        entries: Vec<NewEntry>,
    ) -> Vec<Sequenced> {
        let (reply, answer) = oneshot::channel();
        sequencer
            .blocking_send(Submission {
                entries,
                reply,
                arrived: Instant::now(),
            })
            .unwrap();
        answer.blocking_recv().unwrap().unwrap()
    }

    /// The sequencer judges each entry by the registry as of its own index: key events apply
    /// in order within one batch, and a signature after its key's revocation is refused.
    #[test]
    fn entries_are_judged_by_the_registry_at_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path(), 1 << 20).unwrap());
        let registry = Arc::new(SharedRegistry::new(
            reprolog_verifier::registry::KeyRegistry::new(log_key().verifier_key()),
        ));
        let (size_tx, _size) = watch::channel(0);
        let sequencer = start(
            Arc::clone(&store),
            Arc::new(Metrics::default()),
            size_tx,
            Arc::clone(&registry),
        );
        let key = builder_key("builder-1");
        let register = NewEntry::key_event(KeyEvent::register(key.public_key(), 0, &log_key()));
        // Before its registration a key's signature is refused; in the same batch after it,
        // logged.
        let outcomes = submit_entries(&sequencer, vec![entry(0), register, entry(1), entry(2)]);
        assert!(
            matches!(&outcomes[0], Sequenced::Refused(why) if why.contains("not a registered")),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[1..],
            [
                Sequenced::Logged(0),
                Sequenced::Logged(1),
                Sequenced::Logged(2)
            ]
        );
        // Revoked as of 2: a new signature is refused, and the entry at 2 is void.
        let revoke = NewEntry::key_event(KeyEvent::revoke_by_key("example.org/test-log", &key, 2));
        let outcomes = submit_entries(&sequencer, vec![revoke, entry(3), entry(1)]);
        assert_eq!(outcomes[0], Sequenced::Logged(3));
        assert!(
            matches!(&outcomes[1], Sequenced::Refused(why) if why.contains("revoked as of index 2")),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[2],
            Sequenced::Duplicate(1),
            "what is logged stays logged"
        );
        let now = registry.current();
        assert!(now.status(&key.public_key(), 1).identity().is_some());
        assert!(now.status(&key.public_key(), 2).identity().is_none());
        // A refused key event changes nothing.
        let again = NewEntry::key_event(KeyEvent::revoke_by_key("example.org/other", &key, 0));
        assert!(matches!(
            &submit_entries(&sequencer, vec![again])[0],
            Sequenced::Refused(_)
        ));
        assert!(registry
            .current()
            .status(&key.public_key(), 1)
            .identity()
            .is_some());
        assert_eq!(store.key_events(None, 10).unwrap(), (vec![0, 3], false));
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
        let registry = Arc::new(SharedRegistry::new(registry_allowing(&["builder-1"])));
        let sequencer = start(
            Arc::clone(&store),
            Arc::new(Metrics::default()),
            size_tx,
            registry,
        );
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
