"""Payload passthru mode (WAMP Advanced Profile): PUBLISH, CALL and YIELD
options ``ppt_scheme``, ``ppt_serializer``, ``ppt_cipher`` and
``ppt_keyid`` reach EVENT, INVOCATION and RESULT details unchanged, and the
payload is passed on as it came. Only wampy implements the feature among
the clients here (tests/node covers it); these peers speak WAMP by hand so
that each rule of the spec can be checked: a peer that did not announce
``payload_passthru_mode`` may not use it (protocol violation), and a callee
or caller that does not take it gets ``wamp.error.feature_not_supported``."""

from helpers import run
from test_protocol import ABORT, WELCOME, RawClient

ERROR, PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = 8, 16, 17, 32, 33, 36
CALL, RESULT, REGISTER, REGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 68, 70

PPT = {"ppt_scheme": "x_fennec", "ppt_serializer": "cbor", "ppt_cipher": "xsalsa20poly1305", "ppt_keyid": "key-1"}
ROLES = ("publisher", "subscriber", "caller", "callee")


async def joined(subprotocol="wamp.2.json", ppt=True):
    c = await RawClient(subprotocol).connect()
    features = {"payload_passthru_mode": True} if ppt else {}
    c.send([1, "realm1", {"roles": {r: {"features": features} for r in ROLES}}])
    welcome = await c.recv()
    assert welcome[0] == WELCOME, welcome
    for role in ("broker", "dealer"):
        assert welcome[2]["roles"][role]["features"]["payload_passthru_mode"] is True
    return c


def test_publish_in_passthru_mode_reaches_subscribers_unchanged():
    async def body():
        sub = await joined("wamp.2.cbor")
        pub = await joined("wamp.2.msgpack")
        try:
            topic = "com.fennec.ppt.topic"
            sub.send([SUBSCRIBE, 1, {}, topic])
            subscription = (await sub.recv())[2]
            blob = bytes(range(256))
            pub.send([PUBLISH, 2, {"acknowledge": True, **PPT}, topic, [blob]])
            assert (await pub.recv())[:2] == [PUBLISHED, 2]
            event = await sub.recv()
            assert event[0] == EVENT and event[1] == subscription, event
            assert event[3] == PPT, event
            assert event[4] == [blob]
        finally:
            sub.close()
            pub.close()

    run(body())


def test_call_and_yield_in_passthru_mode():
    async def body():
        callee = await joined()
        caller = await joined("wamp.2.msgpack")
        try:
            uri = "com.fennec.ppt.proc"
            callee.send([REGISTER, 1, {}, uri])
            assert (await callee.recv())[:2] == [REGISTERED, 1]
            caller.send([CALL, 7, dict(PPT), uri, ["\u0000c2VjcmV0"]])
            inv = await callee.recv()
            assert inv[0] == INVOCATION and inv[3] == PPT, inv
            assert inv[4] == ["\u0000c2VjcmV0"]
            answer = {"ppt_scheme": "x_fennec", "ppt_serializer": "native"}
            callee.send([YIELD, inv[1], answer, ["opaque"]])
            result = await caller.recv()
            assert result == [RESULT, 7, answer, ["opaque"]], result
        finally:
            callee.close()
            caller.close()

    run(body())


def test_peers_without_the_feature():
    async def body():
        plain_callee = await joined(ppt=False)
        ppt_callee = await joined()
        caller = await joined()
        plain_caller = await joined(ppt=False)
        try:
            plain_callee.send([REGISTER, 1, {}, "com.fennec.ppt.plain"])
            assert (await plain_callee.recv())[0] == REGISTERED
            ppt_callee.send([REGISTER, 1, {}, "com.fennec.ppt.able"])
            assert (await ppt_callee.recv())[0] == REGISTERED
            # A callee that does not take the mode: an application error.
            caller.send([CALL, 1, dict(PPT), "com.fennec.ppt.plain", []])
            err = await caller.recv()
            assert err[:3] == [ERROR, CALL, 1] and err[4] == "wamp.error.feature_not_supported", err
            # A YIELD in the mode for a caller that does not take it: the
            # callee is told, the caller's call ends with the same error.
            plain_caller.send([CALL, 2, {}, "com.fennec.ppt.able", []])
            inv = await ppt_callee.recv()
            ppt_callee.send([YIELD, inv[1], dict(PPT), ["x"]])
            err = await ppt_callee.recv()
            assert err[:3] == [ERROR, YIELD, inv[1]] and err[4] == "wamp.error.feature_not_supported", err
            err = await plain_caller.recv()
            assert err[:3] == [ERROR, CALL, 2] and err[4] == "wamp.error.feature_not_supported", err
            # A peer that did not announce the mode may not use it.
            plain_caller.send([PUBLISH, 3, dict(PPT), "com.fennec.ppt.topic", []])
            abort = await plain_caller.recv()
            assert abort[0] == ABORT and abort[2] == "wamp.error.protocol_violation", abort
        finally:
            for c in (plain_callee, ppt_callee, caller, plain_caller):
                c.close()

    run(body())


def test_malformed_passthru_options_are_violations():
    async def body():
        for options in ({"ppt_scheme": 5}, {"ppt_serializer": "cbor"}, {"ppt_scheme": ""}):
            c = await joined()
            try:
                c.send([PUBLISH, 1, options, "com.fennec.ppt.topic", []])
                abort = await c.recv()
                assert abort[0] == ABORT and abort[2] == "wamp.error.protocol_violation", (options, abort)
            finally:
                c.close()

    run(body())
