//! Network-map tests on the seeds' scenarios: the Berlin Office walkthrough, the three-tier
//! example, the Default policy, the rollback policy, posture checks, Site-to-VPN.

use std::net::IpAddr;

use ipnet::IpNet;

use super::*;
use crate::model::*;

pub(super) fn wg_key(i: u32) -> String {
    use base64::Engine as _;
    let mut b = [9u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A small builder over the model for scenarios.
pub(super) struct World {
    pub(super) a: Account,
    next_key: u32,
}

impl World {
    /// An account with fixed overlay ranges (100.77.0.0/16, fd5e:7767:a7e0:1::/64) so maps
    /// are reproducible.
    pub(super) fn new() -> Self {
        let mut a = Account::new("t");
        a.update_settings(&SettingsInput {
            overlay_range: Some("100.77.0.0/16".into()),
            overlay_range_v6: Some("fd5e:7767:a7e0:1::/64".into()),
            ..Default::default()
        })
        .expect("fixed ranges are valid");
        World { a, next_key: 1 }
    }

    pub(super) fn zero_trust() -> Self {
        let mut w = World::new();
        w.a.delete_policy(DEFAULT_POLICY_NAME).unwrap();
        w
    }

    pub(super) fn group(&mut self, name: &str) {
        self.a
            .create_group(&GroupInput {
                name: name.into(),
                ..Default::default()
            })
            .unwrap();
    }

    pub(super) fn peer_with(&mut self, name: &str, groups: &[&str], version: &str) -> Peer {
        let key_name = format!("key-{name}");
        let (_, key) = self
            .a
            .create_setup_key(
                &SetupKeyInput {
                    name: key_name,
                    kind: Some("one-off".into()),
                    auto_groups: groups.iter().map(|g| g.to_string()).collect(),
                    ..Default::default()
                },
                0,
            )
            .unwrap();
        self.next_key += 1;
        self.a
            .register_peer(
                &RegisterPeer {
                    setup_key: key,
                    wg_pubkey: wg_key(self.next_key),
                    name: Some(name.into()),
                    meta: PeerMeta {
                        os: "linux".into(),
                        client_version: version.into(),
                        ..Default::default()
                    },
                    ssh_pubkey: String::new(),
                },
                0,
            )
            .unwrap()
    }

    pub(super) fn peer(&mut self, name: &str, groups: &[&str]) -> Peer {
        self.peer_with(name, groups, "0.50.0")
    }

    pub(super) fn network(&mut self, name: &str) {
        self.a
            .create_network(&NetworkInput {
                name: name.into(),
                description: String::new(),
            })
            .unwrap();
    }

    pub(super) fn resource(
        &mut self,
        net: &str,
        name: &str,
        address: &str,
        groups: &[&str],
    ) -> Resource {
        self.a
            .create_resource(
                net,
                &ResourceInput {
                    name: name.into(),
                    address: address.into(),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                    ..Default::default()
                },
            )
            .unwrap()
    }

    pub(super) fn router(&mut self, net: &str, peer: &str, metric: i64, masquerade: bool) {
        self.a
            .create_router(
                net,
                &RouterInput {
                    peer: Some(peer.into()),
                    metric: Some(metric),
                    masquerade: Some(masquerade),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    pub(super) fn policy(
        &mut self,
        name: &str,
        src: &[&str],
        dst: &[&str],
        proto: &str,
        ports: &[&str],
    ) -> Policy {
        self.a
            .create_policy(&PolicyInput {
                name: name.into(),
                sources: Some(src.iter().map(|g| g.to_string()).collect()),
                destinations: Some(dst.iter().map(|g| g.to_string()).collect()),
                protocol: Some(proto.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|p| PortSpec::Text(p.to_string()))
                        .collect(),
                ),
                ..Default::default()
            })
            .unwrap()
    }

    pub(super) fn map(&self, peer: &str) -> NetworkMap {
        let id = self.a.peer_id(peer).unwrap();
        compute_network_map(&self.a, &id).unwrap()
    }
}

fn names(m: &NetworkMap) -> Vec<&str> {
    let mut v: Vec<&str> = m.remote_peers.iter().map(|p| p.name.as_str()).collect();
    v.sort();
    v
}

fn ip_of(p: &Peer) -> IpNet {
    IpNet::from(IpAddr::V4(p.ip))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub(super) fn berlin() -> (World, Peer, Peer, Peer) {
    let mut w = World::zero_trust();
    w.group("Development");
    w.group("Internal Apps");
    let alice = w.peer("alice-laptop", &["Development"]);
    let bob = w.peer("bob-laptop", &[]);
    let gw = w.peer("office-gw", &[]);
    w.network("Berlin Office");
    w.resource(
        "Berlin Office",
        "Internal Wiki",
        "10.10.0.5/32",
        &["Internal Apps"],
    );
    w.resource(
        "Berlin Office",
        "Grafana",
        "grafana.berlin.internal",
        &["Internal Apps"],
    );
    w.router("Berlin Office", "office-gw", 100, true);
    (w, alice, bob, gw)
}

#[test]
fn berlin_office_before_the_policy_nothing_is_reachable() {
    let (w, ..) = berlin();
    let m = w.map("alice-laptop");
    assert!(m.remote_peers.is_empty() && m.routes.is_empty() && m.firewall_rules.is_empty());
    // The router knows what it serves (routes with itself as peer) but allows nobody.
    let g = w.map("office-gw");
    assert_eq!(g.routes.len(), 2);
    assert!(g.route_firewall_rules.is_empty() && g.remote_peers.is_empty());
}

#[test]
fn berlin_office_walkthrough() {
    let (mut w, alice, _bob, gw) = berlin();
    let pol = w.policy(
        "dev-to-apps",
        &["Development"],
        &["Internal Apps"],
        "tcp",
        &["443"],
    );

    let m = w.map("alice-laptop");
    assert_eq!(names(&m), vec!["office-gw"]);
    assert!(
        m.firewall_rules.is_empty(),
        "no peer-to-peer access to the router itself"
    );
    assert!(m.route_firewall_rules.is_empty());
    assert_eq!(m.routes.len(), 2);
    let wiki = m
        .routes
        .iter()
        .find(|r| r.net_id == "Internal Wiki")
        .unwrap();
    assert_eq!(wiki.network, Some(net("10.10.0.5/32")));
    assert_eq!(wiki.network_type, NetworkType::Ipv4);
    assert_eq!(wiki.router_peer_id, gw.id);
    assert_eq!(wiki.router_wg_pubkey, gw.wg_pubkey);
    assert_eq!(wiki.metric, 100);
    assert!(wiki.masquerade);
    let grafana = m.routes.iter().find(|r| r.net_id == "Grafana").unwrap();
    assert_eq!(grafana.network_type, NetworkType::Domain);
    assert_eq!(grafana.domains, vec!["grafana.berlin.internal".to_string()]);
    assert!(grafana.network.is_none() && grafana.keep_route);

    let g = w.map("office-gw");
    assert_eq!(names(&g), vec!["alice-laptop"]);
    assert_eq!(g.route_firewall_rules.len(), 2);
    let r = g
        .route_firewall_rules
        .iter()
        .find(|r| r.destination == Some(net("10.10.0.5/32")))
        .unwrap();
    assert_eq!(r.source_ranges, vec![ip_of(&alice)]);
    assert_eq!(r.protocol, Protocol::Tcp);
    assert_eq!(r.port, Some(PortRange::single(443)));
    assert_eq!(r.action, Action::Accept);
    assert_eq!(r.policy_id, pol.id);
    assert!(r.route_id.ends_with(&format!(":{}", gw.id)));
    let d = g
        .route_firewall_rules
        .iter()
        .find(|r| r.is_dynamic)
        .unwrap();
    assert_eq!(d.domains, vec!["grafana.berlin.internal".to_string()]);
    assert!(
        g.routes
            .iter()
            .all(|r| r.router_peer_id == gw.id && r.masquerade)
    );

    // Bob is in no source group: nothing.
    let b = w.map("bob-laptop");
    assert!(b.remote_peers.is_empty() && b.routes.is_empty());

    // Masquerade off on the router shows in every route.
    let rid = w.a.routers.keys().next().unwrap().clone();
    w.a.update_router(
        &rid,
        &RouterInput {
            peer: Some("office-gw".into()),
            metric: Some(100),
            masquerade: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(w.map("alice-laptop").routes.iter().all(|r| !r.masquerade));

    // Access to the router itself needs a peer-to-peer policy (input chain).
    w.group("Routers");
    w.a.update_peer(
        "office-gw",
        &PeerUpdate {
            groups: Some(vec!["Routers".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    w.policy("dev-ssh-gw", &["Development"], &["Routers"], "tcp", &["22"]);
    let m = w.map("alice-laptop");
    assert_eq!(m.firewall_rules.len(), 1);
    assert_eq!(m.firewall_rules[0].direction, Direction::Out);
    assert_eq!(m.firewall_rules[0].peer_ip, ip_of(&gw));
    let g = w.map("office-gw");
    assert!(g.firewall_rules.iter().any(|r| r.direction == Direction::In
        && r.peer_ip == ip_of(&alice)
        && r.port == Some(PortRange::single(22))));
}

#[test]
fn high_availability_routers_and_disabled_things() {
    let (mut w, ..) = berlin();
    w.peer("office-gw-2", &[]);
    w.router("Berlin Office", "office-gw-2", 200, true);
    w.policy(
        "dev-to-apps",
        &["Development"],
        &["Internal Apps"],
        "tcp",
        &["443"],
    );
    let m = w.map("alice-laptop");
    assert_eq!(names(&m), vec!["office-gw", "office-gw-2"]);
    let wiki: Vec<&Route> = m
        .routes
        .iter()
        .filter(|r| r.net_id == "Internal Wiki")
        .collect();
    assert_eq!(
        wiki.len(),
        2,
        "one route per router, same net_id (HA group)"
    );
    let mut metrics: Vec<u16> = wiki.iter().map(|r| r.metric).collect();
    metrics.sort();
    assert_eq!(metrics, vec![100, 200]);

    // A disabled resource is routed to nobody.
    w.a.update_resource(
        "Internal Wiki",
        &ResourceInput {
            name: "Internal Wiki".into(),
            address: "10.10.0.5/32".into(),
            groups: vec!["Internal Apps".into()],
            enabled: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    let m = w.map("alice-laptop");
    assert!(m.routes.iter().all(|r| r.net_id != "Internal Wiki"));
    // A disabled policy grants nothing.
    w.a.set_policy_enabled("dev-to-apps", false).unwrap();
    assert!(w.map("alice-laptop").routes.is_empty());
}

#[test]
fn router_group_routes_with_one_metric() {
    let mut w = World::zero_trust();
    w.group("Development");
    w.group("Apps");
    w.group("Gateways");
    w.peer("dev", &["Development"]);
    w.peer("gw-a", &["Gateways"]);
    w.peer("gw-b", &["Gateways"]);
    w.network("DC");
    w.resource("DC", "LAN", "10.20.0.0/16", &["Apps"]);
    w.a.create_router(
        "DC",
        &RouterInput {
            peer_groups: vec!["Gateways".into()],
            metric: Some(50),
            ..Default::default()
        },
    )
    .unwrap();
    w.policy("dev-lan", &["Development"], &["Apps"], "all", &[]);
    let m = w.map("dev");
    assert_eq!(names(&m), vec!["gw-a", "gw-b"]);
    assert!(
        m.routes
            .iter()
            .all(|r| r.metric == 50 && r.network == Some(net("10.20.0.0/16")))
    );
    let g = w.map("gw-b");
    assert_eq!(g.route_firewall_rules.len(), 1);
    assert_eq!(g.route_firewall_rules[0].protocol, Protocol::All);
    assert_eq!(g.route_firewall_rules[0].port, None);
}

#[test]
fn default_policy_connects_everyone_and_deleting_it_stops_everything() {
    let mut w = World::new();
    let a = w.peer("a", &[]);
    let b = w.peer("b", &[]);
    w.peer("c", &[]);
    let m = w.map("a");
    assert_eq!(names(&m), vec!["b", "c"]);
    // All protocols, both directions, to and from each other peer.
    assert_eq!(m.firewall_rules.len(), 4);
    assert!(m.firewall_rules.iter().any(|r| r.peer_ip == ip_of(&b)
        && r.direction == Direction::In
        && r.protocol == Protocol::All
        && r.port.is_none()));
    assert!(
        w.map("b")
            .firewall_rules
            .iter()
            .any(|r| r.peer_ip == ip_of(&a) && r.direction == Direction::Out)
    );

    w.a.delete_policy(DEFAULT_POLICY_NAME).unwrap();
    for p in ["a", "b", "c"] {
        let m = w.map(p);
        assert!(
            m.remote_peers.is_empty() && m.firewall_rules.is_empty(),
            "{p} still sees something"
        );
    }
}

#[test]
fn disabled_emergency_policy_enabled_for_rollback() {
    let mut w = World::zero_trust();
    w.group("peer-devops-prod");
    w.group("net-aws-euc1-prod");
    w.peer("devops", &["peer-devops-prod"]);
    w.peer("aws-gw", &[]);
    w.network("aws-euc1");
    w.resource("aws-euc1", "vpc", "10.30.0.0/16", &["net-aws-euc1-prod"]);
    w.router("aws-euc1", "aws-gw", 100, true);
    w.a.create_policy(&PolicyInput {
        name: "emergency".into(),
        enabled: Some(false),
        sources: Some(vec!["peer-devops-prod".into()]),
        destinations: Some(vec!["net-aws-euc1-prod".into()]),
        protocol: Some("all".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(w.map("devops").routes.is_empty());
    assert!(w.map("aws-gw").route_firewall_rules.is_empty());

    w.a.set_policy_enabled("emergency", true).unwrap();
    let m = w.map("devops");
    assert_eq!(m.routes.len(), 1);
    assert_eq!(names(&m), vec!["aws-gw"]);
    assert_eq!(w.map("aws-gw").route_firewall_rules.len(), 1);

    w.a.set_policy_enabled("emergency", false).unwrap();
    assert!(w.map("devops").routes.is_empty());
}

#[test]
fn posture_peer_below_min_client_version_is_not_a_source() {
    let (mut w, alice, ..) = berlin();
    let old = w.peer_with("old-laptop", &["Development"], "0.44.2");
    w.a.create_posture_check(&PostureCheckInput {
        name: "min-client".into(),
        checks: PostureChecksInput {
            client_version: Some(MinVersionCheck {
                min_version: "0.45.0".into(),
            }),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    w.a.create_policy(&PolicyInput {
        name: "dev-to-apps".into(),
        source_posture_checks: vec!["min-client".into()],
        sources: Some(vec!["Development".into()]),
        destinations: Some(vec!["Internal Apps".into()]),
        protocol: Some("tcp".into()),
        ports: Some(vec![PortSpec::Number(443)]),
        ..Default::default()
    })
    .unwrap();
    let g = w.map("office-gw");
    assert_eq!(names(&g), vec!["alice-laptop"]);
    for r in &g.route_firewall_rules {
        assert_eq!(r.source_ranges, vec![ip_of(&alice)]);
        assert!(!r.source_ranges.contains(&ip_of(&old)));
    }
    let o = w.map("old-laptop");
    assert!(o.routes.is_empty() && o.remote_peers.is_empty());
    assert_eq!(w.map("alice-laptop").routes.len(), 2);

    // Upgrading the client restores access.
    let mut meta = w.a.peers[&old.id].meta.clone();
    meta.client_version = "0.45.0".into();
    w.a.login_peer(&old.wg_pubkey, Some(&meta), 1).unwrap();
    assert_eq!(w.map("old-laptop").routes.len(), 2);
}

#[test]
fn process_checks_are_sent_to_source_peers() {
    let (mut w, ..) = berlin();
    w.a.create_posture_check(&PostureCheckInput {
        name: "edr".into(),
        checks: PostureChecksInput {
            process: Some(ProcessCheck {
                processes: vec![ProcessSpec {
                    linux_path: Some("/opt/edr/agent".into()),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    w.a.create_policy(&PolicyInput {
        name: "dev-to-apps".into(),
        source_posture_checks: vec!["edr".into()],
        sources: Some(vec!["Development".into()]),
        destinations: Some(vec!["Internal Apps".into()]),
        ..Default::default()
    })
    .unwrap();
    let m = w.map("alice-laptop");
    assert_eq!(
        m.checks,
        vec![ClientCheck {
            files: vec!["/opt/edr/agent".into()]
        }]
    );
    assert!(m.routes.is_empty(), "process not reported running yet");
}

#[test]
fn unapproved_peers_get_and_give_nothing() {
    let mut w = World::new();
    w.a.update_settings(&SettingsInput {
        peer_approval_required: Some(true),
        ..Default::default()
    })
    .unwrap();
    w.peer("a", &[]);
    w.peer("b", &[]);
    let m = w.map("a");
    assert!(!m.peer_config.approved && m.remote_peers.is_empty());
    w.a.approve_peer("a").unwrap();
    assert!(w.map("a").remote_peers.is_empty(), "b is not approved yet");
    w.a.approve_peer("b").unwrap();
    assert_eq!(names(&w.map("a")), vec!["b"]);
}

/// The seeds' three-tier example. The tiers are servers running the agent (peer groups);
/// the DNS resolvers are resources behind a routing peer.
/// The three-tier example (zero-trust.txt 4.4): users to web 443, web to app 8443, app to DB
/// 5432, monitoring to all tiers 9100/9200, everyone to the DNS resolvers (resources behind
/// dc-gw) on 53 udp and tcp. Peers: devops, support, web, app, db, prometheus, dc-gw.
pub(super) fn three_tier() -> World {
    let mut w = World::zero_trust();
    for g in [
        "peer-devops-prod",
        "peer-support",
        "svc-orders-web-prod",
        "svc-orders-app-prod",
        "svc-orders-db-prod",
        "svc-monitoring",
        "svc-dns-prod",
    ] {
        w.group(g);
    }
    w.peer("devops", &["peer-devops-prod"]);
    w.peer("support", &["peer-support"]);
    w.peer("web", &["svc-orders-web-prod"]);
    w.peer("app", &["svc-orders-app-prod"]);
    w.peer("db", &["svc-orders-db-prod"]);
    w.peer("prometheus", &["svc-monitoring"]);
    w.peer("dc-gw", &[]);
    w.network("net-dc-dc1-lan");
    w.resource(
        "net-dc-dc1-lan",
        "dns-1",
        "10.10.0.10/32",
        &["svc-dns-prod"],
    );
    w.resource("net-dc-dc1-lan", "dns-2", "10.10.0.11", &["svc-dns-prod"]);
    w.router("net-dc-dc1-lan", "dc-gw", 100, true);

    w.policy(
        "Users to Web",
        &["peer-devops-prod", "peer-support"],
        &["svc-orders-web-prod"],
        "tcp",
        &["443"],
    );
    w.policy(
        "Web to App",
        &["svc-orders-web-prod"],
        &["svc-orders-app-prod"],
        "tcp",
        &["8443"],
    );
    w.policy(
        "App to DB",
        &["svc-orders-app-prod"],
        &["svc-orders-db-prod"],
        "tcp",
        &["5432"],
    );
    w.policy(
        "Monitoring",
        &["svc-monitoring"],
        &[
            "svc-orders-web-prod",
            "svc-orders-app-prod",
            "svc-orders-db-prod",
        ],
        "tcp",
        &["9100", "9200"],
    );
    let dns_sources: Vec<String> = [
        "peer-devops-prod",
        "peer-support",
        "svc-orders-web-prod",
        "svc-orders-app-prod",
        "svc-orders-db-prod",
        "svc-monitoring",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rule = |proto: &str| RuleInput {
        name: Some(format!("DNS {proto}")),
        protocol: Some(proto.into()),
        ports: vec![PortSpec::Number(53)],
        sources: dns_sources.clone(),
        destinations: vec!["svc-dns-prod".into()],
        ..Default::default()
    };
    w.a.create_policy(&PolicyInput {
        name: "DNS".into(),
        rules: Some(vec![rule("udp"), rule("tcp")]),
        ..Default::default()
    })
    .unwrap();

    w
}

#[test]
fn three_tier_example() {
    let w = three_tier();
    let peer = |name: &str| w.a.peers[&w.a.peer_id(name).unwrap()].clone();
    let (devops, support, web, app, db, mon, gw) = (
        peer("devops"),
        peer("support"),
        peer("web"),
        peer("app"),
        peer("db"),
        peer("prometheus"),
        peer("dc-gw"),
    );

    let fw = |m: &NetworkMap, dir: Direction, peer: &Peer| -> Vec<(Protocol, Option<PortRange>)> {
        m.firewall_rules
            .iter()
            .filter(|r| r.direction == dir && r.peer_ip == ip_of(peer))
            .map(|r| (r.protocol, r.port))
            .collect()
    };
    let tcp = |p: u16| (Protocol::Tcp, Some(PortRange::single(p)));

    // Users reach web on 443 and the DNS resolvers; nothing else.
    let m = w.map("devops");
    assert_eq!(names(&m), vec!["dc-gw", "web"]);
    assert_eq!(fw(&m, Direction::Out, &web), vec![tcp(443)]);
    assert_eq!(m.firewall_rules.len(), 1);
    let mut routed: Vec<IpNet> = m.routes.iter().filter_map(|r| r.network).collect();
    routed.sort();
    assert_eq!(routed, vec![net("10.10.0.10/32"), net("10.10.0.11/32")]);

    // Web: in from users (443) and monitoring (9100, 9200), out to app (8443).
    let m = w.map("web");
    assert_eq!(
        names(&m),
        vec!["app", "dc-gw", "devops", "prometheus", "support"]
    );
    assert_eq!(fw(&m, Direction::In, &devops), vec![tcp(443)]);
    assert_eq!(fw(&m, Direction::In, &support), vec![tcp(443)]);
    assert_eq!(fw(&m, Direction::Out, &app), vec![tcp(8443)]);
    assert_eq!(fw(&m, Direction::In, &mon), vec![tcp(9100), tcp(9200)]);
    assert!(fw(&m, Direction::Out, &db).is_empty());

    // DB: only app (5432) and monitoring may come in; it opens nothing itself.
    let m = w.map("db");
    assert_eq!(names(&m), vec!["app", "dc-gw", "prometheus"]);
    assert_eq!(fw(&m, Direction::In, &app), vec![tcp(5432)]);
    assert!(
        m.firewall_rules
            .iter()
            .all(|r| r.direction == Direction::In)
    );
    assert!(
        fw(&m, Direction::In, &web).is_empty(),
        "web must not reach the DB"
    );

    // Support laptops do not reach app or DB.
    let m = w.map("support");
    assert!(fw(&m, Direction::Out, &app).is_empty() && fw(&m, Direction::Out, &db).is_empty());

    // The DNS router allows every source peer on 53/udp and 53/tcp to each resolver.
    let g = w.map("dc-gw");
    assert_eq!(g.route_firewall_rules.len(), 4);
    let mut expected: Vec<IpNet> = [&devops, &support, &web, &app, &db, &mon]
        .iter()
        .map(|p| ip_of(p))
        .collect();
    expected.sort();
    for r in &g.route_firewall_rules {
        assert_eq!(r.source_ranges, expected);
        assert_eq!(r.port, Some(PortRange::single(53)));
        assert!(matches!(r.protocol, Protocol::Udp | Protocol::Tcp));
    }
    assert_eq!(names(&g).len(), 6);
    assert!(!names(&g).contains(&"dc-gw"));
    let _ = gw;
}

#[test]
fn site_to_vpn_resource_as_source() {
    let mut w = World::zero_trust();
    w.group("Monitoring Targets");
    let target = w.peer("laptop", &["Monitoring Targets"]);
    w.peer("gw", &[]);
    w.network("Office");
    let lan = w.resource("Office", "Office LAN", "192.168.10.0/24", &[]);
    w.router("Office", "gw", 100, true);
    w.a.create_policy(&PolicyInput {
        name: "lan-health-checks".into(),
        source_resource: Some(TargetInput {
            kind: "resource".into(),
            id: "Office LAN".into(),
        }),
        destinations: Some(vec!["Monitoring Targets".into()]),
        protocol: Some("tcp".into()),
        ports: Some(vec![PortSpec::Number(9100)]),
        ..Default::default()
    })
    .unwrap();
    let m = w.map("laptop");
    assert_eq!(names(&m), vec!["gw"]);
    assert_eq!(m.firewall_rules.len(), 1);
    assert_eq!(m.firewall_rules[0].peer_ip, net("192.168.10.0/24"));
    assert_eq!(m.firewall_rules[0].direction, Direction::In);
    assert_eq!(m.routes.len(), 1);
    let g = w.map("gw");
    assert_eq!(names(&g), vec!["laptop"]);
    assert_eq!(g.route_firewall_rules.len(), 1);
    let r = &g.route_firewall_rules[0];
    assert_eq!(r.source_ranges, vec![net("192.168.10.0/24")]);
    assert_eq!(r.destination, Some(ip_of(&target)));
    assert!(r.route_id.starts_with(&lan.id));
}

/// Site-to-Site (issue 12 defect 5): the Berlin LAN reaches the Hamburg LAN through both
/// routers; one-way unless bidirectional.
#[test]
fn site_to_site_between_two_networks() {
    let mut w = World::zero_trust();
    let gw_b = w.peer("berlin-gw", &[]);
    let gw_h = w.peer("hamburg-gw", &[]);
    w.network("Berlin");
    w.network("Hamburg");
    let berlin = w.resource("Berlin", "Berlin LAN", "192.0.2.0/24", &[]);
    let hamburg = w.resource("Hamburg", "Hamburg LAN", "198.51.100.0/24", &[]);
    w.router("Berlin", "berlin-gw", 100, true);
    w.router("Hamburg", "hamburg-gw", 100, true);
    let mut input = PolicyInput {
        name: "berlin-to-hamburg".into(),
        source_resource: Some(TargetInput {
            kind: "resource".into(),
            id: "Berlin LAN".into(),
        }),
        destination_resource: Some(TargetInput {
            kind: "resource".into(),
            id: "Hamburg LAN".into(),
        }),
        protocol: Some("tcp".into()),
        ports: Some(vec![PortSpec::Number(443)]),
        ..Default::default()
    };
    let pol = w.a.create_policy(&input).unwrap();
    let b = w.map("berlin-gw");
    assert_eq!(names(&b), vec!["hamburg-gw"]);
    let to_hamburg: Vec<_> = b
        .routes
        .iter()
        .filter(|r| r.network == Some(net("198.51.100.0/24")))
        .collect();
    assert_eq!(to_hamburg.len(), 1, "{:?}", b.routes);
    assert_eq!(to_hamburg[0].router_peer_id, gw_h.id);
    assert!(
        b.route_firewall_rules.is_empty(),
        "the source side enforces nothing: {:?}",
        b.route_firewall_rules
    );
    let h = w.map("hamburg-gw");
    assert_eq!(names(&h), vec!["berlin-gw"]);
    assert_eq!(h.route_firewall_rules.len(), 1);
    let r = &h.route_firewall_rules[0];
    assert_eq!(r.source_ranges, vec![net("192.0.2.0/24")]);
    assert_eq!(r.destination, Some(net("198.51.100.0/24")));
    assert_eq!(r.port, Some(PortRange::single(443)));
    assert!(r.route_id.starts_with(&hamburg.id));
    let back: Vec<_> = h
        .routes
        .iter()
        .filter(|r| r.network == Some(net("192.0.2.0/24")))
        .collect();
    assert_eq!(back.len(), 1, "replies return through berlin-gw");
    assert_eq!(back[0].router_peer_id, gw_b.id);
    assert!(back[0].resource_id == berlin.id);

    // Bidirectional: each side gets the other's rule.
    input.bidirectional = Some(true);
    w.a.update_policy(&pol.id, &input).unwrap();
    let b = w.map("berlin-gw");
    assert_eq!(b.route_firewall_rules.len(), 1);
    assert_eq!(
        b.route_firewall_rules[0].source_ranges,
        vec![net("198.51.100.0/24")]
    );
    assert_eq!(w.map("hamburg-gw").route_firewall_rules.len(), 1);
}

#[test]
fn drop_rules_reach_the_router_but_grant_no_route() {
    let (mut w, alice, ..) = berlin();
    w.policy(
        "dev-to-apps",
        &["Development"],
        &["Internal Apps"],
        "tcp",
        &[],
    );
    w.a.create_policy(&PolicyInput {
        name: "no-telnet".into(),
        action: Some("drop".into()),
        sources: Some(vec!["Development".into()]),
        destinations: Some(vec!["Internal Apps".into()]),
        protocol: Some("tcp".into()),
        ports: Some(vec![PortSpec::Number(23)]),
        ..Default::default()
    })
    .unwrap();
    let g = w.map("office-gw");
    assert!(
        g.route_firewall_rules
            .iter()
            .any(|r| r.action == Action::Drop
                && r.port == Some(PortRange::single(23))
                && r.source_ranges == vec![ip_of(&alice)])
    );
    // Only the accept policy created routes (2 resources x 1 router).
    assert_eq!(w.map("alice-laptop").routes.len(), 2);
}

/// Issue 12 defect 9: the wire details NetBird's server sends for the Berlin Office account
/// (facts from NetBird's `NetworkResource.ToRoute`, `networkmap.ToProtocolFirewallRules`,
/// `GetProtoPortInfo` and `GenerateRouteFirewallRules`).
#[test]
fn berlin_office_wire_details_match_netbird() {
    use swiftgate_proto::management as pb;
    let (mut w, _alice, _bob, _gw) = berlin();
    let pol = w.policy(
        "dev-to-apps",
        &["Development"],
        &["Internal Apps"],
        "tcp",
        &["443"],
    );
    w.group("Routers");
    w.a.update_peer(
        "office-gw",
        &PeerUpdate {
            groups: Some(vec!["Routers".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    // tcp without ports, and all protocols without ports, to the router itself.
    let tcp_all = w.policy("dev-tcp-gw", &["Development"], &["Routers"], "tcp", &[]);
    let any = w.policy("dev-any-gw", &["Development"], &["Routers"], "all", &[]);
    let ssh = w.policy("dev-ssh-gw", &["Development"], &["Routers"], "tcp", &["22"]);
    let wiki_all = w.policy(
        "dev-wiki-all",
        &["Development"],
        &["Internal Apps"],
        "tcp",
        &[],
    );

    // Routes generated from Networks resources keep their routes (KeepRoute: true), and a
    // domain route carries the placeholder prefix 192.0.2.0/32.
    let alice = proto::network_map(&w.map("alice-laptop"));
    assert!(
        alice.routes.iter().all(|r| r.keep_route),
        "{:?}",
        alice.routes
    );
    let grafana = alice.routes.iter().find(|r| r.net_id == "Grafana").unwrap();
    assert_eq!(grafana.network, "192.0.2.0/32");
    assert_eq!(grafana.network_type, 3);

    // Peer ACL: PolicyID is the rule id; a single port travels in Port without PortInfo; tcp
    // without ports carries PortInfo range 0-0; all protocols carry no PortInfo.
    let rule_id = |p: &Policy| p.rules[0].id.clone().into_bytes();
    let by_rule = |m: &pb::NetworkMap, p: &Policy| -> pb::FirewallRule {
        m.firewall_rules
            .iter()
            .find(|r| r.policy_id == rule_id(p))
            .cloned()
            .unwrap_or_else(|| panic!("no firewall rule with rule id of {}", p.name))
    };
    let r = by_rule(&alice, &ssh);
    assert_eq!((r.port.as_str(), r.port_info), ("22", None));
    let r = by_rule(&alice, &tcp_all);
    assert_eq!(r.port, "");
    assert_eq!(
        r.port_info,
        Some(pb::PortInfo {
            port_selection: Some(pb::port_info::PortSelection::Range(pb::port_info::Range {
                start: 0,
                end: 0
            })),
        })
    );
    let r = by_rule(&alice, &any);
    assert_eq!((r.port.as_str(), r.port_info), ("", None));

    // Route ACL: PolicyID is the policy id; PortInfo is always present, empty without ports;
    // a domain resource's rule has the placeholder destination, isDynamic and the domains.
    let gw = proto::network_map(&w.map("office-gw"));
    let rf: Vec<&pb::RouteFirewallRule> = gw
        .routes_firewall_rules
        .iter()
        .filter(|r| r.policy_id == wiki_all.id.as_bytes())
        .collect();
    assert_eq!(rf.len(), 2, "{:?}", gw.routes_firewall_rules);
    assert!(
        rf.iter()
            .all(|r| r.port_info == Some(pb::PortInfo::default()))
    );
    let dynamic = rf.iter().find(|r| r.is_dynamic).unwrap();
    assert_eq!(dynamic.destination, "192.0.2.0/32");
    assert_eq!(dynamic.domains, vec!["grafana.berlin.internal".to_string()]);
    let https = gw
        .routes_firewall_rules
        .iter()
        .find(|r| r.policy_id == pol.id.as_bytes() && !r.is_dynamic)
        .unwrap();
    assert_eq!(
        https.port_info,
        Some(pb::PortInfo {
            port_selection: Some(pb::port_info::PortSelection::Port(443)),
        })
    );
}

/// Marks a peer as announcing NetBird's IPv6Overlay capability (without disableIPv6).
fn ipv6_capable(w: &mut World, name: &str) {
    let id = w.a.peer_id(name).unwrap();
    w.a.peers.get_mut(&id).unwrap().meta.supports_ipv6 = true;
}

/// Issue 12 defect 9, item 5: IPv6 overlay addresses and v6 rules as NetBird sends them to
/// peers that announce the IPv6Overlay capability.
#[test]
fn ipv6_overlay_as_netbird() {
    use swiftgate_proto::management as pb;
    let (mut w, ..) = berlin();
    let carol = w.peer("carol-laptop", &["Development"]);
    w.resource("Berlin Office", "Internet", "0.0.0.0/0", &["Internal Apps"]);
    w.resource(
        "Berlin Office",
        "Docs v6",
        "2001:db8::5",
        &["Internal Apps"],
    );
    for p in ["alice-laptop", "bob-laptop", "office-gw"] {
        ipv6_capable(&mut w, p);
    }
    w.group("Routers");
    w.a.update_peer(
        "office-gw",
        &PeerUpdate {
            groups: Some(vec!["Routers".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    w.policy("ssh", &["Development"], &["Routers"], "tcp", &["22"]);
    w.policy(
        "apps",
        &["Development"],
        &["Internal Apps"],
        "tcp",
        &["443"],
    );
    let v6 = |name: &str| {
        let p = &w.a.peers[&w.a.peer_id(name).unwrap()];
        w.a.peer_ipv6(p).unwrap()
    };
    // Addresses follow the enabled groups (as NetBird assigns them), whether or not the peer
    // announces the capability; only a capable peer receives v6 data.
    let (alice6, gw6, carol6) = (v6("alice-laptop"), v6("office-gw"), v6("carol-laptop"));
    let v6_sources = vec![
        IpNet::from(IpAddr::V6(alice6)),
        IpNet::from(IpAddr::V6(carol6)),
    ];
    let range6 = w.a.settings.overlay_range_v6.unwrap();

    let m = w.map("alice-laptop");
    assert_eq!(
        m.peer_config.address_v6,
        Some(ipnet::Ipv6Net::new(alice6, range6.prefix_len()).unwrap())
    );
    let gw = m
        .remote_peers
        .iter()
        .find(|p| p.name == "office-gw")
        .unwrap();
    assert_eq!(gw.allowed_ips.len(), 2);
    assert_eq!(gw.allowed_ips[1], IpNet::from(IpAddr::V6(gw6)));
    // A v4 and a v6 rule to the router, same rule id.
    let to_gw: Vec<&FirewallRule> = m
        .firewall_rules
        .iter()
        .filter(|r| r.direction == Direction::Out)
        .collect();
    assert_eq!(to_gw.len(), 2, "{to_gw:?}");
    assert!(
        to_gw
            .iter()
            .any(|r| r.peer_ip == IpNet::from(IpAddr::V6(gw6)))
    );
    // Routes as NetBird's filterAndExpandRoutes: 0.0.0.0/0 gets a ::/0 twin (id and NetID
    // suffixed) for an IPv6 peer; v6 resources reach only IPv6 peers.
    let twin = m
        .routes
        .iter()
        .find(|r| r.network == Some(net("::/0")))
        .expect("a ::/0 twin of the exit route");
    assert!(twin.id.ends_with("-v6-default") && twin.net_id == "Internet-v6");
    assert_eq!(twin.network_type, NetworkType::Ipv6);
    assert!(m.routes.iter().any(|r| r.net_id == "Docs v6"));
    let pbm = proto::network_map(&m);
    let pc = pbm.peer_config.as_ref().unwrap();
    let mut want = alice6.octets().to_vec();
    want.push(64);
    assert_eq!(pc.address_v6, want, "16 address bytes + prefix length");
    let v6rule = pbm
        .firewall_rules
        .iter()
        .find(|r| r.peer_ip == gw6.to_string())
        .unwrap();
    assert_eq!(v6rule.source_prefixes[0].len(), 17);

    // The router: v4 sources for the v4 host, v4 and v6 rules for the domain resource (the
    // placeholder destination) and for 0.0.0.0/0 (plus ::/0 with route id `-v6-default`).
    let g = w.map("office-gw");
    let alice4 = ip_of(&w.a.peers[&w.a.peer_id("alice-laptop").unwrap()]);
    let carol4 = ip_of(&carol);
    let wiki = g
        .route_firewall_rules
        .iter()
        .filter(|r| r.destination == Some(net("10.10.0.5/32")))
        .collect::<Vec<_>>();
    assert_eq!(wiki.len(), 1);
    assert_eq!(wiki[0].source_ranges, vec![alice4, carol4]);
    let dynamic: Vec<_> = g
        .route_firewall_rules
        .iter()
        .filter(|r| r.is_dynamic)
        .collect();
    assert_eq!(dynamic.len(), 2, "{dynamic:?}");
    assert!(dynamic.iter().any(|r| r.source_ranges == v6_sources));
    let default6 = g
        .route_firewall_rules
        .iter()
        .find(|r| r.destination == Some(net("::/0")))
        .expect("a ::/0 rule for the exit node");
    assert!(default6.route_id.ends_with("-v6-default"));
    assert_eq!(default6.source_ranges, v6_sources);

    // Carol does not announce IPv6: no v6 address, no v6 data.
    let c = w.map("carol-laptop");
    assert_eq!(c.peer_config.address_v6, None);
    assert!(
        c.routes
            .iter()
            .all(|r| r.network.is_none_or(|n| n.addr().is_ipv4())),
        "{:?}",
        c.routes
    );
    assert!(c.routes.iter().any(|r| r.net_id == "Internet"));
    assert!(c.remote_peers.iter().all(|p| p.allowed_ips.len() == 1));
    assert!(c.firewall_rules.iter().all(|r| r.peer_ip.addr().is_ipv4()));
    let cp = proto::network_map(&c);
    assert!(cp.peer_config.unwrap().address_v6.is_empty());

    // IPv6 off for the account: nobody gets v6 data.
    w.a.update_settings(&SettingsInput {
        ipv6_enabled_groups: Some(vec![]),
        ..Default::default()
    })
    .unwrap();
    let m = w.map("alice-laptop");
    assert_eq!(m.peer_config.address_v6, None);
    assert!(m.firewall_rules.iter().all(|r| r.peer_ip.addr().is_ipv4()));
    let _ = pb::NetworkMap::default();
}

/// Issue 12 defect 9, item 6: a peer's SSH public key (from Login's PeerKeys) reaches the
/// peers that see it, in `RemotePeerConfig.sshConfig.sshPubKey`.
#[test]
fn ssh_public_keys_reach_other_peers() {
    let (mut w, ..) = berlin();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk office-gw";
    let id = w.a.peer_id("office-gw").unwrap();
    w.a.set_peer_ssh_key(&id, key).unwrap();
    w.policy(
        "apps",
        &["Development"],
        &["Internal Apps"],
        "tcp",
        &["443"],
    );
    let m = w.map("alice-laptop");
    let gw = m
        .remote_peers
        .iter()
        .find(|p| p.name == "office-gw")
        .unwrap();
    assert_eq!(gw.ssh_pubkey, key);
    let pbm = proto::network_map(&m);
    let ssh = pbm.remote_peers[0].ssh_config.as_ref().unwrap();
    assert_eq!(ssh.ssh_pub_key, key.as_bytes());
    // A peer without a key still gets an SSHConfig (NetBird always sets it), empty.
    let g = proto::network_map(&w.map("office-gw"));
    assert_eq!(
        g.remote_peers[0]
            .ssh_config
            .as_ref()
            .map(|s| s.ssh_pub_key.len()),
        Some(0)
    );
    // Bad keys are refused.
    assert!(w.a.set_peer_ssh_key(&id, "line\nbreak").is_err());
}

/// NetBird's network routes (`/api/routes`): distribution peers get the route through the
/// routing peers; the routing peer admits every distribution peer (no access-control groups)
/// or what the policies towards the access-control groups allow; others get nothing.
#[test]
fn network_routes_reach_distribution_peers_and_admit_what_they_should() {
    let mut w = World::zero_trust();
    for g in ["Dev", "Routers", "LAN access"] {
        w.group(g);
    }
    let alice = w.peer("alice", &["Dev"]);
    let bob = w.peer("bob", &[]);
    let gw = w.peer("gw", &["Routers"]);
    let route =
        w.a.create_route(&RouteInput {
            network_id: "office".into(),
            peer_groups: vec!["Routers".into()],
            network: Some("198.51.100.0/24".into()),
            metric: Some(100),
            masquerade: true,
            groups: vec!["Dev".into()],
            ..Default::default()
        })
        .unwrap();
    let m = w.map("alice");
    let r = m
        .routes
        .iter()
        .find(|r| r.resource_id == route.id)
        .expect("alice gets the route");
    assert_eq!(
        (r.router_peer_id.as_str(), r.metric, r.net_id.as_str()),
        (gw.id.as_str(), 100, "office")
    );
    assert_eq!(r.network, Some(net("198.51.100.0/24")));
    assert_eq!(names(&m), vec!["gw"]);
    assert!(
        w.map("bob").routes.is_empty(),
        "bob is not in the distribution groups"
    );
    let g = w.map("gw");
    assert!(
        g.routes
            .iter()
            .any(|r| r.resource_id == route.id && r.router_peer_id == gw.id)
    );
    let rules: Vec<_> = g
        .route_firewall_rules
        .iter()
        .filter(|f| f.route_id == format!("{}:{}", route.id, gw.id))
        .collect();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].source_ranges, vec![ip_of(&alice)]);
    assert_eq!(
        (rules[0].protocol, rules[0].action, rules[0].port),
        (Protocol::All, Action::Accept, None)
    );
    assert_eq!(names(&g), vec!["alice"]);

    // With access-control groups, only what a policy towards them allows: tcp 443 from Dev.
    let mut up = RouteInput {
        network_id: "office".into(),
        peer_groups: vec!["Routers".into()],
        network: Some("198.51.100.0/24".into()),
        groups: vec!["Dev".into()],
        access_control_groups: vec!["LAN access".into()],
        ..Default::default()
    };
    w.a.update_route(&route.id, &up).unwrap();
    assert!(
        w.map("gw").route_firewall_rules.is_empty(),
        "no policy yet: nothing admitted"
    );
    w.policy("dev-lan", &["Dev"], &["LAN access"], "tcp", &["443"]);
    let g = w.map("gw");
    let f = &g.route_firewall_rules[0];
    assert_eq!(
        (f.protocol, f.port),
        (Protocol::Tcp, Some(PortRange::single(443)))
    );
    assert_eq!(f.source_ranges, vec![ip_of(&alice)]);
    let _ = bob;

    // Disabled: nobody gets it; exit-node selection is refused rather than ignored.
    up.enabled = Some(false);
    w.a.update_route(&route.id, &up).unwrap();
    assert!(w.map("alice").routes.is_empty() && w.map("gw").routes.is_empty());
    up.skip_auto_apply = true;
    assert!(w.a.update_route(&route.id, &up).is_err());
    // The groups and the routing peer are in use.
    assert!(matches!(
        w.a.delete_group("Dev"),
        Err(ModelError::Conflict(_))
    ));
}

/// DNS as NetBird's server fills it: peer names of the peer and those its map connects it to
/// (no others), name server groups by distribution group (enabled only, not the ones naming
/// the peer itself as a server), nothing for a peer in a disabled management group, and the
/// forwarder port from every peer's version.
#[test]
fn dns_config_as_netbird_fills_it() {
    let mut w = World::zero_trust();
    for g in ["Development", "routers", "Finance"] {
        w.group(g);
    }
    let alice = w.peer("alice", &["Development"]);
    let gw = w.peer("office-gw", &["routers"]);
    let eve = w.peer("eve", &["Finance"]);
    w.policy("dev-to-gw", &["Development"], &["routers"], "tcp", &["443"]);
    let ns = |name: &str, ip: &str, groups: &[&str], primary: bool, domains: &[&str]| {
        NameserverGroupInput {
            name: name.into(),
            nameservers: vec![NameserverInput {
                ip: ip.into(),
                ns_type: None,
                port: None,
            }],
            groups: groups.iter().map(|g| g.to_string()).collect(),
            primary,
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    };
    w.a.create_nameserver_group(&ns(
        "berlin",
        "192.0.2.53",
        &["Development"],
        false,
        &["berlin.internal"],
    ))
    .unwrap();
    w.a.create_nameserver_group(&ns("all-dns", "198.51.100.53", &["Finance"], true, &[]))
        .unwrap();
    let mut off = ns("off", "192.0.2.54", &["Development"], true, &[]);
    off.enabled = Some(false);
    w.a.create_nameserver_group(&off).unwrap();
    // A group whose server is the gateway itself: not sent to the gateway.
    w.a.create_nameserver_group(&ns(
        "self",
        &gw.ip.to_string(),
        &["routers"],
        false,
        &["corp.internal"],
    ))
    .unwrap();

    let m = w.map("alice");
    assert!(m.dns.service_enable);
    let names: Vec<(String, String)> = m
        .dns
        .records
        .iter()
        .map(|r| (r.name.clone(), r.addr.to_string()))
        .collect();
    let mut want = vec![
        (w.a.fqdn(&alice), alice.ip.to_string()),
        (w.a.fqdn(&gw), gw.ip.to_string()),
    ];
    want.sort();
    assert_eq!(
        names, want,
        "alice sees her own name and the gateway's, not eve's"
    );
    assert_eq!(m.dns.nameserver_groups.len(), 1, "{:?}", m.dns);
    let g = &m.dns.nameserver_groups[0];
    assert_eq!(g.domains, vec!["berlin.internal".to_string()]);
    assert!(!g.primary);
    assert_eq!(g.nameservers[0].port, 53);
    assert!(
        w.map("office-gw").dns.nameserver_groups.is_empty(),
        "the gateway is the 'self' group's server"
    );
    let e = w.map("eve");
    assert!(e.dns.nameserver_groups[0].primary);
    assert_eq!(
        e.dns.records.len(),
        1,
        "eve reaches nobody: her own name only"
    );
    assert_eq!(e.dns.records[0].name, w.a.fqdn(&eve));

    // The wire: one zone `<domain>.`, names without the dot, A records, class IN, TTL 300;
    // name servers as UDP (1).
    let pb = proto::dns_config(&m.dns);
    assert_eq!(pb.custom_zones.len(), 1);
    assert_eq!(
        pb.custom_zones[0].domain,
        format!("{}.", w.a.settings.dns_domain)
    );
    assert!(
        pb.custom_zones[0]
            .records
            .iter()
            .all(|r| r.r#type == 1 && r.class == "IN" && r.ttl == 300 && !r.name.ends_with('.'))
    );
    assert_eq!(pb.name_server_groups[0].name_servers[0].ns_type, 1);
    assert_eq!(pb.name_server_groups[0].name_servers[0].ip, "192.0.2.53");

    // A group distributed to All reaches everyone.
    w.a.create_nameserver_group(&ns(
        "everyone",
        "192.0.2.99",
        &["All"],
        false,
        &["all.internal"],
    ))
    .unwrap();
    assert!(
        w.map("eve")
            .dns
            .nameserver_groups
            .iter()
            .any(|g| g.domains == ["all.internal"])
    );

    // Development's DNS managed elsewhere: alice gets the service off and nothing else.
    w.a.set_dns_disabled_groups(&["Development".into()])
        .unwrap();
    let m = w.map("alice");
    assert!(!m.dns.service_enable);
    assert!(m.dns.records.is_empty() && m.dns.nameserver_groups.is_empty());
    assert!(proto::dns_config(&m.dns).custom_zones.is_empty());

    // The forwarder port: 5353 while a peer is older than 0.59.0 (all are 0.50.0 here),
    // 22054 once every peer is new enough or a development build.
    assert_eq!(m.dns.forwarder_port, DNS_FORWARDER_PORT_OLD);
    let mut w2 = World::zero_trust();
    w2.peer_with("new", &[], "0.59.3");
    w2.peer_with("dev", &[], "development");
    assert_eq!(w2.map("new").dns.forwarder_port, DNS_FORWARDER_PORT);
    w2.peer_with("old", &[], "0.58.9");
    assert_eq!(w2.map("new").dns.forwarder_port, DNS_FORWARDER_PORT_OLD);
}
