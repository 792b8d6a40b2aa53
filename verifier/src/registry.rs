//! The registry of builder keys as the log's key events make it (`spec/entry.md`, "Key
//! events"): which keys may sign at which index, and which builder identity each key serves.
//! The log server and every client replay the same events through [`KeyRegistry::apply`], so
//! anyone can recompute from the log alone which keys were valid at any index.
//!
//! A builder is an identity, not a key: a rotation chain is one builder, named after the first
//! key the operator registered. A signature is judged by the registry as of its own index
//! ([`KeyRegistry::status`]). Revocations reach back: a revocation as of index N voids the
//! key's signatures from N on, even those logged before the revocation, and a rotation the
//! key signed at N or later, with everything its successor signed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::key_event::{KeyAction, KeyEvent, KeyEventError, Revoker};
use crate::nix::NixPublicKey;
use crate::note::VerifierKey;

/// A key's raw Ed25519 bytes: two keys of one name are two keys.
type KeyBytes = [u8; 32];

/// Why a key event cannot apply to the registry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// A signature of the event does not verify, or it is for another log.
    #[error(transparent)]
    Signature(#[from] KeyEventError),
    /// Events apply in index order.
    #[error("a key event at index {index} after one at index {last}")]
    OutOfOrder {
        /// The event's index.
        index: u64,
        /// The index of the last event applied.
        last: u64,
    },
    /// The key is registered already.
    #[error("{0} is registered already")]
    AlreadyRegistered(String),
    /// The key is revoked; it is never registered again.
    #[error("{0} is revoked, and a revoked key is never registered again")]
    Revoked(String),
    /// The event needs a key the log has never registered.
    #[error("{0} has never been registered in this log")]
    Unknown(String),
    /// The event needs a key that may sign now, and this one may not.
    #[error("{key} cannot sign now: {status}")]
    NotActive {
        /// The key's name.
        key: String,
        /// Why it cannot.
        status: KeyStatus,
    },
    /// A rotation's new key must be new to the log.
    #[error("{0} has been registered before; a rotation needs a key new to the log")]
    KeyReused(String),
    /// A rotation's new key name is already another builder's.
    #[error("the key name {name} belongs to builder {identity}")]
    NameTaken {
        /// The new key's name.
        name: String,
        /// The builder that has it.
        identity: String,
    },
    /// An operator event cannot be made at a size the log reaches only after its index.
    #[error("an operator event made at size {made_at} logged at index {index}")]
    MadeLater {
        /// Its `made-at`.
        made_at: u64,
        /// Its own index.
        index: u64,
    },
    /// A revocation cannot start after the index it is logged at.
    #[error("a revocation as of index {as_of} logged at index {index}: it cannot start later")]
    FutureRevocation {
        /// The revocation's `as-of`.
        as_of: u64,
        /// Its own index.
        index: u64,
    },
}

/// What a key amounts to at one index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// The key may sign, for this builder identity.
    Valid {
        /// The builder the key serves.
        identity: String,
    },
    /// Not registered at that index: never, not yet, or not again.
    NotRegistered,
    /// Retired at `at` by a rotation to `successor` (a key name).
    Retired {
        /// The rotation's index.
        at: u64,
        /// The new key's name.
        successor: String,
    },
    /// Unregistered by the operator at `at`.
    Unregistered {
        /// The event's index.
        at: u64,
    },
    /// Void from index `from` on.
    Revoked {
        /// The first index whose signatures by the key are void.
        from: u64,
        /// The revocation that voided it.
        why: String,
    },
}

impl KeyStatus {
    /// The builder identity, when the key may sign.
    pub fn identity(&self) -> Option<&str> {
        match self {
            KeyStatus::Valid { identity } => Some(identity),
            _ => None,
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyStatus::Valid { identity } => write!(f, "valid for builder {identity}"),
            KeyStatus::NotRegistered => f.write_str("not a registered key at that index"),
            KeyStatus::Retired { at, successor } => {
                write!(f, "retired at index {at} by a rotation to {successor}")
            }
            KeyStatus::Unregistered { at } => {
                write!(f, "unregistered by the operator at index {at}")
            }
            KeyStatus::Revoked { from, why } => write!(f, "revoked as of index {from} ({why})"),
        }
    }
}

/// How a span of validity ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ending {
    Rotated(String),
    Unregistered,
    Revoked,
}

/// A half-open run of indexes in which a key may sign.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Span {
    from: u64,
    until: Option<(u64, Ending)>,
}

/// Everything the registry knows of one key.
#[derive(Clone, Debug)]
pub struct KeyRecord {
    /// The key.
    pub key: NixPublicKey,
    /// The builder it serves.
    pub identity: String,
    spans: Vec<Span>,
    void_from: Option<(u64, String)>,
    rotated_from: Option<(KeyBytes, u64)>,
    /// Whether its registration came from the operator (the builders file) rather than a
    /// rotation.
    pub by_operator: bool,
}

impl KeyRecord {
    fn is_open(&self) -> bool {
        self.spans.last().is_some_and(|s| s.until.is_none())
    }

    fn close(&mut self, at: u64, ending: Ending) {
        if let Some(span) = self.spans.last_mut().filter(|s| s.until.is_none()) {
            span.until = Some((at, ending));
        }
    }

    fn void(&mut self, from: u64, why: String) {
        if self.void_from.as_ref().is_none_or(|(f, _)| from < *f) {
            self.void_from = Some((from, why));
        }
    }

    /// The key's status at `index`.
    pub fn status(&self, index: u64) -> KeyStatus {
        if let Some((from, why)) = &self.void_from {
            if index >= *from {
                return KeyStatus::Revoked {
                    from: *from,
                    why: why.clone(),
                };
            }
        }
        let mut before = None;
        for span in &self.spans {
            if index < span.from {
                break;
            }
            match &span.until {
                Some((until, ending)) if index >= *until => before = Some((*until, ending)),
                _ => {
                    return KeyStatus::Valid {
                        identity: self.identity.clone(),
                    }
                }
            }
        }
        match before {
            None => KeyStatus::NotRegistered,
            Some((at, Ending::Rotated(successor))) => KeyStatus::Retired {
                at,
                successor: successor.clone(),
            },
            Some((at, Ending::Unregistered)) => KeyStatus::Unregistered { at },
            // A revocation ends a span and sets `void_from` at or before its end.
            Some((at, Ending::Revoked)) => KeyStatus::Revoked {
                from: at,
                why: "revoked".into(),
            },
        }
    }

    /// The first index whose signatures by the key are void, and why, once revoked.
    pub fn void_from(&self) -> Option<(u64, &str)> {
        self.void_from.as_ref().map(|(i, why)| (*i, why.as_str()))
    }

    /// The key's status from now on.
    pub fn current_status(&self) -> KeyStatus {
        self.status(u64::MAX)
    }
}

/// A key event as applied, for a key's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEvent {
    /// Its index in the log.
    pub index: u64,
    /// What it did.
    pub action: KeyAction,
}

/// What the builders file asks of the registry (see [`KeyRegistry::builders_file_changes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileChanges {
    /// Keys to register.
    pub register: Vec<NixPublicKey>,
    /// Keys the operator registered that the file no longer lists.
    pub unregister: Vec<NixPublicKey>,
    /// Keys the file lists that cannot be registered again, and why.
    pub ignored: Vec<(NixPublicKey, String)>,
}

/// The registry of one log, replayed from its key events.
#[derive(Clone, Debug)]
pub struct KeyRegistry {
    log_key: VerifierKey,
    keys: BTreeMap<KeyBytes, KeyRecord>,
    /// Key name → the identity keys of that name serve.
    names: BTreeMap<String, String>,
    history: Vec<AppliedEvent>,
}

impl KeyRegistry {
    /// An empty registry for the log whose key is `log_key` (its name is the log's origin).
    pub fn new(log_key: VerifierKey) -> Self {
        KeyRegistry {
            log_key,
            keys: BTreeMap::new(),
            names: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    /// The log's key, under which operator events verify.
    pub fn log_key(&self) -> &VerifierKey {
        &self.log_key
    }

    /// Applies the key event logged at `index`: checks its signatures, then that the change is
    /// allowed in the registry as it stands after every earlier event. Nothing changes on an
    /// error.
    pub fn apply(&mut self, index: u64, event: &KeyEvent) -> Result<(), RegistryError> {
        event.verify(&self.log_key)?;
        if let Some(last) = self.history.last().filter(|e| e.index >= index) {
            return Err(RegistryError::OutOfOrder {
                index,
                last: last.index,
            });
        }
        if let Some(made_at) = event.made_at.filter(|m| *m > index) {
            return Err(RegistryError::MadeLater { made_at, index });
        }
        match &event.action {
            KeyAction::Register(key) => self.register(index, key)?,
            KeyAction::Unregister(key) => {
                let record = self.open_record(key)?;
                record.close(index, Ending::Unregistered);
            }
            KeyAction::Rotate { old, new } => self.rotate(index, old, new)?,
            KeyAction::Revoke { key, as_of, by } => self.revoke(index, key, *as_of, *by)?,
        }
        self.history.push(AppliedEvent {
            index,
            action: event.action.clone(),
        });
        Ok(())
    }

    fn register(&mut self, index: u64, key: &NixPublicKey) -> Result<(), RegistryError> {
        if let Some(record) = self.keys.get_mut(key.key.as_bytes()) {
            return match record.current_status() {
                KeyStatus::Unregistered { .. } | KeyStatus::NotRegistered => {
                    record.spans.push(Span {
                        from: index,
                        until: None,
                    });
                    record.by_operator = true;
                    Ok(())
                }
                KeyStatus::Revoked { .. } => Err(RegistryError::Revoked(key.to_string())),
                KeyStatus::Valid { .. } => Err(RegistryError::AlreadyRegistered(key.to_string())),
                status @ KeyStatus::Retired { .. } => Err(RegistryError::NotActive {
                    key: key.name.clone(),
                    status,
                }),
            };
        }
        let identity = self
            .names
            .entry(key.name.clone())
            .or_insert_with(|| key.name.clone())
            .clone();
        self.insert(key, identity, index, None);
        Ok(())
    }

    fn insert(
        &mut self,
        key: &NixPublicKey,
        identity: String,
        from: u64,
        rotated_from: Option<(KeyBytes, u64)>,
    ) {
        self.keys.insert(
            key.key.to_bytes(),
            KeyRecord {
                key: key.clone(),
                identity,
                spans: vec![Span { from, until: None }],
                void_from: None,
                by_operator: rotated_from.is_none(),
                rotated_from,
            },
        );
    }

    /// The record of a key that may sign now.
    fn open_record(&mut self, key: &NixPublicKey) -> Result<&mut KeyRecord, RegistryError> {
        let record = self
            .keys
            .get_mut(key.key.as_bytes())
            .ok_or_else(|| RegistryError::Unknown(key.to_string()))?;
        if !record.is_open() {
            return Err(RegistryError::NotActive {
                key: key.name.clone(),
                status: record.current_status(),
            });
        }
        Ok(record)
    }

    fn rotate(
        &mut self,
        index: u64,
        old: &NixPublicKey,
        new: &NixPublicKey,
    ) -> Result<(), RegistryError> {
        if self.keys.contains_key(new.key.as_bytes()) {
            return Err(RegistryError::KeyReused(new.to_string()));
        }
        let identity = self.open_record(old)?.identity.clone();
        if let Some(other) = self.names.get(&new.name).filter(|i| **i != identity) {
            return Err(RegistryError::NameTaken {
                name: new.name.clone(),
                identity: other.clone(),
            });
        }
        self.open_record(old)?
            .close(index, Ending::Rotated(new.name.clone()));
        self.names.insert(new.name.clone(), identity.clone());
        self.insert(new, identity, index, Some((old.key.to_bytes(), index)));
        Ok(())
    }

    fn revoke(
        &mut self,
        index: u64,
        key: &NixPublicKey,
        as_of: u64,
        by: Revoker,
    ) -> Result<(), RegistryError> {
        if as_of > index {
            return Err(RegistryError::FutureRevocation { as_of, index });
        }
        let record = self
            .keys
            .get_mut(key.key.as_bytes())
            .ok_or_else(|| RegistryError::Unknown(key.to_string()))?;
        let who = match by {
            Revoker::Key => "by the key itself",
            Revoker::Operator => "by the operator",
        };
        record.close(index, Ending::Revoked);
        record.void(as_of, format!("{who} at index {index}"));
        // Rotations the key signed from `as_of` on are void, and so is every key they made.
        let mut voided = vec![(key.key.to_bytes(), as_of)];
        while let Some((from_key, from)) = voided.pop() {
            for record in self.keys.values_mut() {
                if let Some((parent, at)) = record.rotated_from {
                    if parent == from_key && at >= from {
                        let start = record.spans.first().map_or(at, |s| s.from);
                        record.close(index, Ending::Revoked);
                        record.void(
                            start,
                            format!("made by a rotation at index {at}, signed by a revoked key"),
                        );
                        voided.push((record.key.key.to_bytes(), start));
                    }
                }
            }
        }
        Ok(())
    }

    /// What `key` amounts to at `index`: the registry as of the signature's own index judges
    /// it. A key the log never registered is [`KeyStatus::NotRegistered`].
    pub fn status(&self, key: &NixPublicKey, index: u64) -> KeyStatus {
        self.keys
            .get(key.key.as_bytes())
            .map_or(KeyStatus::NotRegistered, |r| r.status(index))
    }

    /// The keys that may sign from now on.
    pub fn active_keys(&self) -> Vec<NixPublicKey> {
        self.keys
            .values()
            .filter(|r| r.is_open())
            .map(|r| r.key.clone())
            .collect()
    }

    /// Every key the log has registered, by key bytes.
    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.values()
    }

    /// The keys of one name, whatever their status.
    pub fn records_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a KeyRecord> {
        self.keys.values().filter(move |r| r.key.name == name)
    }

    /// The identity `key` serves, if the log ever registered it.
    pub fn identity_of_key(&self, key: &NixPublicKey) -> Option<&str> {
        self.keys
            .get(key.key.as_bytes())
            .map(|r| r.identity.as_str())
    }

    /// The identity that keys named `name` serve, if any key of that name was registered.
    pub fn identity_of_name(&self, name: &str) -> Option<&str> {
        self.names.get(name).map(String::as_str)
    }

    /// Every event applied, in index order.
    pub fn history(&self) -> &[AppliedEvent] {
        &self.history
    }

    /// What the operator's builders file (`file`, its keys) asks for: keys it lists that the
    /// log has not registered (or that the operator unregistered earlier) are registered; keys
    /// the operator registered that it no longer lists are unregistered. Keys a rotation made
    /// are the builder's, not the file's, and stay. A key retired by a rotation or revoked is
    /// never registered again; it is listed in [`FileChanges::ignored`] with the reason.
    pub fn builders_file_changes(&self, file: &[NixPublicKey]) -> FileChanges {
        let mut changes = FileChanges::default();
        let listed: BTreeSet<KeyBytes> = file.iter().map(|k| k.key.to_bytes()).collect();
        for key in file {
            match self
                .keys
                .get(key.key.as_bytes())
                .map(|r| r.current_status())
            {
                None | Some(KeyStatus::Unregistered { .. }) => changes.register.push(key.clone()),
                Some(KeyStatus::Valid { .. }) => {}
                Some(status) => changes.ignored.push((key.clone(), status.to_string())),
            }
        }
        for record in self.keys.values() {
            if record.is_open() && record.by_operator && !listed.contains(record.key.key.as_bytes())
            {
                changes.unregister.push(record.key.clone());
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::NixSecretKey;
    use crate::note::SignerKey;

    struct Log {
        operator: SignerKey,
        registry: KeyRegistry,
        next: u64,
    }

    impl Log {
        fn new() -> Self {
            let operator = SignerKey::from_seed("example.org/log", [9; 32]).unwrap();
            Log {
                registry: KeyRegistry::new(operator.verifier_key()),
                operator,
                next: 0,
            }
        }

        /// Logs `n` other entries.
        fn skip(&mut self, n: u64) {
            self.next += n;
        }

        fn apply(&mut self, event: KeyEvent) -> Result<u64, RegistryError> {
            let index = self.next;
            self.next += 1;
            self.registry.apply(index, &event).map(|_| index)
        }
    }

    fn key(name: &str, seed: u8) -> NixSecretKey {
        NixSecretKey::from_seed(name, [seed; 32])
    }

    fn identity(log: &Log, key: &NixSecretKey, index: u64) -> Option<String> {
        log.registry
            .status(&key.public_key(), index)
            .identity()
            .map(str::to_owned)
    }

    #[test]
    fn the_spectrum_story() {
        let mut log = Log::new();
        let (one, two, three) = (key("s-1", 1), key("s-2", 2), key("other-1", 3));
        log.apply(KeyEvent::register(
            one.public_key(),
            log.next,
            &log.operator.clone(),
        ))
        .unwrap();
        log.apply(KeyEvent::register(
            three.public_key(),
            log.next,
            &log.operator.clone(),
        ))
        .unwrap();
        log.skip(3); // key 1 signs three paths: 2, 3, 4
        let rotation = log
            .apply(KeyEvent::rotate("example.org/log", &one, &two))
            .unwrap();
        assert_eq!(identity(&log, &one, 3).as_deref(), Some("s-1"));
        assert_eq!(
            identity(&log, &two, 6).as_deref(),
            Some("s-1"),
            "one builder"
        );
        assert_eq!(
            log.registry.status(&one.public_key(), 6),
            KeyStatus::Retired {
                at: rotation,
                successor: "s-2".into()
            }
        );
        assert_eq!(
            log.registry.status(&two.public_key(), 4),
            KeyStatus::NotRegistered
        );
        // A retired key is never registered again.
        assert!(matches!(
            log.apply(KeyEvent::register(
                one.public_key(),
                log.next,
                &log.operator.clone()
            )),
            Err(RegistryError::NotActive { .. })
        ));
        // Key 3 signs a good path at 6, is stolen, signs at 7; revoked as of 7.
        log.skip(2);
        let revocation = log
            .apply(KeyEvent::revoke_by_key("example.org/log", &three, 7))
            .unwrap();
        assert_eq!(identity(&log, &three, 6).as_deref(), Some("other-1"));
        assert!(matches!(
            log.registry.status(&three.public_key(), 7),
            KeyStatus::Revoked { from: 7, .. }
        ));
        assert!(matches!(
            log.registry.status(&three.public_key(), revocation + 1),
            KeyStatus::Revoked { .. }
        ));
        assert_eq!(log.registry.active_keys(), vec![two.public_key()]);
        // And it never comes back.
        assert_eq!(
            log.apply(KeyEvent::register(
                three.public_key(),
                log.next,
                &log.operator.clone()
            )),
            Err(RegistryError::Revoked(three.public_key().to_string()))
        );
    }

    #[test]
    fn a_stolen_key_that_rotated_to_the_thief_voids_the_thiefs_key_too() {
        let mut log = Log::new();
        let (real, thief) = (key("b-1", 1), key("b-2", 2));
        let op = log.operator.clone();
        log.apply(KeyEvent::register(real.public_key(), log.next, &op))
            .unwrap();
        log.skip(4); // good signatures at 1..=4
        let stolen_rotation = log
            .apply(KeyEvent::rotate("example.org/log", &real, &thief))
            .unwrap();
        log.skip(2); // the thief signs at 6, 7
        assert_eq!(identity(&log, &thief, 6).as_deref(), Some("b-1"));
        // The operator revokes the real key as of the stolen rotation.
        log.apply(KeyEvent::revoke_by_operator(
            real.public_key(),
            stolen_rotation,
            &op,
        ))
        .unwrap();
        assert_eq!(identity(&log, &real, 4).as_deref(), Some("b-1"));
        for i in [stolen_rotation, 6, 7, 100] {
            assert!(
                matches!(
                    log.registry.status(&thief.public_key(), i),
                    KeyStatus::Revoked { .. }
                ),
                "{i}"
            );
        }
        assert!(log.registry.active_keys().is_empty());
        // A new key of the same name continues the builder.
        let fresh = key("b-1", 5);
        let at = log
            .apply(KeyEvent::register(fresh.public_key(), log.next, &op))
            .unwrap();
        assert_eq!(identity(&log, &fresh, at).as_deref(), Some("b-1"));
    }

    #[test]
    fn events_that_break_the_rules_are_refused_and_change_nothing() {
        let mut log = Log::new();
        let op = log.operator.clone();
        let (one, two, other) = (key("b-1", 1), key("b-2", 2), key("c-1", 3));
        log.apply(KeyEvent::register(one.public_key(), log.next, &op))
            .unwrap();
        log.apply(KeyEvent::register(other.public_key(), log.next, &op))
            .unwrap();
        let before = log.registry.active_keys();
        let origin = "example.org/log";
        let refused = [
            KeyEvent::register(one.public_key(), log.next, &op),
            // A stranger's key cannot rotate or revoke.
            KeyEvent::rotate(origin, &two, &key("b-3", 4)),
            KeyEvent::revoke_by_key(origin, &two, 0),
            // Rotating onto a registered key, or onto another builder's name.
            KeyEvent::rotate(origin, &one, &other),
            KeyEvent::rotate(origin, &one, &key("c-1", 7)),
            // A revocation that starts in the future.
            KeyEvent::revoke_by_key(origin, &one, 99),
            // Signed for another log.
            KeyEvent::revoke_by_key("example.org/other", &one, 0),
        ];
        for event in refused {
            assert!(log.apply(event.clone()).is_err(), "{event:?}");
        }
        // A forged operator event.
        let mut forged = KeyEvent::register(two.public_key(), log.next, &op);
        forged.signature[0] ^= 1;
        assert!(matches!(
            log.apply(forged),
            Err(RegistryError::Signature(_))
        ));
        assert_eq!(log.registry.active_keys(), before);
        assert_eq!(log.registry.history().len(), 2);
        // Out of order.
        let event = KeyEvent::unregister(one.public_key(), log.next, &op);
        assert!(matches!(
            log.registry.apply(0, &event),
            Err(RegistryError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn the_builders_file_registers_unregisters_and_leaves_rotated_keys_alone() {
        let mut log = Log::new();
        let op = log.operator.clone();
        let (one, two, gone) = (key("b-1", 1), key("b-2", 2), key("g-1", 3));
        let file = vec![one.public_key(), gone.public_key()];
        let changes = log.registry.builders_file_changes(&file);
        assert_eq!(changes.register, file);
        for k in changes.register {
            log.apply(KeyEvent::register(k, log.next, &op)).unwrap();
        }
        log.apply(KeyEvent::rotate("example.org/log", &one, &two))
            .unwrap();
        // The file still lists key 1 and drops g-1: g-1 goes, key 1 stays retired, key 2
        // (the builder's own) stays.
        let changes = log.registry.builders_file_changes(&[one.public_key()]);
        assert_eq!(changes.register, vec![]);
        assert_eq!(changes.unregister, vec![gone.public_key()]);
        assert_eq!(changes.ignored.len(), 1);
        assert!(changes.ignored[0].1.contains("rotation"), "{changes:?}");
        let at = log
            .apply(KeyEvent::unregister(gone.public_key(), log.next, &op))
            .unwrap();
        assert_eq!(
            log.registry.status(&gone.public_key(), at),
            KeyStatus::Unregistered { at }
        );
        assert!(
            identity(&log, &gone, at - 1).is_some(),
            "earlier signatures keep"
        );
        // Listed again: registered again, same builder.
        let changes = log.registry.builders_file_changes(&[gone.public_key()]);
        assert_eq!(changes.register, vec![gone.public_key()]);
        // A second registration is other bytes than the first, so no duplicate.
        let again = KeyEvent::register(gone.public_key(), log.next, &op);
        assert_ne!(
            again.encode(),
            KeyEvent::register(gone.public_key(), 0, &op).encode()
        );
        let at = log.apply(again).unwrap();
        assert_eq!(identity(&log, &gone, at).as_deref(), Some("g-1"));
    }
}
