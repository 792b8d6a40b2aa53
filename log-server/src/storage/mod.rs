//! Where the log keeps its data. The sequencer and the HTTP API see only [`LogStore`]; its one
//! engine is the embedded store ([`embedded`]: flat files, hash indexes and sled).

pub mod embedded;
mod files;
mod hash_index;
mod post_order;

use std::ops::Range;

use reprolog_verifier::entry::Entry;
use reprolog_verifier::key_event::KeyEvent;
use reprolog_verifier::merkle::{self, Hash, HashReader, NodeId};
use reprolog_verifier::nix::NixPublicKey;

/// Why the store could not do what it was asked, told by cause, so that an operator reads
/// "No space left on device" for a full disk and "corrupt" only for damaged data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system refused a read or a write: a full disk, a failing device, a
    /// permission. Nothing says the data is damaged; the same call may work once the cause is
    /// fixed.
    #[error("{what}: {error}")]
    Io {
        /// The file, or the part of the store, being read or written.
        what: String,
        /// The error the operating system gave.
        error: std::io::Error,
    },
    /// Sled failed in a way that is neither I/O nor corruption (a misuse or a bug it reports).
    #[error("storage engine: {0}")]
    Engine(String),
    /// Stored data contradicts itself or its format: a file shorter than the committed size,
    /// an entry that does not decode, an index out of order.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store was written in a layout, or holds entries of a version, that this version
    /// of the server does not read.
    #[error("unsupported store: {0}")]
    Unsupported(String),
    /// An append at another size than the log's; nothing was written.
    #[error("append expected the log at size {expected}, but it is at {actual}")]
    SizeMismatch {
        /// The size the batch was made for.
        expected: u64,
        /// The log's durable size.
        actual: u64,
    },
    /// The caller asked for something the store cannot hold or look up (a batch whose nodes
    /// are not the ones its entries complete, a key that is not a store path hash); nothing
    /// was written.
    #[error("invalid request to the store: {0}")]
    Invalid(String),
    /// An earlier append failed after its first write, leaving memory and disk out of step:
    /// appends are refused until the store is opened again.
    #[error(
        "appending stopped after an earlier append failed ({cause}); restart the server to recover"
    )]
    Stopped {
        /// What made that earlier append fail.
        cause: String,
    },
}

impl StoreError {
    /// An I/O error while working on `what` (a file name, or a part of the store).
    pub fn io(what: impl Into<String>, error: std::io::Error) -> Self {
        StoreError::Io {
            what: what.into(),
            error,
        }
    }
}

/// One entry to append, with what the indexes need.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub bytes: Vec<u8>,
    pub leaf: Hash,
    pub role: EntryRole,
}

/// What an entry is to the store and the sequencer.
// Nearly every entry is a signing event: boxing that variant would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum EntryRole {
    /// A signing event: filed by path, counted for its builder key, compared with its path's
    /// first NAR hash, and logged only while its key may sign.
    Signing {
        /// The store path's 32-character hash part, for lookups by path.
        hash_part: String,
        /// The key that signed.
        builder: NixPublicKey,
        /// The NAR hash the builder signed, to tell disagreements about a path.
        nar_hash: Hash,
    },
    /// A key event: listed apart, so that the registry is replayed without reading the log;
    /// logged only if the registry allows it at its index.
    Key(Box<KeyEvent>),
}

impl NewEntry {
    /// A signing event's entry, from its encoding.
    pub fn signing(bytes: Vec<u8>, entry: &Entry) -> Self {
        NewEntry {
            leaf: merkle::leaf_hash(&bytes),
            bytes,
            role: EntryRole::Signing {
                hash_part: entry.store_path.hash_part().to_owned(),
                builder: entry.builder.clone(),
                nar_hash: entry.nar_hash.0,
            },
        }
    }

    /// A key event's entry.
    pub fn key_event(event: KeyEvent) -> Self {
        let bytes = event.encode();
        NewEntry {
            leaf: merkle::leaf_hash(&bytes),
            bytes,
            role: EntryRole::Key(Box::new(event)),
        }
    }
}

/// A batch of entries appended at `start_size`, with every tree node they complete.
#[derive(Clone, Debug)]
pub struct AppendBatch {
    pub start_size: u64,
    pub entries: Vec<NewEntry>,
    pub nodes: Vec<(NodeId, Hash)>,
}

/// What an append found besides storing the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Entries whose NAR hash differs from the first one logged for their store path.
    pub disagreements: u64,
}

/// Lookups of entries by store path. An index derived from the entries, apart from
/// [`LogStore`] so that an engine may keep it elsewhere than the log itself.
pub trait PathIndex {
    /// The first `limit` indexes of the entries filed under a store path hash part after
    /// index `after`, in order, and whether more follow. Memory is bounded by `limit`. An
    /// entry is found here once the [`LogStore::append`] that stored it has returned.
    fn path_indexes(
        &self,
        hash_part: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<u64>, bool), StoreError>;
}

/// The log's storage. Every method is blocking; async callers use `spawn_blocking`.
///
/// The contract every engine keeps:
///
/// - **Durable on return.** When [`append`](LogStore::append) returns `Ok`, the batch's
///   entries, its tree nodes, the new size and the builder counts survive a crash or a power
///   loss; the sequencer acknowledges entries only then. The same holds for
///   [`save_checkpoint`](LogStore::save_checkpoint). Derived indexes (by leaf, by path) need
///   not be durable: opening the store brings them up to the size.
/// - **Readers never look past the durable size.** [`size`](LogStore::size) is the number
///   of entries committed; every read ([`entries`](LogStore::entries), node hashes, lookups)
///   sees entries below it only, and a node or entry past it is an error, not a guess.
/// - **Concurrency.** Reads may run at any time, from any number of threads, alongside each
///   other and alongside an append. Appends come one at a time (the sequencer is the one
///   writer; the embedded store also serialises them). `save_checkpoint` may run alongside
///   an append.
/// - **A failed append.** [`StoreError::SizeMismatch`] and [`StoreError::Invalid`] come before
///   any write: nothing changed and the store goes on. Any other error leaves the batch in
///   doubt (it may or may not have been committed: a failure while indexing comes after the
///   commit), and the store refuses further appends with [`StoreError::Stopped`] until it is
///   opened again. Opening keeps exactly what was committed and cuts whatever a failed append
///   wrote past it. So nothing acknowledged is lost, and an entry of a failed batch that was
///   committed after all is found as a duplicate when it is submitted again.
/// - **Errors tell their cause.** A refusal by the operating system (a full disk) is
///   [`StoreError::Io`] with its source, never [`StoreError::Corrupt`], which is kept for
///   stored data that contradicts itself.
pub trait LogStore: HashReader<Error = StoreError> + PathIndex + Send + Sync + 'static {
    /// The number of entries durably stored.
    fn size(&self) -> Result<u64, StoreError>;
    /// The index of the entry with this leaf hash, if stored. Its cost does not depend on how
    /// many entries the entry's store path has. An entry is found once the append that stored
    /// it has returned.
    fn find_entry(&self, leaf: &Hash) -> Result<Option<u64>, StoreError>;
    /// Appends a batch in one atomic, durable commit (see the trait's contract for what a
    /// failure leaves). Fails without writing anything if the log is not at
    /// `batch.start_size`. Telling a disagreement costs the same on a path with one event as
    /// on a path with millions: the history is never read.
    fn append(&self, batch: &AppendBatch) -> Result<Appended, StoreError>;
    /// The entries in `range`; stops early at the end of the log.
    fn entries(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, StoreError>;
    /// How many entries each builder key has signed.
    fn builder_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// The indexes of key events after `after`, at most `limit`, and whether more follow.
    /// Committed with the entries, so a key event is listed once its append returned.
    fn key_events(&self, after: Option<u64>, limit: usize) -> Result<(Vec<u64>, bool), StoreError>;
    /// The latest signed checkpoint note, if any.
    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Durably records a signed checkpoint note of a tree of `size` entries as the latest,
    /// and in the history of published checkpoints (one per size: a note saved again for a
    /// size, with more cosignatures, replaces the earlier one).
    fn save_checkpoint(&self, size: u64, note: &[u8]) -> Result<(), StoreError>;
    /// Published checkpoint notes of sizes above `after`, smallest first, at most `limit`, and
    /// whether more follow.
    fn checkpoints(&self, after: u64, limit: usize) -> Result<(Vec<Vec<u8>>, bool), StoreError>;
    /// Bytes the store occupies on disk.
    fn disk_bytes(&self) -> Result<u64, StoreError>;
}
