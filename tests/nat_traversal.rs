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
//! has sent to the other.
//!
//! Behind two symmetric NATs (a new random port per destination) only pairs through coturn's
//! TURN relay work: the tunnel runs relayed, comes back through new allocations when coturn
//! restarts (it forgets them all), and goes direct once one NAT opens. The seeds' Berlin
//! Office walkthrough runs with alice behind a symmetric NAT and the routing peer behind a
//! port-restricted cone, set up through the admin API. Needs root; coturn comes from
//! scripts/bootstrap.sh.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use swiftgate_testkit::{
    mgmt::{Agent, Mgmt, enrol, enrol_as, peer, wait_ready},
    nat::{
        Homes, Mapping, TURN_SECRET, coturn, coturn_on, management, management_announcing,
        turn_config_at, two_homes,
    },
    traffic,
    wg::{Lab, sh},
};

/// Enrols `name` in namespace `ns`, waits until it is ready; the agent and its overlay address.
fn up(lab: &Lab, ns: usize, name: &str, m: &Mgmt, key: &str) -> (Agent, Ipv4Addr) {
    let a = enrol(lab, ns, name, m, key, &[]);
    wait_ready(&a);
    let (_, ip) = peer(m, &a.keys);
    (a, ip)
}

/// Whether `src` in `ns` gets an echo answer from `dst`.
fn answers(lab: &Lab, ns: usize, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    traffic::ping(lab.n(ns), IpAddr::V4(src), IpAddr::V4(dst)).unwrap_or(false)
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
    let start = Instant::now();
    let deadline = start + timeout;
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
    eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn cone_nat_peers_connect_through_server_reflexive_candidates() {
    let mut lab = Lab::new();
    let Homes {
        inet,
        nat_a,
        home_a,
        home_b,
        ..
    } = two_homes(&mut lab, Mapping::Cone, Mapping::Cone);
    let coturn = coturn(&lab, inet, None);
    let (m, key) = management(&lab, inet, None);
    let (alice, alice_ip) = up(&lab, home_a, "alice", &m, &key);
    let (bob, bob_ip) = up(&lab, home_b, "bob", &m, &key);

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
    let ping = |ns: usize, src: Ipv4Addr, dst: Ipv4Addr| answers(&lab, ns, src, dst);
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
    // ICE's pair to bob's mapping (or that mapping as WireGuard's roaming confirmed it).
    assert!(
        ["srflx", "learnt"].contains(&bob_seen["endpoint_origin"].as_str().unwrap_or("")),
        "{peers}"
    );
    wait_for_pairs(&[&alice]);
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
    // (a router restart, a new upstream). The selected pair stops answering consent checks,
    // the controlling side restarts ICE, and the checks find the new mapping (discovery
    // offers it, and the checks from it show it as peer-reflexive).
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

/// Waits (10 s) until each of `agents` shows ICE's selected pair for its one peer: a path,
/// and ICE connected or completed. The controlled side reports the pair once the controlling
/// side's nomination has reached it, which can trail the first WireGuard handshake through
/// it a little.
fn wait_for_pairs(agents: &[&Agent]) {
    wait(
        "ICE to report the selected pair",
        Duration::from_secs(10),
        agents,
        || {
            agents.iter().all(|a| {
                let (path, ice) = path_of(a);
                path != "-" && (ice == "connected" || ice == "completed")
            })
        },
    );
}

/// The path and ICE state `a` shows for its one peer.
fn path_of(a: &Agent) -> (String, String) {
    let p = &status(a)["peers"][0];
    (
        p["path"].as_str().unwrap_or("-").to_string(),
        p["ice"]["state"].as_str().unwrap_or("-").to_string(),
    )
}

#[test]
fn symmetric_nat_peers_relay_through_turn_then_go_direct_when_a_nat_opens() {
    let mut lab = Lab::new();
    // Both NATs map every destination to a new random port: the mapping a STUN server sees
    // is no use to the peer, and neither side can reach the other directly.
    let Homes {
        inet,
        home_a,
        nat_b,
        home_b,
        ..
    } = two_homes(&mut lab, Mapping::Symmetric, Mapping::Symmetric);
    let turn_server = coturn(&lab, inet, Some(TURN_SECRET));
    let (m, key) = management(&lab, inet, Some(Duration::from_secs(600)));
    let (alice, alice_ip) = up(&lab, home_a, "alice", &m, &key);
    let (bob, bob_ip) = up(&lab, home_b, "bob", &m, &key);
    let ping = |ns: usize, src: Ipv4Addr, dst: Ipv4Addr| answers(&lab, ns, src, dst);

    // Through coturn: ICE finds only pairs through a relay, and WireGuard rides them in
    // ChannelData.
    wait(
        "alice -> bob through the relay",
        Duration::from_secs(60),
        &[&alice, &bob],
        || ping(home_a, alice_ip, bob_ip),
    );
    assert!(ping(home_b, bob_ip, alice_ip), "bob -> alice");
    let (pa, pb) = (path_of(&alice), path_of(&bob));
    eprintln!(
        "relayed: alice {}\nbob {}",
        status(&alice)["peers"],
        status(&bob)["peers"]
    );
    assert_eq!(
        (pa.0.as_str(), pb.0.as_str()),
        ("relayed", "relayed"),
        "alice {pa:?}, bob {pb:?}"
    );
    // One side's selected pair starts at its relayed address (it sends through its own
    // allocation); the other's ends there or at its own relay.
    let local_relayed = |a: &Agent| {
        status(a)["peers"][0]["ice"]["local"]
            .as_str()
            .is_some_and(|l| l.starts_with("203.0.113.1:"))
    };
    assert!(
        local_relayed(&alice) || local_relayed(&bob),
        "alice {}\nbob {}",
        status(&alice)["peers"],
        status(&bob)["peers"]
    );
    for a in [&alice, &bob] {
        assert_eq!(status(a)["peers"][0]["endpoint_origin"], "relay");
    }
    // Policy verdicts are those of a direct path: the default policy lets everyone reach
    // everyone, and a TCP stream runs both ways.
    let server = traffic::TcpServer::start(
        lab.n(home_a),
        std::net::SocketAddr::new(IpAddr::V4(alice_ip), 7000),
    )
    .expect("echo server on alice");
    traffic::bulk_echo(
        lab.n(home_b),
        IpAddr::V4(bob_ip),
        server.addr(),
        256 * 1024,
        Duration::from_secs(20),
    )
    .expect("256 KiB echoed bob -> alice -> bob through the relay");

    // The TURN server restarts under the relayed tunnel: it forgets every allocation. The
    // agents find out (consent through the relay fails; a probing Allocate is granted where
    // it would have been refused), allocate again, offer the new relayed addresses and
    // check them; the tunnel comes back through the new allocations.
    drop(turn_server);
    let turn_server = coturn(&lab, inet, Some(TURN_SECRET));
    wait(
        "the relayed tunnel after coturn restarts",
        Duration::from_secs(90),
        &[&alice, &bob],
        || ping(home_a, alice_ip, bob_ip) && ping(home_b, bob_ip, alice_ip),
    );
    eprintln!(
        "relayed again: alice {}\nbob {}",
        status(&alice)["peers"],
        status(&bob)["peers"]
    );
    let (pa, pb) = (path_of(&alice), path_of(&bob));
    assert_eq!(
        (pa.0.as_str(), pb.0.as_str()),
        ("relayed", "relayed"),
        "alice {pa:?}, bob {pb:?}"
    );

    // Alice stops cleanly (SIGTERM) and starts again from the same port: she gave her
    // allocation back on the way out, so coturn grants her a new one at once (without that
    // it would refuse the same 5-tuple with 437 for the old allocation's lifetime).
    let pid = nix::unistd::Pid::from_raw(alice.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM to alice");
    let mut alice = alice;
    let stopped = Instant::now() + Duration::from_secs(10);
    while alice.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < stopped, "alice did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = std::fs::read_to_string(&alice.log).unwrap_or_default();
    assert!(
        said.contains("releasing the TURN allocation"),
        "no release on a clean stop:\n{said}"
    );
    let keys = alice.keys.clone();
    drop(alice);
    let alice = enrol_as(&lab, home_a, "alice", &m, &key, &[], keys);
    wait_ready(&alice);
    wait(
        "alice's own relay after her restart",
        Duration::from_secs(20),
        &[&alice, &bob],
        || {
            std::fs::read_to_string(&alice.log)
                .unwrap_or_default()
                .contains("TURN relay allocated")
        },
    );
    let said = std::fs::read_to_string(&alice.log).unwrap_or_default();
    assert!(
        !said.contains("TURN allocation failed"),
        "coturn refused the restarted agent's allocation:\n{said}"
    );
    wait(
        "the relayed tunnel after alice's restart",
        Duration::from_secs(30),
        &[&alice, &bob],
        || ping(home_a, alice_ip, bob_ip),
    );

    // Bob's router becomes permissive: endpoint-independent mapping and a port forward to
    // his WireGuard port (what an operator does to get rid of the relay). His next mapping
    // is found, offered, and checked; the direct pair wins over the relayed one.
    let nb = Some(lab.n(nat_b));
    sh(nb, &["nft", "flush chain ip nat post"]);
    sh(nb, &["nft", "add rule ip nat post oifname wan0 masquerade"]);
    sh(
        nb,
        &[
            "nft",
            "add chain ip nat pre { type nat hook prerouting priority -100 ; }",
        ],
    );
    sh(
        nb,
        &[
            "nft",
            "add rule ip nat pre iifname wan0 udp dport 51820 dnat to 198.51.100.2",
        ],
    );
    sh(nb, &["conntrack", "-F"]);
    wait(
        "the direct path after bob's NAT opens",
        Duration::from_secs(90),
        &[&alice, &bob],
        || path_of(&alice).0 == "direct" && path_of(&bob).0 == "direct",
    );
    eprintln!(
        "direct: alice {}\nbob {}",
        status(&alice)["peers"],
        status(&bob)["peers"]
    );
    assert!(ping(home_a, alice_ip, bob_ip), "alice -> bob, direct");
    let to_bob = status(&alice)["peers"][0]["endpoint"].clone();
    assert_eq!(
        to_bob, "203.0.113.18:51820",
        "alice sends to bob's forwarded port"
    );

    // The TURN server going away does not touch a direct tunnel.
    drop(turn_server);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        ping(home_a, alice_ip, bob_ip),
        "direct without the TURN server"
    );
    drop(m);
}

/// The seeds' Berlin Office walkthrough with alice and the office's routing peer behind
/// different NATs, set up through the admin API as a user does it: alice's NAT maps every
/// destination to a new port (symmetric), the office's keeps one mapping but filters by
/// address and port (port-restricted cone). No direct pair can work between those two (the
/// office cannot learn alice's per-destination port, and alice's packets to the office's
/// mapping come from a port the office's NAT never sent to), so ICE settles on a pair through
/// coturn, and the policy, the masquerade and deny-by-default act on the relayed tunnel as on
/// a LAN.
///
/// ```text
///  alice 192.0.2.2 ── nat-a (symmetric) ── 203.0.113.2 ┐
///                                                 inet 203.0.113.1 (management, Signal, coturn)
///  router 198.51.100.2 ── nat-b (cone) ── 203.0.113.18 ┘
///    └─ lan0 198.51.100.129/25 ── wiki 198.51.100.130 (:443, :22)
/// ```
#[test]
fn berlin_office_with_alice_and_the_routing_peer_behind_different_nats() {
    let mut lab = Lab::new();
    let Homes {
        inet,
        home_a,
        home_b,
        ..
    } = two_homes(&mut lab, Mapping::Symmetric, Mapping::Cone);
    let office = lab.ns("office");
    lab.link(
        office,
        "eth0",
        "198.51.100.130/25",
        home_b,
        "lan0",
        "198.51.100.129/25",
    );
    let wiki_ip = Ipv4Addr::new(198, 51, 100, 130);
    let _turn_server = coturn(&lab, inet, Some(TURN_SECRET));
    let (m, _) = management(&lab, inet, Some(Duration::from_secs(600)));
    for g in ["Development", "routers", "Internal Apps"] {
        m.post("/api/groups", serde_json::json!({ "name": g }));
    }
    let key = |name: &str, group: &str| {
        m.post(
            "/api/setup-keys",
            serde_json::json!({"name": name, "kind": "reusable", "auto_groups": [group]}),
        )["key"]
            .as_str()
            .expect("a setup key")
            .to_string()
    };
    let (dev_key, router_key) = (
        key("dev-laptops", "Development"),
        key("office-routers", "routers"),
    );
    let router = enrol(&lab, home_b, "router", &m, &router_key, &["--lan", "lan0"]);
    let alice = enrol(&lab, home_a, "alice", &m, &dev_key, &[]);
    wait_ready(&router);
    wait_ready(&alice);
    let (router_id, router_ip) = peer(&m, &router.keys);
    let (_, alice_ip) = peer(&m, &alice.keys);

    // The Default policy connects the peers: the tunnel comes up through the relay.
    wait(
        "alice -> router over the Default policy",
        Duration::from_secs(60),
        &[&alice, &router],
        || answers(&lab, home_a, alice_ip, router_ip),
    );
    wait_for_pairs(&[&alice, &router]);
    let (pa, pr) = (path_of(&alice), path_of(&router));
    eprintln!(
        "alice {}\nrouter {}",
        status(&alice)["peers"],
        status(&router)["peers"]
    );
    assert_eq!(
        (pa.0.as_str(), pr.0.as_str()),
        ("relayed", "relayed"),
        "symmetric <-> port-restricted cone has no direct pair: alice {pa:?}, router {pr:?}"
    );

    // The office's resource, its routing peer, and no policy yet: no access.
    let wiki = traffic::TcpServer::start(lab.n(office), std::net::SocketAddr::from((wiki_ip, 443)))
        .expect("wiki :443");
    let _ssh = traffic::TcpServer::start(lab.n(office), std::net::SocketAddr::from((wiki_ip, 22)))
        .expect("wiki :22");
    m.post(
        "/api/networks",
        serde_json::json!({"name": "Berlin Office"}),
    );
    m.post(
        "/api/networks/Berlin%20Office/resources",
        serde_json::json!({"name": "Internal Wiki", "address": "198.51.100.130/32", "groups": ["Internal Apps"]}),
    );
    m.post(
        "/api/networks/Berlin%20Office/routers",
        serde_json::json!({"peer": router_id, "metric": 100, "masquerade": true}),
    );
    let probe = |port: u16, t: Duration| {
        traffic::tcp_probe(
            lab.n(home_a),
            IpAddr::V4(alice_ip),
            std::net::SocketAddr::from((wiki_ip, port)),
            t,
        )
        .is_ok()
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !probe(443, traffic::BLOCKED_TIMEOUT),
        "access before any policy"
    );

    // The walkthrough's policy: Development -> Internal Apps, TCP 443, through the relay.
    m.post(
        "/api/policies",
        serde_json::json!({"name": "dev-to-apps", "sources": ["Development"], "destinations": ["Internal Apps"], "protocol": "tcp", "ports": [443]}),
    );
    wait(
        "alice -> wiki:443 after the policy",
        Duration::from_secs(30),
        &[&alice, &router],
        || probe(443, Duration::from_secs(1)),
    );
    traffic::assert_only_443_masqueraded(
        probe,
        &wiki,
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 129)),
    );
    assert_eq!(path_of(&alice).0, "relayed", "still through the relay");
    drop(m);
}

/// The two-home lab made dual-stack: IPv6 routed between the homes (2001:db8:a::/64 and
/// 2001:db8:b::/64 through the routers and the internet's 2001:db8:1::1 and 2001:db8:2::1,
/// no NAT, as IPv6 homes usually are), and no IPv4 forwarded between them (management,
/// Signal and coturn on the internet itself stay reachable over IPv4).
fn dual_stack(lab: &mut Lab) -> Homes {
    let homes = two_homes(lab, Mapping::Cone, Mapping::Cone);
    let Homes {
        inet,
        nat_a,
        home_a,
        nat_b,
        home_b,
    } = homes;
    let v6 = |ns: usize, args: &[&str]| {
        lab.n(ns).ip(args).unwrap().check().unwrap();
    };
    for ns in [inet, nat_a, nat_b] {
        lab.n(ns)
            .sysctl("net/ipv6/conf/all/forwarding", "1")
            .unwrap();
    }
    // Addresses without duplicate address detection: usable at once.
    for (ns, dev, addr) in [
        (inet, "toa", "2001:db8:1::1/64"),
        (nat_a, "wan0", "2001:db8:1::2/64"),
        (nat_a, "lan0", "2001:db8:a::1/64"),
        (home_a, "eth0", "2001:db8:a::2/64"),
        (inet, "tob", "2001:db8:2::1/64"),
        (nat_b, "wan0", "2001:db8:2::2/64"),
        (nat_b, "lan0", "2001:db8:b::1/64"),
        (home_b, "eth0", "2001:db8:b::2/64"),
    ] {
        v6(ns, &["-6", "addr", "add", addr, "dev", dev, "nodad"]);
    }
    for (ns, to, via) in [
        (nat_a, "default", "2001:db8:1::1"),
        (home_a, "default", "2001:db8:a::1"),
        (nat_b, "default", "2001:db8:2::1"),
        (home_b, "default", "2001:db8:b::1"),
        (inet, "2001:db8:a::/64", "2001:db8:1::2"),
        (inet, "2001:db8:b::/64", "2001:db8:2::2"),
    ] {
        v6(ns, &["-6", "route", "add", to, "via", via]);
    }
    let ni = Some(lab.n(inet));
    sh(ni, &["nft", "add table ip cut"]);
    sh(
        ni,
        &[
            "nft",
            "add chain ip cut between { type filter hook forward priority 0 ; policy drop ; }",
        ],
    );
    // The lab itself: IPv6 between the homes, no IPv4.
    let (a6, b6): (IpAddr, IpAddr) = (
        "2001:db8:a::2".parse().unwrap(),
        "2001:db8:b::2".parse().unwrap(),
    );
    // (Neighbour discovery and the link-local addresses take a moment on new links.)
    wait(
        "IPv6 between the homes",
        Duration::from_secs(10),
        &[],
        || traffic::ping(lab.n(home_a), a6, b6).unwrap_or(false),
    );
    assert!(
        !answers(
            lab,
            home_a,
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(203, 0, 113, 18)
        ),
        "no IPv4 between the homes"
    );
    homes
}

/// Dual-stack homes whose IPv4 paths to each other are cut (the internet forwards no IPv4
/// between them; management, Signal and STUN stay reachable over IPv4) but whose IPv6
/// addresses are routed (2001:db8::/32, no NAT, as IPv6 homes usually are): ICE offers the
/// IPv6 host candidates beside the IPv4 ones, and the pair it selects, WireGuard's path and
/// the traffic are IPv6.
#[test]
fn dual_stack_peers_connect_over_ipv6_when_ipv4_cannot() {
    let mut lab = Lab::new();
    let Homes {
        inet,
        home_a,
        home_b,
        ..
    } = dual_stack(&mut lab);
    let _coturn = coturn(&lab, inet, None);
    let (m, key) = management(&lab, inet, None);
    let (alice, alice_ip) = up(&lab, home_a, "alice", &m, &key);
    let (bob, bob_ip) = up(&lab, home_b, "bob", &m, &key);
    wait(
        "alice -> bob over IPv6",
        Duration::from_secs(60),
        &[&alice, &bob],
        || answers(&lab, home_a, alice_ip, bob_ip),
    );
    wait_for_pairs(&[&alice, &bob]);
    eprintln!(
        "alice {}\nbob {}",
        status(&alice)["peers"],
        status(&bob)["peers"]
    );
    let p = &status(&alice)["peers"][0];
    assert_eq!(p["path"], "direct");
    assert_eq!(p["endpoint_origin"], "host");
    assert_eq!(p["endpoint"], "[2001:db8:b::2]:51820", "{p}");
    assert!(
        p["ice"]["local"]
            .as_str()
            .is_some_and(|l| l.starts_with("[2001:db8:a::2]")),
        "{p}"
    );
    assert!(answers(&lab, home_b, bob_ip, alice_ip), "bob -> alice");
    drop(m);
}

/// The dual-stack homes with IPv6 between them cut too (the internet forwards nothing
/// between the homes), and coturn announced only at its IPv6 address for TURN (STUN at both):
/// each agent learns its IPv6 reflexive address, allocates an IPv6 relayed address
/// (REQUESTED-ADDRESS-FAMILY), and the only pairs that work, through the IPv6 relay, carry
/// WireGuard.
#[test]
fn dual_stack_peers_relay_over_ipv6_when_nothing_else_works() {
    let mut lab = Lab::new();
    let Homes {
        inet,
        home_a,
        home_b,
        ..
    } = dual_stack(&mut lab);
    let ni = Some(lab.n(inet));
    sh(ni, &["nft", "add table ip6 cut"]);
    sh(
        ni,
        &[
            "nft",
            "add chain ip6 cut between { type filter hook forward priority 0 ; policy drop ; }",
        ],
    );
    let _coturn = coturn_on(&lab, inet, Some(TURN_SECRET), &["2001:db8:1::1"]);
    let (m, key) = management_announcing(
        &lab,
        inet,
        vec![
            "stun:203.0.113.1:3478".into(),
            "stun:[2001:db8:1::1]:3478".into(),
        ],
        Some(turn_config_at(
            "turn:[2001:db8:1::1]:3478?transport=udp",
            Duration::from_secs(600),
        )),
    );
    let (alice, alice_ip) = up(&lab, home_a, "alice", &m, &key);
    let (bob, bob_ip) = up(&lab, home_b, "bob", &m, &key);
    wait(
        "alice -> bob through the IPv6 relay",
        Duration::from_secs(60),
        &[&alice, &bob],
        || answers(&lab, home_a, alice_ip, bob_ip),
    );
    wait_for_pairs(&[&alice, &bob]);
    let (sa, sb) = (status(&alice), status(&bob));
    eprintln!("alice {sa}\nbob {sb}");
    assert_eq!(
        (path_of(&alice).0.as_str(), path_of(&bob).0.as_str()),
        ("relayed", "relayed")
    );
    // The IPv6 reflexive address (no NAT: the host's own) came from coturn's IPv6 address.
    assert!(
        sa["reflexive"]
            .as_array()
            .is_some_and(|r| r.iter().any(|a| a == "[2001:db8:a::2]:51820")),
        "{sa}"
    );
    // Each side's selected pair has an IPv6 relayed address at one end (its own allocation,
    // or the peer's: each side may send into the other's relay).
    let through_v6_relay = |s: &Value| {
        ["local", "remote"].iter().any(|end| {
            s["peers"][0]["ice"][end]
                .as_str()
                .is_some_and(|a| a.starts_with("[2001:db8:1::1]:"))
        })
    };
    assert!(
        through_v6_relay(&sa) && through_v6_relay(&sb),
        "alice {sa}\nbob {sb}"
    );
    assert!(answers(&lab, home_b, bob_ip, alice_ip), "bob -> alice");
    drop(m);
}
