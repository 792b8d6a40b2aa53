//! Following one log (blocking, one thread per log). Each step accepts the log's checkpoint
//! only if it satisfies the policy and is consistent with the last one accepted, reads the new
//! entries through C2SP entry bundles, checks every entry (its encoding, its builder
//! signature, its key by the log's registry as of its index, each key event by the registry's
//! rules), rebuilds the tree and proves it against the checkpoint, and only then commits the
//! chunk. A log that forks, rolls back or serves a bad entry stops being followed, with the
//! reason recorded; the index keeps what was verified before.

use std::sync::Arc;
use std::time::Duration;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use reprolog_verifier::attestation::BuildFacts;
use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::dating::{DatedCheckpoint, Timeline};
use reprolog_verifier::entry::{Entry, LogEntry};
use reprolog_verifier::key_event::KeyAction;
use reprolog_verifier::merkle::{self, CompactRange, Hash};
use reprolog_verifier::note::VerifierKey;
use reprolog_verifier::policy::{Policy, TrustedCheckpoint};
use reprolog_verifier::registry::KeyRegistry;
use reprolog_verifier::text::printable;
use reprolog_verifier::tiles::{decode_bundle, TileKind, TilePath, TILE_WIDTH};

use crate::backend::DbError;
use crate::db::{Chunk, Db, Leader, LogRow, NewClaim};
use crate::fetch::Fetcher;

/// The most entries one commit takes: memory stays bounded on a large log, and each chunk is
/// proven against the checkpoint with a consistency proof from its end.
pub const CHUNK_ENTRIES: u64 = 64 * TILE_WIDTH;

/// Why a step did not finish.
#[derive(Debug)]
pub enum StepError {
    /// The log misbehaved: following stops for good, and the reason is kept.
    Stop(String),
    /// Something that may pass (the log down, a checkpoint short of its quorum): tried again.
    Retry(String),
}

fn stop(why: impl Into<String>) -> StepError {
    StepError::Stop(why.into())
}

fn retry(why: impl std::fmt::Display) -> StepError {
    StepError::Retry(printable(&why.to_string()).into_owned())
}

/// A log of the policy, and how to follow it.
pub struct Follower {
    pub db: Arc<Db>,
    pub policy: Arc<Policy>,
    pub origin: String,
    pub log_key: VerifierKey,
    pub fetch: Fetcher,
    pub interval: Duration,
    /// The registry as of the verified size, replayed from the index at the first step.
    registry: Option<KeyRegistry>,
    /// The next chunk's entries, read and checked while the last chunk was committed.
    prefetched: Option<Prefetched>,
}

/// Entries read and checked ahead, from `from` on. They are only decoded and signature-checked:
/// the step that takes them still proves them against its checkpoint and judges their keys.
struct Prefetched {
    from: u64,
    entries: Vec<CheckedEntry>,
}

/// An entry with its index and bytes, decoded and, if a signing event, signature-checked.
type CheckedEntry = (u64, Vec<u8>, LogEntry);

impl Follower {
    pub fn new(
        db: Arc<Db>,
        policy: Arc<Policy>,
        log_key: VerifierKey,
        fetch: Fetcher,
        interval: Duration,
    ) -> Self {
        Follower {
            db,
            policy,
            origin: log_key.name().to_owned(),
            log_key,
            fetch,
            interval,
            registry: None,
            prefetched: None,
        }
    }

    /// Follows until the log misbehaves, while this explorer leads the log (in PostgreSQL,
    /// another explorer may; this one then waits to take over).
    pub fn run(mut self) {
        let mut leader: Option<Leader> = None;
        loop {
            if !leader.as_mut().is_some_and(Leader::holds) {
                leader = None;
                self.registry = None;
                self.prefetched = None;
                match self.db.lead(&self.origin) {
                    Ok(Some(l)) => {
                        tracing::info!("{}: following", self.origin);
                        leader = Some(l);
                    }
                    Ok(None) => {
                        std::thread::sleep(self.interval);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!("{}: taking the lead: {e}", self.origin);
                        std::thread::sleep(self.interval);
                        continue;
                    }
                }
            }
            let row = match self.db.log(&self.origin, self.fetch.base()) {
                Ok(row) => row,
                Err(e) => {
                    tracing::error!("{}: {e}", self.origin);
                    std::thread::sleep(self.interval);
                    continue;
                }
            };
            if let Some(why) = &row.stopped {
                tracing::warn!("{}: not followed: {why}", self.origin);
                return;
            }
            match self.step(&row) {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(self.interval),
                Err(StepError::Retry(e)) => {
                    tracing::warn!("{}: {e}", self.origin);
                    self.registry = None;
                    self.prefetched = None;
                    let _ = self.db.note_error(row.id, &e);
                    std::thread::sleep(self.interval);
                }
                Err(StepError::Stop(why)) => {
                    tracing::error!("{}: following stopped: {why}", self.origin);
                    if let Err(e) = self.db.stop(row.id, &why) {
                        tracing::error!("{}: recording the stop: {e}", self.origin);
                    }
                    return;
                }
            }
        }
    }

    fn trusted_checkpoint(&self) -> Result<TrustedCheckpoint, StepError> {
        let note = self.fetch.get("/checkpoint").map_err(retry)?;
        let trusted = self
            .policy
            .verify_checkpoint(&note)
            .map_err(|e| retry(format!("the checkpoint does not satisfy the policy: {e}")))?;
        if trusted.checkpoint.origin != self.origin {
            return Err(stop(format!(
                "the log at {} serves checkpoints of {:?}",
                self.fetch.base(),
                trusted.checkpoint.origin
            )));
        }
        Ok(trusted)
    }

    /// One step: verifies and commits at most [`CHUNK_ENTRIES`] new entries; returns whether
    /// more are waiting.
    pub fn step(&mut self, row: &LogRow) -> Result<bool, StepError> {
        let trusted = self.trusted_checkpoint()?;
        let cp = &trusted.checkpoint;
        let mut range = decode_edge(row)?;
        let old_root = range.root();
        if cp.size < row.size {
            return Err(stop(format!(
                "ROLLBACK: the log serves a checkpoint of size {}, below the {} entries verified",
                cp.size, row.size
            )));
        }
        if cp.size == row.size {
            if cp.root != old_root {
                return Err(stop(format!(
                    "FORK: a checkpoint of size {} with another root than the verified tree",
                    cp.size
                )));
            }
            return Ok(false);
        }
        if row.size > 0 {
            self.prove_consistent(row.size, &old_root, cp)?;
        }
        let mut registry = match self.registry.take() {
            Some(r) => r,
            None => self.replay(row)?,
        };
        // Entries read ahead end at or before the checkpoint they were read under, which is
        // no larger than this one.
        let prefetched = self
            .prefetched
            .take()
            .filter(|p| p.from == row.size && !p.entries.is_empty())
            .map(|p| p.entries);
        let end = match &prefetched {
            Some(entries) => row.size + entries.len() as u64,
            None => cp.size.min(row.size + CHUNK_ENTRIES),
        };
        let mut chunk = Chunk {
            checkpoints: self.dated_checkpoints(row)?,
            ..Chunk::default()
        };
        let mut timeline: Vec<DatedCheckpoint> = self
            .db
            .checkpoints_above(row.id, row.size)
            .map_err(retry)?
            .into_iter()
            .map(|(size, time)| DatedCheckpoint { size, time })
            .collect();
        timeline.extend(
            chunk
                .checkpoints
                .iter()
                .map(|&(size, time)| DatedCheckpoint { size, time }),
        );
        let timeline = Timeline::new(timeline);
        let entries = match prefetched {
            Some(entries) => entries,
            None => decode_and_verify(self.read_entries(row.size, end, cp.size)?)?,
        };
        for (index, bytes, entry) in entries {
            range.push(merkle::leaf_hash(&bytes));
            match entry {
                LogEntry::Key(event) => {
                    registry
                        .apply(index, &event)
                        .map_err(|e| stop(format!("INVALID KEY EVENT at index {index}: {e}")))?;
                    if matches!(event.action, KeyAction::Revoke { .. }) {
                        chunk.voids.extend(voids(&registry));
                    }
                    chunk
                        .key_events
                        .push((index, String::from_utf8_lossy(&bytes).into_owned()));
                }
                LogEntry::Signing(entry) => {
                    let status = registry.status(&entry.builder, index);
                    let Some(identity) = status.identity() else {
                        return Err(stop(format!(
                            "UNREGISTERED KEY: entry {index} is signed by {}, which is {status}",
                            entry.builder.name
                        )));
                    };
                    chunk
                        .claims
                        .push(claim(index, &entry, identity, timeline.logged_by(index)));
                }
            }
        }
        let root = range.root();
        if end == cp.size {
            if root != cp.root {
                return Err(stop(format!(
                    "TREE MISMATCH: the entries hash to another root than checkpoint {}",
                    cp.size
                )));
            }
        } else {
            // The chunk's tree is a prefix of the signed one.
            self.prove_consistent(end, &root, cp)?;
        }
        chunk.size = end;
        chunk.edge = range
            .hashes()
            .iter()
            .map(|h| B64.encode(h))
            .collect::<Vec<_>>()
            .join(",");
        chunk.checkpoint = trusted.note.encode();
        chunk.cosigned_by = trusted.cosigned_by.join(",");
        // The next chunk is read and checked on the other cores while this one is committed:
        // the follower's two big costs overlap.
        let next = cp.size.min(end + CHUNK_ENTRIES);
        let (committed, prefetched) = std::thread::scope(|scope| {
            let commit = scope.spawn(|| self.db.commit(row.id, row.size, &chunk));
            let prefetched = (end < cp.size)
                .then(|| decode_and_verify(self.read_entries(end, next, cp.size).ok()?).ok())
                .flatten();
            let committed = commit
                .join()
                .unwrap_or_else(|_| Err(DbError::Other("the committing thread panicked".into())));
            (committed, prefetched)
        });
        committed.map_err(retry)?;
        self.prefetched = prefetched.map(|entries| Prefetched { from: end, entries });
        self.registry = Some(registry);
        Ok(end < cp.size)
    }

    /// Proves that the tree of `size` entries with root `root` is a prefix of `cp`.
    fn prove_consistent(&self, size: u64, root: &Hash, cp: &Checkpoint) -> Result<(), StepError> {
        let path = format!("/api/v1/proof/consistency?old={size}&new={}", cp.size);
        let answer: reprolog_verifier::api::ConsistencyProof =
            self.fetch.get_json(&path).map_err(retry)?;
        let proof = reprolog_verifier::api::decode_proof(&answer.proof)
            .ok_or_else(|| retry(format!("{path}: not a list of base64 hashes")))?;
        merkle::verify_consistency(&proof, size, cp.size, root, &cp.root).map_err(|e| {
            stop(format!(
                "FORK: checkpoint {} is not consistent with the {size} entries verified: {e}",
                cp.size
            ))
        })
    }

    /// The registry as of the verified size, from the key events in the index.
    fn replay(&self, row: &LogRow) -> Result<KeyRegistry, StepError> {
        let mut registry = KeyRegistry::new(self.log_key.clone());
        for (index, text) in self.db.key_events(row.id).map_err(retry)? {
            let LogEntry::Key(event) = LogEntry::decode(text.as_bytes())
                .map_err(|e| stop(format!("the index's key event {index}: {e}")))?
            else {
                return Err(stop(format!("the index's key event {index} is not one")));
            };
            registry
                .apply(index, &event)
                .map_err(|e| stop(format!("the index's key event {index}: {e}")))?;
        }
        Ok(registry)
    }

    /// The log's published checkpoints not dated yet, each verified against the policy, with
    /// the time of its earliest cosignature. A log that serves no history dates nothing.
    fn dated_checkpoints(&self, row: &LogRow) -> Result<Vec<(u64, u64)>, StepError> {
        let mut after = self.db.dated_to(row.id).map_err(retry)?;
        let mut dated = Vec::new();
        for _ in 0..64 {
            let path = format!("/api/v1/checkpoints?after={after}&limit=1000");
            let Ok(page) = self
                .fetch
                .get_json::<reprolog_verifier::api::CheckpointPage>(&path)
            else {
                break;
            };
            for note in &page.checkpoints {
                if let Ok(t) = self.policy.verify_checkpoint(note.as_bytes()) {
                    if t.checkpoint.origin == self.origin {
                        dated.extend(DatedCheckpoint::of(&t).map(|d| (d.size, d.time)));
                    }
                }
            }
            match page.next {
                Some(next) if next > after => after = next,
                _ => break,
            }
        }
        Ok(dated)
    }

    /// Entries `from..to` through entry bundles of a tree of `size` entries, with their
    /// indexes.
    fn read_entries(
        &self,
        from: u64,
        to: u64,
        size: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StepError> {
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut index = from;
        while index < to {
            let tile = index / TILE_WIDTH;
            let width = (size - tile * TILE_WIDTH).min(TILE_WIDTH) as u16;
            let path = TilePath {
                kind: TileKind::Entries,
                index: tile,
                width,
            };
            let bundle = self.fetch.get(&format!("/{path}")).map_err(retry)?;
            let entries = decode_bundle(&bundle).map_err(|e| stop(format!("{path}: {e}")))?;
            if entries.len() != usize::from(width) {
                return Err(stop(format!(
                    "{path} holds {} entries, not {width}",
                    entries.len()
                )));
            }
            for (i, bytes) in entries.into_iter().enumerate() {
                let n = tile * TILE_WIDTH + i as u64;
                if n >= index && n < to {
                    out.push((n, bytes.to_vec()));
                    index = n + 1;
                }
            }
        }
        Ok(out)
    }
}

/// Decodes every entry and checks every signing event's builder signature, on every core:
/// strict verification is most of the follower's work. Key events are checked by the
/// registry, in order.
fn decode_and_verify(entries: Vec<(u64, Vec<u8>)>) -> Result<Vec<CheckedEntry>, StepError> {
    let check = |(index, bytes): (u64, Vec<u8>)| -> Result<CheckedEntry, StepError> {
        let entry =
            LogEntry::decode(&bytes).map_err(|e| stop(format!("INVALID ENTRY {index}: {e}")))?;
        if let LogEntry::Signing(signing) = &entry {
            signing
                .verify_signature()
                .map_err(|e| stop(format!("INVALID ENTRY {index}: its builder signature: {e}")))?;
        }
        Ok((index, bytes, entry))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = entries.len().div_ceil(threads).max(1);
    let mut parts: Vec<Vec<(u64, Vec<u8>)>> = Vec::new();
    let mut rest = entries.into_iter().peekable();
    while rest.peek().is_some() {
        parts.push(rest.by_ref().take(per_thread).collect());
    }
    let checked: Vec<Result<Vec<_>, StepError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(check).collect()))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(stop("a verifying thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::new();
    for part in checked {
        out.extend(part?);
    }
    Ok(out)
}

/// The claim an entry makes, for `identity`.
fn claim(index: u64, entry: &Entry, identity: &str, logged_at: Option<u64>) -> NewClaim {
    let base = entry.store_path.base_name();
    let deriver = entry
        .statement
        .as_deref()
        .and_then(|s| BuildFacts::parse(s, &entry.builder.name).ok())
        .map(|f| f.derivation.to_string());
    NewClaim {
        index,
        kind: entry.kind.as_str(),
        store_path: entry.store_path.to_string(),
        hash_part: entry.store_path.hash_part().to_owned(),
        name: base.get(33..).unwrap_or_default().to_owned(),
        builder: identity.to_owned(),
        key: entry.builder.to_string(),
        key_name: entry.builder.name.clone(),
        nar_hash: entry.nar_hash.to_nix32(),
        nar_size: entry.nar_size,
        references: entry.references.iter().cloned().collect(),
        deriver,
        logged_at,
    }
}

/// Every key the registry holds void from some index, as the index's void updates.
fn voids(registry: &KeyRegistry) -> Vec<(String, u64, String)> {
    registry
        .records()
        .filter_map(|r| {
            let (from, why) = r.void_from()?;
            Some((
                r.key.to_string(),
                from,
                format!("revoked as of index {from} ({why})"),
            ))
        })
        .collect()
}

fn decode_edge(row: &LogRow) -> Result<CompactRange, StepError> {
    let hashes: Vec<Hash> = row
        .edge
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|h| B64.decode(h).ok().and_then(|b| b.try_into().ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| stop("the index's tree edge is corrupt"))?;
    CompactRange::from_parts(row.size, hashes)
        .ok_or_else(|| stop("the index's tree edge is corrupt"))
}
