//! The management server in-process inside a test namespace, and agents enrolled into it
//! with setup keys (`swiftgate up --management-url ... --setup-key ...`).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use swiftgate_management::{grpc, service::Service};
use swiftgate_proto::keys::KeyPair;

use super::wg::Lab;
use std::net::Ipv4Addr;

/// The management server, running on its own thread inside a namespace.
pub struct Mgmt {
    /// Admin API base URL (loopback in the namespace).
    pub rest: String,
    /// gRPC (management and Signal) URL: `https://`, with the server's self-signed
    /// certificate in [`Mgmt::ca`].
    pub grpc: String,
    /// The gRPC service's self-signed certificate (agents trust it with `--management-ca`).
    pub ca: PathBuf,
    /// An owner's personal access token, which [`Mgmt::call`] sends.
    pub token: String,
    ns_path: PathBuf,
    stop: Option<std_mpsc::Sender<()>>,
}

impl Mgmt {
    /// Starts the server in namespace `ns`; gRPC binds to `underlay`.
    pub fn start(lab: &Lab, ns: usize, underlay: &str) -> Mgmt {
        Self::start_with_stuns(lab, ns, underlay, Vec::new())
    }

    /// [`Mgmt::start`], announcing these STUN URIs (`stun:host:port`) to the agents.
    pub fn start_with_stuns(lab: &Lab, ns: usize, underlay: &str, stuns: Vec<String>) -> Mgmt {
        Self::start_with_servers(lab, ns, underlay, stuns, None)
    }

    /// [`Mgmt::start`], announcing these STUN URIs and TURN servers (with credentials from
    /// the TURN configuration's shared secret) to the agents.
    pub fn start_with_servers(
        lab: &Lab,
        ns: usize,
        underlay: &str,
        stuns: Vec<String>,
        turn: Option<swiftgate_management::turn::TurnConfig>,
    ) -> Mgmt {
        let (tx, rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
        let ns_path = lab.n(ns).path();
        let path = ns_path.clone();
        let db = lab.dir.join("management.db");
        let underlay = underlay.to_string();
        let tls_dir = lab.dir.clone();
        let tls = swiftgate_management::tls::identity(
            &swiftgate_management::tls::GrpcTls::SelfSigned {
                names: vec![underlay.clone()],
            },
            &tls_dir,
        )
        .expect("TLS certificate")
        .expect("TLS identity");
        let ca = tls.cert_path.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(path).expect("netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let svc = Arc::new(Service::open(&db).expect("store"));
                let owner = svc.bootstrap_owner().expect("owner user");
                let (_, token) = svc
                    .create_token(&owner, &owner, "tests", 1)
                    .expect("admin token");
                let (stop_w, stop_r) = tokio::sync::watch::channel(false);
                let stopped = move || {
                    let mut r = stop_r.clone();
                    async move {
                        let _ = r.wait_for(|s| *s).await;
                    }
                };
                let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let rest_addr = rest.local_addr().unwrap();
                let app = swiftgate_management::api::router(svc.clone(), Default::default());
                tokio::spawn(swiftgate_management::api::serve(
                    rest,
                    app,
                    Default::default(),
                    stopped(),
                ));
                let g = tokio::net::TcpListener::bind(format!("{underlay}:0"))
                    .await
                    .unwrap();
                let g_addr = g.local_addr().unwrap();
                let services = grpc::PeerServices {
                    signal: Some(g_addr.to_string()),
                    signal_tls: true,
                    stuns,
                    turn,
                    ..Default::default()
                };
                let server = grpc::Grpc::new(svc.clone(), services).expect("gRPC service");
                grpc::serve_on(server, g, Some(&tls), stopped()).unwrap();
                tx.send((
                    format!("http://{rest_addr}"),
                    format!("https://{g_addr}"),
                    token,
                ))
                .unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                let _ = stop_w.send(true);
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        });
        let (rest, grpc, token) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("management server up");
        Mgmt {
            rest,
            grpc,
            ca,
            token,
            ns_path,
            stop: Some(stop_tx),
        }
    }

    /// One admin API call; panics on a non-2xx answer unless `expect_error`.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>, expect_error: bool) -> Value {
        let url = format!("{}{path}", self.rest);
        let method = method.to_string();
        let auth = format!("Token {}", self.token);
        super::netns::run_in(&self.ns_path, move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut resp = match (method.as_str(), body) {
                ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
                ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
                ("POST", Some(b)) => agent.post(&url).header("authorization", &auth).send_json(b),
                ("POST", None) => agent.post(&url).header("authorization", &auth).send_empty(),
                ("PUT", Some(b)) => agent.put(&url).header("authorization", &auth).send_json(b),
                (m, _) => panic!("method {m}"),
            }
            .expect("HTTP");
            let status = resp.status().as_u16();
            let v: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
            assert_eq!(
                status >= 400,
                expect_error,
                "{method} {url} -> {status}: {v}"
            );
            v
        })
        .expect("API call")
    }

    /// `POST` with a JSON body.
    pub fn post(&self, path: &str, body: Value) -> Value {
        self.call("POST", path, Some(body), false)
    }
}

impl Drop for Mgmt {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// An enrolled agent: its namespace, key, state and process.
pub struct Agent {
    /// Namespace name.
    pub ns: String,
    /// Pin path.
    pub pin: PathBuf,
    /// The peer's keys.
    pub keys: KeyPair,
    /// Log file.
    pub log: PathBuf,
    /// The process.
    pub child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let path = PathBuf::from("/run/netns").join(&self.ns);
        let pin = self.pin.clone();
        let _ = super::netns::run_in(&path, || {
            Command::new(super::swiftgate_bin())
                .args(["down", "--interface", "sg0", "--pin-path"])
                .arg(&pin)
                .output()
        });
    }
}

/// Starts `swiftgate up --management-url ... --management-ca ... --setup-key ...` in
/// namespace `ns`: the agent talks TLS to the server, trusting its self-signed certificate.
pub fn enrol(
    lab: &Lab,
    ns: usize,
    name: &str,
    mgmt: &Mgmt,
    setup_key: &str,
    extra: &[&str],
) -> Agent {
    enrol_as(lab, ns, name, mgmt, setup_key, extra, KeyPair::generate())
}

/// [`enrol`] with the peer key `keys` (starting an enrolled peer again: it logs in as
/// itself).
pub fn enrol_as(
    lab: &Lab,
    ns: usize,
    name: &str,
    mgmt: &Mgmt,
    setup_key: &str,
    extra: &[&str],
    keys: KeyPair,
) -> Agent {
    let url = mgmt.grpc.as_str();
    let state = lab.dir.join(name);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("key"), keys.private().to_base64().as_bytes()).unwrap();
    let pin = PathBuf::from(super::BPFFS).join(format!("sg-test-{}{name}", lab.id));
    let log = lab.dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(super::swiftgate_bin());
    cmd.env("NO_COLOR", "1")
        .args([
            "up",
            "--management-url",
            url,
            "--setup-key",
            setup_key,
            "--interface",
            "sg0",
        ])
        .arg("--management-ca")
        .arg(&mgmt.ca)
        .args(extra)
        .arg("--state-dir")
        .arg(&state)
        .arg("--pin-path")
        .arg(&pin)
        .arg("--control-socket")
        .arg(state.join("ctl.sock"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let child = lab.n(ns).spawn(&mut cmd).expect("agent");
    Agent {
        ns: lab.n(ns).name().to_string(),
        pin,
        keys,
        log,
        child,
    }
}

/// Waits up to 30 s for the agent `a` to log that it is ready; panics otherwise.
pub fn wait_ready(a: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&a.log)
        .unwrap_or_default()
        .contains("swiftgate up: ready")
    {
        assert!(
            Instant::now() < deadline,
            "agent not ready:\n{}",
            std::fs::read_to_string(&a.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The peer id and overlay address the server gave a key.
pub fn peer(m: &Mgmt, keys: &KeyPair) -> (String, Ipv4Addr) {
    let want = keys.public().to_base64();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers = m.call("GET", "/api/peers", None, false);
        if let Some(p) = peers
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p.to_string().contains(&want))
        {
            let ip = p["ip"]
                .as_str()
                .or(p["address"].as_str())
                .unwrap_or_default()
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            return (
                p["id"].as_str().unwrap().to_string(),
                ip.parse().unwrap_or_else(|_| panic!("peer address in {p}")),
            );
        }
        assert!(
            Instant::now() < deadline,
            "peer {want} never registered: {peers}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
