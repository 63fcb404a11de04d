//! A hashed timing wheel: one entry per session, O(1) to file, checked once per slot turn.
//!
//! Entries are filed lazily: a deadline that moves later leaves its entry in place and is
//! re-filed when that entry fires; a deadline that moves earlier files a new entry, and the
//! old one is recognised as stale when its slot comes round (the owner keeps the deadline
//! it filed last, see `Filed`). This keeps the hot path free of removals
//! (tokio's "registered vs true timeouts").

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

#[derive(Debug)]
pub struct Wheel {
    slots: Vec<Vec<Entry>>,
    /// Every slot index below this (in absolute slot numbers) has been visited.
    next_slot: u64,
    len: usize,
}

impl Wheel {
    /// A wheel whose first slot covers `now`.
    pub fn new(now: Tick) -> Wheel {
        Wheel {
            slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
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
        self.slots[(abs % WHEEL_SLOTS as u64) as usize].push(Entry { key, deadline });
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
    /// [`WHEEL_EXPIRE_MAX`] per call. Returns true if more may be due (call again soon).
    pub fn expire(&mut self, now: Tick, out: &mut Vec<Entry>) -> bool {
        let now_slot = now.as_ms() / WHEEL_SLOT_MS;
        while self.next_slot <= now_slot {
            let slot = &mut self.slots[(self.next_slot % WHEEL_SLOTS as u64) as usize];
            let mut i = 0;
            while i < slot.len() {
                if out.len() >= WHEEL_EXPIRE_MAX {
                    return true;
                }
                if slot[i].deadline <= now {
                    out.push(slot.swap_remove(i));
                    self.len -= 1;
                } else {
                    i += 1;
                }
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

    /// The earliest time worth waking for: the start of the next slot that holds entries,
    /// bounded by one wheel turn. `None` when the wheel is empty.
    pub fn next_wake(&self, now: Tick) -> Option<Tick> {
        if self.len == 0 {
            return None;
        }
        let start = self.next_slot.max(now.as_ms() / WHEEL_SLOT_MS);
        for abs in start..start + WHEEL_SLOTS as u64 {
            let slot = &self.slots[(abs % WHEEL_SLOTS as u64) as usize];
            if let Some(min) = slot.iter().map(|e| e.deadline).min() {
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

    fn drain(w: &mut Wheel, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while w.expire(Tick::from_ms(now), &mut out) {}
        let mut keys: Vec<u64> = out.iter().map(|e| e.key).collect();
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
        assert!(w.expire(Tick::from_ms(200), &mut out));
        assert_eq!(out.len(), WHEEL_EXPIRE_MAX);
        out.clear();
        assert!(!w.expire(Tick::from_ms(200), &mut out));
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
}
