"""MQTT 5 interop tests against Fennec with the Eclipse Paho Python client.

The router's MQTT listener is given by ``FENNEC_MQTT`` (``host:port``) and
its WAMP URL by ``FENNEC_URL`` (MQTT over WebSocket is served at ``/mqtt``
on the same port).  ``tests/autobahn.rs`` starts a fresh ``fennec`` and
runs this file with both set; the WAMP-only suite leaves it out.

Every test uses its own client IDs and topics, so the tests can share one
router.  Every wait has a timeout.
"""

import os
import queue
import socket
import time
import uuid
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

STEP = float(os.environ.get("FENNEC_INTEROP_STEP_TIMEOUT", "10"))
QUIET = 0.3


@pytest.fixture
def broker():
    addr = os.environ.get("FENNEC_MQTT")
    if not addr:
        pytest.fail(
            "FENNEC_MQTT is not set: start a router and set FENNEC_MQTT=127.0.0.1:PORT "
            "(or run `cargo test --test autobahn paho`, which does both)"
        )
    host, _, port = addr.rpartition(":")
    return host, int(port)


@pytest.fixture
def ws_broker():
    url = urlparse(os.environ["FENNEC_URL"])
    return url.hostname, url.port


def uid(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def props(kind, **values):
    p = Properties(kind)
    for k, v in values.items():
        setattr(p, k, v)
    return p


class Client:
    """A paho client with its network loop on a thread and blocking waits."""

    def __init__(self, broker, client_id=None, *, version=mqtt.MQTTv5, transport="tcp", ws_path="/mqtt"):
        self.host, self.port = broker
        self.id = client_id or uid("paho")
        self.version = version
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.id,
            protocol=version,
            transport=transport,
            reconnect_on_failure=False,
        )
        if transport == "websockets":
            self.c.ws_set_options(path=ws_path)
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        self.disconnected = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, p: self.acks.put(("connack", flags, rc, p))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.acks.put(("suback", mid, rcs, p))
        self.c.on_unsubscribe = lambda c, u, mid, rcs, p: self.acks.put(("unsuback", mid, rcs, p))
        self.c.on_message = lambda c, u, msg: self.messages.put(msg)
        self.c.on_disconnect = lambda c, u, flags, rc, p: self.disconnected.put((rc, p))

    def _ack(self, kind):
        try:
            got = self.acks.get(timeout=STEP)
        except queue.Empty:
            raise AssertionError(f"{self.id}: no {kind} within {STEP}s") from None
        assert got[0] == kind, f"{self.id}: expected {kind}, got {got}"
        return got

    def connect(self, *, clean_start=True, session_expiry=None, will=None, keepalive=30, connect_props=None):
        """Connects; returns (session_present, CONNACK properties).
        ``connect_props``: more v5 CONNECT properties, by paho name."""
        values = dict(connect_props or {})
        if session_expiry is not None:
            values["SessionExpiryInterval"] = session_expiry
        connect_props = None
        if self.version == mqtt.MQTTv5 and values:
            connect_props = props(PacketTypes.CONNECT, **values)
        if will is not None:
            self.c.will_set(**will)
        kwargs = {"keepalive": keepalive, "properties": connect_props}
        if self.version == mqtt.MQTTv5:
            kwargs["clean_start"] = clean_start
        else:
            assert clean_start, "3.1.1 clients here always use a clean session"
        self.c.connect(self.host, self.port, **kwargs)
        self.c.loop_start()
        _, flags, rc, p = self._ack("connack")
        assert not rc.is_failure, f"{self.id}: CONNACK {rc}"
        return flags.session_present, p

    def subscribe(self, topic, qos=1, sub_id=None, **options):
        """Subscribes one filter; returns its reason code."""
        p = props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id) if sub_id else None
        if self.version == mqtt.MQTTv5:
            _, mid = self.c.subscribe(topic, options=SubscribeOptions(qos=qos, **options), properties=p)
        else:
            _, mid = self.c.subscribe(topic, qos)
        _, got_mid, rcs, _ = self._ack("suback")
        assert got_mid == mid
        return rcs[0]

    def publish(self, topic, payload, qos=1, retain=False, properties=None):
        """Publishes and waits until the flow is complete."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=STEP)
        assert info.is_published(), f"{self.id}: publish to {topic!r} did not complete"

    def recv(self, timeout=STEP):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.id}: no message within {timeout}s") from None

    def quiet(self, timeout=QUIET):
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.id}: unexpected message on {msg.topic}: {msg.payload!r}")

    def disconnect(self, reasoncode=None, properties=None):
        self.c.disconnect(reasoncode=reasoncode, properties=properties)
        self.c.loop_stop()

    def drop(self):
        """Ends the TCP connection without DISCONNECT (the network thread
        sees the socket fail and ends: no reconnect)."""
        self.c.socket().shutdown(socket.SHUT_RDWR)
        self.c.loop_stop()


@pytest.fixture
def clients(broker):
    """Makes clients and stops their network threads at the end of the test."""
    made = []

    def make(client_id=None, **kwargs):
        c = Client(kwargs.pop("broker", broker), client_id, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.c.disconnect()  # wakes the network thread, which then ends
            c.c.loop_stop()
        except Exception:
            pass


def connected(make, client_id=None, **kwargs):
    keys = ("clean_start", "session_expiry", "will", "connect_props")
    connect = {k: kwargs.pop(k) for k in keys if k in kwargs}
    c = make(client_id, **kwargs)
    c.connect(**connect)
    return c


# ---------------------------------------------------------------------------


def test_publish_properties_pass_through(clients):
    topic = uid("props") + "/x"
    sub = connected(clients)
    sub.subscribe(topic, qos=1)
    old = connected(clients, version=mqtt.MQTTv311)
    old.subscribe(topic, qos=1)
    pub = connected(clients)
    p = props(
        PacketTypes.PUBLISH,
        UserProperty=[("a", "1"), ("a", "2"), ("b", "three")],
        ContentType="application/json",
        ResponseTopic=topic + "/reply",
        CorrelationData=b"\x00\x01corr",
        MessageExpiryInterval=60,
        PayloadFormatIndicator=1,
    )
    pub.publish(topic, b'{"x":1}', qos=1, properties=p)
    msg = sub.recv()
    assert (msg.topic, msg.payload, msg.qos) == (topic, b'{"x":1}', 1)
    got = msg.properties
    assert got.UserProperty == [("a", "1"), ("a", "2"), ("b", "three")]
    assert got.ContentType == "application/json"
    assert got.ResponseTopic == topic + "/reply"
    assert got.CorrelationData == b"\x00\x01corr"
    assert got.PayloadFormatIndicator == 1
    assert 58 <= got.MessageExpiryInterval <= 60
    # A 3.1.1 subscriber gets the same message, without properties.
    msg = old.recv()
    assert (msg.topic, msg.payload) == (topic, b'{"x":1}')
    # Request/response with the properties: the responder answers on the response topic.
    sub.subscribe(topic + "/reply", qos=1)
    reply = props(PacketTypes.PUBLISH, CorrelationData=got.CorrelationData)
    pub.publish(got.ResponseTopic, b"answer", qos=1, properties=reply)
    msg = sub.recv()
    assert (msg.topic, msg.payload, msg.properties.CorrelationData) == (topic + "/reply", b"answer", b"\x00\x01corr")


def test_message_expiry(clients):
    base = uid("expiry")
    cid = uid("expiry-sub")
    sub = connected(clients, cid, clean_start=True, session_expiry=60)
    sub.subscribe(base + "/q/#", qos=1)
    sub.disconnect()
    pub = connected(clients)
    short = props(PacketTypes.PUBLISH, MessageExpiryInterval=1)
    longer = props(PacketTypes.PUBLISH, MessageExpiryInterval=30)
    # Queued for the offline session, and retained.
    pub.publish(base + "/q/short", b"short", qos=1, properties=short)
    pub.publish(base + "/q/long", b"long", qos=1, properties=longer)
    pub.publish(base + "/q/none", b"none", qos=1)
    pub.publish(base + "/r/short", b"short", qos=1, retain=True, properties=short)
    pub.publish(base + "/r/none", b"none", qos=1, retain=True)
    time.sleep(2.1)
    sub = connected(clients, cid, clean_start=False, session_expiry=60)
    got = [sub.recv() for _ in range(2)]
    assert [m.topic for m in got] == [base + "/q/long", base + "/q/none"], "the expired message is not delivered"
    # The expiry interval sent on is what is left of it.
    assert 26 <= got[0].properties.MessageExpiryInterval <= 28
    assert not hasattr(got[1].properties, "MessageExpiryInterval")
    sub.quiet()
    late = connected(clients)
    late.subscribe(base + "/r/+", qos=1)
    msg = late.recv()
    assert (msg.topic, msg.payload, msg.retain) == (base + "/r/none", b"none", True)
    late.quiet()


def test_subscription_identifiers(clients):
    base = uid("subid")
    sub = connected(clients)
    sub.subscribe(base + "/+", qos=1, sub_id=5)
    sub.subscribe(base + "/#", qos=1, sub_id=7)
    sub.subscribe(base + "/plain", qos=1)
    pub = connected(clients)
    pub.publish(base + "/a", b"a")
    msg = sub.recv()
    assert msg.topic == base + "/a"
    assert sorted(msg.properties.SubscriptionIdentifier) == [5, 7], "one copy with both identifiers"
    pub.publish(base + "/a/b", b"ab")
    msg = sub.recv()
    assert (msg.topic, msg.properties.SubscriptionIdentifier) == (base + "/a/b", [7])
    sub.quiet()
    # Identifiers go with retained messages sent on subscribe too.
    pub.publish(base + "/ret/x", b"kept", retain=True)
    assert sub.recv().payload == b"kept"  # live, through the /# subscription
    sub.subscribe(base + "/ret/+", qos=1, sub_id=42)
    msg = sub.recv()
    assert (msg.payload, msg.retain, msg.properties.SubscriptionIdentifier) == (b"kept", True, [42])


def test_no_local(clients):
    topic = uid("nolocal") + "/t"
    a = connected(clients)
    a.subscribe(topic, qos=1, noLocal=True)
    b = connected(clients)
    b.subscribe(topic, qos=1)
    a.publish(topic, b"from a")
    b.publish(topic, b"from b")
    # a does not get its own message; b (without no-local) gets both.
    assert a.recv().payload == b"from b"
    a.quiet()
    assert [b.recv().payload for _ in range(2)] == [b"from a", b"from b"]


def test_retain_as_published(clients):
    topic = uid("rap") + "/t"
    kept = connected(clients)
    kept.subscribe(topic, qos=1, retainAsPublished=True)
    cleared = connected(clients)
    cleared.subscribe(topic, qos=1, retainAsPublished=False)
    pub = connected(clients)
    pub.publish(topic, b"r", retain=True)
    pub.publish(topic, b"n", retain=False)
    assert [(m.payload, m.retain) for m in (kept.recv(), kept.recv())] == [(b"r", True), (b"n", False)]
    assert [(m.payload, m.retain) for m in (cleared.recv(), cleared.recv())] == [(b"r", False), (b"n", False)]


def test_retain_handling(clients):
    topic = uid("rh") + "/t"
    pub = connected(clients)
    pub.publish(topic, b"retained", retain=True)
    sub = connected(clients)
    # 2: never send retained messages on subscribe.
    sub.subscribe(topic, qos=1, retainHandling=2)
    pub.publish(topic, b"live 1")
    msg = sub.recv()
    assert (msg.payload, msg.retain) == (b"live 1", False), "retain handling 2 sent the retained message"
    other = connected(clients)
    # 1: only for a new subscription.
    other.subscribe(topic, qos=1, retainHandling=1)
    msg = other.recv()
    assert (msg.payload, msg.retain) == (b"retained", True)
    other.subscribe(topic, qos=1, retainHandling=1)
    other.quiet()
    # 0: on every subscribe.
    other.subscribe(topic, qos=1, retainHandling=0)
    msg = other.recv()
    assert (msg.payload, msg.retain) == (b"retained", True)
    sub.quiet()


def test_topic_alias_from_client(clients):
    base = uid("alias")
    sub = connected(clients)
    sub.subscribe(base + "/#", qos=1)
    pub = clients()
    _, connack = pub.connect()
    assert getattr(connack, "TopicAliasMaximum", 0) >= 1, f"CONNACK: {connack}"
    alias = lambda n: props(PacketTypes.PUBLISH, TopicAlias=n)  # noqa: E731
    pub.publish(base + "/x", b"1", properties=alias(1))  # sets alias 1
    pub.publish("", b"2", properties=alias(1))  # uses it
    pub.publish(base + "/y", b"3", properties=alias(1))  # remaps it
    pub.publish("", b"4", properties=alias(1))
    pub.publish(base + "/z", b"5", properties=alias(2))
    pub.publish("", b"6", properties=alias(1))
    pub.publish("", b"7", properties=alias(2))
    msgs = [sub.recv() for _ in range(7)]
    x, y, z = base + "/x", base + "/y", base + "/z"
    got = [(m.topic, m.payload) for m in msgs]
    assert got == [(x, b"1"), (x, b"2"), (y, b"3"), (y, b"4"), (z, b"5"), (y, b"6"), (z, b"7")]
    # The publisher's aliases are its own: subscribers (which allow none) get full topics.
    assert not any(hasattr(m.properties, "TopicAlias") for m in msgs)


def test_session_expiry(clients):
    base = uid("session")
    pub = connected(clients)

    # Expiry 30: the session outlives the connection; messages wait for it.
    cid = uid("sx30")
    c = connected(clients, cid, session_expiry=30)
    c.subscribe(base + "/a", qos=1)
    c.disconnect()
    pub.publish(base + "/a", b"while away")
    c = clients(cid)
    present, _ = c.connect(clean_start=False, session_expiry=30)
    assert present
    assert c.recv().payload == b"while away"
    # DISCONNECT can change the expiry: 0 ends the session with the connection.
    c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    c = clients(cid)
    present, _ = c.connect(clean_start=False, session_expiry=30)
    assert not present, "session expiry set to 0 at DISCONNECT"
    c.disconnect()

    # Expiry 0 (the default): no session after the connection.
    cid = uid("sx0")
    c = connected(clients, cid)
    c.subscribe(base + "/b", qos=1)
    c.disconnect()
    c = clients(cid)
    present, _ = c.connect(clean_start=False)
    assert not present

    # Expiry 1: gone after a second.
    cid = uid("sx1")
    c = connected(clients, cid, session_expiry=1)
    c.subscribe(base + "/c", qos=1)
    c.disconnect()
    time.sleep(2.1)
    pub.publish(base + "/c", b"too late")
    c = clients(cid)
    present, _ = c.connect(clean_start=False, session_expiry=1)
    assert not present, "the session expired"
    c.quiet()

    # clean_start=True discards a live session.
    cid = uid("sxclean")
    c = connected(clients, cid, session_expiry=30)
    c.subscribe(base + "/d", qos=1)
    c.disconnect()
    c = clients(cid)
    present, _ = c.connect(clean_start=True, session_expiry=30)
    assert not present
    pub.publish(base + "/d", b"not subscribed any more")
    c.quiet()


def test_will_delay_and_cancel(clients):
    base = uid("willdelay")
    watcher = connected(clients)
    watcher.subscribe(base + "/#", qos=1)
    will_props = props(PacketTypes.WILLMESSAGE, WillDelayInterval=1)
    will = {"topic": base + "/w", "payload": b"gone", "qos": 1, "properties": will_props}

    # Dropped: the will comes after its delay, not at once.
    c = connected(clients, will=will, session_expiry=10)
    t0 = time.monotonic()
    c.drop()
    msg = watcher.recv(timeout=5)
    waited = time.monotonic() - t0
    assert (msg.topic, msg.payload) == (base + "/w", b"gone")
    assert 0.8 <= waited <= 3.0, f"will after {waited:.2f}s, delay was 1s"

    # Dropped, then back within the delay: no will.
    cid = uid("willback")
    c = connected(clients, cid, will=dict(will, topic=base + "/cancelled"), session_expiry=10)
    c.drop()
    c = clients(cid)
    present, _ = c.connect(clean_start=False, session_expiry=10)
    assert present
    watcher.quiet(1.5)


def test_will_on_disconnect_with_will_message_reason(clients):
    """DISCONNECT 0x04 ("disconnect with will message") publishes the will;
    a plain DISCONNECT does not."""
    base = uid("will04")
    watcher = connected(clients)
    watcher.subscribe(base + "/#", qos=1)
    c = connected(clients, will={"topic": base + "/plain", "payload": b"x", "qos": 1})
    c.disconnect()
    c = connected(clients, will={"topic": base + "/with-will", "payload": b"bye", "qos": 1})
    c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
    msg = watcher.recv()
    assert (msg.topic, msg.payload) == (base + "/with-will", b"bye")
    watcher.quiet()


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5"])
def test_mqtt_over_websocket(clients, ws_broker, version):
    base = uid("ws")
    ws = connected(clients, broker=ws_broker, transport="websockets", version=version)
    assert ws.subscribe(base + "/#", qos=2).value == 2
    tcp = connected(clients)
    tcp.subscribe(base + "/from-ws", qos=1)
    tcp.publish(base + "/from-tcp", b"over tcp", qos=2)
    msg = ws.recv()
    assert (msg.topic, msg.payload, msg.qos) == (base + "/from-tcp", b"over tcp", 2)
    big = bytes(range(256)) * 300  # spans several WebSocket frames' worth
    ws.publish(base + "/from-ws", big, qos=1)
    msg = tcp.recv()
    assert (msg.topic, msg.payload) == (base + "/from-ws", big)
    assert ws.recv().payload == big  # ws's own /# subscription
    ws.disconnect()


def test_disconnect_with_reason_code_success_discards_the_will(clients):
    """``disconnect(reasoncode=0x00)`` (paho sends a DISCONNECT of remaining
    length 1: the reason code, no property length, which MQTT 5 3.14.2.2.1
    allows) is a normal disconnect: the will is discarded.  Found: the broker
    answers DISCONNECT 0x81 (malformed) and publishes the will (paho, already
    disconnecting, does not report the broker's DISCONNECT)."""
    base = uid("will00")
    watcher = connected(clients)
    watcher.subscribe(base + "/#", qos=1)
    c = connected(clients, will={"topic": base + "/w", "payload": b"should not be sent", "qos": 1})
    c.c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x00))
    try:
        c.disconnected.get(timeout=STEP)
    except queue.Empty:
        raise AssertionError("the connection did not end after DISCONNECT") from None
    c.c.loop_stop()
    watcher.quiet(1.0)
