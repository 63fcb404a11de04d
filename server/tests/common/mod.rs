//! What the server's integration tests share: a temp dir, one-shot HTTP requests, and
//! registration bodies. Each test binary uses a part of it.
#![allow(dead_code)]

pub mod pushes;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use server::Config;
use testkit::Dovecot;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ipp-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server configured for loopback destinations, trusting `dovecot`'s test CA.
pub fn loopback_config(dir: &TempDir, dovecot: Option<&Dovecot>) -> Config {
    let ca = dovecot.map(|d| {
        let path = dir.0.join("ca.pem");
        std::fs::write(&path, d.ca_pem()).unwrap();
        path
    });
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.0.join("data"),
        reactor_threads: 1,
        sender_threads: 2,
        allow_private_destinations: true,
        allow_http_endpoints: true,
        imap_extra_ca_file: ca,
        shutdown_grace_secs: 1,
        ..Config::default()
    }
}

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `error` code of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// How long one request may take before the test fails.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(40);

/// One request on a fresh connection; `extra` is more header lines, each ending in CRLF.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str, extra: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_reply(&raw)
}

/// Parses a whole `Connection: close` response.
pub fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub fn post(addr: SocketAddr, body: &str) -> Reply {
    http(addr, "POST", "/v1/subscriptions", body, "")
}

pub fn get(addr: SocketAddr, id: &str) -> Reply {
    http(addr, "GET", &format!("/v1/subscriptions/{id}"), "", "")
}

pub fn delete(addr: SocketAddr, id: &str) -> Reply {
    http(addr, "DELETE", &format!("/v1/subscriptions/{id}"), "", "")
}

/// A registration body: IMAP account, device, and two keyless endpoints.
pub struct Registration<'a> {
    pub host: &'a str,
    pub port: u16,
    pub security: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub device_id: &'a str,
    pub new_mail: &'a str,
    pub reconnect: &'a str,
}

impl Registration<'_> {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "imap": {"host": self.host, "port": self.port, "security": self.security,
                     "username": self.username, "password": self.password},
            "device_id": self.device_id,
            "new_mail": {"endpoint": self.new_mail},
            "reconnect": {"endpoint": self.reconnect},
        })
    }

    pub fn body(&self) -> String {
        self.json().to_string()
    }
}

/// Polls `predicate` every 10 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut predicate: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if predicate() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
