//! Key events: the entries that record, in the log itself, which builder keys may sign
//! (`spec/entry.md`, "Key events"). The operator registers and unregisters keys with the log's
//! own key; a builder rotates to a new key with both keys; a key is revoked as of an index by
//! itself or by the operator. [`crate::registry`] replays them into the registry.
//!
//! Every key event is signed over [`KEY_EVENT_DOMAIN`] followed by the entry's lines up to its
//! first signature line. The domain holds a NUL byte, which no signed-note text may hold, so an
//! operator signature can never pass as a checkpoint signature; builder keys sign Nix
//! fingerprints (`1;…`) and DSSE messages (`DSSEv1 …`), which start otherwise.

use base64::{engine::general_purpose::STANDARD as B64, Engine};

use crate::entry::{malformed, EntryError, EntryLines, VERSION_LINE};
use crate::nix::{NixPublicKey, NixSecretKey};
use crate::note::{valid_key_name, SignerKey, VerifierKey, ALG_ED25519};

/// What every key event's signed message starts with.
pub const KEY_EVENT_DOMAIN: &[u8] = b"reprolog-key-event/v1\0";

/// Who signed a revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoker {
    /// The revoked key itself.
    Key,
    /// The log's operator, with the log's key (for a key whose holder lost it).
    Operator,
}

impl Revoker {
    fn as_str(self) -> &'static str {
        match self {
            Revoker::Key => "key",
            Revoker::Operator => "operator",
        }
    }
}

/// The change a key event makes to the registry.
// A rotation holds two keys; key events are few, so the size is not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// The operator allows a key to append. Signed by the log's key.
    Register(NixPublicKey),
    /// The operator withdraws a key from this index on; what it signed before keeps its value.
    /// Signed by the log's key.
    Unregister(NixPublicKey),
    /// A builder replaces `old` with `new`: `new` continues `old`'s builder identity and `old`
    /// is retired from this index on. Signed by both keys.
    Rotate {
        /// The key being retired.
        old: NixPublicKey,
        /// Its successor.
        new: NixPublicKey,
    },
    /// Signatures by `key` logged at index `as_of` or later are void; those before keep their
    /// value.
    Revoke {
        /// The revoked key.
        key: NixPublicKey,
        /// The first index whose signatures by the key are void.
        as_of: u64,
        /// Who signed the revocation.
        by: Revoker,
    },
}

impl KeyAction {
    /// The entry kind that records this action.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyAction::Register(_) => "key-register",
            KeyAction::Unregister(_) => "key-unregister",
            KeyAction::Rotate { .. } => "key-rotate",
            KeyAction::Revoke { .. } => "key-revoke",
        }
    }

    /// The key the action is about (for a rotation, the old key).
    pub fn key(&self) -> &NixPublicKey {
        match self {
            KeyAction::Register(k) | KeyAction::Unregister(k) => k,
            KeyAction::Rotate { old, .. } => old,
            KeyAction::Revoke { key, .. } => key,
        }
    }

    /// Whether the log's operator signs it (rather than a builder key).
    pub fn signed_by_operator(&self) -> bool {
        match self {
            KeyAction::Register(_) | KeyAction::Unregister(_) => true,
            KeyAction::Rotate { .. } => false,
            KeyAction::Revoke { by, .. } => *by == Revoker::Operator,
        }
    }
}

/// Why a key event is not what it claims.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyEventError {
    /// The event names another log than the one it is checked for.
    #[error("the key event is for log {event:?}, not {log:?}")]
    WrongLog {
        /// The origin the event names.
        event: String,
        /// The log's origin.
        log: String,
    },
    /// The log's key is not an Ed25519 signed-note key, so it cannot have signed.
    #[error("the log key {0} is not an Ed25519 key")]
    NotEd25519(String),
    /// A signature does not verify under the key that must have made it.
    #[error("the {0} signature does not verify")]
    BadSignature(&'static str),
}

/// One key event, as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEvent {
    /// The origin of the log the event is for; an event signed for one log means nothing in
    /// another, whose indexes differ.
    pub origin: String,
    /// The change.
    pub action: KeyAction,
    /// For a registration or withdrawal: the log's size when the operator made it, at most
    /// the event's own index. Without it, registering a key again after a withdrawal would
    /// be the same bytes as the first registration, and taken for a duplicate.
    pub made_at: Option<u64>,
    /// By the operator (register, unregister, a revocation by the operator), by the key
    /// (a revocation by the key), or by the old key (a rotation).
    pub signature: [u8; 64],
    /// A rotation's signature by the new key; `None` for other actions.
    pub new_signature: Option<[u8; 64]>,
}

impl KeyEvent {
    fn unsigned(origin: &str, action: KeyAction) -> Self {
        KeyEvent {
            origin: origin.to_owned(),
            action,
            made_at: None,
            signature: [0; 64],
            new_signature: None,
        }
    }

    fn by_operator(action: KeyAction, made_at: Option<u64>, operator: &SignerKey) -> Self {
        let mut event = Self::unsigned(operator.name(), action);
        event.made_at = made_at;
        event.signature = operator.sign_message(&event.signed_message());
        event
    }

    /// The operator's registration of `key` in the log whose key is `operator`, made when the
    /// log had `size` entries.
    pub fn register(key: NixPublicKey, size: u64, operator: &SignerKey) -> Self {
        Self::by_operator(KeyAction::Register(key), Some(size), operator)
    }

    /// The operator's withdrawal of `key`, made when the log had `size` entries.
    pub fn unregister(key: NixPublicKey, size: u64, operator: &SignerKey) -> Self {
        Self::by_operator(KeyAction::Unregister(key), Some(size), operator)
    }

    /// A rotation from `old` to `new` in the log `origin`, signed by both.
    pub fn rotate(origin: &str, old: &NixSecretKey, new: &NixSecretKey) -> Self {
        let action = KeyAction::Rotate {
            old: old.public_key(),
            new: new.public_key(),
        };
        let mut event = Self::unsigned(origin, action);
        let message = event.signed_message();
        event.signature = old.sign_bytes(&message);
        event.new_signature = Some(new.sign_bytes(&message));
        event
    }

    /// A key's revocation of itself as of index `as_of` in the log `origin`.
    pub fn revoke_by_key(origin: &str, key: &NixSecretKey, as_of: u64) -> Self {
        let action = KeyAction::Revoke {
            key: key.public_key(),
            as_of,
            by: Revoker::Key,
        };
        let mut event = Self::unsigned(origin, action);
        event.signature = key.sign_bytes(&event.signed_message());
        event
    }

    /// The operator's revocation of `key` as of index `as_of`.
    pub fn revoke_by_operator(key: NixPublicKey, as_of: u64, operator: &SignerKey) -> Self {
        let action = KeyAction::Revoke {
            key,
            as_of,
            by: Revoker::Operator,
        };
        Self::by_operator(action, None, operator)
    }

    /// The entry lines every signature covers: from the version line to the last line before
    /// `signature`.
    fn signed_lines(&self) -> String {
        let mut s = format!(
            "{VERSION_LINE}\nkind {}\nlog {}\nkey {}\n",
            self.action.kind(),
            self.origin,
            self.action.key()
        );
        match &self.action {
            KeyAction::Register(_) | KeyAction::Unregister(_) => {
                s += &format!("made-at {}\n", self.made_at.unwrap_or_default())
            }
            KeyAction::Rotate { new, .. } => s += &format!("new-key {new}\n"),
            KeyAction::Revoke { as_of, by, .. } => {
                s += &format!("as-of {as_of}\nrevoked-by {}\n", by.as_str())
            }
        }
        s
    }

    /// The bytes every signature of the event is made over.
    pub fn signed_message(&self) -> Vec<u8> {
        [KEY_EVENT_DOMAIN, self.signed_lines().as_bytes()].concat()
    }

    /// The canonical entry text.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = self.signed_lines();
        s += &format!("signature {}\n", B64.encode(self.signature));
        if let Some(sig) = &self.new_signature {
            s += &format!("new-signature {}\n", B64.encode(sig));
        }
        s.into_bytes()
    }

    /// Checks the event's signatures: the operator's under `log_key`, whose name must be the
    /// event's origin, and a builder key's under that key. Says nothing of whether the change
    /// is allowed in the registry's state; [`crate::registry::KeyRegistry::apply`] decides
    /// that.
    pub fn verify(&self, log_key: &VerifierKey) -> Result<(), KeyEventError> {
        if self.origin != log_key.name() {
            return Err(KeyEventError::WrongLog {
                event: self.origin.clone(),
                log: log_key.name().to_owned(),
            });
        }
        let message = self.signed_message();
        let by = |key: &ed25519_dalek::VerifyingKey, sig: &[u8; 64], who: &'static str| {
            key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(sig))
                .map_err(|_| KeyEventError::BadSignature(who))
        };
        if self.action.signed_by_operator() {
            if log_key.algorithm() != ALG_ED25519 {
                return Err(KeyEventError::NotEd25519(log_key.name().to_owned()));
            }
            return by(log_key.public_key(), &self.signature, "operator's");
        }
        match (&self.action, &self.new_signature) {
            (KeyAction::Rotate { old, new }, Some(new_sig)) => {
                by(&old.key, &self.signature, "old key's")?;
                by(&new.key, new_sig, "new key's")
            }
            (KeyAction::Rotate { .. }, None) => Err(KeyEventError::BadSignature("new key's")),
            (action, _) => by(&action.key().key, &self.signature, "key's"),
        }
    }

    /// Decodes the lines after `kind <kind>` (already read as `kind`). The caller checks that
    /// the whole entry re-encodes to the same bytes.
    pub(crate) fn decode_after_kind<'a, I: Iterator<Item = &'a str>>(
        kind: &str,
        lines: &mut EntryLines<'a, I>,
    ) -> Result<Self, EntryError> {
        let (n, origin) = lines.field("log")?;
        if !valid_key_name(origin) {
            return Err(malformed(n, "not a log origin"));
        }
        let key = read_key(lines, "key")?;
        let mut made_at = None;
        let action = match kind {
            "key-register" | "key-unregister" => {
                let (n, size) = lines.field("made-at")?;
                made_at = Some(
                    crate::checkpoint::parse_canonical_u64(size)
                        .ok_or_else(|| malformed(n, "bad made-at size"))?,
                );
                match kind {
                    "key-register" => KeyAction::Register(key),
                    _ => KeyAction::Unregister(key),
                }
            }
            "key-rotate" => KeyAction::Rotate {
                old: key,
                new: read_key(lines, "new-key")?,
            },
            "key-revoke" => {
                let (n, as_of) = lines.field("as-of")?;
                let as_of = crate::checkpoint::parse_canonical_u64(as_of)
                    .ok_or_else(|| malformed(n, "bad as-of index"))?;
                let (n, by) = lines.field("revoked-by")?;
                let by = match by {
                    "key" => Revoker::Key,
                    "operator" => Revoker::Operator,
                    _ => return Err(malformed(n, "revoked-by must be key or operator")),
                };
                KeyAction::Revoke { key, as_of, by }
            }
            _ => return Err(malformed(2, "unknown entry kind")),
        };
        let signature = read_signature(lines, "signature")?;
        let new_signature = match action {
            KeyAction::Rotate { .. } => Some(read_signature(lines, "new-signature")?),
            _ => None,
        };
        Ok(KeyEvent {
            origin: origin.to_owned(),
            action,
            made_at,
            signature,
            new_signature,
        })
    }
}

fn read_key<'a, I: Iterator<Item = &'a str>>(
    lines: &mut EntryLines<'a, I>,
    name: &str,
) -> Result<NixPublicKey, EntryError> {
    let (n, text) = lines.field(name)?;
    let key = NixPublicKey::parse(text).map_err(|e| malformed(n, &e.to_string()))?;
    if key.key.is_weak() {
        return Err(malformed(n, "a weak (small-order) key"));
    }
    Ok(key)
}

fn read_signature<'a, I: Iterator<Item = &'a str>>(
    lines: &mut EntryLines<'a, I>,
    name: &str,
) -> Result<[u8; 64], EntryError> {
    let (n, text) = lines.field(name)?;
    B64.decode(text)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| malformed(n, &format!("{name} must be base64 of 64 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::LogEntry;

    fn operator() -> SignerKey {
        SignerKey::from_seed("example.org/log", [9; 32]).unwrap()
    }

    fn events() -> Vec<KeyEvent> {
        let op = operator();
        let one = NixSecretKey::from_seed("cache.example.org-1", [1; 32]);
        let two = NixSecretKey::from_seed("cache.example.org-2", [2; 32]);
        vec![
            KeyEvent::register(one.public_key(), 0, &op),
            KeyEvent::rotate(op.name(), &one, &two),
            KeyEvent::revoke_by_key(op.name(), &two, 7),
            KeyEvent::revoke_by_operator(one.public_key(), 3, &op),
            KeyEvent::unregister(two.public_key(), 9, &op),
        ]
    }

    #[test]
    fn every_kind_round_trips_and_verifies() {
        let log_key = operator().verifier_key();
        for event in events() {
            event.verify(&log_key).unwrap();
            let bytes = event.encode();
            match LogEntry::decode(&bytes).unwrap() {
                LogEntry::Key(decoded) => assert_eq!(decoded, event),
                LogEntry::Signing(_) => panic!("decoded as a signing event"),
            }
        }
    }

    #[test]
    fn a_changed_line_or_another_log_breaks_the_signature() {
        let log_key = operator().verifier_key();
        let other = SignerKey::from_seed("example.org/log", [8; 32]).unwrap();
        for event in events() {
            let mut moved = event.clone();
            if let KeyAction::Revoke { as_of, .. } = &mut moved.action {
                *as_of += 1;
            } else {
                moved.origin = "example.org/other".into();
            }
            assert!(moved.verify(&log_key).is_err(), "{moved:?}");
            // A log key of the same name but other bytes: an operator event fails.
            if event.action.signed_by_operator() {
                assert_eq!(
                    event.verify(&other.verifier_key()),
                    Err(KeyEventError::BadSignature("operator's"))
                );
            }
        }
    }

    #[test]
    fn a_rotation_needs_both_keys() {
        let op = operator();
        let one = NixSecretKey::from_seed("b-1", [1; 32]);
        let two = NixSecretKey::from_seed("b-2", [2; 32]);
        let thief = NixSecretKey::from_seed("b-2", [3; 32]);
        let mut event = KeyEvent::rotate(op.name(), &one, &two);
        // Signed by the old key and a stranger, but naming the real new key.
        event.new_signature = Some(thief.sign_bytes(&event.signed_message()));
        assert_eq!(
            event.verify(&op.verifier_key()),
            Err(KeyEventError::BadSignature("new key's"))
        );
    }

    #[test]
    fn an_operator_signature_is_no_checkpoint_signature() {
        let op = operator();
        let event = KeyEvent::register(NixSecretKey::from_seed("b", [1; 32]).public_key(), 0, &op);
        let message = event.signed_message();
        // No note text can hold a NUL byte, so the message is never a note's text.
        assert!(message.contains(&0));
        assert!(crate::note::Note::new(&String::from_utf8(message).unwrap()).is_err());
    }

    #[test]
    fn malformed_key_events_are_refused_with_the_line() {
        let good = String::from_utf8(events()[2].encode()).unwrap();
        for (from, to, line) in [
            ("revoked-by key", "revoked-by someone", 6),
            ("as-of 7", "as-of 07", 5),
            ("log example.org/log", "log two words", 3),
        ] {
            let bad = good.replace(from, to);
            match LogEntry::decode(bad.as_bytes()) {
                Err(EntryError::Malformed { line: l, .. }) => assert_eq!(l, line, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let trailing = format!("{good}new-signature AAAA\n");
        assert!(LogEntry::decode(trailing.as_bytes()).is_err());
    }
}
