"""MQTT conformance cases (issue 7) with the Eclipse Paho Python client, where
paho can express them: MQTT 3.1, PUBACK 0x10, the client's maximum packet
size, the topic level bound, and ``$SYS``. The byte-level cases (malformed
strings and properties) are in ``tests/mqtt_conformance.rs``.

Run by ``tests/autobahn.rs`` (``paho_mqtt_interop_suite``) against a router
with its default configuration (``$SYS`` every 10 s, 256 topic levels).
"""

import queue

import paho.mqtt.client as mqtt

from test_mqtt_paho import STEP, broker, clients, connected, uid  # noqa: F401 (fixtures)


def test_mqtt31_client_talks_to_v5_and_v311(clients):
    topic = uid("v31") + "/x"
    old = connected(clients, version=mqtt.MQTTv31)
    assert old.subscribe(topic, qos=1) == 1
    new = connected(clients)
    new.subscribe(topic + "/back", qos=1)
    new.publish(topic, b"to 3.1", qos=1)
    msg = old.recv()
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"to 3.1", 1)
    old.publish(topic + "/back", b"from 3.1", qos=2)
    msg = new.recv()
    assert (msg.topic, msg.payload) == (topic + "/back", b"from 3.1")


def test_puback_reason_no_matching_subscribers(clients):
    pub = connected(clients)
    codes = queue.Queue()
    pub.c.on_publish = lambda c, u, mid, rc, p: codes.put((mid, rc))
    topic = uid("nobody") + "/x"
    # (For QoS 2 paho reports the PUBCOMP's code, which has no 0x10: the
    # PUBREC's is checked byte for byte in tests/mqtt_conformance.rs.)
    info = pub.c.publish(topic, b"x", qos=1)
    mid, rc = codes.get(timeout=STEP)
    assert mid == info.mid and rc.value == 0x10, str(rc)
    sub = connected(clients)
    sub.subscribe(topic, qos=1)
    info = pub.c.publish(topic, b"x", qos=1)
    mid, rc = codes.get(timeout=STEP)
    assert mid == info.mid and rc.value == 0, str(rc)
    assert sub.recv().payload == b"x"


def test_message_over_maximum_packet_size_is_skipped(clients):
    topic = uid("mps") + "/x"
    sub = connected(clients, connect_props={"MaximumPacketSize": 80, "ReceiveMaximum": 1})
    sub.subscribe(topic, qos=1)
    pub = connected(clients)
    pub.publish(topic, b"x" * 200, qos=1)
    pub.publish(topic, b"fits", qos=1)
    assert sub.recv().payload == b"fits"
    sub.quiet()


def test_topic_with_too_many_levels_is_refused(clients):
    c = connected(clients)
    assert c.subscribe("/".join(["l"] * 300), qos=0).value == 0x8F
    c.c.publish("/".join(["l"] * 300), b"x", qos=0)
    rc, _ = c.disconnected.get(timeout=STEP)
    assert rc.value == 0x90, str(rc)


def test_sys_topics_are_retained_and_read_only(clients):
    reader = connected(clients, version=mqtt.MQTTv311)
    reader.subscribe("$SYS/broker/version", qos=0)
    msg = reader.recv()
    assert msg.retain and msg.payload.startswith(b"fennec version "), msg.payload
    spoofer = connected(clients)
    codes = queue.Queue()
    spoofer.c.on_publish = lambda c, u, mid, rc, p: codes.put(rc)
    spoofer.c.publish("$SYS/broker/version", b"spoof", qos=1)
    assert codes.get(timeout=STEP).value == 0x87
    reader.quiet()
