//! What the agent tells the management server about its host (`PeerSystemMeta`), and its
//! answers to process posture checks.
//!
//! NetBird's server reads `netbirdVersion` as the client's protocol level: it decides the map
//! format, the DNS forwarder port and minimum-version posture checks from it. swiftgate reports
//! the NetBird release whose management protocol it implements ([`NETBIRD_PROTOCOL_LEVEL`])
//! there, and its own version in `uiVersion` as `swiftgate/<version>`. Network addresses feed
//! network-range posture checks; OS and kernel details feed OS-version checks; `files` answers
//! the paths of process checks (`Checks.Files`): whether each exists and whether a process runs
//! from it.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use swiftgate_proto::management::{Checks, File, NetworkAddress, PeerSystemMeta};

/// The NetBird release whose management and signal protocol this agent implements (the
/// `.proto` revision in `proto/`), reported as `netbirdVersion`.
pub const NETBIRD_PROTOCOL_LEVEL: &str = "0.77.1";

/// This agent's own version, reported as `uiVersion` (`swiftgate/<version>`).
pub fn swiftgate_version() -> String {
    format!("swiftgate/{}", env!("CARGO_PKG_VERSION"))
}

/// `key=value` lines of an os-release file, quotes removed.
fn os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('"').trim_matches('\'').to_string(),
            )
        })
        .collect()
}

fn read_trimmed(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The host's interface addresses with prefix lengths and MACs, loopback and `skip` (the
/// overlay interface) left out.
pub fn network_addresses(skip: &str) -> Vec<NetworkAddress> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    let addrs: Vec<_> = addrs.collect();
    let mac_of = |name: &str| -> String {
        addrs
            .iter()
            .filter(|a| a.interface_name == name)
            .find_map(|a| a.address.as_ref()?.as_link_addr()?.addr())
            .map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for a in &addrs {
        if a.interface_name == skip {
            continue;
        }
        let (Some(addr), Some(mask)) = (a.address.as_ref(), a.netmask.as_ref()) else {
            continue;
        };
        let (ip, plen) = if let (Some(v4), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in())
        {
            (IpAddr::V4(v4.ip()), m.ip().to_bits().count_ones() as u8)
        } else if let (Some(v6), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            (IpAddr::V6(v6.ip()), m.ip().to_bits().count_ones() as u8)
        } else {
            continue;
        };
        if ip.is_loopback() {
            continue;
        }
        let Ok(net) = IpNet::new(ip, plen) else {
            continue;
        };
        out.push(NetworkAddress {
            net_ip: net.to_string(),
            mac: mac_of(&a.interface_name),
        });
    }
    out
}

/// This host's description: hostname, OS (from os-release), kernel, architecture, hardware
/// names (when readable), network addresses (without `overlay`), the protocol level and
/// swiftgate's version.
pub fn system_meta(hostname: &str, overlay: &str) -> PeerSystemMeta {
    let rel = os_release(
        &std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .unwrap_or_default(),
    );
    let get = |k: &str| rel.get(k).cloned().unwrap_or_default();
    let kernel_version = read_trimmed("/proc/sys/kernel/osrelease");
    PeerSystemMeta {
        hostname: hostname.to_string(),
        go_os: std::env::consts::OS.to_string(),
        kernel: "Linux".into(),
        core: get("VERSION_ID"),
        platform: std::env::consts::ARCH.to_string(),
        os: get("NAME"),
        netbird_version: NETBIRD_PROTOCOL_LEVEL.to_string(),
        ui_version: swiftgate_version(),
        kernel_version,
        os_version: get("VERSION_ID"),
        network_addresses: network_addresses(overlay),
        sys_serial_number: read_trimmed("/sys/class/dmi/id/product_serial"),
        sys_product_name: read_trimmed("/sys/class/dmi/id/product_name"),
        sys_manufacturer: read_trimmed("/sys/class/dmi/id/sys_vendor"),
        ..Default::default()
    }
}

/// Executables of the running processes (`/proc/<pid>/exe`), as far as they can be read.
fn running_executables(proc_root: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_link(e.path().join("exe")).ok())
        .collect()
}

/// Answers to the process checks: for every path the server asks about (each once, in the
/// order asked), whether it exists and whether a process runs from it.
pub fn answer_checks(checks: &[Checks]) -> Vec<File> {
    answer_checks_in(checks, Path::new("/proc"))
}

fn answer_checks_in(checks: &[Checks], proc_root: &Path) -> Vec<File> {
    let mut paths: Vec<&str> = Vec::new();
    for p in checks.iter().flat_map(|c| c.files.iter()) {
        if !paths.contains(&p.as_str()) {
            paths.push(p);
        }
    }
    if paths.is_empty() {
        return vec![];
    }
    let running = running_executables(proc_root);
    paths
        .into_iter()
        .map(|p| File {
            path: p.to_string(),
            exist: Path::new(p).exists(),
            process_is_running: running.iter().any(|r| r == Path::new(p)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_lines_are_read_without_quotes() {
        let r = os_release("NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\nID=debian\n# c\n");
        assert_eq!(r["NAME"], "Debian GNU/Linux");
        assert_eq!(r["VERSION_ID"], "13");
        assert_eq!(r["ID"], "debian");
    }

    #[test]
    fn meta_reports_the_protocol_level_and_swiftgate_alongside() {
        let m = system_meta("gw", "sg-none");
        assert_eq!(m.netbird_version, NETBIRD_PROTOCOL_LEVEL);
        assert!(m.ui_version.starts_with("swiftgate/"), "{}", m.ui_version);
        assert_eq!(m.go_os, "linux");
        assert!(!m.kernel_version.is_empty());
        for a in &m.network_addresses {
            let n: IpNet = a.net_ip.parse().expect("address/prefix");
            assert!(!n.addr().is_loopback(), "{n}");
        }
    }

    /// A running process is recognised by its executable; a missing path neither exists nor
    /// runs.
    #[test]
    fn process_checks_are_answered_from_proc() {
        let me = std::env::current_exe().unwrap();
        let me = me.to_str().unwrap().to_string();
        let checks = vec![
            Checks {
                files: vec![me.clone(), "/nonexistent/falcond".into()],
            },
            Checks {
                files: vec!["/bin/sh".into(), me.clone()],
            },
        ];
        let files = answer_checks(&checks);
        assert_eq!(files.len(), 3, "each path once");
        assert_eq!(
            (files[0].exist, files[0].process_is_running),
            (true, true),
            "this test's own binary runs"
        );
        assert_eq!(
            (files[1].exist, files[1].process_is_running),
            (false, false)
        );
        assert!(files[2].exist);
        assert!(answer_checks(&[]).is_empty());
    }
}
