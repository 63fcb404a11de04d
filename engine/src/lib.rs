//! The imap-push-proxy engine: holds IMAP sessions in IDLE and reports new mail.
//!
//! What this crate never does: it never starts a thread per session, never uses an async
//! runtime, never logs, never stores credentials beyond the login command (the secret is
//! zeroized as soon as the last byte of LOGIN or AUTHENTICATE has been written), and never
//! lets a misbehaving server panic a reactor: such a session ends with a typed
//! [`EndReason`].
//!
//! # Design overview
//! - [`session::Session`] is a sans-IO state machine: bytes and [`Tick`]s in; bytes,
//!   deadlines and events out. It is tested with a fake clock and scripted server bytes.
//! - A reactor thread owns a `mio::Poll`, a slab of sessions with their sockets and TLS
//!   state (rustls for the handshake, then by default only the record keys and our own
//!   record layer; see [`tls`]), and a hashed timing wheel ([`wheel`]).
//! - [`Engine`] starts the reactors, a bounded pool of resolver threads ([`resolve`]) and
//!   a dispatcher thread that hands resolved sessions to the reactors; it hands out
//!   [`Event`]s on a bounded channel. A reactor tries every resolved address, IPv6 and
//!   IPv4 interleaved (Happy Eyeballs), each judged by the connect filter before
//!   connect().
//! - Every queue is bounded ([`api::EVENT_QUEUE_LEN`], [`api::COMMAND_QUEUE_LEN`],
//!   [`api::LOOKUP_ANSWERS_LEN`]) and no reactor ever waits on one: when the event queue
//!   is full, a session keeps its (coalescing) events and the reactor offers them again
//!   after [`reactor::EVENT_RETRY_DELAY`], counted in [`Stats::events_deferred`].
//!
//! # Example
//! See `examples/watch.rs` for a complete program.

pub mod api;
pub mod connect;
pub mod event;
pub mod handover;
pub mod histogram;
pub mod pool;
pub mod reactor;
pub mod reason;
pub mod resolve;
pub mod session;
pub mod spec;
pub mod time;
pub mod tls;
pub mod wheel;

pub use api::{
    ConnectFilter, Engine, EngineConfig, Event, Exported, SessionId, StartError, Stats, WatchError,
};
pub use handover::{Handover, HandoverPhase, HANDOVER_WAIT};
pub use reactor::KeepaliveConfig;
pub use reason::{EndReason, ProtocolError, TlsFailure, Waiting};
pub use resolve::{Lookup, ResolveError, Resolver, ResolverConfig};
pub use session::{MessageSummary, Preview, Ready, SessionConfig};
pub use spec::{Filter, Secret, Security, Since, SpecError, WatchOptions, WatchSpec};
pub use time::Tick;
