//! Start/stop/restart/drop behaviour and parallel instances.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use common::connect_plain;
use testkit::{simple_message, Dovecot, DovecotConfig, HarnessError};

fn start() -> Dovecot {
    Dovecot::start(DovecotConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn process_exists(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; check its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[test]
fn stop_kills_the_master_and_closes_ports_and_drop_removes_the_dir() {
    let mut dc = start();
    let pid = dc.pid();
    assert!(pid > 0 && process_exists(pid));
    assert!(dc.is_running());
    let dir: PathBuf = dc.dir().to_path_buf();
    assert!(dir.join("dovecot.conf").is_file());

    // A logged-in session is ended by stop (shutdown_clients = yes).
    let mut imap = connect_plain(dc.imap_port());
    imap.greeting();
    assert!(imap
        .login_literal(b"alice", b"secret-alice")
        .starts_with("t1 OK"));
    dc.wait_for_connection_count("alice", 1, common::TIMEOUT)
        .unwrap();

    dc.stop();
    assert_eq!(dc.pid(), 0);
    assert!(!dc.is_running());
    assert!(!process_exists(pid));
    assert!(TcpStream::connect(("127.0.0.1", dc.imap_port())).is_err());
    assert!(imap.try_read_line().is_none_or(|l| l.starts_with("* BYE")));
    assert!(matches!(
        dc.deliver("alice", &simple_message("x")),
        Err(HarnessError::NotRunning)
    ));
    dc.stop(); // idempotent
    assert!(dir.exists(), "mail and config are kept until drop");
    drop(dc);
    assert!(!dir.exists());
}

#[test]
fn restart_keeps_ports_and_mail() {
    let mut dc = start();
    let (p1, p2, old_pid) = (dc.imap_port(), dc.imaps_port(), dc.pid());
    dc.deliver("alice", &simple_message("before restart"))
        .unwrap();
    let mut imap = connect_plain(p1);
    imap.greeting();
    assert!(imap
        .login_literal(b"alice", b"secret-alice")
        .starts_with("t1 OK"));

    dc.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(dc.pid(), old_pid);
    assert_eq!((dc.imap_port(), dc.imaps_port()), (p1, p2));
    // The old session is gone, a new one works and sees the old mail.
    assert!(imap.try_read_line().is_none_or(|l| l.starts_with("* BYE")));
    let mut imap = connect_plain(p1);
    imap.greeting();
    assert!(imap
        .login_literal(b"alice", b"secret-alice")
        .starts_with("t1 OK"));
    let lines = imap.command_ok("EXAMINE INBOX");
    assert!(lines.iter().any(|l| l == "* 1 EXISTS\r\n"), "{lines:?}");

    // Restart after an explicit stop also works.
    dc.stop();
    dc.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dc.message_count("alice", "INBOX").unwrap(), 1);
}

#[test]
fn parallel_instances_are_isolated() {
    let servers: Vec<Dovecot> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                s.spawn(move || {
                    Dovecot::start(
                        DovecotConfig::default()
                            .with_users([(format!("user{i}"), format!("pw{i}"))]),
                    )
                    .unwrap_or_else(|e| panic!("{e}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = servers
        .iter()
        .flat_map(|d| [d.imap_port(), d.imaps_port()])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 12);
    for (i, dc) in servers.iter().enumerate() {
        dc.deliver(&format!("user{i}"), &simple_message("mine"))
            .unwrap();
        // Other instances don't know this user.
        let other = &servers[(i + 1) % servers.len()];
        assert!(other
            .deliver(&format!("user{i}"), &simple_message("x"))
            .is_err());
    }
    for (i, dc) in servers.iter().enumerate() {
        assert_eq!(dc.message_count(&format!("user{i}"), "INBOX").unwrap(), 1);
        let mut imap = connect_plain(dc.imap_port());
        imap.greeting();
        let ok = imap.login_literal(format!("user{i}").as_bytes(), format!("pw{i}").as_bytes());
        assert!(ok.starts_with("t1 OK"), "{ok:?}");
    }
}

#[test]
fn log_is_readable_and_startup_errors_carry_the_log() {
    let dc = start();
    assert!(dc.log().contains("starting up"), "{}", dc.log());
    drop(dc);

    // A config Dovecot refuses: the error carries its complaint.
    let cfg = DovecotConfig {
        extra_config: "no_such_setting_xyz = 1\n".into(),
        ..Default::default()
    };
    let err = Dovecot::start(cfg).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HarnessError::Startup { .. }), "{text}");
    assert!(text.contains("no_such_setting_xyz"), "{text}");
}

#[test]
fn not_installed_error_tells_how_to_install() {
    let err = HarnessError::NotInstalled {
        missing: testkit::DOVECOT_BIN.into(),
    };
    assert!(err.to_string().contains("apt-get install -y dovecot-imapd"));
    assert!(testkit::dovecot_available());
}

#[test]
fn idle_check_interval_and_raise_inotify() {
    let cfg = DovecotConfig {
        idle_check_interval: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let dc = Dovecot::start(cfg).unwrap();
    let conf = std::fs::read_to_string(dc.config_path()).unwrap();
    assert!(
        conf.contains("mailbox_idle_check_interval = 1 secs"),
        "{conf}"
    );
    // start() raised the limit (we run as root).
    let now = testkit::raise_inotify_instances(1).unwrap();
    assert!(now >= 8192, "{now}");
}

#[test]
fn a_port_taken_by_someone_else_is_reported_after_retries() {
    let first = start();
    // Force every attempt onto a port that is in use.
    let cfg = DovecotConfig {
        extra_config: format!(
            "service imap-login {{\n  inet_listener imap {{\n    port = {}\n  }}\n}}\n",
            first.imap_port()
        ),
        ..Default::default()
    };
    let err = Dovecot::start(cfg).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HarnessError::Startup { .. }), "{text}");
    assert!(text.contains("no free ports after 3 attempts"), "{text}");
    assert!(text.contains("Address already in use"), "{text}");
    // The first server is unaffected.
    let mut imap = connect_plain(first.imap_port());
    imap.greeting();
}

/// Dovecot must not outlive the test process even when `Drop` never runs
/// (`process::exit`, panic=abort, SIGKILL of the test binary).
#[test]
fn dovecot_dies_with_the_test_process() {
    const CHILD_ENV: &str = "TESTKIT_LIFECYCLE_CHILD";
    if std::env::var_os(CHILD_ENV).is_some() {
        // Started from a short-lived thread, like a test would: the master
        // must survive that thread and die only with the process.
        let dc = std::thread::spawn(start).join().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(process_exists(dc.pid()));
        println!("MASTER={} DIR={}", dc.pid(), dc.dir().display());
        std::process::exit(0); // no Drop
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "dovecot_dies_with_the_test_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("MASTER=").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "child printed no MASTER line:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let (pid, dir) = line.split_once(" DIR=").unwrap();
    let pid: u32 = pid.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while process_exists(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "dovecot master {pid} outlived its test process"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its temp dir is left behind (no Drop ran); a later test process
    // removes it, here we do it ourselves.
    let _ = std::fs::remove_dir_all(dir);
}
