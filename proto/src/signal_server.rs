//! A Signal relay: forwards peers' end-to-end encrypted messages to the peer named in
//! `remoteKey`, without opening them (the bodies are sealed between the two peers' keys).
//!
//! Peers register with `ConnectStream` and the `x-wiretrustee-peer-id` header; the server
//! confirms with `x-wiretrustee-peer-registered`. Messages for peers that are not connected are
//! dropped (the sender retries), as NetBird's signal server does.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
};

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming, metadata::MetadataValue};

use crate::signalexchange::{
    EncryptedMessage, PEER_ID_HEADER, PEER_REGISTERED_HEADER,
    signal_exchange_server::SignalExchange,
};

/// Messages queued per connected peer before new ones are dropped.
const QUEUE: usize = 256;

/// Where a connected peer's messages go.
type Outbox = mpsc::Sender<Result<EncryptedMessage, Status>>;

/// The relay state: connected peers by public key (base64).
#[derive(Default, Clone)]
pub struct SignalRelay {
    peers: Arc<Mutex<HashMap<String, Outbox>>>,
}

impl SignalRelay {
    /// A relay with no peers.
    pub fn new() -> Self {
        Self::default()
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
