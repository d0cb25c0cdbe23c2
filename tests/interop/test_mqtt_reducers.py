"""Built-in reducers fed from MQTT (issue 14): tests/interop/fennec.toml
sums the field `amount` of the publications under com.fennec.reduce.sum.
and keeps the maximum under com.fennec.reduce.max.; paho publishes (MQTT 5
and 3.1.1), autobahn reads the totals. A payload the reducer cannot take
gets PUBACK 0x99 (payload format invalid) under MQTT 5. Runs in the paho
suite (a router with MQTT, two workers)."""

import json
import os
import threading
import time

import paho.mqtt.client as paho

from helpers import SERIALIZERS, Inbox, Sessions, retained_value, run

RUN = f"r{int(time.time() * 1000) % 10**9}"


def mqtt_client(protocol, name, addr=None):
    """A connected paho client, and a function that publishes at QoS 1 and
    returns the PUBACK's reason code. `addr`: host:port, by default the
    suite's router (FENNEC_MQTT)."""
    host, port = (addr or os.environ["FENNEC_MQTT"]).rsplit(":", 1)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{name}-{RUN}", protocol=protocol)
    acks = {}
    done = threading.Condition()

    def on_publish(client, userdata, mid, reason_code, properties):
        with done:
            acks[mid] = reason_code
            done.notify_all()

    c.on_publish = on_publish
    c.connect(host, int(port))
    c.loop_start()

    def publish(topic, payload):
        """QoS 1; the PUBACK's reason code (0 under 3.1.1)."""
        info = c.publish(topic, json.dumps(payload), qos=1)
        with done:
            assert done.wait_for(lambda: info.mid in acks, 5), "PUBACK"
            code = acks[info.mid]
        return code.value if hasattr(code, "value") else int(code)

    return c, publish


def test_mqtt_publications_are_summed_and_a_bad_one_is_refused():
    v5, publish5 = mqtt_client(paho.MQTTv5, "sum5")
    v4, publish4 = mqtt_client(paho.MQTTv311, "sum4")
    topic = f"com/fennec/reduce/sum/{RUN}"
    try:
        assert publish5(topic, {"amount": 10}) == 0
        assert publish4(topic, {"amount": 5, "note": "v3.1.1"}) == 0
        assert publish5(topic, {"amount": "lots"}) == 0x99, "payload format invalid"
        assert publish5(topic, {"other": 1}) == 0x99
        # 3.1.1 has no code for it: acknowledged, and not counted in.
        assert publish4(topic, {"amount": None}) == 0
        assert publish5(topic, {"amount": -2.5}) == 0
    finally:
        for c in (v5, v4):
            c.loop_stop()
            c.disconnect()

    async def body():
        async with Sessions() as ss:
            reader = await ss.open(SERIALIZERS["msgpack"])
            assert await retained_value(reader, topic.replace("/", ".")) == 12.5

    run(body())


def test_a_wamp_subscriber_watches_a_maximum_that_mqtt_feeds():
    topic = f"com.fennec.reduce.max.{RUN}"

    async def body():
        async with Sessions() as ss:
            watcher = await ss.open(SERIALIZERS["json"])
            live = Inbox()
            await watcher.subscribe(live.handler(), topic)
            c, publish = mqtt_client(paho.MQTTv5, "max")
            try:
                for reading in [3, 9, 4, 11]:
                    assert publish(topic.replace(".", "/"), reading) == 0
            finally:
                c.loop_stop()
                c.disconnect()
            events = await live.wait_for_count(4)
            assert [args[0] for (_, args, _, _) in events] == [3, 9, 9, 11]
            assert await retained_value(watcher, topic) == 11

    run(body())
