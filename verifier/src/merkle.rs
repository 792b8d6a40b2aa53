//! RFC 6962 / RFC 9162 Merkle tree hashing, and inclusion and consistency proofs.
//!
//! The tree is never held in memory. A log stores the hash of every *complete* subtree, named
//! by [`NodeId`] (a level and an index at that level); a [`HashReader`] reads them back in
//! batches. Proof generation first works out which stored nodes it needs (at most a few per
//! tree level, so O(log n)), reads them in one call, and then combines them.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The largest number of hashes any proof for a tree of at most 2^64 - 1 leaves can hold.
pub const MAX_PROOF_HASHES: usize = 64;

/// SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A complete subtree: the `2^level` leaves starting at `index << level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// The height above the leaves: 0 is a leaf, and a node of level `l` covers `2^l` leaves.
    pub level: u8,
    /// The node's position among the nodes of its level, from 0 at the left.
    pub index: u64,
}

impl NodeId {
    /// The node at `level` and `index`.
    pub fn new(level: u8, index: u64) -> Self {
        NodeId { level, index }
    }
}

/// Reads stored complete-subtree hashes.
pub trait HashReader {
    /// Why stored hashes could not be read.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Returns one hash per requested node, in order. Nodes are sorted and distinct.
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Self::Error>;
}

/// Why a proof could not be generated or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// An inclusion proof was asked or checked for a leaf the tree does not have.
    #[error("index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The 0-based leaf index.
        index: u64,
        /// The tree size it was asked for.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("old size {old} is larger than new size {new}")]
    SizesOutOfOrder {
        /// The tree size proved from.
        old: u64,
        /// The tree size proved to.
        new: u64,
    },
    /// A proof with another number of hashes than its sizes call for.
    #[error("the proof has {got} hashes; this proof needs {want}")]
    WrongLength {
        /// The hashes the proof has.
        got: usize,
        /// The hashes a proof between these sizes has.
        want: usize,
    },
    /// The proof is well formed but does not verify: the log does not hold what it claims.
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    /// Two checkpoints of one size with different roots: a fork.
    #[error("the two trees have the same size but different roots")]
    SameSizeDifferentRoot,
    /// A [`HashReader`] answered with another number of hashes than it was asked for.
    #[error("the storage returned {got} hashes for {want} nodes")]
    ShortRead {
        /// The hashes it returned.
        got: usize,
        /// The nodes it was asked for.
        want: usize,
    },
    /// A [`HashReader`] failed; the source is its own error.
    #[error("reading stored hashes: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A half-open range of leaves `[lo, hi)`, the unit RFC 6962's MTH() is defined on.
type Span = (u64, u64);

/// The largest power of two strictly smaller than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The complete subtrees whose hashes, folded from the right, give MTH over `span`.
/// Every span RFC 6962 builds starts at a multiple of a power of two at least as large as it,
/// so the cover is the binary decomposition of its length, largest first.
fn cover(span: Span) -> Vec<NodeId> {
    let (mut lo, hi) = span;
    let mut nodes = Vec::new();
    while lo < hi {
        let level = 63 - (hi - lo).leading_zeros() as u8;
        let level = level.min(lo.trailing_zeros().min(63) as u8);
        nodes.push(NodeId::new(level, lo >> level));
        lo += 1 << level;
    }
    nodes
}

/// PATH(m, D[lo:hi]) of RFC 6962 §2.1.1, as the spans whose MTH makes up the proof.
fn inclusion_spans(index: u64, span: Span, out: &mut Vec<Span>) {
    let (lo, hi) = span;
    if hi - lo <= 1 {
        return;
    }
    let k = split_point(hi - lo);
    if index < lo + k {
        inclusion_spans(index, (lo, lo + k), out);
        out.push((lo + k, hi));
    } else {
        inclusion_spans(index, (lo + k, hi), out);
        out.push((lo, lo + k));
    }
}

/// SUBPROOF(m, D[lo:hi], b) of RFC 6962 §2.1.2.
fn consistency_spans(old: u64, span: Span, whole_old_tree: bool, out: &mut Vec<Span>) {
    let (lo, hi) = span;
    if old == hi - lo {
        if !whole_old_tree {
            out.push(span);
        }
        return;
    }
    let k = split_point(hi - lo);
    if old <= k {
        consistency_spans(old, (lo, lo + k), whole_old_tree, out);
        out.push((lo + k, hi));
    } else {
        consistency_spans(old - k, (lo + k, hi), false, out);
        out.push((lo, lo + k));
    }
}

/// Reads what the spans need in one batch, then computes MTH for each span.
fn span_hashes<R: HashReader>(spans: &[Span], reader: &R) -> Result<Vec<Hash>, ProofError> {
    let covers: Vec<Vec<NodeId>> = spans.iter().map(|s| cover(*s)).collect();
    let wanted: Vec<NodeId> = covers
        .iter()
        .flatten()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let read = reader
        .read_hashes(&wanted)
        .map_err(|e| ProofError::Storage(Box::new(e)))?;
    if read.len() != wanted.len() {
        return Err(ProofError::ShortRead {
            got: read.len(),
            want: wanted.len(),
        });
    }
    let stored: BTreeMap<NodeId, Hash> = wanted.into_iter().zip(read).collect();
    Ok(covers
        .iter()
        .map(|nodes| {
            let mut hashes = nodes.iter().rev().map(|n| stored[n]);
            let last = hashes.next().unwrap_or(EMPTY_ROOT);
            hashes.fold(last, |acc, left| node_hash(&left, &acc))
        })
        .collect())
}

/// The root hash of the first `size` leaves.
pub fn tree_hash<R: HashReader>(size: u64, reader: &R) -> Result<Hash, ProofError> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    Ok(span_hashes(&[(0, size)], reader)?[0])
}

/// The inclusion proof for leaf `index` in the tree of `size` leaves, leaf sibling first.
pub fn prove_inclusion<R: HashReader>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut spans = Vec::new();
    inclusion_spans(index, (0, size), &mut spans);
    span_hashes(&spans, reader)
}

/// The consistency proof from the tree of `old` leaves to the tree of `new` leaves.
/// It is empty when `old` is 0 or equal to `new`.
pub fn prove_consistency<R: HashReader>(
    old: u64,
    new: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut spans = Vec::new();
    consistency_spans(old, (0, new), true, &mut spans);
    span_hashes(&spans, reader)
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    proof: &[Hash],
    index: u64,
    size: u64,
    leaf: &Hash,
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_proof_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && r == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2). Any tree is consistent with the empty one.
pub fn verify_consistency(
    proof: &[Hash],
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    let want = consistency_proof_len(old, new);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    if old == 0 {
        return Ok(());
    }
    if old == new {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::SameSizeDifferentRoot)
        };
    }
    let mut path = proof.iter();
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let first = if old.is_power_of_two() {
        *old_root
    } else {
        *path.next().ok_or(ProofError::RootMismatch)?
    };
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if s == 0 {
            return Err(ProofError::RootMismatch);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// How many hashes an inclusion proof for `index` in a tree of `size` holds.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let mut spans = Vec::new();
    inclusion_spans(index, (0, size), &mut spans);
    spans.len()
}

/// How many hashes a consistency proof from `old` to `new` holds.
pub fn consistency_proof_len(old: u64, new: u64) -> usize {
    if old == 0 || old >= new {
        return 0;
    }
    let mut spans = Vec::new();
    consistency_spans(old, (0, new), true, &mut spans);
    spans.len()
}

/// The complete-subtree hashes that appending leaves to a tree of `size` leaves creates, given
/// their leaf hashes. It reads the left siblings it needs from `reader` and returns every new
/// node, leaves included, in the order they complete.
pub fn append_leaves<R: HashReader>(
    size: u64,
    leaves: &[Hash],
    reader: &R,
) -> Result<Vec<(NodeId, Hash)>, ProofError> {
    let end = size + leaves.len() as u64;
    // Left siblings that already exist in storage: every node the new nodes pair with.
    let mut wanted = BTreeSet::new();
    for n in size..end {
        let (mut level, mut index) = (0u8, n);
        while index & 1 == 1 {
            let sibling = NodeId::new(level, index - 1);
            // Stored only if it was complete before this append began.
            if (index << level) <= size {
                wanted.insert(sibling);
            }
            level += 1;
            index >>= 1;
        }
    }
    let wanted: Vec<NodeId> = wanted.into_iter().collect();
    let read = reader
        .read_hashes(&wanted)
        .map_err(|e| ProofError::Storage(Box::new(e)))?;
    if read.len() != wanted.len() {
        return Err(ProofError::ShortRead {
            got: read.len(),
            want: wanted.len(),
        });
    }
    let mut known: BTreeMap<NodeId, Hash> = wanted.into_iter().zip(read).collect();
    let mut created = Vec::new();
    for (n, leaf) in (size..end).zip(leaves) {
        let (mut level, mut index, mut hash) = (0u8, n, *leaf);
        created.push((NodeId::new(0, n), hash));
        known.insert(NodeId::new(0, n), hash);
        while index & 1 == 1 {
            let left = known[&NodeId::new(level, index - 1)];
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            created.push((NodeId::new(level, index), hash));
            known.insert(NodeId::new(level, index), hash);
        }
    }
    Ok(created)
}

/// The right edge of a tree: the roots of the perfect subtrees that make up its first `size`
/// leaves, largest first. Enough to append leaves and compute the root without the rest of the
/// tree, which is how a monitor follows a log in O(log n) memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The range of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A range from saved parts; there must be one hash per set bit of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (hashes.len() == size.count_ones() as usize).then_some(CompactRange { size, hashes })
    }

    /// The number of leaves the range covers.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest (leftmost) first: what [`CompactRange::from_parts`] takes
    /// back.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf by its hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            if let Some(left) = self.hashes.pop() {
                hash = node_hash(&left, &hash);
            }
            s >>= 1;
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The RFC 6962 root of the tree of [`CompactRange::size`] leaves.
    pub fn root(&self) -> Hash {
        let mut hashes = self.hashes.iter().rev();
        let last = hashes.next().copied().unwrap_or(EMPTY_ROOT);
        hashes.fold(last, |acc, left| node_hash(left, &acc))
    }
}

/// A whole tree in memory, for tests, tools and small logs. Servers store nodes elsewhere.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

/// A node the memory tree does not hold.
#[derive(Debug, thiserror::Error)]
#[error("node at level {} index {} is not stored", .0.level, .0.index)]
pub struct MissingNode(pub NodeId);

impl MemoryTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends one leaf by its hash.
    pub fn push(&mut self, leaf: Hash) {
        let created = append_leaves(self.size(), &[leaf], self)
            .expect("a memory tree holds every node it has created");
        for (node, hash) in created {
            let level = usize::from(node.level);
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
        }
    }

    /// The RFC 6962 root of the whole tree.
    pub fn root(&self) -> Hash {
        tree_hash(self.size(), self).expect("a memory tree holds every node it has created")
    }
}

impl HashReader for MemoryTree {
    type Error = MissingNode;

    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, MissingNode> {
        nodes
            .iter()
            .map(|n| {
                self.levels
                    .get(usize::from(n.level))
                    .and_then(|l| usize::try_from(n.index).ok().and_then(|i| l.get(i)))
                    .copied()
                    .ok_or(MissingNode(*n))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            t.push(leaf_hash(&i.to_be_bytes()));
        }
        t
    }

    #[test]
    fn cover_decomposes_aligned_spans() {
        assert_eq!(cover((0, 7)).len(), 3);
        assert_eq!(cover((4, 7)), vec![NodeId::new(1, 2), NodeId::new(0, 6)]);
        assert_eq!(cover((8, 16)), vec![NodeId::new(3, 1)]);
    }

    #[test]
    fn every_proof_in_small_trees_verifies() {
        for size in 1..40u64 {
            let t = tree(size);
            let root = t.root();
            for i in 0..size {
                let p = prove_inclusion(i, size, &t).unwrap();
                verify_inclusion(&p, i, size, &leaf_hash(&i.to_be_bytes()), &root).unwrap();
                let old_root = tree_hash(i + 1, &t).unwrap();
                let c = prove_consistency(i + 1, size, &t).unwrap();
                verify_consistency(&c, i + 1, size, &old_root, &root).unwrap();
            }
        }
    }

    #[test]
    fn compact_ranges_follow_the_root() {
        let full = tree(70);
        let mut range = CompactRange::new();
        assert_eq!(range.root(), EMPTY_ROOT);
        for i in 0..70u64 {
            range.push(leaf_hash(&i.to_be_bytes()));
            assert_eq!(range.root(), tree_hash(i + 1, &full).unwrap());
        }
        let saved = CompactRange::from_parts(range.size(), range.hashes().to_vec()).unwrap();
        assert_eq!(saved, range);
        assert!(CompactRange::from_parts(70, vec![]).is_none());
    }

    #[test]
    fn batched_appends_equal_one_by_one() {
        let one_by_one = tree(300);
        for split in [1u64, 2, 3, 5, 7, 64, 100, 255] {
            let mut t = MemoryTree::new();
            let mut size = 0;
            while size < 300 {
                let end = (size + split).min(300);
                let leaves: Vec<Hash> = (size..end).map(|i| leaf_hash(&i.to_be_bytes())).collect();
                for (node, hash) in append_leaves(size, &leaves, &t).unwrap() {
                    let level = usize::from(node.level);
                    if t.levels.len() <= level {
                        t.levels.push(Vec::new());
                    }
                    assert_eq!(t.levels[level].len() as u64, node.index);
                    t.levels[level].push(hash);
                }
                size = end;
            }
            assert_eq!(t.levels, one_by_one.levels, "batches of {split}");
        }
    }

    #[test]
    fn proof_reads_are_logarithmic() {
        struct Counting(MemoryTree, std::cell::Cell<usize>);
        impl HashReader for Counting {
            type Error = MissingNode;
            fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, MissingNode> {
                self.1.set(self.1.get() + nodes.len());
                self.0.read_hashes(nodes)
            }
        }
        let size = 5000;
        let t = Counting(tree(size), Default::default());
        for i in [0, 1, 2047, 4095, 4999] {
            t.1.set(0);
            prove_inclusion(i, size, &t).unwrap();
            assert!(t.1.get() <= 2 * 13, "{} reads for index {i}", t.1.get());
            t.1.set(0);
            prove_consistency(i + 1, size, &t).unwrap();
            assert!(
                t.1.get() <= 2 * 13,
                "{} reads for old size {}",
                t.1.get(),
                i + 1
            );
        }
    }
}
