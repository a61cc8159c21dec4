//! Part 1 of the benchmark: per-packet cost of the programs through `BPF_PROG_TEST_RUN`
//! (the kernel lab of `swiftgate-testkit`).

use super::*;

/// Port of rules that exist for no flow (the deny path's packets).
pub(crate) const NO_RULE_PORT: u16 = 999;
/// The masquerade-off resource (on the lab's `lan2`) and its port.
pub(crate) const PLAIN_IP: &str = "198.51.100.10";
pub(crate) const PLAIN_PORT: u16 = 5001;
/// First rule port; rule ports are `RULE_PORT_BASE + p`.
pub(crate) const RULE_PORT_BASE: u16 = 1000;
/// First source port of the repeat=1 sample flows (fill flows use 1024..=2023).
pub(crate) const SAMPLE_SPORT_BASE: u16 = 20_000;

/// How `n` generated rules are spread: rule `i` gives source group `src-(i % s)` (one peer
/// each) access to resource `dst-((i / s) % d)` on TCP port `1000 + i / (s * d)`. Every rule
/// is a distinct (source, resource, port), so the policy map holds one entry per rule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) n: usize,
    pub(crate) s: usize,
    pub(crate) d: usize,
    pub(crate) p: usize,
}

impl Shape {
    pub(crate) fn new(n: usize) -> Shape {
        let s = n.clamp(1, 100);
        let d = n.div_ceil(s).clamp(1, 100);
        let p = n.div_ceil(s * d);
        Shape { n, s, d, p }
    }

    /// (source peer, resource, port) of rule `i`.
    pub(crate) fn rule(&self, i: usize) -> (usize, usize, u16) {
        (
            i % self.s,
            (i / self.s) % self.d,
            RULE_PORT_BASE + (i / (self.s * self.d)) as u16,
        )
    }

    /// Whether every (source, resource, port) combination has a rule (needed by the fill).
    pub(crate) fn complete(&self) -> bool {
        self.n == self.s * self.d * self.p
    }
}

pub(crate) fn peer_ip(s: usize) -> String {
    format!("100.64.1.{}", s + 1)
}

pub(crate) fn resource_ip(d: usize) -> String {
    format!("192.0.2.{}", d + 10)
}

/// Destination network of the repeat-based new-flow measurement (a masquerading resource;
/// `sg_bench_new_flow` sets the last byte of the address per run).
pub(crate) const NEW_FLOW_NET: &str = "203.0.113.0";

/// The lab configuration with `shape.n` generated rules, plus one rule from peer 0 to the
/// masquerade-off resource [`PLAIN_IP`] (the repeat-based established measurement needs a
/// flow whose packets the program does not rewrite) and one from the last rule's source to
/// the masquerading resource [`NEW_FLOW_NET`]/24 on the last rule's port (the repeat-based
/// new-flow measurement needs a new destination every 64,512 flows).
/// The benchmark's configuration; the overlay is the lab's veth `ovl` (Ethernet), or its TUN
/// `tun0` when `tun_overlay`.
pub(crate) fn bench_config(
    pin: &Path,
    shape: &Shape,
    ct_capacity: u32,
    tun_overlay: bool,
) -> AgentConfig {
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
        // Every benchmark flow comes from one source, and its masqueraded flows outnumber
        // any share of the masquerade ports: no per-source share (the new-flow path and the
        // floor then skip the share's two lookups; the source is still counted).
        conntrack: ConntrackConfig {
            source_share: Some(100),
            ..Default::default()
        },
    };
    AgentConfig::validate(&file).expect("the generated benchmark configuration is valid")
}

/// Distribution of per-run durations (ns).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Dist {
    pub(crate) n: usize,
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) mean: f64,
}

impl Dist {
    pub(crate) fn of(mut v: Vec<u64>) -> Dist {
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
pub(crate) struct Micro {
    /// Column heading.
    pub(crate) label: String,
    /// Entries in SG_POLICY (LPM keys).
    pub(crate) policy_entries: usize,
    /// Tracked flows (SG_CT4 + SG_CT6) before the measurements (after the fill).
    pub(crate) ct_entries: usize,
    /// Established, masquerade off, repeat-based: median over calls (ns/packet).
    pub(crate) est_plain: u64,
    /// The reply direction of that flow on the LAN side (`sg_lan_ingress`), repeat-based.
    pub(crate) est_reply: u64,
    /// The same through the XDP stage.
    pub(crate) xdp_plain: u64,
    /// The XDP stage on the same packet with repeat=1 (timer reference for XDP).
    pub(crate) xdp_plain_one: Dist,
    /// Established with masquerade through the XDP stage, repeat=1 per flow.
    pub(crate) xdp_masq: Dist,
    /// Deny, flow_events = none, repeat-based.
    pub(crate) deny: u64,
    /// Deny, flow_events = drops, repeat-based in chunks with the ring drained.
    pub(crate) deny_events: f64,
    /// Deny, repeat=1 per run (timer reference).
    pub(crate) deny_one: Dist,
    /// New flow accepted, repeat=1, distinct flows.
    pub(crate) new_flow: Dist,
    /// New flow accepted, repeat-based through `sg_bench_new_flow`.
    pub(crate) new_flow_rep: Harnessed,
    /// The new-flow path's map operations alone (`sg_floor_new_flow`), the same way.
    pub(crate) new_flow_floor: Harnessed,
    /// Established with masquerade (SNAT rewrite), repeat-based through
    /// `sg_bench_same_packet`.
    pub(crate) masq_rep: Harnessed,
    /// Its reply on the LAN side (reverse NAT in `sg_lan_ingress`), the same way.
    pub(crate) masq_reply_rep: Harnessed,
    /// Established with masquerade through the XDP stage, through `sg_bench_same_frame`.
    pub(crate) xdp_masq_rep: Harnessed,
    /// Established with masquerade, repeat=1.
    pub(crate) est_masq: Dist,
    /// New flows while filling the conntrack (repeat=1).
    pub(crate) fill: Option<Dist>,
    /// Share of the machine's CPU time other processes used meanwhile.
    pub(crate) others: f64,
}

/// Counter value summed over CPUs.
pub(crate) fn counter(lab: &Lab, c: Counter) -> u64 {
    lab.counter(c)
}

/// Runs `f` and checks that counter `c` grew by exactly `want`.
pub(crate) fn expect_growth<T>(
    lab: &mut Lab,
    c: Counter,
    want: u64,
    f: impl FnOnce(&mut Lab) -> T,
) -> T {
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
pub(crate) fn median_ns(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Repeat-based timing of the overlay program: `calls` calls of `repeat` runs each; median
/// of the per-call means.
pub(crate) fn repeat_median(lab: &mut Lab, pkt: &[u8], want_ret: u32, p: &Params) -> u64 {
    let ovl = lab.ovl;
    repeat_median_of(lab, programs::OVERLAY_INGRESS_L2, ovl, pkt, want_ret, p)
}

/// [`repeat_median`] for program `prog` with the packet arriving on `ifindex`.
pub(crate) fn repeat_median_of(
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
pub(crate) fn once(lab: &mut Lab, pkt: &[u8], want_ret: u32) -> u64 {
    let ovl = lab.ovl;
    let (ret, d) = lab.run_repeat(programs::OVERLAY_INGRESS_L2, ovl, pkt, 1);
    assert_eq!(ret, want_ret, "unexpected verdict in a single run");
    d.as_nanos() as u64
}

pub(crate) fn pinned_map(lab: &Lab, name: &str) -> Result<Map> {
    let path = lab.dp.pin_path().join("maps").join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {name}"))
}

pub(crate) fn count_policy_entries(lab: &Lab) -> Result<usize> {
    let m: LpmTrie<MapData, PolicyKey, PolicyValue> =
        LpmTrie::try_from(pinned_map(lab, maps::POLICY)?)?;
    Ok(m.keys().count())
}

/// Tracked flows, both families.
pub(crate) fn count_conntrack(lab: &Lab) -> Result<usize> {
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
pub(crate) fn fill_conntrack(lab: &mut Lab, shape: &Shape, fill: usize) -> Dist {
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
pub(crate) fn micro_column(label: String, n: usize, fill: usize, p: &Params) -> Result<Micro> {
    let shape = Shape::new(n);
    // Room for the fill and every new flow of the column without LRU eviction (an LRU map
    // may evict before it is full, hence twice).
    // The repeat-based new flows, then as many for the floor.
    let flows = fill + p.samples + 2 * p.repeat as usize + 16;
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
    (m.new_flow_rep, m.new_flow_floor) = new_flow_repeat(&mut lab, s, port, p)?;
    m.others = others_between(&start, &snapshot()?);
    Ok(m)
}

/// A repeat-based measurement through a harness program of ebpf/src/bench.rs that prepares
/// every repetition's packet and tail-calls the program under test.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Harnessed {
    /// Mean ns per run of the harness in front of the program under test.
    pub(crate) wrapped: u64,
    /// Mean ns per run of the harness in front of a program that returns at once, minus that
    /// program alone: what the harness adds (medians of `calls` calls).
    pub(crate) harness: u64,
}

impl Harnessed {
    /// The program's time per run, with the kernel's test-run loop as in the other
    /// repeat-based rows.
    pub(crate) fn net(&self) -> u64 {
        self.wrapped.saturating_sub(self.harness)
    }
}

/// Where [`same_packet_repeat`] runs the program under test.
#[derive(Clone, Copy)]
pub(crate) enum Hook {
    /// A TC program of the lab, with the packet arriving on `ifindex`.
    Tc { prog: &'static str, ifindex: u32 },
    /// The lab's XDP stage (packet arriving on the overlay interface).
    Xdp,
}

/// Times a path that rewrites its packet with `repeat`: `sg_bench_same_packet` (TC) or
/// `sg_bench_same_frame` (XDP) writes `pkt`'s first bytes back before every run, so each
/// repetition sees `pkt`; every run must return `want_ret` and count as established.
pub(crate) fn same_packet_repeat(
    lab: &mut Lab,
    hook: Hook,
    pkt: &[u8],
    p: &Params,
) -> Result<Harnessed> {
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
/// rule's port and tail-calls the overlay program; each run must open a flow. Then the same
/// with the floor program `sg_floor_new_flow` (ebpf/src/floor.rs: the path's map lookups,
/// inserts and FIB lookup alone) behind the harness, on the next `repeat` source ports.
/// Returns (new flow, floor).
pub(crate) fn new_flow_repeat(
    lab: &mut Lab,
    src: usize,
    port: u16,
    p: &Params,
) -> Result<(Harnessed, Harnessed)> {
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

    // The overlay program and the floor behind the wrapper, `repeat` new flows each, in
    // quarters ordered path, floor, floor, path, so that both meet the table at the same fill
    // on average (a fuller table costs more). The sequence goes on, so every run is a new
    // flow.
    let overlay_fd = lab
        .dp
        .program(programs::OVERLAY_INGRESS_L2)
        .context("overlay program")?
        .fd()?
        .try_clone()?;
    let floor_fd = {
        let floor = lab.dp.program(FLOOR_PROGRAM)?;
        if floor.fd().is_err() {
            floor.load().context("loading the floor program")?;
        }
        floor.fd()?.try_clone()?
    };
    seq.set(0, 0, 0)?;
    let quarter = p.repeat / 4;
    let (mut path_ns, mut floor_ns) = (0u64, 0u64);
    for is_path in [true, false, false, true] {
        let before = count_conntrack(lab)?;
        let (ret, ns) = if is_path {
            next.set(0, &overlay_fd, 0)?;
            expect_growth(lab, Counter::AcceptNew, quarter as u64, |_| {
                run(&ebpf, "sg_bench_new_flow", quarter)
            })?
        } else {
            next.set(0, &floor_fd, 0)?;
            run(&ebpf, "sg_bench_new_flow", quarter)?
        };
        let what = if is_path { "new flow" } else { "floor" };
        ensure!(
            ret == TC_ACT_REDIRECT,
            "{what} through the harness: verdict {ret}"
        );
        let after = count_conntrack(lab)?;
        ensure!(
            after == before + quarter as usize,
            "{what}: conntrack went from {before} to {after} entries over {quarter} new flows"
        );
        if is_path {
            path_ns += ns;
        } else {
            floor_ns += ns;
        }
    }
    let harness = wrapped_accept.saturating_sub(alone);
    Ok((
        Harnessed {
            wrapped: path_ns / 2,
            harness,
        },
        Harnessed {
            wrapped: floor_ns / 2,
            harness,
        },
    ))
}

/// The new-flow path's map operations alone (ebpf/src/floor.rs).
const FLOOR_PROGRAM: &str = "sg_floor_new_flow";

/// Whether an Ethernet/IPv4/TCP frame's checksum equals the pseudo-header seed that checksum
/// offload leaves (what the XDP stage leaves to TC).
pub(crate) fn checksum_is_seed(frame: &[u8]) -> bool {
    let seed = pkt::tcp4_seed(frame);
    let check = u16::from_be_bytes([frame[50], frame[51]]);
    check == seed || (seed == 0xffff && check == 0) || (seed == 0 && check == 0xffff)
}

/// Deny path with `flow_events = "drops"`: the ring buffer (4 MiB, ~52,000 events) would
/// fill within one 1M-repeat call, after which only the failed reservation would be timed,
/// so the runs go in chunks of 40,000 with the ring drained after each.
pub(crate) fn deny_with_events(lab: &mut Lab, deny: &[u8], p: &Params) -> Result<f64> {
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

pub(crate) fn thousands(n: usize) -> String {
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
pub(crate) fn minimal_program(p: &Params) -> Result<u64> {
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
pub(crate) fn insert_floor(p: &Params, prog_name: &str, map: &str) -> Result<u64> {
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

pub(crate) fn micro_benchmarks(p: &Params) -> Result<String> {
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
        "new-flow floor: the path's map lookups, inserts and FIB lookup alone",
        &format!(
            "`sg_floor_new_flow` (ebpf/src/floor.rs) behind the same harness, repeat={rep} \
             distinct flows, the harness subtracted"
        ),
        &|c| c.new_flow_floor.net().to_string(),
    )?;
    row(
        "new flow ÷ floor (target ≤ 1.3)",
        "the two rows above",
        &|c| {
            format!(
                "{:.2}",
                c.new_flow_rep.net() as f64 / c.new_flow_floor.net().max(1) as f64
            )
        },
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
pub(crate) fn tun_overlay(p: &Params) -> Result<(Harnessed, Harnessed)> {
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
