//! Property tests: proofs for random trees verify and any flipped bit fails; every parser fed
//! random or mutated bytes returns an error instead of panicking.

mod common;

use proptest::prelude::*;
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::entry::Entry;
use reprolog_verifier::merkle::{self, Hash, MemoryTree};
use reprolog_verifier::nix::{nix32, NarInfo, NixPublicKey, NixSecretKey, NixSignature, StorePath};
use reprolog_verifier::note::{Note, SignerKey, VerifierKey};
use reprolog_verifier::proof::TlogProof;
use reprolog_verifier::tiles::{decode_bundle, TilePath};
use reprolog_verifier::witness_request::AddCheckpoint;

fn tree(size: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..size {
        t.push(merkle::leaf_hash(&i.to_le_bytes()));
    }
    t
}

fn flip(h: &mut Hash, bit: usize) {
    h[bit / 8 % 32] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn inclusion_proofs_verify_and_flipped_bits_fail(
        size in 1u64..3000, index_seed: u64, which: usize, bit: usize,
    ) {
        let t = tree(size);
        let root = t.root();
        let index = index_seed % size;
        let leaf = merkle::leaf_hash(&index.to_le_bytes());
        let proof = merkle::prove_inclusion(index, size, &t).unwrap();
        merkle::verify_inclusion(&proof, index, size, &leaf, &root).unwrap();

        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = which % bad.len();
            flip(&mut bad[i], bit);
            prop_assert!(merkle::verify_inclusion(&bad, index, size, &leaf, &root).is_err());
        }
        let mut bad_leaf = leaf;
        flip(&mut bad_leaf, bit);
        prop_assert!(merkle::verify_inclusion(&proof, index, size, &bad_leaf, &root).is_err());
        let mut bad_root = root;
        flip(&mut bad_root, bit);
        prop_assert!(merkle::verify_inclusion(&proof, index, size, &leaf, &bad_root).is_err());
        if size > 1 {
            prop_assert!(merkle::verify_inclusion(&proof, (index + 1) % size, size, &leaf, &root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_flipped_bits_fail(
        new in 1u64..3000, old_seed: u64, which: usize, bit: usize,
    ) {
        let t = tree(new);
        let old = 1 + old_seed % new;
        let (old_root, new_root) = (merkle::tree_hash(old, &t).unwrap(), t.root());
        let proof = merkle::prove_consistency(old, new, &t).unwrap();
        merkle::verify_consistency(&proof, old, new, &old_root, &new_root).unwrap();

        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = which % bad.len();
            flip(&mut bad[i], bit);
            prop_assert!(merkle::verify_consistency(&bad, old, new, &old_root, &new_root).is_err());
        }
        let mut bad_old = old_root;
        flip(&mut bad_old, bit);
        prop_assert!(merkle::verify_consistency(&proof, old, new, &bad_old, &new_root).is_err());
        let mut bad_new = new_root;
        flip(&mut bad_new, bit);
        prop_assert!(merkle::verify_consistency(&proof, old, new, &old_root, &bad_new).is_err());
    }
}

/// Feeds bytes to every parser. None may panic; the caller says which must refuse them.
fn parse_everything(bytes: &[u8]) -> Vec<(&'static str, bool)> {
    let s = String::from_utf8_lossy(bytes);
    vec![
        ("note", Note::parse(bytes).is_ok()),
        ("checkpoint", Checkpoint::parse(&s).is_ok()),
        ("tile path", TilePath::parse(&s).is_ok()),
        ("bundle", decode_bundle(bytes).is_ok()),
        ("tlog-proof", TlogProof::parse(bytes).is_ok()),
        ("add-checkpoint", AddCheckpoint::parse(bytes).is_ok()),
        ("narinfo", NarInfo::parse(&s).is_ok()),
        ("entry", Entry::decode(bytes).is_ok()),
        ("verifier key", VerifierKey::parse(&s).is_ok()),
        ("signer key", SignerKey::parse(&s).is_ok()),
        ("nix public key", NixPublicKey::parse(&s).is_ok()),
        ("nix secret key", NixSecretKey::parse(&s).is_ok()),
        ("nix signature", NixSignature::parse(&s).is_ok()),
        ("nix32", nix32::decode(&s, 32).is_some()),
        ("store path", StorePath::parse(&s).is_ok()),
    ]
}

/// Valid inputs to mutate, so the fuzzing reaches deep into each parser.
fn seeds() -> Vec<Vec<u8>> {
    let vectors = common::read("note/vectors.txt");
    let mut seeds: Vec<Vec<u8>> = common::scissored_blocks(&vectors)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let (files, _) = common::lix_narinfos();
    seeds.extend(files.into_iter().map(|(_, t)| t.into_bytes()));
    let spec =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors/entry-v2.txt");
    seeds.push(std::fs::read(spec).unwrap());
    seeds.push(b"tile/entries/x001/234.p/7".to_vec());
    seeds
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsers_refuse_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for (name, ok) in parse_everything(&bytes) {
            // Any 52 alphabet characters are valid nix32, and any well-framed length-prefixed
            // bytes are a valid bundle; every other format must refuse noise.
            prop_assert!(!ok || name == "nix32" || name == "bundle", "{name} accepted {bytes:?}");
        }
    }

    #[test]
    fn parsers_survive_mutated_inputs(
        seed in 0usize..16, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut: usize,
    ) {
        let seeds = seeds();
        let mut bytes = seeds[seed % seeds.len()].clone();
        for (pos, byte) in edits {
            let i = pos % bytes.len();
            bytes[i] = byte;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        parse_everything(&bytes);
    }
}
