//! Virtual time: milliseconds counted from the reactor's start.
//!
//! Session state never holds `std::time::Instant`: every deadline is a [`Tick`], and `now` is
//! always an argument, so tests can run days of protocol time in microseconds.

use std::ops::Add;
use std::time::Duration;

/// A point in time, in milliseconds since the owning reactor (or test driver) started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(u64);

impl Tick {
    /// The reactor's start.
    pub const ZERO: Tick = Tick(0);
    /// A deadline that never comes.
    pub const NEVER: Tick = Tick(u64::MAX);

    pub const fn from_ms(ms: u64) -> Tick {
        Tick(ms)
    }

    pub const fn as_ms(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Tick) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Tick {
    type Output = Tick;

    /// Saturates at [`Tick::NEVER`].
    fn add(self, rhs: Duration) -> Tick {
        let ms = u64::try_from(rhs.as_millis()).unwrap_or(u64::MAX);
        Tick(self.0.saturating_add(ms))
    }
}

/// Maps the wall clock onto ticks for one reactor.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Tick {
        let ms = self.start.elapsed().as_millis();
        Tick(u64::try_from(ms).unwrap_or(u64::MAX - 1))
    }

    /// How long until `deadline`, for `mio::Poll::poll`.
    pub fn until(&self, deadline: Tick) -> Option<Duration> {
        if deadline == Tick::NEVER {
            return None;
        }
        Some(deadline.since(self.now()))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_saturates_at_never() {
        assert_eq!(
            Tick::from_ms(5) + Duration::from_millis(7),
            Tick::from_ms(12)
        );
        assert_eq!(Tick::NEVER + Duration::from_secs(1), Tick::NEVER);
        assert_eq!(Tick::from_ms(1).since(Tick::from_ms(5)), Duration::ZERO);
    }
}
