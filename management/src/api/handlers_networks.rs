//! Handlers for Networks and their resources and routers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::openapi::Refusals;
use super::views::{NetworkView, ResourceView, RouterView};
use super::{ApiResult, AppState, JsonBody, blocking};
use crate::model::*;

/// `GET /api/networks`.
#[utoipa::path(get, path = "/api/networks", tag = "networks",
    responses((status = 200, body = Vec<NetworkView>), Refusals))]
pub async fn list(State(svc): State<AppState>) -> Json<Vec<NetworkView>> {
    let (a, m) = svc.account_with_members();
    Json(
        a.networks
            .values()
            .map(|n| NetworkView::new(&a, &m, n))
            .collect(),
    )
}

/// `GET /api/networks/{id}`.
#[utoipa::path(get, path = "/api/networks/{id}", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network")),
    responses((status = 200, body = NetworkView), Refusals))]
pub async fn get(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<NetworkView>> {
    let (a, m) = svc.account_with_members();
    let id = a.network_id(&id)?;
    Ok(Json(NetworkView::new(&a, &m, &a.networks[&id])))
}

/// `POST /api/networks`.
#[utoipa::path(post, path = "/api/networks", tag = "networks", request_body = NetworkInput,
    responses((status = 200, body = NetworkView), Refusals))]
pub async fn create(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<NetworkInput>,
) -> ApiResult<(StatusCode, Json<NetworkView>)> {
    let n = blocking(&svc, move |s| {
        s.mutate("create_network", |a, _| a.create_network(&input))
    })
    .await?;
    let (a, m) = svc.account_with_members();
    Ok((StatusCode::OK, Json(NetworkView::new(&a, &m, &n))))
}

/// `PUT /api/networks/{id}`.
#[utoipa::path(put, path = "/api/networks/{id}", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network")), request_body = NetworkInput,
    responses((status = 200, body = NetworkView), Refusals))]
pub async fn update(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<NetworkInput>,
) -> ApiResult<Json<NetworkView>> {
    let n = blocking(&svc, move |s| {
        s.mutate("update_network", |a, _| a.update_network(&id, &input))
    })
    .await?;
    let (a, m) = svc.account_with_members();
    Ok(Json(NetworkView::new(&a, &m, &n)))
}

/// `DELETE /api/networks/{id}`: with its resources and routers.
#[utoipa::path(delete, path = "/api/networks/{id}", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network")), 
    responses((status = 200, description = "The Network as it was (its resources and routers are gone too)", body = Network), Refusals))]
pub async fn delete(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Network>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("delete_network", |a, _| a.delete_network(&id))
        })
        .await?,
    ))
}

/// The resource `rid` if it is in Network `net` (404 otherwise).
fn resource_in(a: &Account, net: &str, rid: &str) -> Result<String, ModelError> {
    let net_id = a.network_id(net)?;
    let id = a.resource_id(rid)?;
    if a.resources[&id].network_id != net_id {
        return Err(ModelError::NotFound {
            kind: "resource",
            key: format!("{rid} in network {net}"),
        });
    }
    Ok(id)
}

/// The router `rid` if it is in Network `net` (404 otherwise).
fn router_in(a: &Account, net: &str, rid: &str) -> Result<String, ModelError> {
    let net_id = a.network_id(net)?;
    let id = a.router_id(rid)?;
    if a.routers[&id].network_id != net_id {
        return Err(ModelError::NotFound {
            kind: "router",
            key: format!("{rid} in network {net}"),
        });
    }
    Ok(id)
}

/// `GET /api/resources`: every resource of every Network.
#[utoipa::path(get, path = "/api/resources", tag = "networks",
    responses((status = 200, body = Vec<ResourceView>), Refusals))]
pub async fn all_resources(State(svc): State<AppState>) -> Json<Vec<ResourceView>> {
    let (a, m) = svc.account_with_members();
    Json(
        a.resources
            .values()
            .map(|r| ResourceView::new(&a, &m, r))
            .collect(),
    )
}

/// `GET /api/networks/{id}/resources`.
#[utoipa::path(get, path = "/api/networks/{id}/resources", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network")),
    responses((status = 200, body = Vec<ResourceView>), Refusals))]
pub async fn list_resources(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ResourceView>>> {
    let (a, m) = svc.account_with_members();
    let id = a.network_id(&id)?;
    Ok(Json(
        a.resources
            .values()
            .filter(|r| r.network_id == id)
            .map(|r| ResourceView::new(&a, &m, r))
            .collect(),
    ))
}

/// `GET /api/networks/{id}/resources/{rid}`.
#[utoipa::path(get, path = "/api/networks/{id}/resources/{rid}", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network"), ("rid" = String, Path, description = "Id or name of the resource")),
    responses((status = 200, body = ResourceView), Refusals))]
pub async fn get_resource(
    State(svc): State<AppState>,
    Path((net, rid)): Path<(String, String)>,
) -> ApiResult<Json<ResourceView>> {
    let (a, m) = svc.account_with_members();
    let id = resource_in(&a, &net, &rid)?;
    Ok(Json(ResourceView::new(&a, &m, &a.resources[&id])))
}

/// `POST /api/networks/{id}/resources`.
#[utoipa::path(post, path = "/api/networks/{id}/resources", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network")), request_body = ResourceInput,
    responses((status = 200, body = ResourceView), Refusals))]
pub async fn create_resource(
    State(svc): State<AppState>,
    Path(net): Path<String>,
    JsonBody(input): JsonBody<ResourceInput>,
) -> ApiResult<(StatusCode, Json<ResourceView>)> {
    let r = blocking(&svc, move |s| {
        s.mutate("create_resource", |a, _| a.create_resource(&net, &input))
    })
    .await?;
    let (a, m) = svc.account_with_members();
    Ok((StatusCode::OK, Json(ResourceView::new(&a, &m, &r))))
}

/// `PUT /api/networks/{id}/resources/{rid}`.
#[utoipa::path(put, path = "/api/networks/{id}/resources/{rid}", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network"), ("rid" = String, Path, description = "Id or name of the resource")), request_body = ResourceInput,
    responses((status = 200, body = ResourceView), Refusals))]
pub async fn update_resource(
    State(svc): State<AppState>,
    Path((net, rid)): Path<(String, String)>,
    JsonBody(input): JsonBody<ResourceInput>,
) -> ApiResult<Json<ResourceView>> {
    let r = blocking(&svc, move |s| {
        s.mutate("update_resource", |a, _| {
            let id = resource_in(a, &net, &rid)?;
            a.update_resource(&id, &input)
        })
    })
    .await?;
    let (a, m) = svc.account_with_members();
    Ok(Json(ResourceView::new(&a, &m, &r)))
}

/// `DELETE /api/networks/{id}/resources/{rid}`.
#[utoipa::path(delete, path = "/api/networks/{id}/resources/{rid}", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network"), ("rid" = String, Path, description = "Id or name of the resource")),
    responses((status = 200, description = "The resource as it was", body = Resource), Refusals))]
pub async fn delete_resource(
    State(svc): State<AppState>,
    Path((net, rid)): Path<(String, String)>,
) -> ApiResult<Json<Resource>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("delete_resource", |a, _| {
                let id = resource_in(a, &net, &rid)?;
                a.delete_resource(&id)
            })
        })
        .await?,
    ))
}

/// `GET /api/networks/routers`: every routing peer of every Network.
#[utoipa::path(get, path = "/api/networks/routers", tag = "networks",
    responses((status = 200, body = Vec<RouterView>), Refusals))]
pub async fn all_routers(State(svc): State<AppState>) -> Json<Vec<RouterView>> {
    let a = svc.account();
    Json(a.routers.values().map(|r| RouterView::new(&a, r)).collect())
}

/// `GET /api/networks/{id}/routers`.
#[utoipa::path(get, path = "/api/networks/{id}/routers", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network")),
    responses((status = 200, body = Vec<RouterView>), Refusals))]
pub async fn list_routers(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<RouterView>>> {
    let a = svc.account();
    let id = a.network_id(&id)?;
    Ok(Json(
        a.routers
            .values()
            .filter(|r| r.network_id == id)
            .map(|r| RouterView::new(&a, r))
            .collect(),
    ))
}

/// `GET /api/networks/{id}/routers/{rid}`.
#[utoipa::path(get, path = "/api/networks/{id}/routers/{rid}", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network"), ("rid" = String, Path, description = "Id of the router")),
    responses((status = 200, body = RouterView), Refusals))]
pub async fn get_router(
    State(svc): State<AppState>,
    Path((net, rid)): Path<(String, String)>,
) -> ApiResult<Json<RouterView>> {
    let a = svc.account();
    let id = router_in(&a, &net, &rid)?;
    Ok(Json(RouterView::new(&a, &a.routers[&id])))
}

/// `POST /api/networks/{id}/routers`.
#[utoipa::path(post, path = "/api/networks/{id}/routers", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network")), request_body = RouterInput,
    responses((status = 200, body = RouterView), Refusals))]
pub async fn create_router(
    State(svc): State<AppState>,
    Path(net): Path<String>,
    JsonBody(input): JsonBody<RouterInput>,
) -> ApiResult<(StatusCode, Json<RouterView>)> {
    let r = blocking(&svc, move |s| {
        s.mutate("create_router", |a, _| a.create_router(&net, &input))
    })
    .await?;
    let a = svc.account();
    Ok((StatusCode::OK, Json(RouterView::new(&a, &r))))
}

/// `PUT /api/networks/{id}/routers/{rid}`.
#[utoipa::path(put, path = "/api/networks/{id}/routers/{rid}", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network"), ("rid" = String, Path, description = "Id of the router")), request_body = RouterInput,
    responses((status = 200, body = RouterView), Refusals))]
pub async fn update_router(
    State(svc): State<AppState>,
    Path((net, rid)): Path<(String, String)>,
    JsonBody(input): JsonBody<RouterInput>,
) -> ApiResult<Json<RouterView>> {
    let r = blocking(&svc, move |s| {
        s.mutate("update_router", |a, _| {
            let id = router_in(a, &net, &rid)?;
            a.update_router(&id, &input)
        })
    })
    .await?;
    let a = svc.account();
    Ok(Json(RouterView::new(&a, &r)))
}

/// `DELETE /api/networks/{id}/routers/{rid}`.
#[utoipa::path(delete, path = "/api/networks/{id}/routers/{rid}", tag = "networks", params(("id" = String, Path, description = "Id or name of the Network"), ("rid" = String, Path, description = "Id of the router")),
    responses((status = 200, description = "The router as it was", body = Router), Refusals))]
pub async fn delete_router(
    State(svc): State<AppState>,
    Path((net, rid)): Path<(String, String)>,
) -> ApiResult<Json<Router>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("delete_router", |a, _| {
                let id = router_in(a, &net, &rid)?;
                a.delete_router(&id)
            })
        })
        .await?,
    ))
}
