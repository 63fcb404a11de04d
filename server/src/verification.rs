//! Proof that the caller owns its push endpoints, as JMAP push asks it (RFC 8620 §7.2,
//! "PushVerification"): a new subscription gets nothing but one verification push per
//! endpoint until its app echoes both codes back.
//!
//! Why: a login proves the caller owns a mailbox, not the URLs it names. Without this
//! rule anyone with one working account could point the new-mail endpoint at any public
//! URL and make the proxy POST there whenever they mail themselves.
//!
//! The rules kept here, pure (no clock, no random source, no I/O):
//! - a code is 128 random bits (the caller's), sent as base64url without padding;
//! - the codes are compared in constant time (`subtle`), never with `==`;
//! - a wrong pair counts against [`VERIFY_ATTEMPTS_MAX`]; the last one allowed exhausts
//!   the subscription, which the caller MUST then drop;
//! - a pair is good once: [`Verification::check`] consumes the verification when it
//!   answers [`Check::Verified`] (the caller drops it), so a code is single-use;
//! - new mail while verifying is remembered as one push (the newest), for activation.
//!
//! The codes are zeroized on drop and never shown by `Debug`.

use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Bytes of one code: 128 bits, as JMAP servers use for theirs.
pub const CODE_BYTES: usize = 16;

/// Random bytes a verification takes: one code per endpoint.
pub const RANDOM_BYTES: usize = 2 * CODE_BYTES;

/// Wrong code pairs a subscription may be sent at most; the one that reaches this
/// number drops it. Small, since a right pair needs no second try: an app that echoes
/// what it was pushed gets it right the first time, and a guesser (128 bits per code)
/// never does. Five leaves room for an app retrying after a lost response.
pub const VERIFY_ATTEMPTS_MAX: u32 = 5;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One verification code. Zeroized on drop; `Debug` shows nothing of it.
pub struct Code(Zeroizing<[u8; CODE_BYTES]>);

impl Code {
    pub fn from_random(bytes: [u8; CODE_BYTES]) -> Code {
        Code(Zeroizing::new(bytes))
    }

    /// The code as the verification push carries it (base64url, no padding).
    /// Whether `digest` is [`digest_of`] this code's text: how the owner judges a code
    /// another node forwarded (in constant time).
    pub fn matches_digest(&self, digest: &[u8; 32]) -> bool {
        let mine = digest_of(self.encode().as_str());
        bool::from(mine.ct_eq(digest))
    }

    pub fn encode(&self) -> Encoded {
        Encoded(Zeroizing::new(B64.encode(*self.0)))
    }

    /// Whether `given` (as the app echoes it) is this code, in time that does not
    /// depend on where they differ. Anything that is not base64url of 16 bytes is wrong.
    pub fn matches(&self, given: &str) -> bool {
        let mut decoded = Zeroizing::new([0u8; CODE_BYTES]);
        let Ok(CODE_BYTES) = B64.decode_slice(given.as_bytes(), &mut decoded[..]) else {
            return false;
        };
        bool::from(decoded.ct_eq(&*self.0))
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

/// A code as text, on its way into a verification push. Zeroized on drop; `Debug`
/// shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded(Zeroizing<String>);

impl Encoded {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encoded(<redacted>)")
    }
}

/// SHA-256 of a code as an app sent it: a node that does not hold the subscription
/// forwards this to the owner instead of the code (no code passes through the database).
pub fn digest_of(given: &str) -> [u8; 32] {
    let hash = ring::digest::digest(&ring::digest::SHA256, given.as_bytes());
    let mut digest = [0u8; 32];
    digest.copy_from_slice(hash.as_ref());
    digest
}

/// What a pair of codes sent by an app means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Check {
    /// Both codes are right: the caller MUST drop the verification (single use) and
    /// activate the subscription.
    Verified,
    /// Wrong; `left` more wrong pairs are allowed.
    Wrong { left: u32 },
    /// Wrong, and the last one allowed: the caller MUST drop the subscription.
    Exhausted,
}

/// A subscription still proving its endpoints: its two codes, the wrong pairs so far,
/// and the new mail waiting for activation (`M`, the caller's push).
#[derive(Debug)]
pub struct Verification<M> {
    new_mail: Code,
    reconnect: Code,
    attempts: u32,
    mail: Option<M>,
}

impl<M> Verification<M> {
    /// Codes from `random` ([`RANDOM_BYTES`] fresh random bytes): the first half for the
    /// new-mail endpoint, the second for the reconnect endpoint.
    pub fn new(random: &[u8; RANDOM_BYTES]) -> Verification<M> {
        let half = |at: usize| {
            let mut code = [0u8; CODE_BYTES];
            code.copy_from_slice(&random[at..at + CODE_BYTES]);
            Code::from_random(code)
        };
        Verification {
            new_mail: half(0),
            reconnect: half(CODE_BYTES),
            attempts: 0,
            mail: None,
        }
    }

    pub fn new_mail_code(&self) -> &Code {
        &self.new_mail
    }

    pub fn reconnect_code(&self) -> &Code {
        &self.reconnect
    }

    /// Judges the pair an app sent. Both codes are always compared, so the time taken
    /// does not tell which one was wrong.
    pub fn check(&mut self, new_mail: &str, reconnect: &str) -> Check {
        let right = self.new_mail.matches(new_mail) & self.reconnect.matches(reconnect);
        self.judge(right)
    }

    /// As [`Verification::check`], for codes another node forwarded as [`digest_of`]
    /// them; wrong pairs count alike.
    pub fn check_digests(&mut self, new_mail: &[u8; 32], reconnect: &[u8; 32]) -> Check {
        let right =
            self.new_mail.matches_digest(new_mail) & self.reconnect.matches_digest(reconnect);
        self.judge(right)
    }

    fn judge(&mut self, right: bool) -> Check {
        if right {
            return Check::Verified;
        }
        self.attempts += 1;
        if self.attempts >= VERIFY_ATTEMPTS_MAX {
            Check::Exhausted
        } else {
            Check::Wrong {
                left: VERIFY_ATTEMPTS_MAX - self.attempts,
            }
        }
    }

    /// New mail while verifying: kept as the one push sent at activation (the newest
    /// replaces an older one, as coalescing would merge them).
    pub fn remember(&mut self, mail: M) {
        self.mail = Some(mail);
    }

    /// The remembered new mail, for activation.
    pub fn take_mail(&mut self) -> Option<M> {
        self.mail.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(seed: u8) -> [u8; RANDOM_BYTES] {
        std::array::from_fn(|i| seed.wrapping_add(i as u8))
    }

    #[test]
    fn codes_are_128_bits_in_base64url_and_match_only_themselves() {
        let v: Verification<()> = Verification::new(&random(7));
        let (new_mail, reconnect) = (v.new_mail_code().encode(), v.reconnect_code().encode());
        let (new_mail, reconnect) = (new_mail.as_str(), reconnect.as_str());
        assert_eq!(new_mail.len(), 22, "16 bytes, unpadded");
        assert_ne!(new_mail, reconnect, "one code per endpoint");
        assert!(v.new_mail_code().matches(new_mail));
        assert!(!v.new_mail_code().matches(reconnect));
        assert!(!v.new_mail_code().matches(&new_mail[..21]), "a prefix");
        assert!(!v.new_mail_code().matches(&format!("{new_mail}=")));
        assert!(!v.new_mail_code().matches(""));
        assert!(!v.new_mail_code().matches(&format!("{new_mail}AA")));
        let debug = format!("{v:?} {:?}", v.new_mail_code().encode());
        assert!(!debug.contains(new_mail), "never in Debug: {debug}");
    }

    #[test]
    fn a_right_pair_verifies_and_wrong_pairs_exhaust_just_past_the_limit() {
        let mut v: Verification<u32> = Verification::new(&random(1));
        let (n, r) = (v.new_mail_code().encode(), v.reconnect_code().encode());
        let (n, r) = (n.as_str(), r.as_str());
        for i in 1..VERIFY_ATTEMPTS_MAX {
            let left = VERIFY_ATTEMPTS_MAX - i;
            assert_eq!(v.check(n, "wrong"), Check::Wrong { left }, "attempt {i}");
        }
        assert_eq!(v.check(n, r), Check::Verified, "right after 4 wrong");
        assert_eq!(v.check(r, n), Check::Exhausted, "the fifth wrong pair");
        let mut fresh: Verification<u32> = Verification::new(&random(1));
        assert_eq!(fresh.check(r, n), Check::Wrong { left: 4 }, "swapped");
    }

    #[test]
    fn the_newest_mail_is_remembered_once() {
        let mut v: Verification<u32> = Verification::new(&random(2));
        assert_eq!(v.take_mail(), None);
        v.remember(1);
        v.remember(2);
        assert_eq!(v.take_mail(), Some(2));
        assert_eq!(v.take_mail(), None);
    }
}
