//! Where a push goes: a validated [`PushTarget`].
//!
//! Read first: W3C Push API, `PushSubscription` (`endpoint`, `getKey("p256dh")`,
//! `getKey("auth")`, and its `toJSON()` form); RFC 8291 §2.1 and §3.2 (the key
//! and the 16-octet auth secret); RFC 3986 §3 for the URL pieces we check.
//!
//! An endpoint URL is a capability: anyone who knows it can push to the
//! device. So `Debug` never prints it whole, and logs MUST go through
//! [`redacted_url`], which keeps `scheme://host[:port]` only.
//!
//! Validation here is syntactic. Refusing endpoints on private networks (so a
//! subscriber cannot make us POST to internal services) is a policy the caller
//! applies, with [`PushTarget::host`].

use crate::b64;
use crate::ece;
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::rand::SystemRandom;
use serde::Deserialize;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Longest endpoint we accept. Real ones (FCM, Mozilla autopush, Apple,
/// UnifiedPush distributors) are well under 1 KiB.
pub const ENDPOINT_LEN_MAX: usize = 2048;

/// Which wire protocol the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RFC 8030 `POST` of a message, encrypted (RFC 8291) when keys are known.
    WebPush,
    /// Mozilla SimplePush: `PUT version=N`, no payload.
    SimplePush,
}

/// The subscription's encryption keys. `Debug` prints neither.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Keys {
    p256dh: [u8; ece::PUBLIC_KEY_LEN],
    auth: [u8; ece::AUTH_SECRET_LEN],
}

impl Keys {
    /// Validates the pieces: `p256dh` must be an uncompressed point on P-256.
    pub fn new(
        p256dh: [u8; ece::PUBLIC_KEY_LEN],
        auth: [u8; ece::AUTH_SECRET_LEN],
    ) -> Result<Self, TargetError> {
        check_point(&p256dh)?;
        Ok(Self { p256dh, auth })
    }

    /// Decodes the base64url strings a browser gives (`getKey` encoded, or
    /// `toJSON().keys`), padded or not.
    pub fn from_b64url(p256dh: &str, auth: &str) -> Result<Self, TargetError> {
        let p256dh =
            decode_fixed::<{ ece::PUBLIC_KEY_LEN }>(p256dh).map_err(TargetError::P256dh)?;
        let auth = decode_fixed::<{ ece::AUTH_SECRET_LEN }>(auth).map_err(TargetError::Auth)?;
        Self::new(p256dh, auth)
    }

    pub fn p256dh(&self) -> &[u8; ece::PUBLIC_KEY_LEN] {
        &self.p256dh
    }

    pub fn auth(&self) -> &[u8; ece::AUTH_SECRET_LEN] {
        &self.auth
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// A validated push destination. Build it with [`PushTarget::web_push`],
/// [`PushTarget::web_push_unencrypted`], [`PushTarget::simple_push`] or
/// [`PushTarget::from_subscription_json`].
#[derive(Clone, PartialEq, Eq)]
pub struct PushTarget {
    endpoint: Box<str>,
    /// `scheme://host[:port]`, lowercase, default port omitted (RFC 6454
    /// serialization); the VAPID `aud` and the log form.
    origin: Origin,
    /// Boxed: a server keeps two targets per subscription, and a reconnect or UnifiedPush
    /// target has no keys; inline, every target carried 82 bytes for them.
    keys: Option<Box<Keys>>,
    protocol: Protocol,
}

/// A target is four words: endpoint, origin, keys pointer, protocol (see `keys`).
const _: () = assert!(std::mem::size_of::<PushTarget>() <= 48);

/// Where a target's origin is. A server keeps one target per subscription and often
/// thousands to one push service, so the origin is not copied when the endpoint begins
/// with it as written (lowercase, default port omitted: the usual case); only other
/// endpoints (`HTTPS://Push.Example:443/...`) keep it apart.
#[derive(Clone, PartialEq, Eq)]
enum Origin {
    /// The endpoint's first `len` bytes.
    Prefix(u16),
    Owned(Box<str>),
}

impl Origin {
    fn of(endpoint: &str, origin: String) -> Origin {
        match u16::try_from(origin.len()) {
            Ok(len) if endpoint.starts_with(origin.as_str()) => Origin::Prefix(len),
            _ => Origin::Owned(origin.into_boxed_str()),
        }
    }
}

impl PushTarget {
    /// A Web Push subscription with keys: bodies are encrypted.
    pub fn web_push(
        endpoint: &str,
        p256dh_b64url: &str,
        auth_b64url: &str,
    ) -> Result<Self, TargetError> {
        let keys = Keys::from_b64url(p256dh_b64url, auth_b64url)?;
        Self::new(endpoint, Some(keys), Protocol::WebPush)
    }

    /// A Web Push endpoint without keys (UnifiedPush-style): the JSON payload
    /// goes in clear, so the push service can read it.
    pub fn web_push_unencrypted(endpoint: &str) -> Result<Self, TargetError> {
        Self::new(endpoint, None, Protocol::WebPush)
    }

    /// A SimplePush endpoint: only a version number is ever sent.
    pub fn simple_push(endpoint: &str) -> Result<Self, TargetError> {
        Self::new(endpoint, None, Protocol::SimplePush)
    }

    /// Any combination; keys are ignored by SimplePush, so they are refused.
    pub fn new(
        endpoint: &str,
        keys: Option<Keys>,
        protocol: Protocol,
    ) -> Result<Self, TargetError> {
        if protocol == Protocol::SimplePush && keys.is_some() {
            return Err(TargetError::KeysWithSimplePush);
        }
        let origin = parse_endpoint(endpoint)
            .map_err(TargetError::Endpoint)?
            .origin();
        Ok(Self {
            origin: Origin::of(endpoint, origin),
            endpoint: endpoint.into(),
            keys: keys.map(Box::new),
            protocol,
        })
    }

    /// Parses `PushSubscription.toJSON()`:
    /// `{"endpoint": "...", "expirationTime": null, "keys": {"p256dh": "...", "auth": "..."}}`.
    /// Both keys are required; use [`PushTarget::web_push_unencrypted`] for
    /// endpoints that have none.
    pub fn from_subscription_json(json: &str) -> Result<Self, TargetError> {
        #[derive(Deserialize)]
        struct Subscription<'a> {
            #[serde(borrow)]
            endpoint: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow)]
            keys: Option<SubscriptionKeys<'a>>,
        }
        #[derive(Deserialize)]
        struct SubscriptionKeys<'a> {
            #[serde(borrow)]
            p256dh: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow)]
            auth: Option<std::borrow::Cow<'a, str>>,
        }
        let sub: Subscription<'_> = serde_json::from_str(json).map_err(|_| TargetError::Json)?;
        let endpoint = sub
            .endpoint
            .ok_or(TargetError::Endpoint(EndpointProblem::Missing))?;
        let keys = sub.keys.ok_or(TargetError::P256dh(KeyProblem::Missing))?;
        let p256dh = keys
            .p256dh
            .ok_or(TargetError::P256dh(KeyProblem::Missing))?;
        let auth = keys.auth.ok_or(TargetError::Auth(KeyProblem::Missing))?;
        Self::web_push(&endpoint, &p256dh, &auth)
    }

    /// The full URL. It is a capability: never log it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `scheme://host[:port]`, the RFC 8292 `aud`.
    pub fn origin(&self) -> &str {
        match &self.origin {
            Origin::Prefix(len) => &self.endpoint[..usize::from(*len)],
            Origin::Owned(origin) => origin,
        }
    }

    /// The host as written (lowercase; IPv6 without brackets), for the
    /// caller's address policy.
    pub fn host(&self) -> &str {
        let after_scheme = self.origin().split_once("://").map_or("", |(_, rest)| rest);
        split_host_port(after_scheme)
            .0
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    pub fn keys(&self) -> Option<&Keys> {
        self.keys.as_deref()
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The log form of the endpoint.
    pub fn redacted(&self) -> String {
        format!("{}/…", self.origin())
    }
}

impl fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushTarget")
            .field("endpoint", &format_args!("{}/…", self.origin()))
            .field("keys", &self.keys)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// `scheme://host[:port]/…` for logs; never the path, query or user info.
/// Input that does not parse as an endpoint gives `<invalid url>`, so garbage
/// (which may itself be a secret pasted in the wrong field) is never echoed.
pub fn redacted_url(url: &str) -> String {
    match parse_endpoint(url) {
        Ok(parts) => format!("{}/…", parts.origin()),
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// What is wrong with a subscription, naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetError {
    /// The `endpoint` field.
    Endpoint(EndpointProblem),
    /// The `keys.p256dh` field.
    P256dh(KeyProblem),
    /// The `keys.auth` field.
    Auth(KeyProblem),
    /// SimplePush carries no payload, so keys mean a confused caller.
    KeysWithSimplePush,
    /// The subscription JSON is not an object of strings.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointProblem {
    Missing,
    TooLong {
        len: usize,
    },
    /// Not visible ASCII: whitespace, control characters or non-ASCII
    /// (internationalized hosts must arrive punycoded).
    Character,
    /// Neither `https://` nor `http://`.
    Scheme,
    Host,
    Port,
    /// `user:password@` in the URL: credentials do not belong there.
    UserInfo,
    /// `#fragment`: never sent in HTTP, so a sign of a wrong URL.
    Fragment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    Missing,
    NotBase64Url,
    Length {
        len: usize,
        expected: usize,
    },
    /// `p256dh` is not an uncompressed point (0x04 || X || Y) on P-256.
    NotOnCurve,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Endpoint(p) => write!(f, "endpoint: {p}"),
            Self::P256dh(p) => write!(f, "keys.p256dh: {p}"),
            Self::Auth(p) => write!(f, "keys.auth: {p}"),
            Self::KeysWithSimplePush => f.write_str("keys: SimplePush takes no keys"),
            Self::Json => f.write_str("subscription: not a PushSubscription JSON object"),
        }
    }
}

impl fmt::Display for EndpointProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("missing"),
            Self::TooLong { len } => write!(f, "{len} bytes, at most {ENDPOINT_LEN_MAX}"),
            Self::Character => f.write_str("contains a character outside visible ASCII"),
            Self::Scheme => f.write_str("scheme is not https or http"),
            Self::Host => f.write_str("host is missing or malformed"),
            Self::Port => f.write_str("port is not a number in 1..=65535"),
            Self::UserInfo => f.write_str("contains user info"),
            Self::Fragment => f.write_str("contains a fragment"),
        }
    }
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("missing"),
            Self::NotBase64Url => f.write_str("not base64url"),
            Self::Length { len, expected } => {
                write!(f, "decodes to {len} bytes, expected {expected}")
            }
            Self::NotOnCurve => f.write_str("not an uncompressed P-256 point"),
        }
    }
}

impl std::error::Error for TargetError {}

fn decode_fixed<const N: usize>(text: &str) -> Result<[u8; N], KeyProblem> {
    if text.is_empty() {
        return Err(KeyProblem::Missing);
    }
    let bytes = b64::decode(text).ok_or(KeyProblem::NotBase64Url)?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| KeyProblem::Length { len, expected: N })
}

/// ring has no "validate a public key" call, so agree with a throwaway
/// ephemeral key: ring checks the point is on the curve before using it.
/// One ECDH (tens of microseconds) at subscription time saves a failing
/// encryption on every push.
fn check_point(p256dh: &[u8; ece::PUBLIC_KEY_LEN]) -> Result<(), TargetError> {
    if p256dh[0] != 0x04 {
        return Err(TargetError::P256dh(KeyProblem::NotOnCurve));
    }
    let rng = SystemRandom::new();
    let throwaway = EphemeralPrivateKey::generate(&ECDH_P256, &rng)
        .map_err(|_| TargetError::P256dh(KeyProblem::NotOnCurve))?;
    agreement::agree_ephemeral(
        throwaway,
        &UnparsedPublicKey::new(&ECDH_P256, p256dh),
        |_| (),
    )
    .map_err(|_| TargetError::P256dh(KeyProblem::NotOnCurve))
}

/// The pieces of an endpoint we use, borrowed from it.
struct UrlParts<'a> {
    https: bool,
    host: &'a str,
    port: Option<u16>,
}

impl UrlParts<'_> {
    /// RFC 6454 §6.2 serialization: lowercase, default port omitted.
    fn origin(&self) -> String {
        let (scheme, default_port) = if self.https {
            ("https", 443)
        } else {
            ("http", 80)
        };
        let host = self.host.to_ascii_lowercase();
        match self.port {
            Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
            _ => format!("{scheme}://{host}"),
        }
    }
}

/// A subset of RFC 3986 §3 that push endpoints use:
///
/// ```text
/// endpoint  = scheme "://" authority [ path-abempty ] [ "?" query ]
/// scheme    = "https" / "http"                 ; case-insensitive
/// authority = host [ ":" port ]                ; no userinfo
/// host      = "[" IPv6address "]" / reg-name   ; reg-name: ALPHA / DIGIT / "-" / "."
/// ```
fn parse_endpoint(url: &str) -> Result<UrlParts<'_>, EndpointProblem> {
    if url.is_empty() {
        return Err(EndpointProblem::Missing);
    }
    if url.len() > ENDPOINT_LEN_MAX {
        return Err(EndpointProblem::TooLong { len: url.len() });
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EndpointProblem::Character);
    }
    let (scheme, rest) = url.split_once("://").ok_or(EndpointProblem::Scheme)?;
    let https = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return Err(EndpointProblem::Scheme);
    };
    if rest.contains('#') {
        return Err(EndpointProblem::Fragment);
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.contains('@') {
        return Err(EndpointProblem::UserInfo);
    }
    let (host, port) = split_host_port(authority);
    check_host(host)?;
    let port = match port {
        None => None,
        Some(digits) => Some(parse_port(digits)?),
    };
    Ok(UrlParts { https, host, port })
}

/// Splits `host[:port]`, minding IPv6 literals in brackets.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => {
                let (host, rest) = authority.split_at(end + 1);
                (host, rest.strip_prefix(':'))
            }
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

fn check_host(host: &str) -> Result<(), EndpointProblem> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(EndpointProblem::Host)?;
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| EndpointProblem::Host);
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with(['.', '-'])
        && !host.contains("..");
    if ok {
        Ok(())
    } else {
        Err(EndpointProblem::Host)
    }
}

fn parse_port(digits: &str) -> Result<u16, EndpointProblem> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointProblem::Port);
    }
    match digits.parse::<u16>() {
        Ok(0) | Err(_) => Err(EndpointProblem::Port),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256DH: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const FCM: &str = "https://fcm.googleapis.com/fcm/send/dpH5lCsTSSM:APA91bHqjZxM0VImWWqDRN7U0a3AycjUf4O-byuxb_wJsKRaKvV_iKw56s16ekq6FUqoCF7k2nICUpd8fHPxVTgqLunFeVeB9lLCQZyohyAztTH8ZQL9WCxKpA6dvTG_TUIhQUFq_n";

    #[test]
    fn parses_web_push_subscription() {
        let t = PushTarget::web_push(FCM, P256DH, AUTH).unwrap();
        assert_eq!(t.protocol(), Protocol::WebPush);
        assert_eq!(t.origin(), "https://fcm.googleapis.com");
        assert_eq!(t.host(), "fcm.googleapis.com");
        assert_eq!(t.endpoint(), FCM);
        let keys = t.keys().unwrap();
        assert_eq!(keys.p256dh()[0], 0x04);
        assert_eq!(keys.auth().len(), 16);
    }

    #[test]
    fn parses_subscription_json() {
        let json = format!(
            r#"{{"endpoint":"{FCM}","expirationTime":null,"keys":{{"p256dh":"{P256DH}","auth":"{AUTH}"}}}}"#
        );
        let t = PushTarget::from_subscription_json(&json).unwrap();
        assert_eq!(t.origin(), "https://fcm.googleapis.com");

        let no_auth = format!(r#"{{"endpoint":"{FCM}","keys":{{"p256dh":"{P256DH}"}}}}"#);
        assert_eq!(
            PushTarget::from_subscription_json(&no_auth),
            Err(TargetError::Auth(KeyProblem::Missing))
        );
        let no_keys = format!(r#"{{"endpoint":"{FCM}"}}"#);
        assert_eq!(
            PushTarget::from_subscription_json(&no_keys),
            Err(TargetError::P256dh(KeyProblem::Missing))
        );
        assert_eq!(
            PushTarget::from_subscription_json(r#"{"keys":{}}"#),
            Err(TargetError::Endpoint(EndpointProblem::Missing))
        );
        assert_eq!(
            PushTarget::from_subscription_json("[1,2]"),
            Err(TargetError::Json)
        );
        assert_eq!(
            PushTarget::from_subscription_json(r#"{"endpoint":5}"#),
            Err(TargetError::Json)
        );
    }

    #[test]
    fn key_errors_name_the_field() {
        let e = PushTarget::web_push(FCM, "not base64!", AUTH).unwrap_err();
        assert_eq!(e, TargetError::P256dh(KeyProblem::NotBase64Url));
        assert_eq!(e.to_string(), "keys.p256dh: not base64url");

        let e = PushTarget::web_push(FCM, &b64::encode(&[4; 64]), AUTH).unwrap_err();
        assert_eq!(
            e,
            TargetError::P256dh(KeyProblem::Length {
                len: 64,
                expected: 65
            })
        );

        let e = PushTarget::web_push(FCM, P256DH, "AAAA").unwrap_err();
        assert_eq!(
            e,
            TargetError::Auth(KeyProblem::Length {
                len: 3,
                expected: 16
            })
        );
        assert_eq!(e.to_string(), "keys.auth: decodes to 3 bytes, expected 16");

        let e = PushTarget::web_push(FCM, P256DH, "").unwrap_err();
        assert_eq!(e, TargetError::Auth(KeyProblem::Missing));

        // Right length, wrong point: a flipped Y coordinate byte, and a
        // compressed-point prefix.
        let mut bad = b64::decode(P256DH).unwrap();
        bad[40] ^= 0xff;
        let e = PushTarget::web_push(FCM, &b64::encode(&bad), AUTH).unwrap_err();
        assert_eq!(e, TargetError::P256dh(KeyProblem::NotOnCurve));
        bad = b64::decode(P256DH).unwrap();
        bad[0] = 0x02;
        let e = PushTarget::web_push(FCM, &b64::encode(&bad), AUTH).unwrap_err();
        assert_eq!(e, TargetError::P256dh(KeyProblem::NotOnCurve));
    }

    #[test]
    fn padded_base64url_is_accepted() {
        let padded_auth = format!("{AUTH}==");
        assert!(PushTarget::web_push(FCM, P256DH, &padded_auth).is_ok());
    }

    #[test]
    fn endpoint_errors() {
        use EndpointProblem as P;
        let cases: &[(&str, EndpointProblem)] = &[
            ("", P::Missing),
            ("ftp://example.com/x", P::Scheme),
            ("example.com/x", P::Scheme),
            ("javascript://alert(1)", P::Scheme),
            ("https:///x", P::Host),
            ("https://exa mple.com/x", P::Character),
            ("https://example.com/\u{e9}", P::Character),
            ("https://example.com/x\r\nHost: evil", P::Character),
            ("https://user:pw@example.com/x", P::UserInfo),
            ("https://example.com/x#frag", P::Fragment),
            ("https://example.com:0/x", P::Port),
            ("https://example.com:65536/x", P::Port),
            ("https://example.com:/x", P::Port),
            ("https://example.com:8a/x", P::Port),
            ("https://exa_mple.com/x", P::Host),
            ("https://.example.com/x", P::Host),
            ("https://[::1/x", P::Host),
            ("https://[zz::1]/x", P::Host),
        ];
        for (url, problem) in cases {
            assert_eq!(
                PushTarget::simple_push(url),
                Err(TargetError::Endpoint(*problem)),
                "{url:?}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(ENDPOINT_LEN_MAX));
        assert!(matches!(
            PushTarget::simple_push(&long),
            Err(TargetError::Endpoint(P::TooLong { .. }))
        ));
    }

    #[test]
    fn origins() {
        let cases = [
            ("https://Push.Example.com/a?b", "https://push.example.com"),
            ("HTTPS://example.com:443/a", "https://example.com"),
            ("https://example.com:8443/a", "https://example.com:8443"),
            ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
            ("http://example.com:80", "http://example.com"),
            ("https://[2001:db8::1]:444/p", "https://[2001:db8::1]:444"),
            ("https://example.com?x=1", "https://example.com"),
        ];
        for (url, origin) in cases {
            let target = PushTarget::simple_push(url).unwrap();
            assert_eq!(target.origin(), origin, "{url}");
            // Not copied when the endpoint begins with it, as most do.
            let copied = matches!(target.origin, Origin::Owned(_));
            assert_eq!(copied, !url.starts_with(origin), "{url}");
        }
        assert_eq!(
            PushTarget::simple_push("https://[2001:db8::1]/p")
                .unwrap()
                .host(),
            "2001:db8::1"
        );
    }

    #[test]
    fn simple_push_refuses_keys() {
        let keys = Keys::from_b64url(P256DH, AUTH).unwrap();
        assert_eq!(
            PushTarget::new(FCM, Some(keys), Protocol::SimplePush),
            Err(TargetError::KeysWithSimplePush)
        );
    }

    #[test]
    fn debug_and_redaction_hide_secrets() {
        let t = PushTarget::web_push(FCM, P256DH, AUTH).unwrap();
        let debug = format!("{t:?}");
        assert_eq!(
            debug,
            "PushTarget { endpoint: https://fcm.googleapis.com/…, keys: Some(Keys(<redacted>)), protocol: WebPush }"
        );
        assert!(!debug.contains("APA91"));
        assert_eq!(t.redacted(), "https://fcm.googleapis.com/…");
        assert_eq!(redacted_url(FCM), "https://fcm.googleapis.com/…");
        assert_eq!(
            redacted_url("https://user:secret@example.com/path"),
            "<invalid url>"
        );
        assert_eq!(redacted_url("some secret token"), "<invalid url>");
    }
}
