"""Two nodes of a cluster (issue 15, docs/CLUSTER.md) with autobahn and
paho: this test starts nats-server with JetStream and two routers of its
own (``FENNEC_BIN``, ``--cluster``), and checks that publications cross
nodes in order, WAMP to WAMP (MessagePack publisher, JSON subscriber) and
MQTT to WAMP and MQTT, with the WAMP publisher left out of its own
events; that calls cross nodes (progressive results, errors, a
timeout, a roundrobin registration shared by callees on both nodes); and
that a retained value written with paho on one node reaches paho and
autobahn subscribers on the other; and that subscribe `after` replays
both nodes' event history; and that a killed node's persistent MQTT
session is taken in by the survivor and keeps what comes for it (paho).
Skipped where there is no nats-server, except under CI."""

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, PublishOptions, RegisterOptions, SubscribeOptions

from helpers import SERIALIZERS, STEP_TIMEOUT, Inbox, force_close, open_session, run

RUN = f"c{int(time.time() * 1000) % 10**9}"


def nats_binary():
    for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.path.exists(p):
            return p
    return shutil.which("nats-server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(nats_url, name, data):
    """A router in the cluster; (process, ws URL, MQTT host:port)."""
    binary = os.environ.get("FENNEC_BIN")
    assert binary, "FENNEC_BIN names the router binary (tests/autobahn.rs sets it)"
    p = subprocess.Popen(
        [binary, "--cores", "2", "--no-pin", "--listen", "127.0.0.1:0", "--mqtt", "127.0.0.1:0",
         "--data", data, "--durability", "none", "--cluster", nats_url, "--node-name", name],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = mqtt = None
    while url is None or mqtt is None:
        line = p.stdout.readline()
        assert line, f"node {name} printed its listeners"
        if line.startswith("fennec listening on ws://"):
            url = "ws://" + line.split("ws://", 1)[1].split()[0]
        if line.startswith("fennec MQTT listening on mqtt://"):
            mqtt = line.split("mqtt://", 1)[1].split()[0]
    threading.Thread(target=p.stdout.read, daemon=True).start()
    return p, url, mqtt


@contextlib.contextmanager
def started_cluster():
    """nats-server and two nodes: [(ws URL, MQTT host:port, process)]."""
    binary = nats_binary()
    if binary is None:
        assert not os.environ.get("CI"), "CI must have nats-server (scripts/test installs it)"
        pytest.skip("no nats-server here")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        nats = subprocess.Popen([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs = [nats]
        try:
            deadline = time.time() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    assert time.time() < deadline, "nats-server listens"
                    time.sleep(0.05)
            nodes = []
            for name in ("a", "b"):
                data = os.path.join(tmp, name)
                os.mkdir(data)
                p, url, mqtt = start_node(f"nats://127.0.0.1:{port}", name, data)
                procs.append(p)
                nodes.append((url, mqtt, p))
            yield nodes
        finally:
            for p in reversed(procs):
                p.kill()
                p.wait()


@pytest.fixture
def cluster():
    with started_cluster() as nodes:
        yield [(url, mqtt) for url, mqtt, _ in nodes]


@pytest.fixture
def cluster_procs():
    with started_cluster() as nodes:
        yield nodes


def paho_client(addr, name, on_message=None):
    host, port = addr.rsplit(":", 1)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{name}-{RUN}", protocol=paho.MQTTv5)
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    if on_message:
        c.on_message = on_message
    c.connect(host, int(port))
    c.loop_start()
    return c, subscribed


def test_publications_cross_nodes_in_order(cluster):
    (url_a, mqtt_a), (url_b, mqtt_b) = cluster
    topic = f"cl.{RUN}.t"
    got_mqtt = []
    mqtt_done = threading.Condition()

    def on_message(client, userdata, msg):
        with mqtt_done:
            got_mqtt.append((msg.topic, msg.payload.decode()))
            mqtt_done.notify_all()

    sub_mqtt, subscribed = paho_client(mqtt_b, "sub", on_message)
    sub_mqtt.subscribe(f"cl/{RUN}/#", qos=0)
    assert subscribed.wait(STEP_TIMEOUT), "SUBACK"

    async def body():
        sub = await open_session(SERIALIZERS["json"], url=url_b)
        pub = await open_session(SERIALIZERS["msgpack"], url=url_a)
        try:
            inbox = Inbox()
            await sub.subscribe(inbox.handler(), f"cl.{RUN}.", options=SubscribeOptions(match="prefix", details_arg="details"))
            own = Inbox()
            await pub.subscribe(own.handler(), topic)
            # Until b's interest has reached a (a KV watch away).
            deadline = time.time() + STEP_TIMEOUT
            while not inbox.items:
                assert time.time() < deadline, "the subscription on b never reached a"
                await pub.publish(topic, "probe", options=PublishOptions(acknowledge=True))
                await asyncio.sleep(0.05)
            for i in range(200):
                if i % 50 == 49:
                    await pub.publish(topic, i, options=PublishOptions(acknowledge=True))
                else:
                    pub.publish(topic, i)
            mqtt_pub, _ = paho_client(mqtt_a, "pub")
            try:
                for i in range(50):
                    mqtt_pub.publish(f"cl/{RUN}/m", str(1000 + i), qos=1).wait_for_publish(STEP_TIMEOUT)
            finally:
                mqtt_pub.loop_stop()
                mqtt_pub.disconnect()
            deadline = time.time() + STEP_TIMEOUT
            while sum(1 for _, a, _, _ in inbox.items if a and a[0] != "probe") < 250:
                assert time.time() < deadline, f"only {len(inbox.items)} events on b"
                await asyncio.sleep(0.05)
            numbers = [a[0] for _, a, _, d in inbox.items if a and a[0] != "probe"]
            assert numbers == list(range(200)) + list(range(1000, 1050)), "every event, in order"
            topics = {d.topic for _, a, _, d in inbox.items if a and a[0] != "probe"}
            assert topics == {topic, f"cl.{RUN}.m"}
            assert own.items == [], "exclude_me holds for the publisher"
        finally:
            await force_close(sub)
            await force_close(pub)

    try:
        run(body())
        with mqtt_done:
            assert mqtt_done.wait_for(
                lambda: sum(1 for _, p in got_mqtt if p.isdigit() or p.strip('"').isdigit()) >= 250, STEP_TIMEOUT
            ), f"MQTT on b got {len(got_mqtt)}"
        wamp_part = [int(p) for t, p in got_mqtt if t == f"cl/{RUN}/t" and p.isdigit()]
        assert wamp_part == list(range(200)), "WAMP events reach MQTT on the other node in order"
        mqtt_part = [int(p) for t, p in got_mqtt if t == f"cl/{RUN}/m"]
        assert mqtt_part == list(range(1000, 1050))
    finally:
        sub_mqtt.loop_stop()
        sub_mqtt.disconnect()


def test_calls_cross_nodes(cluster):
    (url_a, _), (url_b, _) = cluster

    async def body():
        callee_b = await open_session(SERIALIZERS["msgpack"], url=url_b)
        callee_a = await open_session(SERIALIZERS["json"], url=url_a)
        caller = await open_session(SERIALIZERS["json"], url=url_a)
        try:
            async def count(n, details=None):
                for i in range(n):
                    details.progress(i)
                    await asyncio.sleep(0)
                return {"counted": n, "node": "b"}

            def fail(why):
                raise ApplicationError("com.example.refused", why, node="b")

            async def slow():
                await asyncio.sleep(5)

            await callee_b.register(count, f"cl.{RUN}.count", options=RegisterOptions(details_arg="details"))
            await callee_b.register(fail, f"cl.{RUN}.fail")
            await callee_b.register(slow, f"cl.{RUN}.slow")
            # REGISTERED on b is cluster-wide: a's caller reaches it at once.
            seen = []
            result = await caller.call(f"cl.{RUN}.count", 20, options=CallOptions(on_progress=seen.append))
            assert result == {"counted": 20, "node": "b"}
            assert seen == list(range(20)), "progressive results cross in order"
            try:
                await caller.call(f"cl.{RUN}.fail", "no")
                raise AssertionError("the callee's error came back as a result")
            except ApplicationError as e:
                assert e.error == "com.example.refused"
                assert e.args == ("no",) and e.kwargs == {"node": "b"}
            try:
                await caller.call(f"cl.{RUN}.slow", options=CallOptions(timeout=300))
                raise AssertionError("no timeout")
            except ApplicationError as e:
                assert e.error == "wamp.error.timeout"
            # A single registration is the cluster's: a cannot take it too.
            try:
                await callee_a.register(lambda n: n, f"cl.{RUN}.count")
                raise AssertionError("registered twice in the cluster")
            except ApplicationError as e:
                assert e.error == "wamp.error.procedure_already_exists"

            # Shared, round-robin: callees on both nodes take turns.
            rr = RegisterOptions(invoke="roundrobin")
            await callee_a.register(lambda: "a", f"cl.{RUN}.work", options=rr)
            await callee_b.register(lambda: "b", f"cl.{RUN}.work", options=rr)
            got = [await caller.call(f"cl.{RUN}.work") for _ in range(10)]
            assert sorted(got) == ["a"] * 5 + ["b"] * 5, got
        finally:
            await force_close(caller)
            await force_close(callee_a)
            await force_close(callee_b)

    run(body())


def test_retained_values_cross_nodes(cluster):
    (_, mqtt_a), (url_b, mqtt_b) = cluster
    topic = f"cl/{RUN}/ret"
    pub, _ = paho_client(mqtt_a, "retainer")
    try:
        pub.publish(topic, '"hello"', qos=1, retain=True).wait_for_publish(STEP_TIMEOUT)
    finally:
        pub.loop_stop()
        pub.disconnect()

    # A new MQTT subscriber on b gets it as retained (once the keys
    # bucket has carried it there: poll with fresh subscribers).
    deadline = time.time() + STEP_TIMEOUT
    got = None
    while got is None:
        assert time.time() < deadline, "the retained value never reached b"
        seen = threading.Event()
        box = []

        def on_message(client, userdata, msg):
            box.append((msg.payload.decode(), msg.retain))
            seen.set()

        sub, subscribed = paho_client(mqtt_b, "late", on_message)
        try:
            sub.subscribe(topic, qos=1)
            assert subscribed.wait(STEP_TIMEOUT), "SUBACK"
            if seen.wait(0.3):
                got = box[0]
        finally:
            sub.loop_stop()
            sub.disconnect()
    assert got == ('"hello"', True)

    # And a WAMP subscriber on b with get_retained.
    async def body():
        s = await open_session(SERIALIZERS["json"], url=url_b)
        try:
            inbox = Inbox()
            await s.subscribe(inbox.handler(), f"cl.{RUN}.ret", options=SubscribeOptions(get_retained=True))
            deadline = time.time() + STEP_TIMEOUT
            while not inbox.items:
                assert time.time() < deadline, "no retained EVENT on b"
                await asyncio.sleep(0.05)
            assert inbox.items[0][1] == ("hello",)
        finally:
            await force_close(s)

    run(body())


def test_a_lock_has_one_holder_across_nodes(cluster):
    """Two autobahn sessions, one per node, take one fresh lock at once
    (`when: null`, fox-wamp's key option): exactly one is accepted."""
    from test_keys import NOT_ACCEPTED, publish

    (url_a, _), (url_b, _) = cluster

    async def body():
        on_a = await open_session(SERIALIZERS["json"], url=url_a)
        on_b = await open_session(SERIALIZERS["msgpack"], url=url_b)
        try:
            for i in range(10):
                key = f"cl.{RUN}.lock{i}"
                got = await asyncio.gather(
                    publish(on_a, key, "a", when=None), publish(on_b, key, "b", when=None), return_exceptions=True
                )
                won = [name for name, g in zip("ab", got) if not isinstance(g, BaseException)]
                assert len(won) == 1, f"lock {i}: accepted on {won} ({got})"
                assert all(isinstance(g, NOT_ACCEPTED) for g in got if isinstance(g, BaseException)), got
        finally:
            await force_close(on_a)
            await force_close(on_b)

    run(body())


def test_an_mqtt_session_moves_between_nodes(cluster):
    """paho: a persistent session made on a, the client reconnects to b:
    b says the session is present, the connection on a is closed, and a
    QoS 1 message published on a reaches the client on b."""
    (_, mqtt_a), (_, mqtt_b) = cluster
    client_id = f"roamer-{RUN}"
    topic = f"cl/{RUN}/roam"

    def connect(addr, on_message=None):
        host, port = addr.rsplit(":", 1)
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311,
                        clean_session=False)
        connected, dropped = threading.Event(), threading.Event()
        flags = {}

        def on_connect(client, userdata, connect_flags, reason, props):
            flags["present"] = connect_flags.session_present
            connected.set()

        c.on_connect = on_connect
        c.on_disconnect = lambda *a: dropped.set()
        subscribed = threading.Event()
        c.on_subscribe = lambda *a: subscribed.set()
        if on_message:
            c.on_message = on_message
        c.reconnect_delay_set(60, 60)  # no quick reconnect fight after a takeover
        c.connect(host, int(port))
        c.loop_start()
        assert connected.wait(STEP_TIMEOUT), "CONNACK"
        return c, flags, dropped, subscribed

    first, flags, dropped, subscribed = connect(mqtt_a)
    try:
        assert flags["present"] is False
        first.subscribe(topic, qos=1)
        assert subscribed.wait(STEP_TIMEOUT), "SUBACK"
        got = []
        arrived = threading.Event()

        def on_message(client, userdata, msg):
            got.append((msg.payload.decode(), msg.qos))
            arrived.set()

        second, flags2, _, _ = connect(mqtt_b, on_message)
        try:
            assert flags2["present"] is True, "the session came over from a"
            assert dropped.wait(STEP_TIMEOUT), "the connection on a was taken over"
            first.loop_stop()
            pub, _ = paho_client(mqtt_a, "roam-pub")
            try:
                pub.publish(topic, "42", qos=1).wait_for_publish(STEP_TIMEOUT)
            finally:
                pub.loop_stop()
                pub.disconnect()
            assert arrived.wait(STEP_TIMEOUT), "the moved subscription delivers on b"
            assert got == [("42", 1)]
        finally:
            second.loop_stop()
            second.disconnect()
    finally:
        first.loop_stop()


def test_the_session_meta_api_answers_for_both_nodes(cluster):
    """autobahn: wamp.session.count / list / get on node a see a session
    on node b (heartbeats tell a how many workers b has: poll briefly)."""
    (url_a, _), (url_b, _) = cluster

    async def body():
        asker = await open_session(SERIALIZERS["json"], url=url_a)
        on_b = await open_session(SERIALIZERS["msgpack"], url=url_b)
        try:
            deadline = time.time() + STEP_TIMEOUT
            while await asker.call("wamp.session.count") < 2:
                assert time.time() < deadline, "the count never covered node b"
                await asyncio.sleep(0.1)
            listed = await asker.call("wamp.session.list")
            assert on_b._session_id in listed and asker._session_id in listed
            details = await asker.call("wamp.session.get", on_b._session_id)
            assert details["session"] == on_b._session_id
        finally:
            await force_close(asker)
            await force_close(on_b)

    run(body())


def test_a_shared_subscription_is_one_group_across_nodes(cluster):
    """paho: members of one shared subscription on a and on b; twenty
    QoS 1 messages published on a reach the group once each, the two
    nodes taking turns."""
    (_, mqtt_a), (_, mqtt_b) = cluster
    topic = f"cl/{RUN}/shared"
    got = {"a": [], "b": []}
    lock = threading.Lock()
    done = threading.Event()

    def member(name):
        def on_message(client, userdata, msg):
            with lock:
                got[name].append(msg.payload.decode())
                if len(got["a"]) + len(got["b"]) >= 20:
                    done.set()
        return on_message

    members = []
    try:
        for name, addr in (("a", mqtt_a), ("b", mqtt_b)):
            c, subscribed = paho_client(addr, f"share-{name}", member(name))
            members.append(c)
            c.subscribe(f"$share/g{RUN}/{topic}", qos=1)
            assert subscribed.wait(STEP_TIMEOUT), "SUBACK"
        pub, _ = paho_client(mqtt_a, "share-pub")
        try:
            for i in range(20):
                pub.publish(topic, str(i), qos=1).wait_for_publish(STEP_TIMEOUT)
        finally:
            pub.loop_stop()
            pub.disconnect()
        assert done.wait(STEP_TIMEOUT), f"the group got every message: {got}"
        time.sleep(0.5)  # and no second copy
        with lock:
            assert sorted(got["a"] + got["b"], key=int) == [str(i) for i in range(20)], got
            assert got["a"] and got["b"], f"both nodes take turns: {got}"
    finally:
        for c in members:
            c.loop_stop()
            c.disconnect()


def test_subscribe_after_replays_both_nodes_history(cluster):
    """autobahn: subscribe `after` on node a replays the events after the
    anchor from both nodes' histories (each node keeps its own publishers'
    events; these are kept for `trace: true`), then goes live, each once."""
    (url_a, _), (url_b, _) = cluster
    topic = f"cl.{RUN}.hist"

    async def body():
        from test_keys import publish as raw_options_publish
        from test_keys import raw_subscribe

        on_a = await open_session(SERIALIZERS["json"], url=url_a)
        on_b = await open_session(SERIALIZERS["msgpack"], url=url_b)
        try:
            # Until node a knows b's workers (the heartbeats tell it).
            deadline = time.time() + STEP_TIMEOUT
            while await on_a.call("wamp.session.count") < 2:
                assert time.time() < deadline, "node a never learned of node b"
                await asyncio.sleep(0.1)
            ids = []
            for i, p in enumerate([on_a, on_b, on_a, on_b]):
                published = await raw_options_publish(p, topic, i, trace=True, retain=False)
                ids.append(published.id)
                await asyncio.sleep(0.01)
            got = Inbox()
            await raw_subscribe(on_a, topic, got, {"after": ids[0]})
            await raw_options_publish(on_b, topic, 4, trace=True, retain=False)
            items = await got.wait_for_count(4)
            await asyncio.sleep(0.3)
            assert [i[1] for i in items] == [(1,), (2,), (3,), (4,)], got.items
            assert len(got.items) == 4, got.items
        finally:
            await force_close(on_a)
            await force_close(on_b)

    run(body())


def test_a_dead_nodes_persistent_session_keeps_what_comes_for_it(cluster_procs):
    """paho (MQTT 5, session expiry 300 s): a persistent session on node b
    goes offline, messages are queued for it there, b is killed; the
    survivor a takes the session in with them, so they and the QoS 1
    messages published on a from then on wait for the client, which comes
    back to a, finds its session present and gets them in order."""
    (_, mqtt_a, _), (_, mqtt_b, proc_b) = cluster_procs
    topic = f"cl/{RUN}/kept"
    host, port = mqtt_b.rsplit(":", 1)
    cid = f"keeper-{RUN}"
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    sub.connect(host, int(port), clean_start=False, properties=props)
    sub.loop_start()
    sub.subscribe(topic, qos=1)
    assert subscribed.wait(STEP_TIMEOUT), "SUBACK"
    sub.disconnect()
    sub.loop_stop()
    # Queued on b for the offline session before b dies: kept in the
    # cluster's queues stream, they come with the session.
    pub, _ = paho_client(mqtt_a, "kept-pub")
    for n in (-3, -2, -1):
        pub.publish(topic, str(n), qos=1).wait_for_publish(STEP_TIMEOUT)
    time.sleep(0.5)
    proc_b.kill()
    proc_b.wait()
    # Published on a until well past the verdict on b (about 2 s, 6 s at most).
    last = 0
    until = time.time() + 9
    while time.time() < until:
        last += 1
        pub.publish(topic, str(last), qos=1).wait_for_publish(STEP_TIMEOUT)
        time.sleep(0.1)
    pub.loop_stop()
    pub.disconnect()

    got = []
    done = threading.Event()

    def on_message(client, userdata, msg):
        got.append(int(msg.payload))
        if got[-1] == last:
            done.set()

    present = []
    back = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
    back.on_message = on_message
    back.on_connect = lambda c, u, flags, rc, p: present.append(flags.session_present)
    host, port = mqtt_a.rsplit(":", 1)
    back.connect(host, int(port), clean_start=False, properties=props)
    back.loop_start()
    try:
        assert done.wait(STEP_TIMEOUT), f"the messages queued for the session: {got}"
        assert present == [True]
        assert got[:3] == [-3, -2, -1], f"what b had queued first: {got}"
        live = got[3:]
        assert live == list(range(live[0], last + 1)), "in order, no gap, up to the last"
        assert live[0] < last - 20, f"taken in soon after the verdict (from {live[0]} of {last})"
    finally:
        back.loop_stop()
        back.disconnect()
