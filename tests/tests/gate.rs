//! The substituter gate with real Nix: two builders sign real `nix-build` outputs into two
//! binary caches, a witnessed log ingests both, and `reprolog-gate` (quorum 2 over the two
//! builders, one cache over HTTP and one `file://`) lets `nix copy` substitute only what both
//! builders logged with the same NAR hash; an upstream that lies about a NAR hash, a
//! checkpoint that fails the policy and a forked checkpoint are refused; a third builder added
//! to the trust file while the gate runs brings a one-builder path to its quorum.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reprolog_tests::{narinfo_path, nix, reprolog, run_ok, show, stdout, Server, Service, Witness};
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::nix::narinfo::NixHash;
use reprolog_verifier::nix::NarInfo;
use reprolog_verifier::note::{Note, SignerKey};
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
    (file.clone(), public_of(&file))
}

fn public_of(secret: &Path) -> String {
    stdout(&run_ok({
        let mut c = nix(&["key", "convert-secret-to-public"]);
        c.stdin(std::fs::File::open(secret).unwrap());
        c
    }))
}

fn copy_signed(cache: &Path, key: &Path, paths: &[&str]) {
    run_ok({
        let mut c = nix(&["copy", "--to"]);
        c.arg(format!(
            "file://{}?compression=none&secret-key={}",
            cache.display(),
            key.display()
        ))
        .args(paths);
        c
    });
}

/// The derivations of this test, with a tag unique to the run so that no other test or run
/// shares their outputs. `stamp` writes a random id: built twice, it differs.
fn expression(tag: &str) -> String {
    let drv = |name: &str, script: &str| {
        format!(
            "{name} = derivation {{ name = \"gate-{tag}-{name}\"; system = builtins.currentSystem; \
             builder = \"/bin/sh\"; args = [ \"-c\" \"{script}\" ]; }};\n"
        )
    };
    format!(
        "rec {{\n{}{}{}{}{}{}}}\n",
        drv("dep", &format!("echo {tag} > $out")),
        drv("top", "echo ${dep} > $out"),
        drv("solo", &format!("echo solo {tag} > $out")),
        drv("lied", &format!("echo lied {tag} > $out")),
        drv("fallback", &format!("echo fallback {tag} > $out")),
        drv(
            "stamp",
            "read id < /proc/sys/kernel/random/uuid; echo $id > $out"
        ),
    )
}

fn build(file: &Path, attr: &str) -> String {
    let mut c = Command::new("nix-build");
    c.arg(file)
        .args(["-A", attr, "--no-out-link", "--option", "substituters", ""])
        .args(["--option", "sandbox", "false"]);
    stdout(&run_ok(c))
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

/// Rewrites the log's `/checkpoint` answer while set.
type Lie = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// A proxy in front of the log that passes everything through, except `/checkpoint` while a
/// lie is set: a compromised log (or a network attacker with the log's key) towards the gate.
fn switchable_proxy(upstream: String) -> (String, Arc<Mutex<Option<Lie>>>) {
    let lie: Arc<Mutex<Option<Lie>>> = Arc::new(Mutex::new(None));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let current = Arc::clone(&lie);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
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
            if path == "/checkpoint" {
                if let Some(lie) = current.lock().unwrap().clone() {
                    body = lie(&body);
                }
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
    (url, lie)
}

/// GET: status, the reason header, the body.
fn get(url: &str) -> (u16, Option<String>, String) {
    let response = match ureq::get(url).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = response.status();
    let reason = response.header("X-Reprolog-Reason").map(str::to_owned);
    let body = response.into_string().unwrap_or_default();
    (status, reason, body)
}

/// The log's size once the server has started: one `key-register` event per key of its
/// builders file, logged before any submission is taken (spec/entry.md, "Key events"), by
/// this process or by an earlier one on the same data directory.
fn key_events_at_start(server: &Server, builders: u64) -> u64 {
    let size = server.metric("reprolog_tree_size").unwrap() as u64;
    assert_eq!(size, builders, "one key event per key of the builders file");
    size
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Gate {
    service: Service,
    public_key: String,
}

impl Gate {
    fn start(data: &Path, extra: &[&str]) -> Gate {
        let service = Service::try_start("reprolog-gate", data, extra)
            .unwrap_or_else(|e| panic!("the gate did not start: {e}"));
        let public_key = std::fs::read_to_string(data.join("gate.pub")).unwrap();
        assert!(public_key.ends_with('\n'), "gate.pub ends with a newline");
        Gate {
            service,
            public_key: public_key.trim().to_owned(),
        }
    }

    fn narinfo(&self, store_path: &str) -> (u16, Option<String>, String) {
        get(&format!(
            "{}/{}.narinfo",
            self.service.url,
            &store_path[11..43]
        ))
    }

    fn decision(&self, store_path: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = get(&format!(
            "{}/api/v1/decisions/{}",
            self.service.url,
            &store_path[11..43]
        ));
        (status, serde_json::from_str(&body).unwrap_or_default())
    }

    /// `nix copy --from` the gate into a fresh store under `root`, trusting `key`.
    fn nix_copy(&self, root: &Path, key: &str, path: &str) -> Output {
        nix(&["copy", "--from", &self.service.url, "--to"])
            .arg(format!("local?root={}", root.display()))
            .args(["--option", "trusted-public-keys", key])
            // Nix remembers a missing narinfo for an hour by default; here a path's fate
            // changes within the test.
            .args(["--option", "narinfo-cache-negative-ttl", "0"])
            .args(["--option", "narinfo-cache-positive-ttl", "0"])
            .arg(path)
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&self.service.log()).into_owned()
    }
}

/// Gives `file` another NAR hash, as a cache that lies about what it serves.
fn lie_about_nar_hash(file: &Path) {
    let mut info = NarInfo::parse(&std::fs::read_to_string(file).unwrap()).unwrap();
    info.nar_hash = NixHash(Sha256::digest(b"other bytes").into());
    std::fs::write(file, info.to_text()).unwrap();
}

#[test]
fn nix_substitutes_through_the_gate_only_what_two_builders_agree_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let expr = d.join("gate.nix");
    std::fs::write(&expr, expression(&tag)).unwrap();

    // Two builders; builder 2 builds `stamp` again after deleting builder 1's output, and
    // gets other bytes. `solo` only builder 1 signs.
    let (b1_sec, b1_pub) = nix_key(d, "builder-1");
    let (b2_sec, b2_pub) = nix_key(d, "builder-2");
    let (c1, c2) = (d.join("cache1"), d.join("cache2"));
    let [dep, top, solo, lied, fallback, stamp1] =
        ["dep", "top", "solo", "lied", "fallback", "stamp"].map(|a| build(&expr, a));
    copy_signed(&c1, &b1_sec, &[&top, &solo, &lied, &fallback, &stamp1]);
    run_ok({
        let mut c = Command::new("nix-store");
        c.args(["--delete", &stamp1]);
        c
    });
    let stamp = build(&expr, "stamp");
    assert_eq!(stamp, stamp1, "an input-addressed path");
    copy_signed(&c2, &b2_sec, &[&top, &lied, &fallback, &stamp]);
    let hash_of = |cache: &Path, p: &str| {
        NarInfo::parse(&std::fs::read_to_string(narinfo_path(cache, p)).unwrap())
            .unwrap()
            .nar_hash
    };
    assert_ne!(hash_of(&c1, &stamp), hash_of(&c2, &stamp), "stamp differs");

    // A log with a witness, builders 1 and 2 registered, as in the CLI's end-to-end test.
    let log_dir = d.join("log");
    std::fs::create_dir_all(&log_dir).unwrap();
    std::fs::write(log_dir.join("builders"), format!("{b1_pub}\n{b2_pub}\n")).unwrap();
    let log_vkey = Server::start(&log_dir, &["--origin", "example.com/gate"]).verifier_key();
    let w_dir = d.join("witness");
    std::fs::create_dir_all(&w_dir).unwrap();
    std::fs::write(w_dir.join("policy"), format!("log {log_vkey}\n")).unwrap();
    let witness = Witness::start(&w_dir, &["--name", "example.com/w"]);
    std::fs::write(
        d.join("log-witnesses"),
        format!("witness w {} {}\n", witness.verifier_key(), witness.url),
    )
    .unwrap();
    let server = Server::start(
        &log_dir,
        &[
            "--policy",
            d.join("log-witnesses").to_str().unwrap(),
            "--checkpoint-interval-ms",
            "50",
        ],
    );
    // The first start registered builders 1 and 2; this one finds them in the log.
    let base = key_events_at_start(&server, 2);
    let c = |p: &Path| format!("file://{}", p.display());
    let ingest = |caches: &[&Path]| {
        let mut args = vec!["ingest".to_owned(), "--log".into(), server.url.clone()];
        args.extend([
            "--state".into(),
            d.join("ingest.state").display().to_string(),
        ]);
        args.extend(caches.iter().map(|p| c(p)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = reprolog(&args);
        assert!(out.status.success(), "{}", show(&out));
        out
    };
    let out = ingest(&[&c1, &c2]);
    assert!(show(&out).contains("logged 11,"), "{}", show(&out));

    // Both caches lie about `lied` after it was logged; only the first upstream (the HTTP
    // one) lies about `fallback`.
    lie_about_nar_hash(&narinfo_path(&c1, &lied));
    lie_about_nar_hash(&narinfo_path(&c2, &lied));
    lie_about_nar_hash(&narinfo_path(&c2, &fallback));

    // The gate: quorum 2 over builders 1 and 2; the log behind a proxy that can lie; the
    // policy requires the witness.
    let (proxy, lie) = switchable_proxy(server.url.clone());
    let policy = d.join("log-policy");
    std::fs::write(
        &policy,
        format!(
            "log {log_vkey} {proxy}\nwitness w {}\nquorum w\n",
            witness.verifier_key()
        ),
    )
    .unwrap();
    let trust = d.join("trust");
    let two = format!("builder one {b1_pub}\nbuilder two {b2_pub}\nquorum 2\n");
    std::fs::write(&trust, &two).unwrap();
    let http_cache = static_files(c2.clone());
    let gate_dir = d.join("gate");
    let gate = Gate::start(
        &gate_dir,
        &[
            "--log-policy",
            policy.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
            "--upstream",
            &http_cache,
            "--upstream",
            &c(&c1),
            "--checkpoint-interval-ms",
            "200",
        ],
    );
    // Its key is a Nix key: Nix derives the same public key from gate.sec.
    let sec = gate_dir.join("gate.sec");
    assert_eq!(public_of(&sec), gate.public_key);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sec).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(gate.public_key.starts_with("reprolog-gate-1:"));
    let (status, _, info) = get(&format!("{}/nix-cache-info", gate.service.url));
    assert_eq!(status, 200);
    assert!(
        info.contains("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: "),
        "{info}"
    );

    // Until the witness has cosigned all 11 entries (after the key events) the gate proves
    // against less.
    let ingested = base + 11;
    wait_until(
        &format!("a cosigned checkpoint of {ingested} entries at the gate"),
        Duration::from_secs(20),
        || gate.decision(&dep).1["checkpoint_size"] == ingested,
    );

    // Agreed: copied, and Nix accepts the gate's signature (and nothing else: the builders'
    // signatures were replaced).
    let store = d.join("store-1");
    let out = gate.nix_copy(&store, &b1_pub, &top);
    assert!(
        !out.status.success(),
        "copied with only a builder key trusted"
    );
    let out = gate.nix_copy(&store, &gate.public_key, &top);
    assert!(out.status.success(), "{}\n{}", show(&out), gate.log());
    for p in [&top, &dep] {
        assert_eq!(
            std::fs::read(store.join(&p[1..])).unwrap(),
            std::fs::read(p).unwrap(),
            "{p} copied"
        );
    }
    let (status, _, text) = gate.narinfo(&top);
    assert_eq!(status, 200);
    let served = NarInfo::parse(&text).unwrap();
    assert_eq!(served.sigs.len(), 1);
    assert!(served
        .sigs
        .iter()
        .next()
        .unwrap()
        .starts_with("reprolog-gate-1:"));
    assert!(served.url.starts_with("nar/0/nar/"), "{}", served.url);
    let (status, decision) = gate.decision(&top);
    assert_eq!(status, 200);
    assert_eq!(decision["allowed"], true);
    assert_eq!(decision["reason"], "agreed");
    assert_eq!(decision["agreeing"], 2);
    assert_eq!(decision["store_path"], top.as_str());
    assert_eq!(decision["builders"][1]["builder"], "two");

    // One builder only, and two builders that disagree: refused, with the reason.
    for (path, reason) in [
        (
            &solo,
            "quorum-not-met: 1 of the 2 trusted builders needed agree",
        ),
        (
            &stamp,
            "conflict: trusted builders logged 2 different claims",
        ),
    ] {
        let out = gate.nix_copy(&store, &gate.public_key, path);
        assert!(!out.status.success(), "{path} was copied");
        assert!(!store.join(&path[1..]).exists());
        let (status, header, _) = gate.narinfo(path);
        assert_eq!(status, 404);
        let header = header.expect("a reason header");
        assert!(header.starts_with(reason), "{header}");
        assert!(gate.log().contains(path.as_str()), "{}", gate.log());
    }
    let (_, decision) = gate.decision(&stamp);
    assert_eq!(decision["reason"], "conflict");
    assert_eq!(decision["allowed"], false);

    // Upstreams that serve another NAR hash than the logged claim: refused when all do;
    // served from the one that does not otherwise.
    let (status, header, _) = gate.narinfo(&lied);
    assert_eq!(status, 404);
    let header = header.unwrap();
    assert!(header.starts_with("no-matching-upstream: "), "{header}");
    assert!(header.contains("is not the decided"), "{header}");
    assert_eq!(
        gate.decision(&lied).1["allowed"],
        true,
        "the log part allows it"
    );
    assert!(!gate
        .nix_copy(&store, &gate.public_key, &lied)
        .status
        .success());
    let (status, _, text) = gate.narinfo(&fallback);
    assert_eq!(status, 200);
    assert!(
        NarInfo::parse(&text).unwrap().url.starts_with("nar/1/"),
        "{text}"
    );
    let out = gate.nix_copy(&store, &gate.public_key, &fallback);
    assert!(out.status.success(), "{}", show(&out));

    // A broken edit of the trust file keeps the last good trust, and says so once.
    std::fs::write(&trust, format!("{two}quorum 3\n")).unwrap();
    wait_until("the broken trust reported", Duration::from_secs(5), || {
        gate.log().contains("trust file not reloaded")
    });
    assert!(
        gate.log().contains("line 4: quorum is given twice"),
        "{}",
        gate.log()
    );
    assert_eq!(gate.narinfo(&top).0, 200);

    // A third builder, trusted while the gate runs, signs `solo`; once it is logged, `solo`
    // has two builders and is copied.
    let (b3_sec, b3_pub) = nix_key(d, "builder-3");
    std::fs::write(&trust, format!("{two}builder three {b3_pub}\n")).unwrap();
    wait_until("the trust reloaded", Duration::from_secs(5), || {
        gate.log().contains("trust reloaded")
    });
    std::fs::write(
        log_dir.join("builders"),
        format!("{b1_pub}\n{b2_pub}\n{b3_pub}\n"),
    )
    .unwrap();
    server.signal("HUP");
    let c3 = d.join("cache3");
    copy_signed(&c3, &b3_sec, &[&solo]);
    std::thread::sleep(Duration::from_millis(300));
    // The reloaded builders file logged builder 3's registration.
    assert_eq!(
        server.metric("reprolog_tree_size"),
        Some((ingested + 1) as f64)
    );
    let out = ingest(&[&c3]);
    assert!(show(&out).contains("logged 1,"), "{}", show(&out));
    let size = ingested + 2;
    wait_until(
        &format!("a cosigned checkpoint of {size} entries at the gate"),
        Duration::from_secs(20),
        || gate.decision(&solo).1["checkpoint_size"] == size,
    );
    let (_, decision) = gate.decision(&solo);
    assert_eq!(decision["allowed"], true, "{decision}");
    assert_eq!(decision["builders"][2]["builder"], "three");
    let out = gate.nix_copy(&store, &gate.public_key, &solo);
    assert!(out.status.success(), "{}\n{}", show(&out), gate.log());
    assert!(store.join(&solo[1..]).exists());

    // A checkpoint that fails the log policy (the log's key, but no witness): denied while it
    // is served, and allowed again after.
    let log_key = SignerKey::parse(
        std::fs::read_to_string(log_dir.join("log.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let witness_key = SignerKey::parse(
        std::fs::read_to_string(w_dir.join("witness.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let forge = move |note: &[u8], cosign: bool| -> Vec<u8> {
        let mut cp = Checkpoint::parse(Note::parse(note).unwrap().text()).unwrap();
        cp.root[0] ^= 1;
        let mut forged = Note::new(&cp.to_text()).unwrap();
        forged.sign(&log_key);
        if cosign {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            forged.add_signature(witness_key.cosign(&cp.to_text(), now));
        }
        forged.encode().into_bytes()
    };
    let forge = Arc::new(forge);
    let f = Arc::clone(&forge);
    *lie.lock().unwrap() = Some(Arc::new(move |note: &[u8]| f(note, false)));
    wait_until(
        "the unwitnessed checkpoint refused",
        Duration::from_secs(5),
        || {
            gate.narinfo(&top).1.is_some_and(|h| {
                h.starts_with(
                    "checkpoint-rejected: the log's checkpoint does not satisfy the log policy",
                )
            })
        },
    );
    *lie.lock().unwrap() = None;
    wait_until(
        "the honest checkpoint again",
        Duration::from_secs(5),
        || gate.narinfo(&top).0 == 200,
    );

    // A fork: the same size with another root, signed with the log's real key and cosigned
    // by the witness's (a log and a witness that collude, or a policy that trusts the log
    // alone). The gate denies everything, says why, and stays so when the log is honest
    // again, until the operator removes DATA/fork.
    let f = Arc::clone(&forge);
    *lie.lock().unwrap() = Some(Arc::new(move |note: &[u8]| f(note, true)));
    wait_until("the fork caught", Duration::from_secs(5), || {
        gate.narinfo(&top)
            .1
            .is_some_and(|h| h.starts_with("fork: the log forked"))
    });
    *lie.lock().unwrap() = None;
    std::thread::sleep(Duration::from_millis(500));
    for path in [&top, &dep, &solo, &fallback] {
        let (status, header, _) = gate.narinfo(path);
        assert_eq!(status, 404, "{path} served after a fork");
        let header = header.unwrap();
        assert!(
            header.starts_with(&format!(
                "fork: the log forked: its checkpoint of size {size} has another root"
            )),
            "{header}"
        );
        assert!(header.contains("removes"), "{header}");
    }
    let (status, decision) = gate.decision(&top);
    assert_eq!(status, 503);
    assert_eq!(decision["reason"], "fork");
    assert_eq!(decision["allowed"], false);
    assert!(
        gate.log().contains("FORK: the log forked"),
        "{}",
        gate.log()
    );
    assert!(!gate
        .nix_copy(&d.join("store-2"), &gate.public_key, &top)
        .status
        .success());
    assert_eq!(gate.service.metric("reprolog_gate_forked"), Some(1.0));
    let evidence = std::fs::read_to_string(gate_dir.join("fork")).unwrap();
    assert!(evidence.contains("accepted checkpoint:") && evidence.contains("served checkpoint:"));

    // The operator investigated: the accepted checkpoint was the honest one, so removing the
    // fork's evidence is enough.
    std::fs::remove_file(gate_dir.join("fork")).unwrap();
    wait_until("the latch cleared", Duration::from_secs(5), || {
        gate.narinfo(&top).0 == 200
    });
    assert_eq!(gate.service.metric("reprolog_gate_forked"), Some(0.0));
    let allowed = gate
        .service
        .metric("reprolog_gate_narinfo_requests_total{outcome=\"allowed\",reason=\"agreed\"}")
        .unwrap();
    assert!(allowed >= 5.0, "{allowed}");
    assert!(
        gate.service
            .metric("reprolog_gate_narinfo_requests_total{outcome=\"denied\",reason=\"fork\"}")
            .unwrap()
            >= 4.0
    );
}
