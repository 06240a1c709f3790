"""Benchmark: zero failed operations through rotations, for every target x strategy.

    python bench/zero_downtime.py                        # 50 rotations each, 4 threads each
    python bench/zero_downtime.py --rotations 5 --only postgres:single,redis:dual

Needs the test servers (`scripts/services`, then `set -a; . .test-env; set +a`). Starts a
real `keyturn serve` (SQLite) in a subprocess and, for each target x strategy, a credential
on a real server with an account of its own; *threads* client threads then do real work
through the SDK, each operation on a new connection:

    postgres  PostgreSQL with scram-sha-256: connect, SELECT 1
    mysql     MariaDB: connect, INSERT into a table of the bench's
    redis     Redis ACL: AUTH, SET, GET
    smtp      Postfix + Dovecot: SMTP AUTH (PLAIN), QUIT

first while nothing rotates (idle), then while *rotations* rotations run back to back (each
one resumed until done: `alternating` and `dual` wait for the consumers to report the new
version before revoking). Prints, per target x strategy, the operations, failed operations
(an exception out of `client.use`), fallbacks, retries of a temporary failure (SMTP 454; a
failure that outlasts them is a failed operation), revoke waits, and p99 latency during
rotation against idle. The goal is 0 failed operations everywhere, `single` included. Accounts made
on the shared servers are dropped on exit (Dovecot's passwd-file lines are left, as the docs'
examples leave theirs).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers import free_port, wait_http  # bench/servers.py, beside this file

from keyturn.client import Client, FailureBudget, Value, errors

KEYTURN = [sys.executable, "-c", "from keyturn.cli.main import main; main()"]
SUPPORTED = {
    "postgres": ("single", "alternating"),
    "mysql": ("single", "alternating"),
    "redis": ("single", "dual"),
    "smtp": ("single", "dual"),
}
PREDICATES = {
    "postgres": errors.psycopg,
    "mysql": errors.pymysql,
    "redis": errors.redis,
    "smtp": errors.smtplib,
}
SUFFIX = secrets.token_hex(3)


def env(name: str) -> str:
    value = os.environ.get(f"KEYTURN_TEST_{name}")
    if not value:
        raise SystemExit(f"KEYTURN_TEST_{name} is not set: run scripts/services, source .test-env")
    return value


# -- what each target declares and what a client does with it -------------------------------


def account(kind: str, strategy: str) -> str:
    short = {"single": "s", "alternating": "a", "dual": "d"}[strategy]
    if kind == "smtp":
        return f"ktb-{SUFFIX}-{short}@acme.test"
    return f"ktb_{SUFFIX}_{kind[:2]}{short}"


def target_toml(kind: str) -> str:
    """The [targets.<kind>] table of each kind, on the test servers."""
    if kind == "postgres":
        return f"""[targets.postgres]
type = "postgres"
host = "{env("SCRAM_PG_HOST")}"
port = {env("SCRAM_PG_PORT")}
admin_user = "{env("SCRAM_PG_USER")}"
admin_password = "env:BENCH_PG_ADMIN"
owner_role = "ktb_{SUFFIX}_owner"
"""
    if kind == "mysql":
        return f"""[targets.mysql]
type = "mysql"
host = "{env("MYSQL_HOST")}"
port = {env("MYSQL_PORT")}
admin_user = "{env("MYSQL_USER")}"
admin_password = "env:BENCH_MYSQL_ADMIN"
default_role = "ktb_{SUFFIX}_role"
"""
    if kind == "redis":
        return f"""[targets.redis]
type = "redis"
host = "{env("REDIS_HOST")}"
port = {env("REDIS_PORT")}
admin_user = "{env("REDIS_USER")}"
admin_password = "env:BENCH_REDIS_ADMIN"
acl_rules = "~ktb:* +@read +@write +@connection"
"""
    # `single` on a target with a second passwd-file would write the other file (as `dual`
    # does): single gets a target of one file.
    common = f'smtp_host = "{env("SMTP_HOST")}"\nsmtp_port = {env("SMTP_PORT")}\nsmtp_tls = "none"'
    return f"""[targets.smtp]
type = "dovecot"
path = "{env("PASSWD_FILE")}"
secondary_path = "{env("PASSWD_FILE2")}"
{common}

[targets.smtp-one]
type = "dovecot"
path = "{env("PASSWD_FILE")}"
{common}
"""


def credential_toml(kind: str, strategy: str) -> str:
    login = account(kind, strategy)
    users = (
        f'usernames = ["{login}", "{login}_b"]'
        if strategy == "alternating"
        else f'username = "{login}"'
    )
    return f"""[[credentials]]
id = "bench/{kind}-{strategy}"
tenant = "bench"
kind = "{"smtp" if kind == "smtp" else kind}"
policy = "bench"
target = "{"smtp-one" if (kind, strategy) == ("smtp", "single") else kind}"
strategy = "{strategy}"
{users}
initial_secret = "env:BENCH_INITIAL"
"""


def operation(kind: str) -> Callable[[Value], None]:
    """One unit of real work, on a new connection, with one value."""
    if kind == "postgres":
        import psycopg

        def pg(v: Value) -> None:
            with psycopg.connect(
                host=env("SCRAM_PG_HOST"),
                port=int(env("SCRAM_PG_PORT")),
                dbname="postgres",
                user=v.username,
                password=v.value,
                connect_timeout=10,
            ) as conn:
                conn.execute("SELECT 1").fetchone()

        return pg
    if kind == "mysql":
        import pymysql

        def my(v: Value) -> None:
            conn = pymysql.connect(
                host=env("MYSQL_HOST"),
                port=int(env("MYSQL_PORT")),
                user=v.username,
                password=v.value,
                database=f"ktb_{SUFFIX}",
                connect_timeout=10,
                autocommit=True,
            )
            try:
                with conn.cursor() as cursor:
                    cursor.execute("INSERT INTO writes (who) VALUES (%s)", (v.username,))
            finally:
                conn.close()

        return my
    if kind == "redis":
        import redis

        def rd(v: Value) -> None:
            conn = redis.Redis(
                host=env("REDIS_HOST"),
                port=int(env("REDIS_PORT")),
                username=v.username,
                password=v.value,
                socket_timeout=10,
            )
            try:
                key = f"ktb:{SUFFIX}:{threading.get_ident()}"
                conn.set(key, "1", ex=60)
                conn.get(key)
            finally:
                conn.close()

        return rd

    def smtp(v: Value) -> None:
        # One mechanism: `conn.login()` would try PLAIN, then LOGIN, and so make two failed
        # logins of one refusal (docs/consumers.md, "Mail clients").
        with smtplib.SMTP(env("SMTP_HOST"), int(env("SMTP_PORT")), timeout=10) as conn:
            conn.ehlo()
            conn.user, conn.password = v.username or "", v.value
            conn.auth("PLAIN", conn.auth_plain)

    return smtp


# -- the servers' side: what the bench makes and drops ----------------------------------------


def prepare(kinds: set[str]) -> None:
    """Objects the accounts work on, made with the admin logins before keyturn applies."""
    if "mysql" in kinds:
        _mysql(
            f"CREATE DATABASE IF NOT EXISTS ktb_{SUFFIX}",
            f"CREATE TABLE IF NOT EXISTS ktb_{SUFFIX}.writes "
            "(id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(80))",
            f"CREATE ROLE IF NOT EXISTS ktb_{SUFFIX}_role",
            f"GRANT INSERT, SELECT ON ktb_{SUFFIX}.* TO ktb_{SUFFIX}_role",
        )


def grant(kinds: set[str]) -> None:
    """After apply: the single MySQL account gets the role's privileges directly."""
    if "mysql" in kinds:
        login = account("mysql", "single")
        _mysql(f"GRANT INSERT, SELECT ON ktb_{SUFFIX}.* TO '{login}'@'%'")


def cleanup(kinds: set[str]) -> None:
    logins = {k: [account(k, s) for s in SUPPORTED[k]] for k in kinds}
    if "postgres" in kinds:
        import psycopg

        with psycopg.connect(
            host=env("SCRAM_PG_HOST"),
            port=int(env("SCRAM_PG_PORT")),
            dbname="postgres",
            user=env("SCRAM_PG_USER"),
            password=env("SCRAM_PG_PASSWORD"),
            autocommit=True,
        ) as conn:
            for login in [*logins["postgres"], f"{account('postgres', 'alternating')}_b"]:
                conn.execute(f'DROP ROLE IF EXISTS "{login}"')
            conn.execute(f'DROP ROLE IF EXISTS "ktb_{SUFFIX}_owner"')
    if "mysql" in kinds:
        users = [*logins["mysql"], f"{account('mysql', 'alternating')}_b"]
        _mysql(
            *(f"DROP USER IF EXISTS '{u}'@'%'" for u in users),
            f"DROP ROLE IF EXISTS ktb_{SUFFIX}_role",
            f"DROP DATABASE IF EXISTS ktb_{SUFFIX}",
        )
    if "redis" in kinds:
        import redis

        admin = redis.Redis(
            host=env("REDIS_HOST"),
            port=int(env("REDIS_PORT")),
            username=env("REDIS_USER"),
            password=env("REDIS_PASSWORD"),
        )
        admin.acl_deluser(*logins["redis"])
        admin.close()


def _mysql(*statements: str) -> None:
    import pymysql

    conn = pymysql.connect(
        host=env("MYSQL_HOST"),
        port=int(env("MYSQL_PORT")),
        user=env("MYSQL_USER"),
        password=env("MYSQL_PASSWORD"),
        autocommit=True,
    )
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        conn.close()


# -- keyturn ----------------------------------------------------------------------------------


@dataclass
class Keyturn:
    home: Path
    env: dict[str, str]
    url: str = ""
    token: str = ""

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*KEYTURN, *args], env=self.env, cwd=self.home, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"keyturn {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout


@contextmanager
def keyturn(combos: list[tuple[str, str]]) -> Iterator[Keyturn]:
    """A served keyturn holding one credential per target x strategy."""
    home = Path(tempfile.mkdtemp(prefix="kt-bench-zd-"))
    kinds = {k for k, _ in combos}
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    environ.update(
        {k: v for k, v in os.environ.items() if k.startswith("KEYTURN_TEST_")},
        KEYTURN_DB=f"sqlite:///{home / 'keyturn.db'}",
        KEYTURN_RETRY_BASE_SECONDS="1",
        KEYTURN_MASTER_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="),
        BENCH_INITIAL=f"Bench-{secrets.token_urlsafe(18)}",
        BENCH_PG_ADMIN=os.environ.get("KEYTURN_TEST_SCRAM_PG_PASSWORD", ""),
        BENCH_MYSQL_ADMIN=os.environ.get("KEYTURN_TEST_MYSQL_PASSWORD", ""),
        BENCH_REDIS_ADMIN=os.environ.get("KEYTURN_TEST_REDIS_PASSWORD", ""),
    )
    kt = Keyturn(home, environ)
    inventory = '[policies.bench]\nmax_age = "180d"\ngrace = "1h"\n\n'
    inventory += "\n".join(target_toml(k) for k in sorted(kinds))
    inventory += "\n".join(credential_toml(k, s) for k, s in combos)
    (home / "keyturn.toml").write_text(inventory)
    serve: subprocess.Popen[bytes] | None = None
    try:
        prepare(kinds)
        kt.cli("init", "--json")
        kt.cli("apply", "keyturn.toml")
        grant(kinds)
        issued = kt.cli("token", "create", "--role", "consumer", "--scope", "bench/*", "--json")
        kt.token = json.loads(issued)["token"]
        port = free_port()
        serve = subprocess.Popen(
            [*KEYTURN, "serve", "--port", str(port), "--log-level", "warning"],
            env=environ,
            cwd=home,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kt.url = f"http://127.0.0.1:{port}"
        wait_http(f"{kt.url}/api/v1/health", seconds=30)
        yield kt
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(30)
        cleanup(kinds)
        shutil.rmtree(home, ignore_errors=True)


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Result:
    kind: str
    strategy: str
    ops: int = 0
    failed: int = 0
    fallbacks: int = 0
    retries: int = 0  # temporary failures (SMTP 454) the SDK tried again
    rotations: int = 0
    idle: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    revoke_waits: list[float] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)  # rotation steps a target failed

    @staticmethod
    def p99(latencies: list[float]) -> float:
        if len(latencies) < 2:
            return latencies[0] * 1000 if latencies else 0.0
        return statistics.quantiles(latencies, n=100)[98] * 1000


class Load:
    """*threads* threads doing `operation(kind)` through one SDK client until stopped."""

    def __init__(self, kt: Keyturn, kind: str, strategy: str, threads: int) -> None:
        self.result = Result(kind, strategy)
        self.id = f"bench/{kind}-{strategy}"
        self.client = Client(
            kt.url,
            kt.token,
            consumer=f"bench-{kind}-{strategy}",
            report_every=5,
            budget=FailureBudget(limit=10_000, seconds=60),
            auth_failure=PREDICATES[kind],
        )
        self.work = operation(kind)
        self.rotating = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            try:
                self.client.use(self.id, self.work)
                failed = None
            except Exception as exc:  # a failed operation: what the bench counts
                failed = _failure(exc)
            took = time.perf_counter() - began
            with self.lock:
                self.result.ops += 1
                (self.result.busy if self.rotating.is_set() else self.result.idle).append(took)
                if failed:
                    self.result.failed += 1
                    self.result.errors.append(failed)

    def __enter__(self) -> Load:
        self.client.get(self.id)
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        self.result.fallbacks = self.client.state.fallbacks
        self.result.retries = self.client.state.retries
        self.client.close()


def _failure(exc: BaseException) -> str:
    """What failed, with the server's code where the driver gives one (SMTP 535 or 454)."""
    code = getattr(exc, "smtp_code", None)
    return type(exc).__name__ + (f" {code}" if code else "")


def rotate_until_done(app: Any, credential_id: str, result: Result) -> None:
    """One rotation, resumed until its revoke (the wait step waits for the consumer; a step
    a target failed temporarily is retried, and counted)."""
    from keyturn.domain.model import RotationStatus, Trigger
    from keyturn.engine import service

    outcome = service.rotate(
        app, credential_id, trigger=Trigger.MANUAL, actor="bench", reason="bench"
    )
    waited = time.perf_counter()
    deadline = time.monotonic() + 180
    while outcome.status != RotationStatus.DONE and time.monotonic() < deadline:
        if outcome.status not in (RotationStatus.WAITING, RotationStatus.RETRYING):
            break
        retrying = outcome.status == RotationStatus.RETRYING
        if retrying:
            result.retries.append(outcome.error or "")
        time.sleep(1.0 if retrying else 0.1)
        found = service.resume(app, credential_id, force=retrying)
        outcome = next((o for o in found if not isinstance(o, Exception)), outcome)
    if outcome.status != RotationStatus.DONE:
        raise SystemExit(f"{credential_id}: rotation ended {outcome.status}: {outcome.error}")
    result.revoke_waits.append(time.perf_counter() - waited)
    result.rotations += 1


def measure(kt: Keyturn, kind: str, strategy: str, args: argparse.Namespace) -> Result:
    from keyturn.app import Keyturn as App
    from keyturn.settings import Settings

    # The rotations run in this process: its environment resolves the admins' env: refs
    # (and is put back afterwards: the suite runs this in its own process).
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in kt.env.items() if k.startswith(("BENCH_", "KEYTURN_"))})
    app = App.open(Settings.load({"db": kt.env["KEYTURN_DB"]}, None))
    try:
        with Load(kt, kind, strategy, args.threads) as load:
            time.sleep(args.idle)
            load.rotating.set()
            for number in range(args.rotations):
                if number and args.pause:
                    time.sleep(args.pause)  # real rotations are days apart, not back to back
                rotate_until_done(app, load.id, load.result)
            time.sleep(1)  # the operations in flight at the last revoke
            load.rotating.clear()
        return load.result
    finally:
        app.close()
        os.environ.clear()
        os.environ.update(saved)


def run(args: argparse.Namespace) -> list[Result]:
    combos = [(k, s) for k in SUPPORTED for s in SUPPORTED[k]]
    if args.only:
        wanted = {tuple(c.split(":", 1)) for c in args.only.split(",")}
        combos = [c for c in combos if c in wanted]
    results = []
    with keyturn(combos) as kt:
        for kind, strategy in combos:
            results.append(measure(kt, kind, strategy, args))
            if args.verbose:
                report(results[-1:], total=False)
    return results


def report(results: list[Result], total: bool = True) -> None:
    head = f"{'target':<9} {'strategy':<12} {'rot':>4} {'ops':>7} {'failed':>6} {'fallbk':>6} "
    head += f"{'retry':>5} "
    head += f"{'p99 idle':>9} {'p99 rot':>9} {'ratio':>6} {'revoke wait':>12}"
    print(head)
    for r in results:
        idle, busy = Result.p99(r.idle), Result.p99(r.busy)
        wait = max(r.revoke_waits, default=0.0)
        print(
            f"{r.kind:<9} {r.strategy:<12} {r.rotations:>4} {r.ops:>7} {r.failed:>6} "
            f"{r.fallbacks:>6} {r.retries:>5} {idle:>7.1f}ms {busy:>7.1f}ms "
            f"{busy / idle if idle else 0:>5.1f}x "
            f"{'max ' + format(wait, '.1f') + 's':>12}"
        )
        if r.errors:
            print(f"  failures: {sorted(set(r.errors))}")
        if r.retries:
            print(f"  rotation steps retried: {len(r.retries)} ({sorted(set(r.retries))[:3]})")
    if total:
        print(f"failed operations in total: {sum(r.failed for r in results)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=50, help="per target x strategy")
    parser.add_argument("--threads", type=int, default=4, help="client threads per credential")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle load first")
    parser.add_argument("--only", default="", help="e.g. postgres:single,redis:dual")
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds between rotations (0: back to back)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="each result as it ends")
    args = parser.parse_args()
    results = run(args)
    print("\nall targets x strategies:" if args.verbose else "", flush=True)
    report(results)
    sys.exit(1 if any(r.failed for r in results) else 0)


if __name__ == "__main__":
    main()
