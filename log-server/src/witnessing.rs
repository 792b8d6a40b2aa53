//! Gathering witness cosignatures (C2SP tlog-witness, client side). After each new checkpoint
//! the log calls every witness in its policy at once, each with a timeout. A 409 tells the
//! witness's size; the log then proves consistency from that size and asks again. A witness
//! that is down or slow costs one timeout and is asked again at the next checkpoint, or,
//! while the log is idle, every few seconds for the checkpoint already published (the
//! publisher's loop), so that it cosigns soon after it comes back.
//!
//! A witness's answer is untrusted: only a line by the witness's key that verifies over the
//! log's own checkpoint text is attached. Anything else (a cosignature of other text, lines
//! that would extend the note's text, other keys' lines) is dropped and counted, since one
//! bad line by a key a client's policy lists would make that client refuse the checkpoint.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::merkle;
use reprolog_verifier::note::{Note, NoteSignature, VerifierKey};
use reprolog_verifier::policy::{Policy, PolicyLog, PolicyWitness};
use reprolog_verifier::witness_request::AddCheckpoint;

use crate::metrics::{Metrics, WitnessCounters};
use crate::storage::LogStore;
use reprolog_verifier::locks;

/// The answers a witness may give that the log acts on.
enum Answer {
    Cosigned(NoteSignature),
    Holds(u64),
}

pub struct Witnesses {
    witnesses: Vec<PolicyWitness>,
    /// Each witness's metrics, in the order of `witnesses`.
    counters: Vec<Arc<WitnessCounters>>,
    /// The policy, with this log added, to judge the quorum.
    policy: Policy,
    agent: ureq::Agent,
    /// Each witness's size as last learned, so most calls need no 409 round trip.
    sizes: Mutex<HashMap<String, u64>>,
    pub wait_for_quorum: bool,
    metrics: Arc<Metrics>,
}

impl Witnesses {
    pub fn new(
        mut policy: Policy,
        log_key: &VerifierKey,
        timeout: Duration,
        wait_for_quorum: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        policy.logs = vec![PolicyLog {
            key: log_key.clone(),
            url: None,
        }];
        if policy.quorum.is_none() {
            policy.quorum = Some("none".into());
        }
        let witnesses: Vec<PolicyWitness> = policy
            .witnesses
            .iter()
            .filter(|w| w.url.is_some())
            .cloned()
            .collect();
        Witnesses {
            counters: witnesses.iter().map(|w| metrics.witness(&w.name)).collect(),
            witnesses,
            policy,
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
            sizes: Mutex::new(HashMap::new()),
            wait_for_quorum,
            metrics,
        }
    }

    pub fn len(&self) -> usize {
        self.witnesses.len()
    }

    /// Whether a note's cosignatures meet the policy's quorum.
    pub fn quorum_met(&self, note: &str) -> bool {
        self.policy.verify_checkpoint(note.as_bytes()).is_ok()
    }

    /// The witnesses (by position) whose cosignature `note` lacks. The log attaches only
    /// cosignatures it verified, so a line by a witness's key is taken as its cosignature.
    pub fn missing(&self, note: &Note) -> Vec<usize> {
        (0..self.witnesses.len())
            .filter(|&i| {
                let key = &self.witnesses[i].key;
                !note
                    .signatures()
                    .iter()
                    .any(|s| s.name == key.name() && s.key_id == key.key_id())
            })
            .collect()
    }

    /// Asks every witness to cosign `note` (signed by the log) and returns the cosignatures
    /// that verify under the witnesses' keys.
    pub fn gather<S: LogStore>(
        &self,
        store: &S,
        note: &Note,
        checkpoint: &Checkpoint,
    ) -> Vec<NoteSignature> {
        let all: Vec<usize> = (0..self.witnesses.len()).collect();
        self.gather_from(store, note, checkpoint, &all)
    }

    /// Asks the witnesses at `which` (positions), all at once.
    pub fn gather_from<S: LogStore>(
        &self,
        store: &S,
        note: &Note,
        checkpoint: &Checkpoint,
        which: &[usize],
    ) -> Vec<NoteSignature> {
        std::thread::scope(|scope| {
            let calls: Vec<_> = which
                .iter()
                .filter(|&&i| i < self.witnesses.len())
                .map(|&i| scope.spawn(move || self.ask_counted(store, i, note, checkpoint)))
                .collect();
            calls
                .into_iter()
                .filter_map(|c| c.join().ok().flatten())
                .collect()
        })
    }

    /// Asks witness `i`, counting the request and logging a witness only when it goes from
    /// answering to failing or back, so that asking a dead witness again and again while the
    /// log is idle does not fill the log.
    fn ask_counted<S: LogStore>(
        &self,
        store: &S,
        i: usize,
        note: &Note,
        checkpoint: &Checkpoint,
    ) -> Option<NoteSignature> {
        let (w, counters) = (&self.witnesses[i], &self.counters[i]);
        counters.requested.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.ask(store, w, note, checkpoint);
        counters.seconds.observe_duration(started.elapsed());
        match result {
            Ok(sig) => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                if counters.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "witness {} cosigns again (size {})",
                        w.name,
                        checkpoint.size
                    );
                }
                Some(sig)
            }
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                if counters.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!("witness {}: {e}", w.name);
                } else {
                    tracing::warn!("witness {}: {e}; it is asked again while it fails", w.name);
                }
                None
            }
        }
    }

    fn ask<S: LogStore>(
        &self,
        store: &S,
        w: &PolicyWitness,
        note: &Note,
        checkpoint: &Checkpoint,
    ) -> Result<NoteSignature, String> {
        let known = locks::lock(&self.sizes).get(&w.name).copied().unwrap_or(0);
        let mut old = known;
        for _ in 0..2 {
            match self.call(store, w, note, checkpoint, old)? {
                Answer::Cosigned(sig) => {
                    locks::lock(&self.sizes).insert(w.name.clone(), checkpoint.size);
                    return Ok(sig);
                }
                Answer::Holds(size) if size <= checkpoint.size && size != old => {
                    locks::lock(&self.sizes).insert(w.name.clone(), size);
                    old = size;
                }
                Answer::Holds(size) => {
                    return Err(format!(
                        "it holds size {size}, and cannot be advanced to {}",
                        checkpoint.size
                    ));
                }
            }
        }
        Err(format!(
            "it named another size twice (after {old}); asked again later"
        ))
    }

    fn call<S: LogStore>(
        &self,
        store: &S,
        w: &PolicyWitness,
        note: &Note,
        checkpoint: &Checkpoint,
        old: u64,
    ) -> Result<Answer, String> {
        let proof =
            merkle::prove_consistency(old, checkpoint.size, store).map_err(|e| e.to_string())?;
        let body = AddCheckpoint {
            old_size: old,
            proof,
            checkpoint: note.encode(),
        }
        .encode();
        let url = format!(
            "{}/add-checkpoint",
            w.url.as_deref().unwrap_or_default().trim_end_matches('/')
        );
        let read = |r: ureq::Response| -> Result<String, String> {
            let mut s = String::new();
            std::io::Read::read_to_string(
                &mut std::io::Read::take(r.into_reader(), 64 << 10),
                &mut s,
            )
            .map_err(|e| e.to_string())?;
            Ok(s)
        };
        match self.agent.post(&url).send_string(&body) {
            Ok(r) => {
                let answer = read(r)?;
                let cosignature = answer
                    .lines()
                    .filter_map(|line| NoteSignature::parse_line(line).ok())
                    .filter(|s| s.name == w.key.name() && s.key_id == w.key.key_id())
                    .find(|s| w.key.verify(note.text(), &s.signature).is_ok());
                cosignature.map(Answer::Cosigned).ok_or_else(|| {
                    self.metrics
                        .cosignatures_refused
                        .fetch_add(1, Ordering::Relaxed);
                    format!(
                        "dropped an answer with no valid cosignature of this checkpoint by \
                         the witness's key ({} bytes)",
                        answer.len()
                    )
                })
            }
            Err(ureq::Error::Status(409, r)) => {
                let text = read(r)?;
                text.trim()
                    .parse()
                    .map(Answer::Holds)
                    .map_err(|_| format!("409 without a size: {text:?}"))
            }
            Err(ureq::Error::Status(code, r)) => Err(format!(
                "HTTP {code}: {}",
                read(r).unwrap_or_default().trim()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}
