"""Helper script for tests/autobahn.rs (router shutdown on SIGTERM).

Joins realm1 with one JSON and one MessagePack session, prints ``JOINED`` and
then waits for the router to end the sessions.  For each session it prints
``GOODBYE <serializer> <reason>`` (or ``LOST <serializer>`` if the transport
went away without a GOODBYE).  Exits 0 only if every session got GOODBYE with
reason ``wamp.close.system_shutdown``.  Not collected by pytest.
"""

import asyncio
import sys

from helpers import SERIALIZERS, JoinFailed, open_session

WAIT_FOR_SHUTDOWN = 30.0
EXPECTED = "wamp.close.system_shutdown"


async def main():
    sessions = {}
    for name in sorted(SERIALIZERS):
        sessions[name] = await open_session(SERIALIZERS[name])
    print("JOINED", flush=True)

    ok = True
    for name, session in sessions.items():
        try:
            details = await asyncio.wait_for(asyncio.shield(session.left), WAIT_FOR_SHUTDOWN)
        except JoinFailed:
            print(f"LOST {name}", flush=True)
            ok = False
            continue
        except asyncio.TimeoutError:
            print(f"TIMEOUT {name}", flush=True)
            ok = False
            continue
        goodbye = session.goodbye_received
        if goodbye is None:
            # autobahn reports a dropped transport as onLeave(transport_lost).
            print(f"LOST {name} {details.reason}", flush=True)
            ok = False
            continue
        print(f"GOODBYE {name} {goodbye.reason}", flush=True)
        ok = ok and goodbye.reason == EXPECTED
    for session in sessions.values():
        try:
            await asyncio.wait_for(asyncio.shield(session.disconnected), 5)
        except asyncio.TimeoutError:
            print(f"NOT-DISCONNECTED {session}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
