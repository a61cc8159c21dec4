//! The test topology: an overlay client, the routing peer ("gw") and LAN namespaces.
//!
//! ```text
//!   client ns                         gw ns                              LAN ns (one per LAN)
//!   ovl0 (TUN) 100.64.0.2/16 …  <-relay->  sg0 (TUN) 100.64.0.1/16
//!   route LAN prefixes dev ovl0       lan0 192.0.2.1/24  <--veth-->  eth0 192.0.2.10/24, .11 …
//!                                     lan1 198.51.100.1/24 <--veth--> eth0 198.51.100.10/24 …
//! ```
//!
//! The agent runs in the gw namespace with the overlay interface `sg0` and LAN interfaces
//! `lan0`, `lan1`… Every address is TEST-NET or in 100.64.0.0/10, and nothing is routed
//! outside the namespaces.

use super::agent::{self, Agent, ConntrackEntry};
use super::config::{ConfigFile, Interface};
use super::tun::{Relay, RelayStats, open_tun_in};
use super::{
    Error, NetNs, Result, ensure_bpffs, pin_path_for, remove_pins, require_root, sweep_stale,
    unique_id,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Overlay interface in the gw namespace (the agent's `interface.overlay`).
pub const GW_OVERLAY_IF: &str = "sg0";
/// Overlay interface in the client namespace.
pub const CLIENT_OVERLAY_IF: &str = "ovl0";
/// The routing peer's overlay address.
pub const GW_OVERLAY_ADDR: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The overlay network.
pub const OVERLAY_NET: &str = "100.64.0.0/16";
/// Prefix length of overlay addresses.
pub const OVERLAY_PREFIX_LEN: u8 = 16;
/// MTU of both TUN devices.
pub const OVERLAY_MTU: u32 = 1280;
/// Interface name of the LAN end of each veth pair (inside its LAN namespace).
pub const LAN_HOST_IF: &str = "eth0";

/// One LAN behind the routing peer: a namespace holding all its host addresses.
#[derive(Clone, Debug)]
pub struct LanSpec {
    /// The gw's address on this LAN.
    pub gw_addr: Ipv4Addr,
    /// Prefix length of the LAN.
    pub prefix_len: u8,
    /// Host addresses (all on the LAN namespace's `eth0`).
    pub hosts: Vec<Ipv4Addr>,
    /// Give the LAN namespace a route for the overlay via the gw (needed for return traffic
    /// without masquerade, and for LAN-initiated connections).
    pub overlay_route: bool,
}

impl LanSpec {
    /// 192.0.2.0/24 (TEST-NET-1), gw 192.0.2.1, hosts 192.0.2.`h` for each `h`.
    pub fn test_net_1(hosts: &[u8]) -> Self {
        LanSpec {
            gw_addr: Ipv4Addr::new(192, 0, 2, 1),
            prefix_len: 24,
            hosts: hosts.iter().map(|h| Ipv4Addr::new(192, 0, 2, *h)).collect(),
            overlay_route: false,
        }
    }

    /// 198.51.100.0/24 (TEST-NET-2), gw 198.51.100.1, hosts 198.51.100.`h`.
    pub fn test_net_2(hosts: &[u8]) -> Self {
        LanSpec {
            gw_addr: Ipv4Addr::new(198, 51, 100, 1),
            prefix_len: 24,
            hosts: hosts
                .iter()
                .map(|h| Ipv4Addr::new(198, 51, 100, *h))
                .collect(),
            overlay_route: false,
        }
    }

    /// Adds the route `100.64.0.0/16 via <gw_addr>` in the LAN namespace.
    pub fn with_overlay_route(mut self) -> Self {
        self.overlay_route = true;
        self
    }

    /// The LAN prefix, e.g. "192.0.2.0/24".
    pub fn prefix(&self) -> String {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(self.gw_addr) & mask),
            self.prefix_len
        )
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct TopologySpec {
    /// Overlay addresses of the client namespace (each /16 on `ovl0`); a test picks the peer
    /// identity by binding one of them.
    pub client_addrs: Vec<Ipv4Addr>,
    /// The LANs behind the gw (interfaces `lan0`, `lan1`, … in the gw namespace).
    pub lans: Vec<LanSpec>,
}

/// A LAN that was built.
#[derive(Debug)]
pub struct Lan {
    /// Its namespace.
    pub ns: NetNs,
    /// The gw-side interface name.
    pub gw_if: String,
    /// What it was built from.
    pub spec: LanSpec,
}

/// A built topology plus the agent running in it. Dropping it stops the agent, runs
/// `swiftgate down`, removes the pin path, stops the relay and deletes the namespaces (also
/// while a test panics). On a panic the work directory (config files, agent logs) is kept.
pub struct Topology {
    /// Unique id (`sg<pid>x<n>`), the prefix of all names.
    pub id: String,
    /// The routing peer's namespace.
    pub gw: NetNs,
    /// The overlay client's namespace.
    pub client: NetNs,
    /// The LANs.
    pub lans: Vec<Lan>,
    /// Per-test pin path.
    pub pin_path: PathBuf,
    /// Per-test directory for configs and logs.
    pub workdir: PathBuf,
    /// The agent's config file.
    pub config_path: PathBuf,
    relay: Option<Relay>,
    agent: Option<Agent>,
    agent_starts: u32,
}

impl Topology {
    /// Builds the namespaces, TUN devices, relay and veth pairs of `spec`.
    pub fn build(spec: &TopologySpec) -> Result<Self> {
        require_root();
        ensure_bpffs()?;
        sweep_stale();
        let id = unique_id();
        let workdir = std::env::temp_dir().join(format!("swiftgate-e2e-{id}"));
        std::fs::create_dir_all(&workdir)
            .map_err(|e| Error(format!("creating {}: {e}", workdir.display())))?;
        let gw = NetNs::create(&format!("{id}-gw"))?;
        let client = NetNs::create(&format!("{id}-cl"))?;
        let mut t = Topology {
            pin_path: pin_path_for(&id),
            config_path: workdir.join("swiftgate.toml"),
            workdir,
            id,
            gw,
            client,
            lans: Vec::new(),
            relay: None,
            agent: None,
            agent_starts: 0,
        };

        // The overlay: two TUNs and the relay between them.
        let gw_tun = open_tun_in(&t.gw, GW_OVERLAY_IF)?;
        let client_tun = open_tun_in(&t.client, CLIENT_OVERLAY_IF)?;
        t.relay = Some(Relay::start(
            client_tun,
            gw_tun,
            &format!("{}:{CLIENT_OVERLAY_IF}<->{GW_OVERLAY_IF}", t.id),
        )?);
        let mtu = OVERLAY_MTU.to_string();
        t.gw.ip(&["link", "set", GW_OVERLAY_IF, "mtu", &mtu, "up"])?;
        t.gw.ip(&[
            "addr",
            "add",
            &format!("{GW_OVERLAY_ADDR}/{OVERLAY_PREFIX_LEN}"),
            "dev",
            GW_OVERLAY_IF,
        ])?;
        t.client
            .ip(&["link", "set", CLIENT_OVERLAY_IF, "mtu", &mtu, "up"])?;
        for a in &spec.client_addrs {
            t.client.ip(&[
                "addr",
                "add",
                &format!("{a}/{OVERLAY_PREFIX_LEN}"),
                "dev",
                CLIENT_OVERLAY_IF,
            ])?;
        }

        // The LANs.
        for (i, lan) in spec.lans.iter().enumerate() {
            let ns = NetNs::create(&format!("{}-lan{i}", t.id))?;
            let gw_if = format!("lan{i}");
            t.gw.ip(&[
                "link",
                "add",
                &gw_if,
                "type",
                "veth",
                "peer",
                "name",
                LAN_HOST_IF,
                "netns",
                ns.name(),
            ])?;
            t.lans.push(Lan {
                ns,
                gw_if: gw_if.clone(),
                spec: lan.clone(),
            });
            let ns = &t.lans[i].ns;
            t.gw.ip(&[
                "addr",
                "add",
                &format!("{}/{}", lan.gw_addr, lan.prefix_len),
                "dev",
                &gw_if,
            ])?;
            t.gw.ip(&["link", "set", &gw_if, "up"])?;
            for h in &lan.hosts {
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("{h}/{}", lan.prefix_len),
                    "dev",
                    LAN_HOST_IF,
                ])?;
            }
            ns.ip(&["link", "set", LAN_HOST_IF, "up"])?;
            if lan.overlay_route {
                ns.ip(&["route", "add", OVERLAY_NET, "via", &lan.gw_addr.to_string()])?;
            }
            t.client
                .ip(&["route", "add", &lan.prefix(), "dev", CLIENT_OVERLAY_IF])?;
        }
        Ok(t)
    }

    /// The namespace of LAN `i`.
    pub fn lan(&self, i: usize) -> &NetNs {
        &self.lans[i].ns
    }

    /// A configuration with the `[interface]` table filled in for this topology (overlay `sg0`,
    /// address 100.64.0.1/16, all LAN interfaces, MTU 1280, this test's pin path).
    pub fn base_config(&self) -> ConfigFile {
        ConfigFile::new(Interface {
            overlay: GW_OVERLAY_IF.into(),
            overlay_l2: false,
            addresses: vec![format!("{GW_OVERLAY_ADDR}/{OVERLAY_PREFIX_LEN}")],
            lan: self.lans.iter().map(|l| l.gw_if.clone()).collect(),
            mtu: OVERLAY_MTU,
            pin_path: self.pin_path.to_string_lossy().into_owned(),
        })
    }

    /// Writes `cfg` to the agent's config file (atomically: temp file + rename).
    pub fn write_config(&self, cfg: &ConfigFile) -> Result<()> {
        self.write_config_text(&self.config_path, &cfg.to_toml())
    }

    /// Writes `text` to `path` atomically.
    pub fn write_config_text(&self, path: &Path, text: &str) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| Error(format!("writing {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            Error(format!(
                "renaming {} to {}: {e}",
                tmp.display(),
                path.display()
            ))
        })
    }

    /// Starts `swiftgate up --config <config_path>` in the gw namespace and waits until it is
    /// ready.
    pub fn start_agent(&mut self) -> Result<()> {
        if self.agent.as_mut().is_some_and(Agent::is_running) {
            return Err(Error::msg("the agent is already running"));
        }
        self.agent = None;
        self.agent_starts += 1;
        let log = self
            .workdir
            .join(format!("agent-{}.log", self.agent_starts));
        let mut agent = Agent::spawn(&self.gw, &self.config_path, &self.pin_path, &log)?;
        let ready = agent.wait_ready(agent::READY_TIMEOUT);
        self.agent = Some(agent);
        ready
    }

    /// The running agent.
    pub fn agent(&mut self) -> Result<&mut Agent> {
        self.agent
            .as_mut()
            .ok_or_else(|| Error::msg("no agent was started"))
    }

    /// SIGHUPs the agent (reload the config file).
    pub fn reload_agent(&mut self) -> Result<()> {
        self.agent()?.reload()
    }

    /// SIGTERMs the agent and waits for it to exit; its programs and pins stay.
    pub fn stop_agent(&mut self) -> Result<std::process::ExitStatus> {
        self.agent()?.stop(agent::STOP_TIMEOUT)
    }

    /// `swiftgate counters --json` for this test's pin path.
    pub fn counters(&self) -> Result<BTreeMap<String, u64>> {
        agent::counters(&self.gw.path(), &self.pin_path)
    }

    /// `swiftgate conntrack --json` for this test's pin path.
    pub fn conntrack(&self) -> Result<Vec<ConntrackEntry>> {
        agent::conntrack(&self.gw.path(), &self.pin_path)
    }

    /// The packet counters of the overlay relay (client -> gw is `a_to_b`); `None` once the
    /// relay is stopped.
    pub fn relay_stats(&self) -> Option<&RelayStats> {
        self.relay.as_ref().map(Relay::stats)
    }

    /// State for failure messages: relay counters, agent counters, the tail of the agent log.
    pub fn diagnostics(&mut self) -> String {
        let relay = self.relay.as_ref().map(Relay::summary).unwrap_or_default();
        let counters = match self.counters() {
            Ok(c) => format!("{c:?}"),
            Err(e) => format!("<{e}>"),
        };
        let (running, log) = match self.agent.as_mut() {
            Some(a) => (a.is_running(), a.log_tail(40)),
            None => (false, String::from("<no agent>")),
        };
        format!(
            "--- diagnostics {} ---\n{relay}\nagent running: {running}\ncounters: {counters}\nagent log (tail):\n{log}\n---",
            self.id
        )
    }

    fn teardown(&mut self) {
        if let Some(mut a) = self.agent.take() {
            if std::thread::panicking() {
                eprintln!(
                    "[e2e] {} agent log ({}):\n{}",
                    self.id,
                    a.log_path().display(),
                    a.log_tail(60)
                );
            }
            if let Err(e) = a.stop(agent::STOP_TIMEOUT) {
                eprintln!("[e2e] warning: {e}");
            }
        }
        if self.agent_starts > 0 || self.pin_path.exists() {
            match agent::down(&self.gw.path(), &self.pin_path) {
                Ok(out) if !out.success() && self.pin_path.exists() => {
                    eprintln!(
                        "[e2e] warning: swiftgate down failed: {}",
                        out.stderr.trim()
                    )
                }
                Ok(_) => {}
                Err(e) => eprintln!("[e2e] warning: swiftgate down: {e}"),
            }
        }
        if self.pin_path.exists()
            && let Err(e) = remove_pins(&self.pin_path)
        {
            eprintln!("[e2e] warning: {e}");
        }
        if let Some(mut r) = self.relay.take() {
            r.stop();
        }
        let namespaces = self
            .lans
            .iter_mut()
            .map(|l| &mut l.ns)
            .chain([&mut self.client, &mut self.gw]);
        for ns in namespaces {
            if let Err(e) = ns.delete() {
                eprintln!("[e2e] warning: deleting netns {}: {e}", ns.name());
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "[e2e] {}: kept {} for inspection",
                self.id,
                self.workdir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.workdir);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.teardown();
    }
}
