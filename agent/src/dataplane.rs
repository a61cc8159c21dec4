//! The data-plane manager: loads the eBPF object, pins maps and links, attaches the programs
//! (TCX) and keeps the maps in step with the configuration.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/swiftgate`):
//! - `maps/<NAME>`: every map, reused by a restarted agent so established flows survive;
//! - `links/<ifname>@<ingress|egress|xdp>`: TCX (and XDP) links, so programs stay attached
//!   while no agent runs.
//!
//! TC programs are replaced without a gap: the new link is attached in front of the old one
//! (our programs always return a final verdict, so the first one decides), then the old link
//! is released. The optional XDP stage is released first and then attached (an interface holds
//! one XDP link); the TC program handles every packet meanwhile.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, ProgramArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::TcAttachOptions,
    },
};
use ipnet::IpNet;
use swiftgate_common::{
    self as common, Config as KernelConfig, Counter, CtEntry, CtReply4, CtReply6, DestValue,
    FlowKey, FlowKey4, IdentityValue, PolicyKey, PolicyStats, PolicyValue, ReplyState,
    config_flags, ct_flags, ct_timeout, maps, proto,
};

use crate::{
    config::{Config, FlowEvents},
    policy::Compiled,
};

/// The compiled eBPF object.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/swiftgate"));

/// Where the programs attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    /// TC ingress.
    Ingress,
    /// TC egress.
    Egress,
    /// XDP (driver mode).
    Xdp,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
            Hook::Xdp => "xdp",
        }
    }
    fn tc(self) -> Option<TcAttachType> {
        match self {
            Hook::Ingress => Some(TcAttachType::Ingress),
            Hook::Egress => Some(TcAttachType::Egress),
            Hook::Xdp => None,
        }
    }
}

/// Options for loading.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// bpffs directory.
    pub pin_path: PathBuf,
    /// Conntrack entries, IPv4 flows.
    pub conntrack_capacity: u32,
    /// Conntrack entries, IPv6 flows.
    pub conntrack_capacity_v6: u32,
}

impl LoadOptions {
    /// From a validated configuration.
    pub fn from_config(c: &Config) -> Self {
        LoadOptions {
            pin_path: c.pin_path.clone(),
            conntrack_capacity: c.conntrack_capacity,
            conntrack_capacity_v6: c.conntrack_capacity_v6,
        }
    }
}

/// What an [`Dataplane::apply`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries written (new or changed).
    pub upserts: usize,
    /// Entries removed.
    pub removals: usize,
}

/// A loaded data plane.
pub struct Dataplane {
    ebpf: Ebpf,
    pin: PathBuf,
    /// Links this process attached (`ifname@hook=program`): attaching the same program twice
    /// to one hook is refused by the kernel, and not needed.
    attached: BTreeSet<String>,
}

fn map_dir(pin: &Path) -> PathBuf {
    pin.join("maps")
}
fn link_dir(pin: &Path) -> PathBuf {
    pin.join("links")
}

fn lpm_v4(n: &IpNet) -> Option<Key<[u8; 4]>> {
    match n {
        IpNet::V4(n) => Some(Key::new(n.prefix_len() as u32, n.addr().octets())),
        IpNet::V6(_) => None,
    }
}
fn lpm_v6(n: &IpNet) -> Option<Key<[u8; 16]>> {
    match n {
        IpNet::V6(n) => Some(Key::new(n.prefix_len() as u32, n.addr().octets())),
        IpNet::V4(_) => None,
    }
}

impl Dataplane {
    /// Loads (or re-opens, when pinned) the maps and loads the programs into the kernel.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        ensure_bpffs(&opts.pin_path)?;
        let maps_dir = map_dir(&opts.pin_path);
        fs::create_dir_all(&maps_dir).with_context(|| {
            format!(
                "creating {} (is bpffs mounted at /sys/fs/bpf?)",
                maps_dir.display()
            )
        })?;
        fs::create_dir_all(link_dir(&opts.pin_path))?;
        check_pinned_layout(&maps_dir)?;
        let (cap, cap6) = (opts.conntrack_capacity, opts.conntrack_capacity_v6);
        let mut loader = EbpfLoader::new();
        if std::env::var_os("SWIFTGATE_VERIFIER_LOG").is_some() {
            // Developers: the verifier's reasons (and the tail of its trace) on a rejection.
            loader.verifier_log_level(aya::VerifierLogLevel::DEBUG | aya::VerifierLogLevel::STATS);
        }
        let mut ebpf = loader
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(maps::CONNTRACK4, cap)
            .map_max_entries(maps::CT_REPLY4, cap)
            .map_max_entries(maps::CONNTRACK6, cap6)
            .map_max_entries(maps::CT_REPLY6, cap6)
            .load(OBJECT)
            .context("loading the eBPF object (a pinned map of another size? run `swiftgate down` first)")?;
        for name in [
            common::programs::OVERLAY_INGRESS_L3,
            common::programs::OVERLAY_INGRESS_L2,
            common::programs::OVERLAY_EGRESS_L3,
            common::programs::OVERLAY_EGRESS_L2,
            common::programs::LAN_INGRESS,
        ]
        .into_iter()
        .chain(common::calls::PROGRAMS.map(|(_, name)| name))
        {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the object"))?
                .try_into()?;
            load_retrying(name, || prog.load())?;
        }
        // The tail-called programs, in place before anything is attached.
        let mut fds = Vec::new();
        for (slot, name) in common::calls::PROGRAMS {
            let prog: &SchedClassifier = ebpf
                .program(name)
                .with_context(|| format!("program {name} missing from the object"))?
                .try_into()?;
            fds.push((slot, prog.fd()?.try_clone()?));
        }
        let mut calls = ProgramArray::try_from(
            ebpf.map_mut(maps::CALLS)
                .with_context(|| format!("map {} missing from the object", maps::CALLS))?,
        )?;
        for (slot, fd) in &fds {
            calls
                .set(*slot, fd, 0)
                .with_context(|| format!("setting {} slot {slot}", maps::CALLS))?;
        }
        let name = common::programs::OVERLAY_XDP;
        let xdp: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?;
        load_retrying(name, || xdp.load())?;
        Ok(Dataplane {
            ebpf,
            pin: opts.pin_path.clone(),
            attached: BTreeSet::new(),
        })
    }

    /// The pin directory.
    pub fn pin_path(&self) -> &Path {
        &self.pin
    }

    /// A loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?)
    }

    /// The loaded XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn xdp_program(&mut self) -> Result<&mut Xdp> {
        let name = common::programs::OVERLAY_XDP;
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?)
    }

    /// Attaches the programs a configuration asks for and releases links to interfaces it no
    /// longer names.
    pub fn attach(&mut self, cfg: &Config) -> Result<()> {
        let (ing, eg) = if cfg.overlay_l2 {
            (
                common::programs::OVERLAY_INGRESS_L2,
                common::programs::OVERLAY_EGRESS_L2,
            )
        } else {
            (
                common::programs::OVERLAY_INGRESS_L3,
                common::programs::OVERLAY_EGRESS_L3,
            )
        };
        let mut want = vec![
            (cfg.overlay.clone(), Hook::Ingress, ing),
            (cfg.overlay.clone(), Hook::Egress, eg),
        ];
        if cfg.xdp {
            want.push((
                cfg.overlay.clone(),
                Hook::Xdp,
                common::programs::OVERLAY_XDP,
            ));
        }
        for l in &cfg.lan {
            want.push((l.clone(), Hook::Ingress, common::programs::LAN_INGRESS));
        }
        let mut keep = BTreeSet::new();
        for (ifname, hook, prog) in &want {
            let name = format!("{ifname}@{}", hook.name());
            // Keyed by program too: switching `overlay_l2` swaps the program on the same hook.
            let full = format!("{name}={prog}");
            if !self.attached.contains(&full) {
                self.attach_one(ifname, *hook, prog)?;
                self.attached
                    .retain(|a| !a.starts_with(&format!("{name}=")));
                self.attached.insert(full);
            }
            keep.insert(name);
        }
        for entry in fs::read_dir(link_dir(&self.pin))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                release_link(&entry.path())?;
                self.attached
                    .retain(|a| !a.starts_with(&format!("{name}=")));
                tracing::info!(link = %name, "detached");
            }
        }
        Ok(())
    }

    fn attach_one(&mut self, ifname: &str, hook: Hook, prog_name: &str) -> Result<()> {
        let path = link_dir(&self.pin).join(format!("{ifname}@{}", hook.name()));
        let Some(tc) = hook.tc() else {
            return self.attach_xdp(ifname, &path);
        };
        let prog = self.program(prog_name)?;
        let id = prog
            .attach_with_options(ifname, tc, TcAttachOptions::TcxOrder(LinkOrder::first()))
            .with_context(|| format!("attaching {prog_name} to {ifname} {}", hook.name()))?;
        let link: FdLink = prog.take_link(id)?.try_into().context("TCX link")?;
        // The new program now runs first; the old one (if any) no longer sees packets.
        if path.exists() {
            release_link(&path)?;
        }
        link.pin(&path)
            .with_context(|| format!("pinning {}", path.display()))?;
        tracing::info!(
            interface = ifname,
            hook = hook.name(),
            program = prog_name,
            "attached"
        );
        Ok(())
    }

    /// Attaches the XDP stage in driver mode (generic-mode XDP would cost more than the TC
    /// path it shortcuts, so there is no fallback: the configuration is refused instead).
    fn attach_xdp(&mut self, ifname: &str, path: &Path) -> Result<()> {
        // An interface holds one XDP link, so the one a previous agent left pinned goes first
        // (TCX links can be replaced in front; XDP links cannot). Nothing is lost meanwhile:
        // the TC program behind it handles every packet on its own.
        if path.exists() {
            release_link(path)?;
        }
        let prog = self.xdp_program()?;
        let id = prog
            .attach(ifname, XdpMode::Driver)
            .with_context(|| {
                format!("attaching the XDP stage to {ifname} (driver mode; set xdp = false if the driver has no XDP support)")
            })?;
        let link: FdLink = prog.take_link(id)?.try_into().context("XDP link")?;
        link.pin(path)
            .with_context(|| format!("pinning {}", path.display()))?;
        tracing::info!(interface = ifname, hook = "xdp", "attached");
        Ok(())
    }

    fn map(&self, name: &str) -> Result<&Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("map {name} missing"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("map {name} missing"))
    }

    /// Writes the runtime configuration (interfaces, MSS, NAT ports, events).
    pub fn set_kernel_config(&mut self, k: KernelConfig) -> Result<()> {
        let mut a: Array<&mut MapData, KernelConfig> =
            Array::try_from(self.map_mut(maps::CONFIG)?)?;
        a.set(0, k, 0)?;
        Ok(())
    }

    /// Brings the identity, destination and policy maps to `c`, in an order that never opens
    /// a gap for a flow allowed before and after: new and changed policy entries first, then
    /// identities and destinations, then stale identities and destinations, then stale policy.
    /// Nothing is written when `c` does not fit the maps.
    pub fn apply(&mut self, c: &Compiled) -> Result<ApplyStats> {
        c.check_capacity()?;
        let mut st = ApplyStats::default();

        // Current contents.
        let cur_policy: BTreeMap<(u32, PolicyKey), PolicyValue> = {
            let m: LpmTrie<&MapData, PolicyKey, PolicyValue> =
                LpmTrie::try_from(self.map(maps::POLICY)?)?;
            m.iter()
                .filter_map(|r| r.ok())
                .map(|(k, v)| ((k.prefix_len(), k.data()), v))
                .collect()
        };
        let cur_ident = self.read_lpm::<IdentityValue>(maps::IDENTITY_V4, maps::IDENTITY_V6)?;
        let cur_dest = self.read_lpm::<DestValue>(maps::DEST_V4, maps::DEST_V6)?;
        let want_ident: BTreeMap<IpNet, IdentityValue> = c
            .identities
            .iter()
            .map(|(p, id)| (*p, IdentityValue { identity: *id }))
            .collect();

        // 1. Policy upserts.
        {
            let mut m: LpmTrie<&mut MapData, PolicyKey, PolicyValue> =
                LpmTrie::try_from(self.map_mut(maps::POLICY)?)?;
            for ((len, k), v) in &c.policy {
                if cur_policy.get(&(*len, *k)) != Some(v) {
                    m.insert(&Key::new(*len, *k), *v, 0)
                        .context("writing a policy entry")?;
                    st.upserts += 1;
                }
            }
        }
        // 2. Identity and destination upserts; 3. their removals.
        st.upserts += self.sync_lpm(
            maps::IDENTITY_V4,
            maps::IDENTITY_V6,
            &cur_ident,
            &want_ident,
            false,
        )?;
        st.upserts += self.sync_lpm(maps::DEST_V4, maps::DEST_V6, &cur_dest, &c.dests, false)?;
        st.removals += self.sync_lpm(
            maps::IDENTITY_V4,
            maps::IDENTITY_V6,
            &cur_ident,
            &want_ident,
            true,
        )?;
        st.removals += self.sync_lpm(maps::DEST_V4, maps::DEST_V6, &cur_dest, &c.dests, true)?;
        // 4. Policy removals.
        {
            let mut m: LpmTrie<&mut MapData, PolicyKey, PolicyValue> =
                LpmTrie::try_from(self.map_mut(maps::POLICY)?)?;
            for (len, k) in cur_policy.keys() {
                if !c.policy.contains_key(&(*len, *k)) {
                    m.remove(&Key::new(*len, *k))
                        .context("removing a policy entry")?;
                    st.removals += 1;
                }
            }
        }
        Ok(st)
    }

    fn read_lpm<V: aya::Pod>(&self, v4: &str, v6: &str) -> Result<BTreeMap<IpNet, V>> {
        let mut out = BTreeMap::new();
        let m4: LpmTrie<&MapData, [u8; 4], V> = LpmTrie::try_from(self.map(v4)?)?;
        for (k, v) in m4.iter().filter_map(|r| r.ok()) {
            let n = ipnet::Ipv4Net::new(k.data().into(), k.prefix_len() as u8)?;
            out.insert(IpNet::V4(n), v);
        }
        let m6: LpmTrie<&MapData, [u8; 16], V> = LpmTrie::try_from(self.map(v6)?)?;
        for (k, v) in m6.iter().filter_map(|r| r.ok()) {
            let n = ipnet::Ipv6Net::new(k.data().into(), k.prefix_len() as u8)?;
            out.insert(IpNet::V6(n), v);
        }
        Ok(out)
    }

    fn sync_lpm<V: aya::Pod + PartialEq>(
        &mut self,
        v4: &str,
        v6: &str,
        cur: &BTreeMap<IpNet, V>,
        want: &BTreeMap<IpNet, V>,
        removals: bool,
    ) -> Result<usize> {
        let mut n = 0;
        for fam in [v4, v6] {
            let mut m4: Option<LpmTrie<&mut MapData, [u8; 4], V>> = None;
            let mut m6: Option<LpmTrie<&mut MapData, [u8; 16], V>> = None;
            if fam == v4 {
                m4 = Some(LpmTrie::try_from(self.map_mut(v4)?)?);
            } else {
                m6 = Some(LpmTrie::try_from(self.map_mut(v6)?)?);
            }
            if removals {
                for p in cur.keys().filter(|p| !want.contains_key(p)) {
                    match (&mut m4, &mut m6, lpm_v4(p), lpm_v6(p)) {
                        (Some(m), _, Some(k), _) => m.remove(&k)?,
                        (_, Some(m), _, Some(k)) => m.remove(&k)?,
                        _ => continue,
                    }
                    n += 1;
                }
            } else {
                for (p, v) in want.iter().filter(|(p, v)| cur.get(p) != Some(v)) {
                    match (&mut m4, &mut m6, lpm_v4(p), lpm_v6(p)) {
                        (Some(m), _, Some(k), _) => m.insert(&k, *v, 0)?,
                        (_, Some(m), _, Some(k)) => m.insert(&k, *v, 0)?,
                        _ => continue,
                    }
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Handle on the pinned state for inspection and garbage collection.
    pub fn state(&self) -> Result<State> {
        State::open(&self.pin)
    }
}

/// The kernel-side configuration for a validated configuration.
pub fn kernel_config(cfg: &Config) -> Result<KernelConfig> {
    let overlay_ifindex = nix::net::if_::if_nametoindex(cfg.overlay.as_str())
        .with_context(|| format!("overlay interface `{}` not found", cfg.overlay))?;
    let mut flags = 0;
    match cfg.flow_events {
        FlowEvents::None => {}
        FlowEvents::Drops => flags |= config_flags::DROP_EVENTS,
        FlowEvents::All => flags |= config_flags::DROP_EVENTS | config_flags::START_EVENTS,
    }
    if cfg.overlay_l2 {
        flags |= config_flags::OVERLAY_L2;
    }
    if crate::netdev::is_tun(&cfg.overlay) {
        flags |= config_flags::OVERLAY_TUN;
    }
    Ok(KernelConfig {
        overlay_ifindex,
        flags,
        mss_v4: cfg.mtu - 40,
        mss_v6: cfg.mtu - 60,
        nat_port_min: cfg.nat_ports.start,
        nat_port_max: cfg.nat_ports.end,
    })
}

/// Loads a program, retrying a few times when the kernel answers EAGAIN (verifier resources
/// momentarily short while several loads run at once); anything else is final.
fn load_retrying(
    name: &str,
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<()> {
    let mut attempt = 0;
    loop {
        match load() {
            Ok(()) => return Ok(()),
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < 5 =>
            {
                attempt += 1;
                tracing::debug!(program = name, attempt, "program load: EAGAIN, retrying");
                std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
            }
            Err(e) => return Err(e).with_context(|| format!("verifier rejected {name}")),
        }
    }
}

/// Refuses to load against pinned maps of another layout (left by an agent of another
/// version): the kernel would reuse them and reject the programs with a verifier error that
/// does not say why.
fn check_pinned_layout(maps_dir: &Path) -> Result<()> {
    for name in maps::LEGACY {
        let path = maps_dir.join(name);
        if path.exists() {
            bail!(
                "the pinned map {} belongs to an earlier swiftgate version (one conntrack table \
                 for both address families); run `swiftgate down` (tracked flows are dropped) \
                 and start again",
                path.display()
            );
        }
    }
    // The program array: reused by name whatever its size, so a pin with fewer slots than
    // this version fills would fail half-way through setting them.
    let calls = maps_dir.join(maps::CALLS);
    if let Some(info) = pinned_info(&calls)? {
        let is_prog_array = matches!(info.map_type(), Ok(aya::maps::MapType::ProgramArray));
        if !is_prog_array || info.max_entries() != common::calls::SLOTS {
            bail!(
                "the pinned map {} has another layout ({} slots, this version uses {}): it was \
                 left by another swiftgate version; run `swiftgate down` (tracked flows are \
                 dropped) and start again",
                calls.display(),
                info.max_entries(),
                common::calls::SLOTS
            );
        }
    }
    let (k4, k6) = (
        std::mem::size_of::<FlowKey4>(),
        std::mem::size_of::<FlowKey>(),
    );
    for (name, key, value) in [
        (maps::CONNTRACK4, k4, std::mem::size_of::<CtEntry>()),
        (maps::CT_REPLY4, k4, std::mem::size_of::<CtReply4>()),
        (maps::CONNTRACK6, k6, std::mem::size_of::<CtEntry>()),
        (maps::CT_REPLY6, k6, std::mem::size_of::<CtReply6>()),
    ] {
        let path = maps_dir.join(name);
        let Some(info) = pinned_info(&path)? else {
            continue;
        };
        if info.key_size() as usize != key || info.value_size() as usize != value {
            bail!(
                "the pinned map {} has another layout (key {} / value {} bytes, this version \
                 uses {key} / {value}): it was left by another swiftgate version; run \
                 `swiftgate down` (tracked flows are dropped) and start again",
                path.display(),
                info.key_size(),
                info.value_size()
            );
        }
    }
    Ok(())
}

/// The kernel's description of the map pinned at `path`, if one is.
fn pinned_info(path: &Path) -> Result<Option<aya::maps::MapInfo>> {
    if !path.exists() {
        return Ok(None);
    }
    let map = MapData::from_pin(path)
        .with_context(|| format!("opening the pinned map {}", path.display()))?;
    Ok(Some(map.info().context("reading the pinned map's info")?))
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn on_bpffs(path: &Path) -> bool {
    let mut p = path;
    loop {
        if p.exists() {
            return nix::sys::statfs::statfs(p)
                .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
                .unwrap_or(false);
        }
        match p.parent() {
            Some(q) => p = q,
            None => return false,
        }
    }
}

/// Makes sure `pin` lies on a bpf filesystem, mounting the default one at /sys/fs/bpf when
/// it is missing (as after `ip netns exec`, which remounts /sys).
fn ensure_bpffs(pin: &Path) -> Result<()> {
    if on_bpffs(pin) {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if pin.starts_with(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting bpffs at /sys/fs/bpf")?;
        if on_bpffs(pin) {
            return Ok(());
        }
    }
    bail!(
        "pin path {} is not on a bpf filesystem (mount one: mount -t bpf bpf DIR)",
        pin.display()
    )
}

fn release_link(path: &Path) -> Result<()> {
    let link = PinnedLink::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    // Unpinning and dropping the last reference detaches it.
    drop(link.unpin()?);
    Ok(())
}

/// Detaches every program and removes all pinned state under `pin`.
pub fn remove_all(pin: &Path) -> Result<()> {
    let links = link_dir(pin);
    if links.exists() {
        for e in fs::read_dir(&links)? {
            let p = e?.path();
            if let Err(err) = release_link(&p) {
                tracing::warn!(path = %p.display(), error = %err, "removing link pin");
                let _ = fs::remove_file(&p);
            }
        }
        fs::remove_dir(&links)?;
    }
    let m = map_dir(pin);
    if m.exists() {
        for e in fs::read_dir(&m)? {
            fs::remove_file(e?.path())?;
        }
        fs::remove_dir(&m)?;
    }
    if pin.exists() {
        fs::remove_dir(pin).with_context(|| format!("removing {}", pin.display()))?;
    }
    Ok(())
}

/// A tracked flow, for display.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Original-direction key.
    pub key: FlowKey,
    /// Entry.
    pub entry: CtEntry,
}

/// Result of a garbage-collection pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcStats {
    /// Entries examined.
    pub scanned: usize,
    /// Flows expired.
    pub expired: usize,
    /// Reply entries without a flow removed.
    pub orphans: usize,
}

/// The pinned maps, opened without loading programs (inspection, GC).
pub struct State {
    conntrack4: HashMap<MapData, FlowKey4, CtEntry>,
    reply4: HashMap<MapData, FlowKey4, CtReply4>,
    conntrack6: HashMap<MapData, FlowKey, CtEntry>,
    reply6: HashMap<MapData, FlowKey, CtReply6>,
    counters: PerCpuArray<MapData, u64>,
    policy_stats: PerCpuHashMap<MapData, u32, PolicyStats>,
}

fn open_pinned(pin: &Path, name: &str) -> Result<MapData> {
    let p = map_dir(pin).join(name);
    MapData::from_pin(&p).with_context(|| {
        format!(
            "opening {} (is the agent set up? `swiftgate up`)",
            p.display()
        )
    })
}

impl State {
    /// Opens the pinned maps under `pin`.
    pub fn open(pin: &Path) -> Result<State> {
        Ok(State {
            conntrack4: HashMap::try_from(Map::from_map_data(open_pinned(
                pin,
                maps::CONNTRACK4,
            )?)?)?,
            reply4: HashMap::try_from(Map::from_map_data(open_pinned(pin, maps::CT_REPLY4)?)?)?,
            conntrack6: HashMap::try_from(Map::from_map_data(open_pinned(
                pin,
                maps::CONNTRACK6,
            )?)?)?,
            reply6: HashMap::try_from(Map::from_map_data(open_pinned(pin, maps::CT_REPLY6)?)?)?,
            counters: PerCpuArray::try_from(Map::from_map_data(open_pinned(
                pin,
                maps::COUNTERS,
            )?)?)?,
            policy_stats: PerCpuHashMap::try_from(Map::from_map_data(open_pinned(
                pin,
                maps::POLICY_STATS,
            )?)?)?,
        })
    }

    /// Every tracked flow (IPv4, then IPv6), with its reply direction (kept in the reply
    /// table by the programs) merged into the entry: reply counters, state bits, last seen.
    pub fn flows(&self) -> Vec<Flow> {
        let mut replies: std::collections::HashMap<FlowKey, ReplyState> = self
            .reply_states()
            .into_iter()
            .map(|(_, orig, state)| (orig, state))
            .collect();
        let v4 = self
            .conntrack4
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, entry)| Flow {
                key: k.widen(),
                entry,
            });
        let v6 = self
            .conntrack6
            .iter()
            .filter_map(|r| r.ok())
            .map(|(key, entry)| Flow { key, entry });
        v4.chain(v6)
            .map(|mut f| {
                if let Some(s) = replies.remove(&f.key) {
                    merge_reply(&mut f.entry, &s);
                }
                f
            })
            .collect()
    }

    /// Reply-table entries: reply key, original key, reply state (IPv4, then IPv6).
    fn reply_states(&self) -> Vec<(FlowKey, FlowKey, ReplyState)> {
        let v4 = self
            .reply4
            .iter()
            .filter_map(|r| r.ok())
            .map(|(r, v)| (r.widen(), v.orig.widen(), v.state));
        let v6 = self
            .reply6
            .iter()
            .filter_map(|r| r.ok())
            .map(|(r, v)| (r, v.orig, v.state));
        v4.chain(v6).collect()
    }

    /// Reply-direction entries (reply key -> original key), IPv4 then IPv6.
    pub fn replies(&self) -> Vec<(FlowKey, FlowKey)> {
        self.reply_states()
            .into_iter()
            .map(|(r, o, _)| (r, o))
            .collect()
    }

    /// Whether the flow with original-direction key `k` is tracked.
    fn tracked(&self, k: &FlowKey) -> bool {
        if k.family == common::FAMILY_V4 {
            self.conntrack4.get(&FlowKey4::narrow(k), 0).is_ok()
        } else {
            self.conntrack6.get(k, 0).is_ok()
        }
    }

    /// Removes the flow with original-direction key `k` (its reply entry stays until the
    /// programs or [`State::gc`] notice the flow is gone).
    pub fn remove_flow(&mut self, k: &FlowKey) {
        let _ = if k.family == common::FAMILY_V4 {
            self.conntrack4.remove(&FlowKey4::narrow(k))
        } else {
            self.conntrack6.remove(k)
        };
    }

    /// The original key the reply entry `rk` points to.
    fn reply_of(&self, rk: &FlowKey) -> Option<FlowKey> {
        if rk.family == common::FAMILY_V4 {
            self.reply4
                .get(&FlowKey4::narrow(rk), 0)
                .ok()
                .map(|v| v.orig.widen())
        } else {
            self.reply6.get(rk, 0).ok().map(|v| v.orig)
        }
    }

    /// Removes the reply entry `rk`.
    fn remove_reply(&mut self, rk: &FlowKey) {
        let _ = if rk.family == common::FAMILY_V4 {
            self.reply4.remove(&FlowKey4::narrow(rk))
        } else {
            self.reply6.remove(rk)
        };
    }

    /// Packet counters summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let mut out = Vec::new();
        for c in Counter::ALL {
            let v = self.counters.get(&(c as u32), 0)?;
            out.push((c, v.iter().sum()));
        }
        Ok(out)
    }

    /// Per-policy statistics summed over CPUs.
    pub fn policy_stats(&self) -> Vec<(u32, PolicyStats)> {
        self.policy_stats
            .iter()
            .filter_map(|r| r.ok())
            .map(|(id, per_cpu)| {
                let mut s = PolicyStats::default();
                for v in per_cpu.iter() {
                    s.accepted_flows += v.accepted_flows;
                    s.dropped_packets += v.dropped_packets;
                }
                (id, s)
            })
            .collect()
    }

    /// Removes flows idle longer than their timeout (and reply entries whose flow is gone).
    /// `now_ns` is `CLOCK_MONOTONIC`; the programs stamp entries with its coarse variant
    /// (`bpf_ktime_get_coarse_ns`, cached per tick).
    pub fn gc(&mut self, now_ns: u64) -> Result<GcStats> {
        let mut st = GcStats::default();
        let flows = self.flows();
        st.scanned = flows.len();
        for f in &flows {
            let idle = now_ns.saturating_sub(f.entry.last_seen_ns) / 1_000_000_000;
            if idle <= timeout_secs(&f.key, &f.entry) {
                continue;
            }
            let rk = reply_key(&f.key, &f.entry);
            self.remove_flow(&f.key);
            if self.reply_of(&rk) == Some(f.key) {
                self.remove_reply(&rk);
            }
            st.expired += 1;
            tracing::info!(
                target: "flow",
                event = "end",
                proto = f.key.proto,
                src = %addr(&f.key.saddr, f.key.family),
                dst = %addr(&f.key.daddr, f.key.family),
                sport = f.key.sport,
                dport = f.key.dport,
                policy_id = f.entry.policy_id,
                packets = f.entry.packets_orig + f.entry.packets_reply,
                bytes = f.entry.bytes_orig + f.entry.bytes_reply,
                "flow expired"
            );
        }
        for (rk, orig) in self.replies() {
            if !self.tracked(&orig) {
                self.remove_reply(&rk);
                st.orphans += 1;
            }
        }
        Ok(st)
    }
}

/// Folds a flow's reply state into its entry: reply counters, the reply direction's state bits,
/// the later of the two last-seen times.
pub fn merge_reply(e: &mut CtEntry, s: &ReplyState) {
    e.packets_reply = s.packets;
    e.bytes_reply = s.bytes;
    e.flags |= s.flags;
    e.last_seen_ns = e.last_seen_ns.max(s.last_seen_ns);
}

/// Idle timeout of a flow, in seconds.
pub fn timeout_secs(k: &FlowKey, e: &CtEntry) -> u64 {
    let f = e.flags;
    match k.proto {
        proto::TCP => {
            if f & (ct_flags::TCP_RST) != 0
                || (f & ct_flags::TCP_FIN_ORIG != 0 && f & ct_flags::TCP_FIN_REPLY != 0)
            {
                ct_timeout::TCP_CLOSING
            } else if f & ct_flags::SEEN_REPLY != 0
                && (f & ct_flags::TCP_SYNACK != 0 || f & ct_flags::TCP_SYN == 0)
            {
                ct_timeout::TCP_ESTABLISHED
            } else {
                ct_timeout::TCP_SYN
            }
        }
        proto::ICMP | proto::ICMPV6 => ct_timeout::ICMP,
        _ => {
            if f & ct_flags::SEEN_REPLY != 0 {
                ct_timeout::REPLIED
            } else {
                ct_timeout::UNREPLIED
            }
        }
    }
}

/// The reply-direction key stored for a flow.
pub fn reply_key(k: &FlowKey, e: &CtEntry) -> FlowKey {
    let mut r = k.reversed();
    if e.flags & ct_flags::SNAT != 0 {
        r.daddr = e.nat_addr;
        r.dport = e.nat_port;
        if matches!(k.proto, proto::ICMP | proto::ICMPV6) {
            r.sport = e.nat_port;
        }
    }
    r
}

/// Formats an address stored in a [`FlowKey`].
pub fn addr(a: &[u8; 16], family: u8) -> std::net::IpAddr {
    if family == common::FAMILY_V4 {
        std::net::IpAddr::from([a[0], a[1], a[2], a[3]])
    } else {
        std::net::IpAddr::from(*a)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// Enables IPv4/IPv6 forwarding (needed by the FIB lookup in the programs).
pub fn enable_forwarding(ifaces: &[&str]) -> Result<()> {
    let mut paths = vec![
        "/proc/sys/net/ipv4/ip_forward".to_string(),
        "/proc/sys/net/ipv6/conf/all/forwarding".to_string(),
    ];
    for i in ifaces {
        paths.push(format!("/proc/sys/net/ipv4/conf/{i}/forwarding"));
    }
    for p in paths {
        if Path::new(&p).exists() {
            fs::write(&p, "1").with_context(|| format!("writing {p}"))?;
        }
    }
    Ok(())
}
