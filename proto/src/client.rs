//! A Management client for the agent: `GetServerKey`, `Login`, the `Sync`
//! stream, `SyncMeta`, `Logout` and `isHealthy`, with the envelopes sealed and
//! opened for the caller.
//!
//! The protocol steps that need no network are plain functions
//! ([`login_request`], [`normalize_setup_key`], [`basic_meta`], and
//! [`crate::envelope`]); [`ManagementClient`] only adds the gRPC calls. It does
//! not retry or reconnect: the agent owns that policy (NetBird's rule: treat
//! `PermissionDenied` as final, see [`ClientError::is_permission_denied`], and
//! retry anything else with backoff).
//!
//! Nothing here logs or `Debug`-prints private keys or setup keys.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

use crate::envelope::{EnvelopeError, SharedKey};
use crate::keys::{KeyError, KeyPair, PublicKey};
use crate::management::management_service_client::ManagementServiceClient;
use crate::management::{
    Empty, EncryptedMessage, LoginRequest, LoginResponse, PeerKeys, PeerSystemMeta,
    SyncMetaRequest, SyncRequest, SyncResponse,
};

/// Largest message the client accepts: 64 MiB. gRPC's default of 4 MiB is too
/// small; NetBird accounts have produced 11.7 MB network maps.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Default deadline of the unary calls (everything except `Sync`).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A Management call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL cannot be used.
    #[error("invalid management URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot connect to management at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The transport's error.
        source: tonic::transport::Error,
    },
    /// The server (or the transport) answered with a gRPC error status.
    #[error("management {rpc} failed: {code:?}: {message}", code = .status.code(), message = .status.message())]
    Rpc {
        /// The RPC, e.g. `Login`.
        rpc: &'static str,
        /// The status.
        status: Status,
    },
    /// A reply did not open or decode.
    #[error("management {rpc} reply: {source}")]
    Envelope {
        /// The RPC.
        rpc: &'static str,
        /// Why the reply is unusable.
        source: EnvelopeError,
    },
    /// `GetServerKey` returned something that is not a WireGuard public key.
    #[error("management server key is unusable: {0}")]
    ServerKey(KeyError),
}

impl ClientError {
    /// The gRPC status code, for errors the server (or transport) reported.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// `PermissionDenied`: the peer is not registered (log in with a setup key)
    /// or its login expired. Retrying the same call will not help.
    pub fn is_permission_denied(&self) -> bool {
        self.code() == Some(Code::PermissionDenied)
    }
}

fn rpc_error(rpc: &'static str) -> impl FnOnce(Status) -> ClientError {
    move |status| ClientError::Rpc { rpc, status }
}

fn envelope_error(rpc: &'static str) -> impl FnOnce(EnvelopeError) -> ClientError {
    move |source| ClientError::Envelope { rpc, source }
}

/// The setup key as NetBird's client sends it: trimmed, and in lower case when
/// it is a UUID (NetBird's keys are; its server compares them ignoring case).
/// Other keys are sent as given, trimmed.
pub fn normalize_setup_key(setup_key: &str) -> String {
    let key = setup_key.trim();
    let is_uuid = key.len() == 36
        && key.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if is_uuid {
        key.to_ascii_lowercase()
    } else {
        key.to_string()
    }
}

/// The `LoginRequest` a peer sends: its system description, its WireGuard
/// public key (as base64 text bytes, per the protocol), and the setup key when
/// it registers (`None` when it is already registered).
pub fn login_request(
    setup_key: Option<&str>,
    public_key: &PublicKey,
    meta: PeerSystemMeta,
) -> LoginRequest {
    LoginRequest {
        setup_key: setup_key.map(normalize_setup_key).unwrap_or_default(),
        meta: Some(meta),
        jwt_token: String::new(),
        peer_keys: Some(PeerKeys {
            ssh_pub_key: Vec::new(),
            wg_pub_key: public_key.to_base64().into_bytes(),
        }),
        dns_labels: Vec::new(),
        swiftgate_sent_at: sent_at(),
    }
}

/// Now in Unix seconds, for `swiftgateSentAt`: sealed into every request this client sends so
/// that a swiftgate server can refuse a replay of it later (NetBird's server ignores the
/// field).
pub fn sent_at() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A minimal system description for this host: `hostname`, the agent version,
/// OS and architecture, and on Linux the kernel release. Extend it (flags,
/// capabilities, network addresses) as the agent needs.
pub fn basic_meta(hostname: &str, agent_version: &str) -> PeerSystemMeta {
    let linux = std::env::consts::OS == "linux";
    let kernel_version = if linux {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    PeerSystemMeta {
        hostname: hostname.to_string(),
        go_os: std::env::consts::OS.to_string(),
        kernel: if linux { "Linux".into() } else { String::new() },
        platform: std::env::consts::ARCH.to_string(),
        netbird_version: agent_version.to_string(),
        kernel_version,
        ..Default::default()
    }
}

/// A connection to a Management server.
///
/// Cheap to clone; clones share the connection and the cached server key.
/// `login`, `sync`, `sync_meta` and `logout` fetch the server key on first
/// use and reuse it; call [`ManagementClient::server_key`] again on every
/// reconnection (as NetBird's client does), so a server whose key changed is
/// followed.
#[derive(Clone)]
pub struct ManagementClient {
    url: String,
    grpc: ManagementServiceClient<Channel>,
    server_key: Arc<Mutex<Option<PublicKey>>>,
    call_timeout: Duration,
}

impl fmt::Debug for ManagementClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementClient")
            .field("url", &self.url)
            .field("server_key", &self.cached_server_key())
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// Whom an `https://` connection trusts: the system's roots, and the extra
/// certificates (PEM; a CA, or a server's self-signed certificate) given here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Extra trusted certificates, PEM.
    pub extra_pem: Option<Vec<u8>>,
}

/// [`endpoint_with`] trusting the system's roots only.
pub fn endpoint(url: &str) -> Result<Endpoint, ClientError> {
    endpoint_with(url, &Trust::default())
}

/// The endpoint settings for `url`: connect timeout, HTTP/2 keepalives (a dead
/// server ends the `Sync` stream instead of leaving it hanging), and TLS for
/// `https://` (when built with the `tls` feature) trusting `trust`. A URL
/// without a scheme (`host:port`) is `https://`.
pub fn endpoint_with(url: &str, trust: &Trust) -> Result<Endpoint, ClientError> {
    let owned;
    let url = if url.contains("://") {
        url
    } else {
        owned = format!("https://{url}");
        &owned
    };
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let scheme_end = url
        .find("://")
        .ok_or_else(|| invalid("expected http://host:port or https://host:port"))?;
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| invalid(&e.to_string()))?;
    let endpoint = match &url[..scheme_end] {
        "http" => endpoint,
        "https" => with_tls(endpoint, trust).map_err(|e| invalid(&e.to_string()))?,
        _ => return Err(invalid("the scheme must be http or https")),
    };
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// Why an `https://` URL could not be given TLS; reported as the reason of
/// [`ClientError::InvalidUrl`].
#[derive(Debug, thiserror::Error)]
enum TlsError {
    /// The TLS settings were refused by the transport.
    #[cfg(feature = "tls")]
    #[error("TLS setup failed: {0}")]
    Setup(tonic::transport::Error),
    /// This build has no TLS.
    #[cfg(not(feature = "tls"))]
    #[error("https needs swiftgate-proto built with its `tls` feature")]
    NotBuilt,
}

#[cfg(feature = "tls")]
fn with_tls(endpoint: Endpoint, trust: &Trust) -> Result<Endpoint, TlsError> {
    let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
    if let Some(pem) = &trust.extra_pem {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    endpoint.tls_config(tls).map_err(TlsError::Setup)
}

#[cfg(not(feature = "tls"))]
fn with_tls(_endpoint: Endpoint, _trust: &Trust) -> Result<Endpoint, TlsError> {
    Err(TlsError::NotBuilt)
}

impl ManagementClient {
    /// Connects to `url` (`http://host:port`, or `https://` with the `tls`
    /// feature) and fails if the server cannot be reached.
    pub async fn connect(url: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(url, &Trust::default()).await
    }

    /// [`ManagementClient::connect`] trusting `trust` for `https://`.
    pub async fn connect_with(url: impl Into<String>, trust: &Trust) -> Result<Self, ClientError> {
        let url = url.into();
        let channel = endpoint_with(&url, trust)?
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                url: url.clone(),
                source,
            })?;
        tracing::debug!(url = %url, "connected to management");
        Ok(Self::with_channel(url, channel))
    }

    /// Like [`ManagementClient::connect`], but connects on first use and
    /// reconnects by itself after the connection drops. Useful for an agent
    /// that starts while the server is away.
    pub fn connect_lazy(url: impl Into<String>) -> Result<Self, ClientError> {
        let url = url.into();
        let channel = endpoint(&url)?.connect_lazy();
        Ok(Self::with_channel(url, channel))
    }

    /// Wraps an existing channel; `url` is only used in messages.
    pub fn with_channel(url: impl Into<String>, channel: Channel) -> Self {
        Self {
            url: url.into(),
            grpc: ManagementServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            server_key: Arc::new(Mutex::new(None)),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Sets the deadline of unary calls (default [`DEFAULT_CALL_TIMEOUT`]). The
    /// `Sync` stream has none.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The URL this client talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut request = Request::new(msg);
        request.set_timeout(self.call_timeout);
        request
    }

    /// The server key fetched last, if any.
    pub fn cached_server_key(&self) -> Option<PublicKey> {
        *self
            .server_key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the server for its public key (`GetServerKey`) and remembers it
    /// for the calls that follow.
    pub async fn server_key(&self) -> Result<PublicKey, ClientError> {
        let response = self
            .grpc
            .clone()
            .get_server_key(self.request(Empty::default()))
            .await
            .map_err(rpc_error("GetServerKey"))?
            .into_inner();
        let key = PublicKey::from_base64(&response.key).map_err(ClientError::ServerKey)?;
        *self
            .server_key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(key);
        Ok(key)
    }

    async fn known_server_key(&self) -> Result<PublicKey, ClientError> {
        match self.cached_server_key() {
            Some(key) => Ok(key),
            None => self.server_key().await,
        }
    }

    /// Logs the peer in (`Login`); with a setup key, registers it first if the
    /// server does not know it. Without one, an unknown peer gets
    /// `PermissionDenied` ([`ClientError::is_permission_denied`]).
    pub async fn login(
        &self,
        setup_key: Option<&str>,
        keys: &KeyPair,
        meta: PeerSystemMeta,
    ) -> Result<LoginResponse, ClientError> {
        let server = self.known_server_key().await?;
        let shared = SharedKey::between(keys.private(), &server);
        let request = login_request(setup_key, keys.public(), meta);
        let reply = self
            .grpc
            .clone()
            .login(self.request(shared.encrypted_message(&request, keys.public())))
            .await
            .map_err(rpc_error("Login"))?
            .into_inner();
        shared.open_message(&reply).map_err(envelope_error("Login"))
    }

    /// Opens the `Sync` stream. Each item is a whole state, decrypted; the
    /// first comes right away. The stream ends when the server or the
    /// connection goes away.
    pub async fn sync(
        &self,
        keys: &KeyPair,
        meta: PeerSystemMeta,
    ) -> Result<SyncStream, ClientError> {
        let server = self.known_server_key().await?;
        let shared = SharedKey::between(keys.private(), &server);
        let request = SyncRequest {
            meta: Some(meta),
            swiftgate_sent_at: sent_at(),
        };
        let inner = self
            .grpc
            .clone()
            .sync(shared.encrypted_message(&request, keys.public()))
            .await
            .map_err(rpc_error("Sync"))?
            .into_inner();
        Ok(SyncStream { inner, shared })
    }

    /// Sends a new system description (`SyncMeta`) without reopening `Sync`.
    pub async fn sync_meta(&self, keys: &KeyPair, meta: PeerSystemMeta) -> Result<(), ClientError> {
        let server = self.known_server_key().await?;
        let request = SyncMetaRequest {
            meta: Some(meta),
            swiftgate_sent_at: sent_at(),
        };
        let envelope =
            SharedKey::between(keys.private(), &server).encrypted_message(&request, keys.public());
        self.grpc
            .clone()
            .sync_meta(self.request(envelope))
            .await
            .map_err(rpc_error("SyncMeta"))?;
        Ok(())
    }

    /// Removes this peer from its account (`Logout`).
    pub async fn logout(&self, keys: &KeyPair) -> Result<(), ClientError> {
        let server = self.known_server_key().await?;
        let request = Empty {
            swiftgate_sent_at: sent_at(),
        };
        let envelope =
            SharedKey::between(keys.private(), &server).encrypted_message(&request, keys.public());
        self.grpc
            .clone()
            .logout(self.request(envelope))
            .await
            .map_err(rpc_error("Logout"))?;
        Ok(())
    }

    /// `isHealthy`: `Ok` when the server answers.
    pub async fn is_healthy(&self) -> Result<(), ClientError> {
        self.grpc
            .clone()
            .is_healthy(self.request(Empty::default()))
            .await
            .map_err(rpc_error("isHealthy"))?;
        Ok(())
    }
}

/// The decrypted `Sync` stream: a [`Stream`] of [`SyncResponse`]s, or use
/// [`SyncStream::message`].
///
/// Every item is a complete state. Dropping a map whose `NetworkMap.Serial`
/// is lower than the last applied one, and not re-applying identical ones, is
/// the caller's job.
pub struct SyncStream {
    inner: Streaming<EncryptedMessage>,
    shared: SharedKey,
}

impl SyncStream {
    /// The next state; `Ok(None)` when the server ended the stream.
    pub async fn message(&mut self) -> Result<Option<SyncResponse>, ClientError> {
        match self.inner.message().await.map_err(rpc_error("Sync"))? {
            Some(envelope) => self.open(&envelope).map(Some),
            None => Ok(None),
        }
    }

    fn open(&self, envelope: &EncryptedMessage) -> Result<SyncResponse, ClientError> {
        self.shared
            .open_message(envelope)
            .map_err(envelope_error("Sync"))
    }
}

impl Stream for SyncStream {
    type Item = Result<SyncResponse, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(envelope))) => Poll::Ready(Some(self.open(&envelope))),
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(rpc_error("Sync")(status)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl fmt::Debug for SyncStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncStream").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::decrypt_message;
    use crate::keys::PrivateKey;
    use crate::management::management_service_server::{
        ManagementService, ManagementServiceServer,
    };
    use crate::management::{NetworkMap, PeerConfig, ServerKeyResponse};
    use std::collections::HashSet;
    use tokio_stream::StreamExt as _;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::Response;

    const SETUP_KEY: &str = "a2c8e62b-38f5-4553-b31e-dd66c696cebb";

    /// A tiny Management server: one setup key, registers peers, streams two
    /// maps (serials 1 and 2), the second one over gRPC's 4 MiB default.
    struct TestServer {
        keys: KeyPair,
        registered: Mutex<HashSet<PublicKey>>,
    }

    impl TestServer {
        fn open<M: prost::Message + Default>(
            &self,
            request: Request<EncryptedMessage>,
        ) -> Result<(PublicKey, M), Status> {
            decrypt_message(request.get_ref(), self.keys.private())
                .map_err(|e| Status::invalid_argument(format!("invalid request message: {e}")))
        }

        fn seal(&self, msg: &impl prost::Message, peer: &PublicKey) -> EncryptedMessage {
            crate::envelope::encrypt_message(msg, &self.keys, peer)
        }

        fn check_registered(&self, peer: &PublicKey) -> Result<(), Status> {
            if self.registered.lock().unwrap().contains(peer) {
                Ok(())
            } else {
                Err(Status::permission_denied("peer is not registered"))
            }
        }
    }

    fn map(serial: u64, padding: usize) -> SyncResponse {
        SyncResponse {
            network_map: Some(NetworkMap {
                serial,
                peer_config: Some(PeerConfig {
                    address: "100.64.0.10/16".into(),
                    ..Default::default()
                }),
                remote_peers_is_empty: true,
                firewall_rules: vec![crate::management::FirewallRule {
                    policy_id: vec![b'p'; padding],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tonic::async_trait]
    impl ManagementService for TestServer {
        async fn get_server_key(
            &self,
            _: Request<Empty>,
        ) -> Result<Response<ServerKeyResponse>, Status> {
            Ok(Response::new(ServerKeyResponse {
                key: self.keys.public().to_base64(),
                expires_at: None,
                version: 0,
            }))
        }

        async fn login(
            &self,
            request: Request<EncryptedMessage>,
        ) -> Result<Response<EncryptedMessage>, Status> {
            let (peer, login): (_, LoginRequest) = self.open(request)?;
            if login.meta.is_none() {
                return Err(Status::failed_precondition("no meta"));
            }
            let announced = login.peer_keys.as_ref().map(|k| k.wg_pub_key.as_slice());
            if announced != Some(peer.to_base64().as_bytes()) {
                return Err(Status::invalid_argument(
                    "peerKeys.wgPubKey differs from sender",
                ));
            }
            let known = self.registered.lock().unwrap().contains(&peer);
            if !known {
                match login.setup_key.as_str() {
                    "" => return Err(Status::permission_denied("no setup key")),
                    SETUP_KEY => {
                        self.registered.lock().unwrap().insert(peer);
                    }
                    _ => {
                        return Err(Status::not_found("couldn't add peer: setup key is invalid"));
                    }
                }
            }
            let reply = LoginResponse {
                peer_config: Some(PeerConfig {
                    address: "100.64.0.10/16".into(),
                    fqdn: login.meta.unwrap().hostname + ".netbird.cloud",
                    ..Default::default()
                }),
                ..Default::default()
            };
            Ok(Response::new(self.seal(&reply, &peer)))
        }

        type SyncStream =
            Pin<Box<dyn Stream<Item = Result<EncryptedMessage, Status>> + Send + 'static>>;

        async fn sync(
            &self,
            request: Request<EncryptedMessage>,
        ) -> Result<Response<Self::SyncStream>, Status> {
            let (peer, _): (_, SyncRequest) = self.open(request)?;
            self.check_registered(&peer)?;
            let items = vec![
                Ok(self.seal(&map(1, 0), &peer)),
                Ok(self.seal(&map(2, 5 * 1024 * 1024), &peer)),
            ];
            Ok(Response::new(Box::pin(tokio_stream::iter(items))))
        }

        async fn is_healthy(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
            Ok(Response::new(Empty::default()))
        }

        async fn sync_meta(
            &self,
            request: Request<EncryptedMessage>,
        ) -> Result<Response<Empty>, Status> {
            let (peer, meta): (_, SyncMetaRequest) = self.open(request)?;
            self.check_registered(&peer)?;
            if meta.meta.is_none() {
                return Err(Status::invalid_argument("no meta"));
            }
            Ok(Response::new(Empty::default()))
        }

        async fn logout(
            &self,
            request: Request<EncryptedMessage>,
        ) -> Result<Response<Empty>, Status> {
            let (peer, Empty { .. }) = self.open(request)?;
            self.check_registered(&peer)?;
            self.registered.lock().unwrap().remove(&peer);
            Ok(Response::new(Empty::default()))
        }
    }

    /// Starts the test server on 127.0.0.1 (random port); returns its URL and
    /// public key.
    async fn start_server() -> (String, PublicKey) {
        let keys = KeyPair::generate();
        let public = *keys.public();
        let service = TestServer {
            keys,
            registered: Mutex::new(HashSet::new()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ManagementServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (format!("http://{addr}"), public)
    }

    #[tokio::test]
    async fn login_and_sync_against_loopback_server() {
        let (url, server_public) = start_server().await;
        let client = ManagementClient::connect(&url).await.unwrap();
        client.is_healthy().await.unwrap();
        assert_eq!(client.server_key().await.unwrap(), server_public);

        let peer = KeyPair::generate();
        let meta = basic_meta("berlin-router", "0.1.0");

        // Unknown peer without a setup key: PermissionDenied, as NetBird does.
        let err = client.login(None, &peer, meta.clone()).await.unwrap_err();
        assert!(err.is_permission_denied(), "{err}");
        // Sync before registering: PermissionDenied too.
        let err = client.sync(&peer, meta.clone()).await.unwrap_err();
        assert!(err.is_permission_denied(), "{err}");
        // A wrong setup key: NotFound with the server's message.
        let err = client
            .login(
                Some("00000000-0000-0000-0000-000000000000"),
                &peer,
                meta.clone(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(Code::NotFound));
        assert_eq!(
            err.to_string(),
            "management Login failed: NotFound: couldn't add peer: setup key is invalid"
        );

        // Register with the setup key (upper case: normalised), then log in again without it.
        let login = client
            .login(Some(&SETUP_KEY.to_uppercase()), &peer, meta.clone())
            .await
            .unwrap();
        let peer_config = login.peer_config.unwrap();
        assert_eq!(peer_config.address, "100.64.0.10/16");
        assert_eq!(peer_config.fqdn, "berlin-router.netbird.cloud");
        client.login(None, &peer, meta.clone()).await.unwrap();

        // Two maps, increasing serials; the second one is over 4 MiB.
        let mut stream = client.sync(&peer, meta.clone()).await.unwrap();
        let first = stream.message().await.unwrap().unwrap();
        let second = stream.next().await.unwrap().unwrap();
        assert!(stream.next().await.is_none());
        let first = first.network_map.unwrap();
        let second = second.network_map.unwrap();
        assert_eq!((first.serial, second.serial), (1, 2));
        assert!(first.remote_peers_is_empty);
        assert_eq!(second.firewall_rules[0].policy_id.len(), 5 * 1024 * 1024);

        client.sync_meta(&peer, meta.clone()).await.unwrap();
        client.logout(&peer).await.unwrap();
        let err = client.login(None, &peer, meta).await.unwrap_err();
        assert!(err.is_permission_denied(), "{err}");
    }

    #[tokio::test]
    async fn request_sealed_to_a_stale_server_key_is_refused() {
        let (url, _) = start_server().await;
        let client = ManagementClient::connect(&url).await.unwrap();
        let peer = KeyPair::generate();
        // Pretend the server key is something else: the server cannot open
        // our request and says InvalidArgument.
        *client.server_key.lock().unwrap() = Some(*KeyPair::generate().public());
        let err = client
            .login(Some(SETUP_KEY), &peer, basic_meta("h", "v"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
        // With the real key it works.
        client.server_key().await.unwrap();
        client
            .login(Some(SETUP_KEY), &peer, basic_meta("h", "v"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn connect_errors_are_clear() {
        // No scheme means https: without the `tls` feature that is refused up front.
        #[cfg(not(feature = "tls"))]
        {
            let err = ManagementClient::connect("localhost:33073")
                .await
                .unwrap_err();
            assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err}");
        }
        let err = ManagementClient::connect("ftp://localhost:1")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("scheme must be http or https"),
            "{err}"
        );
        #[cfg(not(feature = "tls"))]
        {
            let err = ManagementClient::connect("https://localhost:1")
                .await
                .unwrap_err();
            assert!(err.to_string().contains("`tls` feature"), "{err}");
        }
        // Nothing listens on a port we just released.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = ManagementClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    }

    #[test]
    fn login_request_carries_keys_as_text_and_normalised_setup_key() {
        let peer = KeyPair::from_private(PrivateKey::from_bytes([7; 32]));
        let request = login_request(
            Some("  A2C8E62B-38F5-4553-B31E-DD66C696CEBB\n"),
            peer.public(),
            basic_meta("h", "v"),
        );
        assert_eq!(request.setup_key, SETUP_KEY);
        let keys = request.peer_keys.unwrap();
        assert_eq!(keys.wg_pub_key, peer.public().to_base64().into_bytes());
        assert_eq!(keys.wg_pub_key.len(), 44);
        assert!(request.meta.is_some());
        assert_eq!(
            login_request(None, peer.public(), Default::default()).setup_key,
            ""
        );
        assert_eq!(normalize_setup_key(" Custom-Key "), "Custom-Key");
    }

    #[tokio::test]
    async fn debug_output_has_no_secrets() {
        let client = ManagementClient::connect_lazy("http://127.0.0.1:1").unwrap();
        let debug = format!("{client:?}");
        assert!(debug.contains("http://127.0.0.1:1"), "{debug}");
        let request = login_request(
            Some(SETUP_KEY),
            KeyPair::generate().public(),
            Default::default(),
        );
        let debug = format!("{request:?}");
        assert!(!debug.contains(SETUP_KEY), "{debug}");
    }
}
