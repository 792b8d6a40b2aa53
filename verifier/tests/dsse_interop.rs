//! Our DSSE envelopes against an independent implementation: Python's `securesystemslib`
//! (secure-systems-lab, the DSSE authors' own library), which `scripts/test.sh` installs. Each
//! side verifies what the other signed.

use std::process::Command;

use reprolog_verifier::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use reprolog_verifier::nix::NixSecretKey;

/// Verifies an envelope signed by us, then signs one with the same key (from its seed) for us
/// to verify; prints that envelope's JSON.
const SCRIPT: &str = r#"
import json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib import dsse
from securesystemslib.signer import CryptoSigner, SSlibKey
seed, name, ours = bytes.fromhex(sys.argv[1]), sys.argv[2], sys.argv[3]
private = Ed25519PrivateKey.from_private_bytes(seed)
public = private.public_key().public_bytes_raw().hex()
key = SSlibKey(name, "ed25519", "ed25519", {"public": public})
envelope = dsse.Envelope.from_dict(json.loads(ours))
verified = envelope.verify([key], 1)
assert name in verified, verified
theirs = dsse.Envelope(b'{"from":"securesystemslib"}', "application/vnd.in-toto+json", {})
theirs.sign(CryptoSigner(private, key))
print(json.dumps(theirs.to_dict()))
"#;

#[test]
fn securesystemslib_verifies_our_envelopes_and_we_verify_its() {
    let seed = [7u8; 32];
    let key = NixSecretKey::from_seed("builder-1", seed);
    let ours = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, br#"{"from":"reprolog"}"#, &key);
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &hex::encode(seed), &key.name])
        .arg(serde_json::to_string(&ours).unwrap())
        .output()
        .expect("python3 (scripts/test.sh installs securesystemslib)");
    assert!(
        out.status.success(),
        "securesystemslib refused our envelope: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Envelope = serde_json::from_slice(&out.stdout).unwrap();
    let verified = theirs
        .verify(IN_TOTO_PAYLOAD_TYPE, &[key.public_key()])
        .unwrap();
    assert_eq!(verified.body, br#"{"from":"securesystemslib"}"#);
    assert_eq!(verified.key, key.public_key());
    // And a tampered one is refused by both.
    let mut tampered = ours;
    tampered.payload = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        br#"{"from":"someone else"}"#,
    );
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &hex::encode(seed), &key.name])
        .arg(serde_json::to_string(&tampered).unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success());
}
