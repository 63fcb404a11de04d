//! A session's deadline table, keyed by timer kind (quinn's `TimerTable`).

use crate::time::Tick;

/// The kinds of deadline a session keeps. `handle_timeout` visits them in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// The TCP connect must complete.
    Connect = 0,
    /// The answer we are waiting for must arrive (which one: `Session::waiting`).
    Response = 1,
    /// Time to end IDLE with DONE and issue it again (RFC 2177: before 29 minutes).
    IdleRefresh = 2,
    /// Time to send NOOP to a server without IDLE.
    Poll = 3,
    /// A partial response must be completed (a slow-drip server cannot hold a buffer).
    Partial = 4,
}

impl TimerKind {
    pub const ALL: [TimerKind; 5] = [
        TimerKind::Connect,
        TimerKind::Response,
        TimerKind::IdleRefresh,
        TimerKind::Poll,
        TimerKind::Partial,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    at: [Tick; 5],
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            at: [Tick::NEVER; 5],
        }
    }
}

impl Timers {
    pub fn set(&mut self, kind: TimerKind, at: Tick) {
        self.at[kind as usize] = at;
    }

    pub fn stop(&mut self, kind: TimerKind) {
        self.at[kind as usize] = Tick::NEVER;
    }

    pub fn stop_all(&mut self) {
        self.at = [Tick::NEVER; 5];
    }

    pub fn get(&self, kind: TimerKind) -> Tick {
        self.at[kind as usize]
    }

    /// Stops and reports `kind` if its deadline is at or before `now`.
    pub fn expire(&mut self, kind: TimerKind, now: Tick) -> bool {
        let due = self.at[kind as usize] <= now;
        if due {
            self.stop(kind);
        }
        due
    }

    /// The earliest deadline, or [`Tick::NEVER`].
    pub fn earliest(&self) -> Tick {
        self.at.iter().copied().min().unwrap_or(Tick::NEVER)
    }
}
