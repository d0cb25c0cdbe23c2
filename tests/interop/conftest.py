"""Shared fixtures for the Fennec WAMP interop tests (autobahn-python client).

The router under test is given by the ``FENNEC_URL`` environment variable,
e.g. ``ws://127.0.0.1:PORT/ws``.  ``tests/autobahn.rs`` starts Fennec and sets it.
"""

import os

import pytest

from helpers import SERIALIZERS


def pytest_configure(config):
    if not os.environ.get("FENNEC_URL"):
        raise pytest.UsageError(
            "FENNEC_URL is not set: start a router and set FENNEC_URL=ws://127.0.0.1:PORT/ws "
            "(or run `cargo test --test autobahn`, which does both)"
        )


@pytest.fixture
def url():
    return os.environ["FENNEC_URL"]


@pytest.fixture(params=sorted(SERIALIZERS), ids=sorted(SERIALIZERS))
def serializer(request):
    """Each test taking this fixture runs once with each serializer (CBOR, JSON, MessagePack)."""
    return SERIALIZERS[request.param]


PAIRS = [(a, b) for a in sorted(SERIALIZERS) for b in sorted(SERIALIZERS) if a != b]


@pytest.fixture(params=PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def serializer_pair(request):
    """(sending side, receiving side) serializers for cross-serializer tests."""
    a, b = request.param
    return SERIALIZERS[a], SERIALIZERS[b]
