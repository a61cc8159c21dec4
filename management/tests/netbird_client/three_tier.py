"""The seeds' three-tier example (web -> app -> db in one Network, users -> web, monitoring and
DNS) driven through NetBird's REST API by the PyPI `netbird` client; run by
management/tests/netbird_client.rs with NB_HOST and NB_PAT. Prints the ids and the routers'
setup key as JSON; the Rust side registers peers and checks their network maps.
"""

import json
import os

from netbird import APIClient
from netbird.models import GroupCreate, NetworkCreate, PolicyCreate, PolicyRule, SetupKeyCreate

c = APIClient(host=os.environ["NB_HOST"], api_token=os.environ["NB_PAT"], timeout=20.0)
g = {}
for name in ["peer-devops-prod", "peer-support", "svc-monitoring", "routers",
             "svc-orders-web-prod", "svc-orders-app-prod", "svc-orders-db-prod", "svc-dns-prod"]:
    g[name] = c.groups.create(GroupCreate(name=name))["id"]

default = [p for p in c.policies.list() if p["name"] == "Default"]
for p in default:
    c.policies.delete(p["id"])

net = c.networks.create(NetworkCreate(name="orders-prod", description="three tiers"))
res = {}
for name, ip, group in [("web", "192.0.2.20/32", "svc-orders-web-prod"),
                        ("app", "192.0.2.21/32", "svc-orders-app-prod"),
                        ("db", "192.0.2.22/32", "svc-orders-db-prod"),
                        ("dns", "192.0.2.53/32", "svc-dns-prod")]:
    res[name] = c.networks.create_resource(net["id"], {
        "name": name, "address": ip, "enabled": True, "groups": [g[group]]})
c.networks.create_router(net["id"], {"peer_groups": [g["routers"]], "metric": 100,
                                     "masquerade": True, "enabled": True})


def rule(name, protocol, ports, **side):
    return PolicyRule(name=name, enabled=True, action="accept", protocol=protocol,
                      ports=[str(p) for p in ports], bidirectional=False, **side)


users = [g["peer-devops-prod"], g["peer-support"]]
c.policies.create(PolicyCreate(name="Users to Web", enabled=True, rules=[
    rule("Users to Web", "tcp", [443], sources=users, destinations=[g["svc-orders-web-prod"]])]))
web_to_app = c.policies.create(PolicyCreate(name="Web to App", enabled=True, rules=[
    rule("Web to App", "tcp", [8443], source_resource={"id": res["web"]["id"], "type": "host"},
         destinations=[g["svc-orders-app-prod"]])]))
assert web_to_app["rules"][0]["sourceResource"]["id"] == res["web"]["id"], web_to_app
c.policies.create(PolicyCreate(name="App to DB", enabled=True, rules=[
    rule("App to DB", "tcp", [5432], source_resource={"id": res["app"]["id"], "type": "host"},
         destinations=[g["svc-orders-db-prod"]])]))
c.policies.create(PolicyCreate(name="Monitoring", enabled=True, rules=[
    rule("Monitoring", "tcp", [9100, 9200], sources=[g["svc-monitoring"]],
         destinations=[g["svc-orders-web-prod"], g["svc-orders-app-prod"],
                       g["svc-orders-db-prod"]])]))
clients = users + [g["svc-monitoring"]]
dns = c.policies.create(PolicyCreate(name="DNS", enabled=True, rules=[
    rule("DNS udp", "udp", [53], sources=clients, destinations=[g["svc-dns-prod"]]),
    rule("DNS tcp", "tcp", [53], sources=clients, destinations=[g["svc-dns-prod"]])]))
assert len(dns["rules"]) == 2 and dns["rules"][0]["id"] != dns["rules"][1]["id"], dns
assert sorted(p["name"] for p in c.policies.list()) == sorted(
    ["Users to Web", "Web to App", "App to DB", "Monitoring", "DNS"])
keys = {}
for group in ["routers", "peer-devops-prod", "svc-monitoring"]:
    keys[group] = c.setup_keys.create(SetupKeyCreate(
        name=f"{group}-key", type="reusable", expires_in=86400, auto_groups=[g[group]],
        usage_limit=0))["key"]
print(json.dumps({"keys": keys, "network": net["id"]}))
