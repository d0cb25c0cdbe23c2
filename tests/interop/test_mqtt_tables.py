"""The aggregate engine fed from MQTT and watched from WAMP (issue 14):
tests/interop/tables.json is fox-wamp's README example as written
(invoices summed into a total per customer, sales only). paho publishes
invoices, amends them and sends bad ones; autobahn watches the customer's
`detail` row change and reads it again with get_retained; a paho
subscriber gets the rows as JSON. Runs in the paho suite (a router with
MQTT, two workers)."""

import json
import os
import time

import paho.mqtt.client as paho

from helpers import SERIALIZERS, Inbox, Sessions, retained_value, run
from test_mqtt_reducers import mqtt_client

RUN = f"r{int(time.time() * 1000) % 10**9}"


def invoice(date, customer, amount, kind="sale"):
    return {"date": date, "customer": customer, "amount": amount, "type": kind}


def test_invoices_from_mqtt_keep_exact_totals_for_a_wamp_watcher():
    customer = f"acme-{RUN}"

    async def body():
        async with Sessions() as ss:
            watcher = await ss.open(SERIALIZERS["json"])
            live = Inbox()
            await watcher.subscribe(live.handler(), f"detail.{customer}")
            c, publish = mqtt_client(paho.MQTTv5, "inv")
            try:
                assert publish("invoice", invoice("2024-01-05", customer, "12.50")) == 0
                assert publish("invoice", invoice("2024-01-06", customer, "0.10")) == 0
                assert publish("invoice", invoice("2024-01-07", customer, "0.20")) == 0
                assert publish("invoice", invoice("2024-01-08", customer, "99.99", "refund")) == 0
                # The first invoice amended: its old amount goes.
                assert publish("invoice", invoice("2024-01-05", customer, "10.00")) == 0
                # Refused: not the schema's (amount is a string), no key,
                # not a number, and the totals are the engine's.
                assert publish("invoice", invoice("2024-01-09", customer, 5)) == 0x99
                assert publish("invoice", {"date": "2024-01-09", "amount": "1"}) == 0x99
                assert publish("invoice", invoice("2024-01-09", customer, "ten")) == 0x99
                assert publish(f"detail/{customer}", {"customer": customer, "total": "0"}) == 0x87
            finally:
                c.loop_stop()
                c.disconnect()
            events = await live.wait_for_count(4)
            totals = [args[0]["total"] for (_, args, _, _) in events]
            # 0.10 + 0.20 is 0.30 to the cent, not 0.30000000000000004.
            assert totals == ["12.50", "12.60", "12.80", "10.30"]
            assert await retained_value(watcher, f"detail.{customer}") == {"customer": customer, "total": "10.30"}
            stored = await retained_value(watcher, f"invoice.2024-01-05.{customer}")
            assert stored["amount"] == "10.00"

    run(body())


def test_an_mqtt_subscriber_gets_the_rows_as_json():
    customer = f"globex-{RUN}"
    got = []
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"rows-{RUN}", protocol=paho.MQTTv5)
    sub.on_message = lambda client, userdata, msg: got.append((msg.topic, json.loads(msg.payload)))
    host, port = os.environ["FENNEC_MQTT"].rsplit(":", 1)
    sub.connect(host, int(port))
    sub.loop_start()
    try:
        sub.subscribe(f"detail/{customer}", qos=1)[1]
        time.sleep(0.3)
        c, publish = mqtt_client(paho.MQTTv311, "inv4")
        try:
            assert publish("invoice", invoice("2024-02-01", customer, "1.5")) == 0
            assert publish("invoice", invoice("2024-02-02", customer, "2.25")) == 0
        finally:
            c.loop_stop()
            c.disconnect()
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert got == [
        (f"detail/{customer}", {"customer": customer, "total": "1.5"}),
        (f"detail/{customer}", {"customer": customer, "total": "3.75"}),
    ]
