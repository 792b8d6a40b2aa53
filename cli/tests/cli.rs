//! The `reprolog narinfo` commands, run as a real process.

#[path = "../../verifier/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use common::{lix_narinfos, testdata};
use reprolog_verifier::nix::NarInfo;

fn reprolog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reprolog"))
        .args(args)
        .output()
        .unwrap()
}

fn lix_path(name: &str) -> String {
    testdata()
        .join("nix/lix")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn lix_key() -> String {
    lix_narinfos().1.trim().to_owned()
}

#[test]
fn fingerprint_prints_the_signed_bytes() {
    let (files, _) = lix_narinfos();
    for (name, text) in &files {
        let out = reprolog(&["narinfo", "fingerprint", &lix_path(name)]);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            NarInfo::parse(text).unwrap().fingerprint()
        );
    }
}

#[test]
fn verify_accepts_the_lix_narinfos() {
    let (files, _) = lix_narinfos();
    let paths: Vec<String> = files.iter().map(|(n, _)| lix_path(n)).collect();
    let key = format!("other:{} {}", "A".repeat(43) + "=", lix_key());
    let mut args = vec!["narinfo", "verify", "--trusted-public-keys", &key];
    args.extend(paths.iter().map(String::as_str));
    let out = reprolog(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches(": ok").count(), 5);
    assert_eq!(stdout.matches("valid      cache.lix.systems").count(), 5);
}

#[test]
fn verify_reports_untrusted_invalid_and_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = lix_narinfos();
    let (name, text) = &files[0];
    let good = lix_path(name);

    // A trusted key of another name: the lix signature is untrusted.
    let other_key = format!("other:{}", "A".repeat(43) + "=");
    let out = reprolog(&[
        "narinfo",
        "verify",
        "--trusted-public-keys",
        &other_key,
        &good,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("untrusted  cache.lix.systems"));

    // A changed NarSize: the signature is invalid.
    let changed = dir.path().join("changed.narinfo");
    let size_line = text.lines().find(|l| l.starts_with("NarSize: ")).unwrap();
    std::fs::write(&changed, text.replace(size_line, &format!("{size_line}1"))).unwrap();
    let changed = changed.to_string_lossy().into_owned();
    let out = reprolog(&[
        "narinfo",
        "verify",
        "--trusted-public-keys",
        &lix_key(),
        &good,
        &changed,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{good}: ok")));
    assert!(stdout.contains(&format!("{changed}: FAILED")));
    assert!(stdout.contains("invalid    cache.lix.systems"));

    // A malformed file: the message names the file and the line.
    let broken = dir.path().join("broken.narinfo");
    std::fs::write(
        &broken,
        text.replacen("NarHash: sha256:", "NarHash: sha256:!", 1),
    )
    .unwrap();
    let out = reprolog(&[
        "narinfo",
        "verify",
        "--trusted-public-keys",
        &lix_key(),
        broken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let nar_hash_line = text.lines().position(|l| l.starts_with("NarHash")).unwrap() + 1;
    assert!(
        stderr.contains(&format!(
            "{}: line {nar_hash_line}: NarHash",
            broken.display()
        )),
        "{stderr}"
    );

    // A bad key list is an error, not a silent "untrusted".
    let out = reprolog(&[
        "narinfo",
        "verify",
        "--trusted-public-keys",
        "nonsense",
        &good,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trusted-public-keys"));
}
