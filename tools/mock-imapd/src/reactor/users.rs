//! Per login name: the quirk its sessions get at login, and a tally of what
//! happened to them, for fault tests that ask "did the client close the
//! hostile session?" by name.

use std::io;
use std::time::Duration;

use super::{End, Worker};
use crate::session::{Effects, Quirk};
use crate::stream::{StreamKind, StreamSpec};

/// Login names tallied at most (about 40 bytes each); names past it are not.
pub(crate) const TALLIES_MAX: usize = 100_000;
/// [`Quirk::AuthContinuations`]: bytes of `+ more` lines offered, and for how
/// long at most, before the session is closed.
pub(crate) const AUTH_CONTINUATIONS_BYTES: u64 = 100 * 1024 * 1024;
pub(crate) const AUTH_CONTINUATIONS_LIMIT: Duration = Duration::from_secs(10);

/// What happened to the sessions of one login name, on one worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub logins: u32,
    pub idles: u32,
    /// Sessions that ended, for any reason.
    pub ended: u32,
    /// Of those, ended by LOGOUT.
    pub logouts: u32,
    /// Of those, ended by the client: end of stream or a socket error.
    pub client_closed: u32,
    /// Sessions open now.
    pub open: u32,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.logins += o.logins;
        self.idles += o.idles;
        self.ended += o.ended;
        self.logouts += o.logouts;
        self.client_closed += o.client_closed;
        self.open += o.open;
    }

    /// `key=value` pairs for the control channel.
    pub fn line(&self) -> String {
        format!(
            "logins={} idles={} ended={} logouts={} client_closed={} open={}",
            self.logins, self.idles, self.ended, self.logouts, self.client_closed, self.open
        )
    }
}

impl Worker {
    pub(super) fn set_quirk(&mut self, user: u64, quirk: Quirk) {
        if quirk == Quirk::None {
            self.quirks.remove(&user);
        } else {
            self.quirks.insert(user, quirk);
        }
    }

    fn tally_mut(&mut self, user: u64) -> Option<&mut Tally> {
        if self.tallies.len() >= TALLIES_MAX && !self.tallies.contains_key(&user) {
            return None;
        }
        Some(self.tallies.entry(user).or_default())
    }

    pub(super) fn tally_effects(&mut self, user: u64, effects: Effects) {
        if user == 0 || !(effects.logged_in || effects.idle_started) {
            return;
        }
        if let Some(t) = self.tally_mut(user) {
            t.logins += u32::from(effects.logged_in);
            t.open += u32::from(effects.logged_in);
            t.idles += u32::from(effects.idle_started);
        }
    }

    pub(super) fn tally_end(&mut self, user: u64, end: End) {
        if let Some(t) = self.tally_mut(user) {
            t.ended += 1;
            t.open = t.open.saturating_sub(1);
            t.logouts += u32::from(end == End::Logout);
            t.client_closed += u32::from(matches!(end, End::PeerClosed | End::Io(_)));
        }
    }

    pub(super) fn tally(&self, user: u64) -> Tally {
        self.tallies.get(&user).copied().unwrap_or_default()
    }

    /// Answers the login just handled with endless `+ more` lines, then closes.
    pub(super) fn start_auth_continuations(&mut self, key: usize) {
        let spec = StreamSpec {
            kind: StreamKind::Continuations,
            total: AUTH_CONTINUATIONS_BYTES,
            limit: AUTH_CONTINUATIONS_LIMIT,
            every: Duration::ZERO,
        };
        if !self.start_stream_then_close(key, spec) {
            self.close(key, End::Io(io::ErrorKind::Unsupported));
        }
    }
}
