//! The C2SP tlog-witness `add-checkpoint` request body (<https://c2sp.org/tlog-witness>):
//!
//! ```text
//! old <size>
//! <base64 consistency proof hash>…
//!
//! <signed checkpoint>
//! ```

use base64::{engine::general_purpose::STANDARD as B64, Engine};

use crate::checkpoint::{parse_canonical_u64, parse_hash};
use crate::merkle::{Hash, MAX_PROOF_HASHES};

/// A malformed add-checkpoint body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct AddCheckpointError {
    /// The 1-based line of the request body.
    pub line: usize,
    /// What is wrong with that line.
    pub reason: &'static str,
}

/// An add-checkpoint request: the size the log believes the witness holds, the consistency
/// proof from that size, and the new signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The tree size the log believes the witness holds (0 for a witness that holds none).
    pub old_size: u64,
    /// The consistency proof from `old_size` to the new checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, unparsed.
    pub checkpoint: String,
}

impl AddCheckpoint {
    /// The request body.
    pub fn encode(&self) -> String {
        let mut s = format!("old {}\n", self.old_size);
        for h in &self.proof {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    /// Parses a request body. The checkpoint is kept as text, unchecked.
    pub fn parse(bytes: &[u8]) -> Result<Self, AddCheckpointError> {
        let err = |line, reason| AddCheckpointError { line, reason };
        let text = std::str::from_utf8(bytes).map_err(|_| err(1, "body is not UTF-8"))?;
        let (first, mut rest) = text
            .split_once('\n')
            .ok_or_else(|| err(1, "missing old line"))?;
        let old_size = first
            .strip_prefix("old ")
            .and_then(parse_canonical_u64)
            .ok_or_else(|| err(1, "expected \"old N\""))?;
        let mut proof = Vec::new();
        let mut line = 1;
        loop {
            line += 1;
            let (l, tail) = rest
                .split_once('\n')
                .ok_or_else(|| err(line, "missing blank line before the checkpoint"))?;
            rest = tail;
            if l.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_HASHES {
                return Err(err(line, "too many proof hashes"));
            }
            proof.push(parse_hash(l).ok_or_else(|| err(line, "proof line is not a base64 hash"))?);
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            checkpoint: rest.to_owned(),
        })
    }
}
