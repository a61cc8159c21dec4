//! End-to-end tests: the real `swiftgate` agent routing real packets between network
//! namespaces (see `swiftgate_testkit::topology` for the topology).
//!
//! Run as root, after building the agent binary (`./x test` does both):
//!
//! ```text
//! cargo build -p swiftgate --bin swiftgate
//! cargo test -p swiftgate-tests --test e2e -- --nocapture          # all
//! cargo test -p swiftgate-tests --test e2e berlin -- --nocapture   # one
//! SG_E2E_TRACE=1 cargo test …                                # log every overlay packet
//! ```
//!
//! The tests do not skip without root: they fail with a message saying so.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use swiftgate_testkit::traffic::{self, BLOCKED_TIMEOUT, CONNECT_TIMEOUT};
use swiftgate_testkit::{
    ConfigFile, LanSpec, NetNs, Network, Peer, Policy, TcpServer, TcpSession, Topology,
    TopologySpec, UdpServer, require_root,
};

// Berlin Office walkthrough.
const ALICE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const UNKNOWN_PEER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 9);
const GW_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const WIKI: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NOT_A_RESOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const PRINTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);

// Three-tier example.
const DEVOPS: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const SUPPORT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);
const MONITOR: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 4);
const WEB: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const APP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 21);
const DB: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 22);
const DNS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Which namespace a probe starts in.
#[derive(Clone, Copy, Debug)]
enum Side {
    Client,
    Lan(usize),
}

fn ns(t: &Topology, from: Side) -> &NetNs {
    match from {
        Side::Client => &t.client,
        Side::Lan(i) => t.lan(i),
    }
}

#[track_caller]
fn assert_tcp_allowed(t: &mut Topology, from: Side, src: Ipv4Addr, dst: SocketAddr, what: &str) {
    if let Err(e) = traffic::tcp_probe(ns(t, from), src.into(), dst, CONNECT_TIMEOUT) {
        panic!(
            "{what}: expected TCP {src} -> {dst} to be ALLOWED, but: {e}\n{}",
            t.diagnostics()
        );
    }
}

#[track_caller]
fn assert_tcp_blocked(t: &mut Topology, from: Side, src: Ipv4Addr, dst: SocketAddr, what: &str) {
    if traffic::tcp_probe(ns(t, from), src.into(), dst, BLOCKED_TIMEOUT).is_ok() {
        panic!(
            "{what}: expected TCP {src} -> {dst} to be BLOCKED, but it connected\n{}",
            t.diagnostics()
        );
    }
}

#[track_caller]
fn assert_udp_allowed(t: &mut Topology, from: Side, src: Ipv4Addr, dst: SocketAddr, what: &str) {
    if let Err(e) = traffic::udp_probe(ns(t, from), src.into(), dst, Duration::from_secs(1), 3) {
        panic!(
            "{what}: expected UDP {src} -> {dst} to be ALLOWED, but: {e}\n{}",
            t.diagnostics()
        );
    }
}

#[track_caller]
fn open_session(t: &mut Topology, src: Ipv4Addr, dst: SocketAddr) -> TcpSession {
    match TcpSession::open(&t.client, src.into(), dst) {
        Ok(s) => s,
        Err(e) => panic!("opening a session {src} -> {dst}: {e}\n{}", t.diagnostics()),
    }
}

#[track_caller]
fn exchange(t: &mut Topology, s: &mut TcpSession, what: &str) {
    if let Err(e) = s.exchange() {
        panic!("{what}: {e}\n{}", t.diagnostics());
    }
}

/// Builds a topology or fails the test with the reason.
fn build(client_addrs: &[Ipv4Addr], lans: Vec<LanSpec>) -> Topology {
    require_root();
    Topology::build(&TopologySpec {
        client_addrs: client_addrs.to_vec(),
        lans,
    })
    .expect("building the test topology")
}

fn start_agent(t: &mut Topology, cfg: &ConfigFile) {
    t.write_config(cfg).expect("writing the agent config");
    if let Err(e) = t.start_agent() {
        panic!("starting the agent: {e}");
    }
}

/// The product docs' walkthrough: alice (Development) may reach the Internal Wiki on tcp/443.
fn berlin_config(t: &Topology, masquerade: bool) -> ConfigFile {
    t.base_config()
        .peer(Peer::new("alice-laptop", &["100.64.0.2"], &["Development"]))
        .network(Network::new("Berlin Office", masquerade).resource(
            "Internal Wiki",
            "192.0.2.10/32",
            &["Internal Apps"],
        ))
        .policy(Policy::accept(
            "dev-to-apps",
            &["Development"],
            &["Internal Apps"],
            "tcp",
            &["443"],
        ))
}

/// Waits a little and fails if the agent died (e.g. after a reload).
#[track_caller]
fn assert_agent_running(t: &mut Topology, what: &str) {
    let running = t.agent().map(|a| a.is_running()).unwrap_or(false);
    if !running {
        panic!("{what}: the agent is not running\n{}", t.diagnostics());
    }
}

#[test]
fn berlin_office_walkthrough() {
    let mut t = build(
        &[ALICE, UNKNOWN_PEER],
        vec![LanSpec::test_net_1(&[10, 11]).with_overlay_route()],
    );
    let wiki_https = TcpServer::start(t.lan(0), sa(WIKI, 443)).expect("wiki:443 server");
    let wiki_ssh = TcpServer::start(t.lan(0), sa(WIKI, 22)).expect("wiki:22 server");
    let other_https =
        TcpServer::start(t.lan(0), sa(NOT_A_RESOURCE, 443)).expect("192.0.2.11:443 server");
    let on_client = TcpServer::start(&t.client, sa(ALICE, 8080)).expect("client listener");
    let cfg = berlin_config(&t, true);
    start_agent(&mut t, &cfg);

    // Allowed, and masqueraded: the wiki sees the routing peer's LAN address.
    let mut session = open_session(&mut t, ALICE, sa(WIKI, 443));
    exchange(&mut t, &mut session, "second exchange on alice -> wiki:443");
    let seen = wiki_https.peer_ips();
    assert_eq!(
        seen,
        vec![IpAddr::V4(GW_LAN)],
        "the wiki should see exactly one connection, from the masquerade address {GW_LAN}\n{}",
        t.diagnostics()
    );

    // The accepted flow is tracked with its translation.
    let local = session.local_addr().expect("session local address");
    let ct = t.conntrack().expect("swiftgate conntrack --json");
    let entry = ct
        .iter()
        .find(|e| {
            e.proto == 6
                && e.src == ALICE.to_string()
                && e.dst == WIKI.to_string()
                && e.dport == 443
                && e.sport == local.port()
        })
        .unwrap_or_else(|| panic!("no conntrack entry for {local} -> {WIKI}:443 in {ct:#?}"));
    assert_eq!(
        entry.origin, "overlay",
        "origin of the alice -> wiki flow: {entry:?}"
    );
    let nat = entry
        .nat
        .as_deref()
        .unwrap_or_else(|| panic!("masqueraded flow without a nat field: {entry:?}"));
    assert!(
        nat.starts_with(&format!("{GW_LAN}:")),
        "nat should be {GW_LAN}:<port>, got {nat:?} in {entry:?}"
    );
    assert!(
        entry.packets_orig > 0 && entry.packets_reply > 0,
        "packet counts of an established flow: {entry:?}"
    );

    // Everything else is denied.
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        ALICE,
        sa(WIKI, 22),
        "alice -> wiki:22 (port not in policy)",
    );
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        ALICE,
        sa(NOT_A_RESOURCE, 443),
        "alice -> 192.0.2.11:443 (not a resource)",
    );
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        UNKNOWN_PEER,
        sa(WIKI, 443),
        "unknown overlay source -> wiki:443",
    );
    assert!(
        !traffic::ping(&t.client, ALICE.into(), WIKI.into()).expect("running ping"),
        "alice -> wiki ICMP echo should be blocked (policy is tcp/443 only)\n{}",
        t.diagnostics()
    );
    assert_tcp_blocked(
        &mut t,
        Side::Lan(0),
        WIKI,
        sa(ALICE, 8080),
        "LAN host -> alice (no Site-to-VPN policy)",
    );
    assert!(
        wiki_ssh.peers().is_empty(),
        "wiki:22 saw connections: {:?}",
        wiki_ssh.peers()
    );
    assert!(
        other_https.peers().is_empty(),
        "192.0.2.11:443 saw connections: {:?}",
        other_https.peers()
    );
    assert!(
        on_client.peers().is_empty(),
        "the client listener saw connections: {:?}",
        on_client.peers()
    );
    assert_eq!(
        wiki_https.peers().len(),
        1,
        "the unknown source reached the wiki: {:?}",
        wiki_https.peers()
    );

    // The allowed flow is unaffected by all that.
    exchange(
        &mut t,
        &mut session,
        "alice -> wiki:443 after the denied attempts",
    );

    let c = t.counters().expect("swiftgate counters --json");
    let get = |k: &str| {
        c.get(k)
            .copied()
            .unwrap_or_else(|| panic!("counter {k:?} missing from {c:?}"))
    };
    assert!(get("accept_new") >= 1, "accept_new: {c:?}");
    assert!(
        get("drop_unknown_source") >= 1,
        "drop_unknown_source (100.64.0.9 is no peer): {c:?}"
    );
    let drops: u64 = c
        .iter()
        .filter(|(k, _)| k.starts_with("drop_"))
        .map(|(_, v)| v)
        .sum();
    assert!(
        drops >= 5,
        "at least 5 dropped flows (ssh, .11, unknown source, ICMP, LAN-initiated): {c:?}"
    );
    assert!(
        get("drop_no_policy") + get("drop_policy_deny") + get("drop_no_route") >= 1,
        "policy drops: {c:?}"
    );
}

#[test]
fn masquerade_off_keeps_overlay_source() {
    let mut t = build(
        &[ALICE],
        vec![LanSpec::test_net_1(&[10]).with_overlay_route()],
    );
    let wiki_https = TcpServer::start(t.lan(0), sa(WIKI, 443)).expect("wiki:443 server");
    let _wiki_ssh = TcpServer::start(t.lan(0), sa(WIKI, 22)).expect("wiki:22 server");
    let cfg = berlin_config(&t, false);
    start_agent(&mut t, &cfg);

    let mut session = open_session(&mut t, ALICE, sa(WIKI, 443));
    exchange(
        &mut t,
        &mut session,
        "second exchange, replies routed back via the gw",
    );
    assert_eq!(
        wiki_https.peer_ips(),
        vec![IpAddr::V4(ALICE)],
        "without masquerade the wiki must see alice's overlay address\n{}",
        t.diagnostics()
    );

    let local = session.local_addr().expect("session local address");
    let ct = t.conntrack().expect("swiftgate conntrack --json");
    let entry = ct
        .iter()
        .find(|e| {
            e.proto == 6
                && e.src == ALICE.to_string()
                && e.dst == WIKI.to_string()
                && e.dport == 443
                && e.sport == local.port()
        })
        .unwrap_or_else(|| panic!("no conntrack entry for {local} -> {WIKI}:443 in {ct:#?}"));
    assert_eq!(
        entry.nat, None,
        "a flow of a Network without masquerade has no translation: {entry:?}"
    );

    assert_tcp_blocked(
        &mut t,
        Side::Client,
        ALICE,
        sa(WIKI, 22),
        "alice -> wiki:22",
    );
    // The return route does not open the LAN -> overlay direction.
    let _on_client = TcpServer::start(&t.client, sa(ALICE, 8080)).expect("client listener");
    assert_tcp_blocked(
        &mut t,
        Side::Lan(0),
        WIKI,
        sa(ALICE, 8080),
        "LAN host -> alice",
    );
}

fn three_tier_config(t: &Topology) -> ConfigFile {
    const PEER_GROUPS: [&str; 3] = ["peer-devops-prod", "peer-support", "svc-monitoring"];
    t.base_config()
        .peer(Peer::new("devops", &["100.64.0.2"], &["peer-devops-prod"]))
        .peer(Peer::new("support", &["100.64.0.3"], &["peer-support"]))
        .peer(Peer::new(
            "monitoring",
            &["100.64.0.4"],
            &["svc-monitoring"],
        ))
        .network(
            Network::new("Orders Prod", true)
                .resource("orders-web", "192.0.2.20/32", &["svc-orders-web-prod"])
                .resource("orders-app", "192.0.2.21/32", &["svc-orders-app-prod"])
                .resource("orders-db", "192.0.2.22/32", &["svc-orders-db-prod"])
                .resource("dns", "192.0.2.53/32", &["svc-dns-prod"]),
        )
        .policy(Policy::accept(
            "users-to-web",
            &["peer-devops-prod", "peer-support"],
            &["svc-orders-web-prod"],
            "tcp",
            &["443"],
        ))
        .policy(Policy::accept(
            "web-to-app",
            &["svc-orders-web-prod"],
            &["svc-orders-app-prod"],
            "tcp",
            &["8443"],
        ))
        .policy(Policy::accept(
            "app-to-db",
            &["svc-orders-app-prod"],
            &["svc-orders-db-prod"],
            "tcp",
            &["5432"],
        ))
        .policy(Policy::accept(
            "monitoring",
            &["svc-monitoring"],
            &[
                "svc-orders-web-prod",
                "svc-orders-app-prod",
                "svc-orders-db-prod",
            ],
            "tcp",
            &["9100", "9200"],
        ))
        .policy(Policy::accept(
            "dns-udp",
            &PEER_GROUPS,
            &["svc-dns-prod"],
            "udp",
            &["53"],
        ))
        .policy(Policy::accept(
            "dns-tcp",
            &PEER_GROUPS,
            &["svc-dns-prod"],
            "tcp",
            &["53"],
        ))
}

#[test]
fn three_tier_example() {
    let mut t = build(
        &[DEVOPS, SUPPORT, MONITOR],
        vec![LanSpec::test_net_1(&[20, 21, 22, 53])],
    );
    let lan = t.lan(0);
    let servers: Vec<TcpServer> = [
        (WEB, 443),
        (WEB, 80),
        (APP, 8443),
        (APP, 9100),
        (DB, 5432),
        (DB, 9200),
        (DNS, 53),
    ]
    .into_iter()
    .map(|(ip, port)| TcpServer::start(lan, sa(ip, port)).expect("LAN TCP server"))
    .collect();
    let _dns_udp = UdpServer::start(lan, sa(DNS, 53)).expect("dns udp/53 server");
    let cfg = three_tier_config(&t);
    start_agent(&mut t, &cfg);

    assert_tcp_allowed(
        &mut t,
        Side::Client,
        DEVOPS,
        sa(WEB, 443),
        "devops -> web:443",
    );
    assert_tcp_allowed(
        &mut t,
        Side::Client,
        SUPPORT,
        sa(WEB, 443),
        "support -> web:443",
    );
    assert_tcp_allowed(
        &mut t,
        Side::Client,
        MONITOR,
        sa(APP, 9100),
        "monitoring -> app:9100",
    );
    assert_tcp_allowed(
        &mut t,
        Side::Client,
        MONITOR,
        sa(DB, 9200),
        "monitoring -> db:9200",
    );
    assert_udp_allowed(
        &mut t,
        Side::Client,
        DEVOPS,
        sa(DNS, 53),
        "devops -> dns udp/53",
    );
    assert_tcp_allowed(
        &mut t,
        Side::Client,
        SUPPORT,
        sa(DNS, 53),
        "support -> dns tcp/53",
    );

    assert_tcp_blocked(
        &mut t,
        Side::Client,
        DEVOPS,
        sa(DB, 5432),
        "devops -> db:5432",
    );
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        SUPPORT,
        sa(APP, 8443),
        "support -> app:8443",
    );
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        SUPPORT,
        sa(DB, 5432),
        "support -> db:5432",
    );
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        MONITOR,
        sa(WEB, 443),
        "monitoring -> web:443",
    );
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        DEVOPS,
        sa(WEB, 80),
        "devops -> web:80",
    );

    // Servers behind blocked ports never saw a connection.
    for s in &servers {
        let blocked = [sa(WEB, 80), sa(APP, 8443), sa(DB, 5432)].contains(&s.addr());
        if blocked {
            assert!(
                s.peers().is_empty(),
                "{} saw connections: {:?}",
                s.addr(),
                s.peers()
            );
        }
    }
    drop(servers);
}

#[test]
fn established_flow_survives_agent_restart() {
    let mut t = build(&[ALICE], vec![LanSpec::test_net_1(&[10])]);
    let _wiki_https = TcpServer::start(t.lan(0), sa(WIKI, 443)).expect("wiki:443 server");
    let _wiki_ssh = TcpServer::start(t.lan(0), sa(WIKI, 22)).expect("wiki:22 server");
    let cfg = berlin_config(&t, true);
    start_agent(&mut t, &cfg);

    let mut session = open_session(&mut t, ALICE, sa(WIKI, 443));
    for _ in 0..3 {
        exchange(&mut t, &mut session, "before the restart");
    }

    if let Err(e) = t.stop_agent() {
        panic!("stopping the agent with SIGTERM: {e}\n{}", t.diagnostics());
    }
    assert!(
        t.pin_path.exists(),
        "the agent removed its pinned state ({}) on SIGTERM",
        t.pin_path.display()
    );
    for _ in 0..5 {
        exchange(
            &mut t,
            &mut session,
            "while the agent is down (programs attached, maps pinned)",
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    if let Err(e) = t.start_agent() {
        panic!("restarting the agent on the pinned state: {e}");
    }
    for _ in 0..3 {
        exchange(&mut t, &mut session, "after the restart");
    }
    assert_tcp_allowed(
        &mut t,
        Side::Client,
        ALICE,
        sa(WIKI, 443),
        "a new connection after the restart",
    );
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        ALICE,
        sa(WIKI, 22),
        "policy still enforced after the restart",
    );
    exchange(&mut t, &mut session, "at the end");
}

/// Berlin plus a printer and an unrelated policy for it.
fn with_printer(cfg: ConfigFile) -> ConfigFile {
    let mut cfg = cfg;
    if let Some(n) = cfg.networks.iter_mut().find(|n| n.name == "Berlin Office") {
        *n = n
            .clone()
            .resource("Printer", "192.0.2.50/32", &["Printers"]);
    }
    cfg.policy(Policy::accept(
        "dev-to-printers",
        &["Development"],
        &["Printers"],
        "tcp",
        &["631"],
    ))
}

#[test]
fn policy_change_without_gap_and_deny_takes_effect() {
    let mut t = build(&[ALICE], vec![LanSpec::test_net_1(&[10, 50])]);
    let _wiki = TcpServer::start(t.lan(0), sa(WIKI, 443)).expect("wiki:443 server");
    let _printer = TcpServer::start(t.lan(0), sa(PRINTER, 631)).expect("printer:631 server");
    let berlin = berlin_config(&t, true);
    start_agent(&mut t, &berlin);

    let mut session = open_session(&mut t, ALICE, sa(WIKI, 443));
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        ALICE,
        sa(PRINTER, 631),
        "printer before it is configured",
    );

    // 1. Add an unrelated policy: nothing in flight may notice.
    let added = with_printer(berlin);
    t.write_config(&added).expect("writing the extended config");
    t.reload_agent().expect("SIGHUP");
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        exchange(&mut t, &mut session, "old connection during the reload");
        assert_tcp_allowed(
            &mut t,
            Side::Client,
            ALICE,
            sa(WIKI, 443),
            "new connection during the reload",
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_agent_running(&mut t, "after a good reload");
    let reachable =
        swiftgate_testkit::poll_until(Duration::from_secs(3), Duration::from_millis(200), || {
            traffic::tcp_probe(
                &t.client,
                ALICE.into(),
                sa(PRINTER, 631),
                Duration::from_millis(500),
            )
            .ok()
        });
    if reachable.is_none() {
        panic!(
            "the added policy (printer tcp/631) never took effect after SIGHUP\n{}",
            t.diagnostics()
        );
    }
    exchange(&mut t, &mut session, "old connection after the reload");
    assert_tcp_allowed(
        &mut t,
        Side::Client,
        ALICE,
        sa(WIKI, 443),
        "new connection after the reload",
    );

    // 2. Remove the wiki policy: new connections are denied within 2 s, the old one lives on.
    let removed = added.without_policy("dev-to-apps");
    t.write_config(&removed)
        .expect("writing the reduced config");
    t.reload_agent().expect("SIGHUP");
    let reloaded = Instant::now();
    let mut denied_after = None;
    while reloaded.elapsed() < Duration::from_secs(2) {
        if traffic::tcp_probe(
            &t.client,
            ALICE.into(),
            sa(WIKI, 443),
            Duration::from_millis(500),
        )
        .is_err()
        {
            denied_after = Some(reloaded.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if denied_after.is_none() {
        panic!(
            "new connections to wiki:443 still accepted 2 s after removing the policy\n{}",
            t.diagnostics()
        );
    }
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        ALICE,
        sa(WIKI, 443),
        "new connection after removing the policy",
    );
    for _ in 0..3 {
        exchange(
            &mut t,
            &mut session,
            "established connection after its policy was removed (stateful)",
        );
    }
    assert_tcp_allowed(
        &mut t,
        Side::Client,
        ALICE,
        sa(PRINTER, 631),
        "the remaining policy still works",
    );
    assert_agent_running(&mut t, "after the second reload");
}

#[test]
fn bad_config_is_rejected_and_old_policy_stays() {
    let mut t = build(&[ALICE], vec![LanSpec::test_net_1(&[10])]);
    let _wiki_https = TcpServer::start(t.lan(0), sa(WIKI, 443)).expect("wiki:443 server");
    let _wiki_ssh = TcpServer::start(t.lan(0), sa(WIKI, 22)).expect("wiki:22 server");
    let good = berlin_config(&t, true);
    let mut bad = good.clone();
    bad.policies[0].ports = vec!["500-400".into()];
    let bad_text = bad.to_toml();

    // 1. `up` refuses an invalid file, names the problem, and applies nothing.
    let bad_path = t.workdir.join("bad.toml");
    t.write_config_text(&bad_path, &bad_text)
        .expect("writing the bad config");
    let out =
        swiftgate_testkit::agent::up_expecting_exit(&t.gw, &bad_path, Duration::from_secs(15))
            .unwrap_or_else(|e| {
                panic!("swiftgate up with a reversed port range did not exit by itself: {e}")
            });
    assert!(
        !out.success(),
        "swiftgate up accepted a reversed port range; stderr:\n{}",
        out.stderr
    );
    let stderr = out.stderr.to_lowercase();
    assert!(
        stderr.contains("500-400") || stderr.contains("revers"),
        "the error should name the reversed range 500-400; stderr:\n{}",
        out.stderr
    );
    assert!(
        !t.pin_path.exists(),
        "an invalid config must not apply anything, but {} exists",
        t.pin_path.display()
    );

    // 2. A running agent keeps its policy when reloaded with a bad file.
    start_agent(&mut t, &good);
    assert_tcp_allowed(
        &mut t,
        Side::Client,
        ALICE,
        sa(WIKI, 443),
        "with the good config",
    );
    let mut session = open_session(&mut t, ALICE, sa(WIKI, 443));
    t.write_config_text(&t.config_path, &bad_text)
        .expect("overwriting the config with the bad one");
    let log_before = t.agent().map(|a| a.log().len()).unwrap_or(0);
    t.reload_agent().expect("SIGHUP");
    let complained =
        swiftgate_testkit::poll_until(Duration::from_secs(3), Duration::from_millis(100), || {
            let log = t.agent().ok()?.log();
            let new = log.get(log_before..).unwrap_or("").to_lowercase();
            (new.contains("500-400") || new.contains("revers")).then_some(())
        });
    if complained.is_none() {
        // Not part of the contract for reloads; keep going but say so.
        eprintln!("note: the agent log does not mention the reversed range after the bad reload");
    }
    assert_agent_running(&mut t, "after a reload with a bad file");
    for _ in 0..3 {
        assert_tcp_allowed(
            &mut t,
            Side::Client,
            ALICE,
            sa(WIKI, 443),
            "old policy still in force after a bad reload",
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    exchange(
        &mut t,
        &mut session,
        "established connection after a bad reload",
    );
    assert_tcp_blocked(
        &mut t,
        Side::Client,
        ALICE,
        sa(WIKI, 22),
        "still deny by default after a bad reload",
    );
    assert_agent_running(&mut t, "at the end");
}
