"""Every built-in target through the conformance kit (keyturn.testing), on its real server.

The kit checks the verbs (replays harmless, the old value refused after each strategy's
revoke), then rotates through keyturn, SIGKILLed at crash points and resumed: one new value,
consistent states, the target accepting the current value and refusing the old one, no value
in any output. Logins are checked from outside the plugin (a fresh driver connection, an SMTP
AUTH), never through the plugin under test.

Each case is killed at a few points of the matrix, spread so that the cases together cover
every point; tests/engine/test_crash.py runs the whole matrix on one target. The PostgreSQL
pass (keyturn's own state there) runs one point per case.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keyturn.domain.model import Secret
from keyturn.testing import CRASH_POINTS, TargetCase, check_target
from tests.targets.conftest import MysqlSandbox, PgSandbox, RedisSandbox, Refs, new_password
from tests.targets.engine_support import MysqlRig, PgRig, RedisRig
from tests.targets.test_dovecot import Mail, mail, user  # noqa: F401 (fixtures)

pytestmark = pytest.mark.state_db

POINTS = [p for p in CRASH_POINTS if p != "create:issued"]
CASES = [
    ("passwd-file", "single"),
    ("passwd-file", "alternating"),
    ("passwd-file", "dual"),
    ("dovecot", "single"),
    ("dovecot", "dual"),
    ("postgres", "single"),
    ("postgres", "alternating"),
    ("mysql", "single"),
    ("mysql", "alternating"),
    ("redis", "single"),
    ("redis", "dual"),
]


def points_for(index: int) -> list[str]:
    """Case *index*'s share of the crash matrix (all cases together: every point)."""
    mine = POINTS[index % len(POINTS) :: len(CASES)] or [POINTS[index % len(POINTS)]]
    if os.environ.get("KEYTURN_TEST_DB") == "postgres":
        return mine[:1]
    return mine


def test_the_cases_cover_every_crash_point() -> None:
    covered = {p for i in range(len(CASES)) for p in points_for(i)}
    assert covered == set(POINTS) or os.environ.get("KEYTURN_TEST_DB") == "postgres"


def _env(refs: Refs) -> dict[str, str]:
    return {ref[4:]: value.reveal() for ref, value in refs.values.items() if ref[:4] == "env:"}


def _logins(prefix: str, strategy: str) -> tuple[str, ...]:
    return (
        (prefix + "app", prefix + "app_clone") if strategy == "alternating" else (prefix + "app",)
    )


def _accepts(check: Callable[[str, str], bool]) -> Callable[[str, Secret], bool]:
    return lambda login, value: check(login, value.reveal())


def passwd_file_case(tmp_path: Path, strategy: str) -> TargetCase:
    settings: dict[str, Any] = {"path": str(tmp_path / "passwd")}
    if strategy == "dual":
        settings["secondary_path"] = str(tmp_path / "passwd2")
    logins = ("app", "app_clone") if strategy == "alternating" else ("app",)
    return TargetCase("passwd-file", settings, strategy, logins, new_password())


def dovecot_case(request: pytest.FixtureRequest, strategy: str) -> TargetCase:
    server: Mail = request.getfixturevalue("mail")
    login: str = request.getfixturevalue("user")
    settings: dict[str, Any] = {
        "path": str(server.passwd),
        "smtp_host": server.host,
        "smtp_port": server.port,
        "smtp_tls": "none",
    }
    if strategy == "dual":
        settings["secondary_path"] = str(server.passwd2)
    return TargetCase(
        "dovecot", settings, strategy, (login,), new_password(), accepts=_accepts(server.login)
    )


def postgres_case(request: pytest.FixtureRequest, refs: Refs, strategy: str) -> TargetCase:
    box: PgSandbox = request.getfixturevalue("pg")
    extra = {"owner_role": box.prefix + "owner"} if strategy == "alternating" else {}
    logins = _logins(box.prefix, strategy)
    rig = PgRig(None, strategy, list(logins), box=box)  # type: ignore[arg-type]
    settings = box.settings(refs, **extra)
    return TargetCase(
        "postgres", settings, strategy, logins, new_password(), _env(refs), _accepts(rig.accepts)
    )


def mysql_case(request: pytest.FixtureRequest, refs: Refs, strategy: str) -> TargetCase:
    box: MysqlSandbox = request.getfixturevalue("mysql")
    extra = {"default_role": box.prefix + "role"} if strategy == "alternating" else {}
    logins = _logins(box.prefix, strategy)
    rig = MysqlRig(None, strategy, list(logins), box=box)  # type: ignore[arg-type]
    settings = box.settings(refs, **extra)
    return TargetCase(
        "mysql", settings, strategy, logins, new_password(), _env(refs), _accepts(rig.accepts)
    )


def redis_case(request: pytest.FixtureRequest, refs: Refs, strategy: str) -> TargetCase:
    box: RedisSandbox = request.getfixturevalue("redis_box")
    logins = _logins(box.prefix, strategy)
    rig = RedisRig(None, strategy, list(logins), box=box)  # type: ignore[arg-type]
    return TargetCase(
        "redis",
        box.settings(refs),
        strategy,
        logins,
        new_password(),
        _env(refs),
        _accepts(rig.accepts),
    )


@pytest.mark.parametrize(("kind", "strategy"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_builtin_target_passes_the_kit(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db_url: str,
    refs: Refs,
    kind: str,
    strategy: str,
) -> None:
    if kind == "passwd-file":
        case = passwd_file_case(tmp_path, strategy)
    elif kind == "dovecot":
        case = dovecot_case(request, strategy)
    elif kind == "postgres":
        case = postgres_case(request, refs, strategy)
    elif kind == "mysql":
        case = mysql_case(request, refs, strategy)
    else:
        case = redis_case(request, refs, strategy)
    home = tmp_path / ("kit-" + secrets.token_hex(3))
    check_target(case, home, db_url, points=points_for(CASES.index((kind, strategy))))
