//! One witness per data directory: `DATA/lock` holds an exclusive lock and the holder's pid
//! while a witness runs. A second witness on the same state must not start, and sled's own
//! lock error names sled files rather than the process in the way. The kernel drops the lock
//! when the process dies however it dies, so a crash never leaves the directory locked; the
//! pid left in the file is then stale and harmless.
//!
//! The same module is in the log server (`log-server/src/lock.rs`): two binaries share no
//! crate but the verifier, which does no I/O of this kind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Holds the lock until dropped (at exit).
pub struct DataLock {
    _file: File,
}

/// Locks `dir` for `program`, or says which process holds it.
pub fn lock(dir: &Path, program: &str) -> Result<DataLock> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        // A link planted here must not make us write a pid into another file.
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            bail!(
                "{} is in use by another {program} (pid {})",
                dir.display(),
                holder(&file)
            )
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(DataLock { _file: file })
}

/// The pid the holder wrote. It writes just after locking, so an empty file is read again
/// for a moment before giving up.
fn holder(mut file: &File) -> String {
    for _ in 0..20 {
        let mut text = String::new();
        if file.read_to_string(&mut text).is_ok() {
            let pid = text.trim();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                return pid.to_owned();
            }
        }
        let _ = std::io::Seek::rewind(&mut file);
        std::thread::sleep(Duration::from_millis(10));
    }
    "unknown".to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_lock_names_the_holder_and_a_released_one_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let held = super::lock(dir.path(), "reprolog-witness").unwrap();
        let err = super::lock(dir.path(), "reprolog-witness")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{} is in use by another reprolog-witness (pid {})",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(held);
        assert!(super::lock(dir.path(), "reprolog-witness").is_ok());
    }

    #[test]
    fn a_link_in_place_of_the_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(&victim, data.join("lock")).unwrap();
        assert!(super::lock(&data, "reprolog-witness").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }
}
