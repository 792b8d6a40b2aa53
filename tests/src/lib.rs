//! Helpers for the end-to-end tests: the shared test data, real Nix (`nix-bin`) driven as a
//! client offline and without a daemon, and the workspace's servers run as real processes.

#![forbid(unsafe_code)]

pub mod browser;
pub mod explored;
pub mod nginx;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/testdata` beside the repository, or `$REPROLOG_TESTDATA`.
pub fn testdata() -> PathBuf {
    std::env::var_os("REPROLOG_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"))
}

/// A `nix` command with the nix-command feature on and no substituters.
pub fn nix(args: &[&str]) -> Command {
    let mut c = Command::new("nix");
    c.args([
        "--extra-experimental-features",
        "nix-command",
        "--option",
        "substituters",
        "",
    ]);
    c.args(args);
    c
}

/// Runs a command and returns its output, failing the test with its stderr if it fails.
pub fn run_ok(mut c: Command) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("running {c:?}: {e}; is nix-bin installed (README)?"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds two tiny input-addressed derivations, `top` referring to `dep`, with a `tag` in their
/// names so tests do not share outputs. Returns (dep, top) store paths.
pub fn build_pair(dir: &Path, tag: &str) -> (String, String) {
    let expr = format!(
        r#"rec {{
  dep = derivation {{ name = "reprolog-{tag}-dep"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "echo {tag} > $out" ]; }};
  top = derivation {{ name = "reprolog-{tag}-top"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "echo ${{dep}} > $out" ]; }};
}}"#
    );
    let file = dir.join("pair.nix");
    std::fs::write(&file, expr).unwrap();
    let mut c = Command::new("nix-build");
    c.arg(&file)
        .args(["-A", "top", "--no-out-link", "--option", "substituters", ""])
        .args(["--option", "sandbox", "false"]);
    let top = stdout(&run_ok(c));
    let refs = stdout(&run_ok({
        let mut c = Command::new("nix-store");
        c.args(["--query", "--references", &top]);
        c
    }));
    (refs, top)
}

/// The narinfo file of a store path in a `file://` cache directory.
pub fn narinfo_path(cache: &Path, store_path: &str) -> PathBuf {
    let base = store_path.rsplit('/').next().unwrap_or_default();
    cache.join(format!("{}.narinfo", &base[..32]))
}

// ---- the log server as a real process ------------------------------------------------------

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reprolog_verifier::checkpoint::SignedCheckpoint;
use reprolog_verifier::nix::{nix32, NarInfo, NixSecretKey};
use reprolog_verifier::note::VerifierKey;
use sha2::{Digest, Sha256};

/// A workspace binary, built by `cargo build --workspace` (the README's test command does).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --all-features` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A server binary (`reprolog-server` or `reprolog-witness`) running `serve` on a free
/// loopback port, its stderr in `DATA/<binary>.log`.
pub struct Service {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    log_path: PathBuf,
}

impl Service {
    /// Starts `bin serve --data DATA --listen 127.0.0.1:0 EXTRA…` and waits until it listens;
    /// on failure returns what it printed to stderr.
    pub fn try_start(bin: &str, data: &Path, extra: &[&str]) -> Result<Service, String> {
        Self::try_start_on(bin, data, "127.0.0.1:0", extra)
    }

    /// As [`Service::try_start`], listening on `listen`, so that a restarted witness keeps
    /// the URL a log's policy names.
    pub fn try_start_on(
        bin: &str,
        data: &Path,
        listen: &str,
        extra: &[&str],
    ) -> Result<Service, String> {
        std::fs::create_dir_all(data).map_err(|e| e.to_string())?;
        let log_path = data.join(format!("{bin}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(workspace_bin(bin))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("url:") {
                    let _ = tx.send(url.trim().trim_end_matches('/').to_owned());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => Ok(Service {
                child,
                url,
                data: data.to_owned(),
                log_path,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(&log_path).unwrap_or_default())
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`), as an operator or a service manager
    /// would.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// The exit status once the process has exited, waiting at most `limit`; `None` while it
    /// still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process wrote to stderr so far (its log file, `DATA/<binary>.log`).
    pub fn log(&self) -> Vec<u8> {
        std::fs::read(&self.log_path).unwrap_or_default()
    }

    /// The value of one series in its `/metrics` page, `name{labels}` exactly as written
    /// there; `None` when the page does not have it.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_in(&self.metrics(), series)
    }

    /// Its `/metrics` page.
    pub fn metrics(&self) -> String {
        let (status, body) = get(&format!("{}/metrics", self.url));
        assert_eq!(status, 200, "GET /metrics");
        String::from_utf8(body).expect("metrics are UTF-8")
    }
}

/// The value of one series (`name{labels}` as written) in a Prometheus text page.
pub fn metric_in(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

impl Server {
    /// Starts the log server on `data` and waits until it listens.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Self::try_start(data, extra).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    pub fn try_start(data: &Path, extra: &[&str]) -> Result<Server, String> {
        Service::try_start("reprolog-server", data, extra).map(Server)
    }

    /// The log's verifier key, from `DATA/log.vkey`.
    pub fn verifier_key(&self) -> VerifierKey {
        let text = std::fs::read_to_string(self.data.join("log.vkey")).expect("log.vkey");
        VerifierKey::parse(text.trim()).expect("valid log.vkey")
    }

    /// The current checkpoint, verified under the log's key.
    pub fn checkpoint(&self) -> SignedCheckpoint {
        let (status, body) = get(&format!("{}/checkpoint", self.url));
        assert_eq!(status, 200);
        SignedCheckpoint::open(&body, &self.verifier_key(), &[]).expect("checkpoint verifies")
    }

    /// Waits until the published checkpoint covers at least `size` entries.
    pub fn wait_for_checkpoint(&self, size: u64) -> SignedCheckpoint {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let cp = self.checkpoint();
            if cp.checkpoint.size >= size {
                return cp;
            }
            assert!(
                Instant::now() < deadline,
                "no checkpoint of size {size} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A typed handle on one kind of service, usable as the `Service` it wraps.
macro_rules! service_handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(pub Service);

        impl std::ops::Deref for $name {
            type Target = Service;
            fn deref(&self) -> &Service {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut Service {
                &mut self.0
            }
        }
    };
}

service_handle!(
    /// A running log server.
    Server
);
service_handle!(
    /// A running witness.
    Witness
);

impl Witness {
    pub fn start(data: &Path, extra: &[&str]) -> Witness {
        Self::start_on(data, "127.0.0.1:0", extra)
    }

    /// Starts the witness listening on `listen`.
    pub fn start_on(data: &Path, listen: &str, extra: &[&str]) -> Witness {
        Witness(
            Service::try_start_on("reprolog-witness", data, listen, extra)
                .unwrap_or_else(|e| panic!("witness did not start: {e}")),
        )
    }

    /// The witness's cosignature verifier key, from `DATA/witness.vkey`.
    pub fn verifier_key(&self) -> VerifierKey {
        let text = std::fs::read_to_string(self.data.join("witness.vkey")).expect("witness.vkey");
        VerifierKey::parse(text.trim()).expect("valid witness.vkey")
    }
}

fn read_response(r: ureq::Response) -> (u16, Vec<u8>) {
    let status = r.status();
    let mut body = Vec::new();
    let _ = std::io::Read::read_to_end(&mut r.into_reader(), &mut body);
    (status, body)
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, Vec<u8>) {
    match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => read_response(r),
        Err(e) => panic!("HTTP transport error: {e}"),
    }
}

/// GET, returning the status and body whatever the status.
pub fn get(url: &str) -> (u16, Vec<u8>) {
    answer(ureq::get(url).call())
}

/// GET a JSON document.
pub fn get_json(url: &str) -> (u16, serde_json::Value) {
    let (status, body) = get(url);
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// POSTs a body with a content type; returns the status and the JSON answer.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let (status, body) = answer(
        ureq::post(url)
            .set("Content-Type", content_type)
            .send_bytes(body),
    );
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Submits narinfos to a log server.
pub fn submit(server: &Server, body: &str) -> (u16, serde_json::Value) {
    post(
        &format!("{}/api/v1/narinfo", server.url),
        "text/x-nix-narinfo",
        body.as_bytes(),
    )
}

/// A unique narinfo for (tag, i), signed by `key`. `variant` changes only the NAR hash, as a
/// builder that produced different bytes would.
pub fn synthetic_narinfo(key: &NixSecretKey, tag: &str, i: u64, variant: u64) -> String {
    let path_hash = Sha256::digest(format!("{tag}/{i}"));
    let nar_hash = Sha256::digest(format!("{tag}/{i}/{variant}"));
    let text = format!(
        "StorePath: /nix/store/{}-synthetic-{i}\nURL: nar/{i}.nar\nCompression: none\n\
         NarHash: sha256:{}\nNarSize: {}\nReferences: \n",
        nix32::encode(&path_hash[..20]),
        nix32::encode(&nar_hash),
        1000 + i
    );
    let mut info = NarInfo::parse(&text).expect("synthetic narinfo parses");
    info.sign(key);
    info.to_text()
}

/// Writes a builders file holding these public keys.
pub fn write_builders(data: &Path, keys: &[String]) {
    std::fs::create_dir_all(data).expect("data dir");
    std::fs::write(data.join("builders"), keys.join("\n") + "\n").expect("builders file");
}

/// POSTs a body with a content type; returns the status and the raw answer.
pub fn post_raw(url: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    answer(
        ureq::post(url)
            .set("Content-Type", content_type)
            .send_bytes(body),
    )
}

// ---- a private PostgreSQL cluster ----------------------------------------------------------

/// A PostgreSQL server of its own (Debian's `postgresql`): a cluster made by `initdb` in a
/// temporary directory, started with `pg_ctl` as the unprivileged `postgres` user (PostgreSQL
/// refuses to run as root), on a free loopback port with trust authentication for the
/// loopback only. Stopped when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
}

/// The directory of Debian's PostgreSQL programs (the newest version installed).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's postgresql is installed (scripts/test.sh installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

/// Runs a PostgreSQL program as the `postgres` user when we are root, else as ourselves.
fn as_postgres(program: &Path) -> Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("reprolog-pg-")
            .tempdir_in("/tmp")
            .expect("a temporary directory");
        // The postgres user must own the cluster's directory.
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status();
        let bin = postgres_bin();
        let data = dir.path().join("data");
        run_ok({
            let mut c = as_postgres(&bin.join("initdb"));
            c.arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
            c
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        run_ok({
            let mut c = as_postgres(&bin.join("pg_ctl"));
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("postgres.log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
                    dir.path().display()
                ))
                .args(["-w", "start"]);
            c
        });
        Postgres { dir, port }
    }

    /// A URL for a fresh database of this server named `name`.
    pub fn database(&self, name: &str) -> String {
        run_ok({
            let mut c = as_postgres(&postgres_bin().join("createdb"));
            c.args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ]);
            c
        });
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&postgres_bin().join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

// ---- a log that lies --------------------------------------------------------------------

/// Serves a log of `entries` as tiles with a checkpoint signed by `key`: a log that shows
/// what the real server would never log.
pub fn lying_log(key: reprolog_verifier::note::SignerKey, entries: Vec<Vec<u8>>) -> String {
    use reprolog_verifier::checkpoint::Checkpoint;
    use reprolog_verifier::merkle::MemoryTree;
    use reprolog_verifier::note::Note;
    use reprolog_verifier::tiles::{encode_bundle, TileKind, TilePath};
    let mut tree = MemoryTree::new();
    for e in &entries {
        tree.push(reprolog_verifier::merkle::leaf_hash(e));
    }
    let size = entries.len() as u64;
    let mut note = Note::new(&Checkpoint::new(key.name(), size, tree.root()).to_text())
        .expect("a checkpoint note");
    note.sign(&key);
    let checkpoint = note.encode();
    let bundle = TilePath {
        kind: TileKind::Entries,
        index: 0,
        width: size as u16,
    };
    let (bundle_path, bundle) = (
        format!("/{bundle}"),
        encode_bundle(&entries).expect("a bundle"),
    );
    serve_http(move |target| match target {
        "/checkpoint" => (200, checkpoint.as_bytes().to_vec()),
        t if t == bundle_path => (200, bundle.clone()),
        _ => (404, Vec::new()),
    })
}

// ---- shared set-ups ------------------------------------------------------------------------

/// A Nix secret key made by real Nix (`nix key generate-secret`), in `DIR/NAME.sec` with mode
/// 0600; returns its file and its public key.
pub fn nix_key(dir: &Path, name: &str) -> (String, String) {
    let file = dir.join(format!("{name}.sec"));
    let secret = stdout(&run_ok(nix(&[
        "key",
        "generate-secret",
        "--key-name",
        name,
    ])));
    std::fs::write(&file, secret).expect("writing the key");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let public = stdout(&run_ok({
        let mut c = nix(&["key", "convert-secret-to-public"]);
        c.stdin(std::fs::File::open(&file).expect("the key"));
        c
    }));
    (file.to_str().expect("a UTF-8 path").to_owned(), public)
}

/// A log of origin `origin` with `builders` registered, cosigned by one witness (`w`,
/// `example.com/w`), checkpoints every 50 ms, and a client policy requiring the witness.
pub struct WitnessedLog {
    pub server: Server,
    pub witness: Witness,
    pub log_vkey: VerifierKey,
    /// The client policy: the log, the witness, `quorum w`.
    pub policy: PathBuf,
    /// The log's data directory.
    pub data: PathBuf,
}

impl WitnessedLog {
    /// Starts it all under `dir` (`log/`, `witness/`, `log-policy`, `policy`).
    pub fn start(dir: &Path, origin: &str, builders: &[String]) -> WitnessedLog {
        let data = dir.join("log");
        write_builders(&data, builders);
        // A first start makes the log's key, which the witness's policy names.
        let log_vkey = Server::start(&data, &["--origin", origin]).verifier_key();
        let w_dir = dir.join("witness");
        std::fs::create_dir_all(&w_dir).expect("witness dir");
        std::fs::write(w_dir.join("policy"), format!("log {log_vkey}\n")).expect("policy");
        let witness = Witness::start(&w_dir, &["--name", "example.com/w"]);
        let log_policy = dir.join("log-policy");
        std::fs::write(
            &log_policy,
            format!("witness w {} {}\n", witness.verifier_key(), witness.url),
        )
        .expect("log policy");
        let server = Server::start(
            &data,
            &[
                "--policy",
                log_policy.to_str().expect("a UTF-8 path"),
                "--checkpoint-interval-ms",
                "50",
            ],
        );
        let policy = dir.join("policy");
        std::fs::write(
            &policy,
            format!(
                "log {log_vkey} {}\nwitness w {}\nquorum w\n",
                server.url,
                witness.verifier_key()
            ),
        )
        .expect("client policy");
        WitnessedLog {
            server,
            witness,
            log_vkey,
            policy,
            data,
        }
    }
}

/// Serves HTTP/1.1 GETs on a free loopback port with `answer(target)`, one request per
/// connection, for fake logs; returns the base URL.
pub fn serve_http(answer: impl Fn(&str) -> (u16, Vec<u8>) + Send + 'static) -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let Ok(read_half) = conn.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(read_half);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
            }
            let (status, body) = answer(line.split(' ').nth(1).unwrap_or("/"));
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

/// Writes `path`, a client policy that trusts the log `key` at `url` with no witness.
pub fn policy_without_witnesses(path: &Path, key: &VerifierKey, url: &str) {
    std::fs::write(path, format!("log {key} {url}\nquorum none\n")).expect("writing a policy");
}

/// Runs the `reprolog` command with `args`.
pub fn reprolog(args: &[&str]) -> Output {
    Command::new(workspace_bin("reprolog"))
        .args(args)
        .output()
        .expect("running reprolog")
}

/// A command's stdout and stderr, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
