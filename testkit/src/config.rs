//! [`DovecotConfig`] and rendering of `dovecot.conf` / the passwd file.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use crate::system::UserIds;
use crate::HarnessError;

/// The capability list Dovecot 2.3.19 advertises after login with the
/// configuration this harness generates (measured with `CAPABILITY`).
///
/// `imap_capability` *replaces* the whole list (there is no "remove" syntax),
/// and when it is set Dovecot no longer appends `LITERAL+` and `NOTIFY` on its
/// own, so both are part of this list.
pub const DOVECOT_DEFAULT_CAPABILITIES: &[&str] = &[
    "IMAP4rev1",
    "SASL-IR",
    "LOGIN-REFERRALS",
    "ID",
    "ENABLE",
    "IDLE",
    "SORT",
    "SORT=DISPLAY",
    "THREAD=REFERENCES",
    "THREAD=REFS",
    "THREAD=ORDEREDSUBJECT",
    "MULTIAPPEND",
    "URL-PARTIAL",
    "CATENATE",
    "UNSELECT",
    "CHILDREN",
    "NAMESPACE",
    "UIDPLUS",
    "LIST-EXTENDED",
    "I18NLEVEL=1",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "ESORT",
    "SEARCHRES",
    "WITHIN",
    "CONTEXT=SEARCH",
    "LIST-STATUS",
    "BINARY",
    "MOVE",
    "SNIPPET=FUZZY",
    "PREVIEW=FUZZY",
    "PREVIEW",
    "STATUS=SIZE",
    "SAVEDATE",
    "LITERAL+",
    "NOTIFY",
];

/// What to start. `Default` gives one user `alice` / `secret-alice`, all
/// capabilities, plaintext auth allowed, room for 2000 connections.
#[derive(Clone, Debug)]
pub struct DovecotConfig {
    /// `(user name, password bytes)`, stored as `{SHA256}` hashes. Passwords
    /// may contain `" \ {5}`, spaces, UTF-8 and non-UTF-8 bytes, but Dovecot
    /// 2.3 refuses every login whose password contains `\x01`, TAB, CR or LF
    /// ("Attempted login with password having illegal chars"), whatever the
    /// passdb; see [`dovecot_accepts_password`]. NUL is rejected by `start`
    /// (no IMAP login can transmit it). User names must match `[A-Za-z0-9._@+-]+` and not
    /// start with `.`.
    pub users: Vec<(String, Vec<u8>)>,
    /// Capabilities to remove from the post-login `CAPABILITY` list (case
    /// insensitive, must be in [`DOVECOT_DEFAULT_CAPABILITIES`]). Dovecot still
    /// *accepts* the hidden commands; it just stops advertising them.
    pub hide_capabilities: Vec<String>,
    /// `disable_plaintext_auth = no` when true (the default). Note that
    /// Dovecot treats a connection whose remote IP equals its local IP as
    /// secure, so on loopback `false` does *not* make it refuse LOGIN on the
    /// plain port; see the crate docs.
    pub allow_plaintext_auth: bool,
    /// Upper bound of simultaneous IMAP sessions the server is sized for
    /// (imap `process_limit`, `mail_max_userip_connections`, client limits of
    /// login/anvil/stats).
    pub max_connections: u32,
    /// `mailbox_idle_check_interval`: Dovecot's fallback polling interval
    /// when inotify is unavailable. `None` keeps Dovecot's default (30 s).
    pub idle_check_interval: Option<Duration>,
    /// `auth_failure_delay`; the default (zero) makes failed-login tests fast.
    /// Dovecot's own default is 2 s.
    pub auth_failure_delay: Duration,
    /// After a failed login Dovecot delays the next logins from the same IP
    /// (anvil "auth penalty", 2 s doubling up to 15 s), which makes tests
    /// with deliberate failures slow. When true (the default) the
    /// `anvil-auth-penalty` socket is disabled, which turns the penalty off.
    /// (`login_trusted_networks` does not help in 2.3.)
    pub disable_auth_penalty: bool,
    /// Raise `fs.inotify.max_user_instances` to at least this before start
    /// (best effort). `None` leaves the system alone.
    pub raise_inotify_instances: Option<u64>,
    /// Raw lines appended to the generated `dovecot.conf` (later settings
    /// override earlier ones).
    pub extra_config: String,
    /// Addresses Dovecot listens on besides `127.0.0.1`, on the same ports, and names
    /// and addresses its certificate is valid for besides `127.0.0.1` and `localhost`.
    /// For tests in a private network namespace ([`crate::netns`]) that stand in for
    /// public hosts: such an address must be on an interface before `start`.
    pub extra_listen: Vec<std::net::IpAddr>,
    pub extra_names: Vec<String>,
}

impl Default for DovecotConfig {
    fn default() -> Self {
        DovecotConfig {
            users: vec![("alice".to_string(), b"secret-alice".to_vec())],
            hide_capabilities: Vec::new(),
            allow_plaintext_auth: true,
            max_connections: 2000,
            idle_check_interval: None,
            auth_failure_delay: Duration::ZERO,
            disable_auth_penalty: true,
            raise_inotify_instances: Some(8192),
            extra_config: String::new(),
            extra_listen: Vec::new(),
            extra_names: Vec::new(),
        }
    }
}

impl DovecotConfig {
    /// Default config, but advertising no `IDLE` after login.
    pub fn no_idle() -> Self {
        DovecotConfig::default().hide_capability("IDLE")
    }

    /// Default config, but advertising no `NOTIFY` after login.
    pub fn no_notify() -> Self {
        DovecotConfig::default().hide_capability("NOTIFY")
    }

    /// Builder: add a user.
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<Vec<u8>>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Builder: replace the user list with exactly these users.
    pub fn with_users<N, P>(mut self, users: impl IntoIterator<Item = (N, P)>) -> Self
    where
        N: Into<String>,
        P: Into<Vec<u8>>,
    {
        self.users = users
            .into_iter()
            .map(|(n, p)| (n.into(), p.into()))
            .collect();
        self
    }

    /// Builder: hide one more capability.
    pub fn hide_capability(mut self, cap: impl Into<String>) -> Self {
        self.hide_capabilities.push(cap.into());
        self
    }

    /// Builder: set [`DovecotConfig::hide_capabilities`].
    pub fn hide_capabilities(mut self, caps: &[&str]) -> Self {
        self.hide_capabilities = caps.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Builder: set [`DovecotConfig::allow_plaintext_auth`].
    pub fn allow_plaintext_auth(mut self, allow: bool) -> Self {
        self.allow_plaintext_auth = allow;
        self
    }

    /// Builder: set [`DovecotConfig::max_connections`].
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// The post-login capability list this config makes Dovecot advertise.
    pub fn capabilities(&self) -> Result<Vec<&'static str>, HarnessError> {
        for hidden in &self.hide_capabilities {
            if !DOVECOT_DEFAULT_CAPABILITIES
                .iter()
                .any(|c| c.eq_ignore_ascii_case(hidden))
            {
                return Err(HarnessError::InvalidConfig(format!(
                    "cannot hide capability {hidden:?}: not in Dovecot's default list {DOVECOT_DEFAULT_CAPABILITIES:?}"
                )));
            }
        }
        Ok(DOVECOT_DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| {
                !self
                    .hide_capabilities
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(c))
            })
            .collect())
    }

    pub(crate) fn validate(&self) -> Result<(), HarnessError> {
        if self.users.is_empty() {
            return Err(HarnessError::InvalidConfig("no users configured".into()));
        }
        for (i, (name, password)) in self.users.iter().enumerate() {
            validate_user_name(name)?;
            if self.users[..i].iter().any(|(n, _)| n == name) {
                return Err(HarnessError::InvalidConfig(format!(
                    "user {name:?} listed twice"
                )));
            }
            if password.contains(&0) {
                return Err(HarnessError::InvalidConfig(format!(
                    "password of {name:?} contains NUL, which no IMAP login can transmit"
                )));
            }
        }
        if self.max_connections == 0 {
            return Err(HarnessError::InvalidConfig(
                "max_connections must be > 0".into(),
            ));
        }
        self.capabilities()?;
        Ok(())
    }
}

/// False for passwords Dovecot 2.3 never accepts at login: it rejects
/// `\x01`, `\t`, `\r` and `\n` before consulting any passdb (they are
/// separators of its internal auth protocol). Such users can still be
/// configured, e.g. to test that a client transmits the password intact and
/// handles the `NO` answer.
pub fn dovecot_accepts_password(password: &[u8]) -> bool {
    !password
        .iter()
        .any(|b| matches!(b, 0 | 0x01 | b'\t' | b'\r' | b'\n'))
}

pub(crate) fn validate_user_name(name: &str) -> Result<(), HarnessError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".@_+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(HarnessError::InvalidConfig(format!(
            "user name {name:?} must match [A-Za-z0-9._@+-]+ and not start with '.'"
        )))
    }
}

/// `{SHA256}` + base64(sha256(password)): Dovecot's SHA256 scheme, base64 by
/// default.
pub(crate) fn password_hash(password: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, password);
    format!(
        "{{SHA256}}{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

/// One line per user: `user:{SHA256}hash:uid:gid::home::`. Used as both passdb
/// and userdb, so unknown users fail delivery instead of getting a mailbox.
pub(crate) fn render_passwd(cfg: &DovecotConfig, ids: UserIds, home_root: &Path) -> String {
    let mut out = String::new();
    for (name, password) in &cfg.users {
        let _ = writeln!(
            out,
            "{name}:{}:{}:{}::{}/{name}::",
            password_hash(password),
            ids.uid,
            ids.gid,
            home_root.display()
        );
    }
    out
}

/// Paths and ports one rendering needs.
pub(crate) struct Layout<'a> {
    pub dir: &'a Path,
    pub instance_name: &'a str,
    pub imap_port: u16,
    pub imaps_port: u16,
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(u64::from(d.subsec_nanos() > 0))
}

pub(crate) fn render_config(
    cfg: &DovecotConfig,
    layout: &Layout<'_>,
) -> Result<String, HarnessError> {
    let dir = layout.dir.display();
    let n = cfg.max_connections;
    // Every IMAP process holds connections to anvil, stats and log, and the
    // login processes proxy TLS sessions: size all client limits generously.
    let client_limit = n.saturating_mul(2).saturating_add(1000);
    let mut c = String::new();
    let _ = writeln!(c, "# generated by testkit; Dovecot 2.3");
    let _ = writeln!(c, "base_dir = {dir}/run");
    let _ = writeln!(c, "state_dir = {dir}/state");
    let _ = writeln!(c, "instance_name = {}", layout.instance_name);
    let _ = writeln!(c, "log_path = {dir}/dovecot.log");
    let _ = writeln!(c, "log_timestamp = \"%Y-%m-%d %H:%M:%S \"");
    let _ = writeln!(c, "protocols = imap");
    let addresses = std::iter::once("127.0.0.1".to_string())
        .chain(cfg.extra_listen.iter().map(|a| match a {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        }))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(c, "listen = {addresses}");
    let _ = writeln!(c, "shutdown_clients = yes");
    let _ = writeln!(c, "ssl = yes");
    let _ = writeln!(c, "ssl_cert = <{dir}/tls/server.pem");
    let _ = writeln!(c, "ssl_key = <{dir}/tls/server.key");
    let _ = writeln!(
        c,
        "disable_plaintext_auth = {}",
        if cfg.allow_plaintext_auth {
            "no"
        } else {
            "yes"
        }
    );
    let _ = writeln!(c, "auth_mechanisms = plain login");
    // log why logins fail (helps debugging tests), never the passwords
    let _ = writeln!(c, "auth_verbose = yes");
    let _ = writeln!(
        c,
        "auth_failure_delay = {} secs",
        secs(cfg.auth_failure_delay)
    );
    let _ = writeln!(c, "mail_location = maildir:~/Maildir");
    let _ = writeln!(c, "first_valid_uid = 1");
    let _ = writeln!(c, "first_valid_gid = 1");
    let _ = writeln!(c, "mail_max_userip_connections = {n}");
    let _ = writeln!(c, "default_client_limit = {client_limit}");
    if let Some(interval) = cfg.idle_check_interval {
        let _ = writeln!(
            c,
            "mailbox_idle_check_interval = {} secs",
            secs(interval).max(1)
        );
    }
    if !cfg.hide_capabilities.is_empty() {
        let _ = writeln!(c, "imap_capability = {}", cfg.capabilities()?.join(" "));
    }
    let _ = writeln!(
        c,
        "passdb {{\n  driver = passwd-file\n  args = {dir}/passwd\n}}"
    );
    let _ = writeln!(
        c,
        "userdb {{\n  driver = passwd-file\n  args = {dir}/passwd\n}}"
    );
    let _ = writeln!(
        c,
        "service imap-login {{
  inet_listener imap {{
    address = {addresses}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {addresses}
    port = {imaps}
    ssl = yes
  }}
  # high-performance mode: one login process serves (and TLS-proxies) many
  # clients instead of one process per TLS connection (default limit 100)
  service_count = 0
  process_min_avail = 1
  client_limit = {client_limit}
  vsz_limit = 1G
}}
service imap {{
  process_limit = {n}
}}
service anvil {{
  client_limit = {client_limit}{penalty}
}}
service stats {{
  client_limit = {client_limit}
}}",
        imap = layout.imap_port,
        imaps = layout.imaps_port,
        penalty = if cfg.disable_auth_penalty {
            // mode 0 removes the listener; auth then runs without penalties
            "\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }"
        } else {
            ""
        },
    );
    if !cfg.extra_config.is_empty() {
        let _ = writeln!(c, "# extra_config\n{}", cfg.extra_config);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hash_matches_dovecot_format() {
        // doveadm pw -s SHA256 -p secret
        assert_eq!(
            password_hash(b"secret"),
            "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="
        );
    }

    #[test]
    fn hiding_capabilities() {
        let caps = DovecotConfig::no_idle().capabilities().unwrap();
        assert!(!caps.contains(&"IDLE"));
        assert!(caps.contains(&"NOTIFY"));
        let caps = DovecotConfig::default()
            .hide_capabilities(&["notify", "Idle"])
            .capabilities()
            .unwrap();
        assert!(!caps.contains(&"IDLE") && !caps.contains(&"NOTIFY"));
        assert!(DovecotConfig::default()
            .hide_capability("XFOO")
            .validate()
            .is_err());
    }

    #[test]
    fn user_names() {
        assert!(validate_user_name("alice@example.com").is_ok());
        assert!(validate_user_name("a:b").is_err());
        assert!(validate_user_name("../x").is_err());
        assert!(validate_user_name("").is_err());
    }
}
