//! The management server's network map becomes the agent's validated [`AgentConfig`], typed from the
//! wire to the kernel: no text in between, and no regrouping of addresses into names.
//!
//! This is the second front door beside the TOML file ([`AgentConfig::validate`]); both start from
//! [`AgentConfig::local`] and use the same checks ([`resource_prefix_allowed`]) and the same rule
//! vocabulary (`swiftgate-rules`, whose protobuf conversions read the map's enums and ports).
//!
//! **Apply what is valid, fail closed for the rest.** One entry the agent cannot honour never
//! freezes the whole map (later revocations must still apply). Each such entry becomes a
//! [`Refusal`] naming the map's object (route id, rule index and policy id):
//! - an *accept* entry that cannot be represented exactly is left out (it grants nothing);
//! - a *drop* entry is widened to what can be represented (every protocol, every port, every
//!   source), so what the operator denied stays denied;
//! - an unknown action is taken as drop.
//!
//! Dynamic route rules (`isDynamic`, domain resources) carry a placeholder destination; they
//! apply only to the addresses resolved for their domains, so until DNS fills those they match
//! nothing here.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;
use swiftgate_proto::keys::{PrivateKey, PublicKey};
use swiftgate_proto::management::{
    FirewallRule, NetworkMap, PeerConfig, RemotePeerConfig, Route, RouteFirewallRule,
};
use swiftgate_rules::{Action, Direction, PortRange, Protocol, RuleError};

use crate::{
    config::{
        AgentConfig, ConfigError, Endpoint, InterfaceConfig, Peer, Resource, Rule,
        resource_prefix_allowed, stable_id,
    },
    mgmt::Local,
    wg::{WgConfig, WgPeer},
};

/// `NetworkType` of a domain route.
const NETWORK_TYPE_DOMAIN: i64 = 3;

/// A map the agent cannot use at all (nothing of it is applied).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    /// The map carries no `peerConfig` for this peer.
    #[error("the network map has no peerConfig")]
    NoPeerConfig,
    /// The peer's own overlay address is unusable.
    #[error("peerConfig.address `{0}` is not an address with prefix length (e.g. 100.64.0.1/16)")]
    Address(String),
    /// The local settings (command line) are invalid.
    #[error("local settings: {0}")]
    Local(#[from] ConfigError),
}

/// An object of the network map, as a refusal names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MapObject {
    /// `peerConfig`.
    PeerConfig,
    /// A remote peer, by its WireGuard key text.
    RemotePeer(String),
    /// A route, by its id.
    Route(String),
    /// `firewallRules[index]` of a policy.
    FirewallRule {
        /// Position in the map.
        index: usize,
        /// `PolicyID` text.
        policy: String,
    },
    /// `routesFirewallRules[index]` of a route and policy.
    RouteFirewallRule {
        /// Position in the map.
        index: usize,
        /// `RouteID`.
        route: String,
        /// `PolicyID` text.
        policy: String,
    },
}

impl fmt::Display for MapObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapObject::PeerConfig => f.write_str("peerConfig"),
            MapObject::RemotePeer(k) => write!(f, "remote peer {k}"),
            MapObject::Route(id) => write!(f, "route `{id}`"),
            MapObject::FirewallRule { index, policy } => {
                write!(f, "firewallRules[{index}] (policy `{policy}`)")
            }
            MapObject::RouteFirewallRule {
                index,
                route,
                policy,
            } => write!(
                f,
                "routesFirewallRules[{index}] (route `{route}`, policy `{policy}`)"
            ),
        }
    }
}

/// What the agent did with an entry it could not honour as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Left out: it grants nothing.
    Skipped,
    /// Applied wider than sent (a drop over more traffic), so nothing denied passes.
    Widened,
}

/// One entry of the map that was not applied as sent, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refusal {
    /// The map's object.
    pub object: MapObject,
    /// What was wrong with it.
    pub reason: String,
    /// What the agent did instead.
    pub effect: Effect,
}

impl Refusal {
    /// As the swiftgate extension of `PeerSystemMeta` reports it to the server.
    pub fn to_pb(&self, serial: u64) -> swiftgate_proto::management::MapRefusal {
        swiftgate_proto::management::MapRefusal {
            serial,
            object: self.object.to_string(),
            reason: self.reason.clone(),
            effect: self.effect.name().into(),
        }
    }
}

impl Effect {
    /// `skipped` or `widened`.
    pub fn name(self) -> &'static str {
        match self {
            Effect::Skipped => "skipped",
            Effect::Widened => "widened",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let effect = match self.effect {
            Effect::Skipped => "not applied",
            Effect::Widened => "applied as a wider drop",
        };
        write!(f, "{}: {} ({effect})", self.object, self.reason)
    }
}

/// A converted map: the configuration to apply and what it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The validated configuration.
    pub config: AgentConfig,
    /// Entries not applied as sent, in map order.
    pub refused: Vec<Refusal>,
}

/// Converts `map` for the peer whose key pair is `private` / `own_public` (routes whose
/// `Peer` is `own_public` are the ones this peer serves).
pub fn convert(
    local: &Local,
    private: &PrivateKey,
    own_public: &PublicKey,
    peer: &PeerConfig,
    map: &NetworkMap,
) -> Result<Converted, MapError> {
    Converter::new(local, private, own_public, peer)?.run(map)
}

/// Overlay host prefix of an address.
fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

/// NetBird's compact prefix: address bytes then the prefix length (5 or 17 bytes).
fn compact_prefix(b: &[u8]) -> Option<IpNet> {
    match b.len() {
        5 => {
            let a: [u8; 4] = b[..4].try_into().ok()?;
            IpNet::new(IpAddr::from(a), b[4]).ok()
        }
        17 => {
            let a: [u8; 16] = b[..16].try_into().ok()?;
            IpNet::new(IpAddr::from(a), b[16]).ok()
        }
        _ => None,
    }
}

/// A prefix as NetBird writes it: CIDR text, or a bare address for a host.
fn prefix_text(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| s.parse::<IpAddr>().ok().map(host))
}

/// The protocol, ports and action of one rule, after failing closed.
struct Matcher {
    action: Action,
    protocol: Protocol,
    ports: Vec<PortRange>,
}

struct Converter {
    cfg: AgentConfig,
    own_public: PublicKey,
    refused: Vec<Refusal>,
    /// Overlay host address -> peer index.
    peer_of_ip: BTreeMap<IpAddr, usize>,
    /// WireGuard key -> index into `cfg.wireguard.peers`.
    wg_of_key: BTreeMap<PublicKey, usize>,
    /// Served resource prefix -> resource index.
    resource_of: BTreeMap<IpNet, usize>,
    /// Network name (`NetID`) -> network index.
    network_of: BTreeMap<String, usize>,
    /// Source-only prefix -> index.
    prefix_of: BTreeMap<IpNet, usize>,
}

impl Converter {
    fn new(
        local: &Local,
        private: &PrivateKey,
        own_public: &PublicKey,
        peer: &PeerConfig,
    ) -> Result<Self, MapError> {
        let own: IpNet = peer
            .address
            .trim()
            .parse()
            .map_err(|_| MapError::Address(peer.address.clone()))?;
        let mut refused = Vec::new();
        let mtu = match u16::try_from(peer.mtu) {
            Ok(0) => None,
            Ok(m) if (576..=9000).contains(&m) => Some(m),
            _ => {
                refused.push(Refusal {
                    object: MapObject::PeerConfig,
                    reason: format!("mtu {} is outside 576..=9000; 1280 used", peer.mtu),
                    effect: Effect::Skipped,
                });
                None
            }
        };
        let mut cfg = AgentConfig::local(
            &InterfaceConfig {
                overlay: local.overlay.clone(),
                lan: local.lan.clone(),
                mtu,
                pin_path: local.pin_path.clone(),
                control_socket: local.control_socket.clone(),
                ..Default::default()
            },
            &local.conntrack,
        )?;
        let mut addresses = vec![own];
        if !peer.address_v6.is_empty() {
            match compact_prefix(&peer.address_v6) {
                Some(v6 @ IpNet::V6(_)) => addresses.push(v6),
                _ => refused.push(Refusal {
                    object: MapObject::PeerConfig,
                    reason: format!(
                        "address_v6 ({} bytes) is not 16 address bytes and a prefix length",
                        peer.address_v6.len()
                    ),
                    effect: Effect::Skipped,
                }),
            }
        }
        cfg.own_addresses = addresses.iter().map(|a| host(a.addr())).collect();
        cfg.overlay_nets = addresses.iter().map(IpNet::trunc).collect();
        cfg.wireguard = Some(WgConfig {
            iface: local.overlay.clone(),
            private: private.clone(),
            listen_port: local.listen_port,
            mtu: cfg.mtu,
            addresses,
            workers: local.workers.unwrap_or(0),
            peers: vec![],
        });
        Ok(Converter {
            cfg,
            own_public: *own_public,
            refused,
            peer_of_ip: BTreeMap::new(),
            wg_of_key: BTreeMap::new(),
            resource_of: BTreeMap::new(),
            network_of: BTreeMap::new(),
            prefix_of: BTreeMap::new(),
        })
    }

    fn refuse(&mut self, object: MapObject, reason: impl Into<String>, effect: Effect) {
        self.refused.push(Refusal {
            object,
            reason: reason.into(),
            effect,
        });
    }

    fn in_overlay(&self, a: IpAddr) -> bool {
        self.cfg.overlay_nets.iter().any(|o| o.contains(&a))
    }

    fn run(mut self, map: &NetworkMap) -> Result<Converted, MapError> {
        for rp in &map.remote_peers {
            self.remote_peer(rp);
        }
        let mut via: BTreeMap<IpNet, (i64, PublicKey, String)> = BTreeMap::new();
        for r in &map.routes {
            self.route(r, &mut via);
        }
        for (prefix, (_, router, id)) in via {
            if self.resource_of.contains_key(&prefix) {
                // This peer serves it itself (another router of the same Network offers it
                // too): never route it into the tunnel.
                continue;
            }
            match self.wg_of_key.get(&router) {
                Some(&i) => {
                    let wg = self.cfg.wireguard.as_mut().expect("set in new");
                    wg.peers[i].allowed.push(prefix);
                    self.cfg.routes.push(prefix);
                }
                None => self.refuse(
                    MapObject::Route(id),
                    "its routing peer is not among the remote peers",
                    Effect::Skipped,
                ),
            }
        }
        for (index, fr) in map.firewall_rules.iter().enumerate() {
            self.firewall_rule(index, fr);
        }
        for (index, rr) in map.routes_firewall_rules.iter().enumerate() {
            self.route_firewall_rule(index, rr);
        }
        if self.cfg.resources.is_empty() {
            // Not a routing peer: the LAN programs would have nothing to do.
            self.cfg.lan.clear();
        }
        Ok(Converted {
            config: self.cfg,
            refused: self.refused,
        })
    }

    fn remote_peer(&mut self, rp: &RemotePeerConfig) {
        let object = MapObject::RemotePeer(rp.wg_pub_key.clone());
        let public = match PublicKey::from_base64(&rp.wg_pub_key) {
            Ok(k) => k,
            Err(e) => {
                return self.refuse(object, format!("wgPubKey: {e}"), Effect::Skipped);
            }
        };
        if public == self.own_public {
            return self.refuse(object, "has this peer's own key", Effect::Skipped);
        }
        if self.wg_of_key.contains_key(&public) {
            return self.refuse(object, "listed twice", Effect::Skipped);
        }
        let (mut ips, mut extra) = (Vec::new(), Vec::new());
        for a in &rp.allowed_ips {
            let Some(n) = prefix_text(a) else {
                self.refuse(
                    object.clone(),
                    format!("allowedIps `{a}` is not a prefix"),
                    Effect::Skipped,
                );
                continue;
            };
            if n.prefix_len() == n.max_prefix_len() && self.in_overlay(n.addr()) {
                if self.peer_of_ip.contains_key(&n.addr()) || self.cfg.own_addresses.contains(&n) {
                    self.refuse(
                        object.clone(),
                        format!("overlay address {} is already in use", n.addr()),
                        Effect::Skipped,
                    );
                    continue;
                }
                ips.push(n);
            } else {
                extra.push(n);
            }
        }
        if ips.is_empty() {
            return self.refuse(object, "no usable overlay address", Effect::Skipped);
        }
        let index = self.cfg.peers.len();
        for ip in &ips {
            self.peer_of_ip.insert(ip.addr(), index);
        }
        // Names are for logs and status only; a peer's identity is its key.
        let name = if rp.fqdn.is_empty() || self.cfg.peers.iter().any(|p| p.name == rp.fqdn) {
            format!("peer-{}", &rp.wg_pub_key.get(..8).unwrap_or(&rp.wg_pub_key))
        } else {
            rp.fqdn.clone()
        };
        self.cfg.peers.push(Peer {
            name: name.clone(),
            ips: ips.clone(),
            groups: BTreeSet::new(),
        });
        let wg = self.cfg.wireguard.as_mut().expect("set in new");
        self.wg_of_key.insert(public, wg.peers.len());
        let mut allowed = ips;
        allowed.extend(extra.iter().copied());
        wg.peers.push(WgPeer {
            name,
            public,
            psk: None,
            endpoint: None,
            keepalive: None,
            allowed,
        });
        self.cfg.routes.extend(extra);
    }

    fn route(&mut self, r: &Route, via: &mut BTreeMap<IpNet, (i64, PublicKey, String)>) {
        let object = MapObject::Route(r.id.clone());
        if r.network_type == NETWORK_TYPE_DOMAIN || !r.domains.is_empty() {
            // Domain resources are resolved through DNS (not yet); nothing to route.
            tracing::debug!(route = %r.id, domains = ?r.domains, "domain route waits for DNS");
            return;
        }
        let router = match PublicKey::from_base64(&r.peer) {
            Ok(k) => k,
            Err(e) => return self.refuse(object, format!("Peer: {e}"), Effect::Skipped),
        };
        let Some(prefix) = prefix_text(&r.network) else {
            return self.refuse(
                object,
                format!("Network `{}` is not a prefix", r.network),
                Effect::Skipped,
            );
        };
        if let Err(why) = resource_prefix_allowed(prefix, &self.cfg.overlay_nets) {
            return self.refuse(object, why.to_string(), Effect::Skipped);
        }
        if router == self.own_public {
            if let Some(&other) = self.resource_of.get(&prefix) {
                let other = self.cfg.resources[other].name.clone();
                return self.refuse(
                    object,
                    format!("{prefix} is already served by {other}"),
                    Effect::Skipped,
                );
            }
            let next = self.network_of.len();
            let network_index = *self.network_of.entry(r.net_id.clone()).or_insert(next);
            if network_index == self.cfg.networks.len() {
                self.cfg.networks.push(r.net_id.clone());
            }
            self.resource_of.insert(prefix, self.cfg.resources.len());
            self.cfg.resources.push(Resource {
                name: format!("route:{}", r.id),
                network: r.net_id.clone(),
                network_index,
                prefix,
                groups: BTreeSet::new(),
                masquerade: r.masquerade,
            });
        } else {
            // Lowest metric wins; HA route selection comes with its own issue.
            match via.get(&prefix) {
                Some((m, _, _)) if *m <= r.metric => {}
                _ => {
                    via.insert(prefix, (r.metric, router, r.id.clone()));
                }
            }
        }
    }

    /// Protocol, ports and action of a rule, failing closed: `None` when an accept rule
    /// cannot be represented exactly.
    fn matcher(
        &mut self,
        object: &MapObject,
        action: i32,
        protocol: i32,
        ports: Result<Option<PortRange>, RuleError>,
    ) -> Option<Matcher> {
        let action = Action::from_pb(action).unwrap_or_else(|e| {
            self.refuse(
                object.clone(),
                format!("{e}; taken as drop"),
                Effect::Widened,
            );
            Action::Drop
        });
        let fail = |this: &mut Self, why: String| -> Option<Matcher> {
            match action {
                Action::Accept => {
                    this.refuse(object.clone(), why, Effect::Skipped);
                    None
                }
                Action::Drop => {
                    this.refuse(object.clone(), why, Effect::Widened);
                    Some(Matcher {
                        action,
                        protocol: Protocol::All,
                        ports: vec![],
                    })
                }
            }
        };
        let protocol = match Protocol::from_pb(protocol) {
            Ok(p) => p,
            Err(e) => return fail(self, e.to_string()),
        };
        let ports = match ports {
            Ok(p) => p,
            Err(e) => return fail(self, format!("ports: {e}")),
        };
        match (ports, protocol.has_ports()) {
            (Some(p), true) => Some(Matcher {
                action,
                protocol,
                ports: vec![p],
            }),
            (Some(_), false) if action == Action::Accept => fail(
                self,
                RuleError::PortsWithoutPortProtocol(protocol).to_string(),
            ),
            _ => Some(Matcher {
                action,
                protocol,
                ports: vec![],
            }),
        }
    }

    /// The endpoint a source prefix names: a known peer, a served resource (Site-to-VPN), or
    /// a source-only range.
    fn source(&mut self, p: IpNet) -> BTreeSet<Endpoint> {
        if p.prefix_len() == p.max_prefix_len()
            && let Some(&i) = self.peer_of_ip.get(&p.addr())
        {
            return [Endpoint::Peer(i)].into();
        }
        if let Some(&i) = self.resource_of.get(&p) {
            return [Endpoint::Resource(i)].into();
        }
        let next = self.prefix_of.len();
        let i = *self.prefix_of.entry(p).or_insert(next);
        if i == self.cfg.source_prefixes.len() {
            self.cfg.source_prefixes.push(p);
        }
        [Endpoint::Prefix(i)].into()
    }

    fn all_peers(&self) -> BTreeSet<Endpoint> {
        (0..self.cfg.peers.len()).map(Endpoint::Peer).collect()
    }

    /// Every address of both families, as sources: what a drop whose source cannot be read is
    /// widened to.
    fn every_address(&mut self) -> BTreeSet<Endpoint> {
        let mut all = self.source(IpNet::V4(Default::default()));
        all.extend(self.source(IpNet::V6(Default::default())));
        all
    }

    fn push_rule(
        &mut self,
        name: String,
        policy: &str,
        m: Matcher,
        sources: BTreeSet<Endpoint>,
        destinations: BTreeSet<Endpoint>,
    ) {
        if sources.is_empty() || destinations.is_empty() {
            return;
        }
        let id = stable_id("policy", if policy.is_empty() { &name } else { policy });
        self.cfg.rules.push(Rule {
            name,
            id,
            sources,
            destinations,
            protocol: m.protocol,
            ports: m.ports,
            action: m.action,
        });
    }

    fn firewall_rule(&mut self, index: usize, fr: &FirewallRule) {
        let policy = String::from_utf8_lossy(&fr.policy_id).into_owned();
        let object = MapObject::FirewallRule {
            index,
            policy: policy.clone(),
        };
        match Direction::from_pb(fr.direction) {
            // Outbound rules concern traffic this peer opens, which it may always open.
            Ok(Direction::Out) => return,
            Ok(Direction::In) => {}
            Err(e) => self.refuse(object.clone(), format!("{e}; taken as in"), Effect::Widened),
        }
        let ports = swiftgate_rules::pb::ports(fr.port_info.as_ref(), &fr.port);
        let Some(m) = self.matcher(&object, fr.action, fr.protocol, ports) else {
            return;
        };
        // Source: the deprecated PeerIP ("0.0.0.0": any peer), else the compact prefixes. Only
        // the bare address means any peer: a prefix such as 0.0.0.0/0 (a Site-to-VPN resource)
        // is that prefix, LAN addresses behind other routing peers included.
        let mut sources = BTreeSet::new();
        let mut bad = None;
        let peer_ip = fr.peer_ip.trim();
        if !peer_ip.is_empty() {
            match prefix_text(peer_ip) {
                Some(p) if p.addr().is_unspecified() && p.prefix_len() == p.max_prefix_len() => {
                    sources = self.all_peers()
                }
                Some(p) => sources = self.source(p),
                None => bad = Some(format!("PeerIP `{peer_ip}` is not an address")),
            }
        } else {
            for b in &fr.source_prefixes {
                match compact_prefix(b) {
                    Some(p) => {
                        let s = self.source(p);
                        sources.extend(s);
                    }
                    None => bad = Some(format!("sourcePrefixes entry of {} bytes", b.len())),
                }
            }
            if fr.source_prefixes.is_empty() {
                bad = Some("no source (PeerIP and sourcePrefixes are empty)".into());
            }
        }
        if let Some(why) = bad {
            match m.action {
                Action::Accept => return self.refuse(object, why, Effect::Skipped),
                Action::Drop => {
                    self.refuse(object, why, Effect::Widened);
                    sources = self.all_peers();
                    sources.extend(self.every_address());
                }
            }
        }
        let name = format!("{policy}#fw{index}");
        self.push_rule(name, &policy, m, sources, [Endpoint::SelfPeer].into());
    }

    fn route_firewall_rule(&mut self, index: usize, rr: &RouteFirewallRule) {
        let policy = String::from_utf8_lossy(&rr.policy_id).into_owned();
        let object = MapObject::RouteFirewallRule {
            index,
            route: rr.route_id.clone(),
            policy: policy.clone(),
        };
        if rr.is_dynamic {
            // A domain's rule: its destination is a placeholder; it applies to the addresses
            // resolved for `domains` only (none yet).
            tracing::debug!(%object, domains = ?rr.domains, "dynamic route rule waits for DNS");
            return;
        }
        let ports = swiftgate_rules::pb::ports(rr.port_info.as_ref(), "");
        let Some(m) = self.matcher(&object, rr.action, rr.protocol, ports) else {
            return;
        };
        let drop = m.action == Action::Drop;
        let destinations = match prefix_text(&rr.destination) {
            Some(d) => self.destination(d),
            None if drop => {
                self.refuse(
                    object.clone(),
                    format!("destination `{}` is not a prefix", rr.destination),
                    Effect::Widened,
                );
                (0..self.cfg.resources.len())
                    .map(Endpoint::Resource)
                    .collect()
            }
            None => {
                return self.refuse(
                    object,
                    format!("destination `{}` is not a prefix", rr.destination),
                    Effect::Skipped,
                );
            }
        };
        if destinations.is_empty() {
            if !drop {
                self.refuse(
                    object,
                    format!("destination {} is not served by this peer", rr.destination),
                    Effect::Skipped,
                );
            }
            return;
        }
        let mut sources = BTreeSet::new();
        for s in &rr.source_ranges {
            match prefix_text(s) {
                Some(p) => {
                    let e = self.source(p);
                    sources.extend(e);
                }
                None if drop => {
                    self.refuse(
                        object.clone(),
                        format!("sourceRanges `{s}` is not a prefix"),
                        Effect::Widened,
                    );
                    let all = self.every_address();
                    sources.extend(all);
                }
                None => self.refuse(
                    object.clone(),
                    format!("sourceRanges `{s}` is not a prefix; left out"),
                    Effect::Skipped,
                ),
            }
        }
        let name = format!("{policy}#route{index}");
        self.push_rule(name, &policy, m, sources, destinations);
    }

    /// What a route rule's destination names on this peer: the served resource with that
    /// prefix, a narrower part of one (a resource of its own, same Network), the served
    /// resources inside a wider prefix, or an overlay peer or this peer (Site-to-VPN).
    fn destination(&mut self, d: IpNet) -> BTreeSet<Endpoint> {
        if d.prefix_len() == d.max_prefix_len() {
            if self.cfg.own_addresses.contains(&d) {
                return [Endpoint::SelfPeer].into();
            }
            if let Some(&i) = self.peer_of_ip.get(&d.addr()) {
                return [Endpoint::Peer(i)].into();
            }
        }
        if let Some(&i) = self.resource_of.get(&d) {
            return [Endpoint::Resource(i)].into();
        }
        let inside: BTreeSet<Endpoint> = self
            .resource_of
            .iter()
            .filter(|(p, _)| d.contains(*p))
            .map(|(_, i)| Endpoint::Resource(*i))
            .collect();
        if !inside.is_empty() {
            return inside;
        }
        if resource_prefix_allowed(d, &self.cfg.overlay_nets).is_err() {
            return BTreeSet::new();
        }
        let Some(outer) = self
            .resource_of
            .iter()
            .filter(|(p, _)| p.contains(&d))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|(_, i)| *i)
        else {
            return BTreeSet::new();
        };
        let o = self.cfg.resources[outer].clone();
        let i = self.cfg.resources.len();
        self.resource_of.insert(d, i);
        self.cfg.resources.push(Resource {
            name: format!("{}:{d}", o.name),
            prefix: d,
            ..o
        });
        [Endpoint::Resource(i)].into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Side, Verdict, evaluate};
    use swiftgate_proto::management::{
        PortInfo, RemotePeerConfig, RuleAction, RuleDirection, RuleProtocol, SyncResponse,
        port_info::{PortSelection, Range},
    };

    fn key(n: u8) -> String {
        PrivateKey::from_bytes([n; 32]).public_key().to_base64()
    }

    fn private() -> PrivateKey {
        PrivateKey::from_bytes([1; 32])
    }

    fn local() -> Local {
        Local {
            overlay: "sg0".into(),
            lan: vec!["eth1".into()],
            listen_port: 51820,
            ..Default::default()
        }
    }

    fn tcp(port: u32) -> Option<PortInfo> {
        Some(PortInfo {
            port_selection: Some(PortSelection::Port(port)),
        })
    }

    fn route(id: &str, network: &str, router: u8) -> Route {
        Route {
            id: id.into(),
            network: network.into(),
            network_type: 1,
            peer: key(router),
            metric: 9999,
            masquerade: true,
            net_id: "Berlin".into(),
            ..Default::default()
        }
    }

    fn route_rule(src: &[&str], dst: &str, port: u32, action: RuleAction) -> RouteFirewallRule {
        RouteFirewallRule {
            source_ranges: src.iter().map(|s| s.to_string()).collect(),
            action: action as i32,
            destination: dst.into(),
            protocol: RuleProtocol::Tcp as i32,
            port_info: tcp(port),
            policy_id: b"pol-1".to_vec(),
            route_id: "wiki".into(),
            ..Default::default()
        }
    }

    /// The Berlin Office as NetBird's management sends it to the routing peer (key 1).
    fn berlin_router() -> (PeerConfig, NetworkMap) {
        let peer = PeerConfig {
            address: "100.64.0.1/16".into(),
            mtu: 1280,
            ..Default::default()
        };
        let map = NetworkMap {
            serial: 7,
            remote_peers: vec![RemotePeerConfig {
                wg_pub_key: key(2),
                allowed_ips: vec!["100.64.0.2/32".into()],
                fqdn: "alice".into(),
                ..Default::default()
            }],
            routes: vec![route("wiki", "192.0.2.10/32", 1)],
            firewall_rules: vec![FirewallRule {
                peer_ip: "100.64.0.2".into(),
                direction: RuleDirection::In as i32,
                action: RuleAction::Accept as i32,
                protocol: RuleProtocol::Tcp as i32,
                port_info: tcp(22),
                policy_id: b"ssh".to_vec(),
                ..Default::default()
            }],
            routes_firewall_rules: vec![route_rule(
                &["100.64.0.2/32"],
                "192.0.2.10/32",
                443,
                RuleAction::Accept,
            )],
            ..Default::default()
        };
        (peer, map)
    }

    fn conv(peer: &PeerConfig, map: &NetworkMap) -> Converted {
        convert(&local(), &private(), &private().public_key(), peer, map).expect("usable map")
    }

    fn verdict(c: &AgentConfig, side: Side, src: &str, dst: &str, proto: u8, port: u16) -> Verdict {
        evaluate(
            c,
            side,
            src.parse().unwrap(),
            dst.parse().unwrap(),
            proto,
            port,
        )
    }

    fn accepts(c: &AgentConfig, src: &str, dst: &str, port: u16) -> bool {
        matches!(
            verdict(c, Side::Overlay, src, dst, 6, port),
            Verdict::Accept(_)
        )
    }

    #[test]
    fn a_routing_peer_map_becomes_resources_and_rules() {
        let (peer, map) = berlin_router();
        let c = conv(&peer, &map);
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        let c = c.config;
        assert_eq!(c.resources.len(), 1);
        assert!(c.resources[0].masquerade);
        assert_eq!(c.lan, vec!["eth1".to_string()]);
        assert!(accepts(&c, "100.64.0.2", "192.0.2.10", 443));
        assert!(!accepts(&c, "100.64.0.2", "192.0.2.10", 80));
        assert!(accepts(&c, "100.64.0.2", "100.64.0.1", 22));
        assert!(!accepts(&c, "100.64.0.2", "100.64.0.1", 23));
        let wg = c.wireguard.expect("wireguard");
        assert_eq!(
            wg.peers[0].allowed,
            vec!["100.64.0.2/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(wg.mtu, 1280);
        assert_eq!(
            c.rules[0].id,
            stable_id("policy", "ssh"),
            "policy id from PolicyID"
        );
    }

    #[test]
    fn a_client_map_routes_networks_through_the_best_router() {
        let peer = PeerConfig {
            address: "100.64.0.2/16".into(),
            ..Default::default()
        };
        let peer_of = |n: u8, ip: &str, name: &str| RemotePeerConfig {
            wg_pub_key: key(n),
            allowed_ips: vec![ip.into()],
            fqdn: name.into(),
            ..Default::default()
        };
        let (mut r1, mut r2) = (
            route("r1", "192.0.2.0/24", 3),
            route("r2", "192.0.2.0/24", 4),
        );
        (r1.metric, r2.metric) = (100, 10);
        let map = NetworkMap {
            serial: 3,
            remote_peers: vec![
                peer_of(3, "100.64.0.3/32", "gw-a"),
                peer_of(4, "100.64.0.4/32", "gw-b"),
            ],
            routes: vec![r1, r2],
            ..Default::default()
        };
        let c = conv(&peer, &map).config;
        let wg = c.wireguard.unwrap();
        let net: IpNet = "192.0.2.0/24".parse().unwrap();
        let b = wg.peers.iter().find(|p| p.name == "gw-b").unwrap();
        assert!(b.allowed.contains(&net), "lower metric wins");
        let a = wg.peers.iter().find(|p| p.name == "gw-a").unwrap();
        assert!(!a.allowed.contains(&net));
        assert_eq!(c.routes, vec![net]);
        assert!(c.lan.is_empty() && c.resources.is_empty());
    }

    #[test]
    fn a_prefix_this_peer_serves_is_not_routed_to_another_router() {
        let (peer, mut map) = berlin_router();
        map.remote_peers.push(RemotePeerConfig {
            wg_pub_key: key(5),
            allowed_ips: vec!["100.64.0.5/32".into()],
            fqdn: "berlin-router-2".into(),
            ..Default::default()
        });
        let mut other = route("wiki-ha", "192.0.2.10/32", 5);
        other.metric = 1;
        map.routes.push(other);
        let c = conv(&peer, &map).config;
        assert!(c.routes.is_empty(), "{:?}", c.routes);
        let wg = c.wireguard.unwrap();
        assert!(wg.peers.iter().all(|p| p.allowed.len() == 1));
    }

    /// Defect: a domain resource's rule (isDynamic, placeholder destination 192.0.2.0/32)
    /// opened its ports on every served prefix containing the placeholder.
    #[test]
    fn dynamic_route_rules_match_nothing_until_their_domains_resolve() {
        let (peer, mut map) = berlin_router();
        map.routes.push(route("lan", "192.0.2.0/24", 1));
        map.routes.push(route("exit", "0.0.0.0/0", 1));
        let mut dynamic = route_rule(&["100.64.0.2/32"], "192.0.2.0/32", 8080, RuleAction::Accept);
        dynamic.is_dynamic = true;
        dynamic.domains = vec!["grafana.berlin.internal".into()];
        map.routes_firewall_rules.push(dynamic);
        let c = conv(&peer, &map);
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        for dst in ["192.0.2.0", "192.0.2.77", "198.51.100.1"] {
            assert!(
                !accepts(&c.config, "100.64.0.2", dst, 8080),
                "the dynamic rule opened {dst}:8080"
            );
        }
        assert!(accepts(&c.config, "100.64.0.2", "192.0.2.10", 443));
    }

    /// Defect: one entry the agent could not apply (a 0.0.0.0/0 resource, a resource inside
    /// the overlay) froze the whole map, so later revocations did not apply.
    #[test]
    fn an_entry_that_cannot_be_applied_is_refused_alone_and_exit_resources_are_honoured() {
        let (peer, mut map) = berlin_router();
        map.routes.push(route("inside", "100.64.9.0/24", 1));
        map.routes.push(route("exit", "0.0.0.0/0", 1));
        map.routes_firewall_rules.push(route_rule(
            &["100.64.0.2/32"],
            "0.0.0.0/0",
            80,
            RuleAction::Accept,
        ));
        map.routes_firewall_rules.push(route_rule(
            &["100.64.0.2/32"],
            "100.64.9.0/24",
            80,
            RuleAction::Accept,
        ));
        let c = conv(&peer, &map);
        let objects: Vec<String> = c.refused.iter().map(|r| r.object.to_string()).collect();
        assert_eq!(
            objects,
            vec![
                "route `inside`".to_string(),
                "routesFirewallRules[2] (route `wiki`, policy `pol-1`)".to_string()
            ],
            "{:?}",
            c.refused
        );
        assert!(
            c.refused[0].reason.contains("inside the overlay"),
            "{}",
            c.refused[0]
        );
        let cfg = &c.config;
        assert!(accepts(cfg, "100.64.0.2", "192.0.2.10", 443));
        assert!(
            accepts(cfg, "100.64.0.2", "198.51.100.7", 80),
            "exit resource"
        );
        assert!(!accepts(cfg, "100.64.0.2", "100.64.9.5", 80));
        // The server withdraws the wiki policy: the revocation applies although the map
        // still has an entry the agent refuses.
        map.routes_firewall_rules.remove(0);
        let c = conv(&peer, &map);
        assert!(!accepts(&c.config, "100.64.0.2", "192.0.2.10", 443));
        assert_eq!(c.refused.len(), 2);
    }

    #[test]
    fn unrepresentable_rules_fail_closed_and_name_their_policy() {
        let (peer, mut map) = berlin_router();
        // An accept for a protocol we cannot enforce grants nothing.
        let mut custom = route_rule(&["100.64.0.2/32"], "192.0.2.10/32", 0, RuleAction::Accept);
        custom.protocol = RuleProtocol::Custom as i32;
        custom.port_info = None;
        custom.policy_id = b"sctp-pol".to_vec();
        // A drop with a reversed port range is widened to every port and protocol.
        let mut bad_drop = route_rule(&["100.64.0.2/32"], "192.0.2.10/32", 0, RuleAction::Drop);
        bad_drop.port_info = Some(PortInfo {
            port_selection: Some(PortSelection::Range(Range {
                start: 900,
                end: 800,
            })),
        });
        bad_drop.policy_id = b"deny-wiki".to_vec();
        map.routes_firewall_rules.extend([custom, bad_drop]);
        let c = conv(&peer, &map);
        assert_eq!(c.refused.len(), 2, "{:?}", c.refused);
        assert_eq!(c.refused[0].effect, Effect::Skipped);
        assert!(c.refused[0].to_string().contains("policy `sctp-pol`"));
        assert!(c.refused[0].reason.contains("protocol 5"));
        assert_eq!(c.refused[1].effect, Effect::Widened);
        assert!(c.refused[1].reason.contains("reversed"), "{}", c.refused[1]);
        assert!(
            matches!(
                verdict(&c.config, Side::Overlay, "100.64.0.2", "192.0.2.10", 6, 443),
                Verdict::Drop(_)
            ),
            "the widened drop beats the accept"
        );
        // An unknown action is a drop.
        let (peer, mut map) = berlin_router();
        map.routes_firewall_rules[0].action = 9;
        let c = conv(&peer, &map);
        assert!(!accepts(&c.config, "100.64.0.2", "192.0.2.10", 443));
        assert_eq!(c.refused[0].effect, Effect::Widened);
    }

    /// Defect: the routing peer dropped Site-to-VPN rules (a LAN resource as the source).
    #[test]
    fn site_to_vpn_rules_apply_on_the_router_and_on_the_destination_peer() {
        let (peer, mut map) = berlin_router();
        map.routes.push(route("printers", "192.0.2.0/28", 1));
        let mut s2v = route_rule(&["192.0.2.0/28"], "100.64.0.2/32", 9100, RuleAction::Accept);
        s2v.route_id = "printers".into();
        map.routes_firewall_rules.push(s2v);
        let c = conv(&peer, &map).config;
        assert!(matches!(
            verdict(&c, Side::Lan, "192.0.2.3", "100.64.0.2", 6, 9100),
            Verdict::Accept(_)
        ));
        assert!(matches!(
            verdict(&c, Side::Lan, "192.0.2.3", "100.64.0.2", 6, 22),
            Verdict::NoPolicy
        ));
        assert!(matches!(
            verdict(&c, Side::Lan, "192.0.2.99", "100.64.0.2", 6, 9100),
            Verdict::UnknownSource
        ));
        // alice's side: an In rule from the LAN prefix, and a route to it via the router.
        let alice = PeerConfig {
            address: "100.64.0.2/16".into(),
            ..Default::default()
        };
        let map = NetworkMap {
            serial: 1,
            remote_peers: vec![RemotePeerConfig {
                wg_pub_key: key(9),
                allowed_ips: vec!["100.64.0.1/32".into()],
                ..Default::default()
            }],
            routes: vec![route("printers", "192.0.2.0/28", 9)],
            firewall_rules: vec![FirewallRule {
                peer_ip: "192.0.2.0/28".into(),
                direction: RuleDirection::In as i32,
                action: RuleAction::Accept as i32,
                protocol: RuleProtocol::Tcp as i32,
                port_info: tcp(9100),
                ..Default::default()
            }],
            ..Default::default()
        };
        let alice_key = PrivateKey::from_bytes([2; 32]);
        let c = convert(&local(), &alice_key, &alice_key.public_key(), &alice, &map).unwrap();
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        assert!(matches!(
            verdict(&c.config, Side::Overlay, "192.0.2.3", "100.64.0.2", 6, 9100),
            Verdict::Accept(_)
        ));
        assert!(c.config.lan.is_empty());
    }

    /// Defect (found by tests/account_property): an In rule from a Site-to-VPN resource
    /// 0.0.0.0/0 (PeerIP `0.0.0.0/0`) was taken as "any peer", so the resource's LAN addresses,
    /// arriving through another routing peer, were refused.
    #[test]
    fn an_in_rule_from_0_0_0_0_slash_0_is_that_prefix_not_any_peer() {
        let alice_key = PrivateKey::from_bytes([2; 32]);
        let alice = PeerConfig {
            address: "100.64.0.2/16".into(),
            ..Default::default()
        };
        let rule = |peer_ip: &str| FirewallRule {
            peer_ip: peer_ip.into(),
            direction: RuleDirection::In as i32,
            action: RuleAction::Accept as i32,
            protocol: RuleProtocol::Tcp as i32,
            port_info: tcp(9100),
            ..Default::default()
        };
        let map = |peer_ip: &str| NetworkMap {
            serial: 1,
            remote_peers: vec![RemotePeerConfig {
                wg_pub_key: key(9),
                allowed_ips: vec!["100.64.0.1/32".into()],
                ..Default::default()
            }],
            firewall_rules: vec![rule(peer_ip)],
            ..Default::default()
        };
        let c = convert(
            &local(),
            &alice_key,
            &alice_key.public_key(),
            &alice,
            &map("0.0.0.0/0"),
        )
        .unwrap();
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        for src in ["192.0.2.3", "100.64.0.1"] {
            assert!(
                matches!(
                    verdict(&c.config, Side::Overlay, src, "100.64.0.2", 6, 9100),
                    Verdict::Accept(_)
                ),
                "{src}"
            );
        }
        // The bare address still means any peer (and only peers).
        let c = convert(
            &local(),
            &alice_key,
            &alice_key.public_key(),
            &alice,
            &map("0.0.0.0"),
        )
        .unwrap();
        assert!(accepts(&c.config, "100.64.0.1", "100.64.0.2", 9100));
        assert!(!accepts(&c.config, "192.0.2.3", "100.64.0.2", 9100));
    }

    #[test]
    fn bad_maps_are_refused_with_a_reason_and_bad_peers_alone() {
        let (mut peer, map) = berlin_router();
        peer.address = "not-an-ip".into();
        let e = convert(&local(), &private(), &private().public_key(), &peer, &map).unwrap_err();
        assert_eq!(e, MapError::Address("not-an-ip".into()));
        assert!(e.to_string().contains("peerConfig.address"));
        let (peer, mut map) = berlin_router();
        map.remote_peers.push(RemotePeerConfig {
            wg_pub_key: "short".into(),
            allowed_ips: vec!["100.64.0.3/32".into()],
            ..Default::default()
        });
        map.remote_peers.push(RemotePeerConfig {
            wg_pub_key: key(4),
            allowed_ips: vec!["100.64.0.2/32".into()],
            ..Default::default()
        });
        let c = conv(&peer, &map);
        assert_eq!(c.refused.len(), 3, "{:?}", c.refused);
        assert!(c.refused[0].reason.contains("wgPubKey"));
        assert!(c.refused[1].reason.contains("already in use"));
        assert!(c.refused[2].reason.contains("no usable overlay address"));
        assert!(accepts(&c.config, "100.64.0.2", "192.0.2.10", 443));
        assert_eq!(c.config.wireguard.unwrap().peers.len(), 1);
    }

    /// Defect: a map with the same serial was ignored; NetBird's server pushes revocations
    /// (posture, status) without raising the serial.
    #[test]
    fn a_same_serial_map_is_applied() {
        use crate::mgmt::{Follower, Offer};
        use swiftgate_proto::keys::KeyPair;
        let keys = KeyPair::from_private(private());
        let (peer, map) = berlin_router();
        let resp = |map: NetworkMap| SyncResponse {
            network_map: Some(NetworkMap {
                peer_config: Some(peer.clone()),
                ..map
            }),
            ..Default::default()
        };
        let mut f = Follower::new(0);
        let Offer::Apply(first) = f.offer(&local(), &keys, &resp(map.clone())) else {
            panic!("first map applied");
        };
        assert!(accepts(
            &first.converted.config,
            "100.64.0.2",
            "192.0.2.10",
            443
        ));
        // Same serial, alice's posture failed: the server sends the map without her rule.
        let mut revoked = map.clone();
        revoked.routes_firewall_rules.clear();
        let Offer::Apply(second) = f.offer(&local(), &keys, &resp(revoked)) else {
            panic!("a same-serial map must be applied");
        };
        assert!(!accepts(
            &second.converted.config,
            "100.64.0.2",
            "192.0.2.10",
            443
        ));
        let mut older = map;
        older.serial = 6;
        assert!(matches!(
            f.offer(&local(), &keys, &resp(older)),
            Offer::Older { serial: 6, last: 7 }
        ));
    }

    /// A golden map (tests/golden, produced by the management server's tests) converted as
    /// the peer it was made for: its own key is the router key of the routes whose router is
    /// no remote peer (a client's map never names its own key).
    fn golden(name: &str) -> Converted {
        use prost::Message as _;
        let path = format!("{}/../tests/golden/{name}.pb", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let resp = SyncResponse::decode(bytes.as_slice()).expect("golden SyncResponse");
        let map = resp.network_map.expect("network map");
        let peer = map.peer_config.clone().expect("peer config");
        let remote: BTreeSet<&str> = map
            .remote_peers
            .iter()
            .map(|p| p.wg_pub_key.as_str())
            .collect();
        let own = map
            .routes
            .iter()
            .find(|r| !remote.contains(r.peer.as_str()))
            .map(|r| PublicKey::from_base64(&r.peer).expect("router key"))
            .unwrap_or_else(|| PrivateKey::from_bytes([42; 32]).public_key());
        convert(&local(), &private(), &own, &peer, &map).expect("golden map usable")
    }

    fn golden_names() -> Vec<String> {
        let dir = format!("{}/../tests/golden", env!("CARGO_MANIFEST_DIR"));
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| {
                let n = e.ok()?.file_name().into_string().ok()?;
                n.strip_suffix(".pb").map(str::to_string)
            })
            .collect();
        v.sort();
        v
    }

    fn lan_verdict(c: &AgentConfig, src: &str, dst: &str, proto: u8, port: u16) -> Verdict {
        verdict(c, Side::Lan, src, dst, proto, port)
    }

    /// Everything the management server sends for the seeds' walkthroughs is honoured: no
    /// golden map leaves a refusal.
    #[test]
    fn every_golden_map_converts_without_refusals() {
        let names = golden_names();
        assert!(names.len() >= 15, "{names:?}");
        for n in names {
            let c = golden(&n);
            assert!(c.refused.is_empty(), "{n}: {:?}", c.refused);
        }
    }

    #[test]
    fn golden_berlin_office() {
        let gw = golden("berlin-office-office-gw").config;
        assert_eq!(gw.resources.len(), 1, "the domain half waits for DNS");
        assert_eq!(
            gw.resources[0].prefix,
            "10.10.0.5/32".parse::<IpNet>().unwrap()
        );
        assert!(gw.resources[0].masquerade);
        assert!(
            accepts(&gw, "100.77.0.1", "10.10.0.5", 443),
            "alice (Development)"
        );
        assert!(!accepts(&gw, "100.77.0.1", "10.10.0.5", 80));
        assert!(
            !accepts(&gw, "100.77.0.2", "10.10.0.5", 443),
            "bob is in no group"
        );
        assert!(
            !accepts(&gw, "100.77.0.1", "192.0.2.0", 443),
            "domain placeholder"
        );
        assert!(
            gw.own_addresses.iter().any(|a| a.addr().is_ipv6()),
            "address_v6 taken"
        );
        let alice = golden("berlin-office-alice-laptop").config;
        assert_eq!(alice.routes, vec!["10.10.0.5/32".parse::<IpNet>().unwrap()]);
        assert!(alice.lan.is_empty() && alice.resources.is_empty());
        let bob = golden("berlin-office-bob-laptop").config;
        assert!(bob.routes.is_empty() && bob.peers.is_empty());
    }

    #[test]
    fn golden_ha_routers_route_through_the_primary() {
        let alice = golden("ha-routers-alice-laptop").config;
        let wg = alice.wireguard.unwrap();
        let wiki: IpNet = "10.10.0.5/32".parse().unwrap();
        let via: Vec<&WgPeer> = wg
            .peers
            .iter()
            .filter(|p| p.allowed.contains(&wiki))
            .collect();
        assert_eq!(via.len(), 1);
        assert!(
            via[0].allowed.contains(&"100.77.0.3/32".parse().unwrap()),
            "metric 100"
        );
        for gw in ["ha-routers-office-gw", "ha-routers-office-gw-2"] {
            let c = golden(gw).config;
            assert!(accepts(&c, "100.77.0.1", "10.10.0.5", 443), "{gw}");
        }
    }

    #[test]
    fn golden_three_tier() {
        let dc = golden("three-tier-dc-gw").config;
        for src in [
            "100.77.0.1",
            "100.77.0.3",
            "100.77.0.4",
            "100.77.0.5",
            "100.77.0.6",
        ] {
            for dns in ["10.10.0.10", "10.10.0.11"] {
                for proto in [6, 17] {
                    assert!(
                        matches!(
                            verdict(&dc, Side::Overlay, src, dns, proto, 53),
                            Verdict::Accept(_)
                        ),
                        "{src} -> {dns}:53/{proto}"
                    );
                }
                assert!(!accepts(&dc, src, dns, 80));
            }
        }
        let db = golden("three-tier-db").config;
        assert!(accepts(&db, "100.77.0.4", "100.77.0.5", 5432), "app -> db");
        assert!(
            !accepts(&db, "100.77.0.3", "100.77.0.5", 5432),
            "web -/-> db"
        );
        assert!(accepts(&db, "100.77.0.6", "100.77.0.5", 9100), "monitoring");
        assert!(!accepts(&db, "100.77.0.4", "100.77.0.5", 22));
    }

    #[test]
    fn golden_site_to_vpn() {
        let gw = golden("site-to-vpn-gw").config;
        assert!(matches!(
            lan_verdict(&gw, "192.168.10.5", "100.77.0.1", 6, 9100),
            Verdict::Accept(_)
        ));
        assert!(!matches!(
            lan_verdict(&gw, "192.168.10.5", "100.77.0.1", 6, 22),
            Verdict::Accept(_)
        ));
        let laptop = golden("site-to-vpn-laptop").config;
        assert!(accepts(&laptop, "192.168.10.5", "100.77.0.1", 9100));
        assert!(!accepts(&laptop, "192.168.10.5", "100.77.0.1", 22));
        assert_eq!(
            laptop.routes,
            vec!["192.168.10.0/24".parse::<IpNet>().unwrap()]
        );
    }

    /// Site-to-Site: the source side routes the other LAN into the tunnel and enforces
    /// nothing; the destination side accepts the source LAN's addresses arriving from the
    /// overlay and routes replies back through the source's router.
    #[test]
    fn golden_site_to_site() {
        let berlin = golden("site-to-site-berlin-gw").config;
        assert_eq!(
            berlin.routes,
            vec!["192.168.20.0/24".parse::<IpNet>().unwrap()]
        );
        assert!(berlin.rules.is_empty());
        let hamburg = golden("site-to-site-hamburg-gw").config;
        assert!(accepts(&hamburg, "192.168.10.7", "192.168.20.9", 443));
        assert!(!accepts(&hamburg, "192.168.10.7", "192.168.20.9", 22));
        assert!(!accepts(&hamburg, "203.0.113.7", "192.168.20.9", 443));
        assert_eq!(
            hamburg.routes,
            vec!["192.168.10.0/24".parse::<IpNet>().unwrap()]
        );
        let wg = hamburg.wireguard.unwrap();
        assert!(
            wg.peers[0]
                .allowed
                .contains(&"192.168.10.0/24".parse().unwrap())
        );
    }

    #[test]
    fn golden_exit_node() {
        let gw = golden("exit-node-exit-gw").config;
        assert!(gw.resources.iter().any(|r| r.prefix.prefix_len() == 0));
        for proto in [1, 6, 17] {
            assert!(matches!(
                verdict(&gw, Side::Overlay, "100.77.0.1", "198.51.100.7", proto, 443),
                Verdict::Accept(_)
            ));
        }
        assert_eq!(
            verdict(&gw, Side::Overlay, "100.77.0.1", "100.77.0.9", 6, 443),
            Verdict::NoRoute,
            "the overlay is no part of the exit resource"
        );
        let carol = golden("exit-node-carol-laptop").config;
        assert!(carol.routes.contains(&"0.0.0.0/0".parse().unwrap()));
    }
}
