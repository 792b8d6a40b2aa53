//! Dating entries by the signed checkpoints that cover them. A checkpoint carries no time of
//! its own; its witnesses' cosignatures do (C2SP tlog-cosignature, `cosignature/v1`), so an
//! entry was logged no later than the earliest cosignature of the first checkpoint that covers
//! it. Every time reprolog shows comes from there.

use crate::policy::TrustedCheckpoint;

/// A checkpoint's size and the earliest time a trusted witness cosigned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatedCheckpoint {
    /// The tree size.
    pub size: u64,
    /// Seconds since the epoch.
    pub time: u64,
}

impl DatedCheckpoint {
    /// The dated form of a checkpoint that satisfied a policy; `None` without a cosignature.
    pub fn of(trusted: &TrustedCheckpoint) -> Option<Self> {
        let time = trusted
            .signatures
            .iter()
            .filter_map(|s| s.timestamp)
            .min()?;
        Some(DatedCheckpoint {
            size: trusted.checkpoint.size,
            time,
        })
    }
}

/// Dated checkpoints of one log, by size.
#[derive(Clone, Debug, Default)]
pub struct Timeline(Vec<DatedCheckpoint>);

impl Timeline {
    /// The timeline of `checkpoints` (any order). A larger tree cosigned earlier than a
    /// smaller one dates the smaller one too: what a tree holds was logged before it.
    pub fn new(mut checkpoints: Vec<DatedCheckpoint>) -> Self {
        checkpoints.sort_by_key(|c| c.size);
        checkpoints.dedup_by_key(|c| c.size);
        let mut earliest = u64::MAX;
        for c in checkpoints.iter_mut().rev() {
            earliest = earliest.min(c.time);
            c.time = earliest;
        }
        Timeline(checkpoints)
    }

    /// When entry `index` was logged at the latest: the time of the first checkpoint that
    /// covers it, if any does.
    pub fn logged_by(&self, index: u64) -> Option<u64> {
        self.0.iter().find(|c| c.size > index).map(|c| c.time)
    }

    /// The first index that may have been logged at `time` or later: the size of the largest
    /// checkpoint cosigned before `time` (0 when none was). Every entry below it was logged
    /// before `time`.
    pub fn first_index_at(&self, time: u64) -> u64 {
        self.0
            .iter()
            .filter(|c| c.time < time)
            .map(|c| c.size)
            .max()
            .unwrap_or(0)
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian), and back: Howard Hinnant's
/// `days_from_civil`, so that times need no date crate.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC, whole seconds).
pub fn rfc3339(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX / 2);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Reads `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC, whole seconds), as [`rfc3339`] writes it.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || [b[4], b[7], b[10], b[13], b[16], b[19]] != *b"--T::Z" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let digits = s.get(r)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // A day past the month's end would not read back the same.
    if civil_from_days(days) != (y, m, d) {
        return None;
    }
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_dated_by_the_first_checkpoint_that_covers_them() {
        let dated = |size, time| DatedCheckpoint { size, time };
        let t = Timeline::new(vec![dated(10, 100), dated(4, 50), dated(20, 90)]);
        // Size 20 was cosigned at 90, so all it holds (size 10 too) was logged by 90.
        assert_eq!(t.logged_by(0), Some(50));
        assert_eq!(t.logged_by(4), Some(90));
        assert_eq!(t.logged_by(19), Some(90));
        assert_eq!(t.logged_by(20), None);
        assert_eq!(t.first_index_at(50), 0);
        assert_eq!(t.first_index_at(51), 4);
        assert_eq!(t.first_index_at(91), 20);
    }
}
