//! The coarse clock, cached per CPU: owns `SG_CLOCK` and [`now`], the timestamp of conntrack
//! entries, flow events and the XDP stage's next-hop cache.

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::PerCpuArray,
};

/// Per-CPU cache of the coarse clock, refreshed when the jiffies counter moves (see [`now`]).
#[map(name = "SG_CLOCK")]
static CLOCK: PerCpuArray<ClockCache> = PerCpuArray::with_max_entries(1, 0);

/// The coarse clock's value at the jiffy it was last read on this CPU.
#[repr(C)]
pub(crate) struct ClockCache {
    jiffies: u64,
    ns: u64,
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds, as `bpf_ktime_get_coarse_ns` returns it.
///
/// The coarse clock only moves at a timer tick, when the jiffies counter moves too, so its
/// value is cached per CPU together with the jiffy it was read at: reading the jiffies counter
/// is one load (the verifier inlines `bpf_jiffies64`), while a helper call costs ~20 ns per
/// packet with this kernel's call/return mitigations. The helper is called once per tick per
/// CPU. The kernel advances the jiffies counter just before the coarse clock, so a value read
/// in between stays cached for that jiffy: timestamps may lag the coarse clock by one tick
/// (about two behind real time). They are used for idle timeouts and once-a-second refreshes,
/// where that is as good as the helper's value.
#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: helper without arguments (inlined to a load of `jiffies_64`).
    let j = unsafe { bpf_jiffies64() };
    match CLOCK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU map, valid for this program run; a program
        // interrupted mid-update by another on the same CPU leaves at worst a jiffy that does
        // not match (see the order of the stores below), which costs one extra helper call.
        Some(c) => unsafe {
            if (*c).jiffies == j && (*c).ns != 0 {
                return (*c).ns;
            }
            let t = bpf_ktime_get_coarse_ns();
            // The value first, its jiffy last: an update cut short leaves a jiffy that does
            // not match, never a matching jiffy with an old value.
            (*c).ns = t;
            (*c).jiffies = j;
            t
        },
        // SAFETY: helper without arguments.
        None => unsafe { bpf_ktime_get_coarse_ns() },
    }
}

/// [`now`] behind a BPF-to-BPF call, for the paths that are not per-packet hot and whose
/// stack frames are near the verifier's limit.
#[inline(never)]
pub(crate) fn now_call() -> u64 {
    now()
}
