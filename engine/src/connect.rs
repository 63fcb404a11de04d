//! Getting a session's TCP connection up: which addresses may be tried (the connect
//! filter), from which source addresses, with which keepalive, and Happy Eyeballs
//! (RFC 8305) across the resolved addresses. The reactor registers and polls the sockets;
//! this module only makes them.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use crate::reason::EndReason;
use crate::resolve::connect_order;
use crate::time::Tick;

/// Decides whether the engine may connect to an address (an SSRF guard). Called with every
/// resolved address, and again with each address right before its connect().
pub type ConnectFilter = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// TCP keepalive: a peer that vanished without a FIN or RST is found within
/// `idle + interval * retries` (here 60 + 15 * 4 = 120 s), not at the next IDLE refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    pub idle: Duration,
    pub interval: Duration,
    pub retries: u32,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(15),
            retries: 4,
        }
    }
}

/// Local addresses to connect from, shared by every reactor. One source address reaches
/// one destination (address and port) through at most the ephemeral port range (~28K
/// ports); more sessions to one provider need more source addresses.
#[derive(Debug, Default)]
pub struct Sources {
    addrs: Box<[IpAddr]>,
    next: AtomicUsize,
}

impl Sources {
    pub fn new(addrs: Vec<IpAddr>) -> Sources {
        Sources {
            addrs: addrs.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    /// The source addresses for `dest`'s family, starting with the next in turn, so
    /// sessions spread evenly.
    fn for_dest(&self, dest: SocketAddr) -> impl Iterator<Item = IpAddr> + '_ {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.addrs.len();
        (0..n)
            .map(move |i| self.addrs[(start + i) % n])
            .filter(move |a| a.is_ipv4() == dest.is_ipv4())
    }
}

/// What a connect attempt needs from the reactor's shared settings.
#[derive(Clone, Copy)]
pub(crate) struct Dial<'a> {
    pub filter: Option<&'a ConnectFilter>,
    pub keepalive: &'a KeepaliveConfig,
    pub sources: &'a Sources,
}

/// Happy Eyeballs (RFC 8305) for a slot whose connection is not up yet. The slot's `sock`
/// is the oldest attempt in flight, `racers` the later ones (all registered under the
/// slot's token), `pending` the addresses not tried yet, in [`connect_order`].
pub(crate) struct Dialer {
    pub(crate) pending: VecDeque<SocketAddr>,
    pub(crate) racers: Vec<TcpStream>,
    /// When the next address is tried although earlier attempts are still in flight.
    pub(crate) next_at: Tick,
    /// Reported if every attempt fails.
    pub(crate) last_error: io::ErrorKind,
    /// Whether any address passed the connect filter; if none did, the end is `Forbidden`.
    pub(crate) any_allowed: bool,
    /// Whether the slot's `sock` is an attempt still in flight (not one that failed).
    pub(crate) primary_alive: bool,
}

impl Dialer {
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Dialer {
        Dialer {
            pending: connect_order(&addrs).into(),
            racers: Vec::new(),
            next_at: Tick::NEVER,
            last_error: io::ErrorKind::NotFound,
            any_allowed: false,
            primary_alive: true,
        }
    }

    /// Starts a connect to the next address the filter allows, judging each one right
    /// before its connect(). None when no address is left.
    pub(crate) fn start_next(&mut self, how: Dial<'_>) -> Option<TcpStream> {
        while let Some(addr) = self.pending.pop_front() {
            if let Some(filter) = how.filter {
                if !filter(addr.ip()) {
                    continue;
                }
            }
            self.any_allowed = true;
            match connect(addr, how.keepalive, how.sources) {
                Ok(sock) => return Some(sock),
                Err(e) => self.last_error = e.kind(),
            }
        }
        None
    }

    /// Why the session ends when no attempt is left.
    pub(crate) fn failure(&self) -> EndReason {
        if self.any_allowed {
            EndReason::Connect(self.last_error)
        } else {
            EndReason::Forbidden
        }
    }
}

/// Where a connect attempt stands.
pub(crate) enum Attempt {
    InProgress,
    Connected,
    Failed(io::ErrorKind),
}

pub(crate) fn attempt_state(sock: &TcpStream) -> Attempt {
    match sock.take_error() {
        Ok(Some(e)) | Err(e) => return Attempt::Failed(e.kind()),
        Ok(None) => {}
    }
    match sock.peer_addr() {
        Ok(_) => Attempt::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Attempt::InProgress,
        Err(e) => Attempt::Failed(e.kind()),
    }
}

/// Starts a non-blocking connect with keepalive set, from one of `sources` if any: a
/// source address whose ports are exhausted for this destination moves on to the next.
fn connect(
    addr: SocketAddr,
    keepalive: &KeepaliveConfig,
    sources: &Sources,
) -> io::Result<TcpStream> {
    if sources.addrs.is_empty() {
        return connect_from(addr, keepalive, None);
    }
    let mut last = io::Error::from(io::ErrorKind::AddrNotAvailable);
    for source in sources.for_dest(addr) {
        match connect_from(addr, keepalive, Some(source)) {
            Ok(sock) => return Ok(sock),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse
                ) =>
            {
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn connect_from(
    addr: SocketAddr,
    keepalive: &KeepaliveConfig,
    source: Option<IpAddr>,
) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    let params = TcpKeepalive::new()
        .with_time(keepalive.idle)
        .with_interval(keepalive.interval)
        .with_retries(keepalive.retries);
    SockRef::from(&socket).set_tcp_keepalive(&params)?;
    if let Some(source) = source {
        // Let connect() pick the port, so one source port can serve several destinations
        // and exhaustion shows as EADDRNOTAVAIL there (Linux IP_BIND_ADDRESS_NO_PORT).
        set_bind_address_no_port(&socket)?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd, and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
