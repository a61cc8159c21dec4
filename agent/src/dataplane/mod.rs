//! The data-plane manager: loads the eBPF object, pins maps and links, attaches the programs
//! (TCX) and keeps the maps in step with the configuration.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/swiftgate`):
//! - `maps/<NAME>`: every map, reused by a restarted agent so established flows survive;
//! - `links/<ifname>@<ingress|egress|xdp>`: TCX (and XDP) links, so programs stay attached
//!   while no agent runs.
//!
//! TC programs are replaced without a gap: the new link is attached in front of the old one
//! (our programs always return a final verdict, so the first one decides), then the old link
//! is released. The optional XDP stage is released first and then attached (an interface holds
//! one XDP link); the TC program handles every packet meanwhile.
//!
//! One job per module:
//! - `load`: the embedded object into the kernel (retries on EAGAIN, pinned-layout checks);
//! - `attach`: programs onto interfaces (TCX and XDP links, pinned);
//! - `sync`: the compiled tables and the kernel configuration into the maps;
//! - `pins`: the bpffs directories (mounting bpffs, map and link pins, [`remove_all`]);
//! - `state`: the pinned maps opened without programs, and the counters read from them;
//! - `conntrack`: reading the conntrack tables (flows, reply entries, timeouts) and removing
//!   flows;
//! - `sources`: what each source holds of the tables (its share), the tables' use;
//! - `gc`: the conntrack garbage collector;
//! - `pressure`: when to warn about full tables and refused flows (sans-IO).
//!
//! This module holds [`Dataplane`], the handle on the programs this process loaded, with its
//! accessors, and re-exports the public API; [`State`], the handle on the pinned maps alone,
//! is `state`'s. The work is done in the modules.

mod attach;
mod conntrack;
mod gc;
mod load;
mod pins;
pub mod pressure;
mod sources;
mod state;
mod sync;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::Map,
    programs::{SchedClassifier, Xdp},
};
use swiftgate_common as common;

pub use attach::Hook;
pub use conntrack::{Flow, addr, merge_reply, reply_key, source_of, timeout_secs};
pub use gc::{GcStats, monotonic_ns};
pub use load::LoadOptions;
pub use pins::remove_all;
pub use sources::{SourceStat, TableUse};
pub use state::State;
pub use sync::{ApplyStats, enable_forwarding, kernel_config};

/// A loaded data plane.
pub struct Dataplane {
    ebpf: Ebpf,
    pin: PathBuf,
    /// Links this process attached (`ifname@hook=program`): attaching the same program twice
    /// to one hook is refused by the kernel, and not needed.
    attached: BTreeSet<String>,
}

impl Dataplane {
    /// The pin directory.
    pub fn pin_path(&self) -> &Path {
        &self.pin
    }

    /// A loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?)
    }

    /// The loaded XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn xdp_program(&mut self) -> Result<&mut Xdp> {
        let name = common::programs::OVERLAY_XDP;
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?)
    }

    fn map(&self, name: &str) -> Result<&Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("map {name} missing"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("map {name} missing"))
    }

    /// Handle on the pinned state for inspection and garbage collection.
    pub fn state(&self) -> Result<State> {
        State::open(&self.pin)
    }
}
