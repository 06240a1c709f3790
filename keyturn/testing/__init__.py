"""The plugin conformance kit: fakes, and keyturn's invariants run against any plugin.

A target plugin proves itself crash-safe the way the built-ins do::

    from keyturn.testing import TargetCase, check_target

    def test_my_target(tmp_path):
        check_target(TargetCase("my-target", settings, strategy="dual", initial=pw), tmp_path)

and a store with `check_store`. `docs/plugins.md` walks through writing one. For pytest,
``pytest_plugins = ["keyturn.testing.pytest_plugin"]`` adds the fixtures ``keyturn_world``
and ``fake_clock``.
"""

from __future__ import annotations

from keyturn.testing.fakes import FakeClock, FakeIssuer, FakeStore, FakeTarget
from keyturn.testing.invariants import (
    CRASH_POINTS,
    InvariantBroken,
    TargetCase,
    check_no_values,
    check_rotations,
    check_target,
    check_verbs,
)
from keyturn.testing.stores import check_store
from keyturn.testing.world import World

__all__ = [
    "CRASH_POINTS",
    "FakeClock",
    "FakeIssuer",
    "FakeStore",
    "FakeTarget",
    "InvariantBroken",
    "TargetCase",
    "World",
    "check_no_values",
    "check_rotations",
    "check_store",
    "check_target",
    "check_verbs",
]
