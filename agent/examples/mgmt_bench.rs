//! Policy change to kernel map latency (a benchmark, not a test): the time from an admin API
//! call on the management server to the routing peer's eBPF policy map holding the change.
//!
//! A management server and a managed routing peer run in network namespaces; the benchmark
//! toggles the Berlin Office policy (disable, enable) `--rounds N` times and, for each call,
//! polls the routing peer's pinned `SG_POLICY` map until its entry count reflects the change.
//! Target (issue): under 1 s. `cargo xtask bench` runs it.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, lpm_trie::LpmTrie};
use serde_json::json;
use swiftgate_common::{PolicyKey, PolicyValue, maps};
use swiftgate_testkit::{
    mgmt::{Mgmt, enrol, peer, wait_ready},
    wg::Lab,
};

fn policy_entries(pin: &std::path::Path) -> usize {
    let Ok(data) = MapData::from_pin(pin.join("maps").join(maps::POLICY)) else {
        return usize::MAX;
    };
    let Ok(map) = Map::from_map_data(data) else {
        return usize::MAX;
    };
    let Ok(trie) = LpmTrie::<_, PolicyKey, PolicyValue>::try_from(map) else {
        return usize::MAX;
    };
    trie.keys().filter_map(|k| k.ok()).count()
}

fn main() {
    swiftgate_testkit::require_root();
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut lab = Lab::new();
    let client = lab.ns("c");
    let gw = lab.ns("g");
    lab.link(client, "u0", "203.0.113.2/24", gw, "u1", "203.0.113.1/24");
    let lan = lab.ns("l");
    lab.link(lan, "eth0", "192.0.2.10/24", gw, "lan0", "192.0.2.1/24");
    let m = Mgmt::start(&lab, gw, "203.0.113.1");
    for g in ["Development", "Internal Apps", "routers"] {
        m.post("/api/groups", json!({ "name": g }));
    }
    let key = |g: &str| {
        m.post(
            "/api/setup-keys",
            json!({"name": g, "kind": "reusable", "auto_groups": [g]}),
        )["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let router = enrol(&lab, gw, "router", &m, &key("routers"), &["--lan", "lan0"]);
    let alice = enrol(
        &lab,
        client,
        "alice",
        &m,
        &key("Development"),
        &["--listen-port", "51821"],
    );
    wait_ready(&router);
    wait_ready(&alice);
    let (router_id, _) = peer(&m, &router.keys);
    m.post("/api/networks", json!({"name": "Berlin"}));
    m.post(
        "/api/networks/Berlin/resources",
        json!({"name": "wiki", "address": "192.0.2.10/32", "groups": ["Internal Apps"]}),
    );
    m.post(
        "/api/networks/Berlin/routers",
        json!({"peer": router_id, "masquerade": true}),
    );
    let pol = m.post("/api/policies", json!({"name": "dev-to-apps", "sources": ["Development"], "destinations": ["Internal Apps"], "protocol": "tcp", "ports": [443]}));
    let id = pol["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(2));

    let mut lat = Vec::new();
    let mut api = Vec::new();
    for i in 0..rounds * 2 {
        let before = policy_entries(&router.pin);
        let verb = if i % 2 == 0 { "disable" } else { "enable" };
        let t0 = Instant::now();
        m.post(&format!("/api/policies/{id}/{verb}"), json!({}));
        api.push(t0.elapsed());
        let deadline = t0 + Duration::from_secs(5);
        while policy_entries(&router.pin) == before {
            if Instant::now() > deadline {
                eprintln!("round {i}: the policy map did not change within 5 s");
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        lat.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    lat.sort();
    api.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!("\n| policy change -> routing peer's eBPF map | median | p95 | max |");
    println!("|---|---|---|---|");
    println!(
        "| admin API call returns | {:.1} ms | {:.1} ms | {:.1} ms |",
        pct(&api, 0.5).as_secs_f64() * 1e3,
        pct(&api, 0.95).as_secs_f64() * 1e3,
        api.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| map changed in the kernel ({} changes) | {:.1} ms | {:.1} ms | {:.1} ms |",
        lat.len(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.95).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "\nreproduce: cargo run --release -p swiftgate --example mgmt_bench -- --rounds {rounds}"
    );
}
