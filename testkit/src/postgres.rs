//! [`Postgres`]: a private PostgreSQL server for one test, on loopback, in a
//! temp dir, as a child of the test process.
//!
//! `initdb` and `postgres` refuse to run as root, so both run as the system
//! user `postgres` (created by Debian's `postgresql-common`): the harness
//! drops to its uid and gid between fork and exec, the way `runuser -u
//! postgres --` would, minus the PAM session and the extra process, so the PID
//! the harness holds is the postmaster's own.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::system::{self, command_line, tail, UserIds};
use crate::HarnessError;

/// Where Debian installs each PostgreSQL major version: `<dir>/<version>/bin`.
pub const POSTGRES_LIB_DIR: &str = "/usr/lib/postgresql";
/// The unprivileged system user the server runs as.
pub const POSTGRES_USER: &str = "postgres";
/// The database [`Postgres::url`] names.
pub const POSTGRES_DATABASE: &str = "imap_push";
/// The role (with a password) [`Postgres::url`] names; it owns the database.
pub const POSTGRES_ROLE: &str = "imap_push";
/// How long [`Postgres::start`] waits for the server to accept queries.
pub const POSTGRES_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `initdb` writes a few MB; with `--no-sync` it takes about a second.
const INITDB_TIMEOUT: Duration = Duration::from_secs(60);
/// One `psql` invocation.
const PSQL_TIMEOUT: Duration = Duration::from_secs(30);
/// After SIGINT (a fast shutdown: sessions are ended), SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with fresh ports when a port was grabbed by someone else.
const PORT_ATTEMPTS: usize = 3;
/// Connections the server accepts; a test cluster of a few nodes with small
/// pools stays far below it.
const MAX_CONNECTIONS: u32 = 200;
/// Length in bytes of the random password (hex, so URL-safe as is).
const PASSWORD_BYTES: usize = 16;

/// A running PostgreSQL on `127.0.0.1:port`, its Unix socket in its temp dir,
/// with a database [`POSTGRES_DATABASE`] owned by the role [`POSTGRES_ROLE`]
/// (random password). `fsync` is off: a test's data need not survive a power
/// cut. Stopped (SIGINT, then SIGKILL, by PID) and its dir removed on drop;
/// it also gets SIGTERM if the test process dies. `TESTKIT_KEEP_DIR=1` keeps
/// the dir (data and `postgres.log`).
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    child: Option<Child>,
}

/// The newest `/usr/lib/postgresql/<version>/bin` that holds `initdb`,
/// `postgres` and `psql`.
pub fn postgres_bin_dir() -> Result<PathBuf, HarnessError> {
    let missing = || HarnessError::NotInstalled {
        missing: Path::new(POSTGRES_LIB_DIR).join("VERSION/bin/initdb"),
    };
    let entries = fs::read_dir(POSTGRES_LIB_DIR).map_err(|_| missing())?;
    let mut found: Vec<(Vec<u32>, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            let complete = ["initdb", "postgres", "psql"]
                .iter()
                .all(|b| bin.join(b).is_file());
            complete.then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(missing)
}

/// True if PostgreSQL's programs and its system user are there.
pub fn postgres_available() -> bool {
    postgres_bin_dir().is_ok() && matches!(system::lookup_user(POSTGRES_USER), Ok(Some(_)))
}

impl Postgres {
    /// initdb in a fresh temp dir, start the server, create the role and the
    /// database. Returns once the role can be used; gives up after
    /// [`POSTGRES_STARTUP_TIMEOUT`]. Fails with [`HarnessError::NotInstalled`]
    /// when PostgreSQL is missing.
    pub fn start() -> Result<Postgres, HarnessError> {
        let bin = postgres_bin_dir()?;
        let ids = system::lookup_user(POSTGRES_USER)?.ok_or_else(|| {
            HarnessError::InvalidConfig(format!(
                "no system user {POSTGRES_USER} (Debian's postgresql package creates it)"
            ))
        })?;
        let dir = system::create_temp_dir_with("testkit-postgres-")?;
        // From here on `Drop` cleans the directory up on any error.
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            password: system::random_hex(PASSWORD_BYTES)?,
            child: None,
        };
        system::chown(&pg.dir, ids)?;
        system::set_mode(&pg.dir, 0o700)?;
        pg.initdb(ids)?;
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            pg.port = system::free_port()?;
            match pg.launch(ids) {
                Ok(()) => {
                    pg.create_role_and_database()?;
                    return Ok(pg);
                }
                Err(Launch::PortInUse(msg)) => last_error = msg,
                Err(Launch::Failed(msg)) => return Err(pg.startup_error(msg)),
            }
        }
        Err(pg.startup_error(format!(
            "no free port after {PORT_ATTEMPTS} attempts: {last_error}"
        )))
    }

    /// `postgres://imap_push:PASSWORD@127.0.0.1:PORT/imap_push`. Holds the
    /// password: never print it.
    pub fn url(&self) -> String {
        format!(
            "postgres://{POSTGRES_ROLE}:{}@127.0.0.1:{}/{POSTGRES_DATABASE}",
            self.password, self.port
        )
    }

    /// The role's password (hex).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The temp dir: `data/` (the cluster), the Unix socket, `postgres.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PID of the postmaster (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The server's log (its stderr).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// Run `sql` as the superuser in [`POSTGRES_DATABASE`] (over the Unix
    /// socket) and return the rows, unaligned, `|`-separated, one per line.
    pub fn psql(&self, sql: &str) -> Result<String, HarnessError> {
        if self.child.is_none() {
            return Err(HarnessError::NotRunning);
        }
        let mut cmd = self.psql_command(POSTGRES_DATABASE);
        cmd.args(["-c", sql]);
        let desc = command_line(&cmd);
        let out = system::run_command(&mut cmd, None, PSQL_TIMEOUT)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(out.into_error(desc))
        }
    }

    /// Fast shutdown (SIGINT: sessions are ended, then the server exits), by
    /// PID; SIGKILL after 10 s. Idempotent; the data stay until drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            system::stop_child(&mut child, libc::SIGINT, STOP_TIMEOUT);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn initdb(&self, ids: UserIds) -> Result<(), HarnessError> {
        let mut cmd = Command::new(self.bin.join("initdb"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", POSTGRES_USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            // The superuser is reachable only over the socket in our 0700 dir;
            // TCP needs the role's password.
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .current_dir(&self.dir)
            .uid(ids.uid)
            .gid(ids.gid);
        let desc = command_line(&cmd);
        let out = system::run_command(&mut cmd, None, INITDB_TIMEOUT)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(out.into_error(desc))
        }
    }

    fn launch(&mut self, ids: UserIds) -> Result<(), Launch> {
        let log_mark = fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| Launch::Failed(format!("open postgres.log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Launch::Failed(format!("dup log file: {e}")))?;
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.dir)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "logging_collector=off"])
            .args(["-c", &format!("max_connections={MAX_CONNECTIONS}")])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // std drops to these ids before the spawner's PR_SET_PDEATHSIG
            // (a change of uid clears it), so the death signal stays set.
            .uid(ids.uid)
            .gid(ids.gid);
        let child =
            system::spawn_tied_to_process(cmd).map_err(|e| Launch::Failed(e.to_string()))?;
        self.child = Some(child);
        let result = self.wait_ready(log_mark);
        if result.is_err() {
            self.stop();
        }
        result
    }

    /// Until `SELECT 1` works over the socket (the server answers "starting
    /// up" before), or the postmaster exits.
    fn wait_ready(&mut self, log_mark: u64) -> Result<(), Launch> {
        let deadline = Instant::now() + POSTGRES_STARTUP_TIMEOUT;
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(format!("postgres exited with {status}")),
                Some(Err(e)) => Some(format!("waitpid: {e}")),
                None => Some("postgres is not running".to_string()),
            };
            if let Some(msg) = exited {
                let log = self.log();
                let new = log
                    .get(usize::try_from(log_mark).unwrap_or(0)..)
                    .unwrap_or("");
                return Err(if new.contains("could not bind") {
                    Launch::PortInUse(msg)
                } else {
                    Launch::Failed(msg)
                });
            }
            let mut probe = self.psql_command("postgres");
            probe.args(["-c", "SELECT 1"]).env("PGCONNECT_TIMEOUT", "2");
            let last = match system::run_command(&mut probe, None, Duration::from_secs(5)) {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Launch::Failed(format!(
                    "no answer to SELECT 1 within {POSTGRES_STARTUP_TIMEOUT:?}: {last}"
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_role_and_database(&self) -> Result<(), HarnessError> {
        let mut cmd = self.psql_command("postgres");
        // The password is hex: no quoting issue. Each -c is its own
        // transaction (CREATE DATABASE refuses to run inside one).
        cmd.args([
            "-c",
            &format!(
                "CREATE ROLE {POSTGRES_ROLE} LOGIN PASSWORD '{}'",
                self.password
            ),
            "-c",
            &format!("CREATE DATABASE {POSTGRES_DATABASE} OWNER {POSTGRES_ROLE}"),
        ]);
        let out = system::run_command(&mut cmd, None, PSQL_TIMEOUT)?;
        if out.status.success() {
            Ok(())
        } else {
            // The command line holds the password: name it without.
            Err(out.into_error("psql -c CREATE ROLE ... -c CREATE DATABASE ..."))
        }
    }

    /// `psql` as the superuser over the Unix socket: unaligned, tuples only,
    /// no `~/.psqlrc`, stop at the first error.
    fn psql_command(&self, database: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                POSTGRES_USER,
                "-d",
                database,
            ])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    fn startup_error(&self, message: String) -> HarnessError {
        HarnessError::Startup {
            service: "PostgreSQL",
            message: format!("{message} (dir {})", self.dir.display()),
            log_tail: tail(&self.log(), 40),
        }
    }
}

enum Launch {
    /// The port was taken: try another.
    PortInUse(String),
    Failed(String),
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("TESTKIT_KEEP_DIR").is_some_and(|v| v != "0") {
            eprintln!("testkit: keeping {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}
