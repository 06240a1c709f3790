"""The SDK's state without I/O: which value first, the budget, what is reported when."""

from __future__ import annotations

from keyturn.client.core import FailureBudget, State
from keyturn.client.values import Bundle, Value


def _bundle(current: int, nxt: int | None = None, tag: str = "t1") -> Bundle:
    return Bundle(
        credential="acme/db",
        current=Value(f"v{current}", current, "current"),
        next=Value(f"v{nxt}", nxt, "pending") if nxt else None,
        tag=tag,
    )


def test_order_is_current_next_previous_and_a_working_fallback_goes_first() -> None:
    state = State(ttl=60, budget=None, report_every=60)
    during = _bundle(1, nxt=2)
    assert [v.version for v in state.plan(during)] == [1, 2]
    state.fell_back(during, during.next)  # type: ignore[arg-type]
    assert [v.version for v in state.plan(during)] == [2, 1]  # every thread, until...
    assert [v.version for v in state.plan(_bundle(2, tag="t2"))] == [2]  # ...versions change


def test_budget_counts_failed_logins_in_a_window() -> None:
    state = State(ttl=60, budget=FailureBudget(limit=2, seconds=3600), report_every=60)
    assert state.may_fail("acme/db")
    state.failed("acme/db")
    state.failed("acme/db")
    assert not state.may_fail("acme/db") and state.may_fail("acme/other")


def test_reports_a_change_at_once_and_never_goes_back_to_an_older_version() -> None:
    state = State(ttl=60, budget=None, report_every=3600)
    old, new = _bundle(1), _bundle(2, tag="t2")
    assert state.succeeded(old, old.current)
    assert state.reports() == [("acme/db", {"version": 1, "fallbacks": 0})]
    state.reported("acme/db", {"version": 1, "fallbacks": 0})
    assert state.reports() == []  # nothing new, and not due for an hour
    state.store(new)
    assert state.succeeded(new, new.current)
    # A call that began on the old cache finishes after the move: not reported.
    assert not state.succeeded(old, old.current)
    assert state.reports() == [("acme/db", {"version": 2, "fallbacks": 0})]
