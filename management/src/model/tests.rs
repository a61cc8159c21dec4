//! Model tests: validation (every bad request refused, account unchanged), setup-key rules,
//! address allocation, ephemeral clean-up.

use base64::Engine as _;

use super::*;

/// A valid WireGuard public key derived from a number.
pub(crate) fn wg_key(i: u32) -> String {
    let mut b = [7u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn register(a: &mut Account, key: &str, i: u32, name: &str) -> ModelResult<Peer> {
    a.register_peer(
        &RegisterPeer {
            setup_key: key.into(),
            wg_pubkey: wg_key(i),
            name: Some(name.into()),
            meta: PeerMeta::default(),
            ssh_pubkey: String::new(),
        },
        1000,
    )
}

fn group(a: &mut Account, name: &str) -> Group {
    a.create_group(&GroupInput {
        name: name.into(),
        ..Default::default()
    })
    .unwrap()
}

/// Applies `op` to a copy and checks it fails with an error containing `needle`, leaving the
/// account unchanged.
fn refused(a: &Account, needle: &str, op: impl FnOnce(&mut Account) -> ModelResult<()>) {
    let mut b = a.clone();
    let err = op(&mut b).expect_err(&format!("expected an error containing {needle:?}"));
    assert!(
        err.to_string().contains(needle),
        "error {err:?} does not contain {needle:?}"
    );
    assert_eq!(&b, a, "a refused request changed the account ({err})");
}

fn base() -> (Account, String) {
    let mut a = Account::new("t");
    group(&mut a, "Development");
    group(&mut a, "Internal Apps");
    let (_, key) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "k".into(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    register(&mut a, &key, 1, "alice").unwrap();
    a.create_network(&NetworkInput {
        name: "Berlin Office".into(),
        description: String::new(),
    })
    .unwrap();
    a.create_resource(
        "Berlin Office",
        &ResourceInput {
            name: "Internal Wiki".into(),
            address: "10.10.0.5/32".into(),
            groups: vec!["Internal Apps".into()],
            ..Default::default()
        },
    )
    .unwrap();
    (a, key)
}

fn policy(src: &str, dst: &str, proto: &str, ports: &[&str]) -> PolicyInput {
    PolicyInput {
        name: "p".into(),
        sources: Some(vec![src.into()]),
        destinations: Some(vec![dst.into()]),
        protocol: Some(proto.into()),
        ports: Some(ports.iter().map(|p| PortSpec::Text((*p).into())).collect()),
        ..Default::default()
    }
}

#[test]
fn new_account_has_all_group_and_default_policy() {
    let a = Account::new("t");
    assert_eq!(a.groups[ALL_GROUP_ID].name, ALL_GROUP_NAME);
    let d = a
        .policies
        .values()
        .find(|p| p.name == DEFAULT_POLICY_NAME)
        .unwrap();
    assert!(d.enabled);
    let r = &d.rules[0];
    assert!(r.bidirectional && r.protocol == Protocol::All && r.action == Action::Accept);
    assert_eq!(r.sources, vec![ALL_GROUP_ID.to_string()]);
}

#[test]
fn validation_matrix_refuses_and_changes_nothing() {
    let (a, _) = base();
    refused(&a, "unknown group \"Nope\"", |a| {
        a.create_policy(&policy("Nope", "Internal Apps", "tcp", &["443"]))
            .map(drop)
    });
    refused(&a, "reversed port range 90-80", |a| {
        a.create_policy(&policy("Development", "Internal Apps", "tcp", &["90-80"]))
            .map(drop)
    });
    refused(&a, "port 0", |a| {
        a.create_policy(&policy("Development", "Internal Apps", "tcp", &["0"]))
            .map(drop)
    });
    refused(&a, "only allowed with tcp or udp", |a| {
        a.create_policy(&policy("Development", "Internal Apps", "icmp", &["22"]))
            .map(drop)
    });
    refused(&a, "unknown protocol", |a| {
        a.create_policy(&policy("Development", "Internal Apps", "sctp", &[]))
            .map(drop)
    });
    refused(&a, "already exists", |a| {
        a.create_policy(&PolicyInput {
            name: "Default".into(),
            ..policy("Development", "Internal Apps", "tcp", &["443"])
        })
        .map(drop)
    });
    refused(&a, "no destinations", |a| {
        a.create_policy(&PolicyInput {
            destinations: None,
            ..policy("Development", "Internal Apps", "tcp", &["443"])
        })
        .map(drop)
    });
    refused(&a, "cannot be bidirectional", |a| {
        a.create_policy(&PolicyInput {
            destinations: None,
            destination_resource: Some(TargetInput {
                kind: "resource".into(),
                id: "Internal Wiki".into(),
            }),
            bidirectional: Some(true),
            ..policy("Development", "Internal Apps", "tcp", &["443"])
        })
        .map(drop)
    });
    refused(&a, "either rules or the top-level", |a| {
        a.create_policy(&PolicyInput {
            rules: Some(vec![]),
            ..policy("Development", "Internal Apps", "tcp", &["443"])
        })
        .map(drop)
    });
    refused(&a, "already exists", |a| {
        a.create_group(&GroupInput {
            name: "Development".into(),
            ..Default::default()
        })
        .map(drop)
    });
    refused(&a, "name is empty", |a| {
        a.create_group(&GroupInput::default()).map(drop)
    });
    refused(&a, "bad CIDR", |a| {
        a.create_resource(
            "Berlin Office",
            &ResourceInput {
                name: "x".into(),
                address: "10.0.0.0/33".into(),
                ..Default::default()
            },
        )
        .map(drop)
    });
    refused(&a, "host bits set", |a| {
        a.create_resource(
            "Berlin Office",
            &ResourceInput {
                name: "x".into(),
                address: "10.0.0.1/16".into(),
                ..Default::default()
            },
        )
        .map(drop)
    });
    refused(&a, "bad domain", |a| {
        a.create_resource(
            "Berlin Office",
            &ResourceInput {
                name: "x".into(),
                address: "bad_name.internal".into(),
                ..Default::default()
            },
        )
        .map(drop)
    });
    refused(&a, "holds every peer", |a| {
        a.create_resource(
            "Berlin Office",
            &ResourceInput {
                name: "x".into(),
                address: "10.0.0.9".into(),
                groups: vec!["All".into()],
                ..Default::default()
            },
        )
        .map(drop)
    });
    refused(&a, "network \"Paris\" not found", |a| {
        a.create_resource(
            "Paris",
            &ResourceInput {
                name: "x".into(),
                address: "10.0.0.9".into(),
                ..Default::default()
            },
        )
        .map(drop)
    });
    refused(&a, "metric 0 is outside", |a| {
        a.create_router(
            "Berlin Office",
            &RouterInput {
                peer: Some("alice".into()),
                metric: Some(0),
                ..Default::default()
            },
        )
        .map(drop)
    });
    refused(&a, "not both", |a| {
        a.create_router(
            "Berlin Office",
            &RouterInput {
                peer: Some("alice".into()),
                peer_groups: vec!["Development".into()],
                ..Default::default()
            },
        )
        .map(drop)
    });
    refused(&a, "peer: unknown peer", |a| {
        a.create_router(
            "Berlin Office",
            &RouterInput {
                peer: Some("bob".into()),
                ..Default::default()
            },
        )
        .map(drop)
    });
    refused(&a, "auto_groups: unknown group", |a| {
        a.create_setup_key(
            &SetupKeyInput {
                name: "k2".into(),
                auto_groups: vec!["Ghosts".into()],
                ..Default::default()
            },
            0,
        )
        .map(drop)
    });
    refused(&a, "geo-location checks are not supported", |a| {
        a.create_posture_check(&PostureCheckInput {
            name: "geo".into(),
            checks: PostureChecksInput {
                geo_location: Some(serde_json::json!({"locations": [{"country_code": "DE"}]})),
                ..Default::default()
            },
            ..Default::default()
        })
        .map(drop)
    });
    refused(&a, "bad version", |a| {
        a.create_posture_check(&PostureCheckInput {
            name: "v".into(),
            checks: PostureChecksInput {
                client_version: Some(MinVersionCheck {
                    min_version: "latest".into(),
                }),
                ..Default::default()
            },
            ..Default::default()
        })
        .map(drop)
    });
    refused(&a, "at least one check", |a| {
        a.create_posture_check(&PostureCheckInput {
            name: "empty".into(),
            ..Default::default()
        })
        .map(drop)
    });
    refused(&a, "cannot be deleted", |a| a.delete_group("All").map(drop));
    refused(&a, "not inside 100.64.0.0/10", |a| {
        a.update_settings(&SettingsInput {
            overlay_range: Some("10.0.0.0/16".into()),
            ..Default::default()
        })
        .map(drop)
    });
    refused(&a, "while peers are registered", |a| {
        a.update_settings(&SettingsInput {
            overlay_range: Some("100.70.0.0/16".into()),
            ..Default::default()
        })
        .map(drop)
    });
}

#[test]
fn in_use_objects_cannot_be_deleted() {
    let (mut a, _) = base();
    a.create_router(
        "Berlin Office",
        &RouterInput {
            peer: Some("alice".into()),
            ..Default::default()
        },
    )
    .unwrap();
    a.create_policy(&policy("Development", "Internal Apps", "tcp", &["443"]))
        .unwrap();
    refused(&a, "used by policy", |a| {
        a.delete_group("Development").map(drop)
    });
    refused(&a, "is a router", |a| a.delete_peer("alice").map(drop));
    // Deleting the Network takes its resources and routers along.
    a.delete_network("Berlin Office").unwrap();
    assert!(a.resources.is_empty() && a.routers.is_empty());
}

#[test]
fn setup_key_rules() {
    let mut a = Account::new("t");
    let dev = group(&mut a, "Development");
    let (_, once) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "once".into(),
                kind: Some("one-off".into()),
                auto_groups: vec!["Development".into()],
                ..Default::default()
            },
            0,
        )
        .unwrap();
    let p = register(&mut a, &once, 1, "laptop").unwrap();
    assert_eq!(p.groups, vec![dev.id.clone()], "auto-groups applied");
    assert_eq!(
        u32::from(p.ip),
        u32::from(a.settings.overlay_range.network()) + 1,
        "the first host address of the account's overlay"
    );
    // Same key again for another peer: refused, nothing changes.
    refused(&a, "one-off and was already used", |a| {
        register(a, &once, 2, "other").map(drop)
    });
    // The registered peer logging in again with the used key is fine and consumes nothing.
    let again = register(&mut a, &once, 1, "laptop").unwrap();
    assert_eq!(again.id, p.id);

    let (_, expiring) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "short".into(),
                expires_in_secs: Some(10),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    refused(&a, "has expired", |a| {
        register(a, &expiring, 3, "late").map(drop)
    });

    let (_, limited) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "two".into(),
                usage_limit: Some(2),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    register(&mut a, &limited, 4, "a").unwrap();
    register(&mut a, &limited, 5, "b").unwrap();
    refused(&a, "usage limit of 2", |a| {
        register(a, &limited, 6, "c").map(drop)
    });

    let (_, revoked) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "rev".into(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    a.revoke_setup_key("rev").unwrap();
    refused(&a, "is revoked", |a| {
        register(a, &revoked, 7, "d").map(drop)
    });
    refused(&a, "setup key is invalid", |a| {
        register(a, "00000000-0000-4000-8000-000000000000", 8, "e").map(drop)
    });
    // Keys compare case-insensitively (agents send lower case, people paste upper case).
    let (_, k) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "case".into(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    register(&mut a, &k.to_uppercase(), 9, "f").unwrap();
    // Unknown peer without a key.
    refused(&a, "not registered", |a| {
        a.login_peer(&wg_key(99), None, 0).map(drop)
    });
}

#[test]
fn addresses_never_collide_and_names_are_unique() {
    let mut a = Account::new("t");
    a.update_settings(&SettingsInput {
        overlay_range: Some("100.64.0.0/29".into()),
        ..Default::default()
    })
    .unwrap();
    let (_, k) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "k".into(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    // A /29 has six host addresses.
    let peers: Vec<Peer> = (0..6)
        .map(|i| register(&mut a, &k, i, "host").unwrap())
        .collect();
    let mut ips: Vec<_> = peers.iter().map(|p| p.ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6);
    assert!(
        ips.iter()
            .all(|ip| ip.to_string() != "100.64.0.0" && ip.to_string() != "100.64.0.7")
    );
    assert_eq!(peers[1].name, "host-2");
    refused(&a, "is full", |a| register(a, &k, 6, "host").map(drop));
    // A freed address is reused once the range wraps.
    a.delete_peer(&peers[2].id).unwrap();
    let p = register(&mut a, &k, 7, "host").unwrap();
    assert_eq!(p.ip, peers[2].ip);
}

#[test]
fn ephemeral_peers_go_after_the_offline_timeout() {
    let mut a = Account::new("t");
    let (_, k) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "eph".into(),
                ephemeral: true,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    let p = register(&mut a, &k, 1, "ci-runner").unwrap();
    assert!(p.ephemeral);
    a.set_peer_connected(&p.id, true, 1000).unwrap();
    assert!(
        a.remove_stale_ephemeral(5000).is_empty(),
        "connected peers stay"
    );
    a.set_peer_connected(&p.id, false, 1000).unwrap();
    assert!(
        a.remove_stale_ephemeral(1599).is_empty(),
        "not offline long enough"
    );
    assert_eq!(a.remove_stale_ephemeral(1600).len(), 1);
    assert!(a.peers.is_empty());
}

#[test]
fn approval_and_group_membership() {
    let mut a = Account::new("t");
    a.update_settings(&SettingsInput {
        peer_approval_required: Some(true),
        ..Default::default()
    })
    .unwrap();
    let (_, k) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "k".into(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    let p = register(&mut a, &k, 1, "laptop").unwrap();
    assert!(!p.approved);
    assert!(a.approve_peer("laptop").unwrap().approved);
    let g = a
        .create_group(&GroupInput {
            name: "Ops".into(),
            peers: Some(vec!["laptop".into()]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(a.peers[&p.id].groups, vec![g.id.clone()]);
    a.update_peer(
        "laptop",
        &PeerUpdate {
            groups: Some(vec!["All".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(a.peers[&p.id].groups.is_empty(), "All is implicit");
}

/// Issue 12, defect 7: a peer's posture report lists the posture checks of the enabled
/// policies that have it as a source (by group, All, or as the single source peer), each with
/// pass/fail and reasons; checks of policies it is not a source of, or disabled ones, are left
/// out.
#[test]
fn posture_report_lists_the_checks_that_apply_and_why() {
    let (mut a, key) = base();
    let alice = a.peer_id("alice").unwrap();
    a.update_peer(
        "alice",
        &PeerUpdate {
            groups: Some(vec!["Development".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    register(&mut a, &key, 2, "bob").unwrap();
    a.update_peer_meta(
        &alice,
        &PeerMeta {
            os: "linux".into(),
            client_version: "0.1.0".into(),
            ui_version: "swiftgate/0.1.0".into(),
            kernel_version: "6.1.0-13-amd64".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let check = |a: &mut Account, name: &str, checks: PostureChecksInput| {
        a.create_posture_check(&PostureCheckInput {
            name: name.into(),
            checks,
            ..Default::default()
        })
        .unwrap();
    };
    check(
        &mut a,
        "min-client",
        PostureChecksInput {
            client_version: Some(MinVersionCheck {
                min_version: "0.45.0".into(),
            }),
            ..Default::default()
        },
    );
    check(
        &mut a,
        "kernel",
        PostureChecksInput {
            os_version: Some(OsVersionCheck {
                linux: Some("5.10".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    check(
        &mut a,
        "unused",
        PostureChecksInput {
            os_version: Some(OsVersionCheck {
                darwin: Some("13".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let policy = |a: &mut Account, name: &str, src: PolicyInput, checks: &[&str]| {
        a.create_policy(&PolicyInput {
            name: name.into(),
            destinations: Some(vec!["Internal Apps".into()]),
            source_posture_checks: checks.iter().map(|c| c.to_string()).collect(),
            ..src
        })
        .unwrap();
    };
    let groups = |g: &str| PolicyInput {
        sources: Some(vec![g.into()]),
        ..Default::default()
    };
    policy(
        &mut a,
        "dev-to-apps",
        groups("Development"),
        &["min-client"],
    );
    policy(
        &mut a,
        "all-to-apps",
        groups("All"),
        &["kernel", "min-client"],
    );
    policy(&mut a, "apps-to-dev", groups("Internal Apps"), &["unused"]);
    policy(&mut a, "off", groups("Development"), &["unused"]);
    a.set_policy_enabled("off", false).unwrap();

    let r = a.posture_report("alice").unwrap();
    assert_eq!(r.peer_id, alice);
    assert_eq!(r.client_version, "0.1.0");
    assert_eq!(r.ui_version, "swiftgate/0.1.0");
    assert!(!r.passed);
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["kernel", "min-client"]);
    let kernel = &r.checks[0];
    assert!(kernel.passed);
    assert_eq!(kernel.policies, ["all-to-apps"]);
    assert_eq!(
        kernel.results[0].reason,
        "linux kernel 6.1.0-13-amd64 meets minimum 5.10"
    );
    let min = &r.checks[1];
    assert!(!min.passed);
    assert_eq!(min.policies, ["all-to-apps", "dev-to-apps"]);
    assert_eq!(min.results[0].check, "client_version");
    assert_eq!(
        min.results[0].reason,
        "client version 0.1.0 below minimum 0.45.0 (agent swiftgate/0.1.0)"
    );

    // bob is a source of all-to-apps only.
    let bob = a.posture_report("bob").unwrap();
    assert_eq!(bob.peer_name, "bob");
    let names: Vec<&str> = bob.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["kernel", "min-client"]);
    assert_eq!(
        bob.checks[1].results[0].reason,
        "client version not reported (minimum 0.45.0)"
    );
    // A single source peer counts too; no applicable check passes.
    a.delete_policy("all-to-apps").unwrap();
    let bob = a.posture_report("bob").unwrap();
    assert!(bob.passed && bob.checks.is_empty());
    let bob_id = a.peer_id("bob").unwrap();
    a.create_policy(&PolicyInput {
        name: "bob-only".into(),
        source_resource: Some(TargetInput {
            kind: "peer".into(),
            id: bob_id,
        }),
        destinations: Some(vec!["Internal Apps".into()]),
        source_posture_checks: vec!["kernel".into()],
        ..Default::default()
    })
    .unwrap();
    let bob = a.posture_report("bob").unwrap();
    assert_eq!(bob.checks.len(), 1);
    assert_eq!(bob.checks[0].policies, ["bob-only"]);
    assert_eq!(
        bob.checks[0].results[0].reason,
        "OS not reported (allowed: linux)"
    );
    assert!(a.posture_report("nobody").is_err());
}

/// Rule ids survive policy updates (the agents' flow events and firewall rules carry them):
/// a rule named by `id` keeps it (as NetBird's policy handler does), a rule without one keeps
/// the id of the rule at its position; an id the policy does not have is refused.
#[test]
fn policy_updates_keep_rule_ids() {
    let mut a = Account::new("t");
    group(&mut a, "Dev");
    group(&mut a, "Ops");
    let rule = |id: Option<&str>, proto: &str| RuleInput {
        id: id.map(str::to_string),
        protocol: Some(proto.into()),
        sources: vec!["Dev".into()],
        destinations: vec!["Ops".into()],
        ..Default::default()
    };
    let two = |r0: RuleInput, r1: RuleInput| PolicyInput {
        name: "dns".into(),
        rules: Some(vec![r0, r1]),
        ..Default::default()
    };
    let p = a
        .create_policy(&two(rule(None, "udp"), rule(None, "tcp")))
        .unwrap();
    let (r0, r1) = (p.rules[0].id.clone(), p.rules[1].id.clone());

    // Same rules again, no ids: positions keep theirs.
    let q = a
        .update_policy("dns", &two(rule(None, "udp"), rule(None, "icmp")))
        .unwrap();
    assert_eq!(
        (q.rules[0].id.as_str(), q.rules[1].id.as_str()),
        (r0.as_str(), r1.as_str())
    );

    // Reordered by id: each rule keeps its own; a rule without id whose position's id is
    // claimed by another gets a new one.
    let q = a
        .update_policy("dns", &two(rule(Some(&r1), "tcp"), rule(None, "udp")))
        .unwrap();
    assert_eq!(q.rules[0].id, r1);
    assert!(q.rules[1].id != r0 && q.rules[1].id != r1);

    // The single-rule form keeps its rule id too.
    let s = a
        .create_policy(&policy("Dev", "Ops", "tcp", &["22"]))
        .unwrap();
    let s2 = a
        .update_policy("p", &policy("Dev", "Ops", "tcp", &["2222"]))
        .unwrap();
    assert_eq!(s.rules[0].id, s2.rules[0].id);

    // Unknown or repeated ids are refused, naming the field.
    refused(&a, "rules[0].id", |a| {
        a.update_policy(
            "dns",
            &two(rule(Some("rule-nope"), "tcp"), rule(None, "udp")),
        )
        .map(|_| ())
    });
    refused(&a, "rules[1].id", |a| {
        a.update_policy("dns", &two(rule(Some(&r1), "tcp"), rule(Some(&r1), "udp")))
            .map(|_| ())
    });
    // Another policy's rule id cannot be taken over.
    let other = s2.rules[0].id.clone();
    refused(&a, "rules[0].id", |a| {
        a.update_policy("dns", &two(rule(Some(&other), "tcp"), rule(None, "udp")))
            .map(|_| ())
    });
}

/// NetBird gives each account a random /16 inside 100.64.0.0/10 and a random ULA /64 (`fd`
/// + 56 random bits); new accounts enable IPv6 for the All group.
#[test]
fn new_accounts_get_a_random_slash16_and_a_ula_slash64() {
    let cgnat: ipnet::Ipv4Net = CGNAT_RANGE.parse().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let a = Account::new("t");
        let r = a.settings.overlay_range;
        assert_eq!(r.prefix_len(), 16, "{r}");
        assert!(cgnat.contains(&r), "{r}");
        seen.insert(r);
        let v6 = a.settings.overlay_range_v6.expect("a v6 range");
        assert_eq!(v6.prefix_len(), 64);
        assert_eq!(v6.network().octets()[0], 0xfd, "{v6}");
        assert_eq!(
            a.settings.ipv6_enabled_groups,
            vec![ALL_GROUP_ID.to_string()]
        );
    }
    assert!(seen.len() > 1, "random, not always {seen:?}");

    let mut a = Account::new("t");
    let (_, k) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "k".into(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    let p = register(&mut a, &k, 1, "laptop").unwrap();
    assert!(a.settings.overlay_range.contains(&p.ip));
    let v6 = a.peer_ipv6(&p).expect("IPv6 on for All");
    assert!(a.settings.overlay_range_v6.unwrap().contains(&v6));
    // Turned off: no v6 address.
    a.update_settings(&SettingsInput {
        ipv6_enabled_groups: Some(vec![]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(a.peer_ipv6(&p), None);
    refused(&a, "ipv6_enabled_groups", |a| {
        a.update_settings(&SettingsInput {
            ipv6_enabled_groups: Some(vec!["nope".into()]),
            ..Default::default()
        })
        .map(drop)
    });
    refused(&a, "overlay_range_v6", |a| {
        a.update_settings(&SettingsInput {
            overlay_range_v6: Some("2001:db8::/64".into()),
            ..Default::default()
        })
        .map(drop)
    });
}

/// An account stored by an older server has the /10 and no IPv6 settings: loading keeps every
/// peer's address, narrows the range to the /16 that holds them all (or a random /16 without
/// peers), keeps the /10 when the peers span several /16s, gives it a v6 range but leaves
/// IPv6 off (no enabled groups).
#[test]
fn legacy_accounts_keep_their_addresses() {
    let legacy = r#"{"overlay_range":"100.64.0.0/10","peer_approval_required":false,
        "ephemeral_offline_secs":600,"dns_domain":"swiftgate.internal"}"#;
    let settings: Settings = serde_json::from_str(legacy).unwrap();
    assert_eq!(settings.overlay_range_v6, None);
    assert!(settings.ipv6_enabled_groups.is_empty());

    let mut a = Account::new("t");
    a.settings = settings.clone();
    let (_, k) = a
        .create_setup_key(
            &SetupKeyInput {
                name: "k".into(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    let p1 = register(&mut a, &k, 1, "one").unwrap();
    let p2 = register(&mut a, &k, 2, "two").unwrap();
    assert_eq!(p1.ip.to_string(), "100.64.0.1");
    let before: Vec<_> = a.peers.values().map(|p| p.ip).collect();
    assert!(a.upgrade_legacy_settings());
    assert_eq!(a.settings.overlay_range.to_string(), "100.64.0.0/16");
    assert_eq!(a.peers.values().map(|p| p.ip).collect::<Vec<_>>(), before);
    assert!(a.settings.overlay_range_v6.is_some());
    assert!(a.settings.ipv6_enabled_groups.is_empty(), "IPv6 stays off");
    assert_eq!(a.peer_ipv6(&p2), None);
    assert!(!a.upgrade_legacy_settings(), "runs once");

    // Peers in two /16s: the /10 stays.
    let mut b = Account::new("t");
    b.settings = settings.clone();
    b.peers.insert(p1.id.clone(), p1.clone());
    let mut far = p2.clone();
    far.ip = "100.65.0.1".parse().unwrap();
    b.peers.insert(far.id.clone(), far);
    b.upgrade_legacy_settings();
    assert_eq!(b.settings.overlay_range.to_string(), "100.64.0.0/10");

    // No peers: a random /16.
    let mut c = Account::new("t");
    c.settings = settings;
    c.upgrade_legacy_settings();
    assert_eq!(c.settings.overlay_range.prefix_len(), 16);
}

/// Moving the overlay onto a resource's addresses is refused (the resource would become
/// unroutable, issue 12 defect 3).
#[test]
fn overlay_cannot_move_onto_a_resource() {
    let mut a = Account::new("t");
    a.create_network(&NetworkInput {
        name: "n".into(),
        description: String::new(),
    })
    .unwrap();
    let free = if a.settings.overlay_range.to_string() == "100.70.0.0/16" {
        "100.71.0.0/16"
    } else {
        "100.70.0.0/16"
    };
    a.create_resource(
        "n",
        &ResourceInput {
            name: "r".into(),
            address: free.into(),
            ..Default::default()
        },
    )
    .unwrap();
    refused(&a, "overlaps resource \"r\"", |a| {
        a.update_settings(&SettingsInput {
            overlay_range: Some(free.into()),
            ..Default::default()
        })
        .map(drop)
    });
}

/// Every group's members as the index of `m` lists them.
fn index_of(a: &Account, m: &Members) -> Vec<(String, Vec<String>, Vec<String>)> {
    a.groups
        .keys()
        .map(|g| (g.clone(), m.peer_ids(g), m.resource_ids(g)))
        .collect()
}

#[test]
fn the_member_index_advanced_by_each_change_equals_one_built_again() {
    let (mut a, key) = base();
    let mut m = a.members();
    let mut step = |a: &mut Account, what: &str, op: &dyn Fn(&mut Account)| {
        let prev = a.clone();
        op(a);
        m = m.advance(&prev, a).expect("an index advances");
        assert_eq!(index_of(a, &m), index_of(a, &a.members()), "after {what}");
        assert_eq!(
            index_of(a, &m),
            index_of(a, &Members::Scan(std::sync::Arc::new(a.clone()))),
            "after {what}: the scan agrees"
        );
    };
    step(&mut a, "a peer registers", &|a| {
        register(a, &key, 2, "bob").unwrap();
    });
    step(&mut a, "a peer joins two groups", &|a| {
        a.update_peer(
            "bob",
            &PeerUpdate {
                groups: Some(vec!["Development".into(), "Internal Apps".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    });
    step(&mut a, "a group's peers are replaced", &|a| {
        a.update_group(
            "Development",
            &GroupInput {
                name: "Development".into(),
                peers: Some(vec!["alice".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    });
    step(&mut a, "a resource is added to a group", &|a| {
        a.create_resource(
            "Berlin Office",
            &ResourceInput {
                name: "Grafana".into(),
                address: "10.10.0.6".into(),
                groups: vec!["Development".into(), "Internal Apps".into()],
                ..Default::default()
            },
        )
        .unwrap();
    });
    step(&mut a, "a resource leaves a group", &|a| {
        a.update_resource(
            "Grafana",
            &ResourceInput {
                name: "Grafana".into(),
                address: "10.10.0.6".into(),
                groups: vec!["Development".into()],
                ..Default::default()
            },
        )
        .unwrap();
    });
    step(&mut a, "a peer is deleted", &|a| {
        a.delete_peer("alice").unwrap();
    });
    step(&mut a, "a resource is deleted", &|a| {
        a.delete_resource("Grafana").unwrap();
    });
    step(&mut a, "nothing changes", &|_| {});
}
