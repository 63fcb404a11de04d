//! [`Dovecot`]: a real Dovecot master process running in the foreground as a
//! child of the test process.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::certs::TestPki;
use crate::config::{render_config, render_passwd, validate_user_name, DovecotConfig, Layout};
use crate::system::{self, command_line, tail, UserIds};
use crate::HarnessError;

/// Path of the Dovecot master binary.
pub const DOVECOT_BIN: &str = "/usr/sbin/dovecot";
/// Path of `doveadm`.
pub const DOVEADM_BIN: &str = "/usr/bin/doveadm";
/// Path of the local delivery agent.
pub const LDA_BIN: &str = "/usr/lib/dovecot/dovecot-lda";

/// How long [`Dovecot::start`] waits for the greeting.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for `doveadm` / `dovecot-lda` invocations.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts with fresh ports when a port was grabbed by someone else.
const PORT_ATTEMPTS: usize = 3;

/// True if all Dovecot binaries the harness needs are installed.
pub fn dovecot_available() -> bool {
    check_installed().is_ok()
}

fn check_installed() -> Result<(), HarnessError> {
    for bin in [DOVECOT_BIN, DOVEADM_BIN, LDA_BIN] {
        if !Path::new(bin).is_file() {
            return Err(HarnessError::NotInstalled {
                missing: PathBuf::from(bin),
            });
        }
    }
    Ok(())
}

/// One logged-in connection as `doveadm who -1` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DovecotSession {
    /// The login name.
    pub user: String,
    /// `imap` for the sessions this harness serves.
    pub protocol: String,
    /// The Dovecot process serving it, when listed.
    pub pid: Option<u32>,
    /// The client's address, when listed: with several clients on one host,
    /// each bound to its own source address, it says whose session this is.
    pub ip: Option<std::net::IpAddr>,
}

/// A running Dovecot on 127.0.0.1 with its own temp dir, config, CA, users
/// and ports. Stopped (SIGTERM, then SIGKILL) and cleaned up on drop.
///
/// Set `TESTKIT_KEEP_DIR=1` to keep the temp dir (config, log, mail) after
/// the test for debugging.
pub struct Dovecot {
    cfg: DovecotConfig,
    dir: PathBuf,
    config_path: PathBuf,
    imap_port: u16,
    imaps_port: u16,
    pki: TestPki,
    child: Option<Child>,
    pid: u32,
}

enum ReadyError {
    /// A listener could not bind: try other ports.
    PortInUse(String),
    Other(String),
}

impl Dovecot {
    /// Start Dovecot with `cfg`.
    ///
    /// Returns once the plain port has sent its `* OK` greeting and the
    /// implicit-TLS port has completed a TLS handshake (against the test CA)
    /// and sent its greeting; gives up after [`STARTUP_TIMEOUT`]. Fails with
    /// [`HarnessError::NotInstalled`] if Dovecot is missing.
    pub fn start(cfg: DovecotConfig) -> Result<Dovecot, HarnessError> {
        check_installed()?;
        cfg.validate()?;
        if let Some(n) = cfg.raise_inotify_instances {
            system::raise_inotify_instances(n);
        }
        let ids = system::ensure_mail_user()?;
        let names: Vec<String> = cfg
            .extra_listen
            .iter()
            .map(|a| a.to_string())
            .chain(cfg.extra_names.iter().cloned())
            .collect();
        let pki = TestPki::generate_for(&names)?;
        let dir = system::create_temp_dir()?;
        // From here on `Drop` cleans the directory up on any error.
        let mut dc = Dovecot {
            config_path: dir.join("dovecot.conf"),
            dir,
            cfg,
            imap_port: 0,
            imaps_port: 0,
            pki,
            child: None,
            pid: 0,
        };
        dc.prepare_dir(ids)?;
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let (p1, p2) = free_port_pair()?;
            dc.imap_port = p1;
            dc.imaps_port = p2;
            dc.write_config()?;
            match dc.launch() {
                Ok(()) => return Ok(dc),
                Err(ReadyError::PortInUse(msg)) => last_error = msg,
                Err(ReadyError::Other(msg)) => return Err(dc.startup_error(msg)),
            }
        }
        Err(dc.startup_error(format!(
            "no free ports after {PORT_ATTEMPTS} attempts: {last_error}"
        )))
    }

    /// Port of the plain listener (STARTTLS available; LOGIN allowed unless
    /// configured otherwise).
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// Port of the implicit-TLS listener.
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }

    /// `127.0.0.1:imap_port`.
    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.imap_port))
    }

    /// `127.0.0.1:imaps_port`.
    pub fn imaps_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.imaps_port))
    }

    /// The test CA certificate (PEM). Add it as a trust root in code; the
    /// server certificate is valid for `127.0.0.1` and `localhost`.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The test CA certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.pki.ca_der
    }

    /// The whole generated PKI (CA, leaf, leaf key).
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// A rustls client config (ring provider) trusting only the test CA.
    pub fn rustls_client_config(&self) -> Result<Arc<rustls::ClientConfig>, HarnessError> {
        client_config_for(&self.pki.ca_der)
    }

    /// Connect to the implicit-TLS port and complete the handshake with
    /// server name `localhost`. The greeting is left unread.
    pub fn connect_tls(
        &self,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, HarnessError> {
        connect_tls(self.imaps_addr(), &self.pki.ca_der, Duration::from_secs(10))
    }

    /// The configuration this server was started with.
    pub fn config(&self) -> &DovecotConfig {
        &self.cfg
    }

    /// The temp dir holding config, log, TLS files and mail homes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the generated `dovecot.conf`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// PID of the Dovecot master process (0 once stopped).
    pub fn pid(&self) -> u32 {
        if self.child.is_some() {
            self.pid
        } else {
            0
        }
    }

    /// True while the master process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Dovecot's log (`log_path`), followed by anything the master wrote to
    /// stderr.
    pub fn log(&self) -> String {
        let [log_path, stderr_path] = self.log_files();
        let read =
            |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
        let mut log = read(&log_path);
        let stderr = read(&stderr_path);
        if !stderr.trim().is_empty() {
            log.push_str("--- master stderr ---\n");
            log.push_str(&stderr);
        }
        log
    }

    fn log_files(&self) -> [PathBuf; 2] {
        [self.dir.join("dovecot.log"), self.dir.join("stderr.log")]
    }

    /// Current sizes of the log and stderr files.
    fn log_file_lengths(&self) -> [u64; 2] {
        self.log_files()
            .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
    }

    /// What was appended to the log and stderr files since `marks`.
    fn log_since(&self, marks: [u64; 2]) -> String {
        let mut out = String::new();
        for (path, mark) in self.log_files().iter().zip(marks) {
            if let Ok(bytes) = fs::read(path) {
                let start = usize::try_from(mark).unwrap_or(0).min(bytes.len());
                out.push_str(&String::from_utf8_lossy(&bytes[start..]));
            }
        }
        out
    }

    /// Deliver `msg` (raw RFC 5322 bytes, CRLF or LF) to `user`'s INBOX via
    /// `dovecot-lda`, the way an MTA would. IDLE clients are told about it
    /// after Dovecot's ~0.5 s notification batching.
    pub fn deliver(&self, user: &str, msg: &[u8]) -> Result<(), HarnessError> {
        validate_user_name(user)?;
        self.ensure_running()?;
        let mut cmd = Command::new(LDA_BIN);
        cmd.arg("-c").arg(&self.config_path).args(["-d", user]);
        self.run(cmd, Some(msg)).map(drop)
    }

    /// Save `msg` into `mailbox` of `user` (`doveadm save -m`). Fails if the
    /// mailbox does not exist (see [`Dovecot::create_mailbox`]).
    pub fn deliver_to(&self, user: &str, mailbox: &str, msg: &[u8]) -> Result<(), HarnessError> {
        validate_user_name(user)?;
        self.ensure_running()?;
        let mut cmd = self.doveadm();
        cmd.args(["save", "-u", user, "-m", mailbox]);
        self.run(cmd, Some(msg)).map(drop)
    }

    /// Create (and subscribe) `mailbox` for `user`; `mailbox` is UTF-8,
    /// hierarchy separator `.` (Maildir++). Creating an existing mailbox fails.
    pub fn create_mailbox(&self, user: &str, mailbox: &str) -> Result<(), HarnessError> {
        validate_user_name(user)?;
        self.ensure_running()?;
        let mut cmd = self.doveadm();
        cmd.args(["mailbox", "create", "-s", "-u", user, mailbox]);
        self.run(cmd, None).map(drop)
    }

    /// Number of messages in `mailbox` of `user` (`doveadm mailbox status`).
    pub fn message_count(&self, user: &str, mailbox: &str) -> Result<usize, HarnessError> {
        validate_user_name(user)?;
        self.ensure_running()?;
        let mut cmd = self.doveadm();
        cmd.args([
            "-f", "flow", "mailbox", "status", "-u", user, "messages", mailbox,
        ]);
        let out = self.run(cmd, None)?;
        let text = String::from_utf8_lossy(&out);
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix("messages=")?.parse().ok())
            .ok_or_else(|| {
                HarnessError::InvalidConfig(format!(
                    "cannot parse `doveadm mailbox status` output: {text:?}"
                ))
            })
    }

    /// Number of logged-in IMAP sessions of `user` as Dovecot's anvil sees
    /// them (`doveadm who -1`). Sessions are registered right after login
    /// and unregistered shortly after the connection closes, so poll with
    /// [`Dovecot::wait_for_connection_count`] when asserting.
    pub fn connection_count(&self, user: &str) -> Result<usize, HarnessError> {
        validate_user_name(user)?;
        Ok(self
            .who()?
            .into_iter()
            .filter(|(u, proto)| u == user && proto == "imap")
            .count())
    }

    /// All logged-in sessions as `(user, protocol)` pairs, one per connection.
    pub fn who(&self) -> Result<Vec<(String, String)>, HarnessError> {
        Ok(self
            .sessions()?
            .into_iter()
            .map(|s| (s.user, s.protocol))
            .collect())
    }

    /// All logged-in sessions, one per connection, with the client's address
    /// as Dovecot saw it (`doveadm who -1`: user, protocol, pid, ip).
    pub fn sessions(&self) -> Result<Vec<DovecotSession>, HarnessError> {
        self.ensure_running()?;
        let mut cmd = self.doveadm();
        cmd.args(["who", "-1"]);
        let out = self.run(cmd, None)?;
        let text = String::from_utf8_lossy(&out);
        Ok(text
            .lines()
            .skip(1) // header: "username proto pid ip"
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                Some(DovecotSession {
                    user: fields.next()?.to_string(),
                    protocol: fields.next()?.to_string(),
                    pid: fields
                        .next()
                        .and_then(|p| p.trim_matches(['(', ')']).parse().ok()),
                    ip: fields
                        .next()
                        .and_then(|ip| ip.trim_matches(['(', ')']).parse().ok()),
                })
            })
            .collect())
    }

    /// Poll [`Dovecot::connection_count`] until it equals `expected`; returns
    /// the last count on timeout as an error.
    pub fn wait_for_connection_count(
        &self,
        user: &str,
        expected: usize,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.connection_count(user)?;
            if n == expected {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "{user} has {n} IMAP sessions on the Dovecot side, expected {expected}"
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server and end every IMAP session, then return once the
    /// master has exited. Idempotent. Mail and config stay until drop, so
    /// [`Dovecot::restart`] can bring it back.
    ///
    /// Sessions are ended first with `doveadm kick '*'` (clients get
    /// `* BYE Server shutting down.`): after a plain SIGTERM to the master,
    /// logged-in `imap` processes linger ~10 s before saying BYE. Then
    /// SIGTERM to the master (its shutdown has a fixed 1 s pause), SIGKILL
    /// after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let mut kick = self.doveadm();
            kick.args(["kick", "*"]);
            // Fails harmlessly (exit 68) when nobody is logged in.
            let _ = system::run_command(&mut kick, None, Duration::from_secs(5));
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: plain syscall; `pid` is our own child that has not
                // been reaped yet (try_wait returned None), so it cannot have
                // been recycled.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }

    /// Stop and start again on the same ports, with the same config, CA and
    /// mail. Clients see their connections dropped and can reconnect.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        // The old imap-login processes may hold the listening sockets for a
        // moment after the master exits: retry on the same ports.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(ReadyError::PortInUse(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(ReadyError::PortInUse(msg)) | Err(ReadyError::Other(msg)) => {
                    return Err(self.startup_error(format!("restart: {msg}")))
                }
            }
        }
    }

    fn ensure_running(&self) -> Result<(), HarnessError> {
        if self.child.is_some() {
            Ok(())
        } else {
            Err(HarnessError::NotRunning)
        }
    }

    fn doveadm(&self) -> Command {
        let mut cmd = Command::new(DOVEADM_BIN);
        cmd.arg("-c").arg(&self.config_path);
        cmd
    }

    /// Run a helper command; its stdout on success.
    fn run(&self, mut cmd: Command, stdin: Option<&[u8]>) -> Result<Vec<u8>, HarnessError> {
        let desc = command_line(&cmd);
        let out = system::run_command(&mut cmd, stdin, COMMAND_TIMEOUT)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(out.into_error(desc))
        }
    }

    fn prepare_dir(&self, ids: UserIds) -> Result<(), HarnessError> {
        let mkdir = |name: &str, mode: u32| -> Result<PathBuf, HarnessError> {
            let p = self.dir.join(name);
            fs::create_dir(&p)
                .map_err(|e| HarnessError::io(format!("mkdir {}", p.display()), e))?;
            system::set_mode(&p, mode)?;
            Ok(p)
        };
        mkdir("run", 0o755)?;
        mkdir("state", 0o755)?;
        let home = mkdir("home", 0o755)?;
        system::chown(&home, ids)?;
        let tls = mkdir("tls", 0o755)?;
        system::write_file(&tls.join("server.pem"), self.pki.leaf_pem.as_bytes(), 0o644)?;
        system::write_file(
            &tls.join("server.key"),
            self.pki.leaf_key_pem.as_bytes(),
            0o600,
        )?;
        system::write_file(&tls.join("ca.pem"), self.pki.ca_pem.as_bytes(), 0o644)?;
        let passwd = render_passwd(&self.cfg, ids, &home);
        system::write_file(&self.dir.join("passwd"), passwd.as_bytes(), 0o644)?;
        Ok(())
    }

    fn write_config(&self) -> Result<(), HarnessError> {
        let instance_name = format!(
            "testkit-{}",
            self.dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(system::TEMP_PREFIX))
                .unwrap_or("x")
        );
        let text = render_config(
            &self.cfg,
            &Layout {
                dir: &self.dir,
                instance_name: &instance_name,
                imap_port: self.imap_port,
                imaps_port: self.imaps_port,
            },
        )?;
        system::write_file(&self.config_path, text.as_bytes(), 0o644)
    }

    /// Spawn the master and wait until it greets on both ports.
    fn launch(&mut self) -> Result<(), ReadyError> {
        let stderr_path = self.dir.join("stderr.log");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .map_err(|e| ReadyError::Other(format!("open {}: {e}", stderr_path.display())))?;
        let stdout = stderr
            .try_clone()
            .map_err(|e| ReadyError::Other(format!("dup stderr file: {e}")))?;
        let log_marks = self.log_file_lengths();
        let mut cmd = Command::new(DOVECOT_BIN);
        cmd.arg("-F")
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // Dovecot warns (and may run out of fds) when `ulimit -n` is below
        // what its client limits need; CI shells often have 1024.
        // SAFETY: getrlimit/setrlimit are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                raise_nofile_limit(65_536);
                Ok(())
            });
        }
        let child =
            system::spawn_tied_to_process(cmd).map_err(|e| ReadyError::Other(e.to_string()))?;
        self.pid = child.id();
        self.child = Some(child);
        let result = self.wait_ready(log_marks);
        if result.is_err() {
            self.stop();
        }
        result
    }

    fn wait_ready(&mut self, log_marks: [u64; 2]) -> Result<(), ReadyError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let exited = match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(format!("dovecot exited with {status}")),
                Some(Ok(None)) => None,
                Some(Err(e)) => Some(format!("waitpid: {e}")),
                None => Some("dovecot is not running".to_string()),
            };
            if let Some(msg) = exited {
                let new_log = self.log_since(log_marks);
                return Err(if new_log.contains("Address already in use") {
                    ReadyError::PortInUse(msg)
                } else {
                    ReadyError::Other(msg)
                });
            }
            let last = match self.probe() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(ReadyError::Other(format!(
                    "no greeting within {STARTUP_TIMEOUT:?}: {last}"
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Read the greeting on the plain port and, over TLS, on the TLS port.
    fn probe(&self) -> Result<(), String> {
        let timeout = Duration::from_secs(2);
        let stream = TcpStream::connect_timeout(&self.imap_addr(), timeout)
            .map_err(|e| format!("connect {}: {e}", self.imap_addr()))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| format!("set read timeout: {e}"))?;
        let greeting = read_greeting(stream)?;
        if !greeting.starts_with("* OK") {
            return Err(format!("unexpected greeting on plain port: {greeting:?}"));
        }
        let tls = connect_tls(self.imaps_addr(), &self.pki.ca_der, timeout)
            .map_err(|e| format!("TLS to {}: {e}", self.imaps_addr()))?;
        let greeting = read_greeting(tls)?;
        if !greeting.starts_with("* OK") {
            return Err(format!("unexpected greeting on TLS port: {greeting:?}"));
        }
        Ok(())
    }

    fn startup_error(&self, message: String) -> HarnessError {
        HarnessError::Startup {
            service: "Dovecot",
            message: format!("{message} (dir {})", self.dir.display()),
            log_tail: tail(&self.log(), 40),
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("TESTKIT_KEEP_DIR").is_some_and(|v| v != "0") {
            eprintln!("testkit: keeping {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Debug for Dovecot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dovecot")
            .field("dir", &self.dir)
            .field("imap_port", &self.imap_port)
            .field("imaps_port", &self.imaps_port)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

/// Best effort: raise RLIMIT_NOFILE (soft, and hard if privileged) to
/// `wanted`. Called between fork and exec, so no allocation.
fn raise_nofile_limit(wanted: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= wanted {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: lim.rlim_max.max(wanted),
    };
    // SAFETY: valid pointer; failure (unprivileged) is handled below.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let soft_only = libc::rlimit {
            rlim_cur: lim.rlim_max.min(wanted),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft_only) };
    }
}

/// Read one line; the caller has set a read timeout on the socket.
fn read_greeting(stream: impl Read) -> Result<String, String> {
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("read greeting: {e}"))?;
    Ok(line)
}

/// Two distinct free loopback ports (the listeners are dropped before
/// Dovecot binds them: a tiny race, handled by retrying).
fn free_port_pair() -> Result<(u16, u16), HarnessError> {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| HarnessError::io("bind 127.0.0.1:0 to find a free port", e))
    };
    let (p1, _l1) = bind()?;
    let (p2, _l2) = bind()?;
    Ok((p1, p2))
}

/// A rustls client config (ring provider) trusting only `ca_der`.
pub fn client_config_for(ca_der: &[u8]) -> Result<Arc<rustls::ClientConfig>, HarnessError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| HarnessError::Certificate(format!("add test CA to root store: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HarnessError::Certificate(format!("rustls protocol versions: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

fn connect_tls(
    addr: SocketAddr,
    ca_der: &[u8],
    timeout: Duration,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, HarnessError> {
    let config = client_config_for(ca_der)?;
    let name = rustls_pki_types::ServerName::try_from("localhost")
        .map_err(|e| HarnessError::Certificate(format!("server name: {e}")))?;
    let conn = rustls::ClientConnection::new(config, name)
        .map_err(|e| HarnessError::Certificate(format!("rustls client: {e}")))?;
    let sock = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| HarnessError::io(format!("connect {addr}"), e))?;
    sock.set_read_timeout(Some(timeout))
        .and_then(|()| sock.set_write_timeout(Some(timeout)))
        .map_err(|e| HarnessError::io("set socket timeouts", e))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| HarnessError::io(format!("TLS handshake with {addr}"), e))?;
    }
    Ok(tls)
}
