//! The gate's Prometheus text-format metrics, kept in atomics, written with the servers'
//! shared helpers (`verifier::prometheus`). Labels come only from fixed sets (outcomes, reasons) and from the operator's
//! `--upstream` list, never from a request.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use reprolog_verifier::prometheus::{escape_label, header, Histogram};

use crate::failure::FAILURE_LABELS;

/// The outcomes of the trust file's decisions (`Outcome::label`), then the failures: every
/// `reason` label a narinfo answer can carry.
pub const OUTCOME_LABELS: [&str; 4] = ["agreed", "not_logged", "quorum_not_met", "conflict"];

fn reasons() -> impl Iterator<Item = &'static str> {
    OUTCOME_LABELS.iter().chain(FAILURE_LABELS.iter()).copied()
}

fn reason_index(label: &str) -> usize {
    reasons()
        .position(|r| r == label)
        .unwrap_or(OUTCOME_LABELS.len() + FAILURE_LABELS.len() - 1)
}

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// What one `--upstream` did.
#[derive(Default)]
pub struct UpstreamCounters {
    /// Requests that failed: unreachable, an HTTP error other than 404, an unreadable file, a
    /// narinfo that does not parse or is too large.
    pub errors: AtomicU64,
    /// narinfos that parsed but do not match the decided claim.
    pub mismatches: AtomicU64,
    /// narinfos served from it.
    pub served: AtomicU64,
}

pub struct Metrics {
    /// narinfo answers by reason (allowed only for `agreed`).
    narinfo: Vec<AtomicU64>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Time to answer a narinfo request, when its decision was cached and when it was made.
    pub narinfo_seconds_hit: Histogram,
    pub narinfo_seconds_miss: Histogram,
    /// Entries proven (inclusion proofs fetched and verified).
    pub proofs: AtomicU64,
    pub upstreams: Vec<(String, UpstreamCounters)>,
    pub nar_requests: AtomicU64,
    pub nar_bytes: AtomicU64,
    pub nar_in_flight: AtomicU64,
    pub checkpoint_size: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    pub forked: AtomicU64,
    pub trust_reloads: AtomicU64,
    pub trust_reload_failures: AtomicU64,
}

impl Metrics {
    /// Counters for each upstream, labelled with its URL from the command line.
    pub fn new(upstreams: impl IntoIterator<Item = String>) -> Self {
        Metrics {
            narinfo: reasons().map(|_| AtomicU64::new(0)).collect(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            narinfo_seconds_hit: Histogram::new(SECONDS),
            narinfo_seconds_miss: Histogram::new(SECONDS),
            proofs: AtomicU64::new(0),
            upstreams: upstreams
                .into_iter()
                .map(|u| (u, UpstreamCounters::default()))
                .collect(),
            nar_requests: AtomicU64::new(0),
            nar_bytes: AtomicU64::new(0),
            nar_in_flight: AtomicU64::new(0),
            checkpoint_size: AtomicU64::new(0),
            checkpoint_failures: AtomicU64::new(0),
            forked: AtomicU64::new(0),
            trust_reloads: AtomicU64::new(0),
            trust_reload_failures: AtomicU64::new(0),
        }
    }

    /// Counts a narinfo answer by its reason label.
    pub fn narinfo_answered(&self, reason: &str) {
        self.narinfo[reason_index(reason)].fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let name = "reprolog_gate_narinfo_requests_total";
        header(
            &mut out,
            name,
            "counter",
            "narinfo requests answered, by outcome (allowed: served; denied: 404) and reason.",
        );
        for (reason, counter) in reasons().zip(&self.narinfo) {
            let outcome = if reason == "agreed" {
                "allowed"
            } else {
                "denied"
            };
            let _ = writeln!(
                out,
                "{name}{{outcome=\"{outcome}\",reason=\"{reason}\"}} {}",
                counter.load(Relaxed)
            );
        }
        let mut scalar = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        };
        scalar(
            "reprolog_gate_decision_cache_hits_total",
            "counter",
            "narinfo requests answered from a decision cached for the current checkpoint and trust.",
            &self.cache_hits,
        );
        scalar(
            "reprolog_gate_decision_cache_misses_total",
            "counter",
            "Decisions made: the path's events looked up and new entries proven.",
            &self.cache_misses,
        );
        scalar(
            "reprolog_gate_proofs_total",
            "counter",
            "Inclusion proofs fetched and verified.",
            &self.proofs,
        );
        scalar(
            "reprolog_gate_nar_requests_total",
            "counter",
            "NAR requests streamed from an upstream.",
            &self.nar_requests,
        );
        scalar(
            "reprolog_gate_nar_bytes_total",
            "counter",
            "NAR bytes streamed to clients.",
            &self.nar_bytes,
        );
        scalar(
            "reprolog_gate_nar_streams_in_flight",
            "gauge",
            "NARs being streamed.",
            &self.nar_in_flight,
        );
        scalar(
            "reprolog_gate_checkpoint_size",
            "gauge",
            "Tree size of the last checkpoint accepted (it satisfies the log policy and is consistent with every one before it).",
            &self.checkpoint_size,
        );
        scalar(
            "reprolog_gate_checkpoint_failures_total",
            "counter",
            "Checkpoint refreshes that failed: log unreachable, policy not satisfied, no consistency proof.",
            &self.checkpoint_failures,
        );
        scalar(
            "reprolog_gate_forked",
            "gauge",
            "1 while a fork or rollback of the log is latched and every request is denied.",
            &self.forked,
        );
        scalar(
            "reprolog_gate_trust_reloads_total",
            "counter",
            "Trust file reloads that changed the trust.",
            &self.trust_reloads,
        );
        scalar(
            "reprolog_gate_trust_reload_failures_total",
            "counter",
            "Trust file edits refused (the last good trust stayed in force).",
            &self.trust_reload_failures,
        );
        let name = "reprolog_gate_narinfo_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time to answer a narinfo request, by whether its decision was cached.",
        );
        self.narinfo_seconds_hit
            .render_series(&mut out, name, "cache=\"hit\"");
        self.narinfo_seconds_miss
            .render_series(&mut out, name, "cache=\"miss\"");
        type Field = fn(&UpstreamCounters) -> &AtomicU64;
        let families: [(&str, &str, Field); 3] = [
            (
                "reprolog_gate_upstream_errors_total",
                "Upstream requests that failed: unreachable, HTTP error, unreadable, too large or malformed.",
                |c| &c.errors,
            ),
            (
                "reprolog_gate_upstream_mismatches_total",
                "Upstream narinfos that do not match the decided claim (store path, NarHash, NarSize, References).",
                |c| &c.mismatches,
            ),
            (
                "reprolog_gate_upstream_served_total",
                "narinfos served from each upstream.",
                |c| &c.served,
            ),
        ];
        for (name, help, field) in families {
            header(&mut out, name, "counter", help);
            for (url, c) in &self.upstreams {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\"}} {}",
                    escape_label(url),
                    field(c).load(Relaxed)
                );
            }
        }
        render_process(&mut out);
        out
    }
}

/// The standard Prometheus process metrics, read from Linux's /proc; absent elsewhere.
fn render_process(out: &mut String) {
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
    if let Some(kib) = rss_kib {
        let name = "process_resident_memory_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Resident memory.\n# TYPE {name} gauge\n{name} {}",
            kib * 1024
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_series_and_upstreams_are_escaped() {
        let m = Metrics::new(["http://a\"b".to_owned()]);
        m.narinfo_answered("agreed");
        m.narinfo_answered("fork");
        m.narinfo_answered("fork");
        m.narinfo_seconds_hit
            .observe_duration(std::time::Duration::from_micros(300));
        let text = m.render();
        for line in [
            "reprolog_gate_narinfo_requests_total{outcome=\"allowed\",reason=\"agreed\"} 1",
            "reprolog_gate_narinfo_requests_total{outcome=\"denied\",reason=\"fork\"} 2",
            "reprolog_gate_narinfo_requests_total{outcome=\"denied\",reason=\"quorum_not_met\"} 0",
            "reprolog_gate_narinfo_requests_total{outcome=\"denied\",reason=\"no_matching_upstream\"} 0",
            "reprolog_gate_narinfo_seconds_bucket{cache=\"hit\",le=\"0.0005\"} 1",
            "reprolog_gate_narinfo_seconds_count{cache=\"miss\"} 0",
            "reprolog_gate_upstream_errors_total{upstream=\"http://a\\\"b\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
