//! A proxy from the environment must not carry a push past the address filter (issue 9).
//! A binary of its own: it sets process-wide environment variables.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use push::sender::AddressFilter;
use push::{Kind, Notification, Outcome, PushTarget, Sender, SenderConfig, Unsendable};

const PROXY_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn an_environment_proxy_is_not_used_when_a_filter_is_set() {
    // A "proxy" that counts the connections it gets and never answers.
    let proxy = TcpListener::bind((PROXY_IP, 0)).unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in proxy.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    for name in [
        "ALL_PROXY",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ] {
        std::env::set_var(name, format!("http://{proxy_addr}"));
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    // The filter allows the proxy's address and nothing else: the endpoint (another
    // loopback address) must be refused, whichever way the request would go.
    let only_the_proxy: AddressFilter = Arc::new(|ip| ip == PROXY_IP);
    let sender = Sender::new(SenderConfig {
        use_env_proxy: true,
        timeout_ms: 1_000,
        ..SenderConfig::default()
    })
    .with_address_filter(only_the_proxy);
    let target = PushTarget::web_push_unencrypted("http://127.0.0.2:9/push").unwrap();
    let notification = Notification {
        kind: Kind::NewMail,
        payload_json: b"{}",
        topic: None,
        simple_push_version: 0,
    };
    let outcome = sender.send(&target, &notification, 1_700_000_000);
    assert_eq!(
        outcome,
        Outcome::Unsendable(Unsendable::ForbiddenDestination)
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the proxy saw a connection");

    // Without a filter (an operator who allows private destinations) the proxy is used:
    // it gets the connection, and its silence ends the push as a retry.
    let unfiltered = Sender::new(SenderConfig {
        use_env_proxy: true,
        timeout_ms: 500,
        ..SenderConfig::default()
    });
    let outcome = unfiltered.send(&target, &notification, 1_700_000_000);
    assert_eq!(outcome, Outcome::Retry { status: None });
    assert_eq!(seen.load(Ordering::SeqCst), 1, "through the proxy");
}
