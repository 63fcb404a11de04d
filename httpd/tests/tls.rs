//! HTTPS: a certificate made here with rcgen, a rustls client.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{get, post, Client, TestServer, PATIENCE};
use httpd::{Config, TlsFiles};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A self-signed certificate for `localhost`, written as PEM files.
struct TestCert {
    dir: PathBuf,
    files: TlsFiles,
    der: CertificateDer<'static>,
}

impl TestCert {
    fn new() -> TestCert {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "httpd-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
        };
        std::fs::write(&files.cert_file, certified.cert.pem()).unwrap();
        std::fs::write(&files.key_file, certified.signing_key.serialize_pem()).unwrap();
        TestCert {
            dir,
            files,
            der: certified.cert.der().clone(),
        }
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_server(cert: &TestCert) -> TestServer {
    TestServer::start_with(Config {
        tls: Some(cert.files.clone()),
        ..Config::default()
    })
}

fn tls_client(
    server: &TestServer,
    cert: &TestCert,
) -> Client<StreamOwned<ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(cert.client_config(), name).unwrap();
    Client::new(StreamOwned::new(conn, tcp))
}

#[test]
fn tls_round_trip_with_keep_alive() {
    let cert = TestCert::new();
    let server = tls_server(&cert);
    let mut client = tls_client(&server, &cert);
    for body in [&b"secret"[..], &[b'x'; 40_000][..]] {
        let reply = client.exchange(&post("/echo", body));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, body);
    }
    let reply =
        client.exchange(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(reply.status, 200);
    assert!(reply.closes());
    // The server ends with close_notify, which reads as a clean EOF.
    client.expect_closed();
    drop(client);
    let stats = server.wait_stats("3 responses", |s| {
        s.responses_2xx == 3 && s.connections_open == 0
    });
    assert_eq!(stats.tls_failures, 0);
}

#[test]
fn tls_async_response() {
    let cert = TestCert::new();
    let server = tls_server(&cert);
    let mut client = tls_client(&server, &cert);
    let reply = client.exchange(&post("/async?ms=200", b"later"));
    assert_eq!(reply.body, b"later");
}

#[test]
fn plaintext_on_a_tls_port_is_a_tls_failure() {
    let cert = TestCert::new();
    let server = tls_server(&cert);
    let mut plain = server.connect();
    plain.stream.write_all(&get("/echo")).unwrap();
    // The server answers with an alert (not HTTP) and closes.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain.stream, &mut rest);
    assert!(!rest.starts_with(b"HTTP"));
    server.wait_stats("a TLS failure", |s| {
        s.tls_failures == 1 && s.connections_open == 0
    });
}

#[test]
fn a_trusted_proxy_s_proxy_header_comes_before_the_tls_handshake() {
    use httpd::proxy_header;
    let cert = TestCert::new();
    let server = TestServer::start_with(Config {
        tls: Some(cert.files.clone()),
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..Config::default()
    });
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let header = proxy_header::encode("198.51.100.7:5555".parse().unwrap(), server.addr());
    tcp.write_all(&header).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(cert.client_config(), name).unwrap();
    let mut client = Client::new(StreamOwned::new(conn, tcp));
    client.send(&get("/hold"));
    let request = server.held_request();
    assert_eq!(request.client.to_string(), "198.51.100.7");
    assert_eq!(request.peer.ip().to_string(), "127.0.0.1");
    common::respond_ok(&server.responder(), request.id);
    assert_eq!(client.reply().status, 200);
}
