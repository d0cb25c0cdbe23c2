"""Progressive call results (WAMP Advanced Profile, dealer): CALL with
receive_progress, INVOCATION details receive_progress, YIELD progress ->
RESULT progress, in order, then the final result; progressive YIELDs for a
caller that did not ask are dropped. Caller and callee are separate
sessions, so with the router's two workers they are usually on different
workers."""

import asyncio

from autobahn.wamp import message
from autobahn.wamp.types import CallOptions, RegisterOptions

from helpers import Sessions, run


def test_welcome_announces_progressive_call_results(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            assert s._router_roles["dealer"].progressive_call_results is True

    run(body())


def test_progressive_results_arrive_in_order_before_the_final_one(serializer):
    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)
            asked = []

            async def count(n, details=None):
                asked.append(details.progress is not None)
                for i in range(n):
                    details.progress(i, of=n)
                    await asyncio.sleep(0)
                return "done"

            await callee.register(count, "com.example.progressive.count", options=RegisterOptions(details_arg="details"))
            seen = []
            result = await caller.call(
                "com.example.progressive.count",
                50,
                options=CallOptions(on_progress=lambda i, of: seen.append((i, of))),
            )
            assert result == "done"
            assert seen == [(i, 50) for i in range(50)]
            # Without on_progress nothing is asked for, and none arrives.
            plain = await caller.call("com.example.progressive.count", 0)
            assert plain == "done"
            assert asked == [True, False]

    run(body())


def test_progressive_yield_for_a_caller_that_did_not_ask_is_dropped(serializer):
    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)
            invocations = []
            original = callee.onMessage

            def spy(msg):
                if isinstance(msg, message.Invocation):
                    invocations.append(msg)
                return original(msg)

            callee.onMessage = spy

            def answer():
                # A progressive YIELD anyway, by hand (autobahn offers no
                # progress() when the caller did not ask), then the final one.
                callee._transport.send(message.Yield(invocations[-1].request, args=["progress"], progress=True))
                return "final"

            await callee.register(answer, "com.example.progressive.unasked")
            seen = []

            def on_message(msg):
                seen.append(msg)
                return caller_original(msg)

            caller_original = caller.onMessage
            caller.onMessage = on_message
            assert await caller.call("com.example.progressive.unasked") == "final"
            await asyncio.sleep(0.2)
            results = [m for m in seen if isinstance(m, message.Result)]
            assert [m.args for m in results] == [["final"]], results
            assert invocations[-1].receive_progress is None

    run(body())
