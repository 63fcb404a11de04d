//! Replace only after the new session is ready: the rule that keeps a re-registration from
//! switching off someone else's notifications.
//!
//! A registration names a key (account and device). Knowing a key proves nothing; a login
//! that succeeded does. So a registration of a key that is already live starts as a
//! *candidate* beside the live subscription, and only when the candidate's session is
//! ready does it take the key over. A candidate that fails leaves the live one untouched.
//!
//! Candidates of one key may log in at the same time. Arrival order decides between them:
//! a ready candidate replaces the live subscription only if it arrived later, otherwise it
//! is itself superseded. Whatever the order of the logins, one subscription per key
//! remains, and it is the newest one that logged in. "Arrived" is the caller's rank,
//! given when the registration request came (see [`Replacements::begin`]): the later
//! request is the newer state of the device, even when its host name lookups or its login
//! turn end after an earlier request's.
//!
//! When the server requires endpoint verification ([`crate::verification`]), a login is
//! not proof enough: the caller reports a candidate "ready" only once its endpoints are
//! verified, so until then the live subscription keeps working (replace after verified).
//!
//! Pure bookkeeping: no clock, no I/O. The caller ends the sessions this module names.

use std::collections::HashMap;
use std::hash::Hash;

/// The live subscription and the candidates of every key.
///
/// Two maps, because a key almost always has a live subscription and no candidate: the
/// live one is an entry of 56 bytes (a 32-byte key, its arrival and a 16-byte id), and
/// only a key being registered again, or for the first time, has a candidate list. One
/// map of both, with an empty candidate vector in every entry, cost 88 bytes an entry and
/// a 96-byte vector left behind by the first candidate (~290 bytes per subscription in the
/// whole-proxy density bench, where a table's buckets double between 1,000 and 4,000).
#[derive(Debug)]
pub struct Replacements<K, I> {
    /// The live subscription of each key, with its arrival.
    live: HashMap<K, (u64, I)>,
    /// Candidates of each key still logging in, with their arrivals; a key with none has
    /// no entry. At most one per registration waiting (bounded by the caller's
    /// `pending_registrations_max`).
    candidates: HashMap<K, Vec<(u64, I)>>,
}

/// What a candidate's readiness means.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Promotion<I> {
    /// The candidate is the key's live subscription now. `replaced` is the one it replaces,
    /// which the caller MUST end (without a reconnect push: its app registered again).
    Promoted { replaced: Option<I> },
    /// A newer registration of the key is live already: the caller MUST end this candidate.
    Superseded,
    /// The id is no candidate of this key (it was deleted or ended meanwhile).
    Unknown,
}

impl<K: Hash + Eq + Clone, I: PartialEq> Default for Replacements<K, I> {
    fn default() -> Self {
        Replacements {
            live: HashMap::new(),
            candidates: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, I: PartialEq> Replacements<K, I> {
    /// A registration of `key` starts logging in as `id`. `arrival` ranks it among the
    /// registrations of its key: the caller MUST give each registration a number greater
    /// than every earlier registration's, taken when its request arrived.
    pub fn begin(&mut self, key: K, id: I, arrival: u64) {
        self.candidates.entry(key).or_default().push((arrival, id));
    }

    /// Candidate `id` of `key` has a ready session.
    pub fn ready(&mut self, key: &K, id: &I) -> Promotion<I> {
        let Some(candidates) = self.candidates.get_mut(key) else {
            return Promotion::Unknown;
        };
        let Some(at) = candidates.iter().position(|(_, c)| c == id) else {
            return Promotion::Unknown;
        };
        let candidate = candidates.swap_remove(at);
        if candidates.is_empty() {
            self.candidates.remove(key);
        }
        match self.live.get_mut(key) {
            Some(live) if live.0 > candidate.0 => Promotion::Superseded,
            Some(live) => Promotion::Promoted {
                replaced: Some(std::mem::replace(live, candidate).1),
            },
            None => {
                self.live.insert(key.clone(), candidate);
                Promotion::Promoted { replaced: None }
            }
        }
    }

    /// `id` (live or candidate) is gone: deleted, failed, timed out or lost. Unknown ids
    /// are ignored, so callers may forget an id twice.
    pub fn forget(&mut self, key: &K, id: &I) {
        if self.live.get(key).is_some_and(|(_, live)| live == id) {
            self.live.remove(key);
        }
        if let Some(candidates) = self.candidates.get_mut(key) {
            candidates.retain(|(_, c)| c != id);
            if candidates.is_empty() {
                self.candidates.remove(key);
            }
        }
    }

    /// The live subscription of `key`.
    pub fn live(&self, key: &K) -> Option<&I> {
        self.live.get(key).map(|(_, id)| id)
    }

    /// True if `key` has a live subscription or a candidate: a registration of it replaces
    /// rather than adds.
    pub fn contains(&self, key: &K) -> bool {
        self.live.contains_key(key) || self.candidates.contains_key(key)
    }

    /// Keys with a live subscription or a candidate. Walks the candidates (a bounded few).
    pub fn len(&self) -> usize {
        let only_candidates = self
            .candidates
            .keys()
            .filter(|key| !self.live.contains_key(*key))
            .count();
        self.live.len() + only_candidates
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.candidates.is_empty()
    }
}

/// A live key's entry in the server's map: key, arrival and id, nothing else. The
/// candidates live apart (see [`Replacements`]).
const _: () =
    assert!(std::mem::size_of::<(crate::registry::Key, (u64, crate::id::SubscriptionId))>() <= 56);

#[cfg(test)]
mod tests {
    //! Only the public API: the sans-IO core of the next issue calls exactly this.
    use super::{Promotion, Replacements};

    #[test]
    fn a_failed_candidate_leaves_the_live_one_alone() {
        let mut r = Replacements::default();
        r.begin("k", "victim", 1);
        assert_eq!(
            r.ready(&"k", &"victim"),
            Promotion::Promoted { replaced: None }
        );
        r.begin("k", "attacker", 2);
        // The attacker's login fails.
        r.forget(&"k", &"attacker");
        assert_eq!(r.live(&"k"), Some(&"victim"));
        assert!(r.contains(&"k"));
    }

    #[test]
    fn a_ready_candidate_replaces_the_live_one() {
        let mut r = Replacements::default();
        r.begin("k", 1, 3);
        assert_eq!(r.ready(&"k", &1), Promotion::Promoted { replaced: None });
        r.begin("k", 2, 4);
        assert_eq!(r.live(&"k"), Some(&1), "still 1 while 2 logs in");
        assert_eq!(r.ready(&"k", &2), Promotion::Promoted { replaced: Some(1) });
        assert_eq!(r.live(&"k"), Some(&2));
        // The replaced one's end is no news.
        r.forget(&"k", &1);
        assert_eq!(r.live(&"k"), Some(&2));
    }

    #[test]
    fn concurrent_candidates_leave_the_newest_whatever_the_order() {
        for newest_first in [false, true] {
            let mut r = Replacements::default();
            r.begin("k", "older", 5);
            r.begin("k", "newer", 6);
            let (first, second) = if newest_first {
                ("newer", "older")
            } else {
                ("older", "newer")
            };
            assert_eq!(
                r.ready(&"k", &first),
                Promotion::Promoted { replaced: None }
            );
            let expected = if newest_first {
                Promotion::Superseded
            } else {
                Promotion::Promoted {
                    replaced: Some("older"),
                }
            };
            assert_eq!(r.ready(&"k", &second), expected);
            assert_eq!(r.live(&"k"), Some(&"newer"));
            assert_eq!(r.len(), 1);
        }
    }

    /// The rank is the caller's (when the request came), not the order of `begin` calls:
    /// a later request whose login starts first still wins.
    #[test]
    fn the_later_request_wins_whichever_login_begins_first() {
        let mut r = Replacements::default();
        r.begin("k", "newer", 2);
        r.begin("k", "older", 1);
        assert_eq!(
            r.ready(&"k", &"newer"),
            Promotion::Promoted { replaced: None }
        );
        assert_eq!(r.ready(&"k", &"older"), Promotion::Superseded);
        assert_eq!(r.live(&"k"), Some(&"newer"));
    }

    #[test]
    fn forgotten_ids_are_unknown_and_keys_are_dropped() {
        let mut r: Replacements<&str, u32> = Replacements::default();
        r.begin("k", 1, 7);
        r.forget(&"k", &1);
        assert_eq!(r.ready(&"k", &1), Promotion::Unknown);
        assert!(!r.contains(&"k") && r.is_empty());
        r.begin("k", 2, 8);
        r.begin("other", 3, 9);
        assert_eq!(r.ready(&"other", &2), Promotion::Unknown, "keys do not mix");
        assert_eq!(r.ready(&"k", &2), Promotion::Promoted { replaced: None });
        r.forget(&"k", &2);
        assert_eq!(r.live(&"k"), None);
        assert_eq!(r.len(), 1);
    }
}
