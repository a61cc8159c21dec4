//! bpffs pin directories: where a test's agent or lab pins its maps and links, and their
//! removal.
//!
//! Every pin directory a test uses is `/sys/fs/bpf/sg-test-<pid>x<n>[suffix]` ([`pin_path_for`]
//! of a [`crate::unique_id`]), so [`crate::sweep_stale`] can remove those of killed test
//! processes.

use crate::{BPFFS, Error, Result, ensure_bpffs, unique_id};
use std::path::{Path, PathBuf};

/// Pin path for a test id (see [`unique_id`]): `/sys/fs/bpf/sg-test-<pid>x<n>…`.
pub fn pin_path_for(id: &str) -> PathBuf {
    Path::new(BPFFS).join(format!("sg-test-{}", id.trim_start_matches("sg")))
}

/// Removes the pinned state under `path`: unpins its links (which detaches the programs), its
/// maps, and the directory with anything else left in it. Nothing to do if it does not exist.
pub fn remove_pins(path: &Path) -> Result<()> {
    let unpinned = swiftgate::dataplane::remove_all(path)
        .map_err(|e| Error(format!("removing pins under {}: {e:#}", path.display())));
    if path.exists() {
        std::fs::remove_dir_all(path)
            .map_err(|e| Error(format!("removing {}: {e}", path.display())))?;
    }
    unpinned
}

/// A pin directory owned by one test fixture. Set up: bpffs mounted on `/sys/fs/bpf` and a path
/// unique to the process chosen (the directory is created by whoever pins there). Torn down
/// on drop: [`remove_pins`], also when the test panics.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// A fresh pin directory `/sys/fs/bpf/sg-test-<pid>x<n>`.
    pub fn new() -> Result<Self> {
        Self::for_id(&unique_id())
    }

    /// The pin directory of test id `id` ([`pin_path_for`]); leftovers at that path are removed
    /// first.
    pub fn for_id(id: &str) -> Result<Self> {
        ensure_bpffs()?;
        let path = pin_path_for(id);
        remove_pins(&path)?;
        Ok(PinDir { path })
    }

    /// The directory's path (for `pin_path` in a configuration).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = remove_pins(&self.path) {
            eprintln!("[e2e] warning: {e}");
        }
    }
}
