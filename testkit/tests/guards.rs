//! The testkit's guards keep their promises: what they set up exists while they live and is
//! gone after they drop, also when the test using them panics. Needs root.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use swiftgate_testkit::{
    NetNs, PinDir, ensure_bpffs, kernel::Lab, pin_path_for, poll_until, require_root, run_timeout,
    unique_id,
};

/// The network namespace of the calling thread (`net:[inode]`).
fn own_netns() -> PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").expect("reading own netns link")
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// A pin directory with one map pinned in it (as an agent or a lab leaves it).
fn pin_a_map(dir: &Path) {
    let maps = dir.join("maps");
    std::fs::create_dir_all(&maps).expect("creating the maps directory");
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(maps.join("SG_TESTKIT"))
        .args([
            "type",
            "hash",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "2",
            "name",
            "SG_TESTKIT",
        ])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn netns_is_deleted_on_drop() {
    require_root();
    let name = format!("{}-t", unique_id());
    let ns = NetNs::create(&name).expect("netns");
    assert!(netns_exists(&name));
    drop(ns);
    assert!(!netns_exists(&name));
}

#[test]
fn netns_is_deleted_when_the_test_panics() {
    require_root();
    let name = format!("{}-t", unique_id());
    let r = catch_unwind(|| {
        let _ns = NetNs::create(&name).expect("netns");
        assert!(netns_exists(&name));
        panic!("a failing test");
    });
    assert!(r.is_err());
    assert!(!netns_exists(&name));
}

#[test]
fn netns_deletes_its_links_with_their_peers() {
    require_root();
    let id = unique_id();
    let a = NetNs::create(&format!("{id}-a")).expect("netns a");
    let mut b = NetNs::create(&format!("{id}-b")).expect("netns b");
    b.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"])
        .expect("veth");
    b.ip(&["link", "set", "va", "netns", a.name()])
        .expect("moving one end");
    assert_eq!(a.links().expect("links of a"), ["va"]);
    assert_eq!(b.links().expect("links of b"), ["vb"]);
    b.delete().expect("deleting b");
    assert!(a.links().expect("links of a").is_empty());
}

#[test]
fn run_and_spawn_are_inside_the_namespace() {
    require_root();
    let ns = NetNs::create(&format!("{}-t", unique_id())).expect("netns");
    let host = own_netns();
    let inside = ns.run(own_netns).expect("run");
    assert_ne!(inside, host);
    assert_eq!(own_netns(), host, "run must not move the calling thread");
    let out = ns
        .output(Command::new("readlink").arg("/proc/self/ns/net"))
        .and_then(|o| o.check())
        .expect("readlink in the namespace");
    assert_eq!(Path::new(out.stdout.trim()), inside);
}

#[test]
fn spawned_commands_see_the_host_bpffs() {
    require_root();
    ensure_bpffs().expect("bpffs");
    let ns = NetNs::create(&format!("{}-t", unique_id())).expect("netns");
    let out = ns
        .output(Command::new("stat").args(["-f", "-c", "%T", "/sys/fs/bpf"]))
        .and_then(|o| o.check())
        .expect("stat in the namespace");
    assert_eq!(out.stdout.trim(), "bpf_fs");
}

#[test]
fn a_panic_inside_run_reaches_the_caller() {
    require_root();
    let ns = NetNs::create(&format!("{}-t", unique_id())).expect("netns");
    let r = catch_unwind(AssertUnwindSafe(|| ns.run(|| panic!("inside"))));
    assert!(r.is_err());
}

#[test]
fn entered_moves_the_thread_back_on_drop() {
    require_root();
    let ns = NetNs::create(&format!("{}-t", unique_id())).expect("netns");
    let host = own_netns();
    let entered = ns.enter().expect("enter");
    assert_ne!(own_netns(), host);
    drop(entered);
    assert_eq!(own_netns(), host);
}

#[test]
fn entered_moves_the_thread_back_when_the_test_panics() {
    require_root();
    let ns = NetNs::create(&format!("{}-t", unique_id())).expect("netns");
    let host = own_netns();
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _entered = ns.enter().expect("enter");
        panic!("a failing test");
    }));
    assert!(r.is_err());
    assert_eq!(own_netns(), host);
}

#[test]
fn pin_dir_is_removed_on_drop() {
    require_root();
    let pins = PinDir::new().expect("pin directory");
    let path = pins.path().to_path_buf();
    pin_a_map(&path);
    drop(pins);
    assert!(!path.exists());
}

#[test]
fn pin_dir_is_removed_when_the_test_panics() {
    require_root();
    let id = unique_id();
    let path = pin_path_for(&id);
    let r = catch_unwind(|| {
        let pins = PinDir::for_id(&id).expect("pin directory");
        pin_a_map(pins.path());
        panic!("a failing test");
    });
    assert!(r.is_err());
    assert!(!path.exists());
}

#[test]
fn pin_dir_removes_leftovers_at_its_path() {
    require_root();
    ensure_bpffs().expect("bpffs");
    let id = unique_id();
    pin_a_map(&pin_path_for(&id));
    let pins = PinDir::for_id(&id).expect("pin directory");
    assert!(!pins.path().exists());
}

#[test]
fn names_are_unique_and_pin_paths_follow_them() {
    let (a, b) = (unique_id(), unique_id());
    assert_ne!(a, b);
    let prefix = format!("sg{}x", std::process::id());
    assert!(a.starts_with(&prefix), "{a}");
    let pin = pin_path_for(&a);
    assert_eq!(pin.parent(), Some(Path::new("/sys/fs/bpf")));
    assert_eq!(
        pin.file_name().and_then(|n| n.to_str()),
        Some(format!("sg-test-{}", a.trim_start_matches("sg")).as_str())
    );
}

#[test]
fn run_timeout_kills_a_command_that_overruns() {
    let start = Instant::now();
    let r = run_timeout(
        Command::new("sleep").arg("10"),
        None,
        Duration::from_millis(200),
    );
    assert!(r.is_err());
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn poll_until_gives_up_after_its_timeout() {
    let start = Instant::now();
    let r: Option<()> = poll_until(
        Duration::from_millis(200),
        Duration::from_millis(20),
        || None,
    );
    assert!(r.is_none());
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        poll_until(Duration::from_secs(1), Duration::from_millis(1), || Some(7)),
        Some(7)
    );
}

/// A lab configuration: one peer, nothing else.
const LAB_CONFIG: &str = r#"
[[peers]]
name = "alice"
ips = ["100.64.0.2"]
groups = ["Development"]
"#;

#[test]
fn kernel_lab_leaves_the_namespace_and_removes_pins_on_drop() {
    let host = own_netns();
    let lab = Lab::new(LAB_CONFIG);
    let (pin, ns) = (lab.pin_path().to_path_buf(), lab.netns().name().to_owned());
    assert_ne!(own_netns(), host, "the lab runs on the test thread");
    assert!(pin.join("maps").exists());
    drop(lab);
    assert_eq!(own_netns(), host);
    assert!(!pin.exists());
    assert!(!netns_exists(&ns));
}

#[test]
fn kernel_lab_is_torn_down_when_the_test_panics() {
    let host = own_netns();
    let seen = std::sync::Mutex::new(None);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new(LAB_CONFIG);
        *seen.lock().unwrap() = Some((lab.pin_path().to_path_buf(), lab.netns().name().to_owned()));
        panic!("a failing test");
    }));
    assert!(r.is_err());
    let (pin, ns) = seen.into_inner().unwrap().expect("the lab was built");
    assert_eq!(own_netns(), host);
    assert!(!pin.exists());
    assert!(!netns_exists(&ns));
}
