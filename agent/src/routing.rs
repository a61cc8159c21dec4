//! Routes into the overlay through a routing table of the agent's own, selected by policy
//! rules, so the host's own tables are never edited (an exit node's `0.0.0.0/0` used to replace
//! the host's default route and was never restored).
//!
//! While the table holds routes, two rules per address family send lookups to it:
//!
//! | preference | rule | why |
//! | --- | --- | --- |
//! | [`RULE_PREF_MAIN`] | `lookup main suppress_prefixlength 0` | the host's specific routes (its LANs, its underlay) win over ours; only its default route is passed over |
//! | [`RULE_PREF_OURS`] | `not fwmark` [`FWMARK`] `lookup` [`TABLE`] | everything else may take our routes, except the WireGuard sockets' own packets, which carry the mark |
//!
//! Underlay destinations that would otherwise fall into one of our prefixes (the management
//! and Signal servers' addresses) get `throw` entries in the table, so their lookups go on to
//! the host's tables. When the table empties, its rules go; at start and at `swiftgate down`
//! whatever an earlier agent left (after a crash) is removed first, so the host's routing is
//! exactly what it was without the agent.

use std::{collections::BTreeSet, net::IpAddr};

use anyhow::Result;
use ipnet::IpNet;

use crate::netdev::ip;

/// The agent's routing table id.
pub const TABLE: u32 = 0x5347;
/// Mark on the WireGuard sockets' packets: they never take the agent's table.
pub const FWMARK: u32 = 0x5347;
/// Preference of the rule that lets the host's specific routes win.
pub const RULE_PREF_MAIN: u32 = 21_318;
/// Preference of the rule that selects the agent's table.
pub const RULE_PREF_OURS: u32 = 21_319;

/// What the table should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Prefixes routed into the overlay interface.
    pub prefixes: BTreeSet<IpNet>,
    /// Underlay addresses kept out of the table (`throw`).
    pub underlay: BTreeSet<IpAddr>,
}

/// The agent's routing table for one overlay interface.
#[derive(Debug)]
pub struct Table {
    dev: String,
    now: Wanted,
    /// Families whose rules are installed (v4, v6).
    rules: (bool, bool),
}

fn family(v4: bool) -> &'static str {
    if v4 { "-4" } else { "-6" }
}

/// Removes the agent's rules and table contents (both families), whatever put them there.
pub fn remove_all() {
    let table = TABLE.to_string();
    for v4 in [true, false] {
        let f = family(v4);
        for pref in [RULE_PREF_MAIN, RULE_PREF_OURS] {
            // A crashed agent may have left a rule once; a bounded loop also covers repeats.
            for _ in 0..8 {
                if ip(&[f, "rule", "del", "pref", &pref.to_string()]).is_err() {
                    break;
                }
            }
        }
        let _ = ip(&[f, "route", "flush", "table", &table]);
    }
}

impl Table {
    /// Takes over the table for `dev`, removing whatever an earlier agent left.
    pub fn new(dev: &str) -> Table {
        remove_all();
        Table {
            dev: dev.to_string(),
            now: Wanted::default(),
            rules: (false, false),
        }
    }

    /// Current contents.
    pub fn wanted(&self) -> &Wanted {
        &self.now
    }

    fn rules(&mut self, v4: bool, on: bool) -> Result<()> {
        let have = if v4 { self.rules.0 } else { self.rules.1 };
        if have == on {
            return Ok(());
        }
        let f = family(v4);
        let (main, ours) = (RULE_PREF_MAIN.to_string(), RULE_PREF_OURS.to_string());
        if on {
            ip(&[
                f,
                "rule",
                "add",
                "pref",
                &main,
                "lookup",
                "main",
                "suppress_prefixlength",
                "0",
            ])?;
            ip(&[
                f,
                "rule",
                "add",
                "pref",
                &ours,
                "not",
                "fwmark",
                &format!("{FWMARK:#x}"),
                "lookup",
                &TABLE.to_string(),
            ])?;
        } else {
            let _ = ip(&[f, "rule", "del", "pref", &ours]);
            let _ = ip(&[f, "rule", "del", "pref", &main]);
        }
        if v4 {
            self.rules.0 = on;
        } else {
            self.rules.1 = on;
        }
        Ok(())
    }

    /// Makes the table hold `want`: new routes and throws first, then rules for a family that
    /// gained its first route, then removals, then rules of a family left empty.
    pub fn apply(&mut self, want: &Wanted) -> Result<()> {
        let table = TABLE.to_string();
        for p in want.prefixes.difference(&self.now.prefixes) {
            ip(&[
                "route",
                "replace",
                &p.to_string(),
                "dev",
                &self.dev,
                "table",
                &table,
            ])?;
        }
        for a in want.underlay.difference(&self.now.underlay) {
            ip(&[
                "route",
                "replace",
                "throw",
                &IpNet::from(*a).to_string(),
                "table",
                &table,
            ])?;
        }
        let has = |w: &Wanted, v4: bool| w.prefixes.iter().any(|p| p.addr().is_ipv4() == v4);
        for v4 in [true, false] {
            if has(want, v4) {
                self.rules(v4, true)?;
            }
        }
        for p in self.now.prefixes.difference(&want.prefixes) {
            if let Err(e) = ip(&["route", "del", &p.to_string(), "table", &table]) {
                tracing::warn!(prefix = %p, error = %format!("{e:#}"), "removing a route");
            }
        }
        for a in self.now.underlay.difference(&want.underlay) {
            let _ = ip(&[
                "route",
                "del",
                "throw",
                &IpNet::from(*a).to_string(),
                "table",
                &table,
            ]);
        }
        for v4 in [true, false] {
            if !has(want, v4) {
                self.rules(v4, false)?;
            }
        }
        self.now = want.clone();
        Ok(())
    }

    /// Removes every route, throw and rule of the table.
    pub fn clear(&mut self) {
        self.now = Wanted::default();
        self.rules = (false, false);
        remove_all();
    }
}

/// The addresses of `url`'s host (`scheme://host:port/...`), resolved now; none when it does
/// not resolve.
pub fn underlay_of(url: &str) -> Vec<IpAddr> {
    use std::net::ToSocketAddrs as _;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:443")
    };
    with_port
        .to_socket_addrs()
        .map(|it| it.map(|s| s.ip()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_hosts_come_from_urls() {
        assert_eq!(
            underlay_of("http://203.0.113.1:33073"),
            vec!["203.0.113.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            underlay_of("https://[2001:db8::1]:443/x"),
            vec!["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            underlay_of("203.0.113.9:10000"),
            vec!["203.0.113.9".parse::<IpAddr>().unwrap()]
        );
        assert!(underlay_of("http://no-such-host.invalid:1").is_empty());
    }
}
