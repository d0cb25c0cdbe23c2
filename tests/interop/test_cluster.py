"""Two nodes of a cluster (issue 15, docs/CLUSTER.md) with autobahn and
paho: this test starts nats-server with JetStream and two routers of its
own (``FENNEC_BIN``, ``--cluster``), and checks that publications cross
nodes in order, WAMP to WAMP (MessagePack publisher, JSON subscriber) and
MQTT to WAMP and MQTT, with the WAMP publisher left out of its own
events. Skipped where there is no nats-server, except under CI."""

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import paho.mqtt.client as paho
import pytest
from autobahn.wamp.types import PublishOptions, SubscribeOptions

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


@pytest.fixture
def cluster():
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
                nodes.append((url, mqtt))
            yield nodes
        finally:
            for p in reversed(procs):
                p.kill()
                p.wait()


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
