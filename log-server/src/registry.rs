//! The log's registry of builder keys, as its own key events make it
//! ([`reprolog_verifier::registry`]). It is replayed from the store when the server starts; then
//! the sequencer, the one writer, applies each key event it logs and publishes the result here
//! for the submission checks to read. The builders file reaches the registry only as
//! `key-register` and `key-unregister` events the server signs and logs
//! ([`sync_builders_file`]).

use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use reprolog_verifier::entry::LogEntry;
use reprolog_verifier::key_event::KeyEvent;
use reprolog_verifier::locks;
use reprolog_verifier::note::SignerKey;
use reprolog_verifier::registry::KeyRegistry;
use tokio::sync::{mpsc, oneshot};

use crate::builders::Registry as BuildersFile;
use crate::sequencer::{Sequenced, Submission};
use crate::storage::{LogStore, NewEntry};

/// How many key event indexes one store read returns.
const KEY_EVENT_PAGE: usize = 1024;

/// The registry in force, shared between the sequencer (which replaces it) and readers.
pub struct SharedRegistry(RwLock<Arc<KeyRegistry>>);

impl SharedRegistry {
    pub fn new(registry: KeyRegistry) -> Self {
        SharedRegistry(RwLock::new(Arc::new(registry)))
    }

    /// The registry as of the last committed batch.
    pub fn current(&self) -> Arc<KeyRegistry> {
        Arc::clone(&locks::read(&self.0))
    }

    /// Called by the sequencer once a batch with key events is durable.
    pub fn replace(&self, registry: KeyRegistry) {
        *locks::write(&self.0) = Arc::new(registry);
    }
}

/// Replays every key event of the store into a registry for the log whose key is `key`. An
/// event that does not apply means the store holds what this server would never have logged.
pub fn replay<S: LogStore>(store: &S, key: &SignerKey) -> Result<KeyRegistry> {
    let mut registry = KeyRegistry::new(key.verifier_key());
    let mut after = None;
    loop {
        let (indexes, more) = store.key_events(after, KEY_EVENT_PAGE)?;
        for index in &indexes {
            let bytes = store
                .entries(*index..index + 1)?
                .pop()
                .with_context(|| format!("key event {index} is past the log's end"))?;
            let LogEntry::Key(event) = LogEntry::decode(&bytes)
                .with_context(|| format!("entry {index}, listed as a key event"))?
            else {
                bail!("entry {index} is listed as a key event but is a signing event");
            };
            registry
                .apply(*index, &event)
                .with_context(|| format!("key event {index} does not apply"))?;
        }
        after = indexes.last().copied();
        if !more {
            return Ok(registry);
        }
    }
}

/// Logs the key events that bring the registry in line with the builders file: registrations
/// of keys it lists, withdrawals of keys the operator registered that it no longer lists.
/// Returns how many events were logged.
pub async fn sync_builders_file(
    file: &BuildersFile,
    registry: &SharedRegistry,
    key: &SignerKey,
    size: u64,
    sequencer: &mpsc::Sender<Submission>,
) -> Result<usize> {
    let changes = registry.current().builders_file_changes(&file.keys);
    // The size the events are made at: the sequencer logs them at this index or later.
    let made_at = size;
    for (k, why) in &changes.ignored {
        tracing::warn!(
            "the builders file lists {}, which stays out of the registry: {why}; remove it \
             from the file",
            k.name
        );
    }
    let events: Vec<NewEntry> = changes
        .register
        .into_iter()
        .map(|k| KeyEvent::register(k, made_at, key))
        .chain(
            changes
                .unregister
                .into_iter()
                .map(|k| KeyEvent::unregister(k, made_at, key)),
        )
        .map(NewEntry::key_event)
        .collect();
    if events.is_empty() {
        return Ok(0);
    }
    let (reply, answer) = oneshot::channel();
    sequencer
        .send(Submission {
            entries: events,
            reply,
            arrived: Instant::now(),
        })
        .await
        .context("the sequencer stopped")?;
    let outcomes = answer
        .await
        .context("the sequencer stopped")?
        .map_err(|e| anyhow::anyhow!("logging the builders file's changes: {e}"))?;
    let mut logged = 0;
    for outcome in outcomes {
        match outcome {
            Sequenced::Logged(_) => logged += 1,
            Sequenced::Duplicate(_) => {}
            Sequenced::Refused(why) => tracing::warn!("a builders file change was refused: {why}"),
        }
    }
    Ok(logged)
}
