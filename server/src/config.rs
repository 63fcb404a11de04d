//! The TOML configuration. Key names are part of the interface: operators' files keep
//! working across versions. Unknown keys are refused, so a typo is an error, not a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default address of the REST API: loopback only.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8080";
/// Default data directory, beside the working directory.
pub const DATA_DIR_DEFAULT: &str = "./data";
/// Default for [`LimitsConfig::sessions_per_account_max`]: Dovecot's default cap of
/// connections per user and address.
pub const SESSIONS_PER_ACCOUNT_MAX_DEFAULT: usize = 10;
/// How long a registration may wait for its IMAP session to become idle.
pub const REGISTER_TIMEOUT_SECS_DEFAULT: u64 = 30;
/// How long a subscription may take to verify its endpoints: ten minutes, as long as a
/// push may wait at a push service for a sleeping phone and still be worth reading.
pub const VERIFICATION_TIMEOUT_SECS_DEFAULT: u64 = 600;
/// The longest verification timeout: one day. An unverified subscription holds an IMAP
/// session and pushes nothing; longer than this it is only a held session.
pub const VERIFICATION_TIMEOUT_SECS_MAX: u64 = 24 * 3600;

/// `Debug` is written by hand: it never shows `api_token`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Reactor threads of the IMAP engine; 0 means one per core.
    pub reactor_threads: usize,
    /// Push sender threads.
    pub sender_threads: usize,
    /// IDLE is re-issued after this long (minus per-session jitter). Always under 29 min.
    pub idle_refresh_secs: u64,
    /// NOOP interval for servers without IDLE.
    pub poll_interval_secs: u64,
    /// Allow IMAP servers and push endpoints on loopback, private and other non-public
    /// addresses (test setups, self-hosted push servers).
    pub allow_private_destinations: bool,
    /// Allow `http://` push endpoints (otherwise https only).
    pub allow_http_endpoints: bool,
    /// Allow `"security": "plain"` IMAP connections (no TLS at all).
    pub allow_plain_imap: bool,
    /// Local addresses IMAP connections are made from, in turn. One source address reaches
    /// one provider address through at most the ephemeral port range (~28K ports); list
    /// more to hold more sessions to one provider. Empty: the system chooses.
    pub imap_bind_addresses: Vec<std::net::IpAddr>,
    /// Extra trusted root certificates (PEM) for IMAP servers.
    pub imap_extra_ca_file: Option<PathBuf>,
    /// After each IMAP TLS handshake, keep only the record keys (under 1 KB per idle
    /// session) instead of the whole rustls connection (6 to 8 KB). `false` keeps rustls.
    pub tls_compact: bool,
    /// VAPID `sub` claim: how a push service reaches the operator.
    pub vapid_subject: String,
    /// A burst of new mail within this window becomes one push.
    pub coalesce_window_ms: u64,
    /// A registration answers within this time (504 imap_timeout past it).
    pub register_timeout_secs: u64,
    /// Prove that the caller owns its push endpoints before any new-mail push (see
    /// [`crate::verification`]): a new subscription answers 201 with state `verifying`,
    /// gets one verification push per endpoint, and is active only once
    /// `POST /v1/subscriptions/{id}/verify` echoes both codes. Off by default, so that
    /// existing clients keep working; recommended for any instance open to the public.
    pub require_endpoint_verification: bool,
    /// An unverified subscription is dropped (its session logged out, nothing pushed)
    /// this long after its 201. Between 1 and 86400.
    pub verification_timeout_secs: u64,
    /// On shutdown, how long queued pushes (the `shutdown` reconnects first) may take.
    pub shutdown_grace_secs: u64,
    /// If set, every API request but /healthz needs `Authorization: Bearer <token>`.
    pub api_token: Option<ApiToken>,
    /// A file holding the API token (one line; a trailing newline is trimmed), so that the
    /// config file itself holds no secret and may be world-readable while this file is
    /// mode 0640 (root:imap-push-proxy). Read once by [`Config::load`]; setting both this
    /// and `api_token` is an error.
    pub api_token_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// Reverse proxies (CIDRs, such as "10.0.0.0/8" or "::1") whose word on the client is
    /// taken: a PROXY protocol v2 header, or else X-Forwarded-For, from these peers only.
    /// Per-client limits then apply to the real client. Empty: every peer is the client.
    pub trusted_proxies: Vec<String>,
    pub limits: LimitsConfig,
    /// What is logged: a filter directive such as `"info"`, `"warn"` or
    /// `"server=debug,warn"` (target=level pairs, `tracing`'s `EnvFilter`
    /// syntax). The `RUST_LOG` variable, when set, overrides it. Re-read on SIGHUP.
    pub log_level: String,
    /// `"text"` (one line per event) or `"json"` (one JSON object per line). Logs go to
    /// stderr (the journal under systemd). A change needs a restart.
    pub log_format: crate::logging::LogFormat,
    /// Where subscriptions are journalled: `"redb"` (`data_dir/journal.redb`, one box) or
    /// a `postgres://` / `postgresql://` URL that every node of a cluster shares. The URL's
    /// password is never logged or printed.
    pub journal: crate::node::JournalSetting,
    /// This node's name in the cluster (1 to 32 of a-z, 0-9, -): unique among the nodes,
    /// kept across restarts. Required with a PostgreSQL journal.
    pub node_id: Option<String>,
    /// How often this node renews its heartbeat in the shared journal.
    pub heartbeat_secs: u64,
    /// A node whose heartbeat is older than this is lost: the others push `node_lost` to
    /// its subscriptions. Must exceed `heartbeat_secs`.
    pub node_lost_after_secs: u64,
}

/// The API bearer token: wiped when dropped, compared in constant time, redacted in `Debug`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ApiToken(zeroize::Zeroizing<String>);

impl ApiToken {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is the token. Both are hashed first and the digests compared, so
    /// the time taken tells nothing about the token, not even its length.
    pub fn matches(&self, given: &str) -> bool {
        use ring::digest::{digest, SHA256};
        let (a, b) = (
            digest(&SHA256, given.as_bytes()),
            digest(&SHA256, self.0.as_bytes()),
        );
        a.as_ref()
            .iter()
            .zip(b.as_ref())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl From<&str> for ApiToken {
    fn from(token: &str) -> ApiToken {
        ApiToken(zeroize::Zeroizing::new(token.to_owned()))
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Most request header fields.
    pub headers_max: usize,
    /// Largest request head.
    pub header_bytes_max: usize,
    /// Most subscriptions (IMAP sessions) at once: 503 at_capacity past it. The server
    /// takes fewer if the descriptor limit allows fewer ([`crate::fd_budget`]); it prints
    /// the capacity at start and exports it as `imap_push_sessions_capacity`.
    pub sessions_max: usize,
    /// Registrations per client IP per minute: 429 rate_limited past it.
    pub registrations_per_minute_per_ip: u32,
    /// Registrations waiting for their session at once: 429 past it.
    pub pending_registrations_max: usize,
    /// Sessions to one IMAP host at once: 503 at_capacity past it.
    pub sessions_per_host_max: usize,
    /// Devices (registration keys) of one account, the normalised (host, port, username),
    /// live or logging in: 409 too_many_sessions past it, before any login. Providers cap
    /// the connections of one mailbox (Dovecot 10 per user and address, Gmail 15).
    pub sessions_per_account_max: usize,
    /// Host name lookups (IMAP hosts at login, names checked at registration): threads
    /// calling getaddrinfo, lookups queued past them (`503 resolver_busy` beyond), and the
    /// time one lookup may take (`504` past it).
    pub resolver_threads: usize,
    pub resolver_queue_len: usize,
    pub resolve_timeout_ms: u64,
    /// Logins started per IMAP host per second (bursts of as many are allowed).
    pub logins_per_second_per_host: u32,
    /// How long a registration may wait for its login turn: 429 with Retry-After past it.
    pub login_queue_secs: u64,
    /// Push requests in flight to one push service (origin) at most; its other pushes
    /// wait without a sender thread. Never more than `sender_threads - 1` apply.
    pub push_permits_per_origin: usize,
    /// Open API connections in total; at it, the longest idle one is closed for a newcomer
    /// (503 when none is idle).
    pub api_connections_max: usize,
    /// Open API connections per client (IPv4 address or IPv6 /64): 503 past it.
    pub api_connections_per_client_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes_max: 16 * 1024,
            headers_max: httpd::limits::HEADERS_MAX,
            header_bytes_max: httpd::limits::HEADER_BYTES_MAX,
            sessions_max: 1_000_000,
            registrations_per_minute_per_ip: 120,
            pending_registrations_max: 10_000,
            sessions_per_host_max: 250_000,
            sessions_per_account_max: SESSIONS_PER_ACCOUNT_MAX_DEFAULT,
            resolver_threads: engine::resolve::RESOLVER_THREADS,
            resolver_queue_len: engine::resolve::RESOLVER_QUEUE_LEN,
            resolve_timeout_ms: engine::resolve::RESOLVE_TIMEOUT.as_millis() as u64,
            logins_per_second_per_host: 20,
            login_queue_secs: 10,
            push_permits_per_origin: crate::delivery::PERMITS_PER_ORIGIN_DEFAULT,
            api_connections_max: httpd::limits::CONNECTIONS_MAX,
            api_connections_per_client_max: httpd::limits::CONNECTIONS_PER_CLIENT_MAX,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: LISTEN_DEFAULT.parse().expect("valid default address"),
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            reactor_threads: 0,
            sender_threads: 8,
            idle_refresh_secs: 24 * 60,
            poll_interval_secs: 60,
            allow_private_destinations: false,
            allow_http_endpoints: false,
            allow_plain_imap: false,
            imap_bind_addresses: Vec::new(),
            imap_extra_ca_file: None,
            tls_compact: true,
            vapid_subject: "mailto:postmaster@localhost".into(),
            coalesce_window_ms: 1000,
            register_timeout_secs: REGISTER_TIMEOUT_SECS_DEFAULT,
            require_endpoint_verification: false,
            verification_timeout_secs: VERIFICATION_TIMEOUT_SECS_DEFAULT,
            shutdown_grace_secs: 10,
            api_token: None,
            api_token_file: None,
            tls: None,
            trusted_proxies: Vec::new(),
            limits: LimitsConfig::default(),
            log_level: crate::logging::LOG_LEVEL_DEFAULT.into(),
            log_format: crate::logging::LogFormat::Text,
            journal: crate::node::JournalSetting::Redb,
            node_id: None,
            heartbeat_secs: crate::node::HEARTBEAT_SECS_DEFAULT,
            node_lost_after_secs: crate::node::NODE_LOST_AFTER_SECS_DEFAULT,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured without `..`: a new field must be placed here, and so be judged
        // secret or not, before this compiles.
        let Config {
            listen,
            data_dir,
            reactor_threads,
            sender_threads,
            idle_refresh_secs,
            poll_interval_secs,
            allow_private_destinations,
            allow_http_endpoints,
            allow_plain_imap,
            imap_bind_addresses,
            imap_extra_ca_file,
            vapid_subject,
            coalesce_window_ms,
            register_timeout_secs,
            require_endpoint_verification,
            verification_timeout_secs,
            shutdown_grace_secs,
            api_token,
            api_token_file,
            trusted_proxies,
            tls_compact,
            tls,
            limits,
            log_level,
            log_format,
            journal,
            node_id,
            heartbeat_secs,
            node_lost_after_secs,
        } = self;
        f.debug_struct("Config")
            .field("listen", listen)
            .field("data_dir", data_dir)
            .field("reactor_threads", reactor_threads)
            .field("sender_threads", sender_threads)
            .field("idle_refresh_secs", idle_refresh_secs)
            .field("poll_interval_secs", poll_interval_secs)
            .field("allow_private_destinations", allow_private_destinations)
            .field("allow_http_endpoints", allow_http_endpoints)
            .field("allow_plain_imap", allow_plain_imap)
            .field("imap_bind_addresses", imap_bind_addresses)
            .field("imap_extra_ca_file", imap_extra_ca_file)
            .field("vapid_subject", vapid_subject)
            .field("coalesce_window_ms", coalesce_window_ms)
            .field("register_timeout_secs", register_timeout_secs)
            .field(
                "require_endpoint_verification",
                require_endpoint_verification,
            )
            .field("verification_timeout_secs", verification_timeout_secs)
            .field("shutdown_grace_secs", shutdown_grace_secs)
            .field("api_token", &api_token.as_ref().map(|_| "<redacted>"))
            // The path is no secret; what the file holds is never kept apart from api_token.
            .field("api_token_file", api_token_file)
            .field("trusted_proxies", trusted_proxies)
            .field("tls_compact", tls_compact)
            .field("tls", tls)
            .field("limits", limits)
            .field("log_level", log_level)
            .field("log_format", log_format)
            // Its own Debug leaves the password out.
            .field("journal", journal)
            .field("node_id", node_id)
            .field("heartbeat_secs", heartbeat_secs)
            .field("node_lost_after_secs", node_lost_after_secs)
            .finish()
    }
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Parse {
        path: PathBuf,
        message: String,
    },
    Invalid {
        key: &'static str,
        message: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "{}: {source}", path.display()),
            ConfigError::Parse { path, message } => write!(f, "{}: {message}", path.display()),
            ConfigError::Invalid { key, message } => write!(f, "config key `{key}`: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A parse error without the quoted line: the line may hold `api_token`, and this message
/// is printed and logged. The line number and its key (the text before `=`) stay.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_owned();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    match line.split_once('=').map(|(key, _)| key.trim()) {
        // serde's message may quote the value ("invalid type: integer `123`").
        Some(key @ "api_token") => format!("line {line_no} (`{key}`): not a valid token"),
        // The line may hold a database password.
        Some(key @ "journal") => format!(
            "line {line_no} (`{key}`): expected \"redb\" or a postgres:// or postgresql:// URL"
        ),
        Some(key) => format!("line {line_no} (`{key}`): {}", e.message()),
        None => format!("line {line_no}: {}", e.message()),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: parse_message(&text, &e),
        })?;
        config.read_api_token_file()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `api_token_file` into `api_token`. The token is one line: a trailing `\n` or
    /// `\r\n` (what editors and `echo` leave) is trimmed, nothing else, so a token with a
    /// space inside stays whole. The file's mode is not checked: 0640 is the expected one.
    pub fn read_api_token_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.api_token_file else {
            return Ok(());
        };
        if self.api_token.is_some() {
            return Err(ConfigError::Invalid {
                key: "api_token_file",
                message: "set either api_token or api_token_file, not both".into(),
            });
        }
        // Zeroizing: the bytes read are wiped when dropped, on the error paths too.
        let mut text =
            zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                ConfigError::Read {
                    path: path.clone(),
                    source,
                }
            })?);
        let kept = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .map_or(text.len(), str::len);
        text.truncate(kept);
        self.api_token = Some(ApiToken(text));
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.idle_refresh_secs == 0 || self.idle_refresh_secs >= 29 * 60 {
            return invalid(
                "idle_refresh_secs",
                "must be between 1 and 1739 (under 29 min)",
            );
        }
        if self.poll_interval_secs == 0 {
            return invalid("poll_interval_secs", "must be at least 1");
        }
        if self.sender_threads == 0 {
            return invalid("sender_threads", "must be at least 1");
        }
        if self.register_timeout_secs == 0 {
            return invalid("register_timeout_secs", "must be at least 1");
        }
        if !(1..=VERIFICATION_TIMEOUT_SECS_MAX).contains(&self.verification_timeout_secs) {
            return invalid("verification_timeout_secs", "must be between 1 and 86400");
        }
        if self.limits.logins_per_second_per_host == 0 {
            return invalid("limits.logins_per_second_per_host", "must be at least 1");
        }
        if self.limits.sessions_max == 0 {
            return invalid("limits.sessions_max", "must be at least 1");
        }
        if self.limits.resolver_threads == 0 || self.limits.resolver_queue_len == 0 {
            return invalid(
                "limits.resolver_threads",
                "resolver_threads and resolver_queue_len must be at least 1",
            );
        }
        if self.limits.resolve_timeout_ms == 0 {
            return invalid("limits.resolve_timeout_ms", "must be at least 1");
        }
        if self.limits.push_permits_per_origin == 0 {
            return invalid("limits.push_permits_per_origin", "must be at least 1");
        }
        self.trusted_proxies()?;
        if let Err(message) = crate::logging::parse_filter(&self.log_level) {
            return Err(ConfigError::Invalid {
                key: "log_level",
                message,
            });
        }
        if self.api_token.as_ref().is_some_and(|t| t.len() < 16) {
            return invalid("api_token", "must be at least 16 characters");
        }
        self.validate_node()
    }

    /// The cluster keys: a shared journal needs a good `node_id`, and a node is judged
    /// lost only after more than one heartbeat interval.
    fn validate_node(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        match (&self.journal, &self.node_id) {
            (crate::node::JournalSetting::Postgres(_), None) => {
                return invalid(
                    "node_id",
                    "is required with a PostgreSQL journal: a short name unique in the \
                     cluster, kept across restarts (such as \"n1\")"
                        .into(),
                );
            }
            (_, Some(id)) => {
                if let Err(message) = crate::node::check_node_id(id) {
                    return invalid("node_id", message);
                }
            }
            (crate::node::JournalSetting::Redb, None) => {}
        }
        if self.heartbeat_secs == 0 {
            return invalid("heartbeat_secs", "must be at least 1".into());
        }
        if self.node_lost_after_secs <= self.heartbeat_secs {
            return invalid(
                "node_lost_after_secs",
                format!("must exceed heartbeat_secs ({})", self.heartbeat_secs),
            );
        }
        // A stopping node renews no heartbeat while its shutdown pushes go out: were the
        // others to judge it lost meanwhile, its users would get node_lost as well.
        let clustered = matches!(self.journal, crate::node::JournalSetting::Postgres(_));
        if clustered && self.shutdown_grace_secs + self.heartbeat_secs >= self.node_lost_after_secs
        {
            return invalid(
                "shutdown_grace_secs",
                format!(
                    "with a PostgreSQL journal, shutdown_grace_secs + heartbeat_secs must stay \
                     under node_lost_after_secs ({})",
                    self.node_lost_after_secs
                ),
            );
        }
        Ok(())
    }

    /// The warning to print at start when the API listens beyond loopback and still
    /// pushes to endpoints nobody proved to own: anyone who can reach it and owns one
    /// IMAP account can make it POST to any public URL.
    pub fn verification_warning(&self) -> Option<String> {
        if self.require_endpoint_verification || self.listen.ip().is_loopback() {
            return None;
        }
        Some(format!(
            "the API listens on {} (not loopback) and require_endpoint_verification is \
             false: anyone who reaches it with one IMAP account can make this server push \
             to any URL; set require_endpoint_verification = true",
            self.listen.ip()
        ))
    }

    /// The resolver pool's settings from `[limits]`.
    pub fn resolver(&self) -> engine::ResolverConfig {
        engine::ResolverConfig {
            threads: self.limits.resolver_threads,
            queue_len: self.limits.resolver_queue_len,
            timeout: Duration::from_millis(self.limits.resolve_timeout_ms),
        }
    }

    /// `trusted_proxies`, parsed.
    pub fn trusted_proxies(&self) -> Result<Vec<httpd::Cidr>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|c| {
                c.parse().map_err(|e| ConfigError::Invalid {
                    key: "trusted_proxies",
                    message: format!("{c:?}: {e}"),
                })
            })
            .collect()
    }

    pub fn session(&self) -> engine::SessionConfig {
        let refresh = Duration::from_secs(self.idle_refresh_secs);
        engine::SessionConfig {
            idle_refresh: refresh,
            // Spread refreshes over the last twelfth of the interval (2 min of 24).
            idle_refresh_jitter: refresh / 12,
            poll_interval: Duration::from_secs(self.poll_interval_secs),
            tls_compact: self.tls_compact,
            ..engine::SessionConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_keys_parse() {
        let text = r#"
            listen = "127.0.0.1:8080"
            data_dir = "./data"
            reactor_threads = 2
            sender_threads = 8
            idle_refresh_secs = 1440
            poll_interval_secs = 60
            allow_private_destinations = false
            allow_http_endpoints = false
            imap_extra_ca_file = "/etc/imap-push-proxy/extra-ca.pem"
            vapid_subject = "mailto:ops@example.org"
            [tls]
            cert_file = "a.pem"
            key_file = "b.pem"
            [limits]
            body_bytes_max = 4096
            sessions_max = 10
            push_permits_per_origin = 3
        "#;
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.reactor_threads, 2);
        assert_eq!(config.limits.sessions_max, 10);
        assert_eq!(config.limits.push_permits_per_origin, 3);
        assert_eq!(config.limits.headers_max, httpd::limits::HEADERS_MAX);
    }

    #[test]
    fn push_permits_per_origin_is_at_least_one() {
        let mut config = Config::default();
        config.limits.push_permits_per_origin = 1;
        config.validate().unwrap();
        config.limits.push_permits_per_origin = 0;
        assert!(config.validate().is_err());
    }

    #[test]
    fn trusted_proxies_and_api_connection_caps_parse() {
        let text = r#"
            trusted_proxies = ["10.0.0.0/8", "::1"]
            [limits]
            api_connections_max = 2048
            api_connections_per_client_max = 16
        "#;
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.trusted_proxies().unwrap().len(), 2);
        assert_eq!(config.limits.api_connections_per_client_max, 16);
        let bad = Config {
            trusted_proxies: vec!["10.0.0.1/8".into()],
            ..Config::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                key: "trusted_proxies",
                ..
            })
        ));
    }

    #[test]
    fn the_api_token_is_redacted_and_matched_whole() {
        let config = Config {
            api_token: Some("s3cret-token-0123456789".into()),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
        let token = config.api_token.unwrap();
        assert!(token.matches("s3cret-token-0123456789"));
        assert!(!token.matches("s3cret-token-012345678"));
        assert!(!token.matches(""));
    }

    #[test]
    fn resolver_settings_parse_and_zero_is_refused() {
        let config: Config = toml::from_str(
            "[limits]\nresolver_threads = 2\nresolver_queue_len = 8\nresolve_timeout_ms = 1500",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.resolver(),
            engine::ResolverConfig {
                threads: 2,
                queue_len: 8,
                timeout: Duration::from_millis(1500),
            }
        );
        for key in [
            "resolver_threads",
            "resolver_queue_len",
            "resolve_timeout_ms",
        ] {
            let text = format!("[limits]\n{key} = 0");
            let config: Config = toml::from_str(&text).unwrap();
            assert!(config.validate().is_err(), "{key} = 0 must be refused");
        }
    }

    #[test]
    fn verification_is_off_by_default_and_its_timeout_is_bounded() {
        let config: Config = toml::from_str("").unwrap();
        assert!(!config.require_endpoint_verification);
        assert_eq!(config.verification_timeout_secs, 600);
        let text = "require_endpoint_verification = true\nverification_timeout_secs = 1";
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert!(config.require_endpoint_verification);
        for secs in [0, VERIFICATION_TIMEOUT_SECS_MAX + 1] {
            let config = Config {
                verification_timeout_secs: secs,
                ..Config::default()
            };
            assert!(config.validate().is_err(), "{secs} must be refused");
        }
        let max = Config {
            verification_timeout_secs: VERIFICATION_TIMEOUT_SECS_MAX,
            ..Config::default()
        };
        max.validate().unwrap();
    }

    #[test]
    fn a_public_listener_without_verification_is_warned_of() {
        let mut config = Config::default();
        assert_eq!(config.verification_warning(), None, "loopback");
        config.listen = "0.0.0.0:8080".parse().unwrap();
        let warning = config.verification_warning().unwrap();
        assert!(
            warning.contains("require_endpoint_verification"),
            "{warning}"
        );
        config.require_endpoint_verification = true;
        assert_eq!(config.verification_warning(), None);
        config.listen = "[::1]:8080".parse().unwrap();
        config.require_endpoint_verification = false;
        assert_eq!(config.verification_warning(), None, "IPv6 loopback");
    }

    #[test]
    fn log_keys_parse_and_bad_values_name_their_key() {
        let config: Config =
            toml::from_str("log_level = \"server=debug,warn\"\nlog_format = \"json\"").unwrap();
        config.validate().unwrap();
        assert_eq!(config.log_format, crate::logging::LogFormat::Json);
        assert_eq!(Config::default().log_level, "info");
        assert_eq!(
            Config::default().log_format,
            crate::logging::LogFormat::Text
        );
        let bad: Config = toml::from_str("log_level = \"server=loud\"").unwrap();
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().contains("`log_level`"), "{e}");
        let e = toml::from_str::<Config>("log_format = \"xml\"").unwrap_err();
        assert!(e.to_string().contains("log_format"), "{e}");
    }

    #[test]
    fn a_parse_error_names_the_line_and_key_but_never_quotes_the_value() {
        let dir = std::env::temp_dir().join(format!("ipp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        for (text, key) in [
            (
                "log_level = \"info\"\napi_token = \"s3cret-unterminated\n",
                "api_token",
            ),
            ("api_token = [\"s3cret-0123456789abc\"]\n", "api_token"),
            ("api_token = 31415926535897932\n", "api_token"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(!e.contains("s3cret") && !e.contains("31415926535"), "{e}");
            assert!(e.contains(&format!("`{key}`")), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cluster_keys_parse_and_are_judged() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.journal, crate::node::JournalSetting::Redb);
        assert_eq!(
            (config.heartbeat_secs, config.node_lost_after_secs),
            (5, 30)
        );
        let text = "journal = \"postgres://app:s3cret@db/push\"\nnode_id = \"n1\"\n\
                    heartbeat_secs = 1\nnode_lost_after_secs = 20";
        let mut config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
        config.node_lost_after_secs = 1;
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("`node_lost_after_secs`"), "{e}");
        config.node_lost_after_secs = 20;
        config.node_id = None;
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("`node_id`") && e.contains("required"), "{e}");
        config.node_id = Some("N_1".into());
        assert!(config.validate().is_err());
        config.node_id = Some("n1".into());
        config.heartbeat_secs = 0;
        assert!(config.validate().is_err());
        // A stop's pushes must end before the others may judge the node lost.
        config.heartbeat_secs = 5;
        config.node_lost_after_secs = 30;
        config.shutdown_grace_secs = 24;
        config.validate().unwrap();
        config.shutdown_grace_secs = 25;
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("`shutdown_grace_secs`"), "{e}");
        config.journal = crate::node::JournalSetting::Redb;
        config.validate().unwrap();
    }

    #[test]
    fn a_bad_journal_line_is_named_without_its_value() {
        let dir = std::env::temp_dir().join(format!("ipp-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        for text in [
            "journal = \"mysql://u:s3cret@db/push\"\n",
            "journal = \"postgres://u:s3cret@db/push\n",
            "journal = [\"postgres://u:s3cret@db/push\"]\n",
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
            assert!(e.contains("`journal`"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_typo_is_an_error() {
        let e = toml::from_str::<Config>("idle_refresh_sec = 10").unwrap_err();
        assert!(e.to_string().contains("idle_refresh_sec"), "{e}");
    }

    #[test]
    fn idle_refresh_must_stay_under_29_minutes() {
        let mut config = Config {
            idle_refresh_secs: 29 * 60 - 1,
            ..Config::default()
        };
        config.validate().unwrap();
        config.session().validate().unwrap();
        config.idle_refresh_secs = 29 * 60;
        assert!(config.validate().is_err());
    }

    #[test]
    fn tls_compact_defaults_on_and_reaches_the_engine() {
        assert!(Config::default().session().tls_compact);
        let config: Config = toml::from_str("tls_compact = false").unwrap();
        assert!(!config.session().tls_compact);
    }
}
