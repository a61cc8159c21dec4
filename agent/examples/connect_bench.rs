//! Connection benchmark (not a test): how long a peer takes from `swiftgate up` to its first
//! packet through the tunnel, and what a TURN relay costs against a direct path.
//!
//! Two labs, each alice and bob behind their own NAT router on an "internet" namespace that
//! holds the management server, Signal and coturn (STUN and TURN, shared-secret credentials):
//!
//! - **direct**: both NATs map endpoint-independently; ICE selects a pair through the
//!   server-reflexive candidates;
//! - **relayed**: both NATs map every destination to a new random port (symmetric); only
//!   pairs through coturn work.
//!
//! In each, bob stays up; alice is started `--runs` times with her enrolled key (a login,
//! not a registration), and the time from spawning `swiftgate up` to the first ICMP echo
//! answered by bob through the tunnel is taken (ping every 20 ms from the moment alice's
//! overlay address exists). Then one iperf3 TCP run (`--seconds`) from alice to bob, with
//! the CPU seconds per GB of alice's agent, bob's agent and coturn.
//!
//! `cargo run --release -p swiftgate --example connect_bench -- [--runs 20] [--seconds 5]`
//! (root; the agent binary is built first by `cargo build --release -p swiftgate`).
#![allow(clippy::print_stdout)]

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use swiftgate_testkit::{
    mgmt::{Agent, Mgmt, enrol, enrol_as, peer, wait_ready},
    nat::{Coturn, Homes, Mapping, TURN_SECRET, coturn, management, two_homes},
    wg::Lab,
};

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

/// Fields drop in order: bob (whose drop runs `swiftgate down` in his namespace, removing
/// his pins) before the lab that deletes the namespaces.
struct Site {
    bob: Agent,
    turn: Coturn,
    m: Mgmt,
    key: String,
    home_a: usize,
    home_b: usize,
    lab: Lab,
}

/// A lab with both NATs mapping as `mapping`, bob up and enrolled.
fn site(mapping: Mapping) -> Site {
    let mut lab = Lab::new();
    let Homes {
        inet,
        home_a,
        home_b,
        ..
    } = two_homes(&mut lab, mapping, mapping);
    let turn = coturn(&lab, inet, Some(TURN_SECRET));
    let (m, key) = management(&lab, inet, Some(Duration::from_secs(3600)));
    let bob = enrol(&lab, home_b, "bob", &m, &key, &[]);
    wait_ready(&bob);
    Site {
        bob,
        turn,
        m,
        key,
        home_a,
        home_b,
        lab,
    }
}

/// Pings `dst` from `src` in `ns` every 20 ms until an answer; the time it took from
/// `since`, or `None` after `limit`.
fn first_answer(
    s: &Site,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    while since.elapsed() < limit {
        // Fails at once while the address does not exist yet; then waits for the answer.
        let out = s.lab.n(s.home_a).output(
            Command::new("ping")
                .args(["-n", "-q", "-c1", "-i0.02", "-w2", "-I"])
                .arg(src.to_string())
                .arg(dst.to_string()),
        );
        if out.is_ok_and(|o| o.success()) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Seconds since midnight UTC of a tracing timestamp (`2026-12-07T18:30:55.162549Z`).
fn log_seconds(line: &str) -> Option<f64> {
    let t = line.get(11..26)?;
    let h: f64 = t.get(0..2)?.parse().ok()?;
    let m: f64 = t.get(3..5)?.parse().ok()?;
    let sec: f64 = t.get(6..)?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + sec)
}

/// Seconds since midnight UTC now.
fn now_seconds() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_secs_f64() % 86_400.0
}

/// When the agent logging to `log` said it was ready (its fast path, WireGuard and routes
/// up; seconds since midnight UTC).
fn ready_at(log: &std::path::Path) -> Option<f64> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .find(|l| l.contains("swiftgate::run: ready"))
        .and_then(log_seconds)
}

/// How long the agent logging to `log` took to create its eBPF maps and have the kernel
/// verify its programs (seconds; the floor of its start on this machine).
fn ebpf_load(log: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("programs verified"))?;
    let ms = line.split("ms=").nth(1)?.split_whitespace().next()?;
    Some(ms.parse::<f64>().ok()? / 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Runs one lab: connection times, then throughput and CPU.
fn measure(name: &str, mapping: Mapping, runs: usize, secs: u64) {
    let s = site(mapping);
    let (_, bob_ip) = peer(&s.m, &s.bob.keys);
    let keys = swiftgate_proto::keys::KeyPair::generate();
    let mut times = Vec::new();
    let (mut starts, mut connects, mut loads) = (Vec::new(), Vec::new(), Vec::new());
    let mut alice_ip = None;
    let mut last: Option<Agent> = None;
    for i in 0..runs {
        drop(last.take());
        let t0 = Instant::now();
        let wall0 = now_seconds();
        let a = enrol_as(&s.lab, s.home_a, "alice", &s.m, &s.key, &[], keys.clone());
        let ip = *alice_ip.get_or_insert_with(|| {
            wait_ready(&a);
            peer(&s.m, &a.keys).1
        });
        match first_answer(&s, ip, bob_ip, t0, Duration::from_secs(60)) {
            Some(t) => {
                times.push(t.as_secs_f64());
                // The agent's own start (keys, login, map, eBPF, WireGuard, routes) and what
                // is left: finding the peer and the first handshake.
                let ready = ready_at(&a.log).map(|r| (r - wall0).rem_euclid(86_400.0));
                if let Some(r) = ready {
                    starts.push(r);
                    connects.push(t.as_secs_f64() - r);
                }
                loads.extend(ebpf_load(&a.log));
                println!(
                    "{name} run {i}: first packet after {:.3} s (ready after {})",
                    t.as_secs_f64(),
                    ready.map_or("?".into(), |r| format!("{r:.3} s"))
                );
            }
            None => {
                println!("{name} run {i}: no packet within 60 s");
            }
        }
        if std::env::var_os("CONNECT_BENCH_LOGS").is_some() {
            for f in [&a.log, &s.bob.log, &s.lab.dir.join("coturn.log")] {
                println!(
                    "--- {}\n{}",
                    f.display(),
                    std::fs::read_to_string(f).unwrap_or_default()
                );
            }
        }
        last = Some(a);
    }
    let alice = last.expect("at least one run");
    let status = Command::new(swiftgate_testkit::swiftgate_bin())
        .args(["status", "--json", "--socket"])
        .arg(alice.log.with_extension("").join("ctl.sock"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    let path = v["peers"][0]["path"].as_str().unwrap_or("-").to_string();
    times.sort_by(|a, b| a.total_cmp(b));
    starts.sort_by(|a, b| a.total_cmp(b));
    connects.sort_by(|a, b| a.total_cmp(b));
    loads.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: of the start, eBPF maps and program verification (the kernel's verifier): median {:.3} s, p95 {:.3} s",
        percentile(&loads, 0.5),
        percentile(&loads, 0.95),
    );
    println!(
        "{name}: of which the agent's start (up to ready): median {:.3} s, p95 {:.3} s; from ready to the first packet: median {:.3} s, p95 {:.3} s",
        percentile(&starts, 0.5),
        percentile(&starts, 0.95),
        percentile(&connects, 0.5),
        percentile(&connects, 0.95),
    );
    println!(
        "{name}: path {path}; time to first packet over {} runs: median {:.3} s, p95 {:.3} s, min {:.3} s, max {:.3} s",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times.first().copied().unwrap_or(f64::NAN),
        times.last().copied().unwrap_or(f64::NAN),
    );

    // Throughput through the tunnel, and who paid for it.
    let alice_ip = alice_ip.expect("alice's address");
    let server = s
        .lab
        .n(s.home_b)
        .spawn(
            Command::new("iperf3")
                .args(["-s", "-1", "-B"])
                .arg(bob_ip.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        )
        .expect("iperf3 -s");
    std::thread::sleep(Duration::from_millis(300));
    let pids = [
        ("alice", alice.child.id()),
        ("bob", s.bob.child.id()),
        ("coturn", s.turn.pid()),
    ];
    let cpu0: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let out = match swiftgate_testkit::run_timeout(
        Command::new("iperf3")
            .args(["-c"])
            .arg(bob_ip.to_string())
            .args(["-B"])
            .arg(alice_ip.to_string())
            .args(["-t", &secs.to_string(), "-J"]),
        Some(&s.lab.n(s.home_a).path()),
        Duration::from_secs(secs + 20),
    ) {
        Ok(o) => o.stdout,
        Err(e) => {
            println!("{name}: iperf3 gave no result: {e}");
            String::new()
        }
    };
    let cpu1: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();
    let j: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let bps = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let bytes = j["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
    let gb = bytes / 1e9;
    let per_gb: Vec<String> = pids
        .iter()
        .zip(cpu0.iter().zip(&cpu1))
        .map(|((n, _), (a, b))| format!("{n} {:.2}", (b - a) / gb.max(1e-9)))
        .collect();
    println!(
        "{name}: TCP alice -> bob {:.2} Gbit/s over {secs} s ({:.2} GB); CPU s/GB: {}",
        bps / 1e9,
        gb,
        per_gb.join(", ")
    );
}

fn main() {
    let mut runs = 20;
    let mut secs = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            "--seconds" => secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            other => {
                eprintln!(
                    "unknown argument {other}; usage: connect_bench [--runs N] [--seconds N]"
                );
                std::process::exit(2);
            }
        }
    }
    if std::env::var_os("CONNECT_BENCH_ONLY_RELAYED").is_none() {
        measure("direct", Mapping::Cone, runs, secs);
    }
    measure("relayed", Mapping::Symmetric, runs, secs);
}
