//! Which addresses the proxy may talk to: the one SSRF rule for IMAP hosts and push
//! endpoints, and the normal form of a host name.
//!
//! Read first: the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and
//! its updates), RFC 6052 (NAT64 prefixes), RFC 3056 (6to4), RFC 4380 (Teredo), RFC 4291
//! section 2.5.5 (IPv4-compatible and IPv4-mapped addresses).
//!
//! A registration names two kinds of destination, and both must be globally reachable
//! addresses unless the operator allows private ones. [`is_public`] is the only function
//! that decides it; every caller resolves names first and judges each address, and judges
//! the address it is about to connect to again, before connect().
//!
//! Promises: no function here panics, allocates beyond its result, or does IO.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True if `ip` may be reached: a globally reachable unicast address.
///
/// IPv4: every block of the IANA IPv4 special-purpose registry whose "Globally Reachable"
/// is not `True` is refused, and so are multicast (224.0.0.0/4) and the deprecated 6to4
/// relay anycast block 192.88.99.0/24 (this proxy never talks through 6to4).
///
/// IPv6: only global unicast (2000::/3) may pass, less the registry's blocks that are not
/// globally reachable. Two embeddings are judged by the IPv4 address inside, because a
/// connect() to them reaches that IPv4 address: IPv4-mapped `::ffff:0:0/96` (Linux
/// connects `::ffff:0.0.0.0` to the local host) and the well-known NAT64 prefix
/// `64:ff9b::/96`. IPv4-compatible `::/96`, 6to4 `2002::/16`, Teredo `2001::/32` and the
/// local-use NAT64 prefix `64:ff9b:1::/48` are refused outright: what they reach depends
/// on relays and translators we cannot judge.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// An IPv4 block: network address (as `u32`) and prefix length.
type Block4 = (u32, u8);

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// IPv4 blocks never reached. Registry blocks whose "Globally Reachable" is `False` or
/// `N/A`, plus multicast. Exceptions inside them are in [`V4_GLOBAL_EXCEPTIONS`].
const V4_REFUSED: &[Block4] = &[
    (v4(0, 0, 0, 0), 8),       // "This network", RFC 791; 0.0.0.0 connects locally.
    (v4(10, 0, 0, 0), 8),      // Private-Use, RFC 1918.
    (v4(100, 64, 0, 0), 10),   // Shared Address Space (CGN), RFC 6598.
    (v4(127, 0, 0, 0), 8),     // Loopback, RFC 1122.
    (v4(169, 254, 0, 0), 16),  // Link Local, RFC 3927.
    (v4(172, 16, 0, 0), 12),   // Private-Use, RFC 1918.
    (v4(192, 0, 0, 0), 24),    // IETF Protocol Assignments, RFC 6890.
    (v4(192, 0, 2, 0), 24),    // Documentation (TEST-NET-1), RFC 5737.
    (v4(192, 88, 99, 0), 24),  // Deprecated 6to4 Relay Anycast, RFC 7526.
    (v4(192, 168, 0, 0), 16),  // Private-Use, RFC 1918.
    (v4(198, 18, 0, 0), 15),   // Benchmarking, RFC 2544.
    (v4(198, 51, 100, 0), 24), // Documentation (TEST-NET-2), RFC 5737.
    (v4(203, 0, 113, 0), 24),  // Documentation (TEST-NET-3), RFC 5737.
    (v4(224, 0, 0, 0), 4),     // Multicast, RFC 5771: never a unicast peer.
    (v4(240, 0, 0, 0), 4),     // Reserved, RFC 1112; includes 255.255.255.255.
];

/// Addresses inside [`V4_REFUSED`] that the registry marks globally reachable.
const V4_GLOBAL_EXCEPTIONS: &[Block4] = &[
    (v4(192, 0, 0, 9), 32),  // Port Control Protocol Anycast, RFC 7723.
    (v4(192, 0, 0, 10), 32), // Traversal Using Relays around NAT Anycast, RFC 8155.
];

fn in_block4(ip: u32, (net, len): Block4) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    ip & mask == net
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let ip = u32::from(ip);
    let refused = V4_REFUSED.iter().any(|&b| in_block4(ip, b));
    !refused || V4_GLOBAL_EXCEPTIONS.iter().any(|&b| in_block4(ip, b))
}

/// An IPv6 block: network address (as `u128`) and prefix length.
type Block6 = (u128, u8);

const fn v6(segments: [u16; 8]) -> u128 {
    let mut out = 0u128;
    let mut i = 0;
    while i < 8 {
        out = (out << 16) | segments[i] as u128;
        i += 1;
    }
    out
}

/// Global unicast, 2000::/3 (RFC 4291): IANA has allocated nothing else for unicast, so
/// everything outside it (unspecified, loopback, `::/96`, discard-only 100::/64, the dummy
/// prefix 100:0:0:1::/64, SRv6 SIDs 5f00::/16, unique local fc00::/7, link-local
/// fe80::/10, site-local fec0::/10, multicast ff00::/8, ...) is refused with it.
const V6_GLOBAL_UNICAST: Block6 = (v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3);

/// IPv4-mapped, RFC 4291: judged by the IPv4 address inside.
const V6_MAPPED: Block6 = (v6([0, 0, 0, 0, 0, 0xffff, 0, 0]), 96);
/// Well-known NAT64 prefix, RFC 6052: judged by the IPv4 address inside.
const V6_NAT64: Block6 = (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96);

/// Blocks inside 2000::/3 never reached: the registry's `False` and `N/A` entries.
/// Exceptions inside them are in [`V6_GLOBAL_EXCEPTIONS`].
const V6_REFUSED: &[Block6] = &[
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 23), // IETF Protocol Assignments, RFC 2928.
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32), // Documentation, RFC 3849.
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16), // 6to4, RFC 3056: refused outright.
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]), 20), // Documentation, RFC 9637.
];

/// Blocks inside [`V6_REFUSED`] that the registry marks globally reachable. Teredo
/// (2001::/32) is not among them: it stays refused.
const V6_GLOBAL_EXCEPTIONS: &[Block6] = &[
    (v6([0x2001, 1, 0, 0, 0, 0, 0, 1]), 128), // PCP Anycast, RFC 7723.
    (v6([0x2001, 1, 0, 0, 0, 0, 0, 2]), 128), // TURN Anycast, RFC 8155.
    (v6([0x2001, 1, 0, 0, 0, 0, 0, 3]), 128), // DNS-SD SRP Anycast, RFC 9665.
    (v6([0x2001, 3, 0, 0, 0, 0, 0, 0]), 32),  // AMT, RFC 7450.
    (v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0]), 48), // AS112-v6, RFC 7535.
    (v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0]), 28), // ORCHIDv2, RFC 7343.
    (v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0]), 28), // Drone Remote ID (DRIP), RFC 9374.
];

fn in_block6(ip: u128, (net, len): Block6) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    ip & mask == net
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    if in_block6(bits, V6_MAPPED) || in_block6(bits, V6_NAT64) {
        // The low 32 bits are the IPv4 address for both (RFC 6052 with a /96 prefix).
        return is_public_v4(Ipv4Addr::from(bits as u32));
    }
    if !in_block6(bits, V6_GLOBAL_UNICAST) {
        return false;
    }
    let refused = V6_REFUSED.iter().any(|&b| in_block6(bits, b));
    !refused || V6_GLOBAL_EXCEPTIONS.iter().any(|&b| in_block6(bits, b))
}

/// The longest host name, RFC 1035 section 2.3.4 (255 octets on the wire, 253 as text).
pub const HOST_LEN_MAX: usize = 253;
/// The longest label, RFC 1035 section 2.3.4.
pub const LABEL_LEN_MAX: usize = 63;

/// Why a host name was refused by [`normalize_host`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// Nothing left once one trailing dot is removed.
    Empty,
    /// Longer than [`HOST_LEN_MAX`] or with a label longer than [`LABEL_LEN_MAX`].
    TooLong,
    /// A character outside letters, digits, `-`, `_` and `.` (names must come as
    /// A-labels, IPv6 literals without a zone).
    BadCharacter,
    /// An empty label, or a label that starts or ends with `-`.
    BadLabel,
    /// The last label starts with a digit but the whole is not an IPv4 address in any
    /// spelling `inet_aton` accepts. No top-level domain starts with a digit (RFC 3696
    /// section 2), so such a name is either an address or nonsense.
    BadNumeric,
    /// Brackets or colons that do not make an IPv6 address.
    BadIpv6,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostError::Empty => "empty host name",
            HostError::TooLong => "host name too long",
            HostError::BadCharacter => "host name has a character outside a-z, 0-9, - and _",
            HostError::BadLabel => "host name has an empty label or one starting or ending with -",
            HostError::BadNumeric => "host name looks numeric but is not an IPv4 address",
            HostError::BadIpv6 => "not an IPv6 address",
        })
    }
}

impl std::error::Error for HostError {}

/// The normal form of a host name, on which the destination rule, pacing, per-host caps
/// and deduplication all key.
///
/// Names are lower-cased and lose one trailing dot. An address literal in any spelling
/// that `getaddrinfo` or `inet_aton` accepts (`127.1`, `2130706433`, `0x7f.1`,
/// `0177.0.0.1`, `[::1]`, `::FFFF:127.0.0.1`) is returned in its canonical text
/// (`127.0.0.1`, `::1`, `::ffff:127.0.0.1`; IPv6 without brackets), so that
/// `result.parse::<IpAddr>()` finds it and [`is_public`] can judge it. Never panics.
pub fn normalize_host(host: &str) -> Result<String, HostError> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(HostError::BadIpv6)?;
        let ip: Ipv6Addr = inner.parse().map_err(|_| HostError::BadIpv6)?;
        return Ok(ip.to_string());
    }
    if host.contains(':') {
        let ip: Ipv6Addr = host.parse().map_err(|_| HostError::BadIpv6)?;
        return Ok(ip.to_string());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > HOST_LEN_MAX {
        return Err(HostError::TooLong);
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if !name.chars().all(ok_char) {
        return Err(HostError::BadCharacter);
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.starts_with(|c: char| c.is_ascii_digit()) {
        let ip = parse_inet_aton(name).ok_or(HostError::BadNumeric)?;
        return Ok(ip.to_string());
    }
    for label in name.split('.') {
        if label.len() > LABEL_LEN_MAX {
            return Err(HostError::TooLong);
        }
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::BadLabel);
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// An IPv4 address in the classic BSD `inet_aton` syntax, which glibc's `getaddrinfo`
/// also accepts: one to four parts separated by dots, each decimal, octal (leading `0`)
/// or hexadecimal (leading `0x`); the last part fills the remaining bytes (`a`, `a.b` with
/// a 24-bit `b`, `a.b.c` with a 16-bit `c`, `a.b.c.d`). Stricter than glibc in one
/// corner: a `0x` with no digits is refused.
fn parse_inet_aton(text: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u64; 4];
    let mut count = 0;
    for part in text.split('.') {
        if count == parts.len() {
            return None;
        }
        parts[count] = parse_aton_part(part)?;
        count += 1;
    }
    let (head, last) = (&parts[..count - 1], parts[count - 1]);
    if head.iter().any(|&p| p > 0xff) {
        return None;
    }
    let last_bits = 32 - 8 * head.len() as u32;
    if last >= 1u64 << last_bits {
        return None;
    }
    let high = head
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, &p)| acc | p << (24 - 8 * i as u32));
    u32::try_from(high | last).ok().map(Ipv4Addr::from)
}

/// One part of an `inet_aton` address, at most 32 bits wide.
fn parse_aton_part(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|&v| v <= u64::from(u32::MAX))
}
