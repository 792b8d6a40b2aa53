//! Fuzzes the witness's add-checkpoint request body: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::witness_request::AddCheckpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = AddCheckpoint::parse(data) else {
        return;
    };
    let once = request.encode();
    let again = AddCheckpoint::parse(once.as_bytes())
        .expect("a request we wrote parses")
        .encode();
    assert_eq!(once, again);
});
