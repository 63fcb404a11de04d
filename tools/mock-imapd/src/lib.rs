//! mock-imapd: an IMAP server for density, latency and fault benchmarks of
//! the push proxy. It is **not** a test substitute for Dovecot: correctness
//! tests run against Dovecot.
//!
//! # What it never does
//!
//! - **No mail store.** Every session has one message counter, shared by
//!   every mailbox name; no FETCH, SEARCH, STORE or APPEND, no flags, no
//!   EXPUNGE. Messages only ever arrive through the control channel.
//! - **No authentication.** LOGIN and AUTHENTICATE PLAIN accept any name and
//!   password; the name is kept only as a 64-bit hash, to find sessions.
//! - **No protocol policing beyond framing.** Unknown commands get `BAD`;
//!   a command over 16 KiB gets `* BYE` and the connection is closed.
//! - **No network beyond loopback in intent.** It binds what it is told;
//!   its generated certificates (fixed public RSA keys in `keys/`, see
//!   [`tls`]) must never be trusted outside a benchmark.
//! - **No timers of its own** except `--greeting-delay-ms`: it never logs
//!   a session out, never ends IDLE, never sends keepalives unless told.
//! - **No panics on peer input**, no `unwrap()` on network bytes: a broken
//!   client is closed and counted in `stats`.
//!
//! # What it is
//!
//! A mio reactor per worker thread (edge-triggered, reads until
//! `WouldBlock`), plain and implicit-TLS listeners (rustls with ring), and
//! STARTTLS on plain listeners when a certificate is configured. A session
//! idling costs a 128-byte slab slot, its socket, and (TLS) the rustls
//! connection; read buffers are lent only while a command is partial, and
//! output is written straight to the socket, only an unsent tail parked.
//! `RLIMIT_NOFILE` is raised to its hard limit at start. TLS clients may
//! resume with stateless tickets unless `--no-tls-resumption` (then every
//! handshake is full: about 1 ms of server CPU each with RSA-2048 here).
//! `examples/density.rs` measures setup rate and RSS per session.
//!
//! IMAP: greeting `* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE
//! IDLE NOTIFY AUTH=PLAIN] mock ready`; CAPABILITY, LOGIN (atoms, quoted
//! strings, `{N}` literals answered with `+ OK`, `{N+}`), AUTHENTICATE PLAIN
//! (SASL-IR or continuation), STARTTLS, SELECT/EXAMINE (FLAGS, EXISTS,
//! RECENT, UIDVALIDITY 1, UIDNEXT), STATUS, IDLE/DONE, NOTIFY SET/NONE,
//! NOOP and CHECK (announce news), ID, ENABLE, CLOSE/UNSELECT, LOGOUT.
//!
//! # Control channel
//!
//! A loopback TCP port (`--control`) or [`Handle::command`]: one command a
//! line, one answer line `OK ...` or `ERR ...`. `SESSION` is a session index
//! (accept order, from 0) or the name used at login (every session of that
//! name); an all-digit word is tried as an index first.
//!
//! | command | effect |
//! | --- | --- |
//! | `sessions` | `OK <open sessions>` |
//! | `exists SESSION\|all\|random K` | one new message each: `* N EXISTS` at once if idling (or NOTIFY SET), else on the next NOOP or IDLE; `OK <sessions hit>` |
//! | `bye SESSION\|all` | `* BYE`, then close (TLS: close_notify) |
//! | `still-here SESSION\|all` | `* OK Still here` to each, in one pass |
//! | `stall SESSION\|all on\|off` | stop reading and answering; `off` catches up |
//! | `garbage SESSION\|all N` | N random bytes |
//! | `huge-line SESSION\|all N` | one `* OK xxx...` line of N bytes, CRLF included |
//! | `stream SESSION\|all KIND N SECS [EVERY_MS]` | a streamed fault of N bytes in all, for at most SECS, written as the client reads (see [`stream`]): `giant-line`, `giant-literal`, `continuations`, `garbage`, `flood`, or `drip` (one byte every EVERY_MS); the session answers nothing meanwhile; plain sessions only |
//! | `reports` | `INDEX USER_HEX KIND OFFERED ACCEPTED ERROR\|- TOOK_MS` lines, one per ended stream (the last 4,096), then `OK <lines>` |
//! | `close SESSION\|all` | reset (SO_LINGER 0, RST) |
//! | `quirk USER none\|idle-no\|first-idle-no\|silent-done\|auth-continuations` | sessions of USER misbehave from their next login on (see [`session::Quirk`]); `auth-continuations` answers the login with `+ more` lines for 10 s, then closes |
//! | `user USER` | `OK logins=.. idles=.. ended=.. logouts=.. client_closed=.. open=..` for the sessions of USER |
//! | `timestamps` | `INDEX UNIX_NS` lines, one per EXISTS sent since the last dump, then `OK <lines>` |
//! | `stats` | `OK key=value ...` (sessions, idling, handshakes, bytes, closes by cause, rss_kb, ...) |
//! | `shutdown` | stop serving; the binary exits |
//!
//! Timestamps are `CLOCK_REALTIME` nanoseconds taken right after the write
//! (plain) or `write_tls` (TLS) call that put the EXISTS line on the socket,
//! so another process on the machine can subtract them from its own
//! receive times. Only EXISTS lines that announce delivered messages are
//! stamped, never the one in a SELECT/EXAMINE answer. `random` picks among
//! sessions with a mailbox selected. Stalled sessions still get `bye`,
//! `garbage`, `huge-line` and `close`, but not `still-here`, and their
//! EXISTS wait until `stall ... off`.
//!
//! # Example
//!
//! ```no_run
//! use mock_imapd::{run, Config, TlsSource, ChainKind, KeyAlg};
//!
//! let handle = run(Config {
//!     listen: mock_imapd::parse_addrs("127.0.0.1:0").unwrap(),
//!     listen_tls: mock_imapd::parse_addrs("127.0.0.1:0").unwrap(),
//!     tls: Some(TlsSource::Generated { chain: ChainKind::Small, alg: KeyAlg::Rsa }),
//!     ..Config::default()
//! })
//! .unwrap();
//! let ca_pem = handle.ca_pem().unwrap(); // trust this in the client
//! let imap = handle.plain_addrs()[0];
//! // ... connect clients, LOGIN alice, EXAMINE INBOX, IDLE ...
//! assert!(handle.command("exists alice").starts_with("OK"));
//! print!("{}", handle.command("timestamps"));
//! handle.shutdown();
//! ```
//!
//! From a shell: `mock-imapd --listen 127.0.0.1:10143-10152 --listen-tls
//! 127.0.0.1:10993 --self-signed-ca-out /tmp/ca.pem --control
//! 127.0.0.1:7143`, then `printf 'exists random 100\ntimestamps\n' | nc
//! 127.0.0.1 7143`. Several processes may share a load: each has its own
//! ports, control port and session indices (at most ~19,000 sessions per
//! process with the 20,000-descriptor limit here).

#![warn(missing_docs)]

pub mod command;
mod control;
mod reactor;
pub mod session;
pub mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

pub use control::FAULT_BYTES_MAX;
pub use session::{Policy, Quirk};
pub use tls::{ChainKind, KeyAlg, TlsSource};

/// Listen backlog: a benchmark opens thousands of sessions at once.
const BACKLOG: i32 = 4096;

/// What [`run`] serves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Plain IMAP listeners (STARTTLS offered when `tls` is set).
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS IMAP listeners; needs `tls`.
    pub listen_tls: Vec<SocketAddr>,
    /// Server certificate for `listen_tls` and STARTTLS.
    pub tls: Option<TlsSource>,
    /// Advertise and accept IDLE.
    pub idle: bool,
    /// Advertise and accept NOTIFY.
    pub notify: bool,
    /// Control channel listener (loopback).
    pub control: Option<SocketAddr>,
    /// Worker threads, each with its own poll and copies of the listeners.
    pub threads: usize,
    /// Sessions beyond this are refused (`* BYE [UNAVAILABLE]` on plain).
    pub max_sessions: usize,
    /// Delay before the greeting; the TLS handshake waits too.
    pub greeting_delay: Duration,
    /// Let TLS clients resume with stateless tickets (no server memory);
    /// off makes every handshake a full one.
    pub tls_resumption: bool,
    /// Messages in every new session's mailbox.
    pub initial_messages: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            listen_tls: Vec::new(),
            tls: None,
            idle: true,
            notify: true,
            control: None,
            threads: 1,
            max_sessions: 19_500,
            greeting_delay: Duration::ZERO,
            tls_resumption: true,
            initial_messages: 0,
        }
    }
}

/// Why the server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent or an argument is malformed.
    Config(String),
    /// A socket, thread or file operation failed.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Certificates, keys or the rustls configuration.
    Tls(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(m) => write!(f, "configuration: {m}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Tls(m) => write!(f, "TLS: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Parses `IP:PORT` or `IP:FIRST-LAST` (a port range, inclusive) into
/// addresses; IPv6 as `[::1]:PORT`.
pub fn parse_addrs(spec: &str) -> Result<Vec<SocketAddr>, Error> {
    let bad = || {
        Error::Config(format!(
            "bad address {spec:?} (want IP:PORT or IP:FIRST-LAST)"
        ))
    };
    let (host, ports) = spec.rsplit_once(':').ok_or_else(bad)?;
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if first > last {
        return Err(bad());
    }
    (first..=last)
        .map(|p| {
            format!("{host}:{p}")
                .parse::<SocketAddr>()
                .map_err(|_| bad())
        })
        .collect()
}

/// A running server. Dropping it shuts it down.
pub struct Handle {
    plain: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
    control_addr: Option<SocketAddr>,
    ca_pem: Option<String>,
    chain: Option<(usize, usize)>,
    controller: Arc<control::Controller>,
    workers: Vec<JoinHandle<()>>,
    control_thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Bound plain listeners (ports resolved), in configuration order.
    pub fn plain_addrs(&self) -> &[SocketAddr] {
        &self.plain
    }

    /// Bound implicit-TLS listeners.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls
    }

    /// Bound control listener.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The CA to trust, PEM, when the certificates were generated.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Certificates the server sends and their total DER size in bytes.
    pub fn tls_chain(&self) -> Option<(usize, usize)> {
        self.chain
    }

    /// Executes one control line in-process; returns the answer, every
    /// line ending in `\n` (same text as the TCP control channel).
    pub fn command(&self, line: &str) -> String {
        self.controller.execute(line)
    }

    /// Blocks until the server stops (a `shutdown` control command).
    pub fn wait(mut self) {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    /// Stops the workers and the control listener, and waits for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if !self.controller.is_stopped() {
            let _ = self.controller.execute("shutdown");
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // A `shutdown` from the control port is answered before we go.
        self.controller.wait_idle(Duration::from_secs(2));
        if let (Some(t), Some(addr)) = (self.control_thread.take(), self.control_addr) {
            // Wake the blocking accept so that it sees the stop flag.
            let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1));
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile_limit() -> Result<u64, Error> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to fill/read.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io_err("getrlimit")(std::io::Error::last_os_error()));
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io_err("setrlimit")(std::io::Error::last_os_error()));
        }
    }
    Ok(lim.rlim_cur)
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let what = format!("bind {addr}");
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(io_err(what.clone()))?;
    s.set_reuse_address(true).map_err(io_err(what.clone()))?;
    // Every worker binds the same address; the kernel spreads connections.
    s.set_reuse_port(true).map_err(io_err(what.clone()))?;
    s.bind(&addr.into()).map_err(io_err(what.clone()))?;
    s.listen(BACKLOG).map_err(io_err(what))?;
    Ok(s.into())
}

/// Binds `addrs` once per worker; returns the resolved addresses and each
/// worker's sockets.
fn bind_all(
    addrs: &[SocketAddr],
    kind: reactor::ListenerKind,
    per_worker: &mut [Vec<(std::net::TcpListener, reactor::ListenerKind)>],
) -> Result<Vec<SocketAddr>, Error> {
    let mut bound = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let first = bind(addr)?;
        let actual = first.local_addr().map_err(io_err("local_addr"))?;
        bound.push(actual);
        for (i, sockets) in per_worker.iter_mut().enumerate() {
            let l = if i == 0 {
                first.try_clone().map_err(io_err("dup listener"))?
            } else {
                bind(actual)?
            };
            sockets.push((l, kind));
        }
    }
    Ok(bound)
}

/// Starts the server: binds every listener, starts the workers and the
/// control channel, and returns at once.
pub fn run(config: Config) -> Result<Handle, Error> {
    if config.threads == 0 {
        return Err(Error::Config("threads must be at least 1".into()));
    }
    if config.listen.is_empty() && config.listen_tls.is_empty() {
        return Err(Error::Config("nothing to listen on".into()));
    }
    if !config.listen_tls.is_empty() && config.tls.is_none() {
        return Err(Error::Config(
            "TLS listeners need a certificate (or a generated one)".into(),
        ));
    }
    raise_nofile_limit()?;
    let identity = config
        .tls
        .as_ref()
        .map(|source| tls::identity(source, config.tls_resumption))
        .transpose()?;
    let mut per_worker: Vec<Vec<_>> = (0..config.threads).map(|_| Vec::new()).collect();
    let plain = bind_all(
        &config.listen,
        reactor::ListenerKind::Plain,
        &mut per_worker,
    )?;
    let tls_addrs = bind_all(
        &config.listen_tls,
        reactor::ListenerKind::Tls,
        &mut per_worker,
    )?;
    let shared = Arc::new(reactor::Shared {
        policy: Policy {
            idle: config.idle,
            notify: config.notify,
        },
        initial_messages: config.initial_messages,
        max_sessions: config.max_sessions,
        greeting_delay: config.greeting_delay,
        tls: identity.as_ref().map(|i| i.config.clone()),
        next_index: AtomicU64::new(0),
        live: AtomicUsize::new(0),
    });
    let mut links = Vec::with_capacity(config.threads);
    let mut workers = Vec::with_capacity(config.threads);
    for (id, listeners) in per_worker.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::bounded(control::ORDERS_QUEUED_MAX);
        let (worker, waker) =
            reactor::worker(id, shared.clone(), listeners, rx).map_err(io_err("poll"))?;
        let thread = std::thread::Builder::new()
            .name(format!("mock-imapd-{id}"))
            .spawn(move || worker.run())
            .map_err(io_err("spawn worker"))?;
        links.push(control::Link { tx, waker });
        workers.push(thread);
    }
    let controller = Arc::new(control::Controller::new(links));
    let mut handle = Handle {
        plain,
        tls: tls_addrs,
        control_addr: None,
        ca_pem: identity.as_ref().and_then(|i| i.ca_pem.clone()),
        chain: identity.as_ref().map(|i| (i.chain_len, i.chain_bytes)),
        controller: controller.clone(),
        workers,
        control_thread: None,
    };
    if let Some(addr) = config.control {
        // On error the handle is dropped, which stops the workers.
        let listener =
            std::net::TcpListener::bind(addr).map_err(io_err(format!("bind control {addr}")))?;
        handle.control_addr = Some(listener.local_addr().map_err(io_err("local_addr"))?);
        handle.control_thread = Some(control::serve(listener, controller));
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_ranges() {
        assert_eq!(parse_addrs("127.0.0.1:143").unwrap().len(), 1);
        let r = parse_addrs("127.0.0.1:10000-10002").unwrap();
        assert_eq!(
            r.iter().map(|a| a.port()).collect::<Vec<_>>(),
            [10000, 10001, 10002]
        );
        assert_eq!(parse_addrs("[::1]:993").unwrap()[0].port(), 993);
        for bad in ["127.0.0.1", "127.0.0.1:9-8", "host:1", "127.0.0.1:x"] {
            assert!(parse_addrs(bad).is_err(), "{bad}");
        }
    }
}
