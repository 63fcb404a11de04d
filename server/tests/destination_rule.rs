//! The destination rule (`server::destination`) tested from the outside: every
//! block of the IANA special-purpose registries at its edges, the IPv4 embeddings in IPv6
//! as a property, and the normal form of host names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use server::destination::{is_public, normalize_host, HostError};

/// One registry block: its CIDR, the verdict for its first and last address, and the
/// verdicts for the address just before it and just after it (`None` where there is none).
struct Row {
    cidr: &'static str,
    inside: bool,
    before: Option<bool>,
    after: Option<bool>,
}

const fn row(cidr: &'static str, inside: bool, before: Option<bool>, after: Option<bool>) -> Row {
    Row {
        cidr,
        inside,
        before,
        after,
    }
}

const Y: Option<bool> = Some(true);
const N: Option<bool> = Some(false);

/// IANA IPv4 Special-Purpose Address Registry (every entry), plus multicast.
const V4_ROWS: &[Row] = &[
    row("0.0.0.0/8", false, None, Y),
    row("0.0.0.0/32", false, None, N),
    row("10.0.0.0/8", false, Y, Y),
    row("100.64.0.0/10", false, Y, Y),
    row("127.0.0.0/8", false, Y, Y),
    row("169.254.0.0/16", false, Y, Y),
    row("172.16.0.0/12", false, Y, Y),
    row("192.0.0.0/24", false, Y, Y),
    row("192.0.0.0/29", false, Y, N),
    row("192.0.0.8/32", false, N, Y),
    // PCP and TURN anycast: globally reachable exceptions inside 192.0.0.0/24.
    row("192.0.0.9/32", true, N, Y),
    row("192.0.0.10/32", true, Y, N),
    row("192.0.0.170/32", false, N, N),
    row("192.0.0.171/32", false, N, N),
    row("192.0.2.0/24", false, Y, Y),
    row("192.31.196.0/24", true, Y, Y),
    row("192.52.193.0/24", true, Y, Y),
    // Deprecated 6to4 relay anycast, and the 6a44 relay inside it: refused on purpose.
    row("192.88.99.0/24", false, Y, Y),
    row("192.88.99.2/32", false, N, N),
    row("192.168.0.0/16", false, Y, Y),
    row("192.175.48.0/24", true, Y, Y),
    row("198.18.0.0/15", false, Y, Y),
    row("198.51.100.0/24", false, Y, Y),
    row("203.0.113.0/24", false, Y, Y),
    row("224.0.0.0/4", false, Y, N),
    row("240.0.0.0/4", false, N, None),
    row("255.255.255.255/32", false, N, None),
];

/// IANA IPv6 Special-Purpose Address Registry (every entry), plus the blocks outside
/// global unicast that the rule refuses with it.
const V6_ROWS: &[Row] = &[
    row("::/128", false, None, N),
    row("::1/128", false, N, N),
    // IPv4-compatible: refused outright.
    row("::/96", false, None, N),
    // IPv4-mapped: judged by the IPv4 inside, which is 0.0.0.0 and 255.255.255.255 at the
    // edges (both refused).
    row("::ffff:0:0/96", false, N, N),
    // NAT64 well-known prefix: the same.
    row("64:ff9b::/96", false, N, N),
    row("64:ff9b:1::/48", false, N, N),
    row("100::/64", false, N, N),
    row("100:0:0:1::/64", false, N, N),
    row("2000::/3", true, N, N),
    row("2001::/23", false, Y, Y),
    row("2001::/32", false, Y, N),
    row("2001:1::1/128", true, N, Y),
    row("2001:1::2/128", true, Y, Y),
    row("2001:1::3/128", true, Y, N),
    row("2001:2::/48", false, N, N),
    row("2001:3::/32", true, N, N),
    row("2001:4:112::/48", true, N, N),
    row("2001:10::/28", false, N, Y),
    row("2001:20::/28", true, N, Y),
    row("2001:30::/28", true, Y, N),
    row("2001:db8::/32", false, Y, Y),
    row("2002::/16", false, Y, Y),
    row("2620:4f:8000::/48", true, Y, Y),
    row("3fff::/20", false, Y, Y),
    row("5f00::/16", false, N, N),
    row("fc00::/7", false, N, N),
    row("fe80::/10", false, N, N),
    row("fec0::/10", false, N, N),
    row("ff00::/8", false, N, None),
];

fn split(cidr: &str) -> (&str, u32) {
    let (net, len) = cidr.split_once('/').expect("a CIDR");
    (net, len.parse().expect("a prefix length"))
}

/// First and last address of a block, as integers.
fn range_v4(cidr: &str) -> (u32, u32) {
    let (net, len) = split(cidr);
    let first = u32::from(net.parse::<Ipv4Addr>().expect("IPv4"));
    let host = u32::MAX.checked_shr(len).unwrap_or(0);
    (first, first | host)
}

fn range_v6(cidr: &str) -> (u128, u128) {
    let (net, len) = split(cidr);
    let first = u128::from(net.parse::<Ipv6Addr>().expect("IPv6"));
    let host = u128::MAX.checked_shr(len).unwrap_or(0);
    (first, first | host)
}

fn check(row: &Row, first: IpAddr, last: IpAddr, before: Option<IpAddr>, after: Option<IpAddr>) {
    let verdict = |ip: IpAddr, want: bool, which: &str| {
        assert_eq!(is_public(ip), want, "{which} of {}: {ip}", row.cidr);
    };
    verdict(first, row.inside, "first");
    verdict(last, row.inside, "last");
    match (before, row.before) {
        (Some(ip), Some(want)) => verdict(ip, want, "one before"),
        (None, None) => {}
        _ => panic!("{}: the table disagrees on a neighbour before", row.cidr),
    }
    match (after, row.after) {
        (Some(ip), Some(want)) => verdict(ip, want, "one past"),
        (None, None) => {}
        _ => panic!("{}: the table disagrees on a neighbour after", row.cidr),
    }
}

#[test]
fn every_ipv4_registry_block_at_its_edges() {
    for row in V4_ROWS {
        let (first, last) = range_v4(row.cidr);
        let ip = |n: u32| IpAddr::V4(Ipv4Addr::from(n));
        let before = first.checked_sub(1).map(ip);
        let after = last.checked_add(1).map(ip);
        check(row, ip(first), ip(last), before, after);
    }
}

#[test]
fn every_ipv6_registry_block_at_its_edges() {
    for row in V6_ROWS {
        let (first, last) = range_v6(row.cidr);
        let ip = |n: u128| IpAddr::V6(Ipv6Addr::from(n));
        let before = first.checked_sub(1).map(ip);
        let after = last.checked_add(1).map(ip);
        check(row, ip(first), ip(last), before, after);
    }
}

#[test]
fn the_unspecified_address_is_refused_in_every_embedding() {
    // Linux connects 0.0.0.0 (and ::ffff:0.0.0.0) to the local host.
    for ip in [
        "0.0.0.0",
        "::ffff:0.0.0.0",
        "::ffff:0.1.2.3",
        "64:ff9b::",
        "::",
        "2002::",
    ] {
        assert!(!is_public(ip.parse().unwrap()), "{ip}");
    }
}

/// The IPv4 embeddings in IPv6. `exact` ones reach exactly the IPv4 inside; the others
/// are refused outright, so for them only the implication holds.
fn embeddings(a: Ipv4Addr, rest: u64) -> Vec<(&'static str, bool, Ipv6Addr)> {
    let a32 = u128::from(u32::from(a));
    let o = a.octets();
    let teredo_client = u128::from(!u32::from(a));
    vec![
        ("mapped", true, a.to_ipv6_mapped()),
        ("nat64", true, Ipv6Addr::from((0x64_ff9b_u128 << 96) | a32)),
        ("compatible", false, Ipv6Addr::from(a32)),
        (
            "6to4",
            false,
            Ipv6Addr::from((0x2002_u128 << 112) | (a32 << 80) | u128::from(rest as u16)),
        ),
        (
            "teredo",
            false,
            Ipv6Addr::from((0x2001_0000_u128 << 96) | (u128::from(rest) << 32) | teredo_client),
        ),
        (
            "nat64-local",
            false,
            Ipv6Addr::new(
                0x64,
                0xff9b,
                1,
                rest as u16,
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([o[2], o[3]]),
                0,
                0,
            ),
        ),
    ]
}

/// IPv4 addresses biased toward the registry blocks, so the edges are sampled often.
fn interesting_v4() -> impl Strategy<Value = Ipv4Addr> {
    let edges: Vec<u32> = V4_ROWS
        .iter()
        .flat_map(|r| {
            let (first, last) = range_v4(r.cidr);
            [first.wrapping_sub(1), first, last, last.wrapping_add(1)]
        })
        .collect();
    prop_oneof![
        any::<u32>(),
        proptest::sample::select(edges),
        (0..V4_ROWS.len(), any::<u32>()).prop_map(|(i, n)| {
            let (first, last) = range_v4(V4_ROWS[i].cidr);
            first | (n & (last - first))
        }),
    ]
    .prop_map(Ipv4Addr::from)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn an_embedding_is_never_more_allowed_than_the_address_inside(
        a in interesting_v4(),
        rest in any::<u64>(),
    ) {
        let inner = is_public(IpAddr::V4(a));
        for (name, exact, e) in embeddings(a, rest) {
            let outer = is_public(IpAddr::V6(e));
            prop_assert!(!outer || inner, "{name} {e} allowed but {a} is not");
            if exact {
                prop_assert_eq!(outer, inner, "{} {} judged unlike {}", name, e, a);
            } else {
                prop_assert!(!outer, "{name} {e} must be refused outright");
            }
        }
    }
}

#[test]
fn names_are_lower_cased_and_lose_one_trailing_dot() {
    assert_eq!(
        normalize_host("IMAP.Example.COM").unwrap(),
        "imap.example.com"
    );
    assert_eq!(
        normalize_host("imap.example.com.").unwrap(),
        "imap.example.com"
    );
    assert_eq!(normalize_host("LOCALHOST.").unwrap(), "localhost");
    assert_eq!(
        normalize_host("mail_1.example-x.org").unwrap(),
        "mail_1.example-x.org"
    );
}

#[test]
fn every_spelling_of_an_address_becomes_its_canonical_text() {
    for (spelling, canonical) in [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("10.0x10.0377.1", "10.16.255.1"),
        ("192.168.65535", "192.168.255.255"),
        ("11.16777215", "11.255.255.255"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::FFFF:127.0.0.1]", "::ffff:127.0.0.1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("::127.0.0.1", "::7f00:1"),
        ("64:FF9B::7F00:1", "64:ff9b::7f00:1"),
    ] {
        assert_eq!(
            normalize_host(spelling).as_deref(),
            Ok(canonical),
            "{spelling}"
        );
        let ip: IpAddr = canonical.parse().unwrap();
        assert_eq!(ip.to_string(), canonical, "{spelling}: canonical text");
    }
}

#[test]
fn nonsense_is_refused_with_its_reason() {
    let long_label = format!("{}.example", "a".repeat(64));
    let long_name = format!("{}.example", "abcdefghi.".repeat(25));
    for (host, error) in [
        ("", HostError::Empty),
        (".", HostError::Empty),
        ("a..b", HostError::BadLabel),
        (".example.com", HostError::BadLabel),
        ("example.com..", HostError::BadLabel),
        ("-x.example", HostError::BadLabel),
        ("x-.example", HostError::BadLabel),
        ("exa mple.com", HostError::BadCharacter),
        ("exämple.com", HostError::BadCharacter),
        ("example.com/x", HostError::BadCharacter),
        ("example.com%00", HostError::BadCharacter),
        (long_label.as_str(), HostError::TooLong),
        (long_name.as_str(), HostError::TooLong),
        ("256.1", HostError::BadNumeric),
        ("1.2.3.256", HostError::BadNumeric),
        ("1.2.3.4.5", HostError::BadNumeric),
        ("1.2.65536", HostError::BadNumeric),
        ("08.1.1.1", HostError::BadNumeric),
        ("0x.1", HostError::BadNumeric),
        ("4294967296", HostError::BadNumeric),
        ("example.123", HostError::BadNumeric),
        ("[::1", HostError::BadIpv6),
        ("[127.0.0.1]", HostError::BadIpv6),
        ("::1%lo", HostError::BadIpv6),
        ("fe80::1%eth0", HostError::BadIpv6),
        (":::", HostError::BadIpv6),
        ("example.com:993", HostError::BadIpv6),
    ] {
        assert_eq!(normalize_host(host), Err(error), "{host:?}");
    }
}

#[test]
fn the_longest_name_passes() {
    let label = "a".repeat(63);
    let name = format!("{label}.{label}.{label}.{}", "b".repeat(61));
    assert_eq!(name.len(), 253);
    assert_eq!(normalize_host(&name).unwrap(), name);
    assert_eq!(normalize_host(&format!("{name}.")).unwrap(), name);
    assert_eq!(normalize_host(&format!("{name}b")), Err(HostError::TooLong));
}

/// The samples the rule had before the registry tables, kept. One verdict changed on
/// purpose: 6to4 (`2002::/16`) is now refused outright, whatever IPv4 it carries.
#[test]
fn earlier_samples_keep_their_verdicts() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "240.0.0.1",
        "::",
        "::1",
        "fc00::1",
        "fd12::1",
        "fe80::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b:1::a00:1",
        "2002:7f00:1::",
        "2002:c0a8:101::1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "2002:808:808::1",
    ] {
        assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
    }
    for ip in [
        "1.1.1.1",
        "8.8.8.8",
        "100.63.255.255",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700::1",
        "2a00:1450:4001::1",
        "::ffff:1.1.1.1",
        "64:ff9b::808:808",
        "11.0.0.1",
        "2a00:1::1",
    ] {
        assert!(is_public(ip.parse().unwrap()), "{ip} must pass");
    }
}
