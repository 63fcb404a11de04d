//! Endpoint verification (issue 14; RFC 8620 §7.2) with `require_endpoint_verification`
//! on, against a real Dovecot and a local push sink: one verification push per endpoint,
//! nothing else until both codes come back, the mail that waited as one push, wrong codes
//! up to the limit, expiry, a restart while verifying, and replacement only once verified.

use std::net::SocketAddr;
use std::time::Duration;

use push::testing::{Recorded, Sink, Subscriber};
use serde_json::{json, Value};
use server::verification::VERIFY_ATTEMPTS_MAX;
use server::{App, Config};
use testkit::{simple_message, Dovecot, DovecotConfig};

mod common;

use common::{get, http, loopback_config, post, Reply, TempDir};

/// How long a test waits for a push that must come.
const PUSH_WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to see that no push comes: longer than the engine takes from
/// delivery to a push on loopback (well under a second, see e2e.rs) several times over.
const QUIET: Duration = Duration::from_secs(2);

fn config(dir: &TempDir, dovecot: &Dovecot) -> Config {
    Config {
        require_endpoint_verification: true,
        ..loopback_config(dir, Some(dovecot))
    }
}

/// A registration of `user` (password `secret-USER`) as `device`: the new-mail endpoint
/// encrypted to `phone`, the reconnect endpoint keyless, both on `sink` under `/USER-DEVICE/`.
fn registration(
    dovecot: &Dovecot,
    sink: &Sink,
    phone: &Subscriber,
    user: &str,
    device: &str,
) -> String {
    let new_mail: Value =
        serde_json::from_str(&phone.subscription_json(&sink.url(&format!("/{user}-{device}/new"))))
            .unwrap();
    json!({
        "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port(), "security": "tls",
                 "username": user, "password": format!("secret-{user}")},
        "device_id": device,
        "new_mail": new_mail,
        "reconnect": {"endpoint": sink.url(&format!("/{user}-{device}/re"))},
        "tag": "work",
    })
    .to_string()
}

fn verify(addr: SocketAddr, id: &str, new_mail: &str, reconnect: &str) -> Reply {
    let body = json!({"new_mail": new_mail, "reconnect": reconnect}).to_string();
    http(
        addr,
        "POST",
        &format!("/v1/subscriptions/{id}/verify"),
        &body,
        "",
    )
}

/// The pushes the sink got on paths starting with `prefix`.
fn pushes_to(sink: &Sink, prefix: &str) -> Vec<Recorded> {
    sink.requests()
        .into_iter()
        .filter(|r| r.path.starts_with(prefix))
        .collect()
}

/// The payload of a push: decrypted with `phone` when it is encrypted.
fn payload(push: &Recorded, phone: &Subscriber) -> Value {
    let body = if push.header("content-encoding") == Some("aes128gcm") {
        phone.decrypt(&push.body).expect("decrypts")
    } else {
        push.body.clone()
    };
    serde_json::from_slice(&body).unwrap()
}

/// A registered subscription still verifying, and the codes its two pushes carried.
struct Verifying {
    id: String,
    new_mail_code: String,
    reconnect_code: String,
}

/// Registers and checks the verification pushes: exactly one per endpoint, each
/// `{"type": "verify", "code": ..., "tag": "work"}`, the id only in the encrypted one.
fn register(
    addr: SocketAddr,
    body: &str,
    sink: &Sink,
    phone: &Subscriber,
    prefix: &str,
) -> Verifying {
    let reply = post(addr, body);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let created = reply.json();
    assert_eq!(created["state"], "verifying", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let new_mail_path = format!("{prefix}/new");
    let re_path = format!("{prefix}/re");
    assert!(
        common::eventually(PUSH_WAIT, || pushes_to(sink, prefix).len() >= 2),
        "two verification pushes"
    );
    std::thread::sleep(QUIET);
    let pushes = pushes_to(sink, prefix);
    assert_eq!(pushes.len(), 2, "exactly one per endpoint: {pushes:?}");
    let to = |path: &str| {
        let push = pushes
            .iter()
            .find(|p| p.path == path)
            .unwrap_or_else(|| panic!("none to {path}"));
        payload(push, phone)
    };
    let (new_mail, re) = (to(&new_mail_path), to(&re_path));
    for p in [&new_mail, &re] {
        assert_eq!(p["type"], "verify", "{p}");
        assert_eq!(p["tag"], "work", "{p}");
        assert_eq!(
            p["code"].as_str().unwrap().len(),
            22,
            "128 bits in base64url: {p}"
        );
    }
    assert_eq!(
        new_mail["subscription"],
        id.as_str(),
        "encrypted: it names the subscription"
    );
    assert!(
        re.get("subscription").is_none(),
        "keyless: no subscription id: {re}"
    );
    assert_ne!(new_mail["code"], re["code"], "one code per endpoint");
    Verifying {
        id,
        new_mail_code: new_mail["code"].as_str().unwrap().to_owned(),
        reconnect_code: re["code"].as_str().unwrap().to_owned(),
    }
}

fn dovecot_with(users: &[&str]) -> Dovecot {
    let config = users.iter().fold(DovecotConfig::default(), |c, user| {
        c.with_user(*user, format!("secret-{user}"))
    });
    Dovecot::start(config).unwrap()
}

/// Lines of Dovecot's log saying `user`'s IMAP session ended with LOGOUT.
fn logouts(dovecot: &Dovecot, user: &str) -> usize {
    let prefix = format!("imap({user})");
    dovecot
        .log()
        .lines()
        .filter(|l| l.contains(&prefix) && l.contains("Logged out"))
        .count()
}

#[test]
fn nothing_but_verification_until_verified_then_the_mail_that_waited() {
    let dovecot = dovecot_with(&["anna"]);
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(config(&dir, &dovecot)).unwrap();
    let addr = app.local_addr();

    let body = registration(&dovecot, &sink, &phone, "anna", "phone");
    let v = register(addr, &body, &sink, &phone, "/anna-phone");
    assert_eq!(get(addr, &v.id).json()["state"], "verifying");
    let metrics = http(addr, "GET", "/metrics", "", "").body;
    assert!(
        metrics.contains("imap_push_sessions{state=\"verifying\"} 1"),
        "{metrics}"
    );

    // Mail before verification: no push.
    dovecot.deliver("anna", &simple_message("one")).unwrap();
    dovecot.deliver("anna", &simple_message("two")).unwrap();
    std::thread::sleep(QUIET);
    assert_eq!(sink.requests().len(), 2, "no push before verification");
    assert_eq!(get(addr, &v.id).json()["last_new_mail"]["exists"], 2);

    // A wrong code is refused, and the subscription stays.
    let wrong = verify(addr, &v.id, &v.new_mail_code, &v.new_mail_code);
    assert_eq!(
        (wrong.status, wrong.error()),
        (422, "verification_failed".into()),
        "{}",
        wrong.body
    );
    let bad = http(
        addr,
        "POST",
        &format!("/v1/subscriptions/{}/verify", v.id),
        "{}",
        "",
    );
    assert_eq!(bad.status, 400, "{}", bad.body);

    // Verified: 200 with the body of GET, and exactly one push for the mail that waited.
    let ok = verify(addr, &v.id, &v.new_mail_code, &v.reconnect_code);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let verified = ok.json();
    assert_eq!(verified["state"], "idle", "{verified}");
    assert_eq!(verified["id"], v.id.as_str());
    let pushes = sink.wait_for(3, PUSH_WAIT);
    std::thread::sleep(QUIET);
    let pushes_now = sink.requests();
    assert_eq!(
        pushes_now.len(),
        3,
        "one push for the mail that waited: {pushes:?}"
    );
    let mail = payload(&pushes_now[2], &phone);
    assert_eq!(pushes_now[2].path, "/anna-phone/new");
    assert_eq!(
        mail,
        json!({"type": "new_mail", "subscription": v.id, "tag": "work", "mailbox": "INBOX", "exists": 2})
    );
    assert_eq!(get(addr, &v.id).json()["state"], "idle");

    // A code is good once.
    let again = verify(addr, &v.id, &v.new_mail_code, &v.reconnect_code);
    assert_eq!(
        (again.status, again.error()),
        (422, "verification_failed".into())
    );

    // Active now: new mail is pushed as it comes.
    dovecot.deliver("anna", &simple_message("three")).unwrap();
    let pushes = sink.wait_for(4, PUSH_WAIT);
    assert_eq!(pushes.len(), 4);
    assert_eq!(payload(&pushes[3], &phone)["exists"], 3);
    app.shutdown();
}

#[test]
fn too_many_wrong_codes_drop_the_subscription_without_a_push() {
    let dovecot = dovecot_with(&["bert"]);
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(config(&dir, &dovecot)).unwrap();
    let addr = app.local_addr();
    let body = registration(&dovecot, &sink, &phone, "bert", "phone");
    let v = register(addr, &body, &sink, &phone, "/bert-phone");
    assert_eq!(dovecot.connection_count("bert").unwrap(), 1);
    dovecot.deliver("bert", &simple_message("waiting")).unwrap();

    let wrong_code = "A".repeat(22);
    for attempt in 1..VERIFY_ATTEMPTS_MAX {
        let reply = verify(addr, &v.id, &wrong_code, &v.reconnect_code);
        assert_eq!(
            reply.error(),
            "verification_failed",
            "attempt {attempt}: {}",
            reply.body
        );
        assert_eq!(
            get(addr, &v.id).json()["state"],
            "verifying",
            "attempt {attempt}"
        );
    }
    // One past the limit: refused, and the subscription is dropped.
    let last = verify(addr, &v.id, &wrong_code, &v.reconnect_code);
    assert_eq!(
        (last.status, last.error()),
        (422, "verification_failed".into()),
        "{}",
        last.body
    );
    assert_eq!(get(addr, &v.id).status, 404);
    dovecot
        .wait_for_connection_count("bert", 0, PUSH_WAIT)
        .unwrap();
    assert!(
        common::eventually(PUSH_WAIT, || logouts(&dovecot, "bert") == 1),
        "LOGOUT"
    );
    // The right codes come too late.
    let late = verify(addr, &v.id, &v.new_mail_code, &v.reconnect_code);
    assert_eq!(late.status, 404);
    std::thread::sleep(QUIET);
    assert_eq!(
        sink.requests().len(),
        2,
        "no new-mail or reconnect push: {:?}",
        sink.requests()
    );
    app.shutdown();
    assert_eq!(sink.requests().len(), 2, "no shutdown push either");
}

#[test]
fn an_unverified_subscription_expires_with_logout_and_no_push() {
    let dovecot = dovecot_with(&["cleo"]);
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(Config {
        verification_timeout_secs: 1,
        ..config(&dir, &dovecot)
    })
    .unwrap();
    let addr = app.local_addr();
    let reply = post(
        addr,
        &registration(&dovecot, &sink, &phone, "cleo", "phone"),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    dovecot.deliver("cleo", &simple_message("waiting")).unwrap();
    dovecot
        .wait_for_connection_count("cleo", 0, PUSH_WAIT)
        .unwrap();
    assert!(
        common::eventually(PUSH_WAIT, || logouts(&dovecot, "cleo") == 1),
        "LOGOUT"
    );
    assert_eq!(get(addr, &id).status, 404);
    std::thread::sleep(QUIET);
    let pushes = sink.requests();
    assert_eq!(
        pushes.len(),
        2,
        "the two verification pushes only: {pushes:?}"
    );
    assert!(pushes
        .iter()
        .all(|p| payload(p, &phone)["type"] == "verify"));
    app.shutdown();
}

#[test]
fn a_restart_while_verifying_pushes_nothing() {
    let dovecot = dovecot_with(&["dora", "emil"]);
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(config(&dir, &dovecot)).unwrap();
    let addr = app.local_addr();
    let waiting = register(
        addr,
        &registration(&dovecot, &sink, &phone, "dora", "phone"),
        &sink,
        &phone,
        "/dora-phone",
    );
    // A verified control: it gets its shutdown push, so pushes do go at shutdown.
    let active = register(
        addr,
        &registration(&dovecot, &sink, &phone, "emil", "phone"),
        &sink,
        &phone,
        "/emil-phone",
    );
    let ok = verify(
        addr,
        &active.id,
        &active.new_mail_code,
        &active.reconnect_code,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    dovecot.deliver("dora", &simple_message("waiting")).unwrap();
    std::thread::sleep(QUIET);
    app.shutdown();
    let shutdown = pushes_to(&sink, "/emil-phone/re");
    assert_eq!(shutdown.len(), 2, "verify, then shutdown: {shutdown:?}");
    assert_eq!(payload(&shutdown[1], &phone)["reason"], "shutdown");

    // The journal kept dora's record as verifying: the next start drops it, silently.
    let app = App::start(config(&dir, &dovecot)).unwrap();
    std::thread::sleep(QUIET);
    let dora = pushes_to(&sink, "/dora-phone");
    assert_eq!(
        dora.len(),
        2,
        "only the verification pushes, no restart push: {dora:?}"
    );
    assert_eq!(get(app.local_addr(), &waiting.id).status, 404);
    app.shutdown();
}

#[test]
fn a_re_registration_replaces_the_live_one_only_once_verified() {
    let dovecot = dovecot_with(&["finn"]);
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(config(&dir, &dovecot)).unwrap();
    let addr = app.local_addr();
    let old = register(
        addr,
        &registration(&dovecot, &sink, &phone, "finn", "phone"),
        &sink,
        &phone,
        "/finn-phone",
    );
    let ok = verify(addr, &old.id, &old.new_mail_code, &old.reconnect_code);
    assert_eq!(ok.status, 200, "{}", ok.body);

    // The same account and device again, to other endpoints (another `tag` path).
    let body = registration(&dovecot, &sink, &phone, "finn", "phone")
        .replace("/finn-phone/", "/finn-phone2/");
    let new = register(addr, &body, &sink, &phone, "/finn-phone2");
    assert_eq!(
        dovecot.connection_count("finn").unwrap(),
        2,
        "both sessions while verifying"
    );
    // Until the new one is verified, the old one keeps working and the new one is quiet.
    dovecot
        .deliver("finn", &simple_message("for the old one"))
        .unwrap();
    assert!(common::eventually(PUSH_WAIT, || pushes_to(
        &sink,
        "/finn-phone/new"
    )
    .len()
        == 2));
    std::thread::sleep(QUIET);
    assert_eq!(
        pushes_to(&sink, "/finn-phone2").len(),
        2,
        "verification only"
    );
    assert_eq!(get(addr, &old.id).json()["state"], "idle");

    let ok = verify(addr, &new.id, &new.new_mail_code, &new.reconnect_code);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(get(addr, &old.id).status, 404, "replaced");
    dovecot
        .wait_for_connection_count("finn", 1, PUSH_WAIT)
        .unwrap();
    // The mail that waited for the new one, once.
    assert!(common::eventually(PUSH_WAIT, || pushes_to(
        &sink,
        "/finn-phone2/new"
    )
    .len()
        == 2));
    std::thread::sleep(QUIET);
    assert_eq!(
        pushes_to(&sink, "/finn-phone/re").len(),
        1,
        "the replaced one gets no reconnect push"
    );
    assert_eq!(pushes_to(&sink, "/finn-phone2").len(), 3);
    app.shutdown();
}
