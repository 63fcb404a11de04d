//! [`Haproxy`]: the shipped `deploy/haproxy.cfg`, run in the foreground on
//! loopback in front of a test's nodes.
//!
//! The test's config is derived from the shipped file, never written by hand,
//! so the balancing, health checks, PROXY header and timeouts a test sees are
//! the ones operators get. [`derive_haproxy_config`] replaces only what names
//! the host: the process settings of `global` listed in
//! [`HOST_ONLY_GLOBAL_KEYWORDS`], the frontend's `bind` lines (one loopback
//! port, plain HTTP) and the backend's `server` lines (the test's nodes, each
//! with the options of the shipped file's first `server` line).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::system::{self, command_line, tail};
use crate::HarnessError;

/// Path of the HAProxy binary (Debian's `haproxy`).
pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";
/// `deploy/haproxy.cfg` as shipped.
pub const SHIPPED_HAPROXY_CFG: &str = include_str!("../../deploy/haproxy.cfg");
/// `global` settings that name the host (log socket, chroot, stats socket, user,
/// going to the background): dropped for a test, which runs HAProxy in the
/// foreground as its own child.
pub const HOST_ONLY_GLOBAL_KEYWORDS: [&str; 7] = [
    "log", "chroot", "stats", "user", "group", "daemon", "pidfile",
];

/// How long `start` and `restart` wait for the frontend to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// `haproxy -c` of the derived file.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// After SIGTERM (HAProxy's hard stop), SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with fresh ports when a port was grabbed by someone else.
const PORT_ATTEMPTS: usize = 3;

/// True if HAProxy is installed.
pub fn haproxy_available() -> bool {
    Path::new(HAPROXY_BIN).is_file()
}

/// The config a test runs: `shipped` with its `bind` lines replaced by one
/// `bind <listen>`, its `server` lines by one line per `(name, address)` of
/// `servers` (with the options of the first shipped `server` line), and the
/// host-only `global` lines dropped. Everything else is kept byte for byte.
///
/// Fails if `shipped` has no `bind` line, no `server` line, or `server` lines
/// in more than one section (which one the nodes belong to would be a guess).
pub fn derive_haproxy_config(
    shipped: &str,
    listen: SocketAddr,
    servers: &[(&str, SocketAddr)],
) -> Result<String, HarnessError> {
    let invalid = |msg: &str| HarnessError::InvalidConfig(format!("haproxy.cfg: {msg}"));
    let mut out = String::with_capacity(shipped.len());
    let mut section = String::new();
    let mut bind_done = false;
    let mut server_section: Option<String> = None;
    for line in shipped.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        let indented = line.starts_with([' ', '\t']);
        if !indented && !first.is_empty() && !first.starts_with('#') {
            section = line.trim().to_string();
        }
        let kind = section.split_whitespace().next().unwrap_or("");
        if kind == "global" && indented && HOST_ONLY_GLOBAL_KEYWORDS.contains(&first) {
            continue;
        }
        if first == "bind" && indented {
            if !bind_done {
                out.push_str(&format!("    bind {listen}\n"));
                bind_done = true;
            }
            continue;
        }
        if first == "server" && indented {
            match &server_section {
                Some(s) if *s != section => {
                    return Err(invalid("server lines in more than one section"))
                }
                Some(_) => {}
                None => {
                    // `server NAME ADDRESS OPTIONS...`: keep the options.
                    let options: Vec<&str> = words.skip(2).collect();
                    for (name, addr) in servers {
                        out.push_str(&format!("    server {name} {addr}"));
                        for option in &options {
                            out.push(' ');
                            out.push_str(option);
                        }
                        out.push('\n');
                    }
                    server_section = Some(section.clone());
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !bind_done {
        return Err(invalid("no bind line"));
    }
    if server_section.is_none() {
        return Err(invalid("no server line"));
    }
    Ok(out)
}

/// A running HAProxy (`haproxy -f CFG -db`: foreground, as a child of the test
/// process) on `127.0.0.1:port`, with a config derived from the shipped one.
/// Stopped (SIGTERM by PID, then SIGKILL) and its dir removed on drop; it also
/// gets SIGTERM if the test process dies.
pub struct Haproxy {
    dir: PathBuf,
    shipped: String,
    port: u16,
    config: String,
    child: Option<Child>,
}

impl Haproxy {
    /// Start the shipped config in front of `servers` (`(name, address)`).
    pub fn start(servers: &[(&str, SocketAddr)]) -> Result<Haproxy, HarnessError> {
        Haproxy::start_with(SHIPPED_HAPROXY_CFG, servers)
    }

    /// Start `shipped` (a config in the shipped file's shape) in front of
    /// `servers`. Returns once the frontend accepts connections; the health
    /// checks may not have run yet.
    pub fn start_with(
        shipped: &str,
        servers: &[(&str, SocketAddr)],
    ) -> Result<Haproxy, HarnessError> {
        if !haproxy_available() {
            return Err(HarnessError::NotInstalled {
                missing: PathBuf::from(HAPROXY_BIN),
            });
        }
        let dir = system::create_temp_dir_with("testkit-haproxy-")?;
        let mut proxy = Haproxy {
            dir,
            shipped: shipped.to_string(),
            port: 0,
            config: String::new(),
            child: None,
        };
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            proxy.port = system::free_port()?;
            match proxy.launch(servers) {
                Ok(()) => return Ok(proxy),
                Err(Launch::PortInUse(msg)) => last_error = msg,
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(proxy.startup_error(format!(
            "no free port after {PORT_ATTEMPTS} attempts: {last_error}"
        )))
    }

    /// Stop and start again on the same port with another server list.
    /// Connections in flight are cut.
    pub fn restart(&mut self, servers: &[(&str, SocketAddr)]) -> Result<(), HarnessError> {
        self.stop();
        // The old listener may linger for a moment after the process exits.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match self.launch(servers) {
                Ok(()) => return Ok(()),
                Err(Launch::PortInUse(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100))
                }
                Err(Launch::PortInUse(msg)) => {
                    return Err(self.startup_error(format!("restart: {msg}")))
                }
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
    }

    /// `127.0.0.1:port`: the API of the cluster.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The frontend's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The config HAProxy runs now.
    pub fn config_text(&self) -> &str {
        &self.config
    }

    /// The temp dir: `haproxy.cfg` and `haproxy.log` (HAProxy's stderr).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// HAProxy's stderr (alerts and warnings).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.join("haproxy.log")).unwrap_or_default())
            .into_owned()
    }

    /// PID of the HAProxy process (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM (hard stop) by PID, SIGKILL after 10 s. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            system::stop_child(&mut child, libc::SIGTERM, STOP_TIMEOUT);
        }
    }

    fn launch(&mut self, servers: &[(&str, SocketAddr)]) -> Result<(), Launch> {
        self.config =
            derive_haproxy_config(&self.shipped, self.addr(), servers).map_err(Launch::Failed)?;
        let path = self.dir.join("haproxy.cfg");
        system::write_file(&path, self.config.as_bytes(), 0o644).map_err(Launch::Failed)?;
        self.check(&path).map_err(Launch::Failed)?;
        let log_path = self.dir.join("haproxy.log");
        let log_mark = fs::metadata(&log_path).map_or(0, |m| m.len());
        let open = || {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| Launch::Failed(HarnessError::io("open haproxy.log", e)))
        };
        let mut cmd = Command::new(HAPROXY_BIN);
        cmd.arg("-f")
            .arg(&path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?);
        let child = system::spawn_tied_to_process(cmd).map_err(Launch::Failed)?;
        self.child = Some(child);
        let result = self.wait_ready(log_mark);
        if result.is_err() {
            self.stop();
        }
        result
    }

    /// `haproxy -c`: a derived config HAProxy refuses fails here, with its
    /// complaint, rather than as a process that exited.
    fn check(&self, path: &Path) -> Result<(), HarnessError> {
        let mut cmd = Command::new(HAPROXY_BIN);
        cmd.arg("-c").arg("-f").arg(path);
        let desc = command_line(&cmd);
        let out = system::run_command(&mut cmd, None, CHECK_TIMEOUT)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(out.into_error(desc))
        }
    }

    fn wait_ready(&mut self, log_mark: u64) -> Result<(), Launch> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log = self.log();
                let new = log
                    .get(usize::try_from(log_mark).unwrap_or(0)..)
                    .unwrap_or("");
                let msg = format!("haproxy exited with {status}");
                return Err(if new.contains("cannot bind socket") {
                    Launch::PortInUse(msg)
                } else {
                    Launch::Failed(self.startup_error(msg))
                });
            }
            let last = match TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(Launch::Failed(self.startup_error(format!(
                    "port {} not accepting within {STARTUP_TIMEOUT:?}: {last}",
                    self.port
                ))));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn startup_error(&self, message: String) -> HarnessError {
        HarnessError::Startup {
            service: "HAProxy",
            message: format!("{message} (dir {})", self.dir.display()),
            log_tail: tail(&self.log(), 40),
        }
    }
}

enum Launch {
    /// The port was taken: try another.
    PortInUse(String),
    Failed(HarnessError),
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("TESTKIT_KEEP_DIR").is_some_and(|v| v != "0") {
            eprintln!("testkit: keeping {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Debug for Haproxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Haproxy")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}
