//! Handlers for peers, groups, settings and health.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::views::{GroupView, PeerView};
use super::{ApiResult, AppState, JsonBody, blocking};
use crate::model::*;
use crate::netmap::NetworkMap;

/// `GET /api/health`.
pub async fn health(State(svc): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "serial": svc.account().serial }))
}

/// `GET /api/peers` filters (NetBird's): an exact name, an exact overlay address.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFilter {
    name: Option<String>,
    ip: Option<String>,
}

/// `GET /api/peers[?name=..][&ip=..]`.
pub async fn list(
    State(svc): State<AppState>,
    axum::extract::Query(f): axum::extract::Query<PeerFilter>,
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
pub async fn accessible(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Value>>> {
    let (a, m) = svc.account_with_members();
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
            .map(|p| {
                let v = PeerView::new(&a, &m, p);
                json!({
                    "id": p.id,
                    "name": p.name,
                    "ip": p.ip,
                    "ipv6": v.ipv6,
                    "dns_label": v.fqdn,
                    "user_id": "",
                    "os": p.meta.os,
                    "country_code": "",
                    "city_name": "",
                    "geoname_id": 0,
                    "connected": p.connected,
                    "last_seen": super::views::rfc3339(p.last_seen_at),
                })
            })
            .collect(),
    ))
}

/// `GET /api/peers/{id}`.
pub async fn get(State(svc): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<PeerView>> {
    let (a, m) = svc.account_for_one();
    let id = a.peer_id(&id)?;
    Ok(Json(PeerView::new(&a, &m, &a.peers[&id])))
}

/// `GET /api/peers/{id}/posture`: every posture check of an enabled policy that has the peer
/// as a source, passed or failed, with the reason for each check.
pub async fn posture(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PostureReport>> {
    Ok(Json(svc.account().posture_report(&id)?))
}

/// `POST /api/peers`: register a peer by WireGuard key with a setup key (what Login does).
pub async fn register(
    State(svc): State<AppState>,
    JsonBody(req): JsonBody<RegisterPeer>,
) -> ApiResult<(StatusCode, Json<PeerView>)> {
    let p = blocking(&svc, move |s| {
        s.mutate("register_peer", |a, now| a.register_peer(&req, now))
    })
    .await?;
    let (a, m) = svc.account_for_one();
    Ok((StatusCode::OK, Json(PeerView::new(&a, &m, &p))))
}

/// `PUT /api/peers/{id}`: name, groups, approved.
pub async fn update(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(upd): JsonBody<PeerUpdate>,
) -> ApiResult<Json<PeerView>> {
    let p = blocking(&svc, move |s| {
        s.mutate("update_peer", |a, _| a.update_peer(&id, &upd))
    })
    .await?;
    let (a, m) = svc.account_for_one();
    Ok(Json(PeerView::new(&a, &m, &p)))
}

/// `POST /api/peers/{id}/approve`.
pub async fn approve(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PeerView>> {
    let p = blocking(&svc, move |s| {
        s.mutate("approve_peer", |a, _| a.approve_peer(&id))
    })
    .await?;
    let (a, m) = svc.account_for_one();
    Ok(Json(PeerView::new(&a, &m, &p)))
}

/// `DELETE /api/peers/{id}`.
pub async fn delete(State(svc): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Peer>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("delete_peer", |a, _| a.delete_peer(&id))
        })
        .await?,
    ))
}

/// `GET /api/peers/{id}/network-map`: the map the peer would receive now.
pub async fn network_map(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<NetworkMap>> {
    Ok(Json(blocking(&svc, move |s| s.network_map(&id)).await?))
}

/// `GET /api/groups`.
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
pub async fn get_group(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<GroupView>> {
    let (a, m) = svc.account_for_one();
    let id = a.group_id(&id)?;
    Ok(Json(GroupView::new(&a, &m, &a.groups[&id])))
}

/// `POST /api/groups`.
pub async fn create_group(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<GroupInput>,
) -> ApiResult<(StatusCode, Json<GroupView>)> {
    let g = blocking(&svc, move |s| {
        s.mutate("create_group", |a, _| a.create_group(&input))
    })
    .await?;
    let (a, m) = svc.account_for_one();
    Ok((StatusCode::OK, Json(GroupView::new(&a, &m, &g))))
}

/// `PUT /api/groups/{id}`.
pub async fn update_group(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<GroupInput>,
) -> ApiResult<Json<GroupView>> {
    let g = blocking(&svc, move |s| {
        s.mutate("update_group", |a, _| a.update_group(&id, &input))
    })
    .await?;
    let (a, m) = svc.account_for_one();
    Ok(Json(GroupView::new(&a, &m, &g)))
}

/// `DELETE /api/groups/{id}`.
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
pub async fn get_settings(State(svc): State<AppState>) -> Json<Settings> {
    Json(svc.account().settings.clone())
}

/// `PUT /api/settings`: only the fields given change.
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
