//! What a session reports, and the outbox that holds it until the caller takes it. The
//! outbox coalesces: one Ready, one bit of new mail per watched mailbox, one end; so a
//! caller that cannot deliver now hands an event back and loses nothing.

use super::fetch::Preview;
use super::mailboxes::Other;
use super::Session;
use crate::reason::EndReason;

/// What a session reports. Past-tense facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The mailbox is open and watched (IDLE accepted, or NOOP polling started).
    Ready(Ready),
    /// The message count of watched mailbox `mailbox` (0 is the selected one, then the
    /// others in the order given) rose to `exists`. With a filter, only when a new message
    /// of the selected mailbox matched it. `preview` is set only for the selected mailbox
    /// of a session that asked for previews, and holds the newest matching messages.
    NewMail {
        mailbox: usize,
        exists: u32,
        preview: Option<Box<Preview>>,
    },
    /// The session is over. Always the last event.
    Ended(EndReason),
}

/// What is known once a session is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The server offers IDLE (else the session polls with NOOP).
    pub idle: bool,
    /// The server offers NOTIFY (RFC 5465).
    pub notify: bool,
    pub exists: u32,
    pub uidvalidity: u32,
    pub uidnext: u32,
}

#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) ready: Option<Ready>,
    /// Bit `i`: watched mailbox `i` has new mail to report.
    pub(super) new_mail: u32,
    /// Goes with bit 0's report. Allocated only when a fetch found messages to preview.
    pub(super) preview: Option<Box<Preview>>,
    pub(super) ended: Option<EndReason>,
}

impl Outbox {
    /// Nothing waits to be reported.
    pub(super) fn is_empty(&self) -> bool {
        self.ready.is_none() && self.new_mail == 0 && self.ended.is_none()
    }
}

impl Session {
    /// The next event, oldest first. [`SessionEvent::Ended`] is always last.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        if self.held_ready.is_some() {
            // Nothing but the end is reported before Ready.
            return self.events.ended.take().map(SessionEvent::Ended);
        }
        if let Some(ready) = self.events.ready.take() {
            return Some(SessionEvent::Ready(ready));
        }
        if self.events.new_mail != 0 {
            let mailbox = self.events.new_mail.trailing_zeros() as usize;
            self.events.new_mail &= !(1 << mailbox);
            let (exists, preview) = match mailbox {
                0 => (self.exists, self.events.preview.take()),
                i => (
                    self.others
                        .as_deref()
                        .and_then(|o| o.get(i - 1))
                        .map_or(0, Other::messages),
                    None,
                ),
            };
            return Some(SessionEvent::NewMail {
                mailbox,
                exists,
                preview,
            });
        }
        self.events.ended.take().map(SessionEvent::Ended)
    }

    /// The caller could not deliver `event`, the last one [`Session::poll_event`] yielded
    /// (its queue was full): the session takes it back, and `poll_event` yields it again,
    /// first, merged with anything newer of its kind (new mail coalesces per mailbox and
    /// reports the count of the later poll). So a caller MUST NOT wait for room to report.
    pub fn handle_event_refused(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Ready(ready) => self.events.ready = Some(ready),
            SessionEvent::NewMail {
                mailbox, preview, ..
            } => {
                self.events.new_mail |= 1 << mailbox;
                if preview.is_some() {
                    self.events.preview = preview;
                }
            }
            SessionEvent::Ended(reason) => self.events.ended = Some(reason),
        }
    }
}
