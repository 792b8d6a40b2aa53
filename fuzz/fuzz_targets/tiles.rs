//! Fuzzes a tile path, and an entry bundle: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::tiles::{decode_bundle, encode_bundle, TilePath};

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        if let Ok(tile) = TilePath::parse(path) {
            let once = tile.to_string();
            let again = TilePath::parse(&once)
                .expect("a path we wrote parses")
                .to_string();
            assert_eq!(once, again);
        }
    }
    if let Ok(entries) = decode_bundle(data) {
        let encoded = encode_bundle(&entries).expect("a bundle we read encodes");
        assert_eq!(encoded, data, "a bundle has one encoding");
    }
});
