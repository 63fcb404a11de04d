//! A fixed-bucket duration histogram that threads record into without a lock and without
//! allocating: an array of atomic counters, one per bucket, and an atomic sum.
//!
//! Why fixed buckets: a Prometheus histogram (`_bucket{le=..}`, `_sum`, `_count`) is
//! aggregated across reactors and servers only if every one uses the same bounds, and a
//! record must cost a reactor turn nothing but a short scan and two relaxed atomic adds.
//! The bounds ([`BOUNDS_US`]) span 10 µs (a reactor turn) to 10 s (a push behind a slow
//! service); anything longer falls in the last, unbounded bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds, ascending. One more bucket, `+Inf`,
/// takes what is longer than the last.
pub const BOUNDS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets in all: one per bound and `+Inf`.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// The live histogram, shared between the thread that records and the one that reads.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative): bucket `i` holds those above
    /// `BOUNDS_US[i - 1]` and at most `BOUNDS_US[i]`.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of all observations, nanoseconds (wraps after 584 years of summed time).
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Counts one observation. Never allocates, never blocks.
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// What has been recorded so far. Readers may see a record's bucket before its sum;
    /// the next read is consistent again.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut snapshot = HistogramSnapshot {
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            ..HistogramSnapshot::default()
        };
        for (to, from) in snapshot.buckets.iter_mut().zip(&self.buckets) {
            *to = from.load(Ordering::Relaxed);
        }
        snapshot
    }
}

/// A histogram's counts at one moment; snapshots of several histograms add up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket, not cumulative (see [`Histogram`]).
    pub buckets: [u64; BUCKETS],
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s counts to these (the engine's reactors into one).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }

    /// Cumulative counts with their upper bounds in seconds (`None` for `+Inf`), as the
    /// Prometheus `_bucket{le=..}` series wants them.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        let bounds = BOUNDS_US.iter().map(|&us| Some(us as f64 / 1e6));
        let mut total = 0;
        bounds
            .chain(std::iter::once(None))
            .zip(self.buckets.iter())
            .map(move |(le, n)| {
                total += n;
                (le, total)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_upper_bound() {
        let h = Histogram::default();
        h.record(Duration::from_micros(10)); // le 10 µs, inclusive
        h.record(Duration::from_micros(11)); // le 25 µs
        h.record(Duration::from_secs(10)); // the last bound
        h.record(Duration::from_secs(11)); // +Inf
        let s = h.snapshot();
        assert_eq!((s.buckets[0], s.buckets[1]), (1, 1));
        assert_eq!((s.buckets[BUCKETS - 2], s.buckets[BUCKETS - 1]), (1, 1));
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_ns, 21_000_021_000);
        let cumulative: Vec<_> = s.cumulative().collect();
        assert_eq!(cumulative[0], (Some(0.00001), 1));
        assert_eq!(cumulative[BUCKETS - 1], (None, 4));
        assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
        let mut merged = s;
        merged.merge(&s);
        assert_eq!(merged.count(), 8);
    }
}
