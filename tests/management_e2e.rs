//! The seeds' walkthroughs done the way a user does them: everything through the management
//! server's admin API (REST), with real agents enrolled by setup keys, over WireGuard, with the
//! eBPF data plane enforcing what the server computed. The server runs in-process in the
//! routing peer's namespace (REST on loopback, gRPC and Signal on the underlay).
//!
//! Underlay 203.0.113.0/24; LAN 192.0.2.0/24; overlay from the server's range. Needs root.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;
use swiftgate_testkit::{
    TcpServer,
    mgmt::{Agent, Mgmt, enrol, peer, wait_ready},
    traffic,
    wg::Lab,
};

const WIKI: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn poll(what: &str, timeout: Duration, agents: &[&Agent], mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            let logs: Vec<String> = agents
                .iter()
                .map(|a| {
                    let status = Command::new(swiftgate_testkit::swiftgate_bin())
                        .args(["status", "--json", "--socket"])
                        .arg(a.log.with_extension("").join("ctl.sock"))
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    format!(
                        "{}\nstatus: {status}",
                        std::fs::read_to_string(&a.log).unwrap_or_default()
                    )
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn topology() -> (Lab, usize, usize, usize) {
    let mut lab = Lab::new();
    let client = lab.ns("c");
    let gw = lab.ns("g");
    let lan = lab.ns("l");
    lab.link(client, "u0", "203.0.113.2/24", gw, "u1", "203.0.113.1/24");
    lab.link(lan, "eth0", "192.0.2.10/24", gw, "lan0", "192.0.2.1/24");
    (lab, client, gw, lan)
}

fn ping(lab: &Lab, ns: usize, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    traffic::ping(lab.n(ns), IpAddr::V4(src), IpAddr::V4(dst)).unwrap_or(false)
}

#[test]
fn berlin_office_through_the_admin_api() {
    swiftgate_testkit::require_root();
    let (lab, client, gw, lan) = topology();
    let m = Mgmt::start(&lab, gw, "203.0.113.1");
    m.post("/api/groups", json!({"name": "Development"}));
    m.post("/api/groups", json!({"name": "routers"}));
    m.post("/api/groups", json!({"name": "Internal Apps"}));
    let dev_key = m.post(
        "/api/setup-keys",
        json!({"name": "dev-laptops", "kind": "reusable", "auto_groups": ["Development"]}),
    )["key"]
        .as_str()
        .unwrap()
        .to_string();
    let router_key = m.post(
        "/api/setup-keys",
        json!({"name": "office-routers", "kind": "one-off", "auto_groups": ["routers"]}),
    )["key"]
        .as_str()
        .unwrap()
        .to_string();

    let router = enrol(&lab, gw, "router", &m, &router_key, &["--lan", "lan0"]);
    let alice = enrol(
        &lab,
        client,
        "alice",
        &m,
        &dev_key,
        &["--listen-port", "51821"],
    );
    wait_ready(&router);
    wait_ready(&alice);
    let (router_id, router_ip) = peer(&m, &router.keys);
    let (_, alice_ip) = peer(&m, &alice.keys);
    // Auto-groups were applied on enrolment.
    let alice_view = m.call("GET", "/api/peers", None, false).to_string();
    assert!(
        alice_view.contains("Development"),
        "auto-group missing: {alice_view}"
    );

    // The Default policy connects peers with each other (input chain), not with resources.
    poll(
        "alice -> router over the Default policy",
        Duration::from_secs(20),
        &[&router, &alice],
        || ping(&lab, client, alice_ip, router_ip),
    );

    let wiki = TcpServer::start(lab.n(lan), sa(WIKI, 443)).unwrap();
    let _ssh = TcpServer::start(lab.n(lan), sa(WIKI, 22)).unwrap();
    m.post("/api/networks", json!({"name": "Berlin Office"}));
    m.post(
        "/api/networks/Berlin%20Office/resources",
        json!({"name": "Internal Wiki", "address": "192.0.2.10/32", "groups": ["Internal Apps"]}),
    );
    m.post(
        "/api/networks/Berlin%20Office/routers",
        json!({"peer": router_id, "metric": 100, "masquerade": true}),
    );
    // No policy yet: no access.
    std::thread::sleep(Duration::from_millis(1500));
    let probe = |port: u16, t: Duration| {
        traffic::tcp_probe(lab.n(client), IpAddr::V4(alice_ip), sa(WIKI, port), t).is_ok()
    };
    assert!(
        !probe(443, traffic::BLOCKED_TIMEOUT),
        "access before any policy"
    );

    // The walkthrough's policy.
    let pol = m.post("/api/policies", json!({"name": "dev-to-apps", "sources": ["Development"], "destinations": ["Internal Apps"], "protocol": "tcp", "ports": [443]}));
    let pol_id = pol["id"].as_str().unwrap().to_string();
    poll(
        "alice -> wiki:443 after the policy",
        Duration::from_secs(20),
        &[&router, &alice],
        || probe(443, Duration::from_secs(1)),
    );
    traffic::assert_only_443_masqueraded(probe, &wiki, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));

    // Disabling it: new flows are gone within a second.
    m.post(&format!("/api/policies/{pol_id}/disable"), json!({}));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !probe(443, traffic::BLOCKED_TIMEOUT),
        "access still there 1 s after disabling the policy"
    );
    m.post(&format!("/api/policies/{pol_id}/enable"), json!({}));
    poll(
        "access back after enabling",
        Duration::from_secs(10),
        &[&router, &alice],
        || probe(443, Duration::from_secs(1)),
    );

    // Deleting Default with no replacement stops peer-to-peer traffic.
    m.call("DELETE", "/api/policies/Default", None, false);
    poll(
        "Default gone",
        Duration::from_secs(10),
        &[&router, &alice],
        || !ping(&lab, client, alice_ip, router_ip),
    );
    // A disabled emergency policy, enabled for rollback, restores it.
    let em = m.post("/api/policies", json!({"name": "emergency", "sources": ["All"], "destinations": ["All"], "protocol": "all", "enabled": false}));
    std::thread::sleep(Duration::from_secs(1));
    assert!(!ping(&lab, client, alice_ip, router_ip));
    m.post(
        &format!("/api/policies/{}/enable", em["id"].as_str().unwrap()),
        json!({}),
    );
    poll(
        "rollback",
        Duration::from_secs(10),
        &[&router, &alice],
        || ping(&lab, client, alice_ip, router_ip),
    );

    // Posture: a minimum client version above this agent's takes alice out of the sources.
    let pc = m.post(
        "/api/posture-checks",
        json!({"name": "min-client", "checks": {"client_version": {"min_version": "99.0.0"}}}),
    );
    m.call("PUT", &format!("/api/policies/{pol_id}"), Some(json!({"name": "dev-to-apps", "sources": ["Development"], "destinations": ["Internal Apps"], "protocol": "tcp", "ports": [443], "source_posture_checks": [pc["id"].as_str().unwrap()]})), false);
    poll(
        "posture to take effect",
        Duration::from_secs(10),
        &[&router, &alice],
        || !probe(443, Duration::from_millis(700)),
    );

    // Setup keys: the one-off router key cannot enrol a second peer.
    let reuse = enrol(
        &lab,
        client,
        "second-router",
        &m,
        &router_key,
        &["--listen-port", "51822"],
    );
    let refused = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&reuse.log).unwrap_or_default();
        if log.contains("NotFound") || log.to_lowercase().contains("setup key") {
            break;
        }
        assert!(
            Instant::now() < refused,
            "one-off key reuse not refused:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !std::fs::read_to_string(&reuse.log)
            .unwrap_or_default()
            .contains("swiftgate up: ready")
    );
}

#[test]
fn three_tier_through_the_admin_api() {
    swiftgate_testkit::require_root();
    let mut lab = Lab::new();
    let gw = lab.ns("g");
    let lan = lab.ns("l");
    // One underlay /30 per user: devops, support, monitoring.
    let users: Vec<(usize, &str)> = [("d", 0u8), ("s", 4), ("m", 8)]
        .iter()
        .map(|(n, base)| {
            let ns = lab.ns(n);
            let (g, c) = (
                format!("203.0.113.{}/30", base + 1),
                format!("203.0.113.{}/30", base + 2),
            );
            lab.link(ns, "u0", &c, gw, &format!("u{n}"), &g);
            lab.n(ns)
                .ip(&[
                    "route",
                    "add",
                    "203.0.113.0/24",
                    "via",
                    &format!("203.0.113.{}", base + 1),
                ])
                .unwrap()
                .check()
                .unwrap();
            (ns, *n)
        })
        .collect();
    lab.link(lan, "eth0", "192.0.2.20/24", gw, "lan0", "192.0.2.1/24");
    for a in ["192.0.2.21/24", "192.0.2.22/24", "192.0.2.53/24"] {
        lab.n(lan)
            .ip(&["addr", "add", a, "dev", "eth0"])
            .unwrap()
            .check()
            .unwrap();
    }
    let m = Mgmt::start(&lab, gw, "203.0.113.1");
    for g in [
        "peer-devops-prod",
        "peer-support",
        "svc-monitoring",
        "routers",
        "svc-orders-web-prod",
        "svc-orders-app-prod",
        "svc-orders-db-prod",
        "svc-dns-prod",
    ] {
        m.post("/api/groups", json!({ "name": g }));
    }
    let key = |group: &str| {
        m.post(
            "/api/setup-keys",
            json!({"name": format!("{group}-key"), "kind": "reusable", "auto_groups": [group]}),
        )["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let router = enrol(&lab, gw, "router", &m, &key("routers"), &["--lan", "lan0"]);
    let groups = ["peer-devops-prod", "peer-support", "svc-monitoring"];
    let agents: Vec<Agent> = users
        .iter()
        .zip(groups)
        .map(|((ns, n), g)| enrol(&lab, *ns, n, &m, &key(g), &["--listen-port", "51821"]))
        .collect();
    wait_ready(&router);
    for a in &agents {
        wait_ready(a);
    }
    let (router_id, _) = peer(&m, &router.keys);
    let ips: Vec<Ipv4Addr> = agents.iter().map(|a| peer(&m, &a.keys).1).collect();
    m.call("DELETE", "/api/policies/Default", None, false);
    m.post("/api/networks", json!({"name": "orders-prod"}));
    for (name, ip, g) in [
        ("web", "192.0.2.20/32", "svc-orders-web-prod"),
        ("app", "192.0.2.21/32", "svc-orders-app-prod"),
        ("db", "192.0.2.22/32", "svc-orders-db-prod"),
        ("dns", "192.0.2.53/32", "svc-dns-prod"),
    ] {
        m.post(
            "/api/networks/orders-prod/resources",
            json!({"name": name, "address": ip, "groups": [g]}),
        );
    }
    m.post(
        "/api/networks/orders-prod/routers",
        json!({"peer": router_id, "metric": 100, "masquerade": true}),
    );
    m.post("/api/policies", json!({"name": "Users to Web", "sources": ["peer-devops-prod", "peer-support"], "destinations": ["svc-orders-web-prod"], "protocol": "tcp", "ports": [443]}));
    m.post("/api/policies", json!({"name": "Web to App", "source_resource": {"type": "resource", "id": "web"}, "destinations": ["svc-orders-app-prod"], "protocol": "tcp", "ports": [8443]}));
    m.post("/api/policies", json!({"name": "App to DB", "source_resource": {"type": "resource", "id": "app"}, "destinations": ["svc-orders-db-prod"], "protocol": "tcp", "ports": [5432]}));
    m.post("/api/policies", json!({"name": "Monitoring", "sources": ["svc-monitoring"], "destinations": ["svc-orders-web-prod", "svc-orders-app-prod", "svc-orders-db-prod"], "protocol": "tcp", "ports": [9100, 9200]}));
    m.post("/api/policies", json!({"name": "DNS", "rules": [
        {"protocol": "udp", "ports": [53], "sources": ["peer-devops-prod", "peer-support", "svc-monitoring"], "destinations": ["svc-dns-prod"]},
        {"protocol": "tcp", "ports": [53], "sources": ["peer-devops-prod", "peer-support", "svc-monitoring"], "destinations": ["svc-dns-prod"]}
    ]}));
    let mut servers = Vec::new();
    for (ip, port) in [
        (20, 443),
        (20, 80),
        (21, 8443),
        (21, 9100),
        (22, 9200),
        (22, 5432),
        (53, 53),
    ] {
        servers.push(TcpServer::start(lab.n(lan), sa(Ipv4Addr::new(192, 0, 2, ip), port)).unwrap());
    }
    let _dns_udp =
        swiftgate_testkit::UdpServer::start(lab.n(lan), sa(Ipv4Addr::new(192, 0, 2, 53), 53))
            .unwrap();
    let all: Vec<&Agent> = std::iter::once(&router).chain(agents.iter()).collect();
    let host = |last: u8| Ipv4Addr::new(192, 0, 2, last);
    let tcp = |who: usize, dst: u8, port: u16, t: Duration| {
        traffic::tcp_probe(
            lab.n(users[who].0),
            IpAddr::V4(ips[who]),
            sa(host(dst), port),
            t,
        )
        .is_ok()
    };
    let (devops, support, monitor) = (0, 1, 2);
    poll("devops -> web:443", Duration::from_secs(25), &all, || {
        tcp(devops, 20, 443, Duration::from_secs(1))
    });
    for (who, dst, port) in [
        (support, 20, 443),
        (monitor, 21, 9100),
        (monitor, 22, 9200),
        (support, 53, 53),
    ] {
        poll(
            &format!("user {who} -> .{dst}:{port}"),
            Duration::from_secs(15),
            &all,
            || tcp(who, dst, port, Duration::from_secs(1)),
        );
    }
    traffic::udp_probe(
        lab.n(users[devops].0),
        IpAddr::V4(ips[devops]),
        sa(host(53), 53),
        Duration::from_secs(1),
        3,
    )
    .expect("devops -> dns udp 53");
    for (who, dst, port) in [
        (devops, 22, 5432),
        (support, 21, 8443),
        (support, 22, 5432),
        (monitor, 20, 443),
        (devops, 20, 80),
    ] {
        assert!(
            !tcp(who, dst, port, traffic::BLOCKED_TIMEOUT),
            "user {who} -> .{dst}:{port} must stay blocked"
        );
    }
}

/// Site-to-Site (issue 12, defect 5), as the seeds describe it: two clientless LANs reach each
/// other through a routing peer at each end, one way unless the policy says both. Everything
/// through the admin API; the maps come from the server's computation. Berlin LAN
/// 192.0.2.0/24 behind berlin-gw, Hamburg LAN 198.51.100.0/24 behind hamburg-gw (masquerade
/// off: the Hamburg host sees the Berlin host's own address), underlay 203.0.113.0/24.
#[test]
fn site_to_site_through_the_admin_api() {
    swiftgate_testkit::require_root();
    let mut lab = Lab::new();
    let host_b = lab.ns("a");
    let gw_b = lab.ns("g");
    let gw_h = lab.ns("h");
    let host_h = lab.ns("b");
    lab.link(
        host_b,
        "eth0",
        "192.0.2.10/24",
        gw_b,
        "lan0",
        "192.0.2.1/24",
    );
    lab.link(gw_b, "u0", "203.0.113.1/24", gw_h, "u1", "203.0.113.2/24");
    lab.link(
        host_h,
        "eth0",
        "198.51.100.10/24",
        gw_h,
        "lan0",
        "198.51.100.1/24",
    );
    for (ns, via) in [(host_b, "192.0.2.1"), (host_h, "198.51.100.1")] {
        lab.n(ns)
            .ip(&["route", "add", "default", "via", via])
            .unwrap()
            .check()
            .unwrap();
    }
    let m = Mgmt::start(&lab, gw_b, "203.0.113.1");
    m.call("DELETE", "/api/policies/Default", None, false);
    let key = m.post(
        "/api/setup-keys",
        json!({"name": "site-routers", "kind": "reusable"}),
    )["key"]
        .as_str()
        .unwrap()
        .to_string();
    let berlin = enrol(&lab, gw_b, "berlin-gw", &m, &key, &["--lan", "lan0"]);
    let hamburg = enrol(&lab, gw_h, "hamburg-gw", &m, &key, &["--lan", "lan0"]);
    wait_ready(&berlin);
    wait_ready(&hamburg);
    let (berlin_id, _) = peer(&m, &berlin.keys);
    let (hamburg_id, _) = peer(&m, &hamburg.keys);
    for (net, res, prefix, router, masq) in [
        ("Berlin", "Berlin LAN", "192.0.2.0/24", &berlin_id, true),
        (
            "Hamburg",
            "Hamburg LAN",
            "198.51.100.0/24",
            &hamburg_id,
            false,
        ),
    ] {
        m.post("/api/networks", json!({ "name": net }));
        m.post(
            &format!("/api/networks/{net}/resources"),
            json!({"name": res, "address": prefix}),
        );
        m.post(
            &format!("/api/networks/{net}/routers"),
            json!({"peer": router, "metric": 100, "masquerade": masq}),
        );
    }
    let host_b_ip = Ipv4Addr::new(192, 0, 2, 10);
    let host_h_ip = Ipv4Addr::new(198, 51, 100, 10);
    let web = TcpServer::start(lab.n(host_h), sa(host_h_ip, 443)).unwrap();
    let _ssh = TcpServer::start(lab.n(host_h), sa(host_h_ip, 22)).unwrap();
    let _back = TcpServer::start(lab.n(host_b), sa(host_b_ip, 443)).unwrap();
    let to_hamburg = |port: u16, t: Duration| {
        traffic::tcp_probe(lab.n(host_b), IpAddr::V4(host_b_ip), sa(host_h_ip, port), t).is_ok()
    };
    let to_berlin = |t: Duration| {
        traffic::tcp_probe(lab.n(host_h), IpAddr::V4(host_h_ip), sa(host_b_ip, 443), t).is_ok()
    };
    assert!(!to_hamburg(443, traffic::BLOCKED_TIMEOUT), "no policy yet");

    let pol = m.post(
        "/api/policies",
        json!({"name": "berlin-to-hamburg", "rules": [{
            "source_resource": {"type": "subnet", "id": "Berlin LAN"},
            "destination_resource": {"type": "subnet", "id": "Hamburg LAN"},
            "protocol": "tcp", "ports": [443]}]}),
    );
    poll(
        "Berlin host -> Hamburg host:443 through both routers",
        Duration::from_secs(20),
        &[&berlin, &hamburg],
        || to_hamburg(443, Duration::from_secs(1)),
    );
    assert_eq!(
        web.peer_ips(),
        vec![IpAddr::V4(host_b_ip)],
        "masquerade off: the Berlin host's own address arrives"
    );
    assert!(
        !to_hamburg(22, traffic::BLOCKED_TIMEOUT),
        "only the policy's port"
    );
    assert!(!to_berlin(traffic::BLOCKED_TIMEOUT), "one way");

    // Both ways when bidirectional.
    let id = pol["id"].as_str().unwrap();
    m.call(
        "PUT",
        &format!("/api/policies/{id}"),
        Some(json!({"name": "berlin-to-hamburg", "rules": [{
            "source_resource": {"type": "subnet", "id": "Berlin LAN"},
            "destination_resource": {"type": "subnet", "id": "Hamburg LAN"},
            "protocol": "tcp", "ports": [443], "bidirectional": true}]})),
        false,
    );
    poll(
        "Hamburg host -> Berlin host:443 once bidirectional",
        Duration::from_secs(20),
        &[&berlin, &hamburg],
        || to_berlin(Duration::from_secs(1)),
    );
    // Disabled: gone.
    m.post(&format!("/api/policies/{id}/disable"), json!({}));
    poll(
        "no Site-to-Site after disabling",
        Duration::from_secs(10),
        &[&berlin, &hamburg],
        || !to_hamburg(443, Duration::from_millis(700)),
    );
}
