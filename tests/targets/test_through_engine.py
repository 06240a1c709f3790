"""PostgreSQL, MariaDB and Redis rotated through keyturn: `apply`, `rotate`, `resume`.

Every check logs in with a fresh driver connection and the value `keyturn get` prints, so
these tests prove what a consumer would see, not what the plugin believes.
"""

from __future__ import annotations

import signal

import pytest

from tests.support.keyturn import Harness
from tests.targets.engine_support import CRED, TARGET_STRATEGIES, Rig, make_rig, run_killed

GRACE = {"single": "0s", "alternating": "1d", "dual": "1d"}


def _check_grace_then_revoke(rig: Rig, old: str, end: str) -> None:
    """During the grace period both values log in; after it, only the new one."""
    assert rig.last_rotation()["status"] == "waiting"
    new, previous = rig.get(), rig.get(previous=True)
    assert previous == old and new != old
    new_login, old_login = rig.login_of("current"), rig.login_of("previous")
    assert rig.accepts(new_login, new)
    assert rig.accepts(old_login, old)
    if end == "consumers":
        rig.report("web", rig.last_rotation()["new_version"])
    else:
        rig.end_grace()
    rig.resume()
    assert rig.last_rotation()["status"] == "done"
    assert rig.accepts(new_login, rig.get())
    assert not rig.accepts(old_login, old)


@pytest.mark.parametrize(("kind", "strategy"), TARGET_STRATEGIES)
def test_apply_provisions_then_rotations_switch_logins(
    request: pytest.FixtureRequest, kt: Harness, kind: str, strategy: str
) -> None:
    rig = make_rig(request, kt, kind, strategy, grace=GRACE[strategy], consumers=["web"])
    assert not rig.accepts(rig.logins[0], rig.initial)  # no such login yet

    applied = rig.apply()
    assert f"provisioned {CRED}" in applied.out
    assert rig.accepts(rig.logins[0], rig.initial)
    assert "provisioned" not in rig.apply().out  # idempotent: the login exists now

    old = rig.initial
    for rotations, end in enumerate(("consumers", "wait_until")):
        rig.rotate()
        if strategy == "single":
            assert rig.last_rotation()["status"] == "done"
            assert rig.accepts(rig.logins[0], rig.get())
            assert not rig.accepts(rig.logins[0], old)
        else:
            _check_grace_then_revoke(rig, old, end)
        old = rig.get()
        assert rig.states() == ["current"] + ["retired"] * (rotations + 1)
    assert kt.cli("verify", CRED).code == 0
    assert kt.cli("audit", "verify").code == 0


CRASH_POINTS = [
    "create:effect",
    "set:effect",
    "test:effect",
    "publish:before",
    "finish:effect",
    "revoke:effect",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize(("kind", "strategy"), TARGET_STRATEGIES)
def test_crash_then_resume_leaves_the_target_on_keyturns_value(
    request: pytest.FixtureRequest, kt: Harness, kind: str, strategy: str, point: str
) -> None:
    rig = make_rig(request, kt, kind, strategy)
    rig.apply()
    worker = {"KEYTURN_WORKER_ID": "worker-1"}
    crashed = run_killed(kt, point, "rotate", CRED, "--reason", "crash test", env=worker)
    assert crashed == -signal.SIGKILL

    resumed = kt.cli("resume", "--now", env=worker)
    assert resumed.code == 0, resumed.err
    assert rig.states() == ["current", "retired"]  # one new value, not two
    assert rig.last_rotation()["status"] == "done"
    current = rig.get()
    assert current != rig.initial
    assert rig.accepts(rig.login_of("current"), current)
    assert not rig.accepts(rig.logins[0], rig.initial)
    assert kt.cli("audit", "verify").code == 0
