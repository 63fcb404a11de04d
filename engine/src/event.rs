//! What the engine reports and how it names a session: the types the embedding API
//! (`api`) and the reactors both use, kept apart so that neither depends on the other
//! for them.

use crate::reason::EndReason;
use crate::session::{Preview, Ready};

/// Identifies one watched account for the life of the engine. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub(crate) u64);

impl SessionId {
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// What the engine reports. Each watched session yields `Ready` then any number of
/// `NewMail` then `SessionLost`; or `Failed` alone if it never became ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The mailbox is open and watched.
    Ready { id: SessionId, ready: Ready },
    /// The session ended before it was ready.
    Failed { id: SessionId, reason: EndReason },
    /// The message count of mailbox number `mailbox` (index into the watched list) rose.
    /// With a filter ([`crate::WatchOptions::filter`]), only when a new message of the
    /// selected mailbox matched it. `preview` is set only for the selected mailbox of a
    /// spec that asked for previews: the newest matching messages, newest first.
    /// `read_at` is when the reactor turn that read and parsed the change began: push
    /// latency is measured from it.
    NewMail {
        id: SessionId,
        mailbox: usize,
        exists: u32,
        preview: Option<Box<Preview>>,
        read_at: std::time::Instant,
    },
    /// A ready session ended.
    SessionLost { id: SessionId, reason: EndReason },
}

impl Event {
    pub fn id(&self) -> SessionId {
        match *self {
            Event::Ready { id, .. }
            | Event::Failed { id, .. }
            | Event::NewMail { id, .. }
            | Event::SessionLost { id, .. } => id,
        }
    }
}
