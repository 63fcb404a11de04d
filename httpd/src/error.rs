//! Why the server could not start, or why its loop ended.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors from [`Server::bind`](crate::Server::bind),
/// [`Server::spawn`](crate::Server::spawn) and
/// [`ServerHandle::shutdown`](crate::ServerHandle::shutdown). Problems with
/// single connections are never errors here: they close that connection and
/// show in [`Stats`](crate::Stats).
#[derive(Debug)]
#[non_exhaustive]
pub enum HttpdError {
    /// The [`Limits`](crate::Limits) cannot work.
    InvalidLimits { reason: &'static str },
    /// Binding the listening socket failed.
    Bind { addr: SocketAddr, source: io::Error },
    /// Creating or using the mio poller (or its waker) failed.
    Poll { source: io::Error },
    /// The certificate chain file could not be read or parsed.
    TlsCertificates {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    /// The private key file could not be read or parsed.
    TlsPrivateKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the certificate and key.
    TlsConfig { source: rustls::Error },
    /// The server thread could not be started.
    Spawn { source: io::Error },
    /// The server thread panicked (the handler runs on it).
    Panicked,
}

impl fmt::Display for HttpdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpdError::InvalidLimits { reason } => write!(f, "invalid httpd limits: {reason}"),
            HttpdError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            HttpdError::Poll { source } => write!(f, "httpd event loop failed: {source}"),
            HttpdError::TlsCertificates { path, source } => {
                write!(
                    f,
                    "cannot load TLS certificates from {}: {source}",
                    path.display()
                )
            }
            HttpdError::TlsPrivateKey { path, source } => {
                write!(
                    f,
                    "cannot load TLS private key from {}: {source}",
                    path.display()
                )
            }
            HttpdError::TlsConfig { source } => {
                write!(f, "TLS certificate and key rejected: {source}")
            }
            HttpdError::Spawn { source } => write!(f, "cannot start the httpd thread: {source}"),
            HttpdError::Panicked => f.write_str("the httpd thread panicked"),
        }
    }
}

impl std::error::Error for HttpdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpdError::Bind { source, .. }
            | HttpdError::Poll { source }
            | HttpdError::Spawn { source } => Some(source),
            HttpdError::TlsCertificates { source, .. }
            | HttpdError::TlsPrivateKey { source, .. } => Some(source),
            HttpdError::TlsConfig { source } => Some(source),
            HttpdError::InvalidLimits { .. } | HttpdError::Panicked => None,
        }
    }
}
