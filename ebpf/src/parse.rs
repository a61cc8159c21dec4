//! Packet parsing: from the IP header to a [`Parsed`] view with the flow key.
//!
//! The Ethernet, IP and L4 headers are read with direct packet access (bounds checked against
//! `data_end`); when they are not in the skb's linear part (some TUN super-packets), the first
//! [`PULL_LEN`] bytes are made linear once with `bpf_skb_pull_data`. IPv6 extension headers
//! and the headers quoted in ICMP errors (rare paths) are read with `bpf_skb_load_bytes`.

use core::mem::MaybeUninit;

use aya_ebpf::programs::TcContext;
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use swiftgate_common::{FAMILY_V4, FAMILY_V6, FlowKey, proto};

/// Ethernet header length (L2 interfaces).
pub const ETH_LEN: usize = 14;
/// EtherType IPv4.
pub(crate) const ETH_P_IP: u16 = 0x0800;
/// EtherType IPv6.
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
/// Address family numbers as the kernel's helpers take them.
pub(crate) const AF_INET: u8 = 2;
/// IPv6.
pub(crate) const AF_INET6: u8 = 10;
/// Bytes made linear before parsing when the skb's linear part is shorter: Ethernet, the
/// longest IPv4 header (60) and a TCP header up to its options (20) fit.
pub const PULL_LEN: usize = 128;

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
    /// IPv6 neighbour discovery as a host does it (router solicitation, neighbour solicitation
    /// and advertisement).
    NeighbourDiscovery,
    /// Anything else.
    Other,
}

/// A parsed packet. `repr(C)` with the key first, so the key is 8-byte aligned and its
/// address words are written as whole words (no byte-wise zeroing).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Parsed {
    /// The flow key as seen on the wire.
    pub key: FlowKey,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    /// TCP data offset in bytes (0 for other protocols).
    pub tcp_hdr_len: usize,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// ICMP classification.
    pub icmp: IcmpKind,
    /// The IPv4 header checksum as stored (0 for IPv6).
    pub ip_check: u16,
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
    /// ARP (Ethernet overlays): link-layer plumbing for the host.
    Arp,
}

/// Parses the packet (Ethernet first when `l2`) into `out`, which is fully written when this
/// returns 0. Not inlined (its own stack frame); returns a plain code because BPF functions
/// cannot return stack memory.
#[inline(never)]
pub fn parse_into(ctx: &TcContext, l2: bool, out: &mut MaybeUninit<Parsed>) -> u8 {
    parse_inline(ctx, l2, out)
}

/// [`parse_into`] inlined into the caller (the overlay's established path, whose program
/// tail-calls the new-flow code and so has stack to spare).
#[inline(always)]
pub fn parse_inline(ctx: &TcContext, l2: bool, out: &mut MaybeUninit<Parsed>) -> u8 {
    match parse(ctx, l2, out.as_mut_ptr()) {
        Ok(()) => 0,
        Err(ParseError::NotIp) => 1,
        Err(ParseError::Invalid) => 2,
        Err(ParseError::Fragment) => 3,
        Err(ParseError::Arp) => 4,
    }
}

/// The reverse of [`parse_into`]'s code.
#[inline(always)]
pub fn parse_code(code: u8) -> Result<(), ParseError> {
    match code {
        0 => Ok(()),
        1 => Err(ParseError::NotIp),
        3 => Err(ParseError::Fragment),
        4 => Err(ParseError::Arp),
        _ => Err(ParseError::Invalid),
    }
}

/// Reads `N` bytes at packet address `at`.
///
/// # Safety
/// `at + N` must have been checked against `data_end` by the caller.
#[inline(always)]
pub(crate) unsafe fn bytes<const N: usize>(at: usize) -> [u8; N] {
    // SAFETY: the caller checked the range; unaligned reads are fine for packet data.
    unsafe { core::ptr::read_unaligned(at as *const [u8; N]) }
}

/// Writes a 16-byte key address as two 64-bit stores. Volatile, so LLVM does not merge zero
/// stores into a call to its byte-loop `memset` (the BPF backend does not inline memset).
///
/// # Safety
/// `dst` must be valid for writes and 8-byte aligned (the address fields of a [`FlowKey`]).
#[inline(always)]
pub unsafe fn put_addr(dst: *mut [u8; 16], lo: u64, hi: u64) {
    let d = dst.cast::<u64>();
    // SAFETY: the caller guarantees a valid, 8-byte aligned 16-byte field.
    unsafe {
        core::ptr::write_volatile(d, lo);
        core::ptr::write_volatile(d.add(1), hi);
    }
}

/// The IPv4 address in the first four bytes of a key address.
#[inline(always)]
pub fn v4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// The two 64-bit words of an IPv4 address as a key address (first four bytes, rest zero).
#[inline(always)]
pub fn v4_words(a: [u8; 4]) -> (u64, u64) {
    (u32::from_ne_bytes(a) as u64, 0)
}

/// The two 64-bit words of a 16-byte address.
#[inline(always)]
pub fn v6_words(a: [u8; 16]) -> (u64, u64) {
    // SAFETY: [u8; 16] and [u64; 2] have the same size; any bit pattern is valid.
    let w = unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(a) };
    (w[0], w[1])
}

#[inline(always)]
fn parse(ctx: &TcContext, l2: bool, out: *mut Parsed) -> Result<(), ParseError> {
    let len = ctx.len() as usize;
    let l3 = if l2 { ETH_LEN } else { 0 };
    let want = if len < PULL_LEN { len } else { PULL_LEN };
    if ctx.data() + want > ctx.data_end() {
        // Headers in paged data: make them linear (a failure shows as a short packet below).
        let _ = ctx.pull_data(want as u32);
    }
    let data = ctx.data();
    let end = ctx.data_end();
    if l2 {
        if data + ETH_LEN > end {
            return Err(ParseError::Invalid);
        }
        // SAFETY: checked against data_end above.
        let et = u16::from_be_bytes(unsafe { bytes::<2>(data + 12) });
        if et == ETH_P_ARP {
            return Err(ParseError::Arp);
        }
        if !matches!(et, ETH_P_IP | ETH_P_IPV6) {
            return Err(ParseError::NotIp);
        }
    }
    let ip = data + l3;
    if ip + 20 > end {
        return Err(ParseError::Invalid);
    }
    // SAFETY: checked against data_end above.
    let h = unsafe { bytes::<20>(ip) };
    let mut ip_check = 0;
    let (proto, l4, family) = match h[0] >> 4 {
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
            ip_check = u16::from_ne_bytes([h[10], h[11]]);
            let (s0, s1) = v4_words([h[12], h[13], h[14], h[15]]);
            let (d0, d1) = v4_words([h[16], h[17], h[18], h[19]]);
            // SAFETY: `out` is valid for writes and a FlowKey's address fields are aligned.
            unsafe {
                put_addr(&raw mut (*out).key.saddr, s0, s1);
                put_addr(&raw mut (*out).key.daddr, d0, d1);
            }
            (h[9], l3 + ihl, FAMILY_V4)
        }
        6 => {
            if ip + 40 > end || l3 + 40 + u16::from_be_bytes([h[4], h[5]]) as usize > len {
                return Err(ParseError::Invalid);
            }
            // SAFETY: checked against data_end above.
            let (s0, s1) = v6_words(unsafe { bytes::<16>(ip + 8) });
            // SAFETY: as above.
            let (d0, d1) = v6_words(unsafe { bytes::<16>(ip + 24) });
            // SAFETY: `out` is valid for writes and a FlowKey's address fields are aligned.
            unsafe {
                put_addr(&raw mut (*out).key.saddr, s0, s1);
                put_addr(&raw mut (*out).key.daddr, d0, d1);
            }
            let next = h[6];
            if matches!(next, 0 | 43 | 60 | 44) {
                let r = ext_headers(ctx, next, l3 + 40);
                match r {
                    EXT_INVALID => return Err(ParseError::Invalid),
                    EXT_FRAGMENT => return Err(ParseError::Fragment),
                    _ => ((r >> 32) as u8, (r & 0xffff) as usize, FAMILY_V6),
                }
            } else {
                (next, l3 + 40, FAMILY_V6)
            }
        }
        _ => return Err(ParseError::NotIp),
    };
    let mut sport = 0;
    let mut dport = 0;
    let mut tcp_flags = 0;
    let mut tcp_hdr_len = 0;
    let mut icmp = IcmpKind::None;
    match proto {
        proto::TCP => {
            // ports, seq, ack, data offset, flags.
            let t: [u8; 14] = l4_bytes(ctx, l4)?;
            let doff = ((t[12] >> 4) as usize) * 4;
            if doff < 20 || l4 + doff > len {
                return Err(ParseError::Invalid);
            }
            sport = u16::from_be_bytes([t[0], t[1]]);
            dport = u16::from_be_bytes([t[2], t[3]]);
            tcp_flags = t[13];
            tcp_hdr_len = doff;
        }
        proto::UDP => {
            let u: [u8; 8] = l4_bytes(ctx, l4)?;
            sport = u16::from_be_bytes([u[0], u[1]]);
            dport = u16::from_be_bytes([u[2], u[3]]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let h: [u8; 8] = l4_bytes(ctx, l4)?;
            icmp = classify_icmp(proto, h[0]);
            if matches!(icmp, IcmpKind::EchoRequest | IcmpKind::EchoReply) {
                let id = u16::from_be_bytes([h[4], h[5]]);
                sport = id;
                dport = id;
            }
        }
        _ => {}
    }
    // SAFETY: `out` is valid for writes; together with the addresses above every field is
    // written.
    unsafe {
        (*out).key.sport = sport;
        (*out).key.dport = dport;
        (*out).key.proto = proto;
        (*out).key.family = family;
        (*out).key._pad = [0; 2];
        (*out).l3 = l3;
        (*out).l4 = l4;
        (*out).tcp_hdr_len = tcp_hdr_len;
        (*out).tcp_flags = tcp_flags;
        (*out).icmp = icmp;
        (*out).ip_check = ip_check;
    }
    Ok(())
}

/// The first `N` bytes of the L4 header at `l4`: read directly when in the linear part, else
/// through `bpf_skb_load_bytes` (after long IPv6 extension headers).
#[inline(always)]
fn l4_bytes<const N: usize>(ctx: &TcContext, l4: usize) -> Result<[u8; N], ParseError> {
    let at = ctx.data() + l4;
    if at + N <= ctx.data_end() {
        // SAFETY: checked against data_end just above.
        Ok(unsafe { bytes::<N>(at) })
    } else {
        ctx.load(l4).map_err(|_| ParseError::Invalid)
    }
}

const EXT_INVALID: u64 = u64::MAX;
const EXT_FRAGMENT: u64 = u64::MAX - 1;

/// Walks at most four IPv6 extension headers starting with `next` at `off`. Returns the upper
/// protocol (bits 32..40) and its offset (bits 0..16), or [`EXT_INVALID`] / [`EXT_FRAGMENT`]
/// (a plain integer: BPF functions cannot return aggregates). Not inlined: a rare path.
#[inline(never)]
fn ext_headers(ctx: &TcContext, mut next: u8, mut off: usize) -> u64 {
    for _ in 0..4 {
        match next {
            // Hop-by-hop, routing, destination options.
            0 | 43 | 60 => {
                let Ok(e) = ctx.load::<[u8; 2]>(off) else {
                    return EXT_INVALID;
                };
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            44 => return EXT_FRAGMENT,
            _ => break,
        }
    }
    if matches!(next, 0 | 43 | 60 | 44) || off > 0xffff {
        return EXT_INVALID;
    }
    (next as u64) << 32 | off as u64
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
            // Router solicitation, neighbour solicitation and advertisement; not router
            // advertisements or redirects, which an overlay peer has no business sending.
            133 | 135 | 136 => IcmpKind::NeighbourDiscovery,
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
