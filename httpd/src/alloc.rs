//! A heap that forgets: a global allocator wrapper that wipes every block
//! when it is freed or moved.
//!
//! Secrets pass through buffers this crate does not own: rustls 0.23 copies
//! each decrypted TLS record into a `Vec` of its own and frees it unwiped,
//! serde and std make temporaries. Wiping every freed block closes all of
//! these at once, structurally, instead of one call per path. A program opts
//! in, in its binary crate:
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: httpd::alloc::Wiping<std::alloc::System> = httpd::alloc::Wiping::new(std::alloc::System);
//! ```
//!
//! Cost: a volatile write per freed byte, and a copy per `realloc` (which
//! the inner allocator might otherwise do in place, but a move would leave
//! the old block behind). Live buffers are not its business: their owners
//! wipe them (see `buffer.rs`, `tls.rs`).

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use zeroize::Zeroize;

/// Bytes in live blocks of every [`Wiping`] allocator: the program's live heap when one
/// is its global allocator. A relaxed atomic add per allocation and per free; read by
/// [`live_bytes`] for the server's metrics (a heap that grows over hours is a leak the
/// soak bench looks for).
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes the program holds in live heap blocks, if its global allocator is a
/// [`Wiping`] (0 otherwise).
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Wraps the allocator `A`, wiping blocks before `A` frees them.
#[derive(Debug, Default)]
pub struct Wiping<A>(A);

impl<A> Wiping<A> {
    pub const fn new(inner: A) -> Wiping<A> {
        Wiping(inner)
    }
}

/// Counts a new block of `size` bytes at `ptr` (none if the allocation failed).
fn counted(ptr: *mut u8, size: usize) -> *mut u8 {
    if !ptr.is_null() {
        LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
    }
    ptr
}

/// Zeroes `len` bytes at `ptr` with writes the compiler may not drop.
///
/// # Safety
/// `ptr..ptr + len` MUST be valid for writes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }.zeroize();
}

// SAFETY: every method forwards to `A` with the layout it was given, after
// writes within the block being freed; `realloc` returns a block of the new
// layout from `A` holding the old contents, as GlobalAlloc requires.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Wiping<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        counted(unsafe { self.0.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        counted(unsafe { self.0.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes.
        unsafe {
            wipe(ptr, layout.size());
            self.0.dealloc(ptr, layout);
        }
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc promises a valid size for this
        // alignment; the copy stays within both blocks; the old block is
        // freed with its own layout.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = counted(self.0.alloc(new_layout), new_size);
            if !new.is_null() {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
