//! An incremental, zero-copy IMAP codec for the client side of a push proxy:
//! it frames and parses what a server sends and encodes what a client sends.
//!
//! # What this crate never does
//!
//! - It never opens a socket, reads a clock, spawns a thread or does any I/O:
//!   it takes bytes and returns borrowed views or writes into the caller's slice.
//! - It never allocates per response: [`Framer`] is a small `Copy` state,
//!   [`parse_response`] returns slices of the message it was given, and
//!   [`encode`] writes into the caller's `out`.
//! - It never panics on any input: every byte a server can send (and every
//!   credential a caller can pass) yields a value or an error. Panics are
//!   reserved for bugs in this crate, and fuzzing hunts for those.
//! - It never copies a secret anywhere except into the caller's `out`, and
//!   never shows one in `Debug` output.
//!
//! # Design overview
//!
//! Reading is split in two steps:
//!
//! 1. [`Framer::advance`] finds where one message ends in a growing buffer,
//!    following literal announcements `{N}` and enforcing [`Limits`], in
//!    O(new bytes) per call.
//! 2. [`parse_response`] turns exactly that message into a [`Response`].
//!    Responses the caller does not need come back as [`Untagged::Other`],
//!    never as an error.
//!
//! Writing is [`encode`]: one command into a caller's slice, with the exact
//! size needed when the slice is too small, and the offsets at which the
//! client MUST wait for a `+` continuation.
//!
//! Read first: RFC 9051 and RFC 3501 (IMAP4rev2 / IMAP4rev1), RFC 7888
//! (LITERAL+/-), RFC 2177 (IDLE), RFC 4959 (SASL-IR), RFC 4616 (PLAIN),
//! RFC 7628 (OAUTHBEARER), Google's XOAUTH2, RFC 5465 and RFC 5530
//! (response codes).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod command;
pub mod frame;
pub mod response;

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
