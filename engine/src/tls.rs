//! The one place that knows rustls. The reactor drives it as one more sans-IO layer:
//! ciphertext in from the socket, plaintext out to the session, and back.
//!
//! rustls is driven through its caller-buffer API (`UnbufferedClientConnection`, rustls
//! 0.23): records are decrypted in place in a buffer we lend, and encrypted into the
//! reactor's scratch buffer. An idle connection therefore holds no I/O buffer at all: the
//! incoming buffer goes back to the reactor's [`RecordPool`] as soon as no partial record
//! is pending, and outgoing bytes are kept only while the socket refuses them. (The
//! buffered `ClientConnection` keeps a 4 KiB read buffer for the life of the connection.)
//! This API is reshaped in the next major version of rustls, hence this small module.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, UnbufferedStatus,
};
use rustls::{ClientConfig, RootCertStore};

use crate::reason::TlsFailure;

/// Size of a lent incoming buffer: the largest TLS record on the wire (16 KiB of payload,
/// 2 KiB of expansion allowed by TLS 1.2, a 5-byte header).
pub const RECORD_BUF_LEN: usize = 16 * 1024 + 2048 + 5;
/// Most free record buffers a pool keeps.
pub const RECORD_POOL_FREE_MAX: usize = 64;

/// Why the TLS client configuration could not be built.
#[derive(Debug)]
pub enum TlsSetupError {
    /// The extra CA file could not be read or holds no certificate.
    CaFile { path: String, detail: String },
    /// A root certificate was rejected.
    BadRoot(String),
}

impl std::fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSetupError::CaFile { path, detail } => write!(f, "CA file {path}: {detail}"),
            TlsSetupError::BadRoot(e) => write!(f, "root certificate rejected: {e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// A client configuration trusting the Mozilla roots (webpki-roots) when `webpki_roots`,
/// plus the certificates in `extra_ca_file` (PEM) and `extra_roots_der`.
pub fn client_config(
    webpki_roots: bool,
    extra_ca_file: Option<&Path>,
    extra_roots_der: &[Vec<u8>],
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    if webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = extra_ca_file {
        let ca_error = |detail: String| TlsSetupError::CaFile {
            path: path.display().to_string(),
            detail,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no certificate found".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| TlsSetupError::BadRoot(e.to_string()))?;
        }
    }
    for der in extra_roots_der {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| TlsSetupError::BadRoot(e.to_string()))?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::BadRoot(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Incoming record buffers lent per reactor.
#[derive(Debug, Default)]
pub struct RecordPool {
    free: Vec<Box<[u8]>>,
    lent: usize,
}

impl RecordPool {
    pub fn take(&mut self) -> Box<[u8]> {
        self.lent += 1;
        self.free
            .pop()
            .unwrap_or_else(|| vec![0; RECORD_BUF_LEN].into_boxed_slice())
    }

    pub fn give(&mut self, buf: Box<[u8]>) {
        self.lent = self.lent.saturating_sub(1);
        if self.free.len() < RECORD_POOL_FREE_MAX {
            self.free.push(buf);
        }
    }

    /// Buffers currently lent out.
    pub fn lent(&self) -> usize {
        self.lent
    }
}

/// One client TLS connection.
pub struct Tls {
    conn: UnbufferedClientConnection,
    /// Ciphertext received and not yet processed (a partial record), in a lent buffer.
    incoming: Option<Box<[u8]>>,
    incoming_used: usize,
    /// Ciphertext the socket has not taken yet.
    outgoing: Option<Vec<u8>>,
    established: bool,
    established_reported: bool,
}

/// How a [`Tls::pump`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRead {
    /// All available input was processed; the socket would block now.
    WouldBlock,
    /// The peer closed (TCP EOF or close_notify).
    Closed,
    /// `read_budget` bytes were read; more may be waiting in the socket.
    Budget,
}

/// A failed TLS read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsError {
    Io(io::ErrorKind),
    Tls(TlsFailure),
}

impl Tls {
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<Tls, TlsFailure> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsFailure::ServerName)?;
        let conn = UnbufferedClientConnection::new(config, name).map_err(|_| TlsFailure::Other)?;
        Ok(Tls {
            conn,
            incoming: None,
            incoming_used: 0,
            outgoing: None,
            established: false,
            established_reported: false,
        })
    }

    /// True once, the first time this is called after the handshake completed.
    pub fn take_established(&mut self) -> bool {
        if !self.established || self.established_reported {
            return false;
        }
        self.established_reported = true;
        true
    }

    /// The connection holds a lent or parked buffer (false for an idle connection).
    pub fn holds_buffers(&self) -> bool {
        self.incoming.is_some() || self.outgoing.is_some()
    }

    /// Gives any lent buffer back (call before dropping the connection).
    pub fn release(&mut self, pool: &mut RecordPool) {
        if let Some(buf) = self.incoming.take() {
            pool.give(buf);
        }
        self.incoming_used = 0;
    }

    /// Runs the connection until the socket would block: reads ciphertext, answers the
    /// handshake, and hands every plaintext chunk to `sink`, which returns false to stop.
    /// `scratch` is the reactor's encoding buffer; it is left empty.
    pub fn pump<S: Read + Write>(
        &mut self,
        sock: &mut S,
        pool: &mut RecordPool,
        scratch: &mut Vec<u8>,
        read_budget: usize,
        mut sink: impl FnMut(&[u8]) -> bool,
    ) -> Result<TlsRead, TlsError> {
        self.flush(sock)?;
        let mut buf = self.incoming.take();
        let mut used = self.incoming_used;
        let mut budget = read_budget;
        let result = self.pump_with(
            sock,
            pool,
            scratch,
            (&mut buf, &mut used),
            &mut budget,
            &mut sink,
        );
        scratch.clear();
        match buf {
            Some(b) if used == 0 => pool.give(b),
            other => self.incoming = other,
        }
        self.incoming_used = used;
        result
    }

    fn pump_with<S: Read + Write>(
        &mut self,
        sock: &mut S,
        pool: &mut RecordPool,
        scratch: &mut Vec<u8>,
        (buf, used): (&mut Option<Box<[u8]>>, &mut usize),
        budget: &mut usize,
        sink: &mut impl FnMut(&[u8]) -> bool,
    ) -> Result<TlsRead, TlsError> {
        let mut eof = false;
        let mut blocked = false;
        loop {
            let incoming: &mut [u8] = match buf.as_mut() {
                Some(b) => &mut b[..*used],
                None => &mut [],
            };
            let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(incoming);
            let state = state.map_err(|e| TlsError::Tls(failure(&e)))?;
            let mut wants_input = false;
            let mut stop = false;
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let AppDataRecord {
                            discard: more,
                            payload,
                            ..
                        } = record.map_err(|e| TlsError::Tls(failure(&e)))?;
                        discard += more;
                        if !sink(payload) {
                            stop = true;
                            break;
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    grow_and_retry(scratch, |out| match encode.encode(out) {
                        Ok(n) => Ok(Ok(n)),
                        Err(EncodeError::InsufficientSize(e)) => Ok(Err(e.required_size)),
                        Err(_) => Err(TlsError::Tls(TlsFailure::Other)),
                    })?;
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    send_or_park(&mut self.outgoing, sock, scratch)?;
                    transmit.done();
                }
                ConnectionState::WriteTraffic(_) => {
                    self.established = true;
                    wants_input = true;
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    return Ok(TlsRead::Closed);
                }
                // BlockedHandshake, and early data (never enabled): more input needed.
                _ => wants_input = true,
            }
            if discard > 0 {
                if let Some(b) = buf.as_mut() {
                    b.copy_within(discard..*used, 0);
                }
                *used -= discard;
            }
            if stop {
                return Ok(TlsRead::WouldBlock);
            }
            if !wants_input {
                continue;
            }
            if eof {
                return Ok(TlsRead::Closed);
            }
            if blocked {
                return Ok(TlsRead::WouldBlock);
            }
            if *budget == 0 {
                return Ok(TlsRead::Budget);
            }
            let b = buf.get_or_insert_with(|| pool.take());
            if *used == b.len() {
                // A full buffer that is not a complete record: not TLS.
                return Err(TlsError::Tls(TlsFailure::Other));
            }
            match sock.read(&mut b[*used..]) {
                Ok(0) => eof = true,
                Ok(n) => {
                    *used += n;
                    *budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TlsError::Io(e.kind())),
            }
        }
    }

    /// Encrypts `plaintext` and writes it, parking what the socket does not take.
    /// `scratch` is the reactor's encoding buffer; it is left empty.
    pub fn send<S: Write>(
        &mut self,
        sock: &mut S,
        scratch: &mut Vec<u8>,
        plaintext: &[u8],
    ) -> Result<(), TlsError> {
        let mut none: [u8; 0] = [];
        let incoming: &mut [u8] = match self.incoming.as_mut() {
            Some(b) => &mut b[..self.incoming_used],
            None => &mut none,
        };
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(incoming);
        // Whatever is pending was processed by the last pump: nothing can be discarded now.
        debug_assert_eq!(discard, 0);
        let result = match state.map_err(|e| TlsError::Tls(failure(&e)))? {
            ConnectionState::WriteTraffic(mut traffic) => {
                grow_and_retry(scratch, |out| match traffic.encrypt(plaintext, out) {
                    Ok(n) => Ok(Ok(n)),
                    Err(EncryptError::InsufficientSize(e)) => Ok(Err(e.required_size)),
                    Err(_) => Err(TlsError::Tls(TlsFailure::Other)),
                })
                .and_then(|()| send_or_park(&mut self.outgoing, sock, scratch))
            }
            // The session only writes after the handshake: anything else is our bug or a
            // peer that renegotiates mid-stream; either way the connection cannot go on.
            _ => Err(TlsError::Tls(TlsFailure::Other)),
        };
        // The plaintext may be a login: the ciphertext is all that may remain.
        scratch.clear();
        result
    }

    /// Writes parked ciphertext until done or the socket would block.
    pub fn flush<S: Write>(&mut self, sock: &mut S) -> Result<(), TlsError> {
        let Some(mut parked) = self.outgoing.take() else {
            return Ok(());
        };
        let n = write_some(sock, &parked).map_err(|e| TlsError::Io(e.kind()))?;
        parked.drain(..n);
        if !parked.is_empty() {
            self.outgoing = Some(parked);
        }
        Ok(())
    }
}

/// Writes `scratch` to the socket, parking in `outgoing` what it does not take, behind
/// anything already parked (order matters).
fn send_or_park<S: Write>(
    outgoing: &mut Option<Vec<u8>>,
    sock: &mut S,
    scratch: &mut Vec<u8>,
) -> Result<(), TlsError> {
    if let Some(parked) = outgoing.as_mut() {
        parked.extend_from_slice(scratch);
    } else {
        let n = write_some(sock, scratch).map_err(|e| TlsError::Io(e.kind()))?;
        if n < scratch.len() {
            *outgoing = Some(scratch[n..].to_vec());
        }
    }
    scratch.clear();
    Ok(())
}

/// Runs `f` on the free tail of `buf`, growing it to the size `f` asks for once.
fn grow_and_retry(
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<Result<usize, usize>, TlsError>,
) -> Result<(), TlsError> {
    let start = buf.len();
    buf.resize(buf.capacity().max(start + 1024), 0);
    let n = match f(&mut buf[start..])? {
        Ok(n) => n,
        Err(required) => {
            buf.resize(start + required, 0);
            match f(&mut buf[start..])? {
                Ok(n) => n,
                Err(_) => return Err(TlsError::Tls(TlsFailure::Other)),
            }
        }
    };
    buf.truncate(start + n);
    Ok(())
}

/// Writes as much as the socket takes now; returns how much that was.
pub(crate) fn write_some<S: Write>(sock: &mut S, mut bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while !bytes.is_empty() {
        match sock.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                bytes = &bytes[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

fn failure(e: &rustls::Error) -> TlsFailure {
    match e {
        rustls::Error::InvalidCertificate(_) => TlsFailure::Certificate,
        rustls::Error::AlertReceived(_) => TlsFailure::Alert,
        _ => TlsFailure::Other,
    }
}
