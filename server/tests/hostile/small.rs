//! The smaller holes (issue 9, point 12): file modes, the API token in `Debug`, the
//! per-client limiter's IPv6 /64, host spellings as new pacing and cap keys, endpoint
//! spellings of local addresses.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;

use server::{App, Config};
use testkit::{netns, Dovecot, DovecotConfig};

use crate::common::{http, loopback_config, post, Registration, TempDir};

/// The permission bits of `path`, in octal.
fn mode(path: &std::path::Path) -> String {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:o}", mode & 0o777)
}

#[test]
fn the_data_dir_and_its_files_are_owner_only() {
    let dir = TempDir::new();
    let config = loopback_config(&dir, None);
    let data = config.data_dir.clone();
    let app = App::start(config).unwrap();
    assert_eq!(mode(&data), "700", "data dir");
    assert_eq!(mode(&data.join("journal.redb")), "600", "journal");
    assert_eq!(mode(&data.join("vapid.pk8")), "600", "VAPID key");
    app.shutdown();
    // A data dir left with a wider mode is restricted on the next start.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("journal.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let app = App::start(loopback_config(&dir, None)).unwrap();
    assert_eq!(mode(&data), "700", "data dir after a restart");
    assert_eq!(
        mode(&data.join("journal.redb")),
        "600",
        "journal after a restart"
    );
    app.shutdown();
}

#[test]
fn config_debug_never_shows_the_api_token() {
    let token = "tok-3f9a1c0e7b2d4e6f8a";
    let config = Config {
        api_token: Some(token.into()),
        ..Config::default()
    };
    let shown = format!("{config:?} {config:#?}");
    assert!(!shown.contains(token), "{shown}");
    assert!(shown.contains("api_token"), "the field is listed: {shown}");
}

/// Two addresses of one /64 and one of another, on `lo` inside the namespace.
const SAME_64: [&str; 2] = ["2a00:1::2", "2a00:1::3"];
const OTHER_64: &str = "2a00:1:0:1::2";

#[test]
fn an_ipv6_64_is_one_client_for_the_registration_limit() {
    let addrs: Vec<IpAddr> = SAME_64
        .iter()
        .chain([&OTHER_64])
        .map(|a| a.parse().unwrap())
        .collect();
    netns::run_inside("small::inner_ipv6_64_is_one_client", &addrs);
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_ipv6_64_is_one_client() {
    if !netns::inside() {
        return;
    }
    let dir = TempDir::new();
    let mut config = loopback_config(&dir, None);
    config.listen = "[::]:0".parse().unwrap();
    config.limits.registrations_per_minute_per_ip = 1;
    let app = App::start(config).unwrap();
    let port = app.local_addr().port();
    // A connection to a local address comes from that address: each request below comes
    // from the address it is sent to.
    let from = |ip: &str| -> u16 {
        let addr = SocketAddr::new(ip.parse().unwrap(), port);
        // An empty body: past the limiter it is a 400, at the limiter a 429.
        post(addr, "{}").status
    };
    assert_eq!(
        from(SAME_64[0]),
        400,
        "the first registration passes the limiter"
    );
    assert_eq!(
        from(SAME_64[1]),
        429,
        "another address of the same /64 is the same client"
    );
    assert_eq!(from(OTHER_64), 400, "another /64 is another client");
    assert_eq!(
        http(
            SocketAddr::new(SAME_64[1].parse().unwrap(), port),
            "GET",
            "/healthz",
            "",
            ""
        )
        .status,
        200
    );
    app.shutdown();
}

/// A registration of alice's on `host`, as device `device`.
fn alice_on(dovecot: &Dovecot, host: &str, device: &str) -> String {
    Registration {
        host,
        port: dovecot.imaps_port(),
        security: "tls",
        username: "alice",
        password: "secret-alice",
        device_id: device,
        new_mail: "http://127.0.0.1:9/new",
        reconnect: "http://127.0.0.1:9/re",
    }
    .body()
}

#[test]
fn host_spellings_share_one_per_host_cap() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let dir = TempDir::new();
    let mut config = loopback_config(&dir, Some(&dovecot));
    config.limits.sessions_per_host_max = 1;
    let app = App::start(config).unwrap();
    let addr = app.local_addr();
    let reply = post(addr, &alice_on(&dovecot, "127.0.0.1", "d0"));
    assert_eq!(reply.status, 201, "{}", reply.body);
    // The same host, spelt otherwise: still the one host whose cap is reached.
    for (n, host) in ["127.1", "2130706433", "127.0.0.1."].iter().enumerate() {
        let reply = post(addr, &alice_on(&dovecot, host, &format!("d{}", n + 1)));
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (503, "at_capacity"),
            "{host}: {}",
            reply.body
        );
    }
    app.shutdown();
}

#[test]
fn host_spellings_share_one_login_pace() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let dir = TempDir::new();
    let mut config = loopback_config(&dir, Some(&dovecot));
    // One login per second and no queue: the second login at once is refused.
    config.limits.logins_per_second_per_host = 1;
    config.limits.login_queue_secs = 0;
    let app = App::start(config).unwrap();
    let addr = app.local_addr();
    let reply = post(addr, &alice_on(&dovecot, "localhost", "d0"));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let reply = post(addr, &alice_on(&dovecot, "LOCALHOST.", "d1"));
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (429, "rate_limited"),
        "{}",
        reply.body
    );
    app.shutdown();
}

/// A public stand-in on `lo` inside the namespace.
const STAND_IN: &str = "11.0.0.1";

#[test]
fn local_endpoint_and_imap_spellings_are_refused_at_registration() {
    netns::run_inside(
        "small::inner_local_spellings_refused",
        &[STAND_IN.parse().unwrap()],
    );
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_local_spellings_refused() {
    if !netns::inside() {
        return;
    }
    // The local service an attacker would reach: it must see no connection.
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = local.local_addr().unwrap().port();
    let _hosts =
        netns::HostsFile::install("127.0.0.1 push.test imap.test\n11.0.0.1 push.public.test\n");
    let dir = TempDir::new();
    let mut config = loopback_config(&dir, None);
    config.allow_private_destinations = false;
    config.allow_plain_imap = true;
    let app = App::start(config).unwrap();
    let addr = app.local_addr();
    let register = |imap_host: &str, imap_port: u16, endpoint: &str| {
        let body = Registration {
            host: imap_host,
            port: imap_port,
            security: "plain",
            username: "alice",
            password: "secret-alice",
            device_id: "d",
            new_mail: endpoint,
            reconnect: "http://push.public.test:9/re",
        }
        .body();
        post(addr, &body)
    };
    for host in [
        "localhost.",
        "LOCALHOST",
        "127.1",
        "2130706433",
        "0x7f.1",
        "[::ffff:127.0.0.1]",
        "push.test",
        "PUSH.test.",
    ] {
        let endpoint = format!("http://{host}:{port}/x");
        let reply = register(STAND_IN, 143, &endpoint);
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (403, "forbidden_destination"),
            "endpoint {endpoint}: {}",
            reply.body
        );
    }
    // An IMAP host name that resolves to a local address: refused before any connection.
    for host in ["imap.test", "IMAP.TEST."] {
        let reply = register(host, port, "http://push.public.test:9/new");
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (403, "forbidden_destination"),
            "IMAP host {host}: {}",
            reply.body
        );
    }
    // Names that resolve to public addresses pass: the login is tried (and fails, since
    // no IMAP server listens on the stand-in).
    let reply = register(STAND_IN, 143, "http://push.public.test:9/new");
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (502, "imap_unreachable"),
        "{}",
        reply.body
    );
    // A name that does not resolve is the app's mistake, named by field.
    let reply = register(STAND_IN, 143, "http://nowhere.test:9/new");
    assert_eq!(
        (reply.status, reply.json()["field"].as_str()),
        (400, Some("new_mail.endpoint")),
        "{}",
        reply.body
    );
    local.set_nonblocking(true).unwrap();
    let accepted = local.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the local listener saw a connection: {accepted:?}"
    );
    app.shutdown();
}
