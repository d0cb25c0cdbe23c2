"""The authorizer of the dynamic-authorizer benchmark (perf/authz-bench.toml):
allows everything, decisions cached for an hour. Prints "ready" once
registered. Usage: python perf/authorizer.py ws://127.0.0.1:PORT/ws"""

import asyncio
import sys

from autobahn.asyncio.wamp import ApplicationRunner, ApplicationSession

CALLS = 0


class Authorizer(ApplicationSession):
    def onConnect(self):
        self.join("realm1", authmethods=["ticket"], authid="backend")

    def onChallenge(self, challenge):
        return "backend-secret"

    async def onJoin(self, details):
        def authorize(session, uri, action, options):
            global CALLS
            CALLS += 1
            return {"allow": True, "cache": 3600}

        await self.register(authorize, "com.bench.authz")
        print("ready", flush=True)


if __name__ == "__main__":
    ApplicationRunner(sys.argv[1], "realm1").run(Authorizer)
