"""fox-wamp's key options on retained publishes (issue 9), with
autobahn-python: `when` (a conditional write), `watch` (a failed condition
waits: a lock), `will` (the key is tied to the publisher's session),
`retain: N` (expiry), `sequence` (a new key below the topic), and the
subscribe aliases `retained` / `retainedState`. The suite's router runs two
workers: publishers, the key's owner and subscribers are spread over them."""

import asyncio
import time

import pytest
from autobahn.wamp import message
from autobahn.wamp.exception import SerializationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from helpers import STEP_TIMEOUT, Inbox, Sessions, run
from test_protocol import HELLO, WELCOME, RawClient

ERROR, PUBLISH, PUBLISHED = 8, 16, 17
NOT_ACCEPTED = SerializationError
# Keys live on in the router's store: each run uses its own.
RUN = f"r{int(time.time() * 1000) % 10**9}"


async def publish(session, topic, *args, **extra):
    """A retained, acknowledged PUBLISH through autobahn, with fox-wamp's
    options added to its options dict (autobahn's PublishOptions has no
    place for them): the result is autobahn's Publication, or its
    ApplicationError."""
    send = session._transport.send

    def with_options(msg):
        if isinstance(msg, message.Publish):
            # A message caches its bytes per serializer: put ours there.
            raw = msg.marshal()
            raw[2].update(extra)
            obj = session._transport._serializer._serializer
            msg._serialized[obj] = obj.serialize(raw)
        return send(msg)

    session._transport.send = with_options
    try:
        fut = session.publish(topic, *args, options=PublishOptions(acknowledge=True, retain=True))
    finally:
        session._transport.send = send
    return await asyncio.wait_for(fut, STEP_TIMEOUT)


async def raw_session():
    c = await RawClient("wamp.2.json").connect()
    c.send(HELLO)
    assert (await c.recv())[0] == WELCOME
    return c


def test_when_null_creates_once_and_a_failed_condition_is_not_accepted(serializer):
    async def body():
        async with Sessions() as ss:
            a = await ss.open(serializer)
            b = await ss.open(serializer)
            key = f"com.fennec.keys.{RUN}.create.{serializer.SERIALIZER_ID}"
            await publish(a, key, "first", when=None)
            # autobahn turns wamp.error.invalid_payload into its SerializationError.
            with pytest.raises(NOT_ACCEPTED, match="not accepted"):
                await publish(b, key, "second", when=None)
            # An object condition: fields listed must match.
            obj = f"{key}.obj"
            await publish(a, obj, {"state": "free", "n": 1})
            await publish(b, obj, {"state": "busy"}, when={"state": "free"})
            with pytest.raises(NOT_ACCEPTED):
                await publish(a, obj, {"state": "busy"}, when={"state": "free"})
            # {} = the key must exist; a shape mismatch is a failed condition.
            await publish(a, obj, {"state": "x"}, when={})
            with pytest.raises(NOT_ACCEPTED):
                await publish(a, f"{key}.absent", 1, when={})
            with pytest.raises(NOT_ACCEPTED):
                await publish(a, key, 1, when={"field": 1})  # the value is a string
            # The stored value is the accepted one.
            got = Inbox()
            await b.subscribe(got.handler(), obj, options=SubscribeOptions(get_retained=True))
            (_, args, _, _), = await got.wait_for_count(1)
            assert args == ({"state": "x"},)

    run(body())


def test_a_refused_write_reaches_nobody_and_is_answered_without_acknowledge():
    async def body():
        async with Sessions() as ss:
            from helpers import SERIALIZERS

            sub = await ss.open(SERIALIZERS["json"])
            key = f"com.fennec.keys.{RUN}.noack"
            events = Inbox()
            await sub.subscribe(events.handler(), key)
            owner = await ss.open(SERIALIZERS["json"])
            await publish(owner, key, "v1", when=None)
            await events.wait_for_count(1)
            c = await raw_session()
            try:
                # Without acknowledge: still ERROR (fox-wamp's answer), and no EVENT.
                c.send([PUBLISH, 5, {"retain": True, "when": None}, key, ["v2"]])
                reply = await c.recv()
                assert reply[:5] == [ERROR, PUBLISH, 5, {}, "wamp.error.invalid_payload"], reply
                assert reply[5] == ["not accepted"]
                await asyncio.sleep(0.3)
                assert len(events.items) == 1, events.items
            finally:
                c.close()

    run(body())


def test_watch_is_a_lock_with_three_contenders(serializer):
    async def body():
        async with Sessions() as ss:
            key = f"com.fennec.keys.{RUN}.lock.{serializer.SERIALIZER_ID}"
            holders = [await ss.open(serializer) for _ in range(3)]
            lock = dict(when=None, will=None, watch=True)
            await publish(holders[0], key, "A", **lock)
            # B asks first, then C (they are on different workers: the owner
            # orders them by arrival, so C waits until B's request is in).
            waits = []
            for h, name in zip(holders[1:], "BC"):
                waits.append(asyncio.ensure_future(publish(h, key, name, **lock)))
                await asyncio.sleep(0.2)
            assert not any(w.done() for w in waits), "nobody else gets the lock while A holds it"
            # A's connection drops: its will (null) frees the key; B, first in line, wins.
            holders[0].tcp_transport.abort()
            await asyncio.wait_for(asyncio.shield(waits[0]), STEP_TIMEOUT)
            await asyncio.sleep(0.3)
            assert not waits[1].done(), "one winner per change"
            # B says GOODBYE: its will applies too, and C wins.
            holders[1].leave()
            await asyncio.wait_for(asyncio.shield(waits[1]), STEP_TIMEOUT)
            watcher = await ss.open(serializer)
            got = Inbox()
            await watcher.subscribe(got.handler(), key, options=SubscribeOptions(get_retained=True))
            (_, args, _, _), = await got.wait_for_count(1)
            assert args == ("C",)

    run(body())


def test_a_will_applies_when_the_connection_is_lost(serializer):
    async def body():
        async with Sessions() as ss:
            key = f"com.fennec.keys.{RUN}.will.{serializer.SERIALIZER_ID}"
            sub = await ss.open(serializer)
            pub = await ss.open(serializer)
            events = Inbox()
            await sub.subscribe(events.handler(), key)
            await publish(pub, key, "online", will="offline")
            await events.wait_for_count(1)
            pub.tcp_transport.abort()
            items = await events.wait_for_count(2)
            assert items[1][1] == ("offline",)
            late = Inbox()
            other = await ss.open(serializer)
            await other.subscribe(late.handler(), key, options=SubscribeOptions(get_retained=True))
            (_, args, _, details), = await late.wait_for_count(1)
            assert args == ("offline",)
            # A later retained publish without `will` unties the key.
            tied = f"{key}.untied"
            p2 = await ss.open(serializer)
            await publish(p2, tied, "x", will=None)
            await publish(other, tied, "y")
            p2.tcp_transport.abort()
            await asyncio.sleep(0.3)
            again = Inbox()
            await other.subscribe(again.handler(), tied, options=SubscribeOptions(get_retained=True))
            (_, args, _, _), = await again.wait_for_count(1)
            assert args == ("y",)

    run(body())


def test_retain_for_seconds_sequence_keys_and_the_subscribe_aliases(serializer):
    async def body():
        async with Sessions() as ss:
            pub = await ss.open(serializer)
            sub = await ss.open(serializer)
            base = f"com.fennec.keys.{RUN}.misc.{serializer.SERIALIZER_ID}"
            # retain: 1 -> gone for new subscribers after a second.
            await publish(pub, f"{base}.ttl", "brief", retain=1)
            got = Inbox()
            await sub.subscribe(got.handler(), f"{base}.ttl", options=SubscribeOptions(get_retained=True))
            await got.wait_for_count(1)
            await asyncio.sleep(1.3)
            later = Inbox()
            s2 = await ss.open(serializer)
            await s2.subscribe(later.handler(), f"{base}.ttl", options=SubscribeOptions(get_retained=True))
            await asyncio.sleep(0.3)
            assert later.items == []
            # sequence: each value under a new key below the topic.
            seen = Inbox()
            await sub.subscribe(seen.handler(), f"{base}.log", options=SubscribeOptions(match="prefix", details_arg="details"))
            p1 = await publish(pub, f"{base}.log", "one", sequence=True)
            p2 = await publish(pub, f"{base}.log", "two", sequence=True)
            items = await seen.wait_for_count(2)
            topics = [i[2]["details"].topic if "details" in i[2] else i[3].topic for i in items]
            assert topics == [f"{base}.log.{p1.id}", f"{base}.log.{p2.id}"], topics
            # fox-wamp's subscribe names for get_retained.
            for alias in ("retained", "retainedState"):
                c = await raw_session()
                try:
                    c.send([32, 1, {alias: True, "match": "prefix"}, f"{base}.log"])
                    assert (await c.recv())[0] == 33
                    replay = [await c.recv(), await c.recv()]
                    assert sorted(e[4][0] for e in replay) == ["one", "two"], replay
                    assert all(e[3].get("retained") for e in replay)
                finally:
                    c.close()

    run(body())


def test_subscribe_filter(serializer):
    async def body():
        async with Sessions() as ss:
            base = f"com.fennec.keys.{RUN}.filter.{serializer.SERIALIZER_ID}"
            pub = await ss.open(serializer)
            await publish(pub, f"{base}.door", {"state": "open", "floor": 1})
            await publish(pub, f"{base}.window", {"state": "closed", "floor": 1})
            hot, all_ = Inbox(), Inbox()
            a = await ss.open(serializer)
            b = await ss.open(serializer)
            c = await ss.open(serializer)
            only_open = {"filter": {"state": "open"}, "match": "prefix", "get_retained": True}
            subs = []
            for s, inbox in ((a, hot), (b, hot)):
                subs.append(await raw_subscribe(s, base, inbox, only_open))
            subs.append(await raw_subscribe(c, base, all_, {"match": "prefix"}))
            # One subscription for one filter, another without.
            assert subs[0] == subs[1] != subs[2]
            # The replay is filtered too: each of the two gets the open door.
            items = await hot.wait_for_count(2)
            assert [i[1] for i in items] == [({"state": "open", "floor": 1},)] * 2
            await publish(pub, f"{base}.door", {"state": "closed"})
            await publish(pub, f"{base}.hatch", {"state": "open", "floor": 3})
            await publish(pub, f"{base}.hatch", "open")  # another shape: not met, no crash
            await all_.wait_for_count(3)
            items = await hot.wait_for_count(4)
            await asyncio.sleep(0.3)
            assert len(hot.items) == 4, hot.items
            assert [i[1] for i in items[2:]] == [({"state": "open", "floor": 3},)] * 2

    run(body())


async def raw_subscribe(session, topic, inbox, options):
    """SUBSCRIBE with raw options (autobahn's SubscribeOptions has no
    `filter`); returns the subscription ID."""
    send = session._transport.send

    def with_options(msg):
        if isinstance(msg, message.Subscribe):
            raw = msg.marshal()
            raw[2] = dict(options)
            obj = session._transport._serializer._serializer
            msg._serialized[obj] = obj.serialize(raw)
        return send(msg)

    session._transport.send = with_options
    try:
        fut = session.subscribe(inbox.handler(), topic)
    finally:
        session._transport.send = send
    sub = await asyncio.wait_for(fut, STEP_TIMEOUT)
    return sub.id
