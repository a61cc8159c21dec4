//! Refusing replayed management envelopes, and bounding setup-key guesses. Sans-IO: every
//! decision takes the time from the caller.
//!
//! A sealed request (Login, Sync, SyncMeta, Logout) is a NaCl box under a random 24-byte
//! nonce. Anyone who saw one on the wire can send it again, and the server cannot tell it from
//! the peer's own. [`ReplayGuard`] refuses
//!
//! - any envelope whose nonce it has seen from the same peer key within [`WINDOW_SECS`], and
//! - an envelope that carries swiftgate's sealed send time (`swiftgateSentAt`, which every
//!   swiftgate agent seals in) more than [`MAX_SKEW_SECS`] away from now.
//!
//! So a swiftgate agent's envelope can never be replayed (older than the skew: refused by its
//! time; younger: by its nonce). NetBird's agents send no time; theirs are refused while the
//! nonce is remembered (the window, in memory: not across a restart of the server), which is
//! the most a server can do for them without changing their protocol.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// How long a nonce is remembered, in seconds.
pub const WINDOW_SECS: u64 = 15 * 60;
/// How far a sealed send time may be from the server's clock, in seconds.
pub const MAX_SKEW_SECS: u64 = 5 * 60;
/// Nonces remembered per peer key (a peer sends a few requests a minute).
pub const MAX_PER_KEY: usize = 4_096;
/// Registered peers' keys remembered at once; beyond it the least recently used key's nonces
/// are forgotten.
pub const MAX_KEYS: usize = 65_536;
/// Unregistered keys (registrations) remembered at once. Anyone can make keys, so they have a
/// table of their own that cannot push registered peers' nonces out; when it is full of
/// unexpired entries, further registrations are refused until it drains.
pub const MAX_STRANGERS: usize = 16_384;

/// Why an envelope is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// This nonce came from this key before.
    #[error("this sealed request was received before (replayed)")]
    SeenNonce,
    /// Too many unregistered keys at once: refused rather than forgetting a nonce.
    #[error("too many registrations at once; try again in a few minutes")]
    Busy,
    /// The sealed send time is too far from now.
    #[error(
        "this sealed request was sent at {sent_at}, more than {MAX_SKEW_SECS} s from the \
         server's time {now} (replayed, or a clock is wrong)"
    )]
    Stale {
        /// Sealed send time.
        sent_at: i64,
        /// Server time.
        now: u64,
    },
}

/// Nonces seen per peer key, in arrival order: registered peers' keys and unregistered keys
/// apart.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    keys: HashMap<[u8; 32], VecDeque<(u64, [u8; 24])>>,
    /// Keys in the order they were last used (oldest first), for the key bound.
    order: VecDeque<([u8; 32], u64)>,
    /// Unregistered keys' nonces, with the time each key was last seen.
    strangers: HashMap<[u8; 32], (u64, Vec<[u8; 24]>)>,
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one opened envelope of `key` under `nonce`, sealed at `sent_at` (0: not
    /// sent) and received at `now`; remembers the nonce if it passes. `registered`: the key
    /// is a peer of the account.
    pub fn check(
        &mut self,
        key: [u8; 32],
        nonce: [u8; 24],
        sent_at: i64,
        now: u64,
        registered: bool,
    ) -> Result<(), Replay> {
        if sent_at != 0 && sent_at.abs_diff(now as i64) > MAX_SKEW_SECS {
            return Err(Replay::Stale { sent_at, now });
        }
        if !registered {
            return self.check_stranger(key, nonce, now);
        }
        // A key seen while unregistered keeps its nonces when it registers (all of them,
        // before the check below refuses a repeat).
        if let Some((_, old)) = self.strangers.remove(&key) {
            let q = self.keys.entry(key).or_default();
            q.extend(old.into_iter().map(|n| (now, n)));
        }
        let seen = self.keys.entry(key).or_default();
        while seen.front().is_some_and(|(t, _)| now >= t + WINDOW_SECS) {
            seen.pop_front();
        }
        if seen.iter().any(|(_, n)| *n == nonce) {
            return Err(Replay::SeenNonce);
        }
        if seen.len() >= MAX_PER_KEY {
            seen.pop_front();
        }
        seen.push_back((now, nonce));
        self.order.push_back((key, now));
        self.forget(now);
        Ok(())
    }

    fn check_stranger(&mut self, key: [u8; 32], nonce: [u8; 24], now: u64) -> Result<(), Replay> {
        if self
            .keys
            .get(&key)
            .is_some_and(|q| q.iter().any(|(_, n)| *n == nonce))
        {
            return Err(Replay::SeenNonce);
        }
        if let Some((t, seen)) = self.strangers.get_mut(&key) {
            // The key's first nonce is older than the window: start its list anew.
            if now >= *t + WINDOW_SECS {
                *t = now;
                seen.clear();
            }
            if seen.contains(&nonce) {
                return Err(Replay::SeenNonce);
            }
            if seen.len() >= 64 {
                return Err(Replay::Busy);
            }
            seen.push(nonce);
            return Ok(());
        }
        if self.strangers.len() >= MAX_STRANGERS {
            self.strangers.retain(|_, (t, _)| now < *t + WINDOW_SECS);
            if self.strangers.len() >= MAX_STRANGERS {
                return Err(Replay::Busy);
            }
        }
        self.strangers.insert(key, (now, vec![nonce]));
        Ok(())
    }

    /// Drops keys idle for the window, and the least recently used keys beyond
    /// [`MAX_KEYS`].
    fn forget(&mut self, now: u64) {
        while let Some(&(k, t)) = self.order.front() {
            let over = self.keys.len() > MAX_KEYS;
            let idle = now >= t + WINDOW_SECS;
            if !over && !idle && self.order.len() <= 4 * MAX_KEYS {
                break;
            }
            self.order.pop_front();
            // Only the key's last use in `order` decides whether it goes.
            let last = self
                .keys
                .get(&k)
                .and_then(|q| q.back())
                .map_or(0, |(t, _)| *t);
            if (over || idle) && last <= t {
                self.keys.remove(&k);
            }
        }
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }
}

/// Failed registrations (unknown key, setup key refused) allowed per source address per
/// [`GUESS_WINDOW_SECS`].
pub const MAX_GUESSES: u32 = 10;
/// The window of [`MAX_GUESSES`], in seconds.
pub const GUESS_WINDOW_SECS: u64 = 60;
/// Source addresses tracked at once; beyond it the table is cleared of expired windows, and
/// if still full, new addresses are limited as one.
pub const MAX_SOURCES: usize = 65_536;

/// What one source is: an IPv4 address, or an IPv6 /64 (one host holds a whole /64, so
/// counting single v6 addresses would let it rotate past the limit).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
    }
}

/// Counts failed setup-key registrations per source address and refuses more than
/// [`MAX_GUESSES`] per window from one address. A setup key is a UUID (122 random bits), so
/// this only bounds the noise and the work guesses cause; it is not what keeps keys secret.
#[derive(Debug, Default)]
pub struct GuessLimiter {
    sources: HashMap<IpAddr, (u64, u32)>,
}

impl GuessLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&mut self, from: IpAddr, now: u64) -> &mut (u64, u32) {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&from) {
            self.sources
                .retain(|_, (start, _)| now < *start + GUESS_WINDOW_SECS);
        }
        let key = if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&from) {
            IpAddr::from([0u8; 4])
        } else {
            from
        };
        let e = self.sources.entry(key).or_insert((now, 0));
        if now >= e.0 + GUESS_WINDOW_SECS {
            *e = (now, 0);
        }
        e
    }

    /// Whether `from` may try a registration now.
    pub fn allowed(&mut self, from: IpAddr, now: u64) -> bool {
        self.slot(source(from), now).1 < MAX_GUESSES
    }

    /// Counts a failed registration from `from`.
    pub fn failed(&mut self, from: IpAddr, now: u64) {
        let e = self.slot(source(from), now);
        e.1 = e.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once_per_key_within_the_window() {
        let mut g = ReplayGuard::new();
        let (k1, k2, n) = ([1u8; 32], [2u8; 32], [7u8; 24]);
        assert_eq!(g.check(k1, n, 0, 1000, true), Ok(()));
        assert_eq!(g.check(k1, n, 0, 1001, true), Err(Replay::SeenNonce));
        assert_eq!(
            g.check(k2, n, 0, 1001, true),
            Ok(()),
            "another key's nonce space"
        );
        assert_eq!(g.check(k1, [8u8; 24], 0, 1002, true), Ok(()));
        // After the window the nonce is forgotten (only a sealed time can refuse it then).
        assert_eq!(g.check(k1, n, 0, 1000 + WINDOW_SECS, true), Ok(()));
    }

    #[test]
    fn a_sealed_time_far_from_now_is_refused() {
        let mut g = ReplayGuard::new();
        let now = 1_000_000;
        assert_eq!(
            g.check([1; 32], [1; 24], now as i64 - 60, now, true),
            Ok(())
        );
        assert_eq!(
            g.check(
                [1; 32],
                [2; 24],
                (now - MAX_SKEW_SECS - 1) as i64,
                now,
                true
            ),
            Err(Replay::Stale {
                sent_at: (now - MAX_SKEW_SECS - 1) as i64,
                now
            })
        );
        assert!(
            g.check(
                [1; 32],
                [3; 24],
                (now + MAX_SKEW_SECS + 1) as i64,
                now,
                true
            )
            .is_err()
        );
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let mut g = ReplayGuard::new();
        for i in 0..100u8 {
            g.check([i; 32], [0; 24], 0, 10, true).unwrap();
        }
        assert_eq!(g.keys(), 100);
        g.check([200; 32], [0; 24], 0, 10 + WINDOW_SECS, true)
            .unwrap();
        assert_eq!(g.keys(), 1);
    }

    #[test]
    fn unregistered_keys_cannot_push_registered_nonces_out() {
        let mut g = ReplayGuard::new();
        let peer = [1u8; 32];
        g.check(peer, [9; 24], 0, 100, true).unwrap();
        for i in 0..MAX_STRANGERS {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64 + 10).to_le_bytes());
            g.check(k, [0; 24], 0, 100, false).unwrap();
        }
        let mut extra = [0u8; 32];
        extra[31] = 7;
        assert_eq!(g.check(extra, [0; 24], 0, 100, false), Err(Replay::Busy));
        assert_eq!(g.check(peer, [9; 24], 0, 101, true), Err(Replay::SeenNonce));
        // A registration's nonce stays refused once the key is registered.
        let newcomer = [5u8; 32];
        let mut g = ReplayGuard::new();
        g.check(newcomer, [4; 24], 0, 100, false).unwrap();
        assert_eq!(
            g.check(newcomer, [4; 24], 0, 101, true),
            Err(Replay::SeenNonce)
        );
        assert_eq!(
            g.check(newcomer, [4; 24], 0, 102, true),
            Err(Replay::SeenNonce),
            "twice"
        );
        // A stranger's nonces expire with the window, and its cap with them.
        let mut g = ReplayGuard::new();
        for i in 0..64u8 {
            g.check([6; 32], [i; 24], 0, 100, false).unwrap();
        }
        assert_eq!(
            g.check([6; 32], [200; 24], 0, 101, false),
            Err(Replay::Busy)
        );
        assert_eq!(
            g.check([6; 32], [200; 24], 0, 100 + WINDOW_SECS, false),
            Ok(())
        );
    }

    #[test]
    fn guesses_are_bounded_per_source_and_window() {
        let mut l = GuessLimiter::new();
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..MAX_GUESSES {
            assert!(l.allowed(a, 100));
            l.failed(a, 100);
        }
        assert!(!l.allowed(a, 101));
        assert!(l.allowed(b, 101), "another source");
        assert!(l.allowed(a, 100 + GUESS_WINDOW_SECS), "a new window");
        // IPv6: one /64 is one source.
        let mut l = GuessLimiter::new();
        for i in 0..MAX_GUESSES {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            l.failed(ip, 100);
        }
        assert!(!l.allowed("2001:db8:1:2::ffff".parse().unwrap(), 100));
        assert!(l.allowed("2001:db8:1:3::1".parse().unwrap(), 100));
    }
}
