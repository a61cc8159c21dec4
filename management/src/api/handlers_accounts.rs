//! NetBird's account endpoints over the account's settings: `GET /api/accounts` (one account)
//! and `PUT /api/accounts/{id}`. NetBird's settings that swiftgate has are mapped onto its own
//! (`dns_domain`, `network_range`, `network_range_v6`, `ipv6_enabled_groups`,
//! `extra.peer_approval_enabled`); the ones it does not have are shown switched off and
//! accepted only switched off, so that a setting asked for is never silently dropped.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::views::rfc3339;
use super::{ApiError, ApiResult, AppState, JsonBody, blocking};
use crate::model::{Account, SettingsInput};

/// A setting's name and the value that means "off".
type Off = (&'static str, fn() -> Value);

/// NetBird settings swiftgate does not have, with the value that means "off"; any other
/// value is refused.
const OFF: &[Off] = &[
    ("peer_login_expiration_enabled", || json!(false)),
    ("peer_inactivity_expiration_enabled", || json!(false)),
    ("regular_users_view_blocked", || json!(true)),
    ("peer_expose_enabled", || json!(false)),
    ("peer_expose_groups", || json!([])),
    ("groups_propagation_enabled", || json!(false)),
    ("jwt_groups_enabled", || json!(false)),
    ("jwt_groups_claim_name", || json!("")),
    ("jwt_allow_groups", || json!([])),
    ("routing_peer_dns_resolution_enabled", || json!(false)),
    ("lazy_connection_enabled", || json!(false)),
];

/// NetBird settings whose value only matters when a setting above is on; shown and accepted
/// as given (they change nothing here).
const INERT: &[(&str, u64)] = &[
    ("peer_login_expiration", 86_400),
    ("peer_inactivity_expiration", 600),
];

/// `extra` settings swiftgate does not have ("off" is false).
const EXTRA_OFF: &[&str] = &[
    "user_approval_required",
    "network_traffic_logs_enabled",
    "network_traffic_packet_counter_enabled",
];

/// The account as NetBird's API shows it.
fn account_view(a: &Account) -> Value {
    let s = &a.settings;
    let mut settings = Map::new();
    for (k, off) in OFF {
        settings.insert((*k).into(), off());
    }
    for (k, v) in INERT {
        settings.insert((*k).into(), json!(v));
    }
    settings.insert("dns_domain".into(), json!(s.dns_domain));
    settings.insert("network_range".into(), json!(s.overlay_range));
    settings.insert("network_range_v6".into(), json!(s.overlay_range_v6));
    settings.insert("ipv6_enabled_groups".into(), json!(s.ipv6_enabled_groups));
    let mut extra = Map::new();
    extra.insert(
        "peer_approval_enabled".into(),
        json!(s.peer_approval_required),
    );
    for k in EXTRA_OFF {
        extra.insert((*k).into(), json!(false));
    }
    extra.insert("network_traffic_logs_groups".into(), json!([]));
    settings.insert("extra".into(), Value::Object(extra));
    json!({
        "id": a.id,
        "settings": settings,
        "domain": s.dns_domain,
        "domain_category": "private",
        "created_at": rfc3339(0),
        "created_by": "",
        "onboarding": { "signup_form_pending": false, "onboarding_flow_pending": false },
    })
}

/// `GET /api/accounts`: the one account.
pub async fn list(State(svc): State<AppState>) -> Json<Vec<Value>> {
    Json(vec![account_view(&svc.account())])
}

fn bad(msg: String) -> ApiError {
    ApiError::new(axum::http::StatusCode::BAD_REQUEST, msg)
}

/// The settings change a NetBird `AccountSettings` object asks for.
fn settings_input(settings: &Map<String, Value>) -> Result<SettingsInput, ApiError> {
    let mut input = SettingsInput::default();
    let text = |k: &str, v: &Value| -> Result<String, ApiError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(format!("settings.{k}: expected a string, got {v}")))
    };
    for (k, v) in settings {
        match k.as_str() {
            "dns_domain" => input.dns_domain = Some(text(k, v)?),
            "network_range" => input.overlay_range = Some(text(k, v)?),
            "network_range_v6" => input.overlay_range_v6 = Some(text(k, v)?),
            "ipv6_enabled_groups" => {
                input.ipv6_enabled_groups = Some(
                    serde_json::from_value(v.clone())
                        .map_err(|e| bad(format!("settings.ipv6_enabled_groups: {e}")))?,
                )
            }
            "extra" | "extra_settings" => {
                let Some(extra) = v.as_object() else {
                    return Err(bad(format!("settings.{k}: expected an object")));
                };
                for (ek, ev) in extra {
                    match ek.as_str() {
                        "peer_approval_enabled" => {
                            input.peer_approval_required = Some(ev.as_bool().ok_or_else(|| {
                                bad(format!("settings.{k}.{ek}: expected true or false"))
                            })?)
                        }
                        "network_traffic_logs_groups" if ev == &json!([]) || ev.is_null() => {}
                        e if EXTRA_OFF.contains(&e) && ev == &json!(false) => {}
                        e if EXTRA_OFF.contains(&e) || e == "network_traffic_logs_groups" => {
                            return Err(bad(format!(
                                "settings.{k}.{e}: not supported by this server; only its \
                                 default (off) is accepted"
                            )));
                        }
                        e => return Err(bad(format!("settings.{k}.{e}: unknown setting"))),
                    }
                }
            }
            key => {
                if let Some((_, off)) = OFF.iter().find(|(n, _)| *n == key) {
                    if *v != off() {
                        return Err(bad(format!(
                            "settings.{key}: not supported by this server; only {} is accepted",
                            off()
                        )));
                    }
                } else if !INERT.iter().any(|(n, _)| *n == key) {
                    return Err(bad(format!("settings.{key}: unknown setting")));
                }
            }
        }
    }
    Ok(input)
}

/// `PUT /api/accounts/{id}`: `{settings, onboarding?}`; only the settings given change.
pub async fn update(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    if id != svc.account().id {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("account {id:?} not found"),
        ));
    }
    let Some(obj) = body.as_object() else {
        return Err(bad("expected an object with `settings`".into()));
    };
    if let Some(k) = obj.keys().find(|k| *k != "settings" && *k != "onboarding") {
        return Err(bad(format!(
            "{k}: unknown field (expected settings, onboarding)"
        )));
    }
    let Some(settings) = obj.get("settings").and_then(Value::as_object) else {
        return Err(bad("settings: required, an object".into()));
    };
    let input = settings_input(settings)?;
    let a = blocking(&svc, move |s| {
        s.mutate("update_settings", |a, _| a.update_settings(&input))?;
        Ok(s.account())
    })
    .await?;
    Ok(Json(account_view(&a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_asked_for_are_applied_or_refused_never_dropped() {
        let ok = json!({"dns_domain": "corp.internal", "extra": {"peer_approval_enabled": true},
            "peer_login_expiration_enabled": false, "peer_login_expiration": 3600});
        let i = settings_input(ok.as_object().unwrap()).unwrap();
        assert_eq!(i.dns_domain.as_deref(), Some("corp.internal"));
        assert_eq!(i.peer_approval_required, Some(true));
        for bad_one in [
            json!({"peer_login_expiration_enabled": true}),
            json!({"extra_settings": {"user_approval_required": true}}),
            json!({"made_up": 1}),
            json!({"dns_domain": 5}),
        ] {
            let e = settings_input(bad_one.as_object().unwrap()).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad_one}");
        }
    }
}
