//! The gRPC front door of `serve` (in process, real sockets): replayed sealed requests are
//! refused (a swiftgate agent's by its sealed send time and nonce, a NetBird agent's by its
//! nonce), a replayed Logout cannot delete a re-registered peer, oversize unauthenticated
//! messages are cut from their length prefix, and setup-key guesses are bounded per address.

mod common;

use std::time::{Duration, Instant};

use common::free_port;

use swiftgate_management::replay::MAX_GUESSES;
use swiftgate_management::server::{ADMIN_TOKEN_FILE, ServeConfig, run_until};
use swiftgate_proto::client::{basic_meta, login_request, sent_at};
use swiftgate_proto::management::management_service_client::ManagementServiceClient;
use swiftgate_proto::management::{Empty, EncryptedMessage, LoginRequest};
use swiftgate_proto::{KeyPair, PublicKey, SharedKey};
use tonic::Code;
use tonic::transport::Channel;

struct Server {
    grpc: ManagementServiceClient<Channel>,
    grpc_url: String,
    server_key: PublicKey,
    api: String,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let grpc_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = ServeConfig {
            grpc_listen: Some(grpc_addr),
            ..common::config(dir.path())
        };
        let api = format!("http://{}", cfg.listen);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_until(cfg, async {
            let _ = stopped.await;
        }));
        let t0 = Instant::now();
        let mut grpc = loop {
            if let Ok(c) = ManagementServiceClient::connect(format!("http://{grpc_addr}")).await {
                break c;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "server not up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let key = grpc
            .get_server_key(Empty::default())
            .await
            .unwrap()
            .into_inner()
            .key;
        let token = std::fs::read_to_string(dir.path().join(ADMIN_TOKEN_FILE))
            .unwrap()
            .trim()
            .to_string();
        Server {
            grpc,
            grpc_url: format!("http://{grpc_addr}"),
            server_key: PublicKey::from_base64(&key).unwrap(),
            api,
            token,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    fn seal(&self, keys: &KeyPair, msg: &impl prost::Message) -> EncryptedMessage {
        SharedKey::between(keys.private(), &self.server_key).encrypted_message(msg, keys.public())
    }

    async fn setup_key(&self) -> String {
        let (api, token) = (self.api.clone(), self.token.clone());
        tokio::task::spawn_blocking(move || {
            swiftgate_management::cli::Client::new(&api, Some(token))
                .post("/api/setup-keys", Some(&serde_json::json!({"name": "k"})))
                .unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .await
        .unwrap()
    }

    async fn peers(&self) -> usize {
        let (api, token) = (self.api.clone(), self.token.clone());
        tokio::task::spawn_blocking(move || {
            swiftgate_management::cli::Client::new(&api, Some(token))
                .get("/api/peers")
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        })
        .await
        .unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

fn login(setup_key: &str, keys: &KeyPair, sent: i64) -> LoginRequest {
    let mut r = login_request(
        Some(setup_key),
        keys.public(),
        basic_meta("alice", "0.60.0"),
    );
    r.swiftgate_sent_at = sent;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_sealed_requests_are_refused() {
    let s = Server::start().await;
    let key = s.setup_key().await;
    let mut g = s.grpc.clone();

    // A swiftgate agent's Login: once accepted, twice refused.
    let alice = KeyPair::generate();
    let env = s.seal(&alice, &login(&key, &alice, sent_at()));
    g.login(env.clone()).await.unwrap();
    let again = g.login(env).await.unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied, "{again}");
    assert!(again.message().contains("replayed"), "{again}");

    // One sealed an hour ago (captured then, replayed now): refused by its time.
    let old = s.seal(&alice, &login(&key, &alice, sent_at() - 3600));
    let e = g.login(old).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    // A NetBird agent's (no sealed time): refused while its nonce is remembered.
    let bob = KeyPair::generate();
    let env = s.seal(&bob, &login(&key, &bob, 0));
    g.login(env.clone()).await.unwrap();
    assert_eq!(
        g.login(env).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // Logout, register again, then a replay of the Logout: the new registration stays.
    let carol = KeyPair::generate();
    g.login(s.seal(&carol, &login(&key, &carol, sent_at())))
        .await
        .unwrap();
    let before = s.peers().await;
    let logout = s.seal(
        &carol,
        &Empty {
            swiftgate_sent_at: sent_at(),
        },
    );
    g.logout(logout.clone()).await.unwrap();
    assert_eq!(s.peers().await, before - 1);
    g.login(s.seal(&carol, &login(&key, &carol, sent_at())))
        .await
        .unwrap();
    let e = g.logout(logout).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert_eq!(
        s.peers().await,
        before,
        "the re-registered peer is still there"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_requests_are_cut_and_guesses_are_bounded() {
    let s = Server::start().await;
    let mut g = s.grpc.clone();
    // 8 MiB of "sealed" body from nobody: refused from the length prefix, at once.
    let huge = EncryptedMessage {
        wg_pub_key: KeyPair::generate().public().to_base64(),
        body: vec![0u8; 8 << 20],
        version: 0,
    };
    let t0 = Instant::now();
    let e = g.login(huge).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::Internal
        ),
        "{e}"
    );
    assert!(
        e.message().contains("too large") || e.message().contains("length"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));

    // Setup-key guesses: MAX_GUESSES failures from this address, then even a good key waits.
    for i in 0..MAX_GUESSES {
        let k = KeyPair::generate();
        let guess = format!("00000000-0000-4000-8000-{i:012}");
        let e = g
            .login(s.seal(&k, &login(&guess, &k, sent_at())))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e}");
    }
    let good = s.setup_key().await;
    let k = KeyPair::generate();
    let e = g
        .login(s.seal(&k, &login(&good, &k, sent_at())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_registrations_are_bound_to_proof_of_the_key() {
    use swiftgate_proto::signal_server::{PROOF_HEADER, key_proof};
    use swiftgate_proto::signalexchange::signal_exchange_client::SignalExchangeClient;
    use swiftgate_proto::signalexchange::{EncryptedMessage as SignalMessage, PEER_ID_HEADER};
    let s = Server::start().await;
    let mut signal = SignalExchangeClient::connect(s.grpc_url.clone())
        .await
        .unwrap();
    let alice = KeyPair::generate();
    let open = |proof: Option<String>, id: &str| {
        let (_tx, rx) = tokio::sync::mpsc::channel::<SignalMessage>(1);
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut()
            .insert(PEER_ID_HEADER, id.parse().unwrap());
        if let Some(p) = proof {
            req.metadata_mut().insert(PROOF_HEADER, p.parse().unwrap());
        }
        (req, _tx)
    };
    let id = alice.public().to_base64();
    let now = sent_at() as u64;
    // Alice registers with a proof of her key towards the server key.
    let (req, _keep_alice) = open(Some(key_proof(&alice, &s.server_key, now)), &id);
    signal.connect_stream(req).await.unwrap();
    // Mallory names Alice's key: without a proof, and with one made by his own key.
    let mallory = KeyPair::generate();
    let (req, _m1) = open(None, &id);
    let e = signal.connect_stream(req).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let (req, _m2) = open(Some(key_proof(&mallory, &s.server_key, now)), &id);
    let e = signal.connect_stream(req).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    // A peer that never proved itself (a NetBird agent) registers as with NetBird's server.
    let bob = KeyPair::generate().public().to_base64();
    let (req, _b) = open(None, &bob);
    signal.connect_stream(req).await.unwrap();
    s.stop().await;
}
