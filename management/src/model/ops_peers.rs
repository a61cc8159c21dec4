//! Peer operations: registration with a setup key, login of a known key, changes by the admin
//! (name, groups, approval), connection state, ephemeral clean-up, deletion; overlay address
//! allocation.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use base64::Engine as _;

use super::account::{Account, check_name, check_unique};
use super::error::{ModelError, ModelResult, conflict, invalid};
use super::ids::{hash_setup_key, new_id};
use super::requests::{PeerUpdate, RegisterPeer};
use super::types::*;

/// Checks a WireGuard public key: standard base64 of 32 bytes.
pub fn validate_wg_key(key: &str) -> ModelResult<()> {
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(b) if b.len() == 32 => Ok(()),
        _ => Err(invalid(format!(
            "wg_pubkey {key:?} is not a WireGuard public key (base64 of 32 bytes)"
        ))),
    }
}

impl SetupKey {
    /// Why this key cannot register a peer now; `None` if it can.
    pub fn unusable_reason(&self, now: u64) -> Option<String> {
        if self.revoked {
            return Some(format!("setup key {:?} is revoked", self.name));
        }
        if let Some(exp) = self.expires_at
            && now >= exp
        {
            return Some(format!("setup key {:?} has expired", self.name));
        }
        if self.kind == SetupKeyKind::OneOff && self.used_times >= 1 {
            return Some(format!(
                "setup key {:?} is one-off and was already used",
                self.name
            ));
        }
        if self.usage_limit > 0 && self.used_times >= self.usage_limit {
            return Some(format!(
                "setup key {:?} reached its usage limit of {}",
                self.name, self.usage_limit
            ));
        }
        None
    }

    /// Whether the key can register a peer now.
    pub fn is_valid(&self, now: u64) -> bool {
        self.unusable_reason(now).is_none()
    }
}

/// Longest SSH public key accepted (an RSA-16384 key in authorized_keys form is about 2.8 KB).
const MAX_SSH_KEY_LEN: usize = 8192;

/// A trimmed SSH public key (authorized_keys form, one line); empty is allowed (no key).
pub fn check_ssh_key(key: &str) -> ModelResult<String> {
    let k = key.trim();
    if k.len() > MAX_SSH_KEY_LEN {
        return Err(invalid(format!(
            "ssh_pubkey: longer than {MAX_SSH_KEY_LEN} bytes"
        )));
    }
    if k.chars().any(char::is_control) {
        return Err(invalid(
            "ssh_pubkey: must be one line of authorized_keys text (no control characters)",
        ));
    }
    Ok(k.to_string())
}

/// A DNS label from a name: lower-case letters, digits and '-', at most 63 characters.
fn dns_label_of(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s: String = s.trim_matches('-').chars().take(63).collect();
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() { "peer".into() } else { s }
}

/// `base`, or `base-2`, `base-3`, ... whichever is not taken.
fn unique_variant(base: &str, taken: &HashSet<&str>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|c| !taken.contains(c.as_str()))
        .unwrap_or_else(|| base.to_string())
}

impl Account {
    /// The next free overlay address: after the highest one in use, wrapping around, never the
    /// network or broadcast address.
    pub fn allocate_ip(&self) -> ModelResult<Ipv4Addr> {
        let range = self.settings.overlay_range;
        let first = u32::from(range.network()) + 1;
        let last = u32::from(range.broadcast()).saturating_sub(1);
        if last < first {
            return Err(conflict(format!(
                "overlay range {range} has no host addresses"
            )));
        }
        let used: HashSet<u32> = self.peers.values().map(|p| u32::from(p.ip)).collect();
        let highest = used
            .iter()
            .copied()
            .filter(|a| (first..=last).contains(a))
            .max();
        let start = match highest {
            Some(h) if h < last => h + 1,
            _ => first,
        };
        let size = u64::from(last - first) + 1;
        let mut cand = start;
        for _ in 0..size {
            if !used.contains(&cand) {
                return Ok(Ipv4Addr::from(cand));
            }
            cand = if cand >= last { first } else { cand + 1 };
        }
        Err(conflict(format!("overlay range {range} is full")))
    }

    /// Registers a peer with a setup key (auto-groups applied, the key's use counted). A key
    /// already registered logs in instead and consumes nothing.
    pub fn register_peer(&mut self, req: &RegisterPeer, now: u64) -> ModelResult<Peer> {
        validate_wg_key(&req.wg_pubkey)?;
        let wg_pubkey = req.wg_pubkey.trim().to_string();
        if self.peer_by_key(&wg_pubkey).is_some() {
            return self.login_peer(&wg_pubkey, Some(&req.meta), now);
        }
        if req.setup_key.trim().is_empty() {
            return Err(ModelError::PeerNotAllowed(
                "peer is not registered and no setup key was given".into(),
            ));
        }
        let hash = hash_setup_key(&req.setup_key);
        let key = self
            .setup_keys
            .values()
            .find(|k| k.key_hash == hash)
            .cloned()
            .ok_or_else(|| ModelError::SetupKeyRejected("setup key is invalid".into()))?;
        if let Some(why) = key.unusable_reason(now) {
            return Err(ModelError::SetupKeyRejected(why));
        }
        let wanted = req
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| {
                if req.meta.hostname.trim().is_empty() {
                    "peer".into()
                } else {
                    req.meta.hostname.clone()
                }
            });
        let wanted = check_name("name", &wanted)?;
        let names: HashSet<&str> = self.peers.values().map(|p| p.name.as_str()).collect();
        let name = unique_variant(&wanted, &names);
        let labels: HashSet<&str> = self.peers.values().map(|p| p.dns_label.as_str()).collect();
        let dns_label = unique_variant(&dns_label_of(&name), &labels);
        let ip = self.allocate_ip()?;
        let ssh_pubkey = check_ssh_key(&req.ssh_pubkey)?;
        let peer = Peer {
            id: new_id("peer"),
            name,
            dns_label,
            wg_pubkey,
            ip,
            ssh_pubkey,
            groups: key
                .auto_groups
                .iter()
                .filter(|g| self.groups.contains_key(*g) && g.as_str() != ALL_GROUP_ID)
                .cloned()
                .collect(),
            meta: req.meta.clone(),
            connected: false,
            last_seen_at: now,
            created_at: now,
            approved: !self.settings.peer_approval_required,
            ephemeral: key.ephemeral,
            setup_key_id: Some(key.id.clone()),
        };
        if let Some(k) = self.setup_keys.get_mut(&key.id) {
            k.used_times += 1;
            k.last_used_at = Some(now);
        }
        self.peers.insert(peer.id.clone(), peer.clone());
        Ok(peer)
    }

    /// Login of a registered peer: refreshes its meta (if given) and last-seen time. Unknown
    /// keys are refused. Unapproved peers may log in; their network map is empty.
    pub fn login_peer(
        &mut self,
        wg_pubkey: &str,
        meta: Option<&PeerMeta>,
        now: u64,
    ) -> ModelResult<Peer> {
        let id = self
            .peer_by_key(wg_pubkey.trim())
            .map(|p| p.id.clone())
            .ok_or_else(|| ModelError::PeerNotAllowed("peer is not registered".into()))?;
        let p = self.peers.get_mut(&id).expect("looked up above");
        if let Some(m) = meta {
            p.meta = m.clone();
        }
        p.last_seen_at = now;
        Ok(p.clone())
    }

    /// Replaces what a peer reports about itself (posture inputs); unchanged meta changes
    /// nothing.
    pub fn update_peer_meta(&mut self, id: &str, meta: &PeerMeta) -> ModelResult<()> {
        let p = self.peers.get_mut(id).ok_or_else(|| ModelError::NotFound {
            kind: "peer",
            key: id.to_string(),
        })?;
        if p.meta != *meta {
            p.meta = meta.clone();
        }
        Ok(())
    }

    /// Stores the SSH public key a peer sent at Login (`PeerKeys.sshPubKey`); other peers
    /// receive it. An unchanged key changes nothing.
    pub fn set_peer_ssh_key(&mut self, id: &str, key: &str) -> ModelResult<()> {
        let key = check_ssh_key(key)?;
        let p = self.peers.get_mut(id).ok_or_else(|| ModelError::NotFound {
            kind: "peer",
            key: id.to_string(),
        })?;
        if p.ssh_pubkey != key {
            p.ssh_pubkey = key;
        }
        Ok(())
    }

    /// Marks a peer (dis)connected and seen now.
    pub fn set_peer_connected(&mut self, id: &str, connected: bool, now: u64) -> ModelResult<()> {
        let p = self.peers.get_mut(id).ok_or_else(|| ModelError::NotFound {
            kind: "peer",
            key: id.to_string(),
        })?;
        p.connected = connected;
        p.last_seen_at = now;
        Ok(())
    }

    /// Changes a peer's name, groups or approval.
    pub fn update_peer(&mut self, key: &str, upd: &PeerUpdate) -> ModelResult<Peer> {
        let id = self.peer_id(key)?;
        for (field, on) in [
            ("ssh_enabled", upd.ssh_enabled),
            ("login_expiration_enabled", upd.login_expiration_enabled),
            (
                "inactivity_expiration_enabled",
                upd.inactivity_expiration_enabled,
            ),
        ] {
            if on == Some(true) {
                return Err(invalid(format!(
                    "{field}: not supported by this server; only false is accepted"
                )));
            }
        }
        if let (Some(a), Some(r)) = (upd.approved, upd.approval_required)
            && a == r
        {
            return Err(invalid(
                "approved and approval_required contradict each other",
            ));
        }
        let upd = &PeerUpdate {
            approved: upd.approved.or(upd.approval_required.map(|r| !r)),
            ..upd.clone()
        };
        let name = match &upd.name {
            Some(n) => {
                let n = check_name("name", n)?;
                check_unique(
                    "peer",
                    &n,
                    self.peers
                        .values()
                        .map(|p| (p.id.as_str(), p.name.as_str())),
                    Some(&id),
                )?;
                Some(n)
            }
            None => None,
        };
        let groups = match &upd.groups {
            Some(g) => Some(self.resolve_member_groups("groups", g, true)?),
            None => None,
        };
        let label = name.as_ref().map(|n| {
            let labels: HashSet<&str> = self
                .peers
                .values()
                .filter(|p| p.id != id)
                .map(|p| p.dns_label.as_str())
                .collect();
            unique_variant(&dns_label_of(n), &labels)
        });
        let p = self.peers.get_mut(&id).expect("resolved above");
        if let Some(n) = name {
            p.name = n;
        }
        if let Some(l) = label {
            p.dns_label = l;
        }
        if let Some(g) = groups {
            p.groups = g;
        }
        if let Some(a) = upd.approved {
            p.approved = a;
        }
        Ok(p.clone())
    }

    /// Approves a peer.
    pub fn approve_peer(&mut self, key: &str) -> ModelResult<Peer> {
        self.update_peer(
            key,
            &PeerUpdate {
                approved: Some(true),
                ..Default::default()
            },
        )
    }

    /// Why a peer cannot be deleted: a router or a policy rule names it.
    fn peer_in_use(&self, id: &str) -> Option<String> {
        let name = &self.peers[id].name;
        if let Some(why) = self.peer_used_by_routes(id, name) {
            return Some(why);
        }
        for r in self.routers.values() {
            if r.peer.as_deref() == Some(id) {
                let net = self
                    .networks
                    .get(&r.network_id)
                    .map(|n| n.name.as_str())
                    .unwrap_or("?");
                return Some(format!("peer {name:?} is a router of network {net:?}"));
            }
        }
        let target = Target::Peer(id.to_string());
        for p in self.policies.values() {
            if p.rules.iter().any(|r| {
                r.source_resource.as_ref() == Some(&target)
                    || r.destination_resource.as_ref() == Some(&target)
            }) {
                return Some(format!("peer {name:?} is named by policy {:?}", p.name));
            }
        }
        None
    }

    /// Deletes a peer no router or policy names.
    pub fn delete_peer(&mut self, key: &str) -> ModelResult<Peer> {
        let id = self.peer_id(key)?;
        if let Some(why) = self.peer_in_use(&id) {
            return Err(conflict(why));
        }
        Ok(self.peers.remove(&id).expect("resolved above"))
    }

    /// Removes ephemeral peers that have been offline for the configured time and returns
    /// them. Ones a router or policy still names stay (and are logged by the caller).
    pub fn remove_stale_ephemeral(&mut self, now: u64) -> Vec<Peer> {
        let timeout = self.settings.ephemeral_offline_secs;
        let stale: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| {
                p.ephemeral && !p.connected && now >= p.last_seen_at.saturating_add(timeout)
            })
            .map(|p| p.id.clone())
            .filter(|id| self.peer_in_use(id).is_none())
            .collect();
        stale
            .into_iter()
            .filter_map(|id| self.peers.remove(&id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(dns_label_of("Alice's Laptop"), "alice-s-laptop");
        assert_eq!(dns_label_of("---"), "peer");
        let taken: HashSet<&str> = ["a", "a-2"].into_iter().collect();
        assert_eq!(unique_variant("a", &taken), "a-3");
    }

    #[test]
    fn wg_keys() {
        assert!(validate_wg_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_ok());
        assert!(validate_wg_key("short").is_err());
    }
}
