//! The workers and the scheduler thread that owns all pool state (see the module docs
//! of [`super`]).

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{never, select, Receiver, Sender};
use push::{Backoff, Notification, Outcome, Protocol};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::id::SubscriptionId;

use super::job::{decide, Job, Next, Slot, What};
use super::metrics::Metrics;
use super::origins::{Class, OriginQueues};
use super::permits::Permits;
use super::{origin_cap, Command, DeliveryConfig, PushJob, PushSubscription, Report};

/// Timers fired per scheduler turn, so a flood of expirations cannot starve
/// commands and completions.
pub(super) const TIMERS_PER_TURN_MAX: usize = 4096;
/// The scheduler wakes at least this often even with nothing to do.
pub(super) const IDLE_WAKE: Duration = Duration::from_secs(60);

/// A finished attempt, back from a worker.
pub(super) struct Done {
    pub(super) job: Job,
    pub(super) outcome: Outcome,
    pub(super) answered_at: Instant,
}

pub(super) fn run_worker(
    sender: &push::Sender,
    work: &Receiver<Job>,
    done: &Sender<Done>,
    metrics: &Metrics,
) {
    while let Ok(job) = work.recv() {
        // The first attempt of new mail: how long from the engine reading EXISTS to the
        // request leaving (encrypted and signed, handed to the HTTP client).
        let read_at = job.event_at().filter(|_| job.retries == 0);
        let leaving = || {
            if let Some(read_at) = read_at {
                metrics.exists_to_push.record(read_at.elapsed());
            }
        };
        let outcome = send_one(sender, &job, unix_now(), leaving);
        let answered_at = Instant::now();
        let finished = Done {
            job,
            outcome,
            answered_at,
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

/// Sends one attempt; `leaving` runs once the request is built, as it leaves.
pub(super) fn send_one(
    sender: &push::Sender,
    job: &Job,
    now_unix: u64,
    leaving: impl FnOnce(),
) -> Outcome {
    let target = job.target();
    let payload = job.payload();
    // A reconnect or a verification push must not replace, or be replaced by,
    // pending new mail at the push service.
    let topic = job.is_new_mail().then(|| job.sub.topic());
    let simple_push_version = match target.protocol() {
        Protocol::SimplePush => job.sub.next_simple_push_version(now_unix),
        Protocol::WebPush => 0,
    };
    let notification = Notification {
        kind: job.kind(),
        payload_json: payload.as_bytes(),
        topic: topic.as_ref(),
        simple_push_version,
    };
    sender.send_then(target, &notification, now_unix, leaving)
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// The scheduler.

pub(super) enum TimerWhat {
    /// Look at a slot again: its pending push may be due, or it may be idle.
    Slot(SubscriptionId),
    /// A reconnect job whose retry delay or origin hold ends.
    Reconnect(Job),
}

pub(super) struct Timer {
    pub(super) at: Instant,
    pub(super) seq: u64,
    pub(super) what: TimerWhat,
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
#[derive(Default)]
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

/// Work waiting for a worker, in its origin's queue.
pub(super) enum Ready {
    Reconnect(Job),
    /// The subscription whose pending new mail is due.
    NewMail(SubscriptionId),
}

pub(super) struct Scheduler {
    pub(super) window: Duration,
    pub(super) backoff: Backoff,
    pub(super) slots: HashMap<SubscriptionId, Slot>,
    pub(super) holds: Holds,
    pub(super) ready: OriginQueues<Ready>,
    pub(super) timers: BinaryHeap<Reverse<Timer>>,
    pub(super) idle_workers: usize,
    /// Feeds job ids, slot epochs and timer sequence numbers.
    pub(super) next_seq: u64,
    /// Set by shutdown: leave once everything is done or at this instant.
    pub(super) deadline: Option<Instant>,
    pub(super) work: Sender<Job>,
    pub(super) reports: Sender<Report>,
    pub(super) permits: Arc<Permits>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) rng: SystemRandom,
    pub(super) logs: super::logs::PushLogs,
}

impl Scheduler {
    pub(super) fn new(
        config: &DeliveryConfig,
        threads: usize,
        work: Sender<Job>,
        reports: Sender<Report>,
        permits: &Arc<Permits>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        Self {
            window: config.coalesce_window,
            backoff: Backoff {
                give_up_after: config.backoff.give_up_after.min(config.retry_budget),
                ..config.backoff
            },
            slots: HashMap::new(),
            holds: Holds::default(),
            ready: OriginQueues::new(origin_cap(config.permits_per_origin, threads)),
            timers: BinaryHeap::new(),
            idle_workers: threads,
            next_seq: 1,
            deadline: None,
            work,
            reports,
            permits: Arc::clone(permits),
            metrics: Arc::clone(metrics),
            rng: SystemRandom::new(),
            logs: super::logs::PushLogs::default(),
        }
    }

    pub(super) fn run(mut self, commands: Receiver<Command>, done: Receiver<Done>) {
        let (mut commands, mut done) = (commands, done);
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            if self.finished(now) {
                break;
            }
            self.dispatch(now);
            let timeout = self.next_wake(now);
            select! {
                recv(commands) -> command => match command {
                    Ok(command) => self.handle_command(command, Instant::now()),
                    // The Delivery is gone (it always sends Shutdown first).
                    Err(_) => {
                        commands = never();
                        self.begin_shutdown(now, now);
                    }
                },
                recv(done) -> finished => match finished {
                    Ok(finished) => self.handle_done(finished, Instant::now()),
                    Err(_) => done = never(),
                },
                default(timeout) => {}
            }
        }
        let left = self.permits.used();
        self.metrics.add(|c| &c.undelivered, left as u64);
        self.permits.release(left);
    }

    pub(super) fn finished(&self, now: Instant) -> bool {
        self.deadline
            .is_some_and(|deadline| now >= deadline || self.permits.used() == 0)
    }

    pub(super) fn next_wake(&self, now: Instant) -> Duration {
        let timer = self.timers.peek().map(|Reverse(t)| t.at);
        let wake = match (timer, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        wake.map_or(IDLE_WAKE, |at| at.saturating_duration_since(now))
    }

    pub(super) fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    pub(super) fn push_timer(&mut self, at: Instant, what: TimerWhat) {
        let seq = self.seq();
        self.timers.push(Reverse(Timer { at, seq, what }));
    }

    pub(super) fn handle_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Job(PushJob::NewMail {
                push: sub,
                mailbox,
                exists,
                preview,
                event_at,
            }) => {
                let what = What::NewMail {
                    mailbox,
                    exists,
                    preview,
                    event_at,
                };
                self.handle_new_mail(sub, what, now);
            }
            Command::Job(PushJob::Reconnect { push: sub, reason }) => {
                self.drop_pending(&sub.id, false);
                let reason = reason.to_owned();
                let job = Job::new(sub, What::Reconnect { reason }, 0);
                self.queue_reconnect(job, false);
            }
            Command::Job(PushJob::Verify {
                push: sub,
                endpoint,
                code,
            }) => {
                let job = Job::new(sub, What::Verify { to: endpoint, code }, 0);
                self.queue_reconnect(job, false);
            }
            Command::Job(PushJob::Forget { subscription }) => {
                self.drop_pending(&subscription, true);
            }
            Command::Shutdown { deadline } => self.begin_shutdown(deadline, now),
        }
    }

    pub(super) fn handle_new_mail(&mut self, sub: Arc<PushSubscription>, what: What, now: Instant) {
        let id = sub.id;
        let epoch = self.seq();
        let slot = self
            .slots
            .entry(id)
            .or_insert_with(|| Slot::new(epoch, now));
        let job = Job::new(sub, what, slot.epoch);
        if slot.add(job, now) {
            self.metrics.add(|c| &c.coalesced, 1);
            self.permits.release(1);
        } else {
            self.poll_slot(&id, now);
        }
    }

    /// Drops the subscription's pending new mail and makes in-flight new
    /// mail stale (so it is not retried). `forget` also drops the slot.
    pub(super) fn drop_pending(&mut self, subscription: &SubscriptionId, forget: bool) {
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
            self.metrics.add(|c| &c.dropped, 1);
            self.permits.release(1);
        }
    }

    pub(super) fn begin_shutdown(&mut self, deadline: Instant, now: Instant) {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        let ids: Vec<SubscriptionId> = self.slots.keys().copied().collect();
        for id in ids {
            self.poll_slot(&id, now);
        }
    }

    /// Looks at a slot: queue its pending push if due, set a timer if due
    /// later, or remove the slot once idle. A spurious call is a no-op.
    pub(super) fn poll_slot(&mut self, id: &SubscriptionId, now: Instant) {
        let flushing = self.deadline.is_some();
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        match slot.due(flushing) {
            Some(due) if due <= now => {
                if let (false, Some(pending)) = (slot.queued, &slot.pending) {
                    slot.queued = true;
                    let origin = pending.job.target().origin().to_owned();
                    let ready = Ready::NewMail(*id);
                    self.ready.push_back(&origin, Class::NewMail, ready);
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

    pub(super) fn fire_timers(&mut self, now: Instant) {
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

    /// Hands ready jobs to idle workers: reconnect pushes first, origins in turn,
    /// none past its origin's cap.
    pub(super) fn dispatch(&mut self, now: Instant) {
        while self.idle_workers > 0 {
            let Some((origin, ready)) = self.ready.pop() else {
                return;
            };
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
            // Cannot block: fewer jobs are in the channel than idle workers.
            if self.work.send(job).is_err() {
                self.ready.release(&origin);
                return;
            }
            self.idle_workers -= 1;
        }
    }

    pub(super) fn queue_reconnect(&mut self, job: Job, front: bool) {
        let origin = job.target().origin().to_owned();
        let ready = Ready::Reconnect(job);
        if front {
            self.ready.push_front(&origin, Class::Reconnect, ready);
        } else {
            self.ready.push_back(&origin, Class::Reconnect, ready);
        }
    }

    /// The reconnect job, unless its endpoint is held: then it waits on a timer.
    pub(super) fn unheld(&mut self, job: Job, now: Instant) -> Option<Job> {
        match self.holds.until(job.target().endpoint(), now) {
            Some(until) => {
                self.push_timer(until, TimerWhat::Reconnect(job));
                None
            }
            None => Some(job),
        }
    }

    /// The subscription's pending new mail if it is due and its endpoint not held.
    pub(super) fn next_new_mail(&mut self, id: &SubscriptionId, now: Instant) -> Option<Job> {
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

    pub(super) fn handle_done(&mut self, done: Done, now: Instant) {
        self.idle_workers += 1;
        let Done {
            mut job,
            outcome,
            answered_at,
        } = done;
        self.ready.release(job.target().origin());
        self.count_attempt(&outcome);
        self.logs.attempt(job.target().origin(), &outcome, now);
        if let Outcome::RateLimited { retry_after } = outcome {
            self.holds
                .hold(job.target().endpoint(), answered_at + retry_after, now);
        }
        // New mail: the slot is looked at again once the job is settled.
        let sub = job.is_new_mail().then(|| Arc::clone(&job.sub));
        if sub.is_some() {
            self.release_slot(&job, &outcome, answered_at);
        }
        let elapsed = now.saturating_duration_since(job.first_attempt_at.unwrap_or(now));
        let random = self.random();
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
                    self.metrics.add(|c| &c.retried, 1);
                }
                job.retries += 1;
                self.requeue(job, now + delay, now);
            }
            Next::Failed => self.failed(&job),
        }
        if let Some(sub) = sub {
            self.poll_slot(&sub.id, now);
        }
    }

    /// The slot's in-flight push is back; a delivered one starts the
    /// coalescing window.
    pub(super) fn release_slot(&mut self, job: &Job, outcome: &Outcome, answered_at: Instant) {
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
    pub(super) fn count_attempt(&self, outcome: &Outcome) {
        let c = &self.metrics.counters;
        let counter = match outcome {
            Outcome::Delivered => &c.delivered,
            Outcome::Gone => &c.gone,
            Outcome::TooLarge => &c.too_large,
            Outcome::RateLimited { .. } => &c.rate_limited,
            Outcome::Redirect { .. } => &c.redirect,
            Outcome::Retry { .. } | Outcome::Rejected { .. } | Outcome::Unsendable(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts a job back to be tried at `not_before`. New mail goes back into
    /// its slot, merging with mail that arrived meanwhile, unless it went
    /// stale (reconnect, forget, gone).
    pub(super) fn requeue(&mut self, job: Job, not_before: Instant, now: Instant) {
        if job.is_new_mail() {
            self.requeue_mail(job, not_before);
        } else if not_before <= now {
            self.queue_reconnect(job, true);
        } else {
            self.push_timer(not_before, TimerWhat::Reconnect(job));
        }
    }

    pub(super) fn requeue_mail(&mut self, job: Job, not_before: Instant) {
        let slot = self
            .slots
            .get_mut(&job.sub.id)
            .filter(|slot| slot.epoch == job.epoch);
        let Some(slot) = slot else {
            self.metrics.add(|c| &c.dropped, 1);
            self.permits.release(1);
            return;
        };
        if slot.add(job, not_before) {
            self.metrics.add(|c| &c.coalesced, 1);
            self.permits.release(1);
        }
    }

    pub(super) fn delivered(&mut self, job: &Job, answered_at: Instant) {
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

    pub(super) fn gone(&mut self, job: &Job) {
        // Pending new mail would meet the same 404/410.
        self.drop_pending(&job.sub.id, false);
        let report = Report::Gone {
            subscription: job.sub.id,
        };
        self.finish(report, job);
    }

    pub(super) fn failed(&mut self, job: &Job) {
        self.metrics.add(|c| &c.failed, 1);
        let report = Report::Failed {
            subscription: job.sub.id,
            kind: job.kind(),
        };
        self.finish(report, job);
    }

    /// `job` has ended as `report` says. A verification push reports only `Gone`: its
    /// delivery shows when the app verifies, and a report of its endpoint kind would
    /// read as a reconnect push settled.
    pub(super) fn finish(&mut self, report: Report, job: &Job) {
        self.permits.release(1);
        let verify = matches!(job.what, What::Verify { .. });
        if verify && !matches!(report, Report::Gone { .. }) {
            return;
        }
        // A receiver that is gone no longer wants reports.
        let _ = self.reports.send(report);
    }

    pub(super) fn random(&self) -> u32 {
        let mut bytes = [0u8; 4];
        match self.rng.fill(&mut bytes) {
            Ok(()) => u32::from_ne_bytes(bytes),
            // Mid-range jitter; only the spread between retries suffers.
            Err(_) => u32::MAX / 2,
        }
    }
}
