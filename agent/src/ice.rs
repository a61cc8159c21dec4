//! ICE for every peer, sans-IO: one RFC 8445 agent per remote peer (the `is` crate, str0m's
//! ICE agent on its own), the offer/answer/candidate exchange in NetBird's Signal vocabulary,
//! and the restart policy. No sockets, no clock: the driver ([`crate::connect`]) feeds
//! datagrams, Signal messages and the time, and takes what to send and which path each peer
//! was nominated on.
//!
//! The exchange, as NetBird peers do it:
//! - each side sends an OFFER whose payload is its ICE credentials (`ufrag:pwd`), then its
//!   candidates one CANDIDATE message each, trickled as they are found;
//! - an OFFER is answered with an ANSWER (credentials) and the candidates;
//! - an OFFER with credentials other than those already known is the peer starting over
//!   (restart, new process, new network): this side restarts too;
//! - the side whose base64 WireGuard key sorts higher controls (nominates).
//!
//! Checks run on the WireGuard port itself (host and server-reflexive candidates) and through
//! TURN allocations (relayed candidates); the nominated pair's remote address becomes the
//! WireGuard endpoint. The controlling side restarts ICE when no pair works after
//! [`RESTART_CHECKING`] or when consent is lost for [`RESTART_DISCONNECTED`], backing off
//! up to [`RESTART_MAX`].

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use is::{
    Candidate, CandidateKind, IceAgent, IceAgentEvent, IceConnectionState, IceCreds, Protocol,
    stun::{StunMessage, StunPacket},
};
use swiftgate_proto::keys::PublicKey;

use crate::wg::EndpointOrigin;

/// Checking this long without a working pair: the controlling side restarts.
pub const RESTART_CHECKING: Duration = Duration::from_secs(20);
/// Consent lost (disconnected) this long: the controlling side restarts.
pub const RESTART_DISCONNECTED: Duration = Duration::from_secs(6);
/// The longest wait between restarts (the wait doubles from the first).
pub const RESTART_MAX: Duration = Duration::from_secs(120);
/// Without the peer's credentials, the offer is repeated after this (doubling).
pub const REOFFER: Duration = Duration::from_secs(4);
/// Candidates kept per peer that arrive before its offer.
const EARLY_CANDIDATES: usize = 32;

/// A Signal message ICE sends or takes (the body types OFFER, ANSWER, CANDIDATE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Credentials, asking for an answer.
    Offer(IceCreds),
    /// Credentials, answering an offer.
    Answer(IceCreds),
    /// One candidate line (`candidate:... typ ...`).
    Candidate(String),
}

impl Message {
    /// The Signal payload of credentials: `ufrag:pwd`.
    pub fn creds_payload(c: &IceCreds) -> String {
        format!("{}:{}", c.ufrag, c.pass)
    }

    /// Credentials from a Signal payload: exactly two non-empty fields around one `:`.
    pub fn parse_creds(payload: &str) -> Option<IceCreds> {
        let (ufrag, pass) = payload.split_once(':')?;
        let ok = |s: &str| !s.is_empty() && s.len() <= 256 && !s.contains(':');
        (ok(ufrag) && ok(pass)).then(|| IceCreds {
            ufrag: ufrag.into(),
            pass: pass.into(),
        })
    }
}

/// A datagram to send: from which local candidate (the WireGuard port, or a relayed address
/// that the driver sends through its TURN allocation) to where.
#[derive(Debug)]
pub struct Datagram {
    /// The local candidate's address (base).
    pub source: SocketAddr,
    /// The remote address.
    pub destination: SocketAddr,
    /// A STUN message.
    pub contents: Vec<u8>,
}

/// A peer's path, as nominated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nominated {
    /// Our side of the pair (the WireGuard port's address, or a relayed address).
    pub local: SocketAddr,
    /// The peer's side: where WireGuard sends.
    pub remote: SocketAddr,
}

/// What the rest of the agent sees of one peer's ICE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIce {
    /// The agent's connection state.
    pub state: IceConnectionState,
    /// The selected pair, once nominated.
    pub nominated: Option<Nominated>,
    /// Whether this side controls.
    pub controlling: bool,
    /// Restarts so far.
    pub restarts: u32,
}

struct Session {
    agent: IceAgent,
    state: IceConnectionState,
    nominated: Option<Nominated>,
    /// When the current state began (restart timing).
    since: Instant,
    restarts: u32,
    /// Earliest time of the next restart (backoff).
    next_restart: Instant,
    restart_wait: Duration,
    /// When to repeat the offer while the peer's credentials are unknown.
    next_offer: Instant,
    offer_wait: Duration,
}

/// ICE for all peers.
pub struct Ice {
    me: String,
    locals: Vec<Candidate>,
    sessions: HashMap<PublicKey, Session>,
    /// Candidate lines heard from peers in the map before their credentials.
    early: HashMap<PublicKey, Vec<String>>,
    signal: VecDeque<(PublicKey, Message)>,
    transmit: VecDeque<Datagram>,
    nominated: VecDeque<(PublicKey, Option<Nominated>)>,
    /// Counted refusals: unparsable credentials or candidates from peers.
    pub ignored: u64,
    /// Whether what [`Self::peers`] shows changed since [`Self::take_changed`].
    changed: bool,
}

impl Ice {
    /// ICE for the peer whose WireGuard key is `me`.
    pub fn new(me: &PublicKey) -> Self {
        Ice {
            me: me.to_base64(),
            locals: Vec::new(),
            sessions: HashMap::new(),
            early: HashMap::new(),
            signal: VecDeque::new(),
            transmit: VecDeque::new(),
            nominated: VecDeque::new(),
            ignored: 0,
            changed: false,
        }
    }

    /// NetBird's rule: the side whose base64 key sorts higher controls.
    pub fn controls(&self, peer: &PublicKey) -> bool {
        self.me > peer.to_base64()
    }

    fn new_agent(&self, peer: &PublicKey) -> IceAgent {
        let mut agent = IceAgent::new(IceCreds::new());
        agent.set_controlling(self.controls(peer));
        for c in &self.locals {
            agent.add_local_candidate(c.clone());
        }
        agent
    }

    fn queue_offer(&mut self, peer: &PublicKey, kind: fn(IceCreds) -> Message) {
        let Some(s) = self.sessions.get(peer) else {
            return;
        };
        let creds = s.agent.local_credentials().clone();
        self.signal.push_back((*peer, kind(creds)));
        for c in &self.locals {
            self.signal
                .push_back((*peer, Message::Candidate(line_of(c))));
        }
    }

    /// The peers to connect to (the network map's): new ones get an agent and an offer,
    /// those no longer named are forgotten.
    pub fn set_peers(&mut self, peers: &[PublicKey], now: Instant) {
        let before = self.sessions.len();
        self.sessions.retain(|k, _| peers.contains(k));
        self.changed |= self.sessions.len() != before;
        self.early.retain(|k, _| peers.contains(k));
        for p in peers {
            if self.sessions.contains_key(p) {
                continue;
            }
            let agent = self.new_agent(p);
            self.sessions.insert(
                *p,
                Session {
                    agent,
                    state: IceConnectionState::New,
                    nominated: None,
                    since: now,
                    restarts: 0,
                    next_restart: now,
                    restart_wait: RESTART_CHECKING,
                    next_offer: now + REOFFER,
                    offer_wait: REOFFER,
                },
            );
            self.queue_offer(p, Message::Offer);
            self.changed = true;
        }
    }

    /// Offers again to every peer (Signal reconnected: what was sent meanwhile is lost).
    pub fn reoffer_all(&mut self) {
        let peers: Vec<PublicKey> = self.sessions.keys().copied().collect();
        for p in peers {
            self.queue_offer(&p, Message::Offer);
        }
    }

    /// A local candidate found (a server-reflexive address, a TURN allocation): every agent
    /// gets it and every peer hears of it.
    pub fn add_local(&mut self, c: Candidate) {
        if self
            .locals
            .iter()
            .any(|l| l.addr() == c.addr() && l.kind() == c.kind())
        {
            return;
        }
        for (p, s) in self.sessions.iter_mut() {
            // The agent refuses a candidate redundant with one it already has: a new
            // server-reflexive address that a check already showed it as peer-reflexive (a
            // NAT that changed its mapping). The peer has not been told about it either way
            // (peer-reflexive candidates are never signalled), so it is trickled regardless:
            // without it the peer cannot try the new mapping from its other candidates.
            let line = match s.agent.add_local_candidate(c.clone()) {
                Some(added) => line_of(added),
                None => line_of(&c),
            };
            self.signal.push_back((*p, Message::Candidate(line)));
        }
        self.locals.push(c);
    }

    /// A local candidate gone (a mapping withdrawn, an allocation lost).
    pub fn remove_local(&mut self, addr: SocketAddr) {
        let gone: Vec<Candidate> = self
            .locals
            .iter()
            .filter(|c| c.addr() == addr)
            .cloned()
            .collect();
        self.locals.retain(|c| c.addr() != addr);
        for s in self.sessions.values_mut() {
            for c in &gone {
                s.agent.invalidate_candidate(c);
            }
        }
    }

    /// The local candidates.
    pub fn locals(&self) -> &[Candidate] {
        &self.locals
    }

    /// A Signal message from `from` (already authenticated by its sealing).
    pub fn on_signal(&mut self, from: PublicKey, msg: Message, now: Instant) {
        match msg {
            Message::Offer(_) | Message::Answer(_) if !self.sessions.contains_key(&from) => {
                // Not (yet) in our map: the map will bring it, and our offer then.
                tracing::debug!(peer = %from, "ICE credentials from a peer not in the map");
            }
            Message::Offer(creds) => {
                let restart = self
                    .sessions
                    .get(&from)
                    .is_some_and(|s| s.agent.remote_credentials().is_some_and(|r| *r != creds));
                if restart {
                    tracing::info!(peer = %from, "peer started ICE over: restarting");
                    self.restart_session(&from, now, false);
                }
                self.set_remote(&from, creds);
                self.queue_offer(&from, Message::Answer);
            }
            Message::Answer(creds) => self.set_remote(&from, creds),
            Message::Candidate(line) => {
                let line = normalise(&line);
                if Candidate::from_sdp_string(&line).is_err() {
                    self.ignored += 1;
                    tracing::debug!(peer = %from, %line, "candidate ignored");
                    return;
                }
                match self.sessions.get_mut(&from) {
                    Some(s) if s.agent.remote_credentials().is_some() => {
                        add_remote(&mut s.agent, &line)
                    }
                    // Not in the map: it offers again when we do not answer.
                    None => {}
                    Some(_) => {
                        let early = self.early.entry(from).or_default();
                        if early.len() < EARLY_CANDIDATES && !early.contains(&line) {
                            early.push(line);
                        }
                    }
                }
            }
        }
    }

    fn set_remote(&mut self, peer: &PublicKey, creds: IceCreds) {
        let Some(s) = self.sessions.get_mut(peer) else {
            return;
        };
        s.agent.set_remote_credentials(creds);
        for line in self.early.remove(peer).unwrap_or_default() {
            add_remote(&mut s.agent, &line);
        }
    }

    /// Starts a peer's ICE over with fresh credentials; `offer` sends them (our own restart),
    /// otherwise the answer to the peer's offer carries them.
    fn restart_session(&mut self, peer: &PublicKey, now: Instant, offer: bool) {
        let Some(s) = self.sessions.get_mut(peer) else {
            return;
        };
        s.agent.ice_restart(IceCreds::new(), true);
        s.restarts += 1;
        self.changed = true;
        s.since = now;
        s.next_offer = now + REOFFER;
        s.offer_wait = REOFFER;
        if offer {
            self.queue_offer(peer, Message::Offer);
        }
    }

    /// A STUN datagram that arrived at `destination` (the WireGuard port's address it was
    /// sent to, or a relayed address) from `source`. Whether an agent took it (a check or an
    /// answer to one, with valid MESSAGE-INTEGRITY for its credentials).
    pub fn handle_stun(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> bool {
        let Ok(message) = StunMessage::parse(data) else {
            return false;
        };
        for s in self.sessions.values_mut() {
            if s.agent.accepts_message(&message) {
                let packet = StunPacket {
                    proto: Protocol::Udp,
                    source,
                    destination,
                    message,
                };
                return s.agent.handle_packet(now, packet);
            }
        }
        false
    }

    /// Advances every agent's timers and the restart policy.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut restart = Vec::new();
        let mut reoffer = Vec::new();
        for (p, s) in self.sessions.iter_mut() {
            s.agent.handle_timeout(now);
            while let Some(t) = s.agent.poll_transmit() {
                self.transmit.push_back(Datagram {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                });
            }
            while let Some(e) = s.agent.poll_event() {
                match e {
                    IceAgentEvent::IceConnectionStateChange(st) => {
                        tracing::debug!(peer = %p, state = ?st, "ICE state");
                        s.state = st;
                        self.changed = true;
                        s.since = now;
                        if st.is_connected() {
                            s.restart_wait = RESTART_CHECKING;
                        }
                    }
                    IceAgentEvent::NominatedSend {
                        source,
                        destination,
                        ..
                    } => {
                        let n = Nominated {
                            local: source,
                            remote: destination,
                        };
                        if s.nominated != Some(n) {
                            tracing::info!(peer = %p, local = %source, remote = %destination, "ICE pair nominated");
                            s.nominated = Some(n);
                            self.nominated.push_back((*p, Some(n)));
                            self.changed = true;
                        }
                    }
                    IceAgentEvent::DiscoveredRecv { .. } | IceAgentEvent::IceRestart(_) => {}
                }
            }
            let known = s.agent.remote_credentials().is_some();
            if !known && now >= s.next_offer {
                reoffer.push(*p);
                s.next_offer = now + s.offer_wait;
                s.offer_wait = (s.offer_wait * 2).min(RESTART_MAX);
            }
            let stuck = match s.state {
                IceConnectionState::Disconnected => now >= s.since + RESTART_DISCONNECTED,
                IceConnectionState::New | IceConnectionState::Checking => {
                    known && now >= s.since + RESTART_CHECKING
                }
                _ => false,
            };
            if stuck && s.agent.controlling() && now >= s.next_restart {
                s.next_restart = now + s.restart_wait;
                s.restart_wait = (s.restart_wait * 2).min(RESTART_MAX);
                restart.push(*p);
            }
        }
        for p in reoffer {
            self.queue_offer(&p, Message::Offer);
        }
        for p in restart {
            tracing::info!(peer = %p, "no working ICE pair: restarting");
            self.restart_session(&p, now, true);
        }
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for s in self.sessions.values_mut() {
            let t = s.agent.poll_timeout();
            let restart = (s.state != IceConnectionState::Connected
                && s.state != IceConnectionState::Completed)
                .then_some(s.next_restart.max(s.since + RESTART_DISCONNECTED));
            let offer = s
                .agent
                .remote_credentials()
                .is_none()
                .then_some(s.next_offer);
            for t in [t, restart, offer].into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// The next Signal message to send.
    pub fn poll_signal(&mut self) -> Option<(PublicKey, Message)> {
        self.signal.pop_front()
    }

    /// The next STUN datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.transmit.pop_front()
    }

    /// The next nomination (a peer's path changed).
    pub fn poll_nominated(&mut self) -> Option<(PublicKey, Option<Nominated>)> {
        self.nominated.pop_front()
    }

    /// One peer's ICE.
    pub fn peer(&self, peer: &PublicKey) -> Option<PeerIce> {
        self.sessions.get(peer).map(view)
    }

    /// Whether any peer's ICE (what [`Self::peers`] shows) changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Every peer's ICE.
    pub fn peers(&self) -> impl Iterator<Item = (&PublicKey, PeerIce)> {
        self.sessions.iter().map(|(k, s)| (k, view(s)))
    }

    /// Whether `addr` is some peer's relayed candidate.
    pub fn is_remote_relay(&self, addr: SocketAddr) -> bool {
        self.sessions.values().any(|s| {
            s.agent
                .remote_candidates()
                .any(|c| c.addr() == addr && c.kind() == CandidateKind::Relayed)
        })
    }

    /// What a nominated remote address is to the peer: one of its local addresses, its NAT's
    /// mapping, or a relay of its own.
    pub fn remote_origin(&self, peer: &PublicKey, addr: SocketAddr) -> EndpointOrigin {
        let kind = self.sessions.get(peer).and_then(|s| {
            s.agent
                .remote_candidates()
                .find(|c| c.addr() == addr)
                .map(|c| c.kind())
        });
        match kind {
            Some(CandidateKind::Host) => EndpointOrigin::Host,
            Some(CandidateKind::Relayed) => EndpointOrigin::Relay,
            _ => EndpointOrigin::Srflx,
        }
    }
}

fn view(s: &Session) -> PeerIce {
    PeerIce {
        state: s.state,
        nominated: s.nominated,
        controlling: s.agent.controlling(),
        restarts: s.restarts,
    }
}

/// A candidate line as NetBird's peers send it (pion's marshalling: no `a=`; `candidate:`
/// optional) made into the form the ICE agent parses.
fn normalise(line: &str) -> String {
    let l = line.trim().trim_start_matches("a=");
    if l.starts_with("candidate:") {
        l.to_string()
    } else {
        format!("candidate:{l}")
    }
}

fn add_remote(agent: &mut IceAgent, line: &str) {
    if let Ok(c) = Candidate::from_sdp_string(line)
        && c.proto() == Protocol::Udp
    {
        agent.add_remote_candidate(c);
    }
}

/// The candidate line we send (the agent's own rendering, without the WebRTC-only `ufrag`
/// extension, which pion-based peers do not all parse).
fn line_of(c: &Candidate) -> String {
    let s = c.to_sdp_string();
    match s.find(" ufrag ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    /// Two `Ice`s wired back to back: Signal delivered at once, datagrams delivered when
    /// `link` says the path is open.
    fn pump(
        a: (&PublicKey, &mut Ice),
        b: (&PublicKey, &mut Ice),
        now: &mut Instant,
        steps: usize,
        link: &dyn Fn(SocketAddr, SocketAddr) -> bool,
    ) {
        for _ in 0..steps {
            a.1.handle_timeout(*now);
            b.1.handle_timeout(*now);
            while let Some((to, m)) = a.1.poll_signal() {
                assert_eq!(&to, b.0);
                b.1.on_signal(*a.0, m, *now);
            }
            while let Some((to, m)) = b.1.poll_signal() {
                assert_eq!(&to, a.0);
                a.1.on_signal(*b.0, m, *now);
            }
            while let Some(d) = a.1.poll_transmit() {
                if link(d.source, d.destination) {
                    b.1.handle_stun(d.source, d.destination, &d.contents, *now);
                }
            }
            while let Some(d) = b.1.poll_transmit() {
                if link(d.source, d.destination) {
                    a.1.handle_stun(d.source, d.destination, &d.contents, *now);
                }
            }
            *now += Duration::from_millis(50);
        }
    }

    fn host(s: &str) -> Candidate {
        Candidate::host(s.parse().unwrap(), "udp").unwrap()
    }

    #[test]
    fn credentials_payload_round_trips_and_refuses_garbage() {
        let c = IceCreds {
            ufrag: "abcd".into(),
            pass: "0123456789abcdef0123".into(),
        };
        assert_eq!(Message::parse_creds(&Message::creds_payload(&c)), Some(c));
        for bad in ["", ":", "a:", ":b", "a:b:c", "nocolon"] {
            assert_eq!(Message::parse_creds(bad), None, "{bad}");
        }
    }

    #[test]
    fn two_peers_nominate_the_open_pair_and_the_higher_key_controls() {
        let (ka, kb) = (key(1), key(2));
        let (mut a, mut b) = (Ice::new(&ka), Ice::new(&kb));
        assert_ne!(a.controls(&kb), b.controls(&ka));
        a.add_local(host("192.0.2.1:51820"));
        a.add_local(host("10.9.0.1:51820"));
        b.add_local(host("192.0.2.2:51820"));
        let mut now = Instant::now();
        a.set_peers(&[kb], now);
        b.set_peers(&[ka], now);
        // Only 192.0.2.0/24 connects the two.
        let link = |s: SocketAddr, d: SocketAddr| {
            s.to_string().starts_with("192.0.2.") && d.to_string().starts_with("192.0.2.")
        };
        pump((&ka, &mut a), (&kb, &mut b), &mut now, 100, &link);
        let (pa, pb) = (a.peer(&kb).unwrap(), b.peer(&ka).unwrap());
        assert!(pa.state.is_connected(), "{pa:?}");
        assert!(pb.state.is_connected(), "{pb:?}");
        assert_eq!(
            pa.nominated.unwrap().remote,
            "192.0.2.2:51820".parse().unwrap()
        );
        assert_eq!(
            pb.nominated.unwrap().remote,
            "192.0.2.1:51820".parse().unwrap()
        );
        let n: Vec<_> = std::iter::from_fn(|| a.poll_nominated()).collect();
        assert_eq!(n.len(), 1, "{n:?}");
        // The change is reported once (what the status shows is published then).
        assert!(a.take_changed());
        assert!(!a.take_changed());
    }

    #[test]
    fn a_peer_that_starts_over_is_followed_and_a_lost_path_restarts() {
        let (ka, kb) = (key(1), key(2));
        let (mut a, mut b) = (Ice::new(&ka), Ice::new(&kb));
        a.add_local(host("192.0.2.1:51820"));
        b.add_local(host("192.0.2.2:51820"));
        let mut now = Instant::now();
        a.set_peers(&[kb], now);
        b.set_peers(&[ka], now);
        let open = |_: SocketAddr, _: SocketAddr| true;
        pump((&ka, &mut a), (&kb, &mut b), &mut now, 60, &open);
        assert!(a.peer(&kb).unwrap().state.is_connected());
        // b restarts as a new process would: new agent, new credentials.
        let mut b2 = Ice::new(&kb);
        b2.add_local(host("192.0.2.2:51820"));
        b2.set_peers(&[ka], now);
        pump((&ka, &mut a), (&kb, &mut b2), &mut now, 60, &open);
        assert!(b2.peer(&ka).unwrap().state.is_connected());
        assert_eq!(a.peer(&kb).unwrap().restarts, 1);
        // The path breaks for longer than consent allows: the controlling side restarts,
        // and once the path is back both connect again.
        let controller_is_a = a.controls(&kb);
        let restarts = |a: &Ice, b2: &Ice| {
            if controller_is_a {
                a.peer(&kb).unwrap().restarts
            } else {
                b2.peer(&ka).unwrap().restarts
            }
        };
        let before = restarts(&a, &b2);
        let closed = |_: SocketAddr, _: SocketAddr| false;
        pump((&ka, &mut a), (&kb, &mut b2), &mut now, 800, &closed);
        let after = restarts(&a, &b2);
        assert!(after > before, "restarts {before} -> {after}");
        pump((&ka, &mut a), (&kb, &mut b2), &mut now, 3000, &open);
        assert!(a.peer(&kb).unwrap().state.is_connected());
        assert!(b2.peer(&ka).unwrap().state.is_connected());
    }

    #[test]
    fn bad_candidates_and_credentials_are_counted_and_change_nothing() {
        let (ka, kb) = (key(1), key(2));
        let mut a = Ice::new(&ka);
        let now = Instant::now();
        a.set_peers(&[kb], now);
        for bad in [
            "garbage",
            "candidate:1 1 udp x 1.2.3.4 5 typ host",
            "candidate:1 1 udp 1 999.2.3.4 5 typ host",
            "candidate:1 1 udp 1 1.2.3.4 99999 typ host",
        ] {
            a.on_signal(kb, Message::Candidate(bad.into()), now);
        }
        assert_eq!(a.ignored, 4);
        // NetBird's lines without the `candidate:` prefix are taken.
        a.on_signal(
            kb,
            Message::Candidate("1 1 udp 2130706431 192.0.2.9 40000 typ host".into()),
            now,
        );
        assert_eq!(a.ignored, 4);
        // STUN that no agent's credentials open is not taken.
        assert!(!a.handle_stun(
            "192.0.2.9:1".parse().unwrap(),
            "192.0.2.1:51820".parse().unwrap(),
            &[0u8; 20],
            now
        ));
    }
}
