//! The account: every entity of one tenant, its serial, lookups by id or name, and the shared
//! validation helpers the operations use. Operations live in the sibling `ops_*` modules.

/// The maps of an account: persistent (structure-sharing) ordered maps, so copying an account
/// for a change costs nothing and comparing two versions visits only what differs.
pub type Map<K, V> = imbl::OrdMap<K, V>;
use std::net::Ipv6Addr;

use ipnet::Ipv4Net;

use serde::{Deserialize, Serialize};

use super::error::{ModelError, ModelResult, invalid};
use super::ids::{random_overlay_v4, random_overlay_v6};
use super::ports::Protocol;
use super::types::*;

/// Everything one tenant has. Each operation validates the whole request first and changes
/// nothing when it fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Account id.
    pub id: String,
    /// Increases with every change; network maps carry it.
    pub serial: u64,
    /// Settings.
    pub settings: Settings,
    /// Peers by id.
    pub peers: Map<PeerId, Peer>,
    /// Groups by id (the built-in All included).
    pub groups: Map<GroupId, Group>,
    /// Networks by id.
    pub networks: Map<NetworkId, Network>,
    /// Resources by id.
    pub resources: Map<ResourceId, Resource>,
    /// Routers by id.
    pub routers: Map<RouterId, Router>,
    /// Policies by id.
    pub policies: Map<PolicyId, Policy>,
    /// Setup keys by id.
    pub setup_keys: Map<SetupKeyId, SetupKey>,
    /// Posture checks by id.
    pub posture_checks: Map<PostureCheckId, PostureCheck>,
    /// Network routes (NetBird's `/api/routes`) by id.
    #[serde(default)]
    pub routes: Map<String, NetworkRoute>,
    /// Name server groups by id.
    #[serde(default)]
    pub nameserver_groups: Map<String, NameserverGroup>,
}

/// Peer or resource ids per group, in id order. Persistent: a copy shares everything with its
/// original, so the next version's index is this one plus what changed
/// ([`Members::advance`]).
pub type GroupIndex = imbl::HashMap<GroupId, imbl::OrdSet<String>>;

/// The members of the groups of one version of an account: an index of every group
/// ([`Account::members`], built once and then advanced with each change), or the account
/// itself, scanned per group (a view of one object when no index is at hand).
#[derive(Clone, Debug)]
pub enum Members {
    /// Every group's members.
    Index {
        /// Peer ids per group (every peer for All).
        peers: GroupIndex,
        /// Resource ids per group.
        resources: GroupIndex,
    },
    /// Scan this account per group.
    Scan(std::sync::Arc<Account>),
}

impl Members {
    /// Peer ids of a group (every peer for All).
    pub fn peer_ids(&self, group: &str) -> Vec<PeerId> {
        match self {
            Members::Index { peers, .. } => peers
                .get(group)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            Members::Scan(a) => a.group_peer_ids(group),
        }
    }

    /// How many peers a group has.
    pub fn peer_count(&self, group: &str) -> usize {
        match self {
            Members::Index { peers, .. } => peers.get(group).map_or(0, imbl::OrdSet::len),
            Members::Scan(a) => a
                .peers
                .values()
                .filter(|p| a.peer_in_group(p, group))
                .count(),
        }
    }

    /// Resource ids of a group.
    pub fn resource_ids(&self, group: &str) -> Vec<ResourceId> {
        match self {
            Members::Index { resources, .. } => resources
                .get(group)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            Members::Scan(a) => a.group_resource_ids(group),
        }
    }

    /// How many resources a group has.
    pub fn resource_count(&self, group: &str) -> usize {
        match self {
            Members::Index { resources, .. } => resources.get(group).map_or(0, imbl::OrdSet::len),
            Members::Scan(a) => a
                .resources
                .values()
                .filter(|r| r.groups.iter().any(|g| g == group))
                .count(),
        }
    }

    /// The index of `next` from this index of `prev`: only the peers and resources that
    /// differ between the two are visited (the maps share everything else), so a change costs
    /// what it touched, not the account's size. `None` for [`Members::Scan`].
    pub fn advance(&self, prev: &Account, next: &Account) -> Option<Members> {
        let Members::Index { peers, resources } = self else {
            return None;
        };
        let (mut peers, mut resources) = (peers.clone(), resources.clone());
        let peer_groups = |p: &Peer| {
            std::iter::once(ALL_GROUP_ID.to_string())
                .chain(p.groups.iter().cloned())
                .collect::<Vec<_>>()
        };
        for d in prev.peers.diff(&next.peers) {
            let (id, before, after) = match d {
                imbl::ordmap::DiffItem::Add(id, p) => (id, vec![], peer_groups(p)),
                imbl::ordmap::DiffItem::Remove(id, p) => (id, peer_groups(p), vec![]),
                imbl::ordmap::DiffItem::Update { old, new } => {
                    (old.0, peer_groups(old.1), peer_groups(new.1))
                }
            };
            move_member(&mut peers, id, &before, &after);
        }
        for d in prev.resources.diff(&next.resources) {
            let (id, before, after) = match d {
                imbl::ordmap::DiffItem::Add(id, r) => (id, vec![], r.groups.clone()),
                imbl::ordmap::DiffItem::Remove(id, r) => (id, r.groups.clone(), vec![]),
                imbl::ordmap::DiffItem::Update { old, new } => {
                    (old.0, old.1.groups.clone(), new.1.groups.clone())
                }
            };
            move_member(&mut resources, id, &before, &after);
        }
        Some(Members::Index { peers, resources })
    }
}

/// Takes `id` out of the groups it left and into the groups it joined.
fn move_member(index: &mut GroupIndex, id: &str, before: &[GroupId], after: &[GroupId]) {
    for g in before.iter().filter(|g| !after.contains(g)) {
        if let Some(set) = index.get_mut(g) {
            set.remove(id);
            if set.is_empty() {
                index.remove(g);
            }
        }
    }
    for g in after.iter().filter(|g| !before.contains(g)) {
        index.entry(g.clone()).or_default().insert(id.to_string());
    }
}

/// Looks an entity up by id, then by its unique name.
macro_rules! resolver {
    ($fn_name:ident, $map:ident, $kind:literal) => {
        #[doc = concat!("The id of the ", $kind, " with this id or name.")]
        pub fn $fn_name(&self, key: &str) -> ModelResult<String> {
            if self.$map.contains_key(key) {
                return Ok(key.to_string());
            }
            self.$map
                .values()
                .find(|e| e.name == key)
                .map(|e| e.id.clone())
                .ok_or_else(|| ModelError::NotFound {
                    kind: $kind,
                    key: key.to_string(),
                })
        }
    };
}

impl Account {
    /// A new account: the built-in All group and the Default all-to-all policy; a random /16
    /// inside 100.64.0.0/10 and a random ULA /64 as its overlay, IPv6 on for All (as NetBird's
    /// new accounts).
    pub fn new(id: &str) -> Account {
        let settings = Settings {
            overlay_range: random_overlay_v4(),
            overlay_range_v6: Some(random_overlay_v6()),
            ipv6_enabled_groups: vec![ALL_GROUP_ID.into()],
            ..Settings::default()
        };
        let mut a = Account {
            id: id.to_string(),
            serial: 1,
            settings,
            peers: Map::new(),
            groups: Map::new(),
            networks: Map::new(),
            resources: Map::new(),
            routers: Map::new(),
            policies: Map::new(),
            setup_keys: Map::new(),
            posture_checks: Map::new(),
            routes: Map::new(),
            nameserver_groups: Map::new(),
        };
        a.groups.insert(
            ALL_GROUP_ID.into(),
            Group {
                id: ALL_GROUP_ID.into(),
                name: ALL_GROUP_NAME.into(),
                description: "Every peer".into(),
                built_in: true,
            },
        );
        let default = Policy {
            id: "pol-default".into(),
            name: DEFAULT_POLICY_NAME.into(),
            description: "Every peer may reach every other peer (onboarding aid; replace it \
                          with specific policies before production)"
                .into(),
            enabled: true,
            rules: vec![PolicyRule {
                id: "rule-default".into(),
                name: DEFAULT_POLICY_NAME.into(),
                description: String::new(),
                enabled: true,
                action: Action::Accept,
                protocol: Protocol::All,
                ports: vec![],
                bidirectional: true,
                sources: vec![ALL_GROUP_ID.into()],
                source_resource: None,
                destinations: vec![ALL_GROUP_ID.into()],
                destination_resource: None,
            }],
            source_posture_checks: vec![],
        };
        a.policies.insert(default.id.clone(), default);
        a
    }

    /// A peer's DNS name: `<dns label>.<dns domain>`.
    pub fn fqdn(&self, peer: &Peer) -> String {
        format!("{}.{}", peer.dns_label, self.settings.dns_domain)
    }

    /// The peer's IPv6 overlay address: `None` unless the account has a v6 range and the peer
    /// is in one of `ipv6_enabled_groups`. Derived, not allocated: the v6 range's network
    /// address with the peer's IPv4 address in the low 32 bits, so it is unique, stable, and
    /// follows group membership without bookkeeping (the range is at most a /64).
    pub fn peer_ipv6(&self, peer: &Peer) -> Option<Ipv6Addr> {
        let range = self.settings.overlay_range_v6?;
        let enabled = self
            .settings
            .ipv6_enabled_groups
            .iter()
            .any(|g| self.peer_in_group(peer, g));
        enabled
            .then(|| Ipv6Addr::from(u128::from(range.network()) | u128::from(u32::from(peer.ip))))
    }

    /// Brings settings stored by an older server up to date; true if anything changed (the
    /// caller stores it). An account without a v6 range gets a random one (IPv6 stays off:
    /// no enabled groups, as for NetBird accounts created before IPv6). An account still on
    /// the old default overlay, the whole 100.64.0.0/10, is narrowed to a /16 so agents stop
    /// routing the whole CGNAT range into the tunnel: without peers a random /16; with peers
    /// the /16 that holds every peer's address (addresses are kept); if they span several
    /// /16s the /10 stays.
    pub fn upgrade_legacy_settings(&mut self) -> bool {
        let mut changed = false;
        if self.settings.overlay_range_v6.is_none() {
            self.settings.overlay_range_v6 = Some(random_overlay_v6());
            changed = true;
        }
        let legacy: Ipv4Net = LEGACY_OVERLAY_RANGE.parse().expect("constant prefix");
        if self.settings.overlay_range == legacy {
            let narrowed = match self.peers.values().next() {
                None => Some(random_overlay_v4()),
                Some(first) => Ipv4Net::new(first.ip, 16)
                    .ok()
                    .map(|n| n.trunc())
                    .filter(|n| self.peers.values().all(|p| n.contains(&p.ip))),
            };
            if let Some(n) = narrowed {
                self.settings.overlay_range = n;
                changed = true;
            }
        }
        changed
    }

    resolver!(group_id, groups, "group");
    resolver!(peer_id, peers, "peer");
    resolver!(network_id, networks, "network");
    resolver!(resource_id, resources, "resource");
    resolver!(policy_id, policies, "policy");
    resolver!(setup_key_id, setup_keys, "setup key");
    resolver!(posture_check_id, posture_checks, "posture check");

    /// The router with this id (routers have no name).
    pub fn router_id(&self, key: &str) -> ModelResult<String> {
        if self.routers.contains_key(key) {
            Ok(key.to_string())
        } else {
            Err(ModelError::NotFound {
                kind: "router",
                key: key.to_string(),
            })
        }
    }

    /// The peer with this WireGuard public key.
    pub fn peer_by_key(&self, wg_pubkey: &str) -> Option<&Peer> {
        self.peers.values().find(|p| p.wg_pubkey == wg_pubkey)
    }

    /// Whether the peer is in the group (everyone is in All).
    pub fn peer_in_group(&self, peer: &Peer, group: &str) -> bool {
        group == ALL_GROUP_ID || peer.groups.iter().any(|g| g == group)
    }

    /// Peers of a group.
    pub fn group_peers(&self, group: &str) -> Vec<&Peer> {
        self.peers
            .values()
            .filter(|p| self.peer_in_group(p, group))
            .collect()
    }

    /// Every group's members, indexed once (views of many groups read it instead of scanning
    /// every peer and resource per group).
    pub fn members(&self) -> Members {
        let mut peers = GroupIndex::new();
        let mut resources = GroupIndex::new();
        for p in self.peers.values() {
            peers
                .entry(ALL_GROUP_ID.to_string())
                .or_default()
                .insert(p.id.clone());
            for g in &p.groups {
                peers.entry(g.clone()).or_default().insert(p.id.clone());
            }
        }
        for r in self.resources.values() {
            for g in &r.groups {
                resources.entry(g.clone()).or_default().insert(r.id.clone());
            }
        }
        Members::Index { peers, resources }
    }

    /// Resources of a group.
    pub fn group_resources(&self, group: &str) -> Vec<&Resource> {
        self.resources
            .values()
            .filter(|r| r.groups.iter().any(|g| g == group))
            .collect()
    }

    /// Group ids for a list of group ids or names, sorted and deduplicated. `field` names the
    /// request field in the error.
    pub(crate) fn resolve_groups(&self, field: &str, keys: &[String]) -> ModelResult<Vec<GroupId>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let id = self
                .group_id(k)
                .map_err(|_| invalid(format!("{field}: unknown group {k:?}")))?;
            out.push(id);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Like [`Self::resolve_groups`] for groups a member is put into: All is implicit for
    /// peers and not allowed for resources, so it is dropped (`allow_all`) or refused.
    pub(crate) fn resolve_member_groups(
        &self,
        field: &str,
        keys: &[String],
        allow_all: bool,
    ) -> ModelResult<Vec<GroupId>> {
        let mut ids = self.resolve_groups(field, keys)?;
        if ids.iter().any(|g| g == ALL_GROUP_ID) {
            if !allow_all {
                return Err(invalid(format!(
                    "{field}: the built-in group {ALL_GROUP_NAME:?} holds every peer and \
                     nothing else"
                )));
            }
            ids.retain(|g| g != ALL_GROUP_ID);
        }
        Ok(ids)
    }

    /// A named reference in a request field, mapped to `Invalid` (the thing named by the URL
    /// gives `NotFound` instead).
    pub(crate) fn resolve_field(&self, field: &str, r: ModelResult<String>) -> ModelResult<String> {
        r.map_err(|e| match e {
            ModelError::NotFound { kind, key } => {
                invalid(format!("{field}: unknown {kind} {key:?}"))
            }
            other => other,
        })
    }
}

/// A trimmed, non-empty name of at most 128 characters without control characters.
pub(crate) fn check_name(field: &str, s: &str) -> ModelResult<String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(invalid(format!("{field} is empty")));
    }
    if t.chars().count() > 128 {
        return Err(invalid(format!("{field} is longer than 128 characters")));
    }
    if t.chars().any(char::is_control) {
        return Err(invalid(format!("{field} contains control characters")));
    }
    Ok(t.to_string())
}

/// Refuses a name another entity (other than `except`) already has.
pub(crate) fn check_unique<'a, I>(
    kind: &str,
    name: &str,
    existing: I,
    except: Option<&str>,
) -> ModelResult<()>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    for (id, n) in existing {
        if n == name && Some(id) != except {
            return Err(ModelError::Conflict(format!(
                "a {kind} named {name:?} already exists"
            )));
        }
    }
    Ok(())
}
