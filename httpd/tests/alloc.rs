//! `httpd::alloc::Wiping`, from the outside: every block reaches the inner allocator's
//! `dealloc` zeroed, and `realloc` keeps the contents.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use httpd::alloc::Wiping;

/// Blocks freed, and those freed with a non-zero byte left in them.
static FREED: AtomicUsize = AtomicUsize::new(0);
static DIRTY: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting into [`FREED`] and [`DIRTY`].
struct Checking;

unsafe impl GlobalAlloc for Checking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
        FREED.fetch_add(1, Ordering::Relaxed);
        if block.iter().any(|&b| b != 0) {
            DIRTY.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[test]
fn freed_and_moved_blocks_reach_the_inner_allocator_wiped() {
    let heap = Wiping::new(Checking);
    let secret = b"password=hunter2";
    // This binary's global allocator is not a Wiping one: only `heap` counts.
    let live = httpd::alloc::live_bytes;
    assert_eq!(live(), 0);
    unsafe {
        let layout = Layout::from_size_align(secret.len(), 1).unwrap();
        let p = heap.alloc(layout);
        assert!(!p.is_null());
        assert_eq!(live(), secret.len());
        std::ptr::copy_nonoverlapping(secret.as_ptr(), p, secret.len());
        // Grow, then shrink: each move frees the old block.
        let grown = heap.realloc(p, layout, 4096);
        assert_eq!(std::slice::from_raw_parts(grown, secret.len()), secret);
        assert_eq!(live(), 4096, "a move counts the new block, not the old");
        let big = Layout::from_size_align(4096, 1).unwrap();
        let shrunk = heap.realloc(grown, big, 8);
        assert_eq!(std::slice::from_raw_parts(shrunk, 8), &secret[..8]);
        heap.dealloc(shrunk, Layout::from_size_align(8, 1).unwrap());
    }
    assert_eq!(live(), 0, "everything freed");
    // Three blocks freed (two by moves), none with a byte left.
    assert_eq!(FREED.load(Ordering::Relaxed), 3);
    assert_eq!(DIRTY.load(Ordering::Relaxed), 0);
}
