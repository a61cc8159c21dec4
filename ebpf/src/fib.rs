//! Forwarding through the kernel's FIB: owns the `bpf_fib_lookup` parameters ([`FibParams`],
//! shared by the TC and XDP programs), the lookup of a new flow's egress interface, source
//! address and next hop ([`fib_into`]), the XDP stage's lookup of a tracked flow's MAC
//! addresses ([`fib_macs`]), and the redirects to a LAN interface ([`redirect_l2`]) and into
//! the overlay ([`to_overlay`]). No maps: the FIB and neighbour tables are the kernel's.

use core::mem::{self, MaybeUninit};

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC, bpf_fib_lookup,
        bpf_redir_neigh,
    },
    helpers::{
        bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_skb_change_head,
    },
    programs::{TcContext, XdpContext},
};
use swiftgate_common::{Counter, FAMILY_V4, FlowKey, KernelConfig, config_flags};

use crate::{
    SHOT,
    metrics::count,
    parse::{self, AF_INET, AF_INET6, ETH_P_IP, ETH_P_IPV6, put_addr, v4, v4_words, v6_words},
};

/// What the FIB lookup of a new flow found (8-byte aligned: written as whole words).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct Route {
    /// Source address the kernel would use on the egress interface (the masquerade address).
    pub(crate) src: [u8; 16],
    /// Next hop (gateway, or the destination itself on a connected network; an IPv4 route
    /// may have an IPv6 gateway) as `bpf_redirect_neigh` takes it.
    pub(crate) nh: bpf_redir_neigh,
}

/// `bpf_fib_lookup` parameters, 8-byte aligned so they can be cleared with word stores.
#[repr(C, align(8))]
struct FibParams(bpf_fib_lookup);

const _: () = assert!(mem::size_of::<bpf_fib_lookup>().is_multiple_of(8));

/// Fills `fp` with the FIB lookup parameters for `key` as it arrived on `ifindex` (every other
/// field zero) and returns them. Shared by the TC and XDP programs.
#[inline(always)]
fn fib_params<'a>(
    fp: &'a mut MaybeUninit<FibParams>,
    key: &FlowKey,
    ifindex: u32,
) -> &'a mut bpf_fib_lookup {
    let words = fp.as_mut_ptr().cast::<u64>();
    for i in 0..mem::size_of::<FibParams>() / 8 {
        // SAFETY: `words` covers the aligned parameter block; volatile keeps LLVM from turning
        // the clearing into a call to its byte-loop memset.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: all-zero is a valid bpf_fib_lookup (a plain C struct), written just above.
    let params = unsafe { &mut (*fp.as_mut_ptr()).0 };
    params.l4_protocol = key.proto;
    params.sport = key.sport.to_be();
    params.dport = key.dport.to_be();
    params.ifindex = ifindex;
    if key.family == FAMILY_V4 {
        params.family = AF_INET;
        params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(v4(&key.daddr));
        params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(v4(&key.saddr));
    } else {
        params.family = AF_INET6;
        // SAFETY: [u8; 16] and [u32; 4] have the same size; the kernel reads raw bytes.
        unsafe {
            params.__bindgen_anon_4.ipv6_dst = mem::transmute::<[u8; 16], [u32; 4]>(key.daddr);
            params.__bindgen_anon_3.ipv6_src = mem::transmute::<[u8; 16], [u32; 4]>(key.saddr);
        }
    }
    params
}

/// Finds the egress interface, source address and next hop for `key` in the kernel FIB;
/// fills `out` and returns the interface index, or 0 (and leaves `out` unwritten) when there
/// is no usable route. Not inlined (its own stack frame).
#[inline(never)]
pub(crate) fn fib_into(ctx: &TcContext, key: &FlowKey, out: &mut MaybeUninit<Route>) -> u32 {
    let mut fp = MaybeUninit::<FibParams>::uninit();
    // SAFETY: the skb pointer is the program's context.
    let params = fib_params(&mut fp, key, unsafe { (*ctx.skb.skb).ifindex });
    // SAFETY: params is a valid, fully initialised struct of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            params,
            mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC,
        )
    };
    if rc != 0 {
        return 0;
    }
    // The source keeps the flow's family; the next hop has the family the kernel reports.
    // SAFETY: the kernel filled the members of the families it reports.
    let (s0, s1) = if key.family == FAMILY_V4 {
        v4_words(unsafe { params.__bindgen_anon_3.ipv4_src }.to_ne_bytes())
    } else {
        v6_words(unsafe { mem::transmute::<[u32; 4], [u8; 16]>(params.__bindgen_anon_3.ipv6_src) })
    };
    // The next hop is recorded only when it is the destination itself (a connected network):
    // that cannot change while the flow keeps its LAN interface. A gateway can (a route
    // change, a failover), so flows through one leave the next hop to the kernel's lookup
    // on every packet.
    let want = if key.family == FAMILY_V4 {
        AF_INET
    } else {
        AF_INET6
    };
    // SAFETY: the kernel filled the destination member of the family it reports.
    let connected = params.family == want
        && unsafe {
            if key.family == FAMILY_V4 {
                params.__bindgen_anon_4.ipv4_dst == u32::from_ne_bytes(v4(&key.daddr))
            } else {
                mem::transmute::<[u32; 4], [u8; 16]>(params.__bindgen_anon_4.ipv6_dst) == key.daddr
            }
        };
    let r = out.as_mut_ptr();
    // SAFETY: `r` is valid for writes and 8-byte aligned (Route is align(8)); the kernel
    // filled the next-hop member of the family it reports.
    unsafe {
        put_addr(&raw mut (*r).src, s0, s1);
        (*r).nh.nh_family = if connected { params.family as u32 } else { 0 };
        (*r).nh.__bindgen_anon_1.ipv6_nh = params.__bindgen_anon_4.ipv6_dst;
    }
    params.ifindex
}

/// The Ethernet header pushed in front of IPv4 packets from an L3 overlay.
static ETH_HDR_V4: [u8; parse::ETH_LEN] = eth_hdr(ETH_P_IP);
/// The same for IPv6.
static ETH_HDR_V6: [u8; parse::ETH_LEN] = eth_hdr(ETH_P_IPV6);

const fn eth_hdr(proto: u16) -> [u8; parse::ETH_LEN] {
    let p = proto.to_be_bytes();
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, p[0], p[1]]
}

/// Pushes an Ethernet header in front of an L3 packet and lets the kernel's neighbour code
/// fill it in on the way out of `ifindex`, towards `nh` when the flow has a recorded next hop
/// (non-null), else towards whatever the kernel's FIB says.
#[inline(always)]
pub(crate) fn redirect_l2(
    ctx: &TcContext,
    ifindex: u32,
    family: u8,
    add_eth: bool,
    nh: *const bpf_redir_neigh,
) -> i32 {
    if add_eth {
        // SAFETY: the skb pointer is the program's context.
        if unsafe { bpf_skb_change_head(ctx.skb.skb, parse::ETH_LEN as u32, 0) } != 0 {
            count(Counter::DropInvalid);
            return SHOT;
        }
        // Zero MAC addresses (the neighbour code fills them in) and the EtherType, written
        // in place (the helper that would store them costs a call).
        let hdr: &[u8; parse::ETH_LEN] = if family == FAMILY_V4 {
            &ETH_HDR_V4
        } else {
            &ETH_HDR_V6
        };
        let (data, end) = (ctx.data(), ctx.data_end());
        if data + parse::ETH_LEN > end {
            count(Counter::DropInvalid);
            return SHOT;
        }
        // SAFETY: ETH_LEN bytes from `data` were checked against data_end just above (after
        // the head moved); unaligned writes are fine for packet data.
        unsafe { core::ptr::write_unaligned(data as *mut [u8; parse::ETH_LEN], *hdr) };
    }
    if !nh.is_null() {
        // SAFETY: `nh` points to a `bpf_redir_neigh` (a map value or the caller's stack) of
        // the size passed; the kernel only reads it.
        return unsafe {
            bpf_redirect_neigh(
                ifindex,
                nh.cast_mut(),
                mem::size_of::<bpf_redir_neigh>() as i32,
                0,
            ) as i32
        };
    }
    // SAFETY: no neighbour parameters are passed (NULL, 0): the kernel resolves the next hop.
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// Sends a packet from a LAN interface into the overlay interface.
#[inline(always)]
pub(crate) fn to_overlay(cfg: &KernelConfig) -> i32 {
    if cfg.overlay_ifindex == 0 {
        count(Counter::DropFib);
        return SHOT;
    }
    if cfg.flags & config_flags::OVERLAY_L2 != 0 {
        // An Ethernet overlay: the frame needs the peer's MAC, which the neighbour code fills.
        // SAFETY: no neighbour parameters are passed (NULL, 0): the kernel resolves the peer.
        return unsafe {
            bpf_redirect_neigh(cfg.overlay_ifindex, core::ptr::null_mut(), 0, 0) as i32
        };
    }
    // SAFETY: plain helper; the kernel strips the Ethernet header for an L3 target.
    unsafe { bpf_redirect(cfg.overlay_ifindex, 0) as i32 }
}

/// The destination and source MAC for `key` out of `lan_ifindex`, from the kernel FIB and
/// neighbour table (the lookup the TC program made when it opened the flow); `None` unless the
/// route still leads there and the neighbour is resolved.
#[inline(always)]
pub(crate) fn fib_macs(ctx: &XdpContext, key: &FlowKey, lan_ifindex: u32) -> Option<[u8; 12]> {
    let mut fp = MaybeUninit::<FibParams>::uninit();
    // SAFETY: reading the program's context.
    let params = fib_params(&mut fp, key, unsafe { (*ctx.ctx).ingress_ifindex });
    // SAFETY: params is a valid, initialised struct of the size passed; ctx is the context.
    let rc = unsafe {
        fib_lookup(
            ctx.ctx.cast(),
            params,
            mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 || params.ifindex != lan_ifindex {
        return None;
    }
    let (d, s) = (params.dmac, params.smac);
    Some([
        d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5],
    ])
}
