//! Prometheus text-format metrics, kept in atomics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in millionths, so it fits an integer atomic.
    sum_micro: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        for (b, bucket) in self.bounds.iter().zip(&self.buckets) {
            if v <= *b {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micro.fetch_add((v * 1e6) as u64, Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", bucket.load(Relaxed));
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micro.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Why a submission was refused, as a metric label.
#[derive(Clone, Copy)]
pub enum Rejection {
    Malformed,
    BodyTooLarge,
    ContentType,
    EntryTooLarge,
    NoValidSignature,
}

const REJECTIONS: [(Rejection, &str); 5] = [
    (Rejection::Malformed, "malformed"),
    (Rejection::BodyTooLarge, "body_too_large"),
    (Rejection::ContentType, "content_type"),
    (Rejection::EntryTooLarge, "entry_too_large"),
    (Rejection::NoValidSignature, "no_valid_signature"),
];

pub struct Metrics {
    pub tree_size: AtomicU64,
    pub checkpoint_size: AtomicU64,
    pub entries_logged: AtomicU64,
    pub entries_duplicate: AtomicU64,
    pub signatures_ignored: AtomicU64,
    pub checkpoints_published: AtomicU64,
    rejections: [AtomicU64; 5],
    pub batch_entries: Histogram,
    pub sequencing_seconds: Histogram,
    pub commit_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        const SIZES: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0];
        const SECONDS: &[f64] = &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        Metrics {
            tree_size: AtomicU64::new(0),
            checkpoint_size: AtomicU64::new(0),
            entries_logged: AtomicU64::new(0),
            entries_duplicate: AtomicU64::new(0),
            signatures_ignored: AtomicU64::new(0),
            checkpoints_published: AtomicU64::new(0),
            rejections: Default::default(),
            batch_entries: Histogram::new(SIZES),
            sequencing_seconds: Histogram::new(SECONDS),
            commit_seconds: Histogram::new(SECONDS),
        }
    }
}

impl Metrics {
    pub fn reject(&self, why: Rejection) {
        self.rejections[why as usize].fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut scalar = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        };
        scalar(
            "reprolog_tree_size",
            "gauge",
            "Entries durably sequenced.",
            &self.tree_size,
        );
        scalar(
            "reprolog_checkpoint_size",
            "gauge",
            "Tree size of the latest published checkpoint.",
            &self.checkpoint_size,
        );
        scalar(
            "reprolog_entries_logged_total",
            "counter",
            "Entries appended.",
            &self.entries_logged,
        );
        scalar(
            "reprolog_entries_duplicate_total",
            "counter",
            "Submitted entries that were already logged.",
            &self.entries_duplicate,
        );
        scalar(
            "reprolog_signatures_ignored_total",
            "counter",
            "Signatures not logged: unregistered key, bad or malformed.",
            &self.signatures_ignored,
        );
        scalar(
            "reprolog_checkpoints_published_total",
            "counter",
            "Checkpoints signed and published.",
            &self.checkpoints_published,
        );
        let name = "reprolog_rejections_total";
        let _ = writeln!(
            out,
            "# HELP {name} Submissions refused, by reason.\n# TYPE {name} counter"
        );
        for (why, label) in REJECTIONS {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{label}\"}} {}",
                self.rejections[why as usize].load(Relaxed)
            );
        }
        self.batch_entries.render(
            &mut out,
            "reprolog_batch_entries",
            "Entries per durable commit.",
        );
        self.sequencing_seconds.render(
            &mut out,
            "reprolog_sequencing_seconds",
            "Time from a submission's arrival at the sequencer to its durable index.",
        );
        self.commit_seconds.render(
            &mut out,
            "reprolog_commit_seconds",
            "Time of one durable batch commit.",
        );
        out
    }
}
