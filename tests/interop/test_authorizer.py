"""A dynamic authorizer (issue 10) with autobahn-python: a `user` session
registers `com.fennec.authz`; sessions of the role `dyn` are authorized
by it, `(session, uri, action, options)` -> `{allow, cache}`. Its
decisions are cached: a burst of publications asks it once, and reaches
the subscriber complete and in order (messages wait behind the one being
decided, nothing overtakes it)."""

import asyncio
import uuid

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import JsonSerializer
from autobahn.wamp.types import PublishOptions

from helpers import STEP_TIMEOUT, Inbox, Sessions, run
from test_auth import REALM, authenticated

USER = authenticated(["ticket"], "ticketuser", "ticket-secret")
DYN = authenticated(["ticket"], "dynuser", "dyn-secret")


def test_the_authorizer_decides_and_is_asked_once_per_cached_decision():
    async def body():
        async with Sessions() as ss:
            backend = await ss.open(JsonSerializer, realm=REALM, session_cls=USER)
            asked = []
            run_id = uuid.uuid4().hex[:8]

            def authorize(session, uri, action, options):
                asked.append((session["authrole"], uri, action))
                return {"allow": uri.startswith(f"dyn.{run_id}.ok"), "cache": 30}

            try:
                await asyncio.wait_for(backend.register(authorize, "com.fennec.authz"), STEP_TIMEOUT)
            except ApplicationError as e:
                pytest.skip(f"the authorizer is registered by another test run: {e.error}")
            sub = await ss.open(JsonSerializer, realm=REALM, session_cls=USER)
            inbox = Inbox()
            ok = f"dyn.{run_id}.ok.t"
            await sub.subscribe(inbox.handler(), ok)
            d = await ss.open(JsonSerializer, realm=REALM, session_cls=DYN)
            assert (await d.joined).authrole == "dyn"
            with pytest.raises(ApplicationError) as e:
                await asyncio.wait_for(d.subscribe(lambda *a: None, f"dyn.{run_id}.no"), STEP_TIMEOUT)
            assert e.value.error == "wamp.error.not_authorized"
            # A burst: the first publication waits for the decision, the rest
            # queue behind it (then come from the cache).
            acks = [d.publish(ok, i, options=PublishOptions(acknowledge=True)) for i in range(100)]
            await asyncio.wait_for(asyncio.gather(*acks), STEP_TIMEOUT)
            got = await inbox.wait_for_count(100)
            assert [args[0] for _, args, _, _ in got] == list(range(100)), "complete and in order"
            publishes = [a for a in asked if a[2] == "publish"]
            assert publishes == [("dyn", ok, "publish")], f"asked once: {asked}"

    run(body())
