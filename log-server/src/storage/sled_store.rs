//! The embedded sled store.
//!
//! Trees: `entries` (index → entry), `leaves` (leaf hash → index), `nodes` (level ‖ index →
//! hash), `paths` (hash part ‖ index → ∅) and `meta` (size, per-builder counts, checkpoint).
//!
//! One batch is written as one atomic sled batch per tree, data trees first and `meta` (the
//! size) last, then flushed. sled recovers a prefix of its log after a crash, so a size is
//! never recovered without the data below it. Data of a batch whose size was lost may remain
//! above the size: entries and nodes there are overwritten by the next batch, and index hits
//! in `leaves` and `paths` are checked against the size and the entry itself. There is one
//! writer, the sequencer. (Multi-tree sled transactions would avoid the checks, but cost five
//! times as much per entry.)

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use reprolog_verifier::merkle::{self, Hash, HashReader, NodeId};

use super::{AppendBatch, LogStore, StoreError};

const SIZE_KEY: &[u8] = b"size";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
const BUILDER_PREFIX: &[u8] = b"builder:";

pub struct SledStore {
    db: sled::Db,
    entries: sled::Tree,
    leaves: sled::Tree,
    nodes: sled::Tree,
    paths: sled::Tree,
    meta: sled::Tree,
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn node_key(node: NodeId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = node.level;
    k[1..].copy_from_slice(&node.index.to_be_bytes());
    k
}

fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not 8", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

impl SledStore {
    /// Opens the store; `cache_bytes` bounds sled's page cache (its total memory use is a
    /// few times larger).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(engine)?;
        let tree = |name: &str| db.open_tree(name).map_err(engine);
        Ok(SledStore {
            entries: tree("entries")?,
            leaves: tree("leaves")?,
            nodes: tree("nodes")?,
            paths: tree("paths")?,
            meta: tree("meta")?,
            db,
        })
    }
}

impl HashReader for SledStore {
    type Error = StoreError;

    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        nodes
            .iter()
            .map(|n| {
                let v = self
                    .nodes
                    .get(node_key(*n))
                    .map_err(engine)?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("node {}/{} is missing", n.level, n.index))
                    })?;
                Hash::try_from(v.as_ref()).map_err(|_| {
                    StoreError::Corrupt(format!("node {}/{} is not 32 bytes", n.level, n.index))
                })
            })
            .collect()
    }
}

impl LogStore for SledStore {
    fn size(&self) -> Result<u64, StoreError> {
        match self.meta.get(SIZE_KEY).map_err(engine)? {
            Some(v) => decode_u64(&v, "size"),
            None => Ok(0),
        }
    }

    fn find_leaf(&self, leaf: &Hash) -> Result<Option<u64>, StoreError> {
        let Some(v) = self.leaves.get(leaf).map_err(engine)? else {
            return Ok(None);
        };
        let index = decode_u64(&v, "leaf index")?;
        // A mapping left by a batch whose size was lost may point past the log, or at an
        // index since given to another entry.
        if index >= self.size()? {
            return Ok(None);
        }
        let entry = self.entries.get(index.to_be_bytes()).map_err(engine)?;
        Ok(entry
            .filter(|e| merkle::leaf_hash(e) == *leaf)
            .map(|_| index))
    }

    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let actual = self.size()?;
        if actual != batch.start_size {
            return Err(StoreError::SizeMismatch {
                expected: batch.start_size,
                actual,
            });
        }
        let (mut entries, mut leaves, mut nodes, mut paths, mut meta) = Default::default();
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for (i, e) in batch.entries.iter().enumerate() {
            let index = (batch.start_size + i as u64).to_be_bytes();
            sled::Batch::insert(&mut entries, &index, e.bytes.as_slice());
            sled::Batch::insert(&mut leaves, &e.leaf, &index);
            let mut path_key = e.hash_part.as_bytes().to_vec();
            path_key.extend_from_slice(&index);
            sled::Batch::insert(&mut paths, path_key, &[]);
            *counts.entry(&e.builder).or_default() += 1;
        }
        for (node, hash) in &batch.nodes {
            sled::Batch::insert(&mut nodes, &node_key(*node), hash);
        }
        for (builder, n) in counts {
            let key = [BUILDER_PREFIX, builder.as_bytes()].concat();
            let old = match self.meta.get(&key).map_err(engine)? {
                Some(v) => decode_u64(&v, "builder count")?,
                None => 0,
            };
            sled::Batch::insert(&mut meta, key, &(old + n).to_be_bytes());
        }
        let end = batch.start_size + batch.entries.len() as u64;
        sled::Batch::insert(&mut meta, SIZE_KEY, &end.to_be_bytes());
        self.entries.apply_batch(entries).map_err(engine)?;
        self.leaves.apply_batch(leaves).map_err(engine)?;
        self.nodes.apply_batch(nodes).map_err(engine)?;
        self.paths.apply_batch(paths).map_err(engine)?;
        self.meta.apply_batch(meta).map_err(engine)?;
        self.db.flush().map_err(engine)?;
        Ok(())
    }

    fn entries(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, StoreError> {
        self.entries
            .range(range.start.to_be_bytes()..range.end.to_be_bytes())
            .values()
            .map(|v| v.map(|v| v.to_vec()).map_err(engine))
            .collect()
    }

    fn path_indexes(&self, hash_part: &str) -> Result<Vec<u64>, StoreError> {
        let size = self.size()?;
        let mut indexes = Vec::new();
        for k in self.paths.scan_prefix(hash_part.as_bytes()).keys() {
            let k = k.map_err(engine)?;
            let index = decode_u64(&k[hash_part.len()..], "path index")?;
            if index < size {
                indexes.push(index);
            }
        }
        Ok(indexes)
    }

    fn builder_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.meta
            .scan_prefix(BUILDER_PREFIX)
            .map(|kv| {
                let (k, v) = kv.map_err(engine)?;
                let name = String::from_utf8_lossy(&k[BUILDER_PREFIX.len()..]).into_owned();
                Ok((name, decode_u64(&v, "builder count")?))
            })
            .collect()
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(CHECKPOINT_KEY)
            .map_err(engine)?
            .map(|v| v.to_vec()))
    }

    fn save_checkpoint(&self, note: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(CHECKPOINT_KEY, note).map_err(engine)?;
        self.db.flush().map_err(engine)?;
        Ok(())
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(engine)
    }
}
