//! More sessions to one provider address than one source address has ports: spread over
//! several bind addresses they all connect; with one, the overflow fails cleanly
//! (`Connect(AddrNotAvailable)`, no hang).
//!
//! The ephemeral port range is narrowed to 1,000 ports inside a private network
//! namespace (`unshare --net`), so nothing on the machine is touched: the test re-runs
//! itself there.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use engine::{EndReason, Engine, EngineConfig, Event, Secret, Security, WatchSpec};
use zeroize::Zeroizing;

const SESSIONS: usize = 2500;
const PORTS: (u32, u32) = (40000, 40999);
const INNER: &str = "IPP_BIND_TEST_INNER";

fn in_private_netns(test: &str, sources: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ip link set lo up && echo '{} {}' > /proc/sys/net/ipv4/ip_local_port_range && exec \"$0\" --exact {test} --include-ignored --nocapture",
        PORTS.0, PORTS.1
    );
    let out = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", &script])
        .arg(exe)
        .env(INNER, sources)
        .output()
        .expect("unshare runs (util-linux; needs root)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner run failed:\n{text}");
    text
}

/// Runs inside the namespace: SESSIONS plain sessions to one mock address from the
/// sources in the environment; prints "ready N failed M".
#[test]
#[ignore = "runs inside a private network namespace, started by the tests below"]
fn inner() {
    let Ok(sources) = std::env::var(INNER) else {
        return;
    };
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["40000", "40999"]
    );
    raise_fd_limit();
    let mock = mock_imapd::run(mock_imapd::Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        max_sessions: 2 * SESSIONS,
        ..mock_imapd::Config::default()
    })
    .unwrap();
    let dest: SocketAddr = mock.plain_addrs()[0];
    let engine = Engine::start(EngineConfig {
        reactor_threads: 2,
        webpki_roots: false,
        bind_addresses: sources
            .split(',')
            .map(|a| a.parse::<IpAddr>().unwrap())
            .collect(),
        ..EngineConfig::default()
    })
    .unwrap();
    for n in 0..SESSIONS {
        engine
            .watch(WatchSpec {
                host: dest.ip().to_string(),
                port: dest.port(),
                security: Security::DangerousPlain,
                username: format!("u{n}"),
                secret: Secret::Password(Zeroizing::new(b"pw".to_vec())),
                mailboxes: vec!["INBOX".into()],
                since: None,
            })
            .unwrap();
    }
    let (mut ready, mut failed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready + failed < SESSIONS && Instant::now() < deadline {
        match engine.events().recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Ready { .. }) => ready += 1,
            Ok(Event::Failed { reason, .. }) => {
                assert_eq!(
                    reason,
                    EndReason::Connect(std::io::ErrorKind::AddrNotAvailable),
                    "the only failure is running out of ports"
                );
                failed += 1;
            }
            _ => {}
        }
    }
    println!("ready {ready} failed {failed}");
}

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn counts(output: &str) -> (usize, usize) {
    let line = output
        .lines()
        .find(|l| l.starts_with("ready "))
        .unwrap_or_else(|| panic!("no result in:\n{output}"));
    let n: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

#[test]
fn three_source_addresses_carry_2500_sessions_to_one_destination() {
    let (ready, failed) = counts(&in_private_netns("inner", "127.0.0.1,127.0.0.2,127.0.0.3"));
    eprintln!("three sources: {ready} ready, {failed} failed");
    assert_eq!((ready, failed), (SESSIONS, 0));
}

#[test]
fn one_source_address_fails_the_overflow_cleanly() {
    let started = Instant::now();
    let (ready, failed) = counts(&in_private_netns("inner", "127.0.0.1"));
    eprintln!(
        "one source: {ready} ready, {failed} failed in {:?}",
        started.elapsed()
    );
    // 1,000 ports for one source; the rest get a typed error, quickly.
    assert!((900..=1000).contains(&ready), "{ready} ready");
    assert_eq!(ready + failed, SESSIONS);
    assert!(started.elapsed() < Duration::from_secs(60));
}
