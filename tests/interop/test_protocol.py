"""Protocol violations must be answered with ABORT wamp.error.protocol_violation.

autobahn's session layer never sends out-of-order messages, so these tests
speak WAMP by hand over autobahn's plain WebSocket client.
"""

import asyncio
import json
from urllib.parse import urlparse

import cbor2
import msgpack
from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

from helpers import STEP_TIMEOUT, router_url, run

HELLO = [1, "realm1", {"roles": {"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}}}]
WELCOME, ABORT = 2, 3


class RawProtocol(WebSocketClientProtocol):
    def onOpen(self):
        if not self.factory.opened.done():
            self.factory.opened.set_result(self)

    def onMessage(self, payload, isBinary):
        self.factory.inbox.put_nowait(self.factory.decode(payload))

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.done():
            self.factory.opened.set_exception(ConnectionError(f"closed during handshake: {reason}"))
        self.factory.inbox.put_nowait(("closed", code, reason))


class RawClient:
    def __init__(self, subprotocol):
        self.subprotocol = subprotocol
        self.binary = subprotocol != "wamp.2.json"

    async def connect(self):
        url = router_url()
        parsed = urlparse(url)
        loop = asyncio.get_running_loop()
        factory = WebSocketClientFactory(url=url, protocols=[self.subprotocol])
        factory.protocol = RawProtocol
        factory.opened = loop.create_future()
        factory.inbox = asyncio.Queue()
        factory.decode = self.decode
        self.factory = factory
        self.transport, _ = await loop.create_connection(factory, parsed.hostname, parsed.port)
        self.proto = await asyncio.wait_for(factory.opened, STEP_TIMEOUT)
        assert self.proto.websocket_protocol_in_use == self.subprotocol
        return self

    def decode(self, payload):
        if self.subprotocol == "wamp.2.cbor":
            return cbor2.loads(payload)
        return msgpack.unpackb(payload, raw=False) if self.binary else json.loads(payload)

    def send(self, msg):
        if self.subprotocol == "wamp.2.cbor":
            self.proto.sendMessage(cbor2.dumps(msg), isBinary=True)
        elif self.binary:
            self.proto.sendMessage(msgpack.packb(msg, use_bin_type=True), isBinary=True)
        else:
            self.proto.sendMessage(json.dumps(msg).encode(), isBinary=False)

    async def recv(self):
        return await asyncio.wait_for(self.factory.inbox.get(), STEP_TIMEOUT)

    def close(self):
        self.transport.close()


def subprotocol_of(serializer):
    # JsonSerializer -> "wamp.2.json", MsgPackSerializer -> "wamp.2.msgpack", CBORSerializer -> "wamp.2.cbor"
    return f"wamp.2.{serializer.SERIALIZER_ID}"


async def expect_protocol_violation(client):
    msg = await client.recv()
    assert isinstance(msg, list) and msg[0] == ABORT, f"expected ABORT, got {msg!r}"
    assert msg[2] == "wamp.error.protocol_violation", msg
    assert isinstance(msg[1], dict)
    # After ABORT the router closes the connection.
    closed = await client.recv()
    assert closed[0] == "closed", closed


def test_message_before_hello_is_aborted(serializer):
    async def body():
        client = await RawClient(subprotocol_of(serializer)).connect()
        try:
            client.send([16, 1, {}, "com.example.topic"])  # PUBLISH before HELLO
            await expect_protocol_violation(client)
        finally:
            client.close()

    run(body())


def test_second_hello_is_aborted(serializer):
    async def body():
        client = await RawClient(subprotocol_of(serializer)).connect()
        try:
            client.send(HELLO)
            welcome = await client.recv()
            assert welcome[0] == WELCOME, welcome
            client.send(HELLO)
            await expect_protocol_violation(client)
        finally:
            client.close()

    run(body())
