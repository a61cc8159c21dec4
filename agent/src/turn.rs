//! TURN client (RFC 8656) over UDP, sans-IO: carries WireGuard datagrams through a TURN
//! server (coturn) when no direct path between two peers works.
//!
//! An [`Allocation`] is one relayed transport address on one server:
//!
//! - Allocate (REQUESTED-TRANSPORT UDP) with the long-term credential mechanism (RFC 8489
//!   §9.2): the first request goes without credentials, the server's 401 gives REALM and
//!   NONCE, and that request and every later one carry USERNAME, REALM, NONCE,
//!   MESSAGE-INTEGRITY (HMAC-SHA1 keyed with MD5("username:realm:password")) and
//!   FINGERPRINT. A 438 (stale nonce) is retried once with the new NONCE; a 401 to
//!   authenticated credentials fails the allocation ([`TurnError::Unauthorized`]).
//! - Keeps the allocation (Refresh before its lifetime ends), the permissions
//!   (CreatePermission every [`PERMISSION_REFRESH`]) and the channels (ChannelBind every
//!   [`CHANNEL_REFRESH`]) alive; retransmits unanswered requests (RFC 8489 §6.2.1: RTO
//!   500 ms, doubling, [`MAX_SENDS`] sends).
//! - Frames outgoing data as ChannelData once a peer's channel is bound, as Send indications
//!   before; reads ChannelData and Data indications back into `(peer, payload)`.
//! - Takes responses only from the server, for a transaction in flight, and (once
//!   authenticated) with a MESSAGE-INTEGRITY that verifies; anything else is a typed
//!   [`TurnError`] and changes nothing.
//!
//! It does not: open sockets or keep time (the caller sends [`Allocation::poll_transmit`],
//! feeds [`Allocation::handle`] and calls [`Allocation::handle_timeout`] at
//! [`Allocation::poll_timeout`]); speak TURN over TCP, TLS or DTLS; gather candidates or run
//! connectivity checks (ICE is another module's); use RFC 8489's SHA-256 integrity,
//! PASSWORD-ALGORITHMS or USERHASH (coturn takes the SHA-1 variant); or ask for a dual-stack
//! allocation (no ADDITIONAL-ADDRESS-FAMILY). The relayed address has the family of the
//! server's address: an allocation made over IPv4 relays from IPv4 (RFC 8656's default),
//! one made over IPv6 asks for IPv6 (REQUESTED-ADDRESS-FAMILY); a name that resolves to
//! both gives one allocation of each. Peer addresses of either family are encoded and
//! decoded, and the server refuses the other family's permission.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use tracing::debug;

use crate::stun::{
    FINGERPRINT_XOR, HEADER, Kind, MAGIC_COOKIE, TransactionId, add_fingerprint, classify, crc32,
    put_attr,
};

const ALLOCATE: u16 = 0x0003;
const REFRESH: u16 = 0x0004;
const SEND: u16 = 0x0006;
const DATA: u16 = 0x0007;
const CREATE_PERMISSION: u16 = 0x0008;
const CHANNEL_BIND: u16 = 0x0009;
/// The class bits of a message type (RFC 8489 §5).
const CLASS_MASK: u16 = 0x0110;
const INDICATION: u16 = 0x0010;
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;

const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_CHANNEL_NUMBER: u16 = 0x000c;
const ATTR_LIFETIME: u16 = 0x000d;
const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
const ATTR_DATA: u16 = 0x0013;
const ATTR_REALM: u16 = 0x0014;
const ATTR_NONCE: u16 = 0x0015;
const ATTR_XOR_RELAYED_ADDRESS: u16 = 0x0016;
const ATTR_REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
const ATTR_REQUESTED_TRANSPORT: u16 = 0x0019;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_FINGERPRINT: u16 = 0x8028;
/// REQUESTED-TRANSPORT's protocol number for UDP.
const UDP: u8 = 17;

/// The first retransmission timeout; it doubles with each send (RFC 8489 §6.2.1).
pub const RTO: Duration = Duration::from_millis(500);
/// Sends of one request before it has failed (Rc); the last waits 16 RTOs (Rm), so a
/// request fails 39.5 s after its first send.
pub const MAX_SENDS: u32 = 7;
/// The allocation lifetime assumed when a response carries no LIFETIME (RFC 8656 §3.2).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// How often a permission (300 s on the server) is installed again.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// How often a channel binding (600 s on the server) is renewed.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// How long after a refused or unanswered CreatePermission or ChannelBind it is tried
/// again (data goes in Send indications meanwhile).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long an unbound channel stays reserved for its peer: the server keeps a binding 600 s
/// after its last ChannelBind and refuses to rebind it elsewhere for 300 s more.
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(900);
/// The first channel number (RFC 8656 §12).
pub const FIRST_CHANNEL: u16 = 0x4000;
/// The last channel number.
pub const LAST_CHANNEL: u16 = 0x4fff;
/// The longest REALM or NONCE kept (RFC 8489: under 128 characters, 763 bytes).
const MAX_TEXT: usize = 763;
/// Attributes read from one message; more is refused.
const MAX_ATTRS: usize = 32;
/// The longest lifetime believed (coturn's default maximum is an hour).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

type HmacSha1 = Hmac<Sha1>;

/// Why a datagram from the server was not taken, or why the allocation failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TurnError {
    /// Neither a well-formed STUN message nor ChannelData, or a message missing what its
    /// type requires.
    #[error("malformed TURN datagram: {0}")]
    Malformed(&'static str),
    /// The datagram did not come from the TURN server.
    #[error("datagram from {0}, not from the TURN server")]
    NotFromServer(SocketAddr),
    /// A STUN message of a kind a server does not send a client (a request, another
    /// indication).
    #[error("STUN message type {0:#06x} not expected from a TURN server")]
    Unexpected(u16),
    /// A response to no request in flight (or of another method than the request).
    #[error("response to no request in flight")]
    UnknownTransaction,
    /// MESSAGE-INTEGRITY missing from an answer to an authenticated request, or wrong.
    #[error("MESSAGE-INTEGRITY missing or wrong")]
    Integrity,
    /// ChannelData on a channel bound to no peer of ours.
    #[error("ChannelData on channel {0:#06x}, bound to no peer")]
    UnknownChannel(u16),
    /// A Data indication from a peer we asked no permission for.
    #[error("relayed data from {0}, a peer without permission")]
    UnknownPeer(SocketAddr),
    /// The server refused the Allocate or a Refresh (437 Allocation Mismatch, 486 quota,
    /// 508 capacity, ...).
    #[error("TURN server error {code}: {reason}")]
    Server {
        /// The ERROR-CODE's number.
        code: u16,
        /// Its reason phrase (at most 128 bytes).
        reason: String,
    },
    /// The server refused our credentials (a 401 to an authenticated request).
    #[error("TURN credentials refused (401)")]
    Unauthorized,
    /// The Allocate or a Refresh went unanswered [`MAX_SENDS`] times.
    #[error("the TURN server did not answer")]
    Timeout,
    /// The lifetime ran out before a Refresh succeeded.
    #[error("the allocation expired")]
    Expired,
    /// [`Allocation::release`] was called.
    #[error("the allocation was released")]
    Released,
}

/// Where an allocation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocationState {
    /// The Allocate is in flight (possibly after the 401 that gave the realm and nonce).
    Allocating,
    /// The server relays for us.
    Allocated {
        /// The relayed transport address peers send to.
        relayed: SocketAddr,
        /// Where the server saw us (XOR-MAPPED-ADDRESS), a server-reflexive address.
        mapped: Option<SocketAddr>,
        /// The lifetime granted by the last Allocate or Refresh.
        lifetime: Duration,
    },
    /// Over for good: the caller makes a new [`Allocation`] (after new credentials if
    /// [`TurnError::Unauthorized`]).
    Failed(TurnError),
}

/// A request of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Req {
    Allocate,
    Refresh { lifetime: Option<u32> },
    Permission(SocketAddr),
    ChannelBind(SocketAddr, u16),
}

impl Req {
    fn method(self) -> u16 {
        match self {
            Req::Allocate => ALLOCATE,
            Req::Refresh { .. } => REFRESH,
            Req::Permission(_) => CREATE_PERMISSION,
            Req::ChannelBind(..) => CHANNEL_BIND,
        }
    }
}

/// A request in flight.
struct Pending {
    req: Req,
    bytes: Vec<u8>,
    sends: u32,
    next: Instant,
    /// The key its MESSAGE-INTEGRITY was made with (the answer's is checked with it).
    key: Option<[u8; 16]>,
    /// The credentials' generation it was sent with.
    creds: u32,
    /// Already a retry after a 401 (new credentials) or a 438.
    auth_retried: bool,
    stale_retried: bool,
}

/// One bound peer. A time `due` of `None` with the request made means it is in flight.
struct Peer {
    channel: Option<u16>,
    channel_bound: bool,
    channel_sent: Option<Instant>,
    channel_due: Option<Instant>,
    permission: bool,
    permission_due: Option<Instant>,
}

/// A channel no longer ours whose binding the server may still hold.
struct Retired {
    peer: SocketAddr,
    channel: u16,
    until: Instant,
}

/// One TURN allocation, sans-IO (see the module documentation).
pub struct Allocation {
    server: SocketAddr,
    username: String,
    password: String,
    creds: u32,
    realm: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    state: AllocationState,
    expires: Option<Instant>,
    refresh_at: Option<Instant>,
    pending: HashMap<TransactionId, Pending>,
    transmits: VecDeque<Vec<u8>>,
    peers: HashMap<SocketAddr, Peer>,
    channels: HashMap<u16, SocketAddr>,
    retired: Vec<Retired>,
    next_channel: u16,
    release_id: Option<TransactionId>,
    /// Send indications' transaction ids: this, XORed with a counter.
    indication_id: TransactionId,
    indications: AtomicU64,
    ids: Box<dyn FnMut() -> TransactionId + Send>,
}

impl std::fmt::Debug for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocation")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("state", &self.state)
            .field("peers", &self.peers.len())
            .field("in_flight", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Allocation {
    /// Starts allocating on `server` (the TURN server's UDP address): the Allocate is queued
    /// for [`Self::poll_transmit`] at once. `username`/`password` are TURN REST-API
    /// credentials (username `<expiry>:<id>`, password base64 of an HMAC) used with the
    /// long-term credential mechanism; `ids` gives 96-bit transaction ids (a cryptographic
    /// source: they are what keeps off-path senders from answering for the server).
    pub fn new(
        server: SocketAddr,
        username: String,
        password: String,
        now: Instant,
        ids: impl FnMut() -> [u8; 12] + Send + 'static,
    ) -> Self {
        let mut ids: Box<dyn FnMut() -> TransactionId + Send> = Box::new(ids);
        let indication_id = ids();
        let mut a = Allocation {
            server,
            username,
            password,
            creds: 0,
            realm: None,
            nonce: None,
            state: AllocationState::Allocating,
            expires: None,
            refresh_at: None,
            pending: HashMap::new(),
            transmits: VecDeque::new(),
            peers: HashMap::new(),
            channels: HashMap::new(),
            retired: Vec::new(),
            next_channel: FIRST_CHANNEL,
            release_id: None,
            indication_id,
            indications: AtomicU64::new(0),
            ids,
        };
        a.send(Req::Allocate, now, false, false);
        a
    }

    /// The TURN server's address: every transmit goes there, and only datagrams from it
    /// are taken.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Where the allocation stands.
    pub fn state(&self) -> &AllocationState {
        &self.state
    }

    /// The relayed transport address (peers send there), once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            AllocationState::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// The XOR-MAPPED-ADDRESS of the Allocate success: where the server saw us, a
    /// server-reflexive address (when the server sent one).
    pub fn mapped(&self) -> Option<SocketAddr> {
        match self.state {
            AllocationState::Allocated { mapped, .. } => mapped,
            _ => None,
        }
    }

    /// Renewed credentials (the REST-API username expires), taken only while the
    /// allocation is still being requested. A granted allocation keeps the credentials it
    /// was made with: every request of an allocation must carry the same USERNAME (RFC 8656
    /// §7.2; coturn answers 441 Wrong Credentials otherwise). When those expire the server
    /// refuses the next Refresh and the allocation fails; its owner allocates again with
    /// the newest credentials.
    pub fn set_credentials(&mut self, username: String, password: String) {
        if !matches!(self.state, AllocationState::Allocating) {
            return;
        }
        self.username = username;
        self.password = password;
        self.creds = self.creds.wrapping_add(1);
    }

    /// Asks a permission for `peer` and binds a channel to it (CreatePermission and
    /// ChannelBind, sent once allocated), then keeps both fresh. Idempotent; does nothing on
    /// a failed allocation. A peer unbound and bound again within 15 minutes gets its old
    /// channel back (the server still holds that binding).
    pub fn bind(&mut self, peer: SocketAddr, now: Instant) {
        if matches!(self.state, AllocationState::Failed(_)) || self.peers.contains_key(&peer) {
            return;
        }
        self.retired.retain(|r| r.until > now);
        let channel = self.pick_channel(peer);
        if let Some(ch) = channel {
            self.channels.insert(ch, peer);
        }
        debug!(server = %self.server, %peer, ?channel, "TURN bind");
        self.peers.insert(
            peer,
            Peer {
                channel,
                channel_bound: false,
                channel_sent: None,
                channel_due: None,
                permission: false,
                permission_due: None,
            },
        );
        if matches!(self.state, AllocationState::Allocated { .. }) {
            self.request_permission(peer, now);
            self.request_channel(peer, now);
        }
    }

    /// Stops keeping `peer`'s permission and channel fresh (TURN has no way to remove them:
    /// they expire on the server) and stops framing or taking data for it.
    pub fn unbind(&mut self, peer: SocketAddr) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        if let Some(ch) = p.channel {
            self.channels.remove(&ch);
            if let Some(sent) = p.channel_sent {
                let until = sent + CHANNEL_QUARANTINE;
                self.retired.push(Retired {
                    peer,
                    channel: ch,
                    until,
                });
            }
        }
        debug!(server = %self.server, %peer, "TURN unbind");
    }

    /// `peer`'s channel number, once its ChannelBind succeeded.
    pub fn channel_of(&self, peer: SocketAddr) -> Option<u16> {
        self.peers
            .get(&peer)
            .filter(|p| p.channel_bound)
            .and_then(|p| p.channel)
    }

    /// Frames `payload` for `peer`, appended to `out`: ChannelData (4-byte header, no
    /// padding: this is UDP) once its channel is bound, a Send indication (XOR-PEER-ADDRESS,
    /// DATA) before. Returns false, appending nothing, when no permission was requested for
    /// `peer` (not bound, or not allocated yet) or the payload is over 65 535 bytes.
    pub fn encode_to(&self, peer: SocketAddr, payload: &[u8], out: &mut Vec<u8>) -> bool {
        if !matches!(self.state, AllocationState::Allocated { .. }) {
            return false;
        }
        let Some(p) = self.peers.get(&peer).filter(|p| p.permission) else {
            return false;
        };
        let Ok(len) = u16::try_from(payload.len()) else {
            return false;
        };
        if let (Some(ch), true) = (p.channel, p.channel_bound) {
            out.reserve(4 + payload.len());
            out.extend_from_slice(&ch.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(payload);
            return true;
        }
        let n = self.indications.fetch_add(1, Ordering::Relaxed);
        let mut id = self.indication_id;
        for (b, k) in id[4..].iter_mut().zip(n.to_be_bytes()) {
            *b ^= k;
        }
        let (addr, alen) = xor_address(peer, &id);
        let padded = payload.len().next_multiple_of(4);
        let Ok(body) = u16::try_from(4 + alen + 4 + padded) else {
            return false;
        };
        out.reserve(HEADER + usize::from(body));
        out.extend_from_slice(&(SEND | INDICATION).to_be_bytes());
        out.extend_from_slice(&body.to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&id);
        out.extend_from_slice(&ATTR_XOR_PEER_ADDRESS.to_be_bytes());
        out.extend_from_slice(&(alen as u16).to_be_bytes());
        out.extend_from_slice(&addr[..alen]);
        out.extend_from_slice(&ATTR_DATA.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len() + padded - payload.len(), 0);
        true
    }

    /// A datagram from `from`. Returns `Ok(Some((peer, payload)))` for relayed data
    /// (ChannelData or a Data indication), `Ok(None)` for a response taken (its effect shows
    /// in [`Self::state`] and [`Self::channel_of`]), and an error, changing nothing, for
    /// anything else: not from the server, malformed, an unknown transaction or channel, a
    /// wrong MESSAGE-INTEGRITY. Never panics.
    pub fn handle(
        &mut self,
        from: SocketAddr,
        d: &[u8],
        now: Instant,
    ) -> Result<Option<(SocketAddr, Vec<u8>)>, TurnError> {
        if from != self.server {
            return Err(TurnError::NotFromServer(from));
        }
        if is_channel_data(d) {
            let ch = u16::from_be_bytes([d[0], d[1]]);
            let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
            let peer = *self
                .channels
                .get(&ch)
                .ok_or(TurnError::UnknownChannel(ch))?;
            return Ok(Some((peer, d[4..4 + len].to_vec())));
        }
        let m = parse(d)?;
        match m.ty & CLASS_MASK {
            INDICATION if method(m.ty) == DATA => self.data_indication(&m).map(Some),
            SUCCESS | ERROR => self.response(&m, now).map(|()| None),
            _ => Err(TurnError::Unexpected(m.ty)),
        }
    }

    /// The next request to send to the server (first sends and retransmissions alike).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front().map(|b| (self.server, b))
    }

    /// When [`Self::handle_timeout`] has something to do next (`None` once failed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, AllocationState::Failed(_)) {
            return None;
        }
        let peers = self
            .peers
            .values()
            .flat_map(|p| [p.permission_due, p.channel_due]);
        self.pending
            .values()
            .map(|p| Some(p.next))
            .chain([self.refresh_at, self.expires])
            .chain(peers)
            .flatten()
            .min()
    }

    /// Does what is due at `now`: retransmissions (a request unanswered after
    /// [`MAX_SENDS`] sends fails the allocation if it was the Allocate or a Refresh, or
    /// drops the peer's channel or permission until [`RETRY_AFTER`]), the Refresh (at the
    /// later of half the lifetime and a minute before its end), permission and channel
    /// refreshes, and the end of an allocation whose lifetime ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, AllocationState::Failed(_)) {
            return;
        }
        if self.expires.is_some_and(|e| now >= e) {
            self.fail(TurnError::Expired);
            return;
        }
        let due: Vec<TransactionId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if p.sends < MAX_SENDS {
                p.sends += 1;
                p.next = now + wait_after(p.sends);
                self.transmits.push_back(p.bytes.clone());
                continue;
            }
            let req = p.req;
            self.pending.remove(&id);
            debug!(server = %self.server, ?req, "TURN request unanswered");
            match req {
                Req::Allocate | Req::Refresh { .. } => {
                    self.fail(TurnError::Timeout);
                    return;
                }
                Req::Permission(peer) => self.permission_failed(peer, now),
                Req::ChannelBind(peer, ch) => self.channel_failed(peer, ch, now),
            }
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            self.send(Req::Refresh { lifetime: None }, now, false, false);
        }
        let peers: Vec<SocketAddr> = self.peers.keys().copied().collect();
        for peer in peers {
            let Some(p) = self.peers.get(&peer) else {
                continue;
            };
            let (perm, chan) = (p.permission_due, p.channel_due);
            if perm.is_some_and(|t| t <= now) {
                self.request_permission(peer, now);
            }
            if chan.is_some_and(|t| t <= now) {
                self.request_channel(peer, now);
            }
        }
    }

    /// Asks the server now whether the allocation is still there (the scheduled Refresh,
    /// brought forward): for when a path through it stops answering, so a server that lost
    /// it (a restart) is noticed in seconds rather than at the next Refresh. Nothing happens
    /// unless allocated with no Refresh in flight.
    pub fn refresh_now(&mut self, now: Instant) {
        if matches!(self.state, AllocationState::Allocated { .. }) && self.refresh_at.is_some() {
            self.refresh_at = Some(now);
        }
    }

    /// Gives the allocation up: a Refresh with LIFETIME 0 is queued (sent once; its answer
    /// is taken quietly) when there is an allocation, and the state is
    /// [`TurnError::Released`].
    pub fn release(&mut self) {
        let msg = match self.state {
            AllocationState::Failed(_) => return,
            AllocationState::Allocating => None,
            AllocationState::Allocated { .. } => {
                let id = (self.ids)();
                let (bytes, _) = self.encode(Req::Refresh { lifetime: Some(0) }, &id);
                Some((id, bytes))
            }
        };
        self.fail(TurnError::Released);
        if let Some((id, bytes)) = msg {
            self.release_id = Some(id);
            self.transmits.push_back(bytes);
        }
    }

    /// A free channel for `peer`: its own if the server may still hold it, else the next
    /// free one from [`FIRST_CHANNEL`] on (wrapping), skipping those the server may still
    /// hold for another peer.
    fn pick_channel(&mut self, peer: SocketAddr) -> Option<u16> {
        if let Some(i) = self.retired.iter().position(|r| r.peer == peer) {
            return Some(self.retired.swap_remove(i).channel);
        }
        let n = LAST_CHANNEL - FIRST_CHANNEL + 1;
        for k in 0..n {
            let ch = FIRST_CHANNEL + (self.next_channel - FIRST_CHANNEL + k) % n;
            if !self.channels.contains_key(&ch) && !self.retired.iter().any(|r| r.channel == ch) {
                self.next_channel = FIRST_CHANNEL + (ch - FIRST_CHANNEL + 1) % n;
                return Some(ch);
            }
        }
        None
    }

    fn request_permission(&mut self, peer: SocketAddr, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.permission = true;
            p.permission_due = None;
            self.send(Req::Permission(peer), now, false, false);
        }
    }

    fn request_channel(&mut self, peer: SocketAddr, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer)
            && let Some(ch) = p.channel
        {
            p.channel_sent = Some(now);
            p.channel_due = None;
            self.send(Req::ChannelBind(peer, ch), now, false, false);
        }
    }

    fn permission_failed(&mut self, peer: SocketAddr, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.permission_due = Some(now + RETRY_AFTER);
        }
    }

    fn channel_failed(&mut self, peer: SocketAddr, ch: u16, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer).filter(|p| p.channel == Some(ch)) {
            p.channel_bound = false;
            p.channel_due = Some(now + RETRY_AFTER);
        }
    }

    /// Queues a new transaction for `req`.
    fn send(&mut self, req: Req, now: Instant, auth_retried: bool, stale_retried: bool) {
        let id = (self.ids)();
        let (bytes, key) = self.encode(req, &id);
        debug!(server = %self.server, ?req, authenticated = key.is_some(), "TURN request");
        self.transmits.push_back(bytes.clone());
        self.pending.insert(
            id,
            Pending {
                req,
                bytes,
                sends: 1,
                next: now + wait_after(1),
                key,
                creds: self.creds,
                auth_retried,
                stale_retried,
            },
        );
    }

    /// A request's bytes (authenticated once the realm and nonce are known), and the key of
    /// its MESSAGE-INTEGRITY.
    fn encode(&self, req: Req, id: &TransactionId) -> (Vec<u8>, Option<[u8; 16]>) {
        let mut b = Vec::with_capacity(160);
        b.extend_from_slice(&req.method().to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b.extend_from_slice(id);
        match req {
            Req::Allocate => {
                put_attr(&mut b, ATTR_REQUESTED_TRANSPORT, &[UDP, 0, 0, 0]);
                // Reached over IPv6: an IPv6 relayed address (RFC 8656's default is IPv4),
                // for peers reachable over IPv6.
                if self.server.is_ipv6() {
                    put_attr(&mut b, ATTR_REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
                }
            }
            Req::Refresh { lifetime } => {
                if let Some(l) = lifetime {
                    put_attr(&mut b, ATTR_LIFETIME, &l.to_be_bytes());
                }
            }
            Req::Permission(peer) => {
                let (v, n) = xor_address(peer, id);
                put_attr(&mut b, ATTR_XOR_PEER_ADDRESS, &v[..n]);
            }
            Req::ChannelBind(peer, ch) => {
                let [hi, lo] = ch.to_be_bytes();
                put_attr(&mut b, ATTR_CHANNEL_NUMBER, &[hi, lo, 0, 0]);
                let (v, n) = xor_address(peer, id);
                put_attr(&mut b, ATTR_XOR_PEER_ADDRESS, &v[..n]);
            }
        }
        let key = match (&self.realm, &self.nonce) {
            (Some(realm), Some(nonce)) => {
                put_attr(&mut b, ATTR_USERNAME, self.username.as_bytes());
                put_attr(&mut b, ATTR_REALM, realm);
                put_attr(&mut b, ATTR_NONCE, nonce);
                let key = long_term_key(&self.username, realm, &self.password);
                // The length counts MESSAGE-INTEGRITY itself (RFC 8489 §14.5).
                let len = (b.len() - HEADER + 24) as u16;
                b[2..4].copy_from_slice(&len.to_be_bytes());
                let mac = hmac_sha1(&key, &b);
                put_attr(&mut b, ATTR_MESSAGE_INTEGRITY, &mac);
                Some(key)
            }
            _ => None,
        };
        add_fingerprint(&mut b);
        (b, key)
    }

    fn data_indication(&self, m: &Msg<'_>) -> Result<(SocketAddr, Vec<u8>), TurnError> {
        let peer = m.get(ATTR_XOR_PEER_ADDRESS).ok_or(TurnError::Malformed(
            "Data indication without XOR-PEER-ADDRESS",
        ))?;
        let peer = read_xor_address(peer, &m.id)?;
        let data = m
            .get(ATTR_DATA)
            .ok_or(TurnError::Malformed("Data indication without DATA"))?;
        // Permissions are per IP address (RFC 8656 §9): any port of a permitted peer.
        if !self
            .peers
            .iter()
            .any(|(p, st)| st.permission && p.ip() == peer.ip())
        {
            return Err(TurnError::UnknownPeer(peer));
        }
        Ok((peer, data.to_vec()))
    }

    fn response(&mut self, m: &Msg<'_>, now: Instant) -> Result<(), TurnError> {
        let Some(p) = self.pending.get(&m.id) else {
            if self.release_id == Some(m.id) {
                self.release_id = None;
                return Ok(());
            }
            return Err(TurnError::UnknownTransaction);
        };
        if method(m.ty) != p.req.method() {
            return Err(TurnError::UnknownTransaction);
        }
        let success = m.ty & CLASS_MASK == SUCCESS;
        if let Some(key) = &p.key
            && (success || m.integrity.is_some())
        {
            verify(m, key)?;
        }
        let error = if success {
            None
        } else {
            let v = m
                .get(ATTR_ERROR_CODE)
                .ok_or(TurnError::Malformed("error response without ERROR-CODE"))?;
            Some(read_error(v)?)
        };
        let Some(p) = self.pending.remove(&m.id) else {
            return Err(TurnError::UnknownTransaction);
        };
        match error {
            None => self.success(p.req, m, now),
            Some((code, reason)) => {
                self.error(p, m, code, reason, now);
                Ok(())
            }
        }
    }

    fn success(&mut self, req: Req, m: &Msg<'_>, now: Instant) -> Result<(), TurnError> {
        debug!(server = %self.server, ?req, "TURN success");
        match req {
            Req::Allocate => {
                let relayed = m
                    .get(ATTR_XOR_RELAYED_ADDRESS)
                    .ok_or(TurnError::Malformed(
                        "Allocate success without XOR-RELAYED-ADDRESS",
                    ))
                    .and_then(|v| read_xor_address(v, &m.id));
                let relayed = match relayed {
                    Ok(a) => a,
                    Err(e) => {
                        self.fail(e.clone());
                        return Err(e);
                    }
                };
                let mapped = m
                    .get(ATTR_XOR_MAPPED_ADDRESS)
                    .and_then(|v| read_xor_address(v, &m.id).ok());
                let lifetime = self.schedule(m, now);
                debug!(server = %self.server, %relayed, ?mapped, ?lifetime, "TURN allocated");
                self.state = AllocationState::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                };
                let peers: Vec<SocketAddr> = self.peers.keys().copied().collect();
                for peer in peers {
                    self.request_permission(peer, now);
                    self.request_channel(peer, now);
                }
            }
            Req::Refresh { .. } => {
                let l = self.schedule(m, now);
                if let AllocationState::Allocated { lifetime, .. } = &mut self.state {
                    *lifetime = l;
                }
            }
            Req::Permission(peer) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.permission_due = Some(now + PERMISSION_REFRESH);
                }
            }
            Req::ChannelBind(peer, ch) => {
                if let Some(p) = self.peers.get_mut(&peer).filter(|p| p.channel == Some(ch)) {
                    p.channel_bound = true;
                    p.channel_due = Some(now + CHANNEL_REFRESH);
                }
            }
        }
        Ok(())
    }

    /// The lifetime a success grants, and the Refresh and expiry it sets.
    fn schedule(&mut self, m: &Msg<'_>, now: Instant) -> Duration {
        let lifetime = m
            .get(ATTR_LIFETIME)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(|v| Duration::from_secs(u32::from_be_bytes(v).into()))
            .unwrap_or(DEFAULT_LIFETIME)
            .min(MAX_LIFETIME);
        self.expires = Some(now + lifetime);
        let early = lifetime.saturating_sub(Duration::from_secs(60));
        self.refresh_at = Some(now + early.max(lifetime / 2));
        lifetime
    }

    fn error(&mut self, p: Pending, m: &Msg<'_>, code: u16, reason: String, now: Instant) {
        debug!(server = %self.server, req = ?p.req, code, %reason, "TURN error response");
        if matches!(code, 401 | 438) {
            if let Some(r) = m.get(ATTR_REALM).filter(|r| r.len() <= MAX_TEXT) {
                self.realm = Some(r.to_vec());
            }
            if let Some(n) = m.get(ATTR_NONCE).filter(|n| n.len() <= MAX_TEXT) {
                self.nonce = Some(n.to_vec());
            }
        }
        let can_auth = self.realm.is_some() && self.nonce.is_some();
        match code {
            // The challenge (first request), or new credentials since this request.
            401 if can_auth && (p.key.is_none() || (p.creds != self.creds && !p.auth_retried)) => {
                let retried = p.key.is_some();
                self.send(p.req, now, retried, p.stale_retried);
            }
            401 => self.fail(TurnError::Unauthorized),
            438 if can_auth && !p.stale_retried && m.get(ATTR_NONCE).is_some() => {
                self.send(p.req, now, p.auth_retried, true);
            }
            _ => match p.req {
                Req::Allocate | Req::Refresh { .. } => {
                    self.fail(TurnError::Server { code, reason });
                }
                Req::Permission(peer) => self.permission_failed(peer, now),
                Req::ChannelBind(peer, ch) => self.channel_failed(peer, ch, now),
            },
        }
    }

    fn fail(&mut self, e: TurnError) {
        debug!(server = %self.server, error = %e, "TURN allocation over");
        self.state = AllocationState::Failed(e);
        self.pending.clear();
        self.transmits.clear();
        self.peers.clear();
        self.channels.clear();
        self.refresh_at = None;
        self.expires = None;
    }
}

/// Whether `d` is ChannelData: a channel number in [`FIRST_CHANNEL`]..=[`LAST_CHANNEL`]
/// (so the first two bits are 01, never STUN's 00) and a length that fits the datagram,
/// with at most 3 bytes of padding after it.
pub fn is_channel_data(d: &[u8]) -> bool {
    if d.len() < 4 {
        return false;
    }
    let ch = u16::from_be_bytes([d[0], d[1]]);
    let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
    (FIRST_CHANNEL..=LAST_CHANNEL).contains(&ch) && 4 + len <= d.len() && d.len() - 4 - len < 4
}

/// The method of a message type (its bits without the class bits, RFC 8489 §5).
fn method(ty: u16) -> u16 {
    (ty & 0x000f) | ((ty & 0x00e0) >> 1) | ((ty & 0x3e00) >> 2)
}

/// MD5("username:realm:password"), the long-term credential key (RFC 8489 §9.2.2; the
/// REST-API credentials are ASCII, so SASLprep changes nothing).
fn long_term_key(username: &str, realm: &[u8], password: &str) -> [u8; 16] {
    Md5::new()
        .chain_update(username.as_bytes())
        .chain_update(b":")
        .chain_update(realm)
        .chain_update(b":")
        .chain_update(password.as_bytes())
        .finalize()
        .into()
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A parsed STUN message: the attributes before MESSAGE-INTEGRITY (those after it, but
/// FINGERPRINT, are ignored, RFC 8489 §14.5), FINGERPRINT checked when present.
struct Msg<'a> {
    ty: u16,
    id: TransactionId,
    d: &'a [u8],
    attrs: Vec<(u16, &'a [u8])>,
    /// Where MESSAGE-INTEGRITY starts, and its value.
    integrity: Option<(usize, &'a [u8])>,
}

impl<'a> Msg<'a> {
    /// The first attribute of this type (RFC 8489 §14: later repeats are ignored).
    fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.attrs.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
    }
}

fn parse(d: &[u8]) -> Result<Msg<'_>, TurnError> {
    if classify(d) != Kind::Stun {
        return Err(TurnError::Malformed("neither STUN nor ChannelData"));
    }
    let mut id = [0u8; 12];
    id.copy_from_slice(&d[8..HEADER]);
    let mut m = Msg {
        ty: u16::from_be_bytes([d[0], d[1]]),
        id,
        d,
        attrs: Vec::new(),
        integrity: None,
    };
    let mut at = HEADER;
    while at < d.len() {
        if at + 4 > d.len() {
            return Err(TurnError::Malformed("truncated attribute"));
        }
        let ty = u16::from_be_bytes([d[at], d[at + 1]]);
        let len = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
        let (start, end) = (at + 4, at + 4 + len);
        if end > d.len() {
            return Err(TurnError::Malformed("attribute overruns the message"));
        }
        let v = &d[start..end];
        if ty == ATTR_FINGERPRINT {
            let Ok(want) = <[u8; 4]>::try_from(v) else {
                return Err(TurnError::Malformed("bad FINGERPRINT"));
            };
            if end != d.len() || crc32(&d[..at]) ^ FINGERPRINT_XOR != u32::from_be_bytes(want) {
                return Err(TurnError::Malformed("FINGERPRINT mismatch"));
            }
        } else if m.integrity.is_none() {
            if ty == ATTR_MESSAGE_INTEGRITY {
                if len != 20 {
                    return Err(TurnError::Malformed("bad MESSAGE-INTEGRITY"));
                }
                m.integrity = Some((at, v));
            } else if m.attrs.len() < MAX_ATTRS {
                m.attrs.push((ty, v));
            } else {
                return Err(TurnError::Malformed("too many attributes"));
            }
        }
        at = start + len.next_multiple_of(4);
    }
    Ok(m)
}

/// Checks MESSAGE-INTEGRITY: HMAC-SHA1 over the message up to it, the header's length
/// counting up to its end.
fn verify(m: &Msg<'_>, key: &[u8; 16]) -> Result<(), TurnError> {
    let (at, v) = m.integrity.ok_or(TurnError::Integrity)?;
    let len = ((at + 24 - HEADER) as u16).to_be_bytes();
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(&m.d[..2]);
    mac.update(&len);
    mac.update(&m.d[4..at]);
    mac.verify_slice(v).map_err(|_| TurnError::Integrity)
}

/// ERROR-CODE: class (hundreds) and number, and the reason phrase (cut to 128 bytes).
fn read_error(v: &[u8]) -> Result<(u16, String), TurnError> {
    if v.len() < 4 {
        return Err(TurnError::Malformed("short ERROR-CODE"));
    }
    let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
    let reason = String::from_utf8_lossy(&v[4..v.len().min(4 + 128)]).into_owned();
    Ok((code, reason))
}

/// The XOR key of an address: the magic cookie, then the transaction id (for IPv6).
fn xor_key(id: &TransactionId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    k[4..].copy_from_slice(id);
    k
}

/// XORs `a` with `key` into `out`.
fn xor_into(out: &mut [u8], a: &[u8], key: &[u8]) {
    for ((o, x), k) in out.iter_mut().zip(a).zip(key) {
        *o = x ^ k;
    }
}

/// An XOR-*-ADDRESS value (RFC 8489 §14.2) and its length (8 or 20 bytes).
fn xor_address(a: SocketAddr, id: &TransactionId) -> ([u8; 20], usize) {
    let key = xor_key(id);
    let mut v = [0u8; 20];
    v[2..4].copy_from_slice(&(a.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => {
            v[1] = 0x01;
            xor_into(&mut v[4..8], &ip.octets(), &key);
            (v, 8)
        }
        IpAddr::V6(ip) => {
            v[1] = 0x02;
            xor_into(&mut v[4..20], &ip.octets(), &key);
            (v, 20)
        }
    }
}

fn read_xor_address(v: &[u8], id: &TransactionId) -> Result<SocketAddr, TurnError> {
    let key = xor_key(id);
    if v.len() < 4 {
        return Err(TurnError::Malformed("short address"));
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (v[1], v.len()) {
        (0x01, 8) => {
            let mut a = [0u8; 4];
            xor_into(&mut a, &v[4..], &key);
            IpAddr::V4(Ipv4Addr::from(a))
        }
        (0x02, 20) => {
            let mut a = [0u8; 16];
            xor_into(&mut a, &v[4..], &key);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(TurnError::Malformed("bad address family or length")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// How long to wait after the `sends`-th send of a request.
fn wait_after(sends: u32) -> Duration {
    if sends >= MAX_SENDS {
        RTO * 16
    } else {
        RTO * (1 << sends.saturating_sub(1).min(16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "1700000000:alice";
    const PASS: &str = "c2VjcmV0";
    const REALM: &[u8] = b"swiftgate.test";

    fn server() -> SocketAddr {
        "192.0.2.1:3478".parse().unwrap()
    }

    fn relayed() -> SocketAddr {
        "192.0.2.1:49152".parse().unwrap()
    }

    fn mapped() -> SocketAddr {
        "203.0.113.7:40000".parse().unwrap()
    }

    /// Transaction ids 1, 2, 3... (in the last four bytes).
    fn counter() -> impl FnMut() -> TransactionId + Send {
        let mut n = 0u32;
        move || {
            n += 1;
            let mut id = [0xa5; 12];
            id[8..].copy_from_slice(&n.to_be_bytes());
            id
        }
    }

    /// The key the fake server derives: MD5 of "user:realm:password", computed apart.
    fn key() -> [u8; 16] {
        let mut s = format!("{USER}:").into_bytes();
        s.extend_from_slice(REALM);
        s.extend_from_slice(format!(":{PASS}").as_bytes());
        Md5::digest(&s).into()
    }

    /// The fake server's answer: a type, the request's id, attributes, MESSAGE-INTEGRITY
    /// with `key`, FINGERPRINT.
    fn answer(ty: u16, req: &[u8], attrs: &[(u16, Vec<u8>)], key: Option<&[u8; 16]>) -> Vec<u8> {
        let mut b = ty.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&req[4..HEADER]);
        for (t, v) in attrs {
            put_attr(&mut b, *t, v);
        }
        if let Some(k) = key {
            let len = (b.len() - HEADER + 24) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
            let mac = hmac_sha1(k, &b);
            put_attr(&mut b, ATTR_MESSAGE_INTEGRITY, &mac);
        }
        add_fingerprint(&mut b);
        b
    }

    fn error_code(code: u16, reason: &str) -> (u16, Vec<u8>) {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        (ATTR_ERROR_CODE, v)
    }

    fn addr_attr(ty: u16, a: SocketAddr, req: &[u8]) -> (u16, Vec<u8>) {
        let id: TransactionId = req[8..HEADER].try_into().unwrap();
        let (v, n) = xor_address(a, &id);
        (ty, v[..n].to_vec())
    }

    fn id_of(req: &[u8]) -> TransactionId {
        req[8..HEADER].try_into().unwrap()
    }

    fn next(a: &mut Allocation) -> Vec<u8> {
        let (to, b) = a.poll_transmit().expect("a transmit");
        assert_eq!(to, server());
        b
    }

    /// An allocation the fake server granted `lifetime` seconds, at `t0`.
    fn allocated(lifetime: u32) -> (Allocation, Instant) {
        let t0 = Instant::now();
        let mut a = Allocation::new(server(), USER.into(), PASS.into(), t0, counter());
        let req = next(&mut a);
        let challenge = [
            error_code(401, "Unauthorized"),
            (ATTR_REALM, REALM.to_vec()),
            (ATTR_NONCE, b"nonce-1".to_vec()),
        ];
        let r = a.handle(
            server(),
            &answer(ALLOCATE | ERROR, &req, &challenge, None),
            t0,
        );
        assert_eq!(r, Ok(None));
        let req = next(&mut a);
        let ok = answer(
            ALLOCATE | SUCCESS,
            &req,
            &[
                addr_attr(ATTR_XOR_RELAYED_ADDRESS, relayed(), &req),
                addr_attr(ATTR_XOR_MAPPED_ADDRESS, mapped(), &req),
                (ATTR_LIFETIME, lifetime.to_be_bytes().to_vec()),
            ],
            Some(&key()),
        );
        assert_eq!(a.handle(server(), &ok, t0), Ok(None));
        (a, t0)
    }

    /// Answers every queued request with success (with `lifetime` for Refreshes).
    fn grant_all(a: &mut Allocation, now: Instant) -> Vec<u16> {
        let mut methods = Vec::new();
        while let Some((_, req)) = a.poll_transmit() {
            let m = method(u16::from_be_bytes([req[0], req[1]]));
            methods.push(m);
            let ok = answer(m | SUCCESS, &req, &[], Some(&key()));
            assert_eq!(a.handle(server(), &ok, now), Ok(None));
        }
        methods
    }

    #[test]
    fn allocates_with_long_term_credentials() {
        let t0 = Instant::now();
        let mut a = Allocation::new(server(), USER.into(), PASS.into(), t0, counter());
        let first = next(&mut a);
        let m = parse(&first).unwrap(); // FINGERPRINT checked
        assert_eq!(m.ty, ALLOCATE);
        assert_eq!(m.get(ATTR_REQUESTED_TRANSPORT), Some(&[17, 0, 0, 0][..]));
        assert!(m.get(ATTR_USERNAME).is_none() && m.integrity.is_none());
        let challenge = answer(
            ALLOCATE | ERROR,
            &first,
            &[
                error_code(401, "Unauthorized"),
                (ATTR_REALM, REALM.to_vec()),
                (ATTR_NONCE, b"nonce-1".to_vec()),
            ],
            None,
        );
        // Only from the server.
        let other: SocketAddr = "192.0.2.2:3478".parse().unwrap();
        assert_eq!(
            a.handle(other, &challenge, t0),
            Err(TurnError::NotFromServer(other))
        );
        assert_eq!(a.handle(server(), &challenge, t0), Ok(None));
        assert_eq!(
            a.handle(server(), &challenge, t0),
            Err(TurnError::UnknownTransaction)
        );
        let second = next(&mut a);
        let m = parse(&second).unwrap();
        assert_ne!(m.id, id_of(&first));
        assert_eq!(m.get(ATTR_USERNAME), Some(USER.as_bytes()));
        assert_eq!(m.get(ATTR_REALM), Some(REALM));
        assert_eq!(m.get(ATTR_NONCE), Some(&b"nonce-1"[..]));
        assert_eq!(verify(&m, &key()), Ok(()));
        let attrs = [
            addr_attr(ATTR_XOR_RELAYED_ADDRESS, relayed(), &second),
            addr_attr(ATTR_XOR_MAPPED_ADDRESS, mapped(), &second),
            (ATTR_LIFETIME, 600u32.to_be_bytes().to_vec()),
        ];
        // A success with a wrong or missing MESSAGE-INTEGRITY changes nothing.
        for bad in [
            answer(ALLOCATE | SUCCESS, &second, &attrs, Some(&[7; 16])),
            answer(ALLOCATE | SUCCESS, &second, &attrs, None),
        ] {
            assert_eq!(a.handle(server(), &bad, t0), Err(TurnError::Integrity));
            assert_eq!(a.state(), &AllocationState::Allocating);
        }
        // Nor does one of another method.
        let wrong = answer(REFRESH | SUCCESS, &second, &attrs, Some(&key()));
        assert_eq!(
            a.handle(server(), &wrong, t0),
            Err(TurnError::UnknownTransaction)
        );
        let ok = answer(ALLOCATE | SUCCESS, &second, &attrs, Some(&key()));
        assert_eq!(a.handle(server(), &ok, t0), Ok(None));
        assert_eq!(
            a.state(),
            &AllocationState::Allocated {
                relayed: relayed(),
                mapped: Some(mapped()),
                lifetime: Duration::from_secs(600)
            }
        );
        assert_eq!((a.relayed(), a.mapped()), (Some(relayed()), Some(mapped())));
        assert_eq!(a.server(), server());
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(540)));
        assert_eq!(
            a.handle(server(), &ok, t0),
            Err(TurnError::UnknownTransaction)
        );
    }

    #[test]
    fn an_allocation_over_ipv6_asks_for_an_ipv6_relayed_address() {
        let t0 = Instant::now();
        let v4 = next(&mut Allocation::new(
            server(),
            USER.into(),
            PASS.into(),
            t0,
            counter(),
        ));
        assert!(
            parse(&v4)
                .unwrap()
                .get(ATTR_REQUESTED_ADDRESS_FAMILY)
                .is_none()
        );
        let v6_server: SocketAddr = "[2001:db8:1::1]:3478".parse().unwrap();
        let (to, v6) = Allocation::new(v6_server, USER.into(), PASS.into(), t0, counter())
            .poll_transmit()
            .expect("an Allocate");
        assert_eq!(to, v6_server);
        let m = parse(&v6).unwrap();
        assert_eq!(m.ty, ALLOCATE);
        assert_eq!(
            m.get(ATTR_REQUESTED_ADDRESS_FAMILY),
            Some(&[0x02, 0, 0, 0][..])
        );
    }

    #[test]
    fn retransmits_with_doubling_rto_then_fails() {
        let t0 = Instant::now();
        let mut a = Allocation::new(server(), USER.into(), PASS.into(), t0, counter());
        let first = next(&mut a);
        let mut t = t0;
        for (i, wait_ms) in [500u64, 1000, 2000, 4000, 8000, 16000]
            .into_iter()
            .enumerate()
        {
            assert_eq!(
                a.poll_timeout(),
                Some(t + Duration::from_millis(wait_ms)),
                "{i}"
            );
            a.handle_timeout(t + Duration::from_millis(wait_ms - 1));
            assert!(a.poll_transmit().is_none());
            t += Duration::from_millis(wait_ms);
            a.handle_timeout(t);
            assert_eq!(next(&mut a), first, "the same request again");
        }
        // The 7th send was at 31.5 s; it waits 16 RTOs more.
        assert_eq!(t, t0 + Duration::from_millis(31_500));
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_millis(39_500)));
        a.handle_timeout(t0 + Duration::from_millis(39_500));
        assert_eq!(a.state(), &AllocationState::Failed(TurnError::Timeout));
        assert!(a.poll_transmit().is_none() && a.poll_timeout().is_none());
    }

    #[test]
    fn refreshes_allocation_permissions_and_channels() {
        let (mut a, t0) = allocated(600);
        let peer: SocketAddr = "198.51.100.9:51820".parse().unwrap();
        a.bind(peer, t0);
        a.bind(peer, t0); // idempotent
        let sent = grant_all(&mut a, t0);
        assert_eq!(sent, vec![CREATE_PERMISSION, CHANNEL_BIND]);
        assert_eq!(a.channel_of(peer), Some(FIRST_CHANNEL));
        let s = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(a.poll_timeout(), Some(s(240)));
        a.handle_timeout(s(240));
        assert_eq!(grant_all(&mut a, s(240)), vec![CREATE_PERMISSION]);
        a.handle_timeout(s(480));
        assert_eq!(grant_all(&mut a, s(480)), vec![CREATE_PERMISSION]);
        assert_eq!(a.poll_timeout(), Some(s(540)));
        a.handle_timeout(s(540));
        let mut methods = Vec::new();
        while let Some((_, req)) = a.poll_transmit() {
            let m = parse(&req).unwrap();
            assert_eq!(verify(&m, &key()), Ok(()));
            methods.push(method(m.ty));
            if m.ty == REFRESH {
                assert!(m.get(ATTR_LIFETIME).is_none());
                let ok = answer(
                    REFRESH | SUCCESS,
                    &req,
                    &[(ATTR_LIFETIME, 100u32.to_be_bytes().to_vec())],
                    Some(&key()),
                );
                assert_eq!(a.handle(server(), &ok, s(540)), Ok(None));
            } else {
                // The ChannelBind goes unanswered.
                assert_eq!(m.ty, CHANNEL_BIND);
            }
        }
        assert_eq!(methods, vec![REFRESH, CHANNEL_BIND]);
        assert!(
            matches!(a.state(), AllocationState::Allocated { lifetime, .. } if *lifetime == Duration::from_secs(100))
        );
        // The ChannelBind goes unanswered: given up 39.5 s after its first send; data goes in
        // Send indications until it is tried again RETRY_AFTER later.
        let mut t = s(540);
        while t < t0 + Duration::from_millis(579_500) {
            assert!(a.channel_of(peer).is_some());
            t += RTO;
            a.handle_timeout(t);
            while let Some((_, req)) = a.poll_transmit() {
                assert_eq!(method(u16::from_be_bytes([req[0], req[1]])), CHANNEL_BIND);
            }
        }
        assert_eq!(a.channel_of(peer), None);
        let mut out = Vec::new();
        assert!(a.encode_to(peer, b"x", &mut out));
        assert_eq!(out[..2], (SEND | INDICATION).to_be_bytes());
        // A short lifetime is refreshed at half of it.
        assert_eq!(a.poll_timeout(), Some(s(590)));
        a.handle_timeout(s(590));
        assert_eq!(grant_all(&mut a, s(590)), vec![REFRESH]);
        assert_eq!(a.poll_timeout(), Some(t + RETRY_AFTER));
        a.handle_timeout(t + RETRY_AFTER);
        assert_eq!(grant_all(&mut a, t + RETRY_AFTER), vec![CHANNEL_BIND]);
        assert_eq!(a.channel_of(peer), Some(FIRST_CHANNEL));
    }

    #[test]
    fn stale_nonce_is_retried_once_and_credentials_kept_for_the_allocation() {
        let (mut a, t0) = allocated(600);
        let peer: SocketAddr = "198.51.100.9:51820".parse().unwrap();
        a.bind(peer, t0);
        let perm = next(&mut a);
        let channel = next(&mut a);
        let ok = answer(CHANNEL_BIND | SUCCESS, &channel, &[], Some(&key()));
        assert_eq!(a.handle(server(), &ok, t0), Ok(None));
        let stale = |req: &[u8], nonce: &[u8]| {
            answer(
                CREATE_PERMISSION | ERROR,
                req,
                &[
                    error_code(438, "Stale Nonce"),
                    (ATTR_REALM, REALM.to_vec()),
                    (ATTR_NONCE, nonce.to_vec()),
                ],
                None,
            )
        };
        assert_eq!(a.handle(server(), &stale(&perm, b"nonce-2"), t0), Ok(None));
        let again = next(&mut a);
        let m = parse(&again).unwrap();
        assert_ne!(m.id, id_of(&perm));
        assert_eq!(m.get(ATTR_NONCE), Some(&b"nonce-2"[..]));
        assert_eq!(verify(&m, &key()), Ok(()));
        // Stale again: not retried; the permission is tried again after RETRY_AFTER.
        assert_eq!(a.handle(server(), &stale(&again, b"nonce-3"), t0), Ok(None));
        assert!(a.poll_transmit().is_none());
        a.handle_timeout(t0 + RETRY_AFTER);
        let later = next(&mut a);
        assert_eq!(
            parse(&later).unwrap().get(ATTR_NONCE),
            Some(&b"nonce-3"[..])
        );
        // New credentials: a granted allocation keeps its own (the same USERNAME for every
        // request of an allocation), so the next request still carries them.
        a.set_credentials("1800000000:alice".into(), "bmV3".into());
        assert_eq!(
            parse(&later).unwrap().get(ATTR_USERNAME),
            Some(USER.as_bytes())
        );
        // The server refusing them (expired): the allocation is over; its owner allocates
        // again with the new ones.
        let unauthorized = answer(
            CREATE_PERMISSION | ERROR,
            &later,
            &[
                error_code(401, "Unauthorized"),
                (ATTR_NONCE, b"nonce-3".to_vec()),
            ],
            None,
        );
        assert_eq!(a.handle(server(), &unauthorized, t0), Ok(None));
        assert_eq!(a.state(), &AllocationState::Failed(TurnError::Unauthorized));
        assert!(!a.encode_to(peer, b"x", &mut Vec::new()));
    }

    #[test]
    fn server_errors_fail_the_allocation() {
        let t0 = Instant::now();
        let mut a = Allocation::new(server(), USER.into(), PASS.into(), t0, counter());
        let req = next(&mut a);
        let mismatch = answer(
            ALLOCATE | ERROR,
            &req,
            &[error_code(437, "Allocation Mismatch")],
            None,
        );
        assert_eq!(a.handle(server(), &mismatch, t0), Ok(None));
        assert_eq!(
            a.state(),
            &AllocationState::Failed(TurnError::Server {
                code: 437,
                reason: "Allocation Mismatch".into()
            })
        );
        // An authenticated Allocate refused with 401: wrong credentials.
        let (mut a, t0) = allocated(600);
        a.handle_timeout(t0 + Duration::from_secs(540));
        let refresh = next(&mut a);
        let no = answer(REFRESH | ERROR, &refresh, &[error_code(401, "")], None);
        // An error response with a wrong MESSAGE-INTEGRITY is refused.
        let forged = answer(
            REFRESH | ERROR,
            &refresh,
            &[error_code(437, "")],
            Some(&[1; 16]),
        );
        assert_eq!(a.handle(server(), &forged, t0), Err(TurnError::Integrity));
        assert_eq!(a.handle(server(), &no, t0), Ok(None));
        assert_eq!(a.state(), &AllocationState::Failed(TurnError::Unauthorized));
    }

    #[test]
    fn frames_and_reads_relayed_data() {
        let (mut a, t0) = allocated(600);
        let v4: SocketAddr = "198.51.100.9:51820".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::9]:51821".parse().unwrap();
        let mut out = vec![0xee];
        assert!(!a.encode_to(v4, b"wg", &mut out), "no permission asked");
        assert_eq!(out, [0xee]);
        a.bind(v4, t0);
        a.bind(v6, t0);
        // Before the channel: Send indications (appended to what `out` holds).
        for peer in [v4, v6] {
            let mut out = vec![0xee];
            assert!(a.encode_to(peer, b"hello", &mut out));
            assert_eq!(out[0], 0xee);
            let m = parse(&out[1..]).unwrap();
            assert_eq!(m.ty, SEND | INDICATION);
            assert_eq!(
                read_xor_address(m.get(ATTR_XOR_PEER_ADDRESS).unwrap(), &m.id),
                Ok(peer)
            );
            assert_eq!(m.get(ATTR_DATA), Some(&b"hello"[..]));
            assert_eq!(out.len() % 4, 1, "DATA padded");
        }
        // Data indications from the server.
        let data_ind = |peer: SocketAddr, payload: &[u8]| {
            let mut req = [0u8; HEADER]; // any id
            req[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            answer(
                DATA | INDICATION,
                &req,
                &[
                    addr_attr(ATTR_XOR_PEER_ADDRESS, peer, &req),
                    (ATTR_DATA, payload.to_vec()),
                ],
                None,
            )
        };
        let mut other_port = v6;
        other_port.set_port(9);
        for peer in [v4, v6, other_port] {
            let d = data_ind(peer, b"from peer");
            assert_eq!(
                a.handle(server(), &d, t0),
                Ok(Some((peer, b"from peer".to_vec())))
            );
        }
        let stranger: SocketAddr = "198.51.100.10:51820".parse().unwrap();
        assert_eq!(
            a.handle(server(), &data_ind(stranger, b"x"), t0),
            Err(TurnError::UnknownPeer(stranger))
        );
        assert_eq!(grant_all(&mut a, t0).len(), 4);
        assert_eq!(a.channel_of(v4), Some(0x4000));
        assert_eq!(a.channel_of(v6), Some(0x4001));
        // After: ChannelData, no padding.
        let mut out = Vec::new();
        assert!(a.encode_to(v6, b"hello", &mut out));
        assert_eq!(out, [0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        for d in [
            &out[..],
            &[0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0][..],
        ] {
            assert_eq!(a.handle(server(), d, t0), Ok(Some((v6, b"hello".to_vec()))));
        }
        let unbound = [0x40, 0x07, 0, 1, 1];
        assert_eq!(
            a.handle(server(), &unbound, t0),
            Err(TurnError::UnknownChannel(0x4007))
        );
        // Unbound, then bound again: its old channel (the server still holds it); a new
        // peer gets the next number.
        a.unbind(v4);
        assert_eq!(
            a.handle(server(), &[0x40, 0, 0, 0], t0),
            Err(TurnError::UnknownChannel(0x4000))
        );
        assert!(!a.encode_to(v4, b"x", &mut Vec::new()));
        let third: SocketAddr = "198.51.100.11:51820".parse().unwrap();
        a.bind(third, t0);
        a.bind(v4, t0);
        grant_all(&mut a, t0);
        assert_eq!(a.channel_of(third), Some(0x4002));
        assert_eq!(a.channel_of(v4), Some(0x4000));
    }

    #[test]
    fn release_sends_a_zero_lifetime_refresh() {
        let (mut a, t0) = allocated(600);
        a.bind("198.51.100.9:51820".parse().unwrap(), t0);
        a.release();
        assert_eq!(a.state(), &AllocationState::Failed(TurnError::Released));
        let req = next(&mut a);
        assert!(a.poll_transmit().is_none(), "nothing else queued");
        let m = parse(&req).unwrap();
        assert_eq!(m.ty, REFRESH);
        assert_eq!(m.get(ATTR_LIFETIME), Some(&[0, 0, 0, 0][..]));
        assert_eq!(verify(&m, &key()), Ok(()));
        let ok = answer(
            REFRESH | SUCCESS,
            &req,
            &[(ATTR_LIFETIME, vec![0; 4])],
            Some(&key()),
        );
        assert_eq!(a.handle(server(), &ok, t0), Ok(None));
        assert_eq!(a.poll_timeout(), None);
        a.release();
        assert!(a.poll_transmit().is_none());
    }

    #[test]
    fn channel_data_is_told_apart() {
        assert!(is_channel_data(&[0x40, 0x00, 0, 0]));
        assert!(is_channel_data(&[0x4f, 0xff, 0, 1, 9, 0, 0, 0]));
        assert!(
            !is_channel_data(&[0x4f, 0xff, 0, 1, 9, 0, 0, 0, 0]),
            "more than padding"
        );
        assert!(!is_channel_data(&[0x50, 0x00, 0, 0]), "reserved channel");
        assert!(!is_channel_data(&[0x40, 0x00, 0, 2, 1]), "too short");
        assert!(!is_channel_data(&[0x00, 0x01, 0, 0]) && !is_channel_data(&[0x40]));
        assert_eq!(method(ALLOCATE | ERROR), ALLOCATE);
        assert_eq!(method(0x3eef), 0x0fff);
        fn send<T: Send>() {}
        send::<Allocation>();
    }

    proptest::proptest! {
        /// Any bytes, to a fresh and to an allocated allocation: data or a typed error,
        /// never a panic.
        #[test]
        fn any_datagram_is_safe(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = is_channel_data(&d);
            let (mut a, t0) = allocated(600);
            a.bind("198.51.100.9:51820".parse().unwrap(), t0);
            let _ = a.handle(server(), &d, t0);
            let mut fresh = Allocation::new(server(), USER.into(), PASS.into(), t0, counter());
            let _ = fresh.handle(server(), &d, t0);
        }

        /// Any attributes in a response to a request in flight, of any class.
        #[test]
        fn any_attributes_are_safe(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            ty in proptest::sample::select(vec![ALLOCATE | SUCCESS, ALLOCATE | ERROR, DATA | INDICATION]),
        ) {
            let t0 = Instant::now();
            let mut a = Allocation::new(server(), USER.into(), PASS.into(), t0, counter());
            let req = next(&mut a);
            let mut d = ty.to_be_bytes().to_vec();
            d.extend_from_slice(&((body.len() / 4 * 4) as u16).to_be_bytes());
            d.extend_from_slice(&req[4..HEADER]);
            d.extend_from_slice(&body[..body.len() / 4 * 4]);
            let _ = a.handle(server(), &d, t0);
            a.handle_timeout(t0 + Duration::from_secs(1));
        }
    }
}
