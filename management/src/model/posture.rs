//! Posture-check evaluation against what a peer reports: one [`Verdict`] per check, pass or
//! fail with the reason in words ("client version 0.1.0 below minimum 0.45.0", "linux kernel
//! 5.4.0 below minimum 5.10", "process /opt/x not running", "no network address in
//! 192.0.2.0/24"). Versions compare as [`super::version`] describes: agent versions
//! semver-ishly (a pre-release is below its release), kernel and OS versions by their numbers
//! (a distribution's `-13-amd64` is ignored).
//!
//! Geo-location checks are not offered: they need a GeoIP database (country/city of the
//! peer's connection address), which this server does not ship. A request that asks for one
//! is refused with a message saying so.

use serde::Serialize;

use super::types::{
    MinVersionCheck, NetworkRangeCheck, OsVersionCheck, Peer, PeerMeta, PostureChecks, ProcessSpec,
    RangeAction,
};
use super::version::Version;
pub use super::version::{compare_versions, parse_version};

/// The outcome of one check of a posture check for one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verdict {
    /// Which check: `client_version`, `os_version`, `peer_network_range` or `process`.
    pub check: &'static str,
    /// The peer passes it.
    pub passed: bool,
    /// Why, in words, naming what the peer reported and what the check wants.
    pub reason: String,
}

impl Verdict {
    fn new(check: &'static str, passed: bool, reason: String) -> Verdict {
        Verdict {
            check,
            passed,
            reason,
        }
    }
}

/// The path a process check looks for on the peer's OS, if it names one.
pub fn process_path_for_os<'a>(spec: &'a ProcessSpec, os: &str) -> Option<&'a str> {
    match os {
        "linux" => spec.linux_path.as_deref(),
        "darwin" => spec.mac_path.as_deref(),
        "windows" => spec.windows_path.as_deref(),
        _ => None,
    }
}

/// " (agent swiftgate/0.1.0)" when the peer reported its agent's own version.
fn agent_note(meta: &PeerMeta) -> String {
    let ui = meta.ui_version.trim();
    if ui.is_empty() {
        String::new()
    } else {
        format!(" (agent {ui})")
    }
}

fn client_version(c: &MinVersionCheck, meta: &PeerMeta) -> Verdict {
    let min = c.min_version.trim();
    let have = meta.client_version.trim();
    let note = agent_note(meta);
    let (passed, reason) = match (Version::parse(have), Version::parse(min)) {
        _ if have.is_empty() => (
            false,
            format!("client version not reported (minimum {min}){note}"),
        ),
        (None, _) => (
            false,
            format!("client version {have:?} is not a version number (minimum {min}){note}"),
        ),
        (_, None) => (
            false,
            format!("the minimum client version {min:?} is not a version number"),
        ),
        (Some(h), Some(m)) if h.cmp_semver(&m).is_lt() => (
            false,
            format!("client version {have} below minimum {min}{note}"),
        ),
        (Some(_), Some(_)) => (
            true,
            format!("client version {have} meets minimum {min}{note}"),
        ),
    };
    Verdict::new("client_version", passed, reason)
}

fn os_version(c: &OsVersionCheck, meta: &PeerMeta) -> Verdict {
    let fail = |r: String| Verdict::new("os_version", false, r);
    let os = meta.os.as_str();
    let (what, min, have) = match os {
        "linux" => ("linux kernel", c.linux.as_deref(), &meta.kernel_version),
        "windows" => ("windows kernel", c.windows.as_deref(), &meta.kernel_version),
        "darwin" => ("macOS version", c.darwin.as_deref(), &meta.os_version),
        "ios" => ("iOS version", c.ios.as_deref(), &meta.os_version),
        "android" => ("Android version", c.android.as_deref(), &meta.os_version),
        _ => ("OS version", None, &meta.os_version),
    };
    let Some(min) = min.map(str::trim) else {
        let allowed: Vec<&str> = [
            ("linux", &c.linux),
            ("windows", &c.windows),
            ("darwin", &c.darwin),
            ("ios", &c.ios),
            ("android", &c.android),
        ]
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect();
        let allowed = allowed.join(", ");
        return fail(if os.is_empty() {
            format!("OS not reported (allowed: {allowed})")
        } else {
            format!("OS {os} is not allowed (allowed: {allowed})")
        });
    };
    let have = have.trim();
    match (Version::parse(have), Version::parse(min)) {
        _ if have.is_empty() => fail(format!("{what} not reported (minimum {min})")),
        (None, _) => fail(format!(
            "{what} {have:?} is not a version number (minimum {min})"
        )),
        (_, None) => fail(format!(
            "the minimum {what} {min:?} is not a version number"
        )),
        (Some(h), Some(m)) if h.cmp_release(&m).is_lt() => {
            fail(format!("{what} {have} below minimum {min}"))
        }
        (Some(_), Some(_)) => Verdict::new(
            "os_version",
            true,
            format!("{what} {have} meets minimum {min}"),
        ),
    }
}

fn network_range(c: &NetworkRangeCheck, meta: &PeerMeta) -> Verdict {
    let ranges: Vec<String> = c.ranges.iter().map(ToString::to_string).collect();
    let ranges = ranges.join(", ");
    let hit = meta.network_addresses.iter().find_map(|a| {
        c.ranges
            .iter()
            .find(|r| r.contains(&a.addr()))
            .map(|r| (a, r))
    });
    let (passed, reason) = match (c.action, hit) {
        (RangeAction::Allow, Some((a, r))) => (true, format!("network address {a} in {r}")),
        (RangeAction::Allow, None) if meta.network_addresses.is_empty() => (
            false,
            format!("no network address reported (allowed: {ranges})"),
        ),
        (RangeAction::Allow, None) => (false, format!("no network address in {ranges}")),
        (RangeAction::Deny, Some((a, r))) => {
            (false, format!("network address {a} in denied range {r}"))
        }
        (RangeAction::Deny, None) => (true, format!("no network address in denied {ranges}")),
    };
    Verdict::new("peer_network_range", passed, reason)
}

fn process(spec: &ProcessSpec, meta: &PeerMeta) -> Verdict {
    let Some(path) = process_path_for_os(spec, &meta.os) else {
        let os = if meta.os.is_empty() {
            "not reported"
        } else {
            meta.os.as_str()
        };
        return Verdict::new(
            "process",
            false,
            format!("the process check names no path for OS {os}"),
        );
    };
    let (passed, reason) = match meta.files.iter().find(|f| f.path == path) {
        Some(f) if f.process_running => (true, format!("process {path} running")),
        Some(f) if !f.exists => (false, format!("process {path} not running (no such file)")),
        Some(_) => (false, format!("process {path} not running")),
        None => (
            false,
            format!("process {path} not running (not reported by the agent yet)"),
        ),
    };
    Verdict::new("process", passed, reason)
}

/// Every check of `checks` against what `peer` reported, in the order client version, OS
/// version, network range, processes (one verdict per process).
pub fn verdicts(checks: &PostureChecks, peer: &Peer) -> Vec<Verdict> {
    let meta = &peer.meta;
    let mut out = Vec::new();
    if let Some(c) = &checks.client_version {
        out.push(client_version(c, meta));
    }
    if let Some(c) = &checks.os_version {
        out.push(os_version(c, meta));
    }
    if let Some(c) = &checks.peer_network_range {
        out.push(network_range(c, meta));
    }
    if let Some(c) = &checks.process {
        out.extend(c.processes.iter().map(|s| process(s, meta)));
    }
    out
}

/// Why a peer fails a posture check (the first failing check's reason); `None` when it passes
/// every check.
pub fn evaluate(checks: &PostureChecks, peer: &Peer) -> Option<String> {
    verdicts(checks, peer)
        .into_iter()
        .find(|v| !v.passed)
        .map(|v| v.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::*;

    fn peer(os: &str, client: &str, kernel: &str, os_version: &str) -> Peer {
        Peer {
            id: "p".into(),
            name: "p".into(),
            dns_label: "p".into(),
            wg_pubkey: String::new(),
            ip: "100.64.0.1".parse().unwrap(),
            ssh_pubkey: String::new(),
            groups: vec![],
            meta: PeerMeta {
                os: os.into(),
                client_version: client.into(),
                kernel_version: kernel.into(),
                os_version: os_version.into(),
                network_addresses: vec!["192.168.1.20/24".parse().unwrap()],
                files: vec![FileStatus {
                    path: "/usr/bin/falcon".into(),
                    exists: true,
                    process_running: true,
                }],
                ..Default::default()
            },
            connected: false,
            last_seen_at: 0,
            created_at: 0,
            approved: true,
            ephemeral: false,
            setup_key_id: None,
        }
    }

    #[test]
    fn checks() {
        let p = peer("linux", "0.44.0", "6.1.0-13-amd64", "12");
        let mut c = PostureChecks {
            client_version: Some(MinVersionCheck {
                min_version: "0.45.0".into(),
            }),
            ..Default::default()
        };
        assert!(evaluate(&c, &p).unwrap().contains("below"));
        c.client_version = Some(MinVersionCheck {
            min_version: "0.40.0".into(),
        });
        assert_eq!(evaluate(&c, &p), None);

        c.os_version = Some(OsVersionCheck {
            darwin: Some("13".into()),
            ..Default::default()
        });
        assert!(evaluate(&c, &p).unwrap().contains("not allowed"));
        c.os_version = Some(OsVersionCheck {
            linux: Some("5.10".into()),
            ..Default::default()
        });
        assert_eq!(evaluate(&c, &p), None);

        c.peer_network_range = Some(NetworkRangeCheck {
            ranges: vec!["10.0.0.0/8".parse().unwrap()],
            action: RangeAction::Allow,
        });
        assert!(evaluate(&c, &p).is_some());
        c.peer_network_range = Some(NetworkRangeCheck {
            ranges: vec!["192.168.0.0/16".parse().unwrap()],
            action: RangeAction::Deny,
        });
        assert!(evaluate(&c, &p).is_some());
        c.peer_network_range = None;

        c.process = Some(ProcessCheck {
            processes: vec![ProcessSpec {
                linux_path: Some("/usr/bin/falcon".into()),
                ..Default::default()
            }],
        });
        assert_eq!(evaluate(&c, &p), None);
        c.process = Some(ProcessCheck {
            processes: vec![ProcessSpec {
                linux_path: Some("/opt/edr".into()),
                ..Default::default()
            }],
        });
        assert!(evaluate(&c, &p).unwrap().contains("not running"));
    }

    fn reasons(c: &PostureChecks, p: &Peer) -> Vec<(bool, String)> {
        verdicts(c, p)
            .into_iter()
            .map(|v| (v.passed, v.reason))
            .collect()
    }

    /// Issue 12, defect 7: every check says why it passes or fails, naming what the peer
    /// reported and what the check wants.
    #[test]
    fn verdicts_name_the_reason() {
        let mut p = peer("linux", "0.1.0", "5.4.0-150-generic", "20.04");
        p.meta.ui_version = "swiftgate/0.1.0".into();
        let c = PostureChecks {
            client_version: Some(MinVersionCheck {
                min_version: "0.45.0".into(),
            }),
            os_version: Some(OsVersionCheck {
                linux: Some("5.10".into()),
                darwin: Some("13".into()),
                ..Default::default()
            }),
            peer_network_range: Some(NetworkRangeCheck {
                ranges: vec!["192.0.2.0/24".parse().unwrap()],
                action: RangeAction::Allow,
            }),
            process: Some(ProcessCheck {
                processes: vec![
                    ProcessSpec {
                        linux_path: Some("/opt/x".into()),
                        ..Default::default()
                    },
                    ProcessSpec {
                        linux_path: Some("/usr/bin/falcon".into()),
                        ..Default::default()
                    },
                    ProcessSpec {
                        mac_path: Some("/Applications/x".into()),
                        ..Default::default()
                    },
                ],
            }),
        };
        assert_eq!(
            reasons(&c, &p),
            vec![
                (
                    false,
                    "client version 0.1.0 below minimum 0.45.0 (agent swiftgate/0.1.0)".into()
                ),
                (
                    false,
                    "linux kernel 5.4.0-150-generic below minimum 5.10".into()
                ),
                (false, "no network address in 192.0.2.0/24".into()),
                (
                    false,
                    "process /opt/x not running (not reported by the agent yet)".into()
                ),
                (true, "process /usr/bin/falcon running".into()),
                (false, "the process check names no path for OS linux".into()),
            ]
        );
        assert_eq!(
            evaluate(&c, &p).as_deref(),
            Some("client version 0.1.0 below minimum 0.45.0 (agent swiftgate/0.1.0)")
        );

        // The NetBird protocol level the agent reports in netbirdVersion passes; a
        // pre-release of the minimum does not; build metadata is ignored.
        let min = |v: &str| PostureChecks {
            client_version: Some(MinVersionCheck {
                min_version: v.into(),
            }),
            ..Default::default()
        };
        for (have, want, ok) in [
            ("0.77.1", "0.45.0", true),
            ("0.45.0", "0.45", true),
            ("0.45.0+swiftgate.0.1.0", "0.45.0", true),
            ("v0.60.0", "0.45.0", true),
            ("0.45.0-rc1", "0.45.0", false),
            ("0.45.0-rc1", "0.44.0", true),
            ("0.9.0", "0.45.0", false),
            ("development", "0.45.0", false),
            ("", "0.45.0", false),
        ] {
            p.meta.client_version = have.into();
            let v = verdicts(&min(want), &p);
            assert_eq!(v[0].passed, ok, "{have} vs {want}: {}", v[0].reason);
        }
        p.meta.client_version = "development".into();
        assert_eq!(
            evaluate(&min("0.45.0"), &p).as_deref(),
            Some(
                "client version \"development\" is not a version number (minimum 0.45.0) \
                 (agent swiftgate/0.1.0)"
            )
        );
        p.meta.ui_version.clear();
        p.meta.client_version = "0.77.1".into();
        assert_eq!(
            reasons(&min("0.45.0"), &p),
            vec![(true, "client version 0.77.1 meets minimum 0.45.0".into())]
        );

        // Other OSes, deny ranges, missing files.
        let q = peer("freebsd", "0.77.1", "14.0", "14.0");
        assert_eq!(
            reasons(
                &PostureChecks {
                    os_version: c.os_version.clone(),
                    ..Default::default()
                },
                &q
            ),
            vec![(
                false,
                "OS freebsd is not allowed (allowed: linux, darwin)".into()
            )]
        );
        let deny = PostureChecks {
            peer_network_range: Some(NetworkRangeCheck {
                ranges: vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "192.168.0.0/16".parse().unwrap(),
                ],
                action: RangeAction::Deny,
            }),
            ..Default::default()
        };
        assert_eq!(
            reasons(&deny, &p),
            vec![(
                false,
                "network address 192.168.1.20/24 in denied range 192.168.0.0/16".into()
            )]
        );
        p.meta.network_addresses = vec!["172.16.0.2/24".parse().unwrap()];
        assert_eq!(
            reasons(&deny, &p),
            vec![(
                true,
                "no network address in denied 10.0.0.0/8, 192.168.0.0/16".into()
            )]
        );
        p.meta.files[0].process_running = false;
        p.meta.files[0].exists = false;
        let falcon = PostureChecks {
            process: Some(ProcessCheck {
                processes: vec![ProcessSpec {
                    linux_path: Some("/usr/bin/falcon".into()),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        assert_eq!(
            evaluate(&falcon, &p).as_deref(),
            Some("process /usr/bin/falcon not running (no such file)")
        );
    }
}
