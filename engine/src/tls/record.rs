//! The compact record layer: TLS 1.3 and 1.2 application records with raw keys only.
//!
//! Read first: RFC 8446 section 5 (record protocol, per-record nonce, inner plaintext and
//! padding) and 7.2 (KeyUpdate); RFC 5246 section 6.2.3.3 (AEAD records); RFC 5288 section 3
//! (the explicit nonce of AES-GCM in TLS 1.2); RFC 7905 section 2 (ChaCha20-Poly1305 in TLS
//! 1.2: IV XOR sequence number, no explicit nonce).
//!
//! Every primitive is ring's: AEAD seal/open and HKDF. This module only lays out nonces,
//! additional data and record headers. It holds keys, IVs, sequence numbers and (TLS 1.3)
//! traffic secrets as plain bytes; a ring key is expanded on the stack for the one record
//! being sealed or opened and dropped right after. Key material is zeroized on drop.
//!
//! Promise: never panics on any input, and never allocates (sealing appends to the caller's
//! `Vec`, opening works in place).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Largest plaintext of one record (RFC 8446 5.1, RFC 5246 6.2.1): 2^14.
pub const PLAINTEXT_MAX: usize = 16 * 1024;
/// Record header: type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// Largest TLS 1.3 record payload (RFC 8446 5.2: 2^14 + 256).
pub const CIPHERTEXT_MAX_TLS13: usize = PLAINTEXT_MAX + 256;
/// Largest TLS 1.2 record payload (RFC 5246 6.2.3: 2^14 + 2048).
pub const CIPHERTEXT_MAX_TLS12: usize = PLAINTEXT_MAX + 2048;
/// AEAD tag length of every suite here.
pub const TAG_LEN: usize = 16;
/// Explicit nonce carried by TLS 1.2 AES-GCM records (RFC 5288 3).
pub const EXPLICIT_NONCE_LEN: usize = 8;
/// Records one AES-GCM key may seal (rustls's confidentiality limit for the suite).
pub const AES_GCM_RECORDS_MAX: u64 = 1 << 24;

const IV_LEN: usize = 12;
const KEY_LEN_MAX: usize = 32;
const SECRET_LEN_MAX: usize = 48;

/// Record content types (RFC 8446 B.1).
pub mod content {
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    pub const ALERT: u8 = 21;
    pub const HANDSHAKE: u8 = 22;
    pub const APPLICATION_DATA: u8 = 23;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Suite {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128Gcm => &aead::AES_128_GCM,
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    pub fn key_len(self) -> usize {
        self.algorithm().key_len()
    }

    /// The TLS 1.3 suite's hash: SHA-384 for AES-256-GCM, SHA-256 otherwise.
    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Suite::Aes256Gcm => hkdf::HKDF_SHA384,
            _ => hkdf::HKDF_SHA256,
        }
    }

    pub fn secret_len(self) -> usize {
        match self {
            Suite::Aes256Gcm => 48,
            _ => 32,
        }
    }

    /// Records one key may seal before the session must end.
    pub fn records_max(self) -> u64 {
        match self {
            Suite::Chacha20Poly1305 => u64::MAX,
            _ => AES_GCM_RECORDS_MAX,
        }
    }
}

/// Why a record could not be sealed or opened. Each one ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The record did not authenticate (bad MAC, wrong key, reordered or replayed record).
    BadMac,
    /// The record's length is over the limit of its version, or too short for its AEAD.
    BadLength,
    /// A content type that has no place after the handshake, or a bad record version.
    UnexpectedType,
    /// The TLS 1.3 inner plaintext had no content type (all zero).
    NoInnerType,
    /// A sequence number reached its limit: no more records under this key.
    SequenceExhausted,
}

/// The raw keys of one direction.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DirectionKeys {
    key: [u8; KEY_LEN_MAX],
    /// TLS 1.3 and 1.2 ChaCha20: XORed with the sequence number. TLS 1.2 AES-GCM: the
    /// 4-byte salt, then the starting point of the explicit nonce (rustls's choice).
    iv: [u8; IV_LEN],
    seq: u64,
    /// TLS 1.3 only: the current traffic secret, for the next KeyUpdate.
    secret: [u8; SECRET_LEN_MAX],
}

impl DirectionKeys {
    /// Keys from raw bytes; `None` if a length does not fit the suite.
    pub fn new(suite: Suite, key: &[u8], iv: &[u8], seq: u64, secret: &[u8]) -> Option<Self> {
        if key.len() != suite.key_len() || iv.len() != IV_LEN {
            return None;
        }
        if !secret.is_empty() && secret.len() != suite.secret_len() {
            return None;
        }
        let mut k = DirectionKeys {
            key: [0; KEY_LEN_MAX],
            iv: [0; IV_LEN],
            seq,
            secret: [0; SECRET_LEN_MAX],
        };
        k.key[..key.len()].copy_from_slice(key);
        k.iv.copy_from_slice(iv);
        k.secret[..secret.len()].copy_from_slice(secret);
        Some(k)
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The raw key, IV, sequence number and (TLS 1.3) traffic secret, as
    /// [`DirectionKeys::new`] takes them: what a handover carries to the next process.
    pub fn parts(&self, suite: Suite, version: Version) -> (&[u8], &[u8], u64, &[u8]) {
        let secret = match version {
            Version::Tls13 => &self.secret[..suite.secret_len()],
            Version::Tls12 => &[][..],
        };
        (&self.key[..suite.key_len()], &self.iv, self.seq, secret)
    }

    /// True if `secret` (TLS 1.3) derives exactly this key and IV (RFC 8446 7.3), i.e.
    /// the secret is of the same generation as the keys.
    pub fn derives_from(&self, suite: Suite, secret: &[u8]) -> bool {
        if secret.len() != suite.secret_len() {
            return false;
        }
        let mut key = [0u8; KEY_LEN_MAX];
        let mut iv = [0u8; IV_LEN];
        expand_label(suite, secret, b"key", &mut key[..suite.key_len()]);
        expand_label(suite, secret, b"iv", &mut iv);
        let same = key == self.key && iv == self.iv;
        key.zeroize();
        iv.zeroize();
        same
    }

    /// Expands the ring key for one record.
    fn ring_key(&self, suite: Suite) -> Option<LessSafeKey> {
        UnboundKey::new(suite.algorithm(), &self.key[..suite.key_len()])
            .ok()
            .map(LessSafeKey::new)
    }

    /// IV XOR the sequence number, left-padded (RFC 8446 5.3, RFC 7905 2).
    fn nonce(&self) -> [u8; IV_LEN] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    /// TLS 1.3 KeyUpdate (RFC 8446 7.2): the next traffic secret, and its key and IV.
    fn update(&mut self, suite: Suite) {
        let len = suite.secret_len();
        let mut next = [0u8; SECRET_LEN_MAX];
        expand_label(suite, &self.secret[..len], b"traffic upd", &mut next[..len]);
        self.secret = next;
        next.zeroize();
        let mut key = [0u8; KEY_LEN_MAX];
        expand_label(
            suite,
            &self.secret[..len],
            b"key",
            &mut key[..suite.key_len()],
        );
        self.key = key;
        key.zeroize();
        expand_label(suite, &self.secret[..len], b"iv", &mut self.iv);
        self.seq = 0;
    }
}

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 7.1).
fn expand_label(suite: Suite, secret: &[u8], label: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Prk::new_less_safe(suite.hkdf(), secret);
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    // Lengths here are at most 48 bytes, far below HKDF's 255 * hash length: cannot fail.
    let filled = prk
        .expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out));
    debug_assert!(filled.is_ok());
}

/// Where an opened record's plaintext lies within the record, and its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub typ: u8,
    pub start: usize,
    pub end: usize,
}

/// The keys of both directions and what they are for.
#[derive(Clone)]
pub struct RecordLayer {
    version: Version,
    suite: Suite,
    tx: DirectionKeys,
    rx: DirectionKeys,
    /// Records that may be sealed under one key (injectable for tests).
    tx_records_max: u64,
}

impl RecordLayer {
    pub fn new(version: Version, suite: Suite, tx: DirectionKeys, rx: DirectionKeys) -> Self {
        RecordLayer {
            version,
            suite,
            tx,
            rx,
            tx_records_max: suite.records_max(),
        }
    }

    /// Lowers the number of records one key may seal (tests: sequence exhaustion).
    pub fn with_tx_records_max(mut self, max: u64) -> Self {
        self.tx_records_max = max.min(self.suite.records_max());
        self
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    pub fn seqs(&self) -> (u64, u64) {
        (self.tx.seq, self.rx.seq)
    }

    /// The sending direction's keys (for a handover).
    pub fn tx(&self) -> &DirectionKeys {
        &self.tx
    }

    /// The receiving direction's keys (for a handover).
    pub fn rx(&self) -> &DirectionKeys {
        &self.rx
    }

    /// The length of the complete record at the start of `buf`, `None` if more bytes are
    /// needed. Checks the header only.
    pub fn record_len(&self, buf: &[u8]) -> Result<Option<usize>, RecordError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let typ = header[0];
        let allowed = match self.version {
            // RFC 8446 5: after the handshake every record is protected application data.
            Version::Tls13 => typ == content::APPLICATION_DATA,
            Version::Tls12 => matches!(
                typ,
                content::ALERT | content::HANDSHAKE | content::APPLICATION_DATA
            ),
        };
        // rustls accepts any 0x03XX legacy version; so do we.
        if !allowed || header[1] != 3 {
            return Err(RecordError::UnexpectedType);
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        let (min, max) = match (self.version, self.suite) {
            (Version::Tls13, _) => (TAG_LEN + 1, CIPHERTEXT_MAX_TLS13),
            (Version::Tls12, Suite::Chacha20Poly1305) => (TAG_LEN, CIPHERTEXT_MAX_TLS12),
            (Version::Tls12, _) => (EXPLICIT_NONCE_LEN + TAG_LEN, CIPHERTEXT_MAX_TLS12),
        };
        if len < min || len > max {
            return Err(RecordError::BadLength);
        }
        Ok((buf.len() >= HEADER_LEN + len).then_some(HEADER_LEN + len))
    }

    /// Decrypts the complete record `record` (header included, as sized by
    /// [`Self::record_len`]) in place. The plaintext is `record[start..end]`.
    pub fn open(&mut self, record: &mut [u8]) -> Result<Opened, RecordError> {
        match self.record_len(record)? {
            Some(n) if n == record.len() => {}
            _ => return Err(RecordError::BadLength),
        }
        if self.rx.seq == u64::MAX {
            return Err(RecordError::SequenceExhausted);
        }
        let opened = match self.version {
            Version::Tls13 => self.open_tls13(record)?,
            Version::Tls12 => self.open_tls12(record)?,
        };
        self.rx.seq += 1;
        Ok(opened)
    }

    fn open_tls13(&self, record: &mut [u8]) -> Result<Opened, RecordError> {
        let key = self.rx.ring_key(self.suite).ok_or(RecordError::BadMac)?;
        let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
        let (header, payload) = record.split_at_mut(HEADER_LEN);
        let plain = key
            .open_in_place(nonce, Aad::from(&*header), payload)
            .map_err(|_| RecordError::BadMac)?;
        // RFC 8446 5.4: the content type is the last non-zero byte; zeros after it pad.
        let Some(last) = plain.iter().rposition(|&b| b != 0) else {
            return Err(RecordError::NoInnerType);
        };
        if last > PLAINTEXT_MAX {
            return Err(RecordError::BadLength);
        }
        let typ = plain[last];
        if !matches!(
            typ,
            content::ALERT | content::HANDSHAKE | content::APPLICATION_DATA
        ) {
            return Err(RecordError::UnexpectedType);
        }
        Ok(Opened {
            typ,
            start: HEADER_LEN,
            end: HEADER_LEN + last,
        })
    }

    fn open_tls12(&self, record: &mut [u8]) -> Result<Opened, RecordError> {
        let key = self.rx.ring_key(self.suite).ok_or(RecordError::BadMac)?;
        let typ = record[0];
        let (header, payload) = record.split_at_mut(HEADER_LEN);
        let explicit = if self.suite == Suite::Chacha20Poly1305 {
            0
        } else {
            EXPLICIT_NONCE_LEN
        };
        let plain_len = payload.len() - explicit - TAG_LEN;
        if plain_len > PLAINTEXT_MAX {
            return Err(RecordError::BadLength);
        }
        let nonce = if explicit == 0 {
            self.rx.nonce()
        } else {
            // RFC 5288 3: the salt from the key block, then the nonce the sender chose.
            let mut n = [0u8; IV_LEN];
            n[..4].copy_from_slice(&self.rx.iv[..4]);
            n[4..].copy_from_slice(&payload[..EXPLICIT_NONCE_LEN]);
            n
        };
        let aad = tls12_aad(self.rx.seq, typ, [header[1], header[2]], plain_len);
        key.open_within(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            payload,
            explicit..,
        )
        .map_err(|_| RecordError::BadMac)?;
        Ok(Opened {
            typ,
            start: HEADER_LEN,
            end: HEADER_LEN + plain_len,
        })
    }

    /// Seals `plaintext` (at most [`PLAINTEXT_MAX`] bytes) of type `typ` as one record
    /// appended to `out`.
    pub fn seal(
        &mut self,
        typ: u8,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        if plaintext.len() > PLAINTEXT_MAX {
            return Err(RecordError::BadLength);
        }
        if self.tx.seq >= self.tx_records_max {
            return Err(RecordError::SequenceExhausted);
        }
        let key = self.tx.ring_key(self.suite).ok_or(RecordError::BadMac)?;
        let nonce = self.tx.nonce();
        let start = out.len();
        let result = match self.version {
            Version::Tls13 => seal_tls13(&key, nonce, typ, plaintext, out),
            Version::Tls12 => {
                seal_tls12(&key, self.suite, (nonce, self.tx.seq), typ, plaintext, out)
            }
        };
        if result.is_err() {
            // Never leave plaintext behind in the caller's buffer.
            out[start..].zeroize();
            out.truncate(start);
            return result;
        }
        self.tx.seq += 1;
        Ok(())
    }

    /// Seals `plaintext` as application data, in records of at most [`PLAINTEXT_MAX`]
    /// bytes (as rustls fragments).
    pub fn seal_application_data(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        for chunk in plaintext.chunks(PLAINTEXT_MAX) {
            self.seal(content::APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// TLS 1.3: moves the receiving keys to the next generation (the peer sent KeyUpdate).
    pub fn update_rx(&mut self) {
        self.rx.update(self.suite);
    }

    /// TLS 1.3: moves the sending keys to the next generation (after our KeyUpdate).
    pub fn update_tx(&mut self) {
        self.tx.update(self.suite);
    }
}

fn seal_tls13(
    key: &LessSafeKey,
    nonce: [u8; IV_LEN],
    typ: u8,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    // RFC 8446 5.2: the inner plaintext is content, then its type; no padding (as rustls).
    let len = plaintext.len() + 1 + TAG_LEN;
    let header = [content::APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
    out.extend_from_slice(&header);
    let body = out.len();
    out.extend_from_slice(plaintext);
    out.push(typ);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            &mut out[body..],
        )
        .map_err(|_| RecordError::BadLength)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

fn seal_tls12(
    key: &LessSafeKey,
    suite: Suite,
    (nonce, seq): ([u8; IV_LEN], u64),
    typ: u8,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    // RFC 5288 3 leaves the explicit nonce to the sender; rustls sends the last 8 bytes of
    // (IV XOR sequence number), and so do we, so that both produce the same bytes.
    let explicit = if suite == Suite::Chacha20Poly1305 {
        0
    } else {
        EXPLICIT_NONCE_LEN
    };
    let len = explicit + plaintext.len() + TAG_LEN;
    out.extend_from_slice(&[typ, 3, 3, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(&nonce[IV_LEN - explicit..]);
    let body = out.len();
    out.extend_from_slice(plaintext);
    let aad = tls12_aad(seq, typ, [3, 3], plaintext.len());
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[body..],
        )
        .map_err(|_| RecordError::BadLength)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// RFC 5246 6.2.3.3: seq_num + type + version + length of the plaintext.
fn tls12_aad(seq: u64, typ: u8, version: [u8; 2], plain_len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&version);
    aad[11..].copy_from_slice(&(plain_len as u16).to_be_bytes());
    aad
}
