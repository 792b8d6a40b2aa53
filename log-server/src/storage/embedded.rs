//! The embedded store: append-only files for what only grows, sled for what is looked up.
//!
//! In the store directory:
//! - `entries.data`: the entries, back to back;
//! - `entries.idx`: for each entry, where it ends in `entries.data` (u64, little-endian);
//! - `nodes`: every complete tree node (32 bytes), in [`post_order`] positions;
//! - `paths.pages`, `paths.dir`: a [`hash_index`] from store paths to their entries;
//! - `leaves.pages`, `leaves.dir`: a [`hash_index`] from leaf hashes to their entry, for the
//!   duplicate check;
//! - `firsts.pages`, `firsts.dir`: a [`hash_index`] from store paths to their first entry and
//!   the first 4 bytes of its NAR hash, so that a disagreement is told with one page read
//!   however long the path's history;
//! - `index/`: a sled database holding the size, the latest checkpoint, per-builder counts and
//!   the indexes of key events (committed with the size, so the registry is replayed from
//!   them without reading the log).
//!
//! A batch is written at the end of the three files and `fdatasync`ed, and only then is the
//! new size committed in sled and flushed. The size is therefore never durable before the
//! data below it. Bytes a crash leaves past the size are cut off when the store opens, and
//! never read before. The hash indexes are derived from the entries: they are updated after
//! each commit, saved now and then, and brought up to the size when the store opens (a store
//! from before the firsts index builds it then, once, from every entry).
//!
//! Why not sled for everything: a general B-tree costs about 60 µs of CPU per entry for the
//! five inserts of the first layout, and its memory grew with the database. Appends and
//! positional reads of flat files cost almost nothing, and a node is one `pread`.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

use reprolog_verifier::entry::LogEntry;
use reprolog_verifier::merkle::{self, Hash, HashReader, NodeId};

use super::files::open_file;
use super::hash_index::Key;
use super::hash_index::{leaf_key, path_key, HashIndex, Record};
use super::post_order::{node_count, position};
use super::{AppendBatch, Appended, EntryRole, LogStore, PathIndex, StoreError};
use reprolog_verifier::locks;

const SIZE_KEY: &[u8] = b"size";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
const BUILDER_PREFIX: &[u8] = b"builder:";
const KEY_EVENT_PREFIX: &[u8] = b"key-event:";
const CHECKPOINT_PREFIX: &[u8] = b"checkpoint-at:";
const HASH_BYTES: u64 = 32;
/// Levels from here up are kept in memory: every proof reads one node of each, and they
/// are few (two for every 2^CACHED_FROM entries, 0.06 bytes an entry).
const CACHED_FROM: u8 = 10;
/// Nodes this close in the file are read together.
const COALESCE_NODES: u64 = 256;
const OFFSET_BYTES: u64 = 8;

pub struct EmbeddedStore {
    dir: PathBuf,
    data: File,
    offsets: File,
    nodes: File,
    index: sled::Db,
    paths: HashIndex,
    leaves: HashIndex,
    firsts: HashIndex,
    /// What made an append fail after its first write, once one has: appending stops, and a
    /// restart recovers from what is durable (and brings the indexes up to date).
    failed: OnceLock<String>,
    /// The tree's nodes at levels `CACHED_FROM..`, by level and index.
    upper: RwLock<Vec<Vec<Hash>>>,
    /// The durable number of entries; readers never look past it.
    size: AtomicU64,
    /// Where the next entry starts in `entries.data`, owned by the one writer.
    data_end: Mutex<u64>,
}

/// Sled's errors, told by cause like the store's own.
fn engine(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(error) => StoreError::io("index (sled)", error),
        sled::Error::Corruption { at, .. } => {
            StoreError::Corrupt(format!("index (sled) is damaged at {at:?}"))
        }
        other => StoreError::Engine(other.to_string()),
    }
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::io(what, e)
}

fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not 8", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// Cuts a file back to `len` bytes, refusing if it holds fewer.
fn cut_to(file: &File, len: u64, name: &str) -> Result<(), StoreError> {
    let actual = file.metadata().map_err(|e| io(name, e))?.len();
    if actual < len {
        return Err(StoreError::Corrupt(format!(
            "{name} holds {actual} bytes, but the committed size needs {len}"
        )));
    }
    if actual > len {
        file.set_len(len).map_err(|e| io(name, e))?;
        file.sync_all().map_err(|e| io(name, e))?;
    }
    Ok(())
}

impl EmbeddedStore {
    /// Opens the store in `dir`, creating it if needed; `cache_bytes` bounds sled's cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        if dir.join("conf").exists() {
            return Err(StoreError::Unsupported(format!(
                "{} holds a store of the first layout (sled only), which this version does not \
                 read; keep it with the old binary or start a new log with a new origin",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| io(&dir.display().to_string(), e))?;
        let index = sled::Config::new()
            .path(dir.join("index"))
            .cache_capacity(cache_bytes)
            .open()
            .map_err(engine)?;
        let data = open_file(&dir.join("entries.data"))?;
        let offsets = open_file(&dir.join("entries.idx"))?;
        let nodes = open_file(&dir.join("nodes"))?;
        // New files must survive a crash before anything refers to them.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&dir.display().to_string(), e))?;
        let size = match index.get(SIZE_KEY).map_err(engine)? {
            Some(v) => decode_u64(&v, "size")?,
            None => 0,
        };
        cut_to(&offsets, size * OFFSET_BYTES, "entries.idx")?;
        cut_to(&nodes, node_count(size) * HASH_BYTES, "nodes")?;
        let data_end = match size {
            0 => 0,
            _ => read_offset(&offsets, size - 1)?,
        };
        cut_to(&data, data_end, "entries.data")?;
        refuse_version_1(&data, &offsets, size)?;
        let (paths, paths_indexed) = HashIndex::open(dir, "paths")?;
        let (leaves, leaves_indexed) = HashIndex::open(dir, "leaves")?;
        let (firsts, firsts_indexed) = HashIndex::open(dir, "firsts")?;
        let store = EmbeddedStore {
            dir: dir.to_path_buf(),
            data,
            offsets,
            nodes,
            index,
            paths,
            leaves,
            firsts,
            failed: OnceLock::new(),
            upper: RwLock::new(Vec::new()),
            size: AtomicU64::new(size),
            data_end: Mutex::new(data_end),
        };
        let upper: Vec<Vec<Hash>> = (CACHED_FROM..64)
            .map(|level| size >> level)
            .take_while(|count| *count > 0)
            .enumerate()
            .map(|(l, count)| {
                let level = CACHED_FROM + l as u8;
                store.read_hashes(
                    &(0..count)
                        .map(|i| NodeId::new(level, i))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Result<_, _>>()?;
        *locks::write(&store.upper) = upper;
        store.index_entries(
            [paths_indexed, leaves_indexed, firsts_indexed].map(|i| i.min(size)),
            size,
        )?;
        Ok(store)
    }

    /// Writes a batch at the end of the files, makes it durable, then commits its size.
    fn write_batch(&self, start: u64, data_end: u64, b: Encoded) -> Result<(), StoreError> {
        self.data
            .write_all_at(&b.data, data_end)
            .map_err(|e| io("entries.data", e))?;
        self.offsets
            .write_all_at(&b.offsets, start * OFFSET_BYTES)
            .map_err(|e| io("entries.idx", e))?;
        self.nodes
            .write_all_at(&b.nodes, node_count(start) * HASH_BYTES)
            .map_err(|e| io("nodes", e))?;
        for (file, name) in [
            (&self.data, "entries.data"),
            (&self.offsets, "entries.idx"),
            (&self.nodes, "nodes"),
        ] {
            file.sync_data().map_err(|e| io(name, e))?;
        }
        self.index.apply_batch(b.index).map_err(engine)?;
        self.index.flush().map_err(engine)?;
        Ok(())
    }

    /// Keeps the batch's nodes of the cached levels.
    fn remember_upper_levels(&self, nodes: &[(NodeId, Hash)]) {
        let mut upper = locks::write(&self.upper);
        for (node, hash) in nodes.iter().filter(|(n, _)| n.level >= CACHED_FROM) {
            let level = usize::from(node.level - CACHED_FROM);
            if upper.len() <= level {
                upper.resize_with(level + 1, Vec::new);
            }
            if upper[level].len() as u64 == node.index {
                upper[level].push(*hash);
            }
        }
    }

    /// Brings the path, leaf and firsts indexes up to `size` from the entry each is complete
    /// to.
    fn index_entries(&self, from: [u64; 3], size: u64) -> Result<(), StoreError> {
        let [paths_from, leaves_from, firsts_from] = from;
        let mut at = paths_from.min(leaves_from).min(firsts_from);
        while at < size {
            let chunk = self.entries(at..size.min(at + 4096))?;
            for bytes in &chunk {
                let leaf = merkle::leaf_hash(bytes);
                if at >= paths_from || at >= firsts_from {
                    let entry = match LogEntry::decode(bytes)
                        .map_err(|e| StoreError::Corrupt(format!("entry {at}: {e}")))?
                    {
                        LogEntry::Signing(entry) => Some(entry),
                        LogEntry::Key(_) => None,
                    };
                    // Key events are not filed by path.
                    if let Some(entry) = entry {
                        let key = path_key(entry.store_path.hash_part())?;
                        if at >= paths_from {
                            self.paths.insert(Record::new(key, at, &leaf))?;
                        }
                        if at >= firsts_from {
                            self.disagrees_with_first(key, at, &entry.nar_hash.0)?;
                        }
                    }
                }
                if at >= leaves_from {
                    self.leaves
                        .insert(Record::new(leaf_key(&leaf), at, &leaf))?;
                }
                at += 1;
            }
        }
        self.paths.indexed_up_to(size)?;
        self.leaves.indexed_up_to(size)?;
        self.firsts.indexed_up_to(size)
    }

    /// Whether entry `index` of the path `key` has another NAR hash than the path's first
    /// entry; files it as the first when the path has none. One page read: the firsts index
    /// holds one record per path, whatever the path's history. Hashes are compared on their
    /// first 4 bytes, so two differing NAR hashes go unnoticed once in 2^32; the metric is a
    /// signal to look, the entries themselves are the evidence.
    fn disagrees_with_first(
        &self,
        key: Key,
        index: u64,
        nar_hash: &Hash,
    ) -> Result<bool, StoreError> {
        match self.firsts.lookup(&key)?.first() {
            Some(first) => Ok(first.index < index && first.hash_prefix != nar_hash[..4]),
            None => {
                self.firsts.insert(Record::new(key, index, nar_hash))?;
                Ok(false)
            }
        }
    }
}

/// Refuses a store whose entries are of version 1, which held unsigned narinfo fields: its
/// entries cannot be served as version 2, and appending version 2 entries after them would
/// make one log of two formats under the same origin.
fn refuse_version_1(data: &File, offsets: &File, size: u64) -> Result<(), StoreError> {
    if size == 0 {
        return Ok(());
    }
    let first_end = read_offset(offsets, 0)?;
    let mut head = vec![0u8; first_end.min(32) as usize];
    data.read_exact_at(&mut head, 0)
        .map_err(|e| io("entries.data", e))?;
    if head.starts_with(b"reprolog-entry/v1\n") {
        return Err(StoreError::Unsupported(
            "this store holds version 1 entries, which carried unsigned narinfo fields and are \
             no longer served; keep it with the old binary, or start a new log with a new origin"
                .into(),
        ));
    }
    Ok(())
}

fn read_offset(offsets: &File, index: u64) -> Result<u64, StoreError> {
    let mut buf = [0u8; 8];
    offsets
        .read_exact_at(&mut buf, index * OFFSET_BYTES)
        .map_err(|e| io("entries.idx", e))?;
    Ok(u64::from_le_bytes(buf))
}

impl HashReader for EmbeddedStore {
    type Error = StoreError;

    fn read_hashes(&self, wanted: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        let size = self.size.load(Ordering::Acquire);
        let mut out = vec![[0u8; 32]; wanted.len()];
        // (position in the node file, place in `out`) of what the upper levels lack.
        let mut from_file = Vec::new();
        {
            let upper = locks::read(&self.upper);
            for (slot, n) in wanted.iter().enumerate() {
                let complete = size.checked_shr(u32::from(n.level)).unwrap_or(0) > n.index;
                if !complete {
                    return Err(StoreError::Invalid(format!(
                        "node {}/{} is not in the tree of {size} entries",
                        n.level, n.index
                    )));
                }
                let cached = usize::from(n.level)
                    .checked_sub(usize::from(CACHED_FROM))
                    .and_then(|l| upper.get(l)?.get(usize::try_from(n.index).ok()?));
                match cached {
                    Some(hash) => out[slot] = *hash,
                    None => from_file.push((position(*n), slot)),
                }
            }
        }
        // Nodes near each other in the file (a leaf's lowest siblings) come in one read.
        from_file.sort_unstable();
        let mut group = 0;
        while group < from_file.len() {
            let first = from_file[group].0;
            let end = from_file[group..]
                .iter()
                .position(|(at, _)| *at >= first + COALESCE_NODES)
                .map_or(from_file.len(), |n| group + n);
            let last = from_file[end - 1].0;
            let mut bytes = vec![0u8; ((last - first + 1) * HASH_BYTES) as usize];
            self.nodes
                .read_exact_at(&mut bytes, first * HASH_BYTES)
                .map_err(|e| io("nodes", e))?;
            for &(at, slot) in &from_file[group..end] {
                let from = ((at - first) * HASH_BYTES) as usize;
                out[slot].copy_from_slice(&bytes[from..from + HASH_BYTES as usize]);
            }
            group = end;
        }
        Ok(out)
    }
}

impl PathIndex for EmbeddedStore {
    fn path_indexes(
        &self,
        hash_part: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<u64>, bool), StoreError> {
        self.paths.lookup_page(&path_key(hash_part)?, after, limit)
    }
}

impl LogStore for EmbeddedStore {
    fn size(&self) -> Result<u64, StoreError> {
        Ok(self.size.load(Ordering::Acquire))
    }

    fn find_entry(&self, leaf: &Hash) -> Result<Option<u64>, StoreError> {
        for record in self.leaves.lookup(&leaf_key(leaf))? {
            // The key is 20 bytes of the leaf hash; the tree holds all of it.
            if self.read_hashes(&[NodeId::new(0, record.index)])?[0] == *leaf {
                return Ok(Some(record.index));
            }
        }
        Ok(None)
    }

    fn append(&self, batch: &AppendBatch) -> Result<Appended, StoreError> {
        let mut data_end = locks::lock(&self.data_end);
        if let Some(cause) = self.failed.get() {
            return Err(StoreError::Stopped {
                cause: cause.clone(),
            });
        }
        let start = self.size.load(Ordering::Acquire);
        if start != batch.start_size {
            return Err(StoreError::SizeMismatch {
                expected: batch.start_size,
                actual: start,
            });
        }
        let end = start + batch.entries.len() as u64;

        let mut data = Vec::new();
        let mut offsets = Vec::with_capacity(batch.entries.len() * OFFSET_BYTES as usize);
        let mut index = sled::Batch::default();
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        let mut records = Vec::with_capacity(batch.entries.len());
        let mut leaves = Vec::with_capacity(batch.entries.len());
        for (i, e) in batch.entries.iter().enumerate() {
            data.extend_from_slice(&e.bytes);
            offsets.extend_from_slice(&(*data_end + data.len() as u64).to_le_bytes());
            let at = start + i as u64;
            leaves.push(Record::new(leaf_key(&e.leaf), at, &e.leaf));
            match &e.role {
                EntryRole::Signing {
                    hash_part,
                    builder,
                    nar_hash,
                } => {
                    let key = path_key(hash_part)?;
                    records.push((Record::new(key, at, &e.leaf), (key, at, *nar_hash)));
                    *counts.entry(builder.to_string()).or_default() += 1;
                }
                EntryRole::Key(_) => {
                    index.insert([KEY_EVENT_PREFIX, &at.to_be_bytes()].concat(), &[])
                }
            }
        }
        for (builder, n) in counts {
            let key = [BUILDER_PREFIX, builder.as_bytes()].concat();
            let old = match self.index.get(&key).map_err(engine)? {
                Some(v) => decode_u64(&v, "builder count")?,
                None => 0,
            };
            index.insert(key, &(old + n).to_be_bytes());
        }
        index.insert(SIZE_KEY, &end.to_be_bytes());
        let nodes = node_run(start, end, &batch.nodes)?;

        // From the first write on, a failure leaves memory and disk out of step: appending
        // stops, and a restart recovers from what is durable.
        let added = data.len() as u64;
        let encoded = Encoded {
            data,
            offsets,
            nodes,
            index,
        };
        let committed = self.write_batch(start, *data_end, encoded).and_then(|()| {
            *data_end += added;
            self.size.store(end, Ordering::Release);
            self.remember_upper_levels(&batch.nodes);
            let mut disagreements = 0;
            // In log order, so that a path's first entry in this batch is filed before the
            // batch's later entries of that path are compared with it.
            for by_leaf in leaves {
                self.leaves.insert(by_leaf)?;
            }
            for (by_path, (key, index, nar_hash)) in records {
                self.paths.insert(by_path)?;
                disagreements += u64::from(self.disagrees_with_first(key, index, &nar_hash)?);
            }
            self.paths.indexed_up_to(end)?;
            self.leaves.indexed_up_to(end)?;
            self.firsts.indexed_up_to(end)?;
            Ok(Appended { disagreements })
        });
        if let Err(e) = &committed {
            let _ = self.failed.set(e.to_string());
        }
        committed
    }

    fn entries(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, StoreError> {
        let end = range.end.min(self.size.load(Ordering::Acquire));
        if range.start >= end {
            return Ok(Vec::new());
        }
        let count = (end - range.start) as usize;
        let mut ends = vec![0u8; count * OFFSET_BYTES as usize];
        self.offsets
            .read_exact_at(&mut ends, range.start * OFFSET_BYTES)
            .map_err(|e| io("entries.idx", e))?;
        let ends: Vec<u64> = ends
            .chunks_exact(OFFSET_BYTES as usize)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let first = match range.start {
            0 => 0,
            i => read_offset(&self.offsets, i - 1)?,
        };
        let last = ends[count - 1];
        if last < first {
            return Err(StoreError::Corrupt(format!(
                "entries.idx goes backwards before entry {}",
                range.start
            )));
        }
        let mut bytes = vec![0u8; (last - first) as usize];
        self.data
            .read_exact_at(&mut bytes, first)
            .map_err(|e| io("entries.data", e))?;
        let mut out = Vec::with_capacity(count);
        let mut from = first;
        for (i, &to) in ends.iter().enumerate() {
            if to < from || to > last {
                return Err(StoreError::Corrupt(format!(
                    "entries.idx is out of order at entry {}",
                    range.start + i as u64
                )));
            }
            out.push(bytes[(from - first) as usize..(to - first) as usize].to_vec());
            from = to;
        }
        Ok(out)
    }

    fn builder_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.index
            .scan_prefix(BUILDER_PREFIX)
            .map(|kv| {
                let (k, v) = kv.map_err(engine)?;
                let name = String::from_utf8_lossy(&k[BUILDER_PREFIX.len()..]).into_owned();
                Ok((name, decode_u64(&v, "builder count")?))
            })
            .collect()
    }

    fn key_events(&self, after: Option<u64>, limit: usize) -> Result<(Vec<u64>, bool), StoreError> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let start = [KEY_EVENT_PREFIX, &from.to_be_bytes()].concat();
        let mut indexes = Vec::new();
        for kv in self.index.range(start..) {
            let (k, _) = kv.map_err(engine)?;
            let Some(index) = k.strip_prefix(KEY_EVENT_PREFIX) else {
                break;
            };
            if indexes.len() == limit {
                return Ok((indexes, true));
            }
            indexes.push(decode_u64(index, "key event index")?);
        }
        Ok((indexes, false))
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .index
            .get(CHECKPOINT_KEY)
            .map_err(engine)?
            .map(|v| v.to_vec()))
    }

    fn save_checkpoint(&self, size: u64, note: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(CHECKPOINT_KEY, note);
        batch.insert([CHECKPOINT_PREFIX, &size.to_be_bytes()].concat(), note);
        self.index.apply_batch(batch).map_err(engine)?;
        self.index.flush().map_err(engine)?;
        Ok(())
    }

    fn checkpoints(&self, after: u64, limit: usize) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        let start = [CHECKPOINT_PREFIX, &after.saturating_add(1).to_be_bytes()].concat();
        let mut notes = Vec::new();
        for kv in self.index.range(start..) {
            let (k, v) = kv.map_err(engine)?;
            if !k.starts_with(CHECKPOINT_PREFIX) {
                break;
            }
            if notes.len() == limit {
                return Ok((notes, true));
            }
            notes.push(v.to_vec());
        }
        Ok((notes, false))
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        let mut total = self.index.size_on_disk().map_err(engine)?;
        for name in [
            "entries.data",
            "entries.idx",
            "nodes",
            "paths.pages",
            "paths.dir",
            "leaves.pages",
            "leaves.dir",
            "firsts.pages",
            "firsts.dir",
        ] {
            let path = self.dir.join(name);
            if name.ends_with(".dir") && !path.exists() {
                continue;
            }
            total += std::fs::metadata(&path)
                .map_err(|e| io(&path.display().to_string(), e))?
                .len();
        }
        Ok(total)
    }
}

/// A batch as the bytes each file gets and the sled commit.
struct Encoded {
    data: Vec<u8>,
    offsets: Vec<u8>,
    nodes: Vec<u8>,
    index: sled::Batch,
}

/// The batch's nodes as one run of the node file, checking that they are exactly the nodes
/// the tree completes between `start` and `end` leaves.
fn node_run(start: u64, end: u64, nodes: &[(NodeId, Hash)]) -> Result<Vec<u8>, StoreError> {
    let first = node_count(start);
    let want = node_count(end) - first;
    if nodes.len() as u64 != want {
        return Err(StoreError::Invalid(format!(
            "a batch from {start} to {end} must complete {want} nodes, not {}",
            nodes.len()
        )));
    }
    let mut run = vec![0u8; nodes.len() * HASH_BYTES as usize];
    let mut seen = vec![false; nodes.len()];
    for (node, hash) in nodes {
        let slot = position(*node)
            .checked_sub(first)
            .filter(|s| *s < want)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "node {}/{} is not completed by this batch",
                    node.level, node.index
                ))
            })? as usize;
        if std::mem::replace(&mut seen[slot], true) {
            return Err(StoreError::Invalid(format!(
                "node {}/{} appears twice in a batch",
                node.level, node.index
            )));
        }
        run[slot * HASH_BYTES as usize..][..HASH_BYTES as usize].copy_from_slice(hash);
    }
    Ok(run)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::NewEntry;
    use reprolog_verifier::entry::Entry;
    use reprolog_verifier::entry::EntryKind;
    use reprolog_verifier::merkle::MemoryTree;
    use reprolog_verifier::nix::narinfo::NixHash;
    use reprolog_verifier::nix::{nix32, NixSecretKey, StorePath};
    use sha2::Digest;
    use std::fs::OpenOptions;

    /// A real encoded entry of the store path `/nix/store/<hash of path_seed>-<name>`, whose
    /// NAR hash is the hash of `nar_seed`.
    pub(crate) fn new_entry(
        path_seed: u64,
        name: &str,
        nar_seed: &[u8],
        nar_size: u64,
        builder: &str,
    ) -> NewEntry {
        let hash_part = nix32::encode(&sha2::Sha256::digest(path_seed.to_be_bytes())[..20]);
        let entry = Entry {
            kind: EntryKind::CacheSignature,
            store_path: StorePath::parse(&format!("/nix/store/{hash_part}-{name}")).unwrap(),
            nar_hash: NixHash(sha2::Sha256::digest(nar_seed).into()),
            nar_size,
            references: Default::default(),
            builder: builder_key(builder).public_key(),
            signature: [0; 64],
            statement: None,
        };
        NewEntry::signing(entry.encode().unwrap(), &entry)
    }

    /// The key `new_entry` signs with for `builder`.
    pub(crate) fn builder_key(builder: &str) -> NixSecretKey {
        NixSecretKey::from_seed(builder, [7; 32])
    }

    /// The log key of the tests.
    pub(crate) fn log_key() -> reprolog_verifier::note::SignerKey {
        reprolog_verifier::note::SignerKey::from_seed("example.org/test-log", [3; 32]).unwrap()
    }

    /// A registry in which `builders` (as `new_entry` names them) may sign from index 0.
    pub(crate) fn registry_allowing(builders: &[&str]) -> reprolog_verifier::registry::KeyRegistry {
        let key = log_key();
        let mut registry = reprolog_verifier::registry::KeyRegistry::new(key.verifier_key());
        for (i, b) in builders.iter().enumerate() {
            let event = reprolog_verifier::key_event::KeyEvent::register(
                builder_key(b).public_key(),
                0,
                &key,
            );
            registry.apply(i as u64, &event).unwrap();
        }
        registry
    }

    /// The hash part a signing entry is filed under.
    pub(crate) fn hash_part(e: &NewEntry) -> &str {
        match &e.role {
            crate::storage::EntryRole::Signing { hash_part, .. } => hash_part,
            crate::storage::EntryRole::Key(_) => panic!("a key event has no path"),
        }
    }

    /// Entry `i`; three entries share each store path.
    fn entry(i: u64) -> NewEntry {
        let builder = format!("builder-{}", i % 2);
        new_entry(
            i / 3,
            &format!("e{i}"),
            &i.to_be_bytes(),
            1000 + i,
            &builder,
        )
    }

    fn batch(store: &EmbeddedStore, range: Range<u64>) -> AppendBatch {
        let entries: Vec<NewEntry> = range.clone().map(entry).collect();
        let leaves: Vec<Hash> = entries.iter().map(|e| e.leaf).collect();
        AppendBatch {
            start_size: range.start,
            nodes: merkle::append_leaves(range.start, &leaves, store).unwrap(),
            entries,
        }
    }

    fn append(store: &EmbeddedStore, range: Range<u64>) {
        store.append(&batch(store, range)).unwrap();
    }

    /// Everything a reader can ask matches a memory tree of the first `size` entries.
    fn check(store: &EmbeddedStore, size: u64) {
        assert_eq!(store.size().unwrap(), size);
        let mut tree = MemoryTree::new();
        for i in 0..size {
            tree.push(entry(i).leaf);
        }
        assert_eq!(merkle::tree_hash(size, store).unwrap(), tree.root());
        for level in (0..64).take_while(|l| size >> l > 0) {
            let nodes: Vec<NodeId> = (0..size >> level).map(|i| NodeId::new(level, i)).collect();
            assert_eq!(
                store.read_hashes(&nodes).unwrap(),
                tree.read_hashes(&nodes).unwrap()
            );
        }
        let all: Vec<Vec<u8>> = (0..size).map(|i| entry(i).bytes).collect();
        assert_eq!(store.entries(0..size + 10).unwrap(), all);
        if size > 5 {
            assert_eq!(store.entries(2..5).unwrap(), all[2..5]);
            let e = entry(4);
            assert_eq!(store.find_entry(&e.leaf).unwrap(), Some(4));
            assert_eq!(
                store.path_indexes(hash_part(&e), None, 10).unwrap(),
                (vec![3, 4, 5], false)
            );
            assert_eq!(
                store.path_indexes(hash_part(&e), Some(3), 1).unwrap(),
                (vec![4], true)
            );
        }
        let not_yet = entry(size);
        assert_eq!(store.find_entry(&not_yet.leaf).unwrap(), None);
        assert!(store.read_hashes(&[NodeId::new(0, size)]).is_err());
        let counts: u64 = store.builder_counts().unwrap().iter().map(|c| c.1).sum();
        assert_eq!(counts, size);
    }

    #[test]
    fn appends_read_back_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        check(&store, 0);
        let mut size = 0;
        for n in [1, 1, 2, 5, 8, 100, 3, 300] {
            append(&store, size..size + n);
            size += n;
            check(&store, size);
        }
        store.save_checkpoint(size - 300, b"older").unwrap();
        store.save_checkpoint(size, b"note").unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        check(&store, size);
        assert_eq!(store.checkpoint().unwrap().unwrap(), b"note");
        let both = (vec![b"older".to_vec(), b"note".to_vec()], false);
        assert_eq!(store.checkpoints(0, 10).unwrap(), both);
        assert_eq!(
            store.checkpoints(0, 1).unwrap(),
            (vec![b"older".to_vec()], true)
        );
        assert_eq!(
            store.checkpoints(size - 300, 10).unwrap(),
            (vec![b"note".to_vec()], false)
        );
        append(&store, size..size + 77);
        check(&store, size + 77);
    }

    #[test]
    fn upper_levels_served_from_memory_match_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        let mut size = 0;
        for n in [1000, 1100, 3000] {
            append(&store, size..size + n);
            size += n;
            check(&store, size);
        }
        assert_eq!(store.upper.read().unwrap().len(), 3, "levels 10, 11 and 12");
        drop(store);
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            store.upper.read().unwrap()[0].len(),
            4,
            "5,100 entries, level 10"
        );
        check(&store, size);
    }

    #[test]
    fn bytes_a_crash_left_past_the_size_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        append(&store, 0..50);
        drop(store);
        // A batch that reached the files but not the index: its bytes are past the size.
        for name in ["entries.data", "entries.idx", "nodes"] {
            let f = OpenOptions::new()
                .append(true)
                .open(dir.path().join(name))
                .unwrap();
            std::io::Write::write_all(&mut &f, &[0xee; 1000]).unwrap();
        }
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        check(&store, 50);
        append(&store, 50..90);
        check(&store, 90);
    }

    #[test]
    fn files_shorter_than_the_size_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        append(&store, 0..50);
        drop(store);
        for name in ["entries.data", "entries.idx", "nodes"] {
            let path = dir.path().join(name);
            let saved = std::fs::read(&path).unwrap();
            std::fs::write(&path, &saved[..saved.len() - 8]).unwrap();
            let err = EmbeddedStore::open(dir.path(), 1 << 20)
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains(name) && err.contains("committed size"),
                "{err}"
            );
            assert_eq!(std::fs::read(&path).unwrap().len(), saved.len() - 8);
            std::fs::write(&path, &saved).unwrap();
        }
        check(&EmbeddedStore::open(dir.path(), 1 << 20).unwrap(), 50);
    }

    #[test]
    fn a_wrong_batch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        append(&store, 0..10);
        let mut stale = batch(&store, 10..20);
        stale.start_size = 9;
        assert!(matches!(
            store.append(&stale),
            Err(StoreError::SizeMismatch { .. })
        ));
        let mut short = batch(&store, 10..20);
        short.nodes.pop();
        assert!(store.append(&short).is_err());
        let mut twice = batch(&store, 10..20);
        let last = twice.nodes.len() - 1;
        twice.nodes[last] = twice.nodes[0];
        assert!(store.append(&twice).is_err());
        check(&store, 10);
        append(&store, 10..20);
        check(&store, 20);
    }

    /// Appends `entries` at the end of the log; returns the disagreements the store found.
    fn append_entries(store: &EmbeddedStore, entries: Vec<NewEntry>) -> u64 {
        let start_size = store.size().unwrap();
        let leaves: Vec<Hash> = entries.iter().map(|e| e.leaf).collect();
        let nodes = merkle::append_leaves(start_size, &leaves, store).unwrap();
        store
            .append(&AppendBatch {
                start_size,
                entries,
                nodes,
            })
            .unwrap()
            .disagreements
    }

    #[test]
    fn disagreements_are_told_against_each_paths_first_nar_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        // Entries 0, 1, 2 are one path with three NAR hashes; entry 3 starts the next path.
        assert_eq!(append_entries(&store, (0..4).map(entry).collect()), 2);
        // The path of entries 3 to 5 is completed in another batch.
        assert_eq!(append_entries(&store, (4..6).map(entry).collect()), 2);
        // Another builder agreeing with each path's first NAR hash is no disagreement, but
        // agreeing only with a later one is.
        let first_of_path_0 = new_entry(0, "e0", &0u64.to_be_bytes(), 1000, "other");
        let second_of_path_1 = new_entry(1, "e4", &4u64.to_be_bytes(), 1004, "other");
        assert_eq!(
            append_entries(&store, vec![first_of_path_0, second_of_path_1]),
            1
        );
        drop(store);
        // Rebuilt from the log on opening (its directory was never saved): still the first.
        assert!(!dir.path().join("firsts.dir").exists());
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        let again = new_entry(0, "e0", &0u64.to_be_bytes(), 1000, "third");
        let differs = new_entry(0, "e0", b"another", 1000, "third");
        assert_eq!(append_entries(&store, vec![again]), 0);
        assert_eq!(append_entries(&store, vec![differs]), 1);
    }

    #[test]
    fn a_store_of_the_first_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), "segment_size: 524288").unwrap();
        let err = EmbeddedStore::open(dir.path(), 1 << 20)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("first layout"), "{err}");
    }
}

/// Benchmarks, not tests: `cargo test --release -p reprolog-server bench_crowded_path --
/// --ignored --nocapture` prints what sequencing an entry costs (the duplicate check, then the
/// durable append) on a store path with 10^5 events and on fresh paths;
/// `bench_disagreement_check` prints what telling a disagreement costs per entry.
#[cfg(test)]
mod bench {
    use super::*;
    use crate::storage::NewEntry;
    use std::time::Instant;

    /// Event `i` of path `path`: a distinct NAR hash each time.
    fn event(path: u64, i: u64) -> NewEntry {
        super::tests::new_entry(
            path,
            "bench",
            format!("{path}/{i}").as_bytes(),
            i,
            "builder-1",
        )
    }

    /// Sequences `entries` as the sequencer does, in batches of 256; returns µs per entry.
    fn sequence(store: &EmbeddedStore, entries: Vec<NewEntry>) -> f64 {
        let n = entries.len();
        let start = Instant::now();
        for chunk in entries.chunks(256) {
            for e in chunk {
                assert_eq!(store.find_entry(&e.leaf).unwrap(), None);
            }
            let size = store.size().unwrap();
            let leaves: Vec<Hash> = chunk.iter().map(|e| e.leaf).collect();
            let nodes = merkle::append_leaves(size, &leaves, store).unwrap();
            store
                .append(&AppendBatch {
                    start_size: size,
                    entries: chunk.to_vec(),
                    nodes,
                })
                .unwrap();
        }
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    }

    #[test]
    #[ignore]
    fn bench_crowded_path() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let store = EmbeddedStore::open(dir.path(), 16 << 20).unwrap();
        let crowded = 0;
        let history = 100_000;
        sequence(&store, (0..history).map(|i| event(crowded, i)).collect());
        let key = path_key(super::tests::hash_part(&event(crowded, 0))).unwrap();
        assert_eq!(store.paths.lookup(&key).unwrap().len() as u64, history);
        for round in 0..3 {
            let base = history + round * 10_000;
            let on_crowded = sequence(
                &store,
                (base..base + 5_000).map(|i| event(crowded, i)).collect(),
            );
            let on_fresh = sequence(
                &store,
                (base..base + 5_000).map(|i| event(1 + i, 0)).collect(),
            );
            // What the duplicate check cost before the leaf index: reading the path's chain.
            let start = Instant::now();
            let records = store.paths.lookup(&key).unwrap().len();
            let chain_read = start.elapsed().as_secs_f64() * 1e6;
            println!(
                "round {round}: sequencing {on_crowded:.1} µs/entry on a path with {records} \
                 events, {on_fresh:.1} µs/entry on fresh paths; reading that path's whole \
                 chain (the old duplicate check, per entry) {chain_read:.0} µs"
            );
        }
    }

    /// The firsts-index check alone, as `append` runs it for each entry: on 10^6 fresh paths
    /// (a miss and an insert each), on paths seen before (a hit), and on one path with 10^5
    /// events, whose cost must be the same.
    #[test]
    #[ignore]
    fn bench_disagreement_check() {
        use sha2::Digest;
        let dir = tempfile::tempdir_in(".").unwrap();
        let store = EmbeddedStore::open(dir.path(), 16 << 20).unwrap();
        let key = |path: u64| -> Key {
            sha2::Sha256::digest(path.to_be_bytes())[..20]
                .try_into()
                .unwrap()
        };
        let nar = |seed: u64| -> Hash { sha2::Sha256::digest(seed.to_le_bytes()).into() };
        let per_entry = |start: Instant, n: u64| start.elapsed().as_secs_f64() * 1e6 / n as f64;
        let paths = 1_000_000u64;
        let mut index = 0;
        let start = Instant::now();
        for p in 0..paths {
            assert!(!store.disagrees_with_first(key(p), index, &nar(p)).unwrap());
            index += 1;
        }
        let fresh = per_entry(start, paths);
        let hits = 200_000u64;
        let start = Instant::now();
        let mut found = 0;
        for i in 0..hits {
            let p = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % paths;
            found += u64::from(
                store
                    .disagrees_with_first(key(p), index, &nar(p + 1))
                    .unwrap(),
            );
            index += 1;
        }
        assert_eq!(found, hits, "every one differs from its path's first");
        let seen = per_entry(start, hits);
        let crowded = key(u64::MAX);
        store.disagrees_with_first(crowded, index, &nar(0)).unwrap();
        let mut timings = Vec::new();
        for round in 0..10u64 {
            let start = Instant::now();
            for i in 0..10_000 {
                index += 1;
                store
                    .disagrees_with_first(crowded, index, &nar(round * 10_000 + i))
                    .unwrap();
            }
            timings.push(per_entry(start, 10_000));
        }
        println!(
            "disagreement check per entry, {paths} paths in the index: new path {fresh:.2} µs, \
             path seen before {seen:.2} µs, one path from 1 to 10^5 events: {}",
            timings
                .iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
