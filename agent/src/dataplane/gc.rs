//! The conntrack garbage collector: expires flows idle longer than their timeout, with their
//! reply entries (charging the removals to the flows' sources), removes reply entries whose
//! flow is gone and forgets idle sources; logs each expired flow and reports the tables' use.
//!
//! It decides nothing about timeouts itself ([`super::timeout_secs`] is the reader's, in
//! [`super::conntrack`], applied with the configured [`CtTimeouts`]), and reads and removes
//! through the reader's methods only. [`monotonic_ns`] is the clock it compares the entries' stamps with.

use anyhow::Result;
use swiftgate_common::{CtTimeouts, FAMILY_V4};

use super::{State, TableUse, addr, timeout_secs};

/// Result of a garbage-collection pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcStats {
    /// Entries examined.
    pub scanned: usize,
    /// Flows expired.
    pub expired: usize,
    /// Reply entries without a flow removed.
    pub orphans: usize,
    /// Sources whose records were removed (idle for two passes).
    pub forgotten: usize,
    /// The tables' use after the pass.
    pub tables: TableUse,
}

impl State {
    /// Removes flows idle longer than their timeout (and reply entries whose flow is gone).
    /// `now_ns` is `CLOCK_MONOTONIC`; the programs stamp entries with its coarse variant
    /// (`bpf_ktime_get_coarse_ns`, cached per tick).
    pub fn gc(&mut self, now_ns: u64, timeouts: &CtTimeouts) -> Result<GcStats> {
        let mut st = GcStats::default();
        let flows = self.flows();
        st.scanned = flows.len();
        let (expired, kept): (Vec<_>, Vec<_>) = flows.into_iter().partition(|f| {
            let idle = now_ns.saturating_sub(f.entry.last_seen_ns) / 1_000_000_000;
            idle > timeout_secs(&f.key, &f.entry, timeouts)
        });
        st.expired = self.remove_flows(&expired);
        for f in &expired {
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
        let v4 = kept.iter().filter(|f| f.key.family == FAMILY_V4).count() as u64;
        st.tables = TableUse {
            flows4: v4,
            capacity4: self.capacity.0,
            flows6: kept.len() as u64 - v4,
            capacity6: self.capacity.1,
        };
        for (rk, orig) in self.replies() {
            if !self.tracked(&orig) {
                self.remove_reply(&rk);
                st.orphans += 1;
            }
        }
        st.forgotten = self.forget_idle_sources();
        Ok(st)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}
