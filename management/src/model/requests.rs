//! What clients send to create or change things (the JSON bodies of the admin API). Fields
//! that name other objects take an id or a unique name. Unknown fields are refused so that a
//! typo does not silently drop a setting.

use serde::{Deserialize, Serialize};

use super::types::{MinVersionCheck, OsVersionCheck, PeerMeta, ProcessCheck};

/// Create or replace a group.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// If given, exactly these peers are in the group afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    /// If given, exactly these resources are in the group afterwards: ids or names, or
    /// NetBird's `{"id": ..., "type": ...}` objects.
    #[serde(
        default,
        deserialize_with = "ids_or_objects",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<IdRef>>)]
    pub resources: Option<Vec<String>>,
}

/// How a request may name another object: its id or name, or an object with its `id` (as
/// NetBird's answers carry them). Describes the API document; requests are read by
/// [`ids_or_objects`].
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a schema, never built
pub enum IdRef {
    /// An id or a unique name.
    Name(String),
    /// An object with an `id`; its other fields are not read.
    Object {
        /// The id (or name).
        id: String,
    },
}

/// [`ids_or_objects`] for a list that may be missing (empty).
fn ids_or_objects_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(ids_or_objects(d)?.unwrap_or_default())
}

/// A list of ids (or names) written as strings or as objects with an `id` (NetBird's
/// `Resource` and `PeerMinimum`); other fields of an object are not read.
fn ids_or_objects<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Text(String),
        Object { id: String },
    }
    Ok(Option::<Vec<Item>>::deserialize(d)?.map(|items| {
        items
            .into_iter()
            .map(|i| match i {
                Item::Text(t) | Item::Object { id: t } => t,
            })
            .collect()
    }))
}

/// Create or replace a Network.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInput {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Create or replace a resource (its Network comes from the URL on create).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceInput {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `10.10.0.5`, `10.10.0.5/32`, `10.10.0.0/16`, `grafana.berlin.internal`, `*.berlin.internal`.
    pub address: String,
    /// Resource groups (ids or names, or group objects).
    #[serde(default, deserialize_with = "ids_or_objects_vec")]
    #[schema(value_type = Vec<IdRef>)]
    pub groups: Vec<String>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Create or replace a router (its Network comes from the URL on create).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterInput {
    /// One routing peer (exclusive with `peer_groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Groups whose peers all route (ids or names, or group objects).
    #[serde(default, deserialize_with = "ids_or_objects_vec")]
    #[schema(value_type = Vec<IdRef>)]
    pub peer_groups: Vec<String>,
    /// 1..=9999, lower preferred; default 9999.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<i64>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<bool>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A port as a client may write it: `443`, `"443"`, `"8000-8080"` or `{"start":..,"end":..}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PortSpec {
    /// `443`.
    Number(i64),
    /// `"443"` or `"8000-8080"`.
    Text(String),
    /// `{"start": 8000, "end": 8080}`.
    Range {
        /// First port.
        start: i64,
        /// Last port.
        end: i64,
    },
}

/// A single peer or resource in a rule: `{"type": "peer"|"resource", "id": "<id or name>"}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetInput {
    /// `peer` or `resource` (`host`, `subnet`, `domain` are accepted as `resource`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Id or name.
    pub id: String,
}

/// One rule of a policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    /// On update: the id of the policy's rule this one replaces (it keeps that id). Without
    /// it, a rule keeps the id of the rule at its position. Ignored on create (new rules get
    /// new ids), as NetBird does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Defaults to the policy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `accept` (default) or `drop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `all` (default), `tcp`, `udp`, `icmp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Ports and ranges; none = every port.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// More ranges, NetBird style.
    #[serde(default)]
    pub port_ranges: Vec<PortSpec>,
    /// Also destinations -> sources.
    #[serde(default)]
    pub bidirectional: bool,
    /// Source groups (ids or names, or NetBird's group objects as its answers carry them).
    #[serde(
        default,
        alias = "source_groups",
        deserialize_with = "ids_or_objects_vec"
    )]
    #[schema(value_type = Vec<IdRef>)]
    pub sources: Vec<String>,
    /// A single source peer or resource (NetBird's `sourceResource`).
    #[serde(
        default,
        rename = "sourceResource",
        alias = "source_resource",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_resource: Option<TargetInput>,
    /// Destination groups (ids or names, or group objects).
    #[serde(
        default,
        alias = "destination_groups",
        deserialize_with = "ids_or_objects_vec"
    )]
    #[schema(value_type = Vec<IdRef>)]
    pub destinations: Vec<String>,
    /// A single destination peer or resource (NetBird's `destinationResource`).
    #[serde(
        default,
        rename = "destinationResource",
        alias = "destination_resource",
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_resource: Option<TargetInput>,
}

/// Create or replace a policy: either `rules`, or the fields of one rule at the top level (as
/// in the seeds' API example).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// Ignored: the URL names the policy (accepted because clients send back what they read).
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Posture checks (ids or names) source peers must pass.
    #[serde(default)]
    pub source_posture_checks: Vec<String>,
    /// The rules (exclusive with the top-level rule fields below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleInput>>,
    /// Single-rule form: action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Single-rule form: protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Single-rule form: ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortSpec>>,
    /// Single-rule form: port ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_ranges: Option<Vec<PortSpec>>,
    /// Single-rule form: bidirectional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bidirectional: Option<bool>,
    /// Single-rule form: source groups.
    #[serde(
        default,
        alias = "source_groups",
        deserialize_with = "ids_or_objects",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<IdRef>>)]
    pub sources: Option<Vec<String>>,
    /// Single-rule form: a single source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_resource: Option<TargetInput>,
    /// Single-rule form: destination groups.
    #[serde(
        default,
        alias = "destination_groups",
        deserialize_with = "ids_or_objects",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<IdRef>>)]
    pub destinations: Option<Vec<String>>,
    /// Single-rule form: a single destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_resource: Option<TargetInput>,
}

impl PolicyInput {
    /// Whether any top-level rule field is set.
    pub fn has_inline_rule(&self) -> bool {
        self.action.is_some()
            || self.protocol.is_some()
            || self.ports.is_some()
            || self.port_ranges.is_some()
            || self.bidirectional.is_some()
            || self.sources.is_some()
            || self.source_resource.is_some()
            || self.destinations.is_some()
            || self.destination_resource.is_some()
    }

    /// The rules, whichever form was used.
    pub fn rule_inputs(&self) -> Vec<RuleInput> {
        match &self.rules {
            Some(r) => r.clone(),
            None => vec![RuleInput {
                id: None,
                name: None,
                description: String::new(),
                enabled: None,
                action: self.action.clone(),
                protocol: self.protocol.clone(),
                ports: self.ports.clone().unwrap_or_default(),
                port_ranges: self.port_ranges.clone().unwrap_or_default(),
                bidirectional: self.bidirectional.unwrap_or(false),
                sources: self.sources.clone().unwrap_or_default(),
                source_resource: self.source_resource.clone(),
                destinations: self.destinations.clone().unwrap_or_default(),
                destination_resource: self.destination_resource.clone(),
            }],
        }
    }
}

/// Create a setup key.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupKeyInput {
    /// Unique name.
    pub name: String,
    /// `reusable` (default) or `one-off`.
    #[serde(
        default,
        rename = "type",
        alias = "kind",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<String>,
    /// Groups given to peers registered with the key.
    #[serde(default)]
    pub auto_groups: Vec<String>,
    /// Lifetime in seconds; default 30 days; 0 = never expires (NetBird's `expires_in`).
    #[serde(
        default,
        rename = "expires_in",
        alias = "expires_in_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_in_secs: Option<u64>,
    /// Most registrations; 0/absent = unlimited (reusable keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_limit: Option<u32>,
    /// Peers registered with it are ephemeral.
    #[serde(default)]
    pub ephemeral: bool,
    /// NetBird's extra DNS labels for peers registered with the key: not supported, so only
    /// `false` is accepted.
    #[serde(default)]
    pub allow_extra_dns_labels: bool,
}

/// Change a setup key (NetBird's `SetupKeyRequest`): only the fields given change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupKeyUpdate {
    /// Revoke it (a revoked key cannot be un-revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<bool>,
    /// Exactly these auto-groups afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_groups: Option<Vec<String>>,
}

/// Peer network range check as sent by clients.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkRangeInput {
    /// CIDRs.
    pub ranges: Vec<String>,
    /// `allow` (default) or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// The checks of a posture check as sent by clients, under NetBird's names
/// (`nb_version_check`, `os_version_check`, `peer_network_range_check`, `process_check`,
/// `geo_location_check`) or swiftgate's first ones (`client_version`, ...).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureChecksInput {
    /// Minimum agent version.
    #[serde(
        default,
        rename = "nb_version_check",
        alias = "client_version",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_version: Option<MinVersionCheck>,
    /// Minimum OS versions.
    #[serde(
        default,
        rename = "os_version_check",
        alias = "os_version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<OsVersionCheck>,
    /// Local network ranges.
    #[serde(
        default,
        rename = "peer_network_range_check",
        alias = "peer_network_range",
        skip_serializing_if = "Option::is_none"
    )]
    pub peer_network_range: Option<NetworkRangeInput>,
    /// Running processes.
    #[serde(
        default,
        rename = "process_check",
        alias = "process",
        skip_serializing_if = "Option::is_none"
    )]
    pub process: Option<ProcessCheck>,
    /// Refused: needs a GeoIP database this server does not have.
    #[serde(
        default,
        rename = "geo_location_check",
        alias = "geo_location",
        skip_serializing_if = "Option::is_none"
    )]
    pub geo_location: Option<serde_json::Value>,
}

/// Create or replace a posture check.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureCheckInput {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The checks.
    #[serde(default)]
    pub checks: PostureChecksInput,
}

/// Change a peer: only the fields given change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerUpdate {
    /// New unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Exactly these groups afterwards (All is implicit and may be listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Approve (true) or un-approve (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// NetBird's inverse of `approved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_required: Option<bool>,
    /// NetBird's SSH server switch: not supported, only `false` is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_enabled: Option<bool>,
    /// NetBird's login expiry: not supported, only `false` is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_expiration_enabled: Option<bool>,
    /// NetBird's inactivity expiry: not supported, only `false` is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_expiration_enabled: Option<bool>,
}

/// Register a peer by its WireGuard key with a setup key (what Login does).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterPeer {
    /// The setup key text.
    pub setup_key: String,
    /// WireGuard public key, base64.
    pub wg_pubkey: String,
    /// Name; defaults to `meta.hostname`, then to "peer".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the peer reports.
    #[serde(default)]
    pub meta: PeerMeta,
    /// SSH public key (authorized_keys form); empty if none.
    #[serde(default)]
    pub ssh_pubkey: String,
}

/// Change settings: only the fields given change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsInput {
    /// Overlay range inside 100.64.0.0/10; only while no peer is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_range: Option<String>,
    /// Require approval of new peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_approval_required: Option<bool>,
    /// Ephemeral peers' offline timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_offline_secs: Option<u64>,
    /// DNS domain of peer names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    /// IPv6 overlay range: a /64 or wider inside fc00::/7; only while no peer is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_range_v6: Option<String>,
    /// Groups (ids or names) whose peers get IPv6 addresses; `[]` turns IPv6 off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_enabled_groups: Option<Vec<String>>,
}

/// Create or replace a network route (NetBird's `RouteRequest`). Group fields take ids or
/// names.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteInput {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Route name, 1..=40 characters.
    pub network_id: String,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// One routing peer (id or name; exclusive with `peer_groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Groups whose peers route it.
    #[serde(default, deserialize_with = "ids_or_objects_vec")]
    #[schema(value_type = Vec<IdRef>)]
    pub peer_groups: Vec<String>,
    /// The prefix (exclusive with `domains`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The domains (exclusive with `network`), at most 32.
    #[serde(default)]
    pub domains: Vec<String>,
    /// 1..=9999; default 9999.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<i64>,
    /// Default false (NetBird's zero value).
    #[serde(default)]
    pub masquerade: bool,
    /// Distribution groups (at least one).
    #[serde(default, deserialize_with = "ids_or_objects_vec")]
    #[schema(value_type = Vec<IdRef>)]
    pub groups: Vec<String>,
    /// Keep resolved routes of domains.
    #[serde(default)]
    pub keep_route: bool,
    /// Groups policies must name for traffic through the route.
    #[serde(default, deserialize_with = "ids_or_objects_vec")]
    #[schema(value_type = Vec<IdRef>)]
    pub access_control_groups: Vec<String>,
    /// Exit nodes: clients apply it only when chosen.
    #[serde(default)]
    pub skip_auto_apply: bool,
    /// What NetBird's answers carry (`IPv4`, `IPv6`, `Domain`, any case); when sent it must
    /// agree with `network`/`domains`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_type: Option<String>,
    /// Ignored: the URL names the route (clients send back what they read).
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
}

/// One server of a name server group as sent by clients.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameserverInput {
    /// Address (brackets allowed for IPv6).
    pub ip: String,
    /// `udp` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_type: Option<String>,
    /// Default 53.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// Create or replace a name server group (NetBird's `NameserverGroupRequest`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameserverGroupInput {
    /// Unique name, 1..=40 characters.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// 1..=3 servers.
    pub nameservers: Vec<NameserverInput>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Peers of these groups use it (at least one).
    #[serde(default, deserialize_with = "ids_or_objects_vec")]
    #[schema(value_type = Vec<IdRef>)]
    pub groups: Vec<String>,
    /// The resolver for every name.
    #[serde(default)]
    pub primary: bool,
    /// The domains it resolves (required unless primary).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Add the domains to search domains (not with primary).
    #[serde(default)]
    pub search_domains_enabled: bool,
    /// Ignored: the URL names the group.
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
}
