//! The generated CA works with rustls when added as a root in code.

mod common;

use std::net::TcpStream;
use std::sync::Arc;

use common::{capabilities_in, connect_plain, Imap};
use testkit::{Dovecot, DovecotConfig};

fn start() -> Dovecot {
    Dovecot::start(DovecotConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn implicit_tls_login_and_select() {
    let dc = start();
    let tls = dc.connect_tls().unwrap();
    let mut imap = Imap::new(tls);
    imap.greeting();
    let ok = imap.login_plain("alice", b"secret-alice");
    assert!(ok.starts_with("t1 OK"), "{ok:?}");
    let lines = imap.command_ok("SELECT INBOX");
    assert!(lines.iter().any(|l| l == "* 0 EXISTS\r\n"), "{lines:?}");
}

#[test]
fn tls_with_own_rustls_config_from_pem_and_der() {
    let dc = start();
    // DER as the trust root, as a test in another crate would do it.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(dc.ca_der().to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Both names in the certificate verify.
    for name in ["localhost", "127.0.0.1"] {
        let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config.clone()), server_name).unwrap();
        let sock = TcpStream::connect(dc.imaps_addr()).unwrap();
        sock.set_read_timeout(Some(common::TIMEOUT)).unwrap();
        let mut imap = Imap::new(rustls::StreamOwned::new(conn, sock));
        imap.greeting();
    }
    assert!(dc.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(dc.ca_pem().contains("-----END CERTIFICATE-----"));
}

#[test]
fn tls_rejects_a_wrong_name() {
    let dc = start();
    let config = dc.rustls_client_config().unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("example.com").unwrap();
    let mut conn = rustls::ClientConnection::new(config, server_name).unwrap();
    let mut sock = TcpStream::connect(dc.imaps_addr()).unwrap();
    sock.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let mut result = Ok((0, 0));
    while conn.is_handshaking() {
        result = conn.complete_io(&mut sock);
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[test]
fn starttls_on_the_plain_port() {
    let dc = start();
    let mut imap = connect_plain(dc.imap_port());
    let greeting = imap.greeting();
    assert!(capabilities_in(&greeting).contains(&"STARTTLS".to_string()));
    imap.command_ok("STARTTLS");
    let sock = imap.into_inner();
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        rustls::ClientConnection::new(dc.rustls_client_config().unwrap(), server_name).unwrap();
    let mut imap = Imap::new(rustls::StreamOwned::new(conn, sock));
    let caps = imap.command_ok("CAPABILITY");
    assert!(!caps[0].contains("STARTTLS"), "{caps:?}");
    let ok = imap.login_literal(b"alice", b"secret-alice");
    assert!(ok.starts_with("t2 OK"), "{ok:?}");
    dc.wait_for_connection_count("alice", 1, common::TIMEOUT)
        .unwrap();
}
