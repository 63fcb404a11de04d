//! `/readyz`: whether a load balancer should send this server new registrations, and the
//! journal probe that lets a failed journal turn ready again.
//!
//! Not ready, in this order of precedence:
//! - `draining`: shutdown has begun ([`super::Input::Shutdown`]);
//! - `journal_unavailable`: the last journal write failed (a registration would get `500`),
//!   or the writer thread is gone (its writes fail at once), or this node is fenced (it
//!   could not renew its heartbeat in the shared journal, see [`super::cluster`]);
//! - `at_capacity`: the server holds `sessions_capacity` keys, the lesser of
//!   `limits.sessions_max` and what the descriptor budget allows (a registration would get
//!   `503 at_capacity`).
//!
//! A load balancer that sees `journal_unavailable` stops sending registrations, so none
//! would ever show that the journal works again: while it fails, the core asks for a probe
//! write ([`super::Output::JournalProbe`]) every [`JOURNAL_PROBE_INTERVAL`], and the first
//! that is durable makes the server ready again.

use std::hash::Hash;
use std::time::{Duration, Instant};

use httpd::Response;

use super::{Core, Output};

/// How often a failing journal is probed. One small write a second costs nothing and
/// brings the server back within a second or two of the disk recovering.
pub const JOURNAL_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Why the server is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    Draining,
    JournalUnavailable,
    AtCapacity,
}

impl NotReady {
    /// The `reason` in the `/readyz` body; stable, since monitors match on it.
    pub fn as_str(self) -> &'static str {
        match self {
            NotReady::Draining => "draining",
            NotReady::JournalUnavailable => "journal_unavailable",
            NotReady::AtCapacity => "at_capacity",
        }
    }
}

/// The `/readyz` answer: `200 {"ready":true}` or `503 {"ready":false,"reason":..}`.
pub fn response(readiness: Result<(), NotReady>) -> Response {
    match readiness {
        Ok(()) => Response::json(200, r#"{"ready":true}"#),
        Err(reason) => Response::json(
            503,
            serde_json::json!({"ready": false, "reason": reason.as_str()}).to_string(),
        ),
    }
}

/// What the core knows of the journal's health.
#[derive(Debug, Default)]
pub(super) struct JournalHealth {
    /// The last write whose outcome came back failed.
    failing: bool,
    /// When the next probe is due, while failing and none is in flight.
    probe_due: Option<Instant>,
    /// The ticket of the probe in flight.
    probe_ticket: Option<u64>,
}

impl JournalHealth {
    /// A write's outcome, `ok` or not: the latest outcome is the journal's health.
    fn settled(&mut self, ticket: u64, ok: bool, now: Instant) {
        if self.probe_ticket == Some(ticket) {
            self.probe_ticket = None;
        }
        self.failing = !ok;
        self.probe_due = match (ok, self.probe_ticket, self.probe_due) {
            (true, _, _) | (false, Some(_), _) => None,
            (false, None, Some(due)) => Some(due),
            (false, None, None) => Some(now + JOURNAL_PROBE_INTERVAL),
        };
    }

    pub(super) fn due(&self) -> Option<Instant> {
        self.probe_due
    }
}

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    /// Whether the server takes new registrations now (see the module docs).
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.shut_down {
            return Err(NotReady::Draining);
        }
        if self.journal.failing || self.fenced() {
            return Err(NotReady::JournalUnavailable);
        }
        if self.registry.keys() >= self.budget.sessions_capacity {
            return Err(NotReady::AtCapacity);
        }
        Ok(())
    }

    /// A journal write's outcome, for the journal's health.
    pub(super) fn journal_settled(&mut self, ticket: u64, ok: bool, now: Instant) {
        self.journal.settled(ticket, ok, now);
    }

    /// Asks for a probe write once one is due.
    pub(super) fn probe_journal(&mut self, now: Instant) {
        if self.journal.probe_due.is_none_or(|due| due > now) {
            return;
        }
        let ticket = self.ticket();
        self.journal.probe_due = None;
        self.journal.probe_ticket = Some(ticket);
        self.out.push_back(Output::JournalProbe { ticket });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_schedules_one_probe_and_a_success_clears_it() {
        let t0 = Instant::now();
        let mut h = JournalHealth::default();
        h.settled(1, false, t0);
        assert!(h.failing);
        assert_eq!(h.due(), Some(t0 + JOURNAL_PROBE_INTERVAL));
        // A second failure keeps the first due time.
        h.settled(2, false, t0 + Duration::from_millis(500));
        assert_eq!(h.due(), Some(t0 + JOURNAL_PROBE_INTERVAL));
        // A probe in flight: nothing more is due until it comes back.
        h.probe_due = None;
        h.probe_ticket = Some(3);
        h.settled(4, false, t0 + JOURNAL_PROBE_INTERVAL);
        assert_eq!(h.due(), None);
        let t1 = t0 + 2 * JOURNAL_PROBE_INTERVAL;
        h.settled(3, false, t1);
        assert_eq!(h.due(), Some(t1 + JOURNAL_PROBE_INTERVAL));
        h.settled(5, true, t1);
        assert!(!h.failing && h.due().is_none());
    }

    #[test]
    fn the_bodies_name_the_reason() {
        assert_eq!(response(Ok(())).status, 200);
        let r = response(Err(NotReady::JournalUnavailable));
        assert_eq!(r.status, 503);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["reason"], "journal_unavailable");
        assert_eq!(body["ready"], false);
    }
}
