//! A counting global allocator for the fuzz binary: while a thread measures (see [`measure`]),
//! every allocation it makes is counted, so a parser's peak heap use on one input can be held to
//! a bound stated in terms of the input's size. Only this test binary has it (the integration
//! suite keeps the system allocator untouched).
//!
//! Counts are per thread: a parser that handed work to another thread would not be counted there.
//! None of the fuzzed parsers does (tokenizers' and minijinja's single-input paths run on the
//! calling thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

/// One allocation larger than this on a measuring thread fails (the process aborts with a
/// message naming the parser and case) instead of being attempted: a hostile count must not take
/// the machine down before the bound check can name it. Far above every stated bound.
const HARD_CAP: usize = 1 << 30;

#[derive(Clone, Copy)]
struct State {
    on: bool,
    /// Bytes allocated minus bytes freed since `measure` began (frees of older blocks can make
    /// it negative).
    live: isize,
    peak: isize,
    largest: usize,
    /// What is being measured, for the message when [`HARD_CAP`] is hit.
    label: &'static str,
    case: u64,
}

thread_local! {
    static STATE: Cell<State> = const {
        Cell::new(State { on: false, live: 0, peak: 0, largest: 0, label: "", case: 0 })
    };
}

pub struct Counting;

/// Notes an allocation of `add` bytes replacing `sub` bytes; false refuses it.
fn note(add: usize, sub: usize) -> bool {
    STATE
        .try_with(|s| {
            let mut st = s.get();
            if !st.on {
                return true;
            }
            if add > HARD_CAP {
                // No allocation here: format into a stack buffer.
                let mut buf = [0u8; 256];
                let mut w = &mut buf[..];
                let _ = writeln!(
                    w,
                    "fuzz: {} case {} asked for one allocation of {add} bytes (cap {HARD_CAP})",
                    st.label, st.case
                );
                let left = w.len();
                let _ = std::io::stderr().write_all(&buf[..256 - left]);
                return false;
            }
            st.live += add as isize - sub as isize;
            st.peak = st.peak.max(st.live);
            st.largest = st.largest.max(add);
            s.set(st);
            true
        })
        .unwrap_or(true)
}

fn note_free(size: usize) {
    let _ = STATE.try_with(|s| {
        let mut st = s.get();
        if st.on {
            st.live -= size as isize;
            s.set(st);
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping touches
// only a const-initialized thread-local `Cell` (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size(), 0) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size(), 0) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size, layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What one measured call allocated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Highest live heap (bytes allocated minus freed) during the call.
    pub peak: usize,
    /// Largest single allocation.
    pub largest: usize,
}

/// Runs `f`, counting this thread's allocations. Not reentrant.
pub fn measure<R>(label: &'static str, case: u64, f: impl FnOnce() -> R) -> (R, Usage) {
    STATE.with(|s| {
        s.set(State {
            on: true,
            live: 0,
            peak: 0,
            largest: 0,
            label,
            case,
        })
    });
    // Turned off again even when `f` panics (the driver catches the panic).
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            let _ = STATE.try_with(|s| {
                let mut st = s.get();
                st.on = false;
                s.set(st);
            });
        }
    }
    let off = Off;
    let r = f();
    drop(off);
    let st = STATE.with(Cell::get);
    (
        r,
        Usage {
            peak: st.peak.max(0) as usize,
            largest: st.largest,
        },
    )
}
