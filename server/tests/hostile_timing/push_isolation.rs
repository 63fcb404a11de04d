//! See hostile_timing.rs.
//!
//! Push isolation (issue 9, attack 7): a slow or hostile push service must not delay
//! another one's pushes by more than a second. The push rules and sender threads run
//! as the server runs them (`DeliveryConfig::default()`, `SenderConfig::default()`),
//! against real sockets on loopback: a tarpit that accepts and never answers, and `push::testing::Sink`s.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::pushes::Live;
use push::testing::{Recorded, Sink};
use push::{PushTarget, Sender, SenderConfig};
use server::delivery::{DeliveryConfig, PushSubscription};

/// Subscriptions whose endpoints are on the tarpit.
const TARPIT_ENDPOINTS: usize = 40;
/// What "not delayed" means: the other origin's push arrives within this.
const DELAY_MAX: Duration = Duration::from_secs(1);

/// A push service that accepts every connection and never answers. Connections are held
/// until the tarpit is dropped.
struct Tarpit {
    addr: std::net::SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Tarpit {
    fn start() -> Tarpit {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&held);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        Tarpit { addr, held }
    }

    fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        for stream in self.held.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A subscription whose id is made of `name` (its bytes, zero-padded).
fn subscription(name: &str, url: &str) -> Arc<PushSubscription> {
    let target = PushTarget::web_push_unencrypted(url).unwrap();
    let mut bytes = [0u8; 16];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    let id = server::id::SubscriptionId::from_bytes(bytes);
    PushSubscription::new(id, target.clone(), target, 1_000)
}

/// The rules with the real sender threads, as the server runs them
/// (`DeliveryConfig::default()`, `SenderConfig::default()`).
fn server_like_pool() -> Live {
    let sender = Sender::new(SenderConfig {
        use_env_proxy: false,
        ..SenderConfig::default()
    });
    Live::start(DeliveryConfig::default(), sender)
}

/// Runs the rules until `sink` has `n` requests, at most `timeout`.
fn wait_for(live: &mut Live, sink: &Sink, n: usize, timeout: Duration) -> Vec<Recorded> {
    let until = Instant::now() + timeout;
    while sink.requests().len() < n && Instant::now() < until {
        live.run_for(Duration::from_millis(5));
    }
    sink.requests()
}

#[test]
fn tarpit_endpoints_do_not_delay_another_origin() {
    let _serial = crate::serial();
    let tarpit = Tarpit::start();
    let sink = Sink::start();
    let mut live = server_like_pool();
    for i in 0..TARPIT_ENDPOINTS {
        let url = format!("http://{}/tarpit/{i}", tarpit.addr);
        let sub = subscription(&format!("tarpit-{i}"), &url);
        live.new_mail(&sub, 1, Instant::now());
    }
    // Let the tarpit take every sender it can.
    let until = Instant::now() + Duration::from_secs(5);
    while tarpit.connections() == 0 && Instant::now() < until {
        live.run_for(Duration::from_millis(10));
    }
    assert!(tarpit.connections() >= 1, "the tarpit got no connection");
    live.run_for(Duration::from_millis(200));

    let victim = subscription("victim", &sink.url("/victim"));
    let event_at = Instant::now();
    live.new_mail(&victim, 1, event_at);
    let requests = wait_for(&mut live, &sink, 1, Duration::from_secs(30));
    let arrived = requests.first().map(|r| r.at - event_at);
    eprintln!(
        "another origin's push with {TARPIT_ENDPOINTS} tarpit endpoints ({} connections held): {arrived:?}",
        tarpit.connections()
    );
    let arrived = arrived.expect("the other origin's push arrived");
    assert!(arrived < DELAY_MAX, "delayed by {arrived:?}");
}

#[test]
fn a_429_on_one_endpoint_does_not_hold_another_of_the_same_origin() {
    let _serial = crate::serial();
    let sink = Sink::start();
    sink.set_script("/limited", &[429]);
    sink.set_retry_after("/limited", 30);
    let mut live = server_like_pool();
    let limited = subscription("limited", &sink.url("/limited"));
    live.new_mail(&limited, 1, Instant::now());
    let first = wait_for(&mut live, &sink, 1, Duration::from_secs(5));
    assert_eq!(first.first().map(|r| r.status), Some(429));
    // Let the rules read the 429.
    live.run_for(Duration::from_millis(100));

    let other = subscription("other", &sink.url("/other"));
    let event_at = Instant::now();
    live.new_mail(&other, 1, event_at);
    let requests = wait_for(&mut live, &sink, 2, Duration::from_secs(5));
    let other_at = requests
        .iter()
        .find(|r| r.path == "/other")
        .map(|r| r.at - event_at);
    eprintln!("another endpoint of a rate-limited origin: {other_at:?}");
    let other_at = other_at.expect("the other endpoint's push arrived");
    assert!(other_at < DELAY_MAX, "held by {other_at:?}");
    assert!(
        !requests[1..].iter().any(|r| r.path == "/limited"),
        "the limited endpoint itself waits out its Retry-After"
    );
}
