//! The witness as a real process: every tlog-witness answer, forks, rollbacks, races,
//! restarts, and the log server gathering cosignatures for a client's 2-of-2 policy.

use std::path::Path;
use std::time::{Duration, Instant};

use reprolog_tests::{
    get, submit, synthetic_narinfo, workspace_bin, write_builders, Server, Witness,
};
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::merkle::{self, MemoryTree};
use reprolog_verifier::nix::NixSecretKey;
use reprolog_verifier::note::{Note, NoteSignature, SignerKey};
use reprolog_verifier::policy::Policy;
use reprolog_verifier::witness_request::AddCheckpoint;
use sha2::{Digest, Sha256};

/// A log kept in memory by the test, signing its own checkpoints.
struct TestLog {
    key: SignerKey,
    tree: MemoryTree,
}

impl TestLog {
    fn new(origin: &str, seed: u8) -> Self {
        TestLog {
            key: SignerKey::from_seed(origin, [seed; 32]).unwrap(),
            tree: MemoryTree::new(),
        }
    }

    fn grow_to(&mut self, size: u64) {
        while self.tree.size() < size {
            let n = self.tree.size();
            self.tree
                .push(merkle::leaf_hash(format!("entry {n}").as_bytes()));
        }
    }

    fn checkpoint(&self, size: u64, signer: &SignerKey) -> String {
        let root = merkle::tree_hash(size, &self.tree).unwrap();
        let mut note = Note::new(&Checkpoint::new(self.key.name(), size, root).to_text()).unwrap();
        note.sign(signer);
        note.encode()
    }

    fn request(&self, old: u64, size: u64) -> String {
        AddCheckpoint {
            old_size: old,
            proof: merkle::prove_consistency(old, size, &self.tree).unwrap(),
            checkpoint: self.checkpoint(size, &self.key),
        }
        .encode()
    }
}

fn add(witness: &Witness, body: &str) -> (u16, String, String) {
    let r = ureq::post(&format!("{}/add-checkpoint", witness.url)).send_string(body);
    let r = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let (status, ctype) = (r.status(), r.content_type().to_owned());
    (status, ctype, r.into_string().unwrap())
}

fn witness_for(dir: &Path, logs: &[&SignerKey]) -> Witness {
    let policy: String = logs
        .iter()
        .map(|k| format!("log {}\n", k.verifier_key()))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("policy"), policy).unwrap();
    Witness::start(dir, &["--name", "example.com/witness"])
}

#[test]
fn every_refusal_of_tlog_witness() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TestLog::new("example.com/log-a", 1);
    log.grow_to(20);
    let w = witness_for(dir.path(), &[&log.key]);
    let wkey = w.verifier_key();
    assert_eq!(wkey.algorithm(), 0x04);

    // 200: the first checkpoint from 0, with a cosignature line that verifies.
    let (status, _, body) = add(&w, &log.request(0, 8));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("\u{2014} example.com/witness "));
    let cosigned = Note::parse(
        format!(
            "{}\n{body}",
            Note::parse(log.checkpoint(8, &log.key).as_bytes())
                .unwrap()
                .text()
        )
        .as_bytes(),
    )
    .unwrap();
    cosigned.verify(std::slice::from_ref(&wkey)).unwrap();

    // 409 with text/x.tlog.size when old is not what the witness holds.
    let (status, ctype, body) = add(&w, &log.request(4, 12));
    assert_eq!(
        (status, ctype.as_str(), body.as_str()),
        (409, "text/x.tlog.size", "8\n")
    );
    // 422: a bad consistency proof.
    let mut bad = AddCheckpoint::parse(log.request(8, 12).as_bytes()).unwrap();
    bad.proof[0][0] ^= 1;
    assert_eq!(add(&w, &bad.encode()).0, 422);
    // 403: no signature by the log's key, or a bad one.
    let stranger = SignerKey::from_seed("example.com/log-a", [9; 32]).unwrap();
    let unsigned = AddCheckpoint {
        old_size: 8,
        proof: merkle::prove_consistency(8, 12, &log.tree).unwrap(),
        checkpoint: log.checkpoint(12, &stranger),
    };
    assert_eq!(add(&w, &unsigned.encode()).0, 403);
    let forged = log.request(8, 12).replace("\n12\n", "\n13\n");
    assert_eq!(add(&w, &forged).0, 403);
    // 404: an origin the witness does not know.
    let other = TestLog::new("example.com/unknown", 3);
    assert_eq!(add(&w, &other.request(0, 0)).0, 404);
    // 400: malformed bodies, and old larger than the checkpoint.
    for body in ["", "old x\n\n", "old 8\nnot-base64\n\nfoo\n", "old 8\n"] {
        assert_eq!(add(&w, body).0, 400, "{body:?}");
    }
    let (status, _, _) = add(
        &w,
        &AddCheckpoint {
            old_size: 8,
            proof: vec![],
            checkpoint: log.checkpoint(4, &log.key),
        }
        .encode(),
    );
    assert_eq!(status, 400, "old larger than the checkpoint is a rollback");

    // A fork: same size, another root, signed by the real log key. Refused.
    let mut fork = TestLog::new("example.com/log-a", 1);
    for n in 0..8 {
        fork.tree
            .push(merkle::leaf_hash(format!("forked {n}").as_bytes()));
    }
    let fork_body = AddCheckpoint {
        old_size: 8,
        proof: vec![],
        checkpoint: fork.checkpoint(8, &log.key),
    }
    .encode();
    assert_eq!(add(&w, &fork_body).0, 409);
    // The honest next checkpoint still advances it; then a rollback is refused.
    assert_eq!(add(&w, &log.request(8, 12)).0, 200);
    assert_eq!(add(&w, &log.request(8, 10)).0, 409);

    // The witness serves the latest cosigned checkpoint for the origin.
    let hash: String = Sha256::digest(b"example.com/log-a")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (status, body) = get(&format!("{}/{hash}/checkpoint", w.url));
    assert_eq!(status, 200);
    let note = Note::parse(&body).unwrap();
    assert_eq!(Checkpoint::parse(note.text()).unwrap().size, 12);
    note.verify(&[log.key.verifier_key(), wkey]).unwrap();
    assert_eq!(
        get(&format!("{}/{}/checkpoint", w.url, "0".repeat(64))).0,
        404
    );
}

#[test]
fn concurrent_add_checkpoint_exactly_one_wins_and_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TestLog::new("example.com/log-b", 2);
    log.grow_to(40);
    let mut w = witness_for(dir.path(), &[&log.key]);
    assert_eq!(add(&w, &log.request(0, 4)).0, 200);

    let url = w.url.clone();
    let bodies: Vec<String> = (5..25).map(|n| log.request(4, n)).collect();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(bodies.len()));
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                match ureq::post(&format!("{url}/add-checkpoint")).send_string(&body) {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(code, _)) => code,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let codes: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 409).count(),
        codes.len() - 1,
        "{codes:?}"
    );
    let (_, _, held) = add(&w, &log.request(0, 30));
    let held: u64 = held.trim().parse().unwrap();
    assert!((5..25).contains(&held));

    // After a restart the witness still holds that size and still refuses a fork of it.
    w.kill();
    let w = Witness::start(dir.path(), &[]);
    let (status, _, body) = add(&w, &log.request(0, 30));
    assert_eq!((status, body.trim().parse::<u64>().unwrap()), (409, held));
    let mut fork = TestLog::new("example.com/log-b", 2);
    for n in 0..held {
        fork.tree
            .push(merkle::leaf_hash(format!("forked {n}").as_bytes()));
    }
    let fork_body = AddCheckpoint {
        old_size: held,
        proof: vec![],
        checkpoint: fork.checkpoint(held, &log.key),
    }
    .encode();
    assert_eq!(add(&w, &fork_body).0, 409);
    assert_eq!(add(&w, &log.request(held, 30)).0, 200);
}

/// The log's size once the server has started: one `key-register` event per key of its
/// builders file, logged before any submission is taken (spec/entry.md, "Key events"), by
/// this process or by an earlier one on the same data directory.
fn key_events_at_start(server: &Server, builders: u64) -> u64 {
    let size = server.metric("reprolog_tree_size").unwrap() as u64;
    assert_eq!(size, builders, "one key event per key of the builders file");
    size
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn reprolog_checkpoint_verify(policy: &Path, source: &str) -> (i32, String) {
    let out = std::process::Command::new(workspace_bin("reprolog"))
        .args(["checkpoint", "verify", "--policy"])
        .arg(policy)
        .arg(source)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn log_gathers_cosignatures_for_a_two_of_two_policy_and_survives_a_witness_going_down() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    let log_dir = dir.path().join("log");
    write_builders(&log_dir, &[builder.public_key().to_string()]);
    // The log's key is made first so the witnesses can be told about it.
    let server = Server::start(&log_dir, &["--origin", "example.com/reprolog-e2e"]);
    let log_vkey = server.verifier_key();
    drop(server);

    let mut witnesses: Vec<Witness> = (0..2)
        .map(|i| {
            let d = dir.path().join(format!("w{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("policy"), format!("log {log_vkey}\n")).unwrap();
            Witness::start(&d, &["--name", &format!("example.com/w{i}")])
        })
        .collect();
    let log_policy: String = witnesses
        .iter()
        .enumerate()
        .map(|(i, w)| format!("witness w{i} {} {}\n", w.verifier_key(), w.url))
        .collect();
    std::fs::write(dir.path().join("log-policy"), &log_policy).unwrap();
    let server = Server::start(
        &log_dir,
        &[
            "--policy",
            dir.path().join("log-policy").to_str().unwrap(),
            "--checkpoint-interval-ms",
            "50",
        ],
    );
    // The first start registered the key; this one finds it in the log.
    let base = key_events_at_start(&server, 1);
    let client_policy = |quorum: &str| {
        let path = dir.path().join(format!("client-{quorum}"));
        let mut text = format!("log {log_vkey}\n");
        for (i, w) in witnesses.iter().enumerate() {
            text += &format!("witness w{i} {}\n", w.verifier_key());
        }
        text += &format!("group both {quorum} w0 w1\nquorum both\n");
        std::fs::write(&path, text).unwrap();
        path
    };
    let two_of_two = client_policy("all");
    let one_of_two = client_policy("any");

    for i in 0..5 {
        assert_eq!(
            submit(&server, &synthetic_narinfo(&builder, "witnessed", i, 0)).0,
            200
        );
    }
    let policy = Policy::parse(&std::fs::read_to_string(&two_of_two).unwrap()).unwrap();
    wait_for(
        &format!("a 2-of-2 cosigned checkpoint of size {}", base + 5),
        || {
            let (_, body) = get(&format!("{}/checkpoint", server.url));
            policy
                .verify_checkpoint(&body)
                .is_ok_and(|t| t.checkpoint.size == base + 5)
        },
    );
    let (code, out) = reprolog_checkpoint_verify(&two_of_two, &server.url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cosigned by  w0, w1"), "{out}");

    // One witness goes down: the log keeps sequencing and publishing, with one cosignature.
    witnesses[1].kill();
    for i in 5..9 {
        assert_eq!(
            submit(&server, &synthetic_narinfo(&builder, "witnessed", i, 0)).0,
            200
        );
    }
    let one = Policy::parse(&std::fs::read_to_string(&one_of_two).unwrap()).unwrap();
    wait_for(
        &format!("a checkpoint of size {} with one cosignature", base + 9),
        || {
            let (_, body) = get(&format!("{}/checkpoint", server.url));
            one.verify_checkpoint(&body)
                .is_ok_and(|t| t.checkpoint.size == base + 9 && t.cosigned_by == ["w0"])
        },
    );
    let (code, out) = reprolog_checkpoint_verify(&two_of_two, &server.url);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("quorum both is not met"), "{out}");
    assert_eq!(reprolog_checkpoint_verify(&one_of_two, &server.url).0, 0);

    // A saved checkpoint file verifies offline too, and a tampered one does not.
    let (_, body) = get(&format!("{}/checkpoint", server.url));
    let file = dir.path().join("checkpoint");
    std::fs::write(&file, &body).unwrap();
    assert_eq!(
        reprolog_checkpoint_verify(&one_of_two, file.to_str().unwrap()).0,
        0
    );
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace(&format!("\n{}\n", base + 9), &format!("\n{}\n", base + 10));
    std::fs::write(&file, tampered).unwrap();
    assert_eq!(
        reprolog_checkpoint_verify(&one_of_two, file.to_str().unwrap()).0,
        1
    );
}

#[test]
fn waiting_for_a_quorum_holds_checkpoints_back_but_not_sequencing() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    let log_dir = dir.path().join("log");
    write_builders(&log_dir, &[builder.public_key().to_string()]);
    // The log's key is made first so the witness can be told about it; its key event is in a
    // checkpoint before any witness is involved.
    let first = Server::start(&log_dir, &["--origin", "example.com/reprolog-quorum"]);
    let base = key_events_at_start(&first, 1);
    first.wait_for_checkpoint(base);
    let log_vkey = first.verifier_key();
    drop(first);
    let w_dir = dir.path().join("w0");
    std::fs::create_dir_all(&w_dir).unwrap();
    std::fs::write(w_dir.join("policy"), format!("log {log_vkey}\n")).unwrap();
    let w0 = Witness::start(&w_dir, &["--name", "example.com/w0"]);
    // w1 listens nowhere: the quorum "both" cannot be met.
    let w1_key = SignerKey::from_seed("example.com/w1", [5; 32])
        .unwrap()
        .cosignature_verifier_key();
    let policy = format!(
        "witness w0 {} {}\nwitness w1 {w1_key} http://127.0.0.1:1\ngroup both all w0 w1\nquorum both\n",
        w0.verifier_key(),
        w0.url
    );
    std::fs::write(dir.path().join("log-policy"), policy).unwrap();
    let server = Server::start(
        &log_dir,
        &[
            "--policy",
            dir.path().join("log-policy").to_str().unwrap(),
            "--wait-for-quorum",
            "--checkpoint-interval-ms",
            "50",
        ],
    );
    for i in 0..3 {
        let (status, a) = submit(&server, &synthetic_narinfo(&builder, "quorum", i, 0));
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["narinfos"][0]["signatures"][0]["index"], base + i);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        server.checkpoint().checkpoint.size,
        base,
        "published without a quorum"
    );
}

/// The latest modification time of any file under `dir`.
fn newest_write(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let t = if meta.is_dir() {
            newest_write(&entry.path())
        } else {
            meta.modified().unwrap()
        };
        newest = newest.max(t);
    }
    newest
}

#[test]
fn the_witness_keeps_only_the_logs_signature_and_answers_replays_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TestLog::new("example.com/log-a", 1);
    log.grow_to(10);
    let w = witness_for(dir.path(), &[&log.key]);

    // A request whose checkpoint carries, besides the log's signature, lines by other keys.
    let mut req = AddCheckpoint::parse(log.request(0, 10).as_bytes()).unwrap();
    let mut note = Note::parse(req.checkpoint.as_bytes()).unwrap();
    note.sign(&SignerKey::from_seed("example.com/someone-else", [7; 32]).unwrap());
    note.sign(&SignerKey::from_seed("junk", [8; 32]).unwrap());
    req.checkpoint = note.encode();
    let (status, _, first) = add(&w, &req.encode());
    assert_eq!(status, 200, "{first}");

    let hash: String = Sha256::digest(b"example.com/log-a")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (_, served) = get(&format!("{}/{hash}/checkpoint", w.url));
    let served = Note::parse(&served).unwrap();
    let names: Vec<&str> = served
        .signatures()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["example.com/log-a", "example.com/witness"]);

    // The same checkpoint again (old = its size): the same cosignature, and no write.
    let mut replay = req.clone();
    replay.old_size = 10;
    replay.proof.clear();
    std::thread::sleep(Duration::from_millis(1100));
    let before = newest_write(&dir.path().join("state"));
    for _ in 0..50 {
        let (status, _, again) = add(&w, &replay.encode());
        assert_eq!((status, again.as_str()), (200, first.as_str()));
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(newest_write(&dir.path().join("state")), before);
}

/// A checkpoint of the very tree the witness holds, but with an extension line, is another
/// checkpoint: it is cosigned over its own text, never answered with the stored cosignature
/// of the text the witness held.
#[test]
fn the_held_tree_with_another_extension_line_is_cosigned_over_its_own_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TestLog::new("example.com/log-a", 1);
    log.grow_to(10);
    let w = witness_for(dir.path(), &[&log.key]);
    let (status, _, held) = add(&w, &log.request(0, 10));
    assert_eq!(status, 200, "{held}");

    let mut extended = Checkpoint::new(
        log.key.name(),
        10,
        merkle::tree_hash(10, &log.tree).unwrap(),
    );
    extended.extensions.push("an extension line".to_owned());
    let text = extended.to_text();
    let mut note = Note::new(&text).unwrap();
    note.sign(&log.key);
    let request = AddCheckpoint {
        old_size: 10,
        proof: Vec::new(),
        checkpoint: note.encode(),
    };
    let (status, _, line) = add(&w, &request.encode());
    assert_eq!(status, 200, "{line}");
    assert_ne!(line, held, "answered with the cosignature of the old text");
    let mut cosigned = Note::new(&text).unwrap();
    cosigned.add_signature(NoteSignature::parse_line(line.trim_end()).unwrap());
    let verified = cosigned
        .verify(&[w.verifier_key()])
        .expect("the cosignature signs the extended text");
    assert!(verified[0].timestamp.is_some());
}
