//! The binary caches the gate serves from (`--upstream`, tried in order): `file://`
//! directories and `http(s)://` caches. Reads are blocking (tokio's blocking pool) and
//! size-limited; a NAR is opened as a reader and streamed, never held whole.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use reprolog_verifier::text::printable;

use crate::log::transport;

/// narinfo files are small; anything larger is not one.
pub const MAX_NARINFO_BYTES: u64 = 1 << 20;
/// The longest NAR URL the gate passes on.
const MAX_URL_LEN: usize = 1024;

/// One upstream binary cache.
pub enum Upstream {
    /// A `file://` cache directory.
    Dir { url: String, dir: PathBuf },
    /// An `http://` or `https://` cache.
    Http { url: String, agent: ureq::Agent },
}

/// A file of an upstream opened for reading, with its length when known.
pub type Opened = (Box<dyn Read + Send>, Option<u64>);

/// What came of asking an upstream for a file.
pub enum Fetched<T> {
    Found(T),
    NotFound,
}

impl Upstream {
    /// Parses `file:///dir` (an existing directory; a `?query` as Nix store URLs have is
    /// ignored) or `http(s)://host[/path]`.
    pub fn parse(url: &str, timeout: Duration) -> Result<Self> {
        if let Some(rest) = url.strip_prefix("file://") {
            let path = rest.split('?').next().unwrap_or_default();
            if !path.starts_with('/') {
                bail!(
                    "--upstream {}: a file:// URL names an absolute directory, file:///dir",
                    printable(url)
                );
            }
            let dir = PathBuf::from(path);
            if !dir.is_dir() {
                bail!(
                    "--upstream {}: {} is not a directory",
                    printable(url),
                    dir.display()
                );
            }
            return Ok(Upstream::Dir {
                url: url.to_owned(),
                dir,
            });
        }
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(Upstream::Http {
                url: url.trim_end_matches('/').to_owned(),
                agent: ureq::AgentBuilder::new().timeout(timeout).build(),
            }),
            _ => bail!(
                "--upstream {}: an upstream is file:///dir or http(s)://host",
                printable(url)
            ),
        }
    }

    /// The URL as given, for logs and metric labels.
    pub fn url(&self) -> &str {
        match self {
            Upstream::Dir { url, .. } | Upstream::Http { url, .. } => url,
        }
    }

    /// `<hash>.narinfo`, at most [`MAX_NARINFO_BYTES`] (blocking).
    pub fn narinfo(&self, hash_part: &str) -> Result<Fetched<String>, String> {
        let name = format!("{hash_part}.narinfo");
        let Fetched::Found((reader, _)) = self.open(&name)? else {
            return Ok(Fetched::NotFound);
        };
        let mut body = Vec::new();
        reader
            .take(MAX_NARINFO_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading {name}: {e}"))?;
        if body.len() as u64 > MAX_NARINFO_BYTES {
            return Err(format!("{name} is over {MAX_NARINFO_BYTES} bytes"));
        }
        String::from_utf8(body)
            .map(Fetched::Found)
            .map_err(|_| format!("{name} is not UTF-8"))
    }

    /// Opens a file of the cache for streaming: a reader and its length when known
    /// (blocking). `rest` must be a [`safe_relative`] path.
    pub fn open(&self, rest: &str) -> Result<Fetched<Opened>, String> {
        if !safe_relative(rest) {
            return Err(format!(
                "{} is not a relative path in the cache",
                printable(rest)
            ));
        }
        match self {
            Upstream::Dir { dir, .. } => {
                let path = dir.join(rest);
                match std::fs::File::open(&path) {
                    Ok(f) => {
                        let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
                        if len.is_none() {
                            return Ok(Fetched::NotFound);
                        }
                        Ok(Fetched::Found((Box::new(f), len)))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Fetched::NotFound),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                }
            }
            Upstream::Http { url, agent } => {
                let full = format!("{url}/{rest}");
                match agent.get(&full).call() {
                    Ok(r) => {
                        let len = r.header("Content-Length").and_then(|l| l.parse().ok());
                        Ok(Fetched::Found((Box::new(r.into_reader()), len)))
                    }
                    Err(ureq::Error::Status(404 | 403, _)) => Ok(Fetched::NotFound),
                    Err(ureq::Error::Status(status, _)) => {
                        Err(format!("{}: HTTP {status}", printable(&full)))
                    }
                    Err(ureq::Error::Transport(t)) => {
                        Err(format!("{}: {}", printable(&full), transport(&t)))
                    }
                }
            }
        }
    }
}

/// Whether `path` is a relative path of plain names (letters, digits, `.`, `_`, `+`, `-`,
/// `=`), none `.` or `..`: the only NAR URLs the gate rewrites and serves, so that no URL
/// can reach outside an upstream.
pub fn safe_relative(path: &str) -> bool {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._+-=".contains(c);
    !path.is_empty()
        && path.len() <= MAX_URL_LEN
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg.chars().all(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_served() {
        for ok in [
            "nar/1abc.nar",
            "nar/1abc.nar.xz",
            "x.narinfo",
            "a/b/c_d+e=f",
        ] {
            assert!(safe_relative(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "nar/../../etc/passwd",
            "nar/./x",
            "nar//x",
            "nar/x/",
            "http://evil/x",
            "nar/x?y",
            "nar/%2e%2e/x",
            "nar/x y",
        ] {
            assert!(!safe_relative(bad), "{bad}");
        }
    }

    #[test]
    fn a_file_upstream_reads_its_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.narinfo"), "hello").unwrap();
        let url = format!("file://{}?compression=none", dir.path().display());
        let u = Upstream::parse(&url, Duration::from_secs(1)).unwrap();
        assert!(matches!(u.narinfo("x"), Ok(Fetched::Found(t)) if t == "hello"));
        assert!(matches!(u.narinfo("y"), Ok(Fetched::NotFound)));
        assert!(u.open("../x.narinfo").is_err());
        assert!(Upstream::parse("file://relative", Duration::from_secs(1)).is_err());
        assert!(Upstream::parse("ftp://host", Duration::from_secs(1)).is_err());
    }
}
