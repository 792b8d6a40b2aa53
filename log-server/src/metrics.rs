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
    InvalidSignatures,
}

const REJECTIONS: [(Rejection, &str); 6] = [
    (Rejection::Malformed, "malformed"),
    (Rejection::BodyTooLarge, "body_too_large"),
    (Rejection::ContentType, "content_type"),
    (Rejection::EntryTooLarge, "entry_too_large"),
    (Rejection::NoValidSignature, "no_valid_signature"),
    (Rejection::InvalidSignatures, "invalid_signatures"),
];

pub struct Metrics {
    pub tree_size: AtomicU64,
    pub checkpoint_size: AtomicU64,
    pub entries_logged: AtomicU64,
    pub entries_duplicate: AtomicU64,
    pub signatures_ignored: AtomicU64,
    pub checkpoints_published: AtomicU64,
    rejections: [AtomicU64; 6],
    /// Witness answers whose cosignature did not verify over the log's own checkpoint.
    pub cosignatures_refused: AtomicU64,
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
            cosignatures_refused: AtomicU64::new(0),
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
        scalar(
            "reprolog_cosignatures_refused_total",
            "counter",
            "Witness answers dropped because no line verified over the log's checkpoint.",
            &self.cosignatures_refused,
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
        render_process(&mut out);
        out
    }
}

/// The standard Prometheus process metrics, read from Linux's /proc; absent elsewhere.
fn render_process(out: &mut String) {
    if let Some(seconds) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| cpu_seconds(&stat))
    {
        let name = "process_cpu_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} User and system CPU time.\n# TYPE {name} counter\n{name} {seconds}"
        );
    }
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

/// User plus system CPU seconds from a `/proc/<pid>/stat` line.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name, field 2, may hold spaces; fields 14 and 15 count clock ticks of
    // USER_HZ, which is 100 on Linux.
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_seconds_reads_utime_and_stime() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(super::cpu_seconds(stat), Some(3.25));
        assert_eq!(super::cpu_seconds("4242 (x) S 1"), None);
    }
}
