"""Rigs that drive the database targets through keyturn itself: inventory, CLI, engine.

A rig writes a `keyturn.toml` for one credential on one real server (the scram PostgreSQL
cluster, MariaDB, Redis ACL users), applies it, and checks logins with a *fresh driver
connection* using the value `keyturn get` prints, never through the plugin under test.

The sandboxes are the ``*_engine`` fixtures of conftest.py (``kte_`` names, dropped after).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from keyturn.db.models import Rotation, utcnow
from tests.support.keyturn import Harness, Result
from tests.targets.conftest import MysqlSandbox, PgSandbox, RedisSandbox, new_password

CRED = "acme/app-db"
INITIAL_ENV = "KTE_INITIAL_PW"


def _toml_value(value: Any) -> str:
    return json.dumps(value)  # TOML basic strings, ints and arrays read like JSON


@dataclass
class Rig:
    """One credential on one real target, driven through the keyturn CLI."""

    kt: Harness
    strategy: str
    logins: list[str]
    grace: str = "0s"
    consumers: list[str] = field(default_factory=list)
    initial: str = field(default_factory=new_password)
    target_type: str = ""
    cred: str = CRED

    # -- what each server differs in -------------------------------------------------------

    def target_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def accepts(self, user: str, value: str) -> bool:
        """A fresh driver login as *user* with *value*: True if the server lets it in."""
        raise NotImplementedError

    # -- inventory and CLI -----------------------------------------------------------------

    def inventory(self) -> str:
        settings = "\n".join(f"{k} = {_toml_value(v)}" for k, v in self.target_settings().items())
        who = (
            f"usernames = {_toml_value(self.logins)}"
            if self.strategy == "alternating"
            else f"username = {_toml_value(self.logins[0])}"
        )
        return f"""
[policies.p]
max_age = "180d"
grace = "{self.grace}"

[targets.db]
type = "{self.target_type}"
{settings}

[[credentials]]
id = "{self.cred}"
tenant = "acme"
kind = "{self.target_type}"
policy = "p"
target = "db"
strategy = "{self.strategy}"
{who}
consumers = {_toml_value(self.consumers)}
initial_secret = "env:{INITIAL_ENV}"
"""

    def admin_ref(self, password: str) -> str:
        """An `env:` reference to the admin password, set for every keyturn process the
        harness runs (in-process, forked or spawned), as a deployment would."""
        self.kt.env["KTE_ADMIN_PW"] = password
        return "env:KTE_ADMIN_PW"

    def apply(self) -> Result:
        self.kt.write("keyturn.toml", self.inventory())
        result = self.kt.cli("apply", "keyturn.toml", env={INITIAL_ENV: self.initial})
        assert result.code == 0, (result.out, result.err)
        return result

    def rotate(self) -> Result:
        result = self.kt.cli("rotate", self.cred, "--reason", "issue 4 acceptance")
        assert result.code == 0, (result.out, result.err)
        return result

    def resume(self) -> Result:
        result = self.kt.cli("resume", self.cred)
        assert result.code == 0, (result.out, result.err)
        return result

    def get(self, previous: bool = False) -> str:
        result = self.kt.cli("get", self.cred, *(["--previous"] if previous else []))
        assert result.code == 0, result.err
        return result.out.strip()

    def show(self) -> dict[str, Any]:
        result = self.kt.cli("show", self.cred, "--json")
        assert result.code == 0, result.err
        data: dict[str, Any] = json.loads(result.out)
        return data

    def login_of(self, state: str) -> str:
        (user,) = [v["username"] for v in self.show()["versions"] if v["state"] == state]
        return str(user)

    def states(self) -> list[str]:
        return sorted(v["state"] for v in self.show()["versions"])

    def last_rotation(self) -> dict[str, Any]:
        rotations: list[dict[str, Any]] = self.show()["rotations"]
        return max(rotations, key=lambda r: r["id"])

    def end_grace(self) -> None:
        """The grace period is over: move the waiting rotation's wait_until into the past."""
        with self.kt.app.db.write() as session:
            session.execute(
                update(Rotation)
                .where(Rotation.credential_id == self.cred, Rotation.status == "waiting")
                .values(wait_until=utcnow() - timedelta(seconds=1))
            )

    def report(self, consumer: str, version: int) -> None:
        from keyturn.engine import service

        service.report_consumer(self.kt.app, self.cred, consumer, version)


# -- PostgreSQL (scram cluster) ------------------------------------------------------------


@dataclass
class PgRig(Rig):
    box: PgSandbox | None = None
    owner_role: str | None = None
    target_type: str = "postgres"

    @property
    def pg(self) -> PgSandbox:
        assert self.box is not None
        return self.box

    def target_settings(self) -> dict[str, Any]:
        settings = {
            "host": self.pg.server.host,
            "port": self.pg.server.port,
            "dbname": self.pg.dbname,
            "admin_user": self.pg.server.user,
            "admin_password": self.admin_ref(self.pg.server.password),
            "connect_timeout": 5,
        }
        if self.owner_role:
            settings["owner_role"] = self.owner_role
        return settings

    def accepts(self, user: str, value: str) -> bool:
        import psycopg

        try:
            self.pg.connect(user, value).close()
        except psycopg.OperationalError as exc:
            text = str(exc)
            if "password authentication failed" in text or "not permitted to log in" in text:
                return False
            raise
        return True


# -- MariaDB ---------------------------------------------------------------------------------


@dataclass
class MysqlRig(Rig):
    box: MysqlSandbox | None = None
    default_role: str | None = None
    target_type: str = "mysql"

    @property
    def my(self) -> MysqlSandbox:
        assert self.box is not None
        return self.box

    def target_settings(self) -> dict[str, Any]:
        settings = {
            "host": self.my.server.host,
            "port": self.my.server.port,
            "admin_user": self.my.server.user,
            "admin_password": self.admin_ref(self.my.server.password),
            "connect_timeout": 5,
        }
        if self.default_role:
            settings["default_role"] = self.default_role
        return settings

    def accepts(self, user: str, value: str) -> bool:
        import pymysql

        try:
            self.my.connect(user, value, database=None).close()
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in (1045, 1698, 3118, 4151):
                return False
            raise
        return True


# -- Redis -------------------------------------------------------------------------------------


@dataclass
class RedisRig(Rig):
    box: RedisSandbox | None = None
    target_type: str = "redis"

    @property
    def rd(self) -> RedisSandbox:
        assert self.box is not None
        return self.box

    def target_settings(self) -> dict[str, Any]:
        return {
            "host": self.rd.server.host,
            "port": self.rd.server.port,
            "admin_user": self.rd.server.user,
            "admin_password": self.admin_ref(self.rd.server.password),
            "connect_timeout": 5,
        }

    def accepts(self, user: str, value: str) -> bool:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(
            host=self.rd.server.host,
            port=self.rd.server.port,
            username=user,
            password=value,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),  # redis-py retries a refused AUTH, with sleeps
        )
        try:
            return bool(client.ping())
        except redis.exceptions.AuthenticationError:
            return False
        finally:
            client.close()


# -- one factory for the parametrised tests ----------------------------------------------------

TARGET_STRATEGIES = [
    ("postgres", "single"),
    ("postgres", "alternating"),
    ("mysql", "single"),
    ("mysql", "alternating"),
    ("redis", "single"),
    ("redis", "dual"),
]


def make_rig(
    request: pytest.FixtureRequest, kt: Harness, kind: str, strategy: str, **kw: Any
) -> Rig:
    """A rig on a fresh sandbox of *kind*, its logins named ``app`` (and ``app_clone``)."""
    fixture = {"postgres": "pg_engine", "mysql": "mysql_engine", "redis": "redis_engine"}[kind]
    box = request.getfixturevalue(fixture)
    names = ["app", "app_clone"] if strategy == "alternating" else ["app"]
    logins = [box.prefix + n for n in names]
    if kind == "postgres":
        owner = box.prefix + "owner" if strategy == "alternating" else None
        return PgRig(kt, strategy, logins, box=box, owner_role=owner, **kw)
    if kind == "mysql":
        role = box.prefix + "role" if strategy == "alternating" else None
        return MysqlRig(kt, strategy, logins, box=box, default_role=role, **kw)
    return RedisRig(kt, strategy, logins, box=box, **kw)


# -- a worker killed mid-rotation -----------------------------------------------------------------


def run_killed(kt: Harness, point: str, *args: str, env: dict[str, str]) -> int:
    """Run `keyturn ARGS` in a process of its own that SIGKILLs itself at *point*; its exit
    status (negative: the signal). `kt.spawn` forks only while this process runs no other
    thread: these tests' HTTP doubles and servers do, and a child forked with another
    thread's lock held hung until pytest's timeout (seen once in CI, under load)."""
    return kt.spawn(*args, env={**env, "KEYTURN_TEST_CRASH_AT": point}).code


# -- alternating: the application's data survives the flips -----------------------------------


def _run(conn: Any, query: str, *args: object) -> list[tuple[Any, ...]]:
    """One statement on a DB-API connection (psycopg and PyMySQL both take %s), then close."""
    try:
        cur = conn.cursor()
        cur.execute(query, args or None)
        return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def rotations_keep_the_table(
    rig: Rig, connect: Callable[[str, str], Any], rotations: int = 3
) -> list[str]:
    """The app fills a table, keyturn flips the logins *rotations* times (with a grace
    period), and the table stays readable and writable by whichever login is current.

    Returns every value the test saw (`keyturn get` and `--previous`).
    """
    login, value = rig.logins[0], rig.initial
    _run(connect(login, value), "CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(40))")
    _run(connect(login, value), "INSERT INTO orders VALUES (%s, %s)", 1, "before")
    seen, next_id = [value], 2
    for _ in range(rotations):
        old_login, old = rig.login_of("current"), rig.get()
        rig.rotate()
        assert rig.last_rotation()["status"] == "waiting"
        login, value = rig.login_of("current"), rig.get()
        assert login != old_login and rig.get(previous=True) == old
        seen += [value, old]
        # Grace period: consumers on either login keep working.
        for user, secret in ((login, value), (old_login, old)):
            _run(connect(user, secret), "INSERT INTO orders VALUES (%s, %s)", next_id, user)
            next_id += 1
        rig.end_grace()
        rig.resume()
        assert not rig.accepts(old_login, old)
        _run(connect(login, value), "UPDATE orders SET note = %s WHERE id = 1", "after")
    rows = _run(connect(login, value), "SELECT id, note FROM orders ORDER BY id")
    assert [row[0] for row in rows] == list(range(1, next_id))
    assert rows[0][1] == "after"
    assert _run(connect(login, value), "DELETE FROM orders WHERE id = %s", next_id - 1) == []
    return seen


__all__ = [
    "CRED",
    "TARGET_STRATEGIES",
    "MysqlRig",
    "PgRig",
    "RedisRig",
    "Rig",
    "make_rig",
    "rotations_keep_the_table",
    "run_killed",
]
