"""TURN allocations against a real TURN server (coturn) with aioice's TURN client (an
implementation nobody on this project wrote), using credentials swiftgate-management issued.

Run by management/tests/turn.rs with TURN_SERVER (host:port) and CASES, a JSON list of
{"name", "username", "password", "expect": "allocated" | "refused"}. For each case the script
asks for a UDP allocation; it prints one JSON object: name -> the relayed address or the
error, and exits non-zero if any case went otherwise than expected.
"""

import asyncio
import json
import os
import sys

from aioice import turn
from aioice.stun import TransactionFailed


class Quiet(asyncio.DatagramProtocol):
    pass


async def allocate(server, username, password):
    transport, _ = await asyncio.wait_for(
        turn.create_turn_endpoint(
            Quiet,
            server_addr=server,
            username=username,
            password=password,
            lifetime=60,
            transport="udp",
        ),
        timeout=10,
    )
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


async def main():
    host, port = os.environ["TURN_SERVER"].rsplit(":", 1)
    server = (host, int(port))
    results, ok = {}, True
    for case in json.loads(os.environ["CASES"]):
        try:
            relayed = await allocate(server, case["username"], case["password"])
            results[case["name"]] = {"allocated": list(relayed)}
            ok &= case["expect"] == "allocated"
        except TransactionFailed as e:
            results[case["name"]] = {"refused": str(e)}
            ok &= case["expect"] == "refused"
        except Exception as e:  # noqa: BLE001 - reported, then the case fails
            results[case["name"]] = {"error": repr(e)}
            ok = False
    print(json.dumps(results))
    return 0 if ok else 1


sys.exit(asyncio.run(main()))
