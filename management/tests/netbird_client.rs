//! NetBird's own tooling against swiftgate-management: the PyPI `netbird` REST client (pinned
//! in scripts/python-requirements.txt, installed by scripts/bootstrap.sh into its virtual
//! environment) drives the Berlin Office walkthrough with its default `Token` authentication
//! against a server on a real socket (`walkthrough.py` asserts each answer), and the result is
//! checked through swiftgate's own client.
//!
//! The test fails, not skips, when the environment is missing: `./x test` installs it.

mod common;

use serde_json::Value;
use swiftgate_management::cli::Client;

/// A server on a real socket and one of the scripts in `tests/netbird_client/` run against it
/// with the admin token; returns the server, its API URL and token, the data directory and
/// the script's JSON summary (the test fails with the script's output if it fails).
async fn drive(script: &str) -> (common::Running, String, String, tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(dir.path());
    let api = format!("http://{}", cfg.listen);
    let server = common::start(cfg).await;
    let token = common::admin_token(dir.path());
    let (path, a, t) = (
        format!("netbird_client/{script}"),
        api.clone(),
        token.clone(),
    );
    let out = tokio::task::spawn_blocking(move || {
        common::run_script(&path, &[("NB_HOST", a), ("NB_PAT", t)])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "{script} failed:\n{stderr}");
    let made: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON summary");
    (server, api, token, dir, made)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pypi_netbird_client_drives_the_berlin_office_walkthrough() {
    let (server, api, token, _dir, made) = drive("walkthrough.py").await;

    // What NetBird's client made, as swiftgate's own client sees it.
    let check = tokio::task::spawn_blocking(move || {
        let c = Client::new(&api, Some(token));
        let pol = c
            .get(&format!(
                "/api/policies/{}",
                made["policy"].as_str().unwrap()
            ))
            .unwrap();
        let r = &pol["rules"][0];
        assert_eq!(r["id"], made["rule"], "rule id kept across the update");
        assert_eq!(r["protocol"], "tcp");
        assert_eq!(r["ports"], serde_json::json!(["443", "8443"]));
        assert_eq!(r["sources"][0]["id"], made["groups"]["dev"]);
        assert_eq!(pol["source_posture_checks"][0], made["posture_check"]);
        let net = c
            .get(&format!(
                "/api/networks/{}",
                made["network"].as_str().unwrap()
            ))
            .unwrap();
        assert_eq!(net["resources_count"], 2);
        assert_eq!(
            net["routing_peers_count"], 0,
            "no peer in the routers' group yet"
        );
        let keys = c.get("/api/setup-keys").unwrap();
        let revoked = keys
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == made["revoked_key_id"])
            .unwrap();
        assert_eq!(revoked["revoked"], true);
        let settings = c.get("/api/settings").unwrap();
        assert_eq!(settings["dns_domain"], "berlin.internal");
        let users = c.get("/api/users").unwrap();
        let bot = users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == made["service_user"])
            .unwrap();
        assert_eq!(bot["role"], "user");
        let tokens = c
            .get(&format!(
                "/api/users/{}/tokens",
                made["service_user"].as_str().unwrap()
            ))
            .unwrap();
        assert_eq!(tokens, serde_json::json!([]), "the deleted token is gone");
        let routes = c.get("/api/routes").unwrap();
        assert_eq!(routes.as_array().unwrap().len(), 2);
        let lan = routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["network_id"] == "berlin-lan")
            .unwrap();
        assert_eq!(lan["metric"], 50);
        let ns = c.get("/api/dns/nameservers").unwrap();
        assert_eq!(ns[0]["id"], made["nameserver_group"]);
        assert_eq!(ns[0]["search_domains_enabled"], true);
        let events = c.get("/api/events/audit?activity_code=policy.add").unwrap();
        assert_eq!(events.as_array().unwrap().len(), 2);
    });
    let checked = check.await;
    server.stop().await;
    checked.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pypi_netbird_client_drives_the_three_tier_example() {
    let (server, api, token, _dir, made) = drive("three_tier.py").await;

    // Peers registered with the client's setup keys; their maps as computed now.
    let check = tokio::task::spawn_blocking(move || {
        use base64::Engine as _;
        let c = Client::new(&api, Some(token));
        let key = |i: u8| base64::engine::general_purpose::STANDARD.encode([i; 32]);
        for (i, (name, group)) in [
            ("router", "routers"),
            ("devops", "peer-devops-prod"),
            ("monitor", "svc-monitoring"),
        ]
        .iter()
        .enumerate()
        {
            c.post(
                "/api/peers",
                Some(&serde_json::json!({
                    "setup_key": made["keys"][group], "wg_pubkey": key(i as u8 + 1), "name": name
                })),
            )
            .unwrap();
        }
        let ip = |name: &str| {
            format!(
                "{}/32",
                c.get(&format!("/api/peers/{name}")).unwrap()["ip"]
                    .as_str()
                    .unwrap()
            )
        };
        let (devops, monitor) = (ip("devops"), ip("monitor"));
        // The routing peer admits what the policies allow, from whom they allow it.
        let router = c.get("/api/peers/router/network-map").unwrap();
        let rules = router["route_firewall_rules"].as_array().unwrap();
        let admits = |src: &str, dst: &str, proto: &str, port: &str| {
            rules.iter().any(|r| {
                r["source_ranges"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == src)
                    && r["destination"] == dst
                    && r["protocol"] == proto
                    && r["port"] == port
            })
        };
        assert!(
            admits(&devops, "192.0.2.20/32", "tcp", "443"),
            "devops -> web: {rules:?}"
        );
        assert!(
            admits(&devops, "192.0.2.53/32", "udp", "53"),
            "devops -> dns udp"
        );
        assert!(
            admits(&devops, "192.0.2.53/32", "tcp", "53"),
            "devops -> dns tcp"
        );
        assert!(
            admits(&monitor, "192.0.2.22/32", "tcp", "9200"),
            "monitoring -> db"
        );
        assert!(
            !admits(&devops, "192.0.2.22/32", "tcp", "5432"),
            "devops -/-> db"
        );
        // Clients get routes to what their policies reach, and only that.
        let routes_of = |name: &str| -> Vec<String> {
            c.get(&format!("/api/peers/{name}/network-map")).unwrap()["routes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r["network"].as_str().map(str::to_string))
                .collect()
        };
        let d = routes_of("devops");
        assert!(
            d.contains(&"192.0.2.20/32".into()) && d.contains(&"192.0.2.53/32".into()),
            "{d:?}"
        );
        assert!(
            !d.iter()
                .any(|r| r == "192.0.2.21/32" || r == "192.0.2.22/32"),
            "{d:?}"
        );
        let m = routes_of("monitor");
        for r in [
            "192.0.2.20/32",
            "192.0.2.21/32",
            "192.0.2.22/32",
            "192.0.2.53/32",
        ] {
            assert!(m.contains(&r.to_string()), "monitor lacks {r}: {m:?}");
        }
    });
    let checked = check.await;
    server.stop().await;
    checked.unwrap();
}
