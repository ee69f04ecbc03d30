//! What SES v1's GetSendStatistics reports: the relay's sends counted in 15-minute
//! intervals, the last two weeks of them, in this process (a restart starts anew).
//!
//! Counted per submission ([`crate::relay::Relay::submit`], SMTP's and the APIs' alike):
//! - `delivery_attempts`: the recipients of a message accepted (forwarded, or kept from the
//!   upstream for the mailbox simulator or the suppression list);
//! - `bounces`: the mailbox simulator's `bounce@` and `suppressionlist@` recipients of an
//!   accepted message, and every recipient of a message the upstream refused for good;
//! - `complaints`: the mailbox simulator's `complaint@` recipients;
//! - `rejects`: messages refused under SES's rules (unverified identities, a missing or
//!   paused set, ...). Throttled messages and the upstream's temporary failures count
//!   nowhere, as SES counts no message it did not take.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The length of one data point's interval.
pub const INTERVAL: Duration = Duration::from_secs(15 * 60);
/// How far back data points are kept: two weeks, as SES reports.
pub const KEPT: Duration = Duration::from_secs(14 * 24 * 3600);

/// The counts of one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub delivery_attempts: u64,
    pub bounces: u64,
    pub complaints: u64,
    pub rejects: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.delivery_attempts = self
            .delivery_attempts
            .saturating_add(other.delivery_attempts);
        self.bounces = self.bounces.saturating_add(other.bounces);
        self.complaints = self.complaints.saturating_add(other.complaints);
        self.rejects = self.rejects.saturating_add(other.rejects);
    }

    fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

/// One interval with something counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPoint {
    /// The interval's start, in seconds since the epoch.
    pub start: u64,
    pub counts: Counts,
}

impl DataPoint {
    /// The start as SES writes a timestamp: `2026-11-27T06:15:00Z`.
    pub fn timestamp_rfc3339(&self) -> String {
        let start = i64::try_from(self.start).unwrap_or(0);
        time::OffsetDateTime::from_unix_timestamp(start)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
    }
}

/// The intervals with counts, oldest first; at most two weeks' (1344) of them.
#[derive(Debug, Default)]
pub struct SendStatistics {
    points: Mutex<VecDeque<DataPoint>>,
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl SendStatistics {
    pub fn new() -> SendStatistics {
        SendStatistics::default()
    }

    /// Adds `counts` to the interval of `at`.
    pub fn add(&self, at: SystemTime, counts: Counts) {
        if counts.is_empty() {
            return;
        }
        let start = seconds(at) / INTERVAL.as_secs() * INTERVAL.as_secs();
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        match points.back_mut() {
            Some(last) if last.start == start => last.counts.add(counts),
            // A clock set back: counted in the latest interval rather than out of order.
            Some(last) if last.start > start => last.counts.add(counts),
            _ => points.push_back(DataPoint { start, counts }),
        }
        let oldest = start.saturating_sub(KEPT.as_secs());
        while points.front().is_some_and(|p| p.start < oldest) {
            points.pop_front();
        }
    }

    /// The data points of the two weeks before `now`, oldest first.
    pub fn data_points(&self, now: SystemTime) -> Vec<DataPoint> {
        let oldest = seconds(now).saturating_sub(KEPT.as_secs());
        let points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        points
            .iter()
            .filter(|p| p.start >= oldest)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn counts_fall_in_fifteen_minute_intervals() {
        let stats = SendStatistics::new();
        let base = 1_800_000_000; // a multiple of 900
        let one = Counts {
            delivery_attempts: 2,
            ..Counts::default()
        };
        stats.add(at(base + 10), one);
        stats.add(at(base + 899), one);
        stats.add(
            at(base + 900),
            Counts {
                rejects: 1,
                ..Counts::default()
            },
        );
        stats.add(at(base + 901), Counts::default());
        let points = stats.data_points(at(base + 1000));
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].start, base);
        assert_eq!(points[0].counts.delivery_attempts, 4);
        assert_eq!(points[1].counts.rejects, 1);
        assert_eq!(points[0].timestamp_rfc3339(), "2027-01-15T08:00:00Z");
        // Two weeks later, they are gone.
        assert!(
            stats
                .data_points(at(base + KEPT.as_secs() + 2000))
                .is_empty()
        );
    }

    #[test]
    fn old_intervals_are_dropped() {
        let stats = SendStatistics::new();
        let one = Counts {
            bounces: 1,
            ..Counts::default()
        };
        stats.add(at(0), one);
        stats.add(at(KEPT.as_secs() + 3600), one);
        assert_eq!(stats.points.lock().unwrap().len(), 1);
    }
}
