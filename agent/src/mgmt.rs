//! Management sync: a NetBird-compatible network map becomes the agent's typed configuration.
//!
//! [`to_file_config`] is pure (no I/O): remote peers become WireGuard peers (overlay addresses
//! as their identity, routed prefixes of the routers this peer uses as extra allowed IPs), the
//! routes this peer serves become Networks and resources, peer-ACL firewall rules become
//! policies to `self`, route firewall rules become policies to resources. [`sync`] runs the
//! login and the Sync stream, persists the key and the last map, and hands each new map over.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use prost::Message as _;
use swiftgate_proto::{
    client::{ManagementClient, basic_meta},
    keys::KeyPair,
    management::{
        FirewallRule, NetworkMap, PeerConfig, PortInfo, RouteFirewallRule, RuleAction,
        RuleDirection, RuleProtocol, SyncResponse, port_info::PortSelection,
    },
};
use tokio::sync::mpsc;

use crate::config::{
    FileConfig, InterfaceConfig, NetworkConfig, PeerConfig as FilePeer, PolicyConfig,
    ResourceConfig,
};

/// Settings that come from the command line, not from the management server.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Overlay interface name.
    pub overlay: String,
    /// LAN interfaces (for the routes this peer serves).
    pub lan: Vec<String>,
    /// WireGuard listen port.
    pub listen_port: u16,
    /// bpffs pin path.
    pub pin_path: Option<PathBuf>,
    /// Control socket.
    pub control_socket: Option<PathBuf>,
    /// Worker threads.
    pub workers: Option<usize>,
}

fn protocol(p: i32) -> Option<&'static str> {
    match RuleProtocol::try_from(p).ok()? {
        RuleProtocol::All => Some("all"),
        RuleProtocol::Tcp => Some("tcp"),
        RuleProtocol::Udp => Some("udp"),
        RuleProtocol::Icmp => Some("icmp"),
        _ => None,
    }
}

fn ports(info: Option<&PortInfo>, legacy: &str) -> Vec<String> {
    match info.and_then(|i| i.port_selection.as_ref()) {
        Some(PortSelection::Port(p)) if *p != 0 => vec![p.to_string()],
        Some(PortSelection::Range(r)) if r.start != 0 => vec![format!("{}-{}", r.start, r.end)],
        _ if !legacy.is_empty() && legacy != "0" => vec![legacy.to_string()],
        _ => vec![],
    }
}

fn action(a: i32) -> &'static str {
    if RuleAction::try_from(a) == Ok(RuleAction::Drop) {
        "drop"
    } else {
        "accept"
    }
}

/// Translates a network map into a configuration file for this peer.
pub fn to_file_config(
    local: &Local,
    private_key_b64: &str,
    own_public_b64: &str,
    peer: &PeerConfig,
    map: &NetworkMap,
) -> Result<FileConfig, String> {
    let own: IpNet = peer.address.parse().map_err(|_| {
        format!(
            "peerConfig.address `{}` is not an address/prefix",
            peer.address
        )
    })?;
    let overlay = own.trunc();
    let mtu = if peer.mtu > 0 {
        Some(peer.mtu as u16)
    } else {
        None
    };

    // Routes this peer serves, and for the others the router each network goes through
    // (lowest metric wins; HA failover comes with route selection).
    let mut served: BTreeMap<String, (bool, Vec<(String, String)>)> = BTreeMap::new();
    let mut via: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for r in &map.routes {
        if !r.domains.is_empty() || r.network.is_empty() {
            continue; // domain resources need DNS through the routing peer (later milestone)
        }
        if r.peer == own_public_b64 {
            let e = served
                .entry(r.net_id.clone())
                .or_insert((r.masquerade, vec![]));
            e.1.push((r.id.clone(), r.network.clone()));
        } else {
            match via.get(&r.network) {
                Some((m, _)) if *m <= r.metric => {}
                _ => {
                    via.insert(r.network.clone(), (r.metric, r.peer.clone()));
                }
            }
        }
    }

    let mut peers = Vec::new();
    let mut name_of_ip: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (i, rp) in map.remote_peers.iter().enumerate() {
        let name = if rp.fqdn.is_empty() {
            format!("peer{i}")
        } else {
            rp.fqdn.clone()
        };
        let (mut ips, mut extra) = (vec![], vec![]);
        for a in &rp.allowed_ips {
            let Ok(n) = a.parse::<IpNet>() else { continue };
            if n.prefix_len() == n.max_prefix_len() && overlay.contains(&n.addr()) {
                name_of_ip.insert(n.addr(), name.clone());
                ips.push(n.addr().to_string());
            } else {
                extra.push(n.to_string());
            }
        }
        for (net, (_, router)) in &via {
            if *router == rp.wg_pub_key && !extra.contains(net) {
                extra.push(net.clone());
            }
        }
        if ips.is_empty() {
            continue;
        }
        peers.push(FilePeer {
            name: name.clone(),
            ips,
            groups: vec![],
            public_key: Some(rp.wg_pub_key.clone()),
            allowed_ips: extra,
            ..Default::default()
        });
    }

    let mut networks = Vec::new();
    let mut resource_of: Vec<(IpNet, String)> = Vec::new();
    for (net_id, (masq, routes)) in &served {
        let mut resources = Vec::new();
        for (id, prefix) in routes {
            let name = format!("route:{id}");
            if let Ok(p) = prefix.parse::<IpNet>() {
                resource_of.push((p, name.clone()));
            }
            resources.push(ResourceConfig {
                name,
                address: prefix.clone(),
                groups: vec![],
            });
        }
        networks.push(NetworkConfig {
            name: format!("network:{net_id}"),
            masquerade: *masq,
            resources,
        });
    }

    let sources_in = |ranges: &mut dyn Iterator<Item = IpNet>| -> Vec<String> {
        let mut s = BTreeSet::new();
        for r in ranges {
            if r.prefix_len() == 0
                || (r.contains(&overlay.addr()) && r.prefix_len() <= overlay.prefix_len())
            {
                s.insert("All".to_string());
                continue;
            }
            for (ip, n) in &name_of_ip {
                if r.contains(ip) {
                    s.insert(n.clone());
                }
            }
        }
        s.into_iter().collect()
    };
    let mut policies = Vec::new();
    for (i, fr) in map.firewall_rules.iter().enumerate() {
        let FirewallRule {
            peer_ip,
            direction,
            action: act,
            protocol: proto,
            port,
            port_info,
            ..
        } = fr;
        // Outbound rules concern traffic this peer opens, which is always allowed here.
        if RuleDirection::try_from(*direction) != Ok(RuleDirection::In) {
            continue;
        }
        let Some(proto) = protocol(*proto) else {
            continue;
        };
        let Ok(ip) = peer_ip.parse::<IpAddr>() else {
            continue;
        };
        let sources = if ip.is_unspecified() {
            vec!["All".to_string()]
        } else {
            sources_in(&mut std::iter::once(IpNet::from(ip)))
        };
        if sources.is_empty() {
            continue;
        }
        policies.push(PolicyConfig {
            name: format!("peer-acl-{i}"),
            sources,
            destinations: vec!["self".into()],
            protocol: proto.into(),
            ports: if matches!(proto, "tcp" | "udp") {
                ports(port_info.as_ref(), port)
            } else {
                vec![]
            },
            action: action(*act).into(),
            enabled: true,
            bidirectional: false,
        });
    }
    for (i, rr) in map.routes_firewall_rules.iter().enumerate() {
        let RouteFirewallRule {
            source_ranges,
            action: act,
            destination,
            protocol: proto,
            port_info,
            ..
        } = rr;
        let Some(proto) = protocol(*proto) else {
            continue;
        };
        let Ok(dst) = destination.parse::<IpNet>() else {
            continue;
        };
        let destinations: Vec<String> = resource_of
            .iter()
            .filter(|(p, _)| dst.contains(p) || p.contains(&dst.addr()))
            .map(|(_, n)| n.clone())
            .collect();
        let sources = sources_in(&mut source_ranges.iter().filter_map(|s| s.parse::<IpNet>().ok()));
        if destinations.is_empty() || sources.is_empty() {
            continue;
        }
        policies.push(PolicyConfig {
            name: format!("route-acl-{i}"),
            sources,
            destinations,
            protocol: proto.into(),
            ports: if matches!(proto, "tcp" | "udp") {
                ports(port_info.as_ref(), "")
            } else {
                vec![]
            },
            action: action(*act).into(),
            enabled: true,
            bidirectional: false,
        });
    }

    Ok(FileConfig {
        interface: InterfaceConfig {
            overlay: local.overlay.clone(),
            addresses: vec![own.to_string()],
            lan: if networks.is_empty() {
                vec![]
            } else {
                local.lan.clone()
            },
            mtu,
            pin_path: local.pin_path.clone(),
            control_socket: local.control_socket.clone(),
            private_key: Some(private_key_b64.to_string()),
            listen_port: Some(local.listen_port),
            workers: local.workers,
            ..Default::default()
        },
        peers,
        networks,
        policies,
    })
}

/// Loads the peer's key from `dir/key`, creating it (mode 0600) on first start.
pub fn load_or_create_key(dir: &Path) -> Result<KeyPair> {
    let path = dir.join("key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return KeyPair::from_private_base64(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let kp = KeyPair::generate();
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    use std::io::Write as _;
    f.write_all(kp.private().to_base64().as_bytes())?;
    Ok(kp)
}

/// The last map applied, persisted so a restart without the server still forwards.
pub fn load_last(dir: &Path) -> Option<SyncResponse> {
    let b = std::fs::read(dir.join("last-map.pb")).ok()?;
    SyncResponse::decode(b.as_slice()).ok()
}

fn save_last(dir: &Path, r: &SyncResponse) -> Result<()> {
    let tmp = dir.join("last-map.pb.tmp");
    std::fs::write(&tmp, r.encode_to_vec())?;
    std::fs::rename(&tmp, dir.join("last-map.pb"))?;
    Ok(())
}

/// A map ready to apply.
pub struct Update {
    /// Serial of the map.
    pub serial: u64,
    /// The configuration it translates to.
    pub file: FileConfig,
    /// The Signal server to find peers' endpoints through, if the management server names one.
    pub signal: Option<String>,
}

/// `http(s)://host:port` of a NetBird `HostConfig`.
fn host_url(h: &swiftgate_proto::management::HostConfig) -> Option<String> {
    use swiftgate_proto::management::host_config::Protocol;
    if h.uri.is_empty() {
        return None;
    }
    if h.uri.contains("://") {
        return Some(h.uri.clone());
    }
    let scheme = if Protocol::try_from(h.protocol) == Ok(Protocol::Https) {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}", h.uri))
}

/// Translates a sync response (`None` when it carries no network map).
pub fn update_of(
    local: &Local,
    keys: &KeyPair,
    r: &SyncResponse,
) -> Option<Result<Update, String>> {
    let map = r.network_map.as_ref()?;
    let peer = map.peer_config.as_ref().or(r.peer_config.as_ref())?;
    let private = keys.private().to_base64();
    let signal = r
        .netbird_config
        .as_ref()
        .and_then(|c| c.signal.as_ref())
        .and_then(host_url);
    Some(
        to_file_config(local, &private, &keys.public().to_base64(), peer, map).map(|file| Update {
            serial: map.serial,
            file,
            signal,
        }),
    )
}

/// Logs in and follows the Sync stream forever, reconnecting with backoff; sends every map
/// with a higher serial than the last one (identical or older maps are skipped).
pub async fn sync(
    url: String,
    setup_key: Option<String>,
    state_dir: PathBuf,
    local: Local,
    keys: KeyPair,
    tx: mpsc::Sender<Update>,
) {
    let mut last_serial = load_last(&state_dir)
        .and_then(|r| r.network_map.map(|m| m.serial))
        .unwrap_or(0);
    let mut backoff = Duration::from_millis(500);
    let meta = basic_meta(&hostname(), env!("CARGO_PKG_VERSION"));
    loop {
        let attempt = async {
            let client = ManagementClient::connect(&url).await?;
            client.server_key().await?;
            let login = client
                .login(setup_key.as_deref(), &keys, meta.clone())
                .await?;
            let signal = login
                .netbird_config
                .as_ref()
                .and_then(|c| c.signal.as_ref())
                .and_then(host_url);
            tracing::info!(%url, signal = ?signal, "logged in to management");
            let mut stream = client.sync(&keys, meta.clone()).await?;
            while let Some(resp) = stream.message().await? {
                backoff = Duration::from_millis(500);
                let Some(upd) = update_of(&local, &keys, &resp) else {
                    continue;
                };
                let upd = upd.map(|mut u| {
                    u.signal = u.signal.or_else(|| signal.clone());
                    u
                });
                match upd {
                    Ok(u) if u.serial > last_serial || last_serial == 0 => {
                        last_serial = u.serial;
                        if let Err(e) = save_last(&state_dir, &resp) {
                            tracing::warn!(error = %e, "persisting the network map");
                        }
                        if tx.send(u).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(u) => tracing::debug!(
                        serial = u.serial,
                        last_serial,
                        "older or same serial, ignored"
                    ),
                    Err(e) => tracing::error!(error = %e, "network map refused"),
                }
            }
            Ok::<(), swiftgate_proto::client::ClientError>(())
        };
        if let Err(e) = attempt.await {
            tracing::warn!(error = %e, retry_in = ?backoff, "management unreachable; forwarding with the last map");
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "swiftgate".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use swiftgate_proto::management::{RemotePeerConfig, Route, port_info::Range};

    fn key(n: u8) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([n; 32])
    }

    /// The Berlin Office as NetBird's management would send it to the routing peer.
    fn berlin_router_map() -> (PeerConfig, NetworkMap) {
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
            routes: vec![Route {
                id: "wiki".into(),
                network: "192.0.2.10/32".into(),
                peer: key(1),
                metric: 9999,
                masquerade: true,
                net_id: "Berlin".into(),
                ..Default::default()
            }],
            firewall_rules: vec![FirewallRule {
                peer_ip: "100.64.0.2".into(),
                direction: RuleDirection::In as i32,
                action: RuleAction::Accept as i32,
                protocol: RuleProtocol::Tcp as i32,
                port_info: Some(PortInfo {
                    port_selection: Some(PortSelection::Port(22)),
                }),
                ..Default::default()
            }],
            routes_firewall_rules: vec![RouteFirewallRule {
                source_ranges: vec!["100.64.0.2/32".into()],
                action: RuleAction::Accept as i32,
                destination: "192.0.2.10/32".into(),
                protocol: RuleProtocol::Tcp as i32,
                port_info: Some(PortInfo {
                    port_selection: Some(PortSelection::Range(Range {
                        start: 443,
                        end: 443,
                    })),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        (peer, map)
    }

    #[test]
    fn a_routing_peer_map_becomes_networks_and_policies() {
        let (peer, map) = berlin_router_map();
        let local = Local {
            overlay: "sg0".into(),
            lan: vec!["eth1".into()],
            listen_port: 51820,
            ..Default::default()
        };
        let f = to_file_config(&local, &key(9), &key(1), &peer, &map).unwrap();
        let c = Config::validate(&f).expect("valid configuration");
        assert_eq!(c.resources.len(), 1);
        assert!(c.resources[0].masquerade);
        assert_eq!(c.lan, vec!["eth1".to_string()]);
        assert_eq!(c.rules.len(), 2);
        let eval = |d: &str, p: u16| {
            crate::policy::evaluate(
                &c,
                crate::policy::Side::Overlay,
                "100.64.0.2".parse().unwrap(),
                d.parse().unwrap(),
                6,
                p,
            )
        };
        assert!(matches!(
            eval("192.0.2.10", 443),
            crate::policy::Verdict::Accept(_)
        ));
        assert!(matches!(
            eval("192.0.2.10", 80),
            crate::policy::Verdict::NoPolicy
        ));
        assert!(matches!(
            eval("100.64.0.1", 22),
            crate::policy::Verdict::Accept(_)
        ));
        let wg = c.wireguard.expect("wireguard");
        assert_eq!(
            wg.peers[0].allowed,
            vec!["100.64.0.2/32".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn a_client_map_routes_networks_through_the_best_router() {
        let peer = PeerConfig {
            address: "100.64.0.2/16".into(),
            ..Default::default()
        };
        let map = NetworkMap {
            serial: 3,
            remote_peers: vec![
                RemotePeerConfig {
                    wg_pub_key: key(1),
                    allowed_ips: vec!["100.64.0.1/32".into()],
                    fqdn: "gw-a".into(),
                    ..Default::default()
                },
                RemotePeerConfig {
                    wg_pub_key: key(3),
                    allowed_ips: vec!["100.64.0.3/32".into()],
                    fqdn: "gw-b".into(),
                    ..Default::default()
                },
            ],
            routes: vec![
                Route {
                    id: "r1".into(),
                    network: "192.0.2.0/24".into(),
                    peer: key(1),
                    metric: 100,
                    net_id: "n".into(),
                    ..Default::default()
                },
                Route {
                    id: "r2".into(),
                    network: "192.0.2.0/24".into(),
                    peer: key(3),
                    metric: 10,
                    net_id: "n".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let f = to_file_config(
            &Local {
                overlay: "sg0".into(),
                ..Default::default()
            },
            &key(9),
            &key(2),
            &peer,
            &map,
        )
        .unwrap();
        let c = Config::validate(&f).unwrap();
        let wg = c.wireguard.unwrap();
        let b = wg.peers.iter().find(|p| p.name == "gw-b").unwrap();
        assert!(
            b.allowed.contains(&"192.0.2.0/24".parse().unwrap()),
            "lower metric wins"
        );
        let a = wg.peers.iter().find(|p| p.name == "gw-a").unwrap();
        assert!(!a.allowed.contains(&"192.0.2.0/24".parse().unwrap()));
        assert!(c.lan.is_empty() && c.resources.is_empty());
    }

    #[test]
    fn bad_maps_are_refused_with_a_reason() {
        let (mut peer, map) = berlin_router_map();
        peer.address = "not-an-ip".into();
        let e = to_file_config(&Local::default(), &key(9), &key(1), &peer, &map).unwrap_err();
        assert!(e.contains("peerConfig.address"), "{e}");
        let (peer, mut map) = berlin_router_map();
        map.remote_peers[0].wg_pub_key = "short".into();
        let f = to_file_config(
            &Local {
                overlay: "sg0".into(),
                ..Default::default()
            },
            &key(9),
            &key(1),
            &peer,
            &map,
        )
        .unwrap();
        let e = Config::validate(&f).unwrap_err().to_string();
        assert!(e.contains("public_key"), "{e}");
    }

    #[test]
    fn keys_persist_with_tight_permissions() {
        let dir = std::env::temp_dir().join(format!("sg-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create_key(&dir).unwrap();
        let b = load_or_create_key(&dir).unwrap();
        assert_eq!(a.public(), b.public());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(dir.join("key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
