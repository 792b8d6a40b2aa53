//! The gate's own Nix signing key: `DATA/gate.sec` in the format of `nix key
//! generate-secret` (created exclusively with mode 0600, refused when looser) and
//! `DATA/gate.pub`, the public key with a trailing newline, as `trusted-public-keys` takes it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use reprolog_verifier::keyfile;
use reprolog_verifier::nix::NixSecretKey;

/// The key name when `--key-name` is not given.
pub const DEFAULT_KEY_NAME: &str = "reprolog-gate-1";

/// Loads `DATA/gate.sec`, or creates it named `name` (or [`DEFAULT_KEY_NAME`]); writes
/// `DATA/gate.pub` either way. A given `name` must match an existing key's. Returns the key
/// and whether it was created.
pub fn load_or_create(data: &Path, name: Option<&str>) -> Result<(NixSecretKey, bool)> {
    let path = data.join("gate.sec");
    let (key, created) = if path.exists() {
        keyfile::check_private(&path)?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let key = NixSecretKey::parse(text.trim()).with_context(|| {
            format!(
                "{} is not a Nix secret key (nix key generate-secret)",
                path.display()
            )
        })?;
        let found = key.public_key().name;
        if let Some(wanted) = name.filter(|n| *n != found) {
            bail!(
                "the key in {} is named {found}, not {wanted}",
                path.display()
            );
        }
        (key, false)
    } else {
        let name = name.unwrap_or(DEFAULT_KEY_NAME);
        if name.is_empty()
            || name.contains(|c: char| c == ':' || c.is_whitespace() || c.is_control())
        {
            bail!("--key-name {name:?}: a key name has no ':', white space or control character");
        }
        let key = NixSecretKey::generate(name);
        // As `nix key generate-secret` prints it: no newline.
        keyfile::write_private(&path, &key.to_secret_string())?;
        (key, true)
    };
    keyfile::replace_public(&data.join("gate.pub"), &format!("{}\n", key.public_key()))?;
    Ok((key, created))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_is_created_private_reused_and_refused_when_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let (key, created) = load_or_create(dir.path(), None).unwrap();
        assert!(created);
        let sec = dir.path().join("gate.sec");
        let mode = std::fs::metadata(&sec).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let public = std::fs::read_to_string(dir.path().join("gate.pub")).unwrap();
        assert_eq!(public, format!("{}\n", key.public_key()));
        assert!(public.starts_with("reprolog-gate-1:"));

        let (again, created) = load_or_create(dir.path(), Some("reprolog-gate-1")).unwrap();
        assert!(!created);
        assert_eq!(again.public_key(), key.public_key());
        let err = load_or_create(dir.path(), Some("other")).unwrap_err();
        assert!(format!("{err:#}").contains("not other"), "{err:#}");

        std::fs::set_permissions(&sec, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(dir.path(), None).unwrap_err();
        assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
    }
}
