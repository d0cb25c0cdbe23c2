"""WAMP over wss:// (issue 10) with autobahn-python: the suite's router has
a TLS WebSocket listener whose certificate a test CA signed
(``FENNEC_WSS``, ``FENNEC_CA``, made by tests/autobahn.rs). A client that
trusts the CA joins and routes over it, beside plain ws:// sessions; one
that trusts only the system's CAs fails its handshake."""

import asyncio
import os
import ssl

import pytest
from autobahn.wamp.types import PublishOptions

from helpers import STEP_TIMEOUT, Inbox, Sessions, run

WSS = os.environ.get("FENNEC_WSS")
pytestmark = pytest.mark.skipif(not WSS, reason="FENNEC_WSS is not set (the router has no TLS listener)")


def trusting_the_test_ca():
    ctx = ssl.create_default_context(cafile=os.environ["FENNEC_CA"])
    return ctx


def test_a_session_over_wss_talks_to_one_over_ws(serializer):
    async def body():
        async with Sessions() as ss:
            secure = await ss.open(serializer, url=WSS, ssl=trusting_the_test_ca())
            plain = await ss.open(serializer)
            inbox = Inbox()
            await asyncio.wait_for(secure.subscribe(inbox.handler(), "com.fennec.tls.topic"), STEP_TIMEOUT)
            await plain.publish("com.fennec.tls.topic", "x" * 100_000, options=PublishOptions(acknowledge=True))
            got = await inbox.wait_for_count(1)
            assert got[0][1] == ("x" * 100_000,)
            await asyncio.wait_for(plain.register(lambda a: a * 2, "com.fennec.tls.double"), STEP_TIMEOUT)
            assert await asyncio.wait_for(secure.call("com.fennec.tls.double", 21), STEP_TIMEOUT) == 42

    run(body())


def test_a_client_that_does_not_trust_the_ca_fails_its_handshake():
    from autobahn.wamp.serializer import JsonSerializer

    async def body():
        async with Sessions() as ss:
            with pytest.raises(ssl.SSLCertVerificationError):
                await ss.open(JsonSerializer, url=WSS, ssl=ssl.create_default_context())

    run(body())
