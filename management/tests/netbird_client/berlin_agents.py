"""The Berlin Office walkthrough through the PyPI `netbird` client, in two phases around the
enrolment of real agents (tests/netbird_tools.rs runs both, in the routing peer's namespace).

  phase "keys":   groups and setup keys; prints {"dev_key", "router_key"}
  phase "access": (ROUTER_ID set) the Network, its resource and router, the policy;
                  prints {"policy"}
"""

import json
import os
import sys

from netbird import APIClient
from netbird.models import GroupCreate, NetworkCreate, PolicyCreate, PolicyRule, SetupKeyCreate

c = APIClient(host=os.environ["NB_HOST"], api_token=os.environ["NB_PAT"], timeout=20.0)
phase = sys.argv[1]
groups = {g["name"]: g["id"] for g in c.groups.list()}

if phase == "keys":
    for name in ["Development", "routers", "Internal Apps"]:
        groups[name] = c.groups.create(GroupCreate(name=name))["id"]
    dev = c.setup_keys.create(SetupKeyCreate(
        name="dev-laptops", type="reusable", expires_in=86400,
        auto_groups=[groups["Development"]], usage_limit=0))
    router = c.setup_keys.create(SetupKeyCreate(
        name="office-routers", type="one-off", expires_in=86400,
        auto_groups=[groups["routers"]], usage_limit=1))
    print(json.dumps({"dev_key": dev["key"], "router_key": router["key"]}))
elif phase == "access":
    net = c.networks.create(NetworkCreate(name="Berlin Office"))
    c.networks.create_resource(net["id"], {
        "name": "Internal Wiki", "address": "192.0.2.10/32", "enabled": True,
        "groups": [groups["Internal Apps"]]})
    c.networks.create_router(net["id"], {
        "peer": os.environ["ROUTER_ID"], "metric": 100, "masquerade": True, "enabled": True})
    pol = c.policies.create(PolicyCreate(name="dev-to-apps", enabled=True, rules=[PolicyRule(
        name="dev-to-apps", enabled=True, action="accept", protocol="tcp", ports=["443"],
        sources=[groups["Development"]], destinations=[groups["Internal Apps"]])]))
    print(json.dumps({"policy": pol["id"]}))
else:
    raise SystemExit(f"unknown phase {phase!r}")
