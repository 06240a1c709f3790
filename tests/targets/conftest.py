"""Per-test isolated resources on the real servers: random names, dropped afterwards."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from keyturn.domain.errors import ReferenceUnresolved
from keyturn.domain.model import Secret
from keyturn.targets.base import TargetContext
from tests.servers import MysqlServer, PgServer, RedisServer


def new_password() -> str:
    return "kt-" + secrets.token_urlsafe(24)


@dataclass
class Refs:
    """Secret references the plugin resolves (env:/keyturn: stand-ins for the tests)."""

    values: dict[str, Secret] = field(default_factory=dict)

    def add(self, value: str, ref: str | None = None) -> str:
        ref = ref or f"keyturn:test/{secrets.token_hex(4)}"
        self.values[ref] = Secret(value)
        return ref

    def resolve(self, ref: str) -> Secret:
        try:
            return self.values[ref]
        except KeyError:
            raise ReferenceUnresolved(f"no such reference {ref!r}") from None

    def context(self) -> TargetContext:
        return TargetContext(resolve=self.resolve)


@pytest.fixture
def refs() -> Refs:
    return Refs()


def _prefix() -> str:
    # Not "kt_": the inventory reads long kt_... strings as keyturn tokens pasted in clear,
    # so role names that go into a keyturn.toml must not start with it.
    return f"kte_{secrets.token_hex(4)}_"


# -- PostgreSQL (the scram cluster) ----------------------------------------------------------


@dataclass
class PgSandbox:
    """A fresh database on the scram cluster; roles named with ``prefix`` are dropped after."""

    server: PgServer
    prefix: str
    dbname: str

    def role(self, name: str) -> str:
        return self.prefix + name

    def connect(self, user: str, password: str, **kw: Any) -> Any:
        import psycopg

        return psycopg.connect(
            host=self.server.host,
            port=self.server.port,
            dbname=kw.pop("dbname", self.dbname),
            user=user,
            password=password,
            autocommit=True,
            connect_timeout=5,
            **kw,
        )

    def admin(self, dbname: str | None = None) -> Any:
        return self.connect(self.server.user, self.server.password, dbname=dbname or self.dbname)

    def settings(self, refs: Refs, **extra: Any) -> dict[str, Any]:
        return {
            "host": self.server.host,
            "port": self.server.port,
            "dbname": self.dbname,
            "admin_user": self.server.user,
            "admin_password": refs.add(self.server.password, "env:PG_ADMIN"),
            "connect_timeout": 5,
            **extra,
        }


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    return PgServer.from_env()


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[PgSandbox]:
    from psycopg import sql

    prefix = _prefix()
    box = PgSandbox(pg_server, prefix, prefix + "db")
    with box.admin("postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(box.dbname)))
    yield box
    with box.admin("postgres") as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(box.dbname))
        )
        roles = conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) ORDER BY rolcanlogin DESC",
            (prefix,),
        ).fetchall()
        for (role,) in roles:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# -- MariaDB / MySQL ---------------------------------------------------------------------------


@dataclass
class MysqlSandbox:
    """A fresh database; users named with ``prefix`` are dropped after."""

    server: MysqlServer
    prefix: str
    dbname: str

    def user(self, name: str) -> str:
        return self.prefix + name

    def connect(self, user: str, password: str, **kw: Any) -> Any:
        import pymysql

        return pymysql.connect(
            host=self.server.host,
            port=self.server.port,
            user=user,
            password=password,
            database=kw.pop("database", self.dbname),
            autocommit=True,
            connect_timeout=5,
            **kw,
        )

    def admin(self) -> Any:
        return self.connect(self.server.user, self.server.password)

    def settings(self, refs: Refs, **extra: Any) -> dict[str, Any]:
        return {
            "host": self.server.host,
            "port": self.server.port,
            "admin_user": self.server.user,
            "admin_password": refs.add(self.server.password, "env:MYSQL_ADMIN"),
            "connect_timeout": 5,
            **extra,
        }


@pytest.fixture(scope="session")
def mysql_server() -> MysqlServer:
    return MysqlServer.from_env()


@pytest.fixture
def mysql(mysql_server: MysqlServer) -> Iterator[MysqlSandbox]:
    prefix = _prefix()
    box = MysqlSandbox(mysql_server, prefix, prefix + "db")
    with box.connect(mysql_server.user, mysql_server.password, database=None) as conn:
        conn.cursor().execute(f"CREATE DATABASE `{box.dbname}`")
    yield box
    with box.connect(mysql_server.user, mysql_server.password, database=None) as conn:
        cur = conn.cursor()
        cur.execute(f"DROP DATABASE IF EXISTS `{box.dbname}`")
        cur.execute("SELECT user, host FROM mysql.user WHERE user LIKE %s", (prefix + "%",))
        for user, host in cur.fetchall():
            if host == "":  # a MariaDB role
                cur.execute("DROP ROLE %s", (user,))
            else:
                cur.execute("DROP USER IF EXISTS %s@%s", (user, host))


# -- Redis -------------------------------------------------------------------------------------


@dataclass
class RedisSandbox:
    """ACL users named with ``prefix`` are deleted after."""

    server: RedisServer
    prefix: str

    def user(self, name: str) -> str:
        return self.prefix + name

    def client(self, user: str | None = None, password: str | None = None) -> Any:
        import redis

        return redis.Redis(
            host=self.server.host,
            port=self.server.port,
            username=user or self.server.user,
            password=password or self.server.password,
            socket_timeout=5,
        )

    def settings(self, refs: Refs, **extra: Any) -> dict[str, Any]:
        return {
            "host": self.server.host,
            "port": self.server.port,
            "admin_user": self.server.user,
            "admin_password": refs.add(self.server.password, "env:REDIS_ADMIN"),
            "connect_timeout": 5,
            **extra,
        }


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    return RedisServer.from_env()


@pytest.fixture
def redis_box(redis_server: RedisServer) -> Iterator[RedisSandbox]:
    box = RedisSandbox(redis_server, _prefix())
    yield box
    with box.client() as client:
        for user in client.acl_users():
            name = user.decode() if isinstance(user, bytes) else user
            if name.startswith(box.prefix):
                client.acl_deluser(name)
        for key in client.scan_iter(match=box.prefix + "*"):
            client.delete(key)


# -- through keyturn (inventory + engine) ------------------------------------------------------
# The same sandboxes under the names the engine tests use.


@pytest.fixture
def pg_engine(pg: PgSandbox) -> PgSandbox:
    return pg


@pytest.fixture
def mysql_engine(mysql: MysqlSandbox) -> MysqlSandbox:
    return mysql


@pytest.fixture
def redis_engine(redis_box: RedisSandbox) -> RedisSandbox:
    return redis_box
