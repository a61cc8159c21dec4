//! Network routes (NetBird's `/api/routes`, exit nodes included) and name server groups, with
//! NetBird's validation rules. How routes reach peers' maps is in `netmap`; name server groups
//! are kept and served, and reach the maps with DNS support.

use std::net::IpAddr;

use ipnet::IpNet;

use super::account::{Account, check_name, check_unique};
use super::error::{ModelError, ModelResult, invalid};
use super::ids::new_id;
use super::requests::{NameserverGroupInput, RouteInput};
use super::types::*;

/// Most domains one route may name (NetBird's).
pub const MAX_ROUTE_DOMAINS: usize = 32;

/// A domain name as routes and name server groups take it: labels of letters, digits and `-`,
/// optionally a leading `*.` where `wildcard`; lower-cased, without a trailing dot.
fn check_domain(field: &str, d: &str, wildcard: bool) -> ModelResult<String> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let body = match d.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        Some(_) => {
            return Err(invalid(format!(
                "{field}: {d:?}: wildcards are not allowed here"
            )));
        }
        None => d.as_str(),
    };
    let ok = !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(invalid(format!("{field}: {d:?} is not a domain name")));
    }
    Ok(d)
}

impl Account {
    fn groups_field(&self, field: &str, keys: &[String]) -> ModelResult<Vec<GroupId>> {
        let mut out = Vec::new();
        for k in keys {
            let id = self.resolve_field(field, self.group_id(k))?;
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn build_route(&self, id: &str, input: &RouteInput) -> ModelResult<NetworkRoute> {
        let network_id = input.network_id.trim();
        if network_id.is_empty() || network_id.chars().count() > 40 {
            return Err(invalid("network_id: 1 to 40 characters"));
        }
        let peer = match &input.peer {
            Some(p) if !p.is_empty() => Some(self.resolve_field("peer", self.peer_id(p))?),
            _ => None,
        };
        let peer_groups = self.groups_field("peer_groups", &input.peer_groups)?;
        let by_groups = !peer_groups.is_empty();
        if peer.is_some() == by_groups {
            return Err(invalid("give exactly one of peer and peer_groups"));
        }
        let network = match &input.network {
            Some(n) if !n.trim().is_empty() => {
                let net: IpNet = n
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("network: {n:?} is not a prefix")))?;
                Some(net.trunc())
            }
            _ => None,
        };
        let domains = input
            .domains
            .iter()
            .map(|d| check_domain("domains", d, true))
            .collect::<ModelResult<Vec<_>>>()?;
        let by_domains = !domains.is_empty();
        if network.is_some() == by_domains {
            return Err(invalid("give exactly one of network and domains"));
        }
        if domains.len() > MAX_ROUTE_DOMAINS {
            return Err(invalid(format!("domains: at most {MAX_ROUTE_DOMAINS}")));
        }
        if let Some(t) = &input.network_type {
            let want = match network {
                Some(IpNet::V4(_)) => "ipv4",
                Some(IpNet::V6(_)) => "ipv6",
                None => "domain",
            };
            if !t.eq_ignore_ascii_case(want) {
                return Err(invalid(format!(
                    "network_type: {t:?} does not match the route ({want})"
                )));
            }
        }
        let metric = input.metric.unwrap_or(9999);
        if !(1..=9999).contains(&metric) {
            return Err(invalid("metric: 1 to 9999"));
        }
        let groups = self.groups_field("groups", &input.groups)?;
        if groups.is_empty() {
            return Err(invalid("groups: give at least one distribution group"));
        }
        if input.skip_auto_apply {
            return Err(invalid(
                "skip_auto_apply: choosing exit nodes on clients is not supported yet; a route \
                 with it would be applied automatically",
            ));
        }
        let access_control_groups =
            self.groups_field("access_control_groups", &input.access_control_groups)?;
        // One peer routes one prefix or domain set once (NetBird's conflict check).
        for r in self.routes.values().filter(|r| r.id != id) {
            let same_target = r.network == network && r.domains == domains;
            let shared_router = (peer.is_some() && r.peer == peer)
                || r.peer_groups.iter().any(|g| peer_groups.contains(g));
            if same_target && shared_router && r.network_id == network_id {
                return Err(ModelError::Conflict(format!(
                    "route {:?} already routes this through the same routing peer",
                    r.network_id
                )));
            }
        }
        Ok(NetworkRoute {
            id: id.to_string(),
            description: input.description.trim().to_string(),
            network_id: network_id.to_string(),
            enabled: input.enabled.unwrap_or(true),
            peer,
            peer_groups,
            network,
            domains,
            metric: metric as u16,
            masquerade: input.masquerade,
            groups,
            keep_route: input.keep_route,
            access_control_groups,
            skip_auto_apply: input.skip_auto_apply,
        })
    }

    /// The id of the route with this id.
    pub fn route_id(&self, key: &str) -> ModelResult<String> {
        self.routes
            .contains_key(key)
            .then(|| key.to_string())
            .ok_or_else(|| ModelError::NotFound {
                kind: "route",
                key: key.to_string(),
            })
    }

    /// Creates a network route.
    pub fn create_route(&mut self, input: &RouteInput) -> ModelResult<NetworkRoute> {
        let r = self.build_route(&new_id("rte"), input)?;
        self.routes.insert(r.id.clone(), r.clone());
        Ok(r)
    }

    /// Replaces a network route.
    pub fn update_route(&mut self, key: &str, input: &RouteInput) -> ModelResult<NetworkRoute> {
        let id = self.route_id(key)?;
        let r = self.build_route(&id, input)?;
        self.routes.insert(id, r.clone());
        Ok(r)
    }

    /// Deletes a network route.
    pub fn delete_route(&mut self, key: &str) -> ModelResult<NetworkRoute> {
        let id = self.route_id(key)?;
        Ok(self.routes.remove(&id).expect("resolved above"))
    }

    fn build_nameserver_group(
        &self,
        id: &str,
        input: &NameserverGroupInput,
    ) -> ModelResult<NameserverGroup> {
        let name = check_name("name", &input.name)?;
        if name.chars().count() > 40 {
            return Err(invalid("name: at most 40 characters"));
        }
        check_unique(
            "name server group",
            &name,
            self.nameserver_groups
                .values()
                .map(|g| (g.id.as_str(), g.name.as_str())),
            Some(id),
        )?;
        if input.nameservers.is_empty() || input.nameservers.len() > 3 {
            return Err(invalid("nameservers: give 1 to 3 servers"));
        }
        let mut nameservers = Vec::new();
        for (i, ns) in input.nameservers.iter().enumerate() {
            let text = ns.ip.trim().trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = text.parse().map_err(|_| {
                invalid(format!(
                    "nameservers[{i}].ip: {:?} is not an address",
                    ns.ip
                ))
            })?;
            let ns_type = ns.ns_type.clone().unwrap_or_else(|| "udp".into());
            if ns_type != "udp" {
                return Err(invalid(format!(
                    "nameservers[{i}].ns_type: {ns_type:?}; only udp is supported"
                )));
            }
            let port = ns.port.unwrap_or(53);
            if !(1..=65535).contains(&port) {
                return Err(invalid(format!("nameservers[{i}].port: 1 to 65535")));
            }
            nameservers.push(Nameserver {
                ip,
                ns_type,
                port: port as u16,
            });
        }
        let groups = self.groups_field("groups", &input.groups)?;
        if groups.is_empty() {
            return Err(invalid("groups: give at least one group"));
        }
        let domains = input
            .domains
            .iter()
            .map(|d| check_domain("domains", d, false))
            .collect::<ModelResult<Vec<_>>>()?;
        if input.primary && (!domains.is_empty() || input.search_domains_enabled) {
            return Err(invalid(
                "a primary name server group takes no domains and no search domains",
            ));
        }
        if !input.primary && domains.is_empty() {
            return Err(invalid(
                "domains: a name server group that is not primary needs them",
            ));
        }
        Ok(NameserverGroup {
            id: id.to_string(),
            name,
            description: input.description.trim().to_string(),
            nameservers,
            enabled: input.enabled.unwrap_or(true),
            groups,
            primary: input.primary,
            domains,
            search_domains_enabled: input.search_domains_enabled,
        })
    }

    /// The id of the name server group with this id or name.
    pub fn nameserver_group_id(&self, key: &str) -> ModelResult<String> {
        if self.nameserver_groups.contains_key(key) {
            return Ok(key.to_string());
        }
        self.nameserver_groups
            .values()
            .find(|g| g.name == key)
            .map(|g| g.id.clone())
            .ok_or_else(|| ModelError::NotFound {
                kind: "name server group",
                key: key.to_string(),
            })
    }

    /// Creates a name server group.
    pub fn create_nameserver_group(
        &mut self,
        input: &NameserverGroupInput,
    ) -> ModelResult<NameserverGroup> {
        let g = self.build_nameserver_group(&new_id("nsg"), input)?;
        self.nameserver_groups.insert(g.id.clone(), g.clone());
        Ok(g)
    }

    /// Replaces a name server group.
    pub fn update_nameserver_group(
        &mut self,
        key: &str,
        input: &NameserverGroupInput,
    ) -> ModelResult<NameserverGroup> {
        let id = self.nameserver_group_id(key)?;
        let g = self.build_nameserver_group(&id, input)?;
        self.nameserver_groups.insert(id, g.clone());
        Ok(g)
    }

    /// Deletes a name server group.
    pub fn delete_nameserver_group(&mut self, key: &str) -> ModelResult<NameserverGroup> {
        let id = self.nameserver_group_id(key)?;
        Ok(self.nameserver_groups.remove(&id).expect("resolved above"))
    }

    /// Sets the groups whose peers get no DNS configuration.
    pub fn set_dns_disabled_groups(&mut self, groups: &[String]) -> ModelResult<Vec<GroupId>> {
        let ids = self.groups_field("disabled_management_groups", groups)?;
        self.settings.dns_disabled_management_groups = ids.clone();
        Ok(ids)
    }

    /// Why a group cannot be deleted because a route, a name server group or the DNS settings
    /// name it, if one does.
    pub(crate) fn group_used_by_dns_or_routes(&self, id: &str, name: &str) -> Option<String> {
        let has = |v: &[GroupId]| v.iter().any(|g| g == id);
        for r in self.routes.values() {
            if has(&r.groups) || has(&r.peer_groups) || has(&r.access_control_groups) {
                return Some(format!(
                    "group {name:?} is used by route {:?}",
                    r.network_id
                ));
            }
        }
        for g in self.nameserver_groups.values() {
            if has(&g.groups) {
                return Some(format!(
                    "group {name:?} is used by name server group {:?}",
                    g.name
                ));
            }
        }
        if has(&self.settings.dns_disabled_management_groups) {
            return Some(format!(
                "group {name:?} is in the DNS settings' disabled_management_groups"
            ));
        }
        None
    }

    /// Why a peer cannot be deleted because a route names it, if one does.
    pub(crate) fn peer_used_by_routes(&self, id: &str, name: &str) -> Option<String> {
        self.routes
            .values()
            .find(|r| r.peer.as_deref() == Some(id))
            .map(|r| {
                format!(
                    "peer {name:?} is the routing peer of route {:?}",
                    r.network_id
                )
            })
    }
}
