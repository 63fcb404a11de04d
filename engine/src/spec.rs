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
/// Most header names in a [`Filter`].
pub const FILTER_HEADERS_MAX: usize = 8;
/// Most sender addresses in a [`Filter`].
pub const FILTER_SENDERS_MAX: usize = 64;
/// Longest header name in a [`Filter`] (RFC 5322 sets no limit; real names are short).
pub const HEADER_NAME_LEN_MAX: usize = 64;
/// Longest sender address in a [`Filter`] (RFC 5321 §4.5.3.1.3: a path is at most 256
/// octets, angle brackets included).
pub const SENDER_LEN_MAX: usize = 254;

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

/// Which new messages are worth a `NewMail`: those that carry one of `headers` (present,
/// whatever its value) or come from one of `senders`. At least one of the two lists must be
/// non-empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Header field names, such as `Chat-Version` (the email-chat convention). Compared
    /// case-insensitively (RFC 5322 §1.2.2).
    pub headers: Vec<String>,
    /// Addresses, such as `alice@example.org`, compared case-insensitively with the
    /// address in the `From` field.
    pub senders: Vec<String>,
}

impl Filter {
    /// Checks the bounds a session relies on.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.headers.is_empty() && self.senders.is_empty() {
            return Err(SpecError::FilterEmpty);
        }
        if self.headers.len() > FILTER_HEADERS_MAX {
            return Err(SpecError::FilterHeader);
        }
        if !self.headers.iter().all(|h| is_header_name(h)) {
            return Err(SpecError::FilterHeader);
        }
        if self.senders.len() > FILTER_SENDERS_MAX {
            return Err(SpecError::FilterSender);
        }
        if !self.senders.iter().all(|s| is_sender(s)) {
            return Err(SpecError::FilterSender);
        }
        Ok(())
    }
}

/// RFC 5322 §3.6.8: `field-name = 1*ftext`, `ftext = %d33-57 / %d59-126` (printable
/// ASCII but `:`). Of those, only IMAP atom characters are taken, so a name goes into
/// `HEADER.FIELDS (...)` bare: no `( ) { % * " \ ]`.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= HEADER_NAME_LEN_MAX
        && name
            .bytes()
            .all(|b| (33..=126).contains(&b) && !b"():{%*\"\\]".contains(&b))
}

/// An address to compare with `From`: `local@domain`, no spaces, controls or brackets.
fn is_sender(address: &str) -> bool {
    !address.is_empty()
        && address.len() <= SENDER_LEN_MAX
        && address.contains('@')
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"'))
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

/// What a session reports about new mail beyond the message count. Both are off by
/// default ([`WatchOptions::default`]); they apply to the selected (first) mailbox only,
/// the others report as without them. Kept apart from [`WatchSpec`] so that specs written
/// before these options existed still build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Report new mail only for messages that match. The session then fetches the
    /// filter's header fields (and `From`) of each new message with `BODY.PEEK`, never the
    /// body, never setting `\Seen`.
    pub filter: Option<Filter>,
    /// Attach `From`, `Subject` and UID of the newest new (matching) messages to
    /// `NewMail`. Off unless asked for: a preview is mail content leaving the IMAP server.
    pub preview: bool,
}

impl WatchOptions {
    /// Checks the bounds a session relies on.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.filter.as_ref().map_or(Ok(()), Filter::validate)
    }
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
    /// A filter names neither headers nor senders.
    FilterEmpty,
    /// Too many filter headers, or one is not a valid header field name.
    FilterHeader,
    /// Too many filter senders, or one is not an address.
    FilterSender,
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
            SpecError::FilterEmpty => "a filter names at least one header or sender",
            SpecError::FilterHeader => {
                "filter headers: at most 8 RFC 5322 field names of up to 64 characters"
            }
            SpecError::FilterSender => "filter senders: at most 64 addresses of up to 254 bytes",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_bounded_and_names_are_field_names() {
        let filter = |headers: &[&str], senders: &[&str]| Filter {
            headers: headers.iter().map(|s| s.to_string()).collect(),
            senders: senders.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(filter(&["Chat-Version"], &[]).validate(), Ok(()));
        assert_eq!(filter(&[], &["Bob@Example.org"]).validate(), Ok(()));
        assert_eq!(filter(&[], &[]).validate(), Err(SpecError::FilterEmpty));
        for bad in [
            "",
            "Chat:Version",
            "X Y",
            "X(",
            "X]",
            "Gr\u{fc}n",
            "X\"",
            "X*",
        ] {
            assert_eq!(
                filter(&[bad], &[]).validate(),
                Err(SpecError::FilterHeader),
                "{bad:?}"
            );
        }
        let long = "X".repeat(HEADER_NAME_LEN_MAX + 1);
        assert_eq!(
            filter(&[&long], &[]).validate(),
            Err(SpecError::FilterHeader)
        );
        let many = vec!["X"; FILTER_HEADERS_MAX + 1];
        assert_eq!(filter(&many, &[]).validate(), Err(SpecError::FilterHeader));
        for bad in ["", "bob", "a b@c", "<a@b>", "a@b,c@d"] {
            assert_eq!(
                filter(&[], &[bad]).validate(),
                Err(SpecError::FilterSender),
                "{bad:?}"
            );
        }
        let many = vec!["a@b"; FILTER_SENDERS_MAX + 1];
        assert_eq!(filter(&[], &many).validate(), Err(SpecError::FilterSender));
    }
}
