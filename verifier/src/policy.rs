//! C2SP tlog-policy (<https://c2sp.org/tlog-policy>): which logs and witnesses a party trusts,
//! and the quorum of cosignatures a checkpoint needs.
//!
//! ```text
//! log <vkey> [<url>]
//! witness <name> <vkey> [<url>]
//! group <name> <k|all|any> <member>...
//! quorum <name|none>
//! ```
//!
//! Quorums count against the configured set: a witness that did not answer counts as one
//! that did not cosign. Each name may be a group member at most once in the whole policy
//! (tlog-policy, "Defining a witness group": "Each defined name can be listed as a group member
//! at most once"), so one witness's cosignature counts once towards any quorum: with
//! `group G1 any A` and `group G2 2 A G1`, A alone would otherwise satisfy G2.

use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::note::{
    Note, NoteError, VerifiedSignature, VerifierKey, ALG_COSIGNATURE_V1, ALG_ED25519,
};

/// Limits well above the 32 logs, witnesses and groups the spec asks implementations to allow.
const MAX_ITEMS: usize = 256;

/// Why a policy file was refused, or cannot judge a checkpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A line does not follow tlog-policy or breaks one of its rules.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The 1-based line of the policy text.
        line: usize,
        /// What is wrong with that line.
        reason: String,
    },
    /// The policy has no `quorum` line, so it cannot accept any checkpoint.
    #[error("the policy has no quorum line")]
    NoQuorum,
}

/// Why a checkpoint does not satisfy a policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RejectedCheckpoint {
    /// The note's text is not a checkpoint.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The note is malformed, or a signature by a policy key in it does not verify.
    #[error("checkpoint note: {0}")]
    Note(NoteError),
    /// The checkpoint's origin (the string) is not the name of any log of the policy.
    #[error("no log in the policy has origin {0:?}")]
    UnknownLog(String),
    /// The log's key (the string, as a verifier key) has no valid signature on the note.
    #[error("the checkpoint is not signed by the log {0}")]
    NoLogSignature(String),
    /// The cosignatures that verified do not meet the policy's quorum.
    #[error("the quorum {quorum} is not met: valid cosignatures from {cosigned:?}")]
    NoQuorum {
        /// The name of the quorum: a witness or a group.
        quorum: String,
        /// The names of the policy's witnesses whose cosignatures verified.
        cosigned: Vec<String>,
    },
    /// The policy cannot judge any checkpoint.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// A `log` line: a log whose checkpoints the policy accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyLog {
    /// The log's Ed25519 verifier key; its name is the log's origin.
    pub key: VerifierKey,
    /// Where the log is served, if the line says.
    pub url: Option<String>,
}

/// A `witness` line: a witness whose cosignatures count towards the quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyWitness {
    /// The name groups and the quorum refer to it by (not necessarily its key's name).
    pub name: String,
    /// The witness's cosignature/v1 verifier key.
    pub key: VerifierKey,
    /// Where the witness is served, if the line says.
    pub url: Option<String>,
}

/// A `group` line: satisfied when `threshold` of its members are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// How many members must be satisfied, from 1 to the number of members (`any` is 1,
    /// `all` every member).
    pub threshold: usize,
    /// The names of witnesses and groups defined on earlier lines.
    pub members: Vec<String>,
}

/// A parsed policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The `log` lines, in order.
    pub logs: Vec<PolicyLog>,
    /// The `witness` lines, in order.
    pub witnesses: Vec<PolicyWitness>,
    /// The `group` lines, by name.
    pub groups: BTreeMap<String, Group>,
    /// The quorum name; `none` needs no cosignature.
    pub quorum: Option<String>,
}

/// A checkpoint that satisfies a policy.
#[derive(Clone, Debug)]
pub struct TrustedCheckpoint {
    /// The body, parsed.
    pub checkpoint: Checkpoint,
    /// The note as received, with every signature line, verified or not.
    pub note: Note,
    /// Names of the policy's witnesses whose cosignatures verified.
    pub cosigned_by: Vec<String>,
    /// Every signature that verified under a key of the policy: the log's and cosignatures.
    pub signatures: Vec<VerifiedSignature>,
}

impl Policy {
    /// Parses a policy file. Names must be defined before they are used, and each may be a
    /// group member once in the whole policy.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut p = Policy::default();
        // Every name listed as a group member so far, with the group that lists it.
        let mut member_of: BTreeMap<String, String> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |reason: &str| PolicyError::Malformed {
                line,
                reason: reason.to_owned(),
            };
            if raw.bytes().any(|b| b < 0x20 && b != b'\t') || raw.bytes().any(|b| b == 0x7f) {
                return Err(bad("control character"));
            }
            let words: Vec<&str> = raw.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
            let Some(&keyword) = words.first() else {
                continue;
            };
            if keyword.starts_with('#') {
                continue;
            }
            if p.logs.len() + p.witnesses.len() + p.groups.len() >= MAX_ITEMS {
                return Err(bad("too many items"));
            }
            let vkey = |s: &str, alg: u8, what: &str| -> Result<VerifierKey, PolicyError> {
                let key = VerifierKey::parse(s).map_err(|e| bad(&format!("{what} key: {e}")))?;
                if key.algorithm() != alg {
                    return Err(bad(&format!("{what} key has the wrong signature type")));
                }
                Ok(key)
            };
            match (keyword, words.len()) {
                ("log", 2 | 3) => {
                    let key = vkey(words[1], ALG_ED25519, "log")?;
                    if p.logs
                        .iter()
                        .any(|l| l.key.public_key() == key.public_key())
                    {
                        return Err(bad("duplicate log"));
                    }
                    p.logs.push(PolicyLog {
                        key,
                        url: words.get(2).map(|u| u.to_string()),
                    });
                }
                ("witness", 3 | 4) => {
                    let name = words[1];
                    if p.defined(name) || name == "none" {
                        return Err(bad("name already defined"));
                    }
                    let key = vkey(words[2], ALG_COSIGNATURE_V1, "witness")?;
                    if p.witnesses
                        .iter()
                        .any(|w| w.key.public_key() == key.public_key())
                    {
                        return Err(bad("duplicate witness"));
                    }
                    p.witnesses.push(PolicyWitness {
                        name: name.to_owned(),
                        key,
                        url: words.get(3).map(|u| u.to_string()),
                    });
                }
                ("group", n) if n >= 4 => {
                    let name = words[1];
                    if p.defined(name) || name == "none" {
                        return Err(bad("name already defined"));
                    }
                    let members: Vec<String> = words[3..].iter().map(|m| m.to_string()).collect();
                    let distinct: BTreeSet<&String> = members.iter().collect();
                    if distinct.len() != members.len() {
                        return Err(bad("a member is listed twice"));
                    }
                    if let Some(m) = members.iter().find(|m| !p.defined(m)) {
                        return Err(bad(&format!("{m} is not defined on an earlier line")));
                    }
                    for m in &members {
                        if let Some(group) = member_of.insert(m.clone(), name.to_owned()) {
                            return Err(bad(&format!(
                                "{m} is already a member of group {group}; a name may be a \
                                 group member only once, so that one cosignature counts once"
                            )));
                        }
                    }
                    let threshold = match words[2] {
                        "all" => members.len(),
                        "any" => 1,
                        k => crate::checkpoint::parse_canonical_u64(k)
                            .and_then(|k| usize::try_from(k).ok())
                            .filter(|k| (1..=members.len()).contains(k))
                            .ok_or_else(|| bad("threshold must be all, any or 1..=members"))?,
                    };
                    p.groups
                        .insert(name.to_owned(), Group { threshold, members });
                }
                ("quorum", 2) => {
                    if p.quorum.is_some() {
                        return Err(bad("a second quorum line"));
                    }
                    if words[1] != "none" && !p.defined(words[1]) {
                        return Err(bad("quorum names nothing defined on an earlier line"));
                    }
                    p.quorum = Some(words[1].to_owned());
                }
                _ => return Err(bad(&format!("cannot parse a {keyword:?} line"))),
            }
        }
        Ok(p)
    }

    fn defined(&self, name: &str) -> bool {
        self.groups.contains_key(name) || self.witnesses.iter().any(|w| w.name == name)
    }

    /// Whether `name` (a witness or group) is satisfied by the witnesses in `cosigned`.
    fn satisfied(&self, name: &str, cosigned: &BTreeSet<&str>) -> bool {
        match self.groups.get(name) {
            Some(g) => {
                g.members
                    .iter()
                    .filter(|m| self.satisfied(m, cosigned))
                    .count()
                    >= g.threshold
            }
            None => cosigned.contains(name),
        }
    }

    /// Checks a signed checkpoint: a policy log must have signed it, and valid cosignatures
    /// from the policy's witnesses must meet the quorum.
    pub fn verify_checkpoint(&self, bytes: &[u8]) -> Result<TrustedCheckpoint, RejectedCheckpoint> {
        let quorum = self.quorum.clone().ok_or(PolicyError::NoQuorum)?;
        let note = Note::parse(bytes).map_err(RejectedCheckpoint::Note)?;
        let checkpoint = Checkpoint::parse(note.text())?;
        let log = self
            .logs
            .iter()
            .find(|l| l.key.name() == checkpoint.origin)
            .ok_or_else(|| RejectedCheckpoint::UnknownLog(checkpoint.origin.clone()))?;
        let mut keys = vec![log.key.clone()];
        keys.extend(self.witnesses.iter().map(|w| w.key.clone()));
        let signatures = note.verify(&keys).map_err(|e| match e {
            NoteError::NoKnownSignature => RejectedCheckpoint::NoLogSignature(log.key.to_string()),
            other => RejectedCheckpoint::Note(other),
        })?;
        if !signatures.iter().any(|s| s.key == log.key) {
            return Err(RejectedCheckpoint::NoLogSignature(log.key.to_string()));
        }
        let cosigned_by: Vec<String> = self
            .witnesses
            .iter()
            .filter(|w| signatures.iter().any(|s| s.key == w.key))
            .map(|w| w.name.clone())
            .collect();
        let names: BTreeSet<&str> = cosigned_by.iter().map(String::as_str).collect();
        if quorum != "none" && !self.satisfied(&quorum, &names) {
            return Err(RejectedCheckpoint::NoQuorum {
                quorum,
                cosigned: cosigned_by,
            });
        }
        Ok(TrustedCheckpoint {
            checkpoint,
            note,
            cosigned_by,
            signatures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::SignerKey;

    fn key(name: &str, seed: u8) -> SignerKey {
        SignerKey::from_seed(name, [seed; 32]).unwrap()
    }

    #[test]
    fn quorums_count_against_the_configured_set() {
        let log = key("example.com/log", 1);
        let ws: Vec<SignerKey> = (0..3).map(|i| key(&format!("w{i}"), 10 + i)).collect();
        let text = format!(
            "# trust\nlog {}\n\twitness A {} https://a.example\nwitness B {}\nwitness C {}\n\
             group AB 2 A B\ngroup all-of-them any AB C\nquorum AB\n",
            log.verifier_key(),
            ws[0].cosignature_verifier_key(),
            ws[1].cosignature_verifier_key(),
            ws[2].cosignature_verifier_key(),
        );
        let policy = Policy::parse(&text).unwrap();
        assert_eq!(
            policy.witnesses[0].url.as_deref(),
            Some("https://a.example")
        );
        let cp = Checkpoint::new("example.com/log", 3, [7; 32]);
        let mut note = Note::new(&cp.to_text()).unwrap();
        note.sign(&log);
        note.add_signature(ws[0].cosign(note.text(), 5));
        note.add_signature(ws[2].cosign(note.text(), 5));
        let err = policy
            .verify_checkpoint(note.encode().as_bytes())
            .unwrap_err();
        assert!(matches!(err, RejectedCheckpoint::NoQuorum { .. }), "{err}");
        note.add_signature(ws[1].cosign(note.text(), 6));
        let ok = policy.verify_checkpoint(note.encode().as_bytes()).unwrap();
        assert_eq!(ok.cosigned_by, vec!["A", "B", "C"]);

        // A forged cosignature from a known witness refuses the note.
        let mut forged = ws[1].cosign(note.text(), 6);
        forged.signature[20] ^= 1;
        note.add_signature(forged);
        assert!(policy.verify_checkpoint(note.encode().as_bytes()).is_err());
    }

    #[test]
    fn malformed_policies_name_the_line() {
        let w = key("w", 3).cosignature_verifier_key();
        let cases = [
            (format!("witness A {w}\ngroup G 3 A\n"), 2),
            (format!("witness A {w}\nwitness A {w}\n"), 2),
            ("quorum Z\n".to_owned(), 1),
            (format!("witness A {w}\ngroup G any A A\n"), 2),
            // One witness inside and beside a subgroup would count twice.
            (
                format!("witness A {w}\ngroup G1 any A\ngroup G2 2 A G1\n"),
                3,
            ),
            (format!("log {w}\n"), 1),
            ("frobnicate\n".to_owned(), 1),
            (format!("witness A {w}\nquorum A\nquorum none\n"), 3),
        ];
        for (text, line) in cases {
            match Policy::parse(&text) {
                Err(PolicyError::Malformed { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(
            Policy::parse("")
                .unwrap()
                .verify_checkpoint(b"x")
                .unwrap_err(),
            RejectedCheckpoint::Policy(PolicyError::NoQuorum)
        );
    }
}
