//! The agent under a management server: `swiftgate up --management-url --setup-key` logs in,
//! follows the Sync stream and applies each network map to WireGuard and the eBPF maps; a
//! lower serial is ignored, a same-serial map (how NetBird's server pushes posture and status
//! revocations) is applied; an entry it cannot honour is refused alone and shown in
//! `swiftgate status`; process posture checks are answered; when the server goes away the
//! agent keeps forwarding with the last map, also across a restart (fail-static).
//!
//! The server here is a small NetBird-protocol server written for the test (it serves the maps
//! the test pushes), so every step is under the test's control. A stock wireguard-go client
//! (alice) reaches the LAN through the managed routing peer. Needs root.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    pin::Pin,
    process::{Child, Command, Stdio},
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use swiftgate_proto::{
    envelope::{decrypt_message, encrypt_message},
    keys::{KeyPair, PublicKey},
    management::{
        Checks, Empty, EncryptedMessage, FirewallRule, HostConfig, LoginRequest, LoginResponse,
        NetbirdConfig, NetworkMap, PeerConfig, PeerSystemMeta, PortInfo, RemotePeerConfig, Route,
        RouteFirewallRule, RuleAction, RuleDirection, RuleProtocol, ServerKeyResponse,
        SyncMetaRequest, SyncRequest, SyncResponse, host_config,
        management_service_server::{ManagementService, ManagementServiceServer},
        port_info::PortSelection,
    },
    signal_server::SignalRelay,
    signalexchange::signal_exchange_server::SignalExchangeServer,
};
use swiftgate_testkit::{
    TcpServer, TcpSession, traffic,
    wg::{Lab, keys, wait_for},
};
use tokio_stream::{Stream, StreamExt as _, wrappers::WatchStream};
use tonic::{Request, Response, Status};

const SETUP_KEY: &str = "A2C8E62B-38F5-4553-B31E-DD66C696CEBB";
const WIKI: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const ALICE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

/// Maps by peer public key (base64); the test replaces the whole set to push changes.
type Maps = std::collections::HashMap<String, SyncResponse>;

/// Every system description the agent sent (Login and SyncMeta), in order.
type Metas = std::sync::Arc<std::sync::Mutex<Vec<PeerSystemMeta>>>;

struct Server {
    keys: KeyPair,
    metas: Metas,
    maps: tokio::sync::watch::Receiver<Maps>,
    /// Announced to peers (`host:port`), when this server also runs Signal.
    signal: Option<String>,
}

impl Server {
    fn open<M: prost::Message + Default>(
        &self,
        r: Request<EncryptedMessage>,
    ) -> Result<(PublicKey, M), Status> {
        decrypt_message(r.get_ref(), self.keys.private())
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

#[tonic::async_trait]
impl ManagementService for Server {
    async fn get_server_key(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<ServerKeyResponse>, Status> {
        Ok(Response::new(ServerKeyResponse {
            key: self.keys.public().to_base64(),
            expires_at: None,
            version: 0,
        }))
    }
    async fn login(
        &self,
        r: Request<EncryptedMessage>,
    ) -> Result<Response<EncryptedMessage>, Status> {
        let (peer, login): (_, LoginRequest) = self.open(r)?;
        if let Some(m) = login.meta.clone() {
            self.metas.lock().unwrap().push(m);
        }
        if login.setup_key != SETUP_KEY.to_lowercase() && login.setup_key != SETUP_KEY {
            return Err(Status::permission_denied("setup key"));
        }
        let reply = LoginResponse {
            netbird_config: self.signal.as_ref().map(|uri| NetbirdConfig {
                signal: Some(HostConfig {
                    uri: uri.clone(),
                    protocol: host_config::Protocol::Http as i32,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(Response::new(encrypt_message(&reply, &self.keys, &peer)))
    }
    type SyncStream =
        Pin<Box<dyn Stream<Item = Result<EncryptedMessage, Status>> + Send + 'static>>;
    async fn sync(
        &self,
        r: Request<EncryptedMessage>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let (peer, _): (_, SyncRequest) = self.open(r)?;
        let keys =
            KeyPair::from_private_base64(&self.keys.private().to_base64()).expect("server key");
        let me = peer.to_base64();
        let s = WatchStream::new(self.maps.clone())
            .filter_map(move |all| all.get(&me).cloned())
            .map(move |m| Ok(encrypt_message(&m, &keys, &peer)));
        Ok(Response::new(Box::pin(s)))
    }
    async fn is_healthy(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty::default()))
    }
    async fn sync_meta(&self, r: Request<EncryptedMessage>) -> Result<Response<Empty>, Status> {
        let (_, req): (_, SyncMetaRequest) = self.open(r)?;
        if let Some(m) = req.meta {
            self.metas.lock().unwrap().push(m);
        }
        Ok(Response::new(Empty::default()))
    }
    async fn logout(&self, r: Request<EncryptedMessage>) -> Result<Response<Empty>, Status> {
        let _: (_, Empty) = self.open(r)?;
        Ok(Response::new(Empty::default()))
    }
}

/// The routing peer's map: alice may reach the wiki on `ports` (none: no route rule).
fn map(serial: u64, router: &str, alice: &str, ports: Option<u32>) -> SyncResponse {
    let mut m = NetworkMap {
        serial,
        peer_config: Some(PeerConfig {
            address: "100.64.0.1/16".into(),
            mtu: 1280,
            ..Default::default()
        }),
        remote_peers: vec![RemotePeerConfig {
            wg_pub_key: alice.into(),
            allowed_ips: vec!["100.64.0.2/32".into()],
            fqdn: "alice".into(),
            ..Default::default()
        }],
        routes: vec![Route {
            id: "wiki".into(),
            network: "192.0.2.10/32".into(),
            peer: router.into(),
            metric: 9999,
            masquerade: true,
            net_id: "Berlin Office".into(),
            ..Default::default()
        }],
        // Ping to the routing peer itself, so the test can see the tunnel come up.
        firewall_rules: vec![FirewallRule {
            peer_ip: "100.64.0.2".into(),
            direction: RuleDirection::In as i32,
            action: RuleAction::Accept as i32,
            protocol: RuleProtocol::Icmp as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    if let Some(p) = ports {
        m.routes_firewall_rules.push(RouteFirewallRule {
            source_ranges: vec!["100.64.0.2/32".into()],
            action: RuleAction::Accept as i32,
            destination: "192.0.2.10/32".into(),
            protocol: RuleProtocol::Tcp as i32,
            port_info: Some(PortInfo {
                port_selection: Some(PortSelection::Port(p)),
            }),
            ..Default::default()
        });
    }
    SyncResponse {
        network_map: Some(m),
        ..Default::default()
    }
}

/// Runs the server in namespace `ns` on `bind` (port 0: any); with `signal`, it announces
/// itself as the Signal server too (it always relays Signal messages).
fn start_server(
    lab: &Lab,
    ns: usize,
    bind: &str,
    signal: bool,
) -> (
    String,
    tokio::sync::watch::Sender<Maps>,
    std_mpsc::Sender<()>,
    Metas,
) {
    let (maps_tx, maps_rx) = tokio::sync::watch::channel(Maps::new());
    let metas = Metas::default();
    let server_metas = metas.clone();
    let (url_tx, url_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
    let path = lab.n(ns).path();
    let bind = bind.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(path).expect("netns");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(bind.as_str()).await.unwrap();
            let addr = listener.local_addr().unwrap();
            url_tx.send(format!("http://{addr}")).unwrap();
            let svc = Server {
                keys: KeyPair::generate(),
                metas: server_metas,
                maps: maps_rx,
                signal: signal.then(|| addr.to_string()),
            };
            let stop = async move {
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            };
            tonic::transport::Server::builder()
                .add_service(ManagementServiceServer::new(svc))
                .add_service(SignalExchangeServer::new(SignalRelay::new()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop,
                )
                .await
                .unwrap();
        });
    });
    let url = url_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server URL");
    (url, maps_tx, stop_tx, metas)
}

/// `swiftgate status` as JSON, straight from the agent's control socket.
fn status(socket: &std::path::Path) -> serde_json::Value {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("control socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    writeln!(s, "{{\"cmd\": \"status\"}}").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).expect("status JSON")
}

fn spawn_agent(
    lab: &Lab,
    ns: usize,
    url: &str,
    state: &std::path::Path,
    pin: &std::path::Path,
    log: &std::path::Path,
    extra: &[&str],
) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(swiftgate_testkit::swiftgate_bin());
    cmd.env("NO_COLOR", "1")
        .args([
            "up",
            "--management-url",
            url,
            "--setup-key",
            SETUP_KEY,
            "--interface",
            "sg0",
        ])
        .args(extra)
        .arg("--state-dir")
        .arg(state)
        .arg("--pin-path")
        .arg(pin)
        .arg("--control-socket")
        .arg(state.join("ctl.sock"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let child = lab.n(ns).spawn(&mut cmd).expect("agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("swiftgate up: ready")
    {
        assert!(
            Instant::now() < deadline,
            "agent not ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// Kills the agents and removes their pinned state and TUNs (namespaces go with the lab).
struct Cleanup(Vec<Child>, Vec<(String, PathBuf)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (ns, pin) in &self.1 {
            let path = PathBuf::from("/run/netns").join(ns);
            let _ = swiftgate_testkit::netns::run_in(&path, || {
                Command::new(swiftgate_testkit::swiftgate_bin())
                    .args(["down", "--interface", "sg0", "--pin-path"])
                    .arg(pin)
                    .output()
            });
        }
    }
}

/// The namespaces of these tests: a client (`u0` 203.0.113.2) and a routing peer (`u1`
/// 203.0.113.1) on the underlay, and the routing peer's LAN (`lan0` 192.0.2.1) with the wiki's
/// host (192.0.2.10). Returns the lab and the client's, routing peer's and LAN's indices.
fn topology() -> (Lab, usize, usize, usize) {
    let mut lab = Lab::new();
    let client = lab.ns("c");
    let gw = lab.ns("g");
    let lan = lab.ns("l");
    lab.link(client, "u0", "203.0.113.2/24", gw, "u1", "203.0.113.1/24");
    lab.link(lan, "eth0", "192.0.2.10/24", gw, "lan0", "192.0.2.1/24");
    (lab, client, gw, lan)
}

/// Two managed agents under one server: the routing peer (LAN `lan0`) and alice (WireGuard port
/// 51821), each with its key placed in its own state directory and pins of its own.
struct Pair {
    router: KeyPair,
    alice: KeyPair,
    router_dir: PathBuf,
    alice_dir: PathBuf,
    pin_r: PathBuf,
    pin_a: PathBuf,
}

impl Pair {
    fn new(lab: &Lab) -> Pair {
        let state = |name: &str| {
            let dir = lab.dir.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let k = KeyPair::generate();
            std::fs::write(dir.join("key"), k.private().to_base64().as_bytes()).unwrap();
            (dir, k)
        };
        let ((router_dir, router), (alice_dir, alice)) = (state("router"), state("alice"));
        Pair {
            router,
            alice,
            router_dir,
            alice_dir,
            pin_r: swiftgate_testkit::pin_path_for(&format!("{}r", lab.id)),
            pin_a: swiftgate_testkit::pin_path_for(&format!("{}a", lab.id)),
        }
    }

    /// Removes both agents' pins and TUNs when dropped (the agents it is given are killed).
    fn cleanup(&self, lab: &Lab, gw: usize, client: usize) -> Cleanup {
        Cleanup(
            vec![],
            vec![
                (lab.n(gw).name().to_string(), self.pin_r.clone()),
                (lab.n(client).name().to_string(), self.pin_a.clone()),
            ],
        )
    }

    fn spawn_router(&self, lab: &Lab, gw: usize, url: &str) -> Child {
        let log = lab.dir.join("router.log");
        spawn_agent(
            lab,
            gw,
            url,
            &self.router_dir,
            &self.pin_r,
            &log,
            &["--lan", "lan0"],
        )
    }

    fn spawn_alice(&self, lab: &Lab, client: usize, url: &str, log: &str) -> Child {
        let log = lab.dir.join(log);
        let port = ["--listen-port", "51821"];
        spawn_agent(lab, client, url, &self.alice_dir, &self.pin_a, &log, &port)
    }
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn managed_routing_peer_follows_maps_and_fails_static() {
    let (mut lab, client, gw, lan) = topology();

    // The routing peer's key, placed where the agent keeps it.
    let state = lab.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let router = KeyPair::generate();
    std::fs::write(state.join("key"), router.private().to_base64().as_bytes()).unwrap();
    let pin = swiftgate_testkit::pin_path_for(&format!("{}m", lab.id));
    let alice = keys();
    let (url, maps, stop, metas) = start_server(&lab, gw, "127.0.0.1:0", false);
    let rp = router.public().to_base64();
    maps.send(Maps::from([(
        rp.clone(),
        map(1, &rp, &alice.public, Some(443)),
    )]))
    .unwrap();
    let agent = spawn_agent(
        &lab,
        gw,
        &url,
        &state,
        &pin,
        &lab.dir.join("agent1.log"),
        &["--lan", "lan0"],
    );
    let mut guard = Cleanup(
        vec![agent],
        vec![(lab.n(gw).name().to_string(), pin.clone())],
    );

    let ifname = format!("{}w", lab.id);
    lab.stock_wg(
        client,
        &ifname,
        &alice,
        &["100.64.0.2/16"],
        &[
            "peer",
            &rp,
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
    let _wiki = TcpServer::start(lab.n(lan), sa(WIKI, 443)).unwrap();
    let _ssh = TcpServer::start(lab.n(lan), sa(WIKI, 22)).unwrap();
    let probe = |port: u16, t: Duration| {
        traffic::tcp_probe(lab.n(client), ALICE.into(), sa(WIKI, port), t).is_ok()
    };

    // Map 1: 443 allowed, nothing else.
    wait_for(
        "alice -> wiki:443 under map 1",
        Duration::from_secs(15),
        || probe(443, Duration::from_secs(1)),
    );
    assert!(!probe(22, traffic::BLOCKED_TIMEOUT));
    let mut session =
        TcpSession::open(lab.n(client), ALICE.into(), sa(WIKI, 443)).expect("session");
    session.exchange().unwrap();

    // Map 2 takes the route rule away: new flows fail, the established one goes on.
    maps.send(Maps::from([(rp.clone(), map(2, &rp, &alice.public, None))]))
        .unwrap();
    wait_for("map 2 to deny new flows", Duration::from_secs(5), || {
        !probe(443, Duration::from_millis(500))
    });
    session
        .exchange()
        .expect("established flow outlives the policy change");

    // An older serial is ignored.
    maps.send(Maps::from([(
        rp.clone(),
        map(1, &rp, &alice.public, Some(443)),
    )]))
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !probe(443, traffic::BLOCKED_TIMEOUT),
        "a lower serial was applied"
    );

    // Map 3 allows 22 instead.
    maps.send(Maps::from([(
        rp.clone(),
        map(3, &rp, &alice.public, Some(22)),
    )]))
    .unwrap();
    wait_for("map 3", Duration::from_secs(5), || {
        probe(22, Duration::from_secs(1))
    });

    // The same serial without the rule (NetBird's server revokes a failed posture this way).
    maps.send(Maps::from([(rp.clone(), map(3, &rp, &alice.public, None))]))
        .unwrap();
    wait_for(
        "a same-serial map to revoke alice's access",
        Duration::from_secs(5),
        || !probe(22, Duration::from_millis(500)),
    );

    // Map 4: 22 again, a route the agent cannot honour (inside the overlay), and a process
    // check on the agent's own binary and on a path that does not exist.
    let agent_bin = swiftgate_testkit::swiftgate_bin().canonicalize().unwrap();
    let agent_bin = agent_bin.to_str().unwrap().to_string();
    let mut m4 = map(4, &rp, &alice.public, Some(22));
    let nm = m4.network_map.as_mut().unwrap();
    let mut inside = nm.routes[0].clone();
    inside.id = "inside".into();
    inside.network = "100.64.9.0/24".into();
    nm.routes.push(inside);
    m4.checks = vec![Checks {
        files: vec![agent_bin.clone(), "/nonexistent/falcond".into()],
    }];
    maps.send(Maps::from([(rp.clone(), m4)])).unwrap();
    wait_for(
        "map 4 applied beside a refused route",
        Duration::from_secs(5),
        || probe(22, Duration::from_secs(1)),
    );
    let st = status(&state.join("ctl.sock"));
    let refused = st["map"]["refused"].as_array().expect("refusals in status");
    assert_eq!(refused.len(), 1, "{st}");
    assert_eq!(refused[0]["object"], "route `inside`", "{st}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("inside the overlay"),
        "{st}"
    );
    wait_for(
        "the process check answered and the refusal reported",
        Duration::from_secs(5),
        || {
            let m = metas.lock().unwrap();
            m.iter().any(|m| !m.files.is_empty())
                && m.iter().any(|m| !m.swiftgate_map_refusals.is_empty())
        },
    );
    let sent = metas.lock().unwrap().clone();
    let login = &sent[0];
    assert_eq!(
        login.netbird_version,
        swiftgate::sysinfo::NETBIRD_PROTOCOL_LEVEL
    );
    assert!(login.ui_version.starts_with("swiftgate/"), "{login:?}");
    assert!(
        login
            .network_addresses
            .iter()
            .any(|a| a.net_ip == "203.0.113.1/24"),
        "the underlay address is reported: {:?}",
        login.network_addresses
    );
    let files = &sent.iter().find(|m| !m.files.is_empty()).unwrap().files;
    let reported = sent
        .iter()
        .rev()
        .find(|m| !m.swiftgate_map_refusals.is_empty())
        .expect("refusals reported to the server");
    assert_eq!(reported.swiftgate_map_refusals.len(), 1);
    let r = &reported.swiftgate_map_refusals[0];
    assert_eq!(
        (r.serial, r.object.as_str(), r.effect.as_str()),
        (4, "route `inside`", "skipped")
    );
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].path, agent_bin);
    assert!(files[0].exist && files[0].process_is_running, "{files:?}");
    assert!(!files[1].exist && !files[1].process_is_running, "{files:?}");
    let log = std::fs::read_to_string(lab.dir.join("agent1.log")).unwrap();
    assert!(
        log.contains("network map entry not applied as sent"),
        "the refusal is logged: {log}"
    );

    // The server goes away: forwarding goes on with the last map, also after a restart.
    stop.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        probe(22, traffic::CONNECT_TIMEOUT),
        "fail-static while the server is gone"
    );
    let mut old = guard.0.pop().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = old.wait();
    let agent = spawn_agent(
        &lab,
        gw,
        &url,
        &state,
        &pin,
        &lab.dir.join("agent2.log"),
        &["--lan", "lan0"],
    );
    guard.0.push(agent);
    wait_for(
        "forwarding after a restart without the server",
        Duration::from_secs(15),
        || probe(22, Duration::from_secs(1)),
    );
    assert!(!probe(443, traffic::BLOCKED_TIMEOUT));
    let log = std::fs::read_to_string(lab.dir.join("agent2.log")).unwrap();
    assert!(log.contains("starting from the last network map"), "{log}");
    assert!(
        !log.contains(&router.private().to_base64().to_string()),
        "the private key leaked into the log"
    );
}

#[test]
fn managed_client_finds_its_routing_peer_through_signal() {
    let (lab, client, gw, lan) = topology();
    let pair = Pair::new(&lab);
    let (router, alice) = (&pair.router, &pair.alice);
    let (rp, ap) = (router.public().to_base64(), alice.public().to_base64());
    // Management and Signal on the routing peer's underlay address, reachable from both.
    let (url, maps, _stop, _) = start_server(&lab, gw, "203.0.113.1:0", true);
    let client_map = SyncResponse {
        network_map: Some(NetworkMap {
            serial: 1,
            peer_config: Some(PeerConfig {
                address: "100.64.0.2/16".into(),
                mtu: 1280,
                ..Default::default()
            }),
            remote_peers: vec![RemotePeerConfig {
                wg_pub_key: rp.clone(),
                allowed_ips: vec!["100.64.0.1/32".into()],
                fqdn: "berlin-router".into(),
                ..Default::default()
            }],
            routes: vec![Route {
                id: "wiki".into(),
                network: "192.0.2.10/32".into(),
                peer: rp.clone(),
                metric: 9999,
                masquerade: true,
                net_id: "Berlin Office".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    maps.send(Maps::from([
        (rp.clone(), map(1, &rp, &ap, Some(443))),
        (ap.clone(), client_map),
    ]))
    .unwrap();
    let mut guard = pair.cleanup(&lab, gw, client);
    guard.0.push(pair.spawn_router(&lab, gw, &url));
    guard
        .0
        .push(pair.spawn_alice(&lab, client, &url, "alice.log"));
    let wiki = TcpServer::start(lab.n(lan), sa(WIKI, 443)).unwrap();
    // Nobody configured an endpoint: alice learns the router's through Signal.
    let deadline = Instant::now() + Duration::from_secs(20);
    while traffic::tcp_probe(
        lab.n(client),
        ALICE.into(),
        sa(WIKI, 443),
        Duration::from_secs(1),
    )
    .is_err()
    {
        if Instant::now() > deadline {
            panic!(
                "alice never reached wiki:443\n--- alice ---\n{}\n--- router ---\n{}",
                std::fs::read_to_string(lab.dir.join("alice.log")).unwrap_or_default(),
                std::fs::read_to_string(lab.dir.join("router.log")).unwrap_or_default()
            );
        }
    }
    assert_eq!(
        wiki.peer_ips(),
        vec![std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]
    );
    assert!(
        traffic::tcp_probe(
            lab.n(client),
            ALICE.into(),
            sa(WIKI, 22),
            traffic::BLOCKED_TIMEOUT
        )
        .is_err()
    );
    let log = std::fs::read_to_string(lab.dir.join("alice.log")).unwrap();
    assert!(log.contains("signal connected"), "{log}");
}

/// `ip` output in a namespace, trimmed (fails the test on an error).
fn ip_out(lab: &Lab, ns: usize, args: &[&str]) -> String {
    let o = lab.n(ns).ip(args).unwrap();
    assert!(o.status.success(), "ip {args:?}: {}", o.stderr);
    o.stdout.trim().to_string()
}

/// The host's routing as the agent must leave it: every rule and the main tables, less the
/// routes the kernel itself keeps for the overlay interface's own addresses while it exists.
fn host_routing(lab: &Lab, ns: usize) -> String {
    ["-4", "-6"]
        .iter()
        .flat_map(|f| {
            [
                ip_out(lab, ns, &[f, "rule", "show"]),
                ip_out(lab, ns, &[f, "route", "show", "table", "main"]),
            ]
        })
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !(l.contains("dev sg0") && l.contains("proto kernel")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An exit node (issue 12, defect 6): a managed client routes 0.0.0.0/0 through the routing
/// peer via the agent's own table and policy rules; its WireGuard packets and its management
/// and Signal connections stay on the underlay; the host's default route is never touched, and
/// the host's routing is exactly as before after the route is withdrawn, after a crash and a
/// restart, and after the agent stops.
#[test]
fn managed_exit_node_routes_through_a_table_of_its_own() {
    let (lab, client, gw, lan) = topology();
    // The client host's own default route, which must survive the exit node.
    lab.n(client)
        .ip(&["route", "add", "default", "via", "203.0.113.1"])
        .unwrap()
        .check()
        .unwrap();
    let before = host_routing(&lab, client);

    let pair = Pair::new(&lab);
    let (router, alice) = (&pair.router, &pair.alice);
    let (rp, ap) = (router.public().to_base64(), alice.public().to_base64());
    let (url, maps, _stop, _) = start_server(&lab, gw, "203.0.113.1:0", true);

    // The routing peer serves 0.0.0.0/0 and lets alice open TCP 443 anywhere through it.
    let mut router_map = map(1, &rp, &ap, None);
    let nm = router_map.network_map.as_mut().unwrap();
    let mut exit = nm.routes[0].clone();
    exit.id = "exit".into();
    exit.network = "0.0.0.0/0".into();
    exit.net_id = "Exit".into();
    nm.routes.push(exit.clone());
    nm.routes_firewall_rules.push(RouteFirewallRule {
        source_ranges: vec!["100.64.0.2/32".into()],
        action: RuleAction::Accept as i32,
        destination: "0.0.0.0/0".into(),
        protocol: RuleProtocol::Tcp as i32,
        port_info: Some(PortInfo {
            port_selection: Some(PortSelection::Port(443)),
        }),
        ..Default::default()
    });
    let client_map = |serial: u64, with_exit: bool| SyncResponse {
        network_map: Some(NetworkMap {
            serial,
            peer_config: Some(PeerConfig {
                address: "100.64.0.2/16".into(),
                mtu: 1280,
                ..Default::default()
            }),
            remote_peers: vec![RemotePeerConfig {
                wg_pub_key: rp.clone(),
                allowed_ips: vec!["100.64.0.1/32".into()],
                fqdn: "exit-node".into(),
                ..Default::default()
            }],
            routes: if with_exit {
                vec![exit.clone()]
            } else {
                vec![]
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let push = |serial: u64, with_exit: bool| {
        maps.send(Maps::from([
            (rp.clone(), router_map.clone()),
            (ap.clone(), client_map(serial, with_exit)),
        ]))
        .unwrap()
    };
    push(1, true);
    let mut guard = pair.cleanup(&lab, gw, client);
    guard.0.push(pair.spawn_router(&lab, gw, &url));
    guard
        .0
        .push(pair.spawn_alice(&lab, client, &url, "alice.log"));
    let web = TcpServer::start(lab.n(lan), sa(WIKI, 443)).unwrap();
    let reach = |t: Duration| traffic::tcp_probe(lab.n(client), ALICE.into(), sa(WIKI, 443), t);
    let deadline = Instant::now() + Duration::from_secs(20);
    while reach(Duration::from_secs(1)).is_err() {
        assert!(
            Instant::now() < deadline,
            "alice never reached the internet through the exit node\n--- alice ---\n{}\n--- router ---\n{}",
            std::fs::read_to_string(lab.dir.join("alice.log")).unwrap_or_default(),
            std::fs::read_to_string(lab.dir.join("router.log")).unwrap_or_default()
        );
    }
    assert_eq!(
        web.peer_ips(),
        vec![std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
        "masqueraded by the exit node"
    );
    let get = |dst: &str| ip_out(&lab, client, &["route", "get", dst]);
    assert!(
        get("198.51.100.20").contains("dev sg0"),
        "{}",
        get("198.51.100.20")
    );
    // The management and Signal server (and the peer's endpoint) stay on the underlay.
    assert!(
        get("203.0.113.1").contains("dev u0"),
        "{}",
        get("203.0.113.1")
    );
    assert!(
        ip_out(&lab, client, &["route", "show", "table", "main"])
            .contains("default via 203.0.113.1"),
        "the host's default route is untouched"
    );

    // Withdrawn: the host's routing is exactly as before.
    push(2, false);
    wait_for("the exit route withdrawn", Duration::from_secs(10), || {
        host_routing(&lab, client) == before
    });
    assert!(
        reach(traffic::BLOCKED_TIMEOUT).is_err(),
        "no path without the exit node"
    );

    // Back, then the agent crashes: its successor takes the table over (one set of rules),
    // and a clean stop leaves the host as it was.
    push(3, true);
    wait_for("the exit route back", Duration::from_secs(10), || {
        reach(Duration::from_secs(1)).is_ok()
    });
    let mut crashed = guard.0.pop().unwrap();
    crashed.kill().unwrap();
    let _ = crashed.wait();
    assert_ne!(
        host_routing(&lab, client),
        before,
        "a crash leaves rules behind"
    );
    guard
        .0
        .push(pair.spawn_alice(&lab, client, &url, "alice2.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while reach(Duration::from_secs(1)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the restarted agent never routed again\n--- alice ---\n{}\n--- router ---\n{}\n--- rules ---\n{}\n{}",
            std::fs::read_to_string(lab.dir.join("alice2.log")).unwrap_or_default(),
            std::fs::read_to_string(lab.dir.join("router.log")).unwrap_or_default(),
            ip_out(&lab, client, &["rule", "show"]),
            ip_out(&lab, client, &["route", "show", "table", "all"]),
        );
    }
    let rules = ip_out(&lab, client, &["-4", "rule", "show"]);
    assert_eq!(
        rules
            .lines()
            .filter(|l| l.starts_with(&format!("{}:", swiftgate::routing::RULE_PREF_OURS)))
            .count(),
        1,
        "{rules}"
    );
    let mut agent = guard.0.pop().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = agent.wait();
    assert_eq!(host_routing(&lab, client), before);
}
