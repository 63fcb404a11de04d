//! The public face: bind, spawn the loop thread, answer requests, stop.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};

use crate::error::HttpdError;
use crate::forwarded::Cidr;
use crate::handler::RESPONSES_QUEUED_PER_CONNECTION;
pub use crate::handler::{Handler, Responder};
use crate::limits::Limits;
use crate::reactor::{Parts, Reactor, LISTENER, WAKER};
use crate::stats::Stats;
use crate::tls::{load_server_config, SharedTls, TlsCert, TlsFiles};

/// Server settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub limits: Limits,
    /// Serve HTTPS with this certificate and key; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Reverse proxies whose word on the client is taken: from a peer in one
    /// of these ranges only, a PROXY protocol v2 header at the start of the
    /// connection (before TLS) names the client of the whole connection, or,
    /// without one, each request's `X-Forwarded-For` names its client (see
    /// [`forwarded`](crate::forwarded)). Everybody else's headers are
    /// ignored. Empty (the default): every peer is the client.
    pub trusted_proxies: Vec<Cidr>,
}

/// A bound, not yet running server. Everything that can fail at startup
/// (limits, TLS files, socket, poller) fails in [`Server::bind`].
#[derive(Debug)]
pub struct Server {
    listener_fd: RawFd,
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
    local_addr: SocketAddr,
    limits: Limits,
    tls: Option<SharedTls>,
    trusted_proxies: Vec<Cidr>,
}

impl Server {
    /// Validates `config`, loads the TLS files, and listens on `addr` (port
    /// 0 picks a free port; see [`Server::local_addr`]).
    pub fn bind(addr: SocketAddr, config: Config) -> Result<Server, HttpdError> {
        config
            .limits
            .check()
            .map_err(|reason| HttpdError::InvalidLimits { reason })?;
        let listener =
            TcpListener::bind(addr).map_err(|source| HttpdError::Bind { addr, source })?;
        Server::with_listener(listener, addr, config)
    }

    /// Like [`Server::bind`], on a socket that listens already (one handed over by the
    /// process this one replaced: connections waiting in its backlog are served).
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: Config,
    ) -> Result<Server, HttpdError> {
        config
            .limits
            .check()
            .map_err(|reason| HttpdError::InvalidLimits { reason })?;
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let addr = listener.local_addr().unwrap_or(unspecified);
        listener
            .set_nonblocking(true)
            .map_err(|source| HttpdError::Bind { addr, source })?;
        Server::with_listener(TcpListener::from_std(listener), addr, config)
    }

    fn with_listener(
        mut listener: TcpListener,
        addr: SocketAddr,
        config: Config,
    ) -> Result<Server, HttpdError> {
        let tls = config.tls.as_ref().map(load_server_config).transpose()?;
        let tls = tls.map(|c| Arc::new(std::sync::RwLock::new(c)));
        let bind_error = |source| HttpdError::Bind { addr, source };
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let poll = Poll::new().map_err(|source| HttpdError::Poll { source })?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|source| HttpdError::Poll { source })?;
        let waker =
            Waker::new(poll.registry(), WAKER).map_err(|source| HttpdError::Poll { source })?;
        Ok(Server {
            listener_fd: listener.as_raw_fd(),
            poll,
            listener,
            waker: Arc::new(waker),
            local_addr,
            limits: config.limits,
            tls,
            trusted_proxies: config.trusted_proxies,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts the event loop on a thread named `httpd`, serving `handler`.
    pub fn spawn<H: Handler>(self, handler: H) -> Result<ServerHandle, HttpdError> {
        let (tx, responses) = mpsc::sync_channel(
            self.limits
                .connections_max
                .saturating_mul(RESPONSES_QUEUED_PER_CONNECTION),
        );
        let responder = Responder {
            tx,
            waker: self.waker,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(Mutex::new(Stats::default()));
        let reactor = Reactor::new(Parts {
            poll: self.poll,
            listener: self.listener,
            limits: self.limits,
            tls: self.tls.clone(),
            trusted_proxies: self.trusted_proxies,
            handler,
            responder: responder.clone(),
            responses,
            stop: Arc::clone(&stop),
            published: Arc::clone(&published),
        });
        let thread = thread::Builder::new()
            .name("httpd".to_owned())
            .spawn(move || reactor.run())
            .map_err(|source| HttpdError::Spawn { source })?;
        Ok(ServerHandle {
            thread: Some(thread),
            stop,
            responder,
            published,
            local_addr: self.local_addr,
            listener_fd: self.listener_fd,
            tls: self.tls,
        })
    }
}

/// A running server. Dropping it stops the server like
/// [`ServerHandle::shutdown`], discarding the outcome; it MUST NOT be dropped
/// on the server thread itself (from inside a [`Handler`]), where it only
/// signals the stop.
pub struct ServerHandle {
    thread: Option<JoinHandle<Result<(), HttpdError>>>,
    stop: Arc<AtomicBool>,
    responder: Responder,
    published: Arc<Mutex<Stats>>,
    local_addr: SocketAddr,
    /// The listening socket's descriptor, for [`ServerHandle::dup_listener`].
    listener_fd: RawFd,
    tls: Option<SharedTls>,
}

impl ServerHandle {
    /// A second descriptor of the listening socket (close-on-exec, like every descriptor
    /// here): what a process hands to the binary that replaces it. The socket keeps
    /// listening, and connections wait in its backlog, while this server stops and the
    /// next one starts.
    pub fn dup_listener(&self) -> std::io::Result<OwnedFd> {
        // SAFETY: `listener_fd` stays open while this handle lives.
        let fd = unsafe { BorrowedFd::borrow_raw(self.listener_fd) };
        fd.try_clone_to_owned()
    }

    /// Serves new connections with `cert` from now on; connections open already keep the
    /// certificate they were accepted with. `false` (nothing replaced) when the server
    /// serves plain HTTP: TLS cannot be turned on without a restart.
    pub fn replace_tls(&self, cert: TlsCert) -> bool {
        let Some(shared) = &self.tls else {
            return false;
        };
        *shared.write().unwrap_or_else(|p| p.into_inner()) = cert.0;
        true
    }

    /// A handle for answering requests, e.g. from worker threads.
    pub fn responder(&self) -> Responder {
        self.responder.clone()
    }

    /// The counters as of the end of the loop's latest turn.
    pub fn stats(&self) -> Stats {
        *self
            .published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection (queued responses are not
    /// flushed), and waits for the server thread to end.
    pub fn shutdown(mut self) -> Result<(), HttpdError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), HttpdError> {
        self.stop.store(true, Ordering::Release);
        let _ = self.responder.waker.wake();
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        if thread.thread().id() == thread::current().id() {
            return Ok(()); // joining ourselves would never return
        }
        thread.join().unwrap_or(Err(HttpdError::Panicked))
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}
