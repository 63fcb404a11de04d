//! The single error type of the harness.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while starting, driving or stopping Dovecot,
/// PostgreSQL or HAProxy.
///
/// Every variant carries enough context to diagnose a failing test from its
/// output alone: startup errors include the tail of the service's log, command
/// errors include the command line, exit status and captured output.
#[derive(Debug)]
pub enum HarnessError {
    /// A binary of Dovecot, PostgreSQL or HAProxy is missing. Tests must fail
    /// (not skip) on this; the message names the Debian package to install.
    NotInstalled {
        /// The binary that was looked for.
        missing: PathBuf,
    },
    /// The [`crate::DovecotConfig`] (or an argument) cannot be turned into a
    /// working Dovecot setup, e.g. a user name containing `:`.
    InvalidConfig(String),
    /// An I/O operation of the harness itself failed.
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Certificate generation failed.
    Certificate(String),
    /// A service did not come up (exited, or did not answer within the timeout).
    Startup {
        /// Which one: `"Dovecot"`, `"PostgreSQL"` or `"HAProxy"`.
        service: &'static str,
        /// What went wrong.
        message: String,
        /// The last lines of Dovecot's log and stderr.
        log_tail: String,
    },
    /// A helper command (`doveadm`, `dovecot-lda`, `useradd`, `initdb`, `psql`,
    /// `haproxy -c`) failed.
    Command {
        /// The command line that was run.
        command: String,
        /// Exit code, `None` if killed by a signal or by the harness' timeout.
        status: Option<i32>,
        /// Captured standard output.
        stdout: String,
        /// Captured standard error.
        stderr: String,
    },
    /// A wait-for-condition helper gave up.
    Timeout(String),
    /// The service has been stopped; the operation needs a running one.
    NotRunning,
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        HarnessError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::NotInstalled { missing } => {
                let path = missing.to_string_lossy();
                let (name, package) = if path.contains("postgresql") {
                    ("PostgreSQL", "postgresql")
                } else if path.contains("haproxy") {
                    ("HAProxy", "haproxy")
                } else {
                    ("Dovecot", "dovecot-imapd")
                };
                write!(
                    f,
                    "{name} is not installed ({path} is missing): run `apt-get install -y {package}`"
                )
            }
            HarnessError::InvalidConfig(msg) => write!(f, "invalid Dovecot test config: {msg}"),
            HarnessError::Io { context, source } => write!(f, "{context}: {source}"),
            HarnessError::Certificate(msg) => write!(f, "certificate generation failed: {msg}"),
            HarnessError::Startup {
                service,
                message,
                log_tail,
            } => {
                write!(
                    f,
                    "{service} failed to start: {message}\n--- {service} log tail ---\n{log_tail}"
                )
            }
            HarnessError::Command {
                command,
                status,
                stdout,
                stderr,
            } => {
                match status {
                    Some(code) => write!(f, "`{command}` exited with status {code}")?,
                    None => write!(f, "`{command}` was killed (signal or timeout)")?,
                }
                if !stdout.trim().is_empty() {
                    write!(f, "\nstdout: {}", stdout.trim_end())?;
                }
                if !stderr.trim().is_empty() {
                    write!(f, "\nstderr: {}", stderr.trim_end())?;
                }
                Ok(())
            }
            HarnessError::Timeout(what) => write!(f, "timed out: {what}"),
            HarnessError::NotRunning => write!(f, "the test service is not running"),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HarnessError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
