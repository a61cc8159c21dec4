//! Masquerade (source NAT) of flows to routed resources: owns the allocation of masquerade
//! ports and the reply keys they give, and `SG_SCRATCH_KEY`, the per-CPU slot the candidate
//! reply key is built in. The port reservation itself is the flow's reply entry (see `ct`).

use core::{mem::MaybeUninit, num::NonZeroU32};

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32, macros::map, maps::PerCpuArray,
};
use swiftgate_common::{FlowKey, KernelConfig, ct_flags, origin, proto};

use crate::{
    admit,
    ct::{self, Insert},
};

/// Per-CPU scratch space for a flow key (keeps it off the stack of the new-flow path).
#[map(name = "SG_SCRATCH_KEY")]
static SCRATCH_KEY: PerCpuArray<FlowKey> = PerCpuArray::with_max_entries(1, 0);

/// Masquerade port probes before giving up.
const NAT_PROBES: u32 = 16;

/// Bit in [`alloc_nat_into`]'s result: a port was reserved (the low 16 bits).
pub(crate) const NAT_GOT: u32 = 1 << 16;
/// Bit in [`alloc_nat_into`]'s result: no port reserved because the reply table is full and
/// nothing in it could be replaced (not because the ports are taken).
pub(crate) const NAT_TABLE_FULL: u32 = 1 << 17;

/// This CPU's slot for the reply key of a masqueraded flow (see [`alloc_nat_into`]).
#[inline(always)]
pub(crate) fn reply_key_slot() -> Option<*mut FlowKey> {
    SCRATCH_KEY.get_ptr_mut(0)
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
/// returns the port with [`NAT_GOT`] set, [`NAT_TABLE_FULL`] when the reply table is full
/// (after one early drop failed to make room), or 0 when no port is free. Not inlined (its
/// own stack frame).
#[inline(never)]
pub(crate) fn alloc_nat_into<const V4: bool>(
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
        let mut got = ct::reply_insert::<V4>(&scratch, r, BPF_NOEXIST as u64);
        if got == Insert::Full {
            // Only the first probe makes room: a table still full after it stays full.
            if i == 0 && admit::early_drop::<V4>() {
                got = ct::reply_insert::<V4>(&scratch, r, BPF_NOEXIST as u64);
            }
            if got == Insert::Full {
                return NAT_TABLE_FULL;
            }
        }
        if got == Insert::Done {
            return port as u32 | NAT_GOT;
        }
        if !has_ports {
            break;
        }
        port = (min + (seed.wrapping_add(i.wrapping_mul(7919)) % span)) as u16;
    }
    0
}
