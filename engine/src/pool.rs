//! Read buffers lent per reactor.
//!
//! A session borrows a buffer only while a partial response is pending and gives it back
//! as soon as its bytes are consumed, so an idle session owns no buffer at all.

/// Capacity a lent buffer starts with.
pub const POOL_BUF_CAPACITY: usize = 4 * 1024;
/// A returned buffer that grew past this is freed instead of kept, so one huge response
/// does not pin memory for ever.
pub const POOL_BUF_KEEP_MAX: usize = 64 * 1024;
/// Most free buffers a pool keeps.
pub const POOL_FREE_MAX: usize = 256;

/// A per-reactor pool of byte buffers.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    lent: usize,
}

impl BufPool {
    pub fn new() -> BufPool {
        BufPool::default()
    }

    /// Lends an empty buffer.
    pub fn take(&mut self) -> Vec<u8> {
        self.lent += 1;
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(POOL_BUF_CAPACITY))
    }

    /// Takes a buffer back. Its contents are discarded.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        self.lent = self.lent.saturating_sub(1);
        if buf.capacity() > POOL_BUF_KEEP_MAX || self.free.len() >= POOL_FREE_MAX {
            return;
        }
        buf.clear();
        self.free.push(buf);
    }

    /// Buffers currently lent out (a gauge for metrics and tests).
    pub fn lent(&self) -> usize {
        self.lent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_buffers_are_not_kept() {
        let mut pool = BufPool::new();
        let mut b = pool.take();
        b.resize(POOL_BUF_KEEP_MAX + 1, 0);
        pool.give(b);
        assert_eq!(pool.free.len(), 0);
        let b = pool.take();
        assert!(b.is_empty());
        pool.give(b);
        assert_eq!(pool.free.len(), 1);
        assert_eq!(pool.lent(), 0);
    }
}
