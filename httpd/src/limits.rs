//! Every bound the server enforces, with its default as a named constant.
//!
//! Each limit, once passed, has one documented outcome; the integration tests
//! in `tests/limits.rs` probe each one just past (and at) its value.

use std::time::Duration;

/// Default for [`Limits::headers_max`].
pub const HEADERS_MAX: usize = 32;
/// Default for [`Limits::header_bytes_max`].
pub const HEADER_BYTES_MAX: usize = 8 * 1024;
/// Default for [`Limits::body_bytes_max`].
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Default for [`Limits::request_timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Limits::idle_timeout`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`Limits::response_timeout`].
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default for [`Limits::linger_timeout`].
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// Default for [`Limits::connections_max`].
pub const CONNECTIONS_MAX: usize = 1024;
/// Default for [`Limits::connections_per_client_max`]: a mail app needs one
/// or two connections; 64 leaves room for many devices behind one NAT
/// address while one client holds at most 1/16 of the default total.
pub const CONNECTIONS_PER_CLIENT_MAX: usize = 64;

/// The longest PROXY protocol v2 header accepted from a trusted proxy (16
/// fixed bytes, the addresses, and TLVs such as TLS details or a cloud
/// endpoint id). A longer one closes the connection.
pub const PROXY_HEADER_BYTES_MAX: usize = 1024;

/// Requests a connection may have in flight. Not configurable: the server
/// stops reading a connection while its request is with the application and
/// until the response is written, so pipelined requests wait in the kernel
/// (and in the connection's bounded read buffer) and are answered in order.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1;

/// The largest `connections_max` the token encoding can address; two more
/// slot values are reserved for the listener and the waker.
pub const CONNECTIONS_MAX_CEILING: usize = (1 << 16) - 3;

/// Bounds on what one client may make the server hold or wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Header fields in one request. One more is answered with 431 and the
    /// connection is closed.
    pub headers_max: usize,
    /// Bytes of request line plus header fields plus the blank line. One more
    /// is answered with 431 and the connection is closed.
    pub header_bytes_max: usize,
    /// `Content-Length` of one request. A larger declared length is answered
    /// with 413 as soon as the head is parsed, before any body is read, and
    /// the connection is closed.
    pub body_bytes_max: usize,
    /// A request must be complete this long after its first byte arrived (for
    /// a connection's first request: after it was accepted, which also bounds
    /// the TLS handshake). Past it the client gets 408 and the connection is
    /// closed; a connection that sent nothing is closed silently.
    pub request_timeout: Duration,
    /// A keep-alive connection with no request bytes pending is closed
    /// silently this long after its last response was queued.
    pub idle_timeout: Duration,
    /// The application must answer a request within this; past it the client
    /// gets 503 and the connection is closed. A later answer is stale.
    pub response_timeout: Duration,
    /// After the last response of a closing connection is queued, the server
    /// keeps flushing it, then half-closes and discards what the client still
    /// sends (so the kernel does not reset the connection and destroy the
    /// response), for at most this long.
    pub linger_timeout: Duration,
    /// Open connections in total. When a connection is accepted at this
    /// count, the connection idle longest (no request bytes pending, nothing
    /// in flight or unsent) is closed to make room; with none idle, the
    /// newcomer is answered 503 (TLS: closed without a word, since plaintext
    /// would be garbage to the client) and closed. At most
    /// [`CONNECTIONS_MAX_CEILING`]. See [`admission`](crate::admission).
    pub connections_max: usize,
    /// Open connections per client (an IPv4 address or an IPv6 /64; behind a
    /// trusted proxy, the client it names). One more from that client is
    /// answered 503 and closed like a connection past `connections_max`,
    /// even when the server has room. A value above `connections_max` acts
    /// as `connections_max`.
    pub connections_per_client_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            headers_max: HEADERS_MAX,
            header_bytes_max: HEADER_BYTES_MAX,
            body_bytes_max: BODY_BYTES_MAX,
            request_timeout: REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
            linger_timeout: LINGER_TIMEOUT,
            connections_max: CONNECTIONS_MAX,
            connections_per_client_max: CONNECTIONS_PER_CLIENT_MAX,
        }
    }
}

impl Limits {
    /// Why these limits cannot work, if they cannot.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        // The shortest complete head is "GET / HTTP/1.0\r\n\r\n" (18 bytes).
        if self.header_bytes_max < 18 {
            return Err("header_bytes_max is below the shortest request head (18 bytes)");
        }
        if self.connections_max == 0 || self.connections_max > CONNECTIONS_MAX_CEILING {
            return Err("connections_max must be within 1..=CONNECTIONS_MAX_CEILING");
        }
        if self.connections_per_client_max == 0 {
            return Err("connections_per_client_max must be at least 1");
        }
        // The read buffer holds one head and one body at most.
        if self
            .header_bytes_max
            .checked_add(self.body_bytes_max)
            .is_none()
        {
            return Err("header_bytes_max + body_bytes_max overflows usize");
        }
        Ok(())
    }

    /// Capacity of a connection's read buffer: one head and one body.
    pub(crate) fn read_buffer_bytes_max(&self) -> usize {
        self.header_bytes_max.saturating_add(self.body_bytes_max)
    }
}
