//! A Signal relay: forwards peers' end-to-end encrypted messages to the peer named in
//! `remoteKey`, without opening them (the bodies are sealed between the two peers' keys).
//!
//! Peers register with `ConnectStream` and the `x-wiretrustee-peer-id` header; the server
//! confirms with `x-wiretrustee-peer-registered`. Messages for peers that are not connected are
//! dropped (the sender retries), as NetBird's signal server does.
//!
//! NetBird's registration proves nothing: whoever names a key receives that key's messages.
//! A relay given a key pair ([`SignalRelay::with_key`], the management server's) also takes a
//! proof of the key ([`PROOF_HEADER`]): the registering peer's send time sealed (NaCl box)
//! between its key and the relay's. A proof must be valid (fresh, not seen before); and once a
//! key has registered with one, it is refused without one. A key that never proved itself (a
//! NetBird agent) registers as in NetBird.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
};

use std::collections::{HashSet, VecDeque};

use base64::Engine as _;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming, metadata::MetadataValue};

use crate::signalexchange::{
    EncryptedMessage, PEER_ID_HEADER, PEER_REGISTERED_HEADER,
    signal_exchange_server::SignalExchange,
};

/// Messages queued per connected peer before new ones are dropped.
const QUEUE: usize = 256;

/// Metadata header with the proof of the registering key (base64 of a sealed body whose
/// plaintext is the send time, Unix seconds, 8 bytes big-endian).
pub const PROOF_HEADER: &str = "x-swiftgate-key-proof";

/// How far a proof's send time may be from the relay's clock, in seconds.
pub const PROOF_SKEW_SECS: u64 = 300;

/// Keys remembered as proven, at most (beyond it new proofs are refused).
const MAX_PROVEN: usize = 262_144;
/// Proof nonces remembered, at most (they expire after twice the skew; beyond it new proofs
/// are refused).
const MAX_NONCES: usize = 262_144;

/// The proof header value for `keys` towards a relay whose key is `relay` (sent at `now`).
pub fn key_proof(keys: &crate::KeyPair, relay: &crate::PublicKey, now: u64) -> String {
    let body = crate::SharedKey::between(keys.private(), relay).seal_bytes(&now.to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(body)
}

/// Keys that proved themselves, and the proofs' nonces seen lately.
#[derive(Default)]
struct Proven {
    keys: HashSet<String>,
    nonces: HashSet<[u8; 24]>,
    nonce_order: VecDeque<(u64, [u8; 24])>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where a connected peer's messages go.
type Outbox = mpsc::Sender<Result<EncryptedMessage, Status>>;

/// The relay state: connected peers by public key (base64).
#[derive(Default, Clone)]
pub struct SignalRelay {
    peers: Arc<Mutex<HashMap<String, Outbox>>>,
    /// The relay's key pair, if registrations may prove their key.
    key: Option<Arc<crate::KeyPair>>,
    proven: Arc<Mutex<Proven>>,
}

impl SignalRelay {
    /// A relay with no peers that takes no proofs (NetBird's behaviour).
    pub fn new() -> Self {
        Self::default()
    }

    /// A relay that checks proofs of keys made towards `key` (see the module docs).
    pub fn with_key(key: crate::KeyPair) -> Self {
        SignalRelay {
            key: Some(Arc::new(key)),
            ..Self::default()
        }
    }

    /// Checks a registration of `id` with an optional proof at `now`.
    fn admit(&self, id: &str, proof: Option<&str>, now: u64) -> Result<(), Status> {
        let mut proven = self.proven.lock().unwrap_or_else(|e| e.into_inner());
        let Some(proof) = proof else {
            if proven.keys.contains(id) {
                return Err(Status::permission_denied(format!(
                    "{id} registered with a proof of its key before; a registration without one \
                     is refused ({PROOF_HEADER})"
                )));
            }
            return Ok(());
        };
        let Some(relay) = &self.key else {
            // Nothing to check it against: registered as in NetBird.
            return Ok(());
        };
        let bad = |why: &str| Status::permission_denied(format!("{PROOF_HEADER}: {why}"));
        let peer =
            crate::PublicKey::from_base64(id).map_err(|_| bad("the peer id is not a key"))?;
        let body = base64::engine::general_purpose::STANDARD
            .decode(proof)
            .map_err(|_| bad("not base64"))?;
        let plain = crate::SharedKey::between(relay.private(), &peer)
            .open_bytes(&body)
            .map_err(|_| bad("not sealed by this key for this relay"))?;
        let sent = <[u8; 8]>::try_from(plain.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| bad("not a send time"))?;
        if sent.abs_diff(now) > PROOF_SKEW_SECS {
            return Err(bad("stale (replayed, or a clock is wrong)"));
        }
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&body[..24]);
        while let Some(&(t, n)) = proven.nonce_order.front() {
            if now < t + 2 * PROOF_SKEW_SECS {
                break;
            }
            proven.nonce_order.pop_front();
            proven.nonces.remove(&n);
        }
        if proven.nonces.contains(&nonce) {
            return Err(bad("seen before (replayed)"));
        }
        // Full: refused rather than forgetting a nonce (which would let its proof be replayed)
        // or a proven key (whose registration could then be taken without a proof).
        if proven.nonces.len() >= MAX_NONCES
            || (!proven.keys.contains(id) && proven.keys.len() >= MAX_PROVEN)
        {
            return Err(Status::resource_exhausted(
                "too many key proofs at once; try again in a few minutes",
            ));
        }
        proven.nonces.insert(nonce);
        proven.nonce_order.push_back((now, nonce));
        proven.keys.insert(id.to_string());
        Ok(())
    }

    /// How many peers are connected.
    pub fn connected(&self) -> usize {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn forward(&self, msg: EncryptedMessage) -> bool {
        let tx = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&msg.remote_key)
            .cloned();
        match tx {
            Some(tx) => tx.try_send(Ok(msg)).is_ok(),
            None => false,
        }
    }
}

#[tonic::async_trait]
impl SignalExchange for SignalRelay {
    async fn send(
        &self,
        request: Request<EncryptedMessage>,
    ) -> Result<Response<EncryptedMessage>, Status> {
        let msg = request.into_inner();
        if msg.remote_key.is_empty() || msg.key.is_empty() {
            return Err(Status::invalid_argument("key and remoteKey are required"));
        }
        if !self.forward(msg) {
            tracing::debug!("signal: recipient not connected, message dropped");
        }
        Ok(Response::new(EncryptedMessage::default()))
    }

    type ConnectStreamStream =
        Pin<Box<dyn Stream<Item = Result<EncryptedMessage, Status>> + Send + 'static>>;

    async fn connect_stream(
        &self,
        request: Request<Streaming<EncryptedMessage>>,
    ) -> Result<Response<Self::ConnectStreamStream>, Status> {
        let id = request
            .metadata()
            .get(PEER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| Status::invalid_argument(format!("missing {PEER_ID_HEADER} header")))?;
        let proof = request
            .metadata()
            .get(PROOF_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = self.admit(&id, proof, now_secs()) {
            tracing::warn!(peer = %id, error = %e.message(), "signal: registration refused");
            return Err(e);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), tx.clone());
        tracing::debug!(peer = %id, "signal: peer connected");
        let mut inbound = request.into_inner();
        let relay = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = inbound.next().await {
                // A peer may only send as itself.
                if msg.key == id {
                    relay.forward(msg);
                }
            }
            let mut peers = relay.peers.lock().unwrap_or_else(|e| e.into_inner());
            if peers.get(&id).is_some_and(|t| t.same_channel(&tx)) {
                peers.remove(&id);
            }
        });
        let mut resp =
            Response::new(Box::pin(ReceiverStream::new(rx)) as Self::ConnectStreamStream);
        resp.metadata_mut()
            .insert(PEER_REGISTERED_HEADER, MetadataValue::from_static("1"));
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyPair;

    #[test]
    fn proofs_bind_a_registration_to_its_key() {
        let relay_keys = KeyPair::generate();
        let relay = SignalRelay::with_key(relay_keys.clone());
        let (alice, mallory) = (KeyPair::generate(), KeyPair::generate());
        let id = alice.public().to_base64();
        let now = 1_000_000;
        // NetBird-style: no proof, accepted while the key never proved itself.
        relay.admit(&id, None, now).unwrap();
        let proof = key_proof(&alice, relay_keys.public(), now);
        relay.admit(&id, Some(&proof), now).unwrap();
        // The same proof again (a replay), a stale one, one made by another key: refused.
        assert!(relay.admit(&id, Some(&proof), now).is_err());
        let stale = key_proof(&alice, relay_keys.public(), now - 3600);
        assert!(relay.admit(&id, Some(&stale), now).is_err());
        let forged = key_proof(&mallory, relay_keys.public(), now);
        assert!(relay.admit(&id, Some(&forged), now).is_err());
        // Having proved itself, the key is refused without a proof.
        let e = relay.admit(&id, None, now).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // A relay without a key takes registrations as NetBird's does.
        SignalRelay::new().admit(&id, Some(&proof), now).unwrap();
    }
}
