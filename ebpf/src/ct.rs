//! The conntrack tables, one pair per address family: IPv4 flows under the 16-byte
//! [`FlowKey4`] (`SG_CT4`, `SG_CT4_REPLY`), IPv6 flows under the 40-byte [`FlowKey`] (`SG_CT6`,
//! `SG_CT6_REPLY`). The kernel hashes and compares the whole key on every lookup, so IPv4 flows,
//! the common case, pay for 16 bytes instead of 40.
//!
//! A reply-table entry holds the flow's original-direction key and the reply direction's
//! counters and state ([`ReplyState`]), so a reply packet is handled with that one lookup;
//! only paths that need the flow's own fields (a LAN-opened flow's next hop, say) look the
//! flow up as well ([`ByReply::entry`]).
//!
//! Callers work with [`FlowKey`]. The functions take the family as a const parameter (`V4`):
//! code that creates flows is compiled once per family, so the verifier explores each copy
//! with one table. A runtime family test in front of every table access would make it explore
//! everything after each access once per family, which over the masquerade port probes
//! exceeds its limits. [`get`] and [`by_reply`] test the family at run time, for the
//! established paths, which end soon after the lookup.

use core::mem::MaybeUninit;

use core::ptr::{null, null_mut, write_volatile};

use aya_ebpf::bindings::BPF_NOEXIST;
use swiftgate_common::{CtEntry, CtReply4, CtReply6, FAMILY_V4, FlowKey, FlowKey4, ReplyState};

use crate::{
    CONNTRACK4, CONNTRACK6, CT_REPLY4, CT_REPLY6, SCRATCH_KEY4, SCRATCH_REPLY4, SCRATCH_REPLY6,
};

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
    /// The reply direction's state in the reply entry (a map value, valid for this run).
    pub state: *mut ReplyState,
    /// The flow's original source address (IPv4: first four bytes, the rest zero).
    pub saddr: [u8; 16],
    /// The flow's original source port.
    pub sport: u16,
    /// The flow's original key in the reply entry: IPv4 (else null) ...
    orig4: *const FlowKey4,
    /// ... or IPv6 (else null).
    orig6: *const FlowKey,
}

impl ByReply {
    /// The flow's [`origin`](swiftgate_common::origin).
    #[inline(always)]
    pub(crate) fn origin(&self) -> u8 {
        // SAFETY: map value pointer, valid for this run.
        unsafe { (*self.state).origin }
    }

    /// The flow's `SNAT` and `LOCAL` bits.
    #[inline(always)]
    pub(crate) fn kind(&self) -> u8 {
        // SAFETY: map value pointer, valid for this run.
        unsafe { (*self.state).kind }
    }

    /// The flow's conntrack entry (a second lookup).
    #[inline(always)]
    // The key is used where it is, in the reply entry; by value it would be copied to the stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    pub(crate) fn entry(&self) -> Option<*mut CtEntry> {
        if !self.orig4.is_null() {
            // SAFETY: map value pointer (the reply entry), valid for this run.
            CONNTRACK4.get_ptr_mut(unsafe { &*self.orig4 })
        } else if !self.orig6.is_null() {
            // SAFETY: as above.
            CONNTRACK6.get_ptr_mut(unsafe { &*self.orig6 })
        } else {
            None
        }
    }
}

/// The flow whose reply direction (after NAT) is `key`, if tracked.
#[inline(always)]
pub(crate) fn by_reply(key: &FlowKey) -> Option<ByReply> {
    if key.family == FAMILY_V4 {
        let mut k4 = MaybeUninit::uninit();
        let r = CT_REPLY4.get_ptr_mut(narrow(key, &mut k4))?;
        // SAFETY: map value pointer, valid for this run; used in place.
        let o = unsafe { &(*r).orig };
        // Two words: a zeroed byte array would become a call to LLVM's byte-loop memset.
        let words = [u32::from_ne_bytes(o.saddr) as u64, 0u64];
        Some(ByReply {
            // SAFETY: as above.
            state: unsafe { &raw mut (*r).state },
            // SAFETY: two u64 are 16 plain bytes; in memory order the IPv4 address comes
            // first on this little-endian target.
            saddr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) },
            sport: o.sport,
            orig4: o,
            orig6: null(),
        })
    } else {
        let r = CT_REPLY6.get_ptr_mut(key)?;
        // SAFETY: as above.
        let o = unsafe { &(*r).orig };
        Some(ByReply {
            // SAFETY: as above.
            state: unsafe { &raw mut (*r).state },
            saddr: o.saddr,
            sport: o.sport,
            orig4: null(),
            orig6: o,
        })
    }
}

/// Writes a fresh [`ReplyState`] (no reply packet yet) of a flow of `origin` with the
/// `SNAT`/`LOCAL` bits `kind`.
///
/// # Safety
/// `s` must be valid for writes.
#[inline(always)]
unsafe fn fresh_state(s: *mut ReplyState, origin: u8, kind: u8) {
    // SAFETY: as the caller guarantees. Zeroes are written volatile: LLVM would merge adjacent
    // zero stores into a call to its byte-loop memset (the BPF backend does not inline it).
    unsafe {
        write_volatile(&raw mut (*s).packets, 0);
        write_volatile(&raw mut (*s).bytes, 0);
        write_volatile(&raw mut (*s).last_seen_ns, 0);
        // flags, origin, kind and the padding: one word.
        let tail = u64::from_le_bytes([0, origin, kind, 0, 0, 0, 0, 0]);
        write_volatile((&raw mut (*s).flags).cast::<u64>(), tail);
    }
}

/// This CPU's scratch slots for inserting the reply entry of one flow of family `V4`: the
/// prepared value, and (IPv4) the slot the reply key is narrowed into. Looked up once per
/// flow, so the masquerade port probes do no lookups of their own.
pub(crate) struct ReplyScratch<const V4: bool> {
    key4: *mut FlowKey4,
    value4: *const CtReply4,
    value6: *const CtReply6,
}

/// Prepares the value of a reply entry pointing to `orig` (a flow of `origin` with the
/// `SNAT`/`LOCAL` bits `kind`) in this CPU's scratch slots, for [`reply_insert`]; `None` if a
/// slot is missing.
#[inline(always)]
pub(crate) fn reply_prepare<const V4: bool>(
    orig: &FlowKey,
    origin: u8,
    kind: u8,
) -> Option<ReplyScratch<V4>> {
    if V4 {
        let k = SCRATCH_KEY4.get_ptr_mut(0)?;
        let v = SCRATCH_REPLY4.get_ptr_mut(0)?;
        // SAFETY: per-CPU scratch slots, used only within this program run on this CPU.
        unsafe {
            narrow_into(orig, &raw mut (*v).orig);
            fresh_state(&raw mut (*v).state, origin, kind);
            Some(ReplyScratch {
                key4: &raw mut (*k)[0],
                value4: v,
                value6: null(),
            })
        }
    } else {
        let v = SCRATCH_REPLY6.get_ptr_mut(0)?;
        // SAFETY: as above.
        unsafe {
            (*v).orig = *orig;
            fresh_state(&raw mut (*v).state, origin, kind);
        }
        Some(ReplyScratch {
            key4: null_mut(),
            value4: null(),
            value6: v,
        })
    }
}

/// Inserts the reply entry `reply` with the value prepared in `s`, with the map update
/// `flags`; `false` when the table refused it (with `BPF_NOEXIST`: when the reply key is
/// taken).
#[inline(always)]
// Key and value are passed where they are, in the scratch slots; by value they would be
// copied to the stack the verifier limits.
#[allow(clippy::needless_borrows_for_generic_args)]
pub(crate) fn reply_insert<const V4: bool>(
    s: &ReplyScratch<V4>,
    reply: &FlowKey,
    flags: u64,
) -> bool {
    // SAFETY: the pointers are this CPU's scratch slots that reply_prepare checked (the ones
    // of family V4), valid for this program run.
    unsafe {
        if V4 {
            narrow_into(reply, s.key4);
            CT_REPLY4.insert(&*s.key4, &*s.value4, flags).is_ok()
        } else {
            CT_REPLY6.insert(reply, &*s.value6, flags).is_ok()
        }
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
