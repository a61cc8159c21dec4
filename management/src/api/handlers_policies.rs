//! Handlers for policies, setup keys and posture checks.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;

use super::openapi::Refusals;
use super::views::{PolicyView, PostureCheckView, SetupKeyView};
use super::{ApiResult, AppState, JsonBody, blocking};
use crate::events::{Activity, ActivityHint};
use crate::model::*;
use crate::service::now_secs;

/// `GET /api/policies`.
#[utoipa::path(get, path = "/api/policies", tag = "policies",
    responses((status = 200, body = Vec<PolicyView>), Refusals))]
pub async fn list(State(svc): State<AppState>) -> Json<Vec<PolicyView>> {
    let (a, m) = svc.account_with_members();
    Json(
        a.policies
            .values()
            .map(|p| PolicyView::new(&a, &m, p))
            .collect(),
    )
}

/// `GET /api/policies/{id}`.
#[utoipa::path(get, path = "/api/policies/{id}", tag = "policies", params(("id" = String, Path, description = "Id or name of the policy")),
    responses((status = 200, body = PolicyView), Refusals))]
pub async fn get(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PolicyView>> {
    let (a, m) = svc.account_with_members();
    let id = a.policy_id(&id)?;
    Ok(Json(PolicyView::new(&a, &m, &a.policies[&id])))
}

/// The view of a policy just changed (its groups as they are now), or of the one deleted.
async fn changed(
    svc: &AppState,
    op: &'static str,
    f: impl FnOnce(&mut Account) -> Result<Policy, ModelError> + Send + 'static,
) -> ApiResult<Json<PolicyView>> {
    let (p, (a, m)) = blocking(svc, move |s| {
        let p = s.mutate(op, |a, _| f(a))?;
        Ok((p, s.account_with_members()))
    })
    .await?;
    Ok(Json(PolicyView::new(&a, &m, &p)))
}

/// `POST /api/policies`.
#[utoipa::path(post, path = "/api/policies", tag = "policies", request_body = PolicyInput,
    responses((status = 200, body = PolicyView), Refusals))]
pub async fn create(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<PolicyInput>,
) -> ApiResult<Json<PolicyView>> {
    changed(&svc, "create_policy", move |a| a.create_policy(&input)).await
}

/// `PUT /api/policies/{id}`.
#[utoipa::path(put, path = "/api/policies/{id}", tag = "policies", params(("id" = String, Path, description = "Id or name of the policy")), request_body = PolicyInput,
    responses((status = 200, body = PolicyView), Refusals))]
pub async fn update(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<PolicyInput>,
) -> ApiResult<Json<PolicyView>> {
    changed(&svc, "update_policy", move |a| a.update_policy(&id, &input)).await
}

/// `DELETE /api/policies/{id}`.
#[utoipa::path(delete, path = "/api/policies/{id}", tag = "policies", params(("id" = String, Path, description = "Id or name of the policy")),
    responses((status = 200, description = "The policy as it was", body = PolicyView), Refusals))]
pub async fn delete(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PolicyView>> {
    changed(&svc, "delete_policy", move |a| a.delete_policy(&id)).await
}

/// `POST /api/policies/{id}/enable`.
#[utoipa::path(post, path = "/api/policies/{id}/enable", tag = "policies", params(("id" = String, Path, description = "Id or name of the policy")),
    responses((status = 200, body = PolicyView), Refusals))]
pub async fn enable(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PolicyView>> {
    changed(&svc, "enable_policy", move |a| {
        a.set_policy_enabled(&id, true)
    })
    .await
}

/// `POST /api/policies/{id}/disable`.
#[utoipa::path(post, path = "/api/policies/{id}/disable", tag = "policies", params(("id" = String, Path, description = "Id or name of the policy")),
    responses((status = 200, body = PolicyView), Refusals))]
pub async fn disable(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PolicyView>> {
    changed(&svc, "disable_policy", move |a| {
        a.set_policy_enabled(&id, false)
    })
    .await
}

/// `GET /api/setup-keys`.
#[utoipa::path(get, path = "/api/setup-keys", tag = "setup-keys",
    responses((status = 200, body = Vec<SetupKeyView>), Refusals))]
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
#[utoipa::path(get, path = "/api/setup-keys/{id}", tag = "setup-keys", params(("id" = String, Path, description = "Id or name of the setup key")),
    responses((status = 200, body = SetupKeyView), Refusals))]
pub async fn get_key(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SetupKeyView>> {
    let a = svc.account();
    let id = a.setup_key_id(&id)?;
    Ok(Json(SetupKeyView::new(&a.setup_keys[&id], now_secs())))
}

/// `POST /api/setup-keys`: the response carries the key text, once.
#[utoipa::path(post, path = "/api/setup-keys", tag = "setup-keys", request_body = SetupKeyInput,
    responses((status = 200, description = "The key, its text shown this once", body = SetupKeyView), Refusals))]
pub async fn create_key(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<SetupKeyInput>,
) -> ApiResult<(StatusCode, Json<SetupKeyView>)> {
    let (k, text) = blocking(&svc, move |s| {
        s.mutate("create_setup_key", |a, now| a.create_setup_key(&input, now))
    })
    .await?;
    Ok((
        StatusCode::OK,
        Json(SetupKeyView::created(&k, now_secs(), text)),
    ))
}

/// `PUT /api/setup-keys/{id}`: `{revoked?, auto_groups?}` (NetBird's).
#[utoipa::path(put, path = "/api/setup-keys/{id}", tag = "setup-keys", params(("id" = String, Path, description = "Id or name of the setup key")), request_body = SetupKeyUpdate,
    responses((status = 200, body = SetupKeyView), Refusals))]
pub async fn update_key(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(up): JsonBody<SetupKeyUpdate>,
) -> ApiResult<(Extension<ActivityHint>, Json<SetupKeyView>)> {
    let (k, was_revoked) = blocking(&svc, move |s| {
        s.mutate("update_setup_key", |a, now| {
            let was = a
                .setup_keys
                .get(&a.setup_key_id(&id)?)
                .is_some_and(|k| k.revoked);
            Ok((a.update_setup_key(&id, &up, now)?, was))
        })
    })
    .await?;
    let act = if k.revoked && !was_revoked {
        Activity {
            code: "setupkey.revoke",
            text: "Setup key revoked",
        }
    } else {
        Activity {
            code: "setupkey.update",
            text: "Setup key updated",
        }
    };
    Ok((
        Extension(ActivityHint(act)),
        Json(SetupKeyView::new(&k, now_secs())),
    ))
}

/// `POST /api/setup-keys/{id}/revoke`.
#[utoipa::path(post, path = "/api/setup-keys/{id}/revoke", tag = "setup-keys", params(("id" = String, Path, description = "Id or name of the setup key")),
    responses((status = 200, body = SetupKeyView), Refusals))]
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
#[utoipa::path(delete, path = "/api/setup-keys/{id}", tag = "setup-keys", params(("id" = String, Path, description = "Id or name of the setup key")),
    responses((status = 200, description = "The key as it was", body = SetupKeyView), Refusals))]
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
#[utoipa::path(get, path = "/api/posture-checks", tag = "posture-checks",
    responses((status = 200, body = Vec<PostureCheckView>), Refusals))]
pub async fn list_posture(State(svc): State<AppState>) -> Json<Vec<PostureCheckView>> {
    Json(
        svc.account()
            .posture_checks
            .values()
            .map(PostureCheckView::from)
            .collect(),
    )
}

/// `GET /api/posture-checks/{id}`.
#[utoipa::path(get, path = "/api/posture-checks/{id}", tag = "posture-checks", params(("id" = String, Path, description = "Id or name of the posture check")),
    responses((status = 200, body = PostureCheckView), Refusals))]
pub async fn get_posture(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PostureCheckView>> {
    let a = svc.account();
    let id = a.posture_check_id(&id)?;
    Ok(Json(PostureCheckView::from(&a.posture_checks[&id])))
}

/// `POST /api/posture-checks`.
#[utoipa::path(post, path = "/api/posture-checks", tag = "posture-checks", request_body = PostureCheckInput,
    responses((status = 200, body = PostureCheckView), Refusals))]
pub async fn create_posture(
    State(svc): State<AppState>,
    JsonBody(input): JsonBody<PostureCheckInput>,
) -> ApiResult<(StatusCode, Json<PostureCheckView>)> {
    let p = blocking(&svc, move |s| {
        s.mutate("create_posture_check", |a, _| {
            a.create_posture_check(&input)
        })
    })
    .await?;
    Ok((StatusCode::OK, Json(PostureCheckView::from(&p))))
}

/// `PUT /api/posture-checks/{id}`.
#[utoipa::path(put, path = "/api/posture-checks/{id}", tag = "posture-checks", params(("id" = String, Path, description = "Id or name of the posture check")), request_body = PostureCheckInput,
    responses((status = 200, body = PostureCheckView), Refusals))]
pub async fn update_posture(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<PostureCheckInput>,
) -> ApiResult<Json<PostureCheckView>> {
    let p = blocking(&svc, move |s| {
        s.mutate("update_posture_check", |a, _| {
            a.update_posture_check(&id, &input)
        })
    })
    .await?;
    Ok(Json(PostureCheckView::from(&p)))
}

/// `DELETE /api/posture-checks/{id}`.
#[utoipa::path(delete, path = "/api/posture-checks/{id}", tag = "posture-checks", params(("id" = String, Path, description = "Id or name of the posture check")),
    responses((status = 200, description = "The posture check as it was", body = PostureCheckView), Refusals))]
pub async fn delete_posture(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PostureCheckView>> {
    let p = blocking(&svc, move |s| {
        s.mutate("delete_posture_check", |a, _| a.delete_posture_check(&id))
    })
    .await?;
    Ok(Json(PostureCheckView::from(&p)))
}
