//! Pins: the bpffs directory under which maps and links are pinned (mounting bpffs when it is
//! missing), releasing a pinned link, opening a pinned map, and removing all pinned state.
//!
//! Not what is pinned: loading ([`super::load`]) pins the maps, attaching ([`super::attach`])
//! the links.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use aya::{maps::MapData, programs::links::PinnedLink};

pub(super) fn map_dir(pin: &Path) -> PathBuf {
    pin.join("maps")
}
pub(super) fn link_dir(pin: &Path) -> PathBuf {
    pin.join("links")
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn on_bpffs(path: &Path) -> bool {
    let mut p = path;
    loop {
        if p.exists() {
            return nix::sys::statfs::statfs(p)
                .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
                .unwrap_or(false);
        }
        match p.parent() {
            Some(q) => p = q,
            None => return false,
        }
    }
}

/// Makes sure `pin` lies on a bpf filesystem, mounting the default one at /sys/fs/bpf when
/// it is missing (as after `ip netns exec`, which remounts /sys).
pub(super) fn ensure_bpffs(pin: &Path) -> Result<()> {
    if on_bpffs(pin) {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if pin.starts_with(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting bpffs at /sys/fs/bpf")?;
        if on_bpffs(pin) {
            return Ok(());
        }
    }
    bail!(
        "pin path {} is not on a bpf filesystem (mount one: mount -t bpf bpf DIR)",
        pin.display()
    )
}

pub(super) fn release_link(path: &Path) -> Result<()> {
    let link = PinnedLink::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    // Unpinning and dropping the last reference detaches it.
    drop(link.unpin()?);
    Ok(())
}

/// Detaches every program and removes all pinned state under `pin`.
pub fn remove_all(pin: &Path) -> Result<()> {
    let links = link_dir(pin);
    if links.exists() {
        for e in fs::read_dir(&links)? {
            let p = e?.path();
            if let Err(err) = release_link(&p) {
                tracing::warn!(path = %p.display(), error = %err, "removing link pin");
                let _ = fs::remove_file(&p);
            }
        }
        fs::remove_dir(&links)?;
    }
    let m = map_dir(pin);
    if m.exists() {
        for e in fs::read_dir(&m)? {
            fs::remove_file(e?.path())?;
        }
        fs::remove_dir(&m)?;
    }
    if pin.exists() {
        fs::remove_dir(pin).with_context(|| format!("removing {}", pin.display()))?;
    }
    Ok(())
}

pub(super) fn open_pinned(pin: &Path, name: &str) -> Result<MapData> {
    let p = map_dir(pin).join(name);
    MapData::from_pin(&p).with_context(|| {
        format!(
            "opening {} (is the agent set up? `swiftgate up`)",
            p.display()
        )
    })
}
