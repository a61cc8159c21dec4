//! Loading: the embedded eBPF object into the kernel, with the maps pinned (or re-opened from
//! their pins) and the tail-call array filled before anything is attached.
//!
//! Also the checks that refuse pins left by another version, and the retry on a transient
//! EAGAIN from the verifier. Not attaching ([`super::attach`]) nor writing the tables
//! ([`super::sync`]); the pin directories themselves are [`super::pins`].

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    maps::{MapData, ProgramArray},
    programs::SchedClassifier,
};
use swiftgate_common::{self as common, CtEntry, CtReply4, CtReply6, FlowKey, FlowKey4, maps};

use super::{
    Dataplane,
    pins::{ensure_bpffs, link_dir, map_dir},
};
use crate::config::AgentConfig;

/// The compiled eBPF object.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/swiftgate"));

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
    pub fn from_config(c: &AgentConfig) -> Self {
        LoadOptions {
            pin_path: c.pin_path.clone(),
            conntrack_capacity: c.conntrack_capacity,
            conntrack_capacity_v6: c.conntrack_capacity_v6,
        }
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
        let sources = cap.saturating_add(cap6).min(common::capacity::SOURCES);
        let mut loader = EbpfLoader::new();
        if std::env::var_os("SWIFTGATE_VERIFIER_LOG").is_some() {
            // Developers: the verifier's reasons (and the tail of its trace) on a rejection.
            loader.verifier_log_level(aya::VerifierLogLevel::DEBUG | aya::VerifierLogLevel::STATS);
        }
        let started = std::time::Instant::now();
        let mut ebpf = loader
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(maps::CONNTRACK4, cap)
            .map_max_entries(maps::CT_REPLY4, cap)
            .map_max_entries(maps::CONNTRACK6, cap6)
            .map_max_entries(maps::CT_REPLY6, cap6)
            // Entries are allocated as used, but the hash buckets are not: a source per flow,
            // up to capacity::SOURCES (4 MiB of buckets each).
            .map_max_entries(maps::CT_SOURCES, sources)
            .map_max_entries(maps::CT_FREED, sources)
            .load(OBJECT)
            .context("loading the eBPF object (a pinned map of another size? run `swiftgate down` first)")?;
        load_programs(&mut ebpf)?;
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
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "eBPF maps created and programs verified"
        );
        Ok(Dataplane {
            ebpf,
            pin: opts.pin_path.clone(),
            attached: BTreeSet::new(),
        })
    }
}

/// Every program the agent uses, into the kernel: the TC programs (the tail-called ones
/// among them) and the XDP one.
///
/// The verifier takes most of an agent's start (about 2 s of CPU for these programs on the
/// lab's machines) and checks each program on the loading thread, so they are loaded
/// concurrently, one thread per core: the start takes the longest program's time on a
/// machine with enough cores instead of the sum.
fn load_programs(ebpf: &mut aya::Ebpf) -> Result<()> {
    let wanted: Vec<&str> = [
        common::programs::OVERLAY_INGRESS_L3,
        common::programs::OVERLAY_INGRESS_L2,
        common::programs::OVERLAY_EGRESS_L3,
        common::programs::OVERLAY_EGRESS_L2,
        common::programs::LAN_INGRESS,
        common::programs::OVERLAY_XDP,
    ]
    .into_iter()
    .chain(common::calls::PROGRAMS.map(|(_, name)| name))
    .collect();
    let mut jobs: Vec<(&str, &mut aya::programs::Program)> = ebpf
        .programs_mut()
        .filter(|(name, _)| wanted.contains(name))
        .collect();
    if let Some(missing) = wanted
        .iter()
        .find(|w| jobs.iter().all(|(name, _)| name != *w))
    {
        bail!("program {missing} missing from the object");
    }
    // The slowest first, so no thread is left with a long one at the end.
    jobs.sort_by_key(|(name, _)| {
        std::cmp::Reverse(common::calls::PROGRAMS.iter().any(|(_, n)| n == name))
    });
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, jobs.len().max(1));
    let mut shares: Vec<Vec<(&str, &mut aya::programs::Program)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        shares[i % threads].push(job);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || -> Result<()> {
                    for (name, prog) in share {
                        let t = std::time::Instant::now();
                        match prog {
                            aya::programs::Program::Xdp(p) => load_retrying(name, || p.load())?,
                            aya::programs::Program::SchedClassifier(p) => {
                                load_retrying(name, || p.load())?
                            }
                            _ => bail!("program {name} is neither TC nor XDP"),
                        }
                        tracing::debug!(
                            program = name,
                            ms = t.elapsed().as_millis() as u64,
                            "program verified"
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a program-loading thread panicked"))??;
        }
        Ok(())
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
    let source = std::mem::size_of::<common::SourceKey>();
    use aya::maps::MapType::{Array, Hash, PerCpuArray};
    // Name, type, key and value size, and the entries where this version fixes them.
    for (name, kind, key, value, entries) in [
        (
            maps::CONNTRACK4,
            Hash,
            k4,
            std::mem::size_of::<CtEntry>(),
            None,
        ),
        (
            maps::CT_REPLY4,
            Hash,
            k4,
            std::mem::size_of::<CtReply4>(),
            None,
        ),
        (
            maps::CONNTRACK6,
            Hash,
            k6,
            std::mem::size_of::<CtEntry>(),
            None,
        ),
        (
            maps::CT_REPLY6,
            Hash,
            k6,
            std::mem::size_of::<CtReply6>(),
            None,
        ),
        (
            maps::CT_SOURCES,
            Hash,
            source,
            std::mem::size_of::<common::SourceUse>(),
            None,
        ),
        (
            maps::CT_FREED,
            Hash,
            source,
            std::mem::size_of::<common::SourceFreed>(),
            None,
        ),
        (
            maps::CONFIG,
            Array,
            4,
            std::mem::size_of::<common::KernelConfig>(),
            Some(1),
        ),
        (
            maps::COUNTERS,
            PerCpuArray,
            4,
            8,
            Some(common::COUNTER_SLOTS),
        ),
    ] {
        let path = maps_dir.join(name);
        let Some(info) = pinned_info(&path)? else {
            continue;
        };
        let found = info.map_type().ok();
        if found != Some(kind)
            || info.key_size() as usize != key
            || info.value_size() as usize != value
            || entries.is_some_and(|n| n != info.max_entries())
        {
            bail!(
                "the pinned map {} has another layout ({found:?}, key {} / value {} bytes, {} \
                 entries; this version uses {kind:?}, {key} / {value}{}): it was left by \
                 another swiftgate version; run `swiftgate down` (tracked flows are dropped) \
                 and start again",
                path.display(),
                info.key_size(),
                info.value_size(),
                info.max_entries(),
                entries
                    .map(|n| format!(", {n} entries"))
                    .unwrap_or_default(),
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
