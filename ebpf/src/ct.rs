//! The conntrack tables, one pair per address family: IPv4 flows under the 16-byte
//! [`FlowKey4`] (`SG_CT4`, `SG_CT4_REPLY`), IPv6 flows under the 40-byte [`FlowKey`] (`SG_CT6`,
//! `SG_CT6_REPLY`). The kernel hashes and compares the whole key on every lookup, so IPv4 flows,
//! the common case, pay for 16 bytes instead of 40.
//!
//! Callers work with [`FlowKey`]. The functions take the family as a const parameter (`V4`):
//! code that creates flows is compiled once per family, so the verifier explores each copy
//! with one table. A runtime family test in front of every table access would make it explore
//! everything after each access once per family, which over the masquerade port probes
//! exceeds its limits. [`get`] and [`by_reply`] test the family at run time, for the
//! established paths, which end soon after the lookup.

use core::mem::MaybeUninit;

use aya_ebpf::bindings::BPF_NOEXIST;
use swiftgate_common::{CtEntry, FAMILY_V4, FlowKey, FlowKey4};

use crate::{CONNTRACK4, CONNTRACK6, CT_REPLY4, CT_REPLY6, SCRATCH_KEY4};

/// Writes the IPv4 key of `k` to `out` with three word copies (both keys are 8-byte aligned:
/// the addresses' first four bytes, then the 8-byte tail from `sport` on, which both keys lay
/// out alike).
#[inline(always)]
fn narrow_into(k: &FlowKey, out: *mut FlowKey4) {
    let src = (k as *const FlowKey).cast::<u32>();
    // SAFETY: `k` is a FlowKey (40 bytes, 8-byte aligned): u32 words 0 (saddr) and 4
    // (daddr) and u64 word 4 (the tail) are in bounds and aligned; `out` is valid for writes
    // of a FlowKey4 (16 bytes, 8-byte aligned): u32 words 0 and 1, u64 word 1.
    unsafe {
        let dst = out.cast::<u32>();
        *dst = *src;
        *dst.add(1) = *src.add(4);
        *out.cast::<u64>().add(1) = *src.cast::<u64>().add(4);
    }
}

/// `k` narrowed into `slot` on the caller's stack.
#[inline(always)]
fn narrow<'a>(k: &FlowKey, slot: &'a mut MaybeUninit<FlowKey4>) -> &'a FlowKey4 {
    narrow_into(k, slot.as_mut_ptr());
    // SAFETY: narrow_into wrote all 16 bytes.
    unsafe { slot.assume_init_ref() }
}

/// `a` and `b` narrowed into this CPU's scratch slots (the paths that create flows have no
/// stack to spare for them).
#[inline(always)]
fn narrow_scratch(a: &FlowKey, b: &FlowKey) -> Option<(&'static FlowKey4, &'static FlowKey4)> {
    let s = SCRATCH_KEY4.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch slot, used only within this program run on this CPU.
    unsafe {
        narrow_into(a, &raw mut (*s)[0]);
        narrow_into(b, &raw mut (*s)[1]);
        Some((&(*s)[0], &(*s)[1]))
    }
}

/// The entry of the flow whose original direction is `key`, in the table of family `V4`.
#[inline(always)]
pub(crate) fn get_in<const V4: bool>(key: &FlowKey) -> Option<*mut CtEntry> {
    if V4 {
        let mut k4 = MaybeUninit::uninit();
        CONNTRACK4.get_ptr_mut(narrow(key, &mut k4))
    } else {
        CONNTRACK6.get_ptr_mut(key)
    }
}

/// The entry of the flow whose original direction is `key`.
#[inline(always)]
pub(crate) fn get(key: &FlowKey) -> Option<*mut CtEntry> {
    if key.family == FAMILY_V4 {
        get_in::<true>(key)
    } else {
        get_in::<false>(key)
    }
}

/// Inserts the entry of a new flow; `false` when the key is present already or the table
/// refused it.
#[inline(always)]
pub(crate) fn insert_new<const V4: bool>(key: &FlowKey, entry: &CtEntry) -> bool {
    if V4 {
        let Some((k4, _)) = narrow_scratch(key, key) else {
            return false;
        };
        CONNTRACK4.insert(k4, entry, BPF_NOEXIST as u64).is_ok()
    } else {
        CONNTRACK6.insert(key, entry, BPF_NOEXIST as u64).is_ok()
    }
}

/// A flow found by a reply-direction key.
pub(crate) struct ByReply {
    /// The flow's entry (a map value, valid for this program run).
    pub ct: *mut CtEntry,
    /// The flow's original source address (IPv4: first four bytes, the rest zero).
    pub saddr: [u8; 16],
    /// The flow's original source port.
    pub sport: u16,
}

/// The flow whose reply direction (after NAT) is `key`, if tracked.
#[inline(always)]
pub(crate) fn by_reply(key: &FlowKey) -> Option<ByReply> {
    if key.family == FAMILY_V4 {
        let mut k4 = MaybeUninit::uninit();
        let o = CT_REPLY4.get_ptr(narrow(key, &mut k4))?;
        // SAFETY: map value pointer, valid for this run; used as the key in place.
        let o = unsafe { &*o };
        let ct = CONNTRACK4.get_ptr_mut(o)?;
        // Two words: a zeroed byte array would become a call to LLVM's byte-loop memset.
        let words = [u32::from_ne_bytes(o.saddr) as u64, 0u64];
        Some(ByReply {
            ct,
            // SAFETY: two u64 are 16 plain bytes; in memory order the IPv4 address comes
            // first on this little-endian target.
            saddr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) },
            sport: o.sport,
        })
    } else {
        let o = CT_REPLY6.get_ptr(key)?;
        // SAFETY: as above.
        let o = unsafe { &*o };
        let ct = CONNTRACK6.get_ptr_mut(o)?;
        Some(ByReply {
            ct,
            saddr: o.saddr,
            sport: o.sport,
        })
    }
}

/// Whether a reply entry exists for `key`.
#[inline(always)]
pub(crate) fn reply_exists(key: &FlowKey) -> bool {
    if key.family == FAMILY_V4 {
        let mut k4 = MaybeUninit::uninit();
        CT_REPLY4.get_ptr(narrow(key, &mut k4)).is_some()
    } else {
        CT_REPLY6.get_ptr(key).is_some()
    }
}

/// Inserts the reply entry `reply` -> `orig` with the map update `flags`; `false` when the
/// table refused it (with `BPF_NOEXIST`: when the reply key is taken).
#[inline(always)]
pub(crate) fn reply_insert<const V4: bool>(reply: &FlowKey, orig: &FlowKey, flags: u64) -> bool {
    if V4 {
        let Some((r4, o4)) = narrow_scratch(reply, orig) else {
            return false;
        };
        CT_REPLY4.insert(r4, o4, flags).is_ok()
    } else {
        CT_REPLY6.insert(reply, orig, flags).is_ok()
    }
}

/// Removes the reply entry `reply`.
#[inline(always)]
pub(crate) fn reply_remove<const V4: bool>(reply: &FlowKey) {
    if V4 {
        if let Some((r4, _)) = narrow_scratch(reply, reply) {
            let _ = CT_REPLY4.remove(r4);
        }
    } else {
        let _ = CT_REPLY6.remove(reply);
    }
}
