//! The one signature classifier: what a narinfo's `Sig:` line amounts to against a set of
//! trusted keys. The log's submission check, `reprolog narinfo verify` and the gate all call
//! it; they differ only in the rule for several trusted keys of one name, which each caller
//! chooses explicitly (`spec/signatures.md`).

use super::keys::{NixPublicKey, NixSignature};

/// What one `Sig:` line amounts to against a set of trusted keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Verifies under this trusted key of its name.
    Valid(NixPublicKey),
    /// Names a trusted key but does not verify under it (under the rule in force).
    Invalid,
    /// Names no trusted key.
    Untrusted,
    /// Is not `name:base64(64 bytes)`; the parser's reason.
    Malformed(String),
}

/// Which trusted keys a signature is checked against when several share its key name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameNameKeys {
    /// Nix's rule. `trusted-public-keys` becomes a map from key name to key in which the
    /// first key of a name stays and later ones are dropped (`getDefaultPublicKeys` in Nix's
    /// libstore, which `emplace`s each key by name), so only that first key counts. Used to
    /// give the verdict Nix would give.
    FirstOnly,
    /// The log's rule for its builder registry: a builder keeps its name across a key
    /// rotation, with old and new keys registered side by side, so a signature counts when it
    /// verifies under any registered key of its name.
    Any,
}

/// Classifies one `Sig:` value (`name:base64`) made over `fingerprint`: valid with the key
/// it verifies under, invalid, untrusted (no trusted key of its name) or malformed. Each
/// candidate key costs one strict Ed25519 verification.
pub fn classify(
    fingerprint: &str,
    sig: &str,
    trusted: &[NixPublicKey],
    rule: SameNameKeys,
) -> SignatureStatus {
    match NixSignature::parse(sig) {
        Err(e) => SignatureStatus::Malformed(e.to_string()),
        Ok(sig) => check(fingerprint, &sig, trusted, rule),
    }
}

/// [`classify`] for a signature already parsed.
pub fn check(
    fingerprint: &str,
    sig: &NixSignature,
    trusted: &[NixPublicKey],
    rule: SameNameKeys,
) -> SignatureStatus {
    let named = trusted.iter().filter(|k| k.name == sig.key_name);
    let candidates: Vec<&NixPublicKey> = match rule {
        SameNameKeys::FirstOnly => named.take(1).collect(),
        SameNameKeys::Any => named.collect(),
    };
    if candidates.is_empty() {
        return SignatureStatus::Untrusted;
    }
    match candidates.into_iter().find(|k| k.verify(fingerprint, sig)) {
        Some(k) => SignatureStatus::Valid(k.clone()),
        None => SignatureStatus::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::NixSecretKey;

    const FINGERPRINT: &str = "1;/nix/store/00000000000000000000000000000000-x;sha256:0;1;";

    /// An old key and a new key of one builder, as a key rotation leaves them.
    fn rotated() -> (NixSecretKey, NixSecretKey, Vec<NixPublicKey>) {
        let old = NixSecretKey::from_seed("builder", [1; 32]);
        let new = NixSecretKey::from_seed("builder", [2; 32]);
        let keys = vec![old.public_key(), new.public_key()];
        (old, new, keys)
    }

    #[test]
    fn nix_rule_counts_only_the_first_key_of_a_name() {
        let (old, new, keys) = rotated();
        let by_old = old.sign(FINGERPRINT).to_string();
        let by_new = new.sign(FINGERPRINT).to_string();
        let rule = SameNameKeys::FirstOnly;
        assert_eq!(
            classify(FINGERPRINT, &by_old, &keys, rule),
            SignatureStatus::Valid(keys[0].clone())
        );
        // Nix would not accept the second key's signature: its map kept the first key.
        assert_eq!(
            classify(FINGERPRINT, &by_new, &keys, rule),
            SignatureStatus::Invalid
        );
    }

    #[test]
    fn registry_rule_counts_any_key_of_a_name() {
        let (old, new, keys) = rotated();
        let rule = SameNameKeys::Any;
        for (signer, key) in [(&old, &keys[0]), (&new, &keys[1])] {
            let sig = signer.sign(FINGERPRINT).to_string();
            assert_eq!(
                classify(FINGERPRINT, &sig, &keys, rule),
                SignatureStatus::Valid(key.clone())
            );
        }
        let stranger = NixSecretKey::from_seed("builder", [3; 32]);
        let forged = stranger.sign(FINGERPRINT).to_string();
        assert_eq!(
            classify(FINGERPRINT, &forged, &keys, rule),
            SignatureStatus::Invalid
        );
    }

    #[test]
    fn unknown_names_and_malformed_lines_are_told_apart() {
        let (old, _, keys) = rotated();
        let other = NixSecretKey::from_seed("other", [1; 32]);
        for rule in [SameNameKeys::FirstOnly, SameNameKeys::Any] {
            let sig = other.sign(FINGERPRINT).to_string();
            assert_eq!(
                classify(FINGERPRINT, &sig, &keys, rule),
                SignatureStatus::Untrusted
            );
            assert!(matches!(
                classify(FINGERPRINT, "builder:not base64", &keys, rule),
                SignatureStatus::Malformed(_)
            ));
            // A valid signature over other bytes is invalid, never valid.
            let sig = old.sign("1;other").to_string();
            assert_eq!(
                classify(FINGERPRINT, &sig, &keys, rule),
                SignatureStatus::Invalid
            );
        }
    }
}
