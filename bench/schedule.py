"""Scheduler benchmarks; prints figures and ratios against references from the same run.

    python bench/schedule.py                    # 1,000,000 credentials, workers 1/2/4
    python bench/schedule.py --count 100000 --rotations 100

1. Due selection: the time to find what is due among N credentials (the scheduler's indexed
   range query on `due_at`), on SQLite and on PostgreSQL, against a reference measured in the
   same run: reading every credential's due time and filtering in Python (a full scan).
2. Rotations per second with 1, 2 and 4 `keyturn worker` processes over one PostgreSQL, on a
   fast target (passwd-file, SHA512-CRYPT at its minimum of 1000 rounds, one file per 20
   credentials); the ratio is against one worker.

Needs the PostgreSQL of scripts/services (KEYTURN_TEST_PG_URL, from .test-env).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, update  # noqa: E402

from keyturn.app import Keyturn, initialise  # noqa: E402
from keyturn.crypto.keys import encode_key, generate_key  # noqa: E402
from keyturn.db.models import Credential, Rotation, Tenant, Version  # noqa: E402
from keyturn.scheduler.passes import due  # noqa: E402
from keyturn.settings import Settings  # noqa: E402

NOW = datetime(2027, 1, 1, 2, 0, tzinfo=UTC)


def pg_database() -> tuple[str, str]:
    import psycopg
    from sqlalchemy.engine import make_url

    base = os.environ.get("KEYTURN_TEST_PG_URL")
    if not base:
        sys.exit("set KEYTURN_TEST_PG_URL (scripts/services writes it to .test-env)")
    url = make_url(base)
    name = "ktbench_" + secrets.token_hex(4)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False), admin


def drop(admin: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_app(url: str, key: str) -> Keyturn:
    os.environ["KEYTURN_MASTER_KEY"] = key
    initialise(Settings(db=url, master_key=key))
    return Keyturn.open(Settings(db=url, master_key=key))


def populate(app: Keyturn, count: int) -> None:
    """N credentials with due times spread over a year (about 1% due at NOW)."""
    with app.db.write() as session:
        session.add(Tenant(id="bench", data_key_id="-"))
    rng = secrets.SystemRandom()
    batch = 20_000
    for start in range(0, count, batch):
        rows = []
        for i in range(start, min(start + batch, count)):
            due_at = NOW + timedelta(days=rng.uniform(-3.65, 361.35))
            rows.append(
                {
                    "id": f"bench/c{i:07d}",
                    "tenant_id": "bench",
                    "kind": "generic",
                    "owner": "",
                    "purpose": "",
                    "tags": {},
                    "strategy": "single",
                    "stores": [],
                    "usernames": [],
                    "schedule": "0 2 * * *",
                    "due_at": due_at,
                    "notice_at": due_at - timedelta(days=7),
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
        with app.db.write() as session:
            session.execute(insert(Credential), rows)


def time_it(fn, repeat: int = 3) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def full_scan(app: Keyturn) -> list[str]:
    with app.db.read() as session:
        rows = session.execute(select(Credential.id, Credential.due_at)).all()
    return sorted(cid for cid, due_at in rows if due_at is not None and due_at <= NOW)


def bench_due(name: str, url: str, key: str, count: int) -> None:
    app = open_app(url, key)
    try:
        started = time.perf_counter()
        populate(app, count)
        fill = time.perf_counter() - started
        indexed, found = time_it(lambda: due(app, NOW))
        scanned, reference = time_it(lambda: full_scan(app))
        assert found == reference, "the due query and the full scan disagree"
        print(
            f"due selection, {name:10}: {count:>9,} credentials (filled in {fill:5.1f}s), "
            f"{len(found):,} due: {indexed * 1000:8.1f} ms; full scan {scanned * 1000:8.1f} ms; "
            f"ratio {scanned / indexed:6.1f}x faster"
        )
    finally:
        app.close()


def bench_workers(key: str, rotations: int) -> None:
    results: dict[int, float] = {}
    for workers in (1, 2, 4):
        url, admin = pg_database()
        home = Path(tempfile.mkdtemp(prefix="ktbench-"))
        try:
            results[workers] = run_workers(url, key, home, workers, rotations)
        finally:
            drop(admin, url)
    base = results[1]
    for workers, rate in results.items():
        print(
            f"rotations/s, {workers} worker(s) on PostgreSQL: {rate:7.1f} "
            f"({rate / base:4.2f}x one worker)"
        )


def run_workers(url: str, key: str, home: Path, workers: int, count: int) -> float:
    from keyturn.inventory import apply as applier
    from keyturn.inventory.spec import parse

    app = open_app(url, key)
    lines = ['[policies.p]\nmax_age = "90d"\ngrace = "0s"\n']
    for t in range(max(count // 20, 1)):
        lines.append(f'[targets.t{t}]\ntype = "passwd-file"\npath = "t{t}.passwd"\nrounds = 1000\n')
    for i in range(count):
        lines.append(
            f'[[credentials]]\nid = "bench/r{i:05d}"\npolicy = "p"\n'
            f'target = "t{i // 20}"\nusername = "u{i}"\ninitial_secret = "env:PW"\n'
        )
    os.environ["PW"] = "bench-initial-password"
    applier.apply(app, parse("\n".join(lines)), home)
    with app.db.write() as session:
        session.execute(update(Version).values(activated_at=NOW - timedelta(days=91)))
        session.execute(update(Credential).values(due_at=datetime.now(UTC) - timedelta(hours=1)))
    env = {
        **os.environ,
        "KEYTURN_DB": url,
        "KEYTURN_MASTER_KEY": key,
        "KEYTURN_POLL_SECONDS": "1",
        "KEYTURN_CONCURRENCY": "4",
        "PYTHONPATH": str(ROOT),
    }
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "keyturn.cli.main", "worker"],
            env={**env, "KEYTURN_WORKER_ID": f"w{i}"},
            cwd=home,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with app.db.read() as session:
                done = session.scalar(
                    select(func.count()).select_from(Rotation).where(Rotation.status == "done")
                )
            if done == count:
                break
            if all(proc.poll() is not None for proc in procs):
                raise SystemExit(f"every worker exited; {done} of {count} rotations done")
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        app.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--rotations", type=int, default=200)
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()
    key = encode_key(generate_key().material)
    with tempfile.TemporaryDirectory(prefix="ktbench-") as tmp:
        bench_due("SQLite", f"sqlite:///{tmp}/bench.db", key, args.count)
    url, admin = pg_database()
    try:
        bench_due("PostgreSQL", url, key, args.count)
    finally:
        drop(admin, url)
    if not args.skip_workers:
        bench_workers(key, args.rotations)


if __name__ == "__main__":
    main()
