//! The whole server against a real Dovecot and a local push sink: register over the REST
//! API, deliver mail, receive the encrypted push, lose the session, delete.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine as _;
use push::testing::{Sink, Subscriber};
use server::{App, Config};
use testkit::{simple_message, Dovecot, DovecotConfig};

mod common;

use common::{http, loopback_config as config, Reply, TempDir};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn registration(
    port: u16,
    user: &str,
    password: &str,
    device: &str,
    new_mail: &str,
    reconnect: &str,
) -> String {
    serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": port, "security": "tls",
                 "username": user, "password": password},
        "device_id": device,
        "new_mail": serde_json::from_str::<serde_json::Value>(new_mail).unwrap(),
        "reconnect": {"endpoint": reconnect},
    })
    .to_string()
}

fn verify_vapid(authorization: &str, public_key_b64: &str, origin: &str) {
    let rest = authorization
        .strip_prefix("vapid t=")
        .expect("vapid scheme");
    let (jwt, k) = rest.split_once(", k=").expect("t and k");
    assert_eq!(k, public_key_b64, "k is the published key");
    let (signed, signature) = jwt.rsplit_once('.').unwrap();
    let public_key = B64URL.decode(public_key_b64).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(signed.as_bytes(), &B64URL.decode(signature).unwrap())
        .expect("the JWT verifies with the published public key");
    let claims: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(signed.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["aud"], origin);
    let exp = claims["exp"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(exp > now && exp < now + 24 * 3600, "exp within 24 h");
}

#[test]
fn register_push_lose_and_delete() {
    let mut dovecot =
        Dovecot::start(DovecotConfig::default().with_user("bob", "secret-bob")).unwrap();
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(config(&dir, Some(&dovecot))).unwrap();
    let addr = app.local_addr();

    let vapid = http(addr, "GET", "/v1/vapid-public-key", "", "").json();
    let vapid_key = vapid["public_key"].as_str().unwrap().to_owned();

    let body = registration(
        dovecot.imaps_port(),
        "alice",
        "secret-alice",
        "phone-1",
        &phone.subscription_json(&sink.url("/alice/new")),
        &sink.url("/alice/reconnect"),
    );
    let reply = http(addr, "POST", "/v1/subscriptions", &body, "");
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(!reply.body.contains("secret-alice"));
    let created = reply.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "128-bit id in hex");
    assert_eq!(created["state"], "idle");
    assert_eq!(created["capabilities"]["idle"], true);
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/subscriptions/{id}").as_str())
    );
    let described = http(addr, "GET", &format!("/v1/subscriptions/{id}"), "", "").json();
    assert_eq!(described["state"], "idle");
    assert_eq!(described["mailboxes"][0], "INBOX");

    // New mail: one encrypted push within 1 s of delivery.
    let delivered = Instant::now();
    dovecot.deliver("alice", &simple_message("hi")).unwrap();
    let pushes = sink.wait_for(1, Duration::from_secs(5));
    let push = &pushes[0];
    let latency = push.at.duration_since(delivered);
    assert!(latency < Duration::from_secs(1), "push after {latency:?}");
    eprintln!("delivery to push: {latency:?}");
    assert_eq!(push.path, "/alice/new");
    assert_eq!(push.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(push.header("urgency"), Some("high"));
    assert!(push.header("ttl").is_some() && push.header("topic").is_some());
    verify_vapid(
        push.header("authorization").unwrap(),
        &vapid_key,
        &sink.origin(),
    );
    let plain: serde_json::Value =
        serde_json::from_slice(&phone.decrypt(&push.body).unwrap()).unwrap();
    assert_eq!(
        plain,
        serde_json::json!({"type": "new_mail", "subscription": id, "mailbox": "INBOX", "exists": 1})
    );

    // A second subscription, deleted: no push of any kind, and its session is freed.
    let body = registration(
        dovecot.imaps_port(),
        "bob",
        "secret-bob",
        "phone-2",
        &phone.subscription_json(&sink.url("/bob/new")),
        &sink.url("/bob/reconnect"),
    );
    let reply = http(addr, "POST", "/v1/subscriptions", &body, "");
    assert_eq!(reply.status, 201, "{}", reply.body);
    let bob = reply.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(dovecot.connection_count("bob").unwrap(), 1);
    let reply = http(addr, "DELETE", &format!("/v1/subscriptions/{bob}"), "", "");
    assert_eq!(reply.status, 204);
    dovecot
        .wait_for_connection_count("bob", 0, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        http(addr, "GET", &format!("/v1/subscriptions/{bob}"), "", "").status,
        404
    );

    // Dovecot goes away: alice's app is asked to register again.
    dovecot.stop();
    let all = sink.wait_for(2, Duration::from_secs(10));
    let reconnect = all
        .iter()
        .find(|r| r.path == "/alice/reconnect")
        .expect("reconnect push");
    let payload: serde_json::Value = serde_json::from_slice(&reconnect.body).unwrap();
    assert_eq!(payload["type"], "reconnect");
    // Keyless: the push service reads it, so no subscription id (issue 9).
    assert_eq!(payload.get("subscription"), None, "{payload}");
    assert!(payload["reason"].is_string());
    std::thread::sleep(Duration::from_millis(500));
    let paths: Vec<String> = sink.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        !paths.iter().any(|p| p.starts_with("/bob")),
        "the deleted subscription got a push: {paths:?}"
    );
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert_eq!(
        http(addr, "GET", &format!("/v1/subscriptions/{id}"), "", "").status,
        404,
        "a lost subscription is forgotten"
    );
    app.shutdown();
}

#[test]
fn reregistering_the_same_key_100_times_leaves_one_imap_session() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(config(&dir, Some(&dovecot))).unwrap();
    let body = registration(
        dovecot.imaps_port(),
        "alice",
        "secret-alice",
        "phone-1",
        &phone.subscription_json(&sink.url("/new")),
        &sink.url("/reconnect"),
    );
    let mut ids = std::collections::HashSet::new();
    for _ in 0..100 {
        let reply = http(app.local_addr(), "POST", "/v1/subscriptions", &body, "");
        assert_eq!(reply.status, 201, "{}", reply.body);
        ids.insert(reply.json()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 100, "every registration gets a fresh id");
    dovecot
        .wait_for_connection_count("alice", 1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    // Replaced subscriptions get no reconnect push.
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.requests().is_empty(), "{:?}", sink.requests().len());
    app.shutdown();
}

/// A TCP server that accepts and then does `behaviour` with each connection.
fn fake_imap(behaviour: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4).flatten() {
            std::thread::spawn(move || behaviour(stream));
        }
    });
    port
}

fn plain_registration(port: u16, security: &str, password: &str) -> String {
    serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": port, "security": security,
                 "username": "alice", "password": password},
        "new_mail": {"endpoint": "http://127.0.0.1:9/new"},
        "reconnect": {"endpoint": "http://127.0.0.1:9/reconnect"},
    })
    .to_string()
}

fn expect_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.json()["error"], code, "{}", reply.body);
    assert!(!reply.body.contains("pw-never-echoed"), "{}", reply.body);
}

#[test]
fn every_error_code_is_produced() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let dir = TempDir::new();
    let app = App::start(Config {
        register_timeout_secs: 2,
        ..config(&dir, Some(&dovecot))
    })
    .unwrap();
    let addr = app.local_addr();
    let post = |body: &str| http(addr, "POST", "/v1/subscriptions", body, "");

    expect_error(&post("{not json"), 400, "bad_request");
    let r = post(&plain_registration(
        dovecot.imaps_port(),
        "ssl",
        "pw-never-echoed",
    ));
    expect_error(&r, 400, "bad_request");
    assert_eq!(r.json()["field"], "imap.security");
    expect_error(&post(&"x".repeat(20_000)), 413, "too_large");
    expect_error(
        &post(&plain_registration(
            dovecot.imaps_port(),
            "tls",
            "pw-never-echoed",
        )),
        422,
        "imap_auth_failed",
    );
    // Nothing listens on a port we just closed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    expect_error(
        &post(&plain_registration(closed, "tls", "pw-never-echoed")),
        502,
        "imap_unreachable",
    );
    // STARTTLS requested from a server that does not offer it.
    let no_starttls = fake_imap(|mut s| {
        let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
        std::thread::sleep(Duration::from_secs(3));
    });
    expect_error(
        &post(&plain_registration(
            no_starttls,
            "starttls",
            "pw-never-echoed",
        )),
        502,
        "imap_tls_failed",
    );
    let garbage = fake_imap(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        std::thread::sleep(Duration::from_secs(3));
    });
    expect_error(
        &post(&plain_registration(garbage, "starttls", "pw-never-echoed")),
        502,
        "imap_protocol_error",
    );
    let silent = fake_imap(|s| {
        std::thread::sleep(Duration::from_secs(5));
        drop(s);
    });
    expect_error(
        &post(&plain_registration(silent, "starttls", "pw-never-echoed")),
        504,
        "imap_timeout",
    );
    expect_error(
        &http(
            addr,
            "GET",
            "/v1/subscriptions/0123456789abcdef0123456789abcdef",
            "",
            "",
        ),
        404,
        "not_found",
    );
    app.shutdown();
}

#[test]
fn limits_and_policies_produce_their_codes() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let dir = TempDir::new();

    // A server that allows no private destinations.
    let strict = App::start(Config {
        allow_private_destinations: false,
        ..config(&dir, Some(&dovecot))
    })
    .unwrap();
    let r = http(
        strict.local_addr(),
        "POST",
        "/v1/subscriptions",
        &plain_registration(dovecot.imaps_port(), "tls", "pw-never-echoed"),
        "",
    );
    expect_error(&r, 403, "forbidden_destination");
    strict.shutdown();

    // One session at most, two registrations a minute, a bearer token.
    let dir2 = TempDir::new();
    let mut cfg = config(&dir2, Some(&dovecot));
    cfg.limits.sessions_max = 1;
    cfg.limits.registrations_per_minute_per_ip = 2;
    cfg.api_token = Some("0123456789abcdef-token".into());
    let app = App::start(cfg).unwrap();
    let addr = app.local_addr();
    let auth = "Authorization: Bearer 0123456789abcdef-token\r\n";
    let body = plain_registration(dovecot.imaps_port(), "tls", "secret-alice");
    expect_error(
        &http(addr, "POST", "/v1/subscriptions", &body, ""),
        401,
        "unauthorized",
    );
    assert_eq!(http(addr, "GET", "/healthz", "", "").status, 200);
    let r = http(addr, "POST", "/v1/subscriptions", &body, auth);
    assert_eq!(r.status, 201, "{}", r.body);
    let other = serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port(), "username": "alice",
                 "password": "secret-alice"},
        "device_id": "second-device",
        "new_mail": {"endpoint": "http://127.0.0.1:9/new"},
        "reconnect": {"endpoint": "http://127.0.0.1:9/reconnect"},
    })
    .to_string();
    expect_error(
        &http(addr, "POST", "/v1/subscriptions", &other, auth),
        503,
        "at_capacity",
    );
    let r = http(addr, "POST", "/v1/subscriptions", &other, auth);
    expect_error(&r, 429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=31).contains(&retry), "{retry}");
    let metrics = http(addr, "GET", "/metrics", "", auth);
    assert_eq!(metrics.status, 200);
    // The engine's back-pressure counter is exported (nothing was deferred here).
    assert!(
        metrics
            .body
            .contains("imap_push_reactor_events_deferred_total 0"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("imap_push_sessions{state=\"idle\"} 1"),
        "{}",
        metrics.body
    );
    app.shutdown();
}

#[test]
fn serve_runs_on_embedded_defaults() {
    // The README's first command, minus cargo: `imap-push-proxy serve` in a fresh directory.
    let dir = TempDir::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(&dir.0)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http(addr, "GET", "/healthz", "", "").status, 200);
    assert!(dir.0.join("data/vapid.pk8").exists(), "data dir beside it");
    // SIGTERM: a clean exit.
    // SAFETY: sending a signal to the child we started, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn logins_to_one_host_are_paced_and_the_overflow_told_when_to_return() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let dir = TempDir::new();
    let mut cfg = config(&dir, Some(&dovecot));
    cfg.limits.logins_per_second_per_host = 4;
    cfg.limits.login_queue_secs = 1;
    // Twelve devices of one account: this test is about pacing, not the account cap.
    cfg.limits.sessions_per_account_max = 12;
    let app = App::start(cfg).unwrap();
    let addr = app.local_addr();
    let started = Instant::now();
    let replies: Vec<(u16, Option<String>, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|n| {
                let body = serde_json::json!({
                    "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port(),
                             "username": "alice", "password": "secret-alice"},
                    "device_id": format!("d{n}"),
                    "new_mail": {"endpoint": "http://127.0.0.1:9/new"},
                    "reconnect": {"endpoint": "http://127.0.0.1:9/re"},
                })
                .to_string();
                scope.spawn(move || {
                    let r = http(addr, "POST", "/v1/subscriptions", &body, "");
                    let retry = r.header("retry-after").map(str::to_owned);
                    (r.status, retry, started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<_> = replies.iter().filter(|r| r.0 == 201).collect();
    let refused: Vec<_> = replies.iter().filter(|r| r.0 == 429).collect();
    // A burst of 4, then 4 more spaced 250 ms apart within the 1 s queue.
    assert_eq!((created.len(), refused.len()), (8, 4), "{replies:?}");
    assert!(
        refused.iter().all(|r| r.1.is_some()),
        "429s carry Retry-After"
    );
    let last = created.iter().map(|r| r.2).max().unwrap();
    assert!(
        last >= Duration::from_millis(900),
        "logins were spread: {last:?}"
    );
    let metrics = http(addr, "GET", "/metrics", "", "").body;
    assert!(
        metrics.contains("imap_push_logins_paced_total 4"),
        "{metrics}"
    );
    app.shutdown();
}

#[test]
fn sessions_per_imap_host_are_capped() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let dir = TempDir::new();
    let mut cfg = config(&dir, Some(&dovecot));
    cfg.limits.sessions_per_host_max = 1;
    let app = App::start(cfg).unwrap();
    let addr = app.local_addr();
    let body = |device: &str| {
        serde_json::json!({
            "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port(),
                     "username": "alice", "password": "secret-alice"},
            "device_id": device,
            "new_mail": {"endpoint": "http://127.0.0.1:9/new"},
            "reconnect": {"endpoint": "http://127.0.0.1:9/re"},
        })
        .to_string()
    };
    let r = http(addr, "POST", "/v1/subscriptions", &body("a"), "");
    assert_eq!(r.status, 201, "{}", r.body);
    expect_error(
        &http(addr, "POST", "/v1/subscriptions", &body("b"), ""),
        503,
        "at_capacity",
    );
    // Replacing the same key is not a second session.
    let r = http(addr, "POST", "/v1/subscriptions", &body("a"), "");
    assert_eq!(r.status, 201, "{}", r.body);
    let metrics = http(addr, "GET", "/metrics", "", "").body;
    assert!(
        metrics.contains("imap_push_host_cap_rejections_total 1"),
        "{metrics}"
    );
    app.shutdown();
}
