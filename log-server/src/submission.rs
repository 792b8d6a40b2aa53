//! Checking a submission: a body of narinfos becomes each signature's result so far and the
//! entries to sequence. No HTTP here (`api.rs` routes and answers); the rules are those of
//! `spec/api.md`, "Submission".
//!
//! What a request can cost is bounded by its own size and by the limits below, never by what
//! it claims: at most [`MAX_NARINFOS`] narinfos and [`MAX_SIGNATURES`] `Sig:` lines, at most
//! [`MAX_INVALID_SIGNATURES`] failed verifications, and one verification per distinct
//! signature. A signature the log already holds is answered from the leaf index without being
//! verified again: its leaf was verified when it was logged.

use std::collections::HashSet;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use reprolog_verifier::api::{
    ErrorAnswer, NarinfoResult, RefusalReason, SignatureResult, SignatureStatus,
    MAX_REFUSAL_REASONS,
};
use reprolog_verifier::attestation::BuildFacts;
use reprolog_verifier::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use reprolog_verifier::entry::{Entry, EntryError, EntryKind};
use reprolog_verifier::merkle::{self, Hash};
use reprolog_verifier::nix::signatures::{self, SameNameKeys};
use reprolog_verifier::nix::{NarInfo, NixSignature, StorePath};
use reprolog_verifier::text::printable;

use crate::metrics::{Metrics, Rejection};
use crate::storage::{LogStore, NewEntry, StoreError};
use reprolog_verifier::registry::{KeyRegistry, KeyStatus};

/// A submission that shows more signatures failing verification than this is refused
/// without verifying the rest: each costs a strict Ed25519 verification, and a registered
/// builder's client sends valid ones.
pub const MAX_INVALID_SIGNATURES: usize = 16;
/// The most narinfos one request may hold (`reprolog ingest` sends 256).
pub const MAX_NARINFOS: usize = 4096;
/// The most `Sig:` lines one request may hold, over all its narinfos.
pub const MAX_SIGNATURES: usize = 8192;

/// Why a request was refused as a whole; nothing of it is stored.
#[derive(Debug)]
pub enum Refusal {
    /// Not narinfos, or a narinfo that does not parse (400).
    Malformed(String),
    /// More narinfos or signatures than one request may hold (413).
    TooMany(String),
    /// An entry would be over the size limit (422).
    EntryTooLarge(String),
    /// Nothing to log, or too many signatures that do not verify (422), with the count of
    /// signatures examined and the first reasons.
    Signatures(Rejection, ErrorAnswer),
    /// The leaf index could not be read (500).
    Storage(StoreError),
}

impl Refusal {
    /// The metric label of the refusal.
    pub fn rejection(&self) -> Rejection {
        match self {
            Refusal::Malformed(_) | Refusal::Storage(_) => Rejection::Malformed,
            Refusal::TooMany(_) => Rejection::TooManyItems,
            Refusal::EntryTooLarge(_) => Rejection::EntryTooLarge,
            Refusal::Signatures(why, _) => *why,
        }
    }
}

/// An entry to log, and which narinfo and signature it came from.
pub struct Pending {
    pub narinfo: usize,
    pub signature: usize,
    pub entry: NewEntry,
}

/// A submission that passed checking: each signature's result so far (those to log are
/// marked `Logged`, without an index, until the sequencer answers), and what to log.
pub struct Checked {
    pub results: Vec<NarinfoResult>,
    pub pending: Vec<Pending>,
    /// Signatures found already logged, answered without the sequencer.
    pub known: u64,
}

/// Splits a body into narinfos at blank lines, with the line each one starts on.
fn split_narinfos(body: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut start_byte, mut start_line, mut at) = (0, 1, 0);
    for (i, line) in body.split_inclusive('\n').enumerate() {
        if line == "\n" {
            if at > start_byte {
                out.push((start_line, &body[start_byte..at]));
            }
            start_byte = at + 1;
            start_line = i + 2;
        }
        at += line.len();
    }
    if at > start_byte {
        out.push((start_line, &body[start_byte..]));
    }
    out
}

/// A refusal for signatures: how many were examined, and the first reasons.
fn refusal(why: Rejection, error: String, results: &[NarinfoResult]) -> Refusal {
    let reasons = results.iter().flat_map(|n| {
        n.signatures.iter().filter_map(|s| {
            Some(RefusalReason {
                store_path: n.store_path.clone(),
                key: s.key.clone(),
                reason: s.reason.clone()?,
            })
        })
    });
    Refusal::Signatures(
        why,
        ErrorAnswer {
            error,
            signatures: Some(results.iter().map(|n| n.signatures.len() as u64).sum()),
            first_reasons: reasons.take(MAX_REFUSAL_REASONS).collect(),
        },
    )
}

fn ignored(key: &str, reason: String) -> SignatureResult {
    SignatureResult {
        key: key.to_owned(),
        status: SignatureStatus::Ignored,
        index: None,
        reason: Some(reason),
    }
}

/// One candidate entry of a signature: the entry it would make under one key of its name
/// that the log has registered, and what that key amounts to now.
struct Candidate {
    entry: Entry,
    bytes: Vec<u8>,
    leaf: Hash,
    status: KeyStatus,
}

impl Candidate {
    /// Encodes `entry`; `item` names the narinfo or envelope in errors.
    fn new(entry: Entry, registry: &KeyRegistry, item: &str) -> Result<Self, Refusal> {
        let bytes = entry.encode().map_err(|e| match e {
            EntryError::TooLarge(_) => Refusal::EntryTooLarge(format!("{item}: {e}")),
            other => Refusal::Malformed(format!("{item}: {other}")),
        })?;
        let leaf = merkle::leaf_hash(&bytes);
        let status = registry.status(&entry.builder, u64::MAX);
        Ok(Candidate {
            entry,
            bytes,
            leaf,
            status,
        })
    }
}

/// The keys a signature named `name` may be by: every key of that name the log has
/// registered, whatever it amounts to now (a retired key's signatures are still found as
/// duplicates).
fn keys_named<'a>(
    registry: &'a KeyRegistry,
    name: &'a str,
) -> impl Iterator<Item = &'a reprolog_verifier::nix::NixPublicKey> {
    registry.records_named(name).map(|r| &r.key)
}

/// What every kind of submission shares: for each signature, its candidates are looked up in
/// the log, verified at most once per request, and either queued, answered, or refused.
struct Checker<'a, S> {
    store: &'a S,
    metrics: &'a Metrics,
    results: Vec<NarinfoResult>,
    pending: Vec<Pending>,
    invalid: usize,
    known: u64,
    /// Leaves verified in this request: an item repeated in one body costs one verification.
    verified: HashSet<Hash>,
}

impl<'a, S: LogStore> Checker<'a, S> {
    fn new(store: &'a S, metrics: &'a Metrics) -> Self {
        Checker {
            store,
            metrics,
            results: Vec::new(),
            pending: Vec::new(),
            invalid: 0,
            known: 0,
            verified: HashSet::new(),
        }
    }

    /// The result of one signature named `key` (printable), given the entries it would make
    /// under each registered key of that name and how to verify them (returning the one that
    /// verifies). `sigs` holds the results of the item so far.
    fn signature(
        &mut self,
        item: usize,
        store_path: &StorePath,
        key: String,
        candidates: Vec<Candidate>,
        verify: impl FnOnce(&[Candidate]) -> Option<usize>,
        sigs: &mut Vec<SignatureResult>,
    ) -> Result<(), Refusal> {
        if candidates.is_empty() {
            sigs.push(ignored(
                &key,
                format!("key {key} is not a registered builder"),
            ));
            return Ok(());
        }
        for c in &candidates {
            if let Some(index) = self.store.find_entry(&c.leaf).map_err(Refusal::Storage)? {
                self.known += 1;
                sigs.push(SignatureResult {
                    key,
                    status: SignatureStatus::Duplicate,
                    index: Some(index),
                    reason: None,
                });
                return Ok(());
            }
        }
        // Only keys that may sign now: a new signature by a retired, unregistered or revoked
        // key is refused with the reason, without verifying it.
        let candidates: Vec<Candidate> =
            match candidates.iter().find(|c| c.status.identity().is_none()) {
                Some(stopped) if candidates.iter().all(|c| c.status.identity().is_none()) => {
                    sigs.push(ignored(&key, format!("key {key} is {}", stopped.status)));
                    return Ok(());
                }
                _ => candidates
                    .into_iter()
                    .filter(|c| c.status.identity().is_some())
                    .collect(),
            };
        let identity = candidates
            .first()
            .and_then(|c| c.status.identity())
            .map(str::to_owned);
        let valid = candidates
            .iter()
            .position(|c| self.verified.contains(&c.leaf))
            .or_else(|| verify(&candidates));
        let Some(c) = valid.and_then(|i| candidates.into_iter().nth(i)) else {
            // Identities are names the operator registered, so they may be labels.
            if let Some(identity) = &identity {
                self.metrics.builder_refused(identity);
            }
            sigs.push(ignored(
                &key,
                format!("signature does not verify under the registered key {key}"),
            ));
            self.invalid += 1;
            if self.invalid > MAX_INVALID_SIGNATURES {
                self.results.push(NarinfoResult {
                    store_path: store_path.to_string(),
                    signatures: std::mem::take(sigs),
                });
                let error = format!(
                    "refused after {} signatures that do not verify (at most \
                     {MAX_INVALID_SIGNATURES} are checked); the rest were not verified",
                    self.invalid
                );
                return Err(refusal(Rejection::InvalidSignatures, error, &self.results));
            }
            return Ok(());
        };
        self.verified.insert(c.leaf);
        self.pending.push(Pending {
            narinfo: item,
            signature: sigs.len(),
            entry: NewEntry::signing(c.bytes, &c.entry),
        });
        sigs.push(SignatureResult {
            key,
            status: SignatureStatus::Logged,
            index: None,
            reason: None,
        });
        Ok(())
    }

    fn item_done(&mut self, store_path: &StorePath, mut sigs: Vec<SignatureResult>, none: &str) {
        if sigs.is_empty() {
            sigs.push(ignored("", none.into()));
        }
        self.results.push(NarinfoResult {
            store_path: store_path.to_string(),
            signatures: sigs,
        });
    }

    fn finish(self) -> Result<Checked, Refusal> {
        if self.pending.is_empty() && self.known == 0 {
            let error = "no valid signature from a registered builder".to_owned();
            return Err(refusal(Rejection::NoValidSignature, error, &self.results));
        }
        Ok(Checked {
            results: self.results,
            pending: self.pending,
            known: self.known,
        })
    }
}

/// Parses and checks every narinfo of a body against the registry. Malformed input, too many
/// items, an oversized entry or too many invalid signatures refuse the whole request.
pub fn check<S: LogStore>(
    body: &[u8],
    registry: &KeyRegistry,
    store: &S,
    metrics: &Metrics,
) -> Result<Checked, Refusal> {
    let body =
        std::str::from_utf8(body).map_err(|_| Refusal::Malformed("body is not UTF-8".into()))?;
    let narinfos = split_narinfos(body);
    if narinfos.is_empty() {
        return Err(Refusal::Malformed("body holds no narinfo".into()));
    }
    if narinfos.len() > MAX_NARINFOS {
        return Err(Refusal::TooMany(format!(
            "{} narinfos in one request; at most {MAX_NARINFOS}",
            narinfos.len()
        )));
    }
    let mut checker = Checker::new(store, metrics);
    let mut signatures_seen = 0;
    for (n, (start, text)) in narinfos.iter().enumerate() {
        let info = NarInfo::parse(text).map_err(|e| {
            Refusal::Malformed(format!(
                "narinfo {} (line {} of the body): line {}: {}",
                n + 1,
                start + e.line - 1,
                e.line,
                e.reason
            ))
        })?;
        signatures_seen += info.sigs.len();
        if signatures_seen > MAX_SIGNATURES {
            return Err(Refusal::TooMany(format!(
                "more than {MAX_SIGNATURES} signatures in one request"
            )));
        }
        let fingerprint = info.fingerprint();
        let mut sigs = Vec::new();
        for raw in &info.sigs {
            // The name is echoed back: never raw control characters.
            let key = printable(raw.split_once(':').map_or(raw.as_str(), |(k, _)| k)).into_owned();
            let sig = match NixSignature::parse(raw) {
                Ok(sig) => sig,
                Err(e) => {
                    sigs.push(ignored(&key, format!("malformed signature: {e}")));
                    continue;
                }
            };
            let item = format!("narinfo {}", n + 1);
            let candidates = keys_named(registry, &sig.key_name)
                .map(|k| Candidate::new(Entry::claim(&info, k, &sig), registry, &item))
                .collect::<Result<Vec<_>, Refusal>>()?;
            let verify = |candidates: &[Candidate]| {
                let keys: Vec<_> = candidates.iter().map(|c| c.entry.builder.clone()).collect();
                match signatures::check(&fingerprint, &sig, &keys, SameNameKeys::Any) {
                    signatures::SignatureStatus::Valid(k) => {
                        candidates.iter().position(|c| c.entry.builder == k)
                    }
                    _ => None,
                }
            };
            checker.signature(n, &info.store_path, key, candidates, verify, &mut sigs)?;
        }
        checker.item_done(&info.store_path, sigs, "the narinfo has no signature");
    }
    checker.finish()
}

/// The most envelopes one attestation request may hold.
pub const MAX_ENVELOPES: usize = 4096;

/// Parses and checks a body of DSSE build attestations (one envelope, or a JSON array of
/// them) against the registry, as [`check`] does narinfos: each signature by a registered key
/// that verifies becomes a `build` entry.
pub fn check_attestations<S: LogStore>(
    body: &[u8],
    registry: &KeyRegistry,
    store: &S,
    metrics: &Metrics,
) -> Result<Checked, Refusal> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Body {
        Many(Vec<Envelope>),
        One(Envelope),
    }
    let envelopes = match serde_json::from_slice::<Body>(body) {
        Ok(Body::Many(v)) => v,
        Ok(Body::One(e)) => vec![e],
        Err(_) => {
            return Err(Refusal::Malformed(
                "the body is not a DSSE envelope or a JSON array of them".into(),
            ))
        }
    };
    if envelopes.is_empty() {
        return Err(Refusal::Malformed("the body holds no envelope".into()));
    }
    if envelopes.len() > MAX_ENVELOPES {
        return Err(Refusal::TooMany(format!(
            "{} envelopes in one request; at most {MAX_ENVELOPES}",
            envelopes.len()
        )));
    }
    if envelopes.iter().map(|e| e.signatures.len()).sum::<usize>() > MAX_SIGNATURES {
        return Err(Refusal::TooMany(format!(
            "more than {MAX_SIGNATURES} signatures in one request"
        )));
    }
    let mut checker = Checker::new(store, metrics);
    for (n, envelope) in envelopes.iter().enumerate() {
        let item = format!("envelope {}", n + 1);
        if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(Refusal::Malformed(format!(
                "{item}: payload type {:?}, not {IN_TOTO_PAYLOAD_TYPE}",
                printable(&envelope.payload_type)
            )));
        }
        let statement = B64
            .decode(&envelope.payload)
            .map_err(|_| Refusal::Malformed(format!("{item}: the payload is not base64")))?;
        let mut sigs = Vec::new();
        let mut store_path = None;
        for s in &envelope.signatures {
            let key = printable(&s.keyid).into_owned();
            // The statement names its signer, so it is read per signature's key name.
            let facts = BuildFacts::parse(&statement, &s.keyid)
                .map_err(|e| Refusal::Malformed(format!("{item}: {e}")))?;
            let Some(signature) = B64.decode(&s.sig).ok().and_then(|b| b.try_into().ok()) else {
                sigs.push(ignored(
                    &key,
                    "malformed signature: not base64 of 64 bytes".into(),
                ));
                continue;
            };
            let candidates = keys_named(registry, &s.keyid)
                .map(|k| {
                    let entry = Entry {
                        kind: EntryKind::Build,
                        store_path: facts.store_path.clone(),
                        nar_hash: facts.nar_hash,
                        nar_size: facts.nar_size,
                        references: facts.references.clone(),
                        builder: k.clone(),
                        signature,
                        statement: Some(statement.clone()),
                    };
                    Candidate::new(entry, registry, &item)
                })
                .collect::<Result<Vec<_>, Refusal>>()?;
            let verify = |candidates: &[Candidate]| {
                candidates
                    .iter()
                    .position(|c| c.entry.verify_signature().is_ok())
            };
            checker.signature(n, &facts.store_path, key, candidates, verify, &mut sigs)?;
            store_path = Some(facts.store_path);
        }
        match store_path {
            Some(path) => checker.item_done(&path, sigs, "the envelope has no signature"),
            None => {
                return Err(Refusal::Malformed(format!(
                    "{item}: the envelope has no signature"
                )))
            }
        }
    }
    checker.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::EmbeddedStore;
    use crate::storage::AppendBatch;
    use reprolog_verifier::nix::NixSecretKey;

    #[test]
    fn narinfos_split_at_blank_lines() {
        let parts = split_narinfos("A: 1\nB: 2\n\n\nC: 3\n\n");
        assert_eq!(parts, vec![(1, "A: 1\nB: 2\n"), (5, "C: 3\n")]);
        assert!(split_narinfos("\n\n").is_empty());
        assert_eq!(split_narinfos("\nA: 1"), vec![(2, "A: 1")]);
    }

    fn narinfo(i: u64, sigs: &[String]) -> String {
        let mut text = format!(
            "StorePath: /nix/store/{}-n{i}\nURL: nar/x\nNarHash: sha256:{}\nNarSize: {}\n\
             References: \n",
            "1".repeat(32),
            "0".repeat(52),
            100 + i
        );
        for s in sigs {
            text.push_str(&format!("Sig: {s}\n"));
        }
        text
    }

    struct Setup {
        _dir: tempfile::TempDir,
        store: EmbeddedStore,
        registry: KeyRegistry,
        key: NixSecretKey,
        metrics: Metrics,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        let key = NixSecretKey::from_seed("builder-1", [1; 32]);
        let registry = crate::storage::embedded::tests::registry_allowing(&[]);
        let mut registry = registry;
        registry
            .apply(
                0,
                &reprolog_verifier::key_event::KeyEvent::register(
                    key.public_key(),
                    0,
                    &crate::storage::embedded::tests::log_key(),
                ),
            )
            .unwrap();
        Setup {
            _dir: dir,
            store,
            registry,
            key,
            metrics: Metrics::default(),
        }
    }

    fn check_body(s: &Setup, body: &str) -> Result<Checked, Refusal> {
        check(body.as_bytes(), &s.registry, &s.store, &s.metrics)
    }

    #[test]
    fn a_logged_signature_is_answered_from_the_log_without_verifying_it_again() {
        let s = setup();
        // An entry whose signature does not verify, put in the store directly: if the check
        // verified known leaves again, it would refuse this narinfo instead.
        let forged = format!("builder-1:{}", base64_zeros());
        let text = narinfo(1, std::slice::from_ref(&forged));
        let info = NarInfo::parse(&text).unwrap();
        let sig = NixSignature::parse(&forged).unwrap();
        let entry = Entry::claim(&info, &s.key.public_key(), &sig);
        assert!(entry.verify_signature().is_err());
        let bytes = entry.encode().unwrap();
        let leaf = merkle::leaf_hash(&bytes);
        let nodes = merkle::append_leaves(0, &[leaf], &s.store).unwrap();
        let new = NewEntry::signing(bytes, &entry);
        s.store
            .append(&AppendBatch {
                start_size: 0,
                entries: vec![new],
                nodes,
            })
            .unwrap();

        let checked = check_body(&s, &text).unwrap();
        assert!(checked.pending.is_empty());
        assert_eq!(checked.known, 1);
        let result = &checked.results[0].signatures[0];
        assert_eq!(result.status, SignatureStatus::Duplicate);
        assert_eq!(result.index, Some(0));
    }

    fn base64_zeros() -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([0u8; 64])
    }

    #[test]
    fn a_narinfo_repeated_in_one_body_makes_one_leaf_for_the_sequencer() {
        let s = setup();
        let sig = s
            .key
            .sign(&NarInfo::parse(&narinfo(2, &[])).unwrap().fingerprint());
        let text = narinfo(2, &[sig.to_string()]);
        let body = vec![text; 50].join("\n");
        let checked = check_body(&s, &body).unwrap();
        assert_eq!(checked.results.len(), 50);
        // Every copy goes to the sequencer, which logs the first and answers the rest as
        // duplicates; all share one leaf.
        let leaves: HashSet<Hash> = checked.pending.iter().map(|p| p.entry.leaf).collect();
        assert_eq!(leaves.len(), 1);
    }

    #[test]
    fn requests_past_the_item_limits_are_refused_before_any_verification() {
        let s = setup();
        let many = vec![narinfo(3, &[]); MAX_NARINFOS + 1].join("\n");
        assert!(matches!(check_body(&s, &many), Err(Refusal::TooMany(_))));
        let junk: Vec<String> = (0..=MAX_SIGNATURES)
            .map(|i| format!("k{i}:{}", base64_zeros()))
            .collect();
        let body = narinfo(4, &junk);
        match check_body(&s, &body) {
            Err(Refusal::TooMany(msg)) => assert!(msg.contains("signatures"), "{msg}"),
            other => panic!("{:?}", other.map(|c| c.results.len())),
        }
    }

    #[test]
    fn key_names_are_echoed_without_control_characters() {
        let s = setup();
        let sig = s
            .key
            .sign(&NarInfo::parse(&narinfo(5, &[])).unwrap().fingerprint());
        let hostile = format!("evil\u{7f}\u{9b}2J:{}", base64_zeros());
        let body = narinfo(5, &[sig.to_string(), hostile]);
        let checked = check_body(&s, &body).unwrap();
        let keys: Vec<&str> = checked.results[0]
            .signatures
            .iter()
            .map(|r| r.key.as_str())
            .collect();
        assert!(keys.contains(&"builder-1"), "{keys:?}");
        for key in keys {
            assert!(!key.chars().any(char::is_control), "{key:?}");
        }
    }
}
