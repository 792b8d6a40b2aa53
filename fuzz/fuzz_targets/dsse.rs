//! Fuzzes a DSSE envelope of a build attestation: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::dsse::Envelope;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(data) else {
        return;
    };
    let once = serde_json::to_vec(&envelope).expect("an envelope serializes");
    let again: Envelope = serde_json::from_slice(&once).expect("and parses back");
    assert_eq!(envelope, again);
});
