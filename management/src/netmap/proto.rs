//! Conversion between our plain types and NetBird's protobuf messages (`swiftgate-proto`):
//! the network map and peer config out, the peer's system description in.

use ipnet::IpNet;
use swiftgate_proto::management as pb;

use super::types::*;
use crate::model::{FileStatus, MapRefusal, PeerMeta};

/// The destination NetBird's server gives domain routes and their route ACL rules
/// (`Route.Network`, `RouteFirewallRule.destination`): a TEST-NET-1 host that is never routed.
/// Agents use `Domains` (and `isDynamic`) instead.
pub const DOMAIN_PLACEHOLDER: &str = "192.0.2.0/32";

/// A prefix in NetBird's compact form: address bytes, then the prefix length (5 or 17 bytes).
pub fn compact_prefix(n: &IpNet) -> Vec<u8> {
    let mut b = match n {
        IpNet::V4(v) => v.addr().octets().to_vec(),
        IpNet::V6(v) => v.addr().octets().to_vec(),
    };
    b.push(n.prefix_len());
    b
}

/// The peer's own config as protobuf.
pub fn peer_config(pc: &PeerConfig) -> pb::PeerConfig {
    pb::PeerConfig {
        address: pc.address.to_string(),
        // 16 address bytes + the prefix length, as NetBird's netiputil.EncodePrefix.
        address_v6: pc
            .address_v6
            .map(|n| compact_prefix(&IpNet::V6(n)))
            .unwrap_or_default(),
        fqdn: pc.fqdn.clone(),
        ..Default::default()
    }
}

/// The process checks as protobuf `Checks`.
pub fn checks(map: &NetworkMap) -> Vec<pb::Checks> {
    map.checks
        .iter()
        .map(|c| pb::Checks {
            files: c.files.clone(),
        })
        .collect()
}

fn remote_peer(p: &RemotePeer) -> pb::RemotePeerConfig {
    pb::RemotePeerConfig {
        wg_pub_key: p.wg_pubkey.clone(),
        allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
        // NetBird always sets SSHConfig here, with the peer's key (empty if it sent none).
        ssh_config: Some(pb::SshConfig {
            ssh_pub_key: p.ssh_pubkey.as_bytes().to_vec(),
            ..Default::default()
        }),
        fqdn: p.fqdn.clone(),
        agent_version: p.agent_version.clone(),
    }
}

fn route(r: &Route) -> pb::Route {
    pb::Route {
        id: r.id.clone(),
        // Domain routes carry NetBird's placeholder; the agent uses Domains.
        network: r
            .network
            .map(|n| n.to_string())
            .unwrap_or_else(|| DOMAIN_PLACEHOLDER.to_string()),
        network_type: match r.network_type {
            NetworkType::Ipv4 => 1,
            NetworkType::Ipv6 => 2,
            NetworkType::Domain => 3,
        },
        peer: r.router_wg_pubkey.clone(),
        metric: i64::from(r.metric),
        masquerade: r.masquerade,
        net_id: r.net_id.clone(),
        domains: r.domains.clone(),
        keep_route: r.keep_route,
        skip_auto_apply: false,
    }
}

fn firewall_rule(r: &FirewallRule) -> pb::FirewallRule {
    let (port, port_info) = swiftgate_rules::pb::firewall_rule_ports(r.protocol, r.port);
    pb::FirewallRule {
        // Deprecated field: the address for a single host, the CIDR otherwise.
        peer_ip: if r.peer_ip.prefix_len() == r.peer_ip.max_prefix_len() {
            r.peer_ip.addr().to_string()
        } else {
            r.peer_ip.to_string()
        },
        direction: r.direction.to_pb(),
        action: r.action.to_pb(),
        protocol: r.protocol.to_pb(),
        port,
        port_info,
        // NetBird's server sends the rule id here (the field name is historical).
        policy_id: r.rule_id.as_bytes().to_vec(),
        custom_protocol: 0,
        source_prefixes: vec![compact_prefix(&r.peer_ip)],
    }
}

fn route_firewall_rule(r: &RouteFirewallRule) -> pb::RouteFirewallRule {
    pb::RouteFirewallRule {
        source_ranges: r.source_ranges.iter().map(ToString::to_string).collect(),
        action: r.action.to_pb(),
        destination: r
            .destination
            .map(|d| d.to_string())
            .unwrap_or_else(|| DOMAIN_PLACEHOLDER.to_string()),
        protocol: r.protocol.to_pb(),
        port_info: Some(swiftgate_rules::pb::route_rule_port_info(r.port)),
        is_dynamic: r.is_dynamic,
        domains: r.domains.clone(),
        custom_protocol: 0,
        policy_id: r.policy_id.as_bytes().to_vec(),
        route_id: r.route_id.clone(),
    }
}

/// DNS as NetBird's `DNSConfig`: the peers' names as one custom zone (`<domain>.`, records
/// named `<label>.<domain>` without the trailing dot, class IN, TTL 300; left out when
/// empty), the name server groups (type 1 = UDP), and the forwarder port.
pub fn dns_config(dns: &DnsConfig) -> pb::DnsConfig {
    let records: Vec<pb::SimpleRecord> = dns
        .records
        .iter()
        .map(|r| pb::SimpleRecord {
            name: r.name.clone(),
            r#type: if r.addr.is_ipv4() { 1 } else { 28 },
            class: "IN".into(),
            ttl: i64::from(PEER_RECORD_TTL),
            r_data: r.addr.to_string(),
        })
        .collect();
    let custom_zones = if records.is_empty() || dns.domain.is_empty() {
        Vec::new()
    } else {
        vec![pb::CustomZone {
            domain: format!("{}.", dns.domain.trim_end_matches('.')),
            records,
            search_domain_disabled: false,
            non_authoritative: false,
        }]
    };
    pb::DnsConfig {
        service_enable: dns.service_enable,
        name_server_groups: dns
            .nameserver_groups
            .iter()
            .map(|g| pb::NameServerGroup {
                name_servers: g
                    .nameservers
                    .iter()
                    .map(|n| pb::NameServer {
                        ip: n.ip.to_string(),
                        ns_type: 1,
                        port: i64::from(n.port),
                    })
                    .collect(),
                primary: g.primary,
                domains: g.domains.clone(),
                search_domains_enabled: g.search_domains_enabled,
            })
            .collect(),
        custom_zones,
        forwarder_port: i64::from(dns.forwarder_port),
    }
}

/// The network map as NetBird's protobuf `NetworkMap`, with the `*IsEmpty` flags set for
/// deliberately empty lists.
pub fn network_map(map: &NetworkMap) -> pb::NetworkMap {
    pb::NetworkMap {
        serial: map.serial,
        peer_config: Some(peer_config(&map.peer_config)),
        remote_peers: map.remote_peers.iter().map(remote_peer).collect(),
        remote_peers_is_empty: map.remote_peers.is_empty(),
        routes: map.routes.iter().map(route).collect(),
        dns_config: Some(dns_config(&map.dns)),
        offline_peers: vec![],
        firewall_rules: map.firewall_rules.iter().map(firewall_rule).collect(),
        firewall_rules_is_empty: map.firewall_rules.is_empty(),
        routes_firewall_rules: map
            .route_firewall_rules
            .iter()
            .map(route_firewall_rule)
            .collect(),
        routes_firewall_rules_is_empty: map.route_firewall_rules.is_empty(),
        forwarding_rules: vec![],
        ssh_auth: None,
    }
}

/// What a peer reports (protobuf) as our [`PeerMeta`]. Unparsable interface addresses are
/// skipped.
pub fn peer_meta(m: &pb::PeerSystemMeta) -> PeerMeta {
    PeerMeta {
        hostname: m.hostname.clone(),
        os: m.go_os.to_ascii_lowercase(),
        os_name: m.os.clone(),
        os_version: if m.os_version.is_empty() {
            m.core.clone()
        } else {
            m.os_version.clone()
        },
        kernel_version: m.kernel_version.clone(),
        client_version: m.netbird_version.clone(),
        ui_version: m.ui_version.clone(),
        network_addresses: m
            .network_addresses
            .iter()
            .filter_map(|a| a.net_ip.parse::<IpNet>().ok())
            .collect(),
        files: m
            .files
            .iter()
            .map(|f| FileStatus {
                path: f.path.clone(),
                exists: f.exist,
                process_running: f.process_is_running,
            })
            .collect(),
        map_refusals: m
            .swiftgate_map_refusals
            .iter()
            .map(|r| MapRefusal {
                serial: r.serial,
                object: r.object.clone(),
                reason: r.reason.clone(),
                effect: r.effect.clone(),
            })
            .collect(),
        // NetBird's Peer.SupportsIPv6: the IPv6Overlay capability without disableIPv6.
        supports_ipv6: m
            .capabilities
            .contains(&(pb::PeerCapability::IPv6Overlay as i32))
            && !m.flags.as_ref().is_some_and(|f| f.disable_i_pv6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, PortRange, Protocol};

    #[test]
    fn converts_rules_and_routes() {
        let map = NetworkMap {
            serial: 7,
            peer_config: PeerConfig {
                address: "100.64.0.2/10".parse().unwrap(),
                address_v6: None,
                fqdn: "a.swiftgate.internal".into(),
                approved: true,
            },
            routes: vec![Route {
                id: "res-1:peer-2".into(),
                network_id: "net-1".into(),
                net_id: "Internal Wiki".into(),
                resource_id: "res-1".into(),
                network: Some("10.10.0.5/32".parse().unwrap()),
                domains: vec![],
                network_type: NetworkType::Ipv4,
                router_peer_id: "peer-2".into(),
                router_wg_pubkey: "KEY".into(),
                metric: 100,
                masquerade: true,
                keep_route: false,
            }],
            firewall_rules: vec![FirewallRule {
                peer_ip: "100.64.0.3/32".parse().unwrap(),
                direction: Direction::In,
                action: Action::Accept,
                protocol: Protocol::Tcp,
                port: Some(PortRange {
                    start: 8000,
                    end: 8080,
                }),
                policy_id: "pol-1".into(),
                rule_id: "rule-1".into(),
            }],
            ..Default::default()
        };
        let pb = network_map(&map);
        assert_eq!(pb.serial, 7);
        assert!(pb.remote_peers_is_empty && pb.routes_firewall_rules_is_empty);
        assert!(!pb.firewall_rules_is_empty);
        assert_eq!(pb.peer_config.as_ref().unwrap().address, "100.64.0.2/10");
        let r = &pb.routes[0];
        assert_eq!(
            (r.network.as_str(), r.network_type, r.metric),
            ("10.10.0.5/32", 1, 100)
        );
        assert_eq!(r.peer, "KEY");
        let f = &pb.firewall_rules[0];
        assert_eq!(f.peer_ip, "100.64.0.3");
        assert_eq!(f.port, "");
        assert_eq!(
            f.port_info.as_ref().unwrap().port_selection,
            Some(pb::port_info::PortSelection::Range(pb::port_info::Range {
                start: 8000,
                end: 8080
            }))
        );
        assert_eq!(f.source_prefixes, vec![vec![100, 64, 0, 3, 32]]);
        assert_eq!(f.protocol, pb::RuleProtocol::Tcp as i32);
        assert_eq!(f.policy_id, b"rule-1".to_vec());
    }
}
