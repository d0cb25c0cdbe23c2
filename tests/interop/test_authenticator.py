"""A dynamic authenticator (issue 10) with autobahn-python: a `user`
session registers `com.fennec.authn`; ticket principals the configuration
does not list are vouched for by it, `(realm, authid, {ticket,
authmethod})` -> `{role, authid}`; its error is an ABORT. (MQTT user
names it does not list: test_mqtt_auth.py.)"""

import asyncio

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import JsonSerializer

from helpers import STEP_TIMEOUT, JoinFailed, Sessions, run
from test_auth import REALM, authenticated

USER = authenticated(["ticket"], "ticketuser", "ticket-secret")


def test_the_authenticator_vouches_for_unlisted_principals():
    async def body():
        async with Sessions() as ss:
            backend = await ss.open(JsonSerializer, realm=REALM, session_cls=USER)
            asked = []

            def authenticate(realm, authid, details):
                asked.append((realm, authid, details["authmethod"]))
                if details.get("ticket") != "let-me-in":
                    raise ApplicationError("com.fennec.denied", "wrong ticket")
                return {"role": "user", "authid": f"dyn-{authid}"}

            await asyncio.wait_for(backend.register(authenticate, "com.fennec.authn"), STEP_TIMEOUT)
            s = await ss.open(JsonSerializer, realm=REALM, session_cls=authenticated(["ticket"], "dev1", "let-me-in"))
            d = await s.joined
            assert (d.authid, d.authrole, d.authprovider) == ("dyn-dev1", "user", "dynamic")
            with pytest.raises(JoinFailed) as e:
                await ss.open(JsonSerializer, realm=REALM, session_cls=authenticated(["ticket"], "dev2", "nope"))
            assert e.value.reason == "wamp.error.authentication_failed"
            assert asked == [("authrealm", "dev1", "ticket"), ("authrealm", "dev2", "ticket")]
            # A listed principal is checked by the router, not the authenticator.
            await ss.open(JsonSerializer, realm=REALM, session_cls=USER)
            assert len(asked) == 2

    run(body())
