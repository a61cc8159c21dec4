//! The new-flow path's floor, a benchmark reference (`sg_floor_new_flow`; the agent never loads
//! it): the map lookups, inserts and helper calls a new masqueraded IPv4 flow from the overlay
//! needs, done on the same maps with nothing else around them: no parsing beyond reading the
//! addresses and ports at fixed offsets, no validation, rewrite, checksum, MSS clamp, redirect
//! or events. `agent/examples/bench` runs it through the same harness as the new-flow path
//! (`sg_bench_new_flow`, a new source port every run), so the two times compare directly.
//!
//! The operations, in the path's order: the conntrack lookup (`SG_CT4`) and reply lookup
//! (`SG_CT4_REPLY`) that miss, the identity, destination and policy lookups (LPM tries), the
//! source's share (`SG_CT_SOURCES`, `SG_CT_FREED`; when shares are configured, as the path
//! does), the FIB lookup, the reply entry's insert
//! (the masquerade port, kept as the original), the flow entry's insert, the source's count,
//! the recent-flows ring, the counters.

// Keys and values are passed by reference, as the path passes them.
#![allow(clippy::needless_borrows_for_generic_args)]

use core::mem::MaybeUninit;

use aya_ebpf::{bindings::BPF_NOEXIST, programs::TcContext};
use swiftgate_common::{Counter, FAMILY_V4, FlowKey, FlowKey4, ReplyState, SourceKey, capacity};

use crate::{
    admit, ct,
    fib::{Route, fib_into},
    flow::config,
    metrics::{count, policy_stat},
    policy::{dest_of, identity_of, policy_of},
};

/// Ethernet + IPv4 without options: where the addresses and ports are in the harness's SYN.
const SADDR_AT: usize = 26;
const SPORT_AT: usize = 34;

/// See the module documentation. Returns `TC_ACT_REDIRECT` (what the new-flow path returns)
/// when every operation succeeded, `TC_ACT_SHOT` otherwise.
#[inline(always)]
pub fn new_flow(ctx: &TcContext) -> i32 {
    const REDIRECT: i32 = 7;
    const SHOT: i32 = 2;
    let (Ok(addrs), Ok(ports)) = (
        ctx.load::<[u8; 8]>(SADDR_AT),
        ctx.load::<[u16; 2]>(SPORT_AT),
    ) else {
        return SHOT;
    };
    let mut key = FlowKey {
        proto: 6,
        family: FAMILY_V4,
        sport: u16::from_be(ports[0]),
        dport: u16::from_be(ports[1]),
        ..FlowKey::default()
    };
    key.saddr[..4].copy_from_slice(&addrs[..4]);
    key.daddr[..4].copy_from_slice(&addrs[4..]);
    let cfg = config();
    let k4 = FlowKey4::narrow(&key);
    let r4 = FlowKey4::narrow(&key.reversed());
    if ct::CONNTRACK4.get_ptr(&k4).is_some() || ct::CT_REPLY4.get_ptr(&r4).is_some() {
        return SHOT;
    }
    let Some(identity) = identity_of(&key) else {
        return SHOT;
    };
    let Some(dest) = dest_of(&key) else {
        return SHOT;
    };
    let Some(pol) = policy_of(identity, dest.dest_id, &key) else {
        return SHOT;
    };
    let source = SourceKey {
        addr: key.saddr,
        family: FAMILY_V4,
        _pad: [0; 7],
    };
    // The share's lookups, when shares are configured (as the path does them).
    if cfg.ct_share4 != 0 || cfg.nat_share != 0 {
        let held = match (
            admit::SOURCES.get_ptr(&source),
            admit::FREED.get_ptr(&source),
        ) {
            // SAFETY: map value pointers, valid for this run.
            (Some(u), f) => unsafe { (*u).flows.wrapping_sub(f.map_or(0, |f| (*f).flows)) },
            (None, _) => 0,
        };
        if cfg.ct_share4 != 0 && held as i64 >= cfg.ct_share4 as i64 {
            return SHOT;
        }
    }
    let mut route = MaybeUninit::<Route>::uninit();
    if fib_into(ctx, &key, &mut route) == 0 {
        return SHOT;
    }
    // SAFETY: fib_into wrote the route (it returned an interface).
    let route = unsafe { route.assume_init_ref() };
    let (Some(reply), Some(entry)) = (
        ct::SCRATCH_REPLY4.get_ptr_mut(0),
        ct::SCRATCH_CT.get_ptr_mut(0),
    ) else {
        return SHOT;
    };
    // The reply key after masquerade to the route's source, the port kept.
    let mut rk = r4;
    rk.daddr.copy_from_slice(&route.src[..4]);
    // SAFETY: per-CPU scratch slots, used only within this run on this CPU; every field the
    // maps keep is written (the rest of the entry keeps what the last run left: the floor
    // needs the insert, not the contents).
    unsafe {
        (*reply).orig = k4;
        (*reply).state = ReplyState::default();
        if ct::CT_REPLY4
            .insert(&rk, &*reply, BPF_NOEXIST as u64)
            .is_err()
        {
            return SHOT;
        }
        (*entry).policy_id = pol.policy_id;
        (*entry).nat_port = key.sport;
        if ct::CONNTRACK4
            .insert(&k4, &*entry, BPF_NOEXIST as u64)
            .is_err()
        {
            return SHOT;
        }
        match admit::SOURCES.get_ptr_mut(&source) {
            Some(u) => admit::add(&raw mut (*u).flows, 1),
            None => return SHOT,
        }
        if let Some(cur) = admit::CURSOR.get_ptr_mut(0)
            && let Some(slot) = admit::RECENT4.get_ptr_mut((*cur)[0] & (capacity::RECENT - 1))
        {
            *slot = rk;
            (*cur)[0] += 1;
        }
    }
    count(Counter::AcceptNew);
    policy_stat(pol.policy_id, true);
    REDIRECT
}
