//! One's-complement checksum arithmetic for rewrites done in the program itself (the XDP
//! stage, and the IPv4 header checksum of the TC rewrites), on 16-bit words as stored in the
//! packet: the sum does not depend on the byte order as long as every word is read the same way.

/// `check` after the 16-bit words `old` became `new` (RFC 1624: HC' = ~(~HC + ~m + m')).
#[inline(always)]
pub(crate) fn update<const N: usize>(check: u16, old: &[u16; N], new: &[u16; N]) -> u16 {
    let mut s = (!check) as u32;
    for i in 0..N {
        s += (!old[i]) as u32 + new[i] as u32;
    }
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
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
