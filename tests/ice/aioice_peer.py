"""The far side of ICE connectivity checks for tests/ice_interop.rs: aioice, an ICE
implementation swiftgate did not write.

Protocol on stdin/stdout, one JSON object per line:
  out: {"ufrag", "pwd", "candidates": [sdp lines]}          our credentials and candidates
  in:  {"ufrag", "pwd", "candidates": [sdp lines]}          the Rust side's
  -> checks and nomination (aioice's role from --controlling), then one datagram
     b"hello from aioice" on the selected pair, and waits for b"hello from swiftgate"
  out: {"connected": true, "selected": [local, remote], "received": str}
  or   {"connected": false, "error": str}
Every wait is bounded; the process exits by itself.
"""

import argparse
import asyncio
import json
import sys

import aioice


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--controlling", action="store_true")
    args = ap.parse_args()

    conn = aioice.Connection(ice_controlling=args.controlling, components=1, use_ipv6=False)
    await conn.gather_candidates()
    print(
        json.dumps(
            {
                "ufrag": conn.local_username,
                "pwd": conn.local_password,
                "candidates": ["candidate:" + c.to_sdp() for c in conn.local_candidates],
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 20)
    remote = json.loads(line)
    conn.remote_username = remote["ufrag"]
    conn.remote_password = remote["pwd"]
    for c in remote["candidates"]:
        sdp = c[len("candidate:"):] if c.startswith("candidate:") else c
        await conn.add_remote_candidate(aioice.Candidate.from_sdp(sdp))
    await conn.add_remote_candidate(None)
    try:
        await asyncio.wait_for(conn.connect(), 20)
        await conn.send(b"hello from aioice")
        received = b""
        while received != b"hello from swiftgate":
            received = await asyncio.wait_for(conn.recv(), 10)
        pair = conn._nominated.get(1)
        selected = [
            "%s:%d" % pair.local_addr if pair else None,
            "%s:%d" % pair.remote_addr if pair else None,
        ]
        # Stay up a little: the Rust side sends consent checks, which aioice answers.
        await asyncio.sleep(1)
        print(
            json.dumps({"connected": True, "selected": selected, "received": received.decode()}),
            flush=True,
        )
        return 0
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        print(json.dumps({"connected": False, "error": repr(e)}), flush=True)
        return 1
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
