//! The pinned maps opened without loading programs: the handle behind `swiftgate status`,
//! `swiftgate flows` and the garbage collector, usable while another process runs the agent.
//!
//! Reads the packet counters and per-policy statistics here; reading the conntrack tables is
//! [`super::conntrack`], expiring them [`super::gc`].

use std::path::Path;

use anyhow::Result;
use std::collections::BTreeSet;

use aya::maps::{Array, HashMap, IterableMap as _, Map, MapData, PerCpuArray, PerCpuHashMap};
use swiftgate_common::{
    Counter, CtEntry, CtReply4, CtReply6, FlowKey, FlowKey4, KernelConfig, PolicyStats,
    SourceFreed, SourceKey, SourceUse, maps,
};

use super::pins::open_pinned;

/// The pinned maps, opened without loading programs (inspection, GC).
pub struct State {
    pub(super) conntrack4: HashMap<MapData, FlowKey4, CtEntry>,
    pub(super) reply4: HashMap<MapData, FlowKey4, CtReply4>,
    pub(super) conntrack6: HashMap<MapData, FlowKey, CtEntry>,
    pub(super) reply6: HashMap<MapData, FlowKey, CtReply6>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) policy_stats: PerCpuHashMap<MapData, u32, PolicyStats>,
    pub(super) sources: HashMap<MapData, SourceKey, SourceUse>,
    pub(super) freed: HashMap<MapData, SourceKey, SourceFreed>,
    pub(super) config: Array<MapData, KernelConfig>,
    /// Table sizes (IPv4, IPv6), as the kernel created them.
    pub(super) capacity: (u32, u32),
    /// Sources that held no flow at the last look (see [`State::forget_idle_sources`]).
    pub(super) idle_sources: BTreeSet<SourceKey>,
}

impl State {
    /// Opens the pinned maps under `pin`.
    pub fn open(pin: &Path) -> Result<State> {
        let open = |name: &str| -> Result<Map> { Ok(Map::from_map_data(open_pinned(pin, name)?)?) };
        let conntrack4: HashMap<MapData, FlowKey4, CtEntry> =
            HashMap::try_from(open(maps::CONNTRACK4)?)?;
        let conntrack6: HashMap<MapData, FlowKey, CtEntry> =
            HashMap::try_from(open(maps::CONNTRACK6)?)?;
        let capacity = (
            conntrack4.map().info()?.max_entries(),
            conntrack6.map().info()?.max_entries(),
        );
        Ok(State {
            conntrack4,
            reply4: HashMap::try_from(open(maps::CT_REPLY4)?)?,
            conntrack6,
            reply6: HashMap::try_from(open(maps::CT_REPLY6)?)?,
            counters: PerCpuArray::try_from(open(maps::COUNTERS)?)?,
            policy_stats: PerCpuHashMap::try_from(open(maps::POLICY_STATS)?)?,
            sources: HashMap::try_from(open(maps::CT_SOURCES)?)?,
            freed: HashMap::try_from(open(maps::CT_FREED)?)?,
            config: Array::try_from(open(maps::CONFIG)?)?,
            capacity,
            idle_sources: BTreeSet::new(),
        })
    }

    /// The configuration the running agent wrote for the programs (all zero before one did).
    pub fn kernel_config(&self) -> Result<KernelConfig> {
        Ok(self.config.get(&0, 0)?)
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
}
