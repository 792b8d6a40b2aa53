//! The whole story with real Nix: two builders sign two `file://` caches, one output differs,
//! both caches are ingested into a witnessed log, and the `reprolog` commands compare, verify
//! and monitor it; then a corrupted entry and a forked checkpoint are caught.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reprolog_tests::{
    build_pair, narinfo_path, nix, reprolog, run_ok, show, stdout, Server, Witness,
};
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::nix::narinfo::NixHash;
use reprolog_verifier::nix::NarInfo;
use reprolog_verifier::note::{Note, SignerKey};
use reprolog_verifier::proof::TlogProof;
use sha2::{Digest, Sha256};

/// A Nix key pair made by Nix itself: (secret file, public key).
fn nix_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let secret = stdout(&run_ok(nix(&[
        "key",
        "generate-secret",
        "--key-name",
        name,
    ])));
    let file = dir.join(format!("{name}.sec"));
    std::fs::write(&file, &secret).unwrap();
    let public = stdout(&run_ok({
        let mut c = nix(&["key", "convert-secret-to-public"]);
        c.stdin(std::fs::File::open(&file).unwrap());
        c
    }));
    (file, public)
}

fn copy_signed(cache: &Path, key: &Path, path: &str) {
    run_ok({
        let mut c = nix(&["copy", "--to"]);
        c.arg(format!(
            "file://{}?compression=none&secret-key={}",
            cache.display(),
            key.display()
        ))
        .arg(path);
        c
    });
}

/// Rewrites a response body.
type Lie = Arc<dyn Fn(Vec<u8>) -> Vec<u8> + Send + Sync>;

/// A proxy in front of the log that can lie: it rewrites answers whose path starts with a key
/// of `lies`, to play a compromised log towards one client.
fn lying_proxy(upstream: String, lies: Vec<(String, Lie)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Headers are read and dropped: the clients here only GET.
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
            }
            let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
            let (status, mut body) = match ureq::get(&format!("{upstream}{path}")).call() {
                Ok(r) | Err(ureq::Error::Status(_, r)) => {
                    let status = r.status();
                    let mut b = Vec::new();
                    r.into_reader().read_to_end(&mut b).unwrap();
                    (status, b)
                }
                Err(_) => (502, Vec::new()),
            };
            if let Some((_, lie)) = lies
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            {
                body = lie(body);
            }
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    url
}

/// Serves the files of a directory over HTTP, as a binary cache does (404 for others).
fn static_files(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(conn.try_clone().unwrap()).read_line(&mut line);
            let name = line
                .split(' ')
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_owned();
            let (status, body) = match std::fs::read(root.join(&name)) {
                Ok(b) if !name.contains("..") => (200, b),
                _ => (404, Vec::new()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    url
}

#[test]
fn two_builders_one_difference_ingested_compared_verified_and_monitored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (dep, top) = build_pair(d, "e2e");
    let (b1_sec, b1_pub) = nix_key(d, "builder-1");
    let (b2_sec, b2_pub) = nix_key(d, "builder-2");
    let (b3_sec, _) = nix_key(d, "builder-3-unregistered");
    let (c1, c2, c3) = (d.join("cache1"), d.join("cache2"), d.join("cache3"));
    copy_signed(&c1, &b1_sec, &top);
    copy_signed(&c2, &b2_sec, &top);
    copy_signed(&c3, &b3_sec, &top);

    // Builder 2 got other bytes for `top`: the test writes that narinfo and Nix signs it.
    let top_file = narinfo_path(&c2, &top);
    let mut info = NarInfo::parse(&std::fs::read_to_string(&top_file).unwrap()).unwrap();
    info.nar_hash = NixHash(Sha256::digest(b"other bytes").into());
    info.sigs.clear();
    std::fs::write(&top_file, info.to_text()).unwrap();
    run_ok({
        let mut c = nix(&["store", "sign", "--store"]);
        c.arg(format!("file://{}", c2.display()))
            .arg("--key-file")
            .arg(&b2_sec)
            .arg(&top);
        c
    });
    assert_eq!(
        NarInfo::parse(&std::fs::read_to_string(&top_file).unwrap())
            .unwrap()
            .sigs
            .len(),
        1
    );

    // A log with a witness; builders 1 and 2 registered.
    let log_dir = d.join("log");
    std::fs::create_dir_all(&log_dir).unwrap();
    std::fs::write(log_dir.join("builders"), format!("{b1_pub}\n{b2_pub}\n")).unwrap();
    let log_vkey = Server::start(&log_dir, &["--origin", "example.com/e2e"]).verifier_key();
    let w_dir = d.join("witness");
    std::fs::create_dir_all(&w_dir).unwrap();
    std::fs::write(w_dir.join("policy"), format!("log {log_vkey}\n")).unwrap();
    let witness = Witness::start(&w_dir, &["--name", "example.com/w"]);
    std::fs::write(
        d.join("log-policy"),
        format!("witness w {} {}\n", witness.verifier_key(), witness.url),
    )
    .unwrap();
    let server = Server::start(
        &log_dir,
        &[
            "--policy",
            d.join("log-policy").to_str().unwrap(),
            "--checkpoint-interval-ms",
            "50",
        ],
    );
    // The first start registered builders 1 and 2: the log holds their key events.
    let base = server.metric("reprolog_tree_size").unwrap() as u64;
    assert_eq!(base, 2, "one key event per key of the builders file");
    let policy = d.join("policy");
    std::fs::write(
        &policy,
        format!(
            "log {log_vkey} {}\nwitness w {}\nquorum w\n",
            server.url,
            witness.verifier_key()
        ),
    )
    .unwrap();
    let policy = policy.to_str().unwrap().to_owned();

    // Ingest both caches: four signatures logged; the third cache's key is ignored.
    let state = d.join("ingest.state");
    let c = |p: &Path| format!("file://{}", p.display());
    let out = reprolog(&[
        "ingest",
        "--log",
        &server.url,
        "--state",
        state.to_str().unwrap(),
        &c(&c1),
        &c(&c2),
        &c(&c3),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        show(&out).contains("logged 4, duplicate 0, ignored 2, failed 0"),
        "{}",
        show(&out)
    );
    let again = reprolog(&[
        "ingest",
        "--log",
        &server.url,
        "--state",
        state.to_str().unwrap(),
        &c(&c1),
    ]);
    assert!(
        show(&again).contains("logged 0, duplicate 2"),
        "{}",
        show(&again)
    );
    // An interrupted run resumes where its state file says it stopped.
    let st = state.to_str().unwrap();
    std::fs::write(&state, format!("{{\"{}\": 1}}", c(&c1))).unwrap();
    let resumed = reprolog(&["ingest", "--log", &server.url, "--state", st, &c(&c1)]);
    assert!(
        show(&resumed).contains("resuming after 1 of 2"),
        "{}",
        show(&resumed)
    );
    assert!(
        show(&resumed).contains("logged 0, duplicate 1"),
        "{}",
        show(&resumed)
    );
    // An HTTP cache cannot be listed: the paths to fetch come from a file.
    let http_cache = static_files(c1.clone());
    let paths = d.join("paths");
    let missing = format!("/nix/store/{}-missing", "0".repeat(32));
    std::fs::write(&paths, format!("{top}\n{dep}\n{missing}\n")).unwrap();
    let paths = paths.to_str().unwrap();
    let out = reprolog(&[
        "ingest",
        "--log",
        &server.url,
        "--state",
        st,
        "--paths",
        paths,
        &http_cache,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).contains("logged 0, duplicate 2, ignored 0, failed 1"),
        "{}",
        show(&out)
    );
    // The key events and the four signatures.
    let size = base + 4;
    server.wait_for_checkpoint(size);
    let cosigned = || {
        let out = reprolog(&["checkpoint", "verify", "--policy", &policy, &server.url]);
        out.status.success() && show(&out).contains(&format!("at size {size}"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cosigned() {
        assert!(
            std::time::Instant::now() < deadline,
            "no cosigned checkpoint of size {size}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // compare: exactly `top` is unreproduced; exit 2.
    let out = reprolog(&["compare", "--policy", &policy, &top, &dep]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let text = show(&out);
    assert!(text.contains(&format!("{top}: unreproduced")), "{text}");
    assert!(text.contains(&format!("{dep}: reproduced")), "{text}");
    assert!(
        text.contains("reproducibility 50.0% of 2 compared"),
        "{text}"
    );
    let out = reprolog(&["compare", "--policy", &policy, "--all", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unreproduced: Vec<&str> = report["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["verdict"] == "unreproduced")
        .map(|p| p["store_path"].as_str().unwrap())
        .collect();
    assert_eq!(unreproduced, vec![top.as_str()]);
    let out = reprolog(&[
        "compare",
        "--policy",
        &policy,
        "--builders",
        "builder-1",
        &top,
        &dep,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // verify: the real narinfos are logged and proven; one by an unregistered key is not.
    let receipts = d.join("receipts");
    let n1 = narinfo_path(&c1, &top);
    let n2 = narinfo_path(&c2, &dep);
    let out = reprolog(&[
        "verify",
        "--policy",
        &policy,
        "--receipt",
        receipts.to_str().unwrap(),
        n1.to_str().unwrap(),
        n2.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let n3 = narinfo_path(&c3, &top);
    let out = reprolog(&["verify", "--policy", &policy, n3.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "not-logged: {}", show(&out));
    assert!(show(&out).contains("no signature of this narinfo is in the log"));
    let receipt = std::fs::read_dir(&receipts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let for_top = receipt
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&top[11..43]);
    let (matching, other) = if for_top { (&n1, &n2) } else { (&n2, &n1) };
    let out = reprolog(&[
        "verify-receipt",
        "--policy",
        &policy,
        receipt.to_str().unwrap(),
        matching.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let out = reprolog(&[
        "verify-receipt",
        "--policy",
        &policy,
        receipt.to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    // monitor: the honest log passes.
    let mstate = d.join("monitor.state");
    let out = reprolog(&[
        "monitor",
        "--policy",
        &policy,
        "--state",
        mstate.to_str().unwrap(),
        "--once",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    // Every entry of the log, the key events too.
    assert!(
        show(&out).contains(&format!("{size} new entries checked")),
        "{}",
        show(&out)
    );

    // A log that corrupts a stored entry: the monitor (fresh) and verify both fail.
    let corrupt: Lie = Arc::new(|body: Vec<u8>| {
        String::from_utf8(body)
            .unwrap()
            .replacen("nar-size ", "nar-size 1", 1)
            .into_bytes()
    });
    let liar = lying_proxy(
        server.url.clone(),
        vec![
            ("/tile/entries/".into(), corrupt.clone()),
            ("/api/v1/entries/".into(), corrupt),
        ],
    );
    let fresh = d.join("fresh.state");
    let out = reprolog(&[
        "monitor",
        "--log",
        &liar,
        "--policy",
        &policy,
        "--state",
        fresh.to_str().unwrap(),
        "--once",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(show(&out).contains("INVALID ENTRY"), "{}", show(&out));
    let out = reprolog(&[
        "verify",
        "--log",
        &liar,
        "--policy",
        &policy,
        n1.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    // A log that forks: same size, another root, signed with the real log key. A client whose
    // policy needs the witness refuses it outright; one that trusts the log alone is caught by
    // the monitor's memory of the last checkpoint and by the proofs.
    let log_key = SignerKey::parse(
        std::fs::read_to_string(log_dir.join("log.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let forge = move |note: &[u8]| -> String {
        let mut cp = Checkpoint::parse(Note::parse(note).unwrap().text()).unwrap();
        cp.root[0] ^= 1;
        let mut forged = Note::new(&cp.to_text()).unwrap();
        forged.sign(&log_key);
        forged.encode()
    };
    let forge = Arc::new(forge);
    let f = Arc::clone(&forge);
    let fork_checkpoint: Lie = Arc::new(move |body: Vec<u8>| f(&body).into_bytes());
    let fork_receipt: Lie = Arc::new(move |body: Vec<u8>| {
        let Ok(mut receipt) = TlogProof::parse(&body) else {
            return body;
        };
        receipt.checkpoint = forge(receipt.checkpoint.as_bytes());
        receipt.encode().into_bytes()
    });
    let forker = lying_proxy(
        server.url.clone(),
        vec![
            ("/checkpoint".into(), fork_checkpoint),
            ("/api/v1/entries/".into(), fork_receipt),
        ],
    );
    let out = reprolog(&[
        "monitor",
        "--log",
        &forker,
        "--policy",
        &policy,
        "--state",
        mstate.to_str().unwrap(),
        "--once",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains("does not satisfy the policy"),
        "{}",
        show(&out)
    );
    let log_only = d.join("log-only-policy");
    std::fs::write(&log_only, format!("log {log_vkey}\nquorum none\n")).unwrap();
    let out = reprolog(&[
        "monitor",
        "--log",
        &forker,
        "--policy",
        log_only.to_str().unwrap(),
        "--state",
        mstate.to_str().unwrap(),
        "--once",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(show(&out).contains("FORK"), "{}", show(&out));
    let out = reprolog(&[
        "verify",
        "--log",
        &forker,
        "--policy",
        log_only.to_str().unwrap(),
        n1.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}
