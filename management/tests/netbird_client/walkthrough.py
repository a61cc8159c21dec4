"""The Berlin Office walkthrough driven through NetBird's REST API by the PyPI `netbird`
client (an implementation nobody on this project wrote), against swiftgate-management.

Run by management/tests/netbird_client.rs with NB_HOST (http://127.0.0.1:PORT) and NB_PAT (the
first start's admin token). Every step asserts what NetBird's API documents; the script prints
one JSON object with the ids it made, which the Rust side checks through swiftgate's own client.
Exit status non-zero on any failed step (the traceback names it).
"""

import json
import os
import sys
import warnings

from netbird import APIClient
from netbird.exceptions import (
    NetBirdAPIError,
    NetBirdAuthenticationError,
    NetBirdNotFoundError,
    NetBirdValidationError,
)
from netbird.models import (
    GroupCreate,
    RouteCreate,
    GroupUpdate,
    NetworkCreate,
    PolicyCreate,
    PolicyRule,
    PolicyUpdate,
    SetupKeyCreate,
    SetupKeyUpdate,
    TokenCreate,
    UserCreate,
    UserUpdate,
)
from netbird.models.account import AccountSettings
from netbird.models.posture_check import PostureCheckCreate

warnings.simplefilter("ignore", DeprecationWarning)

HOST = os.environ["NB_HOST"]
PAT = os.environ["NB_PAT"]
out = {}


def step(name):
    print(f"[netbird-client] {name}", file=sys.stderr, flush=True)


with APIClient(host=HOST, api_token=PAT, timeout=20.0) as c:
    step("whoami (Token header)")
    me = c.users.get_current()
    assert me["role"] == "owner" and me["is_current"] is True, me
    out["owner_id"] = me["id"]

    step("groups")
    dev = c.groups.create(GroupCreate(name="Development", peers=[]))
    apps = c.groups.create(GroupCreate(name="Internal Apps"))
    routers = c.groups.create(GroupCreate(name="Berlin Routers"))
    for g in (dev, apps, routers):
        assert g["id"] and g["peers_count"] == 0 and g["peers"] == [], g
    renamed = c.groups.update(dev["id"], GroupUpdate(name="Development"))
    assert renamed["id"] == dev["id"]
    names = {g["name"] for g in c.groups.list()}
    assert {"All", "Development", "Internal Apps", "Berlin Routers"} <= names, names
    out["groups"] = {"dev": dev["id"], "apps": apps["id"], "routers": routers["id"]}

    step("setup keys: create (expires_in seconds), masked in lists, revoke by PUT")
    key = c.setup_keys.create(
        SetupKeyCreate(
            name="berlin-routers",
            type="reusable",
            expires_in=86400,
            auto_groups=[routers["id"]],
            usage_limit=0,
            ephemeral=False,
        )
    )
    assert len(key["key"]) == 36 and key["valid"] is True and key["state"] == "valid", key
    one = c.setup_keys.create(SetupKeyCreate(name="laptop-once", type="one-off", expires_in=3600))
    listed = {k["id"]: k for k in c.setup_keys.list()}
    assert listed[key["id"]]["key"] == key["key"][:5] + "****", listed[key["id"]]
    revoked = c.setup_keys.update(one["id"], SetupKeyUpdate(revoked=True, auto_groups=[]))
    assert revoked["revoked"] is True and revoked["state"] == "revoked", revoked
    try:
        c.setup_keys.update(one["id"], SetupKeyUpdate(revoked=False, auto_groups=[]))
        raise AssertionError("un-revoking was accepted")
    except NetBirdValidationError:
        pass
    out["setup_key"] = key["key"]
    out["setup_key_id"] = key["id"]
    out["revoked_key_id"] = one["id"]

    step("posture check with NetBird's names")
    pc = c.posture_checks.create(
        PostureCheckCreate(
            name="min-netbird",
            description="agents from 0.30 on",
            checks={
                "nb_version_check": {"min_version": "0.30.0"},
                "os_version_check": {"linux": {"min_kernel_version": "5.10.0"}},
            },
        )
    )
    assert pc["checks"]["nb_version_check"]["min_version"] == "0.30.0", pc
    assert pc["checks"]["os_version_check"]["linux"]["min_kernel_version"] == "5.10.0", pc
    out["posture_check"] = pc["id"]

    step("network, resources, router; all routers")
    net = c.networks.create(NetworkCreate(name="Berlin Office", description="office LAN"))
    wiki = c.networks.create_resource(
        net["id"],
        {"name": "wiki", "description": "", "address": "192.0.2.10/32", "enabled": True,
         "groups": [apps["id"]]},
    )
    assert wiki["type"] == "host" and wiki["groups"][0]["id"] == apps["id"], wiki
    lan = c.networks.create_resource(
        net["id"],
        {"name": "berlin-lan", "description": "", "address": "198.51.100.0/24", "enabled": True,
         "groups": [apps["id"]]},
    )
    assert lan["type"] == "subnet", lan
    router = c.networks.create_router(
        net["id"], {"peer_groups": [routers["id"]], "metric": 100, "masquerade": True, "enabled": True}
    )
    assert router["metric"] == 100 and router["masquerade"] is True, router
    assert any(r["id"] == router["id"] for r in c.networks.list_all_routers())
    got = c.networks.get(net["id"])
    assert set(got["resources"]) == {wiki["id"], lan["id"]} and got["routers"] == [router["id"]], got
    out["network"] = net["id"]
    out["resources"] = [wiki["id"], lan["id"]]

    step("policy: group objects in answers, stable rule ids across an update")
    rule = PolicyRule(
        name="dev to apps https", description="", enabled=True, action="accept", protocol="tcp",
        ports=["443"], sources=[dev["id"]], destinations=[apps["id"]], bidirectional=False,
    )
    pol = c.policies.create(
        PolicyCreate(name="dev-to-apps", description="", enabled=True,
                     source_posture_checks=[pc["id"]], rules=[rule])
    )
    r0 = pol["rules"][0]
    assert r0["sources"][0]["id"] == dev["id"] and r0["sources"][0]["name"] == "Development", r0
    assert r0["destinations"][0]["name"] == "Internal Apps" and r0["ports"] == ["443"], r0
    rule2 = PolicyRule(
        id=r0["id"], name="dev to apps https", description="", enabled=True, action="accept",
        protocol="tcp", ports=["443", "8443"], sources=[dev["id"]], destinations=[apps["id"]],
        bidirectional=False,
    )
    pol2 = c.policies.update(
        pol["id"], PolicyUpdate(name="dev-to-apps", description="", enabled=True,
                                source_posture_checks=[pc["id"]], rules=[rule2])
    )
    assert pol2["rules"][0]["id"] == r0["id"], (r0, pol2)
    assert pol2["rules"][0]["ports"] == ["443", "8443"], pol2
    # A single destination resource (the client sends `destination_resource`).
    pol3 = c.policies.create(
        PolicyCreate(name="dev-to-wiki", enabled=True, rules=[PolicyRule(
            name="wiki", enabled=True, action="accept", protocol="tcp", ports=["80"],
            sources=[dev["id"]], destination_resource={"id": wiki["id"], "type": "host"})])
    )
    assert pol3["rules"][0]["destinationResource"]["id"] == wiki["id"], pol3
    out["policy"] = pol["id"]
    out["rule"] = r0["id"]
    out["policy_wiki"] = pol3["id"]

    step("network routes: a LAN and an exit node")
    lan_route = c.routes.create(RouteCreate(
        description="Berlin LAN", network_id="berlin-lan", network="198.51.100.0/24",
        network_type="ipv4", peer_groups=[routers["id"]], groups=[dev["id"]], enabled=True,
        metric=100, masquerade=True, keep_route=False, access_control_groups=[]))
    assert lan_route["network_type"] == "IPv4" and lan_route["peer"] == "", lan_route
    exit_node = c.routes.create(RouteCreate(
        description="exit", network_id="exit", network="0.0.0.0/0", network_type="ipv4",
        peer_groups=[routers["id"]], groups=[dev["id"]], enabled=True, metric=9999,
        masquerade=True, keep_route=False))
    upd = c.routes.update(lan_route["id"], RouteCreate(
        description="Berlin LAN", network_id="berlin-lan", network="198.51.100.0/24",
        network_type="ipv4", peer_groups=[routers["id"]], groups=[dev["id"]], enabled=True,
        metric=50, masquerade=True, keep_route=False, access_control_groups=[apps["id"]]))
    assert upd["metric"] == 50 and upd["access_control_groups"] == [apps["id"]], upd
    assert {r["id"] for r in c.routes.list()} == {lan_route["id"], exit_node["id"]}
    out["routes"] = [lan_route["id"], exit_node["id"]]

    step("DNS: a name server group and the settings")
    ns = c.dns.create_nameserver_group({
        "name": "office-dns", "description": "office resolver",
        "nameservers": [{"ip": "192.0.2.53", "ns_type": "udp", "port": 53}],
        "enabled": True, "groups": [dev["id"]], "primary": False,
        "domains": ["berlin.internal"], "search_domains_enabled": True})
    assert ns["nameservers"][0]["ip"] == "192.0.2.53" and ns["domains"] == ["berlin.internal"], ns
    try:
        c.dns.create_nameserver_group({
            "name": "bad", "description": "", "nameservers": [], "enabled": True,
            "groups": [dev["id"]], "primary": True, "domains": [],
            "search_domains_enabled": False})
        raise AssertionError("a group without servers was accepted")
    except NetBirdValidationError:
        pass
    settings = c.dns.update_settings({"disabled_management_groups": [routers["id"]]})
    assert settings["disabled_management_groups"] == [routers["id"]], settings
    assert c.dns.get_settings()["disabled_management_groups"] == [routers["id"]]
    out["nameserver_group"] = ns["id"]

    step("refusals are NetBird's error classes")
    try:
        c.groups.create(GroupCreate(name="Development"))
        raise AssertionError("duplicate group accepted")
    except NetBirdValidationError as e:
        assert e.status_code == 409, e.status_code
    try:
        c.groups.get("no-such-group")
        raise AssertionError("unknown group found")
    except NetBirdNotFoundError:
        pass

    step("users and tokens: a service user, its token works, then is deleted")
    bot = c.users.create(UserCreate(email="automation@example.com", name="automation",
                                    role="admin", auto_groups=[], is_service_user=True))
    assert bot["role"] == "admin" and bot["is_service_user"] is True, bot
    tok = c.tokens.create(bot["id"], TokenCreate(name="ci", expires_in=30))
    plain = tok["plain_token"]
    assert plain.startswith("nbp_") and len(plain) == 40, tok
    tid = tok["personal_access_token"]["id"]
    assert [t["id"] for t in c.tokens.list(bot["id"])] == [tid]
    with APIClient(host=HOST, api_token=plain, timeout=20.0, auth_scheme="Bearer") as bc:
        assert bc.users.get_current()["id"] == bot["id"]
        # The client's role enum knows admin, user and owner only.
        demoted = c.users.update(bot["id"], UserUpdate(role="user"))
        assert demoted["role"] == "user", demoted
        try:
            bc.groups.create(GroupCreate(name="Sneaky"))
            raise AssertionError("a plain user created a group")
        except NetBirdAPIError as e:
            assert e.status_code == 403, e.status_code
        c.tokens.delete(bot["id"], tid)
        try:
            bc.groups.list()
            raise AssertionError("a deleted token still works")
        except NetBirdAuthenticationError:
            pass
    out["service_user"] = bot["id"]

    step("account settings")
    acct = c.accounts.list()[0]
    upd = c.accounts.update(acct["id"], AccountSettings(dns_domain="berlin.internal"))
    assert upd["settings"]["dns_domain"] == "berlin.internal", upd
    try:
        c.accounts.update(acct["id"], AccountSettings(peer_login_expiration_enabled=True))
        raise AssertionError("an unsupported setting was accepted")
    except NetBirdValidationError:
        pass

    step("activity log")
    events = c.events.get_audit_events()
    codes = [e["activity_code"] for e in events]
    for want in ["group.add", "setupkey.add", "setupkey.revoke", "posture.check.create",
                 "network.create", "network.resource.create", "network.router.create",
                 "policy.add", "policy.update", "service.user.create",
                 "personal.access.token.create", "personal.access.token.delete",
                 "user.role.update", "account.settings.update", "route.add", "route.update",
                 "nameserver.group.add"]:
        assert want in codes, (want, codes)
    assert all(e["initiator_id"] for e in events), events
    out["events"] = len(events)

print(json.dumps(out))
