//! What each source holds of the conntrack tables: the programs count the flows a source opens
//! (and those early drop removes) in `SG_CT_SOURCES`, the agent counts the flows it removes in
//! `SG_CT_FREED` (its only writer), and a source holds the difference. This module reads that
//! ([`State::sources`], [`State::table_use`]), charges the agent's removals
//! ([`State::release`]) and forgets sources that stay idle ([`State::forget_idle_sources`]).

use std::{collections::BTreeMap, net::IpAddr};

use swiftgate_common::{SourceFreed, SourceKey};

use super::{State, addr};

/// One source's use of the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStat {
    /// The source address.
    pub source: IpAddr,
    /// Flows it holds.
    pub flows: u64,
    /// Of those, masqueraded flows (each holds a masquerade port).
    pub nat_flows: u64,
    /// New flows refused because it held its share (since its record was created).
    pub refused: u64,
}

/// Entries in the conntrack tables and their sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableUse {
    /// IPv4 flows tracked.
    pub flows4: u64,
    /// IPv4 table size.
    pub capacity4: u32,
    /// IPv6 flows tracked.
    pub flows6: u64,
    /// IPv6 table size.
    pub capacity6: u32,
}

impl TableUse {
    /// The fuller table's use, in percent.
    pub fn percent(&self) -> f64 {
        let p = |n: u64, c: u32| 100.0 * n as f64 / f64::from(c.max(1));
        p(self.flows4, self.capacity4).max(p(self.flows6, self.capacity6))
    }
}

impl State {
    /// Every source with a record, with the flows it holds, most flows first.
    pub fn sources(&self) -> Vec<SourceStat> {
        let mut out: Vec<SourceStat> = self
            .sources
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, u)| {
                let f = self.freed.get(&k, 0).unwrap_or_default();
                SourceStat {
                    source: addr(&k.addr, k.family),
                    flows: u.flows.saturating_sub(f.flows),
                    nat_flows: u.nat_flows.saturating_sub(f.nat_flows),
                    refused: u.refused,
                }
            })
            .collect();
        out.sort_by(|a, b| b.flows.cmp(&a.flows).then(a.source.cmp(&b.source)));
        out
    }

    /// How full the tables are (counts the entries).
    pub fn table_use(&self) -> TableUse {
        TableUse {
            flows4: self.conntrack4.keys().filter(|k| k.is_ok()).count() as u64,
            capacity4: self.capacity.0,
            flows6: self.conntrack6.keys().filter(|k| k.is_ok()).count() as u64,
            capacity6: self.capacity.1,
        }
    }

    /// Adds flows the agent removed (flows, masqueraded flows) to their sources' records. A
    /// failed write is logged: the source then counts as holding those flows (it may be
    /// refused early), never as holding fewer than it does.
    pub(super) fn release(&mut self, removed: &BTreeMap<SourceKey, (u64, u64)>) {
        for (k, (flows, nat)) in removed {
            let mut f = self.freed.get(k, 0).unwrap_or_default();
            f.flows += flows;
            f.nat_flows += nat;
            if let Err(e) = self.freed.insert(k, f, 0) {
                tracing::warn!(
                    error = %e,
                    source = %addr(&k.addr, k.family),
                    "conntrack: could not record removed flows of a source"
                );
            }
        }
    }

    /// Removes the records of sources that held no flow at this look and the last one (a
    /// garbage-collection interval apart), so the records do not outgrow the sources in use.
    /// Waiting one interval makes it unlikely that a program is counting a new flow of the
    /// source while its record goes; if one is, that flow is not charged (the programs then
    /// admit rather than refuse). Returns how many sources were forgotten.
    pub fn forget_idle_sources(&mut self) -> usize {
        let mut idle_now = std::collections::BTreeSet::new();
        let records: Vec<_> = self.sources.iter().filter_map(|r| r.ok()).collect();
        for (k, u) in records {
            let f: SourceFreed = self.freed.get(&k, 0).unwrap_or_default();
            if u.flows > f.flows || u.nat_flows > f.nat_flows {
                continue;
            }
            idle_now.insert(k);
        }
        let mut n = 0;
        for k in idle_now.intersection(&self.idle_sources) {
            let _ = self.sources.remove(k);
            let _ = self.freed.remove(k);
            n += 1;
        }
        idle_now.retain(|k| !self.idle_sources.contains(k));
        self.idle_sources = idle_now;
        n
    }
}
