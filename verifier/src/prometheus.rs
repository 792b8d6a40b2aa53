//! The Prometheus text exposition format, written by hand (a metrics crate would be more code
//! than this): label escaping, series headers and fixed-bucket histograms, shared by the log
//! server, the witness and the gate (feature `server`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A label value as the text format wants it: backslash, double quote and newline escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in millionths, so it fits an integer atomic.
    sum_micro: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (seconds, for latencies).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, v: f64) {
        for (b, bucket) in self.bounds.iter().zip(&self.buckets) {
            if v <= *b {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micro.fetch_add((v * 1e6) as u64, Relaxed);
    }

    /// Counts one duration, in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// The histogram with its header.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "histogram", help);
        self.render_series(out, name, "");
    }

    /// One labelled series, without the header; `labels` is `key="escaped value"` or empty.
    pub fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let (bucket_labels, plain) = match labels {
            "" => (String::new(), String::new()),
            l => (format!("{l},"), format!("{{{l}}}")),
        };
        for (b, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{bucket_labels}le=\"{b}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{bucket_labels}le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{plain} {}",
            self.sum_micro.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{plain} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histograms_count_into_every_bucket_at_or_above() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_count 2\n"), "{out}");
    }
}
