//! The gate's trust file and its K-of-N decisions (`spec/gate.md`): whether a store path may
//! be substituted, from the claims trusted builders logged about it. Pure: the caller has
//! already proven each entry in a checkpoint its log policy trusts and checked its builder
//! signature; this decides what those claims amount to. The gate and `reprolog decide` share it.
//!
//! ```text
//! builder <label> <nix public key>
//! quorum <K>
//! on-conflict deny|majority
//! require built
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::entry::Entry;
use crate::nix::{NixPublicKey, StorePath};
use crate::registry::KeyRegistry;

/// Limits well above any real trust file, so that a file cannot cost unbounded work.
const MAX_BUILDERS: usize = 1024;

/// A trust file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct TrustError {
    /// The 1-based line the problem is on (0 for the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// What happens when trusted builders logged different NAR hashes for one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Any listed builder's different claim denies the path.
    Deny,
    /// The claim with the most listed builders wins if it reaches the quorum and no other
    /// claim ties it.
    Majority,
}

/// A builder the user trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedBuilder {
    /// The user's name for it.
    pub label: String,
    /// Its Nix public key, as in `trusted-public-keys`.
    pub key: NixPublicKey,
}

/// Whose agreement counts, and how much of it a path needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// The trusted builders, in the file's order.
    pub builders: Vec<TrustedBuilder>,
    /// How many distinct listed builders must have logged the same claim.
    pub quorum: usize,
    /// What a disagreement among listed builders does.
    pub on_conflict: OnConflict,
    /// Count only build attestations (`require built`): a cache signature may be a copy.
    pub require_built: bool,
}

impl Trust {
    /// Parses a trust file. A builder's label and key may each appear once; `quorum` is
    /// required, between 1 and the number of builders.
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let (mut builders, mut quorum, mut on_conflict) =
            (Vec::<TrustedBuilder>::new(), None, None);
        let mut require_built = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |reason: String| TrustError { line, reason };
            if raw.chars().any(|c| c.is_control() && c != '\t') {
                return Err(bad("control characters".into()));
            }
            let words: Vec<&str> = raw.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                [first, ..] if first.starts_with('#') => {}
                ["builder", label, key] => {
                    let key = NixPublicKey::parse(key).map_err(|e| bad(format!("key: {e}")))?;
                    if builders.iter().any(|b| b.label == *label) {
                        return Err(bad(format!("builder {label} is listed twice")));
                    }
                    if builders.iter().any(|b| b.key == key) {
                        return Err(bad(format!("the key of {label} is listed twice")));
                    }
                    if builders.len() == MAX_BUILDERS {
                        return Err(bad(format!("more than {MAX_BUILDERS} builders")));
                    }
                    builders.push(TrustedBuilder {
                        label: (*label).to_owned(),
                        key,
                    });
                }
                ["quorum", k] => {
                    if quorum.is_some() {
                        return Err(bad("quorum is given twice".into()));
                    }
                    let k: usize = k.parse().ok().filter(|k| *k >= 1).ok_or_else(|| {
                        bad(format!("quorum {k:?} is not a number of at least 1"))
                    })?;
                    quorum = Some((k, line));
                }
                ["on-conflict", mode] => {
                    if on_conflict.is_some() {
                        return Err(bad("on-conflict is given twice".into()));
                    }
                    on_conflict = Some(match *mode {
                        "deny" => OnConflict::Deny,
                        "majority" => OnConflict::Majority,
                        other => {
                            return Err(bad(format!("on-conflict {other:?}: deny or majority")))
                        }
                    });
                }
                ["require", "built"] => {
                    if require_built {
                        return Err(bad("require built is given twice".into()));
                    }
                    require_built = true;
                }
                [keyword, ..] => {
                    return Err(bad(format!(
                        "{keyword:?} is not a statement (builder <label> <key>, quorum <K>, \
                         on-conflict deny|majority, require built), or has the wrong number \
                         of words"
                    )))
                }
            }
        }
        let (quorum, line) = quorum.ok_or(TrustError {
            line: 0,
            reason: "no quorum line".into(),
        })?;
        if quorum > builders.len() {
            return Err(TrustError {
                line,
                reason: format!(
                    "quorum {quorum} is more than the {} builders listed",
                    builders.len()
                ),
            });
        }
        Ok(Trust {
            builders,
            quorum,
            on_conflict: on_conflict.unwrap_or(OnConflict::Deny),
            require_built,
        })
    }
}

/// What a builder claimed about a path: exactly what its signature covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Claim {
    /// `sha256:<nix32>`.
    pub nar_hash: String,
    /// The NAR's size in bytes.
    pub nar_size: u64,
    /// Base names, sorted.
    pub references: Vec<String>,
}

impl Claim {
    /// The claim an entry makes.
    pub fn of(entry: &Entry) -> Self {
        Claim {
            nar_hash: entry.nar_hash.to_nix32(),
            nar_size: entry.nar_size,
            references: entry.references.iter().cloned().collect(),
        }
    }
}

/// One listed builder's part in a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderClaim {
    /// The builder's label in the trust file.
    pub builder: String,
    /// What it logged for the path (its first claim in log order), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// The log index of that claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Whether it logged other claims too (a builder that disagrees with itself).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub also_claimed_other: bool,
}

/// Why a path was allowed or denied, in words a log line and a header can carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum Outcome {
    /// At least `quorum` listed builders logged the allowed claim.
    Agreed {
        /// How many listed builders logged it.
        agreeing: usize,
    },
    /// No listed builder logged anything for the path.
    NotLogged,
    /// The best claim has fewer listed builders than the quorum.
    QuorumNotMet {
        /// Listed builders behind the best claim.
        agreeing: usize,
        /// The quorum.
        quorum: usize,
    },
    /// Listed builders logged different claims, and the trust file denies conflicts (or no
    /// claim wins the majority outright).
    Conflict {
        /// How many different claims listed builders logged.
        claims: usize,
    },
}

impl Outcome {
    /// The outcome as one short line.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Agreed { agreeing } => format!("{agreeing} trusted builders agree"),
            Outcome::NotLogged => "no trusted builder logged this path".into(),
            Outcome::QuorumNotMet { agreeing, quorum } => {
                format!("{agreeing} of the {quorum} trusted builders needed agree")
            }
            Outcome::Conflict { claims } => {
                format!("trusted builders logged {claims} different claims")
            }
        }
    }

    /// The metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Agreed { .. } => "agreed",
            Outcome::NotLogged => "not_logged",
            Outcome::QuorumNotMet { .. } => "quorum_not_met",
            Outcome::Conflict { .. } => "conflict",
        }
    }
}

/// A decision about one store path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The store path.
    pub store_path: String,
    /// Whether it may be substituted.
    pub allowed: bool,
    /// Why.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The claim allowed, when allowed: a served narinfo must match it exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// Each listed builder's claim, in the trust file's order.
    pub builders: Vec<BuilderClaim>,
}

/// The listed builder (its position in the trust file) that a signature by `key` logged at
/// `index` counts for: the one whose key serves the same builder identity in the log's
/// registry, so that a key the builder rotated to counts as the builder. `None` when the key
/// could not sign at that index (never registered, retired before it, revoked as of it) or
/// serves no listed builder.
pub fn listed_builder(
    trust: &Trust,
    registry: &KeyRegistry,
    key: &NixPublicKey,
    index: u64,
) -> Option<usize> {
    let status = registry.status(key, index);
    let identity = status.identity()?;
    trust
        .builders
        .iter()
        .position(|b| registry.identity_of_key(&b.key) == Some(identity))
}

/// The entries as [`decide`] counts them under the log's registry: each entry that counts
/// for a listed builder ([`listed_builder`]) under that builder's listed key, the others
/// dropped.
pub fn by_identity(
    trust: &Trust,
    registry: &KeyRegistry,
    entries: &[(u64, Entry)],
) -> Vec<(u64, Entry)> {
    entries
        .iter()
        .filter_map(|(index, entry)| {
            let pos = listed_builder(trust, registry, &entry.builder, *index)?;
            let mut counted = entry.clone();
            counted.builder = trust.builders[pos].key.clone();
            Some((*index, counted))
        })
        .collect()
}

/// Decides a path from its logged entries (`(index, entry)`, each already proven and its
/// signature checked), counting only entries signed by listed builders' keys. Builders are
/// counted as identities: a builder that logged a claim twice counts once, and one that
/// logged two claims conflicts with itself.
pub fn decide(trust: &Trust, store_path: &StorePath, entries: &[(u64, Entry)]) -> Decision {
    // For each listed builder (by position in the trust file): its claims, first index each.
    let mut by_builder: BTreeMap<usize, BTreeMap<Claim, u64>> = BTreeMap::new();
    for (index, entry) in entries {
        if entry.store_path != *store_path
            || (trust.require_built && entry.kind != crate::entry::EntryKind::Build)
        {
            continue;
        }
        let Some(pos) = trust.builders.iter().position(|b| b.key == entry.builder) else {
            continue;
        };
        by_builder
            .entry(pos)
            .or_default()
            .entry(Claim::of(entry))
            .or_insert(*index);
    }
    // For each claim: the distinct builders behind it.
    let mut by_claim: BTreeMap<&Claim, BTreeSet<usize>> = BTreeMap::new();
    for (pos, claims) in &by_builder {
        for claim in claims.keys() {
            by_claim.entry(claim).or_default().insert(*pos);
        }
    }
    let best = by_claim
        .iter()
        .max_by_key(|(_, builders)| builders.len())
        .map(|(claim, builders)| ((*claim).clone(), builders.len()));
    let ties = |n: usize| by_claim.values().filter(|b| b.len() == n).count() > 1;
    let (allowed_claim, outcome) = match best {
        None => (None, Outcome::NotLogged),
        Some(_) if by_claim.len() > 1 && trust.on_conflict == OnConflict::Deny => (
            None,
            Outcome::Conflict {
                claims: by_claim.len(),
            },
        ),
        Some((_, n)) if ties(n) => (
            None,
            Outcome::Conflict {
                claims: by_claim.len(),
            },
        ),
        Some((_, n)) if n < trust.quorum => (
            None,
            Outcome::QuorumNotMet {
                agreeing: n,
                quorum: trust.quorum,
            },
        ),
        Some((claim, n)) => (Some(claim), Outcome::Agreed { agreeing: n }),
    };
    let builders = trust
        .builders
        .iter()
        .enumerate()
        .map(|(pos, b)| {
            let claims = by_builder.get(&pos);
            // Show the allowed claim when the builder made it, else its first in log order.
            let shown = claims.and_then(|c| {
                allowed_claim
                    .as_ref()
                    .and_then(|a| c.get_key_value(a))
                    .or_else(|| c.iter().min_by_key(|(_, index)| **index))
            });
            BuilderClaim {
                builder: b.label.clone(),
                claim: shown.map(|(c, _)| c.clone()),
                index: shown.map(|(_, i)| *i),
                also_claimed_other: claims.is_some_and(|c| c.len() > 1),
            }
        })
        .collect();
    Decision {
        store_path: store_path.to_string(),
        allowed: allowed_claim.is_some(),
        outcome,
        claim: allowed_claim,
        builders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryKind;
    use crate::nix::narinfo::NixHash;
    use crate::nix::NixSecretKey;

    fn key(name: &str, seed: u8) -> NixSecretKey {
        NixSecretKey::from_seed(name, [seed; 32])
    }

    fn path() -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-hello", "a".repeat(32))).unwrap()
    }

    /// An entry of `path()` by `signer` with NAR hash byte `hash` (unsigned: `decide` is given
    /// proven entries and does not check signatures again).
    fn entry(signer: &NixSecretKey, hash: u8) -> Entry {
        Entry {
            kind: EntryKind::CacheSignature,
            store_path: path(),
            nar_hash: NixHash([hash; 32]),
            nar_size: 100,
            references: Default::default(),
            builder: signer.public_key(),
            signature: [0; 64],
            statement: None,
        }
    }

    fn trust(k: usize, mode: &str, keys: &[&NixSecretKey]) -> Trust {
        let mut text = format!("# who we trust\nquorum {k}\non-conflict {mode}\n");
        for (i, key) in keys.iter().enumerate() {
            text.push_str(&format!("builder b{i} {}\n", key.public_key()));
        }
        Trust::parse(&text).unwrap()
    }

    #[test]
    fn quorum_counts_distinct_listed_builders_never_entries() {
        let (a, b, c) = (key("a", 1), key("b", 2), key("c", 3));
        let t = trust(2, "deny", &[&a, &b]);
        // One builder logging the same claim three times is one builder.
        let same = [(0, entry(&a, 1)), (1, entry(&a, 1)), (2, entry(&a, 1))];
        let d = decide(&t, &path(), &same);
        assert!(!d.allowed);
        assert_eq!(
            d.outcome,
            Outcome::QuorumNotMet {
                agreeing: 1,
                quorum: 2
            }
        );
        // An unlisted builder's agreement counts for nothing.
        let with_stranger = [(0, entry(&a, 1)), (1, entry(&c, 1))];
        assert!(!decide(&t, &path(), &with_stranger).allowed);
        let agreed = [(0, entry(&a, 1)), (5, entry(&b, 1))];
        let d = decide(&t, &path(), &agreed);
        assert!(d.allowed);
        assert_eq!(d.outcome, Outcome::Agreed { agreeing: 2 });
        // The JSON reads back as the same decision.
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d);
        assert_eq!(d.claim, Some(Claim::of(&entry(&a, 1))));
        assert_eq!(d.builders[1].index, Some(5));
        assert_eq!(decide(&t, &path(), &[]).outcome, Outcome::NotLogged);
    }

    #[test]
    fn conflicts_deny_or_go_to_a_clear_majority() {
        let (a, b, c) = (key("a", 1), key("b", 2), key("c", 3));
        let two_to_one = [(0, entry(&a, 1)), (1, entry(&b, 1)), (2, entry(&c, 9))];
        let deny = trust(2, "deny", &[&a, &b, &c]);
        let d = decide(&deny, &path(), &two_to_one);
        assert_eq!(d.outcome, Outcome::Conflict { claims: 2 });
        assert!(!d.allowed);
        let majority = trust(2, "majority", &[&a, &b, &c]);
        let d = decide(&majority, &path(), &two_to_one);
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.claim, Some(Claim::of(&entry(&a, 1))));
        // A tie is no majority.
        let tie = [(0, entry(&a, 1)), (1, entry(&b, 9))];
        let d = decide(&trust(1, "majority", &[&a, &b]), &path(), &tie);
        assert!(!d.allowed);
        // A builder that disagrees with itself is a conflict under deny.
        let itself = [(0, entry(&a, 1)), (1, entry(&a, 2)), (2, entry(&b, 1))];
        let d = decide(&deny, &path(), &itself);
        assert!(!d.allowed);
        assert!(d.builders[0].also_claimed_other);
    }

    #[test]
    fn require_built_counts_only_build_attestations() {
        let (a, b) = (key("a", 1), key("b", 2));
        let mut text = format!(
            "builder a {}\nbuilder b {}\nquorum 2\nrequire built\n",
            a.public_key(),
            b.public_key()
        );
        let t = Trust::parse(&text).unwrap();
        let mut built = entry(&b, 1);
        built.kind = EntryKind::Build;
        // a only signed (perhaps a copy), b built: one builder, not two.
        let d = decide(&t, &path(), &[(0, entry(&a, 1)), (1, built.clone())]);
        assert_eq!(
            d.outcome,
            Outcome::QuorumNotMet {
                agreeing: 1,
                quorum: 2
            }
        );
        let mut a_built = entry(&a, 1);
        a_built.kind = EntryKind::Build;
        assert!(decide(&t, &path(), &[(0, a_built), (1, built)]).allowed);
        text.push_str("require built\n");
        assert_eq!(Trust::parse(&text).unwrap_err().line, 5);
    }

    /// Under the log's registry a rotated key counts as its builder, never as a second
    /// one, and a signature its key could not make at its index counts for no one.
    #[test]
    fn builders_are_identities_of_the_registry() {
        use crate::key_event::KeyEvent;
        let op = crate::note::SignerKey::from_seed("example.org/log", [9; 32]).unwrap();
        let (a1, a2, b) = (key("a-1", 1), key("a-2", 2), key("b", 3));
        let mut registry = KeyRegistry::new(op.verifier_key());
        registry
            .apply(0, &KeyEvent::register(a1.public_key(), 0, &op))
            .unwrap();
        registry
            .apply(1, &KeyEvent::register(b.public_key(), 1, &op))
            .unwrap();
        registry
            .apply(3, &KeyEvent::rotate(op.name(), &a1, &a2))
            .unwrap();
        let t = trust(2, "deny", &[&a1, &b]);
        // a-1 and its successor a-2 agree: one builder, short of the quorum of two.
        let one = [(2, entry(&a1, 1)), (4, entry(&a2, 1))];
        let counted = by_identity(&t, &registry, &one);
        assert_eq!(counted.len(), 2);
        assert!(counted.iter().all(|(_, e)| e.builder == a1.public_key()));
        assert!(!decide(&t, &path(), &counted).allowed);
        // With b, two builders agree.
        let two = [(2, entry(&a1, 1)), (4, entry(&a2, 1)), (5, entry(&b, 1))];
        assert!(decide(&t, &path(), &by_identity(&t, &registry, &two)).allowed);
        // a-1 after its retirement, and a-2 before its rotation, count for no one.
        let void = [(4, entry(&a1, 2)), (2, entry(&a2, 2))];
        assert!(by_identity(&t, &registry, &void).is_empty());
        // b revoked as of 5: its signature at 5 no longer counts.
        registry
            .apply(6, &KeyEvent::revoke_by_key(op.name(), &b, 5))
            .unwrap();
        assert!(!decide(&t, &path(), &by_identity(&t, &registry, &two)).allowed);
    }

    #[test]
    fn entries_of_other_paths_never_count() {
        let (a, b) = (key("a", 1), key("b", 2));
        let mut other = entry(&b, 1);
        other.store_path =
            StorePath::parse(&format!("/nix/store/{}-other", "b".repeat(32))).unwrap();
        let d = decide(
            &trust(2, "deny", &[&a, &b]),
            &path(),
            &[(0, entry(&a, 1)), (1, other)],
        );
        assert!(!d.allowed);
    }

    #[test]
    fn malformed_trust_files_name_the_line() {
        let a = key("a", 1).public_key();
        for (text, line, needle) in [
            (
                format!("builder x {a}\nquorum 2\n"),
                2,
                "more than the 1 builders",
            ),
            (
                format!("builder x {a}\nbuilder y {a}\nquorum 1\n"),
                2,
                "listed twice",
            ),
            (format!("builder x {a}\nquorum 0\n"), 2, "at least 1"),
            (
                format!("builder x {a}\nquorum 1\non-conflict maybe\n"),
                3,
                "deny or majority",
            ),
            (
                format!("builder x {a}\ntrust everyone\nquorum 1\n"),
                2,
                "not a statement",
            ),
            ("builder x notakey\nquorum 1\n".into(), 1, "key"),
            (format!("builder x {a}\n"), 0, "no quorum"),
        ] {
            let e = Trust::parse(&text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.reason.contains(needle), "{text}: {e}");
        }
    }
}
