//! DSSE, the Dead Simple Signing Envelope (<https://github.com/secure-systems-lab/dsse>,
//! protocol and envelope v1.0.0), signed with Nix Ed25519 keys: how build attestations
//! (in-toto statements) are signed.
//!
//! The signature is over the pre-authentication encoding
//! `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, with lengths as
//! ASCII decimal byte counts. Every PAE starts with `DSSEv1 ` and every Nix fingerprint with
//! `1;`, so a signature made for one can never verify as the other. The envelope's `keyid` is
//! the Nix key's name; DSSE says it must not decide security, and it does not: it only picks
//! the candidate keys, and the signature must verify under one of them.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde::{Deserialize, Serialize};

use crate::nix::{NixPublicKey, NixSecretKey};

/// The payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsseError {
    /// `payload` or a `sig` is not base64.
    #[error("{0} is not base64")]
    NotBase64(&'static str),
    /// The payload type is not the one the caller expects.
    #[error("payload type {found:?}, not {expected:?}")]
    WrongPayloadType {
        /// What the envelope says.
        found: String,
        /// What the caller accepts.
        expected: String,
    },
    /// No signature verifies under a key the caller trusts.
    #[error("no signature verifies under a trusted key (key ids: {0})")]
    NoValidSignature(String),
}

/// A DSSE JSON envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Base64 of the serialized body.
    pub payload: String,
    /// What the body is, e.g. [`IN_TOTO_PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// One or more signatures over the PAE.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signer's Nix key name (a hint that selects keys, never trusted alone).
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the 64-byte Ed25519 signature.
    pub sig: String,
}

/// What a verified envelope holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The payload's bytes.
    pub body: Vec<u8>,
    /// The trusted key a signature verified under.
    pub key: NixPublicKey,
    /// That signature.
    pub signature: [u8; 64],
}

/// The DSSE v1 pre-authentication encoding of a body of `payload_type`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

impl Envelope {
    /// Signs `body` of `payload_type` with a Nix key; the key id is the key's name.
    pub fn sign(payload_type: &str, body: &[u8], key: &NixSecretKey) -> Self {
        Envelope {
            payload: B64.encode(body),
            payload_type: payload_type.to_owned(),
            signatures: vec![EnvelopeSignature {
                keyid: key.name.clone(),
                sig: B64.encode(key.sign_bytes(&pae(payload_type, body))),
            }],
        }
    }

    /// Checks the envelope is of `payload_type` and that a signature verifies (strict Ed25519)
    /// under a key of `trusted` with the name its `keyid` gives.
    pub fn verify(
        &self,
        payload_type: &str,
        trusted: &[NixPublicKey],
    ) -> Result<Verified, DsseError> {
        if self.payload_type != payload_type {
            return Err(DsseError::WrongPayloadType {
                found: self.payload_type.clone(),
                expected: payload_type.to_owned(),
            });
        }
        let body = B64
            .decode(&self.payload)
            .map_err(|_| DsseError::NotBase64("payload"))?;
        let message = pae(&self.payload_type, &body);
        for s in &self.signatures {
            let sig: [u8; 64] = B64
                .decode(&s.sig)
                .map_err(|_| DsseError::NotBase64("sig"))?
                .try_into()
                .map_err(|_| DsseError::NotBase64("sig"))?;
            let sig = ed25519_dalek::Signature::from_bytes(&sig);
            if let Some(key) = trusted
                .iter()
                .filter(|k| k.name == s.keyid)
                .find(|k| k.key.verify_strict(&message, &sig).is_ok())
            {
                return Ok(Verified {
                    body,
                    key: key.clone(),
                    signature: sig.to_bytes(),
                });
            }
        }
        let ids: Vec<&str> = self.signatures.iter().map(|s| s.keyid.as_str()).collect();
        Err(DsseError::NoValidSignature(ids.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::NixSignature;

    #[test]
    fn pae_is_the_specs() {
        // The example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn envelopes_verify_only_under_the_named_key_and_type() {
        let key = NixSecretKey::from_seed("builder-1", [1; 32]);
        let other = NixSecretKey::from_seed("builder-1", [2; 32]);
        let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &key);
        let v = env
            .verify(
                IN_TOTO_PAYLOAD_TYPE,
                &[other.public_key(), key.public_key()],
            )
            .unwrap();
        assert_eq!(
            (v.body.as_slice(), v.key),
            (b"{}".as_slice(), key.public_key())
        );
        assert!(env
            .verify(IN_TOTO_PAYLOAD_TYPE, &[other.public_key()])
            .is_err());
        assert!(matches!(
            env.verify("application/json", &[key.public_key()]),
            Err(DsseError::WrongPayloadType { .. })
        ));
        // The type is signed: changing it breaks the signature.
        let mut retyped = env.clone();
        retyped.payload_type = "application/vnd.other+json".into();
        assert!(retyped
            .verify("application/vnd.other+json", &[key.public_key()])
            .is_err());
        let mut changed = env;
        changed.payload = B64.encode(b"{ }");
        assert!(changed
            .verify(IN_TOTO_PAYLOAD_TYPE, &[key.public_key()])
            .is_err());
    }

    #[test]
    fn an_attestation_signature_never_passes_as_a_narinfo_signature() {
        let key = NixSecretKey::from_seed("builder-1", [1; 32]);
        // A body chosen so that the PAE looks as much like a fingerprint as it can.
        let body = b"1;/nix/store/x;sha256:0;1;";
        let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, body, &key);
        let sig: [u8; 64] = B64
            .decode(&env.signatures[0].sig)
            .unwrap()
            .try_into()
            .unwrap();
        let as_narinfo = NixSignature {
            key_name: key.name.clone(),
            signature: sig,
        };
        assert!(!key
            .public_key()
            .verify(std::str::from_utf8(body).unwrap(), &as_narinfo));
        // And a narinfo signature is no envelope signature.
        let narinfo_sig = key.sign(std::str::from_utf8(body).unwrap());
        let forged = Envelope {
            payload: B64.encode(body),
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            signatures: vec![EnvelopeSignature {
                keyid: key.name.clone(),
                sig: B64.encode(narinfo_sig.signature),
            }],
        };
        assert!(forged
            .verify(IN_TOTO_PAYLOAD_TYPE, &[key.public_key()])
            .is_err());
    }
}
