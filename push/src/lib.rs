//! Push message delivery for the IMAP→push proxy.
//!
//! # What this crate never does
//!
//! - **No threads, no queues, no coalescing.** [`Sender::send`] delivers one
//!   message, blocking, and reports an [`Outcome`]. Pooling, retry scheduling
//!   and "only the newest message per subscription" belong to the server crate;
//!   [`Sender`] is `Send + Sync` so a pool can share one.
//! - **No clock.** `now_unix` is always an argument (VAPID expiry, HTTP-date
//!   `Retry-After`); [`Backoff`] takes the attempt number and a random `u32`.
//! - **No hand-rolled cryptography.** ECDH P-256, HKDF-SHA-256, AES-128-GCM and
//!   ECDSA P-256 all come from `ring`.
//! - **No logging of secrets.** Nothing here prints; `Debug` of every type that
//!   holds keys, auth secrets or endpoint URLs is redacted. Endpoint URLs are
//!   capability URLs (whoever knows one can push to the device), so logs MUST
//!   use [`redacted_url`] instead of the URL.
//!
//! # Modules, in the order a message flows
//!
//! 1. [`message`]: the JSON payloads (`new_mail`, `reconnect`).
//! 2. [`endpoint`]: a validated [`PushTarget`] built from the W3C
//!    `PushSubscription` pieces.
//! 3. [`ece`]: RFC 8291 encryption with the RFC 8188 `aes128gcm` coding.
//! 4. [`vapid`]: RFC 8292 application-server identification.
//! 5. [`sender`]: the HTTP request (RFC 8030, or SimplePush) and its
//!    [`Outcome`]; [`backoff`] says when to try again.
//! 6. [`connector`]: the TCP step under [`sender`]: every resolved address judged by
//!    the address filter right before `connect()`, raced as RFC 8305 says.
//!
//! With the `testing` feature, [`testing::Subscriber`] plays a browser: it
//! makes a key pair and auth secret and decrypts bodies; [`testing::Sink`] plays
//! the push service, for tests and the `push-sink` benchmark binary.

pub mod backoff;
pub mod connector;
pub mod ece;
pub mod endpoint;
pub mod message;
pub mod sender;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vapid;

mod b64;

pub use backoff::Backoff;
pub use endpoint::{redacted_url, Keys, Protocol, PushTarget, TargetError};
pub use sender::{Kind, Notification, Outcome, Sender, SenderConfig, Topic, Unsendable};
pub use vapid::{VapidError, VapidKey};
