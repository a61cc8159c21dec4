//! Policy compilation into the eBPF maps, and the reference evaluator.
//!
//! The programs answer "may this new flow pass?" with three LPM lookups whose cost does not
//! depend on the number of rules: source address -> identity, destination address -> destination
//! id, then `{identity, destination, protocol, port}` -> verdict. This module computes those
//! tables from a [`AgentConfig`]:
//!
//! - Sources with the same rule membership share one identity (like Cilium's identities).
//! - Nested prefixes inherit the rules of every prefix that contains them, so longest-prefix
//!   match gives the same answer as "any rule whose prefix contains the address".
//! - Port ranges become bit prefixes over `(protocol, port)`. Those prefixes form a tree, so
//!   each entry can carry the combined verdict of every rule whose prefix contains it: the
//!   longest match then already knows that a drop rule covering it beats any accept.
//!
//! [`evaluate`] states the semantics directly (the seeds' and NetBird's: deny by default, drop
//! beats accept) and is what the property tests compare the kernel's verdicts against.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use swiftgate_common::{
    DestValue, POLICY_PREFIX_ANY, POLICY_PREFIX_PROTO, PolicyKey, PolicyValue, action, capacity,
    dest_flags, dest_kind,
};

use crate::config::{Action, AgentConfig, Endpoint, PortRange, Protocol, Rule, stable_id};

/// The contents the maps should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Source prefix -> identity.
    pub identities: BTreeMap<IpNet, u32>,
    /// Destination prefix -> value.
    pub dests: BTreeMap<IpNet, DestValue>,
    /// (prefix length, key) -> verdict.
    pub policy: BTreeMap<(u32, PolicyKey), PolicyValue>,
}

impl Compiled {
    /// Refuses tables that do not fit the maps (checked before anything is written).
    pub fn check_capacity(&self) -> anyhow::Result<()> {
        let checks = [
            ("policy entries", self.policy.len(), capacity::POLICY),
            (
                "IPv4 source prefixes",
                count_keys(&self.identities, true),
                capacity::IDENTITY,
            ),
            (
                "IPv6 source prefixes",
                count_keys(&self.identities, false),
                capacity::IDENTITY,
            ),
            (
                "IPv4 destination prefixes",
                count_keys(&self.dests, true),
                capacity::DEST,
            ),
            (
                "IPv6 destination prefixes",
                count_keys(&self.dests, false),
                capacity::DEST,
            ),
        ];
        for (what, n, cap) in checks {
            if n > cap as usize {
                anyhow::bail!("the configuration needs {n} {what}; the map holds {cap}");
            }
        }
        Ok(())
    }
}

fn count_keys<V>(m: &BTreeMap<IpNet, V>, v4: bool) -> usize {
    m.keys().filter(|p| p.addr().is_ipv4() == v4).count()
}

/// Destination id of the routing peer itself.
pub fn local_dest_id() -> u32 {
    stable_id("dest", "self")
}

/// Destination id of overlay addresses that belong to no known peer.
pub fn overlay_any_dest_id() -> u32 {
    stable_id("dest", "overlay")
}

/// One prefix over the 24 bits `(protocol << 16) | port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PortPrefix {
    len: u32,
    bits: u32,
}

impl PortPrefix {
    fn contains(&self, o: &PortPrefix) -> bool {
        self.len <= o.len
            && (self.len == 0 || (self.bits >> (24 - self.len)) == (o.bits >> (24 - self.len)))
    }
}

/// Splits an inclusive range into aligned power-of-two blocks.
fn range_prefixes(r: PortRange) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (r.start as u32, r.end as u32);
    while lo <= hi {
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros()));
        lo += size;
    }
    out
}

fn rule_prefixes(r: &Rule) -> Vec<PortPrefix> {
    match (r.protocol, r.protocol.number()) {
        (Protocol::All, _) | (_, None) => vec![PortPrefix { len: 0, bits: 0 }],
        (_, Some(p)) if r.ports.is_empty() => vec![PortPrefix {
            len: 8,
            bits: (p as u32) << 16,
        }],
        (_, Some(p)) => r
            .ports
            .iter()
            .flat_map(|range| range_prefixes(*range))
            .map(|(port, plen)| PortPrefix {
                len: 8 + plen,
                bits: ((p as u32) << 16) | port as u32,
            })
            .collect(),
    }
}

/// Where an address is: the endpoints whose prefixes contain each configured prefix.
struct Prefixes {
    /// prefix -> endpoints covering it (itself and enclosing ones).
    covering: BTreeMap<IpNet, BTreeSet<Endpoint>>,
}

impl Prefixes {
    /// Finds, for every prefix, the configured prefixes containing it by walking up its
    /// prefix lengths (at most 129 look-ups each), so large configurations stay linear.
    fn new(own: impl IntoIterator<Item = (IpNet, Endpoint)>) -> Self {
        let mut by_prefix: HashMap<IpNet, Vec<Endpoint>> = HashMap::new();
        for (p, e) in own {
            by_prefix.entry(p).or_default().push(e);
        }
        let mut covering = BTreeMap::new();
        for p in by_prefix.keys() {
            let mut set = BTreeSet::new();
            for len in 0..=p.prefix_len() {
                let Ok(sup) = IpNet::new(p.addr(), len) else {
                    continue;
                };
                if let Some(eps) = by_prefix.get(&sup.trunc()) {
                    set.extend(eps.iter().cloned());
                }
            }
            covering.insert(*p, set);
        }
        Prefixes { covering }
    }
}

/// For each endpoint, the rules that name it (as a source or as a destination).
fn rules_by_endpoint(cfg: &AgentConfig, sources: bool) -> HashMap<Endpoint, Vec<usize>> {
    let mut m: HashMap<Endpoint, Vec<usize>> = HashMap::new();
    for (i, r) in cfg.rules.iter().enumerate() {
        for e in if sources { &r.sources } else { &r.destinations } {
            m.entry(e.clone()).or_default().push(i);
        }
    }
    m
}

fn rules_covering(
    eps: &BTreeSet<Endpoint>,
    index: &HashMap<Endpoint, Vec<usize>>,
) -> BTreeSet<usize> {
    eps.iter()
        .filter_map(|e| index.get(e))
        .flatten()
        .copied()
        .collect()
}

/// Compiles a validated configuration into map contents. Linear in the size of the result:
/// the work is proportional to the (identity, destination, rule) triples that exist.
pub fn compile(cfg: &AgentConfig) -> Compiled {
    let mut out = Compiled::default();
    let peer_ips = || {
        cfg.peers
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.ips.iter().map(move |ip| (*ip, Endpoint::Peer(i))))
    };
    let resource_prefixes = || {
        cfg.resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.prefix, Endpoint::Resource(i)))
    };
    // Sources: peers' addresses, resources' prefixes and source-only ranges.
    let src = Prefixes::new(
        peer_ips().chain(resource_prefixes()).chain(
            cfg.source_prefixes
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, Endpoint::Prefix(i))),
        ),
    );
    // Destinations: own addresses, resources, peers.
    let dst = Prefixes::new(
        cfg.own_addresses
            .iter()
            .map(|a| (*a, Endpoint::SelfPeer))
            .chain(resource_prefixes())
            .chain(peer_ips()),
    );
    let by_source = rules_by_endpoint(cfg, true);
    let by_dest = rules_by_endpoint(cfg, false);

    // Identities: sources with the same set of rules (as a source) share one.
    let mut rules_of_ident: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
    let mut ident_of_rules: HashMap<BTreeSet<usize>, u32> = HashMap::new();
    for (prefix, eps) in &src.covering {
        let rules = rules_covering(eps, &by_source);
        let id = match ident_of_rules.get(&rules) {
            Some(id) => *id,
            None => {
                let names: Vec<String> = rules
                    .iter()
                    .map(|i| format!("{}#{i}", cfg.rules[*i].name))
                    .collect();
                let mut id = stable_id("identity", &names.join("\u{1f}"));
                while rules_of_ident.contains_key(&id) {
                    id = (id % 0x7fff_fffe) + 1;
                }
                rules_of_ident.insert(id, rules.clone());
                ident_of_rules.insert(rules, id);
                id
            }
        };
        out.identities.insert(*prefix, id);
    }

    // Destinations.
    let mut rules_of_dest: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
    for (prefix, eps) in &dst.covering {
        // The prefix's own endpoint decides kind, network and masquerade.
        let own = eps
            .iter()
            .filter(|e| endpoint_prefixes(cfg, e).contains(prefix))
            .min()
            .cloned()
            .expect("a prefix covers itself");
        let (dest_id, kind, network_id, flags) = match &own {
            Endpoint::SelfPeer => (local_dest_id(), dest_kind::LOCAL, 0, 0),
            Endpoint::Resource(i) => {
                let r = &cfg.resources[*i];
                let flags = if r.masquerade {
                    dest_flags::MASQUERADE
                } else {
                    0
                };
                (
                    stable_id("dest", &format!("resource:{prefix}")),
                    dest_kind::RESOURCE,
                    r.network_index as u32 + 1,
                    flags,
                )
            }
            Endpoint::Peer(_) | Endpoint::Prefix(_) => (
                stable_id("dest", &format!("peer:{prefix}")),
                dest_kind::PEER,
                0,
                0,
            ),
        };
        // This peer and overlay peers are reached *to*, never *through*: a resource containing
        // their addresses (an exit resource, 0.0.0.0/0) opens nothing to them. Reaching the
        // routing peer itself needs a peer-to-peer rule (NetBird's input chain).
        let eps: BTreeSet<Endpoint> = match own {
            Endpoint::SelfPeer | Endpoint::Peer(_) => eps
                .iter()
                .filter(|e| !matches!(e, Endpoint::Resource(_)))
                .cloned()
                .collect(),
            _ => eps.clone(),
        };
        rules_of_dest.insert(dest_id, rules_covering(&eps, &by_dest));
        out.dests.insert(
            *prefix,
            DestValue {
                dest_id,
                network_id,
                kind,
                flags,
                _pad: [0; 2],
            },
        );
    }
    for net in &cfg.overlay_nets {
        out.dests.entry(*net).or_insert(DestValue {
            dest_id: overlay_any_dest_id(),
            network_id: 0,
            kind: dest_kind::PEER,
            flags: 0,
            _pad: [0; 2],
        });
    }

    // The (identity, destination) pairs each rule connects, with the rules in config order.
    let mut idents_of_rule: Vec<Vec<u32>> = vec![Vec::new(); cfg.rules.len()];
    for (id, rules) in &rules_of_ident {
        for r in rules {
            idents_of_rule[*r].push(*id);
        }
    }
    let mut pairs: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
    for (dest, rules) in &rules_of_dest {
        for r in rules {
            for ident in &idents_of_rule[*r] {
                pairs.entry((*ident, *dest)).or_default().push(*r);
            }
        }
    }
    let prefixes: Vec<Vec<PortPrefix>> = cfg.rules.iter().map(rule_prefixes).collect();
    for ((ident, dest), mut both) in pairs {
        both.sort_unstable();
        let all: BTreeSet<PortPrefix> = both
            .iter()
            .flat_map(|i| prefixes[*i].iter().copied())
            .collect();
        for p in all {
            let mut verdict: Option<(Action, u32)> = None;
            for i in &both {
                if !prefixes[*i].iter().any(|q| q.contains(&p)) {
                    continue;
                }
                let r = &cfg.rules[*i];
                verdict = match (verdict, r.action) {
                    (None, a) => Some((a, r.id)),
                    (Some((Action::Accept, _)), Action::Drop) => Some((Action::Drop, r.id)),
                    (v, _) => v,
                };
            }
            let Some((act, id)) = verdict else { continue };
            let key = PolicyKey::new(ident, dest, (p.bits >> 16) as u8, (p.bits & 0xffff) as u16);
            let value = PolicyValue {
                policy_id: id,
                action: if act == Action::Drop {
                    action::DROP
                } else {
                    action::ACCEPT
                },
                _pad: [0; 3],
            };
            let len = POLICY_PREFIX_ANY + p.len;
            debug_assert!(len == POLICY_PREFIX_ANY || len >= POLICY_PREFIX_PROTO);
            out.policy.insert((len, key), value);
        }
    }
    out
}

fn endpoint_prefixes(cfg: &AgentConfig, e: &Endpoint) -> Vec<IpNet> {
    match e {
        Endpoint::SelfPeer => cfg.own_addresses.clone(),
        Endpoint::Resource(i) => vec![cfg.resources[*i].prefix],
        Endpoint::Peer(i) => cfg.peers[*i].ips.clone(),
        Endpoint::Prefix(i) => vec![cfg.source_prefixes[*i]],
    }
}

/// A verdict for a packet that would open a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by this policy id.
    Accept(u32),
    /// Dropped by this policy id's drop rule.
    Drop(u32),
    /// No rule matched (deny by default).
    NoPolicy,
    /// The source is no known peer or resource.
    UnknownSource,
    /// The destination is not reachable through this side.
    NoRoute,
    /// Not ours (LAN side only): the host's own traffic, passed untouched.
    PassHost,
}

/// Which interface a packet arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The overlay interface.
    Overlay,
    /// A LAN interface.
    Lan,
}

/// The reference semantics, straight from the rules (no compilation): may a packet from `src`
/// to `dst` with protocol `proto` (IP number) and destination port `dport` open a flow?
pub fn evaluate(
    cfg: &AgentConfig,
    side: Side,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    dport: u16,
) -> Verdict {
    let in_prefixes =
        |e: &Endpoint, a: IpAddr| endpoint_prefixes(cfg, e).iter().any(|p| p.contains(&a));
    let all_endpoints: Vec<Endpoint> = (0..cfg.peers.len())
        .map(Endpoint::Peer)
        .chain((0..cfg.resources.len()).map(Endpoint::Resource))
        .chain([Endpoint::SelfPeer])
        .collect();
    let mut dst_eps: BTreeSet<Endpoint> = all_endpoints
        .iter()
        .filter(|e| in_prefixes(e, dst))
        .cloned()
        .collect();
    // The most specific destination prefix decides the kind.
    let best = all_endpoints
        .iter()
        .flat_map(|e| {
            endpoint_prefixes(cfg, e)
                .into_iter()
                .map(move |p| (p, e.clone()))
        })
        .filter(|(p, _)| p.contains(&dst))
        .max_by_key(|(p, e)| (p.prefix_len(), std::cmp::Reverse(e.clone())))
        .map(|(_, e)| e);
    let in_overlay = cfg.overlay_nets.iter().any(|n| n.contains(&dst));
    // A resource that contains the overlay (an exit node's 0.0.0.0/0) never decides for an
    // overlay address: the overlay's own prefix is longer, and an address of no known peer
    // has no rules (the kernel's `overlay` destination).
    let best = match best {
        Some(Endpoint::Resource(_)) if in_overlay => {
            dst_eps.clear();
            None
        }
        // Nor does it open this peer or a peer: they are reached *to*, not *through* this
        // peer (the input chain needs a peer-to-peer rule).
        Some(Endpoint::SelfPeer | Endpoint::Peer(_)) => {
            dst_eps.retain(|e| !matches!(e, Endpoint::Resource(_)));
            best
        }
        b => b,
    };
    let src_eps: BTreeSet<Endpoint> = all_endpoints
        .iter()
        .filter(|e| **e != Endpoint::SelfPeer)
        .cloned()
        .chain((0..cfg.source_prefixes.len()).map(Endpoint::Prefix))
        .filter(|e| in_prefixes(e, src))
        .collect();
    match side {
        Side::Overlay => {
            if src_eps.is_empty() {
                return Verdict::UnknownSource;
            }
            match best {
                Some(Endpoint::SelfPeer) | Some(Endpoint::Resource(_)) => {}
                _ => return Verdict::NoRoute,
            }
        }
        Side::Lan => {
            let to_peer = matches!(best, Some(Endpoint::Peer(_))) || (best.is_none() && in_overlay);
            if !to_peer {
                return Verdict::PassHost;
            }
            if src_eps.is_empty() {
                return Verdict::UnknownSource;
            }
        }
    }
    let mut accept = None;
    for r in &cfg.rules {
        let proto_ok = match r.protocol {
            Protocol::All => true,
            Protocol::Icmp => proto == 1 || proto == 58,
            p => p.number() == Some(proto),
        };
        let port_ok = r.ports.is_empty() || r.ports.iter().any(|pr| pr.contains(dport));
        if proto_ok
            && port_ok
            && r.sources.iter().any(|e| src_eps.contains(e))
            && r.destinations.iter().any(|e| dst_eps.contains(e))
        {
            match r.action {
                Action::Drop => return Verdict::Drop(r.id),
                Action::Accept => {
                    accept.get_or_insert(r.id);
                }
            }
        }
    }
    accept.map_or(Verdict::NoPolicy, Verdict::Accept)
}

/// Looks a packet up in compiled tables the way the programs do (a userspace model of the
/// three LPM lookups), for unit tests of the compiler.
pub fn lookup(
    c: &Compiled,
    side: Side,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    dport: u16,
) -> Verdict {
    fn lpm<V: Copy>(m: &BTreeMap<IpNet, V>, a: IpAddr) -> Option<V> {
        m.iter()
            .filter(|(p, _)| p.contains(&a))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|(_, v)| *v)
    }
    let ident = lpm(&c.identities, src);
    let dest = lpm(&c.dests, dst);
    match side {
        Side::Overlay => {
            let Some(_) = ident else {
                return Verdict::UnknownSource;
            };
            match dest {
                Some(d) if d.kind == dest_kind::LOCAL || d.kind == dest_kind::RESOURCE => {}
                _ => return Verdict::NoRoute,
            }
        }
        Side::Lan => {
            match dest {
                Some(d) if d.kind == dest_kind::PEER => {}
                _ => return Verdict::PassHost,
            }
            if ident.is_none() {
                return Verdict::UnknownSource;
            }
        }
    }
    let (ident, dest) = (ident.unwrap_or_default(), dest.unwrap_or_default());
    let (p, port) = match proto {
        6 | 17 => (proto, dport),
        1 | 58 => (1, 0),
        o => (o, 0),
    };
    let want = PolicyKey::new(ident, dest.dest_id, p, port);
    let bits = |k: &PolicyKey| -> u128 {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&k.identity);
        b[4..8].copy_from_slice(&k.dest);
        b[8] = k.proto;
        b[9..11].copy_from_slice(&k.port);
        u128::from_be_bytes(b)
    };
    let wb = bits(&want);
    let hit = c
        .policy
        .iter()
        .filter(|((len, k), _)| {
            let shift = 128 - len;
            (bits(k) >> shift) == (wb >> shift)
        })
        .max_by_key(|((len, _), _)| *len)
        .map(|(_, v)| *v);
    match hit {
        Some(v) if v.action == action::ACCEPT => Verdict::Accept(v.policy_id),
        Some(v) => Verdict::Drop(v.policy_id),
        None => Verdict::NoPolicy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_into_aligned_blocks() {
        assert_eq!(range_prefixes(PortRange::single(443)), vec![(443, 16)]);
        assert_eq!(range_prefixes(PortRange::ALL).len(), 16);
        let blocks = range_prefixes(PortRange {
            start: 8000,
            end: 8080,
        });
        let covered: u32 = blocks.iter().map(|(_, l)| 1u32 << (16 - l)).sum();
        assert_eq!(covered, 81);
        for (start, len) in blocks {
            assert_eq!(start as u32 % (1 << (16 - len)), 0);
        }
    }

    pub(crate) const THREE_TIER: &str = r#"
[interface]
overlay = "sg0"
addresses = ["100.64.0.1/16"]
lan = ["eth1"]
[[peers]]
name = "devops"
ips = ["100.64.0.2"]
groups = ["peer-devops-prod"]
[[peers]]
name = "support"
ips = ["100.64.0.3"]
groups = ["peer-support"]
[[peers]]
name = "monitor"
ips = ["100.64.0.4"]
groups = ["svc-monitoring"]
[[networks]]
name = "orders"
[[networks.resources]]
name = "web"
address = "192.0.2.20"
groups = ["svc-orders-web-prod"]
[[networks.resources]]
name = "app"
address = "192.0.2.21"
groups = ["svc-orders-app-prod"]
[[networks.resources]]
name = "db"
address = "192.0.2.22"
groups = ["svc-orders-db-prod"]
[[networks.resources]]
name = "lan"
address = "192.0.2.0/24"
groups = ["whole-lan"]
[[policies]]
name = "users-web"
sources = ["peer-devops-prod", "peer-support"]
destinations = ["svc-orders-web-prod"]
protocol = "tcp"
ports = ["443"]
[[policies]]
name = "monitoring"
sources = ["svc-monitoring"]
destinations = ["svc-orders-web-prod", "svc-orders-app-prod", "svc-orders-db-prod"]
protocol = "tcp"
ports = ["9100", "9200"]
[[policies]]
name = "no-ssh"
sources = ["All"]
destinations = ["whole-lan"]
protocol = "tcp"
ports = ["22"]
action = "drop"
[[policies]]
name = "devops-all"
sources = ["peer-devops-prod"]
destinations = ["whole-lan", "self"]
protocol = "all"
"#;

    #[test]
    fn compiled_tables_agree_with_the_rules() {
        let cfg = AgentConfig::from_toml(THREE_TIER).unwrap();
        let c = compile(&cfg);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let id = |n: &str| stable_id("policy", n);
        let cases = [
            (
                "100.64.0.3",
                "192.0.2.20",
                6,
                443,
                Verdict::Accept(id("users-web")),
            ),
            ("100.64.0.3", "192.0.2.21", 6, 443, Verdict::NoPolicy),
            (
                "100.64.0.4",
                "192.0.2.22",
                6,
                9200,
                Verdict::Accept(id("monitoring")),
            ),
            ("100.64.0.4", "192.0.2.22", 6, 9300, Verdict::NoPolicy),
            // Nested: the /24 rule reaches the /32 web host too; drop beats accept.
            (
                "100.64.0.2",
                "192.0.2.20",
                6,
                22,
                Verdict::Drop(id("no-ssh")),
            ),
            (
                "100.64.0.2",
                "192.0.2.20",
                17,
                53,
                Verdict::Accept(id("devops-all")),
            ),
            (
                "100.64.0.2",
                "192.0.2.99",
                1,
                0,
                Verdict::Accept(id("devops-all")),
            ),
            (
                "100.64.0.2",
                "100.64.0.1",
                6,
                22,
                Verdict::Accept(id("devops-all")),
            ),
            ("100.64.0.3", "100.64.0.1", 6, 22, Verdict::NoPolicy),
            ("100.64.0.9", "192.0.2.20", 6, 443, Verdict::UnknownSource),
            ("100.64.0.2", "198.51.100.1", 6, 443, Verdict::NoRoute),
            ("100.64.0.2", "100.64.0.3", 6, 443, Verdict::NoRoute),
        ];
        for (s, d, p, port, want) in cases {
            let e = evaluate(&cfg, Side::Overlay, ip(s), ip(d), p, port);
            let l = lookup(&c, Side::Overlay, ip(s), ip(d), p, port);
            assert_eq!(e, want, "evaluate {s}->{d} {p}/{port}");
            assert_eq!(l, want, "lookup {s}->{d} {p}/{port}");
        }
        // LAN side: web host initiating to a peer has no policy; LAN to LAN is not ours.
        assert_eq!(
            evaluate(&cfg, Side::Lan, ip("192.0.2.20"), ip("100.64.0.2"), 6, 80),
            Verdict::NoPolicy
        );
        assert_eq!(
            lookup(&c, Side::Lan, ip("192.0.2.20"), ip("100.64.0.2"), 6, 80),
            Verdict::NoPolicy
        );
        assert_eq!(
            lookup(&c, Side::Lan, ip("192.0.2.20"), ip("192.0.2.21"), 6, 80),
            Verdict::PassHost
        );
    }

    /// Defect (found by tests/account_property): a rule to an exit resource (0.0.0.0/0) opened
    /// the routing peer's own address, which only a peer-to-peer rule may open.
    #[test]
    fn an_exit_resource_rule_does_not_open_the_routing_peer_itself() {
        let cfg = AgentConfig::from_toml(
            r#"
[interface]
overlay = "sg0"
addresses = ["100.64.0.1/16"]
lan = ["eth1"]
[[peers]]
name = "alice"
ips = ["100.64.0.2"]
[[networks]]
name = "exit"
[[networks.resources]]
name = "internet"
address = "0.0.0.0/0"
[[policies]]
name = "exit-users"
sources = ["alice"]
destinations = ["internet"]
protocol = "all"
[[policies]]
name = "ssh-router"
sources = ["alice"]
destinations = ["self"]
protocol = "tcp"
ports = ["22"]
"#,
        )
        .unwrap();
        let c = compile(&cfg);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let id = |n: &str| stable_id("policy", n);
        let cases = [
            ("192.0.2.20", 6, 443, Verdict::Accept(id("exit-users"))),
            ("100.64.0.1", 6, 22, Verdict::Accept(id("ssh-router"))),
            ("100.64.0.1", 6, 443, Verdict::NoPolicy),
            ("100.64.0.1", 1, 0, Verdict::NoPolicy),
        ];
        for (d, p, port, want) in cases {
            let src = ip("100.64.0.2");
            let e = evaluate(&cfg, Side::Overlay, src, ip(d), p, port);
            let l = lookup(&c, Side::Overlay, src, ip(d), p, port);
            assert_eq!(e, want, "evaluate -> {d} {p}/{port}");
            assert_eq!(l, want, "lookup -> {d} {p}/{port}");
        }
    }

    #[test]
    fn identities_are_shared_by_equal_membership() {
        let cfg = AgentConfig::from_toml(THREE_TIER).unwrap();
        let c = compile(&cfg);
        let web = c.identities[&"192.0.2.20/32".parse().unwrap()];
        let app = c.identities[&"192.0.2.21/32".parse().unwrap()];
        assert_eq!(web, app, "resources in no source rule share an identity");
        let devops = c.identities[&"100.64.0.2/32".parse().unwrap()];
        let support = c.identities[&"100.64.0.3/32".parse().unwrap()];
        assert_ne!(devops, support);
    }
}
