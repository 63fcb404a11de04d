//! The state image an in-place upgrade hands to the next binary (see [`crate::upgrade`]).
//!
//! It lives only in memory: a memfd (`memfd_create`, never a file), passed by descriptor
//! number in [`IMAGE_FD_ENV`]. It holds key material (each session's TLS record keys), so
//! every buffer that holds it is `Zeroizing`, and the reader empties the memfd (truncates
//! it to 0) before closing it.
//!
//! Layout. A frame that never changes, then a versioned body:
//!
//! ```text
//! magic "IPPXIMG\0" | format version u32 | listener fd i32 (-1: none)
//! | fd count u32 | fd i32 ... | body length u32 | body
//! ```
//!
//! The frame lists every descriptor the image hands over, so that a binary that does not
//! know the body's version still closes them all (the IMAP servers see the connections
//! end) and starts as after a crash: never a guess at a layout it does not know. Body,
//! version 1: a count, then per subscription its [`Carried`] fields and its session
//! ([`engine::Handover::encode`]). Integers are big-endian, byte strings u16-length-prefixed.
//!
//! Why our own encoding rather than serde: the tree has serde_json only, and a text format
//! would put every key through string buffers and grow the image threefold (19,000
//! sessions, ~10 MB as JSON); the layout is 30 lines each way and fuzzing-simple.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use engine::handover::{DecodeError, Reader, Writer};
use engine::{Handover, Since};
use zeroize::Zeroizing;

use crate::core::Carried;
use crate::id::SubscriptionId;
use crate::registry::State;

/// The environment variable that names the image's descriptor in the new process.
pub const IMAGE_FD_ENV: &str = "IMAP_PUSH_PROXY_IMAGE_FD";
/// Test hook, honoured only in debug builds: names a file which, when it exists at the
/// moment of an upgrade, holds the format version to write instead of [`FORMAT_VERSION`]
/// (to show what a binary does with an image it cannot read). A file rather than the
/// number itself, so that a test can turn it on in a running server.
pub const TEST_VERSION_FILE_ENV: &str = "IMAP_PUSH_PROXY_TEST_IMAGE_VERSION_FILE";
const MAGIC: &[u8; 8] = b"IPPXIMG\0";
/// The body layout this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Most descriptors one image may list: more than any process holds.
pub const IMAGE_FDS_MAX: u32 = 1 << 24;
/// Most bytes one image may hold (a million sessions take about 250 MB).
pub const IMAGE_BYTES_MAX: u64 = 1 << 30;
/// Most mailboxes one carried subscription may name (the API's bound is lower).
const MAILBOXES_MAX: u8 = u8::MAX;

/// Why no image could be written or read.
#[derive(Debug)]
pub enum ImageError {
    /// The memfd could not be made, written or read.
    Io(std::io::Error),
    /// Not an image (no magic): nothing in it is trusted, no descriptor is closed.
    NotAnImage,
    /// An image of another format version: its descriptors were closed.
    UnknownVersion(u32),
    /// The body does not decode: its descriptors were closed.
    Corrupt(DecodeError),
    /// Over [`IMAGE_BYTES_MAX`] or [`IMAGE_FDS_MAX`].
    TooLarge,
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::Io(e) => write!(f, "image memfd: {e}"),
            ImageError::NotAnImage => f.write_str("not a state image"),
            ImageError::UnknownVersion(v) => {
                write!(
                    f,
                    "image format version {v}, this binary reads {FORMAT_VERSION}"
                )
            }
            ImageError::Corrupt(e) => write!(f, "image body: {e}"),
            ImageError::TooLarge => f.write_str("image over its bounds"),
        }
    }
}

impl std::error::Error for ImageError {}

/// What a new process takes over.
#[derive(Debug, Default)]
pub struct Image {
    /// The API's listening socket.
    pub listener: Option<std::net::TcpListener>,
    /// Each carried subscription with its session.
    pub sessions: Vec<(Carried, Handover)>,
}

/// The version to write: [`FORMAT_VERSION`], or the test hook's in debug builds.
pub fn version_to_write() -> u32 {
    #[cfg(debug_assertions)]
    if let Some(v) = std::env::var_os(TEST_VERSION_FILE_ENV)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|v| v.trim().parse().ok())
    {
        return v;
    }
    FORMAT_VERSION
}

/// Writes the image into a new memfd (without close-on-exec) and rewinds it.
pub fn write(
    listener: RawFd,
    sessions: &[(Carried, Handover)],
    version: u32,
) -> Result<OwnedFd, ImageError> {
    let mut body = Zeroizing::new(Vec::with_capacity(sessions.len() * 256));
    Writer(&mut body).u32(sessions.len() as u32);
    for (carried, handover) in sessions {
        encode_carried(carried, &mut body);
        handover.encode(&mut body);
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(body.len() + 64 + 4 * sessions.len()));
    bytes.extend_from_slice(MAGIC);
    let mut w = Writer(&mut bytes);
    w.u32(version);
    w.i32(listener);
    w.u32(sessions.len() as u32);
    for (_, handover) in sessions {
        w.i32(handover.fd());
    }
    w.u32(u32::try_from(body.len()).map_err(|_| ImageError::TooLarge)?);
    bytes.extend_from_slice(&body);
    let fd = memfd()?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes).map_err(ImageError::Io)?;
    file.seek(SeekFrom::Start(0)).map_err(ImageError::Io)?;
    Ok(OwnedFd::from(file))
}

/// Reads the image from `fd` (which this takes over), empties and closes the memfd.
pub fn read(fd: OwnedFd) -> Result<Image, ImageError> {
    let mut file = std::fs::File::from(fd);
    let mut bytes = Zeroizing::new(Vec::new());
    let read = (&mut file)
        .take(IMAGE_BYTES_MAX + 1)
        .read_to_end(&mut bytes);
    // The key material leaves the memfd whatever was read.
    let _ = file.set_len(0);
    drop(file);
    read.map_err(ImageError::Io)?;
    if bytes.len() as u64 > IMAGE_BYTES_MAX {
        return Err(ImageError::TooLarge);
    }
    decode(&bytes)
}

fn decode(bytes: &[u8]) -> Result<Image, ImageError> {
    let mut r = Reader::new(bytes);
    if r.take(MAGIC.len()).ok() != Some(&MAGIC[..]) {
        return Err(ImageError::NotAnImage);
    }
    let frame = (|| -> Result<(u32, RawFd, Vec<RawFd>), DecodeError> {
        let version = r.u32()?;
        let listener = r.i32()?;
        let n = r.u32()?;
        if n > IMAGE_FDS_MAX {
            return Err(DecodeError::Invalid("fd count"));
        }
        let mut fds = Vec::with_capacity(n as usize);
        for _ in 0..n {
            fds.push(r.i32()?);
        }
        Ok((version, listener, fds))
    })();
    let (version, listener, fds) = frame.map_err(|_| ImageError::NotAnImage)?;
    if version != FORMAT_VERSION {
        close_all(listener, &fds);
        return Err(ImageError::UnknownVersion(version));
    }
    match decode_body(&mut r, &fds) {
        Ok(sessions) => Ok(Image {
            // SAFETY: the image hands this descriptor to us alone.
            listener: (listener >= 0)
                .then(|| unsafe { std::net::TcpListener::from_raw_fd(listener) }),
            sessions,
        }),
        Err(e) => {
            close_all(listener, &fds);
            Err(ImageError::Corrupt(e))
        }
    }
}

/// The body's sessions. On an error, the handovers decoded so far give their descriptors
/// up (the caller closes every listed one).
fn decode_body(r: &mut Reader<'_>, fds: &[RawFd]) -> Result<Vec<(Carried, Handover)>, DecodeError> {
    let _body_len = r.u32()?;
    let n = r.u32()?;
    if n as usize != fds.len() {
        return Err(DecodeError::Invalid("session count"));
    }
    let mut sessions: Vec<(Carried, Handover)> = Vec::with_capacity(fds.len());
    let mut result = Ok(());
    for fd in fds {
        match decode_carried(r).and_then(|c| Ok((c, Handover::decode(r)?))) {
            Ok((c, h)) if h.fd() == *fd => sessions.push((c, h)),
            Ok((_, h)) => {
                std::mem::forget(h);
                result = Err(DecodeError::Invalid("descriptor"));
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    match result {
        Ok(()) if r.is_empty() => Ok(sessions),
        other => {
            for (_, h) in sessions {
                std::mem::forget(h);
            }
            Err(other
                .err()
                .unwrap_or(DecodeError::Invalid("trailing bytes")))
        }
    }
}

fn close_all(listener: RawFd, fds: &[RawFd]) {
    for fd in std::iter::once(listener).chain(fds.iter().copied()) {
        if fd >= 0 {
            // SAFETY: the image handed these descriptors to this process to close.
            unsafe { libc::close(fd) };
        }
    }
}

fn encode_carried(c: &Carried, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.0.extend_from_slice(c.id.as_bytes());
    w.bytes(c.host.as_bytes());
    w.0.extend_from_slice(&c.key);
    w.0.extend_from_slice(&c.account);
    let mailboxes = &c.mailboxes[..c.mailboxes.len().min(usize::from(MAILBOXES_MAX))];
    w.u8(mailboxes.len() as u8);
    for m in mailboxes {
        w.bytes(m.as_bytes());
    }
    match c.since {
        Some(s) => {
            w.u8(1);
            w.u32(s.uidvalidity);
            w.u32(s.uidnext);
        }
        None => w.u8(0),
    }
    w.u8(match c.state {
        State::Polling => 2,
        _ => 1,
    });
    w.u8(u8::from(c.idle));
    w.u8(u8::from(c.notify));
    match c.last_new_mail {
        Some((at, exists)) => {
            w.u8(1);
            w.u64(at);
            w.u32(exists);
        }
        None => w.u8(0),
    }
    w.u64(c.pushes_sent);
    w.u64(c.pushes_failed);
}

fn decode_carried(r: &mut Reader<'_>) -> Result<Carried, DecodeError> {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid("text"));
    let id = SubscriptionId::from_bytes(array(r)?);
    let host = text(r.bytes()?)?;
    let key = array(r)?;
    let account = array(r)?;
    let n = r.u8()?;
    let mut mailboxes = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        mailboxes.push(text(r.bytes()?)?);
    }
    let since = match r.u8()? {
        0 => None,
        _ => Some(Since {
            uidvalidity: r.u32()?,
            uidnext: r.u32()?,
        }),
    };
    let state = match r.u8()? {
        1 => State::Idle,
        2 => State::Polling,
        _ => return Err(DecodeError::Invalid("state")),
    };
    let idle = r.u8()? != 0;
    let notify = r.u8()? != 0;
    let last_new_mail = match r.u8()? {
        0 => None,
        _ => Some((r.u64()?, r.u32()?)),
    };
    Ok(Carried {
        id,
        host,
        key,
        account,
        mailboxes,
        since,
        state,
        idle,
        notify,
        last_new_mail,
        pushes_sent: r.u64()?,
        pushes_failed: r.u64()?,
    })
}

fn array<const N: usize>(r: &mut Reader<'_>) -> Result<[u8; N], DecodeError> {
    let mut a = [0u8; N];
    a.copy_from_slice(r.take(N)?);
    Ok(a)
}

/// An anonymous memory file without close-on-exec (it crosses the exec).
fn memfd() -> Result<OwnedFd, ImageError> {
    let name = c"imap-push-proxy-image";
    // SAFETY: a valid C string; no flags (no MFD_CLOEXEC: the descriptor crosses exec).
    match unsafe { libc::memfd_create(name.as_ptr(), 0) } {
        -1 => Err(ImageError::Io(std::io::Error::last_os_error())),
        // SAFETY: a new descriptor that nobody else owns.
        fd => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
    }
}

/// The descriptor named in [`IMAGE_FD_ENV`], if this process was started by an upgrade.
pub fn inherited_fd() -> Option<OwnedFd> {
    let fd: RawFd = std::env::var(IMAGE_FD_ENV).ok()?.parse().ok()?;
    // Only a descriptor that is open and a memfd of ours is taken.
    // SAFETY: fstat on any number is harmless; the link is read into a local buffer.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if fd < 0 || unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    if !link
        .to_string_lossy()
        .starts_with("/memfd:imap-push-proxy-image")
    {
        return None;
    }
    // SAFETY: the previous process left this descriptor for us alone.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Clears close-on-exec on `fd`, so that it crosses the exec.
pub fn keep_across_exec(fd: &impl AsRawFd) -> std::io::Result<()> {
    keep_raw_across_exec(fd.as_raw_fd())
}

/// [`keep_across_exec`] on a raw descriptor.
pub fn keep_raw_across_exec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller holds; F_SETFD takes an int.
    match unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried(n: u8) -> Carried {
        Carried {
            id: SubscriptionId::from_bytes([n; 16]),
            host: "imap.example.org".into(),
            key: [n; 32],
            account: [n + 1; 32],
            mailboxes: vec!["INBOX".into(), "Entwürfe".into()],
            since: Some(Since {
                uidvalidity: 7,
                uidnext: 9,
            }),
            state: State::Polling,
            idle: false,
            notify: true,
            last_new_mail: Some((1_700_000_000, 3)),
            pushes_sent: 4,
            pushes_failed: 1,
        }
    }

    #[test]
    fn carried_fields_round_trip() {
        let c = carried(3);
        let mut bytes = Vec::new();
        encode_carried(&c, &mut bytes);
        let mut r = Reader::new(&bytes);
        assert_eq!(decode_carried(&mut r).unwrap(), c);
        assert!(r.is_empty());
        for cut in 0..bytes.len() {
            assert!(decode_carried(&mut Reader::new(&bytes[..cut])).is_err());
        }
    }

    #[test]
    fn an_image_of_another_version_is_refused_and_its_descriptors_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
        let memfd = write(fd, &[], FORMAT_VERSION + 1).unwrap();
        match read(memfd) {
            Err(ImageError::UnknownVersion(v)) => assert_eq!(v, FORMAT_VERSION + 1),
            other => panic!("expected UnknownVersion, got {other:?}"),
        }
        // SAFETY: fcntl on a number: only asks whether it is open.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
        assert!(!open, "the listed descriptor was closed");
    }

    #[test]
    fn an_empty_image_round_trips_and_the_memfd_is_emptied() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
        let memfd = write(fd, &[], FORMAT_VERSION).unwrap();
        let probe = memfd.try_clone().unwrap();
        let image = read(memfd).unwrap();
        assert_eq!(image.listener.unwrap().local_addr().unwrap(), addr);
        assert_eq!(std::fs::File::from(probe).metadata().unwrap().len(), 0);
        assert!(matches!(decode(b"nonsense"), Err(ImageError::NotAnImage)));
    }
}
