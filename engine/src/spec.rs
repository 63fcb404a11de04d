//! What to watch: the account, its credentials, and the baseline the app has already seen.

use std::fmt;

use zeroize::Zeroizing;

/// Longest username, password or token accepted. Commands carrying them must fit the
/// reactor's transmit buffer (see `session::TX_BUF_LEN`) with room to spare.
pub const CREDENTIAL_LEN_MAX: usize = 4 * 1024;
/// Longest mailbox name, in bytes as sent on the wire.
pub const MAILBOX_LEN_MAX: usize = 1024;
/// Most mailboxes one session watches (all on its one connection).
pub const MAILBOXES_MAX: usize = 16;
/// Longest host name.
pub const HOST_LEN_MAX: usize = 253;

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (port 993).
    Tls,
    /// Plain TCP upgraded with STARTTLS before login (port 143). Refuses to log in if the
    /// server does not offer STARTTLS.
    StartTls,
    /// No TLS at all. Only for test setups and operators who explicitly allow it.
    DangerousPlain,
}

/// The secret part of a login. Zeroized on drop; `Debug` never shows it.
pub enum Secret {
    Password(Zeroizing<Vec<u8>>),
    /// An OAuth2 access token, sent with AUTHENTICATE OAUTHBEARER or XOAUTH2.
    OAuth2Token(Zeroizing<Vec<u8>>),
}

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Secret::Password(b) | Secret::OAuth2Token(b) => b,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::OAuth2Token(_) => f.write_str("OAuth2Token(<redacted>)"),
        }
    }
}

/// The baseline the app has already seen: if EXAMINE reports a different UIDVALIDITY or a
/// higher UIDNEXT, new mail is reported at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Since {
    pub uidvalidity: u32,
    pub uidnext: u32,
}

/// One account to watch.
#[derive(Debug)]
pub struct WatchSpec {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub secret: Secret,
    /// The mailboxes to watch, in UTF-8 (sent in modified UTF-7). The first is opened
    /// with EXAMINE; the others are watched with NOTIFY or polled with STATUS on the same
    /// connection. `NewMail` events name them by their index here.
    pub mailboxes: Vec<String>,
    pub since: Option<Since>,
}

/// Why a spec was refused before any connection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError {
    EmptyHost,
    HostTooLong,
    EmptyUsername,
    CredentialTooLong,
    /// A NUL byte cannot be sent in any login command.
    NulInCredential,
    EmptyMailbox,
    MailboxTooLong,
    /// No mailbox, or more than [`MAILBOXES_MAX`].
    MailboxCount,
    /// A mailbox name holds a control character.
    MailboxName,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecError::EmptyHost => "host is empty",
            SpecError::HostTooLong => "host is too long",
            SpecError::EmptyUsername => "username is empty",
            SpecError::CredentialTooLong => "username, password or token is too long",
            SpecError::NulInCredential => "username, password or token contains a NUL byte",
            SpecError::EmptyMailbox => "mailbox name is empty",
            SpecError::MailboxTooLong => "mailbox name is too long",
            SpecError::MailboxCount => "watch 1 to 16 mailboxes",
            SpecError::MailboxName => "mailbox names must not hold control characters",
        })
    }
}

impl std::error::Error for SpecError {}

impl WatchSpec {
    /// Checks the limits every session relies on.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.host.is_empty() {
            return Err(SpecError::EmptyHost);
        }
        if self.host.len() > HOST_LEN_MAX {
            return Err(SpecError::HostTooLong);
        }
        if self.username.is_empty() {
            return Err(SpecError::EmptyUsername);
        }
        let secret = self.secret.bytes();
        if self.username.len() > CREDENTIAL_LEN_MAX || secret.len() > CREDENTIAL_LEN_MAX {
            return Err(SpecError::CredentialTooLong);
        }
        if self.username.bytes().any(|b| b == 0) || secret.contains(&0) {
            return Err(SpecError::NulInCredential);
        }
        if self.mailboxes.is_empty() || self.mailboxes.len() > MAILBOXES_MAX {
            return Err(SpecError::MailboxCount);
        }
        for name in &self.mailboxes {
            if name.is_empty() {
                return Err(SpecError::EmptyMailbox);
            }
            if name.len() > MAILBOX_LEN_MAX {
                return Err(SpecError::MailboxTooLong);
            }
            if name.chars().any(char::is_control) {
                return Err(SpecError::MailboxName);
            }
        }
        Ok(())
    }
}
