//! swiftgate benchmark (a benchmark, not a test). Needs root, BPF and network namespaces.
//!
//! ```text
//! cargo run --release -p swiftgate --example bench -- [--quick]
//! ```
//!
//! Part 1 times `sg_overlay_ingress_l2` per packet through `BPF_PROG_TEST_RUN` (the kernel lab
//! of `swiftgate-testkit`) on the new-flow, established and deny paths, with 1, 1,000 and 100,000
//! generated rules and again with 1,000,000 conntrack entries present.
//!
//! Part 2 forwards UDP from an overlay namespace through a routing-peer namespace to a LAN
//! namespace, in the same run with swiftgate and with Linux forwarding plus the nftables rule
//! set a NetBird routing peer would install, and compares packets per second; two references
//! (Linux forwarding without rules, a TC program that only redirects) show what the setup
//! itself allows. The generator is `sg_bench_tx` (ebpf/src/bench.rs) run with `BPF_PROG_RUN`
//! in XDP live-frames mode; the sink drops with XDP. Each run checks that the packets took the
//! measured path (the path's own counters and the kernel's IP forwarding counter against the
//! packets leaving the LAN interface) and records how much CPU other processes used.
//!
//! Only namespaces created here carry traffic; addresses are 100.64.0.0/10 and TEST-NET. All
//! namespaces, links and pins are removed on exit, also on failure (RAII guards).
//!
//! docs/benchmarks.md explains the method and its caveats and holds the results of a run.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use aya::{
    Ebpf,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues, ProgramArray, RingBuf,
    },
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, TestRun, TestRunAttrs, TestRunOptions, Xdp,
        XdpMode, tc::SchedClassifierLink, tc::TcAttachOptions,
    },
};
use clap::Parser;
use swiftgate::{
    config::{
        AgentConfig, FileConfig, FlowEvents, InterfaceConfig, NetworkConfig, PeerConfig,
        PolicyConfig, ResourceConfig,
    },
    dataplane::{self, State},
    run,
};
use swiftgate_common::{
    Counter, CtEntry, FlowKey, FlowKey4, PolicyKey, PolicyValue, config_flags, maps, programs,
};
use swiftgate_testkit::kernel::{
    Lab, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_REDIRECT,
    pkt::{self, Tcp},
};

/// The packet generator (XDP, returns `XDP_TX`), built from ebpf/src/bench.rs by agent/build.rs.
static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/swiftgate-bench"));

/// The command that reproduces a run (printed with the results).
const COMMAND: &str = "cargo run --release -p swiftgate --example bench --";

#[derive(Parser, Debug)]
#[command(about = "swiftgate benchmark: per-packet cost and forwarding rate (needs root)")]
struct Args {
    /// Short run (smaller repeat counts, 100,000 instead of 1,000,000 conntrack entries, one
    /// 2-second round per forwarding measurement). For checking that the benchmark works, not
    /// for numbers.
    #[arg(long)]
    quick: bool,
    /// Only part 1 (BPF_PROG_TEST_RUN).
    #[arg(long, conflicts_with = "only_forwarding")]
    only_micro: bool,
    /// Only part 2 (namespace forwarding).
    #[arg(long)]
    only_forwarding: bool,
    /// Run the generator and the forwarding on the same CPU (no RPS, no pinning).
    #[arg(long)]
    same_cpu: bool,
    /// Forwarding paths of part 2 (repeatable; default: all four).
    #[arg(long = "system", value_enum)]
    systems: Vec<System>,
}

/// Sizes of a run.
#[derive(Debug, Clone)]
struct Params {
    /// `repeat` of the repeat-based measurements.
    repeat: u32,
    /// Calls of `repeat` runs each (the median is reported).
    calls: usize,
    /// Distinct packets of the repeat=1 measurements.
    samples: usize,
    /// Conntrack entries for the "1M conntrack" column.
    fill: usize,
    /// Rule counts of the columns.
    rule_counts: Vec<usize>,
    /// Forwarding measurement window.
    window: Duration,
    /// Traffic before the window starts.
    warmup: Duration,
    /// Rounds per forwarding configuration (the median is reported).
    rounds: usize,
}

impl Params {
    fn new(quick: bool) -> Params {
        if quick {
            Params {
                repeat: 100_000,
                calls: 3,
                samples: 2_000,
                fill: 100_000,
                rule_counts: vec![1, 1_000, 100_000],
                window: Duration::from_secs(2),
                warmup: Duration::from_millis(500),
                rounds: 1,
            }
        } else {
            Params {
                repeat: 1_000_000,
                calls: 5,
                samples: 20_000,
                fill: 1_000_000,
                rule_counts: vec![1, 1_000, 100_000],
                window: Duration::from_secs(5),
                warmup: Duration::from_secs(1),
                rounds: 5,
            }
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the benchmark needs root (BPF, network namespaces); run it with sudo"
    );
    let p = Params::new(args.quick);
    let mut out = String::new();
    writeln!(out, "# swiftgate benchmark results\n")?;
    writeln!(
        out,
        "Command: `{COMMAND}{}`{}\n",
        if args.quick { " --quick" } else { "" },
        if args.quick {
            " (quick mode: smoke numbers only)"
        } else {
            ""
        }
    )?;
    writeln!(out, "{}\n", machine()?)?;
    writeln!(out, "Source: {}\n", source_revision())?;
    let background = background_load()?;
    writeln!(
        out,
        "CPU busy in the second before the benchmark: {}.{}\n",
        percent(&background),
        if background.iter().any(|b| *b > 0.1) {
            " **Warning: the machine was not idle; the numbers are disturbed.**"
        } else {
            ""
        }
    )?;
    print!("{out}");

    if !args.only_forwarding {
        let s = micro_benchmarks(&p)?;
        print!("{s}");
        out.push_str(&s);
    }
    if !args.only_micro {
        let systems = if args.systems.is_empty() {
            System::ALL.to_vec()
        } else {
            args.systems.clone()
        };
        let s = forwarding_benchmark(&p, args.same_cpu, &systems)?;
        print!("{s}");
        out.push_str(&s);
    }
    Ok(())
}

/// The git revision the benchmark was built from (with `-dirty` for local changes), as far as
/// git can tell at run time.
fn source_revision() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    Command::new("git")
        .args(["-C", root, "describe", "--always", "--dirty", "--abbrev=12"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| format!("commit {}", String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| "unknown (git not available)".into())
}

/// CPU model, core count and kernel.
fn machine() -> Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let uts = nix::sys::utsname::uname().context("uname")?;
    Ok(format!(
        "Machine: {cpus} CPUs ({model}), kernel {} {}",
        uts.release().to_string_lossy(),
        uts.machine().to_string_lossy()
    ))
}

// ------------------------------------------------------------------------------------------
// Part 1: BPF_PROG_TEST_RUN
// ------------------------------------------------------------------------------------------

/// Port of rules that exist for no flow (the deny path's packets).
const NO_RULE_PORT: u16 = 999;
/// The masquerade-off resource (on the lab's `lan2`) and its port.
const PLAIN_IP: &str = "198.51.100.10";
const PLAIN_PORT: u16 = 5001;
/// First rule port; rule ports are `RULE_PORT_BASE + p`.
const RULE_PORT_BASE: u16 = 1000;
/// First source port of the repeat=1 sample flows (fill flows use 1024..=2023).
const SAMPLE_SPORT_BASE: u16 = 20_000;

/// How `n` generated rules are spread: rule `i` gives source group `src-(i % s)` (one peer
/// each) access to resource `dst-((i / s) % d)` on TCP port `1000 + i / (s * d)`. Every rule
/// is a distinct (source, resource, port), so the policy map holds one entry per rule.
#[derive(Debug, Clone, Copy)]
struct Shape {
    n: usize,
    s: usize,
    d: usize,
    p: usize,
}

impl Shape {
    fn new(n: usize) -> Shape {
        let s = n.clamp(1, 100);
        let d = n.div_ceil(s).clamp(1, 100);
        let p = n.div_ceil(s * d);
        Shape { n, s, d, p }
    }

    /// (source peer, resource, port) of rule `i`.
    fn rule(&self, i: usize) -> (usize, usize, u16) {
        (
            i % self.s,
            (i / self.s) % self.d,
            RULE_PORT_BASE + (i / (self.s * self.d)) as u16,
        )
    }

    /// Whether every (source, resource, port) combination has a rule (needed by the fill).
    fn complete(&self) -> bool {
        self.n == self.s * self.d * self.p
    }
}

fn peer_ip(s: usize) -> String {
    format!("100.64.1.{}", s + 1)
}

fn resource_ip(d: usize) -> String {
    format!("192.0.2.{}", d + 10)
}

/// Destination network of the repeat-based new-flow measurement (a masquerading resource;
/// `sg_bench_new_flow` sets the last byte of the address per run).
const NEW_FLOW_NET: &str = "203.0.113.0";

/// The lab configuration with `shape.n` generated rules, plus one rule from peer 0 to the
/// masquerade-off resource [`PLAIN_IP`] (the repeat-based established measurement needs a
/// flow whose packets the program does not rewrite) and one from the last rule's source to
/// the masquerading resource [`NEW_FLOW_NET`]/24 on the last rule's port (the repeat-based
/// new-flow measurement needs a new destination every 64,512 flows).
/// The benchmark's configuration; the overlay is the lab's veth `ovl` (Ethernet), or its TUN
/// `tun0` when `tun_overlay`.
fn bench_config(pin: &Path, shape: &Shape, ct_capacity: u32, tun_overlay: bool) -> AgentConfig {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let peers = (0..shape.s)
        .map(|s| PeerConfig {
            name: format!("peer-{s}"),
            ips: vec![peer_ip(s)],
            groups: vec![format!("src-{s}")],
            ..Default::default()
        })
        .collect();
    let networks = vec![
        NetworkConfig {
            name: "office".into(),
            masquerade: true,
            resources: (0..shape.d)
                .map(|d| ResourceConfig {
                    name: format!("res-{d}"),
                    address: resource_ip(d),
                    groups: vec![format!("dst-{d}")],
                })
                .collect(),
        },
        NetworkConfig {
            name: "new-flows".into(),
            masquerade: true,
            resources: vec![ResourceConfig {
                name: "new-flows".into(),
                address: format!("{NEW_FLOW_NET}/24"),
                groups: strings(&["new-flow-dst"]),
            }],
        },
        NetworkConfig {
            name: "plain".into(),
            masquerade: false,
            resources: vec![ResourceConfig {
                name: "plain".into(),
                address: PLAIN_IP.into(),
                groups: strings(&["plain-dst"]),
            }],
        },
    ];
    let rule = |name: String, s: usize, dst: String, port: u16| PolicyConfig {
        name,
        sources: vec![format!("src-{s}")],
        destinations: vec![dst],
        protocol: "tcp".into(),
        ports: vec![port.to_string()],
        action: "accept".into(),
        enabled: true,
        bidirectional: false,
    };
    let mut policies: Vec<PolicyConfig> = (0..shape.n)
        .map(|i| {
            let (s, d, port) = shape.rule(i);
            rule(format!("rule-{i}"), s, format!("dst-{d}"), port)
        })
        .collect();
    policies.push(rule("plain".into(), 0, "plain-dst".into(), PLAIN_PORT));
    let (s, _, port) = shape.rule(shape.n - 1);
    policies.push(rule("new-flows".into(), s, "new-flow-dst".into(), port));
    let file = FileConfig {
        interface: InterfaceConfig {
            overlay: if tun_overlay { "tun0" } else { "ovl" }.into(),
            overlay_l2: !tun_overlay,
            addresses: strings(&["100.64.0.1/16"]),
            lan: strings(&["lan", "lan2"]),
            mtu: Some(1280),
            pin_path: Some(pin.to_path_buf()),
            conntrack_capacity: Some(ct_capacity),
            nat_ports: None,
            flow_events: Some("none".into()),
            ..Default::default()
        },
        peers,
        networks,
        policies,
    };
    AgentConfig::validate(&file).expect("the generated benchmark configuration is valid")
}

/// Distribution of per-run durations (ns).
#[derive(Debug, Clone, Copy, Default)]
struct Dist {
    n: usize,
    p50: u64,
    p90: u64,
    p99: u64,
    mean: f64,
}

impl Dist {
    fn of(mut v: Vec<u64>) -> Dist {
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_unstable();
        let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
        Dist {
            n: v.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            mean: v.iter().sum::<u64>() as f64 / v.len() as f64,
        }
    }
}

/// Results of one column of part 1.
#[derive(Debug, Default)]
struct Micro {
    /// Column heading.
    label: String,
    /// Entries in SG_POLICY (LPM keys).
    policy_entries: usize,
    /// Tracked flows (SG_CT4 + SG_CT6) before the measurements (after the fill).
    ct_entries: usize,
    /// Established, masquerade off, repeat-based: median over calls (ns/packet).
    est_plain: u64,
    /// The reply direction of that flow on the LAN side (`sg_lan_ingress`), repeat-based.
    est_reply: u64,
    /// The same through the XDP stage.
    xdp_plain: u64,
    /// The XDP stage on the same packet with repeat=1 (timer reference for XDP).
    xdp_plain_one: Dist,
    /// Established with masquerade through the XDP stage, repeat=1 per flow.
    xdp_masq: Dist,
    /// Deny, flow_events = none, repeat-based.
    deny: u64,
    /// Deny, flow_events = drops, repeat-based in chunks with the ring drained.
    deny_events: f64,
    /// Deny, repeat=1 per run (timer reference).
    deny_one: Dist,
    /// New flow accepted, repeat=1, distinct flows.
    new_flow: Dist,
    /// New flow accepted, repeat-based through `sg_bench_new_flow`.
    new_flow_rep: Harnessed,
    /// Established with masquerade (SNAT rewrite), repeat-based through
    /// `sg_bench_same_packet`.
    masq_rep: Harnessed,
    /// Its reply on the LAN side (reverse NAT in `sg_lan_ingress`), the same way.
    masq_reply_rep: Harnessed,
    /// Established with masquerade through the XDP stage, through `sg_bench_same_frame`.
    xdp_masq_rep: Harnessed,
    /// Established with masquerade, repeat=1.
    est_masq: Dist,
    /// New flows while filling the conntrack (repeat=1).
    fill: Option<Dist>,
    /// Share of the machine's CPU time other processes used meanwhile.
    others: f64,
}

/// Counter value summed over CPUs.
fn counter(lab: &Lab, c: Counter) -> u64 {
    lab.counter(c)
}

/// Runs `f` and checks that counter `c` grew by exactly `want`.
fn expect_growth<T>(lab: &mut Lab, c: Counter, want: u64, f: impl FnOnce(&mut Lab) -> T) -> T {
    let before = counter(lab, c);
    let r = f(lab);
    let grew = counter(lab, c) - before;
    assert_eq!(
        grew,
        want,
        "counter {} grew by {grew}, expected {want}: the measured path is not the intended one",
        c.name()
    );
    r
}

/// The median of per-call timings (ns); `v` is not empty. (Rates use [`median`].)
fn median_ns(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Repeat-based timing of the overlay program: `calls` calls of `repeat` runs each; median
/// of the per-call means.
fn repeat_median(lab: &mut Lab, pkt: &[u8], want_ret: u32, p: &Params) -> u64 {
    let ovl = lab.ovl;
    repeat_median_of(lab, programs::OVERLAY_INGRESS_L2, ovl, pkt, want_ret, p)
}

/// [`repeat_median`] for program `prog` with the packet arriving on `ifindex`.
fn repeat_median_of(
    lab: &mut Lab,
    prog: &str,
    ifindex: u32,
    pkt: &[u8],
    want_ret: u32,
    p: &Params,
) -> u64 {
    median_ns(
        (0..p.calls)
            .map(|_| {
                let (ret, d) = lab.run_repeat(prog, ifindex, pkt, p.repeat);
                assert_eq!(
                    ret, want_ret,
                    "unexpected verdict of {prog} in a repeat run"
                );
                d.as_nanos() as u64
            })
            .collect(),
    )
}

/// One repeat=1 run; returns the kernel's duration in ns.
fn once(lab: &mut Lab, pkt: &[u8], want_ret: u32) -> u64 {
    let ovl = lab.ovl;
    let (ret, d) = lab.run_repeat(programs::OVERLAY_INGRESS_L2, ovl, pkt, 1);
    assert_eq!(ret, want_ret, "unexpected verdict in a single run");
    d.as_nanos() as u64
}

fn pinned_map(lab: &Lab, name: &str) -> Result<Map> {
    let path = lab.dp.pin_path().join("maps").join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {name}"))
}

fn count_policy_entries(lab: &Lab) -> Result<usize> {
    let m: LpmTrie<MapData, PolicyKey, PolicyValue> =
        LpmTrie::try_from(pinned_map(lab, maps::POLICY)?)?;
    Ok(m.keys().count())
}

/// Tracked flows, both families.
fn count_conntrack(lab: &Lab) -> Result<usize> {
    let v4: HashMap<MapData, FlowKey4, CtEntry> =
        HashMap::try_from(pinned_map(lab, maps::CONNTRACK4)?)?;
    let v6: HashMap<MapData, FlowKey, CtEntry> =
        HashMap::try_from(pinned_map(lab, maps::CONNTRACK6)?)?;
    Ok(v4.keys().count() + v6.keys().count())
}

/// Opens `fill` distinct masqueraded TCP flows through the program (one SYN each, repeat=1)
/// and returns the distribution of their run times. Flow `i` uses rule pair
/// `(resource, port) = i % (d * p)` and a source port unique within that pair, so every flow
/// gets its own source port as masquerade port (no probing).
fn fill_conntrack(lab: &mut Lab, shape: &Shape, fill: usize) -> Dist {
    assert!(
        shape.complete(),
        "the fill needs every (source, resource, port) rule"
    );
    let pairs = shape.d * shape.p;
    assert!(
        fill.div_ceil(pairs) <= 1000,
        "fill too large for the source port plan"
    );
    let mut times = Vec::with_capacity(fill);
    expect_growth(lab, Counter::AcceptNew, fill as u64, |lab| {
        for i in 0..fill {
            let pair = i % pairs;
            let (d, port) = (pair % shape.d, RULE_PORT_BASE + (pair / shape.d) as u16);
            let j = i / pairs;
            let s = j % shape.s;
            let syn = pkt::tcp(
                &peer_ip(s),
                1024 + j as u16,
                &resource_ip(d),
                port,
                Tcp::Syn(1460),
                &[],
            );
            times.push(once(lab, &syn, TC_ACT_REDIRECT));
        }
    });
    Dist::of(times)
}

/// Measures one column of part 1.
fn micro_column(label: String, n: usize, fill: usize, p: &Params) -> Result<Micro> {
    let shape = Shape::new(n);
    // Room for the fill and every new flow of the column without LRU eviction (an LRU map
    // may evict before it is full, hence twice).
    let flows = fill + p.samples + p.repeat as usize + 16;
    let capacity = (2 * flows as u32).next_power_of_two();
    let start = snapshot()?;
    let t = Instant::now();
    let mut lab = Lab::with_config(|pin| bench_config(pin, &shape, capacity, false));
    eprintln!(
        "  [{label}] lab ready in {:.1}s ({} rules)",
        t.elapsed().as_secs_f64(),
        lab.cfg.rules.len()
    );
    let mut m = Micro {
        label,
        policy_entries: count_policy_entries(&lab)?,
        ..Default::default()
    };
    if fill > 0 {
        let t = Instant::now();
        m.fill = Some(fill_conntrack(&mut lab, &shape, fill));
        eprintln!(
            "  [{}] {fill} flows opened in {:.1}s",
            m.label,
            t.elapsed().as_secs_f64()
        );
    }
    m.ct_entries = count_conntrack(&lab)?;
    ensure!(
        m.ct_entries >= fill,
        "conntrack holds {} entries after filling {fill}: entries were evicted",
        m.ct_entries
    );

    // The measured rule: the last generated one.
    let (s, d, port) = shape.rule(n - 1);
    let (src, dst) = (peer_ip(s), resource_ip(d));

    // Established, masquerade off, repeat-based.
    let syn = pkt::tcp(
        &peer_ip(0),
        40_000,
        PLAIN_IP,
        PLAIN_PORT,
        Tcp::Syn(1460),
        &[],
    );
    expect_growth(&mut lab, Counter::AcceptNew, 1, |lab| {
        once(lab, &syn, TC_ACT_REDIRECT)
    });
    let ack = pkt::tcp(&peer_ip(0), 40_000, PLAIN_IP, PLAIN_PORT, Tcp::Ack, b"data");
    let total = p.repeat as u64 * p.calls as u64;
    m.est_plain = expect_growth(&mut lab, Counter::Established, total, |lab| {
        repeat_median(lab, &ack, TC_ACT_REDIRECT, p)
    });
    // Its reply from the LAN (no NAT to undo, so the packet stays the same across runs).
    let reply = pkt::tcp(PLAIN_IP, PLAIN_PORT, &peer_ip(0), 40_000, Tcp::Ack, b"data");
    m.est_reply = expect_growth(&mut lab, Counter::Established, total, |lab| {
        let lan2 = lab.lan2;
        repeat_median_of(lab, programs::LAN_INGRESS, lan2, &reply, TC_ACT_REDIRECT, p)
    });
    // The XDP stage forwards only to resolved neighbours.
    lab.sh(&format!(
        "ip neigh replace {PLAIN_IP} lladdr 02:5b:00:00:01:0a dev lan2 nud permanent"
    ));
    lab.sh(&format!(
        "ip neigh replace {dst} lladdr 02:5b:00:00:01:0b dev lan nud permanent"
    ));
    m.xdp_plain = expect_growth(&mut lab, Counter::Established, total, |lab| {
        median_ns(
            (0..p.calls)
                .map(|_| {
                    let (ret, _, d) = lab.xdp_repeat(&ack, p.repeat);
                    assert_eq!(ret, XDP_REDIRECT, "XDP stage did not forward the packet");
                    d.as_nanos() as u64
                })
                .collect(),
        )
    });
    m.xdp_plain_one = Dist::of(expect_growth(
        &mut lab,
        Counter::Established,
        p.samples as u64,
        |lab| {
            (0..p.samples)
                .map(|_| {
                    let (ret, _, d) = lab.xdp_repeat(&ack, 1);
                    assert_eq!(ret, XDP_REDIRECT, "XDP stage did not forward the packet");
                    d.as_nanos() as u64
                })
                .collect()
        },
    ));

    // Deny (no rule for the port), flow events off.
    let deny = pkt::tcp(&src, 30_000, &dst, NO_RULE_PORT, Tcp::Syn(1460), &[]);
    m.deny = expect_growth(&mut lab, Counter::DropNoPolicy, total, |lab| {
        repeat_median(lab, &deny, TC_ACT_SHOT, p)
    });

    // Deny with a flow event per drop, in chunks the ring buffer holds, drained in between.
    m.deny_events = deny_with_events(&mut lab, &deny, p)?;

    // Deny, repeat=1: what a single run costs in the kernel's timer (reference).
    m.deny_one = Dist::of(
        (0..p.samples)
            .map(|_| once(&mut lab, &deny, TC_ACT_SHOT))
            .collect(),
    );

    // New flows, one distinct SYN per run (masquerade + MSS clamp).
    let sports: Vec<u16> = (0..p.samples)
        .map(|k| SAMPLE_SPORT_BASE + k as u16)
        .collect();
    let syns: Vec<Vec<u8>> = sports
        .iter()
        .map(|sp| pkt::tcp(&src, *sp, &dst, port, Tcp::Syn(1460), &[]))
        .collect();
    m.new_flow = Dist::of(expect_growth(
        &mut lab,
        Counter::AcceptNew,
        p.samples as u64,
        |lab| {
            syns.iter()
                .map(|pk| once(lab, pk, TC_ACT_REDIRECT))
                .collect()
        },
    ));

    // Established with masquerade: a data segment of each of those flows, repeat=1 (the
    // program rewrites the packet, so a repeated run would not see the same input).
    let acks: Vec<Vec<u8>> = sports
        .iter()
        .map(|sp| pkt::tcp(&src, *sp, &dst, port, Tcp::Ack, b"data"))
        .collect();
    m.est_masq = Dist::of(expect_growth(
        &mut lab,
        Counter::Established,
        p.samples as u64,
        |lab| {
            acks.iter()
                .map(|pk| once(lab, pk, TC_ACT_REDIRECT))
                .collect()
        },
    ));
    // The same data segments through the XDP stage (masquerade: source rewrite, repeat=1):
    // one pass fills each flow's cached MAC addresses (a FIB lookup), the second is timed.
    // A segment whose complete checksum happens to equal the pseudo-header seed (about 1 in
    // 65,536) is taken for a checksum-offload frame and left to TC by design; those are not
    // part of this measurement.
    let xdp_acks: Vec<&Vec<u8>> = acks.iter().filter(|a| !checksum_is_seed(a)).collect();
    let n = xdp_acks.len() as u64;
    expect_growth(&mut lab, Counter::Established, n, |lab| {
        for pk in &xdp_acks {
            let (ret, _, _) = lab.xdp_repeat(pk, 1);
            assert_eq!(ret, XDP_REDIRECT, "XDP stage did not forward the packet");
        }
    });
    m.xdp_masq = Dist::of(expect_growth(&mut lab, Counter::Established, n, |lab| {
        xdp_acks
            .iter()
            .map(|pk| {
                let (ret, _, d) = lab.xdp_repeat(pk, 1);
                assert_eq!(ret, XDP_REDIRECT, "XDP stage did not forward the packet");
                d.as_nanos() as u64
            })
            .collect()
    }));
    // The masqueraded paths again, repeat-based through the harness that restores the packet
    // before every run: one of those flows, with a payload long enough for the harness's
    // 62-byte template (and not a checksum-offload look-alike, see above).
    let long = sports
        .iter()
        .map(|sp| pkt::tcp(&src, *sp, &dst, port, Tcp::Ack, b"repeat-based run"))
        .find(|a| !checksum_is_seed(a))
        .context("no sample flow for the repeat-based masquerade rows")?;
    let ovl = lab.ovl;
    m.masq_rep = same_packet_repeat(
        &mut lab,
        Hook::Tc {
            prog: programs::OVERLAY_INGRESS_L2,
            ifindex: ovl,
        },
        &long,
        p,
    )?;
    m.xdp_masq_rep = same_packet_repeat(&mut lab, Hook::Xdp, &long, p)?;
    // The reply of that flow as the LAN server sends it: to the masquerade address and port
    // the forward direction got (read from the rewritten packet).
    let (ret, out) = lab
        .try_run(programs::OVERLAY_INGRESS_L2, ovl, &long)
        .context("forward run of the reply measurement's flow")?;
    ensure!(
        ret == TC_ACT_REDIRECT && out.len() >= 36,
        "forward run: verdict {ret}"
    );
    let masq_ip = std::net::Ipv4Addr::new(out[26], out[27], out[28], out[29]).to_string();
    let masq_port = u16::from_be_bytes([out[34], out[35]]);
    let reply = pkt::tcp(
        &dst,
        port,
        &masq_ip,
        masq_port,
        Tcp::Ack,
        b"repeat-based run",
    );
    let lan = lab.lan;
    m.masq_reply_rep = same_packet_repeat(
        &mut lab,
        Hook::Tc {
            prog: programs::LAN_INGRESS,
            ifindex: lan,
        },
        &reply,
        p,
    )?;
    // New flows, repeat-based (last: it adds `repeat` flows to the conntrack).
    m.new_flow_rep = new_flow_repeat(&mut lab, s, port, p)?;
    m.others = others_between(&start, &snapshot()?);
    Ok(m)
}

/// A repeat-based measurement through a harness program of ebpf/src/bench.rs that prepares
/// every repetition's packet and tail-calls the program under test.
#[derive(Debug, Default, Clone, Copy)]
struct Harnessed {
    /// Mean ns per run of the harness in front of the program under test.
    wrapped: u64,
    /// Mean ns per run of the harness in front of a program that returns at once, minus that
    /// program alone: what the harness adds (medians of `calls` calls).
    harness: u64,
}

impl Harnessed {
    /// The program's time per run, with the kernel's test-run loop as in the other
    /// repeat-based rows.
    fn net(&self) -> u64 {
        self.wrapped.saturating_sub(self.harness)
    }
}

/// Where [`same_packet_repeat`] runs the program under test.
#[derive(Clone, Copy)]
enum Hook {
    /// A TC program of the lab, with the packet arriving on `ifindex`.
    Tc { prog: &'static str, ifindex: u32 },
    /// The lab's XDP stage (packet arriving on the overlay interface).
    Xdp,
}

/// Times a path that rewrites its packet with `repeat`: `sg_bench_same_packet` (TC) or
/// `sg_bench_same_frame` (XDP) writes `pkt`'s first bytes back before every run, so each
/// repetition sees `pkt`; every run must return `want_ret` and count as established.
fn same_packet_repeat(lab: &mut Lab, hook: Hook, pkt: &[u8], p: &Params) -> Result<Harnessed> {
    const SYN_LEN: usize = 62;
    let template: [u8; SYN_LEN] = pkt
        .get(..SYN_LEN)
        .and_then(|t| t.try_into().ok())
        .context("the harness needs a packet of at least 62 bytes")?;
    let mut ebpf = Ebpf::load(BENCH_OBJECT).context("loading the benchmark object")?;
    let (harness, accept, next_map) = match hook {
        Hook::Tc { .. } => ("sg_bench_same_packet", "sg_bench_accept", "SG_BENCH_NEXT"),
        Hook::Xdp => (
            "sg_bench_same_frame",
            "sg_bench_xdp_accept",
            "SG_BENCH_NEXT_XDP",
        ),
    };
    let mut map = |name: &str| {
        ebpf.take_map(name)
            .with_context(|| format!("{name} missing from the benchmark object"))
    };
    let mut tmpl: PerCpuArray<MapData, [u8; SYN_LEN]> =
        PerCpuArray::try_from(map("SG_BENCH_SYN")?)?;
    let mut next: ProgramArray<MapData> = ProgramArray::try_from(map(next_map)?)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    tmpl.set(0, PerCpuValues::try_from(vec![template; cpus])?, 0)?;
    for name in [harness, accept] {
        let prog = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from the benchmark object"))?;
        match hook {
            Hook::Tc { .. } => {
                let prog: &mut SchedClassifier = prog.try_into()?;
                prog.load()
            }
            Hook::Xdp => {
                let prog: &mut Xdp = prog.try_into()?;
                prog.load()
            }
        }
        .with_context(|| format!("loading {name}"))?;
    }
    let (skb, xdp_md) = match hook {
        Hook::Tc { ifindex, .. } => (swiftgate_testkit::kernel::skb_ctx(ifindex), [0u8; 24]),
        Hook::Xdp => {
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
            let mut md = [0u8; 24];
            md[4..8].copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
            md[12..16].copy_from_slice(&lab.ovl.to_ne_bytes());
            ([0u8; 192], md)
        }
    };
    let want_ret = match hook {
        Hook::Tc { .. } => TC_ACT_REDIRECT,
        Hook::Xdp => XDP_REDIRECT,
    };
    let median = |ebpf: &Ebpf, name: &str| -> Result<u64> {
        let prog = ebpf
            .program(name)
            .with_context(|| format!("{name} missing"))?;
        let mut v = Vec::new();
        for _ in 0..p.calls {
            let mut out = vec![0u8; pkt.len() + 256];
            let opts = TestRunOptions {
                data_in: Some(pkt),
                data_out: Some(&mut out),
                ctx_in: Some(match hook {
                    Hook::Tc { .. } => &skb[..],
                    Hook::Xdp => &xdp_md[..],
                }),
                repeat: p.repeat,
                ..Default::default()
            };
            let r = match hook {
                Hook::Tc { .. } => <&SchedClassifier>::try_from(prog)?.test_run(opts),
                Hook::Xdp => <&Xdp>::try_from(prog)?.test_run(opts),
            }
            .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
            ensure!(
                r.return_value == want_ret,
                "{name} returned {}",
                r.return_value
            );
            v.push(r.duration.as_nanos() as u64);
        }
        Ok(median_ns(v))
    };
    let set_next = |next: &mut ProgramArray<MapData>, fd| next.set(0, fd, 0);
    // What the harness adds: the harness in front of a program that returns at once.
    {
        let prog = ebpf.program(accept).context("calibration program")?;
        match hook {
            Hook::Tc { .. } => set_next(&mut next, <&SchedClassifier>::try_from(prog)?.fd()?)?,
            Hook::Xdp => set_next(&mut next, <&Xdp>::try_from(prog)?.fd()?)?,
        }
    }
    let alone = median(&ebpf, accept)?;
    let wrapped_accept = median(&ebpf, harness)?;
    match hook {
        Hook::Tc { prog, .. } => {
            let target = lab.dp.program(prog).context("program under test")?;
            set_next(&mut next, target.fd()?)?;
        }
        Hook::Xdp => {
            let target = lab.dp.xdp_program().context("XDP stage")?;
            set_next(&mut next, target.fd()?)?;
        }
    }
    let total = p.repeat as u64 * p.calls as u64;
    let wrapped = expect_growth(lab, Counter::Established, total, |_| median(&ebpf, harness))?;
    Ok(Harnessed {
        wrapped,
        harness: wrapped_accept.saturating_sub(alone),
    })
}

/// New flows with `repeat`: `sg_bench_new_flow` (ebpf/src/bench.rs) turns every repetition
/// into the SYN of a new flow from the last rule's source to [`NEW_FLOW_NET`] on the last
/// rule's port and tail-calls the overlay program; each run must open a flow.
fn new_flow_repeat(lab: &mut Lab, src: usize, port: u16, p: &Params) -> Result<Harnessed> {
    // As in ebpf/src/bench.rs.
    const SYN_LEN: usize = 62;
    const SPORTS: u32 = 64_512;
    ensure!(
        p.repeat <= 254 * SPORTS,
        "repeat {} exceeds the distinct flows of the new-flow harness",
        p.repeat
    );
    lab.sh(&format!(
        "ip route replace {NEW_FLOW_NET}/24 via 192.0.2.254 dev lan"
    ));
    let mut ebpf = Ebpf::load(BENCH_OBJECT).context("loading the benchmark object")?;
    let mut map = |name: &str| {
        ebpf.take_map(name)
            .with_context(|| format!("{name} missing from the benchmark object"))
    };
    let mut template: PerCpuArray<MapData, [u8; SYN_LEN]> =
        PerCpuArray::try_from(map("SG_BENCH_SYN")?)?;
    let mut seq: Array<MapData, u32> = Array::try_from(map("SG_BENCH_SEQ")?)?;
    let mut next: ProgramArray<MapData> = ProgramArray::try_from(map("SG_BENCH_NEXT")?)?;
    for name in ["sg_bench_new_flow", "sg_bench_accept"] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from the benchmark object"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    let syn = pkt::tcp(&peer_ip(src), 1024, NEW_FLOW_NET, port, Tcp::Syn(1460), &[]);
    let syn: [u8; SYN_LEN] = syn
        .as_slice()
        .try_into()
        .context("the new-flow SYN is not SYN_LEN bytes")?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    template.set(0, PerCpuValues::try_from(vec![syn; cpus])?, 0)?;
    let ctx = swiftgate_testkit::kernel::skb_ctx(lab.ovl);
    let run = |ebpf: &Ebpf, name: &str, repeat: u32| -> Result<(u32, u64)> {
        let prog: &SchedClassifier = ebpf
            .program(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?;
        let mut out = vec![0u8; SYN_LEN + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&syn),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat,
                ..Default::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
        Ok((r.return_value, r.duration.as_nanos() as u64))
    };
    let median = |ebpf: &Ebpf, name: &str| -> Result<u64> {
        let mut v = Vec::new();
        for _ in 0..p.calls {
            let (ret, ns) = run(ebpf, name, p.repeat)?;
            ensure!(ret == TC_ACT_REDIRECT, "{name} returned {ret}");
            v.push(ns);
        }
        Ok(median_ns(v))
    };

    // What the harness adds: the wrapper in front of a program that returns at once.
    {
        let accept: &SchedClassifier = ebpf
            .program("sg_bench_accept")
            .context("sg_bench_accept")?
            .try_into()?;
        next.set(0, accept.fd()?, 0)?;
    }
    let alone = median(&ebpf, "sg_bench_accept")?;
    let wrapped_accept = median(&ebpf, "sg_bench_new_flow")?;

    // The overlay program behind the wrapper: `repeat` new flows in one call.
    {
        let overlay = lab
            .dp
            .program(programs::OVERLAY_INGRESS_L2)
            .context("overlay program")?;
        next.set(0, overlay.fd()?, 0)?;
    }
    seq.set(0, 0, 0)?;
    let before = count_conntrack(lab)?;
    let (ret, wrapped) = expect_growth(lab, Counter::AcceptNew, p.repeat as u64, |_| {
        run(&ebpf, "sg_bench_new_flow", p.repeat)
    })?;
    ensure!(
        ret == TC_ACT_REDIRECT,
        "new flow through the harness: verdict {ret}"
    );
    let after = count_conntrack(lab)?;
    ensure!(
        after == before + p.repeat as usize,
        "conntrack went from {before} to {after} entries over {} new flows",
        p.repeat
    );
    Ok(Harnessed {
        wrapped,
        harness: wrapped_accept.saturating_sub(alone),
    })
}

/// Whether an Ethernet/IPv4/TCP frame's checksum equals the pseudo-header seed that checksum
/// offload leaves (what the XDP stage leaves to TC).
fn checksum_is_seed(frame: &[u8]) -> bool {
    let seed = pkt::tcp4_seed(frame);
    let check = u16::from_be_bytes([frame[50], frame[51]]);
    check == seed || (seed == 0xffff && check == 0) || (seed == 0 && check == 0xffff)
}

/// Deny path with `flow_events = "drops"`: the ring buffer (4 MiB, ~52,000 events) would
/// fill within one 1M-repeat call, after which only the failed reservation would be timed,
/// so the runs go in chunks of 40,000 with the ring drained after each.
fn deny_with_events(lab: &mut Lab, deny: &[u8], p: &Params) -> Result<f64> {
    const CHUNK: u32 = 40_000;
    let mut cfg = lab.cfg.clone();
    cfg.flow_events = FlowEvents::Drops;
    lab.dp
        .set_kernel_config(dataplane::kernel_config(&cfg)?)
        .context("enabling drop events")?;
    let mut ring = RingBuf::try_from(pinned_map(lab, maps::EVENTS)?)?;
    let drain = |ring: &mut RingBuf<MapData>| {
        let mut n = 0u64;
        while n < 2 * CHUNK as u64 {
            match ring.next() {
                Some(_) => n += 1,
                None => break,
            }
        }
        n
    };
    drain(&mut ring);
    let chunks = (p.repeat * p.calls as u32).div_ceil(CHUNK).max(1);
    let lost0 = counter(lab, Counter::EventsLost);
    let ovl = lab.ovl;
    let (mut ns, mut events) = (0u128, 0u64);
    for _ in 0..chunks {
        let (ret, d) = lab.run_repeat(programs::OVERLAY_INGRESS_L2, ovl, deny, CHUNK);
        ensure!(ret == TC_ACT_SHOT, "deny with events: verdict {ret}");
        ns += d.as_nanos() * CHUNK as u128;
        events += drain(&mut ring);
    }
    let lost = counter(lab, Counter::EventsLost) - lost0;
    ensure!(
        lost == 0 && events == chunks as u64 * CHUNK as u64,
        "drop events: {events} read, {lost} lost; the measurement would not time the event path"
    );
    cfg.flow_events = FlowEvents::None;
    lab.dp
        .set_kernel_config(dataplane::kernel_config(&cfg)?)
        .context("disabling drop events")?;
    Ok(ns as f64 / (chunks as u64 * CHUNK as u64) as f64)
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The floor of a repeat-based measurement: `sg_bench_redirect` (one array lookup and
/// `bpf_redirect_neigh`, no parsing) on a 64-byte frame; median ns per run.
fn minimal_program(p: &Params) -> Result<u64> {
    let mut ebpf = Ebpf::load(BENCH_OBJECT).context("loading the benchmark object")?;
    let mut target: Array<MapData, u32> = Array::try_from(
        ebpf.take_map("SG_BENCH_REDIRECT")
            .context("SG_BENCH_REDIRECT missing from the benchmark object")?,
    )?;
    target.set(0, 1, 0).context("setting the redirect target")?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut("sg_bench_redirect")
        .context("sg_bench_redirect missing from the benchmark object")?
        .try_into()?;
    prog.load().context("loading sg_bench_redirect")?;
    let frame = pkt::udp(GEN_IP, GEN_SPORT_BASE, SINK_IP, SINK_PORT, &[0; 22]);
    let mut v = Vec::new();
    for _ in 0..p.calls {
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: p.repeat,
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN of sg_bench_redirect")?;
        ensure!(
            r.return_value == TC_ACT_REDIRECT,
            "sg_bench_redirect returned {}",
            r.return_value
        );
        v.push(r.duration.as_nanos() as u64);
    }
    Ok(median_ns(v))
}

/// The least a new flow can cost in a kernel hash table: `prog` (`sg_bench_insert`: the LRU
/// table `SG_BENCH_LRU`; `sg_bench_insert_hash`: the plain table `SG_BENCH_HASH`) inserting
/// `p.repeat` distinct keys into a fresh table of twice that many entries (so nothing is
/// evicted), median over up to 3 fresh tables. Every insert must succeed: the table must hold
/// exactly `p.repeat` keys afterwards.
fn insert_floor(p: &Params, prog_name: &str, map: &str) -> Result<u64> {
    let entries = p.repeat.saturating_mul(2);
    let mut v = Vec::new();
    for _ in 0..p.calls.min(3) {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(map, entries)
            .load(BENCH_OBJECT)
            .with_context(|| format!("loading the benchmark object with a large {map}"))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(prog_name)
            .with_context(|| format!("{prog_name} missing from the benchmark object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("loading {prog_name}"))?;
        let frame = pkt::udp(GEN_IP, GEN_SPORT_BASE, SINK_IP, SINK_PORT, &[0; 22]);
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: p.repeat,
                ..Default::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {prog_name}"))?;
        ensure!(
            r.return_value == TC_ACT_OK,
            "{prog_name} returned {} (an insert was refused)",
            r.return_value
        );
        let table: aya::maps::HashMap<&MapData, [u64; 2], [u64; 2]> = aya::maps::HashMap::try_from(
            ebpf.map(map)
                .with_context(|| format!("{map} missing from the benchmark object"))?,
        )?;
        let held = table.keys().filter(|k| k.is_ok()).count();
        ensure!(
            held == p.repeat as usize,
            "{map} holds {held} keys after {} inserts",
            p.repeat
        );
        v.push(r.duration.as_nanos() as u64);
    }
    Ok(median_ns(v))
}

fn micro_benchmarks(p: &Params) -> Result<String> {
    eprintln!("part 1: BPF_PROG_TEST_RUN");
    let floor = minimal_program(p)?;
    let insert_lru = insert_floor(p, "sg_bench_insert", "SG_BENCH_LRU")?;
    let insert_hash = insert_floor(p, "sg_bench_insert_hash", "SG_BENCH_HASH")?;
    let (tun_fwd, tun_reply) = tun_overlay(p)?;
    let mut cols = Vec::new();
    for &n in &p.rule_counts {
        cols.push(micro_column(
            format!("{} rule{}", thousands(n), if n == 1 { "" } else { "s" }),
            n,
            0,
            p,
        )?);
    }
    let big = *p.rule_counts.iter().max().unwrap_or(&1);
    cols.push(micro_column(
        format!("{} rules + {} flows", thousands(big), thousands(p.fill)),
        big,
        p.fill,
        p,
    )?);

    let mut o = String::new();
    writeln!(
        o,
        "## 1. Per-packet cost in BPF_PROG_TEST_RUN (`sg_overlay_ingress_l2`, ns per packet)\n"
    )?;
    let rep = thousands(p.repeat as usize);
    let smp = thousands(p.samples);
    write!(o, "| path | method |")?;
    for c in &cols {
        write!(o, " {} |", c.label)?;
    }
    writeln!(o)?;
    write!(o, "|---|---|")?;
    for _ in &cols {
        write!(o, "---:|")?;
    }
    writeln!(o)?;
    let mut row = |name: &str, method: &str, f: &dyn Fn(&Micro) -> String| -> Result<()> {
        write!(o, "| {name} | {method} |")?;
        for c in &cols {
            write!(o, " {} |", f(c))?;
        }
        writeln!(o)?;
        Ok(())
    };
    row(
        "established, masquerade off (TCP data)",
        &format!("repeat={rep}, median of {}", p.calls),
        &|c| c.est_plain.to_string(),
    )?;
    row(
        "established reply LAN → overlay, masquerade off (`sg_lan_ingress`, TCP data)",
        &format!("repeat={rep}, median of {}", p.calls),
        &|c| c.est_reply.to_string(),
    )?;
    row(
        "established, masquerade off, XDP stage (TCP data)",
        &format!("repeat={rep}, median of {}", p.calls),
        &|c| c.xdp_plain.to_string(),
    )?;
    row(
        "established, masquerade on, XDP stage (TCP data, SNAT rewrite)",
        &format!("{smp} flows, repeat=1 (after one warm-up packet per flow), median *"),
        &|c| c.xdp_masq.p50.to_string(),
    )?;
    row(
        "established, masquerade on, XDP stage, minus the repeat=1 overhead (estimate)",
        "median * − (XDP masquerade off repeat=1 − repeat-based)",
        &|c| {
            let overhead = c.xdp_plain_one.p50 as i64 - c.xdp_plain as i64;
            format!("≈{}", c.xdp_masq.p50 as i64 - overhead)
        },
    )?;
    row(
        "established, masquerade on (TCP data, SNAT rewrite)",
        &format!(
            "repeat={rep}, packet restored before every run (harness `sg_bench_same_packet`), \
             its cost subtracted"
        ),
        &|c| c.masq_rep.net().to_string(),
    )?;
    row(
        "established reply LAN → overlay, masquerade on (reverse NAT)",
        &format!("repeat={rep}, the same harness, its cost subtracted"),
        &|c| c.masq_reply_rep.net().to_string(),
    )?;
    row(
        "established, masquerade on, XDP stage (TCP data, SNAT rewrite)",
        &format!(
            "repeat={rep}, frame restored before every run (harness `sg_bench_same_frame`), \
             its cost subtracted"
        ),
        &|c| c.xdp_masq_rep.net().to_string(),
    )?;
    row(
        "… of which the harnesses (subtracted above: TC / XDP)",
        &format!("harness in front of a program that returns at once − that program, repeat={rep}"),
        &|c| format!("{} / {}", c.masq_rep.harness, c.xdp_masq_rep.harness),
    )?;
    row(
        "new flow accepted (TCP SYN: policy, conntrack, masquerade, MSS clamp)",
        &format!(
            "repeat={rep} distinct flows in one call (harness `sg_bench_new_flow`), its cost \
             subtracted"
        ),
        &|c| c.new_flow_rep.net().to_string(),
    )?;
    row(
        "… of which the harness (subtracted above)",
        &format!(
            "`sg_bench_new_flow` in front of `sg_bench_accept` − `sg_bench_accept` alone, \
             repeat={rep}, medians of {}",
            p.calls
        ),
        &|c| c.new_flow_rep.harness.to_string(),
    )?;
    row(
        "deny: no rule matches (TCP SYN), flow_events=none",
        &format!("repeat={rep}, median of {}", p.calls),
        &|c| c.deny.to_string(),
    )?;
    row(
        "deny, flow_events=drops (one ring-buffer event per drop)",
        "repeat=40,000 per call, ring drained between calls, mean",
        &|c| format!("{:.0}", c.deny_events),
    )?;
    row(
        "new flow accepted, single runs",
        &format!("{smp} distinct SYNs, repeat=1, median *"),
        &|c| c.new_flow.p50.to_string(),
    )?;
    row(
        "established, masquerade on (TCP data, SNAT rewrite)",
        &format!("{smp} flows, repeat=1, median *"),
        &|c| c.est_masq.p50.to_string(),
    )?;
    row(
        "deny, flow_events=none (timer reference)",
        &format!("{smp} runs, repeat=1, median *"),
        &|c| c.deny_one.p50.to_string(),
    )?;
    row(
        "new flow accepted, single runs, minus the repeat=1 overhead (estimate)",
        "median * − (deny repeat=1 − deny repeat-based)",
        &|c| {
            let overhead = c.deny_one.p50 as i64 - c.deny as i64;
            format!("≈{}", c.new_flow.p50 as i64 - overhead)
        },
    )?;
    row(
        "established masquerade on, minus the repeat=1 overhead (estimate)",
        "same correction",
        &|c| {
            let overhead = c.deny_one.p50 as i64 - c.deny as i64;
            format!("≈{}", c.est_masq.p50 as i64 - overhead)
        },
    )?;
    row(
        "other processes meanwhile (their CPU time, share of the machine)",
        "",
        &|c| {
            format!(
                "{}{:.0}%",
                if c.others > DISTURBED { "⚠ " } else { "" },
                c.others * 100.0
            )
        },
    )?;
    row("entries in SG_POLICY", "", &|c| thousands(c.policy_entries))?;
    row(
        "tracked flows (SG_CT4 + SG_CT6) before the runs",
        "",
        &|c| thousands(c.ct_entries),
    )?;
    writeln!(o)?;
    writeln!(
        o,
        "\\* repeat=1: the kernel's `duration` of one run includes reading the clock around it \
         (`ktime_get_ns`, twice) and the cold start of a single run; the \"timer reference\" row \
         is the same deny path as the repeat-based row, so their difference estimates that \
         overhead.\n"
    )?;
    writeln!(o, "Distribution of the repeat=1 runs (ns):\n")?;
    writeln!(o, "| column | path | n | p50 | p90 | p99 | mean |")?;
    writeln!(o, "|---|---|---:|---:|---:|---:|---:|")?;
    for c in &cols {
        let mut series = vec![
            ("new flow accepted", c.new_flow),
            ("established, masquerade on", c.est_masq),
            ("deny (timer reference)", c.deny_one),
            ("established, masquerade on, XDP stage", c.xdp_masq),
            (
                "established, masquerade off, XDP stage (XDP timer reference)",
                c.xdp_plain_one,
            ),
        ];
        if let Some(f) = c.fill {
            series.push(("new flow while filling the conntrack", f));
        }
        for (name, d) in series {
            writeln!(
                o,
                "| {} | {name} | {} | {} | {} | {} | {:.0} |",
                c.label,
                thousands(d.n),
                d.p50,
                d.p90,
                d.p99,
                d.mean
            )?;
        }
    }
    writeln!(o)?;
    let accept_est: Vec<String> = cols
        .iter()
        .map(|c| {
            format!(
                "{}: established {} ns, masquerade on {} ns, LAN → overlay reply {} / {} ns \
                 (masquerade off / on), XDP stage {} / {} ns; new flow {} ns",
                c.label,
                c.est_plain,
                c.masq_rep.net(),
                c.est_reply,
                c.masq_reply_rep.net(),
                c.xdp_plain,
                c.xdp_masq_rep.net(),
                c.new_flow_rep.net(),
            )
        })
        .collect();
    writeln!(
        o,
        "Reference: a minimal TC program (`sg_bench_redirect`: one array lookup and \
         `bpf_redirect_neigh`, no parsing) takes {floor} ns per run in the same harness \
         (repeat={rep}, median of {}).\n",
        p.calls
    )?;
    writeln!(
        o,
        "Reference: one insert of a new key into an LRU hash table like the IPv4 conntrack's \
         (16-byte key, 16-byte value, {} entries, nothing else in the program; \
         `sg_bench_insert`) takes {insert_lru} ns per run; into a plain preallocated hash table \
         of the same size (`sg_bench_insert_hash`), {insert_hash} ns (repeat={rep} distinct keys \
         into a fresh table, median of {} tables). Every new flow makes at least one such insert \
         (swiftgate makes two: the flow's entry and its reply entry).\n",
        thousands(p.repeat as usize * 2),
        p.calls.min(3)
    )?;
    writeln!(
        o,
        "With a TUN overlay (`overlay_l2 = false`, how the WireGuard routing peer runs; 1 rule), \
         masquerade on, where no receive checksum needs updating (a TUN never hands one over; \
         the agent tells the programs with `OVERLAY_TUN`): established overlay → LAN, \
         `sg_overlay_ingress_l2`: {} ns; established reply LAN → overlay (reverse NAT), \
         `sg_lan_ingress`: {} ns (repeat={rep}, through `sg_bench_same_packet`, its {} / {} ns \
         subtracted).\n",
        tun_fwd.net(),
        tun_reply.net(),
        tun_fwd.harness,
        tun_reply.harness
    )?;
    writeln!(
        o,
        "Target (issue): ≤ 100 ns per packet on the accept and established paths, flat from 1 to \
         100,000 rules. Measured: {}.\n",
        accept_est.join("; ")
    )?;
    Ok(o)
}

/// A masqueraded flow's established packets when the overlay is a TUN: a lab configured with
/// `tun0` as overlay, its forward packet (overlay → LAN) and its reply (LAN → overlay) timed
/// with repeat through the restoring harness. The overlay program runs on `ovl` (a TC test run
/// always hands the program an Ethernet frame, so the TUN's own ingress cannot be run this
/// way); the configuration, and so the program's choices, are the TUN's.
fn tun_overlay(p: &Params) -> Result<(Harnessed, Harnessed)> {
    let shape = Shape::new(1);
    let mut lab = Lab::with_config(|pin| bench_config(pin, &shape, 1 << 16, true));
    ensure!(
        dataplane::kernel_config(&lab.cfg)?.flags & config_flags::OVERLAY_TUN != 0,
        "the agent did not recognise the lab's tun0 as a TUN device"
    );
    let (s, d, port) = shape.rule(0);
    let (src, dst) = (peer_ip(s), resource_ip(d));
    let ovl = lab.ovl;
    let syn = pkt::tcp(&src, 41_000, &dst, port, Tcp::Syn(1460), &[]);
    let (ret, _) = lab.run_repeat(programs::OVERLAY_INGRESS_L2, ovl, &syn, 1);
    ensure!(
        ret == TC_ACT_REDIRECT,
        "SYN for the TUN overlay lab: verdict {ret}, counters {:?}",
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), lab.counter(c)))
            .filter(|(_, v)| *v > 0)
            .collect::<Vec<_>>()
    );
    let payload = b"repeat-based run";
    let ack = pkt::tcp(&src, 41_000, &dst, port, Tcp::Ack, payload);
    let (ret, out) = lab
        .try_run(programs::OVERLAY_INGRESS_L2, ovl, &ack)
        .context("forward run in the TUN overlay lab")?;
    ensure!(
        ret == TC_ACT_REDIRECT && out.len() >= 36,
        "forward run in the TUN overlay lab: verdict {ret}"
    );
    let masq_ip = std::net::Ipv4Addr::new(out[26], out[27], out[28], out[29]).to_string();
    let masq_port = u16::from_be_bytes([out[34], out[35]]);
    let reply = pkt::tcp(&dst, port, &masq_ip, masq_port, Tcp::Ack, payload);
    let lan = lab.lan;
    let fwd = same_packet_repeat(
        &mut lab,
        Hook::Tc {
            prog: programs::OVERLAY_INGRESS_L2,
            ifindex: ovl,
        },
        &ack,
        p,
    )?;
    let back = same_packet_repeat(
        &mut lab,
        Hook::Tc {
            prog: programs::LAN_INGRESS,
            ifindex: lan,
        },
        &reply,
        p,
    )?;
    Ok((fwd, back))
}

// ------------------------------------------------------------------------------------------
// Part 2: forwarding in namespaces
// ------------------------------------------------------------------------------------------

const MAC_G0: &str = "02:5b:00:00:00:01";
const MAC_GW0: &str = "02:5b:00:00:00:02";
const MAC_GW1: &str = "02:5b:00:00:00:03";
const MAC_S0: &str = "02:5b:00:00:00:04";
const GEN_IP: &str = "100.64.0.2";
const SINK_IP: &str = "192.0.2.10";
const SINK_PORT: u16 = 9;
/// Source port of the first run's flow; run `i` uses `GEN_SPORT_BASE + i`, so every run is a
/// new flow for both systems (nftables then sets up a fresh conntrack entry and NAT binding).
const GEN_SPORT_BASE: u16 = 40_000;
/// Header bytes `sg_bench_tx` restores in every frame (ebpf/src/bench.rs).
const HDR_LEN: usize = 42;

fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, b) in s.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).expect("MAC literal");
    }
    m
}

/// Runs a command and returns its stdout; fails with the command and its stderr.
fn cmd(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside a namespace (`ip netns exec`: fine for one-shot tools such as nft,
/// ethtool and sysfs access; not for the agent, whose pins must be on the host's bpffs).
fn ns_cmd(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    cmd(&full)
}

/// Runs `f` on a thread that has entered network namespace `ns` (see
/// [`swiftgate_testkit::netns::run_in`]).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    swiftgate_testkit::netns::run_in(&Path::new("/run/netns").join(ns), f)?
}

fn ns_sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    in_netns(ns, || {
        std::fs::write(format!("/proc/sys/{key}"), value)
            .with_context(|| format!("writing /proc/sys/{key} in {ns}"))
    })
}

/// Loads an nftables rule set into namespace `ns`.
fn nft_apply(ns: &str, rules: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(rules.as_bytes())
        .context("writing nft rules")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    ensure!(
        out.status.success(),
        "nft -f in {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The three namespaces: gen (g0) <-> (gw0) gw (gw1) <-> (s0) sink. On drop the pinned state
/// of swiftgate goes first, then the namespaces with their links (the testkit's guards, in
/// field order).
struct Topology {
    /// Name of the generator's namespace.
    gen_ns: String,
    /// Name of the gateway's namespace.
    gw: String,
    /// Name of the sink's namespace.
    sink: String,
    /// swiftgate's pin directory (`_pins`' path).
    pin: PathBuf,
    _pins: swiftgate_testkit::PinDir,
    namespaces: [swiftgate_testkit::NetNs; 3],
}

impl Topology {
    fn build(same_cpu: bool) -> Result<Topology> {
        let id = swiftgate_testkit::unique_id();
        let pins = swiftgate_testkit::PinDir::for_id(&id)?;
        let create = |role: &str| swiftgate_testkit::NetNs::create(&format!("{id}-{role}"));
        let namespaces = [create("gen")?, create("gw")?, create("sink")?];
        let t = Topology {
            gen_ns: namespaces[0].name().to_owned(),
            gw: namespaces[1].name().to_owned(),
            sink: namespaces[2].name().to_owned(),
            pin: pins.path().to_owned(),
            _pins: pins,
            namespaces,
        };
        for ns in &t.namespaces {
            for k in ["all", "default"] {
                ns.sysctl(&format!("net/ipv6/conf/{k}/disable_ipv6"), "1")?;
            }
        }
        let (g, w, s) = (t.gen_ns.as_str(), t.gw.as_str(), t.sink.as_str());
        cmd(&[
            "ip", "link", "add", "g0", "address", MAC_G0, "netns", g, "type", "veth", "peer",
            "name", "gw0", "address", MAC_GW0, "netns", w,
        ])?;
        cmd(&[
            "ip", "link", "add", "gw1", "address", MAC_GW1, "netns", w, "type", "veth", "peer",
            "name", "s0", "address", MAC_S0, "netns", s,
        ])?;
        for (ns, dev, addr) in [
            (g, "g0", "100.64.0.2/10"),
            (w, "gw0", "100.64.0.1/10"),
            (w, "gw1", "192.0.2.1/24"),
            (s, "s0", "192.0.2.10/24"),
        ] {
            cmd(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
            cmd(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        // The sink answers no ARP (XDP drops everything), so the gateway is told its MAC.
        cmd(&[
            "ip",
            "-n",
            w,
            "neigh",
            "replace",
            SINK_IP,
            "lladdr",
            MAC_S0,
            "dev",
            "gw1",
            "nud",
            "permanent",
        ])?;
        ns_sysctl(w, "net/ipv4/ip_forward", "1")?;
        // veth delivers XDP_TX'd frames only to a peer with NAPI: GRO gives gw0 one.
        ns_cmd(w, &["ethtool", "-K", "gw0", "gro", "on"])?;
        if !same_cpu {
            // Receive processing of gw0, and with it the whole forwarding path, on CPU 1;
            // the generator is pinned to CPU 0.
            ns_cmd(
                w,
                &[
                    "sh",
                    "-c",
                    "echo 2 > /sys/class/net/gw0/queues/rx-0/rps_cpus",
                ],
            )?;
        }
        Ok(t)
    }

    fn describe(&self) -> Result<String> {
        let k = ns_cmd(&self.gw, &["ethtool", "-k", "gw0"])?;
        let feat = |name: &str| {
            k.lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("?")
                .to_string()
        };
        let rps = ns_cmd(
            &self.gw,
            &["cat", "/sys/class/net/gw0/queues/rx-0/rps_cpus"],
        )?;
        Ok(format!(
            "gw0: generic-receive-offload {}, rx-gro-list {}, rx-udp-gro-forwarding {}, \
             rps_cpus {}",
            feat("generic-receive-offload"),
            feat("rx-gro-list"),
            feat("rx-udp-gro-forwarding"),
            rps.trim()
        ))
    }
}

/// Link statistics of `dev` in `ns`.
#[derive(Debug, Clone, Copy, Default)]
struct LinkStats {
    rx_packets: u64,
    tx_packets: u64,
    tx_dropped: u64,
}

fn link_stats(ns: &str, dev: &str) -> Result<LinkStats> {
    let out = cmd(&["ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing ip -j output")?;
    let st = &v[0]["stats64"];
    ensure!(st.is_object(), "no stats64 for {dev} in {ns}");
    let get = |dir: &str, k: &str| st[dir][k].as_u64().unwrap_or(0);
    Ok(LinkStats {
        rx_packets: get("rx", "packets"),
        tx_packets: get("tx", "packets"),
        tx_dropped: get("tx", "dropped"),
    })
}

/// Jiffies of one CPU from /proc/stat.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    /// Not idle (user, nice, system, irq, softirq, steal).
    busy: u64,
    /// User, nice and system: time spent by tasks (not interrupts or idle).
    task: u64,
    total: u64,
}

/// Per-CPU times from /proc/stat.
fn cpu_times() -> Result<Vec<CpuTimes>> {
    let s = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(s.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let f = |i: usize| v.get(i).copied().unwrap_or(0);
            let total: u64 = v.iter().take(8).sum();
            CpuTimes {
                busy: total - f(3) - f(4),
                task: f(0) + f(1) + f(2),
                total,
            }
        })
        .collect())
}

/// Busy share per CPU between two [`cpu_times`] samples.
fn busy_between(a: &[CpuTimes], b: &[CpuTimes]) -> Vec<f64> {
    share_between(a, b, |c| c.busy)
}

/// CPU time of this process and its waited-for children (ip, nft), in jiffies.
fn own_cpu_time() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // After the command name (in parentheses) come state (field 3) ... utime, stime, cutime,
    // cstime (fields 14 to 17).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Ok((11..15).map(|i| f.get(i).copied().unwrap_or(0)).sum())
}

/// CPU times and this process's own time, to tell other processes' work apart.
#[derive(Debug, Clone)]
struct Snapshot {
    cpus: Vec<CpuTimes>,
    own: u64,
}

fn snapshot() -> Result<Snapshot> {
    Ok(Snapshot {
        cpus: cpu_times()?,
        own: own_cpu_time()?,
    })
}

/// Share of the machine's CPU time that other processes used between two snapshots: user and
/// system time not spent by this process. (Packet processing is softirq time and counts for
/// nobody; a generator in a syscall is this process's system time.)
fn others_between(a: &Snapshot, b: &Snapshot) -> f64 {
    let task: u64 = a
        .cpus
        .iter()
        .zip(&b.cpus)
        .map(|(x, y)| y.task - x.task)
        .sum();
    let total: u64 = a
        .cpus
        .iter()
        .zip(&b.cpus)
        .map(|(x, y)| y.total - x.total)
        .sum();
    let own = b.own.saturating_sub(a.own);
    task.saturating_sub(own) as f64 / total.max(1) as f64
}

fn share_between(a: &[CpuTimes], b: &[CpuTimes], f: impl Fn(&CpuTimes) -> u64) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f(y) - f(x)) as f64 / (y.total - x.total).max(1) as f64)
        .collect()
}

/// Share of the machine's CPU time other processes may use before a measurement counts as
/// disturbed.
const DISTURBED: f64 = 0.02;

fn percent(v: &[f64]) -> String {
    v.iter()
        .enumerate()
        .map(|(i, b)| format!("cpu{i} {:.0}%", b * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How busy the machine is without us (one second), to flag runs disturbed by other work.
fn background_load() -> Result<Vec<f64>> {
    let a = cpu_times()?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(busy_between(&a, &cpu_times()?))
}

/// Waits (at most a minute) until no CPU is more than 10% busy, e.g. while the kernel frees
/// the previous part's namespaces and maps; returns the last second's load and the seconds
/// waited.
fn settle() -> Result<(Vec<f64>, u32)> {
    let mut load = background_load()?;
    let mut waited = 1;
    while waited < 60 && load.iter().any(|b| *b > 0.1) {
        load = background_load()?;
        waited += 1;
    }
    Ok((load, waited))
}

/// Which forwarding path a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum System {
    /// swiftgate's programs, attached as `swiftgate up` attaches them.
    Swiftgate,
    /// The same with the XDP stage on the overlay interface (`xdp = true`).
    #[value(name = "swiftgate-xdp")]
    SwiftgateXdp,
    /// Linux forwarding with the nftables rules of a NetBird routing peer.
    Nftables,
    /// Reference: Linux forwarding without any rules (no filter, no conntrack, no NAT).
    #[value(name = "plain")]
    PlainForwarding,
    /// Reference: a TC program that only redirects (`sg_bench_redirect`).
    #[value(name = "redirect")]
    BareRedirect,
}

impl System {
    const ALL: [System; 5] = [
        System::Swiftgate,
        System::SwiftgateXdp,
        System::Nftables,
        System::PlainForwarding,
        System::BareRedirect,
    ];

    fn name(self) -> &'static str {
        match self {
            System::Swiftgate => "swiftgate (TC eBPF)",
            System::SwiftgateXdp => "swiftgate (XDP + TC eBPF)",
            System::Nftables => "Linux forwarding + nftables",
            System::PlainForwarding => "reference: Linux forwarding, no rules",
            System::BareRedirect => "reference: bare TC redirect",
        }
    }

    /// Whether the packets go through the kernel's IP forwarding (rather than a TC redirect).
    fn kernel_forwarding(self) -> bool {
        matches!(self, System::Nftables | System::PlainForwarding)
    }
}

/// `Ip: ForwDatagrams` of namespace `ns` (packets the kernel's IP forwarding handled).
fn forwarded_datagrams(ns: &str) -> Result<u64> {
    in_netns(ns, || {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp")
            .context("reading /proc/thread-self/net/snmp")?;
        let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (ip.next(), ip.next());
        let (Some(names), Some(values)) = (names, values) else {
            anyhow::bail!("no Ip: lines in /proc/net/snmp");
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "ForwDatagrams")
            .and_then(|(_, v)| v.parse().ok())
            .context("no Ip: ForwDatagrams in /proc/net/snmp")
    })
}

/// The routing peer's configuration for swiftgate: one peer, one masqueraded resource, one
/// policy (UDP to port 9); with the XDP stage when `xdp`.
fn gw_config(pin: &Path, xdp: bool) -> String {
    format!(
        r#"
[interface]
overlay = "gw0"
overlay_l2 = true
xdp = {xdp}
addresses = ["100.64.0.1/10"]
lan = ["gw1"]
pin_path = "{}"

[[peers]]
name = "generator"
ips = ["{GEN_IP}"]
groups = ["bench-clients"]

[[networks]]
name = "lan"
masquerade = true
[[networks.resources]]
name = "sink"
address = "{SINK_IP}/32"
groups = ["bench-sink"]

[[policies]]
name = "clients-to-sink"
sources = ["bench-clients"]
destinations = ["bench-sink"]
protocol = "udp"
ports = ["{SINK_PORT}"]
"#,
        pin.display()
    )
}

/// What a NetBird routing peer installs for the same policy: a stateful forward filter with a
/// default drop and one accept rule for the policy, and masquerade from the overlay out of the
/// LAN interface.
const NFT_RULES: &str = r#"
table ip sgbench {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related counter accept comment "established"
        iifname "gw0" oifname "gw1" ip saddr 100.64.0.2 ip daddr 192.0.2.10 udp dport 9 counter accept comment "policy"
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "gw1" ip saddr 100.64.0.0/10 counter masquerade comment "masquerade"
    }
}
"#;

/// A forwarding path set up in the gw namespace; removed on drop.
struct Installed<'a> {
    topo: &'a Topology,
    system: System,
    /// The reference redirect program's TCX link (detached when dropped).
    link: Option<SchedClassifierLink>,
}

impl<'a> Installed<'a> {
    fn new(topo: &'a Topology, traffic: &mut Traffic, system: System) -> Result<Installed<'a>> {
        let mut me = Installed {
            topo,
            system,
            link: None,
        };
        match system {
            System::Swiftgate | System::SwiftgateXdp => {
                let xdp = system == System::SwiftgateXdp;
                let cfg = AgentConfig::from_toml(&gw_config(&topo.pin, xdp))
                    .context("gateway configuration")?;
                // What `swiftgate up` does before its event loop. The links are pinned, so
                // the programs stay attached after the thread ends.
                in_netns(&topo.gw, move || run::bring_up(&cfg).map(drop))?;
            }
            System::Nftables => nft_apply(&topo.gw, NFT_RULES)?,
            System::PlainForwarding => {}
            System::BareRedirect => {
                let ifindex = in_netns(&topo.gw, || {
                    nix::net::if_::if_nametoindex("gw1").context("gw1 in the gw namespace")
                })?;
                traffic
                    .redirect_to
                    .set(0, ifindex, 0)
                    .context("setting the redirect target")?;
                let prog: &mut SchedClassifier = traffic
                    .ebpf
                    .program_mut("sg_bench_redirect")
                    .context("sg_bench_redirect")?
                    .try_into()?;
                me.link = Some(in_netns(&topo.gw, || {
                    let id = prog
                        .attach_with_options(
                            "gw0",
                            TcAttachType::Ingress,
                            TcAttachOptions::TcxOrder(LinkOrder::default()),
                        )
                        .context("attaching sg_bench_redirect to gw0")?;
                    Ok(prog.take_link(id)?)
                })?);
            }
        }
        Ok(me)
    }

    /// The path's own counters: swiftgate's non-zero ones (and established, accept_new), the
    /// nft rules' (by comment), none for the references.
    fn counters(&self) -> Result<Vec<(String, u64)>> {
        match self.system {
            System::Swiftgate | System::SwiftgateXdp => {
                let st = State::open(&self.topo.pin)?;
                Ok(st
                    .counters()?
                    .into_iter()
                    .filter(|(c, v)| {
                        *v > 0 || matches!(c, Counter::Established | Counter::AcceptNew)
                    })
                    .map(|(c, v)| (c.name().to_string(), v))
                    .collect())
            }
            System::Nftables => {
                let out = ns_cmd(
                    &self.topo.gw,
                    &["nft", "-j", "list", "table", "ip", "sgbench"],
                )?;
                let v: serde_json::Value =
                    serde_json::from_str(&out).context("parsing nft -j output")?;
                let mut res = Vec::new();
                for item in v["nftables"].as_array().into_iter().flatten() {
                    let rule = &item["rule"];
                    let Some(comment) = rule["comment"].as_str() else {
                        continue;
                    };
                    let packets = rule["expr"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(|e| e["counter"]["packets"].as_u64())
                        .unwrap_or(0);
                    res.push((comment.to_string(), packets));
                }
                Ok(res)
            }
            System::PlainForwarding | System::BareRedirect => Ok(Vec::new()),
        }
    }

    /// Packets the path itself counted as passed (for swiftgate: tracked-flow packets and new
    /// flows; for nftables: the two accept rules; a one-way UDP flow never becomes
    /// "established" in Linux conntrack, so its packets all match the policy rule).
    fn passed(&self, counters: &[(String, u64)]) -> Option<u64> {
        let want: &[&str] = match self.system {
            System::Swiftgate | System::SwiftgateXdp => &["established", "accept_new"],
            System::Nftables => &["established", "policy"],
            System::PlainForwarding | System::BareRedirect => return None,
        };
        Some(
            counters
                .iter()
                .filter(|(k, _)| want.contains(&k.as_str()))
                .map(|(_, v)| v)
                .sum(),
        )
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let r = match self.system {
            System::Swiftgate | System::SwiftgateXdp => dataplane::remove_all(&self.topo.pin),
            System::Nftables => {
                ns_cmd(&self.topo.gw, &["nft", "delete", "table", "ip", "sgbench"]).map(drop)
            }
            System::PlainForwarding => Ok(()),
            // Dropping the (unpinned) TCX link detaches the program.
            System::BareRedirect => {
                self.link.take();
                Ok(())
            }
        };
        if let Err(e) = r {
            eprintln!("warning: removing {}: {e:#}", self.system.name());
        }
    }
}

/// One forwarding measurement.
#[derive(Debug, Clone)]
struct Fwd {
    system: System,
    frame: usize,
    /// Packets per second the gateway sent out of gw1 in the window.
    pps: f64,
    /// Of those, the share the sink's veth queue took (the rest it dropped as full).
    delivered: f64,
    /// Frames per second the generator sent.
    offered: f64,
    /// Packets per second gw0 received.
    reached: f64,
    /// Busy share per CPU in the window.
    busy: Vec<f64>,
    /// Share of the machine's CPU time other processes used in the window.
    others: f64,
    /// The path's own count of passed packets / packets out of gw1, over the whole run.
    path_ratio: Option<f64>,
    /// Packets through the kernel's IP forwarding / packets out of gw1, over the whole run.
    kernel_ratio: f64,
    /// The path's counters after the run.
    counters: Vec<(String, u64)>,
}

/// The UDP frame the generator sends (`len` bytes without FCS).
fn gen_frame(len: usize, sport: u16) -> Vec<u8> {
    let mut f = pkt::udp(
        GEN_IP,
        sport,
        SINK_IP,
        SINK_PORT,
        &vec![0xa5; len - HDR_LEN],
    );
    f[0..6].copy_from_slice(&mac(MAC_GW0));
    f[6..12].copy_from_slice(&mac(MAC_G0));
    assert_eq!(f.len(), len);
    f
}

/// How the generator sends its frames (fixed by the first run and named in the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// `sg_bench_tx` through `BPF_PROG_RUN` in XDP live-frames mode.
    XdpLiveFrames,
    /// A packet socket on g0 with `sendmmsg` (PACKET_QDISC_BYPASS), used where the kernel
    /// refuses XDP live frames (EPERM: seen on a machine whose capability bounding set lacked
    /// CAP_SYS_RESOURCE). It costs more CPU per frame, so the offered rate is lower; the CPU
    /// time per forwarded packet on the forwarding CPU is the figure to compare then.
    AfPacket,
}

impl Sender {
    fn describe(self) -> &'static str {
        match self {
            Sender::XdpLiveFrames => {
                "`sg_bench_tx` via BPF_PROG_RUN in XDP live-frames mode (batch 64)"
            }
            Sender::AfPacket => {
                "an AF_PACKET socket with sendmmsg (batch 64, qdisc bypassed): this kernel \
                 refused BPF_PROG_RUN with XDP live frames (EPERM)"
            }
        }
    }
}

/// The sender in use; `None` until the first run decided.
static SENDER: std::sync::Mutex<Option<Sender>> = std::sync::Mutex::new(None);

fn sender() -> Option<Sender> {
    *SENDER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `e` is the kernel's EPERM.
fn is_eperm(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
    })
}

/// Sends `frame` out of g0 (in the gen namespace) until `until`, with XDP live frames where the
/// kernel allows them and a packet socket where it answers EPERM (said once on stderr and in
/// the report). Returns the frames sent and the time taken.
fn generate(
    prog: &Xdp,
    ns: &str,
    frame: &[u8],
    until: Instant,
    pin_cpu: Option<usize>,
) -> Result<(u64, Duration)> {
    if sender() == Some(Sender::AfPacket) {
        return generate_packet_socket(ns, frame, until, pin_cpu);
    }
    match generate_xdp(prog, ns, frame, until, pin_cpu) {
        Err(e) if is_eperm(&e) && sender().is_none() => {
            eprintln!(
                "bench: BPF_PROG_RUN with XDP live frames refused (EPERM); the generator \
                 falls back to an AF_PACKET sender"
            );
            *SENDER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sender::AfPacket);
            generate_packet_socket(ns, frame, until, pin_cpu)
        }
        Ok(r) => {
            SENDER
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(Sender::XdpLiveFrames);
            Ok(r)
        }
        Err(e) => Err(e),
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: Option<usize>) -> Result<()> {
    if let Some(cpu) = cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).context("cpu set")?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .context("pinning the generator")?;
    }
    Ok(())
}

/// Sends `frame` out of g0 through a packet socket, 64 frames per `sendmmsg`, until `until`
/// (and at most `MAX_CALLS` calls). A full device queue (ENOBUFS, EAGAIN) is retried.
fn generate_packet_socket(
    ns: &str,
    frame: &[u8],
    until: Instant,
    pin_cpu: Option<usize>,
) -> Result<(u64, Duration)> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    const BATCH: usize = 64;
    const MAX_CALLS: u64 = 1 << 28;
    /// `PACKET_QDISC_BYPASS` (linux/if_packet.h).
    const PACKET_QDISC_BYPASS: libc::c_int = 20;
    in_netns(ns, || {
        pin_to(pin_cpu)?;
        let ifindex = nix::net::if_::if_nametoindex("g0").context("g0 in the gen namespace")?;
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        anyhow::ensure!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a new descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: `one` outlives the call and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(
            r == 0,
            "PACKET_QDISC_BYPASS: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(r == 0, "binding to g0: {}", std::io::Error::last_os_error());
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        // SAFETY: mmsghdr is plain data; zero is a valid start (no name, no control data).
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for m in &mut msgs {
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        let start = Instant::now();
        let mut sent = 0u64;
        for _ in 0..MAX_CALLS {
            if Instant::now() >= until {
                break;
            }
            // SAFETY: `msgs` holds BATCH valid headers, each pointing at `iov`, which points at
            // `frame`; all of them outlive the call, and the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as libc::c_uint, 0)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                    _ => return Err(anyhow::Error::new(e).context("sendmmsg on g0")),
                }
            }
            sent += n as u64;
        }
        Ok((sent, start.elapsed()))
    })
}

/// Sends `frame` out of g0 (in the gen namespace) as fast as `BPF_PROG_RUN` in XDP
/// live-frames mode goes, until `until` (and at most `MAX_CALLS` calls). Returns the frames
/// sent and the time taken.
///
/// Every XDP test run adds the program to the kernel's XDP dispatcher and removes it again,
/// each time waiting for an RCU grace period (milliseconds, during which nothing is sent). So
/// after a short first call, which measures the rate, one call covers the rest of the time.
fn generate_xdp(
    prog: &Xdp,
    ns: &str,
    frame: &[u8],
    until: Instant,
    pin_cpu: Option<usize>,
) -> Result<(u64, Duration)> {
    const FIRST_CALL: u32 = 1 << 16;
    const MAX_CALLS: u64 = 1_000;
    in_netns(ns, || {
        pin_to(pin_cpu)?;
        let ifindex = nix::net::if_::if_nametoindex("g0").context("g0 in the gen namespace")?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. XDP_TX sends the frame back out of the ingress interface.
        let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let start = Instant::now();
        let mut sent = 0u64;
        let mut repeat = FIRST_CALL;
        for _ in 0..MAX_CALLS {
            let now = Instant::now();
            if now >= until {
                break;
            }
            // Live-frames mode reports no verdict; gw0's RX counter shows the frames.
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            })
            .context("BPF_PROG_RUN (XDP live frames)")?;
            sent += repeat as u64;
            let rate = repeat as f64 / now.elapsed().as_secs_f64().max(1e-6);
            let left = until
                .saturating_duration_since(Instant::now())
                .as_secs_f64();
            repeat = (rate * left).clamp(4096.0, (1u64 << 31) as f64) as u32;
        }
        Ok((sent, start.elapsed()))
    })
}

/// The generator and sink programs.
struct Traffic {
    /// Owns the programs and the sink's XDP link.
    ebpf: Ebpf,
    /// The header `sg_bench_tx` restores.
    hdr: Array<MapData, [u8; HDR_LEN]>,
    /// The interface `sg_bench_redirect` sends to.
    redirect_to: Array<MapData, u32>,
}

impl Traffic {
    fn load(topo: &Topology) -> Result<Traffic> {
        let mut ebpf = Ebpf::load(BENCH_OBJECT).context("loading the generator object")?;
        let mut map = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("{name} missing from the generator object"))
        };
        let hdr = Array::try_from(map("SG_BENCH_HDR")?)?;
        let redirect_to = Array::try_from(map("SG_BENCH_REDIRECT")?)?;
        let redirect: &mut SchedClassifier = ebpf
            .program_mut("sg_bench_redirect")
            .context("sg_bench_redirect missing from the generator object")?
            .try_into()?;
        redirect.load().context("loading sg_bench_redirect")?;
        for name in ["sg_bench_tx", "sg_bench_drop"] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("{name} missing from the generator object"))?
                .try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        let drop_prog: &mut Xdp = ebpf
            .program_mut("sg_bench_drop")
            .context("sg_bench_drop")?
            .try_into()?;
        in_netns(&topo.sink, || {
            drop_prog
                .attach("s0", XdpMode::Driver)
                .context("attaching the sink's XDP drop to s0")
                .map(drop)
        })?;
        Ok(Traffic {
            ebpf,
            hdr,
            redirect_to,
        })
    }

    fn tx(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program("sg_bench_tx")
            .context("sg_bench_tx")?
            .try_into()?)
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_once(
    topo: &Topology,
    traffic: &mut Traffic,
    system: System,
    frame_len: usize,
    run_no: u16,
    p: &Params,
    same_cpu: bool,
) -> Result<Fwd> {
    let frame = gen_frame(frame_len, GEN_SPORT_BASE + run_no);
    let mut h = [0u8; HDR_LEN];
    h.copy_from_slice(&frame[..HDR_LEN]);
    traffic
        .hdr
        .set(0, h, 0)
        .context("writing the generator's header")?;
    let installed = Installed::new(topo, traffic, system)?;
    // Totals from here to after the traffic stops prove the path (the path's counters start
    // at zero: fresh pins, fresh nft table).
    let gw1_start = link_stats(&topo.gw, "gw1")?;
    let ip_start = forwarded_datagrams(&topo.gw)?;
    let tx = traffic.tx()?;
    let until = Instant::now() + p.warmup + p.window + Duration::from_millis(300);
    let pin_cpu = (!same_cpu).then_some(0);
    let (sent, before, after) = std::thread::scope(|sc| -> Result<_> {
        let h = sc.spawn(|| generate(tx, &topo.gen_ns, &frame, until, pin_cpu));
        std::thread::sleep(p.warmup);
        let snap = || -> Result<_> {
            Ok((
                Instant::now(),
                link_stats(&topo.gw, "gw1")?,
                link_stats(&topo.gw, "gw0")?,
                snapshot()?,
            ))
        };
        let before = snap();
        std::thread::sleep(p.window);
        let after = snap();
        let sent = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        Ok((sent?, before?, after?))
    })?;
    // Let the last packets drain, then take the totals.
    std::thread::sleep(Duration::from_millis(200));
    let gw1_end = link_stats(&topo.gw, "gw1")?;
    let total_out =
        (gw1_end.tx_packets + gw1_end.tx_dropped) - (gw1_start.tx_packets + gw1_start.tx_dropped);
    let total_kernel = forwarded_datagrams(&topo.gw)? - ip_start;
    let mut counters = installed.counters()?;
    let total_passed = installed.passed(&counters);
    counters.push(("ip_forwarded".into(), total_kernel));

    let (t0, gw1a, gw0a, cpua) = before;
    let (t1, gw1b, gw0b, cpub) = after;
    let secs = (t1 - t0).as_secs_f64();
    let out = (gw1b.tx_packets + gw1b.tx_dropped) - (gw1a.tx_packets + gw1a.tx_dropped);
    let ratio = |n: u64| n as f64 / total_out.max(1) as f64;
    let r = Fwd {
        system,
        frame: frame_len,
        pps: out as f64 / secs,
        delivered: (gw1b.tx_packets - gw1a.tx_packets) as f64 / out.max(1) as f64,
        offered: sent.0 as f64 / sent.1.as_secs_f64(),
        reached: (gw0b.rx_packets - gw0a.rx_packets) as f64 / secs,
        busy: busy_between(&cpua.cpus, &cpub.cpus),
        others: others_between(&cpua, &cpub),
        path_ratio: total_passed.map(ratio),
        kernel_ratio: ratio(total_kernel),
        counters,
    };
    ensure!(
        out > 0,
        "{}: nothing was forwarded (counters {:?})",
        system.name(),
        r.counters
    );
    // Proof of the path: the path's own count matches what left gw1, and the kernel's IP
    // forwarding saw the packets exactly when the path is the kernel's.
    let close = |x: f64| (0.99..=1.01).contains(&x);
    let kernel_ok = if system.kernel_forwarding() {
        close(r.kernel_ratio)
    } else {
        r.kernel_ratio < 0.01
    };
    ensure!(
        r.path_ratio.is_none_or(close) && kernel_ok,
        "{}: gw1 sent {total_out} packets, the path counted {total_passed:?}, IP forwarding \
         {total_kernel}: traffic did not take the measured path (counters {:?})",
        system.name(),
        r.counters
    );
    drop(installed);
    Ok(r)
}

/// Median, NaN for no values (printed as "–").
impl Fwd {
    /// Whether other processes used the CPUs during the window.
    fn disturbed(&self) -> bool {
        self.others > DISTURBED
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn mpps(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{:.3} Mpps", x / 1e6)
    }
}

fn ns_text(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.0} ns")
    }
}

fn forwarding_benchmark(p: &Params, same_cpu: bool, systems: &[System]) -> Result<String> {
    eprintln!("part 2: forwarding in namespaces");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let same_cpu = same_cpu || cpus < 2;
    let (background, waited) = settle()?;
    let topo = Topology::build(same_cpu)?;
    let setup = topo.describe()?;
    let mut traffic = Traffic::load(&topo)?;

    let sizes = [64usize, 1400];
    let mut runs: Vec<Fwd> = Vec::new();
    let mut run_no = 0u16;
    for round in 0..p.rounds {
        for &size in &sizes {
            // Rotate the order between rounds.
            let mut order = systems.to_vec();
            order.rotate_left(round % systems.len());
            for system in order {
                let r = forward_once(&topo, &mut traffic, system, size, run_no, p, same_cpu)
                    .with_context(|| format!("{} with {size}-byte frames", system.name()))?;
                run_no += 1;
                eprintln!(
                    "  round {} {size:>4} B {:<38} {} (offered {}, busy {}, others {:.1}%){}",
                    round + 1,
                    system.name(),
                    mpps(r.pps),
                    mpps(r.offered),
                    percent(&r.busy),
                    r.others * 100.0,
                    if r.disturbed() { " disturbed" } else { "" }
                );
                runs.push(r);
            }
        }
    }
    drop(traffic);
    drop(topo);

    let mut o = String::new();
    writeln!(
        o,
        "## 2. Forwarding gateway → LAN in network namespaces (UDP, one flow, masquerade)\n"
    )?;
    writeln!(
        o,
        "Generator: {} on g0{}. \
         Sink: XDP drop on s0. Forwarded = packets the gateway sent out of gw1 (TX packets + \
         TX drops of gw1, i.e. handed to the sink's veth queue) in a {:.0}-second window after \
         {:.1} s of warm-up; {} round(s), order rotated between rounds, a new flow per run. \
         {setup}. CPU busy in the last second before the runs: {} (after waiting {waited} s \
         for the machine to settle).\n",
        sender().unwrap_or(Sender::XdpLiveFrames).describe(),
        if same_cpu {
            "; generator and forwarding share the CPUs (no RPS, no pinning)"
        } else {
            ", pinned to CPU 0; gw0's receive processing, and with it the whole forwarding \
             path, steered to CPU 1 by RPS"
        },
        p.window.as_secs_f64(),
        p.warmup.as_secs_f64(),
        p.rounds,
        percent(&background)
    )?;
    if background.iter().any(|b| *b > 0.1) {
        writeln!(
            o,
            "**Warning: the machine was not idle before the run; the numbers are disturbed.**\n"
        )?;
    }
    // Runs disturbed by other processes only lose throughput: summarise the undisturbed ones
    // when there are any.
    let selected = |s: System, size: usize| -> Vec<&Fwd> {
        let all: Vec<&Fwd> = runs
            .iter()
            .filter(|r| r.system == s && r.frame == size)
            .collect();
        let clean: Vec<&Fwd> = all.iter().copied().filter(|r| !r.disturbed()).collect();
        if clean.is_empty() { all } else { clean }
    };
    let stat = |s: System, size: usize, f: &dyn Fn(&Fwd) -> f64| -> (f64, f64, usize) {
        let v: Vec<f64> = selected(s, size).into_iter().map(f).collect();
        let best = v.iter().copied().fold(f64::NAN, f64::max);
        (median(v.clone()), best, v.len())
    };
    let disturbed = runs.iter().filter(|r| r.disturbed()).count();
    writeln!(
        o,
        "Median (best) over the rounds{}:\n",
        if disturbed > 0 {
            format!(
                "; {disturbed} of {} runs were disturbed by other processes (their CPU time \
                 above {:.0}% of the machine in the window, marked ⚠ below) and are left out \
                 wherever an undisturbed run of the same kind exists",
                runs.len(),
                DISTURBED * 100.0
            )
        } else {
            String::new()
        }
    )?;
    writeln!(
        o,
        "| frame | swiftgate (XDP + TC eBPF) | swiftgate (TC eBPF) | Linux forwarding + \
         nftables | ratio XDP + TC (of medians) | ratio TC only (of medians) | target ≥ 3× | \
         reference: Linux forwarding, no rules | reference: bare TC redirect |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|---:|---|---:|---:|")?;
    let cell = |(m, b, _): (f64, f64, usize)| {
        if m.is_nan() {
            "–".to_string()
        } else {
            format!("{:.3} ({:.3}) Mpps", m / 1e6, b / 1e6)
        }
    };
    let ratio_text = |a: (f64, f64, usize), b: (f64, f64, usize)| {
        let r = a.0 / b.0;
        if r.is_nan() {
            "–".to_string()
        } else {
            format!("{r:.2}× (best: {:.2}×)", a.1 / b.1)
        }
    };
    for &size in &sizes {
        let pps = |s| stat(s, size, &|r: &Fwd| r.pps);
        let (xdp, sg, nf) = (
            pps(System::SwiftgateXdp),
            pps(System::Swiftgate),
            pps(System::Nftables),
        );
        let best = (xdp.0 / nf.0).max(sg.0 / nf.0);
        writeln!(
            o,
            "| {size} B | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(xdp),
            cell(sg),
            cell(nf),
            ratio_text(xdp, nf),
            ratio_text(sg, nf),
            if best.is_nan() {
                "–"
            } else if xdp.0 / nf.0 >= 3.0 && sg.0 / nf.0 >= 3.0 {
                "met (both)"
            } else if xdp.0 / nf.0 >= 3.0 {
                "met with the XDP stage"
            } else if sg.0 / nf.0 >= 3.0 {
                "met (TC)"
            } else {
                "not met"
            },
            cell(pps(System::PlainForwarding)),
            cell(pps(System::BareRedirect)),
        )?;
    }
    writeln!(o)?;
    if !same_cpu {
        writeln!(
            o,
            "CPU 1 time per forwarded packet, median (CPU 1 busy share / forwarded rate; CPU 1 \
             runs the whole forwarding path, the RPS hand-over from CPU 0 and the sink's XDP \
             drop):\n"
        )?;
        writeln!(
            o,
            "| frame | swiftgate (TC) | nftables | Linux forwarding, no rules | bare TC redirect |"
        )?;
        writeln!(o, "|---|---:|---:|---:|---:|")?;
        for &size in &sizes {
            let ns = |s| {
                stat(s, size, &|r: &Fwd| {
                    r.busy.get(1).copied().unwrap_or(0.0) * 1e9 / r.pps.max(1.0)
                })
                .0
            };
            writeln!(
                o,
                "| {size} B | {} | {} | {} | {} |",
                ns_text(ns(System::Swiftgate)),
                ns_text(ns(System::Nftables)),
                ns_text(ns(System::PlainForwarding)),
                ns_text(ns(System::BareRedirect))
            )?;
        }
        writeln!(o)?;
    }
    writeln!(
        o,
        "Every run: forwarded rate, share the sink's queue took, generator rate, rate reaching \
         gw0, CPU busy in the window, the path's own count and the kernel's IP forwarding count \
         over gw1's (proof of the path taken), and the path's counters after the run:\n"
    )?;
    writeln!(
        o,
        "| frame | system | forwarded | delivered | offered | reached gw0 | CPU busy | other \
         processes | path/gw1 | IP fwd/gw1 | counters |"
    )?;
    writeln!(o, "|---|---|---:|---:|---:|---:|---|---|---:|---:|---|")?;
    for r in &runs {
        writeln!(
            o,
            "| {} B | {} | {} | {:.0}% | {} | {} | {} | {}{:.1}% | {} | {:.3} | {} |",
            r.frame,
            r.system.name(),
            mpps(r.pps),
            r.delivered * 100.0,
            mpps(r.offered),
            mpps(r.reached),
            percent(&r.busy),
            if r.disturbed() { "⚠ " } else { "" },
            r.others * 100.0,
            r.path_ratio.map_or("–".into(), |x| format!("{x:.3}")),
            r.kernel_ratio,
            r.counters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        )?;
    }
    writeln!(o)?;
    Ok(o)
}
