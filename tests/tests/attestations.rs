//! Build attestations over real HTTP: `POST /api/v1/attestations` takes DSSE envelopes signed
//! with a registered builder's Nix key, logs `build` entries, and refuses what is not that.

use reprolog_tests::{get_json, post, post_raw, write_builders, Server};
use reprolog_verifier::attestation::BuildFacts;
use reprolog_verifier::dsse::Envelope;
use reprolog_verifier::entry::{Entry, EntryKind};
use reprolog_verifier::nix::narinfo::NixHash;
use reprolog_verifier::nix::{NixSecretKey, StorePath};

const DSSE: &str = "application/vnd.dsse.envelope.v1+json";

fn facts(i: u8) -> BuildFacts {
    BuildFacts {
        store_path: StorePath::parse(&format!(
            "/nix/store/{}-built-{i}",
            "a".repeat(31) + &i.to_string()
        ))
        .unwrap(),
        nar_hash: NixHash([i; 32]),
        nar_size: 100 + u64::from(i),
        references: Default::default(),
        derivation: StorePath::parse(&format!("/nix/store/{}-built-{i}.drv", "c".repeat(32)))
            .unwrap(),
        output: "out".into(),
        system: "x86_64-linux".into(),
        nix_version: "2.8.0".into(),
        started: 1_796_284_800,
        finished: 1_796_284_801,
    }
}

fn submit(server: &Server, body: &str) -> (u16, serde_json::Value) {
    post(
        &format!("{}/api/v1/attestations", server.url),
        DSSE,
        body.as_bytes(),
    )
}

#[test]
fn attestations_are_logged_as_build_entries_once() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    write_builders(dir.path(), &[builder.public_key().to_string()]);
    let server = Server::start(dir.path(), &["--checkpoint-interval-ms", "50"]);
    let base = key_events_at_start(&server, 1);

    let one = facts(1).sign(&builder);
    let (status, a) = submit(&server, &serde_json::to_string(&one).unwrap());
    assert_eq!(status, 200, "{a}");
    let result = &a["attestations"][0];
    assert_eq!(
        result["store_path"],
        facts(1).store_path.to_string().as_str()
    );
    assert_eq!(result["signatures"][0]["status"], "logged");
    let index = result["signatures"][0]["index"].as_u64().unwrap();
    assert_eq!(index, base, "the first entry after the key events");

    // Again, and in an array with a new one: the first is a duplicate of its first index.
    let two = facts(2).sign(&builder);
    let body = serde_json::to_string(&vec![one.clone(), two]).unwrap();
    let (status, a) = submit(&server, &body);
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["attestations"][0]["signatures"][0]["status"], "duplicate");
    assert_eq!(a["attestations"][0]["signatures"][0]["index"], index);
    assert_eq!(a["attestations"][1]["signatures"][0]["status"], "logged");
    assert_eq!(a["attestations"][1]["signatures"][0]["index"], base + 1);
    server.wait_for_checkpoint(base + 2);

    // The log shows it as a build entry, in path lookups too, and it verifies from its bytes.
    let (status, e) = get_json(&format!("{}/api/v1/entries/{index}", server.url));
    assert_eq!(status, 200);
    assert_eq!(e["kind"], "build");
    let entry = Entry::decode(e["entry"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(entry.kind, EntryKind::Build);
    entry.verify_signature().unwrap();
    let hash_part = facts(1).store_path.hash_part().to_owned();
    let (_, page) = get_json(&format!("{}/api/v1/paths/{hash_part}", server.url));
    assert_eq!(page["events"][0]["kind"], "build");
}

#[test]
fn what_is_not_a_registered_builders_attestation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    write_builders(dir.path(), &[builder.public_key().to_string()]);
    let server = Server::start(dir.path(), &[]);
    let base = key_events_at_start(&server, 1);
    let url = format!("{}/api/v1/attestations", server.url);
    let good = serde_json::to_string(&facts(3).sign(&builder)).unwrap();

    assert_eq!(post_raw(&url, "text/plain", good.as_bytes()).0, 415);
    for body in [
        "",
        "{",
        "[]",
        r#"{"payload":"!","payloadType":"x","signatures":[]}"#,
    ] {
        assert_eq!(submit(&server, body).0, 400, "{body:?}");
    }
    // A statement that is not in its canonical form.
    let mut pretty = facts(3).sign(&builder);
    let statement: serde_json::Value =
        serde_json::from_slice(&base64_decode(&pretty.payload)).unwrap();
    let reformatted = serde_json::to_vec_pretty(&statement).unwrap();
    pretty = Envelope::sign(&pretty.payload_type, &reformatted, &builder);
    let (status, a) = submit(&server, &serde_json::to_string(&pretty).unwrap());
    assert_eq!(status, 400, "{a}");
    assert!(a["error"].as_str().unwrap().contains("canonical"), "{a}");
    // An unregistered key, and a registered name with another key: nothing to log.
    let stranger = NixSecretKey::from_seed("stranger", [9; 32]);
    let impostor = NixSecretKey::from_seed("builder-1", [9; 32]);
    for key in [&stranger, &impostor] {
        let body = serde_json::to_string(&facts(4).sign(key)).unwrap();
        let (status, a) = submit(&server, &body);
        assert_eq!(status, 422, "{a}");
    }
    // Nothing was logged: the log holds only its key events.
    assert_eq!(server.metric("reprolog_tree_size"), Some(base as f64));
}

/// The log's size once the server has started: one `key-register` event per key of its
/// builders file, logged before any submission is taken (spec/entry.md, "Key events").
fn key_events_at_start(server: &Server, builders: u64) -> u64 {
    let size = server.metric("reprolog_tree_size").unwrap() as u64;
    assert_eq!(size, builders, "one key event per key of the builders file");
    size
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
