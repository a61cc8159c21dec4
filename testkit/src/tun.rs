//! TUN devices and the userspace relay that joins two of them into an "overlay".
//!
//! There is no WireGuard in the tests yet: the gw namespace gets a TUN (`sg0`, the agent's
//! overlay interface) and the client namespace gets one (`ovl0`); [`Relay`] copies raw IP
//! packets between the two file descriptors.

use super::{Error, NetNs, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags member of the union.
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates the TUN device `name` (IFF_TUN | IFF_NO_PI: raw IP packets, no packet-info header)
/// in the calling thread's network namespace and returns its queue file descriptor. The device
/// exists as long as the descriptor is open. Use [`open_tun_in`] for a named namespace.
pub fn open_tun(name: &str) -> Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(Error(format!("bad interface name {name:?}")));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error(format!("opening /dev/net/tun: {e}")))?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `file` is an open /dev/net/tun descriptor and `req` is a live, writable,
    // NUL-terminated ifreq-compatible struct (40 bytes, like `struct ifreq`) for the whole call;
    // TUNSETIFF reads the name and flags and may write the chosen name back into it.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut IfReqFlags,
        )
    };
    if rc < 0 {
        return Err(Error(format!(
            "TUNSETIFF {name}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(file)
}

/// Creates the TUN device `name` inside `ns` (see [`open_tun`]).
pub fn open_tun_in(ns: &NetNs, name: &str) -> Result<File> {
    ns.run(|| open_tun(name))?
        .map_err(|e| e.context(format!("in netns {}", ns.name())))
}

/// Packet counters of a [`Relay`].
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Packets copied from the first to the second descriptor.
    pub a_to_b: AtomicU64,
    /// Packets copied from the second to the first descriptor.
    pub b_to_a: AtomicU64,
    /// Of `a_to_b`, the IPv4 UDP packets (to count a UDP load exactly as it entered the second
    /// device, whatever else crosses the relay).
    pub udp4_a_to_b: AtomicU64,
    /// Packets that could not be written.
    pub write_errors: AtomicU64,
}

/// The longest a relay runs, as a bound in case a test leaks it.
const MAX_RELAY_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Poll timeout: how quickly the relay notices its stop flag.
const POLL_MS: libc::c_int = 100;

/// Copies IP packets between two TUN descriptors on a background thread until stopped (or
/// dropped). Set `SG_E2E_TRACE=1` to log every packet.
pub struct Relay {
    label: String,
    stop: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
    handle: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts relaying between `a` and `b`; `label` names the pair in logs (`"a<->b"`).
    pub fn start(a: File, b: File, label: &str) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let trace = std::env::var_os("SG_E2E_TRACE").is_some_and(|v| v != "0");
        let handle = {
            let (stop, stats, label) = (stop.clone(), stats.clone(), label.to_owned());
            thread::Builder::new()
                .name(format!("relay-{label}"))
                .spawn(move || relay_loop(&a, &b, &stop, &stats, &label, trace))
                .map_err(|e| Error(format!("spawning the relay thread: {e}")))?
        };
        Ok(Relay {
            label: label.to_owned(),
            stop,
            stats,
            handle: Some(handle),
        })
    }

    /// Packet counters so far.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// One-line summary of the counters.
    pub fn summary(&self) -> String {
        format!(
            "relay {}: {} packets ->, {} packets <-, {} write errors",
            self.label,
            self.stats.a_to_b.load(Ordering::Relaxed),
            self.stats.b_to_a.load(Ordering::Relaxed),
            self.stats.write_errors.load(Ordering::Relaxed)
        )
    }

    /// Stops the thread and closes both descriptors (which removes the TUN devices).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            eprintln!("[e2e] warning: relay thread {} panicked", self.label);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn relay_loop(a: &File, b: &File, stop: &AtomicBool, stats: &RelayStats, label: &str, trace: bool) {
    let started = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut consecutive_errors = 0u32;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RELAY_LIFETIME {
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two initialised pollfd structs and its length is
        // passed along; both descriptors stay open (borrowed from `a` and `b`) for the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
        if rc == 0 {
            continue;
        }
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("[e2e] relay {label}: poll failed: {e}");
            return;
        }
        let bad = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
        let ready_a = fds[0].revents & libc::POLLIN != 0;
        let ready_b = fds[1].revents & libc::POLLIN != 0;
        let dead = (fds[0].revents | fds[1].revents) & bad != 0;
        if dead {
            eprintln!("[e2e] relay {label}: a TUN descriptor reported an error; stopping");
            return;
        }
        for (ready, from, to, counter, udp4, dir) in [
            (ready_a, a, b, &stats.a_to_b, Some(&stats.udp4_a_to_b), "->"),
            (ready_b, b, a, &stats.b_to_a, None, "<-"),
        ] {
            if !ready {
                continue;
            }
            match (&*from).read(&mut buf) {
                Ok(n) => {
                    consecutive_errors = 0;
                    if trace {
                        eprintln!("[e2e] relay {label} {dir} {}", describe_packet(&buf[..n]));
                    }
                    // A TUN write takes the whole packet or fails.
                    match (&*to).write(&buf[..n]) {
                        Ok(w) if w == n => {
                            counter.fetch_add(1, Ordering::Relaxed);
                            if let Some(udp4) = udp4
                                && n >= 20
                                && buf[0] >> 4 == 4
                                && buf[9] == 17
                            {
                                udp4.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            stats.write_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    consecutive_errors += 1;
                    if consecutive_errors > 100 {
                        eprintln!("[e2e] relay {label}: giving up after repeated read errors: {e}");
                        return;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// A short description of an IP packet for traces: protocol, addresses, ports.
pub fn describe_packet(p: &[u8]) -> String {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return format!("non-IPv4 packet, {} bytes", p.len());
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let proto = p[9];
    let ports = if (proto == 6 || proto == 17) && p.len() >= ihl + 4 {
        let sp = u16::from_be_bytes([p[ihl], p[ihl + 1]]);
        let dp = u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]);
        let flags = if proto == 6 && p.len() >= ihl + 14 {
            format!(" flags=0x{:02x}", p[ihl + 13])
        } else {
            String::new()
        };
        format!(" {sp} -> {dp}{flags}")
    } else {
        String::new()
    };
    format!("proto {proto} {src} -> {dst}{ports} len {}", p.len())
}
