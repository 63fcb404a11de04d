//! What a session sends: the queue of commands waiting for the socket (at most a command
//! and a DONE), and their encoding into the caller's buffer by imap-codec-lite.

use imap_codec_lite::{encode, Command, EncodeError, Encoded, LiteralMode, StatusRequest, DONE};

use super::auth;
use super::caps::Caps;
use super::fetch::{FETCH_FIELDS_MAX, HEADER_BLOCK_LEN_MAX};
use super::Session;
use crate::spec::MAILBOXES_MAX;

/// What ID (RFC 2971) says about us, to servers that ask.
const ID_PAIRS: &[(&[u8], &[u8])] = &[
    (b"name", b"imap-push-proxy"),
    (b"version", env!("CARGO_PKG_VERSION").as_bytes()),
];

/// Size of the buffer a caller should lend [`Session::poll_transmit`]. Every command fits it:
/// credentials are bounded by `spec::CREDENTIAL_LEN_MAX` and base64 grows them by 4/3.
pub const TX_BUF_LEN: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CommandKind {
    Capability,
    StartTls,
    Auth,
    Id,
    Examine,
    Status(u8),
    Notify,
    Idle,
    Noop,
    Fetch,
    Logout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tx {
    /// A tagged command, from the given part on (parts are split at sync-literal waits).
    Command {
        kind: CommandKind,
        tag: u32,
        part: u8,
    },
    Done,
    /// Answers a SASL error challenge so the server sends its tagged NO.
    SaslCancel,
}

/// Most items queued for transmission at once (DONE followed by LOGOUT).
const TX_QUEUE_LEN: usize = 2;

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TxQueue {
    items: [Option<Tx>; TX_QUEUE_LEN],
}

impl TxQueue {
    /// Queues `tx`; false if the queue is full, which only a peer that makes us answer
    /// faster than we send can cause.
    #[must_use]
    pub(super) fn push(&mut self, tx: Tx) -> bool {
        match self.items.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(tx);
                true
            }
            None => false,
        }
    }

    pub(super) fn front(&self) -> Option<Tx> {
        self.items[0]
    }

    /// The command with `tag` is still waiting to be sent.
    pub(super) fn holds_command(&self, tag: u32) -> bool {
        self.items
            .iter()
            .any(|tx| matches!(tx, Some(Tx::Command { tag: t, part: 0, .. }) if *t == tag))
    }

    pub(super) fn pop(&mut self) {
        self.items.rotate_left(1);
        self.items[TX_QUEUE_LEN - 1] = None;
    }

    pub(super) fn clear(&mut self) {
        self.items = [None; TX_QUEUE_LEN];
    }

    /// Drops queued commands that are not sent yet, keeping a queued DONE.
    pub(super) fn clear_commands(&mut self) {
        let done = self.items.contains(&Some(Tx::Done));
        self.clear();
        if done {
            self.items[0] = Some(Tx::Done);
        }
    }
}

impl Session {
    pub(super) fn write_tx(&mut self, tx: Tx, out: &mut [u8]) -> Result<usize, EncodeError> {
        let (kind, tag, part) = match tx {
            Tx::Done => return copy_into(DONE, out),
            // Each mechanism's way to acknowledge an error challenge.
            Tx::SaslCancel => return copy_into(auth::error_ack(self.auth), out),
            Tx::Command { kind, tag, part } => (kind, tag, part),
        };
        let encoded = self.encode_command(kind, tag, out)?;
        if kind != CommandKind::Auth {
            return Ok(encoded.len);
        }
        self.auth_parts = encoded.waits().len() as u8 + 1;
        Ok(auth::keep_part(out, encoded.len, encoded.waits(), part))
    }

    fn encode_command(
        &self,
        kind: CommandKind,
        tag: u32,
        out: &mut [u8],
    ) -> Result<Encoded, EncodeError> {
        let setup = self.setup.as_deref();
        let command = match kind {
            CommandKind::Capability => Command::Capability,
            CommandKind::StartTls => Command::StartTls,
            CommandKind::Idle => Command::Idle,
            CommandKind::Noop => Command::Noop,
            CommandKind::Logout => Command::Logout,
            CommandKind::Examine => Command::Examine {
                mailbox: setup.map_or(&b"INBOX"[..], |s| &s.mailbox[..]),
            },
            CommandKind::Id => Command::Id { pairs: ID_PAIRS },
            CommandKind::Status(i) => Command::Status {
                mailbox: self
                    .others
                    .as_deref()
                    .and_then(|o| o.get(usize::from(i)))
                    .map_or(&b"INBOX"[..], |o| &o.wire[..]),
                items: StatusRequest {
                    messages: true,
                    uidnext: true,
                    ..StatusRequest::default()
                },
            },
            CommandKind::Fetch => {
                let plan = self.plan.as_deref().ok_or(EncodeError::Unencodable {
                    field: "header fields",
                })?;
                let mut names: [&[u8]; FETCH_FIELDS_MAX] = [&[]; FETCH_FIELDS_MAX];
                let mut count = 0;
                for (slot, field) in names.iter_mut().zip(plan.fields()) {
                    *slot = field;
                    count += 1;
                }
                return encode(
                    tag,
                    &Command::UidFetchHeaders {
                        from_uid: plan.first_uid(),
                        fields: &names[..count],
                        octets_max: HEADER_BLOCK_LEN_MAX,
                    },
                    self.literal_mode(),
                    out,
                );
            }
            CommandKind::Notify => {
                let mut names: [&[u8]; MAILBOXES_MAX] = [&[]; MAILBOXES_MAX];
                let others = self.others.as_deref().unwrap_or(&[]);
                for (slot, other) in names.iter_mut().zip(others) {
                    *slot = &other.wire;
                }
                let count = others.len().min(MAILBOXES_MAX);
                // Dovecot 2.3 never reports a mailbox that NOTIFY names in modified UTF-7
                // (tests/mailboxes.rs shows it), so such a set is watched as PERSONAL and
                // the STATUS responses are matched to our mailboxes by name.
                let personal = others.iter().any(|o| o.wire.contains(&b'&'));
                return encode(
                    tag,
                    &Command::Notify {
                        mailboxes: &names[..count],
                        personal,
                    },
                    self.literal_mode(),
                    out,
                );
            }
            CommandKind::Auth => {
                let setup = setup.ok_or(EncodeError::Unencodable {
                    field: "credentials",
                })?;
                auth::command(self.auth, setup, self.caps.has(Caps::SASL_IR))?
            }
        };
        encode(tag, &command, self.literal_mode(), out)
    }

    fn literal_mode(&self) -> LiteralMode {
        if self.caps.has(Caps::LITERAL_PLUS) {
            LiteralMode::NonSync
        } else if self.caps.has(Caps::LITERAL_MINUS) {
            // RFC 7888: non-synchronizing up to 4096 bytes, synchronizing above.
            LiteralMode::LiteralMinus
        } else {
            LiteralMode::Sync
        }
    }

    pub(super) fn after_transmit(&mut self, tx: Tx) {
        let Tx::Command { kind, part, .. } = tx else {
            return;
        };
        match kind {
            CommandKind::Auth => {
                self.auth_next_part = part + 1;
                if self.auth_next_part >= self.auth_parts {
                    // The whole login has been handed out: nothing needs the secret any more.
                    self.wipe_secret();
                }
            }
            CommandKind::Examine => self.setup = None,
            _ => {}
        }
    }
}

fn copy_into(bytes: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let dst = out
        .get_mut(..bytes.len())
        .ok_or(EncodeError::BufferTooSmall {
            needed: bytes.len(),
        })?;
    dst.copy_from_slice(bytes);
    Ok(bytes.len())
}
