//! The network-namespace guard: [`NetNs`] creates a named namespace (`ip netns add`), runs code
//! and commands inside it, and deletes it with its links on drop, also when a test panics.
//!
//! Code runs in a namespace on a helper thread that has called `setns(CLONE_NEWNET)` (or, with
//! [`NetNs::enter`], on the calling thread until the returned guard drops); only that thread
//! changes namespace. Sockets and TUN devices keep the namespace they were created in,
//! so they can be created there and used from any thread afterwards. Child processes are
//! spawned from such a thread and so start in the namespace; unlike `ip netns exec`, this does
//! not give them a private mount namespace (the agent must see the host's bpffs to pin state).

use super::{CMD_TIMEOUT, CmdOutput, Error, Result, run_timeout};
use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;

/// A named network namespace. Set up: the namespace with its loopback up. Torn down on drop
/// (or [`NetNs::delete`]): every link in it (so veth peers in other namespaces go too, even
/// while a process still holds the namespace), then the namespace itself.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    deleted: bool,
}

impl NetNs {
    /// Creates the namespace `name` (`ip netns add`) and brings its loopback up. A leftover
    /// namespace of that name (only possible for names not from [`super::unique_id`]) is
    /// deleted first.
    pub fn create(name: &str) -> Result<Self> {
        if Path::new("/run/netns").join(name).exists() {
            let _ = super::ip(&["netns", "del", name]);
        }
        super::ip(&["netns", "add", name])
            .map_err(|e| e.context(format!("creating netns {name}")))?;
        let ns = NetNs {
            name: name.to_owned(),
            deleted: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file (`/run/netns/NAME`, or `/var/run/netns/NAME`).
    pub fn path(&self) -> PathBuf {
        let run = PathBuf::from("/run/netns").join(&self.name);
        if run.exists() {
            run
        } else {
            PathBuf::from("/var/run/netns").join(&self.name)
        }
    }

    /// Runs `f` on a thread that has entered this namespace and returns its result. A panic in
    /// `f` is propagated to the caller.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        run_in(&self.path(), f)
    }

    /// Moves the calling thread into this namespace (network namespace only) until the returned
    /// guard drops, which moves it back. For fixtures whose kernel objects must be created and
    /// used from the test thread itself (the BPF_PROG_TEST_RUN lab).
    pub fn enter(&self) -> Result<Entered> {
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error(format!("opening this thread's netns: {e}")))?;
        let target = File::open(self.path())
            .map_err(|e| Error(format!("opening {}: {e}", self.path().display())))?;
        nix::sched::setns(target.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error(format!("entering netns {}: {e}", self.name)))?;
        Ok(Entered {
            home,
            _thread: PhantomData,
        })
    }

    /// Spawns `cmd` inside this namespace (network namespace only; mounts are shared).
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        spawn_in(&self.path(), cmd)
    }

    /// Runs `cmd` inside this namespace with the default timeout and captures its output
    /// (whatever its exit status).
    pub fn output(&self, cmd: &mut Command) -> Result<CmdOutput> {
        run_timeout(cmd, Some(&self.path()), CMD_TIMEOUT)
    }

    /// Runs `ip -n NAME ARGS…` and fails on a non-zero exit.
    pub fn ip(&self, args: &[&str]) -> Result<CmdOutput> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        super::ip(&full)
    }

    /// Writes a sysctl of this namespace, e.g. `("net/ipv4/conf/all/rp_filter", "0")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{key}");
        self.run(|| std::fs::write(&path, value))?
            .map_err(|e| Error(format!("writing {path} in {}: {e}", self.name)))
    }

    /// The names of the links in this namespace, loopback excluded.
    pub fn links(&self) -> Result<Vec<String>> {
        let out = self.ip(&["-o", "link", "show"])?;
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
            .filter(|n| !n.is_empty() && n != "lo")
            .collect())
    }

    /// Deletes every link in the namespace, then the namespace (also done on drop).
    /// Idempotent.
    pub fn delete(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        self.deleted = true;
        // A link may already be gone with its veth peer: errors are expected and ignored.
        for link in self.links().unwrap_or_default() {
            let _ = self.ip(&["link", "del", &link]);
        }
        super::ip(&["netns", "del", &self.name]).map(drop)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            eprintln!("[e2e] warning: deleting netns {}: {e}", self.name);
        }
    }
}

/// The calling thread's stay in a [`NetNs`] (from [`NetNs::enter`]); dropping it moves the
/// thread back to the namespace it came from. Not `Send`: it belongs to the thread it moved.
#[derive(Debug)]
pub struct Entered {
    home: File,
    _thread: PhantomData<*const ()>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(self.home.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
            eprintln!("[e2e] warning: returning to the original netns: {e}");
        }
    }
}

/// Runs `f` on a thread that has entered the network namespace whose file is `ns_path`
/// (e.g. `/run/netns/NAME`) and returns its result. A panic in `f` is propagated.
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(ns_path: &Path, f: F) -> Result<T> {
    let file =
        File::open(ns_path).map_err(|e| Error(format!("opening {}: {e}", ns_path.display())))?;
    thread::scope(|s| {
        let handle = thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(s, move || -> Result<T> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error(format!("setns into {}: {e}", ns_path.display())))?;
                drop(file);
                Ok(f())
            })
            .map_err(|e| Error(format!("spawning a thread for {}: {e}", ns_path.display())))?;
        match handle.join() {
            Ok(r) => r,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// Spawns `cmd` in the network namespace whose file is `ns_path` (the child starts from a
/// thread inside it; its mount namespace is the test's).
pub fn spawn_in(ns_path: &Path, cmd: &mut Command) -> Result<Child> {
    let what = super::describe(cmd);
    run_in(ns_path, || cmd.spawn())?
        .map_err(|e| Error(format!("spawning `{what}` in {}: {e}", ns_path.display())))
}
