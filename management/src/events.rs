//! The activity log: who changed what, when. Every successful change made through the admin
//! API is recorded with its initiator (user and token), NetBird's activity code for it, the
//! target's id and a few details; the log is served at `/api/events/audit` (and
//! `/api/events`, NetBird's older path) and only grows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One recorded change, as NetBird's API shows it (plus `token_id`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number (rises with time).
    pub id: u64,
    /// Unix seconds.
    pub timestamp: u64,
    /// NetBird's activity code (`group.add`, `policy.update`, ...).
    pub activity_code: String,
    /// The same for people ("Group created").
    pub activity: String,
    /// Id of the user who made the change.
    pub initiator_id: String,
    /// That user's name.
    pub initiator_name: String,
    /// That user's e-mail.
    pub initiator_email: String,
    /// Id of the token the change was made with.
    pub token_id: Option<String>,
    /// Id of what was changed.
    pub target_id: String,
    /// Details: the target's name and what the code does not say.
    pub meta: BTreeMap<String, String>,
}

/// Which events to return: all filters must match; newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// At or after this Unix second.
    pub since: Option<u64>,
    /// At or before this Unix second.
    pub until: Option<u64>,
    /// This activity code.
    pub activity_code: Option<String>,
    /// Made by this user.
    pub initiator_id: Option<String>,
    /// About this object.
    pub target_id: Option<String>,
    /// At most this many (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
}

/// Events returned when no limit is given.
pub const DEFAULT_LIMIT: usize = 1_000;
/// The most events one request returns.
pub const MAX_LIMIT: usize = 10_000;

impl EventQuery {
    /// Refuses numbers beyond what the store and the API document take (2^63 - 1).
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("since", self.since),
            ("until", self.until),
            ("limit", self.limit.map(|l| l as u64)),
        ] {
            if v.is_some_and(|v| v > i64::MAX as u64) {
                return Err(format!("{name}: out of range (at most 2^63 - 1)"));
            }
        }
        Ok(())
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// What a change was, as the API layer tells the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    /// NetBird's code.
    pub code: &'static str,
    /// For people.
    pub text: &'static str,
}

/// What a handler knows better than its route: the activity it made (a setup key's PUT that
/// revoked it, a user's PUT that blocked it). Put into the answer's extensions, it replaces
/// [`activity`]'s guess in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivityHint(pub Activity);

/// The activity of a successful `method` on the route `path` (axum's matched path, e.g.
/// `/api/groups/{id}`), if it is a change.
pub fn activity(method: &str, path: &str) -> Option<Activity> {
    let a = |code, text| Some(Activity { code, text });
    match (method, path) {
        ("POST", "/api/groups") => a("group.add", "Group created"),
        ("PUT", "/api/groups/{id}") => a("group.update", "Group updated"),
        ("DELETE", "/api/groups/{id}") => a("group.delete", "Group deleted"),
        ("POST", "/api/policies") => a("policy.add", "Policy added"),
        ("PUT", "/api/policies/{id}") => a("policy.update", "Policy updated"),
        ("POST", "/api/policies/{id}/enable") => a("policy.update", "Policy enabled"),
        ("POST", "/api/policies/{id}/disable") => a("policy.update", "Policy disabled"),
        ("DELETE", "/api/policies/{id}") => a("policy.delete", "Policy deleted"),
        ("POST", "/api/setup-keys") => a("setupkey.add", "Setup key created"),
        ("PUT", "/api/setup-keys/{id}") => a("setupkey.update", "Setup key updated"),
        ("POST", "/api/setup-keys/{id}/revoke") => a("setupkey.revoke", "Setup key revoked"),
        ("DELETE", "/api/setup-keys/{id}") => a("setupkey.delete", "Setup key deleted"),
        ("POST", "/api/peers") => a("peer.setupkey.add", "Peer added with setup key"),
        // NetBird splits these by field (peer.rename, peer.ssh.enable, ...).
        ("PUT", "/api/peers/{id}") => a("peer.update", "Peer updated"),
        ("POST", "/api/peers/{id}/approve") => a("peer.approve", "Peer approved"),
        ("DELETE", "/api/peers/{id}") => a("user.peer.delete", "Peer deleted"),
        ("POST", "/api/posture-checks") => a("posture.check.create", "Posture check created"),
        ("PUT", "/api/posture-checks/{id}") => a("posture.check.update", "Posture check updated"),
        ("DELETE", "/api/posture-checks/{id}") => {
            a("posture.check.delete", "Posture check deleted")
        }
        ("POST", "/api/networks") => a("network.create", "Network created"),
        ("PUT", "/api/networks/{id}") => a("network.update", "Network updated"),
        ("DELETE", "/api/networks/{id}") => a("network.delete", "Network deleted"),
        ("POST", "/api/networks/{id}/resources") => {
            a("network.resource.create", "Network resource created")
        }
        ("PUT", "/api/networks/{id}/resources/{rid}") => {
            a("network.resource.update", "Network resource updated")
        }
        ("DELETE", "/api/networks/{id}/resources/{rid}") => {
            a("network.resource.delete", "Network resource deleted")
        }
        ("POST", "/api/networks/{id}/routers") => {
            a("network.router.create", "Network router created")
        }
        ("PUT", "/api/networks/{id}/routers/{rid}") => {
            a("network.router.update", "Network router updated")
        }
        ("DELETE", "/api/networks/{id}/routers/{rid}") => {
            a("network.router.delete", "Network router deleted")
        }
        // NetBird records one code per changed setting; swiftgate one for the change.
        ("PUT", "/api/settings") | ("PUT", "/api/accounts/{id}") => {
            a("account.settings.update", "Account settings updated")
        }
        ("POST", "/api/routes") => a("route.add", "Route created"),
        ("PUT", "/api/routes/{id}") => a("route.update", "Route updated"),
        ("DELETE", "/api/routes/{id}") => a("route.delete", "Route deleted"),
        ("POST", "/api/dns/nameservers") => a("nameserver.group.add", "Nameserver group created"),
        ("PUT", "/api/dns/nameservers/{id}") => {
            a("nameserver.group.update", "Nameserver group updated")
        }
        ("DELETE", "/api/dns/nameservers/{id}") => {
            a("nameserver.group.delete", "Nameserver group deleted")
        }
        // NetBird records one event per group added or removed; swiftgate one for the change.
        ("PUT", "/api/dns/settings") => a("dns.setting.update", "DNS settings updated"),
        ("POST", "/api/users") => a("user.invite", "User invited"),
        ("PUT", "/api/users/{id}") => a("user.role.update", "User role updated"),
        ("DELETE", "/api/users/{id}") => a("user.delete", "User deleted"),
        ("POST", "/api/users/{id}/tokens") => a(
            "personal.access.token.create",
            "Personal access token created",
        ),
        ("DELETE", "/api/users/{id}/tokens/{tid}") => a(
            "personal.access.token.delete",
            "Personal access token deleted",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_not_activities_and_writes_are() {
        assert_eq!(activity("GET", "/api/groups"), None);
        assert_eq!(activity("POST", "/api/groups").unwrap().code, "group.add");
        assert_eq!(
            activity("DELETE", "/api/users/{id}/tokens/{tid}")
                .unwrap()
                .code,
            "personal.access.token.delete"
        );
    }

    #[test]
    fn the_limit_is_bounded() {
        assert_eq!(EventQuery::default().limit(), DEFAULT_LIMIT);
        let q = EventQuery {
            limit: Some(1_000_000),
            ..Default::default()
        };
        assert_eq!(q.limit(), MAX_LIMIT);
    }
}
