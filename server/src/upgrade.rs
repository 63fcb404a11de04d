//! In-place upgrade (SIGUSR2, and SIGHUP for keys that need a new process): the live
//! sessions go to a new binary in the same PID, without a reconnect.
//!
//! The running server stops accepting, hands each session over at its handover point
//! ([`engine::Engine::export`], bounded by [`engine::HANDOVER_WAIT`]), gives the push pool a
//! moment ([`PUSH_DRAIN_WAIT`]), flushes the journal, writes the state image to a memfd
//! ([`crate::image`]), clears close-on-exec on the descriptors it keeps (the API listener,
//! the sessions, the memfd) and re-executes the binary at the path it was started from,
//! with the same arguments; [`crate::image::IMAGE_FD_ENV`] names the image. The new
//! process adopts every session and serves the API on the same listener.
//!
//! What does not cross: sessions not at a handover point in time, on the rustls path
//! (`tls_compact = false`), and subscriptions still logging in or verifying their
//! endpoints. Their sockets close at the exec, and their journal records give each (but
//! those verifying) its `server_restart` push from the new process, as after a crash. Registrations in flight and open API
//! connections are cut; the clients retry.
//!
//! Safety: before anything stops, the binary at the original path must exist and be
//! executable, else the upgrade is cancelled and the server serves on. If the exec itself
//! fails, every session is adopted back and the server serves on. If the new binary fails
//! to start, the journal still holds every subscription: the next start that succeeds
//! sends each its `server_restart` push.

use std::ffi::{CString, OsStr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::image::{ImageError, IMAGE_FD_ENV};

/// How long an upgrade waits for pushes in flight or queued (a coalescing window) to be
/// settled before the exec. What is left then is lost for new mail, or sent again as a
/// `server_restart` push by the new process for a reconnect (at least once, never none).
pub const PUSH_DRAIN_WAIT: Duration = Duration::from_millis(1500);

/// Why an upgrade did not happen; the server serves on in every case.
#[derive(Debug)]
pub enum UpgradeError {
    /// The binary at the original path is missing or not executable.
    NotExecutable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The server is stopping.
    NotRunning,
    /// A descriptor to keep could not be prepared.
    Descriptor(std::io::Error),
    Image(ImageError),
    /// execve failed.
    Exec(std::io::Error),
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeError::NotExecutable { path, error } => {
                write!(f, "{} is not an executable file: {error}", path.display())
            }
            UpgradeError::NotRunning => f.write_str("the server is stopping"),
            UpgradeError::Descriptor(e) => write!(f, "descriptor to hand over: {e}"),
            UpgradeError::Image(e) => write!(f, "{e}"),
            UpgradeError::Exec(e) => write!(f, "exec: {e}"),
        }
    }
}

impl std::error::Error for UpgradeError {}

/// The binary this process was started from, by path: read once at start, since after a
/// package upgrade `/proc/self/exe` names the old, deleted file and the path the new one.
#[derive(Clone, Debug)]
pub struct Binary {
    path: PathBuf,
}

impl Binary {
    /// The running binary's path (read at start).
    pub fn at_start() -> std::io::Result<Binary> {
        let path = std::env::current_exe()?;
        // A binary replaced before we ran: the kernel appends " (deleted)".
        let text = path.as_os_str().as_bytes();
        let path = match text.strip_suffix(b" (deleted)") {
            Some(stem) => PathBuf::from(OsStr::from_bytes(stem)),
            None => path,
        };
        Ok(Binary { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file at the path exists, is a regular file and is executable by us.
    pub fn check(&self) -> Result<(), UpgradeError> {
        let not = |error| UpgradeError::NotExecutable {
            path: self.path.clone(),
            error,
        };
        let meta = std::fs::metadata(&self.path).map_err(not)?;
        if !meta.is_file() {
            return Err(not(std::io::ErrorKind::InvalidInput.into()));
        }
        let c = CString::new(self.path.as_os_str().as_bytes())
            .map_err(|_| not(std::io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: a valid C string; access only reads it.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
            return Err(not(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Replaces this process with the binary: the same arguments, the environment with
    /// [`IMAGE_FD_ENV`] naming `image_fd`. Returns only if execve failed.
    pub fn exec(&self, image_fd: RawFd) -> std::io::Error {
        let invalid = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
        let Ok(path) = CString::new(self.path.as_os_str().as_bytes()) else {
            return invalid();
        };
        let args: Result<Vec<CString>, _> = std::env::args_os()
            .map(|a| CString::new(a.as_bytes()))
            .collect();
        let mut env: Vec<CString> = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k == IMAGE_FD_ENV {
                continue;
            }
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            match CString::new(kv) {
                Ok(c) => env.push(c),
                Err(_) => return invalid(),
            }
        }
        let Ok(ours) = CString::new(format!("{IMAGE_FD_ENV}={image_fd}")) else {
            return invalid();
        };
        env.push(ours);
        let Ok(args) = args else {
            return invalid();
        };
        let argv: Vec<*const libc::c_char> = args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp: Vec<*const libc::c_char> = env
            .iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        // SAFETY: every pointer is to a NUL-terminated string alive until execve returns,
        // and both arrays end with a null pointer.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        std::io::Error::last_os_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_non_executable_binary_is_refused() {
        let missing = Binary {
            path: PathBuf::from("/nonexistent/imap-push-proxy"),
        };
        assert!(matches!(
            missing.check(),
            Err(UpgradeError::NotExecutable { .. })
        ));
        let dir = std::env::temp_dir().join(format!("upgrade-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bin");
        std::fs::write(&file, b"#!/bin/sh\n").unwrap();
        let plain = Binary { path: file.clone() };
        assert!(plain.check().is_err(), "mode 0644");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(plain.check().is_ok(), "mode 0755");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
