//! `reprolog hook` as Nix's real post-build hook (Nix 2.8, no daemon): two builders build the
//! same derivations, each attesting what it built; the log tells a reproducible output from
//! one that is not, from build attestations alone; a copied path is never attested; a log that
//! is down never fails or stalls a build, and `hook flush` sends what waited.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use reprolog_tests::{
    get_json, nix, run_ok, stdout, workspace_bin, write_builders, Server, Service,
};

/// One builder: its key, the hook's configuration and the script Nix runs.
struct Builder {
    key: PathBuf,
    config: PathBuf,
    hook: PathBuf,
    public: String,
    spool: PathBuf,
}

fn builder(dir: &Path, name: &str, log: &str) -> Builder {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let secret = stdout(&run_ok(nix(&[
        "key",
        "generate-secret",
        "--key-name",
        name,
    ])));
    let key = home.join("key.sec");
    std::fs::write(&key, secret).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let public = stdout(&run_ok({
        let mut c = nix(&["key", "convert-secret-to-public"]);
        c.stdin(std::fs::File::open(&key).unwrap());
        c
    }));
    let spool = home.join("spool");
    let config = home.join("hook.conf");
    std::fs::write(
        &config,
        format!(
            "# the hook's configuration\nlog {log}\nkey-file {}\nspool {}\n",
            key.display(),
            spool.display()
        ),
    )
    .unwrap();
    let hook = home.join("post-build-hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexport REPROLOG_HOOK_CONFIG={}\nexec {} hook\n",
            config.display(),
            workspace_bin("reprolog").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Builder {
        key,
        config,
        hook,
        public,
        spool,
    }
}

/// A file of two derivations, named by `tag` so that no other test shares their outputs:
/// `same` always builds the same bytes, `random` never does.
fn derivations(dir: &Path, tag: &str) -> PathBuf {
    let file = dir.join(format!("{tag}.nix"));
    std::fs::write(
        &file,
        format!(
            r#"{{
  same = derivation {{ name = "hook-{tag}-same"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "echo {tag} > $out" ]; }};
  random = derivation {{ name = "hook-{tag}-random"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "read id < /proc/sys/kernel/random/uuid; echo $id > $out" ]; }};
}}"#
        ),
    )
    .unwrap();
    file
}

/// `nix-build` with the builder's hook; returns the output paths and how long it took.
fn build(file: &Path, b: &Builder) -> (Vec<String>, Duration, Output) {
    let start = Instant::now();
    let out = Command::new("nix-build")
        .arg(file)
        .args(["--no-out-link", "--option", "substituters", ""])
        .args([
            "--option",
            "sandbox",
            "false",
            "--option",
            "post-build-hook",
        ])
        .arg(&b.hook)
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (paths, took, out)
}

/// Attestations waiting in a builder's spool.
fn spooled(b: &Builder) -> usize {
    std::fs::read_dir(&b.spool).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count()
    })
}

fn delete(paths: &[String]) {
    run_ok({
        let mut c = Command::new("nix-store");
        c.arg("--delete").args(paths);
        c
    });
}

fn reprolog(args: &[&str], config: &Path) -> Output {
    Command::new(workspace_bin("reprolog"))
        .args(args)
        .env("REPROLOG_HOOK_CONFIG", config)
        .output()
        .unwrap()
}

/// The log's size once it has read the builders file: one `key-register` event per key the
/// file lists, logged before any submission by those keys is taken (spec/entry.md, "Key
/// events").
fn key_events_logged(server: &Server, builders: u64) -> u64 {
    let size = server.metric("reprolog_tree_size").unwrap() as u64;
    assert_eq!(size, builders, "one key event per key of the builders file");
    size
}

fn build_entries(server: &Server, path: &str) -> Vec<serde_json::Value> {
    let hash_part = &path[11..43];
    let (status, page) = get_json(&format!("{}/api/v1/paths/{hash_part}", server.url));
    if status == 404 {
        return Vec::new();
    }
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "build")
        .cloned()
        .collect()
}

#[test]
fn two_builders_attest_their_builds_and_the_log_tells_reproduced_from_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("log");
    let tag = format!("t{}", std::process::id());
    // The log's address is known before it starts: the builders' configuration names it.
    let server = Server::start(&data, &["--checkpoint-interval-ms", "50"]);
    let b1 = builder(dir.path(), "builder-1", &server.url);
    let b2 = builder(dir.path(), "builder-2", &server.url);
    write_builders(&data, &[b1.public.clone(), b2.public.clone()]);
    std::thread::sleep(Duration::from_millis(1200)); // the builders file is re-read each second
    let base = key_events_logged(&server, 2);

    let file = derivations(dir.path(), &tag);
    let (paths, _, _) = build(&file, &b1);
    let [random, same] = [paths[0].clone(), paths[1].clone()];
    assert!(
        random.ends_with("-random") && same.ends_with("-same"),
        "{paths:?}"
    );
    delete(&paths);
    let (again, _, _) = build(&file, &b2);
    assert_eq!(again, paths);

    for path in [&random, &same] {
        let entries = build_entries(&server, path);
        let builders: Vec<&str> = entries
            .iter()
            .map(|e| e["builder"].as_str().unwrap().split(':').next().unwrap())
            .collect();
        assert_eq!(builders, ["builder-1", "builder-2"], "{path}");
    }
    // Two paths, each built by both builders, after the key events.
    server.wait_for_checkpoint(base + 4);
    let policy = dir.path().join("policy");
    std::fs::write(
        &policy,
        format!(
            "log {} {}\nquorum none\n",
            server.verifier_key(),
            server.url
        ),
    )
    .unwrap();
    let out = Command::new(workspace_bin("reprolog"))
        .args([
            "compare",
            "--policy",
            policy.to_str().unwrap(),
            &random,
            &same,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains(&format!("{random}: unreproduced")), "{text}");
    assert!(text.contains(&format!("{same}: reproduced")), "{text}");
    assert_eq!(spooled(&b1), 0, "nothing left to send");

    // Builder 1 also signs, for its cache, the outputs now in the store: builder 2's builds.
    // For `random` its signature then disagrees with its own build attestation.
    let cache = dir.path().join("cache-1");
    run_ok(nix(&[
        "copy",
        "--to",
        &format!(
            "file://{}?compression=none&secret-key={}",
            cache.display(),
            b1.key.display()
        ),
        &random,
        &same,
    ]));
    let ingest = Command::new(workspace_bin("reprolog"))
        .args(["ingest", "--log", &server.url, "--state"])
        .arg(dir.path().join("ingest.state"))
        .arg(format!("file://{}", cache.display()))
        .output()
        .unwrap();
    assert!(
        ingest.status.success(),
        "{}",
        String::from_utf8_lossy(&ingest.stderr)
    );
    server.wait_for_checkpoint(base + 6);
    let compare = |extra: &[&str]| -> serde_json::Value {
        let out = Command::new(workspace_bin("reprolog"))
            .args(["compare", "--json", "--policy", policy.to_str().unwrap()])
            .args(extra)
            .args([&random, &same])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let all = compare(&[]);
    let random_verdict = all["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["store_path"] == random.as_str())
        .unwrap();
    assert_eq!(
        random_verdict["inconsistent_builders"],
        serde_json::json!(["builder-1"])
    );
    let kinds: Vec<&str> = random_verdict["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["build", "build", "cache-signature"]);
    // Counting only builds, builder 1's cache signature of builder 2's bytes is left out.
    let built = compare(&["--require-built"]);
    for verdict in built["paths"].as_array().unwrap() {
        let claims = verdict["claims"].as_array().unwrap();
        assert_eq!(claims.len(), 2, "{verdict}");
        assert!(claims.iter().all(|c| c["kind"] == "build"));
        assert!(verdict.get("inconsistent_builders").is_none(), "{verdict}");
    }
}

#[test]
fn a_copied_path_is_never_attested_as_built() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("log");
    let server = Server::start(&data, &[]);
    let b = builder(dir.path(), "builder-1", &server.url);
    write_builders(&data, std::slice::from_ref(&b.public));
    let tag = format!("c{}", std::process::id());
    let file = derivations(dir.path(), &tag);
    // Built without the hook, copied to a cache, deleted, and copied back in: valid, but
    // not built here.
    let out = run_ok({
        let mut c = Command::new("nix-build");
        c.arg(&file)
            .args([
                "-A",
                "same",
                "--no-out-link",
                "--option",
                "substituters",
                "",
            ])
            .args(["--option", "sandbox", "false"]);
        c
    });
    let path = stdout(&out);
    let cache = format!("file://{}", dir.path().join("cache").display());
    run_ok(nix(&["copy", "--to", &cache, &path]));
    delete(std::slice::from_ref(&path));
    run_ok(nix(&[
        "copy",
        "--from",
        &cache,
        "--option",
        "require-sigs",
        "false",
        &path,
    ]));
    let drv = stdout(&run_ok({
        let mut c = Command::new("nix-instantiate");
        c.arg(&file).args(["-A", "same"]);
        c
    }));
    // The hook, run as Nix would after a build of that derivation, claims nothing.
    let out = Command::new(workspace_bin("reprolog"))
        .arg("hook")
        .env("REPROLOG_HOOK_CONFIG", &b.config)
        .env("DRV_PATH", &drv)
        .env("OUT_PATHS", &path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(build_entries(&server, &path).is_empty());
    assert_eq!(spooled(&b), 0);
}

#[test]
fn a_log_that_is_down_never_fails_or_stalls_a_build_and_flush_sends_later() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on yet; the log starts there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let b = builder(dir.path(), "builder-1", &url);
    let file = derivations(dir.path(), &format!("d{}", std::process::id()));
    let (paths, took, out) = build(&file, &b);
    assert_eq!(paths.len(), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kept in"), "{stderr}");
    // The hook's share of the build: well under two seconds with the log down.
    assert!(took < Duration::from_secs(10), "the build took {took:?}");
    assert_eq!(spooled(&b), 2);

    // A broken spool file is set aside and never blocks the others.
    std::fs::write(b.spool.join("broken.json"), "{not json").unwrap();
    let data = dir.path().join("log");
    write_builders(&data, std::slice::from_ref(&b.public));
    let _log =
        Service::try_start_on("reprolog-server", &data, &format!("127.0.0.1:{port}"), &[]).unwrap();
    let out = reprolog(&["hook", "flush"], &b.config);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent 2, left 0, set aside 1"));
    assert!(b.spool.join("bad/broken.json").exists());
    delete(&paths);
}

#[test]
fn a_broken_configuration_never_fails_a_build() {
    let dir = tempfile::tempdir().unwrap();
    let b = builder(dir.path(), "builder-1", "http://127.0.0.1:1");
    // The key file is gone, and then the configuration itself.
    std::fs::remove_file(&b.key).unwrap();
    let file = derivations(dir.path(), &format!("b{}", std::process::id()));
    let (paths, _, out) = build(&file, &b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reprolog hook:"), "{stderr}");
    delete(&paths);
    std::fs::write(&b.config, "log\n").unwrap();
    let (paths, _, out) = build(&file, &b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reprolog hook:"), "{stderr}");
    delete(&paths);
}
