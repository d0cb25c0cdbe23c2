"""The aggregate engine and reducers survive SIGKILL (issue 14), with paho
and autobahn: this test starts a router of its own (``FENNEC_BIN``, two
workers, ``--durability sync``, the suite's configuration), feeds it
invoices from paho (amending some) and counts from autobahn through the
built-in sum reducer, kills it with SIGKILL, starts it again on the same
data directory, and reads every total back with autobahn: each is exact,
to the cent, and the engine goes on from there."""

import os
import signal
import subprocess
import tempfile
import time
from decimal import Decimal

import paho.mqtt.client as paho
from autobahn.wamp.types import PublishOptions

from helpers import SERIALIZERS, force_close, open_session, retained_value, run
from test_mqtt_reducers import mqtt_client

RUN = f"r{int(time.time() * 1000) % 10**9}"
HERE = os.path.dirname(os.path.abspath(__file__))


def start(data):
    """The router on `data`; (process, ws URL, MQTT host:port)."""
    binary = os.environ.get("FENNEC_BIN")
    assert binary, "FENNEC_BIN names the router binary (tests/autobahn.rs sets it)"
    p = subprocess.Popen(
        [binary, "--cores", "2", "--no-pin", "--listen", "127.0.0.1:0", "--mqtt", "127.0.0.1:0",
         "--data", data, "--durability", "sync", "--config", os.path.join(HERE, "fennec.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = mqtt = None
    while url is None or mqtt is None:
        line = p.stdout.readline()
        assert line, "the router printed its listeners"
        if line.startswith("fennec listening on ws://"):
            url = "ws://" + line.split("ws://", 1)[1].split()[0]
        if line.startswith("fennec MQTT listening on mqtt://"):
            mqtt = line.split("mqtt://", 1)[1].split()[0]
    return p, url, mqtt


def test_totals_and_reduced_values_survive_sigkill():
    with tempfile.TemporaryDirectory() as data:
        survive_sigkill(data)


def survive_sigkill(data):
    proc, url, mqtt = start(data)
    expected = {}
    try:
        c, publish = mqtt_client(paho.MQTTv5, "restart", mqtt)
        try:
            invoices = {}
            for i in range(120):
                customer, date = f"k{i % 5}-{RUN}", f"2024-03-{i % 17 + 1:02d}"
                amount = f"{i * 7 % 100}.{i % 100:02d}"
                assert publish("invoice", {"date": date, "customer": customer, "amount": amount, "type": "sale"}) == 0
                invoices[(date, customer)] = Decimal(amount)
            for (_, customer), amount in invoices.items():
                expected[customer] = expected.get(customer, Decimal("0.00")) + amount
        finally:
            c.loop_stop()
            c.disconnect()

        async def count():
            s = await open_session(SERIALIZERS["msgpack"], url=url)
            for n in range(1, 31):
                await s.publish(f"com.fennec.reduce.sum.{RUN}", {"amount": n}, options=PublishOptions(acknowledge=True))
            await force_close(s)

        run(count())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    proc, url, _ = start(data)
    try:
        async def check():
            s = await open_session(SERIALIZERS["json"], url=url)
            for customer, total in expected.items():
                row = await retained_value(s, f"detail.{customer}")
                assert Decimal(row["total"]) == total and row["total"] == str(total), (customer, row, total)
            assert await retained_value(s, f"com.fennec.reduce.sum.{RUN}") == sum(range(1, 31))
            await force_close(s)

        run(check())
    finally:
        proc.terminate()
        proc.wait()
