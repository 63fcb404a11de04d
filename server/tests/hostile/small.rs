//! The smaller holes (issue 9, point 12): file modes, the API token in `Debug`, the
//! per-client limiter's IPv6 /64, host spellings as new pacing and cap keys, endpoint
//! spellings of local addresses.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;

use imap_push_proxy::{App, Config};
use testkit::netns;

use crate::common::{http, loopback_config, post, TempDir};

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
// `.into()` fits `api_token` as a String and as a zeroizing wrapper alike.
#[allow(clippy::useless_conversion)]
fn config_debug_never_shows_the_api_token() {
    let token = "tok-3f9a1c0e7b2d4e6f8a";
    let config = Config {
        api_token: Some(String::from(token).into()),
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
