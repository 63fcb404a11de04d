//! Progress lines for long phases (registering thousands of accounts, ramping, draining):
//! one line at least every 2 s, with the count, the rate and what is left, so that a run
//! that is slow can be told from a run that is stuck.
//!
//! [`Progress`] is pure (the clock is an argument): a loop that comes round more often
//! than [`INTERVAL`] asks it for a line. A phase whose loop may block longer uses a
//! [`Ticker`], a thread that asks on its behalf. Also compiled into tools/loadgen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time between two progress lines. Half the promised 2 s, so that a loop turn of up to
/// a second (the longest `recv_timeout` of the benches is 200 ms) still keeps the promise.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How often a [`Ticker`] looks at the clock.
const TICKER_POLL: Duration = Duration::from_millis(100);

/// The progress of one phase towards `total`.
#[derive(Clone, Debug)]
pub struct Progress {
    phase: String,
    total: usize,
    started: Instant,
    last_at: Instant,
    last_done: usize,
}

impl Progress {
    pub fn new(phase: impl Into<String>, total: usize, now: Instant) -> Progress {
        Progress {
            phase: phase.into(),
            total,
            started: now,
            last_at: now,
            last_done: 0,
        }
    }

    /// The line due at `now` with `done` finished, or `None` while the last line is
    /// younger than [`INTERVAL`].
    pub fn poll_line(&mut self, done: usize, now: Instant) -> Option<String> {
        if now.saturating_duration_since(self.last_at) < INTERVAL {
            return None;
        }
        let line = self.line(done, now);
        self.last_at = now;
        self.last_done = done;
        Some(line)
    }

    /// Prints the line due now, if any, on stderr.
    pub fn tick(&mut self, done: usize) {
        if let Some(line) = self.poll_line(done, Instant::now()) {
            eprintln!("{line}");
        }
    }

    /// `registering: 5000/19000 (26.3%), 2480/s, 14000 left, ~5.6 s to go, 2.0 s in`.
    /// The rate is that since the last line; the time to go is from the rate since the
    /// start.
    pub fn line(&self, done: usize, now: Instant) -> String {
        let since_last = now.saturating_duration_since(self.last_at).as_secs_f64();
        let recent = done.saturating_sub(self.last_done) as f64 / since_last.max(1e-9);
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        let overall = done as f64 / elapsed.max(1e-9);
        let left = self.total.saturating_sub(done);
        let to_go = if left == 0 {
            "done".to_owned()
        } else if overall > 0.0 {
            format!("~{:.1} s to go", left as f64 / overall)
        } else {
            "none done yet".to_owned()
        };
        let percent = 100.0 * done as f64 / self.total.max(1) as f64;
        format!(
            "{}: {done}/{} ({percent:.1}%), {recent:.0}/s, {left} left, {to_go}, {elapsed:.1} s in",
            self.phase, self.total
        )
    }
}

/// A thread that prints the progress of `count()` every [`INTERVAL`] until dropped, for a
/// phase that waits on something else (a child process, a blocking call).
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(
        phase: impl Into<String>,
        total: usize,
        count: impl Fn() -> usize + Send + 'static,
    ) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let mut progress = Progress::new(phase, total, Instant::now());
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(TICKER_POLL);
                if let Some(line) = progress.poll_line(count(), Instant::now()) {
                    eprintln!("{line}");
                }
            }
        });
        Ticker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_at_most_every_interval_with_count_rate_and_what_is_left() {
        let t0 = Instant::now();
        let mut p = Progress::new("registering", 19_000, t0);
        assert_eq!(p.poll_line(100, t0 + INTERVAL / 2), None);
        let line = p.poll_line(2_000, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(
            line,
            "registering: 2000/19000 (10.5%), 1000/s, 17000 left, ~17.0 s to go, 2.0 s in"
        );
        assert_eq!(p.poll_line(2_100, t0 + Duration::from_millis(2500)), None);
        // The rate is the recent one: 3000 in the last 1 s.
        let line = p.poll_line(5_000, t0 + Duration::from_secs(3)).unwrap();
        assert!(line.contains(", 3000/s, 14000 left"), "{line}");
        let end = p.poll_line(19_000, t0 + Duration::from_secs(9)).unwrap();
        assert!(end.contains("0 left, done"), "{end}");
    }

    #[test]
    fn a_loop_turning_every_200_ms_prints_at_least_every_2_s() {
        let t0 = Instant::now();
        let mut p = Progress::new("draining", 1_000, t0);
        let mut last = t0;
        for turn in 1..=100u32 {
            let now = t0 + Duration::from_millis(200) * turn;
            if p.poll_line(turn as usize, now).is_some() {
                assert!(now - last <= Duration::from_secs(2));
                last = now;
            }
        }
        assert!(t0 + Duration::from_secs(20) - last <= Duration::from_secs(2));
    }

    #[test]
    fn nothing_done_is_said_not_divided_by() {
        let t0 = Instant::now();
        let p = Progress::new("ramping", 10, t0);
        let line = p.line(0, t0 + Duration::from_secs(3));
        assert!(
            line.contains("0/10 (0.0%), 0/s, 10 left, none done yet"),
            "{line}"
        );
    }
}
