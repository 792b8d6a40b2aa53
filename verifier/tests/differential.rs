//! Differential tests against independent Merkle implementations: `rs_merkle` with an RFC 6962
//! hasher (roots and inclusion proofs), and `tlog_tiles`, Cloudflare's port of Go's
//! golang.org/x/mod/sumdb/tlog (inclusion and consistency proofs, both directions).

use reprolog_verifier::merkle::{self, Hash, MemoryTree};
use rs_merkle::{Hasher, MerkleTree};
use tlog_tiles::tlog;

#[derive(Clone)]
struct Rfc6962;

impl Hasher for Rfc6962 {
    type Hash = Hash;

    fn hash(data: &[u8]) -> Hash {
        merkle::leaf_hash(data)
    }

    fn concat_and_hash(left: &Hash, right: Option<&Hash>) -> Hash {
        match right {
            Some(r) => merkle::node_hash(left, r),
            // RFC 6962 carries an unpaired right-edge node up unchanged.
            None => *left,
        }
    }
}

fn leaves(n: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| merkle::leaf_hash(format!("entry {i}").as_bytes()))
        .collect()
}

fn ours(leaves: &[Hash]) -> MemoryTree {
    let mut t = MemoryTree::new();
    for l in leaves {
        t.push(*l);
    }
    t
}

#[test]
fn roots_and_inclusion_proofs_match_rs_merkle() {
    for size in (1..300u64).chain([511, 512, 513, 1000, 1023, 1025, 4097]) {
        let leaves = leaves(size);
        let theirs = MerkleTree::<Rfc6962>::from_leaves(&leaves);
        let ours = ours(&leaves);
        assert_eq!(theirs.root(), Some(ours.root()), "root of size {size}");
        let step = (size / 17).max(1);
        for index in (0..size).step_by(step as usize).chain([size - 1]) {
            let their_proof = theirs.proof(&[index as usize]).proof_hashes().to_vec();
            let our_proof = merkle::prove_inclusion(index, size, &ours).unwrap();
            assert_eq!(our_proof, their_proof, "inclusion proof {index} in {size}");
        }
    }
}

/// Go's tlog layout: every stored hash in one list, by `stored_hash_index`.
struct GoTree(Vec<tlog::Hash>);

impl tlog::HashReader for GoTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        Ok(indexes.iter().map(|&i| self.0[i as usize]).collect())
    }
}

fn go_tree(leaves: &[Hash]) -> GoTree {
    let mut t = GoTree(Vec::new());
    for (n, l) in leaves.iter().enumerate() {
        let new = tlog::stored_hashes_for_record_hash(n as u64, tlog::Hash(*l), &t).unwrap();
        t.0.extend(new);
    }
    t
}

#[test]
fn proofs_match_go_tlog_both_ways() {
    for size in [1u64, 2, 3, 7, 8, 9, 100, 255, 256, 257, 1000, 3001] {
        let leaves = leaves(size);
        let (ours, go) = (ours(&leaves), go_tree(&leaves));
        let root = ours.root();
        assert_eq!(tlog::tree_hash(size, &go).unwrap().0, root);
        for n in (0..size).step_by((size as usize / 13).max(1)) {
            let our_proof = merkle::prove_inclusion(n, size, &ours).unwrap();
            let go_proof: Vec<Hash> = tlog::prove_record(size, n, &go)
                .unwrap()
                .iter()
                .map(|h| h.0)
                .collect();
            assert_eq!(our_proof, go_proof, "record proof {n} in {size}");
            let as_go: Vec<tlog::Hash> = our_proof.iter().map(|h| tlog::Hash(*h)).collect();
            tlog::check_record(
                &as_go,
                size,
                tlog::Hash(root),
                n,
                tlog::Hash(leaves[n as usize]),
            )
            .unwrap();

            let old = n + 1;
            let old_root = merkle::tree_hash(old, &ours).unwrap();
            let our_tree_proof = merkle::prove_consistency(old, size, &ours).unwrap();
            let go_tree_proof: Vec<Hash> = tlog::prove_tree(size, old, &go)
                .unwrap()
                .iter()
                .map(|h| h.0)
                .collect();
            assert_eq!(our_tree_proof, go_tree_proof, "tree proof {old} -> {size}");
            merkle::verify_consistency(&go_tree_proof, old, size, &old_root, &root).unwrap();
            let as_go: Vec<tlog::Hash> = our_tree_proof.iter().map(|h| tlog::Hash(*h)).collect();
            tlog::check_tree(&as_go, size, tlog::Hash(root), old, tlog::Hash(old_root)).unwrap();
        }
    }
}
