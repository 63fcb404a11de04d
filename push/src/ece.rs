//! Web Push message encryption: RFC 8291 over the RFC 8188 `aes128gcm`
//! content coding.
//!
//! Read first: RFC 8188 §2 (record and header layout), RFC 8291 §3.3–3.4 (key
//! derivation) and §4 (one record, at most 4096 octets of body).
//!
//! The body we produce is one record:
//!
//! ```text
//! header  = salt(16) || rs(4, big-endian, 4096) || idlen(1, 65) || as_public(65)
//! record  = AES-128-GCM(CEK, NONCE, payload || 0x02)     ; 0x02: last record
//! ```
//!
//! Key agreement ([`encrypt`]) is split from the KDF and AEAD steps
//! ([`encrypt_with_shared_secret`]) because ring only does ECDH with an
//! ephemeral key it generated itself: the RFC 8291 Appendix A vector can only
//! be checked by feeding its shared secret to the second half.
//!
//! Every function here never panics on any input.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::hkdf::{self, HKDF_SHA256};
use ring::rand::SecureRandom;
use std::fmt;
use zeroize::Zeroizing;

/// RFC 8291 §4 sends one record, and a push service is only required to
/// accept 4096 octets of body, so a 4096-octet record is the largest message
/// that always fits.
pub const RECORD_SIZE: u32 = 4096;
pub const SALT_LEN: usize = 16;
pub const PUBLIC_KEY_LEN: usize = 65;
pub const AUTH_SECRET_LEN: usize = 16;
pub const SHARED_SECRET_LEN: usize = 32;
/// salt(16) || rs(4) || idlen(1) || keyid(65).
pub const HEADER_LEN: usize = SALT_LEN + 4 + 1 + PUBLIC_KEY_LEN;
pub const TAG_LEN: usize = 16;
/// 4096 − 86 (header) − 16 (tag) − 1 (delimiter) = 3993, RFC 8291 §4.
pub const PAYLOAD_LEN_MAX: usize = RECORD_SIZE as usize - HEADER_LEN - TAG_LEN - 1;

/// RFC 8188 §2: the padding delimiter of the last record.
const DELIMITER_LAST: u8 = 0x02;
/// RFC 8188 §2: the padding delimiter of every record but the last.
const DELIMITER_MORE: u8 = 0x01;

/// Why a body could not be encrypted or decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EceError {
    /// The payload exceeds [`PAYLOAD_LEN_MAX`].
    PayloadTooLarge { len: usize },
    /// The peer public key is not an uncompressed point on P-256.
    PublicKeyRejected,
    /// A private key given to [`decrypt`] is not a valid P-256 scalar.
    PrivateKeyRejected,
    /// The system random generator failed.
    Rng,
    /// The crypto library refused an operation that cannot fail with our
    /// fixed lengths; kept as an error rather than a panic.
    Crypto,
    /// Fewer bytes than the RFC 8188 header needs.
    HeaderTruncated,
    /// `rs` below 18 (RFC 8188 §2.1: smaller values are invalid).
    RecordSizeInvalid { rs: u32 },
    /// `idlen` is not 65, so the key id is not a P-256 public key.
    KeyIdLength { len: u8 },
    /// The body holds more than one record; we only ever send one.
    MultipleRecords,
    /// The record is shorter than a tag plus a delimiter.
    RecordTruncated,
    /// AES-GCM authentication failed: wrong keys or altered bytes.
    AuthenticationFailed,
    /// No 0x02 delimiter before the zero padding (0x01 means a record follows).
    PaddingInvalid,
}

impl fmt::Display for EceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PayloadTooLarge { len } => {
                write!(f, "payload of {len} bytes exceeds {PAYLOAD_LEN_MAX}")
            }
            Self::PublicKeyRejected => f.write_str("public key is not a P-256 point"),
            Self::PrivateKeyRejected => f.write_str("private key is not a P-256 scalar"),
            Self::Rng => f.write_str("system random generator failed"),
            Self::Crypto => f.write_str("crypto library refused a fixed-size operation"),
            Self::HeaderTruncated => f.write_str("body shorter than the aes128gcm header"),
            Self::RecordSizeInvalid { rs } => write!(f, "record size {rs} is below 18"),
            Self::KeyIdLength { len } => write!(f, "key id of {len} bytes, expected 65"),
            Self::MultipleRecords => f.write_str("body holds more than one record"),
            Self::RecordTruncated => f.write_str("record shorter than tag and delimiter"),
            Self::AuthenticationFailed => f.write_str("AES-GCM authentication failed"),
            Self::PaddingInvalid => f.write_str("record lacks the last-record delimiter"),
        }
    }
}

impl std::error::Error for EceError {}

/// Encrypts `payload` for a user agent, with a fresh ephemeral key pair and
/// salt drawn from `rng` for every call (reusing either would reuse the
/// AES-GCM key and nonce, which breaks GCM outright).
///
/// `ua_public` is the subscription's `p256dh` (65-byte uncompressed point),
/// `auth_secret` its `auth`.
pub fn encrypt(
    payload: &[u8],
    ua_public: &[u8; PUBLIC_KEY_LEN],
    auth_secret: &[u8; AUTH_SECRET_LEN],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, EceError> {
    // Checked before any key work so an oversized payload costs nothing.
    check_payload_len(payload)?;
    let mut salt = [0u8; SALT_LEN];
    rng.fill(&mut salt).map_err(|_| EceError::Rng)?;
    let private = EphemeralPrivateKey::generate(&ECDH_P256, rng).map_err(|_| EceError::Rng)?;
    let public = private.compute_public_key().map_err(|_| EceError::Rng)?;
    let as_public: [u8; PUBLIC_KEY_LEN] =
        public.as_ref().try_into().map_err(|_| EceError::Crypto)?;
    let peer = UnparsedPublicKey::new(&ECDH_P256, ua_public);
    // ring validates the peer point here: an off-curve p256dh fails the
    // agreement instead of yielding a secret with attacker-chosen structure.
    agreement::agree_ephemeral(private, &peer, |secret| {
        let secret: Zeroizing<[u8; SHARED_SECRET_LEN]> =
            Zeroizing::new(secret.try_into().map_err(|_| EceError::Crypto)?);
        encrypt_with_shared_secret(&secret, &as_public, ua_public, auth_secret, &salt, payload)
    })
    .map_err(|_| EceError::PublicKeyRejected)?
}

/// The KDF and AEAD half of [`encrypt`], given the ECDH result.
///
/// The caller MUST NOT reuse a (`ecdh_secret`, `salt`) pair for two payloads;
/// this exists for test vectors and for callers with their own key agreement.
pub fn encrypt_with_shared_secret(
    ecdh_secret: &[u8; SHARED_SECRET_LEN],
    as_public: &[u8; PUBLIC_KEY_LEN],
    ua_public: &[u8; PUBLIC_KEY_LEN],
    auth_secret: &[u8; AUTH_SECRET_LEN],
    salt: &[u8; SALT_LEN],
    payload: &[u8],
) -> Result<Vec<u8>, EceError> {
    check_payload_len(payload)?;
    let ikm = derive_ikm(ecdh_secret, auth_secret, ua_public, as_public)?;
    let keys = derive_content_keys(&ikm, salt)?;

    let mut body = Vec::with_capacity(HEADER_LEN + payload.len() + 1 + TAG_LEN);
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(PUBLIC_KEY_LEN as u8);
    body.extend_from_slice(as_public);
    body.extend_from_slice(payload);
    // RFC 8188 §2: a single record is the last one; no padding beyond the
    // delimiter since our payloads reveal little through their length.
    body.push(DELIMITER_LAST);

    let key = content_key(&keys)?;
    let nonce = Nonce::assume_unique_for_key(keys.nonce);
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::empty(), &mut body[HEADER_LEN..])
        .map_err(|_| EceError::Crypto)?;
    body.extend_from_slice(tag.as_ref());
    Ok(body)
}

/// The RFC 8188 §2.1 header, borrowed from a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub salt: &'a [u8; SALT_LEN],
    pub record_size: u32,
    /// For Web Push, the application server's public key.
    pub key_id: &'a [u8; PUBLIC_KEY_LEN],
}

/// Parses the header of an `aes128gcm` body (RFC 8188 §2.1):
///
/// ```text
/// +-----------+--------+-----------+---------------+
/// | salt (16) | rs (4) | idlen (1) | keyid (idlen) |
/// +-----------+--------+-----------+---------------+
/// ```
///
/// Only `idlen = 65` is accepted: RFC 8291 §4 puts the sender's public key
/// there.
pub fn parse_header(body: &[u8]) -> Result<Header<'_>, EceError> {
    let salt: &[u8; SALT_LEN] = body
        .get(..SALT_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(EceError::HeaderTruncated)?;
    let rs_bytes: [u8; 4] = body
        .get(SALT_LEN..SALT_LEN + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(EceError::HeaderTruncated)?;
    let record_size = u32::from_be_bytes(rs_bytes);
    if record_size < 18 {
        return Err(EceError::RecordSizeInvalid { rs: record_size });
    }
    let idlen = *body.get(SALT_LEN + 4).ok_or(EceError::HeaderTruncated)?;
    if usize::from(idlen) != PUBLIC_KEY_LEN {
        return Err(EceError::KeyIdLength { len: idlen });
    }
    let key_id: &[u8; PUBLIC_KEY_LEN] = body
        .get(SALT_LEN + 5..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(EceError::HeaderTruncated)?;
    Ok(Header {
        salt,
        record_size,
        key_id,
    })
}

/// Decrypts a single-record body given the ECDH result between the user
/// agent's private key and the header's key id. This is what a browser does;
/// we only need it for tests and tools.
pub fn decrypt_with_shared_secret(
    body: &[u8],
    ecdh_secret: &[u8; SHARED_SECRET_LEN],
    ua_public: &[u8; PUBLIC_KEY_LEN],
    auth_secret: &[u8; AUTH_SECRET_LEN],
) -> Result<Vec<u8>, EceError> {
    let header = parse_header(body)?;
    let record = &body[HEADER_LEN..];
    if record.len() > header.record_size as usize {
        return Err(EceError::MultipleRecords);
    }
    if record.len() < TAG_LEN + 1 {
        return Err(EceError::RecordTruncated);
    }
    let ikm = derive_ikm(ecdh_secret, auth_secret, ua_public, header.key_id)?;
    let keys = derive_content_keys(&ikm, header.salt)?;
    let key = content_key(&keys)?;
    let mut plain = record.to_vec();
    let opened_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(keys.nonce),
            Aad::empty(),
            &mut plain,
        )
        .map_err(|_| EceError::AuthenticationFailed)?
        .len();
    plain.truncate(opened_len);
    strip_padding(&mut plain)?;
    Ok(plain)
}

/// Decrypts with the user agent's raw private scalar (32 bytes, big-endian).
/// Test and tool use only: it needs RustCrypto's p256, since ring cannot
/// import a private key for ECDH.
#[cfg(any(test, feature = "testing"))]
pub fn decrypt(
    body: &[u8],
    ua_private_key: &[u8; 32],
    auth_secret: &[u8; AUTH_SECRET_LEN],
) -> Result<Vec<u8>, EceError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;

    let secret =
        p256::SecretKey::from_slice(ua_private_key).map_err(|_| EceError::PrivateKeyRejected)?;
    let ua_public: [u8; PUBLIC_KEY_LEN] = secret
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .try_into()
        .map_err(|_| EceError::Crypto)?;
    let header = parse_header(body)?;
    let as_public =
        p256::PublicKey::from_sec1_bytes(header.key_id).map_err(|_| EceError::PublicKeyRejected)?;
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), as_public.as_affine());
    let ecdh_secret: Zeroizing<[u8; SHARED_SECRET_LEN]> =
        Zeroizing::new((*shared.raw_secret_bytes()).into());
    decrypt_with_shared_secret(body, &ecdh_secret, &ua_public, auth_secret)
}

fn check_payload_len(payload: &[u8]) -> Result<(), EceError> {
    if payload.len() > PAYLOAD_LEN_MAX {
        return Err(EceError::PayloadTooLarge { len: payload.len() });
    }
    Ok(())
}

/// RFC 8188 §2: "padding delimiter octet ... followed by zero or more
/// octets of value 0". The delimiter of the last record is 0x02.
fn strip_padding(plain: &mut Vec<u8>) -> Result<(), EceError> {
    let delimiter_at = plain
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(EceError::PaddingInvalid)?;
    match plain[delimiter_at] {
        DELIMITER_LAST => {
            plain.truncate(delimiter_at);
            Ok(())
        }
        DELIMITER_MORE => Err(EceError::MultipleRecords),
        _ => Err(EceError::PaddingInvalid),
    }
}

/// An HKDF output length; ring wants a `KeyType` rather than a `usize`.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// RFC 8291 §3.3–3.4:
///
/// ```text
/// PRK_key = HMAC-SHA-256(auth_secret, ecdh_secret)
/// key_info = "WebPush: info" || 0x00 || ua_public || as_public
/// IKM = HMAC-SHA-256(PRK_key, key_info || 0x01)
/// ```
///
/// The key order is not symmetric: user agent first, then sender.
fn derive_ikm(
    ecdh_secret: &[u8; SHARED_SECRET_LEN],
    auth_secret: &[u8; AUTH_SECRET_LEN],
    ua_public: &[u8; PUBLIC_KEY_LEN],
    as_public: &[u8; PUBLIC_KEY_LEN],
) -> Result<Zeroizing<[u8; 32]>, EceError> {
    let prk_key = hkdf::Salt::new(HKDF_SHA256, auth_secret).extract(ecdh_secret);
    let info: [&[u8]; 3] = [b"WebPush: info\0", ua_public, as_public];
    let mut ikm = Zeroizing::new([0u8; 32]);
    prk_key
        .expand(&info, Len(32))
        .and_then(|okm| okm.fill(&mut ikm[..]))
        .map_err(|_| EceError::Crypto)?;
    Ok(ikm)
}

struct ContentKeys {
    cek: Zeroizing<[u8; 16]>,
    nonce: [u8; 12],
}

/// RFC 8188 §2.2–2.3, with the salt from the header:
///
/// ```text
/// PRK   = HMAC-SHA-256(salt, IKM)
/// CEK   = HKDF-Expand(PRK, "Content-Encoding: aes128gcm" || 0x00, 16)
/// NONCE = HKDF-Expand(PRK, "Content-Encoding: nonce" || 0x00, 12) XOR SEQ
/// ```
///
/// SEQ is 0 for our single record, so NONCE is the expansion itself.
fn derive_content_keys(ikm: &[u8; 32], salt: &[u8; SALT_LEN]) -> Result<ContentKeys, EceError> {
    let prk = hkdf::Salt::new(HKDF_SHA256, salt).extract(ikm);
    let mut cek = Zeroizing::new([0u8; 16]);
    prk.expand(&[b"Content-Encoding: aes128gcm\0"], Len(16))
        .and_then(|okm| okm.fill(&mut cek[..]))
        .map_err(|_| EceError::Crypto)?;
    let mut nonce = [0u8; 12];
    prk.expand(&[b"Content-Encoding: nonce\0"], Len(12))
        .and_then(|okm| okm.fill(&mut nonce))
        .map_err(|_| EceError::Crypto)?;
    Ok(ContentKeys { cek, nonce })
}

fn content_key(keys: &ContentKeys) -> Result<LessSafeKey, EceError> {
    let unbound = UnboundKey::new(&AES_128_GCM, &keys.cek[..]).map_err(|_| EceError::Crypto)?;
    Ok(LessSafeKey::new(unbound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b64;
    use ring::rand::SystemRandom;

    /// RFC 8291 §5 and Appendix A, base64url as printed there.
    mod rfc8291 {
        pub const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
        pub const AS_PUBLIC: &str =
            "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
        pub const UA_PUBLIC: &str =
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
        pub const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
        pub const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
        pub const AUTH_SECRET: &str = "BTBZMqHH6r4Tts7J_aSIgg";
        pub const ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
        pub const IKM: &str = "S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg";
        pub const CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
        pub const NONCE: &str = "4h_95klXJ5E_qnoN";
        pub const BODY: &str = concat!(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmY",
            "WAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexS",
            "gSxsj_Qulcy4a-fN",
        );
    }

    fn arr<const N: usize>(b64url: &str) -> [u8; N] {
        b64::decode(b64url)
            .expect("test vector is base64url")
            .try_into()
            .expect("test vector length")
    }

    #[test]
    fn rfc8291_intermediate_keys() {
        let ikm = derive_ikm(
            &arr(rfc8291::ECDH_SECRET),
            &arr(rfc8291::AUTH_SECRET),
            &arr(rfc8291::UA_PUBLIC),
            &arr(rfc8291::AS_PUBLIC),
        )
        .unwrap();
        assert_eq!(*ikm, arr::<32>(rfc8291::IKM));
        let keys = derive_content_keys(&ikm, &arr(rfc8291::SALT)).unwrap();
        assert_eq!(*keys.cek, arr::<16>(rfc8291::CEK));
        assert_eq!(keys.nonce, arr::<12>(rfc8291::NONCE));
    }

    #[test]
    fn rfc8291_body_is_byte_exact() {
        let body = encrypt_with_shared_secret(
            &arr(rfc8291::ECDH_SECRET),
            &arr(rfc8291::AS_PUBLIC),
            &arr(rfc8291::UA_PUBLIC),
            &arr(rfc8291::AUTH_SECRET),
            &arr(rfc8291::SALT),
            rfc8291::PLAINTEXT.as_bytes(),
        )
        .unwrap();
        assert_eq!(body, b64::decode(rfc8291::BODY).unwrap());
        assert_eq!(
            body.len(),
            HEADER_LEN + rfc8291::PLAINTEXT.len() + 1 + TAG_LEN
        );
    }

    #[test]
    fn rfc8291_body_decrypts_with_ua_private_key() {
        let body = b64::decode(rfc8291::BODY).unwrap();
        let plain = decrypt(&body, &arr(rfc8291::UA_PRIVATE), &arr(rfc8291::AUTH_SECRET)).unwrap();
        assert_eq!(plain, rfc8291::PLAINTEXT.as_bytes());

        let header = parse_header(&body).unwrap();
        assert_eq!(header.record_size, 4096);
        assert_eq!(header.salt, &arr::<16>(rfc8291::SALT));
        assert_eq!(header.key_id, &arr::<65>(rfc8291::AS_PUBLIC));
    }

    #[test]
    fn round_trip_with_fresh_subscriber() {
        let rng = SystemRandom::new();
        let subscriber = crate::testing::Subscriber::generate();
        for payload in [
            &b""[..],
            b"{\"type\":\"new_mail\"}",
            &[0u8; PAYLOAD_LEN_MAX],
        ] {
            let body = encrypt(payload, subscriber.p256dh(), subscriber.auth(), &rng).unwrap();
            assert!(body.len() <= RECORD_SIZE as usize);
            assert_eq!(subscriber.decrypt(&body).unwrap(), payload);
        }
    }

    #[test]
    fn each_message_gets_fresh_salt_and_sender_key() {
        let rng = SystemRandom::new();
        let subscriber = crate::testing::Subscriber::generate();
        let a = encrypt(b"same", subscriber.p256dh(), subscriber.auth(), &rng).unwrap();
        let b = encrypt(b"same", subscriber.p256dh(), subscriber.auth(), &rng).unwrap();
        assert_ne!(a[..SALT_LEN], b[..SALT_LEN]);
        assert_ne!(a[SALT_LEN + 5..HEADER_LEN], b[SALT_LEN + 5..HEADER_LEN]);
    }

    #[test]
    fn oversized_payload_is_refused() {
        let rng = SystemRandom::new();
        let subscriber = crate::testing::Subscriber::generate();
        let payload = vec![b'x'; PAYLOAD_LEN_MAX + 1];
        assert_eq!(
            encrypt(&payload, subscriber.p256dh(), subscriber.auth(), &rng),
            Err(EceError::PayloadTooLarge {
                len: PAYLOAD_LEN_MAX + 1
            })
        );
    }

    #[test]
    fn off_curve_public_key_is_refused() {
        let rng = SystemRandom::new();
        let mut bogus: [u8; 65] = arr(rfc8291::UA_PUBLIC);
        bogus[40] ^= 0xff;
        assert_eq!(
            encrypt(b"x", &bogus, &[0; 16], &rng),
            Err(EceError::PublicKeyRejected)
        );
    }

    #[test]
    fn tampering_and_truncation_are_detected() {
        let subscriber = crate::testing::Subscriber::generate();
        let rng = SystemRandom::new();
        let body = encrypt(b"hello", subscriber.p256dh(), subscriber.auth(), &rng).unwrap();

        let mut flipped = body.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            subscriber.decrypt(&flipped),
            Err(EceError::AuthenticationFailed)
        );

        for cut in [0, 10, HEADER_LEN - 1] {
            assert_eq!(
                parse_header(&body[..cut]),
                Err(EceError::HeaderTruncated),
                "cut at {cut}"
            );
        }
        assert_eq!(
            subscriber.decrypt(&body[..HEADER_LEN + TAG_LEN]),
            Err(EceError::RecordTruncated)
        );
        let mut small_rs = body.clone();
        small_rs[16..20].copy_from_slice(&17u32.to_be_bytes());
        assert_eq!(
            parse_header(&small_rs),
            Err(EceError::RecordSizeInvalid { rs: 17 })
        );
        let mut bad_idlen = body;
        bad_idlen[20] = 64;
        assert_eq!(
            parse_header(&bad_idlen),
            Err(EceError::KeyIdLength { len: 64 })
        );
    }

    #[test]
    fn padding_rules() {
        let mut v = vec![b'a', DELIMITER_LAST, 0, 0];
        strip_padding(&mut v).unwrap();
        assert_eq!(v, b"a");
        assert_eq!(
            strip_padding(&mut vec![b'a', DELIMITER_MORE]),
            Err(EceError::MultipleRecords)
        );
        assert_eq!(
            strip_padding(&mut vec![0, 0]),
            Err(EceError::PaddingInvalid)
        );
        assert_eq!(
            strip_padding(&mut vec![b'a']),
            Err(EceError::PaddingInvalid)
        );
    }
}
