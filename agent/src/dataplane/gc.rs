//! The conntrack garbage collector: expires flows idle longer than their timeout, with their
//! reply entries, and removes reply entries whose flow is gone; logs each expired flow.
//!
//! It decides nothing about timeouts itself ([`super::timeout_secs`] and
//! [`super::reply_key`] are the reader's, in [`super::conntrack`]), and reads through the
//! reader's methods only. [`monotonic_ns`] is the clock it compares the entries' stamps with.

use anyhow::Result;

use super::{State, addr, reply_key, timeout_secs};

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

impl State {
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

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}
