//! The agent's typed configuration and its validation: the file front door.
//!
//! [`FileConfig`] is what a TOML file says (the only place the agent parses rule text, through
//! `swiftgate-rules`); [`AgentConfig::validate`] turns it into an [`AgentConfig`] whose every
//! reference resolves, or an error naming what is wrong. Nothing is applied until validation
//! succeeds, so a bad file never replaces a good one. The other front door, the management
//! server's network map, builds the same [`AgentConfig`] typed ([`crate::netmap`]); both start
//! from [`AgentConfig::local`].

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use swiftgate_common::CtTimeouts;
use swiftgate_proto::keys::{PresharedKey, PrivateKey, PublicKey};
use swiftgate_rules::RuleError;

use crate::wg::{WgConfig, WgPeer};

/// Errors in a configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("{0}")]
    Parse(String),
    /// A semantic problem, with the path of the offending item.
    #[error("{at}: {msg}")]
    Invalid {
        /// Where (e.g. `policies[2].ports[0]`).
        at: String,
        /// What.
        msg: String,
    },
}

fn invalid(at: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        at: at.into(),
        msg: msg.into(),
    }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Interfaces and addresses.
    pub interface: InterfaceConfig,
    /// Overlay peers.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Networks routed by this peer.
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    /// Access policies.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Connection tracking under pressure: sizes, shares, timeouts.
    #[serde(default)]
    pub conntrack: ConntrackConfig,
}

/// `[conntrack]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConntrackConfig {
    /// Table size, IPv4 flows (default 262144; `interface.conntrack_capacity` is the older
    /// spelling).
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Table size, IPv6 flows (default: a quarter of `capacity`, at least 1024).
    #[serde(default)]
    pub capacity_v6: Option<u32>,
    /// The most one source (an overlay peer, a LAN host on Site-to-VPN) may hold of a table
    /// and of the masquerade ports, in percent (default 25; 100: no per-source limit).
    #[serde(default)]
    pub source_share: Option<u8>,
    /// Log a warning when a table is fuller than this, in percent (default 90).
    #[serde(default)]
    pub warn_percent: Option<u8>,
    /// Idle timeouts by protocol and TCP state.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
}

/// `[conntrack.timeouts]`, in seconds (see [`CtTimeouts`] for the defaults).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP handshake not completed.
    pub tcp_syn: Option<u32>,
    /// Established TCP.
    pub tcp_established: Option<u32>,
    /// TCP closed in one direction.
    pub tcp_fin_wait: Option<u32>,
    /// TCP closed both ways or reset.
    pub tcp_close: Option<u32>,
    /// UDP and others, unreplied.
    pub udp_unreplied: Option<u32>,
    /// UDP and others, replied.
    pub udp_replied: Option<u32>,
    /// ICMP echo.
    pub icmp: Option<u32>,
}

/// The longest idle timeout accepted (30 days).
const MAX_TIMEOUT: u32 = 30 * 86_400;

impl TimeoutsConfig {
    fn validate(&self) -> Result<CtTimeouts, ConfigError> {
        let d = CtTimeouts::DEFAULT;
        let pick = |v: Option<u32>, default: u32, name: &str| match v {
            None => Ok(default),
            Some(t) if (1..=MAX_TIMEOUT).contains(&t) => Ok(t),
            Some(t) => Err(invalid(
                format!("conntrack.timeouts.{name}"),
                format!("{t} is outside 1..={MAX_TIMEOUT} seconds"),
            )),
        };
        Ok(CtTimeouts {
            tcp_syn: pick(self.tcp_syn, d.tcp_syn, "tcp_syn")?,
            tcp_established: pick(self.tcp_established, d.tcp_established, "tcp_established")?,
            tcp_fin_wait: pick(self.tcp_fin_wait, d.tcp_fin_wait, "tcp_fin_wait")?,
            tcp_close: pick(self.tcp_close, d.tcp_close, "tcp_close")?,
            udp_unreplied: pick(self.udp_unreplied, d.udp_unreplied, "udp_unreplied")?,
            udp_replied: pick(self.udp_replied, d.udp_replied, "udp_replied")?,
            icmp: pick(self.icmp, d.icmp, "icmp")?,
            _pad: 0,
        })
    }
}

/// `[interface]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Overlay interface name.
    pub overlay: String,
    /// Whether the overlay interface has Ethernet headers.
    #[serde(default)]
    pub overlay_l2: bool,
    /// Run the XDP stage in front of the TC program on an Ethernet overlay interface
    /// (established flows without an skb; needs `overlay_l2` and driver-mode XDP on the
    /// overlay, and LAN interfaces that accept XDP redirects).
    #[serde(default)]
    pub xdp: bool,
    /// Own overlay addresses with the overlay prefix length.
    pub addresses: Vec<String>,
    /// LAN interfaces.
    #[serde(default)]
    pub lan: Vec<String>,
    /// Overlay MTU (MSS clamping).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// bpffs directory for pinned maps and links.
    #[serde(default)]
    pub pin_path: Option<PathBuf>,
    /// Conntrack table size (IPv4 flows); the older spelling of `conntrack.capacity`.
    #[serde(default)]
    pub conntrack_capacity: Option<u32>,
    /// The older spelling of `conntrack.capacity_v6`.
    #[serde(default)]
    pub conntrack_capacity_v6: Option<u32>,
    /// Masquerade port range, e.g. "1024-65535".
    #[serde(default)]
    pub nat_ports: Option<String>,
    /// none | drops | all.
    #[serde(default)]
    pub flow_events: Option<String>,
    /// WireGuard private key (base64). With it the agent creates the overlay TUN and runs
    /// WireGuard itself; without it, it attaches to an existing interface.
    #[serde(default)]
    pub private_key: Option<String>,
    /// File holding the private key (base64), instead of `private_key`.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// WireGuard UDP port (default 51820; 0 picks one).
    #[serde(default)]
    pub listen_port: Option<u16>,
    /// WireGuard worker threads (default: one per CPU).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Control socket for `swiftgate status` and friends.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
}

/// `[[peers]]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Unique name.
    pub name: String,
    /// Overlay addresses (host addresses).
    pub ips: Vec<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
    /// WireGuard public key (base64).
    #[serde(default)]
    pub public_key: Option<String>,
    /// WireGuard pre-shared key (base64).
    #[serde(default)]
    pub preshared_key: Option<String>,
    /// Endpoint `ip:port`, if known (else the peer must reach us first).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Persistent keepalive in seconds.
    #[serde(default)]
    pub keepalive: Option<u16>,
    /// Further prefixes routed to this peer (e.g. a remote routing peer's networks).
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

/// `[[networks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Unique name.
    pub name: String,
    /// Masquerade flows to this Network's resources (default on).
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// Resources.
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
}

fn yes() -> bool {
    true
}

/// `[[networks.resources]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Unique name.
    pub name: String,
    /// One IP or a CIDR.
    pub address: String,
    /// Resource groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[[policies]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name.
    pub name: String,
    /// Source groups or names.
    pub sources: Vec<String>,
    /// Destination groups or names, or "self".
    pub destinations: Vec<String>,
    /// all | tcp | udp | icmp.
    #[serde(default = "all")]
    pub protocol: String,
    /// Ports and ranges.
    #[serde(default)]
    pub ports: Vec<String>,
    /// accept | drop.
    #[serde(default = "accept")]
    pub action: String,
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also allow destinations -> sources.
    #[serde(default)]
    pub bidirectional: bool,
}

fn all() -> String {
    "all".into()
}
fn accept() -> String {
    "accept".into()
}

pub use swiftgate_rules::{Action, PortRange, Protocol};

/// What a name in a policy refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// An overlay peer (index into [`AgentConfig::peers`]).
    Peer(usize),
    /// A resource (index into [`AgentConfig::resources`]).
    Resource(usize),
    /// The routing peer itself.
    SelfPeer,
    /// An address range named only as a rule's source (index into
    /// [`AgentConfig::source_prefixes`]): a managed map's LAN prefix of a Site-to-VPN rule, or a
    /// source range that is no known peer. Never a destination.
    Prefix(usize),
}

/// A validated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Name.
    pub name: String,
    /// Host prefixes (/32, /128).
    pub ips: Vec<IpNet>,
    /// Groups.
    pub groups: BTreeSet<String>,
}

/// A validated resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Name.
    pub name: String,
    /// Network name.
    pub network: String,
    /// Network index (0-based), the network id is index + 1.
    pub network_index: usize,
    /// Prefix.
    pub prefix: IpNet,
    /// Groups.
    pub groups: BTreeSet<String>,
    /// Masquerade (from its Network).
    pub masquerade: bool,
}

/// A validated, enabled rule (bidirectional policies produce two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Policy name.
    pub name: String,
    /// Policy id (stable hash of the name; never 0).
    pub id: u32,
    /// Resolved sources.
    pub sources: BTreeSet<Endpoint>,
    /// Resolved destinations.
    pub destinations: BTreeSet<Endpoint>,
    /// Protocol.
    pub protocol: Protocol,
    /// Port ranges (empty: all ports).
    pub ports: Vec<PortRange>,
    /// Action.
    pub action: Action,
}

/// Which flow events the programs emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowEvents {
    /// None.
    None,
    /// Drops only.
    #[default]
    Drops,
    /// Starts and drops (ends come from the agent's GC).
    All,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Overlay interface.
    pub overlay: String,
    /// Overlay has Ethernet headers.
    pub overlay_l2: bool,
    /// XDP stage on the overlay interface.
    pub xdp: bool,
    /// Own addresses (host prefixes).
    pub own_addresses: Vec<IpNet>,
    /// Overlay networks (from the own addresses' prefix lengths).
    pub overlay_nets: Vec<IpNet>,
    /// LAN interfaces.
    pub lan: Vec<String>,
    /// Overlay MTU.
    pub mtu: u16,
    /// Pin directory.
    pub pin_path: PathBuf,
    /// Conntrack capacity, IPv4 flows.
    pub conntrack_capacity: u32,
    /// Conntrack capacity, IPv6 flows.
    pub conntrack_capacity_v6: u32,
    /// The most of a conntrack table and of the masquerade ports one source may hold, in
    /// percent (100: no per-source limit).
    pub ct_source_share: u8,
    /// Table use, in percent, above which the agent warns.
    pub ct_warn_percent: u8,
    /// Idle timeouts the garbage collector applies.
    pub ct_timeouts: CtTimeouts,
    /// Masquerade ports.
    pub nat_ports: PortRange,
    /// Flow events.
    pub flow_events: FlowEvents,
    /// Peers.
    pub peers: Vec<Peer>,
    /// Resources (all Networks).
    pub resources: Vec<Resource>,
    /// Source-only address ranges ([`Endpoint::Prefix`]).
    pub source_prefixes: Vec<IpNet>,
    /// Network names, index = network id - 1.
    pub networks: Vec<String>,
    /// Enabled rules.
    pub rules: Vec<Rule>,
    /// WireGuard, when the agent runs the tunnel itself.
    pub wireguard: Option<crate::wg::WgConfig>,
    /// Prefixes to route into the overlay interface (peers' extra allowed IPs).
    pub routes: Vec<IpNet>,
    /// Control socket path.
    pub control_socket: PathBuf,
}

/// Stable id of a name (FNV-1a, 31 bits, never 0).
pub fn stable_id(kind: &str, name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in kind.bytes().chain([0u8]).chain(name.bytes()) {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff).max(1)
}

fn parse_host(s: &str, at: &str) -> Result<IpNet, ConfigError> {
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| invalid(at, format!("`{s}` is not an IP address")))?;
    Ok(IpNet::from(ip))
}

fn parse_prefix(s: &str, at: &str) -> Result<IpNet, ConfigError> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        if n.trunc() != n {
            return Err(invalid(
                at,
                format!("`{s}` has host bits set (did you mean {}?)", n.trunc()),
            ));
        }
        return Ok(n);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(invalid(
        at,
        format!("`{s}` is not an IP address or CIDR prefix"),
    ))
}

/// Why a resource's prefix cannot be routed by this peer (see [`resource_prefix_allowed`]).
/// The messages are the ones both front doors report: the file's validation error, the
/// network map's refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrefixNotAllowed {
    /// The prefix lies inside an overlay network: those addresses are peers.
    #[error("{prefix} is inside the overlay network {overlay}")]
    InsideOverlay {
        /// The resource's prefix.
        prefix: IpNet,
        /// The overlay network that holds it.
        overlay: IpNet,
    },
    /// Multicast, loopback or link-local, or an unspecified (or broadcast) host address.
    #[error("{0} is not routable (multicast, loopback, link-local or unspecified)")]
    NotRoutable(IpNet),
}

/// Whether a resource's prefix can be routed by this peer: not inside the overlay (those
/// addresses are peers), not multicast, loopback, link-local or unspecified as a host. A prefix
/// that *contains* the overlay (`0.0.0.0/0`, an exit node's) is allowed: the overlay's own,
/// longer prefixes win the longest-prefix match for overlay addresses. Both front doors (file
/// and network map) use this one check.
pub fn resource_prefix_allowed(
    prefix: IpNet,
    overlay_nets: &[IpNet],
) -> Result<(), PrefixNotAllowed> {
    if let Some(o) = overlay_nets
        .iter()
        .find(|o| o.contains(&prefix.addr()) && o.prefix_len() <= prefix.prefix_len())
    {
        return Err(PrefixNotAllowed::InsideOverlay {
            prefix,
            overlay: *o,
        });
    }
    let a = prefix.addr();
    let host = prefix.prefix_len() == prefix.max_prefix_len();
    let bad = match a {
        IpAddr::V4(v) => {
            (v.is_multicast() && prefix.prefix_len() >= 4)
                || (v.is_loopback() && prefix.prefix_len() >= 8)
                || (v.is_link_local() && prefix.prefix_len() >= 16)
                || (host && (v.is_unspecified() || v.is_broadcast()))
        }
        IpAddr::V6(v) => {
            (v.is_multicast() && prefix.prefix_len() >= 8)
                || (host && (v.is_loopback() || v.is_unspecified()))
                || (v.is_unicast_link_local() && prefix.prefix_len() >= 10)
        }
    };
    if bad {
        return Err(PrefixNotAllowed::NotRoutable(prefix));
    }
    Ok(())
}

fn check_name(name: &str, at: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(invalid(at, "name is empty"));
    }
    if name == "self" {
        return Err(invalid(
            at,
            "`self` is reserved for the routing peer itself",
        ));
    }
    Ok(())
}

impl AgentConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
        AgentConfig::from_toml(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<AgentConfig, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        AgentConfig::validate(&file)
    }

    /// The parts of a configuration that are local to this host (interfaces, sizes, paths,
    /// defaults), validated, with no addresses, peers, resources or rules yet. Both front
    /// doors start here: [`AgentConfig::validate`] for the TOML file and [`crate::netmap`] for the
    /// management server's network map.
    pub fn local(i: &InterfaceConfig, ct: &ConntrackConfig) -> Result<AgentConfig, ConfigError> {
        if i.overlay.trim().is_empty() {
            return Err(invalid("interface.overlay", "no overlay interface named"));
        }
        for (n, l) in i.lan.iter().enumerate() {
            if l.trim().is_empty() || l == &i.overlay {
                return Err(invalid(
                    format!("interface.lan[{n}]"),
                    format!("`{l}` is not a usable LAN interface"),
                ));
            }
        }
        let mtu = i.mtu.unwrap_or(1280);
        if !(576..=9000).contains(&mtu) {
            return Err(invalid(
                "interface.mtu",
                format!("{mtu} is outside 576..=9000"),
            ));
        }
        // `[conntrack] capacity`, or its older spelling `[interface] conntrack_capacity`; the
        // error names the one that was written.
        let pick = |new: Option<u32>, old: Option<u32>, name: &str| match (new, old) {
            (Some(_), Some(_)) => Err(invalid(
                format!("conntrack.{name}"),
                format!("set twice: remove `interface.conntrack_{name}` (its older spelling)"),
            )),
            (Some(n), None) => Ok((Some(n), format!("conntrack.{name}"))),
            (None, o) => Ok((o, format!("interface.conntrack_{name}"))),
        };
        let (cap, at) = pick(ct.capacity, i.conntrack_capacity, "capacity")?;
        let conntrack_capacity = cap.unwrap_or(swiftgate_common::capacity::CONNTRACK);
        if !(1024..=16 << 20).contains(&conntrack_capacity) {
            return Err(invalid(at, "must be between 1024 and 16777216"));
        }
        let (cap6, at) = pick(ct.capacity_v6, i.conntrack_capacity_v6, "capacity_v6")?;
        let conntrack_capacity_v6 = cap6.unwrap_or((conntrack_capacity / 4).max(1024));
        if !(1024..=16 << 20).contains(&conntrack_capacity_v6) {
            return Err(invalid(at, "must be between 1024 and 16777216"));
        }
        let ct_source_share = ct.source_share.unwrap_or(25);
        if !(1..=100).contains(&ct_source_share) {
            return Err(invalid(
                "conntrack.source_share",
                format!("{ct_source_share} is outside 1..=100 (percent)"),
            ));
        }
        let ct_warn_percent = ct.warn_percent.unwrap_or(90);
        if !(1..=100).contains(&ct_warn_percent) {
            return Err(invalid(
                "conntrack.warn_percent",
                format!("{ct_warn_percent} is outside 1..=100 (percent)"),
            ));
        }
        let ct_timeouts = ct.timeouts.validate()?;
        let nat_ports = match &i.nat_ports {
            Some(s) => s
                .parse::<PortRange>()
                .map_err(|e| invalid("interface.nat_ports", e.to_string()))?,
            None => PortRange {
                start: 1024,
                end: 65535,
            },
        };
        let flow_events = match i.flow_events.as_deref() {
            None | Some("drops") => FlowEvents::Drops,
            Some("none") => FlowEvents::None,
            Some("all") => FlowEvents::All,
            Some(o) => {
                return Err(invalid(
                    "interface.flow_events",
                    format!("`{o}`: expected none, drops or all"),
                ));
            }
        };
        if i.xdp && !i.overlay_l2 {
            return Err(invalid(
                "interface",
                "xdp = true needs overlay_l2 = true (the XDP stage handles Ethernet frames)",
            ));
        }
        Ok(AgentConfig {
            overlay: i.overlay.clone(),
            overlay_l2: i.overlay_l2,
            xdp: i.xdp,
            own_addresses: vec![],
            overlay_nets: vec![],
            lan: i.lan.clone(),
            mtu,
            pin_path: i
                .pin_path
                .clone()
                .unwrap_or_else(|| swiftgate_common::PIN_ROOT.into()),
            conntrack_capacity,
            conntrack_capacity_v6,
            ct_source_share,
            ct_warn_percent,
            ct_timeouts,
            nat_ports,
            flow_events,
            peers: vec![],
            resources: vec![],
            source_prefixes: vec![],
            networks: vec![],
            rules: vec![],
            wireguard: None,
            routes: vec![],
            control_socket: i
                .control_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("/run/swiftgate/{}.sock", i.overlay))),
        })
    }

    /// Validates a parsed file.
    pub fn validate(f: &FileConfig) -> Result<AgentConfig, ConfigError> {
        let i = &f.interface;
        let base = AgentConfig::local(i, &f.conntrack)?;
        if i.addresses.is_empty() {
            return Err(invalid(
                "interface.addresses",
                "at least one own overlay address is needed",
            ));
        }
        let mut own_addresses = Vec::new();
        let mut overlay_nets = Vec::new();
        for (n, a) in i.addresses.iter().enumerate() {
            let at = format!("interface.addresses[{n}]");
            let net: IpNet = a.trim().parse().map_err(|_| {
                invalid(
                    &at,
                    format!("`{a}` is not an address with prefix length (e.g. 100.64.0.1/16)"),
                )
            })?;
            own_addresses.push(IpNet::from(net.addr()));
            overlay_nets.push(net.trunc());
        }
        let mtu = base.mtu;

        // Names are unique across peers, resources and groups' members.
        let mut names: BTreeMap<String, Endpoint> = BTreeMap::new();
        let mut addr_owner: BTreeMap<IpNet, String> = BTreeMap::new();
        for a in &own_addresses {
            addr_owner.insert(*a, "this routing peer".into());
        }
        let mut peers = Vec::new();
        let mut wg_peers = Vec::new();
        let mut wg_keys: BTreeMap<PublicKey, String> = BTreeMap::new();
        let mut routes = Vec::new();
        for (n, p) in f.peers.iter().enumerate() {
            let at = format!("peers[{n}]");
            check_name(&p.name, &at)?;
            if names.insert(p.name.clone(), Endpoint::Peer(n)).is_some() {
                return Err(invalid(&at, format!("duplicate name `{}`", p.name)));
            }
            if p.ips.is_empty() {
                return Err(invalid(&at, format!("peer `{}` has no ips", p.name)));
            }
            let mut ips = Vec::new();
            for (k, s) in p.ips.iter().enumerate() {
                let ip = parse_host(s, &format!("{at}.ips[{k}]"))?;
                if !overlay_nets.iter().any(|o| o.contains(&ip.addr())) {
                    return Err(invalid(
                        format!("{at}.ips[{k}]"),
                        format!("{s} is outside the overlay network"),
                    ));
                }
                if let Some(o) = addr_owner.insert(ip, p.name.clone()) {
                    return Err(invalid(
                        format!("{at}.ips[{k}]"),
                        format!("{s} is already used by {o}"),
                    ));
                }
                ips.push(ip);
            }
            let mut extra = Vec::new();
            for (k, s) in p.allowed_ips.iter().enumerate() {
                extra.push(parse_prefix(s, &format!("{at}.allowed_ips[{k}]"))?);
            }
            if let Some(pk) = &p.public_key {
                let public = PublicKey::from_base64(pk)
                    .map_err(|e| invalid(format!("{at}.public_key"), e.to_string()))?;
                if let Some(other) = wg_keys.insert(public, p.name.clone()) {
                    return Err(invalid(
                        format!("{at}.public_key"),
                        format!("same key as peer `{other}`"),
                    ));
                }
                let psk = match &p.preshared_key {
                    Some(k) => Some(
                        PresharedKey::from_base64(k)
                            .map_err(|e| invalid(format!("{at}.preshared_key"), e.to_string()))?,
                    ),
                    None => None,
                };
                let endpoint = match &p.endpoint {
                    Some(e) => Some(e.trim().parse::<std::net::SocketAddr>().map_err(|_| {
                        invalid(format!("{at}.endpoint"), format!("`{e}` is not ip:port"))
                    })?),
                    None => None,
                };
                let mut allowed = ips.clone();
                allowed.extend(extra.iter().copied());
                wg_peers.push(WgPeer {
                    name: p.name.clone(),
                    public,
                    psk,
                    endpoint,
                    keepalive: p.keepalive,
                    allowed,
                });
            } else if p.preshared_key.is_some() || p.endpoint.is_some() || !p.allowed_ips.is_empty()
            {
                return Err(invalid(&at, "WireGuard settings without a public_key"));
            }
            routes.extend(
                extra
                    .into_iter()
                    .filter(|e| !overlay_nets.iter().any(|o| o.contains(e))),
            );
            peers.push(Peer {
                name: p.name.clone(),
                ips,
                groups: p.groups.iter().cloned().collect(),
            });
        }
        let mut resources = Vec::new();
        let mut networks = Vec::new();
        let mut net_names = BTreeSet::new();
        for (n, net) in f.networks.iter().enumerate() {
            let at = format!("networks[{n}]");
            check_name(&net.name, &at)?;
            if !net_names.insert(net.name.clone()) {
                return Err(invalid(&at, format!("duplicate network `{}`", net.name)));
            }
            networks.push(net.name.clone());
            for (k, r) in net.resources.iter().enumerate() {
                let at = format!("{at}.resources[{k}]");
                check_name(&r.name, &at)?;
                let prefix = parse_prefix(&r.address, &format!("{at}.address"))?;
                if let Err(why) = resource_prefix_allowed(prefix, &overlay_nets) {
                    return Err(invalid(format!("{at}.address"), why.to_string()));
                }
                if names
                    .insert(r.name.clone(), Endpoint::Resource(resources.len()))
                    .is_some()
                {
                    return Err(invalid(&at, format!("duplicate name `{}`", r.name)));
                }
                if let Some(o) = addr_owner.insert(prefix, r.name.clone()) {
                    return Err(invalid(
                        format!("{at}.address"),
                        format!("{prefix} is already used by {o}"),
                    ));
                }
                resources.push(Resource {
                    name: r.name.clone(),
                    network: net.name.clone(),
                    network_index: n,
                    prefix,
                    groups: r.groups.iter().cloned().collect(),
                    masquerade: net.masquerade,
                });
            }
        }
        // Groups: name -> members.
        let mut groups: BTreeMap<String, BTreeSet<Endpoint>> = BTreeMap::new();
        for (n, p) in peers.iter().enumerate() {
            for g in &p.groups {
                groups
                    .entry(g.clone())
                    .or_default()
                    .insert(Endpoint::Peer(n));
            }
        }
        for (n, r) in resources.iter().enumerate() {
            for g in &r.groups {
                groups
                    .entry(g.clone())
                    .or_default()
                    .insert(Endpoint::Resource(n));
            }
        }
        for g in groups.keys() {
            if names.contains_key(g) {
                return Err(invalid(
                    "groups",
                    format!("`{g}` is both a group and a peer or resource name"),
                ));
            }
        }
        let resolve = |s: &str, at: &str| -> Result<BTreeSet<Endpoint>, ConfigError> {
            if s == "self" {
                return Ok([Endpoint::SelfPeer].into());
            }
            if s == "All" {
                // The built-in group of every peer.
                return Ok((0..peers.len()).map(Endpoint::Peer).collect());
            }
            if let Some(e) = names.get(s) {
                return Ok([e.clone()].into());
            }
            if let Some(m) = groups.get(s) {
                return Ok(m.clone());
            }
            Err(invalid(
                at,
                format!("unknown group, peer or resource `{s}`"),
            ))
        };

        let mut rules = Vec::new();
        let mut policy_names = BTreeSet::new();
        for (n, p) in f.policies.iter().enumerate() {
            let at = format!("policies[{n}]");
            check_name(&p.name, &at)?;
            if !policy_names.insert(p.name.clone()) {
                return Err(invalid(&at, format!("duplicate policy name `{}`", p.name)));
            }
            if p.sources.is_empty() {
                return Err(invalid(format!("{at}.sources"), "no sources"));
            }
            if p.destinations.is_empty() {
                return Err(invalid(format!("{at}.destinations"), "no destinations"));
            }
            let protocol: Protocol = p
                .protocol
                .parse()
                .map_err(|e: RuleError| invalid(format!("{at}.protocol"), e.to_string()))?;
            let action: Action = p
                .action
                .parse()
                .map_err(|e: RuleError| invalid(format!("{at}.action"), e.to_string()))?;
            let mut ports = Vec::new();
            for (k, s) in p.ports.iter().enumerate() {
                ports.push(
                    s.parse::<PortRange>()
                        .map_err(|e| invalid(format!("{at}.ports[{k}]"), e.to_string()))?,
                );
            }
            if !ports.is_empty() && matches!(protocol, Protocol::All | Protocol::Icmp) {
                return Err(invalid(
                    format!("{at}.ports"),
                    "ports need protocol tcp or udp",
                ));
            }
            let mut sources = BTreeSet::new();
            for (k, s) in p.sources.iter().enumerate() {
                let e = resolve(s, &format!("{at}.sources[{k}]"))?;
                if e.contains(&Endpoint::SelfPeer) {
                    return Err(invalid(
                        format!("{at}.sources[{k}]"),
                        "`self` cannot be a source",
                    ));
                }
                sources.extend(e);
            }
            let mut destinations = BTreeSet::new();
            for (k, s) in p.destinations.iter().enumerate() {
                destinations.extend(resolve(s, &format!("{at}.destinations[{k}]"))?);
            }
            if !p.enabled {
                continue;
            }
            let id = stable_id("policy", &p.name);
            rules.push(Rule {
                name: p.name.clone(),
                id,
                sources: sources.clone(),
                destinations: destinations.clone(),
                protocol,
                ports: ports.clone(),
                action,
            });
            if p.bidirectional {
                let back: BTreeSet<Endpoint> = destinations
                    .into_iter()
                    .filter(|e| *e != Endpoint::SelfPeer)
                    .collect();
                rules.push(Rule {
                    name: p.name.clone(),
                    id,
                    sources: back,
                    destinations: sources,
                    protocol,
                    ports,
                    action,
                });
            }
        }

        let private = match (&i.private_key, &i.private_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "interface",
                    "give private_key or private_key_file, not both",
                ));
            }
            (Some(k), None) => Some(
                PrivateKey::from_base64(k)
                    .map_err(|e| invalid("interface.private_key", e.to_string()))?,
            ),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        "interface.private_key_file",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                Some(
                    PrivateKey::from_base64(&text)
                        .map_err(|e| invalid("interface.private_key_file", e.to_string()))?,
                )
            }
            (None, None) => None,
        };
        let wireguard = match private {
            Some(private) => {
                if let Some(p) = f.peers.iter().find(|p| p.public_key.is_none()) {
                    return Err(invalid(
                        "peers",
                        format!(
                            "peer `{}` has no public_key (the interface runs WireGuard)",
                            p.name
                        ),
                    ));
                }
                let addresses = i
                    .addresses
                    .iter()
                    .filter_map(|a| a.trim().parse::<IpNet>().ok())
                    .collect();
                Some(WgConfig {
                    iface: i.overlay.clone(),
                    private,
                    listen_port: i.listen_port.unwrap_or(51820),
                    mtu,
                    addresses,
                    workers: i.workers.unwrap_or(0),
                    peers: wg_peers,
                })
            }
            None => {
                if i.listen_port.is_some() || i.workers.is_some() {
                    return Err(invalid(
                        "interface",
                        "listen_port and workers need a private_key",
                    ));
                }
                None
            }
        };
        Ok(AgentConfig {
            own_addresses,
            overlay_nets,
            peers,
            resources,
            networks,
            rules,
            wireguard,
            routes,
            ..base
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERLIN: &str = r#"
[interface]
overlay = "sg0"
addresses = ["100.64.0.1/16"]
lan = ["eth1"]

[[peers]]
name = "alice"
ips = ["100.64.0.2"]
groups = ["Development"]

[[networks]]
name = "Berlin Office"
[[networks.resources]]
name = "Internal Wiki"
address = "192.0.2.10/32"
groups = ["Internal Apps"]

[[policies]]
name = "dev-to-apps"
sources = ["Development"]
destinations = ["Internal Apps"]
protocol = "tcp"
ports = ["443"]
"#;

    #[test]
    fn berlin_office_validates() {
        let c = AgentConfig::from_toml(BERLIN).unwrap();
        assert_eq!(c.rules.len(), 1);
        assert!(c.resources[0].masquerade);
        assert_eq!(c.overlay_nets[0].to_string(), "100.64.0.0/16");
        assert_eq!(c.rules[0].ports, vec![PortRange::single(443)]);
    }

    #[test]
    fn conntrack_capacities_per_family() {
        let c = AgentConfig::from_toml(BERLIN).unwrap();
        assert_eq!(
            (c.conntrack_capacity, c.conntrack_capacity_v6),
            (262_144, 65_536)
        );
        let c = AgentConfig::from_toml(&BERLIN.replace(
            "[interface]",
            "[interface]\nconntrack_capacity = 2048\nconntrack_capacity_v6 = 4096",
        ))
        .unwrap();
        assert_eq!(
            (c.conntrack_capacity, c.conntrack_capacity_v6),
            (2048, 4096)
        );
        let c = AgentConfig::from_toml(
            &BERLIN.replace("[interface]", "[interface]\nconntrack_capacity = 2048"),
        )
        .unwrap();
        assert_eq!(c.conntrack_capacity_v6, 1024, "a quarter, at least 1024");
        let e = err_of(&BERLIN.replace("[interface]", "[interface]\nconntrack_capacity_v6 = 10"));
        assert!(e.contains("interface.conntrack_capacity_v6"), "{e}");
    }

    fn err_of(text: &str) -> String {
        AgentConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn conntrack_section_sizes_shares_and_timeouts() {
        let c = AgentConfig::from_toml(BERLIN).unwrap();
        assert_eq!((c.ct_source_share, c.ct_warn_percent), (25, 90));
        assert_eq!(c.ct_timeouts, CtTimeouts::DEFAULT);
        let c = AgentConfig::from_toml(&format!(
            "{BERLIN}\n[conntrack]\ncapacity = 4096\nsource_share = 50\nwarn_percent = 75\n\
             [conntrack.timeouts]\ntcp_established = 3600\nudp_unreplied = 10\n"
        ))
        .unwrap();
        assert_eq!(
            (c.conntrack_capacity, c.conntrack_capacity_v6),
            (4096, 1024)
        );
        assert_eq!((c.ct_source_share, c.ct_warn_percent), (50, 75));
        assert_eq!(
            (c.ct_timeouts.tcp_established, c.ct_timeouts.udp_unreplied),
            (3600, 10)
        );
        assert_eq!(c.ct_timeouts.tcp_syn, CtTimeouts::DEFAULT.tcp_syn);
        for (extra, says) in [
            ("capacity = 100", "conntrack.capacity: must be between"),
            ("source_share = 0", "conntrack.source_share: 0 is outside"),
            (
                "source_share = 101",
                "conntrack.source_share: 101 is outside",
            ),
            ("warn_percent = 0", "conntrack.warn_percent"),
            (
                "[conntrack.timeouts]\nicmp = 0",
                "conntrack.timeouts.icmp: 0 is outside",
            ),
            (
                "[conntrack.timeouts]\ntcp_syn = 99999999",
                "conntrack.timeouts.tcp_syn",
            ),
            ("[conntrack.timeouts]\nudp = 5", "unknown field `udp`"),
            ("sources_share = 5", "unknown field `sources_share`"),
        ] {
            let e = err_of(&format!("{BERLIN}\n[conntrack]\n{extra}\n"));
            assert!(e.contains(says), "{extra}: {e}");
        }
        let e = err_of(&format!(
            "{}\n[conntrack]\ncapacity = 4096\n",
            BERLIN.replace("[interface]", "[interface]\nconntrack_capacity = 2048")
        ));
        assert!(e.contains("set twice"), "{e}");
    }

    #[test]
    fn bad_input_is_named() {
        let e = err_of(&BERLIN.replace(r#"ports = ["443"]"#, r#"ports = ["500-400"]"#));
        assert!(
            e.contains("policies[0].ports[0]") && e.contains("reversed"),
            "{e}"
        );
        let e = err_of(&BERLIN.replace(r#"ports = ["443"]"#, r#"ports = ["0"]"#));
        assert!(e.contains("port 0"), "{e}");
        let e = err_of(&BERLIN.replace("192.0.2.10/32", "192.0.2.10/24"));
        assert!(e.contains("host bits"), "{e}");
        let e = err_of(&BERLIN.replace("192.0.2.10/32", "192.0.2.300/32"));
        assert!(e.contains("not an IP address or CIDR"), "{e}");
        let e = err_of(&BERLIN.replace(
            r#"destinations = ["Internal Apps"]"#,
            r#"destinations = ["Nope"]"#,
        ));
        assert!(e.contains("unknown group") && e.contains("Nope"), "{e}");
        let e = err_of(&BERLIN.replace(r#"protocol = "tcp""#, r#"protocol = "sctp""#));
        assert!(e.contains("sctp"), "{e}");
        let e = err_of(&BERLIN.replace(r#"ips = ["100.64.0.2"]"#, r#"ips = ["10.0.0.2"]"#));
        assert!(e.contains("outside the overlay"), "{e}");
        let e = err_of(&BERLIN.replace("[interface]", "[interface]\nbogus = 1"));
        assert!(e.contains("bogus"), "{e}");
        let e = err_of(&format!(
            "{BERLIN}\n[[policies]]\nname = \"dev-to-apps\"\nsources=[\"alice\"]\ndestinations=[\"self\"]\n"
        ));
        assert!(e.contains("duplicate policy"), "{e}");
    }

    #[test]
    fn disabled_policies_produce_no_rules_and_bidirectional_two() {
        let c = AgentConfig::from_toml(
            &BERLIN.replace("ports = [\"443\"]", "ports = [\"443\"]\nenabled = false"),
        )
        .unwrap();
        assert!(c.rules.is_empty());
        let c = AgentConfig::from_toml(&BERLIN.replace(
            "ports = [\"443\"]",
            "ports = [\"443\"]\nbidirectional = true",
        ))
        .unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[1].sources, c.rules[0].destinations);
    }

    #[test]
    fn resource_prefix_refusals_are_typed_and_keep_their_messages() {
        let overlay: IpNet = "100.64.0.0/10".parse().unwrap();
        let inside: IpNet = "100.64.1.0/24".parse().unwrap();
        let e = resource_prefix_allowed(inside, &[overlay]).unwrap_err();
        assert_eq!(
            e,
            PrefixNotAllowed::InsideOverlay {
                prefix: inside,
                overlay
            }
        );
        assert_eq!(
            e.to_string(),
            "100.64.1.0/24 is inside the overlay network 100.64.0.0/10"
        );
        let multicast: IpNet = "224.0.0.0/4".parse().unwrap();
        let e = resource_prefix_allowed(multicast, &[overlay]).unwrap_err();
        assert_eq!(e, PrefixNotAllowed::NotRoutable(multicast));
        assert_eq!(
            e.to_string(),
            "224.0.0.0/4 is not routable (multicast, loopback, link-local or unspecified)"
        );
        assert_eq!(
            resource_prefix_allowed("0.0.0.0/0".parse().unwrap(), &[overlay]),
            Ok(())
        );
    }
}
