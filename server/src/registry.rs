//! The live subscriptions, by public id, by engine session and by dedup key.
//! Holds no credential: those went to the engine and are gone.
//!
//! The rules it keeps are in modules of their own: who holds a key
//! ([`crate::replacement`]) and how many keys an account has ([`crate::accounts`]).
//! The registry keeps them in step with the subscriptions it holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use std::hash::Hash;

use engine::Since;

use crate::accounts::AccountCounter;
use crate::delivery::PushSubscription;
use crate::id::SubscriptionId;
use crate::replacement::{Promotion, Replacements};
use crate::verification::Verification;

/// A registration key: SHA-256 of (host, port, username, device_id), see
/// [`crate::api::Registration::dedup_key`].
pub type Key = [u8; 32];
/// An account: SHA-256 of the normalised (host, port, username), see
/// [`crate::api::Registration::account_key`].
pub type Account = [u8; 32];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Logging in; the registration request is still waiting.
    Pending,
    /// In IDLE.
    Idle,
    /// Polled with NOOP (the server has no IDLE).
    Polling,
    /// Ready (in IDLE or polled), but its endpoints are not proven yet: no new-mail push
    /// leaves (see [`crate::verification`]).
    Verifying,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Idle => "idle",
            State::Polling => "polling",
            State::Verifying => "verifying",
        }
    }
}

/// A subscription. `S` names its engine session and `R` the registration request waiting
/// for it: the server uses the engine's and httpd's handles, the simulation its own numbers.
#[derive(Debug)]
pub struct Subscription<S, R> {
    pub id: SubscriptionId,
    /// The IMAP host in its normal form ([`crate::destination::normalize_host`]): sessions
    /// per host are capped and logins paced on it. Shared: [`Registry::insert`] swaps it
    /// for the copy the per-host count keeps, so thousands of subscriptions to one
    /// provider hold one string.
    pub host: Arc<str>,
    /// The engine session; `None` while the login waits for its turn (login pacing).
    pub session: Option<S>,
    pub key: Key,
    pub account: Account,
    pub push: Arc<PushSubscription>,
    /// The mailboxes watched, in the order the registration named them. Shared like
    /// `host`: nearly every subscription watches `["INBOX"]`, which is then one list.
    pub mailboxes: Arc<[String]>,
    pub since: Option<Since>,
    pub state: State,
    pub idle: bool,
    pub notify: bool,
    pub created_unix: u64,
    /// Unix time and message count of the last new mail.
    pub last_new_mail: Option<(u64, u32)>,
    pub pushes_sent: u64,
    pub pushes_failed: u64,
    /// The registration request waiting for this session, and its deadline.
    pub waiting: Option<(R, Instant)>,
    /// Set when the server requires endpoint verification, until the app has echoed
    /// the codes back; dropped (and its codes zeroized) with the subscription.
    pub verification: Option<Box<Verification<Mail>>>,
}

/// The server's subscription, boxed in [`Registry`]: 240 bytes (a 256-byte heap block).
/// Its strings are shared (`host`, `mailboxes`) and its push side is one `Arc`; a field
/// that grows it past this bound costs every idle subscription (whole-proxy density
/// bench, `proxy_density`).
const _: () =
    assert!(std::mem::size_of::<Subscription<engine::SessionId, httpd::RequestId>>() <= 240);

/// New mail that waits for a subscription's verification: sent at activation.
pub type Mail = crate::delivery::PushJob;

#[derive(Debug)]
pub struct Registry<S, R> {
    /// Boxed: a subscription is 240 bytes, and a table of them inline would carry that
    /// much for every empty bucket too (half the table after it grows).
    by_id: HashMap<SubscriptionId, Box<Subscription<S, R>>>,
    by_session: HashMap<S, SubscriptionId>,
    /// The live subscription and the candidates of each key.
    keys: Replacements<Key, SubscriptionId>,
    /// Keys (devices) per account, live or logging in.
    accounts: AccountCounter<Account, Key>,
    /// Subscriptions per IMAP host, and the one copy of each host name.
    per_host: Shared<str>,
    /// The one copy of each list of mailboxes.
    mailbox_lists: Shared<[String]>,
    /// Deadlines of the registrations still waiting for their session: kept apart so
    /// neither the deadline check nor the pending count walks every subscription.
    waiting: HashMap<SubscriptionId, Instant>,
    /// Deadlines of the subscriptions still verifying their endpoints, kept apart for
    /// the same reason.
    verifying: HashMap<SubscriptionId, Instant>,
}

impl<S, R> Default for Registry<S, R> {
    fn default() -> Self {
        Registry {
            by_id: HashMap::new(),
            by_session: HashMap::new(),
            keys: Replacements::default(),
            accounts: AccountCounter::default(),
            per_host: Shared::default(),
            mailbox_lists: Shared::default(),
            waiting: HashMap::new(),
            verifying: HashMap::new(),
        }
    }
}

impl<S: Copy + Eq + Hash, R> Registry<S, R> {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn pending(&self) -> usize {
        self.waiting.len()
    }

    pub fn count(&self, state: State) -> usize {
        self.by_id.values().filter(|s| s.state == state).count()
    }

    /// Adds a registration; `arrival` ranks it among its key's (see
    /// [`Replacements::begin`]).
    pub fn insert(&mut self, mut sub: Subscription<S, R>, arrival: u64) {
        if let Some(session) = sub.session {
            self.by_session.insert(session, sub.id);
        }
        self.keys.begin(sub.key, sub.id, arrival);
        self.accounts.add(sub.account, sub.key);
        sub.host = self.per_host.share(sub.host);
        sub.mailboxes = self.mailbox_lists.share(sub.mailboxes);
        if let Some((_, deadline)) = sub.waiting {
            self.waiting.insert(sub.id, deadline);
        }
        self.by_id.insert(sub.id, Box::new(sub));
    }

    /// Subscriptions to `host` (lower-cased).
    pub fn host_count(&self, host: &str) -> usize {
        self.per_host.count(host)
    }

    pub fn get(&self, id: &SubscriptionId) -> Option<&Subscription<S, R>> {
        self.by_id.get(id).map(|sub| &**sub)
    }

    pub fn by_session(&self, session: S) -> Option<&Subscription<S, R>> {
        let id = self.by_session.get(&session)?;
        self.by_id.get(id).map(|sub| &**sub)
    }

    pub fn by_session_mut(&mut self, session: S) -> Option<&mut Subscription<S, R>> {
        let id = self.by_session.get(&session)?;
        self.by_id.get_mut(id).map(|sub| &mut **sub)
    }

    pub fn by_id_mut(&mut self, id: &SubscriptionId) -> Option<&mut Subscription<S, R>> {
        self.by_id.get_mut(id).map(|sub| &mut **sub)
    }

    pub fn remove(&mut self, id: &SubscriptionId) -> Option<Subscription<S, R>> {
        let sub = *self.by_id.remove(id)?;
        self.waiting.remove(id);
        self.verifying.remove(id);
        if let Some(session) = sub.session {
            self.by_session.remove(&session);
        }
        self.keys.forget(&sub.key, &sub.id);
        self.accounts.remove(&sub.account, &sub.key);
        self.per_host.release(&sub.host);
        self.mailbox_lists.release(&sub.mailboxes);
        Some(sub)
    }

    /// The paced login of `id` has started as `session`.
    pub fn set_session(&mut self, id: &SubscriptionId, session: S) {
        if let Some(sub) = self.by_id.get_mut(id) {
            sub.session = Some(session);
            self.by_session.insert(session, *id);
        }
    }

    pub fn remove_by_session(&mut self, session: S) -> Option<Subscription<S, R>> {
        let id = *self.by_session.get(&session)?;
        self.remove(&id)
    }

    /// Subscription `id`'s session is ready: it takes its key over, or gives way to a newer
    /// registration of the key (see [`crate::replacement`]).
    pub fn promote(&mut self, id: &SubscriptionId) -> Promotion<SubscriptionId> {
        match self.by_id.get(id) {
            Some(sub) => self.keys.ready(&sub.key, id),
            None => Promotion::Unknown,
        }
    }

    /// True if `key` has a live subscription or one logging in: a registration of it
    /// replaces rather than adds.
    pub fn holds_key(&self, key: &Key) -> bool {
        self.keys.contains(key)
    }

    /// Keys with a live subscription or one logging in: the sessions as apps see them
    /// (a replacement in progress briefly holds two for one key).
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// True if a registration of `key` under `account` may go ahead with at most `max`
    /// devices per account (see [`crate::accounts`]).
    pub fn account_admits(&self, account: &Account, key: &Key, max: usize) -> bool {
        self.accounts.admits(account, key, max)
    }

    /// Registrations whose deadline has passed.
    /// Sorted, so that what follows from them happens in one order on every run (the
    /// simulation replays a seed).
    pub fn overdue(&self, now: Instant) -> Vec<SubscriptionId> {
        let mut ids: Vec<SubscriptionId> = self
            .waiting
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Takes the waiting registration request of `session`'s subscription, if any.
    pub fn take_waiting(&mut self, session: S) -> Option<R> {
        let id = self.by_session.get(&session)?;
        self.waiting.remove(id);
        let sub = self.by_id.get_mut(id)?;
        sub.waiting.take().map(|(request, _)| request)
    }

    /// The earliest registration or verification deadline, for the owner's next wake-up.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting
            .values()
            .chain(self.verifying.values())
            .min()
            .copied()
    }

    /// Subscription `id` verifies its endpoints until `deadline`.
    pub fn start_verifying(&mut self, id: &SubscriptionId, deadline: Instant) {
        if self.by_id.contains_key(id) {
            self.verifying.insert(*id, deadline);
        }
    }

    /// Subscription `id` is verified: its deadline goes.
    pub fn stop_verifying(&mut self, id: &SubscriptionId) {
        self.verifying.remove(id);
    }

    /// Subscriptions whose verification deadline has passed, sorted (see
    /// [`Registry::overdue`]).
    pub fn overdue_verifications(&self, now: Instant) -> Vec<SubscriptionId> {
        let mut ids: Vec<SubscriptionId> = self
            .verifying
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The session of every subscription, for checks that walk them all.
    pub fn sessions(&self) -> impl Iterator<Item = (SubscriptionId, S)> + '_ {
        self.by_session.iter().map(|(s, id)| (*id, *s))
    }

    /// Every id, sorted (see [`Registry::overdue`]).
    pub fn ids(&self) -> Vec<SubscriptionId> {
        let mut ids: Vec<SubscriptionId> = self.by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

/// Values many subscriptions hold alike (a host name, a list of mailboxes), kept once and
/// counted: each subscription holds a reference to the one copy, which goes with the last.
#[derive(Debug)]
struct Shared<T: ?Sized + Eq + Hash> {
    copies: HashMap<Arc<T>, usize>,
}

impl<T: ?Sized + Eq + Hash> Default for Shared<T> {
    fn default() -> Self {
        Shared {
            copies: HashMap::new(),
        }
    }
}

impl<T: ?Sized + Eq + Hash> Shared<T> {
    /// One more holder of `value`: the copy kept already, or `value` itself if it is new.
    fn share(&mut self, value: Arc<T>) -> Arc<T> {
        let copy = match self.copies.get_key_value(&*value) {
            Some((copy, _)) => Arc::clone(copy),
            None => value,
        };
        *self.copies.entry(Arc::clone(&copy)).or_insert(0) += 1;
        copy
    }

    /// Holders of `value`.
    fn count(&self, value: &T) -> usize {
        self.copies.get(value).copied().unwrap_or(0)
    }

    /// One holder of `value` fewer; the copy goes with the last.
    fn release(&mut self, value: &T) {
        if let Some(holders) = self.copies.get_mut(value) {
            *holders -= 1;
            if *holders == 0 {
                self.copies.remove(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Shared;

    #[test]
    fn equal_values_share_one_copy_until_the_last_holder_goes() {
        let mut lists: Shared<[String]> = Shared::default();
        let inbox = || Arc::<[String]>::from(vec!["INBOX".to_string()]);
        let a = lists.share(inbox());
        let b = lists.share(inbox());
        assert!(Arc::ptr_eq(&a, &b), "one copy for equal lists");
        let other = lists.share(Arc::from(vec!["Work".to_string()]));
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(lists.count(&["INBOX".to_string()]), 2);
        lists.release(&a);
        assert_eq!(lists.count(&["INBOX".to_string()]), 1);
        lists.release(&b);
        assert_eq!(lists.count(&["INBOX".to_string()]), 0);
        assert_eq!(
            Arc::strong_count(&a),
            2,
            "the registry's copy is gone: a and b remain"
        );
        // Releasing what is not held is ignored.
        lists.release(&a);
        assert_eq!(lists.count(&["Work".to_string()]), 1);
    }
}
