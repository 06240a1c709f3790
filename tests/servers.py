"""The real servers the tests run against, as started by ``scripts/services``.

``scripts/services`` writes ``.test-env``; ``source .test-env`` exports the variables read
here. A missing variable fails the test (it does not skip it): a suite that silently skips
its integration tests proves nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

HINT = "run scripts/services (as root) and `source .test-env`"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: {HINT}", pytrace=False)
    return value


@dataclass(frozen=True)
class PgServer:
    """The PostgreSQL cluster that checks passwords (scram-sha-256, log_statement=all)."""

    host: str
    port: int
    user: str
    password: str
    log: str  # the server's log file, for "no password in the log" checks

    @classmethod
    def from_env(cls) -> PgServer:
        return cls(
            host=_env("KEYTURN_TEST_SCRAM_PG_HOST"),
            port=int(_env("KEYTURN_TEST_SCRAM_PG_PORT")),
            user=_env("KEYTURN_TEST_SCRAM_PG_USER"),
            password=_env("KEYTURN_TEST_SCRAM_PG_PASSWORD"),
            log=_env("KEYTURN_TEST_SCRAM_PG_LOG"),
        )


@dataclass(frozen=True)
class MysqlServer:
    """MariaDB (or MySQL) with an admin user that may create users and grant."""

    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_env(cls) -> MysqlServer:
        return cls(
            host=_env("KEYTURN_TEST_MYSQL_HOST"),
            port=int(_env("KEYTURN_TEST_MYSQL_PORT")),
            user=_env("KEYTURN_TEST_MYSQL_USER"),
            password=_env("KEYTURN_TEST_MYSQL_PASSWORD"),
        )


@dataclass(frozen=True)
class RedisServer:
    """Redis with an ACL user allowed everything."""

    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_env(cls) -> RedisServer:
        return cls(
            host=_env("KEYTURN_TEST_REDIS_HOST"),
            port=int(_env("KEYTURN_TEST_REDIS_PORT")),
            user=_env("KEYTURN_TEST_REDIS_USER"),
            password=_env("KEYTURN_TEST_REDIS_PASSWORD"),
        )


def pg_state_url() -> str:
    """SQLAlchemy URL of the trust cluster's keyturn_test database (keyturn's own state)."""
    return _env("KEYTURN_TEST_PG_URL")


def unused_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
