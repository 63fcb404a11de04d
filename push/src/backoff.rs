//! When to try a failed push again: capped exponential backoff with jitter.
//!
//! Pure functions of the attempt number, the time already spent and a random
//! `u32` the caller draws, so tests need neither a clock nor an RNG. The
//! caller owns both and MUST pass a fresh random value per call: identical
//! values across subscriptions would synchronize retries into bursts, which
//! is what jitter exists to prevent.

use crate::sender::Outcome;
use std::time::Duration;

/// Delay before retry `attempt` (0 for the first retry) is drawn uniformly
/// from `[c/2, c)` where `c = min(cap, base · 2^attempt)` ("equal jitter":
/// never shorter than half the exponential step, so a failing service sees
/// the load fall off, yet spread out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// No retry is scheduled whose delay would end past this much time since
    /// the first attempt.
    pub give_up_after: Duration,
}

impl Default for Backoff {
    /// 1 s, 2 s, 4 s … capped at 60 s; give up after 10 minutes. A new-mail
    /// notification older than that is stale, and the next change on the
    /// mailbox sends a fresh one.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            give_up_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The jittered delay before retry `attempt`. Never panics: large
    /// attempts saturate at the cap.
    pub fn delay(&self, attempt: u32, random: u32) -> Duration {
        let base_ms = self.base.as_millis();
        let cap_ms = self.cap.as_millis();
        // 2^attempt stops mattering long before 2^64; clamp so the shift is
        // defined and the product cannot overflow u128.
        let ceiling_ms = base_ms.saturating_mul(1u128 << attempt.min(64)).min(cap_ms);
        let half_ms = ceiling_ms / 2;
        let spread_ms = ((ceiling_ms - half_ms) * u128::from(random)) >> 32;
        duration_from_ms(half_ms + spread_ms)
    }

    /// The delay before retry `attempt`, or `None` once it would end more
    /// than [`Backoff::give_up_after`] after the first attempt.
    pub fn next_delay(&self, attempt: u32, elapsed: Duration, random: u32) -> Option<Duration> {
        self.within_budget(elapsed, self.delay(attempt, random))
    }

    /// What to do after `outcome`: `Some(delay)` to try again, `None` to stop
    /// (delivered, or a failure that retrying will not fix, or the time
    /// budget is spent). A `Retry-After` longer than the backoff wins.
    pub fn after(
        &self,
        outcome: &Outcome,
        attempt: u32,
        elapsed: Duration,
        random: u32,
    ) -> Option<Duration> {
        match outcome {
            Outcome::Retry { .. } => self.next_delay(attempt, elapsed, random),
            Outcome::RateLimited { retry_after } => {
                let delay = self.delay(attempt, random).max(*retry_after);
                self.within_budget(elapsed, delay)
            }
            Outcome::Delivered
            | Outcome::Gone
            | Outcome::TooLarge
            | Outcome::Rejected { .. }
            | Outcome::Redirect { .. }
            | Outcome::Unsendable(_) => None,
        }
    }

    fn within_budget(&self, elapsed: Duration, delay: Duration) -> Option<Duration> {
        match elapsed.checked_add(delay) {
            Some(end) if end <= self.give_up_after => Some(delay),
            _ => None,
        }
    }
}

fn duration_from_ms(ms: u128) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_then_caps() {
        let b = Backoff::default();
        // random = 0 gives the bottom of the range, u32::MAX the top.
        let lows: Vec<_> = (0..8).map(|a| b.delay(a, 0)).collect();
        assert_eq!(
            lows,
            [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0].map(Duration::from_secs_f64)
        );
        for attempt in 0..8 {
            let high = b.delay(attempt, u32::MAX);
            let ceiling = S(1 << attempt).min(S(60));
            assert!(high < ceiling && high >= ceiling - Duration::from_millis(1));
        }
    }

    #[test]
    fn jitter_stays_in_range() {
        let b = Backoff::default();
        for attempt in [0, 3, 10, 63, 64, 1000, u32::MAX] {
            for random in [0, 1, 12345, u32::MAX / 2, u32::MAX] {
                let d = b.delay(attempt, random);
                let ceiling = b.cap.min(b.base.saturating_mul(1 << attempt.min(20)));
                assert!(d >= ceiling / 2 && d <= ceiling, "{attempt} {random} {d:?}");
            }
        }
    }

    #[test]
    fn gives_up_after_the_budget() {
        let b = Backoff::default();
        assert_eq!(b.next_delay(0, S(0), 0), Some(Duration::from_millis(500)));
        assert_eq!(b.next_delay(10, S(569), 0), Some(S(30)));
        assert_eq!(b.next_delay(10, S(571), 0), None);
        assert_eq!(b.next_delay(10, Duration::MAX, 0), None);

        // Worst case (always the top of the range) still stops in bounded
        // attempts.
        let mut elapsed = Duration::ZERO;
        let mut attempts = 0;
        while let Some(d) = b.next_delay(attempts, elapsed, u32::MAX) {
            elapsed += d;
            attempts += 1;
        }
        assert!(elapsed <= b.give_up_after);
        assert!((10..=20).contains(&attempts), "{attempts}");
    }

    #[test]
    fn outcome_decides() {
        let b = Backoff::default();
        assert_eq!(b.after(&Outcome::Delivered, 0, S(0), 0), None);
        assert_eq!(b.after(&Outcome::Gone, 0, S(0), 0), None);
        assert_eq!(
            b.after(&Outcome::Rejected { status: 400 }, 0, S(0), 0),
            None
        );
        assert_eq!(
            b.after(&Outcome::Redirect { status: 301 }, 0, S(0), 0),
            None
        );
        assert_eq!(
            b.after(&Outcome::Retry { status: Some(503) }, 1, S(0), 0),
            Some(S(1))
        );
        let limited = Outcome::RateLimited {
            retry_after: S(120),
        };
        assert_eq!(b.after(&limited, 0, S(0), 0), Some(S(120)));
        assert_eq!(b.after(&limited, 0, S(500), 0), None, "past the budget");
        let short = Outcome::RateLimited { retry_after: S(0) };
        assert_eq!(b.after(&short, 3, S(0), 0), Some(S(4)), "backoff floor");
    }
}
