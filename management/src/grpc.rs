//! The gRPC management service, wire-compatible with NetBird's `management.ManagementService`:
//! `GetServerKey` and `isHealthy` in clear; `Login`, `Sync`, `SyncMeta` and `Logout` sealed
//! with NaCl box between the peer's WireGuard key and the server key (generated once and
//! stored). `Sync` streams the peer's whole state and pushes a new one, with a higher serial,
//! whenever a change alters that peer's map.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use swiftgate_proto::envelope::{NONCE_LEN, SharedKey, decrypt_message};
use swiftgate_proto::keys::{KeyPair, PrivateKey, PublicKey};
use swiftgate_proto::management as pb;
use swiftgate_proto::management::management_service_server::{
    ManagementService, ManagementServiceServer,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::model::{ModelError, RegisterPeer, check_ssh_key};
use crate::netmap::{Netmapper, NetworkMap, proto as conv};
use crate::replay::{GuessLimiter, ReplayGuard};
use crate::service::{Service, ServiceError, now_secs};
use crate::turn::{RelayConfig, TurnConfig};

/// Default gRPC address (NetBird's management port). Agents connect here, so it listens on
/// every interface; the API behind it only answers sealed requests of registered keys.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:33073";

/// Largest gRPC message the server sends (NetBird users hit 11.7 MB maps; the default is 4
/// MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Largest gRPC message the server accepts: requests come from anyone before they are opened,
/// and a sealed Login with a large system description is a few KiB. A larger one is refused
/// from its length prefix, before it is read.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Concurrent streams per HTTP/2 connection (an agent uses one Sync and one Signal stream).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// How long a shutdown waits for connections to drain after the Sync streams were ended
/// (other streams, e.g. Signal's, do not end by themselves); then the server stops anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Servers the agents are told about (`NetbirdConfig`).
#[derive(Clone, Debug, Default)]
pub struct PeerServices {
    /// Signal server `host:port`, if any.
    pub signal: Option<String>,
    /// Signal over TLS.
    pub signal_tls: bool,
    /// STUN URIs (`stun:host:3478`).
    pub stuns: Vec<String>,
    /// NetBird relay servers and the secret their tokens are signed with.
    pub relay: Option<RelayConfig>,
    /// TURN servers and the secret their credentials are derived from.
    pub turn: Option<TurnConfig>,
}

impl PeerServices {
    /// What a peer is told about the servers at `now` (Unix seconds): TURN servers with
    /// credentials issued to it now.
    fn netbird_config(&self, peer_id: &str, now: u64) -> pb::NetbirdConfig {
        pb::NetbirdConfig {
            stuns: self
                .stuns
                .iter()
                .map(|u| pb::HostConfig {
                    uri: u.clone(),
                    protocol: pb::host_config::Protocol::Udp as i32,
                })
                .collect(),
            turns: self.turns(peer_id, now),
            signal: self.signal.as_ref().map(|s| pb::HostConfig {
                uri: s.clone(),
                protocol: if self.signal_tls {
                    pb::host_config::Protocol::Https as i32
                } else {
                    pb::host_config::Protocol::Http as i32
                },
            }),
            relay: self.relay_config(now),
            metrics: None,
        }
    }
}

impl PeerServices {
    /// The TURN servers with credentials issued to `peer_id` at `now`.
    fn turns(&self, peer_id: &str, now: u64) -> Vec<pb::ProtectedHostConfig> {
        let Some(t) = &self.turn else {
            return Vec::new();
        };
        let c = t.issue(peer_id, now);
        t.uris
            .iter()
            .map(|u| pb::ProtectedHostConfig {
                host_config: Some(pb::HostConfig {
                    uri: u.clone(),
                    protocol: turn_protocol(u) as i32,
                }),
                user: c.username.clone(),
                password: c.password.clone(),
            })
            .collect()
    }

    /// The NetBird relays with a token issued at `now`.
    fn relay_config(&self, now: u64) -> Option<pb::RelayConfig> {
        self.relay.as_ref().map(|r| {
            let t = r.issue(now);
            pb::RelayConfig {
                urls: r.urls.clone(),
                token_payload: t.payload,
                token_signature: t.signature,
            }
        })
    }

    /// How often a Sync stream sends fresh TURN credentials and relay tokens (three quarters
    /// of the shorter lifetime), if any are handed out.
    pub fn refresh_in(&self) -> Option<Duration> {
        let turn = self.turn.as_ref().map(TurnConfig::refresh_in);
        let relay = self.relay.as_ref().map(RelayConfig::refresh_in);
        turn.into_iter().chain(relay).min()
    }

    /// The Sync item that only renews credentials (no map): NetBird agents and swiftgate's
    /// take the servers' new credentials from it and keep their map. It repeats the last
    /// map's posture checks: agents answer the checks of every Sync item, and an empty list
    /// would read as "no checks" (their answers dropped, the peer failing process checks
    /// until the next map).
    fn credentials_only(
        &self,
        peer_id: &str,
        now: u64,
        last: Option<&NetworkMap>,
    ) -> pb::SyncResponse {
        pb::SyncResponse {
            netbird_config: Some(pb::NetbirdConfig {
                turns: self.turns(peer_id, now),
                relay: self.relay_config(now),
                ..Default::default()
            }),
            checks: last.map(conv::checks).unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// The transport a TURN URI names: TCP for `?transport=tcp` and `turns:` (TLS over TCP),
/// UDP otherwise.
fn turn_protocol(uri: &str) -> pb::host_config::Protocol {
    use pb::host_config::Protocol;
    if uri.starts_with("turns:") || uri.contains("transport=tcp") {
        Protocol::Tcp
    } else {
        Protocol::Udp
    }
}

/// The gRPC service over the management [`Service`].
pub struct Grpc {
    svc: Arc<Service>,
    key: Arc<KeyPair>,
    services: PeerServices,
    /// Open Sync streams per peer id (a peer is connected while it has one).
    streams: Arc<Mutex<HashMap<String, usize>>>,
    distributor: Arc<Distributor>,
    /// Set to `true` when the server shuts down: every Sync stream ends.
    stopping: watch::Sender<bool>,
    /// Nonces (and sealed times) of the envelopes received: replays are refused.
    replay: Arc<Mutex<ReplayGuard>>,
    /// Failed registrations per source address.
    guesses: Arc<Mutex<GuessLimiter>>,
}

/// A sealed request that may carry swiftgate's sealed send time (`swiftgateSentAt`).
trait SentAt {
    /// The sealed send time, 0 if the sender did not seal one (NetBird's agents).
    fn sent_at(&self) -> i64;
}

impl SentAt for pb::LoginRequest {
    fn sent_at(&self) -> i64 {
        self.swiftgate_sent_at
    }
}

impl SentAt for pb::SyncRequest {
    fn sent_at(&self) -> i64 {
        self.swiftgate_sent_at
    }
}

impl SentAt for pb::SyncMetaRequest {
    fn sent_at(&self) -> i64 {
        self.swiftgate_sent_at
    }
}

impl SentAt for pb::Empty {
    fn sent_at(&self) -> i64 {
        self.swiftgate_sent_at
    }
}

fn status_of(e: ServiceError) -> Status {
    match e {
        ServiceError::Model(m) => match m {
            ModelError::Invalid(s) => Status::invalid_argument(s),
            ModelError::NotFound { .. } => Status::not_found(m.to_string()),
            ModelError::Conflict(s) => Status::failed_precondition(s),
            // NetBird answers NotFound for an unusable setup key.
            ModelError::SetupKeyRejected(s) => Status::not_found(format!("couldn't add peer: {s}")),
            ModelError::PeerNotAllowed(s) => Status::permission_denied(s),
        },
        ServiceError::Store(s) => {
            tracing::error!(error = %s, "store error in gRPC call");
            Status::internal("internal error")
        }
        ServiceError::Forbidden(s) => Status::permission_denied(s),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(status_of),
        Err(e) => {
            tracing::error!(error = %e, "gRPC task failed");
            Err(Status::internal("internal error"))
        }
    }
}

/// Whether two maps differ only in their serial (nothing the peer sees changed).
fn same_content(a: &NetworkMap, b: &NetworkMap) -> bool {
    a.peer_config == b.peer_config
        && a.remote_peers == b.remote_peers
        && a.routes == b.routes
        && a.firewall_rules == b.firewall_rules
        && a.route_firewall_rules == b.route_firewall_rules
        && a.dns == b.dns
        && a.checks == b.checks
}

/// The latest map of one peer, as the distributor publishes it.
#[derive(Clone)]
enum Slot {
    /// Not computed yet.
    Pending,
    /// The current map.
    Map(Arc<NetworkMap>),
    /// The peer was deleted.
    Removed,
}

/// Computes the maps of every peer with an open Sync stream once per change, over one shared
/// index, and publishes each one whose content changed to that peer's streams.
struct Distributor {
    svc: Arc<Service>,
    peers: Mutex<HashMap<String, watch::Sender<Slot>>>,
    started: std::sync::Once,
    /// Ends the distribution task at shutdown.
    stopping: watch::Receiver<bool>,
}

impl Distributor {
    fn subscribe(self: &Arc<Self>, peer_id: &str) -> watch::Receiver<Slot> {
        self.started.call_once(|| {
            let d = self.clone();
            tokio::spawn(async move { d.run().await });
        });
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .entry(peer_id.to_string())
            .or_insert_with(|| watch::channel(Slot::Pending).0)
            .subscribe()
    }

    /// Stores `slot` unless it is older than, or the same as, what the peer has.
    fn offer(tx: &watch::Sender<Slot>, slot: Slot) {
        tx.send_if_modified(|cur| {
            let replace = match (&*cur, &slot) {
                (Slot::Map(old), Slot::Map(new)) => {
                    new.serial >= old.serial && !same_content(old, new)
                }
                (Slot::Removed, _) => false,
                (_, Slot::Pending) => false,
                _ => true,
            };
            if replace {
                *cur = slot;
            }
            replace
        });
    }

    /// Recomputes the maps of `only` (or of every subscribed peer) on the current account.
    fn publish(&self, only: Option<&str>) {
        let targets: Vec<(String, watch::Sender<Slot>)> = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.retain(|_, tx| tx.receiver_count() > 0);
            peers
                .iter()
                .filter(|(id, _)| only.is_none_or(|o| o == id.as_str()))
                .map(|(id, tx)| (id.clone(), tx.clone()))
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let account = self.svc.account();
        let started = std::time::Instant::now();
        let mapper = Netmapper::new(&account);
        for (id, tx) in &targets {
            let slot = match mapper.map_for(id) {
                Some(m) => Slot::Map(Arc::new(m)),
                None => Slot::Removed,
            };
            Self::offer(tx, slot);
        }
        tracing::debug!(
            serial = account.serial,
            peers = targets.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "network maps computed"
        );
    }

    async fn run(self: Arc<Self>) {
        let mut changes = self.svc.subscribe();
        let mut stopping = self.stopping.clone();
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = stopping.wait_for(|s| *s) => break,
            }
            let d = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || d.publish(None)).await {
                tracing::warn!(error = %e, "map distribution task failed");
            }
        }
    }
}

impl Grpc {
    /// The service with the server key (generated and stored on first use).
    pub fn new(svc: Arc<Service>, services: PeerServices) -> anyhow::Result<Self> {
        let private = svc
            .server_private_key(|| PrivateKey::generate().to_base64().to_string())
            .context("loading the server key")?;
        let key = KeyPair::from_private_base64(&private).context("stored server key")?;
        tracing::info!(public_key = %key.public().to_base64(), "server key");
        let (stopping, stopping_rx) = watch::channel(false);
        Ok(Grpc {
            distributor: Arc::new(Distributor {
                svc: svc.clone(),
                peers: Mutex::new(HashMap::new()),
                started: std::sync::Once::new(),
                stopping: stopping_rx,
            }),
            stopping,
            svc,
            key: Arc::new(key),
            services,
            streams: Arc::new(Mutex::new(HashMap::new())),
            replay: Arc::new(Mutex::new(ReplayGuard::new())),
            guesses: Arc::new(Mutex::new(GuessLimiter::new())),
        })
    }

    /// The server's public key.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public()
    }

    /// A handle that ends every Sync stream (now and later) when triggered: each stream's peer
    /// is marked disconnected, then the stream ends with `UNAVAILABLE` so the agent reconnects
    /// (to this server's successor) at once. [`serve_on`] triggers it on shutdown.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stopping.clone())
    }

    /// Opens a request envelope: the sender's key and the message. Bad keys or bodies are
    /// `InvalidArgument`, as in NetBird. A replayed envelope (its nonce seen before from this
    /// key, or its sealed send time far from now) is `PermissionDenied` ([`ReplayGuard`]).
    fn open<M: prost::Message + Default + SentAt>(
        &self,
        req: &pb::EncryptedMessage,
    ) -> Result<(PublicKey, M), Status> {
        self.open_from(req, None).map(|(key, msg, _)| (key, msg))
    }

    /// [`Self::open`] for a request that may come from a key that is not a peer yet (Login):
    /// such a key is refused if its address `from` failed too many registrations, before
    /// anything about it is remembered. Other requests from such keys are refused outright
    /// (they can only fail), without remembering anything either. Also returns whether the
    /// key is a peer's.
    fn open_from<M: prost::Message + Default + SentAt>(
        &self,
        req: &pb::EncryptedMessage,
        registration_from: Option<Option<std::net::IpAddr>>,
    ) -> Result<(PublicKey, M, bool), Status> {
        let (key, msg): (PublicKey, M) = decrypt_message(req, self.key.private())
            .map_err(|e| Status::invalid_argument(format!("invalid request message: {e}")))?;
        let registered = self.svc.account().peer_by_key(&key.to_base64()).is_some();
        if !registered {
            match registration_from {
                None => {
                    return Err(Status::permission_denied(
                        "peer is not registered; log in with a setup key first",
                    ));
                }
                Some(Some(ip))
                    if !self
                        .guesses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .allowed(ip, now_secs()) =>
                {
                    tracing::warn!(%ip, "registration refused: too many failed registrations from this address");
                    return Err(Status::resource_exhausted(format!(
                        "too many failed registrations from {ip}; wait {} s",
                        crate::replay::GUESS_WINDOW_SECS
                    )));
                }
                Some(_) => {}
            }
        }
        // Opened, so the body holds at least a nonce and a tag.
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&req.body[..NONCE_LEN]);
        // Registered peers' nonces are kept apart from those of keys anyone can make.
        let verdict = self.replay.lock().unwrap_or_else(|e| e.into_inner()).check(
            *key.as_bytes(),
            nonce,
            msg.sent_at(),
            now_secs(),
            registered,
        );
        if let Err(why) = verdict {
            tracing::warn!(peer_key = %key.to_base64(), %why, "sealed request refused");
            return Err(match why {
                crate::replay::Replay::Busy => Status::resource_exhausted(why.to_string()),
                _ => Status::permission_denied(why.to_string()),
            });
        }
        Ok((key, msg, registered))
    }

    fn seal(&self, to: &PublicKey, msg: &impl prost::Message) -> pb::EncryptedMessage {
        SharedKey::between(self.key.private(), to).encrypted_message(msg, self.key.public())
    }
}

/// Ends the Sync streams of a [`Grpc`] service; see [`Grpc::stopper`].
#[derive(Clone, Debug)]
pub struct Stopper(watch::Sender<bool>);

impl Stopper {
    /// Ends every open Sync stream and refuses new ones. Idempotent.
    pub fn stop(&self) {
        if !self.0.send_replace(true) {
            tracing::info!("ending Sync streams");
        }
    }
}

/// What a Sync stream is told when the server shuts down.
fn shutting_down() -> Status {
    Status::unavailable("management server is shutting down; reconnect")
}

/// One item of the Sync stream.
pub(crate) fn sync_response(
    services: &PeerServices,
    peer_id: &str,
    map: &NetworkMap,
    now: u64,
) -> pb::SyncResponse {
    pb::SyncResponse {
        netbird_config: Some(services.netbird_config(peer_id, now)),
        peer_config: Some(conv::peer_config(&map.peer_config)),
        network_map: Some(conv::network_map(map)),
        checks: conv::checks(map),
        // The deprecated duplicate flag, set as NetBird's ToSyncResponse does.
        remote_peers_is_empty: map.remote_peers.is_empty(),
        ..Default::default()
    }
}

/// The registered, non-removed peer id of a key, or PermissionDenied.
fn peer_of(svc: &Service, key: &PublicKey) -> Result<String, Status> {
    svc.account()
        .peer_by_key(&key.to_base64())
        .map(|p| p.id.clone())
        .ok_or_else(|| Status::permission_denied("peer is not registered"))
}

type SyncStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::EncryptedMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ManagementService for Grpc {
    async fn get_server_key(
        &self,
        _req: Request<pb::Empty>,
    ) -> Result<Response<pb::ServerKeyResponse>, Status> {
        let expires = now_secs() + 24 * 3600;
        Ok(Response::new(pb::ServerKeyResponse {
            key: self.key.public().to_base64(),
            expires_at: Some(prost_types::Timestamp {
                seconds: expires as i64,
                nanos: 0,
            }),
            version: 0,
        }))
    }

    async fn login(
        &self,
        req: Request<pb::EncryptedMessage>,
    ) -> Result<Response<pb::EncryptedMessage>, Status> {
        let from = req.remote_addr().map(|a| a.ip());
        let (peer_key, login, registered): (PublicKey, pb::LoginRequest, bool) =
            self.open_from(req.get_ref(), Some(from))?;
        let Some(meta) = login.meta.as_ref() else {
            return Err(Status::failed_precondition(
                "peer system meta has to be provided to log in",
            ));
        };
        if let Some(k) = &login.peer_keys
            && !k.wg_pub_key.is_empty()
            && k.wg_pub_key != peer_key.to_base64().as_bytes()
        {
            return Err(Status::invalid_argument(
                "peerKeys.wgPubKey differs from the envelope's key",
            ));
        }
        let ssh_key = match &login.peer_keys {
            Some(k) => String::from_utf8(k.ssh_pub_key.clone())
                .map_err(|_| Status::invalid_argument("peerKeys.sshPubKey is not UTF-8 text"))?,
            None => String::new(),
        };
        // Checked before anything is written, so a bad key changes nothing.
        check_ssh_key(&ssh_key)
            .map_err(|e| Status::invalid_argument(format!("peerKeys.sshPubKey: {e}")))?;
        let meta = conv::peer_meta(meta);
        let key_text = peer_key.to_base64();
        // (A registration from an address that failed too often was refused when opened.)
        let registering = !registered;
        let svc = self.svc.clone();
        let setup_key = login.setup_key.clone();
        let peer = blocking(move || {
            let known = svc.account().peer_by_key(&key_text).map(|p| p.id.clone());
            match known {
                Some(id) => {
                    // Last-seen is bookkeeping; only a changed meta (posture inputs) is a change.
                    // Both write only their own fields, never the whole (maybe stale) peer.
                    svc.peer_seen("login", &id, None)?;
                    svc.peer_meta("login_meta", &id, &meta)?;
                    // A key sent at Login replaces the stored one (NetBird updates it too).
                    if !ssh_key.trim().is_empty() {
                        svc.mutate("login_ssh_key", |a, _| a.set_peer_ssh_key(&id, &ssh_key))?;
                    }
                    svc.account().peers.get(&id).cloned().ok_or_else(|| {
                        ServiceError::Model(ModelError::PeerNotAllowed("peer was removed".into()))
                    })
                }
                None => svc.mutate("register_peer", |a, now| {
                    a.register_peer(
                        &RegisterPeer {
                            setup_key,
                            wg_pubkey: key_text.clone(),
                            name: None,
                            meta: meta.clone(),
                            ssh_pubkey: ssh_key.clone(),
                        },
                        now,
                    )
                }),
            }
        })
        .await;
        if registering
            && let (Some(ip), Err(s)) = (from, &peer)
            && s.code() == tonic::Code::NotFound
        {
            // NotFound: the setup key was refused (NetBird's code for it).
            self.guesses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failed(ip, now_secs());
        }
        let peer = peer?;
        tracing::info!(peer = %peer.id, name = %peer.name, approved = peer.approved, "peer logged in");
        let map = {
            let svc = self.svc.clone();
            let id = peer.id.clone();
            blocking(move || svc.network_map(&id)).await?
        };
        let resp = pb::LoginResponse {
            netbird_config: Some(self.services.netbird_config(&peer.id, now_secs())),
            peer_config: Some(conv::peer_config(&map.peer_config)),
            checks: conv::checks(&map),
            session_expires_at: Some(prost_types::Timestamp::default()),
        };
        Ok(Response::new(self.seal(&peer_key, &resp)))
    }

    type SyncStream = SyncStream;

    async fn sync(
        &self,
        req: Request<pb::EncryptedMessage>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let (peer_key, sync): (PublicKey, pb::SyncRequest) = self.open(req.get_ref())?;
        if *self.stopping.borrow() {
            return Err(shutting_down());
        }
        let peer_id = peer_of(&self.svc, &peer_key)?;
        {
            let svc = self.svc.clone();
            let id = peer_id.clone();
            let meta = sync.meta.as_ref().map(conv::peer_meta);
            blocking(move || {
                svc.peer_seen("sync_connect", &id, Some(true))?;
                if let Some(m) = meta {
                    svc.peer_meta("sync_meta", &id, &m)?;
                }
                Ok(())
            })
            .await?;
        }
        if let Ok(mut s) = self.streams.lock() {
            *s.entry(peer_id.clone()).or_default() += 1;
        }
        tracing::info!(peer = %peer_id, "sync stream opened");

        let (tx, rx) = mpsc::channel::<Result<pb::EncryptedMessage, Status>>(4);
        let svc = self.svc.clone();
        let shared = SharedKey::between(self.key.private(), &peer_key);
        let server_pub = *self.key.public();
        let services = self.services.clone();
        let streams = self.streams.clone();
        let distributor = self.distributor.clone();
        let mut stopping = self.stopping.subscribe();
        let mut maps = distributor.subscribe(&peer_id);
        {
            let d = distributor.clone();
            let id = peer_id.clone();
            let _ = tokio::task::spawn_blocking(move || d.publish(Some(&id))).await;
        }
        tokio::spawn(async move {
            let mut last: Option<Arc<NetworkMap>> = None;
            let mut stopped = false;
            // Fresh TURN credentials and relay tokens before the last ones expire (every
            // map sent carries new ones too).
            let period = services.refresh_in();
            let mut renew = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            renew.reset();
            loop {
                let slot = maps.borrow_and_update().clone();
                match slot {
                    Slot::Pending => {}
                    Slot::Map(map) => {
                        if last.as_ref().is_none_or(|l| !same_content(l, &map)) {
                            let resp = sync_response(&services, &peer_id, &map, now_secs());
                            let msg = shared.encrypted_message(&resp, &server_pub);
                            if tx.send(Ok(msg)).await.is_err() {
                                break;
                            }
                            tracing::debug!(peer = %peer_id, serial = map.serial, "network map sent");
                            last = Some(map);
                        }
                    }
                    Slot::Removed => {
                        let _ = tx
                            .send(Err(Status::permission_denied("peer was removed")))
                            .await;
                        break;
                    }
                }
                let renew_now = tokio::select! {
                    r = maps.changed() => if r.is_err() { break } else { false },
                    _ = renew.tick(), if period.is_some() => true,
                    _ = tx.closed() => break,
                    // Also when the service is gone (sender dropped).
                    _ = stopping.wait_for(|s| *s) => {
                        stopped = true;
                        break;
                    }
                };
                if renew_now {
                    let resp = services.credentials_only(&peer_id, now_secs(), last.as_deref());
                    let msg = shared.encrypted_message(&resp, &server_pub);
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                    tracing::debug!(peer = %peer_id, "TURN and relay credentials renewed");
                }
            }
            drop(maps);
            let last_stream = match streams.lock() {
                Ok(mut s) => {
                    let n = s.entry(peer_id.clone()).or_default();
                    *n = n.saturating_sub(1);
                    let gone = *n == 0;
                    if gone {
                        s.remove(&peer_id);
                    }
                    gone
                }
                Err(_) => true,
            };
            if last_stream {
                let id = peer_id.clone();
                let r = tokio::task::spawn_blocking(move || {
                    svc.peer_seen("sync_disconnect", &id, Some(false))
                })
                .await;
                if let Ok(Err(e)) = r {
                    tracing::debug!(peer = %peer_id, error = %e, "marking disconnected failed");
                }
            }
            // Only now, with the bookkeeping stored, does the stream end: a peer that
            // reconnects at once (to a successor on the same database) is not marked
            // disconnected after it connected there. A full channel (a peer not reading) just
            // ends without the status.
            if stopped {
                let _ = tx.try_send(Err(shutting_down()));
            }
            drop(tx);
            tracing::info!(peer = %peer_id, stopped, "sync stream closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn is_healthy(&self, _req: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty::default()))
    }

    async fn sync_meta(
        &self,
        req: Request<pb::EncryptedMessage>,
    ) -> Result<Response<pb::Empty>, Status> {
        let (peer_key, m): (PublicKey, pb::SyncMetaRequest) = self.open(req.get_ref())?;
        let id = peer_of(&self.svc, &peer_key)?;
        let Some(meta) = m.meta.as_ref().map(conv::peer_meta) else {
            return Err(Status::failed_precondition(
                "peer system meta has to be provided",
            ));
        };
        let svc = self.svc.clone();
        blocking(move || svc.peer_meta("sync_meta", &id, &meta)).await?;
        Ok(Response::new(pb::Empty::default()))
    }

    async fn logout(
        &self,
        req: Request<pb::EncryptedMessage>,
    ) -> Result<Response<pb::Empty>, Status> {
        let (peer_key, _): (PublicKey, pb::Empty) = self.open(req.get_ref())?;
        let id = peer_of(&self.svc, &peer_key)?;
        let svc = self.svc.clone();
        blocking(move || svc.mutate("logout", |a, _| a.delete_peer(&id))).await?;
        Ok(Response::new(pb::Empty::default()))
    }
}

/// The tonic service with NetBird-sized message limits.
pub fn service(grpc: Grpc) -> ManagementServiceServer<Grpc> {
    ManagementServiceServer::new(grpc)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Binds `addr` and serves the gRPC service (with TLS when `tls` is given) until `shutdown`
/// resolves.
pub async fn spawn(
    svc: Arc<Service>,
    addr: SocketAddr,
    services: PeerServices,
    tls: Option<&crate::tls::Identity>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the gRPC service to {addr}"))?;
    serve_on(Grpc::new(svc, services)?, listener, tls, shutdown)
}

/// Serves the gRPC service on a bound listener until `shutdown` resolves. Then it stops
/// accepting, ends every Sync stream ([`Grpc::stopper`]) and lets connections drain for at most
/// [`SHUTDOWN_GRACE`] before it returns (connections still open are then dropped with the
/// runtime).
pub fn serve_on(
    grpc: Grpc,
    listener: tokio::net::TcpListener,
    tls: Option<&crate::tls::Identity>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let local = listener.local_addr().ok();
    let mut builder = tonic::transport::Server::builder();
    match tls {
        Some(id) => {
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                    tonic::transport::Identity::from_pem(&id.cert_pem, &id.key_pem),
                ))
                .context("the gRPC TLS certificate and key")?;
            tracing::info!(addr = ?local, cert_sha256 = %id.fingerprint, "gRPC management service listening (TLS)");
        }
        None => tracing::warn!(
            addr = ?local,
            "gRPC management service listening WITHOUT TLS (--grpc-plaintext): Signal messages \
             and request metadata travel in clear"
        ),
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let stopper = grpc.stopper();
    let mut stopped = stopper.0.subscribe();
    // Signal on the same listener, checking proofs of keys made towards the server key.
    let relay = swiftgate_proto::signal_server::SignalRelay::with_key((*grpc.key).clone());
    let shutdown = async move {
        shutdown.await;
        stopper.stop();
    };
    Ok(tokio::spawn(async move {
        let server = builder
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .http2_max_header_list_size(Some(16 * 1024))
            .add_service(service(grpc))
            // Signal on the same listener: peers' endpoint offers, relayed unopened.
            .add_service(
                swiftgate_proto::signalexchange::signal_exchange_server::SignalExchangeServer::new(
                    relay,
                )
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .serve_with_incoming_shutdown(incoming, shutdown);
        tokio::pin!(server);
        let deadline = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = &mut server => r.context("gRPC server"),
            _ = deadline => {
                tracing::warn!(
                    grace_secs = SHUTDOWN_GRACE.as_secs(),
                    "gRPC connections still open after the grace period; closing them"
                );
                Ok(())
            }
        }
    }))
}
