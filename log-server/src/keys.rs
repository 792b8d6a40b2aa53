//! The log's signing key: created on first start as `DIR/log.key` (mode 0600) with its
//! verifier key beside it in `DIR/log.vkey`. A key file readable by anyone else is refused.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use reprolog_verifier::note::SignerKey;

/// Refuses a secret file that group or others can read or write.
pub fn check_private(path: &Path) -> Result<()> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "refusing to use {}: mode {:o} lets others read it; run chmod 600 on it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

/// Writes a new secret file with mode 0600, failing if it exists.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// A fresh origin, unique so that two default logs are never mistaken for one another.
fn default_origin() -> String {
    let probe = SignerKey::generate("probe")
        .map(|k| k.key_id())
        .unwrap_or_default();
    format!("localhost/reprolog-{probe:08x}")
}

/// Loads `DIR/log.key`, or creates it. Returns the key and whether it was created.
pub fn load_or_create(dir: &Path, origin: Option<&str>) -> Result<(SignerKey, bool)> {
    let path = dir.join("log.key");
    let (key, created) = if path.exists() {
        check_private(&path)?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let key = SignerKey::parse(text.trim())
            .with_context(|| format!("{} is not a C2SP signer key", path.display()))?;
        if let Some(o) = origin.filter(|o| *o != key.name()) {
            bail!(
                "--origin {o} does not match the log's origin {} in {}",
                key.name(),
                path.display()
            );
        }
        (key, false)
    } else {
        let origin = origin.map_or_else(default_origin, str::to_owned);
        let key = SignerKey::generate(&origin).with_context(|| format!("origin {origin:?}"))?;
        write_private(&path, &(key.to_secret_string() + "\n"))?;
        (key, true)
    };
    std::fs::write(dir.join("log.vkey"), key.verifier_key().to_string() + "\n")?;
    Ok((key, created))
}
