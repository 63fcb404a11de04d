//! Request heads: bytes in, an owned [`Head`] or a [`Rejection`] out.
//!
//! Read first: RFC 9112 (HTTP/1.1 message syntax), sections 2 to 7, and
//! RFC 9110 (HTTP semantics), sections 7.2 (Host), 7.6.1 (Connection), 8.6
//! (Content-Length) and 10.1.1 (Expect).
//!
//! No IO, no clock. Never panics on any input: every function here is total
//! over byte slices and returns a [`Rejection`] for what it will not serve.
//!
//! Framing is `Content-Length` only. A request with any `Transfer-Encoding`
//! is answered 411 Length Required and the connection is closed: 411 tells
//! the client exactly what to do instead (RFC 9112, section 6.3: "A server
//! MAY reject a request that contains a message body but not a
//! Content-Length by responding with 411"), and refusing every transfer
//! coding also removes the `Transfer-Encoding` + `Content-Length` request
//! smuggling ambiguity.

use crate::limits::Limits;
use crate::request::{Headers, Method};

/// Why the server answers a request itself, and closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 400: malformed head, bad `Content-Length`, missing or repeated `Host`.
    BadRequest,
    /// 408: the request was not complete within `request_timeout`.
    RequestTimeout,
    /// 411: a `Transfer-Encoding` header was present.
    LengthRequired,
    /// 413: `Content-Length` above `body_bytes_max`.
    PayloadTooLarge,
    /// 431: more than `headers_max` fields or `header_bytes_max` bytes.
    HeadersTooLarge,
    /// 501: a method outside [`Method`].
    NotImplemented,
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl Rejection {
    /// The body the server answers with: `{"error": CODE, "message": TEXT}`, the shape
    /// JSON APIs built on this crate use for their own errors.
    pub(crate) fn json_body(self) -> &'static str {
        match self {
            Rejection::BadRequest => {
                r#"{"error":"bad_request","message":"malformed HTTP request"}"#
            }
            Rejection::RequestTimeout => {
                r#"{"error":"request_timeout","message":"the request did not arrive in time"}"#
            }
            Rejection::LengthRequired => {
                r#"{"error":"length_required","message":"send a Content-Length, not Transfer-Encoding"}"#
            }
            Rejection::PayloadTooLarge => {
                r#"{"error":"too_large","message":"the body is too large"}"#
            }
            Rejection::HeadersTooLarge => {
                r#"{"error":"too_large","message":"the request head is too large"}"#
            }
            Rejection::NotImplemented => {
                r#"{"error":"not_implemented","message":"method not implemented"}"#
            }
            Rejection::VersionNotSupported => {
                r#"{"error":"version_not_supported","message":"HTTP/1.0 or HTTP/1.1 only"}"#
            }
        }
    }

    pub(crate) fn status(self) -> u16 {
        match self {
            Rejection::BadRequest => 400,
            Rejection::RequestTimeout => 408,
            Rejection::LengthRequired => 411,
            Rejection::PayloadTooLarge => 413,
            Rejection::HeadersTooLarge => 431,
            Rejection::NotImplemented => 501,
            Rejection::VersionNotSupported => 505,
        }
    }
}

/// A parsed request head, owning its strings (the bytes it came from are
/// zeroized right after parsing).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    /// Wiped on drop: a refused or abandoned head takes its bearer token
    /// with it.
    pub(crate) headers: Headers,
    pub(crate) content_length: usize,
    /// `HTTP/1.1` (otherwise `HTTP/1.0`).
    pub(crate) http11: bool,
    /// The connection stays open after the response.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue` from an HTTP/1.1 client.
    pub(crate) expect_continue: bool,
}

/// `HTTP-message = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]`
/// (RFC 9112, section 2.1), head part only.
///
/// Returns `Ok(None)` while the head is incomplete, `Ok(Some((head, len)))`
/// with the head's length in bytes once it is complete.
///
/// Looks at no more than `header_bytes_max` bytes: a head that is not
/// complete within them is [`Rejection::HeadersTooLarge`], as is one with
/// more than `headers_max` fields. Leading empty lines are skipped (RFC 9112,
/// section 2.2: a server "SHOULD ignore at least one empty line (CRLF)
/// received prior to the request-line").
pub(crate) fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(Head, usize)>, Rejection> {
    let window = &buf[..buf.len().min(limits.header_bytes_max)];
    let mut fields = vec![httparse::EMPTY_HEADER; limits.headers_max];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(window) {
        Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes_max => {
            Err(Rejection::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => Ok(Some((build_head(&req, limits)?, len))),
        Err(httparse::Error::TooManyHeaders) => Err(Rejection::HeadersTooLarge),
        Err(httparse::Error::Version) => Err(Rejection::VersionNotSupported),
        Err(_) => Err(Rejection::BadRequest),
    }
}

/// Checks the semantics httparse leaves to us and copies the head out.
fn build_head(req: &httparse::Request<'_, '_>, limits: &Limits) -> Result<Head, Rejection> {
    let token = req.method.ok_or(Rejection::BadRequest)?;
    let method = Method::from_token(token).ok_or(Rejection::NotImplemented)?;
    let http11 = match req.version {
        Some(1) => true,
        Some(0) => false,
        _ => return Err(Rejection::VersionNotSupported),
    };
    let target = req.path.ok_or(Rejection::BadRequest)?;
    let (path, query) = split_target(method, target).ok_or(Rejection::BadRequest)?;

    // Exact capacity, so the vector never moves (and leaves no copy behind).
    let mut headers = Headers(Vec::with_capacity(req.headers.len()));
    for field in req.headers.iter() {
        let value = std::str::from_utf8(field.value).map_err(|_| Rejection::BadRequest)?;
        headers
            .0
            .push((field.name.to_ascii_lowercase(), value.to_owned()));
    }
    let framing = read_framing(&headers, http11)?;
    if framing.content_length > limits.body_bytes_max {
        return Err(Rejection::PayloadTooLarge);
    }
    Ok(Head {
        method,
        path: path.to_owned(),
        query: query.map(str::to_owned),
        headers,
        content_length: framing.content_length,
        http11,
        keep_alive: framing.keep_alive,
        expect_continue: framing.expect_continue,
    })
}

/// `request-target = origin-form / absolute-form / authority-form /
/// asterisk-form` (RFC 9112, section 3.2), with
/// `origin-form = absolute-path [ "?" query ]` and
/// `absolute-form = absolute-URI`.
///
/// Returns the path and the query. RFC 9112, section 3.2.2: "a server MUST
/// accept the absolute-form in requests", so `http://host/p?q` yields `/p`
/// and `q`. The asterisk-form is accepted for `OPTIONS` only; the
/// authority-form (for `CONNECT`) never reaches here because `CONNECT` is not
/// a [`Method`].
fn split_target(method: Method, target: &str) -> Option<(&str, Option<&str>)> {
    if target == "*" {
        return (method == Method::Options).then_some(("*", None));
    }
    let origin = if target.starts_with('/') {
        target
    } else {
        strip_scheme_and_authority(target)?
    };
    Some(match origin.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (origin, None),
    })
}

/// `absolute-URI = scheme ":" hier-part [ "?" query ]` with
/// `hier-part = "//" authority path-abempty` for the `http` and `https`
/// schemes (RFC 3986, section 4.3; RFC 9110, section 4.2). Returns the
/// origin-form rest, which is `"/"` for an empty path.
fn strip_scheme_and_authority(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    if path_start == 0 {
        return None; // empty authority
    }
    match &rest[path_start..] {
        "" => Some("/"),
        tail if tail.starts_with('?') => None, // "http://h?q" has no path to keep
        tail => Some(tail),
    }
}

/// What the framing and connection-management fields say.
#[derive(Debug, PartialEq, Eq)]
struct Framing {
    content_length: usize,
    keep_alive: bool,
    expect_continue: bool,
}

/// Reads `Host`, `Transfer-Encoding`, `Content-Length`, `Connection` and
/// `Expect` from lower-cased fields.
///
/// RFC 9112, section 3.2: "A server MUST respond with a 400 (Bad Request)
/// status code to any HTTP/1.1 request message that lacks a Host header
/// field and to any request message that contains more than one Host header
/// field line or a Host header field with an invalid field value."
///
/// RFC 9112, section 9.3: HTTP/1.1 defaults to persistent connections unless
/// `close` is listed; HTTP/1.0 persists only with `keep-alive` listed.
///
/// RFC 9110, section 10.1.1: a server "MUST NOT send a 100 (Continue)
/// response" to an HTTP/1.0 client, so `expect_continue` is HTTP/1.1 only.
fn read_framing(headers: &[(String, String)], http11: bool) -> Result<Framing, Rejection> {
    let mut hosts = 0;
    let mut content_length = None;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    for (name, value) in headers {
        match name.as_str() {
            "host" => hosts += 1,
            "transfer-encoding" => return Err(Rejection::LengthRequired),
            "content-length" if content_length.is_some() => return Err(Rejection::BadRequest),
            "content-length" => content_length = Some(parse_content_length(value)?),
            "connection" => {
                for option in value.split(',').map(str::trim) {
                    close |= option.eq_ignore_ascii_case("close");
                    keep_alive |= option.eq_ignore_ascii_case("keep-alive");
                }
            }
            "expect" => expect_continue |= value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    if hosts > 1 || (http11 && hosts == 0) {
        return Err(Rejection::BadRequest);
    }
    Ok(Framing {
        content_length: content_length.unwrap_or(0),
        keep_alive: !close && (http11 || keep_alive),
        expect_continue: expect_continue && http11,
    })
}

/// `Content-Length = 1*DIGIT` (RFC 9110, section 8.6). A list such as
/// `5, 5` is refused rather than deduplicated: clients we serve send one
/// value, and refusing is the safe reading of an ambiguous frame.
fn parse_content_length(value: &str) -> Result<usize, Rejection> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::BadRequest);
    }
    // Digits only, so the one failure left is overflow: larger than any limit.
    Ok(value.parse::<usize>().unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(Head, usize)>, Rejection> {
        parse_head(bytes, &Limits::default())
    }

    #[test]
    fn simple_get() {
        let req = b"GET /v1/x?a=1&b HTTP/1.1\r\nHost: h\r\nX-Y:  z \r\n\r\nrest";
        let (head, len) = parse(req).unwrap().unwrap();
        assert_eq!(len, req.len() - 4);
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/v1/x");
        assert_eq!(head.query.as_deref(), Some("a=1&b"));
        assert_eq!(head.headers[1], ("x-y".to_owned(), "z".to_owned()));
        assert!(head.http11 && head.keep_alive && !head.expect_continue);
        assert_eq!(head.content_length, 0);
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let req = b"\r\nPOST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        for end in 0..req.len() {
            assert_eq!(parse(&req[..end]), Ok(None), "prefix of {end} bytes");
        }
        assert!(matches!(parse(req), Ok(Some((_, n))) if n == req.len()));
    }

    #[test]
    fn keep_alive_rules() {
        let cases: [(&[u8], bool); 5] = [
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, Close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
        ];
        for (req, keep_alive) in cases {
            let (head, _) = parse(req).unwrap().unwrap();
            assert_eq!(
                head.keep_alive,
                keep_alive,
                "{}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn rejections() {
        let cases: [(&[u8], Rejection); 13] = [
            (b"GARBAGE\r\n\r\n", Rejection::BadRequest),
            (b"\x00\x01\x02 / HTTP/1.1\r\n\r\n", Rejection::BadRequest),
            (b"GET / HTTP/1.1\r\n\r\n", Rejection::BadRequest), // no Host
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                Rejection::BadRequest,
            ),
            (
                b"GET nopath HTTP/1.1\r\nHost: a\r\n\r\n",
                Rejection::BadRequest,
            ),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Rejection::BadRequest),
            (
                b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                Rejection::VersionNotSupported,
            ),
            (
                b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
                Rejection::NotImplemented,
            ),
            (
                b"CONNECT h:1 HTTP/1.1\r\nHost: a\r\n\r\n",
                Rejection::NotImplemented,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Rejection::LengthRequired,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                Rejection::BadRequest,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                Rejection::BadRequest,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                Rejection::PayloadTooLarge,
            ),
        ];
        for (req, rejection) in cases {
            assert_eq!(
                parse(req).map(|_| ()),
                Err(rejection),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn absolute_and_asterisk_forms() {
        let (head, _) = parse(b"GET http://h:1/p?q HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.path.as_str(), head.query.as_deref()),
            ("/p", Some("q"))
        );
        let (head, _) = parse(b"GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.path, "/");
        let (head, _) = parse(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.path, "*");
        assert_eq!(
            parse(b"GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n").map(|_| ()),
            Err(Rejection::BadRequest)
        );
    }

    #[test]
    fn expect_continue_is_http11_only() {
        let req =
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n";
        assert!(parse(req).unwrap().unwrap().0.expect_continue);
        let req = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        assert!(!parse(req).unwrap().unwrap().0.expect_continue);
    }

    #[test]
    fn header_limits_at_and_past() {
        let limits = Limits {
            headers_max: 3,
            header_bytes_max: 64,
            ..Limits::default()
        };
        let at = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(parse_head(at, &limits).unwrap().is_some());
        let past = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_head(past, &limits).map(|_| ()),
            Err(Rejection::HeadersTooLarge)
        );

        let mut head = b"GET / HTTP/1.1\r\nHost: h\r\nA: ".to_vec();
        head.resize(64 - 4, b'x');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), 64);
        assert!(parse_head(&head, &limits).unwrap().is_some());
        head.insert(30, b'x');
        assert_eq!(
            parse_head(&head, &limits).map(|_| ()),
            Err(Rejection::HeadersTooLarge)
        );
        // An incomplete head at the limit is already too large.
        assert_eq!(
            parse_head(&head[..64], &limits).map(|_| ()),
            Err(Rejection::HeadersTooLarge)
        );
        assert_eq!(parse_head(&head[..63], &limits).map(|_| ()), Ok(()));
    }

    #[test]
    fn never_panics_on_short_noise() {
        let limits = Limits {
            headers_max: 2,
            header_bytes_max: 24,
            ..Limits::default()
        };
        let alphabet = b"GET /:\r\n HTTP/1.01Host\x00\xff,";
        // Every string of length <= 4 over a small alphabet, plus a fixed prefix.
        let mut word = [0usize; 4];
        loop {
            let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
            bytes.extend(word.iter().map(|&i| alphabet[i]));
            let _ = parse_head(&bytes, &limits);
            let _ = parse_head(&bytes[16..], &limits);
            let mut i = 0;
            while i < word.len() && word[i] == alphabet.len() - 1 {
                word[i] = 0;
                i += 1;
            }
            if i == word.len() {
                break;
            }
            word[i] += 1;
        }
    }
}
