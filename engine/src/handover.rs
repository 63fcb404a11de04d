//! Handing live sessions to another engine, in this process or in a new binary.
//!
//! A session at a handover point (in IDLE with nothing in flight, or waiting between NOOPs)
//! is reduced to a [`Handover`]: its socket's descriptor, the few numbers of its IMAP
//! conversation, its deadlines as wall-clock times, and (compact TLS) the record keys and
//! sequence numbers of both directions. [`crate::Engine::adopt`] turns it back into a
//! session that goes on byte-exact: the next record it seals carries the next sequence
//! number, the next command the next tag, and the IMAP server never notices.
//!
//! What is never handed over: credentials (the session has none once ready), a session on
//! rustls (`tls_compact = false`, or a suite the compact layer does not know), a session
//! with a command in flight (a fetch of new messages' header fields included), a partial
//! response, unsent bytes or an undelivered event. Those stay with their engine.
//!
//! The wire form ([`Handover::encode`], [`Handover::decode`]) is a plain length-prefixed
//! layout; the caller frames and versions it (the server's `image` module). It holds key
//! material: callers MUST keep it in `Zeroizing` buffers.

use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::event::SessionId;
use crate::session::OtherState;
use crate::spec::Security;
use crate::spec::{Filter, WatchOptions, FILTER_HEADERS_MAX, FILTER_SENDERS_MAX, MAILBOXES_MAX};
use crate::time::Tick;
use crate::tls::record::{DirectionKeys, RecordLayer, Suite, Version};

/// How long [`crate::Engine::export`] lets a session with a command in flight (an IDLE
/// refresh, a NOOP) finish it before the handover gives up on that session. A server
/// answers such commands in milliseconds; one that takes longer keeps its session (it
/// ends with its reconnect push when the process is replaced).
pub const HANDOVER_WAIT: Duration = Duration::from_millis(500);

/// Where the session stood when it was handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoverPhase {
    /// In IDLE (RFC 2177), the `+` received, nothing else in flight.
    Idling,
    /// Polled with NOOP, waiting for the next one.
    PollWait,
}

/// The IMAP side of a handed-over session. Deadlines are Unix milliseconds, so that they
/// survive a new process whose ticks count from another start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    pub phase: HandoverPhase,
    pub security: Security,
    /// The capability bits the session acts on ([`crate::session::Caps`]).
    pub caps: u16,
    /// The tag of the IDLE in progress (0 while polling).
    pub tag: u32,
    pub next_tag: u32,
    pub exists: u32,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub notify_active: bool,
    pub refresh_jitter_ms: u64,
    /// When IDLE is next refreshed (0: not set).
    pub idle_refresh_unix_ms: u64,
    /// When the next NOOP (or STATUS round) is sent (0: not set).
    pub poll_unix_ms: u64,
    /// The watched mailboxes besides the selected one, in the order given.
    pub others: Vec<OtherState>,
    /// The filter and preview setting (the default: neither).
    pub options: WatchOptions,
}

/// The compact TLS state of a handed-over session: the record layer's keys and sequence
/// numbers. Wiped when dropped (the record layer's keys wipe themselves).
#[derive(Clone)]
pub struct TlsState {
    pub(crate) records: RecordLayer,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("version", &self.records.version())
            .field("suite", &self.records.suite())
            .field("seqs", &self.records.seqs())
            .finish_non_exhaustive()
    }
}

impl TlsState {
    /// The record sequence numbers (sent, received): what a test compares across a
    /// handover.
    pub fn seqs(&self) -> (u64, u64) {
        self.records.seqs()
    }

    pub fn version(&self) -> Version {
        self.records.version()
    }
}

/// One session, handed over: an open socket and what its conversation needs to go on.
/// Dropping it closes the socket (the IMAP server sees the connection end).
#[derive(Debug)]
pub struct Handover {
    pub id: SessionId,
    /// The connected socket, owned by this value until adopted.
    fd: RawFd,
    pub session: SessionState,
    pub tls: Option<TlsState>,
}

impl Handover {
    pub(crate) fn new(
        id: SessionId,
        fd: RawFd,
        session: SessionState,
        tls: Option<TlsState>,
    ) -> Handover {
        Handover {
            id,
            fd,
            session,
            tls,
        }
    }

    /// The socket's descriptor (still owned by this value).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Gives the descriptor up: the caller now owns it (the adopting reactor).
    pub(crate) fn into_fd(mut self) -> (RawFd, SessionId, SessionState, Option<TlsState>) {
        let fd = std::mem::replace(&mut self.fd, -1);
        let others = std::mem::take(&mut self.session.others);
        let session = SessionState {
            others,
            ..self.session.clone()
        };
        (fd, self.id, session, self.tls.take())
    }

    /// Appends the wire form to `out` (see the module docs).
    pub fn encode(&self, out: &mut Zeroizing<Vec<u8>>) {
        let s = &self.session;
        let mut w = Writer(out);
        w.u64(self.id.0);
        w.i32(self.fd);
        w.u8(match s.phase {
            HandoverPhase::Idling => 1,
            HandoverPhase::PollWait => 2,
        });
        w.u8(match s.security {
            Security::Tls => 1,
            Security::StartTls => 2,
            Security::DangerousPlain => 3,
        });
        w.u16(s.caps);
        for n in [s.tag, s.next_tag, s.exists, s.uidvalidity, s.uidnext] {
            w.u32(n);
        }
        w.u8(u8::from(s.notify_active));
        for n in [s.refresh_jitter_ms, s.idle_refresh_unix_ms, s.poll_unix_ms] {
            w.u64(n);
        }
        // At most MAILBOXES_MAX - 1 (the spec's bound), names at most MAILBOX_LEN_MAX.
        w.u8(s.others.len().min(MAILBOXES_MAX) as u8);
        for o in s.others.iter().take(MAILBOXES_MAX) {
            w.bytes(&o.wire);
            match &o.utf8 {
                Some(utf8) => {
                    w.u8(1);
                    w.bytes(utf8);
                }
                None => w.u8(0),
            }
            w.u32(o.messages);
            w.u32(o.uidnext);
            w.u8(u8::from(o.known));
        }
        let o = &s.options;
        w.u8(u8::from(o.filter.is_some()) | u8::from(o.preview) << 1);
        if let Some(filter) = &o.filter {
            for list in [&filter.headers, &filter.senders] {
                // Validated at watch: at most FILTER_SENDERS_MAX (64) each.
                w.u8(list.len().min(usize::from(u8::MAX)) as u8);
                for item in list.iter().take(usize::from(u8::MAX)) {
                    w.bytes(item.as_bytes());
                }
            }
        }
        match &self.tls {
            None => w.u8(0),
            Some(tls) => {
                w.u8(1);
                let r = &tls.records;
                w.u8(match r.version() {
                    Version::Tls12 => 2,
                    Version::Tls13 => 3,
                });
                w.u8(match r.suite() {
                    Suite::Aes128Gcm => 1,
                    Suite::Aes256Gcm => 2,
                    Suite::Chacha20Poly1305 => 3,
                });
                for keys in [r.tx(), r.rx()] {
                    let (key, iv, seq, secret) = keys.parts(r.suite(), r.version());
                    w.bytes(key);
                    w.bytes(iv);
                    w.u64(seq);
                    w.bytes(secret);
                }
            }
        }
    }

    /// Reads one value written by [`Handover::encode`]. The descriptor becomes owned by
    /// the value, which closes it when dropped: the caller MUST have checked that the
    /// descriptor came with the image.
    pub fn decode(r: &mut Reader<'_>) -> Result<Handover, DecodeError> {
        let id = SessionId(r.u64()?);
        let fd = r.i32()?;
        let phase = match r.u8()? {
            1 => HandoverPhase::Idling,
            2 => HandoverPhase::PollWait,
            _ => return Err(DecodeError::Invalid("phase")),
        };
        let security = match r.u8()? {
            1 => Security::Tls,
            2 => Security::StartTls,
            3 => Security::DangerousPlain,
            _ => return Err(DecodeError::Invalid("security")),
        };
        let caps = r.u16()?;
        let mut n = [0u32; 5];
        for slot in &mut n {
            *slot = r.u32()?;
        }
        let notify_active = r.u8()? != 0;
        let mut t = [0u64; 3];
        for slot in &mut t {
            *slot = r.u64()?;
        }
        let count = r.u8()?;
        if usize::from(count) > MAILBOXES_MAX {
            return Err(DecodeError::Invalid("mailbox count"));
        }
        let mut others = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let wire = r.bytes()?.to_vec();
            let utf8 = match r.u8()? {
                0 => None,
                _ => Some(r.bytes()?.to_vec()),
            };
            others.push(OtherState {
                wire,
                utf8,
                messages: r.u32()?,
                uidnext: r.u32()?,
                known: r.u8()? != 0,
            });
        }
        let options = decode_options(r)?;
        let session = SessionState {
            phase,
            security,
            caps,
            tag: n[0],
            next_tag: n[1],
            exists: n[2],
            uidvalidity: n[3],
            uidnext: n[4],
            notify_active,
            refresh_jitter_ms: t[0],
            idle_refresh_unix_ms: t[1],
            poll_unix_ms: t[2],
            others,
            options,
        };
        let tls = match r.u8()? {
            0 => None,
            1 => Some(decode_tls(r)?),
            _ => return Err(DecodeError::Invalid("tls")),
        };
        Ok(Handover {
            id,
            fd,
            session,
            tls,
        })
    }
}

/// The filter and preview setting, validated as at watch.
fn decode_options(r: &mut Reader<'_>) -> Result<WatchOptions, DecodeError> {
    let flags = r.u8()?;
    let mut list = |max: usize| -> Result<Vec<String>, DecodeError> {
        let n = usize::from(r.u8()?);
        if n > max {
            return Err(DecodeError::Invalid("filter"));
        }
        (0..n)
            .map(|_| {
                let b = r.bytes()?;
                String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid("filter"))
            })
            .collect()
    };
    let filter = match flags & 1 {
        0 => None,
        _ => {
            let headers = list(FILTER_HEADERS_MAX)?;
            let senders = list(FILTER_SENDERS_MAX)?;
            Some(Filter { headers, senders })
        }
    };
    let options = WatchOptions {
        filter,
        preview: flags & 2 != 0,
    };
    options
        .validate()
        .map_err(|_| DecodeError::Invalid("filter"))?;
    Ok(options)
}

fn decode_tls(r: &mut Reader<'_>) -> Result<TlsState, DecodeError> {
    let version = match r.u8()? {
        2 => Version::Tls12,
        3 => Version::Tls13,
        _ => return Err(DecodeError::Invalid("tls version")),
    };
    let suite = match r.u8()? {
        1 => Suite::Aes128Gcm,
        2 => Suite::Aes256Gcm,
        3 => Suite::Chacha20Poly1305,
        _ => return Err(DecodeError::Invalid("tls suite")),
    };
    let mut direction = || -> Result<DirectionKeys, DecodeError> {
        let key = r.bytes()?;
        let iv = r.bytes()?;
        let seq = r.u64()?;
        let secret = r.bytes()?;
        DirectionKeys::new(suite, key, iv, seq, secret).ok_or(DecodeError::Invalid("tls keys"))
    };
    let tx = direction()?;
    let rx = direction()?;
    Ok(TlsState {
        records: RecordLayer::new(version, suite, tx, rx),
    })
}

impl Drop for Handover {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: the descriptor is owned by this value alone (see `into_fd`).
            unsafe { libc::close(self.fd) };
        }
    }
}

/// Why a wire form could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes ended inside a value.
    Truncated,
    /// A field holds a value no writer produces.
    Invalid(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated"),
            DecodeError::Invalid(field) => write!(f, "invalid {field}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends fixed-width big-endian integers and length-prefixed byte strings.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// A byte string of at most `u16::MAX` bytes (longer ones are cut: no field is).
    pub fn bytes(&mut self, v: &[u8]) {
        let v = &v[..v.len().min(usize::from(u16::MAX))];
        self.u16(v.len() as u16);
        self.0.extend_from_slice(v);
    }
}

/// Reads what [`Writer`] wrote; never panics on any input.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

/// Unix milliseconds now.
pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A tick deadline as Unix milliseconds (0 for none).
pub(crate) fn tick_to_unix_ms(deadline: Tick, now: Tick, unix_now_ms: u64) -> u64 {
    if deadline == Tick::NEVER {
        return 0;
    }
    let ahead = u64::try_from(deadline.since(now).as_millis()).unwrap_or(u64::MAX);
    unix_now_ms.saturating_add(ahead).max(1)
}

/// Unix milliseconds as a tick deadline of this clock; a time already past is `now`.
pub(crate) fn unix_ms_to_tick(at_ms: u64, now: Tick, unix_now_ms: u64) -> Tick {
    if at_ms == 0 {
        return Tick::NEVER;
    }
    now + Duration::from_millis(at_ms.saturating_sub(unix_now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_cross_clocks_as_wall_time() {
        let now = Tick::from_ms(5_000);
        let unix = 1_700_000_000_000;
        let at = tick_to_unix_ms(Tick::from_ms(65_000), now, unix);
        assert_eq!(at, unix + 60_000);
        // A new process whose ticks started 2 s ago, 1 s later.
        let later = unix_ms_to_tick(at, Tick::from_ms(2_000), unix + 1_000);
        assert_eq!(later, Tick::from_ms(2_000 + 59_000));
        assert_eq!(tick_to_unix_ms(Tick::NEVER, now, unix), 0);
        assert_eq!(unix_ms_to_tick(0, now, unix), Tick::NEVER);
        // Past deadlines fire at once.
        assert_eq!(unix_ms_to_tick(unix - 10, now, unix), now);
    }

    #[test]
    fn a_reader_refuses_truncated_input_without_panicking() {
        let mut bytes = Zeroizing::new(Vec::new());
        let mut w = Writer(&mut bytes);
        w.u64(7);
        w.bytes(b"abc");
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let read = r.u64().and_then(|_| r.bytes().map(<[u8]>::to_vec));
            assert_eq!(read, Err(DecodeError::Truncated), "cut at {cut}");
        }
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u64(), Ok(7));
        assert_eq!(r.bytes(), Ok(&b"abc"[..]));
        assert!(r.is_empty());
    }
}
