"""Every operation of swiftgate-management's OpenAPI document exercised by Schemathesis (an
API fuzzer nobody on this project wrote), against a running server.

Run by management/tests/openapi.rs with NB_HOST (http://127.0.0.1:PORT), NB_PAT (the admin
token) and ST_SEED. The script
  1. reads the document from the server (`/api/openapi.json`),
  2. makes one object of each kind, and a second one for the DELETE operations, so that the
     operations on `/api/<kind>/{id}` meet objects that exist (every `{id}` here takes a name
     too),
  3. runs `schemathesis run` over every operation with its checks: no 5xx, every status and
     content type documented, every answer valid against its schema, requests outside the
     schema refused, authentication not ignored, unsupported methods refused.
`positive_data_acceptance` is left out: the document cannot say that a named group must
exist, that names are unique or that the built-in All group cannot change, so schema-valid
requests are rightly refused with a documented 400/404/409.

Prints Schemathesis's report; exit status is Schemathesis's (non-zero on any failure).
"""

import base64
import os
import subprocess
import sys
import tempfile

import httpx

HOST = os.environ["NB_HOST"]
PAT = os.environ["NB_PAT"]
SEED = os.environ.get("ST_SEED", "1")
EXAMPLES = os.environ.get("ST_EXAMPLES", "25")

api = httpx.Client(
    base_url=HOST, headers={"Authorization": f"Token {PAT}"}, timeout=10.0
)


def made(method, path, body=None):
    r = api.request(method, path, json=body)
    if r.status_code != 200:
        sys.exit(f"seeding {method} {path} failed: {r.status_code} {r.text}")
    return r.json()


def wg_key(n):
    return base64.b64encode(bytes([n]) * 32).decode()


# The document must be what the server serves.
doc = made("GET", "/api/openapi.json")
assert doc["openapi"].startswith("3."), doc["openapi"]

# Objects for the operations on one object; `*-del` ones for the DELETE operations.
for suffix in ("", "-del"):
    made("POST", "/api/groups", {"name": f"st-group{suffix}"})
    made("POST", "/api/networks", {"name": f"st-net{suffix}"})
    made("POST", "/api/policies", {
        "name": f"st-pol{suffix}", "sources": ["st-group"], "destinations": ["st-group"],
        "protocol": "tcp", "ports": ["443"], "action": "accept",
    })
    made("POST", "/api/posture-checks", {
        "name": f"st-check{suffix}", "checks": {"nb_version_check": {"min_version": "0.30.0"}},
    })
    made("POST", "/api/dns/nameservers", {
        "name": f"st-ns{suffix}", "nameservers": [{"ip": "192.0.2.53", "ns_type": "udp", "port": 53}],
        "groups": ["st-group"], "primary": True,
    })
key = made("POST", "/api/setup-keys", {"name": "st-key", "type": "reusable", "expires_in": 86400})
made("POST", "/api/setup-keys", {"name": "st-key-del", "type": "reusable", "expires_in": 86400})
made("POST", "/api/peers", {"setup_key": key["key"], "wg_pubkey": wg_key(1), "name": "st-peer"})
made("POST", "/api/peers", {"setup_key": key["key"], "wg_pubkey": wg_key(2), "name": "st-peer-del"})
ids = {}
for suffix in ("", "-del"):
    made("POST", "/api/networks/st-net/resources", {
        "name": f"st-res{suffix}", "address": "192.0.2.10" if not suffix else "192.0.2.11",
        "groups": ["st-group"],
    })
    ids["router" + suffix] = made("POST", f"/api/networks/st-net{suffix}/routers", {
        "peer": "st-peer", "metric": 100,
    })["id"]
    ids["route" + suffix] = made("POST", "/api/routes", {
        "network_id": f"st-route{suffix}", "network": f"198.51.100.{0 if not suffix else 128}/25",
        "peer": "st-peer", "groups": ["st-group"], "metric": 100,
    })["id"]
    user = made("POST", "/api/users", {
        "name": f"st-user{suffix}", "role": "user", "is_service_user": True,
    })
    ids["user" + suffix] = user["id"]
    ids["token" + suffix] = made("POST", f"/api/users/{user['id']}/tokens", {
        "name": "st-token", "expires_in": 30,
    })["personal_access_token"]["id"]
account = made("GET", "/api/accounts")[0]["id"]


def operation(path_regex, method_regex, params):
    inner = ", ".join(f'"{k}" = "{v}"' for k, v in params.items())
    return (
        "[[operations]]\n"
        f'include-path-regex = "{path_regex}"\n'
        f'include-method-regex = "{method_regex}"\n'
        f"parameters = {{ {inner} }}\n"
    )


config = []
for suffix, methods in (("", "^(GET|PUT|POST)$"), ("-del", "^DELETE$")):
    config += [
        operation("^/api/peers/", methods, {"id": f"st-peer{suffix}"}),
        operation("^/api/groups/", methods, {"id": f"st-group{suffix}"}),
        operation("^/api/networks/\\\\{id\\\\}$", methods, {"id": f"st-net{suffix}"}),
        operation("^/api/networks/\\\\{id\\\\}/resources", methods,
                  {"id": "st-net", "rid": f"st-res{suffix}"}),
        operation("^/api/networks/\\\\{id\\\\}/routers", methods,
                  {"id": f"st-net{suffix}", "rid": ids["router" + suffix]}),
        operation("^/api/policies/", methods, {"id": f"st-pol{suffix}"}),
        operation("^/api/setup-keys/", methods, {"id": f"st-key{suffix}"}),
        operation("^/api/posture-checks/", methods, {"id": f"st-check{suffix}"}),
        operation("^/api/routes/", methods, {"id": ids["route" + suffix]}),
        operation("^/api/dns/nameservers/", methods, {"id": f"st-ns{suffix}"}),
        operation("^/api/users/\\\\{id\\\\}", methods,
                  {"id": ids["user" + suffix], "tid": ids["token" + suffix]}),
    ]
config.append(operation("^/api/accounts/", ".*", {"id": account}))

with tempfile.TemporaryDirectory() as tmp:
    cfg = os.path.join(tmp, "schemathesis.toml")
    with open(cfg, "w") as f:
        f.write("\n".join(config))
    st = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    run = subprocess.run(
        [
            st, "--config-file", cfg, "run", f"{HOST}/api/openapi.json",
            "--header", f"Authorization: Token {PAT}",
            "--checks", "all",
            "--exclude-checks", "positive_data_acceptance",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", EXAMPLES,
            "--seed", SEED,
            "--workers", "1",
            "--request-timeout", "10",
            "--no-color",
            "--warnings", "off",
        ],
        cwd=tmp,
        timeout=600,
    )
sys.exit(run.returncode)
