//! How often a line that can repeat per session or per push is written: at most one line
//! per key per [`LOG_INTERVAL`], the next one carrying how many were left out meanwhile.
//!
//! No clock and no output: `now` comes in with each event and the caller writes the line
//! the verdict allows. The table is bounded by [`LOG_KEYS_MAX`]: past it, events of new
//! keys share one overflow key with the same interval, so a million sessions failing in
//! a million ways still give a bounded number of lines.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// At most one line per key in this time. A minute: a flood is visible within a minute,
/// and an hour of it is 60 lines per key.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Keys tracked at once (a few hundred bytes each at most). Events of further keys share
/// the overflow key until stale keys are swept out, once per interval.
pub const LOG_KEYS_MAX: usize = 1024;

/// What to do with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Write the line; `more` events of the same key were left out since its last line.
    Log { more: u64 },
    /// The key table is full: write the line without the key's detail; `more` events of
    /// keys past the table were left out since the last such line.
    Overflow { more: u64 },
    /// Leave it out (it is counted into the next line of its key).
    Quiet,
}

#[derive(Debug)]
struct Entry {
    last_line: Instant,
    left_out: u64,
}

/// Per-key line limiter; see the module docs.
#[derive(Debug)]
pub struct LogLimit<K> {
    interval: Duration,
    keys_max: usize,
    entries: HashMap<K, Entry>,
    /// The shared key of events past the table.
    overflow: Option<Entry>,
    /// Events left out whose key was swept before its next line: reported by the next
    /// overflow line, so that no count vanishes.
    swept: u64,
    next_sweep: Option<Instant>,
}

impl<K: Hash + Eq> Default for LogLimit<K> {
    fn default() -> Self {
        LogLimit::new(LOG_INTERVAL, LOG_KEYS_MAX)
    }
}

impl<K: Hash + Eq> LogLimit<K> {
    pub fn new(interval: Duration, keys_max: usize) -> LogLimit<K> {
        LogLimit {
            interval,
            keys_max,
            entries: HashMap::new(),
            overflow: None,
            swept: 0,
            next_sweep: None,
        }
    }

    /// Judges one event of `key` at `now`.
    pub fn check(&mut self, key: K, now: Instant) -> Verdict {
        if let Some(entry) = self.entries.get_mut(&key) {
            return match due(entry, now, self.interval) {
                Some(more) => Verdict::Log { more },
                None => Verdict::Quiet,
            };
        }
        if self.entries.len() >= self.keys_max {
            self.sweep(now);
        }
        if self.entries.len() < self.keys_max {
            self.entries.insert(
                key,
                Entry {
                    last_line: now,
                    left_out: 0,
                },
            );
            return Verdict::Log { more: 0 };
        }
        match &mut self.overflow {
            None => {
                self.overflow = Some(Entry {
                    last_line: now,
                    left_out: 0,
                });
                Verdict::Overflow {
                    more: std::mem::take(&mut self.swept),
                }
            }
            Some(entry) => match due(entry, now, self.interval) {
                Some(more) => Verdict::Overflow {
                    more: more + std::mem::take(&mut self.swept),
                },
                None => Verdict::Quiet,
            },
        }
    }

    /// Keys tracked now (at most `keys_max`).
    pub fn keys(&self) -> usize {
        self.entries.len()
    }

    /// Drops the keys whose last line is an interval old, at most once per interval (a
    /// full table of fresh keys is not walked on every event).
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.next_sweep = Some(now + self.interval);
        let interval = self.interval;
        let mut swept = 0;
        self.entries.retain(|_, e| {
            let stale = now.saturating_duration_since(e.last_line) >= interval;
            if stale {
                swept += e.left_out;
            }
            !stale
        });
        self.swept += swept;
    }
}

/// Counts the event into `entry`; `Some(left out)` when a line is due.
fn due(entry: &mut Entry, now: Instant, interval: Duration) -> Option<u64> {
    if now.saturating_duration_since(entry.last_line) >= interval {
        entry.last_line = now;
        Some(std::mem::take(&mut entry.left_out))
    } else {
        entry.left_out += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts lines and what they say was left out, so that every event is accounted for.
    #[derive(Default)]
    struct Tally {
        lines: u64,
        more: u64,
        quiet: u64,
    }

    impl Tally {
        fn add(&mut self, verdict: Verdict) {
            match verdict {
                Verdict::Log { more } | Verdict::Overflow { more } => {
                    self.lines += 1;
                    self.more += more;
                }
                Verdict::Quiet => self.quiet += 1,
            }
        }
    }

    #[test]
    fn one_line_per_key_per_interval_and_the_next_carries_the_count() {
        let t0 = Instant::now();
        let mut limit = LogLimit::default();
        assert_eq!(limit.check("a", t0), Verdict::Log { more: 0 });
        assert_eq!(limit.check("b", t0), Verdict::Log { more: 0 });
        for _ in 0..5 {
            assert_eq!(limit.check("a", t0 + LOG_INTERVAL / 2), Verdict::Quiet);
        }
        let just_before = t0 + LOG_INTERVAL - Duration::from_millis(1);
        assert_eq!(limit.check("a", just_before), Verdict::Quiet);
        assert_eq!(
            limit.check("a", t0 + LOG_INTERVAL),
            Verdict::Log { more: 6 }
        );
        assert_eq!(
            limit.check("b", t0 + LOG_INTERVAL),
            Verdict::Log { more: 0 }
        );
    }

    #[test]
    fn a_million_events_of_ten_keys_over_an_hour_give_a_bounded_number_of_lines() {
        let t0 = Instant::now();
        let mut limit = LogLimit::default();
        let mut tally = Tally::default();
        let events = 1_000_000u64;
        let hour = Duration::from_secs(3600);
        for n in 0..events {
            let now = t0 + hour.mul_f64(n as f64 / events as f64);
            tally.add(limit.check(n % 10, now));
        }
        // Ten keys, one line each per minute of the hour, plus each key's first line.
        let bound = 10 * (hour.as_secs() / LOG_INTERVAL.as_secs() + 1);
        assert!(tally.lines <= bound, "{} lines", tally.lines);
        assert!(tally.lines >= 10 * 60, "{} lines", tally.lines);
        // Every event is a line, counted in a later line, or still waiting for one.
        assert!(tally.lines + tally.more <= events);
        assert!(events - (tally.lines + tally.more) <= 10 * (events / 60));
    }

    #[test]
    fn a_million_distinct_keys_give_at_most_the_table_and_one_overflow_line() {
        let t0 = Instant::now();
        let mut limit = LogLimit::default();
        let mut tally = Tally::default();
        for n in 0..1_000_000u64 {
            // All within one interval: nothing is stale, nothing is swept.
            tally.add(limit.check(n, t0 + Duration::from_micros(n)));
        }
        assert_eq!(tally.lines, LOG_KEYS_MAX as u64 + 1);
        assert_eq!(limit.keys(), LOG_KEYS_MAX);
    }

    #[test]
    fn one_key_past_the_table_is_an_overflow_line_and_the_next_is_quiet() {
        let t0 = Instant::now();
        let mut limit = LogLimit::default();
        for n in 0..LOG_KEYS_MAX {
            assert_eq!(limit.check(n, t0), Verdict::Log { more: 0 }, "key {n}");
        }
        assert_eq!(limit.check(LOG_KEYS_MAX, t0), Verdict::Overflow { more: 0 });
        assert_eq!(limit.check(LOG_KEYS_MAX + 1, t0), Verdict::Quiet);
        // Known keys keep their own lines.
        assert_eq!(limit.check(0, t0), Verdict::Quiet);
        assert_eq!(limit.check(0, t0 + LOG_INTERVAL), Verdict::Log { more: 1 });
    }

    #[test]
    fn stale_keys_make_room_and_their_counts_are_not_lost() {
        let t0 = Instant::now();
        let mut limit = LogLimit::new(LOG_INTERVAL, 2);
        assert_eq!(limit.check("a", t0), Verdict::Log { more: 0 });
        assert_eq!(limit.check("a", t0), Verdict::Quiet);
        assert_eq!(limit.check("b", t0), Verdict::Log { more: 0 });
        assert_eq!(limit.check("c", t0), Verdict::Overflow { more: 0 });
        let later = t0 + LOG_INTERVAL;
        // "b" is refreshed; "a" is stale, swept for "d", its left-out event reported by
        // the next overflow line.
        assert_eq!(limit.check("b", later), Verdict::Log { more: 0 });
        assert_eq!(limit.check("d", later), Verdict::Log { more: 0 });
        assert_eq!(limit.check("e", later), Verdict::Overflow { more: 1 });
    }
}
