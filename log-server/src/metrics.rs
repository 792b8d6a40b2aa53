//! Prometheus text-format metrics, kept in atomics.
//!
//! Labels come only from the operator: builder identities (the names of keys it registered
//! through the builders file; a rotated key keeps its builder's identity), witness names from
//! the policy. A name a client sends is never a label, so a client cannot grow the
//! page or a Prometheus server's series without bound.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use reprolog_verifier::locks;
use reprolog_verifier::prometheus::{escape_label, header, Histogram};

/// What one registered builder did, under its key's name (every key of that name).
#[derive(Default)]
pub struct BuilderCounters {
    pub logged: AtomicU64,
    /// Signatures by a registered name that did not verify under its registered keys.
    pub refused: AtomicU64,
}

const WITNESS_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What the log asked of one witness of its policy, and how it went.
pub struct WitnessCounters {
    pub requested: AtomicU64,
    pub received: AtomicU64,
    pub failed: AtomicU64,
    /// Time of each request, answered or not: a witness that is down shows as the timeout.
    pub seconds: Histogram,
    /// Whether the last request failed, so that a witness going down or coming back is
    /// logged once rather than at every attempt.
    pub failing: AtomicBool,
}

impl Default for WitnessCounters {
    fn default() -> Self {
        WitnessCounters {
            requested: AtomicU64::new(0),
            received: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            seconds: Histogram::new(WITNESS_SECONDS),
            failing: AtomicBool::new(false),
        }
    }
}

/// Why a submission was refused, as a metric label.
#[derive(Clone, Copy, Debug)]
pub enum Rejection {
    Malformed,
    BodyTooLarge,
    ContentType,
    EntryTooLarge,
    NoValidSignature,
    InvalidSignatures,
    TooManyItems,
    /// A key event that breaks a rule of the registry, or whose signatures do not verify.
    KeyEventRefused,
}

const REJECTIONS: [(Rejection, &str); 8] = [
    (Rejection::Malformed, "malformed"),
    (Rejection::BodyTooLarge, "body_too_large"),
    (Rejection::ContentType, "content_type"),
    (Rejection::EntryTooLarge, "entry_too_large"),
    (Rejection::NoValidSignature, "no_valid_signature"),
    (Rejection::InvalidSignatures, "invalid_signatures"),
    (Rejection::TooManyItems, "too_many_items"),
    (Rejection::KeyEventRefused, "key_event_refused"),
];

pub struct Metrics {
    pub tree_size: AtomicU64,
    pub checkpoint_size: AtomicU64,
    pub entries_logged: AtomicU64,
    pub entries_duplicate: AtomicU64,
    pub signatures_ignored: AtomicU64,
    pub checkpoints_published: AtomicU64,
    rejections: [AtomicU64; 8],
    /// Witness answers whose cosignature did not verify over the log's own checkpoint.
    pub cosignatures_refused: AtomicU64,
    /// Entries logged whose NAR hash differs from the first one logged for their store path.
    pub disagreements: AtomicU64,
    /// Submission requests being handled, and handled in all (answered, whatever the answer).
    pub submissions_in_flight: AtomicU64,
    pub submissions: AtomicU64,
    /// By registered key name; only names from the builders file are ever added.
    builders: Mutex<HashMap<String, Arc<BuilderCounters>>>,
    /// By witness name, in policy order; set once at start.
    witnesses: Mutex<Vec<(String, Arc<WitnessCounters>)>>,
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
            disagreements: AtomicU64::new(0),
            submissions_in_flight: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
            builders: Mutex::default(),
            witnesses: Mutex::default(),
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

    /// The counters of a registered builder name. Callers pass only names of keys in the
    /// builders file; [`Metrics::render`] shows only names the file holds now.
    fn builder(&self, name: &str) -> Arc<BuilderCounters> {
        let mut map = locks::lock(&self.builders);
        Arc::clone(map.entry(name.to_owned()).or_default())
    }

    /// Counts entries logged, by registered key name.
    pub fn builders_logged<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for name in names {
            *counts.entry(name).or_default() += 1;
        }
        for (name, n) in counts {
            self.builder(name).logged.fetch_add(n, Relaxed);
        }
    }

    /// Counts a signature by a registered key name that did not verify.
    pub fn builder_refused(&self, name: &str) {
        self.builder(name).refused.fetch_add(1, Relaxed);
    }

    /// The counters of a witness of the policy, created at start.
    pub fn witness(&self, name: &str) -> Arc<WitnessCounters> {
        let counters = Arc::new(WitnessCounters::default());
        locks::lock(&self.witnesses).push((name.to_owned(), Arc::clone(&counters)));
        counters
    }

    /// The page, with one series per builder identity in `builders` (names the operator
    /// registered) and per policy witness.
    pub fn render(&self, builders: &[String]) -> String {
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
        scalar(
            "reprolog_disagreements_total",
            "counter",
            "Entries logged whose NAR hash differs from the first NAR hash logged for the same \
             store path (compared on 4 bytes; counted since start).",
            &self.disagreements,
        );
        scalar(
            "reprolog_submissions_in_flight",
            "gauge",
            "Submission requests being handled.",
            &self.submissions_in_flight,
        );
        scalar(
            "reprolog_submissions_total",
            "counter",
            "Submission requests answered, whatever the answer.",
            &self.submissions,
        );
        self.render_builders(&mut out, builders);
        self.render_witnesses(&mut out);
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

impl Metrics {
    fn render_builders(&self, out: &mut String, builders: &[String]) {
        let mut names: Vec<&str> = builders.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let counters: Vec<Option<Arc<BuilderCounters>>> = {
            let map = locks::lock(&self.builders);
            names.iter().map(|n| map.get(*n).cloned()).collect()
        };
        let families = [
            (
                "reprolog_builder_entries_logged_total",
                "Entries appended, by registered builder key name.",
                true,
            ),
            (
                "reprolog_builder_signatures_refused_total",
                "Signatures by a registered builder key name that did not verify.",
                false,
            ),
        ];
        for (name, help, logged) in families {
            header(out, name, "counter", help);
            for (builder, c) in names.iter().zip(&counters) {
                let v = c.as_ref().map_or(0, |c| {
                    let counter = if logged { &c.logged } else { &c.refused };
                    counter.load(Relaxed)
                });
                let _ = writeln!(out, "{name}{{builder=\"{}\"}} {v}", escape_label(builder));
            }
        }
    }

    fn render_witnesses(&self, out: &mut String) {
        let witnesses = locks::lock(&self.witnesses);
        type Field = fn(&WitnessCounters) -> &AtomicU64;
        let families: [(&str, &str, Field); 3] = [
            (
                "reprolog_witness_cosignatures_requested_total",
                "Cosignature requests to a witness of the policy.",
                |c| &c.requested,
            ),
            (
                "reprolog_witness_cosignatures_received_total",
                "Requests answered with a cosignature that verifies over the log's checkpoint.",
                |c| &c.received,
            ),
            (
                "reprolog_witness_cosignatures_failed_total",
                "Requests that brought no cosignature: down, timed out, refused, or a bad answer.",
                |c| &c.failed,
            ),
        ];
        for (name, help, field) in families {
            header(out, name, "counter", help);
            for (witness, c) in witnesses.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{witness=\"{}\"}} {}",
                    escape_label(witness),
                    field(c).load(Relaxed)
                );
            }
        }
        let name = "reprolog_witness_request_seconds";
        header(
            out,
            name,
            "histogram",
            "Time of one cosignature request, answered or not (a timeout shows as the timeout).",
        );
        for (witness, c) in witnesses.iter() {
            c.seconds
                .render_series(out, name, &format!("witness=\"{}\"", escape_label(witness)));
        }
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
    use super::*;

    #[test]
    fn only_registered_builders_are_labels_and_witnesses_have_histograms() {
        let registry = ["b\"1".to_owned(), "b2".to_owned(), "b2".to_owned()];
        let m = Metrics::default();
        m.builders_logged(["b\"1", "b\"1", "removed-since"]);
        m.builder_refused("b2");
        let w = m.witness("w\\0");
        w.requested.fetch_add(2, Relaxed);
        w.seconds.observe(0.02);
        let text = m.render(&registry);
        for line in [
            "reprolog_builder_entries_logged_total{builder=\"b\\\"1\"} 2",
            "reprolog_builder_entries_logged_total{builder=\"b2\"} 0",
            "reprolog_builder_signatures_refused_total{builder=\"b2\"} 1",
            "reprolog_witness_cosignatures_requested_total{witness=\"w\\\\0\"} 2",
            "reprolog_witness_request_seconds_bucket{witness=\"w\\\\0\",le=\"0.025\"} 1",
            "reprolog_witness_request_seconds_count{witness=\"w\\\\0\"} 1",
            "reprolog_disagreements_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains("removed-since"), "{text}");
    }

    #[test]
    fn cpu_seconds_reads_utime_and_stime() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(super::cpu_seconds(stat), Some(3.25));
        assert_eq!(super::cpu_seconds("4242 (x) S 1"), None);
    }
}
