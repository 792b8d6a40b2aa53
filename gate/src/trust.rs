//! The trust file in force (`spec/gate.md`; parsed by `verifier::decision::Trust::parse`),
//! re-read when it changes and on SIGHUP. A broken edit keeps the last good trust and is
//! reported once per change of the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use reprolog_verifier::decision::{OnConflict, Trust};
use reprolog_verifier::keyfile;
use reprolog_verifier::locks;

/// A trust file is a few lines per builder; anything this large is not one.
const MAX_TRUST_BYTES: u64 = 1 << 20;

/// A trust file as accepted, with a generation that changes whenever the trust does, so that
/// decisions made under another trust are not reused.
pub struct Loaded {
    pub trust: Trust,
    pub generation: u64,
}

impl Loaded {
    /// The trust in a few words, for the start and reload lines.
    pub fn summary(&self) -> String {
        let mode = match self.trust.on_conflict {
            OnConflict::Deny => "deny",
            OnConflict::Majority => "majority",
        };
        format!(
            "{} builders, quorum {}, on-conflict {mode}",
            self.trust.builders.len(),
            self.trust.quorum
        )
    }
}

/// What tells one version of the file from another: a write changes the modification time
/// or length, a `chmod` the change time, a replacement by rename the inode.
type Stamp = (SystemTime, i64, i64, u64, u64);

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

/// The trust file and the trust in force.
pub struct TrustFile {
    path: PathBuf,
    current: RwLock<Arc<Loaded>>,
    /// The version of the file last read, accepted or not, so that a broken file is reported
    /// once per change rather than every second.
    stamp: Mutex<Option<Stamp>>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The file parsed and says something new.
    Changed,
    /// The file parsed and says what the trust in force says.
    Same,
}

impl TrustFile {
    /// Reads the file; an error names the line and the reason.
    pub fn load(path: &Path) -> Result<Self> {
        let trust = read(path)?;
        Ok(TrustFile {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(Loaded {
                trust,
                generation: 1,
            })),
            stamp: Mutex::new(stamp(path)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trust in force.
    pub fn current(&self) -> Arc<Loaded> {
        Arc::clone(&locks::read(&self.current))
    }

    /// Reads the file again. On error the trust in force stays.
    pub fn reload(&self) -> Result<Reloaded> {
        *locks::lock(&self.stamp) = stamp(&self.path);
        let trust = read(&self.path)?;
        let mut current = locks::write(&self.current);
        if current.trust == trust {
            return Ok(Reloaded::Same);
        }
        let generation = current.generation + 1;
        *current = Arc::new(Loaded { trust, generation });
        Ok(Reloaded::Changed)
    }

    /// Reloads when the file changed since it was last read.
    pub fn reload_if_changed(&self) -> Option<Result<Reloaded>> {
        let now = stamp(&self.path);
        let changed = *locks::lock(&self.stamp) != now;
        changed.then(|| self.reload())
    }
}

/// Reads and parses a trust file. One that others may write to is refused: it decides what
/// Nix will substitute.
fn read(path: &Path) -> Result<Trust> {
    keyfile::check_not_writable_by_others(path)?;
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_TRUST_BYTES {
        bail!(
            "{}: {len} bytes is over the {MAX_TRUST_BYTES}-byte limit",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (it must be UTF-8)", path.display()))?;
    Trust::parse(&text).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const A: &str = "builder-1:BqhvKVxd1hLVdYAs+GNDSchu8X4j6RPyHL6u1Z3XQqs=";

    #[test]
    fn a_broken_edit_keeps_the_last_good_trust_and_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust");
        std::fs::write(&path, format!("builder one {A}\nquorum 1\n")).unwrap();
        let t = TrustFile::load(&path).unwrap();
        assert_eq!(t.current().generation, 1);
        assert!(t.reload_if_changed().is_none());

        std::fs::write(&path, format!("builder one {A}\nquorum 2\n")).unwrap();
        let err = t.reload_if_changed().unwrap().unwrap_err();
        assert!(
            format!("{err:#}").contains("line 2: quorum 2 is more than"),
            "{err:#}"
        );
        assert!(t.reload_if_changed().is_none(), "reported again");
        assert_eq!(t.current().trust.quorum, 1, "the last good trust stays");

        std::fs::write(&path, format!("# same trust\nbuilder one {A}\nquorum 1\n")).unwrap();
        assert_eq!(t.reload_if_changed().unwrap().unwrap(), Reloaded::Same);
        assert_eq!(t.current().generation, 1);
        std::fs::write(&path, format!("builder uno {A}\nquorum 1\n")).unwrap();
        assert_eq!(t.reload().unwrap(), Reloaded::Changed);
        assert_eq!(t.current().generation, 2);
        assert_eq!(t.current().trust.builders[0].label, "uno");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = t.reload().unwrap_err();
        assert!(format!("{err:#}").contains("lets others write"), "{err:#}");
    }

    #[test]
    fn a_malformed_file_fails_the_start_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust");
        std::fs::write(&path, format!("builder one {A}\nquorum 1\ntrust all\n")).unwrap();
        let err = TrustFile::load(&path).err().unwrap();
        assert!(format!("{err:#}").contains("line 3:"), "{err:#}");
    }
}
