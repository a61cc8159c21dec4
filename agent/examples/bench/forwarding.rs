//! Part 2 of the benchmark: forwarding gateway -> LAN in network namespaces, swiftgate beside
//! Linux forwarding + nftables, with the packet generator and its fallback sender.

use super::*;

pub(crate) const MAC_G0: &str = "02:5b:00:00:00:01";
pub(crate) const MAC_GW0: &str = "02:5b:00:00:00:02";
pub(crate) const MAC_GW1: &str = "02:5b:00:00:00:03";
pub(crate) const MAC_S0: &str = "02:5b:00:00:00:04";
pub(crate) const GEN_IP: &str = "100.64.0.2";
pub(crate) const SINK_IP: &str = "192.0.2.10";
pub(crate) const SINK_PORT: u16 = 9;
/// Source port of the first run's flow; run `i` uses `GEN_SPORT_BASE + i`, so every run is a
/// new flow for both systems (nftables then sets up a fresh conntrack entry and NAT binding).
pub(crate) const GEN_SPORT_BASE: u16 = 40_000;
/// Header bytes `sg_bench_tx` restores in every frame (ebpf/src/bench.rs).
pub(crate) const HDR_LEN: usize = 42;

pub(crate) fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, b) in s.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).expect("MAC literal");
    }
    m
}

/// Runs a command and returns its stdout; fails with the command and its stderr.
pub(crate) fn cmd(args: &[&str]) -> Result<String> {
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
pub(crate) fn ns_cmd(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    cmd(&full)
}

/// Runs `f` on a thread that has entered network namespace `ns` (see
/// [`swiftgate_testkit::netns::run_in`]).
pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    swiftgate_testkit::netns::run_in(&Path::new("/run/netns").join(ns), f)?
}

pub(crate) fn ns_sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    in_netns(ns, || {
        std::fs::write(format!("/proc/sys/{key}"), value)
            .with_context(|| format!("writing /proc/sys/{key} in {ns}"))
    })
}

/// Loads an nftables rule set into namespace `ns`.
pub(crate) fn nft_apply(ns: &str, rules: &str) -> Result<()> {
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
pub(crate) struct Topology {
    /// Name of the generator's namespace.
    pub(crate) gen_ns: String,
    /// Name of the gateway's namespace.
    pub(crate) gw: String,
    /// Name of the sink's namespace.
    pub(crate) sink: String,
    /// swiftgate's pin directory (`_pins`' path).
    pub(crate) pin: PathBuf,
    pub(crate) _pins: swiftgate_testkit::PinDir,
    pub(crate) namespaces: [swiftgate_testkit::NetNs; 3],
}

impl Topology {
    pub(crate) fn build(same_cpu: bool) -> Result<Topology> {
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

    pub(crate) fn describe(&self) -> Result<String> {
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
pub(crate) struct LinkStats {
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
    pub(crate) tx_dropped: u64,
}

pub(crate) fn link_stats(ns: &str, dev: &str) -> Result<LinkStats> {
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

/// Which forwarding path a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum System {
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
    pub(crate) const ALL: [System; 5] = [
        System::Swiftgate,
        System::SwiftgateXdp,
        System::Nftables,
        System::PlainForwarding,
        System::BareRedirect,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Swiftgate => "swiftgate (TC eBPF)",
            System::SwiftgateXdp => "swiftgate (XDP + TC eBPF)",
            System::Nftables => "Linux forwarding + nftables",
            System::PlainForwarding => "reference: Linux forwarding, no rules",
            System::BareRedirect => "reference: bare TC redirect",
        }
    }

    /// Whether the packets go through the kernel's IP forwarding (rather than a TC redirect).
    pub(crate) fn kernel_forwarding(self) -> bool {
        matches!(self, System::Nftables | System::PlainForwarding)
    }
}

/// `Ip: ForwDatagrams` of namespace `ns` (packets the kernel's IP forwarding handled).
pub(crate) fn forwarded_datagrams(ns: &str) -> Result<u64> {
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

/// What an installed path allows and how large swiftgate's conntrack table is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathSpec {
    /// The UDP destination ports the policy allows (first, last).
    pub(crate) ports: (u16, u16),
    /// swiftgate's `[conntrack] capacity` (`None`: the agent's default). Linux's
    /// table size is the host-wide `nf_conntrack_max`, which the new-flow part sets itself.
    pub(crate) ct_capacity: Option<u32>,
}

impl PathSpec {
    /// The one-flow measurement: UDP to port 9, default table sizes.
    pub(crate) const ONE_FLOW: PathSpec = PathSpec {
        ports: (SINK_PORT, SINK_PORT),
        ct_capacity: None,
    };

    /// The ports as a policy and nft write them (`9`, `10000-10999`).
    pub(crate) fn ports_text(&self) -> String {
        match self.ports {
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        }
    }
}

/// The routing peer's configuration for swiftgate: one peer, one masqueraded resource, one
/// policy (UDP to the ports of `spec`); with the XDP stage when `xdp`.
pub(crate) fn gw_config(pin: &Path, xdp: bool, spec: &PathSpec) -> String {
    format!(
        r#"
[interface]
overlay = "gw0"
overlay_l2 = true
xdp = {xdp}
addresses = ["100.64.0.1/10"]
lan = ["gw1"]
pin_path = "{}"

[conntrack]
{}# Every flow comes from the one generator: no per-source share (Linux has none either).
source_share = 100

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
ports = ["{}"]
"#,
        pin.display(),
        spec.ct_capacity
            .map_or(String::new(), |c| format!("capacity = {c}\n")),
        spec.ports_text()
    )
}

/// What a NetBird routing peer installs for the same policy: a stateful forward filter with a
/// default drop and one accept rule for the policy (UDP to the ports of `spec`), and
/// masquerade from the overlay out of the LAN interface.
pub(crate) fn nft_rules(spec: &PathSpec) -> String {
    format!(
        r#"
table ip sgbench {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related counter accept comment "established"
        iifname "gw0" oifname "gw1" ip saddr 100.64.0.2 ip daddr 192.0.2.10 udp dport {} counter accept comment "policy"
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "gw1" ip saddr 100.64.0.0/10 counter masquerade comment "masquerade"
    }}
}}
"#,
        spec.ports_text()
    )
}

/// A forwarding path set up in the gw namespace; removed on drop.
pub(crate) struct Installed<'a> {
    pub(crate) topo: &'a Topology,
    pub(crate) system: System,
    /// The reference redirect program's TCX link (detached when dropped).
    pub(crate) link: Option<SchedClassifierLink>,
}

impl<'a> Installed<'a> {
    pub(crate) fn new(
        topo: &'a Topology,
        traffic: &mut Traffic,
        system: System,
        spec: &PathSpec,
    ) -> Result<Installed<'a>> {
        let mut me = Installed {
            topo,
            system,
            link: None,
        };
        match system {
            System::Swiftgate | System::SwiftgateXdp => {
                let xdp = system == System::SwiftgateXdp;
                let cfg = AgentConfig::from_toml(&gw_config(&topo.pin, xdp, spec))
                    .context("gateway configuration")?;
                // What `swiftgate up` does before its event loop. The links are pinned, so
                // the programs stay attached after the thread ends.
                in_netns(&topo.gw, move || run::bring_up(&cfg).map(drop))?;
            }
            System::Nftables => nft_apply(&topo.gw, &nft_rules(spec))?,
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
    pub(crate) fn counters(&self) -> Result<Vec<(String, u64)>> {
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
    pub(crate) fn passed(&self, counters: &[(String, u64)]) -> Option<u64> {
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
pub(crate) struct Fwd {
    pub(crate) system: System,
    pub(crate) frame: usize,
    /// Packets per second the gateway sent out of gw1 in the window.
    pub(crate) pps: f64,
    /// Of those, the share the sink's veth queue took (the rest it dropped as full).
    pub(crate) delivered: f64,
    /// Frames per second the generator sent.
    pub(crate) offered: f64,
    /// Packets per second gw0 received.
    pub(crate) reached: f64,
    /// Busy share per CPU in the window.
    pub(crate) busy: Vec<f64>,
    /// Share of the machine's CPU time other processes used in the window.
    pub(crate) others: f64,
    /// The path's own count of passed packets / packets out of gw1, over the whole run.
    pub(crate) path_ratio: Option<f64>,
    /// Packets through the kernel's IP forwarding / packets out of gw1, over the whole run.
    pub(crate) kernel_ratio: f64,
    /// The path's counters after the run.
    pub(crate) counters: Vec<(String, u64)>,
}

/// The UDP frame the generator sends (`len` bytes without FCS).
pub(crate) fn gen_frame(len: usize, sport: u16) -> Vec<u8> {
    flow_frame(len, sport, SINK_PORT)
}

/// A UDP frame of `len` bytes (without FCS) from the generator to the sink's port `dport`,
/// addressed to gw0's MAC.
pub(crate) fn flow_frame(len: usize, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = pkt::udp(GEN_IP, sport, SINK_IP, dport, &vec![0xa5; len - HDR_LEN]);
    f[0..6].copy_from_slice(&mac(MAC_GW0));
    f[6..12].copy_from_slice(&mac(MAC_G0));
    assert_eq!(f.len(), len);
    f
}

/// How the generator sends its frames (fixed by the first run and named in the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sender {
    /// `sg_bench_tx` through `BPF_PROG_RUN` in XDP live-frames mode.
    XdpLiveFrames,
    /// A packet socket on g0 with `sendmmsg` (PACKET_QDISC_BYPASS), used where the kernel
    /// refuses XDP live frames (EPERM: seen on a machine whose capability bounding set lacked
    /// CAP_SYS_RESOURCE). It costs more CPU per frame, so the offered rate is lower; the CPU
    /// time per forwarded packet on the forwarding CPU is the figure to compare then.
    AfPacket,
}

impl Sender {
    pub(crate) fn describe(self) -> &'static str {
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
pub(crate) static SENDER: std::sync::Mutex<Option<Sender>> = std::sync::Mutex::new(None);

pub(crate) fn sender() -> Option<Sender> {
    *SENDER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `e` is the kernel's EPERM.
pub(crate) fn is_eperm(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
    })
}

/// Sends `frame` out of g0 (in the gen namespace) until `until`, with XDP live frames where the
/// kernel allows them and a packet socket where it answers EPERM (said once on stderr and in
/// the report). Returns the frames sent and the time taken.
pub(crate) fn generate(
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
pub(crate) fn pin_to(cpu: Option<usize>) -> Result<()> {
    if let Some(cpu) = cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).context("cpu set")?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .context("pinning the generator")?;
    }
    Ok(())
}

/// Frames per `sendmmsg` call of the packet-socket senders.
pub(crate) const BATCH: usize = 64;

/// A packet socket bound to g0 (of the calling thread's namespace) that bypasses the qdisc
/// (PACKET_QDISC_BYPASS).
pub(crate) fn packet_socket_g0() -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    /// `PACKET_QDISC_BYPASS` (linux/if_packet.h).
    const PACKET_QDISC_BYPASS: libc::c_int = 20;
    let ifindex = nix::net::if_::if_nametoindex("g0").context("g0 in the gen namespace")?;
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(
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
    ensure!(
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
    ensure!(r == 0, "binding to g0: {}", std::io::Error::last_os_error());
    Ok(fd)
}

/// One `sendmmsg` of `msgs` on `fd`: the frames sent, 0 when the device queue was full
/// (ENOBUFS, EAGAIN) or the call was interrupted (the caller retries).
///
/// # Safety
/// Every header in `msgs` must point at valid iovecs, which point at valid frames; all of
/// them must stay valid for the call (the kernel only reads them).
pub(crate) unsafe fn send_some(
    fd: &std::os::fd::OwnedFd,
    msgs: &mut [libc::mmsghdr],
) -> Result<u64> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: as the caller guarantees.
    let n = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            0,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
            _ => Err(anyhow::Error::new(e).context("sendmmsg on g0")),
        };
    }
    Ok(n as u64)
}

/// Sends `frame` out of g0 through a packet socket, 64 frames per `sendmmsg`, until `until`
/// (and at most `MAX_CALLS` calls). A full device queue (ENOBUFS, EAGAIN) is retried.
pub(crate) fn generate_packet_socket(
    ns: &str,
    frame: &[u8],
    until: Instant,
    pin_cpu: Option<usize>,
) -> Result<(u64, Duration)> {
    const MAX_CALLS: u64 = 1 << 28;
    in_netns(ns, || {
        pin_to(pin_cpu)?;
        let fd = packet_socket_g0()?;
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
            // `frame`; all of them outlive the call.
            sent += unsafe { send_some(&fd, &mut msgs)? };
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
pub(crate) fn generate_xdp(
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
pub(crate) struct Traffic {
    /// Owns the programs and the sink's XDP link.
    pub(crate) ebpf: Ebpf,
    /// The header `sg_bench_tx` restores.
    pub(crate) hdr: Array<MapData, [u8; HDR_LEN]>,
    /// The interface `sg_bench_redirect` sends to.
    pub(crate) redirect_to: Array<MapData, u32>,
}

impl Traffic {
    pub(crate) fn load(topo: &Topology) -> Result<Traffic> {
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

    pub(crate) fn tx(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program("sg_bench_tx")
            .context("sg_bench_tx")?
            .try_into()?)
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_once(
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
    let installed = Installed::new(topo, traffic, system, &PathSpec::ONE_FLOW)?;
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
    pub(crate) fn disturbed(&self) -> bool {
        self.others > DISTURBED
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn mpps(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{:.3} Mpps", x / 1e6)
    }
}

pub(crate) fn ns_text(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.0} ns")
    }
}

pub(crate) fn forwarding_benchmark(
    p: &Params,
    same_cpu: bool,
    systems: &[System],
) -> Result<String> {
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
        disturbed_note(disturbed, runs.len())
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

/// What the report's "Median (best) over the rounds" line adds when `disturbed` of `total`
/// runs were disturbed (empty when none was).
pub(crate) fn disturbed_note(disturbed: usize, total: usize) -> String {
    if disturbed == 0 {
        return String::new();
    }
    format!(
        "; {disturbed} of {total} runs were disturbed by other processes (their CPU time above \
         {:.0}% of the machine in the window, marked ⚠ below) and are left out wherever an \
         undisturbed run of the same kind exists",
        DISTURBED * 100.0
    )
}
