//! WireGuard routing-peer benchmark (not a test): iperf3 through (a) a swiftgate routing peer
//! and (b) NetBird's userspace-mode equivalent — wireguard-go + Linux forwarding + nftables
//! filter and masquerade — in the same run, same topology, same client.
//!
//! `cargo xtask bench` runs it (release build, root). Options:
//!
//! - `--seconds N`: length of each iperf3 run (default 10);
//! - `--rounds N`: rounds, each running every selected system once; systems alternate, so a
//!   change in the host's speed during the run touches both (default 1);
//! - `--runs up1,up4,down1,down4,udp64`: which iperf3 runs (default all);
//! - `--systems swiftgate,wireguard-go`: which gateways (default both);
//! - `--workers N`: the swiftgate gateway's WireGuard workers (default 0: one per CPU);
//! - `--floor-gbit X`: the rate of the paced I/O floor (default: the round's swiftgate
//!   client → LAN rate);
//! - `--only-stages`: only the user-space stage costs (no namespaces, no iperf3; no root).
//!
//! Besides throughput it reports the gateway's CPU seconds per GB moved and, measured on the
//! same host in the same run, what parts of that work cost alone: ChaCha20-Poly1305 (ring, the
//! cipher boringtun uses, on 1420-byte packets), our offload code, and the I/O (an I/O floor: a
//! relay doing the gateway's UDP receive, TUN writes and forwarding without the cipher). The
//! stages are also a gauge of the host's speed at the time of the run.
#![allow(clippy::print_stdout)]

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use swiftgate_testkit::wg::{Keys, Lab, client_config, keys, sh, wait_for};

const SERVER: &str = "192.0.2.10";
/// Overlay MTU of both gateways and the client.
const MTU: usize = 1420;
/// TCP payload of a full-sized packet at that MTU (IPv4, TCP with timestamps).
const TCP_PAYLOAD: usize = MTU - 20 - 32;

/// One iperf3 run: key (for `--runs`), label, iperf3 arguments.
const CASES: [(&str, &str, &[&str]); 5] = [
    ("up1", "TCP 1 stream, client → LAN", &[]),
    ("up4", "TCP 4 streams, client → LAN", &["-P", "4"]),
    ("down1", "TCP 1 stream, LAN → client", &["-R"]),
    ("down4", "TCP 4 streams, LAN → client", &["-R", "-P", "4"]),
    (
        "udp64",
        "UDP 64 B, client → LAN",
        &["-u", "-b", "0", "-l", "64"],
    ),
];

const SYSTEMS: [&str; 2] = ["swiftgate", "wireguard-go"];

fn gateway_config(gw: &Keys, client: &Keys, workers: usize) -> String {
    format!(
        r#"
[interface]
overlay = "sg0"
addresses = ["100.64.0.1/16"]
lan = ["lan0"]
private_key = "{}"
listen_port = 51820
mtu = {MTU}
workers = {workers}
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

/// CPU seconds per GB of TCP payload of the gateway's user-space stages, on this host now:
/// what the cipher alone costs (ring, boringtun's cipher, on full-sized packets, copied first
/// as boringtun does) and what our offload code costs (splitting a 64 KiB TSO super-packet read
/// from the TUN into full-sized segments with checksums; coalescing a run of decrypted segments
/// into one GSO write). No I/O: the rest of the gateway's CPU time is the kernel's (system
/// calls, TUN, UDP, forwarding, scheduling) and boringtun's per-packet bookkeeping.
#[derive(Clone, Copy)]
struct Stages {
    open: f64,
    seal: f64,
    split: f64,
    coalesce: f64,
}

/// Median CPU seconds per GB of `f`, which handles `bytes` of payload per call: five samples
/// of 300 ms.
fn per_gb(bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let (start, mut n) = (Instant::now(), 0u64);
        while start.elapsed() < Duration::from_millis(300) {
            for _ in 0..100 {
                f();
            }
            n += 100;
        }
        samples.push(start.elapsed().as_secs_f64() / n as f64 / bytes as f64 * 1e9);
    }
    median(&mut samples)
}

/// A TCP/IPv4 packet with a 32-byte TCP header, `payload` bytes of data and right checksums.
fn tcp_packet(payload: usize) -> Vec<u8> {
    let mut p = vec![0u8; 52 + payload];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((52 + payload) as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[192, 0, 2, 10]);
    p[16..20].copy_from_slice(&[100, 64, 0, 2]);
    p[20..22].copy_from_slice(&5201u16.to_be_bytes());
    p[22..24].copy_from_slice(&40000u16.to_be_bytes());
    p[32] = 8 << 4;
    p[33] = 0x10;
    for (i, b) in p[52..].iter_mut().enumerate() {
        *b = (i * 13) as u8;
    }
    p
}

fn stage_costs() -> Stages {
    use swiftgate::wg::offload::{self, F_NEEDS_CSUM, GSO_TCPV4, VnetHdr};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7; 32]).expect("key"));
    let nonce = || Nonce::assume_unique_for_key([0; 12]);
    let mut sealed = vec![0x5a; MTU];
    let tag = key
        .seal_in_place_separate_tag(nonce(), Aad::empty(), &mut sealed)
        .expect("seal");
    sealed.extend_from_slice(tag.as_ref());
    let mut buf = vec![0; sealed.len()];
    let open = per_gb(TCP_PAYLOAD, || {
        buf.copy_from_slice(&sealed);
        key.open_in_place(nonce(), Aad::empty(), &mut buf)
            .expect("open");
    });
    let plain = vec![0x5a; MTU];
    let mut buf = vec![0; MTU];
    let seal = per_gb(TCP_PAYLOAD, || {
        buf.copy_from_slice(&plain);
        let tag = key
            .seal_in_place_separate_tag(nonce(), Aad::empty(), &mut buf)
            .expect("seal");
        let _ = std::hint::black_box(tag);
    });
    // What the kernel hands over for a 64 KiB TSO write: 47 full-sized segments.
    let segments = 47;
    let mut sup = tcp_packet(segments * TCP_PAYLOAD);
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 52,
        gso_size: TCP_PAYLOAD as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    let head: Vec<u8> = sup[..52].to_vec();
    let mut segs: Vec<Vec<u8>> = Vec::new();
    offload::split(&h, &mut sup.clone(), |s| segs.push(s.to_vec())).expect("split");
    assert_eq!(
        segs.len(),
        segments,
        "the super-packet splits into full-sized segments"
    );
    let split = per_gb(segments * TCP_PAYLOAD, || {
        // split rewrites headers in place: restore the first one (the payload bytes it
        // overwrote at segment boundaries do not change the work done).
        sup[..52].copy_from_slice(&head);
        offload::split(&h, &mut sup, |s| {
            std::hint::black_box(s);
        })
        .expect("split");
    });
    let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
    let coalesce = per_gb(segments * TCP_PAYLOAD, || {
        for w in offload::coalesce(&refs, false) {
            std::hint::black_box((w.hdr().encode(), w.parts()));
        }
    });
    Stages {
        open,
        seal,
        split,
        coalesce,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// What the gateway's I/O alone costs, client → LAN, in the same topology: a relay in the
/// gateway namespace receives full-sized datagrams with UDP GRO (as the gateway's workers do),
/// takes the IP packet out of each (no cipher: the datagrams carry plaintext), coalesces them
/// into GSO writes to a TUN (the same offload code) and the kernel forwards them to the LAN,
/// which drops them in its input hook. A sender in the client namespace blasts UDP GSO
/// batches. CPU seconds per GB of TCP payload of the relay thread.
struct IoFloor {
    /// Sent at a set rate (`false`: as fast as the sender can).
    paced: bool,
    gbit: f64,
    cpu_per_gb: f64,
}

/// A full-sized TCP/IPv4 packet of the relay's flow (client → LAN server), with a valid IPv4
/// header checksum (the kernel checks it when forwarding; it does not check TCP's).
fn floor_packet(seq: u32) -> Vec<u8> {
    let mut p = tcp_packet(TCP_PAYLOAD);
    p[12..16].copy_from_slice(&[100, 64, 0, 2]);
    p[16..20].copy_from_slice(&[192, 0, 2, 10]);
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    let c = !swiftgate::wg::offload::fold(swiftgate::wg::offload::sum16(&p[..20], 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn io_floor(secs: u64, gbit: Option<f64>) -> IoFloor {
    use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
    use std::io::IoSliceMut;
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::atomic::{AtomicBool, Ordering};
    use swiftgate::wg::{offload, tun};

    const PORT: u16 = 51821;
    const TUN: &str = "sgfloor0";
    const SEGMENTS: usize = 44;
    let (lab, client, gw, lan) = topology();
    let drop_rules = lab.dir.join("floor.nft");
    std::fs::write(
        &drop_rules,
        "table inet floor {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 9 drop\n  }\n}\n",
    )
    .unwrap();
    sh(
        Some(lab.n(lan)),
        &["nft", "-f", drop_rules.to_str().unwrap()],
    );
    lab.n(gw)
        .sysctl("net/ipv4/conf/all/rp_filter", "0")
        .expect("rp_filter");
    let stop = AtomicBool::new(false);
    let ready = AtomicBool::new(false);
    // The datagrams: a 16-byte stand-in for WireGuard's header, the packet, a 16-byte tag.
    let mut batch = Vec::new();
    for i in 0..SEGMENTS {
        batch.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        batch.extend_from_slice(&floor_packet(1 + (i * TCP_PAYLOAD) as u32));
        batch.extend_from_slice(&[0; 16]);
    }
    let seg = MTU + 32;
    let (cpu, bytes, elapsed) = std::thread::scope(|s| {
        let relay = s.spawn(|| {
            lab.n(gw)
                .run(|| {
                    let addr: ipnet::IpNet = "100.64.0.1/16".parse().unwrap();
                    let queues = tun::create(TUN, 1, MTU as u16, &[addr]).expect("floor TUN");
                    let sock = UdpSocket::bind(("203.0.113.1", PORT)).expect("relay socket");
                    sock.set_nonblocking(true).unwrap();
                    // The gateway's socket buffers.
                    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(8 << 20);
                    let state = UdpSocketState::new((&sock).into()).expect("UDP state");
                    let mut bufs: Vec<Vec<u8>> = (0..quinn_udp::BATCH_SIZE)
                        .map(|_| vec![0u8; 65_535])
                        .collect();
                    ready.store(true, Ordering::Release);
                    let (mut bytes, mut started) = (0f64, None);
                    let mut cpu0 = 0.0;
                    while !stop.load(Ordering::Relaxed) {
                        let mut fds = [nix::poll::PollFd::new(
                            std::os::fd::AsFd::as_fd(&sock),
                            nix::poll::PollFlags::POLLIN,
                        )];
                        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
                        let mut meta = [RecvMeta::default(); quinn_udp::BATCH_SIZE];
                        let mut slices: Vec<IoSliceMut<'_>> =
                            bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                        let Ok(n) = state.recv((&sock).into(), &mut slices, &mut meta) else {
                            continue;
                        };
                        if started.is_none() {
                            started = Some(Instant::now());
                            cpu0 = thread_cpu_seconds();
                        }
                        for (m, b) in meta.iter().zip(bufs.iter()).take(n) {
                            let stride = if m.stride == 0 { m.len } else { m.stride };
                            let packets: Vec<&[u8]> = b[..m.len]
                                .chunks(stride)
                                .filter(|d| d.len() > 32)
                                .map(|d| &d[16..d.len() - 16])
                                .collect();
                            for w in offload::coalesce(&packets, queues[0].uso()) {
                                let parts = w.parts();
                                if queues[0].write(&w.hdr().encode(), &parts).is_ok() {
                                    // TCP payload: all but the one 52-byte header.
                                    let len: usize = parts.iter().map(|p| p.len()).sum();
                                    bytes += len.saturating_sub(52) as f64;
                                }
                            }
                        }
                    }
                    let cpu = thread_cpu_seconds() - cpu0;
                    let elapsed = started.map_or(0.0, |t| t.elapsed().as_secs_f64());
                    drop(queues);
                    let _ = tun::remove(TUN);
                    (cpu, bytes, elapsed)
                })
                .expect("relay")
        });
        s.spawn(|| {
            lab.n(client)
                .run(|| {
                    while !ready.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let sock = UdpSocket::bind("203.0.113.2:0").expect("sender socket");
                    let state = UdpSocketState::new((&sock).into()).expect("UDP state");
                    let dest: SocketAddr = format!("203.0.113.1:{PORT}").parse().unwrap();
                    let t = Transmit {
                        destination: dest,
                        ecn: None,
                        contents: &batch,
                        segment_size: Some(seg),
                        src_ip: None,
                    };
                    let start = Instant::now();
                    let end = start + Duration::from_secs(secs);
                    // Paced: one batch whenever the payload sent so far is behind the rate.
                    let per_batch = (SEGMENTS * TCP_PAYLOAD) as f64 * 8.0;
                    let mut sent = 0f64;
                    while Instant::now() < end {
                        if let Some(g) = gbit {
                            let due = start.elapsed().as_secs_f64() * g * 1e9;
                            if sent > due {
                                std::thread::sleep(Duration::from_micros(20));
                                continue;
                            }
                        }
                        if state.try_send((&sock).into(), &t).is_ok() {
                            sent += per_batch;
                        }
                    }
                })
                .expect("sender");
            stop.store(true, Ordering::Relaxed);
        });
        relay.join().expect("relay thread")
    });
    drop(lab);
    if bytes == 0.0 {
        eprintln!("I/O floor: the relay wrote nothing to its TUN");
        return IoFloor {
            paced: gbit.is_some(),
            gbit: 0.0,
            cpu_per_gb: f64::NAN,
        };
    }
    IoFloor {
        paced: gbit.is_some(),
        gbit: bytes * 8.0 / elapsed.max(1e-9) / 1e9,
        cpu_per_gb: cpu / (bytes / 1e9).max(1e-12),
    }
}

struct Run {
    round: usize,
    system: &'static str,
    case: &'static str,
    gbit: f64,
    pps: f64,
    bytes: f64,
    gw_cpu: f64,
    softirq: f64,
}

impl Run {
    fn cpu_per_gb(&self) -> f64 {
        if self.bytes > 0.0 {
            self.gw_cpu / (self.bytes / 1e9)
        } else {
            f64::NAN
        }
    }
}

struct Ctx<'a> {
    lab: &'a Lab,
    client: usize,
    gw_pid: u32,
    secs: u64,
    round: usize,
    system: &'static str,
}

fn iperf(ctx: &Ctx<'_>, case: &'static str, args: &[&str]) -> Run {
    let cpu0 = proc_cpu_seconds(ctx.gw_pid);
    let si0 = softirq_seconds();
    let secs_s = ctx.secs.to_string();
    let mut full = vec!["iperf3", "-c", SERVER, "-t", &secs_s, "-J"];
    full.extend_from_slice(args);
    let ns_path = ctx.lab.n(ctx.client).path();
    let out = swiftgate_testkit::run_timeout(
        Command::new(full[0]).args(&full[1..]),
        Some(&ns_path),
        Duration::from_secs(ctx.secs + 20),
    )
    .expect("iperf3");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let end = &v["end"];
    let secs = ctx.secs as f64;
    let (bps, bytes, pps) = if args.contains(&"-u") {
        let s = &end["sum"];
        let bytes = s["bytes"].as_f64().unwrap_or(0.0)
            * (1.0 - s["lost_percent"].as_f64().unwrap_or(0.0) / 100.0);
        let pkts = s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0);
        (bytes * 8.0 / secs, bytes, pkts / secs)
    } else {
        // The receiving side's count, whichever way the data went (`-R` reverses it).
        let s = &end["sum_received"];
        (
            s["bits_per_second"].as_f64().unwrap_or(0.0),
            s["bytes"].as_f64().unwrap_or(0.0),
            0.0,
        )
    };
    if bytes == 0.0 {
        eprintln!(
            "{} {case}: iperf3 moved nothing: {}{}",
            ctx.system,
            out.stderr,
            &out.stdout[..out.stdout.len().min(400)]
        );
    }
    Run {
        round: ctx.round,
        system: ctx.system,
        case,
        gbit: bps / 1e9,
        pps,
        bytes,
        gw_cpu: proc_cpu_seconds(ctx.gw_pid) - cpu0,
        softirq: softirq_seconds() - si0,
    }
}

fn topology() -> (Lab, usize, usize, usize) {
    let mut lab = Lab::new();
    let (client, gw, lan) = lab.routing_topology();
    lab.n(gw)
        .sysctl("net/ipv4/ip_forward", "1")
        .expect("forwarding");
    (lab, client, gw, lan)
}

/// Starts the gateway of `system`, returns its process id.
fn start_gateway(lab: &mut Lab, gw: usize, system: &str, k: &BenchKeys, workers: usize) -> u32 {
    if system == "swiftgate" {
        lab.swiftgate(gw, &gateway_config(&k.gw, &k.client, workers));
        return lab.agents[0].0.pid().as_raw() as u32;
    }
    let wgif = format!("{}b", lab.id);
    lab.stock_wg(
        gw,
        &wgif,
        &k.gw,
        &["100.64.0.1/16"],
        &[
            "listen-port",
            "51820",
            "peer",
            &k.client.public,
            "allowed-ips",
            "100.64.0.2/32",
        ],
    );
    sh(
        Some(lab.n(gw)),
        &["ip", "link", "set", &wgif, "mtu", &MTU.to_string()],
    );
    let rules = lab.dir.join("rules.nft");
    std::fs::write(&rules, NFT_RULES.replace("WGIF", &wgif)).unwrap();
    sh(Some(lab.n(gw)), &["nft", "-f", rules.to_str().unwrap()]);
    lab.stock_pid(0)
}

struct BenchKeys {
    client: Keys,
    gw: Keys,
}

struct Options {
    secs: u64,
    rounds: usize,
    cases: Vec<(&'static str, &'static str, &'static [&'static str])>,
    systems: Vec<&'static str>,
    workers: usize,
    floor_rate: Option<f64>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |name: &str, default: u64| match value(name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}: `{v}` is not a number");
            std::process::exit(2)
        }),
    };
    let list = |name: &str, known: &[&'static str]| -> Vec<&'static str> {
        let Some(v) = value(name) else {
            return known.to_vec();
        };
        v.split(',')
            .map(|item| {
                *known.iter().find(|k| **k == item).unwrap_or_else(|| {
                    eprintln!("{name}: `{item}` is none of {}", known.join(", "));
                    std::process::exit(2)
                })
            })
            .collect()
    };
    let keys: Vec<&'static str> = CASES.iter().map(|c| c.0).collect();
    let chosen = list("--runs", &keys);
    Options {
        secs: number("--seconds", 10).max(1),
        rounds: number("--rounds", 1).max(1) as usize,
        cases: CASES
            .iter()
            .filter(|c| chosen.contains(&c.0))
            .copied()
            .collect(),
        systems: list("--systems", &SYSTEMS),
        workers: number("--workers", 0) as usize,
        floor_rate: value("--floor-gbit").map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("--floor-gbit: `{v}` is not a number");
                std::process::exit(2)
            })
        }),
    }
}

fn label(case: &str) -> &'static str {
    CASES.iter().find(|c| c.0 == case).map_or("?", |c| c.1)
}

fn main() {
    if std::env::args().any(|a| a == "--only-stages") {
        let s = stage_costs();
        println!(
            "CPU-s per GB of TCP payload: open {:.3}, seal {:.3}, split {:.3}, coalesce {:.3}",
            s.open, s.seal, s.split, s.coalesce
        );
        return;
    }
    swiftgate_testkit::require_root();
    let opt = options();
    let k = BenchKeys {
        client: keys(),
        gw: keys(),
    };
    let mut stages = vec![stage_costs()];
    let mut results = Vec::new();
    let mut floors = Vec::new();
    for round in 1..=opt.rounds {
        for &system in &opt.systems {
            let (mut lab, client, gw, lan) = topology();
            let mut srv = lab
                .n(lan)
                .spawn(
                    Command::new("iperf3")
                        .args(["-s", "-B", SERVER])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                )
                .expect("iperf3 -s");
            let gw_pid = start_gateway(&mut lab, gw, system, &k, opt.workers);
            lab.swiftgate(client, &client_config(&k.client, &k.gw, MTU as u16));
            wait_for("the tunnel", Duration::from_secs(10), || {
                lab.n(client)
                    .output(Command::new("ping").args(["-c1", "-W1", SERVER]))
                    .map(|o| o.success())
                    .unwrap_or(false)
            });
            let ctx = Ctx {
                lab: &lab,
                client,
                gw_pid,
                secs: opt.secs,
                round,
                system,
            };
            for (case, _, args) in &opt.cases {
                let r = iperf(&ctx, case, args);
                eprintln!(
                    "round {round} {system} {case}: {:.2} Gbit/s, {:.2} CPU-s/GB",
                    r.gbit,
                    r.cpu_per_gb()
                );
                results.push(r);
            }
            if system != "swiftgate" {
                let counters = sh(
                    Some(lab.n(gw)),
                    &["nft", "list", "chain", "inet", "swiftgate_bench", "forward"],
                );
                eprintln!("nftables forward chain after the runs:\n{counters}");
            }
            let _ = srv.kill();
            let _ = srv.wait();
        }
        // The I/O floor at this round's swiftgate client → LAN rate (or `--floor-gbit`), and
        // unpaced.
        let rate = opt.floor_rate.or_else(|| {
            results
                .iter()
                .rev()
                .find(|r| r.round == round && r.system == "swiftgate" && r.case == "up1")
                .map(|r| r.gbit)
        });
        if opt.systems.contains(&"swiftgate") {
            for gbit in [rate, None] {
                let f = io_floor(opt.secs, gbit);
                eprintln!(
                    "round {round} I/O floor ({}): {:.2} Gbit/s, {:.2} CPU-s/GB",
                    if gbit.is_some() { "paced" } else { "unpaced" },
                    f.gbit,
                    f.cpu_per_gb
                );
                floors.push(f);
            }
        }
        stages.push(stage_costs());
    }
    report(&opt, &results, &stages, &floors);
}

fn report(opt: &Options, results: &[Run], stages: &[Stages], floors: &[IoFloor]) {
    println!(
        "\n| round | gateway | run | throughput | packets/s | gateway process CPU-s/GB | softirq CPU-s/GB (all) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in results {
        let gb = r.bytes / 1e9;
        println!(
            "| {} | {} | {} | {:.2} Gbit/s | {} | {:.2} | {:.2} |",
            r.round,
            r.system,
            label(r.case),
            r.gbit,
            if r.pps > 0.0 {
                format!("{:.0}", r.pps)
            } else {
                "-".into()
            },
            r.cpu_per_gb(),
            if gb > 0.0 { r.softirq / gb } else { f64::NAN },
        );
    }
    let stage = |f: fn(&Stages) -> f64| {
        let mut v: Vec<f64> = stages.iter().map(f).collect();
        median(&mut v)
    };
    let st = Stages {
        open: stage(|s| s.open),
        seal: stage(|s| s.seal),
        split: stage(|s| s.split),
        coalesce: stage(|s| s.coalesce),
    };
    let med = |system: &str, case: &str, f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|r| r.system == system && r.case == case)
            .map(f)
            .collect();
        median(&mut v)
    };
    let rate = |r: &Run| if r.pps > 0.0 { r.pps } else { r.gbit };
    println!(
        "\nMedians of {} round(s), {} s per run.\n\nUser-space stages alone on this host, CPU-s per GB \
         of TCP payload ({MTU}-byte packets; medians of the {} measurements before and after \
         every round): ChaCha20-Poly1305 open {:.3}, seal {:.3} (ring); splitting TSO \
         super-packets {:.3}; coalescing into GSO writes {:.3}.\n",
        opt.rounds,
        opt.secs,
        stages.len(),
        st.open,
        st.seal,
        st.split,
        st.coalesce,
    );
    let both = opt.systems.len() == 2;
    print!("| run |");
    for s in &opt.systems {
        print!(" {s} | {s} CPU-s/GB |");
    }
    if both {
        print!(" ratio (throughput) | ratio (CPU-s/GB) |");
    }
    println!();
    println!(
        "|---|{}",
        "---|".repeat(2 * opt.systems.len() + 2 * usize::from(both))
    );
    for (case, name, args) in &opt.cases {
        let udp = args.contains(&"-u");
        print!("| {name} |");
        for s in &opt.systems {
            let x = med(s, case, rate);
            if udp {
                print!(" {x:.0} pkt/s |");
            } else {
                print!(" {x:.2} Gbit/s |");
            }
            print!(" {:.2} |", med(s, case, Run::cpu_per_gb));
        }
        if both {
            let (a, b) = (SYSTEMS[0], SYSTEMS[1]);
            print!(
                " {:.2}x | {:.2}x |",
                med(a, case, rate) / med(b, case, rate),
                med(b, case, Run::cpu_per_gb) / med(a, case, Run::cpu_per_gb)
            );
        }
        println!();
    }
    if opt.systems.contains(&"swiftgate") {
        println!(
            "\nWhere the swiftgate gateway's CPU time goes, CPU-s per GB (the stages above, the rest \
             by difference):\n\n| run | gateway process | cipher | offload code | the rest: kernel \
             (system calls, TUN, UDP, forwarding, eBPF), scheduling, boringtun's bookkeeping |\n\
             |---|---|---|---|---|"
        );
        for (case, name, args) in &opt.cases {
            if args.contains(&"-u") {
                continue;
            }
            let total = med("swiftgate", case, Run::cpu_per_gb);
            // Client -> LAN: the gateway decrypts and coalesces; LAN -> client: it splits and
            // encrypts.
            let (cipher, offload) = if args.contains(&"-R") {
                (st.seal, st.split)
            } else {
                (st.open, st.coalesce)
            };
            println!(
                "| {name} | {total:.2} | {cipher:.2} | {offload:.2} | {:.2} |",
                total - cipher - offload
            );
        }
        let floor = |paced: bool| {
            let mut cpu: Vec<f64> = floors
                .iter()
                .filter(|f| f.paced == paced)
                .map(|f| f.cpu_per_gb)
                .collect();
            let mut gbit: Vec<f64> = floors
                .iter()
                .filter(|f| f.paced == paced)
                .map(|f| f.gbit)
                .collect();
            (median(&mut gbit), median(&mut cpu), cpu.len())
        };
        let (paced_gbit, paced_cpu, paced_n) = floor(true);
        let (max_gbit, max_cpu, max_n) = floor(false);
        if paced_n + max_n > 0 {
            println!(
                "\nI/O floor, client → LAN: a relay in the gateway's namespace with the gateway's \
                 UDP GRO receive, offload code and TUN GSO writes, the kernel forwarding to the \
                 LAN (which drops the packets), no cipher and no WireGuard; CPU-s per GB of TCP \
                 payload of the relay thread, medians:\n\n| sender | throughput | CPU-s/GB | with the \
                 cipher alone (open, {:.2}) |\n|---|---|---|---|",
                st.open
            );
            if paced_n > 0 {
                println!(
                    "| paced at the swiftgate gateway's client → LAN rate ({paced_n} runs) | \
                     {paced_gbit:.2} Gbit/s | {paced_cpu:.2} | {:.2} |",
                    paced_cpu + st.open
                );
            }
            if max_n > 0 {
                println!(
                    "| as fast as it can ({max_n} runs) | {max_gbit:.2} Gbit/s | {max_cpu:.2} | {:.2} |",
                    max_cpu + st.open
                );
            }
        }
    }
    println!(
        "\nratio (throughput): swiftgate / wireguard-go+nftables; ratio (CPU-s/GB): how many times \
         more CPU wireguard-go+nftables spends per GB.\n\nreproduce: cargo run --release -p swiftgate \
         --example wg_bench -- --seconds {} --rounds {}{}",
        opt.secs,
        opt.rounds,
        if opt.workers > 0 {
            format!(" --workers {}", opt.workers)
        } else {
            String::new()
        }
    );
}
