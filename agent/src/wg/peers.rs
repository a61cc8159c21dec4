//! WireGuard peers and cryptokey routing: which peer a destination belongs to (longest prefix
//! over allowed IPs), and whether a decrypted packet's source may come from the peer that sent it.

use std::time::Duration;
use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use boringtun::noise::{Tunn, rate_limiter::RateLimiter};
use ipnet::IpNet;

/// The maps of the per-packet lookups. Their keys come from the configuration, never from
/// the network, so a fast non-cryptographic hash is safe here (SipHash was a measurable share
/// of the per-packet cost).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A peer's live state: the noise session and where it was last heard from.
pub struct PeerState {
    /// boringtun's per-peer state machine (handshakes, sessions, timers).
    pub tunn: Tunn,
    /// Current endpoint (configured, then roaming with authenticated packets).
    pub endpoint: Option<SocketAddr>,
    /// Where the endpoint came from.
    pub origin: EndpointOrigin,
    /// Since when the peer has been trying its current endpoint (or waiting for one).
    pub trying_since: std::time::Instant,
    /// The TURN channel the endpoint is reached through (`None`: directly). The endpoint
    /// is then the peer's address as the TURN server sees it.
    pub relay: Option<Via>,
}

/// A TURN channel: WireGuard datagrams for the peer go to `server` behind a ChannelData
/// header naming `channel` (RFC 8656 §12.4), and the server's ChannelData on `channel` are the
/// peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Via {
    /// The TURN server (where our allocation is).
    pub server: SocketAddr,
    /// The channel number bound to the peer's address (0x4000..=0x4FFF).
    pub channel: u16,
}

impl Via {
    /// The ChannelData header for a payload of `len` bytes.
    pub fn header(&self, len: usize) -> [u8; 4] {
        let c = self.channel.to_be_bytes();
        let l = (len as u16).to_be_bytes();
        [c[0], c[1], l[0], l[1]]
    }
}

/// The channel and payload of a ChannelData message (RFC 8656 §12.4): channel numbers
/// 0x4000..=0x4FFF, a length that fits (UDP needs no padding, some servers add it).
pub fn channel_data(d: &[u8]) -> Option<(u16, &[u8])> {
    let channel = u16::from_be_bytes(d.get(..2)?.try_into().ok()?);
    let len = u16::from_be_bytes(d.get(2..4)?.try_into().ok()?) as usize;
    if !(0x4000..=0x4fff).contains(&channel) {
        return None;
    }
    Some((channel, d.get(4..4 + len)?))
}

/// Where a peer's endpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointOrigin {
    /// None yet.
    None,
    /// The configuration.
    Configured,
    /// The pair ICE nominated, to one of the peer's local addresses (a host candidate).
    Host,
    /// The pair ICE nominated, to the peer's NAT mapping (server- or peer-reflexive).
    Srflx,
    /// Learnt from the peer's authenticated packets (roaming).
    Learnt,
    /// The pair ICE nominated, through a TURN relay (ours or the peer's).
    Relay,
}

/// A peer's connection as the rest of the agent sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Connection {
    /// A handshake completed within the last 180 s (WireGuard's REJECT_AFTER_TIME).
    Connected,
    /// Trying an endpoint, or waiting for one, for less than 90 s (REKEY_ATTEMPT_TIME).
    Connecting,
    /// No handshake after trying for 90 s.
    Failed,
}

/// The connection state from the time since the last handshake and since the current
/// endpoint has been tried.
pub fn connection(last_handshake: Option<Duration>, trying_for: Duration) -> Connection {
    match last_handshake {
        Some(hs) if hs < Duration::from_secs(180) => Connection::Connected,
        _ if trying_for < Duration::from_secs(90) => Connection::Connecting,
        _ => Connection::Failed,
    }
}

/// One configured peer.
pub struct Peer {
    /// Slot: stable per public key while the agent runs; the noise index is `slot << 8 | n`.
    pub slot: u32,
    /// Display name.
    pub name: String,
    /// Public key.
    pub public: [u8; 32],
    /// Settings the session was built with (a change rebuilds it).
    pub settings: PeerSettings,
    /// Live state (shared with the entry that replaces this one when only the name changes).
    pub state: Arc<Mutex<PeerState>>,
}

/// What defines a peer's session.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// Pre-shared key.
    pub psk: Option<[u8; 32]>,
    /// Persistent keepalive (seconds).
    pub keepalive: Option<u16>,
    /// Configured endpoint.
    pub endpoint: Option<SocketAddr>,
}

/// Longest-prefix match over a handful of prefix lengths: one hash lookup per distinct length.
#[derive(Default, Clone)]
pub struct Lpm {
    /// (prefix length, v4?) in descending length order, each with its map.
    levels: Vec<(u8, bool, HashMap<u128, u32>)>,
}

fn key(a: IpAddr, len: u8) -> (u128, bool) {
    match a {
        IpAddr::V4(v) => {
            let x = u32::from(v) as u128;
            let mask = if len == 0 {
                0
            } else {
                (u32::MAX << (32 - len as u32)) as u128
            };
            (x & mask, true)
        }
        IpAddr::V6(v) => {
            let x = u128::from(v);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len as u32)
            };
            (x & mask, false)
        }
    }
}

impl Lpm {
    /// Inserts a prefix (a later insert of the same prefix wins).
    pub fn insert(&mut self, p: IpNet, value: u32) {
        let (k, v4) = key(p.addr(), p.prefix_len());
        let len = p.prefix_len();
        match self
            .levels
            .iter_mut()
            .find(|(l, f, _)| *l == len && *f == v4)
        {
            Some((_, _, m)) => {
                m.insert(k, value);
            }
            None => {
                let mut m = HashMap::default();
                m.insert(k, value);
                self.levels.push((len, v4, m));
                self.levels.sort_by_key(|l| std::cmp::Reverse(l.0));
            }
        }
    }

    /// The value of the longest prefix containing `a`.
    pub fn lookup(&self, a: IpAddr) -> Option<u32> {
        let v4 = a.is_ipv4();
        self.levels
            .iter()
            .filter(|(_, f, _)| *f == v4)
            .find_map(|(len, _, m)| m.get(&key(a, *len).0).copied())
    }
}

/// An immutable snapshot of the peers; replaced as a whole on reconfiguration.
#[derive(Default)]
pub struct PeerTable {
    /// By slot.
    pub by_slot: HashMap<u32, Arc<Peer>>,
    /// By public key.
    pub by_key: HashMap<[u8; 32], Arc<Peer>>,
    /// Allowed IPs -> slot.
    pub routes: Lpm,
    /// Allowed IPs by slot.
    pub allowed: HashMap<u32, Vec<IpNet>>,
}

impl PeerTable {
    /// Builds a table from peers and their allowed IPs.
    pub fn new(peers: impl IntoIterator<Item = (Arc<Peer>, Vec<IpNet>)>) -> Self {
        let mut t = PeerTable::default();
        for (p, allowed) in peers {
            for a in &allowed {
                t.routes.insert(*a, p.slot);
            }
            t.allowed.insert(p.slot, allowed);
            t.by_key.insert(p.public, p.clone());
            t.by_slot.insert(p.slot, p);
        }
        t
    }

    /// A peer's allowed IPs.
    pub fn allowed_of(&self, slot: u32) -> &[IpNet] {
        self.allowed.get(&slot).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The peer a packet to `dst` goes to.
    pub fn route(&self, dst: IpAddr) -> Option<&Arc<Peer>> {
        self.by_slot.get(&self.routes.lookup(dst)?)
    }

    /// The peer for a receiver index.
    pub fn by_index(&self, idx: u32) -> Option<&Arc<Peer>> {
        self.by_slot.get(&(idx >> 8))
    }
}

/// Builds a new peer.
pub fn new_peer(
    slot: u32,
    name: String,
    public: [u8; 32],
    settings: PeerSettings,
    private: &boringtun::x25519::StaticSecret,
    limiter: &Arc<RateLimiter>,
) -> Peer {
    let tunn = Tunn::new(
        private.clone(),
        boringtun::x25519::PublicKey::from(public),
        settings.psk,
        settings.keepalive,
        slot,
        Some(limiter.clone()),
    );
    Peer {
        slot,
        name,
        public,
        state: Arc::new(Mutex::new(PeerState {
            tunn,
            endpoint: settings.endpoint,
            origin: if settings.endpoint.is_some() {
                EndpointOrigin::Configured
            } else {
                EndpointOrigin::None
            },
            trying_since: std::time::Instant::now(),
            relay: None,
        })),
        settings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut l = Lpm::default();
        l.insert("100.64.0.0/10".parse().unwrap(), 1);
        l.insert("100.64.0.2/32".parse().unwrap(), 2);
        l.insert("192.0.2.0/24".parse().unwrap(), 3);
        l.insert("fd00::/8".parse().unwrap(), 4);
        l.insert("0.0.0.0/0".parse().unwrap(), 5);
        let q = |s: &str| l.lookup(s.parse().unwrap());
        assert_eq!(q("100.64.0.2"), Some(2));
        assert_eq!(q("100.64.9.9"), Some(1));
        assert_eq!(q("192.0.2.77"), Some(3));
        assert_eq!(q("198.51.100.1"), Some(5));
        assert_eq!(q("fd00::1"), Some(4));
        assert_eq!(q("2001:db8::1"), None);
    }
}

#[cfg(test)]
mod connection_tests {
    use super::*;

    #[test]
    fn connection_states_follow_wireguard_timers() {
        let s = Duration::from_secs;
        assert_eq!(connection(Some(s(5)), s(500)), Connection::Connected);
        assert_eq!(connection(Some(s(179)), s(0)), Connection::Connected);
        assert_eq!(connection(Some(s(181)), s(10)), Connection::Connecting);
        assert_eq!(connection(None, s(89)), Connection::Connecting);
        assert_eq!(connection(None, s(90)), Connection::Failed);
        assert_eq!(connection(Some(s(400)), s(120)), Connection::Failed);
    }
}
