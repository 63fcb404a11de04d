//! The compact record layer against rustls, in memory.
//!
//! Differential: a rustls client and a rustls server finish a handshake; records of many
//! sizes go both ways through rustls; the keys are then taken out of the client
//! (`dangerous_into_kernel_connection`) and the compact layer must produce the very same
//! ciphertext for the same plaintext (both directions) and open the server's records to
//! the same plaintext, for every suite at TLS 1.3 and TLS 1.2. Then traffic goes on between
//! the compact layer and the rustls server, through a server-initiated KeyUpdate.
//! (TLS 1.2 uses the ECDSA suites: the test PKI's keys are ECDSA P-256.)

use std::io::{Read, Write};
use std::sync::Arc;

use engine::tls::compact::{Compact, Received};
use engine::tls::record::{DirectionKeys, RecordLayer, Suite, Version};
use engine::tls::secrets::SecretLog;
use rustls::client::UnbufferedClientConnection;
use rustls::crypto::ring::cipher_suite as cs;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ConnectionTrafficSecrets, ServerConnection, SupportedCipherSuite};
use testkit::TestPki;

/// Plaintext sizes: empty, tiny, around AEAD blocks, around one record, several records.
const SIZES: [usize; 14] = [
    0, 1, 2, 15, 16, 17, 100, 1000, 4096, 16383, 16384, 16385, 33000, 50001,
];

fn cases() -> Vec<(Version, Suite, SupportedCipherSuite)> {
    vec![
        (
            Version::Tls13,
            Suite::Aes128Gcm,
            cs::TLS13_AES_128_GCM_SHA256,
        ),
        (
            Version::Tls13,
            Suite::Aes256Gcm,
            cs::TLS13_AES_256_GCM_SHA384,
        ),
        (
            Version::Tls13,
            Suite::Chacha20Poly1305,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            Version::Tls12,
            Suite::Aes128Gcm,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            Version::Tls12,
            Suite::Aes256Gcm,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            Version::Tls12,
            Suite::Chacha20Poly1305,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

fn plaintext(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

struct Pair {
    client: UnbufferedClientConnection,
    server: ServerConnection,
    log: Arc<SecretLog>,
    client_random: [u8; 32],
}

fn pair(suite: SupportedCipherSuite) -> Pair {
    let pki = TestPki::generate().unwrap();
    let mut client_config = engine::tls::client_config_with_suites(
        false,
        None,
        std::slice::from_ref(&pki.ca_der),
        &[suite],
    )
    .unwrap();
    let log = Arc::new(SecretLog::default());
    client_config.enable_secret_extraction = true;
    client_config.key_log = log.clone();
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let key = PrivateKeyDer::from_pem_slice(pki.leaf_key_pem.as_bytes()).unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[suite.version()])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(pki.leaf_der.clone())], key)
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut p = Pair {
        client: UnbufferedClientConnection::new(Arc::new(client_config), name).unwrap(),
        server: ServerConnection::new(Arc::new(server_config)).unwrap(),
        log,
        client_random: [0; 32],
    };
    handshake(&mut p);
    p
}

/// Runs the handshake to the client's WriteTraffic with every server byte consumed.
fn handshake(p: &mut Pair) {
    let mut incoming: Vec<u8> = Vec::new();
    let mut outgoing: Vec<u8> = Vec::new();
    for _ in 0..200 {
        let UnbufferedStatus { discard, state } = p.client.process_tls_records(&mut incoming);
        let mut done = false;
        let mut need_input = false;
        match state.unwrap() {
            ConnectionState::EncodeTlsData(mut e) => {
                let mut buf = vec![0u8; 16 * 1024];
                let n = match e.encode(&mut buf) {
                    Ok(n) => n,
                    Err(EncodeError::InsufficientSize(s)) => panic!("{s:?}"),
                    Err(e) => panic!("{e}"),
                };
                outgoing.extend_from_slice(&buf[..n]);
            }
            ConnectionState::TransmitTlsData(t) => {
                if p.client_random == [0; 32] {
                    p.client_random.copy_from_slice(&outgoing[11..43]);
                }
                p.server.read_tls(&mut &outgoing[..]).unwrap();
                p.server.process_new_packets().unwrap();
                outgoing.clear();
                t.done();
            }
            ConnectionState::WriteTraffic(_) => {
                done = true;
                need_input = true;
            }
            _ => need_input = true,
        }
        incoming.drain(..discard);
        if need_input {
            let before = incoming.len();
            while p.server.wants_write() {
                p.server.write_tls(&mut incoming).unwrap();
            }
            if done && incoming.is_empty() {
                return;
            }
            assert!(incoming.len() > before || done, "handshake stalled");
        }
    }
    panic!("handshake did not finish");
}

/// Encrypts with the rustls client (still in WriteTraffic).
fn rustls_encrypt(client: &mut UnbufferedClientConnection, plain: &[u8]) -> Vec<u8> {
    let UnbufferedStatus { state, .. } = client.process_tls_records(&mut []);
    let ConnectionState::WriteTraffic(mut w) = state.unwrap() else {
        panic!("not in WriteTraffic");
    };
    let mut out = vec![0u8; plain.len() + 64 * (plain.len() / 16384 + 1)];
    let n = w.encrypt(plain, &mut out).unwrap();
    out.truncate(n);
    out
}

fn server_reads(server: &mut ServerConnection, records: &[u8]) -> Vec<u8> {
    let mut rd = records;
    let mut plain = Vec::new();
    while !rd.is_empty() {
        server.read_tls(&mut rd).unwrap();
        server.process_new_packets().unwrap();
        // Drained as it comes: rustls holds at most 16 KiB of received plaintext.
        match server.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    plain
}

fn server_writes(server: &mut ServerConnection, plain: &[u8]) -> Vec<u8> {
    server.writer().write_all(plain).unwrap();
    let mut out = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut out).unwrap();
    }
    out
}

fn raw(s: &ConnectionTrafficSecrets) -> (&[u8], &[u8]) {
    match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key.as_ref(), iv.as_ref()),
        _ => panic!("unknown AEAD"),
    }
}

/// Opens every record of `bytes` with `compact`, returning the application data.
fn compact_reads(compact: &mut Compact, mut bytes: Vec<u8>) -> Vec<u8> {
    let mut plain = Vec::new();
    let mut reply = Vec::new();
    while !bytes.is_empty() {
        let n = compact.record_len(&bytes).unwrap().expect("whole records");
        match compact.handle_record(&mut bytes[..n], &mut reply).unwrap() {
            Received::Data { start, end } => plain.extend_from_slice(&bytes[start..end]),
            other => panic!("{other:?}"),
        }
        bytes.drain(..n);
    }
    assert!(reply.is_empty());
    plain
}

#[test]
fn same_ciphertext_and_plaintext_as_rustls_for_every_suite() {
    for (version, suite, rustls_suite) in cases() {
        let mut p = pair(rustls_suite);
        let name = format!("{rustls_suite:?}");
        // Client to server, through rustls.
        let sent: Vec<(Vec<u8>, Vec<u8>)> = SIZES
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let plain = plaintext(n, i as u8);
                let records = rustls_encrypt(&mut p.client, &plain);
                assert_eq!(server_reads(&mut p.server, &records), plain, "{name}");
                (plain, records)
            })
            .collect();
        // Server to client, held back from the rustls client.
        let received: Vec<(Vec<u8>, Vec<u8>)> = SIZES
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let plain = plaintext(n, 100 + i as u8);
                let records = server_writes(&mut p.server, &plain);
                (plain, records)
            })
            .collect();
        let (extracted, kernel) = p.client.dangerous_into_kernel_connection().unwrap();
        drop(kernel);
        let secrets = match version {
            Version::Tls13 => Some(p.log.take(&p.client_random).expect("secrets logged")),
            Version::Tls12 => None,
        };
        assert_eq!(
            p.log.pending(),
            0,
            "{name}: the log keeps nothing once taken"
        );
        let (tx_secret, rx_secret) = match &secrets {
            Some(s) => (s.client.as_bytes(), s.server.as_bytes()),
            None => (&[][..], &[][..]),
        };
        let (tx_seq, tx) = (&extracted.tx.0, raw(&extracted.tx.1));
        let (rx_seq, rx) = (&extracted.rx.0, raw(&extracted.rx.1));
        if version == Version::Tls13 {
            // The captured secrets are of the same generation as rustls's keys.
            let tx_now = DirectionKeys::new(suite, tx.0, tx.1, *tx_seq, tx_secret).unwrap();
            let rx_now = DirectionKeys::new(suite, rx.0, rx.1, *rx_seq, rx_secret).unwrap();
            assert!(tx_now.derives_from(suite, tx_secret), "{name}");
            assert!(rx_now.derives_from(suite, rx_secret), "{name}");
            assert!(!tx_now.derives_from(suite, rx_secret), "{name}");
        }
        let records_sent: u64 = sent
            .iter()
            .map(|(plain, _)| plain.len().div_ceil(16384) as u64)
            .sum();
        // Our sealer at the sequence number rustls started from: the same bytes.
        let mut ours = RecordLayer::new(
            version,
            suite,
            DirectionKeys::new(suite, tx.0, tx.1, tx_seq - records_sent, tx_secret).unwrap(),
            DirectionKeys::new(suite, rx.0, rx.1, *rx_seq, rx_secret).unwrap(),
        );
        for (plain, records) in &sent {
            let mut out = Vec::new();
            ours.seal_application_data(plain, &mut out).unwrap();
            assert_eq!(
                &out,
                records,
                "{name}: {} bytes client to server",
                plain.len()
            );
        }
        assert_eq!(ours.seqs().0, *tx_seq);
        // The server's sealer mirrored: the same bytes as rustls's server.
        let mut mirror = RecordLayer::new(
            version,
            suite,
            DirectionKeys::new(suite, rx.0, rx.1, *rx_seq, rx_secret).unwrap(),
            DirectionKeys::new(suite, tx.0, tx.1, *tx_seq, tx_secret).unwrap(),
        );
        for (plain, records) in &received {
            let mut out = Vec::new();
            mirror.seal_application_data(plain, &mut out).unwrap();
            assert_eq!(
                &out,
                records,
                "{name}: {} bytes server to client",
                plain.len()
            );
        }
        // The compact layer opens rustls's records to the same plaintext.
        let mut compact = Compact::new(ours);
        for (plain, records) in &received {
            assert_eq!(
                &compact_reads(&mut compact, records.clone()),
                plain,
                "{name}"
            );
        }
        // And traffic goes on with the rustls server.
        let mut out = Vec::new();
        compact.seal(b"a2 IDLE\r\n", &mut out).unwrap();
        assert_eq!(server_reads(&mut p.server, &out), b"a2 IDLE\r\n", "{name}");
        let records = server_writes(&mut p.server, b"* 3 EXISTS\r\n");
        assert_eq!(compact_reads(&mut compact, records), b"* 3 EXISTS\r\n");
        if version == Version::Tls13 {
            key_update_from_rustls(&mut compact, &mut p.server, &name);
        }
    }
}

/// The rustls server refreshes its keys and asks for ours (update_requested): we take its
/// new keys, answer with our KeyUpdate, and both sides go on under the new keys.
fn key_update_from_rustls(compact: &mut Compact, server: &mut ServerConnection, name: &str) {
    server.refresh_traffic_keys().unwrap();
    let mut bytes = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut bytes).unwrap();
    }
    let mut reply = Vec::new();
    let n = compact.record_len(&bytes).unwrap().unwrap();
    assert_eq!(n, bytes.len(), "{name}: one KeyUpdate record");
    assert_eq!(
        compact.handle_record(&mut bytes, &mut reply).unwrap(),
        Received::Nothing
    );
    assert!(!reply.is_empty(), "{name}: our KeyUpdate in answer");
    assert_eq!(compact.records().seqs(), (0, 0), "{name}: both keys new");
    assert_eq!(server_reads(server, &reply), b"");
    let mut out = Vec::new();
    compact.seal(b"DONE\r\n", &mut out).unwrap();
    assert_eq!(server_reads(server, &out), b"DONE\r\n", "{name}");
    let records = server_writes(server, b"a3 OK Idle completed\r\n");
    assert_eq!(compact_reads(compact, records), b"a3 OK Idle completed\r\n");
}
