"""Routed RPC: REGISTER / CALL / INVOCATION / YIELD / ERROR / UNREGISTER."""

import asyncio

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult

from helpers import Sessions, run


def test_call_with_args_and_kwargs(serializer):
    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)
            invocations = []

            def add(a, b, scale=1):
                invocations.append((a, b, scale))
                return (a + b) * scale

            def echo(*args, **kwargs):
                return CallResult(*args, **kwargs)

            reg = await callee.register(add, "com.example.add")
            assert isinstance(reg.id, int)
            await callee.register(echo, "com.example.echo")

            assert await caller.call("com.example.add", 2, 3) == 5
            assert await caller.call("com.example.add", 2, 3, scale=10) == 50
            assert invocations == [(2, 3, 1), (2, 3, 10)]

            res = await caller.call("com.example.echo", 1, "x", [None, 2.5], k={"v": [1]}, s="ß")
            assert isinstance(res, CallResult)
            assert list(res.results) == [1, "x", [None, 2.5]]
            assert res.kwresults == {"k": {"v": [1]}, "s": "ß"}

            # No result at all -> None.
            await callee.register(lambda: None, "com.example.nothing")
            assert await caller.call("com.example.nothing") is None

    run(body())


def test_async_callee_and_concurrent_calls(serializer):
    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)

            async def slow_square(x, delay):
                await asyncio.sleep(delay)
                return x * x

            await callee.register(slow_square, "com.example.square")
            # Later calls finish first: results must still be matched to requests.
            calls = [caller.call("com.example.square", i, 0.05 * (10 - i)) for i in range(10)]
            results = await asyncio.gather(*calls)
            assert results == [i * i for i in range(10)]

    run(body())


def test_callee_error_reaches_caller(serializer):
    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)

            def fail():
                raise ApplicationError("com.example.error.foo", 1, 2, a=3)

            await callee.register(fail, "com.example.fail")
            with pytest.raises(ApplicationError) as info:
                await caller.call("com.example.fail")
            err = info.value
            assert err.error == "com.example.error.foo"
            assert err.args == (1, 2)
            assert err.kwargs == {"a": 3}

    run(body())


def test_unregister_then_call_fails(serializer):
    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)
            reg = await callee.register(lambda: "here", "com.example.transient")
            assert await caller.call("com.example.transient") == "here"
            await reg.unregister()
            assert not reg.active
            with pytest.raises(ApplicationError) as info:
                await caller.call("com.example.transient")
            assert info.value.error == "wamp.error.no_such_procedure"

    run(body())


def test_registration_dies_with_callee_session(serializer):
    async def body():
        async with Sessions() as ss:
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)
            await callee.register(lambda: "alive", "com.example.owned")
            assert await caller.call("com.example.owned") == "alive"
            callee.leave()
            await asyncio.wait_for(asyncio.shield(callee.left), 10)
            # Another session can now register the freed procedure...
            new_callee = await ss.open(serializer)
            await new_callee.register(lambda: "new", "com.example.owned")
            assert await caller.call("com.example.owned") == "new"

    run(body())
