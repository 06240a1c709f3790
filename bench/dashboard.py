"""Benchmark: the dashboard's inventory page over 100,000 credentials.

    python bench/dashboard.py                  # 100,000 credentials on SQLite
    python bench/dashboard.py --count 100000 --postgres   # also on PostgreSQL (.test-env)

Fills a keyturn database with N credentials (20 tenants, 5 kinds, a current version each,
1% with a failed rotation, due times spread over a year), signs in, and times whole
requests of the inventory page in-process (routing, session check, queries, template):
the first page, each sort, each filter, a search, and page 2 through the keyset cursor.
Best of 5 for each, in milliseconds. The reference, from the same run and database, is the
plain way to a first page (read every id, sort, take 50), which also checks the page's rows.
`--api` also times the API's `GET /api/v1/credentials?limit=50`, which computes every
credential's due status before it pages (minutes at 100,000).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from keyturn import auth  # noqa: E402
from keyturn.api import create_app  # noqa: E402
from keyturn.app import Keyturn, initialise  # noqa: E402
from keyturn.crypto.keys import encode_key, generate_key  # noqa: E402
from keyturn.db.models import Credential, Rotation, Tenant, Version, utcnow  # noqa: E402
from keyturn.settings import Settings  # noqa: E402

KINDS = ("postgres", "mysql", "smtp", "api-key", "redis")
TENANTS = [f"t{n:02d}" for n in range(20)]
PAGES = {
    "first page (by id)": "/",
    "by next rotation": "/?sort=next",
    "by owner": "/?sort=owner",
    "status due": "/?status=due",
    "tenant t07, kind smtp": "/?tenant=t07&kind=smtp",
    "search 'c00123'": "/?q=c00123",
}


def populate(app: Keyturn, count: int) -> None:
    now = utcnow()
    rng = secrets.SystemRandom()
    with app.db.write() as session:
        session.add_all(Tenant(id=t, data_key_id="-") for t in TENANTS)
    for start in range(0, count, 20_000):
        creds, versions, rotations = [], [], []
        for i in range(start, min(start + 20_000, count)):
            tenant, age = TENANTS[i % len(TENANTS)], rng.uniform(0, 200)
            due = now + timedelta(days=180 - age)
            cid = f"{tenant}/c{i:07d}"
            creds.append(
                {
                    "id": cid,
                    "tenant_id": tenant,
                    "kind": KINDS[i % len(KINDS)],
                    "owner": f"team-{i % 37}",
                    "purpose": "",
                    "tags": {},
                    "strategy": "single",
                    "stores": [],
                    "usernames": [],
                    "schedule": "0 2 * * *",
                    "due_at": due,
                    "notice_at": due - timedelta(days=7),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            versions.append(
                {
                    "credential_id": cid,
                    "number": 1,
                    "state": "current",
                    "ciphertext": b"-",
                    "data_key_id": "-",
                    "fingerprint": "0" * 64,
                    "created_at": now - timedelta(days=age),
                    "activated_at": now - timedelta(days=age),
                }
            )
            if i % 100 == 0:
                rotations.append(
                    {
                        "credential_id": cid,
                        "trigger": "schedule",
                        "actor": "scheduler",
                        "reason": "",
                        "strategy": "single",
                        "step": "set",
                        "status": "failed",
                        "attempts": 5,
                        "error": "target refused",
                        "started_at": now,
                        "updated_at": now,
                    }
                )
        with app.db.write() as session:
            session.execute(insert(Credential), creds)
            session.execute(insert(Version), versions)
            session.execute(insert(Rotation), rotations)


def best_ms(client: TestClient, path: str, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        best = min(best, time.perf_counter() - started)
        assert answer.status_code == 200, (path, answer.status_code)
    return best * 1000


def first_page_by_scan(app: Keyturn) -> list[str]:
    """The plain way, as the oracle: read every id, sort, take the first page."""
    with app.db.read() as session:
        ids = list(session.execute(select(Credential.id)).scalars())
    return sorted(ids)[:50]


def run(name: str, url: str, count: int, with_api: bool = False) -> None:
    key = encode_key(generate_key().material)
    os.environ["KEYTURN_MASTER_KEY"] = key
    initialise(Settings(db=url, master_key=key))
    app = Keyturn.open(Settings(db=url, master_key=key))
    try:
        started = time.perf_counter()
        populate(app, count)
        print(f"{name}: {count:,} credentials filled in {time.perf_counter() - started:.1f}s")
        with app.db.write() as session:
            token = auth.create_token(session, "admin").token
        with TestClient(create_app(app)) as client:
            form = client.get("/signin").text
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form)
            assert csrf
            client.post("/signin", data={"token": token, "csrf": csrf[1]})
            timings = {label: best_ms(client, path) for label, path in PAGES.items()}
            after = re.search(r'rel="next" href="[^"]*after=([^"&]+)', client.get("/").text)
            assert after, "no next page"
            timings["page 2 (keyset cursor)"] = best_ms(client, f"/?after={after[1]}")
            started = time.perf_counter()
            oracle = first_page_by_scan(app)
            reference = (time.perf_counter() - started) * 1000
            shown = re.findall(r'<tr data-id="([^"]+)"', client.get("/").text)
            assert shown == oracle, "the page and the full scan disagree"
            if with_api:
                api = {"Authorization": f"Bearer {token}"}
                started = time.perf_counter()
                assert client.get("/api/v1/credentials?limit=50", headers=api).status_code == 200
                print(f"  API list, limit=50: {time.perf_counter() - started:8.1f} s")
        first = timings["first page (by id)"]
        for label, ms in timings.items():
            print(f"  inventory, {label:26} {ms:8.1f} ms")
        print(
            f"  reference: full scan, sort, take 50 {reference:6.1f} ms; "
            f"first page {reference / first:5.1f}x faster"
        )
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument(
        "--api", action="store_true", help="also time the API's list (minutes at 100,000)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("SQLite", f"sqlite:///{tmp}/bench.db", args.count, args.api)
    if args.postgres:
        sys.path.insert(0, str(ROOT / "bench"))
        from schedule import drop, pg_database

        url, admin = pg_database()
        try:
            run("PostgreSQL", url, args.count, args.api)
        finally:
            drop(admin, url)


if __name__ == "__main__":
    main()
