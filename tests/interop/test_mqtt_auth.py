"""MQTT user names and passwords (issue 10) with paho-mqtt, against the
principals and roles of tests/interop/fennec.toml's `authrealm` (the
realm from the user name, `user@realm`): the password is the principal's
ticket; a wrong one gets CONNACK 0x86 (v5) / 4 (3.1.1), anonymous in a
realm that does not allow it 0x87 / 5; the role authorizes MQTT
publications and subscriptions as it does WAMP's (`a/b` is `a.b`)."""

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from test_mqtt_paho import STEP, Client, broker, clients, uid  # noqa: F401  (fixtures)


def connack(make, user, password, version):
    c = make(uid("auth"), version=version)
    if user is not None:
        c.c.username_pw_set(user, password)
    kwargs = {"keepalive": 30}
    if version == mqtt.MQTTv5:
        kwargs["clean_start"] = True
    c.c.connect(c.host, c.port, **kwargs)
    c.c.loop_start()
    _, _, rc, _ = c._ack("connack")
    return c, rc


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5"])
def test_user_names_and_passwords(clients, version):
    c, rc = connack(clients, "mqttuser@authrealm", "mqtt-secret", version)
    assert not rc.is_failure, rc
    # paho reports 3.1.1's CONNACK 4 and 5 as the v5 codes 0x86 and 0x87.
    _, rc = connack(clients, "mqttuser@authrealm", "wrong", version)
    assert rc.value == 0x86, f"bad user name or password: {rc}"
    _, rc = connack(clients, "nobody@authrealm", "x", version)
    assert rc.value == 0x86, f"an unknown user the same: {rc}"
    _, rc = connack(clients, "@authrealm", None, version)
    assert rc.value == 0x87, f"not authorized: {rc}"


def test_the_role_authorizes_mqtt(clients):
    reader, rc = connack(clients, "reader@authrealm", "reader-secret", mqtt.MQTTv5)
    assert not rc.is_failure
    assert reader.subscribe("public/news") == ReasonCode(mqtt.PacketTypes.SUBACK, identifier=1)
    assert reader.subscribe("private/news").value == 0x87, "not authorized"
    # Its publications are refused: PUBACK 0x87.
    info = reader.c.publish("public/news", b"no", qos=1)
    info.wait_for_publish(timeout=STEP)
    reader.quiet()
    user, rc = connack(clients, "mqttuser@authrealm", "mqtt-secret", mqtt.MQTTv5)
    assert not rc.is_failure
    user.publish("public/news", b"yes")
    assert reader.recv().payload == b"yes"
    reader.quiet()
