//! Random ids for entities and setup keys, and the hash setup keys are stored under.

use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS random source does not fail on Linux once booted; if it ever does, ids must
    // still be unique, so fall back to time and a counter rather than panic.
    if getrandom::fill(&mut b).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let c = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut h = Sha256::new();
        h.update(t.to_le_bytes());
        h.update(c.to_le_bytes());
        let d = h.finalize();
        for (i, x) in b.iter_mut().enumerate() {
            *x = d[i % d.len()];
        }
    }
    b
}

/// A random /16 inside 100.64.0.0/10 (one of 64), as NetBird's `NewNetwork` picks an
/// account's overlay network.
pub fn random_overlay_v4() -> ipnet::Ipv4Net {
    let [b] = random_bytes::<1>();
    ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(100, 64 + (b & 63), 0, 0), 16)
        .expect("16 is a valid prefix length")
}

/// A random RFC 4193 ULA /64: `fd`, a 40-bit global id and a 16-bit subnet id, all random, as
/// NetBird's `AllocateIPv6Subnet`.
pub fn random_overlay_v6() -> ipnet::Ipv6Net {
    let r = random_bytes::<7>();
    let mut o = [0u8; 16];
    o[0] = 0xfd;
    o[1..8].copy_from_slice(&r);
    ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(o), 64).expect("64 is a valid prefix length")
}

#[cfg(test)]
thread_local! {
    /// Tests that need reproducible output (golden network maps) number ids instead.
    static SEQUENCE: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// From now on, on this thread, [`new_id`] returns `prefix-0000000000000001`, `...02`, ...
/// (tests only: each test runs on its own thread).
#[cfg(test)]
pub fn use_sequential_ids() {
    SEQUENCE.with(|s| s.set(Some(0)));
}

/// A new id: `prefix` + `-` + 16 base32 characters (80 random bits).
pub fn new_id(prefix: &str) -> String {
    #[cfg(test)]
    if let Some(n) = SEQUENCE.with(|s| s.get()) {
        SEQUENCE.with(|s| s.set(Some(n + 1)));
        return format!("{prefix}-{:016}", n + 1);
    }
    let b = random_bytes::<16>();
    let mut s = String::with_capacity(prefix.len() + 17);
    s.push_str(prefix);
    s.push('-');
    for x in b {
        s.push(ALPHABET[(x & 31) as usize] as char);
    }
    s
}

/// A new setup key: a random UUID v4 in canonical lower-case text, as NetBird's agents send it.
pub fn new_setup_key() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Hex SHA-256 of the lower-cased, trimmed key (keys compare case-insensitively).
pub fn hash_setup_key(key: &str) -> String {
    let d = Sha256::digest(key.trim().to_ascii_lowercase().as_bytes());
    d.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys() {
        let a = new_id("grp");
        assert!(a.starts_with("grp-") && a.len() == 20);
        assert_ne!(a, new_id("grp"));
        let k = new_setup_key();
        assert_eq!(k.len(), 36);
        assert_eq!(&k[14..15], "4");
        assert_eq!(hash_setup_key(&k), hash_setup_key(&k.to_uppercase()));
    }
}
