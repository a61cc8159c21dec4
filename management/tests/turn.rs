//! TURN credentials against a real TURN server: coturn (Debian's, installed by
//! scripts/bootstrap.sh) started on loopback with the shared-secret scheme, and aioice's TURN
//! client (PyPI) allocating with what swiftgate-management hands a peer at Login and renews
//! on its Sync stream. Wrong and expired credentials are refused by coturn.
//!
//! The test fails, not skips, when coturn or the Python environment is missing.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swiftgate_management::grpc::{Grpc, PeerServices, serve_on};
use swiftgate_management::model::{
    PolicyInput, PostureCheckInput, PostureChecksInput, ProcessCheck, ProcessSpec, SetupKeyInput,
};
use swiftgate_management::service::Service;
use swiftgate_management::store::Store;
use swiftgate_management::turn::{TurnConfig, TurnSecret, credentials};
use swiftgate_proto::ManagementClient;
use swiftgate_proto::client::basic_meta;
use swiftgate_proto::keys::KeyPair;
use swiftgate_proto::management::ProtectedHostConfig;

const SECRET: &str = "a-secret-only-coturn-and-management-share";

/// coturn on 127.0.0.1, killed when dropped (also when the test fails).
struct Coturn {
    child: Child,
    port: u16,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port free right now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn coturn(dir: &std::path::Path) -> Coturn {
    let port = free_udp_port();
    let relay = 40_000 + (port % 20_000);
    let log = dir.join("coturn.log");
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            &format!("--min-port={relay}"),
            &format!("--max-port={}", relay + 50),
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            "--realm=swiftgate.test",
            "--fingerprint",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--allow-loopback-peers",
            "--simple-log",
            &format!("--log-file={}", log.display()),
            &format!("--pidfile={}", dir.join("coturn.pid").display()),
            &format!("--userdb={}", dir.join("coturn.db").display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver (coturn) is missing: run scripts/bootstrap.sh (./x test does)");
    let c = Coturn { child, port };
    // Up when it answers a STUN Binding request (RFC 8489: type 0x0001, no attributes, the
    // magic cookie, a transaction id) with a Binding success (0x0101); bounded.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(b"swiftgate-up");
    let t0 = Instant::now();
    loop {
        sock.send_to(&req, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 512];
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && n >= 20
            && buf[..2] == [0x01, 0x01]
            && buf[8..20] == req[8..20]
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "coturn did not answer:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    c
}

/// aioice allocating for each case; returns the script's results.
fn allocate(port: u16, cases: &Value) -> Value {
    let out = common::run_script(
        "turn/allocate.py",
        &[
            ("TURN_SERVER", format!("127.0.0.1:{port}")),
            ("CASES", cases.to_string()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let results: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("allocate.py said no JSON ({e}):\n{stdout}\n{stderr}"));
    assert!(
        out.status.success(),
        "allocations not as expected: {results:#}\n{stderr}"
    );
    results
}

fn turn_of(turns: &[ProtectedHostConfig]) -> (String, String, String) {
    assert_eq!(turns.len(), 1, "{turns:?}");
    let t = &turns[0];
    (
        t.host_config.as_ref().unwrap().uri.clone(),
        t.user.clone(),
        t.password.clone(),
    )
}

fn expiry(username: &str) -> u64 {
    username.split(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_allocates_with_the_credentials_management_hands_out_and_renews() {
    let dir = tempfile::tempdir().unwrap();
    let turnd = coturn(dir.path());
    let svc = Arc::new(Service::new(Store::open_in_memory().unwrap()).unwrap());
    let uri = format!("turn:127.0.0.1:{}?transport=udp", turnd.port);
    let ttl = Duration::from_secs(4);
    let grpc = Grpc::new(
        svc.clone(),
        PeerServices {
            turn: Some(TurnConfig {
                uris: vec![uri.clone()],
                secret: TurnSecret::new(SECRET),
                ttl,
            }),
            ..Default::default()
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = serve_on(grpc, listener, None, async {
        let _ = stopped.await;
    })
    .unwrap();

    // A process check on the All group's traffic: the agent is asked about a file in every
    // Sync item, renewals included (an empty list would drop its answers).
    svc.mutate("posture", |a, _| {
        a.create_posture_check(&PostureCheckInput {
            name: "edr".into(),
            checks: PostureChecksInput {
                process: Some(ProcessCheck {
                    processes: vec![ProcessSpec {
                        linux_path: Some("/usr/bin/edr".into()),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            },
            ..Default::default()
        })?;
        a.create_policy(&PolicyInput {
            name: "checked".into(),
            sources: Some(vec!["All".into()]),
            destinations: Some(vec!["All".into()]),
            source_posture_checks: vec!["edr".into()],
            ..Default::default()
        })
    })
    .unwrap();
    let key = svc
        .mutate("key", |a, now| {
            a.create_setup_key(
                &SetupKeyInput {
                    name: "k".into(),
                    ..Default::default()
                },
                now,
            )
        })
        .unwrap()
        .1;
    let client = ManagementClient::connect(url).await.unwrap();
    let alice = KeyPair::generate();
    let login = client
        .login(Some(&key), &alice, basic_meta("alice", "0.50.0"))
        .await
        .unwrap();
    let (got_uri, user, password) = turn_of(&login.netbird_config.unwrap().turns);
    assert_eq!(got_uri, uri);
    let peer_id = user.split_once(':').unwrap().1.to_string();
    assert!(svc.account().peers.contains_key(&peer_id), "{user}");
    let now = swiftgate_management::service::now_secs();
    assert!((now + 3..=now + 5).contains(&expiry(&user)), "{user}");

    // The Sync stream: the map carries credentials; new ones follow before these expire,
    // without a map.
    let mut stream = client
        .sync(&alice, basic_meta("alice", "0.50.0"))
        .await
        .unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.network_map.is_some());
    let (_, sync_user, _) = turn_of(&first.netbird_config.as_ref().unwrap().turns);
    let renewed = tokio::time::timeout(ttl * 2, stream.message())
        .await
        .expect("renewed credentials within the lifetime")
        .unwrap()
        .unwrap();
    assert!(renewed.network_map.is_none(), "credentials only");
    assert!(!first.checks.is_empty());
    assert_eq!(renewed.checks, first.checks, "the map's checks, repeated");
    let cfg = renewed.netbird_config.unwrap();
    assert!(cfg.signal.is_none() && cfg.stuns.is_empty());
    let (_, new_user, new_password) = turn_of(&cfg.turns);
    assert!(
        expiry(&new_user) > expiry(&sync_user),
        "{new_user} after {sync_user}"
    );

    let stale = credentials(&TurnSecret::new(SECRET), &peer_id, now - 60);
    let cases = json!([
        {"name": "login", "username": user, "password": password, "expect": "allocated"},
        {"name": "renewed", "username": new_user, "password": new_password, "expect": "allocated"},
        {"name": "wrong password", "username": user, "password": "bm90IHRoZSBwYXNzd29yZA==", "expect": "refused"},
        {"name": "expired", "username": stale.username, "password": stale.password, "expect": "refused"},
        {"name": "other secret", "username": credentials(&TurnSecret::new("guess"), &peer_id, now + 600).username,
         "password": credentials(&TurnSecret::new("guess"), &peer_id, now + 600).password, "expect": "refused"},
    ]);
    let port = turnd.port;
    let results = tokio::task::spawn_blocking(move || allocate(port, &cases))
        .await
        .unwrap();
    eprintln!("{results:#}");
    let relayed = results["login"]["allocated"][0].as_str().unwrap();
    assert_eq!(relayed, "127.0.0.1", "coturn's relay address");
    assert!(
        results["wrong password"]["refused"]
            .as_str()
            .unwrap()
            .contains("401"),
        "{results}"
    );
    drop(stream);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
