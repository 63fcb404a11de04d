//! See hostile_timing.rs.
//!
//! Push isolation (issue 9, attack 7): a slow or hostile push service must not delay
//! another one's pushes by more than a second. The pool runs as the server runs it
//! (`DeliveryConfig::default()`, `SenderConfig::default()`), against real sockets on
//! loopback: a tarpit that accepts and never answers, and `push::testing::Sink`s.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use push::testing::Sink;
use push::{PushTarget, Sender, SenderConfig};
use server::delivery::{Delivery, DeliveryConfig, PushSubscription, Report};

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

fn server_like_pool() -> (Delivery, crossbeam_channel::Receiver<Report>) {
    let (tx, reports) = crossbeam_channel::unbounded();
    let sender = Sender::new(SenderConfig {
        use_env_proxy: false,
        ..SenderConfig::default()
    });
    (
        Delivery::start(DeliveryConfig::default(), Arc::new(sender), tx),
        reports,
    )
}

#[test]
fn tarpit_endpoints_do_not_delay_another_origin() {
    let _serial = crate::serial();
    let tarpit = Tarpit::start();
    let sink = Sink::start();
    let (delivery, _reports) = server_like_pool();
    for i in 0..TARPIT_ENDPOINTS {
        let url = format!("http://{}/tarpit/{i}", tarpit.addr);
        let sub = subscription(&format!("tarpit-{i}"), &url);
        delivery.new_mail(&sub, "INBOX", 1, Instant::now());
    }
    // Let the tarpit take every worker it can.
    let held = common::eventually(Duration::from_secs(5), || tarpit.connections() >= 1);
    assert!(held, "the tarpit got no connection");
    thread::sleep(Duration::from_millis(200));

    let victim = subscription("victim", &sink.url("/victim"));
    let event_at = Instant::now();
    delivery.new_mail(&victim, "INBOX", 1, event_at);
    let requests = sink.wait_for(1, Duration::from_secs(30));
    let arrived = requests.first().map(|r| r.at - event_at);
    eprintln!(
        "another origin's push with {TARPIT_ENDPOINTS} tarpit endpoints ({} connections held): {arrived:?}",
        tarpit.connections()
    );
    let arrived = arrived.expect("the other origin's push arrived");
    assert!(arrived < DELAY_MAX, "delayed by {arrived:?}");
    drop(delivery);
}

#[test]
fn a_429_on_one_endpoint_does_not_hold_another_of_the_same_origin() {
    let _serial = crate::serial();
    let sink = Sink::start();
    sink.set_script("/limited", &[429]);
    sink.set_retry_after("/limited", 30);
    let (delivery, _reports) = server_like_pool();
    let limited = subscription("limited", &sink.url("/limited"));
    delivery.new_mail(&limited, "INBOX", 1, Instant::now());
    let first = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(first.first().map(|r| r.status), Some(429));
    // Give the pool a moment to read the 429.
    thread::sleep(Duration::from_millis(100));

    let other = subscription("other", &sink.url("/other"));
    let event_at = Instant::now();
    delivery.new_mail(&other, "INBOX", 1, event_at);
    let requests = sink.wait_for(2, Duration::from_secs(5));
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
    drop(delivery);
}

use crate::common;
