"""Reducers (issue 14), with autobahn-python: a registration made with
`reducer: true` folds the publications to the topics it matches into each
topic's retained value. The reducer gets the event's arguments and, in the
INVOCATION details, `topic` and `retained` (the value so far, or null);
its YIELD is the new value. The suite's router runs two workers: the
publishers, the callee and the keys' owners are spread over them.

autobahn has no place for `reducer` in RegisterOptions and hands a callee
only the details it knows, so the test adds the option to the REGISTER it
sends and reads `retained` from the INVOCATION as it came (`RawDetails`)."""

import asyncio
import os
import time

from autobahn.wamp import message
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions

from helpers import STEP_TIMEOUT, ApplicationError, Inbox, Sessions, retained_value, run
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer

RUN = f"r{int(time.time() * 1000) % 10**9}"
# Publications of the concurrency test (the figure by default).
COUNT = int(os.environ.get("FENNEC_REDUCER_COUNT", "100000"))


async def register_reducer(session, handler, uri, **options):
    """REGISTER `uri` with `reducer: true` (and any other options) added."""
    send = session._transport.send

    def with_reducer(msg):
        if isinstance(msg, message.Register):
            raw = msg.marshal()
            raw[2].update({"reducer": True, **options})
            obj = session._transport._serializer._serializer
            msg._serialized[obj] = obj.serialize(raw)
        return send(msg)

    session._transport.send = with_reducer
    try:
        match = options.get("match")
        opts = RegisterOptions(details_arg="details", match=match, invoke=options.get("invoke"))
        return await asyncio.wait_for(session.register(handler, uri, options=opts), STEP_TIMEOUT)
    finally:
        session._transport.send = send


class RawDetails:
    """The details of each INVOCATION as the router sent them, by topic (a
    key has one invocation in flight at a time, so the topic names it)."""

    def __init__(self, session):
        self.by_topic = {}
        obj = session._transport._serializer._serializer
        unserialize = obj.unserialize

        def keep(payload):
            msgs = unserialize(payload)
            for m in msgs:
                if m and m[0] == 68 and isinstance(m[3], dict) and "topic" in m[3]:
                    self.by_topic[m[3]["topic"]] = m[3]
            return msgs

        obj.unserialize = keep

    def retained(self, topic):
        return self.by_topic[topic]["retained"]


def test_a_reducer_counts_concurrent_publications_exactly():
    """COUNT acknowledged publications from four sessions (two per worker,
    up to 200 in flight each) to one key: the value is COUNT, and the
    reducer saw every count from 0 to COUNT - 1 once, in order."""
    topic = f"{RUN}.reduce.count"
    per, window = COUNT // 4, 200

    async def body():
        async with Sessions() as ss:
            reducer = await ss.open(MsgPackSerializer)
            raw = RawDetails(reducer)
            seen = []

            def count(*args, details=None):
                before = raw.retained(topic) or 0
                seen.append(before)
                return before + 1

            await register_reducer(reducer, count, topic)
            publishers = [await ss.open(MsgPackSerializer if i % 2 else JsonSerializer) for i in range(4)]

            async def publish_all(p, base):
                sem = asyncio.Semaphore(window)

                async def one(i):
                    async with sem:
                        await p.publish(topic, base + i, options=PublishOptions(acknowledge=True))

                await asyncio.gather(*(one(i) for i in range(per)))

            started = time.monotonic()
            await asyncio.gather(*(publish_all(p, k * per) for k, p in enumerate(publishers)))
            took = time.monotonic() - started
            # Every PUBLISHED came after its reduction.
            assert len(seen) == 4 * per
            assert seen == list(range(4 * per)), "a sequential fold: each count seen once, in order"
            assert await retained_value(publishers[0], topic) == 4 * per
            print(f"{4 * per} reductions in {took:.1f} s ({4 * per / took:.0f}/s)")

    run(body(), timeout=max(120, COUNT / 500))


def test_a_pattern_reducer_keeps_a_value_per_topic_and_is_still_callable():
    base = f"{RUN}.reduce.sum"

    async def body():
        async with Sessions() as ss:
            reducer = await ss.open(JsonSerializer)
            raw = RawDetails(reducer)

            def total(amount, details=None):
                if details.procedure not in raw.by_topic:
                    return amount  # a plain CALL: no retained value in its details
                return (raw.retained(details.procedure) or 0) + amount

            await register_reducer(reducer, total, base, match="prefix")
            pub = await ss.open(MsgPackSerializer)
            watcher = await ss.open(JsonSerializer)
            live = Inbox()
            await watcher.subscribe(live.handler(), f"{base}.a", options=SubscribeOptions(details=True))
            for key, amount in [("a", 5), ("b", 1), ("a", 7), ("b", 2), ("a", -2)]:
                await pub.publish(f"{base}.{key}", amount, options=PublishOptions(acknowledge=True))
            assert await retained_value(pub, f"{base}.a") == 10
            assert await retained_value(pub, f"{base}.b") == 3
            # The subscriber of a key sees each new value, not the raw events.
            events = await live.wait_for_count(3)
            assert [args[0] for (_, args, _, _) in events] == [5, 12, 10]
            # A plain call still reaches the procedure.
            assert await pub.call(f"{base}.x", 1) == 1

    run(body())


def test_a_failing_reducer_leaves_the_value_and_a_retained_publish_resets_it():
    topic = f"{RUN}.reduce.guarded"

    async def body():
        async with Sessions() as ss:
            reducer = await ss.open(JsonSerializer)
            raw = RawDetails(reducer)

            def guarded(amount, details=None):
                if amount < 0:
                    raise ApplicationError("app.error.negative")
                return (raw.retained(topic) or 0) + amount

            await register_reducer(reducer, guarded, topic)
            pub = await ss.open(MsgPackSerializer)
            ack = PublishOptions(acknowledge=True)
            await pub.publish(topic, 4, options=ack)
            await pub.publish(topic, -1, options=ack)
            assert await retained_value(pub, topic) == 4
            await pub.publish(topic, 100, options=PublishOptions(acknowledge=True, retain=True))
            await pub.publish(topic, 1, options=ack)
            assert await retained_value(pub, topic) == 101

    run(body())
