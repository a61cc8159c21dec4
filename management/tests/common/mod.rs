//! What the in-process `serve` tests share: a free loopback port, a configuration in a
//! temporary directory, starting the server and waiting for it, and its admin token.
#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use swiftgate_management::api::{ApiConfig, HttpLimits};
use swiftgate_management::grpc::PeerServices;
use swiftgate_management::server::{ADMIN_TOKEN_FILE, ServeConfig, run_until};
use swiftgate_management::tls::GrpcTls;

/// A loopback port free right now (the server binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `serve` on loopback ports with data in `dir`: tokens required, gRPC off and in clear
/// (tests that need them set `grpc_listen` and `grpc_tls`).
pub fn config(dir: &Path) -> ServeConfig {
    ServeConfig {
        data_dir: dir.to_path_buf(),
        init: false,
        listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        grpc_listen: None,
        api: ApiConfig::default(),
        limits: HttpLimits::default(),
        peer_services: PeerServices::default(),
        grpc_tls: GrpcTls::Plaintext,
        reissue_admin_token: false,
    }
}

/// A running server: send on `stop` to stop it, then await `task`.
pub struct Running {
    /// Stops the server.
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// The server's task.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the server and checks it stopped cleanly.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Runs the server until stopped; returns once its admin API accepts connections.
pub async fn start(cfg: ServeConfig) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = cfg.listen;
    let task = tokio::spawn(run_until(cfg, async {
        let _ = stopped.await;
    }));
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "server not up");
        assert!(!task.is_finished(), "server ended early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running { stop, task }
}

/// The first start's admin token, from the data directory.
pub fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(ADMIN_TOKEN_FILE))
        .unwrap()
        .trim()
        .to_string()
}

/// The Python of the test clients' virtual environment (as scripts/bootstrap.sh makes it).
pub fn python() -> PathBuf {
    let env = std::env::var_os("SWIFTGATE_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                })
                .join("swiftgate/pyenv")
        });
    let py = env.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/bootstrap.sh (./x test does) to install the Python test clients",
        py.display()
    );
    py
}

/// Runs the Python script `tests/<script>` of this crate in the test clients' environment
/// with `env` (blocking; call it from `spawn_blocking` in async tests). A script that cannot
/// be started fails the test.
pub fn run_script(script: &str, env: &[(&str, String)]) -> std::process::Output {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let mut cmd = std::process::Command::new(python());
    cmd.arg(&path).env("PYTHONDONTWRITEBYTECODE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()))
}
