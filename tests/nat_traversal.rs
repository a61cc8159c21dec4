//! Peers behind NAT routers (nftables masquerade in network namespaces) finding each other
//! through server-reflexive candidates: each agent asks a real STUN server (coturn, on the
//! "internet" namespace beside the management server) where its NAT maps the WireGuard port,
//! offers that address over Signal, and the two connect directly through both NATs.
//!
//! ```text
//!  home-a 192.0.2.2 ── nat-a ── 203.0.113.2 ┐
//!                                            inet 203.0.113.1 (management, Signal, coturn)
//!  home-b 198.51.100.2 ── nat-b ── 203.0.113.18 ┘
//! ```
//!
//! A NAT that rebinds (new port, mappings forgotten) under a live tunnel is recovered: the new
//! mapping is discovered and offered, and the other side probes it. Once connected, the tunnel
//! outlives the STUN server, the management server and Signal.
//!
//! The NATs map endpoint-independently (Linux masquerade keeps the port when it is free) and
//! filter by address and port (conntrack): neither home is reachable from outside until it
//! has sent to the other. Needs root; coturn comes from scripts/bootstrap.sh.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swiftgate_testkit::{
    mgmt::{Agent, Mgmt, enrol, peer, wait_ready},
    traffic,
    wg::{Lab, sh},
};

/// coturn in a namespace, killed when dropped (before the lab removes the namespace).
struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `swiftgate status --json` of an enrolled agent.
fn status(a: &Agent) -> Value {
    let out = Command::new(swiftgate_testkit::swiftgate_bin())
        .args(["status", "--json", "--socket"])
        .arg(a.log.with_extension("").join("ctl.sock"))
        .output()
        .expect("swiftgate status");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn wait(what: &str, timeout: Duration, agents: &[&Agent], mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            let detail: Vec<String> = agents
                .iter()
                .map(|a| {
                    format!(
                        "{}\nstatus: {}",
                        std::fs::read_to_string(&a.log).unwrap_or_default(),
                        status(a)
                    )
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", detail.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A NAT router between a new home namespace (the router's LAN address and the home's, `lan`)
/// and `inet` (the router's WAN address and the internet's, `wan`): forwarding on,
/// masquerade out of the WAN, nothing new in from it. Returns the router and the home.
fn nat(
    lab: &mut Lab,
    name: &str,
    inet: usize,
    wan: (&str, &str),
    lan: (&str, &str),
) -> (usize, usize) {
    let (nat, home) = (lab.ns(&format!("{name}r")), lab.ns(&format!("{name}h")));
    lab.link(nat, "wan0", wan.0, inet, &format!("to{name}"), wan.1);
    lab.link(home, "eth0", lan.1, nat, "lan0", lan.0);
    lab.n(nat).sysctl("net/ipv4/ip_forward", "1").unwrap();
    let inet_ip = wan.1.split('/').next().unwrap();
    let gw_ip = lan.0.split('/').next().unwrap();
    lab.n(nat)
        .ip(&["route", "add", "default", "via", inet_ip])
        .unwrap();
    lab.n(home)
        .ip(&["route", "add", "default", "via", gw_ip])
        .unwrap();
    let ns = Some(lab.n(nat));
    sh(ns, &["nft", "add", "table", "ip", "nat"]);
    sh(
        ns,
        &[
            "nft",
            "add chain ip nat post { type nat hook postrouting priority 100 ; }",
        ],
    );
    sh(ns, &["nft", "add rule ip nat post oifname wan0 masquerade"]);
    // A home router's firewall: nothing new gets in from the WAN. (Without it, a peer's
    // packet that arrives before this side has sent would leave a conntrack entry that
    // takes the port, and this side's own mapping would then move to another port.)
    sh(ns, &["nft", "add", "table", "ip", "filter"]);
    sh(
        ns,
        &[
            "nft",
            "add chain ip filter input { type filter hook input priority 0 ; policy accept ; }",
        ],
    );
    sh(
        ns,
        &[
            "nft",
            "add rule ip filter input iifname wan0 ct state new drop",
        ],
    );
    (nat, home)
}

#[test]
fn cone_nat_peers_connect_through_server_reflexive_candidates() {
    let mut lab = Lab::new();
    let inet = lab.ns("inet");
    // The "internet" routes between the two NATs' links.
    lab.n(inet).sysctl("net/ipv4/ip_forward", "1").unwrap();
    let (nat_a, home_a) = nat(
        &mut lab,
        "a",
        inet,
        ("203.0.113.2/28", "203.0.113.1/28"),
        ("192.0.2.1/24", "192.0.2.2/24"),
    );
    let (_, home_b) = nat(
        &mut lab,
        "b",
        inet,
        ("203.0.113.18/28", "203.0.113.17/28"),
        ("198.51.100.1/24", "198.51.100.2/24"),
    );
    let log = lab.dir.join("coturn.log");
    let coturn = Coturn(
        lab.n(inet)
            .spawn(
                Command::new("turnserver")
                    .args([
                        "-n",
                        "--listening-ip=203.0.113.1",
                        "--listening-port=3478",
                        "--no-tls",
                        "--no-dtls",
                        "--no-cli",
                        "--no-auth",
                        "--simple-log",
                    ])
                    .arg(format!("--log-file={}", log.display()))
                    .arg(format!(
                        "--pidfile={}",
                        lab.dir.join("coturn.pid").display()
                    ))
                    .arg(format!("--userdb={}", lab.dir.join("coturn.db").display()))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .expect("turnserver (coturn): run scripts/bootstrap.sh"),
    );
    let m = Mgmt::start_with_stuns(
        &lab,
        inet,
        "203.0.113.1",
        vec!["stun:203.0.113.1:3478".into()],
    );
    let key = m.post(
        "/api/setup-keys",
        json!({"name": "homes", "type": "reusable", "expires_in": 3600}),
    )["key"]
        .as_str()
        .unwrap()
        .to_string();
    let alice = enrol(&lab, home_a, "alice", &m, &key, &[]);
    let bob = enrol(&lab, home_b, "bob", &m, &key, &[]);
    wait_ready(&alice);
    wait_ready(&bob);
    let (_, alice_ip) = peer(&m, &alice.keys);
    let (_, bob_ip) = peer(&m, &bob.keys);

    // Each learns its NAT's mapping of its WireGuard port from coturn.
    let reflexive = |a: &Agent| -> Vec<String> {
        status(a)["reflexive"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let port = |a: &Agent| status(a)["listen_port"].as_u64().unwrap_or(0);
    wait(
        "alice's server-reflexive address",
        Duration::from_secs(20),
        &[&alice],
        || reflexive(&alice) == vec![format!("203.0.113.2:{}", port(&alice))],
    );
    wait(
        "bob's server-reflexive address",
        Duration::from_secs(20),
        &[&bob],
        || reflexive(&bob) == vec![format!("203.0.113.18:{}", port(&bob))],
    );

    // Through both NATs, directly: WireGuard retries its handshake until both filters
    // have let the other side in.
    let ping = |ns: usize, src: Ipv4Addr, dst: Ipv4Addr| {
        traffic::ping(lab.n(ns), IpAddr::V4(src), IpAddr::V4(dst)).unwrap_or(false)
    };
    wait(
        "alice -> bob across the NATs",
        Duration::from_secs(40),
        &[&alice, &bob],
        || ping(home_a, alice_ip, bob_ip),
    );
    assert!(ping(home_b, bob_ip, alice_ip), "bob -> alice");
    // The endpoint alice uses for bob is bob's NAT mapping (his LAN address is unreachable).
    let peers = status(&alice)["peers"].clone();
    let endpoint = peers
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|p| p["endpoint"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(
        endpoint.starts_with("203.0.113.18:"),
        "alice reaches bob at {endpoint}: {peers}"
    );
    // The connection state the rest of the agent reads.
    let bob_seen = &peers[0];
    assert_eq!(bob_seen["state"], "connected", "{peers}");
    assert_eq!(bob_seen["path"], "direct", "{peers}");
    assert_eq!(bob_seen["endpoint_origin"], "srflx", "{peers}");
    // The round trip is measured by the side that initiated the handshake in force.
    let alice_seen = status(&bob)["peers"][0].clone();
    assert!(
        bob_seen["rtt_ms"].as_u64().is_some() || alice_seen["rtt_ms"].as_u64().is_some(),
        "{peers} / {alice_seen}"
    );

    // Bad input on the shared port (sent from alice's own host, inside her NAT): two Binding
    // answers to no request of hers (one also with a broken FINGERPRINT) and an oversized
    // STUN-shaped datagram. Ignored and counted; the tunnel carries on.
    let alice_port = port(&alice) as u16;
    let before = status(&alice)["drops"].clone();
    lab.n(home_a)
        .run(move || {
            let sock = std::net::UdpSocket::bind("192.0.2.2:0").unwrap();
            let to = ("192.0.2.2", alice_port);
            // Binding success, unknown transaction id, XOR-MAPPED-ADDRESS 198.51.100.66:4242.
            let mut answer = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
            answer.extend_from_slice(b"not-ours-!!!");
            answer.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0x31, 0x40]);
            answer.extend_from_slice(&[198 ^ 0x21, 51 ^ 0x12, 100 ^ 0xa4, 66 ^ 0x42]);
            sock.send_to(&answer, to).unwrap();
            // A FINGERPRINT that does not match.
            let mut bad = answer.clone();
            bad[3] = 0x14;
            bad.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]);
            sock.send_to(&bad, to).unwrap();
            // STUN-shaped, larger than any answer.
            let mut big = vec![0x01, 0x01, 0x03, 0xe8, 0x21, 0x12, 0xa4, 0x42];
            big.resize(20 + 1000, 0);
            sock.send_to(&big, to).unwrap();
        })
        .unwrap();
    let count = |d: &Value, k: &str| d[k].as_u64().unwrap_or(0);
    wait(
        "the bad STUN datagrams counted",
        Duration::from_secs(5),
        &[&alice],
        || {
            let now = status(&alice)["drops"].clone();
            count(&now, "stun_ignored") >= count(&before, "stun_ignored") + 2
                && count(&now, "stun") > count(&before, "stun")
        },
    );
    assert_eq!(
        reflexive(&alice),
        vec![format!("203.0.113.2:{alice_port}")],
        "an answer to no request of ours changes nothing"
    );
    assert!(ping(home_a, alice_ip, bob_ip), "the tunnel carries on");

    // NAT rebinding: alice's router starts mapping to another port and forgets its mappings
    // (a router restart, a new upstream). Alice's discovery sees the new mapping and offers
    // it; bob, still holding the old one, probes the new address, which opens his NAT
    // towards it; the handshake answer moves his endpoint.
    sh(Some(lab.n(nat_a)), &["nft", "flush chain ip nat post"]);
    sh(
        Some(lab.n(nat_a)),
        &[
            "nft",
            "add rule ip nat post oifname wan0 meta l4proto udp masquerade to :40000",
        ],
    );
    sh(
        Some(lab.n(nat_a)),
        &["nft", "add rule ip nat post oifname wan0 masquerade"],
    );
    sh(Some(lab.n(nat_a)), &["conntrack", "-F"]);
    wait(
        "alice -> bob after alice's NAT rebinds",
        Duration::from_secs(60),
        &[&alice, &bob],
        || ping(home_a, alice_ip, bob_ip),
    );
    assert_eq!(reflexive(&alice), vec!["203.0.113.2:40000".to_string()]);
    wait(
        "bob's endpoint for alice follows",
        Duration::from_secs(10),
        &[&bob],
        || status(&bob)["peers"][0]["endpoint"] == "203.0.113.2:40000",
    );

    // The STUN server, management and Signal going away break nothing that is connected.
    drop(coturn);
    drop(m);
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..3 {
        assert!(
            ping(home_a, alice_ip, bob_ip),
            "alice -> bob without the servers"
        );
        assert!(
            ping(home_b, bob_ip, alice_ip),
            "bob -> alice without the servers"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
