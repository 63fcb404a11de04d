//! A server that breaks TLS after the session is ready, through the whole engine: the
//! session is lost with a typed reason (a reconnect push for the server), on the compact
//! path and on rustls. The server is rustls on a thread, speaking just enough IMAP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{
    EndReason, Engine, EngineConfig, Event, Secret, Security, SessionConfig, SessionId, TlsFailure,
    WatchSpec,
};
use rustls::crypto::ring::cipher_suite as cs;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use rustls::{ServerConnection, SupportedCipherSuite};
use testkit::TestPki;
use zeroize::Zeroizing;

/// What the server does once the client idles.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// "* 1 EXISTS" with one ciphertext byte flipped.
    FlippedByte,
    /// close_notify, then the TCP connection stays open.
    CloseNotify,
}

fn server_config(pki: &TestPki, suite: SupportedCipherSuite) -> Arc<rustls::ServerConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let key = PrivateKeyDer::from_pem_slice(pki.leaf_key_pem.as_bytes()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[suite.version()])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(pki.leaf_der.clone())], key)
            .unwrap(),
    )
}

/// Serves one client: greeting, login, EXAMINE, IDLE; then the attack. Bounded in time.
fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, attack: Attack) {
    let (sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let conn = ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"* OK [CAPABILITY IMAP4rev1 SASL-IR IDLE AUTH=PLAIN] ready\r\n")
        .unwrap();
    tls.flush().unwrap();
    let mut reader = BufReader::new(tls);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let Some((tag, rest)) = line.trim_end().split_once(' ') else {
            continue;
        };
        let answer = match rest.split(' ').next().unwrap_or("") {
            "IDLE" => "+ idling\r\n".to_string(),
            "EXAMINE" => {
                format!("* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n{tag} OK [READ-ONLY] done\r\n")
            }
            _ => format!("{tag} OK done\r\n"),
        };
        let tls = reader.get_mut();
        tls.write_all(answer.as_bytes()).unwrap();
        tls.flush().unwrap();
        if answer.starts_with('+') {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let tls = reader.get_mut();
    match attack {
        Attack::FlippedByte => {
            tls.conn.writer().write_all(b"* 1 EXISTS\r\n").unwrap();
            let mut record = Vec::new();
            tls.conn.write_tls(&mut record).unwrap();
            let last = record.len() - 1;
            record[last - 20] ^= 0x01;
            tls.sock.write_all(&record).unwrap();
        }
        Attack::CloseNotify => {
            tls.conn.send_close_notify();
            tls.flush().unwrap();
        }
    }
    // Hold the TCP connection: the client must end on the TLS signal alone.
    let mut rest = [0u8; 256];
    let sock: &mut TcpStream = &mut tls.sock;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && sock.read(&mut rest).is_ok_and(|n| n > 0) {}
}

fn lost_reason(
    pki: &TestPki,
    suite: SupportedCipherSuite,
    attack: Attack,
    compact: bool,
) -> EndReason {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = server_config(pki, suite);
    let server = std::thread::spawn(move || serve(listener, config, attack));
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        session: SessionConfig {
            tls_compact: compact,
            ..SessionConfig::default()
        },
        webpki_roots: false,
        extra_roots_der: vec![pki.ca_der.clone()],
        ..EngineConfig::default()
    })
    .unwrap();
    let id = engine
        .watch(WatchSpec {
            host: "127.0.0.1".into(),
            port,
            security: Security::Tls,
            username: "alice".into(),
            secret: Secret::Password(Zeroizing::new(b"secret".to_vec())),
            mailboxes: vec!["INBOX".into()],
            since: None,
        })
        .unwrap();
    match next_event(&engine, id) {
        Some(Event::Ready { .. }) => {}
        other => panic!("expected Ready, got {other:?}"),
    }
    assert_eq!(engine.stats().tls_compact_sessions, usize::from(compact));
    let reason = match next_event(&engine, id) {
        Some(Event::SessionLost { reason, .. }) => reason,
        other => panic!("{attack:?}: expected SessionLost, got {other:?}"),
    };
    server.join().unwrap();
    reason
}

fn next_event(engine: &Engine, id: SessionId) -> Option<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match engine.events().recv_timeout(left) {
            Ok(event) if event.id() == id => return Some(event),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

const SUITES: [SupportedCipherSuite; 2] = [
    cs::TLS13_AES_128_GCM_SHA256,
    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

#[test]
fn a_record_that_does_not_authenticate_loses_the_session() {
    let pki = TestPki::generate().unwrap();
    for suite in SUITES {
        assert_eq!(
            lost_reason(&pki, suite, Attack::FlippedByte, true),
            EndReason::Tls(TlsFailure::BadRecordMac),
            "{suite:?} compact"
        );
        // rustls reports its own decrypt error the same way, as a TLS end.
        assert!(matches!(
            lost_reason(&pki, suite, Attack::FlippedByte, false),
            EndReason::Tls(_)
        ));
    }
}

#[test]
fn close_notify_is_a_clean_close() {
    let pki = TestPki::generate().unwrap();
    for suite in SUITES {
        for compact in [true, false] {
            assert_eq!(
                lost_reason(&pki, suite, Attack::CloseNotify, compact),
                EndReason::Closed,
                "{suite:?} compact={compact}"
            );
        }
    }
}
