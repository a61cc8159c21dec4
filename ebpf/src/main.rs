//! swiftgate's kernel fast path for routing peers.
//!
//! Programs (TC, attached by the agent through TCX):
//! - overlay ingress (`sg_overlay_ingress_l3` on the TUN, `_l2` on Ethernet overlays): tracked
//!   flows take the fast path; any other packet is handed by tail call (through the pinned
//!   `SG_CALLS` array) to `sg_overlay_new_l3`/`_l2`, which check a new flow against the peer
//!   ACL (to the routing peer itself) or the route ACL (to a routed resource), then track it,
//!   masquerade it when its route asks, clamp its MSS and redirect it to the egress interface
//!   found in the FIB; everything else is dropped (deny by default). Two programs, so the
//!   established path and the new-flow path each have the verifier's 512 stack bytes.
//! - overlay XDP (`sg_overlay_xdp`, optional, Ethernet overlays only): packets of tracked
//!   flows that need nothing but the source rewrite and a resolved next hop are forwarded
//!   before an skb exists; everything else passes to the TC program.
//! - overlay egress: tracks flows the routing peer itself opens towards the overlay.
//! - LAN ingress (`sg_lan_ingress`): replies of tracked flows are reverse-NATed and redirected
//!   into the overlay; any other packet goes by tail call to `sg_lan_other`: LAN-initiated
//!   flows to overlay peers need a policy (Site-to-VPN), ICMP errors about tracked flows are
//!   translated, and anything else is not ours and passes untouched.
//!
//! The agent is the only writer of policy maps; conntrack is written here and expired by the
//! agent's garbage collector.
#![no_std]
#![no_main]

mod csum;
mod ct;
mod flow;
mod parse;
mod rewrite;
mod xdp;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use swiftgate_common::{
    COUNTER_SLOTS, CtEntry, CtReply4, CtReply6, DestValue, FlowKey, FlowKey4, IdentityValue,
    KernelConfig, PolicyKey, PolicyStats, PolicyValue, calls, capacity,
};

#[map(name = "SG_CONFIG")]
static CONFIG: Array<KernelConfig> = Array::pinned(1, 0);
#[map(name = "SG_IDENTITY_V4")]
static IDENTITY_V4: LpmTrie<[u8; 4], IdentityValue> = LpmTrie::pinned(capacity::IDENTITY, 0);
#[map(name = "SG_IDENTITY_V6")]
static IDENTITY_V6: LpmTrie<[u8; 16], IdentityValue> = LpmTrie::pinned(capacity::IDENTITY, 0);
#[map(name = "SG_DEST_V4")]
static DEST_V4: LpmTrie<[u8; 4], DestValue> = LpmTrie::pinned(capacity::DEST, 0);
#[map(name = "SG_DEST_V6")]
static DEST_V6: LpmTrie<[u8; 16], DestValue> = LpmTrie::pinned(capacity::DEST, 0);
#[map(name = "SG_POLICY")]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::pinned(capacity::POLICY, 0);
#[map(name = "SG_CT4")]
static CONNTRACK4: LruHashMap<FlowKey4, CtEntry> = LruHashMap::pinned(capacity::CONNTRACK, 0);
#[map(name = "SG_CT4_REPLY")]
static CT_REPLY4: LruHashMap<FlowKey4, CtReply4> = LruHashMap::pinned(capacity::CONNTRACK, 0);
#[map(name = "SG_CT6")]
static CONNTRACK6: LruHashMap<FlowKey, CtEntry> = LruHashMap::pinned(capacity::CONNTRACK, 0);
#[map(name = "SG_CT6_REPLY")]
static CT_REPLY6: LruHashMap<FlowKey, CtReply6> = LruHashMap::pinned(capacity::CONNTRACK, 0);
#[map(name = "SG_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_SLOTS, 0);
#[map(name = "SG_POLICY_STATS")]
static POLICY_STATS: PerCpuHashMap<u32, PolicyStats> =
    PerCpuHashMap::pinned(capacity::POLICY_STATS, 0);
/// Per-CPU scratch space for building a conntrack entry (too big for the BPF stack).
#[map(name = "SG_SCRATCH_CT")]
static SCRATCH_CT: PerCpuArray<CtEntry> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU scratch space for a flow key (keeps it off the stack of the new-flow path).
#[map(name = "SG_SCRATCH_KEY")]
static SCRATCH_KEY: PerCpuArray<FlowKey> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU scratch space for building a reply-table entry (see `ct`).
#[map(name = "SG_SCRATCH_REPLY4")]
static SCRATCH_REPLY4: PerCpuArray<CtReply4> = PerCpuArray::with_max_entries(1, 0);
/// The same for IPv6.
#[map(name = "SG_SCRATCH_REPLY6")]
static SCRATCH_REPLY6: PerCpuArray<CtReply6> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU scratch space for IPv4 conntrack keys (see `ct`).
#[map(name = "SG_SCRATCH_KEY4")]
static SCRATCH_KEY4: PerCpuArray<[FlowKey4; 2]> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU cache of the coarse clock, refreshed when the jiffies counter moves (see
/// `flow::now`).
#[map(name = "SG_CLOCK")]
static CLOCK: PerCpuArray<flow::ClockCache> = PerCpuArray::with_max_entries(1, 0);
/// The new-flow programs, tail-called by the overlay ingress programs (own stack: the
/// established path and the new-flow path each get the verifier's 512 bytes).
#[map(name = "SG_CALLS")]
static CALLS: ProgramArray = ProgramArray::pinned(calls::SLOTS, 0);
#[map(name = "SG_EVENTS")]
static EVENTS: RingBuf = RingBuf::pinned(capacity::EVENTS_BYTES, 0);

#[classifier]
pub fn sg_overlay_ingress_l3(ctx: TcContext) -> i32 {
    flow::overlay_ingress(&ctx, false)
}

#[classifier]
pub fn sg_overlay_ingress_l2(ctx: TcContext) -> i32 {
    flow::overlay_ingress(&ctx, true)
}

/// New flows from an L3 overlay (tail-called by `sg_overlay_ingress_l3`).
#[classifier]
pub fn sg_overlay_new_l3(ctx: TcContext) -> i32 {
    flow::overlay_new(&ctx, false)
}

/// New flows from an L2 overlay (tail-called by `sg_overlay_ingress_l2`).
#[classifier]
pub fn sg_overlay_new_l2(ctx: TcContext) -> i32 {
    flow::overlay_new(&ctx, true)
}

#[classifier]
pub fn sg_overlay_egress_l3(ctx: TcContext) -> i32 {
    flow::overlay_egress(&ctx, false)
}

#[classifier]
pub fn sg_overlay_egress_l2(ctx: TcContext) -> i32 {
    flow::overlay_egress(&ctx, true)
}

#[classifier]
pub fn sg_lan_ingress(ctx: TcContext) -> i32 {
    flow::lan_ingress(&ctx)
}

/// LAN packets of no tracked flow (tail-called by `sg_lan_ingress`).
#[classifier]
pub fn sg_lan_other(ctx: TcContext) -> i32 {
    flow::lan_other(&ctx)
}

/// XDP in front of `sg_overlay_ingress_l2`: established flows without an skb.
#[xdp]
pub fn sg_overlay_xdp(ctx: XdpContext) -> u32 {
    xdp::overlay(&ctx)
}

/// TC verdicts as `i32`.
pub(crate) const OK: i32 = TC_ACT_OK;
/// Drop.
pub(crate) const SHOT: i32 = TC_ACT_SHOT;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The programs use GPL-only helpers (FIB lookup, redirect_neigh); this crate is MIT OR GPL-2.0.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
