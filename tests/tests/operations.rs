//! The operator's side, over the real binaries: one process per data directory, metrics
//! that count what happened, logs fit for files and for machines, signals (SIGHUP reloads the
//! witness's policy, SIGTERM drains the log server), and witnesses that come back.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reprolog_tests::{
    get, metric_in, post_raw, submit, synthetic_narinfo, workspace_bin, write_builders, Server,
    Service, Witness,
};
use reprolog_verifier::checkpoint::SignedCheckpoint;
use reprolog_verifier::entry::Entry;
use reprolog_verifier::nix::{NarInfo, NixSecretKey};
use reprolog_verifier::note::{Note, SignerKey};
use reprolog_verifier::witness_request::AddCheckpoint;
use serde_json::Value;

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// The log's size once the server has started: one `key-register` event per key of its
/// builders file, logged before any submission is taken (spec/entry.md, "Key events"), by
/// this process or by an earlier one on the same data directory.
fn key_events_at_start(server: &Service, builders: u64) -> u64 {
    let size = server.metric("reprolog_tree_size").unwrap() as u64;
    assert_eq!(size, builders, "one key event per key of the builders file");
    size
}

/// A loopback port free now, for a witness that must come back at the same URL.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `bin serve` on `data` to its end; returns its exit code and stderr.
fn serve_to_the_end(bin: &str, data: &Path) -> (Option<i32>, String) {
    let out = Command::new(workspace_bin(bin))
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_data_directory_in_use_names_the_process_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    for bin in ["reprolog-server", "reprolog-witness"] {
        let data = dir.path().join(bin);
        let first = Service::try_start(bin, &data, &[]).unwrap();
        let (code, stderr) = serve_to_the_end(bin, &data);
        assert_ne!(code, Some(0), "{stderr}");
        let want = format!(
            "{} is in use by another {bin} (pid {})",
            data.display(),
            first.pid()
        );
        assert!(stderr.contains(&want), "{bin}: {stderr}");
        assert!(!stderr.contains("sled"), "{stderr}");
        // The first one is unharmed; once it is gone the directory is free again, even
        // though it died by SIGKILL and left its pid in the lock file.
        assert_eq!(get(&format!("{}/metrics", first.url)).0, 200);
        drop(first);
        let second = Service::try_start(bin, &data, &[]).unwrap();
        let pid = std::fs::read_to_string(data.join("lock")).unwrap();
        assert_eq!(pid.trim(), second.pid().to_string());
    }
}

/// A narinfo signed by several keys.
fn signed_by(tag: &str, i: u64, variant: u64, keys: &[&NixSecretKey]) -> String {
    let mut info = NarInfo::parse(&synthetic_narinfo(keys[0], tag, i, variant)).unwrap();
    for k in &keys[1..] {
        info.sign(k);
    }
    info.to_text()
}

#[test]
fn metrics_count_builders_witnesses_and_disagreements_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let b1 = NixSecretKey::from_seed("builder-1", [1; 32]);
    let b2 = NixSecretKey::from_seed("builder-2", [2; 32]);
    // A name that needs escaping in a label; builder names come from the operator's file.
    let odd = NixSecretKey::from_seed("odd\"name\\x", [3; 32]);
    write_builders(
        &log_dir,
        &[
            b1.public_key().to_string(),
            b2.public_key().to_string(),
            odd.public_key().to_string(),
        ],
    );
    let origin = "example.com/reprolog-ops";
    let log_vkey = Server::start(&log_dir, &["--origin", origin]).verifier_key();
    let w_dir = dir.path().join("w0");
    std::fs::create_dir_all(&w_dir).unwrap();
    std::fs::write(w_dir.join("policy"), format!("log {log_vkey}\n")).unwrap();
    let w0 = Witness::start(&w_dir, &["--name", "example.com/w0"]);
    let down = SignerKey::from_seed("example.com/down", [5; 32])
        .unwrap()
        .cosignature_verifier_key();
    std::fs::write(
        dir.path().join("log-policy"),
        format!(
            "witness w0 {} {}\nwitness down {down} http://127.0.0.1:1\n",
            w0.verifier_key(),
            w0.url
        ),
    )
    .unwrap();
    // No idle re-asking here, so that every request is one of a checkpoint's.
    let server = Server::start(
        &log_dir,
        &[
            "--policy",
            dir.path().join("log-policy").to_str().unwrap(),
            "--checkpoint-interval-ms",
            "50",
            "--witness-retry-ms",
            "600000",
        ],
    );
    // The first start above registered the three keys; this one finds them in the log.
    let base = key_events_at_start(&server, 3);

    // builder-1 logs paths 0..3; builder-2 agrees on path 1 and disagrees on path 0; the odd
    // name logs path 5.
    for i in 0..3 {
        assert_eq!(submit(&server, &synthetic_narinfo(&b1, "ops", i, 0)).0, 200);
    }
    assert_eq!(submit(&server, &synthetic_narinfo(&b2, "ops", 1, 0)).0, 200);
    assert_eq!(submit(&server, &synthetic_narinfo(&b2, "ops", 0, 7)).0, 200);
    // The same event again is a duplicate: neither logged nor a second disagreement.
    assert_eq!(submit(&server, &synthetic_narinfo(&b2, "ops", 0, 7)).0, 200);
    assert_eq!(
        submit(&server, &synthetic_narinfo(&odd, "ops", 5, 0)).0,
        200
    );
    // A signature under builder-2's name by another key, and one by an unregistered name,
    // beside a valid one.
    let forger = NixSecretKey::from_seed("builder-2", [66; 32]);
    let intruder = NixSecretKey::from_seed("intruder-7f3a", [77; 32]);
    let (status, a) = submit(&server, &signed_by("ops", 6, 0, &[&b1, &forger, &intruder]));
    assert_eq!(status, 200, "{a}");
    // A request with only the forged signature is refused as a whole, and still counted.
    assert_eq!(
        submit(&server, &synthetic_narinfo(&forger, "ops", 7, 0)).0,
        422
    );
    server.wait_for_checkpoint(base + 7);
    // The checkpoint is published after both witnesses were asked; nothing asks after it.
    std::thread::sleep(Duration::from_millis(300));

    let page = server.metrics();
    let m = |series: &str| {
        metric_in(&page, series).unwrap_or_else(|| panic!("no {series} in\n{page}")) as u64
    };
    // Counted since this process started: the key events were logged by the first one.
    assert_eq!(m("reprolog_entries_logged_total"), 7);
    assert_eq!(
        m("reprolog_builder_entries_logged_total{builder=\"builder-1\"}"),
        4
    );
    assert_eq!(
        m("reprolog_builder_entries_logged_total{builder=\"builder-2\"}"),
        2
    );
    assert_eq!(
        m("reprolog_builder_entries_logged_total{builder=\"odd\\\"name\\\\x\"}"),
        1
    );
    assert_eq!(
        m("reprolog_builder_signatures_refused_total{builder=\"builder-2\"}"),
        2
    );
    assert_eq!(
        m("reprolog_builder_signatures_refused_total{builder=\"builder-1\"}"),
        0
    );
    assert_eq!(m("reprolog_disagreements_total"), 1);
    assert!(!page.contains("intruder"), "{page}");
    assert_eq!(m("reprolog_submissions_total"), 9);
    assert_eq!(m("reprolog_submissions_in_flight"), 0);

    // Each checkpoint asked each witness once: w0 always answered, `down` never did.
    let checkpoints = m("reprolog_checkpoints_published_total");
    assert!(checkpoints >= 1, "{page}");
    for (witness, received) in [("w0", checkpoints), ("down", 0)] {
        let series = |name: &str| m(&format!("{name}{{witness=\"{witness}\"}}"));
        assert_eq!(
            series("reprolog_witness_cosignatures_requested_total"),
            checkpoints,
            "{witness}"
        );
        assert_eq!(
            series("reprolog_witness_cosignatures_received_total"),
            received
        );
        assert_eq!(
            series("reprolog_witness_cosignatures_failed_total"),
            checkpoints - received
        );
        assert_eq!(
            series("reprolog_witness_request_seconds_count"),
            checkpoints
        );
    }

    // The witness: one new checkpoint per log checkpoint after the first (the size the server
    // started at, which it cosigned as well), then a conflict and a log it does not know, sent
    // by hand.
    let wm = |series: &str| w0.metric(series).unwrap_or_else(|| panic!("no {series}")) as u64;
    let label = format!("{{log=\"{origin}\"}}");
    assert_eq!(
        wm(&format!(
            "reprolog_witness_checkpoints_cosigned_total{label}"
        )),
        checkpoints
    );
    assert_eq!(
        wm(&format!("reprolog_witness_checkpoint_size{label}")),
        base + 7
    );
    let requests = wm("reprolog_witness_add_checkpoint_requests_total");
    assert_eq!(requests, checkpoints);
    let (_, note) = get(&format!("{}/checkpoint", server.url));
    let stale = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        checkpoint: String::from_utf8(note).unwrap(),
    };
    let add = |body: String| {
        post_raw(
            &format!("{}/add-checkpoint", w0.url),
            "text/plain",
            body.as_bytes(),
        )
        .0
    };
    assert_eq!(add(stale.encode()), 409);
    let stranger = SignerKey::from_seed("example.com/unknown-log", [9; 32]).unwrap();
    let mut unknown =
        Note::new("example.com/unknown-log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
            .unwrap();
    unknown.sign(&stranger);
    let unknown = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        checkpoint: unknown.encode(),
    };
    assert_eq!(add(unknown.encode()), 404);
    let refused = |reason: &str| {
        wm(&format!(
            "reprolog_witness_add_checkpoint_refused_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(refused("conflict"), 1);
    assert_eq!(refused("unknown_log"), 1);
    assert_eq!(refused("fork"), 0);
    assert_eq!(
        wm("reprolog_witness_add_checkpoint_requests_total"),
        requests + 2
    );
    assert_eq!(
        wm("reprolog_witness_add_checkpoint_accepted_total"),
        requests
    );
    assert!(!w0.metrics().contains("unknown-log"));
}

#[test]
fn sighup_makes_the_witness_take_a_new_policy_and_a_broken_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = SignerKey::from_seed("example.com/log-hup", [4; 32]).unwrap();
    std::fs::write(dir.path().join("policy"), "# no logs yet\n").unwrap();
    let mut w = Witness::start(dir.path(), &["--name", "example.com/w-hup"]);
    let mut note =
        Note::new("example.com/log-hup\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
            .unwrap();
    note.sign(&log);
    let body = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        checkpoint: note.encode(),
    }
    .encode();
    let url = format!("{}/add-checkpoint", w.url);
    let add = || post_raw(&url, "text/plain", body.as_bytes()).0;
    assert_eq!(add(), 404, "a log outside the policy");

    std::fs::write(
        dir.path().join("policy"),
        format!("# no logs yet\nlog {}\n", log.verifier_key()),
    )
    .unwrap();
    w.signal("HUP");
    wait_for("the new policy", Duration::from_secs(10), || add() == 200);
    assert_eq!(
        w.wait_exit(Duration::ZERO),
        None,
        "SIGHUP ended the witness"
    );
    assert_eq!(w.metric("reprolog_witness_policy_reloads_total"), Some(1.0));
    assert_eq!(w.metric("reprolog_witness_logs"), Some(1.0));

    // A policy that does not parse: reported once, and the one in force stays.
    std::fs::write(dir.path().join("policy"), "log not-a-key\n").unwrap();
    w.signal("HUP");
    wait_for("the failed reload", Duration::from_secs(10), || {
        w.metric("reprolog_witness_policy_reloads_failed_total") == Some(1.0)
    });
    assert_eq!(add(), 200, "the policy before stays in force");
    assert_eq!(w.wait_exit(Duration::ZERO), None);
    let log_text = String::from_utf8(w.log()).unwrap();
    assert_eq!(
        log_text.matches("policy not reloaded").count(),
        1,
        "{log_text}"
    );
}

#[test]
fn a_witness_that_comes_back_cosigns_the_current_checkpoint_without_a_new_entry() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NixSecretKey::from_seed("builder-1", [1; 32]);
    let log_dir = dir.path().join("log");
    write_builders(&log_dir, &[builder.public_key().to_string()]);
    let log_vkey =
        Server::start(&log_dir, &["--origin", "example.com/reprolog-back"]).verifier_key();
    let w_dir = dir.path().join("w");
    std::fs::create_dir_all(&w_dir).unwrap();
    std::fs::write(w_dir.join("policy"), format!("log {log_vkey}\n")).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut w = Witness::start_on(&w_dir, &listen, &["--name", "example.com/w-back"]);
    let wkey = w.verifier_key();
    std::fs::write(
        dir.path().join("log-policy"),
        format!("witness w {wkey} http://{listen}\n"),
    )
    .unwrap();
    // The default re-asking interval, as an operator would run it.
    let server = Server::start(
        &log_dir,
        &[
            "--policy",
            dir.path().join("log-policy").to_str().unwrap(),
            "--checkpoint-interval-ms",
            "50",
        ],
    );
    // The first start above registered the key; this one finds it in the log.
    let base = key_events_at_start(&server, 1);
    let cosigned_at = |size: u64| {
        let (_, body) = get(&format!("{}/checkpoint", server.url));
        SignedCheckpoint::open(&body, &log_vkey, std::slice::from_ref(&wkey))
            .is_ok_and(|c| c.checkpoint.size == size && c.verified.iter().any(|v| v.key == wkey))
    };
    assert_eq!(
        submit(&server, &synthetic_narinfo(&builder, "back", 0, 0)).0,
        200
    );
    wait_for(
        &format!("a cosigned checkpoint of size {}", base + 1),
        Duration::from_secs(10),
        || cosigned_at(base + 1),
    );

    w.kill();
    for i in 1..4 {
        assert_eq!(
            submit(&server, &synthetic_narinfo(&builder, "back", i, 0)).0,
            200
        );
    }
    server.wait_for_checkpoint(base + 4);
    assert!(!cosigned_at(base + 4), "cosigned by a witness that is down");

    let w = Witness::start_on(&w_dir, &listen, &[]);
    let took = wait_for(
        "the returning witness's cosignature",
        Duration::from_secs(10),
        || cosigned_at(base + 4),
    );
    eprintln!("cosigned {took:?} after the witness came back");
    assert_eq!(
        server.checkpoint().checkpoint.size,
        base + 4,
        "no entry was added"
    );
    let log_text = String::from_utf8(server.log()).unwrap();
    assert!(log_text.contains("witness w cosigns again"), "{log_text}");
    drop(w);
}

#[test]
fn sigterm_drains_submissions_keeps_every_acknowledged_entry_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let key = NixSecretKey::from_seed("drain", [8; 32]);
    write_builders(dir.path(), &[key.public_key().to_string()]);
    let mut server = Server::start(dir.path(), &["--checkpoint-interval-ms", "20"]);
    let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let submitters: Vec<_> = (0..4u64)
        .map(|t| {
            let (url, key, acked, stop) = (
                server.url.clone(),
                key.clone(),
                Arc::clone(&acked),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut i = t * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let body: Vec<String> = (i..i + 8)
                        .map(|n| synthetic_narinfo(&key, "drain", n, 0))
                        .collect();
                    i += 8;
                    let r = ureq::post(&format!("{url}/api/v1/narinfo"))
                        .set("Content-Type", "text/x-nix-narinfo")
                        .send_string(&body.join("\n"));
                    // Refused connections end the stream: the server stopped accepting.
                    let Ok(r) = r else { break };
                    let a: Value = serde_json::from_reader(r.into_reader()).unwrap();
                    let mut acked = acked.lock().unwrap();
                    for info in a["narinfos"].as_array().unwrap() {
                        let s = &info["signatures"][0];
                        assert_eq!(s["status"], "logged", "{a}");
                        acked.push((
                            s["index"].as_u64().unwrap(),
                            info["store_path"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
            })
        })
        .collect();
    wait_for("submissions", Duration::from_secs(10), || {
        acked.lock().unwrap().len() > 200
    });
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits after SIGTERM");
    stop.store(true, Ordering::Relaxed);
    for s in submitters {
        s.join().unwrap();
    }
    assert_eq!(status.code(), Some(0), "{status}");

    let log_text = String::from_utf8(server.log()).unwrap();
    let drained = log_text
        .lines()
        .find(|l| l.contains("drained"))
        .unwrap_or_else(|| panic!("no drain message in\n{log_text}"));
    // "drained N submissions; the log is durable at size S, and its latest checkpoint is at
    // size C": the last checkpoint covers everything durable.
    let numbers: Vec<u64> = drained
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (durable, checkpoint) = (numbers[numbers.len() - 2], numbers[numbers.len() - 1]);
    assert_eq!(durable, checkpoint, "{drained}");
    let acked = acked.lock().unwrap().clone();
    let highest = acked.iter().map(|(i, _)| *i).max().unwrap();
    assert!(durable > highest, "{drained}; acknowledged index {highest}");
    assert!(!server.log().contains(&0x1b), "ANSI codes in the log file");
    drop(server);

    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.checkpoint().checkpoint.size, checkpoint);
    for (index, store_path) in &acked {
        let (status, body) = get(&format!("{}/api/v1/entries/{index}", server.url));
        assert_eq!(status, 200, "acknowledged entry {index} lost");
        let e: Value = serde_json::from_slice(&body).unwrap();
        let entry = Entry::decode(e["entry"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(entry.store_path.as_str(), store_path, "entry {index}");
    }
    eprintln!("{} acknowledged entries kept; {drained}", acked.len());
}

#[test]
fn logs_are_plain_text_in_a_file_and_json_lines_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let key = NixSecretKey::from_seed("log-format", [6; 32]);
    for (bin, format) in [
        ("reprolog-server", "text"),
        ("reprolog-server", "json"),
        ("reprolog-witness", "text"),
        ("reprolog-witness", "json"),
    ] {
        let data = dir.path().join(format!("{bin}-{format}"));
        if bin == "reprolog-server" {
            write_builders(&data, &[key.public_key().to_string()]);
        }
        let mut service = Service::try_start(bin, &data, &["--log-format", format]).unwrap();
        // The server's log ends at its key event and the one narinfo below.
        let mut durable = 0;
        if bin == "reprolog-server" {
            durable = key_events_at_start(&service, 1) + 1;
            let body = synthetic_narinfo(&key, "fmt", 0, 0);
            let (status, _) = post_raw(
                &format!("{}/api/v1/narinfo", service.url),
                "text/x-nix-narinfo",
                body.as_bytes(),
            );
            assert_eq!(status, 200);
        }
        service.signal("TERM");
        let status = service.wait_exit(Duration::from_secs(30));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{bin} {format}");
        let log = service.log();
        assert!(!log.contains(&0x1b), "{bin}: ANSI codes in a log file");
        let text = String::from_utf8(log).unwrap();
        let last = match bin {
            "reprolog-server" => {
                format!("drained 0 submissions; the log is durable at size {durable}")
            }
            _ => "SIGTERM received".to_owned(),
        };
        assert!(text.contains(&last), "{bin} {format}: {text}");
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        if format == "json" {
            for line in &lines {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{bin}: not JSON ({e}): {line}"));
                assert!(v["message"].is_string(), "{line}");
                assert!(
                    v["level"].is_string() && v["timestamp"].is_string(),
                    "{line}"
                );
            }
        } else {
            assert!(lines.iter().all(|l| !l.starts_with('{')), "{text}");
            assert!(lines.iter().any(|l| l.contains(" INFO ")), "{text}");
        }
    }
}
