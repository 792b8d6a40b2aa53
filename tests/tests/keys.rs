//! Key lifecycle with real Nix keys (`nix key generate-secret`, `nix copy`, `nix store sign`):
//! the Spectrum story of a rotation and re-signing, and a stolen key revoked as of an index.

use std::path::Path;
use std::process::Output;

use reprolog_tests::{
    build_pair, narinfo_path, nix, nix_key, post, reprolog, run_ok, show, Server,
};
use serde_json::Value;

fn ok(out: Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    show(&out)
}

/// `nix copy` of `paths` into the `file://` cache `cache`, signed with `key_file`.
fn copy_signed(cache: &Path, key_file: &str, paths: &[&str]) {
    run_ok({
        let mut c = nix(&["copy", "--to"]);
        c.arg(format!(
            "file://{}?compression=none&secret-key={key_file}",
            cache.display()
        ))
        .args(paths);
        c
    });
}

fn ingest(server: &Server, cache: &Path) -> String {
    let url = format!("file://{}", cache.display());
    show(&reprolog(&["ingest", "--log", &server.url, &url]))
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(out)))
}

/// The index at which `key_name` signed `path`, from the log's path lookup.
fn index_of(server: &Server, path: &str, key_name: &str) -> u64 {
    let hash = &path.rsplit('/').next().unwrap()[..32];
    let (status, page) = reprolog_tests::get_json(&format!("{}/api/v1/paths/{hash}", server.url));
    assert_eq!(status, 200, "{page}");
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["builder"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{key_name}:"))
        })
        .and_then(|e| e["index"].as_u64())
        .unwrap_or_else(|| panic!("no signature by {key_name} of {path}: {page}"))
}

#[test]
fn rotation_resigning_and_a_stolen_key_revoked_as_of_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (k1, p1) = nix_key(d, "spectrum-os.org-1");
    let (k2, p2) = nix_key(d, "spectrum-os.org-2");
    let (k3, p3) = nix_key(d, "other.example-1");
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    reprolog_tests::write_builders(&data, &[p1.clone(), p3.clone()]);
    let server = Server::start(&data, &["--checkpoint-interval-ms", "50"]);
    let policy = d.join("policy");
    reprolog_tests::policy_without_witnesses(&policy, &server.verifier_key(), &server.url);
    let policy = policy.to_str().unwrap();

    // Key 1 signs three real paths, and they are ingested.
    let (dep_a, top_a) = build_pair(d, "keys-a");
    let (dep_b, _) = build_pair(d, "keys-b");
    let three = [dep_a.as_str(), top_a.as_str(), dep_b.as_str()];
    let cache = d.join("cache");
    copy_signed(&cache, &k1, &[&top_a, &dep_b]);
    let first = ingest(&server, &cache);
    assert!(first.contains("logged 3,"), "{first}");

    // Key 1 rotates to key 2; key 2 re-signs all three on the cache, and they are ingested.
    let rotated = ok(reprolog(&[
        "keys", "rotate", "--policy", policy, "--old", &k1, "--new", &k2,
    ]));
    assert!(rotated.contains("builder spectrum-os.org-1"), "{rotated}");
    run_ok({
        let mut c = nix(&["store", "sign", "--store"]);
        c.arg(format!("file://{}", cache.display()))
            .args(["--key-file", &k2])
            .args(three);
        c
    });
    let second = ingest(&server, &cache);
    assert!(second.contains("logged 3, duplicate 3"), "{second}");
    // Plain Nix verifies the re-signed paths with the new key alone.
    for path in three {
        run_ok({
            let mut c = nix(&["store", "verify", "--no-contents", "--store"]);
            c.arg(format!("file://{}", cache.display()))
                .args(["--trusted-public-keys", &p2, path]);
            c
        });
    }
    // One builder for each path, not two: the new key's signature is a re-signature.
    let out = reprolog(&[
        "compare", "--policy", policy, "--json", &dep_a, &top_a, &dep_b,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = json(&out);
    for p in report["paths"].as_array().unwrap() {
        assert_eq!(p["verdict"], "one-builder", "{p}");
        let claims = p["claims"].as_array().unwrap();
        assert_eq!(claims.len(), 2, "{p}");
        assert!(
            claims.iter().all(|c| c["builder"] == "spectrum-os.org-1"),
            "{p}"
        );
        assert!(
            claims.iter().any(|c| c["key"] == "spectrum-os.org-2"),
            "{p}"
        );
    }
    // The retired key signs no more.
    let (dep_c, top_c) = build_pair(d, "keys-c");
    let retired_cache = d.join("retired");
    copy_signed(&retired_cache, &k1, &[&dep_c]);
    let refused = ingest(&server, &retired_cache);
    assert!(refused.contains("retired at index"), "{refused}");

    // Key 3 signs a good path, is stolen, and the thief signs another.
    let stolen_cache = d.join("stolen");
    copy_signed(&stolen_cache, &k3, &[&dep_c]);
    ingest(&server, &stolen_cache);
    let good = index_of(&server, &dep_c, "other.example-1");
    copy_signed(&stolen_cache, &k3, &[&top_c]);
    ingest(&server, &stolen_cache);
    let stolen = index_of(&server, &top_c, "other.example-1");
    assert!(stolen > good);
    let revoked = ok(reprolog(&[
        "keys",
        "revoke",
        "--policy",
        policy,
        "--key-file",
        &k3,
        "--as-of",
        &stolen.to_string(),
    ]));
    assert!(
        revoked.contains(&format!("as of index {stolen}")),
        "{revoked}"
    );
    // verify accepts the earlier signature and refuses the later one.
    let good_narinfo = narinfo_path(&stolen_cache, &dep_c);
    let stolen_narinfo = narinfo_path(&stolen_cache, &top_c);
    let out = reprolog(&["verify", "--policy", policy, good_narinfo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = reprolog(&[
        "verify",
        "--policy",
        policy,
        stolen_narinfo.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("does not count"), "{}", show(&out));
    // And the server refuses new signatures by key 3, with a 422 and the reason.
    copy_signed(&stolen_cache, &k3, &[&dep_b]);
    let text = std::fs::read_to_string(narinfo_path(&stolen_cache, &dep_b)).unwrap();
    let (status, answer) = post(
        &format!("{}/api/v1/narinfo", server.url),
        "text/x-nix-narinfo",
        text.as_bytes(),
    );
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.to_string().contains("revoked as of index"),
        "{answer}"
    );

    // The monitor recomputes the same registry from the tiles as the log serves.
    let state = d.join("monitor.state");
    let out = reprolog(&[
        "monitor",
        "--policy",
        policy,
        "--once",
        "--json",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let monitored = json(&out);
    let (_, builders) = reprolog_tests::get_json(&format!("{}/api/v1/builders", server.url));
    let mut served: Vec<(String, String)> = builders["builders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["key"].as_str().unwrap().into(),
                b["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut recomputed: Vec<(String, String)> = monitored["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().into(),
                k["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    served.sort();
    recomputed.sort();
    assert_eq!(recomputed, served);
    assert_eq!(recomputed.len(), 3);
    // The history names every change, with its index.
    let history = ok(reprolog(&["keys", "history", "--policy", policy]));
    for line in ["key-register", "key-rotate", "key-revoke"] {
        assert!(history.contains(line), "{history}");
    }
}

/// With a witness, every key event is dated by the cosignature of the first checkpoint that
/// covers it, and a revocation can name a time: what may have been logged at or after it is
/// void, what a witness saw before it stays.
#[test]
fn key_history_is_dated_by_cosigned_checkpoints_and_revocations_can_name_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (k1, p1) = nix_key(d, "timed-1");
    let log = reprolog_tests::WitnessedLog::start(d, "example.com/keys", std::slice::from_ref(&p1));
    let (server, policy) = (&log.server, &log.policy);
    let policy = policy.to_str().unwrap();

    // Two signatures, a second apart, each cosigned before the next.
    let (dep, top) = build_pair(d, "keys-timed");
    let cache = d.join("cache");
    copy_signed(&cache, &k1, &[&dep]);
    ingest(server, &cache);
    let first = index_of(server, &dep, "timed-1");
    server.wait_for_checkpoint(first + 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    copy_signed(&cache, &k1, &[&top]);
    ingest(server, &cache);
    let second = index_of(server, &top, "timed-1");
    server.wait_for_checkpoint(second + 1);

    let history = json(&reprolog(&[
        "keys", "history", "--policy", policy, "--json",
    ]));
    let registered = &history["events"][0];
    assert_eq!(registered["kind"], "key-register", "{history}");
    let logged_by = registered["logged_by"]
        .as_str()
        .unwrap_or_else(|| panic!("{history}"));
    assert!(
        logged_by.ends_with('Z') && logged_by.len() == 20,
        "{logged_by}"
    );

    // Revoked as of a time between the two: the first signature keeps its value.
    let time = reprolog_verifier::dating::rfc3339(between);
    let out = ok(reprolog(&[
        "keys",
        "revoke",
        "--policy",
        policy,
        "--key-file",
        &k1,
        "--as-of-time",
        &time,
    ]));
    assert!(
        out.contains(&format!("as of index {}", first + 1)),
        "{out}\nfirst {first}, second {second}"
    );
    let verify = |path: &str| {
        let narinfo = narinfo_path(&cache, path);
        reprolog(&["verify", "--policy", policy, narinfo.to_str().unwrap()])
            .status
            .code()
    };
    assert_eq!(verify(&dep), Some(0));
    assert_eq!(verify(&top), Some(1));
}

/// A registry entry not signed as required makes `monitor` fail and say which and why:
/// a registration signed by another key than the log's, and a rotation whose new key did
/// not sign.
#[test]
fn a_forged_key_event_makes_the_monitor_fail_and_say_why() {
    use reprolog_verifier::key_event::KeyEvent;
    use reprolog_verifier::nix::NixSecretKey;
    use reprolog_verifier::note::SignerKey;
    let log_key = SignerKey::from_seed("example.com/lying", [5; 32]).unwrap();
    let impostor = SignerKey::from_seed("example.com/lying", [6; 32]).unwrap();
    let (one, two, thief) = (
        NixSecretKey::from_seed("b-1", [1; 32]),
        NixSecretKey::from_seed("b-2", [2; 32]),
        NixSecretKey::from_seed("b-2", [3; 32]),
    );
    let register = KeyEvent::register(one.public_key(), 0, &log_key).encode();
    let forged_register = KeyEvent::register(two.public_key(), 1, &impostor).encode();
    let mut half_rotation = KeyEvent::rotate(log_key.name(), &one, &two);
    half_rotation.new_signature = Some(thief.sign_bytes(&half_rotation.signed_message()));
    let dir = tempfile::tempdir().unwrap();
    for (entries, why) in [
        (
            vec![register.clone(), forged_register],
            "INVALID KEY EVENT at index 1: the operator's signature does not verify",
        ),
        (
            vec![register.clone(), half_rotation.encode()],
            "INVALID KEY EVENT at index 1: the new key's signature does not verify",
        ),
    ] {
        let url = reprolog_tests::lying_log(log_key.clone(), entries);
        let policy = dir.path().join("policy");
        reprolog_tests::policy_without_witnesses(&policy, &log_key.verifier_key(), &url);
        let state = dir.path().join(format!("{}.state", why.len()));
        let out = reprolog(&[
            "monitor",
            "--policy",
            policy.to_str().unwrap(),
            "--once",
            "--state",
            state.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(show(&out).contains(why), "{}", show(&out));
    }
}
