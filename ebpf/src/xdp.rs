//! XDP stage on Ethernet overlay interfaces: the established path without an skb.
//!
//! Packets of flows the TC program has already accepted and tracked (original direction,
//! opened from the overlay, forwarded to a LAN with a recorded next hop) are rewritten and
//! redirected to the LAN interface right in the driver, before the kernel builds an skb.
//! Everything else — new flows, TCP SYN/FIN/RST (connection state, MSS clamping), IP options,
//! fragments, ICMP, extension headers, masquerade with a remapped port, next hops whose
//! neighbour entry is not resolved, routes that changed — returns `XDP_PASS` and takes the TC
//! path unchanged, so this stage only ever shortens the path of packets TC would forward the
//! same way.
//!
//! The Ethernet addresses come from a FIB lookup (route and neighbour table) cached in the
//! flow's conntrack entry for [`L2_RECHECK_NS`]: a changed route or neighbour is followed
//! within that time, and a lookup that does not end at a resolved neighbour on the flow's LAN
//! interface sends the packet to TC.
//!
//! Checksums are updated incrementally (RFC 1624); only the source address changes here (a
//! remapped masquerade port goes to TC). Frames whose L4 checksum is still the seed that
//! checksum offload leaves for the device (a local sender behind a veth) also go to TC: an XDP
//! redirect would lose the skb's checksum state (see `looks_partial`).

use core::{mem::MaybeUninit, ptr::write_unaligned};

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, programs::XdpContext};
use swiftgate_common::{
    Counter, FAMILY_V4, FAMILY_V6, FlowKey, L2_RECHECK_NS, ct_flags, origin, proto,
};

use crate::{
    clock::now,
    csum, ct,
    ct::touch_at,
    fib::fib_macs,
    metrics::count,
    parse::{ETH_LEN, ETH_P_IP, ETH_P_IPV6, bytes, put_addr, tcp, v4, v4_words, v6_words},
};

/// The program: the fast path, or `XDP_PASS` to the TC program.
#[inline(always)]
pub fn overlay(ctx: &XdpContext) -> u32 {
    fast(ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn fast(ctx: &XdpContext) -> Option<u32> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + ETH_LEN > end {
        return None;
    }
    // SAFETY: checked against data_end above.
    let ethertype = u16::from_be_bytes(unsafe { bytes::<2>(data + 12) });
    let ip = data + ETH_LEN;
    let mut key = MaybeUninit::<FlowKey>::uninit();
    let k = key.as_mut_ptr();
    let (family, l4, l4_proto, l4_len) = match ethertype {
        ETH_P_IP => {
            if ip + 20 > end {
                return None;
            }
            // SAFETY: checked against data_end above.
            let h = unsafe { bytes::<20>(ip) };
            // No options, no fragments: anything else takes the TC path.
            if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return None;
            }
            let (s0, s1) = v4_words([h[12], h[13], h[14], h[15]]);
            let (d0, d1) = v4_words([h[16], h[17], h[18], h[19]]);
            // SAFETY: `k` is valid for writes; a FlowKey's address fields are aligned.
            unsafe {
                put_addr(&raw mut (*k).saddr, s0, s1);
                put_addr(&raw mut (*k).daddr, d0, d1);
            }
            // A length the frame does not hold (truncated): TC drops it as invalid.
            let tot = u16::from_be_bytes([h[2], h[3]]);
            if tot < 20 || ip + tot as usize > end {
                return None;
            }
            (FAMILY_V4, ip + 20, h[9], tot - 20)
        }
        ETH_P_IPV6 => {
            // SAFETY: the version byte is inside the range checked first.
            if ip + 40 > end || unsafe { bytes::<1>(ip) }[0] >> 4 != 6 {
                return None;
            }
            // SAFETY: checked against data_end above.
            let plen = u16::from_be_bytes(unsafe { bytes::<2>(ip + 4) });
            if ip + 40 + plen as usize > end {
                return None;
            }
            // SAFETY: as above.
            let next = unsafe { bytes::<1>(ip + 6) }[0];
            // SAFETY: as above.
            let (s0, s1) = v6_words(unsafe { bytes::<16>(ip + 8) });
            // SAFETY: as above.
            let (d0, d1) = v6_words(unsafe { bytes::<16>(ip + 24) });
            // SAFETY: `k` is valid for writes; a FlowKey's address fields are aligned.
            unsafe {
                put_addr(&raw mut (*k).saddr, s0, s1);
                put_addr(&raw mut (*k).daddr, d0, d1);
            }
            (FAMILY_V6, ip + 40, next, plen)
        }
        _ => return None,
    };
    // TCP up to the flags; UDP header. Other protocols (ICMP echo, errors) take the TC path.
    let mut tcp_flags = 0;
    match l4_proto {
        proto::TCP => {
            if l4 + 20 > end {
                return None;
            }
            // SAFETY: checked against data_end above.
            let [doff, flags] = unsafe { bytes::<2>(l4 + 12) };
            tcp_flags = flags;
            // A header TC would call invalid, and connection-state changes, go to TC.
            let doff = ((doff >> 4) as u16) * 4;
            if doff < 20 || doff > l4_len || tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) != 0 {
                return None;
            }
        }
        proto::UDP => {
            if l4 + 8 > end {
                return None;
            }
        }
        _ => return None,
    }
    // SAFETY: checked against data_end above (at least 8 bytes of L4 header).
    let ports = unsafe { bytes::<4>(l4) };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    // SAFETY: `k` is valid for writes; every field is written.
    unsafe {
        (*k).sport = sport;
        (*k).dport = u16::from_be_bytes([ports[2], ports[3]]);
        (*k).proto = l4_proto;
        (*k).family = family;
        (*k)._pad = [0; 2];
    }
    // SAFETY: fully written above.
    let key = unsafe { key.assume_init_ref() };
    let csum_at = if l4_proto == proto::TCP {
        l4 + 16
    } else {
        l4 + 6
    };
    // SAFETY: within the L4 header checked against data_end above.
    let check = unsafe { csum::word(csum_at) };
    // IPv6 UDP without a checksum is invalid; TC leaves such packets as they are.
    if csum::looks_partial(key, l4_len, check)
        || (family == FAMILY_V6 && l4_proto == proto::UDP && check == 0)
    {
        return None;
    }

    let ct = ct::get(key)?;
    // SAFETY: map value pointer, valid for this program run.
    let (org, flags, nat_port, lan_ifindex) =
        unsafe { ((*ct).origin, (*ct).flags, (*ct).nat_port, (*ct).lan_ifindex) };
    if org != origin::OVERLAY || flags & ct_flags::LOCAL != 0 || lan_ifindex == 0 {
        return None;
    }
    let snat = flags & ct_flags::SNAT != 0;
    if snat && nat_port != sport {
        return None;
    }
    // SAFETY: map value pointer, valid for this program run.
    let new_src: &[u8; 16] = unsafe { &(*ct).nat_addr };

    // Egress MAC addresses: the flow's cached pair while it is fresh, else a FIB lookup
    // (which also checks the route still leads to the flow's LAN interface). Only a resolved
    // neighbour is used; anything else goes to TC, whose redirect resolves it.
    let t = now();
    // SAFETY: map value pointer, valid for this program run.
    let checked = unsafe { (*ct).l2_checked_ns };
    let macs: [u8; 12] = if checked != 0 && t.wrapping_sub(checked) < L2_RECHECK_NS {
        // SAFETY: as above.
        unsafe { (*ct).l2_macs }
    } else {
        let m = fib_macs(ctx, key, lan_ifindex)?;
        // SAFETY: as above; a concurrent refresh by another CPU writes the same values.
        unsafe {
            (*ct).l2_macs = m;
            (*ct).l2_checked_ns = t;
        }
        m
    };

    // The packet is ours from here on.
    if snat {
        snat_rewrite(ip, l4, end, family, l4_proto, &key.saddr, new_src)?;
    }
    touch_at(ct, (end - data) as u64, l4_proto, tcp_flags, t);
    count(Counter::Established);
    // SAFETY: the Ethernet header was checked against data_end at the start.
    unsafe { write_unaligned(data as *mut [u8; 12], macs) };
    // SAFETY: plain helper; redirects the frame out of the LAN interface.
    Some(unsafe { bpf_redirect(lan_ifindex, 0) } as u32)
}

/// Rewrites the source address from `old` to `new` with the IP (v4) and L4 checksums.
#[inline(always)]
fn snat_rewrite(
    ip: usize,
    l4: usize,
    end: usize,
    family: u8,
    l4_proto: u8,
    old: &[u8; 16],
    new: &[u8; 16],
) -> Option<()> {
    let csum_at = if l4_proto == proto::TCP {
        l4 + 16
    } else {
        l4 + 6
    };
    if csum_at + 2 > end {
        return None;
    }
    // SAFETY: checked against data_end above.
    let l4_check = unsafe { csum::word(csum_at) };
    // A UDP checksum of zero means "none" (IPv4) and stays zero.
    let l4_has_check = !(l4_proto == proto::UDP && l4_check == 0);
    if family == FAMILY_V4 {
        let (o, n): ([u16; 2], [u16; 2]) = (csum::words(&v4(old)), csum::words(&v4(new)));
        // SAFETY: the IPv4 header (20 bytes from `ip`) was checked against data_end.
        unsafe {
            let ip_check = csum::word(ip + 10);
            write_unaligned((ip + 10) as *mut u16, csum::update(ip_check, &o, &n));
            write_unaligned((ip + 12) as *mut [u8; 4], v4(new));
        }
        if l4_has_check {
            let mut c = csum::update(l4_check, &o, &n);
            if l4_proto == proto::UDP && c == 0 {
                c = 0xffff;
            }
            // SAFETY: checked against data_end above.
            unsafe { write_unaligned(csum_at as *mut u16, c) };
        }
    } else {
        let (o, n): ([u16; 8], [u16; 8]) = (csum::words(old), csum::words(new));
        let mut c = csum::update(l4_check, &o, &n);
        if l4_proto == proto::UDP && c == 0 {
            c = 0xffff;
        }
        // SAFETY: the IPv6 header (40 bytes from `ip`) and the checksum field were checked
        // against data_end.
        unsafe {
            write_unaligned((ip + 8) as *mut [u8; 16], *new);
            write_unaligned(csum_at as *mut u16, c);
        }
    }
    Some(())
}
