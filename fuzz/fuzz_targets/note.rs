//! Fuzzes a signed note, and the checkpoint it carries: it must never panic, and what parses must read back as it was written.
#![no_main]
use libfuzzer_sys::fuzz_target;

use reprolog_verifier::checkpoint::Checkpoint;
use reprolog_verifier::note::Note;

fuzz_target!(|data: &[u8]| {
    let Ok(note) = Note::parse(data) else { return };
    let once = note.encode();
    let again = Note::parse(once.as_bytes())
        .expect("a note we wrote parses")
        .encode();
    assert_eq!(once, again);
    if let Ok(checkpoint) = Checkpoint::parse(note.text()) {
        let text = checkpoint.to_text();
        let reparsed = Checkpoint::parse(&text).expect("a checkpoint we wrote parses");
        assert_eq!(text, reparsed.to_text());
    }
});
