//! Why a session ended: one documented enum, reported exactly once per session.

use std::fmt;
use std::io;

use imap_codec_lite::{FrameError, ParseError};

/// Why a session ended. Every session that was ever started ends with exactly one of these,
/// carried by `Event::Failed` (before it was ready) or `Event::SessionLost` (after).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The server said `* BYE`.
    Bye,
    /// The server closed the connection without saying BYE.
    Closed,
    /// The socket failed (connection reset, broken pipe, ...).
    Io(io::ErrorKind),
    /// The host name did not resolve to any address.
    Resolve,
    /// Too many host name lookups were waiting; the resolver pool refused this one.
    ResolverBusy,
    /// Every address refused or failed the TCP connect.
    Connect(io::ErrorKind),
    /// The destination address is not allowed by the engine's connect filter.
    Forbidden,
    /// TLS failed.
    Tls(TlsFailure),
    /// The server rejected the credentials (tagged `NO` to LOGIN or AUTHENTICATE).
    AuthRejected,
    /// The server offers no way to log in that we may use (e.g. `LOGINDISABLED` and no
    /// `AUTH=PLAIN`, or an OAuth2 token and no `AUTH=XOAUTH2`/`AUTH=OAUTHBEARER`).
    AuthUnavailable,
    /// The server refused to EXAMINE the mailbox (it may not exist).
    MailboxRejected,
    /// The server broke the protocol.
    Protocol(ProtocolError),
    /// An expected answer did not arrive in time.
    Timeout(Waiting),
    /// The engine is shutting down.
    Shutdown,
    /// The session was removed through the API.
    Unwatched,
}

/// What went wrong with TLS.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate did not verify.
    Certificate,
    /// The server sent a TLS alert.
    Alert,
    /// The server does not offer STARTTLS, or refused it.
    StartTlsRefused,
    /// The host name is not valid as a TLS server name.
    ServerName,
    /// Any other handshake or record error.
    Other,
    /// After the handshake, a record did not authenticate (bad MAC, reordered, replayed).
    BadRecordMac,
    /// After the handshake, a record was longer than its version allows or too short.
    BadRecordLength,
    /// After the handshake, a record type or handshake message with no place there.
    UnexpectedMessage,
    /// The server asked for a client certificate after the handshake (TLS 1.3).
    PostHandshakeAuth,
    /// The server asked to renegotiate (TLS 1.2 HelloRequest).
    Renegotiation,
    /// A sequence number reached its limit: the keys may seal or open no more records.
    SequenceExhausted,
}

/// How the server broke the protocol.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// A response passed one of the framing limits (line, literal, message size).
    Frame(FrameError),
    /// A complete response could not be parsed.
    Parse(ParseError),
    /// A tagged response for a command we did not send.
    UnexpectedTag,
    /// A continuation request we did not ask for.
    UnexpectedContinuation,
    /// A command was answered with `BAD`.
    CommandBad,
    /// The server answered IDLE with `NO` or `BAD`.
    IdleRejected,
    /// Bytes arrived after the STARTTLS `OK` and before the handshake (an injection attempt).
    StartTlsInjection,
    /// The first response was neither `OK`, `PREAUTH` nor `BYE`.
    BadGreeting,
    /// A command we had to send did not fit the transmit buffer (credentials too long).
    CommandTooLarge,
}

/// Which answer a session was waiting for when its deadline passed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The host name lookup (the resolver pool's per-lookup timeout).
    Resolve,
    Connect,
    Greeting,
    Capability,
    StartTls,
    TlsHandshake,
    Authentication,
    Id,
    Examine,
    Status,
    Notify,
    /// The `+` continuation after IDLE.
    IdleAccepted,
    /// The tagged `OK` after DONE.
    Done,
    Noop,
    /// The answer to `UID FETCH` (a filter or preview).
    Fetch,
    Logout,
    /// The end of a response that had started arriving.
    ResponseEnd,
}

impl EndReason {
    /// A stable snake_case code, for push payloads, metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            EndReason::Bye => "bye",
            EndReason::Closed => "closed",
            EndReason::Io(io::ErrorKind::ConnectionReset) => "connection_reset",
            EndReason::Io(_) => "io_error",
            EndReason::Resolve => "resolve_failed",
            EndReason::ResolverBusy => "resolver_busy",
            EndReason::Connect(_) => "connect_failed",
            EndReason::Forbidden => "forbidden_destination",
            EndReason::Tls(_) => "tls_error",
            EndReason::AuthRejected => "auth_rejected",
            EndReason::AuthUnavailable => "auth_unavailable",
            EndReason::MailboxRejected => "mailbox_rejected",
            EndReason::Protocol(_) => "protocol_error",
            EndReason::Timeout(_) => "timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::Unwatched => "unwatched",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Bye => f.write_str("the server said BYE"),
            EndReason::Closed => f.write_str("the server closed the connection"),
            EndReason::Io(kind) => write!(f, "socket error: {kind}"),
            EndReason::Resolve => f.write_str("the host name did not resolve"),
            EndReason::ResolverBusy => f.write_str("too many host name lookups are waiting"),
            EndReason::Connect(kind) => write!(f, "could not connect: {kind}"),
            EndReason::Forbidden => f.write_str("the destination address is not allowed"),
            EndReason::Tls(t) => write!(f, "TLS failed: {t}"),
            EndReason::AuthRejected => f.write_str("the server rejected the credentials"),
            EndReason::AuthUnavailable => {
                f.write_str("the server offers no authentication mechanism we may use")
            }
            EndReason::MailboxRejected => f.write_str("the server refused to open the mailbox"),
            EndReason::Protocol(p) => write!(f, "protocol error: {p}"),
            EndReason::Timeout(w) => write!(f, "timed out waiting for {w}"),
            EndReason::Shutdown => f.write_str("the engine shut down"),
            EndReason::Unwatched => f.write_str("removed through the API"),
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFailure::Certificate => "the server certificate did not verify",
            TlsFailure::Alert => "the server sent an alert",
            TlsFailure::StartTlsRefused => "STARTTLS is not offered or was refused",
            TlsFailure::ServerName => "the host is not a valid TLS server name",
            TlsFailure::Other => "handshake or record error",
            TlsFailure::BadRecordMac => "a record did not authenticate",
            TlsFailure::BadRecordLength => "a record had a bad length",
            TlsFailure::UnexpectedMessage => "an unexpected record or message after the handshake",
            TlsFailure::PostHandshakeAuth => "the server asked for a client certificate",
            TlsFailure::Renegotiation => "the server asked to renegotiate",
            TlsFailure::SequenceExhausted => "the record sequence numbers ran out",
        })
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Frame(e) => write!(f, "response over a limit ({e:?})"),
            ProtocolError::Parse(e) => write!(f, "unparsable response ({e:?})"),
            ProtocolError::UnexpectedTag => f.write_str("tagged response to no command of ours"),
            ProtocolError::UnexpectedContinuation => f.write_str("unexpected continuation request"),
            ProtocolError::CommandBad => f.write_str("a command was answered with BAD"),
            ProtocolError::IdleRejected => f.write_str("IDLE was refused"),
            ProtocolError::StartTlsInjection => f.write_str("plaintext injected after STARTTLS"),
            ProtocolError::BadGreeting => f.write_str("invalid greeting"),
            ProtocolError::CommandTooLarge => f.write_str("command too large to send"),
        }
    }
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Waiting::Resolve => "the host name lookup",
            Waiting::Connect => "the TCP connection",
            Waiting::Greeting => "the greeting",
            Waiting::Capability => "CAPABILITY",
            Waiting::StartTls => "STARTTLS",
            Waiting::TlsHandshake => "the TLS handshake",
            Waiting::Authentication => "the login",
            Waiting::Id => "ID",
            Waiting::Examine => "EXAMINE",
            Waiting::Status => "STATUS",
            Waiting::Notify => "NOTIFY",
            Waiting::IdleAccepted => "IDLE to be accepted",
            Waiting::Done => "the answer to DONE",
            Waiting::Noop => "NOOP",
            Waiting::Fetch => "UID FETCH",
            Waiting::Logout => "LOGOUT",
            Waiting::ResponseEnd => "the rest of a response",
        })
    }
}
