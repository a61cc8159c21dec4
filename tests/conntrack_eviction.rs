//! Kernel packet tests of the conntrack rules under pressure (issue #19), through
//! `BPF_PROG_TEST_RUN` in a private network namespace, with 1024-entry tables:
//! - a full table gives an unreplied flow's place to a new flow (early drop), never a replied
//!   one; a closing TCP flow may give way too; with nothing to replace, the new flow is refused
//!   (`drop_ct_full`);
//! - one source (an overlay peer, a LAN host on Site-to-VPN) holds at most its share of the
//!   table and of the masquerade ports (`drop_ct_share`), other sources go on opening flows, and
//!   flows the agent removes give the source room again.
//!
//! The test thread pins itself to one CPU, so the order in which early drop meets the flows is
//! the order they were created in; one test moves to another CPU on purpose. Needs root.

use swiftgate::dataplane::State;
use swiftgate_common::{Counter, CtTimeouts};
use swiftgate_testkit::kernel::{
    Lab, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
    pkt::{self, Tcp},
};

/// Table size of every lab here (the smallest the configuration accepts).
const CAPACITY: u16 = 1024;

/// Peers, a masqueraded resource (wiki), an unmasqueraded network (lab) and a LAN host that may
/// open flows to alice (Site-to-VPN); `interface` is added to the lab's `[interface]` section,
/// `conntrack` is the `[conntrack]` section's body.
fn config(interface: &str, conntrack: &str) -> String {
    format!(
        r#"
{interface}
[conntrack]
capacity = {CAPACITY}
capacity_v6 = {CAPACITY}
{conntrack}

[[peers]]
name = "alice"
ips = ["100.64.0.2"]
groups = ["Development"]
[[peers]]
name = "carol"
ips = ["100.64.0.4"]
groups = ["Development"]

[[networks]]
name = "Berlin Office"
[[networks.resources]]
name = "wiki"
address = "192.0.2.10/32"
groups = ["Internal Apps"]
[[networks.resources]]
name = "printer"
address = "192.0.2.50/32"
groups = ["Printers"]

[[networks]]
name = "Lab"
masquerade = false
[[networks.resources]]
name = "lab"
address = "198.51.100.0/24"
groups = ["Lab"]

[[policies]]
name = "dev-all"
sources = ["Development"]
destinations = ["Internal Apps", "Lab"]
protocol = "all"
[[policies]]
name = "printing"
sources = ["printer"]
destinations = ["alice"]
protocol = "tcp"
ports = ["631"]
"#
    )
}

/// The CPUs the calling thread may run on (as the process started: tests pin their threads).
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    // The process's mask (pid = thread group leader), not this thread's, which may be pinned.
    let allowed = sched_getaffinity(Pid::this()).expect("sched_getaffinity");
    (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect()
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut one = CpuSet::new();
    one.set(cpu).unwrap();
    sched_setaffinity(Pid::from_raw(0), &one).expect("sched_setaffinity");
}

/// Pins the calling thread to the first CPU it may run on.
fn pin_to_one_cpu() {
    pin_to(allowed_cpus()[0]);
}

fn lab(interface: &str, conntrack: &str) -> Lab {
    pin_to_one_cpu();
    Lab::new(&config(interface, conntrack))
}

/// A UDP packet from `src:sport` to the wiki (masqueraded, the source port kept when free).
fn to_wiki(lab: &mut Lab, src: &str, sport: u16) -> u32 {
    lab.overlay(&pkt::udp(src, sport, "192.0.2.10", 53, b"q")).0
}

/// The wiki's answer to the flow whose masquerade port is `port`.
fn wiki_answers(lab: &mut Lab, port: u16) -> u32 {
    lab.lan(&pkt::udp("192.0.2.10", 53, "192.0.2.1", port, b"a"))
        .0
}

/// A UDP packet from `src:sport` to the lab network (not masqueraded).
fn to_lab(lab: &mut Lab, src: &str, sport: u16) -> u32 {
    lab.overlay(&pkt::udp(src, sport, "198.51.100.7", 53, b"q"))
        .0
}

fn tracked(lab: &Lab, src: &str, sport: u16) -> bool {
    lab.flow(src, sport, "192.0.2.10", 53).is_some()
}

/// Flows `source` holds, from the per-source counts.
fn held(state: &State, source: &str) -> u64 {
    state
        .sources()
        .into_iter()
        .find(|s| s.source.to_string() == source)
        .map_or(0, |s| s.flows)
}

/// Counter deltas over `f`: (drop_ct_full, ct_early_drop, drop_ct_share).
fn pressure(lab: &mut Lab, f: impl FnOnce(&mut Lab)) -> (u64, u64, u64) {
    let read = |lab: &Lab| {
        (
            lab.counter(Counter::DropCtFull),
            lab.counter(Counter::CtEarlyDrop),
            lab.counter(Counter::DropCtShare),
        )
    };
    let before = read(lab);
    f(lab);
    let after = read(lab);
    (after.0 - before.0, after.1 - before.1, after.2 - before.2)
}

/// Fills the IPv4 table with alice's flows to the wiki, source ports 10000.., answering the
/// flows at the positions in `replied` (creation order).
fn fill(lab: &mut Lab, replied: impl Fn(u16) -> bool) {
    for i in 0..CAPACITY {
        let sport = 10_000 + i;
        assert_eq!(to_wiki(lab, "100.64.0.2", sport), TC_ACT_REDIRECT, "{i}");
        if replied(i) {
            assert_eq!(wiki_answers(lab, sport), TC_ACT_REDIRECT, "reply {i}");
        }
    }
    let used = lab.state().table_use();
    assert_eq!(used.flows4, u64::from(CAPACITY), "the table is full");
    assert_eq!(used.capacity4, u32::from(CAPACITY));
}

/// A full table: a new flow takes the place of the oldest unreplied flow among those
/// examined, skipping replied ones, which keep forwarding; the source counts follow.
#[test]
fn a_full_table_replaces_unreplied_flows_never_replied_ones() {
    let mut lab = lab("", "source_share = 100");
    // The first four flows are replied (assured), the rest are not.
    fill(&mut lab, |i| i < 4);
    let d = pressure(&mut lab, |lab| {
        assert_eq!(to_wiki(lab, "100.64.0.4", 20_000), TC_ACT_REDIRECT);
    });
    assert_eq!(d, (0, 1, 0), "one early drop, nothing refused");
    assert!(tracked(&lab, "100.64.0.4", 20_000));
    for sport in 10_000..10_004 {
        assert!(
            tracked(&lab, "100.64.0.2", sport),
            "replied flow {sport} kept"
        );
        assert_eq!(wiki_answers(&mut lab, sport), TC_ACT_REDIRECT);
    }
    assert!(
        !tracked(&lab, "100.64.0.2", 10_004),
        "the first unreplied flow gave way"
    );
    // Its masquerade port is free again: an answer to it is not ours.
    assert_eq!(wiki_answers(&mut lab, 10_004), TC_ACT_OK);
    // The next new flow replaces the next unreplied one.
    let d = pressure(&mut lab, |lab| {
        assert_eq!(to_wiki(lab, "100.64.0.4", 20_001), TC_ACT_REDIRECT);
    });
    assert_eq!(d, (0, 1, 0));
    assert!(!tracked(&lab, "100.64.0.2", 10_005));
    let st = lab.state();
    assert_eq!(st.table_use().flows4, u64::from(CAPACITY));
    assert_eq!(held(&st, "100.64.0.2"), u64::from(CAPACITY) - 2);
    assert_eq!(held(&st, "100.64.0.4"), 2);
}

/// Early drop finds flows whatever CPU created them: the table is filled from one CPU, and a
/// new flow handled on another CPU still replaces an unreplied one (with per-CPU rings of
/// recent flows it would be refused until the unreplied flows timed out).
#[test]
fn early_drop_replaces_flows_another_cpu_created() {
    let cpus = allowed_cpus();
    assert!(
        cpus.len() >= 2,
        "this test needs two CPUs to move between (has {cpus:?})"
    );
    let mut lab = lab("", "source_share = 100");
    pin_to(cpus[0]);
    fill(&mut lab, |_| false);
    pin_to(cpus[1]);
    let d = pressure(&mut lab, |lab| {
        for i in 0..16 {
            assert_eq!(
                to_wiki(lab, "100.64.0.4", 20_000 + i),
                TC_ACT_REDIRECT,
                "{i}"
            );
        }
    });
    assert_eq!(d, (0, 16, 0), "each new flow replaced one");
}

/// A full table of replied flows refuses a new flow and keeps every flow; a closing TCP flow
/// (FIN both ways) among them gives way.
#[test]
fn a_full_table_of_replied_flows_refuses_new_ones_but_closing_ones_give_way() {
    let mut lab = lab("", "source_share = 100");
    fill(&mut lab, |_| true);
    let d = pressure(&mut lab, |lab| {
        assert_eq!(to_wiki(lab, "100.64.0.4", 20_000), TC_ACT_SHOT);
    });
    assert_eq!(d, (1, 0, 0), "refused as table full, nothing replaced");
    assert!(!tracked(&lab, "100.64.0.4", 20_000));
    for sport in 10_000..10_000 + CAPACITY {
        assert!(tracked(&lab, "100.64.0.2", sport), "flow {sport} kept");
    }
    assert_eq!(wiki_answers(&mut lab, 10_000), TC_ACT_REDIRECT);

    // A table of replied flows where one TCP flow is closing.
    let mut lab = self::lab("", "source_share = 100");
    let tcp = |lab: &mut Lab, flags: Tcp, reply: bool| {
        let p = if reply {
            pkt::tcp("192.0.2.10", 443, "192.0.2.1", 30_000, flags, b"")
        } else {
            pkt::tcp("100.64.0.2", 30_000, "192.0.2.10", 443, flags, b"")
        };
        let rc = if reply {
            lab.lan(&p).0
        } else {
            lab.overlay(&p).0
        };
        assert_eq!(rc, TC_ACT_REDIRECT, "{flags:?} (reply: {reply})");
    };
    tcp(&mut lab, Tcp::Syn(1400), false);
    tcp(&mut lab, Tcp::SynAck(1400), true);
    tcp(&mut lab, Tcp::Fin, false);
    tcp(&mut lab, Tcp::Fin, true);
    for i in 1..CAPACITY {
        assert_eq!(to_wiki(&mut lab, "100.64.0.2", 10_000 + i), TC_ACT_REDIRECT);
        assert_eq!(wiki_answers(&mut lab, 10_000 + i), TC_ACT_REDIRECT);
    }
    let d = pressure(&mut lab, |lab| {
        assert_eq!(to_wiki(lab, "100.64.0.4", 20_000), TC_ACT_REDIRECT);
    });
    assert_eq!(d, (0, 1, 0), "the closing flow gave way");
    assert!(lab.flow("100.64.0.2", 30_000, "192.0.2.10", 443).is_none());
}

/// One source holds at most its share (25 % of 1024 = 256 flows): its next new flows are
/// refused and counted for it, another source goes on opening flows, and flows the agent
/// removes give the source room again. Masqueraded flows are held to the same share of the
/// masquerade ports (25 % of 400 = 100), and a LAN host opening Site-to-VPN flows to its own
/// share of the table.
#[test]
fn a_source_holds_at_most_its_share_of_the_table_and_of_the_ports() {
    let mut lab = lab("", "source_share = 25");
    let share = CAPACITY / 4;
    for i in 0..share {
        assert_eq!(to_lab(&mut lab, "100.64.0.2", 10_000 + i), TC_ACT_REDIRECT);
    }
    let d = pressure(&mut lab, |lab| {
        assert_eq!(to_lab(lab, "100.64.0.2", 11_000), TC_ACT_SHOT);
        assert_eq!(to_wiki(lab, "100.64.0.2", 11_001), TC_ACT_SHOT);
        // Another source is not held back.
        assert_eq!(to_lab(lab, "100.64.0.4", 11_000), TC_ACT_REDIRECT);
    });
    assert_eq!(d, (0, 0, 2), "two refusals for alice's share");
    // Packets of alice's tracked flows still pass.
    assert_eq!(to_lab(&mut lab, "100.64.0.2", 10_000), TC_ACT_REDIRECT);
    let mut st = lab.state();
    let alice = st
        .sources()
        .into_iter()
        .find(|s| s.source.to_string() == "100.64.0.2")
        .expect("alice's record");
    assert_eq!(
        (alice.flows, alice.nat_flows, alice.refused),
        (u64::from(share), 0, 2)
    );
    // The agent removes ten of alice's flows (as the garbage collector does): room for ten.
    let ten: Vec<_> = st
        .flows()
        .into_iter()
        .filter(|f| f.key.saddr[..4] == [100, 64, 0, 2])
        .take(10)
        .collect();
    assert_eq!(st.remove_flows(&ten), 10);
    assert_eq!(held(&st, "100.64.0.2"), u64::from(share) - 10);
    for i in 0..10 {
        assert_eq!(to_lab(&mut lab, "100.64.0.2", 12_000 + i), TC_ACT_REDIRECT);
    }
    assert_eq!(to_lab(&mut lab, "100.64.0.2", 12_010), TC_ACT_SHOT);

    // A LAN host opening Site-to-VPN flows has its own share.
    for i in 0..share {
        let syn = pkt::tcp(
            "192.0.2.50",
            5000 + i,
            "100.64.0.2",
            631,
            Tcp::Syn(1400),
            b"",
        );
        assert_eq!(lab.lan(&syn).0, TC_ACT_REDIRECT, "printer flow {i}");
    }
    let d = pressure(&mut lab, |lab| {
        let syn = pkt::tcp("192.0.2.50", 6000, "100.64.0.2", 631, Tcp::Syn(1400), b"");
        assert_eq!(lab.lan(&syn).0, TC_ACT_SHOT);
    });
    assert_eq!(d, (0, 0, 1), "the printer's share");
    assert_eq!(held(&lab.state(), "192.0.2.50"), u64::from(share));

    // The masquerade ports: 400 of them, 25 % (100) per source, while the table's share is
    // still 256: alice's 101st masqueraded flow is refused, an unmasqueraded one is not.
    let mut lab = self::lab(r#"nat_ports = "20000-20399""#, "source_share = 25");
    for i in 0..100 {
        assert_eq!(to_wiki(&mut lab, "100.64.0.2", 20_000 + i), TC_ACT_REDIRECT);
    }
    let d = pressure(&mut lab, |lab| {
        assert_eq!(to_wiki(lab, "100.64.0.2", 20_100), TC_ACT_SHOT);
        assert_eq!(to_lab(lab, "100.64.0.2", 20_100), TC_ACT_REDIRECT);
        assert_eq!(to_wiki(lab, "100.64.0.4", 20_100), TC_ACT_REDIRECT);
    });
    assert_eq!(d, (0, 0, 1), "refused for alice's share of the ports");
    let alice = lab
        .state()
        .sources()
        .into_iter()
        .find(|s| s.source.to_string() == "100.64.0.2")
        .expect("alice's record");
    assert_eq!((alice.flows, alice.nat_flows, alice.refused), (101, 100, 1));
}

/// The garbage collector applies the configured timeouts by TCP state and protocol, and
/// charges what it expires to the flows' sources.
#[test]
fn expiry_follows_the_configured_timeouts_and_frees_the_share() {
    let mut lab = lab(
        "",
        "source_share = 25\n[conntrack.timeouts]\nudp_unreplied = 5\ntcp_syn = 7\ntcp_fin_wait = 9",
    );
    let t = lab.cfg.ct_timeouts;
    assert_eq!((t.udp_unreplied, t.tcp_syn, t.tcp_fin_wait), (5, 7, 9));
    assert_eq!(t.tcp_established, CtTimeouts::DEFAULT.tcp_established);
    assert_eq!(to_lab(&mut lab, "100.64.0.2", 1000), TC_ACT_REDIRECT);
    let syn = pkt::tcp("100.64.0.2", 1001, "198.51.100.7", 80, Tcp::Syn(1400), b"");
    assert_eq!(lab.overlay(&syn).0, TC_ACT_REDIRECT);
    // A TCP flow closed in one direction.
    let syn = pkt::tcp("100.64.0.2", 1002, "198.51.100.7", 80, Tcp::Syn(1400), b"");
    assert_eq!(lab.overlay(&syn).0, TC_ACT_REDIRECT);
    let synack = pkt::tcp(
        "198.51.100.7",
        80,
        "100.64.0.2",
        1002,
        Tcp::SynAck(1400),
        b"",
    );
    assert_eq!(lab.lan(&synack).0, TC_ACT_REDIRECT);
    let fin = pkt::tcp("100.64.0.2", 1002, "198.51.100.7", 80, Tcp::Fin, b"");
    assert_eq!(lab.overlay(&fin).0, TC_ACT_REDIRECT);
    let mut st = lab.state();
    assert_eq!(held(&st, "100.64.0.2"), 3);
    let now = swiftgate::dataplane::monotonic_ns();
    let s = |secs: u64| now + secs * 1_000_000_000;
    assert_eq!(st.gc(s(6), &t).unwrap().expired, 1, "UDP after 5 s");
    assert_eq!(st.gc(s(8), &t).unwrap().expired, 1, "SYN after 7 s");
    assert_eq!(st.gc(s(10), &t).unwrap().expired, 1, "one FIN after 9 s");
    assert_eq!(held(&st, "100.64.0.2"), 0, "the expired flows were charged");
    assert_eq!(st.table_use().flows4, 0);
}
