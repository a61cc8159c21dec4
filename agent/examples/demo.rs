//! `cargo xtask run`: a demo network on embedded defaults.
//!
//! Builds the seeds' "Berlin Office" in network namespaces: an overlay client (alice, group
//! Development), a routing peer running `swiftgate up` with its eBPF fast path, and an office
//! LAN with the Internal Wiki (192.0.2.10). The overlay link between client and routing peer is
//! a TUN pair joined by a userspace relay (WireGuard comes with the next milestone). It then
//! shows what the policy allows and what it denies, and what the data plane saw. Everything is
//! removed at the end (Ctrl-C while `--hold` waits also cleans up).
#![allow(clippy::print_stdout)]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
};

use swiftgate_testkit::{
    LanSpec, Network, Peer, Policy, TcpServer, Topology, TopologySpec, traffic,
};

const ALICE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 9);
const WIKI: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn show(t: &Topology, args: &[&str]) {
    let pin = t.pin_path.to_string_lossy().into_owned();
    let mut cmd = Command::new(swiftgate_testkit::swiftgate_bin());
    cmd.args(args).args(["--pin-path", &pin]);
    match swiftgate_testkit::netns::run_in(&t.gw.path(), || cmd.output()) {
        Ok(Ok(out)) => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(Err(e)) => println!("  (could not run swiftgate {args:?}: {e})"),
        Err(swiftgate_testkit::Error(e)) => {
            println!("  (could not enter the routing peer's namespace: {e})")
        }
    }
}

fn main() {
    swiftgate_testkit::require_root();
    let hold = std::env::args().any(|a| a == "--hold");
    // With --hold, Ctrl-C must reach us (not kill the process) so that cleanup runs: block
    // the signals before any thread starts (threads inherit the mask) and wait for them below.
    let signals = hold.then(|| {
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGINT);
        set.add(nix::sys::signal::Signal::SIGTERM);
        set.thread_block().expect("blocking SIGINT/SIGTERM");
        set
    });
    let mut t = Topology::build(&TopologySpec {
        client_addrs: vec![ALICE, STRANGER],
        lans: vec![LanSpec::test_net_1(&[10, 11])],
    })
    .expect("building the demo network");
    let cfg = t
        .base_config()
        .peer(Peer::new("alice-laptop", &["100.64.0.2"], &["Development"]))
        .network(Network::new("Berlin Office", true).resource(
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
        ));
    t.write_config(&cfg).expect("writing the configuration");
    println!("== swiftgate demo: the Berlin Office walkthrough ==");
    println!(
        "routing peer config ({}):\n{}",
        t.config_path.display(),
        cfg.to_toml()
    );
    t.start_agent().expect("starting swiftgate up");
    let wiki = TcpServer::start(t.lan(0), sa(WIKI, 443)).expect("wiki server");
    let _ssh = TcpServer::start(t.lan(0), sa(WIKI, 22)).expect("wiki ssh");
    let _other = TcpServer::start(t.lan(0), sa(OTHER, 443)).expect("other server");

    println!("== traffic ==");
    let probes: [(&str, Ipv4Addr, SocketAddr, bool); 4] = [
        (
            "alice -> Internal Wiki :443 (policy dev-to-apps)",
            ALICE,
            sa(WIKI, 443),
            true,
        ),
        (
            "alice -> Internal Wiki :22  (port not in policy)",
            ALICE,
            sa(WIKI, 22),
            false,
        ),
        (
            "alice -> 192.0.2.11:443     (not a resource)",
            ALICE,
            sa(OTHER, 443),
            false,
        ),
        (
            "100.64.0.9 -> wiki :443     (not a known peer)",
            STRANGER,
            sa(WIKI, 443),
            false,
        ),
    ];
    let mut surprises = 0;
    for (what, src, dst, expect) in probes {
        let timeout = if expect {
            traffic::CONNECT_TIMEOUT
        } else {
            traffic::BLOCKED_TIMEOUT
        };
        let ok = traffic::tcp_probe(&t.client, IpAddr::V4(src), dst, timeout).is_ok();
        println!("  {what:<52} {}", if ok { "connected" } else { "blocked" });
        surprises += (ok != expect) as u32;
    }
    println!(
        "  the wiki saw connections from: {:?} (masqueraded)",
        wiki.peer_ips()
    );

    println!("\n== swiftgate conntrack ==");
    show(&t, &["conntrack"]);
    println!("\n== swiftgate counters ==");
    show(&t, &["counters"]);
    println!("\n== swiftgate programs ==");
    show(&t, &["programs"]);

    if let Some(set) = signals {
        println!("\nholding the network up; Ctrl-C to tear it down");
        let _ = set.wait();
    }
    drop(t);
    if surprises > 0 {
        eprintln!("demo: {surprises} result(s) differ from the policy");
        std::process::exit(1);
    }
    println!("\ndemo done: allowed what the policy allows, blocked the rest; namespaces removed");
}
