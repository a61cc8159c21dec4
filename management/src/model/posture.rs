//! Posture-check evaluation against what a peer reports, and the version comparison it uses.
//!
//! Geo-location checks are not offered: they need a GeoIP database (country/city of the
//! peer's connection address), which this server does not ship. A request that asks for one
//! is refused with a message saying so.

use std::cmp::Ordering;

use super::types::{Peer, PostureChecks, RangeAction};

/// Parses the leading dotted numbers of a version: `"v0.45.1-rc1"` -> `[0, 45, 1]`,
/// `"6.1.0-13-amd64"` -> `[6, 1, 0]`, `"22.04"` -> `[22, 4]`. `None` when it does not start
/// with a number.
pub fn parse_version(v: &str) -> Option<Vec<u64>> {
    let v = v.trim();
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let mut out = Vec::new();
    for part in v.split('.') {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            break;
        }
        out.push(digits.parse().ok()?);
        if digits.len() != part.len() {
            break;
        }
    }
    if out.is_empty() { None } else { Some(out) }
}

/// Compares two versions numerically, missing components counting as 0. `None` if either does
/// not parse.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse_version(a)?, parse_version(b)?);
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            Ordering::Equal => continue,
            o => return Some(o),
        }
    }
    Some(Ordering::Equal)
}

/// `have >= min`; an unparsable `have` fails.
fn at_least(have: &str, min: &str) -> bool {
    matches!(
        compare_versions(have, min),
        Some(Ordering::Greater | Ordering::Equal)
    )
}

/// The path a process check looks for on the peer's OS, if it names one.
pub fn process_path_for_os<'a>(spec: &'a super::types::ProcessSpec, os: &str) -> Option<&'a str> {
    match os {
        "linux" => spec.linux_path.as_deref(),
        "darwin" => spec.mac_path.as_deref(),
        "windows" => spec.windows_path.as_deref(),
        _ => None,
    }
}

/// Why a peer fails a posture check; `None` when it passes every check.
pub fn evaluate(checks: &PostureChecks, peer: &Peer) -> Option<String> {
    let meta = &peer.meta;
    if let Some(c) = &checks.client_version
        && !at_least(&meta.client_version, &c.min_version)
    {
        return Some(format!(
            "client version {:?} is below {}",
            meta.client_version, c.min_version
        ));
    }
    if let Some(c) = &checks.os_version {
        let (min, have) = match meta.os.as_str() {
            "linux" => (c.linux.as_deref(), &meta.kernel_version),
            "windows" => (c.windows.as_deref(), &meta.kernel_version),
            "darwin" => (c.darwin.as_deref(), &meta.os_version),
            "ios" => (c.ios.as_deref(), &meta.os_version),
            "android" => (c.android.as_deref(), &meta.os_version),
            _ => (None, &meta.os_version),
        };
        match min {
            None => return Some(format!("OS {:?} is not allowed", meta.os)),
            Some(min) if !at_least(have, min) => {
                return Some(format!("{} version {have:?} is below {min}", meta.os));
            }
            Some(_) => {}
        }
    }
    if let Some(c) = &checks.peer_network_range {
        let inside = meta
            .network_addresses
            .iter()
            .any(|a| c.ranges.iter().any(|r| r.contains(&a.addr())));
        match (c.action, inside) {
            (RangeAction::Allow, false) => {
                return Some("no local address in an allowed range".into());
            }
            (RangeAction::Deny, true) => {
                return Some("a local address is in a denied range".into());
            }
            _ => {}
        }
    }
    if let Some(c) = &checks.process {
        for spec in &c.processes {
            let Some(path) = process_path_for_os(spec, &meta.os) else {
                return Some(format!("no process path for OS {:?}", meta.os));
            };
            let running = meta
                .files
                .iter()
                .any(|f| f.path == path && f.process_running);
            if !running {
                return Some(format!("process {path} is not running"));
            }
        }
    }
    None
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
    fn versions() {
        assert_eq!(parse_version("v0.45.1-rc1"), Some(vec![0, 45, 1]));
        assert_eq!(parse_version("6.1.0-13-amd64"), Some(vec![6, 1, 0]));
        assert_eq!(parse_version("development"), None);
        assert_eq!(compare_versions("0.45", "0.45.0"), Some(Ordering::Equal));
        assert_eq!(compare_versions("0.9.0", "0.45.0"), Some(Ordering::Less));
        assert_eq!(compare_versions("1.0.0", "0.45.0"), Some(Ordering::Greater));
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
}
