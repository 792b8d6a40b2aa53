//! `build` entries: a DSSE-signed build attestation logged as an entry (`spec/entry.md`,
//! `spec/attestation.md`), checked against the spec's vector.

use reprolog_verifier::attestation::BuildFacts;
use reprolog_verifier::entry::{Entry, EntryError, EntryKind};
use reprolog_verifier::merkle;
use reprolog_verifier::nix::narinfo::NixHash;
use reprolog_verifier::nix::{NixSecretKey, StorePath};

/// The vector's builder: a fixed seed, so that the vector is reproducible.
fn builder() -> NixSecretKey {
    NixSecretKey::from_seed("builder-1", [42; 32])
}

fn facts() -> BuildFacts {
    BuildFacts {
        store_path: StorePath::parse("/nix/store/apgmnjij5if74scsya5lr1ri1db7l4cc-hello-reprolog")
            .unwrap(),
        nar_hash: NixHash([0x11; 32]),
        nar_size: 120,
        references: Default::default(),
        derivation: StorePath::parse(
            "/nix/store/l6vvcbw6729fwv3bhmbs0jb8lnzp9x0a-hello-reprolog.drv",
        )
        .unwrap(),
        output: "out".into(),
        system: "x86_64-linux".into(),
        nix_version: "2.8.0".into(),
        started: 1_796_284_800,
        finished: 1_796_284_802,
    }
}

fn vector() -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    let entry = std::fs::read_to_string(dir.join("entry-v2-build.txt")).unwrap();
    let leaf = std::fs::read_to_string(dir.join("entry-v2-build.leaf-hash")).unwrap();
    (entry, leaf.trim().to_owned())
}

#[test]
fn an_attestation_makes_the_specs_build_entry() {
    let key = builder();
    let envelope = facts().sign(&key);
    let entry = Entry::from_attestation(&envelope, &[key.public_key()]).unwrap();
    assert_eq!(entry.kind, EntryKind::Build);
    let bytes = entry.encode().unwrap();
    let (text, leaf) = vector();
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), text);
    assert_eq!(hex::encode(merkle::leaf_hash(&bytes)), leaf);
    // Self-contained: the entry alone decodes and verifies.
    let decoded = Entry::decode(text.as_bytes()).unwrap();
    assert_eq!(decoded, entry);
    decoded.verify_signature().unwrap();
    // The same attestation submitted again is the same entry, byte for byte.
    let again = Entry::from_attestation(&facts().sign(&key), &[key.public_key()]).unwrap();
    assert_eq!(again.encode().unwrap(), bytes);
}

#[test]
fn a_build_entry_must_agree_with_its_statement_and_signature() {
    let (text, _) = vector();
    // Another NAR size than the statement's subject.
    let resized = text.replace("nar-size 120\n", "nar-size 121\n");
    assert!(matches!(
        Entry::decode(resized.as_bytes()),
        Err(EntryError::Malformed { .. })
    ));
    // A cache-signature entry with the attestation's signature: the signature covers the
    // statement's DSSE encoding, never a Nix fingerprint.
    let as_cache = text
        .replace("kind build\n", "kind cache-signature\n")
        .split("statement ")
        .next()
        .unwrap()
        .to_owned();
    let entry = Entry::decode(as_cache.as_bytes()).unwrap();
    assert_eq!(entry.verify_signature(), Err(EntryError::BadSignature));
    // A key that did not sign it.
    let stranger = NixSecretKey::from_seed("builder-1", [43; 32]);
    assert!(Entry::from_attestation(&facts().sign(&builder()), &[stranger.public_key()]).is_err());
}
