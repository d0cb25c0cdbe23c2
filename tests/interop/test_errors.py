"""Error replies defined by the WAMP spec."""

import pytest
from autobahn.wamp.exception import ApplicationError

from autobahn.wamp.types import PublishOptions

from helpers import SERIALIZERS, Sessions, run
from test_protocol import HELLO, WELCOME, RawClient
from raw import raw_call, raw_publish, raw_register, raw_subscribe, raw_unregister, raw_unsubscribe

INVALID_URIS = ["a b", "A#b", "com.example.with space"]
ERROR, PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, CALL, REGISTER = 8, 16, 17, 32, 33, 48, 64


async def expect_error(coro, uri):
    with pytest.raises(ApplicationError) as info:
        await coro
    assert info.value.error == uri, f"expected {uri}, got {info.value.error}: {info.value!r}"
    return info.value


def test_call_unknown_procedure(serializer):
    async def body():
        async with Sessions() as ss:
            caller = await ss.open(serializer)
            await expect_error(caller.call("com.example.does.not.exist", 1), "wamp.error.no_such_procedure")
            # The session stays usable after an error.
            await expect_error(caller.call("com.example.also.missing"), "wamp.error.no_such_procedure")

    run(body())


def test_register_twice_from_another_session(serializer):
    async def body():
        async with Sessions() as ss:
            first = await ss.open(serializer)
            second = await ss.open(serializer)
            await first.register(lambda: 1, "com.example.unique")
            await expect_error(
                second.register(lambda: 2, "com.example.unique"),
                "wamp.error.procedure_already_exists",
            )
            # The first registration is untouched.
            assert await second.call("com.example.unique") == 1

    run(body())


def test_register_twice_from_same_session(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            await s.register(lambda: 1, "com.example.unique2")
            await expect_error(
                s.register(lambda: 2, "com.example.unique2"),
                "wamp.error.procedure_already_exists",
            )

    run(body())


@pytest.mark.parametrize("uri", INVALID_URIS)
def test_subscribe_invalid_uri(serializer, uri):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            await expect_error(raw_subscribe(s, uri), "wamp.error.invalid_uri")

    run(body())


@pytest.mark.parametrize("uri", INVALID_URIS)
def test_register_invalid_uri(serializer, uri):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            await expect_error(raw_register(s, uri), "wamp.error.invalid_uri")

    run(body())


def test_publish_and_call_invalid_uri(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            await expect_error(raw_publish(s, "a b", 1), "wamp.error.invalid_uri")
            await expect_error(raw_call(s, "A#b"), "wamp.error.invalid_uri")

    run(body())


def test_unsubscribe_twice(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            sub = await s.subscribe(lambda *a: None, "com.example.twice")
            sub_id = sub.id
            await sub.unsubscribe()
            # autobahn refuses to unsubscribe an inactive subscription on the
            # client side, so send a raw UNSUBSCRIBE for the stale id.
            await expect_error(raw_unsubscribe(s, sub_id), "wamp.error.no_such_subscription")

    run(body())


def test_unregister_twice(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            reg = await s.register(lambda: None, "com.example.twice")
            reg_id = reg.id
            await reg.unregister()
            await expect_error(raw_unregister(s, reg_id), "wamp.error.no_such_registration")

    run(body())


def test_uris_deeper_than_the_bound_are_invalid_and_the_router_survives():
    """A wildcard pattern and a topic of 300,000 components once overflowed
    a worker's stack (the trie walk recurses per component) and killed the
    router. URIs are now bounded (``limits.max_uri_components``, 256)."""

    async def body():
        client = await RawClient("wamp.2.json").connect()
        try:
            client.send(HELLO)
            assert (await client.recv())[0] == WELCOME
            deep = 300_000
            cases = [
                [SUBSCRIBE, 1, {"match": "wildcard"}, "a" + "." * deep],
                [SUBSCRIBE, 2, {}, ".".join(["a"] * 257)],
                [PUBLISH, 3, {"acknowledge": True}, ".".join(["a"] * (deep + 1))],
                [REGISTER, 4, {"match": "wildcard"}, "a" + "." * 256],
                [CALL, 5, {}, ".".join(["a"] * 257)],
            ]
            for msg in cases:
                client.send(msg)
                reply = await client.recv()
                assert reply[:3] == [ERROR, msg[0], msg[1]] and reply[4] == "wamp.error.invalid_uri", reply[:5]
            # 256 components are fine.
            client.send([SUBSCRIBE, 6, {"match": "wildcard"}, "a" + "." * 255])
            assert (await client.recv())[:2] == [SUBSCRIBED, 6]
            client.send([PUBLISH, 7, {"acknowledge": True}, ".".join(["a"] * 256)])
            assert (await client.recv())[:2] == [PUBLISHED, 7]
        finally:
            client.close()
        # The router still serves.
        async with Sessions() as ss:
            s = await ss.open(SERIALIZERS["json"])
            await s.publish("com.example.alive", options=PublishOptions(acknowledge=True))

    run(body())
