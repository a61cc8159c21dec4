//! Handlers for policies, setup keys and posture checks.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::views::{CreatedSetupKey, SetupKeyView};
use super::{ApiResult, AppState, JsonBody, blocking};
use crate::model::*;
use crate::service::now_secs;

/// `GET /api/policies`.
pub async fn list(State(svc): State<AppState>) -> Json<Vec<Policy>> {
    Json(svc.account().policies.values().cloned().collect())
}

/// `GET /api/policies/{id}`.
pub async fn get(State(svc): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Policy>> {
    let a = svc.account();
    let id = a.policy_id(&id)?;
    Ok(Json(a.policies[&id].clone()))
}

/// `POST /api/policies`.
pub async fn create(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<PolicyInput>,
) -> ApiResult<(StatusCode, Json<Policy>)> {
    let p = blocking(&svc, move |s| {
        s.mutate("create_policy", |a, _| a.create_policy(&input))
    })
    .await?;
    Ok((StatusCode::OK, Json(p)))
}

/// `PUT /api/policies/{id}`.
pub async fn update(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<PolicyInput>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("update_policy", |a, _| a.update_policy(&id, &input))
        })
        .await?,
    ))
}

/// `DELETE /api/policies/{id}`.
pub async fn delete(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("delete_policy", |a, _| a.delete_policy(&id))
        })
        .await?,
    ))
}

/// `POST /api/policies/{id}/enable`.
pub async fn enable(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("enable_policy", |a, _| a.set_policy_enabled(&id, true))
        })
        .await?,
    ))
}

/// `POST /api/policies/{id}/disable`.
pub async fn disable(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("disable_policy", |a, _| a.set_policy_enabled(&id, false))
        })
        .await?,
    ))
}

/// `GET /api/setup-keys`.
pub async fn list_keys(State(svc): State<AppState>) -> Json<Vec<SetupKeyView>> {
    let now = now_secs();
    Json(
        svc.account()
            .setup_keys
            .values()
            .map(|k| SetupKeyView::new(k, now))
            .collect(),
    )
}

/// `GET /api/setup-keys/{id}`.
pub async fn get_key(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SetupKeyView>> {
    let a = svc.account();
    let id = a.setup_key_id(&id)?;
    Ok(Json(SetupKeyView::new(&a.setup_keys[&id], now_secs())))
}

/// `POST /api/setup-keys`: the response carries the key text, once.
pub async fn create_key(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<SetupKeyInput>,
) -> ApiResult<(StatusCode, Json<CreatedSetupKey>)> {
    let (k, text) = blocking(&svc, move |s| {
        s.mutate("create_setup_key", |a, now| a.create_setup_key(&input, now))
    })
    .await?;
    Ok((
        StatusCode::OK,
        Json(CreatedSetupKey {
            view: SetupKeyView::new(&k, now_secs()),
            key: text,
        }),
    ))
}

/// `POST /api/setup-keys/{id}/revoke`.
pub async fn revoke_key(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SetupKeyView>> {
    let k = blocking(&svc, move |s| {
        s.mutate("revoke_setup_key", |a, _| a.revoke_setup_key(&id))
    })
    .await?;
    Ok(Json(SetupKeyView::new(&k, now_secs())))
}

/// `DELETE /api/setup-keys/{id}`.
pub async fn delete_key(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SetupKeyView>> {
    let k = blocking(&svc, move |s| {
        s.mutate("delete_setup_key", |a, _| a.delete_setup_key(&id))
    })
    .await?;
    Ok(Json(SetupKeyView::new(&k, now_secs())))
}

/// `GET /api/posture-checks`.
pub async fn list_posture(State(svc): State<AppState>) -> Json<Vec<PostureCheck>> {
    Json(svc.account().posture_checks.values().cloned().collect())
}

/// `GET /api/posture-checks/{id}`.
pub async fn get_posture(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PostureCheck>> {
    let a = svc.account();
    let id = a.posture_check_id(&id)?;
    Ok(Json(a.posture_checks[&id].clone()))
}

/// `POST /api/posture-checks`.
pub async fn create_posture(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<PostureCheckInput>,
) -> ApiResult<(StatusCode, Json<PostureCheck>)> {
    let p = blocking(&svc, move |s| {
        s.mutate("create_posture_check", |a, _| {
            a.create_posture_check(&input)
        })
    })
    .await?;
    Ok((StatusCode::OK, Json(p)))
}

/// `PUT /api/posture-checks/{id}`.
pub async fn update_posture(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<PostureCheckInput>,
) -> ApiResult<Json<PostureCheck>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("update_posture_check", |a, _| {
                a.update_posture_check(&id, &input)
            })
        })
        .await?,
    ))
}

/// `DELETE /api/posture-checks/{id}`.
pub async fn delete_posture(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PostureCheck>> {
    Ok(Json(
        blocking(&svc, move |s| {
            s.mutate("delete_posture_check", |a, _| a.delete_posture_check(&id))
        })
        .await?,
    ))
}
