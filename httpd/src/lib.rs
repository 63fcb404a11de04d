//! A small HTTP/1.1 server for the proxy's REST API: mio + httparse on one
//! thread of its own, optional rustls, explicit limits.
//!
//! # What this crate never does
//!
//! - No async runtime, no thread per connection: one thread runs a mio loop.
//! - No logging: it counts ([`Stats`]) and stays silent. Request bodies and
//!   header values never reach a `Debug` or `Display` output.
//! - No chunked requests, no HTTP/2, no upgrades, no routing, no
//!   percent-decoding, no compression. Requests carry a `Content-Length`
//!   body or none; `Transfer-Encoding` is answered 411 (see `parse.rs`).
//! - No per-client rate limiting: that is the application's business, with
//!   [`Request::client`] to key it on. Connections, though, are capped per
//!   client and in total ([`admission`]).
//! - No trust in what a peer says about who it is, unless the peer is in
//!   [`Config::trusted_proxies`] ([`forwarded`], [`proxy_header`]).
//! - Never panics on peer input: a misbehaving connection is answered (400,
//!   408, 411, 413, 431, 501, 505) or just closed, and counted.
//!
//! # Design
//!
//! The pure parts take bytes and return values: `parse` (request heads),
//! `response` (encoding), `connection` (one connection's state machine, with
//! `now` passed in). `reactor` alone owns mio, sockets, the clock and the
//! handler, and drives rustls as one more sans-IO layer (`tls`).
//!
//! Responses are asynchronous. The loop hands each complete [`Request`] to
//! the [`Handler`]; the application answers with
//! [`Responder::respond`]`(request.id, response)` right away or later from any
//! thread, which queues the response and wakes the loop through a
//! [`mio::Waker`]. One request per connection is in flight at a time, so
//! pipelined requests are answered in order.
//!
//! ```no_run
//! use httpd::{Config, Request, Responder, Response, Server};
//!
//! let server = Server::bind("127.0.0.1:0".parse().unwrap(), Config::default())?;
//! let handle = server.spawn(|request: Request, responder: &Responder| {
//!     responder.respond(request.id, Response::json(200, r#"{"ok":true}"#));
//! })?;
//! println!("listening on {}", handle.local_addr());
//! handle.shutdown()?;
//! # Ok::<(), httpd::HttpdError>(())
//! ```

pub mod admission;
pub mod alloc;
mod buffer;
mod connection;
mod date;
mod error;
pub mod forwarded;
#[cfg(feature = "fuzz-check")]
#[doc(hidden)]
pub mod fuzz_check;
mod handler;
pub mod limits;
mod parse;
pub mod proxy_header;
mod reactor;
mod request;
mod response;
mod server;
mod stats;
mod tls;

pub use error::HttpdError;
pub use forwarded::Cidr;
pub use handler::RESPONSES_QUEUED_PER_CONNECTION;
pub use limits::Limits;
pub use request::{Method, Request, RequestId};
pub use response::Response;
pub use server::{Config, Handler, Responder, Server, ServerHandle};
pub use stats::Stats;
pub use tls::{TlsCert, TlsFiles};
