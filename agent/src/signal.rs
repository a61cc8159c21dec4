//! Signal: the end-to-end sealed channel between peers through NetBird's Signal server, in
//! its message format. This module is the transport only: it keeps the stream up
//! (reconnecting with backoff), seals what [`crate::ice`] sends (OFFER/ANSWER with the ICE
//! credentials as `ufrag:pwd`, CANDIDATE lines) with our WireGuard key to the peer's, and
//! opens what arrives. A message that does not open, or whose payload does not parse, is
//! counted (`drops.signal_ignored`) and dropped. What the messages mean is [`crate::ice`]'s.

use std::{sync::Arc, time::Duration};

use swiftgate_proto::{
    envelope::{decrypt_signal, encrypt_signal},
    keys::{KeyPair, PublicKey},
    signalexchange::{
        Body, EncryptedMessage, PEER_ID_HEADER, body::Type,
        signal_exchange_client::SignalExchangeClient,
    },
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};

use crate::{ice::Message, wg::Device};

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

/// What Signal tells the connection driver.
#[derive(Debug)]
pub enum Event {
    /// The stream is (again) up: messages sent while it was down are lost.
    Connected,
    /// A message from a peer.
    Message(PublicKey, Message),
}

/// Follows the Signal stream forever (reconnecting with backoff): sends what `outbox` holds,
/// hands what arrives to `events`.
pub async fn run(
    server: Server,
    keys: KeyPair,
    port: u16,
    events: mpsc::Sender<Event>,
    mut outbox: mpsc::Receiver<(PublicKey, Message)>,
    device: Arc<Device>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let result = session(&server, &keys, port, &events, &mut outbox, &device).await;
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, url = %server.url, retry_in = ?backoff, "signal unreachable")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The Signal body of an ICE message.
fn to_body(m: &Message, port: u16) -> Body {
    match m {
        Message::Offer(c) => body(Type::Offer, Message::creds_payload(c), port),
        Message::Answer(c) => body(Type::Answer, Message::creds_payload(c), port),
        Message::Candidate(line) => body(Type::Candidate, line.clone(), port),
    }
}

/// The ICE message of a Signal body (`None`: a type ICE does not take, or a payload that
/// does not parse).
fn of_body(b: &Body) -> Option<Message> {
    match Type::try_from(b.r#type).ok()? {
        Type::Offer => Message::parse_creds(&b.payload).map(Message::Offer),
        Type::Answer => Message::parse_creds(&b.payload).map(Message::Answer),
        Type::Candidate => (!b.payload.is_empty() && b.payload.len() <= 512)
            .then(|| Message::Candidate(b.payload.clone())),
        _ => None,
    }
}

async fn session(
    server: &Server,
    keys: &KeyPair,
    port: u16,
    events: &mpsc::Sender<Event>,
    outbox: &mut mpsc::Receiver<(PublicKey, Message)>,
    device: &Device,
) -> anyhow::Result<()> {
    let url = server.url.as_str();
    let relay = *server.relay_key.lock().unwrap_or_else(|e| e.into_inner());
    let channel = swiftgate_proto::client::endpoint_with(url, &server.trust)?
        .connect()
        .await?;
    let mut client = SignalExchangeClient::new(channel);
    let (tx, rx) = mpsc::channel::<EncryptedMessage>(256);
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
    if events.send(Event::Connected).await.is_err() {
        return Ok(());
    }
    loop {
        tokio::select! {
            out = outbox.recv() => {
                let Some((to, m)) = out else { return Ok(()) };
                tx.send(encrypt_signal(&to_body(&m, port), keys, &to)).await?;
            }
            msg = inbound.next() => {
                let Some(msg) = msg else { anyhow::bail!("signal stream closed") };
                let msg = msg?;
                let Ok((from, b)) = decrypt_signal(&msg, keys.private()) else {
                    device.count_signal_ignored();
                    tracing::debug!("signal: message that does not open, ignored");
                    continue;
                };
                match of_body(&b) {
                    Some(m) => {
                        if events.send(Event::Message(from, m)).await.is_err() {
                            return Ok(());
                        }
                    }
                    None => {
                        device.count_signal_ignored();
                        tracing::debug!(peer = %from, kind = b.r#type, "signal: message ICE does not take, ignored");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// A protobuf field key: field number and wire type.
    fn key(field: u8, wire: u8) -> u8 {
        (field << 3) | wire
    }

    /// A length-delimited field.
    fn bytes_field(field: u8, v: &[u8]) -> Vec<u8> {
        let mut out = vec![key(field, 2), v.len() as u8];
        out.extend_from_slice(v);
        out
    }

    /// An OFFER as NetBird's client sends it, assembled by hand from the field numbers of
    /// signalexchange.proto (not by our encoder): type OFFER is 0, so proto3 leaves it out;
    /// the port 51820 as a varint; its version, the features it supports (packed), a
    /// Rosenpass key and address, its home relay and a session id, and a field from a newer
    /// version. The ICE part is read; everything else is skipped.
    #[test]
    fn a_netbird_client_offer_is_read() {
        let mut wire = Vec::new();
        wire.extend(bytes_field(2, b"nbUfrag1:nbPassword0123456789ab"));
        wire.extend([key(3, 0), 0xec, 0x94, 0x03]);
        wire.extend(bytes_field(4, b"0.59.3"));
        wire.extend(bytes_field(6, &[0x01]));
        let mut rosenpass = bytes_field(1, &[7; 32]);
        rosenpass.extend(bytes_field(2, b"192.0.2.9:9999"));
        wire.extend(bytes_field(7, &rosenpass));
        wire.extend(bytes_field(8, b"rels://relay.example.net:443"));
        wire.extend(bytes_field(10, &[1, 2, 3, 4, 5, 6, 7, 8]));
        wire.extend(bytes_field(12, b"from a newer client"));
        let b = Body::decode(wire.as_slice()).expect("a NetBird OFFER decodes");
        assert_eq!(b.wg_listen_port, 51820);
        assert_eq!(b.net_bird_version, "0.59.3");
        assert_eq!(
            b.relay_server_address.as_deref(),
            Some("rels://relay.example.net:443")
        );
        assert_eq!(
            of_body(&b),
            Some(Message::Offer(is::IceCreds {
                ufrag: "nbUfrag1".into(),
                pass: "nbPassword0123456789ab".into(),
            }))
        );
        // An ANSWER is the same with type 1; a CANDIDATE (type 2) carries pion's line
        // (`candidate:` prefix included).
        let mut answer = vec![key(1, 0), 1];
        answer.extend(bytes_field(2, b"u:p"));
        let b = Body::decode(answer.as_slice()).unwrap();
        assert!(matches!(of_body(&b), Some(Message::Answer(_))));
        let line =
            b"candidate:3 1 udp 1694498815 203.0.113.7 40001 typ srflx raddr 0.0.0.0 rport 51820";
        let mut cand = vec![key(1, 0), 2];
        cand.extend(bytes_field(2, line));
        let b = Body::decode(cand.as_slice()).unwrap();
        assert_eq!(
            of_body(&b),
            Some(Message::Candidate(
                String::from_utf8(line.to_vec()).unwrap()
            ))
        );
    }

    /// What we send, read field by field as NetBird's client reads it: OFFER (type 0, left
    /// out), `ufrag:pwd` in field 2, the WireGuard port in field 3, our version in field 4,
    /// and no relay address (we offer none of NetBird's own relay).
    #[test]
    fn our_offer_has_the_fields_netbird_reads() {
        let creds = is::IceCreds {
            ufrag: "Ab".into(),
            pass: "pw".into(),
        };
        let wire = to_body(&Message::Offer(creds), 51820).encode_to_vec();
        let mut want = bytes_field(2, b"Ab:pw");
        want.extend([key(3, 0), 0xec, 0x94, 0x03]);
        let version = concat!("swiftgate-", env!("CARGO_PKG_VERSION"));
        want.extend(bytes_field(4, version.as_bytes()));
        assert_eq!(wire, want);
    }

    #[test]
    fn ice_messages_map_to_netbird_bodies_and_back() {
        let creds = is::IceCreds {
            ufrag: "Uf1x".into(),
            pass: "pw0123456789abcdefghij".into(),
        };
        let offer = to_body(&Message::Offer(creds.clone()), 51820);
        assert_eq!(offer.r#type, Type::Offer as i32);
        assert_eq!(offer.payload, "Uf1x:pw0123456789abcdefghij");
        assert_eq!(offer.wg_listen_port, 51820);
        assert_eq!(of_body(&offer), Some(Message::Offer(creds.clone())));
        let answer = to_body(&Message::Answer(creds.clone()), 51820);
        assert_eq!(of_body(&answer), Some(Message::Answer(creds)));
        let line = "candidate:1 1 udp 2130706431 192.0.2.1 51820 typ host";
        let cand = to_body(&Message::Candidate(line.into()), 51820);
        assert_eq!(cand.payload, line);
        assert_eq!(of_body(&cand), Some(Message::Candidate(line.into())));
        // Not ICE's, or not parsable: left out.
        for (t, payload) in [
            (Type::Offer, "no-colon"),
            (Type::Answer, "a:b:c"),
            (Type::Candidate, ""),
            (Type::Mode, "x"),
        ] {
            assert_eq!(
                of_body(&body(t, payload.into(), 1)),
                None,
                "{t:?} {payload}"
            );
        }
    }
}
