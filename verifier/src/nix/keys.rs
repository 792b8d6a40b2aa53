//! Nix signing keys and signatures: `name:base64(...)`, as `nix key generate-secret`,
//! `trusted-public-keys` and narinfo `Sig:` lines write them.

use std::fmt;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// A malformed Nix key or signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NixKeyError {
    /// No `:`, or nothing before it.
    #[error("expected name:base64")]
    NoName,
    /// The key name (before the `:`) has white space or a control character.
    #[error("key name {0:?} contains white space or a control character")]
    BadName(String),
    /// The value after the `:` is not base64; the string says what it should have been.
    #[error("{0} is not valid base64")]
    BadBase64(&'static str),
    /// The base64 value decodes to the wrong number of bytes.
    #[error("{what} must be {want} bytes, got {got}")]
    WrongLength {
        /// What was being parsed: a public key, a secret key or a signature.
        what: &'static str,
        /// The length that kind of value has.
        want: usize,
        /// The length decoded.
        got: usize,
    },
    /// A secret key whose last 32 bytes are not the public key of its first 32.
    #[error("secret key's public half does not match its seed")]
    MismatchedSecretKey,
    /// 32 bytes that are not a point of the Ed25519 curve.
    #[error("not a valid Ed25519 public key")]
    BadPublicKey,
}

/// Splits `name:base64`, decoding the value to exactly `len` bytes.
fn split<const N: usize>(s: &str, what: &'static str) -> Result<(String, [u8; N]), NixKeyError> {
    let (name, b64) = s.trim().split_once(':').ok_or(NixKeyError::NoName)?;
    if name.is_empty() {
        return Err(NixKeyError::NoName);
    }
    if name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(NixKeyError::BadName(name.to_owned()));
    }
    let bytes = B64.decode(b64).map_err(|_| NixKeyError::BadBase64(what))?;
    let got = bytes.len();
    let bytes = bytes
        .try_into()
        .map_err(|_| NixKeyError::WrongLength { what, want: N, got })?;
    Ok((name.to_owned(), bytes))
}

/// A Nix public key, `name:base64(32-byte Ed25519 key)`.
#[derive(Clone, PartialEq, Eq)]
pub struct NixPublicKey {
    /// The key name, which `Sig:` lines by this key carry.
    pub name: String,
    /// The Ed25519 public key.
    pub key: VerifyingKey,
}

impl NixPublicKey {
    /// Parses `name:base64`, as `trusted-public-keys` lists it.
    pub fn parse(s: &str) -> Result<Self, NixKeyError> {
        let (name, bytes) = split::<32>(s, "public key")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| NixKeyError::BadPublicKey)?;
        Ok(NixPublicKey { name, key })
    }

    /// Parses a space- or newline-separated list, as `trusted-public-keys` holds.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, NixKeyError> {
        s.split_whitespace().map(Self::parse).collect()
    }

    /// Checks a signature over a fingerprint with strict Ed25519 (no malleable or small-order
    /// encodings), as libsodium does for Nix.
    pub fn verify(&self, fingerprint: &str, sig: &NixSignature) -> bool {
        sig.key_name == self.name
            && self
                .key
                .verify_strict(
                    fingerprint.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&sig.signature),
                )
                .is_ok()
    }
}

impl fmt::Display for NixPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, B64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for NixPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NixPublicKey({self})")
    }
}

/// Checks many (key, fingerprint, signature) triples at once with Ed25519 batch verification,
/// about twice as fast per signature as one by one. `true` means every signature is valid
/// under strict rules too: weak (small-order) keys and mismatched key names are refused up
/// front. On `false`, check one by one to find which failed.
pub fn verify_batch(items: &[(&NixPublicKey, &str, &NixSignature)]) -> bool {
    if items
        .iter()
        .any(|(k, _, s)| k.key.is_weak() || s.key_name != k.name)
    {
        return false;
    }
    let messages: Vec<&[u8]> = items.iter().map(|(_, m, _)| m.as_bytes()).collect();
    let signatures: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|(_, _, s)| ed25519_dalek::Signature::from_bytes(&s.signature))
        .collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(k, _, _)| k.key).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

/// A Nix secret key, `name:base64(32-byte seed ‖ 32-byte public key)`.
#[derive(Clone)]
pub struct NixSecretKey {
    /// The key name, which its signatures carry.
    pub name: String,
    key: SigningKey,
}

impl fmt::Debug for NixSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NixSecretKey({}, secret redacted)", self.name)
    }
}

impl NixSecretKey {
    /// Parses `name:base64(seed ‖ public key)`, as `nix key generate-secret` writes it.
    pub fn parse(s: &str) -> Result<Self, NixKeyError> {
        let (name, bytes) = split::<64>(s, "secret key")?;
        let key =
            SigningKey::from_keypair_bytes(&bytes).map_err(|_| NixKeyError::MismatchedSecretKey)?;
        Ok(NixSecretKey { name, key })
    }

    /// A key from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Self {
        NixSecretKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Self {
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        Self::from_seed(name, seed)
    }

    /// The file form; treat it as a secret.
    pub fn to_secret_string(&self) -> String {
        format!("{}:{}", self.name, B64.encode(self.key.to_keypair_bytes()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> NixPublicKey {
        NixPublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// An Ed25519 signature over other bytes than a Nix fingerprint (a DSSE envelope's
    /// pre-authentication encoding). The caller's format must keep such messages apart from
    /// fingerprints, which all start with `1;`.
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// A signature over a Nix fingerprint, as a narinfo's `Sig:` line carries it.
    pub fn sign(&self, fingerprint: &str) -> NixSignature {
        NixSignature {
            key_name: self.name.clone(),
            signature: self.key.sign(fingerprint.as_bytes()).to_bytes(),
        }
    }
}

/// A narinfo signature, `name:base64(64-byte Ed25519 signature)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NixSignature {
    /// The name of the key that made it.
    pub key_name: String,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

impl NixSignature {
    /// Parses `name:base64`, a `Sig:` value.
    pub fn parse(s: &str) -> Result<Self, NixKeyError> {
        let (key_name, signature) = split::<64>(s, "signature")?;
        Ok(NixSignature {
            key_name,
            signature,
        })
    }
}

impl fmt::Display for NixSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, B64.encode(self.signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_verification_agrees_with_single() {
        let keys: Vec<NixSecretKey> = (0..8u8)
            .map(|i| NixSecretKey::from_seed(&format!("k{i}"), [i; 32]))
            .collect();
        let publics: Vec<NixPublicKey> = keys.iter().map(NixSecretKey::public_key).collect();
        let messages: Vec<String> = (0..8).map(|i| format!("1;/nix/store/x{i}")).collect();
        let mut sigs: Vec<NixSignature> =
            keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        let batch = |sigs: &[NixSignature]| {
            let items: Vec<_> = publics
                .iter()
                .zip(&messages)
                .zip(sigs)
                .map(|((k, m), s)| (k, m.as_str(), s))
                .collect();
            verify_batch(&items)
        };
        assert!(batch(&sigs));
        sigs[5].signature[10] ^= 1;
        assert!(!batch(&sigs));
        assert!(!publics[5].verify(&messages[5], &sigs[5]));
    }
}
