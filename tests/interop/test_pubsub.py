"""Publish & subscribe between sessions using the same serializer."""

import asyncio

from autobahn.wamp.request import Publication
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from helpers import Inbox, Sessions, STEP_TIMEOUT, run

DETAILS = SubscribeOptions(details=True)


def test_publish_args_and_kwargs(serializer):
    async def body():
        async with Sessions() as ss:
            sub = await ss.open(serializer)
            pub = await ss.open(serializer)
            inbox = Inbox()
            await sub.subscribe(inbox.handler(), "com.example.topic1", options=DETAILS)

            args = [1, -2, 3.5, "zwei", None, True, [1, [2, "x"]], {"k": {"n": [1, 2]}}]
            kwargs = {"a": 1, "b": "text ü€", "c": [1, 2, 3], "d": {"e": None}}
            ack = await pub.publish(
                "com.example.topic1", *args, options=PublishOptions(acknowledge=True), **kwargs
            )
            assert isinstance(ack, Publication)
            assert isinstance(ack.id, int) and ack.id > 0

            (_, got_args, got_kwargs, details), = await inbox.wait_for_count(1)
            assert list(got_args) == args
            assert got_kwargs == kwargs
            assert details.publication == ack.id

    run(body())


def test_publish_without_payload(serializer):
    async def body():
        async with Sessions() as ss:
            sub = await ss.open(serializer)
            pub = await ss.open(serializer)
            inbox = Inbox()
            await sub.subscribe(inbox.handler(), "com.example.empty", options=DETAILS)
            await pub.publish("com.example.empty", options=PublishOptions(acknowledge=True))
            (_, got_args, got_kwargs, _), = await inbox.wait_for_count(1)
            assert got_args == ()
            assert got_kwargs == {}

    run(body())


def test_acknowledge_gives_distinct_publication_ids(serializer):
    async def body():
        async with Sessions() as ss:
            pub = await ss.open(serializer)
            ack = PublishOptions(acknowledge=True)
            # No subscriber at all: the router must still acknowledge.
            p1 = await pub.publish("com.example.nobody", 1, options=ack)
            p2 = await pub.publish("com.example.nobody", 2, options=ack)
            assert isinstance(p1, Publication) and isinstance(p2, Publication)
            assert p1.id != p2.id

    run(body())


def test_exclude_me_default_and_false(serializer):
    async def body():
        async with Sessions() as ss:
            pub = await ss.open(serializer)
            other = await ss.open(serializer)
            own_inbox, other_inbox = Inbox(), Inbox()
            await pub.subscribe(own_inbox.handler(), "com.example.self", options=DETAILS)
            await other.subscribe(other_inbox.handler(), "com.example.self", options=DETAILS)

            # Default: exclude_me is true, the publisher does not get its own event.
            await pub.publish("com.example.self", "first", options=PublishOptions(acknowledge=True))
            await other_inbox.wait_for_count(1)

            # exclude_me=False: the publisher gets it.  Events from one publisher
            # arrive in order, so if "first" had been delivered to the publisher
            # it would be seen before "second".
            await pub.publish(
                "com.example.self",
                "second",
                options=PublishOptions(acknowledge=True, exclude_me=False),
            )
            (_, args, _, _), = await own_inbox.wait_for_count(1)
            assert args == ("second",), f"publisher received {own_inbox.items!r}"
            await other_inbox.wait_for_count(2)
            assert [i[1] for i in other_inbox.items] == [("first",), ("second",)]
            await asyncio.sleep(0.1)
            assert len(own_inbox.items) == 1

    run(body())


def test_unsubscribe_stops_delivery(serializer):
    async def body():
        async with Sessions() as ss:
            sub = await ss.open(serializer)
            pub = await ss.open(serializer)
            inbox = Inbox()
            subscription = await sub.subscribe(
                inbox.handler("topic"), "com.example.unsub", options=DETAILS
            )
            await sub.subscribe(inbox.handler("marker"), "com.example.unsub.marker", options=DETAILS)

            ack = PublishOptions(acknowledge=True)
            await pub.publish("com.example.unsub", 1, options=ack)
            await inbox.wait_for_count(1)

            await subscription.unsubscribe()
            assert not subscription.active

            await pub.publish("com.example.unsub", 2, options=ack)
            await pub.publish("com.example.unsub.marker", "done", options=ack)
            # Events from one publisher to one subscriber arrive in publication
            # order, so by the time the marker arrives, event 2 would have too.
            await inbox.wait_for_count(2)
            await asyncio.sleep(0.1)
            assert [(tag, args) for tag, args, _, _ in inbox.items] == [
                ("topic", (1,)),
                ("marker", ("done",)),
            ]

    run(body())


def test_two_subscribers_both_receive(serializer):
    async def body():
        async with Sessions() as ss:
            s1 = await ss.open(serializer)
            s2 = await ss.open(serializer)
            pub = await ss.open(serializer)
            i1, i2 = Inbox(), Inbox()
            await s1.subscribe(i1.handler(), "com.example.fanout", options=DETAILS)
            await s2.subscribe(i2.handler(), "com.example.fanout", options=DETAILS)
            await pub.publish("com.example.fanout", "x", y=1, options=PublishOptions(acknowledge=True))
            for inbox in (i1, i2):
                (_, args, kwargs, _), = await inbox.wait_for_count(1, timeout=STEP_TIMEOUT)
                assert args == ("x",) and kwargs == {"y": 1}

    run(body())
