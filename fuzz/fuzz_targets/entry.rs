//! Fuzzes a log entry, as an entry bundle or the entry API serves it: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::entry::LogEntry;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = LogEntry::decode(data) else {
        return;
    };
    let Ok(once) = entry.encode() else { return };
    let again = LogEntry::decode(&once)
        .expect("an entry we encoded decodes")
        .encode()
        .expect("and encodes again");
    assert_eq!(once, again);
});
