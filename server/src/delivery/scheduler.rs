//! The sans-IO scheduler: every rule about a push, applied in one place (see the module
//! docs of [`super`]).
//!
//! # How to drive it
//!
//! The owner (the server's [`crate::core::Core`], or a test in virtual time) MUST, with
//! the same clock throughout:
//! 1. hand it work: [`Scheduler::offer`] a job (keep a job handed back and offer it
//!    again later), [`Scheduler::handle_done`] an attempt's outcome,
//!    [`Scheduler::handle_timeout`] once [`Scheduler::poll_timeout`] has passed, and
//!    [`Scheduler::begin_shutdown`] when the server stops;
//! 2. then call [`Scheduler::poll_attempt`] until it returns `None`, giving each
//!    [`Attempt`] to an idle sender ([`super::Pool`]), and [`Scheduler::poll_report`]
//!    until it returns `None`.
//!
//! It never hands out more attempts at once than `threads`, so a pool of `threads`
//! senders always has one idle for the next attempt.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use push::{Backoff, Kind, Outcome, PushTarget};

use crate::id::SubscriptionId;

use super::job::{decide, Job, Next, Slot, What};
use super::metrics::Metrics;
use super::origins::{Class, OriginQueues};
use super::{origin_cap, DeliveryConfig, DeliveryStats, PushJob, PushSubscription, Report};

/// Timers fired per [`Scheduler::handle_timeout`], so a flood of expirations cannot
/// starve the owner's other inputs; the rest fire on the next call (the deadline stays
/// due).
pub const TIMERS_PER_TURN_MAX: usize = 4096;

/// One request to make: a job's next attempt. Opaque: only the scheduler makes one, and
/// it comes back inside a [`Done`].
#[derive(Debug)]
pub struct Attempt {
    job: Job,
}

impl Attempt {
    /// The subscription it pushes to.
    pub fn subscription(&self) -> SubscriptionId {
        self.job.sub.id
    }

    /// The endpoint it goes to.
    pub fn kind(&self) -> Kind {
        self.job.kind()
    }

    /// The reason of a reconnect push (`server_restart`, `shutdown`, ...); `None` for
    /// new mail and verification pushes.
    pub fn reconnect_reason(&self) -> Option<&str> {
        match &self.job.what {
            What::Reconnect { reason } => Some(reason),
            What::NewMail { .. } | What::Verify { .. } => None,
        }
    }

    /// A verification push (see [`crate::verification`]).
    pub fn is_verification(&self) -> bool {
        matches!(self.job.what, What::Verify { .. })
    }

    /// The new-mail count it carries; `None` for other pushes.
    pub fn exists(&self) -> Option<u32> {
        match self.job.what {
            What::NewMail { exists, .. } => Some(exists),
            What::Reconnect { .. } | What::Verify { .. } => None,
        }
    }

    /// 1 for a job's first attempt, then 2, 3, ... for its retries.
    pub fn number(&self) -> u32 {
        self.job.attempts
    }

    /// The endpoint's URL: a capability, never for a log line.
    pub fn endpoint(&self) -> &str {
        self.target().endpoint()
    }

    /// The JSON payload, before encryption.
    pub fn payload(&self) -> String {
        self.job.payload()
    }

    pub(super) fn target(&self) -> &PushTarget {
        self.job.target()
    }

    pub(super) fn sub(&self) -> &Arc<PushSubscription> {
        &self.job.sub
    }

    pub(super) fn is_new_mail(&self) -> bool {
        self.job.is_new_mail()
    }
}

/// An attempt made: its outcome, when the request left (if it did), and when the
/// answer came.
#[derive(Debug)]
pub struct Done {
    pub attempt: Attempt,
    pub outcome: Outcome,
    /// When the request left the sender, encrypted and signed; `None` if it never did.
    pub left_at: Option<Instant>,
    pub answered_at: Instant,
}

/// What a timer looks at when it fires.
#[derive(Debug)]
enum TimerWhat {
    /// Look at a slot again: its pending push may be due, or it may be idle.
    Slot(SubscriptionId),
    /// A reconnect job whose retry delay or endpoint hold ends.
    Reconnect(Job),
}

#[derive(Debug)]
struct Timer {
    at: Instant,
    seq: u64,
    what: TimerWhat,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Per-endpoint `Retry-After`: no request to the endpoint before the instant.
#[derive(Debug, Default)]
pub(super) struct Holds {
    pub(super) until: HashMap<String, Instant>,
    /// Entries after the last pruning; the map is pruned when it doubles, so pruning
    /// costs O(1) per hold on average however many endpoints are held.
    pub(super) pruned_len: usize,
}

impl Holds {
    pub(super) fn until(&mut self, endpoint: &str, now: Instant) -> Option<Instant> {
        match self.until.get(endpoint) {
            Some(&until) if until > now => Some(until),
            Some(_) => {
                self.until.remove(endpoint);
                None
            }
            None => None,
        }
    }

    pub(super) fn hold(&mut self, endpoint: &str, until: Instant, now: Instant) {
        if self.until.len() >= 2 * self.pruned_len.max(8) {
            self.until.retain(|_, u| *u > now);
            self.pruned_len = self.until.len();
        }
        let entry = self.until.entry(endpoint.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// Work waiting for a sender, in its origin's queue.
#[derive(Debug)]
enum Ready {
    Reconnect(Job),
    /// The subscription whose pending new mail is due.
    NewMail(SubscriptionId),
}

/// Sizes of the scheduler's tables against their bounds (checked by the simulation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerQueues {
    /// Jobs accepted and not yet ended, against `queue_max`.
    pub outstanding: usize,
    pub queue_max: usize,
    /// Attempts handed out and not yet done, against `threads`.
    pub in_flight: usize,
    pub threads: usize,
    /// Coalescing slots: at most one per subscription with new mail in play.
    pub slots: usize,
    pub timers: usize,
}

impl SchedulerQueues {
    /// The first table over its bound, if any.
    pub fn over_bound(&self) -> Option<&'static str> {
        if self.outstanding > self.queue_max {
            return Some("push jobs outstanding");
        }
        if self.in_flight > self.threads {
            return Some("push attempts in flight");
        }
        // Every slot and timer belongs to an outstanding job or a window that ends.
        if self.slots > self.queue_max || self.timers > self.queue_max + self.slots {
            return Some("push slots or timers");
        }
        None
    }
}

/// The push rules. See the module docs for the call order.
#[derive(Debug)]
pub struct Scheduler {
    window: Duration,
    backoff: Backoff,
    queue_max: usize,
    threads: usize,
    slots: HashMap<SubscriptionId, Slot>,
    holds: Holds,
    ready: OriginQueues<Ready>,
    timers: BinaryHeap<Reverse<Timer>>,
    idle_senders: usize,
    /// Jobs accepted and not yet ended, against `queue_max`.
    outstanding: usize,
    /// Feeds job ids, slot epochs and timer sequence numbers.
    next_seq: u64,
    /// Set by shutdown: done once everything is, or at this instant.
    deadline: Option<Instant>,
    reports: VecDeque<Report>,
    metrics: Metrics,
    logs: super::logs::PushLogs,
}

impl Scheduler {
    pub fn new(config: &DeliveryConfig) -> Self {
        let threads = config.threads.max(1);
        Self {
            window: config.coalesce_window,
            backoff: Backoff {
                give_up_after: config.backoff.give_up_after.min(config.retry_budget),
                ..config.backoff
            },
            queue_max: config.queue_max.max(1),
            threads,
            slots: HashMap::new(),
            holds: Holds::default(),
            ready: OriginQueues::new(origin_cap(config.permits_per_origin, threads)),
            timers: BinaryHeap::new(),
            idle_senders: threads,
            outstanding: 0,
            next_seq: 1,
            deadline: None,
            reports: VecDeque::new(),
            metrics: Metrics::new(),
            logs: super::logs::PushLogs::default(),
        }
    }

    /// Takes a job, or hands it back when `queue_max` jobs are outstanding (counted as a
    /// refused offer; the caller keeps it and offers it again later). A `Forget` is
    /// always taken.
    pub fn offer(&mut self, job: PushJob, now: Instant) -> Result<(), PushJob> {
        if job.takes_permit() {
            if self.outstanding >= self.queue_max {
                self.metrics.add(|c| &mut c.offers_refused, 1);
                return Err(job);
            }
            self.outstanding += 1;
        }
        match job {
            PushJob::NewMail {
                push: sub,
                mailbox,
                exists,
                preview,
                event_at,
            } => {
                let what = What::NewMail {
                    mailbox,
                    exists,
                    preview,
                    event_at,
                };
                self.handle_new_mail(sub, what, now);
            }
            PushJob::Reconnect { push: sub, reason } => {
                self.drop_pending(&sub.id, false);
                let reason = reason.to_owned();
                let job = Job::new(sub, What::Reconnect { reason }, 0);
                self.queue_reconnect(job, false);
            }
            PushJob::Verify {
                push: sub,
                endpoint,
                code,
            } => {
                let job = Job::new(sub, What::Verify { to: endpoint, code }, 0);
                self.queue_reconnect(job, false);
            }
            PushJob::Forget { subscription } => self.drop_pending(&subscription, true),
        }
        Ok(())
    }

    /// The next attempt to make, if a sender is idle and some work is ready: reconnect
    /// pushes first, origins in turn, none past its origin's cap.
    pub fn poll_attempt(&mut self, now: Instant) -> Option<Attempt> {
        while self.idle_senders > 0 {
            let (origin, ready) = self.ready.pop()?;
            let job = match ready {
                Ready::Reconnect(job) => self.unheld(job, now),
                Ready::NewMail(id) => self.next_new_mail(&id, now),
            };
            let Some(mut job) = job else {
                // Nothing to send after all: the permit goes back at once.
                self.ready.release(&origin);
                continue;
            };
            job.first_attempt_at.get_or_insert(now);
            job.attempts = job.attempts.saturating_add(1);
            self.idle_senders -= 1;
            return Some(Attempt { job });
        }
        None
    }

    /// The next job that ended, for the core.
    pub fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    /// When [`Scheduler::handle_timeout`] is next due: the earliest timer, or the
    /// shutdown deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse(t)| t.at);
        match (timer, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the timers due at `now`, at most [`TIMERS_PER_TURN_MAX`]. A spurious call is
    /// a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..TIMERS_PER_TURN_MAX {
            match self.timers.peek() {
                Some(Reverse(t)) if t.at <= now => {}
                _ => return,
            }
            let Some(Reverse(timer)) = self.timers.pop() else {
                return;
            };
            match timer.what {
                TimerWhat::Slot(id) => self.poll_slot(&id, now),
                TimerWhat::Reconnect(job) => self.queue_reconnect(job, false),
            }
        }
    }

    /// Stops waiting out coalescing windows: pending new mail goes as soon as a sender
    /// and its origin allow. [`Scheduler::is_finished`] from `deadline` on, or once no
    /// job is left.
    pub fn begin_shutdown(&mut self, deadline: Instant, now: Instant) {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        let ids: Vec<SubscriptionId> = self.slots.keys().copied().collect();
        for id in ids {
            self.poll_slot(&id, now);
        }
    }

    /// Shutdown has begun and every job has ended, or its deadline has passed.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.deadline
            .is_some_and(|deadline| now >= deadline || self.outstanding == 0)
    }

    /// Shutdown has begun and its deadline has passed.
    pub fn past_deadline(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// Counts every job still outstanding as undelivered (the process ends with them).
    pub fn abandon(&mut self) {
        let left = std::mem::take(&mut self.outstanding) as u64;
        self.metrics.add(|c| &mut c.undelivered, left);
    }

    pub fn stats(&self) -> DeliveryStats {
        self.metrics.snapshot(self.outstanding)
    }

    /// The scheduler's tables against their bounds.
    pub fn queues(&self) -> SchedulerQueues {
        SchedulerQueues {
            outstanding: self.outstanding,
            queue_max: self.queue_max,
            in_flight: self.threads - self.idle_senders,
            threads: self.threads,
            slots: self.slots.len(),
            timers: self.timers.len(),
        }
    }

    /// Whether a reconnect push of `subscription` waits here (queued, or waiting for its
    /// retry or its endpoint's hold); one in flight is not counted.
    pub fn holds_reconnect(&self, subscription: &SubscriptionId) -> bool {
        let is =
            |job: &Job| job.sub.id == *subscription && matches!(job.what, What::Reconnect { .. });
        let queued = self
            .ready
            .any(|r| matches!(r, Ready::Reconnect(job) if is(job)));
        queued
            || self
                .timers
                .iter()
                .any(|Reverse(t)| matches!(&t.what, TimerWhat::Reconnect(job) if is(job)))
    }

    /// An attempt's outcome: the job is done, retried later, shrunk, or given up.
    pub fn handle_done(&mut self, done: Done, now: Instant, random: u32) {
        self.idle_senders = (self.idle_senders + 1).min(self.threads);
        let Done {
            attempt: Attempt { mut job },
            outcome,
            left_at,
            answered_at,
        } = done;
        if let (Some(left_at), Some(event_at)) = (left_at, job.event_at()) {
            if job.attempts == 1 {
                let took = left_at.saturating_duration_since(event_at);
                self.metrics.record_exists_to_push(took);
            }
        }
        self.ready.release(job.target().origin());
        self.count_attempt(&outcome);
        self.logs.attempt(job.target().origin(), &outcome, now);
        if let Outcome::RateLimited { retry_after } = outcome {
            self.holds
                .hold(job.target().endpoint(), answered_at + retry_after, now);
        }
        // New mail: the slot is looked at again once the job is settled.
        let sub = job.is_new_mail().then_some(job.sub.id);
        if sub.is_some() {
            self.release_slot(&job, &outcome, answered_at);
        }
        let elapsed = now.saturating_duration_since(job.first_attempt_at.unwrap_or(now));
        match decide(
            &outcome,
            job.minimal,
            job.retries,
            elapsed,
            &self.backoff,
            random,
        ) {
            Next::Delivered => self.delivered(&job, answered_at),
            Next::Gone => self.gone(&job),
            Next::Shrink => {
                job.minimal = true;
                self.requeue(job, now, now);
            }
            Next::RetryIn(delay) => {
                if matches!(outcome, Outcome::Retry { .. }) {
                    self.metrics.add(|c| &mut c.retried, 1);
                }
                job.retries += 1;
                self.requeue(job, now + delay, now);
            }
            Next::Failed => self.failed(&job),
        }
        if let Some(id) = sub {
            self.poll_slot(&id, now);
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn push_timer(&mut self, at: Instant, what: TimerWhat) {
        let seq = self.seq();
        self.timers.push(Reverse(Timer { at, seq, what }));
    }

    /// Ends one outstanding job.
    fn release(&mut self) {
        debug_assert!(self.outstanding > 0, "ended more jobs than accepted");
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    fn handle_new_mail(&mut self, sub: Arc<PushSubscription>, what: What, now: Instant) {
        let id = sub.id;
        let epoch = self.seq();
        let slot = self
            .slots
            .entry(id)
            .or_insert_with(|| Slot::new(epoch, now));
        let job = Job::new(sub, what, slot.epoch);
        if slot.add(job, now) {
            self.metrics.add(|c| &mut c.coalesced, 1);
            self.release();
        } else {
            self.poll_slot(&id, now);
        }
    }

    /// Drops the subscription's pending new mail and makes in-flight new
    /// mail stale (so it is not retried). `forget` also drops the slot.
    fn drop_pending(&mut self, subscription: &SubscriptionId, forget: bool) {
        let epoch = self.seq();
        let pending = if forget {
            self.slots.remove(subscription).and_then(|s| s.pending)
        } else {
            self.slots.get_mut(subscription).and_then(|slot| {
                slot.epoch = epoch;
                slot.pending.take()
            })
        };
        if pending.is_some() {
            self.metrics.add(|c| &mut c.dropped, 1);
            self.release();
        }
    }

    /// Looks at a slot: queue its pending push if due, set a timer if due
    /// later, or remove the slot once idle. A spurious call is a no-op.
    fn poll_slot(&mut self, id: &SubscriptionId, now: Instant) {
        let flushing = self.deadline.is_some();
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        match slot.due(flushing) {
            Some(due) if due <= now => {
                if let (false, Some(pending)) = (slot.queued, &slot.pending) {
                    slot.queued = true;
                    let origin = pending.job.target().origin().to_owned();
                    self.ready
                        .push_back(&origin, Class::NewMail, Ready::NewMail(*id));
                }
            }
            Some(due) => self.push_timer(due, TimerWhat::Slot(*id)),
            // The in-flight push's completion polls the slot again.
            None if slot.in_flight.is_some() => {}
            None if slot.is_idle(now) => {
                self.slots.remove(id);
            }
            None => {
                let at = slot.window_end;
                self.push_timer(at, TimerWhat::Slot(*id));
            }
        }
    }

    fn queue_reconnect(&mut self, job: Job, front: bool) {
        let origin = job.target().origin().to_owned();
        let ready = Ready::Reconnect(job);
        if front {
            self.ready.push_front(&origin, Class::Reconnect, ready);
        } else {
            self.ready.push_back(&origin, Class::Reconnect, ready);
        }
    }

    /// The reconnect job, unless its endpoint is held: then it waits on a timer.
    fn unheld(&mut self, job: Job, now: Instant) -> Option<Job> {
        match self.holds.until(job.target().endpoint(), now) {
            Some(until) => {
                self.push_timer(until, TimerWhat::Reconnect(job));
                None
            }
            None => Some(job),
        }
    }

    /// The subscription's pending new mail if it is due and its endpoint not held.
    fn next_new_mail(&mut self, id: &SubscriptionId, now: Instant) -> Option<Job> {
        let flushing = self.deadline.is_some();
        let job_id = self.seq();
        let slot = self.slots.get_mut(id)?;
        slot.queued = false;
        let ready = slot.due(flushing).is_some_and(|due| due <= now);
        let Some(pending) = slot.pending.as_mut().filter(|_| ready) else {
            self.poll_slot(id, now);
            return None;
        };
        if let Some(until) = self.holds.until(pending.job.target().endpoint(), now) {
            // Stay pending (newer mail keeps merging) until the hold ends.
            pending.not_before = until;
            self.poll_slot(id, now);
            return None;
        }
        let mut job = slot.pending.take()?.job;
        job.id = job_id;
        slot.in_flight = Some(job_id);
        Some(job)
    }

    /// The slot's in-flight push is back; a delivered one starts the
    /// coalescing window.
    fn release_slot(&mut self, job: &Job, outcome: &Outcome, answered_at: Instant) {
        let Some(slot) = self.slots.get_mut(&job.sub.id) else {
            return;
        };
        if slot.in_flight != Some(job.id) {
            return;
        }
        slot.in_flight = None;
        if *outcome == Outcome::Delivered {
            slot.window_end = answered_at + self.window;
        }
    }

    /// Per-attempt counters. `retried` is counted where the retry is
    /// decided, `failed` where a job ends.
    fn count_attempt(&mut self, outcome: &Outcome) {
        let c = &mut self.metrics.counters;
        let counter = match outcome {
            Outcome::Delivered => &mut c.delivered,
            Outcome::Gone => &mut c.gone,
            Outcome::TooLarge => &mut c.too_large,
            Outcome::RateLimited { .. } => &mut c.rate_limited,
            Outcome::Redirect { .. } => &mut c.redirect,
            Outcome::Retry { .. } | Outcome::Rejected { .. } | Outcome::Unsendable(_) => return,
        };
        *counter += 1;
    }

    /// Puts a job back to be tried at `not_before`. New mail goes back into
    /// its slot, merging with mail that arrived meanwhile, unless it went
    /// stale (reconnect, forget, gone).
    fn requeue(&mut self, job: Job, not_before: Instant, now: Instant) {
        if job.is_new_mail() {
            self.requeue_mail(job, not_before);
        } else if not_before <= now {
            self.queue_reconnect(job, true);
        } else {
            self.push_timer(not_before, TimerWhat::Reconnect(job));
        }
    }

    fn requeue_mail(&mut self, job: Job, not_before: Instant) {
        let slot = self
            .slots
            .get_mut(&job.sub.id)
            .filter(|slot| slot.epoch == job.epoch);
        let Some(slot) = slot else {
            self.metrics.add(|c| &mut c.dropped, 1);
            self.release();
            return;
        };
        if slot.add(job, not_before) {
            self.metrics.add(|c| &mut c.coalesced, 1);
            self.release();
        }
    }

    fn delivered(&mut self, job: &Job, answered_at: Instant) {
        if let Some(event_at) = job.event_at() {
            self.metrics
                .record_latency(answered_at.saturating_duration_since(event_at));
        }
        let report = Report::Delivered {
            subscription: job.sub.id,
            kind: job.kind(),
        };
        self.finish(report, job);
    }

    fn gone(&mut self, job: &Job) {
        // Pending new mail would meet the same 404/410.
        self.drop_pending(&job.sub.id, false);
        let report = Report::Gone {
            subscription: job.sub.id,
        };
        self.finish(report, job);
    }

    fn failed(&mut self, job: &Job) {
        self.metrics.add(|c| &mut c.failed, 1);
        let report = Report::Failed {
            subscription: job.sub.id,
            kind: job.kind(),
        };
        self.finish(report, job);
    }

    /// `job` has ended as `report` says. A verification push reports only `Gone`: its
    /// delivery shows when the app verifies, and a report of its endpoint kind would
    /// read as a reconnect push settled.
    fn finish(&mut self, report: Report, job: &Job) {
        self.release();
        let verify = matches!(job.what, What::Verify { .. });
        if verify && !matches!(report, Report::Gone { .. }) {
            return;
        }
        self.reports.push_back(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_fires_at_most_its_cap_of_timers() {
        let mut scheduler = Scheduler::new(&DeliveryConfig::default());
        let now = Instant::now();
        // Timers of slots that are gone: firing one is a no-op.
        for i in 0..=TIMERS_PER_TURN_MAX {
            let id = crate::id::named(&format!("t{i}"));
            scheduler.push_timer(now, TimerWhat::Slot(id));
        }
        scheduler.handle_timeout(now);
        assert_eq!(scheduler.timers.len(), 1, "one past the cap waits");
        assert_eq!(scheduler.poll_timeout(), Some(now), "and is still due");
        scheduler.handle_timeout(now);
        assert!(scheduler.timers.is_empty());
    }
}
