//! What the log-facing commands share: policies, trusted checkpoints, and reading entries.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::LogClient;
use anyhow::{bail, Context, Result};
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::entry::{Entry, LogEntry};
use reprolog_verifier::merkle::{self, CompactRange};
use reprolog_verifier::nix::NarInfo;
use reprolog_verifier::note::VerifierKey;
use reprolog_verifier::policy::{Policy, TrustedCheckpoint};
use reprolog_verifier::registry::KeyRegistry;
use reprolog_verifier::tiles::{decode_bundle, TileKind, TilePath, TILE_WIDTH};

/// narinfo files are small; anything larger is not one.
pub const MAX_NARINFO_BYTES: u64 = 1 << 20;

/// Reads a small file, refusing one over `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    if len > limit {
        bail!(
            "{}: {len} bytes is over the {limit}-byte limit",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("{}", path.display()))
}

pub fn read_narinfo(path: &Path) -> Result<NarInfo> {
    let text = String::from_utf8(read_limited(path, MAX_NARINFO_BYTES)?)
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    NarInfo::parse(&text).with_context(|| format!("{}", path.display()))
}

pub fn load_policy(path: &Path) -> Result<Policy> {
    let text = String::from_utf8(read_limited(path, 1 << 20)?)
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Policy::parse(&text).with_context(|| format!("{}", path.display()))
}

/// Where a command keeps its state: `explicit` (`--state`), or `name` in
/// `$XDG_STATE_HOME/reprolog/` (`~/.local/state/reprolog/` when unset), created private. The
/// command says where, so that no file appears without a word.
pub fn state_file(explicit: Option<PathBuf>, name: &str) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p,
        None => {
            let dir = xdg_dir("XDG_STATE_HOME", ".local/state")?.join("reprolog");
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
            dir.join(name)
        }
    };
    eprintln!("state: {}", path.display());
    Ok(path)
}

/// The policy file: `explicit` (`--policy`), or `$XDG_CONFIG_HOME/reprolog/policy`
/// (`~/.config/reprolog/policy`) when that exists.
pub fn policy_file(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let default = xdg_dir("XDG_CONFIG_HOME", ".config")?.join("reprolog/policy");
    if default.exists() {
        return Ok(default);
    }
    bail!(
        "no --policy given and no {} (the policy file is described in spec/policy.md)",
        default.display()
    )
}

fn xdg_dir(var: &str, under_home: &str) -> Result<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(PathBuf::from(
            std::env::var_os("HOME").context("neither $XDG_* nor $HOME is set")?,
        )
        .join(under_home)),
    }
}

/// A progress line on stderr, shown only on a terminal and at most five times a second.
pub struct Progress {
    tty: bool,
    what: &'static str,
    start: Instant,
    last: Instant,
    total: u64,
}

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            what,
            start: Instant::now(),
            last: Instant::now(),
            total,
        }
    }

    pub fn show(&mut self, done: u64) {
        if !self.tty || (done < self.total && self.last.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.last = Instant::now();
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
        let eta = self.total.saturating_sub(done) as f64 / rate.max(1e-3);
        let filled = (30 * done).checked_div(self.total).unwrap_or(30).min(30) as usize;
        eprint!(
            "\r[{}{}] {done}/{} {}  {rate:.0}/s  ETA {eta:.0}s ",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            self.total,
            self.what,
        );
        let _ = std::io::stderr().flush();
    }

    /// Ends the line, if one was drawn.
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// The log to talk to: `--log`, or the first policy log with a URL.
pub fn log_client(log: Option<&str>, policy: Option<&Policy>) -> Result<LogClient> {
    let url = match log {
        Some(u) => u.to_owned(),
        None => policy
            .and_then(|p| p.logs.iter().find_map(|l| l.url.clone()))
            .context("no --log given and no log URL in the policy")?,
    };
    Ok(LogClient::new(&url)?)
}

/// The witnesses that cosigned, in words.
pub fn cosigners(names: &[String]) -> String {
    if names.is_empty() {
        "no witness".into()
    } else {
        names.join(", ")
    }
}

/// Proves entry `index` (its exact bytes `bytes`, as the log showed them) in `checkpoint`:
/// decodes it, checks its builder signature, and verifies its inclusion proof. Returns the
/// decoded entry; nothing of it is trusted before this passes.
pub fn prove_entry(
    client: &LogClient,
    checkpoint: &Checkpoint,
    index: u64,
    bytes: &[u8],
) -> Result<Entry> {
    if index >= checkpoint.size {
        bail!("entry {index} is not in checkpoint {} yet", checkpoint.size);
    }
    let entry = Entry::decode(bytes).with_context(|| format!("entry {index} is malformed"))?;
    entry
        .verify_signature()
        .with_context(|| format!("entry {index}: the builder signature does not verify"))?;
    prove_inclusion(client, checkpoint, index, bytes)?;
    Ok(entry)
}

/// Fetches the log's checkpoint and checks it against the policy.
pub fn trusted_checkpoint(client: &LogClient, policy: &Policy) -> Result<TrustedCheckpoint> {
    let bytes = client.checkpoint()?;
    policy.verify_checkpoint(&bytes).with_context(|| {
        format!(
            "the checkpoint of {} does not satisfy the policy",
            client.base_url()
        )
    })
}

/// The log's key registry as of `checkpoint`, recomputed from its key events, each proven in
/// the checkpoint and applied by the rules of `spec/entry.md`. `log_key` is the log's key from
/// the policy; without one, the key the log serves is taken, as the checkpoint is.
pub fn proven_registry(
    client: &LogClient,
    checkpoint: &Checkpoint,
    log_key: Option<&VerifierKey>,
) -> Result<KeyRegistry> {
    let mut events = Vec::new();
    let served = client.for_each_key_event(|e| -> Result<()> {
        if e.index < checkpoint.size {
            events.push(e);
        }
        Ok(())
    })?;
    let log_key = match (log_key, served) {
        (Some(k), _) => k.clone(),
        (None, Some(k)) => VerifierKey::parse(&k).context("the log's key, as served")?,
        (None, None) => bail!("the log serves no key, and no policy names it"),
    };
    let mut registry = KeyRegistry::new(log_key);
    for e in events {
        let bytes = e.entry.as_bytes();
        let LogEntry::Key(event) = LogEntry::decode(bytes)
            .with_context(|| format!("key event {} is malformed", e.index))?
        else {
            bail!(
                "the log listed entry {} as a key event, but it is not one",
                e.index
            );
        };
        prove_inclusion(client, checkpoint, e.index, bytes)?;
        registry
            .apply(e.index, &event)
            .with_context(|| format!("INVALID KEY EVENT at index {}", e.index))?;
    }
    Ok(registry)
}

/// The log's key, from the policy's log of the checkpoint's origin.
pub fn policy_log_key<'a>(policy: Option<&'a Policy>, origin: &str) -> Option<&'a VerifierKey> {
    policy?
        .logs
        .iter()
        .map(|l| &l.key)
        .find(|k| k.name() == origin)
}

/// Verifies entry `index`'s inclusion proof in `checkpoint`.
fn prove_inclusion(
    client: &LogClient,
    checkpoint: &Checkpoint,
    index: u64,
    bytes: &[u8],
) -> Result<()> {
    let proof = client.inclusion_proof(index, checkpoint.size)?;
    merkle::verify_inclusion(
        &proof,
        index,
        checkpoint.size,
        &merkle::leaf_hash(bytes),
        &checkpoint.root,
    )
    .with_context(|| {
        format!(
            "entry {index} is not proven in checkpoint {}",
            checkpoint.size
        )
    })
}

/// Reads entries `from..to` through C2SP entry bundles, checking each decodes, verifying each
/// signing event's builder signature (key events are checked by the registry they apply to),
/// and appending each leaf to `range` (which must be at `from`).
pub fn read_entries(
    client: &LogClient,
    range: &mut CompactRange,
    to: u64,
    mut each: impl FnMut(u64, &LogEntry, &[u8]) -> Result<()>,
) -> Result<()> {
    let from = range.size();
    let mut index = from;
    let mut progress = Progress::new("entries", to.saturating_sub(from));
    while index < to {
        progress.show(index - from);
        let tile = index / TILE_WIDTH;
        let width = (to - tile * TILE_WIDTH).min(TILE_WIDTH) as u16;
        let path = TilePath {
            kind: TileKind::Entries,
            index: tile,
            width,
        };
        let bundle = client.get(&format!("/{path}"))?;
        let entries = decode_bundle(&bundle).with_context(|| format!("{path}"))?;
        if entries.len() != usize::from(width) {
            bail!("{path} holds {} entries, not {width}", entries.len());
        }
        for (i, bytes) in entries.into_iter().enumerate() {
            let n = tile * TILE_WIDTH + i as u64;
            if n < index {
                continue;
            }
            let entry =
                LogEntry::decode(bytes).with_context(|| format!("entry {n} is malformed"))?;
            if let LogEntry::Signing(signing) = &entry {
                signing
                    .verify_signature()
                    .with_context(|| format!("entry {n}: the builder signature does not verify"))?;
            }
            range.push(merkle::leaf_hash(bytes));
            each(n, &entry, bytes)?;
            index = n + 1;
        }
    }
    if to > from {
        progress.show(to - from);
        progress.finish();
    }
    Ok(())
}
