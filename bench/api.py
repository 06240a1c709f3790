"""Benchmark: audited secret reads, keyturn against OpenBao, driven by a C load generator.

    python bench/api.py                       # 3 rounds of 5 s per server, 20 connections
    python bench/api.py --rounds 5 --seconds 10 --workers 1,2 --db sqlite,postgres
    python bench/api.py --client ab           # ApacheBench instead of wrk (see below)

Starts, on free loopback ports: `keyturn serve --workers N` for each database (SQLite in a
temporary folder; a fresh database on the PostgreSQL of KEYTURN_TEST_PG_URL, so source
.test-env first) and each N; two private `bao server -dev` (in-memory storage), one plain
with the root token, one with a file audit device and a token whose policy may read only the
benchmark's path. Every server holds the same value. The load comes from a C program that is
not the bottleneck the way Python clients are, installed from Debian when missing: wrk
(HTTP/1.1 keep-alive, the default) or ApacheBench (`ab`, apache2-utils). ab speaks HTTP/1.0,
and uvicorn closes an HTTP/1.0 connection after every response where OpenBao keeps it open:
with ab keyturn pays a new TCP connection per read and OpenBao does not, which is why wrk is
the default. Each round drives every server once, in an order rotated each round, so that a
noisy machine weighs on all of them alike. Prints medians over the rounds (req/s, p50, p99,
and the CPU time the server's processes spent a request, read from /proc) and
keyturn/OpenBao ratios from the same run.

Like for like: every keyturn read is an audit entry committed to its database before the
value is sent, and a decryption under a per-tenant data key; "OpenBao audited" logs every
request and response to its file device before answering, and checks an ACL policy.

Measured 2026-12-02 on 2 shared cores (load average about 2), `python bench/api.py --rounds 3
--seconds 5 --db sqlite,postgres --workers 1,2` (req/s, p99, server CPU a read; x OpenBao
audited of the same run): OpenBao audited 2383 req/s, p99 67 ms, 758 µs; keyturn SQLite x1
2323 (0.98x, p99 0.27x, CPU 0.61x), x2 2825 (1.19x, p99 0.25x, CPU 0.63x); PostgreSQL x1 2043
(0.86x, p99 0.42x), x2 1606 (0.67x). The day before, with the same bench, keyturn SQLite x1 was
0.43-0.48x: the lookup and the audit append now run on DBAPI connections the threads keep
(keyturn.db.direct), the plain read is answered ahead of FastAPI's layers, and the read threads
settle their caller's future directly (keyturn.api.reading.Readers).

The same bench on 2026-12-03, three runs on one quiet machine of the same kind (`--db sqlite
--workers 1,2`, 3-5 rounds of 5 s), keyturn SQLite x2 against OpenBao audited of the same
run: 0.92x req/s (p99 0.29x), 0.80x (p99 0.51x), 1.43x (p99 0.27x); CPU a read 0.52-0.81x
of OpenBao audited's. The throughput ratio moves with the host's noise by more than any
single change measures; the CPU a read and the p99 are the steadier figures.
"""

from __future__ import annotations

import argparse
import csv
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx
from servers import (
    KEYTURN,
    bao_server,
    bao_version,
    cpu_seconds,
    free_port,
    keyturn_home,
    process,
    wait_http,
)

CRED = "bench/app"


@dataclass
class Target:
    name: str
    url: str
    header: str  # "Name: value"
    pid: int = 0  # the server's process: its CPU time per request is measured too
    rates: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # server CPU µs a request

    def value(self) -> str:
        name, _, token = self.header.partition(": ")
        body = httpx.get(self.url, headers={name: token}, timeout=10).json()
        return str(body["value"] if "value" in body else body["data"]["data"]["value"])


def ensure(tool: str, package: str) -> str:
    """The path of *tool*, installed from Debian's *package* when missing."""
    found = shutil.which(tool)
    if found:
        return found
    print(f"{tool} missing: apt-get install {package}", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-qq", package]
    if subprocess.run(install, capture_output=True, check=False).returncode:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        subprocess.run(install, capture_output=True, check=True)
    found = shutil.which(tool)
    if not found:
        raise SystemExit(f"{tool} is still missing after apt-get install {package}")
    return found


def _ms(text: str) -> float:
    """wrk's latency ("812.00us", "1.52ms", "2.01s") in milliseconds."""
    number = float(re.sub(r"[a-z]+$", "", text))
    return number * {"us": 0.001, "ms": 1.0, "s": 1000.0}[re.sub(r"^[\d.]+", "", text)]


def wrk(
    binary: str, target: Target, seconds: float, concurrency: int
) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, requests) of one wrk run: HTTP/1.1 keep-alive connections."""
    done = subprocess.run(
        [
            binary,
            "-t2",
            f"-c{concurrency}",
            f"-d{seconds:g}s",
            "--latency",
            "-H",
            target.header,
            target.url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    out = done.stdout
    if done.returncode or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"{target.name}: wrk failed or got errors:\n{out}{done.stderr}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+([\d.]+[a-z]+)", out)
    p99 = re.search(r"99%\s+([\d.]+[a-z]+)", out)
    count = re.search(r"(\d+) requests in", out)
    assert rate and p50 and p99 and count, out
    return float(rate[1]), _ms(p50[1]), _ms(p99[1]), int(count[1])


def ab(
    binary: str, target: Target, requests: int, concurrency: int
) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, requests) of one ApacheBench run. ab speaks HTTP/1.0: uvicorn closes
    such a connection after each response (OpenBao keeps it), so keyturn pays a TCP
    connection per request here and not with wrk."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as percentiles:
        done = subprocess.run(
            [
                *(binary, "-q", "-k", "-c", str(concurrency), "-n", str(requests)),
                *("-e", percentiles.name, "-H", target.header, target.url),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        out = done.stdout
        if done.returncode or "Non-2xx responses" in out:
            raise SystemExit(f"{target.name}: ab failed or got errors:\n{out}{done.stderr}")
        failed = re.search(r"Failed requests:\s+(\d+)", out)
        if failed and int(failed[1]):
            raise SystemExit(f"{target.name}: {failed[1]} failed requests\n{out}")
        with open(percentiles.name) as table:
            rows = {int(r[0]): float(r[1]) for r in csv.reader(table) if r[0].isdigit()}
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    assert rate, out
    return float(rate[1]), rows[50], rows[99], requests


def keyturn_targets(
    value: str, dbs: list[str], workers: list[int], stack: ExitStack
) -> list[Target]:
    """`keyturn serve --workers N` for each database and N (one installation per database)."""
    targets = []
    inventory = f'[[credentials]]\nid = "{CRED}"\ninitial_secret = "env:BENCH_VALUE"\n'
    for db in dbs:
        kt = stack.enter_context(keyturn_home(db, inventory, {"BENCH_VALUE": value}))
        token = kt.token("consumer", "bench/*")
        for n in workers:
            port = free_port()
            args = [*KEYTURN, "serve", "--port", str(port), "--workers", str(n)]
            server = process([*args, "--log-level", "warning"], kt.env, kt.home)
            pid = stack.enter_context(server).pid
            base = f"http://127.0.0.1:{port}/api/v1"
            wait_http(f"{base}/health")
            url = f"{base}/credentials/{CRED}/secret"
            auth = f"Authorization: Bearer {token}"
            targets.append(Target(f"keyturn {db} x{n}", url, auth, pid))
    return targets


def bao_targets(value: str, stack: ExitStack) -> list[Target]:
    out = []
    for audited in (False, True):
        bao = stack.enter_context(bao_server(audited))
        bao.call("POST", f"secret/data/{CRED}", {"data": {"value": value}})
        token = bao.root
        if audited:
            if not (bao.home / "audit.log").stat().st_size:
                raise SystemExit("OpenBao's audit log is empty: the audit device is not on")
            token = bao.policy_token(
                "reader", f'path "secret/data/{CRED}" {{ capabilities = ["read"] }}'
            )
        name = "OpenBao audited" if audited else "OpenBao"
        url = f"{bao.base}/v1/secret/data/{CRED}"
        out.append(Target(name, url, f"X-Vault-Token: {token}", bao.pid))
    return out


def report(targets: list[Target], args: argparse.Namespace) -> None:
    print(
        f"GET secret: {args.rounds} rounds, {args.concurrency} connections ({args.client}), "
        f"loopback; {bao_version()}"
    )
    print(
        f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU µs/req':>12}"
        "   (medians over rounds; CPU: the server's processes)"
    )
    for t in targets:
        rate, p50, p99, cpu = (statistics.median(x) for x in (t.rates, t.p50s, t.p99s, t.cpus))
        print(f"{t.name:22}{rate:10.0f}{p50:10.2f}{p99:10.2f}{cpu:12.0f}")
    refs = [t for t in targets if t.name.startswith("OpenBao")]
    print(
        f"\n{'ratio (x OpenBao)':22}"
        + "".join(f"{r.name + ' req/s':>24}{'p99':>8}{'CPU':>8}" for r in refs)
    )
    for t in targets:
        if t.name.startswith("OpenBao"):
            continue
        cells = ""
        for ref in refs:
            rate = statistics.median(t.rates) / statistics.median(ref.rates)
            p99 = statistics.median(t.p99s) / statistics.median(ref.p99s)
            cpu = statistics.median(t.cpus) / statistics.median(ref.cpus)
            cells += f"{rate:23.2f}x{p99:7.2f}x{cpu:7.2f}x"
        print(f"{t.name:22}{cells}")
    print(
        "(req/s above 1x: keyturn serves more; p99 below 1x: keyturn's slowest reads are faster;"
        " CPU below 1x: keyturn's server spends less CPU a read, the steadier figure on a busy"
        " machine; keyturn on PostgreSQL: its database server's CPU is not counted, OpenBao's"
        " in-memory storage is)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--client", choices=("wrk", "ab"), default="wrk")
    parser.add_argument("--seconds", type=float, default=5, help="wrk: seconds a run")
    parser.add_argument("--requests", type=int, default=4000, help="ab: reads a run")
    parser.add_argument("--concurrency", type=int, default=20, help="connections")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="keyturn serve --workers values")
    parser.add_argument("--db", default="sqlite,postgres", help="keyturn state databases")
    args = parser.parse_args()
    if args.client == "wrk":
        binary = ensure("wrk", "wrk")

        def load(t: Target, warm: bool = False) -> tuple[float, float, float, int]:
            return wrk(binary, t, 1 if warm else args.seconds, args.concurrency)
    else:
        binary = ensure("ab", "apache2-utils")

        def load(t: Target, warm: bool = False) -> tuple[float, float, float, int]:
            return ab(binary, t, 500 if warm else args.requests, args.concurrency)

    value = secrets.token_urlsafe(24)
    workers = [int(n) for n in args.workers.split(",")]
    with ExitStack() as stack:
        targets = keyturn_targets(value, args.db.split(","), workers, stack)
        targets += bao_targets(value, stack)
        for t in targets:
            if t.value() != value:
                raise SystemExit(f"{t.name} returned a different value")
            load(t, warm=True)
        for round_ in range(args.rounds):
            shift = round_ % len(targets)
            for t in targets[shift:] + targets[:shift]:
                used = cpu_seconds(t.pid)
                rate, p50, p99, count = load(t)
                t.cpus.append((cpu_seconds(t.pid) - used) / count * 1e6)
                t.rates.append(rate)
                t.p50s.append(p50)
                t.p99s.append(p99)
                line = f"  round {round_ + 1}: {t.name:22}{rate:8.0f} req/s  p99 {p99:.1f} ms"
                print(line, file=sys.stderr)
        report(targets, args)


if __name__ == "__main__":
    main()
