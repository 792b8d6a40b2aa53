//! The log's signing key: created on first start as `DIR/log.key` (mode 0600) with its
//! verifier key beside it in `DIR/log.vkey`. A key file readable by anyone else is refused.

use std::path::Path;

use anyhow::{Context, Result};
use reprolog_verifier::keyfile;
use reprolog_verifier::note::SignerKey;

/// Loads `DIR/log.key`, or creates it. Returns the key and whether it was created.
pub fn load_or_create(dir: &Path, origin: Option<&str>) -> Result<(SignerKey, bool)> {
    let (key, created) = keyfile::load_or_create(&dir.join("log.key"), origin, || {
        keyfile::random_name("localhost/reprolog-")
    })
    .map_err(|e| match e {
        keyfile::KeyFileError::WrongName { found, wanted, .. } => {
            anyhow::anyhow!("--origin {wanted} does not match the log's origin {found} in log.key")
        }
        other => other.into(),
    })?;
    keyfile::replace_public(
        &dir.join("log.vkey"),
        &(key.verifier_key().to_string() + "\n"),
    )
    .context("writing log.vkey")?;
    Ok((key, created))
}
