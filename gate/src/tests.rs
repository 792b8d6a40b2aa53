//! Deciding and checkpoints against a fake log over real HTTP: which entries are proven (and
//! which cost nothing), how a decision is brought forward to a newer checkpoint, and which
//! answers of a lying log deny or latch.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use reprolog_verifier::api::{ConsistencyProof, InclusionProof, LoggedEntry, PathPage};
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::decision::{Outcome, Trust};
use reprolog_verifier::entry::{Entry, EntryKind};
use reprolog_verifier::key_event::KeyEvent;
use reprolog_verifier::merkle::{self, MemoryTree};
use reprolog_verifier::nix::narinfo::NixHash;
use reprolog_verifier::nix::{NixSecretKey, StorePath};
use reprolog_verifier::note::{Note, SignerKey};
use reprolog_verifier::policy::Policy;
use reprolog_verifier::registry::KeyRegistry;

use crate::checkpoints::Checkpoints;
use crate::decide::{decision_of, prove_path};
use crate::failure::Failure;
use crate::log::LogClient;
use crate::metrics::Metrics;

/// What the fake log holds and how it misbehaves.
struct FakeState {
    key: SignerKey,
    entries: Vec<Vec<u8>>,
    /// Every request's path and query, in order.
    requests: Vec<String>,
    /// Served at `/checkpoint` instead of the true one, when set.
    checkpoint: Option<Vec<u8>>,
    /// Inclusion proofs with their first hash flipped.
    bad_proofs: bool,
    /// Events per path page.
    page: usize,
}

impl FakeState {
    fn tree(&self, size: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        for e in &self.entries[..size as usize] {
            t.push(merkle::leaf_hash(e));
        }
        t
    }

    fn note(&self, size: u64, flip: bool) -> Vec<u8> {
        let mut root = self.tree(size).root();
        if flip {
            root[0] ^= 1;
        }
        let mut note = Note::new(&Checkpoint::new(self.key.name(), size, root).to_text()).unwrap();
        note.sign(&self.key);
        note.encode().into_bytes()
    }

    fn answer(&mut self, target: &str) -> (u16, Vec<u8>) {
        self.requests.push(target.to_owned());
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let q = |name: &str| -> Option<u64> {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        let json = |v: &dyn erased::Json| (200, v.bytes());
        let size = self.entries.len() as u64;
        if path == "/checkpoint" {
            return (
                200,
                self.checkpoint
                    .clone()
                    .unwrap_or_else(|| self.note(size, false)),
            );
        }
        if path == "/api/v1/proof/inclusion" {
            let (index, size) = (q("index").unwrap(), q("size").unwrap());
            let mut proof = merkle::prove_inclusion(index, size, &self.tree(size)).unwrap();
            if self.bad_proofs {
                match proof.first_mut() {
                    Some(h) => h[0] ^= 1,
                    None => proof.push([0; 32]),
                }
            }
            let proof = proof.iter().map(|h| B64.encode(h)).collect();
            return json(&InclusionProof { index, size, proof });
        }
        if path == "/api/v1/proof/consistency" {
            let (old, new) = (q("old").unwrap(), q("new").unwrap());
            let proof = merkle::prove_consistency(old, new, &self.tree(new)).unwrap();
            let proof = proof.iter().map(|h| B64.encode(h)).collect();
            return json(&ConsistencyProof { old, new, proof });
        }
        if let Some(hash) = path.strip_prefix("/api/v1/paths/") {
            let after = q("after");
            let mut events: Vec<LoggedEntry> = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| LoggedEntry::new(i as u64, e).unwrap())
                .filter(|e| e.store_path[11..].starts_with(hash))
                .filter(|e| after.is_none_or(|a| e.index > a))
                .collect();
            let more = events.len() > self.page;
            events.truncate(self.page);
            let Some(first) = events.first() else {
                return (404, b"{\"error\":\"no logged event\"}".to_vec());
            };
            let page = PathPage {
                store_path: first.store_path.clone(),
                next: more.then(|| events.last().unwrap().index),
                events,
            };
            return json(&page);
        }
        (404, Vec::new())
    }
}

/// serde_json for any of the API's types, behind one object-safe trait.
mod erased {
    pub trait Json {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap()
        }
    }
}

/// A fake log on a loopback port.
fn fake_log() -> (String, Arc<Mutex<FakeState>>) {
    let state = Arc::new(Mutex::new(FakeState {
        key: SignerKey::generate("example.com/fake").unwrap(),
        entries: Vec::new(),
        requests: Vec::new(),
        checkpoint: None,
        bad_proofs: false,
        page: 1000,
    }));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::clone(&state);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
            }
            let target = line.split(' ').nth(1).unwrap_or("/").to_owned();
            let (status, body) = shared.lock().unwrap().answer(&target);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    (url, state)
}

const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";

fn path(hash: &str, name: &str) -> StorePath {
    StorePath::parse(&format!("/nix/store/{hash}-{name}")).unwrap()
}

/// The encoded entry of `key` signing `path` with NAR hash byte `nar`.
fn entry(key: &NixSecretKey, path: &StorePath, nar: u8) -> Vec<u8> {
    let mut e = Entry {
        kind: EntryKind::CacheSignature,
        store_path: path.clone(),
        nar_hash: NixHash([nar; 32]),
        nar_size: 100,
        references: Default::default(),
        builder: key.public_key(),
        signature: [0; 64],
        statement: None,
    };
    e.signature = key.sign(&e.fingerprint()).signature;
    e.encode().unwrap()
}

fn trust(keys: &[&NixSecretKey], quorum: usize) -> Trust {
    let mut text = format!("quorum {quorum}\n");
    for (i, k) in keys.iter().enumerate() {
        text += &format!("builder b{i} {}\n", k.public_key());
    }
    Trust::parse(&text).unwrap()
}

/// The fake log's registry with `keys[i]` registered at index `i` (the key events themselves
/// are not among the fake log's entries: these tests are about paths).
fn registry(state: &Arc<Mutex<FakeState>>, keys: &[&NixSecretKey]) -> KeyRegistry {
    let log_key = state.lock().unwrap().key.clone();
    let mut r = KeyRegistry::new(log_key.verifier_key());
    for (i, k) in keys.iter().enumerate() {
        r.apply(i as u64, &KeyEvent::register(k.public_key(), 0, &log_key))
            .unwrap();
    }
    r
}

fn checkpoint_of(state: &Arc<Mutex<FakeState>>) -> Checkpoint {
    let s = state.lock().unwrap();
    Checkpoint::new(
        s.key.name(),
        s.entries.len() as u64,
        s.tree(s.entries.len() as u64).root(),
    )
}

fn proofs_asked(state: &Arc<Mutex<FakeState>>) -> usize {
    let mut s = state.lock().unwrap();
    let n = s
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/proof/inclusion"))
        .count();
    s.requests.clear();
    n
}

#[test]
fn only_new_claims_of_trusted_keys_are_proven_and_a_decision_is_brought_forward() {
    let (url, state) = fake_log();
    let log = LogClient::new(&url, Duration::from_secs(5)).unwrap();
    let (a, b, stranger) = (
        NixSecretKey::from_seed("a", [1; 32]),
        NixSecretKey::from_seed("b", [2; 32]),
        NixSecretKey::from_seed("stranger", [3; 32]),
    );
    let p = path(HASH, "hello");
    let other = path("1123456789abcdfghijklmnpqrsvwxyz", "other");
    {
        let mut s = state.lock().unwrap();
        s.page = 2; // several pages
        s.entries = vec![
            entry(&stranger, &p, 1),
            entry(&a, &p, 1),
            entry(&b, &other, 1),
            entry(&a, &p, 1), // the same claim again: nothing new to prove
            entry(&stranger, &p, 9),
        ];
    }
    let t = trust(&[&a, &b], 2);
    let r = registry(&state, &[&a, &b]);
    let cp = checkpoint_of(&state);
    let (proven, proofs) = prove_path(&log, &t, &r, HASH, &cp, None).unwrap();
    assert_eq!(
        (proofs, proofs_asked(&state)),
        (1, 1),
        "one proof: a's first claim"
    );
    assert_eq!(proven.entries.len(), 1);
    assert_eq!(proven.scanned_to, 5);
    let d = decision_of(&t, &r, HASH, &proven).unwrap();
    assert_eq!(
        d.outcome,
        Outcome::QuorumNotMet {
            agreeing: 1,
            quorum: 2
        }
    );
    assert_eq!(d.store_path, p.to_string());

    // b logs the same claim: only the events after the old checkpoint are looked up.
    state.lock().unwrap().entries.push(entry(&b, &p, 1));
    let cp2 = checkpoint_of(&state);
    let (proven2, proofs) = prove_path(&log, &t, &r, HASH, &cp2, Some(&proven)).unwrap();
    assert_eq!(proofs, 1);
    let requests = state.lock().unwrap().requests.clone();
    assert!(
        requests.iter().any(|r| r.contains("after=4")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("index=1&")),
        "{requests:?}"
    );
    let d = decision_of(&t, &r, HASH, &proven2).unwrap();
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.builders[1].index, Some(5));

    // Nothing logged: only the hash part is known.
    let none = decision_of(
        &t,
        &r,
        "2223456789abcdfghijklmnpqrsvwxyz",
        &Default::default(),
    )
    .unwrap();
    assert_eq!(none.outcome, Outcome::NotLogged);
    assert_eq!(
        none.store_path,
        "/nix/store/2223456789abcdfghijklmnpqrsvwxyz"
    );
    let (empty, _) =
        prove_path(&log, &t, &r, "2223456789abcdfghijklmnpqrsvwxyz", &cp2, None).unwrap();
    assert!(empty.entries.is_empty());
}

#[test]
fn a_lying_log_denies() {
    let (url, state) = fake_log();
    let log = LogClient::new(&url, Duration::from_secs(5)).unwrap();
    let a = NixSecretKey::from_seed("a", [1; 32]);
    let p = path(HASH, "hello");
    state.lock().unwrap().entries = vec![entry(&a, &p, 1)];
    let t = trust(&[&a], 1);
    let r = registry(&state, &[&a]);
    let cp = checkpoint_of(&state);

    state.lock().unwrap().bad_proofs = true;
    let err = prove_path(&log, &t, &r, HASH, &cp, None).unwrap_err();
    assert!(
        matches!(&err, Failure::Proof(m) if m.contains("not proven")),
        "{err:?}"
    );
    state.lock().unwrap().bad_proofs = false;

    // An entry whose signature does not verify.
    let mut forged = Entry::decode(&entry(&a, &p, 1)).unwrap();
    forged.nar_hash = NixHash([7; 32]);
    state.lock().unwrap().entries.push(forged.encode().unwrap());
    let cp = checkpoint_of(&state);
    let err = prove_path(&log, &t, &r, HASH, &cp, None).unwrap_err();
    assert!(
        matches!(&err, Failure::Proof(m) if m.contains("does not verify")),
        "{err:?}"
    );

    // A checkpoint it does not cover yet is what counts: a later entry is not looked at.
    let cp1 = Checkpoint::new(&cp.origin, 1, state.lock().unwrap().tree(1).root());
    assert!(prove_path(&log, &t, &r, HASH, &cp1, None).is_ok());

    // Two store paths with one hash part among trusted claims.
    state.lock().unwrap().entries = vec![entry(&a, &p, 1), entry(&a, &path(HASH, "evil"), 1)];
    let cp = checkpoint_of(&state);
    let (proven, _) = prove_path(&log, &t, &r, HASH, &cp, None).unwrap();
    assert!(matches!(
        decision_of(&t, &r, HASH, &proven),
        Err(Failure::Ambiguous(_))
    ));

    // Unreachable.
    let dead = LogClient::new("http://127.0.0.1:9", Duration::from_secs(1)).unwrap();
    assert!(matches!(
        prove_path(&dead, &t, &r, HASH, &cp, None),
        Err(Failure::Log(_))
    ));
}

fn checkpoints(dir: &std::path::Path, url: &str, state: &Arc<Mutex<FakeState>>) -> Checkpoints {
    let vkey = state.lock().unwrap().key.verifier_key();
    let policy = Policy::parse(&format!("log {vkey}\nquorum none\n")).unwrap();
    let log = Arc::new(LogClient::new(url, Duration::from_secs(5)).unwrap());
    Checkpoints::open(
        dir,
        policy,
        log,
        Arc::new(Metrics::new([])),
        Duration::from_millis(0),
    )
    .unwrap()
}

#[test]
fn forks_and_rollbacks_latch_across_restarts_until_the_evidence_is_removed() {
    let (url, state) = fake_log();
    let dir = tempfile::tempdir().unwrap();
    let a = NixSecretKey::from_seed("a", [1; 32]);
    let p = path(HASH, "hello");
    state.lock().unwrap().entries = (0..3).map(|i| entry(&a, &p, i)).collect();
    let c = checkpoints(dir.path(), &url, &state);
    assert_eq!(c.refresh().unwrap().checkpoint.size, 3);
    assert!(dir.path().join("checkpoint").exists());

    // Growth proven consistent is accepted; a checkpoint that fails the policy is not, and
    // latches nothing.
    state.lock().unwrap().entries.push(entry(&a, &p, 9));
    assert_eq!(c.refresh().unwrap().checkpoint.size, 4);
    let other = SignerKey::generate("example.com/fake").unwrap();
    let mut note = Note::new(&Checkpoint::new("example.com/fake", 4, [0; 32]).to_text()).unwrap();
    note.sign(&other);
    state.lock().unwrap().checkpoint = Some(note.encode().into_bytes());
    assert!(matches!(c.refresh(), Err(Failure::Checkpoint(_))));
    state.lock().unwrap().checkpoint = None;
    assert!(c.refresh().is_ok());

    // The same size with another root: a fork, latched even when the log is honest again.
    let forged = state.lock().unwrap().note(4, true);
    state.lock().unwrap().checkpoint = Some(forged);
    let err = c.refresh().unwrap_err();
    assert!(
        matches!(&err, Failure::Forked(m) if m.contains("another root")),
        "{err:?}"
    );
    state.lock().unwrap().checkpoint = None;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Arc::new(c);
    assert!(matches!(rt.block_on(c.current()), Err(Failure::Forked(_))));
    assert!(
        c.unlatch_if_cleared().is_none(),
        "the evidence is still there"
    );

    // A restart remembers it.
    drop(c);
    let c = Arc::new(checkpoints(dir.path(), &url, &state));
    assert!(matches!(rt.block_on(c.current()), Err(Failure::Forked(_))));
    std::fs::remove_file(dir.path().join("fork")).unwrap();
    assert!(c.unlatch_if_cleared().unwrap().is_ok());
    assert_eq!(rt.block_on(c.current()).unwrap().checkpoint.size, 4);

    // A smaller tree: a rollback, caught across a restart from DATA/checkpoint.
    drop(c);
    let smaller = state.lock().unwrap().note(2, false);
    state.lock().unwrap().checkpoint = Some(smaller);
    let c = checkpoints(dir.path(), &url, &state);
    let err = c.refresh().unwrap_err();
    assert!(
        matches!(&err, Failure::Forked(m) if m.contains("rolled back")),
        "{err:?}"
    );

    // A larger tree that is not consistent with the accepted one.
    std::fs::remove_file(dir.path().join("fork")).unwrap();
    c.unlatch_if_cleared().unwrap().unwrap();
    let mut s = state.lock().unwrap();
    s.entries.push(entry(&a, &p, 10));
    let mut forked_tree = s.entries.clone();
    forked_tree[0] = entry(&a, &p, 42);
    let honest = std::mem::replace(&mut s.entries, forked_tree);
    s.checkpoint = None;
    drop(s);
    let err = c.refresh().unwrap_err();
    assert!(
        matches!(&err, Failure::Forked(m) if m.contains("not consistent")),
        "{err:?}"
    );
    state.lock().unwrap().entries = honest;

    // An unreachable log denies, and latches nothing.
    std::fs::remove_file(dir.path().join("fork")).unwrap();
    c.unlatch_if_cleared().unwrap().unwrap();
    let dead = checkpoints(dir.path(), "http://127.0.0.1:9", &state);
    assert!(matches!(dead.refresh(), Err(Failure::Log(_))));
    assert!(dead.forked().is_none());
}
