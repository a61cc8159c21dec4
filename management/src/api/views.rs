//! What the API returns: the stored entities plus names and counts that save clients a lookup;
//! setup keys without their hash.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use utoipa::ToSchema;

use crate::model::*;

/// NetBird's `GroupMinimum`: a group as other objects name it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct GroupMinimum {
    /// Id.
    pub id: String,
    /// Name (empty if the group is gone).
    pub name: String,
    /// Number of member peers.
    pub peers_count: usize,
    /// Number of member resources.
    pub resources_count: usize,
}

/// A peer as a group lists it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PeerMinimum {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A single peer or resource as a group or a rule names it: `{id, type}`, the type `peer` or
/// the resource's `host`, `subnet` or `domain`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TargetView {
    /// Id.
    pub id: String,
    /// `peer`, `host`, `subnet` or `domain` (`resource` if the resource is gone).
    #[serde(rename = "type")]
    pub kind: String,
}

/// A peer as NetBird's API shows it (`groups` as group objects, `dns_label` the FQDN,
/// `os`, `version`, `last_seen` and `created_at` as RFC 3339, ...), plus swiftgate's own
/// fields (`fqdn`, `label`, `group_names`, `meta`, `approved`, `last_seen_at` and
/// `created_at_unix` in Unix seconds, ...). NetBird fields swiftgate has no value for carry
/// NetBird's empty values.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PeerView {
    /// Id.
    pub id: PeerId,
    /// Unique display name.
    pub name: String,
    /// The FQDN, `<label>.<dns domain>` (NetBird's meaning of `dns_label`).
    pub dns_label: String,
    /// The bare DNS label.
    pub label: String,
    /// `<label>.<dns domain>`.
    pub fqdn: String,
    /// WireGuard public key, base64.
    pub wg_pubkey: String,
    /// Overlay address.
    #[schema(value_type = String, format = Ipv4)]
    pub ip: Ipv4Addr,
    /// IPv6 overlay address, if IPv6 is enabled for one of its groups.
    #[schema(value_type = Option<String>, format = Ipv6)]
    pub ipv6: Option<Ipv6Addr>,
    /// SSH public key the agent reported (empty if none).
    pub ssh_pubkey: String,
    /// Its groups, All first.
    pub groups: Vec<GroupMinimum>,
    /// Names of its groups, All first.
    pub group_names: Vec<String>,
    /// What the peer last reported.
    pub meta: PeerMeta,
    /// A Sync stream is open.
    pub connected: bool,
    /// Last seen, Unix seconds.
    pub last_seen_at: u64,
    /// Last seen, RFC 3339.
    pub last_seen: String,
    /// Last login (here: last seen), RFC 3339.
    pub last_login: String,
    /// Registration time, RFC 3339.
    pub created_at: String,
    /// Registration time, Unix seconds.
    pub created_at_unix: u64,
    /// Approved by an admin (or approval not required at registration).
    pub approved: bool,
    /// NetBird's inverse of `approved`.
    pub approval_required: bool,
    /// Removed automatically after being offline for a while.
    pub ephemeral: bool,
    /// Setup key the peer registered with.
    pub setup_key_id: Option<SetupKeyId>,
    /// Reported host name.
    pub hostname: String,
    /// OS name and version.
    pub os: String,
    /// Kernel release.
    pub kernel_version: String,
    /// Agent version (the NetBird protocol level it speaks).
    pub version: String,
    /// The agent's own version.
    pub ui_version: String,
    /// NetBird's; not kept (empty).
    pub connection_ip: String,
    /// NetBird's; not kept (0).
    pub geoname_id: u32,
    /// NetBird's; not kept (empty).
    pub country_code: String,
    /// NetBird's; not kept (empty).
    pub city_name: String,
    /// NetBird's; not kept (empty).
    pub serial_number: String,
    /// NetBird's owning user; peers here belong to no user (empty).
    pub user_id: String,
    /// NetBird's; not supported (false).
    pub ssh_enabled: bool,
    /// NetBird's; not supported (false).
    pub login_expiration_enabled: bool,
    /// NetBird's; not supported (false).
    pub login_expired: bool,
    /// NetBird's; not supported (false).
    pub inactivity_expiration_enabled: bool,
    /// NetBird's; not supported (empty).
    pub extra_dns_labels: Vec<String>,
    /// Peers in its network map (NetBird's `accessible_peers_count`), in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accessible_peers_count: Option<usize>,
}

impl PeerView {
    /// The view of a peer.
    pub fn new(a: &Account, m: &Members, p: &Peer) -> Self {
        let all = a.groups.values().find(|g| g.built_in).map(|g| g.id.clone());
        let ids: Vec<&String> = all.iter().chain(p.groups.iter()).collect();
        let fqdn = a.fqdn(p);
        let meta = &p.meta;
        PeerView {
            id: p.id.clone(),
            name: p.name.clone(),
            dns_label: fqdn.clone(),
            label: p.dns_label.clone(),
            fqdn,
            wg_pubkey: p.wg_pubkey.clone(),
            ip: p.ip,
            ipv6: a.peer_ipv6(p),
            ssh_pubkey: p.ssh_pubkey.clone(),
            groups: ids.iter().map(|g| GroupView::minimum(a, m, g)).collect(),
            group_names: ids
                .iter()
                .filter_map(|g| a.groups.get(*g))
                .map(|g| g.name.clone())
                .collect(),
            meta: meta.clone(),
            connected: p.connected,
            last_seen_at: p.last_seen_at,
            last_seen: rfc3339(p.last_seen_at),
            last_login: rfc3339(p.last_seen_at),
            created_at: rfc3339(p.created_at),
            created_at_unix: p.created_at,
            approved: p.approved,
            approval_required: !p.approved,
            ephemeral: p.ephemeral,
            setup_key_id: p.setup_key_id.clone(),
            hostname: meta.hostname.clone(),
            os: format!("{} {}", meta.os_name, meta.os_version)
                .trim()
                .to_string(),
            kernel_version: meta.kernel_version.clone(),
            version: meta.client_version.clone(),
            ui_version: meta.ui_version.clone(),
            connection_ip: String::new(),
            geoname_id: 0,
            country_code: String::new(),
            city_name: String::new(),
            serial_number: String::new(),
            user_id: String::new(),
            ssh_enabled: false,
            login_expiration_enabled: false,
            login_expired: false,
            inactivity_expiration_enabled: false,
            extra_dns_labels: Vec::new(),
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

/// A peer another peer can reach (NetBird's `AccessiblePeer`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccessiblePeerView {
    /// Id.
    pub id: PeerId,
    /// Name.
    pub name: String,
    /// Overlay address.
    #[schema(value_type = String, format = Ipv4)]
    pub ip: Ipv4Addr,
    /// IPv6 overlay address, if it has one.
    #[schema(value_type = Option<String>, format = Ipv6)]
    pub ipv6: Option<Ipv6Addr>,
    /// FQDN.
    pub dns_label: String,
    /// NetBird's owning user (empty).
    pub user_id: String,
    /// Runtime OS id.
    pub os: String,
    /// NetBird's; not kept (empty).
    pub country_code: String,
    /// NetBird's; not kept (empty).
    pub city_name: String,
    /// NetBird's; not kept (0).
    pub geoname_id: u32,
    /// A Sync stream is open.
    pub connected: bool,
    /// Last seen, RFC 3339.
    pub last_seen: String,
}

impl AccessiblePeerView {
    /// The view of a reachable peer.
    pub fn new(a: &Account, p: &Peer) -> Self {
        AccessiblePeerView {
            id: p.id.clone(),
            name: p.name.clone(),
            ip: p.ip,
            ipv6: a.peer_ipv6(p),
            dns_label: a.fqdn(p),
            user_id: String::new(),
            os: p.meta.os.clone(),
            country_code: String::new(),
            city_name: String::new(),
            geoname_id: 0,
            connected: p.connected,
            last_seen: rfc3339(p.last_seen_at),
        }
    }
}

/// A group as NetBird's API shows it: members as `{id, name}` peers and `{id, type}`
/// resources, with their counts.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct GroupView {
    /// The group.
    #[serde(flatten)]
    pub group: Group,
    /// Member peers.
    pub peers: Vec<PeerMinimum>,
    /// Number of member peers.
    pub peers_count: usize,
    /// Member resources.
    pub resources: Vec<TargetView>,
    /// Number of member resources.
    pub resources_count: usize,
    /// How the group was made (`api`).
    pub issued: String,
}

impl GroupView {
    /// The view of a group.
    pub fn new(a: &Account, m: &Members, g: &Group) -> Self {
        let peers: Vec<PeerMinimum> = m
            .peer_ids(&g.id)
            .iter()
            .filter_map(|id| a.peers.get(id))
            .map(|p| PeerMinimum {
                id: p.id.clone(),
                name: p.name.clone(),
            })
            .collect();
        let resources: Vec<TargetView> = m
            .resource_ids(&g.id)
            .iter()
            .filter_map(|id| a.resources.get(id))
            .map(|r| TargetView {
                id: r.id.clone(),
                kind: r.address.kind().as_str().into(),
            })
            .collect();
        GroupView {
            group: g.clone(),
            peers_count: peers.len(),
            peers,
            resources_count: resources.len(),
            resources,
            issued: "api".into(),
        }
    }

    /// NetBird's `GroupMinimum` of a group.
    pub fn minimum(a: &Account, m: &Members, id: &str) -> GroupMinimum {
        match a.groups.get(id) {
            Some(g) => GroupMinimum {
                id: g.id.clone(),
                name: g.name.clone(),
                peers_count: m.peer_count(&g.id),
                resources_count: m.resource_count(&g.id),
            },
            None => GroupMinimum {
                id: id.into(),
                name: String::new(),
                peers_count: 0,
                resources_count: 0,
            },
        }
    }
}

/// A resource as NetBird's API shows it (`type`, `groups` as group objects), plus its
/// Network's name.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ResourceView {
    /// Id.
    pub id: ResourceId,
    /// The Network it belongs to.
    pub network_id: NetworkId,
    /// Name of its Network.
    pub network_name: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// An address, a CIDR, a domain or a wildcard domain (`*.example.internal`).
    #[schema(value_type = String)]
    pub address: ResourceAddress,
    /// host, subnet or domain.
    #[serde(rename = "type")]
    pub kind: ResourceKind,
    /// Its groups.
    pub groups: Vec<GroupMinimum>,
    /// Disabled resources are routed to nobody.
    pub enabled: bool,
}

impl ResourceView {
    /// The view of a resource.
    pub fn new(a: &Account, m: &Members, r: &Resource) -> Self {
        ResourceView {
            id: r.id.clone(),
            network_id: r.network_id.clone(),
            network_name: a
                .networks
                .get(&r.network_id)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
            name: r.name.clone(),
            description: r.description.clone(),
            address: r.address.clone(),
            kind: r.address.kind(),
            groups: r
                .groups
                .iter()
                .map(|g| GroupView::minimum(a, m, g))
                .collect(),
            enabled: r.enabled,
        }
    }
}

/// A router with its peer and Network names.
#[derive(Clone, Debug, Serialize, ToSchema)]
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
#[derive(Clone, Debug, Serialize, ToSchema)]
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
#[derive(Clone, Debug, Serialize, ToSchema)]
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
    pub state: String,
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
            state: state.into(),
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

/// A single port range of a rule (NetBird's `RulePortRange`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PortRangeView {
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
}

/// One rule of a policy as NetBird's API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RuleView {
    /// Id, stable across updates of the policy.
    pub id: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Disabled rules are ignored.
    pub enabled: bool,
    /// `accept` or `drop`.
    #[schema(value_type = String, example = "accept")]
    pub action: Action,
    /// `all`, `tcp`, `udp`, `icmp` (or NetBird's `netbird-ssh`).
    #[schema(value_type = String, example = "tcp")]
    pub protocol: Protocol,
    /// Also destinations -> sources.
    pub bidirectional: bool,
    /// Single ports, as strings.
    pub ports: Vec<String>,
    /// Port ranges.
    pub port_ranges: Vec<PortRangeView>,
    /// Source groups.
    pub sources: Vec<GroupMinimum>,
    /// Destination groups.
    pub destinations: Vec<GroupMinimum>,
    /// A single source peer or resource (NetBird's name).
    #[serde(rename = "sourceResource", skip_serializing_if = "Option::is_none")]
    pub source_resource_nb: Option<TargetView>,
    /// The same under swiftgate's first name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_resource: Option<TargetView>,
    /// A single destination peer or resource (NetBird's name).
    #[serde(
        rename = "destinationResource",
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_resource_nb: Option<TargetView>,
    /// The same under swiftgate's first name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_resource: Option<TargetView>,
}

/// A policy as NetBird's API shows it: rule `sources`/`destinations` as group objects,
/// single ports in `ports` and ranges in `port_ranges`, a single peer or resource as
/// `sourceResource` / `destinationResource` (also under swiftgate's first names
/// `source_resource` / `destination_resource`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// Id.
    pub id: PolicyId,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Disabled policies are ignored.
    pub enabled: bool,
    /// Posture checks every source peer must pass.
    pub source_posture_checks: Vec<PostureCheckId>,
    /// The rules.
    pub rules: Vec<RuleView>,
}

impl PolicyView {
    /// The view of a policy.
    pub fn new(a: &Account, m: &Members, p: &Policy) -> Self {
        let target = |t: &Option<Target>| -> Option<TargetView> {
            t.as_ref().map(|t| match t {
                Target::Peer(id) => TargetView {
                    id: id.clone(),
                    kind: "peer".into(),
                },
                Target::Resource(id) => TargetView {
                    id: id.clone(),
                    kind: a
                        .resources
                        .get(id)
                        .map_or("resource", |r| r.address.kind().as_str())
                        .into(),
                },
            })
        };
        let groups = |ids: &[GroupId]| -> Vec<GroupMinimum> {
            ids.iter().map(|g| GroupView::minimum(a, m, g)).collect()
        };
        let rules = p
            .rules
            .iter()
            .map(|r| {
                let (singles, ranges): (Vec<&PortRange>, Vec<&PortRange>) =
                    r.ports.iter().partition(|p| p.is_single());
                RuleView {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    description: r.description.clone(),
                    enabled: r.enabled,
                    action: r.action,
                    protocol: r.protocol,
                    bidirectional: r.bidirectional,
                    ports: singles.iter().map(|p| p.to_string()).collect(),
                    port_ranges: ranges
                        .iter()
                        .map(|p| PortRangeView {
                            start: p.start,
                            end: p.end,
                        })
                        .collect(),
                    sources: groups(&r.sources),
                    destinations: groups(&r.destinations),
                    source_resource_nb: target(&r.source_resource),
                    source_resource: target(&r.source_resource),
                    destination_resource_nb: target(&r.destination_resource),
                    destination_resource: target(&r.destination_resource),
                }
            })
            .collect();
        PolicyView {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            enabled: p.enabled,
            source_posture_checks: p.source_posture_checks.clone(),
            rules,
        }
    }
}

/// A minimum kernel version as NetBird writes it for linux and windows.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MinKernelVersion {
    /// e.g. "5.10".
    pub min_kernel_version: String,
}

/// NetBird's `os_version_check`: linux and windows by kernel version, the others by OS
/// version; an OS not listed fails.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct OsVersionView {
    /// Minimum Linux kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux: Option<MinKernelVersion>,
    /// Minimum Windows kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<MinKernelVersion>,
    /// Minimum macOS version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub darwin: Option<MinVersionCheck>,
    /// Minimum iOS version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ios: Option<MinVersionCheck>,
    /// Minimum Android version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub android: Option<MinVersionCheck>,
}

/// The checks of a posture check under NetBird's names; only those set are present.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ChecksView {
    /// Minimum agent version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nb_version_check: Option<MinVersionCheck>,
    /// Minimum OS versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version_check: Option<OsVersionView>,
    /// Local interface address ranges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_network_range_check: Option<NetworkRangeCheck>,
    /// Running processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_check: Option<ProcessCheck>,
}

/// A posture check as NetBird's API shows it: its checks under NetBird's names and shapes.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PostureCheckView {
    /// Id.
    pub id: PostureCheckId,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The checks.
    pub checks: ChecksView,
}

impl From<&PostureCheck> for PostureCheckView {
    fn from(p: &PostureCheck) -> Self {
        let c = &p.checks;
        let kernel = |v: &Option<String>| {
            v.as_ref().map(|v| MinKernelVersion {
                min_kernel_version: v.clone(),
            })
        };
        let version = |v: &Option<String>| {
            v.as_ref().map(|v| MinVersionCheck {
                min_version: v.clone(),
            })
        };
        PostureCheckView {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            checks: ChecksView {
                nb_version_check: c.client_version.clone(),
                os_version_check: c.os_version.as_ref().map(|os| OsVersionView {
                    linux: kernel(&os.linux),
                    windows: kernel(&os.windows),
                    darwin: version(&os.darwin),
                    ios: version(&os.ios),
                    android: version(&os.android),
                }),
                peer_network_range_check: c.peer_network_range.clone(),
                process_check: c.process.clone(),
            },
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
