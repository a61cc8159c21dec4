//! The rule vocabulary in NetBird's protobuf form (`management.proto`): `RuleProtocol`,
//! `RuleAction`, `RuleDirection` and `PortInfo`, both ways. Values swiftgate cannot enforce
//! (`UNKNOWN`, `CUSTOM`, `NETBIRD_SSH`, unknown numbers) are errors, so a caller decides how to
//! fail closed rather than guessing.

use swiftgate_proto::management::{
    PortInfo, RuleAction, RuleDirection, RuleProtocol,
    port_info::{PortSelection, Range},
};

use crate::{Action, Direction, PortRange, Protocol, RuleError};

impl Protocol {
    /// From `RuleProtocol`.
    pub fn from_pb(v: i32) -> Result<Protocol, RuleError> {
        match RuleProtocol::try_from(v) {
            Ok(RuleProtocol::All) => Ok(Protocol::All),
            Ok(RuleProtocol::Tcp) => Ok(Protocol::Tcp),
            Ok(RuleProtocol::Udp) => Ok(Protocol::Udp),
            Ok(RuleProtocol::Icmp) => Ok(Protocol::Icmp),
            _ => Err(RuleError::Unsupported {
                what: "protocol",
                value: v,
            }),
        }
    }

    /// As `RuleProtocol`.
    pub fn to_pb(self) -> i32 {
        (match self {
            Protocol::All => RuleProtocol::All,
            Protocol::Tcp => RuleProtocol::Tcp,
            Protocol::Udp => RuleProtocol::Udp,
            Protocol::Icmp => RuleProtocol::Icmp,
        }) as i32
    }
}

impl Action {
    /// From `RuleAction`.
    pub fn from_pb(v: i32) -> Result<Action, RuleError> {
        match RuleAction::try_from(v) {
            Ok(RuleAction::Accept) => Ok(Action::Accept),
            Ok(RuleAction::Drop) => Ok(Action::Drop),
            Err(_) => Err(RuleError::Unsupported {
                what: "action",
                value: v,
            }),
        }
    }

    /// As `RuleAction`.
    pub fn to_pb(self) -> i32 {
        (match self {
            Action::Accept => RuleAction::Accept,
            Action::Drop => RuleAction::Drop,
        }) as i32
    }
}

impl Direction {
    /// From `RuleDirection`.
    pub fn from_pb(v: i32) -> Result<Direction, RuleError> {
        match RuleDirection::try_from(v) {
            Ok(RuleDirection::In) => Ok(Direction::In),
            Ok(RuleDirection::Out) => Ok(Direction::Out),
            Err(_) => Err(RuleError::Unsupported {
                what: "direction",
                value: v,
            }),
        }
    }

    /// As `RuleDirection`.
    pub fn to_pb(self) -> i32 {
        (match self {
            Direction::In => RuleDirection::In,
            Direction::Out => RuleDirection::Out,
        }) as i32
    }
}

/// The ports a rule names: `Ok(None)` for every port. Reads `portInfo` first and falls back
/// to the deprecated `port` text of `FirewallRule` (`""` or `"0"`: every port), as NetBird's
/// clients do. A port 0 inside a present selection, or `{start: 0, end: 0}`, means every port
/// (what NetBird's server sends for a rule without ports).
pub fn ports(info: Option<&PortInfo>, legacy: &str) -> Result<Option<PortRange>, RuleError> {
    match info.and_then(|i| i.port_selection.as_ref()) {
        Some(PortSelection::Port(0)) => {}
        Some(PortSelection::Port(p)) => return PortRange::new((*p).into(), (*p).into()).map(Some),
        Some(PortSelection::Range(Range { start: 0, end: 0 })) => {}
        Some(PortSelection::Range(r)) => {
            return PortRange::new(r.start.into(), r.end.into()).map(Some);
        }
        None => {}
    }
    match legacy.trim() {
        "" | "0" => Ok(None),
        text => text.parse().map(Some),
    }
}

fn selection(p: PortRange) -> PortSelection {
    if p.is_single() {
        PortSelection::Port(u32::from(p.start))
    } else {
        PortSelection::Range(Range {
            start: u32::from(p.start),
            end: u32::from(p.end),
        })
    }
}

/// A port selection as `PortInfo` (`None` for every port); a single port as `port`, a range as
/// `range`.
pub fn port_info(ports: Option<PortRange>) -> Option<PortInfo> {
    ports.map(|p| PortInfo {
        port_selection: Some(selection(p)),
    })
}

/// A peer ACL rule's `(Port, PortInfo)` as NetBird's server fills them: a single port as text
/// in the deprecated `Port` and no `PortInfo`; a range in `PortInfo`; a TCP or UDP rule without
/// ports gets `PortInfo` range 0-0 (read as "every port"); other protocols get neither.
pub fn firewall_rule_ports(
    protocol: Protocol,
    ports: Option<PortRange>,
) -> (String, Option<PortInfo>) {
    match ports {
        Some(p) if p.is_single() => (p.start.to_string(), None),
        Some(p) => (String::new(), port_info(Some(p))),
        None if protocol.has_ports() => (
            String::new(),
            Some(PortInfo {
                port_selection: Some(PortSelection::Range(Range { start: 0, end: 0 })),
            }),
        ),
        None => (String::new(), None),
    }
}

/// A route ACL rule's `PortInfo` as NetBird's server fills it: always present, without a
/// selection when the rule has no ports.
pub fn route_rule_port_info(ports: Option<PortRange>) -> PortInfo {
    PortInfo {
        port_selection: ports.map(selection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_and_unsupported_values_are_named() {
        for p in [Protocol::All, Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
            assert_eq!(Protocol::from_pb(p.to_pb()), Ok(p));
        }
        for a in [Action::Accept, Action::Drop] {
            assert_eq!(Action::from_pb(a.to_pb()), Ok(a));
        }
        for d in [Direction::In, Direction::Out] {
            assert_eq!(Direction::from_pb(d.to_pb()), Ok(d));
        }
        for bad in [
            RuleProtocol::Unknown as i32,
            RuleProtocol::Custom as i32,
            RuleProtocol::NetbirdSsh as i32,
            99,
        ] {
            let e = Protocol::from_pb(bad).unwrap_err();
            assert_eq!(e.to_string(), format!("protocol {bad} is not supported"));
        }
        assert!(Action::from_pb(7).is_err());
        assert!(Direction::from_pb(-1).is_err());
    }

    #[test]
    fn port_info_both_ways() {
        let info = |s| {
            Some(PortInfo {
                port_selection: Some(s),
            })
        };
        assert_eq!(ports(None, ""), Ok(None));
        assert_eq!(ports(None, "0"), Ok(None));
        assert_eq!(ports(None, "22"), Ok(Some(PortRange::single(22))));
        assert_eq!(ports(Some(&PortInfo::default()), ""), Ok(None));
        assert_eq!(
            ports(info(PortSelection::Port(443)).as_ref(), "80"),
            Ok(Some(PortRange::single(443))),
            "portInfo wins over the deprecated port"
        );
        assert_eq!(
            ports(info(PortSelection::Port(0)).as_ref(), ""),
            Ok(None),
            "port 0 means every port"
        );
        assert_eq!(
            ports(
                info(PortSelection::Range(Range { start: 0, end: 0 })).as_ref(),
                ""
            ),
            Ok(None)
        );
        assert_eq!(
            ports(
                info(PortSelection::Range(Range {
                    start: 9000,
                    end: 8000
                }))
                .as_ref(),
                ""
            ),
            Err(RuleError::Reversed(9000, 8000))
        );
        assert_eq!(
            ports(info(PortSelection::Port(70000)).as_ref(), ""),
            Err(RuleError::PortTooLarge(70000))
        );
        assert!(ports(None, "ssh").is_err());
        for r in [PortRange::single(53), PortRange::new(1000, 2000).unwrap()] {
            assert_eq!(ports(port_info(Some(r)).as_ref(), ""), Ok(Some(r)));
        }
        assert_eq!(port_info(None), None);
    }

    /// NetBird's server's encodings read back as what they encode.
    #[test]
    fn netbird_encodings_round_trip() {
        for proto in [Protocol::All, Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
            let ranges: &[Option<PortRange>] = if proto.has_ports() {
                &[None, Some(PortRange::single(22)), Some(PortRange::ALL)]
            } else {
                &[None]
            };
            for r in ranges {
                let (legacy, info) = firewall_rule_ports(proto, *r);
                assert_eq!(ports(info.as_ref(), &legacy), Ok(*r), "{proto} {r:?}");
                assert_eq!(ports(Some(&route_rule_port_info(*r)), ""), Ok(*r));
            }
        }
        assert_eq!(
            firewall_rule_ports(Protocol::Tcp, Some(PortRange::single(443))).0,
            "443"
        );
        assert!(route_rule_port_info(None).port_selection.is_none());
    }
}
