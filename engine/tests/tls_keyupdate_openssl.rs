//! TLS 1.3 KeyUpdate in both directions on the compact record layer, against OpenSSL's
//! `s_server`, which sends a KeyUpdate when `k` (update_not_requested) or `K`
//! (update_requested) is typed on its stdin. A small IMAP script on top of it (this test
//! reads the client's lines from s_server's stdout and types the answers) takes the engine
//! to IDLE; after each KeyUpdate new mail is still seen, and after `K` the client's next
//! command (DONE, at a short IDLE refresh) reaches OpenSSL under our new sending keys.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::{Engine, EngineConfig, Event, Secret, Security, SessionConfig, SessionId, WatchSpec};
use testkit::TestPki;
use zeroize::Zeroizing;

/// Kills s_server (by its PID, through `Child`) however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn type_line(stdin: &Mutex<ChildStdin>, line: &str) {
    let mut stdin = stdin.lock().unwrap();
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

/// Answers the engine's commands like a minimal IMAP server with IDLE.
fn answer(line: &str) -> Option<String> {
    if line == "DONE" {
        return Some("A-IDLE".into());
    }
    let (tag, rest) = line.split_once(' ')?;
    if !tag.starts_with('A') || !tag[1..].chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let command = rest.split(' ').next()?.to_ascii_uppercase();
    Some(match command.as_str() {
        "CAPABILITY" => format!("* CAPABILITY IMAP4rev1 SASL-IR IDLE AUTH=PLAIN\r\n{tag} OK done\r\n"),
        "AUTHENTICATE" | "LOGIN" => format!("{tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"),
        "EXAMINE" => format!(
            "* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n* OK [UIDNEXT 1] ok\r\n{tag} OK [READ-ONLY] done\r\n"
        ),
        "IDLE" => format!("IDLE {tag}"),
        "LOGOUT" => format!("* BYE bye\r\n{tag} OK done\r\n"),
        _ => format!("{tag} OK done\r\n"),
    })
}

fn next_event(engine: &Engine, id: SessionId, timeout: Duration) -> Option<Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match engine.events().recv_timeout(left) {
            Ok(event) if event.id() == id => return Some(event),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn key_updates_both_ways_against_openssl() {
    let pki = TestPki::generate().unwrap();
    let dir = std::env::temp_dir().join(format!("keyupdate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), &pki.leaf_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &pki.leaf_key_pem).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("openssl")
        .args(["s_server", "-tls1_3", "-naccept", "1", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server starts (apt-get install -y openssl)");
    let stdin = Arc::new(Mutex::new(child.stdin.take().unwrap()));
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    // The script: every client line goes to `lines`; commands are answered at once.
    let (lines_tx, lines) = mpsc::channel::<String>();
    let (ready_tx, ready) = mpsc::channel::<()>();
    {
        let stdin = stdin.clone();
        std::thread::spawn(move || {
            let mut idle_tag = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = line.trim_end_matches('\r').to_string();
                if line.starts_with("ACCEPT") {
                    let _ = ready_tx.send(());
                }
                match answer(&line).as_deref() {
                    Some("A-IDLE") => type_line(&stdin, &format!("{idle_tag} OK Idle done\r\n")),
                    Some(a) if a.starts_with("IDLE ") => {
                        idle_tag = a[5..].to_string();
                        type_line(&stdin, "+ idling\r\n");
                    }
                    Some(a) => type_line(&stdin, a),
                    None => continue,
                }
                let _ = lines_tx.send(line);
            }
        });
    }
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("s_server accepts");
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        session: SessionConfig {
            // A short refresh, so that the client speaks (DONE, IDLE) after the update.
            idle_refresh: Duration::from_secs(2),
            idle_refresh_jitter: Duration::from_millis(100),
            ..SessionConfig::default()
        },
        webpki_roots: false,
        extra_roots_der: vec![pki.ca_der.clone()],
        ..EngineConfig::default()
    })
    .unwrap();
    let id = engine
        .watch(WatchSpec {
            host: "127.0.0.1".into(),
            port,
            security: Security::Tls,
            username: "alice".into(),
            secret: Secret::Password(Zeroizing::new(b"secret".to_vec())),
            mailboxes: vec!["INBOX".into()],
            since: None,
        })
        .unwrap();
    type_line(
        &stdin,
        "* OK [CAPABILITY IMAP4rev1 SASL-IR IDLE AUTH=PLAIN] ready\r\n",
    );
    match next_event(&engine, id, Duration::from_secs(10)) {
        Some(Event::Ready { .. }) => {}
        other => panic!("expected Ready, got {other:?}"),
    }
    assert_eq!(
        engine.stats().tls_compact_sessions,
        1,
        "on the compact path"
    );
    // k: the server's new keys only.
    std::thread::sleep(Duration::from_millis(200));
    type_line(&stdin, "k\n");
    std::thread::sleep(Duration::from_millis(300));
    type_line(&stdin, "* 1 EXISTS\r\n");
    match next_event(&engine, id, Duration::from_secs(5)) {
        Some(Event::NewMail { exists: 1, .. }) => {}
        other => panic!("after k: expected NewMail 1, got {other:?}"),
    }
    // K: the server asks for ours too.
    type_line(&stdin, "K\n");
    std::thread::sleep(Duration::from_millis(300));
    while lines.try_recv().is_ok() {}
    // The next DONE was sealed after our KeyUpdate: OpenSSL must have opened it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("a DONE after K within 10 s");
        if lines.recv_timeout(left).expect("client lines") == "DONE" {
            break;
        }
    }
    type_line(&stdin, "* 2 EXISTS\r\n");
    match next_event(&engine, id, Duration::from_secs(5)) {
        Some(Event::NewMail { exists: 2, .. }) => {}
        other => panic!("after K: expected NewMail 2, got {other:?}"),
    }
    // The session is still alive on the compact path.
    assert_eq!(next_event(&engine, id, Duration::from_millis(500)), None);
    assert_eq!(engine.stats().tls_compact_sessions, 1);
    let _ = std::fs::remove_dir_all(&dir);
}
