"""Call timeouts enforced by the router (WAMP Advanced Profile, dealer):
CALL ``timeout`` in milliseconds; on expiry the caller gets ERROR
``wamp.error.timeout``, a callee that announced ``call_canceling`` (as
autobahn does) gets INTERRUPT (mode ``killnowait``, reason
``wamp.error.timeout``), and its late answer is dropped. The router checks
deadlines every 50 ms."""

import asyncio

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, RegisterOptions

from helpers import Sessions, run
from test_protocol import HELLO, RawClient


def test_welcome_announces_call_timeout(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            assert s._router_roles["dealer"].call_timeout is True

    run(body())


def test_a_call_past_its_timeout_fails_and_the_callee_is_interrupted(serializer):
    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)
            cancelled = asyncio.Event()

            async def slow(seconds):
                try:
                    await asyncio.sleep(seconds)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise
                return "late"

            await callee.register(slow, "com.example.timeout.slow")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(ApplicationError) as e:
                await caller.call("com.example.timeout.slow", 5, options=CallOptions(timeout=300))
            waited = loop.time() - t0
            assert e.value.error == "wamp.error.timeout"
            assert 0.25 < waited < 2.0, waited
            await asyncio.wait_for(cancelled.wait(), 2)
            # In time, the same procedure answers.
            assert await caller.call("com.example.timeout.slow", 0.05, options=CallOptions(timeout=2000)) == "late"
            # And without a timeout nothing is cut short.
            assert await caller.call("com.example.timeout.slow", 0.4) == "late"

    run(body())


def test_a_timeout_that_is_not_a_number_is_an_invalid_argument():
    async def body():
        client = await RawClient("wamp.2.json").connect()
        try:
            client.send(HELLO)
            await client.recv()
            for bad in ("soon", -5, 1.5):
                client.send([48, 7, {"timeout": bad}, "com.example.timeout.slow"])
                msg = await client.recv()
                assert msg[:3] == [8, 48, 7] and msg[4] == "wamp.error.invalid_argument", (bad, msg)
        finally:
            client.close()

    run(body())


def test_with_progressive_results_the_timeout_runs_between_results(serializer):
    """Spec (progressive call results, "Timeouts"): the limit is between the
    CALL and the first result and between results thereafter."""

    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)
            uri = f"com.example.timeout.stream.{serializer.SERIALIZER_ID}"

            async def stream(n, pause, details=None):
                for i in range(n):
                    await asyncio.sleep(pause)
                    details.progress(i)
                await asyncio.sleep(pause)
                return "done"

            await callee.register(stream, uri, options=RegisterOptions(details_arg="details"))
            seen = []
            # 8 results 0.1 s apart: 0.9 s in all, each gap well within 0.4 s.
            options = CallOptions(timeout=400, on_progress=seen.append)
            assert await caller.call(uri, 8, 0.1, options=options) == "done"
            assert seen == list(range(8))
            # A gap longer than the timeout still ends the call.
            with pytest.raises(ApplicationError) as e:
                await caller.call(uri, 2, 0.6, options=CallOptions(timeout=300, on_progress=lambda _: None))
            assert e.value.error == "wamp.error.timeout"

    run(body())
