//! What the programs report to the agent: owns the per-CPU packet counters (`SG_COUNTERS`,
//! [`count`]), the per-policy statistics (`SG_POLICY_STATS`, [`policy_stat`]) and the flow
//! event ring buffer (`SG_EVENTS`, [`emit`]).

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
};
use swiftgate_common::{COUNTER_SLOTS, Counter, FlowEvent, FlowKey, PolicyStats, capacity};

use crate::clock::now_call;

#[map(name = "SG_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_SLOTS, 0);
#[map(name = "SG_POLICY_STATS")]
static POLICY_STATS: PerCpuHashMap<u32, PolicyStats> =
    PerCpuHashMap::pinned(capacity::POLICY_STATS, 0);
#[map(name = "SG_EVENTS")]
static EVENTS: RingBuf = RingBuf::pinned(capacity::EVENTS_BYTES, 0);

const _: () = assert!(COUNTER_SLOTS as usize == Counter::ALL.len());

#[inline(always)]
pub(crate) fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn emit(
    kind: u8,
    reason: u8,
    key: &FlowKey,
    policy_id: u32,
    org: u8,
    packets: u64,
    bytes: u64,
) {
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
pub(crate) fn policy_stat(policy_id: u32, accepted: bool) {
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
