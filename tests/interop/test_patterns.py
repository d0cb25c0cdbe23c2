"""Pattern-based subscriptions (match=prefix / match=wildcard)."""

import asyncio

from autobahn.wamp.types import PublishOptions, SubscribeOptions

from helpers import Inbox, Sessions, run

ACK = PublishOptions(acknowledge=True)


def test_prefix_subscription(serializer):
    async def body():
        async with Sessions() as ss:
            sub = await ss.open(serializer)
            pub = await ss.open(serializer)
            inbox = Inbox()
            await sub.subscribe(
                inbox.handler(), "com.a", options=SubscribeOptions(match="prefix", details=True)
            )
            await pub.publish("com.a.b", 1, k="v", options=ACK)
            await pub.publish("com.other", 2, options=ACK)  # no match
            await pub.publish("com.a", 3, options=ACK)  # the prefix itself matches
            await pub.publish("com.a.b.c.d", 4, options=ACK)
            items = await inbox.wait_for_count(3)
            await asyncio.sleep(0.1)
            assert [args for _, args, _, _ in inbox.items] == [(1,), (3,), (4,)]
            _, _, kwargs, details = items[0]
            assert kwargs == {"k": "v"}
            # For pattern-based subscriptions the EVENT must carry the concrete topic.
            assert [d.topic for _, _, _, d in items] == ["com.a.b", "com.a", "com.a.b.c.d"]

    run(body())


def test_wildcard_subscription(serializer):
    async def body():
        async with Sessions() as ss:
            sub = await ss.open(serializer)
            pub = await ss.open(serializer)
            inbox = Inbox()
            await sub.subscribe(
                inbox.handler(), "com..c", options=SubscribeOptions(match="wildcard", details=True)
            )
            await pub.publish("com.x.c", 1, options=ACK)
            await pub.publish("com.x.d", 2, options=ACK)  # last component differs
            await pub.publish("com.x.y.c", 3, options=ACK)  # wrong number of components
            await pub.publish("org.x.c", 4, options=ACK)
            await pub.publish("com.yy.c", 5, options=ACK)
            items = await inbox.wait_for_count(2)
            await asyncio.sleep(0.1)
            assert [args for _, args, _, _ in inbox.items] == [(1,), (5,)]
            assert [d.topic for _, _, _, d in items] == ["com.x.c", "com.yy.c"]

    run(body())


def test_exact_and_pattern_subscriptions_coexist(serializer):
    async def body():
        async with Sessions() as ss:
            sub = await ss.open(serializer)
            pub = await ss.open(serializer)
            inbox = Inbox()
            exact = await sub.subscribe(inbox.handler("exact"), "com.p.q", options=SubscribeOptions(details=True))
            prefix = await sub.subscribe(
                inbox.handler("prefix"), "com.p", options=SubscribeOptions(match="prefix", details=True)
            )
            assert exact.id != prefix.id
            await pub.publish("com.p.q", "hello", options=ACK)
            await inbox.wait_for_count(2)
            await asyncio.sleep(0.1)
            assert sorted(tag for tag, _, _, _ in inbox.items) == ["exact", "prefix"]

    run(body())
