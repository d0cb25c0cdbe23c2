"""WAMP over RawSocket with autobahn-python's RawSocket client, against the
router's ``--rawsocket`` listener (``FENNEC_RAWSOCKET``), with JSON,
MessagePack and CBOR, talking to WebSocket sessions on the same router;
and the transport's own rules (handshake errors, PING/PONG, the length
limit) over a plain socket.
"""

import socket
import struct

from autobahn.wamp.types import PublishOptions, SubscribeOptions

from helpers import SERIALIZERS, STEP_TIMEOUT, Inbox, Sessions, rawsocket_addr, run

BLOB = bytes(range(256)) * 8


def test_pubsub_and_rpc_between_rawsocket_and_websocket(serializer):
    async def body():
        async with Sessions() as ss:
            raw = await ss.open(serializer, rawsocket=True)
            web = await ss.open(serializer)
            inbox = Inbox()
            await web.subscribe(inbox.handler(), "com.example.raw.topic", options=SubscribeOptions(details=True))
            await raw.register(lambda a, b: [a + b, BLOB], "com.example.raw.add")
            await raw.publish("com.example.raw.topic", BLOB, n=1, options=PublishOptions(acknowledge=True))
            (_, args, kwargs, _), = await inbox.wait_for_count(1)
            assert (args[0], kwargs) == (BLOB, {"n": 1})
            assert await web.call("com.example.raw.add", 2, 3) == [5, BLOB]
            # And back: an event from WebSocket to RawSocket.
            back = Inbox()
            await raw.subscribe(back.handler(), "com.example.raw.back")
            await web.publish("com.example.raw.back", "hi", options=PublishOptions(acknowledge=True))
            (_, args, _, _), = await back.wait_for_count(1)
            assert list(args) == ["hi"]

    run(body())


def raw_connect():
    host, port = rawsocket_addr()
    s = socket.create_connection((host, port), timeout=STEP_TIMEOUT)
    return s


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def closed(s):
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_handshake_errors():
    # Serializer 0 (illegal) and 4 (UBJSON, not spoken): error 1, then close.
    for second in (0xF0, 0xF4):
        s = raw_connect()
        s.sendall(bytes([0x7F, second, 0, 0]))
        assert recv_exact(s, 4) == bytes([0x7F, 0x10, 0, 0]), hex(second)
        assert closed(s)
    # Reserved octets set: error 3.
    s = raw_connect()
    s.sendall(bytes([0x7F, 0xF1, 0, 1]))
    assert recv_exact(s, 4) == bytes([0x7F, 0x30, 0, 0])
    assert closed(s)
    # Not RawSocket at all: the connection is failed without a reply.
    s = raw_connect()
    s.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert closed(s)


def test_ping_pong_and_the_length_limit():
    s = raw_connect()
    # JSON, the client takes at most 2^10 = 1024 octets (WELCOME, which
    # lists the router's features, needs more than the smallest, 512).
    s.sendall(bytes([0x7F, 0x11, 0, 0]))
    reply = recv_exact(s, 4)
    assert reply[0] == 0x7F and reply[1] & 0x0F == 1 and reply[2:] == b"\0\0", reply
    assert reply[1] >> 4 == 15, "the router takes 2^24 octets by default"
    # PING: exactly one PONG echoing the payload.
    s.sendall(struct.pack(">I", (1 << 24) | 5) + b"hello")
    assert recv_exact(s, 9) == struct.pack(">I", (2 << 24) | 5) + b"hello"
    # A session; an event larger than 1024 octets is not sent to it, the next small one is.
    hello = b'[1,"realm1",{"roles":{"subscriber":{},"publisher":{}}}]'
    s.sendall(struct.pack(">I", len(hello)) + hello)
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    assert recv_exact(s, n).startswith(b"[2,"), "WELCOME"
    sub = b'[32,1,{},"com.example.raw.limit"]'
    s.sendall(struct.pack(">I", len(sub)) + sub)
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    assert recv_exact(s, n).startswith(b"[33,1,"), "SUBSCRIBED"

    async def publish_two():
        async with Sessions() as ss:
            pub = await ss.open(SERIALIZERS["json"])
            await pub.publish("com.example.raw.limit", "x" * 1100, options=PublishOptions(acknowledge=True))
            await pub.publish("com.example.raw.limit", "small", options=PublishOptions(acknowledge=True))

    run(publish_two())
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    event = recv_exact(s, n)
    assert event.startswith(b"[36,") and b'"small"' in event, event
    # A reserved frame type fails the connection.
    s.sendall(struct.pack(">I", 3 << 24))
    assert closed(s)


def test_undecodable_message_is_aborted():
    s = raw_connect()
    s.sendall(bytes([0x7F, 0xF2, 0, 0]))
    assert recv_exact(s, 4)[1] & 0x0F == 2
    # Not MessagePack: ABORT, then the connection ends.
    s.sendall(struct.pack(">I", 1) + b"\xc1")
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    assert n > 0
    recv_exact(s, n)
    assert closed(s)
