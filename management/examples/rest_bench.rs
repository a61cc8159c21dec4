//! Benchmark (not a test): the admin REST API over a real socket, with token authentication,
//! the activity log and a SQLite store on disk, as `serve` runs it.
//!
//! `cargo run --release -p swiftgate-management --example rest_bench [-- --seconds 5]`
//!
//! 1. Single-write latency (one client, `PUT /api/groups/{id}` changing a description, 300
//!    writes): on an empty account and on one with 10,000 peers, 10,000 groups and 2,000
//!    policies.
//! 2. Throughput and latency with 50 and 500 concurrent clients (one keep-alive connection
//!    each) on the large account: reads (`GET /api/groups/{id}`), writes (`PUT` as above) and
//!    mixed (90% reads, 10% writes); and the floor of this setup on this machine:
//!    `GET /api/health` (the same HTTP, token check and client threads, no work).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use swiftgate_management::api::{self, ApiConfig, HttpLimits};
use swiftgate_management::model::*;
use swiftgate_management::service::Service;
use swiftgate_management::store::Store;

const PEERS: usize = 10_000;
const GROUPS: usize = 10_000;
const POLICIES: usize = 2_000;

fn big_account() -> Account {
    let mut a = Account::new("bench");
    let mut ids = Vec::with_capacity(GROUPS);
    for i in 0..GROUPS {
        // Inserted directly: creating through the model checks every name (quadratic set-up).
        let id = format!("grp-{i:05}");
        a.groups.insert(
            id.clone(),
            Group {
                id: id.clone(),
                name: format!("team-{i}"),
                description: String::new(),
                built_in: false,
            },
        );
        ids.push(id);
    }
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    for i in 0..PEERS {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        use base64::Engine as _;
        let id = format!("peer-{i:05}");
        let mut groups = vec![ids[i % GROUPS].clone(), ids[(i * 7 + 3) % GROUPS].clone()];
        groups.sort();
        groups.dedup();
        a.peers.insert(
            id.clone(),
            Peer {
                id,
                name: format!("host-{i}"),
                dns_label: format!("host-{i}"),
                wg_pubkey: base64::engine::general_purpose::STANDARD.encode(key),
                ssh_pubkey: String::new(),
                ip: Ipv4Addr::from(base + 1 + i as u32),
                groups,
                meta: PeerMeta::default(),
                connected: false,
                last_seen_at: 0,
                created_at: 0,
                approved: true,
                ephemeral: false,
                setup_key_id: None,
            },
        );
    }
    for p in 0..POLICIES {
        let id = format!("pol-{p:05}");
        a.policies.insert(
            id.clone(),
            Policy {
                id: id.clone(),
                name: format!("policy-{p}"),
                description: String::new(),
                enabled: true,
                rules: vec![PolicyRule {
                    id: format!("rule-{p:05}"),
                    name: format!("policy-{p}"),
                    description: String::new(),
                    enabled: true,
                    action: Action::Accept,
                    protocol: Protocol::Tcp,
                    ports: vec![PortRange::single(443)],
                    bidirectional: false,
                    sources: vec![ids[p % GROUPS].clone()],
                    source_resource: None,
                    destinations: vec![ids[(p * 3 + 1) % GROUPS].clone()],
                    destination_resource: None,
                }],
                source_posture_checks: vec![],
            },
        );
    }
    a
}

struct Server {
    url: String,
    token: String,
    groups: Vec<String>,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

fn start(account: Option<Account>) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    if let Some(a) = &account {
        let mut s = Store::open(&db).expect("store");
        s.save(None, a).expect("save");
    }
    let svc = Arc::new(Service::open_with(&db, true).expect("service"));
    let owner = svc.bootstrap_owner().expect("owner");
    let (_, token) = svc.create_token(&owner, &owner, "bench", 1).expect("token");
    let mut groups: Vec<String> = svc
        .account()
        .groups
        .values()
        .filter(|g| !g.built_in)
        .map(|g| g.id.clone())
        .collect();
    if groups.is_empty() {
        for i in 0..100 {
            let g = svc
                .mutate("bench", |a, _| {
                    a.create_group(&GroupInput {
                        name: format!("g{i}"),
                        ..Default::default()
                    })
                })
                .expect("group");
            groups.push(g.id);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = api::router(svc, ApiConfig::default());
    rt.spawn(api::serve(
        listener,
        app,
        HttpLimits {
            max_connections: 2048,
            ..HttpLimits::default()
        },
        std::future::pending(),
    ));
    Server {
        url: format!("http://{addr}"),
        token,
        groups,
        _dir: dir,
        _rt: rt,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// One request; returns its latency. `n == usize::MAX`: the floor, `GET /api/health` (the
/// same HTTP, authentication and client threads, no work).
fn request(s: &Server, agent: &ureq::Agent, write: bool, n: usize) -> Duration {
    let g = &s.groups[n % s.groups.len()];
    let url = if n == usize::MAX {
        format!("{}/api/health", s.url)
    } else {
        format!("{}/api/groups/{g}", s.url)
    };
    let auth = format!("Token {}", s.token);
    let t = Instant::now();
    let status = if write {
        agent.put(&url).header("authorization", &auth).send_json(
            serde_json::json!({"name": format!("{g}-n"), "description": format!("d{n}")}),
        )
    } else {
        agent.get(&url).header("authorization", &auth).call()
    }
    .map(|mut r| {
        let _ = r.body_mut().read_to_string();
        r.status().as_u16()
    });
    match status {
        Ok(200) => {}
        other => panic!("{url}: {other:?}"),
    }
    t.elapsed()
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn single_writes(s: &Server, label: &str) {
    let a = agent();
    for i in 0..20 {
        request(s, &a, true, i);
    }
    let mut lat: Vec<Duration> = (0..300).map(|i| request(s, &a, true, i)).collect();
    println!(
        "| {label} | {:.2} ms | {:.2} ms |",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
}

fn concurrent(s: &Arc<Server>, clients: usize, write_every: usize, secs: u64, label: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let a = agent();
                let mut lat = Vec::new();
                let mut writes = Vec::new();
                let mut n = c * 7919;
                while !stop.load(Ordering::Relaxed) {
                    if write_every == usize::MAX {
                        lat.push(request(&s, &a, false, usize::MAX));
                        continue;
                    }
                    let write = write_every > 0 && n % write_every == 0;
                    let t = request(&s, &a, write, n);
                    lat.push(t);
                    if write && write_every > 1 {
                        writes.push(t);
                    }
                    n += 1;
                }
                (lat, writes)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut writes) = (Vec::new(), Vec::new());
    for h in handles {
        let (l, w) = h.join().expect("client");
        all.extend(l);
        writes.extend(w);
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "| {label} | {clients} | {:.0} req/s | {:.2} ms | {:.2} ms |",
        all.len() as f64 / took,
        pct(&mut all, 0.5),
        pct(&mut all, 0.99)
    );
    if !writes.is_empty() {
        println!(
            "| ... its writes alone | {clients} | {:.0} req/s | {:.2} ms | {:.2} ms |",
            writes.len() as f64 / took,
            pct(&mut writes, 0.5),
            pct(&mut writes, 0.99)
        );
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let secs: u64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("## Single-write latency (PUT /api/groups/{{id}}, one client, 300 writes)\n");
    println!("| account | p50 | p99 |\n|---|---:|---:|");
    let empty = start(None);
    single_writes(&empty, "empty (100 groups)");
    drop(empty);
    let t = Instant::now();
    let big = Arc::new(start(Some(big_account())));
    eprintln!(
        "large account stored and loaded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    single_writes(&big, "10,000 peers, 10,000 groups, 2,000 policies");
    println!("\n## Concurrent clients on the large account ({secs} s each)\n");
    println!("| load | clients | throughput | p50 | p99 |\n|---|---:|---:|---:|---:|");
    let only: Option<usize> = std::env::var("ONLY_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok());
    for clients in [50, 500]
        .into_iter()
        .filter(|c| only.is_none_or(|o| o == *c))
    {
        concurrent(&big, clients, usize::MAX, secs, "floor: GET /api/health");
        concurrent(&big, clients, 0, secs, "reads");
        concurrent(&big, clients, 1, secs, "writes");
        concurrent(&big, clients, 10, secs, "mixed (10% writes)");
    }
}
