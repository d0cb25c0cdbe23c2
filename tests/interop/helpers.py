"""Small asyncio helpers around autobahn for the Fennec interop tests.

Each test opens one or more real autobahn sessions against the router at
``FENNEC_URL``.  We use autobahn's lower-level asyncio WebSocket factory instead
of ``ApplicationRunner`` because the runner owns the event loop and can only run
one session at a time, while most tests need two sessions in one loop.
"""

import asyncio
import os
from urllib.parse import urlparse

import txaio

txaio.use_asyncio()

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory  # noqa: E402
from autobahn.asyncio.wamp import ApplicationSession  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp import message  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer  # noqa: E402
from autobahn.wamp.types import ComponentConfig  # noqa: E402

# Per-step timeout: any single wait in a test (join, call, event, leave).
STEP_TIMEOUT = float(os.environ.get("FENNEC_INTEROP_STEP_TIMEOUT", "10"))
# Whole-test timeout: every test body runs under this.
TEST_TIMEOUT = float(os.environ.get("FENNEC_INTEROP_TEST_TIMEOUT", "60"))

SERIALIZERS = {
    "cbor": CBORSerializer,
    "json": JsonSerializer,
    "msgpack": MsgPackSerializer,
}


class JoinFailed(Exception):
    """The session did not join: the router sent ABORT or closed the transport."""

    def __init__(self, reason, message=None):
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


class TestSession(ApplicationSession):
    """An ApplicationSession that exposes its lifecycle as asyncio futures."""

    __test__ = False  # not a pytest test class

    def __init__(self, config):
        super().__init__(config)
        loop = asyncio.get_running_loop()
        self.joined = loop.create_future()  # -> SessionDetails
        self.left = loop.create_future()  # -> CloseDetails
        self.disconnected = loop.create_future()  # -> None
        # The GOODBYE or ABORT message the router actually sent, if any (autobahn
        # also calls onLeave with a synthetic reason when the transport drops).
        self.goodbye_received = None
        self.abort_received = None

    def onMessage(self, msg):
        if isinstance(msg, message.Goodbye):
            self.goodbye_received = msg
        elif isinstance(msg, message.Abort):
            self.abort_received = msg
        return super().onMessage(msg)

    def onJoin(self, details):
        if not self.joined.done():
            self.joined.set_result(details)

    def onLeave(self, details):
        if not self.joined.done():
            # ABORT in answer to HELLO (or GOODBYE before WELCOME).
            self.joined.set_exception(JoinFailed(details.reason, details.message))
        if not self.left.done():
            self.left.set_result(details)
        return super().onLeave(details)

    def onDisconnect(self):
        if not self.joined.done():
            self.joined.set_exception(JoinFailed("transport closed before WELCOME"))
        if not self.left.done():
            self.left.set_exception(JoinFailed("transport closed without GOODBYE/ABORT"))
        if not self.disconnected.done():
            self.disconnected.set_result(None)
        return super().onDisconnect()


def router_url():
    url = os.environ.get("FENNEC_URL")
    if not url:
        raise RuntimeError(
            "FENNEC_URL is not set; point it at a running router, e.g. ws://127.0.0.1:8080/ws"
        )
    return url


def rawsocket_addr():
    """(host, port) of the router's RawSocket listener (``FENNEC_RAWSOCKET``)."""
    addr = os.environ.get("FENNEC_RAWSOCKET")
    if not addr:
        raise RuntimeError("FENNEC_RAWSOCKET is not set; start the router with --rawsocket HOST:PORT")
    host, _, port = addr.rpartition(":")
    return host, int(port)


async def open_session(
    serializer_cls, realm="realm1", url=None, session_cls=TestSession, rawsocket=False, ssl=None
):
    """Open a transport, send HELLO and return the session once WELCOME arrived.
    With ``rawsocket``, over WAMP-over-RawSocket (autobahn's client) instead
    of WebSocket; with ``ssl`` (an ``ssl.SSLContext``), over TLS (a wss:// URL).

    Raises JoinFailed if the router answers with ABORT or drops the connection.
    """
    url = url or router_url()
    parsed = urlparse(url)
    loop = asyncio.get_running_loop()
    holder = []

    def make_session():
        s = session_cls(ComponentConfig(realm=realm))
        holder.append(s)
        return s

    if rawsocket:
        factory = WampRawSocketClientFactory(make_session, serializer=serializer_cls())
        host, port = rawsocket_addr()
    else:
        factory = WampWebSocketClientFactory(make_session, url=url, serializers=[serializer_cls()])
        factory.setProtocolOptions(autoPingInterval=0)
        host, port = parsed.hostname, parsed.port
    transport, _protocol = await asyncio.wait_for(
        loop.create_connection(factory, host, port, ssl=ssl), STEP_TIMEOUT
    )
    try:
        # The session is created when the WebSocket opening handshake completes.
        deadline = loop.time() + STEP_TIMEOUT
        while not holder:
            if transport.is_closing():
                raise JoinFailed("WebSocket handshake failed (subprotocol rejected?)")
            if loop.time() > deadline:
                raise asyncio.TimeoutError("WebSocket handshake did not complete")
            await asyncio.sleep(0.01)
        session = holder[0]
        await asyncio.wait_for(asyncio.shield(session.joined), STEP_TIMEOUT)
    except BaseException:
        transport.close()
        raise
    session.tcp_transport = transport
    return session


async def close_session(session):
    """Send GOODBYE, wait for the router's GOODBYE and the transport to close."""
    if session.is_attached():
        session.leave()
        details = await asyncio.wait_for(asyncio.shield(session.left), STEP_TIMEOUT)
    else:
        details = session.left.result() if session.left.done() and not session.left.exception() else None
    try:
        await asyncio.wait_for(asyncio.shield(session.disconnected), STEP_TIMEOUT)
    finally:
        session.tcp_transport.close()
    return details


async def force_close(session):
    """Best-effort cleanup that never raises (used in finally blocks)."""
    try:
        if session.is_attached():
            await close_session(session)
    except Exception:
        pass
    finally:
        try:
            session.tcp_transport.close()
        except Exception:
            pass


class Sessions:
    """Async context manager that closes every session opened through it."""

    def __init__(self):
        self.sessions = []

    async def open(self, serializer_cls, realm="realm1", **kw):
        s = await open_session(serializer_cls, realm=realm, **kw)
        self.sessions.append(s)
        return s

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        for s in self.sessions:
            await force_close(s)
        return False


class Inbox:
    """Collects event/invocation payloads and lets a test await them."""

    def __init__(self):
        self.items = []
        self._cond = asyncio.Condition()

    async def put(self, item):
        async with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def handler(self, tag=None):
        """An autobahn event handler that records (tag, args, kwargs, details)."""

        async def on_event(*args, **kwargs):
            details = kwargs.pop("details", None)
            await self.put((tag, args, kwargs, details))

        return on_event

    async def wait_for_count(self, n, timeout=STEP_TIMEOUT):
        async def _wait():
            async with self._cond:
                await self._cond.wait_for(lambda: len(self.items) >= n)

        await asyncio.wait_for(_wait(), timeout)
        return self.items[:n]


async def retained_value(session, topic):
    """The first argument of a topic's retained value (a subscription with
    get_retained, ended once the value is there)."""
    from autobahn.wamp.types import SubscribeOptions

    inbox = Inbox()
    sub = await session.subscribe(inbox.handler(), topic, options=SubscribeOptions(get_retained=True))
    ((_, args, _, _),) = await inbox.wait_for_count(1)
    await sub.unsubscribe()
    return args[0]


def run(coro, timeout=TEST_TIMEOUT):
    """Run one test body in a fresh event loop, bounded by a timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


__all__ = [
    "ApplicationError",
    "Inbox",
    "JoinFailed",
    "SERIALIZERS",
    "STEP_TIMEOUT",
    "Sessions",
    "TestSession",
    "close_session",
    "open_session",
    "router_url",
    "run",
]
