//! C2SP signed-note (<https://c2sp.org/signed-note>): keys, signing and opening notes.
//!
//! Two key types are understood: Ed25519 (type 0x01), used by logs, and the witness
//! cosignature/v1 type (0x04) of <https://c2sp.org/tlog-cosignature>, whose signatures carry a
//! timestamp. A witness holds an ordinary Ed25519 signer key; its cosignature verifier key is
//! derived from it with type 0x04.

use std::fmt;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::cosignature;

/// Signature type byte of plain Ed25519 note signatures.
pub const ALG_ED25519: u8 = 0x01;
/// Signature type byte of tlog-cosignature/v1 witness cosignatures.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// Notes larger than this are refused before any parsing.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
/// The most signature lines a note may carry, as Go's sumdb/note allows.
pub const MAX_SIGNATURES: usize = 100;

const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// A malformed or unusable key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// A key name that is empty or has white space or a `+` (the name as given).
    #[error("key name {0:?} is empty or contains a space or a '+'")]
    BadName(String),
    /// The key text is not `name+hash+base64` with a 33-byte value; the string says what is
    /// wrong.
    #[error("malformed key: {0}")]
    Malformed(&'static str),
    /// A key type byte other than [`ALG_ED25519`] and [`ALG_COSIGNATURE_V1`], or, for a
    /// signer key, other than [`ALG_ED25519`].
    #[error("unknown key algorithm 0x{0:02x}")]
    UnknownAlgorithm(u8),
    /// The key hash written in the key is not the key ID of its name, type and public key.
    #[error("key hash {written} does not match the key (expected {computed})")]
    WrongKeyId {
        /// The 8 hex digits in the key text.
        written: String,
        /// The key ID computed from the key, as 8 hex digits.
        computed: String,
    },
}

/// Why a note was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// The note (its length in bytes) is over [`MAX_NOTE_BYTES`].
    #[error("note is {0} bytes, over the {MAX_NOTE_BYTES}-byte limit")]
    TooLarge(usize),
    /// The note is not UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// The note does not follow signed-note.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The 1-based line of the note, counting text and signature lines together.
        line: usize,
        /// What is wrong with that line.
        reason: &'static str,
    },
    /// The note has more than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A signature by one of the keys the caller trusts does not verify: the whole note is
    /// refused.
    #[error("signature by {name}+{key_id:08x} is invalid")]
    BadSignature {
        /// The key name of the signature line.
        name: String,
        /// The key ID of the signature line.
        key_id: u32,
    },
    /// No signature line is by a key the caller trusts.
    #[error("note has no signature from a known key")]
    NoKnownSignature,
}

/// A signature that does not verify under the key it names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid signature")]
pub struct InvalidSignature;

/// Whether a key name is valid: non-empty, no Unicode white space, no '+'.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+')
}

/// The C2SP key ID: the first four bytes of SHA-256(name ‖ 0x0A ‖ type ‖ public key).
pub fn key_id(name: &str, alg: u8, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([alg]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Splits `name+hash+base64` and checks the name and the key bytes' type and length.
fn split_key<'a>(s: &'a str, what: &'static str) -> Result<(&'a str, &'a str, Vec<u8>), KeyError> {
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(hash), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Malformed(what));
    };
    if !valid_key_name(name) {
        return Err(KeyError::BadName(name.to_owned()));
    }
    if hash.len() != 8 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::Malformed("key hash must be 8 hex digits"));
    }
    let bytes = B64
        .decode(b64)
        .map_err(|_| KeyError::Malformed("key is not valid base64"))?;
    match bytes.first() {
        None => Err(KeyError::Malformed("key is empty")),
        Some(&alg) if alg != ALG_ED25519 && alg != ALG_COSIGNATURE_V1 => {
            Err(KeyError::UnknownAlgorithm(alg))
        }
        Some(_) if bytes.len() != 33 => Err(KeyError::Malformed("key must be 32 bytes")),
        Some(_) => Ok((name, hash, bytes)),
    }
}

fn check_key_id(written: &str, computed: u32) -> Result<(), KeyError> {
    let computed = format!("{computed:08x}");
    if written == computed {
        Ok(())
    } else {
        Err(KeyError::WrongKeyId {
            written: written.to_owned(),
            computed,
        })
    }
}

/// An Ed25519 signer key, `PRIVATE+KEY+<name>+<hash>+<base64(0x01 ‖ seed)>`.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}, secret redacted)", self.name)
    }
}

impl SignerKey {
    /// A key from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        if !valid_key_name(name) {
            return Err(KeyError::BadName(name.to_owned()));
        }
        Ok(SignerKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        Self::from_seed(name, seed)
    }

    /// Parses `PRIVATE+KEY+name+hash+base64`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let rest = s
            .trim_end_matches('\n')
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(KeyError::Malformed(
                "signer key must start with PRIVATE+KEY+",
            ))?;
        let (name, hash, bytes) = split_key(rest, "signer key must be PRIVATE+KEY+name+hash+key")?;
        if bytes[0] != ALG_ED25519 {
            return Err(KeyError::UnknownAlgorithm(bytes[0]));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[1..]);
        let key = Self::from_seed(name, seed)?;
        check_key_id(hash, key.key_id())?;
        Ok(key)
    }

    /// The key in its `PRIVATE+KEY+…` text form. Treat the result as a secret.
    pub fn to_secret_string(&self) -> String {
        let mut bytes = vec![ALG_ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id(),
            B64.encode(bytes)
        )
    }

    /// The key name, which its signature lines carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID of its Ed25519 verifier key, which its note signatures carry.
    pub fn key_id(&self) -> u32 {
        key_id(&self.name, ALG_ED25519, self.key.verifying_key().as_bytes())
    }

    /// The matching Ed25519 verifier key.
    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey::new(&self.name, ALG_ED25519, self.key.verifying_key())
    }

    /// The cosignature/v1 verifier key of this key, for use as a witness.
    pub fn cosignature_verifier_key(&self) -> VerifierKey {
        VerifierKey::new(&self.name, ALG_COSIGNATURE_V1, self.key.verifying_key())
    }

    /// An Ed25519 note signature over `text`.
    pub fn sign(&self, text: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id(),
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        }
    }

    /// An Ed25519 signature over bytes that are not a note: reprolog's key events, whose
    /// messages start with a domain that holds a NUL byte, which no note text may hold, so
    /// that no such signature can pass as a checkpoint's (`spec/entry.md`, "Key events").
    pub fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// This key's cosignature/v1 line over a checkpoint body at `timestamp` (seconds since
    /// the epoch), as a witness adds it to the checkpoint's note. It verifies under
    /// [`SignerKey::cosignature_verifier_key`].
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> NoteSignature {
        let signature = self
            .key
            .sign(&cosignature::signed_message(checkpoint_text, timestamp));
        NoteSignature {
            name: self.name.clone(),
            key_id: self.cosignature_verifier_key().key_id(),
            signature: cosignature::encode(timestamp, &signature),
        }
    }
}

/// A verifier key, `<name>+<hash>+<base64(type ‖ public key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    alg: u8,
    key_id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = vec![self.alg];
        bytes.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, B64.encode(bytes))
    }
}

impl std::str::FromStr for VerifierKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::parse(s)
    }
}

impl VerifierKey {
    fn new(name: &str, alg: u8, key: VerifyingKey) -> Self {
        VerifierKey {
            name: name.to_owned(),
            alg,
            key_id: key_id(name, alg, key.as_bytes()),
            key,
        }
    }

    /// Parses `name+hash+base64`, checking that the hash matches the key.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, hash, bytes) = split_key(s.trim(), "verifier key must be name+hash+key")?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&bytes[1..]);
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| KeyError::Malformed("not an Ed25519 public key"))?;
        let key = Self::new(name, bytes[0], key);
        check_key_id(hash, key.key_id)?;
        Ok(key)
    }

    /// The key name, which signature lines by this key carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The C2SP key ID, which signature lines by this key carry.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature type byte: [`ALG_ED25519`] or [`ALG_COSIGNATURE_V1`].
    pub fn algorithm(&self) -> u8 {
        self.alg
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Checks one signature (without its key ID) over a note text. A valid cosignature yields
    /// its timestamp; a valid Ed25519 signature yields `None`.
    pub fn verify(&self, text: &str, signature: &[u8]) -> Result<Option<u64>, InvalidSignature> {
        match self.alg {
            ALG_COSIGNATURE_V1 => cosignature::verify(&self.key, text, signature)
                .map(Some)
                .map_err(|cosignature::InvalidCosignature| InvalidSignature),
            _ => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| InvalidSignature)?;
                self.key
                    .verify_strict(text.as_bytes(), &sig)
                    .map(|_| None)
                    .map_err(|_| InvalidSignature)
            }
        }
    }
}

/// One signature line of a note: the signer's name, the key ID and the signature bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name the line claims.
    pub name: String,
    /// The key ID the line claims.
    pub key_id: u32,
    /// The signature bytes after the key ID: 64 bytes of Ed25519, or for a cosignature the
    /// 8-byte timestamp and then 64 bytes. Unchecked until verified under a key.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The line as it appears in a note, with its final newline.
    pub fn to_line(&self) -> String {
        let mut bytes = self.key_id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, B64.encode(bytes))
    }

    /// Parses one signature line, without its newline, as it stands alone (for example in a
    /// witness's answer).
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        Self::parse(line, 1)
    }

    /// Parses one signature line without its newline.
    fn parse(line: &str, line_no: usize) -> Result<Self, NoteError> {
        let malformed = |reason| NoteError::Malformed {
            line: line_no,
            reason,
        };
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| malformed("signature line must start with \"\u{2014} \""))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("signature line must be \"\u{2014} name signature\""))?;
        if !valid_key_name(name) {
            return Err(malformed("bad key name in signature line"));
        }
        let bytes = B64
            .decode(b64)
            .map_err(|_| malformed("signature is not valid base64"))?;
        if bytes.len() < 5 {
            return Err(malformed("signature is too short"));
        }
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            signature: bytes[4..].to_vec(),
        })
    }
}

/// A signature that verified under a known key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The trusted key it verified under.
    pub key: VerifierKey,
    /// The cosignature timestamp, for cosignature/v1 keys.
    pub timestamp: Option<u64>,
}

/// A signed note: text and signature lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    for (i, line) in text.split('\n').enumerate() {
        if line.chars().any(|c| c.is_ascii_control()) {
            return Err(NoteError::Malformed {
                line: i + 1,
                reason: "control character in note text",
            });
        }
    }
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed {
            line: text.split('\n').count(),
            reason: "note text must end with a newline",
        });
    }
    Ok(())
}

impl Note {
    /// An unsigned note. The text must be UTF-8 without control characters and end in `\n`.
    pub fn new(text: &str) -> Result<Self, NoteError> {
        if text.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(text.len()));
        }
        check_text(text)?;
        Ok(Note {
            text: text.to_owned(),
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note: text, a blank line, then one or more signature lines.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(bytes.len()));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        let split = s.rfind("\n\n").ok_or(NoteError::Malformed {
            line: s.split('\n').count(),
            reason: "no blank line before the signatures",
        })?;
        let (text, sigs) = (&s[..split + 1], &s[split + 2..]);
        check_text(text)?;
        let first_sig_line = text.split('\n').count() + 1;
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(NoteError::Malformed {
                line: first_sig_line + sigs.split('\n').count() - 1,
                reason: "note must end with a newline",
            });
        };
        let mut signatures = Vec::new();
        for (i, line) in sigs.split('\n').enumerate() {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(NoteSignature::parse(line, first_sig_line + i)?);
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, ending in a newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order, verified or not.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature, replacing any earlier one by the same key.
    pub fn add_signature(&mut self, sig: NoteSignature) {
        self.signatures
            .retain(|s| !(s.name == sig.name && s.key_id == sig.key_id));
        self.signatures.push(sig);
    }

    /// Signs the text with a signer key.
    pub fn sign(&mut self, key: &SignerKey) {
        let sig = key.sign(&self.text);
        self.add_signature(sig);
    }

    /// The note as text: the body, a blank line and the signature lines.
    pub fn encode(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }

    /// Checks the signatures from `keys`, ignoring signatures by other keys. A bad signature by
    /// a known key refuses the whole note, and so does a note with no known signature.
    pub fn verify(&self, keys: &[VerifierKey]) -> Result<Vec<VerifiedSignature>, NoteError> {
        let mut verified: Vec<VerifiedSignature> = Vec::new();
        for sig in &self.signatures {
            let Some(key) = keys
                .iter()
                .find(|k| k.name == sig.name && k.key_id == sig.key_id)
            else {
                continue;
            };
            if verified.iter().any(|v| v.key == *key) {
                continue;
            }
            let timestamp = key
                .verify(&self.text, &sig.signature)
                .map_err(|InvalidSignature| NoteError::BadSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                })?;
            verified.push(VerifiedSignature {
                key: key.clone(),
                timestamp,
            });
        }
        if verified.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(verified)
    }
}
