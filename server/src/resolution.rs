//! The destination check of a registration: every host name it gives (the IMAP host and
//! the two push endpoints) is resolved before any login, and one forbidden address among
//! the answers refuses the registration at once (403 forbidden_destination).
//!
//! Why at registration: the app must learn that an endpoint can never be pushed to, and
//! an IMAP host that is local must not even be connected to. The addresses are judged
//! again at connect time (a name may change between now and then); this check is the
//! early, visible one.
//!
//! Pure bookkeeping over the lookups' answers: the caller starts the lookups, feeds each
//! answer in, and acts on the [`Progress`]. Generic over the lookup error so that it
//! needs no resolver to be tested.

use std::net::{IpAddr, SocketAddr};

/// A destination of a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Imap,
    NewMail,
    Reconnect,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Imap, Target::NewMail, Target::Reconnect];

    /// A small number, for lookup tokens.
    pub fn index(self) -> u64 {
        match self {
            Target::Imap => 0,
            Target::NewMail => 1,
            Target::Reconnect => 2,
        }
    }

    pub fn from_index(index: u64) -> Option<Target> {
        Target::ALL.get(usize::try_from(index).ok()?).copied()
    }

    /// The request field that named it.
    pub fn field(self) -> &'static str {
        match self {
            Target::Imap => "imap.host",
            Target::NewMail => "new_mail.endpoint",
            Target::Reconnect => "reconnect.endpoint",
        }
    }
}

/// Why a registration is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal<E> {
    /// The name resolves to an address that may not be reached.
    Forbidden(Target),
    /// The name did not resolve (the lookup's error), or to no address.
    Unresolved(Target, Option<E>),
}

/// Where a registration's check stands after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Progress<E> {
    /// Other lookups are still out.
    Waiting,
    /// Every name resolved to allowed addresses only: the login may start.
    Passed,
    /// Refused: answer the registration now; later answers are of no use.
    Refused(Refusal<E>),
}

/// The lookups still out for one registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checks {
    waiting: Vec<Target>,
}

impl Checks {
    /// Waits for one answer per target in `targets`.
    pub fn new(targets: &[Target]) -> Checks {
        let mut waiting = targets.to_vec();
        waiting.dedup();
        Checks { waiting }
    }

    /// True when no lookup is out (nothing to resolve, or all answered).
    pub fn is_done(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The answer for `target`. A second answer for a target is ignored (`Waiting` or
    /// `Passed` as before).
    pub fn answer<E>(
        &mut self,
        target: Target,
        result: Result<&[SocketAddr], E>,
        allowed: impl Fn(IpAddr) -> bool,
    ) -> Progress<E> {
        let Some(at) = self.waiting.iter().position(|t| *t == target) else {
            return self.progress();
        };
        self.waiting.swap_remove(at);
        match result {
            Err(e) => Progress::Refused(Refusal::Unresolved(target, Some(e))),
            Ok([]) => Progress::Refused(Refusal::Unresolved(target, None)),
            Ok(addrs) if addrs.iter().any(|a| !allowed(a.ip())) => {
                Progress::Refused(Refusal::Forbidden(target))
            }
            Ok(_) => self.progress(),
        }
    }

    fn progress<E>(&self) -> Progress<E> {
        if self.waiting.is_empty() {
            Progress::Passed
        } else {
            Progress::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    //! Only the public API.
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), 443))
            .collect()
    }

    fn public(ip: IpAddr) -> bool {
        !ip.is_loopback()
    }

    #[test]
    fn passes_once_every_name_resolved_to_allowed_addresses() {
        let mut c = Checks::new(&[Target::NewMail, Target::Reconnect]);
        let ok = addrs(&["11.0.0.1", "2a00:1::1"]);
        assert_eq!(
            c.answer::<()>(Target::Reconnect, Ok(&ok), public),
            Progress::Waiting
        );
        // A repeated answer changes nothing.
        assert_eq!(
            c.answer::<()>(Target::Reconnect, Ok(&ok), public),
            Progress::Waiting
        );
        assert_eq!(
            c.answer::<()>(Target::NewMail, Ok(&ok), public),
            Progress::Passed
        );
        assert!(c.is_done());
    }

    #[test]
    fn one_forbidden_address_refuses_at_once() {
        let mut c = Checks::new(&Target::ALL);
        let mixed = addrs(&["11.0.0.1", "127.0.0.1"]);
        assert_eq!(
            c.answer::<()>(Target::Imap, Ok(&mixed), public),
            Progress::Refused(Refusal::Forbidden(Target::Imap))
        );
    }

    #[test]
    fn a_failed_or_empty_lookup_refuses() {
        let mut c = Checks::new(&[Target::Imap, Target::NewMail]);
        assert_eq!(
            c.answer(Target::NewMail, Err("timed out"), public),
            Progress::Refused(Refusal::Unresolved(Target::NewMail, Some("timed out")))
        );
        assert_eq!(
            c.answer::<()>(Target::Imap, Ok(&[]), public),
            Progress::Refused(Refusal::Unresolved(Target::Imap, None))
        );
        assert!(Checks::new(&[]).is_done(), "nothing to resolve");
    }

    #[test]
    fn target_indexes_round_trip() {
        for t in Target::ALL {
            assert_eq!(Target::from_index(t.index()), Some(t));
        }
        assert_eq!(Target::from_index(3), None);
    }
}
