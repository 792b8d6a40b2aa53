//! The log's key registry as of the accepted checkpoint (`spec/entry.md`, "Key events"), so
//! that listed builders count as identities: a key a listed builder rotated to counts as it,
//! and a signature its key could not make at its index counts for no one. Each key event is
//! proven in the checkpoint before it applies; the registry is brought forward with the events
//! logged since the last checkpoint, whose proofs still hold in a tree proven to extend it.

use std::sync::{Arc, Mutex};

use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::entry::LogEntry;
use reprolog_verifier::locks;
use reprolog_verifier::merkle;
use reprolog_verifier::note::VerifierKey;
use reprolog_verifier::registry::KeyRegistry;

use crate::failure::Failure;
use crate::log::LogClient;

/// A registry and the checkpoint size it was proven at.
struct At {
    size: u64,
    registry: Arc<KeyRegistry>,
}

/// The registry cache: one, the newest.
#[derive(Default)]
pub struct Registries(Mutex<Option<At>>);

impl Registries {
    /// The registry as of `cp` (blocking): the cached one when it is at that size, else the
    /// cached one brought forward, else one replayed from the log's first key event.
    pub fn at(
        &self,
        log: &LogClient,
        log_key: &VerifierKey,
        cp: &Checkpoint,
    ) -> Result<Arc<KeyRegistry>, Failure> {
        let base = match &*locks::lock(&self.0) {
            Some(at) if at.size == cp.size => return Ok(Arc::clone(&at.registry)),
            Some(at) if at.size < cp.size => Some((*at.registry).clone()),
            _ => None,
        };
        let mut registry = base.unwrap_or_else(|| KeyRegistry::new(log_key.clone()));
        let mut after = registry.history().last().map(|e| e.index);
        'pages: loop {
            let page = log.key_event_page(after)?;
            for event in &page.events {
                let index = event.index;
                if index >= cp.size {
                    break 'pages;
                }
                let bytes = event.entry.as_bytes();
                let LogEntry::Key(key_event) = LogEntry::decode(bytes).map_err(|e| {
                    Failure::Proof(format!("key event {index} of the log is malformed: {e}"))
                })?
                else {
                    return Err(Failure::Proof(format!(
                        "the log listed entry {index} as a key event, but it is not one"
                    )));
                };
                let proof = log.inclusion_proof(index, cp.size)?;
                merkle::verify_inclusion(
                    &proof,
                    index,
                    cp.size,
                    &merkle::leaf_hash(bytes),
                    &cp.root,
                )
                .map_err(|e| {
                    Failure::Proof(format!(
                        "key event {index} is not proven in the checkpoint of size {}: {e}",
                        cp.size
                    ))
                })?;
                registry.apply(index, &key_event).map_err(|e| {
                    Failure::Proof(format!("key event {index} does not apply: {e}"))
                })?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let registry = Arc::new(registry);
        let mut cached = locks::lock(&self.0);
        if cached.as_ref().is_none_or(|at| at.size < cp.size) {
            *cached = Some(At {
                size: cp.size,
                registry: Arc::clone(&registry),
            });
        }
        Ok(registry)
    }
}
