//! What the API returns: the stored entities plus names and counts that save clients a lookup;
//! setup keys without their hash.

use serde::Serialize;

use crate::model::*;

/// A peer with its DNS name and group names.
#[derive(Serialize)]
pub struct PeerView {
    /// The peer.
    #[serde(flatten)]
    pub peer: Peer,
    /// `<dns label>.<dns domain>`.
    pub fqdn: String,
    /// Names of its groups, All first.
    pub group_names: Vec<String>,
    /// Its IPv6 overlay address, if IPv6 is enabled for one of its groups.
    pub ipv6: Option<std::net::Ipv6Addr>,
}

impl PeerView {
    /// The view of a peer.
    pub fn new(a: &Account, p: &Peer) -> Self {
        let mut group_names = vec![ALL_GROUP_NAME.to_string()];
        group_names.extend(
            p.groups
                .iter()
                .filter_map(|g| a.groups.get(g))
                .map(|g| g.name.clone()),
        );
        PeerView {
            peer: p.clone(),
            fqdn: format!("{}.{}", p.dns_label, a.settings.dns_domain),
            group_names,
            ipv6: a.peer_ipv6(p),
        }
    }
}

/// A group with its members.
#[derive(Serialize)]
pub struct GroupView {
    /// The group.
    #[serde(flatten)]
    pub group: Group,
    /// Peer ids.
    pub peers: Vec<PeerId>,
    /// Resource ids.
    pub resources: Vec<ResourceId>,
}

impl GroupView {
    /// The view of a group.
    pub fn new(a: &Account, g: &Group) -> Self {
        GroupView {
            group: g.clone(),
            peers: a.group_peer_ids(&g.id),
            resources: a.group_resource_ids(&g.id),
        }
    }
}

/// A resource with its kind and Network name.
#[derive(Serialize)]
pub struct ResourceView {
    /// The resource.
    #[serde(flatten)]
    pub resource: Resource,
    /// host, subnet or domain.
    #[serde(rename = "type")]
    pub kind: ResourceKind,
    /// Name of its Network.
    pub network_name: String,
}

impl ResourceView {
    /// The view of a resource.
    pub fn new(a: &Account, r: &Resource) -> Self {
        ResourceView {
            resource: r.clone(),
            kind: r.address.kind(),
            network_name: a
                .networks
                .get(&r.network_id)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
        }
    }
}

/// A router with its peer and Network names.
#[derive(Serialize)]
pub struct RouterView {
    /// The router.
    #[serde(flatten)]
    pub router: Router,
    /// Name of its peer.
    pub peer_name: Option<String>,
    /// Name of its Network.
    pub network_name: String,
}

impl RouterView {
    /// The view of a router.
    pub fn new(a: &Account, r: &Router) -> Self {
        RouterView {
            router: r.clone(),
            peer_name: r
                .peer
                .as_ref()
                .and_then(|p| a.peers.get(p))
                .map(|p| p.name.clone()),
            network_name: a
                .networks
                .get(&r.network_id)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
        }
    }
}

/// A Network with its resource and router counts.
#[derive(Serialize)]
pub struct NetworkView {
    /// The Network.
    #[serde(flatten)]
    pub network: Network,
    /// Number of resources.
    pub resources_count: usize,
    /// Number of routers.
    pub routers_count: usize,
}

impl NetworkView {
    /// The view of a Network.
    pub fn new(a: &Account, n: &Network) -> Self {
        NetworkView {
            network: n.clone(),
            resources_count: a
                .resources
                .values()
                .filter(|r| r.network_id == n.id)
                .count(),
            routers_count: a.routers.values().filter(|r| r.network_id == n.id).count(),
        }
    }
}

/// A setup key without its hash, with its state.
#[derive(Serialize)]
pub struct SetupKeyView {
    /// Id.
    pub id: SetupKeyId,
    /// Name.
    pub name: String,
    /// First characters of the key.
    pub key_prefix: String,
    /// reusable or one-off.
    #[serde(rename = "type")]
    pub kind: SetupKeyKind,
    /// Auto-groups.
    pub auto_groups: Vec<GroupId>,
    /// Creation time.
    pub created_at: u64,
    /// Expiry.
    pub expires_at: Option<u64>,
    /// Usage limit (0 = unlimited).
    pub usage_limit: u32,
    /// Registrations so far.
    pub used_times: u32,
    /// Last registration.
    pub last_used_at: Option<u64>,
    /// Revoked.
    pub revoked: bool,
    /// Registers ephemeral peers.
    pub ephemeral: bool,
    /// Can register a peer now.
    pub valid: bool,
    /// Why not, if not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
}

impl SetupKeyView {
    /// The view of a setup key at time `now`.
    pub fn new(k: &SetupKey, now: u64) -> Self {
        let reason = k.unusable_reason(now);
        SetupKeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            key_prefix: k.key_prefix.clone(),
            kind: k.kind,
            auto_groups: k.auto_groups.clone(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            usage_limit: k.usage_limit,
            used_times: k.used_times,
            last_used_at: k.last_used_at,
            revoked: k.revoked,
            ephemeral: k.ephemeral,
            valid: reason.is_none(),
            invalid_reason: reason,
        }
    }
}

/// A new setup key with its text, shown only in this response.
#[derive(Serialize)]
pub struct CreatedSetupKey {
    /// The key.
    #[serde(flatten)]
    pub view: SetupKeyView,
    /// The key text; store it now, it cannot be shown again.
    pub key: String,
}

/// Unix seconds as RFC 3339 UTC (`2026-12-07T10:00:00Z`), the form NetBird's API uses; 0 is
/// NetBird's "never", `0001-01-01T00:00:00Z`.
pub fn rfc3339(secs: u64) -> String {
    if secs == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_644_800), "2026-12-07T12:00:00Z");
    }
}
