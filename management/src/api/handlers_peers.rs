//! Handlers for peers, groups, settings and health.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::openapi::Refusals;
use super::views::{AccessiblePeerView, GroupView, PeerView};
use super::{ApiResult, AppState, JsonBody, QueryParams, blocking};
use crate::model::*;
use crate::netmap::NetworkMap;

/// `GET /api/health` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The account's serial: it grows with every change.
    pub serial: u64,
}

/// `GET /api/health`.
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses((status = 200, body = Health), Refusals))]
pub async fn health(State(svc): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        serial: svc.account().serial,
    })
}

/// `GET /api/peers` filters (NetBird's): an exact name, an exact overlay address.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PeerFilter {
    /// Only the peer of this name.
    name: Option<String>,
    /// Only the peer of this overlay address.
    ip: Option<String>,
}

/// `GET /api/peers[?name=..][&ip=..]`.
#[utoipa::path(get, path = "/api/peers", tag = "peers", params(PeerFilter),
    responses((status = 200, body = Vec<PeerView>), Refusals))]
pub async fn list(
    State(svc): State<AppState>,
    QueryParams(f): QueryParams<PeerFilter>,
) -> Json<Vec<PeerView>> {
    let (a, m) = svc.account_with_members();
    Json(
        a.peers
            .values()
            .filter(|p| f.name.as_ref().is_none_or(|n| *n == p.name))
            .filter(|p| f.ip.as_ref().is_none_or(|ip| *ip == p.ip.to_string()))
            .map(|p| PeerView::new(&a, &m, p))
            .collect(),
    )
}

/// `GET /api/peers/{id}/accessible-peers`: the peers in the peer's network map (NetBird's
/// `AccessiblePeer`).
#[utoipa::path(get, path = "/api/peers/{id}/accessible-peers", tag = "peers", params(("id" = String, Path, description = "Peer id or name")),
    responses((status = 200, body = Vec<AccessiblePeerView>), Refusals))]
pub async fn accessible(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<AccessiblePeerView>>> {
    let a = svc.account();
    let id = a.peer_id(&id)?;
    let map = crate::netmap::Netmapper::new(&a)
        .map_for(&id)
        .ok_or_else(|| ModelError::NotFound {
            kind: "peer",
            key: id.clone(),
        })?;
    Ok(Json(
        map.remote_peers
            .iter()
            .filter_map(|r| a.peers.get(&r.id))
            .map(|p| AccessiblePeerView::new(&a, p))
            .collect(),
    ))
}

/// `GET /api/peers/{id}`.
#[utoipa::path(get, path = "/api/peers/{id}", tag = "peers", params(("id" = String, Path, description = "Peer id or name")),
    responses((status = 200, body = PeerView), Refusals))]
pub async fn get(State(svc): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<PeerView>> {
    let (a, m) = svc.account_with_members();
    let id = a.peer_id(&id)?;
    Ok(Json(PeerView::new(&a, &m, &a.peers[&id])))
}

/// `GET /api/peers/{id}/posture`: every posture check of an enabled policy that has the peer
/// as a source, passed or failed, with the reason for each check.
#[utoipa::path(get, path = "/api/peers/{id}/posture", tag = "peers", params(("id" = String, Path, description = "Peer id or name")),
    responses((status = 200, body = PostureReport), Refusals))]
pub async fn posture(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PostureReport>> {
    Ok(Json(svc.account().posture_report(&id)?))
}

/// `POST /api/peers`: register a peer by WireGuard key with a setup key (what Login does).
#[utoipa::path(post, path = "/api/peers", tag = "peers", request_body = RegisterPeer,
    responses((status = 200, body = PeerView), Refusals))]
pub async fn register(
    State(svc): State<AppState>,
    JsonBody(req): JsonBody<RegisterPeer>,
) -> ApiResult<(StatusCode, Json<PeerView>)> {
    let p = blocking(&svc, move |s| {
        s.mutate("register_peer", |a, now| a.register_peer(&req, now))
    })
    .await?;
    let (a, m) = svc.account_with_members();
    Ok((StatusCode::OK, Json(PeerView::new(&a, &m, &p))))
}

/// `PUT /api/peers/{id}`: name, groups, approved.
#[utoipa::path(put, path = "/api/peers/{id}", tag = "peers", params(("id" = String, Path, description = "Peer id or name")), request_body = PeerUpdate,
    responses((status = 200, body = PeerView), Refusals))]
pub async fn update(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(upd): JsonBody<PeerUpdate>,
) -> ApiResult<Json<PeerView>> {
    let p = blocking(&svc, move |s| {
        s.mutate("update_peer", |a, _| a.update_peer(&id, &upd))
    })
    .await?;
    let (a, m) = svc.account_with_members();
    Ok(Json(PeerView::new(&a, &m, &p)))
}

/// `POST /api/peers/{id}/approve`.
#[utoipa::path(post, path = "/api/peers/{id}/approve", tag = "peers", params(("id" = String, Path, description = "Peer id or name")),
    responses((status = 200, body = PeerView), Refusals))]
pub async fn approve(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PeerView>> {
    let p = blocking(&svc, move |s| {
        s.mutate("approve_peer", |a, _| a.approve_peer(&id))
    })
    .await?;
    let (a, m) = svc.account_with_members();
    Ok(Json(PeerView::new(&a, &m, &p)))
}

/// `DELETE /api/peers/{id}`.
#[utoipa::path(delete, path = "/api/peers/{id}", tag = "peers", params(("id" = String, Path, description = "Peer id or name")),
    responses((status = 200, description = "The peer as it was", body = Peer), Refusals))]
pub async fn delete(State(svc): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Peer>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("delete_peer", |a, _| a.delete_peer(&id))
        })
        .await?,
    ))
}

/// `GET /api/peers/{id}/network-map`: the map the peer would receive now.
#[utoipa::path(get, path = "/api/peers/{id}/network-map", tag = "peers", params(("id" = String, Path, description = "Peer id or name")),
    responses((status = 200, description = "The network map the peer would receive now (swiftgate's JSON form)", body = Object), Refusals))]
pub async fn network_map(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<NetworkMap>> {
    Ok(Json(blocking(&svc, move |s| s.network_map(&id)).await?))
}

/// `GET /api/groups`.
#[utoipa::path(get, path = "/api/groups", tag = "groups",
    responses((status = 200, body = Vec<GroupView>), Refusals))]
pub async fn list_groups(State(svc): State<AppState>) -> Json<Vec<GroupView>> {
    let (a, m) = svc.account_with_members();
    Json(
        a.groups
            .values()
            .map(|g| GroupView::new(&a, &m, g))
            .collect(),
    )
}

/// `GET /api/groups/{id}`.
#[utoipa::path(get, path = "/api/groups/{id}", tag = "groups", params(("id" = String, Path, description = "Group id or name")),
    responses((status = 200, body = GroupView), Refusals))]
pub async fn get_group(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<GroupView>> {
    let (a, m) = svc.account_with_members();
    let id = a.group_id(&id)?;
    Ok(Json(GroupView::new(&a, &m, &a.groups[&id])))
}

/// `POST /api/groups`.
#[utoipa::path(post, path = "/api/groups", tag = "groups", request_body = GroupInput,
    responses((status = 200, body = GroupView), Refusals))]
pub async fn create_group(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<GroupInput>,
) -> ApiResult<(StatusCode, Json<GroupView>)> {
    let g = blocking(&svc, move |s| {
        s.mutate("create_group", |a, _| a.create_group(&input))
    })
    .await?;
    let (a, m) = svc.account_with_members();
    Ok((StatusCode::OK, Json(GroupView::new(&a, &m, &g))))
}

/// `PUT /api/groups/{id}`.
#[utoipa::path(put, path = "/api/groups/{id}", tag = "groups", params(("id" = String, Path, description = "Group id or name")), request_body = GroupInput,
    responses((status = 200, body = GroupView), Refusals))]
pub async fn update_group(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<GroupInput>,
) -> ApiResult<Json<GroupView>> {
    let g = blocking(&svc, move |s| {
        s.mutate("update_group", |a, _| a.update_group(&id, &input))
    })
    .await?;
    let (a, m) = svc.account_with_members();
    Ok(Json(GroupView::new(&a, &m, &g)))
}

/// `DELETE /api/groups/{id}`.
#[utoipa::path(delete, path = "/api/groups/{id}", tag = "groups", params(("id" = String, Path, description = "Group id or name")),
    responses((status = 200, description = "The group as it was", body = Group), Refusals))]
pub async fn delete_group(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Group>> {
    Ok(Json(
        blocking(&svc, move |s| {
            // Users' auto-groups live beside the account; a group they name stays.
            let gid = s.account().group_id(&id)?;
            if let Some(u) = s.users().iter().find(|u| u.auto_groups.contains(&gid)) {
                return Err(crate::model::conflict(format!(
                    "group {id:?} is an auto-group of user {:?}",
                    u.name
                ))
                .into());
            }
            s.mutate("delete_group", |a, _| a.delete_group(&id))
        })
        .await?,
    ))
}

/// `GET /api/settings`.
#[utoipa::path(get, path = "/api/settings", tag = "settings",
    responses((status = 200, body = Settings), Refusals))]
pub async fn get_settings(State(svc): State<AppState>) -> Json<Settings> {
    Json(svc.account().settings.clone())
}

/// `PUT /api/settings`: only the fields given change.
#[utoipa::path(put, path = "/api/settings", tag = "settings", request_body = SettingsInput,
    responses((status = 200, body = Settings), Refusals))]
pub async fn update_settings(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<SettingsInput>,
) -> ApiResult<Json<Settings>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("update_settings", |a, _| a.update_settings(&input))
        })
        .await?,
    ))
}
