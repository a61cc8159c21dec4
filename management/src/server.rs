//! `swiftgate-management serve`: opens the store, then runs the admin REST API, the gRPC
//! management service and the housekeeping task until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::service::Service;
use crate::store::DB_FILE;

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Directory of the database file (created if missing).
    pub data_dir: PathBuf,
    /// Admin REST API address (default loopback).
    pub listen: SocketAddr,
    /// gRPC management service address; `None` disables it.
    pub grpc_listen: Option<SocketAddr>,
    /// Bearer token the admin API requires, if set.
    pub admin_token: Option<String>,
    /// Signal/STUN/relay servers announced to agents.
    pub peer_services: crate::grpc::PeerServices,
}

impl ServeConfig {
    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Runs the server until a shutdown signal.
pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let db = cfg.db_path();
    let svc = {
        let db2 = db.clone();
        tokio::task::spawn_blocking(move || Service::open(&db2))
            .await
            .context("opening the store")?
            .with_context(|| format!("opening {}", db.display()))?
    };
    let svc = Arc::new(svc);
    tracing::info!(db = %db.display(), serial = svc.account().serial, "store open");
    let _housekeeping = svc.spawn_housekeeping(Duration::from_secs(30));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the admin API to {}", cfg.listen))?;
    let app = crate::api::router(svc.clone(), cfg.admin_token.clone());
    let rest = tokio::spawn(crate::api::serve(listener, app, stopped()));

    let grpc = match cfg.grpc_listen {
        Some(addr) => {
            Some(crate::grpc::spawn(svc.clone(), addr, cfg.peer_services.clone(), stopped()).await?)
        }
        None => None,
    };

    shutdown_signal().await;
    let _ = stop_tx.send(true);
    match rest.await {
        Ok(r) => r.context("admin API")?,
        Err(e) => anyhow::bail!("admin API task: {e}"),
    }
    if let Some(g) = grpc {
        match g.await {
            Ok(r) => r?,
            Err(e) => anyhow::bail!("gRPC task: {e}"),
        }
    }
    Ok(())
}
