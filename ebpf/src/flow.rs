//! The flow paths: what each program does with a packet of the overlay (ingress: tracked
//! flows, replies, new flows checked against policy; egress: flows the routing peer opens) and
//! of a LAN (replies into the overlay, Site-to-VPN flows, ICMP errors about tracked flows).
//! The lookups and actions they combine live with their maps: `ct` (conntrack), `policy`,
//! `nat` (masquerade ports), `fib` (routes and redirects), `metrics` (counters and events),
//! `rewrite` (header rewrites).
//!
//! Owns `SG_CONFIG`, the agent's configuration of the programs (read here and handed down),
//! and `SG_CALLS`, the program array the established paths tail-call the new-flow programs
//! through.

use core::mem::{self, MaybeUninit};

use aya_ebpf::{
    bindings::bpf_redir_neigh,
    macros::map,
    maps::{Array, ProgramArray},
    programs::TcContext,
};
use swiftgate_common::{
    Counter, CtEntry, CtTimeouts, FAMILY_V4, FlowKey, KernelConfig, action, calls, config_flags,
    ct_flags, dest_flags, dest_kind, event_kind, origin, proto,
};

use crate::{
    OK, SHOT, admit, ct,
    ct::{new_entry, touch, touch_reply, track, track_plain, track_plain_any},
    fib::{Route, fib_into, redirect_l2, to_overlay},
    metrics::{count, emit, policy_stat},
    nat,
    parse::{self, IcmpKind, ParseError, Parsed, tcp},
    policy::{dest_of, identity_of, policy_of},
    rewrite,
};

#[map(name = "SG_CONFIG")]
static CONFIG: Array<KernelConfig> = Array::pinned(1, 0);
/// The new-flow programs, tail-called by the overlay ingress programs (own stack: the
/// established path and the new-flow path each get the verifier's 512 bytes).
#[map(name = "SG_CALLS")]
static CALLS: ProgramArray = ProgramArray::pinned(calls::SLOTS, 0);

/// All-zero configuration: what the programs see before the agent writes one (an array map
/// always holds index 0, so this only satisfies the verifier's null check).
static NO_CONFIG: KernelConfig = KernelConfig {
    overlay_ifindex: 0,
    flags: 0,
    mss_v4: 0,
    mss_v6: 0,
    nat_port_min: 0,
    nat_port_max: 0,
    ct_share4: 0,
    ct_share6: 0,
    nat_share: 0,
    _pad: 0,
    ct_timeouts: CtTimeouts {
        tcp_syn: 0,
        tcp_established: 0,
        tcp_fin_wait: 0,
        tcp_close: 0,
        udp_unreplied: 0,
        udp_replied: 0,
        icmp: 0,
        _pad: 0,
    },
};

#[inline(always)]
pub(crate) fn config() -> &'static KernelConfig {
    CONFIG.get(0).unwrap_or(&NO_CONFIG)
}

/// Drops a packet that tried to open a flow, with counters and (optionally) an event.
#[inline(always)]
fn deny(cfg: &KernelConfig, c: Counter, key: &FlowKey, policy_id: u32, org: u8) -> i32 {
    count(c);
    policy_stat(policy_id, false);
    if cfg.flags & config_flags::DROP_EVENTS != 0 {
        emit(event_kind::DROP, c as u8, key, policy_id, org, 1, 0);
    }
    SHOT
}

#[inline(always)]
fn drop_parse(e: ParseError) -> i32 {
    count(match e {
        ParseError::Fragment => Counter::DropFragment,
        ParseError::NotIp => Counter::DropUnsupported,
        ParseError::Invalid => Counter::DropInvalid,
        // ARP on an Ethernet overlay resolves the routing peer's own address: the host's.
        ParseError::Arp => {
            count(Counter::PassHost);
            return OK;
        }
    });
    SHOT
}

/// Whether this packet may open a new flow (TCP needs a bare SYN, ICMP an echo request).
#[inline(always)]
fn may_open(p: &Parsed) -> Result<(), Counter> {
    match p.key.proto {
        proto::TCP => {
            if p.tcp_flags & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN {
                Ok(())
            } else {
                Err(Counter::DropInvalid)
            }
        }
        proto::ICMP | proto::ICMPV6 => {
            if p.icmp == IcmpKind::EchoRequest {
                Ok(())
            } else {
                Err(Counter::DropUnsupported)
            }
        }
        _ => Ok(()),
    }
}

/// The fields of a conntrack entry the forwarding decisions need (copying the whole entry
/// would cost stack the verifier does not give us).
#[derive(Clone, Copy)]
struct CtView {
    /// The masquerade address in the map value (copying it would cost stack).
    nat_addr: *const [u8; 16],
    /// The flow's recorded next hop in the map value (null: none).
    nh: *const bpf_redir_neigh,
    lan_ifindex: u32,
    nat_port: u16,
    origin: u8,
    flags: u8,
}

impl CtView {
    /// The masquerade address.
    #[inline(always)]
    fn nat(&self) -> &[u8; 16] {
        // SAFETY: points into a map value, valid for this program run.
        unsafe { &*self.nat_addr }
    }
}

#[inline(always)]
fn view(ct: *const CtEntry) -> CtView {
    // SAFETY: `ct` is a map value pointer, valid for this program run.
    unsafe {
        CtView {
            nat_addr: &raw const (*ct).nat_addr,
            nh: if (*ct).nh_family == 0 {
                core::ptr::null()
            } else {
                (&raw const (*ct).nh_family).cast()
            },
            lan_ifindex: (*ct).lan_ifindex,
            nat_port: (*ct).nat_port,
            origin: (*ct).origin,
            flags: (*ct).flags,
        }
    }
}

#[inline(always)]
fn clamp(ctx: &TcContext, p: &Parsed, cfg: &KernelConfig) -> Result<(), ()> {
    if p.key.proto != proto::TCP || p.tcp_flags & tcp::SYN == 0 {
        return Ok(());
    }
    let max = if p.key.family == FAMILY_V4 {
        cfg.mss_v4
    } else {
        cfg.mss_v6
    };
    match rewrite::clamp_mss(ctx, p, max) {
        Ok(true) => {
            count(Counter::MssClamped);
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(_) => Err(()),
    }
}

/// TC ingress on the overlay interface.
#[inline(always)]
pub fn overlay_ingress(ctx: &TcContext, l2: bool) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if let Err(e) = parse::parse_code(parse::parse_inline(ctx, l2, &mut p)) {
        return drop_parse(e);
    }
    // SAFETY: parse_inline wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    let cfg = config();
    let len = ctx.len() as u64;
    let key = &p.key;

    if p.icmp == IcmpKind::Error {
        return icmp_error_from_overlay(ctx, p, l2);
    }
    if l2 && p.icmp == IcmpKind::NeighbourDiscovery {
        // IPv6's ARP on an Ethernet overlay: the host answers for the routing peer's address.
        count(Counter::PassHost);
        return OK;
    }

    // 1. Original direction of a flow opened from the overlay.
    if let Some(ct) = ct::get(key) {
        let e = view(ct);
        if e.origin != origin::OVERLAY {
            // Only the routing peer or a LAN host can send with this source: spoofed.
            count(Counter::DropInvalid);
            return SHOT;
        }
        touch(ct, len, p.key.proto, p.tcp_flags);
        count(Counter::Established);
        if e.flags & ct_flags::LOCAL != 0 {
            return OK;
        }
        // COMPLETE: the overlay device may hand over a receive checksum (an Ethernet
        // overlay, or an L3 tunnel such as GRE), and the LAN side may be a veth whose
        // receiver checks it; a TUN never does (the agent says so with OVERLAY_TUN).
        let complete = cfg.flags & config_flags::OVERLAY_TUN == 0;
        if e.flags & ct_flags::SNAT != 0
            && !(key.family == FAMILY_V4
                && rewrite::rewrite_direct(ctx, p, true, e.nat(), e.nat_port, complete))
            && rewrite::rewrite_side(
                ctx,
                p,
                rewrite::SRC | rewrite::DIRECT | if complete { rewrite::COMPLETE } else { 0 },
                e.nat(),
                e.nat_port,
            )
            .is_err()
        {
            count(Counter::DropInvalid);
            return SHOT;
        }
        if clamp(ctx, p, cfg).is_err() {
            count(Counter::DropInvalid);
            return SHOT;
        }
        return redirect_l2(ctx, e.lan_ifindex, key.family, !l2, e.nh);
    }

    // 2. Reply direction of a flow opened from a LAN (Site-to-VPN) or by the routing peer.
    if let Some(r) = ct::by_reply(key) {
        match r.origin() {
            origin::HOST => {
                if touch_reply(&r, len, p.key.proto, p.tcp_flags) {
                    count(Counter::Established);
                    return OK;
                }
            }
            origin::LAN => {
                // Forwarding needs the flow's LAN interface and next hop: its own entry.
                if let Some(ct) = r.entry() {
                    let e = view(ct);
                    touch_reply(&r, len, p.key.proto, p.tcp_flags);
                    count(Counter::Established);
                    if clamp(ctx, p, cfg).is_err() {
                        count(Counter::DropInvalid);
                        return SHOT;
                    }
                    return redirect_l2(ctx, e.lan_ifindex, key.family, !l2, e.nh);
                }
            }
            _ => {}
        }
    }

    // 3. A new flow: policy and setup in their own program (and stack frame).
    let slot = if l2 {
        calls::NEW_FLOW_L2
    } else {
        calls::NEW_FLOW_L3
    };
    // SAFETY: tail call with the program's own context; returns only when it fails.
    unsafe { CALLS.tail_call(ctx, slot) };
    count(Counter::DropNoProgram);
    SHOT
}

/// A packet of the overlay that belongs to no tracked flow (tail-called from
/// [`overlay_ingress`], which classified it so).
#[inline(always)]
pub fn overlay_new(ctx: &TcContext, l2: bool) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if let Err(e) = parse::parse_code(parse::parse_into(ctx, l2, &mut p)) {
        return drop_parse(e);
    }
    // SAFETY: parse_into wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    // One copy of the new-flow code per family (see `ct`).
    if p.key.family == FAMILY_V4 {
        new_overlay_flow::<true>(ctx, p, config(), l2)
    } else {
        new_overlay_flow::<false>(ctx, p, config(), l2)
    }
}

/// Policy check and setup of a flow opened from the overlay.
#[inline(never)]
fn new_overlay_flow<const V4: bool>(
    ctx: &TcContext,
    p: &Parsed,
    cfg: &KernelConfig,
    l2: bool,
) -> i32 {
    let key = &p.key;
    let len = ctx.len() as u64;
    if let Err(c) = may_open(p) {
        return deny(cfg, c, key, 0, origin::OVERLAY);
    }
    let Some(identity) = identity_of(key) else {
        return deny(cfg, Counter::DropUnknownSource, key, 0, origin::OVERLAY);
    };
    let Some(dest) = dest_of(key) else {
        return deny(cfg, Counter::DropNoRoute, key, 0, origin::OVERLAY);
    };
    if dest.kind != dest_kind::LOCAL && dest.kind != dest_kind::RESOURCE {
        return deny(cfg, Counter::DropNoRoute, key, 0, origin::OVERLAY);
    }
    let pol = match policy_of(identity, dest.dest_id, key) {
        Some(v) if v.action == action::ACCEPT => v,
        Some(v) => {
            return deny(
                cfg,
                Counter::DropPolicyDeny,
                key,
                v.policy_id,
                origin::OVERLAY,
            );
        }
        None => return deny(cfg, Counter::DropNoPolicy, key, 0, origin::OVERLAY),
    };
    let masquerade = dest.kind == dest_kind::RESOURCE && dest.flags & dest_flags::MASQUERADE != 0;
    if let Err(c) = admit::check::<V4>(key, cfg, masquerade) {
        return deny(cfg, c, key, pol.policy_id, origin::OVERLAY);
    }

    if dest.kind == dest_kind::LOCAL {
        let entry = new_entry(
            origin::OVERLAY,
            pol.policy_id,
            0,
            ct_flags::LOCAL | ct_flags::TCP_SYN,
            len,
        );
        if let Err(c) = track_plain::<V4>(key, entry) {
            return deny(cfg, c, key, pol.policy_id, origin::OVERLAY);
        }
        accepted(cfg, key, pol.policy_id, origin::OVERLAY, len);
        count(Counter::DeliverLocal);
        return OK;
    }

    let mut route = MaybeUninit::<Route>::uninit();
    let ifindex = fib_into(ctx, key, &mut route);
    if ifindex == 0 {
        return deny(cfg, Counter::DropFib, key, pol.policy_id, origin::OVERLAY);
    }
    // SAFETY: fib_into wrote the route (it returned an interface).
    let route = unsafe { route.assume_init_ref() };
    // SAFETY: reading the context's ingress interface.
    if ifindex == unsafe { (*ctx.skb.skb).ifindex } {
        // The route points back into the overlay: never loop.
        return deny(cfg, Counter::DropFib, key, pol.policy_id, origin::OVERLAY);
    }
    let syn = if key.proto == proto::TCP {
        ct_flags::TCP_SYN
    } else {
        0
    };
    if masquerade {
        // The reply key lives in per-CPU scratch space: this frame is part of a call chain
        // whose stack the verifier limits to 512 bytes.
        let Some(rk) = nat::reply_key_slot() else {
            return deny(
                cfg,
                Counter::DropCtFull,
                key,
                pol.policy_id,
                origin::OVERLAY,
            );
        };
        // SAFETY: per-CPU scratch slot, used only within this run on this CPU; MaybeUninit
        // has the layout of FlowKey.
        let got = nat::alloc_nat_into::<V4>(cfg, key, &route.src, unsafe { &mut *rk.cast() });
        if got & nat::NAT_GOT == 0 {
            let c = if got & nat::NAT_TABLE_FULL != 0 {
                Counter::DropCtFull
            } else {
                Counter::DropNatExhausted
            };
            return deny(cfg, c, key, pol.policy_id, origin::OVERLAY);
        }
        // SAFETY: alloc_nat_into wrote the reply key (it returned a port).
        let rk = unsafe { &*rk };
        let port = (got & 0xffff) as u16;
        let entry = new_entry(
            origin::OVERLAY,
            pol.policy_id,
            ifindex,
            ct_flags::SNAT | syn,
            len,
        );
        if let Some(e) = entry {
            // SAFETY: the scratch slot returned by `new_entry`.
            unsafe {
                (*e).nat_addr = route.src;
                (*e).nat_port = port;
                (*e).nh_family = route.nh.nh_family;
                (*e).nexthop =
                    mem::transmute::<[u32; 4], [u8; 16]>(route.nh.__bindgen_anon_1.ipv6_nh);
            }
        }
        if let Err(c) = track::<V4>(key, rk, entry, true) {
            return deny(cfg, c, key, pol.policy_id, origin::OVERLAY);
        }
        // A racing CPU may have created the flow with another mapping: use what is stored.
        let (naddr, nport) = match ct::get_in::<V4>(key) {
            // SAFETY: map value pointer, valid for this run.
            Some(e) => unsafe { ((*e).nat_addr, (*e).nat_port) },
            None => (route.src, port),
        };
        if rewrite::rewrite_side(ctx, p, rewrite::SRC, &naddr, nport).is_err() {
            count(Counter::DropInvalid);
            return SHOT;
        }
    } else {
        let entry = new_entry(origin::OVERLAY, pol.policy_id, ifindex, syn, len);
        if let Some(e) = entry {
            // SAFETY: the scratch slot returned by `new_entry`.
            unsafe {
                (*e).nh_family = route.nh.nh_family;
                (*e).nexthop =
                    mem::transmute::<[u32; 4], [u8; 16]>(route.nh.__bindgen_anon_1.ipv6_nh);
            }
        }
        if let Err(c) = track_plain::<V4>(key, entry) {
            return deny(cfg, c, key, pol.policy_id, origin::OVERLAY);
        }
    }
    accepted(cfg, key, pol.policy_id, origin::OVERLAY, len);
    if clamp(ctx, p, cfg).is_err() {
        count(Counter::DropInvalid);
        return SHOT;
    }
    let nh: *const bpf_redir_neigh = if route.nh.nh_family == 0 {
        core::ptr::null()
    } else {
        &route.nh
    };
    redirect_l2(ctx, ifindex, key.family, !l2, nh)
}

#[inline(always)]
fn accepted(cfg: &KernelConfig, key: &FlowKey, policy_id: u32, org: u8, len: u64) {
    count(Counter::AcceptNew);
    policy_stat(policy_id, true);
    if cfg.flags & config_flags::START_EVENTS != 0 {
        emit(event_kind::START, 0, key, policy_id, org, 1, len);
    }
}

/// An ICMP error arriving from the overlay about a reply it received (e.g. port
/// unreachable): translate the quoted reply back to what the LAN host sent.
#[inline(never)]
fn icmp_error_from_overlay(ctx: &TcContext, p: &Parsed, l2: bool) -> i32 {
    let Ok(inner) = parse::parse_inner(ctx, p) else {
        count(Counter::DropInvalid);
        return SHOT;
    };
    // The quoted packet is a reply as the client saw it; reversed, it is the original key.
    let Some(ct) = ct::get(&inner.key.reversed()) else {
        count(Counter::DropInvalid);
        return SHOT;
    };
    let e = view(ct);
    if e.origin != origin::OVERLAY || e.flags & ct_flags::LOCAL != 0 {
        // Errors about the routing peer's own traffic go to its stack.
        count(Counter::IcmpRelated);
        return OK;
    }
    if e.flags & ct_flags::SNAT != 0
        && rewrite::translate_icmp_error(ctx, p, &inner, false, e.nat(), e.nat_port).is_err()
    {
        count(Counter::DropInvalid);
        return SHOT;
    }
    count(Counter::IcmpRelated);
    redirect_l2(ctx, e.lan_ifindex, p.key.family, !l2, e.nh)
}

/// TC egress on the overlay interface: flows the routing peer itself opens to the overlay
/// get a conntrack entry so their replies pass the ingress program.
#[inline(always)]
pub fn overlay_egress(ctx: &TcContext, l2: bool) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if parse::parse_into(ctx, l2, &mut p) != 0 {
        return OK;
    }
    // SAFETY: parse_into wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    let key = &p.key;
    if p.icmp == IcmpKind::Error {
        return OK;
    }
    let len = ctx.len() as u64;
    // Reply of a flow opened from the overlay (delivered locally or forwarded without NAT).
    if let Some(r) = ct::by_reply(key)
        && touch_reply(&r, len, p.key.proto, p.tcp_flags)
    {
        return OK;
    }
    // Reply of a masqueraded flow, after the LAN program undid the NAT (and accounted it).
    if ct::get(&key.reversed()).is_some() {
        return OK;
    }
    if let Some(ct) = ct::get(key) {
        touch(ct, len, p.key.proto, p.tcp_flags);
        return OK;
    }
    if may_open(p).is_ok() {
        let syn = if key.proto == proto::TCP {
            ct_flags::TCP_SYN
        } else {
            0
        };
        let entry = new_entry(origin::HOST, 0, 0, syn, len);
        let _ = track_plain_any(key, entry);
    }
    OK
}

/// TC ingress on a LAN interface.
#[inline(always)]
pub fn lan_ingress(ctx: &TcContext) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if parse::parse_inline(ctx, true, &mut p) != 0 {
        // Not ours to judge: the host's own traffic must never break.
        count(Counter::PassHost);
        return OK;
    }
    // SAFETY: parse_inline wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    let cfg = config();
    let key = &p.key;
    let len = ctx.len() as u64;

    if p.icmp == IcmpKind::Error {
        return lan_other_call(ctx, key);
    }

    // 1. Reply of a flow opened from the overlay: reverse NAT, into the overlay.
    if let Some(r) = ct::by_reply(key) {
        let kind = r.kind();
        if r.origin() == origin::OVERLAY
            && kind & ct_flags::LOCAL == 0
            && touch_reply(&r, len, p.key.proto, p.tcp_flags)
        {
            count(Counter::Established);
            // Into a TUN the skb's receive checksum is never looked at again; an Ethernet
            // overlay's receiver may check it.
            let complete = cfg.flags & config_flags::OVERLAY_L2 != 0;
            if kind & ct_flags::SNAT != 0
                && !(key.family == FAMILY_V4
                    && rewrite::rewrite_direct(ctx, p, false, &r.saddr, r.sport, complete))
                && rewrite::rewrite_side(
                    ctx,
                    p,
                    rewrite::DIRECT | if complete { rewrite::COMPLETE } else { 0 },
                    &r.saddr,
                    r.sport,
                )
                .is_err()
            {
                count(Counter::DropInvalid);
                return SHOT;
            }
            if clamp(ctx, p, cfg).is_err() {
                count(Counter::DropInvalid);
                return SHOT;
            }
            return to_overlay(cfg);
        }
    }

    // 2. Original direction of a flow this LAN opened (Site-to-VPN).
    if let Some(ct) = ct::get(key) {
        // SAFETY: map value pointer, valid for this run.
        if unsafe { (*ct).origin } == origin::LAN {
            touch(ct, len, p.key.proto, p.tcp_flags);
            count(Counter::Established);
            return to_overlay(cfg);
        }
    }

    // 3. Anything else in its own program (and stack frame).
    lan_other_call(ctx, key)
}

/// Tail-calls [`lan_other`]. Should its program be missing, packets towards overlay peers are
/// dropped (they would need a policy check) and the rest passes to the host as always.
#[inline(always)]
fn lan_other_call(ctx: &TcContext, key: &FlowKey) -> i32 {
    // SAFETY: tail call with the program's own context; returns only when it fails.
    unsafe { CALLS.tail_call(ctx, calls::LAN_OTHER) };
    match dest_of(key) {
        Some(d) if d.kind == dest_kind::PEER => {
            count(Counter::DropNoProgram);
            SHOT
        }
        _ => {
            count(Counter::PassHost);
            OK
        }
    }
}

/// A LAN packet of no tracked flow (tail-called from [`lan_ingress`]): an ICMP error about a
/// flow we forwarded, a Site-to-VPN flow, or the host's own traffic.
#[inline(always)]
pub fn lan_other(ctx: &TcContext) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if parse::parse_into(ctx, true, &mut p) != 0 {
        count(Counter::PassHost);
        return OK;
    }
    // SAFETY: parse_into wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    let cfg = config();
    if p.icmp == IcmpKind::Error {
        return icmp_error_from_lan(ctx, p, cfg);
    }
    // New flows towards overlay peers need a policy; anything else is not ours.
    new_lan_flow(ctx, p, cfg)
}

/// Site-to-VPN: a LAN host opening a flow to an overlay peer needs a policy.
#[inline(never)]
fn new_lan_flow(ctx: &TcContext, p: &Parsed, cfg: &KernelConfig) -> i32 {
    let key = &p.key;
    let len = ctx.len() as u64;
    let Some(dest) = dest_of(key) else {
        count(Counter::PassHost);
        return OK;
    };
    if dest.kind != dest_kind::PEER {
        count(Counter::PassHost);
        return OK;
    }
    if let Err(c) = may_open(p) {
        return deny(cfg, c, key, 0, origin::LAN);
    }
    let Some(identity) = identity_of(key) else {
        return deny(cfg, Counter::DropUnknownSource, key, 0, origin::LAN);
    };
    let pol = match policy_of(identity, dest.dest_id, key) {
        Some(v) if v.action == action::ACCEPT => v,
        Some(v) => return deny(cfg, Counter::DropPolicyDeny, key, v.policy_id, origin::LAN),
        None => return deny(cfg, Counter::DropNoPolicy, key, 0, origin::LAN),
    };
    let admitted = if key.family == FAMILY_V4 {
        admit::check::<true>(key, cfg, false)
    } else {
        admit::check::<false>(key, cfg, false)
    };
    if let Err(c) = admitted {
        return deny(cfg, c, key, pol.policy_id, origin::LAN);
    }
    let syn = if key.proto == proto::TCP {
        ct_flags::TCP_SYN
    } else {
        0
    };
    // SAFETY: reading the context's ingress interface.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let entry = new_entry(origin::LAN, pol.policy_id, ifindex, syn, len);
    if let Err(c) = track_plain_any(key, entry) {
        return deny(cfg, c, key, pol.policy_id, origin::LAN);
    }
    accepted(cfg, key, pol.policy_id, origin::LAN, len);
    to_overlay(cfg)
}

/// An ICMP error arriving on a LAN about a packet we forwarded (e.g. fragmentation needed,
/// port unreachable): translate the quoted packet and send the error to the overlay client.
#[inline(never)]
fn icmp_error_from_lan(ctx: &TcContext, p: &Parsed, cfg: &KernelConfig) -> i32 {
    let Ok(inner) = parse::parse_inner(ctx, p) else {
        count(Counter::PassHost);
        return OK;
    };
    // The quoted packet is one we sent (after NAT); reversed, it is the reply key.
    let Some(orig) = ct::by_reply(&inner.key.reversed()) else {
        count(Counter::PassHost);
        return OK;
    };
    let kind = orig.kind();
    if orig.origin() != origin::OVERLAY || kind & ct_flags::LOCAL != 0 {
        count(Counter::PassHost);
        return OK;
    }
    if kind & ct_flags::SNAT != 0
        && rewrite::translate_icmp_error(ctx, p, &inner, true, &orig.saddr, orig.sport).is_err()
    {
        count(Counter::DropInvalid);
        return SHOT;
    }
    count(Counter::IcmpRelated);
    to_overlay(cfg)
}
