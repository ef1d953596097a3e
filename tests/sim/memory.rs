//! The simulation's heap, counted per simulated host: a global allocator that puts a small
//! header before every allocation naming the host whose code made it
//! ([`tandem::sim::host_tag`], set around each host's future and inherited by the tasks the
//! library spawns), so that the bytes are charged to that host whoever frees them (a message
//! the server allocates and a client's host drops stays the server's until it is freed).
//!
//! Counts the Rust heap only: SQLite allocates with its own `malloc` (its page cache is
//! bounded by its `cache_size`), and the store's notifier threads run outside any host.
//! `SIM_LEAKS=1` also keeps a backtrace of each live allocation, printed by [`dump`] when a
//! leak check fails.

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

/// The heap tags of one simulated host's processes: a new one at every start of the host, the
/// last one its running process.
#[derive(Clone, Default)]
pub struct HostTags(std::rc::Rc<std::cell::RefCell<Vec<u32>>>);

impl HostTags {
    /// A fresh tag for a start of the host (kept with the others).
    pub fn start(&self) -> u32 {
        let tag = new_tag();
        self.0.borrow_mut().push(tag);
        tag
    }

    /// The heap bytes of the running (last started) process not freed yet, and their peak
    /// ([`usage`]); zero if the host never started.
    pub fn current(&self) -> (i64, i64) {
        self.0.borrow().last().map_or((0, 0), |tag| usage(*tag))
    }

    /// The heap bytes all of the host's processes allocated and did not free.
    pub fn left(&self) -> i64 {
        self.0.borrow().iter().map(|tag| usage(*tag).0).sum()
    }

    /// [`dump`] for every process of the host.
    pub fn dump(&self) {
        dump(&self.0.borrow());
    }
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

// With `SIM_LEAKS=1` the allocator also keeps a backtrace of every live allocation charged to a
// host, and [`dump`] prints those of the given hosts: what a leak check that fails left
// behind, and where it was allocated. Off by default (a backtrace per allocation is slow).

thread_local! {
    /// Set while the allocator records a backtrace: what that allocates is charged to no host
    /// and not recorded itself.
    static RECORDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

type Live = std::collections::HashMap<usize, (u32, usize, std::backtrace::Backtrace)>;

/// The live allocations charged to hosts, by address, when `SIM_LEAKS` is set.
static LIVE_BACKTRACES: std::sync::Mutex<Option<Live>> = std::sync::Mutex::new(None);

/// Whether `SIM_LEAKS` is set: 2 until the environment was read.
static FIND_LEAKS: AtomicU32 = AtomicU32::new(2);

fn finding_leaks() -> bool {
    match FIND_LEAKS.load(Ordering::Relaxed) {
        2 => {
            let on = std::env::var_os("SIM_LEAKS").is_some();
            FIND_LEAKS.store(on as u32, Ordering::Relaxed);
            on
        }
        on => on == 1,
    }
}

fn record(ptr: usize, tag: u32, size: usize) {
    if tag == 0 || RECORDING.with(|r| r.replace(true)) {
        return;
    }
    if finding_leaks() {
        let backtrace = std::backtrace::Backtrace::force_capture();
        if let Ok(mut live) = LIVE_BACKTRACES.lock() {
            live.get_or_insert_with(Default::default)
                .insert(ptr, (tag, size, backtrace));
        }
    }
    RECORDING.with(|r| r.set(false));
}

fn forget(ptr: usize) {
    if FIND_LEAKS.load(Ordering::Relaxed) != 1 || RECORDING.with(|r| r.replace(true)) {
        return;
    }
    if let Ok(mut live) = LIVE_BACKTRACES.lock() {
        if let Some(live) = live.as_mut() {
            live.remove(&ptr);
        }
    }
    RECORDING.with(|r| r.set(false));
}

/// Prints (to stderr) each live allocation charged to one of `tags`, with the backtrace of
/// where it was made; nothing unless `SIM_LEAKS` was set for the whole run.
pub fn dump(tags: &[u32]) {
    RECORDING.with(|r| r.set(true));
    if let Ok(live) = LIVE_BACKTRACES.lock() {
        for (ptr, (tag, size, backtrace)) in live.iter().flatten() {
            if tags.contains(tag) {
                eprintln!("left allocated: {size} bytes at {ptr:#x} (host tag {tag}), made at\n{backtrace}");
            }
        }
    }
    RECORDING.with(|r| r.set(false));
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
        let tag = if RECORDING.with(|r| r.get()) {
            0
        } else {
            tandem::sim::host_tag()
        };
        let ptr = base.add(h);
        (ptr.sub(4) as *mut u32).write(tag);
        charge(tag, layout.size() as i64);
        record(ptr as usize, tag, layout.size());
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let h = header(layout);
        let tag = (ptr.sub(4) as *const u32).read();
        charge(tag, -(layout.size() as i64));
        forget(ptr as usize);
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
        forget(ptr as usize);
        record(base.add(h) as usize, tag, new_size);
        base.add(h)
    }
}
