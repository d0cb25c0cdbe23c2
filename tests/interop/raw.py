"""Send WAMP requests that autobahn's high-level API would refuse to send.

autobahn validates URIs and subscription/registration state on the client
side, so to test the *router's* error replies we build the message ourselves
and register the pending request with the session, so that the router's
ERROR (or success reply) resolves the returned future as usual.
"""

import txaio
from autobahn.wamp import message
from autobahn.wamp.request import (
    CallRequest,
    PublishRequest,
    RegisterRequest,
    SubscribeRequest,
    UnregisterRequest,
    UnsubscribeRequest,
)
from autobahn.wamp.types import CallOptions


def _next_id(session):
    return session._request_id_gen.next()


def raw_subscribe(session, topic, match=None):
    request_id = _next_id(session)
    on_reply = txaio.create_future()
    session._subscribe_reqs[request_id] = SubscribeRequest(request_id, topic, on_reply, None)
    session._transport.send(message.Subscribe(request_id, topic, match=match))
    return on_reply


def raw_unsubscribe(session, subscription_id):
    request_id = _next_id(session)
    on_reply = txaio.create_future()
    session._unsubscribe_reqs[request_id] = UnsubscribeRequest(request_id, on_reply, subscription_id)
    session._transport.send(message.Unsubscribe(request_id, subscription_id))
    return on_reply


def raw_register(session, procedure):
    request_id = _next_id(session)
    on_reply = txaio.create_future()
    session._register_reqs[request_id] = RegisterRequest(request_id, on_reply, procedure, None)
    session._transport.send(message.Register(request_id, procedure))
    return on_reply


def raw_unregister(session, registration_id):
    request_id = _next_id(session)
    on_reply = txaio.create_future()
    session._unregister_reqs[request_id] = UnregisterRequest(request_id, on_reply, registration_id)
    session._transport.send(message.Unregister(request_id, registration_id))
    return on_reply


def raw_publish(session, topic, *args, **kwargs):
    """PUBLISH with acknowledge=True; the future resolves on PUBLISHED/ERROR."""
    request_id = _next_id(session)
    on_reply = txaio.create_future()
    session._publish_reqs[request_id] = PublishRequest(request_id, on_reply, was_encrypted=False)
    session._transport.send(
        message.Publish(request_id, topic, args=list(args) or None, kwargs=kwargs or None, acknowledge=True)
    )
    return on_reply


def raw_call(session, procedure, *args, **kwargs):
    request_id = _next_id(session)
    on_reply = txaio.create_future()
    session._call_reqs[request_id] = CallRequest(request_id, procedure, on_reply, CallOptions())
    session._transport.send(
        message.Call(request_id, procedure, args=list(args) or None, kwargs=kwargs or None)
    )
    return on_reply
