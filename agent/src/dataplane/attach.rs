//! Attaching: the loaded programs onto the interfaces a configuration names, as pinned TCX
//! (and XDP) links, and releasing the links of interfaces it no longer names.
//!
//! Not loading ([`super::load`]) and not the maps ([`super::sync`]); releasing a pinned link
//! is [`super::pins`]'s.

use std::{collections::BTreeSet, fs, path::Path};

use anyhow::{Context as _, Result};
use aya::programs::{LinkOrder, TcAttachType, XdpMode, links::FdLink, tc::TcAttachOptions};
use swiftgate_common as common;

use super::{
    Dataplane,
    pins::{link_dir, release_link},
};
use crate::config::AgentConfig;

/// Where the programs attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    /// TC ingress.
    Ingress,
    /// TC egress.
    Egress,
    /// XDP (driver mode).
    Xdp,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
            Hook::Xdp => "xdp",
        }
    }
    fn tc(self) -> Option<TcAttachType> {
        match self {
            Hook::Ingress => Some(TcAttachType::Ingress),
            Hook::Egress => Some(TcAttachType::Egress),
            Hook::Xdp => None,
        }
    }
}

impl Dataplane {
    /// Attaches the programs a configuration asks for and releases links to interfaces it no
    /// longer names.
    pub fn attach(&mut self, cfg: &AgentConfig) -> Result<()> {
        let (ing, eg) = if cfg.overlay_l2 {
            (
                common::programs::OVERLAY_INGRESS_L2,
                common::programs::OVERLAY_EGRESS_L2,
            )
        } else {
            (
                common::programs::OVERLAY_INGRESS_L3,
                common::programs::OVERLAY_EGRESS_L3,
            )
        };
        let mut want = vec![
            (cfg.overlay.clone(), Hook::Ingress, ing),
            (cfg.overlay.clone(), Hook::Egress, eg),
        ];
        if cfg.xdp {
            want.push((
                cfg.overlay.clone(),
                Hook::Xdp,
                common::programs::OVERLAY_XDP,
            ));
        }
        for l in &cfg.lan {
            want.push((l.clone(), Hook::Ingress, common::programs::LAN_INGRESS));
        }
        let mut keep = BTreeSet::new();
        for (ifname, hook, prog) in &want {
            let name = format!("{ifname}@{}", hook.name());
            // Keyed by program too: switching `overlay_l2` swaps the program on the same hook.
            let full = format!("{name}={prog}");
            if !self.attached.contains(&full) {
                self.attach_one(ifname, *hook, prog)?;
                self.attached
                    .retain(|a| !a.starts_with(&format!("{name}=")));
                self.attached.insert(full);
            }
            keep.insert(name);
        }
        for entry in fs::read_dir(link_dir(&self.pin))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                release_link(&entry.path())?;
                self.attached
                    .retain(|a| !a.starts_with(&format!("{name}=")));
                tracing::info!(link = %name, "detached");
            }
        }
        Ok(())
    }

    fn attach_one(&mut self, ifname: &str, hook: Hook, prog_name: &str) -> Result<()> {
        let path = link_dir(&self.pin).join(format!("{ifname}@{}", hook.name()));
        let Some(tc) = hook.tc() else {
            return self.attach_xdp(ifname, &path);
        };
        let prog = self.program(prog_name)?;
        let id = prog
            .attach_with_options(ifname, tc, TcAttachOptions::TcxOrder(LinkOrder::first()))
            .with_context(|| format!("attaching {prog_name} to {ifname} {}", hook.name()))?;
        let link: FdLink = prog.take_link(id)?.try_into().context("TCX link")?;
        // The new program now runs first; the old one (if any) no longer sees packets.
        if path.exists() {
            release_link(&path)?;
        }
        link.pin(&path)
            .with_context(|| format!("pinning {}", path.display()))?;
        tracing::info!(
            interface = ifname,
            hook = hook.name(),
            program = prog_name,
            "attached"
        );
        Ok(())
    }

    /// Attaches the XDP stage in driver mode (generic-mode XDP would cost more than the TC
    /// path it shortcuts, so there is no fallback: the configuration is refused instead).
    fn attach_xdp(&mut self, ifname: &str, path: &Path) -> Result<()> {
        // An interface holds one XDP link, so the one a previous agent left pinned goes first
        // (TCX links can be replaced in front; XDP links cannot). Nothing is lost meanwhile:
        // the TC program behind it handles every packet on its own.
        if path.exists() {
            release_link(path)?;
        }
        let prog = self.xdp_program()?;
        let id = prog
            .attach(ifname, XdpMode::Driver)
            .with_context(|| {
                format!("attaching the XDP stage to {ifname} (driver mode; set xdp = false if the driver has no XDP support)")
            })?;
        let link: FdLink = prog.take_link(id)?.try_into().context("XDP link")?;
        link.pin(path)
            .with_context(|| format!("pinning {}", path.display()))?;
        tracing::info!(interface = ifname, hook = "xdp", "attached");
        Ok(())
    }
}
