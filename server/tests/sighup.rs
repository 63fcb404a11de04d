//! SIGHUP re-reads the config file: a new `log_level` shows in the server's stderr, a new
//! API certificate is served to new connections (open ones keep theirs), other changed
//! keys are applied by an in-place upgrade (the same PID; `data_dir` alone needs a
//! restart), and a bad file changes nothing while the server goes on serving.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use testkit::TestPki;

mod common;

use common::{eventually, http, TempDir};

/// How long a line may take to show up in the log.
const LOG_WAIT: Duration = Duration::from_secs(10);

struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts the server with `config`; `ready` says when it answers.
    fn start(config: &Path, log: &Path, ready: impl Fn() -> bool) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(config)
            // log_level, not RUST_LOG, must decide.
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(log).unwrap()))
            .spawn()
            .unwrap();
        let server = Server {
            child,
            log: log.to_owned(),
        };
        assert!(
            eventually(Duration::from_secs(30), &ready),
            "server did not answer"
        );
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn lines_with(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `needle` shows on `n` lines.
    fn wait_for(&self, needle: &str, n: usize) {
        let found = eventually(LOG_WAIT, || self.lines_with(needle) >= n);
        assert!(
            found,
            "{n} lines with {needle:?} expected in:\n{}",
            self.log()
        );
    }

    fn hup(&self) {
        // SAFETY: kill sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn write_config(path: &Path, addr: SocketAddr, dir: &Path, extra: &str) {
    let text = format!(
        "listen = \"{addr}\"\ndata_dir = \"{}\"\n{extra}",
        dir.join("data").display()
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn sighup_changes_the_log_level_applies_other_keys_by_upgrade_and_survives_a_bad_file() {
    let dir = TempDir::new();
    let addr = free_addr();
    let config = dir.path().join("config.toml");
    write_config(&config, addr, dir.path(), "log_level = \"warn\"\n");
    let healthy =
        || TcpStream::connect(addr).is_ok() && http(addr, "GET", "/healthz", "", "").status == 200;
    let mut server = Server::start(&config, &dir.path().join("stderr.log"), healthy);

    // At warn, neither the start line (INFO) nor a refusal of a bad body (DEBUG) shows.
    assert_eq!(http(addr, "POST", "/v1/subscriptions", "{", "").status, 400);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.lines_with("started"), 0, "{}", server.log());
    assert_eq!(server.lines_with("request refused"), 0, "{}", server.log());

    write_config(
        &config,
        addr,
        dir.path(),
        "log_level = \"debug\"\nsender_threads = 3\n",
    );
    server.hup();
    server.wait_for("log level changed", 1);
    server.wait_for("applied by an in-place upgrade", 1);
    assert_eq!(server.lines_with("sender_threads"), 1, "{}", server.log());
    // The new process serves, in the same PID.
    server.wait_for("upgrade: resumed the sessions handed over", 1);
    assert_eq!(
        server.child.try_wait().unwrap(),
        None,
        "the process lives on"
    );
    assert_eq!(server.lines_with("needs a restart"), 0, "{}", server.log());
    assert_eq!(http(addr, "POST", "/v1/subscriptions", "{", "").status, 400);
    server.wait_for("request refused", 1);

    // A file that does not parse: an error, nothing changes, the API still answers and
    // still logs at debug.
    std::fs::write(&config, "log_level = \"off\"\nlisten = [\n").unwrap();
    server.hup();
    server.wait_for("config not reloaded", 1);
    assert_eq!(http(addr, "GET", "/healthz", "", "").status, 200);
    // A refusal of another kind (405), since the 400 above is within its minute.
    assert_eq!(http(addr, "PUT", "/v1/subscriptions", "", "").status, 405);
    server.wait_for("method_not_allowed", 1);
    // A directive that does not parse is refused the same way.
    write_config(&config, addr, dir.path(), "log_level = \"x=loud\"\n");
    server.hup();
    server.wait_for("config not reloaded", 2);
    assert!(server.log().contains("log_level"), "{}", server.log());
    assert_eq!(http(addr, "GET", "/healthz", "", "").status, 200);
    // A new data_dir would put the journal elsewhere: named as needing a restart, and no
    // upgrade happens.
    let other = dir.path().join("other");
    let text = format!(
        "listen = \"{addr}\"\ndata_dir = \"{}\"\nlog_level = \"debug\"\nsender_threads = 3\n",
        other.display()
    );
    std::fs::write(&config, text).unwrap();
    server.hup();
    server.wait_for("needs a restart", 1);
    assert!(server.log().contains("data_dir"), "{}", server.log());
    assert_eq!(
        server.lines_with("upgrade: resumed"),
        1,
        "no second upgrade"
    );
}

/// A TLS client that trusts `ca_der` only; `None` if the handshake fails.
fn tls_connect(
    addr: SocketAddr,
    ca_der: &[u8],
) -> Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let config: Arc<rustls::ClientConfig> = testkit::client_config_for(ca_der).unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        if stream.conn.complete_io(&mut stream.sock).is_err() {
            return None;
        }
    }
    Some(stream)
}

/// The leaf certificate the server presented.
fn served_leaf(stream: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> Vec<u8> {
    stream.conn.peer_certificates().unwrap()[0].to_vec()
}

/// One keep-alive request on an open TLS connection; returns the status.
fn healthz_on(stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> u16 {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn sighup_serves_a_new_api_certificate_to_new_connections_only() {
    let dir = TempDir::new();
    let addr = free_addr();
    let (old, new) = (TestPki::generate().unwrap(), TestPki::generate().unwrap());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &old.leaf_pem).unwrap();
    std::fs::write(&key, &old.leaf_key_pem).unwrap();
    let config = dir.path().join("config.toml");
    let tls = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    write_config(&config, addr, dir.path(), &tls);
    let ca = old.ca_der.clone();
    let up = move || TcpStream::connect(addr).is_ok() && tls_connect(addr, &ca).is_some();
    let server = Server::start(&config, &dir.path().join("stderr.log"), up);

    let mut before = tls_connect(addr, &old.ca_der).expect("the old certificate is served");
    assert_eq!(served_leaf(&before), old.leaf_der);
    assert_eq!(healthz_on(&mut before), 200);
    assert!(tls_connect(addr, &new.ca_der).is_none());

    // A key that does not match: refused, the old certificate stays.
    std::fs::write(&cert, &new.leaf_pem).unwrap();
    server.hup();
    server.wait_for("certificate not reloaded", 1);
    let still = tls_connect(addr, &old.ca_der).expect("the old certificate stays");
    assert_eq!(served_leaf(&still), old.leaf_der);

    std::fs::write(&key, &new.leaf_key_pem).unwrap();
    server.hup();
    server.wait_for("API certificate reloaded", 1);
    let after = tls_connect(addr, &new.ca_der).expect("the new certificate is served");
    assert_eq!(served_leaf(&after), new.leaf_der);
    assert!(tls_connect(addr, &old.ca_der).is_none());
    // The connection opened before goes on with the certificate it was accepted with.
    assert_eq!(healthz_on(&mut before), 200);
    assert_eq!(served_leaf(&before), old.leaf_der);
}
