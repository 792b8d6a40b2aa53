//! The checkpoint every decision is proven against: fetched from the log at most about once a
//! second, accepted only when it satisfies the log policy and is consistent with the last one
//! accepted, which is kept in `DATA/checkpoint` so that a rollback or a fork is caught across
//! restarts too.
//!
//! A fork (the same size with another root, or a tree that the log cannot prove extends the
//! accepted one) or a rollback (a smaller tree) is logged at ERROR, written to `DATA/fork`
//! with both checkpoints, and latches: every request is denied, whatever the log serves
//! afterwards, until an operator has investigated and removed `DATA/fork` (the gate notices
//! within a second, or at SIGHUP or restart). If the log was legitimately replaced, the
//! operator removes `DATA/checkpoint` too, so that the new log's checkpoint is accepted afresh.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::keyfile;
use reprolog_verifier::locks;
use reprolog_verifier::merkle;
use reprolog_verifier::note::Note;
use reprolog_verifier::policy::Policy;
use reprolog_verifier::text::printable;

use crate::failure::Failure;
use crate::log::LogClient;
use crate::metrics::Metrics;

/// A checkpoint the gate accepted.
#[derive(Debug)]
pub struct Accepted {
    pub checkpoint: Checkpoint,
    /// The signed note as the log served it.
    pub note: Vec<u8>,
}

#[derive(Default)]
struct State {
    accepted: Option<Arc<Accepted>>,
    /// When the log was last asked, whatever came of it.
    asked: Option<Instant>,
    /// Why the last attempt failed, if it did: it stands until the next attempt.
    error: Option<Failure>,
    /// The fork or rollback latched, in words.
    fork: Option<String>,
}

pub struct Checkpoints {
    dir: PathBuf,
    policy: Policy,
    log: Arc<LogClient>,
    metrics: Arc<Metrics>,
    /// How long one answer of the log stands before it is asked again.
    interval: Duration,
    state: Mutex<State>,
    /// Held while the log is asked, so that one request asks and the others wait for it.
    asking: tokio::sync::Mutex<()>,
}

/// How a served checkpoint relates to the accepted one.
enum Relation {
    /// Nothing accepted yet, or a larger tree proven to extend it.
    Accept,
    /// The same tree.
    Same,
    /// A fork or a rollback, in words.
    Fork(String),
}

impl Checkpoints {
    /// Loads `DATA/checkpoint` and a latched `DATA/fork`, if they exist.
    pub fn open(
        dir: &Path,
        policy: Policy,
        log: Arc<LogClient>,
        metrics: Arc<Metrics>,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let c = Checkpoints {
            dir: dir.to_owned(),
            policy,
            log,
            metrics,
            interval,
            state: Mutex::new(State::default()),
            asking: tokio::sync::Mutex::new(()),
        };
        let accepted = c.load_accepted()?;
        let fork = c.load_fork()?;
        if let Some(a) = &accepted {
            c.metrics.checkpoint_size.store(a.checkpoint.size, Relaxed);
        }
        c.metrics.forked.store(u64::from(fork.is_some()), Relaxed);
        *locks::lock(&c.state) = State {
            accepted,
            fork,
            ..State::default()
        };
        Ok(c)
    }

    /// The log's key in the policy, for the log of `origin`: operator key events verify
    /// under it.
    pub fn log_key(&self, origin: &str) -> Option<reprolog_verifier::note::VerifierKey> {
        self.policy
            .logs
            .iter()
            .map(|l| &l.key)
            .find(|k| k.name() == origin)
            .cloned()
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    pub fn fork_path(&self) -> PathBuf {
        self.dir.join("fork")
    }

    fn load_accepted(&self) -> anyhow::Result<Option<Arc<Accepted>>> {
        let path = self.checkpoint_path();
        let note = match std::fs::read(&path) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        let checkpoint = Note::parse(&note)
            .map_err(|e| e.to_string())
            .and_then(|n| Checkpoint::parse(n.text()).map_err(|e| e.to_string()))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a checkpoint ({e}); it is the last checkpoint of the log this gate \
                     accepted: restore it, or remove it to accept the log's next one afresh",
                    path.display()
                )
            })?;
        Ok(Some(Arc::new(Accepted { checkpoint, note })))
    }

    fn load_fork(&self) -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(self.fork_path()) {
            Ok(text) => Ok(Some(text.lines().next().unwrap_or("").to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => anyhow::bail!("reading {}: {e}", self.fork_path().display()),
        }
    }

    /// The latched fork, in words.
    pub fn forked(&self) -> Option<String> {
        locks::lock(&self.state).fork.clone()
    }

    /// The last accepted checkpoint's size, if any.
    pub fn accepted_size(&self) -> Option<u64> {
        locks::lock(&self.state)
            .accepted
            .as_ref()
            .map(|a| a.checkpoint.size)
    }

    /// What the last answer says, if it is recent enough to stand.
    fn standing(&self, now: Instant) -> Option<Result<Arc<Accepted>, Failure>> {
        let s = locks::lock(&self.state);
        if let Some(fork) = &s.fork {
            return Some(Err(self.fork_failure(fork)));
        }
        let asked = s.asked?;
        if now.saturating_duration_since(asked) >= self.interval {
            return None;
        }
        Some(match (&s.error, &s.accepted) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(a)) => Ok(Arc::clone(a)),
            (None, None) => Err(Failure::Log("no checkpoint accepted yet".into())),
        })
    }

    fn fork_failure(&self, fork: &str) -> Failure {
        Failure::Forked(format!(
            "{fork}; every request is denied until an operator investigates and removes {}",
            self.fork_path().display()
        ))
    }

    /// The checkpoint to prove against: the last accepted one while it is younger than the
    /// interval, else the log's current one once accepted. Any failure denies.
    pub async fn current(self: &Arc<Self>) -> Result<Arc<Accepted>, Failure> {
        if let Some(r) = self.standing(Instant::now()) {
            return r;
        }
        let _asking = self.asking.lock().await;
        // Another request may have asked while this one waited.
        if let Some(r) = self.standing(Instant::now()) {
            return r;
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.refresh())
            .await
            .map_err(|e| Failure::Internal(format!("the checkpoint refresh failed: {e}")))?
    }

    /// Asks the log for its checkpoint and accepts it, or says why not (blocking). Files are
    /// written before the state's lock is taken, so that requests never wait on the disk.
    pub fn refresh(&self) -> Result<Arc<Accepted>, Failure> {
        let old = locks::lock(&self.state).accepted.clone();
        let result = match self.fetch(old.as_deref()) {
            Ok((new, Relation::Accept)) => {
                let note = String::from_utf8_lossy(&new.note).into_owned();
                match keyfile::replace_public(&self.checkpoint_path(), &note) {
                    Ok(()) => Ok(Some(Arc::new(new))),
                    Err(e) => Err(Failure::Internal(format!(
                        "saving the accepted checkpoint: {e}"
                    ))),
                }
            }
            Ok((_, Relation::Same)) => Ok(None),
            Ok((new, Relation::Fork(reason))) => {
                tracing::error!(
                    "FORK: {reason}. Every request is denied from now on, across restarts, until \
                     an operator investigates and removes {}",
                    self.fork_path().display()
                );
                let evidence = format!(
                    "{reason}\n\naccepted checkpoint:\n{}\nserved checkpoint:\n{}",
                    old.as_ref()
                        .map(|o| String::from_utf8_lossy(&o.note).into_owned())
                        .unwrap_or_default(),
                    String::from_utf8_lossy(&new.note)
                );
                if let Err(e) = keyfile::replace_public(&self.fork_path(), &evidence) {
                    tracing::error!(
                        "could not write {}: {e}; the fork is latched until the gate stops",
                        self.fork_path().display()
                    );
                }
                self.metrics.forked.store(1, Relaxed);
                let f = self.fork_failure(&reason);
                locks::lock(&self.state).fork = Some(reason);
                return Err(f);
            }
            Err(f) => Err(f),
        };
        let mut s = locks::lock(&self.state);
        s.asked = Some(Instant::now());
        match result {
            Ok(accepted) => {
                if s.error.take().is_some() {
                    tracing::info!("the log's checkpoint is accepted again");
                }
                if let Some(new) = accepted {
                    tracing::debug!("accepted checkpoint of size {}", new.checkpoint.size);
                    self.metrics
                        .checkpoint_size
                        .store(new.checkpoint.size, Relaxed);
                    s.accepted = Some(new);
                }
                s.accepted
                    .clone()
                    .ok_or_else(|| Failure::Internal("no accepted checkpoint".into()))
            }
            Err(f) => {
                self.metrics.checkpoint_failures.fetch_add(1, Relaxed);
                if s.error.as_ref() != Some(&f) {
                    tracing::warn!("every request is denied while this lasts: {f}");
                }
                s.error = Some(f.clone());
                Err(f)
            }
        }
    }

    /// Fetches the log's checkpoint, checks it against the policy and relates it to `old`.
    fn fetch(&self, old: Option<&Accepted>) -> Result<(Accepted, Relation), Failure> {
        let note = self.log.checkpoint()?;
        let trusted = self.policy.verify_checkpoint(&note).map_err(|e| {
            Failure::Checkpoint(format!(
                "the log's checkpoint does not satisfy the log policy: {}",
                printable(&e.to_string())
            ))
        })?;
        let new = Accepted {
            checkpoint: trusted.checkpoint,
            note,
        };
        let Some(old) = old else {
            return Ok((new, Relation::Accept));
        };
        let (o, n) = (&old.checkpoint, &new.checkpoint);
        if o.origin != n.origin {
            return Err(Failure::Checkpoint(format!(
                "the log's origin is {:?}, but the gate accepted checkpoints of {:?}; if the log \
                 was replaced on purpose, remove {}",
                n.origin,
                o.origin,
                self.checkpoint_path().display()
            )));
        }
        let relation = if n.size < o.size {
            Relation::Fork(format!(
                "the log rolled back: it serves a checkpoint of size {}, smaller than the size {} \
                 the gate accepted",
                n.size, o.size
            ))
        } else if n.size == o.size {
            if n.root == o.root {
                Relation::Same
            } else {
                Relation::Fork(format!(
                    "the log forked: its checkpoint of size {} has another root than the one the \
                     gate accepted at that size",
                    n.size
                ))
            }
        } else if o.size == 0 {
            Relation::Accept
        } else {
            let proof = self.log.consistency_proof(o.size, n.size)?;
            match merkle::verify_consistency(&proof, o.size, n.size, &o.root, &n.root) {
                Ok(()) => Relation::Accept,
                Err(e) => Relation::Fork(format!(
                    "the log forked: its checkpoint of size {} is not consistent with the one of \
                     size {} the gate accepted ({e})",
                    n.size, o.size
                )),
            }
        };
        Ok((new, relation))
    }

    /// Clears a latched fork once an operator has removed `DATA/fork`: the accepted
    /// checkpoint is read again from `DATA/checkpoint` (none if that was removed too).
    /// Returns what happened, for the log.
    pub fn unlatch_if_cleared(&self) -> Option<anyhow::Result<String>> {
        if locks::lock(&self.state).fork.is_none() || self.fork_path().exists() {
            return None;
        }
        Some(self.load_accepted().map(|accepted| {
            let size = accepted.as_ref().map(|a| a.checkpoint.size);
            let mut s = locks::lock(&self.state);
            *s = State {
                accepted,
                ..State::default()
            };
            self.metrics.forked.store(0, Relaxed);
            match size {
                Some(size) => format!(
                    "{} was removed: the fork latch is cleared; checkpoints must be consistent \
                     with the one of size {size} in {}",
                    self.fork_path().display(),
                    self.checkpoint_path().display()
                ),
                None => format!(
                    "{} was removed: the fork latch is cleared, and with no {} the log's next \
                     checkpoint is accepted afresh",
                    self.fork_path().display(),
                    self.checkpoint_path().display()
                ),
            }
        }))
    }
}
