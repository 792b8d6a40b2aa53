//! Shared helpers for the verifier's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/testdata` beside the repository, or `$REPROLOG_TESTDATA`.
pub fn testdata() -> PathBuf {
    std::env::var_os("REPROLOG_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"))
}

pub fn read(rel: &str) -> String {
    let p = testdata().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The blocks between `-----8<-----` markers, in order.
pub fn scissored_blocks(text: &str) -> Vec<String> {
    text.split("-----8<-----\n")
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The value after `label` on the line that starts with it.
pub fn labelled<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no line starting with {label:?}"))
        .trim()
}

/// The five lix narinfos, by file name, with the cache's public key.
pub fn lix_narinfos() -> (Vec<(String, String)>, String) {
    let dir = testdata().join("nix/lix");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "narinfo"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        5,
        "expected five lix narinfos in {}",
        dir.display()
    );
    (files, read("nix/lix/cache.lix.systems.pub"))
}
