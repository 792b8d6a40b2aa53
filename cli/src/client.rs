//! A blocking HTTP client for reprolog log servers (`spec/api.md`). Every answer is read with
//! a size limit; proofs are returned for the caller to verify, never trusted as they come.

use std::io::Read;
use std::time::Duration;

use reprolog_verifier::api::{
    decode_proof, AttestationsAnswer, BuildersAnswer, CheckpointPage, ConsistencyProof,
    InclusionProof, KeyEventAnswer, KeyEventPage, LoggedEntry, PathPage, SubmitAnswer,
    PATH_PAGE_MAX,
};
use reprolog_verifier::dsse::Envelope;
use reprolog_verifier::merkle::Hash;
use reprolog_verifier::text::printable;

/// The largest answer the client reads: a full entry bundle is at most 256 × 64 KiB.
pub const MAX_RESPONSE_BYTES: u64 = 17 << 20;

/// What went wrong talking to a log. Text from the server is made printable before it is
/// kept here, so that showing an error can never write control characters to a terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not one a log can have.
    #[error("{url:?} is not a log URL: {reason}")]
    BadUrl { url: String, reason: String },
    /// The log could not be reached, or the connection broke.
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: unexpected answer: {message}")]
    BadResponse { url: String, message: String },
}

/// A log server at a base URL such as `http://127.0.0.1:8400`.
#[derive(Clone)]
pub struct LogClient {
    base: String,
    agent: ureq::Agent,
}

impl LogClient {
    /// A client for the log at `base_url`, which must be an `http://` or `https://` URL.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_timeout(base_url, Duration::from_secs(60))
    }

    /// [`LogClient::new`] whose every request gives up after `timeout`.
    pub fn with_timeout(base_url: &str, timeout: Duration) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: printable(base_url).into_owned(),
            reason: reason.to_owned(),
        };
        let rest = base_url
            .strip_prefix("http://")
            .or_else(|| base_url.strip_prefix("https://"))
            .ok_or_else(|| bad("it needs a scheme, for example http://127.0.0.1:8400"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("it names no host, for example http://127.0.0.1:8400"));
        }
        Ok(LogClient {
            base: base_url.trim_end_matches('/').to_owned(),
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn read(
        &self,
        url: &str,
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<Vec<u8>, ClientError> {
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let mut body = Vec::new();
                let _ = r.into_reader().take(4096).read_to_end(&mut body);
                return Err(ClientError::Status {
                    url: url.to_owned(),
                    status,
                    body: printable(&String::from_utf8_lossy(&body)).into_owned(),
                });
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(ClientError::Transport {
                    url: url.to_owned(),
                    message: transport_message(&t),
                })
            }
        };
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Transport {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        if body.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(ClientError::BadResponse {
                url: url.to_owned(),
                message: format!("answer is over {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        Ok(body)
    }

    /// GETs a path under the base URL.
    pub fn get(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        self.read(&url, self.agent.get(&url).call())
    }

    /// GETs a JSON document under the base URL as one of the API's types.
    pub fn get_typed<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.get(path)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
            url: format!("{}{path}", self.base),
            message: printable(&e.to_string()).into_owned(),
        })
    }

    /// Submits narinfos (several separated by blank lines) and returns the server's answer.
    pub fn submit_narinfos(&self, body: &str) -> Result<SubmitAnswer, ClientError> {
        let url = format!("{}/api/v1/narinfo", self.base);
        let result = self
            .agent
            .post(&url)
            .set("Content-Type", "text/x-nix-narinfo")
            .send_string(body);
        let body = self.read(&url, result)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
            url,
            message: e.to_string(),
        })
    }

    /// Submits DSSE build attestations and returns the server's answer.
    pub fn submit_attestations(
        &self,
        envelopes: &[Envelope],
    ) -> Result<AttestationsAnswer, ClientError> {
        let url = format!("{}/api/v1/attestations", self.base);
        let body = serde_json::to_vec(envelopes).map_err(|e| ClientError::BadResponse {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let result = self
            .agent
            .post(&url)
            .set("Content-Type", "application/vnd.dsse.envelope.v1+json")
            .send_bytes(&body);
        let body = self.read(&url, result)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
            url,
            message: e.to_string(),
        })
    }

    /// The latest signed checkpoint note, unverified.
    pub fn checkpoint(&self) -> Result<Vec<u8>, ClientError> {
        self.get("/checkpoint")
    }

    /// An inclusion proof, unverified.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ClientError> {
        let path = format!("/api/v1/proof/inclusion?index={index}&size={size}");
        let answer: InclusionProof = self.get_typed(&path)?;
        decode_proof(&answer.proof).ok_or_else(|| ClientError::BadResponse {
            url: format!("{}{path}", self.base),
            message: "proof is not a list of base64 hashes".into(),
        })
    }
}

impl LogClient {
    /// Calls `each` with every logged event for a store path hash part, in index order,
    /// following the lookup's pages to the end; nothing when nothing is logged. One page is
    /// held at a time, however long the path's history. The events are unverified.
    pub fn for_each_path_event<E: From<ClientError>>(
        &self,
        hash_part: &str,
        mut each: impl FnMut(LoggedEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after: Option<u64> = None;
        loop {
            let path = match after {
                None => format!("/api/v1/paths/{hash_part}?limit={PATH_PAGE_MAX}"),
                Some(a) => format!("/api/v1/paths/{hash_part}?limit={PATH_PAGE_MAX}&after={a}"),
            };
            let page: PathPage = match self.get_typed(&path) {
                Err(ClientError::Status { status: 404, .. }) if after.is_none() => return Ok(()),
                other => other?,
            };
            // Indexes only go up, and the cursor moves forward: a log cannot loop a client.
            page.check_follows(after)
                .map_err(|e| ClientError::BadResponse {
                    url: format!("{}{path}", self.base),
                    message: e.to_string(),
                })?;
            let next = page.next;
            for event in page.events {
                each(event)?;
            }
            match next {
                None => return Ok(()),
                Some(next) => after = Some(next),
            }
        }
    }

    /// Calls `each` with every key event of the log that its published checkpoint covers, in
    /// index order, following the pages; returns the log's verifier key as the log serves it.
    /// The events are unverified.
    pub fn for_each_key_event<E: From<ClientError>>(
        &self,
        mut each: impl FnMut(LoggedEntry) -> Result<(), E>,
    ) -> Result<Option<String>, E> {
        let mut after: Option<u64> = None;
        loop {
            let path = match after {
                None => format!("/api/v1/keys?limit={PATH_PAGE_MAX}"),
                Some(a) => format!("/api/v1/keys?limit={PATH_PAGE_MAX}&after={a}"),
            };
            let page: KeyEventPage = self.get_typed(&path)?;
            page.check_follows(after)
                .map_err(|e| ClientError::BadResponse {
                    url: format!("{}{path}", self.base),
                    message: e.to_string(),
                })?;
            for event in page.events {
                each(event)?;
            }
            match page.next {
                None => return Ok(page.log_key),
                Some(next) => after = Some(next),
            }
        }
    }

    /// Calls `each` with every checkpoint the log published and keeps, smallest first,
    /// following the pages. The notes are unverified.
    pub fn for_each_checkpoint<E: From<ClientError>>(
        &self,
        mut each: impl FnMut(String) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after = 0;
        loop {
            let path = format!("/api/v1/checkpoints?limit={PATH_PAGE_MAX}&after={after}");
            let page: CheckpointPage = self.get_typed(&path)?;
            for note in page.checkpoints {
                each(note)?;
            }
            match page.next {
                Some(next) if next > after => after = next,
                Some(_) => {
                    return Err(ClientError::BadResponse {
                        url: format!("{}{path}", self.base),
                        message: "the page cursor does not move forward".into(),
                    }
                    .into())
                }
                None => return Ok(()),
            }
        }
    }

    /// Submits one key event (its entry text) and returns the server's answer.
    pub fn submit_key_event(&self, entry: &[u8]) -> Result<KeyEventAnswer, ClientError> {
        let url = format!("{}/api/v1/keys", self.base);
        let result = self
            .agent
            .post(&url)
            .set("Content-Type", "text/plain")
            .send_bytes(entry);
        let body = self.read(&url, result)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
            url,
            message: e.to_string(),
        })
    }

    /// A consistency proof, unverified.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ClientError> {
        let path = format!("/api/v1/proof/consistency?old={old}&new={new}");
        let answer: ConsistencyProof = self.get_typed(&path)?;
        decode_proof(&answer.proof).ok_or_else(|| ClientError::BadResponse {
            url: format!("{}{path}", self.base),
            message: "proof is not a list of base64 hashes".into(),
        })
    }

    /// The registered builders.
    pub fn builders(&self) -> Result<BuildersAnswer, ClientError> {
        self.get_typed("/api/v1/builders")
    }

    /// An entry as the log shows it, unverified.
    pub fn entry(&self, index: u64) -> Result<LoggedEntry, ClientError> {
        self.get_typed(&format!("/api/v1/entries/{index}"))
    }

    /// The C2SP tlog-proof receipt of an entry, unverified.
    pub fn tlog_proof(&self, index: u64) -> Result<Vec<u8>, ClientError> {
        self.get(&format!("/api/v1/entries/{index}/tlog-proof"))
    }
}

/// A failed request in words, without its URL.
pub fn ureq_message(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(status, _) => format!("HTTP {status}"),
        ureq::Error::Transport(t) => transport_message(t),
    }
}

/// A transport error in words, without the URL (ureq's own message repeats it, and the error
/// names it once already).
fn transport_message(t: &ureq::Transport) -> String {
    let mut message = t.kind().to_string().to_lowercase();
    if let Some(detail) = t.message() {
        message = format!("{message}: {detail}");
    }
    if let Some(source) = std::error::Error::source(t) {
        message = format!("{message}: {source}");
    }
    printable(&message).into_owned()
}

impl ClientError {
    /// Whether the log could not be reached at all (as opposed to answering badly): worth a
    /// retry or two, not a retry per item.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }
}
