//! What SIGHUP changes: the config file read again is compared key by key with the one
//! in force. `log_level` and the API's certificate (`tls`, when the API serves HTTPS
//! before and after) apply at once; every other changed key needs a restart and is named
//! (never its value: `api_token` is one of them).

use crate::config::{Config, LimitsConfig};

/// Keys SIGHUP applies without a restart.
pub const APPLIED_KEYS: [&str; 2] = ["log_level", "tls"];

/// The keys whose value differs between `running` and `new` and which SIGHUP does not
/// apply, in the order of [`Config`]'s fields.
pub fn restart_keys(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    // Destructured without `..`: a new field must be placed here before this compiles.
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
        tls_compact,
        vapid_subject,
        coalesce_window_ms,
        register_timeout_secs,
        shutdown_grace_secs,
        api_token,
        api_token_file,
        tls,
        trusted_proxies,
        limits,
        log_level: _,
        log_format,
        require_endpoint_verification,
        verification_timeout_secs,
        journal,
        node_id,
        heartbeat_secs,
        node_lost_after_secs,
    } = new;
    macro_rules! compare {
        ($($field:ident),*) => {
            $(if running.$field != *$field {
                keys.push(stringify!($field));
            })*
        };
    }
    compare!(
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
        tls_compact,
        vapid_subject,
        coalesce_window_ms,
        register_timeout_secs,
        shutdown_grace_secs,
        api_token,
        api_token_file,
        trusted_proxies,
        log_format,
        require_endpoint_verification,
        verification_timeout_secs,
        journal,
        node_id,
        heartbeat_secs,
        node_lost_after_secs
    );
    // HTTPS cannot be turned on or off in a running server; new files for it can.
    if running.tls.is_some() != tls.is_some() {
        keys.push("tls");
    }
    keys.extend(limits_changed(&running.limits, limits));
    keys
}

fn limits_changed(running: &LimitsConfig, new: &LimitsConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let LimitsConfig {
        body_bytes_max,
        headers_max,
        header_bytes_max,
        sessions_max,
        registrations_per_minute_per_ip,
        pending_registrations_max,
        sessions_per_host_max,
        sessions_per_account_max,
        resolver_threads,
        resolver_queue_len,
        resolve_timeout_ms,
        logins_per_second_per_host,
        login_queue_secs,
        push_permits_per_origin,
        push_queue_max,
        api_connections_max,
        api_connections_per_client_max,
    } = new;
    macro_rules! compare {
        ($($field:ident),*) => {
            $(if running.$field != *$field {
                keys.push(concat!("limits.", stringify!($field)));
            })*
        };
    }
    compare!(
        body_bytes_max,
        headers_max,
        header_bytes_max,
        sessions_max,
        registrations_per_minute_per_ip,
        pending_registrations_max,
        sessions_per_host_max,
        sessions_per_account_max,
        resolver_threads,
        resolver_queue_len,
        resolve_timeout_ms,
        logins_per_second_per_host,
        login_queue_secs,
        push_permits_per_origin,
        push_queue_max,
        api_connections_max,
        api_connections_per_client_max
    );
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;

    fn tls(cert: &str) -> Option<TlsConfig> {
        Some(TlsConfig {
            cert_file: cert.into(),
            key_file: "key.pem".into(),
        })
    }

    #[test]
    fn the_applied_keys_need_no_restart_and_the_others_are_named() {
        let running = Config {
            tls: tls("a.pem"),
            ..Config::default()
        };
        let new = Config {
            log_level: "debug".into(),
            tls: tls("b.pem"),
            ..running.clone()
        };
        assert!(restart_keys(&running, &new).is_empty());
        let new = Config {
            api_token: Some("a-new-token-0123456789".into()),
            sender_threads: 3,
            log_format: crate::logging::LogFormat::Json,
            limits: LimitsConfig {
                sessions_max: 5,
                ..LimitsConfig::default()
            },
            tls: None,
            ..running.clone()
        };
        assert_eq!(
            restart_keys(&running, &new),
            [
                "sender_threads",
                "api_token",
                "log_format",
                "tls",
                "limits.sessions_max"
            ]
        );
    }
}
