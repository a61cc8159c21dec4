//! Map keys and values shared by swiftgate's eBPF programs (`swiftgate-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of padding holes the kernel could fill with
//! garbage (explicit `_pad` fields) and usable from `no_std`. With the `user` feature every type
//! implements [`aya::Pod`] so the agent can read and write the maps.
//!
//! Byte order: addresses are stored as they are on the wire (network order byte arrays);
//! ports in [`FlowKey`] are host order. LPM-trie keys are big-endian byte arrays because the
//! kernel matches prefixes bit by bit from the first byte.
#![no_std]
#![deny(missing_docs)]

/// Map names, as the agent finds them in the object file and pins them.
pub mod maps {
    /// [`crate::KernelConfig`] at index 0.
    pub const CONFIG: &str = "SG_CONFIG";
    /// LPM trie, IPv4 source prefix -> [`crate::IdentityValue`].
    pub const IDENTITY_V4: &str = "SG_IDENTITY_V4";
    /// LPM trie, IPv6 source prefix -> [`crate::IdentityValue`].
    pub const IDENTITY_V6: &str = "SG_IDENTITY_V6";
    /// LPM trie, IPv4 destination prefix -> [`crate::DestValue`].
    pub const DEST_V4: &str = "SG_DEST_V4";
    /// LPM trie, IPv6 destination prefix -> [`crate::DestValue`].
    pub const DEST_V6: &str = "SG_DEST_V6";
    /// LPM trie, [`crate::PolicyKey`] -> [`crate::PolicyValue`].
    pub const POLICY: &str = "SG_POLICY";
    /// Hash of IPv4 flows, original-direction [`crate::FlowKey4`] -> [`crate::CtEntry`]. A
    /// plain hash, not an LRU: an entry leaves only when its flow ends, times out or, unreplied
    /// or closing, gives way to a new flow in a full table (early drop).
    pub const CONNTRACK4: &str = "SG_CT4";
    /// Hash of IPv4 flows, reply-direction [`crate::FlowKey4`] (after NAT) ->
    /// [`crate::CtReply4`].
    pub const CT_REPLY4: &str = "SG_CT4_REPLY";
    /// Hash of IPv6 flows, original-direction [`crate::FlowKey`] -> [`crate::CtEntry`].
    pub const CONNTRACK6: &str = "SG_CT6";
    /// Hash of IPv6 flows, reply-direction [`crate::FlowKey`] (after NAT) ->
    /// [`crate::CtReply6`].
    pub const CT_REPLY6: &str = "SG_CT6_REPLY";
    /// Hash, [`crate::SourceKey`] -> [`crate::SourceUse`]: the flows each source holds, counted
    /// by the programs (created, and removed by early drop).
    pub const CT_SOURCES: &str = "SG_CT_SOURCES";
    /// Hash, [`crate::SourceKey`] -> [`crate::SourceFreed`]: the flows of each source the agent
    /// removed (expired, revoked). The agent is its only writer; a source holds
    /// `SourceUse - SourceFreed`.
    pub const CT_FREED: &str = "SG_CT_FREED";
    /// The conntrack tables of earlier versions (both families in one table under
    /// [`crate::FlowKey`]); a pin of this name means the pinned state is of another version.
    pub const LEGACY: [&str; 2] = ["SG_CONNTRACK", "SG_CT_REPLY"];
    /// Per-CPU array of packet counters indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "SG_COUNTERS";
    /// Per-CPU hash, policy id -> [`crate::PolicyStats`].
    pub const POLICY_STATS: &str = "SG_POLICY_STATS";
    /// Ring buffer of [`crate::FlowEvent`].
    pub const EVENTS: &str = "SG_EVENTS";
    /// Program array of the tail-called programs, indexed by [`crate::calls`]. Pinned, so the
    /// attached programs reach them while no agent runs.
    pub const CALLS: &str = "SG_CALLS";
}

/// Program names in the object file.
pub mod programs {
    /// TC ingress on an L3 overlay interface (TUN, no Ethernet header).
    pub const OVERLAY_INGRESS_L3: &str = "sg_overlay_ingress_l3";
    /// TC ingress on an L2 overlay interface (Ethernet; used by benchmarks and veth overlays).
    pub const OVERLAY_INGRESS_L2: &str = "sg_overlay_ingress_l2";
    /// TC egress on an L3 overlay interface: tracks flows the host itself opens to peers.
    pub const OVERLAY_EGRESS_L3: &str = "sg_overlay_egress_l3";
    /// TC egress on an L2 overlay interface.
    pub const OVERLAY_EGRESS_L2: &str = "sg_overlay_egress_l2";
    /// TC ingress on a LAN interface (Ethernet).
    pub const LAN_INGRESS: &str = "sg_lan_ingress";
    /// XDP on an L2 overlay interface, in front of [`OVERLAY_INGRESS_L2`]: the established
    /// path without an skb.
    pub const OVERLAY_XDP: &str = "sg_overlay_xdp";
    /// New flows from an L3 overlay: policy, conntrack, NAT, forwarding. Not attached;
    /// [`OVERLAY_INGRESS_L3`] tail-calls it through [`crate::maps::CALLS`] when a packet
    /// belongs to no tracked flow.
    pub const OVERLAY_NEW_L3: &str = "sg_overlay_new_l3";
    /// The same for an L2 overlay.
    pub const OVERLAY_NEW_L2: &str = "sg_overlay_new_l2";
    /// LAN packets that are not of a tracked flow: Site-to-VPN flows, ICMP errors, the host's
    /// own traffic. Not attached; [`LAN_INGRESS`] tail-calls it through
    /// [`crate::maps::CALLS`].
    pub const LAN_OTHER: &str = "sg_lan_other";
}

/// Indexes into [`maps::CALLS`].
pub mod calls {
    /// [`crate::programs::OVERLAY_NEW_L3`].
    pub const NEW_FLOW_L3: u32 = 0;
    /// [`crate::programs::OVERLAY_NEW_L2`].
    pub const NEW_FLOW_L2: u32 = 1;
    /// [`crate::programs::LAN_OTHER`].
    pub const LAN_OTHER: u32 = 2;
    /// Slots in the program array.
    pub const SLOTS: u32 = 3;
    /// Every slot with the program that fills it.
    pub const PROGRAMS: [(u32, &str); SLOTS as usize] = [
        (NEW_FLOW_L3, crate::programs::OVERLAY_NEW_L3),
        (NEW_FLOW_L2, crate::programs::OVERLAY_NEW_L2),
        (LAN_OTHER, crate::programs::LAN_OTHER),
    ];
}

/// Default pin directory for maps and links.
pub const PIN_ROOT: &str = "/sys/fs/bpf/swiftgate";

/// Default capacities; the agent may change them at load time.
pub mod capacity {
    /// Conntrack entries (and reply entries).
    pub const CONNTRACK: u32 = 262_144;
    /// Sources whose flows are counted for their shares at most (overlay peers and LAN hosts
    /// with flows); further sources are admitted uncounted.
    pub const SOURCES: u32 = 262_144;
    /// Recently created IPv4 flows (of all CPUs) that early drop looks through for an
    /// unreplied one to replace (a power of two; IPv6: a quarter).
    pub const RECENT: u32 = 16_384;
    /// Source prefixes (peers and resources used as sources), per family.
    pub const IDENTITY: u32 = 65_536;
    /// Destination prefixes, per family.
    pub const DEST: u32 = 65_536;
    /// Policy LPM entries.
    pub const POLICY: u32 = 1_048_576;
    /// Distinct policy ids with statistics.
    pub const POLICY_STATS: u32 = 65_536;
    /// Ring buffer bytes for flow events.
    pub const EVENTS_BYTES: u32 = 1 << 22;
}

/// IP family tag in [`FlowKey::family`].
pub const FAMILY_V4: u8 = 4;
/// IP family tag in [`FlowKey::family`].
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers the programs understand.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// A flow's 5-tuple (plus family). For ICMP echo, `sport == dport ==` the echo identifier so
/// that swapping the two sides gives the reply's key. Other protocols without ports use 0.
///
/// 8-byte aligned (the size, 40, is unchanged) so the eBPF programs copy, compare and clear
/// its addresses as whole words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address; IPv4 uses the first four bytes, the rest are zero.
    pub saddr: [u8; 16],
    /// Destination address; IPv4 uses the first four bytes.
    pub daddr: [u8; 16],
    /// Source port (host order).
    pub sport: u16,
    /// Destination port (host order).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Always zero.
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// The key of the opposite direction (sides swapped).
    #[inline(always)]
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }
}

/// An IPv4 flow's key in the IPv4 conntrack tables: [`FlowKey`] with 4-byte addresses.
///
/// 16 bytes instead of 40: the kernel hashes (jhash) and compares every key on each lookup,
/// and the established path is one lookup. The last 8 bytes have [`FlowKey`]'s layout from
/// `sport` on.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey4 {
    /// Source address.
    pub saddr: [u8; 4],
    /// Destination address.
    pub daddr: [u8; 4],
    /// Source port (host order).
    pub sport: u16,
    /// Destination port (host order).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Always [`FAMILY_V4`].
    pub family: u8,
    /// Always zero.
    pub _pad: [u8; 2],
}

impl FlowKey4 {
    /// The IPv4 key of an IPv4 [`FlowKey`] (the first four bytes of each address).
    #[inline(always)]
    pub const fn narrow(k: &FlowKey) -> FlowKey4 {
        FlowKey4 {
            saddr: [k.saddr[0], k.saddr[1], k.saddr[2], k.saddr[3]],
            daddr: [k.daddr[0], k.daddr[1], k.daddr[2], k.daddr[3]],
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
            family: k.family,
            _pad: [0; 2],
        }
    }

    /// The [`FlowKey`] this key stands for.
    pub const fn widen(&self) -> FlowKey {
        let mut saddr = [0; 16];
        let mut daddr = [0; 16];
        let mut i = 0;
        while i < 4 {
            saddr[i] = self.saddr[i];
            daddr[i] = self.daddr[i];
            i += 1;
        }
        FlowKey {
            saddr,
            daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }
}

/// Where a tracked flow was opened from.
pub mod origin {
    /// An overlay peer (packet arrived on the overlay interface).
    pub const OVERLAY: u8 = 1;
    /// A host on a LAN interface (Site-to-VPN).
    pub const LAN: u8 = 2;
    /// The routing peer itself, towards the overlay.
    pub const HOST: u8 = 3;
}

/// Bits in [`CtEntry::flags`].
pub mod ct_flags {
    /// Source NAT applied (masquerade).
    pub const SNAT: u8 = 1 << 0;
    /// A packet in the reply direction was seen.
    pub const SEEN_REPLY: u8 = 1 << 1;
    /// TCP SYN seen from the originator.
    pub const TCP_SYN: u8 = 1 << 2;
    /// TCP SYN+ACK seen from the responder.
    pub const TCP_SYNACK: u8 = 1 << 3;
    /// TCP FIN seen from the originator.
    pub const TCP_FIN_ORIG: u8 = 1 << 4;
    /// TCP FIN seen from the responder.
    pub const TCP_FIN_REPLY: u8 = 1 << 5;
    /// TCP RST seen (either way).
    pub const TCP_RST: u8 = 1 << 6;
    /// The destination is the routing peer itself (input chain).
    pub const LOCAL: u8 = 1 << 7;
}

/// The reply direction's side of a flow, kept in the flow's reply-table entry so that a reply
/// packet needs one lookup: its counters and state bits, and copies of what forwarding it
/// needs to know about the flow. The agent merges it into the flow's [`CtEntry`] when it reads
/// the tables (`packets_reply`, `bytes_reply`, `flags`, `last_seen_ns`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyState {
    /// Packets in the reply direction.
    pub packets: u64,
    /// Bytes in the reply direction.
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last reply packet (0 before the first; refreshed at
    /// most every [`CT_REFRESH_NS`], which is when a reply also looks up the flow's entry).
    pub last_seen_ns: u64,
    /// [`ct_flags`] state bits seen in the reply direction (`SEEN_REPLY`, `TCP_SYNACK`,
    /// `TCP_FIN_REPLY`, `TCP_RST`).
    pub flags: u8,
    /// The flow's [`origin`] (copied when the flow is made).
    pub origin: u8,
    /// The flow's [`ct_flags::SNAT`] and [`ct_flags::LOCAL`] bits (copied when it is made).
    pub kind: u8,
    /// Always zero.
    pub _pad: [u8; 5],
}

/// A reply-table entry of an IPv4 flow (`SG_CT4_REPLY`): the flow's original-direction key
/// and its [`ReplyState`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtReply4 {
    /// The flow's key in `SG_CT4`.
    pub orig: FlowKey4,
    /// The reply direction.
    pub state: ReplyState,
}

/// A reply-table entry of an IPv6 flow (`SG_CT6_REPLY`), as [`CtReply4`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtReply6 {
    /// The flow's key in `SG_CT6`.
    pub orig: FlowKey,
    /// The reply direction.
    pub state: ReplyState,
}

const _: () = assert!(core::mem::size_of::<ReplyState>() == 32);
const _: () = assert!(core::mem::size_of::<CtReply4>() == 48);
const _: () = assert!(core::mem::size_of::<CtReply6>() == 72);

/// A conntrack entry, keyed by the flow's original-direction [`FlowKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CtEntry {
    /// `bpf_ktime_get_coarse_ns()` when the flow was created.
    pub created_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last packet (refreshed at most every [`CT_REFRESH_NS`]).
    pub last_seen_ns: u64,
    /// Packets in the original direction.
    pub packets_orig: u64,
    /// Bytes in the original direction.
    pub bytes_orig: u64,
    /// Packets in the reply direction.
    pub packets_reply: u64,
    /// Bytes in the reply direction.
    pub bytes_reply: u64,
    /// Masquerade source address (valid with [`ct_flags::SNAT`]).
    pub nat_addr: [u8; 16],
    /// Address family of [`CtEntry::nexthop`] as the kernel spells it (`AF_INET` = 2,
    /// `AF_INET6` = 10; 0: none, the kernel resolves the next hop itself). Together with
    /// `nexthop` this is the layout of the kernel's `struct bpf_redir_neigh`, so the programs
    /// hand it to `bpf_redirect_neigh` straight from the map.
    pub nh_family: u32,
    /// Next hop towards the LAN side found by the FIB lookup when the flow was opened (the
    /// destination itself when it is on a connected network), so the kernel does not look the
    /// route up again for every packet. IPv4 uses the first four bytes.
    pub nexthop: [u8; 16],
    /// The policy that accepted the flow (0: none, e.g. host-originated).
    pub policy_id: u32,
    /// Interface the flow leaves by on the LAN side (0 for local and host flows).
    pub lan_ifindex: u32,
    /// Masquerade source port (host order; valid with [`ct_flags::SNAT`]).
    pub nat_port: u16,
    /// One of [`origin`].
    pub origin: u8,
    /// [`ct_flags`] bits.
    pub flags: u8,
    /// When the XDP stage last confirmed [`CtEntry::l2_macs`] with a FIB lookup
    /// (`bpf_ktime_get_coarse_ns()`; 0: never).
    pub l2_checked_ns: u64,
    /// Ethernet destination and source address the XDP stage writes for this flow, looked
    /// up again after [`L2_RECHECK_NS`].
    pub l2_macs: [u8; 12],
    /// Always zero.
    pub _pad: [u8; 4],
}

/// How long the XDP stage reuses a flow's looked-up Ethernet addresses before asking the
/// FIB (and with it the neighbour table) again: a changed next hop or neighbour is picked
/// up within this time.
pub const L2_RECHECK_NS: u64 = 1_000_000_000;

/// Minimum interval between `last_seen_ns` refreshes (keeps hot entries from bouncing
/// between CPUs' caches on every packet).
pub const CT_REFRESH_NS: u64 = 1_000_000_000;

/// Idle timeouts of tracked flows, in seconds, by protocol and TCP state, as the agent's
/// garbage collector applies them (configurable: `[conntrack.timeouts]`). The agent writes the
/// ones it runs with into [`KernelConfig::ct_timeouts`], where `swiftgate conntrack` reads
/// them; the programs do not use them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtTimeouts {
    /// TCP flow whose handshake has not completed (SYN seen, no SYN-ACK back).
    pub tcp_syn: u32,
    /// Established TCP flow.
    pub tcp_established: u32,
    /// TCP flow closed in one direction (one FIN seen).
    pub tcp_fin_wait: u32,
    /// TCP flow closed in both directions or reset (both FINs, or an RST).
    pub tcp_close: u32,
    /// UDP and other protocols, no reply seen.
    pub udp_unreplied: u32,
    /// UDP and other protocols with replies.
    pub udp_replied: u32,
    /// ICMP and ICMPv6 echo.
    pub icmp: u32,
    /// Always zero.
    pub _pad: u32,
}

impl CtTimeouts {
    /// The defaults, beside Linux's (`nf_conntrack_*_timeout*`): TCP SYN 60 s (Linux 120),
    /// established 6 h (Linux 5 days: long-dead connections should not hold the table), FIN
    /// wait 120 s and close 10 s (as Linux), UDP 30 s unreplied (as Linux) and 180 s replied
    /// (Linux 120), ICMP 30 s (as Linux).
    pub const DEFAULT: CtTimeouts = CtTimeouts {
        tcp_syn: 60,
        tcp_established: 21_600,
        tcp_fin_wait: 120,
        tcp_close: 10,
        udp_unreplied: 30,
        udp_replied: 180,
        icmp: 30,
        _pad: 0,
    };
}

impl Default for CtTimeouts {
    fn default() -> Self {
        CtTimeouts::DEFAULT
    }
}

/// Kinds of destination in [`DestValue::kind`].
pub mod dest_kind {
    /// One of the routing peer's own overlay addresses (input chain, peer ACL).
    pub const LOCAL: u8 = 1;
    /// A routed network resource (forward chain, route ACL).
    pub const RESOURCE: u8 = 2;
    /// An overlay peer, reachable from a LAN when a policy allows (Site-to-VPN).
    pub const PEER: u8 = 3;
}

/// Bits in [`DestValue::flags`].
pub mod dest_flags {
    /// Masquerade flows to this destination (SNAT to the egress interface's address).
    pub const MASQUERADE: u8 = 1;
}

/// Value of the destination LPM tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestValue {
    /// Destination id used in [`PolicyKey`].
    pub dest_id: u32,
    /// Network (route) id the destination belongs to; 0 for local and peers.
    pub network_id: u32,
    /// One of [`dest_kind`].
    pub kind: u8,
    /// [`dest_flags`] bits.
    pub flags: u8,
    /// Always zero.
    pub _pad: [u8; 2],
}

/// Value of the identity LPM tries: who a source address is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityValue {
    /// Identity id used in [`PolicyKey`] (sources with the same group set share one).
    pub identity: u32,
}

/// Key data of the policy LPM trie. Prefix lengths: [`POLICY_PREFIX_ANY`] matches every
/// protocol, [`POLICY_PREFIX_PROTO`] one protocol on every port, up to
/// [`POLICY_PREFIX_FULL`] for one port; port ranges are stored as several prefixes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// Source identity, big-endian.
    pub identity: [u8; 4],
    /// Destination id, big-endian.
    pub dest: [u8; 4],
    /// IP protocol (ICMPv6 is stored as ICMP so one rule covers both families).
    pub proto: u8,
    /// Destination port, big-endian (0 for ICMP).
    pub port: [u8; 2],
    /// Always zero.
    pub _pad: u8,
}

/// Prefix length covering identity and destination only (protocol "all").
pub const POLICY_PREFIX_ANY: u32 = 64;
/// Prefix length covering identity, destination and protocol.
pub const POLICY_PREFIX_PROTO: u32 = 72;
/// Prefix length of a full lookup key (one port).
pub const POLICY_PREFIX_FULL: u32 = 88;

impl PolicyKey {
    /// Builds a key from host-order parts.
    #[inline(always)]
    pub const fn new(identity: u32, dest: u32, proto: u8, port: u16) -> Self {
        PolicyKey {
            identity: identity.to_be_bytes(),
            dest: dest.to_be_bytes(),
            proto,
            port: port.to_be_bytes(),
            _pad: 0,
        }
    }
}

/// Policy verdicts in [`PolicyValue::action`].
pub mod action {
    /// Let the flow through.
    pub const ACCEPT: u8 = 1;
    /// Drop it (beats any accept).
    pub const DROP: u8 = 2;
}

/// Value of the policy LPM trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// The rule that decided (for counters and flow events).
    pub policy_id: u32,
    /// One of [`action`].
    pub action: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}

/// Bits in [`KernelConfig::flags`].
pub mod config_flags {
    /// Emit a flow event for every dropped packet (rate limited by the ring buffer size).
    pub const DROP_EVENTS: u32 = 1 << 0;
    /// Emit flow start events.
    pub const START_EVENTS: u32 = 1 << 1;
    /// The overlay interface carries Ethernet frames: packets redirected into it need the
    /// peer's MAC address (neighbour resolution).
    pub const OVERLAY_L2: u32 = 1 << 2;
    /// The overlay interface is a TUN/TAP device, which never hands a packet over with a
    /// receive checksum over its data (`CHECKSUM_COMPLETE`): the fast path's rewrites of its
    /// packets have no such sum to keep right (one helper call fewer per masqueraded packet).
    pub const OVERLAY_TUN: u32 = 1 << 3;
}

/// The kernel programs' configuration: the value at index 0 of the `SG_CONFIG` array, written
/// by the agent (from its own configuration) and read by the TC programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// The overlay interface, where LAN replies are redirected to.
    pub overlay_ifindex: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    /// Largest TCP MSS allowed in SYNs crossing the routing peer over IPv4 (0: no clamping).
    pub mss_v4: u16,
    /// Same for IPv6.
    pub mss_v6: u16,
    /// Lowest masquerade port.
    pub nat_port_min: u16,
    /// Highest masquerade port.
    pub nat_port_max: u16,
    /// Most IPv4 flows one source may hold (its share of the IPv4 table; 0: no limit).
    pub ct_share4: u32,
    /// Most IPv6 flows one source may hold (0: no limit).
    pub ct_share6: u32,
    /// Most masqueraded flows (masquerade ports) one source may hold (0: no limit).
    pub nat_share: u32,
    /// Always zero.
    pub _pad: u32,
    /// The idle timeouts the agent's garbage collector applies (all zero before an agent
    /// wrote them). For the inspection commands; the programs do not read them.
    pub ct_timeouts: CtTimeouts,
}

/// Who a flow is charged to when sources' shares of the conntrack table are counted: the
/// flow's original source address (an overlay peer's address, or a LAN host's for a
/// Site-to-VPN flow).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    /// The address, as in [`FlowKey::saddr`] (IPv4: first four bytes, the rest zero).
    pub addr: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Always zero.
    pub _pad: [u8; 7],
}

/// What the programs count per source (atomic adds; the agent only reads it).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceUse {
    /// Flows created, minus those the programs removed (early drop).
    pub flows: u64,
    /// Of those, masqueraded flows (each holds a masquerade port).
    pub nat_flows: u64,
    /// New flows refused because the source held its share.
    pub refused: u64,
}

/// What the agent counts per source: flows it removed (written only by the agent).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceFreed {
    /// Flows removed.
    pub flows: u64,
    /// Of those, masqueraded flows.
    pub nat_flows: u64,
}

/// Packet counters (per CPU), indexes into the counters array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not ours: handed to the host stack untouched (LAN side).
    PassHost = 0,
    /// New flow accepted by policy.
    AcceptNew = 1,
    /// Packet of a tracked flow forwarded.
    Established = 2,
    /// Packet delivered to the routing peer itself (input chain).
    DeliverLocal = 3,
    /// ICMP error about a tracked flow translated.
    IcmpRelated = 4,
    /// Drop: no rule allows the flow (deny by default).
    DropNoPolicy = 5,
    /// Drop: a drop rule matched.
    DropPolicyDeny = 6,
    /// Drop: the source address belongs to no known peer or resource.
    DropUnknownSource = 7,
    /// Drop: the destination is neither ours nor a routed resource.
    DropNoRoute = 8,
    /// Drop: malformed or truncated packet.
    DropInvalid = 9,
    /// Drop: IP fragment (not reassembled).
    DropFragment = 10,
    /// Drop: protocol or packet type that cannot open a flow.
    DropUnsupported = 11,
    /// Drop: conntrack table full.
    DropCtFull = 12,
    /// Drop: no free masquerade port.
    DropNatExhausted = 13,
    /// Drop: the kernel FIB has no usable route or neighbour.
    DropFib = 14,
    /// Flow events lost because the ring buffer was full.
    EventsLost = 15,
    /// TCP MSS clamped in a SYN.
    MssClamped = 16,
    /// Drop: a new flow's program is missing from [`maps::CALLS`] (the agent has not finished
    /// loading); on the LAN side only packets towards the overlay are dropped for it.
    DropNoProgram = 17,
    /// Drop: the new flow's source holds its share of the conntrack table or of the
    /// masquerade ports.
    DropCtShare = 18,
    /// A full table made room for a new flow by removing an unreplied or closing one (not a
    /// drop of the packet).
    CtEarlyDrop = 19,
}

/// Number of [`Counter`] slots.
pub const COUNTER_SLOTS: u32 = 20;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_SLOTS as usize] = [
        Counter::PassHost,
        Counter::AcceptNew,
        Counter::Established,
        Counter::DeliverLocal,
        Counter::IcmpRelated,
        Counter::DropNoPolicy,
        Counter::DropPolicyDeny,
        Counter::DropUnknownSource,
        Counter::DropNoRoute,
        Counter::DropInvalid,
        Counter::DropFragment,
        Counter::DropUnsupported,
        Counter::DropCtFull,
        Counter::DropNatExhausted,
        Counter::DropFib,
        Counter::EventsLost,
        Counter::MssClamped,
        Counter::DropNoProgram,
        Counter::DropCtShare,
        Counter::CtEarlyDrop,
    ];

    /// A short stable name (used by the CLI and metrics).
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PassHost => "pass_host",
            Counter::AcceptNew => "accept_new",
            Counter::Established => "established",
            Counter::DeliverLocal => "deliver_local",
            Counter::IcmpRelated => "icmp_related",
            Counter::DropNoPolicy => "drop_no_policy",
            Counter::DropPolicyDeny => "drop_policy_deny",
            Counter::DropUnknownSource => "drop_unknown_source",
            Counter::DropNoRoute => "drop_no_route",
            Counter::DropInvalid => "drop_invalid",
            Counter::DropFragment => "drop_fragment",
            Counter::DropUnsupported => "drop_unsupported",
            Counter::DropCtFull => "drop_ct_full",
            Counter::DropNatExhausted => "drop_nat_exhausted",
            Counter::DropFib => "drop_fib",
            Counter::EventsLost => "events_lost",
            Counter::MssClamped => "mss_clamped",
            Counter::DropNoProgram => "drop_no_program",
            Counter::DropCtShare => "drop_ct_share",
            Counter::CtEarlyDrop => "ct_early_drop",
        }
    }

    /// Whether this counter counts dropped packets.
    pub const fn is_drop(self) -> bool {
        ((self as u32) >= Counter::DropNoPolicy as u32 && (self as u32) <= Counter::DropFib as u32)
            || matches!(self, Counter::DropNoProgram | Counter::DropCtShare)
    }
}

/// Per-policy statistics (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyStats {
    /// Flows the policy accepted.
    pub accepted_flows: u64,
    /// Packets the policy dropped.
    pub dropped_packets: u64,
}

/// Kinds of [`FlowEvent`].
pub mod event_kind {
    /// A flow was accepted and tracked.
    pub const START: u8 = 1;
    /// A flow ended (TCP RST/FIN seen by the program, or expired in the agent's GC).
    pub const END: u8 = 2;
    /// A packet opening a flow was dropped.
    pub const DROP: u8 = 3;
}

/// A flow event sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowEvent {
    /// `bpf_ktime_get_coarse_ns()` of the event.
    pub ts_ns: u64,
    /// Packets so far (both directions).
    pub packets: u64,
    /// Bytes so far (both directions).
    pub bytes: u64,
    /// The flow (original direction).
    pub key: FlowKey,
    /// Deciding policy (0 when none matched).
    pub policy_id: u32,
    /// One of [`event_kind`].
    pub kind: u8,
    /// For drops, the [`Counter`] index; else 0.
    pub reason: u8,
    /// One of [`origin`].
    pub origin: u8,
    /// Always zero.
    pub _pad: u8,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], Copy, contains only integers and byte arrays,
    // and has explicit padding fields, so any bit pattern is valid and there are no holes.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ReplyState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtReply4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtReply6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DestValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IdentityValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceUse {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceFreed {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowKey4>(), 16);
        // The tail from `sport` on has the same layout in both keys.
        assert_eq!(core::mem::offset_of!(FlowKey, sport), 32);
        assert_eq!(core::mem::offset_of!(FlowKey4, sport), 8);
        assert_eq!(core::mem::offset_of!(FlowKey, family), 37);
        assert_eq!(core::mem::offset_of!(FlowKey4, family), 13);
        assert_eq!(
            size_of::<CtEntry>(),
            6 * 8 + 16 + 4 + 16 + 4 + 4 + 2 + 1 + 1 + 8 + 12 + 4
        );
        assert_eq!(core::mem::offset_of!(CtEntry, nh_family) % 4, 0);
        assert_eq!(core::mem::offset_of!(CtEntry, l2_macs) % 4, 0);
        assert_eq!(size_of::<DestValue>(), 12);
        assert_eq!(size_of::<PolicyKey>(), 12);
        assert_eq!(size_of::<PolicyValue>(), 8);
        assert_eq!(size_of::<KernelConfig>(), 64);
        assert_eq!(size_of::<SourceKey>(), 24);
        assert_eq!(size_of::<SourceUse>(), 24);
        assert_eq!(size_of::<SourceFreed>(), 16);
        assert_eq!(size_of::<FlowEvent>(), 24 + 40 + 4 + 4);
    }

    #[test]
    fn reversed_swaps_sides() {
        let k = FlowKey {
            saddr: [1; 16],
            daddr: [2; 16],
            sport: 10,
            dport: 20,
            proto: proto::TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let r = k.reversed();
        assert_eq!(
            (r.saddr, r.daddr, r.sport, r.dport),
            ([2; 16], [1; 16], 20, 10)
        );
        assert_eq!(r.reversed(), k);
    }

    #[test]
    fn ipv4_keys_narrow_and_widen() {
        let mut k = FlowKey {
            sport: 1234,
            dport: 443,
            proto: proto::TCP,
            family: FAMILY_V4,
            ..Default::default()
        };
        k.saddr[..4].copy_from_slice(&[100, 64, 0, 2]);
        k.daddr[..4].copy_from_slice(&[192, 0, 2, 10]);
        let n = FlowKey4::narrow(&k);
        assert_eq!(
            (n.saddr, n.daddr, n.sport, n.dport, n.proto, n.family),
            (
                [100, 64, 0, 2],
                [192, 0, 2, 10],
                1234,
                443,
                proto::TCP,
                FAMILY_V4
            )
        );
        assert_eq!(n.widen(), k);
    }

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32);
        }
        assert!(Counter::DropFib.is_drop());
        assert!(Counter::DropNoProgram.is_drop());
        assert!(!Counter::EventsLost.is_drop());
        assert!(!Counter::Established.is_drop());
    }

    #[test]
    fn policy_key_is_big_endian() {
        let k = PolicyKey::new(0x0102_0304, 7, proto::TCP, 443);
        assert_eq!(k.identity, [1, 2, 3, 4]);
        assert_eq!(k.dest, [0, 0, 0, 7]);
        assert_eq!(k.port, [0x01, 0xbb]);
    }
}
