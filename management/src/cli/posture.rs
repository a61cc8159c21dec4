//! `peers posture`: a peer's posture report (`GET /api/peers/{id}/posture`) as text.

use serde_json::Value;

use super::table::{cell, render};

/// The report as a headline and one row per check: posture check, check, pass/FAIL, reason,
/// policies requiring it.
pub fn posture_text(v: &Value) -> String {
    let name = cell(v.get("peer_name"));
    let mut versions = vec![format!("client version {}", cell(v.get("client_version")))];
    if let Some(ui) = v["ui_version"].as_str().filter(|s| !s.is_empty()) {
        versions.push(format!("agent {ui}"));
    }
    let checks = v["checks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if checks.is_empty() {
        return format!(
            "{name}: no posture check applies (no enabled policy with it as a source requires \
             one) ({})\n",
            versions.join(", ")
        );
    }
    let verdict = if v["passed"].as_bool() == Some(true) {
        "passes every posture check"
    } else {
        "FAILS a posture check: it does not count as a source of the policies named"
    };
    let mut rows = Vec::new();
    for c in checks {
        let results = c["results"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        for r in results {
            rows.push(vec![
                cell(c.get("name")),
                cell(r.get("check")),
                if r["passed"].as_bool() == Some(true) {
                    "pass".into()
                } else {
                    "FAIL".into()
                },
                cell(r.get("reason")),
                cell(c.get("policies")),
            ]);
        }
    }
    format!(
        "{name}: {verdict} ({})\n{}",
        versions.join(", "),
        render(
            &["POSTURE CHECK", "CHECK", "RESULT", "REASON", "POLICIES"],
            &rows
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_reasons_per_check() {
        let v = json!({
            "peer_id": "peer-1", "peer_name": "alice", "client_version": "0.1.0",
            "ui_version": "swiftgate/0.1.0", "passed": false,
            "checks": [{
                "id": "pc-1", "name": "min-client", "policies": ["dev-to-apps"], "passed": false,
                "results": [{ "check": "client_version", "passed": false,
                              "reason": "client version 0.1.0 below minimum 0.45.0" }]
            }]
        });
        assert_eq!(
            posture_text(&v),
            "alice: FAILS a posture check: it does not count as a source of the policies named \
             (client version 0.1.0, agent swiftgate/0.1.0)\n\
             POSTURE CHECK  CHECK           RESULT  REASON                                     \
             POLICIES\n\
             min-client     client_version  FAIL    client version 0.1.0 below minimum 0.45.0  \
             dev-to-apps\n"
        );
        let none = json!({ "peer_name": "bob", "client_version": "0.77.1", "ui_version": "",
                           "passed": true, "checks": [] });
        assert!(posture_text(&none).starts_with("bob: no posture check applies"));
    }
}
