//! Packet generator, sink and a reference forwarder for the benchmark
//! (`agent/examples/bench.rs`); not part of the data plane.
//!
//! `sg_bench_tx` is run through `BPF_PROG_RUN` in XDP live-frames mode on the generator's
//! veth: the kernel builds a frame from the test input for every repetition, runs this program
//! and, as it returns `XDP_TX`, transmits the frame out of the interface it "arrived" on
//! (`xdp_md.ingress_ifindex`), i.e. into the routing peer's overlay interface. It is never
//! attached to an interface.
//!
//! Live frames come from a page pool whose pages are recycled without their data being
//! re-initialised: when the receiving side rewrote a packet in place (masquerade does), the
//! page comes back carrying the rewritten headers. So the program copies the original
//! Ethernet/IPv4/UDP headers, which the benchmark stores in [`SG_BENCH_HDR`], over every frame
//! before sending it.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    helpers::bpf_redirect_neigh,
    macros::{classifier, map, xdp},
    maps::Array,
    programs::{TcContext, XdpContext},
};

/// Bytes restored at the start of every frame: Ethernet (14) + IPv4 without options (20) +
/// UDP (8).
pub const HDR_LEN: usize = 42;

/// The generated frame's first [`HDR_LEN`] bytes, at index 0 (written by the benchmark).
#[map(name = "SG_BENCH_HDR")]
static SG_BENCH_HDR: Array<[u8; HDR_LEN]> = Array::with_max_entries(1, 0);

/// Restores the frame's headers and sends it back out of its interface.
#[xdp]
pub fn sg_bench_tx(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + HDR_LEN <= ctx.data_end()
        && let Some(hdr) = SG_BENCH_HDR.get(0)
        // An unset map (EtherType 0) leaves the frame alone.
        && hdr[12..14] != [0, 0]
    {
        // SAFETY: the frame holds at least HDR_LEN bytes from `start` (checked against
        // data_end above) and `hdr` is a map value of exactly HDR_LEN bytes.
        unsafe { *(start as *mut [u8; HDR_LEN]) = *hdr };
    }
    xdp_action::XDP_TX
}

/// The LAN sink's receiver: drops every frame at the earliest point (native XDP on the sink's
/// veth), so the sink costs the forwarding CPU as little as possible.
#[xdp]
pub fn sg_bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Target of [`sg_bench_redirect`]: the LAN interface's index, at index 0.
#[map(name = "SG_BENCH_REDIRECT")]
static SG_BENCH_REDIRECT: Array<u32> = Array::with_max_entries(1, 0);

/// Reference for the forwarding benchmark: the least a TC program can do to forward a packet
/// (no parsing, policy, conntrack or NAT): redirect it to the LAN interface through the
/// kernel's neighbour code, as swiftgate does after its decisions.
#[classifier]
pub fn sg_bench_redirect(_ctx: TcContext) -> i32 {
    match SG_BENCH_REDIRECT.get(0) {
        // SAFETY: no neighbour parameters are passed (NULL, 0): the kernel resolves the next hop.
        Some(&ifindex) if ifindex != 0 => unsafe {
            bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32
        },
        _ => TC_ACT_OK,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
