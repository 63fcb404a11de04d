//! Fault injection: scripted hostile IMAP servers and a push sink that answers 410, 500
//! and 429.
//!
//! The hostile IMAP server is mock-imapd (tools/mock-imapd) in process: its `quirk`
//! command makes an account misbehave from login on, its `stream` command writes a
//! hostile byte stream as the proxy reads it (and reports what the kernel accepted), and
//! `bye`, `close` and `exists` do the rest.
//!
//! Every hostile server behaves correctly up to IDLE (greeting, AUTHENTICATE PLAIN,
//! EXAMINE, `+ idling`) and then, once the registration has been answered 201, does one
//! hostile thing. Each act must end only its own session, with a typed reason carried by
//! exactly one reconnect push, while a well-behaved control subscription on the same fake
//! server keeps working; and the process's resident memory must stay bounded however many
//! bytes the hostile servers throw at it.
//!
//! Timing: the engine's response timeout (30 s) and partial-response timeout (60 s) are not
//! configurable through the server's config, so the two scenarios that wait for them
//! (silent DONE, slow drip to the end) run in virtual time: the session the server's
//! engine runs, with the server's session config, under the engine's transcript driver.

use std::collections::HashMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use engine::session::SessionEvent;
use engine::{EndReason, Secret, Security, Tick, Waiting, WatchSpec};
use push::testing::{Recorded, Sink};
use serde_json::Value;
use server::{App, Config};

mod common;
/// The engine's transcript driver: a session against scripted bytes in virtual time.
#[path = "../../engine/tests/support/mod.rs"]
mod support;

use support::{Driver, Split};

use common::{eventually, get, post, TempDir};

const MIB: u64 = 1024 * 1024;
/// What the giant line and the giant literal offer: 100 MB each.
const GIANT: u64 = 100 * MIB;
/// No hostile write (but the slow drip, which sets its own) goes on longer than this.
const HOSTILE_WRITE_TIME: Duration = Duration::from_secs(10);
/// How long a hostile act may take to produce its reconnect push.
const PUSH_WAIT: Duration = Duration::from_secs(15);
/// After the expected push, how long a second one would have to show up.
const QUIET: Duration = Duration::from_millis(1000);

// ---------------------------------------------------------------------------------------
// Small helpers: registrations, pushes, RSS (the rest is in common/).

fn registration(imap_port: u16, user: &str, sink: &Sink) -> String {
    serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": imap_port, "security": "plain",
                 "username": user, "password": format!("pw-{user}")},
        "new_mail": {"endpoint": sink.url(&format!("/new/{user}"))},
        "reconnect": {"endpoint": sink.url(&format!("/re/{user}"))},
    })
    .to_string()
}

/// Registers `user` and returns its subscription id.
fn register(api: SocketAddr, imap_port: u16, user: &str, sink: &Sink) -> String {
    let reply = post(api, &registration(imap_port, user, sink));
    assert_eq!(reply.status, 201, "registering {user}: {}", reply.body);
    let created = reply.json();
    assert_eq!(created["state"], "idle", "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// `(status, body)` of GET /v1/subscriptions/{id}.
fn describe(api: SocketAddr, id: &str) -> (u16, Value) {
    let reply = get(api, id);
    let body = if reply.status == 200 {
        reply.json()
    } else {
        Value::Null
    };
    (reply.status, body)
}

fn assert_idle(api: SocketAddr, id: &str, who: &str) {
    let (status, body) = describe(api, id);
    assert_eq!(status, 200, "{who} is gone");
    assert_eq!(body["state"], "idle", "{who}: {body}");
}

/// Requests to `path`, waiting until there are at least `count` or `timeout` passed.
fn wait_path(sink: &Sink, path: &str, count: usize, timeout: Duration) -> Vec<Recorded> {
    let deadline = Instant::now() + timeout;
    loop {
        let found: Vec<Recorded> = sink
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect();
        if found.len() >= count || Instant::now() >= deadline {
            return found;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn payload(request: &Recorded) -> Value {
    serde_json::from_slice(&request.body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&request.body)))
}

/// VmRSS of `pid`, in bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

// ---------------------------------------------------------------------------------------
// The scripted IMAP server.

/// How a fake account answers, decided before it logs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    /// Correct IMAP throughout.
    #[default]
    Good,
    /// Answers DONE, then answers the next IDLE with `NO`.
    IdleNo,
    /// Answers the first IDLE with `NO`.
    FirstIdleNo,
    /// Answers AUTHENTICATE with `+ more` lines, endlessly.
    AuthContinuations,
}

/// One hostile (or benign) thing done to an idling connection, on the test's command.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// 100 MB of `x` without CRLF.
    GiantLine,
    /// `* 1 FETCH (BODY[] {104857600}` CRLF and then 100 MB of literal.
    GiantLiteral,
    /// `+ more` CRLF, endlessly (bounded by HOSTILE_WRITE_TIME).
    EndlessContinuation,
    /// One byte of a line that never ends, every `every`, for `lasting`.
    SlowDrip { every: Duration, lasting: Duration },
    /// Pseudo-random bytes with a CRLF every 61 bytes.
    Garbage,
    /// `* BYE`, then wait for the client to close.
    Bye,
    /// A TCP RST (SO_LINGER 0, then close).
    Reset,
    /// `total` bytes of valid, ignorable responses: keepalives and FETCHes with 60 KB
    /// literals.
    Flood { total: u64, lasting: Duration },
    /// `* n EXISTS`: new mail.
    Exists(u32),
}

impl Mode {
    /// mock-imapd's name for this misbehaviour (its `quirk` command).
    fn quirk(self) -> &'static str {
        let quirk = match self {
            Mode::Good => mock_imapd::Quirk::None,
            Mode::IdleNo => mock_imapd::Quirk::IdleNo,
            Mode::FirstIdleNo => mock_imapd::Quirk::FirstIdleNo,
            Mode::AuthContinuations => mock_imapd::Quirk::AuthContinuations,
        };
        quirk.name()
    }
}

impl Act {
    /// The mock-imapd control line that does this to `user`'s sessions.
    fn command(self, user: &str) -> String {
        let limit_s = HOSTILE_WRITE_TIME.as_secs();
        match self {
            Act::GiantLine => format!("stream {user} giant-line {GIANT} {limit_s}"),
            Act::GiantLiteral => format!("stream {user} giant-literal {GIANT} {limit_s}"),
            Act::EndlessContinuation => format!("stream {user} continuations {GIANT} {limit_s}"),
            Act::Garbage => format!("stream {user} garbage {} {limit_s}", 16 * MIB),
            Act::SlowDrip { every, lasting } => {
                // `* OK ` and then one byte a drip; the time limit is only a backstop.
                let drips = (lasting.as_millis() / every.as_millis().max(1)) as u64;
                let limit_s = (lasting + every).as_secs() + 1;
                let every_ms = every.as_millis();
                format!("stream {user} drip {} {limit_s} {every_ms}", 5 + drips)
            }
            Act::Flood { total, lasting } => {
                format!("stream {user} flood {total} {}", lasting.as_secs())
            }
            Act::Bye => format!("bye {user}"),
            Act::Reset => format!("close {user}"),
            Act::Exists(_) => format!("exists {user}"),
        }
    }
}

/// How one streamed act ended (a mock-imapd `reports` line).
#[derive(Clone, Debug)]
struct ActReport {
    act: String,
    offered: u64,
    /// Bytes the kernel accepted before the write failed or the act ended.
    accepted: u64,
    /// The write error (`TimedOut` when the proxy stopped reading for 2 s).
    error: Option<String>,
    took: Duration,
}

impl ActReport {
    /// `INDEX USER_HEX KIND OFFERED ACCEPTED ERROR|- TOOK_MS`, if it is `user_hex`'s.
    fn parse(line: &str, user_hex: &str) -> Option<ActReport> {
        let w: Vec<&str> = line.split(' ').collect();
        let [_, user, act, offered, accepted, error, took_ms] = w[..] else {
            panic!("unexpected report line {line:?}");
        };
        (user == user_hex).then(|| ActReport {
            act: act.to_owned(),
            offered: offered.parse().unwrap(),
            accepted: accepted.parse().unwrap(),
            error: (error != "-").then(|| error.to_owned()),
            took: Duration::from_millis(took_ms.parse().unwrap()),
        })
    }
}

/// What mock-imapd tallied for one login name (its `user` command).
#[derive(Clone, Copy, Debug, Default)]
struct User {
    /// `+ idling` answers sent.
    idles: u32,
    /// Connections that ended (by the client, an act, or LOGOUT).
    ended: u32,
    /// Of those, ended by LOGOUT.
    logouts: u32,
    /// Connections open now.
    open: u32,
}

/// The fake IMAP server: a mock-imapd in process on 127.0.0.1:0, driven through its
/// control channel; stopped on drop.
struct FakeImap {
    port: u16,
    handle: Option<mock_imapd::Handle>,
    /// EXISTS announced per user, to check each `Act::Exists(n)` says the count the
    /// mock will announce.
    exists: Mutex<HashMap<String, u32>>,
}

impl FakeImap {
    fn start() -> FakeImap {
        let handle = mock_imapd::run(mock_imapd::Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..mock_imapd::Config::default()
        })
        .unwrap();
        FakeImap {
            port: handle.plain_addrs()[0].port(),
            handle: Some(handle),
            exists: Mutex::new(HashMap::new()),
        }
    }

    /// One control line; panics unless it is answered OK. Returns the whole answer.
    fn control(&self, line: &str) -> String {
        let answer = self.handle.as_ref().unwrap().command(line);
        let last = answer.lines().last().unwrap_or("");
        assert!(last.starts_with("OK"), "mock-imapd: {line}: {answer}");
        answer
    }

    fn set_mode(&self, user: &str, mode: Mode) {
        self.control(&format!("quirk {user} {}", mode.quirk()));
    }

    fn user(&self, user: &str) -> User {
        let answer = self.control(&format!("user {user}"));
        let field = |name: &str| -> u32 {
            answer
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {answer:?}"))
        };
        User {
            idles: field("idles"),
            ended: field("ended"),
            logouts: field("logouts"),
            open: field("open"),
        }
    }

    /// Waits until `predicate` holds for `user`; `false` after `timeout`.
    fn wait_user(&self, user: &str, timeout: Duration, predicate: impl Fn(&User) -> bool) -> bool {
        eventually(timeout, || predicate(&self.user(user)))
    }

    /// Has `user`'s idling connection do `act`.
    fn act(&self, user: &str, act: Act) {
        assert!(
            self.wait_user(user, Duration::from_secs(10), |u| u.idles > 0 && u.open > 0),
            "{user} never idled"
        );
        if let Act::Exists(n) = act {
            let mut exists = self.exists.lock().unwrap();
            let count = exists.entry(user.to_owned()).or_default();
            *count += 1;
            assert_eq!(n, *count, "the mock announces {user}'s EXISTS count");
        }
        let answer = self.control(&act.command(user));
        assert_ne!(answer.trim(), "OK 0", "{user}'s IMAP connection is gone");
    }

    /// `user`'s act reports so far.
    fn reports_now(&self, user: &str) -> Vec<ActReport> {
        let hex = format!("{:016x}", mock_imapd::session::user_hash(user.bytes()));
        self.control("reports")
            .lines()
            .filter(|l| !l.starts_with("OK"))
            .filter_map(|l| ActReport::parse(l, &hex))
            .collect()
    }

    /// Waits until `user` has `n` act reports and returns them.
    fn reports(&self, user: &str, n: usize, timeout: Duration) -> Vec<ActReport> {
        eventually(timeout, || self.reports_now(user).len() >= n);
        self.reports_now(user)
    }
}

impl Drop for FakeImap {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The proxy under test, in process.

struct Rig {
    // Field order is drop order: the app first, then the fakes, then the directory.
    app: Option<App>,
    imap: FakeImap,
    sink: Sink,
    _dir: TempDir,
}

impl Rig {
    fn start(tweak: impl FnOnce(&mut Config)) -> Rig {
        let dir = TempDir::new();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.0.join("data"),
            reactor_threads: 1,
            sender_threads: 2,
            allow_private_destinations: true,
            allow_http_endpoints: true,
            allow_plain_imap: true,
            ..Config::default()
        };
        tweak(&mut config);
        Rig {
            app: Some(App::start(config).unwrap()),
            imap: FakeImap::start(),
            sink: Sink::start(),
            _dir: dir,
        }
    }

    fn api(&self) -> SocketAddr {
        self.app.as_ref().unwrap().local_addr()
    }

    fn register(&self, user: &str) -> String {
        register(self.api(), self.imap.port, user, &self.sink)
    }

    /// The control subscription still works: it is idle and new mail reaches its app.
    fn assert_control_unaffected(&self, id: &str, exists: u32) {
        assert_idle(self.api(), id, "the control subscription");
        let before = wait_path(&self.sink, "/new/control", 0, Duration::ZERO).len();
        self.imap.act("control", Act::Exists(exists));
        let pushes = wait_path(
            &self.sink,
            "/new/control",
            before + 1,
            Duration::from_secs(5),
        );
        assert_eq!(pushes.len(), before + 1, "the control got no new-mail push");
        assert_eq!(payload(&pushes[before])["exists"], exists);
        let reconnects = wait_path(&self.sink, "/re/control", 0, Duration::ZERO);
        assert!(reconnects.is_empty(), "the control was told to reconnect");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown();
        }
    }
}

/// Registers a control and a hostile account on one fake server, has the hostile one do
/// `act` (or just wait, for modes that misbehave by themselves), and checks the hostile
/// subscription ends with exactly one reconnect push whose reason is one of `expected`,
/// while the control keeps working. Returns the reason and the time from the act to the
/// push.
fn hostile(
    scenario: &str,
    mode: Mode,
    act: Option<Act>,
    idle_refresh_secs: u64,
    expected: &[&str],
) -> (String, Duration) {
    let rig = Rig::start(|c| c.idle_refresh_secs = idle_refresh_secs);
    let api = rig.api();
    rig.imap.set_mode("hostile", mode);
    let control = rig.register("control");
    let id = rig.register("hostile");
    let started = Instant::now();
    if let Some(act) = act {
        rig.imap.act("hostile", act);
    }
    // Modes that misbehave at the IDLE refresh need that long, plus a timeout if any.
    let wait = match mode {
        Mode::IdleNo => PUSH_WAIT + Duration::from_secs(idle_refresh_secs),
        // The partial-response timeout is 60 s.
        _ if matches!(act, Some(Act::SlowDrip { .. })) => PUSH_WAIT + Duration::from_secs(60),
        _ => PUSH_WAIT,
    };
    let pushes = wait_path(&rig.sink, "/re/hostile", 1, wait);
    let reports = rig.imap.reports_now("hostile");
    assert!(
        !pushes.is_empty(),
        "{scenario}: no reconnect push within {wait:?}; fake server saw {reports:?}"
    );
    let took = pushes[0].at.duration_since(started);
    let body = payload(&pushes[0]);
    assert_eq!(body["type"], "reconnect", "{body}");
    // Keyless: the push service reads it, so no subscription id (issue 9).
    assert_eq!(body.get("subscription"), None, "{body}");
    let reason = body["reason"].as_str().unwrap_or("").to_owned();
    assert!(
        expected.contains(&reason.as_str()),
        "{scenario}: reason {reason:?}, expected one of {expected:?}"
    );
    thread::sleep(QUIET);
    let pushes = wait_path(&rig.sink, "/re/hostile", 0, Duration::ZERO);
    assert_eq!(pushes.len(), 1, "{scenario}: exactly one reconnect push");
    assert_eq!(
        describe(api, &id).0,
        404,
        "{scenario}: a lost subscription is forgotten"
    );
    assert!(
        rig.imap
            .wait_user("hostile", Duration::from_secs(5), |u| u.ended >= 1),
        "{scenario}: the proxy kept the hostile connection open"
    );
    rig.assert_control_unaffected(&control, 1);
    let reports = rig.imap.reports_now("hostile");
    for r in &reports {
        eprintln!(
            "{scenario}: {} accepted {:.2} MiB of {:.2} MiB offered in {:?} (write error {:?})",
            r.act,
            mib(r.accepted),
            mib(r.offered),
            r.took,
            r.error
        );
    }
    eprintln!("{scenario}: reason {reason} {took:?} after the act");
    (reason, took)
}

// ---------------------------------------------------------------------------------------
// 1. Hostile IMAP servers, one scenario each.

#[test]
fn giant_line_is_a_protocol_error() {
    let (_, took) = hostile(
        "giant line",
        Mode::Good,
        Some(Act::GiantLine),
        1440,
        &["protocol_error"],
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A literal the session never reads (here 100 MB in an unsolicited FETCH) is counted down
/// as it arrives and dropped (Framer::skip), never buffered and no longer a protocol error:
/// the proxy reads all of it at once, the subscription stays idle and its app is told
/// nothing. (A response left unfinished after it still meets the partial-response
/// deadline: engine/tests/transcripts.rs, in virtual time.)
#[test]
fn a_giant_unwanted_literal_is_counted_down_not_fatal() {
    let rig = Rig::start(|_| {});
    let control = rig.register("control");
    let id = rig.register("hostile");
    rig.imap.act("hostile", Act::GiantLiteral);
    let reports = rig.imap.reports("hostile", 1, PUSH_WAIT);
    assert_eq!(reports.len(), 1, "no report of the giant literal");
    assert_eq!(reports[0].error, None, "{:?}", reports[0]);
    assert_eq!(
        reports[0].accepted, GIANT,
        "the proxy stopped reading: {:?}",
        reports[0]
    );
    assert_idle(
        rig.api(),
        &id,
        "the subscription that got the giant literal",
    );
    let reconnects = wait_path(&rig.sink, "/re/hostile", 0, Duration::ZERO);
    assert!(reconnects.is_empty(), "its app was told to reconnect");
    rig.assert_control_unaffected(&control, 1);
}

#[test]
fn endless_continuation_is_a_protocol_error() {
    let (_, took) = hostile(
        "endless continuation",
        Mode::Good,
        Some(Act::EndlessContinuation),
        1440,
        &["protocol_error"],
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn garbage_is_a_protocol_error() {
    let (_, took) = hostile(
        "garbage",
        Mode::Good,
        Some(Act::Garbage),
        1440,
        &["protocol_error"],
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn bye_is_bye() {
    let (_, took) = hostile("bye", Mode::Good, Some(Act::Bye), 1440, &["bye"]);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn reset_is_a_connection_reset() {
    let (reason, took) = hostile(
        "reset",
        Mode::Good,
        Some(Act::Reset),
        1440,
        &["connection_reset", "io_error", "closed"],
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    if reason != "connection_reset" {
        eprintln!("reset: reported as {reason}, not connection_reset");
    }
}

/// "One that answers IDLE with NO": the proxy re-issues IDLE after idle_refresh_secs (2 s)
/// and the server refuses it.
#[test]
fn idle_answered_with_no_is_a_protocol_error() {
    let (_, took) = hostile("IDLE NO", Mode::IdleNo, None, 2, &["protocol_error"]);
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(8),
        "the refresh is due after ~2 s: {took:?}"
    );
}

/// The first IDLE answered with NO: the session never became ready, so the registration
/// itself fails with a typed error, and no reconnect push is owed.
#[test]
fn first_idle_answered_with_no_fails_the_registration() {
    let rig = Rig::start(|_| {});
    let control = rig.register("control");
    rig.imap.set_mode("hostile", Mode::FirstIdleNo);
    let reply = post(
        rig.api(),
        &registration(rig.imap.port, "hostile", &rig.sink),
    );
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(
        reply.json()["error"],
        "imap_protocol_error",
        "{}",
        reply.body
    );
    assert!(
        rig.imap
            .wait_user("hostile", Duration::from_secs(5), |u| u.ended >= 1),
        "the proxy kept the refused connection open"
    );
    rig.assert_control_unaffected(&control, 1);
    assert!(wait_path(&rig.sink, "/re/hostile", 0, Duration::ZERO).is_empty());
    eprintln!("first IDLE NO: {} {}", reply.status, reply.body);
}

/// "A server that never answers": DONE goes unanswered, so the session ends after the
/// response timeout of the config the server runs with (30 s), in virtual time: the
/// session the server's engine runs, driven by the engine's transcript driver.
#[test]
fn silent_done_is_a_timeout() {
    let cfg = Config::default().session();
    let mut d = Driver::new(transcript_spec(), cfg, Split::Whole);
    to_idle(&mut d);
    let refresh_at = d.run_to_next_deadline(Tick::NEVER);
    d.c(b"DONE\r\n");
    let end_at = d.run_to_next_deadline(Tick::NEVER);
    assert_eq!(end_at.since(refresh_at), Duration::from_secs(30));
    let events = d.take_events();
    assert_eq!(
        events,
        vec![SessionEvent::Ended(EndReason::Timeout(Waiting::Done))]
    );
    // The reconnect push's reason, as the core takes it from the end.
    assert_eq!(EndReason::Timeout(Waiting::Done).code(), "timeout");
}

/// Slow drip, the full story: one byte every 500 ms of a line that never ends ends the
/// session 60 s after the line began (the server's partial_response_timeout), in
/// virtual time.
#[test]
fn slow_drip_is_a_timeout_after_a_minute() {
    let cfg = Config::default().session();
    let mut d = Driver::new(transcript_spec(), cfg, Split::Whole);
    to_idle(&mut d);
    let start = d.now;
    let every = Duration::from_millis(500);
    // 80 s of dripping at most, as the mock's act lasts.
    for _ in 0..160 {
        d.now = d.now + every;
        if d.session.poll_timeout() <= d.now {
            break;
        }
        d.s(b"x");
    }
    d.run_to_next_deadline(Tick::NEVER);
    let took = d.now.since(start);
    assert!(
        took > Duration::from_secs(59) && took < Duration::from_secs(66),
        "{took:?}"
    );
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Timeout(
            Waiting::ResponseEnd
        ))]
    );
}

/// The session a registration like `registration` asks for, for the transcript driver.
fn transcript_spec() -> WatchSpec {
    WatchSpec {
        host: "127.0.0.1".into(),
        port: 143,
        security: Security::DangerousPlain,
        username: "alice".into(),
        secret: Secret::Password(zeroize::Zeroizing::new(b"pw-alice".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}

/// Logs in with LOGIN (plain IMAP, as the mock speaks) and opens INBOX; leaves the
/// session in IDLE.
fn to_idle(d: &mut Driver) {
    d.s(b"* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN SASL-IR] ready\r\n");
    let sent = std::mem::take(&mut d.sent);
    assert!(
        sent.starts_with(b"A1 "),
        "{}",
        String::from_utf8_lossy(&sent)
    );
    d.s(b"A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
    d.c(b"A2 EXAMINE INBOX\r\n");
    d.s(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1700000000] v\r\n* OK [UIDNEXT 4] n\r\n");
    d.s(b"A2 OK [READ-ONLY] Examine completed\r\n");
    d.c(b"A3 IDLE\r\n");
    d.s(b"+ idling\r\n");
    let events = d.take_events();
    assert!(
        matches!(events.as_slice(), [SessionEvent::Ready(_)]),
        "{events:?}"
    );
}

/// Slow drip, quickly, through the server: for 5 s the dripping session stays idle (a
/// partial line is not an error yet), costs nothing visible and pushes nothing.
#[test]
fn slow_drip_holds_only_its_own_session() {
    let rig = Rig::start(|_| {});
    let control = rig.register("control");
    let id = rig.register("hostile");
    rig.imap.act(
        "hostile",
        Act::SlowDrip {
            every: Duration::from_millis(500),
            lasting: Duration::from_secs(6),
        },
    );
    thread::sleep(Duration::from_secs(5));
    assert_idle(rig.api(), &id, "the dripping subscription");
    assert!(rig.sink.requests().is_empty(), "{:?}", rig.sink.requests());
    rig.assert_control_unaffected(&control, 1);
    let report = rig.imap.reports("hostile", 1, Duration::from_secs(5));
    assert_eq!(report.len(), 1, "the drip did not finish");
    assert_eq!(report[0].error, None, "the proxy cut the drip short");
}

/// Slow drip, quickly, against the engine with a 2 s partial_response_timeout: the same
/// code path the server's 60 s default takes ends the session with `timeout`.
#[test]
fn slow_drip_times_out_after_partial_response_timeout() {
    let imap = FakeImap::start();
    let engine = engine::Engine::start(engine::EngineConfig {
        reactor_threads: 1,
        webpki_roots: false,
        session: engine::SessionConfig {
            partial_response_timeout: Duration::from_secs(2),
            ..engine::SessionConfig::default()
        },
        ..engine::EngineConfig::default()
    })
    .unwrap();
    let id = engine
        .watch(engine::WatchSpec {
            host: "127.0.0.1".into(),
            port: imap.port,
            security: engine::Security::DangerousPlain,
            username: "drip".into(),
            secret: engine::Secret::Password(zeroize::Zeroizing::new(b"pw-drip".to_vec())),
            mailboxes: vec!["INBOX".into()],
            since: None,
        })
        .unwrap();
    let event = engine.events().recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(event, Ok(engine::Event::Ready { id: got, .. }) if got == id),
        "{event:?}"
    );
    let started = Instant::now();
    imap.act(
        "drip",
        Act::SlowDrip {
            every: Duration::from_millis(500),
            lasting: Duration::from_secs(10),
        },
    );
    let event = engine.events().recv_timeout(Duration::from_secs(10));
    let took = started.elapsed();
    match event {
        Ok(engine::Event::SessionLost { id: got, reason }) => {
            assert_eq!(got, id);
            assert_eq!(
                reason,
                engine::EndReason::Timeout(engine::Waiting::ResponseEnd)
            );
            assert_eq!(reason.code(), "timeout");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        took > Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let report = imap.reports("drip", 1, Duration::from_secs(5));
    assert!(
        report[0].error.is_some(),
        "the connection was not closed mid-drip: {report:?}"
    );
    eprintln!("slow drip (engine, 2 s partial timeout): timeout after {took:?}");
    let _ = engine.shutdown();
}

/// Endless continuation where a continuation is legitimate (during AUTHENTICATE): the
/// registration must fail on its own (502 imap_protocol_error, or 504 imap_timeout), and
/// the other sessions on the same reactor must not notice.
#[test]
fn endless_continuation_during_login_fails_only_that_registration() {
    let rig = Rig::start(|c| c.register_timeout_secs = 5);
    let control = rig.register("control");
    rig.imap.set_mode("hostile", Mode::AuthContinuations);
    let started = Instant::now();
    let reply = post(
        rig.api(),
        &registration(rig.imap.port, "hostile", &rig.sink),
    );
    let took = started.elapsed();
    let reports = rig.imap.reports("hostile", 1, Duration::from_secs(12));
    eprintln!(
        "endless continuation during login: {} {} after {took:?}; fake server: {reports:?}",
        reply.status, reply.body
    );
    assert!(
        reply.status == 502 || reply.status == 504,
        "{} {}",
        reply.status,
        reply.body
    );
    assert!(
        rig.imap
            .wait_user("hostile", Duration::from_secs(12), |u| u.ended >= 1),
        "the proxy kept the hostile connection open"
    );
    // The control's connection must still be up, or, if it was lost, its app told so.
    thread::sleep(QUIET);
    let control_ended = rig.imap.user("control").ended;
    let control_state = describe(rig.api(), &control);
    let control_reconnects = wait_path(&rig.sink, "/re/control", 0, Duration::ZERO).len();
    assert_eq!(
        control_ended, 0,
        "the control's IMAP connection was closed; GET says {control_state:?}; \
         reconnect pushes to its app: {control_reconnects}"
    );
    rig.assert_control_unaffected(&control, 1);
    assert!(wait_path(&rig.sink, "/re/hostile", 0, Duration::ZERO).is_empty());
}

/// A server that floods valid, ignorable responses as fast as it can must not starve the
/// other sessions of its reactor thread: new mail for the control still arrives promptly.
#[test]
fn a_flood_of_valid_responses_starves_no_other_session() {
    let rig = Rig::start(|_| {});
    let control = rig.register("control");
    let id = rig.register("hostile");
    let lasting = Duration::from_secs(5);
    rig.imap.act(
        "hostile",
        Act::Flood {
            total: u64::MAX,
            lasting,
        },
    );
    thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    rig.imap.act("control", Act::Exists(1));
    let pushes = wait_path(&rig.sink, "/new/control", 1, Duration::from_secs(10));
    assert_eq!(pushes.len(), 1, "no new-mail push for the control");
    let latency = pushes[0].at.duration_since(sent);
    let report = rig.imap.reports("hostile", 1, Duration::from_secs(10));
    eprintln!(
        "flood: {:.0} MiB of valid responses in {:?} ({:?}); the control's new mail \
         took {latency:?}",
        mib(report[0].accepted),
        report[0].took,
        report[0].error
    );
    assert_eq!(report[0].error, None, "the flood was cut short");
    assert_idle(rig.api(), &id, "the flooding subscription");
    assert_idle(rig.api(), &control, "the control");
    assert!(
        latency < Duration::from_secs(1),
        "the control's new mail waited {latency:?} behind the flood"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Memory stays bounded: every hostile act against one server process.

struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, idle_refresh_secs: u64) -> Server {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
listen = "{addr}"
data_dir = "{}"
reactor_threads = 2
sender_threads = 2
idle_refresh_secs = {idle_refresh_secs}
allow_private_destinations = true
allow_http_endpoints = true
allow_plain_imap = true
"#,
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = dir.join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("server exited: {status:?}: {}", server.log_text());
            }
            assert!(Instant::now() < deadline, "server did not listen");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss(&self) -> u64 {
        rss_bytes(self.pid()).expect("the server is running")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        // SAFETY: a signal to the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Samples the RSS of `pid` every 20 ms until stopped; the largest sample.
struct RssPeak {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut peak = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                peak = peak.max(rss_bytes(pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssPeak { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[test]
fn rss_stays_bounded_under_every_hostile_server() {
    const GROWTH_MAX: u64 = 32 * MIB;
    let dir = TempDir::new();
    let imap = FakeImap::start();
    let sink = Sink::start();
    let server = Server::start(&dir.0, 2);
    let api = server.addr;
    let acts: [(&str, Act, &[&str]); 5] = [
        ("giant_line", Act::GiantLine, &["protocol_error"]),
        (
            "continuation",
            Act::EndlessContinuation,
            &["protocol_error"],
        ),
        ("garbage", Act::Garbage, &["protocol_error"]),
        ("bye", Act::Bye, &["bye"]),
        (
            "reset",
            Act::Reset,
            &["connection_reset", "io_error", "closed"],
        ),
    ];
    let control = register(api, imap.port, "control", &sink);
    let mut ids = HashMap::new();
    for (user, _, _) in &acts {
        ids.insert(*user, register(api, imap.port, user, &sink));
    }
    let drip = register(api, imap.port, "drip", &sink);
    let flood = register(api, imap.port, "flood", &sink);
    // A giant literal nobody reads is skipped as it arrives: this session survives.
    let literal = register(api, imap.port, "giant_literal", &sink);
    // Warm up the push path once, so its first-use allocations are not counted.
    imap.act("control", Act::Exists(1));
    assert_eq!(
        wait_path(&sink, "/new/control", 1, Duration::from_secs(5)).len(),
        1
    );
    thread::sleep(Duration::from_millis(300));
    let rss_before = server.rss();
    let peak = RssPeak::start(server.pid());

    // IDLE answered with NO: registered now, it fails at its first refresh (~2 s).
    imap.set_mode("idle_no", Mode::IdleNo);
    let idle_no = register(api, imap.port, "idle_no", &sink);
    let started = Instant::now();
    for (user, act, _) in &acts {
        imap.act(user, *act);
    }
    imap.act(
        "drip",
        Act::SlowDrip {
            every: Duration::from_millis(500),
            lasting: Duration::from_secs(6),
        },
    );
    imap.act("giant_literal", Act::GiantLiteral);
    imap.act(
        "flood",
        Act::Flood {
            total: GIANT,
            lasting: HOSTILE_WRITE_TIME,
        },
    );

    let mut expected: Vec<(&str, &[&str])> = acts.iter().map(|(u, _, e)| (*u, *e)).collect();
    expected.push(("idle_no", &["protocol_error"]));
    for (user, reasons) in &expected {
        let pushes = wait_path(&sink, &format!("/re/{user}"), 1, PUSH_WAIT);
        assert!(!pushes.is_empty(), "{user}: no reconnect push");
        let body = payload(&pushes[0]);
        let reason = body["reason"].as_str().unwrap_or("");
        assert!(reasons.contains(&reason), "{user}: {body}");
        eprintln!(
            "rss test: {user} ended with {reason} after {:?}",
            pushes[0].at.duration_since(started)
        );
    }
    let flood_report = imap.reports("flood", 1, Duration::from_secs(20));
    let drip_report = imap.reports("drip", 1, Duration::from_secs(10));
    let literal_report = imap.reports("giant_literal", 1, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(500));
    let rss_after = server.rss();
    let rss_peak = peak.finish().max(rss_after);

    // Exactly one reconnect push per lost session, none for the survivors.
    for (user, _) in &expected {
        let n = wait_path(&sink, &format!("/re/{user}"), 0, Duration::ZERO).len();
        assert_eq!(n, 1, "{user}: {n} reconnect pushes");
    }
    for user in ["control", "drip", "flood", "giant_literal"] {
        let n = wait_path(&sink, &format!("/re/{user}"), 0, Duration::ZERO).len();
        assert_eq!(n, 0, "{user} was told to reconnect");
    }
    for (user, id) in ids.iter().chain([(&"idle_no", &idle_no)]) {
        assert_eq!(describe(api, id).0, 404, "{user} is still registered");
    }
    assert_idle(api, &control, "control");
    assert_idle(api, &drip, "drip (under 60 s of dripping)");
    assert_idle(api, &flood, "flood (valid responses)");
    assert_idle(api, &literal, "giant_literal (skipped, not buffered)");
    assert_eq!(literal_report[0].error, None, "the literal was cut short");
    assert_eq!(literal_report[0].accepted, GIANT, "{literal_report:?}");
    assert_eq!(flood_report[0].error, None, "the flood was cut short");
    assert_eq!(flood_report[0].accepted, GIANT, "{flood_report:?}");
    assert_eq!(drip_report[0].error, None, "the drip was cut short");
    imap.act("control", Act::Exists(2));
    assert_eq!(
        wait_path(&sink, "/new/control", 2, Duration::from_secs(5)).len(),
        2,
        "the control no longer gets new mail"
    );

    let mut offered = 0;
    let mut accepted = 0;
    for user in acts
        .iter()
        .map(|(u, _, _)| *u)
        .chain(["drip", "flood", "giant_literal"])
    {
        for r in imap.reports_now(user) {
            eprintln!(
                "rss test: {user}: {} accepted {:.2} MiB of {:.2} MiB offered in {:?} ({:?})",
                r.act,
                mib(r.accepted),
                mib(r.offered),
                r.took,
                r.error
            );
            offered += r.offered;
            accepted += r.accepted;
        }
    }
    eprintln!(
        "rss test: RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB; hostile bytes \
         offered {:.1} MiB, accepted by the kernel {:.1} MiB; {:?} in all",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
        mib(offered),
        mib(accepted),
        started.elapsed()
    );
    assert!(offered > 200 * MIB, "{offered}");
    assert!(
        rss_peak.saturating_sub(rss_before) < GROWTH_MAX,
        "RSS grew from {rss_before} to a peak of {rss_peak}: {}",
        server.log_text()
    );
    assert!(rss_after.saturating_sub(rss_before) < GROWTH_MAX);
    server.stop();
}

// ---------------------------------------------------------------------------------------
// 3. A push service that answers 410, 500 and 429.

/// Registers `user` (and a control) and has the fake server announce new mail for it.
fn new_mail_rig(user: &str, configure: impl FnOnce(&Sink)) -> (Rig, String, String) {
    let rig = Rig::start(|_| {});
    let control = rig.register("control");
    let id = rig.register(user);
    configure(&rig.sink);
    rig.imap.act(user, Act::Exists(1));
    (rig, id, control)
}

#[test]
fn push_410_forgets_the_subscription_and_closes_its_session() {
    let (rig, id, control) = new_mail_rig("gone", |sink| sink.set_status("/new/gone", 410));
    let pushes = wait_path(&rig.sink, "/new/gone", 1, Duration::from_secs(5));
    assert_eq!(pushes.len(), 1, "no new-mail push");
    assert!(
        eventually(Duration::from_secs(5), || describe(rig.api(), &id).0 == 404),
        "the subscription is still there after 410"
    );
    assert!(
        rig.imap
            .wait_user("gone", Duration::from_secs(10), |u| u.logouts >= 1
                || u.ended >= 1),
        "the IMAP session was not closed: {:?}",
        rig.imap.user("gone")
    );
    thread::sleep(QUIET);
    let gone = rig.imap.user("gone");
    let after = wait_path(&rig.sink, "/new/gone", 0, Duration::ZERO).len();
    assert_eq!(after, 1, "a gone endpoint was retried");
    let reconnects = wait_path(&rig.sink, "/re/gone", 0, Duration::ZERO);
    eprintln!(
        "410: forgotten, IMAP saw {gone:?}, reconnect pushes {}",
        reconnects.len()
    );
    assert!(
        reconnects.is_empty(),
        "a gone subscription was told to reconnect"
    );
    rig.assert_control_unaffected(&control, 1);
}

#[test]
fn push_500_500_then_201_is_delivered_once() {
    let (rig, id, control) = new_mail_rig("flaky", |sink| {
        sink.set_script("/new/flaky", &[500, 500]);
    });
    let pushes = wait_path(&rig.sink, "/new/flaky", 3, Duration::from_secs(10));
    let statuses: Vec<u16> = pushes.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 201]);
    let gaps: Vec<Duration> = pushes
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    // Backoff: the first retry after 0.5-1 s, the second after 1-2 s.
    assert!(gaps[0] >= Duration::from_millis(450), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(900), "{gaps:?}");
    for push in &pushes {
        assert_eq!(
            payload(push),
            serde_json::json!({"type": "new_mail", "mailbox": "INBOX", "exists": 1})
        );
    }
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        wait_path(&rig.sink, "/new/flaky", 0, Duration::ZERO).len(),
        3,
        "delivered more than once"
    );
    let (status, body) = describe(rig.api(), &id);
    assert_eq!(status, 200);
    assert_eq!(body["state"], "idle", "{body}");
    assert_eq!(body["pushes"]["sent"], 1, "{body}");
    assert_eq!(body["pushes"]["failed"], 0, "{body}");
    eprintln!("500, 500, 201: delivered once after retries {gaps:?}");
    rig.assert_control_unaffected(&control, 1);
}

#[test]
fn push_429_with_retry_after_is_retried_after_the_wait() {
    let (rig, id, control) = new_mail_rig("limited", |sink| {
        sink.set_script("/new/limited", &[429]);
        sink.set_retry_after("/new/limited", 1);
    });
    let pushes = wait_path(&rig.sink, "/new/limited", 2, Duration::from_secs(10));
    let statuses: Vec<u16> = pushes.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 201]);
    let gap = pushes[1].at.duration_since(pushes[0].at);
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_secs(5),
        "retried after {gap:?}"
    );
    thread::sleep(QUIET);
    assert_eq!(
        wait_path(&rig.sink, "/new/limited", 0, Duration::ZERO).len(),
        2,
        "delivered more than once"
    );
    let (_, body) = describe(rig.api(), &id);
    assert_eq!(body["state"], "idle", "{body}");
    assert_eq!(body["pushes"]["sent"], 1, "{body}");
    eprintln!("429 + Retry-After: 1: delivered after {gap:?}");
    rig.assert_control_unaffected(&control, 1);
}
