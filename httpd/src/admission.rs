//! Which connections the server holds: a cap per client and a cap in total.
//!
//! No sockets, no clock: the reactor tells this table when connections open,
//! close, go idle or learn who their client is, and asks it what to do with a
//! newcomer. The rule:
//!
//! 1. A client (an IPv4 address, or an IPv6 /64: see [`ClientKey`]) holds at
//!    most `per_client_max` connections. One more is refused
//!    ([`Refusal::ClientAtCap`]), whatever the total.
//! 2. Otherwise, below `total_max` connections, it is admitted.
//! 3. At `total_max`, the connection that has been idle longest (see
//!    [`Admission::handle_idle`]) is closed to make room
//!    ([`Decision::EvictThenAdmit`]); with none idle, the newcomer is refused
//!    ([`Refusal::ServerFull`]).
//!
//! So one client can hold at most its share, and a server full of idle
//! keep-alive connections still serves a newcomer.
//!
//! A connection from a trusted reverse proxy starts *unattributed* (it counts
//! in the total only) until the proxy says whose it is: per connection
//! (PROXY protocol header, [`Attribution::Connection`]: past the client's cap
//! it is refused, like a direct connection) or per request
//! (`X-Forwarded-For`, [`Attribution::Request`]: the connection then counts
//! for the client of its latest request; past that client's cap, that
//! client's own oldest idle connection is closed, and with none idle the
//! request is refused). A proxy reuses its upstream connections for many
//! clients, so a cap per request must not let yesterday's idle connections
//! of a client block its next request.
//!
//! Every entry of the per-client table belongs to an open connection, so the
//! table never holds more than `total_max` clients.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// Whom a connection is counted for: an IPv4 address, or the /64 prefix of an
/// IPv6 address (one customer's LAN gets a /64, so per address would give one
/// client 2^64 shares). IPv4-mapped IPv6 addresses count as their IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    V4([u8; 4]),
    V6Prefix64([u8; 8]),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                ClientKey::V6Prefix64(prefix)
            }
        }
    }
}

/// What to do with a newcomer (a connection, or a connection's new client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    Admit,
    /// Close the connection in this slot first (report it with
    /// [`Admission::handle_closed`]), then admit.
    EvictThenAdmit(usize),
    Refuse(Refusal),
}

/// Why a newcomer is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its client already holds `per_client_max` connections.
    ClientAtCap,
    /// `total_max` connections are open and none is idle.
    ServerFull,
}

/// How a trusted proxy named a connection's client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// Once, for the whole connection (PROXY protocol): treated like a new
    /// direct connection from that client.
    Connection,
    /// For one request (`X-Forwarded-For`): the client's own oldest idle
    /// connection may make room.
    Request,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    client: Option<ClientKey>,
    /// The ticket under which the slot sits in the idle set.
    idle: Option<u64>,
}

/// The table; see the module docs for the rule.
#[derive(Debug)]
pub struct Admission {
    total_max: usize,
    per_client_max: usize,
    slots: HashMap<usize, Slot>,
    /// Open connections per attributed client; no zero entries.
    clients: HashMap<ClientKey, usize>,
    /// (ticket, slot) of every idle connection, oldest first.
    idle: BTreeSet<(u64, usize)>,
    next_ticket: u64,
}

impl Admission {
    /// `total_max` and `per_client_max` are at least 1 (checked by
    /// [`Limits`](crate::Limits)).
    pub fn new(total_max: usize, per_client_max: usize) -> Admission {
        Admission {
            total_max,
            per_client_max,
            slots: HashMap::new(),
            clients: HashMap::new(),
            idle: BTreeSet::new(),
            next_ticket: 0,
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.slots.len()
    }

    /// Open connections counted for `client`.
    pub fn connections_of(&self, client: ClientKey) -> usize {
        self.clients.get(&client).copied().unwrap_or(0)
    }

    /// Clients with at least one connection (the table's size).
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// A connection was accepted from `client` (`None`: from a trusted proxy,
    /// not yet attributed). What to do with it.
    pub fn decide(&self, client: Option<ClientKey>) -> Decision {
        if client.is_some_and(|c| self.connections_of(c) >= self.per_client_max) {
            return Decision::Refuse(Refusal::ClientAtCap);
        }
        if self.open() < self.total_max {
            return Decision::Admit;
        }
        match self.idle.first() {
            Some(&(_, slot)) => Decision::EvictThenAdmit(slot),
            None => Decision::Refuse(Refusal::ServerFull),
        }
    }

    /// The connection in `slot` was admitted (after [`Admission::decide`]).
    /// It starts busy.
    pub fn handle_opened(&mut self, slot: usize, client: Option<ClientKey>) {
        assert!(!self.slots.contains_key(&slot), "slot {slot} opened twice");
        self.slots.insert(slot, Slot { client, idle: None });
        if let Some(client) = client {
            *self.clients.entry(client).or_default() += 1;
        }
    }

    /// The connection in `slot` closed. Unknown slots are ignored.
    pub fn handle_closed(&mut self, slot: usize) {
        let Some(entry) = self.slots.remove(&slot) else {
            return;
        };
        if let Some(ticket) = entry.idle {
            self.idle.remove(&(ticket, slot));
        }
        if let Some(client) = entry.client {
            self.forget_one(client);
        }
    }

    /// The connection in `slot` is idle (`true`: nothing received of a next
    /// request, nothing in flight or unsent) or busy. Idempotent: a slot that
    /// stays idle keeps its place in the queue.
    pub fn handle_idle(&mut self, slot: usize, idle: bool) {
        let Some(entry) = self.slots.get_mut(&slot) else {
            return;
        };
        match (entry.idle, idle) {
            (None, true) => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                entry.idle = Some(ticket);
                self.idle.insert((ticket, slot));
            }
            (Some(ticket), false) => {
                entry.idle = None;
                self.idle.remove(&(ticket, slot));
            }
            _ => {}
        }
    }

    /// A trusted proxy says the connection in `slot` is `client`'s. What to
    /// do: admit (then call [`Admission::handle_attributed`]), close another
    /// of that client's connections first, or refuse (close this one, or
    /// answer its request with an error and close it).
    pub fn decide_attribution(&self, slot: usize, client: ClientKey, how: Attribution) -> Decision {
        let current = self.slots.get(&slot).and_then(|s| s.client);
        if current == Some(client) || self.connections_of(client) < self.per_client_max {
            return Decision::Admit;
        }
        if how == Attribution::Request {
            // Its oldest idle connection; a scan of the idle set, which only a
            // client at its cap behind a proxy costs.
            let own = self.idle.iter().find(|&&(_, s)| {
                s != slot && self.slots.get(&s).and_then(|e| e.client) == Some(client)
            });
            if let Some(&(_, s)) = own {
                return Decision::EvictThenAdmit(s);
            }
        }
        Decision::Refuse(Refusal::ClientAtCap)
    }

    /// The connection in `slot` now counts for `client`.
    pub fn handle_attributed(&mut self, slot: usize, client: ClientKey) {
        let Some(entry) = self.slots.get_mut(&slot) else {
            return;
        };
        let previous = entry.client.replace(client);
        if previous == Some(client) {
            return;
        }
        *self.clients.entry(client).or_default() += 1;
        if let Some(previous) = previous {
            self.forget_one(previous);
        }
    }

    fn forget_one(&mut self, client: ClientKey) {
        if let Some(n) = self.clients.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.clients.remove(&client);
            }
        }
    }
}
