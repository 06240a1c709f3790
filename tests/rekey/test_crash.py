"""SIGKILL during `keyturn rekey --data-keys`, then run it again: nothing lost, nothing twice.

The child process kills itself at a checkpoint inside the batch loops (before a batch's
commit, or just after it). The rerun must finish the job from the rows alone: every value
decrypts with the new key, under a fresh data key, and equals what was stored.
"""

from __future__ import annotations

import os
import random
import signal

import pytest
from sqlalchemy import select

from keyturn.db.models import Meta, Tenant
from tests.rekey.conftest import populate
from tests.support.keyturn import Harness

VERSIONS, BATCH = 200, 10
ALL_POINTS = [
    "rekey:begun",
    "rekey:keys:commit",
    "rekey:wrap:1:commit",
    "rekey:wrap:1:after",
    "rekey:tenants:1:commit",
    *(f"rekey:versions:{n}:{where}" for n in range(1, 21) for where in ("commit", "after")),
]
# Random, but the same on every run so that a failure can be replayed.
POINTS = random.Random(2).sample(ALL_POINTS, 20)
if os.environ.get("KEYTURN_TEST_DB") == "postgres":
    POINTS = POINTS[:8]
TWICE = [tuple(random.Random(n).sample(ALL_POINTS, 2)) for n in range(2)]


def _crash(kt: Harness, env: dict[str, str], point: str) -> None:
    crashed = kt.spawn(
        "rekey",
        "--data-keys",
        "--no-backup",
        "--batch-size",
        str(BATCH),
        env={**env, "KEYTURN_TEST_CRASH_AT": point},
    )
    assert crashed.code == -signal.SIGKILL, (point, crashed.out, crashed.err)


def _finish(kt: Harness, env: dict[str, str]) -> None:
    resumed = kt.cli("rekey", "--no-backup", "--json", env=env)
    assert resumed.code == 0, resumed.err


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_rekey_killed_then_rerun(kt: Harness, point: str) -> None:
    stored = populate(kt, VERSIONS)
    _crash(kt, stored.rekey_env, point)
    _finish(kt, stored.rekey_env)
    stored.check_all_under_new_key(fresh_data_keys=True)
    app = stored.open(stored.new_key)
    try:
        with app.db.read() as session:
            assert session.execute(select(Meta).where(Meta.key == "rekey")).first() is None
    finally:
        app.close()
    assert kt.cli("audit", "verify", env={"KEYTURN_MASTER_KEY": stored.new_key}).code == 0


@pytest.mark.slow
@pytest.mark.parametrize("points", TWICE[:1] if os.environ.get("KEYTURN_TEST_DB") else TWICE)
def test_rekey_killed_twice(kt: Harness, points: tuple[str, str]) -> None:
    stored = populate(kt, VERSIONS)
    first, second = sorted(points, key=ALL_POINTS.index)
    _crash(kt, stored.rekey_env, first)
    if ALL_POINTS.index(second) > ALL_POINTS.index(first):
        _crash(kt, stored.rekey_env, second)
    _finish(kt, stored.rekey_env)
    stored.check_all_under_new_key(fresh_data_keys=True)


@pytest.mark.parametrize("point", ["rekey:tenants:1:commit", "rekey:tenants:2:commit"])
def test_rekey_killed_between_tenant_batches(kt: Harness, point: str) -> None:
    """Batches of one tenant, killed just before a batch commits: the tenants of the batches
    before it have switched to fresh keys, the others not yet; the rerun finishes."""
    stored = populate(kt, 30)
    crashed = kt.spawn(
        "rekey",
        "--data-keys",
        "--no-backup",
        "--batch-size",
        "1",
        env={**stored.rekey_env, "KEYTURN_TEST_CRASH_AT": point},
    )
    assert crashed.code == -signal.SIGKILL, crashed.err
    with stored.kt.app.db.read() as session:
        fresh = session.execute(select(Tenant.data_key_id)).scalars().all()
    assert len(set(fresh) - stored.data_keys) == int(point.split(":")[2]) - 1
    _finish(kt, stored.rekey_env)
    stored.check_all_under_new_key(fresh_data_keys=True)


def test_plain_rekey_killed_then_rerun_with_data_keys(kt: Harness) -> None:
    stored = populate(kt, 40)
    crashed = kt.spawn(
        "rekey", "--no-backup", env={**stored.rekey_env, "KEYTURN_TEST_CRASH_AT": "rekey:begun"}
    )
    assert crashed.code == -signal.SIGKILL, crashed.err
    resumed = kt.cli("rekey", "--data-keys", "--no-backup", "--json", env=stored.rekey_env)
    assert resumed.code == 0, resumed.err
    stored.check_all_under_new_key(fresh_data_keys=True)
