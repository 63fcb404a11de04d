//! How a session runs: its timing limits and TLS record layer, validated once at engine
//! start.

use std::time::Duration;

/// RFC 2177: clients must re-issue IDLE at least every 29 minutes or the server may log
/// them off. The refresh interval must stay below this.
pub const IDLE_REFRESH_LIMIT: Duration = Duration::from_secs(29 * 60);

/// How one session runs: its timing (every duration is a named, documented limit) and
/// its TLS record layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long IDLE runs before DONE and IDLE again. Must be below [`IDLE_REFRESH_LIMIT`].
    pub idle_refresh: Duration,
    /// Up to this much is taken off `idle_refresh`, per session, so refreshes of sessions
    /// started together spread out.
    pub idle_refresh_jitter: Duration,
    /// NOOP interval for servers without IDLE.
    pub poll_interval: Duration,
    /// TCP connect deadline.
    pub connect_timeout: Duration,
    /// Deadline for the greeting, CAPABILITY, STARTTLS, the TLS handshake, EXAMINE, the `+`
    /// after IDLE, the answer to DONE and NOOP.
    pub response_timeout: Duration,
    /// Deadline for the answer to LOGIN or AUTHENTICATE (servers delay failed logins).
    pub login_timeout: Duration,
    /// How long a LOGOUT may take before the connection is simply closed.
    pub logout_timeout: Duration,
    /// How long a response that has started arriving may take to complete. Bounds what a
    /// slow-drip server can hold: a lent buffer, for this long at most.
    pub partial_response_timeout: Duration,
    /// After the TLS handshake, keep only the record keys and run our own record layer
    /// (see `engine::tls`): under 1 KB of user space per idle TLS session. `false` keeps
    /// rustls for the whole session (about 6 to 8 KB).
    pub tls_compact: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_refresh: Duration::from_secs(24 * 60),
            idle_refresh_jitter: Duration::from_secs(2 * 60),
            poll_interval: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            response_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(60),
            logout_timeout: Duration::from_secs(5),
            partial_response_timeout: Duration::from_secs(60),
            tls_compact: true,
        }
    }
}

/// Why a [`SessionConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `idle_refresh` is not below [`IDLE_REFRESH_LIMIT`], or is zero.
    IdleRefresh,
    /// `idle_refresh_jitter` is not below `idle_refresh`.
    IdleRefreshJitter,
    /// A timeout or interval is zero.
    ZeroDuration,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigError::IdleRefresh => "idle refresh must be above zero and below 29 minutes",
            ConfigError::IdleRefreshJitter => "idle refresh jitter must be below the refresh",
            ConfigError::ZeroDuration => "timeouts and intervals must be above zero",
        })
    }
}

impl std::error::Error for ConfigError {}

impl SessionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_refresh.is_zero() || self.idle_refresh >= IDLE_REFRESH_LIMIT {
            return Err(ConfigError::IdleRefresh);
        }
        if self.idle_refresh_jitter >= self.idle_refresh {
            return Err(ConfigError::IdleRefreshJitter);
        }
        let all = [
            self.poll_interval,
            self.connect_timeout,
            self.response_timeout,
            self.login_timeout,
            self.logout_timeout,
            self.partial_response_timeout,
        ];
        if all.iter().any(|d| d.is_zero()) {
            return Err(ConfigError::ZeroDuration);
        }
        Ok(())
    }
}
