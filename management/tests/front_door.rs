//! The admin API's front door on a real socket (`run_until`, in process): the first start's
//! admin token file and the files' modes, the token working from the CLI client, stalled and
//! idle connections closed by the header-read timeout, and the development mode's loopback
//! rule.

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::free_port;
use swiftgate_management::api::{AuthMode, HttpLimits};
use swiftgate_management::cli::Client;
use swiftgate_management::server::{ADMIN_TOKEN_FILE, ServeConfig, run_until};
use swiftgate_management::store::DB_FILE;

/// The shared configuration with a 1 s header-read timeout (the stalled-connection test).
fn config(dir: &Path) -> ServeConfig {
    ServeConfig {
        limits: HttpLimits {
            header_read_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        },
        ..common::config(dir)
    }
}

/// Runs the server; returns what stops it and its task.
async fn start(
    cfg: ServeConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let r = common::start(cfg).await;
    (r.stop, r.task)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_issues_an_admin_token_only_its_owner_reads() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let cfg = config(&dir);
    let api = format!("http://{}", cfg.listen);
    let (stop, server) = start(cfg.clone()).await;
    let file = dir.join(ADMIN_TOKEN_FILE);
    assert_eq!(mode(&dir), 0o700, "data directory");
    assert_eq!(mode(&file), 0o600, "admin token file");
    assert_eq!(mode(&dir.join(DB_FILE)), 0o600, "database");
    for side in ["-wal", "-shm"] {
        let p = dir.join(format!("{DB_FILE}{side}"));
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{side}");
        }
    }
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.starts_with("nbp_") && token.len() == 40);
    let (a, t) = (api.clone(), token.clone());
    let me =
        tokio::task::spawn_blocking(move || Client::new(&a, Some(t)).get("/api/users/current"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(me["role"], "owner");
    let a = api.clone();
    let refused = tokio::task::spawn_blocking(move || Client::new(&a, None).get("/api/groups"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    // A restart keeps the file and the token.
    let (stop, server) = start(config(&dir)).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    // Without the file, a restart issues nothing (the operator may have moved the token);
    // --reissue-admin-token issues a new one (the old one stays valid until deleted).
    std::fs::remove_file(&file).unwrap();
    let (stop, server) = start(config(&dir)).await;
    assert!(!file.exists(), "no new owner credential without asking");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let mut again = config(&dir);
    again.reissue_admin_token = true;
    let (stop, server) = start(again).await;
    let second = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_ne!(second, token);
    assert_eq!(mode(&file), 0o600);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_readable_database_is_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let (stop, server) = start(config(dir.path())).await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let db = dir.path().join(DB_FILE);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (stop, server) = start(config(dir.path())).await;
    assert_eq!(mode(&db), 0o600);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let addr = cfg.listen;
    let (stop, server) = start(cfg).await;
    // 200 connections: half send nothing, half send a request line and stop mid-headers.
    let mut conns = Vec::new();
    for i in 0..200 {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        if i % 2 == 1 {
            c.write_all(b"GET /api/groups HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
        }
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conns.push(c);
    }
    let t0 = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut closed = 0;
        for mut c in conns {
            let mut buf = [0u8; 512];
            // Closed: EOF, a reset, or an error answer followed by EOF; not a read timeout.
            loop {
                match c.read(&mut buf) {
                    Ok(0) => {
                        closed += 1;
                        break;
                    }
                    Ok(_) => continue,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        break;
                    }
                    Err(_) => {
                        closed += 1;
                        break;
                    }
                }
            }
        }
        closed
    })
    .await
    .unwrap();
    assert_eq!(
        closed, 200,
        "connections closed by the 1 s header-read timeout"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // A keep-alive connection idle after its request is closed too.
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("idle connection still open after {:?}: {e}", t0.elapsed()),
        }
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 401"));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unauthenticated_mode_is_for_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.api.auth = AuthMode::InsecureNoAuth;
    cfg.listen = format!("0.0.0.0:{}", free_port()).parse().unwrap();
    let err = run_until(cfg, std::future::pending())
        .await
        .expect_err("refused off loopback");
    assert!(format!("{err:#}").contains("loopback"), "{err:#}");
    // On loopback it runs, issues no token file, and answers without a token.
    let mut cfg = config(dir.path());
    cfg.api.auth = AuthMode::InsecureNoAuth;
    let api = format!("http://{}", cfg.listen);
    let (stop, server) = start(cfg).await;
    assert!(!dir.path().join(ADMIN_TOKEN_FILE).exists());
    let groups = tokio::task::spawn_blocking(move || Client::new(&api, None).get("/api/groups"))
        .await
        .unwrap()
        .unwrap();
    assert!(groups.is_array());
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_speaks_tls_with_a_self_signed_certificate_agents_can_trust() {
    use swiftgate_management::tls::{CERT_FILE, GrpcTls};
    use swiftgate_proto::ManagementClient;
    use swiftgate_proto::client::Trust;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let grpc: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.grpc_listen = Some(grpc);
    cfg.grpc_tls = GrpcTls::SelfSigned {
        names: vec!["localhost".into(), "127.0.0.1".into()],
    };
    let (stop, server) = start(cfg).await;
    let cert = dir.path().join(CERT_FILE);
    // The server writes its certificate as it starts: wait for it (bounded; a loaded
    // machine takes longer than the start call).
    let t0 = Instant::now();
    while !cert.exists() && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trust = Trust {
        extra_pem: Some(std::fs::read(&cert).unwrap()),
    };
    let url = format!("https://{grpc}");
    // Trusting the server's certificate: the TLS handshake and a call succeed.
    let t0 = Instant::now();
    let c = loop {
        match ManagementClient::connect_with(url.clone(), &trust).await {
            Ok(c) => break c,
            Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    c.is_healthy().await.unwrap();
    assert!(!c.server_key().await.unwrap().to_base64().is_empty());
    // Without it the certificate is refused; in clear the server does not answer.
    let untrusted = ManagementClient::connect_with(url.clone(), &Trust::default()).await;
    let refused = match untrusted {
        Err(e) => e.to_string(),
        Ok(c) => c.is_healthy().await.unwrap_err().to_string(),
    };
    assert!(!refused.is_empty());
    let clear = ManagementClient::connect(format!("http://{grpc}")).await;
    match clear {
        Err(_) => {}
        Ok(c) => assert!(c.is_healthy().await.is_err(), "answered in clear"),
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
