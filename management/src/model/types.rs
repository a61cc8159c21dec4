//! The stored entities of an account: peers, groups, Networks, resources, routers, policies,
//! setup keys, posture checks and settings. Plain data; the rules that keep them consistent
//! live in [`super::Account`]'s operations.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use super::ports::Action;
use super::ports::{PortRange, Protocol};

/// Id of a peer.
pub type PeerId = String;
/// Id of a group.
pub type GroupId = String;
/// Id of a Network.
pub type NetworkId = String;
/// Id of a resource.
pub type ResourceId = String;
/// Id of a router.
pub type RouterId = String;
/// Id of a policy.
pub type PolicyId = String;
/// Id of a setup key.
pub type SetupKeyId = String;
/// Id of a posture check.
pub type PostureCheckId = String;

/// Fixed id of the built-in group that contains every peer.
pub const ALL_GROUP_ID: &str = "grp-all";
/// Name of the built-in group that contains every peer.
pub const ALL_GROUP_NAME: &str = "All";
/// Name of the all-to-all policy a new account starts with.
pub const DEFAULT_POLICY_NAME: &str = "Default";
/// The overlay range every account had before accounts got a /16 of their own (and the one
/// of [`Settings::default`]); an account still on it is narrowed when loaded
/// ([`super::Account::upgrade_legacy_settings`]). A new account gets a random /16 inside it
/// ([`super::Account::new`]).
pub const LEGACY_OVERLAY_RANGE: &str = "100.64.0.0/10";
/// The range an IPv6 overlay range must lie in (RFC 4193 unique local addresses).
pub const ULA_RANGE: &str = "fc00::/7";
/// The range every overlay range must lie in (RFC 6598 shared address space).
pub const CGNAT_RANGE: &str = "100.64.0.0/10";
/// The longest an ephemeral peer may stay offline before it is removed: a year.
pub const MAX_EPHEMERAL_OFFLINE_SECS: u64 = 365 * 24 * 3600;
/// Lowest and highest router metric (lower is preferred), as NetBird.
pub const METRIC_RANGE: (u16, u16) = (1, 9999);

/// Account-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Settings {
    /// Overlay network peers get their addresses from; inside 100.64.0.0/10 (a random /16 for a
    /// new account). Peers get it as their interface prefix (`PeerConfig.address`).
    #[schema(value_type = String, example = "100.64.0.0/16")]
    pub overlay_range: Ipv4Net,
    /// New peers start unapproved and take part in nothing until an admin approves them.
    pub peer_approval_required: bool,
    /// Ephemeral peers are removed after being offline for this many seconds.
    pub ephemeral_offline_secs: u64,
    /// DNS domain of peer names (`<label>.<domain>`).
    pub dns_domain: String,
    /// IPv6 overlay network (a ULA /64, NetBird's per-account `NetV6`); `None` only in an
    /// account stored before IPv6 existed, until it is loaded once.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub overlay_range_v6: Option<Ipv6Net>,
    /// Groups whose peers get an IPv6 overlay address (NetBird's `IPv6EnabledGroups`); empty
    /// = IPv6 off. New accounts start with the All group; accounts stored before IPv6 existed
    /// start empty.
    #[serde(default)]
    pub ipv6_enabled_groups: Vec<GroupId>,
    /// Groups whose peers get no DNS configuration from the server (NetBird's
    /// `disabled_management_groups`).
    #[serde(default)]
    pub dns_disabled_management_groups: Vec<GroupId>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            overlay_range: LEGACY_OVERLAY_RANGE.parse().expect("constant prefix"),
            peer_approval_required: false,
            ephemeral_offline_secs: 600,
            dns_domain: "swiftgate.internal".into(),
            overlay_range_v6: None,
            ipv6_enabled_groups: Vec::new(),
            dns_disabled_management_groups: Vec::new(),
        }
    }
}

/// What a peer reports about itself (NetBird's `PeerSystemMeta`, the parts we use).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct PeerMeta {
    /// Host name; the default peer name.
    pub hostname: String,
    /// Runtime OS id: linux, windows, darwin, android, ios, freebsd.
    pub os: String,
    /// OS distribution name, e.g. "Ubuntu".
    pub os_name: String,
    /// OS version, e.g. "22.04".
    pub os_version: String,
    /// Kernel release, e.g. "6.1.0-13-amd64".
    pub kernel_version: String,
    /// Agent (client) version as NetBird's `netbirdVersion`, e.g. "0.45.0": for swiftgate
    /// agents the NetBird protocol level they implement. Minimum-version checks compare it.
    pub client_version: String,
    /// The agent's own version (`uiVersion`), e.g. "swiftgate/0.1.0"; shown, never compared.
    pub ui_version: String,
    /// Addresses of the peer's local interfaces (for network-range posture checks).
    #[schema(value_type = Vec<String>)]
    pub network_addresses: Vec<IpNet>,
    /// Answers to process posture checks.
    pub files: Vec<FileStatus>,
    /// The agent announces NetBird's `IPv6Overlay` capability and has not set `disableIPv6`:
    /// it receives IPv6 data (its v6 address, v6 allowed IPs and rules), as NetBird's
    /// `Peer.SupportsIPv6`.
    pub supports_ipv6: bool,
    /// Entries of its last network map the agent could not apply as sent (a swiftgate agent's
    /// extension of `PeerSystemMeta`; NetBird agents send none).
    pub map_refusals: Vec<MapRefusal>,
}

/// One network-map entry an agent did not apply as sent, as it reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct MapRefusal {
    /// Serial of the map.
    pub serial: u64,
    /// The map's object, e.g. "route `wiki`".
    pub object: String,
    /// What was wrong with it.
    pub reason: String,
    /// `skipped` (left out: it grants nothing) or `widened` (applied as a wider drop).
    pub effect: String,
}

/// One file/process the agent was asked about by a process posture check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct FileStatus {
    /// Path of the executable.
    pub path: String,
    /// The file exists.
    pub exists: bool,
    /// A process of that executable is running.
    pub process_running: bool,
}

/// A device running the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Peer {
    /// Id.
    pub id: PeerId,
    /// Unique display name.
    pub name: String,
    /// Unique DNS label (`<label>.<dns_domain>`).
    pub dns_label: String,
    /// WireGuard public key, base64.
    pub wg_pubkey: String,
    /// Overlay address.
    #[schema(value_type = String, format = Ipv4)]
    pub ip: Ipv4Addr,
    /// SSH public key (authorized_keys form) the agent sent at Login (`PeerKeys.sshPubKey`);
    /// empty if none. Other peers receive it in `RemotePeerConfig.sshConfig.sshPubKey`.
    #[serde(default)]
    pub ssh_pubkey: String,
    /// Groups the peer is in, sorted, without the built-in All (which holds every peer).
    pub groups: Vec<GroupId>,
    /// What the peer last reported.
    pub meta: PeerMeta,
    /// A Sync stream is open.
    pub connected: bool,
    /// Last time the peer was seen (unix seconds).
    pub last_seen_at: u64,
    /// Registration time (unix seconds).
    pub created_at: u64,
    /// Approved by an admin (or approval not required at registration).
    pub approved: bool,
    /// Removed automatically after being offline for `ephemeral_offline_secs`.
    pub ephemeral: bool,
    /// Setup key the peer registered with.
    pub setup_key_id: Option<SetupKeyId>,
}

/// A named set of peers and resources. Membership is stored on the members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Group {
    /// Id.
    pub id: GroupId,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The built-in All group: holds every peer, cannot be changed or removed.
    pub built_in: bool,
}

/// A container for the resources and routers of one environment (office LAN, VPC, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Network {
    /// Id.
    pub id: NetworkId,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// What a resource points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ResourceAddress {
    /// One address (shown as /32 or /128).
    Host(IpAddr),
    /// A CIDR without host bits.
    Subnet(IpNet),
    /// A domain name, e.g. `grafana.berlin.internal`.
    Domain(String),
    /// A wildcard domain, e.g. `*.berlin.internal` (stored with the `*.`).
    WildcardDomain(String),
}

/// The kind of a resource, derived from its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// One IP.
    Host,
    /// A CIDR.
    Subnet,
    /// A domain or wildcard domain.
    Domain,
}

impl ResourceKind {
    /// `host`, `subnet` or `domain`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Host => "host",
            ResourceKind::Subnet => "subnet",
            ResourceKind::Domain => "domain",
        }
    }
}

impl ResourceAddress {
    /// The kind of resource this address makes.
    pub fn kind(&self) -> ResourceKind {
        match self {
            ResourceAddress::Host(_) => ResourceKind::Host,
            ResourceAddress::Subnet(_) => ResourceKind::Subnet,
            ResourceAddress::Domain(_) | ResourceAddress::WildcardDomain(_) => ResourceKind::Domain,
        }
    }

    /// The routed prefix of a host or subnet resource.
    pub fn prefix(&self) -> Option<IpNet> {
        match self {
            ResourceAddress::Host(ip) => Some(IpNet::from(*ip)),
            ResourceAddress::Subnet(net) => Some(*net),
            _ => None,
        }
    }

    /// The domain of a domain resource (wildcards keep their `*.`).
    pub fn domain(&self) -> Option<&str> {
        match self {
            ResourceAddress::Domain(d) | ResourceAddress::WildcardDomain(d) => Some(d),
            _ => None,
        }
    }
}

impl fmt::Display for ResourceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceAddress::Host(ip) => write!(f, "{}", IpNet::from(*ip)),
            ResourceAddress::Subnet(net) => write!(f, "{net}"),
            ResourceAddress::Domain(d) | ResourceAddress::WildcardDomain(d) => f.write_str(d),
        }
    }
}

/// Why a text is not a resource address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing given.
    #[error("address is empty")]
    Empty,
    /// Not `address/length`.
    #[error("bad CIDR {0:?}: expected an address/prefix length")]
    BadCidr(String),
    /// A CIDR whose address has bits past the prefix.
    #[error("bad CIDR {text:?}: host bits set (did you mean {network}?)")]
    HostBits {
        /// As given.
        text: String,
        /// The network it probably means.
        network: IpNet,
    },
    /// Digits and dots that are no IP address.
    #[error("bad IP address {0:?}")]
    BadIp(String),
    /// A name that is no DNS name.
    #[error("bad {kind} {text:?}: {why}")]
    BadDomain {
        /// `domain` or `wildcard domain`.
        kind: &'static str,
        /// As given.
        text: String,
        /// What is wrong with it.
        why: DomainError,
    },
}

/// Why a name is not a DNS name swiftgate accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Over 253 characters.
    #[error("longer than 253 characters")]
    TooLong,
    /// One label only.
    #[error("needs at least two labels (e.g. host.internal)")]
    OneLabel,
    /// An empty label or one over 63 characters.
    #[error("each label must have 1 to 63 characters")]
    LabelLength,
    /// A character other than letters, digits and hyphens.
    #[error("label {0:?} may only hold letters, digits and '-' ('*' only as a leading '*.')")]
    LabelCharacters(String),
    /// A hyphen at either end of a label.
    #[error("label {0:?} starts or ends with '-'")]
    LabelHyphen(String),
}

impl FromStr for ResourceAddress {
    type Err = AddressError;

    /// Parses `10.0.0.5`, `10.0.0.5/32`, `10.0.0.0/16`, `host.example.internal` or
    /// `*.example.internal`. A CIDR with host bits set is refused.
    fn from_str(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(ResourceAddress::Host(ip));
        }
        if s.contains('/') {
            let net: IpNet = s
                .parse()
                .map_err(|_| AddressError::BadCidr(s.to_string()))?;
            if net.network() != net.addr() {
                return Err(AddressError::HostBits {
                    text: s.to_string(),
                    network: net.trunc(),
                });
            }
            return Ok(if net.prefix_len() == net.max_prefix_len() {
                ResourceAddress::Host(net.addr())
            } else {
                ResourceAddress::Subnet(net)
            });
        }
        if s.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(AddressError::BadIp(s.to_string()));
        }
        let lower = s.to_ascii_lowercase();
        let bad = |kind: &'static str| {
            move |why| AddressError::BadDomain {
                kind,
                text: s.to_string(),
                why,
            }
        };
        if let Some(rest) = lower.strip_prefix("*.") {
            validate_domain(rest).map_err(bad("wildcard domain"))?;
            Ok(ResourceAddress::WildcardDomain(lower))
        } else {
            validate_domain(&lower).map_err(bad("domain"))?;
            Ok(ResourceAddress::Domain(lower))
        }
    }
}

/// Checks a lower-case DNS name (no wildcard): labels of 1..=63 letters, digits and hyphens,
/// not starting or ending with a hyphen, at least two labels, at most 253 characters.
pub fn validate_domain(d: &str) -> Result<(), DomainError> {
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.len() > 253 {
        return Err(DomainError::TooLong);
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err(DomainError::OneLabel);
    }
    for l in labels {
        if l.is_empty() || l.len() > 63 {
            return Err(DomainError::LabelLength);
        }
        if !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(DomainError::LabelCharacters(l.to_string()));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(DomainError::LabelHyphen(l.to_string()));
        }
    }
    Ok(())
}

impl Serialize for ResourceAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Something reachable inside a Network: a host, a subnet, or a (wildcard) domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resource {
    /// Id.
    pub id: ResourceId,
    /// The Network it belongs to.
    pub network_id: NetworkId,
    /// Unique name (account-wide, so policies can name it).
    pub name: String,
    /// Free text.
    pub description: String,
    /// What it points at.
    #[schema(value_type = String)]
    pub address: ResourceAddress,
    /// Resource groups it is in, sorted.
    pub groups: Vec<GroupId>,
    /// Disabled resources are routed to nobody.
    pub enabled: bool,
}

/// A network route in NetBird's older form (`/api/routes`): a prefix (or domains) routed
/// through one peer or the peers of some groups, to the peers of the distribution `groups`.
/// Without `access_control_groups` every distribution peer may use it; with them, only what
/// the policies towards those groups allow (as NetBird). `0.0.0.0/0` makes an exit node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkRoute {
    /// Id.
    pub id: String,
    /// Free text.
    pub description: String,
    /// NetBird's route name (1..=40 characters); routes sharing it are one HA route.
    pub network_id: String,
    /// Disabled routes are not distributed.
    pub enabled: bool,
    /// One routing peer (exclusive with `peer_groups`).
    pub peer: Option<PeerId>,
    /// Groups whose peers all route it.
    pub peer_groups: Vec<GroupId>,
    /// The routed prefix (exclusive with `domains`).
    #[schema(value_type = Option<String>)]
    pub network: Option<IpNet>,
    /// The routed domains (exclusive with `network`).
    pub domains: Vec<String>,
    /// Priority: lower is preferred (1..=9999).
    pub metric: u16,
    /// Rewrite the source to the routing peer's LAN address.
    pub masquerade: bool,
    /// Distribution groups: their peers get the route.
    pub groups: Vec<GroupId>,
    /// Keep the resolved routes of a domain route when the domain stops resolving to them.
    pub keep_route: bool,
    /// Groups that policies must name as destination to allow traffic through the route.
    pub access_control_groups: Vec<GroupId>,
    /// Exit nodes: not applied by clients until chosen.
    pub skip_auto_apply: bool,
}

/// One upstream DNS server of a name server group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Nameserver {
    /// Address.
    #[schema(value_type = String)]
    pub ip: IpAddr,
    /// `udp` (NetBird's only type).
    pub ns_type: String,
    /// Port.
    pub port: u16,
}

/// DNS servers for the peers of some groups (NetBird's name server group): the primary
/// resolver, or the resolver of some domains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NameserverGroup {
    /// Id.
    pub id: String,
    /// Unique name (1..=40 characters).
    pub name: String,
    /// Free text.
    pub description: String,
    /// 1..=3 servers.
    pub nameservers: Vec<Nameserver>,
    /// Disabled groups are not distributed.
    pub enabled: bool,
    /// Peers of these groups use it.
    pub groups: Vec<GroupId>,
    /// The resolver for every name (then no `domains`).
    pub primary: bool,
    /// The domains it resolves (when not primary).
    pub domains: Vec<String>,
    /// Add `domains` to the peers' search domains.
    pub search_domains_enabled: bool,
}

/// A routing peer of a Network: one peer, or every peer of some groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Router {
    /// Id.
    pub id: RouterId,
    /// The Network it routes.
    pub network_id: NetworkId,
    /// The routing peer (exclusive with `peer_groups`).
    pub peer: Option<PeerId>,
    /// Groups whose peers all route (exclusive with `peer`); they share one metric.
    pub peer_groups: Vec<GroupId>,
    /// Priority among the Network's routers: lower is preferred (1..=9999).
    pub metric: u16,
    /// Rewrite the source of routed traffic to the router's LAN address.
    pub masquerade: bool,
    /// Disabled routers route nothing.
    pub enabled: bool,
}

/// A single peer or a single resource named by a rule instead of groups.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "lowercase")]
pub enum Target {
    /// One peer.
    Peer(PeerId),
    /// One resource.
    Resource(ResourceId),
}

/// One rule of a policy: sources -> destinations, protocol, ports, action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// Id (unique in the account).
    pub id: String,
    /// Name (defaults to the policy's).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Disabled rules are ignored.
    pub enabled: bool,
    /// Accept or drop.
    pub action: Action,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination ports and ranges; empty means every port. Only for tcp/udp.
    pub ports: Vec<PortRange>,
    /// Also allow destinations -> sources (peer-to-peer only).
    pub bidirectional: bool,
    /// Source groups (exclusive with `source_resource`).
    pub sources: Vec<GroupId>,
    /// A single source peer or resource (Site-to-VPN).
    pub source_resource: Option<Target>,
    /// Destination groups: their peers (peer ACL) and their resources (route ACL).
    pub destinations: Vec<GroupId>,
    /// A single destination peer or resource.
    pub destination_resource: Option<Target>,
}

/// An access policy: one or more rules, posture checks its source peers must pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Id.
    pub id: PolicyId,
    /// Unique name.
    pub name: String,
    /// Business justification, owner, ...
    pub description: String,
    /// Disabled policies are ignored.
    pub enabled: bool,
    /// The rules.
    pub rules: Vec<PolicyRule>,
    /// Posture checks every source peer must pass to count as a source.
    pub source_posture_checks: Vec<PostureCheckId>,
}

/// Reusable or one-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum SetupKeyKind {
    /// Any number of registrations (up to `usage_limit` if set).
    #[serde(rename = "reusable")]
    Reusable,
    /// One registration.
    #[serde(rename = "one-off")]
    OneOff,
}

/// A setup key type that is neither `reusable` nor `one-off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown setup key type {0:?}: use reusable or one-off")]
pub struct UnknownSetupKeyKind(pub String);

impl FromStr for SetupKeyKind {
    type Err = UnknownSetupKeyKind;
    fn from_str(s: &str) -> Result<Self, UnknownSetupKeyKind> {
        match s.to_ascii_lowercase().as_str() {
            "reusable" => Ok(SetupKeyKind::Reusable),
            "one-off" | "oneoff" | "one_off" => Ok(SetupKeyKind::OneOff),
            _ => Err(UnknownSetupKeyKind(s.to_string())),
        }
    }
}

/// A key that registers headless peers. Only its SHA-256 is stored; the key itself is shown
/// once, when created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupKey {
    /// Id.
    pub id: SetupKeyId,
    /// Unique name.
    pub name: String,
    /// Hex SHA-256 of the lower-case key text.
    pub key_hash: String,
    /// First characters of the key, to recognise it.
    pub key_prefix: String,
    /// Reusable or one-off.
    pub kind: SetupKeyKind,
    /// Groups given to peers registered with it.
    pub auto_groups: Vec<GroupId>,
    /// Creation time (unix seconds).
    pub created_at: u64,
    /// Expiry (unix seconds); `None` never expires.
    pub expires_at: Option<u64>,
    /// Most registrations allowed; 0 = unlimited (reusable keys).
    pub usage_limit: u32,
    /// Registrations so far.
    pub used_times: u32,
    /// Last registration (unix seconds).
    pub last_used_at: Option<u64>,
    /// Revoked keys register nobody.
    pub revoked: bool,
    /// Peers registered with it are ephemeral.
    pub ephemeral: bool,
    /// Last change through the API (unix seconds; 0 in keys stored before it was kept).
    #[serde(default)]
    pub updated_at: u64,
}

/// Minimum agent version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MinVersionCheck {
    /// e.g. "0.45.0".
    pub min_version: String,
}

/// Minimum OS versions. An OS not listed fails the check. For linux and windows the kernel
/// version is compared (as NetBird does); for darwin, ios and android the OS version. Each
/// may be written as a string (`"5.10"`) or as NetBird writes it (`{"min_kernel_version":
/// "5.10"}` for linux and windows, `{"min_version": "14.0"}` for the others).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OsVersionCheck {
    /// Minimum Linux kernel version.
    #[serde(deserialize_with = "min_version_text")]
    #[schema(value_type = Option<VersionRef>)]
    pub linux: Option<String>,
    /// Minimum Windows kernel version.
    #[serde(deserialize_with = "min_version_text")]
    #[schema(value_type = Option<VersionRef>)]
    pub windows: Option<String>,
    /// Minimum macOS version.
    #[serde(deserialize_with = "min_version_text")]
    #[schema(value_type = Option<VersionRef>)]
    pub darwin: Option<String>,
    /// Minimum iOS version.
    #[serde(deserialize_with = "min_version_text")]
    #[schema(value_type = Option<VersionRef>)]
    pub ios: Option<String>,
    /// Minimum Android version.
    #[serde(deserialize_with = "min_version_text")]
    #[schema(value_type = Option<VersionRef>)]
    pub android: Option<String>,
}

/// How a request may write a minimum version: as text or as NetBird's objects. Describes the
/// API document; requests are read by `min_version_text`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a schema, never built
pub enum VersionRef {
    /// `"5.10"`.
    Text(String),
    /// `{"min_version": "14.0"}`.
    Version {
        /// The version.
        min_version: String,
    },
    /// `{"min_kernel_version": "5.10"}`.
    Kernel {
        /// The version.
        min_kernel_version: String,
    },
}

/// A minimum version as a string or as NetBird's `{min_version}` / `{min_kernel_version}`.
fn min_version_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Text(String),
        Object {
            #[serde(alias = "min_kernel_version")]
            min_version: String,
        },
    }
    Ok(match Option::<Form>::deserialize(d)? {
        None => None,
        Some(Form::Text(t)) | Some(Form::Object { min_version: t }) => Some(t),
    })
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RangeAction {
    /// Pass only if some local address is in a range.
    Allow,
    /// Fail if some local address is in a range.
    Deny,
}

/// The peer's local interface addresses against a list of ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkRangeCheck {
    /// The ranges.
    #[schema(value_type = Vec<String>)]
    pub ranges: Vec<IpNet>,
    /// Allow or deny.
    pub action: RangeAction,
}

/// One process that must run; the path for the peer's OS is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSpec {
    /// Executable path on Linux.
    pub linux_path: Option<String>,
    /// Executable path on macOS.
    pub mac_path: Option<String>,
    /// Executable path on Windows.
    pub windows_path: Option<String>,
}

/// Processes that must be running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProcessCheck {
    /// The processes.
    pub processes: Vec<ProcessSpec>,
}

/// The checks of one posture check; a peer passes when it passes every check present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostureChecks {
    /// Minimum agent version.
    pub client_version: Option<MinVersionCheck>,
    /// Minimum OS versions.
    pub os_version: Option<OsVersionCheck>,
    /// Local interface address ranges.
    pub peer_network_range: Option<NetworkRangeCheck>,
    /// Running processes.
    pub process: Option<ProcessCheck>,
}

/// A named posture check, referenced by policies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostureCheck {
    /// Id.
    pub id: PostureCheckId,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The checks.
    pub checks: PostureChecks,
}
