//! The simulated push service: it answers each request the core's push scheduler sends
//! (`Output::Send`), with a fault now and then, and checks what the oracle knows of
//! reconnect and restart pushes.

use std::time::Duration;

use push::Outcome;
use server::core::{Attempt, Done, Input};

use super::{Event, Sim};

impl Sim {
    /// A push request from the core: checked against what the oracle knows, then answered
    /// later, now and then with a fault.
    pub(super) fn send(&mut self, attempt: Attempt) {
        let id = attempt.subscription().to_string();
        if self.deleted.contains(&id) {
            panic!("a push for {id} after its DELETE: {attempt:?}");
        }
        self.tally.attempts += 1;
        if attempt.number() == 1 {
            self.pushes += 1;
            self.first_attempt(&id, &attempt);
        }
        let outcome = self.fault();
        if outcome == Outcome::Delivered {
            // Accepted when it arrives: a crash before the answer cannot take it back.
            self.delivered(&id, &attempt);
        }
        let delay = match outcome {
            Outcome::Retry { status: None } => 30_000,
            _ if self.push_rng.chance(10) => self.push_rng.between(5_000, 30_000),
            _ => self.push_rng.between(20, 300),
        };
        let answered_at = self.base + Duration::from_millis(self.now_ms + delay);
        let done = Done {
            attempt,
            outcome,
            left_at: Some(self.now().instant),
            answered_at,
        };
        self.at(delay, Event::PushDone(done));
    }

    /// The push service's answer: mostly 2xx; 429 with Retry-After, 5xx, a timeout or
    /// 410 now and then.
    fn fault(&mut self) -> Outcome {
        match self.push_rng.below(100) {
            0..=6 => {
                self.tally.rate_limited += 1;
                let secs = self.push_rng.between(1, 120);
                Outcome::RateLimited {
                    retry_after: Duration::from_secs(secs),
                }
            }
            7..=12 => {
                self.tally.server_errors += 1;
                Outcome::Retry { status: Some(503) }
            }
            13..=16 => {
                self.tally.timeouts += 1;
                Outcome::Retry { status: None }
            }
            17..=18 => {
                self.tally.gone += 1;
                Outcome::Gone
            }
            _ => Outcome::Delivered,
        }
    }

    /// A push job's first request: at most one reconnect push per subscription, and at
    /// most one `server_restart` push per crash that found it journalled.
    fn first_attempt(&mut self, id: &str, attempt: &Attempt) {
        let Some(reason) = attempt.reconnect_reason() else {
            return;
        };
        let sub = self.subs.entry(id.to_owned()).or_default();
        if reason == "server_restart" {
            self.tally.restarts += 1;
            sub.restarts_now += 1;
            assert!(
                sub.restart_pending && sub.restarts_now <= 1,
                "{} restart pushes for {id} from this start (owed: {})",
                sub.restarts_now,
                sub.restart_pending
            );
        } else {
            self.tally.reconnects += 1;
            sub.reconnects += 1;
            assert!(
                sub.reconnects <= 1,
                "{} reconnect pushes for {id}",
                sub.reconnects
            );
        }
    }

    fn delivered(&mut self, id: &str, attempt: &Attempt) {
        let Some(reason) = attempt.reconnect_reason() else {
            return;
        };
        let sub = self.subs.entry(id.to_owned()).or_default();
        if reason == "server_restart" {
            sub.restarts_delivered += 1;
            assert!(
                sub.restarts_delivered <= sub.restart_owed,
                "{id}: {} restart pushes delivered for {} crashes that found it journalled",
                sub.restarts_delivered,
                sub.restart_owed
            );
        } else {
            sub.reconnects_delivered += 1;
            assert!(
                sub.reconnects_delivered <= 1,
                "{id}: {} reconnect pushes delivered",
                sub.reconnects_delivered
            );
        }
    }

    pub(super) fn push_done(&mut self, done: Done) {
        if done.outcome == Outcome::Gone {
            let id = done.attempt.subscription().to_string();
            if let Some(s) = self.subs.get_mut(&id) {
                s.gone = true;
            }
        }
        self.input(Input::PushDone(done));
    }
}
