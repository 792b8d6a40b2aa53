//! Secret key files for servers (feature `keyfile`): created with mode 0600, refused when
//! group or others may read them. The one part of this crate that touches the file system.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::note::{KeyError, SignerKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to use {path}: mode {mode:o} lets others read it; run chmod 600 on it")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} is not a C2SP signer key: {source}")]
    BadKey { path: PathBuf, source: KeyError },
    #[error("the key in {path} is named {found}, not {wanted}")]
    WrongName {
        path: PathBuf,
        found: String,
        wanted: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Refuses a secret file that group or others can read or write.
pub fn check_private(path: &Path) -> Result<(), KeyFileError> {
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Writes a new secret file with mode 0600, failing if it exists.
pub fn write_private(path: &Path, contents: &str) -> Result<(), KeyFileError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Loads the signer key at `path`, or creates it named `name` (or `default_name()`). A given
/// `name` must match an existing key's. Returns the key and whether it was created.
pub fn load_or_create(
    path: &Path,
    name: Option<&str>,
    default_name: impl FnOnce() -> String,
) -> Result<(SignerKey, bool), KeyFileError> {
    if path.exists() {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let key = SignerKey::parse(text.trim()).map_err(|source| KeyFileError::BadKey {
            path: path.to_owned(),
            source,
        })?;
        if let Some(wanted) = name.filter(|n| *n != key.name()) {
            return Err(KeyFileError::WrongName {
                path: path.to_owned(),
                found: key.name().to_owned(),
                wanted: wanted.to_owned(),
            });
        }
        return Ok((key, false));
    }
    let name = name.map_or_else(default_name, str::to_owned);
    let key = SignerKey::generate(&name).map_err(|source| KeyFileError::BadKey {
        path: path.to_owned(),
        source,
    })?;
    write_private(path, &(key.to_secret_string() + "\n"))?;
    Ok((key, true))
}

/// A name with a random suffix, so that two default-configured servers never share one.
pub fn random_name(prefix: &str) -> String {
    let mut b = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    format!("{prefix}{:08x}", u32::from_be_bytes(b))
}
