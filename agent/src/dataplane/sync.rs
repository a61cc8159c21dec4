//! Map sync: the compiled identity, destination and policy tables written into the maps in an
//! order that opens no gap, and the kernel-side configuration (the `CONFIG` map, IP forwarding).
//!
//! Not compiling the tables ([`crate::policy`]) nor reading conntrack ([`super::conntrack`]).

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Context as _, Result};
use aya::maps::{
    Array, MapData,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::IpNet;
use swiftgate_common::{
    DestValue, IdentityValue, KernelConfig, PolicyKey, PolicyValue, config_flags, maps,
};

use super::Dataplane;
use crate::{
    config::{AgentConfig, FlowEvents},
    policy::Compiled,
};

/// What an [`Dataplane::apply`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries written (new or changed).
    pub upserts: usize,
    /// Entries removed.
    pub removals: usize,
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
}

/// The kernel-side configuration for a validated configuration.
pub fn kernel_config(cfg: &AgentConfig) -> Result<KernelConfig> {
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
        ct_share4: share(cfg.conntrack_capacity, cfg.ct_source_share),
        ct_share6: share(cfg.conntrack_capacity_v6, cfg.ct_source_share),
        nat_share: share(
            u32::from(cfg.nat_ports.end - cfg.nat_ports.start) + 1,
            cfg.ct_source_share,
        ),
        _pad: 0,
        ct_timeouts: cfg.ct_timeouts,
    })
}

/// `percent` of `total` (at least 1), or 0 (no limit) at 100 percent.
fn share(total: u32, percent: u8) -> u32 {
    if percent >= 100 {
        0
    } else {
        ((total as u64 * percent as u64) / 100).max(1) as u32
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
