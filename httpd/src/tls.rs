//! TLS as one more layer between the socket and a [`Connection`].
//!
//! rustls is driven through its buffered sans-IO API (`read_tls`,
//! `process_new_packets`, `reader`, `writer`, `write_tls`) on the reactor's
//! thread; this file is the only one that knows it. The HTTP state machine
//! sees plaintext only, exactly as on a plain connection.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::connection::Connection;
use crate::error::HttpdError;
use crate::stats::Stats;

/// Where to find the server's certificate chain and private key, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// One or more `CERTIFICATE` sections, leaf first.
    pub cert_file: PathBuf,
    /// The first private key section (PKCS#8, PKCS#1 or SEC1) is used.
    pub key_file: PathBuf,
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
    session: rustls::ServerConnection,
    close_notify_sent: bool,
}

impl TlsLayer {
    pub(crate) fn new(config: &Arc<ServerConfig>) -> Result<TlsLayer, rustls::Error> {
        Ok(TlsLayer {
            session: rustls::ServerConnection::new(Arc::clone(config))?,
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
            let space = conn.read_space();
            if space.is_empty() {
                return progress;
            }
            // Plaintext rustls already decrypted comes first.
            match self.session.reader().read(space) {
                // close_notify received.
                Ok(0) => {
                    conn.handle_eof();
                    return true;
                }
                Ok(n) => {
                    conn.handle_read(n, now);
                    progress = true;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP EOF without close_notify. HTTP frames its own messages,
                // so this is an ordinary close (RFC 8446, section 6.1 leaves
                // that to the application).
                Err(_) => {
                    conn.handle_eof();
                    return true;
                }
            }
            if !self.session.wants_read() {
                return progress;
            }
            match self.session.read_tls(socket) {
                // EOF is recorded by rustls; its reader reports it next round.
                Ok(0) => progress = true,
                Ok(_) => {
                    if self.session.process_new_packets().is_err() {
                        stats.tls_failures += 1;
                        // Best effort: rustls has queued an alert saying why.
                        let _ = self.session.write_tls(socket);
                        conn.handle_transport_error();
                        return true;
                    }
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return progress,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.handle_transport_error();
                    return true;
                }
            }
        }
    }

    /// Moves bytes `conn` → rustls → socket, then sends close_notify and
    /// half-closes when `conn` asks. Returns whether anything changed.
    pub(crate) fn pump_write(&mut self, socket: &mut TcpStream, conn: &mut Connection) -> bool {
        let mut progress = false;
        loop {
            let out = conn.poll_transmit();
            if !out.is_empty() {
                // Ok(0) means rustls's plaintext buffer is full: flush first.
                if let Ok(n) = self.session.writer().write(out) {
                    if n > 0 {
                        conn.handle_sent(n);
                        progress = true;
                    }
                }
            } else if conn.poll_shutdown() && !self.close_notify_sent {
                self.session.send_close_notify();
                self.close_notify_sent = true;
                progress = true;
            }
            if !self.session.wants_write() {
                if conn.poll_shutdown() && self.close_notify_sent {
                    let _ = socket.shutdown(Shutdown::Write);
                    conn.handle_shutdown();
                    return true;
                }
                return progress;
            }
            match self.session.write_tls(socket) {
                Ok(_) => progress = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return progress,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.handle_transport_error();
                    return true;
                }
            }
        }
    }
}
