//! The kernel lab: packet-in/packet-out tests of the eBPF programs through
//! `BPF_PROG_TEST_RUN`.
//!
//! [`Lab::new`] moves the calling test thread into a fresh network namespace ([`NetNs::enter`])
//! with three veth interfaces (`ovl` for the overlay, `lan` and `lan2` for LANs, addressed from
//! TEST-NET and 2001:db8::/32) and a TUN device, loads the programs in-process with their maps
//! pinned in a [`PinDir`], and applies a configuration. Packets (built with [`pkt`]) then run
//! through the programs without being sent anywhere: the kernel returns the verdict and the
//! rewritten bytes. Dropping the lab moves the thread back, removes the pins and deletes the
//! namespace with its links.
//!
//! `BPF_PROG_TEST_RUN` hands TC programs an Ethernet frame, so the overlay programs are tested
//! in their L2 build (`sg_overlay_ingress_l2`); the L3 build differs only in the header offset
//! and in pushing an Ethernet header before the redirect, which the namespace tests cover.

pub mod pkt;

use std::{net::IpAddr, path::Path, process::Command};

use aya::programs::{TestRun, TestRunOptions};
use swiftgate::{
    config::AgentConfig,
    dataplane::{self, Dataplane, Flow, LoadOptions, State},
    policy::{self, Side, Verdict},
};
use swiftgate_common::{Counter, FlowEvent, event_kind, programs};

use crate::{Entered, NetNs, PinDir, unique_id};

/// TC verdicts.
pub const TC_ACT_OK: u32 = 0;
/// Drop.
pub const TC_ACT_SHOT: u32 = 2;
/// Redirect.
pub const TC_ACT_REDIRECT: u32 = 7;
/// XDP verdicts.
pub const XDP_PASS: u32 = 2;
/// XDP redirect.
pub const XDP_REDIRECT: u32 = 4;

/// A network namespace entered by the test thread, with the data plane loaded in it. Set up
/// and torn down as the module documentation says.
pub struct Lab {
    /// The loaded programs and maps.
    pub dp: Dataplane,
    /// Current configuration.
    pub cfg: AgentConfig,
    /// Interface indexes.
    pub ovl: u32,
    /// LAN 1 (192.0.2.0/24, 2001:db8:1::/64).
    pub lan: u32,
    /// LAN 2 (198.51.100.0/24).
    pub lan2: u32,
    /// A TUN device (`tun0`, no process behind it) for configurations with an L3 overlay
    /// (`overlay = "tun0"`, `overlay_l2 = false`): the programs redirect into it. (A TC test
    /// run still hands a program an Ethernet frame, whatever the ifindex, so the TUN's own
    /// ingress program cannot be run through it.)
    pub tun: u32,
    // Dropped in this order (after `dp`, which closes the programs): the thread leaves the
    // namespace, the pins go, then the namespace with its links.
    entered: Option<Entered>,
    pin: PinDir,
    ns: NetNs,
}

/// The interface part every lab configuration starts with.
pub const LAB_INTERFACE: &str = r#"
[interface]
overlay = "ovl"
overlay_l2 = true
addresses = ["100.64.0.1/16", "fd00:64::1/64"]
lan = ["lan", "lan2"]
mtu = 1280
flow_events = "all"
"#;

fn lab_toml(pin: &Path, config: &str) -> String {
    let iface = LAB_INTERFACE.replace(
        "[interface]",
        &format!("[interface]\npin_path = {:?}", pin.display().to_string()),
    );
    format!("{iface}\n{config}")
}

impl Lab {
    /// Creates the namespace, enters it on this thread, loads and configures the programs.
    /// `config` is appended to [`LAB_INTERFACE`].
    pub fn new(config: &str) -> Lab {
        Lab::with_config(|pin| {
            AgentConfig::from_toml(&lab_toml(pin, config)).expect("lab configuration")
        })
    }

    /// Like [`Lab::new`], with the lab's TUN device `tun0` as the overlay (`overlay_l2 =
    /// false`, how a WireGuard routing peer runs). Test runs still go through the Ethernet
    /// overlay program (see [`Lab::tun`]).
    pub fn new_tun_overlay(config: &str) -> Lab {
        Lab::with_config(|pin| {
            let toml = lab_toml(pin, config).replace(
                "overlay = \"ovl\"\noverlay_l2 = true",
                "overlay = \"tun0\"\noverlay_l2 = false",
            );
            assert!(
                toml.contains("overlay = \"tun0\""),
                "lab interface text changed"
            );
            AgentConfig::from_toml(&toml).expect("lab configuration")
        })
    }

    /// Like [`Lab::new`], with a configuration built by `make` (e.g. from a
    /// [`swiftgate::config::FileConfig`] too large to write as TOML). `make` gets the pin path
    /// the configuration must use; the interfaces are the lab's (`ovl`, `lan`, `lan2`).
    pub fn with_config(make: impl FnOnce(&Path) -> AgentConfig) -> Lab {
        crate::require_root();
        let id = unique_id();
        let pin = PinDir::for_id(&id).expect("lab pin directory");
        let cfg = make(pin.path());
        assert_eq!(
            cfg.pin_path,
            pin.path(),
            "a lab configuration must use the lab's pin path"
        );
        // Until the Lab exists, a panic drops these guards: the thread leaves the namespace,
        // the pins and the namespace go.
        let ns = NetNs::create(&format!("{id}-lab")).expect("lab netns");
        for cmd in [
            "link add ovl type veth peer name ovlp",
            "link add lan type veth peer name lanp",
            "link add lan2 type veth peer name lan2p",
            "tuntap add dev tun0 mode tun",
            "link set tun0 up",
            "link set ovlp up",
            "link set lanp up",
            "link set lan2p up",
            "addr add 100.64.0.1/16 dev ovl",
            "addr add fd00:64::1/64 dev ovl nodad",
            "addr add 192.0.2.1/24 dev lan",
            "addr add 2001:db8:1::1/64 dev lan nodad",
            "addr add 198.51.100.1/24 dev lan2",
            "link set ovl up",
            "link set lan up",
            "link set lan2 up",
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            ns.ip(&args).expect("lab interface setup");
        }
        let entered = ns.enter().expect("enter lab netns");
        for p in [
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/net/ipv4/conf/all/forwarding",
            "/proc/sys/net/ipv4/conf/ovl/forwarding",
            "/proc/sys/net/ipv6/conf/all/forwarding",
        ] {
            std::fs::write(p, "1").expect("enable forwarding in the lab");
        }
        let mut dp = Dataplane::load(&LoadOptions::from_config(&cfg)).expect("load programs");
        dp.set_kernel_config(dataplane::kernel_config(&cfg).unwrap())
            .unwrap();
        dp.apply(&policy::compile(&cfg))
            .expect("apply configuration");
        let idx = |n: &str| nix::net::if_::if_nametoindex(n).expect("ifindex");
        Lab {
            ovl: idx("ovl"),
            lan: idx("lan"),
            lan2: idx("lan2"),
            tun: idx("tun0"),
            dp,
            cfg,
            entered: Some(entered),
            pin,
            ns,
        }
    }

    /// Applies another configuration (appended to [`LAB_INTERFACE`]).
    pub fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        let cfg = AgentConfig::from_toml(&lab_toml(self.pin.path(), config))
            .map_err(|e| e.to_string())?;
        self.apply(cfg)
    }

    /// Applies a configuration built in code (e.g. converted from a network map) the way the
    /// agent reloads one. It must use the lab's pin path ([`Lab::pin_path`]).
    pub fn apply(&mut self, cfg: AgentConfig) -> Result<(), String> {
        swiftgate::run::reload(&mut self.dp, &self.cfg, &cfg).map_err(|e| format!("{e:#}"))?;
        self.cfg = cfg;
        Ok(())
    }

    /// The lab's pin directory (configurations applied to it must use it).
    pub fn pin_path(&self) -> &Path {
        self.pin.path()
    }

    /// The lab's namespace.
    pub fn netns(&self) -> &NetNs {
        &self.ns
    }

    /// The kernel's verdict for one packet arriving on `side`, from the program's return code
    /// and the flow event it emits (the configuration must have `flow_events = "all"`): accept
    /// with its policy id, or drop with its reason and policy id. Panics on any other outcome.
    pub fn verdict(&mut self, side: Side, bytes: &[u8]) -> Verdict {
        let mut ring = self.events();
        while ring.next().is_some() {}
        let (rc, _) = match side {
            Side::Overlay => self.overlay(bytes),
            Side::Lan => self.lan(bytes),
        };
        let mut ev = None;
        if let Some(item) = ring.next() {
            assert!(item.len() >= std::mem::size_of::<FlowEvent>());
            // SAFETY: the program writes whole FlowEvent records; read_unaligned copes with
            // any alignment.
            ev = Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) });
        }
        match (rc, ev) {
            (TC_ACT_REDIRECT | TC_ACT_OK, Some(e)) if e.kind == event_kind::START => {
                Verdict::Accept(e.policy_id)
            }
            (TC_ACT_SHOT, Some(e)) if e.kind == event_kind::DROP => {
                match Counter::ALL[e.reason as usize] {
                    Counter::DropNoPolicy => Verdict::NoPolicy,
                    Counter::DropPolicyDeny => Verdict::Drop(e.policy_id),
                    Counter::DropUnknownSource => Verdict::UnknownSource,
                    Counter::DropNoRoute => Verdict::NoRoute,
                    other => panic!("unexpected drop reason {other:?}"),
                }
            }
            (TC_ACT_OK, None) if side == Side::Lan => Verdict::PassHost,
            other => panic!("unexpected kernel result {other:?}"),
        }
    }

    /// One `BPF_PROG_TEST_RUN` of `prog` on `pkt` as if it arrived on `ifindex`, `repeat`
    /// times: verdict, output bytes and the kernel's mean time per run.
    fn test_run(
        &mut self,
        prog: &str,
        ifindex: u32,
        pkt: &[u8],
        repeat: u32,
    ) -> Result<(u32, Vec<u8>, std::time::Duration), aya::programs::ProgramError> {
        let mut out = vec![0u8; pkt.len() + 256];
        let ctx = skb_ctx(ifindex);
        let prog = self.dp.program(prog).expect("program");
        let r = prog.test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out, r.duration))
    }

    /// Runs a program; `None` when the kernel's test harness itself refuses the input (it
    /// does so for some frames too short to be IP).
    pub fn try_run(&mut self, prog: &str, ifindex: u32, pkt: &[u8]) -> Option<(u32, Vec<u8>)> {
        self.test_run(prog, ifindex, pkt, 1)
            .ok()
            .map(|(rc, out, _)| (rc, out))
    }

    /// Runs a program `repeat` times on the same input (`BPF_PROG_TEST_RUN` with `repeat`) and
    /// returns its verdict and the kernel's mean time per run. The kernel reuses one skb for
    /// all repetitions, so a program that rewrites the packet sees its own output from the
    /// second repetition on; with `repeat == 1` the time includes the kernel timer's overhead.
    pub fn run_repeat(
        &mut self,
        prog: &str,
        ifindex: u32,
        pkt: &[u8],
        repeat: u32,
    ) -> (u32, std::time::Duration) {
        let (rc, _, d) = self
            .test_run(prog, ifindex, pkt, repeat)
            .expect("BPF_PROG_TEST_RUN");
        (rc, d)
    }

    fn run(&mut self, prog: &str, ifindex: u32, pkt: &[u8]) -> (u32, Vec<u8>) {
        let (rc, out, _) = self
            .test_run(prog, ifindex, pkt, 1)
            .expect("BPF_PROG_TEST_RUN");
        (rc, out)
    }

    /// Runs the XDP stage on an Ethernet frame arriving on `ovl`: verdict and output frame.
    pub fn xdp(&mut self, pkt: &[u8]) -> (u32, Vec<u8>) {
        let (rc, out, _) = self.xdp_repeat(pkt, 1);
        (rc, out)
    }

    /// Runs the XDP stage `repeat` times on the same frame: verdict, output, mean time.
    pub fn xdp_repeat(&mut self, pkt: &[u8], repeat: u32) -> (u32, Vec<u8>, std::time::Duration) {
        let mut out = vec![0u8; pkt.len() + 256];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, ...
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.ovl.to_ne_bytes());
        let prog = self.dp.xdp_program().expect("XDP program");
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(pkt),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN (XDP)");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out, r.duration)
    }

    /// Runs a command (e.g. `ip neigh add ...`, split at spaces) in the lab's network namespace;
    /// panics if it fails.
    pub fn sh(&self, cmd: &str) {
        let args: Vec<&str> = cmd.split(' ').collect();
        self.ns
            .output(Command::new(args[0]).args(&args[1..]))
            .and_then(|o| o.check())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The MAC address of a lab interface.
    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let out = self
            .ns
            .ip(&["-br", "link", "show", ifname])
            .expect("ip link show");
        let text = out.stdout;
        let mac = text.split_whitespace().nth(2).expect("MAC in ip -br link");
        let b: Vec<u8> = mac
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("hex"))
            .collect();
        b.try_into().expect("6 bytes")
    }

    /// Runs the overlay ingress program on an Ethernet frame arriving on `ovl`.
    pub fn overlay(&mut self, pkt: &[u8]) -> (u32, Vec<u8>) {
        let i = self.ovl;
        self.run(programs::OVERLAY_INGRESS_L2, i, pkt)
    }

    /// Runs the overlay egress program (host-originated traffic towards the overlay).
    pub fn overlay_egress(&mut self, pkt: &[u8]) -> (u32, Vec<u8>) {
        let i = self.ovl;
        self.run(programs::OVERLAY_EGRESS_L2, i, pkt)
    }

    /// The overlay program's verdict for a payload-less TCP segment.
    pub fn overlay_tcp(
        &mut self,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        flags: pkt::Tcp,
    ) -> u32 {
        self.overlay(&pkt::tcp(src, sport, dst, dport, flags, b""))
            .0
    }

    /// The LAN program's verdict for a payload-less TCP segment.
    pub fn lan_tcp(
        &mut self,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        flags: pkt::Tcp,
    ) -> u32 {
        self.lan(&pkt::tcp(src, sport, dst, dport, flags, b"")).0
    }

    /// Runs the LAN ingress program on a frame arriving on `lan`.
    pub fn lan(&mut self, pkt: &[u8]) -> (u32, Vec<u8>) {
        let i = self.lan;
        self.run(programs::LAN_INGRESS, i, pkt)
    }

    /// Pinned state (conntrack, counters).
    pub fn state(&self) -> State {
        self.dp.state().expect("open state")
    }

    /// A counter summed over CPUs.
    pub fn counter(&self, c: Counter) -> u64 {
        self.state()
            .counters()
            .unwrap()
            .into_iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// Removes a flow's own entry and leaves its reply entry, as nothing in swiftgate does on
    /// purpose (the agent and early drop remove both) but a crash between the two removals
    /// would: the programs must notice.
    pub fn remove_entry_only(&self, k: &swiftgate_common::FlowKey) {
        use aya::maps::{HashMap, Map, MapData};
        use swiftgate_common::{CtEntry, FAMILY_V4, FlowKey, FlowKey4, maps};
        let open = |name: &str| {
            Map::from_map_data(
                MapData::from_pin(self.pin.path().join("maps").join(name)).expect("pinned map"),
            )
            .expect("map")
        };
        if k.family == FAMILY_V4 {
            let mut m: HashMap<MapData, FlowKey4, CtEntry> =
                HashMap::try_from(open(maps::CONNTRACK4)).expect("hash map");
            m.remove(&FlowKey4::narrow(k)).expect("tracked");
        } else {
            let mut m: HashMap<MapData, FlowKey, CtEntry> =
                HashMap::try_from(open(maps::CONNTRACK6)).expect("hash map");
            m.remove(k).expect("tracked");
        }
    }

    /// Forgets every tracked flow (so the next packets open new ones) and what each source
    /// held.
    pub fn clear_conntrack(&self) {
        use aya::maps::{HashMap, Map, MapData};
        use swiftgate_common::{
            CtEntry, CtReply4, CtReply6, FlowKey, FlowKey4, SourceFreed, SourceKey, SourceUse, maps,
        };
        fn clear<K: aya::Pod, V: aya::Pod>(map: Map) {
            let mut m: HashMap<MapData, K, V> = HashMap::try_from(map).expect("hash map");
            let keys: Vec<K> = m.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                let _ = m.remove(&k);
            }
        }
        let open = |name: &str| {
            Map::from_map_data(
                MapData::from_pin(self.pin.path().join("maps").join(name)).expect("pinned map"),
            )
            .expect("map")
        };
        clear::<FlowKey4, CtEntry>(open(maps::CONNTRACK4));
        clear::<FlowKey4, CtReply4>(open(maps::CT_REPLY4));
        clear::<FlowKey, CtEntry>(open(maps::CONNTRACK6));
        clear::<FlowKey, CtReply6>(open(maps::CT_REPLY6));
        clear::<SourceKey, SourceUse>(open(maps::CT_SOURCES));
        clear::<SourceKey, SourceFreed>(open(maps::CT_FREED));
    }

    /// Sets slot `slot` of the pinned tail-call array `SG_CALLS` to the loaded program
    /// `program`, or empties it (`None`).
    pub fn set_call(&mut self, slot: u32, program: Option<&str>) {
        use aya::maps::{Map, MapData, ProgramArray};
        let path = self
            .pin
            .path()
            .join("maps")
            .join(swiftgate_common::maps::CALLS);
        let map = Map::from_map_data(MapData::from_pin(&path).expect("pinned SG_CALLS"));
        let mut slots = ProgramArray::try_from(map.expect("map")).expect("program array");
        match program {
            None => slots.clear_index(&slot).expect("clearing a slot"),
            Some(name) => {
                let prog = self.dp.program(name).expect("program");
                let fd = prog.fd().expect("loaded").try_clone().expect("fd");
                slots.set(slot, &fd, 0).expect("setting a slot");
            }
        }
    }

    /// Opens the flow-event ring buffer.
    pub fn events(&self) -> aya::maps::RingBuf<aya::maps::MapData> {
        use aya::maps::{Map, MapData, RingBuf};
        let data = MapData::from_pin(
            self.pin
                .path()
                .join("maps")
                .join(swiftgate_common::maps::EVENTS),
        )
        .expect("pinned ring buffer");
        RingBuf::try_from(Map::from_map_data(data).expect("map")).expect("ring buffer")
    }

    /// Tracked flows.
    pub fn flows(&self) -> Vec<Flow> {
        self.state().flows()
    }

    /// The tracked flow from `src:sport` to `dst:dport`, if any.
    pub fn flow(&self, src: &str, sport: u16, dst: &str, dport: u16) -> Option<Flow> {
        let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        self.flows().into_iter().find(|f| {
            dataplane::addr(&f.key.saddr, f.key.family) == s
                && dataplane::addr(&f.key.daddr, f.key.family) == d
                && f.key.sport == sport
                && f.key.dport == dport
        })
    }
}

/// A `struct __sk_buff` for `BPF_PROG_TEST_RUN`: the packet arrived on `ifindex`
/// (`ingress_ifindex` at byte 36, `ifindex` at 40; everything else zero).
pub fn skb_ctx(ifindex: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Leave the namespace before the remaining fields (pins, namespace) go.
        self.entered = None;
    }
}
