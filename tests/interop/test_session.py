"""Session lifecycle: HELLO/WELCOME, GOODBYE, ABORT for unknown realms."""

import pytest

from helpers import JoinFailed, Sessions, close_session, open_session, run


def test_join_and_leave(serializer):
    async def body():
        session = await open_session(serializer)
        try:
            details = session.joined.result()
            assert details.realm == "realm1"
            assert isinstance(details.session, int) and 0 < details.session <= 2**53
            assert session.is_attached()
        finally:
            close = await close_session(session)
        # The router answers our GOODBYE with its own GOODBYE.  The spec names
        # wamp.close.goodbye_and_out for the reply; Crossbar/autobahn answer
        # with wamp.close.normal, which autobahn clients accept as well.
        assert close is not None, "no GOODBYE reply from the router"
        assert close.reason in ("wamp.close.goodbye_and_out", "wamp.close.normal"), close
        assert not session.is_attached()

    run(body())


def test_welcome_announces_broker_and_dealer(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            roles = s._router_roles
            assert "broker" in roles, f"WELCOME roles: {sorted(roles)}"
            assert "dealer" in roles, f"WELCOME roles: {sorted(roles)}"

    run(body())


def test_welcome_announces_advanced_broker_features(serializer):
    async def body():
        async with Sessions() as ss:
            s = await ss.open(serializer)
            broker = s._router_roles["broker"]
            assert broker.publisher_exclusion, "broker feature publisher_exclusion not announced"
            assert broker.pattern_based_subscription, (
                "broker feature pattern_based_subscription not announced"
            )

    run(body())


def test_session_ids_are_distinct(serializer):
    async def body():
        async with Sessions() as ss:
            a = await ss.open(serializer)
            b = await ss.open(serializer)
            assert a._session_id != b._session_id

    run(body())


def test_unknown_realm_is_aborted(serializer):
    async def body():
        with pytest.raises(JoinFailed) as info:
            s = await open_session(serializer, realm="nosuchrealm")
            await close_session(s)
        assert info.value.reason == "wamp.error.no_such_realm", info.value.args

    run(body())
