//! Header rewrites with checksum fix-ups: addresses and ports (NAT), TCP MSS clamping, and the
//! headers quoted inside ICMP errors.
//!
//! Established flows' NAT is written in place with direct packet access and checksums computed
//! here (RFC 1624), no helper call, whenever the packet's checksum state is known to allow it
//! ([`rewrite_direct`]). Everything else goes through `bpf_l4_csum_replace`, which does the
//! right thing for `CHECKSUM_PARTIAL` skbs (offloaded TUN super-packets, where the field holds
//! the pseudo-header sum) and `CHECKSUM_COMPLETE` ones; there the IPv4 header checksum, which
//! has no such states, is computed here and written together with the addresses (one helper
//! call instead of two), and other rewrites use `bpf_l3_csum_replace`.

use core::ptr::write_unaligned;

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::{bpf_csum_diff, bpf_csum_update},
    programs::TcContext,
};
use swiftgate_common::{FAMILY_V4, proto};

use crate::{
    csum,
    parse::{Inner, Parsed, bytes, v4},
};

/// A rewrite helper failed (the skb is in an unknown state: drop it).
pub struct RewriteError;

type R = Result<(), RewriteError>;

#[inline(always)]
fn ok(r: Result<(), i64>) -> R {
    r.map_err(|_| RewriteError)
}

/// Offset of the L4 checksum field and the flags the L4 helper needs for a pseudo-header
/// change, or `None` when the protocol's checksum does not cover addresses.
#[inline(always)]
fn l4_csum(proto: u8, family: u8, l4: usize) -> Option<(usize, u64)> {
    match proto {
        proto::TCP => Some((l4 + 16, BPF_F_PSEUDO_HDR as u64)),
        proto::UDP => Some((l4 + 6, (BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0) as u64)),
        proto::ICMPV6 if family != FAMILY_V4 => Some((l4 + 2, BPF_F_PSEUDO_HDR as u64)),
        _ => None,
    }
}

/// Where an IP packet's headers are.
#[derive(Clone, Copy)]
pub struct Headers {
    /// [`FAMILY_V4`] or v6.
    pub family: u8,
    /// L4 protocol.
    pub proto: u8,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
}

/// Rewrites the source (`src = true`) or destination address of the packet at `h`, fixing
/// the IP and L4 checksums.
#[inline(always)]
pub fn set_addr(ctx: &TcContext, h: Headers, src: bool, old: &[u8; 16], new: &[u8; 16]) -> R {
    let Headers {
        family,
        proto,
        l3,
        l4,
    } = h;
    if family == FAMILY_V4 {
        let off = l3 + if src { 12 } else { 16 };
        let o = u32::from_ne_bytes([old[0], old[1], old[2], old[3]]) as u64;
        let n = u32::from_ne_bytes([new[0], new[1], new[2], new[3]]) as u64;
        if let Some((csum, flags)) = l4_csum(proto, family, l4) {
            ok(ctx.l4_csum_replace(csum, o, n, flags | 4))?;
        }
        ok(ctx.l3_csum_replace(l3 + 10, o, n, 4))?;
        let bytes: [u8; 4] = [new[0], new[1], new[2], new[3]];
        ok(ctx.store(off, &bytes, 0))
    } else {
        let off = l3 + if src { 8 } else { 24 };
        if let Some((csum, flags)) = l4_csum(proto, family, l4) {
            let mut o = *old;
            let mut n = *new;
            // SAFETY: both buffers are 16-byte stack arrays, as the sizes passed say.
            let diff =
                unsafe { bpf_csum_diff(o.as_mut_ptr().cast(), 16, n.as_mut_ptr().cast(), 16, 0) };
            if diff < 0 {
                return Err(RewriteError);
            }
            ok(ctx.l4_csum_replace(csum, 0, diff as u64, flags))?;
        }
        ok(ctx.store(off, new, 0))
    }
}

/// Rewrites the source or destination port (TCP/UDP) or the echo identifier (ICMP, where
/// both "ports" are the identifier) of the L4 header at `l4`.
#[inline(always)]
pub fn set_port(ctx: &TcContext, proto: u8, l4: usize, src: bool, old: u16, new: u16) -> R {
    if old == new {
        return Ok(());
    }
    let (field, csum, flags) = match proto {
        proto::TCP => (l4 + if src { 0 } else { 2 }, l4 + 16, 0u64),
        proto::UDP => (
            l4 + if src { 0 } else { 2 },
            l4 + 6,
            BPF_F_MARK_MANGLED_0 as u64,
        ),
        proto::ICMP | proto::ICMPV6 => (l4 + 4, l4 + 2, 0u64),
        _ => return Ok(()),
    };
    ok(ctx.l4_csum_replace(csum, old.to_be() as u64, new.to_be() as u64, flags | 2))?;
    ok(ctx.store(field, &new.to_be_bytes(), 0))
}

/// Rewrites the source (`src = true`) or destination address of `p`, an IPv4 packet whose IP
/// header is as parsed (no earlier rewrite of it in this run): the L4 checksum through the
/// helper, then the header checksum (computed from the parsed one) and both addresses in one
/// store of bytes 10..20 of the header.
#[inline(always)]
fn set_addr_v4_parsed(ctx: &TcContext, p: &Parsed, src: bool, new: &[u8; 16]) -> R {
    let k = &p.key;
    let (saddr, daddr) = (v4(&k.saddr), v4(&k.daddr));
    let old = if src { saddr } else { daddr };
    let new = v4(new);
    if let Some((csum, flags)) = l4_csum(k.proto, k.family, p.l4) {
        let (o, n) = (u32::from_ne_bytes(old), u32::from_ne_bytes(new));
        ok(ctx.l4_csum_replace(csum, o as u64, n as u64, flags | 4))?;
    }
    let check = csum::update::<2>(p.ip_check, &csum::words(&old), &csum::words(&new));
    let (s, d) = if src { (new, daddr) } else { (saddr, new) };
    let c = check.to_ne_bytes();
    let hdr: [u8; 10] = [c[0], c[1], s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]];
    ok(ctx.store(p.l3 + 10, &hdr, 0))
}

/// A full address+port rewrite of one side of `p` (the source when `src`) with direct packet
/// access, when the packet allows it: TCP or UDP, not a GSO packet, the headers in the skb's
/// linear part, and an L4 checksum field that does not look like offload's pseudo-header seed
/// (a `CHECKSUM_PARTIAL` skb, whose field the helpers must update differently;
/// [`csum::looks_partial`]). Then addresses, port and checksums are written in place with no
/// helper call, except `bpf_csum_update` when `complete` says the skb may carry a receive
/// checksum over its data (`CHECKSUM_COMPLETE`) that a later receiver checks. Returns `false`,
/// having written nothing, when [`rewrite_side`] must do it.
///
/// The established paths inline it for IPv4 packets: a BPF function call costs a return
/// through the kernel's return thunk (Safe RET on this CPU), about the price of the rewrite;
/// IPv6 (whose address words would not fit the callers' stack) goes through [`rewrite_side`].
#[inline(always)]
pub fn rewrite_direct(
    ctx: &TcContext,
    p: &Parsed,
    src: bool,
    new_addr: &[u8; 16],
    new_port: u16,
    complete: bool,
) -> bool {
    let k = &p.key;
    let csum_off = match k.proto {
        proto::TCP => 16,
        proto::UDP => 6,
        _ => return false,
    };
    // SAFETY: reading a field of the program's context.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return false;
    }
    let is_v4 = k.family == FAMILY_V4;
    let (data, end) = (ctx.data(), ctx.data_end());
    let (ip, l4) = (data + p.l3, data + p.l4);
    let at = l4 + csum_off;
    if ip + 40 > end || at + 2 > end || l4 < ip {
        return false;
    }
    // SAFETY: ip + 40 and at + 2 were checked against data_end; the ports are before `at`.
    let (check, total) = unsafe {
        (
            csum::word(at),
            u16::from_be_bytes(bytes::<2>(if is_v4 { ip + 2 } else { ip + 4 })),
        )
    };
    // The L4 length: IPv4 total length minus the header, IPv6 payload minus extension headers.
    let hdrs = (l4 - ip) as u16;
    let l4_len = if is_v4 {
        total.wrapping_sub(hdrs)
    } else {
        total.wrapping_sub(hdrs.wrapping_sub(40))
    };
    if csum::looks_partial(k, l4_len, check) {
        return false;
    }
    // A zero UDP checksum means "none" over IPv4 (it stays zero) and is invalid over IPv6.
    let udp_none = k.proto == proto::UDP && check == 0;
    if udp_none && !is_v4 {
        return false;
    }
    let (old_addr, old_port, port_at) = if src {
        (&k.saddr, k.sport, l4)
    } else {
        (&k.daddr, k.dport, l4 + 2)
    };
    let (op, np) = (
        u16::from_ne_bytes(old_port.to_be_bytes()),
        u16::from_ne_bytes(new_port.to_be_bytes()),
    );
    // What the L4 checksum covers of the change: the address (pseudo-header) and the port.
    let mut l4_diff = csum::diff(&[op], &[np]);
    // What changes in the packet's bytes besides the L4 checksum (for skb->csum).
    let mut data_diff = l4_diff;
    // SAFETY: all writes are within ip + 40 and `at` + 2, checked against data_end above;
    // unaligned writes are fine for packet data.
    unsafe {
        if is_v4 {
            let (o, n): ([u16; 2], [u16; 2]) =
                (csum::words(&v4(old_addr)), csum::words(&v4(new_addr)));
            let d = csum::diff(&o, &n);
            l4_diff += d;
            // The header checksum compensates the address: the header's sum stays the same.
            let ip_check = csum::word(ip + 10);
            write_unaligned((ip + 10) as *mut u16, csum::apply(ip_check, d));
            write_unaligned(
                (ip + if src { 12 } else { 16 }) as *mut [u8; 4],
                v4(new_addr),
            );
        } else {
            let (o, n): ([u16; 8], [u16; 8]) = (csum::words(old_addr), csum::words(new_addr));
            let d = csum::diff(&o, &n);
            l4_diff += d;
            data_diff += d;
            write_unaligned((ip + if src { 8 } else { 24 }) as *mut [u8; 16], *new_addr);
        }
        write_unaligned(port_at as *mut u16, np);
        if !udp_none {
            let mut c = csum::apply(check, l4_diff);
            if k.proto == proto::UDP && c == 0 {
                c = 0xffff;
            }
            write_unaligned(at as *mut u16, c);
            data_diff += csum::diff(&[check], &[c]);
        }
        if complete {
            // Adds to skb->csum only when the skb is CHECKSUM_COMPLETE (an error otherwise).
            let _ = bpf_csum_update(ctx.skb.skb, data_diff);
        }
    }
    true
}

/// [`rewrite_side`] option: rewrite the source (without it: the destination).
pub const SRC: u8 = 1;
/// [`rewrite_side`] option: try [`rewrite_direct`] first. Only the established paths ask for
/// it (they inline [`rewrite_direct`] for IPv4 and leave IPv6 to this function, whose stack
/// frame is its own): the new-flow program is near the verifier's budget, and its packets
/// are few.
pub const DIRECT: u8 = 2;
/// [`rewrite_side`] option: the skb may be `CHECKSUM_COMPLETE` and go where that sum is
/// checked (see [`rewrite_direct`]).
pub const COMPLETE: u8 = 4;

/// Applies a full address+port rewrite of one side of `p` (options [`SRC`], [`DIRECT`],
/// [`COMPLETE`] in one argument, as BPF functions take at most five; [`DIRECT`] is a constant
/// at every call, so where it is not set the verifier does not follow the in-place path),
/// whose headers must be as parsed (the first rewrite of the packet in this run): in place
/// when [`rewrite_direct`] can, else through the checksum helpers, which know the skb's
/// checksum state.
#[inline(never)]
pub fn rewrite_side(
    ctx: &TcContext,
    p: &Parsed,
    opts: u8,
    new_addr: &[u8; 16],
    new_port: u16,
) -> R {
    let src = opts & SRC != 0;
    if opts & DIRECT != 0 && rewrite_direct(ctx, p, src, new_addr, new_port, opts & COMPLETE != 0) {
        return Ok(());
    }
    let k = &p.key;
    let (old_addr, old_port) = if src {
        (&k.saddr, k.sport)
    } else {
        (&k.daddr, k.dport)
    };
    if old_addr != new_addr && k.family == FAMILY_V4 {
        set_addr_v4_parsed(ctx, p, src, new_addr)?;
    } else if old_addr != new_addr {
        let h = Headers {
            family: k.family,
            proto: k.proto,
            l3: p.l3,
            l4: p.l4,
        };
        set_addr(ctx, h, src, old_addr, new_addr)?;
    }
    set_port(ctx, k.proto, p.l4, src, old_port, new_port)
}

/// Clamps the MSS option of a TCP SYN to `max` (scans at most 10 options). Returns whether
/// the option was changed.
#[inline(never)]
pub fn clamp_mss(ctx: &TcContext, p: &Parsed, max: u16) -> Result<bool, RewriteError> {
    if max == 0 || p.tcp_hdr_len <= 20 {
        return Ok(false);
    }
    let end = p.l4 + p.tcp_hdr_len;
    let mut off = p.l4 + 20;
    for _ in 0..10 {
        if off + 4 > end {
            break;
        }
        let opt: [u8; 4] = ctx.load(off).map_err(|_| RewriteError)?;
        match opt[0] {
            0 => break,
            1 => off += 1,
            2 if opt[1] == 4 => {
                let mss = u16::from_be_bytes([opt[2], opt[3]]);
                if mss <= max {
                    return Ok(false);
                }
                // One's complement sums work on 16-bit words from the start of the segment:
                // a field at an odd offset contributes its bytes swapped.
                let (from, to) = if (off + 2 - p.l4) % 2 == 1 {
                    (mss.swap_bytes().to_be(), max.swap_bytes().to_be())
                } else {
                    (mss.to_be(), max.to_be())
                };
                ok(ctx.l4_csum_replace(p.l4 + 16, from as u64, to as u64, 2))?;
                ok(ctx.store(off + 2, &max.to_be_bytes(), 0))?;
                return Ok(true);
            }
            _ => {
                if opt[1] < 2 {
                    break;
                }
                off += opt[1] as usize;
            }
        }
    }
    Ok(false)
}

/// Reads a 16-bit field in network order as the checksum helpers want it.
#[inline(always)]
fn load16(ctx: &TcContext, off: usize) -> Result<u16, RewriteError> {
    let b: [u8; 2] = ctx.load(off).map_err(|_| RewriteError)?;
    Ok(u16::from_ne_bytes(b))
}

/// Translates an ICMP error whose quoted packet is `inner`: one side of the quoted header
/// (`inner_src`: its source, else its destination) becomes `addr`/`port`, and the outer header's
/// opposite side (outer destination when the quoted source changes, and vice versa) becomes
/// `addr` too. Fixes the quoted IP checksum, the quoted L4 checksum when present, the ICMP
/// checksum and the outer checksums.
#[inline(always)]
pub fn translate_icmp_error(
    ctx: &TcContext,
    outer: &Parsed,
    inner: &Inner,
    inner_src: bool,
    addr: &[u8; 16],
    port: u16,
) -> R {
    let ik = &inner.key;
    let icmp_csum = outer.l4 + 2;
    let (old_addr, old_port) = if inner_src {
        (&ik.saddr, ik.sport)
    } else {
        (&ik.daddr, ik.dport)
    };
    let v4 = ik.family == FAMILY_V4;

    // Quoted L4 checksum (TCP at +16, UDP at +6, ICMP at +2), if it is in the packet.
    let inner_csum_off = match ik.proto {
        proto::TCP => Some(inner.l4 + 16),
        proto::UDP => Some(inner.l4 + 6),
        _ => Some(inner.l4 + 2),
    };
    let inner_csum_off = match inner_csum_off {
        Some(off) if off + 2 <= ctx.len() as usize => Some(off),
        _ => None,
    };
    let old_l4 = match inner_csum_off {
        Some(off) => load16(ctx, off)?,
        None => 0,
    };
    let old_ipc = if v4 { load16(ctx, inner.l3 + 10)? } else { 0 };

    // 1. Quoted address; its IP checksum (v4) and, as a pseudo-header field, its L4 checksum
    //    (TCP/UDP, or ICMPv6). These fields lie inside the ICMP payload, so the ICMP checksum
    //    takes the same change.
    if old_addr != addr {
        let addr_off = if v4 {
            inner.l3 + if inner_src { 12 } else { 16 }
        } else {
            inner.l3 + if inner_src { 8 } else { 24 }
        };
        let mut o = *old_addr;
        let mut n = *addr;
        let len = if v4 { 4 } else { 16 };
        // SAFETY: both buffers are 16-byte stack arrays and len is 4 or 16.
        let diff =
            unsafe { bpf_csum_diff(o.as_mut_ptr().cast(), len, n.as_mut_ptr().cast(), len, 0) };
        if diff < 0 {
            return Err(RewriteError);
        }
        if v4 {
            ok(ctx.l3_csum_replace(inner.l3 + 10, 0, diff as u64, 0))?;
        }
        if let Some(off) = inner_csum_off {
            let covers_addr = matches!(ik.proto, proto::TCP | proto::UDP | proto::ICMPV6);
            if covers_addr && !(ik.proto == proto::UDP && old_l4 == 0) {
                ok(ctx.l3_csum_replace(off, 0, diff as u64, 0))?;
            }
        }
        if v4 {
            ok(ctx.store(addr_off, &[n[0], n[1], n[2], n[3]], 0))?;
        } else {
            ok(ctx.store(addr_off, &n, 0))?;
        }
        // The ICMP checksum covers the quoted address bytes.
        ok(ctx.l3_csum_replace(icmp_csum, 0, diff as u64, 0))?;
    }
    // 2. Quoted port (or echo id).
    if old_port != port {
        let field = match ik.proto {
            proto::TCP | proto::UDP => inner.l4 + if inner_src { 0 } else { 2 },
            _ => inner.l4 + 4,
        };
        let (o, n) = (old_port.to_be() as u64, port.to_be() as u64);
        if let Some(off) = inner_csum_off
            && !(ik.proto == proto::UDP && old_l4 == 0)
        {
            ok(ctx.l3_csum_replace(off, o, n, 2))?;
        }
        ok(ctx.store(field, &port.to_be_bytes(), 0))?;
        ok(ctx.l3_csum_replace(icmp_csum, o, n, 2))?;
    }
    // 3. The checksum fields we changed are themselves ICMP payload.
    if v4 {
        let new_ipc = load16(ctx, inner.l3 + 10)?;
        ok(ctx.l3_csum_replace(icmp_csum, old_ipc as u64, new_ipc as u64, 2))?;
    }
    if let Some(off) = inner_csum_off {
        let new_l4 = load16(ctx, off)?;
        ok(ctx.l3_csum_replace(icmp_csum, old_l4 as u64, new_l4 as u64, 2))?;
    }
    // 4. Outer header: the opposite side.
    let ok_ = &outer.key;
    let outer_old = if inner_src { &ok_.daddr } else { &ok_.saddr };
    if outer_old != addr {
        let h = Headers {
            family: ok_.family,
            proto: ok_.proto,
            l3: outer.l3,
            l4: outer.l4,
        };
        set_addr(ctx, h, !inner_src, outer_old, addr)?;
    }
    Ok(())
}
