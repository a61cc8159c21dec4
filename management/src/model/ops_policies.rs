//! Policy, setup key, posture check and settings operations.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::account::{Account, check_name, check_unique};
use super::error::{ModelResult, conflict, invalid};
use super::ids::{hash_setup_key, new_id, new_setup_key};
use super::ports::{PortRange, Protocol, RuleError};
use super::requests::*;
use super::types::*;
use super::version::parse_version;

/// Default setup key lifetime: 30 days, as NetBird.
pub const DEFAULT_SETUP_KEY_LIFETIME_SECS: u64 = 30 * 24 * 3600;

fn port_of(field: &str, spec: &PortSpec) -> ModelResult<PortRange> {
    let r = match spec {
        PortSpec::Number(n) if *n < 0 => Err(format!("port {n} is negative")),
        PortSpec::Number(n) => PortRange::new(*n as u64, *n as u64).map_err(|e| e.to_string()),
        PortSpec::Text(s) => s.parse().map_err(|e: RuleError| e.to_string()),
        PortSpec::Range { start, end } if *start < 0 || *end < 0 => {
            Err(format!("port range {start}-{end} is negative"))
        }
        PortSpec::Range { start, end } => {
            PortRange::new(*start as u64, *end as u64).map_err(|e| e.to_string())
        }
    };
    r.map_err(|e| invalid(format!("{field}: {e}")))
}

impl Account {
    fn target_of(&self, field: &str, t: &TargetInput) -> ModelResult<Target> {
        match t.kind.to_ascii_lowercase().as_str() {
            "peer" => Ok(Target::Peer(
                self.resolve_field(field, self.peer_id(&t.id))?,
            )),
            "resource" | "host" | "subnet" | "domain" => Ok(Target::Resource(
                self.resolve_field(field, self.resource_id(&t.id))?,
            )),
            other => Err(invalid(format!(
                "{field}: unknown type {other:?}: use peer or resource"
            ))),
        }
    }

    fn build_rule(
        &self,
        prefix: &str,
        policy_name: &str,
        r: &RuleInput,
    ) -> ModelResult<PolicyRule> {
        let f = |name: &str| format!("{prefix}{name}");
        let action = match &r.action {
            Some(a) => a
                .parse()
                .map_err(|e| invalid(format!("{}: {e}", f("action"))))?,
            None => Action::Accept,
        };
        let protocol = match &r.protocol {
            Some(p) => p
                .parse()
                .map_err(|e| invalid(format!("{}: {e}", f("protocol"))))?,
            None => Protocol::All,
        };
        let mut ports = Vec::new();
        for (i, p) in r.ports.iter().enumerate() {
            ports.push(port_of(&f(&format!("ports[{i}]")), p)?);
        }
        for (i, p) in r.port_ranges.iter().enumerate() {
            ports.push(port_of(&f(&format!("port_ranges[{i}]")), p)?);
        }
        if !ports.is_empty() && !protocol.has_ports() {
            return Err(invalid(format!(
                "{}: ports are only allowed with tcp or udp, not {protocol}",
                f("ports")
            )));
        }
        ports.sort();
        ports.dedup();
        let sources = self.resolve_groups(&f("sources"), &r.sources)?;
        let destinations = self.resolve_groups(&f("destinations"), &r.destinations)?;
        let source_resource = match &r.source_resource {
            Some(t) => Some(self.target_of(&f("source_resource"), t)?),
            None => None,
        };
        let destination_resource = match &r.destination_resource {
            Some(t) => Some(self.target_of(&f("destination_resource"), t)?),
            None => None,
        };
        match (sources.is_empty(), &source_resource) {
            (false, Some(_)) => {
                return Err(invalid(format!(
                    "{}: give source groups or a source_resource, not both",
                    f("sources")
                )));
            }
            (true, None) => {
                return Err(invalid(format!(
                    "{}: no sources: give source groups or a source_resource",
                    f("sources")
                )));
            }
            _ => {}
        }
        match (destinations.is_empty(), &destination_resource) {
            (false, Some(_)) => {
                return Err(invalid(format!(
                    "{}: give destination groups or a destination_resource, not both",
                    f("destinations")
                )));
            }
            (true, None) => {
                return Err(invalid(format!(
                    "{}: no destinations: give destination groups or a destination_resource",
                    f("destinations")
                )));
            }
            _ => {}
        }
        if let Some(Target::Resource(id)) = &source_resource {
            let res = &self.resources[id];
            if res.address.kind() == ResourceKind::Domain {
                return Err(invalid(format!(
                    "{}: domain resource {:?} cannot be a source",
                    f("source_resource"),
                    res.name
                )));
            }
        }
        // Site-to-Site (a resource source) may be bidirectional: both LANs open connections.
        let resource_source = matches!(source_resource, Some(Target::Resource(_)));
        if r.bidirectional
            && !resource_source
            && matches!(destination_resource, Some(Target::Resource(_)))
        {
            return Err(invalid(format!(
                "{}: a rule to a resource cannot be bidirectional (resources do not open \
                 connections into the overlay)",
                f("bidirectional")
            )));
        }
        let name = match &r.name {
            Some(n) => check_name(&f("name"), n)?,
            None => policy_name.to_string(),
        };
        Ok(PolicyRule {
            id: new_id("rule"),
            name,
            description: r.description.trim().to_string(),
            enabled: r.enabled.unwrap_or(true),
            action,
            protocol,
            ports,
            bidirectional: r.bidirectional,
            sources,
            source_resource,
            destinations,
            destination_resource,
        })
    }

    fn build_policy(&self, id: &str, input: &PolicyInput) -> ModelResult<Policy> {
        let name = check_name("name", &input.name)?;
        check_unique(
            "policy",
            &name,
            self.policies
                .values()
                .map(|p| (p.id.as_str(), p.name.as_str())),
            Some(id),
        )?;
        if input.rules.is_some() && input.has_inline_rule() {
            return Err(invalid(
                "give either rules or the top-level rule fields (sources, destinations, \
                 protocol, ports, ...), not both",
            ));
        }
        let inputs = input.rule_inputs();
        if inputs.is_empty() {
            return Err(invalid("rules: a policy needs at least one rule"));
        }
        let prefix = |i: usize| {
            if input.rules.is_some() {
                format!("rules[{i}].")
            } else {
                String::new()
            }
        };
        let mut rules = Vec::with_capacity(inputs.len());
        for (i, r) in inputs.iter().enumerate() {
            rules.push(self.build_rule(&prefix(i), &name, r)?);
        }
        // Rule ids: on update, a rule named by id keeps it (NetBird's policy handler takes
        // rule ids from the request); a rule without one keeps the id of the old rule at its
        // position unless another rule claims it; everything else gets a new id.
        let old = self.policies.get(id);
        let mut claimed: Vec<&str> = Vec::new();
        for (i, r) in inputs.iter().enumerate() {
            let (Some(rid), Some(old)) = (r.id.as_deref().map(str::trim), old) else {
                continue;
            };
            if !old.rules.iter().any(|o| o.id == rid) {
                return Err(invalid(format!(
                    "{}id: policy {:?} has no rule {rid:?}",
                    prefix(i),
                    old.name
                )));
            }
            if claimed.contains(&rid) {
                return Err(invalid(format!(
                    "{}id: rule {rid:?} is given twice",
                    prefix(i)
                )));
            }
            claimed.push(rid);
        }
        for (i, (rule, r)) in rules.iter_mut().zip(&inputs).enumerate() {
            let Some(old) = old else { break };
            match r.id.as_deref().map(str::trim) {
                Some(rid) => rule.id = rid.to_string(),
                None => {
                    if let Some(o) = old.rules.get(i)
                        && !claimed.contains(&o.id.as_str())
                    {
                        rule.id = o.id.clone();
                    }
                }
            }
        }
        let mut checks = Vec::new();
        for c in &input.source_posture_checks {
            checks.push(self.resolve_field("source_posture_checks", self.posture_check_id(c))?);
        }
        checks.sort();
        checks.dedup();
        Ok(Policy {
            id: id.to_string(),
            name,
            description: input.description.trim().to_string(),
            enabled: input.enabled.unwrap_or(true),
            rules,
            source_posture_checks: checks,
        })
    }

    /// Creates a policy.
    pub fn create_policy(&mut self, input: &PolicyInput) -> ModelResult<Policy> {
        let p = self.build_policy(&new_id("pol"), input)?;
        self.policies.insert(p.id.clone(), p.clone());
        Ok(p)
    }

    /// Replaces a policy.
    pub fn update_policy(&mut self, key: &str, input: &PolicyInput) -> ModelResult<Policy> {
        let id = self.policy_id(key)?;
        let p = self.build_policy(&id, input)?;
        self.policies.insert(id, p.clone());
        Ok(p)
    }

    /// Enables or disables a policy.
    pub fn set_policy_enabled(&mut self, key: &str, enabled: bool) -> ModelResult<Policy> {
        let id = self.policy_id(key)?;
        let p = self.policies.get_mut(&id).expect("resolved above");
        p.enabled = enabled;
        Ok(p.clone())
    }

    /// Deletes a policy (the Default one too: then only other policies grant access).
    pub fn delete_policy(&mut self, key: &str) -> ModelResult<Policy> {
        let id = self.policy_id(key)?;
        Ok(self.policies.remove(&id).expect("resolved above"))
    }

    /// Creates a setup key; returns it with the key text, which is not stored and is shown
    /// only now.
    pub fn create_setup_key(
        &mut self,
        input: &SetupKeyInput,
        now: u64,
    ) -> ModelResult<(SetupKey, String)> {
        let name = check_name("name", &input.name)?;
        if input.allow_extra_dns_labels {
            return Err(invalid(
                "allow_extra_dns_labels: extra DNS labels are not supported by this server",
            ));
        }
        check_unique(
            "setup key",
            &name,
            self.setup_keys
                .values()
                .map(|k| (k.id.as_str(), k.name.as_str())),
            None,
        )?;
        let kind = match &input.kind {
            Some(k) => k.parse().map_err(|e| invalid(format!("kind: {e}")))?,
            None => SetupKeyKind::Reusable,
        };
        let usage_limit = input.usage_limit.unwrap_or(0);
        if kind == SetupKeyKind::OneOff && usage_limit > 1 {
            return Err(invalid(
                "usage_limit: a one-off key registers one peer; use a reusable key with a limit",
            ));
        }
        let auto_groups = self.resolve_member_groups("auto_groups", &input.auto_groups, true)?;
        let lifetime = input
            .expires_in_secs
            .unwrap_or(DEFAULT_SETUP_KEY_LIFETIME_SECS);
        let text = new_setup_key();
        let key = SetupKey {
            id: new_id("key"),
            name,
            key_hash: hash_setup_key(&text),
            key_prefix: text[..8].to_string(),
            kind,
            auto_groups,
            created_at: now,
            expires_at: (lifetime > 0).then(|| now.saturating_add(lifetime)),
            usage_limit,
            used_times: 0,
            last_used_at: None,
            revoked: false,
            ephemeral: input.ephemeral,
            updated_at: now,
        };
        self.setup_keys.insert(key.id.clone(), key.clone());
        Ok((key, text))
    }

    /// Revokes a setup key (peers registered with it stay).
    pub fn revoke_setup_key(&mut self, key: &str) -> ModelResult<SetupKey> {
        let id = self.setup_key_id(key)?;
        let k = self.setup_keys.get_mut(&id).expect("resolved above");
        k.revoked = true;
        Ok(k.clone())
    }

    /// Changes a setup key's revocation and auto-groups (NetBird's PUT); a revoked key stays
    /// revoked.
    pub fn update_setup_key(
        &mut self,
        key: &str,
        up: &SetupKeyUpdate,
        now: u64,
    ) -> ModelResult<SetupKey> {
        let id = self.setup_key_id(key)?;
        let auto_groups = match &up.auto_groups {
            Some(g) => Some(self.resolve_member_groups("auto_groups", g, true)?),
            None => None,
        };
        let k = self.setup_keys.get_mut(&id).expect("resolved above");
        if k.revoked && up.revoked == Some(false) {
            return Err(invalid("revoked: a revoked setup key cannot be un-revoked"));
        }
        let before = k.clone();
        if up.revoked == Some(true) {
            k.revoked = true;
        }
        if let Some(g) = auto_groups {
            k.auto_groups = g;
        }
        if *k != before {
            k.updated_at = now;
        }
        Ok(k.clone())
    }

    /// Deletes a setup key.
    pub fn delete_setup_key(&mut self, key: &str) -> ModelResult<SetupKey> {
        let id = self.setup_key_id(key)?;
        Ok(self.setup_keys.remove(&id).expect("resolved above"))
    }

    fn build_posture(&self, id: &str, input: &PostureCheckInput) -> ModelResult<PostureCheck> {
        let name = check_name("name", &input.name)?;
        check_unique(
            "posture check",
            &name,
            self.posture_checks
                .values()
                .map(|p| (p.id.as_str(), p.name.as_str())),
            Some(id),
        )?;
        let c = &input.checks;
        if c.geo_location.is_some() {
            return Err(invalid(
                "checks.geo_location: geo-location checks are not supported: they need a \
                 GeoIP database, which this server does not have",
            ));
        }
        let version = |field: &str, v: &str| -> ModelResult<()> {
            parse_version(v)
                .map(|_| ())
                .ok_or_else(|| invalid(format!("{field}: bad version {v:?}")))
        };
        if let Some(cv) = &c.client_version {
            version("checks.client_version.min_version", &cv.min_version)?;
        }
        if let Some(os) = &c.os_version {
            let all = [
                ("linux", &os.linux),
                ("windows", &os.windows),
                ("darwin", &os.darwin),
                ("ios", &os.ios),
                ("android", &os.android),
            ];
            if all.iter().all(|(_, v)| v.is_none()) {
                return Err(invalid("checks.os_version: name at least one OS"));
            }
            for (os, v) in all {
                if let Some(v) = v {
                    version(&format!("checks.os_version.{os}"), v)?;
                }
            }
        }
        let peer_network_range = match &c.peer_network_range {
            Some(nr) => {
                if nr.ranges.is_empty() {
                    return Err(invalid("checks.peer_network_range.ranges is empty"));
                }
                let mut ranges = Vec::new();
                for (i, r) in nr.ranges.iter().enumerate() {
                    let net: IpNet = r.trim().parse().map_err(|_| {
                        invalid(format!(
                            "checks.peer_network_range.ranges[{i}]: bad CIDR {r:?}"
                        ))
                    })?;
                    if net.trunc() != net {
                        return Err(invalid(format!(
                            "checks.peer_network_range.ranges[{i}]: bad CIDR {r:?}: host bits \
                             set (did you mean {}?)",
                            net.trunc()
                        )));
                    }
                    ranges.push(net);
                }
                let action = match nr.action.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("allow") => RangeAction::Allow,
                    Some("deny") => RangeAction::Deny,
                    Some(o) => {
                        return Err(invalid(format!(
                            "checks.peer_network_range.action: unknown action {o:?}: use allow \
                             or deny"
                        )));
                    }
                };
                Some(NetworkRangeCheck { ranges, action })
            }
            None => None,
        };
        if let Some(p) = &c.process {
            if p.processes.is_empty() {
                return Err(invalid("checks.process.processes is empty"));
            }
            for (i, s) in p.processes.iter().enumerate() {
                let paths = [&s.linux_path, &s.mac_path, &s.windows_path];
                if paths
                    .iter()
                    .all(|x| x.as_deref().is_none_or(|x| x.trim().is_empty()))
                {
                    return Err(invalid(format!(
                        "checks.process.processes[{i}]: give linux_path, mac_path or windows_path"
                    )));
                }
            }
        }
        let checks = PostureChecks {
            client_version: c.client_version.clone(),
            os_version: c.os_version.clone(),
            peer_network_range,
            process: c.process.clone(),
        };
        if checks == PostureChecks::default() {
            return Err(invalid("checks: a posture check needs at least one check"));
        }
        Ok(PostureCheck {
            id: id.to_string(),
            name,
            description: input.description.trim().to_string(),
            checks,
        })
    }

    /// Creates a posture check.
    pub fn create_posture_check(&mut self, input: &PostureCheckInput) -> ModelResult<PostureCheck> {
        let p = self.build_posture(&new_id("pc"), input)?;
        self.posture_checks.insert(p.id.clone(), p.clone());
        Ok(p)
    }

    /// Replaces a posture check.
    pub fn update_posture_check(
        &mut self,
        key: &str,
        input: &PostureCheckInput,
    ) -> ModelResult<PostureCheck> {
        let id = self.posture_check_id(key)?;
        let p = self.build_posture(&id, input)?;
        self.posture_checks.insert(id, p.clone());
        Ok(p)
    }

    /// Deletes a posture check no policy uses.
    pub fn delete_posture_check(&mut self, key: &str) -> ModelResult<PostureCheck> {
        let id = self.posture_check_id(key)?;
        if let Some(p) = self
            .policies
            .values()
            .find(|p| p.source_posture_checks.contains(&id))
        {
            return Err(conflict(format!(
                "posture check {:?} is used by policy {:?}",
                self.posture_checks[&id].name, p.name
            )));
        }
        Ok(self.posture_checks.remove(&id).expect("resolved above"))
    }

    /// Changes settings; the overlay range only while no peer is registered.
    pub fn update_settings(&mut self, input: &SettingsInput) -> ModelResult<Settings> {
        let mut s = self.settings.clone();
        if let Some(r) = &input.overlay_range {
            let net: Ipv4Net = r
                .trim()
                .parse()
                .map_err(|_| invalid(format!("overlay_range: bad IPv4 CIDR {r:?}")))?;
            let cgnat: Ipv4Net = CGNAT_RANGE.parse().expect("constant prefix");
            if net.trunc() != net {
                return Err(invalid(format!("overlay_range: {r:?} has host bits set")));
            }
            if !cgnat.contains(&net) {
                return Err(invalid(format!(
                    "overlay_range: {net} is not inside {CGNAT_RANGE}"
                )));
            }
            if net.prefix_len() > 30 {
                return Err(invalid(format!("overlay_range: {net} is too small")));
            }
            if net != s.overlay_range && !self.peers.is_empty() {
                return Err(conflict(
                    "overlay_range: cannot change the overlay range while peers are registered",
                ));
            }
            s.overlay_range = net;
        }
        if let Some(a) = input.peer_approval_required {
            s.peer_approval_required = a;
        }
        if let Some(t) = input.ephemeral_offline_secs {
            if !(60..=MAX_EPHEMERAL_OFFLINE_SECS).contains(&t) {
                return Err(invalid(format!(
                    "ephemeral_offline_secs: {t} is out of range (60 to \
                     {MAX_EPHEMERAL_OFFLINE_SECS} seconds, a year)"
                )));
            }
            s.ephemeral_offline_secs = t;
        }
        if let Some(r) = &input.overlay_range_v6 {
            let net: Ipv6Net = r
                .trim()
                .parse()
                .map_err(|_| invalid(format!("overlay_range_v6: bad IPv6 CIDR {r:?}")))?;
            let ula: Ipv6Net = ULA_RANGE.parse().expect("constant prefix");
            if net.trunc() != net {
                return Err(invalid(format!(
                    "overlay_range_v6: {r:?} has host bits set"
                )));
            }
            if !ula.contains(&net) {
                return Err(invalid(format!(
                    "overlay_range_v6: {net} is not inside {ULA_RANGE} (unique local addresses)"
                )));
            }
            if net.prefix_len() > 64 {
                return Err(invalid(format!(
                    "overlay_range_v6: {net} is smaller than a /64"
                )));
            }
            if Some(net) != s.overlay_range_v6 && !self.peers.is_empty() {
                return Err(conflict(
                    "overlay_range_v6: cannot change the IPv6 overlay range while peers are \
                     registered",
                ));
            }
            s.overlay_range_v6 = Some(net);
        }
        if let Some(g) = &input.ipv6_enabled_groups {
            s.ipv6_enabled_groups = self.resolve_groups("ipv6_enabled_groups", g)?;
        }
        // A new overlay must not take over a resource's addresses (see `check_routable`).
        for (field, net) in [
            ("overlay_range", Some(IpNet::V4(s.overlay_range))),
            ("overlay_range_v6", s.overlay_range_v6.map(IpNet::V6)),
        ] {
            let Some(net) = net else { continue };
            if let Some(r) = self.resources.values().find(|r| {
                r.address
                    .prefix()
                    .is_some_and(|p| p.prefix_len() > 0 && (p.contains(&net) || net.contains(&p)))
            }) {
                return Err(conflict(format!(
                    "{field}: {net} overlaps resource {:?} ({})",
                    r.name, r.address
                )));
            }
        }
        if let Some(d) = &input.dns_domain {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            validate_domain(&d).map_err(|e| invalid(format!("dns_domain: {e}")))?;
            s.dns_domain = d;
        }
        self.settings = s.clone();
        Ok(s)
    }
}
