//! The JSON bodies of the explorer's research API (`spec/explorer-api.md`), shared by
//! `reprolog-explorer` and every client (its tests, its dashboard). Verdicts use the one
//! vocabulary of [`crate::compare`]; builders are identities of the logs' registries.

use serde::{Deserialize, Serialize};

use crate::compare::{Summary, Verdict};

/// One claim about a store path, as the explorer indexed it: proven in its log, its signature
/// checked, judged by the log's registry as of its index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedClaim {
    /// The store path it is about.
    pub store_path: String,
    /// The origin of the log that holds it.
    pub log: String,
    /// Its index in that log.
    pub index: u64,
    /// `cache-signature` or `build`.
    pub kind: String,
    /// The builder identity.
    pub builder: String,
    /// The name of the key that signed.
    pub key: String,
    /// `sha256:<nix32>`.
    pub nar_hash: String,
    /// The NAR's size in bytes.
    pub nar_size: u64,
    /// Base names, sorted.
    pub references: Vec<String>,
    /// For a build attestation, the derivation it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deriver: Option<String>,
    /// When it was logged at the latest (RFC 3339): the earliest cosignature of the first
    /// checkpoint that covers it. Absent while no cosigned checkpoint covers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged_at: Option<String>,
    /// Why it does not count, when its key could not sign at its index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub void: Option<String>,
}

/// `GET /api/v1/paths/<hash>`: every claim about a path across the logs, and its verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathAnswer {
    /// The store path.
    pub store_path: String,
    /// Over the claims that count.
    pub verdict: Verdict,
    /// In (log, index) order.
    pub claims: Vec<IndexedClaim>,
}

/// One path found by a search.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundPath {
    /// The store path.
    pub store_path: String,
    /// Its verdict.
    pub verdict: Verdict,
}

/// `GET /api/v1/search?q=`: paths whose name contains the query, or whose hash starts with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchAnswer {
    /// At most the page's limit, by store path.
    pub paths: Vec<FoundPath>,
    /// Present when more follow: ask again with `after` set to this store path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One builder identity in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedBuilder {
    /// The identity.
    pub builder: String,
    /// Claims that count.
    pub entries: u64,
    /// Distinct store paths claimed.
    pub paths: u64,
    /// The earliest and latest logged times of its claims (RFC 3339), when dated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_logged: Option<String>,
    /// See `first_logged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_logged: Option<String>,
}

/// `GET /api/v1/builders`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedBuilders {
    /// By identity.
    pub builders: Vec<IndexedBuilder>,
}

/// `POST /api/v1/report`: a verdict for each store path asked about, and the summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportAnswer {
    /// In the order asked.
    pub paths: Vec<FoundPath>,
    /// The counts of each verdict.
    pub summary: Summary,
}

/// Whether the explorer follows a log, or stopped and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FollowState {
    /// It follows the log.
    Following,
    /// It stopped: the log forked, rolled back or served what does not verify. The index
    /// keeps what was verified before.
    Stopped,
}

/// One followed log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStatus {
    /// The log's origin.
    pub origin: String,
    /// Its URL.
    pub url: String,
    /// How many of its entries are verified and indexed.
    pub verified_size: u64,
    /// The last checkpoint accepted, as signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// The witnesses that cosigned it.
    pub cosigned_by: Vec<String>,
    /// Following, or stopped.
    pub state: FollowState,
    /// Why it stopped, or what failed last while following.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /api/v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// Each log of the policy that has a URL.
    pub logs: Vec<LogStatus>,
    /// What the index holds, over every log.
    pub totals: Totals,
}

/// The index's totals: claims that count, and paths by verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Claims that count (not void), over every log.
    pub entries: u64,
    /// Store paths with a claim that counts.
    pub paths: u64,
    /// Builders with a claim that counts.
    pub builders: u64,
    /// Paths claimed by one builder, with one NAR hash.
    pub one_builder: u64,
    /// Paths claimed by two or more builders, all with one NAR hash.
    pub reproduced: u64,
    /// Paths claimed with two or more NAR hashes.
    pub unreproduced: u64,
}

/// One pair of builders: the paths both claimed, and how many they agree on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairAgreement {
    /// The first builder (by name).
    pub a: String,
    /// The second.
    pub b: String,
    /// Paths both claimed.
    pub common: u64,
    /// Of those, paths on which each claimed one NAR hash, the same.
    pub agree: u64,
    /// The others: `common - agree`.
    pub disagree: u64,
}

/// `GET /api/v1/agreement`: every pair of builders with a path in common.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementAnswer {
    /// By (a, b).
    pub pairs: Vec<PairAgreement>,
}

/// One unreproduced path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disagreement {
    /// The store path.
    pub store_path: String,
    /// When its latest claim was logged (RFC 3339), when dated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_logged: Option<String>,
    /// The builders that claimed it, by name.
    pub builders: Vec<String>,
    /// The distinct NAR hashes claimed.
    pub nar_hashes: Vec<String>,
}

/// `GET /api/v1/disagreements?builder=&since=&until=&after=&limit=`: unreproduced paths, the
/// most recently logged first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisagreementsAnswer {
    /// At most the page's limit.
    pub paths: Vec<Disagreement>,
    /// Present when more follow: ask again with `after` set to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One bucket of a time series.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The bucket's start (RFC 3339).
    pub start: String,
    /// Claims logged in it.
    pub entries: u64,
    /// Paths whose latest claim was logged in it, compared (two or more builders).
    pub compared: u64,
    /// Of those, reproduced.
    pub reproduced: u64,
    /// Of those, unreproduced.
    pub unreproduced: u64,
}

/// `GET /api/v1/timeseries?bucket=hour|day&builder=`: per bucket, oldest first; only dated
/// claims count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeseriesAnswer {
    /// `hour` or `day`.
    pub bucket: String,
    /// Buckets with at least one claim.
    pub buckets: Vec<Bucket>,
}
