//! Host-level plumbing: the `vmail` user, inotify limits, temp dirs, running
//! helper commands with a timeout, and spawning Dovecot so that it dies with
//! the test process.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::HarnessError;

/// Name of the system user the IMAP processes run as.
pub const MAIL_USER: &str = "vmail";

/// Prefix of every temp dir the harness creates in `/tmp` for Dovecot.
pub(crate) const TEMP_PREFIX: &str = "testkit-dovecot-";
/// Prefixes of the temp dirs of the other services (`testkit-<kind>-<pid>-...`);
/// the stale-dir sweep knows them all.
const TEMP_PREFIXES: [&str; 4] = [
    TEMP_PREFIX,
    "testkit-postgres-",
    "testkit-haproxy-",
    "testkit-nginx-",
];

/// uid/gid of a Unix user.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

/// Look a user up with the re-entrant `getpwnam_r` (tests are multi-threaded).
pub(crate) fn lookup_user(name: &str) -> Result<Option<UserIds>, HarnessError> {
    let cname = CString::new(name)
        .map_err(|_| HarnessError::InvalidConfig(format!("user name {name:?} contains NUL")))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: `pwd` is plain data, fully written by getpwnam_r on success.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the duration of the call and
        // `buf.len()` is the real size of `buf`.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1024 * 1024 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(HarnessError::io(
                format!("getpwnam_r({name})"),
                io::Error::from_raw_os_error(rc),
            ));
        }
        if result.is_null() {
            return Ok(None);
        }
        return Ok(Some(UserIds {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        }));
    }
}

/// Make sure the `vmail` system user exists and return its ids.
///
/// Dovecot's `imap` refuses to run as root, so mail is owned by `vmail`.
/// Safe to call concurrently from threads (a mutex) and processes (an
/// `flock` on `/tmp/testkit-useradd.lock`); "already exists" counts as
/// success.
pub(crate) fn ensure_mail_user() -> Result<UserIds, HarnessError> {
    static CACHE: OnceLock<UserIds> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    if let Some(ids) = CACHE.get() {
        return Ok(*ids);
    }
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ids) = lookup_user(MAIL_USER)? {
        return Ok(*CACHE.get_or_init(|| ids));
    }
    let lock_path = "/tmp/testkit-useradd.lock";
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(|e| HarnessError::io(format!("open {lock_path}"), e))?;
    let fd = std::os::unix::io::AsRawFd::as_raw_fd(&lock_file);
    // SAFETY: fd is a valid open file descriptor owned by `lock_file`.
    if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
        return Err(HarnessError::io(
            format!("flock {lock_path}"),
            io::Error::last_os_error(),
        ));
    }
    // The lock is released when `lock_file` is dropped.
    if let Some(ids) = lookup_user(MAIL_USER)? {
        return Ok(*CACHE.get_or_init(|| ids));
    }
    let mut cmd = Command::new("useradd");
    cmd.args([
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        MAIL_USER,
    ]);
    let out = run_command(&mut cmd, None, Duration::from_secs(30))?;
    // 9 = "username already in use" (another process won the race).
    if !(out.status.success() || out.status.code() == Some(9)) {
        return Err(out.into_error("useradd --system --no-create-home vmail"));
    }
    drop(lock_file);
    match lookup_user(MAIL_USER)? {
        Some(ids) => Ok(*CACHE.get_or_init(|| ids)),
        None => Err(HarnessError::InvalidConfig(format!(
            "user {MAIL_USER} still missing after useradd"
        ))),
    }
}

/// Raise `fs.inotify.max_user_instances` to at least `wanted`.
///
/// Every IMAP process in IDLE holds one inotify instance, and all of them run
/// as the same Unix user (`vmail`, shared by every Dovecot the tests start).
/// Past the limit (128 by default) Dovecot silently falls back to polling
/// every `mailbox_idle_check_interval` (30 s). Best effort: failures (not
/// root, read-only /proc) are ignored. Returns the value in effect afterwards,
/// if it could be read.
pub fn raise_inotify_instances(wanted: u64) -> Option<u64> {
    raise_proc_sys("/proc/sys/fs/inotify/max_user_instances", wanted)
}

/// Raise `fs.inotify.max_user_watches` to at least `wanted` (best effort, like
/// [`raise_inotify_instances`]).
pub fn raise_inotify_watches(wanted: u64) -> Option<u64> {
    raise_proc_sys("/proc/sys/fs/inotify/max_user_watches", wanted)
}

fn raise_proc_sys(path: &str, wanted: u64) -> Option<u64> {
    let read = || -> Option<u64> { fs::read_to_string(path).ok()?.trim().parse().ok() };
    let current = read()?;
    if current >= wanted {
        return Some(current);
    }
    let _ = fs::write(path, format!("{wanted}\n"));
    read()
}

/// Captured result of a helper command.
pub(crate) struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    pub fn into_error(self, command: impl Into<String>) -> HarnessError {
        HarnessError::Command {
            command: command.into(),
            status: self.status.code(),
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
        }
    }
}

/// Run a command to completion, feeding `stdin`, capturing output, and
/// killing it (by its PID, via `Child::kill`) if it exceeds `timeout`.
pub(crate) fn run_command(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<CommandOutput, HarnessError> {
    let desc = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| HarnessError::io(format!("spawn {desc}"), e))?;
    let child_stdin = child.stdin.take();
    let mut child_stdout = child.stdout.take();
    let mut child_stderr = child.stderr.take();
    thread::scope(|s| {
        let writer = s.spawn(move || -> io::Result<()> {
            if let (Some(mut w), Some(data)) = (child_stdin, stdin) {
                w.write_all(data)?;
            }
            Ok(())
        });
        let out_reader = s.spawn(move || {
            let mut v = Vec::new();
            if let Some(r) = child_stdout.as_mut() {
                let _ = r.read_to_end(&mut v);
            }
            v
        });
        let err_reader = s.spawn(move || {
            let mut v = Vec::new();
            if let Some(r) = child_stderr.as_mut() {
                let _ = r.read_to_end(&mut v);
            }
            v
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Ok(st),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    break child.wait();
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => break Err(e),
            }
        };
        let write_result = writer.join();
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let status = status.map_err(|e| HarnessError::io(format!("wait for {desc}"), e))?;
        // A write error (EPIPE) only matters if the command claims success.
        if status.success() {
            if let Ok(Err(e)) = write_result {
                return Err(HarnessError::io(format!("write stdin of {desc}"), e));
            }
        }
        Ok(CommandOutput {
            status,
            stdout,
            stderr,
        })
    })
}

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Spawn a long-running server process that gets SIGTERM when the test
/// process dies, even if `Drop` never runs (panic=abort, SIGKILL, `exit`).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, and test
/// threads come and go, so all spawns go through one process-lifetime thread.
pub fn spawn_tied_to_process(mut cmd: Command) -> Result<Child, HarnessError> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let desc = format!("{cmd:?}");
    // SAFETY: getpid is always safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only calls async-signal-safe functions (prctl,
    // getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::other("test process exited during spawn"));
            }
            Ok(())
        });
    }
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let spawned = thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            // Without the thread, requests fail with a clear error below.
            eprintln!("testkit: cannot start spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let send_result = sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(SpawnRequest {
            cmd,
            reply: reply_tx,
        });
    if send_result.is_err() {
        return Err(HarnessError::io(
            format!("spawn {desc}"),
            io::Error::other("testkit spawner thread is gone"),
        ));
    }
    match reply_rx.recv() {
        Ok(res) => res.map_err(|e| HarnessError::io(format!("spawn {desc}"), e)),
        Err(_) => Err(HarnessError::io(
            format!("spawn {desc}"),
            io::Error::other("testkit spawner thread is gone"),
        )),
    }
}

/// Create a fresh, world-traversable (0755) directory under /tmp named
/// `testkit-dovecot-<pid>-<n>-<random>`.
pub(crate) fn create_temp_dir() -> Result<PathBuf, HarnessError> {
    create_temp_dir_with(TEMP_PREFIX)
}

/// Like [`create_temp_dir`], with one of [`TEMP_PREFIXES`].
pub(crate) fn create_temp_dir_with(prefix: &str) -> Result<PathBuf, HarnessError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    debug_assert!(TEMP_PREFIXES.contains(&prefix));
    remove_stale_temp_dirs();
    let pid = std::process::id();
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut rnd = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rnd)
            .map_err(|_| HarnessError::io("random", io::Error::other("SystemRandom failed")))?;
        let path = PathBuf::from(format!(
            "/tmp/{prefix}{pid}-{n}-{:08x}",
            u32::from_be_bytes(rnd)
        ));
        match fs::create_dir(&path) {
            Ok(()) => {
                set_mode(&path, 0o755)?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(HarnessError::io(format!("mkdir {}", path.display()), e)),
        }
    }
    Err(HarnessError::io(
        "create temp dir",
        io::Error::other("too many name collisions"),
    ))
}

/// Once per process: delete temp dirs left behind by test processes that no
/// longer exist (their Dovecot died with them thanks to PDEATHSIG). Only
/// directories are removed; no process is touched.
fn remove_stale_temp_dirs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(entries) = fs::read_dir("/tmp") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| {
                TEMP_PREFIXES
                    .iter()
                    .find_map(|prefix| n.strip_prefix(prefix))
            }) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            // SAFETY: kill with signal 0 only checks for existence.
            let dead = unsafe { libc::kill(pid, 0) } != 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if dead {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    });
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), HarnessError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| HarnessError::io(format!("chmod {mode:o} {}", path.display()), e))
}

pub(crate) fn chown(path: &Path, ids: UserIds) -> Result<(), HarnessError> {
    std::os::unix::fs::chown(path, Some(ids.uid), Some(ids.gid))
        .map_err(|e| HarnessError::io(format!("chown {}", path.display()), e))
}

pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), HarnessError> {
    fs::write(path, data).map_err(|e| HarnessError::io(format!("write {}", path.display()), e))?;
    set_mode(path, mode)
}

/// `cmd` as a shell-like line, for error messages.
pub(crate) fn command_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Send `signal` to `child` (by its PID), wait up to `timeout` for it to exit,
/// then SIGKILL it. Reaps it either way; a child that already exited is only
/// reaped.
pub(crate) fn stop_child(child: &mut Child, signal: libc::c_int, timeout: Duration) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain syscall; `pid` is our own child that has not been
        // reaped yet (try_wait returned None), so it cannot have been recycled.
        unsafe {
            libc::kill(pid, signal);
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

/// A free TCP port on 127.0.0.1 (the listener is dropped before the service
/// binds it: a tiny race, which callers handle by retrying).
pub(crate) fn free_port() -> Result<u16, HarnessError> {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| HarnessError::io("bind 127.0.0.1:0 to find a free port", e))
}

/// `n` random bytes as lowercase hex (for passwords and names).
pub(crate) fn random_hex(n: usize) -> Result<String, HarnessError> {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| HarnessError::io("random", io::Error::other("SystemRandom failed")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
