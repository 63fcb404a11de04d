//! [`Nginx`]: the shipped `deploy/nginx-cluster.conf`, run in the foreground on loopback
//! (TLS, a generated certificate) in front of a test's nodes.
//!
//! The shipped file is an `http`-block fragment. The config nginx runs is derived from it,
//! never written by hand ([`derive_nginx_config`]): only the lines that name the host
//! change (`listen`, the certificate paths, the upstream's `server` lines, which keep the
//! shipped options). A minimal main config around it holds what the test owns (pid file,
//! error log, temp paths, foreground).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::system::{self, command_line, tail};
use crate::{HarnessError, TestPki};

/// Path of the nginx binary (Debian's `nginx-light`).
pub const NGINX_BIN: &str = "/usr/sbin/nginx";
/// `deploy/nginx-cluster.conf` as shipped.
pub const SHIPPED_NGINX_CONF: &str = include_str!("../../deploy/nginx-cluster.conf");

/// How long `start` and `restart` wait for the listener.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// `nginx -t` of the derived file.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// After SIGTERM (nginx's fast shutdown), SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// True if nginx is installed.
pub fn nginx_available() -> bool {
    Path::new(NGINX_BIN).is_file()
}

/// `shipped` with its `listen` line on `127.0.0.1:port` (TLS), its certificate paths
/// `cert` and `key`, and the upstream's `server` lines replaced by one per node of `nodes`
/// (with the options of the first shipped `server` line); every other line byte for byte.
///
/// Fails if `shipped` has no `listen` line or no `server` line in an `upstream` block.
pub fn derive_nginx_config(
    shipped: &str,
    port: u16,
    cert: &Path,
    key: &Path,
    nodes: &[SocketAddr],
) -> Result<String, HarnessError> {
    let invalid = |msg: &str| HarnessError::InvalidConfig(format!("nginx-cluster.conf: {msg}"));
    let mut out = String::with_capacity(shipped.len());
    let mut listen_done = false;
    let mut servers_done = false;
    let mut in_upstream = false;
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        let first = trimmed.split_whitespace().next().unwrap_or("");
        if first == "upstream" {
            in_upstream = true;
        } else if in_upstream && trimmed.starts_with('}') {
            in_upstream = false;
        }
        match first {
            "listen" => {
                out.push_str(&format!("    listen 127.0.0.1:{port} ssl;\n"));
                listen_done = true;
            }
            "ssl_certificate" => {
                out.push_str(&format!("    ssl_certificate {};\n", cert.display()))
            }
            "ssl_certificate_key" => {
                out.push_str(&format!("    ssl_certificate_key {};\n", key.display()))
            }
            "server" if in_upstream => {
                if !servers_done {
                    // `server HOST:PORT OPTIONS...;`: keep the options.
                    let options: Vec<&str> = trimmed.split_whitespace().skip(2).collect();
                    let options = options.join(" ");
                    for node in nodes {
                        out.push_str(&format!("    server {node} {options}\n"));
                    }
                    servers_done = true;
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !listen_done {
        return Err(invalid("no listen line"));
    }
    if !servers_done {
        return Err(invalid("no server line in an upstream block"));
    }
    Ok(out)
}

/// A running nginx (master and one worker, `daemon off`, a child of the test process) on
/// `127.0.0.1:port` over TLS with a certificate of [`Nginx::pki`]. Stopped (SIGTERM by
/// PID, then SIGKILL) and its dir removed on drop; it also gets SIGTERM if the test
/// process dies.
pub struct Nginx {
    dir: PathBuf,
    pki: TestPki,
    port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// Starts the shipped config in front of `nodes`; returns once it accepts connections.
    pub fn start(nodes: &[SocketAddr]) -> Result<Nginx, HarnessError> {
        if !nginx_available() {
            return Err(HarnessError::NotInstalled {
                missing: PathBuf::from(NGINX_BIN),
            });
        }
        let dir = system::create_temp_dir_with("testkit-nginx-")?;
        let pki = TestPki::generate()?;
        system::write_file(&dir.join("cert.pem"), pki.leaf_pem.as_bytes(), 0o644)?;
        system::write_file(&dir.join("key.pem"), pki.leaf_key_pem.as_bytes(), 0o600)?;
        let mut nginx = Nginx {
            dir,
            pki,
            port: system::free_port()?,
            child: None,
        };
        nginx.launch(nodes)?;
        Ok(nginx)
    }

    /// Stops and starts again on the same port in front of `nodes`.
    pub fn restart(&mut self, nodes: &[SocketAddr]) -> Result<(), HarnessError> {
        self.stop();
        // The old listener may linger for a moment after the process exits.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(self.addr()).is_ok() {
            if Instant::now() >= deadline {
                return Err(self.startup_error("the old nginx still listens".into()));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.launch(nodes)
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The CA and certificate nginx serves (server name `localhost`).
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// nginx's error log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// PID of the master process (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM (fast shutdown) by PID, SIGKILL after 10 s. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            system::stop_child(&mut child, libc::SIGTERM, STOP_TIMEOUT);
        }
    }

    fn launch(&mut self, nodes: &[SocketAddr]) -> Result<(), HarnessError> {
        let dir = &self.dir;
        let cluster = derive_nginx_config(
            SHIPPED_NGINX_CONF,
            self.port,
            &dir.join("cert.pem"),
            &dir.join("key.pem"),
            nodes,
        )?;
        system::write_file(&dir.join("cluster.conf"), cluster.as_bytes(), 0o644)?;
        let d = dir.display();
        // Workers run as the test's user (root here) so that they may use the temp dir;
        // nginx only warns when the master is not root.
        let main = format!(
            "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    \
             proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
             uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    \
             include {d}/cluster.conf;\n}}\n"
        );
        let conf = dir.join("nginx.conf");
        system::write_file(&conf, main.as_bytes(), 0o644)?;
        // `nginx -t`: a config nginx refuses fails here, with its complaint.
        let mut check = Command::new(NGINX_BIN);
        check.arg("-t").arg("-p").arg(dir).arg("-c").arg(&conf);
        let desc = command_line(&check);
        let out = system::run_command(&mut check, None, CHECK_TIMEOUT)?;
        if !out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("successful") {
            return Err(out.into_error(desc));
        }
        let mut cmd = Command::new(NGINX_BIN);
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(system::spawn_tied_to_process(cmd)?);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(self.startup_error(format!("nginx exited with {status}")));
            }
            if TcpStream::connect(self.addr()).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(self.startup_error(format!(
                    "port {} not accepting within {STARTUP_TIMEOUT:?}",
                    self.port
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn startup_error(&self, message: String) -> HarnessError {
        HarnessError::Startup {
            service: "nginx",
            message: format!("{message} (dir {})", self.dir.display()),
            log_tail: tail(&self.log(), 40),
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("TESTKIT_KEEP_DIR").is_some_and(|v| v != "0") {
            eprintln!("testkit: keeping {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Debug for Nginx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nginx")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}
