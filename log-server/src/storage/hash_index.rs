//! A hash index from 20-byte keys to entry indexes, as an extendible hash table of 4 KiB
//! pages in one file. The store keeps three: store path hashes to the entries of that path
//! (for lookups by path); leaf hashes to their entry (for the duplicate check); and store path
//! hashes to the path's first entry only (for telling disagreements). The last two exist so
//! that sequencing an entry never costs more on a path with a long history: a path's records
//! can fill many pages, a leaf or a path's first entry has one record.
//!
//! Why not sled: with random keys (store path hashes) sled's inserts cost 10 µs of CPU at 10^5
//! keys and 60 µs at 4·10^6 with a bounded cache, and with a large cache its memory grows
//! with the log. Here a lookup is one page read, an insert usually one 32-byte write, and
//! memory is the directory: four bytes per page of about 90 entries.
//!
//! Layout. A page is 128 slots of 32 bytes. Slot 0 is the header (local depth, next overflow
//! page); the others hold records: the key (20 bytes), the entry index plus one (8 bytes,
//! 0 = empty slot), and the first 4 bytes of a hash (the leaf hash; in the firsts index, the
//! NAR hash). Pages are found through a directory indexed by the top bits of a keyed hash of
//! the key; the hash key is secret so that submitters cannot pile paths into one bucket. Records of one key share a bucket;
//! when more than a page of them share it, overflow pages are chained.
//!
//! Crash safety. The index is derived from the log, so it need not be durable with each
//! batch. Every [`SYNC_EVERY`] entries the page file is `fsync`ed and then the directory is
//! written, atomically by rename, with the log size it covers; after a crash the entries
//! beyond that size are indexed again (a record added twice is returned once). Pages named
//! by a saved directory are never rewritten: a split writes two new pages, and afterwards
//! only adds records into empty 32-byte slots or sets a header's overflow link, each inside
//! one disk sector. On opening, overflow links to pages allocated after the saved directory
//! are cut.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use reprolog_verifier::merkle::Hash;
use reprolog_verifier::nix::nix32;
use sha2::{Digest, Sha256};

use super::files::open_file;
use super::StoreError;
use reprolog_verifier::locks;

const PAGE: usize = 4096;
const SLOT: usize = 32;
const SLOTS: usize = PAGE / SLOT;
const KEY: usize = 20;
/// How many entries may be indexed beyond the saved directory before it is saved again.
pub const SYNC_EVERY: u64 = 1 << 18;
const MAGIC: &[u8; 8] = b"RPLPIDX1";
const MAX_DEPTH: u8 = 32;
/// A chain longer than this is a loop in damaged pages; reading stops there.
const MAX_CHAIN_PAGES: usize = 1 << 20;

/// A record's key: a store path hash, or the first 20 bytes of a leaf hash.
pub type Key = [u8; KEY];

/// The key of a store path hash part (its 32 nix32 characters, decoded).
pub fn path_key(hash_part: &str) -> Result<Key, StoreError> {
    nix32::decode(hash_part, KEY)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| StoreError::Invalid(format!("{hash_part:?} is not a store path hash")))
}

/// The key of a leaf hash.
pub fn leaf_key(leaf: &Hash) -> Key {
    let mut key = [0; KEY];
    key.copy_from_slice(&leaf[..KEY]);
    key
}

/// One record: an entry filed under a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub index: u64,
    pub hash_prefix: [u8; 4],
}

impl Record {
    /// A record holding the first 4 bytes of `hash`.
    pub fn new(key: Key, index: u64, hash: &Hash) -> Self {
        let mut hash_prefix = [0; 4];
        hash_prefix.copy_from_slice(&hash[..4]);
        Record {
            key,
            index,
            hash_prefix,
        }
    }

    fn encode(&self) -> [u8; SLOT] {
        let mut slot = [0u8; SLOT];
        slot[..KEY].copy_from_slice(&self.key);
        slot[KEY..KEY + 8].copy_from_slice(&(self.index + 1).to_le_bytes());
        slot[KEY + 8..].copy_from_slice(&self.hash_prefix);
        slot
    }

    fn decode(slot: &[u8]) -> Option<Record> {
        let stored = u64::from_le_bytes(slot[KEY..KEY + 8].try_into().ok()?);
        Some(Record {
            key: slot[..KEY].try_into().ok()?,
            index: stored.checked_sub(1)?,
            hash_prefix: slot[KEY + 8..].try_into().ok()?,
        })
    }
}

/// A page as stored: the header slot, then record slots.
struct Page(Box<[u8; PAGE]>);

impl Page {
    fn depth(&self) -> u8 {
        self.0[0]
    }

    fn next(&self) -> u32 {
        u32::from_le_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }

    fn slots(&self) -> impl Iterator<Item = &[u8]> {
        self.0[SLOT..].chunks_exact(SLOT)
    }

    fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.slots().filter_map(Record::decode)
    }

    /// Records fill a page's slots in order, so the first empty slot is the count.
    fn len(&self) -> usize {
        self.slots()
            .position(|s| s[KEY..KEY + 8] == [0; 8])
            .unwrap_or(SLOTS - 1)
    }
}

fn encode_page(depth: u8, records: &[Record]) -> Vec<u8> {
    let mut page = vec![0u8; PAGE];
    page[0] = depth;
    for (slot, r) in page[SLOT..].chunks_exact_mut(SLOT).zip(records) {
        slot.copy_from_slice(&r.encode());
    }
    page
}

/// The in-memory part: the directory and where the next page goes.
#[derive(Clone)]
struct Directory {
    secret: [u8; 32],
    /// The log size whose entries are all indexed.
    indexed: u64,
    pages: u32,
    depth: u8,
    buckets: Vec<u32>,
}

impl Directory {
    fn fresh() -> Self {
        let mut secret = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
        Directory {
            secret,
            indexed: 0,
            pages: 1,
            depth: 0,
            buckets: vec![0],
        }
    }

    fn hash(&self, key: &Key) -> u64 {
        let h = Sha256::new()
            .chain_update(self.secret)
            .chain_update(key)
            .finalize();
        u64::from_be_bytes(h[..8].try_into().unwrap_or_default())
    }

    fn bucket_of(&self, hash: u64) -> usize {
        hash.checked_shr(64 - u32::from(self.depth)).unwrap_or(0) as usize
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.buckets.len() * 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.secret);
        out.extend_from_slice(&self.indexed.to_le_bytes());
        out.extend_from_slice(&self.pages.to_le_bytes());
        out.push(self.depth);
        for b in &self.buckets {
            out.extend_from_slice(&b.to_le_bytes());
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, sum) = bytes.split_at(bytes.len().checked_sub(32)?);
        if Sha256::digest(body).as_slice() != sum || body.get(..8)? != MAGIC {
            return None;
        }
        // MAGIC, secret [8..40], indexed [40..48], pages [48..52], depth [52], buckets.
        let depth = *body.get(52)?;
        if depth > MAX_DEPTH || body.len() != 53 + 4 * (1usize << depth) {
            return None;
        }
        let pages = u32::from_le_bytes(body[48..52].try_into().ok()?);
        let buckets: Vec<u32> = body[53..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if buckets.iter().any(|b| *b >= pages) {
            return None;
        }
        Some(Directory {
            secret: body[8..40].try_into().ok()?,
            indexed: u64::from_le_bytes(body[40..48].try_into().ok()?),
            pages,
            depth,
            buckets,
        })
    }
}

/// The end of a chain.
struct Tail {
    /// The last page, and how many records it holds.
    page: u32,
    fill: usize,
    /// The keyed hash every record of the chain has, if they all have one; such a chain
    /// cannot be split, so a full last page is followed by a new one without reading the rest.
    sole_hash: Option<u64>,
}

pub struct HashIndex {
    pages: Arc<File>,
    pages_path: PathBuf,
    dir_path: PathBuf,
    directory: Mutex<Directory>,
    /// For chains written to since opening, by first page: where the next record goes, so
    /// that most inserts write a slot without reading a page.
    tails: Mutex<std::collections::HashMap<u32, Tail>>,
    /// Set while a save runs, so that saves never overlap.
    saving: Arc<AtomicBool>,
}

/// An I/O error on one of the index's files, named as the embedded store names its own.
fn io(file: &Path, e: std::io::Error) -> StoreError {
    let name = file.file_name().unwrap_or(file.as_os_str());
    StoreError::io(name.to_string_lossy(), e)
}

impl HashIndex {
    /// Opens the index named `stem` in `dir` (files `<stem>.pages` and `<stem>.dir`). Returns
    /// the log size up to which it is complete; the caller indexes the entries after it. An
    /// unreadable directory starts the index afresh from size 0.
    pub fn open(dir: &Path, stem: &str) -> Result<(Self, u64), StoreError> {
        let pages_path = dir.join(format!("{stem}.pages"));
        let dir_path = dir.join(format!("{stem}.dir"));
        let saved = match std::fs::read(&dir_path) {
            Ok(bytes) => Directory::decode(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&dir_path, e)),
        };
        let fresh = saved.is_none();
        if fresh && dir_path.exists() {
            tracing::warn!("{} is damaged; rebuilding that index", dir_path.display());
        }
        let directory = saved.unwrap_or_else(Directory::fresh);
        let pages = open_file(&pages_path)?;
        if fresh {
            pages.set_len(0).map_err(|e| io(&pages_path, e))?;
        }
        let index = HashIndex {
            pages: Arc::new(pages),
            pages_path,
            dir_path,
            directory: Mutex::new(directory.clone()),
            tails: Mutex::new(Default::default()),
            saving: Arc::new(AtomicBool::new(false)),
        };
        if fresh {
            index.write_page(0, &encode_page(0, &[]))?;
        } else {
            index.cut_links_past(&directory)?;
        }
        // Pages past the saved directory are named by nothing now; they are reused.
        index
            .pages
            .set_len(u64::from(directory.pages) * PAGE as u64)
            .map_err(|e| io(&index.pages_path, e))?;
        Ok((index, directory.indexed))
    }

    /// Cuts overflow links to pages allocated after `saved` was written.
    fn cut_links_past(&self, saved: &Directory) -> Result<(), StoreError> {
        let mut seen = std::collections::HashSet::new();
        for &first in &saved.buckets {
            if !seen.insert(first) {
                continue;
            }
            let mut page = first;
            loop {
                let p = self.read_page(page)?;
                if p.next() == 0 {
                    break;
                }
                if p.next() >= saved.pages {
                    self.pages
                        .write_all_at(&[0; 4], u64::from(page) * PAGE as u64 + 4)
                        .map_err(|e| io(&self.pages_path, e))?;
                    break;
                }
                page = p.next();
            }
        }
        Ok(())
    }

    fn read_page(&self, page: u32) -> Result<Page, StoreError> {
        let mut bytes = Box::new([0u8; PAGE]);
        let at = u64::from(page) * PAGE as u64;
        // A page past the end of the file reads as empty.
        let mut read = 0;
        while read < PAGE {
            match self.pages.read_at(&mut bytes[read..], at + read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(&self.pages_path, e)),
            }
        }
        Ok(Page(bytes))
    }

    fn write_page(&self, page: u32, bytes: &[u8]) -> Result<(), StoreError> {
        self.pages
            .write_all_at(bytes, u64::from(page) * PAGE as u64)
            .map_err(|e| io(&self.pages_path, e))
    }

    /// The pages of a bucket's chain, with their numbers.
    fn chain(&self, first: u32) -> Result<Vec<(u32, Page)>, StoreError> {
        let mut chain = Vec::new();
        let mut page = first;
        loop {
            let p = self.read_page(page)?;
            let next = p.next();
            chain.push((page, p));
            if next == 0 || chain.len() > MAX_CHAIN_PAGES {
                return Ok(chain);
            }
            page = next;
        }
    }

    /// Every record of a key, in index order. For keys with few records (leaf hashes); a
    /// store path's records are read a page at a time with [`HashIndex::lookup_page`].
    pub fn lookup(&self, key: &Key) -> Result<Vec<Record>, StoreError> {
        let first = self.bucket_head(key)?;
        let mut found: Vec<Record> = self
            .chain(first)?
            .into_iter()
            .flat_map(|(_, p)| {
                p.slots()
                    .filter(|s| s[..KEY] == key[..])
                    .filter_map(Record::decode)
                    .collect::<Vec<_>>()
            })
            .collect();
        found.sort_by_key(|r| r.index);
        found.dedup();
        Ok(found)
    }

    /// The first `limit` entry indexes of a key after `after`, in order, and whether more
    /// follow. Memory is bounded by `limit` however many records the key has: the chain is
    /// read a page at a time, keeping only the smallest indexes seen.
    pub fn lookup_page(
        &self,
        key: &Key,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<u64>, bool), StoreError> {
        let mut page = self.bucket_head(key)?;
        let mut smallest = std::collections::BTreeSet::new();
        for _ in 0..=MAX_CHAIN_PAGES {
            let p = self.read_page(page)?;
            for r in p
                .slots()
                .filter(|s| s[..KEY] == key[..])
                .filter_map(Record::decode)
            {
                if after.is_some_and(|a| r.index <= a) {
                    continue;
                }
                smallest.insert(r.index);
                if smallest.len() > limit + 1 {
                    smallest.pop_last();
                }
            }
            if p.next() == 0 {
                break;
            }
            page = p.next();
        }
        // One more than the limit was kept (when there is one) to tell whether more follow.
        let mut indexes: Vec<u64> = smallest.into_iter().collect();
        let more = indexes.len() > limit;
        indexes.truncate(limit);
        Ok((indexes, more))
    }

    fn bucket_head(&self, key: &Key) -> Result<u32, StoreError> {
        let d = locks::lock(&self.directory);
        Ok(d.buckets[d.bucket_of(d.hash(key))])
    }

    /// Adds a record. One writer at a time. Adding a record twice is harmless (lookups return
    /// each record once), which lets a restart index again entries that may be there.
    pub fn insert(&self, record: Record) -> Result<(), StoreError> {
        let mut d = locks::lock(&self.directory);
        let mut tails = locks::lock(&self.tails);
        let hash = d.hash(&record.key);
        let encoded = record.encode();
        loop {
            let head = d.buckets[d.bucket_of(hash)];
            if let Some(tail) = tails.get_mut(&head) {
                if tail.fill < SLOTS - 1 {
                    tail.fill += 1;
                    if tail.sole_hash != Some(hash) {
                        tail.sole_hash = None;
                    }
                    return self.write_slot(tail.page, tail.fill, &encoded);
                }
                if tail.sole_hash == Some(hash) {
                    // A crowded path's chain grows without being read again.
                    let last = tail.page;
                    let depth = self.read_page(head)?.depth();
                    *tail = self.add_overflow_page(&mut d, last, depth, &record)?;
                    return Ok(());
                }
            }
            let chain = self.chain(head)?;
            if chain.iter().any(|(_, p)| p.slots().any(|s| s == encoded)) {
                return Ok(());
            }
            let (last, last_page) = match chain.last() {
                Some((n, p)) => (*n, p),
                None => return Err(StoreError::Corrupt("an empty page chain".into())),
            };
            let records: Vec<Record> = chain.iter().flat_map(|(_, p)| p.records()).collect();
            let all_one_path = records.iter().all(|r| d.hash(&r.key) == hash);
            if last_page.len() < SLOTS - 1 {
                tails.insert(
                    head,
                    Tail {
                        page: last,
                        fill: last_page.len(),
                        sole_hash: all_one_path.then_some(hash),
                    },
                );
                continue;
            }
            let depth = chain[0].1.depth();
            if all_one_path || depth >= MAX_DEPTH {
                // Only another page helps: these records cannot be told apart by hash bits.
                let mut tail = self.add_overflow_page(&mut d, last, depth, &record)?;
                if !all_one_path {
                    tail.sole_hash = None;
                }
                tails.insert(head, tail);
                return Ok(());
            }
            tails.remove(&head);
            self.split(&mut d, hash, depth, &records)?;
        }
    }

    /// Starts a new page holding `record` and links it after page `last`.
    fn add_overflow_page(
        &self,
        d: &mut Directory,
        last: u32,
        depth: u8,
        record: &Record,
    ) -> Result<Tail, StoreError> {
        let new = d.pages;
        d.pages += 1;
        self.write_page(new, &encode_page(depth, &[*record]))?;
        self.pages
            .write_all_at(&new.to_le_bytes(), u64::from(last) * PAGE as u64 + 4)
            .map_err(|e| io(&self.pages_path, e))?;
        Ok(Tail {
            page: new,
            fill: 1,
            sole_hash: Some(d.hash(&record.key)),
        })
    }

    fn write_slot(&self, page: u32, slot: usize, encoded: &[u8]) -> Result<(), StoreError> {
        self.pages
            .write_all_at(
                encoded,
                u64::from(page) * PAGE as u64 + (slot * SLOT) as u64,
            )
            .map_err(|e| io(&self.pages_path, e))
    }

    /// Splits the full bucket of `depth` that `hash` falls in into two new chains.
    fn split(
        &self,
        d: &mut Directory,
        hash: u64,
        depth: u8,
        records: &[Record],
    ) -> Result<(), StoreError> {
        if depth == d.depth {
            d.buckets = d.buckets.iter().flat_map(|b| [*b, *b]).collect();
            d.depth += 1;
        }
        let bit = 63 - u32::from(depth);
        let (zeros, ones): (Vec<Record>, Vec<Record>) = records
            .iter()
            .partition(|r| (d.hash(&r.key) >> bit) & 1 == 0);
        let heads = [
            self.write_chain(d, depth + 1, &zeros)?,
            self.write_chain(d, depth + 1, &ones)?,
        ];
        // The bucket's directory slots share its top `depth` bits; in the lower half of them
        // the next bit is 0.
        let span = 1usize << (d.depth - depth);
        let start = hash.checked_shr(64 - u32::from(depth)).unwrap_or(0) as usize * span;
        for (i, slot) in d.buckets[start..start + span].iter_mut().enumerate() {
            *slot = heads[usize::from(i >= span / 2)];
        }
        Ok(())
    }

    /// Writes records as a new chain of pages; returns its first page.
    fn write_chain(
        &self,
        d: &mut Directory,
        depth: u8,
        records: &[Record],
    ) -> Result<u32, StoreError> {
        let chunks: Vec<&[Record]> = if records.is_empty() {
            vec![&[]]
        } else {
            records.chunks(SLOTS - 1).collect()
        };
        let first = d.pages;
        d.pages += chunks.len() as u32;
        for (i, chunk) in chunks.iter().enumerate() {
            let mut page = encode_page(depth, chunk);
            if i + 1 < chunks.len() {
                page[4..8].copy_from_slice(&(first + i as u32 + 1).to_le_bytes());
            }
            self.write_page(first + i as u32, &page)?;
        }
        Ok(first)
    }

    /// Records that the index holds every entry below `size`, saving the directory in the
    /// background once [`SYNC_EVERY`] entries have been added since the last save.
    pub fn indexed_up_to(&self, size: u64) -> Result<(), StoreError> {
        if self.saving.load(Ordering::Acquire) {
            return Ok(()); // The next batch tries again.
        }
        let snapshot = {
            let mut d = locks::lock(&self.directory);
            if size < d.indexed + SYNC_EVERY {
                return Ok(());
            }
            d.indexed = size;
            d.clone()
        };
        self.saving.store(true, Ordering::Release);
        let (pages, saving, pages_path, dir_path) = (
            Arc::clone(&self.pages),
            Arc::clone(&self.saving),
            self.pages_path.clone(),
            self.dir_path.clone(),
        );
        std::thread::spawn(move || {
            if let Err(e) = save(&pages, &pages_path, &dir_path, &snapshot) {
                tracing::error!("saving {}: {e}", dir_path.display());
            }
            saving.store(false, Ordering::Release);
        });
        Ok(())
    }

    /// Saves the directory now, waiting for a background save to finish first.
    #[cfg(test)]
    pub fn save_now(&self, size: u64) -> Result<(), StoreError> {
        while self.saving.swap(true, Ordering::AcqRel) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let snapshot = {
            let mut d = locks::lock(&self.directory);
            d.indexed = size;
            d.clone()
        };
        let result = save(&self.pages, &self.pages_path, &self.dir_path, &snapshot);
        self.saving.store(false, Ordering::Release);
        result
    }
}

/// Makes the pages durable, then replaces the directory file with `snapshot`.
fn save(
    pages: &File,
    pages_path: &Path,
    dir_path: &Path,
    snapshot: &Directory,
) -> Result<(), StoreError> {
    pages.sync_data().map_err(|e| io(pages_path, e))?;
    let tmp = dir_path.with_extension("tmp");
    // A file a crash left here is replaced; a symbolic link is removed, never followed.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp, e)),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    f.write_all(&snapshot.encode())
        .and_then(|()| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, dir_path).map_err(|e| io(dir_path, e))?;
    if let Some(parent) = dir_path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(parent, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key(path: u64) -> Key {
        let h = Sha256::digest(path.to_be_bytes());
        h[..KEY].try_into().unwrap()
    }

    /// Entry `index` of a workload where every seventh entry is of one crowded path (so
    /// its bucket needs overflow pages) and the rest are spread over `n / 2` paths.
    fn workload(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let path = if i % 7 == 0 { u64::MAX } else { i % (n / 2) };
                Record::new(key(path), i, &Sha256::digest(i.to_be_bytes()).into())
            })
            .collect()
    }

    fn check(index: &HashIndex, records: &[Record]) {
        let mut model: BTreeMap<Key, Vec<Record>> = BTreeMap::new();
        for r in records {
            model.entry(r.key).or_default().push(*r);
        }
        for (key, want) in model {
            assert_eq!(index.lookup(&key).unwrap(), want);
            // Paging through the key in any page size gives the same records, in order.
            let want: Vec<u64> = want.iter().map(|r| r.index).collect();
            for limit in [1, 7, 1000] {
                let (mut got, mut after) = (Vec::new(), None);
                loop {
                    let (page, more) = index.lookup_page(&key, after, limit).unwrap();
                    assert!(page.len() <= limit);
                    got.extend_from_slice(&page);
                    after = page.last().copied();
                    if !more {
                        break;
                    }
                }
                assert_eq!(got, want, "pages of {limit}");
            }
        }
        assert!(index.lookup(&key(u64::MAX - 1)).unwrap().is_empty());
    }

    fn insert_all(index: &HashIndex, records: &[Record]) {
        for r in records {
            index.insert(*r).unwrap();
        }
    }

    #[test]
    fn lookups_match_a_model_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let records = workload(20_000);
        let (index, indexed) = HashIndex::open(dir.path(), "paths").unwrap();
        assert_eq!(indexed, 0);
        insert_all(&index, &records);
        check(&index, &records);
        let depth = index.directory.lock().unwrap().depth;
        assert!(
            depth >= 7,
            "20,000 records split the table to depth {depth}"
        );
        index.save_now(20_000).unwrap();
        drop(index);

        let (index, indexed) = HashIndex::open(dir.path(), "paths").unwrap();
        assert_eq!(indexed, 20_000);
        check(&index, &records);
        // Inserting again changes nothing.
        insert_all(&index, &records[..500]);
        check(&index, &records);
    }

    #[test]
    fn a_crash_loses_only_what_is_indexed_again() {
        let dir = tempfile::tempdir().unwrap();
        let records = workload(12_000);
        let (index, _) = HashIndex::open(dir.path(), "paths").unwrap();
        insert_all(&index, &records[..5_000]);
        index.save_now(5_000).unwrap();
        // Then, unsaved: splits, overflow links and new pages; and a torn tail.
        insert_all(&index, &records[5_000..]);
        drop(index);
        let pages = OpenOptions::new()
            .append(true)
            .open(dir.path().join("paths.pages"))
            .unwrap();
        std::io::Write::write_all(&mut &pages, &[0xab; 1000]).unwrap();

        let (index, indexed) = HashIndex::open(dir.path(), "paths").unwrap();
        assert_eq!(indexed, 5_000);
        for r in &records[..5_000] {
            assert!(index.lookup(&r.key).unwrap().contains(r));
        }
        insert_all(&index, &records[5_000..]);
        check(&index, &records);
    }

    #[test]
    fn a_background_save_is_what_a_reopen_sees() {
        let dir = tempfile::tempdir().unwrap();
        let records = workload(3_000);
        let (index, _) = HashIndex::open(dir.path(), "paths").unwrap();
        insert_all(&index, &records);
        index.indexed_up_to(SYNC_EVERY - 1).unwrap();
        assert!(!index.saving.load(Ordering::Acquire), "too early to save");
        index.indexed_up_to(SYNC_EVERY).unwrap();
        while index.saving.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(index);
        let (index, indexed) = HashIndex::open(dir.path(), "paths").unwrap();
        assert_eq!(indexed, SYNC_EVERY);
        check(&index, &records);
    }

    #[test]
    fn a_damaged_directory_starts_the_index_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let records = workload(2_000);
        let (index, _) = HashIndex::open(dir.path(), "paths").unwrap();
        insert_all(&index, &records);
        index.save_now(2_000).unwrap();
        drop(index);
        let path = dir.path().join("paths.dir");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[50] ^= 1;
        std::fs::write(&path, bytes).unwrap();

        let (index, indexed) = HashIndex::open(dir.path(), "paths").unwrap();
        assert_eq!(indexed, 0);
        assert!(index.lookup(&records[1].key).unwrap().is_empty());
        insert_all(&index, &records);
        check(&index, &records);
    }
}

/// A benchmark, not a test: `cargo test --release -p reprolog-server bench_path_index --
/// --ignored --nocapture` prints the cost of a lookup plus an insert as the index grows.
#[cfg(test)]
mod bench {
    use super::*;

    #[test]
    #[ignore]
    fn bench_path_index() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let (index, _) = HashIndex::open(dir.path(), "paths").unwrap();
        let leaf = [7u8; 32];
        let mut at = 0u64;
        for step in [100_000u64, 900_000, 1_000_000, 2_000_000] {
            let start = std::time::Instant::now();
            for _ in 0..step {
                let h = Sha256::digest(at.to_be_bytes());
                let key: Key = h[..KEY].try_into().unwrap();
                assert!(index.lookup(&key).unwrap().is_empty());
                index.insert(Record::new(key, at, &leaf)).unwrap();
                at += 1;
            }
            let per = start.elapsed().as_secs_f64() / step as f64 * 1e6;
            let d = index.directory.lock().unwrap();
            println!(
                "{at:>9} records: lookup + insert {per:.2} µs; directory {} KiB; {} pages",
                d.buckets.len() * 4 / 1024,
                d.pages
            );
        }
    }
}
