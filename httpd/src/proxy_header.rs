//! The PROXY protocol version 2 header: bytes in, the client's address out.
//!
//! Read first: HAProxy's "The PROXY protocol, Versions 1 & 2", section 2.2
//! (binary header format). A reverse proxy that speaks it sends, before
//! anything else on the connection (before the TLS ClientHello, too):
//!
//! ```text
//! signature   12 bytes  \r\n\r\n\0\r\nQUIT\n
//! ver_cmd      1 byte   high nibble 2 (version), low nibble 0 LOCAL / 1 PROXY
//! fam_proto    1 byte   high nibble 0 UNSPEC / 1 INET / 2 INET6 / 3 UNIX,
//!                       low nibble 0 UNSPEC / 1 STREAM / 2 DGRAM
//! len          2 bytes  big-endian length of what follows
//! addresses   INET: src 4, dst 4, src port 2, dst port 2 (12 bytes)
//!             INET6: src 16, dst 16, src port 2, dst port 2 (36 bytes)
//!             UNIX: src 108, dst 108
//! TLVs        the rest of `len`, ignored here
//! ```
//!
//! "The receiver MUST be configured to only receive the protocol described in
//! this specification and MUST not try to guess whether the protocol header
//! is present or not" — the server reads it only from peers in
//! `trusted_proxies`, and there it may be absent: no HTTP request or TLS
//! record starts with the signature (an HTTP head cannot start with
//! `\r\n\r\n\0`, a TLS record starts with a content type byte of 20 to 24),
//! so its presence is decided by the signature alone, never guessed.
//!
//! Version 1 (the text form `PROXY TCP4 ...`) is not accepted.
//!
//! No IO. Never panics on any input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The signature plus version/command, family/protocol and length.
pub const FIXED_BYTES: usize = 16;

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a PROXY header: the bytes are the client's own (HTTP or TLS).
    Absent,
    /// A header, or its beginning: at least `needed` bytes in all are needed
    /// to know more.
    Incomplete { needed: usize },
    /// A complete header of `len` bytes. `source` is the client's address;
    /// `None` for a `LOCAL` command (the proxy's own connection, such as a
    /// health check) or an address family without one (UNSPEC, UNIX): the
    /// connection is then the proxy's own.
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// Why a header is malformed. The connection is closed without a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// Version nibble other than 2.
    Version,
    /// Command nibble other than LOCAL (0) or PROXY (1).
    Command,
    /// Address family other than UNSPEC, INET, INET6 or UNIX, or a transport
    /// protocol other than UNSPEC or STREAM (HTTP runs over a stream).
    Family,
    /// `len` too short for the addresses of the family.
    Truncated,
    /// The header is longer than the caller accepts.
    TooLong,
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyHeaderError::Version => "PROXY header: not version 2",
            ProxyHeaderError::Command => "PROXY header: unknown command",
            ProxyHeaderError::Family => "PROXY header: unsupported address family or protocol",
            ProxyHeaderError::Truncated => "PROXY header: too short for its addresses",
            ProxyHeaderError::TooLong => "PROXY header: longer than accepted",
        })
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Reads a version 2 header at the start of `bytes`, accepting headers of at
/// most `len_max` bytes in all (at least [`FIXED_BYTES`]).
///
/// Every strict prefix of a valid header is `Incomplete`; a prefix of the
/// signature is `Incomplete { needed: 16 }`; anything that is not a prefix of
/// the signature is `Absent`.
pub fn parse(bytes: &[u8], len_max: usize) -> Result<Parsed, ProxyHeaderError> {
    let seen = bytes.len().min(SIGNATURE.len());
    if bytes[..seen] != SIGNATURE[..seen] {
        return Ok(Parsed::Absent);
    }
    if bytes.len() < FIXED_BYTES {
        return Ok(Parsed::Incomplete {
            needed: FIXED_BYTES,
        });
    }
    let (version, command) = (bytes[12] >> 4, bytes[12] & 0x0f);
    let (family, protocol) = (bytes[13] >> 4, bytes[13] & 0x0f);
    let len = FIXED_BYTES + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if version != 2 {
        return Err(ProxyHeaderError::Version);
    }
    if command > 1 {
        return Err(ProxyHeaderError::Command);
    }
    if family > 3 || protocol > 1 {
        return Err(ProxyHeaderError::Family);
    }
    let addresses_len = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if len < FIXED_BYTES + addresses_len {
        return Err(ProxyHeaderError::Truncated);
    }
    if len > len_max.max(FIXED_BYTES) {
        return Err(ProxyHeaderError::TooLong);
    }
    if bytes.len() < len {
        return Ok(Parsed::Incomplete { needed: len });
    }
    let source = match (command, family) {
        (1, 1) => Some(source_v4(&bytes[FIXED_BYTES..])),
        (1, 2) => Some(source_v6(&bytes[FIXED_BYTES..])),
        _ => None,
    };
    Ok(Parsed::Header { len, source })
}

fn source_v4(a: &[u8]) -> SocketAddr {
    let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
    SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([a[8], a[9]]))
}

fn source_v6(a: &[u8]) -> SocketAddr {
    let mut octets = [0; 16];
    octets.copy_from_slice(&a[..16]);
    let ip = Ipv6Addr::from(octets);
    SocketAddr::new(IpAddr::V6(ip), u16::from_be_bytes([a[32], a[33]]))
}

/// Encodes a `PROXY` header for `source` → `destination` (same family) with
/// no TLVs. For tests and tools that play the proxy.
pub fn encode(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}
