//! STUN Binding (RFC 8489) over the WireGuard socket: how a peer learns the address and port
//! its NAT maps the WireGuard port to (its server-reflexive candidate).
//!
//! - [`classify`] tells a STUN message from a WireGuard one by its first bytes (STUN: the top
//!   two bits zero, the magic cookie at bytes 4..8, a length that matches the datagram;
//!   WireGuard: types 1 to 4 in a little-endian word, a fixed size per type), so both share
//!   one UDP port. Transport data never gets here: the worker takes it by its receiver index
//!   first.
//! - [`BindingRequest`] makes a request (with FINGERPRINT); [`parse_binding_response`] reads
//!   the answer strictly: the transaction id must be one we sent, the FINGERPRINT (when
//!   present) must match, and the mapped address comes from XOR-MAPPED-ADDRESS (or the old
//!   MAPPED-ADDRESS). Anything else is a typed [`StunError`], never a panic.
//! - [`Reflexive`] is the sans-IO state of the discovery: which servers to ask, when (the
//!   caller passes the time), the requests in flight, and the address each server saw.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The magic cookie of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// Binding request.
const BINDING_REQUEST: u16 = 0x0001;
/// Binding success response.
const BINDING_SUCCESS: u16 = 0x0101;
/// Binding error response.
const BINDING_ERROR: u16 = 0x0111;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
/// XORed into the CRC-32 of a message to make its FINGERPRINT.
pub(crate) const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// The size of a STUN header.
pub(crate) const HEADER: usize = 20;

/// What a datagram on the WireGuard port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message (connectivity check or Binding answer).
    Stun,
    /// Anything else: WireGuard's to judge.
    WireGuard,
}

/// Tells STUN from WireGuard by the first bytes (see the module documentation).
pub fn classify(d: &[u8]) -> Kind {
    if d.len() < HEADER || d[0] & 0xc0 != 0 {
        return Kind::WireGuard;
    }
    let len = u16::from_be_bytes([d[2], d[3]]) as usize;
    if !len.is_multiple_of(4) || HEADER + len != d.len() {
        return Kind::WireGuard;
    }
    if u32::from_be_bytes([d[4], d[5], d[6], d[7]]) != MAGIC_COOKIE {
        return Kind::WireGuard;
    }
    Kind::Stun
}

/// A 96-bit transaction id.
pub type TransactionId = [u8; 12];

/// A Binding request ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingRequest {
    /// Its transaction id.
    pub id: TransactionId,
    /// The message.
    pub bytes: Vec<u8>,
}

impl BindingRequest {
    /// A request with this transaction id, a SOFTWARE attribute and a FINGERPRINT.
    pub fn new(id: TransactionId) -> Self {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b.extend_from_slice(&id);
        put_attr(&mut b, ATTR_SOFTWARE, b"swiftgate");
        add_fingerprint(&mut b);
        BindingRequest { id, bytes: b }
    }
}

/// Appends an attribute (padded to 4 bytes) and updates the header's length.
pub(crate) fn put_attr(b: &mut Vec<u8>, ty: u16, value: &[u8]) {
    b.extend_from_slice(&ty.to_be_bytes());
    b.extend_from_slice(&(value.len() as u16).to_be_bytes());
    b.extend_from_slice(value);
    b.resize(b.len().next_multiple_of(4), 0);
    let len = (b.len() - HEADER) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
}

/// Appends FINGERPRINT: CRC-32 of the message before it (with the length already counting
/// it), XOR 0x5354554e.
pub(crate) fn add_fingerprint(b: &mut Vec<u8>) {
    let len = (b.len() - HEADER + 8) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32(b) ^ FINGERPRINT_XOR;
    put_attr(b, ATTR_FINGERPRINT, &crc.to_be_bytes());
}

/// CRC-32 (IEEE, reflected), as FINGERPRINT uses.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Why a STUN message was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not a STUN message at all.
    #[error("not a STUN message")]
    NotStun,
    /// A STUN message of another kind (a request, an indication, another method).
    #[error("STUN message type {0:#06x} is not a Binding response")]
    NotBindingResponse(u16),
    /// An attribute runs past the end of the message.
    #[error("attribute {ty:#06x} overruns the message")]
    Truncated {
        /// The attribute.
        ty: u16,
    },
    /// The FINGERPRINT does not match the message.
    #[error("FINGERPRINT mismatch")]
    Fingerprint,
    /// A mapped address that cannot be read.
    #[error("malformed mapped address")]
    BadAddress,
    /// A success response without a mapped address.
    #[error("Binding response without a mapped address")]
    NoAddress,
    /// The server refused (error response), with its code.
    #[error("Binding error response {0}")]
    Refused(u16),
    /// Not an answer to a request in flight to the server it came from.
    #[error("not an answer to a request of ours")]
    Unexpected,
}

/// An answer to one of our Binding requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingResponse {
    /// The request it answers.
    pub id: TransactionId,
    /// Where the server saw the request come from.
    pub mapped: SocketAddr,
}

/// Reads a Binding success response (an error response is [`StunError::Refused`]).
pub fn parse_binding_response(d: &[u8]) -> Result<BindingResponse, StunError> {
    if classify(d) != Kind::Stun {
        return Err(StunError::NotStun);
    }
    let ty = u16::from_be_bytes([d[0], d[1]]);
    let id: TransactionId = d[8..20].try_into().expect("20-byte header");
    if ty != BINDING_SUCCESS && ty != BINDING_ERROR {
        return Err(StunError::NotBindingResponse(ty));
    }
    let (mut xor, mut plain, mut error) = (None, None, None);
    let mut at = HEADER;
    while at < d.len() {
        if at + 4 > d.len() {
            return Err(StunError::Truncated { ty: 0 });
        }
        let aty = u16::from_be_bytes([d[at], d[at + 1]]);
        let alen = u16::from_be_bytes([d[at + 2], d[at + 3]]) as usize;
        let start = at + 4;
        let end = start + alen;
        if end > d.len() {
            return Err(StunError::Truncated { ty: aty });
        }
        let v = &d[start..end];
        match aty {
            // The first of a repeated attribute counts (RFC 8489 §14).
            ATTR_XOR_MAPPED_ADDRESS if xor.is_none() => xor = Some(read_address(v, Some(&id))?),
            ATTR_MAPPED_ADDRESS if plain.is_none() => plain = Some(read_address(v, None)?),
            ATTR_ERROR_CODE if v.len() >= 4 => {
                error = Some(u16::from(v[2] & 0x07) * 100 + u16::from(v[3]))
            }
            ATTR_FINGERPRINT => {
                // Last attribute: CRC-32 of everything before it.
                if v.len() != 4 || end != d.len() {
                    return Err(StunError::Fingerprint);
                }
                let want = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                if crc32(&d[..at]) ^ FINGERPRINT_XOR != want {
                    return Err(StunError::Fingerprint);
                }
            }
            _ => {}
        }
        at = start + alen.next_multiple_of(4);
    }
    if ty == BINDING_ERROR {
        return Err(StunError::Refused(error.unwrap_or(0)));
    }
    let mapped = xor.or(plain).ok_or(StunError::NoAddress)?;
    Ok(BindingResponse { id, mapped })
}

/// A (XOR-)MAPPED-ADDRESS value; XORed with the cookie (and the transaction id for IPv6)
/// when `xor_id` is given.
fn read_address(v: &[u8], xor_id: Option<&TransactionId>) -> Result<SocketAddr, StunError> {
    if v.len() < 4 {
        return Err(StunError::BadAddress);
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    if xor_id.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (v[1], v.len()) {
        (0x01, 8) => {
            let mut a = [v[4], v[5], v[6], v[7]];
            if xor_id.is_some() {
                for (b, k) in a.iter_mut().zip(cookie) {
                    *b ^= k;
                }
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        (0x02, 20) => {
            let mut a: [u8; 16] = v[4..20].try_into().expect("20-byte value");
            if let Some(id) = xor_id {
                let key: Vec<u8> = cookie.iter().chain(id.iter()).copied().collect();
                for (b, k) in a.iter_mut().zip(key) {
                    *b ^= k;
                }
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(StunError::BadAddress),
    };
    Ok(SocketAddr::new(ip, port))
}

/// How often each STUN server is asked again (NAT mappings can change; the answer also
/// keeps the mapping alive).
pub const REFRESH: Duration = Duration::from_secs(25);
/// How long a request waits for its answer before the server is asked again (doubling with
/// each unanswered request, up to [`REFRESH`]).
pub const RETRY: Duration = Duration::from_secs(2);
/// Unanswered requests in a row after which what a server saw is forgotten.
pub const FORGET_AFTER: u32 = 3;
/// The largest STUN answer taken (RFC 8489's 548-byte guidance, rounded up): anything
/// larger is refused before any work.
pub const MAX_ANSWER: usize = 576;

/// One server's state.
#[derive(Debug, Default)]
struct ServerState {
    next_ask: Option<Instant>,
    unanswered: u32,
    seen: Option<SocketAddr>,
}

/// The server-reflexive discovery: sans-IO, the caller sends what [`Reflexive::poll`]
/// returns and feeds answers to [`Reflexive::answer`]. Transaction ids come from the
/// caller's random source, 96 bits each (RFC 8489 §5), so an off-path sender cannot answer
/// for a server.
pub struct Reflexive {
    servers: Vec<SocketAddr>,
    state: HashMap<SocketAddr, ServerState>,
    in_flight: HashMap<TransactionId, SocketAddr>,
    random: Box<dyn FnMut() -> TransactionId + Send>,
}

impl std::fmt::Debug for Reflexive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflexive")
            .field("servers", &self.servers)
            .field("addresses", &self.addresses())
            .finish_non_exhaustive()
    }
}

impl Reflexive {
    /// Discovery over `servers`, with transaction ids from `random` (a cryptographic
    /// source; tests pass a fixed one).
    pub fn new(
        servers: Vec<SocketAddr>,
        random: impl FnMut() -> TransactionId + Send + 'static,
    ) -> Self {
        let mut r = Reflexive {
            servers: Vec::new(),
            state: HashMap::new(),
            in_flight: HashMap::new(),
            random: Box::new(random),
        };
        r.set_servers(servers);
        r
    }

    /// Replaces the servers (announced by the management server, or their names resolved
    /// again); what the remaining ones saw is kept.
    pub fn set_servers(&mut self, servers: Vec<SocketAddr>) {
        self.state.retain(|s, _| servers.contains(s));
        self.in_flight.retain(|_, s| servers.contains(s));
        for s in &servers {
            self.state.entry(*s).or_default();
        }
        self.servers = servers;
    }

    /// Requests due at `now`: `(server, message)` pairs to send from the WireGuard socket.
    pub fn poll(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for &s in &self.servers {
            let st = self.state.entry(s).or_default();
            if st.next_ask.is_some_and(|t| t > now) {
                continue;
            }
            // The previous request went unanswered (if there was one).
            if st.next_ask.is_some() && self.in_flight.values().any(|srv| *srv == s) {
                st.unanswered += 1;
                if st.unanswered >= FORGET_AFTER {
                    st.seen = None;
                }
            }
            let id = (self.random)();
            self.in_flight.retain(|_, srv| *srv != s);
            self.in_flight.insert(id, s);
            let backoff = RETRY.saturating_mul(1 << st.unanswered.min(4)).min(REFRESH);
            st.next_ask = Some(now + backoff);
            out.push((s, BindingRequest::new(id).bytes));
        }
        out
    }

    /// A datagram from `from`: taken if it answers the request in flight to that server
    /// (checked before anything costly; larger than [`MAX_ANSWER`] is refused at once).
    /// Returns the mapped address when it is new for that server.
    pub fn answer(
        &mut self,
        from: SocketAddr,
        d: &[u8],
        now: Instant,
    ) -> Result<Option<SocketAddr>, StunError> {
        if d.len() > MAX_ANSWER || classify(d) != Kind::Stun {
            return Err(StunError::NotStun);
        }
        let id: TransactionId = d[8..20].try_into().expect("20-byte header");
        if self.in_flight.get(&id) != Some(&from) {
            return Err(StunError::Unexpected);
        }
        let r = parse_binding_response(d)?;
        self.in_flight.remove(&r.id);
        let st = self.state.entry(from).or_default();
        st.next_ask = Some(now + REFRESH);
        st.unanswered = 0;
        let changed = st.seen.replace(r.mapped) != Some(r.mapped);
        Ok(changed.then_some(r.mapped))
    }

    /// The server-reflexive addresses seen, one per distinct address.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.state.values().filter_map(|s| s.seen).collect();
        v.sort();
        v.dedup();
        v
    }

    /// When [`Self::poll`] has something to send next.
    pub fn next_due(&self) -> Option<Instant> {
        self.servers
            .iter()
            .map(|s| self.state.get(s).and_then(|st| st.next_ask))
            .min()
            .flatten()
    }
}

/// The `host:port` of a `stun:` URI (`stun:host:port`, default port 3478); `None` for
/// other schemes.
pub fn stun_host_port(uri: &str) -> Option<(String, u16)> {
    let rest = uri.strip_prefix("stun:")?.split('?').next()?;
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 3478,
    };
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.2: a sample IPv4 Binding response (SOFTWARE, XOR-MAPPED-ADDRESS,
    /// MESSAGE-INTEGRITY, FINGERPRINT): mapped 192.0.2.1:32853.
    const RFC5769_V4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    /// RFC 5769 §2.3: the IPv6 response: mapped [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    const RFC5769_V6_RESPONSE: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];

    #[test]
    fn rfc5769_sample_responses_parse_with_their_fingerprints() {
        let r = parse_binding_response(&RFC5769_V4_RESPONSE).unwrap();
        assert_eq!(r.mapped, "192.0.2.1:32853".parse().unwrap());
        assert_eq!(r.id, RFC5769_V4_RESPONSE[8..20]);
        let r = parse_binding_response(&RFC5769_V6_RESPONSE).unwrap();
        assert_eq!(
            r.mapped,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        );
        let mut bad = RFC5769_V4_RESPONSE;
        bad[30] ^= 1; // inside SOFTWARE: the fingerprint no longer matches
        assert_eq!(parse_binding_response(&bad), Err(StunError::Fingerprint));
    }

    #[test]
    fn requests_are_stun_and_wireguard_messages_are_not() {
        let r = BindingRequest::new(*b"abcdefghijkl");
        assert_eq!(classify(&r.bytes), Kind::Stun);
        assert_eq!(r.bytes.len() % 4, 0);
        // The fingerprint we add checks with the parser's rule: flip the type to a response
        // and it still verifies only if we recompute; check the CRC directly instead.
        let n = r.bytes.len();
        let crc = u32::from_be_bytes(r.bytes[n - 4..].try_into().unwrap());
        assert_eq!(crc32(&r.bytes[..n - 8]) ^ FINGERPRINT_XOR, crc);
        // WireGuard: handshake initiation (148 bytes), response (92), cookie reply (64),
        // transport data (>= 32), whatever their random fields say.
        for (ty, len) in [(1u8, 148usize), (2, 92), (3, 64), (4, 32), (4, 1452)] {
            let mut m = vec![0u8; len];
            m[0] = ty;
            m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            assert_eq!(classify(&m), Kind::WireGuard, "type {ty}, {len} bytes");
        }
        assert_eq!(classify(&[]), Kind::WireGuard);
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn discovery_asks_each_server_and_keeps_what_it_saw() {
        let s1: SocketAddr = "192.0.2.10:3478".parse().unwrap();
        let s2: SocketAddr = "198.51.100.10:3478".parse().unwrap();
        let mut n = 0u8;
        let mut r = Reflexive::new(vec![s1, s2], move || {
            n += 1;
            [n; 12]
        });
        let t0 = Instant::now();
        let sent = r.poll(t0);
        assert_eq!(sent.len(), 2);
        assert!(r.poll(t0).is_empty(), "not again before RETRY");
        // An answer made for the first request.
        let (to, req) = &sent[0];
        let id: TransactionId = req[8..20].try_into().unwrap();
        let answer = success(id, "203.0.113.7:40000".parse().unwrap());
        // From the wrong server: refused.
        assert!(r.answer(s2, &answer, t0).is_err());
        assert_eq!(
            r.answer(*to, &answer, t0).unwrap(),
            Some("203.0.113.7:40000".parse().unwrap())
        );
        // A replay of it is no longer in flight.
        assert!(r.answer(*to, &answer, t0).is_err());
        assert_eq!(r.addresses(), vec!["203.0.113.7:40000".parse().unwrap()]);
        // Too large: refused before any parsing.
        let mut big = answer.clone();
        big.resize(MAX_ANSWER + 4, 0);
        assert_eq!(r.answer(*to, &big, t0), Err(StunError::NotStun));
        // The unanswered server is asked again after RETRY, the answered one after REFRESH.
        let again = r.poll(t0 + RETRY);
        assert_eq!(again.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![s2]);
        assert_eq!(r.poll(t0 + REFRESH).len(), 2);
        // A server that stops answering: backed off, and forgotten after FORGET_AFTER.
        let mut t = t0 + REFRESH;
        for _ in 0..FORGET_AFTER {
            t += REFRESH;
            r.poll(t);
        }
        assert!(r.addresses().is_empty(), "{r:?}");
        r.set_servers(vec![s2]);
        assert!(r.addresses().is_empty());
    }

    #[test]
    fn stun_uris() {
        assert_eq!(
            stun_host_port("stun:stun.example.org:3478"),
            Some(("stun.example.org".into(), 3478))
        );
        assert_eq!(
            stun_host_port("stun:192.0.2.1"),
            Some(("192.0.2.1".into(), 3478))
        );
        assert_eq!(
            stun_host_port("stun:[2001:db8::1]:3479"),
            Some(("2001:db8::1".into(), 3479))
        );
        assert_eq!(stun_host_port("turn:x:3478"), None);
    }

    /// A Binding success response with XOR-MAPPED-ADDRESS and FINGERPRINT.
    fn success(id: TransactionId, mapped: SocketAddr) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b.extend_from_slice(&id);
        let SocketAddr::V4(v4) = mapped else {
            unreachable!()
        };
        let mut v = vec![0, 1];
        v.extend_from_slice(&(v4.port() ^ 0x2112).to_be_bytes());
        for (o, k) in v4.ip().octets().iter().zip(MAGIC_COOKIE.to_be_bytes()) {
            v.push(o ^ k);
        }
        put_attr(&mut b, ATTR_XOR_MAPPED_ADDRESS, &v);
        add_fingerprint(&mut b);
        b
    }

    proptest::proptest! {
        /// Any bytes: an answer or a typed error, never a panic.
        #[test]
        fn parsing_never_panics(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = classify(&d);
            let _ = parse_binding_response(&d);
        }

        /// Any bytes behind a valid header (so the attribute walk is exercised).
        #[test]
        fn attribute_walk_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..50), err in proptest::prelude::any::<bool>()) {
            let mut d = Vec::new();
            d.extend_from_slice(&(if err { BINDING_ERROR } else { BINDING_SUCCESS }).to_be_bytes());
            let body_len = body.len() / 4 * 4;
            d.extend_from_slice(&(body_len as u16).to_be_bytes());
            d.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            d.extend_from_slice(&[9u8; 12]);
            d.extend_from_slice(&body[..body_len]);
            let _ = parse_binding_response(&d);
        }
    }
}
