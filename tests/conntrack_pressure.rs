//! Conntrack under pressure (issue #19), end to end: the real `swiftgate` agent in network
//! namespaces (the `swiftgate_testkit::topology` lab: overlay client, routing peer "gw", one
//! LAN), with a 4096-entry conntrack table, in two variants (one `#[test]` each):
//!
//! - **with source shares**: `[interface] conntrack_capacity = 4096` and the default per-source
//!   share (25 %, so one overlay peer may hold 1024 flows; its further new flows are refused,
//!   `drop_ct_share`);
//! - **with early drop only**: `[conntrack] capacity = 4096` and `source_share = 100` (no
//!   per-source limit), so the flood fills the table with A's unreplied flows and early drop
//!   carries the load: a new flow in the full table takes the place of an unreplied or closing
//!   one (`ct_early_drop`) or is refused (`drop_ct_full`); flows that have seen a reply are
//!   never replaced.
//!
//! The scenario, the same in both:
//! 1. Peer A (100.64.0.2) holds an established TCP flow to a LAN server (192.0.2.10:7000) on
//!    which the LAN side speaks first and then every 2 s; the client only acknowledges. The
//!    flow is idle for 2 s at a time, much longer than the flood takes to cycle through the
//!    table.
//! 2. Peer A floods: 60,000 distinct new UDP flows (source ports 1024..61023) to an allowed
//!    resource (192.0.2.20:9000) at 7,500 packets/s (8 s, never more than 10 s), sent with one
//!    raw socket and `sendmmsg` from A's namespace. The LAN sink never answers, so the flows
//!    stay unreplied.
//! 3. During the flood peer B (100.64.0.3) opens 20 new TCP connections to the LAN server (one
//!    every 300 ms), each with one echoed message.
//!
//! Pass, in both variants: every message the server sent on A's flow arrives (within 3 s) and A
//! can still send on it after the flood; all 20 of B's connections succeed; the table holds at
//! most its 4096 flows; and the routing peer's counters (`swiftgate counters --json`) and
//! per-source view (`swiftgate conntrack --top --json`) match what was measured on the wire:
//! the flood packets that entered the routing peer (counted by the overlay relay) but never
//! reached the LAN (counted by the LAN namespace's UDP statistics) are the ones the conntrack
//! drop counters count. With source shares, A holds at most its share and its refusals are
//! A's in `conntrack --top`; with early drop only, nothing is refused for a share
//! (`drop_ct_share` stays 0), the flood fills the table, and every flood flow forwarded beyond
//! the room the table had at the start took an early-dropped entry. With LRU conntrack tables
//! every flood packet is forwarded and the flood evicts the established flow; the test fails
//! then.
//!
//! The checks that need the counters `drop_ct_share` and `ct_early_drop` and the
//! `conntrack --top` command (added by the issue #19 rewrite) go through [`new_ct_counter`] and
//! [`conntrack_top`]; without them those checks fail with a message saying what is missing.
//! Every check is evaluated and printed (prefixed with the variant) before the test fails, so
//! one run shows all of them.
//!
//! Run as root, after building the agent binary (the test binary finds it next to itself, in
//! `$CARGO_TARGET_DIR/debug/`, or at `$SWIFTGATE_BIN`):
//!
//! ```text
//! cargo build -p swiftgate --bin swiftgate
//! cargo test -p swiftgate-tests --test conntrack_pressure -- --nocapture
//! ```
//!
//! Each variant takes about 12 s. They may run at once (the test harness's threads): each
//! builds its own topology, whose namespaces, pin path and work directory are named after a
//! unique id (`sg<pid>x<n>`), and the addresses and ports are per namespace. Traffic stays
//! inside the namespaces the tests create (overlay 100.64.0.0/16, LAN 192.0.2.0/24).

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use swiftgate_testkit::traffic::{self, CONNECT_TIMEOUT};
use swiftgate_testkit::{
    LanSpec, NetNs, Network, Peer, Policy, TcpServer, Topology, TopologySpec, require_root,
};

/// The flooding overlay peer; it also owns the established flow.
const PEER_A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
/// The overlay peer that opens new connections during the flood.
const PEER_B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);
/// The LAN server: the talker (established flow) and B's echo server.
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The flood's target: a UDP socket that reads and never answers.
const SINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const TALK_PORT: u16 = 7000;
const ECHO_PORT: u16 = 443;
const SINK_PORT: u16 = 9000;

/// The routing peer's conntrack table size (`[interface] conntrack_capacity` or
/// `[conntrack] capacity`, see [`Variant`]).
const CAPACITY: u32 = 4096;
/// The default per-source share of the table: 25 % (`[conntrack] source_share`, left unset in
/// [`Variant::SourceShares`]).
const SHARE: u64 = CAPACITY as u64 / 4;

/// Distinct new flows in the flood (one packet each, source ports from [`FLOOD_FIRST_PORT`]).
const FLOOD_FLOWS: u32 = 60_000;
const FLOOD_FIRST_PORT: u16 = 1024;
/// Flood packets per second: 60,000 in 8 s, cycling the 4096-entry table every ~0.55 s.
const FLOOD_RATE: u32 = 7_500;
/// The flood stops here even if not all flows were sent.
const FLOOD_MAX: Duration = Duration::from_secs(10);
/// Packets per `sendmmsg` call.
const FLOOD_BATCH: usize = 32;
/// The flood must get at least this many flows into the routing peer for the test to mean
/// anything.
const FLOOD_MIN_INJECTED: u64 = FLOOD_FLOWS as u64 * 9 / 10;

/// How often the LAN server speaks on the established flow.
const TICK_INTERVAL: Duration = Duration::from_secs(2);
/// The longest a server message may take to arrive (TCP retransmissions included).
const MAX_TICK_DELAY: Duration = Duration::from_secs(3);

/// New connections peer B opens during the flood, and their spacing.
const B_CONNECTS: u32 = 20;
const B_SPACING: Duration = Duration::from_millis(300);
const B_FIRST_AFTER: Duration = Duration::from_millis(500);

/// Upper bound on every helper thread's life.
const MAX_LIFETIME: Duration = Duration::from_secs(120);
/// Read timeout of the talker's sockets: how quickly they notice their stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How long after the checks the agent has to log its pressure warning (its garbage
/// collector runs every 10 s).
const WARNING_WAIT: Duration = Duration::from_secs(12);

const LOG: &str = "[conntrack_pressure]";

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Seconds from `origin` to `t`, negative when `t` is earlier.
fn offset(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        secs(t - origin)
    } else {
        -secs(origin - t)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The established flow: a LAN server that speaks every TICK_INTERVAL, and its overlay client.

/// What the talker did.
#[derive(Default)]
struct TalkerLog {
    /// When each tick (`tick N\n`, N = index) was written.
    sent: Vec<Instant>,
    /// The connection's end, if it ended: a write or read error, or EOF.
    error: Option<String>,
    accepted: bool,
}

/// A TCP server in the LAN that accepts one connection, then writes `tick N\n` at once and every
/// [`TICK_INTERVAL`], and answers every line `L` it reads with `echo L\n`.
struct Talker {
    log: Arc<Mutex<TalkerLog>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Talker {
    fn start(ns: &NetNs, addr: SocketAddr) -> Self {
        let listener = ns
            .run(|| TcpListener::bind(addr))
            .expect("entering the LAN namespace")
            .unwrap_or_else(|e| panic!("binding the talker on {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let log = Arc::new(Mutex::new(TalkerLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (log, stop) = (log.clone(), stop.clone());
            thread::Builder::new()
                .name("talker".into())
                .spawn(move || talk(&listener, &log, &stop))
                .expect("spawning the talker")
        };
        Talker {
            log,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Talker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn talk(listener: &TcpListener, log: &Mutex<TalkerLog>, stop: &AtomicBool) {
    let started = Instant::now();
    let alive = || !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME;
    let mut stream = loop {
        if !alive() {
            return;
        }
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e) => {
                lock(log).error = Some(format!("accept: {e}"));
                return;
            }
        }
    };
    lock(log).accepted = true;
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(POLL)))
        .and_then(|()| stream.set_write_timeout(Some(MAX_TICK_DELAY)));
    if let Err(e) = setup {
        lock(log).error = Some(format!("socket options: {e}"));
        return;
    }
    let mut next_tick = Instant::now();
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    while alive() {
        if Instant::now() >= next_tick {
            let n = lock(log).sent.len();
            if let Err(e) = stream.write_all(format!("tick {n}\n").as_bytes()) {
                lock(log).error = Some(format!("writing tick {n}: {e}"));
                return;
            }
            lock(log).sent.push(Instant::now());
            next_tick += TICK_INTERVAL;
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                lock(log).error = Some("the client closed the connection".into());
                return;
            }
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let mut reply = b"echo ".to_vec();
                    reply.extend_from_slice(&line);
                    if let Err(e) = stream.write_all(&reply) {
                        lock(log).error = Some(format!("writing an echo: {e}"));
                        return;
                    }
                }
            }
            Err(e) if transient(&e) => {}
            Err(e) => {
                lock(log).error = Some(format!("reading: {e}"));
                return;
            }
        }
    }
}

/// A read error that only means "nothing yet" (read timeout, signal).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// What the overlay client of the established flow received.
#[derive(Default)]
struct ClientLog {
    /// Tick number -> when it arrived.
    ticks: BTreeMap<u64, Instant>,
    /// Echoed lines (without `echo ` and the newline).
    echoes: Vec<String>,
    /// Why the reader stopped, if it did before being told to.
    error: Option<String>,
}

/// Peer A's end of the established flow: a reader thread logging what arrives, and the stream
/// to write on.
struct TalkClient {
    stream: TcpStream,
    log: Arc<Mutex<ClientLog>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TalkClient {
    fn connect(ns: &NetNs, src: Ipv4Addr, dst: SocketAddr) -> swiftgate_testkit::Result<Self> {
        let stream = traffic::tcp_connect(ns, src.into(), dst, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(MAX_TICK_DELAY))?;
        let reader = stream.try_clone()?;
        let log = Arc::new(Mutex::new(ClientLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (log, stop) = (log.clone(), stop.clone());
            thread::Builder::new()
                .name("talk-client".into())
                .spawn(move || listen(reader, &log, &stop))?
        };
        Ok(TalkClient {
            stream,
            log,
            stop,
            handle: Some(handle),
        })
    }

    /// Sends `word` and waits up to `timeout` for its echo.
    fn echo(&mut self, word: &str, timeout: Duration) -> Result<Duration, String> {
        let sent = Instant::now();
        self.stream
            .write_all(format!("{word}\n").as_bytes())
            .map_err(|e| format!("writing {word:?}: {e}"))?;
        let got = swiftgate_testkit::poll_until(timeout, Duration::from_millis(20), || {
            lock(&self.log)
                .echoes
                .iter()
                .any(|e| e == word)
                .then_some(())
        });
        match got {
            Some(()) => Ok(sent.elapsed()),
            None => Err(format!(
                "no echo of {word:?} within {timeout:?} (client reader: {})",
                lock(&self.log).error.as_deref().unwrap_or("still reading")
            )),
        }
    }
}

impl Drop for TalkClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn listen(mut stream: TcpStream, log: &Mutex<ClientLog>, stop: &AtomicBool) {
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
        match stream.read(&mut buf) {
            Ok(0) => {
                lock(log).error = Some("the server closed the connection".into());
                return;
            }
            Ok(n) => {
                let now = Instant::now();
                pending.extend_from_slice(&buf[..n]);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let line = String::from_utf8_lossy(&line[..i]).into_owned();
                    let mut l = lock(log);
                    if let Some(n) = line.strip_prefix("tick ").and_then(|n| n.parse().ok()) {
                        l.ticks.insert(n, now);
                    } else if let Some(w) = line.strip_prefix("echo ") {
                        l.echoes.push(w.to_owned());
                    }
                }
            }
            Err(e) if transient(&e) => {}
            Err(e) => {
                lock(log).error = Some(format!("reading: {e}"));
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The flood: one raw socket, many source ports, sendmmsg, paced.

/// What the flood sender did.
#[derive(Debug)]
struct FloodReport {
    /// Packets the kernel of A's namespace accepted (`sendmmsg` results).
    sent: u64,
    /// `sendmmsg` calls that failed (the packet in front is skipped).
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

/// The one's-complement sum of `data` (as big-endian words) added to `sum`, not folded.
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

const PAYLOAD: usize = 16;
const PACKET: usize = 20 + 8 + PAYLOAD;

/// Writes an IPv4/UDP packet `src:sport -> dst` with valid checksums into `p`.
fn udp_packet(p: &mut [u8; PACKET], src: Ipv4Addr, sport: u16, dst: SocketAddrV4, seq: u32) {
    let total = PACKET as u16;
    let udp_len = (8 + PAYLOAD) as u16;
    p.fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let ip_sum = fold(sum16(&p[..20], 0));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dst.port().to_be_bytes());
    p[24..26].copy_from_slice(&udp_len.to_be_bytes());
    p[28..32].copy_from_slice(b"sgfl");
    p[32..36].copy_from_slice(&seq.to_be_bytes());
    let pseudo = sum16(&p[12..20], u32::from(udp_len) + 17);
    let udp_sum = match fold(sum16(&p[20..], pseudo)) {
        0 => 0xffff,
        s => s,
    };
    p[26..28].copy_from_slice(&udp_sum.to_be_bytes());
}

/// Opens a raw IPv4 socket (`IPPROTO_RAW`: the caller writes the IP header) in `ns`.
fn raw_socket(ns: &NetNs) -> io::Result<OwnedFd> {
    ns.run(|| {
        // SAFETY: socket() takes no pointers; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we just opened and own alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .map_err(|e| io::Error::other(e.to_string()))?
}

/// Sends `flows` UDP packets `src:(FLOOD_FIRST_PORT + i) -> dst` from `ns`, `rate` per second,
/// stopping after `limit` whatever was sent.
fn flood(
    ns: &NetNs,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    flows: u32,
    rate: u32,
    limit: Duration,
) -> FloodReport {
    let started = Instant::now();
    let mut report = FloodReport {
        sent: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    let sock = match raw_socket(ns) {
        Ok(s) => s,
        Err(e) => {
            report.errors = 1;
            report.first_error = Some(format!("raw socket: {e}"));
            return report;
        }
    };
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let mut packets = [[0u8; PACKET]; FLOOD_BATCH];
    let mut next = 0u32;
    while next < flows && started.elapsed() < limit {
        // Pace: packet `next` is due at `next / rate` seconds.
        let due = started + Duration::from_secs_f64(f64::from(next) / f64::from(rate));
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        let n = (flows - next).min(FLOOD_BATCH as u32) as usize;
        for (i, p) in packets[..n].iter_mut().enumerate() {
            let seq = next + i as u32;
            udp_packet(p, src, FLOOD_FIRST_PORT + seq as u16, dst, seq);
        }
        let mut iov: Vec<libc::iovec> = packets[..n]
            .iter_mut()
            .map(|p| libc::iovec {
                iov_base: p.as_mut_ptr().cast(),
                iov_len: PACKET,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) value.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&raw const to).cast_mut().cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: `msgs` holds `n` initialised headers whose name, iovec and packet buffers
        // (`to`, `iov`, `packets`) are live and unmoved for the call; the descriptor is open.
        let rc =
            unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            report.errors += 1;
            report
                .first_error
                .get_or_insert_with(|| format!("sendmmsg: {e}"));
            next += 1; // skip the packet in front, so the loop always moves on
        } else {
            report.sent += rc as u64;
            next += (rc as u32).max(1);
        }
    }
    report.elapsed = started.elapsed();
    report
}

// ---------------------------------------------------------------------------------------------
// The LAN sink and its count.

/// A UDP socket in the LAN that reads the flood and never answers (so no flow gets a reply and
/// no port-unreachable goes back).
struct Sink {
    read: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Sink {
    fn start(ns: &NetNs, addr: SocketAddr) -> Self {
        let socket = ns
            .run(|| UdpSocket::bind(addr))
            .expect("entering the LAN namespace")
            .unwrap_or_else(|e| panic!("binding the sink on {addr}: {e}"));
        socket.set_read_timeout(Some(POLL)).expect("sink timeout");
        let read = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (read, stop) = (read.clone(), stop.clone());
            thread::Builder::new()
                .name("sink".into())
                .spawn(move || {
                    let started = Instant::now();
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
                        if socket.recv_from(&mut buf).is_ok() {
                            read.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("spawning the sink")
        };
        Sink {
            read,
            stop,
            handle: Some(handle),
        }
    }

    fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// UDP datagrams that reached the stack of `ns` (`/proc/net/snmp` of that namespace):
/// delivered + errors (receive-buffer overruns, checksum) + no port. The flood is the only UDP
/// traffic in the LAN namespace.
fn lan_udp_in(ns: &NetNs) -> u64 {
    let text = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .expect("entering the LAN namespace")
        .expect("reading /proc/net/snmp in the LAN namespace");
    let mut rows = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (rows.next().unwrap_or(""), rows.next().unwrap_or(""));
    let table: BTreeMap<&str, u64> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    ["InDatagrams", "InErrors", "NoPorts"]
        .iter()
        .map(|k| table.get(k).copied().unwrap_or(0))
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Counters and the per-source view.

type Counters = BTreeMap<String, u64>;

/// `after - before` for every counter in `after` (a counter missing before counts from 0).
fn delta(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

fn counter(c: &Counters, name: &str) -> Result<u64, String> {
    c.get(name)
        .copied()
        .ok_or_else(|| format!("counter {name:?} missing from `swiftgate counters --json`"))
}

/// A counter that the conntrack-pressure rewrite (issue #19) adds beside `drop_ct_full`:
/// `drop_ct_share` (new flows refused because their source holds its share of the table) or
/// `ct_early_drop` (unreplied entries dropped early to make room). The code before the rewrite
/// has neither; the checks using them fail then, saying so.
fn new_ct_counter(c: &Counters, name: &str) -> Result<u64, String> {
    counter(c, name).map_err(|e| {
        format!("{e} (a counter of the issue #19 conntrack rewrite, not in this build)")
    })
}

/// One row of `swiftgate conntrack --top --json` (added by the issue #19 rewrite): a source's
/// tracked flows, the masqueraded ones among them, the new flows refused to it and its share
/// of the table in percent.
#[derive(Debug)]
struct TopRow {
    source: String,
    flows: u64,
    nat_flows: u64,
    refused: u64,
    share_percent: f64,
}

/// `swiftgate conntrack --top --json` on the routing peer (a command of the issue #19
/// rewrite; the code before it rejects `--top`).
fn conntrack_top(t: &Topology) -> Result<Vec<TopRow>, String> {
    let pin = t.pin_path.to_string_lossy();
    let out = swiftgate_testkit::agent::swiftgate_in(
        &t.gw.path(),
        &["conntrack", "--top", "--json", "--pin-path", &pin],
    )
    .and_then(swiftgate_testkit::CmdOutput::check)
    .map_err(|e| format!("{e} (a command of the issue #19 conntrack rewrite)"))?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("conntrack --top JSON ({e}): {}", out.stdout))?;
    let rows = v
        .as_array()
        .ok_or_else(|| format!("conntrack --top JSON is not a list: {}", out.stdout))?;
    rows.iter()
        .map(|r| {
            let n = |k: &str| {
                r.get(k)
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| format!("conntrack --top row without a number {k:?}: {r}"))
            };
            Ok(TopRow {
                source: r
                    .get("source")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| format!("conntrack --top row without \"source\": {r}"))?
                    .to_owned(),
                flows: n("flows")?,
                nat_flows: n("nat_flows")?,
                refused: n("refused")?,
                share_percent: r
                    .get("share_percent")
                    .and_then(serde_json::Value::as_f64)
                    .ok_or_else(|| format!("conntrack --top row without \"share_percent\": {r}"))?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checks: all evaluated and printed, then the test fails if any did.

struct Checks {
    /// The prefix of the printed lines (which test they belong to).
    log: String,
    outcomes: Vec<(String, Result<String, String>)>,
}

impl Checks {
    fn new(log: &str) -> Self {
        Checks {
            log: log.to_owned(),
            outcomes: Vec::new(),
        }
    }

    fn check(&mut self, what: &str, outcome: Result<String, String>) {
        let log = &self.log;
        match &outcome {
            Ok(detail) => eprintln!("{log} ok   {what}: {detail}"),
            Err(why) => eprintln!("{log} FAIL {what}: {why}"),
        }
        self.outcomes.push((what.to_owned(), outcome));
    }

    fn finish(self, t: &mut Topology) {
        let failed: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|(what, r)| r.as_ref().err().map(|why| format!("- {what}: {why}")))
            .collect();
        if !failed.is_empty() {
            panic!(
                "{} {} of {} checks failed:\n{}\n{}",
                self.log,
                failed.len(),
                self.outcomes.len(),
                failed.join("\n"),
                t.diagnostics()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario, in two variants.

/// How the routing peer limits the flood, and so what the checks expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// `[interface] conntrack_capacity = 4096` (the older spelling) and the default per-source
    /// share (25 %): A may hold [`SHARE`] flows, its further new flows are refused
    /// (`drop_ct_share`).
    SourceShares,
    /// `[conntrack] capacity = 4096` and `source_share = 100` (no per-source limit): the flood
    /// fills the table with A's unreplied flows, and from then on every new flow takes the
    /// place of an unreplied or closing one (`ct_early_drop`) or is refused (`drop_ct_full`).
    EarlyDropOnly,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::SourceShares => "source shares",
            Variant::EarlyDropOnly => "early drop only",
        }
    }

    /// The agent's config text: `base` with this variant's conntrack settings.
    fn config_text(self, base: &str) -> String {
        match self {
            // `conntrack_capacity` has no field in the testkit's config builder: add the key.
            Variant::SourceShares => base.replacen(
                "[interface]\n",
                &format!("[interface]\nconntrack_capacity = {CAPACITY}\n"),
                1,
            ),
            Variant::EarlyDropOnly => {
                format!("{base}\n[conntrack]\ncapacity = {CAPACITY}\nsource_share = 100\n")
            }
        }
    }
}

#[test]
fn established_flow_and_other_peer_survive_a_new_flow_flood_with_source_shares() {
    run_scenario(Variant::SourceShares);
}

#[test]
fn established_flow_and_other_peer_survive_a_new_flow_flood_with_early_drop_only() {
    run_scenario(Variant::EarlyDropOnly);
}

/// The scenario of the module documentation under `variant`'s conntrack settings.
fn run_scenario(variant: Variant) {
    require_root();
    let log = format!("{LOG} [{}]", variant.name());
    let log = log.as_str();
    let test_started = Instant::now();
    let mut t = Topology::build(&TopologySpec {
        client_addrs: vec![PEER_A, PEER_B],
        lans: vec![LanSpec::test_net_1(&[10, 20])],
    })
    .expect("building the test topology");
    eprintln!("{log} topology {}", t.id);
    let talker = Talker::start(t.lan(0), sa(SERVER, TALK_PORT));
    let _echo = TcpServer::start(t.lan(0), sa(SERVER, ECHO_PORT)).expect("echo server");
    let sink = Sink::start(t.lan(0), sa(SINK, SINK_PORT));

    let cfg = t
        .base_config()
        .peer(Peer::new("peer-a", &[&PEER_A.to_string()], &["staff"]))
        .peer(Peer::new("peer-b", &[&PEER_B.to_string()], &["staff"]))
        .network(
            Network::new("Office", true)
                .resource("app", &format!("{SERVER}/32"), &["apps"])
                .resource("sink", &format!("{SINK}/32"), &["sinks"]),
        )
        .policy(Policy::accept(
            "staff-to-apps",
            &["staff"],
            &["apps"],
            "tcp",
            &[&TALK_PORT.to_string(), &ECHO_PORT.to_string()],
        ))
        .policy(Policy::accept(
            "staff-to-sinks",
            &["staff"],
            &["sinks"],
            "udp",
            &[&SINK_PORT.to_string()],
        ));
    let text = variant.config_text(&cfg.to_toml());
    assert!(
        text.contains(&format!("capacity = {CAPACITY}\n")),
        "config text: {text}"
    );
    t.write_config_text(&t.config_path, &text)
        .expect("writing the agent config");
    if let Err(e) = t.start_agent() {
        panic!("starting the agent: {e}");
    }

    // 1. The established flow: the server speaks first (tick 0), the client echoes once.
    let mut client = TalkClient::connect(&t.client, PEER_A, sa(SERVER, TALK_PORT))
        .unwrap_or_else(|e| panic!("A -> talker: {e}"));
    let first = swiftgate_testkit::poll_until(MAX_TICK_DELAY, POLL, || {
        lock(&client.log).ticks.contains_key(&0).then_some(())
    });
    if first.is_none() {
        panic!("the talker's first tick never arrived\n{}", t.diagnostics());
    }
    if let Err(e) = client.echo("before-flood", MAX_TICK_DELAY) {
        panic!(
            "the established flow before the flood: {e}\n{}",
            t.diagnostics()
        );
    }

    let counters_before = t.counters().expect("swiftgate counters --json");
    let injected_before = t
        .relay_stats()
        .expect("relay")
        .udp4_a_to_b
        .load(Ordering::Relaxed);
    let lan_before = lan_udp_in(t.lan(0));

    // 2. + 3. The flood from A and B's new connections, at once.
    eprintln!(
        "{log} flood: {FLOOD_FLOWS} flows {PEER_A}:{FLOOD_FIRST_PORT}.. -> {SINK}:{SINK_PORT} at \
         {FLOOD_RATE}/s; {B_CONNECTS} connections {PEER_B} -> {SERVER}:{ECHO_PORT} every {B_SPACING:?}"
    );
    let flood_started = Instant::now();
    let (report, b_results) = thread::scope(|s| {
        let client_ns = &t.client;
        let flooder = s.spawn(move || {
            flood(
                client_ns,
                PEER_A,
                SocketAddrV4::new(SINK, SINK_PORT),
                FLOOD_FLOWS,
                FLOOD_RATE,
                FLOOD_MAX,
            )
        });
        let opener = s.spawn(move || {
            (0..B_CONNECTS)
                .map(|i| {
                    let due = flood_started + B_FIRST_AFTER + B_SPACING * i;
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    let at = flood_started.elapsed();
                    let r = traffic::tcp_probe(
                        client_ns,
                        PEER_B.into(),
                        sa(SERVER, ECHO_PORT),
                        CONNECT_TIMEOUT,
                    );
                    (at, r.map_err(|e| e.to_string()))
                })
                .collect::<Vec<_>>()
        });
        let report = flooder.join().expect("the flood thread panicked");
        let b = opener.join().expect("peer B's thread panicked");
        (report, b)
    });
    let flood_ended = flood_started + report.elapsed;
    // Let the LAN namespace read what is still queued.
    thread::sleep(Duration::from_millis(300));
    let counters_after = t.counters().expect("swiftgate counters --json");
    let injected = t
        .relay_stats()
        .expect("relay")
        .udp4_a_to_b
        .load(Ordering::Relaxed)
        - injected_before;
    let lan_received = lan_udp_in(t.lan(0)) - lan_before;
    let flows = t.conntrack().map_err(|e| e.to_string());
    let top = conntrack_top(&t);
    let d = delta(&counters_before, &counters_after);

    eprintln!(
        "{log} flood: {} packets sent in {:.2} s ({:.0} packets/s; {} send errors{}), {injected} \
         entered the routing peer, {lan_received} reached the LAN stack ({} read by the sink)",
        report.sent,
        secs(report.elapsed),
        report.sent as f64 / secs(report.elapsed).max(1e-3),
        report.errors,
        report
            .first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        sink.read(),
    );
    let moved: Vec<String> = d
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    eprintln!("{log} counter deltas over the flood: {}", moved.join(" "));

    // The established flow after the flood: wait for a tick the server wrote after the flood
    // ended (or until one could have arrived), then send on it.
    let last_chance = flood_ended + TICK_INTERVAL + MAX_TICK_DELAY;
    swiftgate_testkit::poll_until(
        last_chance.saturating_duration_since(Instant::now()),
        POLL,
        || {
            let sent = lock(&talker.log).sent.clone();
            let got = lock(&client.log);
            sent.iter()
                .enumerate()
                .any(|(n, at)| *at >= flood_ended && got.ticks.contains_key(&(n as u64)))
                .then_some(())
        },
    );
    let after_echo = client.echo("after-flood", MAX_TICK_DELAY);

    let mut checks = Checks::new(log);

    checks.check(
        &format!("the flood put at least {FLOOD_MIN_INJECTED} new flows into the routing peer"),
        if injected >= FLOOD_MIN_INJECTED {
            Ok(format!(
                "{injected} in {:.2} s ({:.0}/s)",
                secs(report.elapsed),
                injected as f64 / secs(report.elapsed).max(1e-3)
            ))
        } else {
            Err(format!(
                "only {injected} (sent {}, {} send errors): the machine is too slow for this test",
                report.sent, report.errors
            ))
        },
    );

    checks.check(
        "A's established flow survives the flood (every server message arrives, A can send after it)",
        established_outcome(&talker, &client, flood_started, flood_ended, &after_echo),
    );

    let b_failed: Vec<String> = b_results
        .iter()
        .enumerate()
        .filter_map(|(i, (at, r))| {
            r.as_ref()
                .err()
                .map(|e| format!("#{i} at {:.1} s: {e}", secs(*at)))
        })
        .collect();
    checks.check(
        &format!("peer B's {B_CONNECTS} new connections during the flood all succeed"),
        if b_failed.is_empty() {
            Ok(format!("{}/{B_CONNECTS}", b_results.len()))
        } else {
            Err(format!(
                "{} of {B_CONNECTS} failed: {}",
                b_failed.len(),
                b_failed.join("; ")
            ))
        },
    );

    let a = PEER_A.to_string();
    if variant == Variant::SourceShares {
        checks.check(
            &format!("A holds at most its share ({SHARE} of {CAPACITY} flows) after the flood"),
            flows.and_then(|f| {
                let held = f.iter().filter(|e| e.src == a).count() as u64;
                let total = f.len();
                let msg =
                    format!("`swiftgate conntrack --json`: {held} of A's flows, {total} in all");
                if held <= SHARE { Ok(msg) } else { Err(msg) }
            }),
        );
    }

    checks.check(
        &format!("the table holds at most its capacity ({CAPACITY} flows) after the flood"),
        (|| {
            let used = counter(&counters_after, "conntrack.flows_v4")?;
            let cap = counter(&counters_after, "conntrack.capacity_v4")?;
            let msg = format!("conntrack.flows_v4 {used}, conntrack.capacity_v4 {cap}");
            if cap == u64::from(CAPACITY) && used <= cap {
                Ok(msg)
            } else {
                Err(msg)
            }
        })(),
    );

    // Tolerance for packets lost between the routing peer and the LAN stack for other reasons
    // (veth backlog) and for counters that also saw B's and the talker's packets.
    let slack = 64 + injected / 100;
    let not_forwarded = injected.saturating_sub(lan_received);

    checks.check(
        "accept_new counts the flood flows that were forwarded",
        counter(&d, "accept_new").and_then(|accepted| {
            let msg = format!(
                "accept_new +{accepted}, {lan_received} flood packets reached the LAN, B opened \
                 {B_CONNECTS}"
            );
            if accepted + slack >= lan_received
                && accepted <= lan_received + u64::from(B_CONNECTS) + slack
            {
                Ok(msg)
            } else {
                Err(msg)
            }
        }),
    );

    // Needs the new counter `drop_ct_share`.
    checks.check(
        "the drop counters account for the flood packets that were not forwarded",
        (|| {
            let full = counter(&d, "drop_ct_full")?;
            let nat = counter(&d, "drop_nat_exhausted")?;
            let share = new_ct_counter(&d, "drop_ct_share")?;
            let dropped = full + share + nat;
            let msg = format!(
                "{not_forwarded} not forwarded ({injected} in, {lan_received} out); drop_ct_full \
                 +{full}, drop_ct_share +{share}, drop_nat_exhausted +{nat}"
            );
            if dropped + slack >= not_forwarded && dropped <= not_forwarded + slack {
                Ok(msg)
            } else {
                Err(msg)
            }
        })(),
    );

    if variant == Variant::EarlyDropOnly {
        checks.check(
            "no new flow is refused for its source's share (there is none)",
            new_ct_counter(&d, "drop_ct_share").and_then(|share| {
                let msg = format!("drop_ct_share +{share}");
                if share == 0 { Ok(msg) } else { Err(msg) }
            }),
        );
    }

    // Needs the new counter `ct_early_drop`.
    match variant {
        Variant::SourceShares => checks.check(
            "flood flows forwarded beyond A's share each took an early-dropped unreplied entry",
            new_ct_counter(&d, "ct_early_drop").and_then(|early| {
                let msg = format!(
                    "{lan_received} flood flows reached the LAN, share {SHARE}, ct_early_drop \
                     +{early}"
                );
                if lan_received <= SHARE + early + 8 {
                    Ok(msg)
                } else {
                    Err(msg)
                }
            }),
        ),
        Variant::EarlyDropOnly => checks.check(
            "the flood filled the table, and the flood flows forwarded beyond the room it had \
             each took an early-dropped unreplied entry",
            (|| {
                let early = new_ct_counter(&d, "ct_early_drop")?;
                let used = counter(&counters_before, "conntrack.flows_v4")?;
                let room = u64::from(CAPACITY).saturating_sub(used);
                let msg = format!(
                    "{lan_received} flood flows reached the LAN, room at the start {room} \
                     ({used} of {CAPACITY} flows tracked), ct_early_drop +{early}"
                );
                if lan_received > room && early > 0 && lan_received <= room + early + 8 {
                    Ok(msg)
                } else {
                    Err(msg)
                }
            })(),
        ),
    }

    // Needs `swiftgate conntrack --top --json`.
    match variant {
        Variant::SourceShares => checks.check(
            "`swiftgate conntrack --top --json`: A at its share with its refusals, B refused \
             nothing",
            top.and_then(|rows| {
                let row_a = rows
                    .iter()
                    .find(|r| r.source == a)
                    .ok_or_else(|| format!("no row for {a}: {rows:?}"))?;
                let refused_b = rows
                    .iter()
                    .find(|r| r.source == PEER_B.to_string())
                    .map_or(0, |r| r.refused);
                let msg = format!("A: {row_a:?}; B refused {refused_b}");
                // Read as the percentage of the whole table the source holds (at most the
                // 25 % share), not as the percentage of its share in use.
                let limit = 100.0 * SHARE as f64 / f64::from(CAPACITY) + 0.01;
                let ok = row_a.flows <= SHARE
                    && row_a.nat_flows <= row_a.flows
                    && row_a.share_percent <= limit
                    && row_a.refused + slack >= not_forwarded
                    && refused_b == 0;
                if ok { Ok(msg) } else { Err(msg) }
            }),
        ),
        Variant::EarlyDropOnly => checks.check(
            "`swiftgate conntrack --top --json`: A within the table, nobody refused for a share",
            top.and_then(|rows| {
                let row_a = rows
                    .iter()
                    .find(|r| r.source == a)
                    .ok_or_else(|| format!("no row for {a}: {rows:?}"))?;
                let refused: u64 = rows.iter().map(|r| r.refused).sum();
                let msg = format!("A: {row_a:?}; refused by all sources {refused}");
                let ok = row_a.flows <= u64::from(CAPACITY)
                    && row_a.nat_flows <= row_a.flows
                    && row_a.share_percent <= 100.01
                    && refused == 0;
                if ok { Ok(msg) } else { Err(msg) }
            }),
        ),
    }

    // The agent's warning: its garbage collector (every 10 s) reports the refusals or early
    // drops since its last pass, naming A among the sources holding the most; with early drop
    // alone the table also crossed the warning threshold (90 %).
    let mut wanted = vec!["conntrack under pressure since the last check"];
    if variant == Variant::EarlyDropOnly {
        wanted.push("conntrack table filling up");
    }
    let deadline = Instant::now() + WARNING_WAIT;
    let warned = loop {
        let agent_log = t.agent().map(|a| a.log()).unwrap_or_default();
        let pressure_line = agent_log
            .lines()
            .find(|l| l.contains(wanted[0]) && l.contains(&a))
            .map(str::to_owned);
        let all = wanted.iter().all(|w| agent_log.contains(w));
        if let (Some(line), true) = (&pressure_line, all) {
            break Ok(line.clone());
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "within {} s of the flood's end the log has {:?} (each with {a} for the first): \
                 {}",
                WARNING_WAIT.as_secs(),
                wanted
                    .iter()
                    .map(|w| (w, agent_log.contains(w)))
                    .collect::<Vec<_>>(),
                pressure_line.as_deref().unwrap_or("no pressure line")
            ));
        }
        thread::sleep(POLL * 4);
    };
    checks.check("the agent's log warns of the pressure, naming A", warned);

    eprintln!("{log} done in {:.1} s", secs(test_started.elapsed()));
    drop(client);
    drop(talker);
    drop(sink);
    checks.finish(&mut t);
}

/// The verdict on the established flow: every tick the server wrote (that had time to arrive)
/// arrived within [`MAX_TICK_DELAY`], the server never saw an error and kept writing after the
/// flood, and the client's message after the flood was echoed.
fn established_outcome(
    talker: &Talker,
    client: &TalkClient,
    flood_started: Instant,
    flood_ended: Instant,
    after_echo: &Result<Duration, String>,
) -> Result<String, String> {
    let server = lock(&talker.log);
    let got = lock(&client.log);
    let now = Instant::now();
    let at = |t: Instant| offset(t, flood_started);
    let mut problems = Vec::new();
    let mut worst = Duration::ZERO;
    for (n, sent) in server.sent.iter().enumerate() {
        match got.ticks.get(&(n as u64)) {
            Some(rx) => {
                let delay = rx.saturating_duration_since(*sent);
                worst = worst.max(delay);
                if delay > MAX_TICK_DELAY {
                    problems.push(format!(
                        "tick {n} (sent at {:+.1} s) took {:.1} s",
                        at(*sent),
                        secs(delay)
                    ));
                }
            }
            None if now.saturating_duration_since(*sent) >= MAX_TICK_DELAY => {
                problems.push(format!(
                    "tick {n} (sent at {:+.1} s) never arrived",
                    at(*sent)
                ));
            }
            None => {}
        }
    }
    if let Some(e) = &server.error {
        problems.push(format!("the server's connection ended: {e}"));
    }
    if !server.sent.iter().any(|s| *s >= flood_ended) {
        problems.push(format!(
            "the server wrote no tick after the flood ended (last at {:+.1} s)",
            server.sent.last().map_or(f64::NAN, |s| at(*s))
        ));
    }
    if let Some(e) = &got.error {
        problems.push(format!("the client's reader stopped: {e}"));
    }
    if let Err(e) = after_echo {
        problems.push(format!("after the flood: {e}"));
    }
    let last_rx = got
        .ticks
        .values()
        .max()
        .map_or(String::from("none"), |t| format!("{:+.1} s", at(*t)));
    let summary = format!(
        "server wrote {} ticks, client got {} (last at {last_rx}; times relative to the flood's \
         start, which lasted {:.1} s), slowest {:.2} s",
        server.sent.len(),
        got.ticks.len(),
        secs(flood_ended - flood_started),
        secs(worst)
    );
    if problems.is_empty() {
        Ok(format!(
            "{summary}; echo after the flood in {:.0} ms",
            after_echo.as_ref().map_or(0.0, |d| d.as_secs_f64() * 1e3)
        ))
    } else {
        Err(format!("{}; {summary}", problems.join("; ")))
    }
}
