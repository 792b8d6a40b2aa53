//! The reprolog log entry: one signing event, defined in `spec/entry.md`.
//!
//! The encoding is canonical text: fixed line order, sorted references, one encoding per
//! value. A decoder re-encodes what it read and refuses any difference, so equal events are
//! equal bytes and an event submitted twice has one leaf hash.

use std::collections::BTreeSet;

use base64::{engine::general_purpose::STANDARD as B64, Engine};

use crate::attestation::BuildFacts;
use crate::dsse::{pae, IN_TOTO_PAYLOAD_TYPE};
use crate::key_event::KeyEvent;
use crate::nix::narinfo::{fingerprint, NixHash};
use crate::nix::store_path::check_base_name;
use crate::nix::{NarInfo, NixPublicKey, NixSignature, StorePath};
use crate::tiles::MAX_ENTRY_BYTES;

/// The first line of every entry of this version. Version 1 also carried the narinfo's
/// unsigned `Deriver:` and `CA:` fields, which let anyone turn one signature into any number
/// of entries; version 2 holds only what the builder signed (`spec/entry.md`).
pub const VERSION_LINE: &str = "reprolog-entry/v2";

/// What the builder claims by the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// The key signed the output for a binary cache (a narinfo `Sig:`). It says nothing about
    /// who built it.
    CacheSignature,
    /// The key's owner attests that it built the output itself, from the derivation the
    /// statement names (`spec/attestation.md`).
    Build,
}

impl EntryKind {
    /// The kind as the entry's `kind` line spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            EntryKind::CacheSignature => "cache-signature",
            EntryKind::Build => "build",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "cache-signature" => Some(EntryKind::CacheSignature),
            "build" => Some(EntryKind::Build),
            _ => None,
        }
    }
}

/// Why an entry could not be built, encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    /// The encoded entry (its length in bytes) is over [`MAX_ENTRY_BYTES`].
    #[error("entry is {0} bytes, over the {MAX_ENTRY_BYTES}-byte limit")]
    TooLarge(usize),
    /// The bytes do not follow `spec/entry.md`.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The 1-based line of the entry text.
        line: usize,
        /// What is wrong with that line.
        reason: String,
    },
    /// The entry parses, but encoding it again gives other bytes, so it would have a second
    /// leaf hash for the same event.
    #[error("entry is not in canonical form")]
    NotCanonical,
    /// The signature names another key than the builder key it is checked against.
    #[error("signature is by key {sig:?} but the builder key is {builder:?}")]
    KeyNameMismatch {
        /// The key name of the `Sig:` line.
        sig: String,
        /// The name of the builder key.
        builder: String,
    },
    /// The signature does not verify under the builder key (over the Nix fingerprint, or
    /// over the statement's DSSE encoding for a build).
    #[error("signature does not verify under the builder key")]
    BadSignature,
    /// The entry is a key event where a signing event was expected.
    #[error("the entry is a key event, not a signing event")]
    NotASigningEvent,
    /// A DSSE envelope that is not a build attestation by a trusted key.
    #[error("not a build attestation: {0}")]
    BadAttestation(String),
}

/// One signing event: builder key `builder` signed the output described here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What the signature claims.
    pub kind: EntryKind,
    /// The output the builder signed.
    pub store_path: StorePath,
    /// The SHA-256 of the output's NAR serialisation, as the builder signed it.
    pub nar_hash: NixHash,
    /// The NAR's length in bytes, as the builder signed it.
    pub nar_size: u64,
    /// The output's references, as base names (`<hash>-<name>`), as the builder signed them.
    pub references: BTreeSet<String>,
    /// The builder's Nix public key, which the signature verifies under.
    pub builder: NixPublicKey,
    /// The Ed25519 signature: over the Nix fingerprint ([`Entry::fingerprint`]) for a cache
    /// signature, over the DSSE encoding of [`Entry::statement`] for a build.
    pub signature: [u8; 64],
    /// For a `build` entry, the canonical in-toto statement the signature covers; its subject
    /// is the fields above. `None` for a cache signature.
    pub statement: Option<Vec<u8>>,
}

impl Entry {
    /// The event of `builder` signing `info`, checked: the signature must be by that key and
    /// verify over the narinfo's fingerprint.
    pub fn from_narinfo(
        info: &NarInfo,
        builder: &NixPublicKey,
        sig: &NixSignature,
    ) -> Result<Self, EntryError> {
        let entry = Self::claim(info, builder, sig);
        if sig.key_name != builder.name {
            return Err(EntryError::KeyNameMismatch {
                sig: sig.key_name.clone(),
                builder: builder.name.clone(),
            });
        }
        entry.verify_signature()?;
        Ok(entry)
    }

    /// The entry `sig` would make as `builder`'s signature of `info`, unchecked: for looking
    /// it up in a log before paying for a verification. Trust it only once
    /// [`Entry::verify_signature`] (or [`Entry::from_narinfo`]) has passed.
    pub fn claim(info: &NarInfo, builder: &NixPublicKey, sig: &NixSignature) -> Self {
        Entry {
            kind: EntryKind::CacheSignature,
            store_path: info.store_path.clone(),
            nar_hash: info.nar_hash,
            nar_size: info.nar_size,
            references: info.references.clone(),
            builder: builder.clone(),
            signature: sig.signature,
            statement: None,
        }
    }

    /// The `build` event of a DSSE envelope: its signature must verify under a key of
    /// `trusted` (the one its `keyid` names) and its statement must be a canonical build
    /// statement by that key (`spec/attestation.md`).
    pub fn from_attestation(
        envelope: &crate::dsse::Envelope,
        trusted: &[NixPublicKey],
    ) -> Result<Self, EntryError> {
        let (facts, verified) = BuildFacts::verify(envelope, trusted)
            .map_err(|e| EntryError::BadAttestation(e.to_string()))?;
        Ok(Entry {
            kind: EntryKind::Build,
            statement: Some(verified.body),
            store_path: facts.store_path,
            nar_hash: facts.nar_hash,
            nar_size: facts.nar_size,
            references: facts.references,
            builder: verified.key,
            signature: verified.signature,
        })
    }

    /// The bytes the builder signed.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Checks the builder's signature from the entry alone.
    pub fn verify_signature(&self) -> Result<(), EntryError> {
        if let Some(statement) = &self.statement {
            let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
            let message = pae(IN_TOTO_PAYLOAD_TYPE, statement);
            return match self.builder.key.verify_strict(&message, &sig) {
                Ok(()) => Ok(()),
                Err(_) => Err(EntryError::BadSignature),
            };
        }
        let sig = NixSignature {
            key_name: self.builder.name.clone(),
            signature: self.signature,
        };
        if self.builder.verify(&self.fingerprint(), &sig) {
            Ok(())
        } else {
            Err(EntryError::BadSignature)
        }
    }

    /// Whether this entry logs one of `info`'s signatures: same path, NAR hash and size,
    /// references, and a `Sig:` line with this builder's name and signature bytes.
    pub fn logs_signature_of(&self, info: &NarInfo) -> bool {
        let sig = self.nix_signature().to_string();
        self.kind == EntryKind::CacheSignature
            && self.store_path == info.store_path
            && self.nar_hash == info.nar_hash
            && self.nar_size == info.nar_size
            && self.references == info.references
            && info.sigs.contains(&sig)
    }

    /// The `Sig:` value as it appears in a narinfo.
    pub fn nix_signature(&self) -> NixSignature {
        NixSignature {
            key_name: self.builder.name.clone(),
            signature: self.signature,
        }
    }

    fn lines(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(512);
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "{VERSION_LINE}\nkind {}\nstore-path {}\nnar-hash {}\nnar-size {}\n",
            self.kind.as_str(),
            self.store_path,
            self.nar_hash.to_nix32(),
            self.nar_size
        );
        for r in &self.references {
            let _ = writeln!(s, "reference {r}");
        }
        let _ = writeln!(s, "builder {}", self.builder);
        let _ = writeln!(s, "signature {}", B64.encode(self.signature));
        if let Some(statement) = &self.statement {
            let _ = writeln!(s, "statement {}", B64.encode(statement));
        }
        s
    }

    /// The canonical encoding, at most [`MAX_ENTRY_BYTES`]. A `build` entry must carry its
    /// statement, and only a `build` entry may.
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        if (self.kind == EntryKind::Build) != self.statement.is_some() {
            return Err(malformed(
                2,
                "a build entry, and only a build entry, has a statement",
            ));
        }
        let bytes = self.lines().into_bytes();
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    /// Decodes a canonical signing event. The signature is not checked; call
    /// [`Entry::verify_signature`]. A key event is refused: read entries of any kind with
    /// [`LogEntry::decode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        match LogEntry::decode(bytes)? {
            LogEntry::Signing(entry) => Ok(entry),
            LogEntry::Key(_) => Err(EntryError::NotASigningEvent),
        }
    }

    fn decode_after_kind<'a, I: Iterator<Item = &'a str>>(
        kind: EntryKind,
        lines: &mut EntryLines<'a, I>,
    ) -> Result<Self, EntryError> {
        let (n, path) = lines.field("store-path")?;
        let store_path = StorePath::parse(path).map_err(|e| malformed(n, &e.to_string()))?;
        let (n, hash) = lines.field("nar-hash")?;
        let nar_hash = NixHash::parse(hash).map_err(|e| malformed(n, &e))?;
        let (n, size) = lines.field("nar-size")?;
        let nar_size = crate::checkpoint::parse_canonical_u64(size)
            .ok_or_else(|| malformed(n, "bad nar-size"))?;
        let mut references = BTreeSet::new();
        while let Some((n, r)) = lines.optional("reference")? {
            check_base_name(r).map_err(|e| malformed(n, &e.to_string()))?;
            references.insert(r.to_owned());
        }
        let (n, builder) = lines.field("builder")?;
        let builder = NixPublicKey::parse(builder).map_err(|e| malformed(n, &e.to_string()))?;
        let (n, sig) = lines.field("signature")?;
        let signature = B64
            .decode(sig)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| malformed(n, "signature must be base64 of 64 bytes"))?;
        let statement = match kind {
            EntryKind::CacheSignature => None,
            EntryKind::Build => {
                let (n, text) = lines.field("statement")?;
                let statement = B64
                    .decode(text)
                    .map_err(|_| malformed(n, "statement must be base64"))?;
                // The statement is what was signed; the fields above must be its subject.
                let facts = BuildFacts::parse(&statement, &builder.name)
                    .map_err(|e| malformed(n, &e.to_string()))?;
                if facts.store_path != store_path
                    || facts.nar_hash != nar_hash
                    || facts.nar_size != nar_size
                    || facts.references != references
                {
                    return Err(malformed(
                        n,
                        "the statement's subject is not the entry's output",
                    ));
                }
                Some(statement)
            }
        };
        Ok(Entry {
            kind,
            store_path,
            nar_hash,
            nar_size,
            references,
            builder,
            signature,
            statement,
        })
    }
}

/// Any entry of the log: a signing event, or a key event that changes who may sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry {
    /// A builder's signature of an output (`cache-signature` or `build`).
    Signing(Entry),
    /// A change to the registry of builder keys (`key-…`).
    Key(KeyEvent),
}

impl LogEntry {
    /// Decodes a canonical entry of any kind. Signatures are not checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| malformed(1, "not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed(1, "entry must end with a newline"))?;
        let mut lines = EntryLines(body.split('\n').enumerate().peekable(), 0);
        let (_, version) = lines.0.next().ok_or_else(|| malformed(1, "empty entry"))?;
        lines.1 = 1;
        if version == "reprolog-entry/v1" {
            return Err(malformed(
                1,
                "version 1 entries (with unsigned deriver and CA fields) are no longer read",
            ));
        }
        if version != VERSION_LINE {
            return Err(malformed(1, "unknown entry version"));
        }
        let (n, kind) = lines.field("kind")?;
        let entry = match EntryKind::parse(kind) {
            Some(kind) => LogEntry::Signing(Entry::decode_after_kind(kind, &mut lines)?),
            None if kind.starts_with("key-") => {
                LogEntry::Key(KeyEvent::decode_after_kind(kind, &mut lines)?)
            }
            None => return Err(malformed(n, "unknown entry kind")),
        };
        if let Some((i, _)) = lines.0.next() {
            return Err(malformed(i + 1, "unexpected line after the last field"));
        }
        if entry.encode()? != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        match self {
            LogEntry::Signing(e) => e.encode(),
            LogEntry::Key(e) => Ok(e.encode()),
        }
    }

    /// The entry's kind, as its `kind` line spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            LogEntry::Signing(e) => e.kind.as_str(),
            LogEntry::Key(e) => e.action.kind(),
        }
    }
}

pub(crate) fn malformed(line: usize, reason: &str) -> EntryError {
    EntryError::Malformed {
        line,
        reason: reason.to_owned(),
    }
}

/// The lines of an entry, read in their fixed order, and how many have been read (so that a
/// missing line can be named).
pub(crate) struct EntryLines<'a, I: Iterator<Item = &'a str>>(
    std::iter::Peekable<std::iter::Enumerate<I>>,
    usize,
);

impl<'a, I: Iterator<Item = &'a str>> EntryLines<'a, I> {
    /// The next line, which must be `<name> <value>`; returns its number and value.
    pub(crate) fn field(&mut self, name: &str) -> Result<(usize, &'a str), EntryError> {
        let (i, line) = self
            .0
            .next()
            .ok_or_else(|| malformed(self.1 + 1, &format!("missing {name} line")))?;
        self.1 = i + 1;
        line.strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .map(|v| (i + 1, v))
            .ok_or_else(|| malformed(i + 1, &format!("expected \"{name} …\"")))
    }

    /// The next line if it is `<name> <value>`.
    fn optional(&mut self, name: &str) -> Result<Option<(usize, &'a str)>, EntryError> {
        match self.0.peek() {
            Some((_, l)) if l.strip_prefix(name).is_some_and(|v| v.starts_with(' ')) => {
                self.field(name).map(Some)
            }
            _ => Ok(None),
        }
    }
}
