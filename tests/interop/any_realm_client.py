"""Helper script for tests/autobahn.rs (the ``--any-realm`` flag).

Usage: python any_realm_client.py expect-join|expect-abort REALM...

Tries to join each REALM with both serializers and prints one line per try:
``JOINED <realm> <serializer>`` or ``ABORT <realm> <serializer> <reason>``.
Exits 0 if every outcome matched the expectation.  Not collected by pytest.
"""

import asyncio
import sys

from helpers import SERIALIZERS, JoinFailed, close_session, open_session


async def main(expect, realms):
    ok = True
    for realm in realms:
        for name in sorted(SERIALIZERS):
            try:
                session = await open_session(SERIALIZERS[name], realm=realm)
            except JoinFailed as e:
                print(f"ABORT {realm} {name} {e.reason}", flush=True)
                ok = ok and expect == "expect-abort" and e.reason == "wamp.error.no_such_realm"
                continue
            print(f"JOINED {realm} {name}", flush=True)
            assert session.joined.result().realm == realm
            await close_session(session)
            ok = ok and expect == "expect-join"
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("expect-join", "expect-abort"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2:]), 60)))
