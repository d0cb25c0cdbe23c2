"""Many events from one publisher arrive complete and in order."""

from autobahn.wamp.types import PublishOptions

from helpers import Inbox, Sessions, run

N = 2000


def test_many_events_in_order(serializer):
    async def body():
        async with Sessions() as ss:
            sub = await ss.open(serializer)
            pub = await ss.open(serializer)
            inbox = Inbox()
            await sub.subscribe(inbox.handler(), "com.example.seq")
            # Fire-and-forget publishes (no acknowledge) queue up back to back.
            for i in range(N - 1):
                pub.publish("com.example.seq", i, payload="x" * (i % 50))
            await pub.publish("com.example.seq", N - 1, payload="", options=PublishOptions(acknowledge=True))
            await inbox.wait_for_count(N, timeout=30)
            received = [args[0] for _, args, _, _ in inbox.items]
            assert len(received) == N
            assert received == list(range(N)), first_mismatch(received)

    run(body())


def test_many_events_to_two_subscribers_interleaved_publishers(serializer):
    async def body():
        async with Sessions() as ss:
            s1 = await ss.open(serializer)
            s2 = await ss.open(serializer)
            p1 = await ss.open(serializer)
            p2 = await ss.open(serializer)
            i1, i2 = Inbox(), Inbox()
            await s1.subscribe(i1.handler(), "com.example.seq2")
            await s2.subscribe(i2.handler(), "com.example.seq2")
            n = 500
            for i in range(n):
                p1.publish("com.example.seq2", "p1", i)
                p2.publish("com.example.seq2", "p2", i)
            for inbox in (i1, i2):
                await inbox.wait_for_count(2 * n, timeout=30)
                for who in ("p1", "p2"):
                    seq = [args[1] for _, args, _, _ in inbox.items if args[0] == who]
                    assert seq == list(range(n)), f"{who}: " + first_mismatch(seq)

    run(body())


def first_mismatch(seq):
    for i, v in enumerate(seq):
        if v != i:
            return f"first mismatch at index {i}: got {v}, {len(seq)} received"
    return f"{len(seq)} received"
