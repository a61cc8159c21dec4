//! What the API returns: the stored entities plus names and counts that save clients a lookup;
//! setup keys without their hash.

use serde::Serialize;

use crate::model::*;

/// A peer as NetBird's API shows it (`groups` as group objects, `dns_label` the FQDN,
/// `os`, `version`, `last_seen` and `created_at` as RFC 3339, ...), plus swiftgate's own
/// fields (`fqdn`, `group_names`, `meta`, `approved`, `last_seen_at` in Unix seconds, ...).
pub struct PeerView {
    /// The peer.
    pub peer: Peer,
    /// `<dns label>.<dns domain>`.
    pub fqdn: String,
    /// Names of its groups, All first.
    pub group_names: Vec<String>,
    /// Its groups as `{id, name, peers_count, resources_count}`, All first.
    pub groups: Vec<serde_json::Value>,
    /// Its IPv6 overlay address, if IPv6 is enabled for one of its groups.
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// Peers in its network map (NetBird's `accessible_peers_count`).
    pub accessible_peers_count: Option<usize>,
}

impl Serialize for PeerView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde_json::json;
        let p = &self.peer;
        let mut v = serde_json::to_value(p).map_err(serde::ser::Error::custom)?;
        let m = &p.meta;
        let extra = json!({
            "fqdn": self.fqdn,
            "group_names": self.group_names,
            "groups": self.groups,
            "ipv6": self.ipv6,
            "dns_label": self.fqdn,
            "label": p.dns_label,
            "hostname": m.hostname,
            "os": format!("{} {}", m.os_name, m.os_version).trim().to_string(),
            "kernel_version": m.kernel_version,
            "version": m.client_version,
            "ui_version": m.ui_version,
            "last_seen": rfc3339(p.last_seen_at),
            "created_at": rfc3339(p.created_at),
            "created_at_unix": p.created_at,
            "last_login": rfc3339(p.last_seen_at),
            "connection_ip": "",
            "geoname_id": 0,
            "country_code": "",
            "city_name": "",
            "serial_number": "",
            "user_id": "",
            "ssh_enabled": false,
            "login_expiration_enabled": false,
            "login_expired": false,
            "inactivity_expiration_enabled": false,
            "approval_required": !p.approved,
            "extra_dns_labels": [],
        });
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        if let Some(n) = self.accessible_peers_count {
            v["accessible_peers_count"] = n.into();
        }
        v.serialize(s)
    }
}

impl PeerView {
    /// The view of a peer.
    pub fn new(a: &Account, m: &Members, p: &Peer) -> Self {
        let all = a.groups.values().find(|g| g.built_in).map(|g| g.id.clone());
        let ids: Vec<&String> = all.iter().chain(p.groups.iter()).collect();
        PeerView {
            peer: p.clone(),
            fqdn: format!("{}.{}", p.dns_label, a.settings.dns_domain),
            group_names: ids
                .iter()
                .filter_map(|g| a.groups.get(*g))
                .map(|g| g.name.clone())
                .collect(),
            groups: ids.iter().map(|g| GroupView::minimum(a, m, g)).collect(),
            ipv6: a.peer_ipv6(p),
            accessible_peers_count: None,
        }
    }

    /// The view in a list (NetBird's `PeerBatch`): with how many peers it can reach.
    pub fn in_list(a: &Account, m: &Members, p: &Peer, accessible: usize) -> Self {
        PeerView {
            accessible_peers_count: Some(accessible),
            ..Self::new(a, m, p)
        }
    }
}

/// A group as NetBird's API shows it: members as `{id, name}` peers and `{id, type}`
/// resources, with their counts.
#[derive(Serialize)]
pub struct GroupView {
    /// The group.
    #[serde(flatten)]
    pub group: Group,
    /// Member peers (`{id, name}`).
    pub peers: Vec<serde_json::Value>,
    /// Number of member peers.
    pub peers_count: usize,
    /// Member resources (`{id, type}`).
    pub resources: Vec<serde_json::Value>,
    /// Number of member resources.
    pub resources_count: usize,
    /// How the group was made (`api`).
    pub issued: &'static str,
}

impl GroupView {
    /// The view of a group.
    pub fn new(a: &Account, m: &Members, g: &Group) -> Self {
        let peers: Vec<serde_json::Value> = m
            .peer_ids(&g.id)
            .iter()
            .filter_map(|id| a.peers.get(id))
            .map(|p| serde_json::json!({ "id": p.id, "name": p.name }))
            .collect();
        let resources: Vec<serde_json::Value> = m
            .resource_ids(&g.id)
            .iter()
            .filter_map(|id| a.resources.get(id))
            .map(|r| serde_json::json!({ "id": r.id, "type": r.address.kind() }))
            .collect();
        GroupView {
            group: g.clone(),
            peers_count: peers.len(),
            peers,
            resources_count: resources.len(),
            resources,
            issued: "api",
        }
    }

    /// NetBird's `GroupMinimum` of a group: `{id, name, peers_count, resources_count}`.
    pub fn minimum(a: &Account, m: &Members, id: &str) -> serde_json::Value {
        match a.groups.get(id) {
            Some(g) => serde_json::json!({
                "id": g.id,
                "name": g.name,
                "peers_count": m.peer_count(&g.id),
                "resources_count": m.resource_count(&g.id),
            }),
            None => {
                serde_json::json!({ "id": id, "name": "", "peers_count": 0, "resources_count": 0 })
            }
        }
    }
}

/// A resource as NetBird's API shows it (`type`, `groups` as group objects), plus its
/// Network's id and name.
pub struct ResourceView {
    /// The resource.
    pub resource: Resource,
    /// host, subnet or domain.
    pub kind: ResourceKind,
    /// Name of its Network.
    pub network_name: String,
    /// Its groups as `{id, name, peers_count, resources_count}`.
    pub groups: Vec<serde_json::Value>,
}

impl Serialize for ResourceView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = serde_json::to_value(&self.resource).map_err(serde::ser::Error::custom)?;
        v["type"] = serde_json::to_value(self.kind).map_err(serde::ser::Error::custom)?;
        v["network_name"] = self.network_name.clone().into();
        v["groups"] = self.groups.clone().into();
        v.serialize(s)
    }
}

impl ResourceView {
    /// The view of a resource.
    pub fn new(a: &Account, m: &Members, r: &Resource) -> Self {
        ResourceView {
            resource: r.clone(),
            kind: r.address.kind(),
            network_name: a
                .networks
                .get(&r.network_id)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
            groups: r
                .groups
                .iter()
                .map(|g| GroupView::minimum(a, m, g))
                .collect(),
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

/// A Network as NetBird's API shows it (`routers`, `resources` and `policies` as ids,
/// `routing_peers_count`), plus the counts of its resources and routers.
#[derive(Serialize)]
pub struct NetworkView {
    /// The Network.
    #[serde(flatten)]
    pub network: Network,
    /// Its resources' ids.
    pub resources: Vec<ResourceId>,
    /// Its routers' ids.
    pub routers: Vec<String>,
    /// Peers routing it (a router with `peer` counts one; with `peer_groups`, their members).
    pub routing_peers_count: usize,
    /// Policies whose rules reach one of its resources (through a group or directly).
    pub policies: Vec<PolicyId>,
    /// Number of resources.
    pub resources_count: usize,
    /// Number of routers.
    pub routers_count: usize,
}

impl NetworkView {
    /// The view of a Network.
    pub fn new(a: &Account, m: &Members, n: &Network) -> Self {
        let resources: Vec<&Resource> = a
            .resources
            .values()
            .filter(|r| r.network_id == n.id)
            .collect();
        let routers: Vec<&Router> = a
            .routers
            .values()
            .filter(|r| r.network_id == n.id)
            .collect();
        let routing_peers_count = routers
            .iter()
            .map(|r| match &r.peer {
                Some(_) => 1,
                None => r.peer_groups.iter().map(|g| m.peer_count(g)).sum(),
            })
            .sum();
        let policies = a
            .policies
            .values()
            .filter(|p| {
                p.rules.iter().any(|rule| {
                    resources.iter().any(|res| {
                        rule.destination_resource == Some(Target::Resource(res.id.clone()))
                            || rule.destinations.iter().any(|g| res.groups.contains(g))
                    })
                })
            })
            .map(|p| p.id.clone())
            .collect();
        NetworkView {
            network: n.clone(),
            resources_count: resources.len(),
            routers_count: routers.len(),
            resources: resources.iter().map(|r| r.id.clone()).collect(),
            routers: routers.iter().map(|r| r.id.clone()).collect(),
            routing_peers_count,
            policies,
        }
    }
}

/// A setup key as NetBird's API shows it (`key` masked but on creation, `expires`,
/// `last_used`, `updated_at` as RFC 3339, `state`), plus swiftgate's own fields (`key_prefix`,
/// Unix-second times, `invalid_reason`).
#[derive(Serialize)]
pub struct SetupKeyView {
    /// Id.
    pub id: SetupKeyId,
    /// The key: its first 5 characters and `****`, or the whole key in the answer that
    /// creates it.
    pub key: String,
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
    /// Expiry (Unix seconds), if it expires.
    pub expires_at: Option<u64>,
    /// Expiry, RFC 3339 (`0001-01-01T00:00:00Z`: never).
    pub expires: String,
    /// Usage limit (0 = unlimited).
    pub usage_limit: u32,
    /// Registrations so far.
    pub used_times: u32,
    /// Last registration (Unix seconds).
    pub last_used_at: Option<u64>,
    /// Last registration, RFC 3339 (zero time: never).
    pub last_used: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
    /// Revoked.
    pub revoked: bool,
    /// Registers ephemeral peers.
    pub ephemeral: bool,
    /// Extra DNS labels (not supported: always false).
    pub allow_extra_dns_labels: bool,
    /// Can register a peer now.
    pub valid: bool,
    /// `valid`, `expired`, `revoked` or `overused` (NetBird's order).
    pub state: &'static str,
    /// Why not valid, if not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
}

impl SetupKeyView {
    /// The view of a setup key at time `now`, its key masked.
    pub fn new(k: &SetupKey, now: u64) -> Self {
        let reason = k.unusable_reason(now);
        let expired = k.expires_at.is_some_and(|e| now >= e);
        let limit = if k.kind == SetupKeyKind::OneOff {
            1
        } else {
            k.usage_limit
        };
        let state = if expired {
            "expired"
        } else if k.revoked {
            "revoked"
        } else if limit > 0 && k.used_times >= limit {
            "overused"
        } else {
            "valid"
        };
        SetupKeyView {
            id: k.id.clone(),
            key: format!("{}****", k.key_prefix.get(..5).unwrap_or(&k.key_prefix)),
            name: k.name.clone(),
            key_prefix: k.key_prefix.clone(),
            kind: k.kind,
            auto_groups: k.auto_groups.clone(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            expires: rfc3339(k.expires_at.unwrap_or(0)),
            usage_limit: k.usage_limit,
            used_times: k.used_times,
            last_used_at: k.last_used_at,
            last_used: rfc3339(k.last_used_at.unwrap_or(0)),
            updated_at: rfc3339(k.updated_at.max(k.created_at)),
            revoked: k.revoked,
            ephemeral: k.ephemeral,
            allow_extra_dns_labels: false,
            valid: reason.is_none(),
            state,
            invalid_reason: reason,
        }
    }

    /// The view in the answer that creates the key: with the whole key, shown only then.
    pub fn created(k: &SetupKey, now: u64, text: String) -> Self {
        SetupKeyView {
            key: text,
            ..Self::new(k, now)
        }
    }
}

/// A policy as NetBird's API shows it: rule `sources`/`destinations` as group objects
/// (`{id, name, peers_count, resources_count}`), single ports in `ports` and ranges in
/// `port_ranges` (`{start, end}`), a single peer or resource as `sourceResource` /
/// `destinationResource` `{id, type}` (also under swiftgate's first names
/// `source_resource` / `destination_resource`).
pub fn policy_view(a: &Account, m: &Members, p: &Policy) -> serde_json::Value {
    use serde_json::{Value, json};
    let target = |t: &Option<Target>| -> Value {
        match t {
            None => Value::Null,
            Some(Target::Peer(id)) => json!({ "id": id, "type": "peer" }),
            Some(Target::Resource(id)) => json!({
                "id": id,
                "type": a.resources.get(id).map(|r| r.address.kind()),
            }),
        }
    };
    let rules: Vec<Value> = p
        .rules
        .iter()
        .map(|r| {
            let (singles, ranges): (Vec<&PortRange>, Vec<&PortRange>) =
                r.ports.iter().partition(|p| p.is_single());
            let mut v = json!({
                "id": r.id,
                "name": r.name,
                "description": r.description,
                "enabled": r.enabled,
                "action": r.action,
                "protocol": r.protocol,
                "bidirectional": r.bidirectional,
                "ports": singles.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "port_ranges": ranges.iter().map(|p| json!({"start": p.start, "end": p.end})).collect::<Vec<_>>(),
                "sources": r.sources.iter().map(|g| GroupView::minimum(a, m, g)).collect::<Vec<_>>(),
                "destinations": r.destinations.iter().map(|g| GroupView::minimum(a, m, g)).collect::<Vec<_>>(),
            });
            for (camel, snake, t) in [
                ("sourceResource", "source_resource", &r.source_resource),
                ("destinationResource", "destination_resource", &r.destination_resource),
            ] {
                if t.is_some() {
                    v[camel] = target(t);
                    v[snake] = target(t);
                }
            }
            v
        })
        .collect();
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "enabled": p.enabled,
        "source_posture_checks": p.source_posture_checks,
        "rules": rules,
    })
}

/// A posture check as NetBird's API shows it: its checks under NetBird's names and shapes.
#[derive(Serialize)]
pub struct PostureCheckView {
    /// Id.
    pub id: PostureCheckId,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// `nb_version_check`, `os_version_check`, `peer_network_range_check`, `process_check`.
    pub checks: serde_json::Value,
}

impl From<&PostureCheck> for PostureCheckView {
    fn from(p: &PostureCheck) -> Self {
        use serde_json::{Map, Value, json};
        let c = &p.checks;
        let mut checks = Map::new();
        if let Some(v) = &c.client_version {
            checks.insert(
                "nb_version_check".into(),
                json!({ "min_version": v.min_version }),
            );
        }
        if let Some(os) = &c.os_version {
            let mut m = Map::new();
            for (name, v, key) in [
                ("linux", &os.linux, "min_kernel_version"),
                ("windows", &os.windows, "min_kernel_version"),
                ("darwin", &os.darwin, "min_version"),
                ("ios", &os.ios, "min_version"),
                ("android", &os.android, "min_version"),
            ] {
                if let Some(v) = v {
                    m.insert(name.into(), json!({ key: v }));
                }
            }
            checks.insert("os_version_check".into(), Value::Object(m));
        }
        if let Some(r) = &c.peer_network_range {
            checks.insert(
                "peer_network_range_check".into(),
                json!({ "ranges": r.ranges, "action": r.action }),
            );
        }
        if let Some(pr) = &c.process {
            checks.insert("process_check".into(), json!(pr));
        }
        PostureCheckView {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            checks: Value::Object(checks),
        }
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-12-07T10:00:00Z`), the form NetBird's API uses; 0 is
/// NetBird's "never", `0001-01-01T00:00:00Z`.
pub fn rfc3339(secs: u64) -> String {
    if secs == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let (y, m, d, hh, mm, ss) = crate::civil::from_unix(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
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
