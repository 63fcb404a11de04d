//! A stand-in for a browser's push subscription, for tests (this crate's,
//! and other crates' with the `testing` feature).
//!
//! Never use it in production: it holds a private key in plain memory and
//! panics if the system RNG fails.

use crate::b64;
use crate::ece::{self, EceError};
use crate::endpoint::{Keys, PushTarget, TargetError};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use std::fmt;
use zeroize::Zeroizing;

/// A user agent's key pair and auth secret.
pub struct Subscriber {
    private_key: Zeroizing<[u8; 32]>,
    p256dh: [u8; ece::PUBLIC_KEY_LEN],
    auth: [u8; ece::AUTH_SECRET_LEN],
}

impl Subscriber {
    /// Draws a fresh key pair and auth secret from the system RNG.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let mut auth = [0u8; ece::AUTH_SECRET_LEN];
        rng.fill(&mut auth).expect("system RNG");
        // A random 32-byte string is a valid scalar unless it is zero or at
        // least the group order, which happens with probability ~2^-32.
        loop {
            let mut scalar = Zeroizing::new([0u8; 32]);
            rng.fill(&mut scalar[..]).expect("system RNG");
            if let Ok(secret) = p256::SecretKey::from_slice(&scalar[..]) {
                let point = secret.public_key().to_encoded_point(false);
                let p256dh = point
                    .as_bytes()
                    .try_into()
                    .expect("uncompressed point is 65 bytes");
                return Self {
                    private_key: scalar,
                    p256dh,
                    auth,
                };
            }
        }
    }

    pub fn p256dh(&self) -> &[u8; ece::PUBLIC_KEY_LEN] {
        &self.p256dh
    }

    pub fn auth(&self) -> &[u8; ece::AUTH_SECRET_LEN] {
        &self.auth
    }

    /// `keys.p256dh` as a browser's `toJSON()` gives it.
    pub fn p256dh_b64url(&self) -> String {
        b64::encode(&self.p256dh)
    }

    /// `keys.auth` as a browser's `toJSON()` gives it.
    pub fn auth_b64url(&self) -> String {
        b64::encode(&self.auth)
    }

    pub fn keys(&self) -> Keys {
        Keys::new(self.p256dh, self.auth).expect("p256 produced an on-curve point")
    }

    /// A Web Push target at `endpoint` with this subscriber's keys.
    pub fn target(&self, endpoint: &str) -> Result<PushTarget, TargetError> {
        PushTarget::web_push(endpoint, &self.p256dh_b64url(), &self.auth_b64url())
    }

    /// The `PushSubscription.toJSON()` a browser would hand the app.
    pub fn subscription_json(&self, endpoint: &str) -> String {
        serde_json::json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": { "p256dh": self.p256dh_b64url(), "auth": self.auth_b64url() },
        })
        .to_string()
    }

    /// Decrypts an `aes128gcm` body the way the browser would.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, EceError> {
        ece::decrypt(body, &self.private_key, &self.auth)
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscriber(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_json_parses_back() {
        let s = Subscriber::generate();
        let json = s.subscription_json("https://push.example.net/x");
        let target = PushTarget::from_subscription_json(&json).unwrap();
        assert_eq!(target.keys(), Some(&s.keys()));
        assert_eq!(s.target("https://push.example.net/x").unwrap(), target);
    }
}
