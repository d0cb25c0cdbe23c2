"""Sessions with different serializers talk to each other through the router.

Binary payloads: MessagePack carries them as ``bin``; WAMP-over-JSON carries
them as a string "\\0" + base64 (autobahn does that conversion on its side).
The router has to translate between the two representations.
"""

from autobahn.wamp.types import CallResult, PublishOptions, SubscribeOptions

from helpers import Inbox, Sessions, run

BLOB = bytes(range(256)) + b"\x00\x00fennec\xff"
ARGS = [1, "two", BLOB, b"", {"nested": [1.5, None, True, b"\x00\x01\x02"]}, -(2**40)]
KWARGS = {"bin": b"\xde\xad\xbe\xef", "text": "grüße €", "list": [b"a", "b"], "n": 0}


def test_publish_across_serializers(serializer_pair):
    pub_ser, sub_ser = serializer_pair

    async def body():
        async with Sessions() as ss:
            sub = await ss.open(sub_ser)
            pub = await ss.open(pub_ser)
            inbox = Inbox()
            await sub.subscribe(inbox.handler(), "com.example.mixed", options=SubscribeOptions(details=True))
            await pub.publish(
                "com.example.mixed", *ARGS, options=PublishOptions(acknowledge=True), **KWARGS
            )
            (_, args, kwargs, _), = await inbox.wait_for_count(1)
            assert list(args) == ARGS
            assert kwargs == KWARGS
            assert isinstance(args[2], bytes)
            assert isinstance(kwargs["bin"], bytes)

    run(body())


def test_call_across_serializers(serializer_pair):
    caller_ser, callee_ser = serializer_pair

    async def body():
        async with Sessions() as ss:
            callee = await ss.open(callee_ser)
            caller = await ss.open(caller_ser)
            seen = []

            def echo(*args, **kwargs):
                seen.append((args, kwargs))
                return CallResult(*args, reversed=bytes(reversed(args[2])), **kwargs)

            await callee.register(echo, "com.example.mixed.echo")
            res = await caller.call("com.example.mixed.echo", *ARGS, **KWARGS)
            assert seen == [(tuple(ARGS), KWARGS)], "callee got mangled arguments"
            assert isinstance(res, CallResult)
            assert list(res.results) == ARGS
            expected = dict(KWARGS, reversed=bytes(reversed(BLOB)))
            assert res.kwresults == expected

    run(body())


def test_one_mib_binary_crosses_serializers(serializer_pair):
    """A 1 MiB binary argument passes with the default configuration (in
    JSON it travels as base64, a third larger), as an event and as a call."""
    pub_ser, sub_ser = serializer_pair
    blob = bytes(range(256)) * 4096

    async def body():
        async with Sessions() as ss:
            sub = await ss.open(sub_ser)
            pub = await ss.open(pub_ser)
            inbox = Inbox()
            await sub.subscribe(inbox.handler(), "com.example.mixed.big")
            await sub.register(lambda b: len(b), "com.example.mixed.size")
            await pub.publish("com.example.mixed.big", blob, options=PublishOptions(acknowledge=True))
            (_, args, _, _), = await inbox.wait_for_count(1)
            assert args[0] == blob
            assert await pub.call("com.example.mixed.size", blob) == len(blob)

    run(body())
