//! Why the gate could not allow a path other than by the trust file's decision: every one of
//! these is a denial (fail closed), with its reason in the `X-Reprolog-Reason` header, the
//! gate's log and `/metrics`.

use std::fmt;

/// A denial that is not a decision of the trust file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The log could not be reached, or answered with something that is not an answer.
    Log(String),
    /// The log's checkpoint does not satisfy the log policy.
    Checkpoint(String),
    /// The log forked or rolled back; every request is denied until an operator acts.
    Forked(String),
    /// An entry of a trusted builder is malformed, does not verify, or is not proven in the
    /// checkpoint; or the log answered a lookup with another path's entry.
    Proof(String),
    /// Trusted builders logged different store paths with the same hash part.
    Ambiguous(String),
    /// No upstream serves a narinfo that matches the decided claim.
    Upstream(String),
    /// The request does not name a store path.
    BadRequest(String),
    /// The gate itself failed (a file of its data directory could not be written).
    Internal(String),
}

impl Failure {
    /// The metric label and the first word of the reason header.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Log(_) => "log_error",
            Failure::Checkpoint(_) => "checkpoint_rejected",
            Failure::Forked(_) => "fork",
            Failure::Proof(_) => "proof_failed",
            Failure::Ambiguous(_) => "ambiguous_store_path",
            Failure::Upstream(_) => "no_matching_upstream",
            Failure::BadRequest(_) => "not_a_store_path",
            Failure::Internal(_) => "internal",
        }
    }

    /// What happened, in words.
    pub fn message(&self) -> &str {
        match self {
            Failure::Log(m)
            | Failure::Checkpoint(m)
            | Failure::Forked(m)
            | Failure::Proof(m)
            | Failure::Ambiguous(m)
            | Failure::Upstream(m)
            | Failure::BadRequest(m)
            | Failure::Internal(m) => m,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message())
    }
}

/// Every denial label a failure can have, for metrics with a fixed set of series.
pub const FAILURE_LABELS: [&str; 8] = [
    "log_error",
    "checkpoint_rejected",
    "fork",
    "proof_failed",
    "ambiguous_store_path",
    "no_matching_upstream",
    "not_a_store_path",
    "internal",
];
