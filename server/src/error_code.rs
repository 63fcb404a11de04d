//! Every error the REST API answers with: its HTTP status and its stable `error` code.
//!
//! The list is exhaustive on purpose: a new refusal is a new variant here, so the error
//! table and `docs/openapi.json` cannot miss it (`server/tests/openapi.rs` fails when the
//! document's `ErrorCode` enum and its statuses differ from [`ErrorCode::ALL`]).
//! Codes are part of the interface: apps switch on them, so a code is never renamed.

/// One documented API error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the body or a field is invalid (`field` names it).
    BadRequest,
    /// 400: the `Imap-Push-Key` header is not the registration's routing key (see
    /// [`crate::api::Registration::routing_key`]): a load balancer would have routed the
    /// request by a key that names another account.
    RoutingKeyMismatch,
    /// 401: a bearer token is required and the one given is missing or wrong.
    Unauthorized,
    /// 403: the IMAP host or an endpoint is not a public address.
    ForbiddenDestination,
    /// 404: no such resource or subscription.
    NotFound,
    /// 405: the resource exists but not with this method.
    MethodNotAllowed,
    /// 409: a newer registration of the same account and device replaced this one
    /// before it was ready.
    Replaced,
    /// 409: the subscription was deleted before it was ready.
    Deleted,
    /// 409: the account already has `limits.sessions_per_account_max` sessions.
    TooManySessions,
    /// 413: the request is too large (answered by httpd itself).
    TooLarge,
    /// 422: the IMAP server refused the credentials.
    ImapAuthFailed,
    /// 422: the verification codes are wrong, or the subscription is active already
    /// (a code is good once). Wrong codes count against
    /// [`crate::verification::VERIFY_ATTEMPTS_MAX`]; the last one drops the subscription.
    VerificationFailed,
    /// 429: too many requests; `Retry-After` says when to come back.
    RateLimited,
    /// 500: something on our side failed (randomness, the journal).
    Internal,
    /// 502: the IMAP server could not be reached.
    ImapUnreachable,
    /// 502: the TLS handshake with the IMAP server failed.
    ImapTlsFailed,
    /// 502: the IMAP server broke the protocol.
    ImapProtocolError,
    /// 503: the server holds as many sessions as it may (in all, to that host, or as its
    /// descriptors allow).
    AtCapacity,
    /// 503: the server is shutting down.
    ShuttingDown,
    /// 503: too many host name lookups are waiting (a slow name server); retry later.
    ResolverBusy,
    /// 504: the IMAP session did not become ready in time.
    ImapTimeout,
}

impl ErrorCode {
    /// Every code, in status order: the source of the documented error table.
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::BadRequest,
        ErrorCode::RoutingKeyMismatch,
        ErrorCode::Unauthorized,
        ErrorCode::ForbiddenDestination,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Replaced,
        ErrorCode::Deleted,
        ErrorCode::TooManySessions,
        ErrorCode::TooLarge,
        ErrorCode::ImapAuthFailed,
        ErrorCode::VerificationFailed,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::ImapUnreachable,
        ErrorCode::ImapTlsFailed,
        ErrorCode::ImapProtocolError,
        ErrorCode::AtCapacity,
        ErrorCode::ShuttingDown,
        ErrorCode::ResolverBusy,
        ErrorCode::ImapTimeout,
    ];

    /// The HTTP status this error is answered with.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::RoutingKeyMismatch => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::ForbiddenDestination => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Replaced | ErrorCode::Deleted | ErrorCode::TooManySessions => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::ImapAuthFailed | ErrorCode::VerificationFailed => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::ImapUnreachable
            | ErrorCode::ImapTlsFailed
            | ErrorCode::ImapProtocolError => 502,
            ErrorCode::AtCapacity | ErrorCode::ShuttingDown | ErrorCode::ResolverBusy => 503,
            ErrorCode::ImapTimeout => 504,
        }
    }

    /// The `error` field of the JSON body.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::RoutingKeyMismatch => "routing_key_mismatch",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ForbiddenDestination => "forbidden_destination",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Replaced => "replaced",
            ErrorCode::Deleted => "deleted",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::ImapAuthFailed => "imap_auth_failed",
            ErrorCode::VerificationFailed => "verification_failed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::ImapUnreachable => "imap_unreachable",
            ErrorCode::ImapTlsFailed => "imap_tls_failed",
            ErrorCode::ImapProtocolError => "imap_protocol_error",
            ErrorCode::AtCapacity => "at_capacity",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::ResolverBusy => "resolver_busy",
            ErrorCode::ImapTimeout => "imap_timeout",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status(), self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_error_statuses_in_order() {
        let mut seen = std::collections::HashSet::new();
        let mut last = 0;
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!((400..600).contains(&code.status()), "{code}");
            assert!(code.status() >= last, "{code} out of status order");
            last = code.status();
            let lower = code
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(lower, "{code}: codes are snake_case");
        }
    }
}
