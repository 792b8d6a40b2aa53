//! The gate's state and its two answers: the decision about a path (cached per path, trust
//! and checkpoint) and, for an allowed path, the upstream narinfo that matches the decided
//! claim, re-signed with the gate's key.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use reprolog_verifier::decision::Decision;
use reprolog_verifier::locks;
use reprolog_verifier::nix::store_path::HASH_PART_LEN;
use reprolog_verifier::nix::{nix32, NarInfo, NixSecretKey};
use reprolog_verifier::text::printable;
use serde::{Deserialize, Serialize};

use crate::checkpoints::Checkpoints;
use crate::decide::{decision_of, prove_path, Proven};
use crate::failure::Failure;
use crate::log::LogClient;
use crate::metrics::Metrics;
use crate::registry::Registries;
use crate::trust::TrustFile;
use crate::upstream::{safe_relative, Fetched, Upstream};

/// `GET /api/v1/decisions/<hash>` (200): the trust file's decision and the checkpoint every
/// claim in it was proven in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionAnswer {
    #[serde(flatten)]
    pub decision: Decision,
    /// The size of the checkpoint the claims were proven in.
    pub checkpoint_size: u64,
}

/// `GET /api/v1/decisions/<hash>` when no decision could be made (503; 400 for a request
/// that names no store path): the path is denied, and `reason` and `error` say why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoDecision {
    /// `/nix/store/<hash part>`.
    pub store_path: String,
    /// Always false: the gate fails closed.
    pub allowed: bool,
    /// What failed: `log-error`, `checkpoint-rejected`, `fork`, `proof-failed`,
    /// `ambiguous-store-path`, `not-a-store-path` or `internal` (in `/metrics`, with `_`).
    pub reason: String,
    /// What happened, in words.
    pub error: String,
}

/// A decision, as cached.
pub struct Decided {
    /// The trust generation it was made under.
    pub generation: u64,
    /// The checkpoint size its claims were proven in.
    pub checkpoint_size: u64,
    pub proven: Proven,
    pub decision: Decision,
    /// For an allowed path, the narinfo served once one upstream matched.
    served: Mutex<Option<Arc<String>>>,
}

/// Why a narinfo is not served.
pub enum Denied {
    /// The trust file denies the path.
    Decision(Arc<Decided>),
    /// Something failed, and the gate fails closed.
    Failure(Failure),
}

impl Denied {
    /// The metric label and the first word of the reason header.
    pub fn label(&self) -> &'static str {
        match self {
            Denied::Decision(d) => d.decision.outcome.label(),
            Denied::Failure(f) => f.label(),
        }
    }

    /// `reason: words`, for the `X-Reprolog-Reason` header and the log; the reason as the
    /// decisions API spells it (`quorum-not-met`, `fork`, …).
    pub fn reason(&self) -> String {
        let reason = self.label().replace('_', "-");
        match self {
            Denied::Decision(d) => format!(
                "{reason}: {} (checkpoint {})",
                d.decision.outcome.describe(),
                d.checkpoint_size
            ),
            Denied::Failure(f) => format!("{reason}: {f}"),
        }
    }
}

pub struct Gate {
    pub key: NixSecretKey,
    pub trust: TrustFile,
    pub log: Arc<LogClient>,
    pub checkpoints: Arc<Checkpoints>,
    pub upstreams: Vec<Upstream>,
    pub metrics: Arc<Metrics>,
    /// `Priority:` in `/nix-cache-info`.
    pub priority: u32,
    /// By hash part.
    cache: Mutex<HashMap<String, Arc<Decided>>>,
    /// The log's key registry as of the newest accepted checkpoint.
    registries: Registries,
    cache_capacity: usize,
    /// Permits for NAR streams, each of which holds a thread of the blocking pool.
    pub nar_streams: Arc<tokio::sync::Semaphore>,
    /// Permits for decisions being made ([`CONCURRENT_DECISIONS`]): each holds a thread of
    /// the blocking pool and asks the log, so that a flood of unknown hashes waits its turn
    /// rather than crowd the log and the gate's threads.
    deciding: tokio::sync::Semaphore,
}

/// How many decisions are made at once; the rest wait. Nix asks for narinfos with about 25
/// connections (`http-connections`).
pub const CONCURRENT_DECISIONS: usize = 16;

/// Whether `s` is a store path hash part: 32 nix32 characters.
pub fn is_hash_part(s: &str) -> bool {
    s.len() == HASH_PART_LEN && s.bytes().all(|b| nix32::ALPHABET.contains(&b))
}

impl Gate {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: NixSecretKey,
        trust: TrustFile,
        log: Arc<LogClient>,
        checkpoints: Arc<Checkpoints>,
        upstreams: Vec<Upstream>,
        metrics: Arc<Metrics>,
        priority: u32,
        cache_capacity: usize,
        nar_streams: usize,
    ) -> Self {
        Gate {
            key,
            trust,
            log,
            checkpoints,
            upstreams,
            metrics,
            priority,
            cache: Mutex::new(HashMap::new()),
            registries: Registries::default(),
            cache_capacity: cache_capacity.max(1),
            nar_streams: Arc::new(tokio::sync::Semaphore::new(nar_streams.max(1))),
            deciding: tokio::sync::Semaphore::new(CONCURRENT_DECISIONS),
        }
    }

    /// The decision about a hash part at the current checkpoint and trust, and whether it
    /// came from the cache. A decision made at an older checkpoint under the same trust is
    /// brought forward with the events logged since; one made under another trust is made
    /// again from the start.
    pub async fn decided(
        self: &Arc<Self>,
        hash_part: &str,
    ) -> Result<(Arc<Decided>, bool), Failure> {
        if !is_hash_part(hash_part) {
            return Err(Failure::BadRequest(format!(
                "{} is not a store path hash (32 nix32 characters)",
                printable(hash_part)
            )));
        }
        let cp = self.checkpoints.current().await?;
        let trust = self.trust.current();
        let size = cp.checkpoint.size;
        let cached = locks::lock(&self.cache).get(hash_part).cloned();
        let prev = match cached {
            Some(d) if d.generation == trust.generation && d.checkpoint_size == size => {
                self.metrics.cache_hits.fetch_add(1, Relaxed);
                return Ok((d, true));
            }
            Some(d) if d.generation == trust.generation && d.checkpoint_size < size => Some(d),
            _ => None,
        };
        self.metrics.cache_misses.fetch_add(1, Relaxed);
        let _permit = self
            .deciding
            .acquire()
            .await
            .map_err(|_| Failure::Internal("stopping".into()))?;
        let this = Arc::clone(self);
        let hash = hash_part.to_owned();
        let generation = trust.generation;
        let decided = tokio::task::spawn_blocking(move || {
            let origin = &cp.checkpoint.origin;
            let log_key = this.checkpoints.log_key(origin).ok_or_else(|| {
                Failure::Checkpoint(format!("the log policy names no key for the log {origin}"))
            })?;
            let registry = this.registries.at(&this.log, &log_key, &cp.checkpoint)?;
            let (proven, proofs) = prove_path(
                &this.log,
                &trust.trust,
                &registry,
                &hash,
                &cp.checkpoint,
                prev.as_ref().map(|p| &p.proven),
            )?;
            this.metrics.proofs.fetch_add(proofs, Relaxed);
            let decision = decision_of(&trust.trust, &registry, &hash, &proven)?;
            Ok::<_, Failure>(Decided {
                generation,
                checkpoint_size: size,
                proven,
                decision,
                served: Mutex::new(None),
            })
        })
        .await
        .map_err(|e| Failure::Internal(format!("deciding {hash_part}: {e}")))?;
        let decided = match decided {
            Ok(d) => Arc::new(d),
            Err(f) => {
                tracing::warn!("{hash_part}: denied: {}: {f}", f.label());
                return Err(f);
            }
        };
        let d = &decided.decision;
        tracing::info!(
            "{}: {}: {} (checkpoint {size})",
            d.store_path,
            if d.allowed { "allowed" } else { "denied" },
            d.outcome.describe()
        );
        let mut cache = locks::lock(&self.cache);
        if cache.len() >= self.cache_capacity {
            // Crude but bounded: a full cache starts again, and decisions are remade as
            // they are asked for.
            cache.clear();
        }
        cache.insert(hash_part.to_owned(), Arc::clone(&decided));
        Ok((decided, false))
    }

    /// The narinfo to serve for a hash part, or why not; and whether the decision was cached.
    pub async fn narinfo(self: &Arc<Self>, hash_part: &str) -> (Result<Arc<String>, Denied>, bool) {
        let (decided, hit) = match self.decided(hash_part).await {
            Ok(d) => d,
            Err(f) => return (Err(Denied::Failure(f)), false),
        };
        if !decided.decision.allowed {
            return (Err(Denied::Decision(decided)), hit);
        }
        if let Some(text) = locks::lock(&decided.served).clone() {
            return (Ok(text), hit);
        }
        let this = Arc::clone(self);
        let d = Arc::clone(&decided);
        let hash = hash_part.to_owned();
        let served = tokio::task::spawn_blocking(move || this.matching_narinfo(&d.decision, &hash))
            .await
            .unwrap_or_else(|e| Err(Failure::Internal(format!("serving {hash_part}: {e}"))));
        match served {
            Ok(text) => {
                let text = Arc::new(text);
                *locks::lock(&decided.served) = Some(Arc::clone(&text));
                (Ok(text), hit)
            }
            Err(f) => {
                tracing::warn!(
                    "{}: denied: {}: {f}",
                    decided.decision.store_path,
                    f.label()
                );
                (Err(Denied::Failure(f)), hit)
            }
        }
    }

    /// The first upstream narinfo whose store path, NarHash, NarSize and References are the
    /// decided claim's, its `Sig:` lines replaced by the gate's and its URL pointing at the
    /// gate's `/nar/<upstream>/…` (blocking).
    fn matching_narinfo(&self, decision: &Decision, hash_part: &str) -> Result<String, Failure> {
        let claim = decision
            .claim
            .as_ref()
            .ok_or_else(|| Failure::Internal("an allowed decision without a claim".into()))?;
        let mut notes = Vec::new();
        for (i, up) in self.upstreams.iter().enumerate() {
            let counters = &self.metrics.upstreams[i].1;
            let text = match up.narinfo(hash_part) {
                Ok(Fetched::Found(t)) => t,
                Ok(Fetched::NotFound) => {
                    notes.push(format!("{}: no narinfo", up.url()));
                    continue;
                }
                Err(e) => {
                    counters.errors.fetch_add(1, Relaxed);
                    notes.push(format!("{}: {e}", up.url()));
                    continue;
                }
            };
            let mut info = match NarInfo::parse(&text) {
                Ok(info) => info,
                Err(e) => {
                    counters.errors.fetch_add(1, Relaxed);
                    notes.push(format!("{}: the narinfo does not parse: {e}", up.url()));
                    continue;
                }
            };
            let mismatch = if info.store_path.as_str() != decision.store_path {
                Some(format!("it names {}", info.store_path))
            } else if info.nar_hash.to_nix32() != claim.nar_hash {
                Some(format!(
                    "NarHash {} is not the decided {}",
                    info.nar_hash.to_nix32(),
                    claim.nar_hash
                ))
            } else if info.nar_size != claim.nar_size {
                Some(format!(
                    "NarSize {} is not the decided {}",
                    info.nar_size, claim.nar_size
                ))
            } else if !info.references.iter().eq(claim.references.iter()) {
                Some("its References are not the decided ones".into())
            } else if !safe_relative(&info.url) {
                Some(format!(
                    "its URL {:?} is not a plain relative path",
                    printable(&info.url)
                ))
            } else {
                None
            };
            if let Some(m) = mismatch {
                counters.mismatches.fetch_add(1, Relaxed);
                notes.push(format!("{}: {m}", up.url()));
                continue;
            }
            info.sigs.clear();
            info.url = format!("nar/{i}/{}", info.url);
            info.sign(&self.key);
            counters.served.fetch_add(1, Relaxed);
            return Ok(info.to_text());
        }
        Err(Failure::Upstream(format!(
            "no upstream serves a narinfo that matches the decided claim ({})",
            notes.join("; ")
        )))
    }
}
