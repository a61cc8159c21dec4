//! Records every successful change made through the API in the activity log: the caller, the
//! route's activity ([`crate::events::activity`]), the target's id (the answer's `id`, else
//! the route's last id) and its name. Request bodies are never logged (they may carry keys).
//! The record is written after the change is stored; a failed write is logged as an error and
//! does not undo the change.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use super::AppState;
use crate::auth::Principal;
use crate::events::{ActivityHint, Event, activity};
use crate::service::now_secs;

/// The largest answer whose id and name are read for the log (answers of changes are small).
const MAX_READ: usize = 4 << 20;

/// The middleware. The request and its record run in a task of their own, so a change whose
/// client went away or timed out is still recorded once it is stored.
pub async fn record(
    State(svc): State<AppState>,
    matched: Option<MatchedPath>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let Some(act) = activity(req.method().as_str(), &route) else {
        return next.run(req).await;
    };
    let ids: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match tokio::spawn(record_change(svc, route, act, ids, req, next)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            axum::response::IntoResponse::into_response(super::ApiError::internal())
        }
    }
}

async fn record_change(
    svc: AppState,
    route: String,
    act: crate::events::Activity,
    ids: Vec<(String, String)>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().as_str().to_string();
    let principal = req.extensions().get::<Principal>().cloned();
    let resp = next.run(req).await;
    if !resp.status().is_success() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let hint = parts.extensions.get::<ActivityHint>().copied();
    let bytes = match axum::body::to_bytes(body, MAX_READ).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, %route, "reading an answer for the activity log failed");
            return Response::from_parts(parts, Body::empty());
        }
    };
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let text_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let param = |name: &str| ids.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut meta = BTreeMap::new();
    if let Some(n) = text_of(&answer, "name") {
        meta.insert("name".to_string(), n);
    }
    let (mut code, mut text) = (act.code, act.text);
    if let Some(ActivityHint(h)) = hint {
        (code, text) = (h.code, h.text);
    }
    let target = match route.as_str() {
        // NetBird's token events name the token's user; the token goes into the details.
        "/api/users/{id}/tokens" | "/api/users/{id}/tokens/{tid}" => {
            let tid = answer
                .pointer("/personal_access_token/id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| param("tid"));
            if let Some(t) = tid {
                meta.insert("token_id".into(), t);
            }
            param("id").unwrap_or_default()
        }
        _ => {
            if route == "/api/users" && answer["is_service_user"] == true {
                (code, text) = ("service.user.create", "Service user created");
            }
            if route == "/api/users/{id}"
                && method == "PUT"
                && let Some(r) = text_of(&answer, "role")
            {
                meta.insert("role".into(), r);
            }
            // Where a route is nested, its parent (a resource's Network).
            if let (Some(parent), Some(_)) = (param("id"), param("rid")) {
                meta.insert("network_id".into(), parent);
            }
            // The created or changed object's id, else the route's innermost id.
            text_of(&answer, "id")
                .or_else(|| param("rid"))
                .or_else(|| param("id"))
                .unwrap_or_default()
        }
    };
    let p = principal.unwrap_or_else(super::guard::insecure_principal);
    let event = Event {
        id: 0,
        timestamp: now_secs(),
        activity_code: code.to_string(),
        activity: text.to_string(),
        initiator_id: p.user_id,
        initiator_name: p.name,
        initiator_email: p.email,
        token_id: p.token_id,
        target_id: target,
        meta,
    };
    let s = svc.clone();
    match tokio::task::spawn_blocking(move || s.record_event(event)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, route, "recording an activity failed"),
        Err(e) => tracing::error!(error = %e, route, "activity task failed"),
    }
    Response::from_parts(parts, Body::from(bytes))
}
