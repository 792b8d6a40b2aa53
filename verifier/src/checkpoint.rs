//! C2SP tlog-checkpoint (<https://c2sp.org/tlog-checkpoint>): the signed tree head body.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <base64 root hash>
//! [extension lines]
//! ```

use base64::{engine::general_purpose::STANDARD as B64, Engine};

use crate::merkle::Hash;
use crate::note::{Note, NoteError, VerifiedSignature, VerifierKey};

/// Why a checkpoint body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The body does not follow tlog-checkpoint.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The 1-based line of the checkpoint text.
        line: usize,
        /// What is wrong with that line.
        reason: &'static str,
    },
    /// The signed note around the body is malformed or its signatures do not verify.
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    /// The checkpoint names another log than the key it was opened with.
    #[error("checkpoint origin {found:?} is not the log's origin {expected:?}")]
    WrongOrigin {
        /// The origin the caller trusts: the log key's name.
        expected: String,
        /// The origin line of the checkpoint.
        found: String,
    },
}

/// A checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line, which is also the name of its signing key.
    pub origin: String,
    /// The number of entries in the tree.
    pub size: u64,
    /// The RFC 6962 root hash of the tree of `size` entries.
    pub root: Hash,
    /// Extension lines, without their newlines; each is non-empty.
    pub extensions: Vec<String>,
}

/// Parses a decimal with no sign and no leading zero (except "0").
pub(crate) fn parse_canonical_u64(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// Decodes standard base64 of exactly 32 bytes.
pub(crate) fn parse_hash(s: &str) -> Option<Hash> {
    B64.decode(s).ok()?.try_into().ok()
}

impl Checkpoint {
    /// A checkpoint with no extension lines.
    pub fn new(origin: &str, size: u64, root: Hash) -> Self {
        Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// Parses a checkpoint body (the text of its note).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let malformed = |line, reason| CheckpointError::Malformed { line, reason };
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed(1, "checkpoint must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| malformed(1, "origin line is empty"))?;
        let size = lines
            .next()
            .and_then(parse_canonical_u64)
            .ok_or_else(|| malformed(2, "tree size must be a decimal with no leading zero"))?;
        let root = lines
            .next()
            .and_then(parse_hash)
            .ok_or_else(|| malformed(3, "root hash must be base64 of 32 bytes"))?;
        let mut extensions = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                return Err(malformed(4 + i, "extension line is empty"));
            }
            extensions.push(line.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The body text, each line ending in a newline.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }
}

/// A checkpoint whose note carries a valid signature by its log.
#[derive(Clone, Debug)]
pub struct SignedCheckpoint {
    /// The body, parsed.
    pub checkpoint: Checkpoint,
    /// The note as received, with every signature line, verified or not.
    pub note: Note,
    /// Every signature that verified: the log's, then any cosignatures among `witnesses`.
    pub verified: Vec<VerifiedSignature>,
}

impl SignedCheckpoint {
    /// Opens a signed checkpoint: the log key must have signed it and its name must equal the
    /// origin. Signatures by keys in `witnesses` are checked too; others are ignored.
    pub fn open(
        bytes: &[u8],
        log_key: &VerifierKey,
        witnesses: &[VerifierKey],
    ) -> Result<Self, CheckpointError> {
        let note = Note::parse(bytes)?;
        let checkpoint = Checkpoint::parse(note.text())?;
        if checkpoint.origin != log_key.name() {
            return Err(CheckpointError::WrongOrigin {
                expected: log_key.name().to_owned(),
                found: checkpoint.origin,
            });
        }
        let mut keys = vec![log_key.clone()];
        keys.extend_from_slice(witnesses);
        let verified = note.verify(&keys)?;
        if !verified.iter().any(|v| v.key == *log_key) {
            return Err(CheckpointError::Note(NoteError::NoKnownSignature));
        }
        Ok(SignedCheckpoint {
            checkpoint,
            note,
            verified,
        })
    }
}
