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
/// An account's keys are a vector sized to fit, searched in order: they are few (the
/// per-account cap, 10 by default) and most accounts have one, which costs one 40-byte
/// block here. A map per account cost ~240 bytes per subscription (whole-proxy density
/// bench).
#[derive(Debug)]
pub struct AccountCounter<A, K> {
    accounts: HashMap<A, Vec<(K, usize)>>,
}

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
        match self.accounts.get(account) {
            Some(keys) => keys.iter().any(|(k, _)| k == key) || keys.len() < max,
            None => max > 0,
        }
    }

    /// A subscription of `key` under `account` exists (live or logging in).
    pub fn add(&mut self, account: A, key: K) {
        let keys = self.accounts.entry(account).or_default();
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => {
                // One more key at a time: a vector never holds room it does not use.
                keys.reserve_exact(1);
                keys.push((key, 1));
            }
        }
    }

    /// A subscription of `key` under `account` is gone. Removing what was never added is
    /// ignored.
    pub fn remove(&mut self, account: &A, key: &K) {
        let Some(keys) = self.accounts.get_mut(account) else {
            return;
        };
        if let Some(i) = keys.iter().position(|(k, _)| k == key) {
            keys[i].1 -= 1;
            if keys[i].1 == 0 {
                keys.swap_remove(i);
                keys.shrink_to_fit();
            }
        }
        if keys.is_empty() {
            self.accounts.remove(account);
        }
    }

    /// Distinct keys (devices) of `account`.
    pub fn keys(&self, account: &A) -> usize {
        self.accounts.get(account).map_or(0, Vec::len)
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
