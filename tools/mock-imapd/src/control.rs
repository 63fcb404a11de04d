//! The control channel: a line protocol on a loopback TCP port (and
//! in-process through [`crate::Handle::command`]).
//!
//! One command per line; one answer line starting `OK` or `ERR`. Only
//! `timestamps` and `help` send data lines before their `OK`. See the crate
//! docs for the command list.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use mio::Waker;

use crate::reactor::Tally;
use crate::reactor::{Answer, Order, Request, Stats, Target};
use crate::session::{user_hash, Quirk};
use crate::stream::{StreamKind, StreamSpec};

/// Longest control line read.
const LINE_MAX: u64 = 4096;
/// How long one worker may take to answer an order (a large `garbage`
/// to all sessions is the slowest).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Orders waiting in one worker's inbox. Each caller of the controller waits for its
/// answer before the next order, so only concurrent control clients queue up; past
/// this a caller waits up to [`ANSWER_TIMEOUT`] for room and then gets an error.
pub(crate) const ORDERS_QUEUED_MAX: usize = 64;
/// Largest `garbage` / `huge-line` size, so a typo cannot eat the memory.
pub const FAULT_BYTES_MAX: usize = 256 * 1024 * 1024;

const HELP: &str = "\
sessions
exists SESSION|all|random K
bye SESSION|all
still-here SESSION|all
stall SESSION|all on|off
garbage SESSION|all N
huge-line SESSION|all N
stream SESSION|all KIND N SECS [EVERY_MS]
close SESSION|all
quirk USER none|idle-no|first-idle-no|silent-done|auth-continuations
user USER
timestamps
reports
stats
shutdown
quit
";

/// A way into one worker.
pub(crate) struct Link {
    pub tx: Sender<Request>,
    pub waker: Arc<Waker>,
}

/// Executes control lines by sending orders to every worker.
pub(crate) struct Controller {
    links: Vec<Link>,
    stopped: AtomicBool,
    /// Control connections between reading a line and writing its answer,
    /// so that a `shutdown` is answered before the process exits.
    busy: AtomicUsize,
}

/// One parsed control line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Sessions,
    Exists(Target),
    Bye(Target),
    StillHere(Target),
    Stall(Target, bool),
    Garbage(Target, usize),
    HugeLine(Target, usize),
    Stream(Target, StreamSpec),
    Close(Target),
    Quirk(u64, Quirk),
    User(u64),
    Timestamps,
    Reports,
    Stats,
    Shutdown,
    Help,
}

/// `SESSION` is an index in accept order, or the login name; `all`;
/// `random K` where allowed.
fn target(words: &mut std::str::SplitAsciiWhitespace<'_>, random: bool) -> Result<Target, String> {
    let w = words.next().ok_or("missing SESSION")?;
    if w == "all" {
        return Ok(Target::All);
    }
    if w == "random" && random {
        let k = words
            .next()
            .and_then(|k| k.parse().ok())
            .ok_or("random needs a count K")?;
        return Ok(Target::Random(k));
    }
    Ok(Target::Named {
        index: w.parse().ok(),
        user: user_hash(w.bytes()),
    })
}

fn size(words: &mut std::str::SplitAsciiWhitespace<'_>) -> Result<usize, String> {
    let n: usize = words
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or("missing byte count N")?;
    if n > FAULT_BYTES_MAX {
        return Err(format!("N is limited to {FAULT_BYTES_MAX}"));
    }
    Ok(n)
}

/// `KIND N SECS [EVERY_MS]` of a `stream` line.
fn stream_spec(words: &mut std::str::SplitAsciiWhitespace<'_>) -> Result<StreamSpec, String> {
    let kind = words
        .next()
        .and_then(StreamKind::from_name)
        .ok_or("KIND is one of giant-line giant-literal continuations garbage flood drip")?;
    let mut number = |what: &str| -> Result<u64, String> {
        words
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("missing {what}"))
    };
    let total = number("byte count N")?;
    let limit = Duration::from_secs(number("time limit SECS")?);
    let every = if kind == StreamKind::Drip {
        Duration::from_millis(number("drip interval EVERY_MS")?)
    } else {
        Duration::ZERO
    };
    Ok(StreamSpec {
        kind,
        total,
        limit,
        every,
    })
}

fn parse(line: &str) -> Result<Cmd, String> {
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().ok_or("empty line")?;
    let parsed = match verb {
        "sessions" => Cmd::Sessions,
        "exists" => Cmd::Exists(target(&mut words, true)?),
        "bye" => Cmd::Bye(target(&mut words, false)?),
        "still-here" => Cmd::StillHere(target(&mut words, false)?),
        "stall" => {
            let t = target(&mut words, false)?;
            match words.next() {
                Some("on") => Cmd::Stall(t, true),
                Some("off") => Cmd::Stall(t, false),
                _ => return Err("stall needs on or off".into()),
            }
        }
        "garbage" => Cmd::Garbage(target(&mut words, false)?, size(&mut words)?),
        "huge-line" => Cmd::HugeLine(target(&mut words, false)?, size(&mut words)?),
        "stream" => Cmd::Stream(target(&mut words, false)?, stream_spec(&mut words)?),
        "close" => Cmd::Close(target(&mut words, false)?),
        "timestamps" => Cmd::Timestamps,
        "reports" => Cmd::Reports,
        "quirk" => {
            let user = words.next().ok_or("missing USER")?;
            let name = words.next().ok_or("missing quirk")?;
            let quirk = Quirk::ALL
                .into_iter()
                .find(|q| q.name() == name)
                .ok_or_else(|| format!("unknown quirk {name:?}"))?;
            Cmd::Quirk(user_hash(user.bytes()), quirk)
        }
        "user" => Cmd::User(user_hash(words.next().ok_or("missing USER")?.bytes())),
        "stats" => Cmd::Stats,
        "shutdown" => Cmd::Shutdown,
        "help" => Cmd::Help,
        other => return Err(format!("unknown command {other:?} (try help)")),
    };
    if words.next().is_some() {
        return Err("too many arguments".into());
    }
    Ok(parsed)
}

impl Controller {
    pub fn new(links: Vec<Link>) -> Self {
        Controller {
            links,
            stopped: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
        }
    }

    /// Waits (at most `limit`) until no control connection is between a
    /// line and its answer.
    pub fn wait_idle(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.busy.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Executes one line; the answer ends with a newline.
    pub fn execute(&self, line: &str) -> String {
        match parse(line).and_then(|l| self.run(l)) {
            Ok(answer) => answer,
            Err(e) => format!("ERR {e}\n"),
        }
    }

    /// Sends `order(worker)` to every worker and collects the answers.
    fn ask(&self, order: impl Fn(usize) -> Order) -> Result<Vec<Answer>, String> {
        let (tx, rx) = crossbeam_channel::bounded(self.links.len());
        for (i, link) in self.links.iter().enumerate() {
            link.tx
                .send_timeout(
                    Request {
                        order: order(i),
                        reply: tx.clone(),
                    },
                    ANSWER_TIMEOUT,
                )
                .map_err(|e| match e {
                    crossbeam_channel::SendTimeoutError::Timeout(_) => "worker inbox full",
                    crossbeam_channel::SendTimeoutError::Disconnected(_) => "worker gone",
                })?;
            link.waker.wake().map_err(|e| format!("wake: {e}"))?;
        }
        (0..self.links.len())
            .map(|_| {
                rx.recv_timeout(ANSWER_TIMEOUT)
                    .map_err(|_| "worker did not answer".to_string())
            })
            .collect()
    }

    fn affected(&self, target: Target, order: impl Fn(Target) -> Order) -> Result<String, String> {
        let per_worker = match target {
            Target::Random(k) => self.split_random(k)?,
            t => vec![t; self.links.len()],
        };
        let answers = self.ask(|i| order(per_worker[i]))?;
        let n: usize = answers
            .iter()
            .map(|a| if let Answer::Affected(n) = a { *n } else { 0 })
            .sum();
        if n == 0 && matches!(target, Target::Named { .. }) {
            return Err("no such session".into());
        }
        Ok(format!("OK {n}\n"))
    }

    /// Spreads K random picks over the workers in proportion to their
    /// sessions with a mailbox selected.
    fn split_random(&self, k: usize) -> Result<Vec<Target>, String> {
        let counts: Vec<usize> = self
            .ask(|_| Order::Count)?
            .iter()
            .map(|a| {
                if let Answer::Count { selected, .. } = a {
                    *selected
                } else {
                    0
                }
            })
            .collect();
        let total: usize = counts.iter().sum();
        let k = k.min(total);
        let mut shares: Vec<usize> = counts
            .iter()
            .map(|&c| (k * c).checked_div(total).unwrap_or(0))
            .collect();
        let mut left = k - shares.iter().sum::<usize>();
        for (share, &c) in shares.iter_mut().zip(&counts) {
            let extra = left.min(c - *share);
            *share += extra;
            left -= extra;
        }
        Ok(shares.into_iter().map(Target::Random).collect())
    }

    fn run(&self, line: Cmd) -> Result<String, String> {
        match line {
            Cmd::Sessions => {
                let n: usize = self
                    .ask(|_| Order::Count)?
                    .iter()
                    .map(|a| {
                        if let Answer::Count { sessions, .. } = a {
                            *sessions
                        } else {
                            0
                        }
                    })
                    .sum();
                Ok(format!("OK {n}\n"))
            }
            Cmd::Exists(t) => self.affected(t, Order::Exists),
            Cmd::Bye(t) => self.affected(t, Order::Bye),
            Cmd::StillHere(t) => self.affected(t, Order::StillHere),
            Cmd::Stall(t, true) => self.affected(t, |t| Order::Stall(t, true)),
            Cmd::Stall(t, false) => self.affected(t, |t| Order::Stall(t, false)),
            Cmd::Close(t) => self.affected(t, Order::Close),
            Cmd::Garbage(t, n) => self.affected(t, |t| Order::Garbage(t, n)),
            Cmd::HugeLine(t, n) => self.affected(t, |t| Order::HugeLine(t, n)),
            Cmd::Stream(t, spec) => self.affected(t, |t| Order::Stream(t, spec)),
            Cmd::Quirk(user, quirk) => {
                self.ask(|_| Order::Quirk(user, quirk))?;
                Ok("OK\n".into())
            }
            Cmd::User(user) => {
                let mut total = Tally::default();
                for a in self.ask(|_| Order::User(user))? {
                    if let Answer::User(t) = a {
                        total.add(&t);
                    }
                }
                Ok(format!("OK {}\n", total.line()))
            }
            Cmd::Reports => {
                let mut s = String::new();
                let mut n = 0;
                for a in self.ask(|_| Order::Reports)? {
                    if let Answer::Reports(reports) = a {
                        for r in reports {
                            s.push_str(&r.line());
                            s.push('\n');
                            n += 1;
                        }
                    }
                }
                s.push_str(&format!("OK {n}\n"));
                Ok(s)
            }
            Cmd::Timestamps => {
                let mut all = Vec::new();
                for a in self.ask(|_| Order::Timestamps)? {
                    if let Answer::Timestamps(v) = a {
                        all.extend(v);
                    }
                }
                all.sort_unstable_by_key(|&(index, ns)| (ns, index));
                let mut s = String::with_capacity(all.len() * 28 + 16);
                for (index, ns) in &all {
                    s.push_str(&format!("{index} {ns}\n"));
                }
                s.push_str(&format!("OK {}\n", all.len()));
                Ok(s)
            }
            Cmd::Stats => {
                let mut total = Stats::default();
                for a in self.ask(|_| Order::Stats)? {
                    if let Answer::Stats(s) = a {
                        total.add(&s);
                    }
                }
                Ok(format!("OK {total} rss_kb={}\n", rss_kb()))
            }
            Cmd::Shutdown => {
                self.stopped.store(true, Ordering::Relaxed);
                self.ask(|_| Order::Shutdown)?;
                Ok("OK shutting down\n".into())
            }
            Cmd::Help => Ok(format!("{HELP}OK\n")),
        }
    }
}

/// Resident set size of this process, from /proc/self/statm.
pub(crate) fn rss_kb() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096) / 1024
}

/// Serves control connections until the controller stops. Each connection
/// gets a thread: there are few of them and they are mostly idle.
pub(crate) fn serve(listener: TcpListener, controller: Arc<Controller>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if controller.is_stopped() {
                return;
            }
            let Ok(conn) = conn else { continue };
            let c = controller.clone();
            std::thread::spawn(move || connection(conn, &c));
        }
    })
}

fn connection(conn: TcpStream, controller: &Controller) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = conn;
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(LINE_MAX).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cmd = line.trim();
        if cmd == "quit" {
            let _ = writer.write_all(b"OK bye\n");
            return;
        }
        if cmd.is_empty() {
            continue;
        }
        controller.busy.fetch_add(1, Ordering::AcqRel);
        let answer = controller.execute(cmd);
        let written = writer.write_all(answer.as_bytes()).is_ok();
        controller.busy.fetch_sub(1, Ordering::AcqRel);
        if !written || controller.is_stopped() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        assert_eq!(parse("sessions"), Ok(Cmd::Sessions));
        assert_eq!(parse("exists all"), Ok(Cmd::Exists(Target::All)));
        assert_eq!(parse("exists random 5"), Ok(Cmd::Exists(Target::Random(5))));
        assert_eq!(
            parse("exists 12"),
            Ok(Cmd::Exists(Target::Named {
                index: Some(12),
                user: user_hash(b"12".iter().copied())
            }))
        );
        assert_eq!(
            parse("stall bob on"),
            Ok(Cmd::Stall(
                Target::Named {
                    index: None,
                    user: user_hash(b"bob".iter().copied())
                },
                true
            ))
        );
        assert!(parse("bye random 3").is_err());
        assert!(parse("stall bob").is_err());
        assert!(parse("garbage 1 999999999999").is_err());
        assert!(parse("frob").is_err());
        assert_eq!(
            parse("stream all drip 17 6 500"),
            Ok(Cmd::Stream(
                Target::All,
                StreamSpec {
                    kind: StreamKind::Drip,
                    total: 17,
                    limit: Duration::from_secs(6),
                    every: Duration::from_millis(500),
                }
            ))
        );
        assert!(parse("stream all drip 17 6").is_err());
        assert!(parse("stream all firehose 1 1").is_err());
        assert_eq!(parse("reports"), Ok(Cmd::Reports));
        assert_eq!(
            parse("quirk bob silent-done"),
            Ok(Cmd::Quirk(
                user_hash(b"bob".iter().copied()),
                Quirk::SilentDone
            ))
        );
        assert!(parse("quirk bob grumpy").is_err());
        assert_eq!(
            parse("user bob"),
            Ok(Cmd::User(user_hash(b"bob".iter().copied())))
        );
        assert!(parse("sessions extra").is_err());
    }
}
