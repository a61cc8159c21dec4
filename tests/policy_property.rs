//! Property test: the kernel's verdicts equal the reference evaluator's.
//!
//! For each random policy set (peers, resources with nested prefixes in two families, rules
//! with groups, names, `self`, protocols, port ranges, drop and accept, disabled rules), the
//! configuration is applied to the loaded programs and random new-flow packets from both sides
//! run through them with `BPF_PROG_TEST_RUN`. The verdict is read back from the flow event the
//! program emits (accept with its policy id, or drop with its reason and policy id) and must
//! equal [`swiftgate::policy::evaluate`], which states the semantics directly from the rules.
//!
//! `SWIFTGATE_PROPTEST_CASES` sets the number of policy sets (default 10,000); each gets 4
//! packets. Needs root.

use std::{
    cell::RefCell,
    net::IpAddr,
    sync::atomic::{AtomicU16, Ordering},
};

use proptest::{
    prelude::*,
    test_runner::{Config as PtConfig, TestCaseError, TestRunner},
};
use swiftgate::policy::{Side, evaluate};
use swiftgate_testkit::kernel::{Lab, pkt};

const GROUPS: [&str; 4] = ["g0", "g1", "g2", "g3"];
const RGROUPS: [&str; 3] = ["r0", "r1", "r2"];
const PREFIXES: [&str; 9] = [
    "192.0.2.10/32",
    "192.0.2.11/32",
    "192.0.2.0/28",
    "192.0.2.0/24",
    "198.51.100.7/32",
    "198.51.100.0/25",
    "2001:db8:1::10/128",
    "2001:db8:1::/64",
    "198.51.100.128/26",
];
const PORTS: [u16; 9] = [1, 22, 53, 80, 443, 8000, 8080, 8081, 65535];

#[derive(Debug, Clone)]
struct Spec {
    peers: Vec<u8>,                    // group bitmask per peer
    resources: Vec<(usize, u8, bool)>, // prefix index, group bitmask, masquerade network
    rules: Vec<RuleSpec>,
    packets: Vec<PacketSpec>,
}

#[derive(Debug, Clone)]
struct RuleSpec {
    sources: Vec<usize>,
    destinations: Vec<usize>,
    protocol: usize,
    ports: Vec<(usize, usize)>,
    drop: bool,
    enabled: bool,
}

#[derive(Debug, Clone)]
struct PacketSpec {
    lan: bool,
    v6: bool,
    src: usize,
    dst: usize,
    proto: usize,
    port: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    let rule = (
        prop::collection::vec(0usize..32, 1..4),
        prop::collection::vec(0usize..32, 1..4),
        0usize..4,
        prop::collection::vec((0usize..PORTS.len(), 0usize..PORTS.len()), 0..3),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.9),
    )
        .prop_map(
            |(sources, destinations, protocol, ports, drop, enabled)| RuleSpec {
                sources,
                destinations,
                protocol,
                ports,
                drop,
                enabled,
            },
        );
    let packet = (
        any::<bool>(),
        prop::bool::weighted(0.25),
        0usize..64,
        0usize..64,
        0usize..3,
        0usize..PORTS.len() + 1,
    )
        .prop_map(|(lan, v6, src, dst, proto, port)| PacketSpec {
            lan,
            v6,
            src,
            dst,
            proto,
            port,
        });
    (
        prop::collection::vec(0u8..16, 1..6),
        (
            prop::sample::subsequence((0..PREFIXES.len()).collect::<Vec<_>>(), 0..6),
            prop::collection::vec((0u8..8, any::<bool>()), 6),
        )
            .prop_map(|(prefixes, attrs)| {
                prefixes
                    .into_iter()
                    .zip(attrs)
                    .map(|(p, (g, m))| (p, g, m))
                    .collect::<Vec<_>>()
            }),
        prop::collection::vec(rule, 0..10),
        prop::collection::vec(packet, 4..=4),
    )
        .prop_map(|(peers, resources, rules, packets)| Spec {
            peers,
            resources,
            rules,
            packets,
        })
}

fn groups_of(mask: u8, names: &[&str]) -> String {
    let g: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| format!("{n:?}"))
        .collect();
    format!("[{}]", g.join(", "))
}

/// Renders the spec as a configuration (`None` if a prefix were used twice, which the
/// strategy already avoids).
fn render(s: &Spec) -> Option<String> {
    let mut out = String::new();
    for (i, mask) in s.peers.iter().enumerate() {
        out += &format!(
            "[[peers]]\nname = \"p{i}\"\nips = [\"100.64.0.{}\", \"fd00:64::{}\"]\ngroups = {}\n",
            i + 2,
            i + 2,
            groups_of(*mask, &GROUPS)
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for net in [true, false] {
        out += &format!("[[networks]]\nname = \"net-{net}\"\nmasquerade = {net}\n");
        for (i, (p, mask, masq)) in s.resources.iter().enumerate() {
            if *masq != net {
                continue;
            }
            if !seen.insert(*p) {
                return None;
            }
            out += &format!(
                "[[networks.resources]]\nname = \"res{i}\"\naddress = \"{}\"\ngroups = {}\n",
                PREFIXES[*p],
                groups_of(*mask, &RGROUPS)
            );
        }
    }
    // Names a rule may use: groups, peers, resources, All, self.
    // Only groups with members exist.
    let pmask = s.peers.iter().fold(0u8, |a, m| a | m);
    let rmask = s.resources.iter().fold(0u8, |a, (_, m, _)| a | m);
    let mut names: Vec<String> = GROUPS
        .iter()
        .enumerate()
        .filter(|(i, _)| pmask & (1 << i) != 0)
        .chain(
            RGROUPS
                .iter()
                .enumerate()
                .filter(|(i, _)| rmask & (1 << i) != 0),
        )
        .map(|(_, s)| s.to_string())
        .collect();
    names.extend((0..s.peers.len()).map(|i| format!("p{i}")));
    names.extend((0..s.resources.len()).map(|i| format!("res{i}")));
    names.push("All".into());
    let self_name = "self".to_string();
    for (i, r) in s.rules.iter().enumerate() {
        let pick = |ix: &[usize], allow_self: bool| -> Vec<String> {
            ix.iter()
                .map(|k| {
                    if allow_self && *k % 11 == 10 {
                        self_name.clone()
                    } else {
                        names[*k % names.len()].clone()
                    }
                })
                .collect()
        };
        let protocol = ["all", "tcp", "udp", "icmp"][r.protocol];
        let ports: Vec<String> = if matches!(protocol, "tcp" | "udp") {
            r.ports
                .iter()
                .map(|(a, b)| {
                    let (lo, hi) = (PORTS[*a].min(PORTS[*b]), PORTS[*a].max(PORTS[*b]));
                    format!("\"{lo}-{hi}\"")
                })
                .collect()
        } else {
            vec![]
        };
        let q = |v: Vec<String>| {
            v.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out += &format!(
            "[[policies]]\nname = \"rule{i}\"\nsources = [{}]\ndestinations = [{}]\nprotocol = \"{protocol}\"\nports = [{}]\naction = \"{}\"\nenabled = {}\n",
            q(pick(&r.sources, false)),
            q(pick(&r.destinations, true)),
            ports.join(", "),
            if r.drop { "drop" } else { "accept" },
            r.enabled
        );
    }
    Some(out)
}

const OVERLAY_DST_V4: [&str; 9] = [
    "192.0.2.10",
    "192.0.2.11",
    "192.0.2.5",
    "192.0.2.200",
    "198.51.100.7",
    "198.51.100.200",
    "203.0.113.1",
    "100.64.0.1",
    "100.64.0.2",
];
const OVERLAY_DST_V6: [&str; 4] = [
    "2001:db8:1::10",
    "2001:db8:1::99",
    "fd00:64::1",
    "2001:db8:2::1",
];
const LAN_SRC_V4: [&str; 6] = [
    "192.0.2.10",
    "192.0.2.11",
    "192.0.2.5",
    "198.51.100.7",
    "198.51.100.200",
    "198.51.100.130",
];
const LAN_SRC_V6: [&str; 3] = ["2001:db8:1::10", "2001:db8:1::99", "2001:db8:2::5"];

static SPORT: AtomicU16 = AtomicU16::new(20000);

/// Builds a packet and the (side, src, dst, proto, port) it represents.
fn packet(s: &Spec, p: &PacketSpec) -> (Side, String, String, u8, u16, Vec<u8>) {
    let peer_ip = |i: usize, v6: bool| {
        // An index past the peers is an address no peer has.
        if i % (s.peers.len() + 1) == s.peers.len() {
            if v6 {
                "fd00:64::99".to_string()
            } else {
                "100.64.0.99".to_string()
            }
        } else if v6 {
            format!("fd00:64::{}", i % (s.peers.len() + 1) + 2)
        } else {
            format!("100.64.0.{}", i % (s.peers.len() + 1) + 2)
        }
    };
    let (side, src, dst) = if !p.lan {
        let dst = if p.v6 {
            OVERLAY_DST_V6[p.dst % 4].to_string()
        } else {
            OVERLAY_DST_V4[p.dst % 9].to_string()
        };
        (Side::Overlay, peer_ip(p.src, p.v6), dst)
    } else {
        let src = if p.v6 {
            LAN_SRC_V6[p.src % 3].to_string()
        } else {
            LAN_SRC_V4[p.src % 6].to_string()
        };
        let dst = match p.dst % 5 {
            0 => {
                if p.v6 {
                    "fd00:64::1".into()
                } else {
                    "100.64.0.1".into()
                }
            }
            1 => {
                if p.v6 {
                    "2001:db8:1::20".into()
                } else {
                    "192.0.2.20".into()
                }
            }
            _ => peer_ip(p.dst, p.v6),
        };
        (Side::Lan, src, dst)
    };
    let port = if p.port == PORTS.len() {
        1 + (p.src * 977 + p.dst * 131) as u16 % 60000
    } else {
        PORTS[p.port]
    };
    let sport = SPORT.fetch_add(1, Ordering::Relaxed) % 40000 + 20000;
    let (proto, bytes) = match p.proto {
        0 => (
            6u8,
            pkt::tcp(&src, sport, &dst, port, pkt::Tcp::Syn(0), b""),
        ),
        1 => (17u8, pkt::udp(&src, sport, &dst, port, b"x")),
        _ => (if p.v6 { 58 } else { 1 }, pkt::ping(&src, &dst, sport)),
    };
    let port = if proto == 6 || proto == 17 { port } else { 0 };
    (side, src, dst, proto, port, bytes)
}

#[test]
fn kernel_verdicts_match_the_reference_evaluator() {
    let cases: u32 = std::env::var("SWIFTGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let lab = RefCell::new(Lab::new(""));
    let checked = RefCell::new((0u32, 0u32, std::collections::BTreeMap::<String, u32>::new()));
    let mut runner = TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let result = runner.run(&spec(), |s| {
        let Some(text) = render(&s) else {
            return Err(TestCaseError::reject("duplicate prefix"));
        };
        let mut lab = lab.borrow_mut();
        if let Err(e) = lab.reconfigure(&text) {
            // The generator only writes valid configurations; a refusal is a bug either side.
            return Err(TestCaseError::fail(format!(
                "valid configuration refused: {e}\n{text}"
            )));
        }
        lab.clear_conntrack();
        let cfg = lab.cfg.clone();
        for p in &s.packets {
            let (side, src, dst, proto, port, bytes) = packet(&s, p);
            let want = evaluate(
                &cfg,
                side,
                src.parse::<IpAddr>().unwrap(),
                dst.parse::<IpAddr>().unwrap(),
                proto,
                port,
            );
            let got = lab.verdict(side, &bytes);
            prop_assert_eq!(
                got,
                want,
                "{:?} {} -> {} proto {} port {}\n{}",
                side,
                src,
                dst,
                proto,
                port,
                text
            );
            let mut c = checked.borrow_mut();
            c.1 += 1;
            *c.2.entry(format!("{want:?}").split('(').next().unwrap().to_string())
                .or_default() += 1;
        }
        checked.borrow_mut().0 += 1;
        Ok(())
    });
    let (sets, packets, kinds) = checked.into_inner();
    eprintln!("checked {sets} policy sets, {packets} packets: {kinds:?}");
    result.unwrap();
    assert!(
        sets >= cases,
        "only {sets} of {cases} policy sets were checked"
    );
    // Every verdict kind must have been exercised, or the test proves little.
    for k in [
        "Accept",
        "Drop",
        "NoPolicy",
        "UnknownSource",
        "NoRoute",
        "PassHost",
    ] {
        assert!(
            kinds.get(k).copied().unwrap_or(0) > 0,
            "verdict {k} never produced: {kinds:?}"
        );
    }
}
