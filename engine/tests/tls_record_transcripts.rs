//! Transcripts of hostile or broken records after the handshake: each ends the session
//! with its typed reason, and nothing is handed to the session. A mirror record layer
//! plays the server (its sending keys are the client's receiving keys).

use engine::tls::compact::{Compact, Received};
use engine::tls::record::{
    content, DirectionKeys, RecordLayer, Suite, Version, CIPHERTEXT_MAX_TLS12,
    CIPHERTEXT_MAX_TLS13, HEADER_LEN, PLAINTEXT_MAX,
};
use engine::tls::secrets::{SecretLog, PENDING_MAX};
use engine::TlsFailure;
use rustls::KeyLog;

const ALL: [(Version, Suite); 6] = [
    (Version::Tls13, Suite::Aes128Gcm),
    (Version::Tls13, Suite::Aes256Gcm),
    (Version::Tls13, Suite::Chacha20Poly1305),
    (Version::Tls12, Suite::Aes128Gcm),
    (Version::Tls12, Suite::Aes256Gcm),
    (Version::Tls12, Suite::Chacha20Poly1305),
];

fn keys(suite: Suite, version: Version, seed: u8, seq: u64) -> DirectionKeys {
    let key = vec![seed; suite.key_len()];
    let iv = [seed.wrapping_add(1); 12];
    let secret = match version {
        Version::Tls13 => vec![seed.wrapping_add(2); suite.secret_len()],
        Version::Tls12 => Vec::new(),
    };
    DirectionKeys::new(suite, &key, &iv, seq, &secret).unwrap()
}

/// (client, server) with the client's receiving keys = the server's sending keys.
fn pair(version: Version, suite: Suite) -> (Compact, RecordLayer) {
    let client = RecordLayer::new(
        version,
        suite,
        keys(suite, version, 1, 0),
        keys(suite, version, 2, 0),
    );
    let server = RecordLayer::new(
        version,
        suite,
        keys(suite, version, 2, 0),
        keys(suite, version, 1, 0),
    );
    (Compact::new(client), server)
}

fn sealed(server: &mut RecordLayer, typ: u8, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    server.seal(typ, plain, &mut out).unwrap();
    out
}

/// Feeds one record to the client: what it gave, or why the session ends.
fn feed(client: &mut Compact, mut record: Vec<u8>) -> Result<(Received, Vec<u8>), TlsFailure> {
    let mut reply = Vec::new();
    match client.record_len(&record)? {
        Some(n) if n == record.len() => {}
        other => panic!("not one whole record: {other:?}"),
    }
    let received = client.handle_record(&mut record, &mut reply)?;
    Ok((received, reply))
}

#[test]
fn a_record_that_does_not_authenticate_ends_with_bad_record_mac() {
    for (version, suite) in ALL {
        for at in [HEADER_LEN + 1, HEADER_LEN + 12, usize::MAX] {
            let (mut client, mut server) = pair(version, suite);
            let mut record = sealed(&mut server, content::APPLICATION_DATA, b"* 1 EXISTS\r\n");
            let i = at.min(record.len() - 1);
            record[i] ^= 0x40;
            assert_eq!(
                feed(&mut client, record),
                Err(TlsFailure::BadRecordMac),
                "{version:?} {suite:?} byte {i}"
            );
        }
        // The wrong key altogether (a record for someone else).
        let (mut client, _) = pair(version, suite);
        let mut other = RecordLayer::new(
            version,
            suite,
            keys(suite, version, 9, 0),
            keys(suite, version, 9, 0),
        );
        let record = sealed(&mut other, content::APPLICATION_DATA, b"x");
        assert_eq!(feed(&mut client, record), Err(TlsFailure::BadRecordMac));
    }
}

#[test]
fn records_out_of_order_or_replayed_do_not_authenticate() {
    for (version, suite) in ALL {
        let (mut client, mut server) = pair(version, suite);
        let first = sealed(&mut server, content::APPLICATION_DATA, b"first");
        let second = sealed(&mut server, content::APPLICATION_DATA, b"second");
        assert_eq!(
            feed(&mut client, second),
            Err(TlsFailure::BadRecordMac),
            "{version:?} {suite:?}: reordered"
        );
        let (mut client, _) = pair(version, suite);
        assert!(matches!(
            feed(&mut client, first.clone()),
            Ok((Received::Data { .. }, _))
        ));
        assert_eq!(
            feed(&mut client, first),
            Err(TlsFailure::BadRecordMac),
            "{version:?} {suite:?}: replayed"
        );
    }
}

#[test]
fn bad_lengths_end_with_bad_record_length() {
    for (version, suite) in ALL {
        let (client, _) = pair(version, suite);
        let max = match version {
            Version::Tls13 => CIPHERTEXT_MAX_TLS13,
            Version::Tls12 => CIPHERTEXT_MAX_TLS12,
        };
        let header = |len: usize| {
            let typ = content::APPLICATION_DATA;
            vec![typ, 3, 3, (len >> 8) as u8, len as u8]
        };
        // One past the version's limit, and the largest a header can say.
        for len in [max + 1, 0xFFFF] {
            assert_eq!(
                client.record_len(&header(len)),
                Err(TlsFailure::BadRecordLength),
                "{version:?} {suite:?} {len}"
            );
        }
        // The limit itself is only incomplete; shorter than a tag is refused.
        assert_eq!(client.record_len(&header(max)), Ok(None));
        for len in [0, 15] {
            assert_eq!(
                client.record_len(&header(len)),
                Err(TlsFailure::BadRecordLength),
                "{version:?} {suite:?} {len}"
            );
        }
        // The sender's side: no record over 2^14 of plaintext.
        let (_, mut server) = pair(version, suite);
        let mut out = Vec::new();
        assert!(server
            .seal(
                content::APPLICATION_DATA,
                &vec![b'a'; PLAINTEXT_MAX + 1],
                &mut out
            )
            .is_err());
        assert!(out.is_empty());
    }
}

#[test]
fn tls13_inner_plaintext_over_the_limit_or_without_type_is_refused() {
    for suite in [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305] {
        let (mut client, _) = pair(Version::Tls13, suite);
        // 2^14 + 1 bytes of content, then the type: one byte too many.
        let mut inner = vec![b'a'; PLAINTEXT_MAX + 1];
        inner.push(content::APPLICATION_DATA);
        let record = forge_tls13(suite, &inner);
        assert_eq!(feed(&mut client, record), Err(TlsFailure::BadRecordLength));
        // All zero: no content type at all.
        let (mut client, _) = pair(Version::Tls13, suite);
        assert_eq!(
            feed(&mut client, forge_tls13(suite, &[0; 40])),
            Err(TlsFailure::UnexpectedMessage)
        );
        // Padding up to the limit is fine (RFC 8446 5.4).
        let (mut client, _) = pair(Version::Tls13, suite);
        let mut padded = b"* OK\r\n".to_vec();
        padded.push(content::APPLICATION_DATA);
        padded.resize(PLAINTEXT_MAX + 1, 0);
        let mut record = forge_tls13(suite, &padded);
        let mut reply = Vec::new();
        let got = client.handle_record(&mut record, &mut reply).unwrap();
        assert_eq!(got, Received::Data { start: 5, end: 11 });
    }
}

/// A TLS 1.3 record around any inner plaintext, sealed with the server keys of `pair`.
fn forge_tls13(suite: Suite, inner: &[u8]) -> Vec<u8> {
    use ring::aead;
    let alg = match suite {
        Suite::Aes128Gcm => &aead::AES_128_GCM,
        Suite::Aes256Gcm => &aead::AES_256_GCM,
        Suite::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
    };
    let key =
        aead::LessSafeKey::new(aead::UnboundKey::new(alg, &vec![2; suite.key_len()]).unwrap());
    let len = inner.len() + 16;
    let header = [23, 3, 3, (len >> 8) as u8, len as u8];
    let mut body = inner.to_vec();
    // Sequence number 0: the nonce is the IV.
    let nonce = aead::Nonce::assume_unique_for_key([3; 12]);
    key.seal_in_place_append_tag(nonce, aead::Aad::from(header), &mut body)
        .unwrap();
    let mut record = header.to_vec();
    record.extend_from_slice(&body);
    record
}

#[test]
fn close_notify_is_a_clean_end_and_other_alerts_a_typed_one() {
    for (version, suite) in ALL {
        let (mut client, mut server) = pair(version, suite);
        let record = sealed(&mut server, content::ALERT, &[1, 0]);
        assert_eq!(feed(&mut client, record).unwrap().0, Received::CloseNotify);
        for alert in [[2u8, 40], [1, 90], [2, 20]] {
            let (mut client, mut server) = pair(version, suite);
            let record = sealed(&mut server, content::ALERT, &alert);
            assert_eq!(
                feed(&mut client, record),
                Err(TlsFailure::Alert),
                "{version:?} {suite:?} {alert:?}"
            );
        }
        let (mut client, mut server) = pair(version, suite);
        let record = sealed(&mut server, content::ALERT, &[2, 40, 0]);
        assert_eq!(
            feed(&mut client, record),
            Err(TlsFailure::UnexpectedMessage)
        );
    }
}

#[test]
fn unknown_or_misplaced_record_types_end_the_session() {
    for (version, suite) in ALL {
        let (client, _) = pair(version, suite);
        for typ in [0u8, 20, 24, 255] {
            let header = [typ, 3, 3, 0, 40];
            assert_eq!(
                client.record_len(&header),
                Err(TlsFailure::UnexpectedMessage),
                "{version:?} {suite:?} type {typ}"
            );
        }
        // A record version that is not 3.x.
        assert_eq!(
            client.record_len(&[content::APPLICATION_DATA, 2, 0, 0, 40]),
            Err(TlsFailure::UnexpectedMessage)
        );
    }
    // TLS 1.3: a protected ChangeCipherSpec or unknown inner type.
    for inner_type in [content::CHANGE_CIPHER_SPEC, 99] {
        let (mut client, mut server) = pair(Version::Tls13, Suite::Aes128Gcm);
        let record = sealed(&mut server, inner_type, &[1]);
        assert_eq!(
            feed(&mut client, record),
            Err(TlsFailure::UnexpectedMessage)
        );
    }
}

#[test]
fn post_handshake_messages_we_do_not_serve_end_the_session() {
    // TLS 1.3 CertificateRequest (post-handshake authentication).
    let (mut client, mut server) = pair(Version::Tls13, Suite::Aes128Gcm);
    let record = sealed(&mut server, content::HANDSHAKE, &[13, 0, 0, 4, 0, 0, 0, 0]);
    assert_eq!(
        feed(&mut client, record),
        Err(TlsFailure::PostHandshakeAuth)
    );
    // TLS 1.2 HelloRequest (renegotiation).
    let (mut client, mut server) = pair(Version::Tls12, Suite::Aes128Gcm);
    let record = sealed(&mut server, content::HANDSHAKE, &[0, 0, 0, 0]);
    assert_eq!(feed(&mut client, record), Err(TlsFailure::Renegotiation));
    // Anything else, in either version; a 1.2 ticket after the handshake included.
    for (version, message) in [
        (Version::Tls13, [2u8, 0, 0, 0]),
        (Version::Tls13, [20, 0, 0, 0]),
        (Version::Tls12, [4, 0, 0, 0]),
        (Version::Tls12, [24, 0, 0, 1]),
    ] {
        let (mut client, mut server) = pair(version, Suite::Chacha20Poly1305);
        let record = sealed(&mut server, content::HANDSHAKE, &message);
        assert_eq!(
            feed(&mut client, record),
            Err(TlsFailure::UnexpectedMessage),
            "{version:?} {message:?}"
        );
    }
}

#[test]
fn tickets_are_skipped_even_split_over_records() {
    let (mut client, mut server) = pair(Version::Tls13, Suite::Aes256Gcm);
    let mut ticket = vec![4u8, 0, 1, 0];
    ticket.extend(std::iter::repeat_n(7u8, 256));
    // Two tickets in one record, then one split in three (header split too).
    let mut two = ticket.clone();
    two.extend_from_slice(&ticket);
    let record = sealed(&mut server, content::HANDSHAKE, &two);
    assert_eq!(feed(&mut client, record).unwrap().0, Received::Nothing);
    for part in [&ticket[..2], &ticket[2..100], &ticket[100..]] {
        let record = sealed(&mut server, content::HANDSHAKE, part);
        assert_eq!(feed(&mut client, record).unwrap().0, Received::Nothing);
    }
    let record = sealed(&mut server, content::APPLICATION_DATA, b"* 2 EXISTS\r\n");
    assert!(matches!(
        feed(&mut client, record).unwrap().0,
        Received::Data { .. }
    ));
    // Application data inside a split handshake message is refused (RFC 8446 5.1).
    let record = sealed(&mut server, content::HANDSHAKE, &ticket[..50]);
    feed(&mut client, record).unwrap();
    let record = sealed(&mut server, content::APPLICATION_DATA, b"x");
    assert_eq!(
        feed(&mut client, record),
        Err(TlsFailure::UnexpectedMessage)
    );
}

#[test]
fn key_updates_both_ways() {
    for suite in [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305] {
        let (mut client, mut server) = pair(Version::Tls13, suite);
        // update_not_requested: new receiving keys only, no answer.
        let record = sealed(&mut server, content::HANDSHAKE, &[24, 0, 0, 1, 0]);
        let (got, reply) = feed(&mut client, record).unwrap();
        assert_eq!((got, reply.len()), (Received::Nothing, 0));
        server.update_tx();
        let record = sealed(&mut server, content::APPLICATION_DATA, b"new keys");
        assert!(matches!(
            feed(&mut client, record),
            Ok((Received::Data { .. }, _))
        ));
        // update_requested: our KeyUpdate, sealed under the old keys, then new keys.
        let record = sealed(&mut server, content::HANDSHAKE, &[24, 0, 0, 1, 1]);
        let (_, mut reply) = feed(&mut client, record).unwrap();
        server.update_tx();
        let opened = server.open(&mut reply).unwrap();
        assert_eq!(opened.typ, content::HANDSHAKE);
        assert_eq!(&reply[opened.start..opened.end], &[24, 0, 0, 1, 0]);
        server.update_rx();
        let mut out = Vec::new();
        client.seal(b"DONE\r\n", &mut out).unwrap();
        let opened = server.open(&mut out).unwrap();
        assert_eq!(&out[opened.start..opened.end], b"DONE\r\n");
        // Under the old keys, the server's next record no longer opens.
        let (mut stale_client, mut stale_server) = pair(Version::Tls13, suite);
        let record = sealed(&mut stale_server, content::HANDSHAKE, &[24, 0, 0, 1, 0]);
        feed(&mut stale_client, record).unwrap();
        let record = sealed(&mut stale_server, content::APPLICATION_DATA, b"old keys");
        assert_eq!(
            feed(&mut stale_client, record),
            Err(TlsFailure::BadRecordMac)
        );
    }
}

#[test]
fn a_key_update_must_end_its_record_and_be_well_formed() {
    let (mut client, mut server) = pair(Version::Tls13, Suite::Aes128Gcm);
    let record = sealed(
        &mut server,
        content::HANDSHAKE,
        &[24, 0, 0, 1, 0, 4, 0, 0, 0],
    );
    assert_eq!(
        feed(&mut client, record),
        Err(TlsFailure::UnexpectedMessage)
    );
    let (mut client, mut server) = pair(Version::Tls13, Suite::Aes128Gcm);
    let record = sealed(&mut server, content::HANDSHAKE, &[24, 0, 0, 1, 2]);
    assert_eq!(
        feed(&mut client, record),
        Err(TlsFailure::UnexpectedMessage)
    );
    let (mut client, mut server) = pair(Version::Tls13, Suite::Aes128Gcm);
    let record = sealed(&mut server, content::HANDSHAKE, &[24, 0, 0, 2, 0, 0]);
    assert_eq!(
        feed(&mut client, record),
        Err(TlsFailure::UnexpectedMessage)
    );
}

#[test]
fn sequence_exhaustion_ends_the_session() {
    for (version, suite) in ALL {
        // Sending: a small injected limit; the record past it is refused, nothing written.
        let (_, server) = pair(version, suite);
        let mut limited = server.with_tx_records_max(3);
        let mut out = Vec::new();
        for _ in 0..3 {
            limited
                .seal(content::APPLICATION_DATA, b"x", &mut out)
                .unwrap();
        }
        let before = out.len();
        let mut client = Compact::new(limited);
        assert_eq!(
            client.seal(b"y", &mut out),
            Err(TlsFailure::SequenceExhausted)
        );
        assert_eq!(out.len(), before);
        // Receiving: a sequence number at its last value opens nothing more.
        let mut client = Compact::new(RecordLayer::new(
            version,
            suite,
            keys(suite, version, 1, 0),
            keys(suite, version, 2, u64::MAX),
        ));
        let (_, mut server) = pair(version, suite);
        let record = sealed(&mut server, content::APPLICATION_DATA, b"x");
        assert_eq!(
            feed(&mut client, record),
            Err(TlsFailure::SequenceExhausted)
        );
    }
    // The suites' own limits: AES-GCM keys seal at most 2^24 records.
    assert_eq!(Suite::Aes128Gcm.records_max(), 1 << 24);
    assert_eq!(Suite::Chacha20Poly1305.records_max(), u64::MAX);
}

#[test]
fn the_key_log_is_bounded_and_takes_only_its_labels() {
    let log = SecretLog::default();
    let secret = [5u8; 32];
    for i in 0..PENDING_MAX {
        let mut random = [0u8; 32];
        random[..8].copy_from_slice(&(i as u64).to_be_bytes());
        log.log("CLIENT_TRAFFIC_SECRET_0", &random, &secret);
    }
    assert_eq!(log.pending(), PENDING_MAX);
    // One past the bound: refused; the connection will stay on rustls.
    let past = [0xFFu8; 32];
    log.log("CLIENT_TRAFFIC_SECRET_0", &past, &secret);
    log.log("SERVER_TRAFFIC_SECRET_0", &past, &secret);
    assert_eq!(log.pending(), PENDING_MAX);
    assert!(log.take(&past).is_none());
    // Other labels never make an entry; a half-logged pair is not handed out.
    let log = SecretLog::default();
    log.log("CLIENT_RANDOM", &past, &[1; 48]);
    log.log("EXPORTER_SECRET", &past, &secret);
    assert_eq!(log.pending(), 0);
    log.log("CLIENT_TRAFFIC_SECRET_0", &past, &secret);
    assert!(log.take(&past).is_none());
    assert_eq!(log.pending(), 0);
    log.log("CLIENT_TRAFFIC_SECRET_0", &past, &secret);
    log.log("SERVER_TRAFFIC_SECRET_0", &past, &[6; 32]);
    let both = log.take(&past).unwrap();
    assert_eq!(
        (both.client.as_bytes(), both.server.as_bytes()),
        (&secret[..], &[6u8; 32][..])
    );
    log.log("CLIENT_TRAFFIC_SECRET_0", &past, &secret);
    log.forget(&past);
    assert_eq!(log.pending(), 0);
}

#[test]
fn the_tls_state_fits_its_budget() {
    let size = std::mem::size_of::<engine::tls::Tls>();
    eprintln!("Tls: {size} bytes inline in the slot");
    assert!(size <= engine::tls::TLS_STATE_BYTES_MAX);
}

#[test]
fn a_traffic_secret_of_another_generation_is_refused() {
    for suite in [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305] {
        let secret = vec![7u8; suite.secret_len()];
        let unrelated =
            DirectionKeys::new(suite, &vec![1; suite.key_len()], &[1; 12], 0, &secret).unwrap();
        assert!(!unrelated.derives_from(suite, &secret), "{suite:?}");
        assert!(
            !unrelated.derives_from(suite, &secret[1..]),
            "{suite:?}: length"
        );
    }
}
