//! Finding peers' endpoints through Signal: each side sends an OFFER (or ANSWER) with its
//! WireGuard listen port and one CANDIDATE per local address, sealed end to end, in NetBird's
//! Signal message format. The receiver picks the best candidate (on-link first, then private,
//! then anything) as the peer's endpoint until WireGuard itself learns a better one (roaming).
//!
//! Server-reflexive candidates (the NAT's mapping of the WireGuard port, found through STUN
//! by [`crate::discovery`]) are offered too, and offered again when they change: two peers
//! behind NATs that map endpoint-independently reach each other through them (WireGuard's
//! handshake retries open both NATs' filters). Relay candidates (a NetBird peer's TURN
//! allocations) are ignored. Connectivity checks and the relay fallback come with the ICE
//! agent.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use swiftgate_proto::{
    envelope::{decrypt_signal, encrypt_signal},
    keys::{KeyPair, PublicKey},
    signalexchange::{
        Body, EncryptedMessage, PEER_ID_HEADER, body::Type,
        signal_exchange_client::SignalExchangeClient,
    },
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};

use crate::wg::Device;

/// Local addresses worth offering (no loopback, link-local or overlay addresses), with their
/// prefixes (to recognise on-link candidates).
pub fn local_candidates(exclude_iface: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        if a.interface_name == exclude_iface {
            continue;
        }
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let net = match (
            addr.as_sockaddr_in(),
            mask.as_sockaddr_in(),
            addr.as_sockaddr_in6(),
            mask.as_sockaddr_in6(),
        ) {
            (Some(a), Some(m), _, _) => {
                let len = u32::from(m.ip()).count_ones() as u8;
                IpNet::new(IpAddr::V4(a.ip()), len).ok()
            }
            (_, _, Some(a), Some(m)) => {
                let len = u128::from(m.ip()).count_ones() as u8;
                IpNet::new(IpAddr::V6(a.ip()), len).ok()
            }
            _ => None,
        };
        let Some(net) = net else { continue };
        let ip = net.addr();
        let link_local = match ip {
            IpAddr::V4(v) => v.is_link_local(),
            IpAddr::V6(v) => v.is_unicast_link_local(),
        };
        if !ip.is_loopback() && !link_local {
            out.push(net);
        }
    }
    out
}

/// An ICE host candidate line for `ip:port`.
pub fn candidate_line(n: usize, ip: IpAddr, port: u16) -> String {
    format!("candidate:{n} 1 udp 2130706431 {ip} {port} typ host")
}

/// An ICE server-reflexive candidate line for `addr`, the mapping of local port `base`.
pub fn srflx_line(n: usize, addr: SocketAddr, base: u16) -> String {
    let unspecified = if addr.is_ipv4() { "0.0.0.0" } else { "::" };
    format!(
        "candidate:{n} 1 udp 1694498815 {} {} typ srflx raddr {unspecified} rport {base}",
        addr.ip(),
        addr.port()
    )
}

/// The type of an ICE candidate (`typ ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateKind {
    /// A local address.
    Host,
    /// A NAT's mapping, as a STUN server saw it.
    ServerReflexive,
    /// Learnt from a connectivity check.
    PeerReflexive,
    /// A TURN allocation (not usable without TURN on this side).
    Relay,
}

impl CandidateKind {
    /// What a peer's endpoint taken from such a candidate is shown as.
    pub fn origin(self) -> crate::wg::EndpointOrigin {
        use crate::wg::EndpointOrigin;
        match self {
            CandidateKind::Host | CandidateKind::Relay => EndpointOrigin::Host,
            CandidateKind::ServerReflexive | CandidateKind::PeerReflexive => EndpointOrigin::Srflx,
        }
    }
}

/// The type named in a candidate line (`typ host` when it names none).
pub fn candidate_kind(line: &str) -> CandidateKind {
    let mut f = line.split_whitespace();
    while let Some(w) = f.next() {
        if w == "typ" {
            return match f.next() {
                Some("srflx") => CandidateKind::ServerReflexive,
                Some("prflx") => CandidateKind::PeerReflexive,
                Some("relay") => CandidateKind::Relay,
                _ => CandidateKind::Host,
            };
        }
    }
    CandidateKind::Host
}

/// The address in an ICE candidate line.
pub fn parse_candidate(line: &str) -> Option<SocketAddr> {
    let f: Vec<&str> = line
        .trim()
        .trim_start_matches("a=")
        .split_whitespace()
        .collect();
    if f.len() < 8 || !f[0].starts_with("candidate:") || !f[2].eq_ignore_ascii_case("udp") {
        return None;
    }
    Some(SocketAddr::new(f[4].parse().ok()?, f[5].parse().ok()?))
}

/// How good a candidate is from here: on one of our links 4, a NAT's mapping 3, a private
/// address on another link 2 (behind its own NAT it is usually unreachable from here), any
/// other address 1; 0 for relay candidates, which are not used.
pub fn score(c: &SocketAddr, kind: CandidateKind, local: &[IpNet]) -> u8 {
    if kind == CandidateKind::Relay {
        return 0;
    }
    if local.iter().any(|n| n.contains(&c.ip())) {
        return 4;
    }
    if matches!(
        kind,
        CandidateKind::ServerReflexive | CandidateKind::PeerReflexive
    ) {
        return 3;
    }
    let private = match c.ip() {
        IpAddr::V4(v) => v.is_private(),
        IpAddr::V6(v) => v.is_unique_local(),
    };
    if private { 2 } else { 1 }
}

fn body(kind: Type, payload: String, port: u16) -> Body {
    Body {
        r#type: kind as i32,
        payload,
        wg_listen_port: port as u32,
        net_bird_version: concat!("swiftgate-", env!("CARGO_PKG_VERSION")).into(),
        ..Default::default()
    }
}

/// The Signal server and how to talk to it.
#[derive(Clone, Debug)]
pub struct Server {
    /// `https://host:port` (or `http://`).
    pub url: String,
    /// Whom TLS trusts.
    pub trust: swiftgate_proto::client::Trust,
    /// The management server's key once known: registrations prove the peer's key towards it
    /// (checked by a swiftgate server's relay).
    pub relay_key: Arc<std::sync::Mutex<Option<PublicKey>>>,
}

/// Follows the Signal stream forever (reconnecting with backoff): offers to every peer in
/// `peers`, answers offers, and gives the device each peer's best candidate.
pub async fn run(
    server: Server,
    keys: KeyPair,
    port: u16,
    overlay: String,
    mut peers: watch::Receiver<Vec<String>>,
    mut reflexive: watch::Receiver<Vec<SocketAddr>>,
    device: Arc<Device>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let local = local_candidates(&overlay);
        let result = session(
            &server,
            &keys,
            port,
            &local,
            &mut peers,
            &mut reflexive,
            &device,
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, url = %server.url, retry_in = ?backoff, "signal unreachable");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn session(
    server: &Server,
    keys: &KeyPair,
    port: u16,
    local: &[IpNet],
    peers: &mut watch::Receiver<Vec<String>>,
    reflexive: &mut watch::Receiver<Vec<SocketAddr>>,
    device: &Device,
) -> anyhow::Result<()> {
    let url = server.url.as_str();
    let relay = *server.relay_key.lock().unwrap_or_else(|e| e.into_inner());
    let channel = swiftgate_proto::client::endpoint_with(url, &server.trust)?
        .connect()
        .await?;
    let mut client = SignalExchangeClient::new(channel);
    let (tx, rx) = mpsc::channel::<EncryptedMessage>(64);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert(PEER_ID_HEADER, keys.public().to_base64().parse()?);
    if let Some(relay) = &relay {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        req.metadata_mut().insert(
            swiftgate_proto::signal_server::PROOF_HEADER,
            swiftgate_proto::signal_server::key_proof(keys, relay, now).parse()?,
        );
    }
    let mut inbound = client.connect_stream(req).await?.into_inner();
    tracing::info!(%url, "signal connected");
    let send_all = |to: &PublicKey, kind: Type, srflx: &[SocketAddr]| {
        let mut v = vec![encrypt_signal(
            &body(kind, "swiftgate:direct".into(), port),
            keys,
            to,
        )];
        // Numbered in order (the foundation field): local addresses, then the mappings.
        let host = local
            .iter()
            .enumerate()
            .map(|(i, n)| candidate_line(i, n.addr(), port));
        let mapped = srflx
            .iter()
            .enumerate()
            .map(|(i, a)| srflx_line(local.len() + i, *a, port));
        for line in host.chain(mapped) {
            v.push(encrypt_signal(&body(Type::Candidate, line, port), keys, to));
        }
        v
    };
    let mut srflx: Vec<SocketAddr> = reflexive.borrow_and_update().clone();
    let mut offered: BTreeSet<String> = BTreeSet::new();
    let mut best: HashMap<String, u8> = HashMap::new();
    // Every candidate heard, also from peers not (yet) in our map: maps and offers race.
    let mut heard: HashMap<String, Vec<(SocketAddr, CandidateKind)>> = HashMap::new();
    loop {
        let current = peers.borrow_and_update().clone();
        // A peer that left the map starts over when it comes back (the device forgot it).
        offered.retain(|p| current.contains(p));
        best.retain(|p, _| current.contains(p));
        // Candidates heard before the peer was in our map.
        for p in &current {
            let Ok(pk) = PublicKey::from_base64(p) else {
                continue;
            };
            for (addr, kind) in heard.get(p).into_iter().flatten() {
                let s = score(addr, *kind, local);
                if s > 0
                    && best.get(p).is_none_or(|b| s > *b)
                    && device.suggest_endpoint(pk.as_bytes(), *addr, kind.origin())
                {
                    best.insert(p.clone(), s);
                }
            }
        }
        // Offer to peers we have not offered to on this stream.
        for p in &current {
            if offered.contains(p) {
                continue;
            }
            let Ok(pk) = PublicKey::from_base64(p) else {
                continue;
            };
            for m in send_all(&pk, Type::Offer, &srflx) {
                tx.send(m).await?;
            }
            offered.insert(p.clone());
        }
        tokio::select! {
            changed = peers.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            // New reflexive addresses: offered to every peer again.
            Ok(()) = reflexive.changed() => {
                srflx = reflexive.borrow_and_update().clone();
                offered.clear();
            }
            msg = inbound.next() => {
                let Some(msg) = msg else { anyhow::bail!("signal stream closed") };
                let msg = msg?;
                let Ok((from, b)) = decrypt_signal(&msg, keys.private()) else {
                    device.count_signal_ignored();
                    tracing::debug!("signal: message that does not open, ignored");
                    continue;
                };
                let from_b64 = from.to_base64();
                match Type::try_from(b.r#type) {
                    // An offer or answer starts the peer's candidates afresh: a re-offer
                    // after its mapping changed replaces what was heard before.
                    Ok(kind @ (Type::Offer | Type::Answer)) => {
                        heard.remove(&from_b64);
                        best.remove(&from_b64);
                        if kind == Type::Offer {
                            for m in send_all(&from, Type::Answer, &srflx) {
                                tx.send(m).await?;
                            }
                        }
                    }
                    Ok(Type::Candidate) => {
                        let Some(addr) = parse_candidate(&b.payload) else {
                            device.count_signal_ignored();
                            continue;
                        };
                        let kind = candidate_kind(&b.payload);
                        let list = heard.entry(from_b64.clone()).or_default();
                        if !list.contains(&(addr, kind)) && list.len() < 16 {
                            list.push((addr, kind));
                        }
                        let s = score(&addr, kind, local);
                        if s > 0 && best.get(&from_b64).is_none_or(|b| s > *b) && device.suggest_endpoint(from.as_bytes(), addr, kind.origin()) {
                            best.insert(from_b64, s);
                            tracing::debug!(peer = %from, endpoint = %addr, "endpoint from signal");
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_round_trip_and_rank() {
        let line = candidate_line(3, "203.0.113.7".parse().unwrap(), 51820);
        assert_eq!(
            parse_candidate(&line),
            Some("203.0.113.7:51820".parse().unwrap())
        );
        // A NetBird/pion style line with extra attributes.
        let pion = "candidate:2596 1 udp 2130706431 198.51.100.4 40123 typ host generation 0";
        assert_eq!(
            parse_candidate(pion),
            Some("198.51.100.4:40123".parse().unwrap())
        );
        assert_eq!(
            parse_candidate("candidate:1 1 tcp 1 192.0.2.1 1 typ host"),
            None
        );
        assert_eq!(parse_candidate("garbage"), None);
        let local: Vec<IpNet> = vec!["203.0.113.2/24".parse().unwrap()];
        let host = CandidateKind::Host;
        assert_eq!(score(&"203.0.113.7:1".parse().unwrap(), host, &local), 4);
        assert_eq!(score(&"10.1.2.3:1".parse().unwrap(), host, &local), 2);
        assert_eq!(score(&"198.51.100.1:1".parse().unwrap(), host, &local), 1);
        // A NAT's mapping beats another site's local address.
        let srflx = srflx_line(7, "198.51.100.9:40000".parse().unwrap(), 51820);
        assert_eq!(
            srflx,
            "candidate:7 1 udp 1694498815 198.51.100.9 40000 typ srflx raddr 0.0.0.0 rport 51820"
        );
        assert_eq!(candidate_kind(&srflx), CandidateKind::ServerReflexive);
        assert_eq!(
            parse_candidate(&srflx),
            Some("198.51.100.9:40000".parse().unwrap())
        );
        assert_eq!(
            score(
                &"198.51.100.9:40000".parse().unwrap(),
                CandidateKind::ServerReflexive,
                &local
            ),
            3
        );
        // ... and a private address behind another NAT.
        assert!(
            score(
                &"203.0.113.99:1".parse().unwrap(),
                CandidateKind::ServerReflexive,
                &[]
            ) > score(&"192.168.1.20:51820".parse().unwrap(), host, &[])
        );
        // A relay candidate (a NetBird peer's TURN allocation) is never used.
        let relay = "candidate:3 1 udp 16777215 192.0.2.50 61000 typ relay raddr 0.0.0.0 rport 0";
        assert_eq!(candidate_kind(relay), CandidateKind::Relay);
        assert_eq!(
            score(
                &"192.0.2.50:61000".parse().unwrap(),
                CandidateKind::Relay,
                &local
            ),
            0
        );
        assert_eq!(candidate_kind(pion), CandidateKind::Host);
    }
}
