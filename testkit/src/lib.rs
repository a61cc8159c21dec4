//! swiftgate's test fixtures, shared by the integration tests (`tests/`), the examples and the
//! benchmarks (`agent/examples/`).
//!
//! Two kinds of labs, on one set of building blocks:
//!
//! - Namespace labs run the `swiftgate` agent binary ([`swiftgate_bin`]) in throw-away network
//!   namespaces and drive traffic through it with ordinary std sockets: [`Topology`] (a routing
//!   peer "gw", an overlay client joined to it through a pair of TUN devices and a userspace
//!   relay standing in for WireGuard, LAN namespaces on veth pairs), [`wg::Lab`] (namespaces,
//!   veth links, stock wireguard-go peers and agents with WireGuard) and [`mgmt::Management`]
//!   (an in-process management server). [`config`] renders agent configurations.
//! - The kernel lab [`kernel::Lab`] loads the eBPF programs in-process and runs packets built
//!   with [`kernel::pkt`] through them with `BPF_PROG_TEST_RUN`.
//!
//! The building blocks: [`NetNs`], the one network-namespace guard (created with `ip netns
//! add`, entered with `setns(CLONE_NEWNET)` only — never `ip netns exec`, which remounts `/sys`
//! and hides bpffs — deleted with its links on drop); [`PinDir`] and [`remove_pins`] for bpffs
//! pin directories; [`unique_id`] for names; [`run_timeout`] for commands.
//!
//! Everything a test creates is named after the test process id and a per-process counter
//! (`sg<pid>x<n>…`, pin path `/sys/fs/bpf/sg-test-<pid>x<n>…`), so tests can run concurrently,
//! and everything is torn down by RAII guards ([`Topology`], [`NetNs`], [`PinDir`], [`Agent`],
//! [`kernel::Lab`], servers) even when a test panics. Leftovers of killed test processes are
//! swept on the next run ([`sweep_stale`]).
//!
//! Only TEST-NET (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) and overlay
//! (100.64.0.0/10) addresses are used, and nothing is routed outside the namespaces the
//! fixtures create.
//!
//! Requires root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF). See [`require_root`].
#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod kernel;
pub mod mgmt;
pub mod nat;
pub mod netns;
pub mod pins;
pub mod topology;
pub mod traffic;
pub mod tun;
pub mod wg;

pub use agent::{Agent, ConntrackEntry};
pub use config::{ConfigFile, Network, Peer, Policy, Resource};
pub use netns::{Entered, NetNs};
pub use pins::{PinDir, pin_path_for, remove_pins};
pub use topology::{LanSpec, Topology, TopologySpec};
pub use traffic::{TcpServer, TcpSession, UdpServer};

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Path of the agent binary: `$SWIFTGATE_BIN` if set, else `swiftgate` in the cargo profile
/// directory of the running executable (`target/debug/` for a test binary in
/// `target/debug/deps/` or an example in `target/debug/examples/`).
///
/// The integration tests are a crate of their own, so cargo does not build the agent binary
/// for them: `./x test` builds it (`cargo build -p swiftgate --bin swiftgate`) before it runs
/// the tests; run that first when running a test binary by hand.
pub fn swiftgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SWIFTGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(|d| {
        if d.ends_with("examples") || d.ends_with("deps") {
            d.parent().unwrap_or(d)
        } else {
            d
        }
    });
    dir.map(|d| d.join("swiftgate"))
        .unwrap_or_else(|| PathBuf::from("swiftgate"))
}

/// Timeout for helper commands (`ip`, `swiftgate down|conntrack|counters`, `ping`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// Error type of the harness: a human-readable message with the context of what failed.
pub struct Error(pub String);

impl Error {
    /// An error with the given message.
    pub fn msg(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }

    /// Prefixes the message with `what` (e.g. the step that failed).
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error(format!("{what}: {}", self.0))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `expect` prints Debug: show the message verbatim (multi-line logs stay readable).
        f.write_str(&self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error(e.to_string())
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("bad JSON: {e}"))
    }
}

/// Result type of the harness.
pub type Result<T> = std::result::Result<T, Error>;

/// The Python of the outside clients' virtual environment (PyPI `netbird` client and what
/// it needs), as scripts/bootstrap.sh makes it (`$SWIFTGATE_PYENV`, default
/// `~/.cache/swiftgate/pyenv`). Panics, naming the fix, when it is missing: the tests that
/// use it must run, not skip.
pub fn pyenv_python() -> PathBuf {
    let env = std::env::var_os("SWIFTGATE_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                })
                .join("swiftgate/pyenv")
        });
    let py = env.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/bootstrap.sh (./x test does) to install the PyPI netbird client",
        py.display()
    );
    py
}

/// Panics with a clear message unless the test runs as root. The e2e tests never skip
/// silently: without privileges they fail.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "the swiftgate e2e tests need root (they create network namespaces, TUN devices and \
             load eBPF): run them as root, e.g. `cargo build -p swiftgate --bin swiftgate && sudo -E cargo test -p swiftgate-tests --test e2e`"
        );
    }
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, `sg<pid>x<n>`; the prefix of every namespace and
/// pin path a test creates (see [`sweep_stale`]).
pub fn unique_id() -> String {
    format!(
        "sg{}x{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// Output of a finished command.
#[derive(Debug)]
pub struct CmdOutput {
    /// What ran (for messages).
    pub what: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
}

impl CmdOutput {
    /// True if the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Turns a non-zero exit into an error carrying stdout and stderr.
    pub fn check(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error(format!(
                "`{}` failed ({}): {}{}",
                self.what,
                self.status,
                self.stderr.trim(),
                if self.stdout.trim().is_empty() {
                    String::new()
                } else {
                    format!("\nstdout: {}", self.stdout.trim())
                }
            )))
        }
    }
}

/// Describes a command for messages: program and arguments.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` (in the network namespace whose file is `ns`, if given) with stdin closed and stdout/stderr
/// captured; kills it if it has not exited after `timeout`.
pub fn run_timeout(cmd: &mut Command, ns: Option<&Path>, timeout: Duration) -> Result<CmdOutput> {
    let what = describe(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match ns {
        Some(ns) => netns::spawn_in(ns, cmd),
        None => cmd.spawn().map_err(Error::from),
    }
    .map_err(|e| e.context(format!("spawning `{what}`")))?;

    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(Error(format!("`{what}` did not finish within {timeout:?}")));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(Error(format!("waiting for `{what}`: {e}"))),
        }
    };
    let join = |h: Option<thread::JoinHandle<String>>| {
        h.map(|h| {
            h.join()
                .unwrap_or_else(|_| String::from("<reader panicked>"))
        })
        .unwrap_or_default()
    };
    let (stdout, stderr) = (join(stdout), join(stderr));
    match status {
        Ok(status) => Ok(CmdOutput {
            what,
            status,
            stdout,
            stderr,
        }),
        Err(e) => Err(Error(format!(
            "{}\nstdout: {}\nstderr: {}",
            e.0,
            stdout.trim(),
            stderr.trim()
        ))),
    }
}

/// Reads a pipe to its end on a helper thread (so a chatty child never blocks on a full pipe).
fn drain(mut r: impl io::Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `ip ARGS…` in the host namespace (use [`NetNs::ip`] for a namespace) and fails on a
/// non-zero exit.
pub fn ip(args: &[&str]) -> Result<CmdOutput> {
    run_timeout(Command::new("ip").args(args), None, CMD_TIMEOUT)?.check()
}

/// Where bpffs must be mounted for the per-test pin paths.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs on `/sys/fs/bpf` unless it already is (the agent pins its maps and links there;
/// without bpffs pins would not survive an agent restart).
pub fn ensure_bpffs() -> Result<()> {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if statfs(BPFFS)
        .map_err(|e| Error(format!("statfs {BPFFS}: {e}")))?
        .filesystem_type()
        == BPF_FS_MAGIC
    {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpffs"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| Error(format!("mounting bpffs on {BPFFS}: {e}")))?;
    Ok(())
}

/// Extracts the pid from a harness name (`sg<pid>x<n>…` or `sg-test-<pid>x<n>`).
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name
        .strip_prefix("sg-test-")
        .or_else(|| name.strip_prefix("sg"))?;
    let (pid, tail) = rest.split_once('x')?;
    let n: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
    if n.is_empty() {
        return None;
    }
    pid.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes namespaces and pin paths left behind by harness processes that no longer exist
/// (e.g. a test run killed with SIGKILL). Runs once per process; only touches names that
/// follow the harness pattern and whose owner pid is gone.
pub fn sweep_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for dir in ["/run/netns", "/var/run/netns"] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if owner_pid(&name).is_some_and(|p| !pid_alive(p)) {
                    eprintln!("[e2e] removing stale namespace {name}");
                    if let Err(e) = ip(&["netns", "del", &name]) {
                        eprintln!("[e2e] warning: {e}");
                    }
                }
            }
        }
        let Ok(entries) = std::fs::read_dir(BPFFS) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("sg-test-") && owner_pid(&name).is_some_and(|p| !pid_alive(p)) {
                eprintln!("[e2e] removing stale pin path {name}");
                if let Err(e) = remove_pins(&e.path()) {
                    eprintln!("[e2e] warning: {e}");
                }
            }
        }
    });
}

/// Polls `f` every `interval` until it returns `Some` or `timeout` has passed.
pub fn poll_until<T>(
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_parses_harness_names() {
        assert_eq!(owner_pid("sg123x4-gw"), Some(123));
        assert_eq!(owner_pid("sg-test-123x4"), Some(123));
        assert_eq!(owner_pid("sgfoo"), None);
        assert_eq!(owner_pid("sg123x-gw"), None);
        assert_eq!(owner_pid("swiftgate"), None);
    }
}
