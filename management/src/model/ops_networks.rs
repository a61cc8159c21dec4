//! Network, resource and router operations.

use ipnet::IpNet;

use super::account::{Account, check_name, check_unique};
use super::error::{ModelResult, conflict, invalid};
use super::ids::new_id;
use super::requests::{NetworkInput, ResourceInput, RouterInput};
use super::types::*;

/// Prefixes no agent can route to a resource: (range, what it is).
const UNROUTABLE: &[(&str, &str)] = &[
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
];

/// Whether two prefixes share an address (one contains the other).
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

impl Account {
    /// Refuses a resource prefix no agent can honour (issue 12 defect 3): one overlapping the
    /// account's overlay (v4 or v6; the agents' own addresses), inside multicast, loopback or
    /// link-local space, or the unspecified address as a host. `0.0.0.0/0` and `::/0` (exit
    /// nodes) are allowed: the agents' more specific overlay routes win over them. `field`
    /// names the request field.
    pub(crate) fn check_routable(&self, field: &str, prefix: &IpNet) -> ModelResult<()> {
        if prefix.prefix_len() == 0 {
            return Ok(());
        }
        let overlays = [
            Some(IpNet::V4(self.settings.overlay_range)),
            self.settings.overlay_range_v6.map(IpNet::V6),
        ];
        for o in overlays.into_iter().flatten() {
            if overlaps(prefix, &o) {
                return Err(invalid(format!(
                    "{field}: {prefix} overlaps the account's overlay range {o} (the peers' own \
                     addresses); a resource must be outside it"
                )));
            }
        }
        for (range, what) in UNROUTABLE {
            let r: IpNet = range.parse().expect("constant prefix");
            if r.contains(prefix) {
                return Err(invalid(format!(
                    "{field}: {prefix} is a {what} address ({range}), which no agent can route \
                     to a resource"
                )));
            }
        }
        if prefix.prefix_len() == prefix.max_prefix_len() && prefix.addr().is_unspecified() {
            return Err(invalid(format!(
                "{field}: {} is the unspecified address, not a host (use 0.0.0.0/0 or ::/0 \
                 for an exit node)",
                prefix.addr()
            )));
        }
        Ok(())
    }

    /// Creates a Network.
    pub fn create_network(&mut self, input: &NetworkInput) -> ModelResult<Network> {
        let id = new_id("net");
        self.put_network(&id, input)
    }

    /// Replaces a Network's name and description.
    pub fn update_network(&mut self, key: &str, input: &NetworkInput) -> ModelResult<Network> {
        let id = self.network_id(key)?;
        self.put_network(&id, input)
    }

    fn put_network(&mut self, id: &str, input: &NetworkInput) -> ModelResult<Network> {
        let name = check_name("name", &input.name)?;
        check_unique(
            "network",
            &name,
            self.networks
                .values()
                .map(|n| (n.id.as_str(), n.name.as_str())),
            Some(id),
        )?;
        let n = Network {
            id: id.to_string(),
            name,
            description: input.description.trim().to_string(),
        };
        self.networks.insert(id.to_string(), n.clone());
        Ok(n)
    }

    /// Deletes a Network with its resources and routers, unless a policy names one of its
    /// resources directly.
    pub fn delete_network(&mut self, key: &str) -> ModelResult<Network> {
        let id = self.network_id(key)?;
        let res: Vec<ResourceId> = self
            .resources
            .values()
            .filter(|r| r.network_id == id)
            .map(|r| r.id.clone())
            .collect();
        for r in &res {
            if let Some(why) = self.resource_in_use(r) {
                return Err(conflict(why));
            }
        }
        for r in &res {
            self.resources.remove(r);
        }
        let routers: Vec<RouterId> = self
            .routers
            .values()
            .filter(|r| r.network_id == id)
            .map(|r| r.id.clone())
            .collect();
        for r in routers {
            self.routers.remove(&r);
        }
        Ok(self.networks.remove(&id).expect("resolved above"))
    }

    fn resource_in_use(&self, id: &str) -> Option<String> {
        let target = Target::Resource(id.to_string());
        let name = &self.resources[id].name;
        self.policies.values().find_map(|p| {
            p.rules
                .iter()
                .any(|r| {
                    r.source_resource.as_ref() == Some(&target)
                        || r.destination_resource.as_ref() == Some(&target)
                })
                .then(|| format!("resource {name:?} is named by policy {:?}", p.name))
        })
    }

    /// Creates a resource in a Network.
    pub fn create_resource(
        &mut self,
        network_key: &str,
        input: &ResourceInput,
    ) -> ModelResult<Resource> {
        let network_id = self.network_id(network_key)?;
        let id = new_id("res");
        self.put_resource(&id, &network_id, input)
    }

    /// Replaces a resource (it stays in its Network).
    pub fn update_resource(&mut self, key: &str, input: &ResourceInput) -> ModelResult<Resource> {
        let id = self.resource_id(key)?;
        let network_id = self.resources[&id].network_id.clone();
        self.put_resource(&id, &network_id, input)
    }

    fn put_resource(
        &mut self,
        id: &str,
        network_id: &str,
        input: &ResourceInput,
    ) -> ModelResult<Resource> {
        let name = check_name("name", &input.name)?;
        check_unique(
            "resource",
            &name,
            self.resources
                .values()
                .map(|r| (r.id.as_str(), r.name.as_str())),
            Some(id),
        )?;
        let address: ResourceAddress = input
            .address
            .parse()
            .map_err(|e: AddressError| invalid(e.to_string()))?;
        if let Some(prefix) = address.prefix() {
            self.check_routable("address", &prefix)?;
        }
        let groups = self.resolve_member_groups("groups", &input.groups, false)?;
        if address.kind() == ResourceKind::Domain {
            let target = Target::Resource(id.to_string());
            if let Some(p) = self.policies.values().find(|p| {
                p.rules
                    .iter()
                    .any(|r| r.source_resource.as_ref() == Some(&target))
            }) {
                return Err(invalid(format!(
                    "address: policy {:?} uses this resource as a source, which a domain \
                     cannot be",
                    p.name
                )));
            }
        }
        let r = Resource {
            id: id.to_string(),
            network_id: network_id.to_string(),
            name,
            description: input.description.trim().to_string(),
            address,
            groups,
            enabled: input.enabled.unwrap_or(true),
        };
        self.resources.insert(id.to_string(), r.clone());
        Ok(r)
    }

    /// Deletes a resource no policy names directly.
    pub fn delete_resource(&mut self, key: &str) -> ModelResult<Resource> {
        let id = self.resource_id(key)?;
        if let Some(why) = self.resource_in_use(&id) {
            return Err(conflict(why));
        }
        Ok(self.resources.remove(&id).expect("resolved above"))
    }

    /// Adds a router to a Network.
    pub fn create_router(&mut self, network_key: &str, input: &RouterInput) -> ModelResult<Router> {
        let network_id = self.network_id(network_key)?;
        let id = new_id("rtr");
        self.put_router(&id, &network_id, input)
    }

    /// Replaces a router (it stays in its Network).
    pub fn update_router(&mut self, key: &str, input: &RouterInput) -> ModelResult<Router> {
        let id = self.router_id(key)?;
        let network_id = self.routers[&id].network_id.clone();
        self.put_router(&id, &network_id, input)
    }

    fn put_router(
        &mut self,
        id: &str,
        network_id: &str,
        input: &RouterInput,
    ) -> ModelResult<Router> {
        let peer = match input.peer.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => Some(self.resolve_field("peer", self.peer_id(p))?),
            _ => None,
        };
        let peer_groups = self.resolve_groups("peer_groups", &input.peer_groups)?;
        match (&peer, peer_groups.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "a router is either one peer or peer groups, not both",
                ));
            }
            (None, true) => return Err(invalid("a router needs a peer or peer_groups")),
            _ => {}
        }
        let metric = input.metric.unwrap_or(i64::from(METRIC_RANGE.1));
        if metric < i64::from(METRIC_RANGE.0) || metric > i64::from(METRIC_RANGE.1) {
            return Err(invalid(format!(
                "metric {metric} is outside {}..={}",
                METRIC_RANGE.0, METRIC_RANGE.1
            )));
        }
        for r in self.routers.values() {
            if r.id == id || r.network_id != network_id {
                continue;
            }
            if peer.is_some() && r.peer == peer {
                return Err(conflict(format!(
                    "peer {:?} already routes network {:?}",
                    self.peers[peer.as_deref().unwrap_or_default()].name,
                    self.networks[network_id].name
                )));
            }
            if !peer_groups.is_empty() && r.peer_groups == peer_groups {
                return Err(conflict(format!(
                    "these peer groups already route network {:?}",
                    self.networks[network_id].name
                )));
            }
        }
        let r = Router {
            id: id.to_string(),
            network_id: network_id.to_string(),
            peer,
            peer_groups,
            metric: metric as u16,
            masquerade: input.masquerade.unwrap_or(true),
            enabled: input.enabled.unwrap_or(true),
        };
        self.routers.insert(id.to_string(), r.clone());
        Ok(r)
    }

    /// Removes a router.
    pub fn delete_router(&mut self, key: &str) -> ModelResult<Router> {
        let id = self.router_id(key)?;
        Ok(self.routers.remove(&id).expect("resolved above"))
    }
}
