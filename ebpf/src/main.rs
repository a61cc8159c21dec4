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
//!
//! Each map is declared in the module that owns its lookups: `policy` (identities,
//! destinations, policy), `ct` (conntrack tables and their scratch slots), `admit` (sources'
//! shares of the tables, the recent flows early drop looks through), `nat` (masquerade
//! ports), `metrics` (counters, policy statistics, events), `clock` (the cached coarse
//! clock), `flow` (configuration and the new-flow program array); `fib` forwards through the
//! kernel's tables. This file holds the program entry points.
#![no_std]
#![no_main]
// `asm!` on BPF: the atomic adds of `admit` (core's atomics have no fetch_add here).
#![feature(asm_experimental_arch)]

mod admit;
mod clock;
mod csum;
mod ct;
mod fib;
mod floor;
mod flow;
mod metrics;
mod nat;
mod parse;
mod policy;
mod rewrite;
mod xdp;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

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

/// Benchmark reference, never loaded by the agent: the new-flow path's map operations alone
/// (see `floor`).
#[classifier]
pub fn sg_floor_new_flow(ctx: TcContext) -> i32 {
    floor::new_flow(&ctx)
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
