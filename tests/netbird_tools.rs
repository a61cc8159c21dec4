//! NetBird's own tooling in front of real agents: the PyPI `netbird` REST client (installed
//! by scripts/bootstrap.sh) drives the Berlin Office walkthrough against the management server
//! with its default `Token` authentication, agents enrolled with the setup keys it made talk
//! TLS to the server (trusting its self-signed certificate), and the result is checked where
//! it matters: the agent's network map and the traffic it lets through.
//!
//! Underlay 203.0.113.0/24; LAN 192.0.2.0/24. Needs root.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use serde_json::Value;
use swiftgate_testkit::{
    TcpServer,
    mgmt::{Mgmt, enrol, peer, wait_ready},
    traffic,
    wg::Lab,
};

const WIKI: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// Runs a phase of berlin_agents.py in namespace `ns` and returns its JSON.
fn netbird_client(lab: &Lab, ns: usize, m: &Mgmt, phase: &str, env: &[(&str, &str)]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../management/tests/netbird_client/berlin_agents.py");
    let mut cmd = Command::new(swiftgate_testkit::pyenv_python());
    cmd.arg(script)
        .arg(phase)
        .env("NB_HOST", &m.rest)
        .env("NB_PAT", &m.token)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = lab.n(ns).output(&mut cmd).expect("python");
    assert!(
        out.status.success(),
        "phase {phase} failed:\n{}",
        out.stderr
    );
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn poll(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let done =
        swiftgate_testkit::poll_until(timeout, Duration::from_millis(200), || f().then_some(()));
    assert!(done.is_some(), "timed out waiting for {what}");
}

#[test]
fn the_pypi_netbird_client_drives_agents_over_tls() {
    swiftgate_testkit::require_root();
    let mut lab = Lab::new();
    let client = lab.ns("c");
    let gw = lab.ns("g");
    let lan = lab.ns("l");
    lab.link(client, "u0", "203.0.113.2/24", gw, "u1", "203.0.113.1/24");
    lab.link(lan, "eth0", "192.0.2.10/24", gw, "lan0", "192.0.2.1/24");
    let m = Mgmt::start(&lab, gw, "203.0.113.1");
    assert!(m.grpc.starts_with("https://"), "{}", m.grpc);

    let keys = netbird_client(&lab, gw, &m, "keys", &[]);
    let router = enrol(
        &lab,
        gw,
        "router",
        &m,
        keys["router_key"].as_str().unwrap(),
        &["--lan", "lan0"],
    );
    let alice = enrol(
        &lab,
        client,
        "alice",
        &m,
        keys["dev_key"].as_str().unwrap(),
        &["--listen-port", "51821"],
    );
    wait_ready(&router);
    wait_ready(&alice);
    let (router_id, _) = peer(&m, &router.keys);
    let (_, alice_ip) = peer(&m, &alice.keys);
    let log = std::fs::read_to_string(&alice.log).unwrap();
    assert!(
        log.contains("https://203.0.113.1"),
        "alice logged in over TLS:\n{log}"
    );

    let wiki = TcpServer::start(lab.n(lan), SocketAddr::from((WIKI, 443))).unwrap();
    let _ssh = TcpServer::start(lab.n(lan), SocketAddr::from((WIKI, 22))).unwrap();
    let probe = |port: u16, t: Duration| {
        traffic::tcp_probe(
            lab.n(client),
            IpAddr::V4(alice_ip),
            SocketAddr::from((WIKI, port)),
            t,
        )
        .is_ok()
    };
    assert!(
        !probe(443, traffic::BLOCKED_TIMEOUT),
        "access before the policy"
    );
    netbird_client(&lab, gw, &m, "access", &[("ROUTER_ID", router_id.as_str())]);

    // The agent's map: a route to the wiki through the router.
    let status_of = |socket: PathBuf| -> Value {
        let out = Command::new(swiftgate_testkit::swiftgate_bin())
            .args(["status", "--json", "--socket"])
            .arg(socket)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let alice_sock = alice.log.with_extension("").join("ctl.sock");
    poll(
        "alice's map routes the wiki",
        Duration::from_secs(20),
        || {
            status_of(alice_sock.clone())
                .to_string()
                .contains("192.0.2.10/32")
        },
    );
    poll(
        "alice -> wiki:443 after the policy",
        Duration::from_secs(20),
        || probe(443, Duration::from_secs(1)),
    );
    traffic::assert_only_443_masqueraded(probe, &wiki, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    // The activity log names the token's user for every change the client made.
    let events = m.call("GET", "/api/events/audit", None, false);
    let codes: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["activity_code"].as_str())
        .collect();
    for want in [
        "group.add",
        "setupkey.add",
        "network.create",
        "network.router.create",
        "policy.add",
    ] {
        assert!(codes.contains(&want), "{want} missing from {codes:?}");
    }
}
