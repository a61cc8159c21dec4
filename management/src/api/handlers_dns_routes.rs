//! NetBird's network routes (`/api/routes`) and DNS (`/api/dns/nameservers`,
//! `/api/dns/settings`).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::Refusals;
use super::{ApiResult, AppState, JsonBody, blocking};
use crate::model::*;

/// A route as NetBird's API shows it (`peer` empty when groups route it; `network` null for a
/// domain route, where NetBird shows a placeholder).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RouteView {
    /// Id.
    pub id: String,
    /// Free text.
    pub description: String,
    /// NetBird's route name; routes sharing it are one HA route.
    pub network_id: String,
    /// Disabled routes are not distributed.
    pub enabled: bool,
    /// The routing peer, or empty when `peer_groups` route it.
    pub peer: String,
    /// Groups whose peers all route it.
    pub peer_groups: Vec<GroupId>,
    /// The routed prefix; null for a domain route.
    #[schema(value_type = Option<String>)]
    pub network: Option<ipnet::IpNet>,
    /// The routed domains.
    pub domains: Vec<String>,
    /// `IPv4`, `IPv6` or `Domain`.
    pub network_type: String,
    /// Priority: lower is preferred.
    pub metric: u16,
    /// Rewrite the source to the routing peer's LAN address.
    pub masquerade: bool,
    /// Distribution groups.
    pub groups: Vec<GroupId>,
    /// Keep resolved routes of a domain route.
    pub keep_route: bool,
    /// Groups policies must name as destination to allow traffic through the route.
    pub access_control_groups: Vec<GroupId>,
    /// Exit nodes not applied until chosen (only false is accepted).
    pub skip_auto_apply: bool,
}

impl From<&NetworkRoute> for RouteView {
    fn from(r: &NetworkRoute) -> Self {
        RouteView {
            id: r.id.clone(),
            description: r.description.clone(),
            network_id: r.network_id.clone(),
            enabled: r.enabled,
            peer: r.peer.clone().unwrap_or_default(),
            peer_groups: r.peer_groups.clone(),
            network: r.network,
            domains: r.domains.clone(),
            network_type: match r.network {
                Some(ipnet::IpNet::V4(_)) => "IPv4",
                Some(ipnet::IpNet::V6(_)) => "IPv6",
                None => "Domain",
            }
            .into(),
            metric: r.metric,
            masquerade: r.masquerade,
            groups: r.groups.clone(),
            keep_route: r.keep_route,
            access_control_groups: r.access_control_groups.clone(),
            skip_auto_apply: r.skip_auto_apply,
        }
    }
}

/// `GET /api/routes`.
#[utoipa::path(get, path = "/api/routes", tag = "routes",
    responses((status = 200, body = Vec<RouteView>), Refusals))]
pub async fn list_routes(State(svc): State<AppState>) -> Json<Vec<RouteView>> {
    Json(svc.account().routes.values().map(RouteView::from).collect())
}

/// `GET /api/routes/{id}`.
#[utoipa::path(get, path = "/api/routes/{id}", tag = "routes", params(("id" = String, Path, description = "Id or name of the route")),
    responses((status = 200, body = RouteView), Refusals))]
pub async fn get_route(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RouteView>> {
    let a = svc.account();
    let id = a.route_id(&id)?;
    Ok(Json(RouteView::from(&a.routes[&id])))
}

/// `POST /api/routes`.
#[utoipa::path(post, path = "/api/routes", tag = "routes", request_body = RouteInput,
    responses((status = 200, body = RouteView), Refusals))]
pub async fn create_route(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<RouteInput>,
) -> ApiResult<Json<RouteView>> {
    let r = blocking(&svc, move |s| {
        s.mutate("create_route", |a, _| a.create_route(&input))
    })
    .await?;
    Ok(Json(RouteView::from(&r)))
}

/// `PUT /api/routes/{id}`.
#[utoipa::path(put, path = "/api/routes/{id}", tag = "routes", params(("id" = String, Path, description = "Id or name of the route")), request_body = RouteInput,
    responses((status = 200, body = RouteView), Refusals))]
pub async fn update_route(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<RouteInput>,
) -> ApiResult<Json<RouteView>> {
    let r = blocking(&svc, move |s| {
        s.mutate("update_route", |a, _| a.update_route(&id, &input))
    })
    .await?;
    Ok(Json(RouteView::from(&r)))
}

/// `DELETE /api/routes/{id}`.
#[utoipa::path(delete, path = "/api/routes/{id}", tag = "routes", params(("id" = String, Path, description = "Id or name of the route")),
    responses((status = 200, description = "The route as it was", body = RouteView), Refusals))]
pub async fn delete_route(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RouteView>> {
    let r = blocking(&svc, move |s| {
        s.mutate("delete_route", |a, _| a.delete_route(&id))
    })
    .await?;
    Ok(Json(RouteView::from(&r)))
}

/// `GET /api/dns/nameservers`.
#[utoipa::path(get, path = "/api/dns/nameservers", tag = "dns",
    responses((status = 200, body = Vec<NameserverGroup>), Refusals))]
pub async fn list_nameservers(State(svc): State<AppState>) -> Json<Vec<NameserverGroup>> {
    Json(svc.account().nameserver_groups.values().cloned().collect())
}

/// `GET /api/dns/nameservers/{id}`.
#[utoipa::path(get, path = "/api/dns/nameservers/{id}", tag = "dns", params(("id" = String, Path, description = "Id or name of the name server group")),
    responses((status = 200, body = NameserverGroup), Refusals))]
pub async fn get_nameservers(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<NameserverGroup>> {
    let a = svc.account();
    let id = a.nameserver_group_id(&id)?;
    Ok(Json(a.nameserver_groups[&id].clone()))
}

/// `POST /api/dns/nameservers`.
#[utoipa::path(post, path = "/api/dns/nameservers", tag = "dns", request_body = NameserverGroupInput,
    responses((status = 200, body = NameserverGroup), Refusals))]
pub async fn create_nameservers(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<NameserverGroupInput>,
) -> ApiResult<Json<NameserverGroup>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("create_nameserver_group", |a, _| {
                a.create_nameserver_group(&input)
            })
        })
        .await?,
    ))
}

/// `PUT /api/dns/nameservers/{id}`.
#[utoipa::path(put, path = "/api/dns/nameservers/{id}", tag = "dns", params(("id" = String, Path, description = "Id or name of the name server group")), request_body = NameserverGroupInput,
    responses((status = 200, body = NameserverGroup), Refusals))]
pub async fn update_nameservers(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<NameserverGroupInput>,
) -> ApiResult<Json<NameserverGroup>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("update_nameserver_group", |a, _| {
                a.update_nameserver_group(&id, &input)
            })
        })
        .await?,
    ))
}

/// `DELETE /api/dns/nameservers/{id}`.
#[utoipa::path(delete, path = "/api/dns/nameservers/{id}", tag = "dns", params(("id" = String, Path, description = "Id or name of the name server group")),
    responses((status = 200, description = "The name server group as it was", body = NameserverGroup), Refusals))]
pub async fn delete_nameservers(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<NameserverGroup>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("delete_nameserver_group", |a, _| {
                a.delete_nameserver_group(&id)
            })
        })
        .await?,
    ))
}

/// NetBird's DNS settings: the groups whose peers get no DNS configuration from the server.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// Group ids (or names, in a request).
    pub disabled_management_groups: Vec<String>,
}

/// `GET /api/dns/settings`.
#[utoipa::path(get, path = "/api/dns/settings", tag = "dns",
    responses((status = 200, body = DnsSettings), Refusals))]
pub async fn get_dns_settings(State(svc): State<AppState>) -> Json<DnsSettings> {
    Json(DnsSettings {
        disabled_management_groups: svc
            .account()
            .settings
            .dns_disabled_management_groups
            .clone(),
    })
}

/// `PUT /api/dns/settings`.
#[utoipa::path(put, path = "/api/dns/settings", tag = "dns", request_body = DnsSettings,
    responses((status = 200, body = DnsSettings), Refusals))]
pub async fn update_dns_settings(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<DnsSettings>,
) -> ApiResult<Json<DnsSettings>> {
    let ids = blocking(&svc, move |s| {
        s.mutate("update_dns_settings", |a, _| {
            a.set_dns_disabled_groups(&input.disabled_management_groups)
        })
    })
    .await?;
    Ok(Json(DnsSettings {
        disabled_management_groups: ids,
    }))
}
