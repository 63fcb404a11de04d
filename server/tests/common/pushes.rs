//! Two ways to drive the push rules (`server::delivery::Scheduler`) outside the server:
//! [`Virtual`], in virtual time against a scripted push service (no socket, no sleep),
//! and [`Live`], in real time with the real sender threads against loopback services.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use push::{Kind, Outcome};
use server::delivery::{
    Attempt, DeliveryConfig, DeliveryStats, Done, Pool, PushJob, PushSubscription, Report,
    Scheduler,
};

/// Steps of a virtual run at most: a livelock fails fast.
const STEPS_MAX: usize = 1_000_000;

/// The jitter of retries: a small xorshift, the same every run.
struct Jitter(u32);

impl Jitter {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// One request the scripted service received.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Instant,
    /// The endpoint's path.
    pub path: String,
    pub kind: Kind,
    /// The JSON payload before encryption.
    pub payload: serde_json::Value,
    pub outcome: Outcome,
}

/// The scheduler against a scripted push service, in virtual time: each request gets the
/// next outcome scripted for its path (or the path's standing outcome, or 2xx) after the
/// path's delay (1 ms by default).
pub struct Virtual {
    pub scheduler: Scheduler,
    pub start: Instant,
    pub now: Instant,
    script: HashMap<String, VecDeque<Outcome>>,
    standing: HashMap<String, Outcome>,
    delays: HashMap<String, Duration>,
    answers: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, Done>,
    seq: u64,
    jitter: Jitter,
    pub sent: Vec<Sent>,
    pub reports: VecDeque<Report>,
    /// The most requests the service had open at once, per path.
    pub open_max: HashMap<String, usize>,
    open: HashMap<String, usize>,
}

/// The path of an endpoint URL.
pub fn path_of(url: &str) -> String {
    url.splitn(4, '/')
        .nth(3)
        .map_or_else(|| "/".to_owned(), |p| format!("/{p}"))
}

impl Virtual {
    pub fn new(config: DeliveryConfig) -> Virtual {
        let start = Instant::now();
        Virtual {
            scheduler: Scheduler::new(&config),
            start,
            now: start,
            script: HashMap::new(),
            standing: HashMap::new(),
            delays: HashMap::new(),
            answers: BinaryHeap::new(),
            in_flight: HashMap::new(),
            seq: 0,
            jitter: Jitter(0x2545_f491),
            sent: Vec::new(),
            reports: VecDeque::new(),
            open_max: HashMap::new(),
            open: HashMap::new(),
        }
    }

    /// The next requests to `path` get these outcomes, in order.
    pub fn script(&mut self, path: &str, outcomes: &[Outcome]) {
        self.script
            .entry(path.to_owned())
            .or_default()
            .extend(outcomes.iter().copied());
    }

    /// Every request to `path` past its script gets `outcome`.
    pub fn answer(&mut self, path: &str, outcome: Outcome) {
        self.standing.insert(path.to_owned(), outcome);
    }

    /// Requests to `path` are answered after `delay`.
    pub fn delay(&mut self, path: &str, delay: Duration) {
        self.delays.insert(path.to_owned(), delay);
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn offer(&mut self, job: PushJob) -> Result<(), PushJob> {
        let result = self.scheduler.offer(job, self.now);
        self.pump();
        result
    }

    /// Offers `job`; it MUST be taken.
    pub fn take(&mut self, job: PushJob) {
        assert!(self.offer(job).is_ok(), "the scheduler refused a job");
    }

    pub fn stats(&self) -> DeliveryStats {
        self.scheduler.stats()
    }

    /// Requests sent to `path`.
    pub fn sent_to(&self, path: &str) -> Vec<Sent> {
        self.sent
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    pub fn paths(&self) -> Vec<&str> {
        self.sent.iter().map(|s| s.path.as_str()).collect()
    }

    /// Runs every answer and timer due up to `now + by`, in time order; then the clock
    /// stands at `now + by`.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        self.run(|v| v.next_event().is_some_and(|at| at <= until));
        self.now = self.now.max(until);
        self.pump();
    }

    /// Runs until nothing is left to do (no answer awaited, no timer set, or the
    /// shutdown deadline has passed).
    pub fn settle(&mut self) {
        self.run(|v| v.next_event().is_some());
    }

    /// Starts shutdown with `grace` and runs until the scheduler is finished, then counts
    /// what is left as undelivered.
    pub fn shutdown(&mut self, grace: Duration) -> DeliveryStats {
        self.scheduler.begin_shutdown(self.now + grace, self.now);
        self.pump();
        self.run(|v| !v.scheduler.is_finished(v.now) && v.next_event().is_some());
        self.scheduler.abandon();
        self.scheduler.stats()
    }

    fn next_event(&self) -> Option<Instant> {
        if self.scheduler.past_deadline(self.now) {
            return None;
        }
        let answer = self.answers.peek().map(|Reverse((at, _))| *at);
        match (answer, self.scheduler.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn run(&mut self, mut more: impl FnMut(&Virtual) -> bool) {
        for _ in 0..STEPS_MAX {
            if !more(self) {
                return;
            }
            self.step();
        }
        panic!("more than {STEPS_MAX} steps: a livelock");
    }

    /// Jumps to the next event and handles it.
    fn step(&mut self) {
        let Some(at) = self.next_event() else {
            return;
        };
        self.now = self.now.max(at);
        let answer_due = self
            .answers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= self.now);
        if answer_due {
            let Some(Reverse((_, seq))) = self.answers.pop() else {
                return;
            };
            let done = self.in_flight.remove(&seq).expect("an attempt in flight");
            let path = path_of(done.attempt.endpoint());
            *self.open.entry(path).or_default() -= 1;
            let jitter = self.jitter.next();
            self.scheduler.handle_done(done, self.now, jitter);
        } else {
            self.scheduler.handle_timeout(self.now);
        }
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(attempt) = self.scheduler.poll_attempt(self.now) {
            self.dispatch(attempt);
        }
        while let Some(report) = self.scheduler.poll_report() {
            self.reports.push_back(report);
        }
    }

    fn dispatch(&mut self, attempt: Attempt) {
        let path = path_of(attempt.endpoint());
        let outcome = self
            .script
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .or_else(|| self.standing.get(&path).copied())
            .unwrap_or(Outcome::Delivered);
        let delay = self
            .delays
            .get(&path)
            .copied()
            .unwrap_or(Duration::from_millis(1));
        let payload = serde_json::from_str(&attempt.payload()).expect("a JSON payload");
        self.sent.push(Sent {
            at: self.now,
            path: path.clone(),
            kind: attempt.kind(),
            payload,
            outcome,
        });
        let open = self.open.entry(path.clone()).or_default();
        *open += 1;
        let open = *open;
        let max = self.open_max.entry(path).or_default();
        *max = (*max).max(open);
        self.seq += 1;
        let answered_at = self.now + delay;
        self.answers.push(Reverse((answered_at, self.seq)));
        let done = Done {
            attempt,
            outcome,
            left_at: Some(self.now),
            answered_at,
        };
        self.in_flight.insert(self.seq, done);
    }
}

/// The scheduler and the real sender threads, in real time, on the test's thread: what
/// the server's owner thread does for pushes, without the rest of the server.
pub struct Live {
    pub scheduler: Scheduler,
    pool: Option<Pool>,
    jitter: Jitter,
    pub reports: VecDeque<Report>,
}

impl Live {
    pub fn start(config: DeliveryConfig, sender: push::Sender) -> Live {
        let pool = Pool::start(config.threads, Arc::new(sender)).expect("sender threads");
        Live {
            scheduler: Scheduler::new(&config),
            pool: Some(pool),
            jitter: Jitter(0x9e37_79b9),
            reports: VecDeque::new(),
        }
    }

    pub fn offer(&mut self, job: PushJob) -> Result<(), PushJob> {
        let result = self.scheduler.offer(job, Instant::now());
        self.pump();
        result
    }

    /// Offers `job`; it MUST be taken.
    pub fn take(&mut self, job: PushJob) {
        assert!(self.offer(job).is_ok(), "the scheduler refused a job");
    }

    pub fn new_mail(&mut self, sub: &Arc<PushSubscription>, exists: u32, event_at: Instant) {
        self.take(new_mail(sub, exists, event_at));
    }

    pub fn reconnect(&mut self, sub: &Arc<PushSubscription>, reason: &'static str) {
        self.take(PushJob::Reconnect {
            push: Arc::clone(sub),
            reason,
        });
    }

    /// Runs the rules for `time`.
    pub fn run_for(&mut self, time: Duration) {
        let until = Instant::now() + time;
        while Instant::now() < until {
            self.turn(until);
        }
    }

    /// Runs the rules until a report comes, at most `timeout`.
    pub fn report(&mut self, timeout: Duration) -> Option<Report> {
        let until = Instant::now() + timeout;
        while self.reports.is_empty() && Instant::now() < until {
            self.turn(until);
        }
        self.reports.pop_front()
    }

    pub fn stats(&self) -> DeliveryStats {
        self.scheduler.stats()
    }

    /// One turn: timers, attempts out, then one outcome (waiting at most until the next
    /// timer or `until`).
    fn turn(&mut self, until: Instant) {
        let now = Instant::now();
        if self.scheduler.poll_timeout().is_some_and(|at| at <= now) {
            self.scheduler.handle_timeout(now);
        }
        self.pump();
        let wake = self
            .scheduler
            .poll_timeout()
            .map_or(until, |at| at.min(until));
        let Some(pool) = &self.pool else {
            return;
        };
        if let Ok(done) = pool
            .done()
            .recv_timeout(wake.saturating_duration_since(now))
        {
            let jitter = self.jitter.next();
            self.scheduler.handle_done(done, Instant::now(), jitter);
            self.pump();
        }
    }

    fn pump(&mut self) {
        let now = Instant::now();
        while let Some(attempt) = self.scheduler.poll_attempt(now) {
            let pool = self.pool.as_ref().expect("a running pool");
            if pool.send(attempt).is_err() {
                panic!("no idle sender for an attempt the scheduler handed out");
            }
        }
        while let Some(report) = self.scheduler.poll_report() {
            self.reports.push_back(report);
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.stop(Instant::now());
        }
    }
}

/// A new-mail job for INBOX.
pub fn new_mail(sub: &Arc<PushSubscription>, exists: u32, event_at: Instant) -> PushJob {
    PushJob::NewMail {
        push: Arc::clone(sub),
        mailbox: "INBOX".into(),
        exists,
        preview: None,
        event_at,
    }
}
