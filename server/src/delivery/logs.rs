//! The push pool's log lines: failed attempts by origin (scheme://host:port, never the
//! path, which is the subscription's capability) and status, one line per key per
//! interval with a count ([`LogLimit`]), so an endpoint answering 5xx to every push of a
//! million subscriptions is a line a minute.

use std::time::Instant;

use push::{Outcome, Unsendable};
use tracing::{enabled, info, warn, Level};

use crate::log_limit::{LogLimit, Verdict};

/// The limiter of failed attempts, by (origin, status).
#[derive(Debug, Default)]
pub(super) struct PushLogs {
    failures: LogLimit<(String, &'static str)>,
}

impl PushLogs {
    /// One attempt's outcome; a delivered push is not logged.
    pub(super) fn attempt(&mut self, origin: &str, outcome: &Outcome, now: Instant) {
        let Some(status) = status(outcome) else {
            return;
        };
        // A hidden line must not use up its key's turn (see `core::logs`).
        if !enabled!(Level::INFO) {
            return;
        }
        let verdict = self.failures.check((origin.to_owned(), status), now);
        // 404 and 410 are an app that unsubscribed: expected, not a fault of anybody's.
        let gone = matches!(outcome, Outcome::Gone);
        match verdict {
            Verdict::Quiet => {}
            Verdict::Log { more } if gone => info!(origin, status, more, "push endpoint gone"),
            Verdict::Log { more } => warn!(origin, status, more, "push attempt failed"),
            Verdict::Overflow { more } => warn!(
                status,
                more, "push attempt failed (too many origins to list each)"
            ),
        }
    }
}

/// The status of a failed attempt, as the log shows it; `None` for a delivered one.
fn status(outcome: &Outcome) -> Option<&'static str> {
    Some(match outcome {
        Outcome::Delivered => return None,
        Outcome::Gone => "404/410",
        Outcome::TooLarge => "413",
        Outcome::RateLimited { .. } => "429",
        Outcome::Retry { status: None } => "network_error",
        Outcome::Retry { status: Some(s) }
        | Outcome::Rejected { status: s }
        | Outcome::Redirect { status: s } => status_text(*s),
        Outcome::Unsendable(Unsendable::PublicKeyRejected) => "p256dh_rejected",
        Outcome::Unsendable(Unsendable::InvalidRequest) => "invalid_request",
        Outcome::Unsendable(Unsendable::ForbiddenDestination) => "forbidden_destination",
        Outcome::Unsendable(_) => "unsendable",
    })
}

/// A status code as static text: the common ones by name, the rest by class, so that the
/// key table holds a handful of statuses per origin at most.
fn status_text(status: u16) -> &'static str {
    match status {
        300..=399 => "3xx",
        400 => "400",
        401 => "401",
        402 => "4xx",
        403 => "403",
        404 => "404",
        405..=499 => "4xx",
        500 => "500",
        501 => "5xx",
        502 => "502",
        503 => "503",
        504 => "504",
        505..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_few_and_delivered_is_none() {
        assert_eq!(status(&Outcome::Delivered), None);
        assert_eq!(status(&Outcome::Retry { status: Some(503) }), Some("503"));
        assert_eq!(status(&Outcome::Retry { status: Some(599) }), Some("5xx"));
        assert_eq!(status(&Outcome::Rejected { status: 418 }), Some("4xx"));
        assert_eq!(
            status(&Outcome::Retry { status: None }),
            Some("network_error")
        );
    }
}
