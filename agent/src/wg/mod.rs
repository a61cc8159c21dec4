//! WireGuard in the agent: boringtun's noise state machines with our own offload-aware I/O.
//!
//! - The TUN has one queue per worker thread; the kernel keeps each flow on one queue, so a
//!   flow's packets stay in order while more cores give more throughput.
//! - Each worker has its own UDP socket on the listen port (`SO_REUSEPORT`: the kernel keeps
//!   each peer endpoint on one socket) with GSO sends and GRO receives (quinn-udp).
//! - TSO/USO super-packets read from the TUN are split into wire-sized packets and sent as one
//!   GSO batch; decrypted TCP segments of one flow are coalesced into one GSO write.
//! - Cryptokey routing: outbound packets go to the peer whose allowed IPs hold the destination
//!   (longest prefix); inbound packets are dropped unless their source lies in the sending
//!   peer's allowed IPs.
//! - A timer thread drives handshakes, keepalives and rekeys, and resets the handshake rate
//!   limiter that answers floods with cookie replies.

pub mod offload;
pub mod peers;
pub use peers::{Connection, EndpointOrigin, Via};
pub mod tun;
mod worker;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use boringtun::{
    noise::{TunnResult, rate_limiter::RateLimiter},
    x25519::{self, StaticSecret},
};
use ipnet::IpNet;
use serde::Serialize;
use swiftgate_proto::keys::{PresharedKey, PrivateKey, PublicKey};

use peers::{PeerSettings, PeerTable};

/// Handshakes per second before the rate limiter asks for cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// WireGuard settings of the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgConfig {
    /// TUN name.
    pub iface: String,
    /// Private key.
    pub private: PrivateKey,
    /// UDP listen port (0: any).
    pub listen_port: u16,
    /// TUN MTU.
    pub mtu: u16,
    /// Own overlay addresses with the overlay prefix.
    pub addresses: Vec<IpNet>,
    /// Worker threads (0: one per CPU).
    pub workers: usize,
    /// Peers.
    pub peers: Vec<WgPeer>,
}

/// A WireGuard peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    /// Name (logs, status).
    pub name: String,
    /// Public key.
    pub public: PublicKey,
    /// Pre-shared key.
    pub psk: Option<PresharedKey>,
    /// Endpoint, if known.
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive, seconds.
    pub keepalive: Option<u16>,
    /// Allowed IPs.
    pub allowed: Vec<IpNet>,
}

/// Counters of what the data path did with packets it did not pass on.
#[derive(Default)]
pub struct Drops {
    /// Outbound packets with no peer for their destination.
    pub no_route: AtomicU64,
    /// Inbound packets whose source is outside the sending peer's allowed IPs.
    pub spoofed: AtomicU64,
    /// Datagrams from unknown peers or that failed to authenticate.
    pub unknown: AtomicU64,
    /// Malformed packets from the TUN or the network.
    pub malformed: AtomicU64,
    /// Cookie replies sent (handshakes under load).
    pub cookies: AtomicU64,
    /// STUN datagrams on the WireGuard port nobody took (no discovery running, its queue
    /// full, or larger than any answer of ours).
    pub stun: AtomicU64,
    /// STUN datagrams discovery ignored: not an answer to a request in flight to the server
    /// it came from, or malformed (bad FINGERPRINT, truncated attributes, ...).
    pub stun_ignored: AtomicU64,
    /// Signal messages ignored: they do not open (not sealed to this peer's key, or
    /// tampered with) or cannot be read.
    pub signal_ignored: AtomicU64,
}

/// What the workers wrote to the TUN: writes and the packets they carried (more packets than
/// writes: coalescing at work).
#[derive(Default)]
pub struct TunIo {
    /// TUN writes.
    pub writes: AtomicU64,
    /// Packets in them.
    pub packets: AtomicU64,
}

/// State shared by workers, the timer thread and the control side.
pub(crate) struct Shared {
    pub(crate) table: ArcSwap<PeerTable>,
    pub(crate) private: StaticSecret,
    pub(crate) public: x25519::PublicKey,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) stop: AtomicBool,
    pub(crate) drops: Drops,
    pub(crate) tun_io: TunIo,
    /// Where workers hand STUN and TURN datagrams, once the connection driver runs.
    pub(crate) stun: std::sync::OnceLock<tokio::sync::mpsc::Sender<Inbound>>,
    /// Bound TURN channels: (server, channel) -> the peer address the channel reaches.
    /// WireGuard inside their ChannelData is taken by the workers as from that address.
    pub(crate) channels: ArcSwap<HashMap<(SocketAddr, u16), SocketAddr>>,
    /// Server-reflexive addresses of the WireGuard port, as discovery last saw them.
    reflexive: Mutex<Vec<SocketAddr>>,
    /// Each peer's ICE, as the connection driver last saw it.
    ice: Mutex<HashMap<[u8; 32], crate::ice::PeerIce>>,
    next_slot: AtomicU32,
}

/// A STUN or TURN datagram that arrived on the WireGuard port, for the connection driver.
#[derive(Debug)]
pub struct Inbound {
    /// Who sent it.
    pub from: SocketAddr,
    /// The local address it was sent to (from `IP_PKTINFO`), when the kernel said.
    pub to: Option<IpAddr>,
    /// The datagram.
    pub data: Vec<u8>,
}

/// Sends a WireGuard datagram to a peer's endpoint, through its TURN channel if it has one.
pub(crate) fn send_wire(
    sock: &UdpSocket,
    endpoint: SocketAddr,
    relay: Option<Via>,
    d: &[u8],
) -> std::io::Result<usize> {
    match relay {
        None => sock.send_to(d, to_socket(endpoint)),
        Some(v) => {
            let mut framed = Vec::with_capacity(4 + d.len());
            framed.extend_from_slice(&v.header(d.len()));
            framed.extend_from_slice(d);
            sock.send_to(&framed, to_socket(v.server))
        }
    }
}

/// A running WireGuard device.
pub struct Device {
    shared: Arc<Shared>,
    timer_sock: UdpSocket,
    threads: Vec<JoinHandle<()>>,
    iface: String,
    listen_port: u16,
    cfg: Mutex<WgConfig>,
}

/// A peer's ICE in the status.
#[derive(Clone, Debug, Serialize)]
pub struct IceStatus {
    /// `new`, `checking`, `connected`, `completed` or `disconnected`.
    pub state: &'static str,
    /// The selected pair's local side (our port's address, or our relayed address).
    pub local: Option<String>,
    /// The selected pair's remote side.
    pub remote: Option<String>,
    /// Whether this side nominates.
    pub controlling: bool,
    /// ICE restarts so far.
    pub restarts: u32,
}

impl From<&crate::ice::PeerIce> for IceStatus {
    fn from(p: &crate::ice::PeerIce) -> Self {
        use is::IceConnectionState as S;
        IceStatus {
            state: match p.state {
                S::New => "new",
                S::Checking => "checking",
                S::Connected => "connected",
                S::Completed => "completed",
                S::Disconnected => "disconnected",
            },
            local: p.nominated.map(|n| n.local.to_string()),
            remote: p.nominated.map(|n| n.remote.to_string()),
            controlling: p.controlling,
            restarts: p.restarts,
        }
    }
}

/// One peer's status.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Name.
    pub name: String,
    /// Public key (base64).
    pub public_key: String,
    /// Current endpoint.
    pub endpoint: Option<String>,
    /// Where the endpoint came from (`configured`, `host`, `srflx`, `learnt`, `none`).
    pub endpoint_origin: peers::EndpointOrigin,
    /// `connected`, `connecting` or `failed`.
    pub state: peers::Connection,
    /// `relayed` (through our TURN allocation, or to the peer's relayed address), `direct`,
    /// or none without an endpoint.
    pub path: Option<&'static str>,
    /// Round-trip time of the last handshake this side initiated, milliseconds.
    pub rtt_ms: Option<u32>,
    /// ICE, when peers are found through Signal.
    pub ice: Option<IceStatus>,
    /// Seconds since the last completed handshake.
    pub last_handshake_s: Option<f64>,
    /// Bytes sent.
    pub tx_bytes: usize,
    /// Bytes received.
    pub rx_bytes: usize,
    /// Allowed IPs.
    pub allowed_ips: Vec<String>,
}

/// IPv4 endpoints as IPv4-mapped IPv6 (the sockets are dual-stack).
pub(crate) fn to_socket(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v) => SocketAddr::new(IpAddr::V6(v.ip().to_ipv6_mapped()), v.port()),
        v6 => v6,
    }
}

/// IPv4-mapped IPv6 endpoints as plain IPv4.
pub(crate) fn from_socket(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v) => match v.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v.port()),
            None => a,
        },
        v4 => v4,
    }
}

fn udp_socket(port: u16) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).context("UDP socket")?;
    s.set_only_v6(false)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    // Encapsulated packets never take the agent's own routing table (an exit node's default
    // route would loop them into the tunnel).
    s.set_mark(crate::routing::FWMARK)
        .context("marking the WireGuard socket (SO_MARK needs CAP_NET_ADMIN)")?;
    // Large buffers: bursts of GSO batches.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())
        .with_context(|| format!("binding UDP port {port}"))?;
    Ok(s.into())
}

impl Shared {
    /// State shared by the workers and the timer thread, with no peers yet.
    fn new(private: StaticSecret, public: x25519::PublicKey) -> Shared {
        Shared {
            table: ArcSwap::from_pointee(PeerTable::default()),
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            private,
            public,
            stop: AtomicBool::new(false),
            drops: Drops::default(),
            tun_io: TunIo::default(),
            stun: std::sync::OnceLock::new(),
            channels: ArcSwap::from_pointee(HashMap::new()),
            reflexive: Mutex::new(Vec::new()),
            ice: Mutex::new(HashMap::new()),
            next_slot: AtomicU32::new(1),
        }
    }

    fn build_table(&self, cfg: &WgConfig, old: &PeerTable) -> PeerTable {
        let peers = cfg.peers.iter().map(|p| {
            let settings = PeerSettings {
                psk: p.psk.as_ref().map(|k| *k.as_bytes()),
                keepalive: p.keepalive,
                endpoint: p.endpoint,
            };
            let peer = match old.by_key.get(p.public.as_bytes()) {
                // A peer's identity is its key: same session settings keep the live session
                // and the endpoint it roamed to, whatever the name (a rename in the management
                // server must not cut the tunnel).
                Some(existing) if existing.settings == settings => {
                    if existing.name == p.name {
                        existing.clone()
                    } else {
                        tracing::debug!(peer = %p.name, old_name = %existing.name, "peer renamed; session kept");
                        Arc::new(peers::Peer {
                            slot: existing.slot,
                            name: p.name.clone(),
                            public: existing.public,
                            settings,
                            state: existing.state.clone(),
                        })
                    }
                }
                // Changed session settings: a new session (the peer re-handshakes), same slot;
                // an endpoint learnt from the peer is kept unless one is configured.
                Some(existing) => {
                    tracing::debug!(peer = %p.name, "peer session settings changed; new session");
                    let (learnt, relay) = {
                        let st = existing.state.lock().unwrap_or_else(|e| e.into_inner());
                        (st.endpoint, st.relay)
                    };
                    let peer = peers::new_peer(
                        existing.slot,
                        p.name.clone(),
                        *p.public.as_bytes(),
                        settings,
                        &self.private,
                        &self.limiter,
                    );
                    {
                        let mut st = peer.state.lock().unwrap_or_else(|e| e.into_inner());
                        if st.endpoint.is_none() && learnt.is_some() {
                            st.endpoint = learnt;
                            st.relay = relay;
                            st.origin = peers::EndpointOrigin::Learnt;
                        }
                    }
                    Arc::new(peer)
                }
                None => Arc::new(peers::new_peer(
                    self.next_slot.fetch_add(1, Ordering::Relaxed),
                    p.name.clone(),
                    *p.public.as_bytes(),
                    settings,
                    &self.private,
                    &self.limiter,
                )),
            };
            (peer, p.allowed.clone())
        });
        PeerTable::new(peers.collect::<Vec<_>>())
    }
}

impl Device {
    /// Creates the TUN, binds the UDP sockets and starts the workers and the timer thread.
    pub fn start(cfg: &WgConfig) -> Result<Device> {
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            cfg.workers
        };
        let queues = tun::create(&cfg.iface, workers, cfg.mtu, &cfg.addresses)?;
        let private = StaticSecret::from(*cfg.private.as_bytes());
        let public = x25519::PublicKey::from(&private);
        let first = udp_socket(cfg.listen_port)?;
        let listen_port = first.local_addr()?.port();
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(udp_socket(listen_port)?);
        }
        let timer_sock = sockets[0].try_clone()?;
        let shared = Arc::new(Shared::new(private, public));
        let table = shared.build_table(cfg, &PeerTable::default());
        shared.table.store(Arc::new(table));
        let mut threads = Vec::new();
        for (i, (q, s)) in queues.into_iter().zip(sockets).enumerate() {
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wg-worker-{i}"))
                    .spawn(move || worker::run(sh, q, s))
                    .context("spawning a worker")?,
            );
        }
        let sh = shared.clone();
        let ts = timer_sock.try_clone()?;
        threads.push(
            std::thread::Builder::new()
                .name("wg-timers".into())
                .spawn(move || timers(sh, ts))?,
        );
        tracing::info!(interface = %cfg.iface, listen_port, workers, peers = cfg.peers.len(), "wireguard up");
        Ok(Device {
            shared,
            timer_sock,
            threads,
            iface: cfg.iface.clone(),
            listen_port,
            cfg: Mutex::new(cfg.clone()),
        })
    }

    /// The UDP port in use.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// Applies new peer settings; peers whose key and session settings are unchanged keep
    /// their sessions, others are added, rebuilt or removed without disturbing the rest.
    pub fn update(&self, cfg: &WgConfig) -> Result<()> {
        let mut cur = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
        if cfg.private != cur.private
            || cfg.iface != cur.iface
            || cfg.listen_port != cur.listen_port
        {
            anyhow::bail!(
                "private key, interface and listen port cannot change while running (restart the agent)"
            );
        }
        let old = self.shared.table.load_full();
        let table = self.shared.build_table(cfg, &old);
        self.shared.table.store(Arc::new(table));
        *cur = cfg.clone();
        Ok(())
    }

    /// Forces a new handshake with every peer (a rekey).
    pub fn rekey(&self) {
        let table = self.shared.table.load();
        for p in table.by_slot.values() {
            let mut st = p.state.lock().unwrap_or_else(|e| e.into_inner());
            let ep = st.endpoint;
            self.initiate(&mut st, ep);
        }
    }

    /// Starts a new handshake with a peer (boringtun retries it on its timers) and sends
    /// the initiation to `to`, if given.
    fn initiate(&self, st: &mut peers::PeerState, to: Option<SocketAddr>) {
        let mut buf = [0u8; 256];
        let relay = if to == st.endpoint { st.relay } else { None };
        if let (TunnResult::WriteToNetwork(pkt), Some(to)) =
            (st.tunn.format_handshake_initiation(&mut buf, true), to)
        {
            let _ = send_wire(&self.timer_sock, to, relay, pkt);
        }
    }

    /// Sets a peer's path to the pair ICE nominated: `remote` directly, or through the TURN
    /// channel `relay`, and starts a handshake on it at once (both sides send, so both NATs
    /// open). Whether the peer is known.
    pub fn set_path(
        &self,
        public: &[u8; 32],
        remote: SocketAddr,
        relay: Option<Via>,
        origin: peers::EndpointOrigin,
    ) -> bool {
        let table = self.shared.table.load();
        let Some(p) = table.by_key.get(public) else {
            return false;
        };
        let mut st = p.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.endpoint == Some(remote) && st.relay == relay {
            st.origin = origin;
            return true;
        }
        tracing::info!(peer = %p.name, endpoint = %remote, relayed = relay.is_some(), "path from ICE");
        st.endpoint = Some(remote);
        st.relay = relay;
        st.origin = origin;
        let connected = st
            .tunn
            .time_since_last_handshake()
            .is_some_and(|t| t < Duration::from_secs(180));
        if !connected {
            st.trying_since = std::time::Instant::now();
        }
        // A handshake on the new path at once: it proves the path, and a peer that started
        // over (a new process, its old session gone) is not left to WireGuard's 5 s retry.
        self.initiate(&mut st, Some(remote));
        true
    }

    /// The TURN channels bound now ((server, channel) -> the peer address it reaches): their
    /// ChannelData carrying WireGuard is taken as the peer's.
    pub fn set_channels(&self, channels: HashMap<(SocketAddr, u16), SocketAddr>) {
        self.shared.channels.store(Arc::new(channels));
    }

    /// Per-peer status.
    pub fn status(&self) -> Vec<PeerStatus> {
        let table = self.shared.table.load();
        let ice = self.shared.ice.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<PeerStatus> = table
            .by_slot
            .values()
            .map(|p| {
                let st = p.state.lock().unwrap_or_else(|e| e.into_inner());
                let (hs, tx, rx, _, rtt) = st.tunn.stats();
                PeerStatus {
                    name: p.name.clone(),
                    public_key: PublicKey::from_bytes(p.public).to_base64(),
                    endpoint: st.endpoint.map(|e| e.to_string()),
                    endpoint_origin: st.origin,
                    state: peers::connection(hs, st.trying_since.elapsed()),
                    // Relayed: through our TURN allocation, or to the peer's.
                    path: st.endpoint.map(|_| {
                        if st.relay.is_some() || st.origin == peers::EndpointOrigin::Relay {
                            "relayed"
                        } else {
                            "direct"
                        }
                    }),
                    rtt_ms: rtt,
                    ice: ice.get(&p.public).map(IceStatus::from),
                    last_handshake_s: hs.map(|d| d.as_secs_f64()),
                    tx_bytes: tx,
                    rx_bytes: rx,
                    allowed_ips: table
                        .allowed_of(p.slot)
                        .iter()
                        .map(|a| a.to_string())
                        .collect(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Drop counters.
    pub fn drops(&self) -> HashMap<&'static str, u64> {
        let d = &self.shared.drops;
        HashMap::from([
            ("no_route", d.no_route.load(Ordering::Relaxed)),
            ("spoofed", d.spoofed.load(Ordering::Relaxed)),
            ("unknown", d.unknown.load(Ordering::Relaxed)),
            ("malformed", d.malformed.load(Ordering::Relaxed)),
            ("cookies", d.cookies.load(Ordering::Relaxed)),
            ("stun", d.stun.load(Ordering::Relaxed)),
            ("stun_ignored", d.stun_ignored.load(Ordering::Relaxed)),
            ("signal_ignored", d.signal_ignored.load(Ordering::Relaxed)),
        ])
    }

    /// Counts a STUN datagram discovery ignored.
    pub fn count_stun_ignored(&self) {
        self.shared
            .drops
            .stun_ignored
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records each peer's ICE (shown in the status).
    pub fn set_ice(&self, ice: HashMap<[u8; 32], crate::ice::PeerIce>) {
        *self.shared.ice.lock().unwrap_or_else(|e| e.into_inner()) = ice;
    }

    /// Counts `n` Signal messages ICE refused (candidates that do not parse).
    pub fn add_signal_ignored(&self, n: u64) {
        if n > 0 {
            self.shared
                .drops
                .signal_ignored
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts a Signal message that was ignored.
    pub fn count_signal_ignored(&self) {
        self.shared
            .drops
            .signal_ignored
            .fetch_add(1, Ordering::Relaxed);
    }

    /// STUN datagrams arriving on the WireGuard port, from now on (once; `None` when already
    /// taken). Workers hand them over without blocking: when the queue is full they are
    /// dropped and counted (`stun` in [`Self::drops`]).
    pub fn stun_inbox(&self, capacity: usize) -> Option<tokio::sync::mpsc::Receiver<Inbound>> {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        self.shared.stun.set(tx).ok().map(|()| rx)
    }

    /// Sends a datagram from the WireGuard port (STUN requests: the NAT maps them as it
    /// maps WireGuard's own packets).
    pub fn send_from_port(&self, to: SocketAddr, d: &[u8]) -> std::io::Result<usize> {
        self.timer_sock.send_to(d, to_socket(to))
    }

    /// Records the server-reflexive addresses discovery found (shown in the status).
    pub fn set_reflexive(&self, addrs: Vec<SocketAddr>) {
        *self
            .shared
            .reflexive
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    /// The server-reflexive addresses of the WireGuard port.
    pub fn reflexive(&self) -> Vec<SocketAddr> {
        self.shared
            .reflexive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// TUN writes and the packets they carried.
    pub fn tun_io(&self) -> HashMap<&'static str, u64> {
        let t = &self.shared.tun_io;
        HashMap::from([
            ("writes", t.writes.load(Ordering::Relaxed)),
            ("packets", t.packets.load(Ordering::Relaxed)),
        ])
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Stops the threads (the TUN persists; `swiftgate down` removes it).
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Timer thread: handshakes, keepalives, rekeys; resets the rate limiter every second.
fn timers(sh: Arc<Shared>, sock: UdpSocket) {
    let mut buf = vec![0u8; 256];
    let mut last_reset = Instant::now();
    while !sh.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last_reset.elapsed() >= Duration::from_secs(1) {
            sh.limiter.reset_count();
            last_reset = Instant::now();
        }
        let table = sh.table.load();
        for p in table.by_slot.values() {
            let mut st = p.state.lock().unwrap_or_else(|e| e.into_inner());
            let (ep, relay) = (st.endpoint, st.relay);
            match st.tunn.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(pkt) => {
                    if let Some(ep) = ep
                        && let Err(e) = send_wire(&sock, ep, relay, pkt)
                    {
                        tracing::debug!(peer = %p.name, error = %e, "timer send");
                    }
                }
                TunnResult::Err(e) => tracing::trace!(peer = %p.name, error = ?e, "timers"),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        let private = StaticSecret::from([7u8; 32]);
        let public = x25519::PublicKey::from(&private);
        Shared::new(private, public)
    }

    fn config(name: &str, keepalive: Option<u16>) -> WgConfig {
        WgConfig {
            iface: "sg0".into(),
            private: PrivateKey::from_bytes([7; 32]),
            listen_port: 0,
            mtu: 1280,
            addresses: vec![],
            workers: 1,
            peers: vec![WgPeer {
                name: name.into(),
                public: PrivateKey::from_bytes([9; 32]).public_key(),
                psk: None,
                endpoint: None,
                keepalive,
                allowed: vec!["100.64.0.2/32".parse().unwrap()],
            }],
        }
    }

    /// Defect: renaming a peer rebuilt its session and lost the endpoint Signal had given it.
    #[test]
    fn a_rename_keeps_the_session_and_endpoint_and_new_settings_keep_the_endpoint() {
        let sh = shared();
        let t1 = sh.build_table(&config("alice", None), &PeerTable::default());
        let key = *PrivateKey::from_bytes([9; 32]).public_key().as_bytes();
        let learnt: SocketAddr = "198.51.100.7:51820".parse().unwrap();
        t1.by_key[&key].state.lock().unwrap().endpoint = Some(learnt);

        let t2 = sh.build_table(&config("alice.berlin.internal", None), &t1);
        let (a, b) = (&t1.by_key[&key], &t2.by_key[&key]);
        assert!(Arc::ptr_eq(&a.state, &b.state), "same live session");
        assert_eq!(b.name, "alice.berlin.internal");
        assert_eq!(a.slot, b.slot);

        let t3 = sh.build_table(&config("alice.berlin.internal", Some(25)), &t2);
        let c = &t3.by_key[&key];
        assert!(
            !Arc::ptr_eq(&b.state, &c.state),
            "new settings, new session"
        );
        assert_eq!(c.state.lock().unwrap().endpoint, Some(learnt));
        assert_eq!(c.slot, a.slot);
    }
}
