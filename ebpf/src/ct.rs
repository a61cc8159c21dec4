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
//!
//! The tables are plain hash maps, not LRUs: nothing evicts an entry behind the flow's back.
//! An entry leaves when the agent's garbage collector expires it, when the agent revokes it,
//! or, unreplied or closing, when early drop ([`crate::admit`]) gives its place to a new flow
//! in a full table ([`evict4`], [`evict6`] decide which may go).
//!
//! This module owns the four tables and the per-CPU scratch slots that entries and keys are
//! built in on the paths that create flows (`SG_SCRATCH_CT`, `SG_SCRATCH_KEY4`,
//! `SG_SCRATCH_REPLY4`/`_6`: too big for the stack the verifier gives them), and with them
//! the creation of a flow's entries ([`new_entry`], [`track`]) and the accounting of its
//! packets ([`touch`], [`touch_reply`]).

use core::mem::MaybeUninit;

use core::ptr::{null, null_mut, write_volatile};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use swiftgate_common::{
    CT_REFRESH_NS, Counter, CtEntry, CtReply4, CtReply6, FAMILY_V4, FlowKey, FlowKey4, ReplyState,
    capacity, ct_flags, proto,
};

use crate::{
    admit,
    clock::{now, now_call},
    parse::{put_addr, tcp},
};

#[map(name = "SG_CT4")]
pub(crate) static CONNTRACK4: HashMap<FlowKey4, CtEntry> = HashMap::pinned(capacity::CONNTRACK, 0);
#[map(name = "SG_CT4_REPLY")]
pub(crate) static CT_REPLY4: HashMap<FlowKey4, CtReply4> = HashMap::pinned(capacity::CONNTRACK, 0);
#[map(name = "SG_CT6")]
static CONNTRACK6: HashMap<FlowKey, CtEntry> = HashMap::pinned(capacity::CONNTRACK, 0);
#[map(name = "SG_CT6_REPLY")]
static CT_REPLY6: HashMap<FlowKey, CtReply6> = HashMap::pinned(capacity::CONNTRACK, 0);

/// What an insert into a conntrack table did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// The entry is in.
    Done,
    /// The key is taken (with `BPF_NOEXIST`).
    Taken,
    /// The table is full (or refused the entry for another reason).
    Full,
}

/// `EEXIST`: the error an insert with `BPF_NOEXIST` gets for a taken key.
const EEXIST: i32 = 17;

#[inline(always)]
fn insert_result(r: Result<(), i32>) -> Insert {
    match r {
        Ok(()) => Insert::Done,
        Err(e) if e == -EEXIST => Insert::Taken,
        Err(_) => Insert::Full,
    }
}
/// Per-CPU scratch space for building a conntrack entry (too big for the BPF stack).
#[map(name = "SG_SCRATCH_CT")]
pub(crate) static SCRATCH_CT: PerCpuArray<CtEntry> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU scratch space for building a reply-table entry.
#[map(name = "SG_SCRATCH_REPLY4")]
pub(crate) static SCRATCH_REPLY4: PerCpuArray<CtReply4> = PerCpuArray::with_max_entries(1, 0);
/// The same for IPv6.
#[map(name = "SG_SCRATCH_REPLY6")]
static SCRATCH_REPLY6: PerCpuArray<CtReply6> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU scratch space for the copies of the two keys early drop checks and removes
/// ([`evict4`]; the new-flow paths that call it have no stack to spare).
#[map(name = "SG_SCRATCH_EVICT4")]
static SCRATCH_EVICT4: PerCpuArray<[FlowKey4; 2]> = PerCpuArray::with_max_entries(1, 0);
/// The same for IPv6 ([`evict6`]).
#[map(name = "SG_SCRATCH_EVICT6")]
static SCRATCH_EVICT6: PerCpuArray<[FlowKey; 2]> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU scratch space for IPv4 conntrack keys.
#[map(name = "SG_SCRATCH_KEY4")]
static SCRATCH_KEY4: PerCpuArray<[FlowKey4; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Writes the IPv4 key of `k` to `out` with three word copies (both keys are 8-byte aligned:
/// the addresses' first four bytes, then the 8-byte tail from `sport` on, which both keys lay
/// out alike).
#[inline(always)]
pub(crate) fn narrow_into(k: &FlowKey, out: *mut FlowKey4) {
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

/// Inserts the entry of a new flow (`BPF_NOEXIST`).
#[inline(always)]
pub(crate) fn insert_new<const V4: bool>(key: &FlowKey, entry: &CtEntry) -> Insert {
    if V4 {
        let Some((k4, _)) = narrow_scratch(key, key) else {
            return Insert::Full;
        };
        insert_result(CONNTRACK4.insert(k4, entry, BPF_NOEXIST as u64))
    } else {
        insert_result(CONNTRACK6.insert(key, entry, BPF_NOEXIST as u64))
    }
}

/// A flow early drop removed: whom it was charged to.
pub(crate) struct Victim {
    /// The flow's original source address.
    pub saddr: [u8; 16],
    /// Its family.
    pub family: u8,
    /// Whether it was masqueraded.
    pub nat: bool,
    /// `false` when only an orphaned reply entry (its flow already gone) was removed.
    pub counted: bool,
}

/// Whether a flow in the state `flags` (its entry's and its reply entry's bits together) may
/// give its place to a new flow: it has seen no reply, or it is a TCP flow that is closing
/// (FIN or RST seen), as Linux's early drop takes unassured and closing connections.
#[inline(always)]
fn replaceable(proto: u8, flags: u8) -> bool {
    flags & ct_flags::SEEN_REPLY == 0
        || (proto == proto::TCP
            && flags & (ct_flags::TCP_FIN_ORIG | ct_flags::TCP_FIN_REPLY | ct_flags::TCP_RST) != 0)
}

/// Removes the IPv4 flow whose reply key is `rk` if it may be replaced ([`replaceable`]), or
/// its reply entry alone if the flow is gone already.
///
/// Both keys are copied before anything is removed: `rk` lives in the shared ring of recent
/// flows, which another CPU may be writing, and the original key in the reply entry, which
/// another CPU may remove and the table reuse at once; what is removed must be what was
/// checked.
#[inline(always)]
pub(crate) fn evict4(rk: &FlowKey4) -> Option<Victim> {
    let slot = SCRATCH_EVICT4.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch slot, used only within this program run on this CPU; map value
    // pointers, valid for this run (their contents may change under us, hence the copies).
    let (rk, o, reply_flags) = unsafe {
        (*slot)[0] = *rk;
        let rk = &(*slot)[0];
        let r = CT_REPLY4.get_ptr(rk)?;
        (*slot)[1] = (*r).orig;
        (rk, &(*slot)[1], (*r).state.flags)
    };
    let Some(e) = CONNTRACK4.get_ptr(o) else {
        let _ = CT_REPLY4.remove(rk);
        return Some(Victim {
            saddr: [0; 16],
            family: 0,
            nat: false,
            counted: false,
        });
    };
    // SAFETY: as above.
    let flags = unsafe { (*e).flags };
    if !replaceable(o.proto, flags | reply_flags) {
        return None;
    }
    CONNTRACK4.remove(o).ok()?;
    let _ = CT_REPLY4.remove(rk);
    let words = [u32::from_ne_bytes(o.saddr) as u64, 0u64];
    Some(Victim {
        // SAFETY: two u64 are 16 plain bytes (the address first on this little-endian
        // target).
        saddr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) },
        family: FAMILY_V4,
        nat: flags & ct_flags::SNAT != 0,
        counted: true,
    })
}

/// [`evict4`] for IPv6.
#[inline(always)]
pub(crate) fn evict6(rk: &FlowKey) -> Option<Victim> {
    let slot = SCRATCH_EVICT6.get_ptr_mut(0)?;
    // SAFETY: as in evict4.
    let (rk, o, reply_flags) = unsafe {
        (*slot)[0] = *rk;
        let rk = &(*slot)[0];
        let r = CT_REPLY6.get_ptr(rk)?;
        (*slot)[1] = (*r).orig;
        (rk, &(*slot)[1], (*r).state.flags)
    };
    let Some(e) = CONNTRACK6.get_ptr(o) else {
        let _ = CT_REPLY6.remove(rk);
        return Some(Victim {
            saddr: [0; 16],
            family: 0,
            nat: false,
            counted: false,
        });
    };
    // SAFETY: as above.
    let flags = unsafe { (*e).flags };
    if !replaceable(o.proto, flags | reply_flags) {
        return None;
    }
    CONNTRACK6.remove(o).ok()?;
    let _ = CT_REPLY6.remove(rk);
    Some(Victim {
        saddr: o.saddr,
        family: o.family,
        nat: flags & ct_flags::SNAT != 0,
        counted: true,
    })
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
/// `flags`.
#[inline(always)]
// Key and value are passed where they are, in the scratch slots; by value they would be
// copied to the stack the verifier limits.
#[allow(clippy::needless_borrows_for_generic_args)]
pub(crate) fn reply_insert<const V4: bool>(
    s: &ReplyScratch<V4>,
    reply: &FlowKey,
    flags: u64,
) -> Insert {
    // SAFETY: the pointers are this CPU's scratch slots that reply_prepare checked (the ones
    // of family V4), valid for this program run.
    unsafe {
        if V4 {
            narrow_into(reply, s.key4);
            insert_result(CT_REPLY4.insert(&*s.key4, &*s.value4, flags))
        } else {
            insert_result(CT_REPLY6.insert(reply, &*s.value6, flags))
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

/// Inserts a new conntrack entry (and, unless already reserved, its reply entry), charges it
/// to its source and remembers it for early drop. A full table makes room by early drop
/// ([`admit::early_drop`]) once per insert, else the flow is refused ([`Counter::DropCtFull`]).
/// On a race with another CPU that created the same flow, the other CPU's entry wins.
#[inline(always)]
pub(crate) fn track<const V4: bool>(
    key: &FlowKey,
    reply_key: &FlowKey,
    entry: Option<*mut CtEntry>,
    reserved: bool,
) -> Result<(), Counter> {
    let Some(entry) = entry else {
        return Err(Counter::DropCtFull);
    };
    // SAFETY: the scratch slot returned by `new_entry`.
    let entry = unsafe { &*entry };
    if !reserved {
        let kind = entry.flags & (ct_flags::SNAT | ct_flags::LOCAL);
        let Some(scratch) = reply_prepare::<V4>(key, entry.origin, kind) else {
            return Err(Counter::DropCtFull);
        };
        let mut r = reply_insert::<V4>(&scratch, reply_key, 0);
        if r == Insert::Full && admit::early_drop::<V4>() {
            r = reply_insert::<V4>(&scratch, reply_key, 0);
        }
        if r != Insert::Done {
            return Err(Counter::DropCtFull);
        }
    }
    let mut r = insert_new::<V4>(key, entry);
    if r == Insert::Full && admit::early_drop::<V4>() {
        r = insert_new::<V4>(key, entry);
    }
    match r {
        Insert::Done => {
            admit::opened(&key.saddr, key.family, entry.flags & ct_flags::SNAT != 0);
            admit::remember::<V4>(reply_key);
            Ok(())
        }
        // Lost a race: drop our port reservation (another CPU's flow has its own).
        Insert::Taken => {
            if reserved {
                reply_remove::<V4>(reply_key);
            }
            Ok(())
        }
        Insert::Full => {
            reply_remove::<V4>(reply_key);
            Err(Counter::DropCtFull)
        }
    }
}

/// [`track`] for a flow without NAT: the reply key is the reversed key. Not inlined, so the
/// reversed key lives in its own stack frame.
#[inline(never)]
pub(crate) fn track_plain<const V4: bool>(
    key: &FlowKey,
    entry: Option<*mut CtEntry>,
) -> Result<(), Counter> {
    track::<V4>(key, &key.reversed(), entry, false)
}

/// [`track_plain`] for a flow of either family.
#[inline(always)]
pub(crate) fn track_plain_any(key: &FlowKey, entry: Option<*mut CtEntry>) -> Result<(), Counter> {
    if key.family == FAMILY_V4 {
        track_plain::<true>(key, entry)
    } else {
        track_plain::<false>(key, entry)
    }
}

/// Fills the per-CPU scratch entry (a conntrack entry is too big for the BPF stack in the
/// paths that create one) and returns a pointer to it, valid for this program run.
#[inline(always)]
pub(crate) fn new_entry(
    org: u8,
    policy_id: u32,
    lan_ifindex: u32,
    flags: u8,
    len: u64,
) -> Option<*mut CtEntry> {
    let e = SCRATCH_CT.get_ptr_mut(0)?;
    let t = now_call();
    // SAFETY: per-CPU scratch slot, used only within this run on this CPU. Zeroes are
    // written volatile: LLVM would merge adjacent zero stores into a call to its byte-loop
    // memset (the BPF backend does not expand memset inline).
    unsafe {
        (*e).created_ns = t;
        (*e).last_seen_ns = t;
        (*e).packets_orig = 1;
        (*e).bytes_orig = len;
        write_volatile(&raw mut (*e).packets_reply, 0);
        write_volatile(&raw mut (*e).bytes_reply, 0);
        put_addr(&raw mut (*e).nat_addr, 0, 0);
        let nh = (&raw mut (*e).nexthop).cast::<u32>();
        write_volatile(nh, 0);
        write_volatile(nh.add(1), 0);
        write_volatile(nh.add(2), 0);
        write_volatile(nh.add(3), 0);
        (*e).policy_id = policy_id;
        (*e).lan_ifindex = lan_ifindex;
        (*e).nat_port = 0;
        (*e).origin = org;
        (*e).flags = flags;
        (*e).nh_family = 0;
        write_volatile(&raw mut (*e).l2_checked_ns, 0);
        let macs = (&raw mut (*e).l2_macs).cast::<u32>();
        write_volatile(macs, 0);
        write_volatile(macs.add(1), 0);
        write_volatile(macs.add(2), 0);
        write_volatile((&raw mut (*e)._pad).cast::<u32>(), 0);
    }
    Some(e)
}

/// Accounts a packet of a tracked flow's original direction and advances the TCP state bits.
#[inline(always)]
pub(crate) fn touch(ct: *mut CtEntry, len: u64, proto: u8, tcp_flags: u8) {
    touch_at(ct, len, proto, tcp_flags, now())
}

/// [`touch`] with the current time already read.
#[inline(always)]
pub(crate) fn touch_at(ct: *mut CtEntry, len: u64, proto: u8, tcp_flags: u8, t: u64) {
    // SAFETY: `ct` points into a map value that stays valid for this program run.
    unsafe {
        account(
            Counters {
                packets: &raw mut (*ct).packets_orig,
                bytes: &raw mut (*ct).bytes_orig,
                last_seen: &raw mut (*ct).last_seen_ns,
                flags: &raw mut (*ct).flags,
            },
            len,
            tcp_bits(proto, tcp_flags, false),
            t,
        )
    }
}

/// Accounts a packet of a tracked flow's reply direction in its reply entry; `false`, having
/// changed nothing, when the flow's own entry is gone (the packet is then no tracked flow's).
///
/// A reply is handled with the reply entry alone, but the two entries live and die together:
/// at most every [`CT_REFRESH_NS`] (when the reply entry's `last_seen_ns` is refreshed, and on
/// its first packet) and on every TCP SYN, FIN or RST, the flow's own entry is looked up too,
/// so a flow whose entry was removed (expired, revoked, replaced by early drop) is noticed
/// within that time (the agent's garbage collector removes the orphaned reply entry).
#[inline(always)]
pub(crate) fn touch_reply(r: &ByReply, len: u64, proto: u8, tcp_flags: u8) -> bool {
    let t = now();
    let s = r.state;
    // SAFETY: `s` points into a map value that stays valid for this program run.
    let due = unsafe { t.wrapping_sub((*s).last_seen_ns) } > CT_REFRESH_NS
        || (proto == proto::TCP && tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) != 0);
    if due && r.entry().is_none() {
        return false;
    }
    // SAFETY: as above.
    unsafe {
        account(
            Counters {
                packets: &raw mut (*s).packets,
                bytes: &raw mut (*s).bytes,
                last_seen: &raw mut (*s).last_seen_ns,
                flags: &raw mut (*s).flags,
            },
            len,
            ct_flags::SEEN_REPLY | tcp_bits(proto, tcp_flags, true),
            t,
        )
    }
    true
}

/// The fields one direction of a flow is accounted in (a conntrack or a reply entry).
struct Counters {
    packets: *mut u64,
    bytes: *mut u64,
    last_seen: *mut u64,
    flags: *mut u8,
}

/// Counts a packet of `len` bytes at time `t` and adds the state bits `bits`.
///
/// # Safety
/// The pointers must point into a map value valid for this program run.
#[inline(always)]
unsafe fn account(c: Counters, len: u64, bits: u8, t: u64) {
    // SAFETY: as the caller guarantees; all writes are single-word stores. Plain adds: a
    // flow's packets are normally handled on one CPU (RSS, one TUN queue per flow); a rare
    // concurrent update may lose a count, never corrupt the entry.
    unsafe {
        *c.packets += 1;
        *c.bytes += len;
        if t.wrapping_sub(*c.last_seen) > CT_REFRESH_NS {
            *c.last_seen = t;
        }
        let old = *c.flags;
        if old | bits != old {
            *c.flags = old | bits;
        }
    }
}

/// The conntrack state bits a TCP segment with `tcp_flags` sets, in the reply direction or
/// not (0 for other protocols).
#[inline(always)]
fn tcp_bits(proto: u8, tcp_flags: u8, reply: bool) -> u8 {
    if proto != proto::TCP {
        return 0;
    }
    let mut f = 0;
    if tcp_flags & tcp::RST != 0 {
        f |= ct_flags::TCP_RST;
    }
    if tcp_flags & tcp::FIN != 0 {
        f |= if reply {
            ct_flags::TCP_FIN_REPLY
        } else {
            ct_flags::TCP_FIN_ORIG
        };
    }
    if reply && tcp_flags & (tcp::SYN | tcp::ACK) == (tcp::SYN | tcp::ACK) {
        f |= ct_flags::TCP_SYNACK;
    }
    f
}
