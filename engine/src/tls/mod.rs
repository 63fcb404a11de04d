//! The one place that knows TLS. The reactor drives it as one more sans-IO layer:
//! ciphertext in from the socket, plaintext out to the session, and back.
//!
//! The handshake runs in rustls through its caller-buffer API (`UnbufferedClientConnection`,
//! rustls 0.23): records are decrypted in place in a buffer we lend, and encrypted into the
//! reactor's scratch buffer. An idle connection therefore holds no I/O buffer at all: the
//! incoming buffer goes back to the reactor's [`RecordPool`] as soon as no partial record
//! is pending, and outgoing bytes are kept only while the socket refuses them.
//!
//! **Compact sessions** (the default, [`TlsClient::new`] with `compact`): once the
//! handshake is finished (the certificate verified, the server's Finished checked, nothing
//! left to send) and no record is half-read, the record keys are taken out of rustls
//! (`dangerous_into_kernel_connection`, the API made for kTLS) and the rustls connection,
//! its `KernelConnection`, the peer's chain and the key schedule are dropped. From then on
//! [`compact::Compact`] (on [`record::RecordLayer`], ring's AEADs) seals and opens records
//! with about 230 bytes of raw key material, kept inline in the session's slot. TLS 1.3
//! traffic secrets, which a KeyUpdate needs, are captured during the handshake through the
//! config's key log ([`secrets::SecretLog`]). A session whose secrets cannot be had (an
//! unknown suite, a full log) stays on rustls; nothing else changes for it.
//!
//! The caller-buffer API is reshaped in the next major version of rustls, hence this small
//! module.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, UnbufferedStatus,
};
use rustls::{ClientConfig, RootCertStore, SupportedCipherSuite};

use crate::reason::TlsFailure;

pub mod compact;
#[cfg(feature = "fuzz-check")]
#[doc(hidden)]
pub mod fuzz_check;
pub mod record;
pub mod secrets;

use compact::{Compact, Received};
use secrets::SecretLog;

/// Size of a lent incoming buffer: the largest TLS record on the wire (16 KiB of payload,
/// 2 KiB of expansion allowed by TLS 1.2, a 5-byte header).
pub const RECORD_BUF_LEN: usize = 16 * 1024 + 2048 + 5;
/// Most free record buffers a pool keeps.
pub const RECORD_POOL_FREE_MAX: usize = 64;
/// Budget of a session's TLS state inside its slot: the compact keys of both directions
/// (two keys, two IVs, two sequence numbers, two TLS 1.3 traffic secrets: 200 bytes), a
/// handshake-message header being read, and the handles of lent or parked buffers (a
/// parked tail is boxed: 8 bytes while absent). During the handshake the same bytes hold a
/// pointer to the boxed rustls connection.
pub const TLS_STATE_BYTES_MAX: usize = 272;

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
    client_config_with_suites(webpki_roots, extra_ca_file, extra_roots_der, &[]).map(Arc::new)
}

/// The same, offering only `suites` (and the protocol versions they belong to); all of
/// ring's suites when empty.
pub fn client_config_with_suites(
    webpki_roots: bool,
    extra_ca_file: Option<&Path>,
    extra_roots_der: &[Vec<u8>],
    suites: &[SupportedCipherSuite],
) -> Result<ClientConfig, TlsSetupError> {
    let roots = root_store(webpki_roots, extra_ca_file, extra_roots_der)?;
    let mut provider = rustls::crypto::ring::default_provider();
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if suites.is_empty() {
        versions.extend(rustls::DEFAULT_VERSIONS);
    } else {
        provider.cipher_suites = suites.to_vec();
        for suite in suites {
            let v = suite.version();
            if !versions.iter().any(|known| known.version == v.version) {
                versions.push(v);
            }
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| TlsSetupError::BadRoot(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn root_store(
    webpki_roots: bool,
    extra_ca_file: Option<&Path>,
    extra_roots_der: &[Vec<u8>],
) -> Result<RootCertStore, TlsSetupError> {
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
    Ok(roots)
}

/// The TLS client of an engine, shared by all its connections: the rustls configuration,
/// and the key log of compact sessions.
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    /// Set for compact sessions: where the TLS 1.3 traffic secrets are captured.
    secrets: Option<Arc<SecretLog>>,
}

impl TlsClient {
    /// `compact`: switch each session to the compact record layer after its handshake.
    /// This enables rustls's secret extraction and installs our key log on `config`.
    pub fn new(mut config: ClientConfig, compact: bool) -> TlsClient {
        let secrets = compact.then(|| Arc::new(SecretLog::default()));
        if let Some(log) = &secrets {
            config.enable_secret_extraction = true;
            config.key_log = log.clone();
        }
        TlsClient {
            config: Arc::new(config),
            secrets,
        }
    }

    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// Sessions switch to the compact record layer after their handshake.
    pub fn is_compact(&self) -> bool {
        self.secrets.is_some()
    }

    /// TLS 1.3 secrets captured and not yet taken (0 between handshakes).
    pub fn secrets_pending(&self) -> usize {
        self.secrets.as_ref().map_or(0, |log| log.pending())
    }
}

/// Incoming record buffers lent per reactor.
#[derive(Debug, Default)]
pub struct RecordPool {
    free: Vec<Box<[u8]>>,
    lent: usize,
    /// Buffers given back to the allocator because the pool was full.
    dropped: u64,
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
        } else {
            self.dropped += 1;
        }
    }

    /// Buffers freed so far because the pool was full (after a burst of handshakes).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Buffers currently lent out.
    pub fn lent(&self) -> usize {
        self.lent
    }
}

/// One client TLS connection.
pub struct Tls {
    state: State,
    /// Ciphertext received and not yet processed (a partial record), in a lent buffer.
    incoming: Option<Box<[u8]>>,
    /// Bytes of `incoming` in use: at most [`RECORD_BUF_LEN`].
    incoming_used: u32,
    /// Ciphertext the socket has not taken yet.
    /// Boxed: rarely there, and every idle session's slot holds the handle (8 bytes
    /// absent, against a `Vec`'s 24).
    #[allow(clippy::box_collection)]
    outgoing: Option<Box<Vec<u8>>>,
    established: bool,
    established_reported: bool,
}

// The TLS state is a fixed part of every session's slot: see TLS_STATE_BYTES_MAX.
const _: () = assert!(std::mem::size_of::<Tls>() <= TLS_STATE_BYTES_MAX);

// Deliberately unboxed: the compact keys are what an idle session keeps, inline in its slot.
#[allow(clippy::large_enum_variant)]
enum State {
    /// rustls runs the handshake (and, for sessions that did not switch, everything).
    Rustls(Box<Handshaking>),
    /// After the handshake: raw keys and our record layer.
    Compact(Compact),
    /// A switch failed half-way: the session ends.
    Gone,
}

struct Handshaking {
    conn: UnbufferedClientConnection,
    /// Set while a switch to the compact layer is wanted.
    secrets: Option<Arc<SecretLog>>,
    /// Our ClientHello's random: the key log's key for this connection.
    client_random: Option<[u8; 32]>,
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

/// What the rustls part of a pump asks of its caller.
enum Pumped {
    Done(TlsRead),
    /// The handshake is over and no input is pending: time to switch.
    Switch,
}

/// The input side of one pump: the lent buffer, how much of it holds ciphertext, what
/// may still be read, and whether the socket said EOF or would block.
struct Input<'a> {
    buf: &'a mut Option<Box<[u8]>>,
    used: &'a mut usize,
    budget: usize,
    eof: bool,
    blocked: bool,
}

impl Input<'_> {
    /// Consumes the first `n` bytes of the buffer.
    fn discard(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(b) = self.buf.as_mut() {
            b.copy_within(n..*self.used, 0);
        }
        *self.used -= n;
    }

    /// More input is needed: reads once, or says why not (`Some`: return that).
    fn read_more<S: Read>(
        &mut self,
        sock: &mut S,
        pool: &mut RecordPool,
    ) -> Result<Option<TlsRead>, TlsError> {
        if self.eof {
            return Ok(Some(TlsRead::Closed));
        }
        if self.blocked {
            return Ok(Some(TlsRead::WouldBlock));
        }
        if self.budget == 0 {
            return Ok(Some(TlsRead::Budget));
        }
        let b = self.buf.get_or_insert_with(|| pool.take());
        if *self.used == b.len() {
            // A full buffer that is not a complete record: not TLS.
            return Err(TlsError::Tls(TlsFailure::Other));
        }
        match sock.read(&mut b[*self.used..]) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                *self.used += n;
                self.budget = self.budget.saturating_sub(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.blocked = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TlsError::Io(e.kind())),
        }
        Ok(None)
    }
}

impl Tls {
    pub fn new(client: &TlsClient, host: &str) -> Result<Tls, TlsFailure> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsFailure::ServerName)?;
        let conn = UnbufferedClientConnection::new(client.config.clone(), name)
            .map_err(|_| TlsFailure::Other)?;
        Ok(Tls {
            state: State::Rustls(Box::new(Handshaking {
                conn,
                secrets: client.secrets.clone(),
                client_random: None,
            })),
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

    /// True once the session runs on the compact record layer (rustls dropped).
    pub fn is_compact(&self) -> bool {
        matches!(self.state, State::Compact(_))
    }

    /// The compact state, once switched (tests, benches).
    pub fn compact(&self) -> Option<&Compact> {
        match &self.state {
            State::Compact(c) => Some(c),
            _ => None,
        }
    }

    /// A compact connection with nothing pending either way: its record layer can be
    /// handed over ([`crate::handover`]).
    pub fn export(&self) -> Option<crate::handover::TlsState> {
        match &self.state {
            State::Compact(c) if !self.holds_buffers() && c.is_between_messages() => {
                Some(crate::handover::TlsState {
                    records: c.records().clone(),
                })
            }
            _ => None,
        }
    }

    /// A compact connection that goes on from a handed-over record layer.
    pub fn adopted(state: crate::handover::TlsState) -> Tls {
        Tls {
            state: State::Compact(Compact::new(state.records)),
            incoming: None,
            incoming_used: 0,
            outgoing: None,
            established: true,
            established_reported: true,
        }
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
        let mut used = self.incoming_used as usize;
        let mut input = Input {
            buf: &mut buf,
            used: &mut used,
            budget: read_budget,
            eof: false,
            blocked: false,
        };
        let result = loop {
            let outgoing = &mut self.outgoing;
            let step = match &mut self.state {
                State::Rustls(hs) => pump_rustls(
                    hs,
                    (sock, pool, scratch, outgoing),
                    &mut input,
                    &mut self.established,
                    &mut sink,
                ),
                State::Compact(c) => {
                    break pump_compact(c, (sock, pool, scratch, outgoing), &mut input, &mut sink)
                }
                State::Gone => break Err(TlsError::Tls(TlsFailure::Other)),
            };
            match step {
                Ok(Pumped::Switch) => self.switch(),
                Ok(Pumped::Done(read)) => break Ok(read),
                Err(e) => break Err(e),
            }
        };
        scratch.clear();
        match buf {
            Some(b) if used == 0 => pool.give(b),
            other => self.incoming = other,
        }
        // The buffer is RECORD_BUF_LEN long, so `used` fits.
        self.incoming_used = used as u32;
        result
    }

    /// Moves to the compact record layer if the secrets can be had; otherwise stays on
    /// rustls for good. Called only with no input pending and nothing left to send.
    fn switch(&mut self) {
        let State::Rustls(mut hs) = std::mem::replace(&mut self.state, State::Gone) else {
            return;
        };
        match switch::prepare(&mut hs) {
            Some(plan) => {
                if let Some(compact) = switch::into_compact(hs, plan) {
                    self.state = State::Compact(compact);
                }
            }
            None => {
                hs.forget_secrets();
                self.state = State::Rustls(hs);
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
        let sealed = match &mut self.state {
            State::Rustls(hs) => {
                let incoming = self
                    .incoming
                    .as_mut()
                    .map(|b| &mut b[..self.incoming_used as usize]);
                hs.encrypt(incoming, scratch, plaintext)
            }
            State::Compact(c) => c.seal(plaintext, scratch).map_err(TlsError::Tls),
            State::Gone => Err(TlsError::Tls(TlsFailure::Other)),
        };
        let result = sealed.and_then(|()| send_or_park(&mut self.outgoing, sock, scratch));
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

impl Drop for Tls {
    fn drop(&mut self) {
        if let State::Rustls(hs) = &mut self.state {
            hs.forget_secrets();
        }
    }
}

impl Handshaking {
    /// Stops wanting a switch, and drops whatever the key log holds for this connection.
    fn forget_secrets(&mut self) {
        if let (Some(log), Some(random)) = (self.secrets.take(), &self.client_random) {
            log.forget(random);
        }
    }

    fn encrypt(
        &mut self,
        incoming: Option<&mut [u8]>,
        scratch: &mut Vec<u8>,
        plaintext: &[u8],
    ) -> Result<(), TlsError> {
        let mut none: [u8; 0] = [];
        let incoming = incoming.unwrap_or(&mut none);
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(incoming);
        // Whatever is pending was processed by the last pump: nothing can be discarded now.
        debug_assert_eq!(discard, 0);
        match state.map_err(|e| TlsError::Tls(failure(&e)))? {
            ConnectionState::WriteTraffic(mut traffic) => {
                grow_and_retry(scratch, |out| match traffic.encrypt(plaintext, out) {
                    Ok(n) => Ok(Ok(n)),
                    Err(EncryptError::InsufficientSize(e)) => Ok(Err(e.required_size)),
                    Err(_) => Err(TlsError::Tls(TlsFailure::Other)),
                })
            }
            // The session only writes after the handshake: anything else is our bug or a
            // peer that renegotiates mid-stream; either way the connection cannot go on.
            _ => Err(TlsError::Tls(TlsFailure::Other)),
        }
    }
}

type Io<'a, S> = (
    &'a mut S,
    &'a mut RecordPool,
    &'a mut Vec<u8>,
    &'a mut Option<Box<Vec<u8>>>,
);

/// Drives rustls until it needs input that is not there, or the switch is due.
fn pump_rustls<S: Read + Write>(
    hs: &mut Handshaking,
    (sock, pool, scratch, outgoing): Io<'_, S>,
    input: &mut Input<'_>,
    established: &mut bool,
    sink: &mut impl FnMut(&[u8]) -> bool,
) -> Result<Pumped, TlsError> {
    loop {
        let incoming: &mut [u8] = match input.buf.as_mut() {
            Some(b) => &mut b[..*input.used],
            None => &mut [],
        };
        let UnbufferedStatus { mut discard, state } = hs.conn.process_tls_records(incoming);
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
                let start = scratch.len();
                grow_and_retry(scratch, |out| match encode.encode(out) {
                    Ok(n) => Ok(Ok(n)),
                    Err(EncodeError::InsufficientSize(e)) => Ok(Err(e.required_size)),
                    Err(_) => Err(TlsError::Tls(TlsFailure::Other)),
                })?;
                if hs.client_random.is_none() {
                    hs.client_random = switch::client_hello_random(&scratch[start..]);
                }
            }
            ConnectionState::TransmitTlsData(transmit) => {
                send_or_park(outgoing, sock, scratch)?;
                transmit.done();
            }
            ConnectionState::WriteTraffic(_) => {
                *established = true;
                wants_input = true;
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Ok(Pumped::Done(TlsRead::Closed));
            }
            // BlockedHandshake, and early data (never enabled): more input needed.
            _ => wants_input = true,
        }
        input.discard(discard);
        if stop {
            return Ok(Pumped::Done(TlsRead::WouldBlock));
        }
        if !wants_input {
            continue;
        }
        // The switch waits for an empty buffer: rustls may hold a handshake message split
        // over records in it, which only rustls can finish.
        if *established && hs.secrets.is_some() && *input.used == 0 {
            return Ok(Pumped::Switch);
        }
        if let Some(read) = input.read_more(sock, pool)? {
            return Ok(Pumped::Done(read));
        }
    }
}

/// Opens every complete record, then reads, until the socket would block.
fn pump_compact<S: Read + Write>(
    compact: &mut Compact,
    (sock, pool, scratch, outgoing): Io<'_, S>,
    input: &mut Input<'_>,
    sink: &mut impl FnMut(&[u8]) -> bool,
) -> Result<TlsRead, TlsError> {
    loop {
        while let Some(b) = input.buf.as_mut() {
            let Some(n) = compact
                .record_len(&b[..*input.used])
                .map_err(TlsError::Tls)?
            else {
                break;
            };
            let received = compact
                .handle_record(&mut b[..n], scratch)
                .map_err(TlsError::Tls)?;
            if !scratch.is_empty() {
                // Our KeyUpdate: it goes out before anything sealed under the new keys.
                send_or_park(outgoing, sock, scratch)?;
            }
            let stop = match received {
                Received::Data { start, end } => !sink(&b[start..end]),
                Received::Nothing => false,
                Received::CloseNotify => {
                    input.discard(n);
                    return Ok(TlsRead::Closed);
                }
            };
            input.discard(n);
            if stop {
                return Ok(TlsRead::WouldBlock);
            }
        }
        if let Some(read) = input.read_more(sock, pool)? {
            return Ok(read);
        }
    }
}

/// Taking the keys out of rustls.
mod switch {
    use super::*;
    use crate::tls::record::{DirectionKeys, RecordLayer, Suite, Version};
    use rustls::{CipherSuite, ConnectionTrafficSecrets, ProtocolVersion};

    /// What the switch will build, decided before rustls is consumed.
    pub(super) struct Plan {
        version: Version,
        suite: Suite,
        secrets: Option<secrets::TrafficSecrets>,
    }

    /// Checks that the suite is one of ours and, for TLS 1.3, takes the traffic secrets.
    pub(super) fn prepare(hs: &mut Handshaking) -> Option<Plan> {
        let version = match hs.conn.protocol_version()? {
            ProtocolVersion::TLSv1_3 => Version::Tls13,
            ProtocolVersion::TLSv1_2 => Version::Tls12,
            _ => return None,
        };
        let suite = match hs.conn.negotiated_cipher_suite()?.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Suite::Aes128Gcm,
            CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Suite::Aes256Gcm,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Suite::Chacha20Poly1305,
            _ => return None,
        };
        let log = hs.secrets.as_ref()?;
        let random = hs.client_random.as_ref()?;
        // Taken in both versions, so that nothing of this connection stays in the log.
        let taken = log.take(random);
        let secrets = match version {
            Version::Tls13 => Some(taken?),
            Version::Tls12 => None,
        };
        Some(Plan {
            version,
            suite,
            secrets,
        })
    }

    /// Consumes rustls: keeps the raw keys, drops the connection, its `KernelConnection`,
    /// the peer's chain and the key schedule. `None` if rustls refused (the session ends).
    pub(super) fn into_compact(hs: Box<Handshaking>, plan: Plan) -> Option<Compact> {
        let Handshaking { conn, .. } = *hs;
        let (extracted, kernel) = conn.dangerous_into_kernel_connection().ok()?;
        drop(kernel);
        let (tx_secret, rx_secret) = match &plan.secrets {
            Some(s) => (s.client.as_bytes(), s.server.as_bytes()),
            None => (&[][..], &[][..]),
        };
        let tx = keys(plan.suite, extracted.tx, tx_secret)?;
        let rx = keys(plan.suite, extracted.rx, rx_secret)?;
        Some(Compact::new(RecordLayer::new(
            plan.version,
            plan.suite,
            tx,
            rx,
        )))
    }

    /// One direction's raw keys, if rustls's AEAD is the suite's.
    fn keys(
        suite: Suite,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
        secret: &[u8],
    ) -> Option<DirectionKeys> {
        // `secrets` (rustls's AeadKey) wipes itself when dropped at the end of this call.
        let (key, iv) = match (&secrets, suite) {
            (ConnectionTrafficSecrets::Aes128Gcm { key, iv }, Suite::Aes128Gcm)
            | (ConnectionTrafficSecrets::Aes256Gcm { key, iv }, Suite::Aes256Gcm)
            | (ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }, Suite::Chacha20Poly1305) => {
                (key, iv)
            }
            _ => return None,
        };
        let keys = DirectionKeys::new(suite, key.as_ref(), iv.as_ref(), seq, secret)?;
        // A secret of another generation (a KeyUpdate rustls handled before the switch)
        // would derive wrong keys at the next KeyUpdate: refuse it now.
        (secret.is_empty() || keys.derives_from(suite, secret)).then_some(keys)
    }

    /// The random of the ClientHello record at the start of `bytes` (RFC 8446 4.1.2:
    /// record header, handshake header, legacy_version, then 32 random bytes).
    pub(super) fn client_hello_random(bytes: &[u8]) -> Option<[u8; 32]> {
        const HANDSHAKE: u8 = 22;
        const CLIENT_HELLO: u8 = 1;
        match bytes {
            [HANDSHAKE, _, _, _, _, CLIENT_HELLO, _, _, _, _, _, rest @ ..] => {
                rest.get(..32)?.try_into().ok()
            }
            _ => None,
        }
    }
}

/// Writes `scratch` to the socket, parking in `outgoing` what it does not take, behind
/// anything already parked (order matters).
#[allow(clippy::box_collection)] // see `Tls::outgoing`
fn send_or_park<S: Write>(
    outgoing: &mut Option<Box<Vec<u8>>>,
    sock: &mut S,
    scratch: &mut Vec<u8>,
) -> Result<(), TlsError> {
    if let Some(parked) = outgoing.as_mut() {
        parked.extend_from_slice(scratch);
    } else {
        let n = write_some(sock, scratch).map_err(|e| TlsError::Io(e.kind()))?;
        if n < scratch.len() {
            *outgoing = Some(Box::new(scratch[n..].to_vec()));
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
