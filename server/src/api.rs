//! The REST API's bodies and errors: pure functions from bytes to validated values and
//! from values to responses. No I/O here.

use std::net::IpAddr;

use engine::{EndReason, Filter, Secret, Security, Since, SpecError};
use push::{Protocol, PushTarget};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::config::Config;
use crate::destination::{is_public, normalize_host};
use crate::error_code::ErrorCode;

/// Longest `device_id`.
pub const DEVICE_ID_LEN_MAX: usize = 128;
/// Longest `tag`, in bytes: an app's label for the account, carried back in every push.
pub const TAG_LEN_MAX: usize = push::message::Tag::LEN_MAX;
/// Most mailboxes one subscription may name (all watched over its one IMAP connection).
pub const MAILBOXES_MAX: usize = engine::spec::MAILBOXES_MAX;

/// An API error: the JSON `{"error": CODE, "message": TEXT}` with its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault, for `bad_request`.
    pub field: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn bad_request(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field),
            ..ApiError::new(ErrorCode::BadRequest, message)
        }
    }

    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn rate_limited(retry_after_secs: u64, message: &str) -> ApiError {
        ApiError {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..ApiError::new(ErrorCode::RateLimited, message)
        }
    }

    /// The HTTP status, owned by the code.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn to_response(&self) -> httpd::Response {
        let mut body = serde_json::json!({"error": self.code.as_str(), "message": self.message});
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        let mut response = httpd::Response::json(self.status(), body.to_string());
        if let Some(secs) = self.retry_after_secs {
            response = response.with_header("retry-after", secs.to_string());
        }
        response
    }

    /// How a session that never became ready is reported to the registering app.
    pub fn from_end_reason(reason: EndReason) -> ApiError {
        let msg = reason.to_string();
        match reason {
            EndReason::AuthRejected | EndReason::AuthUnavailable => {
                ApiError::new(ErrorCode::ImapAuthFailed, msg)
            }
            EndReason::Forbidden => ApiError::new(ErrorCode::ForbiddenDestination, msg),
            EndReason::Tls(_) => ApiError::new(ErrorCode::ImapTlsFailed, msg),
            EndReason::Timeout(_) => ApiError::new(ErrorCode::ImapTimeout, msg),
            EndReason::MailboxRejected => ApiError::bad_request("mailboxes", msg),
            EndReason::Protocol(_) => ApiError::new(ErrorCode::ImapProtocolError, msg),
            EndReason::Shutdown => ApiError::new(ErrorCode::ShuttingDown, msg),
            // Too many lookups waiting (a slow name server): worth a retry later.
            EndReason::ResolverBusy => ApiError::new(ErrorCode::ResolverBusy, msg),
            _ => ApiError::new(ErrorCode::ImapUnreachable, msg),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    imap: ImapBody,
    mailboxes: Option<Vec<String>>,
    device_id: Option<String>,
    since: Option<SinceBody>,
    new_mail: EndpointBody,
    reconnect: EndpointBody,
    filter: Option<FilterBody>,
    preview: Option<bool>,
    tag: Option<String>,
}

/// Push only for new messages that carry one of `headers` or come from one of `senders`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    headers: Option<Vec<String>>,
    senders: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImapBody {
    host: String,
    port: Option<u16>,
    security: Option<String>,
    username: String,
    password: Option<Zeroizing<String>>,
    oauth2_token: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinceBody {
    uidvalidity: u32,
    uidnext: u32,
}

/// The W3C PushSubscription JSON, plus `protocol`.
#[derive(Deserialize)]
struct EndpointBody {
    endpoint: String,
    keys: Option<KeysBody>,
    protocol: Option<String>,
}

#[derive(Deserialize)]
struct KeysBody {
    p256dh: String,
    auth: String,
}

/// A validated registration. Its `secret` is zeroized on drop.
#[derive(Debug)]
pub struct Registration {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub secret: Secret,
    pub mailboxes: Vec<String>,
    pub device_id: Option<String>,
    pub since: Option<Since>,
    pub new_mail: PushTarget,
    pub reconnect: PushTarget,
    /// Applies to the first mailbox; see [`engine::WatchSpec::filter`].
    pub filter: Option<Filter>,
    /// From, Subject and UID of the newest messages in the new-mail push (first mailbox;
    /// only with `new_mail.keys`, so it is encrypted end to end).
    pub preview: bool,
    /// The app's label, carried back in every push (see [`push::message`]).
    pub tag: Option<push::message::Tag>,
}

impl Registration {
    /// The key under which a registration replaces an earlier one.
    pub fn dedup_key(&self) -> [u8; 32] {
        digest(&[
            self.host.to_ascii_lowercase().as_bytes(),
            &self.port.to_be_bytes(),
            self.username.as_bytes(),
            self.device_id.as_deref().unwrap_or("").as_bytes(),
        ])
    }

    /// The routing key of the account, what a load balancer hashes on (`Imap-Push-Key`):
    /// base64url without padding of [`Registration::account_key`]. It names the account,
    /// not the device, so that all of an account's devices land on one node and the
    /// per-account cap holds across the cluster. Clients can compute it before they
    /// register.
    pub fn routing_key(&self) -> String {
        routing_key(&self.account_key())
    }

    /// The account whose sessions are capped (`limits.sessions_per_account_max`): host,
    /// port and username, whatever the device. The username is compared without case,
    /// since providers do: `Alice` and `alice` are one mailbox to them.
    ///
    /// It is SHA-256 over the host (as normalised: lower case, no trailing dot), the port
    /// in decimal and the lowercased username, joined by `\n`: what a client computes for
    /// the routing key. No two accounts share the input: a host name holds no `\n` and a
    /// port only digits.
    pub fn account_key(&self) -> [u8; 32] {
        let text = format!(
            "{}\n{}\n{}",
            self.host.to_ascii_lowercase(),
            self.port,
            self.username.to_lowercase()
        );
        let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(hash.as_ref());
        key
    }
}

/// The routing key (`Imap-Push-Key`, `"routing_key"`) of an account key.
pub fn routing_key(account: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(account)
}

/// SHA-256 of length-prefixed parts, so that no two part lists give one input.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part);
    }
    let mut key = [0; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// Parses and validates a `POST /v1/subscriptions` body, then zeroizes it.
pub fn parse_registration(body: &mut [u8], config: &Config) -> Result<Registration, ApiError> {
    // JSON is UTF-8 (RFC 8259 §8.1); serde_json skips ignored fields without checking them.
    if std::str::from_utf8(body).is_err() {
        body.zeroize();
        return Err(ApiError::bad_request("body", "the body is not UTF-8"));
    }
    let parsed = serde_json::from_slice::<RegisterBody>(body);
    body.zeroize();
    let parsed = parsed.map_err(|e| {
        // serde's message names the field and position, never the value.
        ApiError::bad_request("body", format!("invalid JSON: {}", redact_serde(&e)))
    })?;
    validate(parsed, config)
}

fn redact_serde(e: &serde_json::Error) -> String {
    // "invalid type: string \"...\"" would echo a value: keep only the category and place.
    let category = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "wrong shape",
        serde_json::error::Category::Eof => "unexpected end",
    };
    // Only these two messages quote a field *name*; others quote the offending *value*.
    let text = e.to_string();
    let field = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next())
        .filter(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|f| format!(" (field `{f}`)"))
        .unwrap_or_default();
    format!(
        "{category}{field} at line {} column {}",
        e.line(),
        e.column()
    )
}

fn validate(mut body: RegisterBody, config: &Config) -> Result<Registration, ApiError> {
    let imap = &mut body.imap;
    // Pacing, the per-host and per-account caps and the dedup key all key on the normal
    // form: case, a trailing dot or an address spelling must not make a new host.
    let host = normalize_host(imap.host.trim())
        .map_err(|e| ApiError::bad_request("imap.host", format!("not a host name: {e}")))?;
    if !config.allow_private_destinations && !host_may_be_public(&host) {
        return Err(ApiError::new(
            ErrorCode::ForbiddenDestination,
            "the IMAP host is not a public address",
        ));
    }
    let security = match imap.security.as_deref().unwrap_or("tls") {
        "tls" => Security::Tls,
        "starttls" => Security::StartTls,
        "plain" if config.allow_plain_imap => Security::DangerousPlain,
        "plain" => {
            return Err(ApiError::bad_request(
                "imap.security",
                "plain IMAP is not allowed by this server",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "imap.security",
                "must be tls, starttls or plain",
            ))
        }
    };
    let port = imap.port.unwrap_or(match security {
        Security::Tls => 993,
        _ => 143,
    });
    if port == 0 {
        return Err(ApiError::bad_request("imap.port", "must be 1 to 65535"));
    }
    if imap.username.is_empty() {
        return Err(ApiError::bad_request("imap.username", "must not be empty"));
    }
    let secret = match (imap.password.take(), imap.oauth2_token.take()) {
        (Some(mut p), None) => {
            Secret::Password(Zeroizing::new(std::mem::take(&mut *p).into_bytes()))
        }
        (None, Some(mut t)) => {
            Secret::OAuth2Token(Zeroizing::new(std::mem::take(&mut *t).into_bytes()))
        }
        _ => {
            return Err(ApiError::bad_request(
                "imap.password",
                "give exactly one of password and oauth2_token",
            ))
        }
    };
    if secret.bytes().is_empty() || secret.bytes().len() > engine::spec::CREDENTIAL_LEN_MAX {
        return Err(ApiError::bad_request(
            "imap.password",
            "must be 1 to 4096 bytes",
        ));
    }
    let mailboxes = body
        .mailboxes
        .take()
        .unwrap_or_else(|| vec!["INBOX".into()]);
    validate_mailboxes(&mailboxes)?;
    if let Some(id) = &body.device_id {
        if id.is_empty() || id.len() > DEVICE_ID_LEN_MAX {
            return Err(ApiError::bad_request("device_id", "must be 1 to 128 bytes"));
        }
    }
    let tag = body
        .tag
        .as_deref()
        .map(|t| push::message::Tag::new(t).ok_or(()))
        .transpose()
        .map_err(|()| {
            ApiError::bad_request("tag", format!("must be at most {TAG_LEN_MAX} bytes"))
        })?;
    let new_mail = endpoint(&body.new_mail, "new_mail", config)?;
    let reconnect = endpoint(&body.reconnect, "reconnect", config)?;
    let filter = body.filter.take().map(validate_filter).transpose()?;
    let preview = body.preview.unwrap_or(false);
    if preview && new_mail.keys().is_none() {
        // A preview is mail content: it goes only where the push service cannot read it.
        return Err(ApiError::bad_request(
            "preview",
            "a preview needs new_mail.keys: it is sent only end-to-end encrypted",
        ));
    }
    Ok(Registration {
        host,
        port,
        security,
        username: std::mem::take(&mut body.imap.username),
        secret,
        mailboxes,
        device_id: body.device_id,
        since: body.since.map(|s| Since {
            uidvalidity: s.uidvalidity,
            uidnext: s.uidnext,
        }),
        new_mail,
        reconnect,
        filter,
        preview,
        tag,
    })
}

fn validate_filter(body: FilterBody) -> Result<Filter, ApiError> {
    let filter = Filter {
        headers: body.headers.unwrap_or_default(),
        senders: body.senders.unwrap_or_default(),
    };
    filter.validate().map_err(|e| {
        let field = match e {
            SpecError::FilterHeader => "filter.headers",
            SpecError::FilterSender => "filter.senders",
            _ => "filter",
        };
        ApiError::bad_request(field, e.to_string())
    })?;
    Ok(filter)
}

fn validate_mailboxes(mailboxes: &[String]) -> Result<(), ApiError> {
    if mailboxes.is_empty() || mailboxes.len() > MAILBOXES_MAX {
        return Err(ApiError::bad_request(
            "mailboxes",
            format!("name 1 to {MAILBOXES_MAX} mailboxes"),
        ));
    }
    for name in mailboxes {
        // UTF-8 names are sent in modified UTF-7 (RFC 3501 5.1.3) by the engine.
        let ok = !name.is_empty()
            && name.len() <= engine::spec::MAILBOX_LEN_MAX
            && !name.chars().any(char::is_control);
        if !ok {
            return Err(ApiError::bad_request(
                "mailboxes",
                "mailbox names must be 1 to 1024 bytes without control characters",
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for name in mailboxes {
        let key = if name.eq_ignore_ascii_case("INBOX") {
            "INBOX".to_owned()
        } else {
            name.clone()
        };
        if !seen.insert(key) {
            return Err(ApiError::bad_request(
                "mailboxes",
                "a mailbox is named twice",
            ));
        }
    }
    Ok(())
}

fn endpoint(
    body: &EndpointBody,
    field: &'static str,
    config: &Config,
) -> Result<PushTarget, ApiError> {
    let fields = match field {
        "new_mail" => ("new_mail.endpoint", "new_mail.keys", "new_mail.protocol"),
        _ => ("reconnect.endpoint", "reconnect.keys", "reconnect.protocol"),
    };
    let protocol = match body.protocol.as_deref().unwrap_or("webpush") {
        "webpush" => Protocol::WebPush,
        "simplepush" => Protocol::SimplePush,
        _ => {
            return Err(ApiError::bad_request(
                fields.2,
                "must be webpush or simplepush",
            ))
        }
    };
    let url = body.endpoint.as_str();
    let http_allowed = config.allow_http_endpoints && url.starts_with("http://");
    if !(url.starts_with("https://") || http_allowed) {
        return Err(ApiError::bad_request(
            fields.0,
            if config.allow_http_endpoints {
                "must be an http or https URL"
            } else {
                "must be an https URL"
            },
        ));
    }
    let target = match (&body.keys, protocol) {
        (Some(keys), Protocol::WebPush) => PushTarget::web_push(url, &keys.p256dh, &keys.auth),
        (None, Protocol::WebPush) => PushTarget::web_push_unencrypted(url),
        (None, Protocol::SimplePush) => PushTarget::simple_push(url),
        (Some(_), Protocol::SimplePush) => {
            return Err(ApiError::bad_request(fields.1, "simplepush takes no keys"))
        }
    }
    .map_err(|e| {
        let at = if e.to_string().starts_with("keys") {
            fields.1
        } else {
            fields.0
        };
        ApiError::bad_request(at, e.to_string())
    })?;
    if !config.allow_private_destinations {
        let host = normalize_host(target.host())
            .map_err(|e| ApiError::bad_request(fields.0, format!("not a host name: {e}")))?;
        if !host_may_be_public(&host) {
            return Err(ApiError::new(
                ErrorCode::ForbiddenDestination,
                format!("the {field} endpoint is not a public address"),
            ));
        }
    }
    Ok(target)
}

/// Judges a normalised host without resolving it: an address literal by the destination
/// rule, a name by whether it can only be local. Names that may be public are resolved
/// before the login and their addresses judged (see [`crate::resolution`]).
pub fn host_may_be_public(normalized: &str) -> bool {
    if let Ok(ip) = normalized.parse::<IpAddr>() {
        return is_public(ip);
    }
    let host = normalized;
    !(host == "localhost" || host.ends_with(".localhost") || host.ends_with(".local"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::default()
    }

    fn body(imap: &str, endpoint: &str) -> Vec<u8> {
        format!(
            r#"{{"imap": {imap}, "new_mail": {{"endpoint": "{endpoint}"}},
                "reconnect": {{"endpoint": "{endpoint}"}}}}"#
        )
        .into_bytes()
    }

    const IMAP: &str = r#"{"host": "imap.example.org", "username": "alice", "password": "pw\"x"}"#;

    #[test]
    fn a_minimal_registration_gets_defaults_and_the_body_is_wiped() {
        let mut b = body(IMAP, "https://push.example/abc");
        let r = parse_registration(&mut b, &config()).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(r.port, 993);
        assert_eq!(r.security, Security::Tls);
        assert_eq!(r.mailboxes, vec!["INBOX".to_string()]);
        assert_eq!(r.secret.bytes(), b"pw\"x");
    }

    #[test]
    fn errors_name_the_field_and_never_echo_the_secret() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"host": "", "username": "a", "password": "sekrit"}"#,
                "https://p.example/x",
                "imap.host",
            ),
            (
                r#"{"host": "h.example", "username": "a"}"#,
                "https://p.example/x",
                "imap.password",
            ),
            (
                r#"{"host": "h.example", "username": "a", "password": "sekrit", "security": "ssl"}"#,
                "https://p.example/x",
                "imap.security",
            ),
            (
                r#"{"host": "h.example", "username": "a", "password": "sekrit", "security": "plain"}"#,
                "https://p.example/x",
                "imap.security",
            ),
            (IMAP, "http://p.example/x", "new_mail.endpoint"),
            (IMAP, "ftp://p.example/x", "new_mail.endpoint"),
        ];
        for (imap, endpoint, field) in cases {
            let e = parse_registration(&mut body(imap, endpoint), &config()).unwrap_err();
            assert_eq!(
                (e.status(), e.field),
                (400, Some(*field)),
                "{imap} {endpoint}: {e:?}"
            );
            assert!(!e.message.contains("sekrit"));
        }
        // A secret of the wrong type is not echoed by serde's message either.
        let mut b = br#"{"imap": {"host": "h", "username": "a", "password": 12345678}}"#.to_vec();
        let e = parse_registration(&mut b, &config()).unwrap_err();
        assert!(!e.message.contains("12345678"), "{}", e.message);
        let mut b = br#"{"imap": {"host": "h", "username": "a", "pasword": "sekrit"}}"#.to_vec();
        let e = parse_registration(&mut b, &config()).unwrap_err();
        assert!(e.message.contains("field `pasword`"), "{}", e.message);
        assert!(!e.message.contains("sekrit"), "{}", e.message);
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_and_wiped() {
        let mut b = body(IMAP, "https://p.example/x");
        let at = b.len() - 3;
        b[at] = 0xff;
        let e = parse_registration(&mut b, &config()).unwrap_err();
        assert_eq!((e.status(), e.field), (400, Some("body")));
        assert!(b.iter().all(|&x| x == 0));
    }

    #[test]
    fn private_destinations_are_forbidden_unless_allowed() {
        let imap = r#"{"host": "127.0.0.1", "username": "a", "password": "p"}"#;
        let e = parse_registration(&mut body(imap, "https://p.example/x"), &config()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ForbiddenDestination);
        let e = parse_registration(&mut body(IMAP, "https://10.0.0.1/x"), &config()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ForbiddenDestination);
        let e = parse_registration(&mut body(IMAP, "https://localhost/x"), &config()).unwrap_err();
        assert_eq!(e.status(), 403);
        let open = Config {
            allow_private_destinations: true,
            allow_http_endpoints: true,
            ..Config::default()
        };
        parse_registration(&mut body(imap, "http://127.0.0.1:9/x"), &open).unwrap();
    }

    #[test]
    fn end_reasons_map_to_documented_codes() {
        use engine::{TlsFailure, Waiting};
        let code = |r| ApiError::from_end_reason(r).code.as_str();
        assert_eq!(code(EndReason::AuthRejected), "imap_auth_failed");
        assert_eq!(
            code(EndReason::Tls(TlsFailure::Certificate)),
            "imap_tls_failed"
        );
        assert_eq!(code(EndReason::Timeout(Waiting::Greeting)), "imap_timeout");
        assert_eq!(
            code(EndReason::Connect(std::io::ErrorKind::ConnectionRefused)),
            "imap_unreachable"
        );
        assert_eq!(code(EndReason::Forbidden), "forbidden_destination");
        assert_eq!(code(EndReason::Timeout(Waiting::Resolve)), "imap_timeout");
        assert_eq!(code(EndReason::ResolverBusy), "resolver_busy");
    }

    fn with(extra: &str, new_mail: &str) -> Vec<u8> {
        format!(
            r#"{{"imap": {IMAP}, "new_mail": {new_mail},
                "reconnect": {{"endpoint": "https://p.example/r"}}{extra}}}"#
        )
        .into_bytes()
    }

    const KEYED: &str = r#"{"endpoint": "https://p.example/n", "keys": {
        "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}"#;

    #[test]
    fn filters_and_previews_are_validated() {
        let r = parse_registration(
            &mut with(
                r#", "filter": {"headers": ["Chat-Version"], "senders": ["Bob@Example.org"]},
                    "preview": true"#,
                KEYED,
            ),
            &config(),
        )
        .unwrap();
        assert!(r.preview);
        assert_eq!(
            r.filter,
            Some(Filter {
                headers: vec!["Chat-Version".into()],
                senders: vec!["Bob@Example.org".into()]
            })
        );
        let r = parse_registration(&mut with("", KEYED), &config()).unwrap();
        assert!(!r.preview && r.filter.is_none(), "both are off by default");
        let cases: &[(&str, &str, &str)] = &[
            (
                r#", "preview": true"#,
                r#"{"endpoint": "https://p.example/n"}"#,
                "preview",
            ),
            (r#", "filter": {}"#, KEYED, "filter"),
            (
                r#", "filter": {"headers": ["Chat:Version"]}"#,
                KEYED,
                "filter.headers",
            ),
            (
                r#", "filter": {"senders": ["not an address"]}"#,
                KEYED,
                "filter.senders",
            ),
            (r#", "filter": {"header": ["X"]}"#, KEYED, "body"),
        ];
        for (extra, new_mail, field) in cases {
            let e = parse_registration(&mut with(extra, new_mail), &config()).unwrap_err();
            assert_eq!((e.status(), e.field), (400, Some(*field)), "{extra}: {e:?}");
        }
    }

    #[test]
    fn the_routing_key_names_the_account_and_is_what_a_client_computes() {
        let mut a = parse_registration(&mut body(IMAP, "https://p.example/x"), &config()).unwrap();
        a.host = "imap.example.org".into();
        a.port = 993;
        a.username = "Alice@Example.org".into();
        // printf 'imap.example.org\n993\nalice@example.org' | sha256sum | xxd -r -p |
        // base64 | tr '+/' '-_' | tr -d '='
        assert_eq!(
            a.routing_key(),
            "G013u-KUmed8UIlA7v1kkKQj_wxuvnkNcf7vuXRhVWY"
        );
        let key = a.routing_key();
        a.device_id = Some("phone-2".into());
        assert_eq!(a.routing_key(), key, "every device of the account");
        a.host = "IMAP.example.org".into();
        assert_eq!(a.routing_key(), key);
        a.port = 143;
        assert_ne!(a.routing_key(), key);
    }

    #[test]
    fn dedup_key_ignores_host_case_but_not_device() {
        let mut a = parse_registration(&mut body(IMAP, "https://p.example/x"), &config()).unwrap();
        let k1 = a.dedup_key();
        a.host = "IMAP.example.org".into();
        assert_eq!(a.dedup_key(), k1);
        a.device_id = Some("phone-2".into());
        assert_ne!(a.dedup_key(), k1);
    }
}
