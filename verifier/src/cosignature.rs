//! C2SP tlog-cosignature, cosignature/v1 (<https://c2sp.org/tlog-cosignature>): the message a
//! witness signs and the check of a cosignature over an Ed25519 public key.
//!
//! A witness signs `cosignature/v1\ntime <t>\n` followed by the checkpoint body with its
//! Ed25519 key. The signature line carries the key ID (computed with type 0x04), the 8-byte
//! big-endian timestamp `t` in seconds, then the 64-byte Ed25519 signature.
//!
//! This module knows nothing of notes or key names, so that the note module can build on it
//! without the two depending on each other: a witness signs with `note::SignerKey::cosign`,
//! and a cosignature in a note is checked by `note::VerifierKey::verify`.

use ed25519_dalek::{Signature, VerifyingKey};

/// A cosignature that is malformed or does not verify under the key it was checked with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid cosignature")]
pub struct InvalidCosignature;

/// The message a witness signs for a checkpoint body at a time (seconds since the epoch).
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    let mut msg = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    msg.extend_from_slice(checkpoint_text.as_bytes());
    msg
}

/// The signature bytes of a cosignature line (after its key ID): the timestamp, then the
/// Ed25519 signature of [`signed_message`].
pub fn encode(timestamp: u64, signature: &Signature) -> Vec<u8> {
    let mut bytes = timestamp.to_be_bytes().to_vec();
    bytes.extend_from_slice(&signature.to_bytes());
    bytes
}

/// Checks a cosignature's bytes (timestamp ‖ signature) over a checkpoint body and returns
/// its timestamp. The Ed25519 check is strict: no malleable or small-order signatures.
pub fn verify(
    key: &VerifyingKey,
    checkpoint_text: &str,
    signature: &[u8],
) -> Result<u64, InvalidCosignature> {
    let (ts, sig) = signature
        .split_first_chunk::<8>()
        .ok_or(InvalidCosignature)?;
    let timestamp = u64::from_be_bytes(*ts);
    let sig = Signature::from_slice(sig).map_err(|_| InvalidCosignature)?;
    key.verify_strict(&signed_message(checkpoint_text, timestamp), &sig)
        .map_err(|_| InvalidCosignature)?;
    Ok(timestamp)
}
