//! The registry of builder keys allowed to append: one Nix public key (`name:base64`) a line,
//! `#` comments. It is re-read when the file changes and on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use reprolog_verifier::nix::NixPublicKey;

const TEMPLATE: &str = "\
# Builder keys allowed to append to this log: one Nix public key (name:base64) a line,
# as `nix key convert-secret-to-public` prints it. Changes apply without a restart.
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

    /// The registered keys of a name (several during a key rotation).
    pub fn keys_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a NixPublicKey> {
        self.keys.iter().filter(move |k| k.name == name)
    }
}

/// The registry file and its current contents.
pub struct Builders {
    path: PathBuf,
    current: RwLock<Arc<Registry>>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Builders {
    /// Loads the file, creating it with a comment header if it does not exist.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            std::fs::write(path, TEMPLATE)
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

    pub fn current(&self) -> Arc<Registry> {
        self.current
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }

    /// Re-reads the file. On error the previous registry stays in force.
    pub fn reload(&self) -> Result<usize> {
        let before = stamp(&self.path);
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let registry =
            Registry::parse(&text).with_context(|| format!("{}", self.path.display()))?;
        let n = registry.keys.len();
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(registry);
        }
        if let Ok(mut s) = self.stamp.lock() {
            *s = before;
        }
        Ok(n)
    }

    /// Reloads when the file's modification time or length changed.
    pub fn reload_if_changed(&self) -> Option<Result<usize>> {
        let now = stamp(&self.path);
        let changed = self.stamp.lock().map(|s| *s != now).unwrap_or(false);
        changed.then(|| self.reload())
    }
}
