//! The conntrack reader: listing tracked flows with their reply direction merged in, looking
//! up and removing entries, and the rules both the reader and the GC share (a flow's idle
//! timeout, its reply key).
//!
//! It never decides that a flow has expired: that is [`super::gc`]'s job. The maps are opened
//! by [`super::state`].

use std::collections::BTreeMap;

use swiftgate_common::{
    self as common, CtEntry, CtTimeouts, FlowKey, FlowKey4, ReplyState, SourceKey, ct_flags, proto,
};

use super::State;

/// A tracked flow, for display.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Original-direction key.
    pub key: FlowKey,
    /// Entry.
    pub entry: CtEntry,
}

impl State {
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
    pub(super) fn tracked(&self, k: &FlowKey) -> bool {
        if k.family == common::FAMILY_V4 {
            self.conntrack4.get(&FlowKey4::narrow(k), 0).is_ok()
        } else {
            self.conntrack6.get(k, 0).is_ok()
        }
    }

    /// Removes `flows` (read from the tables: their entries give the reply keys and the
    /// sources they are charged to) with their reply entries, and counts the removals in each
    /// source's `SG_CT_FREED` record. Returns how many were removed (a flow already gone, say
    /// replaced by early drop meanwhile, is neither removed nor counted).
    pub fn remove_flows(&mut self, flows: &[Flow]) -> usize {
        let mut freed: BTreeMap<SourceKey, (u64, u64)> = BTreeMap::new();
        let mut n = 0;
        for f in flows {
            let k = &f.key;
            let gone = if k.family == common::FAMILY_V4 {
                self.conntrack4.remove(&FlowKey4::narrow(k))
            } else {
                self.conntrack6.remove(k)
            };
            if gone.is_err() {
                continue;
            }
            n += 1;
            let rk = reply_key(k, &f.entry);
            if self.reply_of(&rk) == Some(*k) {
                self.remove_reply(&rk);
            }
            let c = freed.entry(source_of(k)).or_default();
            c.0 += 1;
            c.1 += u64::from(f.entry.flags & ct_flags::SNAT != 0);
        }
        self.release(&freed);
        n
    }

    /// The original key the reply entry `rk` points to.
    pub(super) fn reply_of(&self, rk: &FlowKey) -> Option<FlowKey> {
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
    pub(super) fn remove_reply(&mut self, rk: &FlowKey) {
        let _ = if rk.family == common::FAMILY_V4 {
            self.reply4.remove(&FlowKey4::narrow(rk))
        } else {
            self.reply6.remove(rk)
        };
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

/// Idle timeout of a flow, in seconds, by its protocol and state.
pub fn timeout_secs(k: &FlowKey, e: &CtEntry, t: &CtTimeouts) -> u64 {
    let f = e.flags;
    let secs = match k.proto {
        proto::TCP => {
            let fins = f & (ct_flags::TCP_FIN_ORIG | ct_flags::TCP_FIN_REPLY);
            if f & ct_flags::TCP_RST != 0
                || fins == ct_flags::TCP_FIN_ORIG | ct_flags::TCP_FIN_REPLY
            {
                t.tcp_close
            } else if fins != 0 {
                t.tcp_fin_wait
            } else if f & ct_flags::SEEN_REPLY != 0
                && (f & ct_flags::TCP_SYNACK != 0 || f & ct_flags::TCP_SYN == 0)
            {
                t.tcp_established
            } else {
                t.tcp_syn
            }
        }
        proto::ICMP | proto::ICMPV6 => t.icmp,
        _ => {
            if f & ct_flags::SEEN_REPLY != 0 {
                t.udp_replied
            } else {
                t.udp_unreplied
            }
        }
    };
    u64::from(secs)
}

/// The source a flow is charged to (its original source address).
pub fn source_of(k: &FlowKey) -> SourceKey {
    SourceKey {
        addr: k.saddr,
        family: k.family,
        _pad: [0; 7],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_with(flags: u8) -> (FlowKey, CtEntry) {
        let k = FlowKey {
            proto: proto::TCP,
            family: common::FAMILY_V4,
            ..Default::default()
        };
        let e = CtEntry {
            flags,
            ..Default::default()
        };
        (k, e)
    }

    #[test]
    fn timeouts_by_tcp_state_and_protocol() {
        let t = CtTimeouts {
            tcp_syn: 1,
            tcp_established: 2,
            tcp_fin_wait: 3,
            tcp_close: 4,
            udp_unreplied: 5,
            udp_replied: 6,
            icmp: 7,
            _pad: 0,
        };
        use ct_flags::*;
        for (flags, want) in [
            (TCP_SYN, 1),
            (TCP_SYN | SEEN_REPLY, 1),
            (TCP_SYN | SEEN_REPLY | TCP_SYNACK, 2),
            // Picked up mid-stream (no SYN seen), with replies: established.
            (SEEN_REPLY, 2),
            (TCP_SYN | SEEN_REPLY | TCP_SYNACK | TCP_FIN_ORIG, 3),
            (TCP_SYN | SEEN_REPLY | TCP_SYNACK | TCP_FIN_REPLY, 3),
            (SEEN_REPLY | TCP_FIN_ORIG | TCP_FIN_REPLY, 4),
            (TCP_SYN | TCP_RST, 4),
            (SEEN_REPLY | TCP_SYNACK | TCP_FIN_ORIG | TCP_RST, 4),
        ] {
            let (k, e) = tcp_with(flags);
            assert_eq!(timeout_secs(&k, &e, &t), want, "flags {flags:#010b}");
        }
        let (mut k, mut e) = tcp_with(0);
        k.proto = proto::UDP;
        assert_eq!(timeout_secs(&k, &e, &t), 5);
        e.flags = SEEN_REPLY;
        assert_eq!(timeout_secs(&k, &e, &t), 6);
        k.proto = proto::ICMP;
        assert_eq!(timeout_secs(&k, &e, &t), 7);
        k.proto = 47; // GRE: as UDP
        assert_eq!(timeout_secs(&k, &e, &t), 6);
    }
}
