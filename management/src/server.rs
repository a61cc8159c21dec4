//! `swiftgate-management serve`: opens the store, then runs the admin REST API, the gRPC
//! management service and the housekeeping task until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::service::Service;
use crate::store::DB_FILE;

/// How long a shutdown waits for admin API requests in flight.
pub const REST_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Directory of the database file (created if missing).
    pub data_dir: PathBuf,
    /// May initialise an existing database file that is empty or holds no account (`--init`);
    /// without it such a file is refused. A missing file is always created.
    pub init: bool,
    /// Admin REST API address (default loopback).
    pub listen: SocketAddr,
    /// gRPC management service address; `None` disables it.
    pub grpc_listen: Option<SocketAddr>,
    /// Who may call the admin API, under which names.
    pub api: crate::api::ApiConfig,
    /// The admin API's connection and time limits.
    pub limits: crate::api::HttpLimits,
    /// Signal/STUN/relay servers announced to agents.
    pub peer_services: crate::grpc::PeerServices,
    /// TLS of the gRPC service.
    pub grpc_tls: crate::tls::GrpcTls,
    /// Issue a new admin token for the owner and write it to the token file, though the server
    /// has users (`--reissue-admin-token`; recovery of a lost token).
    pub reissue_admin_token: bool,
}

impl ServeConfig {
    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }

    /// The file the first start's admin token is written to.
    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join(ADMIN_TOKEN_FILE)
    }
}

/// Name of the admin token file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Lifetime of the admin token a first start issues, in days (the longest a token may have).
pub const ADMIN_TOKEN_DAYS: u64 = 365;

/// On a server without users (its first start), or when `reissue` asks for it: creates the
/// owner user (once) and a new token for it, and writes the token to `path`, readable only by
/// this user. Otherwise nothing is issued, also when the file was deleted (an operator who
/// moved the token elsewhere does not get a new owner credential on every restart). Returns
/// whether a token was written.
pub fn ensure_admin_token(
    svc: &Service,
    path: &std::path::Path,
    reissue: bool,
) -> anyhow::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if !svc.users().is_empty() && !reissue {
        return Ok(false);
    }
    let owner = svc.bootstrap_owner().context("creating the owner user")?;
    let (t, clear) = svc
        .create_token(
            &owner,
            &owner,
            "admin token (first start)",
            ADMIN_TOKEN_DAYS,
        )
        .context("issuing the admin token")?;
    // A stale file (from a database that is gone) is replaced.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("replacing {}", path.display())),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(format!("{clear}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(
        file = %path.display(),
        token = %t.id,
        expires_in_days = ADMIN_TOKEN_DAYS,
        "issued an admin access token for the owner user; it is in this file, readable only \
         by this user (use `swiftgate-management --token-file <file> ...`, or send \
         `Authorization: Token <token>`); `serve --reissue-admin-token` issues a new one"
    );
    Ok(true)
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
    tracing::info!("shutdown signal received");
}

/// Runs the server until SIGTERM or SIGINT (Ctrl-C); see [`run_until`].
pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    run_until(cfg, shutdown_signal()).await
}

/// Runs the server until `shutdown` resolves, then stops within a few seconds even with agents
/// connected: both listeners stop accepting, every Sync stream ends (its peer marked
/// disconnected first, then `UNAVAILABLE`, so agents reconnect at once), and open connections
/// get at most [`crate::grpc::SHUTDOWN_GRACE`] (gRPC) and [`REST_SHUTDOWN_GRACE`] (admin API)
/// to drain, in parallel.
pub async fn run_until(
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !cfg.data_dir.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.data_dir)
            .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    }
    if cfg.api.auth == crate::api::AuthMode::InsecureNoAuth {
        anyhow::ensure!(
            cfg.listen.ip().is_loopback(),
            "--insecure-no-auth serves the admin API without authentication and is allowed on \
             a loopback address only (not {})",
            cfg.listen
        );
    }
    let db = cfg.db_path();
    let svc = {
        let db2 = db.clone();
        let init = cfg.init;
        tokio::task::spawn_blocking(move || Service::open_with(&db2, init))
            .await
            .context("opening the store")?
            .with_context(|| format!("opening {}", db.display()))?
    };
    let svc = Arc::new(svc);
    tracing::info!(db = %db.display(), serial = svc.account().serial, "store open");
    match cfg.api.auth {
        crate::api::AuthMode::Tokens => {
            let svc2 = svc.clone();
            let path = cfg.admin_token_path();
            let reissue = cfg.reissue_admin_token;
            tokio::task::spawn_blocking(move || ensure_admin_token(&svc2, &path, reissue))
                .await
                .context("issuing the admin token")??;
        }
        crate::api::AuthMode::InsecureNoAuth => tracing::warn!(
            listen = %cfg.listen,
            "THE ADMIN API IS UNAUTHENTICATED (--insecure-no-auth): anyone who can reach {} \
             controls this network; for development only",
            cfg.listen
        ),
    }
    let housekeeping = svc.spawn_housekeeping(Duration::from_secs(30));

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
    let app = crate::api::router(svc.clone(), cfg.api.clone());
    let mut rest = tokio::spawn(crate::api::serve(listener, app, cfg.limits, stopped()));

    let grpc = match cfg.grpc_listen {
        Some(addr) => {
            let tls = crate::tls::identity(&cfg.grpc_tls, &cfg.data_dir)?;
            Some(
                crate::grpc::spawn(
                    svc.clone(),
                    addr,
                    cfg.peer_services.clone(),
                    tls.as_ref(),
                    stopped(),
                )
                .await?,
            )
        }
        None => None,
    };

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    housekeeping.abort();
    let rest_done = async {
        match tokio::time::timeout(REST_SHUTDOWN_GRACE, &mut rest).await {
            Ok(Ok(r)) => r.context("admin API"),
            Ok(Err(e)) => Err(anyhow::anyhow!("admin API task: {e}")),
            Err(_) => {
                tracing::warn!(
                    grace_secs = REST_SHUTDOWN_GRACE.as_secs(),
                    "admin API connections still open after the grace period; closing them"
                );
                rest.abort();
                Ok(())
            }
        }
    };
    // The gRPC task bounds its own drain (it must end the Sync streams first).
    let grpc_done = async {
        match grpc {
            Some(g) => match g.await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("gRPC task: {e}")),
            },
            None => Ok(()),
        }
    };
    let (r, g) = tokio::join!(rest_done, grpc_done);
    r?;
    g?;
    tracing::info!("stopped");
    Ok(())
}
