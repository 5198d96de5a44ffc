//! The process allocator, with one change: an allocation of [`HUGE_BYTES_MIN`] or more is an
//! anonymous mapping made with `MAP_NORESERVE`, so the kernel commits its pages only as they
//! are written.
//!
//! Why: the `kafka-protocol` crate (0.18) decodes an array by calling `Vec::with_capacity`
//! with the element count read from the wire, before decoding a single element
//! (kafka-protocol-rs PRs #152, #161 and #200 propose bounding it; none is released). A
//! 10-byte request declaring two billion topics asks for a few hundred GB at once; the
//! system allocator refuses, and Rust aborts the process (`handle_alloc_error` is not a
//! panic). With this allocator the reservation succeeds untouched, the decoder fails on the
//! first missing element, and the mapping is released: memory really used stays bounded by
//! the bytes actually decoded (a request is at most `kafka::REQUEST_BYTES_MAX`). The proptest
//! in `node::kafka::tests` feeds such frames.
//!
//! Every other allocation goes to the system allocator unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are lazily committed mappings. No legitimate allocation
/// of tern comes near it (WAL buffers and caches are MiBs).
pub const HUGE_BYTES_MIN: usize = 1 << 30;
/// Mappings are page-aligned; a larger alignment goes to the system allocator.
const PAGE_BYTES: usize = 4096;

pub struct HugeAlloc;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_BYTES_MIN && layout.align() <= PAGE_BYTES
}

// SAFETY (for the impl): `alloc` returns either the system allocator's block or a fresh
// private anonymous mapping of `layout.size()` bytes, page-aligned (which satisfies every
// alignment `is_huge` accepts); `dealloc` tells the two apart by the same `is_huge(layout)`
// test on the layout the caller must pass back unchanged (GlobalAlloc's contract), so a
// mapping is always unmapped with its own length and a system block freed by the system.
unsafe impl GlobalAlloc for HugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_huge(&layout) {
            return unsafe { System.alloc(layout) };
        }
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // Anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = match Layout::from_size_align(new_size, layout.align()) {
            Ok(l) => l,
            Err(_) => return std::ptr::null_mut(),
        };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_huge_untouched_reservation_succeeds_and_is_released() {
        // 256 GiB: more than this machine has; only the pages written are committed.
        let mut v: Vec<u64> = Vec::with_capacity(32 << 30);
        v.push(7);
        assert_eq!(v[0], 7);
        drop(v);
        let small: Vec<u8> = vec![1; 4096];
        assert_eq!(small.iter().map(|&b| b as usize).sum::<usize>(), 4096);
    }
}
