//! Behind a reverse proxy, from the outside: the PROXY protocol v2 parser
//! (`httpd::proxy_header`), CIDR ranges and the `X-Forwarded-For` rule
//! (`httpd::forwarded`), and a server that takes a trusted peer's word on the client and
//! nobody else's.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use httpd::forwarded::{forwarded_client, Cidr, CidrError};
use httpd::proxy_header::{self, Parsed, ProxyHeaderError, FIXED_BYTES, SIGNATURE};
use httpd::{Config, Request, Responder, Response, Server};

const MAX: usize = httpd::limits::PROXY_HEADER_BYTES_MAX;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_v4_and_a_v6_header_give_the_source() {
    let header = proxy_header::encode(sa("192.0.2.7:40000"), sa("198.51.100.1:443"));
    assert_eq!(header.len(), 28);
    let mut with_http = header.clone();
    with_http.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(
        proxy_header::parse(&with_http, MAX),
        Ok(Parsed::Header {
            len: 28,
            source: Some(sa("192.0.2.7:40000"))
        })
    );
    let header = proxy_header::encode(sa("[2001:db8::7]:1"), sa("[2001:db8::1]:443"));
    assert_eq!(
        proxy_header::parse(&header, MAX),
        Ok(Parsed::Header {
            len: 52,
            source: Some(sa("[2001:db8::7]:1"))
        })
    );
}

#[test]
fn every_strict_prefix_is_incomplete() {
    let header = proxy_header::encode(sa("[2001:db8::7]:1"), sa("[2001:db8::1]:443"));
    for n in 0..header.len() {
        assert!(
            matches!(
                proxy_header::parse(&header[..n], MAX),
                Ok(Parsed::Incomplete { needed }) if needed > n
            ),
            "prefix of {n}"
        );
    }
}

#[test]
fn http_and_tls_bytes_are_no_header() {
    for start in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"\r\nGET / HTTP/1.1\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n",
    ] {
        assert_eq!(proxy_header::parse(start, MAX), Ok(Parsed::Absent));
    }
    // Empty lines alone may still turn into a header: wait for more.
    assert_eq!(
        proxy_header::parse(b"\r\n\r\n", MAX),
        Ok(Parsed::Incomplete {
            needed: FIXED_BYTES
        })
    );
}

/// A header with the given version/command and family/protocol bytes and `len`.
fn raw(ver_cmd: u8, fam: u8, len: u16) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, fam]);
    out.extend_from_slice(&len.to_be_bytes());
    out.resize(FIXED_BYTES + usize::from(len), 0);
    out
}

#[test]
fn malformed_headers_are_refused() {
    use ProxyHeaderError::*;
    for (bytes, error) in [
        (raw(0x11, 0x11, 12), Version),
        (raw(0x31, 0x11, 12), Version),
        (raw(0x22, 0x11, 12), Command),
        (raw(0x21, 0x41, 12), Family),
        (raw(0x21, 0x12, 12), Family),     // DGRAM
        (raw(0x21, 0x11, 11), Truncated),  // INET needs 12
        (raw(0x21, 0x21, 35), Truncated),  // INET6 needs 36
        (raw(0x21, 0x31, 215), Truncated), // UNIX needs 216
        (raw(0x21, 0x11, (MAX - FIXED_BYTES + 1) as u16), TooLong),
    ] {
        assert_eq!(proxy_header::parse(&bytes, MAX), Err(error), "{bytes:02x?}");
        // Refused as soon as the fixed part is in, without waiting for the rest.
        assert_eq!(proxy_header::parse(&bytes[..FIXED_BYTES], MAX), Err(error));
    }
}

#[test]
fn local_unspec_and_unix_headers_name_no_client_and_tlvs_are_skipped() {
    assert_eq!(
        proxy_header::parse(&raw(0x20, 0x00, 0), MAX),
        Ok(Parsed::Header {
            len: 16,
            source: None
        })
    );
    // LOCAL with addresses: they are ignored, as the specification requires.
    assert_eq!(
        proxy_header::parse(&raw(0x20, 0x11, 12), MAX),
        Ok(Parsed::Header {
            len: 28,
            source: None
        })
    );
    assert_eq!(
        proxy_header::parse(&raw(0x21, 0x31, 216), MAX),
        Ok(Parsed::Header {
            len: 232,
            source: None
        })
    );
    // INET with 20 bytes of TLVs after the addresses.
    let mut with_tlvs = raw(0x21, 0x11, 32);
    with_tlvs[16..20].copy_from_slice(&[192, 0, 2, 9]);
    assert_eq!(
        proxy_header::parse(&with_tlvs, MAX),
        Ok(Parsed::Header {
            len: 48,
            source: Some(sa("192.0.2.9:0"))
        })
    );
}

#[test]
fn cidrs_parse_and_match() {
    let c: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(c.contains("10.255.0.1".parse().unwrap()));
    assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!c.contains("11.0.0.0".parse().unwrap()));
    assert!(
        !c.contains("::a00:1".parse().unwrap()),
        "IPv4-compatible is not IPv4"
    );
    let one: Cidr = "192.0.2.7".parse().unwrap();
    assert!(one.contains("192.0.2.7".parse().unwrap()));
    assert!(!one.contains("192.0.2.8".parse().unwrap()));
    let v6: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!v6.contains("2001:db9::1".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("203.0.113.1".parse().unwrap()));
    assert!(!all.contains("::1".parse().unwrap()));
    assert_eq!("10.0.0.1/8".parse::<Cidr>(), Err(CidrError::HostBits));
    assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Prefix));
    assert_eq!("::/129".parse::<Cidr>(), Err(CidrError::Prefix));
    assert_eq!("10.0.0.0/".parse::<Cidr>(), Err(CidrError::Prefix));
    assert_eq!("example.org/8".parse::<Cidr>(), Err(CidrError::Address));
}

#[test]
fn the_client_is_the_right_most_untrusted_address() {
    let trusted: Vec<Cidr> = ["10.0.0.0/8", "2001:db8:ff::/48"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let client = |values: &[&str]| forwarded_client(values.iter().copied(), peer, &trusted);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(client(&[]), peer, "no header: the peer");
    assert_eq!(client(&["203.0.113.5"]), ip("203.0.113.5"));
    // The client forged the left part; the proxy appended the real address.
    assert_eq!(client(&["1.2.3.4, 203.0.113.5"]), ip("203.0.113.5"));
    // Two proxies of ours: skip them.
    assert_eq!(
        client(&["1.2.3.4, 203.0.113.5, 10.9.9.9"]),
        ip("203.0.113.5")
    );
    // Several fields are one list, in order.
    assert_eq!(
        client(&["1.2.3.4", "203.0.113.5 , 10.9.9.9"]),
        ip("203.0.113.5")
    );
    // Ports and brackets, as some proxies write them.
    assert_eq!(client(&["203.0.113.5:4711"]), ip("203.0.113.5"));
    assert_eq!(client(&["[2001:db8::5]:4711"]), ip("2001:db8::5"));
    assert_eq!(client(&["[2001:db8::5]"]), ip("2001:db8::5"));
    assert_eq!(client(&["::ffff:203.0.113.5"]), ip("203.0.113.5"));
    // All trusted: the left-most.
    assert_eq!(client(&["10.1.1.1, 2001:db8:ff::1"]), ip("10.1.1.1"));
    // Garbage stops the walk at the trusted hop to its right.
    assert_eq!(client(&["203.0.113.5, unknown"]), peer);
    assert_eq!(client(&["203.0.113.5, garbage, 10.7.7.7"]), ip("10.7.7.7"));
    assert_eq!(client(&[""]), peer);
}

/// Echoes who the server thinks the client is.
fn client_echo(request: Request, responder: &Responder) {
    let body = format!("{} {}", request.peer.ip(), request.client);
    responder.respond(request.id, Response::text(200, body));
}

fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n";

fn with_xff(xff: &str) -> Vec<u8> {
    let mut out = GET_CLOSE.to_vec();
    out.extend_from_slice(format!("X-Forwarded-For: {xff}\r\n\r\n").as_bytes());
    out
}

#[test]
fn only_a_trusted_peer_names_the_client() {
    let start = |trusted: &[&str]| {
        let config = Config {
            trusted_proxies: trusted.iter().map(|c| c.parse().unwrap()).collect(),
            ..Config::default()
        };
        let server = Server::bind(sa("127.0.0.1:0"), config).unwrap();
        server.spawn(client_echo).unwrap()
    };
    let trusting = start(&["127.0.0.0/8"]);
    let addr = trusting.local_addr();
    let reply = exchange(addr, &with_xff("1.2.3.4, 203.0.113.5"));
    assert!(reply.ends_with("127.0.0.1 203.0.113.5"), "{reply}");
    let mut proxied = proxy_header::encode(sa("198.51.100.7:5555"), addr);
    proxied.extend_from_slice(&with_xff("203.0.113.5"));
    let reply = exchange(addr, &proxied);
    assert!(
        reply.ends_with("127.0.0.1 198.51.100.7"),
        "PROXY wins, XFF ignored: {reply}"
    );
    // A malformed header closes the connection without a word.
    let mut bad = raw(0x21, 0x11, 11);
    bad.extend_from_slice(&with_xff("203.0.113.5"));
    assert_eq!(exchange(addr, &bad), "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while trusting.stats().proxy_headers_malformed != 1 {
        assert!(Instant::now() < deadline, "{:?}", trusting.stats());
        std::thread::sleep(Duration::from_millis(5));
    }

    let untrusting = start(&["10.0.0.0/8"]);
    let addr = untrusting.local_addr();
    let reply = exchange(addr, &with_xff("203.0.113.5"));
    assert!(reply.ends_with("127.0.0.1 127.0.0.1"), "{reply}");
    let mut proxied = proxy_header::encode(sa("198.51.100.7:5555"), addr);
    proxied.extend_from_slice(&with_xff("203.0.113.5"));
    let reply = exchange(addr, &proxied);
    assert!(
        reply.starts_with("HTTP/1.1 400 "),
        "an untrusted PROXY header is garbage: {reply}"
    );
}
