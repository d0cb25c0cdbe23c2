"""MQTT over TLS (issue 10) with paho-mqtt: the suite's router has an
MQTT-over-TLS listener (``FENNEC_MQTT_TLS``) whose certificate the test CA
(``FENNEC_CA``) signed; a TLS client and a plain one exchange messages,
and a client that does not trust the CA fails."""

import os
import ssl

import paho.mqtt.client as mqtt
import pytest

from test_mqtt_paho import Client, broker, clients, uid  # noqa: F401  (fixtures)

TLS = os.environ.get("FENNEC_MQTT_TLS")
pytestmark = pytest.mark.skipif(not TLS, reason="FENNEC_MQTT_TLS is not set (no MQTT TLS listener)")


def tls_broker():
    host, _, port = TLS.rpartition(":")
    return host, int(port)


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5"])
def test_a_tls_client_and_a_plain_one(clients, version):
    secure = clients(uid("tls"), broker=tls_broker(), version=version)
    secure.c.tls_set(ca_certs=os.environ["FENNEC_CA"])
    secure.connect()
    plain = clients(uid("plain"), version=version)
    plain.connect()
    topic = f"tls/{uid('t')}"
    assert secure.subscribe(topic).is_failure is False
    plain.publish(topic, b"through TLS")
    assert secure.recv().payload == b"through TLS"
    assert plain.subscribe(topic + "/back").is_failure is False
    secure.publish(topic + "/back", b"and back")
    assert plain.recv().payload == b"and back"


def test_a_client_that_does_not_trust_the_ca_fails(clients):
    c = clients(uid("untrusting"), broker=tls_broker())
    c.c.tls_set(ca_certs=None)  # the system's CAs only
    with pytest.raises(ssl.SSLError):
        c.c.connect(c.host, c.port, keepalive=30)
