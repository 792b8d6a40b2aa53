//! C2SP tlog-proof (<https://c2sp.org/tlog-proof>): the offline receipt that an entry is in a
//! log, with the inclusion proof and the (cosigned) checkpoint it leads to.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! [extra <base64>]
//! index <N>
//! <base64 proof hash>…
//!
//! <signed checkpoint, verbatim>
//! ```

use base64::{engine::general_purpose::STANDARD as B64, Engine};

use crate::checkpoint::{parse_canonical_u64, parse_hash, CheckpointError, SignedCheckpoint};
use crate::merkle::{self, Hash, ProofError, MAX_PROOF_HASHES};
use crate::note::VerifierKey;

const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Why a tlog-proof was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlogProofError {
    /// The text does not follow tlog-proof.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The 1-based line of the tlog-proof text.
        line: usize,
        /// What is wrong with that line.
        reason: &'static str,
    },
    /// The checkpoint it carries is malformed or not signed by the log.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The inclusion proof does not verify against the checkpoint.
    #[error("inclusion proof: {0}")]
    Proof(#[from] ProofError),
}

/// A parsed tlog-proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque, unauthenticated application data.
    pub extra: Option<Vec<u8>>,
    /// The 0-based index of the entry in the log.
    pub index: u64,
    /// The inclusion proof of the entry in the checkpoint's tree, lowest level first.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, exactly as the log (and witnesses) signed it.
    pub checkpoint: String,
}

impl TlogProof {
    /// The proof in its tlog-proof text form.
    pub fn encode(&self) -> String {
        let mut s = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            s.push_str(&format!("extra {}\n", B64.encode(extra)));
        }
        s.push_str(&format!("index {}\n", self.index));
        for h in &self.proof {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    /// Parses a tlog-proof's text. Nothing is verified: see [`TlogProof::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Self, TlogProofError> {
        let malformed = |line, reason| TlogProofError::Malformed { line, reason };
        let text = std::str::from_utf8(bytes).map_err(|_| malformed(1, "not UTF-8"))?;
        let mut lines = text.split_inclusive('\n');
        let mut line_no = 0;
        let mut next_line = |reason| {
            line_no += 1;
            lines
                .next()
                .and_then(|l| l.strip_suffix('\n'))
                .ok_or_else(|| malformed(line_no, reason))
                .map(|l| (line_no, l))
        };
        let (_, header) = next_line("missing header")?;
        if header != HEADER {
            return Err(malformed(1, "first line must be c2sp.org/tlog-proof@v1"));
        }
        let (mut n, mut line) = next_line("missing index line")?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            extra = Some(
                B64.decode(b64)
                    .map_err(|_| malformed(n, "extra data is not valid base64"))?,
            );
            (n, line) = next_line("missing index line")?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(parse_canonical_u64)
            .ok_or_else(|| malformed(n, "expected \"index N\""))?;
        let mut proof = Vec::new();
        loop {
            let (n, line) = next_line("missing blank line before the checkpoint")?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_HASHES {
                return Err(malformed(n, "too many proof hashes"));
            }
            proof.push(
                parse_hash(line).ok_or_else(|| malformed(n, "proof line is not a base64 hash"))?,
            );
        }
        let consumed = text.len() - lines.map(str::len).sum::<usize>();
        Ok(TlogProof {
            extra,
            index,
            proof,
            checkpoint: text[consumed..].to_owned(),
        })
    }

    /// Verifies that `entry` is at `index` under a checkpoint signed by `log_key`, and checks
    /// any cosignatures by `witnesses`. Whether enough witnesses signed is the caller's policy.
    pub fn verify(
        &self,
        entry: &[u8],
        log_key: &VerifierKey,
        witnesses: &[VerifierKey],
    ) -> Result<SignedCheckpoint, TlogProofError> {
        let signed = SignedCheckpoint::open(self.checkpoint.as_bytes(), log_key, witnesses)?;
        merkle::verify_inclusion(
            &self.proof,
            self.index,
            signed.checkpoint.size,
            &merkle::leaf_hash(entry),
            &signed.checkpoint.root,
        )?;
        Ok(signed)
    }
}
