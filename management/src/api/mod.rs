//! The admin REST API (JSON over HTTP/1.1, axum), shaped as NetBird's where it models the
//! same things. Every object is addressed by id or unique name. Every refused request gets a
//! 4xx `{ "message": "...", "code": 4xx }` naming the problem and changes nothing.
//!
//! Every request is authenticated with a personal access token (`Authorization: Token ...`,
//! or `Bearer`) and authorised by its user's role; Host, cross-site and content-type checks
//! come first ([`guard`]); connection and time limits are those of [`serve`]. Successful
//! changes are recorded in the activity log ([`audit`]).

mod audit;
mod error;
pub mod guard;
mod handlers_accounts;
mod handlers_dns_routes;
mod handlers_networks;
mod handlers_peers;
mod handlers_policies;
mod handlers_users;
pub mod serve;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};

pub use error::{ApiError, ApiResult, JsonBody};
pub use guard::{AllowedHosts, AuthMode};
pub use serve::{HttpLimits, serve};

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

/// The largest request body accepted (413 beyond it).
pub const MAX_BODY: usize = 1 << 20;

/// Who may call the API and under which names.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Token authentication, or the insecure development mode.
    pub auth: AuthMode,
    /// Names the `Host` header may carry besides IP literals and `localhost`.
    pub hosts: AllowedHosts,
}

impl Default for ApiConfig {
    /// Tokens required; IP literals and `localhost` accepted as Host.
    fn default() -> Self {
        ApiConfig {
            auth: AuthMode::Tokens,
            hosts: AllowedHosts::default(),
        }
    }
}

/// The API's routes over a service, behind the guards of [`guard`] and the activity log.
pub fn router(svc: AppState, cfg: ApiConfig) -> Router {
    use handlers_networks as n;
    use handlers_peers as p;
    use handlers_policies as pol;
    use handlers_users as u;
    let guards = guard::GuardState {
        svc: svc.clone(),
        mode: cfg.auth,
        hosts: Arc::new(cfg.hosts),
    };
    Router::new()
        .route("/api/health", get(p::health))
        .route("/api/peers", get(p::list).post(p::register))
        .route(
            "/api/peers/{id}",
            get(p::get).put(p::update).delete(p::delete),
        )
        .route("/api/peers/{id}/approve", post(p::approve))
        .route("/api/peers/{id}/accessible-peers", get(p::accessible))
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
        .route("/api/networks/routers", get(n::all_routers))
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
            get(pol::get_key)
                .put(pol::update_key)
                .delete(pol::delete_key),
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
        .route("/api/users", get(u::list).post(u::create))
        .route("/api/users/current", get(u::current))
        .route(
            "/api/users/{id}",
            get(u::get).put(u::update).delete(u::delete),
        )
        .route(
            "/api/users/{id}/tokens",
            get(u::list_tokens).post(u::create_token),
        )
        .route(
            "/api/users/{id}/tokens/{tid}",
            get(u::get_token).delete(u::delete_token),
        )
        .route(
            "/api/routes",
            get(handlers_dns_routes::list_routes).post(handlers_dns_routes::create_route),
        )
        .route(
            "/api/routes/{id}",
            get(handlers_dns_routes::get_route)
                .put(handlers_dns_routes::update_route)
                .delete(handlers_dns_routes::delete_route),
        )
        .route(
            "/api/dns/nameservers",
            get(handlers_dns_routes::list_nameservers)
                .post(handlers_dns_routes::create_nameservers),
        )
        .route(
            "/api/dns/nameservers/{id}",
            get(handlers_dns_routes::get_nameservers)
                .put(handlers_dns_routes::update_nameservers)
                .delete(handlers_dns_routes::delete_nameservers),
        )
        .route(
            "/api/dns/settings",
            get(handlers_dns_routes::get_dns_settings)
                .put(handlers_dns_routes::update_dns_settings),
        )
        .route("/api/accounts", get(handlers_accounts::list))
        .route(
            "/api/accounts/{id}",
            axum::routing::put(handlers_accounts::update),
        )
        .route("/api/events/audit", get(u::events))
        .route("/api/events", get(u::events))
        // Inner to outer: the log sees the caller and the route; authorisation needs the
        // route; authentication and the header checks cover unknown paths too.
        .route_layer(middleware::from_fn_with_state(svc.clone(), audit::record))
        .route_layer(middleware::from_fn(guard::authorize))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            guards.clone(),
            guard::authenticate,
        ))
        .layer(middleware::from_fn_with_state(guards, guard::check_request))
        .with_state(svc)
}
