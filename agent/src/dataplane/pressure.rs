//! Watches the conntrack tables from one garbage-collection pass to the next and says when to
//! warn: a table fuller than the configured threshold (once when it crosses it, again only
//! after it fell [`HYSTERESIS`] points below), and new flows refused since the last pass
//! (table full, or a source at its share), with the sources holding the most. Sans-IO: fed
//! with what the pass read, it returns the warnings; the agent logs them.

use super::{SourceStat, TableUse};

/// Points below the threshold a table must fall before a new crossing warns again.
pub const HYSTERESIS: f64 = 10.0;

/// Sources named in a refusal warning.
pub const TOP: usize = 3;

/// Counters of the programs that tell of pressure, as read at one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals {
    /// `drop_ct_full`.
    pub full: u64,
    /// `drop_ct_share`.
    pub share: u64,
    /// `ct_early_drop`.
    pub early_drops: u64,
}

/// Something to tell the operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// A table crossed the threshold.
    Filling {
        /// The fuller table's use, percent.
        percent: f64,
        /// Both tables.
        tables: TableUse,
    },
    /// Back under the threshold (minus the hysteresis).
    Eased {
        /// The fuller table's use, percent.
        percent: f64,
    },
    /// New flows were refused or replaced since the last pass.
    Refused {
        /// Refused: table full, nothing replaceable.
        full: u64,
        /// Refused: source at its share.
        share: u64,
        /// Unreplied or closing flows that gave way to new ones.
        early_drops: u64,
        /// The sources holding the most.
        top: Vec<SourceStat>,
    },
}

/// The watcher's memory between passes.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Threshold, percent.
    pub warn_percent: u8,
    above: bool,
    last: Option<Refusals>,
}

impl Watch {
    /// A watcher warning above `warn_percent`.
    pub fn new(warn_percent: u8) -> Self {
        Watch {
            warn_percent,
            above: false,
            last: None,
        }
    }

    /// What to warn about at this pass: `tables` as the pass left them, the counters now, and
    /// `top`, called only when a refusal warning needs the top sources.
    pub fn observe(
        &mut self,
        tables: TableUse,
        counters: Refusals,
        top: impl FnOnce() -> Vec<SourceStat>,
    ) -> Vec<Warning> {
        let mut out = Vec::new();
        let percent = tables.percent();
        let threshold = f64::from(self.warn_percent);
        if !self.above && percent >= threshold {
            self.above = true;
            out.push(Warning::Filling { percent, tables });
        } else if self.above && percent < threshold - HYSTERESIS {
            self.above = false;
            out.push(Warning::Eased { percent });
        }
        // The first pass only learns the counters (they may hold an earlier agent's counts).
        if let Some(last) = self.last.replace(counters) {
            let full = counters.full.saturating_sub(last.full);
            let share = counters.share.saturating_sub(last.share);
            let early_drops = counters.early_drops.saturating_sub(last.early_drops);
            if full + share + early_drops > 0 {
                let mut t = top();
                t.truncate(TOP);
                out.push(Warning::Refused {
                    full,
                    share,
                    early_drops,
                    top: t,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(flows4: u64) -> TableUse {
        TableUse {
            flows4,
            capacity4: 1000,
            flows6: 0,
            capacity6: 1000,
        }
    }

    #[test]
    fn warns_once_per_crossing_with_hysteresis() {
        let mut w = Watch::new(90);
        let none = Refusals::default();
        assert!(w.observe(tables(500), none, Vec::new).is_empty());
        let got = w.observe(tables(910), none, Vec::new);
        assert!(matches!(got[..], [Warning::Filling { percent, .. }] if percent == 91.0));
        assert!(w.observe(tables(950), none, Vec::new).is_empty());
        // 85% is under 90 but not 10 points under: still "above".
        assert!(w.observe(tables(850), none, Vec::new).is_empty());
        assert!(w.observe(tables(920), none, Vec::new).is_empty());
        let got = w.observe(tables(790), none, Vec::new);
        assert!(matches!(got[..], [Warning::Eased { .. }]));
        assert_eq!(w.observe(tables(900), none, Vec::new).len(), 1);
    }

    #[test]
    fn refusals_are_reported_as_growth_with_the_top_sources() {
        let mut w = Watch::new(90);
        let src = |n: u64| SourceStat {
            source: std::net::IpAddr::from([100, 64, 0, n as u8]),
            flows: n,
            nat_flows: 0,
            refused: 0,
        };
        let top = || (1..=5).rev().map(src).collect::<Vec<_>>();
        let c = |full, share, early_drops| Refusals {
            full,
            share,
            early_drops,
        };
        // The first pass learns the counters an earlier agent left.
        assert!(w.observe(tables(10), c(7, 7, 7), top).is_empty());
        assert!(
            w.observe(tables(10), c(7, 7, 7), || panic!("not needed"))
                .is_empty()
        );
        let got = w.observe(tables(10), c(9, 107, 7), top);
        match &got[..] {
            [
                Warning::Refused {
                    full: 2,
                    share: 100,
                    early_drops: 0,
                    top,
                },
            ] => {
                assert_eq!(top.len(), TOP);
                assert_eq!(top[0].flows, 5);
            }
            other => panic!("{other:?}"),
        }
    }
}
