//! A blocking HTTP client for one log, with a timeout and a size limit on every answer. What
//! it returns is unverified; the follower verifies everything.

use std::io::Read;
use std::time::Duration;

use reprolog_verifier::text::printable;

/// An entry bundle is at most 256 entries of 64 KiB; everything else is far smaller.
const MAX_ANSWER_BYTES: u64 = 17 << 20;

/// The log at one base URL.
pub struct Fetcher {
    base: String,
    agent: ureq::Agent,
}

impl Fetcher {
    /// A client for `base_url` (`http://` or `https://`) whose requests give up after
    /// `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            anyhow::bail!(
                "the log URL {} does not start with http:// or https://",
                printable(base_url)
            );
        }
        Ok(Fetcher {
            base: base_url.trim_end_matches('/').to_owned(),
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The body of `GET base + path`, or what went wrong, in words.
    pub fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        let url = format!("{}{path}", self.base);
        let response = self.agent.get(&url).call().map_err(|e| match e {
            ureq::Error::Status(status, _) => format!("{url}: HTTP {status}"),
            ureq::Error::Transport(t) => format!("{url}: {t}"),
        })?;
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_ANSWER_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("{url}: reading the answer: {e}"))?;
        if body.len() as u64 > MAX_ANSWER_BYTES {
            return Err(format!(
                "{url}: the answer is over {MAX_ANSWER_BYTES} bytes"
            ));
        }
        Ok(body)
    }

    /// `GET base + path` as JSON of type `T`.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let body = self.get(path)?;
        serde_json::from_slice(&body).map_err(|e| format!("{}{path}: {e}", self.base))
    }
}
