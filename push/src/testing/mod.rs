//! Test doubles for push delivery (this crate's tests, other crates' tests, and
//! the `push-sink` benchmark binary, with the `testing` feature):
//!
//! - [`Subscriber`] stands in for a browser's push subscription: it makes a
//!   key pair and decrypts bodies.
//! - [`Sink`] stands in for a push service: an HTTP/1.1 server that records
//!   every request and answers a status, `Retry-After` and delay chosen per
//!   path; it can decrypt a sampled share of the bodies and count what it saw.
//!   It is the only push-service stand-in of the workspace.
//!
//! Never use them in production: [`Subscriber`] holds a private key in plain
//! memory and panics if the system RNG fails; [`Sink::start`] panics if it
//! cannot bind.

mod http1;
mod serve;
mod sink;

pub use sink::{DecryptKey, Recorded, Sink, SinkConfig, SinkStats, CONNECTIONS_MAX, STATS_PATH};

use crate::b64;
use crate::ece::{self, EceError};
use crate::endpoint::{Keys, PushTarget, TargetError};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use std::fmt;
use zeroize::Zeroizing;

/// A user agent's key pair and auth secret.
pub struct Subscriber {
    private_key: Zeroizing<[u8; 32]>,
    p256dh: [u8; ece::PUBLIC_KEY_LEN],
    auth: [u8; ece::AUTH_SECRET_LEN],
}

impl Subscriber {
    /// Draws a fresh key pair and auth secret from the system RNG.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let mut auth = [0u8; ece::AUTH_SECRET_LEN];
        rng.fill(&mut auth).expect("system RNG");
        // A random 32-byte string is a valid scalar unless it is zero or at
        // least the group order, which happens with probability ~2^-32.
        loop {
            let mut scalar = Zeroizing::new([0u8; 32]);
            rng.fill(&mut scalar[..]).expect("system RNG");
            if let Ok(secret) = p256::SecretKey::from_slice(&scalar[..]) {
                let point = secret.public_key().to_encoded_point(false);
                let p256dh = point
                    .as_bytes()
                    .try_into()
                    .expect("uncompressed point is 65 bytes");
                return Self {
                    private_key: scalar,
                    p256dh,
                    auth,
                };
            }
        }
    }

    pub fn p256dh(&self) -> &[u8; ece::PUBLIC_KEY_LEN] {
        &self.p256dh
    }

    pub fn auth(&self) -> &[u8; ece::AUTH_SECRET_LEN] {
        &self.auth
    }

    /// `keys.p256dh` as a browser's `toJSON()` gives it.
    pub fn p256dh_b64url(&self) -> String {
        b64::encode(&self.p256dh)
    }

    /// `keys.auth` as a browser's `toJSON()` gives it.
    pub fn auth_b64url(&self) -> String {
        b64::encode(&self.auth)
    }

    pub fn keys(&self) -> Keys {
        Keys::new(self.p256dh, self.auth).expect("p256 produced an on-curve point")
    }

    /// A Web Push target at `endpoint` with this subscriber's keys.
    pub fn target(&self, endpoint: &str) -> Result<PushTarget, TargetError> {
        PushTarget::web_push(endpoint, &self.p256dh_b64url(), &self.auth_b64url())
    }

    /// The `PushSubscription.toJSON()` a browser would hand the app.
    pub fn subscription_json(&self, endpoint: &str) -> String {
        serde_json::json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": { "p256dh": self.p256dh_b64url(), "auth": self.auth_b64url() },
        })
        .to_string()
    }

    /// This subscriber's keys for a [`Sink`] to decrypt requests whose path starts
    /// with `prefix`.
    pub fn decrypt_key(&self, prefix: &str) -> DecryptKey {
        DecryptKey {
            prefix: prefix.to_owned(),
            private_key: self.private_key.clone(),
            auth: self.auth,
        }
    }

    /// Decrypts an `aes128gcm` body the way the browser would.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, EceError> {
        ece::decrypt(body, &self.private_key, &self.auth)
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscriber(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    #[test]
    fn subscription_json_parses_back() {
        let s = Subscriber::generate();
        let json = s.subscription_json("https://push.example.net/x");
        let target = PushTarget::from_subscription_json(&json).unwrap();
        assert_eq!(target.keys(), Some(&s.keys()));
        assert_eq!(s.target("https://push.example.net/x").unwrap(), target);
    }

    fn sender() -> crate::Sender {
        crate::Sender::new(crate::SenderConfig {
            use_env_proxy: false,
            timeout_ms: 5_000,
            ..crate::SenderConfig::default()
        })
    }

    fn notification(payload: &[u8]) -> crate::Notification<'_> {
        crate::Notification {
            kind: crate::Kind::NewMail,
            payload_json: payload,
            topic: None,
            simple_push_version: 7,
        }
    }

    #[test]
    fn sink_records_and_answers_per_path() {
        use crate::Outcome;
        let sink = Sink::start();
        let sender = sender();
        let subscriber = Subscriber::generate();
        let ok = subscriber.target(&sink.url("/ok")).unwrap();
        assert_eq!(
            sender.send(&ok, &notification(b"{}"), 0),
            Outcome::Delivered
        );

        sink.set_script("/flaky", &[500, 429]);
        sink.set_retry_after("/flaky", 3);
        let flaky = subscriber.target(&sink.url("/flaky")).unwrap();
        assert_eq!(
            sender.send(&flaky, &notification(b"{}"), 0),
            Outcome::Retry { status: Some(500) }
        );
        assert_eq!(
            sender.send(&flaky, &notification(b"{}"), 0),
            Outcome::RateLimited {
                retry_after: Duration::from_secs(3)
            }
        );
        assert_eq!(
            sender.send(&flaky, &notification(b"{}"), 0),
            Outcome::Delivered
        );

        sink.set_status("/moved-away", 301);
        let moved = PushTarget::simple_push(&sink.url("/moved-away")).unwrap();
        assert_eq!(
            sender.send(&moved, &notification(b""), 0),
            Outcome::Redirect { status: 301 }
        );

        let requests = sink.wait_for(5, Duration::from_secs(5));
        let seen: Vec<_> = requests
            .iter()
            .map(|r| (r.path.as_str(), r.status))
            .collect();
        assert_eq!(
            seen,
            [
                ("/ok", 201),
                ("/flaky", 500),
                ("/flaky", 429),
                ("/flaky", 201),
                ("/moved-away", 301)
            ]
        );
        let body = subscriber.decrypt(&requests[0].body).unwrap();
        assert_eq!(body, b"{}");
        assert_eq!(requests[4].method, "PUT");
        assert_eq!(requests[4].body, b"version=7");
        assert!(requests.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(sink.connections(), 1, "keep-alive reuses one connection");
    }

    #[test]
    fn sink_delays_and_stops_promptly() {
        let sink = Sink::start();
        sink.set_delay("/slow", Duration::from_millis(150));
        let sender = sender();
        let target = PushTarget::web_push_unencrypted(&sink.url("/slow")).unwrap();
        let start = Instant::now();
        assert_eq!(
            sender.send(&target, &notification(b"{}"), 0),
            crate::Outcome::Delivered
        );
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert!(sink.wait_for(2, Duration::from_millis(50)).len() == 1);
        // Another connection is not held behind the delayed one: one loop serves both.
        sink.set_delay("/slow", Duration::from_secs(5));
        let held = std::thread::spawn({
            let url = sink.url("/slow");
            move || {
                let target = PushTarget::web_push_unencrypted(&url).unwrap();
                self::sender().send(&target, &notification(b"{}"), 0)
            }
        });
        assert_eq!(sink.wait_for(2, Duration::from_secs(5)).len(), 2);
        let quick = PushTarget::web_push_unencrypted(&sink.url("/quick")).unwrap();
        let start = Instant::now();
        assert_eq!(
            sender.send(&quick, &notification(b"{}"), 0),
            crate::Outcome::Delivered
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        // The sender keeps its connection open; drop must still be quick.
        let start = Instant::now();
        drop(sink);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        // The held request's connection closed with the sink.
        assert_eq!(held.join().unwrap(), crate::Outcome::Retry { status: None });
    }

    /// A `Write` whose bytes the test can read while the sink writes.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuf {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn sink_decrypts_a_sampled_share_and_records_lines() {
        let subscriber = Subscriber::generate();
        let stranger = Subscriber::generate();
        let record = SharedBuf::default();
        let sink = Sink::with_config(SinkConfig {
            keep_requests: false,
            record: Some(Box::new(record.clone())),
            decrypt_keys: vec![subscriber.decrypt_key("/n/"), stranger.decrypt_key("/n/9")],
            decrypt_every: 2,
            ..SinkConfig::default()
        })
        .unwrap();
        let sender = sender();
        // The 1st and 3rd are decrypted; "/n/9x" picks the longer prefix, whose key
        // did not encrypt it.
        for path in ["/n/1", "/n/2", "/n/9x", "/n/4"] {
            let target = subscriber.target(&sink.url(path)).unwrap();
            let outcome = sender.send(&target, &notification(b"{}"), 0);
            assert_eq!(outcome, crate::Outcome::Delivered, "{path}");
        }
        let clear = PushTarget::web_push_unencrypted(&sink.url("/c")).unwrap();
        assert_eq!(
            sender.send(&clear, &notification(b"{}"), 0),
            crate::Outcome::Delivered
        );
        assert!(sink.requests().is_empty(), "nothing kept in memory");
        let stats = sink.stop().unwrap();
        assert_eq!(
            (
                stats.requests,
                stats.encrypted,
                stats.decrypted,
                stats.undecryptable
            ),
            (5, 4, 1, 1)
        );
        assert_eq!(stats.connections, 1);
        assert!(stats.first_ns > 0 && stats.first_ns <= stats.last_ns);
        let text = String::from_utf8(record.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
        let shape: Vec<(&str, Option<&str>)> =
            lines.iter().map(|w| (w[0], w.get(2).copied())).collect();
        assert_eq!(
            shape,
            [
                ("/n/1", Some("ok")),
                ("/n/2", None),
                ("/n/9x", Some("undecryptable")),
                ("/n/4", None),
                ("/c", None)
            ]
        );
        assert!(lines.iter().all(|w| w[1].parse::<u64>().is_ok()));
    }

    #[test]
    fn sink_fails_a_share_of_requests_at_random_and_records_the_status() {
        let record = SharedBuf::default();
        let sink = Sink::with_config(SinkConfig {
            keep_requests: false,
            record: Some(Box::new(record.clone())),
            fail_per_mille: 250,
            fail_status: 503,
            fail_seed: 7,
            ..SinkConfig::default()
        })
        .unwrap();
        sink.set_status("/kept", 202);
        let sender = sender();
        let clear = PushTarget::web_push_unencrypted(&sink.url("/f")).unwrap();
        let failed = (0..200)
            .filter(|_| sender.send(&clear, &notification(b"{}"), 0) != crate::Outcome::Delivered)
            .count();
        // 25 % of 200, drawn: well inside (20, 80) unless the dice are broken.
        assert!((20..80).contains(&failed), "{failed} of 200 failed");
        // A path with a status of its own is never failed.
        let kept = PushTarget::web_push_unencrypted(&sink.url("/kept")).unwrap();
        for _ in 0..40 {
            assert_eq!(
                sender.send(&kept, &notification(b"{}"), 0),
                crate::Outcome::Delivered
            );
        }
        sink.stop().unwrap();
        let text = String::from_utf8(record.0.lock().unwrap().clone()).unwrap();
        let marked = text.lines().filter(|l| l.ends_with(" status=503")).count();
        assert_eq!(marked, failed, "each failure is marked in the record");
        assert_eq!(text.lines().count(), 240, "one line per request");
    }

    #[test]
    fn sink_answers_its_counters() {
        use std::io::{Read as _, Write as _};
        let sink = Sink::start();
        let target = PushTarget::web_push_unencrypted(&sink.url("/a")).unwrap();
        assert_eq!(
            sender().send(&target, &notification(b"{}"), 0),
            crate::Outcome::Delivered
        );
        let mut stream = std::net::TcpStream::connect(sink.addr()).unwrap();
        let get = format!("GET {STATS_PATH} HTTP/1.1\r\nConnection: close\r\n\r\n");
        stream.write_all(get.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with(&sink.stats().json()), "{answer}");
        assert!(answer.contains("\"requests\":1,"), "{answer}");
        assert_eq!(sink.requests().len(), 1, "the counters are not recorded");
    }

    #[test]
    fn sink_refuses_connections_past_its_cap() {
        use std::io::Read as _;
        let sink = Sink::with_config(SinkConfig {
            connections_max: 2,
            ..SinkConfig::default()
        })
        .unwrap();
        let open: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(sink.addr()).unwrap())
            .collect();
        let mut third = std::net::TcpStream::connect(sink.addr()).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        // Closed at once: end of stream (or a reset), never a timeout.
        let read = third.read(&mut byte);
        assert!(
            matches!(read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        let stats = sink.stats();
        assert_eq!((stats.connections, stats.refused), (2, 1));
        drop(open);
    }
}
