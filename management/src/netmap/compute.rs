//! Network-map computation: a pure function of the account. [`Netmapper`] indexes an account
//! once (group members, routers per Network, posture verdicts) and then computes the map of
//! any peer; [`compute_network_map`] does both for one peer.
//!
//! Semantics (NetBird's Networks model):
//! - Only enabled policies and rules, enabled resources and routers, approved peers count.
//!   Source peers must pass every posture check of the policy.
//! - Peer to peer: a source peer gets an `Out` rule to each destination peer and sees it; a
//!   destination peer gets an `In` rule from each source peer and sees it. Bidirectional rules
//!   add the reverse. Drop rules give firewall rules but no visibility.
//! - Resources: a source peer of an accept rule gets a route to the resource through each of
//!   its Network's routers and sees those routers. A router gets a route for every resource of
//!   its Networks (with its metric and masquerade), and a route firewall rule per rule, resource
//!   and port whose sources are the source peers' overlay /32s; it sees those peers.
//! - Site-to-VPN (a resource as source): destination peers get an `In` rule from the
//!   resource's prefix and a route to it; the resource's routers get a route firewall rule from
//!   the prefix to each destination peer and see them.
//! - Site-to-Site (a resource as source, resources of other Networks as destinations): the
//!   source's routers get routes to the destination through its routers; the destination's
//!   routers get a route firewall rule from the source's prefix and a route back through the
//!   source's routers; bidirectional rules do both ways.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::types::*;
use crate::model::posture::{evaluate, process_path_for_os};
use crate::model::{
    ALL_GROUP_ID, Account, Action, GroupId, Peer, Policy, PolicyRule, PortRange, Protocol,
    Resource, ResourceAddress, Target,
};

/// A peer that routes a Network, with the router entry's settings.
#[derive(Clone, Copy)]
struct RouterPeer<'a> {
    peer: &'a Peer,
    metric: u16,
    masquerade: bool,
}

/// What a Site-to-Site rule adds to a router's map.
struct Site<'m, 'a> {
    routes: &'m mut BTreeMap<String, Route>,
    rfw: &'m mut Vec<RouteFirewallRule>,
    remote: &'m mut BTreeMap<&'a str, &'a Peer>,
}

/// An account indexed for network-map computation.
pub struct Netmapper<'a> {
    account: &'a Account,
    group_peers: HashMap<&'a str, Vec<&'a Peer>>,
    group_resources: HashMap<&'a str, Vec<&'a Resource>>,
    routers_by_network: HashMap<&'a str, Vec<RouterPeer<'a>>>,
    networks_by_router: HashMap<&'a str, Vec<(&'a str, RouterPeer<'a>)>>,
    resources_by_network: HashMap<&'a str, Vec<&'a Resource>>,
    posture_failing: HashMap<&'a str, HashSet<&'a str>>,
    policies: Vec<&'a Policy>,
    /// IPv6 overlay addresses of the peers that have one ([`Account::peer_ipv6`]).
    ipv6: HashMap<&'a str, Ipv6Addr>,
    /// Routing peers' DNS forwarder port, the same for every peer ([`forwarder_port`]).
    forwarder_port: u16,
}

/// The DNS forwarder port for an account, as NetBird's server decides it: the new port only
/// when every peer reports a NetBird version from [`DNS_FORWARDER_PORT_SINCE`] on (a
/// development build counts as new; a missing or unparsable version as old); the old one for
/// an account without peers.
fn forwarder_port(account: &Account) -> u16 {
    let new_enough = |v: &str| {
        let v = v.trim();
        if ["development", "dev-", "ci-"]
            .iter()
            .any(|p| v.starts_with(p))
        {
            return true;
        }
        crate::model::version::compare_versions(v, DNS_FORWARDER_PORT_SINCE)
            .is_some_and(|o| o.is_ge())
    };
    if !account.peers.is_empty()
        && account
            .peers
            .values()
            .all(|p| new_enough(&p.meta.client_version))
    {
        DNS_FORWARDER_PORT
    } else {
        DNS_FORWARDER_PORT_OLD
    }
}

/// The map of one peer (`None` if there is no such peer).
pub fn compute_network_map(account: &Account, peer_id: &str) -> Option<NetworkMap> {
    Netmapper::new(account).map_for(peer_id)
}

fn ports_of(rule: &PolicyRule) -> Vec<Option<PortRange>> {
    if rule.ports.is_empty() {
        vec![None]
    } else {
        rule.ports.iter().copied().map(Some).collect()
    }
}

fn host(peer: &Peer) -> IpNet {
    IpNet::from(IpAddr::V4(peer.ip))
}

/// `0.0.0.0/0` (an exit-node resource) gets a `::/0` twin on IPv6 routers, as NetBird does.
fn is_default_v4(n: &IpNet) -> bool {
    matches!(n, IpNet::V4(v) if v.prefix_len() == 0)
}

impl<'a> Netmapper<'a> {
    /// Indexes the account: O(peers x groups + resources + routers + posture checks x peers).
    pub fn new(account: &'a Account) -> Self {
        let mut group_peers: HashMap<&str, Vec<&Peer>> = HashMap::new();
        let approved: Vec<&Peer> = account.peers.values().filter(|p| p.approved).collect();
        for p in &approved {
            for g in &p.groups {
                group_peers.entry(g.as_str()).or_default().push(p);
            }
        }
        group_peers.insert(ALL_GROUP_ID, approved);

        let mut group_resources: HashMap<&str, Vec<&Resource>> = HashMap::new();
        let mut resources_by_network: HashMap<&str, Vec<&Resource>> = HashMap::new();
        for r in account.resources.values().filter(|r| r.enabled) {
            for g in &r.groups {
                group_resources.entry(g.as_str()).or_default().push(r);
            }
            resources_by_network
                .entry(r.network_id.as_str())
                .or_default()
                .push(r);
        }

        let mut routers_by_network: HashMap<&str, Vec<RouterPeer>> = HashMap::new();
        for rt in account.routers.values().filter(|r| r.enabled) {
            let mut peers: Vec<&Peer> = Vec::new();
            if let Some(p) = rt.peer.as_deref().and_then(|id| account.peers.get(id)) {
                peers.push(p);
            }
            for g in &rt.peer_groups {
                if let Some(ps) = group_peers.get(g.as_str()) {
                    peers.extend(ps.iter().copied());
                }
            }
            let list = routers_by_network
                .entry(rt.network_id.as_str())
                .or_default();
            for p in peers.into_iter().filter(|p| p.approved) {
                match list.iter_mut().find(|x| x.peer.id == p.id) {
                    // A peer in two router entries of one Network keeps the better metric.
                    Some(x) if rt.metric < x.metric => {
                        x.metric = rt.metric;
                        x.masquerade = rt.masquerade;
                    }
                    Some(_) => {}
                    None => list.push(RouterPeer {
                        peer: p,
                        metric: rt.metric,
                        masquerade: rt.masquerade,
                    }),
                }
            }
        }
        let mut networks_by_router: HashMap<&str, Vec<(&str, RouterPeer)>> = HashMap::new();
        for (net, list) in &routers_by_network {
            for rp in list {
                networks_by_router
                    .entry(rp.peer.id.as_str())
                    .or_default()
                    .push((net, *rp));
            }
        }

        let policies: Vec<&Policy> = account.policies.values().filter(|p| p.enabled).collect();
        let mut posture_failing: HashMap<&str, HashSet<&str>> = HashMap::new();
        for pol in &policies {
            for c in &pol.source_posture_checks {
                if posture_failing.contains_key(c.as_str()) {
                    continue;
                }
                let failing = match account.posture_checks.get(c) {
                    Some(pc) => account
                        .peers
                        .values()
                        .filter(|p| evaluate(&pc.checks, p).is_some())
                        .map(|p| p.id.as_str())
                        .collect(),
                    // A dangling reference fails everyone (cannot happen through the model).
                    None => account.peers.keys().map(String::as_str).collect(),
                };
                posture_failing.insert(c.as_str(), failing);
            }
        }

        let ipv6 = account
            .peers
            .values()
            .filter_map(|p| account.peer_ipv6(p).map(|a| (p.id.as_str(), a)))
            .collect();

        Netmapper {
            ipv6,
            forwarder_port: forwarder_port(account),
            account,
            group_peers,
            group_resources,
            routers_by_network,
            networks_by_router,
            resources_by_network,
            posture_failing,
            policies,
        }
    }

    fn passes(&self, peer: &Peer, policy: &Policy) -> bool {
        policy.source_posture_checks.iter().all(|c| {
            !self
                .posture_failing
                .get(c.as_str())
                .is_some_and(|f| f.contains(peer.id.as_str()))
        })
    }

    fn contains_peer(&self, groups: &[GroupId], target: &Option<Target>, p: &Peer) -> bool {
        match target {
            Some(Target::Peer(id)) => *id == p.id,
            Some(Target::Resource(_)) => false,
            None => groups.iter().any(|g| self.account.peer_in_group(p, g)),
        }
    }

    /// Approved peers of a rule side, deduplicated.
    fn side_peers(&self, groups: &[GroupId], target: &Option<Target>) -> Vec<&'a Peer> {
        match target {
            Some(Target::Peer(id)) => self
                .account
                .peers
                .get(id)
                .filter(|p| p.approved)
                .into_iter()
                .collect(),
            Some(Target::Resource(_)) => Vec::new(),
            None => {
                if let [g] = groups {
                    return self
                        .group_peers
                        .get(g.as_str())
                        .cloned()
                        .unwrap_or_default();
                }
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for g in groups {
                    for p in self.group_peers.get(g.as_str()).into_iter().flatten() {
                        if seen.insert(p.id.as_str()) {
                            out.push(*p);
                        }
                    }
                }
                out
            }
        }
    }

    /// Enabled resources of a rule's destination side, deduplicated.
    fn side_resources(&self, groups: &[GroupId], target: &Option<Target>) -> Vec<&'a Resource> {
        match target {
            Some(Target::Resource(id)) => self
                .account
                .resources
                .get(id)
                .filter(|r| r.enabled)
                .into_iter()
                .collect(),
            Some(Target::Peer(_)) => Vec::new(),
            None => {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for g in groups {
                    for r in self.group_resources.get(g.as_str()).into_iter().flatten() {
                        if seen.insert(r.id.as_str()) {
                            out.push(*r);
                        }
                    }
                }
                out
            }
        }
    }

    fn route(&self, r: &Resource, rp: &RouterPeer) -> Route {
        let (network, domains, network_type) = match &r.address {
            ResourceAddress::Host(ip) => (
                Some(IpNet::from(*ip)),
                vec![],
                if ip.is_ipv4() {
                    NetworkType::Ipv4
                } else {
                    NetworkType::Ipv6
                },
            ),
            ResourceAddress::Subnet(n) => (
                Some(*n),
                vec![],
                match n {
                    IpNet::V4(_) => NetworkType::Ipv4,
                    IpNet::V6(_) => NetworkType::Ipv6,
                },
            ),
            ResourceAddress::Domain(d) | ResourceAddress::WildcardDomain(d) => {
                (None, vec![d.clone()], NetworkType::Domain)
            }
        };
        Route {
            id: format!("{}:{}", r.id, rp.peer.id),
            network_id: r.network_id.clone(),
            net_id: r.name.clone(),
            resource_id: r.id.clone(),
            network,
            domains,
            network_type,
            router_peer_id: rp.peer.id.clone(),
            router_wg_pubkey: rp.peer.wg_pubkey.clone(),
            metric: rp.metric,
            masquerade: rp.masquerade,
            // NetBird's server keeps every route generated from a Networks resource.
            keep_route: true,
        }
    }

    /// Network routes (NetBird's `/api/routes`): a distribution peer gets the route through
    /// each of its routing peers (and them as remote peers); a routing peer serves it, with
    /// route rules admitting every distribution peer (no access-control groups) or what the
    /// policies towards the access-control groups allow.
    fn network_routes(
        &self,
        me: &'a Peer,
        routes: &mut BTreeMap<String, Route>,
        rfw: &mut Vec<RouteFirewallRule>,
        remote: &mut BTreeMap<&'a str, &'a Peer>,
    ) {
        let a = self.account;
        for r in a.routes.values().filter(|r| r.enabled) {
            let mut routers: Vec<&'a Peer> = Vec::new();
            if let Some(p) = r.peer.as_deref().and_then(|id| a.peers.get(id)) {
                routers.push(p);
            }
            for g in &r.peer_groups {
                for p in self.group_peers.get(g.as_str()).into_iter().flatten() {
                    if !routers.iter().any(|x| x.id == p.id) {
                        routers.push(p);
                    }
                }
            }
            routers.retain(|p| p.approved);
            let distribution = self.side_peers(&r.groups, &None);
            let (network_type, domains) = match r.network {
                Some(IpNet::V4(_)) => (NetworkType::Ipv4, vec![]),
                Some(IpNet::V6(_)) => (NetworkType::Ipv6, vec![]),
                None => (NetworkType::Domain, r.domains.clone()),
            };
            let route = |rp: &Peer| Route {
                id: format!("{}:{}", r.id, rp.id),
                network_id: r.id.clone(),
                net_id: r.network_id.clone(),
                resource_id: r.id.clone(),
                network: r.network,
                domains: domains.clone(),
                network_type,
                router_peer_id: rp.id.clone(),
                router_wg_pubkey: rp.wg_pubkey.clone(),
                metric: r.metric,
                masquerade: r.masquerade,
                keep_route: r.keep_route,
            };
            if routers.iter().any(|p| p.id == me.id) {
                let rt = route(me);
                let mut admit = |sources: Vec<&'a Peer>,
                                 protocol: Protocol,
                                 ports: &[Option<PortRange>],
                                 action: Action,
                                 policy_id: &str| {
                    let ranges: Vec<IpNet> = {
                        // Sources of the destination's family (a v6 prefix: their v6
                        // addresses).
                        let v6 = matches!(r.network, Some(IpNet::V6(_)));
                        let mut v: Vec<IpNet> = sources
                            .iter()
                            .filter(|p| p.id != me.id)
                            .filter_map(|p| if v6 { self.host6(p) } else { Some(host(p)) })
                            .collect();
                        v.sort();
                        v
                    };
                    if ranges.is_empty() {
                        return;
                    }
                    for port in ports {
                        rfw.push(RouteFirewallRule {
                            route_id: rt.id.clone(),
                            source_ranges: ranges.clone(),
                            destination: r.network,
                            domains: domains.clone(),
                            is_dynamic: r.network.is_none(),
                            protocol,
                            port: *port,
                            action,
                            policy_id: policy_id.to_string(),
                        });
                    }
                    if action == Action::Accept {
                        for p in sources.into_iter().filter(|p| p.id != me.id) {
                            remote.insert(&p.id, p);
                        }
                    }
                };
                if r.access_control_groups.is_empty() {
                    admit(
                        distribution.clone(),
                        Protocol::All,
                        &[None],
                        Action::Accept,
                        &r.id,
                    );
                } else {
                    for policy in &self.policies {
                        for rule in policy.rules.iter().filter(|x| x.enabled) {
                            if !rule
                                .destinations
                                .iter()
                                .any(|g| r.access_control_groups.contains(g))
                            {
                                continue;
                            }
                            let sources: Vec<&'a Peer> = self
                                .side_peers(&rule.sources, &rule.source_resource)
                                .into_iter()
                                .filter(|p| self.passes(p, policy))
                                .collect();
                            admit(
                                sources,
                                rule.protocol,
                                &ports_of(rule),
                                rule.action,
                                &policy.id,
                            );
                        }
                    }
                }
                routes.insert(rt.id.clone(), rt);
            } else if distribution.iter().any(|p| p.id == me.id) {
                for rp in &routers {
                    let rt = route(rp);
                    routes.insert(rt.id.clone(), rt);
                    remote.insert(&rp.id, rp);
                }
            }
        }
    }

    /// The peer's IPv6 overlay address as a /128, if it has one.
    fn host6(&self, p: &Peer) -> Option<IpNet> {
        self.ipv6
            .get(p.id.as_str())
            .map(|a| IpNet::from(IpAddr::V6(*a)))
    }

    /// Site-to-Site, one direction: hosts of LAN resource `src` open connections to resource
    /// `dst` of another Network. `src`'s routers get a route to `dst` through each of `dst`'s
    /// routers (so their LAN's traffic enters the tunnel); `dst`'s routers get a route rule
    /// from `src`'s prefix to `dst` and a route back to `src` through `src`'s routers (the
    /// tunnel accepts `src`'s addresses from them, and replies find their way). A router of
    /// both Networks forwards between its own LANs without the overlay.
    #[allow(clippy::too_many_arguments)]
    fn site_to_site(
        &self,
        me: &'a Peer,
        my_networks: &HashMap<&str, RouterPeer<'a>>,
        src: &'a Resource,
        dst: &'a Resource,
        rule: &PolicyRule,
        policy: &Policy,
        ports: &[Option<PortRange>],
        include_v6: bool,
        out: &mut Site<'_, 'a>,
    ) {
        let (Some(src_prefix), Some(dst_prefix)) = (src.address.prefix(), dst.address.prefix())
        else {
            return; // domain resources: not as Site-to-Site ends
        };
        let (src_net, dst_net) = (src.network_id.as_str(), dst.network_id.as_str());
        if src_net == dst_net || src_prefix.addr().is_ipv4() != dst_prefix.addr().is_ipv4() {
            return; // one LAN, or two families: nothing crosses the overlay
        }
        if src_prefix.addr().is_ipv6() && !include_v6 {
            return; // IPv6 data only for peers that receive it (as NetBird's routes)
        }
        let accept = rule.action == Action::Accept;
        let (serve_src, serve_dst) = (
            my_networks.contains_key(src_net),
            my_networks.contains_key(dst_net),
        );
        if serve_src && !serve_dst && accept {
            for rp in self.routers_by_network.get(dst_net).into_iter().flatten() {
                if rp.peer.id != me.id {
                    let route = self.route(dst, rp);
                    out.routes.insert(route.id.clone(), route);
                    out.remote.insert(&rp.peer.id, rp.peer);
                }
            }
        }
        if serve_dst {
            let route_id = format!("{}:{}", dst.id, me.id);
            for port in ports {
                out.rfw.push(RouteFirewallRule {
                    route_id: route_id.clone(),
                    source_ranges: vec![src_prefix],
                    destination: Some(dst_prefix),
                    domains: vec![],
                    is_dynamic: false,
                    protocol: rule.protocol,
                    port: *port,
                    action: rule.action,
                    policy_id: policy.id.clone(),
                });
            }
            if accept && !serve_src {
                for rp in self.routers_by_network.get(src_net).into_iter().flatten() {
                    if rp.peer.id != me.id {
                        let route = self.route(src, rp);
                        out.routes.insert(route.id.clone(), route);
                        out.remote.insert(&rp.peer.id, rp.peer);
                    }
                }
            }
        }
    }

    /// `me`'s DNS: service on unless one of its groups is a disabled management group; the
    /// names of `me` and of `peers` (those its map connects it to), AAAA only where `v6`;
    /// the enabled name server groups distributed to one of its groups, unless `me` is
    /// one of their servers (it would ask itself).
    fn dns<'p>(
        &self,
        me: &'p Peer,
        peers: impl Iterator<Item = &'p Peer>,
        v6: bool,
        base: DnsConfig,
    ) -> DnsConfig {
        let s = &self.account.settings;
        // (The All group holds every peer without being listed in each peer's groups.)
        let in_groups = |gs: &[GroupId]| {
            gs.iter()
                .any(|g| g == ALL_GROUP_ID || me.groups.contains(g))
        };
        if in_groups(&s.dns_disabled_management_groups) {
            return base;
        }
        let mut records: Vec<DnsRecord> = std::iter::once(me)
            .chain(peers)
            .flat_map(|p| {
                let name = self.account.fqdn(p);
                let v4 = DnsRecord {
                    name: name.clone(),
                    addr: IpAddr::V4(p.ip),
                };
                let v6 = self
                    .ipv6
                    .get(p.id.as_str())
                    .filter(|_| v6)
                    .map(|a| DnsRecord {
                        name,
                        addr: IpAddr::V6(*a),
                    });
                std::iter::once(v4).chain(v6)
            })
            .collect();
        records.sort();
        records.dedup();
        let mine = |n: &crate::model::Nameserver| {
            n.ip == IpAddr::V4(me.ip)
                || self
                    .ipv6
                    .get(me.id.as_str())
                    .is_some_and(|a| n.ip == IpAddr::V6(*a))
        };
        let nameserver_groups = self
            .account
            .nameserver_groups
            .values()
            .filter(|g| g.enabled && in_groups(&g.groups))
            .filter(|g| !g.nameservers.iter().any(mine))
            .map(|g| DnsNameservers {
                nameservers: g.nameservers.clone(),
                primary: g.primary,
                domains: g.domains.clone(),
                search_domains_enabled: g.search_domains_enabled,
            })
            .collect();
        DnsConfig {
            service_enable: true,
            records,
            nameserver_groups,
            ..base
        }
    }

    /// The network map of one peer; `None` if there is no such peer. Unapproved peers get a
    /// map with only their own settings.
    pub fn map_for(&self, peer_id: &str) -> Option<NetworkMap> {
        let a = self.account;
        let me = a.peers.get(peer_id)?;
        // NetBird sends IPv6 data only to a peer that has a v6 address and announces the
        // IPv6Overlay capability (without disableIPv6).
        let my_v6 = self
            .ipv6
            .get(me.id.as_str())
            .copied()
            .filter(|_| me.meta.supports_ipv6);
        let include_v6 = my_v6.is_some();
        let mut map = NetworkMap {
            serial: a.serial,
            peer_config: PeerConfig {
                address: Ipv4Net::new(me.ip, a.settings.overlay_range.prefix_len())
                    .unwrap_or_else(|_| Ipv4Net::from(me.ip)),
                address_v6: my_v6
                    .zip(a.settings.overlay_range_v6)
                    .and_then(|(addr, r)| Ipv6Net::new(addr, r.prefix_len()).ok()),
                fqdn: self.account.fqdn(me),
                approved: me.approved,
            },
            dns: DnsConfig {
                domain: a.settings.dns_domain.clone(),
                forwarder_port: self.forwarder_port,
                ..Default::default()
            },
            ..Default::default()
        };
        if !me.approved {
            return Some(map);
        }

        let my_networks: HashMap<&str, RouterPeer> = self
            .networks_by_router
            .get(me.id.as_str())
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let mut remote: BTreeMap<&str, &Peer> = BTreeMap::new();
        let mut fw: Vec<FirewallRule> = Vec::new();
        let mut routes: BTreeMap<String, Route> = BTreeMap::new();
        let mut rfw: Vec<RouteFirewallRule> = Vec::new();
        let mut client_checks: BTreeSet<&str> = BTreeSet::new();

        // A router serves every resource of its Networks.
        for (net, rp) in &my_networks {
            for r in self.resources_by_network.get(net).into_iter().flatten() {
                let route = self.route(r, rp);
                routes.insert(route.id.clone(), route);
            }
        }

        for policy in &self.policies {
            let me_passes = self.passes(me, policy);
            for rule in policy.rules.iter().filter(|r| r.enabled) {
                let accept = rule.action == Action::Accept;
                let ports = ports_of(rule);
                let me_src_member = self.contains_peer(&rule.sources, &rule.source_resource, me);
                if me_src_member {
                    client_checks.extend(policy.source_posture_checks.iter().map(String::as_str));
                }
                let me_src = me_src_member && me_passes;
                let me_dst = self.contains_peer(&rule.destinations, &rule.destination_resource, me);

                // Site-to-VPN: a LAN resource opens connections to peers.
                if let Some(Target::Resource(sr_id)) = &rule.source_resource {
                    let Some(sr) = a.resources.get(sr_id).filter(|r| r.enabled) else {
                        continue;
                    };
                    let Some(prefix) = sr.address.prefix() else {
                        continue;
                    };
                    let net = sr.network_id.as_str();
                    if my_networks.contains_key(net) {
                        let route_id = format!("{}:{}", sr.id, me.id);
                        for d in self.side_peers(&rule.destinations, &rule.destination_resource) {
                            if d.id == me.id {
                                continue;
                            }
                            for port in &ports {
                                rfw.push(RouteFirewallRule {
                                    route_id: route_id.clone(),
                                    source_ranges: vec![prefix],
                                    destination: Some(host(d)),
                                    domains: vec![],
                                    is_dynamic: false,
                                    protocol: rule.protocol,
                                    port: *port,
                                    action: rule.action,
                                    policy_id: policy.id.clone(),
                                });
                            }
                            if accept {
                                remote.insert(&d.id, d);
                            }
                        }
                    } else if me_dst {
                        for port in &ports {
                            fw.push(FirewallRule {
                                peer_ip: prefix,
                                direction: Direction::In,
                                action: rule.action,
                                protocol: rule.protocol,
                                port: *port,
                                policy_id: policy.id.clone(),
                                rule_id: rule.id.clone(),
                            });
                        }
                        if accept {
                            for rp in self.routers_by_network.get(net).into_iter().flatten() {
                                if rp.peer.id != me.id {
                                    let route = self.route(sr, rp);
                                    routes.insert(route.id.clone(), route);
                                    remote.insert(&rp.peer.id, rp.peer);
                                }
                            }
                        }
                    }
                    // Site-to-Site: the same LAN resource reaching resources of other
                    // Networks through their routers (both ways when bidirectional).
                    let dst_resources =
                        self.side_resources(&rule.destinations, &rule.destination_resource);
                    let mut site = Site {
                        routes: &mut routes,
                        rfw: &mut rfw,
                        remote: &mut remote,
                    };
                    for dr in &dst_resources {
                        let mut pairs = vec![(sr, *dr)];
                        if rule.bidirectional {
                            pairs.push((*dr, sr));
                        }
                        for (from, to) in pairs {
                            self.site_to_site(
                                me,
                                &my_networks,
                                from,
                                to,
                                rule,
                                policy,
                                &ports,
                                include_v6,
                                &mut site,
                            );
                        }
                    }
                    continue;
                }

                let mut sources: Option<Vec<&Peer>> = None;
                let mut get_sources = |this: &Self| -> Vec<&'a Peer> {
                    sources
                        .get_or_insert_with(|| {
                            this.side_peers(&rule.sources, &rule.source_resource)
                                .into_iter()
                                .filter(|p| p.id != me.id && this.passes(p, policy))
                                .collect()
                        })
                        .clone()
                };

                // Peer to peer.
                let mut push_fw = |peer: &Peer, direction: Direction| {
                    let v6 = self.host6(peer).filter(|_| include_v6);
                    for (peer_ip, port) in std::iter::once(host(peer))
                        .chain(v6)
                        .flat_map(|ip| ports.iter().map(move |p| (ip, p)))
                    {
                        fw.push(FirewallRule {
                            peer_ip,
                            direction,
                            action: rule.action,
                            protocol: rule.protocol,
                            port: *port,
                            policy_id: policy.id.clone(),
                            rule_id: rule.id.clone(),
                        });
                    }
                };
                if me_src {
                    for d in self.side_peers(&rule.destinations, &rule.destination_resource) {
                        if d.id == me.id {
                            continue;
                        }
                        push_fw(d, Direction::Out);
                        if rule.bidirectional {
                            push_fw(d, Direction::In);
                        }
                        if accept {
                            remote.insert(&d.id, d);
                        }
                    }
                }
                if me_dst {
                    for s in get_sources(self) {
                        push_fw(s, Direction::In);
                        if rule.bidirectional {
                            push_fw(s, Direction::Out);
                        }
                        if accept {
                            remote.insert(&s.id, s);
                        }
                    }
                }

                // Resources.
                if !me_src && my_networks.is_empty() {
                    continue;
                }
                // (v4 /32s, v6 /128s) of the source peers, sorted.
                let mut source_ranges: Option<(Vec<IpNet>, Vec<IpNet>)> = None;
                for r in self.side_resources(&rule.destinations, &rule.destination_resource) {
                    let net = r.network_id.as_str();
                    if my_networks.contains_key(net) {
                        let srcs = get_sources(self);
                        if srcs.is_empty() {
                            continue;
                        }
                        let (v4, v6) = source_ranges
                            .get_or_insert_with(|| {
                                let mut v4: Vec<IpNet> = srcs.iter().map(|p| host(p)).collect();
                                let mut v6: Vec<IpNet> =
                                    srcs.iter().filter_map(|p| self.host6(p)).collect();
                                v4.sort();
                                v6.sort();
                                (v4, v6)
                            })
                            .clone();
                        let route_id = format!("{}:{}", r.id, me.id);
                        let domains: Vec<String> =
                            r.address.domain().map(str::to_string).into_iter().collect();
                        // (route id, sources, destination) as NetBird's
                        // GenerateRouteFirewallRules: sources of the destination's family; a
                        // domain route or 0.0.0.0/0 gets a v6 twin for an IPv6 router (::/0
                        // with route id `<id>-v6-default`); v6 destinations only for one.
                        let mut variants: Vec<(String, Vec<IpNet>, Option<IpNet>)> = Vec::new();
                        let dest = r.address.prefix();
                        match dest {
                            Some(IpNet::V6(_)) => {
                                if include_v6 && !v6.is_empty() {
                                    variants.push((route_id.clone(), v6.clone(), dest));
                                }
                            }
                            _ => variants.push((route_id.clone(), v4, dest)),
                        }
                        if include_v6 && !v6.is_empty() {
                            match dest {
                                None => variants.push((route_id.clone(), v6, None)),
                                Some(d) if is_default_v4(&d) => variants.push((
                                    format!("{route_id}-v6-default"),
                                    v6,
                                    Some(IpNet::V6(Ipv6Net::default())),
                                )),
                                Some(_) => {}
                            }
                        }
                        for ((rid, sources, destination), port) in variants
                            .iter()
                            .flat_map(|v| ports.iter().map(move |p| (v, p)))
                        {
                            rfw.push(RouteFirewallRule {
                                route_id: rid.clone(),
                                source_ranges: sources.clone(),
                                destination: *destination,
                                is_dynamic: destination.is_none(),
                                domains: domains.clone(),
                                protocol: rule.protocol,
                                port: *port,
                                action: rule.action,
                                policy_id: policy.id.clone(),
                            });
                        }
                        if accept {
                            for s in srcs {
                                remote.insert(&s.id, s);
                            }
                        }
                    } else if me_src && accept {
                        for rp in self.routers_by_network.get(net).into_iter().flatten() {
                            if rp.peer.id == me.id {
                                continue;
                            }
                            let route = self.route(r, rp);
                            routes.insert(route.id.clone(), route);
                            remote.insert(&rp.peer.id, rp.peer);
                        }
                    }
                }
            }
        }

        self.network_routes(me, &mut routes, &mut rfw, &mut remote);

        map.dns = self.dns(me, remote.values().copied(), include_v6, map.dns);
        map.remote_peers = remote
            .into_values()
            .map(|p| RemotePeer {
                id: p.id.clone(),
                name: p.name.clone(),
                wg_pubkey: p.wg_pubkey.clone(),
                allowed_ips: std::iter::once(host(p))
                    .chain(self.host6(p).filter(|_| include_v6))
                    .collect(),
                fqdn: self.account.fqdn(p),
                ssh_pubkey: p.ssh_pubkey.clone(),
                agent_version: p.meta.client_version.clone(),
            })
            .collect();
        fw.sort();
        fw.dedup();
        map.firewall_rules = fw;
        rfw.sort();
        rfw.dedup();
        map.route_firewall_rules = rfw;
        // As NetBird's filterAndExpandRoutes: v6 routes only for a peer receiving IPv6 data,
        // which also gets a ::/0 twin of each 0.0.0.0/0 route (id `<id>-v6-default`, NetID
        // `<net id>-v6`).
        map.routes = routes
            .into_values()
            .filter(|r| include_v6 || r.network.is_none_or(|n| n.addr().is_ipv4()))
            .flat_map(|r| {
                let twin =
                    (include_v6 && r.network.as_ref().is_some_and(is_default_v4)).then(|| Route {
                        id: format!("{}-v6-default", r.id),
                        net_id: format!("{}-v6", r.net_id),
                        network: Some(IpNet::V6(Ipv6Net::default())),
                        network_type: NetworkType::Ipv6,
                        ..r.clone()
                    });
                std::iter::once(r).chain(twin)
            })
            .collect();
        map.checks = client_checks
            .into_iter()
            .filter_map(|id| a.posture_checks.get(id))
            .filter_map(|pc| pc.checks.process.as_ref())
            .map(|p| ClientCheck {
                files: p
                    .processes
                    .iter()
                    .filter_map(|s| process_path_for_os(s, &me.meta.os))
                    .map(str::to_string)
                    .collect(),
            })
            .filter(|c| !c.files.is_empty())
            .collect();
        Some(map)
    }
}
