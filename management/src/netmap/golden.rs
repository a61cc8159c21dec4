//! Golden network maps: the seeds' walkthroughs built as accounts, each peer's map encoded as
//! the `management.SyncResponse` the server sends on the Sync stream (plaintext, before
//! encryption), compared with the files under the repository's `tests/golden/`: the exact
//! bytes (`<walkthrough>-<peer>.pb`, which the agent's tests decode) and a readable twin
//! (`<walkthrough>-<peer>.txt`, `{:#?}` of the decoded message, byte lists on one line). `UPDATE_GOLDEN=1 cargo test
//! -p swiftgate-management golden` rewrites them. See `tests/golden/README.md`.
//!
//! Everything is fixed: ids are numbered (`ids::use_sequential_ids`), WireGuard and SSH keys
//! derive from counters, the overlay is 100.77.0.0/16 and fd5e:7767:a7e0:1::/64, the serial 1.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use prost::Message as _;
use swiftgate_proto::management as pb;

use super::tests::{self, World, berlin};
use crate::grpc::{PeerServices, sync_response};
use crate::model::ids::use_sequential_ids;
use crate::model::*;

/// The repository's `tests/golden/`.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

/// What the goldens announce in `NetbirdConfig` (`.test` names: never resolvable).
fn services() -> PeerServices {
    PeerServices {
        signal: Some("signal.swiftgate.test:443".into()),
        signal_tls: true,
        stuns: vec!["stun:stun.swiftgate.test:3478".into()],
        relay: Some(crate::turn::RelayConfig {
            urls: vec!["rels://relay.swiftgate.test:443".into()],
            secret: crate::turn::TurnSecret::new("golden-relay-secret"),
            ttl: crate::turn::DEFAULT_TTL,
        }),
        turn: Some(crate::turn::TurnConfig {
            uris: vec!["turn:turn.swiftgate.test:3478?transport=udp".into()],
            secret: crate::turn::TurnSecret::new("golden-turn-secret"),
            ttl: crate::turn::DEFAULT_TTL,
        }),
    }
}

/// The time the golden maps are made at (their TURN credentials depend on it).
const GOLDEN_NOW: u64 = 1_796_644_800;

/// A well-formed, fixed ed25519 public key in authorized_keys form for a peer.
fn ssh_key(i: u8, name: &str) -> String {
    let mut blob = vec![0, 0, 0, 11];
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&[0, 0, 0, 32]);
    blob.extend_from_slice(&[i; 32]);
    format!(
        "ssh-ed25519 {} {name}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// Every peer announces the IPv6Overlay capability and has an SSH key, except the peers in
/// `v4_only` (agents that do not announce it get no IPv6 data).
fn finish(w: &mut World, v4_only: &[&str]) {
    let ids: Vec<String> = w.a.peers.keys().cloned().collect();
    for (i, id) in ids.iter().enumerate() {
        let name = w.a.peers[id].name.clone();
        let key = ssh_key(i as u8 + 1, &name);
        w.a.set_peer_ssh_key(id, &key).unwrap();
        w.a.peers.get_mut(id).unwrap().meta.supports_ipv6 = !v4_only.contains(&name.as_str());
    }
}

/// Berlin Office (seeds, networks.txt): alice-laptop in Development reaches the Internal Wiki
/// (10.10.0.5/32) and Grafana (grafana.berlin.internal) through office-gw on TCP 443; bob-laptop
/// is in no group (and announces no IPv6).
fn berlin_office() -> World {
    let (mut w, ..) = berlin();
    w.policy(
        "dev-to-apps",
        &["Development"],
        &["Internal Apps"],
        "tcp",
        &["443"],
    );
    finish(&mut w, &["bob-laptop"]);
    w
}

/// High availability (networks.txt, production checklist): Berlin Office with a second router,
/// office-gw (metric 100, primary) and office-gw-2 (metric 200, failover).
fn ha_routers() -> World {
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
    finish(&mut w, &["bob-laptop"]);
    w
}

/// The three-tier example of the netmap tests, `support` announcing no IPv6.
fn three_tier() -> World {
    let mut w = tests::three_tier();
    finish(&mut w, &["support"]);
    w
}

/// Site-to-VPN (networks.txt): the clientless Office LAN (192.168.10.0/24, behind gw) opens
/// connections to laptop (in Monitoring Targets) on TCP 9100.
fn site_to_vpn() -> World {
    let mut w = World::zero_trust();
    w.group("Monitoring Targets");
    w.peer("laptop", &["Monitoring Targets"]);
    w.peer("gw", &[]);
    w.network("Office");
    w.resource("Office", "Office LAN", "192.168.10.0/24", &[]);
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
    finish(&mut w, &[]);
    w
}

/// Site-to-Site (networks.txt): the clientless Berlin LAN (192.168.10.0/24, behind berlin-gw)
/// reaches the clientless Hamburg LAN (192.168.20.0/24, behind hamburg-gw) on TCP 443.
fn site_to_site() -> World {
    let mut w = World::zero_trust();
    w.peer("berlin-gw", &[]);
    w.peer("hamburg-gw", &[]);
    w.network("Berlin");
    w.network("Hamburg");
    w.resource("Berlin", "Berlin LAN", "192.168.10.0/24", &[]);
    w.resource("Hamburg", "Hamburg LAN", "192.168.20.0/24", &[]);
    w.router("Berlin", "berlin-gw", 100, true);
    w.router("Hamburg", "hamburg-gw", 100, true);
    w.a.create_policy(&PolicyInput {
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
    })
    .unwrap();
    finish(&mut w, &[]);
    w
}

/// An exit node: the resource 0.0.0.0/0 (Internet) in Network Egress, routed by exit-gw
/// (masquerade), which carol-laptop (Remote Staff) may use for every protocol.
fn exit_node() -> World {
    let mut w = World::zero_trust();
    w.group("Remote Staff");
    w.group("Exit");
    w.peer("carol-laptop", &["Remote Staff"]);
    w.peer("exit-gw", &[]);
    w.network("Egress");
    w.resource("Egress", "Internet", "0.0.0.0/0", &["Exit"]);
    w.router("Egress", "exit-gw", 100, true);
    w.policy(
        "staff-to-internet",
        &["Remote Staff"],
        &["Exit"],
        "all",
        &[],
    );
    finish(&mut w, &[]);
    w
}

/// `{:#?}` prints `bytes` fields one number per line; for review, a list of numbers becomes
/// one line: `b"..."` when it is printable ASCII (SSH keys, policy ids), else `[1, 2, ...]`.
fn compact_byte_lists(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.ends_with('[') {
            let mut j = i + 1;
            let mut bytes = Vec::new();
            while j < lines.len() {
                match lines[j].trim().strip_suffix(',').map(str::parse::<u8>) {
                    Some(Ok(b)) => bytes.push(b),
                    _ => break,
                }
                j += 1;
            }
            let closes = lines.get(j).map(|l| l.trim_start().starts_with(']'));
            if !bytes.is_empty() && closes == Some(true) {
                let tail = lines[j].trim_start().trim_start_matches(']');
                let head = line.trim_end_matches('[');
                let body = if bytes.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'"') {
                    format!("b\"{}\"", String::from_utf8_lossy(&bytes))
                } else {
                    let nums: Vec<String> = bytes.iter().map(u8::to_string).collect();
                    format!("[{}]", nums.join(", "))
                };
                out.push_str(&format!("{head}{body}{tail}\n"));
                i = j + 1;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

/// Builds one walkthrough's account.
type Build = fn() -> World;

/// Every golden file: name (without extension) -> (bytes, text).
fn render() -> BTreeMap<String, (Vec<u8>, String)> {
    let walkthroughs: [(&str, Build); 6] = [
        ("berlin-office", berlin_office),
        ("ha-routers", ha_routers),
        ("three-tier", three_tier),
        ("site-to-vpn", site_to_vpn),
        ("site-to-site", site_to_site),
        ("exit-node", exit_node),
    ];
    let svc = services();
    let mut out = BTreeMap::new();
    for (walkthrough, build) in walkthroughs {
        use_sequential_ids();
        let w = build();
        for p in w.a.peers.values() {
            let resp = sync_response(&svc, &p.id, &w.map(&p.id), GOLDEN_NOW);
            let bytes = resp.encode_to_vec();
            let decoded = pb::SyncResponse::decode(bytes.as_slice()).expect("own encoding");
            let text = compact_byte_lists(&format!("{decoded:#?}\n"));
            out.insert(format!("{walkthrough}-{}", p.name), (bytes, text));
        }
    }
    out
}

#[test]
fn golden_network_maps() {
    let dir = golden_dir();
    let files = render();
    // Reproducible: a second rendering gives the same bytes.
    assert_eq!(files, render(), "golden rendering is not deterministic");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("pb" | "txt")
            ) {
                std::fs::remove_file(&path).unwrap();
            }
        }
        for (name, (bytes, text)) in &files {
            std::fs::write(dir.join(format!("{name}.pb")), bytes).unwrap();
            std::fs::write(dir.join(format!("{name}.txt")), text).unwrap();
        }
        return;
    }
    let hint = "run `UPDATE_GOLDEN=1 cargo test -p swiftgate-management golden` and review the \
                .txt diff";
    let mut mismatched = Vec::new();
    for (name, (bytes, text)) in &files {
        let pb_path = dir.join(format!("{name}.pb"));
        let txt_path = dir.join(format!("{name}.txt"));
        let stored_pb = std::fs::read(&pb_path).unwrap_or_default();
        let stored_txt = std::fs::read_to_string(&txt_path).unwrap_or_default();
        if &stored_pb != bytes {
            mismatched.push(pb_path.display().to_string());
        }
        if &stored_txt != text {
            mismatched.push(txt_path.display().to_string());
        }
    }
    // No stale files from walkthroughs or peers that are gone.
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str());
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if matches!(ext, Some("pb" | "txt")) && !files.contains_key(stem) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        mismatched.is_empty() && stale.is_empty(),
        "golden maps differ: {mismatched:?}, stale: {stale:?}; {hint}"
    );
}

/// A golden file says what the walkthrough promises (a guard that the goldens themselves are
/// right, not only unchanged): alice reaches the wiki and Grafana through office-gw with
/// NetBird's wire details.
#[test]
fn golden_berlin_office_says_what_the_walkthrough_promises() {
    use_sequential_ids();
    let w = berlin_office();
    let alice = w.a.peer_id("alice-laptop").unwrap();
    let resp = sync_response(&services(), &alice, &w.map(&alice), GOLDEN_NOW);
    let nm = resp.network_map.unwrap();
    let pc = nm.peer_config.unwrap();
    assert!(pc.address.starts_with("100.77.0.") && pc.address.ends_with("/16"));
    assert_eq!(pc.address_v6.len(), 17);
    let mut routes: Vec<(String, String, bool)> = nm
        .routes
        .iter()
        .map(|r| (r.net_id.clone(), r.network.clone(), r.keep_route))
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        vec![
            ("Grafana".into(), "192.0.2.0/32".into(), true),
            ("Internal Wiki".into(), "10.10.0.5/32".into(), true)
        ]
    );
    assert_eq!(nm.remote_peers.len(), 1);
    assert!(nm.firewall_rules.is_empty() && nm.firewall_rules_is_empty);
}
