//! Receiving: framing the server's bytes into responses, and passing over the responses
//! whose literals the session never reads (counted down by the framer, never buffered).
//!
//! RFCs: RFC 3501 §2.2.2 and §4.3 (responses, literals), RFC 7888 (literal forms).

use imap_codec_lite::{parse_response, Frame, Skip};

use super::timer::TimerKind;
use super::{Phase, Session};
use crate::reason::{EndReason, ProtocolError};
use crate::time::Tick;

impl Session {
    /// Frames and handles every complete response at the start of `bytes`, and passes over
    /// unwanted ones; returns how many bytes were used.
    pub(super) fn consume(&mut self, now: Tick, bytes: &[u8]) -> usize {
        let mut at = 0;
        while self.phase != Phase::Ended {
            if self.skipping {
                match self.framer.skip(&bytes[at..]) {
                    Skip::Incomplete { discard } => {
                        at += discard;
                        break;
                    }
                    Skip::Done { len } => {
                        at += len;
                        self.skipping = false;
                        self.timers.stop(TimerKind::Partial);
                        continue;
                    }
                }
            }
            let unwanted = || literal_unwanted(&bytes[at..], self.phase == Phase::Fetching);
            match self.framer.advance(&bytes[at..]) {
                Ok(Frame::Complete { len }) => {
                    let message = &bytes[at..at + len];
                    at += len;
                    match parse_response(message) {
                        Ok(response) => self.on_response(now, response),
                        Err(e) => self.end(EndReason::Protocol(ProtocolError::Parse(e))),
                    }
                    if self.phase == Phase::TlsHandshake && at < bytes.len() {
                        self.end(EndReason::Protocol(ProtocolError::StartTlsInjection));
                    }
                }
                // Within the limits or past them, a literal nobody reads is not kept: the
                // rest of its response is counted down by the framer, with the partial
                // response deadline still running.
                Ok(Frame::Incomplete) | Err(_) if unwanted() => {
                    self.skipping = true;
                    self.timers
                        .set(TimerKind::Partial, now + self.cfg.partial_response_timeout);
                }
                Ok(Frame::Incomplete) => break,
                Err(e) => self.end(EndReason::Protocol(ProtocolError::Frame(e))),
            }
        }
        at
    }
}

/// Whether `message`, the start of a response, announces a literal the session never reads:
/// its first line is complete, ends with a literal announcement, and is an untagged
/// response other than FETCH while fetching header fields and STATUS (whose mailbox name
/// may be a literal). Such a response is skipped, not buffered (STYLE.md section 2).
///
/// ```abnf
/// response-data = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data /
///                 message-data / capability-data) CRLF          ; RFC 3501 §9
/// message-data  = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att))
/// mailbox-data  =/ "STATUS" SP mailbox SP "(" [status-att-list] ")"
/// literal       = "{" number ["+"] "}" CRLF *CHAR8
/// ```
fn literal_unwanted(message: &[u8], fetching: bool) -> bool {
    let Some(lf) = message.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line = &message[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.starts_with(b"* ") || !line.ends_with(b"}") {
        return false;
    }
    let mut words = line[2..].split(|&b| b == b' ');
    let first = words.next().unwrap_or_default();
    if first.eq_ignore_ascii_case(b"STATUS") {
        return false;
    }
    let is_fetch = !first.is_empty()
        && first.iter().all(u8::is_ascii_digit)
        && words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(b"FETCH"));
    !(is_fetch && fetching)
}
