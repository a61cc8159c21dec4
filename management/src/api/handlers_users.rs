//! Users, their personal access tokens and the activity log, shaped as NetBird's API
//! (`/api/users`, `/api/users/{id}/tokens`, `/api/events/audit`).

use axum::Json;
use axum::extract::{Extension, Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::openapi::Refusals;
use super::views::rfc3339;
use super::{ApiResult, AppState, JsonBody, QueryParams, blocking};
use crate::auth::{AccessToken, Principal, Role, User, UserStatus};
use crate::events::{Activity, ActivityHint, Event, EventQuery};
use crate::service::{UserInput, UserUpdate};

/// A user as NetBird's API shows it.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    id: String,
    email: String,
    name: String,
    role: &'static str,
    status: &'static str,
    auto_groups: Vec<String>,
    is_blocked: bool,
    pending_approval: bool,
    last_login: String,
    is_current: bool,
    is_service_user: bool,
    issued: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    permissions: Option<Value>,
}

impl UserView {
    fn new(u: &User, me: &Principal) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role.as_str(),
            status: match u.status {
                UserStatus::Active => "active",
                UserStatus::Blocked => "blocked",
            },
            auto_groups: u.auto_groups.clone(),
            is_blocked: u.status == UserStatus::Blocked,
            pending_approval: false,
            last_login: rfc3339(u.last_login.unwrap_or(0)),
            is_current: u.id == me.user_id,
            is_service_user: u.is_service_user,
            issued: u.issued.clone(),
            permissions: None,
        }
    }
}

/// What a role may do, per area, in NetBird's `permissions` shape.
fn permissions(role: Role) -> Value {
    let ops = |read: bool, write: bool| json!({ "read": read, "create": write, "update": write, "delete": write });
    let net = ops(role.reads_all(), role.writes_network());
    let users = ops(role.reads_all(), role.manages_users());
    json!({
        "is_restricted": role == Role::User,
        "modules": {
            "peers": net, "groups": net, "networks": net, "policies": net, "routes": net,
            "dns": net, "setup_keys": net, "nameservers": net,
            "users": users, "accounts": users,
            "events": ops(role.reads_all(), false),
        }
    })
}

/// A token without its secret.
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    id: String,
    name: String,
    expiration_date: String,
    created_by: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used: Option<String>,
}

impl From<&AccessToken> for TokenView {
    fn from(t: &AccessToken) -> Self {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            expiration_date: rfc3339(t.expires_at),
            created_by: t.created_by.clone(),
            created_at: rfc3339(t.created_at),
            last_used: t.last_used.map(rfc3339),
        }
    }
}

/// `GET /api/users` query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Only service users (`true`) or only the others (`false`).
    service_user: Option<bool>,
}

/// `GET /api/users`.
#[utoipa::path(get, path = "/api/users", tag = "users", params(UserFilter),
    responses((status = 200, body = Vec<UserView>), Refusals))]
pub async fn list(
    State(svc): State<AppState>,
    Extension(me): Extension<Principal>,
    QueryParams(f): QueryParams<UserFilter>,
) -> Json<Vec<UserView>> {
    Json(
        svc.users()
            .iter()
            .filter(|u| f.service_user.is_none_or(|s| u.is_service_user == s))
            .map(|u| UserView::new(u, &me))
            .collect(),
    )
}

/// `GET /api/users/current`: the caller, with what its role may do.
#[utoipa::path(get, path = "/api/users/current", tag = "users",
    responses((status = 200, description = "The caller, with what its role may do (`permissions`)", body = UserView), Refusals))]
pub async fn current(
    State(svc): State<AppState>,
    Extension(me): Extension<Principal>,
) -> Json<UserView> {
    let mut v = match svc.user(&me.user_id) {
        Ok(u) => UserView::new(&u, &me),
        // The insecure development mode's caller is nobody in the directory.
        Err(_) => UserView {
            id: me.user_id.clone(),
            email: me.email.clone(),
            name: me.name.clone(),
            role: me.role.as_str(),
            status: "active",
            auto_groups: vec![],
            is_blocked: false,
            pending_approval: false,
            last_login: rfc3339(0),
            is_current: true,
            is_service_user: true,
            issued: "insecure-no-auth".into(),
            permissions: None,
        },
    };
    v.permissions = Some(permissions(me.role));
    Json(v)
}

/// `GET /api/users/{id}` (NetBird has no such route; its Python client calls it).
#[utoipa::path(get, path = "/api/users/{id}", tag = "users", params(("id" = String, Path, description = "Id of the user")),
    responses((status = 200, body = UserView), Refusals))]
pub async fn get(
    State(svc): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(UserView::new(&svc.user(&id)?, &me)))
}

/// `POST /api/users` body (NetBird's `UserCreateRequest`; `role` defaults to `user`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    auto_groups: Option<Vec<String>>,
    #[serde(default)]
    is_service_user: bool,
    /// Accepted (the Python client may send it): creates the user blocked.
    #[serde(default)]
    is_blocked: bool,
}

/// `POST /api/users`.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUser,
    responses((status = 200, body = UserView), Refusals))]
pub async fn create(
    State(svc): State<AppState>,
    Extension(me): Extension<Principal>,
    JsonBody(b): JsonBody<CreateUser>,
) -> ApiResult<Json<UserView>> {
    let input = UserInput {
        email: b.email,
        name: b.name,
        role: b.role.unwrap_or_else(|| Role::User.as_str().into()),
        auto_groups: b.auto_groups.unwrap_or_default(),
        is_service_user: b.is_service_user,
        is_blocked: b.is_blocked,
    };
    let by = me.clone();
    let u = blocking(&svc, move |s| s.create_user(&by, &input)).await?;
    Ok(Json(UserView::new(&u, &me)))
}

/// `PUT /api/users/{id}` body (NetBird's `UserRequest`; a missing field keeps its value).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    auto_groups: Option<Vec<String>>,
    #[serde(default)]
    is_blocked: Option<bool>,
    /// Accepted and ignored when unchanged (NetBird does not rename users).
    #[serde(default)]
    name: Option<String>,
}

/// `PUT /api/users/{id}`.
#[utoipa::path(put, path = "/api/users/{id}", tag = "users", params(("id" = String, Path, description = "Id of the user")), request_body = UpdateUser,
    responses((status = 200, body = UserView), Refusals))]
pub async fn update(
    State(svc): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<UpdateUser>,
) -> ApiResult<(Extension<ActivityHint>, Json<UserView>)> {
    let by = me.clone();
    let before = svc.user(&id).ok();
    let u = blocking(&svc, move |s| {
        let cur = s.user(&id)?;
        if b.name.as_ref().is_some_and(|n| *n != cur.name) {
            return Err(crate::model::invalid("name: users cannot be renamed").into());
        }
        let up = UserUpdate {
            role: b.role.unwrap_or_else(|| cur.role.as_str().into()),
            auto_groups: b.auto_groups.unwrap_or(cur.auto_groups),
            is_blocked: b.is_blocked.unwrap_or(cur.status == UserStatus::Blocked),
        };
        s.update_user(&by, &id, &up)
    })
    .await?;
    // NetBird's codes for what changed: blocking, unblocking, else the role.
    let was_blocked = before.is_some_and(|b| b.status == UserStatus::Blocked);
    let now_blocked = u.status == UserStatus::Blocked;
    let act = match (was_blocked, now_blocked) {
        (false, true) => Activity {
            code: "user.block",
            text: "User blocked",
        },
        (true, false) => Activity {
            code: "user.unblock",
            text: "User unblocked",
        },
        _ => Activity {
            code: "user.role.update",
            text: "User role updated",
        },
    };
    Ok((Extension(ActivityHint(act)), Json(UserView::new(&u, &me))))
}

/// `DELETE /api/users/{id}`: the user and its tokens.
#[utoipa::path(delete, path = "/api/users/{id}", tag = "users", params(("id" = String, Path, description = "Id of the user")),
    responses((status = 200, body = Empty), Refusals))]
pub async fn delete(
    State(svc): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Empty>> {
    blocking(&svc, move |s| s.delete_user(&me, &id)).await?;
    Ok(Json(Empty {}))
}

/// `GET /api/users/{id}/tokens`.
#[utoipa::path(get, path = "/api/users/{id}/tokens", tag = "tokens", params(("id" = String, Path, description = "Id of the user")),
    responses((status = 200, body = Vec<TokenView>), Refusals))]
pub async fn list_tokens(
    State(svc): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<TokenView>>> {
    Ok(Json(svc.tokens(&id)?.iter().map(TokenView::from).collect()))
}

/// `GET /api/users/{id}/tokens/{tid}`.
#[utoipa::path(get, path = "/api/users/{id}/tokens/{tid}", tag = "tokens", params(("id" = String, Path, description = "Id of the user"), ("tid" = String, Path, description = "Id of the token")),
    responses((status = 200, body = TokenView), Refusals))]
pub async fn get_token(
    State(svc): State<AppState>,
    Path((id, tid)): Path<(String, String)>,
) -> ApiResult<Json<TokenView>> {
    Ok(Json(TokenView::from(&svc.token(&id, &tid)?)))
}

/// `POST /api/users/{id}/tokens` body: a name and a lifetime in days (1..=365).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    name: String,
    expires_in: u64,
}

/// A new token: its text, shown this once, and the token.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token (`nbp_...`); only its hash is kept.
    plain_token: String,
    /// The token without its secret.
    personal_access_token: TokenView,
}

/// NetBird's answer to a deletion: an empty object.
#[derive(Serialize, ToSchema)]
pub struct Empty {}

/// `POST /api/users/{id}/tokens`: the token in clear text, this once.
#[utoipa::path(post, path = "/api/users/{id}/tokens", tag = "tokens", params(("id" = String, Path, description = "Id of the user")), request_body = CreateToken,
    responses((status = 200, description = "The token in clear text, this once", body = CreatedToken), Refusals))]
pub async fn create_token(
    State(svc): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<CreateToken>,
) -> ApiResult<Json<CreatedToken>> {
    let (t, clear) = blocking(&svc, move |s| {
        s.create_token_as(Some(&me), &me.user_id, &id, &b.name, b.expires_in)
    })
    .await?;
    Ok(Json(CreatedToken {
        plain_token: clear,
        personal_access_token: TokenView::from(&t),
    }))
}

/// `DELETE /api/users/{id}/tokens/{tid}`: refused from the next request on.
#[utoipa::path(delete, path = "/api/users/{id}/tokens/{tid}", tag = "tokens", params(("id" = String, Path, description = "Id of the user"), ("tid" = String, Path, description = "Id of the token")),
    responses((status = 200, body = Empty), Refusals))]
pub async fn delete_token(
    State(svc): State<AppState>,
    Extension(me): Extension<Principal>,
    Path((id, tid)): Path<(String, String)>,
) -> ApiResult<Json<Empty>> {
    blocking(&svc, move |s| s.delete_token(&me, &id, &tid)).await?;
    Ok(Json(Empty {}))
}

/// An event as NetBird's API shows it (`id` a decimal string, RFC 3339 time), plus
/// `token_id`.
#[derive(Serialize, ToSchema)]
pub struct EventView {
    id: String,
    timestamp: String,
    activity: String,
    activity_code: String,
    initiator_id: String,
    initiator_name: String,
    initiator_email: String,
    target_id: String,
    meta: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<String>,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        EventView {
            id: e.id.to_string(),
            timestamp: rfc3339(e.timestamp),
            activity: e.activity,
            activity_code: e.activity_code,
            initiator_id: e.initiator_id,
            initiator_name: e.initiator_name,
            initiator_email: e.initiator_email,
            target_id: e.target_id,
            meta: e.meta,
            token_id: e.token_id,
        }
    }
}

/// `GET /api/events/audit` (and `/api/events`): newest first; filters `since`, `until`
/// (Unix seconds), `activity_code`, `initiator_id`, `target_id`, `limit` (swiftgate's; NetBird
/// has none).
#[utoipa::path(get, path = "/api/events/audit", tag = "events", params(EventQuery),
    responses((status = 200, body = Vec<EventView>), Refusals))]
pub async fn events(
    State(svc): State<AppState>,
    QueryParams(q): QueryParams<EventQuery>,
) -> ApiResult<Json<Vec<EventView>>> {
    let list = blocking(&svc, move |s| s.events(&q)).await?;
    Ok(Json(list.into_iter().map(EventView::from).collect()))
}

/// `GET /api/events`: the same as [`events`] (NetBird's older path).
#[utoipa::path(get, path = "/api/events", tag = "events", params(EventQuery),
    responses((status = 200, body = Vec<EventView>), Refusals))]
pub async fn events_legacy(
    state: State<AppState>,
    query: QueryParams<EventQuery>,
) -> ApiResult<Json<Vec<EventView>>> {
    events(state, query).await
}
