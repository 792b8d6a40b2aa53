//! `reprolog hook`: Nix's `post-build-hook`. After each local build it attests, signed with
//! the builder's Nix key, "I built this output myself" (`spec/attestation.md`), writes the
//! attestation to a spool directory and tries to send it to the log for about a second.
//! `reprolog hook flush` sends what is spooled.
//!
//! It never fails or stalls a build: whatever goes wrong (log down, bad configuration, full
//! disk) is said on stderr, which Nix shows, and the hook exits 0. Trustix's hook broke builds
//! when its daemon was down; this one queues instead.
//!
//! What it attests comes from the Nix database (read-only), never from parsing `nix path-info`
//! output: the outputs of `DRV_PATH` (Nix 2.8 leaves `OUT_PATHS` empty for local builds), their
//! NAR hash, size and references, and whether Nix marks them `ultimate`, built on this machine.
//! A substituted or copied path is not ultimate and is never claimed as built.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use reprolog_verifier::attestation::BuildFacts;
use reprolog_verifier::dsse::Envelope;
use reprolog_verifier::keyfile;
use reprolog_verifier::nix::narinfo::NixHash;
use reprolog_verifier::nix::{NixSecretKey, StorePath};
use reprolog_verifier::text::printable;

use crate::client::LogClient;

/// Where the configuration is unless `REPROLOG_HOOK_CONFIG` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/reprolog/hook.conf";
/// How long the hook may spend sending, per build.
const SEND_BUDGET: Duration = Duration::from_secs(1);
/// The Nix database the hook reads.
const NIX_DB: &str = "/nix/var/nix/db/db.sqlite";
/// Where Nix keeps build logs: a log's creation is the build's start.
const NIX_LOG_DIR: &str = "/nix/var/log/nix/drvs";

/// The hook's configuration: `log <URL>`, `key-file <path>`, `spool <dir>`, one a line.
pub struct Config {
    log: String,
    key_file: PathBuf,
    spool: PathBuf,
}

impl Config {
    /// Reads the configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let (mut log, mut key_file, mut spool) = (None, None, None);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(char::is_whitespace)
                .map(|(k, v)| (k, v.trim()))
                .with_context(|| format!("{}: line {}: <key> <value>", path.display(), i + 1))?;
            let slot = match key {
                "log" => &mut log,
                "key-file" => &mut key_file,
                "spool" => &mut spool,
                other => bail!(
                    "{}: line {}: unknown key {:?} (log, key-file, spool)",
                    path.display(),
                    i + 1,
                    printable(other)
                ),
            };
            *slot = Some(value.to_owned());
        }
        let need = |v: Option<String>, k: &str| {
            v.with_context(|| format!("{}: no {k} line", path.display()))
        };
        Ok(Config {
            log: need(log, "log")?,
            key_file: need(key_file, "key-file")?.into(),
            spool: need(spool, "spool")?.into(),
        })
    }

    /// The configuration file in force.
    pub fn path() -> PathBuf {
        std::env::var_os("REPROLOG_HOOK_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_CONFIG.into())
    }

    fn key(&self) -> Result<NixSecretKey> {
        keyfile::check_private(&self.key_file)?;
        let text = std::fs::read_to_string(&self.key_file)
            .with_context(|| format!("{}", self.key_file.display()))?;
        NixSecretKey::parse(text.trim()).with_context(|| format!("{}", self.key_file.display()))
    }
}

/// Runs as Nix's post-build hook. Always succeeds: problems are reported on stderr.
pub fn run() {
    if let Err(e) = attest_build() {
        eprintln!("reprolog hook: {}", printable(&format!("{e:#}")));
    }
}

fn attest_build() -> Result<()> {
    let config = Config::load(&Config::path())?;
    let drv = std::env::var("DRV_PATH").context("DRV_PATH is not set (run by Nix?)")?;
    let out_paths = std::env::var("OUT_PATHS").unwrap_or_default();
    let key = config.key()?;
    let db = NixDb::open(Path::new(NIX_DB))?;
    let drv = StorePath::parse(&drv).context("DRV_PATH")?;
    let outputs: Vec<(String, String)> = db.outputs(&drv)?;
    let wanted: BTreeSet<&str> = out_paths.split_whitespace().collect();
    std::fs::create_dir_all(&config.spool)
        .with_context(|| format!("{}", config.spool.display()))?;
    let nix_version = nix_version(&config.spool);
    let system = derivation_system(&drv)?;
    let started = build_start(&drv);
    let mut spooled = Vec::new();
    for (output, path) in &outputs {
        if !wanted.is_empty() && !wanted.contains(path.as_str()) {
            continue;
        }
        let Some(info) = db.path_info(path)? else {
            continue;
        };
        if !info.ultimate {
            continue; // not built here: never claimed as built
        }
        let facts = BuildFacts {
            store_path: StorePath::parse(path)?,
            nar_hash: info.nar_hash,
            nar_size: info.nar_size,
            references: info.references,
            derivation: drv.clone(),
            output: output.clone(),
            system: system.clone(),
            nix_version: nix_version.clone(),
            started: started.unwrap_or(info.registered).min(info.registered),
            finished: info.registered,
        };
        spooled.push(spool(
            &config.spool,
            &facts.sign(&key),
            &facts.store_path,
            &key.name,
        )?);
    }
    if !spooled.is_empty() {
        send(&config, &spooled, SEND_BUDGET);
    }
    Ok(())
}

/// Writes an envelope to the spool, atomically; returns its file.
fn spool(dir: &Path, envelope: &Envelope, path: &StorePath, key: &str) -> Result<PathBuf> {
    let file = dir.join(format!("{}-{key}.json", path.hash_part()));
    let tmp = dir.join(format!(".{}-{key}.tmp", path.hash_part()));
    std::fs::write(&tmp, serde_json::to_vec(envelope)?)
        .with_context(|| format!("{}", tmp.display()))?;
    std::fs::rename(&tmp, &file).with_context(|| format!("{}", file.display()))?;
    Ok(file)
}

/// Sends spooled envelopes in one request within `budget`; deletes them once the log has
/// them, moves refused ones aside. What cannot be sent stays for `hook flush`.
fn send(config: &Config, files: &[PathBuf], budget: Duration) {
    let client = match LogClient::with_timeout(&config.log, budget) {
        Ok(c) => c,
        Err(e) => return eprintln!("reprolog hook: {e}"),
    };
    let envelopes: Vec<Envelope> = files
        .iter()
        .filter_map(|f| serde_json::from_slice(&std::fs::read(f).ok()?).ok())
        .collect();
    match client.submit_attestations(&envelopes) {
        Ok(answer) => {
            for (file, result) in files.iter().zip(&answer.attestations) {
                let taken = result.signatures.iter().any(|s| s.index.is_some());
                if taken {
                    let _ = std::fs::remove_file(file);
                } else {
                    let reasons: Vec<String> = result
                        .signatures
                        .iter()
                        .filter_map(|s| s.reason.clone())
                        .collect();
                    eprintln!(
                        "reprolog hook: the log did not take {}: {}",
                        result.store_path,
                        printable(&reasons.join("; "))
                    );
                    set_aside(file, "refused");
                }
            }
        }
        Err(crate::client::ClientError::Status {
            status: 422, body, ..
        }) => {
            eprintln!("reprolog hook: the log refused the attestations: {body}");
            for f in files {
                set_aside(f, "refused");
            }
        }
        Err(e) => eprintln!(
            "reprolog hook: {e}; {} attestation(s) kept in {} for `reprolog hook flush`",
            files.len(),
            config.spool.display()
        ),
    }
}

/// Moves a spool file into a subdirectory, so that it never blocks the others.
fn set_aside(file: &Path, why: &str) {
    let Some(dir) = file.parent().map(|d| d.join(why)) else {
        return;
    };
    let moved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::rename(file, dir.join(file.file_name().unwrap_or_default())));
    if let Err(e) = moved {
        eprintln!("reprolog hook: moving {} aside: {e}", file.display());
    }
}

/// `reprolog hook flush`: sends everything spooled. Returns how many are left.
pub fn flush() -> Result<usize> {
    let config = Config::load(&Config::path())?;
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&config.spool) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("{}", config.spool.display())),
    };
    files.sort();
    let (good, bad): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| {
        std::fs::read(f)
            .ok()
            .and_then(|b| serde_json::from_slice::<Envelope>(&b).ok())
            .is_some()
    });
    for f in &bad {
        eprintln!(
            "reprolog hook: {} is not an envelope; moved to bad/",
            f.display()
        );
        set_aside(f, "bad");
    }
    for chunk in good.chunks(256) {
        send(&config, chunk, Duration::from_secs(30));
    }
    let left = good.iter().filter(|f| f.exists()).count();
    println!(
        "sent {}, left {left}, set aside {}",
        good.len() - left,
        bad.len()
    );
    Ok(left)
}

/// What the Nix database says of a valid path.
struct PathInfo {
    nar_hash: NixHash,
    nar_size: u64,
    references: BTreeSet<String>,
    ultimate: bool,
    registered: u64,
}

/// The Nix database, opened read-only.
struct NixDb(rusqlite::Connection);

impl NixDb {
    fn open(path: &Path) -> Result<Self> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening the Nix database {}", path.display()))?;
        // Nix may be writing: wait briefly rather than fail.
        conn.busy_timeout(Duration::from_millis(500))?;
        Ok(NixDb(conn))
    }

    /// The derivation's outputs, as (name, path).
    fn outputs(&self, drv: &StorePath) -> Result<Vec<(String, String)>> {
        let mut q = self.0.prepare(
            "SELECT o.id, o.path FROM DerivationOutputs o JOIN ValidPaths v ON o.drv = v.id \
             WHERE v.path = ?1 ORDER BY o.id",
        )?;
        let rows = q.query_map([drv.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn path_info(&self, path: &str) -> Result<Option<PathInfo>> {
        let mut q = self.0.prepare(
            "SELECT id, hash, narSize, ultimate, registrationTime FROM ValidPaths WHERE path = ?1",
        )?;
        let mut rows = q.query([path])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let id: i64 = row.get(0)?;
        let hash: String = row.get(1)?;
        let nar_size: Option<i64> = row.get(2)?;
        let ultimate: Option<i64> = row.get(3)?;
        let registered: i64 = row.get(4)?;
        let nar_hash = NixHash::parse(&hash)
            .map_err(|e| anyhow::anyhow!("{path}: the database's hash {hash:?}: {e}"))?;
        let mut refs = self.0.prepare(
            "SELECT v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id WHERE r.referrer = ?1",
        )?;
        let references = refs
            .query_map([id], |r| r.get::<_, String>(0))?
            .map(|p| {
                let p = p?;
                Ok(p.rsplit('/').next().unwrap_or_default().to_owned())
            })
            .collect::<Result<BTreeSet<String>>>()?;
        Ok(Some(PathInfo {
            nar_hash,
            nar_size: u64::try_from(nar_size.unwrap_or(0)).unwrap_or(0),
            references,
            ultimate: ultimate == Some(1),
            registered: u64::try_from(registered).unwrap_or(0),
        }))
    }
}

/// The Nix version, which `nix-store --version` gives as its last word (`nix-store (Nix)
/// 2.8.0`). Asking costs about 27 ms, most of a hook's time, so the answer is kept in the
/// spool beside the `nix-store` binary's path and modification time, and asked again only
/// when the binary changes.
fn nix_version(spool: &Path) -> String {
    let binary = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nix-store"))
            .find(|p| p.is_file())
    });
    let stamp = binary.as_ref().and_then(|b| {
        let modified = std::fs::metadata(b).ok()?.modified().ok()?;
        let nanos = modified.duration_since(UNIX_EPOCH).ok()?.as_nanos();
        Some(format!("{} {nanos}", b.display()))
    });
    let cache = spool.join(".nix-version");
    if let (Some(stamp), Ok(text)) = (&stamp, std::fs::read_to_string(&cache)) {
        if let Some(version) = text.strip_prefix(&format!("{stamp}\n")) {
            return version.trim().to_owned();
        }
    }
    let version = std::process::Command::new("nix-store")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().last().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    if let Some(stamp) = stamp {
        // Only a cache: failing to write it costs the next hook 27 ms, nothing more.
        let _ = std::fs::write(&cache, format!("{stamp}\n{version}\n"));
    }
    version
}

/// The derivation's `system`: the fourth field of its ATerm,
/// `Derive([outputs],[inputDrvs],[inputSrcs],"system",…)`.
fn derivation_system(drv: &StorePath) -> Result<String> {
    let text =
        std::fs::read_to_string(drv.to_string()).with_context(|| format!("reading {drv}"))?;
    let rest = text
        .strip_prefix("Derive(")
        .with_context(|| format!("{drv} is not a derivation"))?;
    // Skip three bracketed lists, minding strings (which may hold brackets).
    let (mut depth, mut lists, mut in_string, mut escaped) = (0u32, 0, false, false);
    let mut chars = rest.char_indices();
    for (i, c) in chars.by_ref() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (true, false, _) => {}
            (false, _, '"') => in_string = true,
            (false, _, '[' | '(') => depth += 1,
            (false, _, ']' | ')') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    lists += 1;
                    if lists == 3 {
                        let system = rest[i + 1..]
                            .strip_prefix(",\"")
                            .and_then(|s| s.split_once('"'))
                            .map(|(s, _)| s.to_owned())
                            .with_context(|| format!("{drv}: no system"))?;
                        return Ok(system);
                    }
                }
            }
            _ => {}
        }
    }
    bail!("{drv}: no system")
}

/// When the build started: the creation time of its log file, where the file system keeps it.
fn build_start(drv: &StorePath) -> Option<u64> {
    let base = drv.to_string();
    let base = base.rsplit('/').next()?;
    let (dir, file) = base.split_at(2);
    ["", ".bz2"].iter().find_map(|ext| {
        let meta = std::fs::metadata(
            Path::new(NIX_LOG_DIR)
                .join(dir)
                .join(format!("{file}{ext}")),
        )
        .ok()?;
        meta.created()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    })
}
