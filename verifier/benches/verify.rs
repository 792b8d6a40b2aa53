//! Verification costs a client pays: inclusion proofs in a 2^30-leaf log, and narinfo
//! signatures one by one and batched.
//!
//! Run with `cargo bench -p reprolog-verifier --bench verify`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use reprolog_verifier::merkle::{self, Hash};
use reprolog_verifier::nix::{verify_batch, NarInfo, NixPublicKey, NixSecretKey, NixSignature};
use sha2::{Digest, Sha256};

const LOG_SIZE: u64 = 1 << 30;

/// A valid inclusion proof for `index` in a full tree of 2^30 leaves, without the tree: pick
/// the 30 siblings, then fold them into the root the proof must reach.
fn proof_at_2_30(index: u64) -> (Vec<Hash>, Hash, Hash) {
    let leaf = merkle::leaf_hash(b"entry");
    let proof: Vec<Hash> = (0..30u8).map(|i| Sha256::digest([i]).into()).collect();
    let mut root = leaf;
    for (level, sibling) in proof.iter().enumerate() {
        root = if index >> level & 1 == 1 {
            merkle::node_hash(sibling, &root)
        } else {
            merkle::node_hash(&root, sibling)
        };
    }
    (proof, leaf, root)
}

fn inclusion(c: &mut Criterion) {
    let index = 0x2aaa_aaab;
    let (proof, leaf, root) = proof_at_2_30(index);
    merkle::verify_inclusion(&proof, index, LOG_SIZE, &leaf, &root).expect("valid proof");
    c.bench_function("inclusion proof verify, 2^30 leaves", |b| {
        b.iter(|| merkle::verify_inclusion(&proof, index, LOG_SIZE, &leaf, &root).is_ok())
    });
}

/// Distinct signed narinfos, each by its own builder key.
fn signed_narinfos(n: usize) -> Vec<(NixPublicKey, String, NixSignature)> {
    (0..n)
        .map(|i| {
            let key = NixSecretKey::from_seed(&format!("builder-{i}"), [i as u8; 32]);
            let text = format!(
                "StorePath: /nix/store/{:0>32}-bench-{i}\nURL: nar/x.nar\n\
                 NarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n\
                 NarSize: {}\nReferences: \n",
                i,
                1000 + i
            );
            let fp = NarInfo::parse(&text).expect("bench narinfo").fingerprint();
            let sig = key.sign(&fp);
            (key.public_key(), fp, sig)
        })
        .collect()
}

fn narinfo_signatures(c: &mut Criterion) {
    let lix_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/nix/lix");
    let key = std::fs::read_to_string(lix_dir.join("cache.lix.systems.pub")).expect("lix key");
    let key = NixPublicKey::parse(&key).expect("lix key");
    let text = std::fs::read_to_string(lix_dir.join("iz2nhchdh0dl96z591maai3f5hnl9jd9.narinfo"))
        .expect("lix narinfo");

    let mut group = c.benchmark_group("narinfo signatures");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse + fingerprint + verify one (lix)", |b| {
        b.iter(|| {
            let info = NarInfo::parse(&text).expect("parses");
            info.check_signatures(std::slice::from_ref(&key))
        })
    });
    let batch = signed_narinfos(64);
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("verify 64 one by one", |b| {
        b.iter(|| batch.iter().all(|(k, fp, s)| k.verify(fp, s)))
    });
    group.bench_function("verify 64 batched", |b| {
        b.iter_batched(
            || {
                batch
                    .iter()
                    .map(|(k, fp, s)| (k, fp.as_str(), s))
                    .collect::<Vec<_>>()
            },
            |items| verify_batch(&items),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, inclusion, narinfo_signatures);
criterion_main!(benches);
