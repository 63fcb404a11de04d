//! Push jobs the push scheduler handed back because `queue_max` jobs were outstanding
//! (`limits.push_queue_max`), kept in order and offered again a moment later.
//!
//! Why in order: a `Forget` must not overtake the new mail it forgets, nor a later push
//! an earlier reconnect; so once one job is held, every later one queues behind it.
//! Why a pause: room comes back one ended job at a time, and offering every held job on
//! every input would cost the owner O(held) per input while the scheduler is full.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::delivery::PushJob;
use crate::id::SubscriptionId;

/// New-mail jobs held at most. One more is dropped and counted: the scheduler
/// (100,000 jobs by default) has been full for a while, and new mail is the one push
/// that a later one makes good (the next new mail, or the reconnect push when the
/// session ends). Reconnect, verification and `Forget` jobs are never dropped; there
/// are at most one reconnect, two verification pushes and one `Forget` per
/// subscription, so the subscriptions' own bound bounds them.
pub const HELD_NEW_MAIL_MAX: usize = 10_000;

/// How long after a refusal the held jobs are offered again. Short, since room comes
/// back as soon as a push ends; long enough that a full scheduler does not turn the
/// owner's loop into a busy one.
pub const REOFFER_AFTER: Duration = Duration::from_millis(10);

/// The held jobs, oldest first.
#[derive(Debug, Default)]
pub struct Held {
    jobs: VecDeque<PushJob>,
    new_mail: usize,
    /// When the jobs go out again; set by a refusal.
    reoffer_at: Option<Instant>,
    /// New-mail jobs dropped at [`HELD_NEW_MAIL_MAX`].
    pub dropped: u64,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// New-mail jobs held, against [`HELD_NEW_MAIL_MAX`].
    pub fn new_mail(&self) -> usize {
        self.new_mail
    }

    /// The scheduler refused `job`: it goes first, and the jobs are offered again after
    /// [`REOFFER_AFTER`].
    pub fn refused(&mut self, job: PushJob, now: Instant) {
        if self.admit(&job) {
            self.jobs.push_front(job);
        }
        self.reoffer_at = Some(now + REOFFER_AFTER);
    }

    /// Queues `job` behind the held ones. A `Forget` first drops the held pushes of its
    /// subscription (deleted or replaced): they would reach the scheduler after the `Forget`
    /// and go out after the DELETE was answered.
    pub fn hold(&mut self, job: PushJob) {
        if let PushJob::Forget { subscription } = &job {
            self.jobs.retain(|held| !is_for(held, subscription));
            self.new_mail = self.jobs.iter().filter(|j| is_new_mail(j)).count();
        }
        if self.admit(&job) {
            self.jobs.push_back(job);
        }
    }

    /// Whether a reconnect push of `subscription` is held.
    pub fn holds_reconnect(&self, subscription: &SubscriptionId) -> bool {
        self.jobs
            .iter()
            .any(|job| matches!(job, PushJob::Reconnect { .. }) && is_for(job, subscription))
    }

    /// Every held job at once, whether due or not (at shutdown).
    pub fn take_all(&mut self) -> VecDeque<PushJob> {
        self.reoffer_at = None;
        self.new_mail = 0;
        std::mem::take(&mut self.jobs)
    }

    /// Whether `job` fits; counts it if it is new mail.
    fn admit(&mut self, job: &PushJob) -> bool {
        if !is_new_mail(job) {
            return true;
        }
        if self.new_mail >= HELD_NEW_MAIL_MAX {
            self.dropped += 1;
            return false;
        }
        self.new_mail += 1;
        true
    }

    /// When [`Held::release`] has something to give.
    pub fn due(&self) -> Option<Instant> {
        self.reoffer_at.filter(|_| !self.jobs.is_empty())
    }

    /// Every held job, oldest first, once [`Held::due`] has passed.
    pub fn release(&mut self, now: Instant) -> Option<VecDeque<PushJob>> {
        if self.due().is_none_or(|at| at > now) {
            return None;
        }
        Some(self.take_all())
    }
}

fn is_new_mail(job: &PushJob) -> bool {
    matches!(job, PushJob::NewMail { .. })
}

/// Whether `job` pushes to `subscription`.
fn is_for(job: &PushJob, subscription: &SubscriptionId) -> bool {
    match job {
        PushJob::NewMail { push, .. }
        | PushJob::Reconnect { push, .. }
        | PushJob::Verify { push, .. } => push.id == *subscription,
        PushJob::Forget { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::PushSubscription;
    use crate::id::named;
    use push::PushTarget;

    fn mail(exists: u32) -> PushJob {
        mail_for("a", exists)
    }

    fn mail_for(id: &str, exists: u32) -> PushJob {
        let target = PushTarget::web_push_unencrypted("https://push.example.net/x").unwrap();
        PushJob::NewMail {
            push: PushSubscription::new(named(id), target.clone(), target, 1),
            mailbox: "INBOX".into(),
            exists,
            preview: None,
            event_at: Instant::now(),
        }
    }

    fn forget(id: &str) -> PushJob {
        PushJob::Forget {
            subscription: named(id),
        }
    }

    #[test]
    fn new_mail_one_past_the_bound_is_dropped_and_counted_and_a_forget_is_kept() {
        let now = Instant::now();
        let mut held = Held::default();
        held.refused(mail(0), now);
        for i in 1..HELD_NEW_MAIL_MAX {
            held.hold(mail(i as u32));
        }
        assert_eq!((held.new_mail(), held.dropped), (HELD_NEW_MAIL_MAX, 0));
        held.hold(mail(u32::MAX));
        assert_eq!((held.new_mail(), held.dropped), (HELD_NEW_MAIL_MAX, 1));
        held.hold(forget("other"));
        assert_eq!(held.len(), HELD_NEW_MAIL_MAX + 1, "the forget is kept");
    }

    #[test]
    fn a_forget_drops_the_held_pushes_of_its_subscription_only() {
        let now = Instant::now();
        let mut held = Held::default();
        held.refused(mail_for("a", 1), now);
        held.hold(mail_for("b", 2));
        held.hold(mail_for("a", 3));
        held.hold(forget("a"));
        assert_eq!((held.len(), held.new_mail()), (2, 1));
        let jobs = held.take_all();
        assert!(matches!(&jobs[0], PushJob::NewMail { push, .. } if push.id == named("b")));
        assert!(
            matches!(jobs[1], PushJob::Forget { .. }),
            "the forget still goes"
        );
    }

    #[test]
    fn held_jobs_go_out_in_order_after_the_pause() {
        let now = Instant::now();
        let mut held = Held::default();
        assert_eq!(held.due(), None);
        held.refused(mail(1), now);
        held.hold(forget("other"));
        assert_eq!(held.due(), Some(now + REOFFER_AFTER));
        assert!(held.release(now).is_none(), "not before the pause");
        let jobs = held.release(now + REOFFER_AFTER).unwrap();
        assert!(matches!(jobs[0], PushJob::NewMail { exists: 1, .. }));
        assert!(matches!(jobs[1], PushJob::Forget { .. }));
        assert!(held.is_empty() && held.due().is_none());
        assert_eq!(held.new_mail(), 0);
    }
}
