//! Packet parsing: from the IP header to a [`Parsed`] view with the flow key.
//!
//! Reads go through `bpf_skb_load_bytes` (`ctx.load`), which copes with non-linear skbs (TUN
//! super-packets) and keeps the verifier's job simple; offsets are bounded explicitly.

use aya_ebpf::helpers::bpf_skb_load_bytes;
use aya_ebpf::programs::TcContext;
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use swiftgate_common::{FAMILY_V4, FAMILY_V6, FlowKey, proto};

/// Ethernet header length (L2 interfaces).
pub const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// TCP flag bits (byte 13 of the header).
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// What an ICMP message is, for flow handling.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    /// Not ICMP.
    None,
    /// Echo request (opens a flow).
    EchoRequest,
    /// Echo reply.
    EchoReply,
    /// An error carrying the header of the packet it is about.
    Error,
    /// Anything else.
    Other,
}

/// A parsed packet.
#[derive(Clone, Copy)]
pub struct Parsed {
    /// The flow key as seen on the wire.
    pub key: FlowKey,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// TCP data offset in bytes (0 for other protocols).
    pub tcp_hdr_len: usize,
    /// ICMP classification.
    pub icmp: IcmpKind,
}

/// Why parsing stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4 or IPv6.
    NotIp,
    /// Truncated or inconsistent headers.
    Invalid,
    /// A fragment.
    Fragment,
}

/// Parses the packet (Ethernet first when `l2`) into `out`. Not inlined (its own stack frame);
/// returns a plain code because BPF functions cannot return stack memory. Fields are loaded
/// straight into `out` to keep the frame small.
#[inline(never)]
pub fn parse_into(ctx: &TcContext, l2: bool, out: &mut Parsed) -> u8 {
    match parse(ctx, l2, out) {
        Ok(()) => 0,
        Err(ParseError::NotIp) => 1,
        Err(ParseError::Invalid) => 2,
        Err(ParseError::Fragment) => 3,
    }
}

/// The reverse of [`parse_into`]'s code.
#[inline(always)]
pub fn parse_code(code: u8) -> Result<(), ParseError> {
    match code {
        0 => Ok(()),
        1 => Err(ParseError::NotIp),
        3 => Err(ParseError::Fragment),
        _ => Err(ParseError::Invalid),
    }
}

/// Loads `dst.len()` bytes at `off` straight into `dst`.
#[inline(always)]
fn load_into(ctx: &TcContext, off: usize, dst: &mut [u8]) -> Result<(), ParseError> {
    // SAFETY: `dst` is valid writable memory of the length passed.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off as u32,
            dst.as_mut_ptr().cast(),
            dst.len() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(ParseError::Invalid)
    }
}

#[inline(always)]
fn parse(ctx: &TcContext, l2: bool, out: &mut Parsed) -> Result<(), ParseError> {
    out.key = FlowKey::default();
    out.tcp_flags = 0;
    out.tcp_hdr_len = 0;
    out.icmp = IcmpKind::None;
    let l3 = if l2 { ETH_LEN } else { 0 };
    out.l3 = l3;
    // One read for the Ethernet (if any) and IPv4 header, the common case: `hdr[14..34]` is
    // the first 20 bytes of the IP header either way. Helper calls dominate the cost here.
    let mut hdr = [0u8; ETH_LEN + 20];
    let got = if l2 {
        load_into(ctx, 0, &mut hdr)
    } else {
        load_into(ctx, 0, &mut hdr[ETH_LEN..])
    };
    if l2 {
        // A frame too short for an IPv4 header may still be some other protocol.
        let ethertype: [u8; 2] = match got {
            Ok(()) => [hdr[12], hdr[13]],
            Err(_) => ctx.load(12).map_err(|_| ParseError::Invalid)?,
        };
        if !matches!(u16::from_be_bytes(ethertype), ETH_P_IP | ETH_P_IPV6) {
            return Err(ParseError::NotIp);
        }
    }
    got?;
    let h = &hdr[ETH_LEN..];
    let len = ctx.len() as usize;
    match h[0] >> 4 {
        4 => {
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(ParseError::Invalid);
            }
            let tot_len = u16::from_be_bytes([h[2], h[3]]) as usize;
            if tot_len < ihl || l3 + tot_len > len {
                return Err(ParseError::Invalid);
            }
            if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return Err(ParseError::Fragment);
            }
            out.key.family = FAMILY_V4;
            out.key.proto = h[9];
            out.key.saddr[..4].copy_from_slice(&h[12..16]);
            out.key.daddr[..4].copy_from_slice(&h[16..20]);
            out.l4 = l3 + ihl;
        }
        6 => {
            // version/class/flow, payload length, next header, hop limit: in `h` already.
            if l3 + 40 + u16::from_be_bytes([h[4], h[5]]) as usize > len {
                return Err(ParseError::Invalid);
            }
            out.key.family = FAMILY_V6;
            load_into(ctx, l3 + 8, &mut out.key.saddr)?;
            load_into(ctx, l3 + 24, &mut out.key.daddr)?;
            // Walk at most four extension headers.
            let mut next = h[6];
            let mut off = l3 + 40;
            for _ in 0..4 {
                match next {
                    // Hop-by-hop, routing, destination options.
                    0 | 43 | 60 => {
                        let e: [u8; 2] = ctx.load(off).map_err(|_| ParseError::Invalid)?;
                        next = e[0];
                        off += (e[1] as usize + 1) * 8;
                    }
                    44 => return Err(ParseError::Fragment),
                    _ => break,
                }
            }
            if matches!(next, 0 | 43 | 60 | 44) {
                return Err(ParseError::Invalid);
            }
            out.key.proto = next;
            out.l4 = off;
        }
        _ => return Err(ParseError::NotIp),
    }
    let l4 = out.l4;
    match out.key.proto {
        proto::TCP => {
            // ports, seq, ack, data offset, flags.
            let t: [u8; 14] = ctx.load(l4).map_err(|_| ParseError::Invalid)?;
            let doff = ((t[12] >> 4) as usize) * 4;
            if doff < 20 || l4 + doff > len {
                return Err(ParseError::Invalid);
            }
            out.key.sport = u16::from_be_bytes([t[0], t[1]]);
            out.key.dport = u16::from_be_bytes([t[2], t[3]]);
            out.tcp_flags = t[13];
            out.tcp_hdr_len = doff;
        }
        proto::UDP => {
            let u: [u8; 8] = ctx.load(l4).map_err(|_| ParseError::Invalid)?;
            out.key.sport = u16::from_be_bytes([u[0], u[1]]);
            out.key.dport = u16::from_be_bytes([u[2], u[3]]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let h: [u8; 8] = ctx.load(l4).map_err(|_| ParseError::Invalid)?;
            out.icmp = classify_icmp(out.key.proto, h[0]);
            if matches!(out.icmp, IcmpKind::EchoRequest | IcmpKind::EchoReply) {
                let id = u16::from_be_bytes([h[4], h[5]]);
                out.key.sport = id;
                out.key.dport = id;
            }
        }
        _ => {}
    }
    Ok(())
}

#[inline(always)]
fn classify_icmp(proto: u8, ty: u8) -> IcmpKind {
    if proto == proto::ICMP {
        match ty {
            8 => IcmpKind::EchoRequest,
            0 => IcmpKind::EchoReply,
            3 | 11 | 12 => IcmpKind::Error,
            _ => IcmpKind::Other,
        }
    } else {
        match ty {
            128 => IcmpKind::EchoRequest,
            129 => IcmpKind::EchoReply,
            1..=4 => IcmpKind::Error,
            _ => IcmpKind::Other,
        }
    }
}

/// The header of the packet an ICMP error is about.
#[derive(Clone, Copy)]
pub struct Inner {
    /// Flow key of the quoted packet as it was sent.
    pub key: FlowKey,
    /// Offset of the quoted IP header.
    pub l3: usize,
    /// Offset of the quoted L4 header.
    pub l4: usize,
}

/// Parses the IP and L4 header quoted in the ICMP error at `p.l4` (no extension headers for
/// IPv6, no fragments).
#[inline(always)]
pub fn parse_inner(ctx: &TcContext, p: &Parsed) -> Result<Inner, ParseError> {
    let l3 = p.l4 + 8;
    let mut key = FlowKey {
        family: p.key.family,
        ..FlowKey::default()
    };
    let l4 = if p.key.family == FAMILY_V4 {
        let ip: Ipv4Hdr = ctx.load(l3).map_err(|_| ParseError::Invalid)?;
        let ihl = ((ip.vihl & 0x0f) as usize) * 4;
        if ip.vihl >> 4 != 4 || ihl < 20 {
            return Err(ParseError::Invalid);
        }
        key.proto = ip.proto;
        key.saddr[..4].copy_from_slice(&ip.src_addr);
        key.daddr[..4].copy_from_slice(&ip.dst_addr);
        l3 + ihl
    } else {
        let ip: Ipv6Hdr = ctx.load(l3).map_err(|_| ParseError::Invalid)?;
        key.proto = ip.next_hdr;
        key.saddr = ip.src_addr;
        key.daddr = ip.dst_addr;
        l3 + 40
    };
    match key.proto {
        proto::TCP | proto::UDP => {
            let ports: [u8; 4] = ctx.load(l4).map_err(|_| ParseError::Invalid)?;
            key.sport = u16::from_be_bytes([ports[0], ports[1]]);
            key.dport = u16::from_be_bytes([ports[2], ports[3]]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let h: [u8; 8] = ctx.load(l4).map_err(|_| ParseError::Invalid)?;
            if classify_icmp(key.proto, h[0]) != IcmpKind::EchoRequest {
                return Err(ParseError::Invalid);
            }
            let id = u16::from_be_bytes([h[4], h[5]]);
            key.sport = id;
            key.dport = id;
        }
        _ => return Err(ParseError::Invalid),
    }
    Ok(Inner { key, l3, l4 })
}

impl Parsed {
    /// A zeroed value to parse into.
    pub const EMPTY: Parsed = Parsed {
        key: FlowKey {
            saddr: [0; 16],
            daddr: [0; 16],
            sport: 0,
            dport: 0,
            proto: 0,
            family: 0,
            _pad: [0; 2],
        },
        l3: 0,
        l4: 0,
        tcp_flags: 0,
        tcp_hdr_len: 0,
        icmp: IcmpKind::None,
    };
}
