//! Loopback tests: std clients (and rustls for TLS) against a mock-imapd
//! running in-process, driven through the TCP control channel. Every read
//! has a timeout and every loop a bound; no test waits on a clock for
//! success, only for failure.

use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mock_imapd::{run, ChainKind, Config, Handle, KeyAlg, TlsSource};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

const TIMEOUT: Duration = Duration::from_secs(10);

fn server(tls: bool, tweak: impl FnOnce(&mut Config)) -> Handle {
    let mut config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    if tls {
        config.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
        config.tls = Some(TlsSource::Generated {
            chain: ChainKind::Small,
            alg: KeyAlg::Rsa,
        });
    }
    tweak(&mut config);
    run(config).unwrap()
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Gone => Ok(0),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Gone => Ok(()),
        }
    }
}

/// A blocking IMAP client that checks every line it reads parses as a
/// server response (imap-codec-lite), except where told not to.
struct Client {
    conn: Conn,
    buf: Vec<u8>,
}

fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn tls_wrap(tcp: TcpStream, ca_pem: &str) -> Conn {
    tls_wrap_with(tcp, tls_config(ca_pem))
}

fn tls_wrap_with(tcp: TcpStream, config: Arc<rustls::ClientConfig>) -> Conn {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

impl Client {
    fn tcp(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    fn plain(addr: SocketAddr) -> Client {
        Client {
            conn: Conn::Plain(Self::tcp(addr)),
            buf: Vec::new(),
        }
    }

    fn tls(addr: SocketAddr, ca_pem: &str) -> Client {
        Client {
            conn: tls_wrap(Self::tcp(addr), ca_pem),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, s: &str) {
        self.conn.write_all(s.as_bytes()).unwrap();
        self.conn.flush().unwrap();
    }

    /// One line, CRLF included; None at EOF or reset.
    fn raw_line(&mut self) -> Option<String> {
        for _ in 0..100_000 {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.conn.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        panic!("line never ended");
    }

    fn line(&mut self) -> String {
        let line = self.raw_line().expect("connection ended");
        if let Err(e) = imap_codec_lite::parse_response(line.as_bytes()) {
            panic!("unparsable response {line:?}: {e:?}");
        }
        line
    }

    /// Lines up to and including the tagged answer for `tag`.
    fn until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..100 {
            let l = self.line();
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l);
            if done {
                return lines;
            }
        }
        panic!("no tagged answer for {tag}: {lines:?}");
    }

    fn login_examine_idle(&mut self, user: &str) {
        assert!(self.line().starts_with("* OK [CAPABILITY"));
        self.send(&format!(
            "a LOGIN {user} pw\r\nb EXAMINE INBOX\r\nc IDLE\r\n"
        ));
        assert!(self.until_tagged("a").last().unwrap().starts_with("a OK"));
        assert!(self
            .until_tagged("b")
            .last()
            .unwrap()
            .starts_with("b OK [READ-ONLY]"));
        assert_eq!(self.line(), "+ idling\r\n");
    }

    /// Asserts nothing arrives within `wait`.
    fn silent_for(&mut self, wait: Duration) {
        if let Conn::Plain(s) = &self.conn {
            s.set_read_timeout(Some(wait)).unwrap();
        }
        let got = self.raw_line();
        if let Conn::Plain(s) = &self.conn {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
        }
        assert_eq!(got, None, "expected silence");
    }
}

/// A control channel connection.
struct Control {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Control {
    fn connect(h: &Handle) -> Control {
        let s = TcpStream::connect_timeout(&h.control_addr().unwrap(), TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Control {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends one line; returns the data lines and the final OK/ERR line.
    fn ask(&mut self, line: &str) -> (Vec<String>, String) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        let mut data = Vec::new();
        for _ in 0..1_000_000 {
            let mut l = String::new();
            assert!(self.reader.read_line(&mut l).unwrap() > 0, "control closed");
            let l = l.trim_end().to_string();
            if l.starts_with("OK") || l.starts_with("ERR") {
                return (data, l);
            }
            data.push(l);
        }
        panic!("control answer never ended");
    }

    fn ok(&mut self, line: &str) -> String {
        let (_, last) = self.ask(line);
        assert!(last.starts_with("OK"), "{line}: {last}");
        last
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn literal_login_examine_idle_exists_and_timestamp() {
    let h = server(false, |c| c.initial_messages = 2);
    let mut ctl = Control::connect(&h);
    let mut c = Client::plain(h.plain_addrs()[0]);
    assert!(c.line().starts_with(
        "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NOTIFY AUTH=PLAIN]"
    ));
    c.send("a LOGIN {5}\r\n");
    assert_eq!(c.line(), "+ OK\r\n");
    c.send("alice {2+}\r\npw\r\n");
    assert!(c.until_tagged("a")[0].starts_with("a OK"));
    c.send("b EXAMINE INBOX\r\n");
    let lines = c.until_tagged("b");
    assert!(lines.contains(&"* 2 EXISTS\r\n".to_string()), "{lines:?}");
    assert!(lines.contains(&"* OK [UIDNEXT 3] Predicted next UID\r\n".to_string()));
    c.send("c IDLE\r\n");
    assert_eq!(c.line(), "+ idling\r\n");

    let before = now_ns();
    assert_eq!(ctl.ok("exists alice"), "OK 1");
    assert_eq!(c.line(), "* 3 EXISTS\r\n");
    let after = now_ns();
    let (stamps, last) = ctl.ask("timestamps");
    assert_eq!(last, "OK 1");
    let (index, ns) = stamps[0].split_once(' ').unwrap();
    assert_eq!(index, "0");
    let ns: u64 = ns.parse().unwrap();
    assert!(before <= ns && ns <= after, "{before} <= {ns} <= {after}");
    assert_eq!(ctl.ask("timestamps").1, "OK 0", "a dump empties the record");

    c.send("DONE\r\n");
    assert_eq!(c.line(), "c OK Idle completed\r\n");
    // Not idling: the next message waits for NOOP.
    assert_eq!(ctl.ok("exists 0"), "OK 1");
    c.send("d NOOP\r\n");
    assert_eq!(
        c.until_tagged("d"),
        ["* 4 EXISTS\r\n", "d OK NOOP completed\r\n"]
    );
    assert_eq!(ctl.ask("exists nobody").1, "ERR no such session");
    c.send("e STATUS INBOX (MESSAGES UIDNEXT)\r\n");
    assert_eq!(
        c.until_tagged("e")[0],
        "* STATUS \"INBOX\" (MESSAGES 4 UIDNEXT 5)\r\n"
    );
    c.send("f LOGOUT\r\n");
    assert_eq!(
        c.until_tagged("f"),
        ["* BYE Logging out\r\n", "f OK LOGOUT completed\r\n"]
    );
    assert_eq!(c.raw_line(), None);
}

#[test]
fn bye_all_closes_every_session() {
    let h = server(false, |_| {});
    let mut ctl = Control::connect(&h);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::plain(h.plain_addrs()[0])).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.login_examine_idle(&format!("u{i}"));
    }
    assert_eq!(ctl.ok("bye all"), "OK 3");
    for c in &mut clients {
        assert!(c.line().starts_with("* BYE"));
        assert_eq!(c.raw_line(), None);
    }
    // The sessions are gone once the server has seen the closes.
    let deadline = Instant::now() + TIMEOUT;
    while ctl.ok("sessions") != "OK 0" {
        assert!(Instant::now() < deadline, "sessions never closed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn still_here_storm_and_faults() {
    let h = server(false, |_| {});
    let mut ctl = Control::connect(&h);
    let mut a = Client::plain(h.plain_addrs()[0]);
    let mut b = Client::plain(h.plain_addrs()[0]);
    a.login_examine_idle("a");
    b.login_examine_idle("b");
    assert_eq!(ctl.ok("still-here all"), "OK 2");
    assert_eq!(a.line(), "* OK Still here\r\n");
    assert_eq!(b.line(), "* OK Still here\r\n");

    assert_eq!(ctl.ok("huge-line a 100"), "OK 1");
    let huge = a.line();
    assert_eq!(huge.len(), 100);
    assert!(huge.starts_with("* OK xxx"));
    assert_eq!(ctl.ok("garbage a 64"), "OK 1");
    let mut got = 0;
    for _ in 0..64 {
        if got >= 64 {
            break;
        }
        let mut chunk = [0u8; 64];
        got += a.conn.read(&mut chunk[..64 - got]).unwrap();
    }
    assert_eq!(got, 64);

    assert_eq!(ctl.ok("close b"), "OK 1");
    let Conn::Plain(s) = &mut b.conn else {
        panic!()
    };
    let err = s.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    b.conn = Conn::Gone;
}

#[test]
fn stall_holds_answers_until_released() {
    let h = server(false, |_| {});
    let mut ctl = Control::connect(&h);
    let mut c = Client::plain(h.plain_addrs()[0]);
    c.login_examine_idle("stalled");
    assert_eq!(ctl.ok("stall stalled on"), "OK 1");
    assert_eq!(ctl.ok("exists stalled"), "OK 1");
    c.send("DONE\r\nn NOOP\r\n");
    assert_eq!(
        ctl.ok("still-here all"),
        "OK 0",
        "a stalled session hears nothing"
    );
    c.silent_for(Duration::from_millis(300));
    assert_eq!(ctl.ok("stall stalled off"), "OK 1");
    // The held EXISTS goes out while still idling, then the queued input.
    assert_eq!(c.line(), "* 1 EXISTS\r\n");
    assert_eq!(c.until_tagged("c"), ["c OK Idle completed\r\n"]);
    assert_eq!(c.until_tagged("n"), ["n OK NOOP completed\r\n"]);
}

#[test]
fn five_hundred_concurrent_plain_sessions() {
    const N: usize = 500;
    let h = server(false, |_| {});
    let mut ctl = Control::connect(&h);
    let mut clients: Vec<Client> = (0..N).map(|_| Client::plain(h.plain_addrs()[0])).collect();
    // Pipeline the whole setup, then read: 500 sessions in flight at once.
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(c.line().starts_with("* OK"));
        c.send(&format!(
            "a LOGIN user{i} pw\r\nb EXAMINE INBOX\r\nc IDLE\r\n"
        ));
    }
    for c in &mut clients {
        c.until_tagged("a");
        c.until_tagged("b");
        assert_eq!(c.line(), "+ idling\r\n");
    }
    assert_eq!(ctl.ok("sessions"), format!("OK {N}"));
    assert_eq!(ctl.ok("exists all"), format!("OK {N}"));
    for c in &mut clients {
        assert_eq!(c.line(), "* 1 EXISTS\r\n");
    }
    assert_eq!(ctl.ok("exists random 10"), "OK 10");
    let (stamps, last) = ctl.ask("timestamps");
    assert_eq!(last, format!("OK {}", N + 10));
    assert_eq!(stamps.len(), N + 10);
    let stats = ctl.ok("stats");
    assert!(stats.contains(&format!("idling={N}")), "{stats}");
    assert!(
        stats.contains(&format!("exists_sent={}", N + 10)),
        "{stats}"
    );
}

#[test]
fn tls_session_with_generated_ca_and_starttls() {
    let h = server(true, |_| {});
    let ca = h.ca_pem().unwrap().to_string();
    let (certs, bytes) = h.tls_chain().unwrap();
    assert_eq!(certs, 2);
    assert!((1500..2200).contains(&bytes), "{bytes}");
    let mut ctl = Control::connect(&h);

    let mut c = Client::tls(h.tls_addrs()[0], &ca);
    c.login_examine_idle("tls-user");
    assert_eq!(ctl.ok("exists tls-user"), "OK 1");
    assert_eq!(c.line(), "* 1 EXISTS\r\n");
    assert_eq!(ctl.ask("timestamps").1, "OK 1");

    // STARTTLS on the plain port, then AUTHENTICATE PLAIN with SASL-IR.
    let mut s = Client::plain(h.plain_addrs()[0]);
    assert!(s.line().contains(" STARTTLS]"));
    s.send("t STARTTLS\r\n");
    assert_eq!(s.line(), "t OK Begin TLS negotiation now\r\n");
    let Conn::Plain(tcp) = std::mem::replace(&mut s.conn, Conn::Gone) else {
        panic!()
    };
    s.conn = tls_wrap(tcp, &ca);
    // "\0bob\0pw"
    s.send("u AUTHENTICATE PLAIN AGJvYgBwdw==\r\nv CAPABILITY\r\n");
    assert!(s.until_tagged("u")[0].starts_with("u OK"));
    let caps = s.until_tagged("v");
    assert!(!caps[0].contains("STARTTLS"), "{caps:?}");
    let stats = ctl.ok("stats");
    assert!(
        stats.contains("tls=2") && stats.contains("handshakes=2"),
        "{stats}"
    );
}

#[test]
fn no_idle_and_max_sessions() {
    let h = server(false, |c| {
        c.idle = false;
        c.max_sessions = 1;
    });
    let mut a = Client::plain(h.plain_addrs()[0]);
    let greeting = a.line();
    assert!(!greeting.contains(" IDLE"));
    a.send("a LOGIN x y\r\nb IDLE\r\n");
    a.until_tagged("a");
    assert!(a.until_tagged("b")[0].starts_with("b BAD"));
    let mut b = Client::plain(h.plain_addrs()[0]);
    assert!(b.line().starts_with("* BYE [UNAVAILABLE]"));
    assert_eq!(b.raw_line(), None);
}

#[test]
fn binary_starts_answers_control_and_shuts_down() {
    let dir = std::env::temp_dir().join(format!("mock-imapd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_path = dir.join("ca.pem");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mock-imapd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
        ])
        .args(["--chain-kind", "realistic", "--self-signed-ca-out"])
        .arg(&ca_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut control, mut tls, mut chain) = (None, None, String::new());
    for _ in 0..20 {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        let l = l.trim().to_string();
        if let Some(a) = l.strip_prefix("control ") {
            control = Some(a.parse::<SocketAddr>().unwrap());
        } else if let Some(a) = l.strip_prefix("tls ") {
            tls = Some(a.parse::<SocketAddr>().unwrap());
        } else if l.starts_with("chain ") {
            chain = l.clone();
        } else if l == "ready" {
            break;
        }
    }
    let result = std::panic::catch_unwind(|| {
        let ca = std::fs::read_to_string(&ca_path).unwrap();
        let mut c = Client::tls(tls.unwrap(), &ca);
        c.login_examine_idle("bin");
        let s = TcpStream::connect_timeout(&control.unwrap(), TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut ctl = Control {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        assert_eq!(ctl.ok("exists bin"), "OK 1");
        assert_eq!(c.line(), "* 1 EXISTS\r\n");
        assert_eq!(ctl.ok("shutdown"), "OK shutting down");
    });
    // Bounded wait for the exit, then kill only the child we started.
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            eprintln!("killing mock-imapd pid {pid}");
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let bytes: usize = chain.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!((3000..5000).contains(&bytes), "{chain}");
}

#[test]
fn two_workers_share_sessions_and_control() {
    const N: usize = 40;
    let h = server(false, |c| c.threads = 2);
    let mut ctl = Control::connect(&h);
    // One at a time, so that accept order (the session index) is the
    // order of `clients` although two workers accept.
    let mut clients: Vec<Client> = (0..N)
        .map(|i| {
            let mut c = Client::plain(h.plain_addrs()[0]);
            c.login_examine_idle(&format!("w{i}"));
            c
        })
        .collect();
    assert_eq!(ctl.ok("sessions"), format!("OK {N}"));
    assert_eq!(ctl.ok("exists random 7"), "OK 7");
    let (stamps, _) = ctl.ask("timestamps");
    let mut picked: Vec<u64> = stamps
        .iter()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    picked.sort_unstable();
    picked.dedup();
    assert_eq!(
        picked.len(),
        7,
        "random picks distinct sessions: {stamps:?}"
    );
    for &i in &picked {
        assert_eq!(clients[i as usize].line(), "* 1 EXISTS\r\n");
    }
    assert_eq!(ctl.ok("exists all"), format!("OK {N}"));
    assert_eq!(ctl.ask("timestamps").1, format!("OK {N}"));
    // Indices are unique across workers: each one names exactly one session.
    for i in 0..N {
        assert_eq!(ctl.ok(&format!("still-here {i}")), "OK 1");
    }
}

#[test]
fn greeting_delay_holds_plain_and_tls() {
    let delay = Duration::from_millis(200);
    let h = server(true, |c| c.greeting_delay = delay);
    let ca = h.ca_pem().unwrap().to_string();
    let t = Instant::now();
    let mut c = Client::plain(h.plain_addrs()[0]);
    // Pipelined before the greeting: answered after it, in order.
    c.send("a NOOP\r\n");
    assert!(c.line().starts_with("* OK [CAPABILITY"));
    assert!(t.elapsed() >= delay, "{:?}", t.elapsed());
    assert_eq!(c.until_tagged("a"), ["a OK NOOP completed\r\n"]);
    let t = Instant::now();
    let mut s = Client::tls(h.tls_addrs()[0], &ca);
    assert!(s.line().starts_with("* OK [CAPABILITY"));
    assert!(t.elapsed() >= delay, "{:?}", t.elapsed());
}

#[test]
fn byte_by_byte_input_and_noise_never_break_the_server() {
    let h = server(true, |_| {});
    let mut ctl = Control::connect(&h);
    // Split invariance over a real socket: every byte its own write.
    let mut c = Client::plain(h.plain_addrs()[0]);
    assert!(c.line().starts_with("* OK"));
    for b in "a LOGIN {4+}\r\nslow \"p\\\"w\"\r\nb EXAMINE INBOX\r\nc IDLE\r\n".bytes() {
        c.send(std::str::from_utf8(&[b]).unwrap());
    }
    c.until_tagged("a");
    c.until_tagged("b");
    assert_eq!(c.line(), "+ idling\r\n");
    assert_eq!(ctl.ok("exists slow"), "OK 1");
    assert_eq!(c.line(), "* 1 EXISTS\r\n");

    // Noise: random bytes, literal announcements, a command over the limit.
    let mut seed = 0x5eed_u64;
    let mut noisy = Vec::new();
    for i in 0..20 {
        let mut s = Client::tcp(if i % 2 == 0 {
            h.plain_addrs()[0]
        } else {
            h.tls_addrs()[0]
        });
        let mut junk = vec![0u8; 4096];
        for b in &mut junk {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = if seed >> 61 == 0 {
                b"{}\r\n+9"[(seed % 6) as usize]
            } else {
                seed as u8
            };
        }
        let _ = s.write_all(&junk);
        noisy.push(s);
    }
    let mut big = Client::plain(h.plain_addrs()[0]);
    assert!(big.line().starts_with("* OK"));
    big.send(&format!("z LOGIN {} pw\r\n", "u".repeat(20_000)));
    assert_eq!(big.line(), "* BYE Command too long\r\n");
    assert_eq!(big.raw_line(), None);
    drop(noisy);

    // Still serving, and the idle session is untouched.
    let mut fresh = Client::plain(h.plain_addrs()[0]);
    fresh.login_examine_idle("fresh");
    assert_eq!(ctl.ok("exists slow"), "OK 1");
    assert_eq!(c.line(), "* 2 EXISTS\r\n");
    assert!(ctl.ok("stats").contains("closed_error="));
}

#[test]
fn tls_resumption_is_configurable() {
    for on in [true, false] {
        let h = server(true, |c| c.tls_resumption = on);
        let mut ctl = Control::connect(&h);
        // One client config, so the second connection may resume.
        let config = tls_config(h.ca_pem().unwrap());
        for i in 0..2 {
            let tcp = Client::tcp(h.tls_addrs()[0]);
            let mut c = Client {
                conn: tls_wrap_with(tcp, config.clone()),
                buf: Vec::new(),
            };
            c.login_examine_idle(&format!("r{i}"));
        }
        let stats = ctl.ok("stats");
        let want = if on { "resumed=1" } else { "resumed=0" };
        assert!(
            stats.contains("handshakes=2") && stats.contains(want),
            "{on}: {stats}"
        );
    }
}

/// Reads `n` bytes (or until EOF); returns them.
fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut chunk = vec![0u8; 64 * 1024];
    while out.len() < n {
        match s.read(&mut chunk[..(n - out.len()).min(64 * 1024)]) {
            Ok(0) | Err(_) => break,
            Ok(k) => out.extend_from_slice(&chunk[..k]),
        }
    }
    out
}

/// The one `reports` line of `user`'s session, once there is one.
fn report_of(ctl: &mut Control, user: &str) -> Vec<String> {
    let hex = format!("{:016x}", mock_imapd::session::user_hash(user.bytes()));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (lines, last) = ctl.ask("reports");
        assert!(last.starts_with("OK"), "{last}");
        let found: Vec<String> = lines
            .into_iter()
            .filter(|l| l.split(' ').nth(1) == Some(hex.as_str()))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn streams_are_written_as_read_then_reported_and_the_session_answers_again() {
    let h = server(false, |_| {});
    let mut ctl = Control::connect(&h);
    let mut c = Client::plain(h.plain_addrs()[0]);
    c.login_examine_idle("lit");
    // 3 MB: far more than the socket buffers hold, so it is written as read.
    assert_eq!(ctl.ok("stream lit giant-literal 3000000 10"), "OK 1");
    let Conn::Plain(s) = &mut c.conn else {
        panic!()
    };
    s.write_all(b"DONE\r\n").unwrap();
    let got = read_exactly(s, 3_000_000);
    assert_eq!(got.len(), 3_000_000);
    assert!(got.starts_with(b"* 1 FETCH (BODY[] {3000000}\r\n\0\0"));
    assert!(got[30..].iter().all(|&b| b == 0));
    let report = report_of(&mut ctl, "lit");
    let words: Vec<&str> = report[0].split(' ').collect();
    assert_eq!(words[2..6], ["giant-literal", "3000000", "3000000", "-"]);
    // The DONE sent during the stream is answered after it.
    assert_eq!(c.until_tagged("c"), ["c OK Idle completed\r\n"]);
}

#[test]
fn a_drip_keeps_time_and_a_stream_nobody_reads_stalls() {
    let h = server(false, |_| {});
    let mut ctl = Control::connect(&h);
    let mut drip = Client::plain(h.plain_addrs()[0]);
    drip.login_examine_idle("drip");
    let mut deaf = Client::plain(h.plain_addrs()[0]);
    deaf.login_examine_idle("deaf");
    let started = Instant::now();
    assert_eq!(ctl.ok("stream drip drip 8 5 100"), "OK 1");
    assert_eq!(ctl.ok("stream deaf giant-line 1000000000 30"), "OK 1");
    let Conn::Plain(s) = &mut drip.conn else {
        panic!()
    };
    assert_eq!(read_exactly(s, 8), b"* OK xxx");
    // Three bytes after the head: the first at once, then two pauses of 100 ms.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let report = report_of(&mut ctl, "drip");
    assert!(report[0].contains(" drip 8 8 - "), "{report:?}");
    // The deaf client never reads: the stream stalls, and the session is closed.
    let report = report_of(&mut ctl, "deaf");
    assert!(report[0].contains(" giant-line 1000000000 "), "{report:?}");
    assert!(report[0].contains(" TimedOut "), "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ctl.ok("sessions"), "OK 1");
}

#[test]
fn quirks_misbehave_by_name_and_users_are_tallied() {
    let h = server(false, |_| {});
    let mut ctl = Control::connect(&h);
    assert_eq!(ctl.ok("quirk late idle-no"), "OK");
    assert_eq!(ctl.ok("quirk sly auth-continuations"), "OK");
    let mut late = Client::plain(h.plain_addrs()[0]);
    late.login_examine_idle("late");
    late.send("DONE\r\nd IDLE\r\n");
    assert_eq!(late.until_tagged("c"), ["c OK Idle completed\r\n"]);
    assert_eq!(late.until_tagged("d"), ["d NO IDLE refused (quirk)\r\n"]);
    late.send("e LOGOUT\r\n");
    let _ = late.until_tagged("e");

    let mut sly = Client::plain(h.plain_addrs()[0]);
    assert!(sly.line().starts_with("* OK"));
    sly.send("a AUTHENTICATE PLAIN AHNseQBwdw==\r\n");
    for _ in 0..1000 {
        assert_eq!(sly.line(), "+ more\r\n");
    }
    drop(sly);
    let deadline = Instant::now() + TIMEOUT;
    let mut tally = String::new();
    while Instant::now() < deadline {
        tally = ctl.ok("user sly");
        if tally.contains("ended=1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        tally,
        "OK logins=1 idles=0 ended=1 logouts=0 client_closed=1 open=0"
    );
    assert_eq!(
        ctl.ok("user late"),
        "OK logins=1 idles=1 ended=1 logouts=1 client_closed=0 open=0"
    );
    let report = report_of(&mut ctl, "sly");
    assert!(
        report[0].contains(" continuations 104857600 "),
        "{report:?}"
    );
}
