//! The sender threads: each takes an [`Attempt`], makes its one request and hands back
//! a [`Done`]. No rule lives here: which attempt goes when, and what an outcome means,
//! is the [`super::Scheduler`]'s.

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use push::{Notification, Outcome, Protocol};

use super::scheduler::{Attempt, Done};

/// Attempts waiting for a sender, per sender thread: the work queue holds `threads` of
/// them. The scheduler never hands out more than `threads` attempts at once, so the
/// queue is never full while its owner follows the scheduler; the done queue, of the
/// same size, never makes a sender wait either.
pub const WORK_QUEUE_PER_THREAD: usize = 1;

/// How long [`Pool::stop`] waits at least for idle senders to notice the closed queue.
const SENDER_EXIT_WAIT: Duration = Duration::from_millis(100);

/// `threads` sender threads. See the module docs.
pub struct Pool {
    work: Option<Sender<Attempt>>,
    done: Receiver<Done>,
    senders: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("senders", &self.senders.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts `threads` (at least 1) sender threads that send with `sender`.
    pub fn start(threads: usize, sender: std::sync::Arc<push::Sender>) -> std::io::Result<Pool> {
        let threads = threads.max(1);
        let (work_tx, work_rx) = work_channel(threads);
        let (done_tx, done_rx) = done_channel(threads);
        let mut senders = Vec::with_capacity(threads);
        for i in 0..threads {
            let (sender, work, done) = (sender.clone(), work_rx.clone(), done_tx.clone());
            let handle = thread::Builder::new()
                .name(format!("push-sender-{i}"))
                .spawn(move || run_sender(&sender, &work, &done))?;
            senders.push(handle);
        }
        Ok(Pool {
            work: Some(work_tx),
            done: done_rx,
            senders,
        })
    }

    /// Hands `attempt` to an idle sender without waiting. `Err` gives it back when the
    /// queue is full (the owner handed out more than the scheduler allows) or the pool
    /// has stopped.
    pub fn send(&self, attempt: Attempt) -> Result<(), Attempt> {
        let Some(work) = &self.work else {
            return Err(attempt);
        };
        work.try_send(attempt).map_err(|e| match e {
            TrySendError::Full(a) | TrySendError::Disconnected(a) => a,
        })
    }

    /// The attempts made, for the owner to select on.
    pub fn done(&self) -> &Receiver<Done> {
        &self.done
    }

    /// Closes the work queue and waits until `until` (and briefly for idle senders) for
    /// the senders to end. Senders still in a request are left to end on their own.
    pub fn stop(mut self, until: Instant) {
        self.work = None;
        let until = until.max(Instant::now() + SENDER_EXIT_WAIT);
        let senders = std::mem::take(&mut self.senders);
        while Instant::now() < until && !senders.iter().all(JoinHandle::is_finished) {
            thread::sleep(Duration::from_millis(1));
        }
        for sender in senders.into_iter().filter(JoinHandle::is_finished) {
            let _ = sender.join();
        }
    }
}

/// The bounded queue of attempts for `threads` senders.
fn work_channel(threads: usize) -> (Sender<Attempt>, Receiver<Attempt>) {
    crossbeam_channel::bounded(threads * WORK_QUEUE_PER_THREAD)
}

/// The bounded queue of outcomes from `threads` senders: as many as attempts can be out.
fn done_channel(threads: usize) -> (Sender<Done>, Receiver<Done>) {
    crossbeam_channel::bounded(threads * WORK_QUEUE_PER_THREAD)
}

fn run_sender(sender: &push::Sender, work: &Receiver<Attempt>, done: &Sender<Done>) {
    while let Ok(attempt) = work.recv() {
        let mut left_at = None;
        let outcome = send_one(sender, &attempt, unix_now(), || {
            left_at = Some(Instant::now());
        });
        let finished = Done {
            attempt,
            outcome,
            left_at,
            answered_at: Instant::now(),
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

/// Sends one attempt; `leaving` runs once the request is built, as it leaves.
fn send_one(
    sender: &push::Sender,
    attempt: &Attempt,
    now_unix: u64,
    leaving: impl FnOnce(),
) -> Outcome {
    let target = attempt.target();
    let payload = attempt.payload();
    // A reconnect or a verification push must not replace, or be replaced by,
    // pending new mail at the push service.
    let topic = attempt.is_new_mail().then(|| attempt.sub().topic());
    let simple_push_version = match target.protocol() {
        Protocol::SimplePush => attempt.sub().next_simple_push_version(now_unix),
        Protocol::WebPush => 0,
    };
    let notification = Notification {
        kind: attempt.kind(),
        payload_json: payload.as_bytes(),
        topic: topic.as_ref(),
        simple_push_version,
    };
    sender.send_then(target, &notification, now_unix, leaving)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{DeliveryConfig, PushJob, PushSubscription, Scheduler};
    use push::PushTarget;

    /// `n` attempts to `n` origins. Attempts come only from a scheduler: one with `n`
    /// senders hands out `n`.
    fn attempts(n: usize, now: Instant) -> Vec<Attempt> {
        let config = DeliveryConfig {
            threads: n,
            ..DeliveryConfig::default()
        };
        let mut scheduler = Scheduler::new(&config);
        for i in 0..n {
            let url = format!("https://push{i}.example.net/x");
            let target = PushTarget::web_push_unencrypted(&url).unwrap();
            let id = crate::id::named(&format!("s{i}"));
            let push = PushSubscription::new(id, target.clone(), target, 1);
            let job = PushJob::Reconnect {
                push,
                reason: "shutdown",
            };
            assert!(scheduler.offer(job, now).is_ok());
        }
        let attempts: Vec<Attempt> = std::iter::from_fn(|| scheduler.poll_attempt(now)).collect();
        assert_eq!(attempts.len(), n);
        attempts
    }

    #[test]
    fn the_work_queue_refuses_one_past_its_bound() {
        let threads = 3;
        let (tx, _rx) = work_channel(threads);
        let mut attempts = attempts(threads + 1, Instant::now());
        let one_more = attempts.pop().expect("one more");
        for (i, attempt) in attempts.into_iter().enumerate() {
            assert!(tx.try_send(attempt).is_ok(), "attempt {i} refused");
        }
        assert!(matches!(tx.try_send(one_more), Err(TrySendError::Full(_))));
    }

    #[test]
    fn the_done_queue_refuses_one_past_its_bound() {
        let threads = 3;
        let (tx, _rx) = done_channel(threads);
        let now = Instant::now();
        let done = |attempt| Done {
            attempt,
            outcome: Outcome::Delivered,
            left_at: None,
            answered_at: now,
        };
        let mut attempts = attempts(threads + 1, now);
        let one_more = attempts.pop().expect("one more");
        for (i, attempt) in attempts.into_iter().enumerate() {
            assert!(tx.try_send(done(attempt)).is_ok(), "outcome {i} refused");
        }
        assert!(matches!(
            tx.try_send(done(one_more)),
            Err(TrySendError::Full(_))
        ));
    }
}
