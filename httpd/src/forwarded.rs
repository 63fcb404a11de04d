//! Who the client is behind a trusted reverse proxy: address ranges
//! ([`Cidr`]) and the `X-Forwarded-For` rule.
//!
//! `X-Forwarded-For` is not standardised; the de-facto form is a
//! comma-separated list of addresses, each proxy appending the address it
//! received the request from, so the right end is the most trustworthy
//! (RFC 7239, section 5.2 describes the same for `Forwarded: for=`). Only a
//! trusted peer's header is read at all, and from it only the right-most
//! address that is not itself a trusted proxy: anything to its left was
//! written by the client and may be forged.
//!
//! No IO. Never panics on any input.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address range, `ADDRESS/PREFIX` (`10.0.0.0/8`, `2001:db8::/32`) or a
/// single address (`192.0.2.7`, meaning `/32` or `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a [`Cidr`] did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrError {
    Address,
    Prefix,
    /// Bits are set past the prefix (`10.0.0.1/8`): probably a typo for a
    /// single address or a different range.
    HostBits,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CidrError::Address => "not an IP address",
            CidrError::Prefix => "prefix length out of range (0-32 for IPv4, 0-128 for IPv6)",
            CidrError::HostBits => "address has bits set past the prefix length",
        })
    }
}

impl std::error::Error for CidrError {}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

impl Cidr {
    /// Whether `ip` is in the range. IPv4-mapped IPv6 addresses are judged as
    /// their IPv4 address, so `10.0.0.0/8` covers `::ffff:10.1.2.3`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, width) = bits(self.network);
        let (addr, addr_width) = bits(ip.to_canonical());
        width == addr_width && (net ^ addr) & mask(self.prefix) == 0
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network = IpAddr::from_str(addr.trim())
            .map_err(|_| CidrError::Address)?
            .to_canonical();
        let width = bits(network).1;
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or(CidrError::Prefix)?,
        };
        // Prefixes of an IPv4 range count within its 32 bits, placed at the top.
        if bits(network).0 & !mask(prefix) != 0 {
            return Err(CidrError::HostBits);
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether any range in `trusted` contains `ip`.
pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// One `X-Forwarded-For` element: an address, optionally with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`, `[2001:db8::1]`), as some proxies
/// write it.
fn parse_element(element: &str) -> Option<IpAddr> {
    let element = element.trim();
    if let Ok(ip) = element.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = element.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']')?;
        let port_ok = tail.is_empty()
            || tail
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok.then(|| ip.parse::<IpAddr>().ok()).flatten();
    }
    let (ip, port) = element.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The client of a request that `peer` (which MUST be trusted) forwarded with
/// the given `X-Forwarded-For` field values, in received order.
///
/// Walks the addresses right to left, skipping trusted proxies; the first
/// untrusted one is the client. When every address is trusted, the
/// left-most is. When an element is not an address (garbage, `unknown`), the
/// walk stops there and the trusted hop to its right is the client: nothing
/// it passed on can be believed, and its own address is the best known. No
/// field at all: the peer itself. The result is canonical (an IPv4-mapped
/// address becomes IPv4).
pub fn forwarded_client<'a>(
    values: impl IntoIterator<Item = &'a str>,
    peer: IpAddr,
    trusted: &[Cidr],
) -> IpAddr {
    let values: Vec<&str> = values.into_iter().collect();
    let mut client = peer.to_canonical();
    for element in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        match parse_element(element) {
            Some(ip) if is_trusted(trusted, ip) => client = ip.to_canonical(),
            Some(ip) => return ip.to_canonical(),
            None => return client,
        }
    }
    client
}
