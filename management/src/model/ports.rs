//! Protocols and destination port ranges of policy rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The protocol a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Every protocol.
    All,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (v4 and v6).
    Icmp,
}

impl Protocol {
    /// Whether rules of this protocol may name ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "all" | "any" => Ok(Protocol::All),
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            _ => Err(format!("unknown protocol {s:?}: use all, tcp, udp or icmp")),
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

/// An inclusive destination port range; a single port has `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port (>= 1).
    pub start: u16,
    /// Last port (>= start).
    pub end: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// Builds a range from wide integers, refusing port 0, ports above 65535 and reversed
    /// ranges.
    pub fn new(start: u64, end: u64) -> Result<Self, String> {
        if start == 0 || end == 0 {
            return Err("port 0 is not a valid port".into());
        }
        if start > 65535 || end > 65535 {
            return Err(format!(
                "port {} is above 65535",
                if start > 65535 { start } else { end }
            ));
        }
        if start > end {
            return Err(format!("reversed port range {start}-{end}"));
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
}

impl FromStr for PortRange {
    type Err = String;

    /// Parses `"443"` or `"8000-8080"`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let num = |x: &str| -> Result<u64, String> {
            x.trim()
                .parse::<u64>()
                .map_err(|_| format!("bad port {s:?}: expected a number or a range like 8000-8080"))
        };
        match t.split_once('-') {
            Some((a, b)) => PortRange::new(num(a)?, num(b)?),
            None => {
                let p = num(t)?;
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

    #[test]
    fn parses_ports_and_ranges() {
        assert_eq!("443".parse::<PortRange>().unwrap(), PortRange::single(443));
        assert_eq!(
            "8000-8080".parse::<PortRange>().unwrap(),
            PortRange {
                start: 8000,
                end: 8080
            }
        );
        assert!("0".parse::<PortRange>().unwrap_err().contains("port 0"));
        assert!(
            "90-80"
                .parse::<PortRange>()
                .unwrap_err()
                .contains("reversed")
        );
        assert!("70000".parse::<PortRange>().unwrap_err().contains("65535"));
        assert!(
            "http"
                .parse::<PortRange>()
                .unwrap_err()
                .contains("bad port")
        );
        assert_eq!(PortRange::single(53).to_string(), "53");
        assert_eq!(PortRange::new(1, 2).unwrap().to_string(), "1-2");
    }

    #[test]
    fn protocols() {
        assert_eq!("TCP".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert!("sctp".parse::<Protocol>().is_err());
        assert!(Protocol::Udp.has_ports());
        assert!(!Protocol::Icmp.has_ports());
    }
}
