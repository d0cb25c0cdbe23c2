"""Progressive call invocations (WAMP Advanced Profile, dealer): a CALL
with ``progress: true`` starts an invocation; further CALLs with the same
request ID reach the same callee as INVOCATIONs with the same invocation
ID, in order, until a CALL without ``progress`` ends the input.

Neither autobahn-python nor autobahn-js implements the feature (wampy's
caller does, in tests/node), so both peers here speak WAMP by hand over
autobahn's WebSocket client, announcing the features the spec requires:
``progressive_call_invocations`` for the caller, and it plus
``call_canceling`` for the callee. The suite's router runs several workers;
the caller and the callee are on different ones."""

import asyncio

import pytest

from helpers import run
from test_protocol import ABORT, WELCOME, RawClient, subprotocol_of

ERROR, CALL, RESULT, REGISTER, REGISTERED, INVOCATION, INTERRUPT, YIELD = 8, 48, 50, 64, 65, 68, 69, 70


def hello(caller=None, callee=None):
    return [1, "realm1", {"roles": {"caller": {"features": caller or {}}, "callee": {"features": callee or {}}}}]


PROGRESSIVE_CALLER = {"progressive_call_invocations": True, "progressive_call_results": True}
PROGRESSIVE_CALLEE = {"progressive_call_invocations": True, "call_canceling": True, "progressive_call_results": True}


async def joined(subprotocol, **features):
    c = await RawClient(subprotocol).connect()
    c.send(hello(**features))
    welcome = await c.recv()
    assert welcome[0] == WELCOME, welcome
    assert welcome[2]["roles"]["dealer"]["features"]["progressive_call_invocations"] is True
    return c


async def callee_of(subprotocol, uri, features=PROGRESSIVE_CALLEE):
    c = await joined(subprotocol, callee=features)
    c.send([REGISTER, 1, {}, uri])
    reply = await c.recv()
    assert reply[:2] == [REGISTERED, 1], reply
    return c, reply[2]


async def nothing_within(client, seconds=0.3):
    try:
        msg = await asyncio.wait_for(client.factory.inbox.get(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {msg!r}")


def test_chunks_reach_one_invocation_in_order(serializer):
    async def body():
        sp = subprotocol_of(serializer)
        uri = f"com.fennec.pci.order.{serializer.SERIALIZER_ID}"
        callee, registration = await callee_of(sp, uri)
        caller = await joined(sp, caller=PROGRESSIVE_CALLER)
        try:
            for i in range(5):
                caller.send([CALL, 7, {"progress": True}, uri, [i]])
            caller.send([CALL, 7, {}, uri, ["end"]])
            first = await callee.recv()
            assert first[0] == INVOCATION and first[2] == registration and first[3] == {"progress": True}, first
            invocation = first[1]
            got = [first[4]]
            for i in range(5):
                msg = await callee.recv()
                assert msg[:2] == [INVOCATION, invocation], msg
                assert msg[3] == ({} if i == 4 else {"progress": True}), msg
                got.append(msg[4])
            assert got == [[0], [1], [2], [3], [4], ["end"]]
            callee.send([YIELD, invocation, {}, [sum(x[0] for x in got if isinstance(x[0], int))]])
            assert await caller.recv() == [RESULT, 7, {}, [10]]
        finally:
            caller.close()
            callee.close()

    run(body())


def test_progressive_invocations_with_progressive_results():
    async def body():
        uri = "com.fennec.pci.both"
        callee, _ = await callee_of("wamp.2.json", uri)
        caller = await joined("wamp.2.json", caller=PROGRESSIVE_CALLER)
        try:
            caller.send([CALL, 3, {"progress": True, "receive_progress": True}, uri, ["a"]])
            inv = await callee.recv()
            assert inv[3] == {"progress": True, "receive_progress": True}, inv
            callee.send([YIELD, inv[1], {"progress": True}, ["A"]])
            assert await caller.recv() == [RESULT, 3, {"progress": True}, ["A"]]
            caller.send([CALL, 3, {"progress": True}, uri, ["b"]])
            assert (await callee.recv())[1:5] == [inv[1], inv[2], {"progress": True}, ["b"]]
            callee.send([YIELD, inv[1], {"progress": True}, ["B"]])
            assert await caller.recv() == [RESULT, 3, {"progress": True}, ["B"]]
            caller.send([CALL, 3, {}, uri, ["c"]])
            assert (await callee.recv())[1:5] == [inv[1], inv[2], {}, ["c"]]
            callee.send([YIELD, inv[1], {}, ["done"]])
            assert await caller.recv() == [RESULT, 3, {}, ["done"]]
        finally:
            caller.close()
            callee.close()

    run(body())


def test_continuation_of_a_finished_call_is_ignored():
    async def body():
        uri = "com.fennec.pci.finished"
        callee, _ = await callee_of("wamp.2.json", uri)
        caller = await joined("wamp.2.json", caller=PROGRESSIVE_CALLER)
        try:
            caller.send([CALL, 5, {"progress": True}, uri, [1]])
            inv = await callee.recv()
            # The callee answers before the input is complete.
            callee.send([YIELD, inv[1], {}, ["early"]])
            assert await caller.recv() == [RESULT, 5, {}, ["early"]]
            # The caller did not know yet: its continuations are dropped, no answer.
            caller.send([CALL, 5, {"progress": True}, uri, [2]])
            caller.send([CALL, 5, {}, uri, [3]])
            await nothing_within(caller)
            await nothing_within(callee)
            # The session goes on.
            caller.send([CALL, 6, {}, uri, ["plain"]])
            inv2 = await callee.recv()
            assert inv2[4] == ["plain"] and inv2[3] == {}, inv2
            callee.send([YIELD, inv2[1], {}, ["ok"]])
            assert await caller.recv() == [RESULT, 6, {}, ["ok"]]
            # A CALL reusing the ID of a call in flight without progress is a violation.
            caller.send([CALL, 8, {}, uri, []])
            await callee.recv()
            caller.send([CALL, 8, {}, uri, []])
            msg = await caller.recv()
            assert msg[0] == ABORT and msg[2] == "wamp.error.protocol_violation", msg
        finally:
            caller.close()
            callee.close()

    run(body())


def test_unannounced_feature_is_refused():
    async def body():
        uri = "com.fennec.pci.unannounced"
        # A callee without the feature: the call is an application error.
        plain, _ = await callee_of("wamp.2.json", uri, features={"call_canceling": True})
        caller = await joined("wamp.2.json", caller=PROGRESSIVE_CALLER)
        try:
            caller.send([CALL, 1, {"progress": True}, uri, [1]])
            msg = await caller.recv()
            assert msg[:3] == [ERROR, CALL, 1] and msg[4] == "wamp.error.feature_not_supported", msg
            await nothing_within(plain)
        finally:
            caller.close()
            plain.close()
        # A caller that did not announce it: a protocol violation.
        rude = await joined("wamp.2.json")
        try:
            rude.send([CALL, 1, {"progress": True}, uri, [1]])
            msg = await rude.recv()
            assert msg[0] == ABORT and msg[2] == "wamp.error.protocol_violation", msg
        finally:
            rude.close()

    run(body())


@pytest.mark.parametrize("mode", ["killnowait", "leave"])
def test_caller_leaving_or_canceling_interrupts_the_callee(mode):
    async def body():
        uri = f"com.fennec.pci.{mode}"
        callee, _ = await callee_of("wamp.2.json", uri)
        caller = await joined("wamp.2.json", caller=PROGRESSIVE_CALLER)
        try:
            caller.send([CALL, 9, {"progress": True}, uri, [1]])
            inv = await callee.recv()
            if mode == "leave":
                caller.close()
            else:
                caller.send([49, 9, {"mode": "killnowait"}])
                msg = await caller.recv()
                assert msg[:3] == [ERROR, CALL, 9] and msg[4] == "wamp.error.canceled", msg
            msg = await callee.recv()
            assert msg[:2] == [INTERRUPT, inv[1]] and msg[2]["mode"] == "killnowait", msg
            if mode != "leave":
                # Input after the cancel is dropped.
                caller.send([CALL, 9, {}, uri, [2]])
                await nothing_within(callee)
        finally:
            caller.close()
            callee.close()

    run(body())
