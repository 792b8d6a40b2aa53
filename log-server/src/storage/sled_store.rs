//! The embedded sled store.
//!
//! Trees: `entries` (index → entry), `leaves` (leaf hash → index), `nodes` (level ‖ index →
//! hash), `paths` (hash part ‖ index → ∅), `builders` (key → count) and `meta` (size,
//! checkpoint). One batch is one multi-tree transaction followed by a flush, so a crash
//! leaves either all of a batch or none of it, and `size` always matches the entries.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use reprolog_verifier::merkle::{Hash, HashReader, NodeId};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{AppendBatch, LogStore, StoreError};

const SIZE_KEY: &[u8] = b"size";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";

pub struct SledStore {
    db: sled::Db,
    entries: sled::Tree,
    leaves: sled::Tree,
    nodes: sled::Tree,
    paths: sled::Tree,
    builders: sled::Tree,
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
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 << 20)
            .open()
            .map_err(engine)?;
        let tree = |name: &str| db.open_tree(name).map_err(engine);
        Ok(SledStore {
            entries: tree("entries")?,
            leaves: tree("leaves")?,
            nodes: tree("nodes")?,
            paths: tree("paths")?,
            builders: tree("builders")?,
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
        self.leaves
            .get(leaf)
            .map_err(engine)?
            .map(|v| decode_u64(&v, "leaf index"))
            .transpose()
    }

    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &batch.entries {
            *counts.entry(&e.builder).or_default() += 1;
        }
        let end = batch.start_size + batch.entries.len() as u64;
        let result = (
            &self.entries,
            &self.leaves,
            &self.nodes,
            &self.paths,
            &self.builders,
            &self.meta,
        )
            .transaction(|(entries, leaves, nodes, paths, builders, meta)| {
                let actual = match meta.get(SIZE_KEY)? {
                    Some(v) => {
                        decode_u64(&v, "size").map_err(ConflictableTransactionError::Abort)?
                    }
                    None => 0,
                };
                if actual != batch.start_size {
                    return Err(ConflictableTransactionError::Abort(
                        StoreError::SizeMismatch {
                            expected: batch.start_size,
                            actual,
                        },
                    ));
                }
                for (i, e) in batch.entries.iter().enumerate() {
                    let index = (batch.start_size + i as u64).to_be_bytes();
                    entries.insert(&index, e.bytes.as_slice())?;
                    leaves.insert(&e.leaf, &index)?;
                    let mut path_key = e.hash_part.as_bytes().to_vec();
                    path_key.extend_from_slice(&index);
                    paths.insert(path_key, &[])?;
                }
                for (node, hash) in &batch.nodes {
                    nodes.insert(&node_key(*node), hash)?;
                }
                for (builder, n) in &counts {
                    let old = match builders.get(builder)? {
                        Some(v) => decode_u64(&v, "builder count")
                            .map_err(ConflictableTransactionError::Abort)?,
                        None => 0,
                    };
                    builders.insert(builder.as_bytes(), &(old + n).to_be_bytes())?;
                }
                meta.insert(SIZE_KEY, &end.to_be_bytes())?;
                Ok(())
            });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(engine(e)),
        }
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
        self.paths
            .scan_prefix(hash_part.as_bytes())
            .keys()
            .map(|k| {
                let k = k.map_err(engine)?;
                decode_u64(&k[hash_part.len()..], "path index")
            })
            .collect()
    }

    fn builder_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.builders
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(engine)?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    decode_u64(&v, "builder count")?,
                ))
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
