"""Shared fixtures: a clean environment, no outbound network, a fresh keyturn per test.

The state database is SQLite by default; with KEYTURN_TEST_DB=postgres every test gets a fresh
database on the PostgreSQL server named by KEYTURN_TEST_PG_URL (scripts/services sets it up).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.keyturn import Harness

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

_real_connect = socket.socket.connect


def pytest_configure(config: pytest.Config) -> None:
    # Every PostgreSQL session the suite opens (keyturn's, a target's, a child process's)
    # commits without waiting for its WAL flush: a few ms less per commit. Nothing here
    # crashes a PostgreSQL server, so no test can tell; transactions are unchanged.
    os.environ.setdefault("PGOPTIONS", "-c synchronous_commit=off")


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


def _drop_keyturn_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KEYTURN_") and not name.startswith("KEYTURN_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    _drop_keyturn_settings(monkeypatch)
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


def pg_admin_url() -> str:
    url = os.environ.get("KEYTURN_TEST_PG_URL")
    if not url:
        pytest.fail("KEYTURN_TEST_PG_URL is not set: run scripts/services, then source .test-env")
    return url


def _pg_admin() -> tuple[URL, str]:
    from sqlalchemy.engine import make_url

    base = make_url(pg_admin_url())
    return base, base.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(_pg_admin()[1], autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextlib.contextmanager
def _pg_created(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a copy of *template* if given); its URL; dropped after."""
    base, _ = _pg_admin()
    name = "kt_" + secrets.token_hex(6)
    _pg_execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        _pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for keyturn's state; dropped afterwards."""
    with _pg_created() as url:
        yield url


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty state database (SQLite: a path not created yet)."""
    if os.environ.get("KEYTURN_TEST_DB") == "postgres":
        return str(request.getfixturevalue("pg_database"))
    return f"sqlite:///{tmp_path / 'keyturn.db'}"


@dataclass(frozen=True)
class Initialised:
    """A state database `keyturn init` made once per session, and its master key."""

    url: str
    master_key: str


@pytest.fixture(scope="session")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Initialised]:
    """`keyturn init` once per session: each test's keyturn starts from a copy (a fresh
    init costs 0.1-0.5 s, a copy a few ms). The copy is the whole database: its data keys,
    audit key, first admin token and `keyturn.init` entry are the same in every test, under
    this session's master key; a test of `init` itself makes a Harness of its own."""
    home = tmp_path_factory.mktemp("initialised")
    with contextlib.ExitStack() as stack:
        if os.environ.get("KEYTURN_TEST_DB") == "postgres":
            url = stack.enter_context(_pg_created())
        else:
            url = f"sqlite:///{home / 'keyturn.db'}"
        harness = Harness(home, url)
        with pytest.MonkeyPatch.context() as monkeypatch:
            _drop_keyturn_settings(monkeypatch)
            monkeypatch.chdir(home)
            harness.init()
            harness.close()
        yield Initialised(url, harness.master_key)


def _copy(initialised: Initialised, tmp_path: Path, stack: contextlib.ExitStack) -> str:
    from sqlalchemy.engine import make_url

    source = make_url(initialised.url)
    if source.get_backend_name() == "postgresql":
        return stack.enter_context(_pg_created(template=source.database))
    copy = tmp_path / "keyturn.db"
    src, dst = sqlite3.connect(str(source.database)), sqlite3.connect(copy)
    try:
        src.backup(dst)  # whole pages, the WAL's too
    finally:
        src.close()
        dst.close()
    return f"sqlite:///{copy}"


@pytest.fixture
def kt(
    tmp_path: Path, initialised: Initialised, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """An initialised keyturn in tmp_path (a copy of the session's), driven in-process or
    as a subprocess."""
    monkeypatch.chdir(tmp_path)
    with contextlib.ExitStack() as stack:
        harness = Harness(tmp_path, _copy(initialised, tmp_path, stack), initialised.master_key)
        yield harness
        harness.close()


STATE_FIXTURES = {"kt", "db_url", "pg_database", "initialised"}
# The directories whose tests are about keyturn's own database (transactions, leases,
# queries, constraints, migrations): on the PostgreSQL pass their tests that use it run.
STATE_DB_DIRS = ("api", "core", "engine", "rekey", "scheduler")


def on_postgres_pass(item: pytest.Item) -> bool:
    """A test elsewhere (targets, CLI wording, scan, docs, any new directory) uses the state
    database as plumbing and already ran on the SQLite pass; `@pytest.mark.state_db` puts one
    that does depend on it on the PostgreSQL pass too."""
    if item.get_closest_marker("state_db"):
        return True
    top = item.nodeid.split("/")[1] if item.nodeid.startswith("tests/") else ""
    return top in STATE_DB_DIRS and bool(STATE_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass, run only the tests whose behaviour depends on keyturn's
    database (CONTRIBUTING.md, "Two passes")."""
    if os.environ.get("KEYTURN_TEST_DB") != "postgres":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if on_postgres_pass(item) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
