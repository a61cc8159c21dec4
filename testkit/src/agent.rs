//! The `swiftgate` agent process and its CLI (`down`, `conntrack`, `counters`).

use super::{CmdOutput, Error, NetNs, Result, poll_until, run_timeout, swiftgate_bin};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The line the agent prints on stderr once programs are attached and maps filled.
pub const READY_LINE: &str = "swiftgate up: ready";

/// How long `swiftgate up` may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `counters` must keep answering before an agent without a ready line counts as
/// ready (see [`Agent::wait_ready`]).
pub const READY_FALLBACK_GRACE: Duration = Duration::from_secs(5);

/// How long the agent may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `swiftgate up --config FILE`; SIGTERMed (then killed) on drop.
pub struct Agent {
    child: Child,
    log_path: PathBuf,
    pin_path: PathBuf,
    ns_path: PathBuf,
    started: Instant,
    exit: Option<ExitStatus>,
}

impl Agent {
    /// Starts `swiftgate up --config CONFIG` inside `ns` with stdout and stderr appended to
    /// `log_path`. Does not wait for readiness (see [`Agent::wait_ready`]).
    pub fn spawn(ns: &NetNs, config: &Path, pin_path: &Path, log_path: &Path) -> Result<Self> {
        let log = File::create(log_path)
            .map_err(|e| Error(format!("creating {}: {e}", log_path.display())))?;
        let log2 = log.try_clone()?;
        let mut cmd = Command::new(swiftgate_bin());
        // Plain-text logs (tracing colours them even when writing to a file).
        cmd.env("NO_COLOR", "1");
        cmd.arg("up")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log);
        let child = ns.spawn(&mut cmd)?;
        Ok(Agent {
            child,
            log_path: log_path.to_owned(),
            pin_path: pin_path.to_owned(),
            ns_path: ns.path(),
            started: Instant::now(),
            exit: None,
        })
    }

    /// The agent's pid.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Time since the process was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Where the log is written.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits until the agent is ready: its log contains [`READY_LINE`]. Fallback for an agent
    /// that does not print that line: `swiftgate counters` has kept succeeding for
    /// [`READY_FALLBACK_GRACE`] (maps are pinned before programs are attached, and pins of a
    /// previous run answer at once, so a first success alone proves nothing).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut counters_ok_since: Option<Instant> = None;
        loop {
            if self.log().contains(READY_LINE) {
                return Ok(());
            }
            if !self.is_running() {
                return Err(Error(format!(
                    "swiftgate up exited before it was ready ({}); log:\n{}",
                    self.exit.map(|s| s.to_string()).unwrap_or_default(),
                    self.log()
                )));
            }
            if counters_raw(&self.ns_path, &self.pin_path).is_ok_and(|o| o.success()) {
                let since = *counters_ok_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= READY_FALLBACK_GRACE {
                    eprintln!(
                        "[e2e] note: no {READY_LINE:?} line; assuming ready (counters answer)"
                    );
                    return Ok(());
                }
            } else {
                counters_ok_since = None;
            }
            if Instant::now() >= deadline {
                return Err(Error(format!(
                    "swiftgate up not ready within {timeout:?} (no {READY_LINE:?} line and `counters` \
                     failing); log:\n{}",
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `sig` to the agent.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        nix::sys::signal::kill(self.pid(), sig)
            .map_err(|e| Error(format!("kill({}, {sig}): {e}", self.pid())))
    }

    /// Asks the agent to reload its configuration file (SIGHUP).
    pub fn reload(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGHUP)
    }

    /// SIGTERMs the agent and waits for it to exit (SIGKILL after `timeout`). Returns the exit
    /// status, or an error if it had to be killed.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        if self.is_running() {
            let _ = self.signal(nix::sys::signal::Signal::SIGTERM);
        }
        let exited = poll_until(timeout, Duration::from_millis(20), || {
            (!self.is_running()).then_some(())
        });
        if exited.is_some() {
            return self
                .exit
                .ok_or_else(|| Error::msg("agent exit status lost"));
        }
        let _ = self.child.kill();
        let status = self.child.wait()?;
        self.exit = Some(status);
        Err(Error(format!(
            "swiftgate up did not exit within {timeout:?} of SIGTERM; killed ({status})"
        )))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.stop(STOP_TIMEOUT) {
            eprintln!("[e2e] warning: {e}");
        }
    }
}

/// Runs `swiftgate ARGS…` in the namespace whose file is `ns` (default command timeout).
pub fn swiftgate_in(ns: &Path, args: &[&str]) -> Result<CmdOutput> {
    run_timeout(
        Command::new(swiftgate_bin()).args(args),
        Some(ns),
        super::CMD_TIMEOUT,
    )
}

fn counters_raw(ns: &Path, pin_path: &Path) -> Result<CmdOutput> {
    let pin = pin_path.to_string_lossy();
    swiftgate_in(ns, &["counters", "--pin-path", &pin, "--json"])
}

/// `swiftgate down --pin-path P`, run in the namespace whose file is `ns`.
pub fn down(ns: &Path, pin_path: &Path) -> Result<CmdOutput> {
    let pin = pin_path.to_string_lossy();
    swiftgate_in(ns, &["down", "--pin-path", &pin])
}

/// `swiftgate programs --pin-path P --json`: one row per attachment.
pub fn programs(ns: &Path, pin_path: &Path) -> Result<serde_json::Value> {
    let pin = pin_path.to_string_lossy();
    let out = swiftgate_in(ns, &["programs", "--pin-path", &pin, "--json"])?.check()?;
    serde_json::from_str(&out.stdout)
        .map_err(|e| Error(format!("parsing programs JSON ({e}): {}", out.stdout)))
}

/// `swiftgate counters --pin-path P --json`: counter name -> value.
pub fn counters(ns: &Path, pin_path: &Path) -> Result<BTreeMap<String, u64>> {
    let out = counters_raw(ns, pin_path)?.check()?;
    serde_json::from_str(&out.stdout)
        .map_err(|e| Error(format!("parsing counters JSON ({e}): {}", out.stdout)))
}

/// One tracked flow, as `swiftgate conntrack --json` prints it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConntrackEntry {
    /// IP protocol number.
    pub proto: u8,
    /// Source address (original direction).
    pub src: String,
    /// Destination address (original direction).
    pub dst: String,
    /// Source port (0 for ICMP).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// "overlay" | "lan" | "host".
    pub origin: String,
    /// Masquerade translation "ip:port", if any.
    pub nat: Option<String>,
    /// The accepting policy's id (raw JSON: number or null).
    pub policy_id: serde_json::Value,
    /// Packets in the original direction.
    pub packets_orig: u64,
    /// Packets in the reply direction.
    pub packets_reply: u64,
}

impl ConntrackEntry {
    fn from_json(v: &serde_json::Value) -> Result<Self> {
        let bad = |field: &str| Error(format!("conntrack entry without a valid `{field}`: {v}"));
        let s = |field: &str| {
            v.get(field)
                .and_then(|x| x.as_str())
                .map(str::to_owned)
                .ok_or_else(|| bad(field))
        };
        let n = |field: &str| {
            v.get(field)
                .and_then(|x| x.as_u64())
                .ok_or_else(|| bad(field))
        };
        Ok(ConntrackEntry {
            proto: u8::try_from(n("proto")?).map_err(|_| bad("proto"))?,
            src: s("src")?,
            dst: s("dst")?,
            sport: u16::try_from(n("sport")?).map_err(|_| bad("sport"))?,
            dport: u16::try_from(n("dport")?).map_err(|_| bad("dport"))?,
            origin: s("origin")?,
            nat: match v.get("nat") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(bad("nat")),
            },
            policy_id: v
                .get("policy_id")
                .cloned()
                .unwrap_or(serde_json::Value::Null),
            packets_orig: v.get("packets_orig").and_then(|x| x.as_u64()).unwrap_or(0),
            packets_reply: v.get("packets_reply").and_then(|x| x.as_u64()).unwrap_or(0),
        })
    }
}

/// `swiftgate conntrack --pin-path P --json`: the tracked flows.
pub fn conntrack(ns: &Path, pin_path: &Path) -> Result<Vec<ConntrackEntry>> {
    let pin = pin_path.to_string_lossy();
    let out = swiftgate_in(ns, &["conntrack", "--pin-path", &pin, "--json"])?.check()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| Error(format!("parsing conntrack JSON ({e}): {}", out.stdout)))?;
    let arr = v
        .as_array()
        .ok_or_else(|| Error(format!("conntrack JSON is not an array: {}", out.stdout)))?;
    arr.iter().map(ConntrackEntry::from_json).collect()
}

/// Runs `swiftgate up --config CONFIG` in `ns` expecting it to exit by itself (e.g. on an
/// invalid configuration); kills it after `timeout`.
pub fn up_expecting_exit(ns: &NetNs, config: &Path, timeout: Duration) -> Result<CmdOutput> {
    run_timeout(
        Command::new(swiftgate_bin())
            .arg("up")
            .arg("--config")
            .arg(config),
        Some(&ns.path()),
        timeout,
    )
}
