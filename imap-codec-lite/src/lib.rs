//! imap-codec-lite never opens a socket, never reads a clock, never
//! allocates per response, and never panics on any input.
//!
//! # What this crate never does
//!
//! - **No sockets, no I/O, no threads.** It takes bytes and returns borrowed
//!   views, or writes into the caller's slice.
//! - **No clock.** Timeouts (IDLE refresh, command deadlines) are the
//!   caller's business.
//! - **No allocation per response.** [`Framer`] is a small `Copy` state,
//!   [`parse_response`] returns slices of the message it was given, and
//!   [`encode`] writes into the caller's `out`. Nothing here owns a buffer.
//! - **No panics on any input.** Every byte a server can send, and every
//!   credential a caller can pass, yields a value or an error. No
//!   `unwrap()` or unchecked indexing touches input; fuzzing
//!   (`fuzz/`, replayed by `tests/fuzz_corpus.rs`) hunts for violations.
//! - **No stray secrets.** Passwords and tokens are written only into the
//!   caller's `out` (SASL base64 is produced from a small stack chunk that is
//!   zeroized), and `Debug` output redacts them.
//!
//! It is an incremental, zero-copy IMAP codec for the client side of a push
//! proxy: it frames and parses what a server sends and encodes what a
//! client sends. It does not parse what it does not need (message bodies,
//! SEARCH results, ...): those come back raw, never as errors.
//!
//! # Design overview
//!
//! Reading is split in two steps:
//!
//! 1. [`Framer::advance`] finds where one message ends in a growing buffer,
//!    following literal announcements `{N}` and enforcing [`Limits`], in
//!    O(new bytes) per call. A message over a limit can be skipped to its
//!    end with [`Framer::skip`] without being kept.
//! 2. [`parse_response`] turns exactly that message into a [`Response`].
//!    Responses the caller does not need come back as [`Untagged::Other`],
//!    never as an error.
//!
//! Writing is [`encode`]: one command into a caller's slice, with the exact
//! size needed when the slice is too small, and the offsets at which the
//! client MUST wait for a `+` continuation ([`Encoded::waits`]).
//!
//! Read first: RFC 9051 and RFC 3501 (IMAP4rev2 / IMAP4rev1), RFC 7888
//! (LITERAL+/-), RFC 2177 (IDLE), RFC 4959 (SASL-IR), RFC 4616 (PLAIN),
//! RFC 7628 (OAUTHBEARER), Google's XOAUTH2, RFC 5465 and RFC 5530
//! (response codes), RFC 2971 (ID).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod command;
pub mod frame;
pub mod headers;
pub mod mutf7;
pub mod response;

#[cfg(feature = "fuzz-check")]
#[doc(hidden)]
pub mod fuzz_check;

pub use command::{
    encode, parse_tag, write_tag, Command, EncodeError, Encoded, LiteralMode, Sasl, StatusRequest,
    DONE, LITERAL_MINUS_MAX, OAUTHBEARER_ERROR_ACK, SASL_CANCEL, XOAUTH2_ERROR_ACK,
};
pub use frame::{
    Frame, FrameError, Framer, Limits, Skip, MAX_LINE_LEN, MAX_LITERAL_LEN, MAX_MESSAGE_LEN,
};
pub use response::{
    parse_response, AString, Capabilities, Code, ParseError, Response, Status, StatusItems,
    Untagged,
};
