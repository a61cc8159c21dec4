//! Packet generator, sink and a reference forwarder for the benchmark
//! (`agent/examples/bench/`); not part of the data plane.
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
    bindings::{BPF_NOEXIST, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, xdp_action},
    helpers::{bpf_redirect_neigh, bpf_skb_store_bytes},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray},
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

/// The next key [`sg_bench_insert`] inserts, at index 0 (a test run stays on one CPU).
#[map(name = "SG_BENCH_KEYS")]
static SG_BENCH_KEYS: Array<u64> = Array::with_max_entries(1, 0);

/// The table [`sg_bench_insert`] fills: an LRU hash table like the IPv4 conntrack (16-byte
/// key), with a 16-byte value, the least a flow's entry could hold. The benchmark sizes it at
/// load time (one entry in the object, so other loads of this object stay small).
#[map(name = "SG_BENCH_LRU")]
static SG_BENCH_LRU: LruHashMap<[u64; 2], [u64; 2]> = LruHashMap::with_max_entries(1, 0);

/// The same as [`SG_BENCH_LRU`] as a plain (preallocated, never evicting) hash table.
#[map(name = "SG_BENCH_HASH")]
static SG_BENCH_HASH: HashMap<[u64; 2], [u64; 2]> = HashMap::with_max_entries(1, 0);

/// This run's key and value for the insert references: the next number from [`SG_BENCH_KEYS`].
#[inline(always)]
fn next_key() -> Option<([u64; 2], [u64; 2])> {
    let seq = SG_BENCH_KEYS.get_ptr_mut(0)?;
    // SAFETY: map value pointer, valid for this run; a test run is the only user.
    let n = unsafe {
        let n = *seq;
        *seq = n + 1;
        n
    };
    Some(([n, 0x5347_u64], [n, 0u64]))
}

/// Reference for the new-flow benchmark: the least any new flow costs in a kernel hash table,
/// one insert of a key not seen before (`BPF_NOEXIST`) into an LRU table like the conntrack's,
/// with nothing else around it. `TC_ACT_OK` when inserted, `TC_ACT_SHOT` when refused.
#[classifier]
pub fn sg_bench_insert(_ctx: TcContext) -> i32 {
    match next_key().map(|(k, v)| SG_BENCH_LRU.insert(k, v, BPF_NOEXIST as u64)) {
        Some(Ok(())) => TC_ACT_OK,
        _ => TC_ACT_SHOT,
    }
}

/// [`sg_bench_insert`] into the plain hash table [`SG_BENCH_HASH`] (no LRU bookkeeping).
#[classifier]
pub fn sg_bench_insert_hash(_ctx: TcContext) -> i32 {
    match next_key().map(|(k, v)| SG_BENCH_HASH.insert(k, v, BPF_NOEXIST as u64)) {
        Some(Ok(())) => TC_ACT_OK,
        _ => TC_ACT_SHOT,
    }
}

/// Bytes of the new-flow packet rewritten before every run: Ethernet (14) + IPv4 without
/// options (20) + TCP with 8 bytes of options (MSS and padding) (28), i.e. the whole SYN.
pub const SYN_LEN: usize = 62;
/// Offset of the TCP source port in [`SYN_LEN`].
const SPORT_AT: usize = 34;
/// Offset of the IPv4 destination address's last byte.
const DADDR_LAST_AT: usize = 33;
/// Source ports used per destination address (1024..=65535).
pub const SPORTS: u32 = 64_512;

/// The SYN template of [`sg_bench_new_flow`] at index 0 (written by the benchmark; per CPU
/// because each run writes its varying fields into it before copying it into the packet).
#[map(name = "SG_BENCH_SYN")]
static SG_BENCH_SYN: PerCpuArray<[u8; SYN_LEN]> = PerCpuArray::with_max_entries(1, 0);
/// Runs of [`sg_bench_new_flow`] so far, at index 0.
#[map(name = "SG_BENCH_SEQ")]
static SG_BENCH_SEQ: Array<u32> = Array::with_max_entries(1, 0);
/// The program [`sg_bench_new_flow`] hands every packet to, at index 0.
#[map(name = "SG_BENCH_NEXT")]
static SG_BENCH_NEXT: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Harness for timing the new-flow path with `BPF_PROG_TEST_RUN`'s `repeat`: the kernel runs
/// every repetition on the same skb, so this program turns it into a SYN of a new flow each
/// time: it writes the template's bytes over the packet (undoing the previous run's NAT, TTL
/// and MSS rewrites), with run *n*'s source port `1024 + n % SPORTS` and `1 + n / SPORTS` as
/// the destination address's last byte (distinct flows for n < 254 · SPORTS), then tail-calls
/// the program under test. Checksums are not updated: the programs update them incrementally and never verify
/// them, so the path taken does not depend on them. The benchmark times this program in front
/// of a program that returns at once, and subtracts that.
#[classifier]
pub fn sg_bench_new_flow(ctx: TcContext) -> i32 {
    let (Some(t), Some(seq)) = (SG_BENCH_SYN.get_ptr_mut(0), SG_BENCH_SEQ.get_ptr_mut(0)) else {
        return TC_ACT_SHOT;
    };
    // SAFETY: `t` and `seq` are map values valid for this run; the SYN template is this CPU's
    // copy; `seq` is only used by one `BPF_PROG_TEST_RUN` call at a time.
    unsafe {
        let n = *seq;
        *seq = n + 1;
        let sport = 1024 + (n % SPORTS) as u16;
        let t = &mut *t;
        t[SPORT_AT..SPORT_AT + 2].copy_from_slice(&sport.to_be_bytes());
        t[DADDR_LAST_AT] = 1 + (n / SPORTS) as u8;
        if bpf_skb_store_bytes(ctx.skb.skb.cast(), 0, t.as_ptr().cast(), SYN_LEN as u32, 0) != 0 {
            return TC_ACT_SHOT;
        }
        SG_BENCH_NEXT.tail_call(&ctx, 0);
    }
    // The tail call failed (no program at index 0).
    TC_ACT_SHOT
}

/// Calibration target for [`sg_bench_new_flow`] and [`sg_bench_same_packet`]: returns at once.
#[classifier]
pub fn sg_bench_accept(_ctx: TcContext) -> i32 {
    TC_ACT_REDIRECT
}

/// Harness for timing a path that rewrites the packet (masquerade, reverse NAT) with
/// `BPF_PROG_TEST_RUN`'s `repeat`: before every run it writes the template of
/// [`SG_BENCH_SYN`] (the packet's first [`SYN_LEN`] bytes) back over the packet, unchanged, so
/// every repetition sees the original packet of one tracked flow, then tail-calls the program
/// under test. Timed in front of [`sg_bench_accept`] as well, to subtract its own cost.
#[classifier]
pub fn sg_bench_same_packet(ctx: TcContext) -> i32 {
    let Some(t) = SG_BENCH_SYN.get_ptr(0) else {
        return TC_ACT_SHOT;
    };
    // SAFETY: `t` is this CPU's template, a map value of SYN_LEN bytes valid for this run.
    unsafe {
        if bpf_skb_store_bytes(ctx.skb.skb.cast(), 0, t.cast(), SYN_LEN as u32, 0) != 0 {
            return TC_ACT_SHOT;
        }
        SG_BENCH_NEXT.tail_call(&ctx, 0);
    }
    TC_ACT_SHOT
}

/// The XDP program [`sg_bench_same_frame`] hands every frame to, at index 0.
#[map(name = "SG_BENCH_NEXT_XDP")]
static SG_BENCH_NEXT_XDP: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// [`sg_bench_same_packet`] for XDP programs: restores the frame's first [`SYN_LEN`] bytes
/// from the template and tail-calls [`SG_BENCH_NEXT_XDP`].
#[xdp]
pub fn sg_bench_same_frame(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + SYN_LEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let Some(t) = SG_BENCH_SYN.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the frame holds at least SYN_LEN bytes from `start` (checked against data_end
    // above) and `t` is a map value of exactly SYN_LEN bytes.
    unsafe {
        *(start as *mut [u8; SYN_LEN]) = *t;
        SG_BENCH_NEXT_XDP.tail_call(&ctx, 0);
    }
    xdp_action::XDP_ABORTED
}

/// Calibration target for [`sg_bench_same_frame`]: returns at once.
#[xdp]
pub fn sg_bench_xdp_accept(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_REDIRECT
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
