"""The SDK against a real `keyturn serve`: values with versions, the current -> next ->
previous fallback through a `single` rotation, the long-polled cache, reports, the budget."""

from __future__ import annotations

import asyncio

import pytest

from keyturn.client import AsyncClient, BudgetExhausted, Client, FailureBudget
from keyturn.db import repo
from tests.client.conftest import CRED, LoginRefused, Served, refused, until
from tests.engine.conftest import INITIAL


def _consumer(served: Served, name: str) -> tuple[int | None, int] | None:
    """(version, fallbacks) the consumer reported, None before its first report."""
    with served.kt.app.db.read() as session:
        found = next((c for c in repo.consumers(session, CRED) if c.name == name), None)
        return (found.version, found.fallbacks) if found else None


def test_get_returns_value_version_and_hides_it_in_repr(served: Served) -> None:
    with Client(served.url, served.token, watch=False) as client:
        got = client.get(CRED)
        assert (got.value, got.version, got.username) == (INITIAL, 1, "admin@acme.example")
        assert got.previous is None and got.next is None
        assert INITIAL not in repr(got) and INITIAL not in str(got.current)


def test_fallback_to_next_between_set_and_promotion(served: Served) -> None:
    # No watcher: the cache keeps what it read before `set` (next, not yet on the target).
    client = Client(served.url, served.token, consumer="billing", auth_failure=refused, watch=False)
    try:
        assert client.use(CRED, lambda v: served.login(v.value)) == "ok"
        assert until(lambda: _consumer(served, "billing") == (1, 0))
        runner = served.rotation()
        runner._create()
        assert client.refresh(CRED).next is not None
        runner._set()  # the target now refuses the current value
        results = [client.use(CRED, lambda v: served.login(v.value)) for _ in range(5)]
        assert results == ["ok"] * 5
        assert client.state.fallbacks == 1  # later calls go straight to the value that works
        assert until(lambda: _consumer(served, "billing") == (2, 1))
        for step in (runner._test, runner._publish, runner._finish):
            step()
        assert client.refresh(CRED).version == 2
        assert client.use(CRED, lambda v: served.login(v.value)) == "ok"
        assert client.state.fallbacks == 1
    finally:
        client.close()
    with served.kt.app.db.read() as session:
        consumer = next(c for c in repo.consumers(session, CRED) if c.name == "billing")
    assert consumer.host and consumer.process and consumer.sdk_version


def test_watcher_sees_next_on_the_target_and_no_login_fails(served: Served) -> None:
    client = Client(served.url, served.token, auth_failure=refused)
    try:
        client.get(CRED)
        runner = served.rotation()
        runner._create()
        # The watcher's long poll sees the pending value without being asked...
        assert until(lambda: client.get(CRED, note=False).next is not None)
        runner._set()
        # ...and that `set` put it on the target: it is tried first, nothing is refused.
        assert until(lambda: bool(getattr(client.get(CRED, note=False).next, "on_target", 0)))
        assert [client.use(CRED, lambda v: served.login(v.value)) for _ in range(3)] == ["ok"] * 3
        assert client.state.fallbacks == 0
    finally:
        client.close()


def test_attempts_context_manager_and_refresh_when_all_fail(served: Served) -> None:
    client = Client(served.url, served.token, watch=False, auth_failure=refused)
    try:
        client.get(CRED)  # cached: version 1 only
        runner = served.rotation()
        for step in (runner._create, runner._set, runner._test, runner._publish, runner._finish):
            step()
        # The cache knows only version 1, which the target refuses: the SDK refreshes.
        for attempt in client.attempts(CRED):
            with attempt as value:
                served.login(value.value)
        assert value.version == 2
    finally:
        client.close()


def test_other_errors_propagate_without_fallback(served: Served) -> None:
    calls: list[int | None] = []

    def broken(value: object) -> None:
        calls.append(getattr(value, "version", None))
        raise ValueError("not an authentication failure")

    client = Client(served.url, served.token, watch=False, auth_failure=refused)
    with client, pytest.raises(ValueError):
        client.use(CRED, broken)
    assert calls == [1]


def test_budget_stops_fallbacks(served: Served) -> None:
    budget = FailureBudget(limit=1, seconds=3600)
    client = Client(served.url, served.token, watch=False, budget=budget, auth_failure=refused)
    try:
        runner = served.rotation()
        runner._create()
        client.get(CRED)

        def always_refused(value: object) -> None:
            raise LoginRefused("no")

        with pytest.raises(BudgetExhausted) as caught:
            client.use(CRED, always_refused)
        assert isinstance(caught.value.__cause__, LoginRefused)
        assert INITIAL not in str(caught.value)
    finally:
        client.close()


def test_async_twin_falls_back_and_reports(served: Served) -> None:
    async def scenario() -> list[str]:
        async with AsyncClient(
            served.url, served.token, consumer="async-app", auth_failure=refused, watch=False
        ) as client:
            runner = served.rotation()
            await asyncio.to_thread(runner._create)
            await client.get(CRED)  # next is known, but not yet on the target
            await asyncio.to_thread(runner._set)

            async def login(value: object) -> str:
                return served.login(getattr(value, "value", ""))

            out = [await client.use(CRED, login) for _ in range(3)]
            assert client.state.fallbacks == 1
            return out

    assert asyncio.run(scenario()) == ["ok"] * 3
    assert _consumer(served, "async-app") == (2, 1)


def test_rotations_faster_than_one_try_are_caught_up_with(served: Served) -> None:
    """A rotation finishes during each of the first two tries: the refreshed value is
    refused by then too; the client asks again rather than give up."""
    client = Client(served.url, served.token, watch=False, auth_failure=refused)
    try:
        client.get(CRED)
        versions: list[int | None] = []

        def login(value: object) -> str:
            versions.append(getattr(value, "version", None))
            if len(versions) <= 2:  # this try loses the race against a whole rotation
                runner = served.rotation()
                steps = (runner._create, runner._set, runner._test, runner._publish)
                for step in (*steps, runner._finish, runner._wait, runner._revoke):
                    step()
                runner.target.close()
            return served.login(getattr(value, "value", ""))

        assert client.use(CRED, login) == "ok"
        assert versions == [1, 2, 3]
    finally:
        client.close()
