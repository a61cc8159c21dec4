//! NetBird's network routes (`/api/routes`) and DNS (`/api/dns/nameservers`,
//! `/api/dns/settings`).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiResult, AppState, JsonBody, blocking};
use crate::model::*;

/// A route as NetBird's API shows it (`peer` empty when groups route it; `network` null for a
/// domain route, where NetBird shows a placeholder).
fn route_view(r: &NetworkRoute) -> Value {
    json!({
        "id": r.id,
        "description": r.description,
        "network_id": r.network_id,
        "enabled": r.enabled,
        "peer": r.peer.clone().unwrap_or_default(),
        "peer_groups": r.peer_groups,
        "network": r.network,
        "domains": r.domains,
        "network_type": match r.network {
            Some(ipnet::IpNet::V4(_)) => "IPv4",
            Some(ipnet::IpNet::V6(_)) => "IPv6",
            None => "Domain",
        },
        "metric": r.metric,
        "masquerade": r.masquerade,
        "groups": r.groups,
        "keep_route": r.keep_route,
        "access_control_groups": r.access_control_groups,
        "skip_auto_apply": r.skip_auto_apply,
    })
}

/// `GET /api/routes`.
pub async fn list_routes(State(svc): State<AppState>) -> Json<Vec<Value>> {
    Json(svc.account().routes.values().map(route_view).collect())
}

/// `GET /api/routes/{id}`.
pub async fn get_route(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = svc.account();
    let id = a.route_id(&id)?;
    Ok(Json(route_view(&a.routes[&id])))
}

/// `POST /api/routes`.
pub async fn create_route(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<RouteInput>,
) -> ApiResult<Json<Value>> {
    let r = blocking(&svc, move |s| {
        s.mutate("create_route", |a, _| a.create_route(&input))
    })
    .await?;
    Ok(Json(route_view(&r)))
}

/// `PUT /api/routes/{id}`.
pub async fn update_route(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<RouteInput>,
) -> ApiResult<Json<Value>> {
    let r = blocking(&svc, move |s| {
        s.mutate("update_route", |a, _| a.update_route(&id, &input))
    })
    .await?;
    Ok(Json(route_view(&r)))
}

/// `DELETE /api/routes/{id}`.
pub async fn delete_route(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = blocking(&svc, move |s| {
        s.mutate("delete_route", |a, _| a.delete_route(&id))
    })
    .await?;
    Ok(Json(route_view(&r)))
}

/// `GET /api/dns/nameservers`.
pub async fn list_nameservers(State(svc): State<AppState>) -> Json<Vec<NameserverGroup>> {
    Json(svc.account().nameserver_groups.values().cloned().collect())
}

/// `GET /api/dns/nameservers/{id}`.
pub async fn get_nameservers(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<NameserverGroup>> {
    let a = svc.account();
    let id = a.nameserver_group_id(&id)?;
    Ok(Json(a.nameserver_groups[&id].clone()))
}

/// `POST /api/dns/nameservers`.
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

/// `GET /api/dns/settings`.
pub async fn get_dns_settings(State(svc): State<AppState>) -> Json<Value> {
    Json(json!({
        "disabled_management_groups": svc.account().settings.dns_disabled_management_groups,
    }))
}

/// `PUT /api/dns/settings` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSettingsInput {
    disabled_management_groups: Vec<String>,
}

/// `PUT /api/dns/settings`.
pub async fn update_dns_settings(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<DnsSettingsInput>,
) -> ApiResult<Json<Value>> {
    let ids = blocking(&svc, move |s| {
        s.mutate("update_dns_settings", |a, _| {
            a.set_dns_disabled_groups(&input.disabled_management_groups)
        })
    })
    .await?;
    Ok(Json(json!({ "disabled_management_groups": ids })))
}
