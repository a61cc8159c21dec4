//! Builds swiftgate configuration files (the TOML format of docs/config.md).

use std::fmt::Write as _;

/// The `[interface]` table.
#[derive(Clone, Debug)]
pub struct Interface {
    /// Overlay interface (a TUN in the tests).
    pub overlay: String,
    /// Whether the overlay carries Ethernet headers (false for TUN).
    pub overlay_l2: bool,
    /// Own overlay addresses with prefix length.
    pub addresses: Vec<String>,
    /// LAN interfaces.
    pub lan: Vec<String>,
    /// Overlay MTU.
    pub mtu: u32,
    /// Pin path: always per test.
    pub pin_path: String,
}

/// A `[[peers]]` entry.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Unique name.
    pub name: String,
    /// Overlay addresses.
    pub ips: Vec<String>,
    /// Peer groups.
    pub groups: Vec<String>,
}

impl Peer {
    /// A peer with the given overlay addresses and groups.
    pub fn new(name: &str, ips: &[&str], groups: &[&str]) -> Self {
        Peer {
            name: name.into(),
            ips: strings(ips),
            groups: strings(groups),
        }
    }
}

/// A `[[networks.resources]]` entry.
#[derive(Clone, Debug)]
pub struct Resource {
    /// Unique name.
    pub name: String,
    /// One IP or a CIDR.
    pub address: String,
    /// Resource groups.
    pub groups: Vec<String>,
}

/// A `[[networks]]` entry.
#[derive(Clone, Debug)]
pub struct Network {
    /// Unique name.
    pub name: String,
    /// Masquerade (SNAT to the routing peer's LAN address); `None` leaves the default (true).
    pub masquerade: Option<bool>,
    /// The Network's resources.
    pub resources: Vec<Resource>,
}

impl Network {
    /// A Network with an explicit masquerade setting and no resources yet.
    pub fn new(name: &str, masquerade: bool) -> Self {
        Network {
            name: name.into(),
            masquerade: Some(masquerade),
            resources: Vec::new(),
        }
    }

    /// Adds a resource.
    pub fn resource(mut self, name: &str, address: &str, groups: &[&str]) -> Self {
        self.resources.push(Resource {
            name: name.into(),
            address: address.into(),
            groups: strings(groups),
        });
        self
    }
}

/// A `[[policies]]` entry.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Unique name.
    pub name: String,
    /// Source groups or names.
    pub sources: Vec<String>,
    /// Destination groups, names or "self".
    pub destinations: Vec<String>,
    /// all | tcp | udp | icmp.
    pub protocol: String,
    /// Ports or ranges ("443", "8000-8080"); empty means the key is left out.
    pub ports: Vec<String>,
    /// accept | drop; `None` leaves the default (accept).
    pub action: Option<String>,
    /// `None` leaves the default (true).
    pub enabled: Option<bool>,
    /// `None` leaves the default (false).
    pub bidirectional: Option<bool>,
}

impl Policy {
    /// An accept policy.
    pub fn accept(
        name: &str,
        sources: &[&str],
        destinations: &[&str],
        protocol: &str,
        ports: &[&str],
    ) -> Self {
        Policy {
            name: name.into(),
            sources: strings(sources),
            destinations: strings(destinations),
            protocol: protocol.into(),
            ports: strings(ports),
            action: None,
            enabled: None,
            bidirectional: None,
        }
    }
}

/// A whole configuration file.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// `[interface]`.
    pub interface: Interface,
    /// `[[peers]]`.
    pub peers: Vec<Peer>,
    /// `[[networks]]`.
    pub networks: Vec<Network>,
    /// `[[policies]]`.
    pub policies: Vec<Policy>,
}

impl ConfigFile {
    /// A configuration with the given interface table and nothing else.
    pub fn new(interface: Interface) -> Self {
        ConfigFile {
            interface,
            peers: Vec::new(),
            networks: Vec::new(),
            policies: Vec::new(),
        }
    }

    /// Adds a peer.
    pub fn peer(mut self, p: Peer) -> Self {
        self.peers.push(p);
        self
    }

    /// Adds a Network.
    pub fn network(mut self, n: Network) -> Self {
        self.networks.push(n);
        self
    }

    /// Adds a policy.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policies.push(p);
        self
    }

    /// Removes the policy called `name` (no-op if absent).
    pub fn without_policy(mut self, name: &str) -> Self {
        self.policies.retain(|p| p.name != name);
        self
    }

    /// Renders the TOML file.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let i = &self.interface;
        // Writing to a String cannot fail.
        let _ = writeln!(s, "[interface]");
        let _ = writeln!(s, "overlay = {}", q(&i.overlay));
        let _ = writeln!(s, "overlay_l2 = {}", i.overlay_l2);
        let _ = writeln!(s, "addresses = {}", list(&i.addresses));
        let _ = writeln!(s, "lan = {}", list(&i.lan));
        let _ = writeln!(s, "mtu = {}", i.mtu);
        let _ = writeln!(s, "pin_path = {}", q(&i.pin_path));
        for p in &self.peers {
            let _ = writeln!(s, "\n[[peers]]");
            let _ = writeln!(s, "name = {}", q(&p.name));
            let _ = writeln!(s, "ips = {}", list(&p.ips));
            let _ = writeln!(s, "groups = {}", list(&p.groups));
        }
        for n in &self.networks {
            let _ = writeln!(s, "\n[[networks]]");
            let _ = writeln!(s, "name = {}", q(&n.name));
            if let Some(m) = n.masquerade {
                let _ = writeln!(s, "masquerade = {m}");
            }
            for r in &n.resources {
                let _ = writeln!(s, "[[networks.resources]]");
                let _ = writeln!(s, "name = {}", q(&r.name));
                let _ = writeln!(s, "address = {}", q(&r.address));
                let _ = writeln!(s, "groups = {}", list(&r.groups));
            }
        }
        for p in &self.policies {
            let _ = writeln!(s, "\n[[policies]]");
            let _ = writeln!(s, "name = {}", q(&p.name));
            let _ = writeln!(s, "sources = {}", list(&p.sources));
            let _ = writeln!(s, "destinations = {}", list(&p.destinations));
            let _ = writeln!(s, "protocol = {}", q(&p.protocol));
            if !p.ports.is_empty() {
                let _ = writeln!(s, "ports = {}", list(&p.ports));
            }
            if let Some(a) = &p.action {
                let _ = writeln!(s, "action = {}", q(a));
            }
            if let Some(e) = p.enabled {
                let _ = writeln!(s, "enabled = {e}");
            }
            if let Some(b) = p.bidirectional {
                let _ = writeln!(s, "bidirectional = {b}");
            }
        }
        s
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_toml() {
        let cfg = ConfigFile::new(Interface {
            overlay: "sg0".into(),
            overlay_l2: false,
            addresses: vec!["100.64.0.1/16".into()],
            lan: vec!["lan0".into()],
            mtu: 1280,
            pin_path: "/sys/fs/bpf/x".into(),
        })
        .peer(Peer::new("alice", &["100.64.0.2"], &["Development"]))
        .network(Network::new("Berlin \"Office\"", true).resource(
            "Wiki",
            "192.0.2.10/32",
            &["Apps"],
        ))
        .policy(Policy::accept(
            "p",
            &["Development"],
            &["Apps"],
            "tcp",
            &["443"],
        ));
        let text = cfg.to_toml();
        let v: toml::Value = toml::from_str(&text).expect("the rendered config is valid TOML");
        assert_eq!(v["networks"][0]["name"].as_str(), Some("Berlin \"Office\""));
        assert_eq!(
            v["networks"][0]["resources"][0]["address"].as_str(),
            Some("192.0.2.10/32")
        );
        assert_eq!(v["policies"][0]["ports"][0].as_str(), Some("443"));
    }
}
