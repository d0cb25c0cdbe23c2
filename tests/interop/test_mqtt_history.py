"""Event history from MQTT (issue 9): a publication to a history topic
(tests/interop/fennec.toml) is kept at QoS 1 and 2, not at QoS 0, and a WAMP
session reads it with wamp.subscription.get_events. Runs in the paho suite
(a router with MQTT)."""

import asyncio
import os

import paho.mqtt.client as paho

from helpers import SERIALIZERS, Sessions, run
from test_history import RUN, history_of


def test_mqtt_publications_at_qos_1_are_kept():
    host, port = os.environ["FENNEC_MQTT"].rsplit(":", 1)

    async def body():
        topic = f"com/fennec/hist/{RUN}/m"
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"hist-{RUN}")
        c.connect(host, int(port))
        c.loop_start()
        try:
            c.publish(topic, b"qos0", qos=0).wait_for_publish(5)
            c.publish(topic, b"qos1", qos=1).wait_for_publish(5)
        finally:
            c.loop_stop()
            c.disconnect()
        await asyncio.sleep(0.3)
        async with Sessions() as ss:
            reader = await ss.open(SERIALIZERS["json"])
            _, events = await history_of(reader, topic.replace("/", "."))
            # (A payload that is not JSON reaches WAMP as binary.)
            assert [e["args"] for e in events] == [[b"qos1"]]

    run(body())
