//! A running `reprolog-explorer`, and the real-Nix fixture the explorer's and the dashboard's
//! tests share: two builders sign real `nix-build` outputs, one of which diverges, both caches
//! are ingested into a log with a witness.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{get_json, nix, nix_key, run_ok, stdout, workspace_bin, WitnessedLog};

/// A running explorer; killed when dropped.
pub struct Explorer {
    child: Child,
    pub url: String,
}

impl Drop for Explorer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Explorer {
    /// Starts an explorer over `policy` and `db`, logging to `dir/explorer.log`.
    pub fn start(dir: &Path, policy: &Path, db: &str) -> Explorer {
        Explorer::start_logging_to(dir, "explorer.log", policy, db)
    }

    /// An explorer whose log goes to `dir/log`.
    pub fn start_logging_to(dir: &Path, log: &str, policy: &Path, db: &str) -> Explorer {
        let mut child = Command::new(workspace_bin("reprolog-explorer"))
            .args(["serve", "--listen", "127.0.0.1:0", "--interval-ms", "100"])
            .arg("--policy")
            .arg(policy)
            .arg("--db")
            .arg(db)
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(log))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        // Read to the end, so that what the explorer prints later never meets a closed pipe.
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("url:") {
                    let _ = tx.send(url.trim().trim_end_matches('/').to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "the explorer did not start: {}",
                    std::fs::read_to_string(dir.join(log)).unwrap_or_default()
                )
            });
        Explorer { child, url }
    }

    /// Waits until the explorer has verified `size` entries of its log, or says why not.
    pub fn wait_verified(&self, size: u64) -> Value {
        self.wait_status(&format!("verified to {size}"), |status| {
            status["logs"][0]["verified_size"].as_u64() == Some(size)
        })
    }

    /// Waits until the explorer says it stopped following its log; returns its status.
    pub fn wait_stopped(&self) -> Value {
        self.wait_status("stopped", |status| status["logs"][0]["state"] == "stopped")
    }

    fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (_, status) = get_json(&format!("{}/api/v1/status", self.url));
            if done(&status) {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "not {what}: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Builds `attr` of `dir/demo.nix` (fresh: deleted first), copies it signed into `cache`.
pub fn build_into(dir: &Path, attr: &str, cache: &Path, key: &str) -> String {
    let out = stdout(&run_ok({
        let mut c = Command::new("nix-build");
        c.arg(dir.join("demo.nix"))
            .args(["-A", attr, "--no-out-link", "--option", "substituters", ""])
            .args(["--option", "sandbox", "false"]);
        c
    }));
    run_ok({
        let mut c = nix(&["copy", "--to"]);
        c.arg(format!(
            "file://{}?compression=none&secret-key={key}",
            cache.display()
        ))
        .arg(&out);
        c
    });
    out
}

/// The hash part of a store path.
pub fn hash_of(path: &str) -> &str {
    &path.rsplit('/').next().unwrap()[..32]
}

/// Two builders, `explorer-b1` and `explorer-b2`, each build `same` (the same bytes) and
/// `stamp` (a fresh UUID, so it diverges) with real Nix, sign them into their caches, and both
/// caches are ingested into a log cosigned by a witness: two key events and four signatures.
pub struct TwoBuilders {
    pub log: WitnessedLog,
    /// A store path both builders agree on.
    pub same: String,
    /// A store path on which they disagree.
    pub stamp: String,
    /// Unique to this run, in both paths' names.
    pub tag: String,
}

impl TwoBuilders {
    /// The log's size once both caches are ingested.
    pub const SIZE: u64 = 6;

    pub fn start(d: &Path, tag: &str) -> TwoBuilders {
        let tag = format!("{tag}-{}", std::process::id());
        std::fs::write(
            d.join("demo.nix"),
            format!(
                r#"{{
  same = derivation {{ name = "same-{tag}"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "echo same > $out" ]; }};
  stamp = derivation {{ name = "stamp-{tag}"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "read id < /proc/sys/kernel/random/uuid; echo $id > $out" ]; }};
}}"#
            ),
        )
        .unwrap();
        let (k1, p1) = nix_key(d, "explorer-b1");
        let (k2, p2) = nix_key(d, "explorer-b2");
        let log = WitnessedLog::start(d, "example.com/explored", &[p1, p2]);
        let (c1, c2) = (d.join("cache-1"), d.join("cache-2"));
        let same = build_into(d, "same", &c1, &k1);
        let stamp = build_into(d, "stamp", &c1, &k1);
        run_ok({
            let mut c = Command::new("nix-store");
            c.args(["--delete", &same, &stamp]);
            c
        });
        build_into(d, "same", &c2, &k2);
        build_into(d, "stamp", &c2, &k2);
        for cache in [&c1, &c2] {
            let out = Command::new(workspace_bin("reprolog"))
                .args(["ingest", "--log", &log.server.url])
                .arg(format!("file://{}", cache.display()))
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        log.server.wait_for_checkpoint(Self::SIZE);
        TwoBuilders {
            log,
            same,
            stamp,
            tag,
        }
    }
}
