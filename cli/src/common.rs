//! What the log-facing commands share: policies, trusted checkpoints, and reading entries.

use std::path::Path;

use crate::client::LogClient;
use anyhow::{bail, Context, Result};
use reprolog_verifier::entry::Entry;
use reprolog_verifier::merkle::{self, CompactRange};
use reprolog_verifier::nix::NarInfo;
use reprolog_verifier::policy::{Policy, TrustedCheckpoint};
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

/// The log to talk to: `--log`, or the first policy log with a URL.
pub fn log_client(log: Option<&str>, policy: Option<&Policy>) -> Result<LogClient> {
    let url = match log {
        Some(u) => u.to_owned(),
        None => policy
            .and_then(|p| p.logs.iter().find_map(|l| l.url.clone()))
            .context("no --log given and no log URL in the policy")?,
    };
    Ok(LogClient::new(&url))
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

/// Reads entries `from..to` through C2SP entry bundles, checking each decodes, verifying each
/// builder signature, and appending each leaf to `range` (which must be at `from`).
pub fn read_entries(
    client: &LogClient,
    range: &mut CompactRange,
    to: u64,
    mut each: impl FnMut(u64, &Entry, &[u8]),
) -> Result<()> {
    let from = range.size();
    let mut index = from;
    while index < to {
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
            let entry = Entry::decode(bytes).with_context(|| format!("entry {n} is malformed"))?;
            entry
                .verify_signature()
                .with_context(|| format!("entry {n}: the builder signature does not verify"))?;
            range.push(merkle::leaf_hash(bytes));
            each(n, &entry, bytes);
            index = n + 1;
        }
    }
    Ok(())
}
