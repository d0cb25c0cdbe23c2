"""The WAMP meta API (Advanced Profile), served by the router itself:
session, subscription and registration meta events and procedures,
registration revocation and testaments. The suite's router runs several
workers and consecutive sessions land on different ones, so every list or
count here is gathered from more than one worker."""

import asyncio

import pytest
from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions, SubscribeOptions

from helpers import STEP_TIMEOUT, Inbox, Sessions, run


async def settle(check, what):
    """Waits until check() (a coroutine function) is true: meta events and
    the tables behind meta procedures follow an unsubscribe or a leave
    shortly after its acknowledgement."""
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never true: {what}")


def test_welcome_announces_the_meta_apis(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            broker, dealer = s._router_roles["broker"], s._router_roles["dealer"]
            assert broker.session_meta_api and broker.subscription_meta_api
            assert dealer.session_meta_api and dealer.registration_meta_api
            assert dealer.registration_revocation and dealer.testament_meta_api

    run(body())


# ------------------------------------------------------------------ sessions


def test_session_join_and_leave_events(serializer):
    async def body():
        async with Sessions() as ss:
            watcher = await ss.open(serializer)
            joins, leaves = Inbox(), Inbox()
            await watcher.subscribe(joins.handler(), "wamp.session.on_join")
            await watcher.subscribe(leaves.handler(), "wamp.session.on_leave")
            other = await ss.open(serializer)
            (_, args, _, _), = await joins.wait_for_count(1)
            details = args[0]
            assert details["session"] == other._session_id
            assert details["authrole"] == "anonymous" and details["authmethod"] == "anonymous"
            assert details["authid"] == other._authid
            assert details["transport"]["type"] == "websocket"
            who = [other._session_id, other._authid, "anonymous"]
            other.leave()
            (_, args, _, _), = await leaves.wait_for_count(1)
            assert list(args) == who

    run(body())


def test_session_count_list_get(serializer):
    async def body():
        async with Sessions() as ss:
            a = await ss.open(serializer)
            b = await ss.open(serializer)
            c = await ss.open(serializer)
            ids = await a.call("wamp.session.list")
            assert {a._session_id, b._session_id, c._session_id} <= set(ids)
            assert await a.call("wamp.session.count") == len(ids)
            assert await a.call("wamp.session.count", ["anonymous"]) == len(ids)
            assert await a.call("wamp.session.count", ["nobody"]) == 0
            assert await a.call("wamp.session.list", ["nobody"]) == []
            got = await a.call("wamp.session.get", c._session_id)
            assert got["session"] == c._session_id and got["authid"] == c._authid
            assert got["transport"]["serializer"] == serializer.SERIALIZER_ID
            cid = c._session_id
            c.leave()
            await asyncio.wait_for(asyncio.shield(c.left), STEP_TIMEOUT)

            async def gone():
                return cid not in await a.call("wamp.session.list")

            await settle(gone, "the session that left is no longer listed")
            with pytest.raises(ApplicationError) as e:
                await a.call("wamp.session.get", cid)
            assert e.value.error == "wamp.error.no_such_session"
            for proc, args in [
                ("wamp.session.get", ["not an id"]),
                ("wamp.session.get", []),
                ("wamp.session.list", [[1, 2]]),
                ("wamp.session.count", ["anonymous"]),
            ]:
                with pytest.raises(ApplicationError) as e:
                    await a.call(proc, *args)
                assert e.value.error == "wamp.error.invalid_argument", (proc, args)
            with pytest.raises(ApplicationError) as e:
                await a.call("wamp.session.nothing")
            assert e.value.error == "wamp.error.no_such_procedure"

    run(body())


def test_session_kill(serializer):
    async def body():
        async with Sessions() as ss:
            killer = await ss.open(serializer)
            victim = await ss.open(serializer)
            vid = victim._session_id
            leaves = Inbox()
            await killer.subscribe(leaves.handler(), "wamp.session.on_leave")
            await killer.call("wamp.session.kill", vid, reason="com.example.bye", message="go away")
            details = await asyncio.wait_for(asyncio.shield(victim.left), STEP_TIMEOUT)
            assert details.reason == "com.example.bye"
            assert details.message == "go away"
            (_, args, _, _), = await leaves.wait_for_count(1)
            assert args[0] == vid
            for target in (vid, killer._session_id):
                with pytest.raises(ApplicationError) as e:
                    await killer.call("wamp.session.kill", target)
                assert e.value.error == "wamp.error.no_such_session"
            with pytest.raises(ApplicationError) as e:
                await killer.call("wamp.session.kill", 1, reason="not a uri!")
            assert e.value.error == "wamp.error.invalid_uri"
            # The killer goes on.
            assert await killer.call("wamp.session.count") >= 1

    run(body())


def test_session_kill_by_authid_authrole_and_all(serializer):
    async def body():
        async with Sessions() as ss:
            killer = await ss.open(serializer)
            victims = [await ss.open(serializer) for _ in range(3)]
            first = victims[0]._session_id
            killed = await killer.call("wamp.session.kill_by_authid", victims[0]._authid)
            assert killed == [first]
            d = await asyncio.wait_for(asyncio.shield(victims[0].left), STEP_TIMEOUT)
            assert d.reason == "wamp.close.killed"
            # The caller's own authid or authrole never kills the caller.
            assert await killer.call("wamp.session.kill_by_authid", killer._authid) == []
            n = await killer.call("wamp.session.kill_by_authrole", "anonymous", message="role gone")
            assert n >= 2
            for v in victims[1:]:
                d = await asyncio.wait_for(asyncio.shield(v.left), STEP_TIMEOUT)
                assert d.message == "role gone"
            more = await ss.open(serializer)
            assert await killer.call("wamp.session.kill_all") >= 1
            await asyncio.wait_for(asyncio.shield(more.left), STEP_TIMEOUT)
            assert killer.is_attached()
            assert await killer.call("wamp.session.list") == [killer._session_id]

    run(body())


# ------------------------------------------------------------- subscriptions


def test_subscription_meta_events_and_procedures(serializer):
    async def body():
        async with Sessions() as ss:
            watcher = await ss.open(serializer)
            a = await ss.open(serializer)
            b = await ss.open(serializer)
            events = Inbox()
            for name in ("on_create", "on_subscribe", "on_unsubscribe", "on_delete"):
                await watcher.subscribe(events.handler(name), f"wamp.subscription.{name}")
            topic = f"com.fennec.meta.sub.{serializer.SERIALIZER_ID}"
            sa = await a.subscribe(lambda *x: None, topic)
            sb = await b.subscribe(lambda *x: None, topic)
            assert sa.id == sb.id
            got = await events.wait_for_count(3)
            created = [e for e in got if e[0] == "on_create"]
            assert len(created) == 1
            _, (session, details), _, _ = created[0]
            assert session == a._session_id
            assert details["id"] == sa.id and details["uri"] == topic and details["match"] == "exact"
            assert "T" in details["created"]
            subscribed = sorted(e[1][0] for e in got if e[0] == "on_subscribe")
            assert subscribed == sorted([a._session_id, b._session_id])

            listed = await watcher.call("wamp.subscription.list")
            assert sa.id in listed["exact"]
            assert await watcher.call("wamp.subscription.lookup", topic) == sa.id
            assert await watcher.call("wamp.subscription.lookup", topic, {"match": "prefix"}) is None
            assert sa.id in await watcher.call("wamp.subscription.match", topic)
            assert (await watcher.call("wamp.subscription.get", sa.id))["uri"] == topic
            subs = await watcher.call("wamp.subscription.list_subscribers", sa.id)
            assert sorted(subs) == sorted([a._session_id, b._session_id])
            assert await watcher.call("wamp.subscription.count_subscribers", sa.id) == 2

            await sa.unsubscribe()
            await sb.unsubscribe()
            got = await events.wait_for_count(6)
            tail = [(e[0], e[1][0]) for e in got[3:]]
            assert ("on_unsubscribe", a._session_id) in tail and ("on_unsubscribe", b._session_id) in tail
            assert tail[-1][0] == "on_delete" and got[-1][1][1] == sa.id
            with pytest.raises(ApplicationError) as e:
                await watcher.call("wamp.subscription.get", sa.id)
            assert e.value.error == "wamp.error.no_such_subscription"
            with pytest.raises(ApplicationError) as e:
                await watcher.call("wamp.subscription.count_subscribers", sa.id)
            assert e.value.error == "wamp.error.no_such_subscription"
            with pytest.raises(ApplicationError) as e:
                await watcher.call("wamp.subscription.get", "x")
            assert e.value.error == "wamp.error.invalid_argument"
            assert await watcher.call("wamp.subscription.lookup", topic) is None
            assert await watcher.call("wamp.subscription.match", topic) is None

    run(body())


def test_subscription_meta_for_patterns(serializer):
    async def body():
        async with Sessions() as ss:
            a = await ss.open(serializer)
            watcher = await ss.open(serializer)
            base = f"com.fennec.meta.psub.{serializer.SERIALIZER_ID}"
            p = await a.subscribe(lambda *x: None, base, options=SubscribeOptions(match="prefix"))
            w = await a.subscribe(lambda *x: None, f"{base}..z", options=SubscribeOptions(match="wildcard"))
            listed = await watcher.call("wamp.subscription.list")
            assert p.id in listed["prefix"] and w.id in listed["wildcard"]
            assert sorted(await watcher.call("wamp.subscription.match", f"{base}.y.z")) == sorted([p.id, w.id])
            assert await watcher.call("wamp.subscription.lookup", f"{base}..z", {"match": "wildcard"}) == w.id
            assert (await watcher.call("wamp.subscription.get", w.id))["match"] == "wildcard"
            # A session leaving ends its subscriptions: on_delete follows.
            deletes = Inbox()
            await watcher.subscribe(deletes.handler(), "wamp.subscription.on_delete")
            a.leave()
            got = await deletes.wait_for_count(2)
            assert sorted(e[1][1] for e in got) == sorted([p.id, w.id])

    run(body())


# ------------------------------------------------------------- registrations


def test_registration_meta_events_and_procedures(serializer):
    async def body():
        async with Sessions() as ss:
            watcher = await ss.open(serializer)
            a = await ss.open(serializer)
            b = await ss.open(serializer)
            events = Inbox()
            for name in ("on_create", "on_register", "on_unregister", "on_delete"):
                await watcher.subscribe(events.handler(name), f"wamp.registration.{name}")
            uri = f"com.fennec.meta.reg.{serializer.SERIALIZER_ID}"
            ra = await a.register(lambda: "a", uri, options=RegisterOptions(invoke="roundrobin"))
            rb = await b.register(lambda: "b", uri, options=RegisterOptions(invoke="roundrobin"))
            assert ra.id == rb.id
            got = await events.wait_for_count(3)
            assert [e[0] for e in got] == ["on_create", "on_register", "on_register"]
            _, (session, details), _, _ = got[0]
            assert session == a._session_id
            assert details["uri"] == uri and details["invoke"] == "roundrobin" and details["match"] == "exact"

            assert ra.id in (await watcher.call("wamp.registration.list"))["exact"]
            assert await watcher.call("wamp.registration.lookup", uri) == ra.id
            assert await watcher.call("wamp.registration.lookup", uri, {"match": "prefix"}) is None
            assert await watcher.call("wamp.registration.match", uri) == ra.id
            assert await watcher.call("wamp.registration.match", uri + ".x") is None
            assert (await watcher.call("wamp.registration.get", ra.id))["id"] == ra.id
            callees = await watcher.call("wamp.registration.list_callees", ra.id)
            assert callees == [a._session_id, b._session_id]
            assert await watcher.call("wamp.registration.count_callees", ra.id) == 2

            await ra.unregister()
            await rb.unregister()
            got = await events.wait_for_count(6)
            assert [e[0] for e in got[3:]] == ["on_unregister", "on_unregister", "on_delete"]
            assert got[5][1] == (b._session_id, ra.id)
            for proc in ("get", "list_callees", "count_callees"):
                with pytest.raises(ApplicationError) as e:
                    await watcher.call(f"wamp.registration.{proc}", ra.id)
                assert e.value.error == "wamp.error.no_such_registration"
            with pytest.raises(ApplicationError) as e:
                await watcher.call("wamp.registration.lookup", 5)
            assert e.value.error == "wamp.error.invalid_argument"

    run(body())


def test_registration_revocation(serializer):
    async def body():
        async with Sessions() as ss:
            admin = await ss.open(serializer)
            callee = await ss.open(serializer)
            uri = f"com.fennec.meta.revoke.{serializer.SERIALIZER_ID}"
            reg = await callee.register(lambda: "here", uri)
            told = []
            on_message = callee.onMessage

            def spy(msg):
                if isinstance(msg, message.Unregistered):
                    told.append(msg)
                return on_message(msg)

            callee.onMessage = spy
            assert await admin.call(uri) == "here"
            unregs = Inbox()
            await admin.subscribe(unregs.handler(), "wamp.registration.on_unregister")
            await admin.call("wamp.registration.remove", reg.id, callee._session_id, "moving")
            (_, args, _, _), = await unregs.wait_for_count(1)
            assert list(args) == [callee._session_id, reg.id]

            async def gone():
                try:
                    await admin.call(uri)
                except ApplicationError as e:
                    return e.error == "wamp.error.no_such_procedure"
                return False

            await settle(gone, "a revoked registration is no longer called")
            # autobahn announces registration_revocation: it was told (UNREGISTERED 0).
            await settle(lambda: asyncio.sleep(0, bool(told)), "the callee is told of the revocation")
            assert (told[0].request, told[0].registration, told[0].reason) == (0, reg.id, "moving")
            with pytest.raises(ApplicationError) as e:
                await admin.call("wamp.registration.remove", reg.id, callee._session_id)
            assert e.value.error == "wamp.error.no_such_registration"

    run(body())


# ---------------------------------------------------------------- testaments


def test_testaments_are_published_when_the_session_goes(serializer):
    async def body():
        async with Sessions() as ss:
            watcher = await ss.open(serializer)
            dying = await ss.open(serializer)
            topic = f"com.fennec.meta.testament.{serializer.SERIALIZER_ID}"
            got = Inbox()
            await watcher.subscribe(got.handler(), topic)
            await dying.call("wamp.session.add_testament", topic, ["destroyed"], {"n": 1})
            await dying.call("wamp.session.add_testament", topic, ["detached"], {"n": 2}, scope="detached")
            await dying.call("wamp.session.add_testament", topic, ["flushed"], {}, scope="detached")
            assert await dying.call("wamp.session.flush_testaments", scope="detached") is None
            await dying.call("wamp.session.add_testament", topic, ["detached-2"], {"n": 3}, scope="detached")
            with pytest.raises(ApplicationError) as e:
                await dying.call("wamp.session.add_testament", topic, "not a list", {})
            assert e.value.error == "wamp.error.invalid_argument"
            with pytest.raises(ApplicationError) as e:
                await dying.call("wamp.session.add_testament", topic, [], {}, scope="later")
            assert e.value.error == "wamp.error.invalid_argument"
            # The connection drops without GOODBYE: the testaments still go out,
            # detached ones first.
            dying.tcp_transport.abort()
            items = await got.wait_for_count(2)
            assert [(i[1], i[2]) for i in items] == [(("detached-2",), {"n": 3}), (("destroyed",), {"n": 1})]
            await asyncio.sleep(0.2)
            assert len(got.items) == 2

    run(body())
