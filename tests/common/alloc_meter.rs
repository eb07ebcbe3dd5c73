//! A global allocator that counts: the largest single request, and the peak of
//! bytes held, since the last [`reset`]. Requests above a hard cap are refused
//! (null), so a reader that sizes a buffer from a hostile header fails the test
//! (the process aborts with "memory allocation of N bytes failed") instead of
//! taking the machine's memory.
//!
//! Used by tests/hostile_inputs.rs and the fuzzer (fuzz/fuzz.rs) as
//! `#[global_allocator] static A: AllocMeter = AllocMeter;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct AllocMeter;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// Requests larger than this are refused; usize::MAX: no cap.
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Requests above this print a backtrace to stderr (fuzz: FUZZ_TRACE_BYTES).
static TRACE: AtomicUsize = AtomicUsize::new(usize::MAX);

thread_local! {
    static IN_TRACE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn trace(size: usize) {
    if size <= TRACE.load(Relaxed) || IN_TRACE.with(|t| t.replace(true)) {
        return;
    }
    eprintln!(
        "allocation of {size} B at\n{}",
        std::backtrace::Backtrace::force_capture()
    );
    IN_TRACE.with(|t| t.set(false));
}

/// Prints a backtrace for every request above `bytes`.
pub fn set_trace(bytes: usize) {
    TRACE.store(bytes, Relaxed);
}

fn note(size: usize) {
    LARGEST.fetch_max(size, Relaxed);
    let now = HELD.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for AllocMeter {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        trace(l.size());
        if l.size() > CAP.load(Relaxed) {
            LARGEST.fetch_max(l.size(), Relaxed);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            note(l.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        trace(l.size());
        if l.size() > CAP.load(Relaxed) {
            LARGEST.fetch_max(l.size(), Relaxed);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            note(l.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: p came from this allocator with this layout.
        unsafe { System.dealloc(p, l) };
        HELD.fetch_sub(l.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        trace(new);
        if new > CAP.load(Relaxed) {
            LARGEST.fetch_max(new, Relaxed);
            return std::ptr::null_mut();
        }
        // SAFETY: p came from this allocator with layout l.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            HELD.fetch_sub(l.size(), Relaxed);
            note(new);
        }
        q
    }
}

/// Starts a measurement: the peak restarts from the bytes held now.
pub fn reset() {
    LARGEST.store(0, Relaxed);
    PEAK.store(HELD.load(Relaxed), Relaxed);
}

/// (largest single request, peak held minus held at `base`) in bytes.
pub fn since(base: usize) -> (usize, usize) {
    (
        LARGEST.load(Relaxed),
        PEAK.load(Relaxed).saturating_sub(base),
    )
}

pub fn held() -> usize {
    HELD.load(Relaxed)
}

/// Refuses single requests above `bytes` from now on.
pub fn set_cap(bytes: usize) {
    CAP.store(bytes, Relaxed);
}

/// Runs `f` and returns its result with (largest request, peak growth) in bytes.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = held();
    reset();
    let v = f();
    let (largest, peak) = since(base);
    (v, largest, peak)
}
