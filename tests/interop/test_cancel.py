"""Call canceling (WAMP Advanced Profile, dealer): CANCEL with mode
``skip``, ``kill`` or ``killnowait`` (the default). The caller gets exactly
one ERROR: ``wamp.error.canceled`` at once for skip and killnowait, the
interrupted callee's own ERROR for kill; the callee, which announces ``call_canceling`` as autobahn
does, gets INTERRUPT for kill and killnowait and nothing for skip; what it
answers afterwards is dropped (for ``kill`` its answer is the call's
end). The CANCELs are sent by hand to choose the
mode (autobahn's future.cancel() sends no mode)."""

import asyncio

import pytest
from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError

from helpers import Sessions, run
from test_protocol import HELLO, RawClient


async def setup(ss, serializer, name):
    callee = await ss.open(serializer)
    caller = await ss.open(serializer)
    state = {"started": asyncio.Event(), "interrupted": asyncio.Event()}

    async def slow():
        state["started"].set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            state["interrupted"].set()
            raise
        return "finished"

    await callee.register(slow, name)
    return callee, caller, state


def call_then_cancel(caller, name, mode):
    """Calls, and returns (the call's future, a function sending CANCEL)."""
    fut = caller.call(name)
    request = max(caller._call_reqs)
    return fut, lambda: caller._transport.send(message.Cancel(request, mode=mode))


@pytest.mark.parametrize("mode", ["killnowait", "kill", "skip", None])
def test_cancel_modes(serializer, mode):
    async def body():
        async with Sessions() as ss:
            name = f"com.example.cancel.{mode}"
            callee, caller, state = await setup(ss, serializer, name)
            fut, cancel = call_then_cancel(caller, name, mode)
            await asyncio.wait_for(state["started"].wait(), 5)
            cancel()
            with pytest.raises(ApplicationError) as e:
                await asyncio.wait_for(fut, 3)
            if mode == "kill":
                # The callee's own answer to the INTERRUPT ends the call
                # (autobahn answers a cancelled coroutine with runtime_error).
                assert state["interrupted"].is_set()
                assert e.value.error != "wamp.error.canceled", e.value
            else:
                assert e.value.error == "wamp.error.canceled", e.value
            if mode == "skip":
                await asyncio.sleep(0.3)
                assert not state["interrupted"].is_set(), "skip must not interrupt the callee"
            else:
                await asyncio.wait_for(state["interrupted"].wait(), 3)
            # The session goes on: another call works.
            await callee.register(lambda: "ok", name + ".again")
            assert await caller.call(name + ".again") == "ok"

    run(body())


def test_cancel_of_a_finished_call_is_ignored_and_a_bad_mode_is_invalid():
    async def body():
        client = await RawClient("wamp.2.json").connect()
        try:
            client.send(HELLO)
            await client.recv()
            client.send([49, 12345, {}])  # no such call: ignored
            client.send([49, 7, {"mode": "explode"}])
            msg = await client.recv()
            assert msg[:3] == [8, 49, 7] and msg[4] == "wamp.error.invalid_argument", msg
        finally:
            client.close()

    run(body())


def test_kill_for_a_callee_that_cannot_be_interrupted_is_a_skip():
    from helpers import SERIALIZERS

    async def body():
        async with Sessions() as ss:
            # A callee speaking by hand, announcing no call_canceling.
            callee = await RawClient("wamp.2.json").connect()
            try:
                callee.send(HELLO)
                await callee.recv()
                callee.send([64, 1, {}, "com.example.cancel.plain"])
                assert (await callee.recv())[0] == 65
                caller = await ss.open(SERIALIZERS["json"])
                fut, cancel = call_then_cancel(caller, "com.example.cancel.plain", "kill")
                invocation = await callee.recv()
                assert invocation[0] == 68, invocation
                cancel()
                with pytest.raises(ApplicationError) as e:
                    await asyncio.wait_for(fut, 3)
                assert e.value.error == "wamp.error.canceled"
                # No INTERRUPT came, and a late YIELD is dropped.
                callee.send([70, invocation[1], {}, ["late"]])
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(callee.factory.inbox.get(), 0.3)
            finally:
                callee.close()

    run(body())
