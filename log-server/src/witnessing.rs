//! Gathering witness cosignatures (C2SP tlog-witness, client side). After each new checkpoint
//! the log calls every witness in its policy at once, each with a timeout. A 409 tells the
//! witness's size; the log then proves consistency from that size and asks again. A witness
//! that is down or slow costs one timeout and is asked again at the next checkpoint.
//!
//! A witness's answer is untrusted: only a line by the witness's key that verifies over the
//! log's own checkpoint text is attached. Anything else (a cosignature of other text, lines
//! that would extend the note's text, other keys' lines) is dropped and counted, since one
//! bad line by a key a client's policy lists would make that client refuse the checkpoint.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::merkle;
use reprolog_verifier::note::{Note, NoteSignature, VerifierKey};
use reprolog_verifier::policy::{Policy, PolicyLog, PolicyWitness};
use reprolog_verifier::witness_request::AddCheckpoint;

use crate::metrics::Metrics;
use crate::storage::LogStore;

/// The answers a witness may give that the log acts on.
enum Answer {
    Cosigned(NoteSignature),
    Holds(u64),
}

pub struct Witnesses {
    witnesses: Vec<PolicyWitness>,
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
        Witnesses {
            witnesses: policy
                .witnesses
                .iter()
                .filter(|w| w.url.is_some())
                .cloned()
                .collect(),
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

    /// Asks every witness to cosign `note` (signed by the log) and returns the cosignatures
    /// that verify under the witnesses' keys.
    pub fn gather<S: LogStore>(
        &self,
        store: &S,
        note: &Note,
        checkpoint: &Checkpoint,
    ) -> Vec<NoteSignature> {
        std::thread::scope(|scope| {
            let calls: Vec<_> = self
                .witnesses
                .iter()
                .map(|w| scope.spawn(move || self.ask(store, w, note, checkpoint)))
                .collect();
            calls
                .into_iter()
                .filter_map(|c| c.join().ok().flatten())
                .collect()
        })
    }

    fn ask<S: LogStore>(
        &self,
        store: &S,
        w: &PolicyWitness,
        note: &Note,
        checkpoint: &Checkpoint,
    ) -> Option<NoteSignature> {
        let known = self.sizes.lock().ok()?.get(&w.name).copied().unwrap_or(0);
        let mut old = known;
        for _ in 0..2 {
            match self.call(store, w, note, checkpoint, old) {
                Ok(Answer::Cosigned(sig)) => {
                    self.sizes
                        .lock()
                        .ok()?
                        .insert(w.name.clone(), checkpoint.size);
                    return Some(sig);
                }
                Ok(Answer::Holds(size)) if size <= checkpoint.size && size != old => {
                    self.sizes.lock().ok()?.insert(w.name.clone(), size);
                    old = size;
                }
                Ok(Answer::Holds(size)) => {
                    tracing::warn!(
                        "witness {} holds size {size}, cannot advance it to {}",
                        w.name,
                        checkpoint.size
                    );
                    return None;
                }
                Err(e) => {
                    tracing::warn!("witness {}: {e}", w.name);
                    return None;
                }
            }
        }
        None
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
