//! The JSON bodies of the log's HTTP API (`spec/api.md`), as serde types that the server
//! writes and clients read, so that a field renamed on one side fails to compile on the other.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde::{Deserialize, Serialize};

use crate::entry::{EntryError, LogEntry};
use crate::merkle;

/// Events a path lookup returns when the client names no `limit`.
pub const PATH_PAGE_DEFAULT: usize = 100;
/// The most events one path lookup returns.
pub const PATH_PAGE_MAX: usize = 1000;
/// A path lookup stops adding events once their entries reach this many bytes (after at least
/// one), so that a page of large entries stays small in memory and on the wire.
pub const PATH_PAGE_BYTES: usize = 1 << 20;
/// How many reasons a refused submission lists.
pub const MAX_REFUSAL_REASONS: usize = 8;

/// One logged entry, as `GET /api/v1/entries/{index}` and path lookups show it. `entry` is the
/// exact entry text; the other fields are decoded from it for convenience, and a verifier
/// decodes `entry` itself rather than trust them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedEntry {
    /// Its index in the log.
    pub index: u64,
    /// Base64 of its RFC 6962 leaf hash.
    pub leaf_hash: String,
    /// The kind of entry (`spec/entry.md`): a signing event's, or a key event's (`key-…`).
    pub kind: String,
    /// The full store path; empty (and absent from JSON) for a key event.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub store_path: String,
    /// `sha256:<nix32>`; empty for a key event.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nar_hash: String,
    /// The NAR's size in bytes; 0 for a key event.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nar_size: u64,
    /// Base names, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// The builder's Nix public key, `name:base64`; for a key event, the key it is about.
    pub builder: String,
    /// The signature as a narinfo `Sig:` value; empty for a key event.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
    /// The entry's exact bytes, as text.
    pub entry: String,
}

impl LoggedEntry {
    /// Describes entry `index` from its stored bytes.
    pub fn new(index: u64, bytes: &[u8]) -> Result<Self, EntryError> {
        let e = match LogEntry::decode(bytes)? {
            LogEntry::Signing(e) => e,
            LogEntry::Key(k) => {
                return Ok(LoggedEntry {
                    index,
                    leaf_hash: B64.encode(merkle::leaf_hash(bytes)),
                    kind: k.action.kind().to_owned(),
                    store_path: String::new(),
                    nar_hash: String::new(),
                    nar_size: 0,
                    references: Vec::new(),
                    builder: k.action.key().to_string(),
                    signature: String::new(),
                    entry: String::from_utf8_lossy(bytes).into_owned(),
                })
            }
        };
        Ok(LoggedEntry {
            index,
            leaf_hash: B64.encode(merkle::leaf_hash(bytes)),
            kind: e.kind.as_str().to_owned(),
            store_path: e.store_path.to_string(),
            nar_hash: e.nar_hash.to_nix32(),
            nar_size: e.nar_size,
            references: e.references.iter().cloned().collect(),
            builder: e.builder.to_string(),
            signature: e.nix_signature().to_string(),
            // Decoding succeeded, so the bytes are UTF-8.
            entry: String::from_utf8_lossy(bytes).into_owned(),
        })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One page of a store path's events (`GET /api/v1/paths/{hash}?after=&limit=`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathPage {
    /// The store path.
    pub store_path: String,
    /// Events in index order, all after the request's `after`.
    pub events: Vec<LoggedEntry>,
    /// Present when more events follow: ask again with `after` set to this index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// Why a path lookup page cannot follow the pages before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// An event's index is not above the one before it (or above `after`).
    #[error("events are not in increasing index order")]
    OutOfOrder,
    /// The cursor does not move past the events of this page.
    #[error("the page cursor does not move forward")]
    CursorBack,
    /// A page with no events says more follow: a log could keep a client paging forever.
    #[error("an empty page says more events follow")]
    EmptyWithCursor,
}

impl PathPage {
    /// Checks that this page, asked for with `after`, follows a client's earlier pages: every
    /// index above the last one seen and above `after`, and a cursor past them all. A client
    /// that follows only checked pages cannot be made to loop, or to read an event twice.
    pub fn check_follows(&self, after: Option<u64>) -> Result<(), PageError> {
        check_follows(&self.events, self.next, after)
    }
}

fn check_follows(
    events: &[LoggedEntry],
    next: Option<u64>,
    after: Option<u64>,
) -> Result<(), PageError> {
    if events.is_empty() && next.is_some() {
        return Err(PageError::EmptyWithCursor);
    }
    let mut last = after;
    for e in events {
        if last.is_some_and(|l| e.index <= l) {
            return Err(PageError::OutOfOrder);
        }
        last = Some(e.index);
    }
    let forward = |next: u64| last.is_none_or(|l| next >= l) && after.is_none_or(|a| next > a);
    match next {
        Some(next) if !forward(next) => Err(PageError::CursorBack),
        _ => Ok(()),
    }
}

/// A key the log has registered, the builder it serves, what it amounts to now, and how
/// many entries it has signed (`GET /api/v1/builders`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderInfo {
    /// The key's name.
    pub name: String,
    /// The Nix public key, `name:base64`.
    pub key: String,
    /// The builder identity the key serves (a rotation chain is one identity).
    pub identity: String,
    /// Whether it may sign now.
    pub active: bool,
    /// What it amounts to now, in words (`valid for builder …`, `retired at index …`).
    pub status: String,
    /// Entries it has signed.
    pub entries: u64,
}

/// Every key the log has registered (`GET /api/v1/builders`); the registry's history is in
/// the log's key events (`GET /api/v1/keys`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildersAnswer {
    /// By identity, then key.
    pub builders: Vec<BuilderInfo>,
}

/// One page of the log's key events (`GET /api/v1/keys?after=&limit=`), in index order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEventPage {
    /// The log's verifier key, as the log serves it: operator events verify under it. A
    /// client that has the key from its tlog-policy uses that one; this is for clients that
    /// take the log as served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_key: Option<String>,
    /// The events, as logged entries.
    pub events: Vec<LoggedEntry>,
    /// Present when more events follow: ask again with `after` set to this index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

impl KeyEventPage {
    /// As [`PathPage::check_follows`].
    pub fn check_follows(&self, after: Option<u64>) -> Result<(), PageError> {
        check_follows(&self.events, self.next, after)
    }
}

/// One page of the checkpoints the log published (`GET /api/v1/checkpoints?after=SIZE`), each
/// as it was served, signed and cosigned: smallest size first, all of sizes above `after`.
/// A client verifies each against its policy; the cosignatures' timestamps are what dates
/// an entry (the first checkpoint that covers it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPage {
    /// Signed notes (C2SP tlog-checkpoint), as text.
    pub checkpoints: Vec<String>,
    /// Present when more follow: ask again with `after` set to this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// The answer to an accepted key event (`POST /api/v1/keys`, 200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEventAnswer {
    /// `logged`, or `duplicate` when the log holds the event already.
    pub status: SignatureStatus,
    /// Its index.
    pub index: u64,
}

/// An RFC 6962 inclusion proof (`GET /api/v1/proof/inclusion`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The entry's index.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// Base64 hashes, the leaf's sibling first.
    pub proof: Vec<String>,
}

/// An RFC 6962 consistency proof (`GET /api/v1/proof/consistency`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub old: u64,
    /// The newer tree size.
    pub new: u64,
    /// Base64 hashes.
    pub proof: Vec<String>,
}

/// Decodes a proof's base64 hashes; `None` when one is not a 32-byte hash or there are more
/// than any tree of 2^64 leaves needs.
pub fn decode_proof(hashes: &[String]) -> Option<Vec<merkle::Hash>> {
    if hashes.len() > merkle::MAX_PROOF_HASHES {
        return None;
    }
    hashes
        .iter()
        .map(|h| B64.decode(h).ok()?.try_into().ok())
        .collect()
}

/// What became of one `Sig:` line of a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureStatus {
    /// Appended at `index`.
    Logged,
    /// Already in the log, first at `index`.
    Duplicate,
    /// Not logged; `reason` says why.
    Ignored,
}

/// One `Sig:` line's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureResult {
    /// The key name the signature claims.
    pub key: String,
    /// What became of it.
    pub status: SignatureStatus,
    /// Its index, when logged or a duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Why it was ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One narinfo's results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NarinfoResult {
    /// The narinfo's store path.
    pub store_path: String,
    /// One result per `Sig:` line.
    pub signatures: Vec<SignatureResult>,
}

/// The answer to an accepted submission (`POST /api/v1/narinfo`, 200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitAnswer {
    /// One result per narinfo, in the body's order.
    pub narinfos: Vec<NarinfoResult>,
}

/// The answer to an accepted attestation submission (`POST /api/v1/attestations`, 200): per
/// envelope, its store path and each signature's result, as for narinfos.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationsAnswer {
    /// One result per envelope, in the body's order.
    pub attestations: Vec<NarinfoResult>,
}

/// A reason a signature was not logged, in a refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalReason {
    /// The narinfo's store path.
    pub store_path: String,
    /// The key name the signature claims.
    pub key: String,
    /// Why it was not logged.
    pub reason: String,
}

/// An error answer. A refused submission (422) also says how many signatures it held and the
/// first [`MAX_REFUSAL_REASONS`] reasons, so that the answer stays small whatever was sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// What went wrong.
    pub error: String,
    /// For a refused submission: the signatures it held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<u64>,
    /// For a refused submission: the first reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_reasons: Vec<RefusalReason>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(indexes: &[u64], next: Option<u64>) -> PathPage {
        let event = |index| LoggedEntry {
            index,
            leaf_hash: String::new(),
            kind: String::new(),
            store_path: String::new(),
            nar_hash: String::new(),
            nar_size: 0,
            references: Vec::new(),
            builder: String::new(),
            signature: String::new(),
            entry: String::new(),
        };
        PathPage {
            store_path: String::new(),
            events: indexes.iter().copied().map(event).collect(),
            next,
        }
    }

    #[test]
    fn a_page_must_move_past_what_came_before() {
        assert_eq!(page(&[1, 5, 9], Some(9)).check_follows(None), Ok(()));
        assert_eq!(page(&[10, 12], None).check_follows(Some(9)), Ok(()));
        assert_eq!(
            page(&[], Some(20)).check_follows(Some(9)),
            Err(PageError::EmptyWithCursor)
        );
        let out_of_order = Err(PageError::OutOfOrder);
        assert_eq!(page(&[5, 5], None).check_follows(None), out_of_order);
        assert_eq!(page(&[5, 4], None).check_follows(None), out_of_order);
        assert_eq!(page(&[9], None).check_follows(Some(9)), out_of_order);
        let back = Err(PageError::CursorBack);
        assert_eq!(page(&[10, 12], Some(11)).check_follows(Some(9)), back);
        assert_eq!(page(&[10], Some(9)).check_follows(Some(9)), back);
    }
}
