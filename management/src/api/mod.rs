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
pub mod openapi;
pub mod serve;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ApiResult, JsonBody, QueryParams};
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

/// Every route with its OpenAPI entry: `routes!` groups the handlers of one path (each
/// handler's `#[utoipa::path]` names its method and path).
fn routes() -> OpenApiRouter<AppState> {
    use handlers_accounts as acc;
    use handlers_dns_routes as dns;
    use handlers_networks as n;
    use handlers_peers as p;
    use handlers_policies as pol;
    use handlers_users as u;
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(p::health))
        .routes(routes!(p::list, p::register))
        .routes(routes!(p::get, p::update, p::delete))
        .routes(routes!(p::approve))
        .routes(routes!(p::accessible))
        .routes(routes!(p::network_map))
        .routes(routes!(p::posture))
        .routes(routes!(p::list_groups, p::create_group))
        .routes(routes!(p::get_group, p::update_group, p::delete_group))
        .routes(routes!(p::get_settings, p::update_settings))
        .routes(routes!(n::list, n::create))
        .routes(routes!(n::all_routers))
        .routes(routes!(n::get, n::update, n::delete))
        .routes(routes!(n::all_resources))
        .routes(routes!(n::list_resources, n::create_resource))
        .routes(routes!(
            n::get_resource,
            n::update_resource,
            n::delete_resource
        ))
        .routes(routes!(n::list_routers, n::create_router))
        .routes(routes!(n::get_router, n::update_router, n::delete_router))
        .routes(routes!(pol::list, pol::create))
        .routes(routes!(pol::get, pol::update, pol::delete))
        .routes(routes!(pol::enable))
        .routes(routes!(pol::disable))
        .routes(routes!(pol::list_keys, pol::create_key))
        .routes(routes!(pol::get_key, pol::update_key, pol::delete_key))
        .routes(routes!(pol::revoke_key))
        .routes(routes!(pol::list_posture, pol::create_posture))
        .routes(routes!(
            pol::get_posture,
            pol::update_posture,
            pol::delete_posture
        ))
        .routes(routes!(u::list, u::create))
        .routes(routes!(u::current))
        .routes(routes!(u::get, u::update, u::delete))
        .routes(routes!(u::list_tokens, u::create_token))
        .routes(routes!(u::get_token, u::delete_token))
        .routes(routes!(dns::list_routes, dns::create_route))
        .routes(routes!(
            dns::get_route,
            dns::update_route,
            dns::delete_route
        ))
        .routes(routes!(dns::list_nameservers, dns::create_nameservers))
        .routes(routes!(
            dns::get_nameservers,
            dns::update_nameservers,
            dns::delete_nameservers
        ))
        .routes(routes!(dns::get_dns_settings, dns::update_dns_settings))
        .routes(routes!(acc::list))
        .routes(routes!(acc::update))
        .routes(routes!(u::events))
        .routes(routes!(u::events_legacy))
}

/// The API's OpenAPI document, as [`openapi::OPENAPI_PATH`] serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The API's routes over a service, behind the guards of [`guard`] and the activity log.
pub fn router(svc: AppState, cfg: ApiConfig) -> Router {
    let guards = guard::GuardState {
        svc: svc.clone(),
        mode: cfg.auth,
        hosts: Arc::new(cfg.hosts),
    };
    let (routes, doc) = routes().split_for_parts();
    let doc = Arc::new(doc);
    routes
        .route(
            openapi::OPENAPI_PATH,
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
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
