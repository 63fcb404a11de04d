//! The server's log: `tracing` events written to stderr, as text or JSON lines, filtered
//! by `log_level` (an `EnvFilter` directive) or `RUST_LOG` when set.
//!
//! What it never does: write a password, token, push key, endpoint URL (only its origin,
//! scheme://host:port) or subscription id. Events name IMAP hosts, push origins, reason
//! codes and counts only; `server/tests/log_secrets.rs` searches a trace-level log for
//! every secret of a run. Lines that can repeat per session or per push pass through
//! [`crate::log_limit`] first.
//!
//! Only this crate's events and httpd's and push's (none today) are written: there is no
//! bridge from the `log` crate, so rustls and the engine stay silent.

use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The variable that overrides `log_level`, as everywhere in the Rust world.
pub const LOG_ENV: &str = "RUST_LOG";

/// Default of `log_level`.
pub const LOG_LEVEL_DEFAULT: &str = "info";

/// `log_format`: one line per event, as text or as a JSON object.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Parses a filter directive (`"info"`, `"server=debug,warn"`); the error says
/// what is wrong with it.
pub fn parse_filter(directive: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(directive)
        .map_err(|e| format!("{directive:?} is not a filter directive: {e}"))
}

/// Where the level in force comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LevelSource {
    Config,
    /// `RUST_LOG` is set: it wins over `log_level`, at start and on SIGHUP.
    Env,
}

/// The directive in force: `RUST_LOG` if set (and not empty), else `log_level`.
pub fn effective_directive(log_level: &str, env: Option<String>) -> (String, LevelSource) {
    match env.filter(|v| !v.trim().is_empty()) {
        Some(v) => (v, LevelSource::Env),
        None => (log_level.to_owned(), LevelSource::Config),
    }
}

/// Changes the level of the running log (SIGHUP).
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    /// Replaces the filter; `directive` must have passed [`parse_filter`] already.
    pub fn set_filter(&self, directive: &str) -> Result<(), String> {
        let filter = parse_filter(directive)?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber: stderr, `format`, filtered by `directive`.
pub fn init(directive: &str, format: LogFormat) -> Result<LogHandle, String> {
    let (filter, handle) = reload::Layer::new(parse_filter(directive)?);
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(false))
            .try_init(),
    };
    installed.map_err(|e| e.to_string())?;
    Ok(LogHandle { filter: handle })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_and_nonsense_is_refused() {
        for ok in [
            "info",
            "server=debug,warn",
            "trace",
            "off",
            "warn,httpd=info",
        ] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["server=loud", "info,=debug=x", "[{"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rust_log_wins_unless_empty() {
        assert_eq!(
            effective_directive("info", Some("debug".into())),
            ("debug".into(), LevelSource::Env)
        );
        assert_eq!(
            effective_directive("info", Some(" ".into())),
            ("info".into(), LevelSource::Config)
        );
        assert_eq!(
            effective_directive("warn", None),
            ("warn".into(), LevelSource::Config)
        );
    }
}
