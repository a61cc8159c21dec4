//! The one rule vocabulary of swiftgate, shared by the management server's model, its
//! network-map encoder and the agent: [`Protocol`], [`Action`], [`PortRange`] and
//! [`Direction`].
//!
//! Each type has exactly one text form (parsed by `FromStr`, written by `Display`, used by
//! serde) and one protobuf form (NetBird's `RuleProtocol`, `RuleAction`, `RuleDirection` and
//! `PortInfo`, in [`pb`]). Text is parsed here and only here: the TOML file and the REST API
//! are the front doors that call these parsers; the network map arrives typed.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

pub mod pb;

/// Why a rule's protocol, action, direction or port could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A protocol name that is not one of ours.
    #[error("unknown protocol `{0}`: expected all, tcp, udp or icmp")]
    UnknownProtocol(String),
    /// An action name that is not one of ours.
    #[error("unknown action `{0}`: expected accept or drop")]
    UnknownAction(String),
    /// A direction name that is not one of ours.
    #[error("unknown direction `{0}`: expected in or out")]
    UnknownDirection(String),
    /// Text that is neither a port nor a range.
    #[error("`{0}` is not a port or port range (expected e.g. 443 or 8000-8080)")]
    NotAPort(String),
    /// Port 0.
    #[error("port 0 is not a valid port")]
    PortZero,
    /// A number above 65535.
    #[error("port {0} is above 65535")]
    PortTooLarge(u64),
    /// `start > end`.
    #[error("reversed port range {0}-{1}")]
    Reversed(u64, u64),
    /// Ports on a rule whose protocol has none.
    #[error("ports need protocol tcp or udp, not {0}")]
    PortsWithoutPortProtocol(Protocol),
    /// A protobuf enum value outside what swiftgate can enforce.
    #[error("{what} {value} is not supported")]
    Unsupported {
        /// Which field.
        what: &'static str,
        /// The wire value.
        value: i32,
    },
}

/// The protocol a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Every protocol, every port.
    All,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
}

impl Protocol {
    /// Whether rules of this protocol may name ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }

    /// IP protocol number (ICMP's for both families), `None` for [`Protocol::All`].
    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::All => None,
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(1),
        }
    }
}

impl FromStr for Protocol {
    type Err = RuleError;
    /// `all` (alias `any`), `tcp`, `udp`, `icmp`; case does not matter.
    fn from_str(s: &str) -> Result<Self, RuleError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" | "any" => Ok(Protocol::All),
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            _ => Err(RuleError::UnknownProtocol(s.to_string())),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::All => "all",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        })
    }
}

/// What a matching flow gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Accept,
    /// Drop it; drop beats accept wherever both match.
    Drop,
}

impl FromStr for Action {
    type Err = RuleError;
    /// `accept` (alias `allow`) or `drop` (alias `deny`); case does not matter.
    fn from_str(s: &str) -> Result<Self, RuleError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "accept" | "allow" => Ok(Action::Accept),
            "drop" | "deny" => Ok(Action::Drop),
            _ => Err(RuleError::UnknownAction(s.to_string())),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Accept => "accept",
            Action::Drop => "drop",
        })
    }
}

/// Direction of a peer-ACL rule, seen from the peer that enforces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic from the rule's remote side to this peer.
    In,
    /// Traffic from this peer to the rule's remote side.
    Out,
}

impl FromStr for Direction {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "in" => Ok(Direction::In),
            "out" => Ok(Direction::Out),
            _ => Err(RuleError::UnknownDirection(s.to_string())),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
        })
    }
}

/// An inclusive destination port range; one port has `start == end`. Never contains port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port (>= 1).
    pub start: u16,
    /// Last port (>= start).
    pub end: u16,
}

impl PortRange {
    /// Every port, 1-65535.
    pub const ALL: PortRange = PortRange {
        start: 1,
        end: 65535,
    };

    /// One port (`port` must not be 0; see [`PortRange::new`] for checked input).
    pub fn single(port: u16) -> Self {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// Builds a range from wide integers (as JSON and protobuf carry them), refusing port 0,
    /// ports above 65535 and reversed ranges.
    pub fn new(start: u64, end: u64) -> Result<Self, RuleError> {
        if start == 0 || end == 0 {
            return Err(RuleError::PortZero);
        }
        if start > 65535 || end > 65535 {
            return Err(RuleError::PortTooLarge(start.max(end)));
        }
        if start > end {
            return Err(RuleError::Reversed(start, end));
        }
        Ok(PortRange {
            start: start as u16,
            end: end as u16,
        })
    }

    /// Whether this is one port.
    pub fn is_single(&self) -> bool {
        self.start == self.end
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl FromStr for PortRange {
    type Err = RuleError;

    /// `"443"` or `"8000-8080"` (spaces around the parts are allowed).
    fn from_str(s: &str) -> Result<Self, RuleError> {
        let num = |x: &str| -> Result<u64, RuleError> {
            x.trim()
                .parse::<u64>()
                .map_err(|_| RuleError::NotAPort(s.to_string()))
        };
        match s.trim().split_once('-') {
            Some((a, b)) => PortRange::new(num(a)?, num(b)?),
            None => {
                let p = num(s)?;
                PortRange::new(p, p)
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ports_and_ranges_parse_with_named_errors() {
        assert_eq!("443".parse::<PortRange>().unwrap(), PortRange::single(443));
        assert_eq!(
            " 8000 - 8080 ".parse::<PortRange>().unwrap(),
            PortRange {
                start: 8000,
                end: 8080
            }
        );
        assert_eq!("0".parse::<PortRange>(), Err(RuleError::PortZero));
        assert_eq!(
            "90-80".parse::<PortRange>(),
            Err(RuleError::Reversed(90, 80))
        );
        assert_eq!(
            "70000".parse::<PortRange>(),
            Err(RuleError::PortTooLarge(70000))
        );
        assert!(matches!(
            "http".parse::<PortRange>(),
            Err(RuleError::NotAPort(_))
        ));
        assert!("".parse::<PortRange>().is_err());
        assert!("a-b".parse::<PortRange>().is_err());
        assert_eq!(PortRange::single(53).to_string(), "53");
        assert_eq!(PortRange::new(1, 2).unwrap().to_string(), "1-2");
    }

    #[test]
    fn names_parse_in_one_place() {
        assert_eq!("TCP".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!("any".parse::<Protocol>().unwrap(), Protocol::All);
        assert_eq!(
            "sctp".parse::<Protocol>().unwrap_err().to_string(),
            "unknown protocol `sctp`: expected all, tcp, udp or icmp"
        );
        assert_eq!("deny".parse::<Action>().unwrap(), Action::Drop);
        assert!("maybe".parse::<Action>().is_err());
        assert_eq!("OUT".parse::<Direction>().unwrap(), Direction::Out);
        assert!(Protocol::Udp.has_ports() && !Protocol::Icmp.has_ports());
        assert_eq!(Protocol::All.number(), None);
        assert_eq!(
            serde_json::to_string(&(Protocol::Icmp, Action::Drop, PortRange::single(22))).unwrap(),
            r#"["icmp","drop","22"]"#
        );
    }

    proptest! {
        /// Text form round-trips, and `contains` agrees with the bounds.
        #[test]
        fn port_ranges_round_trip(a in 1u16.., b in 1u16.., p in any::<u16>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let r = PortRange::new(lo.into(), hi.into()).unwrap();
            prop_assert_eq!(r.to_string().parse::<PortRange>().unwrap(), r);
            prop_assert_eq!(r.contains(p), lo <= p && p <= hi);
        }
    }
}
