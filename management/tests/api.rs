//! Admin REST API end to end, in process (tower `oneshot` on the axum router): the Berlin
//! Office walkthrough, the validation matrix (every bad request a 4xx with a JSON error and
//! nothing written, in memory or on disk), persistence across a restart, the bearer token.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use swiftgate_management::api;
use swiftgate_management::api::ApiConfig;
use swiftgate_management::service::Service;
use swiftgate_management::store::{DB_FILE, Store};
use tower::ServiceExt as _;

fn wg_key(i: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([i; 32])
}

/// The router and an owner's token, which every helper but [`call_as`] sends.
#[derive(Clone)]
struct Api {
    router: Router,
    token: String,
}

impl Api {
    /// The API over `svc` with its default configuration (tokens required), and a token of
    /// the first start's owner.
    fn new(svc: Arc<Service>) -> Api {
        let owner = svc.bootstrap_owner().unwrap();
        let (_, token) = svc.create_token(&owner, &owner, "tests", 1).unwrap();
        Api {
            router: api::router(svc, ApiConfig::default()),
            token,
        }
    }
}

async fn call(app: &Api, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    call_raw(app, method, path, body.map(|b| b.to_string())).await
}

async fn call_raw(
    app: &Api,
    method: Method,
    path: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let auth = format!("Token {}", app.token);
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    call_as(app, method, path, body, &headers).await
}

/// A request with exactly `headers` (and `Host: 127.0.0.1:8080` unless they have a Host).
async fn call_as(
    app: &Api,
    method: Method,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", "127.0.0.1:8080");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
    };
    (status, v)
}

async fn ok(app: &Api, method: Method, path: &str, body: Option<Value>) -> Value {
    let (s, v) = call(app, method.clone(), path, body).await;
    assert!(s.is_success(), "{method} {path}: {s} {v}");
    v
}

/// The Berlin Office set-up through the API: groups, keys, peers, Network, resources, router.
async fn berlin(app: &Api) -> (Value, Value) {
    ok(app, Method::DELETE, "/api/policies/Default", None).await;
    ok(
        app,
        Method::POST,
        "/api/groups",
        Some(json!({"name": "Development"})),
    )
    .await;
    ok(
        app,
        Method::POST,
        "/api/groups",
        Some(json!({"name": "Internal Apps"})),
    )
    .await;
    let dev_key = ok(
        app,
        Method::POST,
        "/api/setup-keys",
        Some(json!({"name": "setup-dev-laptops", "auto_groups": ["Development"]})),
    )
    .await;
    let gw_key = ok(
        app,
        Method::POST,
        "/api/setup-keys",
        Some(json!({"name": "setup-prod-routers", "type": "one-off"})),
    )
    .await;
    let alice = ok(
        app,
        Method::POST,
        "/api/peers",
        Some(
            json!({"setup_key": dev_key["key"], "wg_pubkey": wg_key(1), "name": "alice-laptop",
                    "meta": {"os": "linux", "client_version": "0.50.0"}}),
        ),
    )
    .await;
    let gw = ok(
        app,
        Method::POST,
        "/api/peers",
        Some(json!({"setup_key": gw_key["key"], "wg_pubkey": wg_key(2), "name": "office-gw"})),
    )
    .await;
    ok(
        app,
        Method::POST,
        "/api/networks",
        Some(json!({"name": "Berlin Office"})),
    )
    .await;
    ok(
        app,
        Method::POST,
        "/api/networks/Berlin%20Office/resources",
        Some(json!({"name": "Internal Wiki", "address": "10.10.0.5/32", "groups": ["Internal Apps"]})),
    )
    .await;
    ok(
        app,
        Method::POST,
        "/api/networks/Berlin%20Office/resources",
        Some(json!({"name": "Grafana", "address": "grafana.berlin.internal", "groups": ["Internal Apps"]})),
    )
    .await;
    ok(
        app,
        Method::POST,
        "/api/networks/Berlin%20Office/routers",
        Some(json!({"peer": "office-gw", "metric": 100})),
    )
    .await;
    (alice, gw)
}

fn app() -> (Api, Arc<Service>) {
    let svc = Arc::new(Service::new(Store::open_in_memory().unwrap()).unwrap());
    (Api::new(svc.clone()), svc)
}

#[tokio::test]
async fn berlin_office_walkthrough_through_the_api() {
    let (app, _svc) = app();
    let (alice, gw) = berlin(&app).await;
    assert_eq!(
        alice["group_names"],
        json!(["All", "Development"]),
        "auto-group applied"
    );

    // No policy yet: nothing reachable.
    let m = ok(
        &app,
        Method::GET,
        "/api/peers/alice-laptop/network-map",
        None,
    )
    .await;
    assert_eq!(m["routes"], json!([]));
    assert_eq!(m["remote_peers"], json!([]));
    let serial0 = m["serial"].as_u64().unwrap();

    // The seeds' API example shape (flattened single rule).
    let (s, pol) = call(
        &app,
        Method::POST,
        "/api/policies",
        Some(json!({
            "name": "dev-to-apps",
            "description": "Development reaches the Berlin office apps",
            "enabled": true,
            "source_groups": ["Development"],
            "destination_groups": ["Internal Apps"],
            "protocol": "tcp",
            "ports": ["443"]
        })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{pol}");

    let m = ok(
        &app,
        Method::GET,
        "/api/peers/alice-laptop/network-map",
        None,
    )
    .await;
    assert!(m["serial"].as_u64().unwrap() > serial0);
    assert_eq!(m["remote_peers"][0]["name"], "office-gw");
    let wiki = m["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["net_id"] == "Internal Wiki")
        .unwrap();
    assert_eq!(wiki["network"], "10.10.0.5/32");
    assert_eq!(wiki["masquerade"], true);
    assert_eq!(wiki["metric"], 100);
    assert_eq!(wiki["router_wg_pubkey"], gw["wg_pubkey"]);

    let g = ok(&app, Method::GET, "/api/peers/office-gw/network-map", None).await;
    let rules = g["route_firewall_rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    let wiki_rule = rules
        .iter()
        .find(|r| r["destination"] == "10.10.0.5/32")
        .unwrap();
    assert_eq!(
        wiki_rule["source_ranges"],
        json!([format!("{}/32", alice["ip"].as_str().unwrap())])
    );
    assert_eq!(wiki_rule["protocol"], "tcp");
    assert_eq!(wiki_rule["port"], "443");

    // Disable, then enable again.
    ok(
        &app,
        Method::POST,
        "/api/policies/dev-to-apps/disable",
        None,
    )
    .await;
    let m = ok(
        &app,
        Method::GET,
        "/api/peers/alice-laptop/network-map",
        None,
    )
    .await;
    assert_eq!(m["routes"], json!([]));
    ok(&app, Method::POST, "/api/policies/dev-to-apps/enable", None).await;
    let m = ok(
        &app,
        Method::GET,
        "/api/peers/alice-laptop/network-map",
        None,
    )
    .await;
    assert_eq!(m["routes"].as_array().unwrap().len(), 2);

    // Listing endpoints.
    let nets = ok(&app, Method::GET, "/api/networks", None).await;
    assert_eq!(nets[0]["resources_count"], 2);
    let res = ok(&app, Method::GET, "/api/resources", None).await;
    assert!(
        res.as_array()
            .unwrap()
            .iter()
            .any(|r| r["type"] == "domain")
    );
    let keys = ok(&app, Method::GET, "/api/setup-keys", None).await;
    // Listed keys are masked as NetBird masks them: 5 characters and `****`.
    assert!(keys.as_array().unwrap().iter().all(|k| {
        let masked = k["key"].as_str().unwrap();
        k.get("key_hash").is_none() && masked.len() == 9 && masked.ends_with("****")
    }));
    let one_off = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "setup-prod-routers")
        .unwrap();
    assert_eq!(one_off["valid"], false, "one-off key used");
}

/// Every invalid request: a 4xx with `{ "error" }` naming the problem, and nothing written.
#[tokio::test]
async fn validation_matrix_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let svc = Arc::new(Service::open(&db).unwrap());
    let app = Api::new(svc.clone());
    berlin(&app).await;
    ok(
        &app,
        Method::POST,
        "/api/policies",
        Some(json!({
            "name": "dev-to-apps", "sources": ["Development"], "destinations": ["Internal Apps"],
            "protocol": "tcp", "ports": [443]
        })),
    )
    .await;
    let before = svc.account();

    let pol = |extra: Value| {
        let mut b = json!({"name": "p2", "sources": ["Development"], "destinations": ["Internal Apps"], "protocol": "tcp"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Method, &str, Value, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/policies",
            pol(json!({"sources": ["Nope"]})),
            StatusCode::BAD_REQUEST,
            "unknown group \"Nope\"",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"ports": ["90-80"]})),
            StatusCode::BAD_REQUEST,
            "reversed port range 90-80",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"ports": [0]})),
            StatusCode::BAD_REQUEST,
            "port 0",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"ports": [70000]})),
            StatusCode::BAD_REQUEST,
            "above 65535",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"protocol": "icmp", "ports": ["22"]})),
            StatusCode::BAD_REQUEST,
            "only allowed with tcp or udp",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"protocol": "sctp"})),
            StatusCode::BAD_REQUEST,
            "unknown protocol",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"action": "maybe"})),
            StatusCode::BAD_REQUEST,
            "unknown action",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"name": "dev-to-apps"})),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"destinations": []})),
            StatusCode::BAD_REQUEST,
            "no destinations",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"destination_resource": {"type": "resource", "id": "Ghost"}})),
            StatusCode::BAD_REQUEST,
            "unknown resource \"Ghost\"",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"source_posture_checks": ["missing"]})),
            StatusCode::BAD_REQUEST,
            "unknown posture check",
        ),
        (
            Method::POST,
            "/api/policies",
            pol(json!({"colour": "blue"})),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            Method::PUT,
            "/api/policies/nope",
            pol(json!({})),
            StatusCode::NOT_FOUND,
            "policy \"nope\" not found",
        ),
        (
            Method::POST,
            "/api/groups",
            json!({"name": "Development"}),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            Method::POST,
            "/api/groups",
            json!({"name": "  "}),
            StatusCode::BAD_REQUEST,
            "name is empty",
        ),
        (
            Method::POST,
            "/api/groups",
            json!({"name": "x", "peers": ["nobody"]}),
            StatusCode::BAD_REQUEST,
            "unknown peer",
        ),
        (
            Method::PUT,
            "/api/groups/All",
            json!({"name": "Everyone"}),
            StatusCode::BAD_REQUEST,
            "cannot be changed",
        ),
        (
            Method::POST,
            "/api/networks",
            json!({"name": "Berlin Office"}),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            Method::POST,
            "/api/networks/Berlin%20Office/resources",
            json!({"name": "x", "address": "10.0.0.0/33"}),
            StatusCode::BAD_REQUEST,
            "bad CIDR",
        ),
        (
            Method::POST,
            "/api/networks/Berlin%20Office/resources",
            json!({"name": "x", "address": "10.0.0.1/8"}),
            StatusCode::BAD_REQUEST,
            "host bits set",
        ),
        (
            Method::POST,
            "/api/networks/Berlin%20Office/resources",
            json!({"name": "x", "address": "*.*.internal"}),
            StatusCode::BAD_REQUEST,
            "bad wildcard domain",
        ),
        (
            Method::POST,
            "/api/networks/Berlin%20Office/resources",
            json!({"name": "Internal Wiki", "address": "10.0.0.9"}),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            Method::POST,
            "/api/networks/Berlin%20Office/resources",
            json!({"name": "x", "address": "10.0.0.9", "groups": ["Nope"]}),
            StatusCode::BAD_REQUEST,
            "unknown group",
        ),
        (
            Method::POST,
            "/api/networks/Paris/resources",
            json!({"name": "x", "address": "10.0.0.9"}),
            StatusCode::NOT_FOUND,
            "network \"Paris\" not found",
        ),
        (
            Method::POST,
            "/api/networks/Berlin%20Office/routers",
            json!({"peer": "alice-laptop", "metric": 10000}),
            StatusCode::BAD_REQUEST,
            "metric 10000",
        ),
        (
            Method::POST,
            "/api/networks/Berlin%20Office/routers",
            json!({"peer": "office-gw"}),
            StatusCode::CONFLICT,
            "already routes",
        ),
        (
            Method::POST,
            "/api/networks/Berlin%20Office/routers",
            json!({}),
            StatusCode::BAD_REQUEST,
            "needs a peer or peer_groups",
        ),
        (
            Method::POST,
            "/api/setup-keys",
            json!({"name": "k", "type": "forever"}),
            StatusCode::BAD_REQUEST,
            "unknown setup key type",
        ),
        (
            Method::POST,
            "/api/setup-keys",
            json!({"name": "k", "auto_groups": ["Ghosts"]}),
            StatusCode::BAD_REQUEST,
            "unknown group",
        ),
        (
            Method::POST,
            "/api/setup-keys",
            json!({"name": "setup-dev-laptops"}),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            Method::POST,
            "/api/peers",
            json!({"setup_key": "00000000-0000-4000-8000-000000000000", "wg_pubkey": wg_key(9)}),
            StatusCode::FORBIDDEN,
            "setup key is invalid",
        ),
        (
            Method::POST,
            "/api/peers",
            json!({"setup_key": "x", "wg_pubkey": "not-a-key"}),
            StatusCode::BAD_REQUEST,
            "not a WireGuard public key",
        ),
        (
            Method::PUT,
            "/api/peers/alice-laptop",
            json!({"name": "office-gw"}),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            Method::PUT,
            "/api/peers/alice-laptop",
            json!({"groups": ["Nope"]}),
            StatusCode::BAD_REQUEST,
            "unknown group",
        ),
        (
            Method::DELETE,
            "/api/peers/office-gw",
            Value::Null,
            StatusCode::CONFLICT,
            "is a router",
        ),
        (
            Method::DELETE,
            "/api/groups/Development",
            Value::Null,
            StatusCode::CONFLICT,
            "used by policy",
        ),
        (
            Method::DELETE,
            "/api/groups/All",
            Value::Null,
            StatusCode::BAD_REQUEST,
            "cannot be deleted",
        ),
        (
            Method::POST,
            "/api/posture-checks",
            json!({"name": "geo", "checks": {"geo_location": {"locations": [{"country_code": "DE"}]}}}),
            StatusCode::BAD_REQUEST,
            "GeoIP",
        ),
        (
            Method::POST,
            "/api/posture-checks",
            json!({"name": "v", "checks": {"client_version": {"min_version": "new"}}}),
            StatusCode::BAD_REQUEST,
            "bad version",
        ),
        (
            Method::POST,
            "/api/posture-checks",
            json!({"name": "r", "checks": {"peer_network_range": {"ranges": ["10.0.0.0/40"]}}}),
            StatusCode::BAD_REQUEST,
            "bad CIDR",
        ),
        (
            Method::PUT,
            "/api/settings",
            json!({"overlay_range": "10.0.0.0/8"}),
            StatusCode::BAD_REQUEST,
            "not inside 100.64.0.0/10",
        ),
        (
            Method::PUT,
            "/api/settings",
            json!({"ephemeral_offline_secs": 5}),
            StatusCode::BAD_REQUEST,
            "out of range (60 to",
        ),
        (
            Method::PUT,
            "/api/settings",
            json!({"ephemeral_offline_secs": 9_223_372_036_854_775_808u64}),
            StatusCode::BAD_REQUEST,
            "out of range (60 to",
        ),
        (
            Method::PUT,
            "/api/settings",
            json!([null, true]),
            StatusCode::BAD_REQUEST,
            "expected a JSON object",
        ),
        (
            Method::GET,
            "/api/events/audit?until=9223372036854775808",
            Value::Null,
            StatusCode::BAD_REQUEST,
            "until: out of range",
        ),
        (
            Method::GET,
            "/api/peers?colour=blue",
            Value::Null,
            StatusCode::BAD_REQUEST,
            "invalid query",
        ),
        (
            Method::GET,
            "/api/nothing-here",
            Value::Null,
            StatusCode::NOT_FOUND,
            "no such API endpoint",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let body = (!body.is_null()).then_some(body);
        let (s, v) = call(&app, method.clone(), path, body.clone()).await;
        assert_eq!(s, status, "{method} {path} {body:?}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no error field in {v}"));
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} does not contain {needle:?}"
        );
        assert_eq!(svc.account(), before, "{method} {path} changed the account");
    }
    // Malformed JSON.
    let (s, v) = call_raw(&app, Method::POST, "/api/groups", Some("{not json".into())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("invalid request body")
    );
    assert_eq!(svc.account(), before);

    // And nothing reached the disk either.
    drop(app);
    drop(svc);
    let stored = Store::open(&db).unwrap().load_account().unwrap().unwrap();
    assert_eq!(&stored, before.as_ref());
}

#[tokio::test]
async fn restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let before = {
        let svc = Arc::new(Service::open(&db).unwrap());
        let app = Api::new(svc.clone());
        berlin(&app).await;
        ok(
            &app,
            Method::POST,
            "/api/posture-checks",
            Some(json!({
                "name": "min-client", "checks": {"client_version": {"min_version": "0.45.0"}}
            })),
        )
        .await;
        ok(&app, Method::POST, "/api/policies", Some(json!({
            "name": "dev-to-apps", "sources": ["Development"], "destinations": ["Internal Apps"],
            "protocol": "tcp", "ports": ["443", "8000-8080"], "source_posture_checks": ["min-client"]
        }))).await;
        ok(
            &app,
            Method::PUT,
            "/api/settings",
            Some(json!({"peer_approval_required": true})),
        )
        .await;
        svc.account()
    };
    let svc = Arc::new(Service::open(&db).unwrap());
    assert_eq!(svc.account(), before);
    let app = Api::new(svc.clone());
    let m = ok(
        &app,
        Method::GET,
        "/api/peers/alice-laptop/network-map",
        None,
    )
    .await;
    assert_eq!(m["routes"].as_array().unwrap().len(), 2);
    assert_eq!(m["serial"].as_u64(), Some(before.serial));
}

/// Every route of the API, with a method it answers (for the "no token, no answer" check).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/api/peers"),
    ("POST", "/api/peers"),
    ("GET", "/api/peers/x"),
    ("PUT", "/api/peers/x"),
    ("DELETE", "/api/peers/x"),
    ("POST", "/api/peers/x/approve"),
    ("GET", "/api/peers/x/network-map"),
    ("GET", "/api/peers/x/posture"),
    ("GET", "/api/groups"),
    ("POST", "/api/groups"),
    ("PUT", "/api/groups/x"),
    ("DELETE", "/api/groups/x"),
    ("GET", "/api/settings"),
    ("PUT", "/api/settings"),
    ("GET", "/api/networks"),
    ("GET", "/api/networks/routers"),
    ("POST", "/api/networks"),
    ("PUT", "/api/networks/x"),
    ("GET", "/api/resources"),
    ("POST", "/api/networks/x/resources"),
    ("DELETE", "/api/networks/x/resources/y"),
    ("POST", "/api/networks/x/routers"),
    ("DELETE", "/api/networks/x/routers/y"),
    ("GET", "/api/policies"),
    ("POST", "/api/policies"),
    ("POST", "/api/policies/x/enable"),
    ("DELETE", "/api/policies/x"),
    ("GET", "/api/setup-keys"),
    ("POST", "/api/setup-keys"),
    ("POST", "/api/setup-keys/x/revoke"),
    ("GET", "/api/posture-checks"),
    ("POST", "/api/posture-checks"),
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("GET", "/api/users/current"),
    ("PUT", "/api/users/x"),
    ("DELETE", "/api/users/x"),
    ("GET", "/api/users/x/tokens"),
    ("POST", "/api/users/x/tokens"),
    ("DELETE", "/api/users/x/tokens/y"),
    ("GET", "/api/events/audit"),
    ("GET", "/api/events"),
    ("GET", "/api/no-such-route"),
];

#[tokio::test]
async fn no_valid_token_no_answer_on_any_route() {
    let (app, svc) = app();
    let before = svc.account();
    let forged = "nbp_".to_string() + &"A".repeat(36);
    let other_server = swiftgate_management::auth::token::generate();
    let bearer = format!("Bearer {}", app.token);
    let bad: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no header", vec![]),
        (
            "basic auth",
            vec![("authorization", "Basic YWRtaW46YWRtaW4=")],
        ),
        ("empty token", vec![("authorization", "Token ")]),
        ("forged token", vec![("authorization", forged.as_str())]),
        (
            "token of another server",
            vec![("authorization", "Token x")],
        ),
    ];
    let unknown = format!("Token {other_server}");
    for (method, path) in ROUTES {
        let m: Method = method.parse().unwrap();
        for (what, headers) in bad
            .iter()
            .map(|(w, h)| (*w, h.clone()))
            .chain([("unknown token", vec![("authorization", unknown.as_str())])])
        {
            let (s, v) = call_as(&app, m.clone(), path, None, &headers).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {method} {path}: {v}");
            assert_eq!(v["code"], 401, "{v}");
        }
        // Both header forms of a valid token get past authentication.
        for h in [bearer.as_str(), &format!("Token {}", app.token)] {
            let (s, v) = call_as(&app, m.clone(), path, None, &[("authorization", h)]).await;
            assert_ne!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
        }
    }
    assert_eq!(svc.account().groups, before.groups);
}

#[tokio::test]
async fn roles_tokens_blocking_and_revocation() {
    let (app, svc) = app();
    let group = ok(
        &app,
        Method::POST,
        "/api/groups",
        Some(json!({"name": "Ops"})),
    )
    .await;
    // An auditor (service user) and a token for it, made by the owner.
    let auditor = ok(
        &app,
        Method::POST,
        "/api/users",
        Some(json!({"name": "ci-audit", "role": "auditor", "is_service_user": true, "auto_groups": []})),
    )
    .await;
    let aid = auditor["id"].as_str().unwrap();
    let made = ok(
        &app,
        Method::POST,
        &format!("/api/users/{aid}/tokens"),
        Some(json!({"name": "ci", "expires_in": 30})),
    )
    .await;
    let plain = made["plain_token"].as_str().unwrap().to_string();
    assert!(plain.starts_with("nbp_") && plain.len() == 40, "{made}");
    let tid = made["personal_access_token"]["id"].as_str().unwrap();
    let listed = ok(&app, Method::GET, &format!("/api/users/{aid}/tokens"), None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(&plain),
        "the secret is shown once"
    );
    let aud = Api {
        router: app.router.clone(),
        token: plain.clone(),
    };
    // Read-only: reads pass, every write is 403 and changes nothing.
    assert_eq!(
        call(&aud, Method::GET, "/api/groups", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&aud, Method::GET, "/api/events/audit", None).await.0,
        StatusCode::OK
    );
    let before = svc.account();
    for (m, path, body) in [
        (Method::POST, "/api/groups", json!({"name": "Sneaky"})),
        (
            Method::PUT,
            &*format!("/api/groups/{}", group["id"].as_str().unwrap()),
            json!({"name": "X"}),
        ),
        (Method::POST, "/api/setup-keys", json!({"name": "k"})),
        (
            Method::PUT,
            "/api/settings",
            json!({"peer_approval_required": true}),
        ),
        (
            Method::POST,
            "/api/users",
            json!({"name": "x", "role": "owner", "is_service_user": true}),
        ),
    ] {
        let (s, v) = call(&aud, m.clone(), path, Some(body)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {path}: {v}");
    }
    assert_eq!(svc.account(), before);
    // It may manage its own tokens, not the owner's.
    let me = ok(&aud, Method::GET, "/api/users/current", None).await;
    assert_eq!(me["id"], aid);
    assert_eq!(me["permissions"]["modules"]["groups"]["create"], false);
    let owner = svc.bootstrap_owner().unwrap();
    let (s, _) = call(
        &aud,
        Method::GET,
        &format!("/api/users/{owner}/tokens"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "auditors read everything");
    let (s, _) = call(
        &aud,
        Method::POST,
        &format!("/api/users/{owner}/tokens"),
        Some(json!({"name": "steal", "expires_in": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Bad lifetimes are refused.
    let (s, v) = call(
        &aud,
        Method::POST,
        &format!("/api/users/{aid}/tokens"),
        Some(json!({"name": "long", "expires_in": 366})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Blocking the user refuses its token at once; unblocking restores it.
    ok(
        &app,
        Method::PUT,
        &format!("/api/users/{aid}"),
        Some(json!({"role": "auditor", "auto_groups": [], "is_blocked": true})),
    )
    .await;
    assert_eq!(
        call(&aud, Method::GET, "/api/groups", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    ok(
        &app,
        Method::PUT,
        &format!("/api/users/{aid}"),
        Some(json!({"is_blocked": false})),
    )
    .await;
    assert_eq!(
        call(&aud, Method::GET, "/api/groups", None).await.0,
        StatusCode::OK
    );
    // Deleting the token refuses it from the next request on.
    ok(
        &app,
        Method::DELETE,
        &format!("/api/users/{aid}/tokens/{tid}"),
        None,
    )
    .await;
    assert_eq!(
        call(&aud, Method::GET, "/api/groups", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The last owner stays.
    let (s, v) = call(
        &app,
        Method::PUT,
        &format!("/api/users/{owner}"),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // A plain user sees only itself.
    let u = ok(
        &app,
        Method::POST,
        "/api/users",
        Some(json!({"email": "eve@example.com", "role": "user", "is_service_user": true})),
    )
    .await;
    let uid = u["id"].as_str().unwrap();
    let t = ok(
        &app,
        Method::POST,
        &format!("/api/users/{uid}/tokens"),
        Some(json!({"name": "t", "expires_in": 1})),
    )
    .await;
    let eve = Api {
        router: app.router.clone(),
        token: t["plain_token"].as_str().unwrap().into(),
    };
    assert_eq!(
        call(&eve, Method::GET, "/api/peers", None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&eve, Method::GET, "/api/users/current", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&eve, Method::GET, &format!("/api/users/{uid}/tokens"), None)
            .await
            .0,
        StatusCode::OK
    );
    // Deleting a user takes its tokens.
    ok(&app, Method::DELETE, &format!("/api/users/{uid}"), None).await;
    assert_eq!(
        call(&eve, Method::GET, "/api/users/current", None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn browser_attacks_and_oversize_bodies_are_refused() {
    let (app, svc) = app();
    let before = svc.account();
    let auth = format!("Token {}", app.token);
    let form = Some("name=Evil".to_string());
    type Case<'a> = (
        &'a str,
        Method,
        Option<String>,
        Vec<(&'a str, &'a str)>,
        StatusCode,
    );
    let cases: Vec<Case> = vec![
        (
            "cross-site form post",
            Method::POST,
            form.clone(),
            vec![
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "text/plain post (no preflight)",
            Method::POST,
            Some(r#"{"name":"Evil"}"#.into()),
            vec![("authorization", &auth), ("content-type", "text/plain")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "foreign Host (DNS rebinding)",
            Method::POST,
            Some(r#"{"name":"Evil"}"#.into()),
            vec![
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("host", "rebind.attacker.example"),
            ],
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (
            "foreign Origin",
            Method::POST,
            Some(r#"{"name":"Evil"}"#.into()),
            vec![
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("origin", "https://attacker.example"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "Sec-Fetch-Site cross-site",
            Method::POST,
            Some(r#"{"name":"Evil"}"#.into()),
            vec![
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("sec-fetch-site", "cross-site"),
            ],
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, m, body, headers, want) in cases {
        let (s, v) = call_as(&app, m, "/api/groups", body, &headers).await;
        assert_eq!(s, want, "{what}: {v}");
    }
    // A body over the limit: 413, nothing changed.
    let big = json!({"name": "x".repeat(api::MAX_BODY + 10)}).to_string();
    let (s, v) = call_raw(&app, Method::POST, "/api/groups", Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(svc.account(), before);
}

#[tokio::test]
async fn every_change_is_in_the_activity_log() {
    let (app, svc) = app();
    let g = ok(
        &app,
        Method::POST,
        "/api/groups",
        Some(json!({"name": "Ops"})),
    )
    .await;
    let gid = g["id"].as_str().unwrap();
    ok(
        &app,
        Method::PUT,
        &format!("/api/groups/{gid}"),
        Some(json!({"name": "Ops2"})),
    )
    .await;
    // A refused change is not an activity.
    let (s, _) = call(
        &app,
        Method::POST,
        "/api/groups",
        Some(json!({"name": "Ops2"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let k = ok(
        &app,
        Method::POST,
        "/api/setup-keys",
        Some(json!({"name": "k1"})),
    )
    .await;
    let owner = svc.bootstrap_owner().unwrap();
    let t = ok(
        &app,
        Method::POST,
        &format!("/api/users/{owner}/tokens"),
        Some(json!({"name": "t", "expires_in": 1})),
    )
    .await;
    let ev = ok(&app, Method::GET, "/api/events/audit", None).await;
    let ev = ev.as_array().unwrap();
    let codes: Vec<&str> = ev
        .iter()
        .map(|e| e["activity_code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "personal.access.token.create",
            "setupkey.add",
            "group.update",
            "group.add"
        ],
        "newest first"
    );
    assert_eq!(ev[3]["target_id"], gid);
    assert_eq!(ev[3]["meta"]["name"], "Ops");
    assert_eq!(ev[3]["initiator_id"], owner.as_str());
    assert_eq!(ev[3]["activity"], "Group created");
    assert!(ev[3]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ev[1]["target_id"], k["id"]);
    // NetBird's tokens events name the user; the token is in the details.
    assert_eq!(ev[0]["target_id"], owner.as_str());
    assert_eq!(ev[0]["meta"]["token_id"], t["personal_access_token"]["id"]);
    assert!(
        !ev[0]
            .to_string()
            .contains(t["plain_token"].as_str().unwrap())
    );
    assert!(
        !serde_json::to_string(&ev)
            .unwrap()
            .contains(k["key"].as_str().unwrap()),
        "no secrets in the log"
    );
    // Filters (swiftgate's addition).
    let only = ok(
        &app,
        Method::GET,
        &format!("/api/events/audit?target_id={gid}&limit=1"),
        None,
    )
    .await;
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["activity_code"], "group.update");
}

#[tokio::test]
async fn default_policy_and_rollback_through_the_api() {
    let (app, _svc) = app();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let k = ok(
            &app,
            Method::POST,
            "/api/setup-keys",
            Some(json!({"name": format!("k{i}")})),
        )
        .await;
        ok(
            &app,
            Method::POST,
            "/api/peers",
            Some(json!({"setup_key": k["key"], "wg_pubkey": wg_key(10 + i as u8), "name": name})),
        )
        .await;
    }
    let m = ok(&app, Method::GET, "/api/peers/a/network-map", None).await;
    assert_eq!(
        m["remote_peers"][0]["name"], "b",
        "Default: everyone sees everyone"
    );
    // Deleting Default with no replacement: nothing.
    ok(&app, Method::DELETE, "/api/policies/Default", None).await;
    let m = ok(&app, Method::GET, "/api/peers/a/network-map", None).await;
    assert_eq!(m["remote_peers"], json!([]));
    // A disabled emergency policy, enabled for rollback.
    ok(&app, Method::POST, "/api/policies", Some(json!({
        "name": "emergency", "enabled": false, "sources": ["All"], "destinations": ["All"], "bidirectional": true
    }))).await;
    let m = ok(&app, Method::GET, "/api/peers/a/network-map", None).await;
    assert_eq!(m["remote_peers"], json!([]));
    ok(&app, Method::POST, "/api/policies/emergency/enable", None).await;
    let m = ok(&app, Method::GET, "/api/peers/a/network-map", None).await;
    assert_eq!(m["remote_peers"][0]["name"], "b");
}

/// Issue 12, defect 7: `GET /api/peers/{id}/posture` says, per posture check of a policy with
/// the peer as a source, whether it passes and why; the failing peer is left out of the map.
#[tokio::test]
async fn posture_endpoint_explains_failures() {
    let (app, _svc) = app();
    let (_alice, _gw) = berlin(&app).await;
    ok(
        &app,
        Method::POST,
        "/api/posture-checks",
        Some(
            json!({"name": "min-client", "checks": {"client_version": {"min_version": "0.60.0"}}}),
        ),
    )
    .await;
    ok(
        &app,
        Method::POST,
        "/api/posture-checks",
        Some(json!({"name": "edr", "checks": {
            "process": {"processes": [{"linux_path": "/opt/x"}]},
            "peer_network_range": {"ranges": ["192.0.2.0/24"], "action": "allow"}}})),
    )
    .await;
    ok(
        &app,
        Method::POST,
        "/api/policies",
        Some(json!({"name": "dev-to-apps", "sources": ["Development"],
                    "destinations": ["Internal Apps"], "protocol": "tcp", "ports": [443],
                    "source_posture_checks": ["min-client", "edr"]})),
    )
    .await;

    let r = ok(&app, Method::GET, "/api/peers/alice-laptop/posture", None).await;
    assert_eq!(r["peer_name"], "alice-laptop");
    assert_eq!(r["client_version"], "0.50.0");
    assert_eq!(r["passed"], false);
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{r}");
    assert_eq!(checks[0]["name"], "edr");
    assert_eq!(checks[0]["policies"], json!(["dev-to-apps"]));
    assert_eq!(
        checks[0]["results"],
        json!([
            {"check": "peer_network_range", "passed": false,
             "reason": "no network address reported (allowed: 192.0.2.0/24)"},
            {"check": "process", "passed": false,
             "reason": "process /opt/x not running (not reported by the agent yet)"}
        ])
    );
    assert_eq!(checks[1]["name"], "min-client");
    assert_eq!(
        checks[1]["results"][0]["reason"],
        "client version 0.50.0 below minimum 0.60.0"
    );
    // As the map says: alice is no source of dev-to-apps, so no route to the wiki.
    let m = ok(
        &app,
        Method::GET,
        "/api/peers/alice-laptop/network-map",
        None,
    )
    .await;
    assert_eq!(m["routes"], json!([]), "{m}");

    // office-gw is no source of any policy with checks.
    let r = ok(&app, Method::GET, "/api/peers/office-gw/posture", None).await;
    assert_eq!(r["passed"], true);
    assert_eq!(r["checks"], json!([]));
    let (s, v) = call(&app, Method::GET, "/api/peers/nobody/posture", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

/// Issue 12 defect 3: a resource address no agent can honour is refused at write time with a
/// 400 naming `address` and the reason; nothing is written. Exit-node resources (`0.0.0.0/0`,
/// `::/0`) stay allowed.
#[tokio::test]
async fn resource_addresses_agents_cannot_honour_are_refused() {
    let (app, svc) = app();
    berlin(&app).await;
    let s = svc.account().settings.clone();
    let v4 = s.overlay_range;
    let v6 = s.overlay_range_v6.unwrap();
    let overlay_host = std::net::Ipv4Addr::from(u32::from(v4.network()) + 5).to_string();
    let overlay_sub = format!("{}/24", v4.network());
    let overlay_v6_host = std::net::Ipv6Addr::from(u128::from(v6.network()) + 9).to_string();
    let before = svc.account();
    let cases: Vec<(String, &str)> = vec![
        (overlay_host, "overlay"),
        (overlay_sub, "overlay"),
        ("100.0.0.0/8".into(), "overlay"),
        (overlay_v6_host, "overlay"),
        (v6.to_string(), "overlay"),
        ("224.0.0.251".into(), "multicast"),
        ("239.0.0.0/8".into(), "multicast"),
        ("ff02::1".into(), "multicast"),
        ("127.0.0.1".into(), "loopback"),
        ("127.0.0.0/8".into(), "loopback"),
        ("::1".into(), "loopback"),
        ("169.254.169.254".into(), "link-local"),
        ("fe80::/64".into(), "link-local"),
        ("0.0.0.0".into(), "unspecified"),
        ("::".into(), "unspecified"),
    ];
    for (address, needle) in &cases {
        let (st, v) = call(
            &app,
            Method::POST,
            "/api/networks/Berlin%20Office/resources",
            Some(json!({"name": "bad", "address": address})),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{address}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.starts_with("address: ") && msg.contains(needle),
            "{address}: {msg:?} should name the field and say {needle:?}"
        );
        assert_eq!(svc.account(), before, "{address} changed the account");
    }
    // An update to such an address is refused too.
    let (st, v) = call(
        &app,
        Method::PUT,
        "/api/networks/Berlin%20Office/resources/Internal%20Wiki",
        Some(json!({"name": "Internal Wiki", "address": "127.0.0.1"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(svc.account(), before);
    // Exit nodes and ordinary LAN addresses are fine.
    for (name, address) in [
        ("Internet", "0.0.0.0/0"),
        ("Internet v6", "::/0"),
        ("LAN", "192.168.0.0/16"),
        ("Docs v6", "2001:db8::5"),
    ] {
        ok(
            &app,
            Method::POST,
            "/api/networks/Berlin%20Office/resources",
            Some(json!({"name": name, "address": address})),
        )
        .await;
    }
}

/// An admin cannot act as an owner: no tokens for owners, no changes to them, no owner role.
#[tokio::test]
async fn admins_cannot_become_owners() {
    let (app, svc) = app();
    let owner = svc.bootstrap_owner().unwrap();
    let admin = ok(
        &app,
        Method::POST,
        "/api/users",
        Some(json!({"name": "ops", "role": "admin", "is_service_user": true})),
    )
    .await;
    let aid = admin["id"].as_str().unwrap();
    let t = ok(
        &app,
        Method::POST,
        &format!("/api/users/{aid}/tokens"),
        Some(json!({"name": "t", "expires_in": 1})),
    )
    .await;
    let adm = Api {
        router: app.router.clone(),
        token: t["plain_token"].as_str().unwrap().into(),
    };
    // A second owner, so that the last-owner rule is not what refuses.
    ok(
        &app,
        Method::POST,
        "/api/users",
        Some(json!({"name": "owner2", "role": "owner", "is_service_user": true})),
    )
    .await;
    for (m, path, body) in [
        (
            Method::POST,
            format!("/api/users/{owner}/tokens"),
            Some(json!({"name": "x", "expires_in": 1})),
        ),
        (
            Method::PUT,
            format!("/api/users/{owner}"),
            Some(json!({"is_blocked": true})),
        ),
        (
            Method::PUT,
            format!("/api/users/{aid}"),
            Some(json!({"role": "owner"})),
        ),
        (
            Method::POST,
            "/api/users".to_string(),
            Some(json!({"name": "o3", "role": "owner", "is_service_user": true})),
        ),
    ] {
        let (s, v) = call(&adm, m.clone(), &path, body).await;
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::CONFLICT,
            "{m} {path}: {s} {v}"
        );
    }
    assert_eq!(
        svc.user(&owner).unwrap().status,
        swiftgate_management::auth::UserStatus::Active
    );
    assert_eq!(
        svc.tokens(&owner).unwrap().len(),
        1,
        "only the test's own token"
    );
}

/// A group a user names as auto-group is not deleted from under it.
#[tokio::test]
async fn a_users_auto_group_stays() {
    let (app, svc) = app();
    let g = ok(
        &app,
        Method::POST,
        "/api/groups",
        Some(json!({"name": "Laptops"})),
    )
    .await;
    let gid = g["id"].as_str().unwrap();
    ok(
        &app,
        Method::POST,
        "/api/users",
        Some(json!({"name": "bot", "role": "user", "is_service_user": true, "auto_groups": [gid]})),
    )
    .await;
    let (s, v) = call(&app, Method::DELETE, &format!("/api/groups/{gid}"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(svc.account().groups.contains_key(gid));
}

/// Tokens another user made for a service user stop working when its role is raised (they
/// would carry the new role to their maker); its own tokens stay.
#[tokio::test]
async fn raising_a_role_revokes_tokens_others_made() {
    let (app, svc) = app();
    let bot = ok(
        &app,
        Method::POST,
        "/api/users",
        Some(json!({"name": "bot", "role": "user", "is_service_user": true})),
    )
    .await;
    let id = bot["id"].as_str().unwrap();
    let t = ok(
        &app,
        Method::POST,
        &format!("/api/users/{id}/tokens"),
        Some(json!({"name": "by-owner", "expires_in": 1})),
    )
    .await;
    let as_bot = Api {
        router: app.router.clone(),
        token: t["plain_token"].as_str().unwrap().into(),
    };
    // The bot's own token, made with the token the owner gave it.
    let own = ok(
        &as_bot,
        Method::POST,
        &format!("/api/users/{id}/tokens"),
        Some(json!({"name": "own", "expires_in": 1})),
    )
    .await;
    let bot_own = Api {
        router: app.router.clone(),
        token: own["plain_token"].as_str().unwrap().into(),
    };
    ok(
        &app,
        Method::PUT,
        &format!("/api/users/{id}"),
        Some(json!({"role": "admin"})),
    )
    .await;
    let (s, _) = call(&as_bot, Method::GET, "/api/groups", None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the owner-made token is revoked"
    );
    let (s, _) = call(&bot_own, Method::GET, "/api/groups", None).await;
    assert_eq!(s, StatusCode::OK, "the bot's own token stays");
    assert_eq!(svc.tokens(id).unwrap().len(), 1);
}

/// Concurrent changes: every one applied, every one's activity recorded once and in order
/// of its id (the log's writes are grouped into shared commits under load), and the member
/// index the views read stays that of the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_each_applied_and_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Arc::new(Service::open(&dir.path().join(DB_FILE)).unwrap());
    let app = Api::new(svc.clone());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    ok(
                        &app,
                        Method::POST,
                        "/api/groups",
                        Some(json!({"name": format!("g{w}-{i}")})),
                    )
                    .await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let groups = ok(&app, Method::GET, "/api/groups", None).await;
    assert_eq!(groups.as_array().unwrap().len(), 81, "80 groups and All");
    let events = ok(
        &app,
        Method::GET,
        "/api/events/audit?activity_code=group.add",
        None,
    )
    .await;
    let mut ids: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 80, "one event per group: {events}");
    ids.dedup();
    assert_eq!(ids.len(), 80, "distinct ids");
    let mut names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["meta"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 80, "each group's event once");
    // The index the views use (advanced by every change) against a scan of the account.
    let (a, m) = svc.account_with_members();
    let scan = swiftgate_management::model::Members::Scan(a.clone());
    for g in a.groups.keys() {
        assert_eq!(m.peer_ids(g), scan.peer_ids(g), "{g}");
    }
}
