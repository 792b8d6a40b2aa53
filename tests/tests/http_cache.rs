//! Reads scale through a standard HTTP cache: Debian's nginx, configured as a caching reverse
//! proxy in front of the log, serves the full tiles the log marks immutable. `reprolog monitor`,
//! `reprolog verify` and the gate read through it and get the same verified answers as from
//! the log;
//! after the log stops, the full tiles nginx holds are still served, byte for byte.

use reprolog_tests::nginx::Nginx;
use reprolog_tests::{
    get_json, narinfo_path, policy_without_witnesses, reprolog, show, submit, synthetic_narinfo,
    write_builders, Server, Service,
};
use reprolog_verifier::nix::NixSecretKey;

/// `path` through `base`: its status, its `X-Cache-Status` (nginx's HIT or MISS) and body.
fn fetch(base: &str, path: &str) -> (u16, String, Vec<u8>) {
    let response = match ureq::get(&format!("{base}/{path}")).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let status = response.status();
    let cache = response.header("X-Cache-Status").unwrap_or("").to_owned();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body).unwrap();
    (status, cache, body)
}

#[test]
fn monitor_and_verify_read_through_nginx_and_cached_tiles_outlive_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = NixSecretKey::generate("cached-b1");
    let log_dir = d.join("log");
    write_builders(&log_dir, &[key.public_key().to_string()]);
    let mut server = Server::start(&log_dir, &["--checkpoint-interval-ms", "50"]);
    // Two full entry bundles and a full hash tile, and a partial tail.
    let entries = 600;
    let narinfos: Vec<String> = (0..entries)
        .map(|i| synthetic_narinfo(&key, "cached", i, 0))
        .collect();
    let (code, answer) = submit(&server, &narinfos.join("\n"));
    assert_eq!(code, 200, "{answer}");
    let size = entries + 1;
    server.wait_for_checkpoint(size);
    let nginx = Nginx::start(&server.url);

    // The same verified answers through the cache as from the log.
    let narinfo = d.join("one.narinfo");
    std::fs::write(&narinfo, &narinfos[42]).unwrap();
    for (name, url) in [("log", &server.url), ("nginx", &nginx.url)] {
        let policy = d.join(format!("policy-{name}"));
        policy_without_witnesses(&policy, &server.verifier_key(), url);
        let policy = policy.to_str().unwrap();
        let state = d.join(format!("monitor-{name}.state"));
        let out = reprolog(&[
            "monitor",
            "--policy",
            policy,
            "--state",
            state.to_str().unwrap(),
            "--once",
        ]);
        assert!(out.status.success(), "{name}: {}", show(&out));
        assert!(
            show(&out).contains(&format!("{size} new entries checked")),
            "{name}: {}",
            show(&out)
        );
        let out = reprolog(&["verify", "--policy", policy, narinfo.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", show(&out));
    }

    // The gate proves through the cache what it proves from the log.
    let cache = d.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    let store_path = narinfos[42].lines().next().unwrap()["StorePath: ".len()..].to_owned();
    std::fs::write(narinfo_path(&cache, &store_path), &narinfos[42]).unwrap();
    let trust = d.join("trust");
    std::fs::write(
        &trust,
        format!("builder one {}\nquorum 1\n", key.public_key()),
    )
    .unwrap();
    let decisions: Vec<serde_json::Value> = ["log", "nginx"]
        .iter()
        .map(|name| {
            let gate = Service::try_start(
                "reprolog-gate",
                &d.join(format!("gate-{name}")),
                &[
                    "--log-policy",
                    d.join(format!("policy-{name}")).to_str().unwrap(),
                    "--trust",
                    trust.to_str().unwrap(),
                    "--upstream",
                    &format!("file://{}", cache.display()),
                ],
            )
            .unwrap_or_else(|e| panic!("the gate did not start: {e}"));
            let (status, decision) = get_json(&format!(
                "{}/api/v1/decisions/{}",
                gate.url,
                &store_path[11..43]
            ));
            assert_eq!(status, 200, "{name}: {decision}");
            decision
        })
        .collect();
    assert_eq!(decisions[0]["allowed"], true, "{}", decisions[0]);
    assert_eq!(decisions[1], decisions[0]);

    // Full tiles are cached after the first read; the checkpoint and partial tiles never are.
    for tile in ["tile/entries/000", "tile/entries/001", "tile/0/000"] {
        let (status, _, _) = fetch(&nginx.url, tile);
        assert_eq!(status, 200, "{tile}");
        let (_, cache, _) = fetch(&nginx.url, tile);
        assert_eq!(cache, "HIT", "{tile}: {}", nginx.error_log());
    }
    let partial = format!("tile/entries/002.p/{}", size - 512);
    for path in ["checkpoint", partial.as_str()] {
        fetch(&nginx.url, path);
        let (status, cache, _) = fetch(&nginx.url, path);
        assert_eq!(status, 200, "{path}");
        assert_ne!(cache, "HIT", "{path} must not be served from the cache");
    }
    let direct: Vec<Vec<u8>> = ["tile/entries/000", "tile/entries/001", "tile/0/000"]
        .iter()
        .map(|t| fetch(&server.url, t).2)
        .collect();

    // The log stops: nginx still serves the full tiles it holds, byte for byte, and says
    // what it cannot serve.
    server.kill();
    for (tile, bytes) in ["tile/entries/000", "tile/entries/001", "tile/0/000"]
        .iter()
        .zip(&direct)
    {
        let (status, cache, body) = fetch(&nginx.url, tile);
        assert_eq!((status, cache.as_str()), (200, "HIT"), "{tile}");
        assert_eq!(&body, bytes, "{tile}");
    }
    let (status, _, _) = fetch(&nginx.url, "checkpoint");
    assert_eq!(status, 502, "no checkpoint without the log");
}
