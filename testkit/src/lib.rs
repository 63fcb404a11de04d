//! Test harness: a **real** Dovecot IMAP server on loopback.
//!
//! [`Dovecot::start`] creates a fresh temp dir under `/tmp`
//! (`/tmp/testkit-dovecot-<pid>-<n>-<rand>`), generates a test CA and a
//! server certificate for `127.0.0.1`/`localhost`, writes a `dovecot.conf`
//! and a passwd file, picks two free ports and runs `dovecot -F` as a child
//! process. Tests then talk IMAP to [`Dovecot::imap_port`] (plain, STARTTLS
//! available) or [`Dovecot::imaps_port`] (implicit TLS; trust
//! [`Dovecot::ca_der`] in code), deliver mail with [`Dovecot::deliver`], and
//! look at the server side with [`Dovecot::connection_count`].
//!
//! ```no_run
//! use testkit::{Dovecot, DovecotConfig, simple_message};
//! let dc = Dovecot::start(DovecotConfig::default())?; // alice / secret-alice
//! dc.deliver("alice", &simple_message("hello"))?;
//! assert_eq!(dc.message_count("alice", "INBOX")?, 1);
//! # Ok::<(), testkit::HarnessError>(())
//! ```
//!
//! For several-node tests the harness also starts a private PostgreSQL
//! ([`Postgres::start`]: `initdb` in a temp dir as the `postgres` user,
//! 127.0.0.1, a role with a random password, [`Postgres::url`]) and HAProxy
//! with the shipped `deploy/haproxy.cfg` in front of given nodes
//! ([`Haproxy::start`], [`Haproxy::restart`] with another server list; the
//! config is derived from the shipped file by [`derive_haproxy_config`]). Both
//! run as children of the test process, are stopped by PID on drop and die
//! with the test process. Missing programs give
//! [`HarnessError::NotInstalled`] naming the Debian package (`postgresql`,
//! `haproxy`).
//!
//! Requirements and behaviour:
//! * Dovecot 2.3 (`apt-get install -y dovecot-imapd`). If it is missing,
//!   `start` returns [`HarnessError::NotInstalled`]: tests fail, not skip.
//! * Must run as root: Dovecot's `imap` refuses to run as root, so mail is
//!   owned by the system user `vmail`, created on first use (idempotent,
//!   safe across threads and processes).
//! * Every Dovecot started by a test process gets `SIGTERM` when that process
//!   dies, even without `Drop` (`PR_SET_PDEATHSIG` from a process-lifetime
//!   spawner thread, so a server started in a short-lived thread or kept in a
//!   `static` lives exactly as long as the process). Temp dirs of dead test
//!   processes are removed by the next test process. `TESTKIT_KEEP_DIR=1`
//!   keeps a server's dir (config, log, mail) after drop for debugging.
//! * Users live in a `passwd-file` used as passdb *and* userdb: delivering to
//!   an unknown user fails instead of creating a mailbox.
//! * Mail is Maildir (`~/Maildir`), hierarchy separator `.`.
//! * Mailbox changes reach IDLE clients after Dovecot's ~0.5 s batching.
//!   IDLE uses one inotify instance per IMAP process, all as user `vmail`;
//!   `start` raises `fs.inotify.max_user_instances` (see
//!   [`DovecotConfig::raise_inotify_instances`]) because beyond the limit
//!   Dovecot silently falls back to polling every 30 s.
//! * The config is sized for [`DovecotConfig::max_connections`] sessions:
//!   `mail_max_userip_connections` (default 10), imap `process_limit`,
//!   client limits of anvil/stats/login (default 1000), and imap-login in
//!   high-performance mode (by default every TLS session needs its own login
//!   process, max 100).
//! * Dovecot considers a connection whose remote IP equals its local IP
//!   "secured", so on loopback `disable_plaintext_auth = yes`
//!   ([`DovecotConfig::allow_plaintext_auth`] `= false`) does not actually
//!   refuse LOGIN on the plain port (no `LOGINDISABLED` either).
//! * Dovecot refuses passwords containing `\x01`, TAB, CR or LF at login,
//!   whatever the passdb ([`dovecot_accepts_password`]).
//! * Failed logins are answered after ~0.5 s (Dovecot flushes auth failures
//!   on a timer even with `auth_failure_delay = 0`); the anvil auth penalty
//!   that would delay later logins is disabled
//!   ([`DovecotConfig::disable_auth_penalty`]).

mod certs;
mod config;
mod dovecot;
mod error;
mod haproxy;
mod message;
pub mod netns;
mod nginx;
mod postgres;
mod system;

pub use certs::TestPki;
pub use config::{dovecot_accepts_password, DovecotConfig, DOVECOT_DEFAULT_CAPABILITIES};
pub use dovecot::{
    client_config_for, dovecot_available, Dovecot, DovecotSession, DOVEADM_BIN, DOVECOT_BIN,
    LDA_BIN, STARTUP_TIMEOUT,
};
pub use error::HarnessError;
pub use haproxy::{
    derive_haproxy_config, haproxy_available, Haproxy, HAPROXY_BIN, HOST_ONLY_GLOBAL_KEYWORDS,
    SHIPPED_HAPROXY_CFG,
};
pub use message::{message_with_body, simple_message};
pub use nginx::{derive_nginx_config, nginx_available, Nginx, NGINX_BIN, SHIPPED_NGINX_CONF};
pub use postgres::{
    postgres_available, postgres_bin_dir, Postgres, POSTGRES_DATABASE, POSTGRES_LIB_DIR,
    POSTGRES_ROLE, POSTGRES_STARTUP_TIMEOUT, POSTGRES_USER,
};
pub use system::{
    raise_inotify_instances, raise_inotify_watches, spawn_tied_to_process, MAIL_USER,
};

// Tests share servers across threads (e.g. in a `OnceLock`).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Dovecot>();
    assert_send_sync::<Postgres>();
    assert_send_sync::<Haproxy>();
    assert_send_sync::<HarnessError>();
};
