//! WireGuard routing-peer benchmark (not a test): iperf3 through (a) a swiftgate routing peer
//! and (b) NetBird's userspace-mode equivalent — wireguard-go + Linux forwarding + nftables
//! filter and masquerade — in the same run, same topology, same client.
//!
//! `cargo xtask bench` runs it (release build, root). `--seconds N` sets each iperf3 run's
//! length (default 10).
#![allow(clippy::print_stdout)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::{process::Command, time::Duration};

use support::wg::{Keys, Lab, keys, sh, wait_for};

const SERVER: &str = "192.0.2.10";

fn client_config(me: &Keys, gw: &Keys) -> String {
    format!(
        r#"
[interface]
overlay = "sg0"
addresses = ["100.64.0.2/16"]
private_key = "{}"
listen_port = 0
mtu = 1420
[[peers]]
name = "gateway"
ips = ["100.64.0.1"]
groups = ["gw"]
public_key = "{}"
endpoint = "203.0.113.1:51820"
allowed_ips = ["192.0.2.0/24"]
keepalive = 5
"#,
        me.private, gw.public
    )
}

fn gateway_config(gw: &Keys, client: &Keys) -> String {
    format!(
        r#"
[interface]
overlay = "sg0"
addresses = ["100.64.0.1/16"]
lan = ["lan0"]
private_key = "{}"
listen_port = 51820
mtu = 1420
flow_events = "none"
[[peers]]
name = "client"
ips = ["100.64.0.2"]
groups = ["bench"]
public_key = "{}"
[[networks]]
name = "lab"
[[networks.resources]]
name = "server"
address = "192.0.2.10/32"
groups = ["servers"]
[[policies]]
name = "bench"
sources = ["bench"]
destinations = ["servers"]
protocol = "all"
"#,
        gw.private, client.public
    )
}

/// What NetBird's userspace routing peer installs, for the same policy.
const NFT_RULES: &str = r#"
table inet swiftgate_bench {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "WGIF" ip saddr 100.64.0.2 ip daddr 192.0.2.10 accept
  }
  chain postrouting {
    type nat hook postrouting priority 100;
    ip saddr 100.64.0.0/16 oifname "lan0" masquerade
  }
}
"#;

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no memory-safety preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// softirq CPU seconds, all CPUs (forwarding in the kernel is not charged to any process).
fn softirq_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let si: f64 = line
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: as above.
    si / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

struct Run {
    label: String,
    gbit: f64,
    pps: f64,
    bytes: f64,
    gw_cpu: f64,
    softirq: f64,
}

fn iperf(lab: &Lab, client: usize, args: &[&str], secs: u64, gw_pid: u32, label: &str) -> Run {
    let cpu0 = proc_cpu_seconds(gw_pid);
    let si0 = softirq_seconds();
    let secs_s = secs.to_string();
    let mut full = vec!["iperf3", "-c", SERVER, "-t", &secs_s, "-J"];
    full.extend_from_slice(args);
    let ns_path = lab.n(client).path();
    let out = support::run_timeout(
        Command::new(full[0]).args(&full[1..]),
        Some(&ns_path),
        Duration::from_secs(secs + 20),
    )
    .expect("iperf3");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let end = &v["end"];
    let (bps, bytes, pps) = if args.contains(&"-u") {
        let s = &end["sum"];
        let bytes = s["bytes"].as_f64().unwrap_or(0.0)
            * (1.0 - s["lost_percent"].as_f64().unwrap_or(0.0) / 100.0);
        let pkts = s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0);
        (bytes * 8.0 / secs as f64, bytes, pkts / secs as f64)
    } else {
        let s = &end["sum_received"];
        (
            s["bits_per_second"].as_f64().unwrap_or(0.0),
            s["bytes"].as_f64().unwrap_or(0.0),
            0.0,
        )
    };
    if bytes == 0.0 {
        eprintln!(
            "{label}: iperf3 moved nothing: {}{}",
            out.stderr,
            &out.stdout[..out.stdout.len().min(400)]
        );
    }
    Run {
        label: label.to_string(),
        gbit: bps / 1e9,
        pps,
        bytes,
        gw_cpu: proc_cpu_seconds(gw_pid) - cpu0,
        softirq: softirq_seconds() - si0,
    }
}

fn topology() -> (Lab, usize, usize, usize) {
    let mut lab = Lab::new();
    let client = lab.ns("c");
    let gw = lab.ns("g");
    let lan = lab.ns("l");
    lab.link(client, "u0", "203.0.113.2/24", gw, "u1", "203.0.113.1/24");
    lab.link(lan, "eth0", "192.0.2.10/24", gw, "lan0", "192.0.2.1/24");
    lab.n(gw)
        .sysctl("net/ipv4/ip_forward", "1")
        .expect("forwarding");
    (lab, client, gw, lan)
}

fn runs(lab: &Lab, client: usize, gw_pid: u32, secs: u64, name: &str) -> Vec<Run> {
    vec![
        iperf(
            lab,
            client,
            &[],
            secs,
            gw_pid,
            &format!("{name} TCP 1 stream"),
        ),
        iperf(
            lab,
            client,
            &["-P", "4"],
            secs,
            gw_pid,
            &format!("{name} TCP 4 streams"),
        ),
        iperf(
            lab,
            client,
            &["-u", "-b", "0", "-l", "64"],
            secs,
            gw_pid,
            &format!("{name} UDP 64 B"),
        ),
    ]
}

fn main() {
    support::require_root();
    let secs: u64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let client_keys = keys();
    let gw_keys = keys();
    let mut results = Vec::new();

    // (a) swiftgate routing peer, swiftgate client.
    {
        let (mut lab, client, gw, lan) = topology();
        let srv = lab
            .n(lan)
            .spawn(Command::new("iperf3").args(["-s", "-B", SERVER]))
            .expect("iperf3 -s");
        lab.swiftgate(gw, &gateway_config(&gw_keys, &client_keys));
        lab.swiftgate(client, &client_config(&client_keys, &gw_keys));
        wait_for("the tunnel", Duration::from_secs(10), || {
            lab.n(client)
                .output(Command::new("ping").args(["-c1", "-W1", SERVER]))
                .map(|o| o.success())
                .unwrap_or(false)
        });
        let pid = lab.agents[0].0.pid().as_raw() as u32;
        results.extend(runs(&lab, client, pid, secs, "swiftgate"));
        let mut srv = srv;
        let _ = srv.kill();
        let _ = srv.wait();
    }
    // (b) wireguard-go + forwarding + nftables, same swiftgate client.
    {
        let (mut lab, client, gw, lan) = topology();
        let srv = lab
            .n(lan)
            .spawn(Command::new("iperf3").args(["-s", "-B", SERVER]))
            .expect("iperf3 -s");
        let wgif = format!("{}b", lab.id);
        lab.stock_wg(
            gw,
            &wgif,
            &gw_keys,
            &["100.64.0.1/16"],
            &[
                "listen-port",
                "51820",
                "peer",
                &client_keys.public,
                "allowed-ips",
                "100.64.0.2/32",
            ],
        );
        sh(
            Some(lab.n(gw)),
            &["ip", "link", "set", &wgif, "mtu", "1420"],
        );
        let rules = lab.dir.join("rules.nft");
        std::fs::write(&rules, NFT_RULES.replace("WGIF", &wgif)).unwrap();
        sh(Some(lab.n(gw)), &["nft", "-f", rules.to_str().unwrap()]);
        lab.swiftgate(client, &client_config(&client_keys, &gw_keys));
        wait_for("the tunnel", Duration::from_secs(10), || {
            lab.n(client)
                .output(Command::new("ping").args(["-c1", "-W1", SERVER]))
                .map(|o| o.success())
                .unwrap_or(false)
        });
        let pid = lab.stock_pid(0);
        results.extend(runs(&lab, client, pid, secs, "wireguard-go+nftables"));
        let counters = sh(
            Some(lab.n(gw)),
            &["nft", "list", "chain", "inet", "swiftgate_bench", "forward"],
        );
        eprintln!("nftables forward chain after the runs:\n{counters}");
        let mut srv = srv;
        let _ = srv.kill();
        let _ = srv.wait();
    }

    println!(
        "\n| run | throughput | packets/s | gateway process CPU-s/GB | softirq CPU-s/GB (all) |"
    );
    println!("|---|---|---|---|---|");
    for r in &results {
        let gb = r.bytes / 1e9;
        println!(
            "| {} | {:.2} Gbit/s | {} | {:.2} | {:.2} |",
            r.label,
            r.gbit,
            if r.pps > 0.0 {
                format!("{:.0}", r.pps)
            } else {
                "-".into()
            },
            if gb > 0.0 { r.gw_cpu / gb } else { f64::NAN },
            if gb > 0.0 { r.softirq / gb } else { f64::NAN },
        );
    }
    let half = results.len() / 2;
    println!("\n| ratio swiftgate / wireguard-go+nftables | throughput |");
    println!("|---|---|");
    for (a, b) in results[..half].iter().zip(&results[half..]) {
        let (x, y) = if a.pps > 0.0 {
            (a.pps, b.pps)
        } else {
            (a.gbit, b.gbit)
        };
        println!(
            "| {} | {:.2}x |",
            a.label.trim_start_matches("swiftgate "),
            x / y
        );
    }
    println!(
        "\nreproduce: cargo xtask bench (this part: cargo run --release -p swiftgate --example wg_bench -- --seconds {secs})"
    );
}
