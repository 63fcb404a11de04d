//! The connection admission rule (`httpd::admission`), from the outside: the per-client
//! cap, the total cap with eviction of the longest idle connection, IPv6 /64 keys, and
//! attribution by a trusted proxy.

use std::net::IpAddr;

use httpd::admission::{Admission, Attribution, ClientKey, Decision, Refusal};

fn key(ip: &str) -> ClientKey {
    ClientKey::of(ip.parse::<IpAddr>().unwrap())
}

/// Opens `slot` for `client` after checking that it is admitted outright.
fn open(table: &mut Admission, slot: usize, client: Option<ClientKey>) {
    assert_eq!(table.decide(client), Decision::Admit, "slot {slot}");
    table.handle_opened(slot, client);
}

#[test]
fn one_past_the_per_client_cap_is_refused_even_with_room() {
    let mut table = Admission::new(100, 3);
    let a = key("192.0.2.1");
    for slot in 0..3 {
        open(&mut table, slot, Some(a));
    }
    assert_eq!(
        table.decide(Some(a)),
        Decision::Refuse(Refusal::ClientAtCap)
    );
    // Idle connections of its own do not make room: the cap counts connections held.
    table.handle_idle(0, true);
    assert_eq!(
        table.decide(Some(a)),
        Decision::Refuse(Refusal::ClientAtCap)
    );
    // Another client is admitted.
    assert_eq!(table.decide(Some(key("192.0.2.2"))), Decision::Admit);
    // One closes: one more fits.
    table.handle_closed(1);
    assert_eq!(table.decide(Some(a)), Decision::Admit);
    assert_eq!(table.connections_of(a), 2);
}

#[test]
fn at_the_total_the_longest_idle_connection_makes_room() {
    let mut table = Admission::new(3, 3);
    for slot in 0..3 {
        open(
            &mut table,
            slot,
            Some(key(&format!("192.0.2.{}", slot + 1))),
        );
    }
    let newcomer = Some(key("198.51.100.1"));
    assert_eq!(
        table.decide(newcomer),
        Decision::Refuse(Refusal::ServerFull)
    );
    // Slot 2 goes idle first, then 0: 2 is the longest idle.
    table.handle_idle(2, true);
    table.handle_idle(0, true);
    table.handle_idle(2, true); // staying idle keeps its place
    assert_eq!(table.decide(newcomer), Decision::EvictThenAdmit(2));
    // Busy again: it leaves the queue.
    table.handle_idle(2, false);
    assert_eq!(table.decide(newcomer), Decision::EvictThenAdmit(0));
    table.handle_closed(0);
    assert_eq!(table.decide(newcomer), Decision::Admit);
    table.handle_opened(0, newcomer);
    assert_eq!(table.open(), 3);
}

#[test]
fn the_per_client_cap_comes_before_eviction() {
    let mut table = Admission::new(2, 1);
    open(&mut table, 0, Some(key("192.0.2.1")));
    open(&mut table, 1, Some(key("192.0.2.2")));
    table.handle_idle(0, true);
    assert_eq!(
        table.decide(Some(key("192.0.2.2"))),
        Decision::Refuse(Refusal::ClientAtCap)
    );
    assert_eq!(
        table.decide(Some(key("192.0.2.3"))),
        Decision::EvictThenAdmit(0)
    );
}

#[test]
fn ipv6_clients_are_counted_per_64_and_mapped_addresses_as_ipv4() {
    assert_eq!(
        key("2001:db8:1:2::1"),
        key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    );
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    let mut table = Admission::new(100, 2);
    open(&mut table, 0, Some(key("2001:db8:1:2::1")));
    open(&mut table, 1, Some(key("2001:db8:1:2::2")));
    assert_eq!(
        table.decide(Some(key("2001:db8:1:2:abcd::9"))),
        Decision::Refuse(Refusal::ClientAtCap)
    );
    assert_eq!(table.decide(Some(key("2001:db8:1:3::1"))), Decision::Admit);
}

#[test]
fn the_client_table_holds_only_clients_with_open_connections() {
    let mut table = Admission::new(10_000, 5);
    for slot in 0..5000 {
        let ip = IpAddr::from([10, 0, (slot / 256) as u8, (slot % 256) as u8]);
        open(&mut table, slot, Some(ClientKey::of(ip)));
    }
    assert_eq!(table.clients(), 5000);
    for slot in 0..5000 {
        table.handle_closed(slot);
    }
    assert_eq!((table.clients(), table.open()), (0, 0));
    table.handle_closed(7); // unknown: ignored
}

#[test]
fn a_proxy_connection_counts_for_nobody_until_attributed() {
    let mut table = Admission::new(100, 2);
    let a = key("192.0.2.1");
    // Three connections from a trusted proxy: the per-client cap does not apply to them.
    for slot in 0..3 {
        open(&mut table, slot, None);
    }
    assert_eq!(table.connections_of(a), 0);
    // PROXY header: the connection is the client's, like a direct one.
    for slot in 0..2 {
        let decision = table.decide_attribution(slot, a, Attribution::Connection);
        assert_eq!(decision, Decision::Admit);
        table.handle_attributed(slot, a);
    }
    assert_eq!(table.connections_of(a), 2);
    table.handle_idle(0, true);
    assert_eq!(
        table.decide_attribution(2, a, Attribution::Connection),
        Decision::Refuse(Refusal::ClientAtCap),
        "per connection, idle connections of its own do not make room"
    );
    // X-Forwarded-For: per request, its own longest idle connection makes room.
    assert_eq!(
        table.decide_attribution(2, a, Attribution::Request),
        Decision::EvictThenAdmit(0)
    );
    table.handle_idle(0, false);
    assert_eq!(
        table.decide_attribution(2, a, Attribution::Request),
        Decision::Refuse(Refusal::ClientAtCap),
        "with none of its own idle, the request is refused"
    );
    // A connection already counted for the client is admitted again.
    assert_eq!(
        table.decide_attribution(1, a, Attribution::Request),
        Decision::Admit
    );
    // Re-attributed to another client, the count moves.
    let b = key("192.0.2.2");
    table.handle_attributed(1, b);
    assert_eq!((table.connections_of(a), table.connections_of(b)), (1, 1));
    table.handle_closed(1);
    assert_eq!((table.connections_of(b), table.clients()), (0, 1));
}
