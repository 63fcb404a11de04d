//! Sessions per account: providers cap the connections of one mailbox (Dovecot 10 per
//! user and address by default, Gmail 15), so one account registered under many device
//! ids must not open as many sessions.
//!
//! An account is the normalised (host, port, username); within it, each registration key
//! (account and device) counts once, whether its subscription is live or still logging in,
//! and however many re-registrations of it are under way: a re-registration replaces, it
//! does not add. The caller decides before any login, with [`AccountCounter::admits`].
//!
//! Pure bookkeeping: no clock, no I/O.

use std::collections::HashMap;
use std::hash::Hash;

/// Keys per account, each with the number of subscriptions (live or candidates) holding it.
///
/// Most accounts have one key, which sits inline in the account's map entry (a 72-byte
/// entry for 32-byte digests, size asserted); an account with more keeps them in a vector
/// sized to fit, searched in order: they are few (the per-account cap, 10 by default). A
/// vector for every account cost a 48-byte heap block each on top of a 56-byte entry, and a
/// map per account ~240 bytes per subscription (whole-proxy density bench).
#[derive(Debug)]
pub struct AccountCounter<A, K> {
    accounts: HashMap<A, Keys<K>>,
}

/// The keys of one account with their holders; `Many` has two or more.
#[derive(Debug)]
enum Keys<K> {
    One((K, u32)),
    Many(Vec<(K, u32)>),
}

impl<K> Keys<K> {
    fn as_slice(&self) -> &[(K, u32)] {
        match self {
            Keys::One(key) => std::slice::from_ref(key),
            Keys::Many(keys) => keys,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [(K, u32)] {
        match self {
            Keys::One(key) => std::slice::from_mut(key),
            Keys::Many(keys) => keys,
        }
    }
}

/// An account's entry in the server's map: its digest and one key inline.
const _: () =
    assert!(std::mem::size_of::<(crate::registry::Account, Keys<crate::registry::Key>)>() <= 72);

impl<A: Hash + Eq, K: Hash + Eq> Default for AccountCounter<A, K> {
    fn default() -> Self {
        AccountCounter {
            accounts: HashMap::new(),
        }
    }
}

impl<A: Hash + Eq, K: Hash + Eq> AccountCounter<A, K> {
    /// True if a registration of `key` under `account` may go ahead with at most `max`
    /// keys per account: always for a key the account holds already (it replaces).
    pub fn admits(&self, account: &A, key: &K, max: usize) -> bool {
        match self.accounts.get(account).map(Keys::as_slice) {
            Some(keys) => keys.iter().any(|(k, _)| k == key) || keys.len() < max,
            None => max > 0,
        }
    }

    /// A subscription of `key` under `account` exists (live or logging in).
    pub fn add(&mut self, account: A, key: K) {
        let Some(keys) = self.accounts.get_mut(&account) else {
            self.accounts.insert(account, Keys::One((key, 1)));
            return;
        };
        if let Some((_, n)) = keys.as_mut_slice().iter_mut().find(|(k, _)| *k == key) {
            *n += 1;
            return;
        }
        let mut more = match std::mem::replace(keys, Keys::Many(Vec::new())) {
            Keys::One(first) => {
                let mut more = Vec::with_capacity(2);
                more.push(first);
                more
            }
            Keys::Many(more) => more,
        };
        // One more key at a time: a vector never holds room it does not use.
        more.reserve_exact(1);
        more.push((key, 1));
        *keys = Keys::Many(more);
    }

    /// A subscription of `key` under `account` is gone. Removing what was never added is
    /// ignored.
    pub fn remove(&mut self, account: &A, key: &K) {
        let Some(keys) = self.accounts.get_mut(account) else {
            return;
        };
        let Some(i) = keys.as_slice().iter().position(|(k, _)| k == key) else {
            return;
        };
        keys.as_mut_slice()[i].1 -= 1;
        if keys.as_slice()[i].1 > 0 {
            return;
        }
        match keys {
            Keys::One(_) => {
                self.accounts.remove(account);
            }
            Keys::Many(more) => {
                more.swap_remove(i);
                if more.len() == 1 {
                    if let Some(last) = more.pop() {
                        *keys = Keys::One(last);
                    }
                } else {
                    more.shrink_to_fit();
                }
            }
        }
    }

    /// Distinct keys (devices) of `account`.
    pub fn keys(&self, account: &A) -> usize {
        self.accounts
            .get(account)
            .map_or(0, |keys| keys.as_slice().len())
    }
}

#[cfg(test)]
mod tests {
    //! Only the public API.
    use super::AccountCounter;

    #[test]
    fn the_cap_counts_devices_not_reregistrations() {
        const MAX: usize = 10;
        let mut c = AccountCounter::default();
        for device in 0..MAX {
            assert!(c.admits(&"alice", &device, MAX));
            c.add("alice", device);
        }
        // The 11th device is one past the cap...
        assert!(!c.admits(&"alice", &MAX, MAX));
        // ...but a re-registration of a held device replaces, even while it logs in.
        assert!(c.admits(&"alice", &3, MAX));
        c.add("alice", 3);
        assert_eq!(c.keys(&"alice"), MAX);
        // Other accounts are not affected.
        assert!(c.admits(&"bob", &MAX, MAX));
        // A device leaves only when its last subscription is gone.
        c.remove(&"alice", &3);
        assert!(!c.admits(&"alice", &MAX, MAX));
        c.remove(&"alice", &3);
        assert!(c.admits(&"alice", &MAX, MAX));
        assert_eq!(c.keys(&"alice"), MAX - 1);
    }

    #[test]
    fn an_account_going_from_two_keys_to_one_still_counts_its_last_key() {
        let mut c = AccountCounter::default();
        c.add("alice", 1);
        c.add("alice", 2);
        c.add("alice", 2);
        assert_eq!(c.keys(&"alice"), 2);
        c.remove(&"alice", &1);
        assert_eq!(c.keys(&"alice"), 1);
        assert!(c.admits(&"alice", &2, 1), "the held key replaces");
        assert!(
            !c.admits(&"alice", &3, 1),
            "a new key is one past a cap of 1"
        );
        // Key 2 has two subscriptions: the first removal keeps it.
        c.remove(&"alice", &2);
        assert_eq!(c.keys(&"alice"), 1);
        c.add("alice", 3);
        assert_eq!(c.keys(&"alice"), 2);
        c.remove(&"alice", &2);
        c.remove(&"alice", &3);
        assert_eq!(c.keys(&"alice"), 0);
        assert!(c.admits(&"alice", &3, 1));
    }

    #[test]
    fn removals_of_unknown_keys_are_ignored_and_empty_accounts_dropped() {
        let mut c = AccountCounter::default();
        c.remove(&"nobody", &1);
        c.add("alice", 1);
        c.remove(&"alice", &2);
        assert_eq!(c.keys(&"alice"), 1);
        c.remove(&"alice", &1);
        assert_eq!(c.keys(&"alice"), 0);
        assert!(!c.admits(&"alice", &1, 0), "a cap of 0 admits nothing");
    }
}
