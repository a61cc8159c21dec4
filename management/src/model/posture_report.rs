//! Why a peer passes or fails the posture checks that apply to it: every posture check of an
//! enabled policy with an enabled rule that has the peer as a source, with each check's
//! verdict and reason. This is what the network map uses: a source peer that fails a check of
//! a policy does not count as that policy's source.

use std::collections::BTreeMap;

use serde::Serialize;

use super::account::Account;
use super::error::ModelResult;
use super::posture::{Verdict, verdicts};
use super::types::{Peer, Policy, Target};

/// One posture check as it applies to one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PostureCheckReport {
    /// Posture check id.
    pub id: String,
    /// Posture check name.
    pub name: String,
    /// Names of the enabled policies that have the peer as a source and require this check.
    pub policies: Vec<String>,
    /// The peer passes every check of it.
    pub passed: bool,
    /// One verdict per check, in order.
    pub results: Vec<Verdict>,
}

/// Every posture check that applies to a peer, and its verdicts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PostureReport {
    /// Peer id.
    pub peer_id: String,
    /// Peer name.
    pub peer_name: String,
    /// The version minimum-version checks compare (`netbirdVersion`).
    pub client_version: String,
    /// The agent's own version (`uiVersion`), if reported.
    pub ui_version: String,
    /// The peer passes every posture check below (true when none applies).
    pub passed: bool,
    /// By posture check name.
    pub checks: Vec<PostureCheckReport>,
}

/// Whether some enabled rule of `policy` has `peer` as a source (as the network map decides).
fn is_source(account: &Account, policy: &Policy, peer: &Peer) -> bool {
    policy
        .rules
        .iter()
        .filter(|r| r.enabled)
        .any(|r| match &r.source_resource {
            Some(Target::Peer(id)) => *id == peer.id,
            Some(Target::Resource(_)) => false,
            None => r.sources.iter().any(|g| account.peer_in_group(peer, g)),
        })
}

impl Account {
    /// The posture report of a peer (by id or name).
    pub fn posture_report(&self, key: &str) -> ModelResult<PostureReport> {
        let id = self.peer_id(key)?;
        let peer = &self.peers[&id];
        let mut by_check: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for policy in self
            .policies
            .values()
            .filter(|p| p.enabled && is_source(self, p, peer))
        {
            for c in &policy.source_posture_checks {
                by_check.entry(c.as_str()).or_default().push(&policy.name);
            }
        }
        let mut checks: Vec<PostureCheckReport> = by_check
            .into_iter()
            .filter_map(|(cid, mut policies)| {
                let pc = self.posture_checks.get(cid)?;
                policies.sort_unstable();
                let results = verdicts(&pc.checks, peer);
                Some(PostureCheckReport {
                    id: pc.id.clone(),
                    name: pc.name.clone(),
                    policies: policies.into_iter().map(str::to_string).collect(),
                    passed: results.iter().all(|v| v.passed),
                    results,
                })
            })
            .collect();
        checks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(PostureReport {
            peer_id: peer.id.clone(),
            peer_name: peer.name.clone(),
            client_version: peer.meta.client_version.clone(),
            ui_version: peer.meta.ui_version.clone(),
            passed: checks.iter().all(|c| c.passed),
            checks,
        })
    }
}
