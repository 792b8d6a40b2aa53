//! Fuzzes a narinfo, as a cache serves it: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::nix::NarInfo;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(info) = NarInfo::parse(text) else {
        return;
    };
    // What we write out, we read back the same.
    let once = info.to_text();
    let again = NarInfo::parse(&once)
        .expect("a narinfo we wrote parses")
        .to_text();
    assert_eq!(once, again);
});
