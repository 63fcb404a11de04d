//! A hashed timing wheel: one entry per session, O(1) to file, checked once per slot turn.
//!
//! Entries are filed lazily: a deadline that moves later leaves its entry in place and is
//! re-filed when that entry fires; a deadline that moves earlier files a new entry, and the
//! old one is recognised as stale when its slot comes round (the owner keeps the deadline
//! it filed last, see `Filed`). This keeps the hot path free of removals
//! (tokio's "registered vs true timeouts").
//!
//! A stale entry is dropped the first time the wheel passes its slot, not when its own
//! deadline comes: [`Wheel::expire`] asks the owner whether each entry it passes is still
//! wanted. Without that, an ended session's entry lived until its deadline (an IDLE
//! re-issue is ~25 min away), so the node array held every deadline filed in the last
//! 25 minutes and the proxy's RSS climbed for half an hour under churn (soak bench). Now
//! stale entries live at most one turn ([`WHEEL_SLOTS`] x [`WHEEL_SLOT_MS`]).

use crate::time::Tick;

/// Width of one slot.
pub const WHEEL_SLOT_MS: u64 = 100;
/// Slots in the wheel; one turn spans `WHEEL_SLOTS * WHEEL_SLOT_MS` = 409.6 s. Later
/// deadlines stay in their slot across turns.
pub const WHEEL_SLOTS: usize = 4096;
/// Most expirations handed out per call to [`Wheel::expire`]; the rest wait for the next
/// loop turn, so a storm of timers cannot starve socket events (smoltcp's "DoS warning").
pub const WHEEL_EXPIRE_MAX: usize = 1024;

/// One filed deadline: `key` names the owner (the reactor's token), `deadline` is what the
/// owner filed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: u64,
    pub deadline: Tick,
}

/// Bytes of one filed entry in the wheel's node array (the density bench prints it).
pub const NODE_BYTES: usize = std::mem::size_of::<Node>();

/// The end of a slot's list, and of the free list.
const NIL: u32 = u32::MAX;

/// An entry and the next one in its slot's list (or in the free list).
#[derive(Clone, Copy, Debug)]
struct Node {
    entry: Entry,
    next: u32,
}

/// Every entry lives in one array (`nodes`), chained per slot through `next`: the wheel is
/// two allocations however many sessions it holds. A `Vec` per slot (4,096 small blocks
/// per reactor, each reallocated as it grows) was scattered among the short-lived
/// allocations of handshakes and kept their pages resident: the density bench saw idle
/// sessions cost ~300 B more from 5k to 10k than from 1k to 5k.
#[derive(Debug)]
pub struct Wheel {
    /// Head of each slot's list, or NIL.
    heads: Box<[u32]>,
    nodes: Vec<Node>,
    /// Head of the list of unused nodes, or NIL.
    free: u32,
    /// Every slot index below this (in absolute slot numbers) has been visited.
    next_slot: u64,
    len: usize,
}

impl Wheel {
    /// A wheel whose first slot covers `now`.
    pub fn new(now: Tick) -> Wheel {
        Wheel::with_capacity(now, 0)
    }

    /// A wheel with room for `entries` entries before its node array grows (reserved
    /// address space: untouched pages cost no memory).
    pub fn with_capacity(now: Tick, entries: usize) -> Wheel {
        Wheel {
            heads: vec![NIL; WHEEL_SLOTS].into_boxed_slice(),
            nodes: Vec::with_capacity(entries),
            free: NIL,
            next_slot: now.as_ms() / WHEEL_SLOT_MS,
            len: 0,
        }
    }

    /// Files `key` to fire at `deadline` (never before it; up to one slot after).
    pub fn insert(&mut self, key: u64, deadline: Tick) {
        if deadline == Tick::NEVER {
            return;
        }
        // A deadline in an already visited slot goes into the next slot to be visited.
        let abs = (deadline.as_ms() / WHEEL_SLOT_MS).max(self.next_slot);
        let slot = (abs % WHEEL_SLOTS as u64) as usize;
        let node = Node {
            entry: Entry { key, deadline },
            next: self.heads[slot],
        };
        let index = if self.free != NIL {
            let index = self.free;
            self.free = self.nodes[index as usize].next;
            self.nodes[index as usize] = node;
            index
        } else {
            // More than 4 billion entries would need more than 100 GB of nodes: the
            // engine's session bound keeps far below.
            assert!(self.nodes.len() < NIL as usize, "wheel full");
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        self.heads[slot] = index;
        self.len += 1;
    }

    /// Entries filed and not yet expired (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves every entry whose deadline is at or before `now` into `out`, at most
    /// [`WHEEL_EXPIRE_MAX`] per call, and drops every later entry of the slots it passes
    /// for which `wanted` says false (stale: superseded, or its owner is gone). Returns
    /// true if more may be due (call again soon).
    pub fn expire(
        &mut self,
        now: Tick,
        out: &mut Vec<Entry>,
        mut wanted: impl FnMut(&Entry) -> bool,
    ) -> bool {
        let now_slot = now.as_ms() / WHEEL_SLOT_MS;
        while self.next_slot <= now_slot {
            let slot = (self.next_slot % WHEEL_SLOTS as u64) as usize;
            if self.expire_slot(slot, now, out, &mut wanted) {
                return true;
            }
            // A slot holding later deadlines (a later turn, or later in the current slot)
            // is only passed once the whole slot has been checked.
            if self.next_slot == now_slot {
                break;
            }
            self.next_slot += 1;
        }
        false
    }

    /// Unlinks the due entries of one slot into `out`, and the unwanted later ones into
    /// nothing; true if `out` filled up first.
    fn expire_slot(
        &mut self,
        slot: usize,
        now: Tick,
        out: &mut Vec<Entry>,
        wanted: &mut impl FnMut(&Entry) -> bool,
    ) -> bool {
        let mut prev = NIL;
        let mut at = self.heads[slot];
        while at != NIL {
            let node = self.nodes[at as usize];
            if node.entry.deadline > now {
                if wanted(&node.entry) {
                    prev = at;
                    at = node.next;
                    continue;
                }
            } else {
                if out.len() >= WHEEL_EXPIRE_MAX {
                    return true;
                }
                out.push(node.entry);
            }
            if prev == NIL {
                self.heads[slot] = node.next;
            } else {
                self.nodes[prev as usize].next = node.next;
            }
            self.nodes[at as usize].next = self.free;
            self.free = at;
            self.len -= 1;
            at = node.next;
        }
        false
    }

    /// The earliest deadline filed in one slot.
    fn slot_min(&self, slot: usize) -> Option<Tick> {
        let mut min = None;
        let mut at = self.heads[slot];
        while at != NIL {
            let node = &self.nodes[at as usize];
            min = Some(min.map_or(node.entry.deadline, |m: Tick| m.min(node.entry.deadline)));
            at = node.next;
        }
        min
    }

    /// The earliest time worth waking for: the start of the next slot that holds entries,
    /// bounded by one wheel turn. `None` when the wheel is empty.
    pub fn next_wake(&self, now: Tick) -> Option<Tick> {
        if self.len == 0 {
            return None;
        }
        let start = self.next_slot.max(now.as_ms() / WHEEL_SLOT_MS);
        for abs in start..start + WHEEL_SLOTS as u64 {
            if let Some(min) = self.slot_min((abs % WHEEL_SLOTS as u64) as usize) {
                // Entries of a later turn sit in this slot too: wake at the slot's end at least.
                let slot_end = Tick::from_ms((abs + 1) * WHEEL_SLOT_MS);
                return Some(min.max(Tick::from_ms(abs * WHEEL_SLOT_MS)).min(slot_end));
            }
        }
        Some(Tick::from_ms((start + WHEEL_SLOTS as u64) * WHEEL_SLOT_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry due at `now`, taken in calls of at most WHEEL_EXPIRE_MAX as the
    /// reactor takes them (it clears its list between calls).
    fn drain(w: &mut Wheel, now: u64) -> Vec<u64> {
        let mut keys = Vec::new();
        let mut out = Vec::new();
        loop {
            let more = w.expire(Tick::from_ms(now), &mut out, |_| true);
            assert!(out.len() <= WHEEL_EXPIRE_MAX);
            keys.extend(out.drain(..).map(|e| e.key));
            if !more {
                break;
            }
        }
        keys.sort_unstable();
        keys
    }

    #[test]
    fn fires_at_or_after_deadline_never_before() {
        let mut w = Wheel::new(Tick::ZERO);
        w.insert(1, Tick::from_ms(250));
        w.insert(2, Tick::from_ms(1_000));
        assert!(drain(&mut w, 249).is_empty());
        assert_eq!(drain(&mut w, 250), vec![1]);
        assert!(drain(&mut w, 999).is_empty());
        assert_eq!(drain(&mut w, 1_050), vec![2]);
        assert!(w.is_empty());
    }

    #[test]
    fn deadlines_beyond_one_turn_wait_their_turn() {
        let mut w = Wheel::new(Tick::ZERO);
        let turn = WHEEL_SLOTS as u64 * WHEEL_SLOT_MS;
        w.insert(7, Tick::from_ms(3 * turn + 5));
        for t in (0..3 * turn).step_by(10_000) {
            assert!(drain(&mut w, t).is_empty(), "fired early at {t}");
        }
        assert_eq!(drain(&mut w, 3 * turn + 5), vec![7]);
    }

    /// A superseded entry far in the future leaves the node array within one turn, not at
    /// its own deadline; a wanted one stays and fires on time. (Before `wanted`, the
    /// stale entry stayed filed for its whole 25 minutes.)
    #[test]
    fn stale_entries_are_dropped_within_one_turn() {
        let mut w = Wheel::new(Tick::ZERO);
        let turn = WHEEL_SLOTS as u64 * WHEEL_SLOT_MS;
        let far = Tick::from_ms(25 * 60 * 1_000);
        w.insert(1, far); // stale: its owner has since gone
        w.insert(2, far); // wanted
        let mut out = Vec::new();
        for t in (0..=turn).step_by(WHEEL_SLOT_MS as usize) {
            assert!(!w.expire(Tick::from_ms(t), &mut out, |e| e.key == 2));
        }
        assert!(out.is_empty(), "nothing is due yet");
        assert_eq!(w.len(), 1, "the stale entry is gone after one turn");
        let mut keys = Vec::new();
        let mut t = turn;
        while t <= far.as_ms() {
            w.expire(Tick::from_ms(t), &mut out, |e| e.key == 2);
            keys.extend(out.drain(..).map(|e| e.key));
            t += WHEEL_SLOT_MS;
        }
        assert_eq!(keys, vec![2]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_next_expire() {
        let mut w = Wheel::new(Tick::from_ms(10_000));
        w.insert(3, Tick::from_ms(5));
        assert_eq!(drain(&mut w, 10_000), vec![3]);
    }

    #[test]
    fn expirations_per_call_are_capped() {
        let mut w = Wheel::new(Tick::ZERO);
        for k in 0..(WHEEL_EXPIRE_MAX as u64 + 10) {
            w.insert(k, Tick::from_ms(100));
        }
        let mut out = Vec::new();
        assert!(w.expire(Tick::from_ms(200), &mut out, |_| true));
        assert_eq!(out.len(), WHEEL_EXPIRE_MAX);
        out.clear();
        assert!(!w.expire(Tick::from_ms(200), &mut out, |_| true));
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn next_wake_points_at_earliest_entry() {
        let mut w = Wheel::new(Tick::ZERO);
        assert_eq!(w.next_wake(Tick::ZERO), None);
        w.insert(1, Tick::from_ms(1_234));
        let wake = w.next_wake(Tick::ZERO).unwrap();
        assert!(
            wake >= Tick::from_ms(1_200) && wake <= Tick::from_ms(1_300),
            "{wake:?}"
        );
    }

    #[test]
    fn freed_nodes_are_reused_and_the_array_stays_bounded() {
        let mut w = Wheel::with_capacity(Tick::ZERO, 16);
        for round in 0..100u64 {
            for k in 0..10 {
                w.insert(k, Tick::from_ms(round * 1_000 + 500 + k * 37));
            }
            let keys = drain(&mut w, round * 1_000 + 999);
            assert_eq!(keys, (0..10).collect::<Vec<_>>(), "round {round}");
        }
        assert!(w.is_empty());
        assert!(
            w.nodes.len() <= 10,
            "{} nodes for 10 live entries",
            w.nodes.len()
        );
    }

    #[test]
    fn a_capped_expire_resumes_mid_slot_without_losing_entries() {
        let mut w = Wheel::new(Tick::ZERO);
        let n = 2 * WHEEL_EXPIRE_MAX as u64 + 3;
        for k in 0..n {
            // Half of them due, half later in the same slot.
            let at = if k % 2 == 0 { 110 } else { 190 };
            w.insert(k, Tick::from_ms(at));
        }
        let due: Vec<u64> = drain(&mut w, 150);
        assert_eq!(due, (0..n).filter(|k| k % 2 == 0).collect::<Vec<_>>());
        assert_eq!(w.len(), (n / 2) as usize);
        let rest = drain(&mut w, 190);
        assert_eq!(rest, (0..n).filter(|k| k % 2 == 1).collect::<Vec<_>>());
        assert!(w.is_empty());
    }
}
