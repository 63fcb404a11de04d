//! A session after the handshake: the record layer plus the few post-handshake messages a
//! client must understand. Pure: records in, plaintext ranges and records to send out.
//!
//! Read first: RFC 8446 4.6 (post-handshake messages: NewSessionTicket, CertificateRequest,
//! KeyUpdate), 6 (alerts), RFC 5246 7.4.1.1 (HelloRequest).
//!
//! What ends the session (each with a [`TlsFailure`]; a reconnect push for a ready session):
//! a record that does not authenticate, a bad length, an unknown content type, a
//! post-handshake CertificateRequest, a TLS 1.2 HelloRequest (renegotiation), any other
//! handshake message we do not handle, any alert but close_notify, and sequence numbers at
//! their limit. close_notify is a clean end. NewSessionTicket is skipped (resumption is not
//! used on this path), without storing it: its body is counted down, never buffered.

use zeroize::Zeroize;

use super::record::{content, Opened, RecordError, RecordLayer, Version};
use crate::reason::TlsFailure;

/// Handshake message types (RFC 8446 4, RFC 5246 7.4).
mod hs {
    pub const HELLO_REQUEST: u8 = 0;
    pub const NEW_SESSION_TICKET: u8 = 4;
    pub const CERTIFICATE_REQUEST: u8 = 13;
    pub const KEY_UPDATE: u8 = 24;
}
/// close_notify (RFC 8446 6.1).
const ALERT_CLOSE_NOTIFY: u8 = 0;
/// The largest NewSessionTicket we skip (RFC 8446 4.6.1: ticket < 2^16, extensions < 2^16,
/// plus fixed fields). Anything longer is not a ticket.
const TICKET_LEN_MAX: u32 = 2 * 65_536 + 1024;

/// What one record gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Application data at `record[start..end]`.
    Data { start: usize, end: usize },
    /// Nothing for the session (a ticket skipped, a key update applied).
    Nothing,
    /// close_notify: the peer ended the session cleanly.
    CloseNotify,
}

/// A handshake message being read across records: its header, then its body counted down.
#[derive(Clone, Copy, Debug, Default)]
struct HandshakeReader {
    header: [u8; 4],
    header_len: u8,
    body_left: u32,
}

impl HandshakeReader {
    fn in_message(&self) -> bool {
        self.header_len > 0
    }
}

/// The compact state of one established session.
#[derive(Clone)]
pub struct Compact {
    records: RecordLayer,
    reader: HandshakeReader,
}

impl Compact {
    pub fn new(records: RecordLayer) -> Compact {
        Compact {
            records,
            reader: HandshakeReader::default(),
        }
    }

    pub fn records(&self) -> &RecordLayer {
        &self.records
    }

    /// Between records: no handshake message is half-read, so the record layer alone
    /// says everything (a handover point).
    pub fn is_between_messages(&self) -> bool {
        !self.reader.in_message()
    }

    /// The length of the complete record at the start of `buf`, `None` if incomplete.
    pub fn record_len(&self, buf: &[u8]) -> Result<Option<usize>, TlsFailure> {
        self.records.record_len(buf).map_err(failure)
    }

    /// Opens one complete record (as sized by [`Self::record_len`]) in place and handles
    /// what it holds. A KeyUpdate that asks for ours appends our KeyUpdate record to
    /// `reply`, which the caller MUST send before any later record.
    pub fn handle_record(
        &mut self,
        record: &mut [u8],
        reply: &mut Vec<u8>,
    ) -> Result<Received, TlsFailure> {
        let Opened { typ, start, end } = self.records.open(record).map_err(failure)?;
        if self.reader.in_message() && typ != content::HANDSHAKE {
            // RFC 8446 5.1: a handshake message split over records admits nothing between.
            return Err(TlsFailure::UnexpectedMessage);
        }
        match typ {
            content::APPLICATION_DATA => Ok(Received::Data { start, end }),
            content::ALERT => match record[start..end] {
                [_, ALERT_CLOSE_NOTIFY] => Ok(Received::CloseNotify),
                [_, _] => Err(TlsFailure::Alert),
                _ => Err(TlsFailure::UnexpectedMessage),
            },
            content::HANDSHAKE if start < end => {
                self.handle_handshake(&record[start..end], reply)?;
                Ok(Received::Nothing)
            }
            _ => Err(TlsFailure::UnexpectedMessage),
        }
    }

    /// Seals application data into `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), TlsFailure> {
        self.records
            .seal_application_data(plaintext, out)
            .map_err(failure)
    }

    /// Walks the handshake bytes of one record: skips tickets, applies KeyUpdates, refuses
    /// everything else.
    fn handle_handshake(
        &mut self,
        mut bytes: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), TlsFailure> {
        while !bytes.is_empty() {
            let r = &mut self.reader;
            if r.header_len < 4 {
                let take = (4 - r.header_len as usize).min(bytes.len());
                let at = r.header_len as usize;
                r.header[at..at + take].copy_from_slice(&bytes[..take]);
                r.header_len += take as u8;
                bytes = &bytes[take..];
                if r.header_len == 4 {
                    r.body_left = check_header(self.records.version(), r.header)?;
                    if r.body_left == 0 {
                        *r = HandshakeReader::default();
                    }
                }
                continue;
            }
            let typ = r.header[0];
            let take = (r.body_left as usize).min(bytes.len());
            let body = &bytes[..take];
            bytes = &bytes[take..];
            r.body_left -= take as u32;
            if r.body_left == 0 {
                *r = HandshakeReader::default();
            }
            if typ == hs::KEY_UPDATE {
                // RFC 8446 5.1: a key change must end its record.
                if !bytes.is_empty() {
                    return Err(TlsFailure::UnexpectedMessage);
                }
                self.handle_key_update(body, reply)?;
            }
        }
        Ok(())
    }

    /// RFC 8446 4.6.3: new receiving keys; if the peer asks, our KeyUpdate under the old
    /// sending keys, then new sending keys.
    fn handle_key_update(&mut self, body: &[u8], reply: &mut Vec<u8>) -> Result<(), TlsFailure> {
        let requested = match body {
            [0] => false,
            [1] => true,
            _ => return Err(TlsFailure::UnexpectedMessage),
        };
        self.records.update_rx();
        if requested {
            let message = [hs::KEY_UPDATE, 0, 0, 1, 0];
            self.records
                .seal(content::HANDSHAKE, &message, reply)
                .map_err(failure)?;
            self.records.update_tx();
        }
        Ok(())
    }
}

/// The body length of a post-handshake message we accept, or why the session ends.
fn check_header(version: Version, header: [u8; 4]) -> Result<u32, TlsFailure> {
    let len = u32::from_be_bytes([0, header[1], header[2], header[3]]);
    match (version, header[0]) {
        (Version::Tls13, hs::NEW_SESSION_TICKET) if len <= TICKET_LEN_MAX => Ok(len),
        (Version::Tls13, hs::KEY_UPDATE) if len == 1 => Ok(len),
        (Version::Tls13, hs::CERTIFICATE_REQUEST) => Err(TlsFailure::PostHandshakeAuth),
        (Version::Tls12, hs::HELLO_REQUEST) => Err(TlsFailure::Renegotiation),
        _ => Err(TlsFailure::UnexpectedMessage),
    }
}

fn failure(e: RecordError) -> TlsFailure {
    match e {
        RecordError::BadMac => TlsFailure::BadRecordMac,
        RecordError::BadLength => TlsFailure::BadRecordLength,
        RecordError::UnexpectedType | RecordError::NoInnerType => TlsFailure::UnexpectedMessage,
        RecordError::SequenceExhausted => TlsFailure::SequenceExhausted,
    }
}

impl Drop for Compact {
    fn drop(&mut self) {
        // The record layer wipes its keys itself; a partial handshake header is all else.
        self.reader.header.zeroize();
    }
}
