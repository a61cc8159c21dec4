//! End to end: the real `swiftgate` agent with the XDP stage (`xdp = true`) on an Ethernet
//! overlay, forwarding real TCP between network namespaces.
//!
//! ```text
//!   client ns                      gw ns                                  lan ns
//!   c0 100.64.0.2/16  <--veth-->  gw0 100.64.0.1/16 (overlay, XDP + TC)
//!                                 lan0 192.0.2.1/24      <--veth-->      eth0 192.0.2.10/24
//! ```
//!
//! Checks that allowed connections work and are masqueraded, denied ones fail, frames whose
//! checksum is left to offload take the TC path while frames with complete checksums take the
//! XDP stage — the overlay veth's own `xdp_redirect` counter tells — and that `swiftgate down`
//! detaches it. Run as root; does not skip.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use swiftgate_testkit::traffic::BLOCKED_TIMEOUT;
use swiftgate_testkit::{
    NetNs, TcpServer, TcpSession, agent, ensure_bpffs, pin_path_for, require_root, unique_id,
};

const ALICE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const GW_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const WIKI: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn config(pin: &std::path::Path, socket: &std::path::Path) -> String {
    format!(
        r#"
[interface]
overlay = "gw0"
overlay_l2 = true
xdp = true
addresses = ["100.64.0.1/16"]
lan = ["lan0"]
mtu = 1280
pin_path = "{}"
control_socket = "{}"

[[peers]]
name = "alice"
ips = ["{ALICE}"]
groups = ["Development"]

[[networks]]
name = "Berlin Office"
[[networks.resources]]
name = "wiki"
address = "{WIKI}/32"
groups = ["Internal Apps"]

[[policies]]
name = "dev-apps"
sources = ["Development"]
destinations = ["Internal Apps"]
protocol = "tcp"
ports = ["443"]
"#,
        pin.display(),
        socket.display()
    )
}

/// The sum of the veth driver's per-queue `xdp_redirect` counters of `dev` (`ethtool -S`).
fn xdp_redirects(ns: &NetNs, dev: &str) -> u64 {
    let out = ns
        .output(std::process::Command::new("ethtool").args(["-S", dev]))
        .expect("ethtool -S")
        .check()
        .expect("ethtool -S succeeds");
    out.stdout
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.ends_with("xdp_redirect"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// Removes the pins and temporary files of the test however it ends (the namespaces and the
/// agent clean up after themselves on drop).
struct Cleanup {
    ns: std::path::PathBuf,
    pin: std::path::PathBuf,
    files: Vec<std::path::PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.pin.exists() {
            let _ = agent::down(&self.ns, &self.pin);
            let _ = swiftgate_testkit::remove_pins(&self.pin);
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[test]
fn xdp_stage_forwards_real_traffic_and_detaches_on_down() {
    require_root();
    ensure_bpffs().expect("bpffs");
    let id = unique_id();
    let client = NetNs::create(&format!("{id}c")).expect("client ns");
    let gw = NetNs::create(&format!("{id}g")).expect("gw ns");
    let lan = NetNs::create(&format!("{id}l")).expect("lan ns");
    let pin = pin_path_for(&id);
    let sh = |ns: &NetNs, args: &[&str]| {
        ns.ip(args)
            .and_then(|o| o.check())
            .unwrap_or_else(|e| panic!("ip {args:?} in {}: {e}", ns.name()))
    };
    // Overlay veth: c0 (client) <-> gw0 (gw); LAN veth: lan0 (gw) <-> eth0 (lan).
    sh(
        &client,
        &[
            "link",
            "add",
            "c0",
            "type",
            "veth",
            "peer",
            "name",
            "gw0",
            "netns",
            gw.name(),
        ],
    );
    sh(
        &gw,
        &[
            "link",
            "add",
            "lan0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            lan.name(),
        ],
    );
    sh(&client, &["addr", "add", "100.64.0.2/16", "dev", "c0"]);
    sh(&client, &["link", "set", "c0", "up"]);
    sh(
        &client,
        &["route", "add", "192.0.2.0/24", "via", "100.64.0.1"],
    );
    sh(&gw, &["addr", "add", "100.64.0.1/16", "dev", "gw0"]);
    sh(&gw, &["addr", "add", "192.0.2.1/24", "dev", "lan0"]);
    sh(&gw, &["link", "set", "gw0", "up"]);
    sh(&gw, &["link", "set", "lan0", "up"]);
    sh(&lan, &["addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    sh(&lan, &["link", "set", "eth0", "up"]);
    // A veth accepts XDP-redirected frames when its peer has a NAPI instance, which GRO gives.
    lan.output(std::process::Command::new("ethtool").args(["-K", "eth0", "gro", "on"]))
        .and_then(|o| o.check())
        .expect("ethtool -K eth0 gro on");
    gw.sysctl("net/ipv4/ip_forward", "1").expect("forwarding");

    let cfg_path = std::env::temp_dir().join(format!("{id}-xdp.toml"));
    let socket = std::env::temp_dir().join(format!("{id}-xdp.sock"));
    std::fs::write(&cfg_path, config(&pin, &socket)).expect("write config");
    let log = std::env::temp_dir().join(format!("{id}-xdp.log"));
    // Declared after the namespaces, so it runs before they go.
    let _cleanup = Cleanup {
        ns: gw.path(),
        pin: pin.clone(),
        files: vec![cfg_path.clone(), log.clone(), socket.clone()],
    };
    let mut agent = agent::Agent::spawn(&gw, &cfg_path, &pin, &log).expect("spawn agent");
    agent
        .wait_ready(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("agent not ready: {e}\n{}", agent.log_tail(40)));
    let link = gw.ip(&["link", "show", "gw0"]).expect("ip link").stdout;
    assert!(
        link.contains("xdp"),
        "XDP attached to gw0 in driver mode: {link}"
    );
    // `swiftgate programs` names the XDP program on its hook (and the TC one on ingress).
    let rows = agent::programs(&gw.path(), &pin).expect("swiftgate programs");
    let on = |hook: &str| -> String {
        rows.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["interface"] == "gw0" && r["hook"] == hook)
            .map(|r| r["programs"].to_string())
            .collect()
    };
    assert!(on("xdp").contains("sg_overlay_xdp"), "{rows}");
    assert!(on("ingress").contains("sg_overlay_ingr"), "{rows}");

    let wiki = TcpServer::start(&lan, SocketAddr::from((WIKI, 443))).expect("wiki:443");
    let _ssh = TcpServer::start(&lan, SocketAddr::from((WIKI, 22))).expect("wiki:22");
    // 1. The client's stack leaves TCP checksums to offload (CHECKSUM_PARTIAL over the veth):
    //    such frames must take the TC path, which keeps the checksum state.
    let before = xdp_redirects(&gw, "gw0");
    let mut s = TcpSession::open(&client, IpAddr::V4(ALICE), SocketAddr::from((WIKI, 443)))
        .unwrap_or_else(|e| panic!("alice -> wiki:443: {e}\n{}", agent.log_tail(40)));
    for _ in 0..20 {
        s.exchange()
            .expect("exchange (checksum offload on the client)");
    }
    assert_eq!(
        xdp_redirects(&gw, "gw0"),
        before,
        "frames with offloaded checksums are not redirected by XDP"
    );
    drop(s);

    // 2. Complete checksums (as frames from a wire have): the XDP stage forwards them.
    client
        .output(std::process::Command::new("ethtool").args(["-K", "c0", "tx", "off"]))
        .and_then(|o| o.check())
        .expect("ethtool -K c0 tx off");
    let before = xdp_redirects(&gw, "gw0");
    let mut s = TcpSession::open(&client, IpAddr::V4(ALICE), SocketAddr::from((WIKI, 443)))
        .unwrap_or_else(|e| panic!("alice -> wiki:443: {e}\n{}", agent.log_tail(40)));
    for _ in 0..50 {
        s.exchange().expect("exchange on an established flow");
    }
    assert!(
        wiki.peer_ips().iter().all(|ip| *ip == IpAddr::V4(GW_LAN)),
        "the wiki sees the masqueraded source: {:?}",
        wiki.peer_ips()
    );
    let redirected = xdp_redirects(&gw, "gw0") - before;
    assert!(
        redirected >= 40,
        "the XDP stage forwarded the established packets ({redirected} XDP redirects on gw0)"
    );
    assert!(
        swiftgate_testkit::traffic::tcp_probe(
            &client,
            IpAddr::V4(ALICE),
            SocketAddr::from((WIKI, 22)),
            BLOCKED_TIMEOUT
        )
        .is_err(),
        "alice -> wiki:22 is not allowed"
    );

    // A restarted agent finds its XDP link pinned (an interface holds only one) and takes
    // over; the established session keeps working meanwhile and afterwards.
    agent.stop(Duration::from_secs(10)).expect("stop agent");
    s.exchange()
        .expect("exchange while no agent runs (pinned programs)");
    let log2 = std::env::temp_dir().join(format!("{id}-xdp2.log"));
    let mut agent = agent::Agent::spawn(&gw, &cfg_path, &pin, &log2).expect("respawn agent");
    agent
        .wait_ready(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("restarted agent not ready: {e}\n{}", agent.log_tail(40)));
    let before = xdp_redirects(&gw, "gw0");
    for _ in 0..20 {
        s.exchange().expect("exchange after the restart");
    }
    assert!(
        xdp_redirects(&gw, "gw0") - before >= 15,
        "the restarted agent's XDP stage forwards the established flow"
    );
    drop(s);
    agent.stop(Duration::from_secs(10)).expect("stop agent");
    let _ = std::fs::remove_file(&log2);
    agent::down(&gw.path(), &pin)
        .and_then(|o| o.check())
        .expect("swiftgate down");
    let link = gw.ip(&["link", "show", "gw0"]).expect("ip link").stdout;
    assert!(!link.contains("xdp"), "down detaches the XDP stage: {link}");
}
