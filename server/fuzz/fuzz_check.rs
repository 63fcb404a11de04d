//! Checks shared by the `registration` fuzz target (`fuzz_targets/`) and the
//! corpus replay test (`tests/fuzz_corpus.rs`), which both include this file
//! with `#[path]`: `parse_registration` is public API, so the crate itself
//! needs no fuzz module. Not API: these functions allocate and panic on
//! purpose, because a panic is how a fuzzer reports a broken invariant.
//!
//! The input is a `POST /v1/subscriptions` body, parsed under the default
//! [`Config`] and under one that allows private destinations, `http://`
//! endpoints and plain IMAP. Invariants checked:
//! - nothing panics on any input;
//! - an error is 400 `bad_request` naming a field, or 403
//!   `forbidden_destination`;
//! - the body buffer is all zeros afterwards, whatever the outcome;
//! - the outcome does not depend on the secret's content: the same body with
//!   every byte of `imap.password` and `imap.oauth2_token` swapped for
//!   another (same length, same JSON shape) gives the same error, or a
//!   registration with the same `Debug`;
//! - a string secret of 4 or more characters appears neither in the error
//!   (message, `Debug`, response body) nor in the registration's `Debug`,
//!   unless it also appears there when the secret is swapped, that is,
//!   unless the body holds the same text elsewhere (as a user name, say);
//! - a registration carries exactly the secret the JSON holds, within the
//!   documented bounds;
//! - the open configuration accepts whatever the default one accepts, as
//!   the same registration.

use server::api::{parse_registration, ApiError, Registration, MAILBOXES_MAX};
use server::Config;

/// Shorter secrets are too likely to occur in an error template by chance
/// ("host", say, is 4): the content check above covers them.
pub const SECRET_CHARS_MIN: usize = 4;

/// The secret fields of the `imap` object.
const SECRET_FIELDS: [&str; 2] = ["password", "oauth2_token"];

/// The registration target: `data` is a request body.
pub fn registration(data: &[u8]) {
    let strict = Config::default();
    let open = Config {
        allow_private_destinations: true,
        allow_http_endpoints: true,
        allow_plain_imap: true,
        ..Config::default()
    };
    let sent = serde_json::from_slice::<BodySecrets>(data).ok();
    let json = read_json(data);
    let secrets = secret_strings(sent.as_ref(), json.as_ref());
    let well_formed = sent.is_some() || json.is_some();
    let swapped = well_formed.then(|| swap_secrets(data)).flatten();
    let mut outcomes = Vec::new();
    for config in [&strict, &open] {
        let outcome = parse(data, config);
        check_outcome(&outcome, sent.as_ref(), config);
        if let Some(swapped) = &swapped {
            let other = parse(swapped, config);
            for secret in &secrets {
                assert!(
                    !outcome.text.contains(secret.as_str()) || other.text.contains(secret.as_str()),
                    "the outcome echoes the secret: {}",
                    outcome.text
                );
            }
            assert_eq!(
                outcome.result, other.result,
                "the outcome depends on the secret's content"
            );
        }
        outcomes.push(outcome);
    }
    if outcomes[0].result.is_ok() {
        assert_eq!(
            outcomes[0].result, outcomes[1].result,
            "the open configuration treats an accepted body differently"
        );
    }
}

/// The secrets as `parse_registration` reads them: the same serde rules
/// (an object, or an array in field order; values it skips are skipped
/// here too), with every other field ignored. A value serde_json skips is
/// not checked as a `Value` would be: a string in an unknown field of
/// `new_mail` may hold bytes that are not UTF-8 or a lone surrogate escape,
/// and the body still registers (`fuzz/artifacts-found/`).
// Most fields only mirror the real body's shape, to be skipped alike.
#[allow(dead_code)]
#[derive(serde::Deserialize)]
struct BodySecrets {
    imap: Option<ImapSecrets>,
    mailboxes: Option<serde::de::IgnoredAny>,
    device_id: Option<serde::de::IgnoredAny>,
    since: Option<serde::de::IgnoredAny>,
    new_mail: Option<serde::de::IgnoredAny>,
    reconnect: Option<serde::de::IgnoredAny>,
}

/// `ImapBody`'s fields, in its order.
#[allow(dead_code)]
#[derive(serde::Deserialize)]
struct ImapSecrets {
    host: Option<serde::de::IgnoredAny>,
    port: Option<serde::de::IgnoredAny>,
    security: Option<serde::de::IgnoredAny>,
    username: Option<serde::de::IgnoredAny>,
    password: Option<String>,
    oauth2_token: Option<String>,
}

impl BodySecrets {
    fn strings(&self) -> Vec<&str> {
        self.imap
            .iter()
            .flat_map(|imap| [&imap.password, &imap.oauth2_token])
            .filter_map(|s| s.as_deref())
            .collect()
    }
}

/// `data` as JSON, read lossily where it is not UTF-8.
fn read_json(data: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(data)
        .ok()
        .or_else(|| serde_json::from_str(&String::from_utf8_lossy(data)).ok())
}

/// One parse: the registration's `Debug` or the error, and all the text a
/// client or a log could see.
struct Outcome {
    result: Result<String, ApiError>,
    text: String,
    /// What `Registration::secret` held.
    secret: Option<Vec<u8>>,
}

fn parse(data: &[u8], config: &Config) -> Outcome {
    let mut body = data.to_vec();
    let parsed = parse_registration(&mut body, config);
    assert!(body.iter().all(|&b| b == 0), "body not zeroized");
    match parsed {
        Ok(registration) => {
            check_registration(&registration, config);
            let debug = format!("{registration:?}");
            Outcome {
                text: debug.clone(),
                result: Ok(debug),
                secret: Some(registration.secret.bytes().to_vec()),
            }
        }
        Err(error) => {
            let response = error.to_response();
            let text = format!(
                "{} {error:?} {}",
                error.message,
                String::from_utf8_lossy(&response.body)
            );
            Outcome {
                result: Err(error),
                text,
                secret: None,
            }
        }
    }
}

fn check_outcome(outcome: &Outcome, sent: Option<&BodySecrets>, config: &Config) {
    match &outcome.result {
        Err(e) => {
            let shape = (
                e.status(),
                e.code.as_str(),
                e.field.is_some(),
                e.retry_after_secs,
            );
            assert!(
                matches!(
                    shape,
                    (400, "bad_request", true, None) | (403, "forbidden_destination", false, None)
                ),
                "unexpected error {e:?}"
            );
            if e.status() == 403 {
                assert!(!config.allow_private_destinations, "403 though allowed");
            }
        }
        Ok(_) => {
            let sent = sent.expect("a body that registers has readable secrets");
            let given = sent.strings();
            assert_eq!(given.len(), 1, "exactly one secret");
            assert_eq!(
                outcome.secret.as_deref(),
                Some(given[0].as_bytes()),
                "the registration's secret is not the one sent"
            );
        }
    }
}

fn check_registration(r: &Registration, config: &Config) {
    assert!(!r.host.is_empty() && r.host.len() <= 253, "host length");
    assert!(
        !r.host.contains(char::is_whitespace),
        "host with whitespace"
    );
    assert_ne!(r.port, 0);
    assert!(!r.username.is_empty());
    let secret = r.secret.bytes().len();
    assert!((1..=4096).contains(&secret), "secret of {secret} bytes");
    assert!((1..=MAILBOXES_MAX).contains(&r.mailboxes.len()));
    if let Some(id) = &r.device_id {
        assert!((1..=128).contains(&id.len()), "device_id length");
    }
    for target in [&r.new_mail, &r.reconnect] {
        let endpoint = target.endpoint();
        assert!(
            endpoint.starts_with("https://")
                || (config.allow_http_endpoints && endpoint.starts_with("http://")),
            "endpoint scheme"
        );
    }
    if !config.allow_plain_imap {
        assert_ne!(format!("{:?}", r.security), "DangerousPlain");
    }
}

/// The secrets worth looking for in outputs: as `parse_registration` reads
/// them or, when that fails, as strings of a top-level `imap` object.
fn secret_strings(sent: Option<&BodySecrets>, json: Option<&serde_json::Value>) -> Vec<String> {
    let mut found: Vec<&str> = sent.map(BodySecrets::strings).unwrap_or_default();
    if let Some(json) = json {
        found.extend(
            SECRET_FIELDS
                .iter()
                .filter_map(|f| json["imap"][f].as_str()),
        );
    }
    let mut secrets: Vec<String> = found
        .into_iter()
        .filter(|s| s.chars().count() >= SECRET_CHARS_MIN)
        .map(str::to_owned)
        .collect();
    secrets.dedup();
    secrets
}

/// `data` (well-formed JSON but maybe for the content of strings) with the
/// content of every secret string changed, byte for byte, keeping its
/// length, its escapes and its UTF-8 validity (bytes that are not UTF-8
/// stay as they are); `None` when there is no secret string to change.
/// Secrets are found where serde reads them: `imap` (every one, if
/// repeated) of a top-level object, or the first element of a top-level
/// array; in it, `password` and `oauth2_token`, or the fifth and sixth
/// elements.
pub fn swap_secrets(data: &[u8]) -> Option<Vec<u8>> {
    let top = skip_ws(data, 0);
    let imaps: Vec<usize> = match data.get(top)? {
        b'{' => members(data, top)?
            .into_iter()
            .filter(|(key, _)| key == "imap")
            .map(|(_, value)| value)
            .collect(),
        b'[' => elements(data, top)?.into_iter().take(1).collect(),
        _ => return None,
    };
    let mut secrets = Vec::new();
    for imap in imaps {
        match data.get(imap) {
            Some(b'{') => secrets.extend(
                members(data, imap)?
                    .into_iter()
                    .filter(|(field, _)| SECRET_FIELDS.contains(&field.as_str()))
                    .map(|(_, value)| value),
            ),
            Some(b'[') => secrets.extend(elements(data, imap)?.into_iter().skip(4).take(2)),
            _ => {}
        }
    }
    let mut out = data.to_vec();
    let mut changed = false;
    for at in secrets {
        if data.get(at) == Some(&b'"') {
            let end = string_end(data, at)?;
            changed |= swap_string(&mut out[at + 1..end - 1]);
        }
    }
    changed.then_some(out)
}

/// Where each element of the array at `at` starts.
fn elements(data: &[u8], at: usize) -> Option<Vec<usize>> {
    if data.get(at) != Some(&b'[') {
        return None;
    }
    let mut found = Vec::new();
    let mut i = skip_ws(data, at + 1);
    if data.get(i) == Some(&b']') {
        return Some(found);
    }
    loop {
        found.push(i);
        i = skip_ws(data, value_end(data, i)?);
        match data.get(i) {
            Some(b',') => i = skip_ws(data, i + 1),
            Some(b']') => return Some(found),
            _ => return None,
        }
    }
}

/// The members of the object at `at`: each key (unescaped) and where its
/// value starts.
fn members(data: &[u8], at: usize) -> Option<Vec<(String, usize)>> {
    if data.get(at) != Some(&b'{') {
        return None;
    }
    let mut found = Vec::new();
    let mut i = skip_ws(data, at + 1);
    if data.get(i) == Some(&b'}') {
        return Some(found);
    }
    loop {
        let key_end = string_end(data, i)?;
        let key = serde_json::from_slice::<String>(&data[i..key_end]).ok()?;
        i = skip_ws(data, key_end);
        if data.get(i) != Some(&b':') {
            return None;
        }
        let value = skip_ws(data, i + 1);
        found.push((key, value));
        i = skip_ws(data, value_end(data, value)?);
        match data.get(i) {
            Some(b',') => i = skip_ws(data, i + 1),
            Some(b'}') => return Some(found),
            _ => return None,
        }
    }
}

fn skip_ws(data: &[u8], mut i: usize) -> usize {
    while matches!(data.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Just past the closing quote of the string that opens at `at`.
fn string_end(data: &[u8], at: usize) -> Option<usize> {
    if data.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match data.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Just past the value that starts at `at`.
fn value_end(data: &[u8], at: usize) -> Option<usize> {
    match data.get(at)? {
        b'"' => string_end(data, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match data.get(i)? {
                    b'"' => {
                        i = string_end(data, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while data
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                i += 1;
            }
            Some(i)
        }
    }
}

/// Changes every character of a JSON string's raw content (between the
/// quotes) to another that takes the same bytes decoded and raw; returns
/// whether anything changed.
fn swap_string(raw: &mut [u8]) -> bool {
    const ESCAPES: &[u8] = b"\"\\/bfnrt";
    let mut changed = false;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\\' if raw.get(i + 1) == Some(&b'u') => {
                // The last hex digit: the code point stays in the same block
                // of 16, so its UTF-8 length and surrogate class stay too.
                let Some(digit) = raw.get_mut(i + 5) else {
                    return changed;
                };
                *digit = match *digit {
                    b'9' => b'0',
                    b'f' => b'a',
                    b'F' => b'A',
                    d => d + 1,
                };
                changed = true;
                i += 6;
            }
            b'\\' => {
                if let Some(e) = raw.get_mut(i + 1) {
                    let k = ESCAPES.iter().position(|x| x == e).unwrap_or(0);
                    *e = ESCAPES[(k + 1) % ESCAPES.len()];
                    changed = true;
                }
                i += 2;
            }
            b @ 0x20..=0x7E => {
                let mut next = if b == 0x7E { 0x20 } else { b + 1 };
                while next == b'"' || next == b'\\' {
                    next += 1;
                }
                raw[i] = next;
                changed = true;
                i += 1;
            }
            lead => {
                // A multi-byte UTF-8 sequence: its last byte is free within
                // 0x80..=0xBF whatever the lead byte.
                let len = match lead {
                    0xC0..=0xDF => 2,
                    0xE0..=0xEF => 3,
                    0xF0..=0xF7 => 4,
                    _ => 1,
                };
                let valid = raw
                    .get(i..i + len)
                    .is_some_and(|seq| std::str::from_utf8(seq).is_ok());
                if len == 1 || !valid {
                    i += 1;
                    continue;
                }
                let last = &mut raw[i + len - 1];
                *last = if *last >= 0xBF { 0x80 } else { *last + 1 };
                changed = true;
                i += len;
            }
        }
    }
    changed
}
