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
//! Part 2b counts new flows per second through the same topology: every frame a new UDP flow
//! (sent by an AF_PACKET sender that writes each frame's ports), every flow allowed and
//! masqueraded, swiftgate beside Linux forwarding + nftables (conntrack + masquerade), with
//! the connection tables below capacity and at capacity (full of unreplied flows first).
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

mod cpu;
mod forwarding;
mod micro;
mod newflows;

use cpu::*;
use forwarding::*;
use micro::*;
use newflows::*;
use swiftgate::{
    config::{
        AgentConfig, ConntrackConfig, FileConfig, FlowEvents, InterfaceConfig, NetworkConfig,
        PeerConfig, PolicyConfig, ResourceConfig,
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
    #[arg(long, conflicts_with_all = ["only_forwarding", "only_new_flows"])]
    only_micro: bool,
    /// Only part 2 (namespace forwarding, one flow per run).
    #[arg(long, conflicts_with = "only_new_flows")]
    only_forwarding: bool,
    /// Only part 2b (new flows per second, tables below and at capacity).
    #[arg(long)]
    only_new_flows: bool,
    /// Run the generator and the forwarding on the same CPU (no RPS, no pinning).
    #[arg(long)]
    same_cpu: bool,
    /// Forwarding paths of parts 2 and 2b (repeatable; default: all of them in part 2;
    /// swiftgate, nftables and plain in part 2b, which has no use for redirect).
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

    if !args.only_forwarding && !args.only_new_flows {
        let s = micro_benchmarks(&p)?;
        print!("{s}");
        out.push_str(&s);
    }
    if !args.only_micro && !args.only_new_flows {
        let systems = if args.systems.is_empty() {
            System::ALL.to_vec()
        } else {
            args.systems.clone()
        };
        let s = forwarding_benchmark(&p, args.same_cpu, &systems)?;
        print!("{s}");
        out.push_str(&s);
    }
    if !args.only_micro && !args.only_forwarding {
        let s = new_flow_benchmark(&p, args.same_cpu, &args.systems)?;
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
