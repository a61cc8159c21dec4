//! The policy the agent compiled from the management map, as the programs look it up: owns
//! the identity tries (`SG_IDENTITY_V4`/`_V6`: source address to identity), the destination
//! tries (`SG_DEST_V4`/`_V6`: destination address to destination id, kind and flags) and the
//! policy trie (`SG_POLICY`: identity, destination, protocol and port to a verdict). The agent
//! is their only writer.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use swiftgate_common::{
    DestValue, FAMILY_V4, FlowKey, IdentityValue, POLICY_PREFIX_FULL, PolicyKey, PolicyValue,
    capacity, proto,
};

use crate::parse::v4;

#[map(name = "SG_IDENTITY_V4")]
static IDENTITY_V4: LpmTrie<[u8; 4], IdentityValue> = LpmTrie::pinned(capacity::IDENTITY, 0);
#[map(name = "SG_IDENTITY_V6")]
static IDENTITY_V6: LpmTrie<[u8; 16], IdentityValue> = LpmTrie::pinned(capacity::IDENTITY, 0);
#[map(name = "SG_DEST_V4")]
static DEST_V4: LpmTrie<[u8; 4], DestValue> = LpmTrie::pinned(capacity::DEST, 0);
#[map(name = "SG_DEST_V6")]
static DEST_V6: LpmTrie<[u8; 16], DestValue> = LpmTrie::pinned(capacity::DEST, 0);
#[map(name = "SG_POLICY")]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::pinned(capacity::POLICY, 0);

/// The identity of the flow's source address.
#[inline(always)]
pub(crate) fn identity_of(key: &FlowKey) -> Option<u32> {
    let v = if key.family == FAMILY_V4 {
        IDENTITY_V4.get(Key::new(32, v4(&key.saddr)))
    } else {
        IDENTITY_V6.get(Key::new(128, key.saddr))
    };
    v.map(|v| v.identity)
}

/// The destination the flow's destination address belongs to.
#[inline(always)]
pub(crate) fn dest_of(key: &FlowKey) -> Option<DestValue> {
    let v = if key.family == FAMILY_V4 {
        DEST_V4.get(Key::new(32, v4(&key.daddr)))
    } else {
        DEST_V6.get(Key::new(128, key.daddr))
    };
    v.copied()
}

/// Looks up the policy verdict for a new flow from `identity` to `dest`.
#[inline(always)]
pub(crate) fn policy_of(identity: u32, dest: u32, key: &FlowKey) -> Option<PolicyValue> {
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
