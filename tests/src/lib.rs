//! Helpers for the end-to-end tests: the shared test data, and real Nix (`nix-bin`) driven
//! as a client, offline and without a daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/testdata` beside the repository, or `$REPROLOG_TESTDATA`.
pub fn testdata() -> PathBuf {
    std::env::var_os("REPROLOG_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"))
}

/// A `nix` command with the nix-command feature on and no substituters.
pub fn nix(args: &[&str]) -> Command {
    let mut c = Command::new("nix");
    c.args([
        "--extra-experimental-features",
        "nix-command",
        "--option",
        "substituters",
        "",
    ]);
    c.args(args);
    c
}

/// Runs a command and returns its output, failing the test with its stderr if it fails.
pub fn run_ok(mut c: Command) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("running {c:?}: {e}; is nix-bin installed (README)?"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds two tiny input-addressed derivations, `top` referring to `dep`, with a `tag` in their
/// names so tests do not share outputs. Returns (dep, top) store paths.
pub fn build_pair(dir: &Path, tag: &str) -> (String, String) {
    let expr = format!(
        r#"rec {{
  dep = derivation {{ name = "reprolog-{tag}-dep"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "echo {tag} > $out" ]; }};
  top = derivation {{ name = "reprolog-{tag}-top"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "echo ${{dep}} > $out" ]; }};
}}"#
    );
    let file = dir.join("pair.nix");
    std::fs::write(&file, expr).unwrap();
    let mut c = Command::new("nix-build");
    c.arg(&file)
        .args(["-A", "top", "--no-out-link", "--option", "substituters", ""])
        .args(["--option", "sandbox", "false"]);
    let top = stdout(&run_ok(c));
    let refs = stdout(&run_ok({
        let mut c = Command::new("nix-store");
        c.args(["--query", "--references", &top]);
        c
    }));
    (refs, top)
}

/// The narinfo file of a store path in a `file://` cache directory.
pub fn narinfo_path(cache: &Path, store_path: &str) -> PathBuf {
    let base = store_path.rsplit('/').next().unwrap_or_default();
    cache.join(format!("{}.narinfo", &base[..32]))
}
