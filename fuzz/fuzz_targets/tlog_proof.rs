//! Fuzzes a C2SP tlog-proof: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::proof::TlogProof;

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = TlogProof::parse(data) else {
        return;
    };
    let once = proof.encode();
    let again = TlogProof::parse(once.as_bytes())
        .expect("a proof we wrote parses")
        .encode();
    assert_eq!(once, again);
});
