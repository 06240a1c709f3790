"""Shared fixtures: a clean environment, no outbound network, a fresh keyturn per test.

The state database is SQLite by default; with KEYTURN_TEST_DB=postgres every test gets a fresh
database on the PostgreSQL server named by KEYTURN_TEST_PG_URL (scripts/services sets it up).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.keyturn import Harness

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> object:
    if isinstance(address, tuple) and self.family in (socket.AF_INET, socket.AF_INET6):
        host = str(address[0])
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise OSError(f"tests may only connect to loopback, not {host}")
    return _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KEYTURN_") and not name.startswith("KEYTURN_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


def pg_admin_url() -> str:
    url = os.environ.get("KEYTURN_TEST_PG_URL")
    if not url:
        pytest.fail("KEYTURN_TEST_PG_URL is not set: run scripts/services, then source .test-env")
    return url


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for keyturn's state; dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(pg_admin_url())
    name = "kt_" + secrets.token_hex(6)
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if os.environ.get("KEYTURN_TEST_DB") == "postgres":
        return str(request.getfixturevalue("pg_database"))
    return f"sqlite:///{tmp_path / 'keyturn.db'}"


@pytest.fixture
def kt(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """An initialised keyturn in tmp_path, driven in-process or as a subprocess."""
    monkeypatch.chdir(tmp_path)
    harness = Harness(tmp_path, db_url)
    harness.init()
    yield harness
    harness.close()


STATE_FIXTURES = {"kt", "db_url", "pg_database"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass, run only the tests that use keyturn's own database: the rest
    (plugin tests against real servers, pure functions) do not depend on it and already ran
    on the SQLite pass."""
    if os.environ.get("KEYTURN_TEST_DB") != "postgres":
        return
    keep, drop = [], []
    for item in items:
        uses_state = STATE_FIXTURES & set(getattr(item, "fixturenames", ()))
        # Target tests use keyturn's database only as plumbing; what they prove is about
        # the target, and the engine over PostgreSQL is covered by tests/engine.
        about_targets = "tests/targets/" in item.nodeid
        wanted = (uses_state and not about_targets) or item.get_closest_marker("state_db")
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
