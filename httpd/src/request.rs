//! What the application receives: a complete request and its opaque id.

use std::fmt;
use std::net::SocketAddr;

/// The request methods this server accepts. Any other method is answered
/// with 501 by the server itself (RFC 9110, section 9.1: "An origin server
/// that receives a request method that is unrecognized or not implemented
/// SHOULD respond with the 501 (Not Implemented) status code"). Methods are
/// case-sensitive, so `get` is not `GET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
}

impl Method {
    /// The method token as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
        }
    }

    /// `method = token` (RFC 9110, section 9.1), restricted to the ones above.
    pub(crate) fn from_token(token: &str) -> Option<Method> {
        Some(match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one request for [`Responder::respond`](crate::Responder::respond).
///
/// Opaque: it carries the connection's slot and a sequence number unique for
/// the server's lifetime, so an answer for a connection that has gone away
/// (or has moved on to a later request, or whose slot now holds another
/// connection) is recognised as stale, dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId {
    pub(crate) slot: u32,
    pub(crate) seq: u64,
}

/// One complete request, handed to the [`Handler`](crate::Handler).
///
/// The body may hold credentials: it was moved out of the connection's read
/// buffer (whose copy was zeroized) and is never logged; `Debug` shows only
/// its length, and header values are redacted too. Zeroizing it after use is
/// the application's duty.
pub struct Request {
    /// Pass this back with the response.
    pub id: RequestId,
    pub method: Method,
    /// The request target's path, still percent-encoded, always starting with
    /// `/` (or exactly `*` for `OPTIONS *`). An absolute-form target
    /// (`http://host/path`) is reduced to its path.
    pub path: String,
    /// The part of the request target after the first `?`, still
    /// percent-encoded; `None` when there is no `?`.
    pub query: Option<String>,
    /// Exactly `Content-Length` bytes; empty when that header is absent.
    pub body: Vec<u8>,
    /// The TCP peer. Per-IP limits are the application's business.
    pub peer: SocketAddr,
    /// Field names lower-cased; values with surrounding whitespace removed.
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header field `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All header fields in received order, names lower-cased.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl fmt::Debug for Request {
    /// Redacted: header values and the body may be credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query.as_ref().map(|_| "<redacted>"))
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .field("peer", &self.peer)
            .finish()
    }
}
