//! Name resolution off the critical path: a bounded pool of resolver threads with a
//! per-lookup timeout, and the order in which resolved addresses are tried.
//!
//! Read first: RFC 8305 (Happy Eyeballs v2), sections 4 and 5.
//!
//! `getaddrinfo` blocks and cannot be cancelled, so it runs on a few threads of its own
//! behind a bounded queue. [`Resolver::lookup`] never blocks: a full queue answers
//! [`ResolveError::Busy`] at once. Every accepted lookup gets exactly one answer on its
//! reply channel: the addresses, [`ResolveError::NotFound`], or [`ResolveError::TimedOut`]
//! once its timeout has passed, even if `getaddrinfo` never returns (a watchdog thread
//! answers for it; the late result is dropped). A thread stuck in `getaddrinfo` stays
//! stuck until the C library gives up; the queue bound is what keeps a dead name server
//! from piling up work.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Default resolver threads: lookups in flight at once.
pub const RESOLVER_THREADS: usize = 4;
/// Default queue of lookups waiting for a thread.
pub const RESOLVER_QUEUE_LEN: usize = 256;
/// Default time a lookup may take before it is answered [`ResolveError::TimedOut`].
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the resolver pool runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Threads calling `getaddrinfo` (at least 1).
    pub threads: usize,
    /// Lookups accepted while every thread is busy (at least 1); past it, `Busy`.
    pub queue_len: usize,
    /// Per lookup, from the moment it is accepted.
    pub timeout: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            threads: RESOLVER_THREADS,
            queue_len: RESOLVER_QUEUE_LEN,
            timeout: RESOLVE_TIMEOUT,
        }
    }
}

/// Why a lookup gave no addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// The name does not resolve (or resolves to no address).
    NotFound,
    /// No answer within [`ResolverConfig::timeout`].
    TimedOut,
    /// The queue is full: too many lookups are waiting already.
    Busy,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResolveError::NotFound => "the host name did not resolve",
            ResolveError::TimedOut => "the host name lookup timed out",
            ResolveError::Busy => "too many host name lookups are waiting",
        })
    }
}

impl std::error::Error for ResolveError {}

/// The one answer to one lookup. `token` is the caller's, given to [`Resolver::lookup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub token: u64,
    pub result: Result<Vec<SocketAddr>, ResolveError>,
}

/// One accepted lookup. Whoever sets `answered` first (a resolver thread or the watchdog)
/// sends the answer; the other drops its own.
struct Pending {
    token: u64,
    reply: Sender<Lookup>,
    answered: AtomicBool,
}

impl Pending {
    fn answer(&self, result: Result<Vec<SocketAddr>, ResolveError>) {
        if !self.answered.swap(true, Ordering::AcqRel) {
            let token = self.token;
            // A receiver that has gone away no longer wants the answer.
            let _ = self.reply.send(Lookup { token, result });
        }
    }

    fn is_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }
}

/// What a resolver thread calls: [`resolve_now`], or a stand-in in unit tests.
type ResolveFn = Arc<dyn Fn(&str, u16) -> Result<Vec<SocketAddr>, ResolveError> + Send + Sync>;

struct Job {
    host: Box<str>,
    port: u16,
    pending: Arc<Pending>,
}

/// Deadlines of accepted lookups, oldest first. One timeout for all lookups makes
/// acceptance order deadline order, so a queue suffices.
#[derive(Default)]
struct Deadlines {
    queue: VecDeque<(Instant, Arc<Pending>)>,
    closed: bool,
}

#[derive(Default)]
struct Watchdog {
    deadlines: Mutex<Deadlines>,
    changed: Condvar,
}

impl Watchdog {
    fn lock(&self) -> MutexGuard<'_, Deadlines> {
        self.deadlines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stops the watchdog when the last [`Resolver`] goes; the resolver threads stop when the
/// job queue's last sender (inside it too) goes.
struct Inner {
    jobs: Sender<Job>,
    watchdog: Arc<Watchdog>,
    timeout: Duration,
    /// Entries kept in the deadline queue before answered ones are swept out: the
    /// unanswered ones are at most the queue plus the threads.
    sweep_at: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.watchdog.lock().closed = true;
        self.watchdog.changed.notify_all();
    }
}

/// A bounded pool of resolver threads. Cheap to clone; the threads stop when the last
/// clone is dropped (a thread stuck in `getaddrinfo` leaves when it returns).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Starts `config.threads` resolver threads and a watchdog thread.
    pub fn start(config: ResolverConfig) -> std::io::Result<Resolver> {
        Resolver::start_with(config, Arc::new(resolve_now))
    }

    fn start_with(config: ResolverConfig, resolve: ResolveFn) -> std::io::Result<Resolver> {
        let threads = config.threads.max(1);
        let queue_len = config.queue_len.max(1);
        let (jobs, job_rx) = crossbeam_channel::bounded::<Job>(queue_len);
        for index in 0..threads {
            let job_rx = job_rx.clone();
            let resolve = resolve.clone();
            std::thread::Builder::new()
                .name(format!("imap-resolve-{index}"))
                .spawn(move || resolve_loop(&job_rx, &resolve))?;
        }
        let watchdog = Arc::new(Watchdog::default());
        {
            let watchdog = watchdog.clone();
            std::thread::Builder::new()
                .name("imap-resolve-watchdog".into())
                .spawn(move || watchdog_loop(&watchdog))?;
        }
        Ok(Resolver {
            inner: Arc::new(Inner {
                jobs,
                watchdog,
                timeout: config.timeout,
                sweep_at: 2 * (queue_len + threads),
            }),
        })
    }

    /// Never blocks: Err(Busy) when the queue is full. The answer (or TimedOut once the
    /// per-lookup timeout passes, even if getaddrinfo never returns) is sent on `reply`.
    ///
    /// `host` is a name or an address literal (IPv6 with or without brackets); one
    /// trailing dot is ignored. The caller MUST keep `reply`'s receiver read (or give an
    /// unbounded channel): a resolver thread waits for room to send the answer.
    pub fn lookup(
        &self,
        host: &str,
        port: u16,
        token: u64,
        reply: &Sender<Lookup>,
    ) -> Result<(), ResolveError> {
        let pending = Arc::new(Pending {
            token,
            reply: reply.clone(),
            answered: AtomicBool::new(false),
        });
        let job = Job {
            host: host.into(),
            port,
            pending: pending.clone(),
        };
        match self.inner.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                return Err(ResolveError::Busy)
            }
        }
        let deadline = Instant::now() + self.inner.timeout;
        let mut deadlines = self.inner.watchdog.lock();
        if deadlines.queue.len() >= self.inner.sweep_at {
            deadlines.queue.retain(|(_, p)| !p.is_answered());
        }
        deadlines.queue.push_back((deadline, pending));
        if deadlines.queue.len() == 1 {
            self.inner.watchdog.changed.notify_one();
        }
        Ok(())
    }
}

fn resolve_loop(jobs: &Receiver<Job>, resolve: &ResolveFn) {
    for job in jobs {
        // Timed out while it waited in the queue: the answer has gone already.
        if job.pending.is_answered() {
            continue;
        }
        job.pending.answer(resolve(&job.host, job.port));
    }
}

/// Answers `TimedOut` for each lookup whose deadline passed; ends when the resolver goes.
fn watchdog_loop(watchdog: &Watchdog) {
    let mut deadlines = watchdog.lock();
    loop {
        let now = Instant::now();
        while let Some((deadline, pending)) = deadlines.queue.front() {
            if pending.is_answered() {
                deadlines.queue.pop_front();
            } else if *deadline <= now {
                pending.answer(Err(ResolveError::TimedOut));
                deadlines.queue.pop_front();
            } else {
                break;
            }
        }
        if deadlines.closed {
            return;
        }
        deadlines = match deadlines.queue.front() {
            Some(&(deadline, _)) => {
                let wait = deadline.saturating_duration_since(now);
                watchdog
                    .changed
                    .wait_timeout(deadlines, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => watchdog
                .changed
                .wait(deadlines)
                .unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// Resolves on this thread (blocking): an address literal at once, a name through
/// `getaddrinfo`.
pub fn resolve_now(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Some(addr) = literal(host, port) {
        return Ok(vec![addr]);
    }
    let bare = bare_name(host);
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|_| ResolveError::NotFound)?
        .collect();
    if addrs.is_empty() {
        return Err(ResolveError::NotFound);
    }
    Ok(addrs)
}

/// `host` without brackets and without one trailing dot. The dot marks a name as
/// absolute, but the hosts file has no such entries (`localhost.` would not be found
/// there), and an address literal with one (`127.0.0.1.`) is still that address.
fn bare_name(host: &str) -> &str {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.strip_suffix('.').unwrap_or(bare)
}

/// The address, if `host` is an IP address in standard text form (brackets and one
/// trailing dot allowed). Other spellings (`127.1`) go through `getaddrinfo`, which
/// knows them.
pub fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = bare_name(host).parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Delay between the start of one connection attempt and the next while the first has
/// not finished (RFC 8305 section 5, "Connection Attempt Delay": 250 ms recommended).
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// Most resolved addresses tried for one connection: a name with hundreds of addresses
/// must not make one session open hundreds of sockets.
pub const CONNECT_ADDRESSES_MAX: usize = 16;

/// The order in which to try `addrs` (RFC 8305 section 4): the resolver's own order
/// (RFC 6724) within each family, the families interleaved, starting with the family of
/// the first address. At most [`CONNECT_ADDRESSES_MAX`], duplicates dropped.
pub fn connect_order(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    // Only the first few of a long list can be reached anyway; bounding them here keeps
    // the duplicate scan small.
    let mut unique: Vec<SocketAddr> = Vec::new();
    for addr in addrs.iter().take(4 * CONNECT_ADDRESSES_MAX) {
        if !unique.contains(addr) {
            unique.push(*addr);
        }
    }
    let Some(first) = unique.first() else {
        return Vec::new();
    };
    let first_v6 = first.is_ipv6();
    let (mut preferred, mut other): (VecDeque<_>, VecDeque<_>) =
        unique.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut order = Vec::with_capacity(CONNECT_ADDRESSES_MAX);
    while order.len() < CONNECT_ADDRESSES_MAX {
        match (preferred.pop_front(), other.pop_front()) {
            (None, None) => break,
            (a, b) => order.extend(a.into_iter().chain(b)),
        }
    }
    order.truncate(CONNECT_ADDRESSES_MAX);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A lookup that never returns until `release` is dropped (a dead name server).
    fn stuck() -> (ResolveFn, Sender<()>) {
        let (release, gate) = crossbeam_channel::bounded::<()>(0);
        let resolve: ResolveFn = Arc::new(move |_: &str, _| {
            let _ = gate.recv();
            Err(ResolveError::NotFound)
        });
        (resolve, release)
    }

    #[test]
    fn a_full_queue_answers_busy_at_once() {
        let (resolve, _release) = stuck();
        let config = ResolverConfig {
            threads: 1,
            queue_len: 2,
            timeout: Duration::from_secs(60),
        };
        let resolver = Resolver::start_with(config, resolve).unwrap();
        let (reply, _answers) = crossbeam_channel::unbounded();
        // One taken by the thread (stuck), two waiting: the queue is full.
        resolver.lookup("a.test", 1, 1, &reply).unwrap();
        let taken = Instant::now() + Duration::from_secs(5);
        while resolver.inner.jobs.len() == 1 && Instant::now() < taken {
            std::thread::yield_now();
        }
        resolver.lookup("b.test", 1, 2, &reply).unwrap();
        resolver.lookup("c.test", 1, 3, &reply).unwrap();
        let started = Instant::now();
        assert_eq!(
            resolver.lookup("d.test", 1, 4, &reply),
            Err(ResolveError::Busy)
        );
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn a_lookup_that_never_returns_times_out_once() {
        let (resolve, release) = stuck();
        let config = ResolverConfig {
            threads: 1,
            queue_len: 4,
            timeout: Duration::from_millis(200),
        };
        let resolver = Resolver::start_with(config, resolve).unwrap();
        let (reply, answers) = crossbeam_channel::unbounded();
        let started = Instant::now();
        resolver.lookup("stuck.test", 993, 7, &reply).unwrap();
        resolver.lookup("queued.test", 993, 8, &reply).unwrap();
        let first = answers.recv_timeout(Duration::from_secs(5)).unwrap();
        let second = answers.recv_timeout(Duration::from_secs(5)).unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        let mut tokens = [first.token, second.token];
        tokens.sort_unstable();
        assert_eq!(tokens, [7, 8]);
        assert_eq!(first.result, Err(ResolveError::TimedOut));
        assert_eq!(second.result, Err(ResolveError::TimedOut));
        // The stuck lookup returns late: its answer is dropped, not sent a second time.
        drop(release);
        std::thread::sleep(Duration::from_millis(100));
        assert!(answers.try_recv().is_err());
    }

    #[test]
    fn answers_carry_the_token_and_the_addresses() {
        let resolver = Resolver::start(ResolverConfig::default()).unwrap();
        let (reply, answers) = crossbeam_channel::unbounded();
        resolver.lookup("[::1]", 993, 1, &reply).unwrap();
        resolver.lookup("127.0.0.1.", 143, 2, &reply).unwrap();
        let mut got: Vec<Lookup> = (0..2)
            .map(|_| answers.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        got.sort_by_key(|l| l.token);
        assert_eq!(got[0].result, Ok(vec![addr("[::1]:993")]));
        assert_eq!(got[1].result, Ok(vec![addr("127.0.0.1:143")]));
    }

    #[test]
    fn a_name_that_does_not_resolve_is_not_found() {
        assert_eq!(
            resolve_now("no-such-host.invalid", 993),
            Err(ResolveError::NotFound)
        );
    }

    #[test]
    fn families_interleave_starting_with_the_first() {
        let got = connect_order(&[
            addr("[2a00:1::1]:993"),
            addr("[2a00:1::2]:993"),
            addr("[2a00:1::3]:993"),
            addr("11.0.0.1:993"),
            addr("11.0.0.2:993"),
        ]);
        let want = [
            "[2a00:1::1]:993",
            "11.0.0.1:993",
            "[2a00:1::2]:993",
            "11.0.0.2:993",
            "[2a00:1::3]:993",
        ];
        assert_eq!(got, want.map(addr));
        let got = connect_order(&[
            addr("11.0.0.1:1"),
            addr("11.0.0.2:1"),
            addr("[2a00:1::1]:1"),
        ]);
        assert_eq!(got, ["11.0.0.1:1", "[2a00:1::1]:1", "11.0.0.2:1"].map(addr));
    }

    #[test]
    fn duplicates_go_and_long_lists_are_cut() {
        assert_eq!(connect_order(&[]), Vec::<SocketAddr>::new());
        let one = addr("11.0.0.1:1");
        assert_eq!(connect_order(&[one, one, one]), vec![one]);
        let many: Vec<SocketAddr> = (0..200u32)
            .map(|i| SocketAddr::new(IpAddr::V4(i.into()), 1))
            .collect();
        let order = connect_order(&many);
        assert_eq!(order.len(), CONNECT_ADDRESSES_MAX);
        assert_eq!(order[..], many[..CONNECT_ADDRESSES_MAX]);
    }
}
