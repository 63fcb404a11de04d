//! Counters, the server's only voice: it logs nothing.

/// A snapshot of the server's counters, from
/// [`ServerHandle::stats`](crate::ServerHandle::stats).
///
/// All counters only grow, except `connections_open`. The event loop
/// publishes a snapshot at the end of each turn, so a snapshot is consistent
/// but may trail the loop by one turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections taken into a slot.
    pub connections_accepted: u64,
    /// Connections currently in a slot.
    pub connections_open: u64,
    /// Connections accepted at `connections_max` with none idle to close,
    /// answered 503 and closed.
    pub connections_rejected: u64,
    /// Connections (or, behind a proxy, requests) refused because their
    /// client held `connections_per_client_max` connections: 503 and closed.
    pub connections_rejected_per_client: u64,
    /// Idle connections closed to make room for a newcomer.
    pub connections_evicted: u64,
    /// Connections from trusted proxies closed for a malformed or overlong
    /// PROXY protocol header.
    pub proxy_headers_malformed: u64,
    /// `accept` failures other than "would block" (such as running out of
    /// file descriptors); accepting is retried shortly after.
    pub accept_errors: u64,
    /// Requests handed to the handler.
    pub requests: u64,
    /// Responses queued, by status class; 100 Continue counts in `1xx`, and
    /// the server's own rejections count in `4xx`/`5xx`.
    pub responses_1xx: u64,
    /// Responses with a 2xx status.
    pub responses_2xx: u64,
    /// Responses with a 3xx status.
    pub responses_3xx: u64,
    /// Responses with a 4xx status, including the server's 400, 408, 411,
    /// 413 and 431.
    pub responses_4xx: u64,
    /// Responses with a 5xx status, including the server's 500 (invalid
    /// answer), 501, 503 (response timeout, connection limit) and 505.
    pub responses_5xx: u64,
    /// Requests refused as malformed or unsupported (400, 411, 501, 505).
    pub rejected_malformed: u64,
    /// Requests refused for `headers_max` or `header_bytes_max` (431).
    pub rejected_headers_limit: u64,
    /// Requests refused for `body_bytes_max` (413).
    pub rejected_body_limit: u64,
    /// Requests not complete within `request_timeout` (408).
    pub timed_out_request: u64,
    /// Connections closed by `idle_timeout`, or by `request_timeout` before
    /// sending any byte.
    pub timed_out_idle: u64,
    /// Requests the application did not answer within `response_timeout`
    /// (503).
    pub timed_out_response: u64,
    /// Answers for requests whose connection had gone away or had already
    /// been answered; dropped.
    pub responses_stale: u64,
    /// Answers dropped because the queue to the server thread was full (see
    /// [`RESPONSES_QUEUED_PER_CONNECTION`](crate::RESPONSES_QUEUED_PER_CONNECTION)).
    pub responses_dropped: u64,
    /// Answers that broke a [`Response`](crate::Response) rule and were
    /// replaced by 500.
    pub responses_invalid: u64,
    /// TLS connections that failed (handshake or record errors).
    pub tls_failures: u64,
}

impl Stats {
    pub(crate) fn count_response(&mut self, status: u16) {
        let class = match status {
            100..=199 => &mut self.responses_1xx,
            200..=299 => &mut self.responses_2xx,
            300..=399 => &mut self.responses_3xx,
            400..=499 => &mut self.responses_4xx,
            _ => &mut self.responses_5xx,
        };
        *class += 1;
    }
}
