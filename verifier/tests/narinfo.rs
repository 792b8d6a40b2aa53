//! Real narinfos from cache.lix.systems, Nix's parsing rules, and the log entry vector.

mod common;

use common::lix_narinfos;
use reprolog_verifier::entry::{Entry, EntryError};
use reprolog_verifier::merkle;
use reprolog_verifier::nix::narinfo::NixHash;
use reprolog_verifier::nix::{NarInfo, NixPublicKey, NixSecretKey, NixSignature, SignatureStatus};

fn lix_key() -> NixPublicKey {
    NixPublicKey::parse(&lix_narinfos().1).unwrap()
}

#[test]
fn lix_narinfos_verify_and_round_trip() {
    let key = lix_key();
    let (files, _) = lix_narinfos();
    for (name, text) in &files {
        let info = NarInfo::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.to_text(), *text, "{name} does not round-trip");
        assert_eq!(format!("{}.narinfo", info.store_path.hash_part()), *name);
        let statuses = info.check_signatures(std::slice::from_ref(&key));
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].1, SignatureStatus::Valid(key.clone()), "{name}");
    }
    let untrusted = NixSecretKey::from_seed("cache.lix.systems", [1; 32]).public_key();
    let (_, text) = &files[0];
    let info = NarInfo::parse(text).unwrap();
    assert_eq!(
        info.check_signatures(&[untrusted])[0].1,
        SignatureStatus::Invalid
    );
    let other = NixSecretKey::from_seed("other", [1; 32]).public_key();
    assert_eq!(
        info.check_signatures(&[other])[0].1,
        SignatureStatus::Untrusted
    );
}

#[test]
fn the_lix_set_covers_the_quirks() {
    let (files, _) = lix_narinfos();
    let infos: Vec<NarInfo> = files
        .iter()
        .map(|(_, t)| NarInfo::parse(t).unwrap())
        .collect();
    assert!(infos.iter().any(|i| i.ca.is_some()));
    assert!(infos.iter().any(|i| i.deriver.is_some()));
    assert!(infos.iter().any(|i| i.references.is_empty()));
    assert!(files.iter().any(|(_, t)| t.contains("References: \n")));
    assert!(infos
        .iter()
        .any(|i| i.store_path.as_str().ends_with(".drv")));
}

/// Changes one byte of a signed field to another plausible byte.
fn mutate(b: u8) -> u8 {
    match b {
        b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => b + 1,
        b'9' => b'0',
        b'z' => b'a',
        b'Z' => b'A',
        b'-' => b'_',
        b'/' => b'.',
        _ => b'x',
    }
}

#[test]
fn a_one_byte_change_to_any_signed_field_fails() {
    let key = lix_key();
    let (files, _) = lix_narinfos();
    let mut tried = 0;
    for (name, text) in &files {
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let signed = ["StorePath: ", "NarHash: ", "NarSize: ", "References: "]
                .iter()
                .find(|k| line.starts_with(**k));
            if let Some(k) = signed {
                for i in offset + k.len()..offset + line.len() - 1 {
                    let mut bytes = text.clone().into_bytes();
                    bytes[i] = mutate(bytes[i]);
                    let changed = String::from_utf8(bytes).unwrap();
                    tried += 1;
                    if let Ok(info) = NarInfo::parse(&changed) {
                        let status = &info.check_signatures(std::slice::from_ref(&key))[0].1;
                        assert_ne!(
                            *status,
                            SignatureStatus::Valid(key.clone()),
                            "{name}: byte {i} changed and still verifies"
                        );
                    }
                }
            }
            offset += line.len();
        }
    }
    assert!(tried > 1000, "only {tried} mutations");
}

#[test]
fn nar_hash_encodings_are_equivalent() {
    let nix32 = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
    let want = NixHash::parse(nix32).unwrap();
    let hex = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let b64 = "sha256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
    let sri = "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
    for s in [hex, b64, sri] {
        assert_eq!(NixHash::parse(s).unwrap(), want, "{s}");
    }
    for bad in [
        "md5:abc",
        "sha256:xyz",
        "ungWv48Bz",
        "sha512-AAAA",
        "sha256:",
    ] {
        assert!(NixHash::parse(bad).is_err(), "{bad}");
    }
}

const MINIMAL: &str = "StorePath: /nix/store/1b8m03r63zqhnjf7l5wnldhh7c134ap5-hello\n\
URL: nar/x.nar\nNarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n\
NarSize: 5\n";

fn line_of(text: &str) -> usize {
    NarInfo::parse(text).unwrap_err().line
}

#[test]
fn nix_parsing_rules() {
    // A missing References line means no references; unknown keys are ignored.
    let info = NarInfo::parse(&format!("{MINIMAL}Frobnicate: yes\n")).unwrap();
    assert!(info.references.is_empty());
    // The final newline is required; CR is refused; each error names its line.
    assert_eq!(line_of(MINIMAL.trim_end()), 4);
    assert_eq!(
        line_of(&MINIMAL.replace("URL: nar/x.nar\n", "URL: nar/x.nar\r\n")),
        2
    );
    assert_eq!(line_of(&MINIMAL.replace("NarSize: 5", "NarSize: five")), 4);
    assert_eq!(line_of(&MINIMAL.replace("NarSize: 5", "NarSize: 0")), 4);
    assert_eq!(line_of(&MINIMAL.replace("NarSize: 5\n", "")), 3);
    assert_eq!(
        line_of(&MINIMAL.replace("StorePath: /nix/store/1", "StorePath: /nix/store/e")),
        1
    );
    assert_eq!(line_of(&format!("{MINIMAL}NarSize: 6\n")), 5);
    assert_eq!(line_of(&format!("{MINIMAL}References: bad\n")), 5);
    assert_eq!(line_of(&format!("{MINIMAL}no colon here\n")), 5);
    // References are a set: Nix sorts them for the fingerprint and when writing.
    let refs = format!(
        "{MINIMAL}References: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b 00000000000000000000000000000000-a\n"
    );
    let info = NarInfo::parse(&refs).unwrap();
    assert!(info.fingerprint().ends_with(
        ";/nix/store/00000000000000000000000000000000-a,/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b"
    ));
}

#[test]
fn fingerprint_of_a_lix_narinfo() {
    let (files, _) = lix_narinfos();
    let text = &files.iter().find(|(n, _)| n.starts_with("0018")).unwrap().1;
    let fp = NarInfo::parse(text).unwrap().fingerprint();
    assert!(fp.starts_with(
        "1;/nix/store/0018nm26ljlp20g9m22bj55ql9kz3klz-apple-framework-CoreFoundation-11.0.0.drv;\
         sha256:135jwl0vl96mx9294ylb1b6y8rlw4bnhyx8zn7pdmsp5md7p5wfm;3776;\
         /nix/store/5iqpm377dcnzaj0bjip0alh6shvjrfpc-cf-setup-hook.sh,"
    ));
}

#[test]
fn nix_keys_round_trip_and_sign() {
    let sk = NixSecretKey::from_seed("builder-1", [9; 32]);
    let parsed = NixSecretKey::parse(&sk.to_secret_string()).unwrap();
    let pk = parsed.public_key();
    assert_eq!(NixPublicKey::parse(&pk.to_string()).unwrap(), pk);
    let sig = parsed.sign("1;fingerprint");
    assert!(pk.verify(
        "1;fingerprint",
        &NixSignature::parse(&sig.to_string()).unwrap()
    ));
    assert!(!pk.verify("1;fingerprinT", &sig));
    assert!(NixPublicKey::parse("no-colon").is_err());
    assert!(NixPublicKey::parse("k:AAAA").is_err());
    // A secret key whose public half was changed is refused.
    let mut bad = base64_decode(sk.to_secret_string().split_once(':').unwrap().1);
    bad[40] ^= 1;
    let bad = format!("builder-1:{}", base64_encode(&bad));
    assert!(NixSecretKey::parse(&bad).is_err());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn spec_vector() -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    let entry = std::fs::read_to_string(dir.join("entry-v2.txt")).unwrap();
    let leaf = std::fs::read_to_string(dir.join("entry-v2.leaf-hash")).unwrap();
    (entry, leaf.trim().to_owned())
}

#[test]
fn entry_vector_from_spec() {
    let key = lix_key();
    let (files, _) = lix_narinfos();
    let text = &files.iter().find(|(n, _)| n.starts_with("0018")).unwrap().1;
    let info = NarInfo::parse(text).unwrap();
    let sig = NixSignature::parse(info.sigs.iter().next().unwrap()).unwrap();
    let entry = Entry::from_narinfo(&info, &key, &sig).unwrap();
    let bytes = entry.encode().unwrap();
    let (vector, leaf) = spec_vector();
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), vector);
    assert_eq!(hex::encode(merkle::leaf_hash(&bytes)), leaf);

    // Self-contained: the entry alone verifies, and decodes to the same event.
    let decoded = Entry::decode(vector.as_bytes()).unwrap();
    assert_eq!(decoded, entry);
    decoded.verify_signature().unwrap();
    assert_eq!(decoded.fingerprint(), info.fingerprint());
}

#[test]
fn entries_refuse_non_canonical_and_bad_bytes() {
    let (vector, _) = spec_vector();
    let unsorted = {
        let mut lines: Vec<&str> = vector.lines().collect();
        let first = lines
            .iter()
            .position(|l| l.starts_with("reference "))
            .unwrap();
        lines.swap(first, first + 1);
        lines.join("\n") + "\n"
    };
    assert_eq!(
        Entry::decode(unsorted.as_bytes()),
        Err(EntryError::NotCanonical)
    );
    let nix32_hash = vector.lines().find(|l| l.starts_with("nar-hash ")).unwrap();
    let hex_hash = format!(
        "nar-hash sha256:{}",
        hex::encode(NixHash::parse(&nix32_hash[9..]).unwrap().0)
    );
    let hexed = vector.replace(nix32_hash, &hex_hash);
    assert_eq!(
        Entry::decode(hexed.as_bytes()),
        Err(EntryError::NotCanonical)
    );
    assert!(matches!(
        Entry::decode(
            vector
                .replace("kind cache-signature", "kind telepathy")
                .as_bytes()
        ),
        Err(EntryError::Malformed { line: 2, .. })
    ));
    assert!(Entry::decode(vector.trim_end().as_bytes()).is_err());
    assert!(Entry::decode(format!("{vector}extra line\n").as_bytes()).is_err());
    // A missing field is named with the line it should have been on.
    let truncated: String = vector.lines().take(4).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        Entry::decode(truncated.as_bytes()),
        Err(EntryError::Malformed {
            line: 5,
            reason: "missing nar-size line".into()
        })
    );

    // A flipped byte in a signed field decodes but no longer verifies.
    let changed = vector.replace("nar-size 3776", "nar-size 3777");
    let entry = Entry::decode(changed.as_bytes()).unwrap();
    assert_eq!(entry.verify_signature(), Err(EntryError::BadSignature));
}

#[test]
fn entries_are_at_most_65535_bytes() {
    let sk = NixSecretKey::from_seed("b", [3; 32]);
    let refs: String = (0..1500)
        .map(|i| format!(" {:0>32}-ref{i}", i % 10))
        .collect();
    let info = NarInfo::parse(&format!("{MINIMAL}References:{refs}\n")).unwrap();
    let sig = sk.sign(&info.fingerprint());
    let entry = Entry::from_narinfo(&info, &sk.public_key(), &sig).unwrap();
    assert!(matches!(entry.encode(), Err(EntryError::TooLarge(n)) if n > 65535));
    let other = NixSecretKey::from_seed("c", [3; 32]).public_key();
    assert!(matches!(
        Entry::from_narinfo(&info, &other, &sig),
        Err(EntryError::KeyNameMismatch { .. })
    ));
}

#[test]
fn unsigned_narinfo_fields_never_change_the_entry() {
    let key = lix_key();
    let (files, _) = lix_narinfos();
    let text = &files.iter().find(|(n, _)| n.starts_with("0018")).unwrap().1;
    let info = NarInfo::parse(text).unwrap();
    let sig = NixSignature::parse(info.sigs.iter().next().unwrap()).unwrap();
    let first = Entry::from_narinfo(&info, &key, &sig)
        .unwrap()
        .encode()
        .unwrap();
    // Every field Nix's signature does not cover, changed one at a time.
    let deriver = "Deriver: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-other.drv\n";
    let variants = [
        text.replace("CA: text:", "CA: fixed:r:"),
        text.replace("CA: ", &format!("CA: {}", "x".repeat(64 << 10))),
        format!("{text}{deriver}"),
        format!("{text}System: evil-os\n"),
        text.replace("URL: ", "URL: elsewhere/"),
        text.replace("Compression: ", "Compression: x"),
        format!("{text}X-Unknown: anything\n"),
    ];
    for variant in &variants {
        assert_ne!(variant, text);
        let changed = NarInfo::parse(variant).unwrap();
        let again = Entry::from_narinfo(&changed, &key, &sig)
            .unwrap()
            .encode()
            .unwrap();
        assert_eq!(again, first, "{variant}");
    }
}

#[test]
fn version_1_entries_are_refused_with_the_reason() {
    let (vector, _) = spec_vector();
    let v1 = vector.replace("reprolog-entry/v2", "reprolog-entry/v1");
    let err = Entry::decode(v1.as_bytes()).unwrap_err().to_string();
    assert!(
        err.contains("version 1") && err.contains("unsigned"),
        "{err}"
    );
}
