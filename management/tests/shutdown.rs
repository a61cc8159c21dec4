//! `serve` in-process on 127.0.0.1 (issue 12, defect 8): a shutdown with a Sync stream open
//! ends the stream and the server within seconds, with the peer stored as disconnected, even
//! with a Signal stream open that does not end by itself (the grace period bounds it); an
//! existing zero-length database file is refused, not initialised, unless `--init`.
//!
//! (In-process through [`run_until`], the function `serve` runs with the SIGTERM/SIGINT
//! future, rather than the built binary: the binary's path is shared with other builds of this
//! crate in a shared target directory.)

use std::path::Path;
use std::time::{Duration, Instant};

use swiftgate_management::api::{ApiConfig, HttpLimits};
use swiftgate_management::cli::Client;
use swiftgate_management::grpc::PeerServices;
use swiftgate_management::server::{ServeConfig, run_until};
use swiftgate_management::store::{DB_FILE, Store};
use swiftgate_proto::ManagementClient;
use swiftgate_proto::client::basic_meta;
use swiftgate_proto::keys::KeyPair;
use swiftgate_proto::signalexchange::signal_exchange_client::SignalExchangeClient;
use swiftgate_proto::signalexchange::{EncryptedMessage, PEER_ID_HEADER};

/// A loopback port free right now (the server binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, grpc: bool, init: bool) -> ServeConfig {
    ServeConfig {
        data_dir: dir.to_path_buf(),
        init,
        listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        grpc_listen: grpc.then(|| format!("127.0.0.1:{}", free_port()).parse().unwrap()),
        api: ApiConfig::default(),
        limits: HttpLimits::default(),
        peer_services: PeerServices::default(),
        grpc_tls: swiftgate_management::tls::GrpcTls::Plaintext,
        reissue_admin_token: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_sync_stream_open_stops_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), true, false);
    let (api_addr, grpc_addr) = (cfg.listen, cfg.grpc_listen.unwrap());
    let api = format!("http://{api_addr}");
    let url = format!("http://{grpc_addr}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(run_until(cfg, async {
        let _ = stopped.await;
    }));

    // Ready when the gRPC service answers (at most 20 s).
    let start = Instant::now();
    let client = loop {
        if let Ok(c) = ManagementClient::connect(url.clone()).await
            && c.is_healthy().await.is_ok()
        {
            break c;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "server not up");
        assert!(
            !server.is_finished(),
            "server ended: {:?}",
            (&mut server).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let setup_key = tokio::task::spawn_blocking(move || {
        Client::new(&api, Some(token.trim().to_string()))
            .post(
                "/api/setup-keys",
                Some(&serde_json::json!({ "name": "test" })),
            )
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    })
    .await
    .unwrap();
    let alice = KeyPair::generate();
    client
        .login(Some(&setup_key), &alice, basic_meta("alice", "0.60.0"))
        .await
        .unwrap();
    let mut stream = client
        .sync(&alice, basic_meta("alice", "0.60.0"))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a map within 5 s");
    assert!(matches!(first, Ok(Some(_))), "{first:?}");

    // A Signal stream on the same server, kept open from our side.
    let mut signal = SignalExchangeClient::connect(url.clone()).await.unwrap();
    let (_signal_tx, signal_rx) = tokio::sync::mpsc::channel::<EncryptedMessage>(1);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(signal_rx));
    req.metadata_mut()
        .insert(PEER_ID_HEADER, alice.public().to_base64().parse().unwrap());
    let _signal_stream = signal.connect_stream(req).await.unwrap();

    let sent = Instant::now();
    stop.send(()).unwrap();

    // The stream ends (an error or its end) within seconds; no map keeps it open.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..10 {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
        panic!("the stream kept sending maps");
    })
    .await
    .expect("stream still open 5 s after the shutdown");
    if let Err(e) = &ended {
        assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e}");
    }

    let r = tokio::time::timeout(Duration::from_secs(8), &mut server)
        .await
        .expect("server still running 8 s after the shutdown");
    r.unwrap().unwrap();
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(8), "{took:?}");
    for addr in [api_addr, grpc_addr] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts"
        );
    }

    // The peer was stored as disconnected before its stream ended.
    let stored = Store::open(&dir.path().join(DB_FILE))
        .unwrap()
        .load_account()
        .unwrap()
        .unwrap();
    let p = stored.peer_by_key(&alice.public().to_base64()).unwrap();
    assert!(!p.connected, "stored as disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_file_is_refused_unless_init() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    std::fs::write(&db, b"").unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        run_until(config(dir.path(), false, false), std::future::pending()),
    )
    .await
    .expect("refused at once")
    .expect_err("an empty database file is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains(&db.display().to_string()), "{msg}");
    assert!(msg.contains("is empty") && msg.contains("--init"), "{msg}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "nothing written");

    // With --init it starts and creates the account.
    tokio::time::timeout(
        Duration::from_secs(20),
        run_until(config(dir.path(), true, true), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }),
    )
    .await
    .expect("stops")
    .unwrap();
    let stored = Store::open(&db).unwrap().load_account().unwrap();
    assert!(stored.is_some(), "--init created the account");
}
