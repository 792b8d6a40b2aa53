//! C2SP tlog-cosignature, cosignature/v1 (<https://c2sp.org/tlog-cosignature>).
//!
//! A witness signs `cosignature/v1\ntime <t>\n` followed by the checkpoint body with its
//! Ed25519 key. The signature line carries the key ID (computed with type 0x04), the 8-byte
//! big-endian timestamp `t` in seconds, then the 64-byte Ed25519 signature.

use ed25519_dalek::VerifyingKey;

use crate::note::{InvalidSignature, NoteSignature, SignerKey};

/// The message a witness signs for a checkpoint body at a time.
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    let mut msg = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    msg.extend_from_slice(checkpoint_text.as_bytes());
    msg
}

/// A cosignature/v1 signature line by `witness` over a checkpoint body.
pub fn cosign(witness: &SignerKey, checkpoint_text: &str, timestamp: u64) -> NoteSignature {
    let mut signature = timestamp.to_be_bytes().to_vec();
    signature.extend_from_slice(&witness.sign_bytes(&signed_message(checkpoint_text, timestamp)));
    NoteSignature {
        name: witness.name().to_owned(),
        key_id: witness.cosignature_verifier_key().key_id(),
        signature,
    }
}

/// Checks a cosignature (timestamp ‖ signature) and returns its timestamp.
pub(crate) fn verify(
    key: &VerifyingKey,
    checkpoint_text: &str,
    sig: &[u8],
) -> Result<u64, InvalidSignature> {
    let (ts, sig) = sig.split_first_chunk::<8>().ok_or(InvalidSignature)?;
    let timestamp = u64::from_be_bytes(*ts);
    let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| InvalidSignature)?;
    key.verify_strict(&signed_message(checkpoint_text, timestamp), &sig)
        .map_err(|_| InvalidSignature)?;
    Ok(timestamp)
}
