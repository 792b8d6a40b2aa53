//! Fuzzes a store path: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::nix::store_path::StorePath;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = StorePath::parse(text) else {
        return;
    };
    assert_eq!(path.to_string(), text, "a store path has one spelling");
});
