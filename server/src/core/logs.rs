//! The core's log lines, each through a [`LogLimit`]: they repeat per session or per
//! registration, so a flood of them is one line per key per interval with a count.
//!
//! What they name: reason and error codes, IMAP hosts (normalised), field names, counts.
//! Never a username, password, endpoint or subscription id, and never an error's message
//! (a 400's message may quote the value at fault).
//!
//! A line the level filter hides is not offered to its limiter: it would use up its key's
//! turn, and the first line after SIGHUP lowers the level would come a minute late.

use std::time::{Duration, Instant};

use engine::EndReason;
use tracing::{debug, enabled, error, info, warn, Level};

use crate::api::ApiError;
use crate::error_code::ErrorCode;
use crate::log_limit::{LogLimit, Verdict};

/// Where a session was when it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Phase {
    /// Logging in: the registration is refused.
    Login,
    /// Ready (idle or polling): the app gets a reconnect push.
    Ready,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Login => "login",
            Phase::Ready => "ready",
        }
    }
}

/// The limiters of the core's repeating lines.
#[derive(Debug, Default)]
pub(super) struct CoreLogs {
    session_ends: LogLimit<(Phase, &'static str, String)>,
    refusals: LogLimit<(ErrorCode, Option<&'static str>)>,
    paced: LogLimit<String>,
    journal: LogLimit<()>,
}

impl CoreLogs {
    /// A session ended; `host` is its IMAP host if its subscription was still known.
    pub(super) fn session_ended(
        &mut self,
        phase: Phase,
        reason: &EndReason,
        host: Option<&str>,
        now: Instant,
    ) {
        let code = reason.code();
        // A deleted or shut-down session ending is the expected way out.
        let expected = matches!(reason, EndReason::Unwatched | EndReason::Shutdown);
        let on = if expected {
            enabled!(Level::DEBUG)
        } else {
            enabled!(Level::INFO)
        };
        // A line the level hides must not use up its key's turn.
        if !on {
            return;
        }
        let host = host.unwrap_or("-").to_owned();
        let verdict = self.session_ends.check((phase, code, host.clone()), now);
        let phase = phase.as_str();
        match verdict {
            Verdict::Quiet => {}
            Verdict::Log { more } if expected => {
                debug!(reason = code, host, phase, more, "session ended")
            }
            Verdict::Log { more } => info!(reason = code, host, phase, more, "session ended"),
            Verdict::Overflow { more } => info!(
                reason = code,
                phase, more, "session ended (too many kinds to list each)"
            ),
        }
    }

    /// A registration (or any request, for a wrong bearer token) was refused with `e`;
    /// its message is not logged.
    pub(super) fn refused(&mut self, e: &ApiError, now: Instant) {
        let code = e.code.as_str();
        let field = e.field.unwrap_or("-");
        // Refusals of load (rate, pacing, capacity) are what an operator must hear of;
        // a client's bad request is the client's business.
        let load = matches!(
            e.code,
            ErrorCode::RateLimited
                | ErrorCode::AtCapacity
                | ErrorCode::TooManySessions
                | ErrorCode::ResolverBusy
        );
        let on = if load {
            enabled!(Level::WARN)
        } else {
            enabled!(Level::DEBUG)
        };
        if !on {
            return;
        }
        match self.refusals.check((e.code, e.field), now) {
            Verdict::Quiet => {}
            Verdict::Log { more } | Verdict::Overflow { more } if load => {
                warn!(code, field, more, "request refused")
            }
            Verdict::Log { more } | Verdict::Overflow { more } => {
                debug!(code, field, more, "request refused")
            }
        }
    }

    /// A login waits `wait` for its turn at `host` (login pacing).
    pub(super) fn paced(&mut self, host: &str, wait: Duration, now: Instant) {
        if !enabled!(Level::INFO) {
            return;
        }
        let wait_ms = wait.as_millis() as u64;
        match self.paced.check(host.to_owned(), now) {
            Verdict::Quiet => {}
            Verdict::Log { more } => info!(host, wait_ms, more, "login paced"),
            Verdict::Overflow { more } => {
                info!(wait_ms, more, "login paced (too many hosts to list each)")
            }
        }
    }

    /// A journal write a registration or DELETE waited for did not commit.
    pub(super) fn journal_failed(&mut self, now: Instant) {
        if let Verdict::Log { more } | Verdict::Overflow { more } = self.journal.check((), now) {
            error!(more, "journal write failed; the request was answered 500");
        }
    }
}

/// Records the previous run left that cannot be pushed to (dropped): one line in all.
pub(super) fn unusable_records(n: usize) {
    if n > 0 {
        warn!(records = n, "journal records unusable and dropped");
    }
}
