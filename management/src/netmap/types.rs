//! The network map a peer receives, as plain Rust data (converted to NetBird's protobuf
//! `management.NetworkMap` by [`super::proto`]).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::model::{Action, PeerId, PolicyId, PortRange, Protocol, ResourceId};

/// Everything one peer needs to know: whom to connect to, what to route, what to allow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMap {
    /// The account serial this map was computed at; higher is newer.
    pub serial: u64,
    /// The peer's own settings.
    pub peer_config: PeerConfig,
    /// Peers to configure as WireGuard peers, sorted by id.
    pub remote_peers: Vec<RemotePeer>,
    /// Routes to resources (client side: via a router; router side: its own resources),
    /// sorted by id.
    pub routes: Vec<Route>,
    /// Peer ACL (input chain): traffic to and from this peer's overlay address.
    pub firewall_rules: Vec<FirewallRule>,
    /// Route ACL (forward chain) of a routing peer.
    pub route_firewall_rules: Vec<RouteFirewallRule>,
    /// DNS settings (placeholder: no name servers or zones are managed yet).
    pub dns: DnsConfig,
    /// Process posture checks the agent must answer (paths it reports in `meta.files`).
    pub checks: Vec<ClientCheck>,
}

/// The peer's own settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Overlay address with the overlay prefix length, e.g. `100.77.0.7/16`.
    pub address: Ipv4Net,
    /// IPv6 overlay address with the account's v6 prefix length (e.g. `fd..::6440:7/64`);
    /// only for a peer that has one and announces the IPv6Overlay capability.
    pub address_v6: Option<Ipv6Net>,
    /// `<dns label>.<dns domain>`.
    pub fqdn: String,
    /// False while the peer waits for approval (its map is then empty).
    pub approved: bool,
}

/// A peer this peer connects to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePeer {
    /// Its id.
    pub id: PeerId,
    /// Its name.
    pub name: String,
    /// Its WireGuard public key.
    pub wg_pubkey: String,
    /// Its overlay address as /32, and its v6 address as /128 when this peer receives IPv6
    /// data (routed prefixes are added by the agent's route manager).
    pub allowed_ips: Vec<IpNet>,
    /// Its SSH public key (authorized_keys form), empty if none.
    pub ssh_pubkey: String,
    /// Its DNS name.
    pub fqdn: String,
    /// Its agent version.
    pub agent_version: String,
}

/// What a route points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// An IPv4 prefix.
    Ipv4,
    /// An IPv6 prefix.
    Ipv6,
    /// Domains, resolved through the routing peer.
    Domain,
}

/// A route to one resource through one routing peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `<resource id>:<router peer id>` (`...-v6-default` for the ::/0 twin of a 0.0.0.0/0
    /// route).
    pub id: String,
    /// The Network the resource is in.
    pub network_id: String,
    /// HA group key: the resource name (routes with the same net_id are alternatives).
    pub net_id: String,
    /// The resource.
    pub resource_id: ResourceId,
    /// Destination prefix (host and subnet resources).
    pub network: Option<IpNet>,
    /// Domains (domain resources).
    pub domains: Vec<String>,
    /// Prefix family or domain.
    pub network_type: NetworkType,
    /// The routing peer.
    pub router_peer_id: PeerId,
    /// The routing peer's WireGuard public key.
    pub router_wg_pubkey: String,
    /// Lower is preferred.
    pub metric: u16,
    /// The routing peer masquerades this traffic.
    pub masquerade: bool,
    /// Keep routes (and a domain route's resolved addresses) installed across map updates;
    /// true for every route generated from a Networks resource, as NetBird's server sets it.
    pub keep_route: bool,
}

pub use swiftgate_rules::Direction;

/// One peer ACL rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FirewallRule {
    /// The remote side: a peer's overlay /32, or a LAN prefix for Site-to-VPN.
    pub peer_ip: IpNet,
    /// In or out.
    pub direction: Direction,
    /// Accept or drop.
    pub action: Action,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port or range; `None` = every port.
    pub port: Option<PortRange>,
    /// The policy it comes from.
    pub policy_id: PolicyId,
    /// The policy rule it comes from; sent as `FirewallRule.PolicyID`, as NetBird's server
    /// does (stable across policy updates, see `Account::update_policy`).
    pub rule_id: String,
}

/// One route ACL rule on a routing peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteFirewallRule {
    /// The route (`<resource id>:<this peer id>`) it belongs to.
    pub route_id: String,
    /// Allowed sources: overlay /32s of the source peers (a LAN prefix for Site-to-VPN).
    pub source_ranges: Vec<IpNet>,
    /// Destination prefix; `None` for domain resources (sent as the placeholder
    /// [`super::proto::DOMAIN_PLACEHOLDER`], as NetBird does).
    pub destination: Option<IpNet>,
    /// Domains of a domain resource.
    pub domains: Vec<String>,
    /// The rule belongs to a domain (DNS) route.
    pub is_dynamic: bool,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port or range; `None` = every port.
    pub port: Option<PortRange>,
    /// Accept or drop.
    pub action: Action,
    /// The policy it comes from; sent as `RouteFirewallRule.PolicyID` (NetBird's server puts
    /// the policy id here, and the rule id in peer ACL rules).
    pub policy_id: PolicyId,
}

/// The port of a routing peer's DNS forwarder (domain resources) when every peer of the
/// account understands it (NetBird 0.59.0 and later).
pub const DNS_FORWARDER_PORT: u16 = 22054;
/// The forwarder port older NetBird clients use (and every client when one peer is older).
pub const DNS_FORWARDER_PORT_OLD: u16 = 5353;
/// The first NetBird version that takes [`DNS_FORWARDER_PORT`].
pub const DNS_FORWARDER_PORT_SINCE: &str = "0.59.0";
/// TTL of the peer-name records (NetBird's).
pub const PEER_RECORD_TTL: u32 = 300;

/// A peer's DNS configuration, as NetBird's server fills `DNSConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Run the agent's DNS service: off for a peer in one of the DNS settings' disabled
    /// management groups (it then gets no records and no name server groups either).
    pub service_enable: bool,
    /// The account's DNS domain (peer names live under it).
    pub domain: String,
    /// The peer names this peer may look up: its own and those of the peers its map connects
    /// it to (NetBird sends no others), A, and AAAA where the peer receives IPv6.
    pub records: Vec<DnsRecord>,
    /// The enabled name server groups distributed to one of this peer's groups (leaving out
    /// those that name this peer's own address as a server).
    pub nameserver_groups: Vec<DnsNameservers>,
    /// Routing peers' DNS forwarder port: [`DNS_FORWARDER_PORT`] when every peer of the
    /// account is new enough, else [`DNS_FORWARDER_PORT_OLD`] (the same for every peer).
    pub forwarder_port: u16,
}

/// A peer name: `<label>.<domain>` (no trailing dot) and one of its addresses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsRecord {
    /// `<label>.<domain>`.
    pub name: String,
    /// An A record for an IPv4 address, AAAA for IPv6.
    pub addr: std::net::IpAddr,
}

/// A name server group as a peer gets it (no name or id: NetBird sends neither).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsNameservers {
    /// The servers.
    pub nameservers: Vec<crate::model::Nameserver>,
    /// The resolver of every name.
    pub primary: bool,
    /// The domains it resolves (when not primary).
    pub domains: Vec<String>,
    /// Add `domains` to the peer's search domains.
    pub search_domains_enabled: bool,
}

/// A process posture check the agent answers: the paths to report on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCheck {
    /// Executable paths for this peer's OS.
    pub files: Vec<String>,
}
