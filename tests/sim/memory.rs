//! The simulation's heap, counted per simulated host: a global allocator that puts a small
//! header before every allocation naming the host whose code made it
//! ([`tandem::sim::host_tag`], set around each host's future and inherited by the tasks the
//! library spawns), so that the bytes are charged to that host whoever frees them (a message
//! the server allocates and a client's host drops stays the server's until it is freed).
//!
//! Counts the Rust heap only: SQLite allocates with its own `malloc` (its page cache is
//! bounded by its `cache_size`), and the store's notifier threads run outside any host.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

/// Counter slots; tags are handed out round robin (a tag is reused only after 65,535 host
/// starts, long after everything its host allocated was freed).
const SLOTS: usize = 1 << 16;

static LIVE: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
static PEAK: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
static NEXT: AtomicU32 = AtomicU32::new(1);

/// A fresh host tag (never 0), its counters at zero.
pub fn new_tag() -> u32 {
    loop {
        let tag = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS as u32;
        if tag != 0 {
            LIVE[tag as usize].store(0, Ordering::Relaxed);
            PEAK[tag as usize].store(0, Ordering::Relaxed);
            return tag;
        }
    }
}

/// The heap bytes host `tag` allocated and that are not freed yet, and their peak.
pub fn usage(tag: u32) -> (i64, i64) {
    (
        LIVE[tag as usize].load(Ordering::Relaxed),
        PEAK[tag as usize].load(Ordering::Relaxed),
    )
}

/// The allocator: the system's, with a header of `max(16, align)` bytes whose last 4 hold the
/// tag.
pub struct PerHost;

fn header(layout: Layout) -> usize {
    layout.align().max(16)
}

fn charge(tag: u32, bytes: i64) {
    let live = LIVE[tag as usize].fetch_add(bytes, Ordering::Relaxed) + bytes;
    if bytes > 0 {
        PEAK[tag as usize].fetch_max(live, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for PerHost {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let h = header(layout);
        let Ok(full) = Layout::from_size_align(layout.size() + h, h) else {
            return std::ptr::null_mut();
        };
        let base = System.alloc(full);
        if base.is_null() {
            return base;
        }
        let tag = tandem::sim::host_tag();
        let ptr = base.add(h);
        (ptr.sub(4) as *mut u32).write(tag);
        charge(tag, layout.size() as i64);
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let h = header(layout);
        let tag = (ptr.sub(4) as *const u32).read();
        charge(tag, -(layout.size() as i64));
        System.dealloc(
            ptr.sub(h),
            Layout::from_size_align_unchecked(layout.size() + h, h),
        );
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let h = header(layout);
        let tag = (ptr.sub(4) as *const u32).read();
        let base = System.realloc(
            ptr.sub(h),
            Layout::from_size_align_unchecked(layout.size() + h, h),
            new_size + h,
        );
        if base.is_null() {
            return base;
        }
        charge(tag, new_size as i64 - layout.size() as i64);
        base.add(h)
    }
}
