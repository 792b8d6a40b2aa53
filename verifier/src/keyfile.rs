//! Files of a server's data directory (feature `keyfile`): secret keys created with mode 0600
//! and refused when group or others may read them; public files written without following
//! symbolic links; a data directory refused when others may write to it (whoever can write
//! there could plant a symbolic link that redirects the server's writes). The one part of
//! this crate that touches the file system.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::note::{KeyError, SignerKey};

/// Why a file of the data directory was refused or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The operating system refused a read, a write or a look at the file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error the operating system gave.
        source: std::io::Error,
    },
    /// A secret file that group or others may read or write.
    #[error("refusing to use {path}: mode {mode:o} lets others read it; run chmod 600 on it")]
    TooOpen {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits (the low 9 bits of its mode).
        mode: u32,
    },
    /// A file or directory that others may write to.
    #[error("refusing to use {path}: mode {mode:o} lets others write to it; run chmod o-w on it")]
    WritableByOthers {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits (the low 9 bits of its mode).
        mode: u32,
    },
    /// A key file that does not hold a C2SP signer key.
    #[error("{path} is not a C2SP signer key: {source}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why its contents are not a key.
        source: KeyError,
    },
    /// A key file holding a key of another name than the one asked for.
    #[error("the key in {path} is named {found}, not {wanted}")]
    WrongName {
        /// The key file.
        path: PathBuf,
        /// The name of the key in the file.
        found: String,
        /// The name the caller asked for.
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

/// Refuses a file or directory that others (not only its owner and group) may write to.
pub fn check_not_writable_by_others(path: &Path) -> Result<(), KeyFileError> {
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o002 != 0 {
        return Err(KeyFileError::WritableByOthers {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Creates a data directory (mode 0700 for what it creates) or checks an existing one: it
/// must not be writable by others.
pub fn prepare_data_dir(dir: &Path) -> Result<(), KeyFileError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    check_not_writable_by_others(dir)
}

/// Writes a new file with `mode`, failing if anything (a symbolic link too) is at `path`.
pub fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), KeyFileError> {
    // O_CREAT | O_EXCL never follows a symbolic link: an existing one fails the call.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Writes a new secret file with mode 0600, failing if it exists.
pub fn write_private(path: &Path, contents: &str) -> Result<(), KeyFileError> {
    write_new(path, contents, 0o600)
}

/// Replaces the file at `path` with `contents` (mode 0644): written to a new file beside it,
/// then renamed over it. A symbolic link at `path` is replaced, never followed.
pub fn replace_public(path: &Path, contents: &str) -> Result<(), KeyFileError> {
    let tmp = path.with_extension(format!("tmp-{}", random_name("")));
    write_new(&tmp, contents, 0o644)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn writes_never_follow_symbolic_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("log.vkey");
        symlink(&victim, &link).unwrap();
        replace_public(&link, "public\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "public\n");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());

        let link = dir.path().join("builders");
        symlink(&victim, &link).unwrap();
        assert!(write_new(&link, "x", 0o644).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn data_directories_writable_by_others_are_refused() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        prepare_data_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = prepare_data_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("lets others write") && err.contains("1777"),
            "{err}"
        );
    }
}
