//! The admin REST API (JSON over HTTP, axum). Every object is addressed by id or unique name.
//! Every refused request gets a 4xx `{ "error": "..." }` naming the problem and changes
//! nothing. Bind it to loopback (the default) or put it behind an authenticating proxy; an
//! optional bearer token is checked when configured.

mod error;
mod handlers_networks;
mod handlers_peers;
mod handlers_policies;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

pub use error::{ApiError, ApiResult, JsonBody};

use crate::service::{Service, ServiceError};

/// Default admin API address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Handler state.
pub type AppState = Arc<Service>;

/// Runs a service call on the blocking pool (it may write to SQLite).
pub(crate) async fn blocking<T, F>(svc: &AppState, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
{
    let svc = svc.clone();
    match tokio::task::spawn_blocking(move || f(&svc)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            Err(ApiError::internal())
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint")
}

async fn require_token(State(token): State<Arc<String>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
    if ok {
        next.run(req).await
    } else {
        axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API's routes over a service; with `token`, every request needs
/// `Authorization: Bearer <token>`.
pub fn router(svc: AppState, token: Option<String>) -> Router {
    use handlers_networks as n;
    use handlers_peers as p;
    use handlers_policies as pol;
    let r = Router::new()
        .route("/api/health", get(p::health))
        .route("/api/peers", get(p::list).post(p::register))
        .route(
            "/api/peers/{id}",
            get(p::get).put(p::update).delete(p::delete),
        )
        .route("/api/peers/{id}/approve", post(p::approve))
        .route("/api/peers/{id}/network-map", get(p::network_map))
        .route("/api/peers/{id}/posture", get(p::posture))
        .route("/api/groups", get(p::list_groups).post(p::create_group))
        .route(
            "/api/groups/{id}",
            get(p::get_group)
                .put(p::update_group)
                .delete(p::delete_group),
        )
        .route(
            "/api/settings",
            get(p::get_settings).put(p::update_settings),
        )
        .route("/api/networks", get(n::list).post(n::create))
        .route(
            "/api/networks/{id}",
            get(n::get).put(n::update).delete(n::delete),
        )
        .route("/api/resources", get(n::all_resources))
        .route(
            "/api/networks/{id}/resources",
            get(n::list_resources).post(n::create_resource),
        )
        .route(
            "/api/networks/{id}/resources/{rid}",
            get(n::get_resource)
                .put(n::update_resource)
                .delete(n::delete_resource),
        )
        .route(
            "/api/networks/{id}/routers",
            get(n::list_routers).post(n::create_router),
        )
        .route(
            "/api/networks/{id}/routers/{rid}",
            get(n::get_router)
                .put(n::update_router)
                .delete(n::delete_router),
        )
        .route("/api/policies", get(pol::list).post(pol::create))
        .route(
            "/api/policies/{id}",
            get(pol::get).put(pol::update).delete(pol::delete),
        )
        .route("/api/policies/{id}/enable", post(pol::enable))
        .route("/api/policies/{id}/disable", post(pol::disable))
        .route("/api/setup-keys", get(pol::list_keys).post(pol::create_key))
        .route(
            "/api/setup-keys/{id}",
            get(pol::get_key).delete(pol::delete_key),
        )
        .route("/api/setup-keys/{id}/revoke", post(pol::revoke_key))
        .route(
            "/api/posture-checks",
            get(pol::list_posture).post(pol::create_posture),
        )
        .route(
            "/api/posture-checks/{id}",
            get(pol::get_posture)
                .put(pol::update_posture)
                .delete(pol::delete_posture),
        )
        .fallback(not_found)
        .with_state(svc);
    match token {
        Some(t) => r.layer(middleware::from_fn_with_state(Arc::new(t), require_token)),
        None => r,
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "admin REST API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
