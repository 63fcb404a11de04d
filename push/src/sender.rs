//! One push, one blocking HTTP request, one [`Outcome`].
//!
//! Read first: RFC 8030 §5 (`POST` to the subscription, `201 Created`),
//! §5.2 `TTL`, §5.3 `Urgency`, §5.4 `Topic`, §8.4 (`404`/`410` mean the
//! subscription is gone, `413` payload too large, `429` with `Retry-After`);
//! RFC 8291 §4 (`Content-Encoding: aes128gcm`); RFC 8292 §3 (`Authorization:
//! vapid`); RFC 9110 §10.2.3 (`Retry-After` is seconds or an HTTP-date).
//! SimplePush (Mozilla, retired but still spoken by some servers) is
//! `PUT version=N` with `N` increasing per channel.
//!
//! Redirects are never followed: a push service does not redirect, and a
//! subscriber-chosen endpoint that does could bounce our POST (and its VAPID
//! token) to a host of its choosing.
//!
//! There is no pool, queue or retry loop here; see [`crate::Backoff`] for the
//! delays and the server crate for the scheduling. [`Sender`] is `Send +
//! Sync`: share one across a thread pool so its keep-alive connections are
//! shared too.

use crate::b64;
use crate::ece::{self, EceError};
use crate::endpoint::{Protocol, PushTarget};
use crate::vapid::VapidKey;
use ring::digest;
use ring::rand::SystemRandom;
use std::fmt;
use std::time::Duration;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{ConnectProxyConnector, Connector as _, RustlsConnector};

use crate::connector::{Forbidden, GuardedConnector, CONNECTION_ATTEMPT_DELAY};

/// What a push is about; sets `TTL` and `Urgency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// New messages in a mailbox: `Urgency: high`, short TTL.
    NewMail,
    /// The app must reconnect or re-authenticate: `Urgency: normal`, long
    /// TTL, since it matters even when read late.
    Reconnect,
}

/// An RFC 8030 §5.4 topic: at most 32 characters of the URL-safe base64
/// alphabet. A push service keeps only the newest undelivered message per
/// topic, so a burst of new mail reaches a sleeping phone as one message.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Topic(String);

impl Topic {
    pub const LEN_MAX: usize = 32;

    /// Validates a topic; `None` if longer than 32 characters, empty, or
    /// outside `[A-Za-z0-9_-]`.
    pub fn new(topic: &str) -> Option<Self> {
        let ok = !topic.is_empty()
            && topic.len() <= Self::LEN_MAX
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(topic.to_owned()))
    }

    /// A stable 32-character topic for a subscription id: base64url of the
    /// first 24 bytes of SHA-256 over a domain tag and the id. Hashing keeps
    /// the id itself (which may be meaningful to us) from the push service.
    pub fn for_subscription(subscription_id: &str) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"imap-push topic v1\0");
        ctx.update(subscription_id.as_bytes());
        let hash = ctx.finish();
        Self(b64::encode(&hash.as_ref()[..24]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.0)
    }
}

/// One push to send.
#[derive(Debug, Clone, Copy)]
pub struct Notification<'a> {
    pub kind: Kind,
    /// The JSON from [`crate::message`]; Web Push only.
    pub payload_json: &'a [u8],
    /// Web Push only. Pass one for [`Kind::NewMail`] and none (or a
    /// different one) for [`Kind::Reconnect`], or a reconnect request could
    /// replace, or be replaced by, a pending new-mail message.
    pub topic: Option<&'a Topic>,
    /// SimplePush only. The caller MUST make it strictly increase per
    /// subscription: servers drop versions not above the last one seen.
    pub simple_push_version: u64,
}

/// How a push ended. Exhaustive on purpose: the server maps every case to an
/// action (done, drop the subscription, retry later, report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// 2xx: the push service accepted the message.
    Delivered,
    /// 404 or 410: the subscription no longer exists; drop it.
    Gone,
    /// 413, or a payload over [`ece::PAYLOAD_LEN_MAX`] (nothing sent).
    TooLarge,
    /// 429: wait at least `retry_after` (from `Retry-After`, 60 s if absent).
    RateLimited { retry_after: Duration },
    /// 5xx (`status`), or a network error or timeout (`None`): try again
    /// later with [`crate::Backoff`].
    Retry { status: Option<u16> },
    /// Any other 4xx (and stray 1xx): the request itself is wrong for this
    /// service; retrying the same request will not help.
    Rejected { status: u16 },
    /// 3xx: not followed (see the module docs). Treat like `Rejected`.
    Redirect { status: u16 },
    /// Nothing was sent, and sending again will not change that.
    Unsendable(Unsendable),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsendable {
    /// The subscription's `p256dh` was refused by key agreement.
    PublicKeyRejected,
    /// The HTTP client refused the request (URL or header syntax).
    InvalidRequest,
    /// The endpoint's host resolves only to addresses the address filter refuses
    /// (loopback, private, ...): an SSRF attempt or a misconfiguration, never retried.
    ForbiddenDestination,
}

/// Decides whether the sender may connect to an address. See [`Sender::with_address_filter`].
pub type AddressFilter = std::sync::Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

/// Sender settings. Defaults suit a proxy talking to a handful of large push
/// services.
///
/// The timeouts bound how long one request can hold a sender thread: a push service
/// answers within a few hundred milliseconds, so a connection that takes seconds to set
/// up or to answer is failing, and the push is retried later with backoff rather than
/// waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// `TTL` for [`Kind::NewMail`]: one day; the next change sends a fresh
    /// notification anyway.
    pub new_mail_ttl_s: u32,
    /// `TTL` for [`Kind::Reconnect`]: one week, so a phone that was off still
    /// learns it must log in again.
    pub reconnect_ttl_s: u32,
    /// Whole-request deadline: DNS, connect, TLS, send, response. The phases below are
    /// each bounded too.
    pub timeout_ms: u64,
    /// DNS lookup, and then connect (every address, raced as in
    /// [`crate::connector`]) with the TLS handshake: each at most this long.
    pub connect_timeout_ms: u64,
    /// From the end of the handshake to the end of the response: sending the request,
    /// waiting for the response head, reading its (small) body.
    pub response_timeout_ms: u64,
    pub idle_connections_max: usize,
    pub idle_connections_per_host_max: usize,
    pub idle_age_s: u64,
    /// Honour `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` from the environment. Ignored (no
    /// proxy) once [`Sender::with_address_filter`] is set: see there why.
    pub use_env_proxy: bool,
}

/// [`SenderConfig::connect_timeout_ms`] by default.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 3_000;
/// [`SenderConfig::response_timeout_ms`] by default.
pub const RESPONSE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// [`SenderConfig::timeout_ms`] by default: the two phases above, and DNS.
pub const TIMEOUT_MS_DEFAULT: u64 = 10_000;

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            new_mail_ttl_s: 86_400,
            reconnect_ttl_s: 604_800,
            timeout_ms: TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            response_timeout_ms: RESPONSE_TIMEOUT_MS_DEFAULT,
            idle_connections_max: 64,
            idle_connections_per_host_max: 16,
            idle_age_s: 50,
            use_env_proxy: true,
        }
    }
}

/// Responses are drained up to this many bytes so the connection can be
/// reused; push services answer with empty or tiny bodies.
const RESPONSE_DRAIN_BYTES_MAX: u64 = 16 * 1024;
/// `Retry-After` absent or unreadable on a 429.
pub const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(60);
/// A `Retry-After` beyond a day is treated as a day.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(86_400);

/// A blocking push client over one pooled `ureq::Agent`. `Send + Sync`.
pub struct Sender {
    agent: ureq::Agent,
    config: SenderConfig,
    vapid: Option<(VapidKey, String)>,
    rng: SystemRandom,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("config", &self.config)
            .field("vapid", &self.vapid.as_ref().map(|(key, _)| key))
            .finish_non_exhaustive()
    }
}

/// A request ready for the wire. Kept apart from the I/O so the header
/// choices are testable without a socket.
#[derive(Debug)]
struct Prepared {
    method: Method,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Post,
    Put,
}

impl Sender {
    pub fn new(config: SenderConfig) -> Self {
        Self {
            agent: build_agent(&config, None),
            config,
            vapid: None,
            rng: SystemRandom::new(),
        }
    }

    /// Refuses to connect to any address `filter` rejects. Every resolved address is
    /// judged immediately before its `connect()` (see [`crate::connector`]), so a name
    /// whose answer changes after an earlier check (DNS rebinding) still reaches no
    /// refused address; a host left with no allowed address gives
    /// `Outcome::Unsendable(Unsendable::ForbiddenDestination)`.
    ///
    /// A proxy from the environment is not used from then on. Through an HTTP proxy the
    /// proxy, not this process, resolves the endpoint's name and connects to it, so
    /// neither the answer nor the address connected to could be judged; checking the
    /// name beforehand would leave exactly the rebinding window this filter closes. An
    /// operator who must send through a proxy runs without a filter and makes the proxy
    /// enforce the destination rule.
    pub fn with_address_filter(mut self, filter: AddressFilter) -> Self {
        self.agent = build_agent(&self.config, Some(filter));
        self
    }

    /// Adds `Authorization: vapid …` to Web Push requests. `subject` SHOULD
    /// be a `mailto:` or `https:` contact for the push service's operators.
    pub fn with_vapid(mut self, key: VapidKey, subject: impl Into<String>) -> Self {
        self.vapid = Some((key, subject.into()));
        self
    }

    pub fn vapid_key(&self) -> Option<&VapidKey> {
        self.vapid.as_ref().map(|(key, _)| key)
    }

    /// Sends one push and blocks until the response or the timeout.
    /// `now_unix` dates the VAPID token and reads an HTTP-date `Retry-After`.
    pub fn send(
        &self,
        target: &PushTarget,
        notification: &Notification<'_>,
        now_unix: u64,
    ) -> Outcome {
        self.send_then(target, notification, now_unix, || {})
    }

    /// [`Sender::send`], calling `leaving` once the request is encrypted and signed, just
    /// before it goes to the HTTP client: the moment a caller measures a push as leaving.
    /// Not called for a push that could not be built.
    pub fn send_then(
        &self,
        target: &PushTarget,
        notification: &Notification<'_>,
        now_unix: u64,
        leaving: impl FnOnce(),
    ) -> Outcome {
        match self.prepare(target, notification, now_unix) {
            Ok(prepared) => {
                leaving();
                self.execute(target.endpoint(), prepared, now_unix)
            }
            Err(outcome) => outcome,
        }
    }

    fn prepare(
        &self,
        target: &PushTarget,
        n: &Notification<'_>,
        now_unix: u64,
    ) -> Result<Prepared, Outcome> {
        match target.protocol() {
            Protocol::SimplePush => Ok(simple_push_request(n.simple_push_version)),
            Protocol::WebPush => self.web_push_request(target, n, now_unix),
        }
    }

    fn web_push_request(
        &self,
        target: &PushTarget,
        n: &Notification<'_>,
        now_unix: u64,
    ) -> Result<Prepared, Outcome> {
        let (ttl_s, urgency) = match n.kind {
            Kind::NewMail => (self.config.new_mail_ttl_s, "high"),
            Kind::Reconnect => (self.config.reconnect_ttl_s, "normal"),
        };
        let mut headers = vec![("TTL", ttl_s.to_string()), ("Urgency", urgency.to_owned())];
        if let Some(topic) = n.topic {
            headers.push(("Topic", topic.as_str().to_owned()));
        }
        let body = match target.keys() {
            Some(keys) => {
                let body = ece::encrypt(n.payload_json, keys.p256dh(), keys.auth(), &self.rng)
                    .map_err(encrypt_failure)?;
                headers.push(("Content-Encoding", "aes128gcm".to_owned()));
                headers.push(("Content-Type", "application/octet-stream".to_owned()));
                body
            }
            None => {
                // Same bound as encrypted bodies: a push service need not
                // accept more than 4096 octets either way.
                if n.payload_json.len() > ece::RECORD_SIZE as usize {
                    return Err(Outcome::TooLarge);
                }
                headers.push(("Content-Type", "application/json".to_owned()));
                n.payload_json.to_vec()
            }
        };
        if let Some((key, subject)) = &self.vapid {
            let value = key
                .authorization_header(target.origin(), subject, now_unix)
                .map_err(|_| Outcome::Retry { status: None })?;
            headers.push(("Authorization", value));
        }
        Ok(Prepared {
            method: Method::Post,
            headers,
            body,
        })
    }

    fn execute(&self, url: &str, prepared: Prepared, now_unix: u64) -> Outcome {
        let mut request = match prepared.method {
            Method::Post => self.agent.post(url),
            Method::Put => self.agent.put(url),
        };
        for (name, value) in &prepared.headers {
            request = request.header(*name, value);
        }
        match request.send(&prepared.body[..]) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // Reading to the end returns the connection to the pool; a
                // failure here only costs that reuse.
                let _ = response
                    .body_mut()
                    .with_config()
                    .limit(RESPONSE_DRAIN_BYTES_MAX)
                    .read_to_vec();
                classify(status, retry_after.as_deref(), now_unix)
            }
            Err(error) => classify_error(&error),
        }
    }
}

fn simple_push_request(version: u64) -> Prepared {
    Prepared {
        method: Method::Put,
        headers: vec![(
            "Content-Type",
            "application/x-www-form-urlencoded".to_owned(),
        )],
        body: format!("version={version}").into_bytes(),
    }
}

fn encrypt_failure(error: EceError) -> Outcome {
    match error {
        EceError::PayloadTooLarge { .. } => Outcome::TooLarge,
        EceError::PublicKeyRejected => Outcome::Unsendable(Unsendable::PublicKeyRejected),
        // RNG or library failure: a property of this host, not the target.
        _ => Outcome::Retry { status: None },
    }
}

/// Maps a response status to an [`Outcome`] (RFC 8030 §5, §8.4).
pub fn classify(status: u16, retry_after: Option<&str>, now_unix: u64) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        300..=399 => Outcome::Redirect { status },
        404 | 410 => Outcome::Gone,
        413 => Outcome::TooLarge,
        429 => Outcome::RateLimited {
            retry_after: retry_after
                .and_then(|v| parse_retry_after(v, now_unix))
                .unwrap_or(RETRY_AFTER_DEFAULT),
        },
        400..=499 => Outcome::Rejected { status },
        500..=599 => Outcome::Retry {
            status: Some(status),
        },
        _ => Outcome::Rejected { status },
    }
}

fn build_agent(config: &SenderConfig, filter: Option<AddressFilter>) -> ureq::Agent {
    let ms = Duration::from_millis;
    let response = Some(ms(config.response_timeout_ms));
    let mut builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(ms(config.timeout_ms)))
        .timeout_resolve(Some(ms(config.connect_timeout_ms)))
        .timeout_connect(Some(ms(config.connect_timeout_ms)))
        .timeout_send_request(response)
        .timeout_send_body(response)
        .timeout_recv_response(response)
        .timeout_recv_body(response)
        .max_idle_connections(config.idle_connections_max)
        .max_idle_connections_per_host(config.idle_connections_per_host_max)
        .max_idle_age(Duration::from_secs(config.idle_age_s))
        .user_agent(concat!("imap-push/", env!("CARGO_PKG_VERSION")));
    if !config.use_env_proxy || filter.is_some() {
        builder = builder.proxy(None);
    }
    // ureq's default chain with its TCP step replaced: an HTTP CONNECT proxy (only ever
    // configured without a filter), the guarded race, then TLS.
    let connector = ()
        .chain(ConnectProxyConnector::default())
        .chain(GuardedConnector {
            filter,
            stagger: CONNECTION_ATTEMPT_DELAY,
        })
        .chain(RustlsConnector::default());
    ureq::Agent::with_parts(builder.build(), connector, DefaultResolver::default())
}

fn classify_error(error: &ureq::Error) -> Outcome {
    match error {
        ureq::Error::Io(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && e.get_ref().is_some_and(|inner| inner.is::<Forbidden>()) =>
        {
            Outcome::Unsendable(Unsendable::ForbiddenDestination)
        }
        ureq::Error::BadUri(_)
        | ureq::Error::Http(_)
        | ureq::Error::RequireHttpsOnly(_)
        | ureq::Error::InvalidProxyUrl => Outcome::Unsendable(Unsendable::InvalidRequest),
        // Timeouts, DNS, refused connections, TLS and protocol errors: the
        // service or the path to it may recover.
        _ => Outcome::Retry { status: None },
    }
}

/// RFC 9110 §10.2.3:
///
/// ```text
/// Retry-After = HTTP-date / delay-seconds
/// delay-seconds = 1*DIGIT
/// ```
///
/// Only the IMF-fixdate form of HTTP-date is read (RFC 9110 §5.6.7 requires
/// senders to use it). A date in the past gives zero. Results are capped at
/// [`RETRY_AFTER_MAX`]. Never panics on any input.
pub fn parse_retry_after(value: &str, now_unix: u64) -> Option<Duration> {
    let value = value.trim();
    let secs = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Overlong digit strings saturate rather than fail.
        value.parse::<u64>().unwrap_or(u64::MAX)
    } else {
        parse_imf_fixdate(value)?.saturating_sub(now_unix)
    };
    Some(Duration::from_secs(secs).min(RETRY_AFTER_MAX))
}

/// RFC 9110 §5.6.7:
///
/// ```text
/// IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT
/// ; e.g. Sun, 06 Nov 1994 08:49:37 GMT
/// ```
///
/// Returns seconds since the Unix epoch.
fn parse_imf_fixdate(value: &str) -> Option<u64> {
    let b = value.as_bytes();
    if b.len() != 29 || b[3] != b',' || b[4] != b' ' || &b[25..] != b" GMT" {
        return None;
    }
    let (sp1, sp2, sp3, c1, c2) = (b[7], b[11], b[16], b[19], b[22]);
    if sp1 != b' ' || sp2 != b' ' || sp3 != b' ' || c1 != b':' || c2 != b':' {
        return None;
    }
    let day = digits(&b[5..7])?;
    let month = match &b[8..11] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let year = digits(&b[12..16])?;
    let (hour, minute, second) = (
        digits(&b[17..19])?,
        digits(&b[20..22])?,
        digits(&b[23..25])?,
    );
    if !(1..=31).contains(&day) || year < 1970 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (year ≥ 1970), after
/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
