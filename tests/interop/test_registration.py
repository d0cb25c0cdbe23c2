"""Pattern-based and shared registrations (WAMP Advanced Profile, dealer).

- ``match: prefix | wildcard``: a call goes to the most specific
  registration (exact, then the longest prefix, then the wildcard pattern
  with the longest fixed runs); INVOCATION ``details.procedure`` carries the
  URI called.
- ``invoke: single | roundrobin | random | first | last``: callees of one
  URI and match policy share one policy; another policy is
  ``wamp.error.procedure_already_exists``.

The suite's router runs several workers and consecutive sessions land on
different ones, so callers and callees here are spread over workers.
"""

import asyncio
from collections import Counter

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions

from helpers import Sessions, run
from test_protocol import HELLO, WELCOME, RawClient

ERROR, REGISTER, REGISTERED = 8, 64, 65


def named(name):
    """A callee endpoint answering (its name, the procedure called)."""

    def endpoint(*args, details=None):
        return [name, details.procedure if details else None]

    return endpoint


def opts(match=None, invoke=None):
    return RegisterOptions(match=match, invoke=invoke, details_arg="details")


def test_welcome_announces_pattern_and_shared_registration(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            features = s._router_roles["dealer"]
            assert features.pattern_based_registration
            assert features.shared_registration

    run(body())


def test_most_specific_registration_wins(serializer):
    """The spec's precedence rules, each callee on its own session."""

    async def body():
        async with Sessions() as ss:
            base = f"com.fennec.preg.{serializer.SERIALIZER_ID}"
            regs = [
                ("exact", f"{base}.a.b.c", None),
                ("prefix-short", f"{base}.a", "prefix"),
                ("prefix-long", f"{base}.a.b", "prefix"),
                ("wild-2", f"{base}.x..z", "wildcard"),
                ("wild-3", f"{base}.x.y.", "wildcard"),
            ]
            for name, uri, match in regs:
                callee = await ss.open(serializer)
                await callee.register(named(name), uri, options=opts(match))
            caller = await ss.open(serializer)

            async def who(uri):
                got = await caller.call(uri)
                return tuple(got)

            # (autobahn fills in the registered URI when INVOCATION names none.)
            assert await who(f"{base}.a.b.c") == ("exact", f"{base}.a.b.c")
            assert await who(f"{base}.a.b.c.d") == ("prefix-long", f"{base}.a.b.c.d")
            assert await who(f"{base}.a.bz") == ("prefix-long", f"{base}.a.bz")
            assert await who(f"{base}.a.c") == ("prefix-short", f"{base}.a.c")
            assert await who(f"{base}.a") == ("prefix-short", f"{base}.a")
            # Both wildcards match x.y.z: the longer fixed run first wins.
            assert await who(f"{base}.x.y.z") == ("wild-3", f"{base}.x.y.z")
            assert await who(f"{base}.x.q.z") == ("wild-2", f"{base}.x.q.z")
            for uri in (f"{base}.x.y", f"{base}.x.y.z.w", f"{base}.b"):
                with pytest.raises(ApplicationError) as e:
                    await caller.call(uri)
                assert e.value.error == "wamp.error.no_such_procedure"

    run(body())


def test_pattern_registration_goes_when_its_callee_does(serializer):
    async def body():
        async with Sessions() as ss:
            base = f"com.fennec.preg.gone.{serializer.SERIALIZER_ID}"
            callee = await ss.open(serializer)
            caller = await ss.open(serializer)
            reg = await callee.register(named("p"), base, options=opts("prefix"))
            assert (await caller.call(f"{base}.x"))[0] == "p"
            await reg.unregister()
            with pytest.raises(ApplicationError) as e:
                await caller.call(f"{base}.x")
            assert e.value.error == "wamp.error.no_such_procedure"
            # The same URI exact and as a prefix are two registrations.
            await callee.register(named("exact"), base, options=opts())
            await callee.register(named("prefix"), base, options=opts("prefix"))
            assert (await caller.call(base))[0] == "exact"
            assert (await caller.call(f"{base}.y"))[0] == "prefix"

    run(body())


def test_bad_patterns_and_policies_are_refused():
    """Sent raw: autobahn refuses unknown policies before sending them."""

    async def body():
        client = await RawClient("wamp.2.json").connect()
        try:
            client.send(HELLO)
            assert (await client.recv())[0] == WELCOME
            cases = [
                ("com.fennec.preg.bad..x", {}, "wamp.error.invalid_uri"),
                ("com.fennec.preg.bad", {"match": "regex"}, "wamp.error.invalid_argument"),
                ("com.fennec.preg.bad", {"invoke": "fastest"}, "wamp.error.invalid_argument"),
                ("wamp.session.count", {}, "wamp.error.invalid_uri"),
            ]
            for request, (uri, options, error) in enumerate(cases, start=1):
                client.send([REGISTER, request, options, uri])
                reply = await client.recv()
                assert reply[:3] == [ERROR, REGISTER, request] and reply[4] == error, (uri, options, reply)
            # The session is still fine: the same URI as a wildcard is valid.
            client.send([REGISTER, 9, {"match": "wildcard"}, "com.fennec.preg.bad..x"])
            assert (await client.recv())[:2] == [REGISTERED, 9]
        finally:
            client.close()

    run(body())


async def shared(ss, serializer, invoke, n, tag):
    uri = f"com.fennec.shared.{tag}.{invoke}.{serializer.SERIALIZER_ID}"
    for i in range(n):
        callee = await ss.open(serializer)
        await callee.register(named(f"c{i}"), uri, options=opts(invoke=invoke))
    return uri


@pytest.mark.parametrize("invoke", ["roundrobin", "random", "first", "last"])
def test_shared_registration_policies(serializer, invoke):
    async def body():
        async with Sessions() as ss:
            uri = await shared(ss, serializer, invoke, 3, "policy")
            caller = await ss.open(serializer)
            got = [(await caller.call(uri))[0] for _ in range(30)]
            counts = Counter(got)
            if invoke == "roundrobin":
                assert got[:6] == ["c0", "c1", "c2", "c0", "c1", "c2"], got
                assert sorted(counts.values()) == [10, 10, 10], counts
            elif invoke == "random":
                # 30 calls over 3 callees: all three are picked (p of a miss < 1e-5).
                assert set(counts) == {"c0", "c1", "c2"}, counts
            elif invoke == "first":
                assert counts == {"c0": 30}
            else:
                assert counts == {"c2": 30}

    run(body())


def test_shared_registration_survives_a_callee_leaving(serializer):
    async def body():
        async with Sessions() as ss:
            uri = f"com.fennec.shared.leave.{serializer.SERIALIZER_ID}"
            callees = []
            for i in range(2):
                c = await ss.open(serializer)
                await c.register(named(f"c{i}"), uri, options=opts(invoke="first"))
                callees.append(c)
            caller = await ss.open(serializer)
            assert (await caller.call(uri))[0] == "c0"
            callees[0].leave()
            await asyncio.wait_for(asyncio.shield(callees[0].left), 5)
            # The first is gone: the next in line serves.
            for _ in range(50):
                try:
                    if (await caller.call(uri))[0] == "c1":
                        break
                except ApplicationError:
                    pass
                await asyncio.sleep(0.02)
            assert (await caller.call(uri))[0] == "c1"

    run(body())


def test_invoke_mismatch_and_single_are_refused(serializer):
    async def body():
        async with Sessions() as ss:
            uri = f"com.fennec.shared.mismatch.{serializer.SERIALIZER_ID}"
            a = await ss.open(serializer)
            b = await ss.open(serializer)
            await a.register(named("a"), uri, options=opts(invoke="roundrobin"))
            for invoke in ("random", "single", None):
                with pytest.raises(ApplicationError) as e:
                    await b.register(named("b"), uri, options=opts(invoke=invoke))
                assert e.value.error == "wamp.error.procedure_already_exists", invoke
            # A session registers one URI once, whatever the policy.
            with pytest.raises(ApplicationError) as e:
                await a.register(named("a"), uri, options=opts(invoke="roundrobin"))
            assert e.value.error == "wamp.error.procedure_already_exists"
            await b.register(named("b"), uri, options=opts(invoke="roundrobin"))
            single = f"{uri}.single"
            await a.register(named("a"), single)
            with pytest.raises(ApplicationError) as e:
                await b.register(named("b"), single, options=opts(invoke="single"))
            assert e.value.error == "wamp.error.procedure_already_exists"

    run(body())
