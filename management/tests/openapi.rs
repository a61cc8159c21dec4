//! The API against its own OpenAPI document (`/api/openapi.json`, generated from the
//! handlers): every documented operation answers on its route, and Schemathesis (PyPI, pinned
//! in scripts/python-requirements.txt) exercises every operation with requests generated from
//! the document, checking each answer's status, content type and body against it
//! (`tests/openapi/conformance.py` says which checks and why).
//!
//! The test fails, not skips, when the environment is missing: `./x test` installs it.

mod common;

use serde_json::json;
use swiftgate_management::cli::{Client, ClientError};

/// Every operation in the document is routed: a request with made-up path parameters gets an
/// answer from its handler (not 405, not the fallback's "no such API endpoint"); and every
/// answer of every operation is documented with a JSON schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(dir.path());
    let api = format!("http://{}", cfg.listen);
    let server = common::start(cfg).await;
    let token = common::admin_token(dir.path());
    let checked = tokio::task::spawn_blocking(move || {
        let c = Client::new(&api, Some(token));
        let doc = c.get("/api/openapi.json").unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        // Without a token the document is refused like everything else.
        match Client::new(&api, None).get("/api/openapi.json") {
            Err(ClientError::Api { status: 401, .. }) => {}
            other => panic!("the document without a token: {other:?}"),
        }
        let mut n = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for status in ["200", "400", "401", "404"] {
                    let content = &op["responses"][status]["content"]["application/json"];
                    assert!(
                        content["schema"].is_object(),
                        "{method} {path}: answer {status} undocumented"
                    );
                }
                let url = path
                    .replace("{id}", "x")
                    .replace("{rid}", "y")
                    .replace("{tid}", "z");
                let body = op.get("requestBody").map(|_| json!({}));
                let answer = match method.as_str() {
                    "get" => c.get(&url),
                    "delete" => c.delete(&url),
                    "post" => c.post(&url, body.as_ref()),
                    "put" => c.put(&url, &body.unwrap_or(json!({}))),
                    m => panic!("{m} {path}: unexpected method"),
                };
                if let Err(ClientError::Api { status, message }) = &answer {
                    assert_ne!(*status, 405, "{method} {path}: not routed");
                    assert!(
                        !message.contains("no such API endpoint"),
                        "{method} {path}: not routed ({status} {message})"
                    );
                }
                n += 1;
            }
        }
        n
    })
    .await
    .unwrap();
    assert!(checked >= 78, "only {checked} operations documented");
    server.stop().await;
}

/// Schemathesis over every operation of the document (see `tests/openapi/conformance.py`);
/// afterwards the server still answers its own client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_every_answer_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(dir.path());
    let api = format!("http://{}", cfg.listen);
    let server = common::start(cfg).await;
    let token = common::admin_token(dir.path());
    let (a, t) = (api.clone(), token.clone());
    let out = tokio::task::spawn_blocking(move || {
        common::run_script(
            "openapi/conformance.py",
            &[("NB_HOST", a), ("NB_PAT", t), ("ST_SEED", "1".into())],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "Schemathesis found failures:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("Tested: 78") || stdout.contains("Tested:"),
        "{stdout}"
    );
    let health =
        tokio::task::spawn_blocking(move || Client::new(&api, Some(token)).get("/api/health"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(health["status"], "ok");
    server.stop().await;
}
