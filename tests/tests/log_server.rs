//! The log server as a real process over loopback HTTP, checked with the verifier crate.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use reprolog_tests::{
    get, get_json, post, submit, synthetic_narinfo, testdata, write_builders, Server,
};
use reprolog_verifier::checkpoint::SignedCheckpoint;
use reprolog_verifier::entry::{Entry, LogEntry};
use reprolog_verifier::key_event::KeyAction;
use reprolog_verifier::merkle::{self, Hash};
use reprolog_verifier::nix::NixSecretKey;
use reprolog_verifier::proof::TlogProof;
use reprolog_verifier::tiles::{decode_bundle, TileKind, TilePath, TILE_WIDTH};
use serde_json::Value;

fn lix_key() -> String {
    std::fs::read_to_string(testdata().join("nix/lix/cache.lix.systems.pub"))
        .unwrap()
        .trim()
        .to_owned()
}

fn lix_narinfos() -> Vec<String> {
    let dir = testdata().join("nix/lix");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "narinfo"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn statuses(answer: &Value) -> Vec<(String, Option<u64>)> {
    answer["narinfos"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["signatures"].as_array().unwrap().clone())
        .map(|s| {
            (
                s["status"].as_str().unwrap().to_owned(),
                s["index"].as_u64(),
            )
        })
        .collect()
}

fn b64_hashes(v: &Value) -> Vec<Hash> {
    use base64::Engine;
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            base64::engine::general_purpose::STANDARD
                .decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

fn entry_bytes(server: &Server, index: u64) -> Vec<u8> {
    let (status, e) = get_json(&format!("{}/api/v1/entries/{index}", server.url));
    assert_eq!(status, 200, "entry {index}: {e}");
    e["entry"].as_str().unwrap().as_bytes().to_vec()
}

fn tree_size(server: &Server) -> u64 {
    let (_, body) = get(&format!("{}/metrics", server.url));
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("reprolog_tree_size "))
        .unwrap()
        .parse()
        .unwrap()
}

/// The log's size once the server has started: one `key-register` event per key of its
/// builders file, logged before any submission is taken (spec/entry.md, "Key events").
fn key_events_at_start(server: &Server, builders: u64) -> u64 {
    let size = tree_size(server);
    assert_eq!(size, builders, "one key event per key of the builders file");
    size
}

#[test]
fn submission_lookups_and_proofs_verify() {
    let dir = tempfile::tempdir().unwrap();
    let b1 = NixSecretKey::from_seed("builder-1", [1; 32]);
    let b2 = NixSecretKey::from_seed("builder-2", [2; 32]);
    write_builders(
        dir.path(),
        &[
            lix_key(),
            b1.public_key().to_string(),
            b2.public_key().to_string(),
        ],
    );
    let server = Server::start(dir.path(), &[]);
    // Indexes 0..base: the registrations of the three keys.
    let base = key_events_at_start(&server, 3);

    // The five real lix narinfos in one body: five entries, indexes base..base + 5.
    let (status, answer) = submit(&server, &lix_narinfos().join("\n"));
    assert_eq!(status, 200, "{answer}");
    let want: Vec<_> = (base..base + 5)
        .map(|i| ("logged".to_owned(), Some(i)))
        .collect();
    assert_eq!(statuses(&answer), want);
    // Again: duplicates with their first indexes, nothing appended.
    let (status, again) = submit(&server, &lix_narinfos()[2]);
    assert_eq!(status, 200);
    assert_eq!(
        statuses(&again),
        vec![("duplicate".to_owned(), Some(base + 2))]
    );

    let first = server.wait_for_checkpoint(base + 5);
    assert_eq!(first.checkpoint.size, base + 5);
    let log_key = server.verifier_key();

    // Two builders of one path; builder 2 got other bytes.
    let same = synthetic_narinfo(&b1, "shared", 0, 0);
    let other = synthetic_narinfo(&b2, "shared", 0, 1);
    let (_, a) = submit(&server, &format!("{same}\n{other}"));
    assert_eq!(
        statuses(&a),
        vec![
            ("logged".into(), Some(base + 5)),
            ("logged".into(), Some(base + 6))
        ]
    );
    let agree =
        synthetic_narinfo(&b2, "agree", 0, 0) + "\n" + &synthetic_narinfo(&b1, "agree", 0, 0);
    let (_, a) = submit(&server, &agree);
    assert_eq!(
        statuses(&a),
        vec![
            ("logged".into(), Some(base + 7)),
            ("logged".into(), Some(base + 8))
        ]
    );
    let second = server.wait_for_checkpoint(base + 9);
    let size = second.checkpoint.size;
    assert_eq!(size, base + 9);

    // Every entry: self-contained, in the tree by inclusion proof and by tlog-proof. The key
    // events are the operator's registrations, signed with the log's key; the rest are
    // signing events.
    let mut leaves = Vec::new();
    for i in 0..size {
        let bytes = entry_bytes(&server, i);
        if i < base {
            let LogEntry::Key(event) = LogEntry::decode(&bytes).unwrap() else {
                panic!("entry {i} is not a key event");
            };
            assert!(
                matches!(event.action, KeyAction::Register(_)),
                "entry {i}: {event:?}"
            );
            event.verify(&log_key).unwrap();
        } else {
            let entry = Entry::decode(&bytes).unwrap();
            entry.verify_signature().unwrap();
        }
        let leaf = merkle::leaf_hash(&bytes);
        let (status, p) = get_json(&format!(
            "{}/api/v1/proof/inclusion?index={i}&size={size}",
            server.url
        ));
        assert_eq!(status, 200);
        merkle::verify_inclusion(
            &b64_hashes(&p["proof"]),
            i,
            size,
            &leaf,
            &second.checkpoint.root,
        )
        .unwrap();
        let (status, receipt) = get(&format!("{}/api/v1/entries/{i}/tlog-proof", server.url));
        assert_eq!(status, 200);
        let receipt = TlogProof::parse(&receipt).unwrap();
        assert_eq!(receipt.index, i);
        receipt.verify(&bytes, &log_key, &[]).unwrap();
        assert!(receipt.verify(b"another entry", &log_key, &[]).is_err());
        leaves.push(leaf);
    }

    // The later checkpoint extends the earlier one.
    let (_, c) = get_json(&format!(
        "{}/api/v1/proof/consistency?old={}&new={size}",
        server.url,
        base + 5
    ));
    merkle::verify_consistency(
        &b64_hashes(&c["proof"]),
        base + 5,
        size,
        &first.checkpoint.root,
        &second.checkpoint.root,
    )
    .unwrap();

    // Tiles: the level-0 partial tile is the leaf hashes; the bundle is the entries.
    let (status, tile) = get(&format!("{}/tile/0/000.p/{size}", server.url));
    assert_eq!(status, 200);
    assert_eq!(tile, leaves.concat());
    let (status, bundle) = get(&format!("{}/tile/entries/000.p/{size}", server.url));
    assert_eq!(status, 200);
    let decoded = decode_bundle(&bundle).unwrap();
    assert_eq!(decoded.len() as u64, size);
    assert_eq!(decoded[3], entry_bytes(&server, 3).as_slice());
    for missing in [
        &format!("tile/0/000.p/{}", size + 1),
        "tile/0/000",
        "tile/entries/001.p/1",
        "tile/1/000.p/1",
        "tile/0/0",
    ] {
        assert_eq!(
            get(&format!("{}/{missing}", server.url)).0,
            404,
            "{missing}"
        );
    }
    // Proofs only for published sizes, and indexes inside them.
    assert_eq!(
        get(&format!(
            "{}/api/v1/proof/inclusion?index=0&size=99",
            server.url
        ))
        .0,
        400
    );
    assert_eq!(
        get(&format!(
            "{}/api/v1/proof/inclusion?index={size}&size={size}",
            server.url
        ))
        .0,
        400
    );
    assert_eq!(get(&format!("{}/api/v1/entries/99", server.url)).0, 404);

    // Lookups by path: who signed which NAR hash.
    let nar_hashes = |p: &Value| -> std::collections::BTreeSet<String> {
        let events = p["events"].as_array().unwrap();
        events
            .iter()
            .map(|e| e["nar_hash"].as_str().unwrap().to_owned())
            .collect()
    };
    let shared_hash = same.lines().next().unwrap().rsplit('/').next().unwrap()[..32].to_owned();
    let (status, p) = get_json(&format!("{}/api/v1/paths/{shared_hash}", server.url));
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["events"].as_array().unwrap().len(), 2);
    assert_eq!(nar_hashes(&p).len(), 2, "two builders disagree");
    assert!(p.get("next").is_none(), "one page holds it all: {p}");
    let agree_hash = agree.lines().next().unwrap().rsplit('/').next().unwrap()[..32].to_owned();
    let (_, p) = get_json(&format!("{}/api/v1/paths/{agree_hash}", server.url));
    assert_eq!(p["events"].as_array().unwrap().len(), 2);
    assert_eq!(nar_hashes(&p).len(), 1, "two builders agree");
    // One event a page: the cursor leads to the second, which ends the lookup.
    let (_, first) = get_json(&format!("{}/api/v1/paths/{agree_hash}?limit=1", server.url));
    let next = first["next"].as_u64().unwrap();
    assert_eq!(first["events"][0]["index"].as_u64(), Some(next));
    let (_, second) = get_json(&format!(
        "{}/api/v1/paths/{agree_hash}?limit=1&after={next}",
        server.url
    ));
    assert_eq!(second["events"].as_array().unwrap().len(), 1);
    assert!(second["events"][0]["index"].as_u64().unwrap() > next);
    assert!(second.get("next").is_none());
    for bad in [
        "limit=0",
        "limit=1001",
        "after=x",
        "after=18446744073709551616",
    ] {
        let url = format!("{}/api/v1/paths/{agree_hash}?{bad}", server.url);
        assert_eq!(get(&url).0, 400, "{bad}");
    }
    assert_eq!(
        get(&format!("{}/api/v1/paths/not-a-hash", server.url)).0,
        400
    );
    assert_eq!(
        get(&format!("{}/api/v1/paths/{}", server.url, "0".repeat(32))).0,
        404
    );

    let (_, b) = get_json(&format!("{}/api/v1/builders", server.url));
    let counts: BTreeMap<String, u64> = b["builders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().to_owned(),
                x["entries"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts["cache.lix.systems"], 5);
    assert_eq!(counts["builder-1"], 2);
    assert_eq!(counts["builder-2"], 2);

    let (_, metrics) = get(&format!("{}/metrics", server.url));
    let metrics = String::from_utf8(metrics).unwrap();
    // The key events were logged too.
    assert!(
        metrics.contains(&format!("reprolog_entries_logged_total {}", base + 9)),
        "{metrics}"
    );
    assert!(metrics.contains("reprolog_entries_duplicate_total 1"));
    assert!(metrics.contains("reprolog_sequencing_seconds_count"));
}

#[test]
fn bad_input_gets_a_clear_status_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b1 = NixSecretKey::from_seed("builder-1", [1; 32]);
    write_builders(dir.path(), &[b1.public_key().to_string()]);
    let server = Server::start(dir.path(), &["--max-body-bytes", "65536"]);
    let base = key_events_at_start(&server, 1);
    let good = synthetic_narinfo(&b1, "bad-input", 0, 0);
    let url = format!("{}/api/v1/narinfo", server.url);

    // Malformed: 400 naming the narinfo and the line; the good narinfo beside it is not stored.
    let broken = good.replace("NarSize: ", "NarSize: x");
    let (status, a) = submit(&server, &format!("{good}\n{broken}"));
    assert_eq!(status, 400, "{a}");
    let msg = a["error"].as_str().unwrap();
    assert!(msg.contains("narinfo 2") && msg.contains("line 5"), "{msg}");

    assert_eq!(post(&url, "text/plain", good.as_bytes()).0, 415);
    assert_eq!(post(&url, "text/x-nix-narinfo", &vec![b'a'; 70_000]).0, 413);

    // An entry over 65,535 bytes: 422.
    let refs: String = (0..1500)
        .map(|i| format!(" {:0>32}-r{i}", i % 10))
        .collect();
    let mut huge = reprolog_verifier::nix::NarInfo::parse(&good).unwrap();
    huge.sigs.clear();
    huge.references = refs.split_whitespace().map(str::to_owned).collect();
    huge.sign(&b1);
    let huge = huge.to_text();
    assert!(huge.len() < 65536);
    let (status, a) = submit(&server, &huge);
    assert_eq!(status, 422, "{a}");
    assert!(a["error"].as_str().unwrap().contains("65535"));

    // No valid signature from a registered key: 422 with the count and the first reasons.
    let stranger = NixSecretKey::from_seed("stranger", [9; 32]);
    let impostor = NixSecretKey::from_seed("builder-1", [8; 32]);
    let mut unsigned = reprolog_verifier::nix::NarInfo::parse(&good).unwrap();
    unsigned.sigs.clear();
    unsigned.sign(&stranger);
    unsigned.sign(&impostor);
    let (status, a) = submit(&server, &unsigned.to_text());
    assert_eq!(status, 422, "{a}");
    assert_eq!(a["signatures"], 2, "{a}");
    let reasons: Vec<&str> = a["first_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not a registered builder")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("does not verify")),
        "{reasons:?}"
    );

    // Nothing of any of that was stored; the good narinfo alone still logs right after the
    // key events.
    assert_eq!(tree_size(&server), base);
    let (status, a) = submit(&server, &good);
    assert_eq!(status, 200);
    assert_eq!(statuses(&a), vec![("logged".into(), Some(base))]);
}

#[test]
fn concurrent_submitters_never_lose_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<NixSecretKey> = (0..4)
        .map(|i| NixSecretKey::from_seed(&format!("c{i}"), [10 + i; 32]))
        .collect();
    write_builders(
        dir.path(),
        &keys
            .iter()
            .map(|k| k.public_key().to_string())
            .collect::<Vec<_>>(),
    );
    let server = Server::start(dir.path(), &[]);
    let base = key_events_at_start(&server, keys.len() as u64);
    let threads: Vec<_> = keys
        .iter()
        .cloned()
        .map(|key| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for round in 0..25u64 {
                    // Each batch overlaps the previous one, so duplicates race with appends.
                    let body: Vec<String> = (round * 4..round * 4 + 8)
                        .map(|i| synthetic_narinfo(&key, "concurrent", i, 0))
                        .collect();
                    let (status, a) = post(
                        &format!("{url}/api/v1/narinfo"),
                        "text/x-nix-narinfo",
                        body.join("\n").as_bytes(),
                    );
                    assert_eq!(status, 200, "{a}");
                    seen.extend(statuses(&a));
                }
                seen
            })
        })
        .collect();
    let mut logged = Vec::new();
    let mut dup_targets = Vec::new();
    for t in threads {
        for (status, index) in t.join().unwrap() {
            match status.as_str() {
                "logged" => logged.push(index.unwrap()),
                "duplicate" => dup_targets.push(index.unwrap()),
                other => panic!("unexpected {other}"),
            }
        }
    }
    // Each key signed 25·4 + 4 distinct narinfos, all logged exactly once, densely indexed
    // after the key events.
    logged.sort();
    let unique = 4 * (25 * 4 + 4);
    let end = base + unique;
    assert_eq!(logged, (base..end).collect::<Vec<_>>());
    assert!(dup_targets.iter().all(|i| (base..end).contains(i)));
    assert_eq!(tree_size(&server), end);
    let cp = server.wait_for_checkpoint(end);
    assert_eq!(cp.checkpoint.size, end);

    // Full tiles are immutable and say so; partial ones must be revalidated.
    let cache_control = |path: &str| {
        let r = ureq::get(&format!("{}/{path}", server.url)).call().unwrap();
        r.header("Cache-Control").unwrap_or_default().to_owned()
    };
    assert!(cache_control("tile/entries/000").contains("immutable"));
    assert!(cache_control("tile/0/000").contains("immutable"));
    let partial = format!("tile/0/001.p/{}", end - 256);
    assert_eq!(cache_control(&partial), "no-cache");
}

#[test]
fn builders_file_reloads_on_change_and_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let b1 = NixSecretKey::from_seed("builder-1", [1; 32]);
    let b2 = NixSecretKey::from_seed("builder-2", [2; 32]);
    write_builders(dir.path(), &[b1.public_key().to_string()]);
    let server = Server::start(dir.path(), &[]);
    let n2 = synthetic_narinfo(&b2, "reload", 0, 0);
    assert_eq!(submit(&server, &n2).0, 422);

    // A changed file is picked up within a couple of seconds.
    write_builders(
        dir.path(),
        &[
            "# a comment".into(),
            b1.public_key().to_string(),
            b2.public_key().to_string(),
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while submit(&server, &n2).0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "builders file change not picked up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGHUP reloads at once; a broken file keeps the old list.
    std::fs::write(dir.path().join("builders"), "not a key\n").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        submit(&server, &synthetic_narinfo(&b2, "reload", 1, 0)).0,
        200
    );
    write_builders(dir.path(), &[b1.public_key().to_string()]);
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        submit(&server, &synthetic_narinfo(&b2, "reload", 2, 0)).0,
        422
    );
}

#[test]
fn first_start_creates_a_private_key_and_refuses_a_readable_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--origin", "example.com/reprolog-test"]);
    let key = data.join("log.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let vkey = server.verifier_key();
    assert_eq!(vkey.name(), "example.com/reprolog-test");
    let cp = server.checkpoint();
    assert_eq!(cp.checkpoint.origin, "example.com/reprolog-test");
    assert_eq!(cp.checkpoint.size, 0);
    assert_eq!(cp.checkpoint.root, merkle::EMPTY_ROOT);
    drop(server);

    // Another origin for the same log is refused.
    let err = Server::try_start(&data, &["--origin", "example.com/other"])
        .err()
        .unwrap();
    assert!(err.contains("does not match"), "{err}");
    // A key others can read is refused, and the message says what to do.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Server::try_start(&data, &[]).err().unwrap();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::start(&data, &[]);
    assert_eq!(server.verifier_key(), vkey);
}

/// What the crash test has seen: acknowledged entries by index, and checkpoints by size.
#[derive(Default)]
struct Observed {
    acked: BTreeMap<u64, Vec<u8>>,
    checkpoints: BTreeMap<u64, Hash>,
}

impl Observed {
    fn checkpoint(&mut self, size: u64, root: Hash) {
        let old = self.checkpoints.insert(size, root);
        assert!(
            old.is_none() || old == Some(root),
            "two checkpoints of size {size} differ"
        );
    }
}

/// Checks a restarted server against everything seen before: each acknowledged entry at its
/// index (read through entry bundles), and each checkpoint extended by the current one.
fn check_against_restarted(server: &Server, seen: &Observed) -> SignedCheckpoint {
    let cp = server.wait_for_checkpoint(tree_size(server));
    let size = cp.checkpoint.size;
    if let Some(last) = seen.acked.keys().last() {
        assert!(
            *last < size,
            "acknowledged index {last} missing after restart (size {size})"
        );
        for n in 0..=last / TILE_WIDTH {
            let width = (size - n * TILE_WIDTH).min(TILE_WIDTH) as u16;
            let tile = TilePath {
                kind: TileKind::Entries,
                index: n,
                width,
            };
            let (status, bundle) = get(&format!("{}/{tile}", server.url));
            assert_eq!(status, 200, "{tile}");
            for (i, entry) in decode_bundle(&bundle).unwrap().into_iter().enumerate() {
                let index = n * TILE_WIDTH + i as u64;
                if let Some(want) = seen.acked.get(&index) {
                    assert_eq!(entry, want.as_slice(), "entry {index} changed");
                }
            }
        }
    }
    for (old, old_root) in &seen.checkpoints {
        let (status, c) = get_json(&format!(
            "{}/api/v1/proof/consistency?old={old}&new={size}",
            server.url
        ));
        assert_eq!(status, 200, "{c}");
        merkle::verify_consistency(
            &b64_hashes(&c["proof"]),
            *old,
            size,
            old_root,
            &cp.checkpoint.root,
        )
        .unwrap_or_else(|e| panic!("checkpoint {old} is not extended by {size}: {e}"));
    }
    cp
}

/// SIGKILLs the server while submissions stream in, restarts it, and checks that every
/// acknowledged entry is at its index and every checkpoint seen is extended by the new one.
/// `REPROLOG_CRASH_CYCLES` runs more cycles (scripts/crash-test.sh).
#[test]
fn crash_while_ingesting_loses_nothing_acknowledged() {
    let cycles: u64 = std::env::var("REPROLOG_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let key = NixSecretKey::from_seed("crash", [42; 32]);
    write_builders(dir.path(), &[key.public_key().to_string()]);
    let mut seen = Observed::default();
    let mut next = 0u64;
    for cycle in 0..cycles {
        let mut server = Server::start(dir.path(), &["--checkpoint-interval-ms", "20"]);
        let cp = check_against_restarted(&server, &seen);
        seen.checkpoint(cp.checkpoint.size, cp.checkpoint.root);

        let url = server.url.clone();
        let vkey = server.verifier_key();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (k, s) = (key.clone(), std::sync::Arc::clone(&stop));
        let start = next;
        let streamer = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut checkpoints = Vec::new();
            let mut i = start;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<String> = (i..i + 5)
                    .map(|n| synthetic_narinfo(&k, "crash", n, 0))
                    .collect();
                i += 5;
                let r = ureq::post(&format!("{url}/api/v1/narinfo"))
                    .set("Content-Type", "text/x-nix-narinfo")
                    .send_string(&batch.join("\n"));
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("cycle stream ended: {e}");
                        break;
                    }
                };
                let a: Value = serde_json::from_reader(r.into_reader()).unwrap();
                for (n, info) in (i - 5..).zip(a["narinfos"].as_array().unwrap()) {
                    let s = &info["signatures"][0];
                    acked.push((
                        s["index"].as_u64().unwrap(),
                        info["store_path"].as_str().unwrap().to_owned(),
                        n,
                    ));
                }
                if let Ok(r) = ureq::get(&format!("{url}/checkpoint")).call() {
                    let body = r.into_string().unwrap();
                    let cp = SignedCheckpoint::open(body.as_bytes(), &vkey, &[]).unwrap();
                    checkpoints.push((cp.checkpoint.size, cp.checkpoint.root));
                }
            }
            (acked, checkpoints, i)
        });
        std::thread::sleep(Duration::from_millis(150 + (cycle * 37) % 200));
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (acked, checkpoints, end) = streamer.join().unwrap();
        next = end;
        assert!(
            !acked.is_empty() || cycle > 0,
            "no submission acknowledged in cycle {cycle}"
        );
        // Remember what each acknowledged index must hold, from a server that is back up.
        let server = Server::start(dir.path(), &[]);
        // The path index is rebuilt from the log: the latest acknowledged narinfos are
        // duplicates at their indexes, and their paths list them.
        let latest: Vec<_> = acked.iter().rev().take(10).collect();
        let body: Vec<String> = latest
            .iter()
            .map(|(_, _, n)| synthetic_narinfo(&key, "crash", *n, 0))
            .collect();
        if !latest.is_empty() {
            let (status, answer) = submit(&server, &body.join("\n"));
            assert_eq!(status, 200, "{answer}");
            for ((index, path, _), info) in
                latest.iter().zip(answer["narinfos"].as_array().unwrap())
            {
                let s = &info["signatures"][0];
                assert_eq!(
                    (s["status"].as_str(), s["index"].as_u64()),
                    (Some("duplicate"), Some(*index)),
                    "{path} after crash {cycle}"
                );
            }
            let (index, path, _) = latest[0];
            let base = path.rsplit('/').next().unwrap();
            let (status, events) =
                get_json(&format!("{}/api/v1/paths/{}", server.url, &base[..32]));
            assert_eq!(status, 200);
            assert!(events["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["index"].as_u64() == Some(*index)));
        }
        for (index, store_path, _) in acked {
            let bytes = entry_bytes(&server, index);
            let e = Entry::decode(&bytes).unwrap();
            assert_eq!(
                e.store_path.as_str(),
                store_path,
                "entry {index} after crash {cycle}"
            );
            seen.acked.insert(index, bytes);
        }
        for (size, root) in checkpoints {
            seen.checkpoint(size, root);
        }
        check_against_restarted(&server, &seen);
    }
    assert!(
        seen.acked.len() > 20,
        "only {} entries acknowledged",
        seen.acked.len()
    );
    eprintln!(
        "{cycles} crash cycles: {} acknowledged entries and {} checkpoints survived",
        seen.acked.len(),
        seen.checkpoints.len()
    );
}
