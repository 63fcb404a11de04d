//! What the application receives: a complete request and its opaque id.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;

use zeroize::{Zeroize, Zeroizing};

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

/// Header fields, names lower-cased, values trimmed. Values may be
/// credentials (`Authorization`), so every string is zeroized when the
/// fields are dropped, on whatever path that happens (a refused head, a
/// request the application never looks at), and `Debug` shows names only.
#[derive(Default, PartialEq, Eq)]
pub(crate) struct Headers(pub(crate) Vec<(String, String)>);

impl Deref for Headers {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Headers {
    fn drop(&mut self) {
        for (name, value) in &mut self.0 {
            name.zeroize();
            value.zeroize();
        }
    }
}

impl fmt::Debug for Headers {
    /// Redacted: values may be credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

/// One complete request, handed to the [`Handler`](crate::Handler).
///
/// The body may hold credentials: it was moved out of the connection's read
/// buffer (whose copy was zeroized) into a [`Zeroizing`] buffer, so it is
/// wiped wherever the request is dropped, refused or not. Header values
/// (the bearer token) are wiped on drop too. Neither is ever logged; `Debug`
/// shows only the body's length and the header names. The path and query are
/// not wiped: secrets do not belong in URLs, which proxies log.
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
    /// Zeroized on drop.
    pub body: Zeroizing<Vec<u8>>,
    /// The TCP peer (a trusted reverse proxy, or the client itself).
    pub peer: SocketAddr,
    /// The client this request is from, IPv4-mapped IPv6 addresses shown as
    /// IPv4: the peer's address, unless the peer is one of
    /// [`Config::trusted_proxies`](crate::Config::trusted_proxies), in which
    /// case it is the source in the connection's PROXY protocol v2 header,
    /// or, without one, the right-most `X-Forwarded-For` address that is not
    /// itself trusted (see [`forwarded`](crate::forwarded)). Per-client
    /// limits (rate limits in the application, connection caps in the
    /// server) key on this.
    pub client: IpAddr,
    /// Field names lower-cased; values with surrounding whitespace removed.
    pub(crate) headers: Headers,
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
            .field("client", &self.client)
            .finish()
    }
}
