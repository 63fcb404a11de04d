//! The HTTP/1.1 the [`Sink`](super::Sink) speaks: framing one request off a byte
//! buffer and writing one response. Pure functions, no sockets.
//!
//! Only what push senders send is understood: a request line, headers and a body
//! framed by `Content-Length` (RFC 9112 §6.3). A chunked body, an oversized head or
//! body, or a head that is not UTF-8 is malformed, and the sink closes the connection.

/// Bounds on what the sink buffers per request; push requests are a few KiB.
pub(crate) const HEAD_BYTES_MAX: usize = 64 * 1024;
pub(crate) const BODY_BYTES_MAX: usize = 1024 * 1024;

/// One request as framed, before the sink records it.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The first of `headers` named `name` (lowercase).
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// `Connection: close`: answer, then close.
    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// An RFC 8188 `aes128gcm` body, which the sink may decrypt.
    pub fn is_encrypted(&self) -> bool {
        self.header("content-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("aes128gcm"))
    }
}

/// What the framing of a connection's input says.
#[derive(Debug)]
pub(crate) enum Framed {
    /// A whole request and the number of input bytes it took.
    Request(Request, usize),
    Incomplete,
    Malformed,
}

/// Frames the first request in `input`; bytes past it belong to the next one
/// (pipelining).
pub(crate) fn frame(input: &[u8]) -> Framed {
    let Some(head_len) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if input.len() > HEAD_BYTES_MAX {
            Framed::Malformed
        } else {
            Framed::Incomplete
        };
    };
    let head_len = head_len + 4;
    if head_len > HEAD_BYTES_MAX {
        return Framed::Malformed;
    }
    let Some((method, path, headers)) = parse_head(&input[..head_len]) else {
        return Framed::Malformed;
    };
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if request.header("transfer-encoding").is_some() {
        return Framed::Malformed;
    }
    let body_len = match request.header("content-length").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= BODY_BYTES_MAX => n,
        Some(_) => return Framed::Malformed,
    };
    if input.len() < head_len + body_len {
        return Framed::Incomplete;
    }
    request.body = input[head_len..head_len + body_len].to_vec();
    Framed::Request(request, head_len + body_len)
}

type Head = (String, String, Vec<(String, String)>);

/// The request line and headers of a head that ends in CRLF CRLF.
fn parse_head(head: &[u8]) -> Option<Head> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next().filter(|m| !m.is_empty())?.to_owned();
    let path = request_line.next().filter(|p| !p.is_empty())?.to_owned();
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Some((method, path, headers))
}

/// How the sink answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    /// The `Retry-After` value, delay-seconds or an HTTP-date.
    pub retry_after: Option<String>,
    pub close: bool,
}

/// The response bytes for `answer`, with an empty body. A 3xx carries
/// `Location: /moved`, so a client that followed redirects would show up as a
/// request for `/moved`.
pub(crate) fn response(answer: &Answer) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: 0\r\n",
        answer.status,
        reason(answer.status)
    );
    if let Some(value) = &answer.retry_after {
        out.push_str(&format!("Retry-After: {value}\r\n"));
    }
    if (300..400).contains(&answer.status) {
        out.push_str("Location: /moved\r\n");
    }
    if answer.close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A `200 OK` with a JSON body (the sink's own counters).
pub(crate) fn json_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        410 => "Gone",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pipelined_requests_and_partial_bodies() {
        let two = b"POST /n/1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST /n/2 HTTP/1.1\r\nContent-Encoding: aes128gcm\r\nContent-Length: 3\r\n\r\nab";
        let Framed::Request(first, used) = frame(two) else {
            panic!("first request");
        };
        assert_eq!(first.method, "POST");
        assert_eq!(first.path, "/n/1");
        assert_eq!(first.body, b"{}");
        assert!(!first.is_encrypted());
        assert!(matches!(frame(&two[used..]), Framed::Incomplete));
        let Framed::Request(second, _) = frame(&[&two[used..], b"c"].concat()) else {
            panic!("second request");
        };
        assert!(second.is_encrypted());
        assert_eq!(second.body, b"abc");
        assert!(matches!(
            frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Framed::Malformed
        ));
    }

    #[test]
    fn oversized_heads_and_bodies_are_malformed() {
        let endless = vec![b'x'; HEAD_BYTES_MAX + 1];
        assert!(matches!(frame(&endless), Framed::Malformed));
        let big = format!(
            "PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        assert!(matches!(frame(big.as_bytes()), Framed::Malformed));
        assert!(matches!(
            frame(b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Framed::Malformed
        ));
    }

    #[test]
    fn responses_carry_retry_after_location_and_close() {
        let text = |a: &Answer| String::from_utf8(response(a)).unwrap();
        let limited = Answer {
            status: 429,
            retry_after: Some("7".into()),
            close: true,
        };
        assert_eq!(
            text(&limited),
            "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nRetry-After: 7\r\nConnection: close\r\n\r\n"
        );
        let moved = Answer {
            status: 301,
            retry_after: None,
            close: false,
        };
        assert!(text(&moved).contains("\r\nLocation: /moved\r\n"));
    }
}
