//! The private PostgreSQL: runs as `postgres`, on loopback, with a role that
//! needs its password, and is gone (process and dir) after drop.

use std::process::Command;

use testkit::{Postgres, POSTGRES_DATABASE, POSTGRES_LIB_DIR, POSTGRES_ROLE};

fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

/// The real uid of `pid`, from /proc.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `psql` over TCP as `user` with `password`: its exit status and output.
fn psql_tcp(pg: &Postgres, user: &str, password: &str, sql: &str) -> (bool, String) {
    let out = Command::new(testkit::postgres_bin_dir().unwrap().join("psql"))
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", user, "-d", POSTGRES_DATABASE, "-X", "-A", "-t", "-w"])
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_role_logs_in_over_tcp_with_its_password_only() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.url();
    assert!(
        url.starts_with(&format!("postgres://{POSTGRES_ROLE}:")),
        "{pg:?}"
    );
    assert!(url.ends_with(&format!("@127.0.0.1:{}/{POSTGRES_DATABASE}", pg.port())));
    assert!(
        !format!("{pg:?}").contains(pg.password()),
        "Debug hides the password"
    );

    let (ok, text) = psql_tcp(&pg, POSTGRES_ROLE, pg.password(), "CREATE TABLE t (n int)");
    assert!(ok, "{text}");
    let (ok, text) = psql_tcp(&pg, POSTGRES_ROLE, pg.password(), "SELECT current_user");
    assert!(ok && text.trim() == POSTGRES_ROLE, "{text}");

    let (ok, text) = psql_tcp(&pg, POSTGRES_ROLE, "wrong", "SELECT 1");
    assert!(
        !ok && text.contains("password authentication failed"),
        "{text}"
    );
    // The superuser has no password: over TCP it cannot log in at all.
    let (ok, text) = psql_tcp(&pg, "postgres", "", "SELECT 1");
    assert!(!ok, "{text}");

    // The harness' own superuser channel (the socket in the 0700 dir).
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap().trim(), "0");
    let err = pg.psql("SELECT nonsense FROM nowhere").unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
}

#[test]
fn runs_unprivileged_from_the_newest_version_and_drop_removes_everything() {
    let bin = testkit::postgres_bin_dir().unwrap();
    assert!(
        bin.starts_with(POSTGRES_LIB_DIR) && bin.ends_with("bin"),
        "{bin:?}"
    );
    let mut pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let pid = pg.pid();
    assert!(pid > 0 && process_exists(pid));
    let postgres_uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(pg.dir()).unwrap());
    assert_ne!(uid_of(pid), 0, "the postmaster does not run as root");
    assert_eq!(uid_of(pid), postgres_uid, "the dir belongs to its user");
    let dir = pg.dir().to_path_buf();
    assert!(dir.join("data/PG_VERSION").is_file());

    pg.stop();
    assert!(!process_exists(pid), "stopped by its PID");
    assert!(
        std::net::TcpStream::connect(pg.addr()).is_err(),
        "port closed"
    );
    assert!(matches!(
        pg.psql("SELECT 1"),
        Err(testkit::HarnessError::NotRunning)
    ));
    drop(pg);
    assert!(!dir.exists(), "drop removes {dir:?}");
}

#[test]
fn two_servers_run_side_by_side() {
    let a = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let b = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(a.port(), b.port());
    assert_ne!(a.password(), b.password());
    a.psql("CREATE TABLE only_in_a (n int)").unwrap();
    assert!(b.psql("SELECT * FROM only_in_a").is_err());
}
