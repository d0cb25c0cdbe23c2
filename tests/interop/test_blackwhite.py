"""Subscriber black- and whitelisting (WAMP Advanced Profile): PUBLISH
``exclude``, ``eligible`` and their ``_authid`` / ``_authrole`` forms
restrict who receives an event; a subscriber receives it only if it is in
every eligible list given and in no exclude list. autobahn-python sends the
options itself. Subscribers are spread over the router's two workers."""

import asyncio

from autobahn.wamp.types import PublishOptions

from helpers import Inbox, Sessions, run

TOPIC = "com.example.bw.topic"


def test_welcome_announces_blackwhite_listing(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            assert s._router_roles["broker"].subscriber_blackwhite_listing is True

    run(body())


def test_lists_restrict_receivers(serializer):
    async def body():
        async with Sessions() as ss:
            subs = [await ss.open(serializer) for _ in range(4)]
            pub = await ss.open(serializer)
            inbox = Inbox()
            for i, s in enumerate(subs):
                await s.subscribe(inbox.handler(i), TOPIC)
            ids = [s._session_id for s in subs]

            async def received(**options):
                start = len(inbox.items)
                await pub.publish(TOPIC, "x", options=PublishOptions(acknowledge=True, **options))
                # Then one to all: each subscriber gets it after the first (one
                # publisher's events arrive in order), so once all four have it,
                # the first one has reached everyone it will reach.
                await pub.publish(TOPIC, "end", options=PublishOptions(acknowledge=True))
                deadline = asyncio.get_running_loop().time() + 10
                while sum(1 for _, a, _, _ in inbox.items[start:] if a[0] == "end") < len(subs):
                    assert asyncio.get_running_loop().time() < deadline, inbox.items[start:]
                    await asyncio.sleep(0.01)
                return {tag for tag, a, _, _ in inbox.items[start:] if a[0] == "x"}

            assert await received(exclude=[ids[0], ids[2]]) == {1, 3}
            assert await received(eligible=[ids[1], ids[2]]) == {1, 2}
            assert await received(eligible=[ids[1], ids[2]], exclude=[ids[2]]) == {1}
            assert await received(eligible_authrole=["anonymous"], exclude_authid=[f"anonymous-{ids[3]}"]) == {0, 1, 2}
            assert await received(eligible_authid=["nobody"]) == set()
            assert await received(exclude_authrole=["anonymous"]) == set()

    run(body())


def test_lists_of_the_wrong_type_are_a_protocol_violation():
    from test_protocol import HELLO, RawClient, expect_protocol_violation

    async def body():
        client = await RawClient("wamp.2.json").connect()
        try:
            client.send(HELLO)
            await client.recv()
            client.send([16, 1, {"exclude": ["not a session ID"]}, TOPIC, ["x"]])
            await expect_protocol_violation(client)
        finally:
            client.close()

    run(body())
