//! The explorer over a real log: two builders sign real `nix-build` outputs, one of which
//! diverges, both caches are ingested into a log with a witness, and `reprolog-explorer`
//! follows it. Every endpoint answers as the ground truth says; a killed explorer resumes
//! with the same index; a forked checkpoint signed with the log's real key stops following.

use std::time::{Duration, Instant};

use reprolog_tests::explored::{hash_of, Explorer, TwoBuilders};
use reprolog_tests::{get_json, write_builders, Server};
use serde_json::Value;

#[test]
fn the_explorer_indexes_a_real_log_as_the_ground_truth_says_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}",
        dir.path().join("index").join("explorer.db").display()
    );
    scenario(&dir, &db);
}

#[test]
fn the_explorer_indexes_a_real_log_as_the_ground_truth_says_in_postgresql() {
    let pg = reprolog_tests::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    scenario(&dir, &pg.database("explorer"));
}

fn scenario(dir: &tempfile::TempDir, db: &str) {
    let d = dir.path();
    let fixture = TwoBuilders::start(d, "explorer");
    let (same, stamp, tag) = (&fixture.same, &fixture.stamp, &fixture.tag);
    let log = &fixture.log;
    let (policy, log_dir, log_vkey) = (&log.policy, &log.data, &log.log_vkey);
    let size = TwoBuilders::SIZE;

    let e = Explorer::start(d, policy, db);
    let status = e.wait_verified(size);
    let log = &status["logs"][0];
    assert_eq!(log["origin"], "example.com/explored", "{status}");
    assert_eq!(log["state"], "following", "{status}");
    assert_eq!(log["cosigned_by"], serde_json::json!(["w"]), "{status}");
    // Two paths, each claimed by both builders: one agreed on, one not.
    assert_eq!(
        status["totals"],
        serde_json::json!({"entries": 4, "paths": 2, "builders": 2, "one_builder": 0,
            "reproduced": 1, "unreproduced": 1}),
        "{status}"
    );

    // A path's claims and verdict.
    let (code, answer) = get_json(&format!("{}/api/v1/paths/{}", e.url, hash_of(same)));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["verdict"], "reproduced", "{answer}");
    let claims = answer["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 2, "{answer}");
    let builders: Vec<&str> = claims
        .iter()
        .map(|c| c["builder"].as_str().unwrap())
        .collect();
    assert_eq!(builders, ["explorer-b1", "explorer-b2"], "{answer}");
    for c in claims {
        assert_eq!(c["log"], "example.com/explored");
        assert!(
            c["logged_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{answer}"
        );
        assert!(c["nar_hash"].as_str().unwrap().starts_with("sha256:"));
    }
    let (_, answer) = get_json(&format!("{}/api/v1/paths/{}", e.url, hash_of(stamp)));
    assert_eq!(answer["verdict"], "unreproduced", "{answer}");

    // Search by name and by hash prefix.
    let (_, found) = get_json(&format!("{}/api/v1/search?q=stamp-{tag}", e.url));
    assert_eq!(found["paths"][0]["store_path"], stamp.as_str(), "{found}");
    assert_eq!(found["paths"].as_array().unwrap().len(), 1, "{found}");
    let (_, found) = get_json(&format!(
        "{}/api/v1/search?q={}",
        e.url,
        &hash_of(same)[..6]
    ));
    assert!(
        found["paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["store_path"] == same.as_str()),
        "{found}"
    );

    // Builders, as identities.
    let (_, builders) = get_json(&format!("{}/api/v1/builders", e.url));
    let list = builders["builders"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{builders}");
    for b in list {
        assert_eq!(
            (b["entries"].as_u64(), b["paths"].as_u64()),
            (Some(2), Some(2)),
            "{builders}"
        );
    }

    // A report over the closure: exactly the diverging path is unreproduced.
    let closure = format!("{same}\n{stamp}\n");
    let (code, report) = reprolog_tests::post(
        &format!("{}/api/v1/report", e.url),
        "text/plain",
        closure.as_bytes(),
    );
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["summary"]["unreproduced"], 1, "{report}");
    assert_eq!(report["summary"]["reproduced"], 1, "{report}");

    // How often the two agree, where they disagree, and over time.
    let (_, agreement) = get_json(&format!("{}/api/v1/agreement", e.url));
    assert_eq!(
        agreement["pairs"],
        serde_json::json!([{"a": "explorer-b1", "b": "explorer-b2", "common": 2, "agree": 1,
                            "disagree": 1}]),
        "{agreement}"
    );
    for query in ["", "?builder=explorer-b1", "?since=2020-01-01T00:00:00Z"] {
        let (_, d) = get_json(&format!("{}/api/v1/disagreements{query}", e.url));
        let paths = d["paths"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: {d}"));
        assert_eq!(paths.len(), 1, "{query}: {d}");
        assert_eq!(paths[0]["store_path"], stamp.as_str(), "{d}");
        assert_eq!(paths[0]["nar_hashes"].as_array().unwrap().len(), 2, "{d}");
    }
    let (_, none) = get_json(&format!(
        "{}/api/v1/disagreements?until=2020-01-01T00:00:00Z",
        e.url
    ));
    assert_eq!(none["paths"], serde_json::json!([]), "{none}");
    let (_, series) = get_json(&format!("{}/api/v1/timeseries?bucket=hour", e.url));
    let total = |field: &str| -> u64 {
        series["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (
            total("entries"),
            total("compared"),
            total("reproduced"),
            total("unreproduced")
        ),
        (4, 2, 1, 1),
        "{series}"
    );
    let (code, lines) =
        reprolog_tests::get(&format!("{}/api/v1/export?builder=explorer-b2", e.url));
    assert_eq!(code, 200);
    let exported: Vec<Value> = String::from_utf8(lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 2, "{exported:?}");
    assert!(exported.iter().all(|c| c["builder"] == "explorer-b2"));
    let mut exported_paths: Vec<&str> = exported
        .iter()
        .map(|c| c["store_path"].as_str().unwrap())
        .collect();
    exported_paths.sort();
    let mut built = vec![same.as_str(), stamp.as_str()];
    built.sort();
    assert_eq!(exported_paths, built);

    // Bad input: a clear 400 or 413, and the index unchanged.
    for bad in [
        "/api/v1/paths/short",
        "/api/v1/search?q=",
        "/api/v1/search?q=a&limit=0",
        "/api/v1/timeseries?bucket=week",
        "/api/v1/disagreements?since=yesterday",
        "/api/v1/disagreements?after=x",
    ] {
        let (code, answer) = get_json(&format!("{}{bad}", e.url));
        assert_eq!(code, 400, "{bad}: {answer}");
        assert!(answer["error"].as_str().is_some(), "{answer}");
    }
    let too_many = format!("{same}\n").repeat(100_001);
    let (code, _) = reprolog_tests::post(
        &format!("{}/api/v1/report", e.url),
        "text/plain",
        too_many.as_bytes(),
    );
    assert_eq!(code, 413);

    // Killed and restarted: the same index, nothing twice; then it follows new entries.
    drop(e);
    let e = Explorer::start(d, policy, db);
    e.wait_verified(size);
    let (_, again) = get_json(&format!("{}/api/v1/builders", e.url));
    assert_eq!(again, builders);

    // A forked checkpoint signed with the log's real key, of the size verified: following
    // stops, and says why; the index stays.
    drop(e);
    let key = std::fs::read_to_string(log_dir.join("log.key")).unwrap();
    let fork_url = forked_log(&key, size);
    let quorum_none = d.join("policy-fork");
    reprolog_tests::policy_without_witnesses(&quorum_none, log_vkey, &fork_url);
    let e = Explorer::start(d, &quorum_none, db);
    let status = e.wait_stopped();
    assert!(
        status["logs"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("FORK"),
        "{status}"
    );
    // The dashboard's overview marks it stopped, with the reason.
    let (_, page) = reprolog_tests::get(&format!("{}/", e.url));
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("<tr class=\"stopped\">") && page.contains("FORK: a checkpoint"),
        "{page}"
    );
    let (_, metrics) = reprolog_tests::get(&format!("{}/metrics", e.url));
    assert!(
        String::from_utf8_lossy(&metrics)
            .contains("reprolog_explorer_log_stopped{log=\"example.com/explored\"} 1"),
        "{}",
        String::from_utf8_lossy(&metrics)
    );
    let (_, after) = get_json(&format!("{}/api/v1/builders", e.url));
    assert_eq!(after, builders, "the index stays as it was");
}

/// Serves, at `/checkpoint`, a checkpoint of `size` entries with another root, signed with
/// the log's own key: a fork.
fn forked_log(key: &str, size: u64) -> String {
    use reprolog_verifier::checkpoint::Checkpoint;
    use reprolog_verifier::note::{Note, SignerKey};
    let key = SignerKey::parse(key.trim()).unwrap();
    let mut note = Note::new(&Checkpoint::new(key.name(), size, [7; 32]).to_text()).unwrap();
    note.sign(&key);
    let body = note.encode().into_bytes();
    reprolog_tests::serve_http(move |_| (200, body.clone()))
}

/// Two explorers share one PostgreSQL database: exactly one follows the log; when it is
/// killed, the other takes over, and every entry is indexed once, none skipped.
#[test]
fn a_second_explorer_takes_over_a_shared_postgresql_index() {
    use reprolog_tests::{submit, synthetic_narinfo};
    use reprolog_verifier::nix::NixSecretKey;
    let pg = reprolog_tests::Postgres::start();
    let db = pg.database("shared");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = NixSecretKey::generate("shared-b1");
    let log_dir = d.join("log");
    write_builders(&log_dir, &[key.public_key().to_string()]);
    let server = Server::start(&log_dir, &["--checkpoint-interval-ms", "50"]);
    let policy = d.join("policy");
    reprolog_tests::policy_without_witnesses(&policy, &server.verifier_key(), &server.url);
    let ingest = |from: u64, to: u64| {
        let body: Vec<String> = (from..to)
            .map(|i| synthetic_narinfo(&key, "shared", i, 0))
            .collect();
        let (code, answer) = submit(&server, &body.join("\n"));
        assert_eq!(code, 200, "{answer}");
    };
    ingest(0, 300);
    server.wait_for_checkpoint(301);
    let a = Explorer::start_logging_to(d, "a.log", &policy, &db);
    let b = Explorer::start_logging_to(d, "b.log", &policy, &db);
    a.wait_verified(301);
    // Exactly one of them follows.
    std::thread::sleep(Duration::from_millis(500));
    let follows = |log: &str| {
        std::fs::read_to_string(d.join(log))
            .unwrap_or_default()
            .contains(": following")
    };
    assert!(
        follows("a.log") != follows("b.log"),
        "one follower, not two"
    );
    let (follower, standby) = if follows("a.log") { (a, b) } else { (b, a) };
    drop(follower); // killed
    ingest(300, 700);
    server.wait_for_checkpoint(701);
    standby.wait_verified(701);
    let (_, builders) = get_json(&format!("{}/api/v1/builders", standby.url));
    assert_eq!(builders["builders"][0]["entries"], 700, "{builders}");
    assert_eq!(builders["builders"][0]["paths"], 700, "{builders}");
}

/// An explorer killed in the middle of following a long log resumes where its last commit
/// left it: in the end every entry is indexed exactly once.
#[test]
fn an_explorer_killed_while_following_resumes_without_gaps_or_repeats() {
    use reprolog_tests::{submit, synthetic_narinfo};
    use reprolog_verifier::nix::NixSecretKey;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = NixSecretKey::generate("killed-b1");
    let log_dir = d.join("log");
    write_builders(&log_dir, &[key.public_key().to_string()]);
    let server = Server::start(&log_dir, &["--checkpoint-interval-ms", "50"]);
    let policy = d.join("policy");
    reprolog_tests::policy_without_witnesses(&policy, &server.verifier_key(), &server.url);
    let total = 30_000;
    for from in (0..total).step_by(3000) {
        let body: Vec<String> = (from..from + 3000)
            .map(|i| synthetic_narinfo(&key, "killed", i, 0))
            .collect();
        let (code, answer) = submit(&server, &body.join("\n"));
        assert_eq!(code, 200, "{answer}");
    }
    let size = total + 1;
    server.wait_for_checkpoint(size);
    let db = format!("sqlite://{}", d.join("index.db").display());
    let mut caught = None;
    for _ in 0..5 {
        let e = Explorer::start(d, &policy, &db);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let (_, status) = get_json(&format!("{}/api/v1/status", e.url));
            let verified = status["logs"][0]["verified_size"].as_u64().unwrap_or(0);
            if verified > 0 && verified < size {
                caught = Some(verified);
                break;
            }
            if verified == size {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(e); // SIGKILL, in the middle of following if caught
        if caught.is_some() {
            break;
        }
        // Too quick to catch: start again from an empty index.
        for file in ["index.db", "index.db-wal", "index.db-shm"] {
            let _ = std::fs::remove_file(d.join(file));
        }
    }
    assert!(caught.is_some(), "never saw the explorer part-way through");
    let e = Explorer::start(d, &policy, &db);
    e.wait_verified(size);
    let (_, builders) = get_json(&format!("{}/api/v1/builders", e.url));
    assert_eq!(builders["builders"][0]["entries"], total, "{builders}");
    assert_eq!(builders["builders"][0]["paths"], total, "{builders}");
}

/// A log that serves a forged registry entry stops being followed, and says which and why;
/// nothing of the chunk that held it enters the index.
#[test]
fn a_log_serving_a_forged_key_event_stops_being_followed() {
    use reprolog_verifier::key_event::KeyEvent;
    use reprolog_verifier::nix::NixSecretKey;
    use reprolog_verifier::note::SignerKey;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log_key = SignerKey::from_seed("example.com/lying", [5; 32]).unwrap();
    let impostor = SignerKey::from_seed("example.com/lying", [6; 32]).unwrap();
    let one = NixSecretKey::from_seed("b-1", [1; 32]);
    let entries = vec![
        KeyEvent::register(one.public_key(), 0, &log_key).encode(),
        KeyEvent::register(
            NixSecretKey::from_seed("b-2", [2; 32]).public_key(),
            1,
            &impostor,
        )
        .encode(),
    ];
    let url = reprolog_tests::lying_log(log_key.clone(), entries);
    let policy = d.join("policy");
    reprolog_tests::policy_without_witnesses(&policy, &log_key.verifier_key(), &url);
    let db = format!("sqlite://{}", d.join("index.db").display());
    let e = Explorer::start(d, &policy, &db);
    let status = e.wait_stopped();
    let log = &status["logs"][0];
    assert_eq!(
        log["reason"], "INVALID KEY EVENT at index 1: the operator's signature does not verify",
        "{status}"
    );
    assert_eq!(log["verified_size"], 0, "{status}");
}
