//! Group operations: create, replace, delete; membership set from the group's side.

use super::account::{Account, check_name, check_unique};
use super::error::{ModelResult, conflict, invalid};
use super::ids::new_id;
use super::requests::GroupInput;
use super::types::*;

impl Account {
    /// Creates a group; `peers`/`resources` in the input become its members.
    pub fn create_group(&mut self, input: &GroupInput) -> ModelResult<Group> {
        let id = new_id("grp");
        self.put_group(&id, input)
    }

    /// Replaces a group's name and description, and its members where listed.
    pub fn update_group(&mut self, key: &str, input: &GroupInput) -> ModelResult<Group> {
        let id = self.group_id(key)?;
        if self.groups[&id].built_in {
            return Err(invalid(format!(
                "the built-in group {ALL_GROUP_NAME:?} cannot be changed"
            )));
        }
        self.put_group(&id, input)
    }

    fn put_group(&mut self, id: &str, input: &GroupInput) -> ModelResult<Group> {
        let name = check_name("name", &input.name)?;
        check_unique(
            "group",
            &name,
            self.groups
                .values()
                .map(|g| (g.id.as_str(), g.name.as_str())),
            Some(id),
        )?;
        let peers = match &input.peers {
            Some(keys) => {
                let mut v = Vec::new();
                for k in keys {
                    v.push(self.resolve_field("peers", self.peer_id(k))?);
                }
                Some(v)
            }
            None => None,
        };
        let resources = match &input.resources {
            Some(keys) => {
                let mut v = Vec::new();
                for k in keys {
                    v.push(self.resolve_field("resources", self.resource_id(k))?);
                }
                Some(v)
            }
            None => None,
        };
        // Valid: apply.
        let group = Group {
            id: id.to_string(),
            name,
            description: input.description.trim().to_string(),
            built_in: false,
        };
        self.groups.insert(id.to_string(), group.clone());
        // Only the members that change are touched (the maps share the rest).
        if let Some(peers) = peers {
            let change: Vec<PeerId> = self
                .peers
                .values()
                .filter(|p| p.groups.iter().any(|g| g == id) != peers.contains(&p.id))
                .map(|p| p.id.clone())
                .collect();
            for pid in change {
                if let Some(p) = self.peers.get_mut(&pid) {
                    set_member(&mut p.groups, id, peers.contains(&p.id));
                }
            }
        }
        if let Some(resources) = resources {
            let change: Vec<ResourceId> = self
                .resources
                .values()
                .filter(|r| r.groups.iter().any(|g| g == id) != resources.contains(&r.id))
                .map(|r| r.id.clone())
                .collect();
            for rid in change {
                if let Some(r) = self.resources.get_mut(&rid) {
                    set_member(&mut r.groups, id, resources.contains(&r.id));
                }
            }
        }
        Ok(group)
    }

    /// Deletes a group that no policy, router or setup key uses; peers and resources leave it.
    pub fn delete_group(&mut self, key: &str) -> ModelResult<Group> {
        let id = self.group_id(key)?;
        let group = self.groups[&id].clone();
        if group.built_in {
            return Err(invalid(format!(
                "the built-in group {ALL_GROUP_NAME:?} cannot be deleted"
            )));
        }
        for p in self.policies.values() {
            if p.rules
                .iter()
                .any(|r| r.sources.contains(&id) || r.destinations.contains(&id))
            {
                return Err(conflict(format!(
                    "group {:?} is used by policy {:?}",
                    group.name, p.name
                )));
            }
        }
        if self.settings.ipv6_enabled_groups.contains(&id) {
            return Err(conflict(format!(
                "group {:?} is in the settings' ipv6_enabled_groups",
                group.name
            )));
        }
        for r in self.routers.values() {
            if r.peer_groups.contains(&id) {
                let net = self
                    .networks
                    .get(&r.network_id)
                    .map(|n| n.name.as_str())
                    .unwrap_or("?");
                return Err(conflict(format!(
                    "group {:?} is a router group of network {net:?}",
                    group.name
                )));
            }
        }
        if let Some(why) = self.group_used_by_dns_or_routes(&id, &group.name) {
            return Err(conflict(why));
        }
        for k in self.setup_keys.values() {
            if k.auto_groups.contains(&id) {
                return Err(conflict(format!(
                    "group {:?} is an auto-group of setup key {:?}",
                    group.name, k.name
                )));
            }
        }
        self.groups.remove(&id);
        let members: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| p.groups.contains(&id))
            .map(|p| p.id.clone())
            .collect();
        for pid in members {
            if let Some(p) = self.peers.get_mut(&pid) {
                p.groups.retain(|g| g != &id);
            }
        }
        let members: Vec<ResourceId> = self
            .resources
            .values()
            .filter(|r| r.groups.contains(&id))
            .map(|r| r.id.clone())
            .collect();
        for rid in members {
            if let Some(r) = self.resources.get_mut(&rid) {
                r.groups.retain(|g| g != &id);
            }
        }
        Ok(group)
    }

    /// Ids of the peers in a group (All: every peer).
    pub fn group_peer_ids(&self, group: &str) -> Vec<PeerId> {
        self.group_peers(group)
            .into_iter()
            .map(|p| p.id.clone())
            .collect()
    }

    /// Ids of the resources in a group.
    pub fn group_resource_ids(&self, group: &str) -> Vec<ResourceId> {
        self.group_resources(group)
            .into_iter()
            .map(|r| r.id.clone())
            .collect()
    }
}

/// Adds or removes `group` in a sorted membership list.
pub(crate) fn set_member(groups: &mut Vec<GroupId>, group: &str, member: bool) {
    let pos = groups.binary_search_by(|g| g.as_str().cmp(group));
    match (pos, member) {
        (Err(i), true) => groups.insert(i, group.to_string()),
        (Ok(i), false) => {
            groups.remove(i);
        }
        _ => {}
    }
}
