//! TUN offloads: the `virtio_net_hdr` that prefixes every packet on an `IFF_VNET_HDR` TUN,
//! splitting the kernel's TSO/USO super-packets into wire-sized packets (read side) and
//! coalescing same-flow TCP segments into one GSO write (write side, like GRO).
//!
//! Pure functions over byte buffers; no I/O.

/// Size of `struct virtio_net_hdr` (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`.
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN` bit.
pub const GSO_ECN: u8 = 0x80;

/// Largest packet a GSO write may carry.
pub const MAX_GSO_BYTES: usize = 65_535;

/// `struct virtio_net_hdr` (little-endian fields, as the TUN driver uses on x86 and arm64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` etc.
    pub flags: u8,
    /// `GSO_*`.
    pub gso_type: u8,
    /// Length of the headers to replicate.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum is stored.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Decodes the first [`VNET_HDR_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Option<VnetHdr> {
        if b.len() < VNET_HDR_LEN {
            return None;
        }
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// Encodes into [`VNET_HDR_LEN`] bytes.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Errors in a super-packet from the kernel.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OffloadError {
    /// Headers don't parse or lengths disagree.
    #[error("malformed offloaded packet: {0}")]
    Malformed(&'static str),
    /// A GSO type we did not enable.
    #[error("unsupported GSO type {0}")]
    Unsupported(u8),
}

/// One's complement sum of `data` (as big-endian 16-bit words) added to `acc` (not folded).
///
/// The sum is taken over native-endian 64-bit words, two at a time into two wide accumulators
/// (add with carry), and byte-swapped once at the end: a one's complement sum is the same
/// whichever byte order it is computed in, up to that swap (RFC 1071, section 2(B)).
pub fn sum16(data: &[u8], acc: u64) -> u64 {
    let word = |b: &[u8]| u128::from(u64::from_ne_bytes(b.try_into().expect("8 bytes")));
    let mut pairs = data.chunks_exact(16);
    // Two accumulators so the carries of one do not wait for the other's. A u128 holds the
    // sum of 2^64 words: no overflow for any slice.
    let (mut a, mut b) = (0u128, 0u128);
    for p in &mut pairs {
        a += word(&p[..8]);
        b += word(&p[8..]);
    }
    let rest = pairs.remainder();
    let mut tail = [0u8; 16];
    tail[..rest.len()].copy_from_slice(rest);
    a += word(&tail[..8]);
    b += word(&tail[8..]);
    // Fold 128 -> 64 bits with an end-around carry (no overflow: with a carry the low word is
    // at most 2^64 - 2), then to 16 bits.
    let wide = a + b;
    let (lo, carry) = (wide as u64).overflowing_add((wide >> 64) as u64);
    let folded = fold(lo + u64::from(carry));
    let be = if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    };
    acc + u64::from(be)
}

/// Folds a sum to 16 bits.
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo_sum(ip: &[u8], v4: bool, proto: u8, l4_len: usize) -> u64 {
    if v4 {
        let mut s = sum16(&ip[12..20], 0);
        s += proto as u64 + l4_len as u64;
        s
    } else {
        let mut s = sum16(&ip[8..40], 0);
        s += proto as u64 + l4_len as u64;
        s
    }
}

fn ipv4_header_checksum(h: &mut [u8]) {
    h[10] = 0;
    h[11] = 0;
    let c = !fold(sum16(h, 0));
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// IP and L4 header lengths and protocol of a packet.
fn headers(pkt: &[u8]) -> Result<(bool, usize, u8), OffloadError> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = ((pkt[0] & 0xf) as usize) * 4;
            if ihl < 20 || pkt.len() < ihl {
                return Err(OffloadError::Malformed("IPv4 header"));
            }
            Ok((true, ihl, pkt[9]))
        }
        Some(6) => {
            if pkt.len() < 40 {
                return Err(OffloadError::Malformed("IPv6 header"));
            }
            Ok((false, 40, pkt[6]))
        }
        _ => Err(OffloadError::Malformed("not IP")),
    }
}

/// Completes a partial checksum (`F_NEEDS_CSUM`): sums from `csum_start` (the field already
/// holds the pseudo-header sum) and stores the result.
pub fn complete_checksum(h: &VnetHdr, pkt: &mut [u8]) -> Result<(), OffloadError> {
    let start = h.csum_start as usize;
    let at = start + h.csum_offset as usize;
    if at + 2 > pkt.len() {
        return Err(OffloadError::Malformed("checksum offset"));
    }
    let c = !fold(sum16(&pkt[start..], 0));
    // A UDP checksum of 0 means "none": send 0xffff instead.
    let c = if c == 0 && h.csum_offset == 6 {
        0xffff
    } else {
        c
    };
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Splits a packet read from the TUN (after its `VnetHdr`) into wire-sized packets with
/// complete checksums, calling `emit` for each.
///
/// No payload is copied: each segment's headers are written in place just in front of its
/// payload, over the end of the segment before it, which `emit` has consumed by then. `pkt`
/// holds no meaningful packet afterwards.
pub fn split(h: &VnetHdr, pkt: &mut [u8], mut emit: impl FnMut(&[u8])) -> Result<(), OffloadError> {
    let gso = h.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        if h.flags & F_NEEDS_CSUM != 0 {
            complete_checksum(h, pkt)?;
        }
        emit(pkt);
        return Ok(());
    }
    let (v4, ihl, proto) = headers(pkt)?;
    let (l4_hl, tcp) = match (gso, proto) {
        (GSO_TCPV4 | GSO_TCPV6, 6) => {
            if pkt.len() < ihl + 20 {
                return Err(OffloadError::Malformed("TCP header"));
            }
            (((pkt[ihl + 12] >> 4) as usize) * 4, true)
        }
        (GSO_UDP_L4, 17) => (8, false),
        (GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4, _) => {
            return Err(OffloadError::Malformed("GSO type and protocol disagree"));
        }
        (other, _) => return Err(OffloadError::Unsupported(other)),
    };
    let hl = ihl + l4_hl;
    let mss = h.gso_size as usize;
    if l4_hl < 8 || pkt.len() < hl || mss == 0 {
        return Err(OffloadError::Malformed("GSO headers"));
    }
    // IPv4 (at most 60) or IPv6 (40) plus TCP (at most 60) or UDP (8).
    let mut hdrs = [0u8; 120];
    hdrs[..hl].copy_from_slice(&pkt[..hl]);
    let hdrs = &hdrs[..hl];
    let payload_len = pkt.len() - hl;
    let seq0 = if tcp {
        u32::from_be_bytes(hdrs[ihl + 4..ihl + 8].try_into().expect("4 bytes"))
    } else {
        0
    };
    let id0 = if v4 {
        u16::from_be_bytes([hdrs[4], hdrs[5]])
    } else {
        0
    };
    let n = payload_len.div_ceil(mss).max(1);
    for i in 0..n {
        let chunk_len = mss.min(payload_len - (i * mss).min(payload_len));
        // Segment i: its headers at [i * mss, i * mss + hl), its payload right behind them
        // (where it already is).
        let seg = &mut pkt[i * mss..i * mss + hl + chunk_len];
        if i > 0 {
            seg[..hl].copy_from_slice(hdrs);
        }
        let l4_len = l4_hl + chunk_len;
        if v4 {
            seg[2..4].copy_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
            seg[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            ipv4_header_checksum(&mut seg[..ihl]);
        } else {
            seg[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        let csum_at = if tcp {
            let seq = seq0.wrapping_add((i * mss) as u32);
            seg[ihl + 4..ihl + 8].copy_from_slice(&seq.to_be_bytes());
            if i + 1 < n {
                seg[ihl + 13] &= !0x09; // FIN, PSH only on the last segment
            }
            if i > 0 {
                seg[ihl + 13] &= !0x80; // CWR only on the first
            }
            ihl + 16
        } else {
            seg[ihl + 4..ihl + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            ihl + 6
        };
        seg[csum_at] = 0;
        seg[csum_at + 1] = 0;
        let mut c = !fold(sum16(&seg[ihl..], pseudo_sum(seg, v4, proto, l4_len)));
        if !tcp && c == 0 {
            c = 0xffff;
        }
        seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        emit(seg);
    }
    Ok(())
}

/// What to write to the TUN for a batch of packets: a packet as it is, or a coalesced GSO
/// super-packet with its virtio header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunWrite<'a> {
    /// An input packet, unchanged (written with an empty virtio header).
    Packet(&'a [u8]),
    /// Several segments of one TCP flow merged into one GSO write, gathered by the write
    /// itself (no copy of the payloads in user space).
    Super {
        /// The virtio header (GSO type, segment size, partial checksum).
        hdr: VnetHdr,
        /// The first segment's IP and TCP headers, patched for the super-packet.
        head: Vec<u8>,
        /// The segments' payloads, in order.
        payloads: Vec<&'a [u8]>,
    },
}

impl TunWrite<'_> {
    /// The virtio header to write first.
    pub fn hdr(&self) -> VnetHdr {
        match self {
            TunWrite::Packet(_) => VnetHdr::default(),
            TunWrite::Super { hdr, .. } => *hdr,
        }
    }

    /// The IP packet as the pieces to write one after the other.
    pub fn parts(&self) -> Vec<&[u8]> {
        match self {
            TunWrite::Packet(p) => vec![p],
            TunWrite::Super { head, payloads, .. } => {
                let mut v = Vec::with_capacity(1 + payloads.len());
                v.push(head.as_slice());
                v.extend(payloads.iter().copied());
                v
            }
        }
    }

    /// How many packets of the batch this write carries.
    pub fn packets(&self) -> usize {
        match self {
            TunWrite::Packet(_) => 1,
            TunWrite::Super { payloads, .. } => payloads.len(),
        }
    }

    /// The IP packet in one buffer (a copy; for tests and diagnostics).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

#[derive(Hash, PartialEq, Eq, Clone, Copy)]
struct FlowId {
    src: [u8; 16],
    dst: [u8; 16],
    ports: u32,
    proto: u8,
}

struct Open {
    index: usize,
    next_seq: u32,
    seg: usize,
    closed: bool,
}

/// Most segments merged into one write (as GRO does): bounds the iovec count of the write
/// far below `IOV_MAX` however small the segments are.
pub const MAX_COALESCED: usize = 64;

/// Coalesces a batch of IP packets (as received from peers, in order) into TUN writes:
/// consecutive TCP segments of one flow with equal headers (but sequence numbers) become one
/// GSO super-packet, and so do, when `uso` (the TUN takes UDP segmentation offload), UDP
/// datagrams of one flow with equal headers and payload sizes (the last may be shorter). A
/// super-packet is written with its pieces gathered (only its headers are copied, to patch
/// them); everything else is written as is.
pub fn coalesce<'a>(packets: &[&'a [u8]], uso: bool) -> Vec<TunWrite<'a>> {
    /// An output item: its first packet, the payloads merged behind it, its segment size.
    struct Item<'a> {
        first: usize,
        /// Header length of the first packet (IP + TCP or UDP).
        hl: usize,
        rest: Vec<&'a [u8]>,
        len: usize,
        seg: usize,
        psh: bool,
    }
    let mut items: Vec<Item<'a>> = Vec::new();
    // Flows still open for merging; a batch carries few flows, so a linear search is cheaper
    // than hashing.
    let mut open: Vec<(FlowId, Open)> = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let cand = candidate(p, uso);
        if let Some(c) = cand
            && let Some((_, o)) = open.iter_mut().find(|(f, _)| *f == c.id)
            && !o.closed
            && (c.id.proto != 6 || o.next_seq == c.seq)
            && c.plen <= o.seg
            && c.plen > 0
            && same_headers(packets[items[o.index].first], p, c.hl)
            && items[o.index].len + c.plen <= MAX_GSO_BYTES
            && items[o.index].rest.len() + 1 < MAX_COALESCED
        {
            let item = &mut items[o.index];
            item.rest.push(&p[c.hl..]);
            item.len += c.plen;
            o.next_seq = c.seq.wrapping_add(c.plen as u32);
            if c.plen < o.seg || c.psh {
                o.closed = true;
                item.psh |= c.psh;
            }
            continue;
        }
        // Not merged: it goes out after everything so far, so no later packet of its flow may
        // join an earlier write (a flow's packets keep their order). A fragment carries no
        // ports (but the first): it closes every run between its addresses in its protocol.
        if let Some((flow, ports_known)) = cand.map(|c| (c.id, true)).or_else(|| flow_of(p)) {
            for (f, o) in open.iter_mut() {
                if f.src == flow.src
                    && f.dst == flow.dst
                    && f.proto == flow.proto
                    && (!ports_known || f.ports == flow.ports)
                {
                    o.closed = true;
                }
            }
        }
        let index = items.len();
        let (mut seg, mut hl0) = (0, 0);
        if let Some(c) = cand
            && c.plen > 0
        {
            let o = Open {
                index,
                next_seq: c.seq.wrapping_add(c.plen as u32),
                seg: c.plen,
                closed: c.psh,
            };
            match open.iter_mut().find(|(f, _)| *f == c.id) {
                Some(slot) => slot.1 = o,
                None => open.push((c.id, o)),
            }
            seg = c.plen;
            hl0 = c.hl;
        }
        items.push(Item {
            first: i,
            hl: hl0,
            rest: Vec::new(),
            len: p.len(),
            seg,
            psh: false,
        });
    }
    items
        .into_iter()
        .map(|it| {
            let first = packets[it.first];
            if it.rest.is_empty() {
                return TunWrite::Packet(first);
            }
            let mut head = first[..it.hl].to_vec();
            if it.psh {
                // Carry PSH onto the super-packet's header (TCP only sets it).
                let ihl = if head[0] >> 4 == 4 {
                    ((head[0] & 0xf) as usize) * 4
                } else {
                    40
                };
                head[ihl + 13] |= 0x08;
            }
            let hdr = finish_super_packet(&mut head, it.len, it.seg);
            let mut payloads = Vec::with_capacity(1 + it.rest.len());
            payloads.push(&first[it.hl..]);
            payloads.extend(it.rest);
            TunWrite::Super {
                hdr,
                head,
                payloads,
            }
        })
        .collect()
}

/// The flow of an IP packet (IPv4 addresses in the first 4 bytes) and whether its ports are
/// known: a fragment's are not (its `ports` are 0).
fn flow_of(p: &[u8]) -> Option<(FlowId, bool)> {
    let (v4, ihl, proto) = headers(p).ok()?;
    let fragment = v4 && u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0;
    let mut id = FlowId {
        src: [0; 16],
        dst: [0; 16],
        ports: 0,
        proto,
    };
    if v4 {
        id.src[..4].copy_from_slice(&p[12..16]);
        id.dst[..4].copy_from_slice(&p[16..20]);
    } else {
        id.src.copy_from_slice(&p[8..24]);
        id.dst.copy_from_slice(&p[24..40]);
    }
    let ports = p
        .get(ihl..ihl + 4)
        .filter(|_| !fragment)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    id.ports = ports.unwrap_or(0);
    Some((id, ports.is_some()))
}

/// A packet that may be coalesced.
#[derive(Clone, Copy)]
struct Candidate {
    id: FlowId,
    /// TCP sequence number (0 for UDP).
    seq: u32,
    /// Payload length.
    plen: usize,
    /// IP + transport header length.
    hl: usize,
    /// TCP PSH.
    psh: bool,
}

/// A TCP packet with only ACK (and PSH) set, or with `uso` a UDP datagram; IPv4 without
/// options or fragments, IPv6 without extension headers; lengths consistent.
fn candidate(p: &[u8], uso: bool) -> Option<Candidate> {
    let (v4, ihl, proto) = headers(p).ok()?;
    if v4 && (ihl != 20 || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0) {
        return None;
    }
    let ip_len = if v4 {
        u16::from_be_bytes([p[2], p[3]]) as usize
    } else {
        40 + u16::from_be_bytes([p[4], p[5]]) as usize
    };
    if ip_len != p.len() {
        return None;
    }
    let (seq, thl, psh) = match proto {
        6 => {
            if p.len() < ihl + 20 {
                return None;
            }
            let thl = ((p[ihl + 12] >> 4) as usize) * 4;
            let flags = p[ihl + 13];
            if thl < 20 || p.len() < ihl + thl || flags & !0x18 != 0 || flags & 0x10 == 0 {
                return None;
            }
            let seq = u32::from_be_bytes(p[ihl + 4..ihl + 8].try_into().ok()?);
            (seq, thl, flags & 0x08 != 0)
        }
        17 if uso => {
            if p.len() < ihl + 8
                || u16::from_be_bytes([p[ihl + 4], p[ihl + 5]]) as usize != p.len() - ihl
            {
                return None;
            }
            (0, 8, false)
        }
        _ => return None,
    };
    // Not a fragment and at least 8 transport bytes: the ports are known.
    let (id, _) = flow_of(p)?;
    Some(Candidate {
        id,
        seq,
        plen: p.len() - ihl - thl,
        hl: ihl + thl,
        psh,
    })
}

/// Whether two segments may share one header: equal IP fields (but length, id, checksum)
/// and an equal TCP header (but sequence number, flag PSH, checksum) or equal UDP ports.
fn same_headers(a: &[u8], b: &[u8], hl: usize) -> bool {
    if a.len() < hl || b.len() < hl || a[0] != b[0] {
        return false;
    }
    let v4 = a[0] >> 4 == 4;
    let ihl = if v4 { 20 } else { 40 };
    let ip_same = if v4 {
        a[1] == b[1] && a[6..10] == b[6..10] && a[12..20] == b[12..20]
    } else {
        a[0..4] == b[0..4] && a[6..40] == b[6..40]
    };
    let t = ihl;
    let udp = if v4 { a[9] == 17 } else { a[6] == 17 };
    if udp {
        return ip_same && a[t..t + 4] == b[t..t + 4];
    }
    ip_same
        && a[t..t + 4] == b[t..t + 4]
        && a[t + 8..t + 13] == b[t + 8..t + 13]
        && (a[t + 13] & !0x08) == (b[t + 13] & !0x08)
        && a[t + 14..t + 16] == b[t + 14..t + 16]
        && a[t + 18..hl] == b[t + 18..hl]
}

/// Patches the headers `p` of a super-packet of `total` bytes (IP header included) and
/// returns its virtio header.
fn finish_super_packet(p: &mut [u8], total: usize, seg: usize) -> VnetHdr {
    let v4 = p[0] >> 4 == 4;
    let ihl = if v4 { 20 } else { 40 };
    let udp = if v4 { p[9] == 17 } else { p[6] == 17 };
    let l4_len = total - ihl;
    if v4 {
        let total = total as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        ipv4_header_checksum(&mut p[..ihl]);
    } else {
        p[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    }
    let (proto, l4_hl, csum_offset, gso_type) = if udp {
        // The kernel sets each segment's length and adjusts the checksum from the whole
        // datagram's.
        p[ihl + 4..ihl + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        (17, 8, 6, GSO_UDP_L4)
    } else {
        let thl = ((p[ihl + 12] >> 4) as usize) * 4;
        (6, thl, 16, if v4 { GSO_TCPV4 } else { GSO_TCPV6 })
    };
    // Partial checksum: the pseudo-header sum, completed by the kernel per segment.
    let partial = fold(pseudo_sum(p, v4, proto, l4_len));
    p[ihl + csum_offset..ihl + csum_offset + 2].copy_from_slice(&partial.to_be_bytes());
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: (ihl + l4_hl) as u16,
        gso_size: seg as u16,
        csum_start: ihl as u16,
        csum_offset: csum_offset as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook one's complement sum (RFC 1071): big-endian 16-bit words, a trailing odd
    /// byte padded with zero, end-around carries folded at the end.
    fn reference_sum(data: &[u8], acc: u64) -> u64 {
        let mut s = acc;
        for pair in data.chunks(2) {
            s += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        s
    }

    proptest::proptest! {
        #[test]
        fn sum16_agrees_with_the_textbook_sum(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            acc in 0u64..(1 << 40),
        ) {
            let ours = fold(sum16(&data, acc));
            proptest::prop_assert_eq!(ours, fold(reference_sum(&data, acc)));
        }
    }

    #[test]
    fn sum16_edge_cases() {
        for data in [
            &[][..],
            &[0],
            &[0xff],
            &[0xff; 2],
            &[0xff; 3],
            &[0xff; 4],
            &[0xff; 5],
        ] {
            assert_eq!(
                fold(sum16(data, 0)),
                fold(reference_sum(data, 0)),
                "{data:?}"
            );
        }
        // All ones: the sum of n words of 0xffff folds to 0xffff, never to 0.
        assert_eq!(fold(sum16(&[0xff; 4096], 0)), 0xffff);
        assert_eq!(fold(sum16(&[1, 2, 3], 0)), 0x0402);
    }

    /// Independent checker: full checksum over pseudo-header + segment must fold to 0xffff.
    fn l4_ok(p: &[u8]) -> bool {
        let (v4, ihl, proto) = headers(p).unwrap();
        let l4 = &p[ihl..];
        let mut pseudo = Vec::new();
        if v4 {
            pseudo.extend(&p[12..20]);
            pseudo.extend([0, proto]);
            pseudo.extend((l4.len() as u16).to_be_bytes());
        } else {
            pseudo.extend(&p[8..40]);
            pseudo.extend((l4.len() as u32).to_be_bytes());
            pseudo.extend([0, 0, 0, proto]);
        }
        fold(reference_sum(l4, reference_sum(&pseudo, 0))) == 0xffff
    }

    fn tcp4(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[100, 64, 0, 2]);
        p[16..20].copy_from_slice(&[192, 0, 2, 10]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&443u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&7u32.to_be_bytes());
        p[32] = 0x50;
        p[33] = flags;
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        p.extend_from_slice(payload);
        ipv4_header_checksum(&mut p[..20]);
        let c = !fold(sum16(&p[20..], pseudo_sum(&p, true, 6, p.len() - 20)));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// A UDP/IPv4 datagram from 100.64.0.2:`sport` to 192.0.2.10:53 with IP id `id`, right
    /// checksums.
    fn udp4(sport: u16, id: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[100, 64, 0, 2]);
        p[16..20].copy_from_slice(&[192, 0, 2, 10]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&53u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(payload);
        ipv4_header_checksum(&mut p[..20]);
        let c = !fold(sum16(&p[20..], pseudo_sum(&p, true, 17, p.len() - 20)));
        p[26..28].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The same over IPv6 (fd00::2 -> 2001:db8::9).
    fn udp6(sport: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p[24..40].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        p[40..42].copy_from_slice(&sport.to_be_bytes());
        p[42..44].copy_from_slice(&53u16.to_be_bytes());
        p[44..46].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(payload);
        let c = !fold(sum16(&p[40..], pseudo_sum(&p, false, 17, p.len() - 40)));
        p[46..48].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// Splits every write back as the kernel would segment it.
    fn split_writes(writes: &[TunWrite<'_>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for w in writes {
            split(&w.hdr(), &mut w.to_vec(), |s| out.push(s.to_vec())).unwrap();
        }
        out
    }

    #[test]
    fn udp_datagrams_of_one_flow_become_uso_writes_and_split_back_identically() {
        let mut dgrams: Vec<Vec<u8>> = (0..10u16)
            .map(|i| udp4(5000, 7 + i, &[i as u8; 100]))
            .collect();
        dgrams.push(udp4(5000, 17, &[0xee; 40]));
        let refs: Vec<&[u8]> = dgrams.iter().map(Vec::as_slice).collect();
        let w = coalesce(&refs, true);
        assert_eq!(w.len(), 1, "one USO write");
        let h = w[0].hdr();
        assert_eq!(
            (
                h.gso_type,
                h.gso_size,
                h.hdr_len,
                h.csum_start,
                h.csum_offset
            ),
            (GSO_UDP_L4, 100, 28, 20, 6)
        );
        assert_eq!(w[0].packets(), 11);
        assert_eq!(w[0].to_vec().len(), 28 + 10 * 100 + 40);
        let back = split_writes(&w);
        assert_eq!(back, dgrams, "the kernel's segments are the datagrams");
        // Without USO, UDP goes out as it came.
        let w = coalesce(&refs, false);
        assert_eq!(w.len(), 11);
        assert!(w.iter().all(|x| matches!(x, TunWrite::Packet(_))));
        // IPv6.
        let v6: Vec<Vec<u8>> = (0..5).map(|i| udp6(6000, &[i; 300])).collect();
        let refs: Vec<&[u8]> = v6.iter().map(Vec::as_slice).collect();
        let w = coalesce(&refs, true);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].hdr().hdr_len, 48);
        assert!(split_writes(&w).iter().all(|d| l4_ok(d)));
        assert_eq!(split_writes(&w), v6);
    }

    #[test]
    fn udp_runs_end_at_other_flows_sizes_and_fragments() {
        let a = |id| udp4(5000, id, &[1; 100]);
        let big = udp4(5000, 3, &[2; 200]);
        let other = udp4(5001, 4, &[3; 100]);
        let mut frag = udp4(5000, 5, &[4; 100]);
        frag[6] |= 0x20; // more fragments
        let short = udp4(5000, 6, &[5; 10]);
        let (a0, a1, a7, a8, a9) = (a(0), a(1), a(7), a(8), a(9));
        let batch = [&a0, &a1, &big, &other, &frag, &a7, &short, &a8, &a9];
        let refs: Vec<&[u8]> = batch.iter().map(|v| v.as_slice()).collect();
        let w = coalesce(&refs, true);
        let shapes: Vec<usize> = w.iter().map(TunWrite::packets).collect();
        // a0+a1 | big (larger than the run's size) | other | frag (closes the flow's run: a7
        // may not overtake it) | a7+short (a shorter one ends the run) | a8+a9.
        assert_eq!(shapes, vec![2, 1, 1, 1, 2, 2]);
        assert_eq!(w[3].to_vec(), frag, "a fragment is written as it is");
        // Every datagram comes out once, in its flow's order.
        let back = split_writes(&w);
        assert_eq!(back.len(), batch.len());
        for d in &back {
            assert!(l4_ok(d), "checksum");
        }
        let payloads: Vec<&[u8]> = back.iter().map(|d| &d[28..]).collect();
        let want: Vec<&[u8]> = batch.iter().map(|d| &d[28..]).collect();
        assert_eq!(payloads, want);
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 60,
            gso_size: 1220,
            csum_start: 40,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::decode(&h.encode()), Some(h));
        assert_eq!(VnetHdr::decode(&[0; 9]), None);
    }

    #[test]
    fn coalesced_segments_split_back_identically() {
        let mss = 1000;
        let data: Vec<u8> = (0..3500u32).map(|i| (i * 7) as u8).collect();
        let segs: Vec<Vec<u8>> = data
            .chunks(mss)
            .enumerate()
            .map(|(i, c)| tcp4(1000 + (i * mss) as u32, c, if i == 3 { 0x18 } else { 0x10 }))
            .collect();
        let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
        let writes = coalesce(&refs, false);
        assert_eq!(writes.len(), 1, "one super-packet");
        let w = &writes[0];
        assert_eq!(w.hdr().gso_type, GSO_TCPV4);
        assert_eq!(w.to_vec().len(), 40 + 3500);
        // What the kernel would do: segment with gso_size = first payload length.
        assert_eq!(w.hdr().gso_size as usize, mss);
        let h = w.hdr();
        let mut back = Vec::new();
        split(&h, &mut w.to_vec(), |s| back.push(s.to_vec())).unwrap();
        assert_eq!(back.len(), 4);
        for (b, s) in back.iter().zip(&segs) {
            assert!(l4_ok(b), "segment checksum");
            assert_eq!(b[24..28], s[24..28], "sequence numbers");
            assert_eq!(b[40..], s[40..], "payload");
            assert_eq!(fold(sum16(&b[..20], 0)), 0xffff, "IPv4 header checksum");
        }
        assert_eq!(back[3][33] & 0x08, 0x08, "PSH kept on the last segment");
        assert_eq!(back[0][33] & 0x08, 0, "PSH only on the last segment");
    }

    /// A TCP/IPv6 super-packet with TCP options, split in place with a segment size below the
    /// header length (so every segment's headers overwrite more than one earlier payload) and a
    /// short last segment: every segment equals one built independently.
    #[test]
    fn split_in_place_matches_segments_built_apart() {
        let payload: Vec<u8> = (0..1001u32).map(|i| (i * 31 + 7) as u8).collect();
        let mut hdr = vec![0u8; 40 + 32];
        hdr[0] = 0x60;
        hdr[6] = 6;
        hdr[7] = 64;
        hdr[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        hdr[24..40].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        hdr[40..42].copy_from_slice(&443u16.to_be_bytes());
        hdr[42..44].copy_from_slice(&40000u16.to_be_bytes());
        hdr[44..48].copy_from_slice(&0xffff_ff00u32.to_be_bytes()); // wraps
        hdr[52] = 8 << 4; // 32-byte TCP header (timestamps)
        hdr[53] = 0x18 | 0x80; // PSH, ACK, CWR
        hdr[54..56].copy_from_slice(&512u16.to_be_bytes());
        hdr[60..72].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        let mut pkt = hdr.clone();
        pkt.extend_from_slice(&payload);
        let mss = 30;
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 72,
            gso_size: mss as u16,
            csum_start: 40,
            csum_offset: 16,
        };
        let mut segs = Vec::new();
        split(&h, &mut pkt, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.len(), 1001usize.div_ceil(mss));
        for (i, (seg, chunk)) in segs.iter().zip(payload.chunks(mss)).enumerate() {
            let mut want = hdr.clone();
            want[4..6].copy_from_slice(&((32 + chunk.len()) as u16).to_be_bytes());
            let seq = 0xffff_ff00u32.wrapping_add((i * mss) as u32);
            want[44..48].copy_from_slice(&seq.to_be_bytes());
            if i + 1 < segs.len() {
                want[53] &= !0x08;
            }
            if i > 0 {
                want[53] &= !0x80;
            }
            want.extend_from_slice(chunk);
            assert!(l4_ok(seg), "segment {i} checksum");
            want[56..58].copy_from_slice(&seg[56..58]);
            assert_eq!(seg, &want, "segment {i}");
        }
    }

    #[test]
    fn coalesce_keeps_other_flows_gaps_and_flags_apart() {
        let a = tcp4(1, &[1; 100], 0x10);
        let gap = tcp4(500, &[2; 100], 0x10);
        let syn = tcp4(101, &[], 0x02);
        let mut other = tcp4(101, &[3; 100], 0x10);
        other[23] = 1; // another destination port
        let w = coalesce(&[&a, &gap, &syn, &other], false);
        assert_eq!(w.len(), 4);
        assert!(
            w.iter()
                .all(|x| matches!(x, TunWrite::Packet(_)) && x.hdr() == VnetHdr::default())
        );
        assert_eq!(w[0].to_vec(), a);
        // A shorter segment ends the run.
        let (x, y, z) = (
            tcp4(1, &[1; 100], 0x10),
            tcp4(101, &[1; 50], 0x10),
            tcp4(151, &[1; 100], 0x10),
        );
        let w = coalesce(&[&x, &y, &z], false);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].to_vec().len(), 40 + 150);
        // Two connections between the same hosts, interleaved: each still coalesces.
        let mut b1 = tcp4(1, &[2; 100], 0x10);
        let mut b2 = tcp4(101, &[2; 100], 0x10);
        for b in [&mut b1, &mut b2] {
            b[21] = 0x41; // source port 40001 (checksums do not matter here)
        }
        let (a1, a2) = (tcp4(1, &[1; 100], 0x10), tcp4(101, &[1; 100], 0x10));
        let w = coalesce(&[&a1, &b1, &a2, &b2], false);
        assert_eq!(
            w.iter().map(TunWrite::packets).collect::<Vec<_>>(),
            vec![2, 2]
        );
        // A pure ACK of the flow between two segments: the second may not overtake it.
        let (d1, ack, d2) = (
            tcp4(1, &[1; 100], 0x10),
            tcp4(101, &[], 0x10),
            tcp4(101, &[1; 100], 0x10),
        );
        let w = coalesce(&[&d1, &ack, &d2], false);
        let order: Vec<Vec<u8>> = w.iter().map(TunWrite::to_vec).collect();
        assert_eq!(order, vec![d1.clone(), ack.clone(), d2.clone()]);
    }

    #[test]
    fn coalescing_stops_at_max_segments() {
        let segs: Vec<Vec<u8>> = (0..150u32)
            .map(|i| tcp4(1 + i * 10, &[7; 10], 0x10))
            .collect();
        let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
        let w = coalesce(&refs, false);
        assert_eq!(w.len(), 3, "150 tiny segments: 64 + 64 + 22");
        assert!(w.iter().all(|x| x.parts().len() <= MAX_COALESCED + 1));
        let total: usize = w.iter().map(|x| x.to_vec().len() - 40).sum();
        assert_eq!(total, 1500, "every payload byte written once");
    }

    #[test]
    fn split_udp_and_partial_checksums() {
        // A UDP super-packet of 3 x 500 bytes.
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(28u16 + 1500).to_be_bytes());
        p[9] = 17;
        p[12..16].copy_from_slice(&[192, 0, 2, 10]);
        p[16..20].copy_from_slice(&[100, 64, 0, 2]);
        p[20..22].copy_from_slice(&53u16.to_be_bytes());
        p[22..24].copy_from_slice(&5353u16.to_be_bytes());
        p.extend(std::iter::repeat_n(9u8, 1500));
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 28,
            gso_size: 500,
            csum_start: 20,
            csum_offset: 6,
        };
        let mut segs = Vec::new();
        split(&h, &mut p, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.len(), 3);
        for s in &segs {
            assert_eq!(s.len(), 528);
            assert!(l4_ok(s));
            assert_eq!(u16::from_be_bytes([s[24], s[25]]), 508);
        }
        // NEEDS_CSUM without GSO: the field holds the pseudo-header sum.
        let mut one = tcp4(9, &[5; 33], 0x18);
        let partial = fold(pseudo_sum(&one, true, 6, one.len() - 20));
        one[36..38].copy_from_slice(&partial.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut out = Vec::new();
        split(&h, &mut one, |s| out.push(s.to_vec())).unwrap();
        assert!(l4_ok(&out[0]));
    }

    #[test]
    fn malformed_super_packets_are_errors_not_panics() {
        let h = VnetHdr {
            flags: 0,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 100,
            csum_start: 20,
            csum_offset: 16,
        };
        for len in [0, 1, 19, 20, 39] {
            let mut p = tcp4(1, &[0; 300], 0x10);
            p.truncate(len);
            assert!(split(&h, &mut p, |_| {}).is_err(), "len {len}");
        }
        let mut p = tcp4(1, &[0; 300], 0x10);
        let bad = VnetHdr { gso_type: 9, ..h };
        assert_eq!(
            split(&bad, &mut p, |_| {}),
            Err(OffloadError::Unsupported(9))
        );
        let zero = VnetHdr { gso_size: 0, ..h };
        assert!(split(&zero, &mut p, |_| {}).is_err());
        let off = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_NONE,
            csum_start: 400,
            ..h
        };
        assert!(split(&off, &mut p, |_| {}).is_err());
    }
}
