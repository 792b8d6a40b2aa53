//! Key events (`spec/entry.md`, "Key events") checked against the spec's vectors, which
//! `scripts/make-key-vectors.py` makes independently of this crate: the same events built with
//! our API must be the same bytes, decode, verify, and replay into the registry the spec
//! describes.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use reprolog_verifier::entry::LogEntry;
use reprolog_verifier::key_event::KeyEvent;
use reprolog_verifier::merkle;
use reprolog_verifier::nix::NixSecretKey;
use reprolog_verifier::note::SignerKey;
use reprolog_verifier::registry::{KeyRegistry, KeyStatus};

const ORIGIN: &str = "example.org/log";

/// The log's signed-note key; its name is the origin.
fn log_key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, [9; 32]).unwrap()
}

fn key1() -> NixSecretKey {
    NixSecretKey::from_seed("cache.example.org-1", [1; 32])
}

fn key2() -> NixSecretKey {
    NixSecretKey::from_seed("cache.example.org-2", [2; 32])
}

/// The four vectors, in the order they are applied, with the events our API makes for them.
fn events() -> Vec<(&'static str, KeyEvent)> {
    let log = log_key();
    vec![
        (
            "entry-v2-key-register",
            KeyEvent::register(key1().public_key(), 0, &log),
        ),
        (
            "entry-v2-key-rotate",
            KeyEvent::rotate(ORIGIN, &key1(), &key2()),
        ),
        (
            "entry-v2-key-revoke",
            KeyEvent::revoke_by_key(ORIGIN, &key2(), 7),
        ),
        (
            "entry-v2-key-revoke-operator",
            KeyEvent::revoke_by_operator(key1().public_key(), 3, &log),
        ),
    ]
}

fn vector(name: &str) -> (Vec<u8>, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    let entry = std::fs::read(dir.join(format!("{name}.txt"))).unwrap();
    let leaf = std::fs::read_to_string(dir.join(format!("{name}.leaf-hash"))).unwrap();
    (entry, leaf.trim().to_owned())
}

fn decode_key_event(bytes: &[u8]) -> Option<KeyEvent> {
    match LogEntry::decode(bytes) {
        Ok(LogEntry::Key(event)) => Some(event),
        _ => None,
    }
}

/// Our event for the vector `name` is its bytes and leaf hash; the vector alone decodes to
/// it and verifies under the log's key; a flipped bit of any signature fails.
fn check_vector(name: &str) {
    let event = events().into_iter().find(|(n, _)| *n == name).unwrap().1;
    let (text, leaf) = vector(name);
    let bytes = event.encode();
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        String::from_utf8(text.clone()).unwrap(),
        "{name}: our encoding is not the vector's"
    );
    assert_eq!(hex::encode(merkle::leaf_hash(&bytes)), leaf, "{name}");
    // Self-contained: the vector alone decodes and verifies.
    let decoded = match LogEntry::decode(&text) {
        Ok(LogEntry::Key(event)) => event,
        other => panic!("{name} does not decode as a key event: {other:?}"),
    };
    assert_eq!(decoded, event, "{name}");
    let verifier = log_key().verifier_key();
    decoded
        .verify(&verifier)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(LogEntry::decode(&text).unwrap().encode().unwrap(), text);
    flipped_signatures_fail(name, &String::from_utf8(text).unwrap());
}

#[test]
fn register_vector() {
    check_vector("entry-v2-key-register");
}

#[test]
fn rotate_vector() {
    check_vector("entry-v2-key-rotate");
}

#[test]
fn revoke_by_key_vector() {
    check_vector("entry-v2-key-revoke");
}

#[test]
fn revoke_by_operator_vector() {
    check_vector("entry-v2-key-revoke-operator");
}

#[test]
fn the_vectors_replay_into_the_specs_registry() {
    let identity = "cache.example.org-1";
    let valid = KeyStatus::Valid {
        identity: identity.into(),
    };
    let (k1, k2) = (key1().public_key(), key2().public_key());
    // Our events, which the vector tests check are the vectors byte for byte.
    let events: Vec<KeyEvent> = events().into_iter().map(|(_, e)| e).collect();
    let mut registry = KeyRegistry::new(log_key().verifier_key());

    // Registered at 0, rotated at 5: key 1 signs from 0 to 4, key 2 from 5 on, one builder.
    registry.apply(0, &events[0]).unwrap();
    registry.apply(5, &events[1]).unwrap();
    assert_eq!(registry.status(&k1, 0), valid);
    assert_eq!(registry.status(&k1, 4), valid);
    assert!(matches!(
        registry.status(&k1, 5),
        KeyStatus::Retired { at: 5, ref successor } if successor == "cache.example.org-2"
    ));
    assert_eq!(registry.status(&k2, 4), KeyStatus::NotRegistered);
    assert_eq!(registry.status(&k2, 6), valid);
    assert_eq!(registry.status(&k2, 6).identity(), Some(identity));

    // Key 2 revokes itself at 8 as of 7: what it signed at 5 and 6 keeps its value.
    registry.apply(8, &events[2]).unwrap();
    assert_eq!(registry.status(&k2, 6), valid);
    assert!(matches!(
        registry.status(&k2, 7),
        KeyStatus::Revoked { from: 7, .. }
    ));
    assert!(matches!(
        registry.status(&k2, 8),
        KeyStatus::Revoked { from: 7, .. }
    ));
    assert_eq!(registry.status(&k1, 4), valid);

    // The operator revokes key 1 at 9 as of 3: key 1 is void from 3, and the rotation at
    // 5 ≥ 3 is void too, so key 2 is void from its registration at 5 (earlier than its own
    // revocation's 7).
    registry.apply(9, &events[3]).unwrap();
    assert_eq!(registry.status(&k1, 2), valid);
    assert!(matches!(
        registry.status(&k1, 3),
        KeyStatus::Revoked { from: 3, .. }
    ));
    assert!(matches!(
        registry.status(&k1, 4),
        KeyStatus::Revoked { from: 3, .. }
    ));
    assert_eq!(registry.status(&k2, 4), KeyStatus::NotRegistered);
    assert!(matches!(
        registry.status(&k2, 5),
        KeyStatus::Revoked { from: 5, .. }
    ));
    assert!(matches!(
        registry.status(&k2, 6),
        KeyStatus::Revoked { from: 5, .. }
    ));
    assert!(registry.active_keys().is_empty());
}

/// Flipping any one bit of any signature of the vector `text` makes decode or verify fail.
fn flipped_signatures_fail(name: &str, text: &str) {
    let verifier = log_key().verifier_key();
    let rejected = |bytes: &[u8]| match decode_key_event(bytes) {
        None => true,
        Some(event) => event.verify(&verifier).is_err(),
    };
    assert!(!rejected(text.as_bytes()), "{name}");
    let lines: Vec<&str> = text.lines().collect();
    let mut checked = 0;
    for (n, line) in lines.iter().enumerate() {
        let Some((field @ ("signature" | "new-signature"), b64)) = line.split_once(' ') else {
            continue;
        };
        let raw = B64.decode(b64).unwrap();
        for i in 0..raw.len() * 8 {
            let mut bad = raw.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let line = format!("{field} {}", B64.encode(&bad));
            let mut forged = lines.clone();
            forged[n] = &line;
            let forged = forged.join("\n") + "\n";
            assert!(
                rejected(forged.as_bytes()),
                "{name}: {field} with bit {i} flipped was accepted"
            );
        }
        checked += 1;
    }
    let expected = if name.ends_with("rotate") { 2 } else { 1 };
    assert_eq!(checked, expected, "{name}: signature lines");
}
