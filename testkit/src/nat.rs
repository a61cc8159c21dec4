//! NAT labs: home namespaces behind NAT routers (nftables masquerade) on an "internet"
//! namespace, and coturn on that internet as the STUN and TURN server. Shared by the NAT
//! traversal tests and the connection benchmark.

use std::process::{Child, Command, Stdio};

use crate::wg::{Lab, sh};

/// coturn in a namespace, killed when dropped (before the lab removes the namespace).
pub struct Coturn(Child);

impl Coturn {
    /// The server's process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The secret coturn and the management server share for TURN credentials.
pub const TURN_SECRET: &str = "nat-traversal-test-secret";

/// The management server's TURN settings for [`coturn`]'s server: credentials from
/// [`TURN_SECRET`], lasting `ttl`.
pub fn turn_config(ttl: std::time::Duration) -> swiftgate_management::turn::TurnConfig {
    turn_config_at("turn:203.0.113.1:3478?transport=udp", ttl)
}

/// [`turn_config`] for the TURN server at `uri`.
pub fn turn_config_at(
    uri: &str,
    ttl: std::time::Duration,
) -> swiftgate_management::turn::TurnConfig {
    swiftgate_management::turn::TurnConfig {
        uris: vec![uri.into()],
        secret: swiftgate_management::turn::TurnSecret::new(TURN_SECRET),
        ttl,
    }
}

/// coturn on the "internet" at 203.0.113.1:3478: STUN only (`secret` `None`), or STUN and
/// TURN with the TURN REST-API shared secret (relaying from 203.0.113.1).
pub fn coturn(lab: &Lab, inet: usize, secret: Option<&str>) -> Coturn {
    coturn_on(lab, inet, secret, &[])
}

/// [`coturn`], also listening on and relaying from `more` (addresses `inet` already has, an
/// IPv6 one for IPv6 relayed addresses).
pub fn coturn_on(lab: &Lab, inet: usize, secret: Option<&str>, more: &[&str]) -> Coturn {
    let mut cmd = Command::new("turnserver");
    for ip in more {
        cmd.arg(format!("--listening-ip={ip}"));
        cmd.arg(format!("--relay-ip={ip}"));
    }
    cmd.args([
        "-n",
        "--listening-ip=203.0.113.1",
        "--listening-port=3478",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--simple-log",
    ])
    .arg(format!(
        "--log-file={}",
        lab.dir.join("coturn.log").display()
    ))
    .arg(format!(
        "--pidfile={}",
        lab.dir.join("coturn.pid").display()
    ))
    .arg(format!("--userdb={}", lab.dir.join("coturn.db").display()))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // For looking into a failure: coturn says what it does with every request.
    if std::env::var_os("SWIFTGATE_COTURN_VERBOSE").is_some() {
        cmd.arg("--verbose");
    }
    match secret {
        None => {
            cmd.arg("--no-auth");
        }
        Some(secret) => {
            cmd.args([
                "--use-auth-secret",
                "--realm=swiftgate.test",
                "--relay-ip=203.0.113.1",
                "--min-port=49152",
                "--max-port=49252",
            ])
            .arg(format!("--static-auth-secret={secret}"));
        }
    }
    Coturn(
        lab.n(inet)
            .spawn(&mut cmd)
            .expect("turnserver (coturn): run scripts/bootstrap.sh"),
    )
}

/// The "internet": a namespace that routes between the NAT routers' WAN links, and silently
/// loses what it has no route for, as the real one loses packets to a peer's private host
/// candidate. The default route leads into a veth pair that goes nowhere (a gateway with a
/// fixed neighbour entry, so no ARP either), and sending there succeeds. It must not fail:
/// coturn closes the whole session of an allocation whose relay socket gets a send error
/// (a `blackhole` or `unreachable` route answers `sendto` with EINVAL or EHOSTUNREACH), so
/// a check from a relay to an unroutable candidate would take the allocation down.
pub fn internet(lab: &mut Lab) -> usize {
    let inet = lab.ns("inet");
    let n = lab.n(inet);
    n.sysctl("net/ipv4/ip_forward", "1").unwrap();
    n.ip(&[
        "link", "add", "sink0", "type", "veth", "peer", "name", "sink1",
    ])
    .unwrap();
    n.ip(&["link", "set", "sink0", "up"]).unwrap();
    n.ip(&["link", "set", "sink1", "up"]).unwrap();
    n.ip(&[
        "neigh",
        "add",
        "192.0.2.254",
        "lladdr",
        "02:00:00:00:00:fe",
        "dev",
        "sink0",
        "nud",
        "permanent",
    ])
    .unwrap();
    n.ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.0.2.254",
        "dev",
        "sink0",
        "onlink",
    ])
    .unwrap();
    inet
}

/// How a NAT maps a home's UDP port.
#[derive(Clone, Copy)]
pub enum Mapping {
    /// Endpoint-independent: one mapping for every destination (Linux masquerade keeps the
    /// port when it is free).
    Cone,
    /// Address-and-port-dependent: a new random port for every destination, so what a STUN
    /// server sees is no use to a peer.
    Symmetric,
}

/// A NAT router between a new home namespace (the router's LAN address and the home's, `lan`)
/// and `inet` (the router's WAN address and the internet's, `wan`): forwarding on,
/// masquerade out of the WAN (mapping as `mapping` says), nothing new in from it. Returns
/// the router and the home.
pub fn nat(
    lab: &mut Lab,
    name: &str,
    inet: usize,
    wan: (&str, &str),
    lan: (&str, &str),
    mapping: Mapping,
) -> (usize, usize) {
    let (nat, home) = (lab.ns(&format!("{name}r")), lab.ns(&format!("{name}h")));
    lab.link(nat, "wan0", wan.0, inet, &format!("to{name}"), wan.1);
    lab.link(home, "eth0", lan.1, nat, "lan0", lan.0);
    lab.n(nat).sysctl("net/ipv4/ip_forward", "1").unwrap();
    let inet_ip = wan.1.split('/').next().unwrap();
    let gw_ip = lan.0.split('/').next().unwrap();
    lab.n(nat)
        .ip(&["route", "add", "default", "via", inet_ip])
        .unwrap();
    lab.n(home)
        .ip(&["route", "add", "default", "via", gw_ip])
        .unwrap();
    let ns = Some(lab.n(nat));
    sh(ns, &["nft", "add", "table", "ip", "nat"]);
    sh(
        ns,
        &[
            "nft",
            "add chain ip nat post { type nat hook postrouting priority 100 ; }",
        ],
    );
    let rule = match mapping {
        Mapping::Cone => "add rule ip nat post oifname wan0 masquerade",
        Mapping::Symmetric => "add rule ip nat post oifname wan0 masquerade random,fully-random",
    };
    sh(ns, &["nft", rule]);
    // A home router's firewall: nothing new gets in from the WAN. (Without it, a peer's
    // packet that arrives before this side has sent would leave a conntrack entry that
    // takes the port, and this side's own mapping would then move to another port.)
    sh(ns, &["nft", "add", "table", "ip", "filter"]);
    sh(
        ns,
        &[
            "nft",
            "add chain ip filter input { type filter hook input priority 0 ; policy accept ; }",
        ],
    );
    sh(
        ns,
        &[
            "nft",
            "add rule ip filter input iifname wan0 ct state new drop",
        ],
    );
    (nat, home)
}

/// The two-home NAT lab: alice's home 192.0.2.2/24 behind 203.0.113.2, bob's
/// 198.51.100.2/25 behind 203.0.113.18 (the upper half of 198.51.100.0/24 is left for a LAN
/// behind bob), each NAT mapping as [`two_homes`] is told, on [`internet`].
pub struct Homes {
    /// The "internet" (management, Signal, coturn go here, at 203.0.113.1).
    pub inet: usize,
    /// Alice's NAT router.
    pub nat_a: usize,
    /// Alice's home.
    pub home_a: usize,
    /// Bob's NAT router.
    pub nat_b: usize,
    /// Bob's home.
    pub home_b: usize,
}

/// Builds [`Homes`] in `lab`: alice's NAT maps as `a`, bob's as `b`.
pub fn two_homes(lab: &mut Lab, a: Mapping, b: Mapping) -> Homes {
    let inet = internet(lab);
    let (nat_a, home_a) = nat(
        lab,
        "a",
        inet,
        ("203.0.113.2/28", "203.0.113.1/28"),
        ("192.0.2.1/24", "192.0.2.2/24"),
        a,
    );
    let (nat_b, home_b) = nat(
        lab,
        "b",
        inet,
        ("203.0.113.18/28", "203.0.113.17/28"),
        ("198.51.100.1/25", "198.51.100.2/25"),
        b,
    );
    Homes {
        inet,
        nat_a,
        home_a,
        nat_b,
        home_b,
    }
}

/// The management server on [`Homes::inet`], announcing coturn's STUN and (with `turn_ttl`)
/// TURN, and a reusable setup key of it.
pub fn management(
    lab: &Lab,
    inet: usize,
    turn_ttl: Option<std::time::Duration>,
) -> (crate::mgmt::Mgmt, String) {
    management_announcing(
        lab,
        inet,
        vec!["stun:203.0.113.1:3478".into()],
        turn_ttl.map(turn_config),
    )
}

/// [`management`] announcing `stuns` and `turn` instead of coturn's IPv4 address.
pub fn management_announcing(
    lab: &Lab,
    inet: usize,
    stuns: Vec<String>,
    turn: Option<swiftgate_management::turn::TurnConfig>,
) -> (crate::mgmt::Mgmt, String) {
    let m = crate::mgmt::Mgmt::start_with_servers(lab, inet, "203.0.113.1", stuns, turn);
    let key = m.post(
        "/api/setup-keys",
        serde_json::json!({"name": "homes", "type": "reusable", "expires_in": 3600}),
    )["key"]
        .as_str()
        .expect("a setup key")
        .to_string();
    (m, key)
}
