//! Part 2b of the benchmark: new flows per second through the gateway. Every frame is a new
//! UDP flow (a source and destination port pair of its own), every flow is allowed by policy
//! and masqueraded; swiftgate beside Linux forwarding + nftables (conntrack + masquerade) in
//! the same run, in the topology of part 2, with the connection tables below capacity and at
//! capacity (full of unreplied flows before the window starts).

use super::*;

/// Frame size of the new-flow traffic (without FCS).
pub(crate) const FLOW_FRAME: usize = 64;
/// Source ports of the flows: 1024 to 65535.
pub(crate) const SPORTS: u64 = 64_512;
/// First destination port: flow `n` goes from port `1024 + n % SPORTS` to port
/// `DPORT_BASE + n / SPORTS`, so no two flows share a port pair and every flow keeps its
/// source port as masquerade port (no probing for a free one in either system).
pub(crate) const DPORT_BASE: u16 = 10_000;
/// Destination ports in use, all allowed by the policy.
pub(crate) const DPORTS: u16 = 1_000;
/// Distinct flows of the port plan (64,512,000): the generator never repeats one.
pub(crate) const MAX_FLOWS: u64 = SPORTS * DPORTS as u64;
/// Table size of both systems below capacity: more entries than one run opens (checked after
/// every run).
pub(crate) const BELOW_CAPACITY: u32 = 4_194_304;
/// Table size of both systems at capacity.
pub(crate) const AT_CAPACITY: u32 = 65_536;
/// Distinct flows the prefill sends per table entry (some more than fit: the table must be
/// full, and a flow lost on the way would leave a hole).
pub(crate) const PREFILL_FACTOR: u64 = 2;
/// Prefill rate in flows per second: well below what either gateway takes, so none is lost.
pub(crate) const PREFILL_RATE: f64 = 100_000.0;
/// Share of its size a table must hold to count as full: Linux's conntrack garbage collector
/// may drop unreplied entries of a full table in the background (one run ended with 65,535 of
/// 65,536), and a flow whose two entries were not both made leaves a hole.
pub(crate) const FULL_SHARE: f64 = 0.95;
/// Share of its size a table may be filled to in a below-capacity run.
pub(crate) const BELOW_MAX_FILL: f64 = 0.9;

/// The connection tables' state during a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableState {
    /// Flushed before the run and large enough that the run never fills it.
    Below,
    /// Full of unreplied flows before the window starts: every new flow needs an old one's
    /// place.
    Full,
}

impl TableState {
    pub(crate) fn capacity(self) -> u32 {
        match self {
            TableState::Below => BELOW_CAPACITY,
            TableState::Full => AT_CAPACITY,
        }
    }

    pub(crate) fn name(self) -> String {
        match self {
            TableState::Below => format!("below capacity ({})", thousands(BELOW_CAPACITY as usize)),
            TableState::Full => format!("at capacity ({}, full)", thousands(AT_CAPACITY as usize)),
        }
    }
}

/// The ports of flow `n`.
pub(crate) fn flow_ports(n: u64) -> (u16, u16) {
    (
        (1024 + n % SPORTS) as u16,
        DPORT_BASE + ((n / SPORTS) % DPORTS as u64) as u16,
    )
}

/// Offsets of the UDP source port, destination port and checksum in the frame (Ethernet,
/// IPv4 without options).
const SPORT_AT: usize = 34;
const DPORT_AT: usize = 36;
const UDP_CHECK_AT: usize = 40;

/// Turns `f`, a copy of flow 0's frame whose UDP checksum is `check0`, into flow `n`'s: the
/// ports and the checksum (updated as RFC 1624 says; nothing else of the frame changes).
pub(crate) fn set_flow(f: &mut [u8], check0: u16, n: u64) {
    let (s0, d0) = flow_ports(0);
    let (s, d) = flow_ports(n);
    f[SPORT_AT..SPORT_AT + 2].copy_from_slice(&s.to_be_bytes());
    f[DPORT_AT..DPORT_AT + 2].copy_from_slice(&d.to_be_bytes());
    // HC' = ~(~HC + ~m + m') for both changed words, in one's complement arithmetic.
    let mut sum =
        u32::from(!check0) + u32::from(!s0) + u32::from(s) + u32::from(!d0) + u32::from(d);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let check = match !(sum as u16) {
        // A zero UDP checksum means "none"; a computed zero is sent as all ones.
        0 => 0xffff,
        c => c,
    };
    f[UDP_CHECK_AT..UDP_CHECK_AT + 2].copy_from_slice(&check.to_be_bytes());
}

/// Flow 0's frame and its UDP checksum.
pub(crate) fn flow_base() -> (Vec<u8>, u16) {
    let (s, d) = flow_ports(0);
    let f = flow_frame(FLOW_FRAME, s, d);
    let check = u16::from_be_bytes([f[UDP_CHECK_AT], f[UDP_CHECK_AT + 1]]);
    (f, check)
}

/// Checks [`set_flow`] against frames built from scratch, over the port plan.
pub(crate) fn check_flow_frames() -> Result<()> {
    let (base, check0) = flow_base();
    let mut f = base.clone();
    for i in 0..4_096u64 {
        let n = i.wrapping_mul(15_737_761) % MAX_FLOWS;
        set_flow(&mut f, check0, n);
        let (s, d) = flow_ports(n);
        ensure!(
            f == flow_frame(FLOW_FRAME, s, d),
            "the generator's frame of flow {n} (ports {s} -> {d}) differs from a built one"
        );
    }
    Ok(())
}

/// Sends flows `flows` in order, one frame each, out of g0 (in namespace `ns`) through a
/// packet socket, 64 per `sendmmsg`, until `until` or the last flow (and at most `MAX_CALLS`
/// calls); paced to `rate` frames per second when given. Every frame of a batch is its own
/// buffer, given its flow's ports before the call. Returns the frames sent and the time taken.
pub(crate) fn generate_flows(
    ns: &str,
    flows: std::ops::Range<u64>,
    until: Instant,
    rate: Option<f64>,
    pin_cpu: Option<usize>,
) -> Result<(u64, Duration)> {
    const MAX_CALLS: u64 = 1 << 28;
    let (base, check0) = flow_base();
    in_netns(ns, || {
        pin_to(pin_cpu)?;
        let fd = packet_socket_g0()?;
        let mut bufs: Vec<Vec<u8>> = vec![base.clone(); BATCH];
        // SAFETY: iovec and mmsghdr are plain data; zero is a valid start (pointers are set
        // before every call).
        let mut iovs: Vec<libc::iovec> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        // SAFETY: as above.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let start = Instant::now();
        let mut next = flows.start;
        for _ in 0..MAX_CALLS {
            let now = Instant::now();
            if now >= until || next >= flows.end {
                break;
            }
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64((next - flows.start) as f64 / rate);
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let n = (flows.end - next).min(BATCH as u64) as usize;
            for (i, ((buf, iov), msg)) in bufs
                .iter_mut()
                .zip(iovs.iter_mut())
                .zip(msgs.iter_mut())
                .take(n)
                .enumerate()
            {
                set_flow(buf, check0, next + i as u64);
                iov.iov_base = buf.as_mut_ptr().cast();
                iov.iov_len = buf.len();
                msg.msg_hdr.msg_iov = iov;
                msg.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: the first `n` headers point at their own iovec, which points at its own
            // frame buffer; none of them is touched until the call returns.
            next += unsafe { send_some(&fd, &mut msgs[..n])? };
        }
        Ok((next - flows.start, start.elapsed()))
    })
}

/// `net.netfilter.nf_conntrack_max`, set for a Linux run, with the conntrack hash table's
/// buckets (`nf_conntrack` `hashsize`) set to as many, as swiftgate's hash maps have (their
/// buckets are their entries rounded up to a power of two): both systems then meet chains of
/// the same length. Both are put back when dropped. Linux lets only the initial namespace set
/// them, and they bound every namespace's table (each counts its own entries): lowering them
/// for the at-capacity runs lowers them for the host too while they last.
pub(crate) struct ConntrackMax {
    old: String,
    old_buckets: String,
}

const CT_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const CT_BUCKETS: &str = "/sys/module/nf_conntrack/parameters/hashsize";

impl ConntrackMax {
    /// Sets the limit and the buckets (from the calling thread, which must be in the initial
    /// namespace).
    pub(crate) fn set(max: u32) -> Result<ConntrackMax> {
        let old = std::fs::read_to_string(CT_MAX)
            .with_context(|| format!("reading {CT_MAX} (is nf_conntrack loaded?)"))?;
        let old_buckets =
            std::fs::read_to_string(CT_BUCKETS).with_context(|| format!("reading {CT_BUCKETS}"))?;
        let restore = ConntrackMax {
            old: old.trim().to_string(),
            old_buckets: old_buckets.trim().to_string(),
        };
        std::fs::write(CT_MAX, max.to_string()).with_context(|| format!("writing {CT_MAX}"))?;
        std::fs::write(CT_BUCKETS, max.to_string())
            .with_context(|| format!("writing {CT_BUCKETS}"))?;
        Ok(restore)
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        for (path, value) in [(CT_MAX, &self.old), (CT_BUCKETS, &self.old_buckets)] {
            if let Err(e) = std::fs::write(path, value) {
                eprintln!("warning: restoring {path} to {value}: {e}");
            }
        }
    }
}

/// Empties the conntrack table of namespace `ns` (conntrack-tools; scripts/bootstrap.sh
/// installs them).
pub(crate) fn conntrack_flush(ns: &str) -> Result<()> {
    ns_cmd(ns, &["conntrack", "-F"])
        .map(drop)
        .context("flushing conntrack (is conntrack-tools installed? scripts/bootstrap.sh)")
}

/// Entries in namespace `ns`'s conntrack table.
pub(crate) fn conntrack_count(ns: &str) -> Result<u64> {
    in_netns(ns, || {
        let s = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .context("reading nf_conntrack_count")?;
        s.trim().parse().context("parsing nf_conntrack_count")
    })
}

/// Namespace `ns`'s conntrack statistics (/proc/net/stat/nf_conntrack summed over CPUs):
/// `ct_new`, `ct_drop` (a new flow refused: table full and nothing to drop early),
/// `ct_early_drop` (an unreplied entry dropped to make room), `ct_insert_failed`.
pub(crate) fn conntrack_stats(ns: &str) -> Result<Vec<(String, u64)>> {
    in_netns(ns, || {
        let s = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack")
            .context("reading /proc/net/stat/nf_conntrack")?;
        let mut lines = s.lines();
        let names: Vec<&str> = lines
            .next()
            .context("empty /proc/net/stat/nf_conntrack")?
            .split_whitespace()
            .collect();
        let mut sums = vec![0u64; names.len()];
        for l in lines {
            for (i, v) in l.split_whitespace().enumerate().take(names.len()) {
                sums[i] += u64::from_str_radix(v, 16).unwrap_or(0);
            }
        }
        let get = |name: &str| names.iter().position(|n| *n == name).map_or(0, |i| sums[i]);
        Ok(["new", "drop", "early_drop", "insert_failed"]
            .into_iter()
            .map(|n| (format!("ct_{n}"), get(n)))
            .collect())
    })
}

/// Entries in swiftgate's IPv4 conntrack table pinned under `pin`.
pub(crate) fn swiftgate_ct_count(pin: &Path) -> Result<u64> {
    let path = pin.join("maps").join(maps::CONNTRACK4);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let m: HashMap<MapData, FlowKey4, CtEntry> =
        HashMap::try_from(Map::from_map_data(data).context("the conntrack map")?)?;
    Ok(m.keys().filter(|k| k.is_ok()).count() as u64)
}

/// The value of `name` in `v` (0 when absent).
pub(crate) fn value(v: &[(String, u64)], name: &str) -> u64 {
    v.iter().find(|(k, _)| k == name).map_or(0, |(_, x)| *x)
}

/// `b - a` per name of `b` (and of `a`).
pub(crate) fn delta(a: &[(String, u64)], b: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = b
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(value(a, k))))
        .collect();
    for (k, _) in a {
        if !out.iter().any(|(o, _)| o == k) {
            out.push((k.clone(), 0));
        }
    }
    out
}

impl Installed<'_> {
    /// Entries in the path's connection table (`None` without one).
    pub(crate) fn entries(&self) -> Result<Option<u64>> {
        match self.system {
            System::Swiftgate | System::SwiftgateXdp => {
                swiftgate_ct_count(&self.topo.pin).map(Some)
            }
            System::Nftables => conntrack_count(&self.topo.gw).map(Some),
            System::PlainForwarding | System::BareRedirect => Ok(None),
        }
    }

    /// What the window's edges read: swiftgate's counters, Linux's conntrack statistics.
    pub(crate) fn flow_stats(&self) -> Result<Vec<(String, u64)>> {
        match self.system {
            System::Swiftgate | System::SwiftgateXdp => self.counters(),
            System::Nftables => conntrack_stats(&self.topo.gw),
            System::PlainForwarding | System::BareRedirect => Ok(Vec::new()),
        }
    }

    /// New flows the path refused, of a [`Installed::flow_stats`] delta: any swiftgate drop
    /// (every flow is allowed), Linux's conntrack drops and failed inserts.
    pub(crate) fn refused(&self, d: &[(String, u64)]) -> Option<u64> {
        match self.system {
            System::Swiftgate | System::SwiftgateXdp => Some(
                d.iter()
                    .filter(|(k, _)| k.starts_with("drop_"))
                    .map(|(_, v)| v)
                    .sum(),
            ),
            System::Nftables => Some(value(d, "ct_drop") + value(d, "ct_insert_failed")),
            System::PlainForwarding | System::BareRedirect => None,
        }
    }
}

/// One new-flow measurement.
#[derive(Debug, Clone)]
pub(crate) struct FlowRun {
    pub(crate) system: System,
    pub(crate) table: TableState,
    /// New flows per second the gateway sent out of gw1 in the window.
    pub(crate) fps: f64,
    /// New flows per second the path refused in the window (`None`: no table).
    pub(crate) refused: Option<f64>,
    /// Unreplied entries per second Linux dropped early to make room in the window.
    pub(crate) early_dropped: Option<f64>,
    /// Frames (flows) per second the generator sent.
    pub(crate) offered: f64,
    /// Frames per second gw0 received.
    pub(crate) reached: f64,
    /// Busy share per CPU in the window.
    pub(crate) busy: Vec<f64>,
    /// Share of the machine's CPU time other processes used in the window.
    pub(crate) others: f64,
    /// Table entries after the prefill (or flush) and after the run.
    pub(crate) entries: (Option<u64>, Option<u64>),
    /// The path's count of new flows (swiftgate `accept_new`, nftables `masquerade`) / packets
    /// out of gw1, over the measurement.
    pub(crate) path_ratio: Option<f64>,
    /// Packets through the kernel's IP forwarding / packets out of gw1, over the measurement.
    pub(crate) kernel_ratio: f64,
    /// The path's counters over the measurement (prefill excluded).
    pub(crate) counters: Vec<(String, u64)>,
}

impl FlowRun {
    pub(crate) fn disturbed(&self) -> bool {
        self.others > DISTURBED
    }

    /// CPU 1 time per forwarded flow (ns).
    pub(crate) fn cpu1_ns(&self) -> f64 {
        self.busy.get(1).copied().unwrap_or(0.0) * 1e9 / self.fps.max(1.0)
    }
}

/// Window and warm-up of the new-flow runs: part 2's, at most 3 s and 0.5 s, so that a run
/// (3.8 s of traffic with the tail) stays below 90% of the below-capacity table up to about
/// 990,000 new flows per second (checked after every run).
pub(crate) fn flow_window(p: &Params) -> (Duration, Duration) {
    (
        p.window.min(Duration::from_secs(3)),
        p.warmup.min(Duration::from_millis(500)),
    )
}

pub(crate) fn new_flow_once(
    topo: &Topology,
    traffic: &mut Traffic,
    system: System,
    table: TableState,
    p: &Params,
    same_cpu: bool,
) -> Result<FlowRun> {
    let cap = table.capacity();
    let spec = PathSpec {
        ports: (DPORT_BASE, DPORT_BASE + DPORTS - 1),
        ct_capacity: Some(cap),
    };
    let installed = Installed::new(topo, traffic, system, &spec)?;
    // Linux's table: its size, and empty (swiftgate's maps are new with every run).
    let _ct_max = if system == System::Nftables {
        let m = ConntrackMax::set(cap)?;
        conntrack_flush(&topo.gw)?;
        Some(m)
    } else {
        None
    };
    let pin_cpu = (!same_cpu).then_some(0);
    let mut first = 0u64;
    if table == TableState::Full {
        // Distinct flows nobody answers, slowly enough that each reaches the table, until it
        // is full (a few passes at most).
        let full = |e: Option<u64>| e.is_none_or(|e| e as f64 >= cap as f64 * FULL_SHARE);
        let mut filled = false;
        for _ in 0..3 {
            let n = cap as u64 * PREFILL_FACTOR;
            let deadline = Instant::now() + Duration::from_secs_f64(3.0 * n as f64 / PREFILL_RATE);
            generate_flows(
                &topo.gen_ns,
                first..first + n,
                deadline,
                Some(PREFILL_RATE),
                pin_cpu,
            )?;
            first += n;
            std::thread::sleep(Duration::from_millis(200));
            if full(installed.entries()?) {
                filled = true;
                break;
            }
        }
        ensure!(
            filled,
            "{}: the prefill did not fill the table ({:?} of {cap} entries)",
            system.name(),
            installed.entries()?
        );
    }
    let entries_before = installed.entries()?;
    let (window, warmup) = flow_window(p);
    let gw1_start = link_stats(&topo.gw, "gw1")?;
    let ip_start = forwarded_datagrams(&topo.gw)?;
    let c_start = installed.counters()?;
    let s_start = installed.flow_stats()?;
    let until = Instant::now() + warmup + window + Duration::from_millis(300);
    let (sent, before, after) = std::thread::scope(|sc| -> Result<_> {
        let h = sc.spawn(|| generate_flows(&topo.gen_ns, first..MAX_FLOWS, until, None, pin_cpu));
        std::thread::sleep(warmup);
        let snap = || -> Result<_> {
            Ok((
                Instant::now(),
                link_stats(&topo.gw, "gw1")?,
                link_stats(&topo.gw, "gw0")?,
                snapshot()?,
                installed.flow_stats()?,
            ))
        };
        let before = snap();
        std::thread::sleep(window);
        let after = snap();
        let sent = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        Ok((sent?, before?, after?))
    })?;
    std::thread::sleep(Duration::from_millis(200));
    let gw1_end = link_stats(&topo.gw, "gw1")?;
    let total_out =
        (gw1_end.tx_packets + gw1_end.tx_dropped) - (gw1_start.tx_packets + gw1_start.tx_dropped);
    let total_kernel = forwarded_datagrams(&topo.gw)? - ip_start;
    let mut counters = delta(&c_start, &installed.counters()?);
    let s_end = installed.flow_stats()?;
    if system == System::Nftables {
        counters.extend(delta(&s_start, &s_end));
    }
    counters.push(("ip_forwarded".into(), total_kernel));
    let entries_after = installed.entries()?;
    if system == System::Nftables {
        // Free Linux's entries now (the namespace would keep them until they time out).
        conntrack_flush(&topo.gw)?;
    }

    let (t0, gw1a, gw0a, cpua, sa) = before;
    let (t1, gw1b, gw0b, cpub, sb) = after;
    let secs = (t1 - t0).as_secs_f64();
    let out = (gw1b.tx_packets + gw1b.tx_dropped) - (gw1a.tx_packets + gw1a.tx_dropped);
    let ratio = |n: u64| n as f64 / total_out.max(1) as f64;
    let window_delta = delta(&sa, &sb);
    // The path's own count of new flows over the measurement: swiftgate's accepted new flows;
    // for nftables the masquerade rule, which only a flow's first packet traverses.
    let opened_here = match system {
        System::Swiftgate | System::SwiftgateXdp => Some(value(&counters, "accept_new")),
        System::Nftables => Some(value(&counters, "masquerade")),
        System::PlainForwarding | System::BareRedirect => None,
    };
    let r = FlowRun {
        system,
        table,
        fps: out as f64 / secs,
        refused: installed.refused(&window_delta).map(|n| n as f64 / secs),
        // Linux's conntrack statistics and swiftgate's counters share the name.
        early_dropped: opened_here.map(|_| value(&window_delta, "ct_early_drop") as f64 / secs),
        offered: sent.0 as f64 / sent.1.as_secs_f64().max(1e-6),
        reached: (gw0b.rx_packets - gw0a.rx_packets) as f64 / secs,
        busy: busy_between(&cpua.cpus, &cpub.cpus),
        others: others_between(&cpua, &cpub),
        entries: (entries_before, entries_after),
        path_ratio: opened_here.map(ratio),
        kernel_ratio: ratio(total_kernel),
        counters,
    };
    ensure!(
        out > 0,
        "{}: no new flow was forwarded (counters {:?})",
        system.name(),
        r.counters
    );
    ensure!(
        sent.0 < MAX_FLOWS - first,
        "{}: the generator ran out of distinct flows",
        system.name()
    );
    // Proof of the path, and that every packet was a new flow: the path's count of new flows
    // matches what left gw1 (swiftgate: and hardly any packet of a known flow), and the
    // kernel's IP forwarding saw the packets exactly when the path is the kernel's.
    let close = |x: f64| (0.99..=1.01).contains(&x);
    let kernel_ok = if system.kernel_forwarding() {
        close(r.kernel_ratio)
    } else {
        r.kernel_ratio < 0.01
    };
    let known_ok = !matches!(system, System::Swiftgate | System::SwiftgateXdp)
        || ratio(value(&r.counters, "established")) < 0.01;
    let policy_ok = system != System::Nftables || close(ratio(value(&r.counters, "policy")));
    ensure!(
        r.path_ratio.is_none_or(close) && kernel_ok && known_ok && policy_ok,
        "{}: gw1 sent {total_out} packets, the path counted {opened_here:?} new flows, IP \
         forwarding {total_kernel}: the traffic did not take the measured path as new flows \
         (counters {:?})",
        system.name(),
        r.counters
    );
    // The table state held: below capacity nothing made room (no early drop, no refusal, on
    // either system); at capacity the table was still full at the end.
    match table {
        TableState::Below => {
            let made_room = value(&r.counters, "ct_early_drop") + value(&r.counters, "ct_drop");
            ensure!(
                opened_here.is_none_or(|n| (n as f64) < cap as f64 * BELOW_MAX_FILL)
                    && made_room == 0,
                "{}: the run opened {} flows (table {cap}; {made_room} early drops or \
                 refusals): not below capacity; raise BELOW_CAPACITY",
                system.name(),
                opened_here.unwrap_or(0)
            );
        }
        TableState::Full => {
            let still_full = entries_after.is_none_or(|e| e as f64 >= cap as f64 * FULL_SHARE);
            ensure!(
                still_full,
                "{}: the table was no longer full after the run ({entries_after:?} of {cap})",
                system.name()
            );
        }
    }
    drop(installed);
    Ok(r)
}

/// The systems of part 2b: those selected that have a forwarding path for new flows
/// (default: swiftgate's TC path, nftables, and Linux forwarding without rules as the
/// reference).
pub(crate) fn new_flow_systems(selected: &[System]) -> Vec<System> {
    if selected.is_empty() {
        return vec![System::Swiftgate, System::Nftables, System::PlainForwarding];
    }
    selected
        .iter()
        .copied()
        .filter(|s| *s != System::BareRedirect)
        .collect()
}

pub(crate) fn kfps(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{:.1} k/s", x / 1e3)
    }
}

pub(crate) fn new_flow_benchmark(
    p: &Params,
    same_cpu: bool,
    selected: &[System],
) -> Result<String> {
    eprintln!("part 2b: new flows per second");
    let systems = new_flow_systems(selected);
    let mut o = String::new();
    writeln!(
        o,
        "## 2b. New flows per second gateway → LAN (UDP, every packet a new flow, masquerade)\n"
    )?;
    if systems.is_empty() {
        writeln!(o, "No system with a new-flow path selected.\n")?;
        return Ok(o);
    }
    check_flow_frames()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let same_cpu = same_cpu || cpus < 2;
    let (background, waited) = settle()?;
    let topo = Topology::build(same_cpu)?;
    let setup = topo.describe()?;
    let mut traffic = Traffic::load(&topo)?;
    let (window, warmup) = flow_window(p);

    let tables = [TableState::Below, TableState::Full];
    let mut runs: Vec<FlowRun> = Vec::new();
    for round in 0..p.rounds {
        for &table in &tables {
            let mut order: Vec<System> = systems
                .iter()
                .copied()
                .filter(|s| table == TableState::Below || *s != System::PlainForwarding)
                .collect();
            if order.is_empty() {
                continue;
            }
            let k = round % order.len();
            order.rotate_left(k);
            for system in order {
                // The previous run's tables are freed in the background.
                settle()?;
                let r = new_flow_once(&topo, &mut traffic, system, table, p, same_cpu)
                    .with_context(|| {
                        format!("{} with new flows, {}", system.name(), table.name())
                    })?;
                eprintln!(
                    "  round {} {:<28} {:<38} {} (refused {}, offered {}, busy {}, others {:.1}%){}",
                    round + 1,
                    table.name(),
                    system.name(),
                    kfps(r.fps),
                    r.refused.map_or("–".into(), kfps),
                    kfps(r.offered),
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
    let buckets = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_buckets")
        .map_or("?".into(), |s| s.trim().to_string());

    writeln!(
        o,
        "Generator: an AF_PACKET socket with sendmmsg (batch 64, qdisc bypassed), always in \
         this part: every frame is its own flow (source port 1024–65535 × destination port \
         {DPORT_BASE}–{}, written into each frame with its UDP checksum updated), which XDP \
         live frames, one frame repeated, cannot give; it is held back to about what the gateway \
         takes (compare offered and reached gw0 below). It runs on g0{}. {FLOW_FRAME}-byte frames, \
         100.64.0.2 → 192.0.2.10, every flow allowed by the policy (UDP to those ports) and \
         masqueraded; nobody answers. Sink: XDP drop on s0. Forwarded = packets out of gw1 \
         (TX packets + TX drops) in a {:.0}-second window after {:.1} s of warm-up = new flows \
         forwarded (checked: swiftgate's `accept_new`, nftables' masquerade rule, which only a \
         flow's first packet passes, count every packet out of gw1). Refused = new flows the \
         path dropped for want of room in its table in the window (swiftgate: its drop \
         counters; Linux: conntrack's `drop` + `insert_failed`). Tables: below capacity both \
         hold {} entries (swiftgate `[conntrack] capacity`, Linux `nf_conntrack_max`), emptied \
         before every run (swiftgate's maps are new, Linux's are flushed with `conntrack -F`) and \
         never filled (checked); at capacity both hold {} entries and are filled with unreplied \
         flows by a first pass of distinct flows ({}× the size, at {} flows/s) before the \
         window, so every new flow needs an old one's place (Linux: early drop of an \
         unreplied entry, on both systems; swiftgate counts it in `ct_early_drop`). `nf_conntrack_max` is host-wide (only \
         the initial namespace may set it): the benchmark sets it for the Linux runs and puts \
         it back after each, and gives Linux's conntrack hash table as many buckets as entries \
         for those runs (`hashsize`, host-wide; {buckets} otherwise), as swiftgate's hash maps \
         have. {} round(s), order rotated between rounds. {setup}. CPU busy in the last \
         second before the runs: {} (after waiting {waited} s for the machine to settle).\n",
        DPORT_BASE + DPORTS - 1,
        if same_cpu {
            "; generator and forwarding share the CPUs (no RPS, no pinning)"
        } else {
            ", pinned to CPU 0; gw0's receive processing, and with it the whole forwarding \
             path, steered to CPU 1 by RPS"
        },
        window.as_secs_f64(),
        warmup.as_secs_f64(),
        thousands(BELOW_CAPACITY as usize),
        thousands(AT_CAPACITY as usize),
        PREFILL_FACTOR,
        thousands(PREFILL_RATE as usize),
        p.rounds,
        percent(&background)
    )?;
    if background.iter().any(|b| *b > 0.1) {
        writeln!(
            o,
            "**Warning: the machine was not idle before the run; the numbers are disturbed.**\n"
        )?;
    }
    let selected_runs = |s: System, t: TableState| -> Vec<&FlowRun> {
        let all: Vec<&FlowRun> = runs
            .iter()
            .filter(|r| r.system == s && r.table == t)
            .collect();
        let clean: Vec<&FlowRun> = all.iter().copied().filter(|r| !r.disturbed()).collect();
        if clean.is_empty() { all } else { clean }
    };
    let stat = |s: System, t: TableState, f: &dyn Fn(&FlowRun) -> f64| -> (f64, f64) {
        let v: Vec<f64> = selected_runs(s, t).into_iter().map(f).collect();
        let best = v.iter().copied().fold(f64::NAN, f64::max);
        (median(v), best)
    };
    let disturbed = runs.iter().filter(|r| r.disturbed()).count();
    writeln!(
        o,
        "Median (best) over the rounds{}:\n",
        disturbed_note(disturbed, runs.len())
    )?;
    writeln!(
        o,
        "| table | system | new flows forwarded | refused | CPU 1 per forwarded flow | ratio to \
         nftables (of medians): flows/s | CPU per flow |"
    )?;
    writeln!(o, "|---|---|---:|---:|---:|---:|---:|")?;
    for &t in &tables {
        let nf_fps = stat(System::Nftables, t, &|r| r.fps).0;
        let nf_cpu = stat(System::Nftables, t, &|r| r.cpu1_ns()).0;
        for &s in &systems {
            if selected_runs(s, t).is_empty() {
                continue;
            }
            let (fps, best) = stat(s, t, &|r| r.fps);
            let refused = stat(s, t, &|r| r.refused.unwrap_or(f64::NAN)).0;
            let cpu = stat(s, t, &|r| r.cpu1_ns()).0;
            let rel = |x: f64| {
                if x.is_nan() || s == System::Nftables {
                    "–".to_string()
                } else {
                    format!("{x:.2}×")
                }
            };
            writeln!(
                o,
                "| {} | {} | {} ({}) | {} | {} | {} | {} |",
                t.name(),
                s.name(),
                kfps(fps),
                kfps(best),
                kfps(refused),
                if same_cpu { "–".into() } else { ns_text(cpu) },
                rel(fps / nf_fps),
                if same_cpu {
                    "–".into()
                } else {
                    rel(nf_cpu / cpu)
                },
            )?;
        }
    }
    writeln!(o)?;
    for &t in &tables {
        let r = stat(System::Swiftgate, t, &|r| r.fps).0 / stat(System::Nftables, t, &|r| r.fps).0;
        if !r.is_nan() {
            writeln!(
                o,
                "swiftgate (TC) / nftables, new flows per second, {}: {r:.2}× (target ≥ 2×: {}).\n",
                t.name(),
                if r >= 2.0 { "met" } else { "not met" }
            )?;
        }
    }
    writeln!(
        o,
        "Every run: new flows forwarded, refused and early-dropped per second in the \
         window, generator rate, rate reaching gw0, CPU busy, table entries before the window \
         (after the flush or prefill) and after the run, the path's new-flow count and the \
         kernel's IP forwarding count over gw1's (proof of the path), and the path's counters \
         over the run (prefill excluded):\n"
    )?;
    writeln!(
        o,
        "| table | system | forwarded | refused | early-dropped | offered | reached gw0 | CPU \
         busy | other processes | entries before → after | new flows/gw1 | IP fwd/gw1 | \
         counters |"
    )?;
    writeln!(
        o,
        "|---|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|---|"
    )?;
    let opt = |x: Option<f64>| x.map_or("–".into(), kfps);
    let entries = |x: Option<u64>| x.map_or("–".into(), |n| thousands(n as usize));
    for r in &runs {
        writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}{:.1}% | {} → {} | {} | {:.3} | {} |",
            r.table.name(),
            r.system.name(),
            kfps(r.fps),
            opt(r.refused),
            opt(r.early_dropped),
            kfps(r.offered),
            kfps(r.reached),
            percent(&r.busy),
            if r.disturbed() { "⚠ " } else { "" },
            r.others * 100.0,
            entries(r.entries.0),
            entries(r.entries.1),
            r.path_ratio.map_or("–".into(), |x| format!("{x:.3}")),
            r.kernel_ratio,
            r.counters
                .iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        )?;
    }
    writeln!(o)?;
    Ok(o)
}
