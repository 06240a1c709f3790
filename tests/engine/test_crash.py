"""Fault injection: a rotation SIGKILLed at every step boundary and inside every step.

Each case runs `keyturn rotate` in a child process that kills itself at one point (before a
step, after its outside effect but before its pointer commit, after the commit), then runs
`keyturn resume` as a restarted worker. Afterwards the target must accept exactly the value
keyturn holds as current, the versions must be consistent, and the rotation must have made
one new value, not two.
"""

from __future__ import annotations

import os
import signal

import pytest

from keyturn.domain.model import Step
from tests.engine.conftest import INITIAL
from tests.support.keyturn import Harness

POINTS = [
    f"{step}:{where}"
    for step in Step
    if step != Step.DONE
    for where in ("before", "effect", "after")
    if not (step == Step.WAIT and where == "effect")
]
# On PostgreSQL (the suite's second pass) a representative subset keeps the run short.
if os.environ.get("KEYTURN_TEST_DB") == "postgres":
    POINTS = [
        "create:effect",
        "set:effect",
        "test:effect",
        "publish:effect",
        "finish:effect",
        "revoke:effect",
    ]
OLD_USER = {"single": "admin@acme.example", "dual": "admin@acme.example", "alternating": "app"}


def test_there_are_enough_points() -> None:
    assert len(POINTS) >= 12 or os.environ.get("KEYTURN_TEST_DB") == "postgres"


@pytest.mark.parametrize("strategy", ["single", "alternating", "dual"])
@pytest.mark.parametrize("point", POINTS)
def test_crash_then_resume(kt: Harness, setup, strategy: str, point: str) -> None:  # type: ignore[no-untyped-def]
    s = setup(strategy)
    worker = {"KEYTURN_WORKER_ID": "worker-1"}
    crashed = kt.spawn(
        "rotate",
        "acme/smtp-admin",
        "--reason",
        "crash test",
        env={**worker, "KEYTURN_TEST_CRASH_AT": point},
    )
    assert crashed.code == -signal.SIGKILL, (crashed.out, crashed.err)
    # The restarted worker (same id, so it may take its own lease back at once).
    resumed = kt.cli("resume", "--now", env=worker)
    assert resumed.code == 0, resumed.err
    values = s.values()
    states = sorted(state for state, _, _ in values.values())
    assert states == ["current", "retired"], values.keys()
    user, current = s.current()
    assert current != INITIAL
    assert s.accepts(user, current)
    assert not s.accepts(OLD_USER[strategy], INITIAL)
    show = kt.cli("show", "acme/smtp-admin", "--json")
    assert '"status": "done"' in show.out
    assert kt.cli("audit", "verify").code == 0
