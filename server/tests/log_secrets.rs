//! No log line holds a secret: the server runs at the most verbose level (`RUST_LOG=trace`)
//! through the end-to-end scenario (registrations over IMAP TLS against Dovecot with
//! unique passwords, new mail pushed to a sink, DELETE, a wrong password, endpoints that
//! answer 503 and 410, refused requests with wrong bearer tokens, the shutdown), in both
//! log formats, and its stderr is searched for every password (and the base64 of its
//! AUTHENTICATE PLAIN response), the API token, the wrong tokens, every endpoint URL and
//! path, every p256dh and auth key (raw and base64url) and every subscription id.
//!
//! The log must also hold the lines of the run (start, session end, push failure, gone,
//! summary), so the test cannot pass on a silent server.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use push::testing::{Sink, Subscriber};
use testkit::{simple_message, Dovecot, DovecotConfig};

mod common;

use common::{eventually, http, Reply, TempDir};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Registrations of the memory-scan scenario, each with its own password.
const ACCOUNTS: usize = 20;
const API_TOKEN: &str = "logscan-api-token-7f3a9c21d4e8";
/// How long a line may take to show up in the log.
const LOG_WAIT: Duration = Duration::from_secs(20);

struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Server {
    fn start(config: &Path, log: &Path, addr: SocketAddr) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(log).unwrap()))
            .spawn()
            .unwrap();
        let server = Server {
            child,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_line(&self, needles: &[&str]) {
        let found = eventually(LOG_WAIT, || {
            self.log()
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)))
        });
        assert!(found, "no line with {needles:?} in:\n{}", self.log());
    }

    /// SIGTERM, then waits for the exit: the shutdown summary is the last line.
    fn stop(mut self) -> String {
        // SAFETY: kill sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every secret of the run, as the bytes to search for.
#[derive(Default)]
struct Secrets(Vec<(String, Vec<u8>)>);

impl Secrets {
    fn add(&mut self, what: &str, bytes: impl AsRef<[u8]>) {
        self.0.push((what.to_owned(), bytes.as_ref().to_vec()));
    }

    fn password(&mut self, user: &str, password: &str) {
        self.add("password", password);
        self.add(
            "AUTHENTICATE PLAIN",
            B64.encode(format!("\0{user}\0{password}")),
        );
        self.add("password (base64)", B64.encode(password));
    }

    fn endpoint(&mut self, url: &str) {
        self.add("endpoint URL", url);
        let path = url.splitn(4, '/').nth(3).unwrap();
        self.add("endpoint path", format!("/{path}"));
    }

    fn subscriber(&mut self, phone: &Subscriber) {
        self.add("p256dh", phone.p256dh());
        self.add("auth", phone.auth());
        self.add("p256dh (b64url)", phone.p256dh_b64url());
        self.add("auth (b64url)", phone.auth_b64url());
        self.add("p256dh (b64)", B64.encode(phone.p256dh()));
        self.add("auth (b64)", B64.encode(phone.auth()));
    }

    fn assert_none_in(&self, log: &str) {
        let bytes = log.as_bytes();
        let found: Vec<&String> = self
            .0
            .iter()
            .filter(|(_, needle)| bytes.windows(needle.len()).any(|w| w == needle.as_slice()))
            .map(|(what, _)| what)
            .collect();
        assert!(found.is_empty(), "secrets in the log: {found:?}");
    }
}

fn authorized(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let header = format!("Authorization: Bearer {API_TOKEN}\r\n");
    http(addr, method, path, body, &header)
}

fn register(addr: SocketAddr, port: u16, user: &str, password: &str, new_mail: &str) -> Reply {
    let body = serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": port, "security": "tls",
                 "username": user, "password": password},
        "device_id": format!("device-{user}"),
        "new_mail": serde_json::from_str::<serde_json::Value>(new_mail).unwrap(),
        "reconnect": {"endpoint": new_mail_endpoint(new_mail).replace("/new", "/re")},
    });
    authorized(addr, "POST", "/v1/subscriptions", &body.to_string())
}

fn new_mail_endpoint(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["endpoint"].as_str().unwrap().to_owned()
}

/// A path no one could guess, as a push service's capability is.
fn unique_path(name: &str) -> String {
    let mut bytes = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("/push-{name}-{hex}/new")
}

fn password(n: usize) -> String {
    format!(
        "logpw-{n:03}-{:016x}",
        0x9e37_79b9_7f4a_7c15u64.wrapping_mul(n as u64 + 7)
    )
}

fn run_scenario(format: &str) {
    let users: Vec<(String, String)> = (0..ACCOUNTS + 3)
        .map(|n| (format!("user{n}"), password(n)))
        .collect();
    let dovecot = Dovecot::start(
        DovecotConfig::default()
            .with_users(users.clone())
            .max_connections(4 * ACCOUNTS as u32),
    )
    .unwrap();
    let sink = Sink::start();
    let dir = TempDir::new();
    std::fs::write(dir.path().join("ca.pem"), dovecot.ca_pem()).unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\nimap_extra_ca_file = \"{}\"\n\
             allow_private_destinations = true\nallow_http_endpoints = true\n\
             api_token = \"{API_TOKEN}\"\nlog_format = \"{format}\"\nshutdown_grace_secs = 2\n\
             [limits]\nregistrations_per_minute_per_ip = 1000000\nlogins_per_second_per_host = 1000000\n",
            dir.path().join("data").display(),
            dir.path().join("ca.pem").display()
        ),
    )
    .unwrap();
    let server = Server::start(&config, &dir.path().join("stderr.log"), addr);
    let mut secrets = Secrets::default();
    secrets.add("API token", API_TOKEN);
    let imaps = dovecot.imaps_port();

    // The memory-scan scenario's registrations: unique passwords, keys and endpoints.
    let mut ids = Vec::new();
    for (user, pw) in &users[..ACCOUNTS] {
        let phone = Subscriber::generate();
        let url = sink.url(&unique_path(user));
        let reply = register(addr, imaps, user, pw, &phone.subscription_json(&url));
        assert_eq!(reply.status, 201, "{}", reply.body);
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
        secrets.password(user, pw);
        secrets.subscriber(&phone);
        secrets.endpoint(&url);
        secrets.endpoint(&url.replace("/new", "/re"));
    }

    // New mail pushed to the sink.
    dovecot.deliver("user0", &simple_message("hi")).unwrap();
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).len(), 1);

    // Endpoints answering 503 and 410.
    let (failing, gone) = (&users[ACCOUNTS], &users[ACCOUNTS + 1]);
    for ((user, pw), status) in [(failing, 503), (gone, 410)] {
        let phone = Subscriber::generate();
        let path = unique_path(user);
        sink.set_status(&path, status);
        let url = sink.url(&path);
        let reply = register(addr, imaps, user, pw, &phone.subscription_json(&url));
        assert_eq!(reply.status, 201, "{}", reply.body);
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
        secrets.password(user, pw);
        secrets.subscriber(&phone);
        secrets.endpoint(&url);
        secrets.endpoint(&url.replace("/new", "/re"));
        dovecot.deliver(user, &simple_message("fails")).unwrap();
    }

    // A wrong password, and wrong bearer tokens.
    let (user, _) = &users[ACCOUNTS + 2];
    let wrong = "logpw-wrong-5b1e0c77aa";
    let phone = Subscriber::generate();
    let url = sink.url(&unique_path("wrong"));
    let reply = register(addr, imaps, user, wrong, &phone.subscription_json(&url));
    assert_eq!(reply.status, 422, "{}", reply.body);
    secrets.password(user, wrong);
    secrets.subscriber(&phone);
    secrets.endpoint(&url);
    for n in 0..3 {
        let token = format!("logscan-wrong-token-{n}-0123456789");
        let header = format!("Authorization: Bearer {token}\r\n");
        let reply = http(addr, "POST", "/v1/subscriptions", "{}", &header);
        assert_eq!(reply.status, 401);
        secrets.add("wrong token", &token);
    }

    // Refused requests that carry a password: 400 (a bad field), 404, 405, 413.
    for (n, (method, path, status)) in [
        ("POST", "/v1/subscriptions", 400),
        ("POST", "/v1/nowhere", 404),
        ("PUT", "/v1/subscriptions", 405),
        ("POST", "/v1/subscriptions", 413),
    ]
    .into_iter()
    .enumerate()
    {
        let pw = format!("logpw-refused-{n}-c0ffee{status}");
        let mut body = serde_json::json!({
            "imap": {"host": "127.0.0.1", "port": imaps, "security": "bogus",
                     "username": user, "password": pw},
            "new_mail": {"endpoint": url},
            "reconnect": {"endpoint": url},
        });
        if status == 413 {
            body["padding"] = "x".repeat(64 * 1024).into();
        }
        let reply = authorized(addr, method, path, &body.to_string());
        assert_eq!(reply.status, status, "{}", reply.body);
        secrets.password(user, &pw);
    }

    // DELETE.
    let reply = authorized(addr, "DELETE", &format!("/v1/subscriptions/{}", ids[1]), "");
    assert_eq!(reply.status, 204);

    server.wait_for_line(&["push attempt failed", "503"]);
    server.wait_for_line(&["push endpoint gone", "404/410"]);
    server.wait_for_line(&["session ended", "auth_rejected", "127.0.0.1"]);
    server.wait_for_line(&["request refused", "unauthorized"]);
    server.wait_for_line(&["request refused", "bad_request"]);
    let log = server.stop();
    for id in &ids {
        secrets.add("subscription id", id);
    }
    // The secrets are searched in the whole log, JSON escapes and all.
    secrets.assert_none_in(&log);
    assert!(log.contains("started"), "{log}");
    assert!(log.contains("stopped: run summary"), "{log}");
    assert!(log.lines().count() >= 6, "{log}");
    if format == "json" {
        for line in log.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        }
    } else {
        assert!(log.lines().all(|l| !l.starts_with('{')), "{log}");
    }
    // Shown with --nocapture: the README's excerpt is from here.
    eprintln!("{log}");
    eprintln!(
        "{format}: {} lines, {} secrets searched",
        log.lines().count(),
        secrets.0.len()
    );
}

#[test]
fn a_trace_level_text_log_holds_no_secret() {
    run_scenario("text");
}

#[test]
fn a_trace_level_json_log_holds_no_secret() {
    run_scenario("json");
}
