//! Where the log keeps its data. The sequencer and the HTTP API see only [`LogStore`]; the
//! embedded store (flat files and sled) is the default, and other engines (PostgreSQL)
//! implement the same trait.

pub mod embedded;
mod hash_index;
mod post_order;

use std::ops::Range;

use reprolog_verifier::merkle::{Hash, HashReader, NodeId};

pub use embedded::EmbeddedStore;

/// A storage failure or an inconsistency found in stored data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("append expected the log at size {expected}, but it is at {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
}

/// One entry to append, with what the indexes need.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub bytes: Vec<u8>,
    pub leaf: Hash,
    /// The store path's 32-character hash part, for lookups by path.
    pub hash_part: String,
    /// The builder key, `name:base64`, for per-builder counts.
    pub builder: String,
    /// The NAR hash the builder signed, to tell disagreements about a path.
    pub nar_hash: Hash,
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

/// The log's storage. Every method is blocking; async callers use `spawn_blocking`.
pub trait LogStore: HashReader<Error = StoreError> + Send + Sync + 'static {
    /// The number of entries durably stored.
    fn size(&self) -> Result<u64, StoreError>;
    /// The index of the entry with this leaf hash, if stored. Its cost does not depend on how
    /// many entries the entry's store path has.
    fn find_entry(&self, leaf: &Hash) -> Result<Option<u64>, StoreError>;
    /// Appends a batch in one atomic, durable commit. Fails without writing anything if the
    /// log is not at `batch.start_size`. Telling a disagreement costs the same on a path with
    /// one event as on a path with millions: the history is never read.
    fn append(&self, batch: &AppendBatch) -> Result<Appended, StoreError>;
    /// The entries in `range`; stops early at the end of the log.
    fn entries(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The first `limit` indexes of the entries filed under a store path hash part after
    /// index `after`, in order, and whether more follow. Memory is bounded by `limit`.
    fn path_indexes(
        &self,
        hash_part: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<u64>, bool), StoreError>;
    /// How many entries each builder key has signed.
    fn builder_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// The latest signed checkpoint note, if any.
    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Durably records a signed checkpoint note.
    fn save_checkpoint(&self, note: &[u8]) -> Result<(), StoreError>;
    /// Bytes the store occupies on disk.
    fn disk_bytes(&self) -> Result<u64, StoreError>;
}
