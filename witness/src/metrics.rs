//! The witness's `/metrics`, in Prometheus text format, written by hand like the log
//! server's. Labels are log origins from the policy file and a fixed set of refusal reasons;
//! an origin a request names that the policy does not list is never a label.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use axum::http::StatusCode;

use reprolog_verifier::locks;
use reprolog_verifier::prometheus::{escape_label, header};

/// Why an add-checkpoint request was refused, from its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the body, the note or the checkpoint does not parse, or the sizes are wrong.
    Malformed,
    /// 413: a body over the limit.
    TooLarge,
    /// 403: no valid signature by the log's key.
    BadSignature,
    /// 404: a log the policy does not list.
    UnknownLog,
    /// 409: the old size is not the size the witness holds.
    Conflict,
    /// 409 too, but for a checkpoint of the size the witness holds with another root: the
    /// log showed two trees. This is the one to alert on.
    Fork,
    /// 422: the consistency proof does not verify.
    Inconsistent,
    /// 500: the witness's own storage failed.
    Internal,
}

const REFUSALS: [(Refusal, &str); 8] = [
    (Refusal::Malformed, "malformed"),
    (Refusal::TooLarge, "too_large"),
    (Refusal::BadSignature, "bad_signature"),
    (Refusal::UnknownLog, "unknown_log"),
    (Refusal::Conflict, "conflict"),
    (Refusal::Fork, "fork"),
    (Refusal::Inconsistent, "inconsistent"),
    (Refusal::Internal, "internal"),
];

impl Refusal {
    /// The refusal an answer's status means, if it is one; a fork is marked by the handler.
    pub fn of(status: StatusCode) -> Option<Refusal> {
        Some(match status.as_u16() {
            200 => return None,
            403 => Refusal::BadSignature,
            404 => Refusal::UnknownLog,
            409 => Refusal::Conflict,
            413 => Refusal::TooLarge,
            422 => Refusal::Inconsistent,
            500..=599 => Refusal::Internal,
            _ => Refusal::Malformed,
        })
    }
}

#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub accepted: AtomicU64,
    refused: [AtomicU64; REFUSALS.len()],
    pub reloads: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Checkpoints newly cosigned, by origin; only origins of the policy get here.
    cosigned: Mutex<HashMap<String, u64>>,
}

impl Metrics {
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts a checkpoint newly cosigned for `origin`, a log of the policy.
    pub fn cosigned(&self, origin: &str) {
        *locks::lock(&self.cosigned)
            .entry(origin.to_owned())
            .or_default() += 1;
    }

    /// The page. `logs` are the policy's origins with the size the witness holds for each.
    pub fn render(&self, logs: &[(String, Option<u64>)]) -> String {
        let mut out = String::new();
        let mut scalar = |name: &str, kind: &str, help: &str, v: u64| {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        };
        scalar(
            "reprolog_witness_add_checkpoint_requests_total",
            "counter",
            "add-checkpoint requests received.",
            self.requests.load(Relaxed),
        );
        scalar(
            "reprolog_witness_add_checkpoint_accepted_total",
            "counter",
            "add-checkpoint requests answered with a cosignature.",
            self.accepted.load(Relaxed),
        );
        scalar(
            "reprolog_witness_logs",
            "gauge",
            "Logs the policy in force lists.",
            logs.len() as u64,
        );
        scalar(
            "reprolog_witness_policy_reloads_total",
            "counter",
            "Policy files read again on SIGHUP and put in force.",
            self.reloads.load(Relaxed),
        );
        scalar(
            "reprolog_witness_policy_reloads_failed_total",
            "counter",
            "Policy files read on SIGHUP that did not parse; the previous policy stayed.",
            self.reloads_failed.load(Relaxed),
        );
        let name = "reprolog_witness_add_checkpoint_refused_total";
        header(
            &mut out,
            name,
            "counter",
            "add-checkpoint requests refused, by reason.",
        );
        for (why, label) in REFUSALS {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{label}\"}} {}",
                self.refused[why as usize].load(Relaxed)
            );
        }
        let cosigned = locks::lock(&self.cosigned).clone();
        let name = "reprolog_witness_checkpoints_cosigned_total";
        header(
            &mut out,
            name,
            "counter",
            "Checkpoints newly cosigned since start, by log origin of the policy.",
        );
        for (origin, _) in logs {
            let n = cosigned.get(origin).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}{{log=\"{}\"}} {n}", escape_label(origin));
        }
        let name = "reprolog_witness_checkpoint_size";
        header(
            &mut out,
            name,
            "gauge",
            "Tree size of the latest checkpoint cosigned, by log origin of the policy.",
        );
        for (origin, size) in logs {
            if let Some(size) = size {
                let _ = writeln!(out, "{name}{{log=\"{}\"}} {size}", escape_label(origin));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_by_status_and_logs_only_from_the_policy() {
        assert_eq!(Refusal::of(StatusCode::OK), None);
        assert_eq!(Refusal::of(StatusCode::CONFLICT), Some(Refusal::Conflict));
        assert_eq!(
            Refusal::of(StatusCode::BAD_REQUEST),
            Some(Refusal::Malformed)
        );
        let m = Metrics::default();
        m.refused(Refusal::Fork);
        m.cosigned("example.com/log\"a");
        m.cosigned("example.com/log\"a");
        m.cosigned("example.com/removed");
        let text = m.render(&[
            ("example.com/log\"a".into(), Some(12)),
            ("example.com/new".into(), None),
        ]);
        for line in [
            "reprolog_witness_add_checkpoint_refused_total{reason=\"fork\"} 1",
            "reprolog_witness_add_checkpoint_refused_total{reason=\"conflict\"} 0",
            "reprolog_witness_checkpoints_cosigned_total{log=\"example.com/log\\\"a\"} 2",
            "reprolog_witness_checkpoints_cosigned_total{log=\"example.com/new\"} 0",
            "reprolog_witness_checkpoint_size{log=\"example.com/log\\\"a\"} 12",
            "reprolog_witness_logs 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains("removed"), "{text}");
    }
}
