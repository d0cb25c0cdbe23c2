"""MQTT user names and passwords (issue 10) with paho-mqtt, against the
principals and roles of tests/interop/fennec.toml's `authrealm` (the
realm from the user name, `user@realm`): the password is the principal's
ticket; a wrong one gets CONNACK 0x86 (v5) / 4 (3.1.1), an unlisted one
with no authenticator registered 0x88 / 3, anonymous in a
realm that does not allow it 0x87 / 5; the role authorizes MQTT
publications and subscriptions as it does WAMP's (`a/b` is `a.b`). A
user name the realm does not list is its dynamic authenticator's to
decide (an autobahn backend registers it here): the password is the
ticket, its error CONNACK 0x86."""

import asyncio

import paho.mqtt.client as mqtt
import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import JsonSerializer
from paho.mqtt.reasoncodes import ReasonCode

from helpers import STEP_TIMEOUT, Sessions, run
from test_auth import REALM, authenticated

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
    # An unknown user is the realm's authenticator's to decide; with none
    # registered, the router cannot tell: "server unavailable", try again
    # (test_authenticator.py registers one).
    _, rc = connack(clients, "nobody@authrealm", "x", version)
    assert rc.value == 0x88, f"server unavailable: {rc}"
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


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5"])
def test_the_authenticator_decides_mqtt_passwords(clients, version):
    async def body():
        async with Sessions() as ss:
            backend = await ss.open(JsonSerializer, realm=REALM, session_cls=authenticated(["ticket"], "ticketuser", "ticket-secret"))
            asked = []

            def authenticate(realm, authid, details):
                asked.append((realm, authid, details["authmethod"], details["transport"]["type"]))
                if details.get("ticket") != "open-sesame":
                    raise ApplicationError("com.fennec.denied", "wrong password")
                return {"role": "user", "authid": f"dyn-{authid}"}

            await asyncio.wait_for(backend.register(authenticate, "com.fennec.authn"), STEP_TIMEOUT)
            # paho blocks: on a thread, so that the authenticator (on this
            # loop) can answer.
            loop = asyncio.get_running_loop()
            ok, rc = await loop.run_in_executor(None, connack, clients, "sensor9@authrealm", "open-sesame", version)
            assert not rc.is_failure, rc
            # The role the authenticator named authorizes it: `user` may
            # publish and subscribe on `public.`.
            sub = await loop.run_in_executor(None, ok.subscribe, "public/dyn")
            assert not sub.is_failure, sub
            _, rc = await loop.run_in_executor(None, connack, clients, "sensor9@authrealm", "wrong", version)
            assert rc.value == 0x86, f"refused by the authenticator: {rc}"
            assert asked == [("authrealm", "sensor9", "ticket", "mqtt")] * 2
            # A listed principal is checked by the router.
            _, rc = await loop.run_in_executor(None, connack, clients, "mqttuser@authrealm", "mqtt-secret", version)
            assert not rc.is_failure
            assert len(asked) == 2

    run(body())
