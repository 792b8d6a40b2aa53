//! A blocking client for the log's HTTP API (`spec/api.md`), called from tokio's blocking
//! pool. Every answer is read with a size limit and a timeout; proofs and entries are returned
//! for the caller to verify, never trusted as they come.

use std::io::Read;
use std::time::Duration;

use reprolog_verifier::api::{
    decode_proof, ConsistencyProof, InclusionProof, KeyEventPage, PathPage,
};
use reprolog_verifier::merkle::Hash;
use reprolog_verifier::text::printable;

use crate::failure::Failure;

/// A checkpoint note, a proof or a path page is far smaller; a page holds at most about
/// 1 MiB of entries, which JSON about triples.
const MAX_ANSWER_BYTES: u64 = 8 << 20;

/// The log at one base URL.
pub struct LogClient {
    base: String,
    agent: ureq::Agent,
}

/// One GET's outcome: the body, or a 404, or a failure in words.
enum Got {
    Body(Vec<u8>),
    NotFound,
}

impl LogClient {
    /// A client for `base_url` (`http://` or `https://`) whose requests give up after
    /// `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let rest = base_url
            .strip_prefix("http://")
            .or_else(|| base_url.strip_prefix("https://"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--log {}: a log URL starts with http:// or https://",
                    printable(base_url)
                )
            })?;
        if rest.is_empty() || rest.starts_with('/') {
            anyhow::bail!("--log {}: no host", printable(base_url));
        }
        Ok(LogClient {
            base: base_url.trim_end_matches('/').to_owned(),
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn get(&self, path: &str) -> Result<Got, Failure> {
        let url = format!("{}{path}", self.base);
        let failed = |what: String| Failure::Log(format!("{}: {what}", printable(&url)));
        let response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Ok(Got::NotFound),
            Err(ureq::Error::Status(status, r)) => {
                let mut body = Vec::new();
                let _ = r.into_reader().take(512).read_to_end(&mut body);
                return Err(failed(format!(
                    "HTTP {status}: {}",
                    printable(String::from_utf8_lossy(&body).trim())
                )));
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(failed(format!("the log is unreachable: {}", transport(&t))))
            }
        };
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_ANSWER_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| failed(format!("reading the answer: {e}")))?;
        if body.len() as u64 > MAX_ANSWER_BYTES {
            return Err(failed(format!(
                "the answer is over {MAX_ANSWER_BYTES} bytes"
            )));
        }
        Ok(Got::Body(body))
    }

    fn get_body(&self, path: &str) -> Result<Vec<u8>, Failure> {
        match self.get(path)? {
            Got::Body(b) => Ok(b),
            Got::NotFound => Err(Failure::Log(format!(
                "{}{path}: HTTP 404",
                printable(&self.base)
            ))),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, Failure> {
        serde_json::from_slice(body).map_err(|e| {
            Failure::Log(format!(
                "{}{path}: not an answer of the log API: {}",
                printable(&self.base),
                printable(&e.to_string())
            ))
        })
    }

    /// The signed checkpoint note, unverified.
    pub fn checkpoint(&self) -> Result<Vec<u8>, Failure> {
        self.get_body("/checkpoint")
    }

    /// A consistency proof between two tree sizes, unverified.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, Failure> {
        let path = format!("/api/v1/proof/consistency?old={old}&new={new}");
        let answer: ConsistencyProof = self.json(&path, &self.get_body(&path)?)?;
        self.hashes(&path, &answer.proof)
    }

    /// An inclusion proof, unverified.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Failure> {
        let path = format!("/api/v1/proof/inclusion?index={index}&size={size}");
        let answer: InclusionProof = self.json(&path, &self.get_body(&path)?)?;
        self.hashes(&path, &answer.proof)
    }

    fn hashes(&self, path: &str, proof: &[String]) -> Result<Vec<Hash>, Failure> {
        decode_proof(proof).ok_or_else(|| {
            Failure::Log(format!(
                "{}{path}: the proof is not a list of base64 hashes",
                printable(&self.base)
            ))
        })
    }

    /// One page of the log's key events after index `after` (from the first when `None`),
    /// checked to follow the pages before it. The events are unverified.
    pub fn key_event_page(&self, after: Option<u64>) -> Result<KeyEventPage, Failure> {
        let max = reprolog_verifier::api::PATH_PAGE_MAX;
        let path = match after {
            None => format!("/api/v1/keys?limit={max}"),
            Some(a) => format!("/api/v1/keys?limit={max}&after={a}"),
        };
        let page: KeyEventPage = self.json(&path, &self.get_body(&path)?)?;
        page.check_follows(after)
            .map_err(|e| Failure::Log(format!("{}{path}: {e}", printable(&self.base))))?;
        Ok(page)
    }

    /// One page of a path's events after index `after` (all of them when `None`), checked to
    /// follow the pages before it (`PathPage::check_follows`); `None` when the log has no
    /// (more) events for the path. The events are unverified.
    pub fn path_page(
        &self,
        hash_part: &str,
        after: Option<u64>,
    ) -> Result<Option<PathPage>, Failure> {
        let max = reprolog_verifier::api::PATH_PAGE_MAX;
        let path = match after {
            None => format!("/api/v1/paths/{hash_part}?limit={max}"),
            Some(a) => format!("/api/v1/paths/{hash_part}?limit={max}&after={a}"),
        };
        let body = match self.get(&path)? {
            Got::NotFound => return Ok(None),
            Got::Body(b) => b,
        };
        let page: PathPage = self.json(&path, &body)?;
        page.check_follows(after)
            .map_err(|e| Failure::Log(format!("{}{path}: {e}", printable(&self.base))))?;
        Ok(Some(page))
    }
}

/// A transport error in words, without the URL.
pub fn transport(t: &ureq::Transport) -> String {
    let mut message = t.kind().to_string().to_lowercase();
    if let Some(detail) = t.message() {
        message = format!("{message}: {detail}");
    }
    if let Some(source) = std::error::Error::source(t) {
        message = format!("{message}: {source}");
    }
    printable(&message).into_owned()
}
