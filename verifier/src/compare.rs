//! Reproducibility comparison: what builders claimed for one store path, and the verdict. The
//! verdict's words are the project's one vocabulary, shared by the CLI, the log's API, the
//! explorer and the gate: `reproduced`, `unreproduced`, `one-builder` and `not-logged`.
//!
//! Builders are counted as identities, never as entries or keys: one builder that signed a
//! path twice is still one builder, and so is a builder that re-signed it with the key it
//! rotated to ([`crate::registry`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::nix::NixPublicKey;
use crate::registry::{KeyRegistry, KeyStatus};

/// A builder's claim about a store path, as logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The builder identity (the log registry's; a rotation chain is one identity).
    pub builder: String,
    /// The name of the key that signed, when it is not the identity's own name (a key the
    /// builder rotated to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `sha256:<nix32>`.
    pub nar_hash: String,
    /// The entry's index in the log.
    pub index: u64,
    /// The entry's kind: `build` (the builder attests it built the output) or
    /// `cache-signature` (it only signed it).
    pub kind: String,
}

impl Claim {
    /// The claim of a signature by `key` of `nar_hash` logged at `index` (an entry of kind
    /// `kind`), judged by the registry as of that index: a claim for the key's builder
    /// identity, or a void claim with the reason.
    pub fn judge(
        registry: &KeyRegistry,
        key: &NixPublicKey,
        nar_hash: String,
        kind: &str,
        index: u64,
    ) -> Result<Claim, VoidClaim> {
        match registry.status(key, index) {
            KeyStatus::Valid { identity } => Ok(Claim {
                key: (identity != key.name).then(|| key.name.clone()),
                builder: identity,
                nar_hash,
                index,
                kind: kind.to_owned(),
            }),
            status => Err(VoidClaim {
                key: key.name.clone(),
                nar_hash,
                index,
                reason: status.to_string(),
            }),
        }
    }

    /// Whether the builder attested building the output, rather than only signing it.
    pub fn built(&self) -> bool {
        self.kind == "build"
    }
}

/// What the claims about one store path amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Two or more builders, one NAR hash.
    Reproduced,
    /// Two or more NAR hashes.
    Unreproduced,
    /// One builder only (however many times it signed).
    OneBuilder,
    /// Nothing in the log.
    NotLogged,
}

impl Verdict {
    /// The verdict of a set of claims about one path.
    pub fn of(claims: &[Claim]) -> Self {
        let hashes: BTreeSet<&str> = claims.iter().map(|c| c.nar_hash.as_str()).collect();
        let builders: BTreeSet<&str> = claims.iter().map(|c| c.builder.as_str()).collect();
        match (hashes.len(), builders.len()) {
            (0, _) => Verdict::NotLogged,
            (1, 1) => Verdict::OneBuilder,
            (1, _) => Verdict::Reproduced,
            _ => Verdict::Unreproduced,
        }
    }

    /// The verdict's word, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::Unreproduced => "unreproduced",
            Verdict::OneBuilder => "one-builder",
            Verdict::NotLogged => "not-logged",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One store path's claims and verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathVerdict {
    /// The store path (or what the user named, when nothing is logged for it).
    pub store_path: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The claims, in index order.
    pub claims: Vec<Claim>,
    /// Builders whose own claims disagree, for example a build attestation and a cache
    /// signature with different NAR hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inconsistent_builders: Vec<String>,
    /// Logged signatures that do not count: by a key that was not allowed to sign at their
    /// index (revoked as of it, or retired before it). Never part of the verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub void: Vec<VoidClaim>,
}

/// A logged signature that does not count, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidClaim {
    /// The name of the key that signed.
    pub key: String,
    /// `sha256:<nix32>`.
    pub nar_hash: String,
    /// The entry's index in the log.
    pub index: u64,
    /// Why it does not count, from the registry as of its index.
    pub reason: String,
}

impl PathVerdict {
    /// Judges one path's claims and sets the signatures that do not count beside them.
    pub fn with_void(store_path: String, claims: Vec<Claim>, void: Vec<VoidClaim>) -> Self {
        PathVerdict {
            void,
            ..Self::new(store_path, claims)
        }
    }

    /// Judges one path's claims.
    pub fn new(store_path: String, claims: Vec<Claim>) -> Self {
        let mut hashes: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
        for c in &claims {
            hashes.entry(&c.builder).or_default().insert(&c.nar_hash);
        }
        let inconsistent_builders = hashes
            .into_iter()
            .filter(|(_, h)| h.len() > 1)
            .map(|(b, _)| b.to_owned())
            .collect();
        PathVerdict {
            store_path,
            verdict: Verdict::of(&claims),
            claims,
            inconsistent_builders,
            void: Vec::new(),
        }
    }
}

/// How many paths got each verdict, and the share reproduced among those compared.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Paths judged.
    pub paths: usize,
    /// Paths `reproduced`.
    pub reproduced: usize,
    /// Paths `unreproduced`.
    pub unreproduced: usize,
    /// Paths signed by `one-builder`.
    pub one_builder: usize,
    /// Paths `not-logged`.
    pub not_logged: usize,
    /// `reproduced / (reproduced + unreproduced)`, absent when nothing was compared.
    pub reproducibility: Option<f64>,
}

impl Summary {
    /// Counts the verdicts.
    pub fn of(paths: &[PathVerdict]) -> Self {
        let count = |v: Verdict| paths.iter().filter(|p| p.verdict == v).count();
        let (reproduced, unreproduced) = (count(Verdict::Reproduced), count(Verdict::Unreproduced));
        let compared = reproduced + unreproduced;
        Summary {
            paths: paths.len(),
            reproduced,
            unreproduced,
            one_builder: count(Verdict::OneBuilder),
            not_logged: count(Verdict::NotLogged),
            reproducibility: (compared > 0).then(|| reproduced as f64 / compared as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(builder: &str, nar_hash: &str, index: u64) -> Claim {
        Claim {
            builder: builder.into(),
            key: None,
            nar_hash: nar_hash.into(),
            index,
            kind: "cache-signature".into(),
        }
    }

    #[test]
    fn verdicts_count_builders_as_identities() {
        assert_eq!(Verdict::of(&[]), Verdict::NotLogged);
        assert_eq!(Verdict::of(&[claim("a", "h", 0)]), Verdict::OneBuilder);
        // One builder signing twice is still one builder.
        let twice = [claim("a", "h", 0), claim("a", "h", 5)];
        assert_eq!(Verdict::of(&twice), Verdict::OneBuilder);
        let two = [claim("a", "h", 0), claim("b", "h", 1)];
        assert_eq!(Verdict::of(&two), Verdict::Reproduced);
        let differ = [claim("a", "h", 0), claim("b", "g", 1)];
        assert_eq!(Verdict::of(&differ), Verdict::Unreproduced);
        // A builder that disagrees with itself is unreproduced too, and said to be.
        let itself = [claim("a", "h", 0), claim("a", "g", 1)];
        assert_eq!(Verdict::of(&itself), Verdict::Unreproduced);
        let v = PathVerdict::new("p".into(), itself.to_vec());
        assert_eq!(v.inconsistent_builders, ["a"]);
    }

    #[test]
    fn verdict_words_are_the_shared_vocabulary() {
        for (v, word) in [
            (Verdict::Reproduced, "reproduced"),
            (Verdict::Unreproduced, "unreproduced"),
            (Verdict::OneBuilder, "one-builder"),
            (Verdict::NotLogged, "not-logged"),
        ] {
            assert_eq!(v.as_str(), word);
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{word}\""));
        }
        let paths = [
            PathVerdict::new("p".into(), vec![claim("a", "h", 0), claim("b", "h", 1)]),
            PathVerdict::new("q".into(), vec![claim("a", "h", 2), claim("b", "g", 3)]),
            PathVerdict::new("r".into(), vec![]),
        ];
        let s = Summary::of(&paths);
        assert_eq!(
            (s.paths, s.reproduced, s.unreproduced, s.not_logged),
            (3, 1, 1, 1)
        );
        assert_eq!(s.reproducibility, Some(0.5));
    }
}
