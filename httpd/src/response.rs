//! What the application answers, and its encoding onto the wire.
//!
//! Read first: RFC 9112, sections 4 (status line), 6.3 (message body length)
//! and 9.6 (closing); RFC 9110, sections 5.5 (field values) and 15 (status
//! codes).
//!
//! The server owns framing and connection management: it writes `Date`,
//! `Content-Length` and `Connection` itself, and a response that sets one of
//! those, or a field that would split the response, is replaced by a 500
//! (and counted in `Stats::responses_invalid`).

use std::borrow::Cow;
use std::fmt;

use crate::date::HTTP_DATE_LEN;

/// An answer to one [`Request`](crate::Request).
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// A final status, 200..=599 (the server sends 100 Continue itself).
    pub status: u16,
    /// Extra header fields. Names MUST be tokens and values MUST NOT contain
    /// CR, LF or NUL; `content-length`, `transfer-encoding`, `connection`,
    /// `keep-alive`, `upgrade` and `date` are the server's and MUST NOT
    /// appear.
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// Sent as is, with a `Content-Length`. MUST be empty for 204 and 304.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with no body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A body with `content-type: application/json`.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response::empty(status)
            .with_header("content-type", "application/json")
            .with_body(body.into().into_bytes())
    }

    /// A body with `content-type: text/plain; charset=utf-8`.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::empty(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into().into_bytes())
    }

    /// Adds a header field.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
}

impl fmt::Debug for Response {
    /// Shows the body's length only: it may carry tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What the `Connection` field of an encoded response says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// HTTP/1.1 keeps the connection open: no field needed.
    KeepAliveDefault,
    /// An HTTP/1.0 client asked for keep-alive: `Connection: keep-alive`.
    KeepAliveExplicit,
    /// The server closes after this response: `Connection: close`
    /// (RFC 9112, section 9.6: a server that "does not intend to" persist
    /// "SHOULD send a close connection option").
    Close,
}

/// How to frame one response on its connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Framing<'a> {
    pub(crate) persistence: Persistence,
    /// The request was `HEAD`: send the fields, not the body (RFC 9110,
    /// section 9.3.2).
    pub(crate) head_only: bool,
    pub(crate) date: &'a [u8; HTTP_DATE_LEN],
}

/// Why a response cannot be sent as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InvalidResponse {
    Status,
    FieldName,
    FieldValue,
    ReservedField,
    BodyNotAllowed,
}

/// Checks the caller duties listed on [`Response`].
pub(crate) fn validate(response: &Response) -> Result<(), InvalidResponse> {
    if !(200..=599).contains(&response.status) {
        return Err(InvalidResponse::Status);
    }
    if matches!(response.status, 204 | 304) && !response.body.is_empty() {
        return Err(InvalidResponse::BodyNotAllowed);
    }
    for (name, value) in &response.headers {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(InvalidResponse::FieldName);
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
            return Err(InvalidResponse::FieldValue);
        }
        const RESERVED: [&str; 6] = [
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "upgrade",
            "date",
        ];
        if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Err(InvalidResponse::ReservedField);
        }
    }
    Ok(())
}

/// `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
/// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA` (RFC 9110, section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends a response validated by [`validate`] to `out`:
///
/// ```text
/// status-line = HTTP-version SP status-code SP [ reason-phrase ]
/// HTTP-message = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]
/// ```
///
/// (RFC 9112, sections 4 and 2.1).
pub(crate) fn encode(out: &mut Vec<u8>, response: &Response, framing: Framing<'_>) {
    debug_assert_eq!(validate(response), Ok(()));
    encode_status_line(out, response.status);
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(framing.date);
    out.extend_from_slice(b"\r\n");
    // RFC 9110, section 8.6: no Content-Length in 1xx and 204; for 304 it
    // would have to repeat the representation's length, which we do not know.
    if !matches!(response.status, 100..=199 | 204 | 304) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(response.body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing.persistence {
        Persistence::KeepAliveDefault => {}
        Persistence::KeepAliveExplicit => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    for (name, value) in &response.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !framing.head_only {
        out.extend_from_slice(&response.body);
    }
}

/// The interim response to `Expect: 100-continue` (RFC 9110, section 15.2.1).
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn encode_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// RFC 9110, section 15. The phrase is optional on the wire ("A client
/// SHOULD ignore the reason-phrase content"), so unknown codes get none.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8; HTTP_DATE_LEN] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn encoded(response: &Response, persistence: Persistence, head_only: bool) -> String {
        let mut out = Vec::new();
        encode(
            &mut out,
            response,
            Framing {
                persistence,
                head_only,
                date: DATE,
            },
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_keep_alive() {
        let text = encoded(
            &Response::json(201, "{}"),
            Persistence::KeepAliveDefault,
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 201 Created\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             content-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
        );
    }

    #[test]
    fn head_close_and_unknown_status() {
        let response = Response::text(299, "abc").with_header("x-a", "b");
        let text = encoded(&response, Persistence::Close, true);
        assert_eq!(
            text,
            "HTTP/1.1 299 \r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 3\r\n\
             connection: close\r\ncontent-type: text/plain; charset=utf-8\r\nx-a: b\r\n\r\n"
        );
    }

    #[test]
    fn no_content_length_for_204() {
        let text = encoded(&Response::empty(204), Persistence::KeepAliveExplicit, false);
        assert!(!text.contains("content-length"));
        assert!(text.contains("connection: keep-alive\r\n"));
    }

    #[test]
    fn invalid_responses() {
        let cases = [
            (Response::empty(100), InvalidResponse::Status),
            (Response::empty(600), InvalidResponse::Status),
            (Response::text(204, "x"), InvalidResponse::BodyNotAllowed),
            (
                Response::empty(200).with_header("a b", "c"),
                InvalidResponse::FieldName,
            ),
            (
                Response::empty(200).with_header("", "c"),
                InvalidResponse::FieldName,
            ),
            (
                Response::empty(200).with_header("x", "a\r\nSet-Cookie: 1"),
                InvalidResponse::FieldValue,
            ),
            (
                Response::empty(200).with_header("Content-Length", "9"),
                InvalidResponse::ReservedField,
            ),
            (
                Response::empty(200).with_header("connection", "close"),
                InvalidResponse::ReservedField,
            ),
        ];
        for (response, why) in cases {
            assert_eq!(validate(&response), Err(why), "{response:?}");
        }
        assert_eq!(
            validate(&Response::json(200, "{}").with_header("retry-after", "5")),
            Ok(())
        );
    }
}
