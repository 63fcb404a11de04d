//! TLS as one more layer between the socket and a [`Connection`].
//!
//! rustls is driven through its caller-buffer API (`UnbufferedServerConnection`,
//! rustls 0.23) on the reactor's thread, as the engine does for IMAP; this
//! file is the only one that knows it. The HTTP state machine sees plaintext
//! only, exactly as on a plain connection.
//!
//! # What is wiped
//!
//! Request records carry passwords and bearer tokens. rustls decrypts each
//! record in place in the incoming buffer lent here, so that buffer holds
//! plaintext: every byte leaving it (consumed records moved out, the buffer
//! released when no partial record is pending, the layer dropped) is
//! zeroized. Plaintext waiting for the connection to want it is kept in a
//! buffer wiped the same way. rustls 0.23 then copies each record's
//! plaintext into a `Vec` of its own that it frees without wiping
//! (`ReadTraffic::next_record`); this layer cannot reach that copy. The
//! server binary closes that gap by wiping every heap block when it is freed
//! ([`alloc::Wiping`](crate::alloc::Wiping)). The buffered
//! `ServerConnection` used before kept decrypted records in a buffer of its
//! own for the connection's life, out of anyone's reach.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, UnbufferedStatus,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroize;

use crate::connection::Connection;
use crate::error::HttpdError;
use crate::stats::Stats;

/// Size of the incoming buffer: the largest TLS record on the wire (16 KiB
/// of payload, 2 KiB of expansion allowed by TLS 1.2, a 5-byte header).
const RECORD_BUF_LEN: usize = 16 * 1024 + 2048 + 5;
/// Plaintext encrypted per call: one full record.
const PLAINTEXT_CHUNK_MAX: usize = 16 * 1024;

/// Where to find the server's certificate chain and private key, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// One or more `CERTIFICATE` sections, leaf first.
    pub cert_file: PathBuf,
    /// The first private key section (PKCS#8, PKCS#1 or SEC1) is used.
    pub key_file: PathBuf,
}

/// The certificate and key new connections are served with, shared between the server
/// thread (which reads it at each accept) and [`crate::ServerHandle::replace_tls`].
pub(crate) type SharedTls = Arc<std::sync::RwLock<Arc<ServerConfig>>>;

/// A loaded certificate and key, ready to replace the served one (see
/// [`crate::ServerHandle::replace_tls`]): loading can fail, replacing cannot.
#[derive(Clone)]
pub struct TlsCert(pub(crate) Arc<ServerConfig>);

impl TlsCert {
    /// Reads and checks `files` as [`crate::Server::bind`] does.
    pub fn load(files: &TlsFiles) -> Result<TlsCert, HttpdError> {
        load_server_config(files).map(TlsCert)
    }
}

impl std::fmt::Debug for TlsCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsCert(<key redacted>)")
    }
}

/// The configuration in force; a poisoned lock still holds a whole `Arc`.
pub(crate) fn current(shared: &SharedTls) -> Arc<ServerConfig> {
    Arc::clone(&shared.read().unwrap_or_else(|p| p.into_inner()))
}

/// Builds the rustls configuration (ring provider, safe default protocol
/// versions, no client authentication, ALPN `http/1.1`).
pub(crate) fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, HttpdError> {
    let cert_error = |source| HttpdError::TlsCertificates {
        path: files.cert_file.clone(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(cert_error)?;
    if certs.is_empty() {
        return Err(cert_error(rustls_pki_types::pem::Error::NoItemsFound));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|source| {
        HttpdError::TlsPrivateKey {
            path: files.key_file.clone(),
            source,
        }
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| HttpdError::TlsConfig { source })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| HttpdError::TlsConfig { source })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One connection's TLS state.
pub(crate) struct TlsLayer {
    session: UnbufferedServerConnection,
    /// Received TLS bytes not yet processed (a partial record), at the front
    /// of a buffer of [`RECORD_BUF_LEN`] bytes that exists only while some
    /// are pending. Zero beyond `used`.
    incoming: Vec<u8>,
    used: usize,
    /// Decrypted plaintext the connection did not want yet, from `start`.
    /// Zero before `start`.
    plain: Vec<u8>,
    plain_start: usize,
    /// Ciphertext the socket has not taken yet.
    outgoing: Vec<u8>,
    /// The peer sent close_notify or closed TCP; reported to the connection.
    eof_reported: bool,
    close_notify_sent: bool,
}

/// What one round of record processing did.
enum Step {
    /// Something changed (records read, handshake bytes queued or sent).
    Progress,
    /// Nothing more without input from the peer.
    NeedInput,
    /// The peer closed the TLS session.
    Closed,
    Failed,
}

impl TlsLayer {
    pub(crate) fn new(config: &Arc<ServerConfig>) -> Result<TlsLayer, rustls::Error> {
        Ok(TlsLayer {
            session: UnbufferedServerConnection::new(Arc::clone(config))?,
            incoming: Vec::new(),
            used: 0,
            plain: Vec::new(),
            plain_start: 0,
            outgoing: Vec::new(),
            eof_reported: false,
            close_notify_sent: false,
        })
    }

    /// Moves bytes socket → rustls → `conn` while `conn` wants them. Returns
    /// whether anything changed. Reads until the socket would block, unless
    /// `conn` stops wanting input first (then the caller tries again after
    /// the next change, as edge-triggered readiness requires).
    pub(crate) fn pump_read(
        &mut self,
        socket: &mut TcpStream,
        conn: &mut Connection,
        now: Instant,
        stats: &mut Stats,
    ) -> bool {
        let mut progress = false;
        loop {
            progress |= self.hand_over(conn, now);
            if self.plain_pending() || self.eof_reported {
                return progress;
            }
            match self.process(socket) {
                Step::Progress => {
                    progress = true;
                    continue;
                }
                Step::NeedInput => {}
                Step::Closed => return self.report_eof(conn),
                Step::Failed => {
                    stats.tls_failures += 1;
                    conn.handle_transport_error();
                    return true;
                }
            }
            if conn.read_space().is_empty() {
                return progress;
            }
            match self.read_socket(socket) {
                Ok(true) => progress = true,
                Ok(false) => return progress,
                // TCP EOF without close_notify. HTTP frames its own messages,
                // so this is an ordinary close (RFC 8446, section 6.1 leaves
                // that to the application).
                Err(None) => return self.report_eof(conn),
                Err(Some(_)) => {
                    conn.handle_transport_error();
                    return true;
                }
            }
        }
    }

    fn plain_pending(&self) -> bool {
        self.plain_start < self.plain.len()
    }

    fn report_eof(&mut self, conn: &mut Connection) -> bool {
        if self.eof_reported {
            return false;
        }
        self.eof_reported = true;
        conn.handle_eof();
        true
    }

    /// Gives `conn` as much pending plaintext as it wants, wiping what it
    /// took.
    fn hand_over(&mut self, conn: &mut Connection, now: Instant) -> bool {
        let mut progress = false;
        while self.plain_pending() {
            let space = conn.read_space();
            if space.is_empty() {
                break;
            }
            let pending = &mut self.plain[self.plain_start..];
            let n = space.len().min(pending.len());
            space[..n].copy_from_slice(&pending[..n]);
            pending[..n].zeroize();
            self.plain_start += n;
            conn.handle_read(n, now);
            progress = true;
        }
        if !self.plain_pending() {
            // Zero by the invariant: a plain drop leaves nothing.
            self.plain = Vec::new();
            self.plain_start = 0;
        }
        progress
    }

    /// Lets rustls process what is buffered until it needs input: decrypted
    /// records go to `plain`, handshake bytes to the socket.
    fn process(&mut self, socket: &mut TcpStream) -> Step {
        let TlsLayer {
            session,
            incoming,
            used,
            plain,
            outgoing,
            ..
        } = self;
        let UnbufferedStatus { mut discard, state } =
            session.process_tls_records(&mut incoming[..*used]);
        let step = match state {
            Err(_) => Step::Failed,
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut failed = false;
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(AppDataRecord {
                            discard: more,
                            payload,
                            ..
                        }) => {
                            discard += more;
                            plain.extend_from_slice(payload);
                        }
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    Step::Failed
                } else {
                    Step::Progress
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                match encode_into(outgoing, |out| match encode.encode(out) {
                    Ok(n) => Ok(Ok(n)),
                    Err(EncodeError::InsufficientSize(e)) => Ok(Err(e.required_size)),
                    Err(_) => Err(()),
                }) {
                    Ok(()) => Step::Progress,
                    Err(()) => Step::Failed,
                }
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                let sent = flush(socket, outgoing);
                transmit.done();
                match sent {
                    Ok(()) => Step::Progress,
                    Err(_) => Step::Failed,
                }
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Step::Closed,
            // WriteTraffic (handshake done, nothing to read), BlockedHandshake,
            // early data (never enabled): more input needed.
            Ok(_) => Step::NeedInput,
        };
        self.discard(discard);
        step
    }

    /// Drops the first `n` processed bytes of `incoming`, which may be
    /// decrypted plaintext, wiping every place they were.
    fn discard(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let used = self.used;
        self.incoming.copy_within(n..used, 0);
        self.incoming[used - n..used].zeroize();
        self.used -= n;
        if self.used == 0 {
            // Zero by the invariant: release it while no record is pending.
            self.incoming = Vec::new();
        }
    }

    /// Reads TLS bytes into `incoming`. `Ok(true)`: some arrived; `Ok(false)`:
    /// the socket would block; `Err(None)`: EOF; `Err(Some(_))`: failure.
    fn read_socket(&mut self, socket: &mut TcpStream) -> Result<bool, Option<io::Error>> {
        if self.incoming.is_empty() {
            self.incoming = vec![0; RECORD_BUF_LEN];
        }
        if self.used == self.incoming.len() {
            // A full buffer that is not a complete record: not TLS.
            return Err(Some(io::ErrorKind::InvalidData.into()));
        }
        loop {
            match socket.read(&mut self.incoming[self.used..]) {
                Ok(0) => return Err(None),
                Ok(n) => {
                    self.used += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Some(e)),
            }
        }
    }

    /// Moves bytes `conn` → rustls → socket, then sends close_notify and
    /// half-closes when `conn` asks. Returns whether anything changed.
    pub(crate) fn pump_write(&mut self, socket: &mut TcpStream, conn: &mut Connection) -> bool {
        let mut progress = false;
        loop {
            if !self.outgoing.is_empty() {
                let before = self.outgoing.len();
                if flush(socket, &mut self.outgoing).is_err() {
                    conn.handle_transport_error();
                    return true;
                }
                progress |= self.outgoing.len() < before;
                if !self.outgoing.is_empty() {
                    return progress; // the socket is full: wait for writable
                }
            }
            let out = conn.poll_transmit();
            if !out.is_empty() {
                let n = out.len().min(PLAINTEXT_CHUNK_MAX);
                match self.encrypt(Some(&out[..n])) {
                    Some(true) => {
                        conn.handle_sent(n);
                        progress = true;
                        continue;
                    }
                    Some(false) => return progress, // handshake not done yet
                    None => {
                        conn.handle_transport_error();
                        return true;
                    }
                }
            }
            if !conn.poll_shutdown() {
                return progress;
            }
            if !self.close_notify_sent {
                self.close_notify_sent = true;
                // Best effort: before the handshake completes there is no
                // session to close, only the socket.
                if self.encrypt(None) == Some(true) {
                    progress = true;
                    continue;
                }
            }
            let _ = socket.shutdown(Shutdown::Write);
            conn.handle_shutdown();
            return true;
        }
    }

    /// Encrypts `plaintext` (or, for `None`, a close_notify alert) into
    /// `outgoing`. `Some(false)`: not possible in the current state (the
    /// handshake is still going on); `None`: failure.
    fn encrypt(&mut self, plaintext: Option<&[u8]>) -> Option<bool> {
        let TlsLayer {
            session,
            incoming,
            used,
            outgoing,
            ..
        } = self;
        let UnbufferedStatus { discard, state } =
            session.process_tls_records(&mut incoming[..*used]);
        // Everything complete was processed by the last pump_read.
        debug_assert_eq!(discard, 0);
        let ConnectionState::WriteTraffic(mut traffic) = state.ok()? else {
            return Some(false);
        };
        let written = encode_into(outgoing, |out| {
            let result = match plaintext {
                Some(bytes) => traffic.encrypt(bytes, out),
                None => traffic.queue_close_notify(out),
            };
            match result {
                Ok(n) => Ok(Ok(n)),
                Err(EncryptError::InsufficientSize(e)) => Ok(Err(e.required_size)),
                Err(_) => Err(()),
            }
        });
        written.ok().map(|()| true)
    }
}

impl Drop for TlsLayer {
    /// The incoming buffer may hold a decrypted partial request, `plain` its
    /// plaintext.
    fn drop(&mut self) {
        self.incoming.zeroize();
        self.plain.zeroize();
    }
}

/// Appends what `f` writes to `buf`, growing it to the size `f` asks for
/// once.
fn encode_into(
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<Result<usize, usize>, ()>,
) -> Result<(), ()> {
    let start = buf.len();
    buf.resize(start + 1024, 0);
    let n = match f(&mut buf[start..])? {
        Ok(n) => n,
        Err(required) => {
            buf.resize(start + required, 0);
            f(&mut buf[start..])?.map_err(|_| ())?
        }
    };
    buf.truncate(start + n);
    Ok(())
}

/// Writes `out` to the socket until it is empty or the socket would block,
/// removing what was written.
fn flush(socket: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    let mut written = 0;
    while written < out.len() {
        match socket.write(&out[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.drain(..written);
    Ok(())
}
