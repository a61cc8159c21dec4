//! WireGuard interoperability with Debian's wireguard-go and wireguard-tools, in network
//! namespaces, both ways: a stock client through a swiftgate routing peer to a LAN, and a
//! swiftgate client to a stock WireGuard peer. Handshake, data both ways, a forced rekey,
//! endpoint roaming, pre-shared keys, spoofed inner sources, unknown peers and garbage UDP.
//!
//! Underlays: 203.0.113.0/24 (alice) and 198.51.100.0/24 (bob); overlay 100.64.0.0/16; LAN
//! 192.0.2.0/24. Needs root.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use swiftgate_testkit::{
    TcpServer, TcpSession, traffic,
    wg::{Keys, Lab, client_config, keys, sh, wait_for},
};

const ALICE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const BOB: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);
const GW: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const WIKI: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn gateway_config(gw: &Keys, peers: &str) -> String {
    format!(
        r#"
[interface]
overlay = "sg0"
addresses = ["100.64.0.1/16"]
lan = ["lan0"]
private_key = "{}"
listen_port = 51820
workers = 2
{peers}
[[networks]]
name = "Berlin Office"
[[networks.resources]]
name = "Internal Wiki"
address = "192.0.2.10/32"
groups = ["Internal Apps"]
[[policies]]
name = "dev-to-apps"
sources = ["Development"]
destinations = ["Internal Apps"]
protocol = "tcp"
ports = ["443"]
[[policies]]
name = "ping"
sources = ["Development"]
destinations = ["Internal Apps", "self"]
protocol = "icmp"
"#,
        gw.private
    )
}

/// The routing peer's configuration of alice (100.64.0.2, group Development), followed by
/// `extra` (more of her settings, more peers or policies).
fn alice_peer(public: &str, extra: &str) -> String {
    format!(
        r#"
[[peers]]
name = "alice"
ips = ["100.64.0.2"]
groups = ["Development"]
public_key = "{public}"
{extra}"#
    )
}

/// alice (stock wireguard-go, with a pre-shared key) -> swiftgate routing peer -> LAN.
struct Berlin {
    lab: Lab,
    client: usize,
    gw: usize,
    lan: usize,
    gw_keys: Keys,
}

fn berlin(extra_peers: &str) -> Berlin {
    let mut lab = Lab::new();
    let (client, gw, lan) = lab.routing_topology();
    lab.n(lan)
        .ip(&["addr", "add", "192.0.2.11/24", "dev", "eth0"])
        .unwrap()
        .check()
        .unwrap();
    let gw_keys = keys();
    let alice = keys();
    let psk = sh(None, &["wg", "genpsk"]);
    let pskfile = lab.dir.join("psk");
    std::fs::write(&pskfile, &psk).unwrap();
    let peers = alice_peer(
        &alice.public,
        &format!("preshared_key = \"{psk}\"\n{extra_peers}"),
    );
    lab.swiftgate(gw, &gateway_config(&gw_keys, &peers));
    let ifname = format!("{}w", lab.id);
    lab.stock_wg(
        client,
        &ifname,
        &alice,
        &["100.64.0.2/16"],
        &[
            "peer",
            &gw_keys.public,
            "preshared-key",
            pskfile.to_str().unwrap(),
            "endpoint",
            "203.0.113.1:51820",
            "allowed-ips",
            "100.64.0.0/16,192.0.2.0/24",
            "persistent-keepalive",
            "1",
        ],
    );
    lab.n(client)
        .ip(&["route", "add", "192.0.2.0/24", "dev", &ifname])
        .unwrap()
        .check()
        .unwrap();
    Berlin {
        lab,
        client,
        gw,
        lan,
        gw_keys,
    }
}

#[test]
fn stock_client_reaches_the_lan_through_swiftgate() {
    let b = berlin("");
    let lab = &b.lab;
    let wiki = TcpServer::start(lab.n(b.lan), sa(WIKI, 443)).unwrap();
    let _ssh = TcpServer::start(lab.n(b.lan), sa(WIKI, 22)).unwrap();
    let _other = TcpServer::start(lab.n(b.lan), sa(OTHER, 443)).unwrap();
    // Handshake and data both ways (ICMP to the routing peer itself and to the wiki).
    wait_for("the tunnel", Duration::from_secs(10), || {
        traffic::ping(lab.n(b.client), ALICE.into(), GW.into()).unwrap()
    });
    assert!(traffic::ping(lab.n(b.client), ALICE.into(), WIKI.into()).unwrap());
    // The Berlin Office policy over real WireGuard.
    let mut s =
        TcpSession::open(lab.n(b.client), ALICE.into(), sa(WIKI, 443)).expect("alice -> wiki:443");
    for _ in 0..20 {
        s.exchange().expect("data both ways");
    }
    assert_eq!(
        wiki.peer_ips(),
        vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
        "masqueraded"
    );
    // Bulk both ways, byte for byte: the LAN's TSO super-packets are split by the routing
    // peer, alice's segments coalesced into GSO writes.
    traffic::bulk_echo(
        lab.n(b.client),
        ALICE.into(),
        sa(WIKI, 443),
        16 << 20,
        Duration::from_secs(60),
    )
    .expect("16 MiB echoed through the routing peer");
    assert!(
        traffic::tcp_probe(
            lab.n(b.client),
            ALICE.into(),
            sa(WIKI, 22),
            traffic::BLOCKED_TIMEOUT
        )
        .is_err()
    );
    assert!(
        traffic::tcp_probe(
            lab.n(b.client),
            ALICE.into(),
            sa(OTHER, 443),
            traffic::BLOCKED_TIMEOUT
        )
        .is_err()
    );
    // The LAN cannot initiate into the overlay.
    let _on_alice = TcpServer::start(lab.n(b.client), sa(ALICE, 8080)).unwrap();
    lab.n(b.lan)
        .ip(&["route", "add", "100.64.0.0/16", "via", "192.0.2.1"])
        .unwrap()
        .check()
        .unwrap();
    assert!(
        traffic::tcp_probe(
            lab.n(b.lan),
            WIKI.into(),
            sa(ALICE, 8080),
            traffic::BLOCKED_TIMEOUT
        )
        .is_err()
    );
    let st = lab.control(0, "status");
    let peer = &st["peers"][0];
    assert_eq!(peer["name"], "alice");
    assert_eq!(
        peer["endpoint"].as_str().unwrap().split(':').next(),
        Some("203.0.113.2")
    );
    assert!(peer["rx_bytes"].as_u64().unwrap() > 0 && peer["tx_bytes"].as_u64().unwrap() > 0);
    assert!(
        !lab.log(0).contains(&b.gw_keys.private),
        "the private key must never be logged"
    );
}

#[test]
fn forced_rekey_and_roaming_keep_the_stream() {
    let b = berlin("");
    let lab = &b.lab;
    let _wiki = TcpServer::start(lab.n(b.lan), sa(WIKI, 443)).unwrap();
    wait_for("the tunnel", Duration::from_secs(10), || {
        traffic::ping(lab.n(b.client), ALICE.into(), GW.into()).unwrap()
    });
    let mut s = TcpSession::open(lab.n(b.client), ALICE.into(), sa(WIKI, 443)).expect("session");
    s.exchange().unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let age = |lab: &Lab| {
        lab.control(0, "status")["peers"][0]["last_handshake_s"]
            .as_f64()
            .unwrap_or(f64::MAX)
    };
    assert!(age(lab) >= 2.0);
    lab.control(0, "rekey");
    wait_for("a new handshake", Duration::from_secs(5), || age(lab) < 1.5);
    for _ in 0..5 {
        s.exchange().expect("stream across the rekey");
    }
    // The client's underlay address changes mid-stream.
    // (Delete first: removing a primary address also removes secondaries in its subnet.)
    lab.n(b.client)
        .ip(&["addr", "del", "203.0.113.2/24", "dev", "u0"])
        .unwrap()
        .check()
        .unwrap();
    lab.n(b.client)
        .ip(&["addr", "add", "203.0.113.3/24", "dev", "u0"])
        .unwrap()
        .check()
        .unwrap();
    // wireguard-go keeps a sticky source address per socket; it rebinds on a port change (as
    // it does on its own after a network change on platforms where it watches routes).
    let ifname = format!("{}w", lab.id);
    sh(
        Some(lab.n(b.client)),
        &["wg", "set", &ifname, "listen-port", "41000"],
    );
    let ep = |lab: &Lab| {
        lab.control(0, "status")["peers"][0]["endpoint"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_for("the endpoint to roam", Duration::from_secs(10), || {
        let _ = s.exchange();
        ep(lab).starts_with("203.0.113.3:")
    });
    for _ in 0..5 {
        s.exchange().expect("stream after roaming");
    }
}

#[test]
fn spoofed_sources_unknown_peers_and_garbage_are_dropped() {
    let mut lab_b = berlin("");
    // bob: a second stock client on its own underlay, known to swiftgate as 100.64.0.3 only.
    let bob_keys = keys();
    let carol_keys = keys();
    let bob_ns = lab_b.lab.ns("b");
    lab_b.lab.link(
        bob_ns,
        "v0",
        "198.51.100.2/24",
        lab_b.gw,
        "v1",
        "198.51.100.1/24",
    );
    let peer = format!(
        "[[peers]]\nname = \"bob\"\nips = [\"100.64.0.3\"]\ngroups = [\"Development\"]\npublic_key = \"{}\"\n",
        bob_keys.public
    );
    // alice has a stream going while bob is added live (SIGHUP): it must not notice.
    let _wiki = TcpServer::start(lab_b.lab.n(lab_b.lan), sa(WIKI, 443)).unwrap();
    wait_for("alice's tunnel", Duration::from_secs(10), || {
        traffic::ping(lab_b.lab.n(lab_b.client), ALICE.into(), WIKI.into()).unwrap()
    });
    let mut alice_stream = TcpSession::open(lab_b.lab.n(lab_b.client), ALICE.into(), sa(WIKI, 443))
        .expect("alice's stream");
    alice_stream.exchange().unwrap();
    let cfg = lab_b.lab.dir.join("agent0.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[[networks]]", &format!("{peer}\n[[networks]]"));
    std::fs::write(&cfg, text).unwrap();
    nix::sys::signal::kill(
        lab_b.lab.agents[0].0.pid(),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let gw_pub = lab_b.gw_keys.public.clone();
    let client = lab_b.client;
    let lab = &mut lab_b.lab;
    let bob_if = format!("{}b", lab.id);
    lab.stock_wg(
        bob_ns,
        &bob_if,
        &bob_keys,
        &["100.64.0.3/16", "100.64.0.2/32"],
        &[
            "peer",
            &gw_pub,
            "endpoint",
            "198.51.100.1:51820",
            "allowed-ips",
            "100.64.0.0/16,192.0.2.0/24",
        ],
    );
    lab.n(bob_ns)
        .ip(&["route", "add", "192.0.2.10/32", "dev", &bob_if])
        .unwrap()
        .check()
        .unwrap();
    alice_stream
        .exchange()
        .expect("alice's stream across bob's addition");
    wait_for("bob's tunnel", Duration::from_secs(10), || {
        traffic::ping(lab.n(bob_ns), BOB.into(), WIKI.into()).unwrap()
    });
    // bob claims alice's address: dropped, counted.
    let spoofed = |lab: &Lab| {
        lab.control(0, "status")["drops"]["spoofed"]
            .as_u64()
            .unwrap()
    };
    let before = spoofed(lab);
    assert!(
        !traffic::ping(lab.n(bob_ns), ALICE.into(), WIKI.into()).unwrap(),
        "spoofed source answered"
    );
    assert!(spoofed(lab) > before);
    // carol: a key swiftgate does not know. Her handshakes go unanswered.
    let carol_if = format!("{}k", lab.id);
    lab.stock_wg(
        bob_ns,
        &carol_if,
        &carol_keys,
        &["100.64.0.4/32"],
        &[
            "peer",
            &gw_pub,
            "endpoint",
            "198.51.100.1:51820",
            "allowed-ips",
            "192.0.2.11/32",
        ],
    );
    lab.n(bob_ns)
        .ip(&["route", "add", "192.0.2.11/32", "dev", &carol_if])
        .unwrap()
        .check()
        .unwrap();
    let unknown = |lab: &Lab| {
        lab.control(0, "status")["drops"]["unknown"]
            .as_u64()
            .unwrap()
    };
    let before = unknown(lab);
    assert!(
        !traffic::ping(
            lab.n(bob_ns),
            Ipv4Addr::new(100, 64, 0, 4).into(),
            OTHER.into()
        )
        .unwrap()
    );
    assert!(
        unknown(lab) > before,
        "unknown peer's handshake not counted"
    );
    assert!(
        lab.control(0, "status")["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "carol")
    );
    // A handshake flood from keys nobody knows: past the rate limit, cookie replies.
    let gw_public = swiftgate_testkit::wg::public_key_bytes(&gw_pub);
    let cookies = lab
        .n(bob_ns)
        .run(move || {
            use boringtun::noise::{Tunn, TunnResult};
            let s = UdpSocket::bind("198.51.100.2:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 256];
            for i in 0..300u32 {
                // Distinct throw-away keys (secrecy does not matter for a flood).
                let mut k = [0x42u8; 32];
                k[..4].copy_from_slice(&(i + 1).to_le_bytes());
                let me = boringtun::x25519::StaticSecret::from(k);
                let mut t = Tunn::new(
                    me,
                    boringtun::x25519::PublicKey::from(gw_public),
                    None,
                    None,
                    i,
                    None,
                );
                if let TunnResult::WriteToNetwork(p) =
                    t.format_handshake_initiation(&mut buf, false)
                {
                    let _ = s.send_to(p, "198.51.100.1:51820");
                }
            }
            let mut cookie_replies = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                match s.recv_from(&mut buf) {
                    Ok((n, _)) if n == 64 && buf[0] == 3 => cookie_replies += 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            cookie_replies
        })
        .unwrap();
    assert!(cookies > 0, "no cookie replies under a handshake flood");
    assert!(
        lab.control(0, "status")["drops"]["cookies"]
            .as_u64()
            .unwrap()
            > 0
    );
    // Garbage at the listen port: random lengths and types, bounded in count.
    lab.n(bob_ns)
        .run(|| {
            let s = UdpSocket::bind("198.51.100.2:0").unwrap();
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for i in 0..5000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let len = (x % 1400) as usize;
                let mut d: Vec<u8> = (0..len).map(|k| (x >> (k % 56)) as u8).collect();
                if len >= 4 {
                    d[..4].copy_from_slice(&(1 + i % 4).to_le_bytes());
                }
                let _ = s.send_to(&d, "198.51.100.1:51820");
            }
        })
        .unwrap();
    // Still alive and forwarding.
    assert!(
        lab.agents[0].0.is_running(),
        "the agent died: {}",
        lab.log(0)
    );
    wait_for("alice after the garbage", Duration::from_secs(5), || {
        traffic::ping(lab.n(client), ALICE.into(), WIKI.into()).unwrap()
    });
}

#[test]
fn swiftgate_client_talks_to_a_stock_peer() {
    let mut lab = Lab::new();
    let me = lab.ns("s");
    let stock = lab.ns("k");
    lab.link(me, "u0", "203.0.113.5/24", stock, "u1", "203.0.113.6/24");
    let my_keys = keys();
    let stock_keys = keys();
    let cfg = format!(
        r#"
[interface]
overlay = "sg0"
addresses = ["100.64.0.5/16"]
private_key = "{}"
listen_port = 0
[[peers]]
name = "stock"
ips = ["100.64.0.1"]
groups = ["servers"]
public_key = "{}"
endpoint = "203.0.113.6:51821"
keepalive = 1
[[policies]]
name = "servers-to-me"
sources = ["servers"]
destinations = ["self"]
protocol = "tcp"
ports = ["8080"]
"#,
        my_keys.private, stock_keys.public
    );
    lab.swiftgate(me, &cfg);
    let ifname = format!("{}w", lab.id);
    lab.stock_wg(
        stock,
        &ifname,
        &stock_keys,
        &["100.64.0.1/16"],
        &[
            "listen-port",
            "51821",
            "peer",
            &my_keys.public,
            "allowed-ips",
            "100.64.0.5/32",
        ],
    );
    let me_ip = Ipv4Addr::new(100, 64, 0, 5);
    // Flows the swiftgate side opens: its egress program tracks them, replies pass.
    wait_for("the tunnel", Duration::from_secs(10), || {
        traffic::ping(lab.n(me), me_ip.into(), GW.into()).unwrap()
    });
    let srv = TcpServer::start(lab.n(stock), sa(GW, 7000)).unwrap();
    let mut s =
        TcpSession::open(lab.n(me), me_ip.into(), sa(GW, 7000)).expect("swiftgate -> stock");
    for _ in 0..10 {
        s.exchange().unwrap();
    }
    assert_eq!(srv.peer_ips(), vec![IpAddr::V4(me_ip)]);
    // Flows the stock peer opens: only what the peer ACL allows.
    let _ok = TcpServer::start(lab.n(me), sa(me_ip, 8080)).unwrap();
    let _no = TcpServer::start(lab.n(me), sa(me_ip, 8081)).unwrap();
    traffic::tcp_probe(
        lab.n(stock),
        GW.into(),
        sa(me_ip, 8080),
        traffic::CONNECT_TIMEOUT,
    )
    .expect("stock -> me:8080");
    assert!(
        traffic::tcp_probe(
            lab.n(stock),
            GW.into(),
            sa(me_ip, 8081),
            traffic::BLOCKED_TIMEOUT
        )
        .is_err()
    );
}

/// A swiftgate client sends one UDP GSO burst (40 datagrams of 1,000 bytes in one `sendmsg`)
/// through a swiftgate routing peer: the client splits the TUN's USO super-packet and sends one
/// GSO batch, the routing peer decrypts the batch and writes it to its TUN as one USO
/// super-packet, which its eBPF program masquerades and forwards; the LAN receives every
/// datagram, intact and in order.
#[test]
fn udp_bursts_cross_the_routing_peer_as_uso_writes() {
    const SEGMENT: usize = 1000;
    const COUNT: usize = 40;
    let mut lab = Lab::new();
    let (client, gw, lan) = lab.routing_topology();
    let (gw_keys, me) = (keys(), keys());
    let peers = alice_peer(
        &me.public,
        r#"
[[policies]]
name = "udp"
sources = ["Development"]
destinations = ["Internal Apps"]
protocol = "udp"
ports = ["5353"]
"#,
    );
    lab.swiftgate(gw, &gateway_config(&gw_keys, &peers));
    lab.swiftgate(client, &client_config(&me, &gw_keys, 1420));
    wait_for("the tunnel", Duration::from_secs(10), || {
        traffic::ping(lab.n(client), ALICE.into(), WIKI.into()).unwrap()
    });
    let sink = lab
        .n(lan)
        .run(|| UdpSocket::bind(sa(WIKI, 5353)))
        .unwrap()
        .expect("LAN sink");
    sink.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let io = |lab: &Lab| {
        let st = lab.control(0, "status");
        (
            st["tun_writes"]["writes"].as_u64().unwrap(),
            st["tun_writes"]["packets"].as_u64().unwrap(),
        )
    };
    let (writes0, packets0) = io(&lab);
    let burst: Vec<u8> = (0..SEGMENT * COUNT)
        .map(|i| (i / SEGMENT + i) as u8)
        .collect();
    lab.n(client)
        .run(|| -> std::io::Result<()> {
            let s = UdpSocket::bind(sa(ALICE, 0))?;
            let gso = SEGMENT as libc::c_int;
            // SAFETY: setsockopt reads one c_int from the live `gso` for the length given; the
            // socket's descriptor is open.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_UDP,
                    libc::UDP_SEGMENT,
                    (&gso as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            s.send_to(&burst, sa(WIKI, 5353))?;
            Ok(())
        })
        .unwrap()
        .expect("one UDP GSO send of the burst");
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.len() < COUNT && std::time::Instant::now() < deadline {
        if let Ok((n, from)) = sink.recv_from(&mut buf) {
            assert_eq!(
                from.ip(),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                "masqueraded"
            );
            got.push(buf[..n].to_vec());
        }
    }
    let want: Vec<Vec<u8>> = burst.chunks(SEGMENT).map(<[u8]>::to_vec).collect();
    assert_eq!(got.len(), COUNT, "every datagram of the burst arrived");
    assert!(got == want, "the datagrams arrived intact and in order");
    let (writes1, packets1) = io(&lab);
    let (writes, packets) = (writes1 - writes0, packets1 - packets0);
    assert!(packets >= COUNT as u64, "{packets} packets written");
    assert!(
        packets - writes >= COUNT as u64 - 5,
        "{packets} packets in {writes} TUN writes: the burst was not coalesced"
    );
}
