//! Traffic helpers: TCP/UDP echo servers that record the peers they saw, client probes and
//! long-lived TCP sessions, ping. Sockets are created inside a namespace (see [`NetNs::run`])
//! and then used from ordinary threads.

use super::{Error, NetNs, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Connect timeout for connections that are expected to succeed (covers one SYN retransmit).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connect timeout for connections that are expected to be dropped.
pub const BLOCKED_TIMEOUT: Duration = Duration::from_millis(1500);
/// Read/write timeout of client exchanges.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a server runs, as a bound in case a test leaks it.
const MAX_SERVER_LIFETIME: Duration = Duration::from_secs(20 * 60);
/// How often server threads look at their stop flag.
const TICK: Duration = Duration::from_millis(100);

/// A TCP echo server inside a namespace. Records the peer address of every accepted
/// connection (to check masquerading); stops on drop.
pub struct TcpServer {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `addr` inside `ns` and starts accepting; returns once the socket listens.
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Result<Self> {
        let listener = ns
            .run(|| TcpListener::bind(addr))?
            .map_err(|e| Error(format!("binding TCP {addr} in {}: {e}", ns.name())))?;
        listener.set_nonblocking(true)?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (peers, stop) = (peers.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("tcp-server-{addr}"))
                .spawn(move || accept_loop(listener, &peers, &stop))
                .map_err(|e| Error(format!("spawning the server thread: {e}")))?
        };
        Ok(TcpServer {
            addr,
            peers,
            stop,
            handle: Some(handle),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Peer addresses of all connections accepted so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Peer IPs of all connections accepted so far.
    pub fn peer_ips(&self) -> Vec<IpAddr> {
        self.peers().iter().map(SocketAddr::ip).collect()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, peers: &Mutex<Vec<SocketAddr>>, stop: &Arc<AtomicBool>) {
    let started = Instant::now();
    let mut handlers = Vec::new();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_SERVER_LIFETIME {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Ok(mut p) = peers.lock() {
                    p.push(peer);
                }
                let stop = stop.clone();
                if let Ok(h) = thread::Builder::new()
                    .name(format!("tcp-echo-{peer}"))
                    .spawn(move || echo(stream, &stop))
                {
                    handlers.push(h);
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                thread::sleep(Duration::from_millis(10));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
    for h in handlers {
        let _ = h.join();
    }
}

/// Echoes everything back until EOF, an error, or the stop flag.
fn echo(mut stream: TcpStream, stop: &AtomicBool) {
    let started = Instant::now();
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_SERVER_LIFETIME {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// A UDP echo server inside a namespace; records peers; stops on drop.
pub struct UdpServer {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl UdpServer {
    /// Binds `addr` inside `ns` and starts echoing datagrams.
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Result<Self> {
        let socket = ns
            .run(|| UdpSocket::bind(addr))?
            .map_err(|e| Error(format!("binding UDP {addr} in {}: {e}", ns.name())))?;
        socket.set_read_timeout(Some(TICK))?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (peers, stop) = (peers.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("udp-server-{addr}"))
                .spawn(move || {
                    let started = Instant::now();
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_SERVER_LIFETIME {
                        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                            if let Ok(mut p) = peers.lock() {
                                p.push(peer);
                            }
                            let _ = socket.send_to(&buf[..n], peer);
                        }
                    }
                })
                .map_err(|e| Error(format!("spawning the server thread: {e}")))?
        };
        Ok(UdpServer {
            addr,
            peers,
            stop,
            handle: Some(handle),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Source addresses of all datagrams received so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Opens a TCP connection from `src` (port chosen by the kernel) to `dst` inside `ns`.
pub fn tcp_connect(
    ns: &NetNs,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    let connect = || -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        socket.connect_timeout(&SockAddr::from(dst), timeout)?;
        Ok(TcpStream::from(socket))
    };
    ns.run(connect)?
        .map_err(|e| Error(format!("TCP {src} -> {dst}: {e}")))
}

static NEXT_MESSAGE: AtomicU64 = AtomicU64::new(0);

fn message() -> Vec<u8> {
    format!(
        "swiftgate-e2e {}\n",
        NEXT_MESSAGE.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

/// Sends one message on `stream` and expects the echo back within [`IO_TIMEOUT`].
fn exchange_on(stream: &mut TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let msg = message();
    stream.write_all(&msg)?;
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::other(format!(
            "echo mismatch: sent {:?}, got {:?}",
            String::from_utf8_lossy(&msg),
            String::from_utf8_lossy(&back)
        )));
    }
    Ok(())
}

/// Connects from `src` to `dst` inside `ns` and exchanges one echoed message.
/// `Err` says which step failed (connect or exchange).
pub fn tcp_probe(ns: &NetNs, src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<()> {
    let mut stream = tcp_connect(ns, src, dst, timeout)?;
    exchange_on(&mut stream).map_err(|e| {
        Error(format!(
            "TCP {src} -> {dst}: connected, but the echo failed: {e}"
        ))
    })
}

/// The byte at `offset` of a bulk transfer: a pattern with no short period, so a segment that
/// lands at the wrong offset or is repeated shows.
fn bulk_byte(offset: usize) -> u8 {
    ((offset as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ (offset >> 16) as u8
}

/// Sends `len` bytes from `src` to the echo server at `dst` (inside `ns`) and checks that
/// exactly those bytes come back, in order, within `timeout`. Writing and reading run at once
/// (an echo stalls when both directions' buffers fill), so the data crosses the network both
/// ways in bulk: full-sized segments, coalesced and split by the offloads on the way.
pub fn bulk_echo(
    ns: &NetNs,
    src: IpAddr,
    dst: SocketAddr,
    len: usize,
    timeout: Duration,
) -> Result<()> {
    let mut stream = tcp_connect(ns, src, dst, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let deadline = Instant::now() + timeout;
    let sender = thread::Builder::new()
        .name("bulk-writer".into())
        .spawn(move || -> io::Result<()> {
            let mut chunk = vec![0u8; 64 << 10];
            let mut sent = 0;
            while sent < len {
                let n = chunk.len().min(len - sent);
                for (i, b) in chunk[..n].iter_mut().enumerate() {
                    *b = bulk_byte(sent + i);
                }
                writer.write_all(&chunk[..n])?;
                sent += n;
                if Instant::now() > deadline {
                    return Err(io::Error::other("writing took too long"));
                }
            }
            writer.shutdown(std::net::Shutdown::Write)
        })
        .map_err(|e| Error(format!("spawning the bulk writer: {e}")))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut received = 0;
    let outcome = loop {
        if received == len {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(format!("{received} of {len} bytes back after {timeout:?}"));
        }
        match stream.read(&mut buf) {
            Ok(0) => break Err(format!("closed after {received} of {len} bytes")),
            Ok(n) => {
                if let Some(i) = (0..n).find(|&i| buf[i] != bulk_byte(received + i)) {
                    break Err(format!("byte {} of the echo differs", received + i));
                }
                received += n;
                if received > len {
                    break Err(format!("{received} bytes back, {len} sent"));
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => {}
            Err(e) => break Err(format!("reading after {received} of {len} bytes: {e}")),
        }
    };
    let written = sender
        .join()
        .map_err(|_| Error("the bulk writer panicked".into()))?;
    outcome.map_err(|e| Error(format!("bulk echo {src} -> {dst}: {e}")))?;
    written.map_err(|e| Error(format!("bulk echo {src} -> {dst}: writing: {e}")))
}

/// A long-lived TCP connection with an echo server on the other end.
pub struct TcpSession {
    stream: TcpStream,
    src: IpAddr,
    dst: SocketAddr,
    exchanges: u64,
}

impl TcpSession {
    /// Connects from `src` to `dst` inside `ns` and does a first exchange.
    pub fn open(ns: &NetNs, src: IpAddr, dst: SocketAddr) -> Result<Self> {
        let stream = tcp_connect(ns, src, dst, CONNECT_TIMEOUT)?;
        let mut s = TcpSession {
            stream,
            src,
            dst,
            exchanges: 0,
        };
        s.exchange()?;
        Ok(s)
    }

    /// Sends one message and expects its echo.
    pub fn exchange(&mut self) -> Result<()> {
        exchange_on(&mut self.stream).map_err(|e| {
            Error(format!(
                "exchange #{} on the session {} -> {} failed: {e}",
                self.exchanges + 1,
                self.src,
                self.dst
            ))
        })?;
        self.exchanges += 1;
        Ok(())
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    /// Successful exchanges so far.
    pub fn exchanges(&self) -> u64 {
        self.exchanges
    }
}

/// Sends a datagram from `src` to `dst` inside `ns` and waits up to `timeout` for its echo;
/// tries `attempts` times (UDP has no retransmission).
pub fn udp_probe(
    ns: &NetNs,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
    attempts: u32,
) -> Result<()> {
    let socket = ns
        .run(|| UdpSocket::bind(SocketAddr::new(src, 0)))?
        .map_err(|e| Error(format!("binding UDP {src}:0: {e}")))?;
    socket.set_read_timeout(Some(timeout))?;
    let mut last = String::from("no attempt made");
    for _ in 0..attempts.max(1) {
        let msg = message();
        if let Err(e) = socket.send_to(&msg, dst) {
            last = format!("send: {e}");
            continue;
        }
        let mut buf = [0u8; 2048];
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == dst && buf[..n] == msg[..] => return Ok(()),
            Ok((n, from)) => last = format!("unexpected {n}-byte reply from {from}"),
            Err(e) => last = format!("no echo: {e}"),
        }
    }
    Err(Error(format!("UDP {src} -> {dst}: {last}")))
}

/// One ICMP echo from `src` to `dst` inside `ns` (`ping -c1 -W1 -I src dst`); true if answered.
pub fn ping(ns: &NetNs, src: IpAddr, dst: IpAddr) -> Result<bool> {
    let out = ns.output(
        Command::new("ping")
            .args(["-n", "-c1", "-W1", "-I"])
            .arg(src.to_string())
            .arg(dst.to_string()),
    )?;
    Ok(out.success())
}

/// The Berlin Office walkthrough's checks once its policy (TCP 443 to the wiki) works:
/// `probe(port, timeout)` (a connection attempt from the client) does not reach port 22, and
/// every connection the wiki accepted came from `masquerade` (the routing peer's LAN address:
/// masquerade is on).
pub fn assert_only_443_masqueraded(
    probe: impl Fn(u16, Duration) -> bool,
    wiki: &TcpServer,
    masquerade: IpAddr,
) {
    assert!(!probe(22, BLOCKED_TIMEOUT), "only the policy's port");
    let seen = wiki.peer_ips();
    assert!(
        !seen.is_empty() && seen.iter().all(|ip| *ip == masquerade),
        "masqueraded to {masquerade}: {seen:?}"
    );
}
