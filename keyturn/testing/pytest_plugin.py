"""Fixtures for plugin authors: ``pytest_plugins = ["keyturn.testing.pytest_plugin"]``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keyturn.testing.fakes import FakeClock
from keyturn.testing.world import World


@pytest.fixture
def keyturn_world(tmp_path: Path) -> Iterator[World]:
    """A throwaway keyturn installation (SQLite in tmp_path), initialised."""
    world = World(tmp_path)
    world.ok("init")
    yield world
    world.close()


@pytest.fixture
def fake_clock() -> Iterator[FakeClock]:
    """keyturn's now, frozen; ``fake_clock.advance(timedelta(...))`` moves it."""
    with FakeClock() as clock:
        yield clock
