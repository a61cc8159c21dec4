//! NetBird's account endpoints over the account's settings: `GET /api/accounts` (one account)
//! and `PUT /api/accounts/{id}`. NetBird's settings that swiftgate has are mapped onto its own
//! (`dns_domain`, `network_range`, `network_range_v6`, `ipv6_enabled_groups`,
//! `extra.peer_approval_enabled`); the ones it does not have are shown switched off and
//! accepted only switched off, so that a setting asked for is never silently dropped.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::openapi::Refusals;
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

/// NetBird's `AccountSettings` as this server shows them: what it has mapped onto its own
/// settings, and what it does not have switched off (the values of [`OFF`], [`INERT`] and
/// [`EXTRA_OFF`]; a test holds the two together).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountSettingsView {
    /// Not supported: false.
    pub peer_login_expiration_enabled: bool,
    /// Shown as given; changes nothing here.
    pub peer_login_expiration: u64,
    /// Not supported: false.
    pub peer_inactivity_expiration_enabled: bool,
    /// Shown as given; changes nothing here.
    pub peer_inactivity_expiration: u64,
    /// Regular users see nothing here: true.
    pub regular_users_view_blocked: bool,
    /// Not supported: false.
    pub peer_expose_enabled: bool,
    /// Not supported: empty.
    pub peer_expose_groups: Vec<String>,
    /// Not supported: false.
    pub groups_propagation_enabled: bool,
    /// Not supported: false.
    pub jwt_groups_enabled: bool,
    /// Not supported: empty.
    pub jwt_groups_claim_name: String,
    /// Not supported: empty.
    pub jwt_allow_groups: Vec<String>,
    /// Not supported: false.
    pub routing_peer_dns_resolution_enabled: bool,
    /// Not supported: false.
    pub lazy_connection_enabled: bool,
    /// DNS domain of peer names.
    pub dns_domain: String,
    /// The IPv4 overlay range.
    pub network_range: String,
    /// The IPv6 overlay range.
    pub network_range_v6: Option<String>,
    /// Groups whose peers get IPv6 overlay addresses.
    pub ipv6_enabled_groups: Vec<String>,
    /// NetBird's extra settings.
    pub extra: AccountExtraView,
}

/// NetBird's `AccountExtraSettings`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountExtraView {
    /// New peers wait for an admin's approval.
    pub peer_approval_enabled: bool,
    /// Not supported: false.
    pub user_approval_required: bool,
    /// Not supported: false.
    pub network_traffic_logs_enabled: bool,
    /// Not supported: false.
    pub network_traffic_packet_counter_enabled: bool,
    /// Not supported: empty.
    pub network_traffic_logs_groups: Vec<String>,
}

/// NetBird's onboarding state (nothing is pending here).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Onboarding {
    /// false.
    pub signup_form_pending: bool,
    /// false.
    pub onboarding_flow_pending: bool,
}

/// The account as NetBird's API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// Id.
    pub id: String,
    /// Settings.
    pub settings: AccountSettingsView,
    /// The DNS domain.
    pub domain: String,
    /// `private`.
    pub domain_category: String,
    /// Not kept: NetBird's zero time.
    pub created_at: String,
    /// Not kept: empty.
    pub created_by: String,
    /// Nothing pending.
    pub onboarding: Onboarding,
}

/// `PUT /api/accounts/{id}` body: `settings` with any of the fields of
/// [`AccountSettingsView`] (`extra` also as `extra_settings`).
#[derive(ToSchema)]
#[allow(dead_code)] // describes the body the handler reads field by field
pub struct AccountRequest {
    /// The settings to change.
    settings: AccountSettingsView,
    /// Accepted and ignored.
    onboarding: Option<Onboarding>,
}

fn account_view(a: &Account) -> AccountView {
    let s = &a.settings;
    let inert = |k: &str| INERT.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
    AccountView {
        id: a.id.clone(),
        settings: AccountSettingsView {
            peer_login_expiration_enabled: false,
            peer_login_expiration: inert("peer_login_expiration"),
            peer_inactivity_expiration_enabled: false,
            peer_inactivity_expiration: inert("peer_inactivity_expiration"),
            regular_users_view_blocked: true,
            peer_expose_enabled: false,
            peer_expose_groups: Vec::new(),
            groups_propagation_enabled: false,
            jwt_groups_enabled: false,
            jwt_groups_claim_name: String::new(),
            jwt_allow_groups: Vec::new(),
            routing_peer_dns_resolution_enabled: false,
            lazy_connection_enabled: false,
            dns_domain: s.dns_domain.clone(),
            network_range: s.overlay_range.to_string(),
            network_range_v6: s.overlay_range_v6.map(|r| r.to_string()),
            ipv6_enabled_groups: s.ipv6_enabled_groups.clone(),
            extra: AccountExtraView {
                peer_approval_enabled: s.peer_approval_required,
                user_approval_required: false,
                network_traffic_logs_enabled: false,
                network_traffic_packet_counter_enabled: false,
                network_traffic_logs_groups: Vec::new(),
            },
        },
        domain: s.dns_domain.clone(),
        domain_category: "private".into(),
        created_at: rfc3339(0),
        created_by: String::new(),
        onboarding: Onboarding {
            signup_form_pending: false,
            onboarding_flow_pending: false,
        },
    }
}

/// `GET /api/accounts`: the one account.
#[utoipa::path(get, path = "/api/accounts", tag = "accounts",
    responses((status = 200, body = Vec<AccountView>), Refusals))]
pub async fn list(State(svc): State<AppState>) -> Json<Vec<AccountView>> {
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
                } else if v.as_i64().is_none_or(|n| n < 0) {
                    return Err(bad(format!(
                        "settings.{key}: expected a number of seconds (0 to 2^63-1), got {v}"
                    )));
                }
            }
        }
    }
    Ok(input)
}

/// `PUT /api/accounts/{id}`: `{settings, onboarding?}`; only the settings given change.
#[utoipa::path(put, path = "/api/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Id of the account")),
    request_body = AccountRequest,
    responses((status = 200, body = AccountView), Refusals))]
pub async fn update(
    State(svc): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<AccountView>> {
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
    fn the_view_shows_every_unsupported_setting_off() {
        let v = serde_json::to_value(account_view(&Account::new("acc"))).unwrap();
        let settings = &v["settings"];
        for (k, off) in OFF {
            assert_eq!(settings[*k], off(), "{k}");
        }
        for (k, value) in INERT {
            assert_eq!(settings[*k], json!(value), "{k}");
        }
        for k in EXTRA_OFF {
            assert_eq!(settings["extra"][*k], json!(false), "{k}");
        }
    }

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
            json!({"peer_login_expiration": 9_223_372_036_854_775_808u64}),
            json!({"peer_login_expiration": "1h"}),
        ] {
            let e = settings_input(bad_one.as_object().unwrap()).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad_one}");
        }
    }
}
