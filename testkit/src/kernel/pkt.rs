//! Packet building (etherparse) and independent checking (field offsets and RFC 1071
//! checksums written here, not shared with the code under test).

use std::net::IpAddr;

use etherparse::{Icmpv4Type, PacketBuilder, TcpOptionElement, icmpv4::DestUnreachableHeader};

/// MACs in test frames (the programs ignore them).
pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// Second MAC.
pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn v4(s: &str) -> [u8; 4] {
    match s.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => a.octets(),
        _ => panic!("{s} is not IPv4"),
    }
}
fn v6(s: &str) -> [u8; 16] {
    match s.parse::<IpAddr>().unwrap() {
        IpAddr::V6(a) => a.octets(),
        _ => panic!("{s} is not IPv6"),
    }
}

/// TCP flags for [`tcp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tcp {
    /// SYN (with an MSS option of the given size, 0 for none).
    Syn(u16),
    /// SYN+ACK (with MSS).
    SynAck(u16),
    /// ACK with payload.
    Ack,
    /// FIN+ACK.
    Fin,
    /// RST.
    Rst,
}

/// A TCP segment in an Ethernet frame (IPv4 or IPv6 by the address syntax).
pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: Tcp, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let ip = if src.contains(':') {
        eth.ipv6(v6(src), v6(dst), 64)
    } else {
        eth.ipv4(v4(src), v4(dst), 64)
    };
    let mut b = ip.tcp(sport, dport, 1000, 65535);
    let mss = match flags {
        Tcp::Syn(m) => {
            b = b.syn();
            m
        }
        Tcp::SynAck(m) => {
            b = b.syn().ack(1);
            m
        }
        Tcp::Ack => {
            b = b.ack(1);
            0
        }
        Tcp::Fin => {
            b = b.fin().ack(1);
            0
        }
        Tcp::Rst => {
            b = b.rst();
            0
        }
    };
    if mss != 0 {
        b = b
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::MaximumSegmentSize(mss),
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
            ])
            .unwrap();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// A UDP datagram in an Ethernet frame.
pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let ip = if src.contains(':') {
        eth.ipv6(v6(src), v6(dst), 64)
    } else {
        eth.ipv4(v4(src), v4(dst), 64)
    };
    let mut out = Vec::new();
    ip.udp(sport, dport).write(&mut out, payload).unwrap();
    out
}

/// An ICMP (v4 or v6) echo request.
pub fn ping(src: &str, dst: &str, id: u16) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let mut out = Vec::new();
    if src.contains(':') {
        eth.ipv6(v6(src), v6(dst), 64)
            .icmpv6_echo_request(id, 1)
            .write(&mut out, b"ping")
            .unwrap();
    } else {
        eth.ipv4(v4(src), v4(dst), 64)
            .icmpv4_echo_request(id, 1)
            .write(&mut out, b"ping")
            .unwrap();
    }
    out
}

/// An ICMPv4 echo reply.
pub fn pong(src: &str, dst: &str, id: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(v4(src), v4(dst), 64)
        .icmpv4(Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader {
            id,
            seq: 1,
        }))
        .write(&mut out, b"ping")
        .unwrap();
    out
}

/// An ICMPv4 "fragmentation needed" from `src` to `dst` quoting `quoted` (an Ethernet frame
/// whose IP header and first bytes are quoted, as a router would).
pub fn frag_needed(src: &str, dst: &str, quoted: &[u8], mtu: u16) -> Vec<u8> {
    let inner = &quoted[14..quoted.len().min(14 + 28 + 20)];
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(v4(src), v4(dst), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ))
        .write(&mut out, inner)
        .unwrap();
    out
}

/// The pseudo-header checksum seed of an Ethernet/IPv4/TCP frame without IP options: what
/// checksum offload leaves in the TCP checksum field for the device to complete.
pub fn tcp4_seed(frame: &[u8]) -> u16 {
    let l4_len = (frame.len() - 34) as u16;
    csum_fold(&[&frame[26..34], &[0, 6], &l4_len.to_be_bytes()])
}

/// RFC 1071 one's complement sum, folded.
pub fn csum_fold(chunks: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for c in chunks {
        let mut i = 0;
        while i + 1 < c.len() {
            sum += u16::from_be_bytes([c[i], c[i + 1]]) as u64;
            i += 2;
        }
        if i < c.len() {
            sum += (c[i] as u64) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A parsed view of an IP packet at `off` in a buffer.
#[derive(Debug, Clone)]
pub struct View {
    /// Source.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// Protocol.
    pub proto: u8,
    /// L4 bytes (to the end of the IP payload).
    pub l4: Vec<u8>,
    /// IP header bytes.
    pub ip: Vec<u8>,
}

impl View {
    /// Parses the IP packet starting `off` bytes into `buf`.
    pub fn at(buf: &[u8], off: usize) -> View {
        let b = &buf[off..];
        if b[0] >> 4 == 4 {
            let ihl = ((b[0] & 0xf) as usize) * 4;
            let tot = u16::from_be_bytes([b[2], b[3]]) as usize;
            View {
                src: IpAddr::from([b[12], b[13], b[14], b[15]]),
                dst: IpAddr::from([b[16], b[17], b[18], b[19]]),
                proto: b[9],
                l4: b[ihl..tot].to_vec(),
                ip: b[..ihl].to_vec(),
            }
        } else {
            let plen = u16::from_be_bytes([b[4], b[5]]) as usize;
            let s: [u8; 16] = b[8..24].try_into().unwrap();
            let d: [u8; 16] = b[24..40].try_into().unwrap();
            View {
                src: IpAddr::from(s),
                dst: IpAddr::from(d),
                proto: b[6],
                l4: b[40..40 + plen].to_vec(),
                ip: b[..40].to_vec(),
            }
        }
    }

    /// Parses an Ethernet frame.
    pub fn eth(buf: &[u8]) -> View {
        View::at(buf, 14)
    }

    /// Source port (TCP/UDP) or echo id.
    pub fn sport(&self) -> u16 {
        match self.proto {
            1 | 58 => u16::from_be_bytes([self.l4[4], self.l4[5]]),
            _ => u16::from_be_bytes([self.l4[0], self.l4[1]]),
        }
    }

    /// Destination port (TCP/UDP) or echo id.
    pub fn dport(&self) -> u16 {
        match self.proto {
            1 | 58 => u16::from_be_bytes([self.l4[4], self.l4[5]]),
            _ => u16::from_be_bytes([self.l4[2], self.l4[3]]),
        }
    }

    /// The TCP MSS option value, if present.
    pub fn mss(&self) -> Option<u16> {
        let doff = ((self.l4[12] >> 4) as usize) * 4;
        let mut i = 20;
        while i < doff {
            match self.l4[i] {
                0 => return None,
                1 => i += 1,
                2 => return Some(u16::from_be_bytes([self.l4[i + 2], self.l4[i + 3]])),
                _ => i += self.l4[i + 1].max(2) as usize,
            }
        }
        None
    }

    fn pseudo(&self) -> Vec<u8> {
        let mut p = Vec::new();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                p.extend(s.octets());
                p.extend(d.octets());
                p.extend([0, self.proto]);
                p.extend((self.l4.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                p.extend(s.octets());
                p.extend(d.octets());
                p.extend((self.l4.len() as u32).to_be_bytes());
                p.extend([0, 0, 0, self.proto]);
            }
            _ => unreachable!(),
        }
        p
    }

    /// Asserts that the IP header checksum (v4) and the L4 checksum are right.
    pub fn assert_checksums(&self) {
        if self.src.is_ipv4() {
            assert_eq!(
                csum_fold(&[&self.ip]),
                0xffff,
                "IPv4 header checksum wrong: {:02x?}",
                self.ip
            );
        }
        match self.proto {
            6 => assert_eq!(
                csum_fold(&[&self.pseudo(), &self.l4]),
                0xffff,
                "TCP checksum wrong"
            ),
            // A zero UDP checksum over IPv4 means "none".
            17 if self.src.is_ipv4() && self.l4[6..8] == [0, 0] => {}
            17 => assert_eq!(
                csum_fold(&[&self.pseudo(), &self.l4]),
                0xffff,
                "UDP checksum wrong"
            ),
            1 => assert_eq!(csum_fold(&[&self.l4]), 0xffff, "ICMP checksum wrong"),
            58 => assert_eq!(
                csum_fold(&[&self.pseudo(), &self.l4]),
                0xffff,
                "ICMPv6 checksum wrong"
            ),
            _ => {}
        }
    }
}

/// Recomputes the IPv4 header checksum of the frame's IP header (after a test edits it).
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = ((frame[14] & 0xf) as usize) * 4;
    frame[24] = 0;
    frame[25] = 0;
    let c = !csum_fold(&[&frame[14..14 + ihl]]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Inserts `n` 4-byte NOP IPv4 options into the frame's IP header (fixing lengths and the
/// header checksum; the L4 checksum does not cover options).
pub fn with_ipv4_options(frame: &[u8], n: usize) -> Vec<u8> {
    let mut out = frame[..34].to_vec();
    out.extend(std::iter::repeat_n(1u8, 4 * n));
    out.extend(&frame[34..]);
    out[14] = 0x40 | (5 + n as u8);
    let tot = u16::from_be_bytes([out[16], out[17]]) + 4 * n as u16;
    out[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_checksum(&mut out);
    out
}
