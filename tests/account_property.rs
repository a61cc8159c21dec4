//! Property test across management and agent: for random accounts, the routing peer's kernel
//! verdicts equal a reference evaluator of the account.
//!
//! Each case is a random account (groups, peers with client versions, approval and groups,
//! Networks with IP, CIDR (0.0.0.0/0 included), IPv6 and domain resources, enabled and disabled resources and routers by
//! peer or peer group, posture checks on the client version, policies with rules of every
//! protocol, ports and port ranges, accept and drop, bidirectional, disabled policies and rules,
//! peer targets, resource targets and Site-to-VPN rules with a resource as the source). It is
//! built through the management model's operations (so it is an account the API accepts), and
//! the map of routing peer `p0` goes the whole way a real one goes:
//! [`swiftgate_management::netmap::Netmapper`], its protobuf encoding, the agent's
//! [`swiftgate::netmap::convert`], then the loaded eBPF programs, which random new-flow packets
//! run through with `BPF_PROG_TEST_RUN`. Each account's configuration replaces the previous one
//! on the same loaded programs, as a new map does in the agent, so stale entries would show.
//! The conversion must apply the map whole: the only refusals a valid account may cause are a
//! prefix served twice (two resources with one address), applied once, and a client route to
//! a 0.0.0.0/0 resource (exit nodes are not supported on the client side yet).
//!
//! The kernel's verdict must equal [`reference`], written from NetBird's documented semantics of
//! the account, not from either side's code. For `p0` (R) and a packet from overlay peer S to D:
//! - D inside a resource (forward chain): accepted iff some enabled rule of an enabled policy has
//!   S among its sources (group membership, `All`, or S as the peer target), S approved and
//!   passing every posture check of the policy, and D inside an enabled IP/CIDR resource among
//!   its destinations (resource groups or the resource target) whose Network R routes (an
//!   enabled router naming R, or one of R's groups; R approved: an admin may revoke it);
//!   a rule to a resource never opens R itself, even one containing R's address (0.0.0.0/0);
//! - D = R's own address (input chain): a rule with S among the sources and R among the
//!   destination peers, or, for a bidirectional rule, R among the sources (passing the posture
//!   checks) and S among the destinations; or a Site-to-VPN rule to R (below) whose source
//!   prefix contains S's address;
//! - from a LAN address A to peer D (Site-to-VPN): a rule whose source is the resource itself
//!   (not a group: source groups name peers), enabled, IP/CIDR, containing A, in a Network R
//!   routes, and D (approved, not R) among its destination peers (posture checks concern source
//!   peers; a resource has none);
//! - from a LAN address A through the overlay to R (Site-to-VPN behind another routing peer,
//!   R a destination peer): such a rule whose source resource's Network R does not route (R's
//!   own LANs reach R directly, not through the tunnel);
//! - protocol and port match (no ports: every port; ICMP and "all" rules carry none);
//! - a matching drop rule beats any accept (the kernel must then report a drop by one of the
//!   dropping policies, or a default deny when nothing accepts towards that destination at
//!   all, see [`agrees`]); an accept must name one of the accepting policies; domain resources
//!   match nothing (their rules arrive as `isDynamic` placeholders); everything else is denied.
//!
//! Not covered: IPv6 packets (the management server gives peers IPv4 overlay addresses only,
//! IPv6 resources are in the accounts but only as things that must not open anything), R's
//! own LAN traffic to R (the host's, passed untouched), client-side maps (routes, HA route
//! selection, exit nodes on clients), masquerade and the rewritten bytes (the datapath tests),
//! established flows and replies.
//!
//! `SWIFTGATE_ACCOUNT_CASES` sets the number of accounts (default 3,000); each gets 8 packets.
//! Needs root.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicU16, Ordering},
};

use ipnet::IpNet;
use proptest::{
    prelude::*,
    test_runner::{Config as PtConfig, TestCaseError, TestRunner},
};
use swiftgate::{
    config::{AgentConfig, FlowEvents, stable_id},
    mgmt::Local,
    netmap::{Converted, Effect, MapObject, convert},
    policy::{Side, Verdict, evaluate},
};
use swiftgate_management::{
    model::{
        Account, DEFAULT_POLICY_NAME, GroupInput, MinVersionCheck, NetworkInput, PeerMeta,
        PeerUpdate, PolicyInput, PortSpec, PostureCheckInput, PostureChecksInput, RegisterPeer,
        ResourceInput, RouterInput, RuleInput, SetupKeyInput, TargetInput,
    },
    netmap::{Netmapper, proto},
};
use swiftgate_proto::keys::PrivateKey;
use swiftgate_testkit::kernel::{Lab, pkt};

/// Peer groups and resource groups share one namespace, as in NetBird.
const GROUPS: [&str; 4] = ["g0", "g1", "g2", "g3"];
/// Bit of a group mask that stands for the built-in All group (sources and destinations only).
const ALL: u8 = 1 << 4;
const NETWORKS: [&str; 3] = ["n0", "n1", "n2"];
/// Resource addresses: hosts and subnets on the lab's LANs (nested and overlapping), an IPv6
/// subnet, a domain and a wildcard domain.
const ADDRESSES: [&str; 12] = [
    "192.0.2.10",
    "192.0.2.11/32",
    "192.0.2.0/28",
    "192.0.2.0/24",
    "198.51.100.7",
    "198.51.100.0/25",
    "198.51.100.128/26",
    "2001:db8:1::/64",
    "wiki.berlin.internal",
    "*.berlin.internal",
    "192.0.2.8/29",
    "0.0.0.0/0",
];
/// Client versions in increasing order; a posture check asks for a minimum index.
const VERSIONS: [&str; 4] = ["0.40.0", "0.45.0", "0.50.1", "0.60.0"];
/// Rule port bounds.
const PORTS: [u16; 8] = [22, 53, 80, 443, 8000, 8080, 8081, 65535];
/// Packet ports: the bounds and ports between or beside them.
const PKT_PORTS: [u16; 10] = [22, 53, 80, 443, 8000, 8080, 8081, 65535, 8040, 444];
/// Overlay packet destinations besides the peers: inside, beside and outside the resources.
const OVERLAY_DST: [&str; 9] = [
    "192.0.2.10",
    "192.0.2.11",
    "192.0.2.5",
    "192.0.2.12",
    "192.0.2.200",
    "198.51.100.7",
    "198.51.100.100",
    "198.51.100.150",
    "198.51.100.222",
];
/// LAN packet sources (Site-to-VPN).
const LAN_SRC: [&str; 8] = [
    "192.0.2.10",
    "192.0.2.11",
    "192.0.2.5",
    "192.0.2.9",
    "192.0.2.77",
    "198.51.100.7",
    "198.51.100.100",
    "198.51.100.150",
];

#[derive(Debug, Clone)]
struct PeerSpec {
    groups: u8,
    version: usize,
    approved: bool,
}

#[derive(Debug, Clone)]
struct ResourceSpec {
    network: usize,
    address: usize,
    groups: u8,
    enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Via {
    Peer(usize),
    Groups(u8),
}

#[derive(Debug, Clone)]
struct RouterSpec {
    network: usize,
    via: Via,
    metric: u16,
    enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Groups(u8),
    Peer(usize),
    Resource(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    All,
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone)]
struct RuleSpec {
    enabled: bool,
    drop: bool,
    protocol: Proto,
    ports: Vec<(u16, u16)>,
    bidirectional: bool,
    sources: Target,
    destinations: Target,
}

#[derive(Debug, Clone)]
struct PolicySpec {
    enabled: bool,
    /// Bit i: posture check i.
    posture: u8,
    rules: Vec<RuleSpec>,
}

/// Where an overlay packet goes.
#[derive(Debug, Clone, Copy)]
enum Dst {
    /// [`OVERLAY_DST`]`[i]`.
    Addr(usize),
    /// An address inside resource `i` (a domain, IPv6 or 0.0.0.0/0 resource:
    /// [`OVERLAY_DST`]`[i]`).
    InResource(usize),
    /// Peer `i`'s overlay address (R's own: the input chain).
    Peer(usize),
}

#[derive(Debug, Clone)]
enum PacketSpec {
    /// From peer `src`.
    Overlay {
        src: usize,
        dst: Dst,
        proto: usize,
        port: usize,
    },
    /// From [`LAN_SRC`] to peer `dst`.
    Lan {
        src: usize,
        dst: usize,
        proto: usize,
        port: usize,
    },
    /// From [`LAN_SRC`] through the overlay: another routing peer's Site-to-VPN traffic to R
    /// (`dst` `None`), or its Site-to-Site traffic to [`OVERLAY_DST`]`[i]` behind R.
    Relayed {
        src: usize,
        dst: Option<usize>,
        proto: usize,
        port: usize,
    },
}

/// An account as the test draws it; peer 0 is the routing peer whose map is checked.
#[derive(Debug, Clone)]
struct Spec {
    peers: Vec<PeerSpec>,
    resources: Vec<ResourceSpec>,
    routers: Vec<RouterSpec>,
    /// Minimum [`VERSIONS`] index of each posture check.
    checks: [usize; 2],
    policies: Vec<PolicySpec>,
    packets: Vec<PacketSpec>,
}

fn target(peers: usize, resources: usize) -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => (1u8..32).prop_map(Target::Groups),
        1 => (0..peers).prop_map(Target::Peer),
        2 => (0..resources.max(1)).prop_map(Target::Resource),
    ]
}

fn rule(peers: usize, resources: usize) -> impl Strategy<Value = RuleSpec> {
    (
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.25),
        prop_oneof![
            Just(Proto::All),
            Just(Proto::Tcp),
            Just(Proto::Udp),
            Just(Proto::Icmp)
        ],
        prop::collection::vec((0..PORTS.len(), 0..PORTS.len()), 0..3),
        prop::bool::weighted(0.3),
        target(peers, resources),
        target(peers, resources),
    )
        .prop_map(
            |(enabled, drop, protocol, ports, bidirectional, sources, destinations)| RuleSpec {
                enabled,
                drop,
                protocol,
                ports: ports
                    .into_iter()
                    .map(|(a, b)| (PORTS[a].min(PORTS[b]), PORTS[a].max(PORTS[b])))
                    .collect(),
                bidirectional,
                sources,
                destinations,
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    (2usize..6, 1usize..7).prop_flat_map(|(np, nr)| {
        let peer = (0u8..16, 0..VERSIONS.len(), prop::bool::weighted(0.9)).prop_map(
            |(groups, version, approved)| PeerSpec {
                groups,
                version,
                approved,
            },
        );
        let resource = (
            0..NETWORKS.len(),
            0..ADDRESSES.len(),
            0u8..16,
            prop::bool::weighted(0.9),
        )
            .prop_map(|(network, address, groups, enabled)| ResourceSpec {
                network,
                address,
                groups,
                enabled,
            });
        let router = (
            0..NETWORKS.len(),
            // R routes most Networks (directly or through a group), other peers some.
            prop_oneof![
                3 => Just(Via::Peer(0)),
                1 => (1..np).prop_map(Via::Peer),
                2 => (1u8..16).prop_map(Via::Groups),
            ],
            1u16..4,
            prop::bool::weighted(0.85),
        )
            .prop_map(|(network, via, metric, enabled)| RouterSpec {
                network,
                via,
                metric: metric * 100,
                enabled,
            });
        let policy = (
            prop::bool::weighted(0.85),
            prop::bool::weighted(0.3).prop_flat_map(|some| {
                if some {
                    (1u8..4).boxed()
                } else {
                    Just(0u8).boxed()
                }
            }),
            prop::collection::vec(rule(np, nr), 1..4),
        )
            .prop_map(|(enabled, posture, rules)| PolicySpec {
                enabled,
                posture,
                rules,
            });
        // From a peer other than R (R's own address never arrives through the tunnel), to an
        // address behind R or to R itself.
        let src = 1..np;
        let dst = prop_oneof![
            3 => (0..OVERLAY_DST.len()).prop_map(Dst::Addr),
            3 => (0..nr).prop_map(Dst::InResource),
            2 => Just(Dst::Peer(0)),
            1 => (1..np).prop_map(Dst::Peer),
        ];
        let packet = prop_oneof![
            3 => (src, dst, 0usize..3, 0..PKT_PORTS.len())
                .prop_map(|(src, dst, proto, port)| PacketSpec::Overlay { src, dst, proto, port }),
            1 => (0..LAN_SRC.len(), 1..np, 0usize..3, 0..PKT_PORTS.len())
                .prop_map(|(src, dst, proto, port)| PacketSpec::Lan { src, dst, proto, port }),
            1 => (0..LAN_SRC.len(), prop::option::of(0..OVERLAY_DST.len()), 0usize..3, 0..PKT_PORTS.len())
                .prop_map(|(src, dst, proto, port)| PacketSpec::Relayed { src, dst, proto, port }),
        ];
        (
            prop::collection::vec(peer, np..=np),
            prop::collection::vec(resource, nr..=nr),
            prop::collection::vec(router, 1..6),
            (0..VERSIONS.len(), 0..VERSIONS.len()),
            prop::collection::vec(policy, 1..8),
            prop::collection::vec(packet, 8..=8),
            // An admin may revoke the routing peer's approval: its map then opens nothing.
            prop::bool::weighted(0.97),
        )
            .prop_map(
                |(mut peers, resources, routers, checks, policies, packets, r_approved)| {
                    peers[0].approved = r_approved;
                    normalize(Spec {
                        peers,
                        resources,
                        routers,
                        checks: [checks.0, checks.1],
                        policies,
                        packets,
                    })
                },
            )
    })
}

fn is_domain(address: usize) -> bool {
    ADDRESSES[address].parse::<IpAddr>().is_err() && ADDRESSES[address].parse::<IpNet>().is_err()
}

/// The resource's prefix (`None` for a domain).
fn prefix(address: usize) -> Option<IpNet> {
    let a = ADDRESSES[address];
    a.parse::<IpNet>()
        .ok()
        .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Turns what the model refuses into what it accepts (so every drawn account is built): ports
/// only with TCP and UDP, no empty group lists, a resource source (Site-to-VPN, Site-to-Site)
/// is an IP resource, a bidirectional rule to a resource has a resource source, a Network is
/// routed by a peer (or by the same groups) once.
fn normalize(mut s: Spec) -> Spec {
    let mut seen = BTreeSet::new();
    s.routers
        .retain(|r| seen.insert((r.network, format!("{:?}", r.via))));
    for p in &mut s.policies {
        for r in &mut p.rules {
            if !matches!(r.protocol, Proto::Tcp | Proto::Udp) {
                r.ports.clear();
            }
            for t in [&mut r.sources, &mut r.destinations] {
                match t {
                    Target::Groups(0) => *t = Target::Groups(1),
                    Target::Resource(i) if *i >= s.resources.len() => *t = Target::Groups(ALL),
                    _ => {}
                }
            }
            if let Target::Resource(i) = r.sources
                && is_domain(s.resources[i].address)
            {
                r.sources = Target::Groups(ALL);
            }
            // A rule to a resource is bidirectional only between two LANs (Site-to-Site).
            if matches!(r.destinations, Target::Resource(_))
                && !matches!(r.sources, Target::Resource(_))
            {
                r.bidirectional = false;
            }
        }
    }
    s
}

/// WireGuard private key of peer `i`.
fn private_key(i: usize) -> PrivateKey {
    PrivateKey::from_bytes([i as u8 + 1; 32])
}

/// The account built through the model's operations, and the ids the reference needs.
struct Built {
    account: Account,
    peer_ids: Vec<String>,
    /// Per policy, the ids a verdict may carry (the policy's and its rules').
    policy_ids: Vec<Vec<String>>,
}

fn groups_of(mask: u8) -> Vec<String> {
    let mut g: Vec<String> = GROUPS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    if mask & ALL != 0 {
        g.push("All".into());
    }
    g
}

fn target_input(t: &Target) -> (Vec<String>, Option<TargetInput>) {
    match t {
        Target::Groups(m) => (groups_of(*m), None),
        Target::Peer(i) => (
            vec![],
            Some(TargetInput {
                kind: "peer".into(),
                id: format!("p{i}"),
            }),
        ),
        Target::Resource(i) => (
            vec![],
            Some(TargetInput {
                kind: "resource".into(),
                id: format!("r{i}"),
            }),
        ),
    }
}

fn build(s: &Spec, public_keys: &[String]) -> Result<Built, String> {
    let e =
        |what: String| move |err: swiftgate_management::model::ModelError| format!("{what}: {err}");
    let mut a = Account::new("prop");
    a.delete_policy(DEFAULT_POLICY_NAME)
        .map_err(e("delete Default".into()))?;
    for g in GROUPS {
        a.create_group(&GroupInput {
            name: g.into(),
            ..Default::default()
        })
        .map_err(e(format!("group {g}")))?;
    }
    let (_, setup_key) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "k".into(),
                expires_in_secs: Some(0),
                ..Default::default()
            },
            0,
        )
        .map_err(e("setup key".into()))?;
    let mut peer_ids = Vec::new();
    for (i, p) in s.peers.iter().enumerate() {
        let peer = a
            .register_peer(
                &RegisterPeer {
                    setup_key: setup_key.clone(),
                    wg_pubkey: public_keys[i].clone(),
                    name: Some(format!("p{i}")),
                    meta: PeerMeta {
                        os: "linux".into(),
                        client_version: VERSIONS[p.version].into(),
                        ..Default::default()
                    },
                    ssh_pubkey: String::new(),
                },
                0,
            )
            .map_err(e(format!("peer p{i}")))?;
        a.update_peer(
            &peer.id,
            &PeerUpdate {
                groups: Some(groups_of(p.groups)),
                approved: Some(p.approved),
                ..Default::default()
            },
        )
        .map_err(e(format!("peer p{i} groups")))?;
        peer_ids.push(peer.id);
    }
    for n in NETWORKS {
        a.create_network(&NetworkInput {
            name: n.into(),
            description: String::new(),
        })
        .map_err(e(format!("network {n}")))?;
    }
    for (i, r) in s.resources.iter().enumerate() {
        a.create_resource(
            NETWORKS[r.network],
            &ResourceInput {
                name: format!("r{i}"),
                address: ADDRESSES[r.address].into(),
                groups: groups_of(r.groups),
                enabled: Some(r.enabled),
                ..Default::default()
            },
        )
        .map_err(e(format!("resource r{i}")))?;
    }
    for (i, r) in s.routers.iter().enumerate() {
        let (peer, peer_groups) = match &r.via {
            Via::Peer(p) => (Some(format!("p{p}")), vec![]),
            Via::Groups(m) => (None, groups_of(*m)),
        };
        a.create_router(
            NETWORKS[r.network],
            &RouterInput {
                peer,
                peer_groups,
                metric: Some(i64::from(r.metric)),
                masquerade: Some(i % 2 == 0),
                enabled: Some(r.enabled),
            },
        )
        .map_err(e(format!("router {i}")))?;
    }
    for (i, min) in s.checks.iter().enumerate() {
        a.create_posture_check(&PostureCheckInput {
            name: format!("pc{i}"),
            checks: PostureChecksInput {
                client_version: Some(MinVersionCheck {
                    min_version: VERSIONS[*min].into(),
                }),
                ..Default::default()
            },
            ..Default::default()
        })
        .map_err(e(format!("posture check pc{i}")))?;
    }
    let mut policy_ids = Vec::new();
    for (i, p) in s.policies.iter().enumerate() {
        let rules = p
            .rules
            .iter()
            .map(|r| {
                let (sources, source_resource) = target_input(&r.sources);
                let (destinations, destination_resource) = target_input(&r.destinations);
                RuleInput {
                    enabled: Some(r.enabled),
                    action: Some(if r.drop { "drop" } else { "accept" }.into()),
                    protocol: Some(
                        match r.protocol {
                            Proto::All => "all",
                            Proto::Tcp => "tcp",
                            Proto::Udp => "udp",
                            Proto::Icmp => "icmp",
                        }
                        .into(),
                    ),
                    ports: r
                        .ports
                        .iter()
                        .map(|(lo, hi)| PortSpec::Text(format!("{lo}-{hi}")))
                        .collect(),
                    bidirectional: r.bidirectional,
                    sources,
                    source_resource,
                    destinations,
                    destination_resource,
                    ..Default::default()
                }
            })
            .collect();
        let pol = a
            .create_policy(&PolicyInput {
                name: format!("pol{i}"),
                enabled: Some(p.enabled),
                source_posture_checks: (0..2)
                    .filter(|c| p.posture & (1 << c) != 0)
                    .map(|c| format!("pc{c}"))
                    .collect(),
                rules: Some(rules),
                ..Default::default()
            })
            .map_err(e(format!("policy pol{i}")))?;
        // The kernel names a verdict by the wire's PolicyID: the rule id on peer ACL rules,
        // the policy id on route rules (as NetBird's server sends them).
        let mut ids = vec![pol.id.clone()];
        ids.extend(pol.rules.iter().map(|r| r.id.clone()));
        policy_ids.push(ids);
    }
    Ok(Built {
        account: a,
        peer_ids,
        policy_ids,
    })
}

/// What the reference says about a packet: accepted or dropped by some policies (indexes into
/// [`Spec::policies`]), or denied by default.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Accept(BTreeSet<usize>),
    Drop(BTreeSet<usize>),
    Deny,
}

/// A packet as the reference sees it.
#[derive(Debug, Clone, Copy)]
enum From {
    /// An overlay peer.
    Peer(usize),
    /// A LAN address, on R's LAN.
    Lan(IpAddr),
    /// A LAN address behind another routing peer, through the overlay.
    Relayed(IpAddr),
}

#[derive(Debug, Clone, Copy)]
enum To {
    /// A peer's overlay address (R's own: the input chain).
    Peer(usize),
    /// An address behind R (or nowhere).
    Addr(IpAddr),
}

/// The reference evaluator: NetBird's semantics of the account, for routing peer 0.
/// `ips` are the peers' overlay addresses (the server assigns them).
fn reference(s: &Spec, ips: &[Ipv4Addr], from: From, to: To, proto: u8, port: u16) -> Outcome {
    const R: usize = 0;
    let peer_in = |t: &Target, p: usize| {
        s.peers[p].approved
            && match t {
                Target::Groups(m) => m & ALL != 0 || s.peers[p].groups & m & 0xf != 0,
                Target::Peer(i) => *i == p,
                Target::Resource(_) => false,
            }
    };
    let resource_in = |t: &Target, r: usize| {
        s.resources[r].enabled
            && match t {
                Target::Groups(m) => s.resources[r].groups & m & 0xf != 0,
                Target::Resource(i) => *i == r,
                Target::Peer(_) => false,
            }
    };
    // R (approved) routes a Network through an enabled router that names R or one of its
    // groups.
    let routed = |n: usize| {
        s.peers[R].approved
            && s.routers.iter().any(|rt| {
                rt.enabled
                    && rt.network == n
                    && match rt.via {
                        Via::Peer(p) => p == R,
                        Via::Groups(m) => s.peers[R].groups & m != 0,
                    }
            })
    };
    let passes = |p: usize, pol: &PolicySpec| {
        (0..2).all(|c| pol.posture & (1 << c) == 0 || s.peers[p].version >= s.checks[c])
    };
    let proto_port = |r: &RuleSpec| {
        let proto_ok = match r.protocol {
            Proto::All => true,
            Proto::Tcp => proto == 6,
            Proto::Udp => proto == 17,
            Proto::Icmp => proto == 1,
        };
        proto_ok
            && (r.ports.is_empty()
                || ((proto == 6 || proto == 17)
                    && r.ports.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port))))
    };
    // An enabled IP resource containing `a` whose Network R routes, on the side `t`.
    let behind_r = |t: &Target, a: IpAddr| {
        (0..s.resources.len()).any(|r| {
            resource_in(t, r)
                && prefix(s.resources[r].address).is_some_and(|p| p.contains(&a))
                && routed(s.resources[r].network)
        })
    };
    // Site-to-VPN to R as a destination peer: from any address of the source resource (an
    // overlay peer's too, when the prefix covers the overlay). Not when R routes the
    // resource's Network itself: its LAN reaches R directly, and R forwards that traffic to
    // other peers only.
    let s2v_to_r = |r: &RuleSpec, a: IpAddr| {
        matches!(r.sources, Target::Resource(x)
            if s.resources[x].enabled
                && prefix(s.resources[x].address).is_some_and(|p| p.contains(&a))
                && !routed(s.resources[x].network))
            && peer_in(&r.destinations, R)
    };
    // Site-to-Site into a Network R routes: from an address `a` of a source resource (arriving
    // over the overlay: another LAN's, or an overlay peer's when the prefix covers it) to `d`
    // in a destination resource of another Network of the same family. Only a resource source
    // opens (group sources are peers); a bidirectional rule also opens from the destination
    // side's resources to the source resource.
    let ip_resource = |x: usize| {
        s.resources[x]
            .enabled
            .then(|| prefix(s.resources[x].address))
            .flatten()
    };
    let lan_to_lan = |x: usize, a: IpAddr, dr: usize, d: IpAddr| {
        let (Some(px), Some(pd)) = (ip_resource(x), ip_resource(dr)) else {
            return false;
        };
        px.contains(&a)
            && pd.contains(&d)
            && px.addr().is_ipv4() == pd.addr().is_ipv4()
            && s.resources[x].network != s.resources[dr].network
            && routed(s.resources[dr].network)
    };
    let s2s = |r: &RuleSpec, a: IpAddr, d: IpAddr| {
        let Target::Resource(x) = r.sources else {
            return false;
        };
        (0..s.resources.len()).any(|dr| resource_in(&r.destinations, dr) && lan_to_lan(x, a, dr, d))
            || (r.bidirectional
                && (0..s.resources.len())
                    .any(|sr| resource_in(&r.destinations, sr) && lan_to_lan(sr, a, x, d)))
    };
    let (mut accepts, mut drops) = (BTreeSet::new(), BTreeSet::new());
    for (i, pol) in s.policies.iter().enumerate() {
        if !pol.enabled {
            continue;
        }
        for r in pol.rules.iter().filter(|r| r.enabled && proto_port(r)) {
            let hit = match (from, to) {
                (From::Peer(src), To::Addr(d)) => {
                    src != R
                        && ((peer_in(&r.sources, src)
                            && passes(src, pol)
                            && behind_r(&r.destinations, d))
                            || s2s(r, IpAddr::V4(ips[src]), d))
                }
                (From::Peer(src), To::Peer(R)) => {
                    src != R
                        && (s2v_to_r(r, IpAddr::V4(ips[src]))
                            || (peer_in(&r.sources, src)
                                && passes(src, pol)
                                && peer_in(&r.destinations, R))
                            || (r.bidirectional
                                && peer_in(&r.sources, R)
                                && passes(R, pol)
                                && peer_in(&r.destinations, src)))
                }
                // Peer to peer through R: not R's to forward.
                (From::Peer(_), To::Peer(_)) => false,
                // Site-to-VPN: the rule's source is the resource itself (group sources are
                // peers: resources in a source group open nothing).
                (From::Lan(a), To::Peer(d)) => {
                    d != R
                        && matches!(r.sources, Target::Resource(_))
                        && behind_r(&r.sources, a)
                        && peer_in(&r.destinations, d)
                }
                // Site-to-VPN to R as a destination peer, through another routing peer: the
                // source resource's Network is not R's (R's own LANs do not reach R through
                // the overlay, and R forwards their traffic to other peers only).
                (From::Relayed(a), To::Peer(R)) => s2v_to_r(r, a),
                // Site-to-Site: another LAN's hosts reach a LAN behind R.
                (From::Relayed(a), To::Addr(d)) => s2s(r, a, d),
                (From::Lan(_) | From::Relayed(_), _) => false,
            };
            if hit {
                if r.drop {
                    drops.insert(i);
                } else {
                    accepts.insert(i);
                }
            }
        }
    }
    if !drops.is_empty() {
        Outcome::Drop(drops)
    } else if !accepts.is_empty() {
        Outcome::Accept(accepts)
    } else {
        Outcome::Deny
    }
}

fn peer_ip(b: &Built, i: usize) -> Ipv4Addr {
    b.account.peers[&b.peer_ids[i]].ip
}

static SPORT: AtomicU16 = AtomicU16::new(20000);

/// A packet: what the reference sees, the side it arrives on, its text and bytes.
struct Packet {
    from: From,
    to: To,
    side: Side,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
    bytes: Vec<u8>,
}

fn packet(s: &Spec, b: &Built, p: &PacketSpec) -> Packet {
    let (from, to, side, src, dst, proto, port) = match *p {
        PacketSpec::Overlay {
            src,
            dst,
            proto,
            port,
        } => {
            let addr = |i: usize| OVERLAY_DST[i % OVERLAY_DST.len()].parse().unwrap();
            let (to, d) = match dst {
                Dst::Addr(i) => (To::Addr(addr(i)), addr(i)),
                Dst::InResource(i) => {
                    let a = match prefix(s.resources[i].address) {
                        Some(IpNet::V4(n)) if n.prefix_len() == 32 => IpAddr::V4(n.addr()),
                        // 0.0.0.0/0: an address on a lab LAN (the lab has no default route).
                        Some(IpNet::V4(n)) if n.prefix_len() == 0 => addr(i),
                        Some(IpNet::V4(n)) => {
                            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 5))
                        }
                        _ => addr(i),
                    };
                    (To::Addr(a), a)
                }
                Dst::Peer(i) => (To::Peer(i), IpAddr::V4(peer_ip(b, i))),
            };
            let sip = IpAddr::V4(peer_ip(b, src));
            (From::Peer(src), to, Side::Overlay, sip, d, proto, port)
        }
        PacketSpec::Lan {
            src,
            dst,
            proto,
            port,
        } => {
            let a: IpAddr = LAN_SRC[src].parse().unwrap();
            let d = IpAddr::V4(peer_ip(b, dst));
            (From::Lan(a), To::Peer(dst), Side::Lan, a, d, proto, port)
        }
        PacketSpec::Relayed {
            src,
            dst,
            proto,
            port,
        } => {
            let a: IpAddr = LAN_SRC[src].parse().unwrap();
            let (to, d) = match dst {
                None => (To::Peer(0), IpAddr::V4(peer_ip(b, 0))),
                Some(i) => {
                    let d: IpAddr = OVERLAY_DST[i].parse().unwrap();
                    (To::Addr(d), d)
                }
            };
            (From::Relayed(a), to, Side::Overlay, a, d, proto, port)
        }
    };
    let sport = SPORT.fetch_add(1, Ordering::Relaxed) % 40000 + 20000;
    let (src_t, dst_t) = (src.to_string(), dst.to_string());
    let port = PKT_PORTS[port];
    let (proto, bytes) = match proto {
        0 => (
            6u8,
            pkt::tcp(&src_t, sport, &dst_t, port, pkt::Tcp::Syn(0), b""),
        ),
        1 => (17u8, pkt::udp(&src_t, sport, &dst_t, port, b"x")),
        _ => (1u8, pkt::ping(&src_t, &dst_t, sport)),
    };
    let port = if proto == 1 { 0 } else { port };
    Packet {
        from,
        to,
        side,
        src,
        dst,
        proto,
        port,
        bytes,
    }
}

/// Denied by default (no rule decided).
fn by_default(v: Verdict) -> bool {
    matches!(
        v,
        Verdict::NoPolicy | Verdict::UnknownSource | Verdict::NoRoute
    )
}

/// Does the kernel's verdict say what the reference says? Accepts and drops must name one of
/// the policies responsible. A drop the reference finds may also show as a default deny: the
/// server leaves a destination peer out of the map when nothing accepts traffic to it, and
/// with it the drop rules that name it (nothing could pass there anyway).
fn agrees(want: &Outcome, got: Verdict, policy_ids: &[Vec<String>]) -> bool {
    let names = |i: &usize, g: u32| policy_ids[*i].iter().any(|id| stable_id("policy", id) == g);
    match (want, got) {
        (Outcome::Accept(ps), Verdict::Accept(g)) => ps.iter().any(|i| names(i, g)),
        (Outcome::Drop(ps), Verdict::Drop(g)) => ps.iter().any(|i| names(i, g)),
        (Outcome::Drop(_), v) => by_default(v),
        (Outcome::Deny, v) => by_default(v),
        _ => false,
    }
}

/// Refusals a valid account may cause: a prefix served twice (two resources with the same
/// address) is applied once, and rules for it name the one applied; a 0.0.0.0/0 resource R
/// uses through another routing peer (an exit node: not supported on the client side yet,
/// and no concern of R's own verdicts).
fn expected_refusal(r: &swiftgate::netmap::Refusal) -> bool {
    matches!(r.object, MapObject::Route(_))
        && r.effect == Effect::Skipped
        && (r.reason.contains("is already served by") || r.reason.starts_with("exit-node routes"))
}

/// The converted map as the lab runs it: the lab's interfaces and pins, every flow event, no
/// WireGuard device (packets are handed to the programs directly).
fn lab_config(c: &Converted) -> AgentConfig {
    let mut cfg = c.config.clone();
    cfg.overlay_l2 = true;
    // Conversion leaves the LAN interfaces out when R serves nothing; the lab keeps its
    // programs attached (LAN packets must still be refused).
    cfg.lan = vec!["lan".into(), "lan2".into()];
    cfg.flow_events = FlowEvents::All;
    cfg.wireguard = None;
    cfg
}

#[test]
fn routing_peer_verdicts_match_the_account() {
    let cases: u32 = std::env::var("SWIFTGATE_ACCOUNT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let public_keys: Vec<String> = (0..8)
        .map(|i| private_key(i).public_key().to_base64())
        .collect();
    let lab = RefCell::new(Lab::new(""));
    let local = Local {
        overlay: "ovl".into(),
        lan: vec!["lan".into(), "lan2".into()],
        listen_port: 51820,
        pin_path: Some(lab.borrow().pin_path().to_path_buf()),
        ..Default::default()
    };
    let checked = RefCell::new((0u32, BTreeMap::<String, u32>::new()));
    let mut runner = TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let started = std::time::Instant::now();
    let result = runner.run(&spec(), |s| {
        let built = build(&s, &public_keys)
            .map_err(|e| TestCaseError::fail(format!("the model refused the account: {e}")))?;
        let map = Netmapper::new(&built.account)
            .map_for(&built.peer_ids[0])
            .expect("p0 exists");
        let pb = proto::network_map(&map);
        let converted = convert(
            &local,
            &private_key(0),
            &private_key(0).public_key(),
            pb.peer_config.as_ref().expect("peerConfig"),
            &pb,
        )
        .map_err(|e| TestCaseError::fail(format!("map refused: {e}\n{s:#?}")))?;
        let unexpected: Vec<String> = converted
            .refused
            .iter()
            .filter(|r| !expected_refusal(r))
            .map(ToString::to_string)
            .collect();
        prop_assert!(
            unexpected.is_empty(),
            "the agent refused parts of a valid account's map: {unexpected:?}\n{s:#?}\n{pb:#?}"
        );
        let cfg = lab_config(&converted);
        let mut lab = lab.borrow_mut();
        lab.apply(cfg.clone())
            .map_err(|e| TestCaseError::fail(format!("configuration refused: {e}\n{s:#?}")))?;
        lab.clear_conntrack();
        for p in &s.packets {
            let pk = packet(&s, &built, p);
            let ips: Vec<Ipv4Addr> = (0..s.peers.len()).map(|i| peer_ip(&built, i)).collect();
            let want = reference(&s, &ips, pk.from, pk.to, pk.proto, pk.port);
            let got = lab.verdict(pk.side, &pk.bytes);
            if !agrees(&want, got, &built.policy_ids) {
                let mut why = String::new();
                let _ = writeln!(
                    why,
                    "{:?} {} -> {} proto {} port {} ({:?} -> {:?})",
                    pk.side, pk.src, pk.dst, pk.proto, pk.port, pk.from, pk.to
                );
                let _ = writeln!(why, "reference: {want:?}, kernel: {got:?}");
                let _ = writeln!(
                    why,
                    "agent's evaluate on the converted config: {:?}",
                    evaluate(&cfg, pk.side, pk.src, pk.dst, pk.proto, pk.port)
                );
                let ids: Vec<(usize, u32)> = built
                    .policy_ids
                    .iter()
                    .enumerate()
                    .flat_map(|(i, ids)| ids.iter().map(move |id| (i, stable_id("policy", id))))
                    .collect();
                let _ = writeln!(why, "policy ids (index, kernel id): {ids:?}");
                let ips: Vec<String> = (0..s.peers.len())
                    .map(|i| format!("p{i}={}", peer_ip(&built, i)))
                    .collect();
                let _ = writeln!(why, "peers: {}", ips.join(" "));
                let _ = writeln!(why, "account: {s:#?}");
                let _ = writeln!(why, "refused: {:?}", converted.refused);
                let _ = writeln!(why, "map: {pb:#?}");
                return Err(TestCaseError::fail(why));
            }
            let mut c = checked.borrow_mut();
            let chain = match (pk.from, pk.to) {
                (From::Peer(_), To::Peer(0)) => "Input",
                (From::Peer(_), _) => "Forward",
                (From::Lan(_), _) => "SiteToVpn",
                (From::Relayed(_), _) => "Relayed",
            };
            let kind = format!("{chain}/{want:?}");
            *c.1.entry(kind.split('(').next().unwrap().to_string())
                .or_default() += 1;
            if matches!(got, Verdict::Drop(_)) {
                *c.1.entry(format!("{chain}/KernelDrop")).or_default() += 1;
            }
        }
        checked.borrow_mut().0 += 1;
        Ok(())
    });
    let (accounts, kinds) = checked.into_inner();
    eprintln!(
        "checked {accounts} accounts in {:.1?}: {kinds:?}",
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        accounts >= cases,
        "only {accounts} of {cases} accounts were checked"
    );
    // Every outcome on both sides must have been exercised, or the test proves little.
    for chain in ["Forward", "Input", "SiteToVpn", "Relayed"] {
        for outcome in ["Accept", "Drop", "Deny", "KernelDrop"] {
            let k = format!("{chain}/{outcome}");
            assert!(
                kinds.get(&k).copied().unwrap_or(0) > 0,
                "outcome {k} never produced: {kinds:?}"
            );
        }
    }
}
