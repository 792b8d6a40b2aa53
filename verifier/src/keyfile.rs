//! Files of a server's data directory (feature `server`): secret keys created with mode 0600
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
    /// Another process holds the data directory's lock.
    #[error("{} is in use by another {program} (pid {pid})", dir.display())]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The program that locks it (ours: the holder is another one of us).
        program: String,
        /// The pid the holder wrote into the lock file, or `unknown`.
        pid: String,
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

/// Holds a data directory's lock until dropped (at exit).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Locks data directory `dir` for `program`, or says which process holds it: `DATA/lock`
/// holds an exclusive lock and the holder's pid while it runs. Two processes on one store
/// would interleave appends and corrupt it, and sled's own lock only says so in terms of
/// sled files, after keys and other files were touched. The kernel drops the lock when the
/// process dies however it dies, so a crash never leaves the directory locked; the pid left
/// in the file is then stale and harmless.
pub fn lock_data_dir(dir: &Path, program: &str) -> Result<DataDirLock, KeyFileError> {
    use std::fs::TryLockError;
    use std::os::unix::fs::FileExt;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        // A link planted here must not make us write a pid into another file.
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(KeyFileError::InUse {
                dir: dir.to_owned(),
                program: program.to_owned(),
                pid: lock_holder(&file),
            })
        }
        Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        .map_err(io(&path))?;
    Ok(DataDirLock { _file: file })
}

/// The pid the holder wrote. It writes just after locking, so an empty file is read again
/// for a moment before giving up.
fn lock_holder(mut file: &std::fs::File) -> String {
    use std::io::{Read, Seek};
    for _ in 0..20 {
        let mut text = String::new();
        if file.read_to_string(&mut text).is_ok() {
            let pid = text.trim();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                return pid.to_owned();
            }
        }
        let _ = file.rewind();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    "unknown".to_owned()
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
    #[test]
    fn a_second_lock_names_the_holder_and_a_released_one_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let held = super::lock_data_dir(dir.path(), "reprolog-server").unwrap();
        let err = super::lock_data_dir(dir.path(), "reprolog-server")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{} is in use by another reprolog-server (pid {})",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(held);
        assert!(super::lock_data_dir(dir.path(), "reprolog-server").is_ok());
    }

    #[test]
    fn a_link_in_place_of_the_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(&victim, data.join("lock")).unwrap();
        assert!(super::lock_data_dir(&data, "reprolog-server").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }

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
