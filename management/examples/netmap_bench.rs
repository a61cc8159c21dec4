//! Benchmark (not a test): network-map computation for 10,000 peers, 1,000 policies and 5,000
//! resources. Prints the time per full map (index + map), per map with a shared index, for the
//! heaviest maps (routing peers), for all 10,000 maps, and the peak RSS.
//!
//! `cargo run --release -p swiftgate-management --example netmap_bench [-- --with-default]`
//!
//! Shape: 200 peer groups of ~100 peers (each peer in two), 500 resource groups of 10
//! resources, 50 Networks of 100 resources (70% hosts, 20% subnets, 10% domains) with two
//! routing peers each, 1,000 policies (80% peers -> resources, 20% peer to peer; tcp 443 and
//! 8000-8080; every tenth with a client-version posture check). The Default all-to-all policy
//! is deleted (a zero-trust account) unless `--with-default` is given.

use std::net::Ipv4Addr;
use std::time::Instant;

use swiftgate_management::model::*;
use swiftgate_management::netmap::{Netmapper, compute_network_map};

const PEERS: usize = 10_000;
const PEER_GROUPS: usize = 200;
const RESOURCE_GROUPS: usize = 500;
const NETWORKS: usize = 50;
const RESOURCES: usize = 5_000;
const POLICIES: usize = 1_000;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn build(with_default: bool) -> Account {
    let mut a = Account::new("bench");
    if !with_default {
        a.delete_policy(DEFAULT_POLICY_NAME)
            .expect("default policy");
    }
    let mut pg = Vec::new();
    for i in 0..PEER_GROUPS {
        pg.push(
            a.create_group(&GroupInput {
                name: format!("team-{i}"),
                ..Default::default()
            })
            .expect("group")
            .id,
        );
    }
    for j in 0..RESOURCE_GROUPS {
        a.create_group(&GroupInput {
            name: format!("svc-{j}"),
            ..Default::default()
        })
        .expect("group");
    }
    // Peers are inserted directly (registration checks uniqueness against every peer, which
    // makes bulk set-up quadratic; the map computation is what is measured here).
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    for i in 0..PEERS {
        let mut groups = vec![
            pg[i % PEER_GROUPS].clone(),
            pg[(i * 7 + 3) % PEER_GROUPS].clone(),
        ];
        groups.sort();
        groups.dedup();
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let id = format!("peer-{i:05}");
        a.peers.insert(
            id.clone(),
            Peer {
                id,
                name: format!("host-{i}"),
                dns_label: format!("host-{i}"),
                wg_pubkey: base64_32(&key),
                ssh_pubkey: String::new(),
                ip: Ipv4Addr::from(base + 1 + i as u32),
                groups,
                meta: PeerMeta {
                    os: "linux".into(),
                    client_version: if i % 13 == 0 { "0.40.0" } else { "0.50.0" }.into(),
                    ..Default::default()
                },
                connected: true,
                last_seen_at: 0,
                created_at: 0,
                approved: true,
                ephemeral: false,
                setup_key_id: None,
            },
        );
    }
    for n in 0..NETWORKS {
        let net = format!("net-{n}");
        a.create_network(&NetworkInput {
            name: net.clone(),
            description: String::new(),
        })
        .expect("network");
        for (k, metric) in [(0, 100), (1, 200)] {
            a.create_router(
                &net,
                &RouterInput {
                    peer: Some(format!("peer-{:05}", n * 2 + k)),
                    metric: Some(metric),
                    ..Default::default()
                },
            )
            .expect("router");
        }
    }
    for r in 0..RESOURCES {
        let net = r / (RESOURCES / NETWORKS);
        let address = match r % 10 {
            0 => format!("app{r}.net{net}.internal"),
            1 | 2 => format!("10.{}.{}.0/24", net, r % 250),
            _ => format!("10.{}.{}.{}", 100 + net, (r / 250) % 250, 1 + r % 250),
        };
        a.create_resource(
            &format!("net-{net}"),
            &ResourceInput {
                name: format!("res-{r}"),
                address,
                groups: vec![format!("svc-{}", r % RESOURCE_GROUPS)],
                ..Default::default()
            },
        )
        .expect("resource");
    }
    a.create_posture_check(&PostureCheckInput {
        name: "min-client".into(),
        checks: PostureChecksInput {
            client_version: Some(MinVersionCheck {
                min_version: "0.45.0".into(),
            }),
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("posture");
    for k in 0..POLICIES {
        let dst = if k % 5 == 4 {
            format!("team-{}", (k * 3 + 1) % PEER_GROUPS)
        } else {
            format!("svc-{}", k % RESOURCE_GROUPS)
        };
        a.create_policy(&PolicyInput {
            name: format!("pol-{k}"),
            sources: Some(vec![
                format!("team-{}", k % PEER_GROUPS),
                format!("team-{}", (k + 50) % PEER_GROUPS),
            ]),
            destinations: Some(vec![dst]),
            protocol: Some("tcp".into()),
            ports: Some(vec![
                PortSpec::Number(443),
                PortSpec::Text("8000-8080".into()),
            ]),
            source_posture_checks: if k % 10 == 0 {
                vec!["min-client".into()]
            } else {
                vec![]
            },
            ..Default::default()
        })
        .expect("policy");
    }
    a
}

fn base64_32(b: &[u8; 32]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let with_default = std::env::args().any(|a| a == "--with-default");
    let rss0 = status_kb("VmRSS:");
    let t = Instant::now();
    let a = build(with_default);
    println!(
        "account: {} peers, {} policies, {} resources, {} networks, {} groups{} (built in {:.0} ms)",
        a.peers.len(),
        a.policies.len(),
        a.resources.len(),
        a.networks.len(),
        a.groups.len(),
        if with_default {
            ", Default all-to-all policy ON"
        } else {
            ""
        },
        ms(t.elapsed())
    );
    let rss_account = status_kb("VmRSS:");

    let ids: Vec<String> = a.peers.keys().cloned().collect();
    let clients: Vec<&String> = ids.iter().skip(NETWORKS * 2).step_by(97).take(50).collect();
    let routers: Vec<&String> = ids.iter().take(NETWORKS * 2).step_by(5).take(10).collect();

    // Full map: index the account, then compute one peer's map (what one request costs).
    let t = Instant::now();
    let mut sizes = (0, 0, 0, 0);
    for id in &clients {
        let m = compute_network_map(&a, id).expect("peer");
        sizes.0 += m.remote_peers.len();
        sizes.1 += m.routes.len();
        sizes.2 += m.firewall_rules.len();
    }
    let full_client = t.elapsed() / clients.len() as u32;
    let t = Instant::now();
    for id in &routers {
        let m = compute_network_map(&a, id).expect("peer");
        sizes.3 += m.route_firewall_rules.len();
    }
    let full_router = t.elapsed() / routers.len() as u32;

    let t = Instant::now();
    let mapper = Netmapper::new(&a);
    let index = t.elapsed();
    let t = Instant::now();
    let mut total_rules = 0usize;
    let mut worst = std::time::Duration::ZERO;
    for id in &ids {
        let t1 = Instant::now();
        let m = mapper.map_for(id).expect("peer");
        worst = worst.max(t1.elapsed());
        total_rules += m.firewall_rules.len() + m.route_firewall_rules.len() + m.routes.len();
    }
    let all = t.elapsed();
    let peak = status_kb("VmHWM:");

    println!(
        "client map: avg {} remote peers, {} routes, {} firewall rules",
        sizes.0 / clients.len(),
        sizes.1 / clients.len(),
        sizes.2 / clients.len()
    );
    println!(
        "router map: avg {} route firewall rules",
        sizes.3 / routers.len()
    );
    println!(
        "index build (shared by every map of one serial): {:.2} ms",
        ms(index)
    );
    println!(
        "full map (index + map), client peer:  {:.2} ms  (target < 100 ms)",
        ms(full_client)
    );
    println!(
        "full map (index + map), routing peer: {:.2} ms  (target < 100 ms)",
        ms(full_router)
    );
    println!(
        "all {} maps with one index: {:.0} ms total, {:.3} ms per map, slowest {:.2} ms ({} routes+rules in all)",
        ids.len(),
        ms(all),
        ms(all) / ids.len() as f64,
        ms(worst),
        total_rules
    );
    println!(
        "memory: RSS {} MiB at start, {} MiB with the account, peak (VmHWM) {} MiB",
        rss0 / 1024,
        rss_account / 1024,
        peak / 1024
    );
}
