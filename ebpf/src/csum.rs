//! One's-complement checksum arithmetic for rewrites done in the program itself (the XDP
//! stage's NAT, the TC programs' in-place NAT of established flows, and the IPv4 header
//! checksum of their helper path), on 16-bit words as stored in the packet: the sum does not
//! depend on the byte order as long as every word is read the same way.

use core::mem;

use swiftgate_common::FlowKey;

use crate::parse::bytes;

/// What the change of the 16-bit words `old` to `new` adds to a one's-complement sum
/// (`~m + m'` per word, not yet folded).
#[inline(always)]
pub(crate) fn diff<const N: usize>(old: &[u16; N], new: &[u16; N]) -> u32 {
    let mut d = 0u32;
    for i in 0..N {
        d += (!old[i]) as u32 + new[i] as u32;
    }
    d
}

/// `check` after words changed by `d` (a sum of [`diff`]s; RFC 1624: HC' = ~(~HC + ~m + m')).
#[inline(always)]
pub(crate) fn apply(check: u16, d: u32) -> u16 {
    let mut s = (!check) as u32 + d;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// `check` after the 16-bit words `old` became `new`.
#[inline(always)]
pub(crate) fn update<const N: usize>(check: u16, old: &[u16; N], new: &[u16; N]) -> u16 {
    apply(check, diff(old, new))
}

/// The 16-bit words of an address as stored.
#[inline(always)]
pub(crate) fn words<const N: usize, const W: usize>(a: &[u8; N]) -> [u16; W] {
    let mut w = [0u16; W];
    for i in 0..W {
        w[i] = u16::from_ne_bytes([a[2 * i], a[2 * i + 1]]);
    }
    w
}

/// Reads the 16-bit word at `at` as stored (the byte order checksums are computed in).
///
/// # Safety
/// As [`bytes`].
#[inline(always)]
pub(crate) unsafe fn word(at: usize) -> u16 {
    // SAFETY: as the caller guarantees.
    u16::from_ne_bytes(unsafe { bytes::<2>(at) })
}

/// Whether the L4 checksum field holds only the pseudo-header seed that checksum offload
/// leaves for the device to complete (`CHECKSUM_PARTIAL`: a local sender behind a veth).
/// Neither the XDP stage nor a TC program can read the skb's checksum state; a packet that
/// looks like this is left to the checksum helpers, which know the state (in XDP: to the TC
/// program). A complete checksum equals the seed only by chance (about 1 in 65,536 packets,
/// which then take the helper path too, still correctly).
#[inline(always)]
pub(crate) fn looks_partial(key: &FlowKey, l4_len: u16, check: u16) -> bool {
    // One's complement sum of the pseudo-header, taken over the key's addresses as 32-bit
    // halves of 64-bit words (FlowKey is 8-byte aligned; an IPv4 key's unused address bytes
    // are zero, so one formula serves both families), then folded to 16 bits.
    // SAFETY: [u8; 16] and [u64; 2] have the same size; any bit pattern is valid.
    let (sa, da) = unsafe {
        (
            mem::transmute::<[u8; 16], [u64; 2]>(key.saddr),
            mem::transmute::<[u8; 16], [u64; 2]>(key.daddr),
        )
    };
    let mut s = 0u64;
    for w in [sa[0], sa[1], da[0], da[1]] {
        s += (w & 0xffff_ffff) + (w >> 32);
    }
    s += u16::from_ne_bytes([0, key.proto]) as u64;
    s += u16::from_ne_bytes(l4_len.to_be_bytes()) as u64;
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    let seed = s as u16;
    check == seed || (seed == 0xffff && check == 0) || (seed == 0 && check == 0xffff)
}
