//! One worker thread: its TUN queue and its UDP socket, in one poll loop.
//!
//! TUN -> split super-packets -> cryptokey route -> encrypt -> GSO batches per endpoint.
//! UDP (GRO) -> identify peer -> decrypt -> source check -> coalesce -> TUN.

use std::{
    io::IoSliceMut,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsFd,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use boringtun::noise::{Packet, Tunn, TunnResult, handshake::parse_handshake_anon};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

use super::{
    Shared, from_socket,
    offload::{self, VNET_HDR_LEN, VnetHdr},
    peers::{Peer, Via, channel_data},
    send_wire, to_socket,
    tun::TunQueue,
};

/// Frames read from the TUN per wake-up.
const TUN_BATCH: usize = 64;
/// Bytes of decrypted packets held per worker before they are written to the TUN.
const ARENA: usize = 4 << 20;
/// Largest UDP payload we build (WireGuard overhead on a 64 KiB packet).
const MAX_DATAGRAM: usize = 65_535;

/// Encrypted datagrams for one endpoint, sent with one GSO call when sizes allow.
struct GsoBatch {
    dest: Option<SocketAddr>,
    seg: usize,
    count: usize,
    buf: Vec<u8>,
}

struct Worker {
    sh: Arc<Shared>,
    tun: TunQueue,
    sock: UdpSocket,
    udp: UdpSocketState,
    batch: GsoBatch,
    max_segments: usize,
    /// Where decrypted packets land, until they are written to the TUN.
    arena: Vec<u8>,
    /// The last inner source address checked and the peer slot its allowed IPs map to: the
    /// packets of a batch mostly come from one source. Cleared whenever the peer table is
    /// loaded anew.
    last_source: Option<(IpAddr, Option<u32>)>,
    /// Whether UDP datagrams are coalesced into USO writes (the TUN takes them).
    uso: bool,
}

/// Runs until the device stops.
pub(super) fn run(sh: Arc<Shared>, tun: TunQueue, sock: UdpSocket) {
    let udp = match UdpSocketState::new((&sock).into()) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "UDP socket setup");
            return;
        }
    };
    let max_segments = udp.max_gso_segments().clamp(1, 64);
    let uso = tun.uso();
    let mut w = Worker {
        sh,
        tun,
        sock,
        udp,
        batch: GsoBatch {
            dest: None,
            seg: 0,
            count: 0,
            buf: Vec::with_capacity(MAX_DATAGRAM * 2),
        },
        max_segments,
        arena: vec![0u8; ARENA],
        last_source: None,
        uso,
    };
    let gro = w.udp.gro_segments().max(1);
    let mut rx_bufs: Vec<Vec<u8>> = (0..quinn_udp::BATCH_SIZE)
        .map(|_| vec![0u8; MAX_DATAGRAM.min(1500 * gro).max(2048)])
        .collect();
    let mut tun_buf = vec![0u8; VNET_HDR_LEN + 65_535];
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    while !w.sh.stop.load(Ordering::Relaxed) {
        let (tun_ready, udp_ready) = {
            let mut fds = [
                PollFd::new(w.tun.as_fd(), PollFlags::POLLIN),
                PollFd::new(w.sock.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "poll");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            let ready = |f: &PollFd| {
                f.revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))
            };
            (ready(&fds[0]), ready(&fds[1]))
        };
        if tun_ready {
            w.tun_readable(&mut tun_buf);
        }
        if udp_ready {
            w.udp_readable(&mut rx_bufs, &mut scratch);
        }
    }
}

impl Worker {
    fn tun_readable(&mut self, buf: &mut [u8]) {
        let table = self.sh.table.load_full();
        for _ in 0..TUN_BATCH {
            let n = match self.tun.read(buf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "TUN read");
                    break;
                }
            };
            let Some(h) = VnetHdr::decode(&buf[..n]) else {
                continue;
            };
            let (_, pkt) = buf[..n].split_at_mut(VNET_HDR_LEN);
            // Each segment is routed and encrypted straight into the send batch: no copy.
            let res = offload::split(&h, pkt, |p| {
                let Some(dst) = dst_addr(p) else {
                    self.sh.drops.malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                match table.route(dst) {
                    Some(peer) => self.encrypt(peer, p),
                    None => {
                        self.sh.drops.no_route.fetch_add(1, Ordering::Relaxed);
                        tracing::trace!(%dst, "no peer for destination");
                    }
                }
            });
            if let Err(e) = res {
                self.sh.drops.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "TUN packet");
            }
        }
        self.flush();
    }

    /// Encrypts one packet for `peer` straight into the send batch.
    fn encrypt(&mut self, peer: &Peer, p: &[u8]) {
        let mut st = peer.state.lock().unwrap_or_else(|e| e.into_inner());
        // Through a TURN channel: to the server, behind the ChannelData header (equal-sized
        // datagrams stay equal-sized, so GSO batches still form).
        let relay = st.relay;
        let dest = relay.map(|v| v.server).or(st.endpoint);
        let hdr = if relay.is_some() { 4 } else { 0 };
        let need = (p.len() + 32).max(148) + hdr;
        let start = self.batch.buf.len();
        self.batch.buf.resize(start + need, 0);
        let len = match st.tunn.encapsulate(p, &mut self.batch.buf[start + hdr..]) {
            TunnResult::WriteToNetwork(d) => {
                let n = d.len();
                if let Some(v) = relay {
                    self.batch.buf[start..start + 4].copy_from_slice(&v.header(n));
                }
                n + hdr
            }
            TunnResult::Err(e) => {
                tracing::trace!(peer = %peer.name, error = ?e, "encapsulate");
                0
            }
            _ => 0,
        };
        drop(st);
        self.batch.buf.truncate(start + len);
        if len == 0 {
            return;
        }
        let Some(dest) = dest else {
            // No endpoint yet: the peer has to reach us first.
            self.batch.buf.truncate(start);
            return;
        };
        // Keep the batch uniform: same destination, equal sizes (the last may be shorter).
        let fits = self.batch.count > 0
            && self.batch.dest == Some(dest)
            && len <= self.batch.seg
            && self.batch.count < self.max_segments
            && self.batch.buf.len() <= MAX_DATAGRAM;
        if self.batch.count == 0 || fits {
            if self.batch.count == 0 {
                self.batch.dest = Some(dest);
                self.batch.seg = len;
            }
            self.batch.count += 1;
            if len < self.batch.seg {
                self.flush();
            }
            return;
        }
        // Move the new datagram into a batch of its own.
        let tail = self.batch.buf.split_off(start);
        self.flush();
        self.batch.buf.extend_from_slice(&tail);
        self.batch.dest = Some(dest);
        self.batch.seg = len;
        self.batch.count = 1;
    }

    fn flush(&mut self) {
        if self.batch.count == 0 {
            self.batch.buf.clear();
            return;
        }
        if let Some(dest) = self.batch.dest {
            let t = Transmit {
                destination: to_socket(dest),
                ecn: None,
                contents: &self.batch.buf,
                segment_size: (self.batch.count > 1).then_some(self.batch.seg),
                src_ip: None,
            };
            send(&self.udp, &self.sock, &t);
        }
        self.batch.buf.clear();
        self.batch.count = 0;
        self.batch.dest = None;
    }

    fn udp_readable(&mut self, bufs: &mut [Vec<u8>], scratch: &mut [u8]) {
        let table = self.sh.table.load_full();
        self.last_source = None;
        // Decrypted packets go straight into the arena (no per-packet allocation or copy);
        // `spans` are their places in it.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut used = 0;
        for _ in 0..8 {
            let mut meta = [RecvMeta::default(); quinn_udp::BATCH_SIZE];
            let n = {
                let mut slices: Vec<IoSliceMut<'_>> =
                    bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                match self.udp.recv((&self.sock).into(), &mut slices, &mut meta) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "UDP receive");
                        break;
                    }
                }
            };
            for (m, b) in meta.iter().zip(bufs.iter()).take(n) {
                let from = from_socket(m.addr);
                let to = m.dst_ip.map(|ip| ip.to_canonical());
                let stride = if m.stride == 0 { m.len } else { m.stride };
                for d in b[..m.len].chunks(stride) {
                    if used + d.len() > self.arena.len() {
                        self.write_tun(&spans);
                        spans.clear();
                        used = 0;
                    }
                    if let Some((off, len)) =
                        self.datagram(&table, (from, to, None), d, scratch, used)
                    {
                        spans.push((off, len));
                        used = off + len;
                    }
                }
            }
            if n < quinn_udp::BATCH_SIZE {
                break;
            }
        }
        self.flush();
        self.write_tun(&spans);
    }

    /// Coalesces the decrypted packets at `spans` of the arena and writes them to the TUN.
    fn write_tun(&mut self, spans: &[(usize, usize)]) {
        let packets: Vec<&[u8]> = spans
            .iter()
            .map(|(o, l)| &self.arena[*o..*o + *l])
            .collect();
        let (mut writes, mut written) = (0, 0);
        for w in offload::coalesce(&packets, self.uso) {
            let hdr = w.hdr();
            match self.tun.write(&hdr.encode(), &w.parts()) {
                Ok(()) => {
                    writes += 1;
                    written += w.packets() as u64;
                }
                Err(e)
                    if hdr.gso_type == offload::GSO_UDP_L4
                        && e.raw_os_error() == Some(libc::EINVAL) =>
                {
                    // A kernel that negotiated USO but refuses UDP super-packets: write this
                    // one's datagrams singly, and no more UDP super-packets.
                    tracing::warn!(error = %e, "the TUN refuses UDP super-packets; writing UDP datagrams one by one");
                    self.uso = false;
                    let mut whole = w.to_vec();
                    let none = VnetHdr::default().encode();
                    let _ = offload::split(&hdr, &mut whole, |d| {
                        if self.tun.write(&none, &[d]).is_ok() {
                            writes += 1;
                            written += 1;
                        }
                    });
                }
                Err(e) => tracing::debug!(error = %e, "TUN write"),
            }
        }
        self.sh.tun_io.writes.fetch_add(writes, Ordering::Relaxed);
        self.sh.tun_io.packets.fetch_add(written, Ordering::Relaxed);
    }

    /// One datagram: `from` the sender, `to` the local address it came to, `via` the TURN
    /// channel it was unwrapped from (then `from` is the peer's address behind the relay).
    fn datagram(
        &mut self,
        table: &super::peers::PeerTable,
        (from, to, via): (SocketAddr, Option<IpAddr>, Option<Via>),
        d: &[u8],
        scratch: &mut [u8],
        at: usize,
    ) -> Option<(usize, usize)> {
        let peer = match data_receiver(d) {
            // Transport data, nearly every datagram: the receiver index names the peer;
            // `decapsulate` authenticates the packet.
            Some(idx) => table.by_index(idx),
            // STUN on the same port (answers to our Binding requests): to discovery. `from` is
            // already canonical (`from_socket`), as discovery's resolved servers are.
            // ChannelData from a TURN server on a bound channel: WireGuard inside is the
            // peer's. Anything else from a relay (STUN checks inside, the server's own
            // messages) goes to the connection driver below.
            None if via.is_none()
                && let Some((channel, inner)) = channel_data(d)
                && crate::stun::classify(inner) != crate::stun::Kind::Stun
                && let Some(peer_addr) = self.sh.channels.load().get(&(from, channel)).copied() =>
            {
                let via = Some(Via {
                    server: from,
                    channel,
                });
                return self.datagram(table, (peer_addr, None, via), inner, scratch, at);
            }
            None if via.is_none()
                && (crate::stun::classify(d) == crate::stun::Kind::Stun
                    || channel_data(d).is_some()) =>
            {
                // Oversized: no answer or check of ours is, and copying it costs.
                let inbound = || super::Inbound {
                    from,
                    to,
                    data: d.to_vec(),
                };
                let taken = d.len() <= crate::stun::MAX_ANSWER
                    && self
                        .sh
                        .stun
                        .get()
                        .is_some_and(|tx| tx.try_send(inbound()).is_ok());
                if !taken {
                    self.sh.drops.stun.fetch_add(1, Ordering::Relaxed);
                }
                return None;
            }
            None => {
                // Handshake messages: MACs first (cheap), and cookies under load, before any
                // Diffie-Hellman.
                let packet = match self.sh.limiter.verify_packet(Some(from.ip()), d, scratch) {
                    Ok(p) => p,
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.sh.drops.cookies.fetch_add(1, Ordering::Relaxed);
                        let _ = send_wire(&self.sock, from, via, cookie);
                        return None;
                    }
                    Err(_) => {
                        self.sh.drops.unknown.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                };
                match packet {
                    Packet::HandshakeInit(ref init) => {
                        parse_handshake_anon(&self.sh.private, &self.sh.public, init)
                            .ok()
                            .and_then(|h| table.by_key.get(&h.peer_static_public))
                    }
                    Packet::HandshakeResponse(ref r) => table.by_index(r.receiver_idx),
                    Packet::PacketCookieReply(ref c) => table.by_index(c.receiver_idx),
                    Packet::PacketData(ref p) => table.by_index(p.receiver_idx),
                }
            }
        };
        let Some(peer) = peer.cloned() else {
            self.sh.drops.unknown.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(%from, "datagram from an unknown peer");
            return None;
        };
        let mut st = peer.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut authenticated = false;
        let mut placed = None;
        let base = self.arena.as_ptr() as usize;
        let decrypted = match st
            .tunn
            .decapsulate(Some(from.ip()), d, &mut self.arena[at..])
        {
            TunnResult::WriteToNetwork(out) => {
                authenticated = true;
                let _ = send_wire(&self.sock, from, via, out);
                // Flush packets queued while the handshake was under way.
                let mut tmp = vec![0u8; MAX_DATAGRAM];
                while let TunnResult::WriteToNetwork(q) = st.tunn.decapsulate(None, &[], &mut tmp) {
                    let _ = send_wire(&self.sock, from, via, q);
                }
                None
            }
            TunnResult::WriteToTunnelV4(pkt, src) => Some((pkt, IpAddr::V4(src))),
            TunnResult::WriteToTunnelV6(pkt, src) => Some((pkt, IpAddr::V6(src))),
            TunnResult::Done => {
                authenticated = matches!(packet_type(d), Some(4));
                None
            }
            TunnResult::Err(e) => {
                self.sh.drops.unknown.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(peer = %peer.name, error = ?e, "decapsulate");
                None
            }
        };
        if let Some((pkt, src)) = decrypted {
            authenticated = true;
            if Self::source_ok(&self.sh, &mut self.last_source, table, &peer, src) {
                placed = Some((pkt.as_ptr() as usize - base, pkt.len()));
            }
        }
        // Roaming: an authenticated packet tells us where the peer is now; the way it came
        // (direct, or which relay channel) is ICE's to choose, so a packet that came the other
        // way moves nothing (a relayed path is not left for a direct packet, nor the reverse).
        if authenticated && st.endpoint != Some(from) && st.relay == via {
            tracing::debug!(peer = %peer.name, endpoint = %from, "endpoint changed");
            st.endpoint = Some(from);
            st.origin = super::peers::EndpointOrigin::Learnt;
        }
        placed
    }

    fn source_ok(
        sh: &Shared,
        last: &mut Option<(IpAddr, Option<u32>)>,
        table: &super::peers::PeerTable,
        peer: &Peer,
        src: IpAddr,
    ) -> bool {
        let slot = match *last {
            Some((a, slot)) if a == src => slot,
            _ => {
                let slot = table.routes.lookup(src);
                *last = Some((src, slot));
                slot
            }
        };
        if slot == Some(peer.slot) {
            return true;
        }
        sh.drops.spoofed.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(peer = %peer.name, %src, "source outside the peer's allowed IPs");
        false
    }
}

fn packet_type(d: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(..4)?.try_into().ok()?))
}

/// The receiver index of a transport data message (type 4, at least its 16-byte header and
/// 16-byte tag); `None` for anything else.
fn data_receiver(d: &[u8]) -> Option<u32> {
    if packet_type(d)? != 4 || d.len() < 32 {
        return None;
    }
    Some(u32::from_le_bytes(d[4..8].try_into().ok()?))
}

fn dst_addr(p: &[u8]) -> Option<IpAddr> {
    Tunn::dst_address(p)
}

/// Sends, waiting briefly for room when the socket buffer is full.
fn send(state: &UdpSocketState, sock: &UdpSocket, t: &Transmit<'_>) {
    for _ in 0..50 {
        match state.try_send(sock.into(), t) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(10u16));
            }
            Err(e) => {
                tracing::debug!(error = %e, dest = %t.destination, "UDP send");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_transport_data_messages_take_the_receiver_index_path() {
        let mut d = vec![0u8; 32];
        d[0] = 4;
        d[4..8].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        assert_eq!(data_receiver(&d), Some(0x0102_0304));
        // Shorter than a header and a tag: left to the full parser, which refuses it.
        assert_eq!(data_receiver(&d[..31]), None);
        // Handshake initiation, response and cookie reply go through the MAC checks.
        for t in [1u8, 2, 3] {
            let mut h = vec![0u8; 148];
            h[0] = t;
            assert_eq!(data_receiver(&h), None, "type {t}");
        }
        // Reserved bytes set: not a data message.
        d[1] = 1;
        assert_eq!(data_receiver(&d), None);
        assert_eq!(data_receiver(&[]), None);
    }
}
