//! The connect filter is asked twice: for every resolved address, and again for each
//! address right before its connect(), so a destination that changes between check and
//! connect (DNS rebinding, or anything else) is still refused, and without a handshake.

use std::net::{IpAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::{EndReason, Engine, EngineConfig, Event, Secret, Security, WatchSpec};
use zeroize::Zeroizing;

fn spec(host: &str, port: u16) -> WatchSpec {
    WatchSpec {
        host: host.into(),
        port,
        security: Security::DangerousPlain,
        username: "alice".into(),
        secret: Secret::Password(Zeroizing::new(b"pw".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}

fn first_event(engine: &Engine) -> Event {
    engine
        .events()
        .recv_timeout(Duration::from_secs(10))
        .expect("an event")
}

#[test]
fn an_address_refused_at_connect_time_is_forbidden_even_if_the_lookup_passed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    // Says yes at lookup time, no afterwards: what a rebinding DNS answer looks like to us.
    let filter: engine::ConnectFilter =
        Arc::new(move |_ip: IpAddr| seen.fetch_add(1, Ordering::SeqCst) == 0);
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        webpki_roots: false,
        connect_filter: Some(filter),
        ..EngineConfig::default()
    })
    .unwrap();
    let id = engine.watch(spec("127.0.0.1", port)).unwrap();
    assert_eq!(
        first_event(&engine),
        Event::Failed {
            id,
            reason: EndReason::Forbidden
        }
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "checked at lookup and at connect"
    );
}

#[test]
fn a_name_resolving_only_to_refused_addresses_is_forbidden_before_any_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        webpki_roots: false,
        connect_filter: Some(Arc::new(|ip: IpAddr| !ip.is_loopback())),
        ..EngineConfig::default()
    })
    .unwrap();
    let id = engine.watch(spec("localhost", port)).unwrap();
    assert_eq!(
        first_event(&engine),
        Event::Failed {
            id,
            reason: EndReason::Forbidden
        }
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(listener.accept().is_err(), "no connection was attempted");
}

/// The API must not work as a port scanner: an address refused at connect time is
/// refused before connect(), so the listener sees nothing (it used to see the TCP
/// handshake, and the refusal came after it).
#[test]
fn an_address_refused_at_connect_time_gets_no_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let filter: engine::ConnectFilter =
        Arc::new(move |_ip: IpAddr| seen.fetch_add(1, Ordering::SeqCst) == 0);
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        webpki_roots: false,
        connect_filter: Some(filter),
        ..EngineConfig::default()
    })
    .unwrap();
    let id = engine.watch(spec("127.0.0.1", port)).unwrap();
    assert_eq!(
        first_event(&engine),
        Event::Failed {
            id,
            reason: EndReason::Forbidden
        }
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        listener.accept().is_err(),
        "the refused address saw a connection"
    );
}
