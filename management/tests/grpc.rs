//! The gRPC management service on 127.0.0.1 with swiftgate-proto's client: server key, Login
//! with setup-key rules, Sync streaming and pushing changes within a second, approval, unknown
//! keys, and the server key surviving a restart.

use std::sync::Arc;
use std::time::Duration;

use swiftgate_management::grpc::{Grpc, PeerServices, serve_on};
use swiftgate_management::model::{GroupInput, PolicyInput, SettingsInput, SetupKeyInput};
use swiftgate_management::service::Service;
use swiftgate_management::store::{DB_FILE, Store};
use swiftgate_proto::client::basic_meta;
use swiftgate_proto::keys::KeyPair;
use swiftgate_proto::management::SyncResponse;
use swiftgate_proto::{ClientError, ManagementClient, SyncStream};
use tonic::Code;

struct Server {
    svc: Arc<Service>,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    public_key: String,
}

async fn start(svc: Arc<Service>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let grpc = Grpc::new(
        svc.clone(),
        PeerServices {
            signal: Some("127.0.0.1:10000".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let public_key = grpc.public_key().to_base64();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = serve_on(grpc, listener, None, async {
        let _ = rx.await;
    })
    .unwrap();
    Server {
        svc,
        url,
        stop: Some(tx),
        task,
        public_key,
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    fn key(&self, name: &str, input: SetupKeyInput) -> String {
        let input = SetupKeyInput {
            name: name.into(),
            ..input
        };
        self.svc
            .mutate("key", |a, now| a.create_setup_key(&input, now))
            .unwrap()
            .1
    }
}

fn code(e: &ClientError) -> Option<Code> {
    e.code()
}

async fn next(stream: &mut SyncStream) -> SyncResponse {
    tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("a map within 1 s")
        .expect("stream ok")
        .expect("stream open")
}

fn remote_names(r: &SyncResponse) -> Vec<String> {
    let mut v: Vec<String> = r
        .network_map
        .as_ref()
        .unwrap()
        .remote_peers
        .iter()
        .map(|p| p.fqdn.split('.').next().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rules_and_live_sync() {
    let svc = Arc::new(Service::new(Store::open_in_memory().unwrap()).unwrap());
    let srv = start(svc.clone()).await;
    svc.mutate("g", |a, _| {
        a.create_group(&GroupInput {
            name: "Development".into(),
            ..Default::default()
        })
    })
    .unwrap();
    let once = srv.key(
        "once",
        SetupKeyInput {
            kind: Some("one-off".into()),
            auto_groups: vec!["Development".into()],
            ..Default::default()
        },
    );
    let client = ManagementClient::connect(srv.url.clone()).await.unwrap();
    assert_eq!(
        client.server_key().await.unwrap().to_base64(),
        srv.public_key
    );
    client.is_healthy().await.unwrap();

    // Unknown peer without a key: PermissionDenied.
    let alice = KeyPair::generate();
    let e = client
        .login(None, &alice, basic_meta("alice", "0.50.0"))
        .await
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");

    // Registration with the one-off key (as the agent sends it: upper case is normalised).
    let resp = client
        .login(
            Some(&once.to_uppercase()),
            &alice,
            basic_meta("alice", "0.50.0"),
        )
        .await
        .unwrap();
    let pc = resp.peer_config.unwrap();
    // The account's /16 (NetBird: a random /16 inside 100.64.0.0/10), not the whole /10.
    let addr: ipnet::Ipv4Net = pc.address.parse().unwrap();
    assert_eq!(addr.prefix_len(), 16, "{}", pc.address);
    assert_eq!(addr.trunc(), svc.account().settings.overlay_range);
    assert_eq!(
        resp.netbird_config.unwrap().signal.unwrap().uri,
        "127.0.0.1:10000"
    );
    let acct = svc.account();
    let p = acct.peer_by_key(&alice.public().to_base64()).unwrap();
    assert_eq!(p.groups.len(), 1, "auto-group applied");
    assert_eq!(p.meta.client_version, "0.50.0");
    // Logging in again needs no key.
    client
        .login(None, &alice, basic_meta("alice", "0.50.0"))
        .await
        .unwrap();

    // The one-off key again for another peer: refused.
    let bob = KeyPair::generate();
    let e = client
        .login(Some(&once), &bob, basic_meta("bob", "0.50.0"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(Code::NotFound), "{e}");
    assert!(e.to_string().contains("one-off"), "{e}");
    // Revoked and expired keys: refused.
    let revoked = srv.key("revoked", SetupKeyInput::default());
    svc.mutate("r", |a, _| a.revoke_setup_key("revoked"))
        .unwrap();
    let e = client
        .login(Some(&revoked), &bob, basic_meta("bob", "0.50.0"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");
    let expired = srv.key("expired", SetupKeyInput::default());
    svc.mutate("x", |a, _| {
        let id = a.setup_key_id("expired")?;
        a.setup_keys.get_mut(&id).unwrap().expires_at = Some(1);
        Ok(())
    })
    .unwrap();
    let e = client
        .login(Some(&expired), &bob, basic_meta("bob", "0.50.0"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");

    let reusable = srv.key("reusable", SetupKeyInput::default());
    client
        .login(Some(&reusable), &bob, basic_meta("bob", "0.50.0"))
        .await
        .unwrap();

    // Sync: the first map at once (Default policy: alice sees bob).
    let mut stream = client
        .sync(&alice, basic_meta("alice", "0.50.0"))
        .await
        .unwrap();
    let first = next(&mut stream).await;
    let serial0 = first.network_map.as_ref().unwrap().serial;
    assert_eq!(remote_names(&first), vec!["bob"]);
    assert!(
        svc.account()
            .peer_by_key(&alice.public().to_base64())
            .unwrap()
            .connected
    );

    // Deleting the Default policy is pushed within 1 s, with a higher serial.
    svc.mutate("d", |a, _| a.delete_policy("Default")).unwrap();
    let m = next(&mut stream).await;
    let nm = m.network_map.as_ref().unwrap();
    assert!(nm.serial > serial0);
    assert!(nm.remote_peers.is_empty() && nm.remote_peers_is_empty);

    // A change that does not affect alice's map is not pushed; one that does is.
    svc.mutate("g2", |a, _| {
        a.create_group(&GroupInput {
            name: "Unrelated".into(),
            ..Default::default()
        })
    })
    .unwrap();
    svc.mutate("p", |a, _| {
        a.create_policy(&PolicyInput {
            name: "dev-to-all".into(),
            sources: Some(vec!["Development".into()]),
            destinations: Some(vec!["All".into()]),
            protocol: Some("tcp".into()),
            ports: Some(vec![swiftgate_management::model::PortSpec::Number(22)]),
            ..Default::default()
        })
    })
    .unwrap();
    let m = next(&mut stream).await;
    let nm = m.network_map.as_ref().unwrap();
    assert_eq!(remote_names(&m), vec!["bob"]);
    assert_eq!(nm.firewall_rules.len(), 1);
    // A single port travels as text in Port, without PortInfo (as NetBird's server sends it).
    assert_eq!(nm.firewall_rules[0].port, "22");
    assert_eq!(nm.firewall_rules[0].port_info, None);

    // Closing the stream marks the peer disconnected.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !svc.account()
            .peer_by_key(&alice.public().to_base64())
            .unwrap()
            .connected
    );

    // A valid envelope from an unknown key gets nothing.
    let mallory = KeyPair::generate();
    let e = client
        .sync(&mallory, basic_meta("m", "0.50.0"))
        .await
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    drop(client);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_peers_get_an_empty_map_until_approved() {
    let svc = Arc::new(Service::new(Store::open_in_memory().unwrap()).unwrap());
    svc.mutate("s", |a, _| {
        a.update_settings(&SettingsInput {
            peer_approval_required: Some(true),
            ..Default::default()
        })
    })
    .unwrap();
    let srv = start(svc.clone()).await;
    let key = srv.key("k", SetupKeyInput::default());
    let client = ManagementClient::connect(srv.url.clone()).await.unwrap();
    let (a, b) = (KeyPair::generate(), KeyPair::generate());
    client
        .login(Some(&key), &a, basic_meta("a", "0.50.0"))
        .await
        .unwrap();
    client
        .login(Some(&key), &b, basic_meta("b", "0.50.0"))
        .await
        .unwrap();
    let mut s = client.sync(&a, basic_meta("a", "0.50.0")).await.unwrap();
    let m = next(&mut s).await;
    assert!(m.network_map.as_ref().unwrap().remote_peers_is_empty);
    let a_name = svc
        .account()
        .peer_by_key(&a.public().to_base64())
        .unwrap()
        .name
        .clone();
    let b_name = svc
        .account()
        .peer_by_key(&b.public().to_base64())
        .unwrap()
        .name
        .clone();
    svc.mutate("ap", |acct, _| acct.approve_peer(&a_name))
        .unwrap();
    // a is approved (pushed), but b is not yet: still no one to see.
    let m = next(&mut s).await;
    assert!(m.network_map.as_ref().unwrap().remote_peers_is_empty);
    svc.mutate("bp", |acct, _| acct.approve_peer(&b_name))
        .unwrap();
    let m = next(&mut s).await;
    assert_eq!(remote_names(&m), vec!["b"]);
    drop((s, client));
    srv.stop().await;
}

#[tokio::test]
async fn server_key_is_generated_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let first = {
        let svc = Arc::new(Service::open(&db).unwrap());
        Grpc::new(svc, PeerServices::default())
            .unwrap()
            .public_key()
            .to_base64()
    };
    let svc = Arc::new(Service::open(&db).unwrap());
    let again = Grpc::new(svc, PeerServices::default())
        .unwrap()
        .public_key()
        .to_base64();
    assert_eq!(first, again);
}

/// Issue 12, defect 7: a swiftgate agent reports the NetBird protocol level in
/// `netbirdVersion` and its own version in `uiVersion`; the minimum-version check compares the
/// former, the posture report shows both, and a meta update through SyncMeta is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_versions_reach_the_posture_check() {
    use swiftgate_management::model::{MinVersionCheck, PostureCheckInput, PostureChecksInput};
    use swiftgate_proto::management::PeerSystemMeta;
    let svc = Arc::new(Service::new(Store::open_in_memory().unwrap()).unwrap());
    let srv = start(svc.clone()).await;
    let key = srv.key("k", SetupKeyInput::default());
    svc.mutate("pc", |a, _| {
        a.create_posture_check(&PostureCheckInput {
            name: "min".into(),
            checks: PostureChecksInput {
                client_version: Some(MinVersionCheck {
                    min_version: "0.45.0".into(),
                }),
                ..Default::default()
            },
            ..Default::default()
        })?;
        a.create_policy(&PolicyInput {
            name: "all".into(),
            sources: Some(vec!["All".into()]),
            destinations: Some(vec!["All".into()]),
            source_posture_checks: vec!["min".into()],
            ..Default::default()
        })
    })
    .unwrap();
    let client = ManagementClient::connect(srv.url.clone()).await.unwrap();
    let kp = KeyPair::generate();
    let meta = |nb: &str| PeerSystemMeta {
        ui_version: "swiftgate/0.1.0".into(),
        ..basic_meta("agent", nb)
    };
    client.login(Some(&key), &kp, meta("0.77.1")).await.unwrap();
    let id = svc
        .account()
        .peer_by_key(&kp.public().to_base64())
        .unwrap()
        .id
        .clone();
    let r = svc.account().posture_report(&id).unwrap();
    assert_eq!(r.client_version, "0.77.1");
    assert_eq!(r.ui_version, "swiftgate/0.1.0");
    assert!(r.passed, "{r:?}");

    client.sync_meta(&kp, meta("0.44.0-rc1")).await.unwrap();
    let r = svc.account().posture_report(&id).unwrap();
    assert!(!r.passed);
    assert_eq!(
        r.checks[0].results[0].reason,
        "client version 0.44.0-rc1 below minimum 0.45.0 (agent swiftgate/0.1.0)"
    );

    // Issue 12 defect 3: what the agent could not apply reaches the peer's record.
    use swiftgate_proto::management::MapRefusal;
    client
        .sync_meta(
            &kp,
            PeerSystemMeta {
                swiftgate_map_refusals: vec![MapRefusal {
                    serial: 9,
                    object: "route `inside`".into(),
                    reason: "100.64.9.0/24 is inside the overlay network 100.64.0.0/16".into(),
                    effect: "skipped".into(),
                }],
                ..meta("0.77.1")
            },
        )
        .await
        .unwrap();
    let p = svc.account().peers[&id].clone();
    assert_eq!(p.meta.map_refusals.len(), 1);
    assert_eq!(p.meta.map_refusals[0].object, "route `inside`");
    assert_eq!(p.meta.map_refusals[0].serial, 9);
    srv.stop().await;
}

/// Issue 12 defect 9, items 5 and 6 through Login: the SSH key in `PeerKeys.sshPubKey` is
/// stored and reaches the other peers; a peer announcing the IPv6Overlay capability gets its
/// v6 address (17 bytes), one that does not gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_carries_the_ssh_key_and_the_ipv6_capability() {
    use swiftgate_proto::management::{
        LoginResponse, PeerCapability, management_service_client::ManagementServiceClient,
    };
    use swiftgate_proto::{PublicKey, SharedKey, client::login_request};

    let svc = Arc::new(Service::new(Store::open_in_memory().unwrap()).unwrap());
    let srv = start(svc.clone()).await;
    let key = srv.key("k", SetupKeyInput::default());
    let server = PublicKey::from_base64(&srv.public_key).unwrap();
    let mut raw = ManagementServiceClient::connect(srv.url.clone())
        .await
        .unwrap();
    let login = |keys: &KeyPair, ssh: &[u8], v6: bool| {
        let mut meta = basic_meta("host", "0.50.0");
        if v6 {
            meta.capabilities = vec![PeerCapability::IPv6Overlay as i32];
        }
        let mut req = login_request(Some(&key), keys.public(), meta);
        req.peer_keys.as_mut().unwrap().ssh_pub_key = ssh.to_vec();
        let shared = SharedKey::between(keys.private(), &server);
        (shared.encrypted_message(&req, keys.public()), shared)
    };
    let (a, b) = (KeyPair::generate(), KeyPair::generate());
    let ssh_a = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk a@host";

    let (msg, shared) = login(&a, ssh_a.as_bytes(), true);
    let reply = raw.login(msg).await.unwrap().into_inner();
    let resp: LoginResponse = shared.open_message(&reply).unwrap();
    assert_eq!(resp.peer_config.unwrap().address_v6.len(), 17);
    let (msg, shared) = login(&b, b"", false);
    let reply = raw.login(msg).await.unwrap().into_inner();
    let resp: LoginResponse = shared.open_message(&reply).unwrap();
    assert!(resp.peer_config.unwrap().address_v6.is_empty());

    let acct = svc.account();
    let pa = acct.peer_by_key(&a.public().to_base64()).unwrap();
    assert_eq!(pa.ssh_pubkey, ssh_a);
    assert!(pa.meta.supports_ipv6);

    // b sees a's key (the Default policy connects them).
    let client = ManagementClient::connect(srv.url.clone()).await.unwrap();
    let mut s = client.sync(&b, basic_meta("b", "0.50.0")).await.unwrap();
    let m = next(&mut s).await;
    let remote = &m.network_map.as_ref().unwrap().remote_peers[0];
    assert_eq!(
        remote.ssh_config.as_ref().unwrap().ssh_pub_key,
        ssh_a.as_bytes()
    );
    assert_eq!(remote.allowed_ips.len(), 1, "b announces no IPv6: v4 only");

    // A new key at the next Login replaces it; a key that is not text is refused.
    let (msg, _) = login(&a, b"ssh-ed25519 AAAAnew a@host", true);
    raw.login(msg).await.unwrap();
    let acct = svc.account();
    let pa = acct.peer_by_key(&a.public().to_base64()).unwrap();
    assert_eq!(pa.ssh_pubkey, "ssh-ed25519 AAAAnew a@host");
    let (msg, _) = login(&a, &[0xff, 0xfe], true);
    let err = raw.login(msg).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    drop(s);
    srv.stop().await;
}
