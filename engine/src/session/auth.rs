//! Logging in: which mechanism to use given the server's capabilities, the login command,
//! and how it is split at synchronizing literals.
//!
//! RFCs: RFC 3501 §6.2.2-6.2.3 (AUTHENTICATE, LOGIN), RFC 4959 (SASL-IR), RFC 4616 (PLAIN),
//! RFC 7628 (OAUTHBEARER), RFC 7888 (LITERAL+), Google's XOAUTH2.

use imap_codec_lite::{
    Command, EncodeError, Sasl, OAUTHBEARER_ERROR_ACK, SASL_CANCEL, XOAUTH2_ERROR_ACK,
};

use super::caps::Caps;
use super::Setup;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AuthMechanism {
    Login,
    Plain,
    XOAuth2,
    OAuthBearer,
}

/// `auth_next_part` once the SASL exchange has been cancelled.
pub(super) const SASL_CANCELLED: u8 = u8::MAX;

/// The mechanism to log in with, or None when the server offers none we can use with
/// this kind of secret (`oauth`: a bearer token rather than a password).
pub(super) fn choose(caps: Caps, oauth: bool) -> Option<AuthMechanism> {
    if oauth {
        if caps.has(Caps::AUTH_OAUTHBEARER) {
            Some(AuthMechanism::OAuthBearer)
        } else if caps.has(Caps::AUTH_XOAUTH2) {
            Some(AuthMechanism::XOAuth2)
        } else {
            None
        }
    } else if caps.has(Caps::AUTH_PLAIN) && caps.has(Caps::SASL_IR) {
        // One round trip, and base64 sidesteps every quoting question.
        Some(AuthMechanism::Plain)
    } else if !caps.has(Caps::LOGINDISABLED) {
        // One round trip with LITERAL+, where PLAIN without SASL-IR takes two.
        Some(AuthMechanism::Login)
    } else if caps.has(Caps::AUTH_PLAIN) {
        Some(AuthMechanism::Plain)
    } else {
        None
    }
}

/// The login command for `mechanism`. Fails when the secret has already been wiped.
pub(super) fn command(
    mechanism: AuthMechanism,
    setup: &Setup,
    sasl_ir: bool,
) -> Result<Command<'_>, EncodeError> {
    let secret = setup
        .secret
        .as_ref()
        .ok_or(EncodeError::Unencodable {
            field: "credentials",
        })?
        .bytes();
    let username = setup.username.as_bytes();
    Ok(match mechanism {
        AuthMechanism::Login => Command::Login {
            username,
            password: secret,
        },
        AuthMechanism::Plain => Command::Authenticate {
            mechanism: Sasl::Plain {
                username,
                password: secret,
            },
            sasl_ir,
        },
        AuthMechanism::XOAuth2 => Command::Authenticate {
            mechanism: Sasl::XOAuth2 {
                username,
                token: secret,
            },
            sasl_ir,
        },
        AuthMechanism::OAuthBearer => Command::Authenticate {
            mechanism: Sasl::OAuthBearer {
                username,
                host: setup.host.as_bytes(),
                port: setup.port,
                token: secret,
            },
            sasl_ir,
        },
    })
}

/// What answers a SASL error challenge so that the server sends its tagged NO: each
/// mechanism's acknowledgement (RFC 7628 §3.2.3, Google's XOAUTH2), a generic cancel
/// (RFC 3501 §6.2.2) otherwise.
pub(super) fn error_ack(mechanism: AuthMechanism) -> &'static [u8] {
    match mechanism {
        AuthMechanism::XOAuth2 => XOAUTH2_ERROR_ACK,
        AuthMechanism::OAuthBearer => OAUTHBEARER_ERROR_ACK,
        AuthMechanism::Login | AuthMechanism::Plain => SASL_CANCEL,
    }
}

/// Keeps part `part` of a login command of `len` bytes encoded in `out`, moved to the
/// start, and returns its length. Part `p` runs from sync wait `p-1` to wait `p` (`waits`
/// are the offsets where the encoder must wait for `+`). Whatever was encoded beyond the
/// part is zeroed: it must not linger in the caller's buffer.
pub(super) fn keep_part(out: &mut [u8], len: usize, waits: &[usize], part: u8) -> usize {
    let start = match part {
        0 => 0,
        p => waits[usize::from(p) - 1],
    };
    let end = waits.get(usize::from(part)).copied().unwrap_or(len);
    out.copy_within(start..end, 0);
    out[end - start..len].fill(0);
    end - start
}
