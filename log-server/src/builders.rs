//! The builders file: the operator's list of builder keys allowed to append, one Nix public
//! key (`name:base64`) a line, `#` comments. It is re-read when the file changes and on
//! SIGHUP, and reaches the log's registry as key events (`crate::registry`): a key it lists
//! is registered, a key it no longer lists is unregistered. Keys a builder rotated to are in
//! the log's registry without being listed here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use reprolog_verifier::keyfile;
use reprolog_verifier::nix::NixPublicKey;

use reprolog_verifier::locks;

const TEMPLATE: &str = "\
# Builder keys allowed to append to this log: one Nix public key (name:base64) a line,
# as `nix key convert-secret-to-public` prints it. Changes apply without a restart, as
# key-register and key-unregister entries in the log. A builder's rotation to a new key
# needs no change here (see `reprolog keys rotate`).
";

#[derive(Default)]
pub struct Registry {
    pub keys: Vec<NixPublicKey>,
}

impl Registry {
    pub fn parse(text: &str) -> Result<Self> {
        let mut keys: Vec<NixPublicKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let key = NixPublicKey::parse(line).with_context(|| format!("line {}", i + 1))?;
            if key.key.is_weak() {
                bail!("line {}: {} is a weak (small-order) key", i + 1, key.name);
            }
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(Registry { keys })
    }
}

/// What tells one version of the file from another: a write changes the modification time
/// or length, a `chmod` the change time, a replacement by rename the inode.
type Stamp = (SystemTime, i64, i64, u64, u64);

/// The registry file and its current contents.
pub struct Builders {
    path: PathBuf,
    current: RwLock<Arc<Registry>>,
    /// The version of the file last read, whether it was accepted or not, so that a broken
    /// file is reported once per change rather than at every look.
    stamp: Mutex<Option<Stamp>>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.modified().ok()?,
        m.ctime(),
        m.ctime_nsec(),
        m.len(),
        m.ino(),
    ))
}

impl Builders {
    /// Loads the file, creating it with a comment header if it does not exist.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            keyfile::write_new(path, TEMPLATE, 0o644)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let b = Builders {
            path: path.to_owned(),
            current: RwLock::new(Arc::default()),
            stamp: Mutex::new(None),
        };
        b.reload()?;
        Ok(b)
    }

    /// The registry in force. A poisoned lock stops the server (see [`reprolog_verifier::locks`]): an
    /// empty registry in its place would refuse every builder with no word why.
    pub fn current(&self) -> Arc<Registry> {
        Arc::clone(&locks::read(&self.current))
    }

    /// Re-reads the file. On error the previous registry stays in force. A file that others
    /// may write to is refused: it decides who may append.
    pub fn reload(&self) -> Result<usize> {
        let before = stamp(&self.path);
        *locks::lock(&self.stamp) = before;
        keyfile::check_not_writable_by_others(&self.path)?;
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let registry =
            Registry::parse(&text).with_context(|| format!("{}", self.path.display()))?;
        let n = registry.keys.len();
        *locks::write(&self.current) = Arc::new(registry);
        Ok(n)
    }

    /// Reloads when the file's modification time or length changed.
    pub fn reload_if_changed(&self) -> Option<Result<usize>> {
        let now = stamp(&self.path);
        let changed = *locks::lock(&self.stamp) != now;
        changed.then(|| self.reload())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "builder-1:BqhvKVxd1hLVdYAs+GNDSchu8X4j6RPyHL6u1Z3XQqs=";

    #[test]
    fn a_broken_file_is_reported_once_per_change_and_the_old_list_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("builders");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        let b = Builders::load(&path).unwrap();
        assert_eq!(b.reload_if_changed().map(|r| r.is_ok()), None);

        std::fs::write(&path, "not a key, longer than before\n").unwrap();
        assert!(matches!(b.reload_if_changed(), Some(Err(_))));
        assert!(
            b.reload_if_changed().is_none(),
            "reported again without a change"
        );
        assert_eq!(b.current().keys.len(), 1, "the old list stays in force");

        // Writable by others: refused, since it decides who may append.
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = b.reload_if_changed().unwrap().unwrap_err();
        assert!(format!("{err:#}").contains("lets others write"), "{err:#}");
        assert!(b.reload_if_changed().is_none());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(b.reload_if_changed().unwrap().unwrap(), 1);
    }

    /// After a panic while the registry lock is held, the server stops and says why; it never
    /// answers from an empty registry. Stopping is an abort, so the test runs itself again as
    /// a child process and watches it.
    #[test]
    fn a_poisoned_registry_lock_stops_the_server_rather_than_empty_the_registry() {
        use std::os::unix::process::ExitStatusExt;
        const CHILD: &str = "REPROLOG_TEST_POISON_THE_REGISTRY";
        if std::env::var_os(CHILD).is_some() {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("builders");
            std::fs::write(&path, format!("{KEY}\n")).unwrap();
            let b = Arc::new(Builders::load(&path).unwrap());
            let holder = Arc::clone(&b);
            let _ = std::thread::spawn(move || {
                let _held = holder.current.write().unwrap();
                panic!("a bug while the registry lock is held");
            })
            .join();
            assert!(b.current.is_poisoned());
            println!(
                "answered from a registry of {} keys",
                b.current().keys.len()
            );
            return;
        }
        let name = "a_poisoned_registry_lock_stops_the_server_rather_than_empty_the_registry";
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("builders::tests::{name}"),
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr),
        );
        assert!(stdout.contains("1 test"), "the child ran no test: {stdout}");
        assert!(!stdout.contains("answered from a registry"), "{stdout}");
        assert_eq!(
            child.status.signal(),
            Some(libc::SIGABRT),
            "{stdout}{stderr}"
        );
        assert!(
            stderr.contains("a lock was poisoned by a panic; stopping")
                && stderr.contains("builders.rs"),
            "{stderr}"
        );
    }
}
