//! The one place that knows rustls. The reactor drives it as one more sans-IO layer:
//! ciphertext in from the socket, plaintext out to the session, and back.
//!
//! TLS is kept behind this small module because the caller-buffer API differs between
//! rustls 0.23 and its next major version.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::reason::TlsFailure;

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

/// One client TLS connection.
pub struct Tls {
    conn: ClientConnection,
    established: bool,
}

/// What one read from the socket produced.
pub enum TlsRead {
    /// Plaintext bytes were handed to the sink (maybe none); the socket would block now.
    WouldBlock,
    /// The peer closed (TCP EOF or close_notify).
    Closed,
}

impl Tls {
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<Tls, TlsFailure> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsFailure::ServerName)?;
        let conn = ClientConnection::new(config, name).map_err(|_| TlsFailure::Other)?;
        Ok(Tls {
            conn,
            established: false,
        })
    }

    /// True once, the first time this is called after the handshake completed.
    pub fn take_established(&mut self) -> bool {
        if self.established || self.conn.is_handshaking() {
            return false;
        }
        self.established = true;
        true
    }

    /// Reads ciphertext until the socket would block, handing every plaintext chunk to
    /// `sink` (via `scratch`). Stops early when `sink` returns false.
    pub fn read<S: Read + Write>(
        &mut self,
        sock: &mut S,
        scratch: &mut [u8],
        mut sink: impl FnMut(&[u8]) -> bool,
    ) -> Result<TlsRead, TlsError> {
        loop {
            let eof = match self.conn.read_tls(sock) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(TlsRead::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TlsError::Io(e.kind())),
            };
            let state = self.conn.process_new_packets().map_err(|e| {
                // Let the peer know why, if the socket takes it.
                let _ = self.conn.write_tls(sock);
                TlsError::Tls(failure(&e))
            })?;
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 {
                let n = match self.conn.reader().read(scratch) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(TlsError::Io(e.kind())),
                };
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n);
                let keep_going = sink(&scratch[..n]);
                scratch[..n].fill(0);
                if !keep_going {
                    return Ok(TlsRead::WouldBlock);
                }
            }
            if state.peer_has_closed() || eof {
                return Ok(TlsRead::Closed);
            }
            // Handshake messages may need an answer before more arrives.
            self.flush(sock)?;
        }
    }

    /// Encrypts `plaintext` for sending. Call [`Tls::flush`] afterwards.
    pub fn write(&mut self, plaintext: &[u8]) -> Result<(), TlsError> {
        self.conn
            .writer()
            .write_all(plaintext)
            .map_err(|e| TlsError::Io(e.kind()))
    }

    /// Writes buffered ciphertext until done or the socket would block.
    pub fn flush<S: Write>(&mut self, sock: &mut S) -> Result<(), TlsError> {
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TlsError::Io(e.kind())),
            }
        }
        Ok(())
    }
}

/// A failed TLS read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsError {
    Io(io::ErrorKind),
    Tls(TlsFailure),
}

fn failure(e: &rustls::Error) -> TlsFailure {
    match e {
        rustls::Error::InvalidCertificate(_) => TlsFailure::Certificate,
        rustls::Error::AlertReceived(_) => TlsFailure::Alert,
        _ => TlsFailure::Other,
    }
}
