//! The TCP step of a push request: every resolved address judged by the address filter
//! immediately before its `connect()`, and the addresses raced as RFC 8305 (Happy
//! Eyeballs v2) says.
//!
//! Read first: RFC 8305 §4 (interleave the address families, starting with the family the
//! resolver put first), §5 (start the next attempt after a Connection Attempt Delay, or
//! at once when an attempt fails; the first to connect wins, the others are closed).
//!
//! Why here and not in the resolver: the address a socket connects to is the one that
//! counts. Judging it right before `connect()`, with no name lookup in between, leaves no
//! window for a DNS answer that changes (rebinding). An IPv4-mapped address
//! (`::ffff:a.b.c.d`) is judged both as written and as the IPv4 address the kernel will
//! use, and an unspecified address (`0.0.0.0`, `::`, `::ffff:0.0.0.0`), which Linux
//! connects to the local host, is refused whenever a filter is set.
//!
//! The race uses non-blocking sockets and `mio` readiness; the winner is handed to ureq as
//! a blocking `std::net::TcpStream`.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};

use crate::sender::AddressFilter;

/// RFC 8305 §5 "Connection Attempt Delay": the recommended 250 ms. The next address is
/// tried this long after the previous attempt started if none has connected yet.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Readiness events read per `poll()`; ureq keeps at most 16 resolved addresses.
const EVENTS_PER_POLL: usize = 16;

/// The addresses in the order RFC 8305 §4 tries them: the family of the first address
/// first, then alternating families, each family keeping the resolver's order.
pub fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut leading, mut other): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for addr in addrs {
        if addr.is_ipv4() == first.is_ipv4() {
            leading.push(*addr);
        } else {
            other.push(*addr);
        }
    }
    let mut out = Vec::with_capacity(addrs.len());
    let (mut a, mut b) = (leading.into_iter(), other.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Whether `filter` lets the socket connect to `ip`: the address as written and the
/// address the kernel uses (the IPv4 inside an IPv4-mapped one) must both pass, and an
/// unspecified one never does. No filter allows everything.
pub fn allowed(filter: Option<&AddressFilter>, ip: IpAddr) -> bool {
    let Some(filter) = filter else {
        return true;
    };
    let used = ip.to_canonical();
    !used.is_unspecified() && !ip.is_unspecified() && filter(ip) && filter(used)
}

/// Why no connection was made.
#[derive(Debug)]
pub enum RaceError {
    /// The filter refused every address: never connected, never worth a retry.
    Forbidden,
    /// No attempt connected before the deadline.
    TimedOut,
    /// Every allowed attempt failed; the last error.
    Io(io::Error),
}

/// Connects to the first of `order` that answers, starting one attempt every `stagger`
/// (or at once after a failure), each address judged by `allowed` right before its
/// `connect()`. Gives up at `deadline`.
pub fn race(
    order: &[SocketAddr],
    allowed: impl Fn(IpAddr) -> bool,
    stagger: Duration,
    deadline: Option<Instant>,
) -> Result<TcpStream, RaceError> {
    let mut poll = Poll::new().map_err(RaceError::Io)?;
    let mut events = Events::with_capacity(EVENTS_PER_POLL);
    let mut attempts: Vec<Option<MioStream>> = Vec::with_capacity(order.len());
    let (mut next, mut refused) = (0, 0);
    let mut last_error = None;
    let mut next_start = Instant::now();
    loop {
        let now = Instant::now();
        let pending = attempts.iter().flatten().count();
        if next < order.len() && (pending == 0 || now >= next_start) {
            let addr = order[next];
            next += 1;
            if !allowed(addr.ip()) {
                refused += 1;
                continue;
            }
            match start(&poll, addr, Token(attempts.len())) {
                Ok(stream) => {
                    attempts.push(Some(stream));
                    next_start = now + stagger;
                }
                Err(e) => {
                    last_error = Some(e);
                    // A connect() that fails at once starts the next attempt at once too.
                    next_start = now;
                }
            }
            continue;
        }
        if pending == 0 {
            return Err(match last_error {
                Some(e) => RaceError::Io(e),
                None if refused > 0 => RaceError::Forbidden,
                None => RaceError::Io(io::ErrorKind::ConnectionRefused.into()),
            });
        }
        if deadline.is_some_and(|d| now >= d) {
            return Err(RaceError::TimedOut);
        }
        let wake = match (deadline, next < order.len()) {
            (Some(d), true) => Some(d.min(next_start)),
            (Some(d), false) => Some(d),
            (None, true) => Some(next_start),
            (None, false) => None,
        };
        match poll.poll(&mut events, wake.map(|w| w.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RaceError::Io(e)),
        }
        for event in events.iter() {
            let slot = attempts.get_mut(event.token().0);
            let Some(stream) = slot.as_ref().and_then(|s| s.as_ref()) else {
                continue;
            };
            match settle(stream) {
                Settled::Pending => {}
                Settled::Connected => {
                    let Some(Some(stream)) = attempts.get_mut(event.token().0).map(Option::take)
                    else {
                        continue;
                    };
                    return into_blocking(stream).map_err(RaceError::Io);
                }
                Settled::Failed(e) => {
                    if let Some(slot) = attempts.get_mut(event.token().0) {
                        *slot = None;
                    }
                    last_error = Some(e);
                    // RFC 8305 §5: a failed attempt starts the next one at once.
                    next_start = now;
                }
            }
        }
    }
}

fn start(poll: &Poll, addr: SocketAddr, token: Token) -> io::Result<MioStream> {
    let mut stream = MioStream::connect(addr)?;
    poll.registry()
        .register(&mut stream, token, Interest::WRITABLE)?;
    Ok(stream)
}

enum Settled {
    Pending,
    Connected,
    Failed(io::Error),
}

/// mio's recipe for a non-blocking connect that became writable: an error is pending, or
/// the peer address is known (connected), or neither yet (a spurious wake-up).
fn settle(stream: &MioStream) -> Settled {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => Settled::Failed(e),
        Ok(None) => match stream.peer_addr() {
            Ok(_) => Settled::Connected,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Settled::Pending,
            Err(e) => Settled::Failed(e),
        },
    }
}

fn into_blocking(stream: MioStream) -> io::Result<TcpStream> {
    let stream = TcpStream::from(stream);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// The error a refused destination is reported with; `Sender` recognises it.
#[derive(Debug)]
pub(crate) struct Forbidden;

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("destination address not allowed")
    }
}

impl std::error::Error for Forbidden {}

/// ureq's TCP step, replaced: [`race`] over the resolved addresses with the filter.
/// A transport chained in before it (an HTTP CONNECT proxy) is passed on untouched; the
/// `Sender` never configures a proxy together with a filter.
pub(crate) struct GuardedConnector {
    pub(crate) filter: Option<AddressFilter>,
    pub(crate) stagger: Duration,
}

impl std::fmt::Debug for GuardedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedConnector")
            .field("filtered", &self.filter.is_some())
            .field("stagger", &self.stagger)
            .finish()
    }
}

impl<In: Transport> Connector<In> for GuardedConnector {
    type Out = Either<In, GuardedTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(transport) = chained {
            return Ok(Some(Either::A(transport)));
        }
        let order = interleave(&details.addrs);
        let deadline = details.timeout.not_zero().map(|d| Instant::now() + *d);
        let filter = self.filter.as_ref();
        let stream = race(&order, |ip| allowed(filter, ip), self.stagger, deadline).map_err(
            |e| match e {
                RaceError::Forbidden => {
                    ureq::Error::Io(io::Error::new(io::ErrorKind::PermissionDenied, Forbidden))
                }
                RaceError::TimedOut => ureq::Error::Timeout(details.timeout.reason),
                RaceError::Io(e) => ureq::Error::Io(e),
            },
        )?;
        let config = details.config;
        if config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let buffers = LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size());
        let transport = GuardedTransport {
            stream: Arc::new(stream),
            buffers,
            read_timeout: None,
            write_timeout: None,
        };
        (details.register_shutdown)(transport.shutdown_handle())?;
        Ok(Some(Either::B(transport)))
    }
}

/// A blocking TCP transport for ureq over the stream [`race`] won.
pub(crate) struct GuardedTransport {
    /// Shared (weakly) with ureq's shutdown handle.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl GuardedTransport {
    fn shutdown_handle(&self) -> Weak<dyn ShutdownHandle> {
        let weak: Weak<TcpStream> = Arc::downgrade(&self.stream);
        weak
    }
}

impl std::fmt::Debug for GuardedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The peer address is left out: it may be a push service's capability host.
        f.write_str("GuardedTransport")
    }
}

/// The socket timeout for the next I/O, or the timeout error if none is left.
fn io_timeout(timeout: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if !timeout.after.is_not_happening() && timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|d| *d))
}

fn io_error(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ureq::Error::Timeout(timeout.reason),
        _ => ureq::Error::Io(e),
    }
}

impl Transport for GuardedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let limit = io_timeout(timeout)?;
        if limit != self.write_timeout {
            self.stream.set_write_timeout(limit)?;
            self.write_timeout = limit;
        }
        let output = &self.buffers.output()[..amount];
        (&*self.stream)
            .write_all(output)
            .map_err(|e| io_error(e, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let limit = io_timeout(timeout)?;
        if limit != self.read_timeout {
            self.stream.set_read_timeout(limit)?;
            self.read_timeout = limit;
        }
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match (&*self.stream).read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => break result.map_err(|e| io_error(e, timeout))?,
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        probe(&self.stream).unwrap_or(false)
    }
}

/// A pooled connection is reusable if reading would block: no stray bytes, no EOF.
fn probe(stream: &TcpStream) -> io::Result<bool> {
    stream.set_nonblocking(true)?;
    let mut byte = [0u8; 1];
    let open =
        matches!((&*stream).read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false)?;
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn families_alternate_from_the_first() {
        let got = interleave(&[
            a("[2a00:1::1]:1"),
            a("[2a00:1::2]:1"),
            a("[2a00:1::3]:1"),
            a("11.0.0.1:1"),
        ]);
        assert_eq!(
            got,
            [
                a("[2a00:1::1]:1"),
                a("11.0.0.1:1"),
                a("[2a00:1::2]:1"),
                a("[2a00:1::3]:1")
            ]
        );
        let got = interleave(&[a("11.0.0.1:1"), a("11.0.0.2:1"), a("[2a00:1::1]:1")]);
        assert_eq!(got, [a("11.0.0.1:1"), a("[2a00:1::1]:1"), a("11.0.0.2:1")]);
        assert!(interleave(&[]).is_empty());
    }

    #[test]
    fn mapped_and_unspecified_addresses_are_judged_as_the_kernel_uses_them() {
        let loopback_refused: AddressFilter = Arc::new(|ip| !ip.is_loopback());
        let f = Some(&loopback_refused);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!allowed(f, ip("::ffff:127.0.0.1")));
        assert!(!allowed(f, ip("::ffff:0.0.0.0")));
        assert!(!allowed(f, ip("0.0.0.0")));
        assert!(!allowed(f, ip("::")));
        assert!(allowed(f, ip("::ffff:11.0.0.1")));
        assert!(allowed(f, ip("11.0.0.1")));
        assert!(allowed(None, ip("::ffff:127.0.0.1")), "no filter");
    }

    #[test]
    fn a_refused_address_is_skipped_and_the_next_one_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let order = [
            SocketAddr::from(([127, 0, 0, 2], port)),
            SocketAddr::from(([127, 0, 0, 1], port)),
        ];
        let seen = std::cell::RefCell::new(Vec::new());
        let judge = |ip: IpAddr| {
            seen.borrow_mut().push(ip);
            ip != IpAddr::from([127, 0, 0, 2])
        };
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let stream = race(&order, judge, CONNECTION_ATTEMPT_DELAY, deadline).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), order[1]);
        assert_eq!(seen.borrow().len(), 2, "each address judged once");
        let only_refused = race(&order[..1], |_| false, CONNECTION_ATTEMPT_DELAY, deadline);
        assert!(matches!(only_refused, Err(RaceError::Forbidden)));
    }

    #[test]
    fn a_refused_connection_moves_on_at_once() {
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let order = [dead, live.local_addr().unwrap()];
        let started = Instant::now();
        let deadline = Some(started + Duration::from_secs(5));
        let stream = race(&order, |_| true, Duration::from_secs(3), deadline).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), order[1]);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not the stagger"
        );
        let all_dead = race(&order[..1], |_| true, Duration::from_secs(3), deadline);
        assert!(matches!(all_dead, Err(RaceError::Io(_))));
    }

    /// A listener whose accept queue is full: the kernel drops further SYNs, so a
    /// connect to it neither succeeds nor fails (a tarpit).
    fn tarpit() -> (TcpListener, TcpStream) {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&a("127.0.0.1:0").into()).unwrap();
        socket.listen(0).unwrap();
        let listener: TcpListener = socket.into();
        let filler = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener, filler)
    }

    #[test]
    fn a_silent_first_address_costs_one_attempt_delay() {
        let (silent, _filler) = tarpit();
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let order = [silent.local_addr().unwrap(), live.local_addr().unwrap()];
        let started = Instant::now();
        let deadline = Some(started + Duration::from_secs(5));
        let stream = race(&order, |_| true, CONNECTION_ATTEMPT_DELAY, deadline).unwrap();
        let took = started.elapsed();
        assert_eq!(stream.peer_addr().unwrap(), order[1]);
        assert!(
            took >= CONNECTION_ATTEMPT_DELAY && took < Duration::from_secs(1),
            "{took:?}"
        );
        let alone = race(&order[..1], |_| true, CONNECTION_ATTEMPT_DELAY, {
            Some(Instant::now() + Duration::from_millis(300))
        });
        assert!(matches!(alone, Err(RaceError::TimedOut)), "{alone:?}");
    }
}
