"""Event history (issue 9): topics covered by a `[[realm.history]]` rule
(tests/interop/fennec.toml: prefix `com.fennec.hist.`, 5 events per topic)
and events published with fox-wamp's `trace: true` are kept by their
topic's owner; `wamp.subscription.get_events(subscription, limit)` returns
a subscription's newest events, oldest first. MQTT publications to a
history topic are kept at QoS 1 and 2. The router runs two workers."""

import asyncio
import time

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from helpers import Inbox, Sessions, run
from test_keys import publish as raw_options_publish
from test_keys import raw_subscribe

RUN = f"r{int(time.time() * 1000) % 10**9}"


def test_welcome_announces_event_history(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            assert s._router_roles["broker"].event_history

    run(body())


async def history_of(session, topic, limit=None, match=None):
    sub = await session.subscribe(lambda *a, **k: None, topic, options=SubscribeOptions(match=match))
    args = [sub.id] if limit is None else [sub.id, limit]
    return sub, await session.call("wamp.subscription.get_events", *args)


def test_a_history_rule_keeps_the_newest_events(serializer):
    async def body():
        async with Sessions() as ss:
            pub = await ss.open(serializer)
            reader = await ss.open(serializer)
            topic = f"com.fennec.hist.{RUN}.{serializer.SERIALIZER_ID}.a"
            ids = []
            for i in range(8):
                p = await pub.publish(topic, i, k=i, options=PublishOptions(acknowledge=True))
                ids.append(p.id)
            await asyncio.sleep(0.2)
            sub, events = await history_of(reader, topic)
            # The rule keeps 5; get_events defaults to 10: the last 5, oldest first.
            assert [e["args"] for e in events] == [[i] for i in range(3, 8)]
            assert [e["publication"] for e in events] == ids[3:]
            assert all(e["subscription"] == sub.id and e["topic"] == topic for e in events)
            assert events[0]["kwargs"] == {"k": 3} and "T" in events[0]["timestamp"]
            _, two = await history_of(reader, topic, 2)
            assert [e["args"] for e in two] == [[6], [7]]

    run(body())


def test_trace_and_patterns(serializer):
    async def body():
        async with Sessions() as ss:
            pub = await ss.open(serializer)
            reader = await ss.open(serializer)
            plain = f"com.fennec.trace.{RUN}.{serializer.SERIALIZER_ID}"
            await pub.publish(plain, "not kept", options=PublishOptions(acknowledge=True))
            for i in range(3):
                await raw_traced(pub, plain, i)
            await asyncio.sleep(0.2)
            _, events = await history_of(reader, plain)
            assert [e["args"] for e in events] == [[0], [1], [2]]
            # A pattern subscription gathers its topics' events, by time.
            base = f"com.fennec.hist.{RUN}.{serializer.SERIALIZER_ID}.p"
            for t in ("x", "y", "x"):
                await pub.publish(f"{base}.{t}", t, options=PublishOptions(acknowledge=True))
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            _, events = await history_of(reader, base, match="prefix")
            assert [e["topic"] for e in events] == [f"{base}.x", f"{base}.y", f"{base}.x"]
            # Errors.
            with pytest.raises(ApplicationError) as e:
                await reader.call("wamp.subscription.get_events", 12345)
            assert e.value.error == "wamp.error.no_such_subscription"
            sub, _ = await history_of(reader, plain)
            with pytest.raises(ApplicationError) as e:
                await reader.call("wamp.subscription.get_events", sub.id, "ten")
            assert e.value.error == "wamp.error.invalid_argument"

    run(body())


async def raw_traced(session, topic, value):
    """An acknowledged, not retained PUBLISH with `trace: true`."""
    # test_keys' helper adds raw options to a retained PUBLISH; undo retain.
    return await raw_options_publish(session, topic, value, trace=True, retain=False)


def test_subscribe_after_replays_then_goes_live(serializer):
    async def body():
        async with Sessions() as ss:
            pub = await ss.open(serializer)
            topic = f"com.fennec.hist.{RUN}.{serializer.SERIALIZER_ID}.after"
            ids = []
            for i in range(4):
                p = await pub.publish(topic, i, options=PublishOptions(acknowledge=True))
                ids.append(p.id)
            await asyncio.sleep(0.2)
            got = Inbox()
            sub = await ss.open(serializer)
            await raw_subscribe(sub, topic, got, {"after": ids[1]})
            # Live events published at once follow the replay, none twice.
            for i in range(4, 7):
                await pub.publish(topic, i, options=PublishOptions(acknowledge=True))
            items = await got.wait_for_count(5)
            await asyncio.sleep(0.3)
            assert [i[1] for i in got.items] == [(2,), (3,), (4,), (5,), (6,)], got.items
            assert len(items) == 5
            # An ID the history does not have (older than what is kept): all of it.
            everything = Inbox()
            other = await ss.open(serializer)
            await raw_subscribe(other, topic, everything, {"after": 1})
            kept = await everything.wait_for_count(5)
            assert [i[1] for i in kept] == [(2,), (3,), (4,), (5,), (6,)]
            with pytest.raises(ApplicationError) as e:
                await raw_subscribe(other, f"{topic}.x", Inbox(), {"after": "not an id"})
            assert e.value.error == "wamp.error.invalid_argument"

    run(body())
