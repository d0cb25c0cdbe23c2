"""Caller and publisher identification (WAMP Advanced Profile): a caller
asking with CALL ``disclose_me`` (or a callee with REGISTER
``disclose_caller``) makes INVOCATION details carry ``caller``,
``caller_authid`` and ``caller_authrole``; a publisher asking with PUBLISH
``disclose_me`` makes EVENT details carry ``publisher``,
``publisher_authid`` and ``publisher_authrole``; otherwise none of them.

autobahn-python 24 no longer sends ``disclose_me`` or ``disclose_caller``,
so the asking side speaks WAMP by hand (test_protocol's RawClient, JSON)
and autobahn sessions receive. A realm that forces or forbids disclosure is
tested in tests/router.rs, which gives the router a configuration file.
"""

from autobahn.wamp.types import RegisterOptions, SubscribeOptions

from helpers import Inbox, Sessions, run
from test_protocol import HELLO, WELCOME, RawClient

CALL, RESULT, REGISTER, REGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 68, 70
PUBLISH, PUBLISHED = 16, 17


async def raw_session():
    client = await RawClient("wamp.2.json").connect()
    client.send(HELLO)
    welcome = await client.recv()
    assert welcome[0] == WELCOME, welcome
    return client, welcome[1]


def test_welcome_announces_identification(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            assert s._router_roles["broker"].publisher_identification is True
            assert s._router_roles["dealer"].caller_identification is True

    run(body())


def test_caller_is_disclosed_when_it_asks(serializer):
    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            seen = []

            def who(details=None):
                seen.append((details.caller, details.caller_authid, details.caller_authrole))
                return "ok"

            await callee.register(who, "com.example.disclose.who", options=RegisterOptions(details_arg="details"))
            caller, sid = await raw_session()
            try:
                caller.send([CALL, 1, {"disclose_me": True}, "com.example.disclose.who"])
                assert (await caller.recv())[:2] == [RESULT, 1]
                caller.send([CALL, 2, {}, "com.example.disclose.who"])
                assert (await caller.recv())[:2] == [RESULT, 2]
            finally:
                caller.close()
            assert seen == [(sid, f"anonymous-{sid}", "anonymous"), (None, None, None)], seen

    run(body())


def test_callee_asking_for_its_callers_gets_them(serializer):
    async def body():
        async with Sessions() as ss:
            callee, _ = await raw_session()
            try:
                callee.send([REGISTER, 1, {"disclose_caller": True}, "com.example.disclose.callee"])
                assert (await callee.recv())[0] == REGISTERED
                caller = await ss.open(serializer)
                call = caller.call("com.example.disclose.callee")
                inv = await callee.recv()
                assert inv[0] == INVOCATION, inv
                details = inv[3]
                sid = caller._session_id
                assert (details["caller"], details["caller_authid"], details["caller_authrole"]) == (
                    sid,
                    f"anonymous-{sid}",
                    "anonymous",
                ), details
                callee.send([YIELD, inv[1], {}, ["ok"]])
                assert await call == "ok"
            finally:
                callee.close()

    run(body())


def test_publisher_is_disclosed_when_it_asks(serializer):
    async def body():
        async with Sessions() as ss:
            sub = await ss.open(serializer)
            other = await ss.open(serializer)
            inbox = Inbox()
            await sub.subscribe(inbox.handler("a"), "com.example.disclose.topic", options=SubscribeOptions(details=True))
            await other.subscribe(inbox.handler("b"), "com.example.disclose.topic", options=SubscribeOptions(details=True))
            pub, sid = await raw_session()
            try:
                pub.send([PUBLISH, 1, {"acknowledge": True, "disclose_me": True}, "com.example.disclose.topic", [1]])
                assert (await pub.recv())[0] == PUBLISHED
                pub.send([PUBLISH, 2, {"acknowledge": True}, "com.example.disclose.topic", [2]])
                assert (await pub.recv())[0] == PUBLISHED
            finally:
                pub.close()
            events = await inbox.wait_for_count(4)
            got = sorted((tag, args[0], d.publisher, d.publisher_authid, d.publisher_authrole) for tag, args, _, d in events)
            assert got == [
                ("a", 1, sid, f"anonymous-{sid}", "anonymous"),
                ("a", 2, None, None, None),
                ("b", 1, sid, f"anonymous-{sid}", "anonymous"),
                ("b", 2, None, None, None),
            ], got

    run(body())


def test_disclose_options_must_be_booleans():
    async def body():
        client, _ = await raw_session()
        try:
            client.send([CALL, 1, {"disclose_me": "yes"}, "com.example.disclose.who"])
            msg = await client.recv()
            assert msg[0] == 3 and msg[2] == "wamp.error.protocol_violation", msg
        finally:
            client.close()

    run(body())
