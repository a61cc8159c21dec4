//! Admission of new flows under pressure: each source's share of the conntrack tables and of
//! the masquerade ports, and early drop, which lets a new flow take the place of an unreplied
//! or closing one when a table is full.
//!
//! Owns `SG_CT_SOURCES` (per source: flows held, masqueraded flows held, refusals; counted
//! here with atomic adds), reads `SG_CT_FREED` (per source: flows the agent removed; the agent
//! is its only writer, so neither side overwrites the other's counts), and owns the rings of
//! recently created flows (`SG_CT_RECENT4`/`6`, their reply keys) with their cursors
//! (`SG_CT_CURSOR`), where early drop looks for an entry to replace. The rings are shared by
//! all CPUs: a CPU must be able to replace a flow another CPU created (one peer's flows may be
//! handled on one CPU and another peer's on the next). Their cursors are updated without
//! atomics: two CPUs may now and then write the same slot (a flow then is not in the ring) or
//! read a slot while it is written (a torn key finds no flow, or another flow whose state is
//! checked like any other): neither can replace a flow that may not be replaced. Whether an entry may be
//! replaced, and its removal, are `ct`'s.
//!
//! Established flows are never replaced: a flow that has seen a reply keeps its entry until it
//! ends or times out, as Linux keeps assured connections. A full table with nothing to replace
//! among the flows looked at refuses the new flow (`drop_ct_full`).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use swiftgate_common::{
    Counter, FlowKey, FlowKey4, KernelConfig, SourceFreed, SourceKey, SourceUse, capacity,
};

use crate::{ct, metrics::count};

/// Sources with flows. Not preallocated: entries are created as sources open flows and freed
/// through RCU, so an add racing with the agent's removal of an idle source lands in memory
/// that stays valid (the count is lost, never another source's).
#[map(name = "SG_CT_SOURCES")]
pub(crate) static SOURCES: HashMap<SourceKey, SourceUse> =
    HashMap::pinned(capacity::SOURCES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);
/// Flows of each source the agent removed.
#[map(name = "SG_CT_FREED")]
pub(crate) static FREED: HashMap<SourceKey, SourceFreed> =
    HashMap::pinned(capacity::SOURCES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);
/// Reply keys of the IPv4 flows created lately, by any CPU (a ring, [`capacity::RECENT`]
/// slots).
#[map(name = "SG_CT_RECENT4")]
pub(crate) static RECENT4: Array<FlowKey4> = Array::with_max_entries(capacity::RECENT, 0);
/// The same for IPv6 (a quarter of the slots, as the IPv6 table is a quarter of the IPv4 one
/// by default).
#[map(name = "SG_CT_RECENT6")]
static RECENT6: Array<FlowKey> = Array::with_max_entries(capacity::RECENT / 4, 0);
/// The next slot to write and the next slot to examine, IPv4 then IPv6 (shared by all CPUs).
#[map(name = "SG_CT_CURSOR")]
pub(crate) static CURSOR: Array<[u32; 4]> = Array::with_max_entries(1, 0);
/// Per-CPU scratch space for a source key (the new-flow paths have no stack to spare).
#[map(name = "SG_SCRATCH_SOURCE")]
static SCRATCH_SOURCE: PerCpuArray<SourceKey> = PerCpuArray::with_max_entries(1, 0);

/// Recent flows examined per early drop before the new flow is refused.
const EARLY_DROP_PROBES: u32 = 8;

/// Adds `v` (wrapping: `u64::MAX` subtracts one) to the counter at `p` atomically.
///
/// # Safety
/// `p` must point into a map value valid for this program run, 8-byte aligned.
#[inline(always)]
pub(crate) unsafe fn add(p: *mut u64, v: u64) {
    // SAFETY: as the caller guarantees. The BPF atomic add (`lock ... +=`, no fetch), which
    // every kernel with BPF supports; `core`'s atomics offer no fetch_add on this target.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        )
    };
}

/// `addr`/`family` as a source key in this CPU's scratch slot.
#[inline(always)]
fn source_key(addr: &[u8; 16], family: u8) -> Option<&'static SourceKey> {
    let s = SCRATCH_SOURCE.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch slot, used only within this program run on this CPU; written
    // as words (the layout is 16 address bytes, then the family and seven zero bytes).
    unsafe {
        let src = addr.as_ptr().cast::<u64>();
        let dst = s.cast::<u64>();
        *dst = core::ptr::read_unaligned(src);
        *dst.add(1) = core::ptr::read_unaligned(src.add(1));
        *dst.add(2) = family as u64;
        Some(&*s)
    }
}

/// Whether the source of `key` may open another flow (`nat`: a masqueraded one), given the
/// shares in `cfg`; counts a refusal for the source and returns [`Counter::DropCtShare`] when
/// it holds its share already. A source without flows is always admitted.
#[inline(always)]
pub(crate) fn check<const V4: bool>(
    key: &FlowKey,
    cfg: &KernelConfig,
    nat: bool,
) -> Result<(), Counter> {
    let max = if V4 { cfg.ct_share4 } else { cfg.ct_share6 } as u64;
    let nat_max = if nat { cfg.nat_share as u64 } else { 0 };
    if max == 0 && nat_max == 0 {
        return Ok(());
    }
    let Some(sk) = source_key(&key.saddr, key.family) else {
        return Ok(());
    };
    let Some(u) = SOURCES.get_ptr_mut(sk) else {
        return Ok(());
    };
    // SAFETY: map value pointers, valid for this program run.
    unsafe {
        let (freed, nat_freed) = match FREED.get(sk) {
            Some(f) => (f.flows, f.nat_flows),
            None => (0, 0),
        };
        // Signed: counts that drifted below zero (an add lost to the agent's removal of an
        // idle source) admit rather than refuse.
        let held = (*u).flows.wrapping_sub(freed) as i64;
        let nat_held = (*u).nat_flows.wrapping_sub(nat_freed) as i64;
        if (max != 0 && held >= max as i64) || (nat_max != 0 && nat_held >= nat_max as i64) {
            add(&raw mut (*u).refused, 1);
            return Err(Counter::DropCtShare);
        }
    }
    Ok(())
}

/// Counts a flow the source `addr` opened (`nat`: masqueraded), creating the source's record
/// on its first flow. Not inlined: called once per new flow from paths whose stack the
/// verifier limits.
#[inline(never)]
pub(crate) fn opened(addr: &[u8; 16], family: u8, nat: bool) {
    let Some(sk) = source_key(addr, family) else {
        return;
    };
    let n = nat as u64;
    if let Some(u) = SOURCES.get_ptr_mut(sk) {
        // SAFETY: map value pointer, valid for this program run.
        unsafe {
            add(&raw mut (*u).flows, 1);
            if n != 0 {
                add(&raw mut (*u).nat_flows, 1);
            }
        }
        return;
    }
    let first = SourceUse {
        flows: 1,
        nat_flows: n,
        refused: 0,
    };
    if SOURCES.insert(sk, first, BPF_NOEXIST as u64).is_err() {
        // Another CPU created it meanwhile (or the table of sources is full: the flow is
        // then not charged, which admits rather than refuses).
        if let Some(u) = SOURCES.get_ptr_mut(sk) {
            // SAFETY: as above.
            unsafe {
                add(&raw mut (*u).flows, 1);
                if n != 0 {
                    add(&raw mut (*u).nat_flows, 1);
                }
            }
        }
    }
}

/// Uncounts a flow of the source `addr` the programs removed (early drop).
#[inline(always)]
fn closed(addr: &[u8; 16], family: u8, nat: bool) {
    let Some(sk) = source_key(addr, family) else {
        return;
    };
    if let Some(u) = SOURCES.get_ptr_mut(sk) {
        // SAFETY: map value pointer, valid for this program run. Adding u64::MAX subtracts 1.
        unsafe {
            add(&raw mut (*u).flows, u64::MAX);
            if nat {
                add(&raw mut (*u).nat_flows, u64::MAX);
            }
        }
    }
}

/// Remembers a flow just created, by its reply key, in the ring of recent flows.
#[inline(always)]
pub(crate) fn remember<const V4: bool>(reply: &FlowKey) {
    let Some(cur) = CURSOR.get_ptr_mut(0) else {
        return;
    };
    let at = if V4 { 0 } else { 2 };
    // SAFETY: map value pointers, valid for this run; shared with other CPUs, which may write
    // the same words meanwhile (see the module documentation: a lost update is harmless).
    unsafe {
        let pos = (*cur)[at];
        if V4 {
            if let Some(slot) = RECENT4.get_ptr_mut(pos & (capacity::RECENT - 1)) {
                ct::narrow_into(reply, slot);
            }
        } else if let Some(slot) = RECENT6.get_ptr_mut(pos & (capacity::RECENT / 4 - 1)) {
            *slot = *reply;
        }
        (*cur)[at] = pos.wrapping_add(1);
    }
}

/// Makes room in the full tables of family `V4` by removing one unreplied or closing flow
/// among the next [`EARLY_DROP_PROBES`] recent flows (each early drop goes on where the last
/// stopped, so every slot is examined in turn); `false` when none of them may be replaced.
#[inline(always)]
pub(crate) fn early_drop<const V4: bool>() -> bool {
    (if V4 {
        sg_early_drop4()
    } else {
        sg_early_drop6()
    }) != 0
}

/// [`early_drop`] for IPv4, as a global BPF function: the verifier checks it once, on its
/// own, instead of once for every path that reaches one of its several call sites (which
/// made the new-flow programs too large to verify). Returns 1 when room was made.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sg_early_drop4() -> u32 {
    drop_one::<true>() as u32
}

/// [`sg_early_drop4`] for IPv6.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sg_early_drop6() -> u32 {
    drop_one::<false>() as u32
}

#[inline(always)]
fn drop_one<const V4: bool>() -> bool {
    let Some(cur) = CURSOR.get_ptr_mut(0) else {
        return false;
    };
    let at = if V4 { 1 } else { 3 };
    // SAFETY: map value pointer, valid for this run (shared: see the module documentation).
    let start = unsafe { (*cur)[at] };
    let mut i = 0;
    while i < EARLY_DROP_PROBES {
        let pos = start.wrapping_add(i);
        i += 1;
        let victim = if V4 {
            match RECENT4.get_ptr(pos & (capacity::RECENT - 1)) {
                // SAFETY: map value pointer, valid for this program run (evict4 copies it).
                Some(rk) => ct::evict4(unsafe { &*rk }),
                None => continue,
            }
        } else {
            match RECENT6.get_ptr(pos & (capacity::RECENT / 4 - 1)) {
                // SAFETY: as above.
                Some(rk) => ct::evict6(unsafe { &*rk }),
                None => continue,
            }
        };
        let Some(v) = victim else { continue };
        // SAFETY: as above.
        unsafe { (*cur)[at] = start.wrapping_add(i) };
        if v.counted {
            closed(&v.saddr, v.family, v.nat);
        }
        count(Counter::CtEarlyDrop);
        return true;
    }
    // SAFETY: as above.
    unsafe { (*cur)[at] = start.wrapping_add(EARLY_DROP_PROBES) };
    false
}
