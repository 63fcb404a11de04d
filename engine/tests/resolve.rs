//! Name resolution never holds the engine up: with a name server that never answers
//! (inside private namespaces, /etc/resolv.conf points at a UDP socket the test holds),
//! an unwatch of a session still resolving ends it at once, a lookup past the resolver's
//! timeout ends its session `Timeout(Resolve)`, a full resolver queue ends a session
//! `ResolverBusy` at once, and shutdown does not wait for a lookup.
//!
//! Each `inner_*` test runs in the namespace with the test binary alone: glibc threads
//! stuck in getaddrinfo are left behind when the process exits.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use engine::{
    EndReason, Engine, EngineConfig, Event, ResolverConfig, Secret, Security, Waiting, WatchSpec,
};
use testkit::netns::{self, MountedFile};
use zeroize::Zeroizing;

fn spec(host: &str) -> WatchSpec {
    WatchSpec {
        host: host.into(),
        port: 143,
        security: Security::DangerousPlain,
        username: "alice".into(),
        secret: Secret::Password(Zeroizing::new(b"pw".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}

/// Points the resolver at a socket that never answers; glibc would wait 30 s.
fn silent_name_server() -> (UdpSocket, MountedFile) {
    let socket = UdpSocket::bind("127.0.0.1:53").unwrap();
    let resolv = MountedFile::install(
        "/etc/resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n",
    );
    (socket, resolv)
}

fn engine(resolver: ResolverConfig) -> Engine {
    Engine::start(EngineConfig {
        reactor_threads: 1,
        webpki_roots: false,
        resolver,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn next_event(engine: &Engine, within: Duration) -> (Event, Duration) {
    let started = Instant::now();
    let event = engine
        .events()
        .recv_timeout(within)
        .expect("an event in time");
    (event, started.elapsed())
}

#[test]
fn a_silent_name_server_holds_nothing_up() {
    netns::run_inside("inner_silent_name_server", &[]);
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_silent_name_server() {
    if !netns::inside() {
        return;
    }
    let _dns = silent_name_server();
    let engine = engine(ResolverConfig {
        threads: 1,
        queue_len: 1,
        timeout: Duration::from_millis(800),
    });

    // One lookup on the only thread, one in the queue: the next is refused at once.
    let stuck = engine.watch(spec("stuck.test")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let queued = engine.watch(spec("queued.test")).unwrap();
    let busy = engine.watch(spec("busy.test")).unwrap();
    let (event, took) = next_event(&engine, Duration::from_secs(1));
    assert_eq!(
        event,
        Event::Failed {
            id: busy,
            reason: EndReason::ResolverBusy
        }
    );
    assert!(took < Duration::from_millis(200), "{took:?}");

    // An unwatch of a session still resolving ends it at once.
    engine.unwatch(queued);
    let (event, took) = next_event(&engine, Duration::from_secs(1));
    assert_eq!(
        event,
        Event::Failed {
            id: queued,
            reason: EndReason::Unwatched
        }
    );
    assert!(took < Duration::from_millis(200), "{took:?}");

    // The stuck one ends when the resolver's timeout passes, not glibc's 30 s.
    let (event, took) = next_event(&engine, Duration::from_secs(3));
    assert_eq!(
        event,
        Event::Failed {
            id: stuck,
            reason: EndReason::Timeout(Waiting::Resolve)
        }
    );
    assert!(took < Duration::from_secs(1), "{took:?}");

    // The thread is still stuck in getaddrinfo, and the cancelled lookup keeps its
    // queue place until a thread takes it: the pool stays bounded, a new one is refused.
    let refused = engine.watch(spec("refused.test")).unwrap();
    let (event, _) = next_event(&engine, Duration::from_secs(1));
    assert_eq!(
        event,
        Event::Failed {
            id: refused,
            reason: EndReason::ResolverBusy
        }
    );
    drop(engine);

    // Shutdown does not wait for a session still resolving; it ends `Shutdown`.
    let engine = self::engine(ResolverConfig::default());
    let waiting = engine.watch(spec("waiting.test")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let leftovers = engine.shutdown();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    assert!(
        leftovers.contains(&Event::Failed {
            id: waiting,
            reason: EndReason::Shutdown
        }),
        "{leftovers:?}"
    );
    println!("nothing held up");
}
