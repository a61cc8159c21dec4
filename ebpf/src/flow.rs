//! Per-packet decisions: conntrack, policy, masquerade and forwarding.

use core::{
    mem::{self, MaybeUninit},
    num::NonZeroU32,
    ptr::write_volatile,
};

use aya_ebpf::{
    bindings::{
        BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC, BPF_NOEXIST, bpf_fib_lookup, bpf_redir_neigh,
    },
    helpers::{
        bpf_fib_lookup as fib_lookup, bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_coarse_ns,
        bpf_redirect, bpf_redirect_neigh, bpf_skb_change_head,
    },
    maps::lpm_trie::Key,
    programs::TcContext,
};
use swiftgate_common::{
    COUNTER_SLOTS, CT_REFRESH_NS, Counter, CtEntry, DestValue, FAMILY_V4, FlowEvent, FlowKey,
    KernelConfig, POLICY_PREFIX_FULL, PolicyKey, PolicyStats, PolicyValue, action, calls,
    config_flags, ct_flags, dest_flags, dest_kind, event_kind, origin, proto,
};

use crate::{
    CALLS, CLOCK, CONFIG, COUNTERS, DEST_V4, DEST_V6, EVENTS, IDENTITY_V4, IDENTITY_V6, OK, POLICY,
    POLICY_STATS, SCRATCH_CT, SCRATCH_KEY, SHOT, ct,
    parse::{self, IcmpKind, ParseError, Parsed, tcp},
    parse::{AF_INET, AF_INET6, ETH_P_IP, ETH_P_IPV6, put_addr, v4_words, v6_words},
    rewrite,
};

const _: () = assert!(COUNTER_SLOTS as usize == Counter::ALL.len());

/// Masquerade port probes before giving up.
const NAT_PROBES: u32 = 16;

#[inline(always)]
pub(crate) fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

/// All-zero configuration: what the programs see before the agent writes one (an array map
/// always holds index 0, so this only satisfies the verifier's null check).
static NO_CONFIG: KernelConfig = KernelConfig {
    overlay_ifindex: 0,
    flags: 0,
    mss_v4: 0,
    mss_v6: 0,
    nat_port_min: 0,
    nat_port_max: 0,
};

#[inline(always)]
fn config() -> &'static KernelConfig {
    CONFIG.get(0).unwrap_or(&NO_CONFIG)
}

/// The coarse clock's value at the jiffy it was last read on this CPU.
#[repr(C)]
pub(crate) struct ClockCache {
    jiffies: u64,
    ns: u64,
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds, as `bpf_ktime_get_coarse_ns` returns it.
///
/// The coarse clock only moves at a timer tick, when the jiffies counter moves too, so its
/// value is cached per CPU together with the jiffy it was read at: reading the jiffies counter
/// is one load (the verifier inlines `bpf_jiffies64`), while a helper call costs ~20 ns per
/// packet with this kernel's call/return mitigations. The helper is called once per tick per
/// CPU. The kernel advances the jiffies counter just before the coarse clock, so a value read
/// in between stays cached for that jiffy: timestamps may lag the coarse clock by one tick
/// (about two behind real time). They are used for idle timeouts and once-a-second refreshes,
/// where that is as good as the helper's value.
#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: helper without arguments (inlined to a load of `jiffies_64`).
    let j = unsafe { bpf_jiffies64() };
    match CLOCK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU map, valid for this program run; a program
        // interrupted mid-update by another on the same CPU leaves at worst a jiffy that does
        // not match (see the order of the stores below), which costs one extra helper call.
        Some(c) => unsafe {
            if (*c).jiffies == j && (*c).ns != 0 {
                return (*c).ns;
            }
            let t = bpf_ktime_get_coarse_ns();
            // The value first, its jiffy last: an update cut short leaves a jiffy that does
            // not match, never a matching jiffy with an old value.
            (*c).ns = t;
            (*c).jiffies = j;
            t
        },
        // SAFETY: helper without arguments.
        None => unsafe { bpf_ktime_get_coarse_ns() },
    }
}

/// [`now`] behind a BPF-to-BPF call, for the paths that are not per-packet hot and whose
/// stack frames are near the verifier's limit.
#[inline(never)]
pub(crate) fn now_call() -> u64 {
    now()
}

#[inline(always)]
fn emit(kind: u8, reason: u8, key: &FlowKey, policy_id: u32, org: u8, packets: u64, bytes: u64) {
    let Some(mut slot) = EVENTS.reserve::<FlowEvent>(0) else {
        count(Counter::EventsLost);
        return;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points to a reserved ring buffer slot of FlowEvent's size; every field is
    // written before the slot is submitted.
    unsafe {
        (*ev).ts_ns = now_call();
        (*ev).packets = packets;
        (*ev).bytes = bytes;
        (*ev).key = *key;
        (*ev).policy_id = policy_id;
        (*ev).kind = kind;
        (*ev).reason = reason;
        (*ev).origin = org;
        (*ev)._pad = 0;
    }
    slot.submit(0);
}

#[inline(always)]
fn policy_stat(policy_id: u32, accepted: bool) {
    if policy_id == 0 {
        return;
    }
    if let Some(p) = POLICY_STATS.get_ptr_mut(policy_id) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe {
            if accepted {
                (*p).accepted_flows += 1;
            } else {
                (*p).dropped_packets += 1;
            }
        }
    } else {
        let s = PolicyStats {
            accepted_flows: accepted as u64,
            dropped_packets: (!accepted) as u64,
        };
        let _ = POLICY_STATS.insert(policy_id, s, 0);
    }
}

/// Drops a packet that tried to open a flow, with counters and (optionally) an event.
#[inline(always)]
fn deny(cfg: &KernelConfig, c: Counter, key: &FlowKey, policy_id: u32, org: u8) -> i32 {
    count(c);
    policy_stat(policy_id, false);
    if cfg.flags & config_flags::DROP_EVENTS != 0 {
        emit(event_kind::DROP, c as u8, key, policy_id, org, 1, 0);
    }
    SHOT
}

#[inline(always)]
fn drop_parse(e: ParseError) -> i32 {
    count(match e {
        ParseError::Fragment => Counter::DropFragment,
        ParseError::NotIp => Counter::DropUnsupported,
        ParseError::Invalid => Counter::DropInvalid,
        // ARP on an Ethernet overlay resolves the routing peer's own address: the host's.
        ParseError::Arp => {
            count(Counter::PassHost);
            return OK;
        }
    });
    SHOT
}

#[inline(always)]
pub(crate) fn v4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

#[inline(always)]
fn identity_of(key: &FlowKey) -> Option<u32> {
    let v = if key.family == FAMILY_V4 {
        IDENTITY_V4.get(Key::new(32, v4(&key.saddr)))
    } else {
        IDENTITY_V6.get(Key::new(128, key.saddr))
    };
    v.map(|v| v.identity)
}

#[inline(always)]
fn dest_of(key: &FlowKey) -> Option<DestValue> {
    let v = if key.family == FAMILY_V4 {
        DEST_V4.get(Key::new(32, v4(&key.daddr)))
    } else {
        DEST_V6.get(Key::new(128, key.daddr))
    };
    v.copied()
}

/// Looks up the policy verdict for a new flow from `identity` to `dest`.
#[inline(always)]
fn policy_of(identity: u32, dest: u32, key: &FlowKey) -> Option<PolicyValue> {
    let (p, port) = match key.proto {
        proto::TCP | proto::UDP => (key.proto, key.dport),
        proto::ICMP | proto::ICMPV6 => (proto::ICMP, 0),
        other => (other, 0),
    };
    POLICY
        .get(Key::new(
            POLICY_PREFIX_FULL,
            PolicyKey::new(identity, dest, p, port),
        ))
        .copied()
}

/// Whether this packet may open a new flow (TCP needs a bare SYN, ICMP an echo request).
#[inline(always)]
fn may_open(p: &Parsed) -> Result<(), Counter> {
    match p.key.proto {
        proto::TCP => {
            if p.tcp_flags & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN {
                Ok(())
            } else {
                Err(Counter::DropInvalid)
            }
        }
        proto::ICMP | proto::ICMPV6 => {
            if p.icmp == IcmpKind::EchoRequest {
                Ok(())
            } else {
                Err(Counter::DropUnsupported)
            }
        }
        _ => Ok(()),
    }
}

/// Accounts a packet of a tracked flow's original direction and advances the TCP state bits.
#[inline(always)]
pub(crate) fn touch(ct: *mut CtEntry, len: u64, proto: u8, tcp_flags: u8) {
    touch_at(ct, len, proto, tcp_flags, now())
}

/// [`touch`] with the current time already read.
#[inline(always)]
pub(crate) fn touch_at(ct: *mut CtEntry, len: u64, proto: u8, tcp_flags: u8, t: u64) {
    // SAFETY: `ct` points into a map value that stays valid for this program run.
    unsafe {
        account(
            Counters {
                packets: &raw mut (*ct).packets_orig,
                bytes: &raw mut (*ct).bytes_orig,
                last_seen: &raw mut (*ct).last_seen_ns,
                flags: &raw mut (*ct).flags,
            },
            len,
            tcp_bits(proto, tcp_flags, false),
            t,
        )
    }
}

/// Accounts a packet of a tracked flow's reply direction in its reply entry; `false`, having
/// changed nothing, when the flow's own entry is gone (the packet is then no tracked flow's).
///
/// A reply is handled with the reply entry alone, but the two entries live and die together:
/// at most every [`CT_REFRESH_NS`] (when the reply entry's `last_seen_ns` is refreshed, and on
/// its first packet) and on every TCP SYN, FIN or RST, the flow's own entry is looked up too.
/// That lookup keeps the flow recent in its LRU table while only replies flow (a download), so
/// memory pressure cannot take the flow, and with it its masquerade port, from under a busy
/// reply direction; and a flow whose entry was evicted or removed is noticed within that time
/// (the agent's garbage collector removes the orphaned reply entry).
#[inline(always)]
pub(crate) fn touch_reply(r: &ct::ByReply, len: u64, proto: u8, tcp_flags: u8) -> bool {
    let t = now();
    let s = r.state;
    // SAFETY: `s` points into a map value that stays valid for this program run.
    let due = unsafe { t.wrapping_sub((*s).last_seen_ns) } > CT_REFRESH_NS
        || (proto == proto::TCP && tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) != 0);
    if due && r.entry().is_none() {
        return false;
    }
    // SAFETY: as above.
    unsafe {
        account(
            Counters {
                packets: &raw mut (*s).packets,
                bytes: &raw mut (*s).bytes,
                last_seen: &raw mut (*s).last_seen_ns,
                flags: &raw mut (*s).flags,
            },
            len,
            ct_flags::SEEN_REPLY | tcp_bits(proto, tcp_flags, true),
            t,
        )
    }
    true
}

/// The fields one direction of a flow is accounted in (a conntrack or a reply entry).
struct Counters {
    packets: *mut u64,
    bytes: *mut u64,
    last_seen: *mut u64,
    flags: *mut u8,
}

/// Counts a packet of `len` bytes at time `t` and adds the state bits `bits`.
///
/// # Safety
/// The pointers must point into a map value valid for this program run.
#[inline(always)]
unsafe fn account(c: Counters, len: u64, bits: u8, t: u64) {
    // SAFETY: as the caller guarantees; all writes are single-word stores. Plain adds: a
    // flow's packets are normally handled on one CPU (RSS, one TUN queue per flow); a rare
    // concurrent update may lose a count, never corrupt the entry.
    unsafe {
        *c.packets += 1;
        *c.bytes += len;
        if t.wrapping_sub(*c.last_seen) > CT_REFRESH_NS {
            *c.last_seen = t;
        }
        let old = *c.flags;
        if old | bits != old {
            *c.flags = old | bits;
        }
    }
}

/// The conntrack state bits a TCP segment with `tcp_flags` sets, in the reply direction or
/// not (0 for other protocols).
#[inline(always)]
fn tcp_bits(proto: u8, tcp_flags: u8, reply: bool) -> u8 {
    if proto != proto::TCP {
        return 0;
    }
    let mut f = 0;
    if tcp_flags & tcp::RST != 0 {
        f |= ct_flags::TCP_RST;
    }
    if tcp_flags & tcp::FIN != 0 {
        f |= if reply {
            ct_flags::TCP_FIN_REPLY
        } else {
            ct_flags::TCP_FIN_ORIG
        };
    }
    if reply && tcp_flags & (tcp::SYN | tcp::ACK) == (tcp::SYN | tcp::ACK) {
        f |= ct_flags::TCP_SYNACK;
    }
    f
}

/// What the FIB lookup of a new flow found (8-byte aligned: written as whole words).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Route {
    /// Source address the kernel would use on the egress interface (the masquerade address).
    src: [u8; 16],
    /// Next hop (gateway, or the destination itself on a connected network; an IPv4 route
    /// may have an IPv6 gateway) as `bpf_redirect_neigh` takes it.
    nh: bpf_redir_neigh,
}

/// `bpf_fib_lookup` parameters, 8-byte aligned so they can be cleared with word stores.
#[repr(C, align(8))]
pub(crate) struct FibParams(bpf_fib_lookup);

const _: () = assert!(mem::size_of::<bpf_fib_lookup>().is_multiple_of(8));

/// Fills `fp` with the FIB lookup parameters for `key` as it arrived on `ifindex` (every other
/// field zero) and returns them. Shared by the TC and XDP programs.
#[inline(always)]
pub(crate) fn fib_params<'a>(
    fp: &'a mut MaybeUninit<FibParams>,
    key: &FlowKey,
    ifindex: u32,
) -> &'a mut bpf_fib_lookup {
    let words = fp.as_mut_ptr().cast::<u64>();
    for i in 0..mem::size_of::<FibParams>() / 8 {
        // SAFETY: `words` covers the aligned parameter block; volatile keeps LLVM from turning
        // the clearing into a call to its byte-loop memset.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: all-zero is a valid bpf_fib_lookup (a plain C struct), written just above.
    let params = unsafe { &mut (*fp.as_mut_ptr()).0 };
    params.l4_protocol = key.proto;
    params.sport = key.sport.to_be();
    params.dport = key.dport.to_be();
    params.ifindex = ifindex;
    if key.family == FAMILY_V4 {
        params.family = AF_INET;
        params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(v4(&key.daddr));
        params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(v4(&key.saddr));
    } else {
        params.family = AF_INET6;
        // SAFETY: [u8; 16] and [u32; 4] have the same size; the kernel reads raw bytes.
        unsafe {
            params.__bindgen_anon_4.ipv6_dst = mem::transmute::<[u8; 16], [u32; 4]>(key.daddr);
            params.__bindgen_anon_3.ipv6_src = mem::transmute::<[u8; 16], [u32; 4]>(key.saddr);
        }
    }
    params
}

/// Finds the egress interface, source address and next hop for `key` in the kernel FIB;
/// fills `out` and returns the interface index, or 0 (and leaves `out` unwritten) when there
/// is no usable route. Not inlined (its own stack frame).
#[inline(never)]
fn fib_into(ctx: &TcContext, key: &FlowKey, out: &mut MaybeUninit<Route>) -> u32 {
    let mut fp = MaybeUninit::<FibParams>::uninit();
    // SAFETY: the skb pointer is the program's context.
    let params = fib_params(&mut fp, key, unsafe { (*ctx.skb.skb).ifindex });
    // SAFETY: params is a valid, fully initialised struct of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            params,
            mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC,
        )
    };
    if rc != 0 {
        return 0;
    }
    // The source keeps the flow's family; the next hop has the family the kernel reports.
    // SAFETY: the kernel filled the members of the families it reports.
    let (s0, s1) = if key.family == FAMILY_V4 {
        v4_words(unsafe { params.__bindgen_anon_3.ipv4_src }.to_ne_bytes())
    } else {
        v6_words(unsafe { mem::transmute::<[u32; 4], [u8; 16]>(params.__bindgen_anon_3.ipv6_src) })
    };
    // The next hop is recorded only when it is the destination itself (a connected network):
    // that cannot change while the flow keeps its LAN interface. A gateway can (a route
    // change, a failover), so flows through one leave the next hop to the kernel's lookup
    // on every packet.
    let want = if key.family == FAMILY_V4 {
        AF_INET
    } else {
        AF_INET6
    };
    // SAFETY: the kernel filled the destination member of the family it reports.
    let connected = params.family == want
        && unsafe {
            if key.family == FAMILY_V4 {
                params.__bindgen_anon_4.ipv4_dst == u32::from_ne_bytes(v4(&key.daddr))
            } else {
                mem::transmute::<[u32; 4], [u8; 16]>(params.__bindgen_anon_4.ipv6_dst) == key.daddr
            }
        };
    let r = out.as_mut_ptr();
    // SAFETY: `r` is valid for writes and 8-byte aligned (Route is align(8)); the kernel
    // filled the next-hop member of the family it reports.
    unsafe {
        put_addr(&raw mut (*r).src, s0, s1);
        (*r).nh.nh_family = if connected { params.family as u32 } else { 0 };
        (*r).nh.__bindgen_anon_1.ipv6_nh = params.__bindgen_anon_4.ipv6_dst;
    }
    params.ifindex
}

/// The reply-direction key of a flow after masquerade to `addr:port`.
#[inline(always)]
fn nat_reply_key(key: &FlowKey, addr: &[u8; 16], port: u16) -> FlowKey {
    let mut r = key.reversed();
    r.daddr = *addr;
    r.dport = port;
    if matches!(key.proto, proto::ICMP | proto::ICMPV6) {
        r.sport = port;
    }
    r
}

/// Reserves a masquerade port: the original one when free, else random probes in the
/// configured range. The reservation is the reply entry itself (inserted with NOEXIST).
/// Builds each candidate reply key in `rk` (per-CPU scratch memory, not the stack) and
/// returns the port with bit 16 set, or 0 when no port is free. Not inlined (its own stack
/// frame).
#[inline(never)]
fn alloc_nat_into<const V4: bool>(
    cfg: &KernelConfig,
    key: &FlowKey,
    addr: &[u8; 16],
    rk: &mut MaybeUninit<FlowKey>,
) -> u32 {
    let min = if cfg.nat_port_min == 0 {
        1024
    } else {
        cfg.nat_port_min
    } as u32;
    let max = if cfg.nat_port_max < min as u16 {
        65535
    } else {
        cfg.nat_port_max
    } as u32;
    // Never zero (max >= min above), and NonZero keeps a panic path out of the program.
    let span = NonZeroU32::new(max.saturating_sub(min) + 1).unwrap_or(NonZeroU32::MIN);
    let has_ports = matches!(
        key.proto,
        proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6
    );
    let mut port = key.sport;
    // SAFETY: helper without arguments.
    let seed = unsafe { bpf_get_prandom_u32() };
    let Some(scratch) = ct::reply_prepare::<V4>(key, origin::OVERLAY, ct_flags::SNAT) else {
        return 0;
    };
    for i in 0..NAT_PROBES {
        let r = rk.write(nat_reply_key(key, addr, port));
        if ct::reply_insert::<V4>(&scratch, r, BPF_NOEXIST as u64) {
            return port as u32 | 1 << 16;
        }
        if !has_ports {
            break;
        }
        port = (min + (seed.wrapping_add(i.wrapping_mul(7919)) % span)) as u16;
    }
    0
}

/// Inserts a new conntrack entry (and, unless already reserved, its reply entry). On a race
/// with another CPU that created the same flow, the other CPU's entry wins.
#[inline(always)]
fn track<const V4: bool>(
    key: &FlowKey,
    reply_key: &FlowKey,
    entry: Option<*mut CtEntry>,
    reserved: bool,
) -> Result<(), Counter> {
    let Some(entry) = entry else {
        return Err(Counter::DropCtFull);
    };
    // SAFETY: the scratch slot returned by `new_entry`.
    let entry = unsafe { &*entry };
    if !reserved {
        let kind = entry.flags & (ct_flags::SNAT | ct_flags::LOCAL);
        let Some(scratch) = ct::reply_prepare::<V4>(key, entry.origin, kind) else {
            return Err(Counter::DropCtFull);
        };
        if !ct::reply_insert::<V4>(&scratch, reply_key, 0) {
            return Err(Counter::DropCtFull);
        }
    }
    if !ct::insert_new::<V4>(key, entry) {
        // Lost a race (or the table is full): drop our reply entry if it is ours.
        if reserved {
            ct::reply_remove::<V4>(reply_key);
        }
        if ct::get_in::<V4>(key).is_none() {
            return Err(Counter::DropCtFull);
        }
    }
    Ok(())
}

/// The fields of a conntrack entry the forwarding decisions need (copying the whole entry
/// would cost stack the verifier does not give us).
#[derive(Clone, Copy)]
struct CtView {
    /// The masquerade address in the map value (copying it would cost stack).
    nat_addr: *const [u8; 16],
    /// The flow's recorded next hop in the map value (null: none).
    nh: *const bpf_redir_neigh,
    lan_ifindex: u32,
    nat_port: u16,
    origin: u8,
    flags: u8,
}

impl CtView {
    /// The masquerade address.
    #[inline(always)]
    fn nat(&self) -> &[u8; 16] {
        // SAFETY: points into a map value, valid for this program run.
        unsafe { &*self.nat_addr }
    }
}

#[inline(always)]
fn view(ct: *const CtEntry) -> CtView {
    // SAFETY: `ct` is a map value pointer, valid for this program run.
    unsafe {
        CtView {
            nat_addr: &raw const (*ct).nat_addr,
            nh: if (*ct).nh_family == 0 {
                core::ptr::null()
            } else {
                (&raw const (*ct).nh_family).cast()
            },
            lan_ifindex: (*ct).lan_ifindex,
            nat_port: (*ct).nat_port,
            origin: (*ct).origin,
            flags: (*ct).flags,
        }
    }
}

/// Fills the per-CPU scratch entry (a conntrack entry is too big for the BPF stack in the
/// paths that create one) and returns a pointer to it, valid for this program run.
/// [`track`] for a flow without NAT: the reply key is the reversed key. Not inlined, so the
/// reversed key lives in its own stack frame.
#[inline(never)]
fn track_plain<const V4: bool>(key: &FlowKey, entry: Option<*mut CtEntry>) -> Result<(), Counter> {
    track::<V4>(key, &key.reversed(), entry, false)
}

/// [`track_plain`] for a flow of either family.
#[inline(always)]
fn track_plain_any(key: &FlowKey, entry: Option<*mut CtEntry>) -> Result<(), Counter> {
    if key.family == FAMILY_V4 {
        track_plain::<true>(key, entry)
    } else {
        track_plain::<false>(key, entry)
    }
}

#[inline(always)]
fn new_entry(
    org: u8,
    policy_id: u32,
    lan_ifindex: u32,
    flags: u8,
    len: u64,
) -> Option<*mut CtEntry> {
    let e = SCRATCH_CT.get_ptr_mut(0)?;
    let t = now_call();
    // SAFETY: per-CPU scratch slot, used only within this run on this CPU. Zeroes are
    // written volatile: LLVM would merge adjacent zero stores into a call to its byte-loop
    // memset (the BPF backend does not expand memset inline).
    unsafe {
        (*e).created_ns = t;
        (*e).last_seen_ns = t;
        (*e).packets_orig = 1;
        (*e).bytes_orig = len;
        write_volatile(&raw mut (*e).packets_reply, 0);
        write_volatile(&raw mut (*e).bytes_reply, 0);
        put_addr(&raw mut (*e).nat_addr, 0, 0);
        let nh = (&raw mut (*e).nexthop).cast::<u32>();
        write_volatile(nh, 0);
        write_volatile(nh.add(1), 0);
        write_volatile(nh.add(2), 0);
        write_volatile(nh.add(3), 0);
        (*e).policy_id = policy_id;
        (*e).lan_ifindex = lan_ifindex;
        (*e).nat_port = 0;
        (*e).origin = org;
        (*e).flags = flags;
        (*e).nh_family = 0;
        write_volatile(&raw mut (*e).l2_checked_ns, 0);
        let macs = (&raw mut (*e).l2_macs).cast::<u32>();
        write_volatile(macs, 0);
        write_volatile(macs.add(1), 0);
        write_volatile(macs.add(2), 0);
        write_volatile((&raw mut (*e)._pad).cast::<u32>(), 0);
    }
    Some(e)
}

/// The Ethernet header pushed in front of IPv4 packets from an L3 overlay.
static ETH_HDR_V4: [u8; parse::ETH_LEN] = eth_hdr(ETH_P_IP);
/// The same for IPv6.
static ETH_HDR_V6: [u8; parse::ETH_LEN] = eth_hdr(ETH_P_IPV6);

const fn eth_hdr(proto: u16) -> [u8; parse::ETH_LEN] {
    let p = proto.to_be_bytes();
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, p[0], p[1]]
}

/// Pushes an Ethernet header in front of an L3 packet and lets the kernel's neighbour code
/// fill it in on the way out of `ifindex`, towards `nh` when the flow has a recorded next hop
/// (non-null), else towards whatever the kernel's FIB says.
#[inline(always)]
fn redirect_l2(
    ctx: &TcContext,
    ifindex: u32,
    family: u8,
    add_eth: bool,
    nh: *const bpf_redir_neigh,
) -> i32 {
    if add_eth {
        // SAFETY: the skb pointer is the program's context.
        if unsafe { bpf_skb_change_head(ctx.skb.skb, parse::ETH_LEN as u32, 0) } != 0 {
            count(Counter::DropInvalid);
            return SHOT;
        }
        // Zero MAC addresses (the neighbour code fills them in) and the EtherType, written
        // in place (the helper that would store them costs a call).
        let hdr: &[u8; parse::ETH_LEN] = if family == FAMILY_V4 {
            &ETH_HDR_V4
        } else {
            &ETH_HDR_V6
        };
        let (data, end) = (ctx.data(), ctx.data_end());
        if data + parse::ETH_LEN > end {
            count(Counter::DropInvalid);
            return SHOT;
        }
        // SAFETY: ETH_LEN bytes from `data` were checked against data_end just above (after
        // the head moved); unaligned writes are fine for packet data.
        unsafe { core::ptr::write_unaligned(data as *mut [u8; parse::ETH_LEN], *hdr) };
    }
    if !nh.is_null() {
        // SAFETY: `nh` points to a `bpf_redir_neigh` (a map value or the caller's stack) of
        // the size passed; the kernel only reads it.
        return unsafe {
            bpf_redirect_neigh(
                ifindex,
                nh.cast_mut(),
                mem::size_of::<bpf_redir_neigh>() as i32,
                0,
            ) as i32
        };
    }
    // SAFETY: no neighbour parameters are passed (NULL, 0): the kernel resolves the next hop.
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// Sends a packet from a LAN interface into the overlay interface.
#[inline(always)]
fn to_overlay(cfg: &KernelConfig) -> i32 {
    if cfg.overlay_ifindex == 0 {
        count(Counter::DropFib);
        return SHOT;
    }
    if cfg.flags & config_flags::OVERLAY_L2 != 0 {
        // An Ethernet overlay: the frame needs the peer's MAC, which the neighbour code fills.
        // SAFETY: no neighbour parameters are passed (NULL, 0): the kernel resolves the peer.
        return unsafe {
            bpf_redirect_neigh(cfg.overlay_ifindex, core::ptr::null_mut(), 0, 0) as i32
        };
    }
    // SAFETY: plain helper; the kernel strips the Ethernet header for an L3 target.
    unsafe { bpf_redirect(cfg.overlay_ifindex, 0) as i32 }
}

#[inline(always)]
fn clamp(ctx: &TcContext, p: &Parsed, cfg: &KernelConfig) -> Result<(), ()> {
    if p.key.proto != proto::TCP || p.tcp_flags & tcp::SYN == 0 {
        return Ok(());
    }
    let max = if p.key.family == FAMILY_V4 {
        cfg.mss_v4
    } else {
        cfg.mss_v6
    };
    match rewrite::clamp_mss(ctx, p, max) {
        Ok(true) => {
            count(Counter::MssClamped);
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(_) => Err(()),
    }
}

/// TC ingress on the overlay interface.
#[inline(always)]
pub fn overlay_ingress(ctx: &TcContext, l2: bool) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if let Err(e) = parse::parse_code(parse::parse_inline(ctx, l2, &mut p)) {
        return drop_parse(e);
    }
    // SAFETY: parse_inline wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    let cfg = config();
    let len = ctx.len() as u64;
    let key = &p.key;

    if p.icmp == IcmpKind::Error {
        return icmp_error_from_overlay(ctx, p, l2);
    }
    if l2 && p.icmp == IcmpKind::NeighbourDiscovery {
        // IPv6's ARP on an Ethernet overlay: the host answers for the routing peer's address.
        count(Counter::PassHost);
        return OK;
    }

    // 1. Original direction of a flow opened from the overlay.
    if let Some(ct) = ct::get(key) {
        let e = view(ct);
        if e.origin != origin::OVERLAY {
            // Only the routing peer or a LAN host can send with this source: spoofed.
            count(Counter::DropInvalid);
            return SHOT;
        }
        touch(ct, len, p.key.proto, p.tcp_flags);
        count(Counter::Established);
        if e.flags & ct_flags::LOCAL != 0 {
            return OK;
        }
        // COMPLETE: the overlay device may hand over a receive checksum (an Ethernet
        // overlay, or an L3 tunnel such as GRE), and the LAN side may be a veth whose
        // receiver checks it; a TUN never does (the agent says so with OVERLAY_TUN).
        let complete = cfg.flags & config_flags::OVERLAY_TUN == 0;
        if e.flags & ct_flags::SNAT != 0
            && !(key.family == FAMILY_V4
                && rewrite::rewrite_direct(ctx, p, true, e.nat(), e.nat_port, complete))
            && rewrite::rewrite_side(
                ctx,
                p,
                rewrite::SRC | rewrite::DIRECT | if complete { rewrite::COMPLETE } else { 0 },
                e.nat(),
                e.nat_port,
            )
            .is_err()
        {
            count(Counter::DropInvalid);
            return SHOT;
        }
        if clamp(ctx, p, cfg).is_err() {
            count(Counter::DropInvalid);
            return SHOT;
        }
        return redirect_l2(ctx, e.lan_ifindex, key.family, !l2, e.nh);
    }

    // 2. Reply direction of a flow opened from a LAN (Site-to-VPN) or by the routing peer.
    if let Some(r) = ct::by_reply(key) {
        match r.origin() {
            origin::HOST => {
                if touch_reply(&r, len, p.key.proto, p.tcp_flags) {
                    count(Counter::Established);
                    return OK;
                }
            }
            origin::LAN => {
                // Forwarding needs the flow's LAN interface and next hop: its own entry.
                if let Some(ct) = r.entry() {
                    let e = view(ct);
                    touch_reply(&r, len, p.key.proto, p.tcp_flags);
                    count(Counter::Established);
                    if clamp(ctx, p, cfg).is_err() {
                        count(Counter::DropInvalid);
                        return SHOT;
                    }
                    return redirect_l2(ctx, e.lan_ifindex, key.family, !l2, e.nh);
                }
            }
            _ => {}
        }
    }

    // 3. A new flow: policy and setup in their own program (and stack frame).
    let slot = if l2 {
        calls::NEW_FLOW_L2
    } else {
        calls::NEW_FLOW_L3
    };
    // SAFETY: tail call with the program's own context; returns only when it fails.
    unsafe { CALLS.tail_call(ctx, slot) };
    count(Counter::DropNoProgram);
    SHOT
}

/// A packet of the overlay that belongs to no tracked flow (tail-called from
/// [`overlay_ingress`], which classified it so).
#[inline(always)]
pub fn overlay_new(ctx: &TcContext, l2: bool) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if let Err(e) = parse::parse_code(parse::parse_into(ctx, l2, &mut p)) {
        return drop_parse(e);
    }
    // SAFETY: parse_into wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    // One copy of the new-flow code per family (see `ct`).
    if p.key.family == FAMILY_V4 {
        new_overlay_flow::<true>(ctx, p, config(), l2)
    } else {
        new_overlay_flow::<false>(ctx, p, config(), l2)
    }
}

/// Policy check and setup of a flow opened from the overlay.
#[inline(never)]
fn new_overlay_flow<const V4: bool>(
    ctx: &TcContext,
    p: &Parsed,
    cfg: &KernelConfig,
    l2: bool,
) -> i32 {
    let key = &p.key;
    let len = ctx.len() as u64;
    if let Err(c) = may_open(p) {
        return deny(cfg, c, key, 0, origin::OVERLAY);
    }
    let Some(identity) = identity_of(key) else {
        return deny(cfg, Counter::DropUnknownSource, key, 0, origin::OVERLAY);
    };
    let Some(dest) = dest_of(key) else {
        return deny(cfg, Counter::DropNoRoute, key, 0, origin::OVERLAY);
    };
    if dest.kind != dest_kind::LOCAL && dest.kind != dest_kind::RESOURCE {
        return deny(cfg, Counter::DropNoRoute, key, 0, origin::OVERLAY);
    }
    let pol = match policy_of(identity, dest.dest_id, key) {
        Some(v) if v.action == action::ACCEPT => v,
        Some(v) => {
            return deny(
                cfg,
                Counter::DropPolicyDeny,
                key,
                v.policy_id,
                origin::OVERLAY,
            );
        }
        None => return deny(cfg, Counter::DropNoPolicy, key, 0, origin::OVERLAY),
    };

    if dest.kind == dest_kind::LOCAL {
        let entry = new_entry(
            origin::OVERLAY,
            pol.policy_id,
            0,
            ct_flags::LOCAL | ct_flags::TCP_SYN,
            len,
        );
        if let Err(c) = track_plain::<V4>(key, entry) {
            return deny(cfg, c, key, pol.policy_id, origin::OVERLAY);
        }
        accepted(cfg, key, pol.policy_id, origin::OVERLAY, len);
        count(Counter::DeliverLocal);
        return OK;
    }

    let mut route = MaybeUninit::<Route>::uninit();
    let ifindex = fib_into(ctx, key, &mut route);
    if ifindex == 0 {
        return deny(cfg, Counter::DropFib, key, pol.policy_id, origin::OVERLAY);
    }
    // SAFETY: fib_into wrote the route (it returned an interface).
    let route = unsafe { route.assume_init_ref() };
    // SAFETY: reading the context's ingress interface.
    if ifindex == unsafe { (*ctx.skb.skb).ifindex } {
        // The route points back into the overlay: never loop.
        return deny(cfg, Counter::DropFib, key, pol.policy_id, origin::OVERLAY);
    }
    let syn = if key.proto == proto::TCP {
        ct_flags::TCP_SYN
    } else {
        0
    };
    if dest.flags & dest_flags::MASQUERADE != 0 {
        // The reply key lives in per-CPU scratch space: this frame is part of a call chain
        // whose stack the verifier limits to 512 bytes.
        let Some(rk) = SCRATCH_KEY.get_ptr_mut(0) else {
            return deny(
                cfg,
                Counter::DropCtFull,
                key,
                pol.policy_id,
                origin::OVERLAY,
            );
        };
        // SAFETY: per-CPU scratch slot, used only within this run on this CPU; MaybeUninit
        // has the layout of FlowKey.
        let got = alloc_nat_into::<V4>(cfg, key, &route.src, unsafe { &mut *rk.cast() });
        if got == 0 {
            return deny(
                cfg,
                Counter::DropNatExhausted,
                key,
                pol.policy_id,
                origin::OVERLAY,
            );
        }
        // SAFETY: alloc_nat_into wrote the reply key (it returned a port).
        let rk = unsafe { &*rk };
        let port = (got & 0xffff) as u16;
        let entry = new_entry(
            origin::OVERLAY,
            pol.policy_id,
            ifindex,
            ct_flags::SNAT | syn,
            len,
        );
        if let Some(e) = entry {
            // SAFETY: the scratch slot returned by `new_entry`.
            unsafe {
                (*e).nat_addr = route.src;
                (*e).nat_port = port;
                (*e).nh_family = route.nh.nh_family;
                (*e).nexthop =
                    mem::transmute::<[u32; 4], [u8; 16]>(route.nh.__bindgen_anon_1.ipv6_nh);
            }
        }
        if let Err(c) = track::<V4>(key, rk, entry, true) {
            return deny(cfg, c, key, pol.policy_id, origin::OVERLAY);
        }
        // A racing CPU may have created the flow with another mapping: use what is stored.
        let (naddr, nport) = match ct::get_in::<V4>(key) {
            // SAFETY: map value pointer, valid for this run.
            Some(e) => unsafe { ((*e).nat_addr, (*e).nat_port) },
            None => (route.src, port),
        };
        if rewrite::rewrite_side(ctx, p, rewrite::SRC, &naddr, nport).is_err() {
            count(Counter::DropInvalid);
            return SHOT;
        }
    } else {
        let entry = new_entry(origin::OVERLAY, pol.policy_id, ifindex, syn, len);
        if let Some(e) = entry {
            // SAFETY: the scratch slot returned by `new_entry`.
            unsafe {
                (*e).nh_family = route.nh.nh_family;
                (*e).nexthop =
                    mem::transmute::<[u32; 4], [u8; 16]>(route.nh.__bindgen_anon_1.ipv6_nh);
            }
        }
        if let Err(c) = track_plain::<V4>(key, entry) {
            return deny(cfg, c, key, pol.policy_id, origin::OVERLAY);
        }
    }
    accepted(cfg, key, pol.policy_id, origin::OVERLAY, len);
    if clamp(ctx, p, cfg).is_err() {
        count(Counter::DropInvalid);
        return SHOT;
    }
    let nh: *const bpf_redir_neigh = if route.nh.nh_family == 0 {
        core::ptr::null()
    } else {
        &route.nh
    };
    redirect_l2(ctx, ifindex, key.family, !l2, nh)
}

#[inline(always)]
fn accepted(cfg: &KernelConfig, key: &FlowKey, policy_id: u32, org: u8, len: u64) {
    count(Counter::AcceptNew);
    policy_stat(policy_id, true);
    if cfg.flags & config_flags::START_EVENTS != 0 {
        emit(event_kind::START, 0, key, policy_id, org, 1, len);
    }
}

/// An ICMP error arriving from the overlay about a reply it received (e.g. port
/// unreachable): translate the quoted reply back to what the LAN host sent.
#[inline(never)]
fn icmp_error_from_overlay(ctx: &TcContext, p: &Parsed, l2: bool) -> i32 {
    let Ok(inner) = parse::parse_inner(ctx, p) else {
        count(Counter::DropInvalid);
        return SHOT;
    };
    // The quoted packet is a reply as the client saw it; reversed, it is the original key.
    let Some(ct) = ct::get(&inner.key.reversed()) else {
        count(Counter::DropInvalid);
        return SHOT;
    };
    let e = view(ct);
    if e.origin != origin::OVERLAY || e.flags & ct_flags::LOCAL != 0 {
        // Errors about the routing peer's own traffic go to its stack.
        count(Counter::IcmpRelated);
        return OK;
    }
    if e.flags & ct_flags::SNAT != 0
        && rewrite::translate_icmp_error(ctx, p, &inner, false, e.nat(), e.nat_port).is_err()
    {
        count(Counter::DropInvalid);
        return SHOT;
    }
    count(Counter::IcmpRelated);
    redirect_l2(ctx, e.lan_ifindex, p.key.family, !l2, e.nh)
}

/// TC egress on the overlay interface: flows the routing peer itself opens to the overlay
/// get a conntrack entry so their replies pass the ingress program.
#[inline(always)]
pub fn overlay_egress(ctx: &TcContext, l2: bool) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if parse::parse_into(ctx, l2, &mut p) != 0 {
        return OK;
    }
    // SAFETY: parse_into wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    let key = &p.key;
    if p.icmp == IcmpKind::Error {
        return OK;
    }
    let len = ctx.len() as u64;
    // Reply of a flow opened from the overlay (delivered locally or forwarded without NAT).
    if let Some(r) = ct::by_reply(key)
        && touch_reply(&r, len, p.key.proto, p.tcp_flags)
    {
        return OK;
    }
    // Reply of a masqueraded flow, after the LAN program undid the NAT (and accounted it).
    if ct::get(&key.reversed()).is_some() {
        return OK;
    }
    if let Some(ct) = ct::get(key) {
        touch(ct, len, p.key.proto, p.tcp_flags);
        return OK;
    }
    if may_open(p).is_ok() {
        let syn = if key.proto == proto::TCP {
            ct_flags::TCP_SYN
        } else {
            0
        };
        let entry = new_entry(origin::HOST, 0, 0, syn, len);
        let _ = track_plain_any(key, entry);
    }
    OK
}

/// TC ingress on a LAN interface.
#[inline(always)]
pub fn lan_ingress(ctx: &TcContext) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if parse::parse_inline(ctx, true, &mut p) != 0 {
        // Not ours to judge: the host's own traffic must never break.
        count(Counter::PassHost);
        return OK;
    }
    // SAFETY: parse_inline wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    let cfg = config();
    let key = &p.key;
    let len = ctx.len() as u64;

    if p.icmp == IcmpKind::Error {
        return lan_other_call(ctx, key);
    }

    // 1. Reply of a flow opened from the overlay: reverse NAT, into the overlay.
    if let Some(r) = ct::by_reply(key) {
        let kind = r.kind();
        if r.origin() == origin::OVERLAY
            && kind & ct_flags::LOCAL == 0
            && touch_reply(&r, len, p.key.proto, p.tcp_flags)
        {
            count(Counter::Established);
            // Into a TUN the skb's receive checksum is never looked at again; an Ethernet
            // overlay's receiver may check it.
            let complete = cfg.flags & config_flags::OVERLAY_L2 != 0;
            if kind & ct_flags::SNAT != 0
                && !(key.family == FAMILY_V4
                    && rewrite::rewrite_direct(ctx, p, false, &r.saddr, r.sport, complete))
                && rewrite::rewrite_side(
                    ctx,
                    p,
                    rewrite::DIRECT | if complete { rewrite::COMPLETE } else { 0 },
                    &r.saddr,
                    r.sport,
                )
                .is_err()
            {
                count(Counter::DropInvalid);
                return SHOT;
            }
            if clamp(ctx, p, cfg).is_err() {
                count(Counter::DropInvalid);
                return SHOT;
            }
            return to_overlay(cfg);
        }
    }

    // 2. Original direction of a flow this LAN opened (Site-to-VPN).
    if let Some(ct) = ct::get(key) {
        // SAFETY: map value pointer, valid for this run.
        if unsafe { (*ct).origin } == origin::LAN {
            touch(ct, len, p.key.proto, p.tcp_flags);
            count(Counter::Established);
            return to_overlay(cfg);
        }
    }

    // 3. Anything else in its own program (and stack frame).
    lan_other_call(ctx, key)
}

/// Tail-calls [`lan_other`]. Should its program be missing, packets towards overlay peers are
/// dropped (they would need a policy check) and the rest passes to the host as always.
#[inline(always)]
fn lan_other_call(ctx: &TcContext, key: &FlowKey) -> i32 {
    // SAFETY: tail call with the program's own context; returns only when it fails.
    unsafe { CALLS.tail_call(ctx, calls::LAN_OTHER) };
    match dest_of(key) {
        Some(d) if d.kind == dest_kind::PEER => {
            count(Counter::DropNoProgram);
            SHOT
        }
        _ => {
            count(Counter::PassHost);
            OK
        }
    }
}

/// A LAN packet of no tracked flow (tail-called from [`lan_ingress`]): an ICMP error about a
/// flow we forwarded, a Site-to-VPN flow, or the host's own traffic.
#[inline(always)]
pub fn lan_other(ctx: &TcContext) -> i32 {
    let mut p = MaybeUninit::<Parsed>::uninit();
    if parse::parse_into(ctx, true, &mut p) != 0 {
        count(Counter::PassHost);
        return OK;
    }
    // SAFETY: parse_into wrote every field (it returned success).
    let p = unsafe { p.assume_init_ref() };
    let cfg = config();
    if p.icmp == IcmpKind::Error {
        return icmp_error_from_lan(ctx, p, cfg);
    }
    // New flows towards overlay peers need a policy; anything else is not ours.
    new_lan_flow(ctx, p, cfg)
}

/// Site-to-VPN: a LAN host opening a flow to an overlay peer needs a policy.
#[inline(never)]
fn new_lan_flow(ctx: &TcContext, p: &Parsed, cfg: &KernelConfig) -> i32 {
    let key = &p.key;
    let len = ctx.len() as u64;
    let Some(dest) = dest_of(key) else {
        count(Counter::PassHost);
        return OK;
    };
    if dest.kind != dest_kind::PEER {
        count(Counter::PassHost);
        return OK;
    }
    if let Err(c) = may_open(p) {
        return deny(cfg, c, key, 0, origin::LAN);
    }
    let Some(identity) = identity_of(key) else {
        return deny(cfg, Counter::DropUnknownSource, key, 0, origin::LAN);
    };
    let pol = match policy_of(identity, dest.dest_id, key) {
        Some(v) if v.action == action::ACCEPT => v,
        Some(v) => return deny(cfg, Counter::DropPolicyDeny, key, v.policy_id, origin::LAN),
        None => return deny(cfg, Counter::DropNoPolicy, key, 0, origin::LAN),
    };
    let syn = if key.proto == proto::TCP {
        ct_flags::TCP_SYN
    } else {
        0
    };
    // SAFETY: reading the context's ingress interface.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let entry = new_entry(origin::LAN, pol.policy_id, ifindex, syn, len);
    if let Err(c) = track_plain_any(key, entry) {
        return deny(cfg, c, key, pol.policy_id, origin::LAN);
    }
    accepted(cfg, key, pol.policy_id, origin::LAN, len);
    to_overlay(cfg)
}

/// An ICMP error arriving on a LAN about a packet we forwarded (e.g. fragmentation needed,
/// port unreachable): translate the quoted packet and send the error to the overlay client.
#[inline(never)]
fn icmp_error_from_lan(ctx: &TcContext, p: &Parsed, cfg: &KernelConfig) -> i32 {
    let Ok(inner) = parse::parse_inner(ctx, p) else {
        count(Counter::PassHost);
        return OK;
    };
    // The quoted packet is one we sent (after NAT); reversed, it is the reply key.
    let Some(orig) = ct::by_reply(&inner.key.reversed()) else {
        count(Counter::PassHost);
        return OK;
    };
    let kind = orig.kind();
    if orig.origin() != origin::OVERLAY || kind & ct_flags::LOCAL != 0 {
        count(Counter::PassHost);
        return OK;
    }
    if kind & ct_flags::SNAT != 0
        && rewrite::translate_icmp_error(ctx, p, &inner, true, &orig.saddr, orig.sport).is_err()
    {
        count(Counter::DropInvalid);
        return SHOT;
    }
    count(Counter::IcmpRelated);
    to_overlay(cfg)
}
