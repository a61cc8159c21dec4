//! The connection driver: the one task that owns everything a peer connection needs besides
//! WireGuard itself, and does its I/O.
//!
//! - **Discovery** ([`crate::stun::Reflexive`]): asks the announced STUN servers where they
//!   see the WireGuard port; the answers are server-reflexive candidates.
//! - **Relays** ([`crate::turn::Allocation`]): one allocation per announced TURN server
//!   (UDP), with the management server's time-limited credentials (renewed as they are);
//!   the relayed address is a candidate, and a pair through it carries WireGuard in
//!   ChannelData.
//! - **ICE** ([`crate::ice::Ice`]): checks and nomination per peer, over the WireGuard port
//!   and through the relays; a nominated pair becomes the peer's WireGuard path
//!   ([`Device::set_path`]).
//! - **Signal** ([`crate::signal`]): what ICE sends to peers and what they send back.
//!
//! All of it runs on the WireGuard port: the workers hand over STUN and TURN datagrams
//! ([`Device::stun_inbox`]) and keep WireGuard for themselves. Datagrams no part takes are
//! counted (`drops.stun_ignored`).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;

use is::Candidate;
use swiftgate_proto::keys::PublicKey;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    ice::{Ice, Message, Nominated},
    signal,
    stun::{REFRESH, Reflexive, stun_host_port},
    turn::{Allocation, AllocationState},
    wg::{Device, EndpointOrigin, Inbound, Via},
};

/// A TURN server as the management server announces it, with its credentials (the
/// password is never shown: `Debug` leaves it out).
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// `turn:host:port[?transport=udp]` (other transports are not used).
    pub uri: String,
    /// TURN REST-API username (`<expiry>:<peer>`).
    pub username: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("uri", &self.uri)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The servers the management server announces for connecting to peers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Servers {
    /// `stun:` URIs.
    pub stuns: Vec<String>,
    /// TURN servers.
    pub turns: Vec<TurnServer>,
}

/// Local addresses worth offering (no loopback, link-local or overlay addresses), with their
/// prefixes (to recognise on-link candidates).
pub fn local_candidates(exclude_iface: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        if a.interface_name == exclude_iface {
            continue;
        }
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let net = match (
            addr.as_sockaddr_in(),
            mask.as_sockaddr_in(),
            addr.as_sockaddr_in6(),
            mask.as_sockaddr_in6(),
        ) {
            (Some(a), Some(m), _, _) => {
                let len = u32::from(m.ip()).count_ones() as u8;
                IpNet::new(IpAddr::V4(a.ip()), len).ok()
            }
            (_, _, Some(a), Some(m)) => {
                let len = u128::from(m.ip()).count_ones() as u8;
                IpNet::new(IpAddr::V6(a.ip()), len).ok()
            }
            _ => None,
        };
        let Some(net) = net else { continue };
        let ip = net.addr();
        let link_local = match ip {
            IpAddr::V4(v) => v.is_link_local(),
            IpAddr::V6(v) => v.is_unicast_link_local(),
        };
        if !ip.is_loopback() && !link_local {
            out.push(net);
        }
    }
    out
}

/// How often local addresses are listed again (a new network is then offered).
const HOSTS_EVERY: Duration = Duration::from_secs(10);
/// How often a relay is asked whether its allocation still exists while a peer has no
/// working pair.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long a failed allocation waits before it is tried again (after the first retry).
const ALLOCATION_RETRY: Duration = Duration::from_secs(5);
/// The longest wait before a failed allocation is tried again.
const ALLOCATION_RETRY_MAX: Duration = Duration::from_secs(60);

/// The `host:port` of a `turn:` URI over UDP (`?transport=udp` or no transport); `None` for
/// `turns:` and TCP.
pub fn turn_host_port(uri: &str) -> Option<(String, u16)> {
    let rest = uri.strip_prefix("turn:")?;
    let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !query.is_empty() && !query.split('&').any(|kv| kv == "transport=udp") {
        return None;
    }
    stun_host_port(&format!("stun:{addr}"))
}

/// Resolves `(host, port)` pairs (a name that does not resolve is logged and skipped).
async fn resolve(hosts: impl IntoIterator<Item = (String, u16)>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (host, port) in hosts {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                out.extend(addrs.map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())))
            }
            Err(e) => tracing::warn!(%host, error = %e, "server does not resolve"),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// 96 random bits from the operating system (a STUN transaction id).
fn random_id() -> [u8; 12] {
    let mut id = [0u8; 12];
    if getrandom::fill(&mut id).is_err() {
        // No OS randomness: still unique per request, though guessable; logged.
        tracing::warn!("no OS randomness for STUN transaction ids");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id.copy_from_slice(&t.to_le_bytes()[..12]);
    }
    id
}

/// One relay: the allocation and what has been offered of it.
struct Relay {
    alloc: Allocation,
    uri: String,
    /// The relayed address offered as a candidate.
    offered: Option<SocketAddr>,
    /// Peer addresses a channel was asked for (checks through the relay went there).
    bound: Vec<SocketAddr>,
    /// When the server was last asked whether the allocation still exists.
    probed: Option<std::time::Instant>,
    /// That question: a second Allocate from the same 5-tuple. A server that still has the
    /// allocation refuses it (437); one that lost it (a restart) grants it, and it replaces
    /// the lost one. (A Refresh would ask too, but coturn answers a Refresh for an
    /// allocation it does not have by closing the 5-tuple's session a moment later, taking
    /// the next allocation with it.)
    probe: Option<Allocation>,
    /// The credentials in use (a probe needs them).
    credentials: (String, String),
}

/// Sends what an allocation has queued for its server.
fn flush_relay(device: &Device, r: &mut Relay) {
    let probe = r
        .probe
        .as_mut()
        .map(|p| std::iter::from_fn(|| p.poll_transmit()));
    let queued: Vec<(SocketAddr, Vec<u8>)> = std::iter::from_fn(|| r.alloc.poll_transmit())
        .chain(probe.into_iter().flatten())
        .collect();
    for (to, d) in queued {
        if let Err(e) = device.send_from_port(to, &d) {
            tracing::debug!(server = %to, error = %e, "TURN request not sent");
        }
    }
}

/// The driver's state (the I/O is in [`run`]).
struct Driver {
    device: Arc<Device>,
    port: u16,
    overlay: String,
    ice: Ice,
    reflexive: Reflexive,
    relays: Vec<Relay>,
    /// TURN servers whose allocation failed: when to try again, and with what.
    failed: HashMap<SocketAddr, (std::time::Instant, TurnServer)>,
    /// The wait after each server's next failure (none the first time, then doubling from
    /// [`ALLOCATION_RETRY`] up to [`ALLOCATION_RETRY_MAX`]; back to none once an allocation
    /// succeeds).
    retry_wait: HashMap<SocketAddr, Duration>,
    turns: Vec<TurnServer>,
    hosts: Vec<SocketAddr>,
    srflx: Vec<SocketAddr>,
    /// Nominations through a relay waiting for their channel.
    pending: HashMap<PublicKey, Nominated>,
    channels: HashMap<(SocketAddr, u16), SocketAddr>,
    signal_out: mpsc::Sender<(PublicKey, Message)>,
}

impl Driver {
    /// The WireGuard port's address on the interface that reaches `family`'s default route
    /// (the base of server-reflexive and relayed candidates): the first local address of
    /// the family.
    fn base(&self, v4: bool) -> Option<SocketAddr> {
        self.hosts.iter().copied().find(|h| h.is_ipv4() == v4)
    }

    fn refresh_hosts(&mut self) {
        let now: Vec<SocketAddr> = local_candidates(&self.overlay)
            .into_iter()
            .map(|n| SocketAddr::new(n.addr(), self.port))
            .collect();
        for gone in self.hosts.iter().filter(|h| !now.contains(h)) {
            tracing::info!(address = %gone, "local address gone");
            self.ice.remove_local(*gone);
        }
        for new in now.iter().filter(|h| !self.hosts.contains(h)) {
            match Candidate::host(*new, "udp") {
                Ok(c) => self.ice.add_local(c),
                Err(e) => tracing::debug!(address = %new, error = %e, "not a host candidate"),
            }
        }
        self.hosts = now;
    }

    fn set_srflx(&mut self, now: Vec<SocketAddr>) {
        for gone in self.srflx.iter().filter(|a| !now.contains(a)) {
            self.ice.remove_local(*gone);
        }
        for new in now.iter().filter(|a| !self.srflx.contains(a)) {
            let Some(base) = self.base(new.is_ipv4()) else {
                continue;
            };
            if let Ok(c) = Candidate::server_reflexive(*new, base, "udp") {
                self.ice.add_local(c);
            }
        }
        self.srflx = now;
    }

    /// Starts, renews or drops allocations for the announced TURN servers.
    async fn set_turns(&mut self, turns: Vec<TurnServer>, now: std::time::Instant) {
        let mut wanted: Vec<(SocketAddr, &TurnServer)> = Vec::new();
        for t in &turns {
            let Some(hp) = turn_host_port(&t.uri) else {
                tracing::debug!(uri = %t.uri, "TURN server not over UDP: not used");
                continue;
            };
            for a in resolve([hp]).await {
                wanted.push((a, t));
            }
        }
        let mut i = 0;
        while i < self.relays.len() {
            let server = self.relays[i].alloc.server();
            if wanted.iter().any(|(a, _)| *a == server) {
                i += 1;
                continue;
            }
            let mut r = self.relays.remove(i);
            tracing::info!(server = %server, "TURN server withdrawn: releasing");
            r.alloc.release();
            flush_relay(&self.device, &mut r);
            if let Some(a) = r.offered {
                self.ice.remove_local(a);
            }
        }
        for (addr, t) in wanted {
            match self.relays.iter_mut().find(|r| r.alloc.server() == addr) {
                // Renewed credentials: for the next allocation (and a probe); a granted one
                // keeps its own until the server refuses them.
                Some(r) => {
                    r.alloc
                        .set_credentials(t.username.clone(), t.password.clone());
                    r.credentials = (t.username.clone(), t.password.clone());
                }
                None => match self.failed.get_mut(&addr) {
                    // Waiting to try again: with the newest credentials.
                    Some((_, waiting)) => *waiting = t.clone(),
                    None => self.allocate(addr, t.clone(), now),
                },
            }
        }
        self.failed.retain(|a, (_, t)| {
            turns.iter().any(|n| n.uri == t.uri)
                && self.relays.iter().all(|r| r.alloc.server() != *a)
        });
        self.turns = turns;
    }

    fn allocate(&mut self, addr: SocketAddr, t: TurnServer, now: std::time::Instant) {
        tracing::info!(server = %addr, "allocating a TURN relay");
        self.relays.push(Relay {
            alloc: Allocation::new(addr, t.username.clone(), t.password.clone(), now, random_id),
            uri: t.uri,
            offered: None,
            bound: Vec::new(),
            probed: None,
            probe: None,
            credentials: (t.username, t.password),
        });
    }

    /// Gives every allocation back (a Refresh with LIFETIME 0, sent now): for a clean stop.
    fn release_all(&mut self) {
        for r in &mut self.relays {
            tracing::info!(server = %r.alloc.server(), "releasing the TURN allocation");
            r.alloc.release();
            flush_relay(&self.device, r);
        }
        self.relays.clear();
    }

    /// Failed allocations whose wait is over are tried again.
    fn retry_failed(&mut self, now: std::time::Instant) {
        let due: Vec<SocketAddr> = self
            .failed
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            if let Some((_, t)) = self.failed.remove(&addr) {
                self.allocate(addr, t, now);
            }
        }
    }

    /// When a peer has no working pair, every relay is asked whether its allocation still
    /// exists (at most every [`PROBE_EVERY`] each): an allocation the server lost (a restart)
    /// is found at once and replaced, rather than at its next scheduled Refresh minutes
    /// later. Both sides' relays matter: a pair may run through either.
    fn probe_relays(&mut self, now: std::time::Instant) {
        let stuck = self.ice.peers().any(|(_, p)| {
            p.state == is::IceConnectionState::Disconnected
                || (p.state == is::IceConnectionState::Checking && p.restarts > 0)
        });
        if !stuck {
            return;
        }
        for r in &mut self.relays {
            let due = r.probed.is_none_or(|t| now >= t + PROBE_EVERY);
            if due && r.probe.is_none() && r.alloc.relayed().is_some() {
                tracing::debug!(server = %r.alloc.server(), "a peer has no working pair: checking the allocation");
                r.probed = Some(now);
                let (user, pass) = r.credentials.clone();
                r.probe = Some(Allocation::new(
                    r.alloc.server(),
                    user,
                    pass,
                    now,
                    random_id,
                ));
            }
        }
    }

    /// What a probe found: the allocation is still there (the probe was refused), or the
    /// server lost it and the probe's allocation replaces it.
    fn settle_probes(&mut self) {
        for r in &mut self.relays {
            let Some(probe) = &r.probe else { continue };
            match probe.state() {
                AllocationState::Allocating => {}
                AllocationState::Allocated { .. } => {
                    tracing::info!(server = %r.alloc.server(), "the TURN server lost the allocation: replaced");
                    if let Some(p) = r.probe.take() {
                        r.alloc = p;
                        r.bound.clear();
                    }
                }
                AllocationState::Failed(e) => {
                    tracing::debug!(server = %r.alloc.server(), answer = %e, "the allocation is still there");
                    r.probe = None;
                }
            }
        }
    }

    /// Offers relayed addresses that came up, withdraws those of failed allocations.
    fn sync_relays(&mut self, now: std::time::Instant) {
        let mut i = 0;
        while i < self.relays.len() {
            let failed = matches!(self.relays[i].alloc.state(), AllocationState::Failed(_));
            if failed {
                let r = self.relays.remove(i);
                if let AllocationState::Failed(e) = r.alloc.state() {
                    tracing::warn!(server = %r.alloc.server(), error = %e, uri = %r.uri, "TURN allocation failed");
                }
                let server = r.alloc.server();
                // The first retry is at once: a server that lost the allocation (a restart)
                // takes a new one, and coturn keeps the 5-tuple's session only if it is
                // used straight away (it closes a session left without an allocation a few
                // seconds later, with whatever was allocated in it meanwhile). Repeated
                // failures back off.
                let wait = self.retry_wait.entry(server).or_insert(Duration::ZERO);
                let at = now + *wait;
                *wait = (*wait * 2).clamp(ALLOCATION_RETRY, ALLOCATION_RETRY_MAX);
                if let Some(t) = self.turns.iter().find(|t| t.uri == r.uri) {
                    self.failed.insert(server, (at, t.clone()));
                }
                if let Some(a) = r.offered {
                    self.ice.remove_local(a);
                }
                continue;
            }
            let relayed = self.relays[i].alloc.relayed();
            if relayed != self.relays[i].offered {
                if let Some(old) = self.relays[i].offered.take() {
                    self.ice.remove_local(old);
                }
                if let Some(addr) = relayed
                    && let Some(base) = self.base(addr.is_ipv4())
                    && let Ok(c) = Candidate::relayed(addr, base, "udp")
                {
                    tracing::info!(relayed = %addr, server = %self.relays[i].alloc.server(), "TURN relay allocated");
                    self.retry_wait.remove(&self.relays[i].alloc.server());
                    self.ice.add_local(c);
                    self.relays[i].offered = Some(addr);
                }
            }
            i += 1;
        }
        // Bound channels -> the workers' table.
        let mut channels = HashMap::new();
        for r in &self.relays {
            for peer in &r.bound {
                if let Some(ch) = r.alloc.channel_of(*peer) {
                    channels.insert((r.alloc.server(), ch), *peer);
                }
            }
        }
        if channels != self.channels {
            self.device.set_channels(channels.clone());
            self.channels = channels;
        }
    }

    /// The relay whose relayed address is `addr`.
    fn relay_of(&mut self, addr: SocketAddr) -> Option<&mut Relay> {
        self.relays
            .iter_mut()
            .find(|r| r.alloc.relayed() == Some(addr))
    }

    /// A datagram the workers handed over.
    fn inbound(&mut self, m: Inbound, now: std::time::Instant) {
        let taken = self.take(m, now);
        if !taken {
            self.device.count_stun_ignored();
        }
    }

    fn take(&mut self, m: Inbound, now: std::time::Instant) -> bool {
        // An answer to discovery (a STUN server may be a TURN server too: try this first).
        if let Ok(found) = self.reflexive.answer(m.from, &m.data, now) {
            if let Some(mapped) = found {
                tracing::debug!(server = %m.from, reflexive = %mapped, "mapping seen");
            }
            return true;
        }
        if let Some(i) = self.relays.iter().position(|r| r.alloc.server() == m.from) {
            // An answer to a probe first (its transactions are its own).
            if let Some(p) = &mut self.relays[i].probe
                && p.handle(m.from, &m.data, now).is_ok()
            {
                return true;
            }
            let relayed = self.relays[i].alloc.relayed();
            return match self.relays[i].alloc.handle(m.from, &m.data, now) {
                Ok(None) => true,
                Ok(Some((peer, payload))) => match relayed {
                    // A check (or its answer) through our relay.
                    Some(relayed) => {
                        let taken = self.ice.handle_stun(peer, relayed, &payload, now);
                        tracing::trace!(%peer, %relayed, taken, "datagram through the relay");
                        taken
                    }
                    None => false,
                },
                Err(e) => {
                    tracing::debug!(server = %m.from, error = %e, "TURN datagram ignored");
                    false
                }
            };
        }
        // A check on the WireGuard port itself.
        let to = match m.to {
            Some(ip) => SocketAddr::new(ip, self.port),
            None => match self.base(m.from.is_ipv4()) {
                Some(b) => b,
                None => return false,
            },
        };
        self.ice.handle_stun(m.from, to, &m.data, now)
    }

    /// Sends what ICE queued: checks from the port, or through a relay.
    fn transmit(&mut self, now: std::time::Instant) {
        while let Some(d) = self.ice.poll_transmit() {
            let device = self.device.clone();
            // Relay to relay is not tried: coturn refuses a permission for a relayed address
            // of its own that it no longer has (a peer's stale candidate after a restart)
            // with 400 and drops our allocation with it. Pairs from a host or reflexive
            // candidate to the peer's relay, and from our relay to the peer's mappings, cover
            // the NATs that need a relay.
            let to_relay = self.ice.is_remote_relay(d.destination);
            if let Some(r) = self.relay_of(d.source) {
                if to_relay {
                    continue;
                }
                if !r.bound.contains(&d.destination) && r.bound.len() < 64 {
                    r.bound.push(d.destination);
                    r.alloc.bind(d.destination, now);
                }
                let mut out = Vec::with_capacity(d.contents.len() + 36);
                if r.alloc.encode_to(d.destination, &d.contents, &mut out) {
                    let _ = device.send_from_port(r.alloc.server(), &out);
                }
                continue;
            }
            if let Err(e) = device.send_from_port(d.destination, &d.contents) {
                tracing::debug!(to = %d.destination, error = %e, "ICE check not sent");
            }
        }
    }

    /// Applies nominations: the peer's WireGuard path follows the selected pair.
    fn paths(&mut self) {
        while let Some((peer, n)) = self.ice.poll_nominated() {
            if let Some(n) = n {
                self.pending.insert(peer, n);
            }
        }
        let pending: Vec<(PublicKey, Nominated)> =
            self.pending.iter().map(|(k, v)| (*k, *v)).collect();
        for (peer, n) in pending {
            let relay = self
                .relays
                .iter()
                .find(|r| r.alloc.relayed() == Some(n.local))
                .map(|r| (r.alloc.server(), r.alloc.channel_of(n.remote)));
            let (via, origin) = match relay {
                // Through our relay: once the channel is bound.
                Some((server, Some(channel))) => {
                    (Some(Via { server, channel }), EndpointOrigin::Relay)
                }
                Some((_, None)) => continue,
                None => (None, self.ice.remote_origin(&peer, n.remote)),
            };
            self.device.set_path(peer.as_bytes(), n.remote, via, origin);
            self.pending.remove(&peer);
        }
    }

    /// Everything queued, sent.
    fn flush(&mut self, now: std::time::Instant) {
        for (to, msg) in self.reflexive.poll(now) {
            if let Err(e) = self.device.send_from_port(to, &msg) {
                tracing::debug!(server = %to, error = %e, "STUN request not sent");
            }
        }
        self.retry_failed(now);
        self.probe_relays(now);
        for r in &mut self.relays {
            r.alloc.handle_timeout(now);
            if let Some(p) = &mut r.probe {
                p.handle_timeout(now);
            }
            flush_relay(&self.device, r);
        }
        self.settle_probes();
        self.sync_relays(now);
        self.ice.handle_timeout(now);
        self.transmit(now);
        while let Some((to, m)) = self.ice.poll_signal() {
            if self.signal_out.try_send((to, m)).is_err() {
                tracing::debug!(peer = %to, "signal outbox full: message dropped");
            }
        }
        self.paths();
        let seen = self.reflexive.addresses();
        if seen != self.srflx {
            tracing::info!(reflexive = ?seen, "server-reflexive addresses");
            self.device.set_reflexive(seen.clone());
            self.set_srflx(seen);
        }
        // Published when it changed, not on every datagram.
        if self.ice.take_changed() {
            self.device.set_ice(
                self.ice
                    .peers()
                    .map(|(k, p)| (*k.as_bytes(), p))
                    .collect::<HashMap<_, _>>(),
            );
        }
        self.device
            .add_signal_ignored(std::mem::take(&mut self.ice.ignored));
    }

    fn next_due(&mut self) -> Option<std::time::Instant> {
        let mut due = [self.ice.poll_timeout(), self.reflexive.next_due()]
            .into_iter()
            .flatten()
            .min();
        let relays = self.relays.iter().flat_map(|r| {
            [
                r.alloc.poll_timeout(),
                r.probe.as_ref().and_then(|p| p.poll_timeout()),
            ]
            .into_iter()
            .flatten()
        });
        let retries = self.failed.values().map(|(at, _)| *at);
        for t in relays.chain(retries) {
            due = Some(due.map_or(t, |d| d.min(t)));
        }
        due
    }
}

/// Channels into the driver.
pub struct Inputs {
    /// The peers to connect to (from the network map).
    pub peers: watch::Receiver<Vec<PublicKey>>,
    /// The announced servers.
    pub servers: watch::Receiver<Servers>,
    /// What Signal brings.
    pub signal_in: mpsc::Receiver<signal::Event>,
    /// What to send through Signal.
    pub signal_out: mpsc::Sender<(PublicKey, Message)>,
}

/// Runs the driver until the peer list closes (the agent stopping), then releases the
/// allocations.
pub async fn run(device: Arc<Device>, me: PublicKey, overlay: String, inputs: Inputs) {
    let Inputs {
        mut peers,
        mut servers,
        mut signal_in,
        signal_out,
    } = inputs;
    let Some(mut inbox) = device.stun_inbox(256) else {
        tracing::warn!("connection driver already running");
        return;
    };
    let port = device.listen_port();
    let mut d = Driver {
        device: device.clone(),
        port,
        overlay,
        ice: Ice::new(&me),
        reflexive: Reflexive::new(Vec::new(), random_id),
        relays: Vec::new(),
        failed: HashMap::new(),
        retry_wait: HashMap::new(),
        turns: Vec::new(),
        hosts: Vec::new(),
        srflx: Vec::new(),
        pending: HashMap::new(),
        channels: HashMap::new(),
        signal_out,
    };
    d.refresh_hosts();
    let mut current = servers.borrow_and_update().clone();
    let stun_hosts = |s: &Servers| -> Vec<(String, u16)> {
        s.stuns.iter().filter_map(|u| stun_host_port(u)).collect()
    };
    d.reflexive.set_servers(resolve(stun_hosts(&current)).await);
    d.set_turns(current.turns.clone(), std::time::Instant::now())
        .await;
    let want = peers.borrow_and_update().clone();
    d.ice.set_peers(&want, std::time::Instant::now());
    let mut next_hosts = Instant::now() + HOSTS_EVERY;
    // Names are resolved again every REFRESH (sooner while none resolved), so a server that
    // moves, or a resolver that was not up at start, is followed.
    let mut resolve_every = Duration::from_secs(2);
    let mut next_resolve = Instant::now() + resolve_every;
    loop {
        let now = std::time::Instant::now();
        d.flush(now);
        let due = d
            .next_due()
            .map(Instant::from_std)
            .unwrap_or(next_resolve)
            .min(next_resolve)
            .min(next_hosts);
        tokio::select! {
            changed = peers.changed() => {
                if changed.is_err() {
                    // The agent is stopping: the allocations are given back, so a restart
                    // from the same port is not refused (437) for their lifetime.
                    d.release_all();
                    return;
                }
                let want = peers.borrow_and_update().clone();
                d.ice.set_peers(&want, std::time::Instant::now());
            }
            changed = servers.changed() => {
                if changed.is_err() {
                    return;
                }
                current = servers.borrow_and_update().clone();
                d.reflexive.set_servers(resolve(stun_hosts(&current)).await);
                d.set_turns(current.turns.clone(), std::time::Instant::now()).await;
            }
            Some(ev) = signal_in.recv() => match ev {
                signal::Event::Connected => d.ice.reoffer_all(),
                signal::Event::Message(from, m) => d.ice.on_signal(from, m, std::time::Instant::now()),
            },
            Some(m) = inbox.recv() => d.inbound(m, std::time::Instant::now()),
            _ = tokio::time::sleep_until(due) => {
                let now = Instant::now();
                if now >= next_hosts {
                    d.refresh_hosts();
                    next_hosts = now + HOSTS_EVERY;
                }
                if now >= next_resolve {
                    let found = resolve(stun_hosts(&current)).await;
                    resolve_every = if found.is_empty() && !current.stuns.is_empty() {
                        (resolve_every * 2).min(REFRESH)
                    } else {
                        REFRESH
                    };
                    next_resolve = now + resolve_every;
                    d.reflexive.set_servers(found);
                    // The TURN servers' names too.
                    let turns = d.turns.clone();
                    d.set_turns(turns, std::time::Instant::now()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_uris_over_udp_only() {
        assert_eq!(
            turn_host_port("turn:turn.example.org:3478?transport=udp"),
            Some(("turn.example.org".into(), 3478))
        );
        assert_eq!(
            turn_host_port("turn:192.0.2.1"),
            Some(("192.0.2.1".into(), 3478))
        );
        assert_eq!(turn_host_port("turn:192.0.2.1:3478?transport=tcp"), None);
        assert_eq!(turn_host_port("turns:192.0.2.1:5349"), None);
        assert_eq!(turn_host_port("stun:192.0.2.1"), None);
    }
}
