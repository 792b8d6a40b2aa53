//! Build attestations: "I built this output myself", as an in-toto Statement v1
//! (<https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md>) whose predicate
//! is SLSA Provenance v1 (<https://slsa.dev/provenance/v1>), in a DSSE envelope signed with the
//! builder's Nix key ([`crate::dsse`]). `spec/attestation.md` gives the layout.
//!
//! A statement has exactly one canonical byte form ([`BuildFacts::statement`]): the parser
//! refuses any other serialization of the same facts, so one build's attestation is one entry
//! in the log however often it is submitted.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::dating::{parse_rfc3339, rfc3339};
use crate::dsse::{DsseError, Envelope, Verified, IN_TOTO_PAYLOAD_TYPE};
use crate::nix::narinfo::NixHash;
use crate::nix::store_path::check_base_name;
use crate::nix::{NixPublicKey, NixSecretKey, StorePath};

/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The SLSA provenance predicate type.
pub const PROVENANCE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// Our build type: a Nix derivation realised by a builder (`spec/attestation.md`).
pub const BUILD_TYPE: &str = "https://reprolog.dev/attestation/nix-build/v1";

/// Why a statement or envelope is not a build attestation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    /// The envelope does not verify.
    #[error(transparent)]
    Envelope(#[from] DsseError),
    /// The payload is not a statement of the expected shape.
    #[error("not a reprolog build statement: {0}")]
    Malformed(String),
    /// The payload is a build statement, but not in its one canonical form.
    #[error("the statement is not in its canonical form (spec/attestation.md)")]
    NotCanonical,
}

/// What a builder attests about one output it built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildFacts {
    /// The output's store path.
    pub store_path: StorePath,
    /// The NAR's SHA-256.
    pub nar_hash: NixHash,
    /// The NAR's size in bytes.
    pub nar_size: u64,
    /// The output's references, base names.
    pub references: BTreeSet<String>,
    /// The derivation's store path (`….drv`).
    pub derivation: StorePath,
    /// The output's name in the derivation, e.g. `out`.
    pub output: String,
    /// The builder's system, e.g. `x86_64-linux`.
    pub system: String,
    /// The Nix version that built it, e.g. `2.8.0`.
    pub nix_version: String,
    /// When the build started, Unix seconds.
    pub started: u64,
    /// When the build finished, Unix seconds.
    pub finished: u64,
}

// The statement's JSON, field for field in canonical order (serde writes struct fields in
// declaration order, with no whitespace).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subject {
    name: String,
    digest: Digest,
    annotations: Annotations,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Digest {
    sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Annotations {
    #[serde(rename = "narSize")]
    nar_size: u64,
    references: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Predicate {
    build_definition: BuildDefinition,
    run_details: RunDetails,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BuildDefinition {
    build_type: String,
    external_parameters: ExternalParameters,
    internal_parameters: InternalParameters,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalParameters {
    derivation: String,
    output: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InternalParameters {
    system: String,
    nix_version: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunDetails {
    builder: Builder,
    metadata: Metadata,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Builder {
    id: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Metadata {
    started_on: String,
    finished_on: String,
}

fn malformed(why: impl Into<String>) -> AttestationError {
    AttestationError::Malformed(why.into())
}

/// A builder's SLSA `builder.id`: its Nix key name, under our build type.
fn builder_id(key_name: &str) -> String {
    format!("{BUILD_TYPE}#builder={key_name}")
}

impl BuildFacts {
    /// The statement's canonical bytes, with `key_name` as the builder's identity.
    pub fn statement(&self, key_name: &str) -> Vec<u8> {
        let statement = Statement {
            type_: STATEMENT_TYPE.into(),
            subject: vec![Subject {
                name: self.store_path.to_string(),
                digest: Digest {
                    sha256: hex(&self.nar_hash.0),
                },
                annotations: Annotations {
                    nar_size: self.nar_size,
                    references: self.references.iter().cloned().collect(),
                },
            }],
            predicate_type: PROVENANCE_TYPE.into(),
            predicate: Predicate {
                build_definition: BuildDefinition {
                    build_type: BUILD_TYPE.into(),
                    external_parameters: ExternalParameters {
                        derivation: self.derivation.to_string(),
                        output: self.output.clone(),
                    },
                    internal_parameters: InternalParameters {
                        system: self.system.clone(),
                        nix_version: self.nix_version.clone(),
                    },
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: builder_id(key_name),
                    },
                    metadata: Metadata {
                        started_on: rfc3339(self.started),
                        finished_on: rfc3339(self.finished),
                    },
                },
            },
        };
        // Serializing plain strings and integers cannot fail.
        serde_json::to_vec(&statement).unwrap_or_default()
    }

    /// Signs the statement with the builder's Nix key.
    pub fn sign(&self, key: &NixSecretKey) -> Envelope {
        Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &self.statement(&key.name), key)
    }

    /// Parses a statement made by `key_name`, refusing anything but its canonical bytes.
    pub fn parse(bytes: &[u8], key_name: &str) -> Result<Self, AttestationError> {
        let s: Statement = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if s.type_ != STATEMENT_TYPE {
            return Err(malformed(format!("_type {:?}", s.type_)));
        }
        if s.predicate_type != PROVENANCE_TYPE {
            return Err(malformed(format!("predicateType {:?}", s.predicate_type)));
        }
        let def = &s.predicate.build_definition;
        if def.build_type != BUILD_TYPE {
            return Err(malformed(format!("buildType {:?}", def.build_type)));
        }
        if s.predicate.run_details.builder.id != builder_id(key_name) {
            return Err(malformed(format!(
                "builder.id {:?} is not the signing key's",
                s.predicate.run_details.builder.id
            )));
        }
        let [subject] = s.subject.as_slice() else {
            return Err(malformed("exactly one subject is attested"));
        };
        let store_path = StorePath::parse(&subject.name).map_err(|e| malformed(e.to_string()))?;
        let nar_hash = unhex(&subject.digest.sha256)
            .map(NixHash)
            .ok_or_else(|| malformed("digest.sha256 is not 64 lowercase hex digits"))?;
        for r in &subject.annotations.references {
            check_base_name(r).map_err(|e| malformed(format!("reference {r:?}: {e}")))?;
        }
        let derivation = StorePath::parse(&def.external_parameters.derivation)
            .map_err(|e| malformed(e.to_string()))?;
        if !derivation.to_string().ends_with(".drv") {
            return Err(malformed("the derivation is not a .drv path"));
        }
        let facts = BuildFacts {
            store_path,
            nar_hash,
            nar_size: subject.annotations.nar_size,
            references: subject.annotations.references.iter().cloned().collect(),
            derivation,
            output: def.external_parameters.output.clone(),
            system: def.internal_parameters.system.clone(),
            nix_version: def.internal_parameters.nix_version.clone(),
            started: parse_rfc3339(&s.predicate.run_details.metadata.started_on)
                .ok_or_else(|| malformed("startedOn is not YYYY-MM-DDTHH:MM:SSZ"))?,
            finished: parse_rfc3339(&s.predicate.run_details.metadata.finished_on)
                .ok_or_else(|| malformed("finishedOn is not YYYY-MM-DDTHH:MM:SSZ"))?,
        };
        let plain =
            |v: &str| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic());
        if !plain(&facts.output) || !plain(&facts.system) || !plain(&facts.nix_version) {
            return Err(malformed(
                "output, system and nixVersion are short printable words",
            ));
        }
        if facts.statement(key_name) != bytes {
            return Err(AttestationError::NotCanonical);
        }
        Ok(facts)
    }

    /// Verifies an envelope under `trusted` keys and parses its statement; returns the facts
    /// and what verified them.
    pub fn verify(
        envelope: &Envelope,
        trusted: &[NixPublicKey],
    ) -> Result<(Self, Verified), AttestationError> {
        let verified = envelope.verify(IN_TOTO_PAYLOAD_TYPE, trusted)?;
        Ok((Self::parse(&verified.body, &verified.key.name)?, verified))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> BuildFacts {
        BuildFacts {
            store_path: StorePath::parse(&format!("/nix/store/{}-hello", "a".repeat(32))).unwrap(),
            nar_hash: NixHash([7; 32]),
            nar_size: 120,
            references: [format!("{}-dep", "b".repeat(32))].into(),
            derivation: StorePath::parse(&format!("/nix/store/{}-hello.drv", "c".repeat(32)))
                .unwrap(),
            output: "out".into(),
            system: "x86_64-linux".into(),
            nix_version: "2.8.0".into(),
            started: 1_764_748_800,
            finished: 1_764_748_802,
        }
    }

    #[test]
    fn a_signed_statement_verifies_and_reads_back() {
        let key = NixSecretKey::from_seed("builder-1", [1; 32]);
        let envelope = facts().sign(&key);
        let (read, by) = BuildFacts::verify(&envelope, &[key.public_key()]).unwrap();
        assert_eq!((read, by.key), (facts(), key.public_key()));
        let json = String::from_utf8(facts().statement("builder-1")).unwrap();
        assert!(
            json.starts_with(
                r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"/nix/store/"#
            ),
            "{json}"
        );
        assert!(
            json.contains(r#""startedOn":"2025-12-03T08:00:00Z""#),
            "{json}"
        );
        assert!(json.contains(r#""predicateType":"https://slsa.dev/provenance/v1""#));
    }

    #[test]
    fn only_the_canonical_bytes_of_a_statement_are_accepted() {
        let bytes = facts().statement("builder-1");
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert_eq!(
            BuildFacts::parse(&pretty, "builder-1"),
            Err(AttestationError::NotCanonical)
        );
        // Another key's name in builder.id: the statement must name its signer.
        assert!(matches!(
            BuildFacts::parse(&bytes, "builder-2"),
            Err(AttestationError::Malformed(_))
        ));
        let extra = String::from_utf8(bytes.clone()).unwrap().replacen(
            r#""annotations":{"#,
            r#""annotations":{"x":1,"#,
            1,
        );
        assert!(BuildFacts::parse(extra.as_bytes(), "builder-1").is_err());
    }

    #[test]
    fn times_are_rfc3339_utc_and_read_back() {
        for t in [0, 951_782_400, 1_764_748_802, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for bad in [
            "2025-02-30T00:00:00Z",
            "2025-1-01T00:00:00Z",
            "2025-01-01 00:00:00Z",
            "2025-01-01T24:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
