//! The `reprolog` command as scripts use it: `--json` on every log-facing command with the one
//! verdict vocabulary, documented exit codes, look-ups that find nothing said plainly, errors a
//! person can act on, and state files where the command says.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use reprolog_tests::{show, synthetic_narinfo, workspace_bin, write_builders, Server};
use reprolog_verifier::nix::{NarInfo, NixSecretKey};
use serde_json::Value;

/// Runs `reprolog` with its state and config under `home`, never in the caller's.
fn reprolog_in(home: &Path, args: &[&str]) -> Output {
    Command::new(workspace_bin("reprolog"))
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(out)))
}

/// Writes narinfos into a `file://` cache directory; returns its URL.
fn cache(dir: &Path, narinfos: &[String]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for text in narinfos {
        let info = NarInfo::parse(text).unwrap();
        let name = format!("{}.narinfo", info.store_path.hash_part());
        std::fs::write(dir.join(name), text).unwrap();
    }
    format!("file://{}", dir.display())
}

fn store_path(narinfo: &str) -> String {
    NarInfo::parse(narinfo).unwrap().store_path.to_string()
}

/// A log with two registered builders; a third key is not registered.
struct Setup {
    _dir: tempfile::TempDir,
    home: std::path::PathBuf,
    server: Server,
    /// The log's size at start: the registrations of the two builders' keys, logged before
    /// any submission is taken (spec/entry.md, "Key events").
    key_events: u64,
    b1: NixSecretKey,
    b2: NixSecretKey,
    stranger: NixSecretKey,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (b1, b2) = (
        NixSecretKey::from_seed("builder-1", [1; 32]),
        NixSecretKey::from_seed("builder-2", [2; 32]),
    );
    let data = dir.path().join("data");
    write_builders(
        &data,
        &[b1.public_key().to_string(), b2.public_key().to_string()],
    );
    let server = Server::start(&data, &["--checkpoint-interval-ms", "50"]);
    let key_events = server.metric("reprolog_tree_size").unwrap() as u64;
    assert_eq!(key_events, 2, "one key event per key of the builders file");
    // The default policy, where the commands look when given no --policy.
    let config = home.join("config/reprolog");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("policy"),
        format!(
            "log {} {}\nquorum none\n",
            server.verifier_key(),
            server.url
        ),
    )
    .unwrap();
    Setup {
        _dir: dir,
        home,
        server,
        key_events,
        b1,
        b2,
        stranger: NixSecretKey::from_seed("stranger", [3; 32]),
    }
}

#[test]
fn every_log_facing_command_speaks_json_with_one_vocabulary_and_exit_codes() {
    let s = setup();
    let home = &s.home;
    let base = s.key_events;
    // Path 0 reproduced by both builders; path 1 built differently; path 2 by builder-1 only;
    // path 3 signed only by a key the log does not know.
    let one = [
        synthetic_narinfo(&s.b1, "p", 0, 0),
        synthetic_narinfo(&s.b1, "p", 1, 0),
        synthetic_narinfo(&s.b1, "p", 2, 0),
    ];
    let two = [
        synthetic_narinfo(&s.b2, "p", 0, 0),
        synthetic_narinfo(&s.b2, "p", 1, 1),
        synthetic_narinfo(&s.stranger, "p", 3, 0),
    ];
    let c1 = cache(&home.join("c1"), &one);
    let c2 = cache(&home.join("c2"), &two);
    let log = s.server.url.as_str();

    let out = reprolog_in(home, &["ingest", "--log", log, "--json", &c1, &c2]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = json(&out);
    assert_eq!(
        (&report["logged"], &report["ignored"], &report["failed"]),
        (&Value::from(5), &Value::from(1), &Value::from(0))
    );
    // Which signature was ignored, and why.
    let ignored = &report["ignored_signatures"][0];
    assert_eq!(ignored["store_path"], store_path(&two[2]).as_str());
    assert_eq!(ignored["key"], "stranger");
    assert!(
        ignored["reason"]
            .as_str()
            .unwrap()
            .contains("not a registered builder"),
        "{report}"
    );
    // The state file went where the command said, not into the working directory.
    let state = home.join("state/reprolog/ingest.state");
    assert!(show(&out).contains(&format!("state: {}", state.display())));
    assert!(state.exists());
    assert!(!home.join("reprolog-ingest.state").exists());
    s.server.wait_for_checkpoint(base + 5);

    // compare --json: the four verdict words, and 2 for "unreproduced".
    let paths: Vec<String> = [&one[0], &one[1], &one[2], &two[2]]
        .iter()
        .map(|n| store_path(n))
        .collect();
    let mut args = vec!["compare", "--json"];
    args.extend(paths.iter().map(String::as_str));
    let out = reprolog_in(home, &args);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let report = json(&out);
    let verdicts: Vec<&str> = report["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        ["reproduced", "unreproduced", "one-builder", "not-logged"]
    );
    let summary = &report["summary"];
    assert_eq!(summary["not_logged"], 1);
    assert_eq!(summary["reproducibility"], 0.5);

    // A path that is not in the log is never a silent success: exit 3, said plainly.
    let out = reprolog_in(home, &["compare", &paths[3]]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(show(&out).contains(&format!("{}: not-logged", paths[3])));
    // Nor is a builder name nobody has.
    let out = reprolog_in(home, &["compare", "--builders", "nobody", &paths[0]]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).contains("no builder named nobody") && show(&out).contains("builder-1"),
        "{}",
        show(&out)
    );
    // A known builder alone: its paths are one-builder, and nothing disagrees.
    let out = reprolog_in(home, &["compare", "--builders", "builder-1", &paths[0]]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // verify --json: logged with its builders; a narinfo not in the log is 3.
    let file = |name: &str, text: &str| {
        let f = home.join(name);
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_owned()
    };
    let (logged, absent) = (file("a.narinfo", &one[1]), file("b.narinfo", &two[2]));
    let out = reprolog_in(home, &["verify", "--json", &logged]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = json(&out);
    assert_eq!(report[0]["verdict"], "logged");
    assert_eq!(report[0]["logged"][0]["builder"], "builder-1");
    let out = reprolog_in(home, &["verify", "--json", &absent]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(json(&out)[0]["verdict"], "not-logged");

    // checkpoint verify and log info: the same JSON shape.
    let out = reprolog_in(home, &["checkpoint", "verify", "--json", log]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let checkpoint = json(&out);
    assert_eq!(checkpoint["ok"], true);
    assert_eq!(checkpoint["size"], base + 5);
    let out = reprolog_in(home, &["log", "info", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(json(&out)["root"], checkpoint["root"]);

    // entry and path: shown only once proven. The second signing entry, after the key events.
    let index = base + 1;
    let out = reprolog_in(home, &["entry", "--json", &index.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let entry = json(&out);
    assert_eq!(entry["index"], index);
    assert_eq!(entry["proven_in"]["checkpoint_size"], base + 5);
    let out = reprolog_in(home, &["entry", "99"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = reprolog_in(home, &["path", "--json", &paths[1]]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let path = json(&out);
    assert_eq!(path["verdict"], "unreproduced");
    assert_eq!(path["claims"].as_array().unwrap().len(), 2);
    let out = reprolog_in(home, &["path", &paths[3]]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(show(&out).contains("not-logged"), "{}", show(&out));

    // Bad arguments have their own exit code, apart from the verdicts.
    let out = reprolog_in(home, &["compare", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
}

#[test]
fn the_monitor_keeps_a_small_state_and_can_fail_on_conflicts() {
    let s = setup();
    let home = &s.home;
    let base = s.key_events;
    let many: Vec<String> = (0..600)
        .map(|i| synthetic_narinfo(&s.b1, "m", i, 0))
        .collect();
    let c1 = cache(&home.join("c1"), &many);
    let log = s.server.url.as_str();
    let out = reprolog_in(home, &["ingest", "--log", log, &c1]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    s.server.wait_for_checkpoint(base + 600);

    // Every entry of the log is checked, the key events too.
    let out = reprolog_in(home, &["monitor", "--once", "--json", "--fail-on-conflict"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(json(&out)["new_entries"], base + 600);
    let state_dir = home.join("state/reprolog");
    let state = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("monitor-")
        })
        .expect("the monitor's state file, under XDG_STATE_HOME");
    let size = std::fs::metadata(&state).unwrap().len();
    // The origin, the size and at most 64 edge hashes: not one byte per path.
    assert!(size < 1024, "the monitor's state is {size} bytes");

    // builder-2 disagrees about an old path: the next check finds it, proves the earlier
    // entry, and fails as asked.
    let c2 = cache(&home.join("c2"), &[synthetic_narinfo(&s.b2, "m", 7, 1)]);
    let out = reprolog_in(home, &["ingest", "--log", log, &c2]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    s.server.wait_for_checkpoint(base + 601);
    let out = reprolog_in(home, &["monitor", "--once", "--json", "--fail-on-conflict"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let report = json(&out);
    let conflict = &report["conflicts"][0];
    assert_eq!(conflict["index"], base + 600);
    assert_eq!(conflict["store_path"], store_path(&many[7]).as_str());
    assert!(conflict["other_index"].as_u64().unwrap() < base + 600);
    assert_eq!(conflict["builder"], "builder-2 (signed)");
    assert_eq!(conflict["other_builder"], "builder-1 (signed)");
    assert!(std::fs::metadata(&state).unwrap().len() < 1024);
}

#[test]
fn errors_say_what_to_do_once_and_an_unreachable_log_stops_ingest_fast() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let key = NixSecretKey::from_seed("builder-1", [1; 32]);
    let narinfos: Vec<String> = (0..600)
        .map(|i| synthetic_narinfo(&key, "u", i, 0))
        .collect();
    let c = cache(&home.join("c"), &narinfos);

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    let out = reprolog_in(home, &["ingest", "--log", &url, &c]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = show(&out);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(errors.len(), 1, "one error, not one per narinfo: {text}");
    assert!(errors[0].starts_with("error: "), "{text}");
    assert_eq!(errors[0].matches(&url).count(), 1, "the URL once: {text}");
    assert!(errors[0].contains("run again to resume"), "{text}");

    // A URL without a scheme is refused with an example, in the same style.
    let out = reprolog_in(home, &["ingest", "--log", "127.0.0.1:8400", &c]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.starts_with("error: ") && text.contains("for example http://127.0.0.1:8400"),
        "{text}"
    );
    assert!(!text.contains("RelativeUrlWithoutBase"), "{text}");

    // No policy given and none in the default place: the error says where to look.
    let out = reprolog_in(home, &["log", "info"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("spec/policy.md"), "{}", show(&out));
}

#[test]
fn decide_gives_the_gates_verdict_from_proven_claims() {
    let s = setup();
    let home = &s.home;
    let base = s.key_events;
    let one = [
        synthetic_narinfo(&s.b1, "d", 0, 0),
        synthetic_narinfo(&s.b1, "d", 1, 0),
        synthetic_narinfo(&s.b1, "d", 2, 0),
    ];
    let two = [
        synthetic_narinfo(&s.b2, "d", 0, 0),
        synthetic_narinfo(&s.b2, "d", 1, 1),
    ];
    let (c1, c2) = (cache(&home.join("c1"), &one), cache(&home.join("c2"), &two));
    let out = reprolog_in(home, &["ingest", "--log", &s.server.url, &c1, &c2]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    s.server.wait_for_checkpoint(base + 5);
    let trust = home.join("trust");
    std::fs::write(
        &trust,
        format!(
            "builder one {}\nbuilder two {}\nquorum 2\non-conflict deny\n",
            s.b1.public_key(),
            s.b2.public_key()
        ),
    )
    .unwrap();
    let trust = trust.to_str().unwrap();
    let paths: Vec<String> = one.iter().map(|n| store_path(n)).collect();

    let out = reprolog_in(home, &["decide", "--trust", trust, &paths[0]]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains("allowed: 2 trusted builders agree"),
        "{}",
        show(&out)
    );

    let mut args = vec!["decide", "--json", "--trust", trust];
    args.extend(paths.iter().map(String::as_str));
    let out = reprolog_in(home, &args);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let decisions = json(&out);
    let reasons: Vec<(&Value, &Value)> = decisions
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (&d["allowed"], &d["reason"]))
        .collect();
    assert_eq!(
        reasons,
        [
            (&Value::from(true), &Value::from("agreed")),
            (&Value::from(false), &Value::from("conflict")),
            (&Value::from(false), &Value::from("quorum-not-met")),
        ]
    );
    // The allowed claim is exactly what both builders signed.
    let claim = &decisions[0]["claim"];
    let info = NarInfo::parse(&one[0]).unwrap();
    assert_eq!(claim["nar_hash"], info.nar_hash.to_nix32().as_str());
    assert_eq!(decisions[0]["checkpoint_size"], base + 5);

    // A malformed trust file names its line.
    std::fs::write(home.join("bad-trust"), "quorum two\n").unwrap();
    let bad = home.join("bad-trust");
    let out = reprolog_in(
        home,
        &["decide", "--trust", bad.to_str().unwrap(), &paths[0]],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("line 1"), "{}", show(&out));
}
