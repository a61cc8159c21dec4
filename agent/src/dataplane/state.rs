//! The pinned maps opened without loading programs: the handle behind `swiftgate status`,
//! `swiftgate flows` and the garbage collector, usable while another process runs the agent.
//!
//! Reads the packet counters and per-policy statistics here; reading the conntrack tables is
//! [`super::conntrack`], expiring them [`super::gc`].

use std::path::Path;

use anyhow::Result;
use aya::maps::{HashMap, Map, MapData, PerCpuArray, PerCpuHashMap};
use swiftgate_common::{
    Counter, CtEntry, CtReply4, CtReply6, FlowKey, FlowKey4, PolicyStats, maps,
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
