//! A connection's read buffer, which forgets what it hands out.
//!
//! Request bodies carry passwords, and heads carry bearer tokens. The
//! invariant of [`ReadBuf`] is that **every byte outside the live region
//! `start..end` is zero**: bytes are zeroized as they are consumed, when the
//! live region is moved to the front, and when the storage is replaced by a
//! larger one or dropped. A body is copied out exactly once, into a `Vec` of
//! exactly its length (so it never reallocates and leaves a copy behind), and
//! that `Vec`, itself zeroized on drop, is moved to the application.

use zeroize::{Zeroize, Zeroizing};

/// Bytes a read should at least be offered before the buffer is compacted or
/// grown; below this a read would return a trickle per syscall.
const SPARE_BYTES_MIN: usize = 1024;
/// First allocation, and what an emptied buffer larger than this shrinks to.
const INITIAL_BYTES: usize = 4 * 1024;

/// Received bytes not yet consumed, in storage that is zero everywhere else.
pub(crate) struct ReadBuf {
    /// Always fully initialized: `data.len()` is the allocated capacity.
    data: Vec<u8>,
    start: usize,
    end: usize,
    capacity_max: usize,
}

impl ReadBuf {
    /// An empty buffer that will never hold more than `capacity_max` bytes.
    /// Allocates nothing until the first read.
    pub(crate) fn new(capacity_max: usize) -> Self {
        ReadBuf {
            data: Vec::new(),
            start: 0,
            end: 0,
            capacity_max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The live bytes.
    pub(crate) fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Space to read into, after the live bytes; empty when the buffer holds
    /// `capacity_max` bytes. The caller MUST report what it wrote with
    /// [`ReadBuf::commit`].
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        if self.data.len() - self.end < SPARE_BYTES_MIN {
            self.make_room();
        }
        &mut self.data[self.end..]
    }

    /// `n` bytes were written at the front of [`ReadBuf::spare_mut`].
    pub(crate) fn commit(&mut self, n: usize) {
        assert!(
            n <= self.data.len() - self.end,
            "commit past the spare space"
        );
        self.end += n;
    }

    /// Drops the first `n` live bytes, zeroizing them.
    pub(crate) fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consume past the live bytes");
        self.data[self.start..self.start + n].zeroize();
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // An idle keep-alive connection should not pin a grown buffer.
            // Everything is zero by the invariant, so a plain drop is safe.
            if self.data.len() > INITIAL_BYTES {
                self.data = Vec::new();
            }
        }
    }

    /// Moves the first `n` live bytes out into a `Vec` of capacity exactly
    /// `n` that zeroizes itself on drop, zeroizing their place here.
    pub(crate) fn take_front(&mut self, n: usize) -> Zeroizing<Vec<u8>> {
        assert!(n <= self.len(), "take past the live bytes");
        let mut out = Zeroizing::new(Vec::with_capacity(n));
        out.extend_from_slice(&self.data[self.start..self.start + n]);
        self.consume(n);
        out
    }

    /// Drops all live bytes, zeroizing them.
    pub(crate) fn clear(&mut self) {
        self.consume(self.len());
    }

    /// Moves the live bytes to the front, then grows the storage if the spare
    /// space is still short and `capacity_max` allows.
    fn make_room(&mut self) {
        if self.start > 0 {
            let len = self.len();
            self.data.copy_within(self.start..self.end, 0);
            // The old tail beyond the moved bytes still holds copies.
            self.data[len..self.end].zeroize();
            self.start = 0;
            self.end = len;
        }
        let size = self.data.len();
        if size - self.end < SPARE_BYTES_MIN && size < self.capacity_max {
            let wanted = size.saturating_mul(2).max(INITIAL_BYTES);
            let mut grown = vec![0; wanted.min(self.capacity_max)];
            grown[..self.end].copy_from_slice(&self.data[..self.end]);
            // `Vec::zeroize` also wipes spare capacity before the free.
            self.data.zeroize();
            self.data = grown;
        }
    }

    /// The whole storage, for tests of the zero-outside-live invariant.
    #[cfg(test)]
    pub(crate) fn storage(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

impl std::fmt::Debug for ReadBuf {
    /// Redacted: the bytes may be credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuf")
            .field("len", &self.len())
            .field("capacity", &self.data.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(buf: &mut ReadBuf, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = buf.spare_mut();
            assert!(!spare.is_empty(), "buffer full");
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            buf.commit(n);
            rest = &rest[n..];
        }
    }

    /// Asserts the invariant: zero everywhere but the live region.
    fn assert_zero_outside_live(buf: &ReadBuf) {
        let storage = buf.storage();
        assert!(storage[..buf.start].iter().all(|&b| b == 0));
        assert!(storage[buf.end..].iter().all(|&b| b == 0));
    }

    #[test]
    fn body_is_moved_out_and_its_bytes_zeroized() {
        let head = b"POST /v1/subscriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n";
        let body = b"password=hunter2!";
        let next = b"GET / HTTP/1.1\r\n";
        let mut buf = ReadBuf::new(1 << 16);
        push(&mut buf, head);
        push(&mut buf, body);
        push(&mut buf, next);

        buf.consume(head.len());
        let taken = buf.take_front(body.len());

        assert_eq!(*taken, body);
        assert_eq!(taken.capacity(), body.len(), "no spare capacity to leak");
        assert_eq!(buf.filled(), next);
        assert_zero_outside_live(&buf);
        let storage = buf.storage();
        assert!(!storage.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn compaction_and_growth_leave_no_copies() {
        let mut buf = ReadBuf::new(64 * 1024);
        push(&mut buf, &[b's'; 3000]);
        buf.consume(2500);
        // Forces a compaction (the live 500 bytes move to the front), then a
        // growth (the 4 KiB storage is replaced).
        push(&mut buf, &[b't'; 5000]);
        assert_eq!(buf.len(), 5500);
        assert_zero_outside_live(&buf);
        buf.consume(500);
        assert!(buf.filled().iter().all(|&b| b == b't'));
        assert_zero_outside_live(&buf);
        buf.clear();
        assert!(buf.is_empty());
    }

    #[test]
    fn never_exceeds_capacity_max() {
        let mut buf = ReadBuf::new(5000);
        push(&mut buf, &[1; 5000]);
        assert!(buf.spare_mut().is_empty());
        buf.consume(1);
        assert_eq!(buf.spare_mut().len(), 1);
    }

    #[test]
    fn emptied_large_buffer_is_released() {
        let mut buf = ReadBuf::new(64 * 1024);
        push(&mut buf, &[7; 10_000]);
        buf.consume(10_000);
        assert_eq!(buf.storage().len(), 0);
    }
}
