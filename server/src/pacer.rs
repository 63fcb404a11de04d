//! Logins per IMAP host, paced (GCRA): a restart's wave of re-registrations must not look
//! like an attack to a provider. A login that would wait longer than the queue allows is
//! refused with the time after which it would fit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most hosts tracked; past it, hosts with no debt are forgotten.
pub const HOSTS_MAX: usize = 100_000;

#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    burst: Duration,
    max_wait: Duration,
    /// Theoretical arrival time of the next login, per host.
    tat: HashMap<String, Instant>,
}

impl Pacer {
    /// `per_second` logins per host, with bursts of as many; waits up to `max_wait`.
    pub fn new(per_second: u32, max_wait: Duration) -> Pacer {
        let interval = Duration::from_secs(1) / per_second.max(1);
        Pacer {
            interval,
            burst: interval * per_second.max(1),
            max_wait,
            tat: HashMap::new(),
        }
    }

    /// Reserves a login slot for `host`: `Ok(wait)` before it may start, or `Err(retry)`
    /// when the wait would pass `max_wait` (nothing is reserved then).
    pub fn reserve(&mut self, host: &str, now: Instant) -> Result<Duration, Duration> {
        if self.tat.len() >= HOSTS_MAX {
            self.tat.retain(|_, tat| *tat > now);
        }
        let key = host.to_ascii_lowercase();
        let tat = self.tat.get(&key).copied().unwrap_or(now).max(now);
        // A login may start once the debt is within the burst allowance.
        let start = (tat + self.interval)
            .checked_sub(self.burst)
            .unwrap_or(now)
            .max(now);
        let wait = start - now;
        if wait > self.max_wait {
            return Err(wait - self.max_wait + self.interval);
        }
        self.tat.insert(key, tat + self.interval);
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_logins_are_spaced_then_refused() {
        let mut pacer = Pacer::new(10, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(pacer.reserve("imap.example.org", t0), Ok(Duration::ZERO));
        }
        // The next ten wait 100 ms more each, up to the 1 s queue.
        for n in 1..=10u32 {
            assert_eq!(
                pacer.reserve("IMAP.example.org", t0),
                Ok(Duration::from_millis(100) * n)
            );
        }
        // One past the queue: refused with a time to come back.
        let retry = pacer.reserve("imap.example.org", t0).unwrap_err();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_millis(200),
            "{retry:?}"
        );
        // Other hosts are not affected; time pays the debt back.
        assert_eq!(pacer.reserve("imap.other.example", t0), Ok(Duration::ZERO));
        let later = t0 + Duration::from_secs(3);
        assert_eq!(pacer.reserve("imap.example.org", later), Ok(Duration::ZERO));
    }
}
