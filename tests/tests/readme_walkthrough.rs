//! The README's walkthrough, Witnesses and gate blocks, run exactly as written, in an empty
//! directory, with real Nix and the workspace's binaries first on PATH. Run under `bash -eu -o
//! pipefail`, so that any step that fails fails the test, not only the final verdicts.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use reprolog_tests::workspace_bin;

/// The first ```sh block after `marker` in the README.
fn block_after(readme: &str, marker: &str) -> String {
    let (_, rest) = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let (_, rest) = rest
        .split_once("```sh\n")
        .expect("a sh block after the marker");
    let (block, _) = rest.split_once("\n```").expect("the block ends");
    block.to_owned()
}

#[test]
fn the_readme_walkthrough_runs_as_written_and_finds_the_unreproduced_path() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let script = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        block_after(&readme, "<!-- walkthrough -->"),
        block_after(&readme, "<!-- witnesses -->"),
        block_after(&readme, "<!-- gate -->"),
        block_after(&readme, "<!-- keys -->"),
        block_after(&readme, "<!-- explorer -->")
    );
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = workspace_bin("reprolog").parent().unwrap().to_owned();
    // The walkthrough asks for these three binaries; make sure they were all built.
    for bin in [
        "reprolog-server",
        "reprolog-witness",
        "reprolog-gate",
        "reprolog-explorer",
    ] {
        workspace_bin(bin);
    }
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new("bash")
        .args(["-eu", "-o", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("XDG_STATE_HOME", dir.path().join("state"))
        // Nix remembers narinfos per substituter URL: the gate's fixed URL must not bring
        // back what an earlier run's gate (another key) served.
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that the servers it starts in the background are stopped
        // with it even when a step fails.
        .process_group(0)
        .spawn()
        .unwrap();
    let group = format!("-{}", child.id());
    let out = child.wait_with_output().unwrap();
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!(
        "{stdout}\n--- stderr ---\n{}\n--- server.out ---\n{}\n--- witness.out ---\n{}\n--- gate.out ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("server.out")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("witness.out")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("gate.out")).unwrap_or_default(),
    ) + "\n--- explorer.out ---\n"
        + &std::fs::read_to_string(dir.path().join("explorer.out")).unwrap_or_default();
    assert!(out.status.success(), "the walkthrough failed:\n{all}");

    // Both builders' signatures were logged: two paths each.
    assert!(
        stdout.contains("logged 4, duplicate 0, ignored 0, failed 0"),
        "{all}"
    );
    // The honest verdicts: the same bytes for hello, different ones for stamp.
    let hello = stdout
        .lines()
        .find(|l| l.contains("-hello-reprolog:"))
        .unwrap_or_else(|| panic!("no verdict for hello:\n{all}"));
    assert!(hello.ends_with(": reproduced"), "{all}");
    let stamp = stdout
        .lines()
        .find(|l| l.contains("-stamp-reprolog:"))
        .unwrap_or_else(|| panic!("no verdict for stamp:\n{all}"));
    assert!(stamp.ends_with(": unreproduced"), "{all}");
    assert!(stdout.contains("compare exit code: 2"), "{all}");
    // The witnessed checkpoint satisfies a client that requires the witness.
    assert!(stdout.contains("cosigned by  w1"), "{all}");
    assert!(stdout.contains("cosigned by w1"), "the monitor: {all}");
    // The gate: hello substituted under its key, stamp refused with the reason.
    assert!(
        stdout.contains("x-reprolog-reason: conflict: trusted builders logged 2 different claims"),
        "{all}"
    );
    // The rotation: builder-1's new key re-signed both paths, and hello is still reproduced
    // by two builders; then builder-2's revocation left its earlier signatures valid.
    assert!(
        stdout.contains("rotated builder-1 to builder-1-v2"),
        "{all}"
    );
    assert!(stdout.contains("logged 2, duplicate 2"), "{all}");
    let hello_again = stdout
        .lines()
        .filter(|l| l.contains("-hello-reprolog:"))
        .nth(1)
        .unwrap_or_else(|| panic!("no second verdict for hello:\n{all}"));
    assert!(hello_again.ends_with(": reproduced"), "{all}");
    assert!(
        stdout.contains("key builder-1-v2"),
        "the re-signature: {all}"
    );
    assert_eq!(stdout.matches("compare exit code: 2").count(), 2, "{all}");
    assert!(stdout.contains("revoked builder-2 as of index"), "{all}");
    assert!(
        stdout.contains("key-rotate") && stdout.contains("key-revoke"),
        "{all}"
    );
    // The explorer: the closure's report counts stamp alone as unreproduced, and the two
    // builders agree on one path of two.
    assert!(stdout.contains(r#""unreproduced":1"#), "the report: {all}");
    assert!(
        stdout.contains(r#""common":2,"agree":1,"disagree":1"#),
        "the agreement: {all}"
    );
    // The dashboard's overview, as plain HTML, counts the unreproduced path.
    assert!(
        stdout.contains(r#"id="total-unreproduced">"#)
            && !stdout.contains(r#"id="total-unreproduced">0"#),
        "the dashboard: {all}"
    );
    // Builder keys are private.
    for b in ["builder-1", "builder-2", "builder-1-v2"] {
        let mode = std::fs::metadata(dir.path().join(format!("{b}.sec")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{b}.sec");
    }
}
