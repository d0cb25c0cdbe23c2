"""Authentication and authorization (issue 10) with autobahn-python's own
authenticators: ticket, WAMP-CRA with a plain and a salted secret,
cryptosign (Ed25519, PyNaCl), against tests/interop/fennec.toml's
`authrealm`; failures get ABORT with the spec's URIs; a role allows what
it lists, and forces disclosure where it says so.

The router counts failed authentications per address (10 a minute, then
refuses): the failing tests here stay well under it."""

import asyncio

import pytest
from autobahn.wamp import auth
from autobahn.wamp.cryptosign import CryptosignKey
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions

from helpers import STEP_TIMEOUT, JoinFailed, Sessions, TestSession, run

REALM = "authrealm"
SIGN_KEY = CryptosignKey.from_bytes(b"\x07" * 32)


def authenticated(authmethods, authid=None, secret=None, key=None):
    """A session class that joins with these methods and answers the challenge."""

    class AuthSession(TestSession):
        def onConnect(self):
            extra = {"pubkey": key.public_key()} if key else None
            self.join(self.config.realm, authmethods=authmethods, authid=authid, authextra=extra)

        def onChallenge(self, challenge):
            if challenge.method == "ticket":
                return secret
            if challenge.method == "wampcra":
                signing_key = secret
                if "salt" in challenge.extra:
                    e = challenge.extra
                    signing_key = auth.derive_key(secret, e["salt"], e["iterations"], e["keylen"])
                return auth.compute_wcs(signing_key, challenge.extra["challenge"])
            if challenge.method == "cryptosign":
                return key.sign_challenge(challenge)
            raise Exception(f"unexpected challenge {challenge.method}")

    return AuthSession


async def join(ss, serializer, cls):
    return await ss.open(serializer, realm=REALM, session_cls=cls)


@pytest.mark.parametrize(
    "authmethods,authid,secret,key",
    [
        (["ticket"], "ticketuser", "ticket-secret", None),
        (["wampcra"], "crauser", "cra-secret", None),
        (["wampcra"], "saltuser", "cra-salty", None),
        (["cryptosign"], None, None, SIGN_KEY),
        (["anonymous", "ticket"], "ticketuser", "ticket-secret", None),
    ],
    ids=["ticket", "wampcra", "wampcra-salted", "cryptosign", "first-offered-method"],
)
def test_each_method_authenticates(serializer, authmethods, authid, secret, key):
    async def body():
        async with Sessions() as ss:
            s = await join(ss, serializer, authenticated(authmethods, authid, secret, key))
            d = await s.joined
            method = "ticket" if authmethods[0] == "anonymous" else authmethods[0]
            assert (d.authmethod, d.authrole, d.authprovider) == (method, "user", "static")
            assert d.authid == (authid or "signuser")

    run(body())


@pytest.mark.parametrize(
    "cls,reason",
    [
        (authenticated(["ticket"], "ticketuser", "wrong"), "wamp.error.authentication_failed"),
        (authenticated(["wampcra"], "nobody", "cra-secret"), "wamp.error.authentication_failed"),
        (authenticated(["anonymous"]), "wamp.error.no_auth_method"),
    ],
    ids=["wrong-ticket", "unknown-authid", "anonymous-not-offered"],
)
def test_failures_abort_with_the_spec_uri(cls, reason):
    from autobahn.wamp.serializer import JsonSerializer

    async def body():
        async with Sessions() as ss:
            with pytest.raises(JoinFailed) as e:
                await join(ss, JsonSerializer, cls)
            assert e.value.reason == reason

    run(body())


def test_a_restricted_role_may_only_subscribe_under_public():
    from autobahn.wamp.serializer import JsonSerializer

    async def body():
        async with Sessions() as ss:
            r = await join(ss, JsonSerializer, authenticated(["ticket"], "reader", "reader-secret"))
            assert (await r.joined).authrole == "restricted"
            await asyncio.wait_for(r.subscribe(lambda *a: None, "public.news"), STEP_TIMEOUT)
            denied = [
                r.subscribe(lambda *a: None, "private.news"),
                r.publish("public.news", 1, options=PublishOptions(acknowledge=True)),
                r.call("com.example.add", 1, 2),
                r.register(lambda: None, "com.example.add"),
            ]
            for op in denied:
                with pytest.raises(ApplicationError) as e:
                    await asyncio.wait_for(op, STEP_TIMEOUT)
                assert e.value.error == "wamp.error.not_authorized"
            # The session goes on.
            await asyncio.wait_for(r.subscribe(lambda *a: None, "public.more"), STEP_TIMEOUT)

    run(body())


def test_the_role_discloses_its_publishers():
    from autobahn.wamp.serializer import JsonSerializer

    async def body():
        async with Sessions() as ss:
            sub = await join(ss, JsonSerializer, authenticated(["ticket"], "reader", "reader-secret"))
            pub = await join(ss, JsonSerializer, authenticated(["wampcra"], "crauser", "cra-secret"))
            got = asyncio.get_running_loop().create_future()

            def on_event(*args, details=None):
                if not got.done():
                    got.set_result(details)

            from autobahn.wamp.types import SubscribeOptions

            await sub.subscribe(on_event, "public.news", options=SubscribeOptions(details_arg="details"))
            await pub.publish("public.news", "hi", options=PublishOptions(acknowledge=True))
            details = await asyncio.wait_for(got, STEP_TIMEOUT)
            assert (details.publisher_authid, details.publisher_authrole) == ("crauser", "user")

    run(body())
